//! Identity refresh bookkeeping on `sessions` (`refresh_token`, `refresh_due`,
//! `refresh_failing_since`): which sessions are due, claimed by one replica at a
//! time through a compare-and-set on `refresh_due` (no row locks, the same SQL on
//! both dialects), and the refreshed identity written with its event.

use sqlx::any::AnyRow;
use sqlx::Row;
use tether_core::{Identity, Timestamp};

use super::rows::{self, db_err, to_json};
use super::SqlStore;
use crate::{RefreshClaim, StoreError, StoreEvent};

fn opt_int(row: &AnyRow, col: &str) -> Result<Option<i64>, StoreError> {
    row.try_get::<Option<i64>, _>(col)
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

impl SqlStore {
    pub(super) async fn set_refresh(
        &self,
        session_id: &str,
        token: &str,
        due: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET refresh_token = $1, refresh_due = $2, \
             refresh_failing_since = NULL WHERE id = $3",
        )
        .bind(token)
        .bind(due.millis())
        .bind(session_id)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(())
    }

    pub(super) async fn claim_refreshes(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefreshClaim>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let due = sqlx::query(
            "SELECT id, user_id, refresh_token, refresh_due, refresh_failing_since \
             FROM sessions WHERE refresh_token IS NOT NULL AND refresh_due <= $1 \
             AND expires_at > $1 ORDER BY refresh_due LIMIT $2",
        )
        .bind(now.millis())
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(db_err)?;
        let mut claimed = Vec::with_capacity(due.len());
        for row in &due {
            let id = rows::text(row, "id")?;
            let was_due = opt_int(row, "refresh_due")?;
            // Compare-and-set: only the caller that moves `refresh_due` on owns it.
            let won = sqlx::query(
                "UPDATE sessions SET refresh_due = $1 WHERE id = $2 AND refresh_due = $3",
            )
            .bind(lease_until.millis())
            .bind(id.as_str())
            .bind(was_due)
            .execute(self.pool())
            .await
            .map_err(db_err)?
            .rows_affected()
                == 1;
            if won {
                claimed.push(RefreshClaim {
                    session_id: id,
                    user_id: rows::text(row, "user_id")?,
                    token: rows::text(row, "refresh_token")?,
                    failing_since: opt_int(row, "refresh_failing_since")?.map(Timestamp),
                });
            }
        }
        Ok(claimed)
    }

    pub(super) async fn refreshed(
        &self,
        session_id: &str,
        identity: &Identity,
        token: Option<&str>,
        next_due: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let user = sqlx::query(
            "UPDATE sessions SET identity_json = $1, email = $2, \
             refresh_token = COALESCE($3, refresh_token), refresh_due = $4, \
             refresh_failing_since = NULL WHERE id = $5 RETURNING user_id",
        )
        .bind(to_json(identity)?)
        .bind(identity.email.as_str())
        .bind(token)
        .bind(next_due.millis())
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(user) = user else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(false);
        };
        let user = rows::text(&user, "user_id")?;
        for sql in [
            "UPDATE client_bindings SET email = $1 WHERE user_id = $2 AND email <> $1",
            "UPDATE identity_bindings SET email = $1 WHERE user_id = $2 AND email <> $1",
        ] {
            sqlx::query(sql)
                .bind(identity.email.as_str())
                .bind(user.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        self.commit(
            tx,
            vec![StoreEvent::SessionRefreshed {
                session_id: session_id.to_string(),
            }],
        )
        .await?;
        Ok(true)
    }

    pub(super) async fn refresh_failed(
        &self,
        session_id: &str,
        now: Timestamp,
        retry_at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET refresh_failing_since = COALESCE(refresh_failing_since, $1), \
             refresh_due = $2 WHERE id = $3 AND refresh_token IS NOT NULL",
        )
        .bind(now.millis())
        .bind(retry_at.millis())
        .bind(session_id)
        .execute(self.pool())
        .await
        .map_err(db_err)?;
        Ok(())
    }
}
