//! The relay of one route connection (`login@route`) to its upstream, wired as the
//! table in [`crate::upstream`] describes.
//!
//! The upstream connection is made during authentication, right after the policy
//! allowed it (so an unreachable upstream, a refused certificate or a changed host
//! key reach the client as the disconnect message, before the session starts) and
//! lives exactly as long as the client connection: one upstream per client
//! connection. The actor owns the [`Relay`] and calls it per event:
//!
//! - session and `direct-tcpip` channels are opened upstream first (bounded wait),
//!   then accepted towards the client and [`pump`]ed by a task;
//! - channel requests are forwarded in order by one task per channel, which
//!   answers the handler with the upstream's reply (the handler waits for it inside
//!   the russh callback, so the reply always answers the right request);
//!   `window-change` and `signal`, which the protocol does not answer, are answered
//!   at once so the client's session never waits on the upstream for them;
//! - upstream-initiated channels (`forwarded-tcpip` for `ssh -R`, agent channels for
//!   `ssh -A`, X11) are opened towards the client by a task, then pumped — each only
//!   once the client asked for it on this connection (`tcpip-forward`,
//!   `auth-agent-req@openssh.com`, `x11-req`); the upstream cannot open one the
//!   client never asked for;
//! - the portal's hand-over ([`crate::portal`]) uses the same relay: its session
//!   channel, already started upstream, is [`Relay::adopt_started`], and its window
//!   changes, signals and upstream events go through [`Relay::request`] and
//!   [`Relay::upstream_event`] as a route connection's do;
//! - the upstream's authentication banner is written to the stderr of the first
//!   session channel that starts a program, before anything else on it (russh's
//!   server sends `SSH_MSG_USERAUTH_BANNER` only before the username is known).
//!
//! Nothing here waits on the client's russh session from the actor itself (see the
//! actor's deadlock rule): everything that writes to the client runs in a task.

use std::collections::HashMap;
use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use tether_core::metrics::Metrics;

use crate::events::ChannelRequest;
use crate::record::{Program, Pty, Recorder, Recording};
use crate::upstream::{
    bounded, pump_tapped, PumpEnd, PumpReport, Upstream, UpstreamChannel, UpstreamError,
    UpstreamEvent, UpstreamReader,
};

/// Depth of the upstream → connection event queue (route relay and portal).
pub(crate) const UPSTREAM_EVENTS: usize = 16;
/// Channel requests waiting for the upstream, per channel.
const REQUEST_QUEUE: usize = 32;

/// Told to a session channel's relay task when the channel starts a program.
#[derive(Debug, Default)]
struct Start {
    /// The upstream's banner, for the first program started on the connection.
    banner: Option<String>,
    /// Whether the channel has a terminal (line ends become CR LF).
    pty: bool,
    /// Its recording, on a recorded route.
    recording: Option<Recording>,
    /// The program was refused (its recording cannot be written): it never runs
    /// upstream; this line goes to the client's stderr, then exit status 1, and
    /// the channel is closed.
    refused: Option<String>,
}

/// A program start on a recorded route, for the channel's forwarder: it starts
/// the recording before the request goes upstream (or refuses it).
#[derive(Debug)]
struct Recorded {
    recorder: Arc<Recorder>,
    channel: u32,
    program: Program,
    terminal: Option<Pty>,
    start: oneshot::Sender<Start>,
    banner: Option<String>,
}

/// One relayed channel.
#[derive(Debug)]
struct Slot {
    up: UpstreamChannel,
    pty: bool,
    /// The client's `pty-req` (for a recording's header).
    terminal: Option<Pty>,
    /// Held until the program starts (session channels only).
    start: Option<oneshot::Sender<Start>>,
    /// The channel's request forwarder (started at the first request; ends when
    /// the slot is dropped).
    forwarder: Option<mpsc::Sender<Forward>>,
}

/// A channel request on its way upstream; `reply` is `None` for requests the
/// protocol does not answer (already answered to the client's session).
#[derive(Debug)]
struct Forward {
    request: ChannelRequest,
    reply: Option<oneshot::Sender<bool>>,
    /// Set on the program's start on a recorded route.
    recorded: Option<Recorded>,
}

/// What the client asked for that lets the upstream open channels towards it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Asked {
    /// `auth-agent-req@openssh.com` on some channel (`ssh -A`).
    pub(crate) agent: bool,
    /// `x11-req` on some channel (`ssh -X`).
    pub(crate) x11: bool,
    /// `tcpip-forward` (`ssh -R`).
    pub(crate) remote_forward: bool,
}

