//! The [`Store`] methods of [`SqlStore`]: one transaction each, the binding rules
//! from [`crate::rules`], events appended to the outbox and published after commit.
//! Approval lives in `approve`, the SQL text and lock helpers in `queries`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use tether_core::connection::LiveSession;
use tether_core::{BindingRequest, ClientBinding, Identity, IdentityBinding, Session, Timestamp};
use tokio::sync::broadcast;

use super::queries::*;
use super::rows::{self, db_err, to_json};
use super::{now_ms, SqlStore};
use crate::rules;
use crate::{
    Approval, CutOff, DecideError, PinnedHostKey, RefreshClaim, RevokeError, SignOut, Store,
    StoreError, StoreEvent,
};

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.feed.subscribe()
    }

    async fn close(&self) {
        self.inner.tailer_cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, email, identity_json, issued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(session.id.as_str())
        .bind(session.user_id())
        .bind(session.identity.email.as_str())
        .bind(to_json(&session.identity)?)
        .bind(session.issued_at.millis())
        .bind(session.expires_at.millis())
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(SELECT_SESSION)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::session).transpose()
    }

    async fn sign_out(&self, session_id: &str, reason: &str) -> Result<SignOut, StoreError> {
        let mut tx = self.begin().await?;
        let Some(session) = self.session_locked(&mut tx, session_id, true).await? else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(SignOut::default());
        };
        let deleted = sqlx::query("DELETE FROM client_bindings WHERE user_id = $1 RETURNING id")
            .bind(session.user_id())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut revoked = deleted
            .iter()
            .map(|r| rows::text(r, "id"))
            .collect::<Result<Vec<_>, _>>()?;
        revoked.sort();
        sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(session_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut events: Vec<StoreEvent> = revoked
            .iter()
            .map(|id| StoreEvent::BindingRevoked {
                binding_id: id.clone(),
                reason: reason.to_string(),
            })
            .collect();
        events.push(StoreEvent::SessionEnded {
            session_id: session_id.to_string(),
            reason: reason.to_string(),
        });
        self.commit(tx, events).await?;
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
        self.set_refresh(session_id, token, due).await
    }

    async fn claim_session_refreshes(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefreshClaim>, StoreError> {
        self.claim_refreshes(now, lease_until, limit).await
    }

    async fn session_refreshed(
        &self,
        session_id: &str,
        identity: &Identity,
        token: Option<&str>,
        next_due: Timestamp,
    ) -> Result<bool, StoreError> {
        self.refreshed(session_id, identity, token, next_due).await
    }

    async fn session_refresh_failed(
        &self,
        session_id: &str,
        now: Timestamp,
        retry_at: Timestamp,
    ) -> Result<(), StoreError> {
        self.refresh_failed(session_id, now, retry_at).await
    }

    async fn open_request(
        &self,
        new: BindingRequest,
        now: Timestamp,
    ) -> Result<BindingRequest, StoreError> {
        let mut tx = self.begin().await?;
        self.lock_key(&mut tx, &new.fingerprint).await?;
        let existing = sqlx::query(SELECT_PENDING_FOR_KEY)
            .bind(new.fingerprint.as_str())
            .bind(now.millis())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if let Some(row) = existing {
            let req = rows::request(&row)?;
            tx.rollback().await.map_err(db_err)?;
            return Ok(req);
        }
        let (status, decided_by, binding_id) = rows::status_columns(&new.status);
        sqlx::query(
            "INSERT INTO binding_requests (code, fingerprint, key_type, public_key, details_json, \
             issued_at, expires_at, status, decided_by, binding_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(new.code.as_str())
        .bind(new.fingerprint.as_str())
        .bind(new.key_type.as_str())
        .bind(new.public_key.as_str())
        .bind(to_json(&new.details)?)
        .bind(new.issued_at.millis())
        .bind(new.expires_at.millis())
        .bind(status)
        .bind(decided_by)
        .bind(binding_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        self.commit(tx, Vec::new()).await?;
        Ok(new)
    }

    async fn get_request(&self, code: &str) -> Result<Option<BindingRequest>, StoreError> {
        let row = sqlx::query(SELECT_REQUEST)
            .bind(code)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::request).transpose()
    }

    async fn approve_request(
        &self,
        code: &str,
        session: &Session,
        remember: bool,
        max_ttl: Duration,
        now: Timestamp,
    ) -> Result<Approval, DecideError> {
        self.approve(code, session, remember, max_ttl, now).await
    }

    async fn deny_request(
        &self,
        code: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<(), DecideError> {
        let mut tx = self.begin().await?;
        let req = self
            .request_for_update(&mut tx, code)
            .await?
            .ok_or(DecideError::NotFound)?;
        rules::check_decidable(&req, now)?;
        sqlx::query(
            "UPDATE binding_requests SET status = 'denied', decided_by = $2, binding_id = NULL \
             WHERE code = $1",
        )
        .bind(code)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        self.commit(
            tx,
            vec![StoreEvent::RequestDecided {
                code: code.to_string(),
            }],
        )
        .await?;
        Ok(())
    }

    async fn drop_request(&self, code: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM binding_requests WHERE code = $1 AND status = 'pending'")
            .bind(code)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn binding_for_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<(ClientBinding, Option<Session>)>, StoreError> {
        let mut conn = self.pool().acquire().await.map_err(db_err)?;
        fetch_binding(&mut conn, SELECT_BINDING_BY_KEY, fingerprint).await
    }

    async fn get_binding(&self, id: &str) -> Result<Option<ClientBinding>, StoreError> {
        let mut conn = self.pool().acquire().await.map_err(db_err)?;
        Ok(fetch_binding(&mut conn, SELECT_BINDING_BY_ID, id)
            .await?
            .map(|(b, _)| b))
    }

    async fn touch_binding(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query("UPDATE client_bindings SET last_used = $2 WHERE id = $1")
            .bind(id)
            .bind(now.millis())
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn list_bindings(&self, user_id: Option<&str>) -> Result<Vec<ClientBinding>, StoreError> {
        let q = match user_id {
            Some(u) => sqlx::query(SELECT_BINDINGS_OF_USER).bind(u),
            None => sqlx::query(SELECT_BINDINGS_ALL),
        };
        let rows = q.fetch_all(self.pool()).await.map_err(db_err)?;
        rows.iter()
            .map(|r| rows::binding(r).map(|(b, _)| b))
            .collect()
    }

    async fn revoke_binding(
        &self,
        id: &str,
        owner: Option<&str>,
        reason: &str,
    ) -> Result<ClientBinding, RevokeError> {
        let mut tx = self.begin().await?;
        let (binding, _) = fetch_binding(&mut tx, SELECT_BINDING_BY_ID, id)
            .await?
            .ok_or(RevokeError::NotFound)?;
        if owner.is_some_and(|o| o != binding.user_id) {
            return Err(RevokeError::NotOwner);
        }
        // Delete exactly the row we checked; if a concurrent writer replaced or removed
        // it meanwhile, there is nothing of ours left to revoke.
        let gone = sqlx::query(
            "DELETE FROM client_bindings WHERE id = $1 AND user_id = $2 AND issued_at = $3 \
             RETURNING id",
        )
        .bind(id)
        .bind(binding.user_id.as_str())
        .bind(binding.issued_at.millis())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        if gone.is_none() {
            return Err(RevokeError::NotFound);
        }
        let ev = StoreEvent::BindingRevoked {
            binding_id: id.to_string(),
            reason: reason.to_string(),
        };
        self.commit(tx, vec![ev]).await?;
        Ok(binding)
    }

    async fn identity_binding_for_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<IdentityBinding>, StoreError> {
        let row = sqlx::query(SELECT_IDENTITY_BY_KEY)
            .bind(fingerprint)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::identity).transpose()
    }

    async fn list_identity_bindings(
        &self,
        user_id: Option<&str>,
    ) -> Result<Vec<IdentityBinding>, StoreError> {
        let q = match user_id {
            Some(u) => sqlx::query(SELECT_IDENTITIES_OF_USER).bind(u),
            None => sqlx::query(SELECT_IDENTITIES_ALL),
        };
        let rows = q.fetch_all(self.pool()).await.map_err(db_err)?;
        rows.iter().map(rows::identity).collect()
    }

    async fn revoke_identity_binding(
        &self,
        fingerprint: &str,
        owner: Option<&str>,
    ) -> Result<IdentityBinding, RevokeError> {
        let mut tx = self.begin().await?;
        let ib = sqlx::query(SELECT_IDENTITY_BY_KEY)
            .bind(fingerprint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::identity)
            .transpose()?
            .ok_or(RevokeError::NotFound)?;
        if owner.is_some_and(|o| o != ib.user_id) {
            return Err(RevokeError::NotOwner);
        }
        let gone = sqlx::query(
            "DELETE FROM identity_bindings WHERE fingerprint = $1 AND user_id = $2 \
             RETURNING fingerprint",
        )
        .bind(fingerprint)
        .bind(ib.user_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        if gone.is_none() {
            return Err(RevokeError::NotFound);
        }
        let ev = StoreEvent::IdentityBindingRemoved {
            fingerprint: fingerprint.to_string(),
        };
        self.commit(tx, vec![ev]).await?;
        Ok(ib)
    }

    async fn pinned_host_key(&self, address: &str) -> Result<Option<PinnedHostKey>, StoreError> {
        let row = sqlx::query("SELECT address, public_key FROM host_keys WHERE address = $1")
            .bind(address)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.map(|r| {
            Ok(PinnedHostKey {
                address: rows::text(&r, "address")?,
                public_key: rows::text(&r, "public_key")?,
            })
        })
        .transpose()
    }

    async fn pin_host_key(&self, key: &PinnedHostKey) -> Result<PinnedHostKey, StoreError> {
        sqlx::query(
            "INSERT INTO host_keys (address, public_key) VALUES ($1, $2) \
             ON CONFLICT (address) DO NOTHING",
        )
        .bind(key.address.as_str())
        .bind(key.public_key.as_str())
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        self.pinned_host_key(&key.address).await?.ok_or_else(|| {
            StoreError::Unavailable(format!("pinned host key for {} vanished", key.address))
        })
    }

    async fn publish_live_counts(
        &self,
        replica: &str,
        counts: &[(String, u32)],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM live_counts WHERE replica = $1")
            .bind(replica)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for (binding_id, count) in counts.iter().filter(|(_, n)| *n > 0) {
            sqlx::query(
                "INSERT INTO live_counts (replica, binding_id, connections, updated_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(replica)
            .bind(binding_id.as_str())
            .bind(i64::from(*count))
            .bind(now.millis())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn refresh_live_counts(&self, replica: &str, now: Timestamp) -> Result<(), StoreError> {
        sqlx::query("UPDATE live_counts SET updated_at = $1 WHERE replica = $2")
            .bind(now.millis())
            .bind(replica)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn live_counts_elsewhere(
        &self,
        replica: &str,
        binding_ids: &[String],
        since: Timestamp,
    ) -> Result<HashMap<String, u32>, StoreError> {
        let mut sums = HashMap::new();
        if binding_ids.is_empty() {
            return Ok(sums);
        }
        // One query: the ids become $3, $4, … (a user has a handful of bindings).
        let list = (0..binding_ids.len())
            .map(|i| format!("${}", i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT binding_id, connections FROM live_counts \
             WHERE replica <> $1 AND updated_at >= $2 AND binding_id IN ({list})"
        );
        // Only numbered placeholders are formatted in; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(replica)
            .bind(since.millis());
        for id in binding_ids {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(self.pool()).await.map_err(db_err)? {
            let n = u32::try_from(rows::int(&row, "connections")?).unwrap_or(0);
            let sum = sums.entry(rows::text(&row, "binding_id")?).or_insert(0u32);
            *sum = sum.saturating_add(n);
        }
        Ok(sums)
    }

    async fn publish_live_sessions(
        &self,
        replica: &str,
        sessions: &[LiveSession],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.replace_live_sessions(replica, sessions, now).await
    }

    async fn live_sessions(&self, since: Timestamp) -> Result<Vec<LiveSession>, StoreError> {
        self.fresh_live_sessions(since).await
    }

    async fn end_live_session(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        self.end_connection(id, reason).await
    }

    async fn cut_off_user(&self, user_id: &str, reason: &str) -> Result<CutOff, StoreError> {
        self.cut_off(user_id, reason).await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let stale = now.minus(crate::LIVE_COUNTS_KEPT).millis();
        sqlx::query("DELETE FROM live_counts WHERE updated_at < $1")
            .bind(stale)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM live_sessions WHERE updated_at < $1")
            .bind(stale)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let candidates = sqlx::query(SELECT_BINDINGS_TO_PURGE)
            .bind(now.millis())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut events = Vec::new();
        for row in &candidates {
            let (b, s) = rows::binding(row)?;
            let Some(reason) = rules::purge_reason(&b, s.as_ref(), now) else {
                continue;
            };
            let gone = sqlx::query(
                "DELETE FROM client_bindings WHERE id = $1 AND issued_at = $2 RETURNING id",
            )
            .bind(b.id.as_str())
            .bind(b.issued_at.millis())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            if gone.is_some() {
                events.push(StoreEvent::BindingRevoked {
                    binding_id: b.id,
                    reason: reason.to_string(),
                });
            }
        }
        let ended = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 RETURNING id")
            .bind(now.millis())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut ended = ended
            .iter()
            .map(|r| rows::text(r, "id"))
            .collect::<Result<Vec<_>, _>>()?;
        ended.sort();
        events.extend(
            ended
                .into_iter()
                .map(|session_id| StoreEvent::SessionEnded {
                    session_id,
                    reason: rules::REASON_SESSION_EXPIRED.to_string(),
                }),
        );
        sqlx::query("DELETE FROM binding_requests WHERE expires_at <= $1")
            .bind(now.minus(rules::REQUEST_GRACE).millis())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // Outbox retention runs on the wall clock: it is plumbing, not domain state,
        // and a caller's test clock must not delete rows other replicas still need.
        let cutoff = tether_core::Timestamp(now_ms()).minus(rules::EVENT_RETENTION);
        sqlx::query("DELETE FROM events WHERE created_at < $1")
            .bind(cutoff.millis())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        self.commit(tx, events).await
    }
}
