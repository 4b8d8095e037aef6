//! This replica's live connection counts and live sessions, published to a store
//! that several replicas (or the `tether sessions` command) share, so that the
//! bindings page and the operator console of any replica show every replica's
//! connections (SPEC §4: "number of live connections", §5 console).
//!
//! The publisher writes the per-binding counts whenever they change (a burst of
//! changes is written once) and re-stamps them every [`LIVE_COUNTS_EVERY`] while
//! there are any; readers ignore counts older than [`LIVE_COUNTS_FRESH_FOR`], so a
//! replica that died stops counting within that time. On shutdown it withdraws its
//! counts. A store failure is logged and retried; it never touches a connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tether_store::Store;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Registry;

/// How often a replica re-stamps its published counts.
pub const LIVE_COUNTS_EVERY: Duration = Duration::from_secs(5);
/// How long published counts count: three missed stamps.
pub const LIVE_COUNTS_FRESH_FOR: Duration = Duration::from_secs(15);
/// How long a change waits for the ones right behind it (one write per burst).
const COALESCE: Duration = Duration::from_millis(20);
/// How soon a failed write is retried.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long the final withdrawal may take at shutdown.
const WITHDRAW_WAIT: Duration = Duration::from_secs(2);

impl Registry {
    /// Authenticated connections per binding id, in id order.
    pub fn live_counts(&self) -> Vec<(String, u32)> {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for e in self.lock().values().filter(|e| e.session_id.is_some()) {
            let n = counts.entry(e.binding_id.clone()).or_insert(0);
            *n = n.saturating_add(1);
        }
        counts.into_iter().collect()
    }

    /// Publishes this replica's live counts to `store` as `replica` until
    /// `shutdown`, then withdraws them.
    pub async fn publish_live_counts(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        replica: String,
        shutdown: CancellationToken,
    ) {
        // What the store holds for us: `None` = unknown (start, or a failed write).
        let mut published: Option<Vec<(String, u32)>> = None;
        let mut next = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.changed.notified() => {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(COALESCE) => {}
                    }
                }
                () = tokio::time::sleep_until(next) => {}
            }
            let counts = self.live_counts();
            let now = self.clock.now();
            let written = match &published {
                Some(p) if *p == counts && counts.is_empty() => Ok(()),
                Some(p) if *p == counts => store.refresh_live_counts(&replica, now).await,
                _ => store.publish_live_counts(&replica, &counts, now).await,
            };
            // The console's rows carry byte counts and idle times, so they are
            // written whole each time (nothing to write while there are none).
            let written = match written {
                Ok(()) if counts.is_empty() && published.as_ref().is_some_and(Vec::is_empty) => {
                    Ok(())
                }
                Ok(()) => {
                    let sessions = self.live_sessions();
                    store.publish_live_sessions(&replica, &sessions, now).await
                }
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => {
                    published = Some(counts);
                    next = Instant::now() + LIVE_COUNTS_EVERY;
                }
                Err(e) => {
                    tracing::warn!("publishing live connection counts failed, retrying: {e}");
                    published = None;
                    next = Instant::now() + RETRY_AFTER;
                }
            }
        }
        let now = self.clock.now();
        let withdraw = async {
            store.publish_live_counts(&replica, &[], now).await?;
            store.publish_live_sessions(&replica, &[], now).await
        };
        match tokio::time::timeout(WITHDRAW_WAIT, withdraw).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("withdrawing live connection counts failed: {e}"),
            Err(_) => tracing::warn!("withdrawing live connection counts timed out"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use tether_core::{Clock, SystemClock};
    use tether_store::{MemoryStore, Store};

    use super::*;

    async fn elsewhere(store: &dyn Store, id: &str) -> Option<u32> {
        let since = SystemClock.now().minus(LIVE_COUNTS_FRESH_FOR);
        store
            .live_counts_elsewhere("reader", &[id.to_string()], since)
            .await
            .unwrap()
            .get(id)
            .copied()
    }

    async fn eventually(store: &dyn Store, id: &str, want: Option<u32>) {
        for _ in 0..200 {
            if elsewhere(store, id).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{id}: wanted {want:?}, store has {:?}",
            elsewhere(store, id).await
        );
    }

    #[tokio::test]
    async fn publishes_authenticated_connections_and_withdraws_at_shutdown() {
        let registry = Arc::new(Registry::new());
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(registry.clone().publish_live_counts(
            store.clone(),
            "replica-1".into(),
            stop.clone(),
        ));

        let a = registry.register("sshkey-A");
        let b = registry.register("sshkey-A");
        // Registered but not authenticated yet: not counted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(elsewhere(&*store, "sshkey-A").await, None);
        a.activate("s1");
        b.activate("s1");
        eventually(&*store, "sshkey-A", Some(2)).await;
        drop(a);
        eventually(&*store, "sshkey-A", Some(1)).await;
        assert_eq!(registry.live_counts(), vec![("sshkey-A".to_string(), 1)]);

        stop.cancel();
        task.await.unwrap();
        assert_eq!(elsewhere(&*store, "sshkey-A").await, None);
        drop(b);
    }
}
