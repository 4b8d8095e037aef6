//! Session recordings in the browser (issue 14) through the router, on fixture
//! `.cast` files in a temporary directory: owners see and play their own, others
//! get 403 (and `recording_refused`), administrators see everyone's and filter,
//! bad ids are 404, files that are not recordings are skipped, the cast is
//! streamed as `application/x-asciicast`, and the player's files are served.

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::{header, StatusCode};
use tether_core::connection::LiveSession;
use tether_core::recording::{event_line, recording_id, CastHeader, CastKind, CastMeta};
use tether_core::Timestamp;

use super::support::*;

/// 2026-12-08T01:02:03Z.
const DAY1: i64 = 1_796_691_723_000;
/// One day later.
const DAY2: i64 = DAY1 + 86_400_000;

/// Writes a recording of `user`'s (email `<user>@example.com`) on `route`, live
/// session `session`, starting at `started_ms`, whose output is `text`; returns
/// its id and the file's contents.
fn write_cast(
    dir: &Path,
    user: &str,
    route: &str,
    session: &str,
    started_ms: i64,
    text: &str,
) -> (String, String) {
    let id = recording_id(Timestamp(started_ms), session, 0);
    let header = CastHeader::new(
        CastMeta {
            id: id.clone(),
            session_id: session.into(),
            route: route.into(),
            login: "deploy".into(),
            user_id: user.into(),
            email: format!("{user}@example.com"),
            fingerprint: "SHA256:k".into(),
            kind: CastKind::Shell,
            command: String::new(),
            input: false,
            started_ms,
        },
        80,
        24,
        "xterm-256color",
    );
    let body = format!(
        "{}{}{}{}",
        header.line(),
        event_line(100, 'o', "$ "),
        event_line(600, 'o', text),
        event_line(900, 'm', "exit 0"),
    );
    std::fs::write(dir.join(format!("{id}.cast")), &body).unwrap();
    (id, body)
}

/// An app where alice (by email) is the only administrator.
fn admin_config() -> tether_core::config::Config {
    let mut c = config("http://127.0.0.1:9", "http://127.0.0.1:9/dev-idp");
    let yaml = tether_core::config::yaml::parse_yaml(
        "- allow:\n    or:\n      - email:\n          is: alice@example.com\n",
    )
    .unwrap();
    c.administrators = Some(tether_core::policy::parse_policy(&yaml).unwrap());
    c
}

fn app(dir: &Path) -> TestApp {
    TestApp::build_recorded(admin_config(), None, Some(dir.to_path_buf()))
}

