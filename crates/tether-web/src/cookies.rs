//! Cookies: sealing (encrypt + authenticate) payloads with the cookie secret, the
//! session cookie, the short-lived login-state cookie, the one-shot "opened
//! directly" mark that carries a code link's `Sec-Fetch-Site: none` through the IdP
//! round trip, and `Set-Cookie` syntax.
//!
//! A sealed value is `base64url(nonce ‖ XChaCha20-Poly1305(payload))`, the
//! associated data naming the cookie's purpose so one cookie cannot stand in for
//! another. Anything that fails to open — tampered, truncated, made with another
//! secret, or past its own expiry — is simply absent: the caller treats the browser
//! as signed out. Knows nothing about the store or axum handlers.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tether_core::Timestamp;

/// Associated data of the session cookie.
pub(crate) const SESSION_PURPOSE: &[u8] = b"tether session cookie v1";
/// Associated data of the login-state cookie.
pub(crate) const LOGIN_PURPOSE: &[u8] = b"tether login state v1";
/// Associated data of the "opened directly" mark.
pub(crate) const DIRECT_PURPOSE: &[u8] = b"tether direct open v1";
/// Associated data of a sealed IdP refresh token (stored, never sent).
const REFRESH_TOKEN_PURPOSE: &[u8] = b"tether idp refresh token v1";
/// How long a login (IdP round trip) may take.
pub(crate) const LOGIN_STATE_TTL_SECS: u64 = 600;
/// How long the "opened directly" mark lives: the callback's redirect back to the
/// sign-in link follows at once.
pub(crate) const DIRECT_MARK_TTL_SECS: u64 = 60;

/// Why a value could not be sealed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CookieError {
    /// The OS random source failed.
    #[error("random source unavailable")]
    Random,
    /// Encryption or serialization failed.
    #[error("cookie sealing failed: {0}")]
    Seal(String),
}

/// Encrypts and authenticates cookie values with a key derived from the secret.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// Derives the encryption key from the 32-byte cookie secret.
    pub(crate) fn new(cookie_key: &[u8; 32]) -> Self {
        let mut h = Sha256::new();
        h.update(b"tether-web cookie encryption key\0");
        h.update(cookie_key);
        let key = h.finalize();
        Self {
            cipher: XChaCha20Poly1305::new(&key),
        }
    }

    fn seal(&self, purpose: &[u8], payload: &impl Serialize) -> Result<String, CookieError> {
        let plain = serde_json::to_vec(payload).map_err(|e| CookieError::Seal(e.to_string()))?;
        self.seal_bytes(purpose, &plain)
    }

    /// Seals serialized bytes; `seal` and the fuzz targets (`crate::fuzzing`).
    pub(crate) fn seal_bytes(&self, purpose: &[u8], plain: &[u8]) -> Result<String, CookieError> {
        let mut nonce = [0u8; 24];
        getrandom::getrandom(&mut nonce).map_err(|_| CookieError::Random)?;
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: purpose,
                },
            )
            .map_err(|e| CookieError::Seal(e.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    fn open<T: DeserializeOwned>(&self, purpose: &[u8], value: &str) -> Option<T> {
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        if raw.len() < 24 {
            return None;
        }
        let (nonce, ct) = raw.split_at(24);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: purpose,
                },
            )
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// Seals a session cookie value.
    pub(crate) fn seal_session(&self, c: &SessionCookie) -> Result<String, CookieError> {
        self.seal(SESSION_PURPOSE, c)
    }

    /// Opens a session cookie value; `None` when invalid or expired at `now`.
    pub(crate) fn open_session(&self, value: &str, now: Timestamp) -> Option<SessionCookie> {
        self.open::<SessionCookie>(SESSION_PURPOSE, value)
            .filter(|c| now.millis() < c.expires)
    }

    /// Seals a login-state cookie value.
    pub(crate) fn seal_login(&self, c: &LoginState) -> Result<String, CookieError> {
        self.seal(LOGIN_PURPOSE, c)
    }

    /// Opens a login-state cookie value; `None` when invalid or expired at `now`.
    pub(crate) fn open_login(&self, value: &str, now: Timestamp) -> Option<LoginState> {
        self.open::<LoginState>(LOGIN_PURPOSE, value)
            .filter(|c| now.millis() < c.expires)
    }

    /// Seals an "opened directly" mark.
    pub(crate) fn seal_direct(&self, c: &DirectMark) -> Result<String, CookieError> {
        self.seal(DIRECT_PURPOSE, c)
    }

    /// Opens an "opened directly" mark; `None` when invalid or expired at `now`.
    pub(crate) fn open_direct(&self, value: &str, now: Timestamp) -> Option<DirectMark> {
        self.open::<DirectMark>(DIRECT_PURPOSE, value)
            .filter(|c| now.millis() < c.expires)
    }

    /// Seals an IdP refresh token for the store (it never leaves tether: sealed
    /// so a copy of the database alone cannot use it).
    pub(crate) fn seal_refresh_token(&self, token: &str) -> Result<String, CookieError> {
        self.seal(REFRESH_TOKEN_PURPOSE, &token)
    }

    /// Opens a sealed refresh token; `None` when it does not open (another
    /// `cookie_secret`, corruption).
    pub(crate) fn open_refresh_token(&self, sealed: &str) -> Option<String> {
        self.open::<String>(REFRESH_TOKEN_PURPOSE, sealed)
    }
}

