//! An SSH client (russh, in process) that signs in to tether the way `ssh` does —
//! publickey, partial success, keyboard-interactive with the sign-in URL, approval in
//! the browser — and then records the instant its TCP connection is closed.
//!
//! "Closed" means the client saw the server's FIN (a read returning EOF) or a reset:
//! the socket is wrapped, reads returning EOF are noticed, and when russh drops the
//! socket after an SSH disconnect message, the rest of the stream is drained until EOF.
//!
//! For load runs it also logs in with an already bound key (`publickey` succeeds at
//! once), from a chosen loopback source address, and runs or starts commands on
//! session channels.

use std::borrow::Cow;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use russh::client::{self, AuthResult, DisconnectReason, KeyboardInteractiveAuthResponse};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelMsg, MethodKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::html::first_url;
use crate::web::Web;

/// How long a closed socket is drained, waiting for the server's FIN.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Sender side of "when did this connection close".
type CloseTx = Arc<watch::Sender<Option<Instant>>>;

fn mark_closed(tx: &CloseTx) {
    let now = Instant::now();
    tx.send_if_modified(|at| {
        if at.is_none() {
            *at = Some(now);
            true
        } else {
            false
        }
    });
}

/// A TCP stream that notes when it sees EOF or an error.
struct Watched {
    inner: Option<TcpStream>,
    closed: CloseTx,
}

impl Watched {
    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let wants = buf.remaining() > 0;
        let poll = Pin::new(self.stream()?).poll_read(cx, buf);
        match &poll {
            Poll::Ready(Ok(())) if wants && buf.filled().len() == before => {
                mark_closed(&self.closed)
            }
            Poll::Ready(Err(_)) => mark_closed(&self.closed),
            _ => {}
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()?).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()?).poll_shutdown(cx)
    }
}

impl Drop for Watched {
    /// russh drops the socket once the SSH session is over (e.g. after a disconnect
    /// message) without reading to the end: read on until the server's FIN.
    fn drop(&mut self) {
        let (Some(mut stream), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let closed = self.closed.clone();
        rt.spawn(async move {
            let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
                let mut sink = [0u8; 4096];
                loop {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            if drained.is_ok() {
                mark_closed(&closed);
            }
        });
    }
}

/// What a connection's handler saw of the server's goodbye.
#[derive(Debug, Default)]
pub struct Goodbye {
    /// When russh reported the session over, and the disconnect message's text (or
    /// the error) it reported.
    pub at: Option<(Instant, String)>,
}

/// The russh client handler: pins tether's host key on first use (one gateway, many
/// connections, all must present the same key) and records the disconnect.
pub struct Handler {
    host_key: Arc<Mutex<Option<PublicKey>>>,
    goodbye: Arc<Mutex<Goodbye>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            return Ok(false);
        };
        let mut pinned = self.host_key.lock().unwrap();
        Ok(match pinned.as_ref() {
            Some(pin) => pin == key,
            None => {
                *pinned = Some(key.clone());
                true
            }
        })
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let now = Instant::now();
        let (text, result) = match reason {
            DisconnectReason::ReceivedDisconnect(info) => (info.message, Ok(())),
            DisconnectReason::Error(e) => (format!("error: {e}"), Err(e)),
        };
        self.goodbye.lock().unwrap().at.get_or_insert((now, text));
        result
    }
}

/// An ed25519 key from 32 OS-random bytes, and its binding id
/// (`sshkey-SHA256:…`).
pub fn new_key() -> Result<(PrivateKey, String)> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("random seed: {e}"))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let id = binding_id(&key);
    Ok((key, id))
}

/// The binding id of `key`'s bindings (`sshkey-SHA256:…`).
pub fn binding_id(key: &PrivateKey) -> String {
    format!("sshkey-{}", key.public_key().fingerprint(HashAlg::Sha256))
}

