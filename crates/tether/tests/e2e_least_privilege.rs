//! Least privilege upstream (issue 12 item 6; SPEC §2 route keys, §8), through the
//! real binary: the real OpenSSH client → tether → a real OpenSSH sshd trusting
//! tether's user CA, signed in at the real IdP in headless Chromium.
//!
//! - `ssh_allowed_logins` limits the certificate's principal whatever the policy
//!   says (a login outside the list is refused with one line; without the key,
//!   `root` is refused);
//! - `ssh_permit` decides the upstream certificate's `permit-*` extensions (read
//!   upstream: sshd's `ExposeAuthInfo` hands the session the very certificate
//!   tether logged in with, and `ssh-keygen -L` prints it) and what tether relays:
//!   `ssh -A` gets no agent upstream, `-L`/`-W`/`-R` are refused, `ssh -tt` gets no
//!   terminal, `-X` is refused — each with a `permit_refused` audit line — while a
//!   route that permits them has them all.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use tether_testkit::*;

const T: Duration = Duration::from_secs(30);

/// Prints, upstream, the certificate the session logged in with.
const SHOW_CERT: &str =
    "f=$(mktemp); cut -d' ' -f2- \"$SSH_USER_AUTH\" > \"$f\"; ssh-keygen -L -f \"$f\"; rm -f \"$f\"";

struct Setup {
    gw: Gateway,
    sshd: Sshd,
    keys: tempfile::TempDir,
}

/// `locked`: anyone signed in, as `deploy` only, defaults otherwise (pty only).
/// `open`: as `alice`, everything permitted. `nopty`: as `alice`, no terminal.
/// `plain`: no `ssh_allowed_logins` (any login but root), no `ssh_permit`.
fn setup() -> Setup {
    ensure_user("alice");
    ensure_user("deploy");
    let keys = key_dir();
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start_with(&keys.path().join("tether_ca.pub"), &["ExposeAuthInfo yes"]);
    let to = sshd.url();
    let gw = Gateway::start(&format!(
        "ssh_user_ca_key_file: {ca}
ssh_sign_in_timeout: 2m
routes:
  - from: ssh://locked
    to: {to}
    allow_any_authenticated_user: true
    ssh_allowed_logins: [deploy]
  - from: ssh://open
    to: {to}
    allow_any_authenticated_user: true
    ssh_allowed_logins: [alice]
    ssh_permit:
      pty: true
      agent_forwarding: true
      port_forwarding: true
      x11_forwarding: true
  - from: ssh://nopty
    to: {to}
    allow_any_authenticated_user: true
    ssh_allowed_logins: [alice]
    ssh_permit: {{pty: false}}
  - from: ssh://plain
    to: {to}
    allow_any_authenticated_user: true
",
        ca = ca.display()
    ));
    Setup { gw, sshd, keys }
}

/// Signs `key` in as alice on a `alice@open` connection (under a terminal).
fn sign_in(gw: &Gateway, key: &Path) {
    let mut ssh = gw.ssh(key, "alice@open", &["true"]);
    let url = sign_in_url(&ssh);
    BrowserProfile::new("least_privilege")
        .run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
}

/// `ssh` with the bound key, `BatchMode=yes`, no terminal, and `env` set; without
/// the testkit's `IdentityAgent=none`, so `-A` can forward an agent.
fn ssh_with(gw: &Gateway, key: &Path, env: &[(&str, &str)], args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(SSH);
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-p",
        &gw.ssh_port.to_string(),
        "-i",
        key.to_str().unwrap(),
    ])
    .args(args)
    .env_remove("SSH_AUTH_SOCK")
    .env_remove("DISPLAY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(cmd, None, T)
}

fn ssh(gw: &Gateway, key: &Path, args: &[&str]) -> CmdOutput {
    ssh_with(gw, key, &[], args)
}

