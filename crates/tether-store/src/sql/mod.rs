//! [`SqlStore`]: the `file` (embedded SQLite) and `postgres` backends.
//!
//! Both dialects share one implementation on `sqlx::Any`; the SQL is written once with
//! `$N` placeholders (SQLite accepts them too) and the few places where the dialects
//! differ branch on [`Dialect`]: how a write transaction starts (`BEGIN IMMEDIATE` on
//! SQLite, so two writers never both pass a check; row locks and transaction-scoped
//! advisory locks on PostgreSQL), and how other processes learn about changes.
//!
//! Every mutating transaction also appends its [`StoreEvent`]s to the `events` outbox
//! table, tagged with this store instance's random `origin`, and publishes them on the
//! local [`Feed`] after commit. A background tailer (see `tailer`) reads outbox rows
//! of other origins and republishes them, so a revocation made by another process or
//! replica reaches this one's connection registry. On PostgreSQL a trigger sends
//! `NOTIFY tether_events` at commit and a `PgListener` wakes the tailer at once; the
//! periodic poll stays as the safety net.
//!
//! This module must not depend on russh or axum; the binding rules come from
//! `tether-core` through `crate::rules`.

mod approve;
mod live;
mod migrate;
mod queries;
mod refresh;
mod rows;
mod store_impl;
mod tailer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, ConnectOptions, Transaction};
use tether_core::{Clock, SystemClock};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::{Feed, StoreError, StoreEvent};
use rows::db_err;

/// Which SQL database a [`SqlStore`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Embedded SQLite in WAL mode (`file` storage): one node.
    Sqlite,
    /// PostgreSQL (`postgres` storage): several replicas share it.
    Postgres,
}

/// How long an operation waits for a pooled connection before the store is reported
/// unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-connection SQLite settings. `busy_timeout` makes writers queue behind the
/// write lock instead of failing at once.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; \
     PRAGMA busy_timeout = 5000; \
     PRAGMA foreign_keys = ON; \
     PRAGMA synchronous = NORMAL;";

/// Key of the advisory lock taken just before a PostgreSQL transaction writes its
/// outbox rows, so outbox ids become visible in commit order and the tailer (which
/// reads `id > last`) can never skip a row that commits late.
const PG_OUTBOX_LOCK: i64 = 0x7465_7468_6572_0002;

