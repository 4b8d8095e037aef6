//! Test fixtures: a literal config, a settable clock, a store wrapper that counts
//! sessions and can be switched "down", live-connection counts, the web app served
//! on a loopback port with the dev IdP, and helpers to forge cookies and requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use tether_core::config::{
    Config, DevIdpUser, HostKeyPolicy, IdpConfig, LogFormat, RuntimeFlags, StorageType,
};
use tether_core::{
    BindingDetails, BindingRequest, ClientBinding, Clock, Identity, IdentityBinding, RequestStatus,
    Secret, Session, SystemClock, Timestamp, UserCode,
};
use tether_store::memory::MemoryStore;
use tether_store::{
    Approval, DecideError, PinnedHostKey, RevokeError, SignOut, Store, StoreError, StoreEvent,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::cookies::{DirectMark, LoginState, Sealer, SessionCookie};
use crate::csrf::CsrfKey;
use crate::{router, DevIdp, LiveConnections, WebDeps};

pub const KEY: [u8; 32] = [42; 32];
static SESSION_SEQ: AtomicUsize = AtomicUsize::new(0);
pub const CLIENT_ID: &str = "tether-test";
pub const CLIENT_SECRET: &str = "s3cret-client";
pub const TEST_KEY_1: &str = include_str!("test_key_1.pem");
pub const TEST_KEY_2: &str = include_str!("test_key_2.pem");

/// The config tests use; `base` is authenticate_service_url, `idp` the issuer.
pub fn config(base: &str, idp: &str) -> Config {
    Config {
        address: "127.0.0.1:0".into(),
        insecure_server: true,
        certificate_file: None,
        certificate_key_file: None,
        authenticate_service_url: base.into(),
        idp: IdpConfig {
            provider: "oidc".into(),
            provider_url: idp.into(),
            client_id: CLIENT_ID.into(),
            client_secret: Some(Secret::new(CLIENT_SECRET.into())),
            client_secret_file: None,
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
        },
        assume_email_verified: false,
        session_refresh: Default::default(),
        cookie_secret: None,
        cookie_secret_file: None,
        cookie_name: "_pomerium".into(),
        cookie_expire: Duration::from_secs(14 * 3600),
        ssh_address: None,
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
        upstream_limits: Default::default(),
        data_dir: None,
        ssh_binding_max_ttl: Duration::from_secs(48 * 3600),
        ssh_sign_in_timeout: Duration::from_secs(15 * 60),
        ssh_upstream_known_hosts_file: None,
        ssh_upstream_host_key_policy: HostKeyPolicy::AcceptNew,
        limits: Default::default(),
        log_format: LogFormat::Text,
        audit_log: None,
        dev_idp_users: users(),
        administrators: None,
        signout_redirect_url: None,
        workload_identity: Vec::new(),
        recording: Default::default(),
        recording_storage: Default::default(),
    }
}

pub fn users() -> Vec<DevIdpUser> {
    vec![
        DevIdpUser {
            username: "alice".into(),
            password: Secret::new("alice-pw".into()),
            email: "alice@example.com".into(),
            name: "Alice Example".into(),
            groups: vec!["sre".into(), "dev".into()],
        },
        DevIdpUser {
            username: "bob".into(),
            password: Secret::new("bob-pw".into()),
            email: "bob@example.com".into(),
            name: "Bob Example".into(),
            groups: vec![],
        },
    ]
}

/// A clock tests move by hand; starts at the real time so IdP tokens line up.
pub struct FakeClock(AtomicI64);

impl FakeClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(SystemClock.now().millis())))
    }
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// Live connection counts and live sessions set by the test.
#[derive(Default)]
pub struct Live(
    pub Mutex<HashMap<String, usize>>,
    pub Mutex<Vec<tether_store::LiveSession>>,
);

#[async_trait::async_trait]
impl LiveConnections for Live {
    async fn live_counts(&self, binding_ids: &[String]) -> HashMap<String, usize> {
        let live = self.0.lock().unwrap();
        binding_ids
            .iter()
            .filter_map(|id| Some((id.clone(), *live.get(id)?)))
            .collect()
    }
    async fn sessions(&self) -> Result<Vec<tether_store::LiveSession>, StoreError> {
        Ok(self.1.lock().unwrap().clone())
    }
}

