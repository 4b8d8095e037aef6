//! The per-connection actor: one task's worth of state and logic per connection.
//!
//! The handler's events arrive on a queue; the actor answers authentication
//! requests (`auth`), admits an authenticated key (`admit`: the route's policy and
//! the upstream connection), serves channels once authenticated (`channels`, with
//! the route relay), handles what the upstream starts (its events arrive on a
//! second queue), and ends the connection when it must: revocation or a policy
//! re-check through the [`crate::Registry`], binding or session expiry, the sign-in
//! deadline, the upstream going away, or server shutdown. Its `select!` loop is
//! where all of those meet (STYLE habit 4).
//!
//! One rule keeps the actor deadlock-free: it never waits on russh's session queue
//! while russh may be waiting on the actor. Output to the client (CLI results,
//! relayed channels, upstream-initiated channel opens, revocation notices, the
//! final DISCONNECT) is written by small tasks the actor spawns into its own
//! `JoinSet`, which dies with the actor. The one exception is a DISCONNECT during
//! authentication, when the queue is known to be empty. The actor may wait on the
//! upstream (opening a channel there, bounded), which never waits on the actor.

mod admit;
mod auth;
mod channels;
mod limits;
mod permit;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use russh::server::Handle;
use russh::Disconnect;
use tether_core::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Conn;
use crate::context::Ctx;
use crate::events::{AuthReply, Event};
use crate::gate::{Refused, Slot};
use crate::registry::Revoker;
use crate::relay::Relay;
use crate::stream::Probe;
use crate::upstream::UpstreamEvent;

pub(crate) use limits::MAX_AUTH_FAILURES;

/// How long a closing connection waits for a running CLI command's output.
const OUTPUT_WAIT: Duration = Duration::from_secs(2);
/// After `logout`, how long the client gets to leave on its own before the
/// revocation DISCONNECT (so it sees the command's result and exit status).
const QUIET_WAIT: Duration = Duration::from_secs(2);
/// How long the stderr notice travels ahead of the DISCONNECT (see `closer`).
const NOTICE_LEAD: Duration = Duration::from_millis(50);
/// How long a client may ignore our DISCONNECT before its socket is closed.
const FORCE_CLOSE_AFTER: Duration = Duration::from_secs(2);

/// What the connection task hands the actor.
pub(crate) struct ActorInit {
    /// The connection id.
    pub(crate) id: u64,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) peer: SocketAddr,
    pub(crate) handle: Handle,
    pub(crate) probe: Probe,
    pub(crate) deadlines: Deadlines,
    pub(crate) shutdown: CancellationToken,
    /// The connection's place among the unauthenticated ones.
    pub(crate) slot: Slot,
}

/// When an unauthenticated connection is closed, by stage.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    /// Key exchange done: the first authentication request has arrived.
    pub(crate) handshake: Instant,
    /// Authenticated, or shown a sign-in link.
    pub(crate) login: Instant,
    /// Authenticated at all (the sign-in code's lifetime, §3.5).
    pub(crate) sign_in: Instant,
}

/// How a connection ended, for the audit log.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) authenticated: bool,
    pub(crate) ended_by: String,
}

/// How to end a connection.
#[derive(Debug, Clone)]
pub(crate) struct Close {
    /// Line written to the stderr of every open session channel first.
    notice: Option<String>,
    /// The DISCONNECT description (what OpenSSH prints).
    description: String,
    /// A pre-authentication limit closed it: the `connections_shed` label.
    shed_reason: Option<&'static str>,
}

impl Close {
    fn revoked(reason: &str) -> Self {
        let reason = plain_ascii(reason);
        if reason.starts_with(crate::registry::ENDED_BY) {
            // Someone ended this very connection: not an access decision.
            return Close {
                notice: Some(format!("tether: {reason}\r\n")),
                description: reason,
                shed_reason: None,
            };
        }
        Close {
            notice: Some(format!("tether: access revoked: {reason}\r\n")),
            description: format!("access revoked: {reason}"),
            shed_reason: None,
        }
    }

