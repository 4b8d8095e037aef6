//! The bindings management page and its two revoke forms (SPEC §5). Users see and
//! revoke only their own bindings; revoking someone else's is 403 and changes nothing.
//! A signed-in user may also bind a pasted public key to themselves without an SSH
//! connection (a pre-authorized key, `docs/SPEC.md` §5).

use std::collections::{HashMap, HashSet};
use tether_core::audit::{AuditEvent, Via};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use std::time::Duration;
use tether_core::binding::{binding_id, fingerprint_of};
use tether_core::pubkey::parse_public_key;
use tether_core::{BindingDetails, BindingRequest, RequestStatus, Session, UserCode};

use super::console::{is_admin, live_sessions};
use super::sign_in::display_name;
use super::{redirect, start_login};
use crate::error::WebError;
use crate::form::Fields;
use crate::pages::bindings::Row;
use crate::pages::{self, html};
use crate::session::{current, require_csrf};
use crate::AppState;

const PAGE: &str = "/.pomerium/session_binding_info";

/// `POST` here binds a pasted public key (`public_key`, `ttl` seconds, `csrf_token`).
pub(crate) const ADD_KEY_PATH: &str = "/.tether/bindings/add";

/// Plain printable ASCII for reasons shown on SSH clients' terminals.
pub(crate) fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

async fn rows(state: &AppState, session: &Session) -> Result<Vec<Row>, WebError> {
    let now = state.clock.now();
    let user = session.user_id();
    let bindings = state.store.list_bindings(Some(user)).await?;
    let identities = state.store.list_identity_bindings(Some(user)).await?;
    let remembered: HashSet<&str> = identities.iter().map(|i| i.fingerprint.as_str()).collect();

    let mut sessions: HashMap<String, Option<Session>> = HashMap::new();
    let mut rows = Vec::new();
    for b in &bindings {
        if !sessions.contains_key(&b.session_id) {
            let s = state.store.get_session(&b.session_id).await?;
            sessions.insert(b.session_id.clone(), s);
        }
        let s = sessions.get(&b.session_id).and_then(Option::as_ref);
        if !b.is_valid(now, s) {
            continue;
        }
        rows.push(Row {
            id: b.id.clone(),
            fingerprint: b.fingerprint.clone(),
            key_type: b.key_type.clone(),
            initiated_from: Some(b.details.source_addr.clone()),
            route: b.details.route.clone(),
            // A pasted key has no connection yet: no route or login.
            login: Some(b.details.login.clone()).filter(|l| !l.is_empty()),
            issued_at: b.issued_at,
            expires_at: Some(b.expires_at),
            live: 0,
            has_client: true,
            remembered: remembered.contains(b.fingerprint.as_str()),
        });
    }
    for ib in &identities {
        if rows.iter().any(|r| r.fingerprint == ib.fingerprint) {
            continue;
        }
        let id = binding_id(&ib.fingerprint);
        rows.push(Row {
            live: 0,
            id,
            fingerprint: ib.fingerprint.clone(),
            key_type: ib.key_type.clone(),
            initiated_from: None,
            route: None,
            login: None,
            issued_at: ib.created_at,
            expires_at: None,
            has_client: false,
            remembered: true,
        });
    }
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let live = state.live.live_counts(&ids).await;
    for r in &mut rows {
        r.live = live.get(&r.id).copied().unwrap_or(0);
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.issued_at));
    Ok(rows)
}

/// `GET /.pomerium/session_binding_info`.
pub(crate) async fn list(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let Some(session) = current(&state, &headers).await? else {
        return start_login(&state, PAGE, false).await;
    };
    let rows = rows(&state, &session).await?;
    let csrf = state.csrf.token(&session.id);
    let mine: Vec<_> = live_sessions(&state)
        .await?
        .into_iter()
        .filter(|s| s.user_id == session.user_id())
        // A connection whose binding was just revoked is closing: not shown.
        .filter(|s| rows.iter().any(|r| r.has_client && r.id == s.binding_id))
        .collect();
    let sessions =
        pages::console::sessions_table(&mine, &csrf, state.clock.now(), false, "bindings");
    let admin = is_admin(&state, &session);
    let lifetimes = lifetimes(state.config.ssh_binding_max_ttl);
    Ok(html(
        StatusCode::OK,
        pages::bindings::page(
            &rows,
            &sessions,
            display_name(&session),
            &csrf,
            admin,
            &lifetimes,
        ),
    ))
}

/// The lifetimes offered for a pasted key: 1 h, 8 h and 24 h where shorter than
/// `max`, then `max` itself (`ssh_binding_max_ttl`).
pub(crate) fn lifetimes(max: Duration) -> Vec<Duration> {
    let mut out: Vec<Duration> = [1, 8, 24]
        .into_iter()
        .map(|h| Duration::from_secs(h * 3600))
        .filter(|d| *d < max)
        .collect();
    out.push(max);
    out
}

