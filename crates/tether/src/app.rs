//! The running gateway: one cancellation tree over the web app, the SSH front end,
//! the connection registry (fed by the store's change feed) and housekeeping.
//! SIGTERM/SIGINT stop accepting and drain within a grace period; a second signal
//! exits at once.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tether_core::config::{Config, StorageType};
use tether_core::{Clock, SystemClock};
use tether_ssh::{Registry, SshDeps};
use tether_store::{LiveSession, Store, StoreError};
use tether_web::{DevIdp, LiveConnections, WebDeps};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::keys::KeyMaterial;

/// How the app ended.
pub enum Outcome {
    /// Shut down on a signal.
    Clean,
    /// Failed before serving (port in use, store unreachable); already reported.
    SetupFailed,
}

/// Grace period for draining connections on shutdown.
const GRACE: Duration = Duration::from_secs(10);

/// `:443` → `0.0.0.0:443`.
fn listen_addr(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    }
}

/// Effective config as `tether check` prints it, secrets redacted.
pub fn describe(c: &Config) -> String {
    let mut s = String::new();
    describe_web(&mut s, c);
    describe_ssh(&mut s, c);
    describe_limits(&mut s, c);
    describe_routes(&mut s, c);
    s
}

/// The web side: listener, sign-in URL, IdP, cookies.
fn describe_web(s: &mut String, c: &Config) {
    let redacted = |present: bool| if present { "[redacted]" } else { "(generated)" };
    let _ = writeln!(s, "address: {}", c.address);
    let _ = writeln!(s, "insecure_server: {}", c.insecure_server);
    if let (false, Some(cert)) = (c.insecure_server, &c.certificate_file) {
        let _ = writeln!(s, "certificate_file: {cert} (HTTPS on address)");
    }
    let _ = writeln!(
        s,
        "authenticate_service_url: {}",
        c.authenticate_service_url
    );
    let _ = writeln!(s, "idp_provider: {}", c.idp.provider);
    let _ = writeln!(s, "idp_provider_url: {}", c.idp.provider_url);
    let _ = writeln!(s, "idp_client_id: {}", c.idp.client_id);
    let _ = writeln!(s, "idp_client_secret: [redacted]");
    let _ = writeln!(s, "idp_scopes: [{}]", c.idp.scopes.join(", "));
    let _ = writeln!(
        s,
        "assume_email_verified: {} ({})",
        c.assume_email_verified,
        if c.assume_email_verified {
            "a missing email_verified claim counts as verified"
        } else {
            "only email_verified: true emails satisfy email criteria"
        }
    );
    let _ = writeln!(
        s,
        "cookie_secret: {}",
        redacted(c.cookie_secret.is_some() || c.cookie_secret_file.is_some())
    );
    let _ = writeln!(s, "cookie_name: {}", c.cookie_name);
    let _ = writeln!(s, "cookie_expire: {}s", c.cookie_expire.as_secs());
}

/// The SSH side and the store.
fn describe_ssh(s: &mut String, c: &Config) {
    let redacted = |present: bool| if present { "[redacted]" } else { "(generated)" };
    let _ = writeln!(
        s,
        "ssh_address: {}",
        c.ssh_address.as_deref().unwrap_or("(SSH disabled)")
    );
    let _ = writeln!(
        s,
        "ssh_host_keys: {}",
        if c.ssh_host_key_files.is_empty() && c.ssh_host_keys.is_empty() {
            "(generated)".to_string()
        } else {
            format!(
                "{} file(s), {} inline [redacted]",
                c.ssh_host_key_files.len(),
                c.ssh_host_keys.len()
            )
        }
    );
    let _ = writeln!(
        s,
        "ssh_user_ca_key: {}",
        redacted(c.ssh_user_ca_key.is_some() || c.ssh_user_ca_key_file.is_some())
    );
    if let Some(addr) = &c.metrics_address {
        let _ = writeln!(s, "metrics_address: {addr}");
        if c.metrics_basic_auth.is_some() {
            let _ = writeln!(s, "metrics_basic_auth: [redacted]");
        }
    }
    let _ = writeln!(s, "databroker_storage_type: {}", c.storage_type.as_str());
    if c.storage_connection_string.is_some() {
        let _ = writeln!(s, "databroker_storage_connection_string: [redacted]");
    }
    let _ = writeln!(
        s,
        "idp_session_refresh_interval: {}s",
        c.session_refresh.interval.as_secs()
    );
    let _ = writeln!(
        s,
        "idp_session_refresh_grace: {}s",
        c.session_refresh.grace.as_secs()
    );
    let _ = writeln!(
        s,
        "ssh_binding_max_ttl: {}s",
        c.ssh_binding_max_ttl.as_secs()
    );
    let _ = writeln!(
        s,
        "ssh_sign_in_timeout: {}s",
        c.ssh_sign_in_timeout.as_secs()
    );
}

