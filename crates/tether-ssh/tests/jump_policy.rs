//! Issue 12 item 4, with the real OpenSSH client: in jump-host mode tether never
//! learns the login the client uses upstream, so a route whose policy checks the
//! login name must refuse a raw TCP pipe (`ssh -W route:22 alice@gateway`, and
//! `ssh -J`) instead of skipping the check; a route without login criteria still
//! pipes.

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
use tether_core::policy::{Criterion, StringMatcher};
use upstream_support::{can_run_sshd, USER};

const LOGIN_UNKNOWN: &str =
    "the route's policy checks the login name, which a jump-host connection does not have";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_pipes_refuse_routes_that_check_the_login() {
    if !can_run_sshd() {
        return;
    }
    let rig = rig_with("", |addr| {
        let mut c = config_with(vec![
            route(
                "deployonly",
                addr,
                Some(vec![
                    Criterion::AuthenticatedUser,
                    Criterion::SshUsername(StringMatcher::Is("deploy".into())),
                ]),
                false,
            ),
            route(
                "own",
                addr,
                Some(vec![Criterion::SshUsernameMatchesEmail]),
                false,
            ),
            route("open", addr, None, true),
        ]);
        c.runtime_flags.ssh_allow_direct_tcpip = true;
        c
    })
    .await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;

    // `ssh -W route:22`: the login-restricted routes refuse, naming why.
    for route in ["deployonly", "own"] {
        let done = ssh(
            &rig.gw,
            &key,
            "alice",
            &["-o", "BatchMode=yes", "-W", &format!("{route}:22")],
            None,
        )
        .finish(T)
        .await;
        assert!(!done.status.success(), "{route}: {}", done.stdout);
        assert!(
            !done.stdout.contains("SSH-2.0-"),
            "{route}: no upstream banner may come through: {}",
            done.stdout
        );
        assert!(
            done.stderr.contains(&format!(
                "access denied: route \"{route}\": {LOGIN_UNKNOWN}"
            )),
            "{route}: {}",
            done.stderr
        );
    }

    // A route with no login criteria still pipes: the upstream's banner arrives.
    let done = ssh(
        &rig.gw,
        &key,
        "alice",
        &["-o", "BatchMode=yes", "-W", "open:22"],
        None,
    )
    .finish(T)
    .await;
    assert!(
        done.stdout.starts_with("SSH-2.0-OpenSSH"),
        "{} / {}",
        done.stdout,
        done.stderr
    );

    // `ssh -J` (the same channel, opened by ProxyJump) is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  IdentityAgent none\n  \
             StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n",
            key.path.display()
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new("/usr/bin/ssh");
    cmd.arg("-F")
        .arg(&cfg)
        .arg("-J")
        .arg(format!("alice@127.0.0.1:{}", rig.gw.addr.port()))
        .arg(format!("{USER}@deployonly"))
        .arg("true");
    let done = SshRun::spawn(cmd).finish(T).await;
    assert_eq!(done.status.code(), Some(255), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "access denied: route \"deployonly\": {LOGIN_UNKNOWN}"
        )),
        "{}",
        done.stderr
    );
}
