//! Per-connection authentication limits (SPEC §3.5): at most 40 authentication
//! requests and 6 failures. Pure counting; the actor decides what to tell the client.

/// Authentication requests (of any method) a connection may make.
pub(crate) const MAX_AUTH_REQUESTS: u32 = 40;
/// Failed authentication requests a connection may make; the connection is closed
/// right after the last one.
pub(crate) const MAX_AUTH_FAILURES: u32 = 6;

/// Which limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitExceeded {
    /// More than [`MAX_AUTH_REQUESTS`] requests.
    #[error("too many authentication requests")]
    Requests,
    /// [`MAX_AUTH_FAILURES`] failures reached.
    #[error("too many authentication failures")]
    Failures,
}

/// Counters for one connection.
#[derive(Debug, Default)]
pub(crate) struct AuthLimits {
    requests: u32,
    failures: u32,
}

impl AuthLimits {
    /// Counts a request; `Err` when it is one too many (refuse it).
    pub(crate) fn request(&mut self) -> Result<(), LimitExceeded> {
        self.requests = self.requests.saturating_add(1);
        if self.requests > MAX_AUTH_REQUESTS {
            Err(LimitExceeded::Requests)
        } else {
            Ok(())
        }
    }

    /// Counts a failure; `Err` when this was the last one allowed (send the
    /// failure, then close).
    pub(crate) fn failure(&mut self) -> Result<(), LimitExceeded> {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= MAX_AUTH_FAILURES {
            Err(LimitExceeded::Failures)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forty_requests_pass_the_forty_first_does_not() {
        let mut l = AuthLimits::default();
        for _ in 0..MAX_AUTH_REQUESTS {
            assert_eq!(l.request(), Ok(()));
        }
        assert_eq!(l.request(), Err(LimitExceeded::Requests));
        assert_eq!(l.request(), Err(LimitExceeded::Requests), "stays exceeded");
    }

    #[test]
    fn the_sixth_failure_closes() {
        let mut l = AuthLimits::default();
        for _ in 1..MAX_AUTH_FAILURES {
            assert_eq!(l.failure(), Ok(()));
        }
        assert_eq!(l.failure(), Err(LimitExceeded::Failures));
    }

    #[test]
    fn messages_are_short_sentences() {
        assert_eq!(
            LimitExceeded::Requests.to_string(),
            "too many authentication requests"
        );
        assert_eq!(
            LimitExceeded::Failures.to_string(),
            "too many authentication failures"
        );
    }
}
