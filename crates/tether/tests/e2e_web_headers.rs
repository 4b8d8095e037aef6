//! The web app's hardening headers and the dev IdP, against the real binary (issue
//! 12): a CSP with no inline script or style and `form-action 'self'` under which
//! every page still works in headless Chromium (sign-in at the dev IdP, Verify with
//! its countdown, Authorize, bindings, who am I, sign-out: any CSP violation the
//! browser reports fails the test); HSTS and the `__Host-` cookie prefix only over
//! HTTPS; the dev IdP served by `serve` only with `dev_idp.enabled: true` (and then
//! a warning), its password form rate-limited per source; and a newline or ANSI
//! escape a client or the IdP puts into a logged value never forges a log line.
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
use serde_json::json;
use tether_testkit::*;

const DEV_PASSWORD: &str = "dev-pw";

/// `serve` with the dev IdP explicitly enabled as the IdP.
fn dev_yaml(http: u16, ssh: u16, dev_idp: &str) -> String {
    format!(
        "address: 127.0.0.1:{http}
insecure_server: true
authenticate_service_url: http://127.0.0.1:{http}
idp_provider: oidc
idp_provider_url: http://127.0.0.1:{http}/dev-idp
idp_client_id: {CLIENT_ID}
idp_client_secret: {CLIENT_SECRET}
ssh_address: 127.0.0.1:{ssh}
dev_idp:
{dev_idp}  users:
    - username: alice
      password: {DEV_PASSWORD}
      email: alice@example.com
      name: Alice
"
    )
}

fn start_dev() -> TetherProcess {
    TetherProcess::start(
        &dev_yaml(free_port(), free_port(), "  enabled: true\n"),
        &[],
    )
}

fn csp_ok(csp: &str) {
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    for d in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(d), "{d} missing: {csp}");
    }
}

#[test]
fn every_page_works_in_chromium_under_the_csp() {
    if !components_present() {
        return;
    }
    let t = start_dev();
    assert!(
        t.logs().contains("DEVELOPMENT IDENTITY PROVIDER ENABLED"),
        "serve says so loudly: {}",
        t.logs()
    );
    let base = t.base_url();
    let keys = key_dir();
    let key = new_key(keys.path(), "id");
    let port = t.ssh_port().to_string();
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-p",
        &port,
        "-i",
        key.to_str().unwrap(),
        "alice@127.0.0.1",
        "whoami",
    ]);
    let mut client = SshClient::spawn(&args);
    let url = sign_in_url(&client);
    let flow = Browser::run(json!({
        "screenshotDir": screenshot_dir("every_page_works_in_chromium_under_the_csp").to_string_lossy(),
        "steps": [
            {"goto": url},
            {"expectText": "development only"},
            {"fill": {"selector": "#username", "value": "alice"}},
            {"fill": {"selector": "#password", "value": DEV_PASSWORD}},
            {"click": "#login"},
            {"expectText": "Authorize SSH sign-in?"},
            {"wait": 1200},
            {"text": {"name": "countdown", "selector": "#countdown"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
            {"goto": format!("{base}/.pomerium/session_binding_info")},
            {"expectText": "Your SSH bindings"},
            {"goto": format!("{base}/.pomerium/")},
            {"expectText": "Who am I"},
            {"goto": format!("{base}/.pomerium/sign_out")},
            {"expectText": "Signing out ends this web session"},
            {"click": "#sign-out"},
            {"expectText": "Signed out"},
        ]
    }));
    flow.assert_ok();
    assert!(
        flow.text("countdown").starts_with("expires in "),
        "{:?}",
        flow.text("countdown")
    );
    for needle in [
        "Content Security Policy",
        "Content-Security-Policy",
        "Refused to",
    ] {
        assert!(
            !flow.stderr.contains(needle),
            "the browser reported a CSP violation:\n{}",
            flow.stderr
        );
    }
    assert!(
        client.wait_for("alice@example.com", Duration::from_secs(20)),
        "{}",
        client.output()
    );
    client.wait_exit(Duration::from_secs(10));
}

/// `state` from the IdP redirect and the login-state cookie `name=value`.
fn start_login(base: &str) -> (String, String) {
    let res = http_get(&format!("{base}/.pomerium/"), Duration::from_secs(10)).unwrap();
    assert_eq!(res.status, 302, "{res:?}");
    let loc = res.header("location").unwrap().to_string();
    let state = loc
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .unwrap()
        .to_string();
    let cookie = res
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("_pomerium_login="))
        .map(|(_, v)| v.split(';').next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no login cookie: {res:?}"));
    (state, cookie)
}

fn authorize_form(base: &str, username: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope=openid&state=s&nonce=n\
         &code_challenge=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&code_challenge_method=S256\
         &username={}&password=wrong",
        enc(&format!("{base}/oauth2/callback")),
        enc(username)
    )
}

