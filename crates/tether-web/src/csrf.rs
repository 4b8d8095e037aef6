//! CSRF tokens: one per web session, `base64url(HMAC-SHA256(k, session id))` with a
//! key derived from the cookie secret, embedded as a hidden `csrf_token` field in
//! every form and checked (constant time) on every POST. Another site can make the
//! browser send the session cookie, but it cannot read a page to learn the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The CSRF token key.
pub(crate) struct CsrfKey {
    key: [u8; 32],
}

impl CsrfKey {
    /// Derives the CSRF key from the 32-byte cookie secret.
    pub(crate) fn new(cookie_key: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"tether-web csrf key\0");
        h.update(cookie_key);
        Self {
            key: h.finalize().into(),
        }
    }

    fn mac(&self, session_id: &str) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(b"csrf\0");
        mac.update(session_id.as_bytes());
        Some(mac)
    }

    /// The token for a session (empty, and so never valid, if HMAC fails).
    pub(crate) fn token(&self, session_id: &str) -> String {
        self.mac(session_id)
            .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Whether `given` is the token of `session_id`.
    pub(crate) fn verify(&self, session_id: &str, given: &str) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(given) else {
            return false;
        };
        self.mac(session_id)
            .is_some_and(|m| m.verify_slice(&raw).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_verifies_only_for_its_session_and_key() {
        let k = CsrfKey::new(&[1; 32]);
        let t = k.token("s1");
        assert!(!t.is_empty());
        assert!(k.verify("s1", &t));
        assert!(!k.verify("s2", &t));
        assert!(!k.verify("s1", ""));
        assert!(!k.verify("s1", "not base64 !"));
        assert!(!CsrfKey::new(&[2; 32]).verify("s1", &t));
    }
}
