//! The configuration model (SPEC §2), parsed from Pomerium-compatible YAML.
//!
//! `parse_config` turns the file's text into a validated [`Config`]; `load_config`
//! also lays Pomerium's environment variables over it (`COOKIE_SECRET`, `ROUTES`,
//! …; a variable overrides the file). Every error names the file and line, or the
//! variable. Nothing here touches the disk or the process environment: the binary
//! hands them in ([`Sources`]), reads the `*_file` keys and generates missing keys.
//! Must not depend on tokio, russh, axum or sqlx.

mod idp;
mod parse;
mod upstream;
pub mod yaml;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::secret::Secret;

pub use idp::{groups_overage, GithubEndpoints, IdpProvider, IDP_PROVIDERS};
pub use parse::{load_config, parse_config, ConfigError, Parsed, Sources};
pub use upstream::{valid_login, AllowedLogins, Permit, UpstreamLimits, ROOT};

/// Which storage backend (§9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageType {
    /// Embedded SQLite.
    File,
    /// In-process only.
    Memory,
    /// Shared PostgreSQL.
    Postgres,
}

impl StorageType {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageType::File => "file",
            StorageType::Memory => "memory",
            StorageType::Postgres => "postgres",
        }
    }
}

/// How upstream host keys are checked (§2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Pin on first use in the store; refuse a changed key.
    AcceptNew,
    /// Only keys in the known_hosts file or signed by a listed host CA.
    Strict,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `idp_*` keys.
#[derive(Clone, Debug, PartialEq)]
pub struct IdpConfig {
    /// `idp_provider`, as spelled in the config: one of [`IDP_PROVIDERS`]
    /// ([`IdpConfig::kind`]).
    pub provider: String,
    /// `idp_provider_url` (no trailing slash), or the provider's fixed default
    /// (google, azure, gitlab, onelogin, github); the issuer is
    /// [`IdpConfig::issuer`].
    pub provider_url: String,
    /// Client id.
    pub client_id: String,
    /// Inline client secret.
    pub client_secret: Option<Secret<String>>,
    /// File holding the client secret.
    pub client_secret_file: Option<String>,
    /// Scopes requested.
    pub scopes: Vec<String>,
}

impl IdpConfig {
    /// The provider kind (`oidc` for a name the parser did not check, as in
    /// hand-built test configs).
    pub fn kind(&self) -> IdpProvider {
        IdpProvider::from_name(&self.provider).unwrap_or(IdpProvider::Oidc)
    }

    /// The OIDC issuer derived from `provider_url` (github: the OAuth base URL).
    pub fn issuer(&self) -> String {
        self.kind().issuer(&self.provider_url)
    }
}

/// Refreshing signed-in identities at the IdP (SPEC §5; tether extensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRefresh {
    /// `idp_session_refresh_interval`: how often each web session's identity is
    /// refreshed with its refresh token (claims re-read, live connections
    /// re-checked).
    pub interval: Duration,
    /// `idp_session_refresh_grace`: how long a session is kept while its refresh
    /// cannot reach the IdP (network, 5xx); past it the session is ended.
    pub grace: Duration,
}

impl Default for SessionRefresh {
    fn default() -> Self {
        SessionRefresh {
            interval: Duration::from_secs(5 * 60),
            grace: Duration::from_secs(15 * 60),
        }
    }
}

/// `runtime_flags`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeFlags {
    /// Enable `portal` in the internal CLI.
    pub ssh_routes_portal: bool,
    /// Enable jump-host mode.
    pub ssh_allow_direct_tcpip: bool,
}

/// A route: `from: ssh://NAME` → `to: ssh://HOST:PORT` (or a list of upstreams).
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Route name (the host part of `from`).
    pub name: String,
    /// The (first) upstream `host:port` (port 22 when omitted).
    pub to: String,
    /// Further upstreams from a `to` list, tried in order when every one before
    /// could not be reached (ordered failover, no balancing). Usually empty.
    pub failover: Vec<String>,
    /// `allow_any_authenticated_user: true`.
    pub allow_any_authenticated_user: bool,
    /// The route's `policy`, parsed (§6).
    pub policy: Option<crate::policy::Policy>,
    /// Line of the route in the config file.
    pub line: usize,
}

/// A user of the built-in development IdP (demo only).
#[derive(Clone, Debug, PartialEq)]
pub struct DevIdpUser {
    /// Login name and subject.
    pub username: String,
    /// Password.
    pub password: Secret<String>,
    /// Email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Groups claim.
    pub groups: Vec<String>,
}

