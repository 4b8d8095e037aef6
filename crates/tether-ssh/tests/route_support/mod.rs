//! Helpers for the route tests: tether's `run()` with routes to a real OpenSSH sshd
//! (trusting the gateway's user CA), login users, sign-in through the store, and the
//! real OpenSSH client options for `ssh`, `scp`, `sftp` and `rsync`.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;
use std::time::Duration;

use tether_core::config::{Config, Route};
use tether_core::policy::{Block, Criterion, Op, Policy, Rule};
use tether_core::Session;

use crate::common::{self, ClientKey, Gateway};
use crate::upstream_support::{new_key, Sshd};

pub const T: Duration = Duration::from_secs(30);

/// Creates a login user on this machine (unlocked for certificate logins).
pub fn ensure_login(name: &str) {
    let exists = Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-p", "*", name])
            .status();
    } else {
        let _ = Command::new("usermod").args(["-p", "*", name]).status();
    }
    std::fs::create_dir_all("/run/sshd").unwrap();
}

/// A route to `to` with `policy` (`None` and `any == false`: admits no one).
pub fn route(name: &str, to: &str, policy: Option<Vec<Criterion>>, any: bool) -> Route {
    Route {
        name: name.into(),
        to: to.into(),
        failover: Vec::new(),
        allow_any_authenticated_user: any,
        policy: policy.map(|criteria| Policy {
            rules: vec![Rule {
                allow: Some(Block {
                    op: Op::And,
                    criteria,
                }),
                deny: None,
            }],
        }),
        line: 1,
    }
}

/// Lets `route` do everything upstream (`ssh_permit` all on; the defaults allow
/// a pty only): for the tests of forwarding itself.
pub fn permit_all(config: &mut Config, route: &str) {
    config.upstream_limits.insert(
        route.to_string(),
        tether_core::config::UpstreamLimits {
            permit: tether_core::config::Permit::ALL,
            ..Default::default()
        },
    );
}

/// The test gateway config with `routes`.
pub fn config_with(routes: Vec<Route>) -> Config {
    let mut c = common::config(Duration::from_secs(60));
    c.routes = routes;
    c
}

/// A gateway (routes from `routes(sshd address)`) and one sshd trusting its CA.
pub struct Rig {
    pub gw: Gateway,
    pub sshd: Sshd,
}

/// Starts the sshd first (it needs the CA) — so the gateway config is built
/// from a closure given the sshd address.
pub async fn rig(extra_sshd: &str, routes: impl FnOnce(&str) -> Vec<Route>) -> Rig {
    rig_with(extra_sshd, |addr| config_with(routes(addr))).await
}

pub async fn rig_with(extra_sshd: &str, config: impl FnOnce(&str) -> Config) -> Rig {
    // The CA is made by the gateway; start a placeholder sshd after the gateway.
    let port = crate::upstream_support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let gw = common::start_config(config(&addr)).await;
    let sshd = Sshd::start(&gw.user_ca, &new_key(), Some(port), extra_sshd);
    Rig { gw, sshd }
}

/// Signs `key` in through a CLI connection, from web session `session`.
pub async fn sign_in_session(gw: &Gateway, key: &ClientKey, session: Session) -> Session {
    let mut run = common::ssh(gw, key, "alice", &[], Some("whoami"));
    let code = run.code().await;
    let s = common::approve_with(&gw.store, &code, session, Duration::from_secs(48 * 3600)).await;
    let done = run.finish(T).await;
    assert!(done.status.success(), "sign-in run failed: {}", done.stderr);
    s
}

/// The OpenSSH client options every tool here shares (no config, no agent, no
/// host key prompts, this key only).
pub fn client_opts(key: &ClientKey) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-i",
        key.path.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs the real `ssh` with BatchMode to `user@127.0.0.1` and waits.
pub async fn ssh_batch(
    gw: &Gateway,
    key: &ClientKey,
    user: &str,
    extra: &[&str],
    command: Option<&str>,
) -> common::Finished {
    let quiet: &[&str] = &["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"];
    common::ssh(gw, key, user, &[quiet, extra].concat(), command)
        .finish(T)
        .await
}

/// A tiny HTTP server on 127.0.0.1: every connection gets `body` (HTTP/1.0).
pub fn http_server(body: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// GET / on 127.0.0.1:`port`; the response, or `None` if the connection failed.
pub async fn http_get(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    (!out.is_empty()).then_some(out)
}

/// Polls [`http_get`] until it answers.
pub async fn http_get_eventually(port: u16) -> String {
    let end = tokio::time::Instant::now() + T;
    loop {
        if let Some(r) = http_get(port).await {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no answer on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy to `to` whose connections the test can cut.
pub struct Proxy {
    pub addr: String,
    cut: tokio_util::sync::CancellationToken,
}

impl Proxy {
    pub async fn start(to: String) -> Proxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let cut = tokio_util::sync::CancellationToken::new();
        let token = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut a, _)) = l.accept().await else {
                    return;
                };
                let to = to.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut b) = tokio::net::TcpStream::connect(&to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    /// Drops every proxied connection (the upstream "goes away").
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

/// A unique remote path under /tmp.
pub fn remote_tmp(tag: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("/tmp/tether-{tag}-{hex}")
}

/// `sha256sum` of a local file.
pub fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The key's public line, `type base64` (what `ssh_publickey` lists).
pub fn public_line(key: &ClientKey) -> String {
    let text = std::fs::read_to_string(key.path.with_extension("pub")).unwrap();
    let mut words = text.split_whitespace();
    format!("{} {}", words.next().unwrap(), words.next().unwrap())
}
