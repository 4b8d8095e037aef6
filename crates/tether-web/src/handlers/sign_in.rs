//! `GET|POST /.pomerium/sign_in?user_code=C`: the Verify page and its decision.
//!
//! The code is checked before anything else (so a bad link never costs a sign-in):
//! malformed or unknown → 400 `code invalid`, decided → 409, expired → 400. Then a
//! signed-out browser is sent through the OIDC login; a user who chose Remember me
//! for this key is approved at once; everyone else sees the Verify page.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tether_core::{BindingRequest, RequestStatus, Session, UserCode};

use super::start_login;
use crate::error::WebError;
use crate::form::Fields;
use crate::pages::{self, html};
use crate::session::{current, require_csrf};
use crate::AppState;

/// Who the page says is signed in.
pub(crate) fn display_name(session: &Session) -> &str {
    if session.identity.email.is_empty() {
        session.user_id()
    } else {
        &session.identity.email
    }
}

/// The pending, unexpired request for a code taken from the URL.
async fn pending_request(state: &AppState, raw: Option<&str>) -> Result<BindingRequest, WebError> {
    let code = UserCode::parse(raw.unwrap_or_default()).map_err(|_| WebError::CodeInvalid)?;
    let req = state
        .store
        .get_request(code.as_str())
        .await?
        .ok_or(WebError::CodeInvalid)?;
    if req.status != RequestStatus::Pending {
        return Err(WebError::CodeProcessed);
    }
    if req.is_expired(state.clock.now()) {
        return Err(WebError::CodeExpired);
    }
    Ok(req)
}

/// `GET /.pomerium/sign_in?user_code=C`.
pub(crate) async fn show(
    State(state): State<crate::State>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let query = Fields::query(query.as_deref());
    let req = pending_request(&state, query.get("user_code")).await?;
    let Some(session) = current(&state, &headers).await? else {
        return start_login(
            &state,
            &format!("/.pomerium/sign_in?user_code={}", req.code),
        )
        .await;
    };
    let now = state.clock.now();

    if let Some(ib) = state
        .store
        .identity_binding_for_key(&req.fingerprint)
        .await?
    {
        if ib.user_id == session.user_id() {
            let approval = state
                .store
                .approve_request(
                    req.code.as_str(),
                    &session,
                    false,
                    state.config.ssh_binding_max_ttl,
                    now,
                )
                .await?;
            tracing::info!(
                target: "audit",
                event = "code_decided",
                outcome = "approved",
                via = "remember_me",
                user = %session.user_id(),
                email = %session.identity.email,
                fingerprint = %req.fingerprint,
                binding_id = %approval.binding.id,
            );
            return Ok(html(
                StatusCode::OK,
                pages::success(display_name(&session), true),
            ));
        }
    }

    let csrf = state.csrf.token(&session.id);
    Ok(html(
        StatusCode::OK,
        pages::verify::page(&req, display_name(&session), &csrf, now),
    ))
}

/// `POST /.pomerium/sign_in?user_code=C` with `confirm`, `create_id_binding`,
/// `csrf_token`.
pub(crate) async fn decide(
    State(state): State<crate::State>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let fields = Fields::parse(&body);
    let session = require_csrf(&state, &headers, &fields).await?;
    let query = Fields::query(query.as_deref());
    let raw_code = query.get("user_code").or_else(|| fields.get("user_code"));
    let code = UserCode::parse(raw_code.unwrap_or_default()).map_err(|_| WebError::CodeInvalid)?;
    let now = state.clock.now();
    let who = display_name(&session);

    match fields.get("confirm") {
        Some("true") => {
            let remember = fields.get("create_id_binding") == Some("true");
            let result = state
                .store
                .approve_request(
                    code.as_str(),
                    &session,
                    remember,
                    state.config.ssh_binding_max_ttl,
                    now,
                )
                .await;
            let approval = match result {
                Ok(a) => a,
                Err(e) => {
                    tracing::info!(
                        target: "audit",
                        event = "code_decision_refused",
                        user = %session.user_id(),
                        reason = %e,
                    );
                    return Err(e.into());
                }
            };
            tracing::info!(
                target: "audit",
                event = "code_decided",
                outcome = "approved",
                user = %session.user_id(),
                email = %session.identity.email,
                fingerprint = %approval.binding.fingerprint,
                binding_id = %approval.binding.id,
                remembered = approval.remembered,
            );
            Ok(html(StatusCode::OK, pages::success(who, false)))
        }
        Some("false") => {
            state
                .store
                .deny_request(code.as_str(), session.user_id(), now)
                .await?;
            tracing::info!(
                target: "audit",
                event = "code_decided",
                outcome = "denied",
                user = %session.user_id(),
                email = %session.identity.email,
            );
            Ok(html(StatusCode::OK, pages::denied(who)))
        }
        _ => Err(WebError::BadRequest("Choose Authorize or Deny.")),
    }
}