    fn shutdown() -> Self {
        Close {
            notice: Some("tether: server shutting down\r\n".to_string()),
            description: "server shutting down".to_string(),
            shed_reason: None,
        }
    }

    /// The route's upstream went away.
    fn upstream(route: &str, reason: &str) -> Self {
        let text = plain_ascii(&format!("route {route:?}: {reason}"));
        Close {
            notice: Some(format!("tether: {text}\r\n")),
            description: text,
            shed_reason: None,
        }
    }

    fn message(text: &str) -> Self {
        Close {
            notice: None,
            description: text.to_string(),
            shed_reason: None,
        }
    }

    /// A pre-authentication deadline passed.
    fn limit(text: &str, reason: &'static str) -> Self {
        Close {
            shed_reason: Some(reason),
            ..Close::message(text)
        }
    }
}

/// Keeps reasons printable ASCII (they reach terminals).
fn plain_ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

/// Where the connection is.
enum Phase {
    Auth(Box<auth::AuthState>),
    Authed(Box<channels::Authed>),
}

/// The actor; see the module docs.
pub(crate) struct Actor {
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    conn: Arc<Conn>,
    auth_deadline: Instant,
    deadlines: Deadlines,
    /// Held until the connection authenticates (then dropped: the place is free).
    slot: Option<Slot>,
    shutdown: CancellationToken,
    phase: Phase,
    /// What the route's upstream starts (channels, its disconnect); `None` for
    /// route-less connections and once the upstream is gone.
    upstream_events: Option<mpsc::Receiver<UpstreamEvent>>,
    closing: bool,
    ended_by: Option<String>,
    tasks: JoinSet<()>,
    span: tracing::Span,
}

impl Actor {
    /// A fresh actor for a connection that has not authenticated yet.
    pub(crate) fn new(init: ActorInit) -> Self {
        Actor {
            ctx: init.ctx,
            peer: init.peer,
            conn: Arc::new(Conn::new(init.id, init.handle, init.probe)),
            auth_deadline: init.deadlines.sign_in,
            deadlines: init.deadlines,
            slot: Some(init.slot),
            shutdown: init.shutdown,
            phase: Phase::Auth(Box::default()),
            upstream_events: None,
            closing: false,
            ended_by: None,
            tasks: JoinSet::new(),
            span: tracing::Span::current(),
        }
    }