/// The pre-authentication and web limits, and the runtime flags.
fn describe_limits(s: &mut String, c: &Config) {
    let l = &c.limits;
    let _ = writeln!(
        s,
        "limits: ssh_handshake_timeout={}s ssh_login_grace_time={}s \
         ssh_max_unauthenticated={} ssh_max_unauthenticated_per_source={} \
         ssh_sign_in_codes_per_source={}",
        l.ssh_handshake_timeout.as_secs(),
        l.ssh_login_grace_time.as_secs(),
        l.ssh_max_unauthenticated,
        l.ssh_max_unauthenticated_per_source,
        l.ssh_sign_in_codes_per_source,
    );
    let _ = writeln!(
        s,
        "limits: http_header_timeout={}s http_request_timeout={}s http_max_connections={} \
         http_max_connections_per_source={}",
        l.http_header_timeout.as_secs(),
        l.http_request_timeout.as_secs(),
        l.http_max_connections,
        l.http_max_connections_per_source,
    );
    let _ = writeln!(
        s,
        "runtime_flags: ssh_routes_portal={} ssh_allow_direct_tcpip={}",
        c.runtime_flags.ssh_routes_portal, c.runtime_flags.ssh_allow_direct_tcpip
    );
}

/// Each route with who may use it, its logins and permits.
fn describe_routes(s: &mut String, c: &Config) {
    let _ = writeln!(s, "routes: {}", c.routes.len());
    for r in &c.routes {
        let access = if r.policy.is_some() {
            "policy"
        } else if r.allow_any_authenticated_user {
            "any authenticated user"
        } else {
            "no one (no policy)"
        };
        let limits = c.upstream_limits_of(&r.name);
        let recorded = match c.recording_of(&r.name) {
            None => String::new(),
            Some(rec) => format!(
                "; recorded (input {}, command output {}, {})",
                if rec.input { "on" } else { "off" },
                if rec.command_output { "on" } else { "off" },
                if rec.fail_closed {
                    "fail closed"
                } else {
                    "fail open"
                }
            ),
        };
        let _ = writeln!(
            s,
            "  - ssh://{} -> {} ({access}; logins: {}; permit: {}{recorded})",
            r.name,
            r.upstreams().collect::<Vec<_>>().join(" then "),
            limits.logins.describe(),
            limits.permit.describe()
        );
    }
    if !c.recording.is_empty() {
        let st = &c.recording_storage;
        let _ = writeln!(
            s,
            "session_recording: directory {}; retention {}; max_size {} bytes",
            c.recording_directory(&crate::keys::data_dir(c)).display(),
            tether_core::time::human_duration(st.retention),
            st.max_size
        );
    }
}

/// The web listener's TLS: `None` with `insecure_server` (TLS ends at a proxy in
/// front), else the certificate and key (required); `Err` is one line.
pub fn web_tls(c: &Config) -> Result<Option<Arc<tether_web::tls::ServerConfig>>, String> {
    if c.insecure_server {
        return Ok(None);
    }
    match (&c.certificate_file, &c.certificate_key_file) {
        (Some(cert), Some(key)) => tether_web::tls::server_config(cert, key).map(Some),
        _ => Err(
            "address: HTTPS needs certificate_file and certificate_key_file \
                  (or insecure_server: true behind a TLS-terminating proxy)"
                .to_string(),
        ),
    }
}

