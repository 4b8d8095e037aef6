//! The operator console's tables and actions: `live_sessions` (each replica's
//! authenticated SSH connections, replaced as a whole by their replica, read by
//! everyone), ending one connection wherever it lives (an outbox event), and
//! cutting a user off (every binding, remembered key and web session, one
//! transaction).

use sqlx::any::AnyRow;
use sqlx::Row;
use tether_core::connection::LiveSession;
use tether_core::Timestamp;

use super::rows::{self, db_err};
use super::SqlStore;
use crate::{CutOff, StoreError, StoreEvent};

/// Columns of `live_sessions`, in insert order.
const COLUMNS: &str = "id, replica, user_id, email, session_id, binding_id, fingerprint, \
     route, login, source, client_version, started_at, bytes_in, bytes_out, last_active, \
     updated_at";

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One text column of every row, sorted.
fn sorted(found: &[AnyRow], col: &str) -> Result<Vec<String>, StoreError> {
    let mut v = found
        .iter()
        .map(|r| rows::text(r, col))
        .collect::<Result<Vec<_>, _>>()?;
    v.sort();
    Ok(v)
}

fn live_session(row: &AnyRow) -> Result<LiveSession, StoreError> {
    let unsigned = |col: &str| rows::int(row, col).map(|n| u64::try_from(n).unwrap_or(0));
    Ok(LiveSession {
        id: rows::text(row, "id")?,
        replica: rows::text(row, "replica")?,
        user_id: rows::text(row, "user_id")?,
        email: rows::text(row, "email")?,
        session_id: rows::text(row, "session_id")?,
        binding_id: rows::text(row, "binding_id")?,
        fingerprint: rows::text(row, "fingerprint")?,
        route: row
            .try_get::<Option<String>, _>("route")
            .map_err(|e| StoreError::Corrupt(format!("column route: {e}")))?,
        login: rows::text(row, "login")?,
        source: rows::text(row, "source")?,
        client_version: rows::text(row, "client_version")?,
        started_at: Timestamp(rows::int(row, "started_at")?),
        bytes_in: unsigned("bytes_in")?,
        bytes_out: unsigned("bytes_out")?,
        last_active: Timestamp(rows::int(row, "last_active")?),
    })
}

impl SqlStore {
    pub(super) async fn replace_live_sessions(
        &self,
        replica: &str,
        sessions: &[LiveSession],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM live_sessions WHERE replica = $1")
            .bind(replica)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let insert = format!(
            "INSERT INTO live_sessions ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        for s in sessions {
            sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                .bind(s.id.as_str())
                .bind(replica)
                .bind(s.user_id.as_str())
                .bind(s.email.as_str())
                .bind(s.session_id.as_str())
                .bind(s.binding_id.as_str())
                .bind(s.fingerprint.as_str())
                .bind(s.route.as_deref())
                .bind(s.login.as_str())
                .bind(s.source.as_str())
                .bind(s.client_version.as_str())
                .bind(s.started_at.millis())
                .bind(count(s.bytes_in))
                .bind(count(s.bytes_out))
                .bind(s.last_active.millis())
                .bind(now.millis())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    pub(super) async fn fresh_live_sessions(
        &self,
        since: Timestamp,
    ) -> Result<Vec<LiveSession>, StoreError> {
        let select = format!(
            "SELECT {COLUMNS} FROM live_sessions WHERE updated_at >= $1 \
             ORDER BY started_at, id"
        );
        sqlx::query(sqlx::AssertSqlSafe(select))
            .bind(since.millis())
            .fetch_all(self.pool())
            .await
            .map_err(db_err)?
            .iter()
            .map(live_session)
            .collect()
    }

    pub(super) async fn end_connection(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        let tx = self.begin().await?;
        let ev = StoreEvent::ConnectionEnded {
            connection_id: id.to_string(),
            reason: reason.to_string(),
        };
        self.commit(tx, vec![ev]).await
    }

    pub(super) async fn cut_off(&self, user_id: &str, reason: &str) -> Result<CutOff, StoreError> {
        let mut tx = self.begin().await?;
        let bindings = sqlx::query("DELETE FROM client_bindings WHERE user_id = $1 RETURNING id")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let client_bindings = sorted(&bindings, "id")?;
        let remembered =
            sqlx::query("DELETE FROM identity_bindings WHERE user_id = $1 RETURNING fingerprint")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?;
        let identity_bindings = sorted(&remembered, "fingerprint")?;
        let sessions = sqlx::query("DELETE FROM sessions WHERE user_id = $1 RETURNING id")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let sessions = sorted(&sessions, "id")?;
        let mut events: Vec<StoreEvent> = client_bindings
            .iter()
            .map(|id| StoreEvent::BindingRevoked {
                binding_id: id.clone(),
                reason: reason.to_string(),
            })
            .collect();
        events.extend(
            identity_bindings
                .iter()
                .map(|fp| StoreEvent::IdentityBindingRemoved {
                    fingerprint: fp.clone(),
                }),
        );
        events.extend(sessions.iter().map(|id| StoreEvent::SessionEnded {
            session_id: id.clone(),
            reason: reason.to_string(),
        }));
        self.commit(tx, events).await?;
        Ok(CutOff {
            client_bindings,
            identity_bindings,
            sessions,
        })
    }
}
