//! The configuration in force: one [`LiveConfig`] handle, shared by the server, every
//! connection and the registry's re-checks. Routes, policies and runtime flags are
//! read from it at the moment they are used (`get`), never from a copy kept since
//! start; a reload replaces the value for everyone at once (`replace`).
//!
//! Settings that only take effect at a restart (listen addresses, limits, host keys)
//! are read once at start from the same value; the reload watcher warns about those.

use std::sync::Arc;

use tether_core::config::Config;
use tokio::sync::watch;

/// A watch-style handle on the configuration in force; see the module docs.
/// Clones share the value.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    tx: Arc<watch::Sender<Arc<Config>>>,
}

impl LiveConfig {
    /// A handle starting with `config`.
    pub fn new(config: Arc<Config>) -> Self {
        let (tx, _) = watch::channel(config);
        LiveConfig { tx: Arc::new(tx) }
    }

    /// The configuration in force now.
    pub fn get(&self) -> Arc<Config> {
        self.tx.borrow().clone()
    }

    /// Makes `config` the one in force.
    pub fn replace(&self, config: Arc<Config>) {
        self.tx.send_replace(config);
    }

    /// A receiver woken on every replacement.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.tx.subscribe()
    }
}
