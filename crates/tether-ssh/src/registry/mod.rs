//! The connection registry: which live SSH connections were made with which client
//! binding and web session, and the revocation path that ends them (SPEC §5).
//!
//! A connection registers its binding id *before* it reads the binding from the
//! store, and activates the entry (adding the session id) once the binding proved
//! valid. So a revocation that commits after the read is always seen: its event
//! reaches the registry after the entry exists. `Registry::watch` consumes the
//! store's change feed and cancels the matching connections' [`Revoker`]s; each
//! connection then writes the reason to the client and disconnects. When the feed
//! lags or resyncs, every live connection is re-checked against the store. The
//! store is the source of truth; this index is a cache of what is connected here.
//!
//! Each authenticated entry also remembers what it was authorized for (identity,
//! key, routes and logins), so a policy change ends the connections it now denies
//! through the same revocation path ([`Registry::recheck_policies`], `policy`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tether_core::audit::AuditEvent;
use tether_core::metrics::Metrics;
use tether_core::{Clock, SystemClock};
use tether_store::{Store, StoreEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::live::LiveConfig;

pub(crate) use console::Shown;
pub use console::ENDED_BY;
pub(crate) use policy::LiveAccess;
pub use replicas::{LIVE_COUNTS_EVERY, LIVE_COUNTS_FRESH_FOR};

mod console;
mod policy;
mod replicas;

/// How often live connections are re-checked against the store even when the feed
/// is quiet (a safety net for lost notifications).
const RECHECK_EVERY: Duration = Duration::from_secs(60);
/// How soon a failed re-check (store unavailable) is retried.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Tells one connection that its access ended, and why.
#[derive(Debug, Default)]
pub(crate) struct Revoker {
    token: CancellationToken,
    reason: OnceLock<String>,
    /// When the revocation reached this process (for the latency histogram).
    at: OnceLock<std::time::Instant>,
}

impl Revoker {
    /// Ends the connection with `reason` (the first reason wins).
    pub(crate) fn revoke(&self, reason: &str) {
        let _ = self.reason.set(reason.to_string());
        let _ = self.at.set(std::time::Instant::now());
        self.token.cancel();
    }

    /// Whether the connection was revoked.
    pub(crate) fn is_revoked(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits for a revocation and returns its reason.
    pub(crate) async fn revoked(&self) -> String {
        self.token.cancelled().await;
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| "access revoked".to_string())
    }
}

#[derive(Debug)]
struct Entry {
    binding_id: String,
    /// `None` until the connection authenticated with the binding.
    session_id: Option<String>,
    /// What the connection was authorized for, re-checked by
    /// [`Registry::recheck_policies`]; `None` until authenticated.
    access: Option<LiveAccess>,
    revoker: Arc<Revoker>,
    /// What the operator console shows; `None` until authenticated.
    shown: Option<(Box<Shown>, console::Activity)>,
}

/// Live connections by binding and session; see the module docs.
pub struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_key: AtomicU64,
    clock: Arc<dyn Clock>,
    /// The configuration in force (routes and policies), shared with the SSH
    /// server: adopted at its start, replaced by [`Registry::recheck_policies`].
    live: OnceLock<LiveConfig>,
    /// This process's metrics (SPEC §10), recorded by the connections.
    metrics: Arc<Metrics>,
    /// Woken when the set of authenticated connections changes (live counts).
    changed: tokio::sync::Notify,
    /// This replica's id among those sharing a store (live session ids).
    replica: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("connections", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// This process's metrics, for the `metrics_address` endpoint.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// An empty registry reading the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty registry for replica `replica` (its live session ids begin with it).
    pub fn for_replica(replica: &str) -> Self {
        Self {
            replica: replica.to_string(),
            ..Self::new()
        }
    }

    /// An empty registry reading `clock` when it re-checks expiry.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            replica: "local".to_string(),
            entries: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            clock,
            live: OnceLock::new(),
            metrics: Arc::new(Metrics::default()),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // critical section is a single insert, remove or scan), so keep going.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live, authenticated connections made with `binding_id`.
    pub fn live_count(&self, binding_id: &str) -> usize {
        self.lock()
            .values()
            .filter(|e| e.session_id.is_some() && e.binding_id == binding_id)
            .count()
    }

    /// All live, authenticated connections.
    pub fn total(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| e.session_id.is_some())
            .count()
    }

    /// Registers a connection about to authenticate with `binding_id`. The entry
    /// disappears when the returned [`Registration`] is dropped.
    pub(crate) fn register(self: &Arc<Self>, binding_id: &str) -> Registration {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let revoker = Arc::new(Revoker::default());
        self.lock().insert(
            key,
            Entry {
                binding_id: binding_id.to_string(),
                session_id: None,
                access: None,
                revoker: revoker.clone(),
                shown: None,
            },
        );
        Registration {
            registry: self.clone(),
            key,
            revoker,
        }
    }

    /// Ends every connection made with `binding_id`; returns how many (not
    /// counting connections already ending).
    pub(crate) fn revoke_binding(&self, binding_id: &str, reason: &str) -> usize {
        self.revoke_where(reason, |e| e.binding_id == binding_id)
    }

    /// Ends every connection authenticated through web session `session_id`.
    pub(crate) fn end_session(&self, session_id: &str, reason: &str) -> usize {
        self.revoke_where(reason, |e| e.session_id.as_deref() == Some(session_id))
    }

    fn revoke_where(&self, reason: &str, matches: impl Fn(&Entry) -> bool) -> usize {
        let hit: Vec<Arc<Revoker>> = self
            .lock()
            .values()
            .filter(|e| !e.revoker.is_revoked() && matches(e))
            .map(|e| e.revoker.clone())
            .collect();
        for r in &hit {
            r.revoke(reason);
        }
        if !hit.is_empty() {
            AuditEvent::ConnectionsRevoked {
                count: hit.len(),
                reason: reason.to_string(),
            }
            .emit();
        }
        hit.len()
    }

    /// The watch of the store's change feed, to run until `shutdown`: ends
    /// connections whose binding or session was revoked, and re-checks everything
    /// after a lag or resync and every minute. Subscribes now, so nothing published
    /// from the call on is missed. The SSH server runs it (once) in its task tree.
    pub(crate) fn watch(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let feed = store.subscribe();
        async move { self.watch_feed(feed, store, shutdown).await }
    }

    async fn watch_feed(
        &self,
        mut feed: tokio::sync::broadcast::Receiver<StoreEvent>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) {
        let mut recheck_at = tokio::time::Instant::now() + RECHECK_EVERY;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(recheck_at) => {
                    recheck_at = tokio::time::Instant::now() + self.recheck_delay(&*store).await;
                }
                ev = feed.recv() => match ev {
                    Ok(StoreEvent::BindingRevoked { binding_id, reason }) => {
                        self.revoke_binding(&binding_id, &reason);
                    }
                    Ok(StoreEvent::SessionEnded { session_id, reason }) => {
                        self.end_session(&session_id, &reason);
                    }
                    Ok(StoreEvent::ConnectionEnded { connection_id, reason }) => {
                        self.end_connection(&connection_id, &reason);
                    }
                    Ok(StoreEvent::SessionRefreshed { session_id }) => {
                        if self.refreshed(&*store, &session_id).await.is_err() {
                            // The store could not say: re-check everything soon.
                            recheck_at = tokio::time::Instant::now() + RETRY_AFTER;
                        }
                    }
                    Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => {
                        tracing::info!("store feed resync: re-checking live connections");
                        recheck_at = tokio::time::Instant::now() + self.recheck_delay(&*store).await;
                    }
                    Ok(_) => {}
                    Err(RecvError::Closed) => {
                        tracing::warn!("store feed closed; re-subscribing");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        feed = store.subscribe();
                        recheck_at = tokio::time::Instant::now() + self.recheck_delay(&*store).await;
                    }
                },
            }
        }
    }

    /// A session's identity was refreshed: its connections follow the stored
    /// identity (a session that is gone ends them).
    async fn refreshed(
        &self,
        store: &dyn Store,
        session_id: &str,
    ) -> Result<usize, tether_store::StoreError> {
        if !self
            .lock()
            .values()
            .any(|e| e.session_id.as_deref() == Some(session_id))
        {
            return Ok(0);
        }
        match store.get_session(session_id).await? {
            Some(s) if s.is_live(self.clock.now()) => Ok(self.follow_identity(&s)),
            Some(_) => Ok(self.end_session(session_id, "session expired")),
            None => Ok(self.end_session(session_id, "session ended")),
        }
    }

    /// Re-checks and returns when to re-check next (sooner after a store failure).
    async fn recheck_delay(&self, store: &dyn Store) -> Duration {
        match self.recheck(store).await {
            Ok(ended) => {
                if ended > 0 {
                    tracing::info!(ended, "re-check ended connections");
                }
                RECHECK_EVERY
            }
            Err(e) => {
                tracing::warn!("re-check of live connections failed, retrying: {e}");
                RETRY_AFTER
            }
        }
    }

    /// Re-checks every authenticated connection against the store: a binding that
    /// is gone, replaced, expired or whose session ended ends its connections, and
    /// the others follow their session's stored identity (a refresh whose event was
    /// lost). Returns how many connections were ended.
    pub(crate) async fn recheck(
        &self,
        store: &dyn Store,
    ) -> Result<usize, tether_store::StoreError> {
        let live: Vec<(String, String)> = {
            let entries = self.lock();
            let mut v: Vec<(String, String)> = entries
                .values()
                .filter_map(|e| Some((e.binding_id.clone(), e.session_id.clone()?)))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let now = self.clock.now();
        let mut ended = 0;
        for (binding_id, session_id) in live {
            let reason = match store.get_binding(&binding_id).await? {
                None => Some("binding revoked"),
                Some(b) if b.session_id != session_id => Some("binding revoked"),
                Some(b) if now >= b.expires_at => Some("binding expired"),
                Some(b) => match store.get_session(&b.session_id).await? {
                    None => Some("session ended"),
                    Some(s) if !s.is_live(now) => Some("session expired"),
                    Some(s) => {
                        ended += self.follow_identity(&s);
                        None
                    }
                },
            };
            if let Some(reason) = reason {
                ended += self.revoke_where(reason, |e| {
                    e.binding_id == binding_id && e.session_id.as_deref() == Some(&session_id)
                });
            }
        }
        Ok(ended)
    }
}

