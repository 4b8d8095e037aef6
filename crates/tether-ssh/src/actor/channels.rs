//! Channels after authentication: what the connection is for ([`Mode`]) decides
//! what a session channel runs.
//!
//! A route-less username gets the internal CLI (§7): each session channel is held
//! by a drain ([`Held`]) until its program starts, then runs one command, or the
//! interactive [`crate::portal`], which takes the channel over (window changes and
//! signals reach it through a [`PortalLink`]). In jump-host mode the connection's
//! `direct-tcpip` channels to a route name become raw pipes ([`crate::jump`], §8);
//! a username with a route has every channel, request and forwarding relayed to the
//! route's upstream ([`crate::relay`]). Channel output is written by spawned tasks
//! (see the actor's deadlock rule).

use std::collections::HashMap;
use std::sync::Arc;

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tether_core::audit::Via;
use tether_core::config::Permit;
use tether_core::username::WireUser;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::permit::{self, Asked};
use super::{Actor, Phase};
use crate::admission::{self, Principal};
use crate::cli::{self, CliContext};
use crate::client::{finish_channel, Conn};
use crate::events::{ChannelRequest, OtherChannel};
use crate::jump::JumpAudit;
use crate::portal::{self, Carried, Held, PortalInit, PortalLink};
use crate::pty::{Size, Terminal};
use crate::registry::Registration;
use crate::relay::Relay;

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

/// What a CLI session channel asked for so far.
#[derive(Debug, Default)]
struct ChannelState {
    /// The client's `pty-req` (size kept current by `window-change`).
    terminal: Option<Terminal>,
    started: bool,
    /// The channel's drain, until the program starts.
    held: Option<Held>,
    /// The running portal, if the program is one.
    portal: Option<PortalLink>,
    /// What the portal carries over to the chosen route: `env` requests (at most
    /// [`PORTAL_ENV_MAX`]) and whether agent forwarding was asked for.
    carried: Carried,
}

/// At most this many `env` requests are kept for the portal; more are refused.
const PORTAL_ENV_MAX: usize = 64;
/// Longest `env` name plus value kept for the portal; longer ones are refused.
const PORTAL_ENV_BYTES: usize = 4096;

/// An authenticated connection's state.
#[derive(Debug)]
pub(crate) struct Authed {
    pub(crate) mode: Mode,
    /// The login name on the wire (`alice` in `alice@gateway`).
    pub(crate) login: String,
    /// Who the connection acts for.
    pub(crate) principal: Arc<Principal>,
    pub(crate) registration: Registration,
    /// The upstream side, for a route connection.
    pub(crate) relay: Option<Relay>,
    /// What the route's `ssh_permit` allowed at admission (the upstream
    /// certificate's extensions); see [`super::permit`].
    pub(crate) permit: Permit,
    channels: HashMap<ChannelId, ChannelState>,
}

/// What admission starts from: a key with a valid binding.
pub(crate) struct AuthedInit {
    pub(crate) user: WireUser,
    pub(crate) principal: Principal,
    pub(crate) registration: Registration,
}

impl Authed {
    pub(crate) fn new(
        user: WireUser,
        principal: Arc<Principal>,
        registration: Registration,
        relay: Option<Relay>,
        permit: Permit,
    ) -> Self {
        let mode = match &user.route {
            Some(route) => Mode::Route {
                name: route.clone(),
                login: user.login.clone(),
            },
            None => Mode::Cli,
        };
        Authed {
            mode,
            login: user.login,
            principal,
            registration,
            relay,
            permit,
            channels: HashMap::new(),
        }
    }
}

