//! Two tether replicas sharing one PostgreSQL database (SPEC §5, §9), through the
//! real binary: a sign-in decided on replica A's web app lets the SSH connection
//! waiting on replica B through, each replica's bindings page counts the live
//! connections on both, and a revocation on A's bindings page ends the live
//! connections on both replicas.
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
/// Base64 of 32 bytes: replicas behind one address share the cookie secret.
const COOKIE_SECRET: &str = "dGV0aGVyLXJlcGxpY2EtdGVzdC1jb29raWUta2V5ISE=";

#[test]
fn replicas_share_sign_in_and_revocation_through_postgres() {
    if !components_present() || !require("PostgreSQL server", postgres_bin_dir().is_some()) {
        return;
    }
    let pg = Postgres::start();
    let db = pg.create_database("tether_replicas");
    let shared = format!(
        "databroker_storage_type: postgres
databroker_storage_connection_string: {db}
cookie_secret: {COOKIE_SECRET}
"
    );
    let Replicas {
        idp: _idp,
        a,
        b,
        http_a,
        ssh_a,
        http_b,
        ssh_b,
    } = start_replicas(&shared);
    let logs = || {
        format!(
            "--- replica A ---\n{}\n--- replica B ---\n{}",
            a.logs(),
            b.logs()
        )
    };

    // The SSH connection waits on B; the browser decides on A.
    let keys = key_dir();
    let key = new_key(keys.path(), "k");
    let port_b = ssh_b.to_string();
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-p",
        &port_b,
        "-i",
        key.to_str().unwrap(),
        "alice@127.0.0.1",
        "whoami",
    ]);
    let mut ssh = SshClient::spawn(&args);
    let url = sign_in_url(&ssh);
    assert!(
        url.starts_with(&format!(
            "http://127.0.0.1:{http_a}/.pomerium/sign_in?user_code="
        )),
        "{url}"
    );
    let alice = BrowserProfile::new("replicas_alice");
    alice
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
            {"screenshot": "replicas-approved-on-a"},
        ]))
        .assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}\n{}", ssh.output(), logs());
    assert!(
        ssh.output().contains("alice@example.com"),
        "{}",
        ssh.output()
    );

    // The binding is shared: the key goes straight through on both replicas.
    let mut on_a = hold_on(ssh_a, &key, "alice");
    let mut on_b = hold_on(ssh_b, &key, "alice");
    let page = format!("http://127.0.0.1:{http_a}/.pomerium/session_binding_info");
    let fp = fingerprint(&key);
    assert!(
        wait_until(Duration::from_secs(10), || a
            .logs()
            .contains("ssh_authenticated")
            && b.logs().matches("ssh_authenticated").count() >= 2),
        "both held connections authenticated\n{}",
        logs()
    );
    assert!(on_a.is_running() && on_b.is_running(), "{}", logs());
    // Each replica's page counts both connections: its own from its registry, the
    // other's as that replica published it to the store (within tens of ms).
    for (name, port) in [("A", http_a), ("B", http_b)] {
        let page = format!("http://127.0.0.1:{port}/.pomerium/session_binding_info");
        let mut seen = String::new();
        for _ in 0..10 {
            let r = alice.run(json!([
                {"goto": page},
                {"expectText": fp},
                {"text": {"name": "live", "selector": format!("{} td.live", row(&fp))}},
                {"screenshot": format!("replicas-live-count-on-{name}")},
            ]));
            r.assert_ok();
            seen = r.text("live").trim().to_string();
            if seen == "2" {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        assert_eq!(
            seen,
            "2",
            "live connections on replica {name}'s page\n{}",
            logs()
        );
    }

    // Revoke on A's page: the connection on A and the one on B both end, with the
    // reason on the client's side.
    alice
        .run(json!([
            {"goto": page},
            {"click": "form[action=\"/.pomerium/session_binding/revoke\"] button"},
            {"expectNoText": fp},
            {"screenshot": "replicas-revoked-on-a"},
        ]))
        .assert_ok();
    for (name, client) in [("A", &mut on_a), ("B", &mut on_b)] {
        assert_eq!(
            client.wait_exit(Duration::from_secs(10)),
            Some(255),
            "replica {name}: {}\n{}",
            client.output(),
            logs()
        );
        assert!(
            client.output().contains("access revoked"),
            "replica {name}: {}",
            client.output()
        );
    }
    // And nothing lets the key back in without a new sign-in, on either replica.
    for port in [ssh_a, ssh_b] {
        let p = port.to_string();
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
        let (status, _, err) = run_ssh(&args, T);
        assert_ne!(
            status,
            Some(0),
            "revoked key still admitted on :{port}: {err}"
        );
    }
}
