//! Load that never authenticates: silent TCP connections to an SSH port (connect,
//! read whatever the server sends, never send a byte) and slowloris HTTP requests to a
//! web port (half a request header, then one more header byte every few seconds),
//! each from one of the load generator addresses of [`crate::loopback`]. Each
//! connection records when it was established and when — if ever — the server closed
//! it (a read returning 0, a reset, or a write failing); stopping the flood drops them
//! all. And the legitimate user's probes: `GET /ping` from 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::loopback;

/// A TCP connect that has not completed within this counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connects in flight at once while the flood is set up.
const CONNECTS_IN_FLIGHT: usize = 128;

/// How a server ended a flood connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// A read returned 0 (FIN).
    Eof,
    /// A read or write failed (RST, EPIPE).
    Reset,
}

/// One flood connection's fate so far.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// When the TCP connection was established.
    pub connected: Option<Instant>,
    /// Why it could not be.
    pub connect_error: Option<String>,
    /// When and how the server closed it.
    pub closed: Option<(Instant, Close)>,
    /// Bytes the server sent (an SSH banner, an HTTP error response).
    pub received: usize,
}

impl Record {
    /// How long after being established the server closed it.
    pub fn closed_after(&self) -> Option<Duration> {
        let (at, _) = self.closed?;
        Some(at.saturating_duration_since(self.connected?))
    }
}

/// What the flood connections look like.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Connect and stay silent.
    Silent,
    /// Send a request line and part of a header, then one byte every `drip`.
    Slowloris { drip: Duration },
}

/// A running flood.
pub struct Flood {
    records: Vec<Arc<Mutex<Record>>>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    /// When the first connect was started.
    pub started: Instant,
}

impl Flood {
    /// Starts `n` connections of `kind` to `dst` (at most [`CONNECTS_IN_FLIGHT`]
    /// connecting at once), the `i`-th from [`loopback::source`]`(i + offset)`.
    pub fn start(dst: SocketAddr, n: usize, kind: Kind, offset: usize) -> Flood {
        let (stop, stopped) = watch::channel(false);
        let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
        let mut records = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let rec = Arc::new(Mutex::new(Record::default()));
            records.push(rec.clone());
            let (gate, stopped) = (gate.clone(), stopped.clone());
            let src = loopback::source(i + offset);
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, loopback::connect_from(src, dst)).await;
                drop(permit);
                let stream = match stream {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        rec.lock().unwrap().connect_error = Some(e.kind().to_string());
                        return;
                    }
                    Err(_) => {
                        rec.lock().unwrap().connect_error = Some("connect timed out".into());
                        return;
                    }
                };
                rec.lock().unwrap().connected = Some(Instant::now());
                hold(stream, kind, &rec, stopped).await;
            }));
        }
        Flood {
            records,
            tasks,
            stop,
            started: Instant::now(),
        }
    }

    /// A copy of every connection's record now.
    pub fn snapshot(&self) -> Vec<Record> {
        self.records
            .iter()
            .map(|r| r.lock().unwrap().clone())
            .collect()
    }

    /// Waits until every connect has finished (established or failed), up to
    /// `timeout`; the time that took from the start.
    pub async fn established(&self, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = self
                .records
                .iter()
                .filter(|r| {
                    let r = r.lock().unwrap();
                    r.connected.is_none() && r.connect_error.is_none()
                })
                .count();
            if pending == 0 || Instant::now() >= deadline {
                return self.started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drops every connection (the client closes) and waits for the tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Holds one established flood connection until the server closes it or the flood stops.
async fn hold(
    mut stream: TcpStream,
    kind: Kind,
    rec: &Mutex<Record>,
    mut stopped: watch::Receiver<bool>,
) {
    let closed = |how| rec.lock().unwrap().closed = Some((Instant::now(), how));
    let drip = match kind {
        Kind::Silent => None,
        Kind::Slowloris { drip } => {
            let head = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: tether-bench-slowloris\r\nX-Slowloris: ";
            if stream.write_all(head).await.is_err() {
                closed(Close::Reset);
                return;
            }
            Some(drip)
        }
    };
    let mut ticker = tokio::time::interval(drip.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await; // the first tick is immediate
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) => { closed(Close::Eof); return; }
                Ok(n) => rec.lock().unwrap().received += n,
                Err(_) => { closed(Close::Reset); return; }
            },
            _ = ticker.tick(), if drip.is_some() => {
                if stream.write_all(b"a").await.is_err() {
                    closed(Close::Reset);
                    return;
                }
            }
            _ = stopped.changed() => return,
        }
    }
}