/// A route connection's upstream side; see the module docs.
pub(crate) struct Relay {
    route: String,
    upstream: Arc<Upstream>,
    channels: HashMap<ChannelId, Slot>,
    banner: Option<String>,
    metrics: Arc<Metrics>,
    asked: Asked,
    /// Set on a recorded route.
    recorder: Option<Arc<Recorder>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("route", &self.route)
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// The relay of a connection whose upstream [`crate::admission::connect`] just
    /// logged in to.
    pub(crate) fn new(upstream: Upstream, metrics: Arc<Metrics>) -> Self {
        Relay {
            route: upstream.target().route.clone(),
            banner: upstream.banner().map(str::to_string),
            upstream: Arc::new(upstream),
            channels: HashMap::new(),
            metrics,
            asked: Asked::default(),
            recorder: None,
        }
    }

    /// Records this connection's session channels (a recorded route).
    pub(crate) fn record(&mut self, recorder: Recorder) {
        self.recorder = Some(Arc::new(recorder));
    }

    /// Records what the client already asked for elsewhere (the portal's carried
    /// requests, sent upstream before the hand-over).
    pub(crate) fn asked(&mut self, asked: Asked) {
        self.asked = asked;
    }

    /// A session channel already opened and started upstream (the portal's shell,
    /// with its pty): registered so its later requests are forwarded like any
    /// other channel's. The returned future writes the upstream's banner first
    /// (CR LF line ends when `pty`), then relays the channel until it ends.
    pub(crate) fn adopt_started(
        &mut self,
        channel: Channel<Msg>,
        handle: Handle,
        up: UpstreamChannel,
        reader: UpstreamReader,
        pty: bool,
        tap: Option<crate::record::Tap>,
    ) -> impl std::future::Future<Output = PumpReport> + Send + 'static {
        self.channels.insert(
            channel.id(),
            Slot {
                up: up.clone(),
                pty,
                terminal: None,
                start: None,
                forwarder: None,
            },
        );
        let banner = self.banner.take();
        let metrics = self.metrics.clone();
        async move {
            write_banner(&handle, channel.id(), banner, pty).await;
            pump_tapped(channel, handle, up, reader, metrics, tap).await
        }
    }
}

fn refusal(e: &UpstreamError) -> ChannelOpenFailure {
    match e {
        UpstreamError::ChannelOpenRefused { .. } => ChannelOpenFailure::AdministrativelyProhibited,
        _ => ChannelOpenFailure::ConnectFailed,
    }
}

impl Relay {
    /// The route name.
    pub(crate) fn route(&self) -> &str {
        &self.route
    }

