//! The internal CLI's `portal` (SPEC §7, `runtime_flags.ssh_routes_portal`): an
//! interactive route picker drawn on the session channel's terminal, and the
//! hand-over of that same channel to the chosen route's upstream.
//!
//! It runs as one task per channel (spawned by the connection actor for `portal`, or
//! for a shell request without a command, when the channel has a pty):
//!
//! 1. The routes the user may use are listed as for `routes`
//!    ([`crate::admission::listable`]);
//!    none → `no routes available to you`, exit status 1.
//! 2. The picker ([`picker`]) is drawn on the alternate screen: Up/Down (or k/j)
//!    move, Enter chooses, q or Ctrl-C quits (`no route chosen`, exit status 0).
//!    The client's window changes (forwarded by the actor) redraw it.
//! 3. Enter decides the route's policy with the login the client connected with and
//!    connects its upstream ([`handover`]); a denial or a failed connection is shown
//!    as one line under the list (`access denied: route "x": <reason>`) and the
//!    picker stays, so the user may choose another route or quit.
//! 4. On success the route is recorded for policy re-checks, the normal screen is
//!    restored, and the channel is relayed to an upstream shell opened with the
//!    client's original pty (term, modes, the current size); later window changes
//!    and signals follow. The upstream's exit status ends the client's session.
//!
//! The portal never outlives its connection: it is one of the actor's tasks, and
//! revocation, expiry and shutdown end the whole connection as usual (the closing
//! notice restores the normal screen first if the picker is showing). The client's
//! `env` requests and agent forwarding (`ssh -A`) on the channel are kept while the
//! portal is enabled and carried over to the chosen route's upstream session
//! ([`Carried`]); X11 forwarding is refused.

mod handover;
mod held;
mod picker;

use std::sync::Arc;

use russh::{ChannelId, ChannelMsg, Sig};
use tokio::sync::{mpsc, watch};

use crate::admission::{self, Principal};
use crate::client::{finish_channel, Conn};
use crate::context::Ctx;
pub(crate) use crate::pty::{Size, Terminal};
use crate::registry::RouteRecorder;
use crate::routes;

pub(crate) use held::Held;
pub(crate) use picker::LEAVE_SCREEN;
use picker::{Key, Keys, Picker, ENTER_SCREEN};

/// Signals queued for the portal (more are dropped: a client cannot grow the queue).
const SIGNAL_QUEUE: usize = 8;

/// The actor's side of a running portal: the channel's window changes and signals.
#[derive(Debug)]
pub(crate) struct PortalLink {
    sizes: watch::Sender<Size>,
    signals: mpsc::Sender<Sig>,
}

/// The portal's side of the link.
#[derive(Debug)]
pub(crate) struct PortalInput {
    sizes: watch::Receiver<Size>,
    signals: mpsc::Receiver<Sig>,
}

impl PortalLink {
    /// A link starting at `size`.
    pub(crate) fn new(size: Size) -> (PortalLink, PortalInput) {
        let (sizes, sizes_rx) = watch::channel(size);
        let (signals, signals_rx) = mpsc::channel(SIGNAL_QUEUE);
        (
            PortalLink { sizes, signals },
            PortalInput {
                sizes: sizes_rx,
                signals: signals_rx,
            },
        )
    }

    /// The client's terminal changed size.
    pub(crate) fn resize(&self, size: Size) {
        self.sizes.send_replace(size);
    }

    /// The client sent a signal.
    pub(crate) fn signal(&self, signal: Sig) {
        if self.signals.try_send(signal).is_err() {
            tracing::debug!("portal signal dropped: queue full");
        }
    }
}

/// Everything the portal task needs.
pub(crate) struct PortalInit {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) conn: Arc<Conn>,
    pub(crate) id: ChannelId,
    pub(crate) terminal: Terminal,
    pub(crate) input: PortalInput,
    /// Who the connection acts for.
    pub(crate) principal: Arc<Principal>,
    /// The login the client connected with; the upstream login.
    pub(crate) login: String,
    pub(crate) recorder: RouteRecorder,
    /// The client's `env` and agent-forwarding requests, for the upstream.
    pub(crate) carried: Carried,
}

/// What the client asked of its session channel before the portal started that the
/// chosen route's upstream session gets too.
#[derive(Clone, Debug, Default)]
pub(crate) struct Carried {
    /// `env` requests, in order (the upstream's `AcceptEnv` decides, as usual).
    pub(crate) env: Vec<(String, String)>,
    /// `auth-agent-req@openssh.com` (`ssh -A`).
    pub(crate) agent: bool,
}

/// How the picker ended.
enum Picked {
    /// Connected: relay the channel.
    Connected(Box<handover::Connected>),
    /// The user quit (or the client sent EOF or a signal).
    Quit,
    /// The channel is gone.
    Gone,
}

