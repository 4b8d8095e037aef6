//! Pre-authorized keys: a signed-in user pastes a public key on the bindings page
//! and it is bound to them with no SSH connection, under the one-key-one-user rule;
//! bad keys, forged lifetimes and missing CSRF tokens change nothing.

use std::time::Duration;

use axum::http::{header, StatusCode};
use tether_core::binding::binding_id;
use tether_store::Store;

use super::support::*;

// `ssh-keygen -t ed25519`; `ssh-keygen -l` prints KEY_FP.
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILCHye8ZYGfVmchfhZ4NkNHfZ/S1C8YmTpwp1OEnLQ44 alice@laptop";
const KEY_FP: &str = "SHA256:Hmeq9YSttz6i1Z0LMp74365gHP6oXZGCFOhL7qrk/fo";
const ADD: &str = "/.tether/bindings/add";

fn form(csrf: &str, key: &str, ttl: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf_token", csrf)
        .append_pair("public_key", key)
        .append_pair("ttl", ttl)
        .finish()
}

#[tokio::test]
async fn a_pasted_key_is_bound_to_the_signed_in_user_for_the_chosen_lifetime() {
    let t = TestApp::spawn().await;
    let (alice, cookie) = t.sign_in("alice").await;

    // The page offers the form with lifetimes up to ssh_binding_max_ttl (48 h here).
    let (status, page) = read(
        t.get("/.pomerium/session_binding_info", Some(&cookie))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"add-key\""), "{page}");
    for option in [
        "value=\"3600\"",
        "value=\"28800\"",
        "value=\"86400\"",
        "value=\"172800\"",
    ] {
        assert!(page.contains(option), "{option}: {page}");
    }

    let res = t
        .post(ADD, Some(&cookie), &form(&t.csrf(&alice), KEY, "28800"))
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers().get(header::LOCATION).unwrap(),
        "/.pomerium/session_binding_info"
    );
    let b = t
        .store
        .get_binding(&binding_id(KEY_FP))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.user_id, alice.user_id());
    assert_eq!(b.key_type, "ssh-ed25519");
    assert_eq!(b.expires_at, t.now().plus(Duration::from_secs(8 * 3600)));
    assert!(b.is_valid(t.now(), Some(&alice)));

    // Listed on alice's page, with no route or login yet.
    let (_, page) = read(
        t.get("/.pomerium/session_binding_info", Some(&cookie))
            .await,
    )
    .await;
    assert!(
        page.contains(&format!("data-binding-id=\"sshkey-{KEY_FP}\"")),
        "{page}"
    );
    assert!(page.contains("pasted on the bindings page"), "{page}");
}

#[tokio::test]
async fn another_users_key_bad_keys_and_forged_lifetimes_change_nothing() {
    let t = TestApp::spawn().await;
    let (alice, alice_cookie) = t.sign_in("alice").await;
    let (bob, bob_cookie) = t.sign_in("bob").await;
    t.post(
        ADD,
        Some(&alice_cookie),
        &form(&t.csrf(&alice), KEY, "3600"),
    )
    .await;

    // Bob pastes alice's key: 409, still alice's.
    let (status, body) = read(
        t.post(ADD, Some(&bob_cookie), &form(&t.csrf(&bob), KEY, "3600"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("bound to another user"), "{body}");
    let b = t
        .store
        .get_binding(&binding_id(KEY_FP))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.user_id, alice.user_id());

    // Not a public key, a private key, or a lifetime past the maximum: 400.
    let csrf = t.csrf(&bob);
    for (key, ttl, want) in [
        ("ssh-ed25519 !!!", "3600", "base64 does not decode"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "3600",
            "that is a private key",
        ),
        ("ssh-dss AAAAB3NzaC1kc3M=", "3600", "unknown key type"),
        (KEY, "172801", "Choose a lifetime"),
        (KEY, "0", "Choose a lifetime"),
        (KEY, "soon", "Choose a lifetime"),
    ] {
        let (status, body) =
            read(t.post(ADD, Some(&bob_cookie), &form(&csrf, key, ttl)).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key} {ttl}: {body}");
        assert!(body.contains(want), "{key} {ttl}: {body}");
    }
    assert!(t
        .store
        .list_bindings(Some(bob.user_id()))
        .await
        .unwrap()
        .is_empty());

    // No CSRF token, or signed out: 403, nothing bound.
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let res = t
        .post(ADD, Some(&bob_cookie), &form("", other, "3600"))
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = t.post(ADD, None, &form(&csrf, other, "3600")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(t
        .store
        .list_bindings(Some(bob.user_id()))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn sign_out_ends_a_pasted_key_and_a_waiting_connection_is_left_to_its_own_link() {
    let t = TestApp::spawn().await;
    let (alice, cookie) = t.sign_in("alice").await;

    // An SSH client with the key is already waiting for sign-in: the paste is
    // refused (its own Verify page decides it) and the waiting request stays.
    let code = t.open_request(KEY_FP).await;
    let (status, body) = read(
        t.post(ADD, Some(&cookie), &form(&t.csrf(&alice), KEY, "3600"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("waiting for sign-in"), "{body}");
    assert!(t
        .store
        .get_binding(&binding_id(KEY_FP))
        .await
        .unwrap()
        .is_none());
    let waiting = t.store.get_request(&code).await.unwrap().unwrap();
    assert_eq!(waiting.status, tether_core::RequestStatus::Pending);

    // Once that client gave up, the paste binds it; signing out ends it.
    t.store.drop_request(&code).await.unwrap();
    t.post(ADD, Some(&cookie), &form(&t.csrf(&alice), KEY, "3600"))
        .await;
    assert!(t
        .store
        .get_binding(&binding_id(KEY_FP))
        .await
        .unwrap()
        .is_some());
    let form_out = format!("csrf_token={}", t.csrf(&alice));
    t.post("/.pomerium/sign_out", Some(&cookie), &form_out)
        .await;
    assert!(t
        .store
        .get_binding(&binding_id(KEY_FP))
        .await
        .unwrap()
        .is_none());
}