    /// A client session channel: opens its upstream twin, then accepts. `true` if
    /// the channel was accepted.
    pub(crate) async fn open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        handle: &Handle,
        tasks: &mut JoinSet<()>,
    ) -> bool {
        let (up, reader) = match bounded(self.upstream.open_session()).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::info!(route = %self.route, "upstream session channel refused: {e}");
                reply.reject(refusal(&e)).await;
                return false;
            }
        };
        let (start_tx, start_rx) = oneshot::channel();
        self.channels.insert(
            channel.id(),
            Slot {
                up: up.clone(),
                pty: false,
                terminal: None,
                start: Some(start_tx),
                forwarder: None,
            },
        );
        reply.accept().await;
        tasks.spawn(serve_session(
            channel,
            handle.clone(),
            up,
            reader,
            start_rx,
            self.metrics.clone(),
        ));
        true
    }

    /// A client `direct-tcpip` channel (`ssh -L`, `ssh -W`): opened through the
    /// upstream, which makes the TCP connection.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open_direct_tcpip(
        &mut self,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        handle: &Handle,
        tasks: &mut JoinSet<()>,
    ) {
        let opening =
            self.upstream
                .open_direct_tcpip(host, port, originator_address, originator_port);
        match bounded(opening).await {
            Ok((up, reader)) => {
                self.channels.insert(
                    channel.id(),
                    Slot {
                        up: up.clone(),
                        pty: false,
                        terminal: None,
                        start: None,
                        forwarder: None,
                    },
                );
                reply.accept().await;
                tasks.spawn(relay_channel(
                    channel,
                    handle.clone(),
                    up,
                    reader,
                    self.metrics.clone(),
                ));
            }
            Err(e) => {
                tracing::info!(route = %self.route, host, port, "direct-tcpip refused upstream: {e}");
                reply.reject(refusal(&e)).await;
            }
        }
    }

    /// Forwards a channel request; `reply` gets the upstream's answer.
    pub(crate) fn request(
        &mut self,
        id: ChannelId,
        request: ChannelRequest,
        reply: oneshot::Sender<bool>,
        tasks: &mut JoinSet<()>,
    ) {
        let Some(slot) = self.channels.get_mut(&id) else {
            let _ = reply.send(false);
            return;
        };
        let mut recorded = None;
        match &request {
            ChannelRequest::Pty {
                term,
                col_width,
                row_height,
                ..
            } => {
                slot.pty = true;
                slot.terminal = Some(Pty {
                    term: term.clone(),
                    cols: *col_width,
                    rows: *row_height,
                });
            }
            ChannelRequest::Agent => self.asked.agent = true,
            ChannelRequest::X11 { .. } => self.asked.x11 = true,
            ChannelRequest::Shell | ChannelRequest::Exec(_) | ChannelRequest::Subsystem(_) => {
                if let Some(start) = slot.start.take() {
                    let banner = self.banner.take();
                    match &self.recorder {
                        // The forwarder starts the recording, then the program.
                        Some(recorder) => {
                            recorded = Some(Recorded {
                                recorder: recorder.clone(),
                                channel: id_number(id),
                                program: program_of(&request),
                                terminal: slot.terminal.clone(),
                                start,
                                banner,
                            })
                        }
                        None => {
                            let _ = start.send(Start {
                                banner,
                                pty: slot.pty,
                                ..Start::default()
                            });
                        }
                    }
                }
            }
            _ => {}
        }
        // Requests without a reply in the protocol are answered at once, so the
        // client's session never waits on the upstream for them; the channel's
        // forwarder keeps every request in order.
        let (reply, answer) = if matches!(
            request,
            ChannelRequest::WindowChange { .. } | ChannelRequest::Signal(_)
        ) {
            let _ = reply.send(true);
            (None, false)
        } else {
            (Some(reply), true)
        };
        let forwarder = slot.forwarder.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
            tasks.spawn(forward_requests(slot.up.clone(), rx));
            tx
        });
        if let Err(e) = forwarder.try_send(Forward {
            request,
            reply,
            recorded,
        }) {
            // Only a client flooding no-reply requests fills the queue.
            tracing::debug!(answer, "channel request dropped: queue full");
            if let Some(reply) = e.into_inner().reply {
                let _ = reply.send(false);
            }
        }
    }

    /// `tcpip-forward` (`ssh -R`): asks the upstream to listen; `reply` gets the port.
    pub(crate) fn tcpip_forward(
        &mut self,
        address: String,
        port: u32,
        reply: oneshot::Sender<Option<u32>>,
        tasks: &mut JoinSet<()>,
    ) {
        self.asked.remote_forward = true;
        let upstream = self.upstream.clone();
        tasks.spawn(async move {
            let bound = match bounded(upstream.tcpip_forward(&address, port)).await {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::info!(%address, port, "remote forwarding refused upstream: {e}");
                    None
                }
            };
            let _ = reply.send(bound);
        });
    }

    /// `cancel-tcpip-forward`.
    pub(crate) fn cancel_tcpip_forward(
        &self,
        address: String,
        port: u32,
        reply: oneshot::Sender<bool>,
        tasks: &mut JoinSet<()>,
    ) {
        let upstream = self.upstream.clone();
        tasks.spawn(async move {
            let ok = bounded(upstream.cancel_tcpip_forward(&address, port))
                .await
                .is_ok();
            let _ = reply.send(ok);
        });
    }

    /// Handles what the upstream started; `Some(reason)` when the upstream is gone.
    /// A channel the client did not ask for is refused (its reply dropped).
    pub(crate) fn upstream_event(
        &self,
        event: UpstreamEvent,
        handle: &Handle,
        tasks: &mut JoinSet<()>,
    ) -> Option<String> {
        let refused = match &event {
            UpstreamEvent::ForwardedTcpip { .. } if !self.asked.remote_forward => {
                Some("forwarded-tcpip")
            }
            UpstreamEvent::AgentChannel { .. } if !self.asked.agent => Some("agent"),
            UpstreamEvent::X11Channel { .. } if !self.asked.x11 => Some("x11"),
            _ => None,
        };
        if let Some(kind) = refused {
            tracing::info!(route = %self.route, kind, "upstream channel refused: the client did not ask for it");
            return None;
        }
        let upstream = self.upstream.clone();
        let handle = handle.clone();
        let metrics = self.metrics.clone();
        match event {
            UpstreamEvent::ForwardedTcpip {
                channel,
                reply,
                connected_address,
                connected_port,
                originator_address,
                originator_port,
            } => {
                tasks.spawn(async move {
                    let opening = handle.channel_open_forwarded_tcpip(
                        connected_address,
                        connected_port,
                        originator_address,
                        originator_port,
                    );
                    if let Ok(client) = opening.await {
                        reply.accept().await;
                        let (up, reader) = upstream.adopt(channel);
                        relay_channel(client, handle, up, reader, metrics).await;
                    }
                });
                None
            }
            UpstreamEvent::AgentChannel { channel, reply } => {
                tasks.spawn(relay_agent_channel(
                    handle, upstream, channel, reply, metrics,
                ));
                None
            }
            UpstreamEvent::X11Channel {
                channel,
                reply,
                originator_address,
                originator_port,
            } => {
                tasks.spawn(async move {
                    let opening = handle.channel_open_x11(originator_address, originator_port);
                    if let Ok(client) = opening.await {
                        reply.accept().await;
                        let (up, reader) = upstream.adopt(channel);
                        relay_channel(client, handle, up, reader, metrics).await;
                    }
                });
                None
            }
            UpstreamEvent::Disconnected { reason } => Some(reason),
        }
    }

    /// The client closed a channel (its relay task closes the upstream twin).
    pub(crate) fn forget(&mut self, id: ChannelId) {
        self.channels.remove(&id);
    }

    /// Ends the upstream connection.
    pub(crate) async fn disconnect(&self, reason: &str) {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.upstream.disconnect(reason),
        )
        .await;
    }
}

