//! The vocabulary between the russh handler and the connection actor: one
//! [`Event`] per russh callback that matters, carrying everything the client sent
//! (the internal CLI ignores most of it; the route relay forwards it upstream) and,
//! where russh needs an answer, a oneshot for it. Plain data, no logic. Channel data
//! and EOF are not events: they reach whoever serves the channel through russh's
//! per-channel queue (`Channel<Msg>`).

use russh::keys::{Certificate, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg};
use russh::{Channel, ChannelId, Pty, Sig};
use tokio::sync::oneshot;

/// An authentication request, as the actor sees it.
#[derive(Debug)]
pub(crate) enum AuthRequest {
    /// `none`.
    None,
    /// `password` (never offered; always a failure).
    Password,
    /// `publickey` without a signature (a query).
    Offered(PublicKey),
    /// `publickey` with a verified signature: a plain key, or a user certificate
    /// (signature and validity window verified by russh) and its key.
    Verified {
        /// The key (a certificate's certified key).
        key: PublicKey,
        /// The certificate, when the client authenticated with one.
        cert: Option<Box<Certificate>>,
    },
    /// `keyboard-interactive`: the request (`responded == false`) or the client's
    /// answer to our INFO_REQUEST (`responded == true`).
    Keyboard {
        /// Whether this is the INFO_RESPONSE.
        responded: bool,
    },
}

/// A channel request on an open channel, with everything the client sent (the CLI
/// ignores most of it; the route relay forwards it upstream).
#[derive(Debug)]
pub(crate) enum ChannelRequest {
    /// `pty-req`.
    Pty {
        /// `TERM`.
        term: String,
        /// Width in characters.
        col_width: u32,
        /// Height in rows.
        row_height: u32,
        /// Width in pixels.
        pix_width: u32,
        /// Height in pixels.
        pix_height: u32,
        /// Terminal modes.
        modes: Vec<(Pty, u32)>,
    },
    /// `env`.
    Env {
        /// Variable name.
        name: String,
        /// Value.
        value: String,
    },
    /// `shell`.
    Shell,
    /// `exec`.
    Exec(Vec<u8>),
    /// `subsystem`.
    Subsystem(String),
    /// `window-change`.
    WindowChange {
        /// Width in characters.
        col_width: u32,
        /// Height in rows.
        row_height: u32,
        /// Width in pixels.
        pix_width: u32,
        /// Height in pixels.
        pix_height: u32,
    },
    /// `x11-req`.
    X11 {
        /// Single connection only.
        single_connection: bool,
        /// Auth protocol.
        protocol: String,
        /// Auth cookie.
        cookie: String,
        /// Screen number.
        screen: u32,
    },
    /// `auth-agent-req@openssh.com`.
    Agent,
    /// `signal`.
    Signal(Sig),
}

/// A channel type other than `session` (kept whole for jump-host mode, §8).
#[allow(dead_code)] // `Unsupported` names the type for the log only.
#[derive(Debug)]
pub(crate) enum OtherChannel {
    /// `direct-tcpip` (`ssh -L`, `ssh -J`).
    DirectTcpip {
        /// Requested host.
        host: String,
        /// Requested port.
        port: u32,
        /// Originator address.
        originator_address: String,
        /// Originator port.
        originator_port: u32,
    },
    /// Anything else (`x11`, `forwarded-tcpip`, streamlocal).
    Unsupported(&'static str),
}

/// The actor's answer to an authentication request.
#[derive(Debug)]
pub(crate) struct AuthReply {
    /// russh's verdict.
    pub(crate) auth: Auth,
    /// Text to send as SSH_MSG_USERAUTH_BANNER before the verdict (the sign-in URL
    /// for clients that never show a keyboard-interactive instruction).
    pub(crate) banner: Option<String>,
}

/// What the handler tells the actor.
pub(crate) enum Event {
    /// An authentication request; the actor answers with russh's verdict.
    Auth {
        /// Wire username.
        user: String,
        /// Method and payload.
        request: AuthRequest,
        /// The verdict.
        reply: oneshot::Sender<AuthReply>,
    },
    /// The client opened a session channel.
    OpenSession {
        /// The channel.
        channel: Channel<Msg>,
        /// Accept or reject it through this.
        reply: ChannelOpenHandle,
    },
    /// The client opened another kind of channel.
    OpenOther {
        /// Which.
        kind: OtherChannel,
        /// The channel.
        channel: Channel<Msg>,
        /// Accept or reject it through this.
        reply: ChannelOpenHandle,
    },
    /// A channel request; the actor answers success or failure.
    Request {
        /// The channel.
        channel: ChannelId,
        /// What was asked.
        request: ChannelRequest,
        /// Success?
        reply: oneshot::Sender<bool>,
    },
    /// The client closed a channel.
    Close(ChannelId),
    /// `tcpip-forward` (`ssh -R`); the actor answers with the bound port, or
    /// `None` to refuse.
    TcpipForward {
        /// Address to bind.
        address: String,
        /// Port to bind (0: any).
        port: u32,
        /// The port bound.
        reply: oneshot::Sender<Option<u32>>,
    },
    /// `cancel-tcpip-forward`; the actor answers success or failure.
    CancelTcpipForward {
        /// Address.
        address: String,
        /// Port.
        port: u32,
        /// Success?
        reply: oneshot::Sender<bool>,
    },
}