/// The `permit-*` extensions of the certificate tether logged in to `wire_user`'s
/// route with, as the upstream session sees it.
fn upstream_extensions(gw: &Gateway, key: &Path, wire_user: &str) -> Vec<String> {
    let target = format!("{wire_user}@127.0.0.1");
    let out = ssh(gw, key, &[&target, SHOW_CERT]);
    assert!(out.success(), "{wire_user}: {out:?}");
    assert!(
        out.stdout.contains("user certificate"),
        "{wire_user}: not a certificate login: {}",
        out.stdout
    );
    let mut lines = out
        .stdout
        .lines()
        .skip_while(|l| !l.trim().starts_with("Extensions:"));
    let header = lines.next().unwrap_or_default();
    if header.contains("(none)") {
        return Vec::new();
    }
    let mut names: Vec<String> = lines
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.contains(':'))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// A local `ssh-agent` holding one key; killed on drop.
struct Agent {
    child: Child,
    sock: String,
    fingerprint: String,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let sock = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        assert!(
            wait_until(Duration::from_secs(10), || sock.exists()),
            "ssh-agent did not create its socket"
        );
        let key = gen_client_key(dir, "agent_key");
        let mut add = Command::new("ssh-add");
        add.arg(&key).env("SSH_AUTH_SOCK", &sock);
        let out = run_command(add, None, T);
        assert!(out.success(), "ssh-add: {out:?}");
        Agent {
            child,
            sock: sock.to_string_lossy().into_owned(),
            fingerprint: fingerprint(&key),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The audit events tether logged so far with `"event":"NAME"`.
fn audit_events(gw: &Gateway, name: &str) -> Vec<serde_json::Value> {
    let needle = format!("{{\"event\":\"{name}\"");
    gw.tether
        .logs()
        .lines()
        .filter_map(|l| l.find(&needle).map(|i| &l[i..]))
        .filter_map(|json| serde_json::from_str(json.trim()).ok())
        .collect()
}

#[test]
fn logins_outside_the_route_list_are_refused() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new(SSHD).exists()) {
        return;
    }
    let s = setup();
    let key = new_key(s.keys.path(), "k");
    sign_in(&s.gw, &key);

    // A listed login goes through, and lands as itself.
    let out = ssh(&s.gw, &key, &["deploy@locked@127.0.0.1", "id", "-un"]);
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "deploy");

    // Any signed-in user is admitted by the policy, but not as root, nor as a
    // login the route does not list: one line, and nothing upstream.
    for login in ["root", "alice"] {
        let out = ssh(&s.gw, &key, &[&format!("{login}@locked@127.0.0.1"), "id"]);
        assert_eq!(out.status, Some(255), "{login}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "access denied: route \"locked\": login \"{login}\" is not allowed (allowed: deploy)"
            )),
            "{login}: {}",
            out.stderr
        );
    }
    // No ssh_allowed_logins: any login but root.
    let out = ssh(&s.gw, &key, &["alice@plain@127.0.0.1", "id", "-un"]);
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "alice");
    let out = ssh(&s.gw, &key, &["root@plain@127.0.0.1", "id"]);
    assert_eq!(out.status, Some(255), "{out:?}");
    assert!(
        out.stderr.contains(
            "access denied: route \"plain\": login \"root\" is not allowed \
             (the route does not list it in ssh_allowed_logins)"
        ),
        "{}",
        out.stderr
    );
    assert!(
        !s.sshd.log().contains("for root"),
        "root never reached the upstream: {}",
        s.sshd.log()
    );

    // Each refusal is a policy_denied audit event, from admission.
    let denied = audit_events(&s.gw, "policy_denied");
    for (route, login) in [("locked", "root"), ("locked", "alice"), ("plain", "root")] {
        assert!(
            denied
                .iter()
                .any(|e| e["route"] == route && e["login"] == login && e["via"] == "route"),
            "no policy_denied for {login}@{route}: {denied:?}"
        );
    }
}