impl ChannelState {
    /// Applies a request that sets the channel up (terminal, size, signals, what
    /// the portal carries over), or names the program it starts.
    fn configure(&mut self, request: ChannelRequest, portal_enabled: bool) -> Setting {
        let state = self;
        let program = match request {
            ChannelRequest::Pty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                modes,
            } => {
                state.terminal = Some(Terminal {
                    term,
                    size: Size {
                        cols: col_width,
                        rows: row_height,
                        pix_width,
                        pix_height,
                    },
                    modes,
                });
                return Setting::Answered(true);
            }
            ChannelRequest::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                let size = Size {
                    cols: col_width,
                    rows: row_height,
                    pix_width,
                    pix_height,
                };
                if let Some(t) = state.terminal.as_mut() {
                    t.size = size;
                }
                if let Some(portal) = &state.portal {
                    portal.resize(size);
                }
                return Setting::Answered(true);
            }
            ChannelRequest::Signal(signal) => {
                if let Some(portal) = &state.portal {
                    portal.signal(signal);
                }
                return Setting::Answered(true);
            }
            // Kept for the portal's upstream (the portal, when enabled, is what a
            // shell with a terminal starts); the other CLI commands have no use.
            ChannelRequest::Env { name, value } => {
                let fits = state.carried.env.len() < PORTAL_ENV_MAX
                    && name.len() + value.len() <= PORTAL_ENV_BYTES;
                if !portal_enabled || state.started || !fits {
                    return Setting::Answered(false);
                }
                state.carried.env.push((name, value));
                return Setting::Answered(true);
            }
            ChannelRequest::Agent => {
                if !portal_enabled || state.started {
                    return Setting::Answered(false);
                }
                state.carried.agent = true;
                return Setting::Answered(true);
            }
            ChannelRequest::X11 { .. } => return Setting::Answered(false),
            ChannelRequest::Shell => Program::Shell,
            ChannelRequest::Exec(cmd) => Program::Exec(String::from_utf8_lossy(&cmd).into_owned()),
            ChannelRequest::Subsystem(name) => Program::Subsystem(name),
        };
        Setting::Starts(program)
    }
}

