//! Binding management and revocation (docs/SPEC.md §4, §5): the bindings page in a real browser,
//! revocation cutting live OpenSSH connections, sign-out, ownership, and expiry of
//! the web session and of the binding ending live connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;
use tether_testkit::*;

/// A long-lived connection (`ssh -N`) with a bound key.
fn hold(gw: &Gateway, key: &Path, user: &str) -> SshClient {
    let c = hold_on(gw.ssh_port, key, user);
    std::thread::sleep(Duration::from_millis(1500));
    c
}

#[test]
fn bindings_page_revoke_and_sign_out_cut_live_connections() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("ssh_sign_in_timeout: 2m\n");
    let keys = key_dir();
    let k1 = new_key(keys.path(), "k1");
    let k2 = new_key(keys.path(), "k2");
    let (fp1, fp2) = (fingerprint(&k1), fingerprint(&k2));
    let alice = BrowserProfile::new("bindings_alice");
    bind_key(&gw, &k1, "alice", &alice, false);
    bind_key(&gw, &k2, "alice", &alice, true);

    let mut c1 = hold(&gw, &k1, "alice");
    let mut c2 = hold(&gw, &k2, "alice");
    assert!(
        c1.is_running() && c2.is_running(),
        "{}\n{}",
        c1.output(),
        c2.output()
    );

    let page = format!("{}/.pomerium/session_binding_info", gw.base());
    let r = alice.run(json!([
        {"goto": page},
        {"expectText": fp1},
        {"expectText": fp2},
        {"text": {"name": "live1", "selector": format!("{} td.live", row(&fp1))}},
        {"text": {"name": "live2", "selector": format!("{} td.live", row(&fp2))}},
        {"expectText": "until revoked"},
        {"screenshot": "bindings-page"},
    ]));
    r.assert_ok();
    assert_eq!(r.text("live1").trim(), "1");
    assert_eq!(r.text("live2").trim(), "1");

    // Revoke k1: its connection ends with the reason, k2's survives.
    alice
        .run(json!([
            {"goto": page},
            {"click": format!("{} form[action=\"/.pomerium/session_binding/revoke\"] button", row(&fp1))},
            {"expectNoText": fp1},
            {"screenshot": "after-revoke"},
        ]))
        .assert_ok();
    assert_eq!(
        c1.wait_exit(Duration::from_secs(5)),
        Some(255),
        "{}",
        c1.output()
    );
    assert!(c1.output().contains("access revoked"), "{}", c1.output());
    assert!(c2.is_running(), "the other key's connection survives");

    // "Remember me: revoke" on k2: the next code for k2 is no longer auto-approved.
    alice
        .run(json!([
            {"goto": page},
            {"click": format!("{} form[action=\"/.pomerium/identity_binding/revoke\"] button", row(&fp2))},
            {"expectNoText": "until revoked"},
        ]))
        .assert_ok();

    // Sign out: every live connection of alice ends; the page then shows none.
    alice
        .run(json!([
            {"goto": format!("{}/.pomerium/sign_out", gw.base())},
            {"click": "#sign-out"},
            {"expectText": "Signed out"},
        ]))
        .assert_ok();
    assert_eq!(
        c2.wait_exit(Duration::from_secs(5)),
        Some(255),
        "{}",
        c2.output()
    );
    assert!(c2.output().contains("access revoked"), "{}", c2.output());

    // k2 now needs a sign-in again, and alice's page (after signing back in) shows no
    // client binding for it; no auto-approval since Remember me was revoked.
    let mut ssh = gw.ssh(&k2, "alice", &["whoami"]);
    let url = sign_in_url(&ssh);
    alice
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"expectText": "Authorize"},
        ]))
        .assert_ok();
    ssh.kill();
    alice
        .run(json!([{"goto": page}, {"expectNoText": fp1}, {"expectNoText": fp2}]))
        .assert_ok();
}

#[test]
fn another_user_cannot_revoke_and_gets_403() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("ssh_sign_in_timeout: 2m\n");
    let keys = key_dir();
    let k = new_key(keys.path(), "k");
    let fp = fingerprint(&k);
    let alice = BrowserProfile::new("owner_alice");
    let bob = BrowserProfile::new("owner_bob");
    bind_key(&gw, &k, "alice", &alice, true);
    let mut c = hold(&gw, &k, "alice");

    // Bob signs in and submits his own page's revoke forms (valid CSRF token) with
    // alice's binding id swapped in: 403, nothing changes.
    let bk = new_key(keys.path(), "bob_key");
    let bfp = fingerprint(&bk);
    bind_key(&gw, &bk, "bob", &bob, true);
    let page = format!("{}/.pomerium/session_binding_info", gw.base());
    for action in [
        "/.pomerium/session_binding/revoke",
        "/.pomerium/identity_binding/revoke",
    ] {
        let form = format!("{} form[action=\"{action}\"]", row(&bfp));
        bob.run(json!([
            {"goto": page},
            {"setValue": {"selector": format!("{form} input[name=sessionBindingID]"), "value": format!("sshkey-{fp}")}},
            {"click": format!("{form} button")},
            {"expectStatus": 403},
            {"screenshot": "forged-revoke-403"},
        ]))
        .assert_ok();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        c.is_running(),
        "alice's connection survives: {}",
        c.output()
    );
    alice
        .run(json!([{"goto": page}, {"expectText": fp}, {"expectText": "until revoked"}]))
        .assert_ok();
    c.kill();
}

