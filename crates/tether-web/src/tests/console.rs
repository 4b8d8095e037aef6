//! The operator console's gate and actions through the router: who is an
//! administrator (the `administrators` policy), 403 for everyone else, users ending
//! only their own live sessions, cut-off.

use std::time::Duration;

use axum::http::StatusCode;
use tether_core::connection::LiveSession;
use tether_store::{Store, StoreEvent};

use super::support::*;

const FP: &str = "SHA256:uXaGbDqkdbGq3Hg5i3FUZUDD5A0pNk7S6f4Cq0VMxRA";

fn sign_in_uri(code: &str) -> String {
    format!("/.pomerium/sign_in?user_code={code}")
}

/// An app where alice (by email) is the only administrator.
fn app() -> TestApp {
    let mut c = config("http://127.0.0.1:9", "http://127.0.0.1:9/dev-idp");
    let yaml = tether_core::config::yaml::parse_yaml(
        "- allow:\n    or:\n      - email:\n          is: alice@example.com\n",
    )
    .unwrap();
    c.administrators = Some(tether_core::policy::parse_policy(&yaml).unwrap());
    TestApp::build(c, None)
}

fn live(t: &TestApp, id: &str, user: &str) -> LiveSession {
    LiveSession {
        id: id.into(),
        replica: "r1".into(),
        user_id: user.into(),
        email: format!("{user}@example.com"),
        session_id: "sess".into(),
        binding_id: "sshkey-SHA256:k".into(),
        fingerprint: "SHA256:k".into(),
        route: Some("prod".into()),
        login: user.into(),
        source: "192.0.2.7:50000".into(),
        client_version: "SSH-2.0-OpenSSH_9.2p1".into(),
        started_at: t.now(),
        bytes_in: 2048,
        bytes_out: 4096,
        last_active: t.now(),
    }
}

async fn ended(rx: &mut tokio::sync::broadcast::Receiver<StoreEvent>) -> Option<StoreEvent> {
    tokio::time::timeout(Duration::from_millis(200), async {
        loop {
            if let Ok(ev @ StoreEvent::ConnectionEnded { .. }) = rx.recv().await {
                return ev;
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn only_administrators_get_the_console() {
    let t = app();
    let (_, alice) = t.sign_in("alice").await;
    let (_, bob) = t.sign_in("bob").await;
    t.live.1.lock().unwrap().push(live(&t, "r1-1", "bob"));
    let (status, body) = read(t.get("/.tether/console", Some(&alice)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("r1-1") && body.contains("bob@example.com"),
        "{body}"
    );
    assert!(body.contains("2.0 KiB / 4.0 KiB"), "{body}");
    let (status, body) = read(t.get("/.tether/console", Some(&bob)).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("for administrators"), "{body}");
    assert!(!body.contains("r1-1"));
    // Signed out: sent to sign in (here the IdP is down), never shown anything.
    let (status, body) = read(t.get("/.tether/console", None).await).await;
    assert_ne!(status, StatusCode::OK);
    assert!(!body.contains("r1-1"));
    // Nobody is an administrator without the key.
    let plain = TestApp::build(
        config("http://127.0.0.1:9", "http://127.0.0.1:9/dev-idp"),
        None,
    );
    let (_, alice) = plain.sign_in("alice").await;
    let res = plain.get("/.tether/console", Some(&alice)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn users_end_their_own_sessions_only_and_administrators_any() {
    let t = app();
    let (alice_s, alice) = t.sign_in("alice").await;
    let (bob_s, bob) = t.sign_in("bob").await;
    t.live
        .1
        .lock()
        .unwrap()
        .extend([live(&t, "r1-1", "alice"), live(&t, "r1-2", "bob")]);
    let mut rx = t.store.subscribe();

    // bob, with his own valid CSRF token, cannot end alice's session.
    let form = format!("csrf_token={}&session_id=r1-1", t.csrf(&bob_s));
    let res = t.post("/.tether/sessions/end", Some(&bob), &form).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(ended(&mut rx).await, None, "nothing was ended");
    // Without the CSRF token nothing happens either.
    let res = t
        .post("/.tether/sessions/end", Some(&bob), "session_id=r1-2")
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(ended(&mut rx).await, None);
    // A malformed or unknown id.
    let form = format!("csrf_token={}&session_id=r1-9", t.csrf(&bob_s));
    let res = t.post("/.tether/sessions/end", Some(&bob), &form).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let form = format!("csrf_token={}&session_id=a%20b", t.csrf(&bob_s));
    let res = t.post("/.tether/sessions/end", Some(&bob), &form).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // bob ends his own.
    let form = format!("csrf_token={}&session_id=r1-2", t.csrf(&bob_s));
    let res = t.post("/.tether/sessions/end", Some(&bob), &form).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        ended(&mut rx).await,
        Some(StoreEvent::ConnectionEnded {
            connection_id: "r1-2".into(),
            reason: "session ended by its owner (bob@example.com)".into()
        })
    );
    // alice, an administrator, ends anyone's; the console is where she returns.
    t.live.1.lock().unwrap().retain(|s| s.id != "r1-2");
    t.live.1.lock().unwrap().push(live(&t, "r1-3", "bob"));
    let form = format!(
        "csrf_token={}&session_id=r1-3&back=console",
        t.csrf(&alice_s)
    );
    let res = t.post("/.tether/sessions/end", Some(&alice), &form).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/.tether/console");
    assert_eq!(
        ended(&mut rx).await,
        Some(StoreEvent::ConnectionEnded {
            connection_id: "r1-3".into(),
            reason: "session ended by an administrator (alice@example.com)".into()
        })
    );
}

#[tokio::test]
async fn administrators_revoke_anything_and_cut_users_off() {
    let t = app();
    let (alice_s, alice) = t.sign_in("alice").await;
    let (bob_s, bob) = t.sign_in("bob").await;
    let code = t.open_request(FP).await;
    let form = format!(
        "confirm=true&create_id_binding=true&csrf_token={}",
        t.csrf(&bob_s)
    );
    t.post(&sign_in_uri(&code), Some(&bob), &form).await;
    assert_eq!(t.store.list_bindings(Some("bob")).await.unwrap().len(), 1);

    // bob cannot use the admin actions on himself or anyone.
    let form = format!("csrf_token={}&user_id=bob", t.csrf(&bob_s));
    let res = t
        .post("/.tether/console/users/cut-off", Some(&bob), &form)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let form = format!("csrf_token={}&kind=identity&id={FP}", t.csrf(&bob_s));
    let res = t
        .post("/.tether/console/bindings/revoke", Some(&bob), &form)
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        t.store
            .list_identity_bindings(Some("bob"))
            .await
            .unwrap()
            .len(),
        1
    );

    // alice forgets bob's remembered key, then cuts him off.
    let form = format!("csrf_token={}&kind=identity&id={FP}", t.csrf(&alice_s));
    let res = t
        .post("/.tether/console/bindings/revoke", Some(&alice), &form)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(t
        .store
        .list_identity_bindings(Some("bob"))
        .await
        .unwrap()
        .is_empty());
    let (_, page) = read(t.get("/.tether/console", Some(&alice)).await).await;
    assert!(page.contains("cut-off-bob@example.com"), "{page}");
    let form = format!("csrf_token={}&user_id=bob", t.csrf(&alice_s));
    let res = t
        .post("/.tether/console/users/cut-off", Some(&alice), &form)
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(t.store.list_bindings(Some("bob")).await.unwrap().is_empty());
    assert!(t.store.get_session(&bob_s.id).await.unwrap().is_none());
    assert!(t.store.get_session(&alice_s.id).await.unwrap().is_some());
}
