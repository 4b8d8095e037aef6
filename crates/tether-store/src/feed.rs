//! The in-process change feed: a bounded broadcast of [`StoreEvent`]s.
//!
//! Every backend owns one [`Feed`] and publishes on it after a change commits (and,
//! for the SQL backends, when another process's change arrives through the outbox
//! tailer). Consumers hold a [`broadcast::Receiver`]; a receiver that falls more than
//! [`FEED_CAPACITY`] events behind gets `RecvError::Lagged` and MUST treat it exactly
//! like [`StoreEvent::Resync`]: events were lost, so re-check every live connection
//! against the store. This module does no I/O and knows nothing about databases.

use tokio::sync::broadcast;

use crate::StoreEvent;

/// How many events a slow receiver may fall behind before it sees `Lagged`.
pub const FEED_CAPACITY: usize = 1024;

/// A cloneable handle on the broadcast channel that carries [`StoreEvent`]s.
#[derive(Clone, Debug)]
pub struct Feed {
    tx: broadcast::Sender<StoreEvent>,
}

impl Feed {
    /// A feed with room for [`FEED_CAPACITY`] undelivered events per receiver.
    pub fn new() -> Self {
        let (tx, _rx) = broadcast::channel(FEED_CAPACITY);
        Self { tx }
    }

    /// Delivers `ev` to every current subscriber. Having no subscriber is not an
    /// error: nobody is listening, so nothing needs to happen.
    pub fn publish(&self, ev: StoreEvent) {
        // `send` only fails when there are no receivers.
        let _ = self.tx.send(ev);
    }

    /// A receiver of every event published from now on. `RecvError::Lagged` means
    /// events were dropped: treat it as [`StoreEvent::Resync`].
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.tx.subscribe()
    }
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_receive_events_published_after_subscribing() {
        let feed = Feed::new();
        feed.publish(StoreEvent::Resync); // nobody listening: dropped, no error
        let mut rx = feed.subscribe();
        feed.publish(StoreEvent::IdentityBindingRemoved {
            fingerprint: "SHA256:x".into(),
        });
        assert_eq!(
            rx.recv().await.unwrap(),
            StoreEvent::IdentityBindingRemoved {
                fingerprint: "SHA256:x".into()
            }
        );
    }

    #[tokio::test]
    async fn slow_receiver_lags() {
        let feed = Feed::new();
        let mut rx = feed.subscribe();
        for _ in 0..=FEED_CAPACITY {
            feed.publish(StoreEvent::Resync);
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }
}
