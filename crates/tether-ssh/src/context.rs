//! What every connection task shares ([`Ctx`]): the store, the clock, the registry,
//! the configuration in force ([`LiveConfig`], read when used), what connecting an
//! upstream needs, the russh server configuration, and the pre-authentication gate.
//! A leaf of the module graph: it names the types, it does not use the modules that
//! act on them.

use std::sync::Arc;

use tether_core::config::Config;
use tether_core::metrics::Metrics;
use tether_core::Clock;
use tether_store::Store;

use crate::admission::Upstreams;
use crate::gate::{CodeBudget, Gate};
use crate::live::LiveConfig;
use crate::wait::Waiters;
use crate::Registry;

/// What every connection task shares; see the module docs.
pub(crate) struct Ctx {
    /// The configuration in force.
    pub(crate) live: LiveConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    /// The user CA, host-key trust and metrics for upstream connections (§8).
    pub(crate) upstreams: Upstreams,
    pub(crate) russh: Arc<russh::server::Config>,
    /// Sign-in codes connections here are waiting on.
    pub(crate) waiters: Waiters,
    /// Unauthenticated connections and their caps.
    pub(crate) gate: Arc<Gate>,
    /// Sign-in codes per source.
    pub(crate) codes: CodeBudget,
    /// Where recordings go (see `SshDeps::recordings_dir`).
    pub(crate) recordings_dir: Option<std::path::PathBuf>,
}

impl Ctx {
    /// The configuration in force for routes, policies and runtime flags.
    pub(crate) fn config(&self) -> Arc<Config> {
        self.live.get()
    }
}
