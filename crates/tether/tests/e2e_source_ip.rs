//! The `source_ip` criterion (SPEC §6, issue 15) through the real binary: a route
//! allowing only 127.0.0.1/32 admits the real OpenSSH client connecting from
//! 127.0.0.1 and refuses the same bound key connecting from 127.0.0.2
//! (`-o BindAddress=127.0.0.2`), with the one-line reason; a config reload that
//! narrows a route's `source_ip` ends a live connection from outside the range
//! (the registry's re-check sees the connection's address too).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;
use tether_testkit::*;

const T: Duration = Duration::from_secs(30);

fn routes_yaml(sshd_port: u16, ca: &Path, wide: &str) -> String {
    format!(
        "ssh_user_ca_key_file: {ca}
ssh_sign_in_timeout: 2m
routes:
  - from: ssh://local
    to: ssh://127.0.0.1:{sshd_port}
    policy:
      - allow:
          and:
            - authenticated_user: true
            - source_ip: 127.0.0.1/32
  - from: ssh://wide
    to: ssh://127.0.0.1:{sshd_port}
    policy:
      - allow:
          and:
            - authenticated_user: true
            - source_ip: {wide}
",
        ca = ca.display()
    )
}

/// Arguments for `ssh` (after the testkit's defaults) from `bind`, a loopback
/// address, as `user` with `key`; `BatchMode=yes` when `batch`.
fn ssh_from(
    gw: &Gateway,
    bind: &str,
    key: &Path,
    user: &str,
    batch: bool,
    args: &[&str],
) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    if batch {
        all.extend(["-o".to_string(), "BatchMode=yes".to_string()]);
    }
    all.extend([
        "-o".to_string(),
        format!("BindAddress={bind}"),
        "-p".to_string(),
        gw.ssh_port.to_string(),
        "-i".to_string(),
        key.display().to_string(),
        format!("{user}@127.0.0.1"),
    ]);
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

fn run_from(
    gw: &Gateway,
    bind: &str,
    key: &Path,
    user: &str,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let all = ssh_from(gw, bind, key, user, true, args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    run_ssh(&refs, T)
}

#[test]
fn source_ip_allows_127_0_0_1_and_refuses_127_0_0_2() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists()) {
        return;
    }
    ensure_user("alice");
    let keys = key_dir();
    let k = new_key(keys.path(), "k");
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(&PathBuf::from(format!("{}.pub", ca.display())));
    let mut gw = Gateway::start(&routes_yaml(
        sshd.port,
        &ca,
        "[\"127.0.0.0/8\", \"::1/128\"]",
    ));
    let browser = BrowserProfile::new("source_ip_alice");

    // Sign in from 127.0.0.1 on the restricted route: admitted, lands upstream.
    let args = ssh_from(&gw, "127.0.0.1", &k, "alice@local", false, &["id", "-un"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ssh = SshClient::spawn(&refs);
    let url = sign_in_url(&ssh);
    browser
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    assert!(ssh.output().contains("alice"), "{}", ssh.output());

    // The bound key again from 127.0.0.1: straight through.
    let (status, out, err) = run_from(&gw, "127.0.0.1", &k, "alice@local", &["id", "-un"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out.trim(), "alice");

    // The same key from 127.0.0.2: refused with the reason, never upstream.
    let (status, out, err) = run_from(&gw, "127.0.0.2", &k, "alice@local", &["id", "-un"]);
    assert_ne!(status, Some(0), "{out}{err}");
    assert!(
        err.contains("access denied: route \"local\": source address 127.0.0.2 is not allowed"),
        "{err}"
    );
    assert!(!out.contains("alice"), "{out}");
    // The wider route admits 127.0.0.2.
    let (status, out, err) = run_from(&gw, "127.0.0.2", &k, "alice@wide", &["id", "-un"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out.trim(), "alice");

    // A live connection from 127.0.0.2 on `wide`, then a reload narrowing `wide`
    // to 127.0.0.1/32: the re-check ends it; one from 127.0.0.1 stays.
    let hold = |bind: &str| {
        let all = ssh_from(&gw, bind, &k, "alice@wide", true, &["sleep", "600"]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        SshClient::spawn_piped(&refs)
    };
    let mut outside = hold("127.0.0.2");
    let mut inside = hold("127.0.0.1");
    std::thread::sleep(Duration::from_secs(2));
    assert!(outside.is_running(), "{}", outside.output());
    assert!(inside.is_running(), "{}", inside.output());
    let base = config_yaml(gw.http_port, gw.ssh_port, &gw.idp.issuer, "");
    gw.tether.rewrite_config(&format!(
        "{base}{}",
        routes_yaml(sshd.port, &ca, "127.0.0.1/32")
    ));
    assert_eq!(
        outside.wait_exit(Duration::from_secs(15)),
        Some(255),
        "{}",
        outside.output()
    );
    let out = outside.output();
    assert!(
        out.contains("access revoked") && out.contains("source address 127.0.0.2 is not allowed"),
        "{out}"
    );
    assert!(inside.is_running(), "{}", inside.output());
    inside.kill();
}
