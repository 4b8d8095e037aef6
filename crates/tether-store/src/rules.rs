//! Decisions shared by every backend, so memory, SQLite and PostgreSQL agree to the
//! letter: which request may be decided, what a new binding looks like, which rows
//! `purge_expired` removes. Pure functions over `tether-core` types; no I/O.

use std::time::Duration;

use tether_core::binding::{client_binding_expiry, key_owner, may_bind};
use tether_core::{
    BindingRequest, ClientBinding, IdentityBinding, RequestStatus, Session, Timestamp,
};

use crate::DecideError;

/// How long expired (or decided) sign-in requests are kept so that a late browser
/// still gets "expired" / "already processed" instead of "code invalid".
pub(crate) const REQUEST_GRACE: Duration = Duration::from_secs(10 * 60);

/// How long outbox events are kept for other replicas to read.
pub(crate) const EVENT_RETENTION: Duration = Duration::from_secs(10 * 60);

/// Reason published when `purge_expired` removes a binding past its expiry.
pub(crate) const REASON_BINDING_EXPIRED: &str = "binding expired";

/// Reason published when `purge_expired` removes a binding whose session is gone.
pub(crate) const REASON_SESSION_ENDED: &str = "session ended";

/// Reason published when `purge_expired` removes an expired web session.
pub(crate) const REASON_SESSION_EXPIRED: &str = "session expired";

/// A request may be decided only while pending and unexpired. A decided request is
/// reported as decided even after its lifetime (409 beats 400).
pub(crate) fn check_decidable(req: &BindingRequest, now: Timestamp) -> Result<(), DecideError> {
    if req.status != RequestStatus::Pending {
        return Err(DecideError::AlreadyDecided);
    }
    if req.is_expired(now) {
        return Err(DecideError::Expired);
    }
    Ok(())
}

/// The deciding session, as the store holds it, must exist and be alive.
pub(crate) fn check_session(
    stored: Option<Session>,
    now: Timestamp,
) -> Result<Session, DecideError> {
    match stored {
        Some(s) if s.is_live(now) => Ok(s),
        _ => Err(DecideError::SessionGone),
    }
}

/// The one-key-one-user rule (SPEC §5) applied to what the store holds for the key.
pub(crate) fn check_owner(
    now: Timestamp,
    existing: Option<&(ClientBinding, Option<Session>)>,
    identity: Option<&IdentityBinding>,
    user_id: &str,
) -> Result<(), DecideError> {
    let owner = key_owner(now, existing.map(|(b, s)| (b, s.as_ref())), identity);
    may_bind(owner, user_id).map_err(|_| DecideError::KeyBoundToOtherUser)
}

/// The client binding an approval writes.
pub(crate) fn new_binding(
    req: &BindingRequest,
    session: &Session,
    max_ttl: Duration,
    now: Timestamp,
) -> ClientBinding {
    ClientBinding {
        id: tether_core::binding::binding_id(&req.fingerprint),
        fingerprint: req.fingerprint.clone(),
        key_type: req.key_type.clone(),
        user_id: session.user_id().to_string(),
        email: session.identity.email.clone(),
        session_id: session.id.clone(),
        issued_at: now,
        expires_at: client_binding_expiry(now, max_ttl, session.expires_at),
        details: req.details.clone(),
        last_used: None,
    }
}

/// The identity binding ("Remember me") an approval writes.
pub(crate) fn new_identity_binding(
    req: &BindingRequest,
    session: &Session,
    now: Timestamp,
) -> IdentityBinding {
    IdentityBinding {
        fingerprint: req.fingerprint.clone(),
        key_type: req.key_type.clone(),
        user_id: session.user_id().to_string(),
        email: session.identity.email.clone(),
        created_at: now,
    }
}

/// Why `purge_expired` removes a client binding, or `None` to keep it.
pub(crate) fn purge_reason(
    binding: &ClientBinding,
    session: Option<&Session>,
    now: Timestamp,
) -> Option<&'static str> {
    if now >= binding.expires_at {
        return Some(REASON_BINDING_EXPIRED);
    }
    match session {
        Some(s) if s.is_live(now) => None,
        Some(_) => Some(REASON_SESSION_EXPIRED),
        None => Some(REASON_SESSION_ENDED),
    }
}

/// Whether `purge_expired` removes a sign-in request.
pub(crate) fn request_purgeable(req: &BindingRequest, now: Timestamp) -> bool {
    now >= req.expires_at.plus(REQUEST_GRACE)
}

/// The newest-first order of `list_bindings` (ties broken by id).
pub(crate) fn newest_first(a: &ClientBinding, b: &ClientBinding) -> std::cmp::Ordering {
    b.issued_at.cmp(&a.issued_at).then_with(|| a.id.cmp(&b.id))
}
