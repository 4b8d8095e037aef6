//! Sessions, sign-in requests, client bindings and identity bindings, with the rules
//! of SPEC §5: expiry, validity, and who a key is tied to.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::code::UserCode;
use crate::identity::Identity;
use crate::time::Timestamp;

/// A web session created by an OIDC sign-in. Lives in the store so any replica
/// accepts the cookie.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// Random session id (the cookie carries it, encrypted).
    pub id: String,
    /// The signed-in person.
    pub identity: Identity,
    /// When the session was created.
    pub issued_at: Timestamp,
    /// When it ends (`cookie_expire` after sign-in).
    pub expires_at: Timestamp,
}

impl Session {
    /// The user id (IdP subject).
    pub fn user_id(&self) -> &str {
        &self.identity.subject
    }

    /// Whether the session is still alive at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

/// What the SSH side knew about the connection when the code was issued; shown on
/// the Verify page and kept on the binding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingDetails {
    /// Client address as `ip:port`.
    pub source_addr: String,
    /// The client's SSH identification string, e.g. `SSH-2.0-OpenSSH_9.2p1`.
    pub client_version: String,
    /// Requested route (`None` for the internal CLI).
    pub route: Option<String>,
    /// Requested upstream login name.
    pub login: String,
}

/// Where a sign-in request stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestStatus {
    /// Waiting for someone to decide in the browser.
    Pending,
    /// Authorized by `user_id`; the binding `binding_id` was created in the same
    /// transaction.
    Approved {
        /// Who approved it.
        user_id: String,
        /// The client binding created.
        binding_id: String,
    },
    /// Denied by `user_id`.
    Denied {
        /// Who denied it.
        user_id: String,
    },
}

/// A pending sign-in: one code per key while in flight.
#[derive(Clone, Debug, PartialEq)]
pub struct BindingRequest {
    /// The code in the sign-in URL.
    pub code: UserCode,
    /// The key's fingerprint, `SHA256:...` as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// Key algorithm, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// The public key in OpenSSH format (`ssh-ed25519 AAAA...`).
    pub public_key: String,
    /// Connection details.
    pub details: BindingDetails,
    /// When the code was issued.
    pub issued_at: Timestamp,
    /// When the code (and its waiting connection) expires.
    pub expires_at: Timestamp,
    /// Decision state.
    pub status: RequestStatus,
}

impl BindingRequest {
    /// Whether the code is past its lifetime at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}

/// A client binding: this key belongs to this user, for a while.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientBinding {
    /// `sshkey-SHA256:...`.
    pub id: String,
    /// `SHA256:...`.
    pub fingerprint: String,
    /// Key algorithm.
    pub key_type: String,
    /// The owner (IdP subject).
    pub user_id: String,
    /// The owner's email, for display and audit.
    pub email: String,
    /// The web session this binding came from; the binding dies with it.
    pub session_id: String,
    /// When it was created.
    pub issued_at: Timestamp,
    /// When it expires (see [`client_binding_expiry`]).
    pub expires_at: Timestamp,
    /// Details of the first connection.
    pub details: BindingDetails,
    /// Last successful authentication with this binding.
    pub last_used: Option<Timestamp>,
}

impl ClientBinding {
    /// Who owns it, for messages and audit: the email, or the user id where the
    /// owner has none (a workload).
    pub fn owner(&self) -> &str {
        if self.email.is_empty() {
            &self.user_id
        } else {
            &self.email
        }
    }

    /// Valid only while unexpired AND its web session exists and is alive.
    pub fn is_valid(&self, now: Timestamp, session: Option<&Session>) -> bool {
        now < self.expires_at && session.is_some_and(|s| s.id == self.session_id && s.is_live(now))
    }
}

/// "Remember me": key → user with no expiry of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityBinding {
    /// `SHA256:...`.
    pub fingerprint: String,
    /// Key algorithm.
    pub key_type: String,
    /// The owner (IdP subject).
    pub user_id: String,
    /// The owner's email.
    pub email: String,
    /// When it was created.
    pub created_at: Timestamp,
}

/// The binding id for a key fingerprint: `sshkey-SHA256:...`.
pub fn binding_id(fingerprint: &str) -> String {
    format!("sshkey-{fingerprint}")
}

/// The fingerprint from a binding id, if it has the `sshkey-` form.
pub fn fingerprint_of(binding_id: &str) -> Option<&str> {
    binding_id.strip_prefix("sshkey-")
}

