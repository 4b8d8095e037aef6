//! Who am I (`/.pomerium/`), liveness (`/ping`), readiness (`/healthz`) and the
//! 404 fallback.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tether_core::time::human_duration;

use super::start_login;
use crate::error::WebError;
use crate::pages::{self, html};
use crate::session::current;

/// `GET /.pomerium/`: user id, email, session expiry and the sorted claims.
pub(crate) async fn whoami(
    State(state): State<crate::State>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let Some(session) = current(&state, &headers).await? else {
        return start_login(&state, "/.pomerium/", false).await;
    };
    let now = state.clock.now();
    // BTreeMap iteration is already sorted by claim name.
    let claims: Vec<(String, String)> = session
        .identity
        .claims
        .iter()
        .map(|(k, v)| {
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), shown)
        })
        .collect();
    Ok(html(
        StatusCode::OK,
        pages::whoami(
            session.user_id(),
            &session.identity.email,
            session.identity.name.as_deref(),
            &session.expires_at.rfc3339(),
            &human_duration(now.until(session.expires_at)),
            &claims,
        ),
    ))
}

/// `GET /ping`: the process is up.
pub(crate) async fn ping() -> &'static str {
    "OK"
}

/// `GET /healthz`: 200 when the store answers, 503 otherwise.
pub(crate) async fn healthz(State(state): State<crate::State>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "OK").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

/// Everything else.
pub(crate) async fn not_found() -> Response {
    WebError::NotFound.into_response()
}
