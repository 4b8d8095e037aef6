//! tether-ssh: the SSH side of the gateway.
//!
//! [`run`] accepts TCP connections and speaks SSH to them with russh. Every
//! connection is one tracked task with a `tracing` span; its russh `Handler` is thin
//! and turns callbacks into events for one per-connection actor (`actor`), which owns
//! the authentication flow of SPEC §3 (binding lookup, sign-in code, waiting for the
//! browser's decision), the route's policy decision ([`access`], §6), the channels
//! after authentication (internal CLI of §7 with its interactive `portal`, and
//! jump-host pipes, or the relay to the route's upstream, §8) and the connection's
//! end (revocation, expiry, policy change, shutdown). The [`Registry`] indexes live
//! connections by binding and web session and ends them when the store's change
//! feed reports a revocation (§5) or a policy re-check denies them
//! ([`Registry::recheck_policies`]).
//!
//! This crate talks to the rest of tether only through `tether-core` (domain rules,
//! config model) and the `tether_store::Store` trait; it must not depend on the web
//! crate or on a particular store backend.

mod actor;
mod admission;
mod cli;
mod client;
mod context;
mod error;
mod events;
mod gate;
mod handler;
mod jump;
mod live;
mod portal;
mod pty;
mod record;
mod registry;
mod relay;
mod routes;
mod server;
mod stream;
mod wait;

pub mod access;
pub mod cert;
pub mod upstream;

use std::sync::Arc;

use tether_core::config::Config;
use tether_core::Clock;
use tether_store::Store;

pub use error::HandlerError;
pub use live::LiveConfig;
pub use record::sweep as sweep_recordings;
pub use registry::{Registry, LIVE_COUNTS_EVERY, LIVE_COUNTS_FRESH_FOR};
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
    /// Where recorded routes' recordings go (`Config::recording_directory`);
    /// `None`: nowhere, so a fail-closed recorded route refuses its sessions.
    pub recordings_dir: Option<std::path::PathBuf>,
}

/// A minimal valid configuration for unit tests.
#[cfg(test)]
pub(crate) fn test_config() -> Config {
    use std::time::Duration;
    use tether_core::config::{HostKeyPolicy, IdpConfig, LogFormat, RuntimeFlags, StorageType};
    Config {
        address: "127.0.0.1:0".into(),
        insecure_server: true,
        certificate_file: None,
        certificate_key_file: None,
        authenticate_service_url: "https://auth.example.com".into(),
        idp: IdpConfig {
            provider: "oidc".into(),
            provider_url: "https://idp.example.com".into(),
            client_id: "tether".into(),
            client_secret: None,
            client_secret_file: None,
            scopes: vec!["openid".into()],
        },
        assume_email_verified: false,
        session_refresh: Default::default(),
        cookie_secret: None,
        cookie_secret_file: None,
        cookie_name: "_pomerium".into(),
        cookie_expire: Duration::from_secs(14 * 3600),
        ssh_address: Some("127.0.0.1:0".into()),
        ssh_host_key_files: vec![],
        ssh_host_keys: vec![],
        ssh_user_ca_key_file: None,
        ssh_user_ca_key: None,
        storage_type: StorageType::Memory,
        storage_connection_string: None,
        runtime_flags: RuntimeFlags::default(),
        metrics_address: None,
        metrics_basic_auth: None,
        routes: vec![],
        // No login limit on `prod`, the route most unit tests use: what they check
        // is the policy (the limits have tests of their own).
        upstream_limits: [(
            "prod".to_string(),
            tether_core::config::UpstreamLimits {
                logins: tether_core::config::AllowedLogins::Any,
                ..Default::default()
            },
        )]
        .into(),
        data_dir: None,
        ssh_binding_max_ttl: Duration::from_secs(48 * 3600),
        ssh_sign_in_timeout: Duration::from_secs(900),
        ssh_upstream_known_hosts_file: None,
        ssh_upstream_host_key_policy: HostKeyPolicy::AcceptNew,
        limits: Default::default(),
        log_format: LogFormat::Text,
        audit_log: None,
        dev_idp_users: vec![],
        administrators: None,
        signout_redirect_url: None,
        workload_identity: Vec::new(),
        recording: Default::default(),
        recording_storage: Default::default(),
    }
}
