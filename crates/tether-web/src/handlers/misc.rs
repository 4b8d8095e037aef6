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

/// How long `/healthz` waits for the store: well under a load balancer's or
/// Kubernetes' probe timeout, so a hung database reads as "not ready" with a reason
/// rather than as a probe that timed out. (The store's own pool gives up after 5 s.)
const HEALTHZ_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// `GET /healthz`: 200 `OK` when the store answers a ping within
/// [`HEALTHZ_STORE_TIMEOUT`], 503 `store unavailable` otherwise.
pub(crate) async fn healthz(State(state): State<crate::State>) -> Response {
    let failure = match tokio::time::timeout(HEALTHZ_STORE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => return (StatusCode::OK, "OK").into_response(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {HEALTHZ_STORE_TIMEOUT:?}"),
    };
    tracing::warn!(error = %failure, "readiness check failed: store unreachable");
    (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
}

/// Everything else.
pub(crate) async fn not_found() -> Response {
    WebError::NotFound.into_response()
}
