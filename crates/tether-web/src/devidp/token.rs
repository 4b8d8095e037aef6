//! The dev IdP's `/token`: client authentication (basic or post), the single-use
//! code, the redirect URI and the PKCE verifier are all checked before an RS256 ID
//! token is signed. Errors use the OAuth 2.0 JSON error format.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use sha2::{Digest, Sha256};
use tether_core::{Clock, SystemClock};

use super::{same, DevState, IssuedCode};
use crate::form::Fields;
use tether_core::config::DevIdpUser;

/// ID token lifetime.
const TOKEN_TTL_SECS: i64 = 3600;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn percent_decode(s: &str) -> String {
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `(client_id, client_secret)` from the Authorization header or the form.
fn client_credentials(headers: &HeaderMap, f: &Fields) -> Option<(String, String)> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let b64 = auth.strip_prefix("Basic ")?;
        let raw = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
        let (id, secret) = raw.split_once(':')?;
        return Some((percent_decode(id), percent_decode(secret)));
    }
    Some((
        f.get("client_id")?.to_string(),
        f.get("client_secret")?.to_string(),
    ))
}

/// `POST /dev-idp/token`.
pub(super) async fn token(State(s): State<DevState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = Fields::parse(&body);
    if let Err(refused) = authenticate_client(&s, &headers, &f) {
        return refused.response();
    }
    if f.get("grant_type") != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    let now = SystemClock.now();
    match redeem(&s, &f, now) {
        Ok((issued, user)) => issue(&s, &issued, user, now),
        Err(refused) => refused.response(),
    }
}

/// An OAuth error answer: status, `error` and `error_description`.
struct OAuthError(StatusCode, &'static str, &'static str);

impl OAuthError {
    fn response(self) -> Response {
        oauth_error(self.0, self.1, self.2)
    }
}

/// The client's id and secret (Basic or form), checked in constant time.
fn authenticate_client(s: &DevState, headers: &HeaderMap, f: &Fields) -> Result<(), OAuthError> {
    let configured_secret = s
        .config
        .idp
        .client_secret
        .as_ref()
        .map(|x| x.expose().as_str());
    let authenticated = match (client_credentials(headers, f), configured_secret) {
        (Some((id, secret)), Some(expected)) => {
            id == s.config.idp.client_id && same(&secret, expected)
        }
        _ => false,
    };
    if authenticated {
        Ok(())
    } else {
        Err(OAuthError(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ))
    }
}

/// The authorization code, redeemed once: unexpired, for this client and
/// redirect URI, with the PKCE verifier, for a user that still exists.
fn redeem<'s>(
    s: &'s DevState,
    f: &Fields,
    now: tether_core::Timestamp,
) -> Result<(IssuedCode, &'s DevIdpUser), OAuthError> {
    let grant_error = |why| OAuthError(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let code = f.get("code").unwrap_or_default();
    // Single use: the code is removed whether or not the rest checks out.
    let issued = match s.idp.inner.codes.lock() {
        Ok(mut codes) => codes.remove(code),
        Err(_) => {
            return Err(OAuthError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "state poisoned",
            ))
        }
    };
    let Some(issued) = issued.filter(|c| c.expires > now) else {
        return Err(grant_error("unknown, used or expired code"));
    };
    if issued.client_id != s.config.idp.client_id
        || f.get("redirect_uri") != Some(issued.redirect_uri.as_str())
    {
        return Err(grant_error("client or redirect_uri mismatch"));
    }
    let verifier = f.get("code_verifier").unwrap_or_default();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if verifier.len() < 43 || !same(&challenge, &issued.code_challenge) {
        return Err(grant_error("PKCE verification failed"));
    }
    let user = s
        .idp
        .inner
        .users
        .iter()
        .find(|u| u.username == issued.username)
        .ok_or_else(|| grant_error("user no longer exists"))?;
    Ok((issued, user))
}

/// The token response: a signed ID token for `user` and an opaque access token.
fn issue(
    s: &DevState,
    issued: &IssuedCode,
    user: &DevIdpUser,
    now: tether_core::Timestamp,
) -> Response {
    let server_error = |why| oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", why);
    let iat = now.unix_seconds();
    let claims = serde_json::json!({
        "iss": s.idp.issuer(),
        "aud": issued.client_id,
        "sub": user.username,
        "email": user.email,
        "email_verified": true,
        "name": user.name,
        "groups": user.groups,
        "nonce": issued.nonce,
        "iat": iat,
        "auth_time": iat,
        "exp": iat + TOKEN_TTL_SECS,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(s.idp.inner.kid.clone());
    let id_token = match jsonwebtoken::encode(&header, &claims, &s.idp.inner.key) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "dev IdP: signing the ID token failed");
            return server_error("signing failed");
        }
    };
    let mut raw = [0u8; 32];
    if getrandom::getrandom(&mut raw).is_err() {
        return server_error("no randomness");
    }
    tracing::info!(user = %user.username, "dev IdP: tokens issued");
    let mut body = HashMap::new();
    body.insert(
        "access_token",
        serde_json::json!(URL_SAFE_NO_PAD.encode(raw)),
    );
    body.insert("token_type", serde_json::json!("Bearer"));
    body.insert("expires_in", serde_json::json!(TOKEN_TTL_SECS));
    body.insert("id_token", serde_json::json!(id_token));
    (StatusCode::OK, Json(body)).into_response()
}
