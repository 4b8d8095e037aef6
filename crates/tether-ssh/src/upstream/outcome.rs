//! What every upstream connection attempt leaves behind, wherever it was made (a
//! route connection or the portal): the connect-latency histogram or the failure
//! count, and one audit line.

use std::sync::atomic::Ordering;

use tether_core::metrics::Metrics;
use tokio::time::Instant;

use super::UpstreamError;
use crate::access::AccessGranted;

/// Records the attempt for `grant` that started at `started`; `via` says where it
/// came from (`route` or `portal`).
pub(crate) fn record_connect(
    metrics: &Metrics,
    grant: &AccessGranted,
    via: &'static str,
    started: Instant,
    result: Result<(), &UpstreamError>,
) {
    let elapsed = started.elapsed();
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let target = grant.target();
    let login = grant.upstream_user().map(|u| u.login).unwrap_or_default();
    match result {
        Ok(()) => {
            metrics.upstream_connect.observe(elapsed);
            tracing::info!(
                target: "audit",
                event = "upstream_connected",
                via,
                route = %target.route,
                address = %target.address,
                login = %login,
                elapsed_ms,
                policy = ?grant.reasons(),
            );
        }
        Err(e) => {
            metrics
                .upstream_connect_failures
                .fetch_add(1, Ordering::Relaxed);
            let detail = std::error::Error::source(e)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            tracing::warn!(
                target: "audit",
                event = "upstream_failed",
                via,
                route = %target.route,
                address = %target.address,
                login = %login,
                elapsed_ms,
                "{e}{detail}"
            );
        }
    }
}

/// Waits for `f` at most [`super::REQUEST_REPLY_TIMEOUT`].
pub(crate) async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    tokio::time::timeout(super::REQUEST_REPLY_TIMEOUT, f)
        .await
        .unwrap_or(Err(UpstreamError::RequestTimedOut))
}
