//! A route-less session channel kept read until its program starts.
//!
//! russh delivers everything a client sends on a channel (data, and a copy of each
//! request) into the channel's bounded queue and waits when it is full, which would
//! stall the whole connection. The internal CLI's commands read no input, but the
//! portal needs the channel once it starts; so every CLI session channel is held by
//! a small task that drains (and drops) what arrives until the program starts, then
//! hands the channel over ([`Held::take`]) or, for any other command, drops it
//! (dropping [`Held`] does that).

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

/// A channel being drained by its task; see the module docs.
pub(crate) struct Held {
    take: oneshot::Sender<oneshot::Sender<Taken>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").finish_non_exhaustive()
    }
}

/// A channel handed over by its drain.
pub(crate) struct Taken {
    /// The channel.
    pub(crate) channel: Channel<Msg>,
    /// The client already sent EOF (nothing more will be typed).
    pub(crate) eof: bool,
}

impl Held {
    /// Starts draining `channel` in a task on `tasks`.
    pub(crate) fn hold(channel: Channel<Msg>, tasks: &mut JoinSet<()>) -> Held {
        let (take, asked) = oneshot::channel();
        tasks.spawn(drain(channel, asked));
        Held { take }
    }

    /// The channel, unless the client closed it already.
    pub(crate) async fn take(self) -> Option<Taken> {
        let (back, taken) = oneshot::channel();
        self.take.send(back).ok()?;
        taken.await.ok()
    }
}

async fn drain(mut channel: Channel<Msg>, asked: oneshot::Receiver<oneshot::Sender<Taken>>) {
    let mut eof = false;
    tokio::pin!(asked);
    loop {
        tokio::select! {
            biased;
            back = &mut asked => {
                if let Ok(back) = back {
                    let _ = back.send(Taken { channel, eof });
                }
                return;
            }
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Eof) => eof = true,
                Some(ChannelMsg::Close) | None => return,
                Some(_) => {}
            },
        }
    }
}