/// Live counts for the bindings page: this replica's from its registry, plus, when
/// replicas share the store, what the other replicas published there.
struct RegistryLive {
    registry: Arc<Registry>,
    /// The shared store and this replica's id in it (PostgreSQL only).
    shared: Option<(Arc<dyn Store>, String)>,
    clock: Arc<dyn Clock>,
}

#[async_trait::async_trait]
impl LiveConnections for RegistryLive {
    async fn live_counts(&self, binding_ids: &[String]) -> HashMap<String, usize> {
        // One snapshot of this replica's registry (one lock, one scan).
        let here: HashMap<String, u32> = self.registry.live_counts().into_iter().collect();
        let mut counts: HashMap<String, usize> = binding_ids
            .iter()
            .filter_map(|id| Some((id.clone(), usize::try_from(*here.get(id)?).ok()?)))
            .collect();
        if let Some((store, replica)) = &self.shared {
            let since = self.clock.now().minus(tether_ssh::LIVE_COUNTS_FRESH_FOR);
            match store
                .live_counts_elsewhere(replica, binding_ids, since)
                .await
            {
                Ok(others) => {
                    for (id, n) in others {
                        let c = counts.entry(id).or_insert(0);
                        *c = c.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
                    }
                }
                // The page still shows this replica's own connections.
                Err(e) => tracing::warn!("live counts of other replicas unavailable: {e}"),
            }
        }
        counts
    }

    async fn sessions(&self) -> Result<Vec<LiveSession>, StoreError> {
        let mut all = self.registry.live_sessions();
        if let Some((store, replica)) = &self.shared {
            let since = self.clock.now().minus(tether_ssh::LIVE_COUNTS_FRESH_FOR);
            let others = store.live_sessions(since).await?;
            all.extend(others.into_iter().filter(|s| s.replica != *replica));
            all.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        }
        Ok(all)
    }
}

/// A random id for this process among the replicas sharing a store (8 hex
/// digits: the first part of its live session ids, typed in `tether sessions kill`).
fn replica_id() -> String {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        // Distinct enough without the OS RNG: pid and start time.
        let t = SystemClock.now().millis();
        return format!("{:x}-{t:x}", std::process::id());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn bind(what: &str, addr: &str) -> Option<TcpListener> {
    match TcpListener::bind(listen_addr(addr)).await {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("tether: cannot listen on {addr} ({what}): {e}");
            None
        }
    }
}

