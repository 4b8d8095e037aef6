//! `GET|POST /.pomerium/sign_out`: a confirmation form, then the store ends the web
//! session and revokes all of the user's client bindings in one transaction (their
//! connections end through the change feed). Remembered keys stay. With
//! `signout_redirect_url` the browser is then sent there (303), as Pomerium does.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tether_core::audit::{AuditEvent, Via};

use super::sign_in::display_name;
use super::{add_cookie, redirect};
use crate::cookies::clear_cookie;
use crate::error::WebError;
use crate::form::Fields;
use crate::pages::{self, html};
use crate::session::{current, require_csrf};

/// `GET /.pomerium/sign_out`: the confirm button (a CSRF-protected form).
pub(crate) async fn confirm(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    match current(&state, &headers).await? {
        Some(session) => {
            let csrf = state.csrf.token(&session.id);
            let mut res = html(
                StatusCode::OK,
                pages::sign_out_confirm(display_name(&session), &csrf),
            );
            if let Some(origin) = redirect_origin(&state) {
                let csp = HeaderValue::from_str(&crate::csp_with_form_target(&origin))
                    .map_err(|e| WebError::Internal(format!("bad CSP: {e}")))?;
                res.headers_mut()
                    .insert(header::CONTENT_SECURITY_POLICY, csp);
            }
            Ok(res)
        }
        None => Ok(html(StatusCode::OK, pages::not_signed_in())),
    }
}

/// `POST /.pomerium/sign_out` (`csrf_token`).
pub(crate) async fn sign_out(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    if current(&state, &headers).await?.is_none() {
        let mut res = html(StatusCode::OK, pages::not_signed_in());
        add_cookie(
            &mut res,
            &clear_cookie(&state.cookie_name, state.secure_cookies),
        )?;
        return Ok(res);
    }
    let fields = Fields::parse(&body);
    let session = require_csrf(&state, &headers, &fields).await?;
    let out = state.store.sign_out(&session.id, "signed out").await?;
    AuditEvent::SignOut {
        via: Via::Web,
        user_id: session.user_id().to_string(),
        email: session.identity.email.clone(),
        revoked_bindings: out.revoked_bindings.len(),
    }
    .emit();
    let mut res = match &state.config.signout_redirect_url {
        Some(url) => redirect(StatusCode::SEE_OTHER, url)?,
        None => html(
            StatusCode::OK,
            pages::signed_out(out.revoked_bindings.len()),
        ),
    };
    add_cookie(
        &mut res,
        &clear_cookie(&state.cookie_name, state.secure_cookies),
    )?;
    Ok(res)
}

/// The origin (`https://host[:port]`) of `signout_redirect_url`, when set.
fn redirect_origin(state: &crate::State) -> Option<String> {
    let url = url::Url::parse(state.config.signout_redirect_url.as_deref()?).ok()?;
    Some(url.origin().ascii_serialization()).filter(|o| o != "null")
}
