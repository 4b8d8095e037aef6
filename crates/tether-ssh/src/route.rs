//! Connections whose username names a route (`login@route`).
//!
//! [`start_session`] is the one place a session channel of a route connection is
//! served. Today it tells the client the route is not available yet; the upstream
//! relay (`upstream` module: certificate login to the route's sshd, then relaying
//! the channel both ways) replaces its body without touching the actor.

use std::sync::Arc;

use russh::ChannelId;

use crate::actor::{finish_channel, Conn, Program, Task};
use crate::server::Ctx;

/// Starts serving `program` on session channel `id` for route `name`; `None`
/// refuses the request (the client sees a failed channel request). The returned
/// task runs beside the actor.
pub(crate) fn start_session(
    conn: Arc<Conn>,
    ctx: &Ctx,
    id: ChannelId,
    name: &str,
    login: &str,
    program: Program,
    pty: bool,
) -> Option<Task> {
    let message = if ctx.config.route(name).is_some() {
        format!("route {name:?} is not available yet\n")
    } else {
        format!("unknown route {name:?}\n")
    };
    tracing::info!(route = name, login, ?program, "route session requested");
    Some(Box::pin(async move {
        finish_channel(&conn, id, "", &message, 1, pty).await;
    }))
}
