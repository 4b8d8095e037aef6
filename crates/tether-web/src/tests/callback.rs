//! `/oauth2/callback` failure modes against a scripted IdP on a loopback port:
//! wrong or missing state, refused code, forged signature, unknown key, wrong
//! nonce / audience / issuer, expired token, and an unreachable IdP. Every refusal
//! must create no session and set no session cookie.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use tether_core::{Clock, Identity, SystemClock};
use tether_store::Store;
use tokio_util::sync::CancellationToken;

use super::support::*;

/// A scripted IdP: real discovery and JWKS (test key 1); `/token` returns whatever
/// ID token the test put in `token`, or `invalid_grant` when there is none.
struct MockIdp {
    base: String,
    token: Mutex<Option<String>>,
    keys: Mutex<Vec<serde_json::Value>>,
    shutdown: CancellationToken,
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn jwk(pem: &str, kid: &str) -> serde_json::Value {
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
    serde_json::json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

fn sign(pem: &str, kid: &str, claims: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(
        &h,
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn discovery(State(m): State<Arc<MockIdp>>) -> Json<serde_json::Value> {
    let b = &m.base;
    Json(serde_json::json!({
        "issuer": b,
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "jwks_uri": format!("{b}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(m): State<Arc<MockIdp>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "keys": m.keys.lock().unwrap().clone() }))
}

async fn token(State(m): State<Arc<MockIdp>>) -> Response {
    match m.token.lock().unwrap().take() {
        Some(t) => Json(serde_json::json!({
            "access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": t,
        }))
        .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "invalid_grant" })),
        )
            .into_response(),
    }
}

async fn serve_mock(listener: tokio::net::TcpListener) -> Arc<MockIdp> {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let m = Arc::new(MockIdp {
        base,
        token: Mutex::new(None),
        keys: Mutex::new(vec![jwk(TEST_KEY_1, "k1")]),
        shutdown: CancellationToken::new(),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", post(token))
        .with_state(m.clone());
    tokio::spawn(crate::serve(
        listener,
        app,
        crate::WebLimits::default(),
        None,
        m.shutdown.clone(),
    ));
    m
}

async fn mock() -> Arc<MockIdp> {
    serve_mock(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

fn app_for(m: &MockIdp) -> TestApp {
    TestApp::build(config("http://127.0.0.1:9", &m.base), None)
}

fn claims(m: &MockIdp) -> serde_json::Value {
    let now = SystemClock.now().unix_seconds();
    serde_json::json!({
        "iss": m.base, "aud": CLIENT_ID, "sub": "alice", "email": "alice@example.com",
        "email_verified": true, "name": "Alice", "groups": ["sre", "dev"], "nonce": "n-1", "iat": now, "exp": now + 600,
    })
}

const REFUSED: &str = "The identity provider refused the sign-in";
const UNVERIFIED: &str = "The identity token could not be verified.";
const VERIFIER: &str = "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv";

async fn callback(
    t: &TestApp,
    query_state: &str,
    cookie: Option<&str>,
) -> (StatusCode, String, bool) {
    let uri = format!("/oauth2/callback?code=abc&state={query_state}");
    let res = t.get(&uri, cookie).await;
    let sets_session = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("_pomerium="));
    let (status, body) = read(res).await;
    (status, body, sets_session)
}

/// Asserts a refusal with `status` that created nothing.
async fn refused(t: &TestApp, m: &MockIdp, id_token: Option<String>, expect: &str, why: &str) {
    *m.token.lock().unwrap() = id_token;
    let cookie = t.login_cookie("st-1", "n-1", VERIFIER);
    let (got, body, sets) = callback(t, "st-1", Some(&cookie)).await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{why}: {body}");
    assert!(body.contains(expect), "{why}: {body}");
    assert!(!sets, "{why}: no session cookie");
    assert_eq!(
        t.store.sessions_created.load(Ordering::SeqCst),
        0,
        "{why}: no session"
    );
}

#[tokio::test]
async fn good_token_creates_session_with_claims() {
    let m = mock().await;
    let t = app_for(&m);
    *m.token.lock().unwrap() = Some(sign(TEST_KEY_1, "k1", &claims(&m)));
    let cookie = t.login_cookie("st-1", "n-1", VERIFIER);
    let res = t
        .get("/oauth2/callback?code=abc&state=st-1", Some(&cookie))
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/.pomerium/");
    let sets: Vec<String> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session_cookie = sets.iter().find(|c| c.starts_with("_pomerium=")).unwrap();
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("Max-Age=50400"));
    assert!(
        sets.iter().any(|c| c.starts_with("_pomerium_login=;")),
        "login state cleared"
    );
    assert_eq!(t.store.sessions_created.load(Ordering::SeqCst), 1);

    let pair = session_cookie.split(';').next().unwrap();
    let (status, body) = read(t.get("/.pomerium/", Some(pair)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("alice@example.com"));
    assert!(
        body.contains("[&quot;sre&quot;,&quot;dev&quot;]"),
        "groups kept: {body}"
    );
    assert!(!body.contains(">nonce<"), "registered claims dropped");
}

/// The session a successful callback created, read back through its cookie.
async fn signed_in_identity(t: &TestApp, m: &MockIdp, claims: serde_json::Value) -> Identity {
    *m.token.lock().unwrap() = Some(sign(TEST_KEY_1, "k1", &claims));
    let cookie = t.login_cookie("st-1", "n-1", VERIFIER);
    let res = t
        .get("/oauth2/callback?code=abc&state=st-1", Some(&cookie))
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let value = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .find_map(|v| {
            let v = v.to_str().unwrap();
            v.strip_prefix("_pomerium=")
                .map(|rest| rest.split(';').next().unwrap().to_string())
        })
        .unwrap();
    let opened = crate::cookies::Sealer::new(&KEY)
        .open_session(&value, t.now())
        .unwrap();
    t.store
        .inner
        .get_session(&opened.session_id)
        .await
        .unwrap()
        .unwrap()
        .identity
}

#[tokio::test]
async fn only_a_verified_email_reaches_the_session() {
    let m = mock().await;
    let t = app_for(&m);
    let id = signed_in_identity(&t, &m, claims(&m)).await;
    assert_eq!(id.email, "alice@example.com", "email_verified: true");

    let mut c = claims(&m);
    c["email_verified"] = serde_json::json!(false);
    let id = signed_in_identity(&t, &m, c).await;
    assert_eq!(id.email, "", "email_verified: false");
    assert_eq!(id.verified_email(), None);
    assert_eq!(
        id.claim_values("email"),
        vec!["alice@example.com"],
        "raw claim kept"
    );

    let mut absent = claims(&m);
    absent.as_object_mut().unwrap().remove("email_verified");
    let id = signed_in_identity(&t, &m, absent.clone()).await;
    assert_eq!(id.email, "", "no claim: not verified by default");

    // `assume_email_verified: true`: an absent claim counts, `false` still does not.
    let mut cfg = config("http://127.0.0.1:9", &m.base);
    cfg.assume_email_verified = true;
    let t = TestApp::build(cfg, None);
    let id = signed_in_identity(&t, &m, absent).await;
    assert_eq!(id.email, "alice@example.com", "no claim, assumed verified");
    let mut c = claims(&m);
    c["email_verified"] = serde_json::json!(false);
    let id = signed_in_identity(&t, &m, c).await;
    assert_eq!(id.email, "", "false is never assumed away");
}

#[tokio::test]
async fn rotated_key_is_fetched_once_on_unknown_kid() {
    let m = mock().await;
    let t = app_for(&m);
    // Discovery happens with only k1 published.
    let code = t.open_request("SHA256:abc").await;
    let res = t
        .get(&format!("/.pomerium/sign_in?user_code={code}"), None)
        .await;
    assert_eq!(res.status(), StatusCode::FOUND);
    // The IdP rotates to k2; the first token naming k2 triggers a JWKS refresh.
    m.keys.lock().unwrap().push(jwk(TEST_KEY_2, "k2"));
    *m.token.lock().unwrap() = Some(sign(TEST_KEY_2, "k2", &claims(&m)));
    let cookie = t.login_cookie("st-1", "n-1", VERIFIER);
    let (status, body, sets) = callback(&t, "st-1", Some(&cookie)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert!(sets);
}

#[tokio::test]
async fn wrong_or_missing_state_is_400_and_creates_nothing() {
    let m = mock().await;
    let t = app_for(&m);
    *m.token.lock().unwrap() = Some(sign(TEST_KEY_1, "k1", &claims(&m)));
    let cookie = t.login_cookie("st-1", "n-1", VERIFIER);
    for (state, cookie) in [
        ("st-2", Some(cookie.as_str())),
        ("", Some(cookie.as_str())),
        ("st-1", None),
        ("st-1", Some("_pomerium_login=forged")),
    ] {
        let (status, _, sets) = callback(&t, state, cookie).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{state} {cookie:?}");
        assert!(!sets);
    }
    assert_eq!(t.store.sessions_created.load(Ordering::SeqCst), 0);
    assert!(
        m.token.lock().unwrap().is_some(),
        "the code was never exchanged"
    );
}

#[tokio::test]
async fn refused_code_is_400() {
    let m = mock().await;
    let t = app_for(&m);
    refused(&t, &m, None, REFUSED, "replayed code").await;
}

#[tokio::test]
async fn forged_signature_is_refused() {
    let m = mock().await;
    let t = app_for(&m);
    // Signed with another key but claiming the IdP's key id.
    let forged = sign(TEST_KEY_2, "k1", &claims(&m));
    refused(&t, &m, Some(forged), UNVERIFIED, "bad signature").await;
    // Signed with an unknown key id (a JWKS refresh cannot help).
    let unknown = sign(TEST_KEY_2, "k2", &claims(&m));
    refused(&t, &m, Some(unknown), UNVERIFIED, "unknown kid").await;
    // Signature stripped (alg none).
    let good = sign(TEST_KEY_1, "k1", &claims(&m));
    let mut parts = good.split('.');
    let (_, payload) = (parts.next(), parts.next().unwrap());
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#)
    );
    refused(&t, &m, Some(none), UNVERIFIED, "alg none").await;
}

#[tokio::test]
async fn wrong_nonce_audience_issuer_or_expiry_is_refused() {
    let m = mock().await;
    let t = app_for(&m);
    let cases = [
        ("nonce", serde_json::json!("n-other")),
        ("aud", serde_json::json!("someone-else")),
        ("iss", serde_json::json!("http://evil.example")),
        (
            "exp",
            serde_json::json!(SystemClock.now().unix_seconds() - 3600),
        ),
    ];
    for (k, v) in cases {
        let mut c = claims(&m);
        c[k] = v;
        refused(&t, &m, Some(sign(TEST_KEY_1, "k1", &c)), UNVERIFIED, k).await;
    }
    let mut c = claims(&m);
    c.as_object_mut().unwrap().remove("nonce");
    refused(
        &t,
        &m,
        Some(sign(TEST_KEY_1, "k1", &c)),
        UNVERIFIED,
        "no nonce",
    )
    .await;
}

#[tokio::test]
async fn unreachable_idp_is_502_and_discovery_is_retried() {
    // Reserve a port, then free it: nothing listens there yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let t = TestApp::build(config("http://127.0.0.1:9", &base), None);
    let code = t.open_request("SHA256:abc").await;
    let uri = format!("/.pomerium/sign_in?user_code={code}");
    let (status, body) = read(t.get(&uri, None).await).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("identity provider unreachable"));

    // The IdP comes up: the next request discovers it.
    let m = serve_mock(
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap(),
    )
    .await;
    let res = t.get(&uri, None).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert!(location(&res).starts_with(&format!("{}/authorize?", m.base)));

    // It goes down after discovery: the token exchange fails with 502.
    m.shutdown.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let cookie = t.login_cookie("st-1", "n-1", VERIFIER);
    let (status, body, sets) = callback(&t, "st-1", Some(&cookie)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(!sets);
}
