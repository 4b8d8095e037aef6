//! Versioned, forward-only schema migrations, run at start-up.
//!
//! The SQL lives in `crates/tether-store/migrations/{sqlite,postgres}/NNNN_name.sql`
//! and is embedded at compile time. Each migration runs in its own transaction
//! together with its row in `schema_migrations`, under a lock (SQLite's write lock via
//! `BEGIN IMMEDIATE`, a PostgreSQL advisory lock) so replicas starting at the same
//! time apply each migration exactly once. A database whose schema is newer than this
//! build knows is refused as [`StoreError::Corrupt`] rather than guessed at.

use sqlx::AnyPool;

use super::rows::{db_err, int};
use super::Dialect;
use crate::StoreError;

/// One embedded migration.
#[derive(Debug)]
pub(crate) struct Migration {
    /// `NNNN` from the file name.
    pub version: i64,
    /// `name` from the file name.
    pub name: &'static str,
    /// The SQL script.
    pub sql: &'static str,
}

/// SQLite migrations, in order.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "live_counts",
        sql: include_str!("../../migrations/sqlite/0002_live_counts.sql"),
    },
    Migration {
        version: 3,
        name: "session_refresh",
        sql: include_str!("../../migrations/sqlite/0003_session_refresh.sql"),
    },
    Migration {
        version: 4,
        name: "live_sessions",
        sql: include_str!("../../migrations/sqlite/0004_live_sessions.sql"),
    },
];

/// PostgreSQL migrations, in order.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "live_counts",
        sql: include_str!("../../migrations/postgres/0002_live_counts.sql"),
    },
    Migration {
        version: 3,
        name: "session_refresh",
        sql: include_str!("../../migrations/postgres/0003_session_refresh.sql"),
    },
    Migration {
        version: 4,
        name: "live_sessions",
        sql: include_str!("../../migrations/postgres/0004_live_sessions.sql"),
    },
];

/// Arbitrary constant key of the advisory lock that serializes migrations.
const PG_MIGRATION_LOCK: i64 = 0x7465_7468_6572_0001;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
     version BIGINT PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Applies every migration the database has not seen yet.
pub(crate) async fn run(pool: &AnyPool, dialect: Dialect, now_ms: i64) -> Result<(), StoreError> {
    let migrations = match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    };
    let newest_known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    for m in migrations {
        let mut tx = match dialect {
            Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => pool.begin().await,
        }
        .map_err(db_err)?;
        if dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        sqlx::query(CREATE_TABLE)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let current = int(&row, "v")?;
        if current > newest_known {
            return Err(StoreError::Corrupt(format!(
                "database schema version {current} is newer than this tether knows \
                 ({newest_known}); refusing to use it"
            )));
        }
        let applied = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .is_some();
        if applied {
            tx.rollback().await.map_err(db_err)?;
            continue;
        }
        sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(|e| {
            StoreError::Unavailable(format!("migration {:04}_{} failed: {e}", m.version, m.name))
        })?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "store: applied schema migration"
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    /// Every file in the migrations directory is embedded, in version order, with
    /// versions 1, 2, 3, ... and no gaps.
    fn check(dir: &str, embedded: &[Migration]) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut files: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = embedded
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(
            files, expected,
            "migrations/{dir} and the embedded list differ"
        );
        for (i, m) in embedded.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
    }

    #[test]
    fn embedded_migrations_match_the_files() {
        check("sqlite", SQLITE);
        check("postgres", POSTGRES);
    }
}
