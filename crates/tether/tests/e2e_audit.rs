//! The audit trail (docs/AUDIT.md) through the real binary: the real IdP signs alice
//! in in headless Chromium, the real OpenSSH client connects through tether to a real
//! sshd trusting tether's CA, a route the policy refuses is tried, the binding is
//! revoked on the bindings page, and then the `audit_log` file is read back: one JSON
//! object per line, each with `time` and `event`, and each event of that story with
//! the fields docs/AUDIT.md gives it.
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
use serde_json::{json, Value};
use tether_testkit::*;

const T: Duration = Duration::from_secs(30);

/// The audit file's lines, each parsed (a line that is not a JSON object fails).
fn read_audit(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v.is_object(), "{line}");
            assert!(
                v["time"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{line}"
            );
            assert!(v["event"].as_str().is_some(), "{line}");
            v
        })
        .collect()
}

/// The first event named `name` whose fields match every `(key, value)` of `want`.
fn find<'a>(events: &'a [Value], name: &str, want: &[(&str, Value)]) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name && want.iter().all(|(k, v)| &e[*k] == v))
        .unwrap_or_else(|| {
            panic!(
                "no {name} event with {want:?} in:\n{}",
                events
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
}

/// Position of `event` in `events`.
fn pos(events: &[Value], event: &Value) -> usize {
    events.iter().position(|e| e == event).unwrap()
}

#[test]
fn audit_file_tells_sign_in_connect_denial_and_revoke() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists()) {
        return;
    }
    ensure_user("alice");
    let keys = key_dir();
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(&PathBuf::from(format!("{}.pub", ca.display())));
    let key = new_key(keys.path(), "k1");
    let fp = fingerprint(&key);
    let audit_path = keys.path().join("audit.jsonl");
    let gw = Gateway::start(&format!(
        "ssh_user_ca_key_file: {ca}
audit_log: {audit}
ssh_sign_in_timeout: 2m
routes:
  - from: ssh://prod
    to: ssh://127.0.0.1:{port}
    allow_any_authenticated_user: true
  - from: ssh://locked
    to: ssh://127.0.0.1:{port}
    policy:
      - allow:
          and:
            - groups:
                has: nobody-has-this
",
        ca = ca.display(),
        audit = audit_path.display(),
        port = sshd.port,
    ));
    let alice = BrowserProfile::new("audit_alice");

    // Sign in on a route connection; it lands upstream and runs the command.
    let mut ssh = gw.ssh(&key, "alice@prod", &["echo", "audited"]);
    let url = sign_in_url(&ssh);
    alice
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    assert!(ssh.output().contains("audited"), "{}", ssh.output());

    // A route the policy refuses.
    let mut denied = gw.ssh(&key, "alice@locked", &["true"]);
    assert_eq!(denied.wait_exit(T), Some(255), "{}", denied.output());
    assert!(
        denied.output().contains("access denied"),
        "{}",
        denied.output()
    );

    // A held connection, then the binding revoked in the browser: it is cut.
    let mut held = hold_on(gw.ssh_port, &key, "alice@prod");
    assert!(
        wait_until(T, || read_audit(&audit_path)
            .iter()
            .filter(|e| e["event"] == "upstream_connected")
            .count()
            == 2),
        "the held connection reached the upstream"
    );
    alice
        .run(json!([
            {"goto": format!("{}/.pomerium/session_binding_info", gw.base())},
            {"click": format!("{} form[action=\"/.pomerium/session_binding/revoke\"] button", row(&fp))},
            {"expectNoText": fp},
        ]))
        .assert_ok();
    assert_eq!(held.wait_exit(T), Some(255), "{}", held.output());
    assert!(
        held.output().contains("access revoked"),
        "{}",
        held.output()
    );
    assert!(
        wait_until(T, || read_audit(&audit_path)
            .iter()
            .filter(|e| e["event"] == "connection_closed")
            .count()
            >= 3),
        "every connection's end is written"
    );

    let events = read_audit(&audit_path);
    let email = json!("alice@example.com");
    let sign_in = find(&events, "sign_in", &[("email", email.clone())]);
    let user_id = sign_in["user_id"].clone();
    assert!(user_id.as_str().is_some_and(|u| !u.is_empty()), "{sign_in}");
    assert!(sign_in["session_expires"].as_str().is_some(), "{sign_in}");

    let issued = find(&events, "code_issued", &[("fingerprint", json!(fp))]);
    assert!(issued["conn"].as_u64().is_some(), "{issued}");
    assert!(
        issued["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{issued}"
    );
    let decided = find(
        &events,
        "code_decided",
        &[("outcome", json!("approved")), ("via", json!("web"))],
    );
    assert_eq!(decided["fingerprint"], json!(fp), "{decided}");
    assert_eq!(decided["user_id"], user_id, "{decided}");
    let binding_id = decided["binding_id"].clone();
    assert_eq!(binding_id, json!(format!("sshkey-{fp}")), "{decided}");

    let opened = find(
        &events,
        "connection_opened",
        &[("conn", issued["conn"].clone())],
    );
    assert!(
        opened["client_version"]
            .as_str()
            .unwrap()
            .starts_with("SSH-2.0-OpenSSH"),
        "{opened}"
    );
    let authed = find(
        &events,
        "ssh_authenticated",
        &[("via", json!("sign_in")), ("route", json!("prod"))],
    );
    assert_eq!(
        authed["conn"], issued["conn"],
        "the same connection: {authed}"
    );
    for (k, v) in [
        ("login", json!("alice")),
        ("fingerprint", json!(fp)),
        ("binding_id", binding_id.clone()),
        ("email", email.clone()),
        ("user_id", user_id.clone()),
    ] {
        assert_eq!(authed[k], v, "{k}: {authed}");
    }
    let connected = find(
        &events,
        "upstream_connected",
        &[("conn", authed["conn"].clone())],
    );
    assert_eq!(connected["route"], "prod", "{connected}");
    assert_eq!(connected["via"], "route", "{connected}");
    assert_eq!(connected["address"], format!("127.0.0.1:{}", sshd.port));
    assert_eq!(connected["login"], "alice");
    assert_eq!(connected["email"], email);

    let policy = find(&events, "policy_denied", &[("route", json!("locked"))]);
    for (k, v) in [
        ("via", json!("route")),
        ("login", json!("alice")),
        ("fingerprint", json!(fp)),
        ("email", email.clone()),
        ("key_specific", json!(false)),
    ] {
        assert_eq!(policy[k], v, "{k}: {policy}");
    }
    assert!(
        policy["reason"].as_str().unwrap().contains("not in group"),
        "{policy}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "policy_denied")
            .count(),
        1,
        "one denial, written once"
    );

    let revoked = find(&events, "binding_revoked", &[("binding_id", binding_id)]);
    assert_eq!(revoked["via"], "web", "{revoked}");
    assert_eq!(revoked["user"], email, "{revoked}");
    let cut = find(&events, "connections_revoked", &[("count", json!(1))]);
    assert!(
        pos(&events, revoked) < pos(&events, cut),
        "revoke, then the cut"
    );
    let closed = events
        .iter()
        .filter(|e| e["event"] == "connection_closed")
        .find(|e| e["ended_by"].as_str().unwrap().contains("access revoked"))
        .unwrap_or_else(|| panic!("the held connection's end: {events:?}"));
    assert_eq!(closed["authenticated"], true, "{closed}");
    assert!(pos(&events, sign_in) < pos(&events, authed));
    // The upstream is connected while the client still waits in authentication.
    assert!(pos(&events, connected) < pos(&events, authed));
    drop(held);
}
