//! The outbox tailer: carries other processes' changes onto this process's feed.
//!
//! It starts at the outbox's current maximum id (history is not replayed), reads
//! `events WHERE id > last ORDER BY id` on every tick (200 ms on SQLite, 500 ms on
//! PostgreSQL) and whenever the PostgreSQL listener hears `NOTIFY tether_events`, and
//! republishes every event whose `origin` is not this store. It publishes
//! [`StoreEvent::Resync`] whenever it may have missed something: after the database
//! was unreachable, when an outbox row cannot be decoded (a newer replica), and when
//! the listener reconnects. Both tasks stop when the store's cancellation token fires
//! (the last `SqlStore` clone was dropped).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::AnyPool;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::rows::{db_err, decode_event, int, text};
use super::Dialect;
use crate::{Feed, StoreError, StoreEvent};

/// The `NOTIFY` channel the outbox trigger signals.
const CHANNEL: &str = "tether_events";
/// Rows read per query.
const BATCH: i64 = 256;
/// Pause before reconnecting a failed listener.
const LISTENER_RETRY: Duration = Duration::from_secs(1);

/// Everything the tailer task owns.
pub(crate) struct Tailer {
    pub pool: AnyPool,
    pub dialect: Dialect,
    pub origin: String,
    pub feed: Feed,
    /// The last outbox id already seen.
    pub last: i64,
    pub cancel: CancellationToken,
    /// PostgreSQL URL to LISTEN on (`None` for SQLite).
    pub listen_url: Option<String>,
}

/// Spawns the tailer (and, for PostgreSQL, its listener) on the current runtime,
/// tracked by `tasks` (the store waits for them in `close`).
pub(crate) fn spawn(tasks: &TaskTracker, tailer: Tailer) {
    let wake = Arc::new(Notify::new());
    if let Some(url) = tailer.listen_url.clone() {
        tasks.spawn(listen(
            url,
            tailer.feed.clone(),
            Arc::clone(&wake),
            tailer.cancel.clone(),
        ));
    }
    tasks.spawn(tailer.run(wake));
}

impl Tailer {
    async fn run(mut self, wake: Arc<Notify>) {
        let period = match self.dialect {
            Dialect::Sqlite => Duration::from_millis(200),
            Dialect::Postgres => Duration::from_millis(500),
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                _ = tick.tick() => {}
                () = wake.notified() => {}
            }
            let cancel = self.cancel.clone();
            let res = tokio::select! {
                () = cancel.cancelled() => return,
                r = self.poll() => r,
            };
            match res {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("store: change feed reachable again; resyncing");
                    self.feed.publish(StoreEvent::Resync);
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "store: change feed poll failed");
                    }
                    failing = true;
                }
            }
        }
    }

    /// Reads and republishes everything after `last`.
    async fn poll(&mut self) -> Result<(), StoreError> {
        loop {
            let rows = sqlx::query(
                "SELECT id, origin, payload_json FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(self.last)
            .bind(BATCH)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
            let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= BATCH;
            for row in rows {
                let id = int(&row, "id")?;
                self.last = id;
                if text(&row, "origin")? == self.origin {
                    continue; // published locally at commit
                }
                match text(&row, "payload_json").and_then(|p| decode_event(&p)) {
                    Ok(ev) => self.feed.publish(ev),
                    Err(e) => {
                        tracing::warn!(event_id = id, error = %e, "store: undecodable change event; resyncing");
                        self.feed.publish(StoreEvent::Resync);
                    }
                }
            }
            if !full {
                return Ok(());
            }
        }
    }
}

/// Keeps a `LISTEN tether_events` connection and wakes the tailer on every
/// notification. Notifications are only a hint (the tailer reads the outbox), so a
/// lost connection costs latency, not events; still, a reconnect publishes `Resync`.
async fn listen(url: String, feed: Feed, wake: Arc<Notify>, cancel: CancellationToken) {
    let mut connected_before = false;
    loop {
        let connect = async {
            let mut l = PgListener::connect(&url).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let listener = tokio::select! {
            () = cancel.cancelled() => return,
            r = connect => r,
        };
        let mut listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "store: LISTEN connection failed; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(LISTENER_RETRY) => continue,
                }
            }
        };
        if connected_before {
            feed.publish(StoreEvent::Resync);
        }
        connected_before = true;
        wake.notify_one();
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return,
                r = listener.try_recv() => r,
            };
            match next {
                Ok(Some(_)) => wake.notify_one(),
                Ok(None) => {
                    // Connection lost and re-established: notifications in between are gone.
                    tracing::info!("store: LISTEN connection re-established; resyncing");
                    feed.publish(StoreEvent::Resync);
                    wake.notify_one();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store: LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}
