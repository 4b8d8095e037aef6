//! Identity refresh at the IdP (docs/SPEC.md §5, §6): a signed-in identity follows
//! the IdP. Through the real binary, the real IdP (`tests/idp`, whose test-only
//! admin endpoints change a user's groups and revoke their grants), headless
//! Chromium, the real OpenSSH client and a real sshd: removing alice from a group at
//! the IdP ends her live connection to the route that needs it (with the reason)
//! within the refresh interval and denies new ones, while her other route stays; a
//! revoked grant ends the session as a sign-out does.
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

struct Setup {
    gw: Gateway,
    _sshd: Sshd,
    keys: tempfile::TempDir,
}

/// A gateway refreshing identities every 2 s, with routes `sre` (group sre) and
/// `prod` (anyone signed in) to one sshd.
fn setup() -> Option<Setup> {
    if !components_present() || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists()) {
        return None;
    }
    ensure_user("alice");
    let keys = key_dir();
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(&PathBuf::from(format!("{}.pub", ca.display())));
    let gw = Gateway::start(&format!(
        "ssh_user_ca_key_file: {ca}
ssh_sign_in_timeout: 2m
idp_session_refresh_interval: 2s
routes:
  - from: ssh://sre
    to: ssh://127.0.0.1:{port}
    policy:
      - allow:
          or:
            - groups:
                has: sre
  - from: ssh://prod
    to: ssh://127.0.0.1:{port}
    allow_any_authenticated_user: true
",
        ca = ca.display(),
        port = sshd.port,
    ));
    Some(Setup {
        gw,
        _sshd: sshd,
        keys,
    })
}

/// Signs `key` in as alice on `wire_user` running `args`; returns the connection.
fn sign_in(gw: &Gateway, key: &Path, wire_user: &str, browser: &BrowserProfile) -> SshClient {
    let ssh = gw.ssh(key, wire_user, &["sleep", "600"]);
    let url = sign_in_url(&ssh);
    browser
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    ssh
}

/// Waits until the IdP answered `n` refresh_token grants in all.
fn wait_refreshes(gw: &Gateway, n: u64) {
    assert!(
        wait_until(T, || gw.idp.refreshes() >= n),
        "tether did not refresh the identity at the IdP (refreshes: {}); tether log:\n{}",
        gw.idp.refreshes(),
        gw.tether.logs()
    );
}