/// One authenticated, idle connection to the gateway.
pub struct Conn {
    pub binding_id: String,
    pub handle: client::Handle<Handler>,
    /// `Some(instant)` once the TCP connection has closed.
    pub closed: watch::Receiver<Option<Instant>>,
    pub goodbye: Arc<Mutex<Goodbye>>,
}

impl Conn {
    /// Whether the TCP connection has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// `publickey` with a key that needs no sign-in: must succeed at once.
    pub async fn authenticate_bound(&mut self, user: &str, key: Arc<PrivateKey>) -> Result<()> {
        let key = PrivateKeyWithHashAlg::new(key, None);
        match self
            .handle
            .authenticate_publickey(user, key)
            .await
            .context("publickey")?
        {
            AuthResult::Success => Ok(()),
            other => bail!("publickey with a bound key: expected success, got {other:?}"),
        }
    }

    /// Opens a session channel and sends `exec command` (wanting a reply); returns the
    /// channel once the server has confirmed the request.
    pub async fn exec_start(&self, command: &str) -> Result<Channel<client::Msg>> {
        let mut ch = self
            .handle
            .channel_open_session()
            .await
            .context("opening a session channel")?;
        ch.exec(true, command).await.context("sending exec")?;
        loop {
            match ch.wait().await {
                Some(ChannelMsg::Success) => return Ok(ch),
                Some(ChannelMsg::Failure) => bail!("exec {command:?} refused"),
                Some(ChannelMsg::Close) | None => bail!("channel closed before exec was answered"),
                Some(_) => {}
            }
        }
    }

    /// Runs `command` on a new session channel to its end: when its first output
    /// arrived (if any), and its exit status.
    pub async fn exec(&self, command: &str) -> Result<Exec> {
        let mut ch = self.exec_start(command).await?;
        let mut out = Exec::default();
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. } => {
                    out.first_output.get_or_insert_with(Instant::now);
                }
                ChannelMsg::ExitStatus { exit_status } => out.exit_status = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        out.done = Some(Instant::now());
        Ok(out)
    }

    /// Says goodbye (SSH_MSG_DISCONNECT) and lets the connection close.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
    }
}

/// What [`Conn::exec`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exec {
    pub first_output: Option<Instant>,
    pub exit_status: Option<u32>,
    pub done: Option<Instant>,
}

/// The key exchange of [`Dialer::for_load`], with russh's extension markers.
const LOAD_KEX: &[russh::kex::Name] = &[
    russh::kex::CURVE25519,
    russh::kex::CURVE25519_PRE_RFC_8731,
    russh::kex::EXTENSION_SUPPORT_AS_CLIENT,
    russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
];

/// Shared by every connection of a run.
#[derive(Clone)]
pub struct Dialer {
    pub addr: SocketAddr,
    pub user: String,
    config: Arc<client::Config>,
    host_key: Arc<Mutex<Option<PublicKey>>>,
}

impl Dialer {
    /// For load runs: as [`Dialer::new`], with the key exchange fixed to
    /// curve25519-sha256 (what OpenSSH 9.2's client ends up with against both
    /// tether and OpenSSH 9.2's sshd, russh having no sntrup761), so a comparison
    /// with sshd measures both servers doing the same work.
    pub fn for_load(addr: SocketAddr, user: &str) -> Dialer {
        Dialer::with_kex(addr, user, Some(LOAD_KEX))
    }

    /// The SSH handshake (version exchange, key exchange, host key pinned) over an
    /// already connected `tcp`; not authenticated yet.
    pub async fn handshake(&self, tcp: TcpStream, binding_id: String) -> Result<Conn> {
        let (tx, closed) = watch::channel(None);
        let stream = Watched {
            inner: Some(tcp),
            closed: Arc::new(tx),
        };
        let goodbye = Arc::new(Mutex::new(Goodbye::default()));
        let handler = Handler {
            host_key: self.host_key.clone(),
            goodbye: goodbye.clone(),
        };
        let handle = client::connect_stream(self.config.clone(), stream, handler)
            .await
            .context("SSH handshake")?;
        Ok(Conn {
            binding_id,
            handle,
            closed,
            goodbye,
        })
    }

