//! tether-ssh: the SSH side of the gateway.
//!
//! [`run`] accepts TCP connections and speaks SSH to them with russh. Every
//! connection is one tracked task with a `tracing` span; its russh `Handler` is thin
//! and turns callbacks into events for one per-connection actor (`actor`), which owns
//! the authentication flow of SPEC §3 (binding lookup, sign-in code, waiting for the
//! browser's decision), the channels after authentication (internal CLI of §7, or a
//! route) and the connection's end (revocation, expiry, shutdown). The [`Registry`]
//! indexes live connections by binding and web session and ends them when the store's
//! change feed reports a revocation (§5).
//!
//! This crate talks to the rest of tether only through `tether-core` (domain rules,
//! config model) and the `tether_store::Store` trait; it must not depend on the web
//! crate or on a particular store backend.

mod actor;
mod cli;
mod error;
mod events;
mod handler;
mod registry;
mod route;
mod server;
mod stream;

pub mod cert;
pub mod upstream;

use std::sync::Arc;

use tether_core::config::Config;
use tether_core::Clock;
use tether_store::Store;

pub use error::HandlerError;
pub use registry::Registry;
pub use server::run;

/// Everything the SSH front end needs from the process that runs it.
pub struct SshDeps {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The binding store (source of truth; its change feed drives revocation).
    pub store: Arc<dyn Store>,
    /// Host keys, one per algorithm. At least one is required.
    pub host_keys: Vec<russh::keys::PrivateKey>,
    /// The user CA that signs upstream certificates (§8).
    pub user_ca: Arc<russh::keys::PrivateKey>,
    /// The clock every expiry rule reads.
    pub clock: Arc<dyn Clock>,
    /// The live-connection registry (shared with the web side for its counts).
    pub registry: Arc<Registry>,
}