/// Forwards a channel's requests upstream, one at a time, in arrival order. On a
/// recorded route the program's start first starts its recording (a recording
/// that cannot be written refuses the program on a fail-closed route), and window
/// changes are recorded as resizes.
async fn forward_requests(up: UpstreamChannel, mut requests: mpsc::Receiver<Forward>) {
    let mut tap = None;
    while let Some(Forward {
        request,
        reply,
        recorded,
    }) = requests.recv().await
    {
        if let Some(r) = recorded {
            let now = tether_core::Clock::now(&tether_core::SystemClock);
            let pty = r.terminal.is_some();
            match r
                .recorder
                .start(r.channel, &r.program, r.terminal.as_ref(), now)
                .await
            {
                Ok(recording) => {
                    tap = recording.as_ref().and_then(|rec| rec.tap.clone());
                    let _ = r.start.send(Start {
                        banner: r.banner,
                        pty,
                        recording,
                        refused: None,
                    });
                }
                Err(line) => {
                    // Answered yes so the client reads why (OpenSSH gives up on a
                    // failed request without printing what came with it); the
                    // program is never started upstream.
                    if let Some(reply) = reply {
                        let _ = reply.send(true);
                    }
                    let _ = r.start.send(Start {
                        refused: Some(line),
                        ..Start::default()
                    });
                    continue;
                }
            }
        }
        if let (
            Some(tap),
            ChannelRequest::WindowChange {
                col_width,
                row_height,
                ..
            },
        ) = (&tap, &request)
        {
            tap.resize(*col_width, *row_height).await;
        }
        let ok = forward(&up, request).await;
        if let Some(reply) = reply {
            let _ = reply.send(ok);
        }
    }
}

fn program_of(request: &ChannelRequest) -> Program {
    match request {
        ChannelRequest::Exec(command) => {
            Program::Exec(String::from_utf8_lossy(command).into_owned())
        }
        ChannelRequest::Subsystem(name) => Program::Subsystem(name.clone()),
        _ => Program::Shell,
    }
}

/// The channel's number (for a recording's id).
fn id_number(id: ChannelId) -> u32 {
    id.to_string().parse().unwrap_or(0)
}

/// Forwards one request; `true` when the upstream said yes.
async fn forward(up: &UpstreamChannel, request: ChannelRequest) -> bool {
    let result = match request {
        ChannelRequest::Pty {
            term,
            col_width,
            row_height,
            pix_width,
            pix_height,
            modes,
        } => {
            up.request_pty(&term, col_width, row_height, pix_width, pix_height, &modes)
                .await
        }
        ChannelRequest::Env { name, value } => up.set_env(&name, &value).await,
        ChannelRequest::Shell => up.request_shell().await,
        ChannelRequest::Exec(command) => up.exec(&command).await,
        ChannelRequest::Subsystem(name) => up.request_subsystem(&name).await,
        ChannelRequest::WindowChange {
            col_width,
            row_height,
            pix_width,
            pix_height,
        } => up
            .window_change(col_width, row_height, pix_width, pix_height)
            .await
            .map(|()| true),
        ChannelRequest::X11 {
            single_connection,
            protocol,
            cookie,
            screen,
        } => {
            up.request_x11(single_connection, &protocol, &cookie, screen)
                .await
        }
        ChannelRequest::Agent => up.agent_forward().await,
        ChannelRequest::Signal(sig) => up.signal(sig).await.map(|()| true),
    };
    match result {
        Ok(ok) => ok,
        Err(e) => {
            tracing::debug!("channel request failed upstream: {e}");
            false
        }
    }
}