/// The `audit` lines emitted on this thread while the guard lives.
struct Audit(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Audit {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        m.target() == "audit"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Message(String::new());
        e.record(&mut m);
        self.0.lock().unwrap().push(m.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn capture_audit() -> (Arc<Mutex<Vec<String>>>, tracing::subscriber::DefaultGuard) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let guard = tracing::subscriber::set_default(Audit(lines.clone()));
    (lines, guard)
}

fn taken(lines: &Mutex<Vec<String>>) -> Vec<serde_json::Value> {
    std::mem::take(&mut *lines.lock().unwrap())
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn owners_list_and_play_their_own_and_others_get_403() {
    let dir = tempfile::tempdir().unwrap();
    let (mine, body) = write_cast(dir.path(), "bob", "prod", "r1-1", DAY1, "hello from bob");
    let (carols, _) = write_cast(dir.path(), "carol", "prod", "r1-2", DAY2, "carol was here");
    let t = app(dir.path());
    let (_, bob) = t.sign_in("bob").await;
    let (_, carol) = t.sign_in("carol").await;
    let (audit, _guard) = capture_audit();

    let (status, page) = read(t.get("/.tether/recordings", Some(&bob)).await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!("data-recording-id=\"{mine}\"")),
        "{page}"
    );
    assert!(!page.contains(&carols), "{page}");
    assert!(!page.contains("recordings-filter"), "no filters for a user");
    assert!(page.contains(&format!("href=\"/.tether/recordings/{mine}\"")));

    let res = t
        .get(&format!("/.tether/recordings/{mine}"), Some(&bob))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(csp, crate::PLAYER_CSP);
    let page = body_text(res).await;
    assert!(
        page.contains(&format!("data-cast=\"/.tether/recordings/{mine}/cast\"")),
        "{page}"
    );
    assert!(page.contains("/.tether/assets/asciinema-player.min.js?v=3.18.0"));
    assert!(page.contains("/.tether/assets/play.js"));
    assert!(page.contains("id=\"speed\""));

    let res = t
        .get(&format!("/.tether/recordings/{mine}/cast"), Some(&bob))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "application/x-asciicast"
    );
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(body_text(res).await, body);

    let events = taken(&audit);
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e["event"], "recording_viewed", "{e}");
        assert_eq!(e["recording"], mine.as_str());
        assert_eq!(e["owner"], "bob@example.com");
        assert_eq!(e["by"], "bob@example.com");
    }

    // Carol may not see bob's: 403 on both, each an audit event, nothing shown.
    for uri in [
        format!("/.tether/recordings/{mine}"),
        format!("/.tether/recordings/{mine}/cast"),
    ] {
        let (status, page) = read(t.get(&uri, Some(&carol)).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert!(page.contains("belongs to another user"), "{page}");
        assert!(!page.contains("hello from bob"));
    }
    let events = taken(&audit);
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e["event"], "recording_refused", "{e}");
        assert_eq!(e["recording"], mine.as_str());
        assert_eq!(e["user_id"], "carol");
        assert_eq!(e["email"], "carol@example.com");
    }
    // Filters do not widen a user's view.
    let (_, page) = read(
        t.get("/.tether/recordings?user=bob&session=r1-1", Some(&carol))
            .await,
    )
    .await;
    assert!(
        page.contains("no-recordings") && !page.contains(&mine),
        "{page}"
    );
}

/// Which of `ids` the list page with query `q` shows, and the page.
async fn shown(t: &TestApp, cookie: &str, q: &str, ids: [&str; 3]) -> (Vec<String>, String) {
    let uri = format!("/.tether/recordings{q}");
    let (status, page) = read(t.get(&uri, Some(cookie)).await).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {page}");
    let shown = ids
        .into_iter()
        .filter(|id| page.contains(&format!("data-recording-id=\"{id}\"")))
        .map(String::from)
        .collect();
    (shown, page)
}