/// MemoryStore that counts created sessions and can be switched off.
#[derive(Default)]
pub struct TestStore {
    pub inner: MemoryStore,
    pub down: AtomicBool,
    pub sessions_created: AtomicUsize,
}

impl TestStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("test store is down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for TestStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.subscribe()
    }
    async fn create_session(&self, s: &Session) -> Result<(), StoreError> {
        self.check()?;
        self.sessions_created.fetch_add(1, Ordering::SeqCst);
        self.inner.create_session(s).await
    }
    async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.check()?;
        self.inner.get_session(id).await
    }
    async fn sign_out(&self, id: &str, reason: &str) -> Result<SignOut, StoreError> {
        self.check()?;
        self.inner.sign_out(id, reason).await
    }
    async fn set_session_refresh(
        &self,
        session_id: &str,
        token: &str,
        due: Timestamp,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_session_refresh(session_id, token, due).await
    }
    async fn claim_session_refreshes(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<tether_store::RefreshClaim>, StoreError> {
        self.check()?;
        self.inner
            .claim_session_refreshes(now, lease_until, limit)
            .await
    }
    async fn session_refreshed(
        &self,
        session_id: &str,
        identity: &tether_core::Identity,
        token: Option<&str>,
        next_due: Timestamp,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner
            .session_refreshed(session_id, identity, token, next_due)
            .await
    }
    async fn session_refresh_failed(
        &self,
        session_id: &str,
        now: Timestamp,
        retry_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner
            .session_refresh_failed(session_id, now, retry_at)
            .await
    }
    async fn open_request(
        &self,
        new: BindingRequest,
        now: Timestamp,
    ) -> Result<BindingRequest, StoreError> {
        self.check()?;
        self.inner.open_request(new, now).await
    }
    async fn get_request(&self, code: &str) -> Result<Option<BindingRequest>, StoreError> {
        self.check()?;
        self.inner.get_request(code).await
    }
    async fn approve_request(
        &self,
        code: &str,
        session: &Session,
        remember: bool,
        max_ttl: Duration,
        now: Timestamp,
    ) -> Result<Approval, DecideError> {
        self.check()?;
        self.inner
            .approve_request(code, session, remember, max_ttl, now)
            .await
    }
    async fn deny_request(
        &self,
        code: &str,
        user: &str,
        now: Timestamp,
    ) -> Result<(), DecideError> {
        self.check()?;
        self.inner.deny_request(code, user, now).await
    }
    async fn drop_request(&self, code: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.drop_request(code).await
    }
    async fn binding_for_key(
        &self,
        fp: &str,
    ) -> Result<Option<(ClientBinding, Option<Session>)>, StoreError> {
        self.check()?;
        self.inner.binding_for_key(fp).await
    }
    async fn get_binding(&self, id: &str) -> Result<Option<ClientBinding>, StoreError> {
        self.check()?;
        self.inner.get_binding(id).await
    }
    async fn touch_binding(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        self.check()?;
        self.inner.touch_binding(id, now).await
    }
    async fn list_bindings(&self, user: Option<&str>) -> Result<Vec<ClientBinding>, StoreError> {
        self.check()?;
        self.inner.list_bindings(user).await
    }
    async fn revoke_binding(
        &self,
        id: &str,
        owner: Option<&str>,
        reason: &str,
    ) -> Result<ClientBinding, RevokeError> {
        self.check()?;
        self.inner.revoke_binding(id, owner, reason).await
    }
    async fn identity_binding_for_key(
        &self,
        fp: &str,
    ) -> Result<Option<IdentityBinding>, StoreError> {
        self.check()?;
        self.inner.identity_binding_for_key(fp).await
    }
    async fn list_identity_bindings(
        &self,
        user: Option<&str>,
    ) -> Result<Vec<IdentityBinding>, StoreError> {
        self.check()?;
        self.inner.list_identity_bindings(user).await
    }
    async fn revoke_identity_binding(
        &self,
        fp: &str,
        owner: Option<&str>,
    ) -> Result<IdentityBinding, RevokeError> {
        self.check()?;
        self.inner.revoke_identity_binding(fp, owner).await
    }
    async fn pinned_host_key(&self, a: &str) -> Result<Option<PinnedHostKey>, StoreError> {
        self.inner.pinned_host_key(a).await
    }
    async fn pin_host_key(&self, k: &PinnedHostKey) -> Result<PinnedHostKey, StoreError> {
        self.inner.pin_host_key(k).await
    }
    async fn publish_live_counts(
        &self,
        replica: &str,
        counts: &[(String, u32)],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.publish_live_counts(replica, counts, now).await
    }
    async fn refresh_live_counts(&self, replica: &str, now: Timestamp) -> Result<(), StoreError> {
        self.check()?;
        self.inner.refresh_live_counts(replica, now).await
    }
    async fn live_counts_elsewhere(
        &self,
        replica: &str,
        binding_ids: &[String],
        since: Timestamp,
    ) -> Result<std::collections::HashMap<String, u32>, StoreError> {
        self.check()?;
        self.inner
            .live_counts_elsewhere(replica, binding_ids, since)
            .await
    }
    async fn publish_live_sessions(
        &self,
        replica: &str,
        sessions: &[tether_store::LiveSession],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner
            .publish_live_sessions(replica, sessions, now)
            .await
    }
    async fn live_sessions(
        &self,
        since: Timestamp,
    ) -> Result<Vec<tether_store::LiveSession>, StoreError> {
        self.check()?;
        self.inner.live_sessions(since).await
    }
    async fn end_live_session(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.end_live_session(id, reason).await
    }
    async fn cut_off_user(
        &self,
        user_id: &str,
        reason: &str,
    ) -> Result<tether_store::CutOff, StoreError> {
        self.check()?;
        self.inner.cut_off_user(user_id, reason).await
    }
    async fn purge_expired(&self, now: Timestamp) -> Result<(), StoreError> {
        self.inner.purge_expired(now).await
    }
}

