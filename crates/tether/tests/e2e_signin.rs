//! Client bindings end to end (docs/SPEC.md §1, §3–§5): the real OpenSSH client, the real tether
//! binary, the npm oidc-provider IdP and headless Chromium clicking the real pages.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tether_testkit::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn sign_in_authorize_then_straight_through_then_logout() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("ssh_sign_in_timeout: 2m\n");
    let keys = key_dir();
    let key = new_key(keys.path(), "alice_key");
    let fp = fingerprint(&key);

    // First connection: the sign-in prompt and URL.
    let mut ssh = gw.ssh(&key, "alice", &["whoami"]);
    assert!(
        ssh.wait_for("Please sign in to continue", T),
        "{}",
        ssh.output()
    );
    let url = sign_in_url(&ssh);
    assert!(
        url.starts_with(&format!("{}/.pomerium/sign_in?user_code=", gw.base())),
        "{url}"
    );
    let code = url.rsplit('=').next().unwrap();
    assert_eq!(code.len(), 22);

    let browser = BrowserProfile::new("sign_in_authorize");
    browser
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"expectText": "Authorize"},
            {"expectText": fp},
            {"text": {"name": "fingerprint", "selector": "#fingerprint"}},
            {"text": {"name": "key_type", "selector": "#key-type"}},
            {"text": {"name": "login", "selector": "#login"}},
            {"text": {"name": "source", "selector": "#source-address"}},
            {"text": {"name": "version", "selector": "#client-version"}},
            {"text": {"name": "countdown", "selector": "#countdown"}},
            {"screenshot": "verify-page"},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
            {"screenshot": "success-page"},
        ]))
        .assert_ok();
    let r = browser.run(
        json!([{"goto": format!("{}/.pomerium/", gw.base())}, {"expectText": "alice@example.com"}]),
    );
    r.assert_ok();

    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    let out = ssh.output();
    assert!(
        out.contains("alice@example.com"),
        "whoami names the IdP user: {out}"
    );
    assert!(out.contains(&fp), "whoami shows the bound key: {out}");

    // Second connection with the same key: no sign-in at all.
    let (status, stdout, stderr) = gw.ssh_batch(&key, "alice", &["whoami"]);
    assert_eq!(status, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("alice@example.com"), "{stdout}");
    assert!(!stderr.contains("sign in"), "{stderr}");

    // logout ends the binding: the next connection has to sign in again.
    let (status, stdout, _) = gw.ssh_batch(&key, "alice", &["logout"]);
    assert!(stdout.contains("Logged out successfully"), "{stdout}");
    assert_eq!(status, Some(0));
    let mut again = gw.ssh(&key, "alice", &["whoami"]);
    assert!(
        again.wait_for("Please sign in to continue", T),
        "{}",
        again.output()
    );
    again.kill();
}

#[test]
fn verify_page_shows_request_details() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("");
    let keys = key_dir();
    let key = new_key(keys.path(), "k");
    let fp = fingerprint(&key);
    let mut ssh = gw.ssh(&key, "deploy@prod", &[]);
    let url = sign_in_url(&ssh);
    let browser = BrowserProfile::new("verify_details");
    let r = browser.run(json!([
        {"goto": url},
        {"login": {"user": "bob", "password": "bob-password"}},
        {"expectText": "Authorize"},
        {"text": {"name": "fingerprint", "selector": "#fingerprint"}},
        {"text": {"name": "key_type", "selector": "#key-type"}},
        {"text": {"name": "route", "selector": "#route"}},
        {"text": {"name": "login", "selector": "#login"}},
        {"text": {"name": "source", "selector": "#source-address"}},
        {"text": {"name": "version", "selector": "#client-version"}},
        {"text": {"name": "countdown", "selector": "#countdown"}},
        {"wait": 1500},
        {"text": {"name": "countdown_later", "selector": "#countdown"}},
        {"screenshot": "verify-details"},
    ]));
    r.assert_ok();
    assert_eq!(r.text("fingerprint").trim(), fp);
    assert!(
        r.text("key_type").contains("ed25519"),
        "{}",
        r.text("key_type")
    );
    assert_eq!(r.text("route").trim(), "prod");
    assert_eq!(r.text("login").trim(), "deploy");
    assert!(
        r.text("source").starts_with("127.0.0.1:"),
        "{}",
        r.text("source")
    );
    assert!(
        r.text("version").contains("OpenSSH"),
        "{}",
        r.text("version")
    );
    let countdown = r.text("countdown").to_string();
    assert!(countdown.contains(':'), "countdown MM:SS: {countdown}");
    assert_ne!(countdown, r.text("countdown_later"), "the countdown runs");
    ssh.kill();
}

