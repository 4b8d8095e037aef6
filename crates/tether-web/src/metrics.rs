//! The Prometheus endpoint (SPEC §10): `GET /metrics` on `metrics_address`, a
//! listener of its own so it can stay off the public address.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tether_core::metrics::Metrics;
use tether_core::secret::Secret;
use tether_core::Clock;
use tether_store::Store;

#[derive(Clone)]
struct MetricsState {
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// `metrics_basic_auth` (base64 of `user:password`), when configured.
    basic_auth: Option<Arc<Secret<String>>>,
}

/// The metrics app: `GET /metrics` in the Prometheus text format (0.0.4); with
/// `basic_auth` set, only for requests carrying exactly that Basic credential.
pub fn metrics_router(
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    basic_auth: Option<Secret<String>>,
) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(MetricsState {
            metrics,
            store,
            clock,
            basic_auth: basic_auth.map(Arc::new),
        })
}

/// Whether the request carries the configured credential (compared in constant
/// time over the credential's length).
fn authorized(headers: &HeaderMap, expected: &Secret<String>) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .unwrap_or("")
        .trim()
        .as_bytes();
    let want = expected.expose().trim().as_bytes();
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn scrape(State(state): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.basic_auth {
        if !authorized(&headers, expected) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"metrics\"")],
                "metrics: credentials required\n",
            )
                .into_response();
        }
    }
    // Active bindings come from the store (shared by every replica); when it cannot
    // answer, the series is left out rather than reported as zero.
    let now = state.clock.now();
    let active = match state.store.list_bindings(None).await {
        Ok(bindings) => Some(bindings.iter().filter(|b| now < b.expires_at).count() as u64),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot count bindings");
            None
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(active),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tether_core::SystemClock;
    use tether_store::memory::MemoryStore;
    use tower::ServiceExt;

    fn app(auth: Option<&str>) -> Router {
        let metrics = Arc::new(Metrics::default());
        metrics
            .connections_total
            .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        metrics_router(
            metrics,
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
            auth.map(|a| Secret::new(a.to_string())),
        )
    }

    async fn get(app: Router, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get("/metrics");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn serves_the_text_format_with_bindings_from_the_store() {
        let (status, body) = get(app(None), None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("tether_ssh_connections_total 2\n"), "{body}");
        assert!(body.contains("tether_bindings_active 0\n"), "{body}");
    }

    #[tokio::test]
    async fn basic_auth_when_configured() {
        // base64("prom:s3cret")
        let cred = "cHJvbTpzM2NyZXQ=";
        let (status, body) = get(app(Some(cred)), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!body.contains("tether_"), "{body}");
        let (status, _) = get(app(Some(cred)), Some("Basic cHJvbTp3cm9uZw==")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = get(app(Some(cred)), Some(&format!("Basic {cred}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("tether_ssh_connections_total 2\n"), "{body}");
    }
}