    /// Connects (from `source` when given, see [`crate::loopback`]) and logs in with
    /// `key`, which must already be bound (or, directly to an sshd, authorized):
    /// `publickey` must succeed at once.
    pub async fn connect_bound(
        &self,
        key: Arc<PrivateKey>,
        source: Option<Ipv4Addr>,
    ) -> Result<Conn> {
        let tcp = match source {
            Some(src) => crate::loopback::connect_from(src, self.addr).await,
            None => TcpStream::connect(self.addr).await,
        }
        .with_context(|| format!("TCP connect to {}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = self.handshake(tcp, binding_id(&key)).await?;
        conn.authenticate_bound(&self.user, key).await?;
        Ok(conn)
    }

    pub fn new(addr: SocketAddr, user: &str) -> Dialer {
        Dialer::with_kex(addr, user, None)
    }

    fn with_kex(addr: SocketAddr, user: &str, kex: Option<&'static [russh::kex::Name]>) -> Dialer {
        let mut config = client::Config {
            inactivity_timeout: None,
            keepalive_interval: None,
            nodelay: true,
            ..Default::default()
        };
        if let Some(kex) = kex {
            config.preferred.kex = Cow::Borrowed(kex);
        }
        Dialer {
            addr,
            user: user.to_string(),
            config: Arc::new(config),
            host_key: Arc::new(Mutex::new(None)),
        }
    }

    /// Connects with a fresh key and signs in through the full flow: publickey
    /// (partial success, no binding yet) → keyboard-interactive → the Verify page in
    /// `web` → Authorize → authenticated. The connection then stays open, idle.
    pub async fn sign_in(&self, web: &Web) -> Result<Conn> {
        let (key, _) = new_key()?;
        self.sign_in_with(web, key).await
    }

    /// As [`Dialer::sign_in`] with a given key (e.g. one an OpenSSH client then uses:
    /// the binding is per key).
    pub async fn sign_in_with(&self, web: &Web, key: PrivateKey) -> Result<Conn> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let Conn {
            binding_id,
            mut handle,
            closed,
            goodbye,
        } = self.handshake(tcp, binding_id(&key)).await?;

        let key = PrivateKeyWithHashAlg::new(Arc::new(key), None);
        match handle.authenticate_publickey(&self.user, key).await? {
            AuthResult::Failure {
                partial_success: true,
                remaining_methods,
            } if remaining_methods.contains(&MethodKind::KeyboardInteractive) => {}
            other => bail!("publickey: expected partial success, got {other:?}"),
        }
        let instructions = match handle
            .authenticate_keyboard_interactive_start(&self.user, None)
            .await?
        {
            KeyboardInteractiveAuthResponse::InfoRequest {
                instructions,
                prompts,
                ..
            } => {
                ensure!(prompts.is_empty(), "expected no prompts, got {prompts:?}");
                instructions
            }
            other => bail!("keyboard-interactive: expected an info request, got {other:?}"),
        };
        let url = first_url(&instructions)
            .with_context(|| format!("no URL in the instruction {instructions:?}"))?
            .to_string();
        ensure!(
            url.contains("user_code="),
            "no user_code in the sign-in URL {url}"
        );

        // The empty answer makes the server wait for the decision; approve meanwhile.
        let answer = async {
            handle
                .authenticate_keyboard_interactive_respond(Vec::new())
                .await
                .context("keyboard-interactive answer")
        };
        let (result, ()) = tokio::try_join!(answer, web.approve(&url))?;
        match result {
            KeyboardInteractiveAuthResponse::Success => {}
            other => bail!("after Authorize: expected success, got {other:?}"),
        }
        Ok(Conn {
            binding_id,
            handle,
            closed,
            goodbye,
        })
    }
}
