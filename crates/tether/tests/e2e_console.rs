//! The operator console (SPEC §5, `administrators`), through the real binary: two
//! replicas on one PostgreSQL, the real test IdP (an administrator by group
//! membership there), headless Chromium, real OpenSSH clients and a real sshd.
//! alice holds a route session on replica A and a CLI session on B; carol (in the
//! `tether-admins` group at the IdP) sees both on A's console and ends the one on B;
//! bob (not an administrator) gets 403 on the console and cannot end alice's
//! session with a forged request; `tether sessions list/kill` from a separate
//! process does the same; "Cut off" ends everything of alice's on every replica.
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
/// Base64 of 32 bytes: replicas behind one address share the cookie secret.
const COOKIE_SECRET: &str = "dGV0aGVyLWNvbnNvbGUtdGVzdC1jb29raWUta2V5ISE=";

/// `tether sessions list --json` from its own process: one object per session.
fn listed(t: &TetherProcess) -> Vec<Value> {
    let config = t.config_path();
    let out = t.cli(&["sessions", "list", "--json", "-c", config.to_str().unwrap()]);
    assert!(
        out.success(),
        "sessions list: {}\n{}",
        out.stdout,
        out.stderr
    );
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_listed(t: &TetherProcess, want: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    let ok = wait_until(Duration::from_secs(15), || {
        seen = listed(t);
        seen.len() == want
    });
    assert!(ok, "wanted {want} live sessions, the store lists {seen:?}");
    seen
}

#[test]
fn administrators_see_and_end_sessions_on_every_replica() {
    if !components_present()
        || !require("PostgreSQL server", postgres_bin_dir().is_some())
        || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists())
    {
        return;
    }
    let pg = Postgres::start();
    let db = pg.create_database("tether_console");
    let keys = key_dir();
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(&PathBuf::from(format!("{}.pub", ca.display())));
    let shared = format!(
        "databroker_storage_type: postgres
databroker_storage_connection_string: {db}
cookie_secret: {COOKIE_SECRET}
ssh_user_ca_key_file: {ca}
administrators:
  - allow:
      or:
        - groups:
            has: tether-admins
routes:
  - from: ssh://prod
    to: ssh://127.0.0.1:{port}
    allow_any_authenticated_user: true
",
        ca = ca.display(),
        port = sshd.port,
    );
    let Replicas {
        idp,
        a,
        b,
        http_a,
        ssh_a,
        ssh_b,
        ..
    } = start_replicas(&shared);
    idp.set_groups("carol", &["tether-admins"]);
    let logs = || format!("--- A ---\n{}\n--- B ---\n{}", a.logs(), b.logs());

    // alice binds a key (signed in on A), then holds a route session on A and a
    // CLI session on B.
    let key = new_key(keys.path(), "alice");
    let port_a = ssh_a.to_string();
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-p",
        &port_a,
        "-i",
        key.to_str().unwrap(),
        "alice@127.0.0.1",
        "whoami",
    ]);
    let mut first = SshClient::spawn(&args);
    let alice = BrowserProfile::new("console_alice");
    alice
        .run(json!([
            {"goto": sign_in_url(&first)},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    assert_eq!(
        first.wait_exit(T),
        Some(0),
        "{}\n{}",
        first.output(),
        logs()
    );
    wait_listed(&a, 0);
    let mut on_a = hold_on(ssh_a, &key, "alice@prod");
    let mut on_b = hold_on(ssh_b, &key, "alice");
    let sessions = wait_listed(&a, 2);
    let id_of = |replica_port: u16| -> String {
        let want = if replica_port == ssh_a { "prod" } else { "" };
        sessions
            .iter()
            .find(|s| s["route"].as_str().unwrap_or_default() == want)
            .unwrap_or_else(|| panic!("no session with route {want:?}: {sessions:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (id_a, id_b) = (id_of(ssh_a), id_of(ssh_b));
    assert_ne!(
        sessions[0]["replica"], sessions[1]["replica"],
        "one session on each replica: {sessions:?}"
    );
    for s in &sessions {
        assert_eq!(s["email"], "alice@example.com", "{s}");
        assert_eq!(s["login"], "alice", "{s}");
        assert!(
            s["client_version"]
                .as_str()
                .unwrap()
                .starts_with("SSH-2.0-OpenSSH"),
            "{s}"
        );
        assert!(
            s["source"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{s}"
        );
        assert!(s["bytes_in"].as_u64().unwrap() > 0, "{s}");
    }

    // alice's own page lists her sessions (both replicas) with Disconnect buttons.
    let page_a = format!("http://127.0.0.1:{http_a}/.pomerium/session_binding_info");
    alice
        .run(json!([
            {"goto": page_a},
            {"expectText": "Your live sessions"},
            {"expectText": id_a},
            {"expectText": id_b},
            {"screenshot": "console-alice-own-sessions"},
        ]))
        .assert_ok();

    // carol, an administrator by group at the IdP, sees both on A's console and
    // ends the one on B.
    let console_a = format!("http://127.0.0.1:{http_a}/.tether/console");
    let carol = BrowserProfile::new("console_carol");
    carol
        .run(json!([
            {"goto": console_a},
            {"login": {"user": "carol", "password": "carol-password"}},
            {"expectText": "Operator console"},
            {"expectText": id_a},
            {"expectText": id_b},
            {"expectText": "alice@example.com"},
            {"screenshot": "console-admin-sees-both-replicas"},
            {"click": format!("[id=\"end-{id_b}\"]")},
            {"expectText": "Operator console"},
            {"expectNoText": id_b},
            {"expectText": id_a},
            {"screenshot": "console-admin-ended-b"},
        ]))
        .assert_ok();
    assert_eq!(
        on_b.wait_exit(Duration::from_secs(10)),
        Some(255),
        "{}\n{}",
        on_b.output(),
        logs()
    );
    assert!(
        on_b.output()
            .contains("session ended by an administrator (carol@example.com)"),
        "B's client is told why: {}",
        on_b.output()
    );
    assert!(on_a.is_running(), "A's session is untouched\n{}", logs());
    assert!(
        wait_until(Duration::from_secs(5), || a
            .logs()
            .contains("\"event\":\"live_session_ended\"")
            && a.logs().contains("\"by\":\"carol@example.com\"")),
        "the admin action is an audit event naming the admin\n{}",
        a.logs()
    );

    // bob is not an administrator: 403 on the console, and a forged end of
    // alice's session (with his own valid CSRF token) is refused too.
    let bob = BrowserProfile::new("console_bob");
    bob.run(json!([
        {"goto": console_a},
        {"login": {"user": "bob", "password": "bob-password"}},
        {"expectStatus": 403},
        {"expectText": "for administrators"},
        {"screenshot": "console-non-admin-403"},
    ]))
    .assert_ok();
    // His own valid CSRF token, from the sign-out form.
    let sign_out = format!("http://127.0.0.1:{http_a}/.pomerium/sign_out");
    let csrf = bob
        .run(json!([
            {"goto": sign_out},
            {"value": {"name": "csrf", "selector": "input[name=csrf_token]"}},
        ]))
        .text("csrf")
        .to_string();
    // The forged POSTs carry bob's own session cookie (from his browser's jar).
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(&bob.storage_state).unwrap()).unwrap();
    let cookie = state["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "_pomerium")
        .map(|c| format!("_pomerium={}", c["value"].as_str().unwrap()))
        .expect("bob's session cookie");
    let forge = |path: &str, form: String| {
        http_request(
            "POST",
            &format!("http://127.0.0.1:{http_a}{path}"),
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &cookie),
            ],
            Some(form.as_bytes()),
            T,
        )
        .unwrap()
    };
    let ended = forge(
        "/.tether/sessions/end",
        format!("csrf_token={csrf}&session_id={id_a}&back=bindings"),
    );
    assert_eq!(ended.status, 403, "bob ending alice's session: {ended:?}");
    let cut = forge(
        "/.tether/console/users/cut-off",
        format!("csrf_token={csrf}&user_id=alice-sub"),
    );
    assert_eq!(cut.status, 403, "bob cutting alice off: {cut:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        on_a.is_running(),
        "bob's forged request ended nothing\n{}",
        logs()
    );
    for action in [
        "view console",
        "end another user's session",
        "cut off a user",
    ] {
        assert!(
            a.logs().contains(&format!("\"action\":\"{action}\"")),
            "console_refused for {action:?}\n{}",
            a.logs()
        );
    }

    // The command line, from a separate process, against replica B's config: the
    // session on A ends.
    let config_b = b.config_path();
    let out = b.cli(&["sessions", "kill", &id_a, "-c", config_b.to_str().unwrap()]);
    assert!(
        out.success(),
        "sessions kill: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout
            .contains(&format!("ended {id_a} (alice@example.com)")),
        "{}",
        out.stdout
    );
    assert_eq!(
        on_a.wait_exit(Duration::from_secs(10)),
        Some(255),
        "{}\n{}",
        on_a.output(),
        logs()
    );
    assert!(
        on_a.output().contains("session ended by an administrator"),
        "{}",
        on_a.output()
    );
    wait_listed(&b, 0);
    let gone = b.cli(&["sessions", "kill", &id_a, "-c", config_b.to_str().unwrap()]);
    assert!(
        !gone.success(),
        "killing an ended session fails: {}",
        gone.stdout
    );
    assert!(gone.stderr.contains("no live session"), "{}", gone.stderr);

    // Cut off: alice's key still goes through on both replicas until carol cuts
    // her off from A's console; then every connection ends and the key needs a
    // new sign-in.
    let mut again_a = hold_on(ssh_a, &key, "alice@prod");
    let mut again_b = hold_on(ssh_b, &key, "alice");
    wait_listed(&a, 2);
    carol
        .run(json!([
            {"goto": console_a},
            {"expectText": "alice@example.com"},
            {"click": "[id=\"cut-off-alice@example.com\"]"},
            {"expectText": "Operator console"},
            {"expectNoText": "alice@example.com"},
            {"screenshot": "console-cut-off-alice"},
        ]))
        .assert_ok();
    for (name, client) in [("A", &mut again_a), ("B", &mut again_b)] {
        assert_eq!(
            client.wait_exit(Duration::from_secs(10)),
            Some(255),
            "replica {name}: {}\n{}",
            client.output(),
            logs()
        );
        assert!(
            client.output().contains("cut off by an administrator"),
            "{}",
            client.output()
        );
    }
    let (status, _, err) = {
        let p = ssh_b.to_string();
        let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
        args.extend([
            "-o",
            "BatchMode=yes",
            "-p",
            &p,
            "-i",
            key.to_str().unwrap(),
            "alice@127.0.0.1",
            "whoami",
        ]);
        run_ssh(&args, T)
    };
    assert_ne!(status, Some(0), "the cut-off key still admitted: {err}");
    assert!(
        a.logs().contains("\"event\":\"user_cut_off\""),
        "{}",
        a.logs()
    );
    drop(sshd);
}
