//! The upstream client: one SSH connection from tether to a route's sshd per client
//! connection, logged in as the user's login name with a fresh ed25519 key and a
//! short-lived user certificate ([`crate::cert`]), the upstream's host key checked
//! ([`HostKeyCheck`]), and a relay ([`pump`]) for each channel pair. This module knows
//! russh's client side and the store's pinned host keys; it must not know about
//! bindings, policy or the web side — the caller decides *whether* to connect.
//!
//! # Wiring it into the server front end
//!
//! (tether's own wiring is the private `relay` module: it connects during authentication,
//! right after the policy allowed the route, and follows this table.)
//!
//! After authentication and the policy decision, the connection actor calls
//! [`connect`] with a bounded `mpsc` sender for [`UpstreamEvent`]s; on error it writes
//! the error's `Display` (one line) to the client and disconnects. If
//! [`Upstream::banner`] is `Some`, forward it (e.g. as keyboard-interactive
//! instructions or stderr). Then, per russh server `Handler` callback:
//!
//! | server `Handler` callback | upstream call |
//! |---|---|
//! | `channel_open_session(channel, reply)` | [`Upstream::open_session`]; on `Ok` accept `reply`, spawn [`pump`]`(channel, session.handle(), up, reader)`, keep `up` (the [`UpstreamChannel`]) by channel id; on `Err` reject |
//! | `channel_open_direct_tcpip(channel, host, port, orig, orig_port, reply)` | [`Upstream::open_direct_tcpip`], then as above |
//! | `pty_request(id, term, w, h, pw, ph, modes)` | `up.`[`request_pty`](UpstreamChannel::request_pty) |
//! | `env_request(id, name, value)` | `up.`[`set_env`](UpstreamChannel::set_env) |
//! | `shell_request(id)` | `up.`[`request_shell`](UpstreamChannel::request_shell) |
//! | `exec_request(id, data)` | `up.`[`exec`](UpstreamChannel::exec) |
//! | `subsystem_request(id, name)` (sftp) | `up.`[`request_subsystem`](UpstreamChannel::request_subsystem) |
//! | `x11_request(id, ..)` | `up.`[`request_x11`](UpstreamChannel::request_x11) |
//! | `agent_request(id)` → `bool` | `up.`[`agent_forward`](UpstreamChannel::agent_forward) (return its result) |
//! | `window_change_request(id, ..)` | `up.`[`window_change`](UpstreamChannel::window_change) |
//! | `signal(id, sig)` | `up.`[`signal`](UpstreamChannel::signal) |
//! | `tcpip_forward(addr, &mut port)` → `bool` | [`Upstream::tcpip_forward`]; set `*port` to the returned port |
//! | `cancel_tcpip_forward(addr, port)` → `bool` | [`Upstream::cancel_tcpip_forward`] |
//!
//! For the requests that return `Result<bool, _>`, await the call *inside* the
//! callback (or await the actor's answer there) and then call
//! `session.channel_success(id)` on `Ok(true)`, `session.channel_failure(id)`
//! otherwise, before the callback returns. russh keeps only the latest request's
//! `want_reply` flag per channel, so replying from another task later could answer
//! the wrong request; replying within the callback is always right (russh sends
//! nothing when the client did not ask for a reply). The wait is bounded by
//! [`REQUEST_REPLY_TIMEOUT`].
//!
//! Upstream-initiated channels arrive as [`UpstreamEvent`]s: for `ForwardedTcpip`
//! open `handle.channel_open_forwarded_tcpip(connected_address, connected_port,
//! originator_address, originator_port)` towards the client, for `AgentChannel`
//! `handle.channel_open_agent()`, for `X11Channel` `handle.channel_open_x11(..)`;
//! if that succeeds, `reply.accept().await`, [`Upstream::adopt`] the upstream channel
//! and spawn [`pump`]; if not, drop `reply` (the upstream sees the open refused).
//! `Disconnected` (or the receiver returning `None`) means the upstream is gone:
//! tell the client and disconnect it.
//!
//! Keepalives are hop by hop: russh answers `keepalive@openssh.com` from either
//! peer itself, and this client sends its own every [`KEEPALIVE_INTERVAL`] so a dead
//! upstream is noticed (then `Disconnected`).