/// The SQL backends. Cheap to clone (all clones share one pool, one feed and one
/// tailer); the tailer stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    dialect: Dialect,
    /// Random id of this store instance, written into every outbox row it appends.
    origin: String,
    feed: Feed,
    /// Cancels the tailer (and the PostgreSQL listener) on drop.
    _tailer: DropGuard,
    /// The same token, for [`crate::Store::close`].
    tailer_cancel: CancellationToken,
    /// The tailer and listener tasks.
    tasks: TaskTracker,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.inner.dialect)
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Opens (creating if missing) the SQLite database at `path_or_url` — a file path,
    /// or a `sqlite:` URL — in WAL mode with a busy timeout and foreign keys on, runs
    /// the migrations and starts the outbox tailer (polling every 200 ms). The
    /// database file is created with mode 0600 (SQLite gives its `-wal` and `-shm`
    /// files the database file's mode) and an existing one that group or others may
    /// open is set back to 0600, with its `-wal`, `-shm` and `-journal` files.
    pub async fn open_sqlite(path_or_url: &str) -> Result<Self, StoreError> {
        install_drivers();
        let (opts, file) = sqlite_options(path_or_url)?;
        if let Some(file) = file {
            private_sqlite_files(&file)?;
        }
        let pool = pool_options()
            .max_connections(8)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::raw_sql(SQLITE_PRAGMAS).execute(&mut *conn).await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening SQLite {path_or_url:?}: {e}")))?;
        Self::start(pool, Dialect::Sqlite, None).await
    }

    /// Connects to PostgreSQL at `url` (`postgres://user:pass@host:port/db`), runs
    /// the migrations and starts the outbox tailer, woken by `LISTEN tether_events`
    /// and polling every 500 ms as a safety net.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        install_drivers();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Unavailable(
                "postgres connection string must start with postgres:// or postgresql://".into(),
            ));
        }
        let opts = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("postgres connection string: {e}")))?
            .disable_statement_logging();
        let pool = pool_options()
            .max_connections(10)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
        Self::start(pool, Dialect::Postgres, Some(url.to_string())).await
    }

    async fn start(
        pool: AnyPool,
        dialect: Dialect,
        listen_url: Option<String>,
    ) -> Result<Self, StoreError> {
        migrate::run(&pool, dialect, now_ms()).await?;
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS last FROM events")
            .fetch_one(&pool)
            .await
            .map_err(db_err)?;
        let last = rows::int(&row, "last")?;
        let origin = random_origin()?;
        let feed = Feed::new();
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tailer::spawn(
            &tasks,
            tailer::Tailer {
                pool: pool.clone(),
                dialect,
                origin: origin.clone(),
                feed: feed.clone(),
                last,
                cancel: cancel.clone(),
                listen_url,
            },
        );
        tracing::debug!(?dialect, %origin, last_event = last, "store: opened");
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                dialect,
                origin,
                feed,
                tailer_cancel: cancel.clone(),
                _tailer: cancel.drop_guard(),
                tasks,
            }),
        })
    }

    /// Which database this store talks to.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// This instance's outbox origin id (diagnostics).
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// Starts a write transaction: on SQLite it takes the database write lock at once
    /// (`BEGIN IMMEDIATE`), so a check made inside it cannot be invalidated by another
    /// writer before commit.
    async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        match self.inner.dialect {
            Dialect::Sqlite => self.pool().begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool().begin().await,
        }
        .map_err(db_err)
    }

    /// Appends `events` to the outbox inside `tx`, commits, then publishes them on the
    /// local feed. Nothing is published if the commit fails.
    async fn commit(
        &self,
        mut tx: Transaction<'static, Any>,
        events: Vec<StoreEvent>,
    ) -> Result<(), StoreError> {
        let mut encoded = Vec::with_capacity(events.len());
        for ev in &events {
            if let Some(e) = rows::encode_event(ev)? {
                encoded.push(e);
            }
        }
        if !encoded.is_empty() {
            if self.inner.dialect == Dialect::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_OUTBOX_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            let created_at = now_ms();
            for (kind, payload) in encoded {
                sqlx::query(
                    "INSERT INTO events (origin, kind, payload_json, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(self.inner.origin.as_str())
                .bind(kind)
                .bind(payload)
                .bind(created_at)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        for ev in events {
            self.inner.feed.publish(ev);
        }
        Ok(())
    }
}

fn pool_options() -> PoolOptions<Any> {
    AnyPoolOptions::new()
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

/// Registers the SQLite and PostgreSQL drivers with `sqlx::Any`. Unlike
/// `install_default_drivers` this never panics; if some other code installed drivers
/// first, connecting reports a missing driver as an error instead.
fn install_drivers() {
    let _ = sqlx::any::install_drivers(&[sqlx::postgres::any::DRIVER, sqlx::sqlite::any::DRIVER]);
}

/// Connection options for a SQLite file path or `sqlite:` URL, always creating the
/// file if missing, and the database file on disk (`None`: in memory). Relative
/// paths are made absolute against the working directory.
fn sqlite_options(
    path_or_url: &str,
) -> Result<(AnyConnectOptions, Option<std::path::PathBuf>), StoreError> {
    let bad = |e: String| StoreError::Unavailable(format!("SQLite location {path_or_url:?}: {e}"));
    let opts = if path_or_url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(path_or_url).map_err(|e| bad(e.to_string()))?
    } else {
        if path_or_url.is_empty() {
            return Err(bad("empty path".into()));
        }
        let path = std::path::absolute(path_or_url).map_err(|e| bad(e.to_string()))?;
        SqliteConnectOptions::new().filename(path)
    };
    let opts = opts.create_if_missing(true);
    let url = opts.to_url_lossy();
    let in_memory = url.query_pairs().any(|(k, v)| k == "mode" && v == "memory")
        || opts.get_filename().to_string_lossy().starts_with("file:");
    let file = (!in_memory).then(|| opts.get_filename().to_path_buf());
    let any = AnyConnectOptions::from_url(&url)
        .map_err(|e| bad(e.to_string()))?
        .disable_statement_logging();
    Ok((any, file))
}

/// The database, its WAL, shared-memory index and rollback journal hold every
/// session, request and binding: only tether's own user may read them. Creates
/// `db` with mode 0600 when missing (SQLite then creates `-wal` and `-shm` with the
/// same mode) and sets any of the four that group or others may open back to 0600.
fn private_sqlite_files(db: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |what: &str, p: &std::path::Path, e: std::io::Error| {
        StoreError::Unavailable(format!("SQLite {}: {what}: {e}", p.display()))
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail("cannot create", db, e)),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = std::path::PathBuf::from(name);
        let mode = match std::fs::metadata(&path) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail("cannot inspect", &path, e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| fail("cannot set mode 0600", &path, e))?;
            tracing::warn!(
                path = %path.display(),
                "store: {} was mode {:04o}; set to 0600",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// `<pid>-<16 random hex digits>`: unique per store instance, so two stores in one
/// process (tests) still see each other's changes through the outbox.
fn random_origin() -> Result<String, StoreError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StoreError::Unavailable(format!("random source: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{hex}", std::process::id()))
}

/// Wall-clock milliseconds, for outbox bookkeeping only (domain expiry always uses
/// the `now` the caller passes in).
fn now_ms() -> i64 {
    SystemClock.now().millis()
}