#[test]
fn headers_dev_idp_gate_and_rate_limit_and_no_forged_log_lines() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let t = start_dev();
    let base = t.base_url();

    // Plain HTTP: the CSP, no HSTS, Pomerium's cookie names unchanged.
    let res = http_get(&format!("{base}/ping"), Duration::from_secs(5)).unwrap();
    csp_ok(res.header("content-security-policy").unwrap());
    assert!(res.header("strict-transport-security").is_none());
    let (state, cookie) = start_login(&base);

    // Log injection from outside: the IdP's error, and a dev IdP username.
    let res = http_request(
        "GET",
        &format!(
            "{base}/oauth2/callback?state={state}&error=x%0AINFO%20forged%3A%20admin%20signed%20in\
             &error_description=%1b%5b31mred%0d%0aWARN%20forged2"
        ),
        &[("Cookie", &cookie)],
        None,
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(res.status >= 400, "{res:?}");
    let form = authorize_form(&base, "eve\nINFO forged3: root signed in\x1b[2J");
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    let post = || {
        http_request(
            "POST",
            &format!("{base}/dev-idp/authorize"),
            &headers,
            Some(form.as_bytes()),
            Duration::from_secs(10),
        )
        .unwrap()
    };
    let first = post();
    assert_eq!(first.status, 401, "wrong password: {first:?}");
    assert!(t.wait_for_log("wrong username or password", Duration::from_secs(5)));
    assert!(t.wait_for_log("sign-in failed", Duration::from_secs(5)));
    let logs = t.logs();
    assert!(!logs.contains('\x1b'), "raw ESC in the log:\n{logs}");
    assert!(!logs.contains('\r'), "raw CR in the log:\n{logs}");
    for forged in ["INFO forged", "WARN forged2", "INFO forged3"] {
        assert!(
            !logs.lines().any(|l| l.trim_start().starts_with(forged)),
            "forged line {forged:?}:\n{logs}"
        );
    }
    assert!(logs.contains("x\\nINFO forged"), "kept, escaped:\n{logs}");
    assert!(
        logs.contains("eve\\nINFO forged3"),
        "kept, escaped:\n{logs}"
    );

    // The password form: a burst per source, then 429 with Retry-After.
    let mut limited = None;
    for _ in 0..20 {
        let r = post();
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 401);
    }
    let limited = limited.expect("the dev IdP's password form is rate-limited");
    assert!(limited.header("retry-after").is_some());
    assert!(limited.body.contains("Too many attempts"));
    // Other endpoints are not throttled.
    assert_eq!(
        http_get(&format!("{base}/ping"), Duration::from_secs(5))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn dev_idp_users_without_enabled_are_refused() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let dir = private_tempdir("tether-e2e-");
    let (http, ssh) = (free_port(), free_port());
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, dev_yaml(http, ssh, "")).unwrap();
    for cmd in ["check", "serve"] {
        let mut c = Command::new(tether_bin());
        c.args([cmd, "-c", cfg.to_str().unwrap()])
            .env("TETHER_DATA_DIR", dir.path().join("data"));
        let out = run_command(c, None, Duration::from_secs(30));
        assert_eq!(out.status, Some(2), "{cmd}: {}", out.stderr);
        assert!(
            out.stderr.contains("dev_idp.enabled: true"),
            "{}",
            out.stderr
        );
        assert!(std::net::TcpListener::bind(("127.0.0.1", http)).is_ok());
    }
}

/// A self-signed certificate for 127.0.0.1 made by `openssl`: (cert, key) paths.
fn self_signed(dir: &Path) -> Option<(String, String)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    st.success().then(|| {
        (
            cert.to_str().unwrap().to_string(),
            key.to_str().unwrap().to_string(),
        )
    })
}

#[test]
fn https_adds_hsts_and_the_host_cookie_prefix() {
    if !require("tether binary", tether_bin().exists())
        || !require("curl", have_program("curl"))
        || !require("openssl", have_program("openssl"))
    {
        return;
    }
    let dir = private_tempdir("tether-e2e-");
    let (cert, key) = self_signed(dir.path()).expect("openssl req");
    let (http, ssh) = (free_port(), free_port());
    let yaml = config_yaml(http, ssh, "http://127.0.0.1:9/", "")
        .replace(
            "insecure_server: true\n",
            &format!("certificate_file: {cert}\ncertificate_key_file: {key}\n"),
        )
        .replace(
            "authenticate_service_url: http://",
            "authenticate_service_url: https://",
        );
    let _t = TetherProcess::start(&yaml, &[]);
    let curl = |args: &[&str]| {
        let mut c = Command::new("curl");
        c.args(["-ksS", "-D", "-", "-o", "/dev/null"]).args(args);
        let out = run_command(c, None, Duration::from_secs(20));
        assert!(out.success(), "{}", out.stderr);
        out.stdout.to_ascii_lowercase()
    };
    let headers = curl(&[&format!("https://127.0.0.1:{http}/ping")]);
    assert!(
        headers.contains("strict-transport-security: max-age=31536000"),
        "{headers}"
    );
    assert!(
        headers.contains("content-security-policy: default-src 'none'"),
        "{headers}"
    );
    // Signing out without a session clears the session cookie: its name over HTTPS.
    let headers = curl(&[
        "-X",
        "POST",
        &format!("https://127.0.0.1:{http}/.pomerium/sign_out"),
    ]);
    let set = headers
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no set-cookie: {headers}"));
    assert!(set.starts_with("set-cookie: __host-_pomerium=;"), "{set}");
    assert!(
        set.contains("secure") && set.contains("path=/") && !set.contains("domain"),
        "{set}"
    );
}