/// Runs the gateway until a signal.
pub async fn run(
    config: Config,
    keys: KeyMaterial,
    data: PathBuf,
    demo: bool,
    config_path: Option<PathBuf>,
) -> Result<Outcome> {
    let config = Arc::new(config);
    let Some(store) = open_store(&config, &data).await else {
        return Ok(Outcome::SetupFailed);
    };

    let web_tls = match web_tls(&config) {
        Ok(tls) => tls,
        Err(line) => {
            eprintln!("tether: {line}");
            return Ok(Outcome::SetupFailed);
        }
    };
    let Some(Listeners {
        web: web_listener,
        ssh: ssh_listener,
        metrics: metrics_listener,
    }) = Listeners::bind(&config).await
    else {
        return Ok(Outcome::SetupFailed);
    };
    let web_addr: Option<SocketAddr> = web_listener.local_addr().ok();
    let ssh_addr: Option<SocketAddr> = ssh_listener.as_ref().and_then(|l| l.local_addr().ok());

    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The SSH server runs the registry's watch of the store feed in its own task
    // tree (revocations only matter where SSH connections live).
    let registry = Arc::new(Registry::for_replica(&replica_id()));

    // Replicas (PostgreSQL) and the `tether sessions` command (SQLite too) read
    // the store: each process publishes its live connections there, so every
    // replica's bindings page and console, and the command, show them all.
    let shared = (config.storage_type != StorageType::Memory).then(|| {
        let replica = registry.replica().to_string();
        tracing::info!(replica = %replica, "publishing live connections to the store");
        tracker.spawn(registry.clone().publish_live_counts(
            store.clone(),
            replica.clone(),
            root.child_token(),
        ));
        (store.clone(), replica)
    });
    if let Some(path) = config_path {
        tracker.spawn(crate::reload::watch(
            path,
            config.clone(),
            registry.clone(),
            root.child_token(),
        ));
    }

    let dev_idp = dev_idp(&config, demo)?;
    let web = WebDeps {
        config: config.clone(),
        store: store.clone(),
        cookie_key: *keys.cookie_key.expose(),
        clock: clock.clone(),
        live: Arc::new(RegistryLive {
            registry: registry.clone(),
            shared,
            clock: clock.clone(),
        }),
        dev_idp,
        recordings_dir: Some(config.recording_directory(&crate::keys::data_dir(&config))),
    };
    // Identity refresh at the IdP (SPEC §5): every replica runs one; the store
    // hands each due session to one of them.
    tracker.spawn(tether_web::Refresher::new(&web).run(root.child_token()));
    let web_limits = tether_web::WebLimits::from(&config.limits);
    tracker.spawn(serve_web(
        web_listener,
        web_tls,
        web,
        web_limits,
        Some(registry.metrics().clone()),
        root.child_token(),
    ));
    if let Some(listener) = metrics_listener {
        let deps = MetricsDeps {
            metrics: registry.metrics().clone(),
            store: store.clone(),
            clock: clock.clone(),
            basic_auth: config.metrics_basic_auth.clone(),
        };
        tracker.spawn(serve_metrics(
            listener,
            deps,
            web_limits,
            root.child_token(),
        ));
    }
    let recordings_dir = config.recording_directory(&crate::keys::data_dir(&config));
    if let Some(listener) = ssh_listener {
        let deps = SshDeps {
            config: config.clone(),
            store: store.clone(),
            host_keys: keys.host_keys.clone(),
            user_ca: Arc::new(keys.user_ca.clone()),
            clock: clock.clone(),
            registry: registry.clone(),
            recordings_dir: Some(recordings_dir.clone()),
        };
        tracker.spawn(serve_ssh(listener, deps, root.child_token()));
    }
    {
        let token = root.child_token();
        let sweep = tether_ssh::sweep_recordings(
            recordings_dir.clone(),
            config.recording_storage.retention,
        );
        tracker.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = sweep => {}
            }
        });
    }
    tracker.spawn(housekeeping(
        store.clone(),
        clock.clone(),
        root.child_token(),
    ));
    tracker.close();

    announce(&config, &keys, web_addr, ssh_addr, demo);

    wait_for_signal()
        .await
        .context("installing signal handlers")?;
    shut_down(root, tracker, store).await;
    Ok(Outcome::Clean)
}

/// Says where tether listens (and, for the demo, how to try it).
fn announce(
    config: &Config,
    keys: &KeyMaterial,
    web: Option<SocketAddr>,
    ssh: Option<SocketAddr>,
    demo: bool,
) {
    if let Some(ca) = &keys.user_ca_pub_path {
        tracing::info!(path = %ca.display(), "user CA public key (give it to upstream sshd as TrustedUserCAKeys)");
    }
    tracing::info!(
        web = ?web,
        ssh = ?ssh,
        storage = config.storage_type.as_str(),
        "tether {} listening",
        env!("CARGO_PKG_VERSION")
    );
    if demo {
        crate::demo::print_banner(config, ssh, web);
    }
}

/// The SSH server, until `token` is cancelled.
async fn serve_ssh(listener: TcpListener, deps: SshDeps, token: CancellationToken) {
    if let Err(e) = tether_ssh::run(listener, deps, token).await {
        tracing::error!(error = %e, "ssh server failed");
    }
}

/// The configured store, opened (and migrated); `None` after printing why not.
async fn open_store(config: &Config, data: &std::path::Path) -> Option<Arc<dyn Store>> {
    let conn = match (&config.storage_connection_string, config.storage_type) {
        (Some(c), _) => c.expose().clone(),
        (None, StorageType::File) => data.join("tether.db").display().to_string(),
        (None, _) => String::new(),
    };
    match tether_store::open(config.storage_type.as_str(), &conn).await {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("tether: {e}");
            None
        }
    }
}

