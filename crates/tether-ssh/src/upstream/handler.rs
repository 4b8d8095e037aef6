//! The russh client `Handler` for one upstream connection.
//!
//! Kept thin (STYLE habit 5): it checks the host key against the loaded
//! [`Anchors`](super::hostkey::Anchors), records the auth banner, routes channel
//! request replies to the waiting [`UpstreamChannel`](super::UpstreamChannel) call,
//! and turns server-initiated channels and the disconnect into [`UpstreamEvent`]s on a
//! bounded channel. It never blocks the upstream session loop on the front end: an
//! event that does not fit is dropped (a channel open is then refused).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use russh::client::{self, ChannelOpenHandle, DisconnectReason, Msg, Session};
use russh::keys::PublicKeyOrCertificate;
use russh::{Channel, ChannelId};
use tether_core::{Clock, SystemClock};
use tokio::sync::{mpsc, oneshot};

use super::error::UpstreamError;
use super::hostkey::Anchors;

/// Something the upstream started that the front end must handle.
///
/// For the channel variants: open the matching channel towards the SSH client first,
/// then `reply.accept().await` and [`pump`](super::pump) the pair; dropping `reply`
/// refuses the channel to the upstream.
pub enum UpstreamEvent {
    /// `forwarded-tcpip`: a connection arrived on a port the client asked the
    /// upstream to listen on (`ssh -R`).
    ForwardedTcpip {
        /// The upstream side of the channel (usable after `reply.accept()`).
        channel: Channel<Msg>,
        /// Accept or refuse the channel (drop = refuse).
        reply: ChannelOpenHandle,
        /// The address that was connected (as requested with `tcpip-forward`).
        connected_address: String,
        /// The port that was connected.
        connected_port: u32,
        /// The originator's address.
        originator_address: String,
        /// The originator's port.
        originator_port: u32,
    },
    /// `auth-agent@openssh.com`: the upstream wants to talk to the client's agent
    /// (`ssh -A`, after an accepted `auth-agent-req@openssh.com`).
    AgentChannel {
        /// The upstream side of the channel.
        channel: Channel<Msg>,
        /// Accept or refuse the channel (drop = refuse).
        reply: ChannelOpenHandle,
    },
    /// `x11`: an X11 client on the upstream connects back (`ssh -X`).
    X11Channel {
        /// The upstream side of the channel.
        channel: Channel<Msg>,
        /// Accept or refuse the channel (drop = refuse).
        reply: ChannelOpenHandle,
        /// The originator's address.
        originator_address: String,
        /// The originator's port.
        originator_port: u32,
    },
    /// The upstream connection ended. Also signalled by the event receiver returning
    /// `None` once the connection is gone.
    Disconnected {
        /// One line: the upstream's disconnect message or the transport error.
        reason: String,
    },
}

impl std::fmt::Debug for UpstreamEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamEvent::ForwardedTcpip {
                channel,
                connected_address,
                connected_port,
                originator_address,
                originator_port,
                ..
            } => f
                .debug_struct("ForwardedTcpip")
                .field("channel", &channel.id())
                .field(
                    "connected",
                    &format!("{connected_address}:{connected_port}"),
                )
                .field(
                    "originator",
                    &format!("{originator_address}:{originator_port}"),
                )
                .finish(),
            UpstreamEvent::AgentChannel { channel, .. } => f
                .debug_struct("AgentChannel")
                .field("channel", &channel.id())
                .finish(),
            UpstreamEvent::X11Channel { channel, .. } => f
                .debug_struct("X11Channel")
                .field("channel", &channel.id())
                .finish(),
            UpstreamEvent::Disconnected { reason } => f
                .debug_struct("Disconnected")
                .field("reason", reason)
                .finish(),
        }
    }
}

/// Waiters for channel request replies, per channel, in request order (SSH replies to
/// `want_reply` requests in order, per channel).
#[derive(Clone, Default)]
pub(crate) struct Replies(Arc<Mutex<HashMap<ChannelId, VecDeque<oneshot::Sender<bool>>>>>);

