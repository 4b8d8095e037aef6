//! The browser's web session: from the encrypted cookie to a live [`Session`] in the
//! store, and the CSRF gate every POST passes first. A cookie that does not open,
//! has expired, or names a session the store no longer holds (or holds expired)
//! means "signed out"; a store that cannot answer means fail closed (503).

use axum::http::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tether_core::Session;

use crate::cookies::{read_cookies, set_cookie, SessionCookie};
use crate::error::WebError;
use crate::form::Fields;
use crate::AppState;

/// The live session the request's cookie names, if any.
pub(crate) async fn current(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Session>, WebError> {
    let now = state.clock.now();
    for value in read_cookies(headers, &state.cookie_name) {
        if let Some(c) = state.sealer.open_session(value, now) {
            let session = state.store.get_session(&c.session_id).await?;
            return Ok(session.filter(|s| s.is_live(now)));
        }
    }
    Ok(None)
}

/// The CSRF gate for POSTs: a live session AND its token in `csrf_token`, or 403.
pub(crate) async fn require_csrf(
    state: &AppState,
    headers: &HeaderMap,
    fields: &Fields,
) -> Result<Session, WebError> {
    let session = current(state, headers).await?.ok_or(WebError::Csrf)?;
    let token = fields.get("csrf_token").unwrap_or_default();
    if !state.csrf.verify(&session.id, token) {
        tracing::warn!(user = %session.user_id(), "POST with an invalid CSRF token refused");
        return Err(WebError::Csrf);
    }
    Ok(session)
}

/// A fresh session id: 32 random bytes, base64url.
pub(crate) fn new_session_id() -> Result<String, WebError> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b)
        .map_err(|e| WebError::Internal(format!("random source unavailable: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// The `Set-Cookie` value carrying `session`.
pub(crate) fn session_set_cookie(state: &AppState, session: &Session) -> Result<String, WebError> {
    let value = state.sealer.seal_session(&SessionCookie {
        session_id: session.id.clone(),
        expires: session.expires_at.millis(),
    })?;
    let max_age = state.clock.now().until(session.expires_at).as_secs();
    Ok(set_cookie(
        &state.cookie_name,
        &value,
        max_age,
        state.secure_cookies,
    ))
}
