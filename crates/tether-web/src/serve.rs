//! The web listener's accept loop, with the limits a public endpoint needs.
//!
//! `axum::serve` has no header-read timeout and no connection cap, so one client
//! could hold any number of half-sent requests open forever (slowloris). Here every
//! connection is served by hyper's HTTP/1.1 server with a header-read timeout (which
//! also bounds how long an idle keep-alive connection waits for its next request),
//! each request after its headers gets a deadline (408 past it), request bodies are
//! capped at [`BODY_LIMIT`] (every form tether takes is a few hundred bytes), and
//! connections are capped overall and per source address: past a cap the
//! connection gets `503` and is closed.
//!
//! Generic over the connection type, so plain HTTP and TLS (`tls.rs`) share it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tether_core::config::Limits;
use tether_core::metrics::Metrics;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Largest request body accepted on any endpoint.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long shutdown lets in-flight requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The web limits (from the config's `Limits`).
#[derive(Clone, Copy, Debug)]
pub struct WebLimits {
    /// Time to send a request's headers (and idle keep-alive time).
    pub header_timeout: Duration,
    /// Time a request may take after its headers.
    pub request_timeout: Duration,
    /// Connections at once.
    pub max_connections: usize,
    /// Connections at once from one source address.
    pub max_per_source: usize,
}

impl From<&Limits> for WebLimits {
    fn from(l: &Limits) -> Self {
        WebLimits {
            header_timeout: l.http_header_timeout,
            request_timeout: l.http_request_timeout,
            max_connections: l.http_max_connections,
            max_per_source: l.http_max_connections_per_source,
        }
    }
}

impl Default for WebLimits {
    fn default() -> Self {
        WebLimits::from(&Limits::default())
    }
}

/// Where accepted connections come from: a plain TCP listener, or the TLS acceptor.
pub trait Accept: Send + 'static {
    /// The connection type.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its peer; `None` once no more will come.
    fn next(&mut self) -> impl std::future::Future<Output = Option<(Self::Io, SocketAddr)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn next(&mut self) -> Option<(Self::Io, SocketAddr)> {
        loop {
            match self.accept().await {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    // EMFILE and resets are survivable: wait a little and retry.
                    tracing::warn!("web accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Open connections per source address.
#[derive(Default)]
struct PerSource(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place under the caps; given back on drop.
struct Place {
    _total: OwnedSemaphorePermit,
    per_source: Arc<PerSource>,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut map = self.per_source.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was turned away (the metric label).
fn admit(
    total: &Arc<Semaphore>,
    per_source: &Arc<PerSource>,
    ip: IpAddr,
    max_per_source: usize,
) -> Result<Place, &'static str> {
    let Ok(permit) = Arc::clone(total).try_acquire_owned() else {
        return Err("http_total");
    };
    let mut map = per_source.0.lock().unwrap_or_else(|e| e.into_inner());
    let n = map.entry(ip).or_insert(0);
    if *n >= max_per_source {
        return Err("http_per_source");
    }
    *n += 1;
    drop(map);
    Ok(Place {
        _total: permit,
        per_source: Arc::clone(per_source),
        ip,
    })
}

/// The request deadline (408 when it passes).
async fn request_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timeout\n").into_response(),
    }
}

/// Serves `app` on connections from `accept` until `shutdown`, then stops
/// accepting and gives in-flight requests [`SHUTDOWN_GRACE`] to finish.
pub async fn serve_with<A: Accept>(
    mut accept: A,
    app: Router,
    limits: WebLimits,
    metrics: Option<Arc<Metrics>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            limits.request_timeout,
            request_deadline,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let total = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_source = Arc::new(PerSource::default());
    let tracker = TaskTracker::new();
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = accept.next() => next,
        };
        let Some((mut io, peer)) = next else { break };
        let place = match admit(&total, &per_source, peer.ip(), limits.max_per_source.max(1)) {
            Ok(place) => place,
            Err(reason) => {
                if let Some(m) = &metrics {
                    m.connections_shed.inc(reason);
                }
                tracing::debug!(%peer, reason, "web connection refused");
                // A bounded goodbye; the connection is dropped either way.
                tracker.spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        io.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
                              Content-Length: 0\r\n\r\n",
                        ),
                    )
                    .await;
                });
                continue;
            }
        };
        let app = app.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let _place = place;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move {
                    let res = app.oneshot(req.map(axum::body::Body::new)).await;
                    Ok::<_, Infallible>(res.unwrap_or_else(|e| match e {}))
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(64 * 1024);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, "web connection ended: {e}");
                    }
                }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};

    async fn start(limits: WebLimits) -> (SocketAddr, Arc<Metrics>, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/ping", get(|| async { "OK" }))
            .route(
                "/echo",
                post(|body: String| async move { body.len().to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let metrics = Arc::new(Metrics::default());
        let stop = CancellationToken::new();
        tokio::spawn(serve_with(
            listener,
            app,
            limits,
            Some(metrics.clone()),
            stop.clone(),
        ));
        (addr, metrics, stop)
    }

    async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
        s.connect(to).await.unwrap()
    }

    async fn exchange(tcp: &mut TcpStream, request: &[u8]) -> String {
        tcp.write_all(request).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    const PING: &[u8] = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    #[tokio::test]
    async fn a_half_sent_request_is_closed_at_the_header_timeout() {
        let (addr, _, _stop) = start(WebLimits {
            header_timeout: Duration::from_millis(300),
            ..WebLimits::default()
        })
        .await;
        let mut slow = connect_from("127.0.0.2", addr).await;
        slow.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut got)).await;
        assert!(closed.is_ok(), "closed by the server");
        // Others are served meanwhile and after.
        let mut fine = connect_from("127.0.0.1", addr).await;
        assert!(exchange(&mut fine, PING).await.ends_with("OK"));
    }

    #[tokio::test]
    async fn connections_over_the_caps_get_503() {
        let (addr, metrics, _stop) = start(WebLimits {
            max_connections: 3,
            max_per_source: 2,
            ..WebLimits::default()
        })
        .await;
        let mut a1 = connect_from("127.0.0.2", addr).await;
        let _a2 = connect_from("127.0.0.2", addr).await;
        let mut a3 = connect_from("127.0.0.2", addr).await;
        let said = exchange(&mut a3, PING).await;
        assert!(said.starts_with("HTTP/1.1 503"), "{said}");
        let _b = connect_from("127.0.0.3", addr).await;
        let mut c = connect_from("127.0.0.4", addr).await;
        let said = exchange(&mut c, PING).await;
        assert!(said.starts_with("HTTP/1.1 503"), "{said}");
        assert_eq!(metrics.connections_shed.get("http_per_source"), 1);
        assert_eq!(metrics.connections_shed.get("http_total"), 1);
        // A held connection still works.
        assert!(exchange(&mut a1, PING).await.ends_with("OK"));
    }

    #[tokio::test]
    async fn bodies_are_capped_and_slow_requests_time_out() {
        let (addr, _, _stop) = start(WebLimits {
            request_timeout: Duration::from_millis(300),
            ..WebLimits::default()
        })
        .await;
        let body = vec![b'x'; BODY_LIMIT + 1];
        let mut big = connect_from("127.0.0.1", addr).await;
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(&body);
        let said = exchange(&mut big, &req).await;
        assert!(said.starts_with("HTTP/1.1 413"), "{said}");
        let mut small = connect_from("127.0.0.1", addr).await;
        let said = exchange(
            &mut small,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        )
        .await;
        assert!(said.ends_with("\r\n\r\n5"), "{said}");
        let mut slow = connect_from("127.0.0.1", addr).await;
        let said = exchange(
            &mut slow,
            b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    }
}