/// Limits that keep what unauthenticated clients can cost small and bounded
/// (tether extensions; each is a top-level key of the same name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From accept to the first authentication request (identification and key
    /// exchange done): a connection that has not got there is closed.
    pub ssh_handshake_timeout: Duration,
    /// From accept until the connection is authenticated or has been shown a
    /// sign-in link (the browser wait after that is `ssh_sign_in_timeout`).
    pub ssh_login_grace_time: Duration,
    /// Unauthenticated SSH connections at once, over all sources; at the cap a
    /// newcomer sheds a connection of the source holding the most.
    pub ssh_max_unauthenticated: usize,
    /// Unauthenticated SSH connections at once from one source (an IPv4 address,
    /// an IPv6 /64).
    pub ssh_max_unauthenticated_per_source: usize,
    /// Sign-in codes one source may be issued in a burst; one more per minute after.
    pub ssh_sign_in_codes_per_source: u32,
    /// Time a web client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open waiting for the next request.
    pub http_header_timeout: Duration,
    /// Time a request may take once its headers are in (reading its body and
    /// answering it); past it the client gets 408.
    pub http_request_timeout: Duration,
    /// Open web connections at once.
    pub http_max_connections: usize,
    /// Open web connections at once from one source.
    pub http_max_connections_per_source: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ssh_handshake_timeout: Duration::from_secs(20),
            ssh_login_grace_time: Duration::from_secs(60),
            ssh_max_unauthenticated: 1024,
            ssh_max_unauthenticated_per_source: 32,
            ssh_sign_in_codes_per_source: 10,
            http_header_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(30),
            http_max_connections: 1024,
            http_max_connections_per_source: 128,
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// HTTP listen address (`host:port`; `:443` means all interfaces).
    pub address: String,
    /// Serve plain HTTP.
    pub insecure_server: bool,
    /// TLS certificate file for `address`.
    pub certificate_file: Option<String>,
    /// TLS key file for `address`.
    pub certificate_key_file: Option<String>,
    /// External base URL (no trailing slash).
    pub authenticate_service_url: String,
    /// Identity provider.
    pub idp: IdpConfig,
    /// `assume_email_verified` (tether extension, default false): an ID token with
    /// no `email_verified` claim counts as verified, for IdPs that never send it.
    /// `email_verified: false` is never trusted.
    pub assume_email_verified: bool,
    /// Identity refresh at the IdP: interval and unreachable-IdP grace.
    pub session_refresh: SessionRefresh,
    /// Inline cookie secret (base64 of 32 bytes).
    pub cookie_secret: Option<Secret<String>>,
    /// Cookie secret file.
    pub cookie_secret_file: Option<String>,
    /// Cookie name.
    pub cookie_name: String,
    /// Web session lifetime.
    pub cookie_expire: Duration,
    /// SSH listen address; `None` disables SSH.
    pub ssh_address: Option<String>,
    /// Host key files.
    pub ssh_host_key_files: Vec<String>,
    /// Inline host keys (PEM).
    pub ssh_host_keys: Vec<Secret<String>>,
    /// User CA key file.
    pub ssh_user_ca_key_file: Option<String>,
    /// Inline user CA key.
    pub ssh_user_ca_key: Option<Secret<String>>,
    /// Storage backend.
    pub storage_type: StorageType,
    /// SQLite path or Postgres URL.
    pub storage_connection_string: Option<Secret<String>>,
    /// Feature flags.
    pub runtime_flags: RuntimeFlags,
    /// Prometheus listen address.
    pub metrics_address: Option<String>,
    /// `metrics_basic_auth`: base64 of `user:password`; when set, `/metrics` wants
    /// exactly that HTTP Basic credential.
    pub metrics_basic_auth: Option<Secret<String>>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Each route's `ssh_allowed_logins` and `ssh_permit`, by route name; a route
    /// missing here has the defaults ([`Config::upstream_limits_of`]).
    pub upstream_limits: BTreeMap<String, UpstreamLimits>,
    /// Data directory (keys, secrets, SQLite).
    pub data_dir: Option<String>,
    /// Longest client binding lifetime.
    pub ssh_binding_max_ttl: Duration,
    /// Lifetime of a sign-in code and its waiting connection.
    pub ssh_sign_in_timeout: Duration,
    /// known_hosts for `strict`.
    pub ssh_upstream_known_hosts_file: Option<String>,
    /// Upstream host key policy.
    pub ssh_upstream_host_key_policy: HostKeyPolicy,
    /// Pre-authentication and web connection limits.
    pub limits: Limits,
    /// Log format.
    pub log_format: LogFormat,
    /// Audit JSON-lines file.
    pub audit_log: Option<String>,
    /// Built-in development IdP users (demo only; `dev_idp.users`).
    pub dev_idp_users: Vec<DevIdpUser>,
    /// `administrators` (tether extension): who may use the operator console — a
    /// PPL policy evaluated against the signed-in identity; `None`: nobody.
    pub administrators: Option<crate::policy::Policy>,
    /// `signout_redirect_url`: where the browser is sent after a web sign-out
    /// (Pomerium's key); `None`: tether's own "signed out" page.
    pub signout_redirect_url: Option<String>,
    /// `workload_identity` (tether extension): issuers whose OIDC tokens may bind
    /// a key for a job, without a person.
    pub workload_identity: Vec<WorkloadIssuer>,
    /// The recorded routes (`session_recording: {enabled: true}` on the route, or
    /// the top-level default), by route name; a route missing here is not recorded.
    pub recording: BTreeMap<String, RecordingSettings>,
    /// Where and how long recordings are kept (top-level `session_recording`).
    pub recording_storage: RecordingStorage,
}