impl Replies {
    /// Registers a waiter; call before sending the request.
    pub(crate) fn expect(&self, id: ChannelId) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(id).or_default().push_back(tx);
        rx
    }

    fn resolve(&self, id: ChannelId, ok: bool) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waiter) = map.get_mut(&id).and_then(VecDeque::pop_front) {
            // The waiter may have timed out and gone; its slot still kept the order.
            let _ = waiter.send(ok);
        }
    }

    /// Drops all waiters of a closed channel (they see the channel as closed).
    fn forget(&self, id: ChannelId) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(&id);
    }
}

/// The handler's error: russh's, or our refusal of the host key.
#[derive(Debug)]
pub(crate) enum HandlerError {
    /// Transport or protocol error.
    Ssh(russh::Error),
    /// The host key check refused the upstream.
    Refused(UpstreamError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Ssh(e)
    }
}

/// State shared between the handler (inside the russh session task) and [`super::Upstream`].
#[derive(Clone, Default)]
pub(crate) struct Shared {
    pub(crate) banner: Arc<Mutex<String>>,
    pub(crate) host_key: Arc<Mutex<Option<String>>>,
    pub(crate) replies: Replies,
}

pub(crate) struct UpstreamHandler {
    pub(crate) anchors: Anchors,
    pub(crate) shared: Shared,
    pub(crate) events: mpsc::Sender<UpstreamEvent>,
    pub(crate) route: String,
}

impl UpstreamHandler {
    fn emit(&self, event: UpstreamEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(e)) => {
                tracing::warn!(route = %self.route, "dropping upstream event (event queue full): {e:?}");
            }
            // The client connection is ending; nobody is listening any more.
            Err(mpsc::error::TrySendError::Closed(e)) => {
                tracing::debug!(route = %self.route, "dropping upstream event (front end gone): {e:?}");
            }
        }
    }
}

impl client::Handler for UpstreamHandler {
    type Error = HandlerError;

    async fn auth_banner(
        &mut self,
        banner: &str,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let mut b = self
            .shared
            .banner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        b.push_str(banner);
        Ok(())
    }

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let now = u64::try_from(SystemClock.now().unix_seconds()).unwrap_or(0);
        match self.anchors.verify(server_public_key, now).await {
            Ok(fingerprint) => {
                let mut h = self
                    .shared
                    .host_key
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                *h = Some(fingerprint);
                Ok(true)
            }
            Err(e) => Err(HandlerError::Refused(e)),
        }
    }

    async fn channel_success(
        &mut self,
        channel: ChannelId,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.replies.resolve(channel, true);
        Ok(())
    }

    async fn channel_failure(
        &mut self,
        channel: ChannelId,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.replies.resolve(channel, false);
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.shared.replies.forget(channel);
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.emit(UpstreamEvent::ForwardedTcpip {
            channel,
            reply,
            connected_address: connected_address.to_string(),
            connected_port,
            originator_address: originator_address.to_string(),
            originator_port,
        });
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.emit(UpstreamEvent::AgentChannel { channel, reply });
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        channel: Channel<Msg>,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.emit(UpstreamEvent::X11Channel {
            channel,
            reply,
            originator_address: originator_address.to_string(),
            originator_port,
        });
        Ok(())
    }

    // Channel types a client never legitimately receives: refused (russh's defaults
    // would accept them).
    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host: &str,
        _port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let (text, result) = match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                (format!("upstream disconnected: {}", info.message), Ok(()))
            }
            DisconnectReason::Error(HandlerError::Ssh(e)) => {
                tracing::info!(route = %self.route, "upstream connection lost: {e}");
                (
                    "upstream connection lost".to_string(),
                    Err(HandlerError::Ssh(e)),
                )
            }
            DisconnectReason::Error(HandlerError::Refused(e)) => {
                (e.to_string(), Err(HandlerError::Refused(e)))
            }
        };
        tracing::debug!(route = %self.route, "{text}");
        self.emit(UpstreamEvent::Disconnected { reason: text });
        result
    }
}
