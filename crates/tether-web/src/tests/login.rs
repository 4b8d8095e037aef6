//! The whole browser flow over real HTTP on a loopback port: tether's OIDC client
//! against the dev IdP (freshly generated key, as `tether demo` runs it), then the
//! Verify page and Authorize; plus the dev IdP's own refusals.

use std::time::Duration;

use openidconnect::reqwest;
use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use tether_core::RequestStatus;

use super::support::*;
use crate::DevIdp;
use tether_store::Store;

const FP: &str = "SHA256:uXaGbDqkdbGq3Hg5i3FUZUDD5A0pNk7S6f4Cq0VMxRA";

fn client(cookies: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(cookies)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn loc(res: &reqwest::Response) -> String {
    res.headers()
        .get(LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with('/') {
        format!("{base}{loc}")
    } else {
        loc.to_string()
    }
}

#[tokio::test]
async fn full_oidc_login_against_dev_idp_then_authorize() {
    let t = TestApp::spawn_with(|users, issuer| DevIdp::new(users, issuer).unwrap()).await;
    let browser = client(true);
    let code = t.open_request(FP).await;
    let sign_in = format!("{}/.pomerium/sign_in?user_code={code}", t.base);

    // 1. No session: off to the IdP.
    let res = browser.get(&sign_in).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let login_cookie = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("_pomerium_login="))
        .unwrap();
    let authorize = loc(&res);
    assert!(authorize.starts_with(&format!("{}/dev-idp/authorize?", t.base)));

    // 2. The IdP's login form, labelled development only.
    let res = browser.get(&authorize).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let form = res.text().await.unwrap();
    assert!(form.contains("development only"));
    assert!(form.contains("tether"));

    // 3. Submit it (the hidden fields carry the authorization request).
    let url = url::Url::parse(&authorize).unwrap();
    let mut fields: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let post_to = format!("{}/dev-idp/authorize", t.base);
    let mut wrong = fields.clone();
    wrong.push(("username".into(), "alice".into()));
    wrong.push(("password".into(), "nope".into()));
    let res = browser.post(&post_to).form(&wrong).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    fields.push(("username".into(), "alice".into()));
    fields.push(("password".into(), "alice-pw".into()));
    let res = browser.post(&post_to).form(&fields).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let callback = loc(&res);
    assert!(callback.starts_with(&format!("{}/oauth2/callback?code=", t.base)));

    // 4. The callback: code exchange over HTTP, session, back to the sign-in link.
    let res = browser.get(&callback).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        res.text().await
    );
    assert_eq!(absolute(&t.base, &loc(&res)), sign_in);

    // 5. The Verify page, then Authorize.
    let res = browser.get(&sign_in).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    assert!(page.contains(FP) && page.contains("alice@example.com"));
    let csrf = hidden(&page, "csrf_token");
    let res = browser
        .post(&sign_in)
        .form(&[("confirm", "true"), ("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("Sign in successful"));

    let (binding, session) = t.store.binding_for_key(FP).await.unwrap().unwrap();
    assert_eq!(binding.user_id, "alice");
    let session = session.unwrap();
    assert_eq!(session.identity.email, "alice@example.com");
    assert_eq!(session.identity.name.as_deref(), Some("Alice Example"));
    assert_eq!(session.identity.claim_values("groups"), vec!["sre", "dev"]);
    let req = t.store.get_request(&code).await.unwrap().unwrap();
    assert!(matches!(req.status, RequestStatus::Approved { .. }));

    // The bindings page works in the same browser.
    let res = browser
        .get(format!("{}/.pomerium/session_binding_info", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains(FP));

    // 6. Replaying the callback (same code, same login state): the IdP refuses.
    let replay = client(false)
        .get(&callback)
        .header("cookie", &login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert!(replay.headers().get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn dev_idp_refuses_bad_authorization_and_token_requests() {
    let t = TestApp::spawn().await;
    let http = client(false);
    let disco: serde_json::Value = http
        .get(format!(
            "{}/dev-idp/.well-known/openid-configuration",
            t.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(disco["issuer"], format!("{}/dev-idp", t.base));
    let jwks: serde_json::Value = http
        .get(format!("{}/dev-idp/jwks", t.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "RS256");

    let good = [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", &format!("{}/oauth2/callback", t.base)),
        ("scope", "openid email"),
        ("state", "s"),
        ("nonce", "n"),
        (
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        ),
        ("code_challenge_method", "S256"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let authorize = format!("{}/dev-idp/authorize", t.base);
    let res = http.get(&authorize).query(&good).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    for (k, bad) in [
        ("client_id", "other"),
        ("redirect_uri", "http://evil.example/cb"),
        ("code_challenge_method", "plain"),
        ("nonce", ""),
        ("response_type", "token"),
    ] {
        let q: Vec<(String, String)> = good
            .iter()
            .map(|(a, b)| (a.clone(), if a == k { bad.to_string() } else { b.clone() }))
            .collect();
        let res = http.get(&authorize).query(&q).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{k}");
    }

    // A real code, then token requests that must fail.
    let mut form = good.to_vec();
    form.push(("username".into(), "bob".into()));
    form.push(("password".into(), "bob-pw".into()));
    let res = http.post(&authorize).form(&form).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cb = url::Url::parse(&loc(&res)).unwrap();
    let code = cb
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(cb.query_pairs().find(|(k, _)| k == "state").unwrap().1, "s");

    let token = format!("{}/dev-idp/token", t.base);
    let redirect = format!("{}/oauth2/callback", t.base);
    let req = |secret: &str, verifier: &str| {
        http.post(&token)
            .basic_auth(CLIENT_ID, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect.as_str()),
                ("code_verifier", verifier),
            ])
    };
    // RFC 7636 appendix B verifier for the challenge above.
    let verifier = "dBjftJeZ4CVP-mJ0cPmFNi6sRjbBanqyK7pOWc6dFH8";
    let res = req("wrong", verifier).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Wrong verifier burns the code (single use).
    let res = req(CLIENT_SECRET, "dBjftJeZ4CVP-mJ0cPmFNi6sRjbBanqyK7pOWc6dFH9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = req(CLIENT_SECRET, verifier).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

/// Signs in through the dev IdP from a fresh browser, starting at the code link
/// with `Sec-Fetch-Site: first` and coming back the way a browser does after a
/// round trip through another site (`cross-site`). Returns the sign-in page and
/// the browser (with its session).
async fn round_trip(t: &TestApp, code: &str, first: &str) -> (String, reqwest::Client) {
    let browser = client(true);
    let sign_in = format!("{}/.pomerium/sign_in?user_code={code}", t.base);
    let res = browser
        .get(&sign_in)
        .header("sec-fetch-site", first)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let authorize = loc(&res);
    let url = url::Url::parse(&authorize).unwrap();
    let mut fields: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    fields.push(("username".into(), "alice".into()));
    fields.push(("password".into(), "alice-pw".into()));
    let res = browser
        .post(format!("{}/dev-idp/authorize", t.base))
        .header("sec-fetch-site", "same-origin")
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = browser
        .get(loc(&res))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(absolute(&t.base, &loc(&res)), sign_in);
    let res = browser
        .get(&sign_in)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    (res.text().await.unwrap(), browser)
}

/// Issue 12: Remember me approves at once only for a link the person opened
/// directly, and that fact survives the IdP round trip.
#[tokio::test]
async fn remember_me_across_the_idp_round_trip_only_when_opened_directly() {
    let t = TestApp::spawn_with(|users, issuer| DevIdp::new(users, issuer).unwrap()).await;
    // Alice authorizes a first code with Remember me.
    let code = t.open_request(FP).await;
    let (page, browser) = round_trip(&t, &code, "none").await;
    assert!(page.contains("id=\"authorize\""), "nothing remembered yet");
    let csrf = hidden(&page, "csrf_token");
    let res = browser
        .post(format!("{}/.pomerium/sign_in?user_code={code}", t.base))
        .form(&[
            ("confirm", "true"),
            ("create_id_binding", "true"),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(res.text().await.unwrap().contains("Sign in successful"));

    // A link opened from the terminal in a signed-out browser: approved at once
    // after the IdP.
    let code = t.open_request(FP).await;
    let (page, _) = round_trip(&t, &code, "none").await;
    assert!(page.contains("Sign in successful"), "{page}");
    let req = t.store.get_request(&code).await.unwrap().unwrap();
    assert!(matches!(req.status, RequestStatus::Approved { .. }));

    // The same, started by another site: the Verify page, nothing decided.
    let code = t.open_request(FP).await;
    let (page, _) = round_trip(&t, &code, "cross-site").await;
    assert!(page.contains("id=\"not-direct\""), "{page}");
    let req = t.store.get_request(&code).await.unwrap().unwrap();
    assert_eq!(req.status, RequestStatus::Pending);
}
