//! [`MemoryStore`]: the `memory` backend, for tests and throwaway runs.
//!
//! Everything lives in `HashMap`s behind one `std::sync::Mutex`; a "transaction" is
//! holding that lock for the whole method, so every method is atomic and no method
//! awaits while holding it. The rules (who may bind a key, expiry, what purge
//! removes) come from `crate::rules` and `tether-core`, exactly as for the SQL
//! backends, and the conformance suite checks both. Events are published while the
//! lock is held so their order matches the order of the changes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tether_core::connection::LiveSession;
use tether_core::{
    BindingRequest, ClientBinding, Identity, IdentityBinding, RequestStatus, Session, Timestamp,
};
use tokio::sync::broadcast;

use crate::rules;
use crate::{
    Approval, CutOff, DecideError, Feed, PinnedHostKey, RefreshClaim, RevokeError, SignOut, Store,
    StoreError, StoreEvent,
};

/// The in-memory backend. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    feed: Feed,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<String, Session>,
    /// By code.
    requests: HashMap<String, BindingRequest>,
    /// Client bindings by fingerprint (the id is derived from it).
    bindings: HashMap<String, ClientBinding>,
    /// Identity bindings by fingerprint.
    identities: HashMap<String, IdentityBinding>,
    /// Pinned host keys by address.
    host_keys: HashMap<String, String>,
    /// Live connection counts by replica: (stamp, count per binding id).
    live_counts: HashMap<String, (Timestamp, HashMap<String, u32>)>,
    /// Identity refresh state by session id (removed with the session).
    refresh: HashMap<String, Refresh>,
    /// Live sessions by replica: (stamp, sessions).
    live_sessions: HashMap<String, (Timestamp, Vec<LiveSession>)>,
}

/// A session's refresh token and schedule.
#[derive(Debug, Clone)]
struct Refresh {
    token: String,
    due: Timestamp,
    failing_since: Option<Timestamp>,
}

impl State {
    fn binding_by_id(&self, id: &str) -> Option<&ClientBinding> {
        tether_core::binding::fingerprint_of(id)
            .and_then(|fp| self.bindings.get(fp))
            .filter(|b| b.id == id)
    }
}

