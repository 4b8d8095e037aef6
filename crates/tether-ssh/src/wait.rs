//! Waiting for the browser's decision on a sign-in code (SPEC §3.4).
//!
//! The connection subscribes to the store's change feed *before* reading the
//! request, so a decision committed in between is never missed, then waits for the
//! first of: a `RequestDecided` for its code (or a lag/resync, which means "look
//! again"), the deadline, the client going away, or server shutdown. A re-check every
//! two seconds covers a silent feed. Store errors never approve anything: the wait
//! goes on and ends at the deadline at the latest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tether_core::RequestStatus;
use tether_store::{Store, StoreEvent};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::stream::Probe;

/// Safety-net re-check interval while waiting.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Authorized; the binding created for the key.
    Approved {
        /// `sshkey-SHA256:...`.
        binding_id: String,
    },
    /// Denied in the browser.
    Denied,
    /// The deadline passed (or the request disappeared).
    Expired,
    /// The client closed the connection.
    PeerGone,
    /// The server is shutting down.
    Shutdown,
}

/// Waits for the decision on `code`; see the module docs.
pub(crate) async fn decision(
    store: &dyn Store,
    code: &str,
    deadline: Instant,
    probe: &Probe,
    shutdown: &CancellationToken,
) -> Decision {
    let mut feed = Some(store.subscribe());
    let peer_gone = probe.peer_closed();
    tokio::pin!(peer_gone);
    let mut tick = tokio::time::interval_at(Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = true;
    loop {
        if check {
            check = false;
            if let Some(d) = look(store, code).await {
                return d;
            }
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Decision::Shutdown,
            () = &mut peer_gone => return Decision::PeerGone,
            () = tokio::time::sleep_until(deadline) => {
                // A decision that landed just now still counts.
                return look(store, code).await.unwrap_or(Decision::Expired);
            }
            ev = recv(&mut feed) => match ev {
                Ok(StoreEvent::RequestDecided { code: c }) if c == code => check = true,
                Ok(StoreEvent::Resync) | Err(RecvError::Lagged(_)) => check = true,
                Ok(_) => {}
                Err(RecvError::Closed) => {
                    tracing::warn!("store feed closed while waiting; polling instead");
                    feed = None;
                }
            },
            _ = tick.tick() => check = true,
        }
    }
}

/// Receives from the feed, or never when there is none.
async fn recv(
    feed: &mut Option<tokio::sync::broadcast::Receiver<StoreEvent>>,
) -> Result<StoreEvent, RecvError> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads the request; `Some` when it is decided (or gone).
async fn look(store: &dyn Store, code: &str) -> Option<Decision> {
    match store.get_request(code).await {
        Ok(Some(r)) => match r.status {
            RequestStatus::Approved { binding_id, .. } => Some(Decision::Approved { binding_id }),
            RequestStatus::Denied { .. } => Some(Decision::Denied),
            RequestStatus::Pending => None,
        },
        Ok(None) => Some(Decision::Expired),
        Err(e) => {
            tracing::warn!("reading the sign-in request failed, will retry: {e}");
            None
        }
    }
}

/// Codes that connections of this process are waiting on, so that a connection
/// going away drops its pending request only when nobody else here shares the code
/// (one URL per key: concurrent connections with one key wait on the same code).
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    codes: Mutex<HashMap<String, usize>>,
}

impl Waiters {
    /// Marks a connection waiting on `code` until the guard drops.
    pub(crate) fn enter<'a>(&'a self, code: &str) -> WaitGuard<'a> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        *codes.entry(code.to_string()).or_insert(0) += 1;
        WaitGuard {
            waiters: self,
            code: code.to_string(),
        }
    }
}

/// One connection's wait on a code.
#[derive(Debug)]
pub(crate) struct WaitGuard<'a> {
    waiters: &'a Waiters,
    code: String,
}

impl WaitGuard<'_> {
    /// Whether this is the only connection here waiting on the code.
    pub(crate) fn is_last(&self) -> bool {
        let codes = self.waiters.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.get(&self.code).copied().unwrap_or(0) <= 1
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut codes = self.waiters.codes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = codes.get_mut(&self.code) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                codes.remove(&self.code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_count_per_code() {
        let w = Waiters::default();
        let a = w.enter("c1");
        assert!(a.is_last());
        let b = w.enter("c1");
        let other = w.enter("c2");
        assert!(!a.is_last());
        assert!(other.is_last());
        drop(b);
        assert!(a.is_last());
        drop(a);
        drop(other);
        assert!(w.codes.lock().map(|c| c.is_empty()).unwrap_or(false));
    }
}
