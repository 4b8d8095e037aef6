//! The portal's hand-over to the chosen route: its policy decided with the login
//! the client connected with ([`admission::authorize`], so only a grant opens an
//! upstream), its upstream connected by [`admission::connect`] exactly as for a
//! `login@route` connection (user certificate, host key check), a session channel
//! opened there with the client's original pty
//! (term, modes, current size) and a shell; then the client's channel [`pump`]ed to
//! it through the route connection's [`Relay`], with later window changes and
//! signals forwarded as its channel requests.
//!
//! The route's `ssh_permit` applies: without `pty` the route is refused here (the
//! portal's shell needs a terminal), and agent forwarding is carried over only
//! where it is permitted. The client's `env` requests and agent forwarding are
//! replayed on the upstream session before the shell (an `env` the upstream refuses is skipped, as sshd's
//! `AcceptEnv` would for a direct connection); agent channels the upstream then
//! opens are relayed to the client's agent only if the client asked for it.
//!
//! Every wait on the upstream is bounded. What else the upstream starts on its own
//! (forwarded ports, X11 channels, agent channels nobody asked for) is refused.

use std::time::Duration;

use russh::server::Msg;
use russh::{Channel, ChannelId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{PortalInit, PortalInput};
use tether_core::audit::{AuditEvent, Via};

use crate::admission;
use crate::client::Conn;
use crate::events::ChannelRequest;
use crate::record::{Program, Pty, Recording};
use crate::relay::{ended, Asked, Relay, UPSTREAM_EVENTS};
use crate::routes::printable;
use crate::upstream::{
    bounded, PumpEnd, Upstream, UpstreamChannel, UpstreamError, UpstreamEvent, UpstreamReader,
};

/// How long the upstream gets to take a DISCONNECT at the end.
const DISCONNECT_WAIT: Duration = Duration::from_secs(1);

/// An upstream shell ready to be relayed.
pub(super) struct Connected {
    route: String,
    upstream: Upstream,
    up: UpstreamChannel,
    reader: UpstreamReader,
    events: mpsc::Receiver<UpstreamEvent>,
    metrics: std::sync::Arc<tether_core::metrics::Metrics>,
    /// Whether the client asked for agent forwarding (its agent channels relayed).
    agent: bool,
    /// The shell's recording, on a recorded route.
    recording: Option<Recording>,
}

/// Decides `route` and opens a shell on its upstream; `Err` is the one line the
/// picker shows.
pub(super) async fn connect(init: &PortalInit, route: &str) -> Result<Connected, String> {
    let ctx = &init.ctx;
    let grant = admission::authorize(
        &init.principal,
        &ctx.config(),
        route,
        Some(&init.login),
        Via::Portal,
        ctx.clock.now(),
    )
    .map_err(|denied| denied.to_string())?;
    // The route's ssh_permit holds for the hand-over as for a direct connection:
    // the portal's shell needs a terminal, and the carried agent request is
    // dropped where agent forwarding is not permitted.
    let permit = grant.permit();
    if !permit.pty {
        return Err(format!(
            "route {route:?}: a terminal is not permitted there (connect to it directly)"
        ));
    }
    let agent = init.carried.agent && permit.agent_forwarding;
    // A recorded route's recording starts first: one that cannot be written
    // refuses the hand-over on a fail-closed route.
    let recorder = admission::recorder(
        &ctx.config(),
        ctx.recordings_dir.as_deref(),
        ctx.registry.replica(),
        &init.principal,
        route,
        &init.login,
    );
    let recording = match recorder {
        Some(recorder) => {
            let size = *init.input.sizes.borrow();
            let pty = Pty {
                term: init.terminal.term.clone(),
                cols: size.cols,
                rows: size.rows,
            };
            let channel = init.id.to_string().parse().unwrap_or(0);
            std::sync::Arc::new(recorder)
                .start(channel, &Program::Shell, Some(&pty), ctx.clock.now())
                .await?
        }
        None => None,
    };
    let (events_tx, events) = mpsc::channel(UPSTREAM_EVENTS);
    let upstream = admission::connect(
        &ctx.upstreams,
        &init.principal,
        &grant,
        Via::Portal,
        events_tx,
    )
    .await
    .map_err(|e| e.to_string())?;
    match open_shell(init, &upstream, route, agent).await {
        Ok((up, reader)) => {
            init.recorder.add(route, Some(&init.login));
            tracing::Span::current().record("route", route);
            Ok(Connected {
                route: route.to_string(),
                upstream,
                up,
                reader,
                events,
                metrics: init.ctx.metrics.clone(),
                agent,
                recording,
            })
        }
        Err(line) => {
            let _ = tokio::time::timeout(DISCONNECT_WAIT, upstream.disconnect(&line)).await;
            Err(line)
        }
    }
}

/// A session channel on the upstream with the client's pty and a shell.
async fn open_shell(
    init: &PortalInit,
    upstream: &Upstream,
    route: &str,
    agent: bool,
) -> Result<(UpstreamChannel, UpstreamReader), String> {
    let refused = |what: &str, e: Option<UpstreamError>| {
        let detail = e.map(|e| format!(": {e}")).unwrap_or_default();
        tracing::info!(route, "upstream refused {what}{detail}");
        format!("route {route:?}: the upstream refused {what}")
    };
    let (up, reader) = bounded(upstream.open_session())
        .await
        .map_err(|e| refused("a session", Some(e)))?;
    let t = &init.terminal;
    let size = *init.input.sizes.borrow();
    let pty = up.request_pty(
        &t.term,
        size.cols,
        size.rows,
        size.pix_width,
        size.pix_height,
        &t.modes,
    );
    match bounded(pty).await {
        Ok(true) => {}
        Ok(false) => return Err(refused("a terminal", None)),
        Err(e) => return Err(refused("a terminal", Some(e))),
    }
    for (name, value) in &init.carried.env {
        match bounded(up.set_env(name, value)).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!(route, name, "upstream refused env"),
            Err(e) => return Err(refused("the environment", Some(e))),
        }
    }
    if agent {
        match bounded(up.agent_forward()).await {
            Ok(true) => {}
            Ok(false) => tracing::info!(route, "upstream refused agent forwarding"),
            Err(e) => return Err(refused("agent forwarding", Some(e))),
        }
    }
    match bounded(up.request_shell()).await {
        Ok(true) => Ok((up, reader)),
        Ok(false) => Err(refused("a shell", None)),
        Err(e) => Err(refused("a shell", Some(e))),
    }
}

