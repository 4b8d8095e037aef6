//! The route handlers of SPEC §4, one module per page family. Handlers check in a
//! fixed order — CSRF, then the code or binding, then the store transaction — and
//! return [`WebError`] for everything that is not the happy path.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::cookies::{login_cookie_name, set_cookie, LoginState, LOGIN_STATE_TTL_SECS};
use crate::error::WebError;
use crate::AppState;

pub(crate) mod bindings;
pub(crate) mod callback;
pub(crate) mod console;
pub(crate) mod misc;
pub(crate) mod recordings;
pub(crate) mod sign_in;
pub(crate) mod sign_out;
pub(crate) mod workload;

/// A redirect response (`302` for GET flows, `303` after a POST).
pub(crate) fn redirect(status: StatusCode, location: &str) -> Result<Response, WebError> {
    let loc = HeaderValue::from_str(location)
        .map_err(|e| WebError::Internal(format!("bad redirect location: {e}")))?;
    let mut res = status.into_response();
    res.headers_mut().insert(header::LOCATION, loc);
    Ok(res)
}

/// Appends a `Set-Cookie` header.
pub(crate) fn add_cookie(res: &mut Response, cookie: &str) -> Result<(), WebError> {
    let v = HeaderValue::from_str(cookie)
        .map_err(|e| WebError::Internal(format!("bad cookie: {e}")))?;
    res.headers_mut().append(header::SET_COOKIE, v);
    Ok(())
}

/// Whether the browser says a person opened this URL directly — typed, pasted, or
/// handed over by another program such as the terminal — rather than another site
/// or page navigating there (Fetch Metadata: `Sec-Fetch-Site: none`). A missing
/// header (an old browser, a script) is not direct.
pub(crate) fn opened_directly(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"none")
}

/// Whether `path` is a safe local return target (no scheme, no other host).
pub(crate) fn is_local_path(path: &str) -> bool {
    path.starts_with('/') && !path.starts_with("//") && !path.contains('\\')
}

/// Sends the browser to the IdP, remembering state, nonce, PKCE verifier,
/// `return_to` and whether the page was opened directly (`Sec-Fetch-Site: none`)
/// in the encrypted login-state cookie.
pub(crate) async fn start_login(
    state: &AppState,
    return_to: &str,
    opened_directly: bool,
) -> Result<Response, WebError> {
    let start = state.oidc.start().await?;
    let return_to = if is_local_path(return_to) {
        return_to
    } else {
        "/.pomerium/"
    };
    let now = state.clock.now();
    let sealed = state.sealer.seal_login(&LoginState {
        state: start.state,
        nonce: start.nonce,
        pkce_verifier: start.pkce_verifier,
        return_to: return_to.to_string(),
        opened_directly,
        expires: now
            .plus(std::time::Duration::from_secs(LOGIN_STATE_TTL_SECS))
            .millis(),
    })?;
    let mut res = redirect(StatusCode::FOUND, &start.url)?;
    add_cookie(
        &mut res,
        &set_cookie(
            &login_cookie_name(&state.cookie_name),
            &sealed,
            LOGIN_STATE_TTL_SECS,
            state.secure_cookies,
        ),
    )?;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sec_fetch_site_none_is_direct() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("sec-fetch-site", HeaderValue::from_static(v));
            opened_directly(&h)
        };
        assert!(with("none"));
        for v in ["cross-site", "same-site", "same-origin", "None", ""] {
            assert!(!with(v), "{v}");
        }
        assert!(!opened_directly(&HeaderMap::new()), "absent header");
    }

    #[test]
    fn local_paths_only() {
        assert!(is_local_path("/.pomerium/sign_in?user_code=x"));
        assert!(!is_local_path("//evil.example/"));
        assert!(!is_local_path("https://evil.example/"));
        assert!(!is_local_path("/\\evil.example"));
        assert!(!is_local_path(""));
    }
}
