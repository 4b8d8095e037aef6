//! The web edge's error type: every failure a handler can meet, mapped to a status
//! code and one short user-safe sentence. Details (store errors, IdP responses,
//! token verification failures) are logged with a reference id, never shown.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tether_store::{DecideError, RevokeError, StoreError};

use crate::cookies::CookieError;
use crate::pages;

/// What went wrong while handling a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WebError {
    /// Malformed or unknown sign-in code (400).
    #[error("code invalid")]
    CodeInvalid,
    /// The sign-in code's lifetime is over (400).
    #[error("expired")]
    CodeExpired,
    /// The code was already approved or denied (409).
    #[error("code already processed")]
    CodeProcessed,
    /// The key is tied to another user (409); nothing changed.
    #[error("this key is bound to another user; that user must revoke it first")]
    KeyBoundToOtherUser,
    /// A POST without a valid CSRF token or session (403); nothing changed.
    #[error("CSRF check failed")]
    Csrf,
    /// The binding belongs to another user (403); nothing changed.
    #[error("binding belongs to another user")]
    NotOwner,
    /// No such page or binding (404).
    #[error("not found")]
    NotFound,
    /// Not for this user (403); the text is shown; nothing changed.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// What was named no longer exists (404); the text is shown.
    #[error("gone: {0}")]
    Gone(&'static str),
    /// The request is malformed (400); the text is shown.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// What the user entered is not usable (400); the one-line reason is shown.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The OIDC login failed on our side of the checks (400): bad state, refused
    /// code, unverifiable ID token. `msg` is shown, `detail` logged.
    #[error("sign-in failed: {msg}: {detail}")]
    SignInFailed {
        /// Shown to the user.
        msg: &'static str,
        /// Logged only.
        detail: String,
    },
    /// Discovery, JWKS or the token endpoint could not be reached (502).
    #[error("identity provider unreachable: {0}")]
    IdpUnreachable(String),
    /// The store failed; we fail closed (503).
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The web session ended between page and form (403).
    #[error("session ended")]
    SessionGone,
    /// A bug or an impossible state (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for WebError {
    fn from(e: StoreError) -> Self {
        WebError::StoreUnavailable(e.to_string())
    }
}

impl From<DecideError> for WebError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::NotFound => WebError::CodeInvalid,
            DecideError::Expired => WebError::CodeExpired,
            DecideError::AlreadyDecided => WebError::CodeProcessed,
            DecideError::KeyBoundToOtherUser => WebError::KeyBoundToOtherUser,
            DecideError::SessionGone => WebError::SessionGone,
            DecideError::Store(s) => s.into(),
        }
    }
}

impl From<RevokeError> for WebError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::NotFound => WebError::NotFound,
            RevokeError::NotOwner => WebError::NotOwner,
            RevokeError::Store(s) => s.into(),
        }
    }
}

impl From<CookieError> for WebError {
    fn from(e: CookieError) -> Self {
        WebError::Internal(e.to_string())
    }
}

/// A short random reference id tying a shown error to its log line.
pub(crate) fn ref_id() -> String {
    let mut b = [0u8; 5];
    if getrandom::getrandom(&mut b).is_err() {
        return "none".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, heading, sentence): (StatusCode, &str, String) = match &self {
            WebError::CodeInvalid => (
                StatusCode::BAD_REQUEST,
                "code invalid",
                "This sign-in link is not valid; run ssh again to get a new one.".into(),
            ),
            WebError::CodeExpired => (
                StatusCode::BAD_REQUEST,
                "expired",
                "This sign-in link has expired; run ssh again to get a new one.".into(),
            ),
            WebError::CodeProcessed => (
                StatusCode::CONFLICT,
                "code already processed",
                "This sign-in link has already been authorized or denied.".into(),
            ),
            WebError::KeyBoundToOtherUser => (
                StatusCode::CONFLICT,
                "Key bound to another user",
                "This key is bound to another user; that user must revoke it first.".into(),
            ),
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                "The form could not be verified; reload the page and try again.".into(),
            ),
            WebError::NotOwner => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                "This binding belongs to another user.".into(),
            ),
            WebError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here.".into(),
            ),
            WebError::BadRequest(msg) => (StatusCode::BAD_REQUEST, "Bad request", (*msg).into()),
            WebError::BadInput(msg) => (StatusCode::BAD_REQUEST, "Bad request", msg.clone()),
            WebError::Forbidden(msg) => (StatusCode::FORBIDDEN, "Forbidden", (*msg).into()),
            WebError::Gone(msg) => (StatusCode::NOT_FOUND, "Not found", (*msg).into()),
            WebError::SignInFailed { msg, detail } => {
                let r = ref_id();
                tracing::warn!(ref_id = %r, %detail, "sign-in failed: {msg}");
                (
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    format!("{msg} (ref {r})"),
                )
            }
            WebError::IdpUnreachable(detail) => {
                let r = ref_id();
                tracing::error!(ref_id = %r, %detail, "identity provider unreachable");
                (
                    StatusCode::BAD_GATEWAY,
                    "identity provider unreachable",
                    format!(
                        "The identity provider could not be reached; try again shortly (ref {r})."
                    ),
                )
            }
            WebError::StoreUnavailable(detail) => {
                let r = ref_id();
                tracing::error!(ref_id = %r, %detail, "store unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    format!("service unavailable (ref {r}); try again shortly."),
                )
            }
            WebError::SessionGone => (
                StatusCode::FORBIDDEN,
                "Session ended",
                "Your session has ended; reload the page to sign in again.".into(),
            ),
            WebError::Internal(detail) => {
                let r = ref_id();
                tracing::error!(ref_id = %r, %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Error",
                    format!("internal error (ref {r})"),
                )
            }
        };
        pages::message_page(status, heading, &sentence)
    }
}
