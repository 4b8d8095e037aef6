//! Routes to real servers and policy per route (docs/SPEC.md §2, §6, §8), through
//! the real binary:
//! the real OpenSSH client → tether → a real OpenSSH sshd trusting tether's user CA,
//! with the sign-in done by the real IdP in headless Chromium. Live config reload
//! ends a now-denied relayed connection; a broken edit leaves the old config working.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;
use tether_testkit::*;

const T: Duration = Duration::from_secs(30);

struct Setup {
    gw: Gateway,
    sshd: Sshd,
    keys: tempfile::TempDir,
    ca: PathBuf,
    metrics_port: u16,
}

fn routes_yaml(
    sshd_port: u16,
    ca: &Path,
    keyed_pub: &str,
    sre_policy: &str,
    metrics_port: u16,
) -> String {
    format!(
        "ssh_user_ca_key_file: {ca}
metrics_address: 127.0.0.1:{metrics_port}
ssh_sign_in_timeout: 2m
routes:
  - from: ssh://prod
    to: ssh://127.0.0.1:{sshd_port}
    allow_any_authenticated_user: true
  - from: ssh://sre
    to: ssh://127.0.0.1:{sshd_port}
    policy:
{sre_policy}
  - from: ssh://own
    to: ssh://127.0.0.1:{sshd_port}
    policy:
      - allow:
          and:
            - ssh_username_matches_email: true
  - from: ssh://keyed
    to: ssh://127.0.0.1:{sshd_port}
    policy:
      - allow:
          and:
            - authenticated_user: true
            - ssh_publickey:
                - {keyed_pub}
  - from: ssh://locked
    to: ssh://127.0.0.1:{sshd_port}
",
        ca = ca.display()
    )
}

const SRE_POLICY: &str =
    "      - allow:\n          or:\n            - groups:\n                has: sre\n";

fn setup(keyed_pub: &str, keys: tempfile::TempDir) -> Setup {
    ensure_user("alice");
    ensure_user("bob");
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(&PathBuf::from(format!("{}.pub", ca.display())));
    let metrics_port = free_port();
    let yaml = routes_yaml(sshd.port, &ca, keyed_pub, SRE_POLICY, metrics_port);
    let gw = Gateway::start(&yaml);
    Setup {
        gw,
        sshd,
        keys,
        ca,
        metrics_port,
    }
}