/// A connection's entry in the registry; removes it when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    key: u64,
    revoker: Arc<Revoker>,
}

impl Registration {
    /// Marks the connection authenticated through `session_id`.
    pub(crate) fn activate(&self, session_id: &str) {
        if let Some(e) = self.registry.lock().get_mut(&self.key) {
            e.session_id = Some(session_id.to_string());
        }
        self.registry.changed.notify_one();
    }

    /// This connection's revoker.
    pub(crate) fn revoker(&self) -> Arc<Revoker> {
        self.revoker.clone()
    }

    /// Records what the connection was authorized for (policy re-checks).
    pub(crate) fn set_access(&self, access: LiveAccess) {
        if let Some(e) = self.registry.lock().get_mut(&self.key) {
            e.access = Some(access);
        }
    }

    /// Adds a route the connection now uses in jump-host mode (login `None`).
    pub(crate) fn add_jump_route(&self, route: &str) {
        self.routes().add(route, None);
    }

    /// A handle for a task that starts using routes on this connection after
    /// authentication (the portal's hand-over).
    pub(crate) fn routes(&self) -> RouteRecorder {
        RouteRecorder {
            registry: self.registry.clone(),
            key: self.key,
        }
    }
}

/// Records the routes a connection uses after authentication, so policy re-checks
/// cover them. Does not keep the entry alive (the [`Registration`] does).
#[derive(Clone, Debug)]
pub(crate) struct RouteRecorder {
    registry: Arc<Registry>,
    key: u64,
}