/// Relays the client's channel to the upstream shell until either side ends it,
/// through the same [`Relay`] as a route connection: window changes and signals
/// are forwarded as channel requests, upstream-opened channels are handled (and
/// refused unless the client asked for them) by [`Relay::upstream_event`].
pub(super) async fn relay(
    channel: Channel<Msg>,
    conn: &Conn,
    id: ChannelId,
    connected: Connected,
    mut input: PortalInput,
) {
    let Connected {
        route,
        upstream,
        up,
        reader,
        mut events,
        metrics,
        agent,
        recording,
    } = connected;
    let mut relay = Relay::new(upstream, metrics);
    relay.asked(Asked {
        agent,
        ..Asked::default()
    });
    // The relay's own tasks (request forwarding, agent channels) end with it.
    let mut tasks = JoinSet::new();
    let tap = recording.as_ref().and_then(|r| r.tap.clone());
    let relayed = relay.adopt_started(channel, conn.handle.clone(), up, reader, true, tap.clone());
    tokio::pin!(relayed);
    let (mut sizes_open, mut signals_open, mut events_open) = (true, true, true);
    let mut lost = None;
    let report = loop {
        tokio::select! {
            report = &mut relayed => break report,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            changed = input.sizes.changed(), if sizes_open => match changed {
                Ok(()) => {
                    let s = *input.sizes.borrow_and_update();
                    if let Some(tap) = &tap {
                        tap.resize(s.cols, s.rows).await;
                    }
                    let request = ChannelRequest::WindowChange {
                        col_width: s.cols,
                        row_height: s.rows,
                        pix_width: s.pix_width,
                        pix_height: s.pix_height,
                    };
                    relay.request(id, request, oneshot::channel().0, &mut tasks);
                }
                Err(_) => sizes_open = false,
            },
            signal = input.signals.recv(), if signals_open => match signal {
                Some(signal) => {
                    let request = ChannelRequest::Signal(signal);
                    relay.request(id, request, oneshot::channel().0, &mut tasks);
                }
                None => signals_open = false,
            },
            event = events.recv(), if events_open => match event {
                Some(event) => {
                    if let Some(reason) = relay.upstream_event(event, &conn.handle, &mut tasks) {
                        lost = Some(reason);
                    }
                }
                None => events_open = false,
            },
        }
    };
    AuditEvent::PortalSessionEnded {
        conn: conn.id,
        route: route.clone(),
        end: format!("{:?}", report.end),
        bytes_to_upstream: report.bytes_to_upstream,
        bytes_to_client: report.bytes_to_client,
        exit_status: report.exit_status,
    }
    .emit();
    if let Some(recording) = recording {
        recording.finish(ended(&report)).await;
    }
    if report.end == PumpEnd::RecordingFailed {
        let line = format!("{}\r\n", crate::record::ENDED_UNRECORDED);
        let _ = conn.handle.extended_data(id, 1, line.into_bytes()).await;
        let _ = conn.handle.eof(id).await;
        if conn.remove_channel(id) {
            let _ = conn.handle.close(id).await;
        }
    }
    if report.end == PumpEnd::UpstreamLost {
        let reason = lost.unwrap_or_else(|| "upstream connection closed".to_string());
        let line = format!("tether: route {route:?}: {}\r\n", printable(&reason));
        let _ = conn.handle.extended_data(id, 1, line.into_bytes()).await;
        let _ = conn.handle.eof(id).await;
        if conn.remove_channel(id) {
            let _ = conn.handle.close(id).await;
        }
    }
    relay.disconnect("session ended").await;
}
