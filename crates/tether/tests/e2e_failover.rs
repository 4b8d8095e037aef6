//! Several upstreams on one route (issue 15), through the real binary: the route's
//! `to` lists a port nobody listens on first and a real OpenSSH sshd second; the
//! real OpenSSH client, signed in at the real IdP in headless Chromium, lands on
//! the second — the first is tried, found down, and skipped — and the audit line
//! names the upstream actually reached. A first upstream that is silent (its
//! connect hangs) is given up on after the bounded connect timeout. A route whose upstreams are all down gives
//! the client one clear line, promptly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tether_testkit::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn first_upstream_down_connects_to_the_second() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists()) {
        return;
    }
    ensure_user("alice");
    let keys = key_dir();
    let k = new_key(keys.path(), "k");
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(&PathBuf::from(format!("{}.pub", ca.display())));
    let (down, down2) = (free_port(), free_port());
    // A host that went silent: its connect hangs instead of being refused.
    let silent = SilentPort::new();
    let gw = Gateway::start(&format!(
        "ssh_user_ca_key_file: {ca}
ssh_sign_in_timeout: 2m
routes:
  - from: ssh://pair
    to:
      - ssh://127.0.0.1:{down}
      - ssh://127.0.0.1:{up}
    allow_any_authenticated_user: true
  - from: ssh://dead
    to: [ssh://127.0.0.1:{down}, ssh://127.0.0.1:{down2}]
    allow_any_authenticated_user: true
  - from: ssh://quiet
    to: [ssh://127.0.0.1:{silent}, ssh://127.0.0.1:{up}]
    allow_any_authenticated_user: true
",
        ca = ca.display(),
        up = sshd.port,
        silent = silent.port,
    ));

    // `tether check` shows the order the upstreams are tried in.
    let check = gw
        .tether
        .cli(&["check", "-c", gw.tether.config_path().to_str().unwrap()]);
    assert!(check.success(), "{check:?}");
    let order = format!(
        "ssh://pair -> 127.0.0.1:{down} then 127.0.0.1:{}",
        sshd.port
    );
    assert!(check.stdout.contains(&order), "{}", check.stdout);

    // Sign in on the pair: the first upstream refuses, the second logs alice in.
    let mut ssh = gw.ssh(&k, "alice@pair", &["id", "-un"]);
    let url = sign_in_url(&ssh);
    BrowserProfile::new("failover_alice")
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    assert!(ssh.output().contains("alice"), "{}", ssh.output());

    // Again with the bound key, without a terminal: the same.
    let (status, out, err) = gw.ssh_batch(&k, "alice@pair", &["id", "-un"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out.trim(), "alice");

    let logs = gw.tether.logs();
    assert!(
        logs.contains(&format!("127.0.0.1:{down}"))
            && logs.contains("upstream unreachable; trying the next one"),
        "the first upstream was tried: {logs}"
    );
    let reached = format!("\"address\":\"127.0.0.1:{}\"", sshd.port);
    let connected: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("upstream_connected"))
        .collect();
    assert!(
        !connected.is_empty() && connected.iter().all(|l| l.contains(&reached)),
        "the audit names the upstream reached: {connected:?}"
    );

    // The first upstream silent (connects hang): its bounded connect timeout
    // gives up on it and the second logs alice in — without the bound the kernel
    // would keep retrying the SYN for minutes, past the client's patience.
    let (status, out, err) = gw.ssh_batch(&k, "alice@quiet", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "alice"), "{err}");
    let logs = gw.tether.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains(&format!("127.0.0.1:{}", silent.port))
                && l.contains("upstream unreachable; trying the next one")),
        "the silent upstream was tried and skipped: {logs}"
    );

    // Every upstream down: one line naming the route, promptly.
    let started = Instant::now();
    let (status, _out, err) = gw.ssh_batch(&k, "alice@dead", &["id", "-un"]);
    assert_eq!(status, Some(255), "{err}");
    assert!(
        err.contains(&format!(
            "route \"dead\": upstream 127.0.0.1:{down2} unreachable"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "bounded");
}
