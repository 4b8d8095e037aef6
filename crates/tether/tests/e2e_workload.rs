//! Workload bindings (issue 16) through the real binary: a CI job's OIDC token
//! from a real `oidc-provider` issuer (`tests/idp/ci.js`, client-credentials JWT
//! access tokens) binds an SSH key with `POST /.tether/api/v1/workload-bindings`,
//! and the real OpenSSH client with `BatchMode=yes` reaches a real sshd as the
//! workload's login — only on its issuer's routes and logins. Another repository's
//! token is 403; an expired, replayed, wrong-audience or badly signed token is 401
//! and binds nothing; the binding ends by itself and its held connection is cut.
//! Ansible runs a playbook through the route on a workload binding.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tether_testkit::*;

const AUDIENCE: &str = "https://gateway.tether.test";
const PATH: &str = "/.tether/api/v1/workload-bindings";

/// POSTs `body` with `token`; (status, JSON answer).
fn bind(gw: &Gateway, token: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let res = http_request(
        "POST",
        &format!("{}{PATH}", gw.base()),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(body.to_string().as_bytes()),
        Duration::from_secs(15),
    )
    .unwrap();
    let v = serde_json::from_str(&res.body).unwrap_or(Value::Null);
    (res.status, v)
}

fn public_key(key: &Path) -> String {
    std::fs::read_to_string(format!("{}.pub", key.display())).unwrap()
}

/// sshd trusting tether's CA, the CI issuer, and a gateway with routes `prod` and
/// `staging` where the issuer's jobs from org/deploy on main may use `prod` as
/// `deploy`.
fn rig(keys: &Path) -> (Sshd, CiIssuer, Gateway) {
    rig_with(keys, "")
}

/// [`rig`] with `extra` config lines.
fn rig_with(keys: &Path, extra: &str) -> (Sshd, CiIssuer, Gateway) {
    let ca = gen_client_key(keys, "tether_ca");
    let sshd = Sshd::start(Path::new(&format!("{}.pub", ca.display())));
    let ci = CiIssuer::start(AUDIENCE);
    let gw = Gateway::start(&format!(
        "ssh_user_ca_key_file: {ca}
routes:
  - from: ssh://prod
    to: ssh://127.0.0.1:{port}
    allow_any_authenticated_user: true
  - from: ssh://staging
    to: ssh://127.0.0.1:{port}
    allow_any_authenticated_user: true
workload_identity:
  - issuer: {issuer}
    audience: {AUDIENCE}
    policy:
      - allow:
          and:
            - claim/repository: org/deploy
            - claim/ref: refs/heads/main
    routes: [prod]
    logins: [deploy]
    max_lifetime: 10m
{extra}",
        ca = ca.display(),
        port = sshd.port,
        issuer = ci.issuer,
    ));
    (sshd, ci, gw)
}

/// A CI job binds its key with its token, then runs an Ansible playbook through
/// `deploy@prod` on that binding (OpenSSH underneath, BatchMode: no sign-in).
#[test]
fn ansible_runs_a_playbook_on_a_workload_binding() {
    if !components_present()
        || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists())
        || !venv_present("ansible-playbook")
    {
        return;
    }
    ensure_user("deploy");
    let keys = key_dir();
    let (_sshd, ci, gw) = rig(keys.path());
    let k = new_key(keys.path(), "ansible");
    let (status, answer) = bind(
        &gw,
        &ci.token("deploy-main"),
        &json!({"public_key": public_key(&k)}),
    );
    assert_eq!(status, 201, "{answer}");

    let work = AnsibleWork::new(
        keys.path().join("ansible-work"),
        gw.ssh_port,
        "deploy@prod",
        &k,
        "/tmp/.ansible-deploy",
    );
    let playbook = work.dir.join("playbook.yml");
    std::fs::write(
        &playbook,
        "- hosts: gateway
  gather_facts: false
  tasks:
    - name: who am I upstream
      ansible.builtin.command: id -un
      register: who
    - name: the workload's login
      ansible.builtin.assert:
        that: who.stdout == \"deploy\"
",
    )
    .unwrap();
    let mut cmd = work.command("ansible-playbook", "ssh");
    cmd.arg(&playbook);
    let out = run_command(cmd, None, Duration::from_secs(180));
    assert!(
        out.success()
            && out
                .stdout
                .lines()
                .any(|l| l.starts_with("prod") && l.contains("failed=0")),
        "ansible-playbook ({:?}):\n{}\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr,
        gw.tether.logs()
    );
}

