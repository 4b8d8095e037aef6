//! Pre-authentication limits (docs/LIMITS.md): what an unauthenticated
//! client can hold. Real TCP clients from several loopback addresses and the real
//! OpenSSH client against the gateway in this process; each limit is shown doing
//! what a user (or an attacker) would notice: a refused connection gets one line and
//! is closed, a silent one is closed at its deadline, a flood from one address
//! cannot keep another address out, and sign-in codes per address run out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use tether_core::config::Limits;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// Upper bound for anything to happen (never a timing assertion).
const T: Duration = Duration::from_secs(20);

fn limited(limits: Limits) -> tether_core::config::Config {
    let mut c = config(Duration::from_secs(60));
    c.limits = limits;
    c
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until EOF (or reset), at most `T`; returns what was read, or `None` if
/// the connection was still open after `T`.
async fn read_to_close(tcp: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let r = tokio::time::timeout(T, async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// Reads the server's identification line (the connection was let in).
async fn read_banner(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(T, async {
        while !got.ends_with(b"\n") {
            assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "closed early");
            got.push(byte[0]);
        }
    })
    .await
    .expect("identification line");
    String::from_utf8(got).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_per_source_cap_a_connection_gets_one_line_and_is_closed() {
    let gw = start_config(limited(Limits {
        ssh_max_unauthenticated_per_source: 2,
        ..Limits::default()
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = connect_from("127.0.0.3", gw.addr).await;
        assert!(read_banner(&mut tcp).await.starts_with("SSH-2.0-tether_"));
        held.push(tcp);
    }
    let mut third = connect_from("127.0.0.3", gw.addr).await;
    let said = read_to_close(&mut third).await.expect("closed");
    assert_eq!(
        said,
        "tether: too many unauthenticated connections from your address; try again later\r\n"
    );
    // Another address is not affected.
    let mut other = connect_from("127.0.0.4", gw.addr).await;
    assert!(read_banner(&mut other).await.starts_with("SSH-2.0-tether_"));
    let metrics = gw.registry.metrics();
    assert_eq!(metrics.connections_shed.get("per_source"), 1);
    assert_eq!(
        metrics
            .connections_unauthenticated
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    // Closing one frees its place.
    drop(held.pop());
    eventually("the place is given back", T, || {
        metrics
            .connections_unauthenticated
            .load(std::sync::atomic::Ordering::Relaxed)
            == 2
    })
    .await;
    let mut again = connect_from("127.0.0.3", gw.addr).await;
    assert!(read_banner(&mut again).await.starts_with("SSH-2.0-tether_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_connections_are_closed_at_the_handshake_deadline() {
    let gw = start_config(limited(Limits {
        ssh_handshake_timeout: Duration::from_secs(1),
        ..Limits::default()
    }))
    .await;
    // Says nothing at all.
    let mut silent = connect_from("127.0.0.5", gw.addr).await;
    // Sends its identification, then stalls the key exchange.
    let mut stalled = connect_from("127.0.0.5", gw.addr).await;
    tokio::io::AsyncWriteExt::write_all(&mut stalled, b"SSH-2.0-stall_1.0\r\n")
        .await
        .unwrap();
    let silent_saw = read_to_close(&mut silent).await;
    assert!(silent_saw.is_some(), "the silent connection was closed");
    assert!(silent_saw.unwrap().starts_with("SSH-2.0-tether_"));
    assert!(
        read_to_close(&mut stalled).await.is_some(),
        "the stalled key exchange was closed"
    );
    assert_eq!(
        gw.registry
            .metrics()
            .connections_shed
            .get("handshake_timeout"),
        2
    );
    // A real client in time is not affected.
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let done = ssh(&gw, &key, "alice", &["-o", "BatchMode=yes"], Some("whoami"))
        .finish(T)
        .await;
    assert!(done.status.success(), "{}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_other_addresses_cannot_keep_a_user_out() {
    let gw = start_config(limited(Limits {
        ssh_max_unauthenticated: 6,
        ssh_max_unauthenticated_per_source: 100,
        ..Limits::default()
    }))
    .await;
    let mut flood = Vec::new();
    for i in 0..6 {
        let from = format!("127.0.1.{}", 1 + i % 2);
        let mut tcp = connect_from(&from, gw.addr).await;
        read_banner(&mut tcp).await;
        flood.push(tcp);
    }
    // Full: the flooding addresses cannot shed each other.
    let mut more = connect_from("127.0.1.1", gw.addr).await;
    assert_eq!(
        read_to_close(&mut more).await.as_deref(),
        Some("tether: too many unauthenticated connections; try again later\r\n")
    );
    // A user from another address gets in: a flooding connection makes room.
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let done = ssh(&gw, &key, "alice", &["-o", "BatchMode=yes"], Some("whoami"))
        .finish(T)
        .await;
    assert!(done.status.success(), "{}", done.stderr);
    assert!(done.stdout.contains("alice@example.com"), "{}", done.stdout);
    let metrics = gw.registry.metrics();
    assert!(metrics.connections_shed.get("shed") >= 1);
    let mut closed = 0;
    for tcp in &mut flood {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(closed >= 1, "a flooding connection was shed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_codes_per_address_run_out() {
    let gw = start_config(limited(Limits {
        ssh_sign_in_codes_per_source: 2,
        ..Limits::default()
    }))
    .await;
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let key = keygen();
        let mut run = ssh(&gw, &key, "alice", &[], Some("whoami"));
        run.code().await;
        waiting.push((key, run));
    }
    let key = keygen();
    let refused = ssh(&gw, &key, "alice", &[], Some("whoami")).finish(T).await;
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr
            .contains("too many sign-in requests from your address; try again later"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        gw.registry.metrics().connections_shed.get("sign_in_codes"),
        1
    );
}
