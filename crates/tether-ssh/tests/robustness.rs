//! Peers that do not speak SSH properly: the server drops them and keeps serving.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn banner(gw: &Gateway) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    (tcp, String::from_utf8_lossy(&buf[..n]).to_string())
}

/// Reads until EOF (or error); fails if the server keeps the socket open.
async fn closed_by_server(tcp: &mut TcpStream) {
    let mut buf = vec![0u8; 4096];
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "server kept the connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_abrupt_closes_are_dropped_and_others_still_served() {
    let gw = start(Duration::from_secs(60)).await;

    let (_, id) = banner(&gw).await;
    assert!(
        id.starts_with(&format!("SSH-2.0-tether_{}\r\n", env!("CARGO_PKG_VERSION"))),
        "{id:?}"
    );

    // An HTTP request instead of an identification line.
    let (mut tcp, _) = banner(&gw).await;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_by_server(&mut tcp).await;

    // Binary garbage, no newline at all.
    let (mut tcp, _) = banner(&gw).await;
    tcp.write_all(&[0xAB; 600]).await.unwrap();
    closed_by_server(&mut tcp).await;

    // A valid identification followed by a malformed packet.
    let (mut tcp, _) = banner(&gw).await;
    tcp.write_all(b"SSH-2.0-evil\r\n").await.unwrap();
    tcp.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    closed_by_server(&mut tcp).await;

    // Abrupt closes at various points.
    for _ in 0..5 {
        let (tcp, _) = banner(&gw).await;
        drop(tcp);
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        drop(tcp);
    }

    // Still serving: a real client gets as far as the sign-in prompt.
    let key = keygen();
    let mut run = ssh(&gw, &key, "alice", &[], Some("whoami"));
    let _code = run.code().await;
    drop(run);

    gw.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), gw.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_sign_in_deadline() {
    let gw = start(Duration::from_secs(2)).await;
    // Says nothing at all.
    let (mut silent, _) = banner(&gw).await;
    // Says hello, then nothing.
    let (mut idle, _) = banner(&gw).await;
    idle.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    closed_by_server(&mut silent).await;
    closed_by_server(&mut idle).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_clients_and_returns() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let run = ssh(&gw, &key, "alice", &["-o", "BatchMode=yes", "-N"], None);
    let registry = gw.registry.clone();
    let id = key.binding_id();
    eventually("live connection", Duration::from_secs(10), || {
        registry.live_count(&id) == 1
    })
    .await;
    gw.shutdown.cancel();
    let done = run.finish(Duration::from_secs(5)).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("server shutting down"),
        "{}",
        done.stderr
    );
    tokio::time::timeout(Duration::from_secs(10), gw.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