#[test]
fn a_jobs_token_binds_a_key_for_its_routes_and_logins_only() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists()) {
        return;
    }
    ensure_user("deploy");
    ensure_user("alice");
    let keys = key_dir();
    let (sshd, ci, gw) = rig(keys.path());
    let check = gw
        .tether
        .cli(&["check", "-c", gw.tether.config_path().to_str().unwrap()]);
    assert!(check.success(), "{check:?}");

    // The deploy job binds its key; ssh goes straight through as `deploy`.
    let k = new_key(keys.path(), "job");
    let token = ci.token("deploy-main");
    let (status, answer) = bind(
        &gw,
        &token,
        &json!({"public_key": public_key(&k), "ttl_seconds": 600}),
    );
    assert_eq!(status, 201, "{answer}\n{}", gw.tether.logs());
    let identity = format!("workload:{}#deploy-main", ci.issuer);
    assert_eq!(answer["identity"], identity.as_str());
    assert_eq!(answer["fingerprint"], fingerprint(&k).as_str());
    assert_eq!(answer["routes"], json!(["prod"]));
    let (status, out, err) = gw.ssh_batch(&k, "deploy@prod", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "deploy"), "{err}");
    // The upstream's certificate names the workload (sshd logs the key id).
    assert!(sshd.log().contains(&identity), "{}", sshd.log());

    // Only its routes and logins.
    let (status, _, err) = gw.ssh_batch(&k, "deploy@staging", &["id", "-un"]);
    assert_ne!(status, Some(0));
    assert!(err.contains("this workload may use only prod"), "{err}");
    let (status, _, err) = gw.ssh_batch(&k, "alice@prod", &["id", "-un"]);
    assert_ne!(status, Some(0));
    assert!(err.contains("may not log in as \"alice\""), "{err}");

    // Listed with every binding, under the workload's identity.
    let list = gw.tether.cli(&[
        "bindings",
        "list",
        "-c",
        gw.tether.config_path().to_str().unwrap(),
    ]);
    assert!(list.stdout.contains(&identity), "{list:?}");

    // Refusals bind nothing: a replayed token, another repository's, the wrong
    // audience, a bad signature, no token.
    let k2 = new_key(keys.path(), "other");
    let body = json!({"public_key": public_key(&k2)});
    let (status, answer) = bind(&gw, &token, &body);
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("already used"),
        "{answer}"
    );
    let (status, answer) = bind(&gw, &ci.token("other-repo"), &body);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("policy denies"),
        "{answer}"
    );
    let (status, answer) = bind(&gw, &ci.token("wrong-aud"), &body);
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("audience"),
        "{answer}"
    );
    let fresh = ci.token("deploy-main");
    let (head, sig) = fresh.rsplit_once('.').unwrap();
    let flipped: String = sig
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                c
            }
        })
        .collect();
    let (status, answer) = bind(&gw, &format!("{head}.{flipped}"), &body);
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("signature"),
        "{answer}"
    );
    let (status, _) = bind(&gw, "", &body);
    assert_eq!(status, 401);
    // A lifetime past the issuer's max_lifetime, and a malformed key: 400.
    let (status, answer) = bind(
        &gw,
        &fresh,
        &json!({"public_key": public_key(&k2), "ttl_seconds": 3600}),
    );
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = bind(
        &gw,
        &ci.token("deploy-main"),
        &json!({"public_key": "ssh-ed25519 !!"}),
    );
    assert_eq!(status, 400, "{answer}");
    let (status, _, _) = gw.ssh_batch(&k2, "deploy@prod", &["id", "-un"]);
    assert_ne!(status, Some(0), "nothing was bound for k2");

    // A short-lived binding: its held connection is cut when it ends. Meanwhile a
    // 2-second token expires (past the 10 s leeway).
    let stale = ci.token("short-lived");
    let k3 = new_key(keys.path(), "short");
    let (status, answer) = bind(
        &gw,
        &ci.token("deploy-main"),
        &json!({"public_key": public_key(&k3), "ttl_seconds": 4}),
    );
    assert_eq!(status, 201, "{answer}");
    let mut held = hold_on(gw.ssh_port, &k3, "deploy@prod");
    assert_eq!(
        held.wait_exit(Duration::from_secs(30)),
        Some(255),
        "{}",
        held.output()
    );
    assert!(
        held.output().contains("binding expired"),
        "{}",
        held.output()
    );
    std::thread::sleep(Duration::from_secs(9));
    let (status, answer) = bind(&gw, &stale, &json!({"public_key": public_key(&k2)}));
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("expired"),
        "{answer}"
    );

    // Audited, and no token is ever in the log.
    let logs = gw.tether.logs();
    assert!(logs.contains("\"workload_binding_created\""), "{logs}");
    assert!(logs.contains("\"workload_binding_refused\""), "{logs}");
    for t in [&token, &fresh, &stale] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token was logged");
    }
}