/// The dev IdP with the fixed test key.
fn test_idp(users: Vec<DevIdpUser>, issuer: String) -> DevIdp {
    DevIdp::from_private_key_pem(users, issuer, TEST_KEY_1).unwrap()
}

/// The web app (with the dev IdP) served on a loopback port.
pub struct TestApp {
    pub base: String,
    pub app: Router,
    pub store: Arc<TestStore>,
    pub clock: Arc<FakeClock>,
    pub live: Arc<Live>,
    pub config: Arc<Config>,
    pub shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Serves the app with a dev IdP using the fixed test key.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|users, issuer| {
            DevIdp::from_private_key_pem(users, issuer, TEST_KEY_1).unwrap()
        })
        .await
    }

    pub async fn spawn_with(make_idp: impl FnOnce(Vec<DevIdpUser>, String) -> DevIdp) -> TestApp {
        Self::spawn_inner(|_| {}, make_idp, None).await
    }

    /// As [`TestApp::spawn`], with the config changed by `edit` first.
    pub async fn spawn_configured(edit: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_inner(edit, test_idp, None).await
    }

    /// As [`TestApp::spawn_configured`], reading session recordings from `dir`.
    pub async fn spawn_recorded(
        edit: impl FnOnce(&mut Config),
        dir: std::path::PathBuf,
    ) -> TestApp {
        Self::spawn_inner(edit, test_idp, Some(dir)).await
    }

    async fn spawn_inner(
        edit: impl FnOnce(&mut Config),
        make_idp: impl FnOnce(Vec<DevIdpUser>, String) -> DevIdp,
        recordings_dir: Option<std::path::PathBuf>,
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let issuer = format!("{base}/dev-idp");
        let mut config = config(&base, &issuer);
        edit(&mut config);
        let app = Self::build_recorded(config, Some(make_idp(users(), issuer)), recordings_dir);
        tokio::spawn(crate::serve(
            listener,
            app.app.clone(),
            crate::WebLimits::default(),
            None,
            app.shutdown.clone(),
        ));
        app
    }

    /// The app without serving it (for an external or absent IdP).
    pub fn build(config: Config, dev_idp: Option<DevIdp>) -> TestApp {
        Self::build_recorded(config, dev_idp, None)
    }

    /// As [`TestApp::build`], reading session recordings from `recordings_dir`.
    pub fn build_recorded(
        config: Config,
        dev_idp: Option<DevIdp>,
        recordings_dir: Option<std::path::PathBuf>,
    ) -> TestApp {
        let store = Arc::new(TestStore::default());
        let clock = FakeClock::new();
        let live = Arc::new(Live::default());
        let config = Arc::new(config);
        let app = router(WebDeps {
            config: config.clone(),
            store: store.clone(),
            cookie_key: KEY,
            clock: clock.clone(),
            live: live.clone(),
            dev_idp,
            recordings_dir,
        });
        TestApp {
            base: config.authenticate_service_url.clone(),
            app,
            store,
            clock,
            live,
            config,
            shutdown: CancellationToken::new(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Opens a pending request for key `fp` and returns its code.
    pub async fn open_request(&self, fp: &str) -> String {
        let now = self.now();
        let req = BindingRequest {
            code: UserCode::generate().unwrap(),
            fingerprint: fp.into(),
            key_type: "ssh-ed25519".into(),
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITEST".into(),
            details: BindingDetails {
                source_addr: "192.0.2.7:51234".into(),
                client_version: "SSH-2.0-OpenSSH_9.2p1 <b>".into(),
                route: Some("prod".into()),
                login: "alice".into(),
            },
            issued_at: now,
            expires_at: now.plus(self.config.ssh_sign_in_timeout),
            status: RequestStatus::Pending,
        };
        self.store
            .open_request(req, now)
            .await
            .unwrap()
            .code
            .to_string()
    }

    /// Creates a live session for `user` and returns (session, Cookie header value).
    pub async fn sign_in(&self, user: &str) -> (Session, String) {
        let now = self.now();
        let mut claims = BTreeMap::new();
        claims.insert("groups".to_string(), serde_json::json!(["sre"]));
        claims.insert(
            "email".to_string(),
            serde_json::json!(format!("{user}@example.com")),
        );
        let session = Session {
            id: format!("sess-{user}-{}", SESSION_SEQ.fetch_add(1, Ordering::SeqCst)),
            identity: Identity {
                subject: user.into(),
                email: format!("{user}@example.com"),
                name: Some(user.to_uppercase()),
                claims,
            },
            issued_at: now,
            expires_at: now.plus(self.config.cookie_expire),
        };
        self.store.inner.create_session(&session).await.unwrap();
        let value = Sealer::new(&KEY)
            .seal_session(&SessionCookie {
                session_id: session.id.clone(),
                expires: session.expires_at.millis(),
            })
            .unwrap();
        let cookie = format!("{}={value}", self.config.cookie_name);
        (session, cookie)
    }

    pub fn csrf(&self, session: &Session) -> String {
        CsrfKey::new(&KEY).token(&session.id)
    }

    /// An "opened directly" mark as the callback would have set it.
    pub fn direct_mark(&self, return_to: &str, session_id: &str) -> String {
        let value = Sealer::new(&KEY)
            .seal_direct(&DirectMark {
                return_to: return_to.into(),
                session_id: session_id.into(),
                expires: self.now().plus(Duration::from_secs(60)).millis(),
            })
            .unwrap();
        format!("{}_direct={value}", self.config.cookie_name)
    }

    /// A login-state cookie as `start_login` would have set it.
    pub fn login_cookie(&self, state: &str, nonce: &str, verifier: &str) -> String {
        let value = Sealer::new(&KEY)
            .seal_login(&LoginState {
                state: state.into(),
                nonce: nonce.into(),
                pkce_verifier: verifier.into(),
                return_to: "/.pomerium/".into(),
                opened_directly: false,
                expires: self.now().plus(Duration::from_secs(600)).millis(),
            })
            .unwrap();
        format!("{}_login={value}", self.config.cookie_name)
    }

    pub async fn get(&self, uri: &str, cookie: Option<&str>) -> Response<Body> {
        self.get_with(uri, cookie, &[]).await
    }

    /// GET with extra request headers (e.g. `Sec-Fetch-Site`).
    pub async fn get_with(
        &self,
        uri: &str,
        cookie: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Response<Body> {
        let mut req = Request::get(uri);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    pub async fn post(&self, uri: &str, cookie: Option<&str>, form: &str) -> Response<Body> {
        let mut req =
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.app
            .clone()
            .oneshot(req.body(Body::from(form.to_string())).unwrap())
            .await
            .unwrap()
    }
}

pub async fn body_text(res: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Status and body.
pub async fn read(res: Response<Body>) -> (StatusCode, String) {
    let status = res.status();
    (status, body_text(res).await)
}

pub fn location(res: &Response<Body>) -> String {
    res.headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The value of a hidden input in rendered HTML.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap() + marker.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_string()
}