/// CR LF line ends for a terminal in raw mode.
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Relays a session channel: waits until it starts a program (so the banner goes
/// first and knows whether there is a terminal), then pumps.
async fn serve_session(
    channel: Channel<Msg>,
    handle: Handle,
    up: UpstreamChannel,
    reader: UpstreamReader,
    start: oneshot::Receiver<Start>,
    metrics: Arc<Metrics>,
) {
    // A channel closed before any program drops the sender: pump at once, which
    // sees the close and closes the upstream twin.
    let mut recording = None;
    if let Ok(start) = start.await {
        let id = channel.id();
        if let Some(line) = start.refused {
            tracing::warn!("{line}");
            let _ = handle
                .extended_data(id, 1, format!("{line}\r\n").into_bytes())
                .await;
            let _ = handle.exit_status_request(id, 1).await;
            let _ = handle.eof(id).await;
            let _ = handle.close(id).await;
            let _ = up.writer().close().await;
            return;
        }
        write_banner(&handle, id, start.banner, start.pty).await;
        recording = start.recording;
    }
    let id = channel.id();
    let tap = recording.as_ref().and_then(|r| r.tap.clone());
    let report = pump_tapped(channel, handle.clone(), up.clone(), reader, metrics, tap).await;
    if report.end == PumpEnd::RecordingFailed {
        let line = crate::record::ENDED_UNRECORDED;
        tracing::warn!("{line}");
        let _ = handle
            .extended_data(id, 1, format!("{line}\r\n").into_bytes())
            .await;
        let _ = handle.eof(id).await;
        let _ = handle.close(id).await;
        let _ = up.writer().close().await;
    }
    if let Some(recording) = recording {
        recording.finish(ended(&report)).await;
    }
    log_end(id, &report);
}

/// A recording's end, from its relay's report.
pub(crate) fn ended(report: &PumpReport) -> crate::record::Ended {
    crate::record::Ended {
        bytes_to_upstream: report.bytes_to_upstream,
        bytes_to_client: report.bytes_to_client,
        exit_status: report.exit_status,
        exit_signal: report.exit_signal.clone(),
    }
}

fn log_end(id: ChannelId, report: &PumpReport) {
    tracing::debug!(
        channel = %id,
        end = ?report.end,
        to_upstream = report.bytes_to_upstream,
        to_client = report.bytes_to_client,
        exit_status = ?report.exit_status,
        "channel relay ended"
    );
}

/// The upstream's banner on the channel's stderr, before anything else on it.
async fn write_banner(handle: &Handle, id: ChannelId, banner: Option<String>, pty: bool) {
    if let Some(banner) = banner {
        let text = if pty { crlf(&banner) } else { banner };
        let _ = handle.extended_data(id, 1, text.into_bytes()).await;
    }
}

/// An agent channel the upstream opened (`ssh -A`): opened towards the client's
/// agent and relayed; refused to the upstream (`reply` dropped) when the client
/// will not open it.
async fn relay_agent_channel(
    handle: Handle,
    upstream: Arc<Upstream>,
    channel: Channel<russh::client::Msg>,
    reply: russh::client::ChannelOpenHandle,
    metrics: Arc<Metrics>,
) {
    if let Ok(client) = handle.channel_open_agent().await {
        reply.accept().await;
        let (up, reader) = upstream.adopt(channel);
        relay_channel(client, handle, up, reader, metrics).await;
    }
}

async fn relay_channel(
    channel: Channel<Msg>,
    handle: Handle,
    up: UpstreamChannel,
    reader: UpstreamReader,
    metrics: Arc<Metrics>,
) {
    let id = channel.id();
    let report = pump_tapped(channel, handle, up, reader, metrics, None).await;
    log_end(id, &report);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_line_ends_for_a_terminal() {
        assert_eq!(crlf("a\nb\r\nc\n"), "a\r\nb\r\nc\r\n");
    }
}