/// One trusted workload issuer (a CI system's OIDC tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadIssuer {
    /// `iss`, no trailing slash; discovery and JWKS are fetched from it.
    pub issuer: String,
    /// The `aud` a token must carry.
    pub audience: String,
    /// Who may bind: a policy over the token's claims (`claim/repository`, ...).
    pub policy: crate::policy::Policy,
    /// The only routes its bindings may use.
    pub routes: Vec<String>,
    /// The only upstream logins its bindings may use.
    pub logins: Vec<String>,
    /// The longest binding (default 15 min, at most 1 h).
    pub max_lifetime: Duration,
}

/// How a recorded route's sessions are recorded (docs/RECORDING.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordingSettings {
    /// Record keystrokes too (`"i"` events); off by default: they hold passwords
    /// typed at prompts.
    pub input: bool,
    /// Record the output of commands run without a terminal (`ssh host cmd`);
    /// their command line, exit status and byte counts are always audited.
    pub command_output: bool,
    /// Refuse (or end) a session whose recording cannot be written; on by default.
    pub fail_closed: bool,
}

/// Where recordings are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingStorage {
    /// `directory`; `None`: `<data_dir>/recordings`. Replicas that share a store
    /// must share this directory too, for any web app to play any recording.
    pub directory: Option<String>,
    /// Recordings older than this are deleted (default 30 days).
    pub retention: Duration,
    /// Largest recording file; past it the recording stops with a marker and the
    /// session goes on (default 100 MiB).
    pub max_size: u64,
}

impl Default for RecordingStorage {
    fn default() -> Self {
        RecordingStorage {
            directory: None,
            retention: Duration::from_secs(30 * 24 * 3600),
            max_size: 100 << 20,
        }
    }
}

/// The user id prefix of a workload identity: `workload:<issuer>#<sub>`.
pub const WORKLOAD_PREFIX: &str = "workload:";

impl Config {
    /// Where recordings are kept: `session_recording.directory`, or
    /// `<data_dir>/recordings` (`data_dir` as the binary resolved it).
    pub fn recording_directory(&self, data_dir: &std::path::Path) -> std::path::PathBuf {
        match &self.recording_storage.directory {
            Some(d) => std::path::PathBuf::from(d),
            None => data_dir.join("recordings"),
        }
    }

    /// How `route`'s sessions are recorded; `None`: they are not.
    pub fn recording_of(&self, route: &str) -> Option<&RecordingSettings> {
        self.recording.get(route)
    }

    /// The workload issuer a user id (`workload:<issuer>#<sub>`) belongs to;
    /// `None` for a person, or an issuer no longer configured.
    pub fn workload_issuer_of(&self, user_id: &str) -> Option<&WorkloadIssuer> {
        let rest = user_id.strip_prefix(WORKLOAD_PREFIX)?;
        let (issuer, _) = rest.rsplit_once('#')?;
        self.workload_identity.iter().find(|w| w.issuer == issuer)
    }
}

impl Route {
    /// Every upstream, in the order they are tried: `to`, then `failover`.
    pub fn upstreams(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.to.as_str()).chain(self.failover.iter().map(String::as_str))
    }

    /// The policy in force: the route's `policy` plus `allow_any_authenticated_user`
    /// as an extra allow rule; neither → a policy that admits no one.
    pub fn effective_policy(&self) -> crate::policy::Policy {
        let mut rules = self.policy.clone().map(|p| p.rules).unwrap_or_default();
        if self.allow_any_authenticated_user {
            rules.extend(crate::policy::Policy::any_authenticated_user().rules);
        }
        crate::policy::Policy { rules }
    }
}

impl Config {
    /// A route by name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// What `route` lets tether do upstream: its `ssh_allowed_logins` and
    /// `ssh_permit`, or the defaults (any login but root, pty only).
    pub fn upstream_limits_of(&self, route: &str) -> UpstreamLimits {
        self.upstream_limits.get(route).cloned().unwrap_or_default()
    }

    /// The OIDC redirect URI.
    pub fn redirect_uri(&self) -> String {
        format!("{}/oauth2/callback", self.authenticate_service_url)
    }

    /// The sign-in URL printed for a code.
    pub fn sign_in_url(&self, code: &str) -> String {
        format!(
            "{}/.pomerium/sign_in?user_code={code}",
            self.authenticate_service_url
        )
    }
}
