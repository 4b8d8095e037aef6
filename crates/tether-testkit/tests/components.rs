//! The testkit against the real components: OpenSSH sshd and client, the Node IdP and
//! chromium. Slow (seconds each); they skip locally and fail under CI when a component
//! is missing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;
use tether_testkit::*;

fn have_openssh() -> bool {
    require("openssh-server", Path::new(SSHD).is_file())
        && require("openssh-client", Path::new(SSH).is_file())
        && require("script (util-linux)", have_program("script"))
}

fn have_browser() -> bool {
    require("node", have_program("node")) && require("chromium", have_program("chromium"))
}

#[test]
fn sshd_refuses_plain_keys_and_accepts_ca_certificates() {
    if !have_openssh() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca = gen_client_key(tmp.path(), "ca");
    let key = gen_client_key(tmp.path(), "id_user");
    let sshd = Sshd::start(&tmp.path().join("ca.pub"));
    assert!(sshd.host_pub_key().starts_with("ssh-ed25519 "));
    assert!(sshd
        .known_hosts_line()
        .starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)));
    let port = sshd.port.to_string();
    let key_s = key.to_str().unwrap();

    // No certificate: publickey refused.
    let (status, _out, err) = run_ssh(
        &[
            "-o",
            "BatchMode=yes",
            "-i",
            key_s,
            "-p",
            &port,
            "root@127.0.0.1",
            "true",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status, Some(255), "{err}");
    assert!(err.contains("Permission denied (publickey)"), "{err}");

    // A CA-signed certificate for a real user: accepted, and the log names the key id.
    ensure_user("tether-kit");
    sign_user_cert(
        &ca,
        &tmp.path().join("id_user.pub"),
        "alice@example.com",
        &["tether-kit"],
    );
    let (status, out, err) = run_ssh(
        &[
            "-o",
            "BatchMode=yes",
            "-i",
            key_s,
            "-p",
            &port,
            "tether-kit@127.0.0.1",
            "echo",
            "hi-from-upstream",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status, Some(0), "{err}\n{}", sshd.log());
    assert_eq!(out.trim(), "hi-from-upstream");
    assert!(
        wait_until(Duration::from_secs(5), || sshd
            .log()
            .contains("Accepted certificate ID \"alice@example.com\"")),
        "{}",
        sshd.log()
    );

    // Interactive shell under a pty.
    let mut client = SshClient::spawn(&["-tt", "-i", key_s, "-p", &port, "tether-kit@127.0.0.1"]);
    client.send("echo marker-$((6*7))\n");
    assert!(
        client.wait_for("marker-42", Duration::from_secs(20)),
        "{}",
        client.output()
    );
    client.send("exit 3\n");
    assert_eq!(
        client.wait_exit(Duration::from_secs(20)),
        Some(3),
        "{}",
        client.output()
    );
}

#[test]
fn piped_ssh_client_sees_the_refusal_on_stderr() {
    if !have_openssh() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    gen_client_key(tmp.path(), "ca");
    let key = gen_client_key(tmp.path(), "id_user");
    let sshd = Sshd::start(&tmp.path().join("ca.pub"));
    let mut client = SshClient::spawn_piped(&[
        "-o",
        "BatchMode=yes",
        "-i",
        key.to_str().unwrap(),
        "-p",
        &sshd.port.to_string(),
        "root@127.0.0.1",
    ]);
    assert!(client.wait_for("Permission denied", Duration::from_secs(20)));
    assert_eq!(client.wait_exit(Duration::from_secs(10)), Some(255));
    assert!(client.stderr().contains("Permission denied (publickey)"));
    assert_eq!(client.stdout(), "");
}

/// A stand-in relying party callback: answers every request with 200 "callback ok".
fn callback_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.read(&mut buf);
            let body = "<html><body><p>callback ok</p></body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn auth_url(issuer: &str, redirect: &str) -> String {
    // PKCE S256 of the RFC 7636 example verifier.
    format!(
        "{issuer}/auth?client_id=tether&response_type=code&scope=openid%20profile%20email\
         &redirect_uri={}&state=st&nonce=no\
         &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        redirect.replace(':', "%3A").replace('/', "%2F")
    )
}

#[test]
fn browser_signs_in_at_the_idp_and_keeps_its_cookies() {
    if !have_browser() {
        return;
    }
    let cb_port = callback_server();
    let redirect = format!("http://127.0.0.1:{cb_port}/oauth2/callback");
    let idp = Idp::start("tether", "tether-secret", &redirect);
    let url = auth_url(&idp.issuer, &redirect);
    let profile = BrowserProfile::new("testkit_browser_idp");

    let r = profile.run(json!([
        {"goto": url},
        {"expectText": "Test identity provider"},
        {"screenshot": "idp-login"},
        {"text": {"name": "heading", "selector": "h1"}},
        {"login": {"user": "alice", "password": "alice-password"}},
        {"expectUrl": "code="},
        {"expectText": "callback ok"},
        {"expectStatus": 200},
        {"post": {"url": format!("http://127.0.0.1:{cb_port}/post"), "form": {"a": "b"}, "expect": 200}},
    ]));
    r.assert_ok();
    assert_eq!(r.text("heading"), "Test identity provider");
    assert_eq!(r.statuses, vec![200]);
    assert!(profile.screenshot_dir.join("idp-login.png").is_file());
    assert!(idp.log().contains("alice signed in"), "{}", idp.log());

    // Same profile: the IdP session cookie persisted, so no login form this time.
    let r = profile.run(json!([
        {"goto": url},
        {"login": {"user": "alice", "password": "alice-password"}},
        {"expectUrl": "code="},
    ]));
    r.assert_ok();

    // A failing step reports its index and leaves a screenshot.
    let r = profile.run(json!([
        {"goto": url},
        {"expectStatus": 409},
    ]));
    assert!(!r.ok);
    assert_eq!(r.failure.as_ref().map(|f| f.0), Some(1), "{r:?}");
    assert!(profile.screenshot_dir.join("fail-1.png").is_file());
}
