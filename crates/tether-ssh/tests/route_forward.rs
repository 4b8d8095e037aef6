//! Forwarding through a route with the real OpenSSH client: `ssh -L` and `ssh -W`
//! (direct-tcpip through the upstream), `ssh -R` (tcpip-forward / forwarded-tcpip,
//! fixed and allocated ports), `ssh -A` (the upstream's `ssh-add -l` lists the
//! client's agent key), and jump-host mode (`ssh -J gateway route`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod route_support;
mod upstream_support;

use common::*;
use route_support::*;
use tether_core::policy::Criterion;
use upstream_support::{can_run_sshd, free_port, USER};

async fn setup() -> (Rig, ClientKey) {
    let rig = rig_with("", |addr| {
        let mut c = config_with(vec![route("prod", addr, None, true)]);
        permit_all(&mut c, "prod");
        c
    })
    .await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    (rig, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_and_stdio_forward_reach_through_the_upstream() {
    if !can_run_sshd() {
        return;
    }
    let (rig, key) = setup().await;
    let http = http_server("hello from behind the upstream");
    let local = free_port();
    let user = format!("{USER}@prod");
    let forward = format!("{local}:127.0.0.1:{http}");
    let _tunnel = ssh(
        &rig.gw,
        &key,
        &user,
        &[
            "-N",
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &forward,
        ],
        None,
    );
    // Several connections over the one SSH connection, each its own channel.
    for _ in 0..3 {
        let answer = http_get_eventually(local).await;
        assert!(
            answer.ends_with("hello from behind the upstream"),
            "{answer}"
        );
    }

    let done = ssh_batch(
        &rig.gw,
        &key,
        &user,
        &["-W", &format!("127.0.0.1:{}", rig.sshd.port)],
        None,
    )
    .await;
    assert!(
        done.stdout.starts_with("SSH-2.0-OpenSSH"),
        "{}",
        done.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_comes_back_to_the_client() {
    if !can_run_sshd() {
        return;
    }
    let (rig, key) = setup().await;
    let http = http_server("hello from the client side");
    let user = format!("{USER}@prod");

    let remote = free_port();
    let spec = format!("{remote}:127.0.0.1:{http}");
    let _tunnel = ssh(
        &rig.gw,
        &key,
        &user,
        &[
            "-N",
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            &spec,
        ],
        None,
    );
    // The upstream sshd listens on this machine's loopback.
    let answer = http_get_eventually(remote).await;
    assert!(answer.ends_with("hello from the client side"), "{answer}");

    // Port 0: the upstream allocates one and the client is told which.
    let spec = format!("0:127.0.0.1:{http}");
    let mut tunnel = ssh(
        &rig.gw,
        &key,
        &user,
        &["-N", "-o", "BatchMode=yes", "-R", &spec],
        None,
    );
    let line = tunnel.line_with("Allocated port", T).await;
    let port: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let answer = http_get_eventually(port).await;
    assert!(answer.ends_with("hello from the client side"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_forwarding_lists_the_clients_agent_key_upstream() {
    if !can_run_sshd() {
        return;
    }
    let (rig, key) = setup().await;
    let agent = start_agent().await;

    let mut cmd = tokio::process::Command::new("/usr/bin/ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-A",
        "-i",
    ])
    .arg(&key.path)
    .args(["-p", &rig.gw.addr.port().to_string()])
    .arg(format!("{USER}@prod@127.0.0.1"))
    .arg("ssh-add -l")
    .env("SSH_AUTH_SOCK", &agent.sock);
    let done = SshRun::spawn(cmd).finish(T).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stdout.contains(&agent.key.fingerprint),
        "{} / {}",
        done.stdout,
        agent.key.fingerprint
    );
}

/// An ssh_config for the jump tests (ProxyJump passes `-F` on to the jump hop).
/// Default log level: OpenSSH reports a refused channel open at INFO.
fn jump_config(dir: &std::path::Path, key: &ClientKey) -> std::path::PathBuf {
    let cfg = dir.join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  IdentityAgent none\n  \
             StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n",
            key.path.display()
        ),
    )
    .unwrap();
    cfg
}

fn jump(cfg: &std::path::Path, gw: &Gateway, target: &str, command: &str) -> SshRun {
    let mut cmd = tokio::process::Command::new("/usr/bin/ssh");
    cmd.arg("-F")
        .arg(cfg)
        .arg("-J")
        .arg(format!("alice@127.0.0.1:{}", gw.addr.port()))
        .arg(target)
        .arg(command);
    SshRun::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_host_mode_pipes_to_the_route_and_applies_its_policy() {
    if !can_run_sshd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = keygen();
    // The second hop authenticates end to end with the upstream: it knows the key.
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(&authorized, public_line(&key)).unwrap();
    let rig = rig_with(
        &format!("AuthorizedKeysFile {}", authorized.display()),
        |addr| {
            let mut c = config_with(vec![
                // No login criteria: a jump pipe has no login for them to check
                // (a route with them refuses, see jump_policy.rs).
                route(
                    "prod",
                    addr,
                    Some(vec![Criterion::Groups(vec!["sre".into()])]),
                    false,
                ),
                route(
                    "sre-only",
                    addr,
                    Some(vec![Criterion::Groups(vec!["admins".into()])]),
                    false,
                ),
            ]);
            c.runtime_flags.ssh_allow_direct_tcpip = true;
            c
        },
    )
    .await;
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let cfg = jump_config(dir.path(), &key);

    let done = jump(&cfg, &rig.gw, &format!("{USER}@prod"), "id -un")
        .finish(T)
        .await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, format!("{USER}\n"));
    // The upstream saw the client's own key, not a tether certificate.
    assert!(
        rig.sshd.wait_log("Accepted publickey for tetheruser").await,
        "{}",
        rig.sshd.log()
    );

    let done = jump(&cfg, &rig.gw, &format!("{USER}@sre-only"), "true")
        .finish(T)
        .await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr
            .contains("access denied: route \"sre-only\": not in group admins"),
        "{}",
        done.stderr
    );
    let done = jump(&cfg, &rig.gw, &format!("{USER}@nope"), "true")
        .finish(T)
        .await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("route \"nope\" not found"),
        "{}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_host_mode_is_off_by_default() {
    if !can_run_sshd() {
        return;
    }
    let (rig, key) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = jump_config(dir.path(), &key);
    let done = jump(&cfg, &rig.gw, &format!("{USER}@prod"), "true")
        .finish(T)
        .await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("administratively prohibited"),
        "{}",
        done.stderr
    );
}
