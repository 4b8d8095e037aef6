//! One channel on the upstream connection, split in two: [`UpstreamChannel`], a
//! cloneable control handle that forwards the client's session requests (pty-req,
//! env, shell, exec, subsystem, window-change, signal, agent and X11 requests) and
//! waits for the upstream's reply; and [`UpstreamReader`], the receiving half that
//! [`pump`](super::pump) consumes.
//!
//! Requests that take a reply are always sent with `want_reply = true`, and the
//! reply comes back through the client handler's `channel_success`/`channel_failure`
//! callbacks (not through the reader), so a request completes whether or not the
//! pump is running yet.

use std::sync::Arc;
use std::time::Duration;

use russh::client::Msg;
use russh::{Channel, ChannelId, ChannelReadHalf, ChannelWriteHalf, Pty, Sig};

use super::error::UpstreamError;
use super::handler::Replies;

/// How long a channel request may wait for the upstream's reply.
pub const REQUEST_REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// Control handle of an upstream channel (cheap to clone).
#[derive(Clone)]
pub struct UpstreamChannel {
    write: Arc<ChannelWriteHalf<Msg>>,
    replies: Replies,
    /// Serialises "register waiter + send request" so waiters stay in wire order.
    order: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for UpstreamChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamChannel")
            .field("id", &self.write.id())
            .finish()
    }
}

/// Receiving half of an upstream channel; hand it to [`pump`](super::pump).
pub struct UpstreamReader {
    pub(crate) read: ChannelReadHalf,
}

impl std::fmt::Debug for UpstreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamReader").finish_non_exhaustive()
    }
}

impl UpstreamReader {
    /// The next message from the upstream (`None` once the channel is gone). For
    /// tests and callers that do not use [`pump`](super::pump).
    pub async fn wait(&mut self) -> Option<russh::ChannelMsg> {
        self.read.wait().await
    }
}

pub(crate) fn split(channel: Channel<Msg>, replies: Replies) -> (UpstreamChannel, UpstreamReader) {
    let (read, write) = channel.split();
    (
        UpstreamChannel {
            write: Arc::new(write),
            replies,
            order: Arc::new(tokio::sync::Mutex::new(())),
        },
        UpstreamReader { read },
    )
}

impl UpstreamChannel {
    /// The upstream-side channel id.
    pub fn id(&self) -> ChannelId {
        self.write.id()
    }

    pub(crate) fn writer(&self) -> &ChannelWriteHalf<Msg> {
        &self.write
    }

    /// Sends a request built by `send` with want_reply and waits for the reply:
    /// `Ok(true)` = success, `Ok(false)` = the upstream refused.
    async fn with_reply<F>(&self, send: F) -> Result<bool, UpstreamError>
    where
        F: std::future::Future<Output = Result<(), russh::Error>>,
    {
        let waiter = {
            let _order = self.order.lock().await;
            let waiter = self.replies.expect(self.id());
            send.await.map_err(UpstreamError::from_russh)?;
            waiter
        };
        match tokio::time::timeout(REQUEST_REPLY_TIMEOUT, waiter).await {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(_)) => Err(UpstreamError::Closed),
            Err(_) => Err(UpstreamError::RequestTimedOut),
        }
    }

    /// `pty-req` with the client's terminal type, size and modes.
    pub async fn request_pty(
        &self,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
    ) -> Result<bool, UpstreamError> {
        self.with_reply(self.write.request_pty(
            true, term, col_width, row_height, pix_width, pix_height, modes,
        ))
        .await
    }

    /// `env` (the upstream's `AcceptEnv` decides).
    pub async fn set_env(&self, name: &str, value: &str) -> Result<bool, UpstreamError> {
        self.with_reply(self.write.set_env(true, name, value)).await
    }

    /// `shell`.
    pub async fn request_shell(&self) -> Result<bool, UpstreamError> {
        self.with_reply(self.write.request_shell(true)).await
    }

    /// `exec` with the client's command bytes, unchanged.
    pub async fn exec(&self, command: &[u8]) -> Result<bool, UpstreamError> {
        self.with_reply(self.write.exec(true, command.to_vec()))
            .await
    }

    /// `subsystem` (e.g. `sftp`).
    pub async fn request_subsystem(&self, name: &str) -> Result<bool, UpstreamError> {
        self.with_reply(self.write.request_subsystem(true, name))
            .await
    }

    /// `auth-agent-req@openssh.com`: lets the upstream open agent channels back
    /// (they arrive as [`UpstreamEvent::AgentChannel`](super::UpstreamEvent)).
    pub async fn agent_forward(&self) -> Result<bool, UpstreamError> {
        self.with_reply(self.write.agent_forward(true)).await
    }

    /// `x11-req` (X11 channels then arrive as
    /// [`UpstreamEvent::X11Channel`](super::UpstreamEvent)).
    pub async fn request_x11(
        &self,
        single_connection: bool,
        auth_protocol: &str,
        auth_cookie: &str,
        screen_number: u32,
    ) -> Result<bool, UpstreamError> {
        self.with_reply(self.write.request_x11(
            true,
            single_connection,
            auth_protocol,
            auth_cookie,
            screen_number,
        ))
        .await
    }

    /// `window-change` (no reply in the protocol).
    pub async fn window_change(
        &self,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
    ) -> Result<(), UpstreamError> {
        self.write
            .window_change(col_width, row_height, pix_width, pix_height)
            .await
            .map_err(UpstreamError::from_russh)
    }

    /// `signal` (no reply in the protocol).
    pub async fn signal(&self, signal: Sig) -> Result<(), UpstreamError> {
        self.write
            .signal(signal)
            .await
            .map_err(UpstreamError::from_russh)
    }

    /// Closes the channel towards the upstream (the pump does this itself when the
    /// client closes).
    pub async fn close(&self) -> Result<(), UpstreamError> {
        self.write.close().await.map_err(UpstreamError::from_russh)
    }
}