#[test]
fn forwarding_and_the_certificate_follow_the_route() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new(SSHD).exists()) {
        return;
    }
    let s = setup();
    let key = new_key(s.keys.path(), "k");
    sign_in(&s.gw, &key);
    let gw = &s.gw;

    // The certificate carries exactly what each route permits.
    assert_eq!(
        upstream_extensions(gw, &key, "alice@open"),
        [
            "permit-X11-forwarding",
            "permit-agent-forwarding",
            "permit-port-forwarding",
            "permit-pty",
            "permit-user-rc"
        ]
    );
    assert_eq!(
        upstream_extensions(gw, &key, "deploy@locked"),
        ["permit-pty", "permit-user-rc"]
    );
    assert_eq!(
        upstream_extensions(gw, &key, "alice@nopty"),
        ["permit-user-rc"]
    );

    // Agent forwarding: the upstream sees the client's agent only where permitted.
    let agent = Agent::start(s.keys.path());
    let env = [("SSH_AUTH_SOCK", agent.sock.as_str())];
    let probe = "echo \"sock=${SSH_AUTH_SOCK:-unset}\"; ssh-add -l; echo \"rc=$?\"";
    let out = ssh_with(gw, &key, &env, &["-A", "alice@open@127.0.0.1", probe]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains(&agent.fingerprint), "{out:?}");
    assert!(out.stdout.contains("rc=0"), "{out:?}");
    let out = ssh_with(gw, &key, &env, &["-A", "deploy@locked@127.0.0.1", probe]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("sock=unset"), "{out:?}");
    assert!(!out.stdout.contains(&agent.fingerprint), "{out:?}");
    assert!(
        !out.stdout.contains("rc=0"),
        "ssh-add -l must fail: {out:?}"
    );

    // -W (direct-tcpip): refused with a reason where port forwarding is off.
    let stdio = format!("127.0.0.1:{}", s.sshd.port);
    let out = ssh(gw, &key, &["-W", &stdio, "alice@open@127.0.0.1"]);
    assert!(out.stdout.starts_with("SSH-2.0-OpenSSH"), "{out:?}");
    let out = ssh(gw, &key, &["-W", &stdio, "deploy@locked@127.0.0.1"]);
    assert!(!out.stdout.contains("SSH-2.0-"), "{out:?}");
    assert!(
        out.stderr.contains(
            "administratively prohibited: port forwarding is not permitted on route \"locked\""
        ),
        "{}",
        out.stderr
    );

    // -L: the local listener's connection is closed, the client is told why.
    let local = free_port();
    let spec = format!("127.0.0.1:{local}:127.0.0.1:{}", s.sshd.port);
    let port = gw.ssh_port.to_string();
    let mut forward = SshClient::spawn_piped(&[
        "-o",
        "BatchMode=yes",
        "-N",
        "-L",
        &spec,
        "-p",
        &port,
        "-i",
        key.to_str().unwrap(),
        "deploy@locked@127.0.0.1",
    ]);
    assert!(
        wait_for_port(local, T),
        "ssh -L is not listening: {}",
        forward.output()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", local)).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert!(got.is_empty(), "nothing may come through: {got:?}");
    assert!(
        forward.wait_for(
            "administratively prohibited: port forwarding is not permitted on route \"locked\"",
            T
        ),
        "{}",
        forward.output()
    );
    forward.kill();

    // -R (tcpip-forward): refused where off, allocated where on.
    let remote = |target: &str| {
        let args = ["-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"];
        ssh(
            gw,
            &key,
            &[&args[..], &[target, "echo", "forwarded"]].concat(),
        )
    };
    let out = remote("alice@open@127.0.0.1");
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "forwarded");
    let out = remote("deploy@locked@127.0.0.1");
    assert_ne!(out.status, Some(0), "{out:?}");
    assert!(!out.stdout.contains("forwarded"), "{out:?}");
    assert!(
        out.stderr.contains("remote port forwarding failed"),
        "{}",
        out.stderr
    );

    // pty: `ssh -tt` gets a terminal only where permitted. Where it is not, the
    // request is refused as sshd's `PermitTTY no` does: OpenSSH gives up on a
    // terminal it was told to insist on (`-t`), and goes on without one when it
    // only asked because it runs on a terminal.
    let out = ssh(gw, &key, &["-tt", "alice@open@127.0.0.1", "tty"]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("/dev/pts/"), "{out:?}");
    let out = ssh(gw, &key, &["-tt", "alice@nopty@127.0.0.1", "tty"]);
    assert_eq!(out.status, Some(255), "{out:?}");
    assert!(
        out.stderr.contains("PTY allocation request failed"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("/dev/pts/"), "{out:?}");
    let mut shell = gw.ssh(&key, "alice@nopty", &[]);
    assert!(
        shell.wait_for("PTY allocation request failed", T),
        "{}",
        shell.output()
    );
    shell.send("tty; exit\n");
    assert!(shell.wait_for("not a tty", T), "{}", shell.output());
    assert_eq!(shell.wait_exit(T), Some(1), "{}", shell.output());

    // X11: refused by tether where off.
    let out = ssh_with(
        gw,
        &key,
        &[("DISPLAY", "127.0.0.1:9")],
        &["-X", "deploy@locked@127.0.0.1", "echo", "ran"],
    );
    assert!(
        out.stderr.contains("X11 forwarding request failed"),
        "{out:?}"
    );

    // Every refusal above is a permit_refused audit event naming the switch.
    let refused = audit_events(gw, "permit_refused");
    for (route, request, permit) in [
        ("locked", "auth-agent-req", "agent_forwarding"),
        ("locked", "direct-tcpip", "port_forwarding"),
        ("locked", "tcpip-forward", "port_forwarding"),
        ("nopty", "pty-req", "pty"),
        ("locked", "x11-req", "x11_forwarding"),
    ] {
        assert!(
            refused
                .iter()
                .any(|e| e["route"] == route && e["request"] == request && e["permit"] == permit),
            "no permit_refused for {request} on {route}: {refused:?}"
        );
    }
    assert!(
        !refused.iter().any(|e| e["route"] == "open"),
        "nothing refused on the open route: {refused:?}"
    );
}