impl MemoryStore {
    /// An empty store with its own change feed.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.feed.subscribe()
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        let mut st = self.lock()?;
        if st.sessions.contains_key(&session.id) {
            return Err(StoreError::Unavailable(format!(
                "session {} already exists",
                session.id
            )));
        }
        st.sessions.insert(session.id.clone(), session.clone());
        Ok(())
    }

    async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.lock()?.sessions.get(id).cloned())
    }

    async fn sign_out(&self, session_id: &str, reason: &str) -> Result<SignOut, StoreError> {
        let mut st = self.lock()?;
        let Some(session) = st.sessions.remove(session_id) else {
            return Ok(SignOut::default());
        };
        st.refresh.remove(session_id);
        let user = session.user_id();
        let mut revoked: Vec<String> = st
            .bindings
            .values()
            .filter(|b| b.user_id == user)
            .map(|b| b.id.clone())
            .collect();
        revoked.sort();
        st.bindings.retain(|_, b| b.user_id != user);
        for id in &revoked {
            self.feed.publish(StoreEvent::BindingRevoked {
                binding_id: id.clone(),
                reason: reason.to_string(),
            });
        }
        self.feed.publish(StoreEvent::SessionEnded {
            session_id: session_id.to_string(),
            reason: reason.to_string(),
        });
        Ok(SignOut {
            revoked_bindings: revoked,
        })
    }

    async fn set_session_refresh(
        &self,
        session_id: &str,
        token: &str,
        due: Timestamp,
    ) -> Result<(), StoreError> {
        let mut st = self.lock()?;
        if st.sessions.contains_key(session_id) {
            st.refresh.insert(
                session_id.to_string(),
                Refresh {
                    token: token.to_string(),
                    due,
                    failing_since: None,
                },
            );
        }
        Ok(())
    }

    async fn claim_session_refreshes(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefreshClaim>, StoreError> {
        let mut st = self.lock()?;
        let State {
            sessions, refresh, ..
        } = &mut *st;
        let mut due: Vec<(Timestamp, String)> = refresh
            .iter()
            .filter(|(id, r)| r.due <= now && sessions.get(*id).is_some_and(|s| s.is_live(now)))
            .map(|(id, r)| (r.due, id.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut out = Vec::with_capacity(due.len());
        for (_, id) in due {
            let (Some(r), Some(s)) = (refresh.get_mut(&id), sessions.get(&id)) else {
                continue;
            };
            r.due = lease_until;
            out.push(RefreshClaim {
                session_id: id.clone(),
                user_id: s.user_id().to_string(),
                token: r.token.clone(),
                failing_since: r.failing_since,
            });
        }
        Ok(out)
    }

    async fn session_refreshed(
        &self,
        session_id: &str,
        identity: &Identity,
        token: Option<&str>,
        next_due: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut st = self.lock()?;
        let Some(session) = st.sessions.get_mut(session_id) else {
            return Ok(false);
        };
        session.identity = identity.clone();
        let user = session.user_id().to_string();
        let email = identity.email.clone();
        if let Some(r) = st.refresh.get_mut(session_id) {
            if let Some(t) = token {
                r.token = t.to_string();
            }
            r.due = next_due;
            r.failing_since = None;
        }
        for b in st.bindings.values_mut().filter(|b| b.user_id == user) {
            b.email.clone_from(&email);
        }
        for b in st.identities.values_mut().filter(|b| b.user_id == user) {
            b.email.clone_from(&email);
        }
        self.feed.publish(StoreEvent::SessionRefreshed {
            session_id: session_id.to_string(),
        });
        Ok(true)
    }

    async fn session_refresh_failed(
        &self,
        session_id: &str,
        now: Timestamp,
        retry_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut st = self.lock()?;
        if let Some(r) = st.refresh.get_mut(session_id) {
            r.failing_since.get_or_insert(now);
            r.due = retry_at;
        }
        Ok(())
    }

    async fn open_request(
        &self,
        new: BindingRequest,
        now: Timestamp,
    ) -> Result<BindingRequest, StoreError> {
        let mut st = self.lock()?;
        let existing = st
            .requests
            .values()
            .filter(|r| {
                r.fingerprint == new.fingerprint
                    && r.status == RequestStatus::Pending
                    && !r.is_expired(now)
            })
            .max_by_key(|r| r.issued_at);
        if let Some(r) = existing {
            return Ok(r.clone());
        }
        if st.requests.contains_key(new.code.as_str()) {
            return Err(StoreError::Unavailable("duplicate sign-in code".into()));
        }
        st.requests
            .insert(new.code.as_str().to_string(), new.clone());
        Ok(new)
    }

    async fn get_request(&self, code: &str) -> Result<Option<BindingRequest>, StoreError> {
        Ok(self.lock()?.requests.get(code).cloned())
    }

    async fn approve_request(
        &self,
        code: &str,
        session: &Session,
        remember: bool,
        max_ttl: Duration,
        now: Timestamp,
    ) -> Result<Approval, DecideError> {
        let mut st = self.lock()?;
        let req = st
            .requests
            .get(code)
            .cloned()
            .ok_or(DecideError::NotFound)?;
        rules::check_decidable(&req, now)?;
        let session = rules::check_session(st.sessions.get(&session.id).cloned(), now)?;
        let user = session.user_id().to_string();
        let existing = st.bindings.get(&req.fingerprint).map(|b| {
            let s = st.sessions.get(&b.session_id).cloned();
            (b.clone(), s)
        });
        let identity = st.identities.get(&req.fingerprint).cloned();
        rules::check_owner(now, existing.as_ref(), identity.as_ref(), &user)?;

        // All checks passed: write everything (nothing below can fail).
        let binding = rules::new_binding(&req, &session, max_ttl, now);
        st.bindings.insert(req.fingerprint.clone(), binding.clone());
        if remember && identity.is_none() {
            st.identities.insert(
                req.fingerprint.clone(),
                rules::new_identity_binding(&req, &session, now),
            );
        }
        if let Some(r) = st.requests.get_mut(code) {
            r.status = RequestStatus::Approved {
                user_id: user.clone(),
                binding_id: binding.id.clone(),
            };
        }
        self.feed.publish(StoreEvent::BindingCreated {
            binding_id: binding.id.clone(),
            user_id: user,
        });
        self.feed.publish(StoreEvent::RequestDecided {
            code: code.to_string(),
        });
        Ok(Approval {
            binding,
            remembered: remember,
        })
    }

    async fn deny_request(
        &self,
        code: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<(), DecideError> {
        let mut st = self.lock()?;
        let req = st.requests.get_mut(code).ok_or(DecideError::NotFound)?;
        rules::check_decidable(req, now)?;
        req.status = RequestStatus::Denied {
            user_id: user_id.to_string(),
        };
        self.feed.publish(StoreEvent::RequestDecided {
            code: code.to_string(),
        });
        Ok(())
    }

    async fn drop_request(&self, code: &str) -> Result<(), StoreError> {
        let mut st = self.lock()?;
        if st
            .requests
            .get(code)
            .is_some_and(|r| r.status == RequestStatus::Pending)
        {
            st.requests.remove(code);
        }
        Ok(())
    }

    async fn binding_for_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<(ClientBinding, Option<Session>)>, StoreError> {
        let st = self.lock()?;
        Ok(st.bindings.get(fingerprint).map(|b| {
            let s = st.sessions.get(&b.session_id).cloned();
            (b.clone(), s)
        }))
    }

    async fn get_binding(&self, id: &str) -> Result<Option<ClientBinding>, StoreError> {
        Ok(self.lock()?.binding_by_id(id).cloned())
    }

    async fn touch_binding(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        let mut st = self.lock()?;
        if let Some(b) = tether_core::binding::fingerprint_of(id)
            .and_then(|fp| st.bindings.get_mut(fp))
            .filter(|b| b.id == id)
        {
            b.last_used = Some(now);
        }
        Ok(())
    }

    async fn list_bindings(&self, user_id: Option<&str>) -> Result<Vec<ClientBinding>, StoreError> {
        let st = self.lock()?;
        let mut out: Vec<ClientBinding> = st
            .bindings
            .values()
            .filter(|b| user_id.is_none_or(|u| b.user_id == u))
            .cloned()
            .collect();
        out.sort_by(rules::newest_first);
        Ok(out)
    }

    async fn revoke_binding(
        &self,
        id: &str,
        owner: Option<&str>,
        reason: &str,
    ) -> Result<ClientBinding, RevokeError> {
        let mut st = self.lock()?;
        let b = st.binding_by_id(id).cloned().ok_or(RevokeError::NotFound)?;
        if owner.is_some_and(|o| o != b.user_id) {
            return Err(RevokeError::NotOwner);
        }
        st.bindings.remove(&b.fingerprint);
        self.feed.publish(StoreEvent::BindingRevoked {
            binding_id: b.id.clone(),
            reason: reason.to_string(),
        });
        Ok(b)
    }

    async fn identity_binding_for_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<IdentityBinding>, StoreError> {
        Ok(self.lock()?.identities.get(fingerprint).cloned())
    }

    async fn list_identity_bindings(
        &self,
        user_id: Option<&str>,
    ) -> Result<Vec<IdentityBinding>, StoreError> {
        let st = self.lock()?;
        let mut out: Vec<IdentityBinding> = st
            .identities
            .values()
            .filter(|b| user_id.is_none_or(|u| b.user_id == u))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        Ok(out)
    }

    async fn revoke_identity_binding(
        &self,
        fingerprint: &str,
        owner: Option<&str>,
    ) -> Result<IdentityBinding, RevokeError> {
        let mut st = self.lock()?;
        let ib = st
            .identities
            .get(fingerprint)
            .cloned()
            .ok_or(RevokeError::NotFound)?;
        if owner.is_some_and(|o| o != ib.user_id) {
            return Err(RevokeError::NotOwner);
        }
        st.identities.remove(fingerprint);
        self.feed.publish(StoreEvent::IdentityBindingRemoved {
            fingerprint: fingerprint.to_string(),
        });
        Ok(ib)
    }

    async fn pinned_host_key(&self, address: &str) -> Result<Option<PinnedHostKey>, StoreError> {
        Ok(self.lock()?.host_keys.get(address).map(|k| PinnedHostKey {
            address: address.to_string(),
            public_key: k.clone(),
        }))
    }

    async fn pin_host_key(&self, key: &PinnedHostKey) -> Result<PinnedHostKey, StoreError> {
        let mut st = self.lock()?;
        let pinned = st
            .host_keys
            .entry(key.address.clone())
            .or_insert_with(|| key.public_key.clone());
        Ok(PinnedHostKey {
            address: key.address.clone(),
            public_key: pinned.clone(),
        })
    }

    async fn publish_live_counts(
        &self,
        replica: &str,
        counts: &[(String, u32)],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut st = self.lock()?;
        let counts: HashMap<String, u32> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        if counts.is_empty() {
            st.live_counts.remove(replica);
        } else {
            st.live_counts.insert(replica.to_string(), (now, counts));
        }
        Ok(())
    }

    async fn refresh_live_counts(&self, replica: &str, now: Timestamp) -> Result<(), StoreError> {
        if let Some((stamp, _)) = self.lock()?.live_counts.get_mut(replica) {
            *stamp = now;
        }
        Ok(())
    }

    async fn live_counts_elsewhere(
        &self,
        replica: &str,
        binding_ids: &[String],
        since: Timestamp,
    ) -> Result<HashMap<String, u32>, StoreError> {
        let st = self.lock()?;
        let mut sums = HashMap::new();
        for (_, counts) in st
            .live_counts
            .iter()
            .filter(|(r, (stamp, _))| r.as_str() != replica && *stamp >= since)
            .map(|(_, v)| v)
        {
            for id in binding_ids {
                if let Some(n) = counts.get(id) {
                    let sum = sums.entry(id.clone()).or_insert(0u32);
                    *sum = sum.saturating_add(*n);
                }
            }
        }
        Ok(sums)
    }

    async fn publish_live_sessions(
        &self,
        replica: &str,
        sessions: &[LiveSession],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut st = self.lock()?;
        if sessions.is_empty() {
            st.live_sessions.remove(replica);
        } else {
            st.live_sessions
                .insert(replica.to_string(), (now, sessions.to_vec()));
        }
        Ok(())
    }

    async fn live_sessions(&self, since: Timestamp) -> Result<Vec<LiveSession>, StoreError> {
        let st = self.lock()?;
        let mut all: Vec<LiveSession> = st
            .live_sessions
            .values()
            .filter(|(stamp, _)| *stamp >= since)
            .flat_map(|(_, v)| v.iter().cloned())
            .collect();
        all.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(all)
    }

    async fn end_live_session(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        let _st = self.lock()?;
        self.feed.publish(StoreEvent::ConnectionEnded {
            connection_id: id.to_string(),
            reason: reason.to_string(),
        });
        Ok(())
    }

    async fn cut_off_user(&self, user_id: &str, reason: &str) -> Result<CutOff, StoreError> {
        let mut st = self.lock()?;
        let mut cut = CutOff::default();
        let mut bindings: Vec<String> = st
            .bindings
            .values()
            .filter(|b| b.user_id == user_id)
            .map(|b| b.fingerprint.clone())
            .collect();
        bindings.sort();
        for fp in bindings {
            if let Some(b) = st.bindings.remove(&fp) {
                self.feed.publish(StoreEvent::BindingRevoked {
                    binding_id: b.id.clone(),
                    reason: reason.to_string(),
                });
                cut.client_bindings.push(b.id);
            }
        }
        let mut remembered: Vec<String> = st
            .identities
            .values()
            .filter(|i| i.user_id == user_id)
            .map(|i| i.fingerprint.clone())
            .collect();
        remembered.sort();
        for fp in remembered {
            st.identities.remove(&fp);
            self.feed.publish(StoreEvent::IdentityBindingRemoved {
                fingerprint: fp.clone(),
            });
            cut.identity_bindings.push(fp);
        }
        let mut sessions: Vec<String> = st
            .sessions
            .values()
            .filter(|s| s.user_id() == user_id)
            .map(|s| s.id.clone())
            .collect();
        sessions.sort();
        for id in sessions {
            st.sessions.remove(&id);
            st.refresh.remove(&id);
            self.feed.publish(StoreEvent::SessionEnded {
                session_id: id.clone(),
                reason: reason.to_string(),
            });
            cut.sessions.push(id);
        }
        Ok(cut)
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<(), StoreError> {
        let mut st = self.lock()?;
        let stale = now.minus(crate::LIVE_COUNTS_KEPT);
        st.live_counts.retain(|_, (stamp, _)| *stamp >= stale);
        st.live_sessions.retain(|_, (stamp, _)| *stamp >= stale);
        let mut gone: Vec<(String, &'static str)> = st
            .bindings
            .values()
            .filter_map(|b| {
                rules::purge_reason(b, st.sessions.get(&b.session_id), now)
                    .map(|r| (b.fingerprint.clone(), r))
            })
            .collect();
        gone.sort();
        let mut ended: Vec<String> = st
            .sessions
            .values()
            .filter(|s| !s.is_live(now))
            .map(|s| s.id.clone())
            .collect();
        ended.sort();

        for (fp, reason) in gone {
            if let Some(b) = st.bindings.remove(&fp) {
                self.feed.publish(StoreEvent::BindingRevoked {
                    binding_id: b.id,
                    reason: reason.to_string(),
                });
            }
        }
        for id in ended {
            st.sessions.remove(&id);
            st.refresh.remove(&id);
            self.feed.publish(StoreEvent::SessionEnded {
                session_id: id,
                reason: rules::REASON_SESSION_EXPIRED.to_string(),
            });
        }
        st.requests.retain(|_, r| !rules::request_purgeable(r, now));
        Ok(())
    }
}