#[tokio::test]
async fn administrators_see_everyone_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let (bob1, _) = write_cast(dir.path(), "bob", "prod", "r1-1", DAY1, "one");
    let (bob2, _) = write_cast(dir.path(), "bob", "db", "r1-1", DAY1 + 5_000, "two");
    let (carol1, _) = write_cast(dir.path(), "carol", "db", "r2-5", DAY2, "three");
    let t = app(dir.path());
    let (_, alice) = t.sign_in("alice").await;
    let ids = [bob1.as_str(), bob2.as_str(), carol1.as_str()];
    let list = |q: &'static str| shown(&t, &alice, q, ids);
    let (all, page) = list("").await;
    assert_eq!(all, [bob1.as_str(), bob2.as_str(), carol1.as_str()]);
    assert!(page.contains("recordings-filter"), "{page}");
    // Newest first.
    let pos = |id: &str| page.find(&format!("data-recording-id=\"{id}\"")).unwrap();
    assert!(pos(&carol1) < pos(&bob2) && pos(&bob2) < pos(&bob1));
    assert!(page.contains("carol@example.com") && page.contains("bob@example.com"));

    assert_eq!(list("?user=carol").await.0, [carol1.as_str()]);
    assert_eq!(
        list("?user=BOB%40example").await.0,
        [bob1.as_str(), bob2.as_str()]
    );
    assert_eq!(list("?route=db").await.0, [bob2.as_str(), carol1.as_str()]);
    assert_eq!(
        list("?session=r1-1").await.0,
        [bob1.as_str(), bob2.as_str()]
    );
    assert_eq!(list("?session=r1-1&route=prod").await.0, [bob1.as_str()]);
    assert_eq!(list("?from=2026-12-09").await.0, [carol1.as_str()]);
    assert_eq!(
        list("?to=2026-12-08").await.0,
        [bob1.as_str(), bob2.as_str()]
    );
    assert_eq!(
        list("?from=2026-12-08&to=2026-12-09&user=").await.0,
        [bob1.as_str(), bob2.as_str(), carol1.as_str()]
    );
    let (none, page) = list("?user=nobody").await;
    assert!(none.is_empty() && page.contains("no-recordings"), "{page}");
    assert!(
        page.contains("value=\"nobody\""),
        "the filter is shown back"
    );

    let res = t
        .get("/.tether/recordings?from=yesterday", Some(&alice))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // An administrator plays anyone's.
    for uri in [
        format!("/.tether/recordings/{carol1}"),
        format!("/.tether/recordings/{carol1}/cast"),
    ] {
        let res = t.get(&uri, Some(&alice)).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn bad_ids_and_missing_files_are_404() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), "root:x:0:0\n").unwrap();
    let t = app(dir.path());
    let (_, alice) = t.sign_in("alice").await;
    let missing = recording_id(Timestamp(DAY1), "r1-9", 0);
    for uri in [
        "/.tether/recordings/..%2F..%2Fetc%2Fpasswd".to_string(),
        "/.tether/recordings/..%2F..%2Fetc%2Fpasswd/cast".to_string(),
        "/.tether/recordings/x".to_string(),
        "/.tether/recordings/x/cast".to_string(),
        "/.tether/recordings/passwd/cast".to_string(),
        format!("/.tether/recordings/{missing}"),
        format!("/.tether/recordings/{missing}/cast"),
    ] {
        let (status, page) = read(t.get(&uri, Some(&alice)).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(!page.contains("root:x"), "{page}");
    }
    // A bad id is 404 before anything else, signed in or not.
    let res = t.get("/.tether/recordings/x", None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn files_that_are_not_recordings_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _) = write_cast(dir.path(), "alice", "prod", "r1-1", DAY1, "fine");
    let garbage = recording_id(Timestamp(DAY1 + 1_000), "r1-2", 0);
    std::fs::write(dir.path().join(format!("{garbage}.cast")), "not json\n").unwrap();
    // A well-formed header under another recording's name.
    let (other, body) = write_cast(dir.path(), "alice", "prod", "r1-3", DAY1 + 2_000, "moved");
    let renamed = recording_id(Timestamp(DAY1 + 3_000), "r1-4", 0);
    std::fs::write(dir.path().join(format!("{renamed}.cast")), &body).unwrap();
    std::fs::remove_file(dir.path().join(format!("{other}.cast"))).unwrap();
    // Not a recording id, a huge first line, a directory.
    std::fs::write(dir.path().join("notes.cast"), &body).unwrap();
    let long = recording_id(Timestamp(DAY1 + 4_000), "r1-5", 0);
    std::fs::write(
        dir.path().join(format!("{long}.cast")),
        "x".repeat(tether_core::recording::MAX_HEADER + 10),
    )
    .unwrap();
    let sub = recording_id(Timestamp(DAY1 + 5_000), "r1-6", 0);
    std::fs::create_dir(dir.path().join(format!("{sub}.cast"))).unwrap();

    let t = app(dir.path());
    let (_, alice) = t.sign_in("alice").await;
    let (status, page) = read(t.get("/.tether/recordings", Some(&alice)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.matches("class=\"recording\"").count(), 1, "{page}");
    assert!(page.contains(&good));
    for id in [&garbage, &renamed, &long, &sub] {
        let res = t
            .get(&format!("/.tether/recordings/{id}"), Some(&alice))
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{id}");
    }
}

#[tokio::test]
async fn the_page_is_capped_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..201 {
        write_cast(
            dir.path(),
            "bob",
            "prod",
            &format!("r1-{i}"),
            DAY1 + i * 1000,
            "x",
        );
    }
    let t = app(dir.path());
    let (_, bob) = t.sign_in("bob").await;
    let (_, page) = read(t.get("/.tether/recordings", Some(&bob)).await).await;
    assert_eq!(page.matches("class=\"recording\"").count(), 200);
    assert!(page.contains("recordings-capped"), "{page}");
    // The oldest is the one left out.
    assert!(!page.contains(&recording_id(Timestamp(DAY1), "r1-0", 0)));
}

