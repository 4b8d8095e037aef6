//! Issue 12 (identity and authorization hardening), through the real binary, the
//! real test IdP (npm oidc-provider) and headless Chromium: unverified emails, Remember
//! me on a cross-site navigation, deny owner-checked, and what the logs and files
//! look like.
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

const T: Duration = Duration::from_secs(30);

/// A port nothing listens on: an allowed route answers "upstream unreachable",
/// a denied one "access denied", so the policy decision shows without an sshd.
fn closed_port() -> u16 {
    free_port()
}

/// Signs `user` in through a route-less `whoami` (any signed-in user may run it)
/// and returns its output once it exits.
fn sign_in_whoami(gw: &Gateway, key: &Path, user: &str, browser: &BrowserProfile) -> String {
    let mut ssh = gw.ssh(key, user, &["whoami"]);
    let url = sign_in_url(&ssh);
    browser
        .run(json!([
            {"goto": url},
            {"login": {"user": user, "password": format!("{user}-password")}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    ssh.output()
}

/// Item 1: an email the IdP did not verify (`email_verified: false`, or no claim
/// without `assume_email_verified`) satisfies no email criterion.
#[test]
fn unverified_email_opens_no_email_route() {
    if !components_present() {
        return;
    }
    let port = closed_port();
    let route = |name: &str, criterion: &str| {
        format!(
            "  - from: ssh://{name}\n    to: ssh://127.0.0.1:{port}\n    policy:\n      - allow:\n          and:\n            - {criterion}\n"
        )
    };
    let yaml = format!(
        "ssh_sign_in_timeout: 2m\nroutes:\n{}{}{}{}",
        route("eveonly", "email: eve@example.com"),
        route("noraonly", "email: nora@example.com"),
        route("aliceonly", "email: alice@example.com"),
        route("owndomain", "domain: example.com"),
    );
    let gw = Gateway::start(&yaml);
    let keys = key_dir();

    // eve: email_verified false.
    let eve_key = new_key(keys.path(), "eve");
    let out = sign_in_whoami(&gw, &eve_key, "eve", &BrowserProfile::new("unverified_eve"));
    assert!(
        out.contains("Email:           eve@example.com (not verified by the identity provider)"),
        "{out}"
    );
    for route in ["eveonly", "owndomain"] {
        let (status, _, err) = gw.ssh_batch(&eve_key, &format!("eve@{route}"), &["true"]);
        assert_ne!(status, Some(0));
        assert!(
            err.contains(&format!(
                "access denied: route \"{route}\": your email address is not verified by the identity provider"
            )),
            "{route}: {err}"
        );
    }

    // nora: no email_verified claim, and assume_email_verified is off.
    let nora_key = new_key(keys.path(), "nora");
    sign_in_whoami(
        &gw,
        &nora_key,
        "nora",
        &BrowserProfile::new("unverified_nora"),
    );
    let (_, _, err) = gw.ssh_batch(&nora_key, "nora@noraonly", &["true"]);
    assert!(
        err.contains("access denied: route \"noraonly\": your email address is not verified"),
        "{err}"
    );

    // alice (verified) passes the policy: the upstream is what fails.
    let alice_key = new_key(keys.path(), "alice");
    sign_in_whoami(
        &gw,
        &alice_key,
        "alice",
        &BrowserProfile::new("verified_alice"),
    );
    for route in ["aliceonly", "owndomain"] {
        let (_, _, err) = gw.ssh_batch(&alice_key, &format!("alice@{route}"), &["true"]);
        assert!(!err.contains("access denied"), "{route}: {err}");
        assert!(err.contains("unreachable"), "{route}: {err}");
    }
}

/// A page on another site (127.0.0.2 is another site than 127.0.0.1) whose script
/// navigates the browser to `target` at once, as an attacker's page would. Served
/// by a thread for the rest of the test process.
fn cross_site_page(target: &str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = format!(
        "<!doctype html><html><body><p>cute cats</p>\
         <script>location.href = {};</script></body></html>",
        serde_json::to_string(target).unwrap()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://127.0.0.2:{port}/")
}

/// Item 2: with Remember me, a code link another site navigates the browser to
/// shows the Verify page (and decides nothing); the same link opened directly is
/// approved at once, also after a round trip through the IdP. Item 3 on the way:
/// another user cannot deny the key's pending request.
#[test]
fn remember_me_needs_a_directly_opened_link() {
    if !components_present() {
        return;
    }
    let gw = Gateway::start("ssh_sign_in_timeout: 2m\n");
    let keys = key_dir();
    let key = new_key(keys.path(), "remembered");
    let fp = fingerprint(&key);
    let alice = BrowserProfile::new("direct_alice");

    // Alice authorizes with Remember me, then the client binding is revoked (the
    // identity binding stays), so the next connection needs a code again.
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
    let revoke = || {
        let out = gw
            .tether
            .cli(&["bindings", "revoke", &format!("sshkey-{fp}")]);
        assert!(out.success(), "{}{}", out.stdout, out.stderr);
    };
    revoke();

    // Another site navigates alice's signed-in browser to the code link.
    let mut ssh = gw.ssh(&key, "alice", &["whoami"]);
    let url = sign_in_url(&ssh);
    alice
        .run(json!([
            {"goto": cross_site_page(&url)},
            {"expectText": "Authorize SSH sign-in?"},
            {"expectText": "opened from another site"},
            {"expectUrl": "/.pomerium/sign_in?user_code="},
            {"screenshot": "remembered-but-cross-site"},
        ]))
        .assert_ok();
    std::thread::sleep(Duration::from_secs(1));
    assert!(ssh.is_running(), "nothing approved: {}", ssh.output());

    // Item 3: bob, holding the code of a key tied to alice, can neither authorize
    // nor deny it; alice's connection keeps waiting.
    let bob = BrowserProfile::new("direct_bob");
    bob.run(json!([
        {"goto": url},
        {"login": {"user": "bob", "password": "bob-password"}},
        {"click": "#deny"},
        {"expectStatus": 409},
        {"expectText": "key is bound to another user; that user must revoke it first"},
        {"screenshot": "deny-by-another-user"},
    ]))
    .assert_ok();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        ssh.is_running(),
        "bob's deny ended nothing: {}",
        ssh.output()
    );

    // Alice opens the link herself: approved at once.
    alice
        .run(json!([
            {"goto": url},
            {"expectText": "Sign in successful"},
            {"expectNoText": "Authorize"},
        ]))
        .assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    revoke();

    // A browser with no tether session, link opened directly: the IdP round trip
    // comes back `cross-site`, and Remember me still applies.
    let mut ssh = gw.ssh(&key, "alice", &["whoami"]);
    let url = sign_in_url(&ssh);
    BrowserProfile::new("direct_fresh")
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"expectText": "Sign in successful"},
            {"expectNoText": "Authorize"},
        ]))
        .assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    revoke();

    // The same round trip started by another site: the Verify page.
    let mut ssh = gw.ssh(&key, "alice", &["whoami"]);
    let url = sign_in_url(&ssh);
    BrowserProfile::new("cross_site_fresh")
        .run(json!([
            {"goto": cross_site_page(&url)},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"expectText": "Authorize SSH sign-in?"},
            {"expectText": "opened from another site"},
        ]))
        .assert_ok();
    std::thread::sleep(Duration::from_secs(1));
    assert!(ssh.is_running(), "nothing approved: {}", ssh.output());
}