fn sign_in(
    gw: &Gateway,
    key: &Path,
    wire_user: &str,
    user: &str,
    browser: &BrowserProfile,
    args: &[&str],
) -> SshClient {
    let ssh = gw.ssh(key, wire_user, args);
    let url = sign_in_url(&ssh);
    browser
        .run(json!([
            {"goto": url},
            {"login": {"user": user, "password": format!("{user}-password")}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    ssh
}

fn pub_line(key: &Path) -> String {
    std::fs::read_to_string(format!("{}.pub", key.display()))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn relayed_session_with_ca_certificate_and_policies() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists()) {
        return;
    }
    let keys = key_dir();
    let k1 = new_key(keys.path(), "k1");
    let k2 = new_key(keys.path(), "k2");
    let s = setup(&pub_line(&k2), keys);
    let gw = &s.gw;
    let alice = BrowserProfile::new("routes_alice");
    let bob = BrowserProfile::new("routes_bob");

    // Sign in on a route connection itself; lands upstream as `alice`.
    let mut ssh = sign_in(gw, &k1, "alice@prod", "alice", &alice, &["id", "-un"]);
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    assert!(ssh.output().contains("alice"), "{}", ssh.output());
    assert!(
        wait_until(Duration::from_secs(5), || s
            .sshd
            .log()
            .contains("Accepted certificate ID \"alice@example.com\"")),
        "sshd log: {}",
        s.sshd.log()
    );

    // Exit status, stdout and stderr separate.
    let (status, out, err) = gw.ssh_batch(
        &k1,
        "alice@prod",
        &["sh", "-c", "'echo out; echo err >&2; exit 7'"],
    );
    assert_eq!(status, Some(7), "{out}{err}");
    assert_eq!(out.trim(), "out");
    assert!(err.contains("err") && !out.contains("err"), "{err}");

    // scp a random file up and down through the gateway.
    let src = s.keys.path().join("payload.bin");
    let data: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let back = s.keys.path().join("back.bin");
    let port = gw.ssh_port.to_string();
    let scp = |from: &str, to: &str| {
        let mut cmd = Command::new("scp");
        cmd.args(SSH_DEFAULT_ARGS).args([
            "-o",
            "BatchMode=yes",
            "-P",
            &port,
            "-i",
            k1.to_str().unwrap(),
            from,
            to,
        ]);
        run_command(cmd, None, Duration::from_secs(60))
    };
    let up = scp(
        src.to_str().unwrap(),
        "alice@prod@127.0.0.1:/tmp/tether-e2e-payload.bin",
    );
    assert!(up.success(), "{}", up.stderr);
    let down = scp(
        "alice@prod@127.0.0.1:/tmp/tether-e2e-payload.bin",
        back.to_str().unwrap(),
    );
    assert!(down.success(), "{}", down.stderr);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "scp round trip changed the bytes"
    );

    // Unknown route and a route with no policy.
    let (status, _, err) = gw.ssh_batch(&k1, "alice@nope", &["true"]);
    assert_ne!(status, Some(0));
    assert!(err.contains("route \"nope\" not found"), "{err}");
    let (_, _, err) = gw.ssh_batch(&k1, "alice@locked", &["true"]);
    assert!(
        err.contains("access denied: route \"locked\": no policy allows access"),
        "{err}"
    );

    // ssh_username_matches_email: alice as alice yes, as root no.
    let (status, out, err) = gw.ssh_batch(&k1, "alice@own", &["id", "-un"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out.trim(), "alice");
    let (_, _, err) = gw.ssh_batch(&k1, "root@own", &["id", "-un"]);
    assert!(
        err.contains("access denied: route \"own\": login name \"root\" does not match your email"),
        "{err}"
    );

    // ssh_publickey: k2 (listed) must also be bound to alice; then offering k1 first
    // falls back to k2.
    let mut ssh2 = sign_in(gw, &k2, "alice", "alice", &alice, &["whoami"]);
    assert_eq!(ssh2.wait_exit(T), Some(0), "{}", ssh2.output());
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-o",
        "BatchMode=yes",
        "-p",
        &port,
        "-i",
        k1.to_str().unwrap(),
        "-i",
        k2.to_str().unwrap(),
        "alice@keyed@127.0.0.1",
        "id",
        "-un",
    ]);
    let (status, out, err) = run_ssh(&args, T);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out.trim(), "alice");
    let (_, _, err) = gw.ssh_batch(&k1, "alice@keyed", &["id", "-un"]);
    assert!(err.contains("Permission denied"), "only k1 offered: {err}");

    // A user outside the group is refused with the one-line reason.
    let kb = new_key(s.keys.path(), "kb");
    let mut ssh = sign_in(gw, &kb, "bob@sre", "bob", &bob, &["id", "-un"]);
    ssh.wait_exit(T);
    assert!(
        ssh.output()
            .contains("access denied: route \"sre\": not in group sre"),
        "{}",
        ssh.output()
    );
    let (status, _, _) = gw.ssh_batch(&kb, "bob@prod", &["id", "-un"]);
    assert_eq!(status, Some(0), "bob may use prod");

    // The Prometheus endpoint on metrics_address counts what happened above.
    let url = format!("http://127.0.0.1:{}/metrics", s.metrics_port);
    let scrape = || {
        let res = http_get(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(res.status, 200);
        res.body
    };
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &scrape(),
            "tether_ssh_connections_open"
        ) == 0.0),
        "connections still open: {}",
        scrape()
    );
    let text = scrape();
    assert!(
        metric(&text, "tether_ssh_connections_total") >= 10.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "tether_ssh_connections_closed_total{outcome=\"client_closed\"}"
        ) >= 5.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "tether_auth_codes_issued_total"),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "tether_auth_codes_decided_total{outcome=\"approved\"}"
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "tether_auth_code_decision_seconds_count"),
        3.0,
        "{text}"
    );
    assert_eq!(metric(&text, "tether_bindings_active"), 3.0, "{text}");
    // scp moved 5 MiB each way.
    let mib5 = f64::from(5 * 1024 * 1024);
    assert!(
        metric(
            &text,
            "tether_relayed_bytes_total{direction=\"to_upstream\"}"
        ) >= mib5,
        "{text}"
    );
    assert!(
        metric(&text, "tether_relayed_bytes_total{direction=\"to_client\"}") >= mib5,
        "{text}"
    );
    assert!(
        metric(&text, "tether_upstream_connect_seconds_count") >= 6.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "tether_upstream_connect_failures_total"),
        0.0,
        "{text}"
    );
}

