//! Channels after authentication: what the connection is for ([`Mode`]) decides
//! what a session channel runs.
//!
//! A route-less username gets the internal CLI (§7); a username with a route goes
//! to [`crate::route`], the single entry point where the upstream relay plugs in.
//! Channel output is written by spawned tasks (see the actor's deadlock rule).

use std::collections::HashMap;
use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tether_core::username::WireUser;
use tether_core::{ClientBinding, Session};

use super::{Actor, Conn, Phase};
use crate::cli::{self, CliContext};
use crate::events::{ChannelRequest, OtherChannel};
use crate::registry::Registration;
use crate::route;

/// What an authenticated connection is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No route in the username: the internal CLI.
    Cli,
    /// `login@route`: a connection to the route's upstream.
    Route {
        /// Route name.
        name: String,
        /// Upstream login name.
        login: String,
    },
}

/// What a session channel asked for so far.
#[derive(Debug, Default)]
struct ChannelState {
    pty: bool,
    started: bool,
}

/// An authenticated connection's state.
#[derive(Debug)]
pub(crate) struct Authed {
    #[allow(dead_code)]
    pub(crate) user: WireUser,
    pub(crate) mode: Mode,
    pub(crate) fingerprint: String,
    pub(crate) binding: ClientBinding,
    pub(crate) session: Session,
    pub(crate) registration: Registration,
    channels: HashMap<ChannelId, ChannelState>,
}

impl Authed {
    pub(crate) fn new(
        user: WireUser,
        mode: Mode,
        fingerprint: String,
        binding: ClientBinding,
        session: Session,
        registration: Registration,
    ) -> Self {
        Authed {
            user,
            mode,
            fingerprint,
            binding,
            session,
            registration,
            channels: HashMap::new(),
        }
    }
}

/// The program a session channel asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Program {
    /// `shell`.
    Shell,
    /// `exec` with its command line.
    Exec(String),
    /// `subsystem` (sftp).
    Subsystem(String),
}

impl Actor {
    fn authed(&mut self) -> Option<&mut Authed> {
        match &mut self.phase {
            Phase::Authed(a) if !self.closing => Some(a),
            _ => None,
        }
    }

    pub(super) async fn on_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
    ) {
        let id = channel.id();
        let Some(authed) = self.authed() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        // Input reaches the actor as handler events, so russh's channel object is
        // not needed: an unread channel receiver would fill up and stall russh.
        // (The route relay will keep it for its pump in `Mode::Route`, and must read
        // it from the moment the channel opens.)
        drop(channel);
        let state = ChannelState::default();
        authed.channels.insert(id, state);
        self.conn.add_channel(id);
        reply.accept().await;
    }

    pub(super) async fn on_open_other(
        &mut self,
        kind: OtherChannel,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
    ) {
        drop(channel);
        tracing::debug!(?kind, "channel type refused");
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
    }

    /// Answers a channel request (success or failure).
    pub(super) fn on_request(&mut self, id: ChannelId, request: ChannelRequest) -> bool {
        let conn = self.conn.clone();
        let ctx = self.ctx.clone();
        let Some(authed) = self.authed() else {
            return false;
        };
        let Some(state) = authed.channels.get_mut(&id) else {
            return false;
        };
        let program = match request {
            ChannelRequest::Pty { .. } => {
                state.pty = true;
                return true;
            }
            ChannelRequest::WindowChange { .. } | ChannelRequest::Signal(_) => return true,
            ChannelRequest::Env { .. } | ChannelRequest::X11 { .. } | ChannelRequest::Agent => {
                return false
            }
            ChannelRequest::Shell => Program::Shell,
            ChannelRequest::Exec(cmd) => Program::Exec(String::from_utf8_lossy(&cmd).into_owned()),
            ChannelRequest::Subsystem(name) => Program::Subsystem(name),
        };
        if state.started {
            return false;
        }
        let pty = state.pty;
        let task = match &authed.mode {
            Mode::Cli => {
                let command = match program {
                    Program::Shell => None,
                    Program::Exec(cmd) => Some(cmd),
                    Program::Subsystem(_) => return false,
                };
                let cli = CliContext {
                    store: ctx.store.clone(),
                    clock: ctx.clock.clone(),
                    portal_enabled: ctx.config.runtime_flags.ssh_routes_portal,
                    session: authed.session.clone(),
                    fingerprint: authed.fingerprint.clone(),
                    pty,
                };
                tracing::info!(
                    command = command.as_deref().unwrap_or("(shell)"),
                    "cli command"
                );
                cli_task(conn, id, command, cli)
            }
            Mode::Route { name, login } => {
                match route::start_session(conn, &ctx, id, name, login, program, pty) {
                    Some(task) => task,
                    None => return false,
                }
            }
        };
        state.started = true;
        self.tasks.spawn(task);
        true
    }

    pub(super) fn on_data(&mut self, _id: ChannelId, _ext: Option<u32>, _data: Vec<u8>) {
        // The CLI reads no input; route relaying will forward it.
    }

    pub(super) fn on_eof(&mut self, _id: ChannelId) {}

    pub(super) fn on_close(&mut self, id: ChannelId) {
        self.conn.remove_channel(id);
        if let Phase::Authed(a) = &mut self.phase {
            a.channels.remove(&id);
        }
    }
}

/// A spawned piece of channel work.
pub(crate) type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs one CLI command on a channel and ends the channel.
fn cli_task(conn: Arc<Conn>, id: ChannelId, command: Option<String>, cli: CliContext) -> Task {
    Box::pin(async move {
        // Held until the output is queued: a revocation the command caused (logout)
        // waits for it.
        let _output = conn.output.read().await;
        let outcome = cli::execute(command.as_deref(), &cli).await;
        if outcome.logged_out {
            conn.quiet_end
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        finish_channel(
            &conn,
            id,
            &outcome.stdout,
            &outcome.stderr,
            outcome.status,
            cli.pty,
        )
        .await;
    })
}

/// Writes a program's output and exit status, then EOF and close.
pub(crate) async fn finish_channel(
    conn: &Conn,
    id: ChannelId,
    stdout: &str,
    stderr: &str,
    status: u32,
    pty: bool,
) {
    let text = |s: &str| {
        if pty {
            s.replace('\n', "\r\n").into_bytes()
        } else {
            s.as_bytes().to_vec()
        }
    };
    if !stdout.is_empty() {
        let _ = conn.handle.data(id, text(stdout)).await;
    }
    if !stderr.is_empty() {
        let _ = conn.handle.extended_data(id, 1, text(stderr)).await;
    }
    let _ = conn.handle.exit_status_request(id, status).await;
    let _ = conn.handle.eof(id).await;
    if conn.remove_channel(id) {
        let _ = conn.handle.close(id).await;
    }
}
