//! Entry points for the cargo-fuzz targets in `fuzz/` (docs/TESTING.md, "Fuzzing"):
//! thin wrappers over the crate-private cookie sealer and form parser, so the fuzzers
//! run the very code the handlers run, through plain types. Not an API: hidden from
//! the docs and used by nothing in tether itself. Adds no behaviour of its own.

use tether_core::Timestamp;

use crate::cookies::{
    DirectMark, LoginState, Sealer, SessionCookie, DIRECT_PURPOSE, LOGIN_PURPOSE, SESSION_PURPOSE,
};
use crate::form::Fields;

/// Which cookie a sealed value is for (its associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The session cookie.
    Session,
    /// The login-state cookie.
    Login,
    /// The "opened directly" mark.
    Direct,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::Session => SESSION_PURPOSE,
            Purpose::Login => LOGIN_PURPOSE,
            Purpose::Direct => DIRECT_PURPOSE,
        }
    }
}

/// What the login-state cookie carries, field for field.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LoginFields {
    /// OAuth `state`.
    pub state: String,
    /// OIDC `nonce`.
    pub nonce: String,
    /// PKCE verifier.
    pub pkce_verifier: String,
    /// Return path.
    pub return_to: String,
    /// Opened directly.
    pub opened_directly: bool,
    /// Expiry, Unix milliseconds.
    pub expires: i64,
}

/// The cookie sealer the web app uses, keyed by a 32-byte cookie secret.
pub struct CookieSealer(Sealer);

impl CookieSealer {
    /// The sealer for `cookie_key`.
    pub fn new(cookie_key: &[u8; 32]) -> Self {
        Self(Sealer::new(cookie_key))
    }

    /// Seals arbitrary plaintext for `purpose` (what a forger with the key could send).
    pub fn seal_bytes(&self, purpose: Purpose, plain: &[u8]) -> Option<String> {
        self.0.seal_bytes(purpose.aad(), plain).ok()
    }

    /// Seals a session cookie.
    pub fn seal_session(&self, session_id: &str, expires: i64) -> Option<String> {
        self.0
            .seal_session(&SessionCookie {
                session_id: session_id.to_string(),
                expires,
            })
            .ok()
    }

    /// Opens a session cookie: `(session_id, expires)`.
    pub fn open_session(&self, value: &str, now: i64) -> Option<(String, i64)> {
        self.0
            .open_session(value, Timestamp(now))
            .map(|c| (c.session_id, c.expires))
    }

    /// Seals a login-state cookie.
    pub fn seal_login(&self, l: &LoginFields) -> Option<String> {
        self.0
            .seal_login(&LoginState {
                state: l.state.clone(),
                nonce: l.nonce.clone(),
                pkce_verifier: l.pkce_verifier.clone(),
                return_to: l.return_to.clone(),
                opened_directly: l.opened_directly,
                expires: l.expires,
            })
            .ok()
    }

    /// Opens a login-state cookie.
    pub fn open_login(&self, value: &str, now: i64) -> Option<LoginFields> {
        self.0
            .open_login(value, Timestamp(now))
            .map(|l| LoginFields {
                state: l.state,
                nonce: l.nonce,
                pkce_verifier: l.pkce_verifier,
                return_to: l.return_to,
                opened_directly: l.opened_directly,
                expires: l.expires,
            })
    }

    /// Seals an "opened directly" mark.
    pub fn seal_direct(&self, return_to: &str, session_id: &str, expires: i64) -> Option<String> {
        self.0
            .seal_direct(&DirectMark {
                return_to: return_to.to_string(),
                session_id: session_id.to_string(),
                expires,
            })
            .ok()
    }

    /// Opens an "opened directly" mark: `(return_to, session_id, expires)`.
    pub fn open_direct(&self, value: &str, now: i64) -> Option<(String, String, i64)> {
        self.0
            .open_direct(value, Timestamp(now))
            .map(|d| (d.return_to, d.session_id, d.expires))
    }
}

/// A parsed form body or query string, as the handlers see it.
pub struct FormFields(Fields);

impl FormFields {
    /// Parses urlencoded bytes (a form body).
    pub fn parse(raw: &[u8]) -> Self {
        Self(Fields::parse(raw))
    }

    /// Parses an optional query string.
    pub fn query(q: Option<&str>) -> Self {
        Self(Fields::query(q))
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }
}