#[test]
fn group_removed_at_the_idp_ends_the_live_connection_and_denies_new_ones() {
    let Some(s) = setup() else { return };
    let gw = &s.gw;
    let k = new_key(s.keys.path(), "k");
    let alice = BrowserProfile::new("refresh_groups_alice");

    let mut sre = sign_in(gw, &k, "alice@sre", &alice);
    let mut prod = hold_on(gw.ssh_port, &k, "alice@prod");
    std::thread::sleep(Duration::from_secs(2));
    assert!(sre.is_running(), "{}", sre.output());
    assert!(prod.is_running(), "{}", prod.output());

    // Refreshes that still allow change nothing.
    let before = gw.idp.refreshes();
    wait_refreshes(gw, before + 2);
    assert!(sre.is_running(), "{}", sre.output());

    // alice leaves sre at the IdP: within the refresh interval her sre connection
    // ends with the reason; her prod connection stays.
    gw.idp.set_groups("alice", &["dev"]);
    assert_eq!(
        sre.wait_exit(T),
        Some(255),
        "the live connection to sre was not ended: {}\ntether log:\n{}",
        sre.output(),
        gw.tether.logs()
    );
    assert!(
        sre.output()
            .contains("access revoked: access denied: route \"sre\": not in group sre"),
        "{}",
        sre.output()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(prod.is_running(), "prod still allows: {}", prod.output());

    // A new connection to sre is denied at once, to prod allowed; the web session
    // shows the refreshed groups.
    let (status, _, err) = gw.ssh_batch(&k, "alice@sre", &["true"]);
    assert_ne!(status, Some(0), "{err}");
    assert!(err.contains("not in group sre"), "{err}");
    let (status, out, err) = gw.ssh_batch(&k, "alice@prod", &["echo", "ok"]);
    assert_eq!(status, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "ok");
    alice
        .run(json!([
            {"goto": format!("{}/.pomerium/", gw.base())},
            {"expectText": "[\"dev\"]"},
        ]))
        .assert_ok();

    // Back in sre: allowed again after the next refresh.
    gw.idp.set_groups("alice", &["sre", "dev"]);
    let n = gw.idp.refreshes();
    wait_refreshes(gw, n + 2);
    let (status, out, err) = gw.ssh_batch(&k, "alice@sre", &["echo", "ok"]);
    assert_eq!(status, Some(0), "{out}{err}");
    prod.kill();
}

#[test]
fn grant_revoked_at_the_idp_signs_the_session_out() {
    let Some(s) = setup() else { return };
    let gw = &s.gw;
    let k = new_key(s.keys.path(), "k");
    let alice = BrowserProfile::new("refresh_revoke_alice");

    let mut live = sign_in(gw, &k, "alice@prod", &alice);
    std::thread::sleep(Duration::from_secs(2));
    assert!(live.is_running(), "{}", live.output());
    wait_refreshes(gw, 1);
    assert!(live.is_running(), "{}", live.output());

    assert!(gw.idp.revoke_grants("alice") >= 1);
    assert_eq!(
        live.wait_exit(T),
        Some(255),
        "the live connection was not ended: {}\ntether log:\n{}",
        live.output(),
        gw.tether.logs()
    );
    assert!(
        live.output()
            .contains("access revoked: signed out by the identity provider"),
        "{}",
        live.output()
    );

    // Sign-out semantics: the web session is gone and the key's binding with it,
    // so the key needs a sign-in again.
    alice
        .run(json!([
            {"goto": format!("{}/.pomerium/sign_out", gw.base())},
            {"expectText": "You are not signed in."},
        ]))
        .assert_ok();
    let mut again = gw.ssh(&k, "alice@prod", &["true"]);
    let url = sign_in_url(&again);
    assert!(url.contains("user_code="), "{url}");
    again.kill();
}

/// Base64 of 32 bytes: replicas behind one address share the cookie secret.
const COOKIE_SECRET: &str = "dGV0aGVyLXJlcGxpY2EtdGVzdC1jb29raWUta2V5ISE=";

#[test]
fn replicas_on_postgres_follow_a_refresh_made_by_either() {
    if !components_present()
        || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists())
        || !require("PostgreSQL server", postgres_bin_dir().is_some())
    {
        return;
    }
    ensure_user("alice");
    let keys = key_dir();
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(&PathBuf::from(format!("{}.pub", ca.display())));
    let pg = Postgres::start();
    let db = pg.create_database("tether_refresh_replicas");
    let (http_a, ssh_a, http_b, ssh_b) = (free_port(), free_port(), free_port(), free_port());
    let idp = Idp::start(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("http://127.0.0.1:{http_a}/oauth2/callback"),
    );
    let shared = format!(
        "databroker_storage_type: postgres
databroker_storage_connection_string: {db}
cookie_secret: {COOKIE_SECRET}
ssh_user_ca_key_file: {ca}
idp_session_refresh_interval: 2s
routes:
  - from: ssh://sre
    to: ssh://127.0.0.1:{port}
    policy:
      - allow:
          or:
            - groups:
                has: sre
",
        ca = ca.display(),
        port = sshd.port,
    );
    let yaml_a = config_yaml(http_a, ssh_a, &idp.issuer, &shared);
    let yaml_b = config_yaml(http_b, ssh_b, &idp.issuer, &shared).replace(
        &format!("authenticate_service_url: http://127.0.0.1:{http_b}"),
        &format!("authenticate_service_url: http://127.0.0.1:{http_a}"),
    );
    let a = TetherProcess::start(&yaml_a, &[]);
    let b = TetherProcess::start(&yaml_b, &[]);
    let logs = || format!("--- A ---\n{}\n--- B ---\n{}", a.logs(), b.logs());

    // Sign in on B's SSH side through A's web app; then one connection on each.
    let key = new_key(keys.path(), "k");
    let port_b = ssh_b.to_string();
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-p",
        &port_b,
        "-i",
        key.to_str().unwrap(),
        "alice@sre@127.0.0.1",
    ]);
    args.extend(["sleep", "600"]);
    let mut on_b = SshClient::spawn(&args);
    let url = sign_in_url(&on_b);
    BrowserProfile::new("refresh_replicas_alice")
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    let mut on_a = hold_on(ssh_a, &key, "alice@sre");
    assert!(
        wait_until(T, || b.logs().contains("ssh_authenticated")
            && a.logs().contains("ssh_authenticated")),
        "{}",
        logs()
    );
    let n = idp.refreshes();
    assert!(wait_until(T, || idp.refreshes() >= n + 2), "{}", logs());
    assert!(on_a.is_running() && on_b.is_running(), "{}", logs());

    // Whichever replica refreshes next, both end their connection.
    idp.set_groups("alice", &["dev"]);
    for (name, c) in [("A", &mut on_a), ("B", &mut on_b)] {
        assert_eq!(
            c.wait_exit(T),
            Some(255),
            "{name}: {}\n{}",
            c.output(),
            logs()
        );
        assert!(
            c.output().contains("not in group sre"),
            "{name}: {}",
            c.output()
        );
    }
}
