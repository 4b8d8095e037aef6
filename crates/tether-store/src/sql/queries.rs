//! The SQL text shared by the store methods and the locking helpers that differ per
//! dialect: on PostgreSQL rows are locked `FOR UPDATE` / `FOR SHARE` and work on one
//! key is serialized by a transaction-scoped advisory lock; on SQLite the write
//! transaction (`BEGIN IMMEDIATE`) already excludes every other writer.

use sqlx::AnyConnection;
use tether_core::{BindingRequest, ClientBinding, Session};

use super::rows::{self, binding_select, db_err, identity_cols, request_cols, session_cols};
use super::{Dialect, SqlStore};
use crate::StoreError;

pub(super) const SELECT_SESSION: &str =
    concat!("SELECT ", session_cols!(), " FROM sessions WHERE id = $1");
pub(super) const SELECT_SESSION_FOR_SHARE: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM sessions WHERE id = $1 FOR SHARE"
);
pub(super) const SELECT_SESSION_FOR_UPDATE: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM sessions WHERE id = $1 FOR UPDATE"
);
pub(super) const SELECT_REQUEST: &str = concat!(
    "SELECT ",
    request_cols!(),
    " FROM binding_requests WHERE code = $1"
);
pub(super) const SELECT_REQUEST_FOR_UPDATE: &str = concat!(
    "SELECT ",
    request_cols!(),
    " FROM binding_requests WHERE code = $1 FOR UPDATE"
);
pub(super) const SELECT_PENDING_FOR_KEY: &str = concat!(
    "SELECT ",
    request_cols!(),
    " FROM binding_requests WHERE fingerprint = $1 AND status = 'pending' AND expires_at > $2 \
     ORDER BY issued_at DESC LIMIT 1"
);
pub(super) const SELECT_BINDING_BY_KEY: &str =
    concat!(binding_select!(), "WHERE b.fingerprint = $1");
pub(super) const SELECT_BINDING_BY_ID: &str = concat!(binding_select!(), "WHERE b.id = $1");
pub(super) const SELECT_BINDINGS_ALL: &str =
    concat!(binding_select!(), "ORDER BY b.issued_at DESC, b.id");
pub(super) const SELECT_BINDINGS_OF_USER: &str = concat!(
    binding_select!(),
    "WHERE b.user_id = $1 ORDER BY b.issued_at DESC, b.id"
);
pub(super) const SELECT_BINDINGS_TO_PURGE: &str = concat!(
    binding_select!(),
    "WHERE b.expires_at <= $1 OR s.id IS NULL OR s.expires_at <= $1 ORDER BY b.id"
);
pub(super) const SELECT_IDENTITY_BY_KEY: &str = concat!(
    "SELECT ",
    identity_cols!(),
    " FROM identity_bindings WHERE fingerprint = $1"
);
pub(super) const SELECT_IDENTITIES_ALL: &str = concat!(
    "SELECT ",
    identity_cols!(),
    " FROM identity_bindings ORDER BY created_at DESC, fingerprint"
);
pub(super) const SELECT_IDENTITIES_OF_USER: &str = concat!(
    "SELECT ",
    identity_cols!(),
    " FROM identity_bindings WHERE user_id = $1 ORDER BY created_at DESC, fingerprint"
);

impl SqlStore {
    /// Serializes transactions about one key (PostgreSQL; SQLite already holds the
    /// write lock).
    pub(super) async fn lock_key(
        &self,
        conn: &mut AnyConnection,
        fingerprint: &str,
    ) -> Result<(), StoreError> {
        if self.inner.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(fingerprint)
                .execute(conn)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// The request, locked for the rest of the transaction on PostgreSQL.
    pub(super) async fn request_for_update(
        &self,
        conn: &mut AnyConnection,
        code: &str,
    ) -> Result<Option<BindingRequest>, StoreError> {
        let sql = match self.inner.dialect {
            Dialect::Sqlite => SELECT_REQUEST,
            Dialect::Postgres => SELECT_REQUEST_FOR_UPDATE,
        };
        let row = sqlx::query(sql)
            .bind(code)
            .fetch_optional(conn)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::request).transpose()
    }

    /// A session, locked against concurrent sign-out (`exclusive = false`) or for
    /// sign-out itself (`exclusive = true`) on PostgreSQL.
    pub(super) async fn session_locked(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        exclusive: bool,
    ) -> Result<Option<Session>, StoreError> {
        let sql = match (self.inner.dialect, exclusive) {
            (Dialect::Sqlite, _) => SELECT_SESSION,
            (Dialect::Postgres, false) => SELECT_SESSION_FOR_SHARE,
            (Dialect::Postgres, true) => SELECT_SESSION_FOR_UPDATE,
        };
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::session).transpose()
    }
}

/// The binding (and its session) selected by `sql` with one parameter.
pub(super) async fn fetch_binding(
    conn: &mut AnyConnection,
    sql: &'static str,
    key: &str,
) -> Result<Option<(ClientBinding, Option<Session>)>, StoreError> {
    let row = sqlx::query(sql)
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(rows::binding).transpose()
}
