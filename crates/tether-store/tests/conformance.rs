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

/// One `#[tokio::test]` per conformance check for a backend, in module `$backend`;
/// `$open` (an async expression) gives the store under test, or `None` to skip.
macro_rules! backend_checks {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;
            backend_checks!(@each $open; ping, sessions_crud, open_request_reuses_pending_code, drop_request_only_drops_pending, approve_creates_binding_and_decides_request, approve_refusals, deny, key_bound_to_other_user_via_client_binding, key_bound_to_other_user_via_identity_binding, invalid_binding_of_other_user_is_replaced, remember_creates_identity_binding, binding_expiry_is_min_of_ttl_and_session, binding_invalid_once_session_signed_out, sign_out_revokes_all_bindings_of_the_user, revoke_binding_checks_owner, revoke_identity_binding_checks_owner, touch_and_list_bindings, concurrent_approvals_for_one_key, pinned_host_keys, purge_expired, live_counts, session_refresh, live_sessions, end_live_session, cut_off_user);
        }
    };
    (@each $open:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(under_test) = $open.await else { return };
                conformance::checks::$check(Arc::clone(&under_test.store)).await;
            }
        )*

        /// Every check of the suite has its own test here.
        #[test]
        fn every_check_has_a_test() {
            let tested = [$(stringify!($check)),*];
            let suite: Vec<&str> = conformance::CHECKS.iter().map(|(n, _)| *n).collect();
            assert_eq!(suite, tested);
        }
    };
}

/// A store for one check, with what must live as long as it (a temp directory, a
/// database dropped afterwards).
struct UnderTest {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn memory() -> Option<UnderTest> {
    Some(UnderTest {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
    })
}

async fn sqlite() -> Option<UnderTest> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let store = SqlStore::open_sqlite(path.to_str().unwrap()).await.unwrap();
    Some(UnderTest {
        store: Arc::new(store),
        _dir: Some(dir),
    })
}

/// A fresh database on the test server per check, so checks that purge or count
/// cannot see each other's rows.
async fn postgres() -> Option<UnderTest> {
    let url = postgres_url()?;
    let name = format!("conformance_{}", random_suffix());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    // `name` is made here from digits and underscores only.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let db_url = match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("TETHER_TEST_POSTGRES_URL has no database part: {url}"),
    };
    let store = SqlStore::open_postgres(&db_url).await.unwrap();
    Some(UnderTest {
        store: Arc::new(store),
        _dir: None,
    })
}

fn random_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{nanos}", std::process::id())
}

