//! Runs the store conformance suite against every backend: memory, SQLite (a temp
//! file) and PostgreSQL when `TETHER_TEST_POSTGRES_URL` is set (required when `CI` is
//! set: the PostgreSQL tests then fail instead of skipping). Also checks that a store
//! whose database is missing or broken answers with errors, never panics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use tether_store::{conformance, MemoryStore, SqlStore, Store, StoreError};

fn postgres_url() -> Option<String> {
    match std::env::var("TETHER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but TETHER_TEST_POSTGRES_URL is not: the PostgreSQL backend must be tested")
        }
        _ => {
            eprintln!("TETHER_TEST_POSTGRES_URL not set: skipping the PostgreSQL backend");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend() {
    conformance::run_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let store = SqlStore::open_sqlite(path.to_str().unwrap()).await.unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_cross_process_feed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let a = SqlStore::open_sqlite(path.to_str().unwrap()).await.unwrap();
    let b = SqlStore::open_sqlite(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_ne!(a.origin(), b.origin());
    conformance::cross_process_feed(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_backend() {
    let Some(url) = postgres_url() else { return };
    let store = SqlStore::open_postgres(&url).await.unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_cross_process_feed() {
    let Some(url) = postgres_url() else { return };
    let a = SqlStore::open_postgres(&url).await.unwrap();
    let b = SqlStore::open_postgres(&url).await.unwrap();
    conformance::cross_process_feed(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test]
async fn open_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("by-kind.db");
    let file = tether_store::open("file", path.to_str().unwrap())
        .await
        .unwrap();
    file.ping().await.unwrap();
    tether_store::open("memory", "")
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    let err = tether_store::open("etcd", "")
        .await
        .err()
        .expect("unknown kind refused");
    assert!(err.to_string().contains("etcd"), "{err}");
}

#[tokio::test]
async fn reopening_sqlite_keeps_data_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let p = path.to_str().unwrap();
    let key = tether_store::PinnedHostKey {
        address: "10.0.0.5:22".into(),
        public_key: "ssh-ed25519 AAAA".into(),
    };
    {
        let s = SqlStore::open_sqlite(p).await.unwrap();
        s.pin_host_key(&key).await.unwrap();
    }
    let s = SqlStore::open_sqlite(p).await.unwrap();
    assert_eq!(s.pinned_host_key(&key.address).await.unwrap(), Some(key));
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{p}"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        n, 2,
        "one row per migration (init, live_counts), each applied once"
    );
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn sqlite_in_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("no-such-dir")
        .join("deeper")
        .join("tether.db");
    let r = SqlStore::open_sqlite(path.to_str().unwrap()).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = SqlStore::open_sqlite("").await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn postgres_on_a_closed_port_is_an_error() {
    // Bind then drop a listener to find a port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://tether:secret@127.0.0.1:{port}/tether");
    let r = tokio::time::timeout(Duration::from_secs(30), SqlStore::open_postgres(&url))
        .await
        .expect("gives up within the acquire timeout");
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
    let r = SqlStore::open_postgres("mysql://nope").await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let p = path.to_str().unwrap();
    let store = SqlStore::open_sqlite(p).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{p}"))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO sessions (id, user_id, email, identity_json, issued_at, expires_at) \
         VALUES ('bad', 'u', 'e', 'not json', 0, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO binding_requests (code, fingerprint, key_type, public_key, details_json, \
         issued_at, expires_at, status) VALUES ('short', 'SHA256:x', 't', 'k', '{}', 0, 1, 'pending')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let r = store.get_session("bad").await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
    let r = store.get_request("short").await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let p = path.to_str().unwrap();
    drop(SqlStore::open_sqlite(p).await.unwrap());
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{p}"))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let r = SqlStore::open_sqlite(p).await;
    assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
}

#[tokio::test]
async fn store_errors_after_the_database_vanishes() {
    // A store opened on a database that is then closed underneath it answers with
    // errors (the pool is closed here to simulate an unreachable database).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let store: Arc<dyn Store> =
        Arc::new(SqlStore::open_sqlite(path.to_str().unwrap()).await.unwrap());
    store.ping().await.unwrap();
    drop(dir); // removes the directory and the database files
               // SQLite keeps open files usable, so only check that nothing panics.
    let _ = store.get_session("x").await;
    let _ = store.purge_expired(tether_core::Timestamp(0)).await;
}

async fn assert_feed_closes_when_dropped(store: SqlStore) {
    let mut rx = store.subscribe();
    drop(store);
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await {
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => continue,
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "the tailer did not stop after the store was dropped"
    );
}

#[tokio::test]
async fn sqlite_tailer_stops_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let store = SqlStore::open_sqlite(path.to_str().unwrap()).await.unwrap();
    let clone = store.clone();
    drop(clone); // clones share the tailer; dropping one does not stop it
    assert_feed_closes_when_dropped(store).await;
}

#[tokio::test]
async fn postgres_tailer_stops_when_the_store_is_dropped() {
    let Some(url) = postgres_url() else { return };
    let store = SqlStore::open_postgres(&url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // let the listener connect
    assert_feed_closes_when_dropped(store).await;
}