/// `curl` from source address `from` (another loopback address) with no token:
/// the HTTP status.
fn post_from(gw: &Gateway, from: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "15",
            "--interface",
            from,
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            "{}",
            &format!("{}{PATH}", gw.base()),
        ])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A workload binding is on the operator console under the workload's identity;
/// an administrator revokes it there and the job's held connection is cut. Then
/// one address sending more than 20 requests a minute gets 429 — even with a
/// good token, which binds nothing — while another address is still answered.
#[test]
fn the_console_shows_and_revokes_a_workload_binding_and_one_address_is_rate_limited() {
    if !components_present()
        || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists())
        || !require("curl", Path::new("/usr/bin/curl").exists())
    {
        return;
    }
    ensure_user("deploy");
    let keys = key_dir();
    let (_sshd, ci, gw) = rig_with(
        keys.path(),
        "administrators:
  - allow:
      or:
        - groups:
            has: tether-admins
",
    );
    gw.idp.set_groups("carol", &["tether-admins"]);
    let k = new_key(keys.path(), "job");
    let (status, answer) = bind(
        &gw,
        &ci.token("deploy-main"),
        &json!({"public_key": public_key(&k), "ttl_seconds": 600}),
    );
    assert_eq!(status, 201, "{answer}\n{}", gw.tether.logs());
    let identity = format!("workload:{}#deploy-main", ci.issuer);
    let fp = fingerprint(&k);
    let mut held = hold_on(gw.ssh_port, &k, "deploy@prod");
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .tether
            .logs()
            .contains("\"event\":\"ssh_authenticated\"")),
        "{}\n{}",
        held.output(),
        gw.tether.logs()
    );

    let carol = BrowserProfile::new("workload_console_carol");
    carol
        .run(json!([
            {"goto": format!("{}/.tether/console", gw.base())},
            {"login": {"user": "carol", "password": "carol-password"}},
            {"expectText": "Operator console"},
            {"expectText": identity},
            {"expectText": fp},
            {"screenshot": "workload-binding-on-console"},
            {"click": format!("[id=\"revoke-client-{fp}\"]")},
            {"expectText": "Operator console"},
            {"expectNoText": fp},
            {"screenshot": "workload-binding-revoked"},
        ]))
        .assert_ok();
    assert_eq!(
        held.wait_exit(Duration::from_secs(15)),
        Some(255),
        "{}\n{}",
        held.output(),
        gw.tether.logs()
    );
    assert!(
        held.output().contains("access revoked"),
        "the job is told why: {}",
        held.output()
    );
    let (status, _, _) = gw.ssh_batch(&k, "deploy@prod", &["id", "-un"]);
    assert_ne!(status, Some(0), "the revoked key still admitted");
    let logs = gw.tether.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("\"event\":\"binding_revoked\"")
                && l.contains(&identity)
                && l.contains("carol@example.com")),
        "the revoke is audited with the workload and the admin: {logs}"
    );

    // Rate limit: fixed one-minute windows, so start clear of a minute boundary.
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if into_minute > 40 {
        std::thread::sleep(Duration::from_secs(62 - into_minute));
    }
    let statuses: Vec<u16> = (0..21).map(|_| post_from(&gw, "127.0.0.7")).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        20,
        "20 answered: {statuses:?}"
    );
    assert_eq!(statuses[20], 429, "the 21st is shed: {statuses:?}");
    assert_eq!(
        post_from(&gw, "127.0.0.8"),
        401,
        "another address is still answered"
    );
    let k2 = new_key(keys.path(), "late");
    let (status, answer) = bind(
        &gw,
        &ci.token("deploy-main"),
        &json!({"public_key": public_key(&k2)}),
    );
    // The test's own address (127.0.0.1) is under its limit.
    assert_eq!(status, 201, "{answer}");
    let late = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--interface",
            "127.0.0.7",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {}", ci.token("deploy-main")),
            "-H",
            "Content-Type: application/json",
            "--data",
            &json!({"public_key": public_key(&new_key(keys.path(), "shed"))}).to_string(),
            &format!("{}{PATH}", gw.base()),
        ])
        .output()
        .unwrap();
    let late = String::from_utf8_lossy(&late.stdout).to_string();
    assert!(
        late.ends_with("429"),
        "a good token from a shed address: {late}"
    );
    assert!(late.contains("rate_limited"), "{late}");
    assert!(
        gw.tether
            .logs()
            .contains("too many requests from this address"),
        "{}",
        gw.tether.logs()
    );
    drop(held);
}
