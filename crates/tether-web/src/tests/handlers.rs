//! Handlers through `Router::oneshot` with the memory store: code statuses, the
//! CSRF gate, cookies, the Verify page, authorize / deny, the other-user rule,
//! revocation ownership, Remember me and sign-out.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::{header, StatusCode};
use tether_core::{binding::binding_id, RequestStatus};

use super::support::*;
use tether_store::Store;

const FP: &str = "SHA256:uXaGbDqkdbGq3Hg5i3FUZUDD5A0pNk7S6f4Cq0VMxRA";

fn sign_in_uri(code: &str) -> String {
    format!("/.pomerium/sign_in?user_code={code}")
}

#[tokio::test]
async fn code_statuses_are_checked_before_sign_in() {
    let t = TestApp::spawn().await;
    // Malformed and unknown codes: 400 `code invalid`, with or without a session.
    for uri in [
        "/.pomerium/sign_in",
        "/.pomerium/sign_in?user_code=short",
        "/.pomerium/sign_in?user_code=AAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let (status, body) = read(t.get(uri, None).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains("code invalid"), "{body}");
    }

    // Already decided: 409.
    let code = t.open_request(FP).await;
    let (session, cookie) = t.sign_in("alice").await;
    t.store
        .approve_request(&code, &session, false, Duration::from_secs(3600), t.now())
        .await
        .unwrap();
    for c in [None, Some(cookie.as_str())] {
        let (status, body) = read(t.get(&sign_in_uri(&code), c).await).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(body.contains("code already processed"), "{body}");
    }

    // Expired: 400 `expired`.
    let code = t.open_request("SHA256:other").await;
    t.clock.advance(Duration::from_secs(16 * 60));
    let (status, body) = read(t.get(&sign_in_uri(&code), None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn signed_out_browser_is_sent_to_the_idp_with_pkce_state_nonce() {
    let t = TestApp::spawn().await;
    let code = t.open_request(FP).await;
    let res = t.get(&sign_in_uri(&code), None).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    let loc = location(&res);
    assert!(
        loc.starts_with(&format!("{}/dev-idp/authorize?", t.base)),
        "{loc}"
    );
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "response_type=code",
        "client_id=tether-test",
    ] {
        assert!(loc.contains(p), "{p} missing in {loc}");
    }
    let set = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(set.starts_with("_pomerium_login="), "{set}");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"));
}

#[tokio::test]
async fn tampered_or_expired_cookie_means_signed_out() {
    let t = TestApp::spawn().await;
    let code = t.open_request(FP).await;
    let (_, cookie) = t.sign_in("alice").await;
    // Flip one character of the sealed value.
    let mut tampered = cookie.clone().into_bytes();
    let i = tampered.len() - 3;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for c in [tampered.as_str(), "_pomerium=garbage", "_pomerium="] {
        let res = t.get(&sign_in_uri(&code), Some(c)).await;
        assert_eq!(res.status(), StatusCode::FOUND, "{c}");
        assert!(location(&res).contains("/dev-idp/authorize?"));
    }
    // The genuine cookie shows the Verify page ...
    assert_eq!(
        t.get(&sign_in_uri(&code), Some(&cookie)).await.status(),
        StatusCode::OK
    );
    // ... until the session expires (code refreshed so it is still pending).
    t.clock.advance(Duration::from_secs(15 * 3600));
    let code = t.open_request("SHA256:fresh").await;
    assert_eq!(
        t.get(&sign_in_uri(&code), Some(&cookie)).await.status(),
        StatusCode::FOUND
    );
}

#[tokio::test]
async fn verify_page_shows_the_request() {
    let t = TestApp::spawn().await;
    let code = t.open_request(FP).await;
    let (session, cookie) = t.sign_in("alice").await;
    let (status, body) = read(t.get(&sign_in_uri(&code), Some(&cookie)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<title>Verify · tether</title>"));
    assert!(body.contains(&format!("<code id=\"fingerprint\">{FP}</code>")));
    assert!(body.contains("id=\"key-type\">ssh-ed25519<"));
    assert!(body.contains("id=\"route\">prod<"));
    assert!(body.contains("id=\"login\">alice<"));
    assert!(body.contains("192.0.2.7:51234"));
    // The client version is peer-controlled: escaped.
    assert!(body.contains("SSH-2.0-OpenSSH_9.2p1 &lt;b&gt;"));
    assert!(!body.contains("OpenSSH_9.2p1 <b>"));
    assert!(body.contains("id=\"issued-at\""));
    assert!(
        body.contains("expires in 15:00"),
        "server-rendered countdown"
    );
    assert!(body.contains("data-expires-at=\""));
    for id in ["countdown", "remember", "authorize", "deny"] {
        assert!(body.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(body.contains("name=\"create_id_binding\" value=\"true\""));
    assert!(body.contains("Skip this page next time this key signs in as you"));
    assert!(body.contains("alice@example.com"), "who is signed in");
    assert_eq!(hidden(&body, "csrf_token"), t.csrf(&session));

    t.clock.advance(Duration::from_secs(14 * 60 + 55));
    let body = read(t.get(&sign_in_uri(&code), Some(&cookie)).await)
        .await
        .1;
    assert!(
        body.contains("expires in 00:05"),
        "countdown follows the clock"
    );
}

#[tokio::test]
async fn post_without_valid_csrf_is_403_and_changes_nothing() {
    let t = TestApp::spawn().await;
    let code = t.open_request(FP).await;
    let (_, cookie) = t.sign_in("alice").await;
    let (bob, _) = t.sign_in("bob").await;
    for (cookie, form) in [
        (Some(cookie.as_str()), "confirm=true".to_string()),
        (
            Some(cookie.as_str()),
            "confirm=true&csrf_token=bogus".to_string(),
        ),
        // Another session's token does not work either.
        (
            Some(cookie.as_str()),
            format!("confirm=true&csrf_token={}", t.csrf(&bob)),
        ),
        (None, "confirm=true".to_string()),
    ] {
        let res = t.post(&sign_in_uri(&code), cookie, &form).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{form}");
    }
    let req = t.store.get_request(&code).await.unwrap().unwrap();
    assert_eq!(req.status, RequestStatus::Pending);
    assert!(t.store.binding_for_key(FP).await.unwrap().is_none());
}

#[tokio::test]
async fn authorize_creates_binding_and_remember_me_identity_binding() {
    let t = TestApp::spawn().await;
    let code = t.open_request(FP).await;
    let (session, cookie) = t.sign_in("alice").await;
    let form = format!(
        "confirm=true&create_id_binding=true&csrf_token={}",
        t.csrf(&session)
    );
    let (status, body) = read(t.post(&sign_in_uri(&code), Some(&cookie), &form).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Sign in successful — you may close this page"));
    assert!(body.contains("href=\"/.pomerium/session_binding_info\""));
    let (binding, _) = t.store.binding_for_key(FP).await.unwrap().unwrap();
    assert_eq!(binding.user_id, "alice");
    assert_eq!(binding.id, binding_id(FP));
    assert_eq!(binding.expires_at, session.expires_at, "min(48h, session)");
    let ib = t.store.identity_binding_for_key(FP).await.unwrap().unwrap();
    assert_eq!(ib.user_id, "alice");

    // Second POST: already processed.
    let (status, _) = read(t.post(&sign_in_uri(&code), Some(&cookie), &form).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn deny_marks_request_denied() {
    let t = TestApp::spawn().await;
    let code = t.open_request(FP).await;
    let (session, cookie) = t.sign_in("alice").await;
    let form = format!("confirm=false&csrf_token={}", t.csrf(&session));
    let (status, body) = read(t.post(&sign_in_uri(&code), Some(&cookie), &form).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Request denied"));
    let req = t.store.get_request(&code).await.unwrap().unwrap();
    assert!(matches!(req.status, RequestStatus::Denied { .. }));
    assert!(t.store.binding_for_key(FP).await.unwrap().is_none());
    // Neither true nor false: 400, nothing changes.
    let code = t.open_request("SHA256:k2").await;
    let form = format!("csrf_token={}", t.csrf(&session));
    let res = t.post(&sign_in_uri(&code), Some(&cookie), &form).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn key_bound_to_other_user_is_refused_and_request_stays_open() {
    let t = TestApp::spawn().await;
    let (alice, alice_cookie) = t.sign_in("alice").await;
    let (bob, bob_cookie) = t.sign_in("bob").await;
    let code = t.open_request(FP).await;
    let form = format!("confirm=true&csrf_token={}", t.csrf(&alice));
    assert_eq!(
        t.post(&sign_in_uri(&code), Some(&alice_cookie), &form)
            .await
            .status(),
        StatusCode::OK
    );

    let code2 = t.open_request(FP).await;
    assert_ne!(code, code2);
    let form = format!("confirm=true&csrf_token={}", t.csrf(&bob));
    let (status, body) = read(t.post(&sign_in_uri(&code2), Some(&bob_cookie), &form).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("This key is bound to another user; that user must revoke it first."));
    let req = t.store.get_request(&code2).await.unwrap().unwrap();
    assert_eq!(req.status, RequestStatus::Pending, "stays open for alice");
    assert_eq!(
        t.store
            .binding_for_key(FP)
            .await
            .unwrap()
            .unwrap()
            .0
            .user_id,
        "alice"
    );

    // Nor may bob deny it (that would end alice's waiting connection): 409, the
    // request stays open, no decision is published.
    let mut feed = t.store.subscribe();
    let form = format!("confirm=false&csrf_token={}", t.csrf(&bob));
    let (status, body) = read(t.post(&sign_in_uri(&code2), Some(&bob_cookie), &form).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("This key is bound to another user"), "{body}");
    let req = t.store.get_request(&code2).await.unwrap().unwrap();
    assert_eq!(req.status, RequestStatus::Pending, "stays open for alice");
    assert!(feed.try_recv().is_err(), "nothing published");

    // Alice, the owner, may deny it.
    let form = format!("confirm=false&csrf_token={}", t.csrf(&alice));
    let (status, body) = read(
        t.post(&sign_in_uri(&code2), Some(&alice_cookie), &form)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Request denied"));
    let req = t.store.get_request(&code2).await.unwrap().unwrap();
    assert!(matches!(req.status, RequestStatus::Denied { .. }));
}

/// The owner through Remember me alone (no client binding) counts too.
#[tokio::test]
async fn deny_of_a_remembered_key_is_owner_only() {
    let t = TestApp::spawn().await;
    let (alice, alice_cookie) = t.sign_in("alice").await;
    let (bob, bob_cookie) = t.sign_in("bob").await;
    let code = t.open_request(FP).await;
    let form = format!(
        "confirm=true&create_id_binding=true&csrf_token={}",
        t.csrf(&alice)
    );
    t.post(&sign_in_uri(&code), Some(&alice_cookie), &form)
        .await;
    t.store
        .revoke_binding(&binding_id(FP), None, "test")
        .await
        .unwrap();
    let code = t.open_request(FP).await;
    let form = format!("confirm=false&csrf_token={}", t.csrf(&bob));
    let res = t.post(&sign_in_uri(&code), Some(&bob_cookie), &form).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let req = t.store.get_request(&code).await.unwrap().unwrap();
    assert_eq!(req.status, RequestStatus::Pending);
    // Decided and unknown codes keep their own answers.
    let form = format!("confirm=false&csrf_token={}", t.csrf(&bob));
    let res = t
        .post(
            &sign_in_uri("AAAAAAAAAAAAAAAAAAAAAA"),
            Some(&bob_cookie),
            &form,
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn remember_me_skips_verify_for_same_user_only() {
    let t = TestApp::spawn().await;
    let (alice, alice_cookie) = t.sign_in("alice").await;
    let (_, bob_cookie) = t.sign_in("bob").await;
    let code = t.open_request(FP).await;
    let form = format!(
        "confirm=true&create_id_binding=true&csrf_token={}",
        t.csrf(&alice)
    );
    assert_eq!(
        t.post(&sign_in_uri(&code), Some(&alice_cookie), &form)
            .await
            .status(),
        StatusCode::OK
    );

    // Bob opening a new code for the key gets the Verify page as usual.
    let code2 = t.open_request(FP).await;
    let (status, body) = read(t.get(&sign_in_uri(&code2), Some(&bob_cookie)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("id=\"authorize\""));

    // Alice, when another site (or anything but the person) navigates her browser
    // to the link: the Verify page, saying why; nothing decided (issue 12).
    for headers in [
        &[][..],
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")][..],
        &[("sec-fetch-site", "same-origin")][..],
    ] {
        let res = t
            .get_with(&sign_in_uri(&code2), Some(&alice_cookie), headers)
            .await;
        let (status, body) = read(res).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("id=\"authorize\""), "{headers:?}: {body}");
        assert!(body.contains("id=\"not-direct\""), "{headers:?}: {body}");
        let req = t.store.get_request(&code2).await.unwrap().unwrap();
        assert_eq!(req.status, RequestStatus::Pending, "{headers:?}");
    }

    // A callback's "opened directly" mark for another code, or another session,
    // vouches for nothing.
    let (_, alice_cookie2) = t.sign_in("alice").await;
    for mark in [
        t.direct_mark(
            "/.pomerium/sign_in?user_code=AAAAAAAAAAAAAAAAAAAAAA",
            &alice.id,
        ),
        t.direct_mark(&sign_in_uri(&code2), "sess-someone-else"),
    ] {
        let cookie = format!("{alice_cookie}; {mark}");
        let (_, body) = read(t.get(&sign_in_uri(&code2), Some(&cookie)).await).await;
        assert!(body.contains("id=\"not-direct\""), "{body}");
    }
    let mark = t.direct_mark(&sign_in_uri(&code2), &alice.id);
    let cookie = format!("{alice_cookie2}; {mark}");
    let (_, body) = read(t.get(&sign_in_uri(&code2), Some(&cookie)).await).await;
    assert!(
        body.contains("id=\"not-direct\""),
        "mark of another session: {body}"
    );

    // Alice opening the link herself (from the terminal: `Sec-Fetch-Site: none`)
    // is approved at once, without the Verify page.
    let res = t
        .get_with(
            &sign_in_uri(&code2),
            Some(&alice_cookie),
            &[("sec-fetch-site", "none")],
        )
        .await;
    let (status, body) = read(res).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Sign in successful"));
    assert!(!body.contains("id=\"authorize\""));
    let req = t.store.get_request(&code2).await.unwrap().unwrap();
    assert!(
        matches!(req.status, RequestStatus::Approved { ref user_id, .. } if user_id == "alice")
    );
    assert!(
        t.store
            .identity_binding_for_key(FP)
            .await
            .unwrap()
            .is_some(),
        "kept"
    );

    // After an IdP round trip the browser says `cross-site`; the callback's mark for
    // this code and session stands in for the `none` it saw first, once.
    let code3 = t.open_request(FP).await;
    let mark = t.direct_mark(&sign_in_uri(&code3), &alice.id);
    let res = t
        .get_with(
            &sign_in_uri(&code3),
            Some(&format!("{alice_cookie}; {mark}")),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    let cleared = res.headers().get_all(header::SET_COOKIE).iter().any(|v| {
        v.to_str()
            .unwrap()
            .starts_with("_pomerium_direct=; Max-Age=0")
    });
    let (status, body) = read(res).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Sign in successful"), "{body}");
    assert!(cleared, "the mark is one-shot");
}

#[tokio::test]
async fn bindings_page_lists_own_bindings_and_revoke_is_owner_only() {
    let t = TestApp::spawn().await;
    let (alice, alice_cookie) = t.sign_in("alice").await;
    let (bob, bob_cookie) = t.sign_in("bob").await;
    let code = t.open_request(FP).await;
    let form = format!("confirm=true&csrf_token={}", t.csrf(&alice));
    t.post(&sign_in_uri(&code), Some(&alice_cookie), &form)
        .await;
    t.live.0.lock().unwrap().insert(binding_id(FP), 3);

    let (status, body) = read(
        t.get("/.pomerium/session_binding_info", Some(&alice_cookie))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(FP));
    assert!(body.contains("<td class=\"live\">3</td>"));
    assert!(body.contains("prod as alice"));
    assert!(body.contains("ssh-keygen -l -f"));
    assert!(body.contains("Remember me: revoke"));
    let (_, bob_page) = read(
        t.get("/.pomerium/session_binding_info", Some(&bob_cookie))
            .await,
    )
    .await;
    assert!(!bob_page.contains(FP), "bob does not see alice's binding");

    // Bob revoking alice's binding: 403, still there. Alice's identity binding too.
    let form = format!(
        "sessionBindingID={}&csrf_token={}",
        binding_id(FP),
        t.csrf(&bob)
    );
    let res = t
        .post(
            "/.pomerium/session_binding/revoke",
            Some(&bob_cookie),
            &form,
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(t
        .store
        .get_binding(&binding_id(FP))
        .await
        .unwrap()
        .is_some());

    // Without CSRF: 403, still there.
    let form = format!("sessionBindingID={}", binding_id(FP));
    let res = t
        .post(
            "/.pomerium/session_binding/revoke",
            Some(&alice_cookie),
            &form,
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(t
        .store
        .get_binding(&binding_id(FP))
        .await
        .unwrap()
        .is_some());

    // Alice revokes: 303 back to the page, gone.
    let form = format!(
        "sessionBindingID={}&csrf_token={}",
        binding_id(FP),
        t.csrf(&alice)
    );
    let res = t
        .post(
            "/.pomerium/session_binding/revoke",
            Some(&alice_cookie),
            &form,
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/.pomerium/session_binding_info");
    assert!(t
        .store
        .get_binding(&binding_id(FP))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn identity_binding_revoke_is_owner_only() {
    let t = TestApp::spawn().await;
    let (alice, alice_cookie) = t.sign_in("alice").await;
    let (bob, bob_cookie) = t.sign_in("bob").await;
    let code = t.open_request(FP).await;
    let form = format!(
        "confirm=true&create_id_binding=true&csrf_token={}",
        t.csrf(&alice)
    );
    t.post(&sign_in_uri(&code), Some(&alice_cookie), &form)
        .await;
    let body = read(
        t.get("/.pomerium/session_binding_info", Some(&alice_cookie))
            .await,
    )
    .await
    .1;
    assert!(body.contains("until revoked"));

    let form = format!(
        "sessionBindingID={}&csrf_token={}",
        binding_id(FP),
        t.csrf(&bob)
    );
    let res = t
        .post(
            "/.pomerium/identity_binding/revoke",
            Some(&bob_cookie),
            &form,
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(t
        .store
        .identity_binding_for_key(FP)
        .await
        .unwrap()
        .is_some());

    let form = format!(
        "sessionBindingID={}&csrf_token={}",
        binding_id(FP),
        t.csrf(&alice)
    );
    let res = t
        .post(
            "/.pomerium/identity_binding/revoke",
            Some(&alice_cookie),
            &form,
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(t
        .store
        .identity_binding_for_key(FP)
        .await
        .unwrap()
        .is_none());
    assert!(
        t.store
            .get_binding(&binding_id(FP))
            .await
            .unwrap()
            .is_some(),
        "client binding stays"
    );
}

#[tokio::test]
async fn sign_out_revokes_bindings_and_clears_cookie() {
    let t = TestApp::spawn().await;
    let (alice, cookie) = t.sign_in("alice").await;
    let code = t.open_request(FP).await;
    let form = format!("confirm=true&csrf_token={}", t.csrf(&alice));
    t.post(&sign_in_uri(&code), Some(&cookie), &form).await;

    let (status, body) = read(t.get("/.pomerium/sign_out", Some(&cookie)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("id=\"sign-out\""));
    assert_eq!(hidden(&body, "csrf_token"), t.csrf(&alice));

    // CSRF-less POST: 403, still signed in.
    let res = t.post("/.pomerium/sign_out", Some(&cookie), "").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(t.store.get_session(&alice.id).await.unwrap().is_some());

    let form = format!("csrf_token={}", t.csrf(&alice));
    let res = t.post("/.pomerium/sign_out", Some(&cookie), &form).await;
    assert_eq!(res.status(), StatusCode::OK);
    let set = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        set.starts_with("_pomerium=;") && set.contains("Max-Age=0"),
        "{set}"
    );
    assert!(body_text(res).await.contains("Signed out"));
    assert!(t
        .store
        .get_binding(&binding_id(FP))
        .await
        .unwrap()
        .is_none());
    // The old cookie now means signed out.
    let res = t
        .get("/.pomerium/session_binding_info", Some(&cookie))
        .await;
    assert_eq!(res.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn sign_out_goes_to_signout_redirect_url_when_configured() {
    let t = TestApp::spawn_configured(|c| {
        c.signout_redirect_url = Some("https://intranet.example.com/bye?from=tether".into());
    })
    .await;
    let (alice, cookie) = t.sign_in("alice").await;
    let code = t.open_request(FP).await;
    let form = format!("confirm=true&csrf_token={}", t.csrf(&alice));
    t.post(&sign_in_uri(&code), Some(&cookie), &form).await;

    // The confirm form may submit into that origin (browsers check form-action on
    // the redirect); every other page keeps `form-action 'self'`.
    let res = t.get("/.pomerium/sign_out", Some(&cookie)).await;
    let csp = res.headers().get(header::CONTENT_SECURITY_POLICY).unwrap();
    assert!(
        csp.to_str()
            .unwrap()
            .contains("form-action 'self' https://intranet.example.com;"),
        "{csp:?}"
    );
    let res = t
        .get("/.pomerium/session_binding_info", Some(&cookie))
        .await;
    let csp = res.headers().get(header::CONTENT_SECURITY_POLICY).unwrap();
    assert!(
        csp.to_str().unwrap().contains("form-action 'self';"),
        "{csp:?}"
    );

    // Without the CSRF token: refused, no redirect, still signed in.
    let res = t.post("/.pomerium/sign_out", Some(&cookie), "").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get(header::LOCATION).is_none());
    assert!(t.store.get_session(&alice.id).await.unwrap().is_some());

    let form = format!("csrf_token={}", t.csrf(&alice));
    let res = t.post("/.pomerium/sign_out", Some(&cookie), &form).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers().get(header::LOCATION).unwrap(),
        "https://intranet.example.com/bye?from=tether"
    );
    let set = res
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        set.starts_with("_pomerium=;") && set.contains("Max-Age=0"),
        "{set}"
    );
    assert!(t.store.get_session(&alice.id).await.unwrap().is_none());
    assert!(t
        .store
        .get_binding(&binding_id(FP))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn whoami_ping_healthz_and_store_down() {
    let t = TestApp::spawn().await;
    let (_, cookie) = t.sign_in("alice").await;
    let (status, body) = read(t.get("/.pomerium/", Some(&cookie)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("id=\"user-id\" class=\"mono\">alice<"));
    assert!(body.contains("alice@example.com"));
    let (e, g) = (
        body.find(">email<").unwrap(),
        body.find(">groups<").unwrap(),
    );
    assert!(e < g, "claims sorted");
    assert!(body.contains("[&quot;sre&quot;]"));
    let res = t.get("/.pomerium/", None).await;
    assert_eq!(res.status(), StatusCode::FOUND);

    assert_eq!(
        read(t.get("/ping", None).await).await,
        (StatusCode::OK, "OK".to_string())
    );
    assert_eq!(t.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(t.get("/nope", None).await.status(), StatusCode::NOT_FOUND);

    t.store.down.store(true, Ordering::SeqCst);
    assert_eq!(
        t.get("/healthz", None).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(read(t.get("/ping", None).await).await.0, StatusCode::OK);
    let (status, body) = read(t.get("/.pomerium/", Some(&cookie)).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "fail closed");
    assert!(body.contains("(ref "));
}

#[tokio::test]
async fn security_headers_on_every_page() {
    let t = TestApp::spawn().await;
    let res = t.get("/ping", None).await;
    let h = res.headers();
    assert_eq!(h.get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
    assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert_eq!(h.get(header::REFERRER_POLICY).unwrap(), "no-referrer");
    assert!(h
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
}

/// Issue 12: over HTTPS the session cookie (and the ones named after it) carry the
/// `__Host-` prefix with Secure and Path=/ and no Domain; tether serving TLS itself
/// adds HSTS; every response has a CSP without inline script or style and with
/// `form-action 'self'`; the stylesheet and the countdown are served files.
#[tokio::test]
async fn https_cookie_prefix_hsts_and_csp() {
    let mut cfg = config("https://gw.example", "http://127.0.0.1:9");
    cfg.insecure_server = false;
    let t = TestApp::build(cfg, None);
    let res = t.post("/.pomerium/sign_out", None, "").await;
    let set = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.starts_with("__Host-_pomerium=;"), "{set}");
    assert!(set.contains("; Secure") && set.contains("Path=/") && !set.contains("Domain"));
    assert_eq!(
        res.headers()[header::STRICT_TRANSPORT_SECURITY],
        "max-age=31536000"
    );
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("form-action 'self'") && csp.contains("script-src 'self'"));
    let (_, html) = read(res).await;
    assert!(
        !html.contains("<style") && !html.contains("<script>"),
        "{html}"
    );

    // Plain HTTP (TLS at a proxy): Pomerium's name unchanged, no HSTS from tether.
    let t = TestApp::build(config("http://127.0.0.1:9", "http://127.0.0.1:9"), None);
    let res = t.post("/.pomerium/sign_out", None, "").await;
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.starts_with("_pomerium=;") && !set.contains("Secure"),
        "{set}"
    );
    assert!(res
        .headers()
        .get(header::STRICT_TRANSPORT_SECURITY)
        .is_none());
    for (path, ty, needle) in [
        ("/.pomerium/assets/tether.css", "text/css", "font-family"),
        (
            "/.pomerium/assets/verify.js",
            "text/javascript",
            "countdown",
        ),
    ] {
        let res = t.get(path, None).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let ct = res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ct.starts_with(ty), "{path}: {ct}");
        assert!(read(res).await.1.contains(needle), "{path}");
    }
}