mod channel;
mod error;
mod handler;
mod hostkey;
mod outcome;
mod pump;

use std::borrow::Cow;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use russh::client::{self, Msg};
use russh::keys::ssh_key::PrivateKey;
use russh::{cipher, Channel, Disconnect, Preferred, SshId};

/// Cipher preference towards upstream servers: AES-GCM before chacha20-poly1305.
const UPSTREAM_CIPHERS: &[cipher::Name] = &[
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_CTR,
];
use tether_core::{Clock, SystemClock, Timestamp};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::access::AccessGranted;
pub use crate::access::{UpstreamTarget, UpstreamUser};

pub use channel::{UpstreamChannel, UpstreamReader, REQUEST_REPLY_TIMEOUT};
pub use error::UpstreamError;
pub use handler::UpstreamEvent;
pub use hostkey::HostKeyCheck;
pub(crate) use outcome::bounded;
pub(crate) use pump::pump_tapped;
pub use pump::{pump, PumpEnd, PumpReport};

use handler::{HandlerError, Shared, UpstreamHandler};

/// Limit for the TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit for each TCP connect when a route lists several upstreams: a silent first
/// upstream delays the next by at most this much.
pub const FAILOVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Limit for the SSH handshake (version exchange and key exchange).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Limit for the certificate login.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(15);
/// Keepalive interval towards the upstream; three unanswered end the connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// An authenticated upstream connection. It ends when it and every channel taken
/// from it are dropped, or at once with [`Upstream::disconnect`].
pub struct Upstream {
    handle: client::Handle<UpstreamHandler>,
    shared: Shared,
    target: UpstreamTarget,
    banner: Option<String>,
    host_key: String,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.target)
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

fn unix_secs(t: Timestamp) -> u64 {
    u64::try_from(t.unix_seconds()).unwrap_or(0)
}

/// Connects to the granted route's upstream, verifies its host key and logs in as
/// the granted login with a fresh ed25519 key certified by `ca` (key id = the
/// user's email). Only a policy decision makes an [`AccessGranted`] (STYLE habit 6);
/// a grant without a login (jump-host mode) is refused with
/// [`UpstreamError::NoLogin`].
///
/// Server-initiated channels and the disconnect are sent to `events` (bounded; an
/// event that does not fit is dropped and its channel refused — see the module docs).
pub async fn connect(
    grant: &AccessGranted,
    ca: &PrivateKey,
    host_keys: &HostKeyCheck,
    events: mpsc::Sender<UpstreamEvent>,
) -> Result<Upstream, UpstreamError> {
    let target = grant.target();
    let user = &grant
        .upstream_user()
        .ok_or_else(|| UpstreamError::NoLogin {
            route: target.route.clone(),
        })?;
    let route = target.route.clone();
    let (address, stream) = dial_in_order(target).await?;
    // The upstream actually reached: its own pinned host key, and what the audit
    // log and messages name.
    let target = UpstreamTarget {
        address: address.clone(),
        ..target.clone()
    };
    let anchors = host_keys.load(&route, &address).await?;
    let config = client_config(&anchors);
    let shared = Shared::default();
    let handler = UpstreamHandler {
        anchors,
        shared: shared.clone(),
        events,
        route: route.clone(),
    };

    // Buffered for the same reason as the client side (see `stream::READ_BUFFER`),
    // and like it holds no buffer while the upstream is quiet.
    let stream = crate::stream::Buffered::new(stream);
    let handshake = client::connect_stream(Arc::new(config), stream, handler);
    let mut handle = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(h)) => h,
        Ok(Err(HandlerError::Refused(e))) => {
            tracing::warn!(route = %route, address = %address, "{e}");
            return Err(e);
        }
        Ok(Err(HandlerError::Ssh(e))) => {
            return Err(UpstreamError::Handshake {
                route,
                address,
                detail: e.to_string(),
            })
        }
        Err(_) => return Err(UpstreamError::TimedOut { route, address }),
    };
    log_in(&mut handle, &target, grant, user, ca).await?;

    let banner = {
        let b = shared.banner.lock().unwrap_or_else(PoisonError::into_inner);
        (!b.is_empty()).then(|| b.clone())
    };
    let host_key = shared
        .host_key
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_default();
    tracing::info!(route = %route, address = %address, login = %user.login,
        host_key = %host_key, "upstream connected");
    Ok(Upstream {
        handle,
        shared,
        target,
        banner,
        host_key,
    })
}