/// What the session cookie carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionCookie {
    /// The store's session id.
    pub(crate) session_id: String,
    /// Expiry, Unix milliseconds.
    pub(crate) expires: i64,
}

/// What the login-state cookie carries through the IdP round trip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoginState {
    /// The OAuth `state` sent to the IdP.
    pub(crate) state: String,
    /// The OIDC `nonce` expected in the ID token.
    pub(crate) nonce: String,
    /// The PKCE code verifier.
    pub(crate) pkce_verifier: String,
    /// Local path to return to after sign-in.
    pub(crate) return_to: String,
    /// The login started from a code link the person opened directly
    /// (`Sec-Fetch-Site: none`), so Remember me may still apply after the IdP round
    /// trip, which arrives back as `cross-site`.
    #[serde(default)]
    pub(crate) opened_directly: bool,
    /// Expiry, Unix milliseconds.
    pub(crate) expires: i64,
}

/// "This code link was opened directly": set by the OIDC callback when the login
/// began with `Sec-Fetch-Site: none`, read (and cleared) by the sign-in page.
/// Bound to the code's return path and the new web session, so it cannot vouch
/// for any other link or browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirectMark {
    /// The local path the login returned to (`/.pomerium/sign_in?user_code=C`).
    pub(crate) return_to: String,
    /// The web session the callback created.
    pub(crate) session_id: String,
    /// Expiry, Unix milliseconds.
    pub(crate) expires: i64,
}

/// The name of the login-state cookie, derived from the session cookie's name.
pub(crate) fn login_cookie_name(session_cookie_name: &str) -> String {
    format!("{session_cookie_name}_login")
}

/// The name of the "opened directly" mark, derived from the session cookie's name.
pub(crate) fn direct_cookie_name(session_cookie_name: &str) -> String {
    format!("{session_cookie_name}_direct")
}

/// All values of cookie `name` in the request, in order.
pub(crate) fn read_cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> Vec<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then_some(v.trim())
        })
        .collect()
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, Secure when asked.
pub(crate) fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Max-Age={max_age_secs}; Path=/; HttpOnly; SameSite=Lax{secure}")
}

/// A `Set-Cookie` value that deletes the cookie.
pub(crate) fn clear_cookie(name: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax{secure}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cookie(expires: i64) -> SessionCookie {
        SessionCookie {
            session_id: "sid".into(),
            expires,
        }
    }

    #[test]
    fn seal_open_roundtrip_and_expiry() {
        let s = Sealer::new(&[7; 32]);
        let v = s.seal_session(&cookie(1000)).unwrap();
        assert_eq!(s.open_session(&v, Timestamp(999)), Some(cookie(1000)));
        assert_eq!(s.open_session(&v, Timestamp(1000)), None, "expired");
    }

    #[test]
    fn tampered_wrong_key_or_wrong_purpose_refused() {
        let s = Sealer::new(&[7; 32]);
        let v = s.seal_session(&cookie(1000)).unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(s.open_session(&tampered, Timestamp(0)), None);
        assert_eq!(Sealer::new(&[8; 32]).open_session(&v, Timestamp(0)), None);
        assert!(s.open_login(&v, Timestamp(0)).is_none(), "purpose bound");
        assert!(s.open_direct(&v, Timestamp(0)).is_none(), "purpose bound");
        assert_eq!(s.open_session("!!", Timestamp(0)), None);
        assert_eq!(s.open_session("", Timestamp(0)), None);
    }

    #[test]
    fn reads_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; _p=xyz; b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("_p=second"));
        assert_eq!(read_cookies(&h, "_p"), vec!["xyz", "second"]);
        assert!(read_cookies(&h, "zz").is_empty());
        assert_eq!(
            set_cookie("n", "v", 5, true),
            "n=v; Max-Age=5; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
