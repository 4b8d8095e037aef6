//! Routes to a real OpenSSH sshd through tether's `run()` with the real OpenSSH
//! client: who logs in upstream, exit status, stdout/stderr, pty, the upstream's
//! banner, sign-in on a route connection, unknown routes, routes nobody may use,
//! unreachable upstreams, a changed host key, an upstream that drops mid-session,
//! and the registry count.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod route_support;
mod upstream_support;

use std::time::{Duration, Instant};

use common::*;
use route_support::*;
use tether_store::Store;
use upstream_support::{can_run_sshd, fingerprint, new_key, Sshd, USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_upstream_as_the_login_with_the_users_certificate() {
    if !can_run_sshd() {
        return;
    }
    let rig = rig("", |addr| vec![route("prod", addr, None, true)]).await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let user = format!("{USER}@prod");

    let done = ssh_batch(&rig.gw, &key, &user, &[], Some("id -un")).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, format!("{USER}\n"));
    assert!(
        rig.sshd
            .wait_log("Accepted certificate ID \"alice@example.com\"")
            .await,
        "{}",
        rig.sshd.log()
    );

    let done = ssh_batch(
        &rig.gw,
        &key,
        &user,
        &[],
        Some("echo out; echo err >&2; exit 7"),
    )
    .await;
    assert_eq!(done.status.code(), Some(7), "{}", done.stderr);
    assert_eq!(done.stdout, "out\n");
    assert_eq!(done.stderr, "err\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_env_banner_and_a_fresh_sign_in_on_the_route() {
    if !can_run_sshd() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let banner = dir.path().join("banner");
    std::fs::write(&banner, "Authorized use only.\n").unwrap();
    let rig = rig(&format!("Banner {}", banner.display()), |addr| {
        vec![route("prod", addr, None, true)]
    })
    .await;
    let key = keygen();
    let user = format!("{USER}@prod");

    // No binding yet: sign in on the route connection itself.
    let mut run = ssh(&rig.gw, &key, &user, &[], Some("id -un"));
    let code = run.code().await;
    let req = rig.gw.store.get_request(&code).await.unwrap().unwrap();
    assert_eq!(req.details.route.as_deref(), Some("prod"));
    assert_eq!(req.details.login, USER);
    approve(&rig.gw.store, &code, "alice@example.com").await;
    let done = run.finish(T).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, format!("{USER}\n"));
    // The upstream's banner reaches the client once, on stderr.
    assert_eq!(
        done.stderr.matches("Authorized use only.").count(),
        1,
        "{}",
        done.stderr
    );

    let done = ssh_batch(
        &rig.gw,
        &key,
        &user,
        &["-tt", "-o", "SetEnv=TETHER_TEST_X=relayed"],
        Some("tty; echo $TETHER_TEST_X; exit 3"),
    )
    .await;
    assert_eq!(done.status.code(), Some(3), "{}", done.stderr);
    assert!(done.stdout.starts_with("/dev/pts/"), "{:?}", done.stdout);
    assert!(done.stdout.contains("relayed\r\n"), "{:?}", done.stdout);
    // (The harness reads stderr by lines, so the CR of the pty's CR LF is not seen.)
    assert!(
        done.stderr.contains("Authorized use only.\n"),
        "{:?}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_and_route_without_policy_get_one_line() {
    if !can_run_sshd() {
        return;
    }
    let rig = rig("", |addr| {
        vec![
            route("prod", addr, None, true),
            route("locked", addr, None, false),
        ]
    })
    .await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;

    // BatchMode too: the reason is the DISCONNECT message after authentication.
    let done = ssh_batch(&rig.gw, &key, "bob@nope", &[], Some("id")).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains(": route \"nope\" not found\n"),
        "{}",
        done.stderr
    );
    let done = ssh_batch(&rig.gw, &key, "bob@locked", &[], Some("id")).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr
            .contains(": access denied: route \"locked\": no policy allows access\n"),
        "{}",
        done.stderr
    );
    assert!(!rig.sshd.log().contains("Accepted"), "{}", rig.sshd.log());

    // Without a binding, the route name is not even looked at before sign-in.
    let stranger = keygen();
    let mut run = ssh(&rig.gw, &stranger, "bob@nope", &[], Some("id"));
    let code = run.code().await;
    approve(&rig.gw.store, &code, "bob@example.com").await;
    let done = run.finish(T).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("route \"nope\" not found"),
        "{}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_fails_fast_with_one_line() {
    if !can_run_sshd() {
        return;
    }
    // A port nothing listens on.
    let dead = format!("127.0.0.1:{}", upstream_support::free_port());
    let gw = start_config(config_with(vec![route("prod", &dead, None, true)])).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let t0 = Instant::now();
    let done = ssh_batch(&gw, &key, "bob@prod", &[], Some("id")).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr
            .contains(&format!(": route \"prod\": upstream {dead} unreachable\n")),
        "{}",
        done.stderr
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    eventually("no live connections", T, || gw.registry.total() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_upstream_host_key_is_refused_naming_both_fingerprints() {
    if !can_run_sshd() {
        return;
    }
    let Rig { gw, sshd } = rig("", |addr| vec![route("prod", addr, None, true)]).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let user = format!("{USER}@prod");
    // accept-new: the first key is pinned.
    let done = ssh_batch(&gw, &key, &user, &[], Some("true")).await;
    assert!(done.status.success(), "{}", done.stderr);
    let first = fingerprint(sshd.host_key.public_key());

    let port = sshd.port;
    drop(sshd);
    let new_host_key = new_key();
    let second = fingerprint(new_host_key.public_key());
    let _sshd = Sshd::start(&gw.user_ca, &new_host_key, Some(port), "");
    let done = ssh_batch(&gw, &key, &user, &[], Some("true")).await;
    assert_eq!(done.status.code(), Some(255));
    let expected =
        format!(": upstream host key for route \"prod\" changed: expected {first}, got {second}\n");
    assert!(done.stderr.contains(&expected), "{}", done.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dropping_mid_session_ends_the_client_with_one_line() {
    if !can_run_sshd() {
        return;
    }
    let port = upstream_support::free_port();
    let sshd_addr = format!("127.0.0.1:{port}");
    let proxy = Proxy::start(sshd_addr).await;
    let gw = start_config(config_with(vec![route("prod", &proxy.addr, None, true)])).await;
    let _sshd = Sshd::start(&gw.user_ca, &new_key(), Some(port), "");
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let mut run = ssh(
        &gw,
        &key,
        &format!("{USER}@prod"),
        &["-o", "BatchMode=yes"],
        Some("echo started; sleep 600"),
    );
    let registry = gw.registry.clone();
    eventually("live connection", T, || registry.total() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    let t0 = Instant::now();
    run.line_with("tether: route \"prod\": upstream connection lost", T)
        .await;
    let done = run.finish(Duration::from_secs(5)).await;
    assert_eq!(done.status.code(), Some(255), "{}", done.stderr);
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(done.stdout, "started\n");
    eventually("no live connections", T, || registry.total() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_counts_relayed_connections_and_returns_to_zero() {
    if !can_run_sshd() {
        return;
    }
    let rig = rig("", |addr| vec![route("prod", addr, None, true)]).await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let registry = rig.gw.registry.clone();
    let user = format!("{USER}@prod");
    let runs: Vec<SshRun> = (0..3)
        .map(|_| {
            ssh(
                &rig.gw,
                &key,
                &user,
                &["-o", "BatchMode=yes"],
                Some("sleep 2"),
            )
        })
        .collect();
    eventually("three live connections", T, || {
        registry.live_count(&key.binding_id()) == 3
    })
    .await;
    for run in runs {
        let done = run.finish(T).await;
        assert!(done.status.success(), "{}", done.stderr);
    }
    eventually("no live connections", T, || registry.total() == 0).await;
}

struct AnyServer;

impl russh::client::Handler for AnyServer {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true) // test only: the gateway's host key is random
    }
}

/// Reads a channel to its close: (stdout, exit status, exit signal).
async fn drain(
    mut ch: russh::Channel<russh::client::Msg>,
) -> (String, Option<u32>, Option<russh::Sig>) {
    let mut out = Vec::new();
    let mut status = None;
    let mut signal = None;
    while let Some(msg) = ch.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
            russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            russh::ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
            russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), status, signal)
}

/// A russh client logged in as `tetheruser@prod` with `key`.
async fn russh_client(gw: &Gateway, key: &ClientKey) -> russh::client::Handle<AnyServer> {
    let config = std::sync::Arc::new(russh::client::Config::default());
    let mut client = russh::client::connect(config, gw.addr, AnyServer)
        .await
        .unwrap();
    let secret = russh::keys::load_secret_key(&key.path, None).unwrap();
    let auth = client
        .authenticate_publickey(
            format!("{USER}@prod"),
            russh::keys::PrivateKeyWithHashAlg::new(std::sync::Arc::new(secret), None),
        )
        .await
        .unwrap();
    assert!(auth.success(), "{auth:?}");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_modes_and_window_change_reach_the_upstream() {
    if !can_run_sshd() {
        return;
    }
    let rig = rig("", |addr| vec![route("prod", addr, None, true)]).await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let client = russh_client(&rig.gw, &key).await;
    let ch = client.channel_open_session().await.unwrap();
    // ECHO off in the modes: the upstream's stty must show it.
    ch.request_pty(true, "xterm", 80, 24, 0, 0, &[(russh::Pty::ECHO, 0)])
        .await
        .unwrap();
    ch.exec(true, "sleep 1; stty size; stty -a | grep -o -- '-echo '")
        .await
        .unwrap();
    ch.window_change(132, 43, 0, 0).await.unwrap();
    let (out, status, _) = tokio::time::timeout(T, drain(ch)).await.unwrap();
    assert_eq!(status, Some(0), "{out}");
    assert!(out.starts_with("43 132\r\n"), "{out:?}");
    assert!(out.contains("-echo "), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_channels_on_one_connection_and_exit_signal() {
    if !can_run_sshd() {
        return;
    }
    let rig = rig("", |addr| vec![route("prod", addr, None, true)]).await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;

    let client = russh_client(&rig.gw, &key).await;
    let a = client.channel_open_session().await.unwrap();
    let b = client.channel_open_session().await.unwrap();
    let c = client.channel_open_session().await.unwrap();
    a.exec(true, "sleep 1; echo a; exit 3").await.unwrap();
    b.exec(true, "echo b; exit 4").await.unwrap();
    c.exec(true, "echo c; kill -TERM $$").await.unwrap();
    let ((out_a, st_a, _), (out_b, st_b, _), (out_c, st_c, sig_c)) =
        tokio::time::timeout(T, async { tokio::join!(drain(a), drain(b), drain(c)) })
            .await
            .unwrap();
    assert_eq!((out_a.as_str(), st_a), ("a\n", Some(3)));
    assert_eq!((out_b.as_str(), st_b), ("b\n", Some(4)));
    assert_eq!(out_c, "c\n");
    assert_eq!(st_c, None);
    assert!(matches!(sig_c, Some(russh::Sig::TERM)), "{sig_c:?}");
    // One upstream connection (one certificate) for all three channels.
    let log = rig.sshd.log();
    let mut serials: Vec<&str> = log
        .split("Accepted certificate ID")
        .skip(1)
        .filter_map(|l| l.split("(serial ").nth(1)?.split(')').next())
        .collect();
    serials.dedup();
    assert_eq!(serials.len(), 1, "{log}");
}