backend_checks!(memory_backend, memory());
backend_checks!(sqlite_backend, sqlite());
backend_checks!(postgres_backend, postgres());

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
        n, 4,
        "one row per migration (init, live_counts, session_refresh, live_sessions), each applied once"
    );
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Issue 12: the database and its WAL and shared-memory files hold every session and
/// binding, so only tether's user may read them, whatever the umask; files left
/// 0644 by an older version are set back to 0600 on open.
#[tokio::test]
async fn sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let p = path.to_str().unwrap();
    let key = tether_store::PinnedHostKey {
        address: "10.0.0.5:22".into(),
        public_key: "ssh-ed25519 AAAA".into(),
    };
    let suffixed = |s: &str| dir.path().join(format!("tether.db{s}"));
    {
        let s = SqlStore::open_sqlite(p).await.unwrap();
        s.pin_host_key(&key).await.unwrap();
        for f in ["", "-wal", "-shm"] {
            assert!(suffixed(f).exists(), "tether.db{f} exists while open");
            assert_eq!(mode(&suffixed(f)), 0o600, "tether.db{f}");
        }
    }
    for f in ["", "-wal", "-shm"] {
        if suffixed(f).exists() {
            std::fs::set_permissions(suffixed(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let s = SqlStore::open_sqlite(&format!("sqlite://{p}"))
        .await
        .unwrap();
    s.pin_host_key(&tether_store::PinnedHostKey {
        address: "10.0.0.6:22".into(),
        public_key: "ssh-ed25519 BBBB".into(),
    })
    .await
    .unwrap();
    for f in ["", "-wal", "-shm"] {
        assert_eq!(mode(&suffixed(f)), 0o600, "tether.db{f} after reopening");
    }
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

/// The database goes away under a running store (a throwaway PostgreSQL server is
/// stopped): every call answers `Unavailable` within a bound, none panics, nothing
/// is admitted (no binding found, no sign-in request opened, no approval) — the
/// gateway above it refuses new connections — and once a server is back on the same
/// data the store works again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_fails_closed_while_the_database_is_down() {
    use tether_core::{BindingDetails, BindingRequest, RequestStatus, Timestamp, UserCode};
    if !tether_testkit::require("postgresql server", tether_testkit::Postgres::available()) {
        return;
    }
    let pg = tokio::task::spawn_blocking(tether_testkit::Postgres::start)
        .await
        .unwrap();
    let store = SqlStore::open_postgres(&pg.url).await.unwrap();
    store.ping().await.unwrap();
    let now = Timestamp(1_900_000_000);
    let request = |code: UserCode| BindingRequest {
        code,
        fingerprint: "SHA256:down".into(),
        key_type: "ssh-ed25519".into(),
        public_key: "ssh-ed25519 AAAA".into(),
        details: BindingDetails::default(),
        issued_at: now,
        expires_at: Timestamp(now.0 + 900),
        status: RequestStatus::Pending,
    };

    let stopper = Arc::new(pg);
    let pg = Arc::clone(&stopper);
    tokio::task::spawn_blocking(move || stopper.stop_server())
        .await
        .unwrap();
    let bounded = Duration::from_secs(60);
    let unavailable = |what: &str, r: Result<(), StoreError>| {
        assert!(
            matches!(r, Err(StoreError::Unavailable(_))),
            "{what} while the database is down: {r:?}"
        );
    };
    let r = tokio::time::timeout(bounded, store.ping())
        .await
        .expect("ping answers");
    unavailable("ping", r);
    let r = tokio::time::timeout(bounded, store.binding_for_key("SHA256:down"))
        .await
        .expect("binding_for_key answers");
    unavailable("binding_for_key", r.map(|_| ()));
    let r = tokio::time::timeout(
        bounded,
        store.open_request(request(UserCode::generate().unwrap()), now),
    )
    .await
    .expect("open_request answers");
    unavailable("open_request", r.map(|_| ()));
    let r = tokio::time::timeout(bounded, store.get_session("s"))
        .await
        .expect("get_session answers");
    unavailable("get_session", r.map(|_| ()));

    // Back up on the same data: the same store object works again.
    let starter = Arc::clone(&pg);
    tokio::task::spawn_blocking(move || starter.start_server())
        .await
        .unwrap();
    let back = tokio::time::timeout(bounded, async {
        loop {
            if store.ping().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        back.is_ok(),
        "the store did not recover after the database came back"
    );
    let opened = store
        .open_request(request(UserCode::generate().unwrap()), now)
        .await
        .unwrap();
    assert_eq!(opened.fingerprint, "SHA256:down");
    drop(pg);
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

/// `close` ends the store's background tasks within the process's grace (it
/// returns), after which other processes' changes no longer reach its feed, while
/// the store itself keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_close_ends_the_tailer() {
    use tether_core::{Identity, Session, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let a = SqlStore::open_sqlite(path.to_str().unwrap()).await.unwrap();
    let b = SqlStore::open_sqlite(path.to_str().unwrap()).await.unwrap();
    let mut feed = b.subscribe();
    tokio::time::timeout(Duration::from_secs(5), b.close())
        .await
        .expect("close returns once the tailer ended");
    let session = Session {
        id: "closed-test".into(),
        identity: Identity {
            subject: "u".into(),
            email: "alice@example.com".into(),
            name: None,
            claims: Default::default(),
        },
        issued_at: Timestamp(0),
        expires_at: Timestamp(i64::MAX / 4),
    };
    a.create_session(&session).await.unwrap();
    a.sign_out(&session.id, "signed out").await.unwrap();
    // The tailer polls every 200 ms: two seconds would carry the event if it ran.
    let heard = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(tether_store::StoreEvent::SessionEnded { .. }) = feed.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(heard.is_err(), "no tailer after close");
    b.ping().await.unwrap();
}
