//! The client side of one connection as the tasks acting for it share it ([`Conn`]:
//! its russh handle, socket probe, open session channels, the output lock) and the
//! one way a program's result is written to a channel ([`finish_channel`]). A leaf:
//! the actor, CLI and portal use it; it uses none of them.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use russh::server::Handle;
use russh::ChannelId;
use tokio::sync::RwLock;

use crate::stream::Probe;

/// State shared between the actor and the output tasks it spawns.
pub(crate) struct Conn {
    /// The connection id (its log span's `conn`).
    pub(crate) id: u64,
    pub(crate) handle: Handle,
    pub(crate) probe: Probe,
    /// Session channels open towards the client (revocation notices go here).
    channels: Mutex<BTreeSet<ChannelId>>,
    /// CLI commands hold it shared while producing output; the closer takes it
    /// exclusively, so a command's result is not cut off by a revocation it caused.
    pub(crate) output: RwLock<()>,
    /// Set by `logout`: the revocation it triggers lets the client leave first.
    pub(crate) quiet_end: AtomicBool,
    /// Channels showing the portal's picker on the alternate screen: a closing
    /// notice restores the normal screen first.
    pickers: Mutex<BTreeSet<ChannelId>>,
}

impl Conn {
    /// A connection with no channels open yet.
    pub(crate) fn new(id: u64, handle: Handle, probe: Probe) -> Self {
        Conn {
            id,
            handle,
            probe,
            channels: Mutex::new(BTreeSet::new()),
            output: RwLock::new(()),
            quiet_end: AtomicBool::new(false),
            pickers: Mutex::new(BTreeSet::new()),
        }
    }

    fn lock_channels(&self) -> std::sync::MutexGuard<'_, BTreeSet<ChannelId>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_channel(&self, id: ChannelId) {
        self.lock_channels().insert(id);
    }

    /// Forgets a channel; `true` if it was open.
    pub(crate) fn remove_channel(&self, id: ChannelId) -> bool {
        self.lock_channels().remove(&id)
    }

    pub(crate) fn open_channels(&self) -> Vec<ChannelId> {
        self.lock_channels().iter().copied().collect()
    }

    /// Marks a channel as showing (or no longer showing) the portal's picker.
    pub(crate) fn set_picker(&self, id: ChannelId, shown: bool) {
        let mut pickers = self.pickers.lock().unwrap_or_else(|e| e.into_inner());
        if shown {
            pickers.insert(id);
        } else {
            pickers.remove(&id);
        }
    }

    pub(crate) fn shows_picker(&self, id: ChannelId) -> bool {
        self.pickers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }
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
