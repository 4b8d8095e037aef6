//! A store that fails binding lookups on demand, delegating everything else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tether_core::{BindingRequest, ClientBinding, IdentityBinding, Session, Timestamp};
use tether_store::memory::MemoryStore;
use tether_store::{
    Approval, DecideError, PinnedHostKey, RevokeError, SignOut, Store, StoreError, StoreEvent,
};
use tokio::sync::broadcast;

pub struct FlakyStore {
    pub inner: Arc<MemoryStore>,
    pub fail: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "connection refused (10.9.9.9:5432)".into(),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.subscribe()
    }
    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        self.inner.create_session(session).await
    }
    async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.inner.get_session(id).await
    }
    async fn sign_out(&self, session_id: &str, reason: &str) -> Result<SignOut, StoreError> {
        self.inner.sign_out(session_id, reason).await
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
        self.inner.open_request(new, now).await
    }
    async fn get_request(&self, code: &str) -> Result<Option<BindingRequest>, StoreError> {
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
        self.inner
            .approve_request(code, session, remember, max_ttl, now)
            .await
    }
    async fn deny_request(
        &self,
        code: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<(), DecideError> {
        self.inner.deny_request(code, user_id, now).await
    }
    async fn drop_request(&self, code: &str) -> Result<(), StoreError> {
        self.inner.drop_request(code).await
    }
    async fn binding_for_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<(ClientBinding, Option<Session>)>, StoreError> {
        self.check()?;
        self.inner.binding_for_key(fingerprint).await
    }
    async fn get_binding(&self, id: &str) -> Result<Option<ClientBinding>, StoreError> {
        self.inner.get_binding(id).await
    }
    async fn touch_binding(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        self.inner.touch_binding(id, now).await
    }
    async fn list_bindings(&self, user_id: Option<&str>) -> Result<Vec<ClientBinding>, StoreError> {
        self.inner.list_bindings(user_id).await
    }
    async fn revoke_binding(
        &self,
        id: &str,
        owner: Option<&str>,
        reason: &str,
    ) -> Result<ClientBinding, RevokeError> {
        self.inner.revoke_binding(id, owner, reason).await
    }
    async fn identity_binding_for_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<IdentityBinding>, StoreError> {
        self.inner.identity_binding_for_key(fingerprint).await
    }
    async fn list_identity_bindings(
        &self,
        user_id: Option<&str>,
    ) -> Result<Vec<IdentityBinding>, StoreError> {
        self.inner.list_identity_bindings(user_id).await
    }
    async fn revoke_identity_binding(
        &self,
        fingerprint: &str,
        owner: Option<&str>,
    ) -> Result<IdentityBinding, RevokeError> {
        self.inner.revoke_identity_binding(fingerprint, owner).await
    }
    async fn pinned_host_key(&self, address: &str) -> Result<Option<PinnedHostKey>, StoreError> {
        self.inner.pinned_host_key(address).await
    }
    async fn pin_host_key(&self, key: &PinnedHostKey) -> Result<PinnedHostKey, StoreError> {
        self.inner.pin_host_key(key).await
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

pub fn flaky() -> (Arc<FlakyStore>, Arc<MemoryStore>) {
    let inner = Arc::new(MemoryStore::new());
    let store = Arc::new(FlakyStore {
        inner: inner.clone(),
        fail: AtomicBool::new(false),
    });
    (store, inner)
}
