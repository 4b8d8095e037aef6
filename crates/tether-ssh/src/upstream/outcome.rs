//! Bounded waits on the upstream. (What a connect attempt leaves behind — metrics
//! and the audit event — is recorded by `crate::admission::connect`.)

use super::UpstreamError;

/// Waits for `f` at most [`super::REQUEST_REPLY_TIMEOUT`].
pub(crate) async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    tokio::time::timeout(super::REQUEST_REPLY_TIMEOUT, f)
        .await
        .unwrap_or(Err(UpstreamError::RequestTimedOut))
}