#[test]
fn session_expiry_ends_live_connection() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("cookie_expire: 20s\nssh_sign_in_timeout: 2m\n");
    let keys = key_dir();
    let k = new_key(keys.path(), "k");
    let browser = BrowserProfile::new("session_expiry");
    bind_key(&gw, &k, "alice", &browser, false);
    let mut c = hold(&gw, &k, "alice");
    assert!(c.is_running());
    assert_eq!(
        c.wait_exit(Duration::from_secs(40)),
        Some(255),
        "{}",
        c.output()
    );
    assert!(c.output().contains("access revoked"), "{}", c.output());
    assert!(c.output().contains("expired"), "{}", c.output());
}

#[test]
fn binding_max_ttl_ends_live_connection() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("ssh_binding_max_ttl: 20s\nssh_sign_in_timeout: 2m\n");
    let keys = key_dir();
    let k = new_key(keys.path(), "k");
    let browser = BrowserProfile::new("binding_ttl");
    bind_key(&gw, &k, "alice", &browser, false);
    let mut c = hold(&gw, &k, "alice");
    assert!(c.is_running());
    assert_eq!(
        c.wait_exit(Duration::from_secs(40)),
        Some(255),
        "{}",
        c.output()
    );
    assert!(
        c.output().contains("access revoked: binding expired"),
        "{}",
        c.output()
    );
}

/// A pre-authorized key: alice pastes her public key on the bindings page (no SSH
/// connection yet), and `ssh -o BatchMode=yes` through a route to a real sshd goes
/// straight through; bob pasting the same key is refused (409) and it stays hers.
#[test]
fn a_key_pasted_on_the_bindings_page_goes_straight_through() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists()) {
        return;
    }
    ensure_user("alice");
    let keys = key_dir();
    let k = new_key(keys.path(), "laptop");
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(Path::new(&format!("{}.pub", ca.display())));
    let gw = Gateway::start(&format!(
        "ssh_user_ca_key_file: {ca}
ssh_binding_max_ttl: 12h
routes:
  - from: ssh://prod
    to: ssh://127.0.0.1:{port}
    allow_any_authenticated_user: true
",
        ca = ca.display(),
        port = sshd.port,
    ));
    let public = std::fs::read_to_string(format!("{}.pub", k.display())).unwrap();
    let fp = fingerprint(&k);
    let page = format!("{}/.pomerium/session_binding_info", gw.base());

    let alice = BrowserProfile::new("preauthorized_alice");
    let r = alice.run(json!([
        {"goto": page},
        {"login": {"user": "alice", "password": "alice-password"}},
        {"expectText": "Add a key"},
        {"fill": {"selector": "#public-key", "value": public}},
        {"select": {"selector": "#ttl", "value": "28800"}},
        {"screenshot": "add-key-form"},
        {"click": "#add-key-submit"},
        {"expectText": fp},
        {"expectText": "pasted on the bindings page"},
        {"text": {"name": "expires", "selector": format!("{} td.expires", row(&fp))}},
        {"screenshot": "add-key-bound"},
    ]));
    r.assert_ok();
    assert!(!r.text("expires").trim().is_empty());

    // No sign-in: the key is already alice's.
    let (status, out, err) = gw.ssh_batch(&k, "alice@prod", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "alice"), "{err}");
    assert!(!err.contains("/.pomerium/sign_in"), "{err}");
    let logs = gw.tether.logs();
    assert!(
        logs.lines().any(|l| l.contains("\"key_pre_authorized\"")
            && l.contains(&fp)
            && l.contains("\"outcome\":\"bound\"")),
        "{logs}"
    );

    // Bob pastes the same key: refused, and it still lets alice in.
    BrowserProfile::new("preauthorized_bob")
        .run(json!([
            {"goto": page},
            {"login": {"user": "bob", "password": "bob-password"}},
            {"fill": {"selector": "#public-key", "value": public}},
            {"click": "#add-key-submit"},
            {"expectStatus": 409},
            {"expectText": "bound to another user"},
        ]))
        .assert_ok();
    let (status, out, err) = gw.ssh_batch(&k, "alice@prod", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "alice"), "{err}");
}