/// Runs the portal on the channel `held` drains; see the module docs.
pub(crate) async fn run(mut init: PortalInit, held: Held) {
    let Some(taken) = held.take().await else {
        return;
    };
    let mut channel = taken.channel;
    let (conn, id) = (init.conn.clone(), init.id);
    let names = admission::listable(&init.principal, &init.ctx.config(), init.ctx.clock.now());
    if names.is_empty() {
        finish_channel(&conn, id, "", "no routes available to you\n", 1, true).await;
        return;
    }
    tracing::info!(routes = names.len(), "portal opened");
    let picked = if taken.eof {
        Picked::Quit
    } else {
        let mut picker = Picker::new(names);
        let size = *init.input.sizes.borrow_and_update();
        let first = format!("{ENTER_SCREEN}{}", picker.render(size.cols, size.rows));
        conn.set_picker(id, true);
        let _ = conn.handle.data(id, first.into_bytes()).await;
        let picked = pick(&mut init, &mut channel, &mut picker).await;
        conn.set_picker(id, false);
        if !matches!(picked, Picked::Gone) {
            let _ = conn.handle.data(id, LEAVE_SCREEN.as_bytes().to_vec()).await;
        }
        picked
    };
    match picked {
        Picked::Connected(connected) => {
            handover::relay(channel, &conn, id, *connected, init.input).await;
        }
        Picked::Quit => {
            tracing::info!("portal closed without a choice");
            finish_channel(&conn, id, "no route chosen\n", "", 0, true).await;
        }
        Picked::Gone => {}
    }
}

/// What one read from the channel meant for the picker.
enum Input {
    Keys(Vec<Key>),
    Eof,
    Gone,
    Nothing,
}

/// The keys in the next message from the client. A message brings at most one
/// packet's worth of bytes; the keys are few (one per byte at most).
fn input(msg: Option<ChannelMsg>, keys: &mut Keys) -> Input {
    match msg {
        Some(ChannelMsg::Data { data }) => {
            Input::Keys(data.iter().filter_map(|&b| keys.feed(b)).collect())
        }
        Some(ChannelMsg::Eof) => Input::Eof,
        Some(ChannelMsg::Close) | None => Input::Gone,
        Some(_) => Input::Nothing,
    }
}

/// The picker loop: keys, window changes, and connection attempts on Enter.
async fn pick(
    init: &mut PortalInit,
    channel: &mut russh::Channel<russh::server::Msg>,
    picker: &mut Picker,
) -> Picked {
    let mut keys = Keys::default();
    let mut sizes_open = true;
    loop {
        let size = *init.input.sizes.borrow();
        let mut chosen = None;
        tokio::select! {
            msg = channel.wait() => match input(msg, &mut keys) {
                Input::Keys(pressed) => {
                    let mut redraw = false;
                    for key in pressed {
                        match key {
                            Key::Quit => return Picked::Quit,
                            Key::Enter => {
                                chosen = picker.selected().map(str::to_string);
                                // What was typed after Enter is not for the picker.
                                break;
                            }
                            other => redraw |= picker.key(other),
                        }
                    }
                    if redraw && chosen.is_none() {
                        draw(init, picker, size).await;
                    }
                }
                Input::Eof => return Picked::Quit,
                Input::Gone => return Picked::Gone,
                Input::Nothing => {}
            },
            changed = init.input.sizes.changed(), if sizes_open => match changed {
                Ok(()) => {
                    let size = *init.input.sizes.borrow_and_update();
                    draw(init, picker, size).await;
                }
                Err(_) => sizes_open = false,
            },
            signal = init.input.signals.recv() => {
                tracing::debug!(?signal, "portal ended by a signal");
                return Picked::Quit;
            }
        }
        let Some(route) = chosen else { continue };
        picker.set_status(Some(format!(
            "connecting to {}...",
            routes::printable(&route)
        )));
        draw(init, picker, size).await;
        // Ctrl-C / q (or the channel going away) cancels a slow connection attempt.
        let attempt = tokio::select! {
            r = handover::connect(init, &route) => Some(r),
            cancel = cancelled(channel, &mut keys) => match cancel {
                Input::Gone => return Picked::Gone,
                _ => None,
            },
        };
        match attempt {
            Some(Ok(connected)) => return Picked::Connected(Box::new(connected)),
            Some(Err(line)) => picker.set_status(Some(line)),
            None => return Picked::Quit,
        }
        let size = *init.input.sizes.borrow_and_update();
        draw(init, picker, size).await;
    }
}

/// Reads the channel until the user quits (`Input::Keys`), sends EOF or goes away.
async fn cancelled(channel: &mut russh::Channel<russh::server::Msg>, keys: &mut Keys) -> Input {
    loop {
        match input(channel.wait().await, keys) {
            Input::Keys(pressed) if pressed.contains(&Key::Quit) => return Input::Keys(pressed),
            Input::Keys(_) | Input::Nothing => {}
            other => return other,
        }
    }
}

async fn draw(init: &PortalInit, picker: &mut Picker, size: Size) {
    let screen = picker.render(size.cols, size.rows);
    let _ = init.conn.handle.data(init.id, screen.into_bytes()).await;
}