#[tokio::test]
async fn without_a_directory_there_are_no_recordings() {
    let t = TestApp::build(admin_config(), None);
    let (_, bob) = t.sign_in("bob").await;
    let (status, page) = read(t.get("/.tether/recordings", Some(&bob)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("no-recordings"), "{page}");
    let id = recording_id(Timestamp(DAY1), "r1-1", 0);
    let res = t
        .get(&format!("/.tether/recordings/{id}"), Some(&bob))
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // A configured directory that does not exist yet: the same.
    let gone = tempfile::tempdir().unwrap().path().join("none");
    let t = TestApp::build_recorded(admin_config(), None, Some(gone));
    let (_, bob) = t.sign_in("bob").await;
    let (status, page) = read(t.get("/.tether/recordings", Some(&bob)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("no-recordings"), "{page}");
}

#[tokio::test]
async fn signed_out_visitors_are_sent_to_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let (id, _) = write_cast(dir.path(), "alice", "prod", "r1-1", DAY1, "secret text");
    let t = TestApp::spawn_recorded(|_| {}, dir.path().to_path_buf()).await;
    for uri in [
        "/.tether/recordings".to_string(),
        format!("/.tether/recordings/{id}"),
        format!("/.tether/recordings/{id}/cast"),
    ] {
        let res = t.get(&uri, None).await;
        assert_eq!(res.status(), StatusCode::FOUND, "{uri}");
        assert!(location(&res).contains("/dev-idp/"), "{}", location(&res));
        assert!(!body_text(res).await.contains("secret text"));
    }
}

#[tokio::test]
async fn the_player_files_are_served_and_cached() {
    let t = TestApp::build(admin_config(), None);
    for (path, kind, cached) in [
        (
            "/.tether/assets/asciinema-player.min.js",
            "text/javascript",
            true,
        ),
        ("/.tether/assets/asciinema-player.css", "text/css", true),
        ("/.tether/assets/play.js", "text/javascript", false),
    ] {
        let res = t.get(path, None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let h = res.headers();
        assert!(
            h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let cache = h[header::CACHE_CONTROL].to_str().unwrap().to_string();
        if cached {
            assert_eq!(cache, "public, max-age=31536000, immutable", "{path}");
        } else {
            assert_eq!(cache, "no-store", "{path}");
        }
        let body = body_text(res).await;
        assert!(body.len() > 100, "{path}");
    }
    let (_, js) = read(t.get("/.tether/assets/play.js", None).await).await;
    assert!(js.contains("AsciinemaPlayer.create"), "{js}");
    // Pages keep no-store and the strict policy.
    let res = t.get("/.tether/recordings", None).await;
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(res.headers()[header::CONTENT_SECURITY_POLICY], crate::CSP);
}

#[tokio::test]
async fn the_console_and_the_bindings_page_link_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let t = app(dir.path());
    let (_, alice) = t.sign_in("alice").await;
    t.live.1.lock().unwrap().push(LiveSession {
        id: "r1-7".into(),
        replica: "r1".into(),
        user_id: "bob".into(),
        email: "bob@example.com".into(),
        session_id: "sess".into(),
        binding_id: "sshkey-SHA256:k".into(),
        fingerprint: "SHA256:k".into(),
        route: Some("prod".into()),
        login: "bob".into(),
        source: "192.0.2.7:50000".into(),
        client_version: "SSH-2.0-OpenSSH_9.2p1".into(),
        started_at: t.now(),
        bytes_in: 0,
        bytes_out: 0,
        last_active: t.now(),
    });
    let (_, page) = read(t.get("/.tether/console", Some(&alice)).await).await;
    assert!(
        page.contains("href=\"/.tether/recordings?session=r1-7\">Recordings</a>"),
        "{page}"
    );
    let (_, page) = read(t.get("/.pomerium/session_binding_info", Some(&alice)).await).await;
    assert!(
        page.contains("href=\"/.tether/recordings\" id=\"recordings-link\">Your recordings"),
        "{page}"
    );
}