    /// Serves events until the handler is gone (the russh session ended).
    pub(crate) async fn run(mut self, mut events: mpsc::Receiver<Box<Event>>) -> Summary {
        loop {
            let (deadline, why) = self.next_deadline();
            let revoker = self.revoker();
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(*ev).await,
                    None => break,
                },
                () = tokio::time::sleep_until(deadline), if !self.closing => {
                    if let Some(reason) = why.shed_reason {
                        self.ctx.metrics.connections_shed.inc(reason);
                    }
                    self.begin_close(why);
                }
                () = shed(&self.slot), if !self.closing => {
                    self.ctx.metrics.connections_shed.inc("shed");
                    self.begin_close(Close::message(&Refused::Total.to_string()));
                }
                reason = revoked(revoker), if !self.closing => {
                    tracing::info!(reason = %reason, "connection revoked");
                    self.begin_close(Close::revoked(&reason));
                }
                () = self.shutdown.cancelled(), if !self.closing => {
                    self.begin_close(Close::shutdown());
                }
                ev = upstream_event(&mut self.upstream_events) => self.on_upstream_event(ev),
                Some(_) = self.tasks.join_next() => {}
            }
        }
        self.tasks.shutdown().await;
        if let Phase::Authed(a) = &self.phase {
            if let Some(relay) = &a.relay {
                let why = self.ended_by.as_deref().unwrap_or("client disconnected");
                relay.disconnect(why).await;
            }
        }
        Box::pin(self.abandon_sign_in()).await;
        Summary {
            authenticated: matches!(self.phase, Phase::Authed(_)),
            ended_by: self.ended_by.unwrap_or_else(|| "client".to_string()),
        }
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Auth {
                user,
                request,
                reply,
            } => {
                if let Some(state) = self.auth_state() {
                    state.started = true;
                }
                // Boxed, like the channel opens below: authentication (with its
                // upstream connect) is the largest state of this future, and a
                // future is as big as its largest state for as long as it lives.
                // Boxed, it costs memory only while a request is being answered.
                let auth = Box::pin(self.on_auth(&user, request)).await;
                let banner = self.auth_state().and_then(|s| s.banner.take());
                let _ = reply.send(AuthReply { auth, banner });
            }
            Event::OpenSession { channel, reply } => {
                Box::pin(self.on_open_session(channel, reply)).await;
            }
            Event::OpenOther {
                kind,
                channel,
                reply,
            } => Box::pin(self.on_open_other(kind, channel, reply)).await,
            Event::Request {
                channel,
                request,
                reply,
            } => self.on_request(channel, request, reply),
            Event::Close(channel) => self.on_close(channel),
            Event::TcpipForward {
                address,
                port,
                reply,
            } => {
                let permitted = self.permits(permit::Asked::TcpipForward).is_ok();
                match self.relay() {
                    Some((relay, tasks)) if permitted => {
                        relay.tcpip_forward(address, port, reply, tasks);
                    }
                    Some(_) => {
                        let _ = reply.send(None);
                    }
                    None => {
                        tracing::debug!(%address, port, "remote forwarding refused (no route)");
                        let _ = reply.send(None);
                    }
                }
            }
            Event::CancelTcpipForward {
                address,
                port,
                reply,
            } => match self.relay() {
                Some((relay, tasks)) => relay.cancel_tcpip_forward(address, port, reply, tasks),
                None => {
                    let _ = reply.send(false);
                }
            },
        }
    }

    /// The route relay and the task set, while the connection is live.
    fn relay(&mut self) -> Option<(&mut Relay, &mut JoinSet<()>)> {
        match &mut self.phase {
            Phase::Authed(a) if !self.closing => Some((a.relay.as_mut()?, &mut self.tasks)),
            _ => None,
        }
    }

    /// Something the upstream started, or its end.
    fn on_upstream_event(&mut self, event: Option<UpstreamEvent>) {
        if event.is_none() {
            // The upstream session ended: stop polling its (closed) queue.
            self.upstream_events = None;
        }
        let handle = self.conn.handle.clone();
        let gone = match (event, &mut self.phase) {
            (Some(ev), Phase::Authed(a)) => match a.relay.as_mut() {
                Some(relay) => relay
                    .upstream_event(ev, &handle, &mut self.tasks)
                    .map(|reason| (relay.route().to_string(), reason)),
                None => None,
            },
            (None, Phase::Authed(a)) => a.relay.as_ref().map(|r| {
                (
                    r.route().to_string(),
                    "upstream connection closed".to_string(),
                )
            }),
            _ => None,
        };
        if let Some((route, reason)) = gone {
            self.upstream_events = None;
            tracing::info!(route = %route, reason = %reason, "upstream gone");
            self.begin_close(Close::upstream(&route, &reason));
        }
    }

    /// The next timer: the sign-in deadline before authentication, the binding's
    /// or session's expiry after.
    fn next_deadline(&self) -> (Instant, Close) {
        match &self.phase {
            Phase::Auth(state) if !state.started => (
                self.deadlines.handshake,
                Close::limit("key exchange timeout", "handshake_timeout"),
            ),
            Phase::Auth(state) if !state.signing_in() => (
                self.deadlines.login.min(self.auth_deadline),
                Close::limit("authentication timeout", "login_timeout"),
            ),
            Phase::Auth(_) => (
                self.auth_deadline,
                Close::message("authentication request timeout"),
            ),
            Phase::Authed(a) => {
                // A binding never outlives its session; on a tie the session is the
                // reason worth telling.
                let (binding, session) = (&a.principal.binding, &a.principal.session);
                let (at, reason) = if binding.expires_at < session.expires_at {
                    (binding.expires_at, "binding expired")
                } else {
                    (session.expires_at, "session expired")
                };
                (self.instant_at(at), Close::revoked(reason))
            }
        }
    }

    /// The monotonic instant of a wall-clock timestamp.
    fn instant_at(&self, at: Timestamp) -> Instant {
        Instant::now() + self.ctx.clock.now().until(at)
    }

    fn revoker(&self) -> Option<Arc<Revoker>> {
        match &self.phase {
            Phase::Authed(a) => Some(a.registration.revoker()),
            Phase::Auth(_) => None,
        }
    }

    /// Starts ending the connection: notices, DISCONNECT, and a forced close for a
    /// client that ignores it. Runs beside the actor, which keeps answering.
    fn begin_close(&mut self, close: Close) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.ended_by = Some(close.description.clone());
        let conn = self.conn.clone();
        self.tasks.spawn(closer(conn, close));
    }

    /// Ends the connection during authentication: the DISCONNECT is queued now, so
    /// russh sends it right after the reply to the current request.
    async fn disconnect_now(&mut self, text: &str) {
        if self.closing {
            return;
        }
        let queued = tokio::time::timeout(
            Duration::from_secs(1),
            self.conn
                .handle
                .disconnect(Disconnect::ByApplication, text.to_string(), String::new()),
        )
        .await;
        if matches!(queued, Ok(Ok(()))) {
            self.closing = true;
            self.ended_by = Some(text.to_string());
            let probe = self.conn.probe.clone();
            self.tasks.spawn(async move {
                tokio::time::sleep(FORCE_CLOSE_AFTER).await;
                probe.force_close();
            });
        } else {
            self.begin_close(Close::message(text));
        }
    }
}

