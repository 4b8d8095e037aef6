//! The operator console and the actions on live sessions (SPEC §5).
//!
//! Administrators are whoever the `administrators` policy admits, evaluated like a
//! route's policy against the signed-in identity (no login, key or SSH client
//! address: `ssh_*` and `source_ip` criteria cannot be evaluated here, so they
//! deny). Everyone else gets 403 on the
//! console and its actions — an audit event `console_refused` each time — and can
//! end only their own live sessions (from the bindings page). Every action is one
//! store call whose event reaches whichever replica holds the connections.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tether_core::audit::{AuditEvent, Via};
use tether_core::connection::{is_session_id, LiveSession};
use tether_core::policy::{evaluate, Input, KeyInput};
use tether_core::Session;

use super::bindings::{ascii, revoke_client_binding, revoke_identity_binding};
use super::sign_in::display_name;
use super::{redirect, start_login};
use crate::error::WebError;
use crate::form::Fields;
use crate::pages::console::{self, AdminBinding, AdminUser, Console, CONSOLE_PATH};
use crate::pages::html;
use crate::session::{current, require_csrf};
use crate::AppState;

const BINDINGS_PAGE: &str = "/.pomerium/session_binding_info";

/// Whether the signed-in `session` is an administrator now.
pub(crate) fn is_admin(state: &AppState, session: &Session) -> bool {
    let Some(policy) = &state.config.administrators else {
        return false;
    };
    let key = KeyInput::default();
    let input = Input {
        identity: Some(&session.identity),
        login: None,
        key: &key,
        source: None,
        now: state.clock.now(),
    };
    evaluate(policy, &input).allow
}

/// 403 for a non-administrator, with its audit event.
fn refuse(session: &Session, action: &str) -> WebError {
    AuditEvent::ConsoleRefused {
        user_id: session.user_id().to_string(),
        email: session.identity.email.clone(),
        action: action.to_string(),
    }
    .emit();
    WebError::Forbidden("This page is for administrators.")
}

/// A POST from an administrator: a live session, its CSRF token, and the policy.
async fn require_admin(
    state: &AppState,
    headers: &HeaderMap,
    fields: &Fields,
    action: &str,
) -> Result<Session, WebError> {
    let session = require_csrf(state, headers, fields).await?;
    if !is_admin(state, &session) {
        return Err(refuse(&session, action));
    }
    Ok(session)
}

fn matches_filter(filter: Option<&str>, user_id: &str, email: &str) -> bool {
    filter.is_none_or(|f| f == user_id || f.eq_ignore_ascii_case(email))
}

/// The console's row for `user_id`, made on first sight.
fn user<'a>(
    users: &'a mut BTreeMap<String, AdminUser>,
    user_id: &str,
    email: &str,
) -> &'a mut AdminUser {
    users
        .entry(user_id.to_string())
        .or_insert_with(|| AdminUser {
            user_id: user_id.to_string(),
            email: email.to_string(),
            bindings: 0,
            remembered: 0,
            live: 0,
        })
}

/// Everyone's bindings and the users they belong to (plus users with live
/// sessions only), filtered.
async fn everything(
    state: &AppState,
    sessions: &[LiveSession],
    filter: Option<&str>,
) -> Result<(Vec<AdminBinding>, Vec<AdminUser>), WebError> {
    let now = state.clock.now();
    let mut users: BTreeMap<String, AdminUser> = BTreeMap::new();
    let mut rows = Vec::new();
    for b in state.store.list_bindings(None).await? {
        if now >= b.expires_at || !matches_filter(filter, &b.user_id, &b.email) {
            continue;
        }
        user(&mut users, &b.user_id, &b.email).bindings += 1;
        rows.push(AdminBinding {
            kind: "client",
            id: b.id.clone(),
            user_id: b.user_id.clone(),
            // A workload has no email: shown by its `workload:<issuer>#<sub>`.
            email: if b.email.is_empty() {
                b.user_id.clone()
            } else {
                b.email.clone()
            },
            fingerprint: b.fingerprint.clone(),
            key_type: b.key_type.clone(),
            route_login: match &b.details.route {
                Some(r) => format!("{r} as {}", b.details.login),
                // A pasted or workload key has no connection of its own yet.
                None if b.details.login.is_empty() => b.details.source_addr.clone(),
                None => format!("internal CLI as {}", b.details.login),
            },
            issued_at: b.issued_at,
            expires_at: Some(b.expires_at),
        });
    }
    for ib in state.store.list_identity_bindings(None).await? {
        if !matches_filter(filter, &ib.user_id, &ib.email) {
            continue;
        }
        user(&mut users, &ib.user_id, &ib.email).remembered += 1;
        rows.push(AdminBinding {
            kind: "identity",
            id: ib.fingerprint.clone(),
            user_id: ib.user_id.clone(),
            email: ib.email.clone(),
            fingerprint: ib.fingerprint.clone(),
            key_type: ib.key_type.clone(),
            route_login: "—".to_string(),
            issued_at: ib.created_at,
            expires_at: None,
        });
    }
    for s in sessions {
        user(&mut users, &s.user_id, &s.email).live += 1;
    }
    rows.sort_by(|a, b| {
        (&a.email, a.kind, &a.fingerprint).cmp(&(&b.email, b.kind, &b.fingerprint))
    });
    let mut users: Vec<AdminUser> = users.into_values().collect();
    users.sort_by(|a, b| a.email.cmp(&b.email));
    Ok((rows, users))
}

/// Every live session on every replica this one can see.
pub(crate) async fn live_sessions(state: &AppState) -> Result<Vec<LiveSession>, WebError> {
    state
        .live
        .sessions()
        .await
        .map_err(|e| WebError::StoreUnavailable(e.to_string()))
}

