//! One connection's task: wrap the socket, run russh on it, run the actor beside it,
//! and log how it ended.
//!
//! The russh session runs in russh's own task; this task awaits it together with
//! the actor, so the connection's lifetime is bounded by this tracked task: when
//! russh ends, the handler (and with it the actor's event queue) is dropped and the
//! actor returns; when the actor ends, every handler callback fails and russh ends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tether_core::metrics::{connection_outcome, Metrics};

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use tether_core::audit::AuditEvent;

use crate::actor::{Actor, ActorInit, Deadlines};
use crate::context::Ctx;
use crate::gate::Slot;
use crate::handler::Handler;
use crate::stream::ClientStream;

/// Handler → actor queue depth (bounded: a flooding client waits for the actor).
const EVENT_QUEUE: usize = 32;

/// Serves one accepted connection until it ends. `slot` is its place among the
/// unauthenticated connections, given back once it authenticates.
pub(crate) async fn serve(
    id: u64,
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    shutdown: CancellationToken,
    slot: Slot,
) {
    let started = Instant::now();
    let mut counted = Counted::new(ctx.metrics.clone());
    let config = ctx.config();
    let limits = &config.limits;
    // Nothing may outlive the sign-in timeout without authenticating (§3.5), the
    // key exchange must be done within the handshake timeout and a sign-in link
    // shown (or the key accepted) within the login grace time.
    let auth_deadline = started + config.ssh_sign_in_timeout;
    let deadlines = Deadlines {
        handshake: (started + limits.ssh_handshake_timeout).min(auth_deadline),
        login: (started + limits.ssh_login_grace_time).min(auth_deadline),
        sign_in: auth_deadline,
    };
    tracing::debug!("connection accepted");
    let (stream, probe) = ClientStream::new(tcp);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let handler = Handler::new(events_tx);

    // russh writes its identification, then reads the client's. Garbage, a close or
    // silence all end here, before any per-connection state exists.
    let setup = tokio::select! {
        () = shutdown.cancelled() => return,
        () = slot.shed.cancelled() => {
            ctx.metrics.connections_shed.inc("shed");
            return;
        }
        r = tokio::time::timeout_at(
            deadlines.handshake,
            russh::server::run_stream(ctx.russh.clone(), stream, handler),
        ) => r,
    };
    let session = match setup {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => {
            tracing::debug!("SSH handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("no SSH identification before the handshake deadline");
            ctx.metrics.connections_shed.inc("handshake_timeout");
            return;
        }
    };
    let client_version = probe.client_version().unwrap_or_default();
    AuditEvent::ConnectionOpened {
        conn: id,
        peer: peer.to_string(),
        client_version,
    }
    .emit();

    let actor = Actor::new(ActorInit {
        id,
        ctx,
        peer,
        handle: session.handle(),
        probe: probe.clone(),
        deadlines,
        shutdown,
        slot,
    });
    let (result, summary) = tokio::join!(session, actor.run(events_rx));
    if let Err(e) = result {
        tracing::debug!("SSH session ended with: {e}");
    }
    let (bytes_in, bytes_out) = probe.byte_counts();
    AuditEvent::ConnectionClosed {
        conn: id,
        peer: peer.to_string(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        bytes_in,
        bytes_out,
        authenticated: summary.authenticated,
        ended_by: summary.ended_by.clone(),
    }
    .emit();
    counted.outcome = connection_outcome(summary.authenticated, &summary.ended_by);
}

/// Counts a connection open while it lives and closed (by outcome) when it ends,
/// whichever way `serve` returns.
struct Counted {
    metrics: Arc<Metrics>,
    outcome: &'static str,
}

impl Counted {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        Self {
            metrics,
            outcome: "unauthenticated",
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        self.metrics.connections_closed.inc(self.outcome);
    }
}