/// The next upstream event; never resolves without an upstream.
async fn upstream_event(
    events: &mut Option<mpsc::Receiver<UpstreamEvent>>,
) -> Option<UpstreamEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the gate sheds this (still unauthenticated) connection.
async fn shed(slot: &Option<Slot>) {
    match slot {
        Some(slot) => slot.shed.cancelled().await,
        None => std::future::pending().await,
    }
}

async fn revoked(revoker: Option<Arc<Revoker>>) -> String {
    match revoker {
        Some(r) => r.revoked().await,
        None => std::future::pending().await,
    }
}

/// Writes the notice to every open session channel, then disconnects.
async fn closer(conn: Arc<Conn>, close: Close) {
    let _output = tokio::time::timeout(OUTPUT_WAIT, conn.output.write())
        .await
        .ok();
    if conn.quiet_end.load(Ordering::SeqCst) && conn.open_channels().is_empty() {
        // `logout` finished and closed its channel: the client is on its way out.
        tokio::time::sleep(QUIET_WAIT).await;
    }
    if let Some(notice) = &close.notice {
        let channels = conn.open_channels();
        for id in &channels {
            let text = if conn.shows_picker(*id) {
                format!("{}{notice}", crate::portal::LEAVE_SCREEN)
            } else {
                notice.clone()
            };
            let _ = conn.handle.extended_data(*id, 1, text.into_bytes()).await;
        }
        if !channels.is_empty() {
            // OpenSSH drops channel output still buffered when it reads a
            // DISCONNECT in the same batch of packets: let the notice arrive alone.
            tokio::time::sleep(NOTICE_LEAD).await;
        }
    }
    let _ = conn
        .handle
        .disconnect(Disconnect::ByApplication, close.description, String::new())
        .await;
    tokio::time::sleep(FORCE_CLOSE_AFTER).await;
    conn.probe.force_close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_texts() {
        let c = Close::revoked("revoked by alice@example.com");
        assert_eq!(
            c.notice.as_deref(),
            Some("tether: access revoked: revoked by alice@example.com\r\n")
        );
        assert_eq!(
            c.description,
            "access revoked: revoked by alice@example.com"
        );
        let c = Close::revoked("bad\x1b[2Jreason\n");
        assert_eq!(c.description, "access revoked: bad?[2Jreason?");
        let c = Close::revoked("session ended by an administrator (admin@example.com)");
        assert_eq!(
            c.notice.as_deref(),
            Some("tether: session ended by an administrator (admin@example.com)\r\n")
        );
        assert_eq!(
            c.description,
            "session ended by an administrator (admin@example.com)"
        );
    }
}