/// The Prometheus listener's server, until `token` is cancelled.
async fn serve_metrics(
    listener: TcpListener,
    deps: MetricsDeps,
    limits: tether_web::WebLimits,
    token: CancellationToken,
) {
    tracing::info!(address = ?listener.local_addr().ok(), "metrics listening (GET /metrics)");
    let app = tether_web::metrics_router(deps.metrics, deps.store, deps.clock, deps.basic_auth);
    if let Err(e) = tether_web::serve(listener, app, limits, None, token).await {
        tracing::error!(error = %e, "metrics server failed");
    }
}

/// What the metrics listener serves from.
struct MetricsDeps {
    metrics: Arc<tether_core::metrics::Metrics>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    basic_auth: Option<tether_core::Secret<String>>,
}

/// Cancels every task, then waits for them and for the store's own (its outbox
/// tailer) within one grace period; a second signal ends the wait at once.
async fn shut_down(root: CancellationToken, tracker: TaskTracker, store: Arc<dyn Store>) {
    tracing::info!("shutting down: no new connections, draining");
    root.cancel();
    let drained = async {
        tracker.wait().await;
        store.close().await;
    };
    tokio::select! {
        () = drained => {}
        _ = tokio::time::sleep(GRACE) => tracing::warn!("grace period over, exiting"),
        _ = wait_for_signal() => tracing::warn!("second signal, exiting now"),
    }
}

/// The listeners `run` serves on, all bound before anything starts.
struct Listeners {
    web: TcpListener,
    ssh: Option<TcpListener>,
    metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `address`, `ssh_address` and `metrics_address`; `None` (after the
    /// one-line error) when one cannot be bound.
    async fn bind(config: &Config) -> Option<Listeners> {
        let web = bind("web", &config.address).await?;
        let ssh = match &config.ssh_address {
            Some(addr) => Some(bind("ssh", addr).await?),
            None => None,
        };
        let metrics = match &config.metrics_address {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        Some(Listeners { web, ssh, metrics })
    }
}

/// The development IdP, when `demo` runs or the config enables it explicitly.
fn dev_idp(config: &Config, demo: bool) -> Result<Option<DevIdp>> {
    // Users come only with an explicit `dev_idp.enabled: true` (config parser).
    if !demo && config.dev_idp_users.is_empty() {
        return Ok(None);
    }
    let issuer = format!("{}/dev-idp", config.authenticate_service_url);
    if !demo {
        tracing::warn!(
            issuer = %issuer,
            users = config.dev_idp_users.len(),
            "DEVELOPMENT IDENTITY PROVIDER ENABLED (dev_idp.enabled: true): static users \
             and passwords sign in at {issuer}; never use it in production"
        );
    }
    DevIdp::new(config.dev_idp_users.clone(), issuer)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("development IdP: {e}"))
}

/// Serves the web app made from `deps` on `listener` (over TLS when `tls` is set)
/// until `token`.
async fn serve_web(
    listener: TcpListener,
    tls: Option<Arc<tether_web::tls::ServerConfig>>,
    deps: WebDeps,
    limits: tether_web::WebLimits,
    metrics: Option<Arc<tether_core::metrics::Metrics>>,
    token: CancellationToken,
) {
    let web = tether_web::router(deps);
    let served = match tls {
        Some(tls) => match tether_web::tls::TlsListener::new(listener, tls, token.clone()) {
            Ok(listener) => tether_web::serve_tls(listener, web, limits, metrics, token).await,
            Err(e) => Err(e),
        },
        None => tether_web::serve(listener, web, limits, metrics, token).await,
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "web server failed");
    }
}

/// Purges expired sessions, bindings and codes every 30 s until `token`.
async fn housekeeping(store: Arc<dyn Store>, clock: Arc<dyn Clock>, token: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {
                if let Err(e) = store.purge_expired(clock.now()).await {
                    tracing::warn!(error = %e, "housekeeping failed");
                }
            }
        }
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