/// `POST /.tether/bindings/add`: binds the pasted key to the signed-in user for the
/// chosen lifetime (never past `ssh_binding_max_ttl` or the web session), under the
/// same one-key-one-user rule and in the same transaction as an Authorize
/// (`Store::approve_request` on a request made here, with no connection waiting).
pub(crate) async fn add_key(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let fields = Fields::parse(&body);
    let session = require_csrf(&state, &headers, &fields).await?;
    let key = parse_public_key(fields.get("public_key").unwrap_or_default())
        .map_err(|e| WebError::BadInput(format!("That public key cannot be used: {e}.")))?;
    let max = state.config.ssh_binding_max_ttl;
    let ttl = fields
        .get("ttl")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero() && *d <= max)
        .ok_or(WebError::BadRequest(
            "Choose a lifetime from the list (at most ssh_binding_max_ttl).",
        ))?;
    let refused = |outcome: &str| AuditEvent::KeyPreAuthorized {
        user_id: session.user_id().to_string(),
        email: session.identity.email.clone(),
        fingerprint: key.fingerprint.clone(),
        binding_id: String::new(),
        expires_at: 0,
        outcome: outcome.to_string(),
    };
    let now = state.clock.now();
    let code = UserCode::generate().map_err(|e| WebError::Internal(e.to_string()))?;
    let request = BindingRequest {
        code: code.clone(),
        fingerprint: key.fingerprint.clone(),
        key_type: key.key_type.clone(),
        public_key: key.public_key.clone(),
        details: BindingDetails {
            source_addr: "pasted on the bindings page".into(),
            client_version: String::new(),
            route: None,
            login: String::new(),
        },
        issued_at: now,
        expires_at: now.plus(state.config.ssh_sign_in_timeout),
        status: RequestStatus::Pending,
    };
    let opened = state.store.open_request(request, now).await?;
    if opened.code != code {
        // An SSH client with this key is waiting for its own sign-in: that one is
        // decided on its Verify page, where its details are shown.
        refused("a sign-in for this key is waiting").emit();
        return Err(WebError::BadRequest(
            "An SSH connection with this key is waiting for sign-in; use the link it printed.",
        ));
    }
    let approval = state
        .store
        .approve_request(code.as_str(), &session, false, ttl, now)
        .await;
    let approval = match approval {
        Ok(a) => a,
        Err(e) => {
            let _ = state.store.drop_request(code.as_str()).await;
            refused(&e.to_string()).emit();
            return Err(e.into());
        }
    };
    AuditEvent::KeyPreAuthorized {
        user_id: session.user_id().to_string(),
        email: session.identity.email.clone(),
        fingerprint: approval.binding.fingerprint.clone(),
        binding_id: approval.binding.id.clone(),
        expires_at: approval.binding.expires_at.unix_seconds(),
        outcome: "bound".to_string(),
    }
    .emit();
    redirect(StatusCode::SEE_OTHER, PAGE)
}

fn binding_field(fields: &Fields) -> Result<&str, WebError> {
    fields
        .get("sessionBindingID")
        .filter(|s| !s.is_empty())
        .ok_or(WebError::BadRequest("No binding was named."))
}

/// `POST /.pomerium/session_binding/revoke` (`sessionBindingID`, `csrf_token`).
pub(crate) async fn revoke_client(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let fields = Fields::parse(&body);
    let session = require_csrf(&state, &headers, &fields).await?;
    let id = binding_field(&fields)?;
    let reason = ascii(&format!("revoked by {}", display_name(&session)));
    let by = session.identity.email.clone();
    revoke_client_binding(&state, id, Some(session.user_id()), &by, &reason).await?;
    redirect(StatusCode::SEE_OTHER, PAGE)
}

/// Revokes client binding `id` (only if `owner` owns it, when given) and writes
/// the audit event: `binding_revoke_refused` for someone else's binding,
/// `binding_revoked` (naming `by`) when it is gone. Its connections end through
/// the store's change feed.
pub(crate) async fn revoke_client_binding(
    state: &AppState,
    id: &str,
    owner: Option<&str>,
    by: &str,
    reason: &str,
) -> Result<(), WebError> {
    let result = state.store.revoke_binding(id, owner, reason).await;
    if let (Err(tether_store::RevokeError::NotOwner), Some(user_id)) = (&result, owner) {
        AuditEvent::BindingRevokeRefused {
            user_id: user_id.to_string(),
            binding_id: id.to_string(),
            reason: "not the owner".to_string(),
        }
        .emit();
    }
    let revoked = result?;
    AuditEvent::BindingRevoked {
        via: Via::Web,
        binding_id: revoked.id.clone(),
        user: revoked.owner().to_string(),
        by: by.to_string(),
        reason: reason.to_string(),
    }
    .emit();
    Ok(())
}

/// `POST /.pomerium/identity_binding/revoke` (`sessionBindingID` = `sshkey-SHA256:…`).
pub(crate) async fn revoke_identity(
    State(state): State<crate::State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let fields = Fields::parse(&body);
    let session = require_csrf(&state, &headers, &fields).await?;
    let id = binding_field(&fields)?;
    let fingerprint = fingerprint_of(id).unwrap_or(id);
    let by = session.identity.email.clone();
    revoke_identity_binding(&state, fingerprint, Some(session.user_id()), &by).await?;
    redirect(StatusCode::SEE_OTHER, PAGE)
}

/// Forgets the remembered key `fingerprint` (only if `owner` owns it, when given)
/// and writes the audit event, as [`revoke_client_binding`] does.
pub(crate) async fn revoke_identity_binding(
    state: &AppState,
    fingerprint: &str,
    owner: Option<&str>,
    by: &str,
) -> Result<(), WebError> {
    let result = state
        .store
        .revoke_identity_binding(fingerprint, owner)
        .await;
    if let (Err(tether_store::RevokeError::NotOwner), Some(user_id)) = (&result, owner) {
        AuditEvent::IdentityBindingRevokeRefused {
            user_id: user_id.to_string(),
            fingerprint: fingerprint.to_string(),
            reason: "not the owner".to_string(),
        }
        .emit();
    }
    let removed = result?;
    AuditEvent::IdentityBindingRemoved {
        user_id: removed.user_id,
        email: removed.email,
        fingerprint: removed.fingerprint,
        by: by.to_string(),
    }
    .emit();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ascii;

    #[test]
    fn reasons_are_plain_ascii() {
        assert_eq!(
            ascii("revoked by zoë@example.com\n"),
            "revoked by zo?@example.com?"
        );
    }
}