impl RouteRecorder {
    /// Adds `route` with `login` (`None`: a jump-host pipe). The route is checked
    /// at once with the entry's principal, which follows identity refreshes while
    /// the connection's own copy does not: a route the refreshed identity may no
    /// longer use ends the connection.
    pub(crate) fn add(&self, route: &str, login: Option<&str>) {
        let added = {
            let mut entries = self.registry.lock();
            let Some(e) = entries.get_mut(&self.key) else {
                return;
            };
            let Some(a) = e.access.as_mut() else {
                return;
            };
            a.add_route(route, login);
            if let Some((shown, _)) = e.shown.as_mut() {
                // The console shows the first route a route-less connection took.
                shown.route.get_or_insert_with(|| route.to_string());
                if let Some(login) = login {
                    shown.login = login.to_string();
                }
            }
            let refreshed = LiveAccess {
                principal: a.principal.clone(),
                routes: vec![(route.to_string(), login.map(str::to_string))],
            };
            (e.revoker.clone(), refreshed)
        };
        let (revoker, access) = added;
        if let Some(config) = self.registry.config() {
            if let Some(reason) = access.denial(&config, self.registry.clock.now()) {
                tracing::info!(reason = %reason, "route no longer allowed for the refreshed identity");
                revoker.revoke(&reason);
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let was_live = self
            .registry
            .lock()
            .remove(&self.key)
            .is_some_and(|e| e.session_id.is_some());
        if was_live {
            self.registry.changed.notify_one();
        }
        if let Some(at) = self.revoker.at.get() {
            self.registry.metrics.revocation.observe(at.elapsed());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tether_core::{BindingRequest, ClientBinding, Identity, RequestStatus, Session, UserCode};
    use tether_store::memory::MemoryStore;

    #[test]
    fn counts_only_activated_entries_and_drops_on_guard_drop() {
        let reg = Arc::new(Registry::new());
        let a = reg.register("sshkey-A");
        let b = reg.register("sshkey-A");
        let c = reg.register("sshkey-B");
        assert_eq!(reg.live_count("sshkey-A"), 0);
        a.activate("s1");
        b.activate("s1");
        c.activate("s2");
        assert_eq!(reg.live_count("sshkey-A"), 2);
        assert_eq!(reg.total(), 3);
        drop(b);
        assert_eq!(reg.live_count("sshkey-A"), 1);
        drop(a);
        drop(c);
        assert_eq!(reg.total(), 0);
    }

    #[tokio::test]
    async fn revoking_a_binding_hits_its_connections_only() {
        let reg = Arc::new(Registry::new());
        let a = reg.register("sshkey-A");
        a.activate("s1");
        let pending = reg.register("sshkey-A");
        let other = reg.register("sshkey-B");
        other.activate("s1");
        assert_eq!(reg.revoke_binding("sshkey-A", "revoked by alice"), 2);
        assert_eq!(a.revoker().revoked().await, "revoked by alice");
        assert!(pending.revoker().is_revoked(), "pre-auth entries too");
        assert!(!other.revoker().is_revoked());
        // A revoked connection's close is timed into the latency histogram.
        drop((a, pending, other));
        let text = reg.metrics().render(None);
        assert!(
            text.contains("tether_revocation_seconds_count 2\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn ending_a_session_hits_activated_entries_of_that_session() {
        let reg = Arc::new(Registry::new());
        let a = reg.register("sshkey-A");
        a.activate("s1");
        let b = reg.register("sshkey-B");
        b.activate("s2");
        let pending = reg.register("sshkey-C");
        assert_eq!(reg.end_session("s1", "logged out"), 1);
        assert_eq!(a.revoker().revoked().await, "logged out");
        assert!(!b.revoker().is_revoked());
        assert!(!pending.revoker().is_revoked());
    }

    async fn bound(store: &MemoryStore, fp: &str) -> (ClientBinding, Session) {
        let now = SystemClock.now();
        let session = Session {
            id: format!("sess-{fp}"),
            identity: Identity {
                subject: "u-alice".into(),
                email: "alice@example.com".into(),
                name: None,
                claims: Default::default(),
            },
            issued_at: now,
            expires_at: now.plus(Duration::from_secs(3600)),
        };
        store.create_session(&session).await.unwrap();
        let code = UserCode::generate().unwrap();
        let req = BindingRequest {
            code: code.clone(),
            fingerprint: fp.into(),
            key_type: "ssh-ed25519".into(),
            public_key: String::new(),
            details: Default::default(),
            issued_at: now,
            expires_at: now.plus(Duration::from_secs(60)),
            status: RequestStatus::Pending,
        };
        store.open_request(req, now).await.unwrap();
        let approval = store
            .approve_request(
                code.as_str(),
                &session,
                false,
                Duration::from_secs(7200),
                now,
            )
            .await
            .unwrap();
        (approval.binding, session)
    }

    #[tokio::test]
    async fn watch_turns_feed_events_into_revocations() {
        let store = Arc::new(MemoryStore::new());
        let reg = Arc::new(Registry::new());
        let shutdown = CancellationToken::new();
        let (b1, s1) = bound(&store, "SHA256:one").await;
        let (b2, _) = bound(&store, "SHA256:two").await;
        let c1 = reg.register(&b1.id);
        c1.activate(&s1.id);
        let c2 = reg.register(&b2.id);
        c2.activate(&b2.session_id);
        let watch = tokio::spawn(reg.clone().watch(store.clone(), shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;

        store
            .revoke_binding(&b1.id, None, "revoked by alice@example.com")
            .await
            .unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(1), c1.revoker().revoked())
            .await
            .unwrap();
        assert_eq!(reason, "revoked by alice@example.com");
        assert!(!c2.revoker().is_revoked());

        store.sign_out(&b2.session_id, "logged out").await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(1), c2.revoker().revoked())
            .await
            .unwrap();
        assert_eq!(reason, "logged out");

        shutdown.cancel();
        watch.await.unwrap();
    }

    #[tokio::test]
    async fn recheck_ends_connections_the_store_no_longer_backs() {
        let store = MemoryStore::new();
        let reg = Arc::new(Registry::new());
        let (b1, s1) = bound(&store, "SHA256:one").await;
        let ok = reg.register(&b1.id);
        ok.activate(&s1.id);
        let gone = reg.register("sshkey-SHA256:missing");
        gone.activate("sess-x");
        let stale = reg.register(&b1.id);
        stale.activate("an-older-session");
        assert_eq!(reg.recheck(&store).await.unwrap(), 2);
        assert_eq!(gone.revoker().revoked().await, "binding revoked");
        assert_eq!(stale.revoker().revoked().await, "binding revoked");
        assert!(!ok.revoker().is_revoked());

        // Its session ends without an event reaching us (lost notification).
        store.sign_out(&s1.id, "logged out").await.unwrap();
        assert_eq!(reg.recheck(&store).await.unwrap(), 1);
        assert_eq!(ok.revoker().revoked().await, "binding revoked");
    }

    #[test]
    fn first_reason_wins() {
        let r = Revoker::default();
        r.revoke("first");
        r.revoke("second");
        assert_eq!(r.reason.get().map(String::as_str), Some("first"));
    }
}
