//! Connection workers: one thread per core, each running a single-threaded tokio
//! runtime; every accepted connection lives on one of them from accept to close.
//!
//! A relayed connection is a chain of tasks (russh's reader and writer towards the
//! client, the actor, the channel pumps, russh's client session towards the
//! upstream) that hand every packet to each other. On a work-stealing runtime those
//! hand-offs cross threads: each is a wake-up through the kernel, and the packet is
//! copied on a core whose cache has not seen it. The throughput benchmark measured
//! this at about a fifth of the relay's CPU per GiB. Pinning a connection's tasks to
//! one thread (the model of Envoy's and nginx's workers) removes both; connections
//! are spread over the workers by their live connection count.
//!
//! Shared state (store, registry, change feed) is reached through `Send` handles and
//! channels, which work across runtimes; the rest of the process (web app, store
//! watch, reload) stays on the main runtime.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// One worker thread's runtime and its live connection count.
struct Worker {
    handle: Handle,
    live: Arc<AtomicUsize>,
}

/// The pool. Dropping it (or [`Workers::stop`]) ends the threads; tasks still
/// running on them are dropped with their runtime.
pub(crate) struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
}

/// Decrements a worker's live count when the connection's future ends or is dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut workers = Vec::with_capacity(count.max(1));
        for n in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let stopped = stop.clone();
            std::thread::Builder::new()
                .name(format!("tether-ssh-{n}"))
                .spawn(move || runtime.block_on(stopped.cancelled()))?;
            workers.push(Worker {
                handle,
                live: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self { workers, stop })
    }

    /// One worker per available core.
    pub(crate) fn per_core() -> std::io::Result<Self> {
        Self::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Runs `connection` on the least busy worker. It starts on that worker's
    /// thread, inside its runtime, so a socket it adopts there (`from_std`) belongs
    /// to that worker's reactor. `None` if the pool was stopped.
    pub(crate) fn spawn<F>(&self, connection: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.stop.is_cancelled() {
            return None;
        }
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.live.load(Ordering::Relaxed))?;
        worker.live.fetch_add(1, Ordering::Relaxed);
        let live = Live(worker.live.clone());
        Some(worker.handle.spawn(async move {
            let _live = live;
            connection.await;
        }))
    }

    /// Ends the worker threads (their remaining tasks are dropped).
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Live connections per worker.
    #[cfg(test)]
    fn load(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|w| w.live.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn connections_spread_over_workers_and_run_on_their_thread() {
        let workers = Workers::start(2).unwrap();
        let (release_tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut names = Vec::new();
        let mut joins = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let mut release = release_tx.subscribe();
            joins.push(
                workers
                    .spawn(async move {
                        let name = std::thread::current().name().map(str::to_string);
                        let _ = tx.send(name);
                        let _ = release.recv().await;
                    })
                    .unwrap(),
            );
            names.push(rx.await.unwrap().unwrap());
        }
        // Least-busy placement alternates between the two workers.
        names.sort();
        assert_eq!(
            names,
            [
                "tether-ssh-0",
                "tether-ssh-0",
                "tether-ssh-1",
                "tether-ssh-1"
            ]
        );
        assert_eq!(workers.load(), [2, 2]);
        release_tx.send(()).unwrap();
        for j in joins {
            j.await.unwrap();
        }
        assert_eq!(workers.load(), [0, 0]);
    }

    #[tokio::test]
    async fn stopping_drops_what_still_runs_and_refuses_new_work() {
        let workers = Workers::start(1).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stuck = workers
            .spawn(async move {
                let _keep = tx;
                std::future::pending::<()>().await;
            })
            .unwrap();
        workers.stop();
        // The sender is dropped with the worker's runtime.
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("task dropped when the worker stopped")
            .unwrap_err();
        assert!(stuck.await.is_err());
        assert!(workers.spawn(async {}).is_none());
        assert_eq!(workers.load(), [0]);
    }
}