/// What a CLI channel request did.
enum Setting {
    /// A set-up request, answered with this.
    Answered(bool),
    /// The channel asks to start this program.
    Starts(Program),
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
        let closing = self.closing;
        let Phase::Authed(authed) = &mut self.phase else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        if closing {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        }
        if let Some(relay) = authed.relay.as_mut() {
            // Registered first: a revocation notice may race the accept.
            self.conn.add_channel(id);
            let handle = self.conn.handle.clone();
            if !relay
                .open_session(channel, reply, &handle, &mut self.tasks)
                .await
            {
                self.conn.remove_channel(id);
            }
            return;
        }
        // Drained until its program starts: an unread channel queue would fill up
        // and stall russh.
        let held = Held::hold(channel, &mut self.tasks);
        authed.channels.insert(
            id,
            ChannelState {
                held: Some(held),
                ..ChannelState::default()
            },
        );
        self.conn.add_channel(id);
        reply.accept().await;
    }

    pub(super) async fn on_open_other(
        &mut self,
        kind: OtherChannel,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
    ) {
        let closing = self.closing;
        let ctx = self.ctx.clone();
        let handle = self.conn.handle.clone();
        // A route connection's `-L`/`-D`/`-W` needs the route's port forwarding (a
        // route-less connection's are jump-host pipes, decided below).
        let forwarding = match &kind {
            OtherChannel::DirectTcpip { .. } => self.permits(Asked::DirectTcpip),
            _ => Ok(()),
        };
        let authed = match &mut self.phase {
            Phase::Authed(a) if !closing => a,
            _ => {
                reply
                    .reject(ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return;
            }
        };
        let OtherChannel::DirectTcpip {
            host,
            port,
            originator_address,
            originator_port,
        } = kind
        else {
            tracing::debug!(?kind, "channel type refused");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        if let Some(relay) = authed.relay.as_mut() {
            if let Err(route) = forwarding {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: ChannelOpenFailure::AdministrativelyProhibited.code(),
                        reason: permit::refusal(Asked::DirectTcpip, &route),
                    })
                    .await;
                return;
            }
            relay
                .open_direct_tcpip(
                    &host,
                    port,
                    &originator_address,
                    originator_port,
                    channel,
                    reply,
                    &handle,
                    &mut self.tasks,
                )
                .await;
            return;
        }
        // Jump-host mode (§8): a route-less connection, host = a route name.
        let config = ctx.config();
        if !config.runtime_flags.ssh_allow_direct_tcpip {
            tracing::info!(host = %host, port, "direct-tcpip refused: jump-host mode is off");
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        }
        let now = ctx.clock.now();
        match admission::authorize(&authed.principal, &config, &host, None, Via::Jump, now) {
            Ok(grant) => {
                authed.registration.add_jump_route(&host);
                let audit = JumpAudit {
                    conn: authed.principal.conn,
                    email: authed.principal.identity().email.clone(),
                };
                self.tasks
                    .spawn(crate::jump::pipe(grant, audit, channel, reply));
            }
            Err(denied) => {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1,
                        reason: denied.to_string(),
                    })
                    .await;
            }
        }
    }

    /// Answers a channel request (success or failure) through `reply`.
    pub(super) fn on_request(
        &mut self,
        id: ChannelId,
        request: ChannelRequest,
        reply: oneshot::Sender<bool>,
    ) {
        if let Some(asked) = Asked::of(&request) {
            if self.permits(asked).is_err() {
                let _ = reply.send(false);
                return;
            }
        }
        if let Some((relay, tasks)) = self.relay() {
            relay.request(id, request, reply, tasks);
            return;
        }
        let ok = self.cli_request(id, request);
        let _ = reply.send(ok);
    }

    /// A request on a CLI channel.
    fn cli_request(&mut self, id: ChannelId, request: ChannelRequest) -> bool {
        let conn = self.conn.clone();
        let ctx = self.ctx.clone();
        let span = self.span.clone();
        let Some(authed) = self.authed() else {
            return false;
        };
        let Some(state) = authed.channels.get_mut(&id) else {
            return false;
        };
        let portal_enabled = ctx.config().runtime_flags.ssh_routes_portal;
        let program = match state.configure(request, portal_enabled) {
            Setting::Answered(answer) => return answer,
            Setting::Starts(program) => program,
        };
        if state.started {
            return false;
        }
        // Route connections relay every channel (see `on_request`); none reach here.
        if authed.mode != Mode::Cli {
            return false;
        }
        let command = match program {
            Program::Shell => None,
            Program::Exec(cmd) => Some(cmd),
            Program::Subsystem(_) => return false,
        };
        let config = ctx.config();
        let portal_enabled = config.runtime_flags.ssh_routes_portal;
        tracing::info!(
            command = command.as_deref().unwrap_or("(shell)"),
            "cli command"
        );
        state.started = true;
        let held = state.held.take();
        let task: Task = match (&state.terminal, held) {
            (Some(terminal), Some(held))
                if cli::starts_portal(command.as_deref(), portal_enabled, true) =>
            {
                let (link, input) = PortalLink::new(terminal.size);
                let init = PortalInit {
                    ctx: ctx.clone(),
                    conn,
                    id,
                    terminal: terminal.clone(),
                    input,
                    principal: authed.principal.clone(),
                    login: authed.login.clone(),
                    recorder: authed.registration.routes(),
                    carried: std::mem::take(&mut state.carried),
                };
                state.portal = Some(link);
                Box::pin(portal::run(init, held).instrument(span))
            }
            // Any other command reads no input: dropping the drain drops the channel.
            _ => {
                let cli = CliContext {
                    store: ctx.store.clone(),
                    clock: ctx.clock.clone(),
                    portal_enabled,
                    principal: authed.principal.clone(),
                    login: authed.login.clone(),
                    port: conn.probe.local_port(),
                    pty: state.terminal.is_some(),
                    config,
                };
                cli_task(conn, id, command, cli)
            }
        };
        self.tasks.spawn(task);
        true
    }

    pub(super) fn on_close(&mut self, id: ChannelId) {
        self.conn.remove_channel(id);
        if let Phase::Authed(a) = &mut self.phase {
            a.channels.remove(&id);
            if let Some(relay) = a.relay.as_mut() {
                relay.forget(id);
            }
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
