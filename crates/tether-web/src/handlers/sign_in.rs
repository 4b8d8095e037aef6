//! `GET|POST /.pomerium/sign_in?user_code=C`: the Verify page and its decision.
//!
//! The code is checked before anything else (so a bad link never costs a sign-in):
//! malformed or unknown → 400 `code invalid`, decided → 409, expired → 400. Then a
//! signed-out browser is sent through the OIDC login; a user who chose Remember me
//! for this key is approved at once — but only when the person opened the link
//! directly (issue 12): the browser sent `Sec-Fetch-Site: none` (from the terminal,
//! the address bar), or did so before an IdP round trip, as the callback's one-shot
//! mark for this code and session says. The session cookie is SameSite=Lax, so
//! another site can navigate a signed-in browser to a code link; without this check
//! that navigation would silently bind whatever key waits behind the code. Everyone
//! else, and every indirect navigation, sees the Verify page (one click).
//!
//! Deciding is owner-checked both ways: when a request's key is tied to a user
//! (see `check_may_deny`), only that user may authorize or deny it.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tether_core::audit::{AuditEvent, Via};
use tether_core::binding::{key_owner, may_bind};
use tether_core::{BindingRequest, RequestStatus, Session, Timestamp, UserCode};

use super::{add_cookie, opened_directly, start_login};
use crate::cookies::{clear_cookie, direct_cookie_name, read_cookies};
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
    let return_to = format!("/.pomerium/sign_in?user_code={}", req.code);
    let Some(session) = current(&state, &headers).await? else {
        return start_login(&state, &return_to, opened_directly(&headers)).await;
    };
    let now = state.clock.now();
    let direct_name = direct_cookie_name(&state.cookie_name);
    let had_mark = !read_cookies(&headers, &direct_name).is_empty();
    let direct = opened_directly(&headers)
        || read_cookies(&headers, &direct_name).into_iter().any(|v| {
            state
                .sealer
                .open_direct(v, now)
                .is_some_and(|m| m.return_to == return_to && m.session_id == session.id)
        });

    let remembered = state
        .store
        .identity_binding_for_key(&req.fingerprint)
        .await?
        .is_some_and(|ib| ib.user_id == session.user_id());
    let mut res = if remembered {
        if direct {
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
            AuditEvent::CodeDecided {
                via: Via::RememberMe,
                outcome: "approved".to_string(),
                user_id: Some(session.user_id().to_string()),
                email: Some(session.identity.email.clone()),
                fingerprint: Some(req.fingerprint.clone()),
                binding_id: Some(approval.binding.id.clone()),
                remembered: Some(true),
            }
            .emit();
            html(StatusCode::OK, pages::success(display_name(&session), true))
        } else {
            tracing::info!(
                user = %session.user_id(),
                fingerprint = %req.fingerprint,
                "Remember me not applied: the link was not opened directly; showing the Verify page"
            );
            verify_page(&state, &req, &session, true)
        }
    } else {
        verify_page(&state, &req, &session, false)
    };
    if had_mark {
        // One shot: whatever this page did, the mark is spent.
        add_cookie(&mut res, &clear_cookie(&direct_name, state.secure_cookies))?;
    }
    Ok(res)
}

/// The Verify page for `req`; `remembered` says Remember me was not applied
/// because the link was not opened directly (the page says so).
fn verify_page(
    state: &AppState,
    req: &BindingRequest,
    session: &Session,
    remembered: bool,
) -> Response {
    let csrf = state.csrf.token(&session.id);
    html(
        StatusCode::OK,
        pages::verify::page(
            req,
            display_name(session),
            &csrf,
            state.clock.now(),
            remembered,
        ),
    )
}

/// Whether `session`'s user may deny the request behind `code`: the same rule as
/// approving (`Store::approve_request` checks it inside its transaction).
///
/// The *owner* of a pending request is the user its key is tied to right now —
/// through a valid client binding or an identity binding ("Remember me"), as
/// [`key_owner`] decides. A request whose key is tied to nobody has no owner, and
/// any signed-in user holding the code may decide it (approving it binds the key to
/// them). A request owned by someone else can be neither approved nor denied by
/// anyone else: denying would end that user's waiting connection.
///
/// Checked before the store's deny, outside its transaction. That is safe: the
/// owner can only change by approving a request for this key — this one, since a
/// key has at most one pending request, after which the deny finds it decided —
/// or by revocation, which only removes an owner.
async fn check_may_deny(
    state: &AppState,
    code: &UserCode,
    session: &Session,
    now: Timestamp,
) -> Result<(), WebError> {
    let req = state
        .store
        .get_request(code.as_str())
        .await?
        .ok_or(WebError::CodeInvalid)?;
    if req.status != RequestStatus::Pending {
        return Err(WebError::CodeProcessed);
    }
    if req.is_expired(now) {
        return Err(WebError::CodeExpired);
    }
    let client = state.store.binding_for_key(&req.fingerprint).await?;
    let identity = state
        .store
        .identity_binding_for_key(&req.fingerprint)
        .await?;
    let owner = key_owner(
        now,
        client.as_ref().map(|(b, s)| (b, s.as_ref())),
        identity.as_ref(),
    );
    may_bind(owner, session.user_id()).map_err(|_| WebError::KeyBoundToOtherUser)
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
                    AuditEvent::CodeDecisionRefused {
                        outcome: "approved".to_string(),
                        user_id: session.user_id().to_string(),
                        reason: e.to_string(),
                    }
                    .emit();
                    return Err(e.into());
                }
            };
            AuditEvent::CodeDecided {
                via: Via::Web,
                outcome: "approved".to_string(),
                user_id: Some(session.user_id().to_string()),
                email: Some(session.identity.email.clone()),
                fingerprint: Some(approval.binding.fingerprint.clone()),
                binding_id: Some(approval.binding.id.clone()),
                remembered: Some(approval.remembered),
            }
            .emit();
            Ok(html(StatusCode::OK, pages::success(who, false)))
        }
        Some("false") => {
            if let Err(e) = check_may_deny(&state, &code, &session, now).await {
                AuditEvent::CodeDecisionRefused {
                    outcome: "denied".to_string(),
                    user_id: session.user_id().to_string(),
                    reason: e.to_string(),
                }
                .emit();
                return Err(e);
            }
            state
                .store
                .deny_request(code.as_str(), session.user_id(), now)
                .await?;
            AuditEvent::CodeDecided {
                via: Via::Web,
                outcome: "denied".to_string(),
                user_id: Some(session.user_id().to_string()),
                email: Some(session.identity.email.clone()),
                fingerprint: None,
                binding_id: None,
                remembered: None,
            }
            .emit();
            Ok(html(StatusCode::OK, pages::denied(who)))
        }
        _ => Err(WebError::BadRequest("Choose Authorize or Deny.")),
    }
}
