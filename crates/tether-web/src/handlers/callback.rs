//! `GET /oauth2/callback`: the OIDC redirect URI. Checks `state` against the
//! login-state cookie, exchanges the code (PKCE), verifies the ID token, creates the
//! web session in the store (with its sealed refresh token, for the identity
//! refresh in `refresh`) and sets the session cookie (plus the one-shot
//! "opened directly" mark when the login began from a directly opened code link,
//! see `sign_in`). Any failure creates nothing.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tether_core::audit::AuditEvent;
use tether_core::Session;

use super::{add_cookie, is_local_path, redirect};
use crate::cookies::{
    clear_cookie, direct_cookie_name, login_cookie_name, read_cookies, set_cookie, DirectMark,
    DIRECT_MARK_TTL_SECS,
};
use crate::error::WebError;
use crate::form::Fields;
use crate::session::{new_session_id, session_set_cookie};

/// Equality without an early exit.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `GET /oauth2/callback?code=…&state=…`.
pub(crate) async fn callback(
    State(state): State<crate::State>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let query = Fields::query(query.as_deref());
    let now = state.clock.now();
    let login_name = login_cookie_name(&state.cookie_name);
    let login = read_cookies(&headers, &login_name)
        .into_iter()
        .find_map(|v| state.sealer.open_login(v, now))
        .ok_or_else(|| WebError::SignInFailed {
            msg: "This sign-in could not be matched to your browser; start again from the link.",
            detail: "login-state cookie missing, invalid or expired".into(),
        })?;
    let got_state = query.get("state").unwrap_or_default();
    if !same(got_state, &login.state) {
        return Err(WebError::SignInFailed {
            msg: "This sign-in could not be matched to your browser; start again from the link.",
            detail: "state parameter does not match the login-state cookie".into(),
        });
    }
    if let Some(err) = query.get("error") {
        return Err(WebError::SignInFailed {
            msg: "The identity provider did not sign you in.",
            detail: format!(
                "IdP returned error {err}: {}",
                query.get("error_description").unwrap_or_default()
            ),
        });
    }
    let code = query
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or(WebError::BadRequest("The sign-in response has no code."))?;

    let signed_in = state
        .oidc
        .finish(code, &login.pkce_verifier, &login.nonce)
        .await?;
    let session = Session {
        id: new_session_id()?,
        identity: signed_in.identity,
        issued_at: now,
        expires_at: now.plus(state.config.cookie_expire),
    };
    state.store.create_session(&session).await?;
    crate::refresh::remember_token(&state, &session, signed_in.refresh_token.as_ref()).await?;
    AuditEvent::SignIn {
        user_id: session.user_id().to_string(),
        email: session.identity.email.clone(),
        session_expires: session.expires_at.rfc3339(),
    }
    .emit();

    let to = if is_local_path(&login.return_to) {
        login.return_to.as_str()
    } else {
        "/.pomerium/"
    };
    let mut res = redirect(StatusCode::SEE_OTHER, to)?;
    add_cookie(&mut res, &session_set_cookie(&state, &session)?)?;
    add_cookie(&mut res, &clear_cookie(&login_name, state.secure_cookies))?;
    if login.opened_directly {
        // The redirect back arrives as `cross-site` (it passed through the IdP):
        // carry "the person opened this link directly" to the sign-in page.
        let mark = state.sealer.seal_direct(&DirectMark {
            return_to: to.to_string(),
            session_id: session.id.clone(),
            expires: now
                .plus(std::time::Duration::from_secs(DIRECT_MARK_TTL_SECS))
                .millis(),
        })?;
        add_cookie(
            &mut res,
            &set_cookie(
                &direct_cookie_name(&state.cookie_name),
                &mark,
                DIRECT_MARK_TTL_SECS,
                state.secure_cookies,
            ),
        )?;
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn same_compares_exactly() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(same("", ""));
    }
}