/// Expiry of a new client binding: `min(issued_at + max_ttl, session expiry)`.
pub fn client_binding_expiry(
    issued_at: Timestamp,
    max_ttl: Duration,
    session_expires_at: Timestamp,
) -> Timestamp {
    issued_at.plus(max_ttl).min(session_expires_at)
}

/// Who a key is tied to right now, given what the store holds for it.
///
/// A key is tied to user A while it has a valid client binding of A or an identity
/// binding of A. Returns the owner's user id, if any.
pub fn key_owner<'a>(
    now: Timestamp,
    client: Option<(&'a ClientBinding, Option<&Session>)>,
    identity: Option<&'a IdentityBinding>,
) -> Option<&'a str> {
    if let Some(ib) = identity {
        return Some(ib.user_id.as_str());
    }
    match client {
        Some((b, session)) if b.is_valid(now, session) => Some(b.user_id.as_str()),
        _ => None,
    }
}

/// Why an authorization was refused by the binding rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    /// The key is tied to somebody else.
    #[error("this key is bound to another user; that user must revoke it first")]
    KeyBoundToOtherUser,
}

/// Checks that `user_id` may bind this key.
pub fn may_bind(owner: Option<&str>, user_id: &str) -> Result<(), BindError> {
    match owner {
        Some(o) if o != user_id => Err(BindError::KeyBoundToOtherUser),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn session(id: &str, user: &str, expires: i64) -> Session {
        Session {
            id: id.into(),
            identity: Identity {
                subject: user.into(),
                email: format!("{user}@example.com"),
                name: None,
                claims: BTreeMap::new(),
            },
            issued_at: Timestamp(0),
            expires_at: Timestamp(expires),
        }
    }

    fn binding(user: &str, session_id: &str, expires: i64) -> ClientBinding {
        ClientBinding {
            id: binding_id("SHA256:abc"),
            fingerprint: "SHA256:abc".into(),
            key_type: "ssh-ed25519".into(),
            user_id: user.into(),
            email: format!("{user}@example.com"),
            session_id: session_id.into(),
            issued_at: Timestamp(0),
            expires_at: Timestamp(expires),
            details: BindingDetails::default(),
            last_used: None,
        }
    }

    #[test]
    fn expiry_is_min_of_ttl_and_session() {
        let h = Duration::from_secs(3600);
        assert_eq!(
            client_binding_expiry(Timestamp(0), 48 * h, Timestamp(14 * 3_600_000)),
            Timestamp(14 * 3_600_000)
        );
        assert_eq!(
            client_binding_expiry(Timestamp(0), h, Timestamp(14 * 3_600_000)),
            Timestamp(3_600_000)
        );
    }

    #[test]
    fn binding_valid_only_with_live_session() {
        let s = session("s1", "alice", 100);
        let b = binding("alice", "s1", 200);
        assert!(b.is_valid(Timestamp(50), Some(&s)));
        assert!(!b.is_valid(Timestamp(150), Some(&s)), "session expired");
        assert!(!b.is_valid(Timestamp(50), None), "session gone");
        let other = session("s2", "alice", 1000);
        assert!(!b.is_valid(Timestamp(50), Some(&other)), "wrong session");
        let b2 = binding("alice", "s1", 40);
        assert!(!b2.is_valid(Timestamp(50), Some(&s)), "binding expired");
    }

    #[test]
    fn key_owner_rules() {
        let s = session("s1", "alice", 100);
        let b = binding("alice", "s1", 200);
        let ib = IdentityBinding {
            fingerprint: "SHA256:abc".into(),
            key_type: "ssh-ed25519".into(),
            user_id: "bob".into(),
            email: "bob@example.com".into(),
            created_at: Timestamp(0),
        };
        assert_eq!(
            key_owner(Timestamp(1), Some((&b, Some(&s))), None),
            Some("alice")
        );
        assert_eq!(key_owner(Timestamp(150), Some((&b, Some(&s))), None), None);
        assert_eq!(key_owner(Timestamp(150), None, Some(&ib)), Some("bob"));
        assert_eq!(
            may_bind(Some("alice"), "bob"),
            Err(BindError::KeyBoundToOtherUser)
        );
        assert_eq!(may_bind(Some("alice"), "alice"), Ok(()));
        assert_eq!(may_bind(None, "bob"), Ok(()));
        assert_eq!(fingerprint_of(&binding_id("SHA256:x")), Some("SHA256:x"));
    }
}