#[test]
fn deny_closes_the_connection() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("");
    let keys = key_dir();
    let key = new_key(keys.path(), "k");
    let mut ssh = gw.ssh(&key, "carol", &["whoami"]);
    let url = sign_in_url(&ssh);
    let browser = BrowserProfile::new("deny");
    browser
        .run(json!([
            {"goto": url},
            {"login": {"user": "carol", "password": "carol-password"}},
            {"click": "#deny"},
            {"expectText": "Request denied"},
            {"screenshot": "denied-page"},
        ]))
        .assert_ok();
    let status = ssh.wait_exit(T);
    assert!(
        ssh.output().contains("user has denied this code"),
        "{}",
        ssh.output()
    );
    assert_ne!(status, Some(0));
    // The code is spent: opening it again says so.
    let r = browser.run(
        json!([{"goto": url}, {"expectStatus": 409}, {"expectText": "code already processed"}]),
    );
    r.assert_ok();
}

#[test]
fn expired_code_times_out() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("ssh_sign_in_timeout: 5s\n");
    let keys = key_dir();
    let key = new_key(keys.path(), "k");
    let mut ssh = gw.ssh(&key, "alice", &["whoami"]);
    let url = sign_in_url(&ssh);
    let status = ssh.wait_exit(T);
    assert!(
        ssh.output().contains("authentication request timeout"),
        "{}",
        ssh.output()
    );
    assert_ne!(status, Some(0));
    let browser = BrowserProfile::new("expired");
    browser
        .run(json!([{"goto": url}, {"expectStatus": 400}, {"expectText": "expired"}]))
        .assert_ok();
}

#[test]
fn remember_me_and_key_owned_by_another_user() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("ssh_sign_in_timeout: 2m\n");
    let keys = key_dir();
    let key = new_key(keys.path(), "shared");
    let fp = fingerprint(&key);
    let alice = BrowserProfile::new("remember_alice");
    let bob = BrowserProfile::new("remember_bob");

    // Alice authorizes with Remember me.
    let mut ssh = gw.ssh(&key, "alice", &["whoami"]);
    let url = sign_in_url(&ssh);
    alice
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"check": "#remember"},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());

    // An administrator revokes the client binding; the identity binding stays.
    let out = gw
        .tether
        .cli(&["bindings", "revoke", &format!("sshkey-{fp}")]);
    assert!(out.success(), "{}{}", out.stdout, out.stderr);

    // Bob opens the next code for the key: refused, nothing changes.
    let mut ssh = gw.ssh(&key, "alice", &["whoami"]);
    let url = sign_in_url(&ssh);
    bob.run(json!([
        {"goto": url},
        {"login": {"user": "bob", "password": "bob-password"}},
        {"click": "#authorize"},
        {"expectText": "key is bound to another user; that user must revoke it first"},
        {"screenshot": "bound-to-another-user"},
    ]))
    .assert_ok();
    assert!(ssh.is_running(), "the request stays open for alice");

    // Alice opens the same link: approved at once, no Verify page.
    let r = alice.run(json!([
        {"goto": url},
        {"expectText": "Sign in successful"},
        {"expectNoText": "Authorize"},
    ]));
    r.assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    assert!(ssh.output().contains("alice@example.com"));
}