/// The TCP connection to the first of the target's upstreams that accepts one, in
/// order (ordered failover; no balancing). Each attempt is bounded by
/// [`CONNECT_TIMEOUT`], or [`FAILOVER_CONNECT_TIMEOUT`] when there are several. Only
/// an unreachable upstream moves on to the next: one that answers and then fails
/// the handshake, its host key check or the login is the answer. All unreachable →
/// the last one's error.
pub(crate) async fn dial_in_order(
    target: &UpstreamTarget,
) -> Result<(String, TcpStream), UpstreamError> {
    let limit = if target.failover.is_empty() {
        CONNECT_TIMEOUT
    } else {
        FAILOVER_CONNECT_TIMEOUT
    };
    let mut last = None;
    for address in target.addresses() {
        match dial(&target.route, address, limit).await {
            Ok(stream) => return Ok((address.to_string(), stream)),
            Err(e) => {
                if target.failover.is_empty() {
                    return Err(e);
                }
                tracing::info!(route = %target.route, address = %address,
                    "upstream unreachable; trying the next one: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| UpstreamError::Unreachable {
        route: target.route.clone(),
        address: target.address.clone(),
        source: None,
    }))
}

/// The TCP connection to one upstream, bounded by `limit`.
async fn dial(route: &str, address: &str, limit: Duration) -> Result<TcpStream, UpstreamError> {
    let unreachable = |source| UpstreamError::Unreachable {
        route: route.to_string(),
        address: address.to_string(),
        source,
    };
    let stream = match tokio::time::timeout(limit, TcpStream::connect(address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(unreachable(Some(e))),
        Err(_) => return Err(unreachable(None)),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The russh client configuration for one upstream: its host key algorithms in
/// the order its trust anchors prefer.
fn client_config(anchors: &hostkey::Anchors) -> client::Config {
    let (key_order, cert_algs) = anchors.preferred_algorithms();
    client::Config {
        client_id: SshId::Standard(Cow::Owned(format!(
            "SSH-2.0-tether_{}",
            env!("CARGO_PKG_VERSION")
        ))),
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: 3,
        nodelay: true,
        preferred: Preferred {
            key: Cow::Owned(key_order),
            host_key_certificates: Cow::Owned(cert_algs),
            // AES-GCM first on the gateway's own hop: with AES-NI it costs a fraction
            // of chacha20-poly1305's CPU (the throughput benchmark's profile showed a
            // third of the relay's CPU in chacha20-poly1305 on this hop).
            cipher: Cow::Borrowed(UPSTREAM_CIPHERS),
            ..Preferred::DEFAULT
        },
        ..client::Config::default()
    }
}

/// Logs in as the grant's login with a fresh key and a short-lived certificate
/// from tether's CA, bounded by [`AUTH_TIMEOUT`].
async fn log_in(
    handle: &mut client::Handle<UpstreamHandler>,
    target: &UpstreamTarget,
    grant: &AccessGranted,
    user: &UpstreamUser,
    ca: &PrivateKey,
) -> Result<(), UpstreamError> {
    let (route, address) = (target.route.clone(), target.address.clone());
    let now = unix_secs(SystemClock.now());
    let key = crate::cert::ephemeral_ed25519()?;
    let cert = crate::cert::sign_user_cert(
        ca,
        key.public_key(),
        &user.email,
        &user.login,
        grant.permit(),
        unix_secs(user.binding_expires_at),
        now,
    )?;
    let auth = handle.authenticate_openssh_cert(user.login.clone(), Arc::new(key), cert);
    match tokio::time::timeout(AUTH_TIMEOUT, auth).await {
        Ok(Ok(result)) if result.success() => Ok(()),
        Ok(Ok(_)) => {
            tracing::info!(route = %route, address = %address, login = %user.login,
                "upstream refused the certificate");
            Err(UpstreamError::AuthRefused {
                login: user.login.clone(),
            })
        }
        Ok(Err(e)) => Err(UpstreamError::Handshake {
            route,
            address,
            detail: e.to_string(),
        }),
        Err(_) => Err(UpstreamError::TimedOut { route, address }),
    }
}

impl Upstream {
    /// The upstream's authentication banner, if it sent one (forward it to the client).
    pub fn banner(&self) -> Option<&str> {
        self.banner.as_deref()
    }

    /// Fingerprint (`SHA256:...`) of the host key that was accepted.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key
    }

    /// The route and address this connection goes to.
    pub fn target(&self) -> &UpstreamTarget {
        &self.target
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Takes over a channel the upstream opened (from an [`UpstreamEvent`]), after
    /// `reply.accept()`, so it can be [`pump`]ed.
    pub fn adopt(&self, channel: Channel<Msg>) -> (UpstreamChannel, UpstreamReader) {
        channel::split(channel, self.shared.replies.clone())
    }

    /// Opens a session channel.
    pub async fn open_session(&self) -> Result<(UpstreamChannel, UpstreamReader), UpstreamError> {
        let ch = self
            .handle
            .channel_open_session()
            .await
            .map_err(UpstreamError::from_russh)?;
        Ok(self.adopt(ch))
    }

    /// Opens a `direct-tcpip` channel (`ssh -L` through the upstream).
    pub async fn open_direct_tcpip(
        &self,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
    ) -> Result<(UpstreamChannel, UpstreamReader), UpstreamError> {
        let ch = self
            .handle
            .channel_open_direct_tcpip(host, port, originator_address, originator_port)
            .await
            .map_err(UpstreamError::from_russh)?;
        Ok(self.adopt(ch))
    }

    /// `tcpip-forward` (`ssh -R`): returns the port the upstream listens on (the
    /// requested one, or the allocated one when `port` is 0).
    pub async fn tcpip_forward(&self, address: &str, port: u32) -> Result<u32, UpstreamError> {
        self.handle
            .tcpip_forward(address, port)
            .await
            .map_err(UpstreamError::from_russh)
    }

    /// `cancel-tcpip-forward`.
    pub async fn cancel_tcpip_forward(
        &self,
        address: &str,
        port: u32,
    ) -> Result<(), UpstreamError> {
        self.handle
            .cancel_tcpip_forward(address, port)
            .await
            .map_err(UpstreamError::from_russh)
    }

    /// Ends the connection with `SSH_DISCONNECT_BY_APPLICATION` and `reason`.
    pub async fn disconnect(&self, reason: &str) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, reason, "en")
            .await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// A loopback port nothing listens on (bound, then released).
    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        addr.to_string()
    }

    fn target(address: String, failover: Vec<String>) -> UpstreamTarget {
        UpstreamTarget {
            route: "r".into(),
            address,
            failover,
        }
    }

    #[tokio::test]
    async fn dials_the_upstreams_in_order_past_the_unreachable_ones() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap().to_string();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_addr = other.local_addr().unwrap().to_string();
        let down = closed_port();

        let t = target(down.clone(), vec![live_addr.clone(), other_addr.clone()]);
        let (reached, _stream) = dial_in_order(&t).await.unwrap();
        assert_eq!(reached, live_addr, "the first one up, not the later one");

        let t = target(live_addr.clone(), vec![down.clone()]);
        assert_eq!(dial_in_order(&t).await.unwrap().0, live_addr, "in order");

        let (down2, down3) = (closed_port(), closed_port());
        let t = target(down2, vec![down3.clone()]);
        match dial_in_order(&t).await {
            Err(UpstreamError::Unreachable { address, .. }) => assert_eq!(address, down3),
            other => panic!("expected unreachable, got {other:?}"),
        }
    }
}
