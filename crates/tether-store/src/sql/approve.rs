//! Approving a sign-in request (SPEC §5): one transaction that checks the request,
//! the deciding session and who the key is tied to, then writes the client binding
//! (replacing an invalid or own old one), the identity binding when remembered, and
//! the decision, with their events.
//!
//! Concurrency: on SQLite the transaction holds the write lock from its first
//! statement (`BEGIN IMMEDIATE`), so two approvals for one key run one after the
//! other and the second sees the first's binding. On PostgreSQL the request row is
//! locked `FOR UPDATE`, the session `FOR SHARE` (sign-out takes it `FOR UPDATE`) and
//! the key by an advisory lock; a UNIQUE violation on insert, which those locks
//! should make impossible, retries the whole attempt so the owner check runs again.

use std::time::Duration;

use tether_core::{Session, Timestamp};

use super::queries::{fetch_binding, SELECT_BINDING_BY_KEY, SELECT_IDENTITY_BY_KEY};
use super::rows::{self, db_err, is_unique_violation, to_json};
use super::SqlStore;
use crate::rules;
use crate::{Approval, DecideError, StoreError, StoreEvent};

/// Why one approval attempt failed.
enum ApproveFail {
    /// A rule or the store refused; final.
    Decide(DecideError),
    /// A concurrent writer won a UNIQUE race; the attempt may be retried.
    Conflict(String),
}

impl From<DecideError> for ApproveFail {
    fn from(e: DecideError) -> Self {
        Self::Decide(e)
    }
}

impl From<StoreError> for ApproveFail {
    fn from(e: StoreError) -> Self {
        Self::Decide(DecideError::Store(e))
    }
}

/// How many times an approval that lost a UNIQUE race is retried.
const APPROVE_ATTEMPTS: u32 = 3;

impl SqlStore {
    /// `Store::approve_request`: retries an attempt that lost a UNIQUE race.
    pub(super) async fn approve(
        &self,
        code: &str,
        session: &Session,
        remember: bool,
        max_ttl: Duration,
        now: Timestamp,
    ) -> Result<Approval, DecideError> {
        let mut attempt = 1;
        loop {
            match self
                .try_approve(code, session, remember, max_ttl, now)
                .await
            {
                Ok(a) => return Ok(a),
                Err(ApproveFail::Decide(e)) => return Err(e),
                Err(ApproveFail::Conflict(e)) if attempt < APPROVE_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "store: approval lost a race; retrying");
                    attempt += 1;
                }
                Err(ApproveFail::Conflict(e)) => {
                    return Err(DecideError::Store(StoreError::Unavailable(e)))
                }
            }
        }
    }

    async fn try_approve(
        &self,
        code: &str,
        session: &Session,
        remember: bool,
        max_ttl: Duration,
        now: Timestamp,
    ) -> Result<Approval, ApproveFail> {
        let mut tx = self.begin().await?;
        let req = self
            .request_for_update(&mut tx, code)
            .await?
            .ok_or(DecideError::NotFound)?;
        rules::check_decidable(&req, now)?;
        let stored = self.session_locked(&mut tx, &session.id, false).await?;
        let session = rules::check_session(stored, now)?;
        let user = session.user_id().to_string();

        self.lock_key(&mut tx, &req.fingerprint).await?;
        let existing = fetch_binding(&mut tx, SELECT_BINDING_BY_KEY, &req.fingerprint).await?;
        let identity = sqlx::query(SELECT_IDENTITY_BY_KEY)
            .bind(req.fingerprint.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(rows::identity)
            .transpose()?;
        rules::check_owner(now, existing.as_ref(), identity.as_ref(), &user)?;

        // Replace whatever (invalid, or the same user's) binding the key had.
        sqlx::query("DELETE FROM client_bindings WHERE fingerprint = $1")
            .bind(req.fingerprint.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let binding = rules::new_binding(&req, &session, max_ttl, now);
        sqlx::query(
            "INSERT INTO client_bindings (id, fingerprint, user_id, email, key_type, session_id, \
             issued_at, expires_at, details_json, last_used) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        )
        .bind(binding.id.as_str())
        .bind(binding.fingerprint.as_str())
        .bind(binding.user_id.as_str())
        .bind(binding.email.as_str())
        .bind(binding.key_type.as_str())
        .bind(binding.session_id.as_str())
        .bind(binding.issued_at.millis())
        .bind(binding.expires_at.millis())
        .bind(to_json(&binding.details)?)
        .execute(&mut *tx)
        .await
        .map_err(conflict_or_store)?;
        if remember && identity.is_none() {
            let ib = rules::new_identity_binding(&req, &session, now);
            sqlx::query(
                "INSERT INTO identity_bindings (fingerprint, user_id, email, key_type, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(ib.fingerprint.as_str())
            .bind(ib.user_id.as_str())
            .bind(ib.email.as_str())
            .bind(ib.key_type.as_str())
            .bind(ib.created_at.millis())
            .execute(&mut *tx)
            .await
            .map_err(conflict_or_store)?;
        }
        sqlx::query(
            "UPDATE binding_requests SET status = 'approved', decided_by = $2, binding_id = $3 \
             WHERE code = $1",
        )
        .bind(code)
        .bind(user.as_str())
        .bind(binding.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;

        let events = vec![
            StoreEvent::BindingCreated {
                binding_id: binding.id.clone(),
                user_id: user,
            },
            StoreEvent::RequestDecided {
                code: code.to_string(),
            },
        ];
        self.commit(tx, events).await?;
        Ok(Approval {
            binding,
            remembered: remember,
        })
    }
}

fn conflict_or_store(e: sqlx::Error) -> ApproveFail {
    if is_unique_violation(&e) {
        ApproveFail::Conflict(e.to_string())
    } else {
        ApproveFail::Decide(DecideError::Store(db_err(e)))
    }
}
