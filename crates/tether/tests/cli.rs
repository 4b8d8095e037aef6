//! The binary's command line: config errors exit 2 before binding a port, `check`
//! redacts secrets, and `demo` completes the whole flow against its built-in IdP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;
use tether_testkit::*;

fn tether(args: &[&str], env: &[(&str, &str)]) -> CmdOutput {
    let mut cmd = Command::new(tether_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(cmd, None, Duration::from_secs(30))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn config_errors_exit_2_with_file_and_line_and_bind_nothing() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let dir = private_tempdir("tether-e2e-");
    let http = free_port();
    let ssh = free_port();
    let good = config_yaml(http, ssh, "http://127.0.0.1:9/", "");
    let cases = [
        ("ssh_adress: x\n", "unknown key ssh_adress"),
        ("runtime_flags:\n  ssh_routes_portal: perhaps\n", "expected true or false"),
        ("cookie_expire: 3 days\n", "invalid duration"),
        ("routes:\n  - from: ssh://a\n    to: ssh://b\n    policy:\n      - allow:\n          and:\n            - emial: x\n", "unknown criterion"),
    ];
    for (extra, expected) in cases {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, format!("{good}{extra}")).unwrap();
        let out = tether(
            &["serve", "-c", path.to_str().unwrap()],
            &[("TETHER_DATA_DIR", dir.path().to_str().unwrap())],
        );
        assert_eq!(out.status, Some(2), "{extra}: {}", out.stderr);
        let line = out.stderr.lines().next().unwrap_or("");
        assert!(line.starts_with(&format!("{}:", path.display())), "{line}");
        assert!(line.contains(expected), "{line}");
        assert!(port_is_free(http) && port_is_free(ssh), "no port bound");
    }
    // Missing required key: exit 2, names the key.
    let path = dir.path().join("missing.yaml");
    std::fs::write(&path, "idp_provider: oidc\n").unwrap();
    let out = tether(&["serve", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(out.status, Some(2));
    assert!(
        out.stderr
            .contains("missing required key authenticate_service_url"),
        "{}",
        out.stderr
    );
    // Unreadable file.
    let out = tether(&["serve", "-c", "/nonexistent/config.yaml"], &[]);
    assert_eq!(out.status, Some(2));
    assert!(out.stderr.contains("cannot read config"), "{}", out.stderr);
}

#[test]
fn too_open_key_file_is_refused() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let dir = private_tempdir("tether-e2e-");
    let key = gen_client_key(dir.path(), "hostkey");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (http, ssh) = (free_port(), free_port());
    let cfg = config_yaml(
        http,
        ssh,
        "http://127.0.0.1:9/",
        &format!("ssh_host_key_files: [{}]\n", key.display()),
    );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, cfg).unwrap();
    let out = tether(
        &["serve", "-c", path.to_str().unwrap()],
        &[("TETHER_DATA_DIR", dir.path().join("data").to_str().unwrap())],
    );
    assert_eq!(out.status, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("permissions are too open"),
        "{}",
        out.stderr
    );
    assert!(port_is_free(http) && port_is_free(ssh));
}

#[test]
fn check_prints_effective_config_with_secrets_redacted() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let dir = private_tempdir("tether-e2e-");
    let path = dir.path().join("config.yaml");
    let cfg = config_yaml(1, 2, "http://127.0.0.1:9/", "autocert: true\nroutes:\n  - from: ssh://prod\n    to: ssh://10.0.0.5\n    allow_any_authenticated_user: true\n");
    std::fs::write(&path, cfg).unwrap();
    let out = tether(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("ssh://prod -> 10.0.0.5:22"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(CLIENT_SECRET),
        "secret leaked: {}",
        out.stdout
    );
    assert!(out.stderr.contains("ignored: autocert"), "{}", out.stderr);
    let example = repo_root().join("config/example.yaml");
    let out = tether(&["check", "-c", example.to_str().unwrap()], &[]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
}

/// The README's first command: `tether demo`, then `ssh ... whoami`, sign in with
/// the built-in development IdP, Authorize, and whoami answers.
#[test]
fn demo_completes_the_flow_with_its_built_in_idp() {
    if !components_present() {
        return;
    }
    let dir = private_tempdir("tether-e2e-");
    let (http, ssh_port) = (free_port(), free_port());
    let http_addr = format!("127.0.0.1:{http}");
    let ssh_addr = format!("127.0.0.1:{ssh_port}");
    let data = dir.path().join("data");
    let mut child = Command::new(tether_bin())
        .args([
            "demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--address",
            &http_addr,
            "--ssh-address",
            &ssh_addr,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let banner = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut text = String::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if text.contains("Stop with Ctrl-C") {
                break;
            }
        }
        text
    });
    assert!(
        wait_for_port(ssh_port, Duration::from_secs(30)),
        "demo did not listen"
    );
    let banner = banner.join().unwrap();
    assert!(
        banner.contains(&format!("ssh -p {ssh_port} alice@localhost whoami")),
        "{banner}"
    );
    assert!(
        banner.contains("tether-demo"),
        "the banner gives the password: {banner}"
    );
    assert!(data.join("ssh_user_ca_key").exists() && data.join("tether.db").exists());

    let keys = key_dir();
    let key = new_key(keys.path(), "demo_key");
    let port = ssh_port.to_string();
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-p",
        &port,
        "-i",
        key.to_str().unwrap(),
        "alice@localhost",
        "whoami",
    ]);
    let mut ssh = SshClient::spawn(&args);
    let url = sign_in_url(&ssh);
    let browser = BrowserProfile::new("demo");
    browser
        .run(json!([
            {"goto": url},
            {"expectText": "development only"},
            {"fill": {"selector": "input[name=username]", "value": "alice"}},
            {"fill": {"selector": "input[name=password]", "value": "tether-demo"}},
            {"screenshot": "demo-idp-login"},
            {"click": "button[type=submit]"},
            {"expectText": "Authorize"},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    assert_eq!(
        ssh.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        ssh.output()
    );
    assert!(
        ssh.output().contains("alice@example.com"),
        "{}",
        ssh.output()
    );
}