/// Counts over a flood's records at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub total: usize,
    pub established: usize,
    pub connect_failed: usize,
    /// Closed by the server within the window of their own establishment.
    pub closed_within: usize,
    /// … of which within a second (refused at once rather than timed out).
    pub closed_at_once: usize,
    /// Still open.
    pub open: usize,
    /// Closed having received bytes (e.g. an SSH banner, an HTTP 408).
    pub closed_with_bytes: usize,
}

/// Tallies `records` with `window` as "within".
pub fn tally(records: &[Record], window: Duration) -> Tally {
    let mut t = Tally {
        total: records.len(),
        ..Tally::default()
    };
    for r in records {
        if r.connect_error.is_some() {
            t.connect_failed += 1;
            continue;
        }
        if r.connected.is_none() {
            continue;
        }
        t.established += 1;
        match r.closed_after() {
            Some(after) => {
                if after <= window {
                    t.closed_within += 1;
                }
                if after < Duration::from_secs(1) {
                    t.closed_at_once += 1;
                }
                if r.received > 0 {
                    t.closed_with_bytes += 1;
                }
            }
            None => t.open += 1,
        }
    }
    t
}

/// One `GET /ping` on a fresh connection from 127.0.0.1: the time to the status
/// line, which must say 200.
pub async fn ping(addr: SocketAddr, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let run = async {
        let mut s = loopback::connect_from(Ipv4Addr::LOCALHOST, addr).await?;
        s.write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut buf).await?;
            ensure!(n > 0, "connection closed before the status line");
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let status = line.lines().next().unwrap_or_default().to_string();
        ensure!(
            status.split_whitespace().nth(1) == Some("200"),
            "status line {status:?}"
        );
        anyhow::Ok(started.elapsed())
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => bail!("no answer within {timeout:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let recs = vec![
            Record {
                connect_error: Some("refused".into()),
                ..Record::default()
            },
            Record {
                connected: Some(t0),
                closed: Some((t0, Close::Eof)),
                received: 20,
                ..Record::default()
            },
            Record {
                connected: Some(t0),
                closed: Some((at(20), Close::Reset)),
                ..Record::default()
            },
            Record {
                connected: Some(t0),
                closed: Some((at(90), Close::Eof)),
                ..Record::default()
            },
            Record {
                connected: Some(t0),
                ..Record::default()
            },
        ];
        let t = tally(&recs, Duration::from_secs(60));
        assert_eq!(t.total, 5);
        assert_eq!(t.connect_failed, 1);
        assert_eq!(t.established, 4);
        assert_eq!(t.closed_within, 2);
        assert_eq!(t.closed_at_once, 1);
        assert_eq!(t.closed_with_bytes, 1);
        assert_eq!(t.open, 1);
    }

    #[tokio::test]
    async fn sees_the_server_close_and_stops() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flood = Flood::start(addr, 2, Kind::Silent, 0);
        let (first, _) = listener.accept().await.unwrap();
        let (_second, _) = listener.accept().await.unwrap();
        flood.established(Duration::from_secs(5)).await;
        drop(first);
        for _ in 0..100 {
            if flood.snapshot().iter().any(|r| r.closed.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t = tally(&flood.snapshot(), Duration::from_secs(60));
        assert_eq!((t.established, t.closed_within, t.open), (2, 1, 1));
        flood.stop().await;
    }
}