/// `GET /.tether/console[?user=EMAIL]`.
pub(crate) async fn show(
    State(state): State<crate::State>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let Some(session) = current(&state, &headers).await? else {
        return start_login(&state, CONSOLE_PATH, false).await;
    };
    if !is_admin(&state, &session) {
        return Err(refuse(&session, "view console"));
    }
    let fields = Fields::parse(query.unwrap_or_default().as_bytes());
    let filter = fields
        .get("user")
        .map(str::trim)
        .filter(|f| !f.is_empty() && f.len() <= 320);
    let sessions: Vec<LiveSession> = live_sessions(&state)
        .await?
        .into_iter()
        .filter(|s| matches_filter(filter, &s.user_id, &s.email))
        .collect();
    let (bindings, users) = everything(&state, &sessions, filter).await?;
    let csrf = state.csrf.token(&session.id);
    let page = console::page(
        &Console {
            sessions: &sessions,
            bindings: &bindings,
            users: &users,
            filter,
            now: state.clock.now(),
        },
        display_name(&session),
        &csrf,
    );
    Ok(html(StatusCode::OK, page))
}

/// Where an action returns to: the console, or the bindings page.
fn back(fields: &Fields) -> &'static str {
    match fields.get("back") {
        Some("console") => CONSOLE_PATH,
        _ => BINDINGS_PAGE,
    }
}

/// `POST /.tether/sessions/end` (`session_id`, `back`, `csrf_token`): an
/// administrator ends any live session, anyone else only their own.
pub(crate) async fn end_session(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let fields = Fields::parse(&body);
    let session = require_csrf(&state, &headers, &fields).await?;
    let id = fields
        .get("session_id")
        .filter(|id| is_session_id(id))
        .ok_or(WebError::BadRequest("No live session was named."))?;
    let live = live_sessions(&state).await?;
    let Some(target) = live.iter().find(|s| s.id == id) else {
        return Err(WebError::Gone("That session has already ended."));
    };
    let own = target.user_id == session.user_id();
    let reason = if own {
        format!("session ended by its owner ({})", display_name(&session))
    } else if is_admin(&state, &session) {
        format!(
            "session ended by an administrator ({})",
            display_name(&session)
        )
    } else {
        return Err(refuse(&session, "end another user's session"));
    };
    let reason = ascii(&reason);
    state.store.end_live_session(id, &reason).await?;
    AuditEvent::LiveSessionEnded {
        via: Via::Web,
        session: id.to_string(),
        user: target.email.clone(),
        by: session.identity.email.clone(),
    }
    .emit();
    wait_gone(&state, |s| s.id == id).await;
    redirect(StatusCode::SEE_OTHER, back(&fields))
}

/// How long an End waits for the session to leave the list, so the page it
/// returns to no longer shows it (the holding replica closes it and publishes).
const GONE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const GONE_POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// Waits (at most [`GONE_WAIT`]) until no listed live session matches `ended`.
async fn wait_gone(state: &AppState, ended: impl Fn(&LiveSession) -> bool) {
    let deadline = tokio::time::Instant::now() + GONE_WAIT;
    while tokio::time::Instant::now() < deadline {
        match state.live.sessions().await {
            Ok(all) if all.iter().any(&ended) => {}
            _ => return,
        }
        tokio::time::sleep(GONE_POLL).await;
    }
}

/// `POST /.tether/console/bindings/revoke` (`kind` = client|identity, `id`):
/// an administrator revokes anyone's binding.
pub(crate) async fn revoke(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let fields = Fields::parse(&body);
    let session = require_admin(&state, &headers, &fields, "revoke a binding").await?;
    let id = fields
        .get("id")
        .filter(|s| !s.is_empty() && s.len() <= 200)
        .ok_or(WebError::BadRequest("No binding was named."))?;
    let by = display_name(&session).to_string();
    match fields.get("kind") {
        Some("client") => {
            let reason = ascii(&format!("revoked by an administrator ({by})"));
            revoke_client_binding(&state, id, None, &by, &reason).await?;
        }
        Some("identity") => revoke_identity_binding(&state, id, None, &by).await?,
        _ => return Err(WebError::BadRequest("Unknown kind of binding.")),
    }
    redirect(StatusCode::SEE_OTHER, CONSOLE_PATH)
}

/// `POST /.tether/console/users/cut-off` (`user_id`): every binding, remembered
/// key, web session and live connection of the user, on every replica.
pub(crate) async fn cut_off(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let fields = Fields::parse(&body);
    let session = require_admin(&state, &headers, &fields, "cut off a user").await?;
    let user_id = fields
        .get("user_id")
        .filter(|s| !s.is_empty() && s.len() <= 320)
        .ok_or(WebError::BadRequest("No user was named."))?;
    let by = display_name(&session).to_string();
    // Their email, for the audit line (from whatever still names it).
    let email = state
        .store
        .list_bindings(Some(user_id))
        .await?
        .first()
        .map(|b| b.email.clone())
        .unwrap_or_else(|| user_id.to_string());
    let reason = ascii(&format!("cut off by an administrator ({by})"));
    let cut = state.store.cut_off_user(user_id, &reason).await?;
    AuditEvent::UserCutOff {
        via: Via::Web,
        user_id: user_id.to_string(),
        user: email,
        by,
        client_bindings: cut.client_bindings.len(),
        identity_bindings: cut.identity_bindings.len(),
        sessions: cut.sessions.len(),
    }
    .emit();
    wait_gone(&state, |s| s.user_id == user_id).await;
    redirect(StatusCode::SEE_OTHER, CONSOLE_PATH)
}