/// The value of the sample `series` (name with labels, exactly as exposed).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn config_reload_ends_now_denied_connection_and_broken_edit_is_refused() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists()) {
        return;
    }
    let keys = key_dir();
    let k = new_key(keys.path(), "k");
    let mut s = setup(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        keys,
    );
    let alice = BrowserProfile::new("reload_alice");
    let mut live = sign_in(&s.gw, &k, "alice@sre", "alice", &alice, &["sleep", "600"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(live.is_running(), "{}", live.output());

    // A broken edit: refused, the old config stays in force.
    let base = config_yaml(s.gw.http_port, s.gw.ssh_port, &s.gw.idp.issuer, "");
    let sre_only_bob = "      - allow:\n          or:\n            - email:\n                is: bob@example.com\n";
    let good_yaml = |policy: &str| {
        format!(
            "{base}{}",
            routes_yaml(
                s.sshd.port,
                &s.ca,
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
                policy,
                s.metrics_port,
            )
        )
    };
    s.gw.tether
        .rewrite_config(&format!("{}\n  - from: [broken\n", good_yaml(sre_only_bob)));
    assert!(
        s.gw.tether
            .wait_for_log("config reload refused", Duration::from_secs(10)),
        "{}",
        s.gw.tether.logs()
    );
    assert!(live.is_running(), "the broken edit changed nothing");
    let (status, out, err) = s.gw.ssh_batch(&k, "alice@sre", &["id", "-un"]);
    assert_eq!(status, Some(0), "old config still admits alice: {err}");
    assert_eq!(out.trim(), "alice");

    // A valid edit removing alice from the route ends her live connection.
    s.gw.tether.rewrite_config(&good_yaml(sre_only_bob));
    assert_eq!(
        live.wait_exit(Duration::from_secs(15)),
        Some(255),
        "{}",
        live.output()
    );
    let out = live.output();
    assert!(
        out.contains("access revoked") && out.contains("access denied: route \"sre\""),
        "{out}"
    );
    let (status, _, err) = s.gw.ssh_batch(&k, "alice@sre", &["id", "-un"]);
    assert_ne!(status, Some(0));
    assert!(err.contains("access denied: route \"sre\""), "{err}");

    // SIGHUP reloads too, even when the file did not change.
    let before = s.gw.tether.logs().matches("config reloaded").count();
    s.gw.tether.signal(Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || s
            .gw
            .tether
            .logs()
            .matches("config reloaded")
            .count()
            > before),
        "{}",
        s.gw.tether.logs()
    );
    let (status, _, err) = s.gw.ssh_batch(&k, "alice@prod", &["true"]);
    assert_eq!(status, Some(0), "tether still serves after SIGHUP: {err}");
}
