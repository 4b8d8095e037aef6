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
