//! HTTPS on `address` (SPEC §2): with `certificate_file` and `certificate_key_file`
//! the web app speaks TLS (rustls) with that certificate and nothing else; without
//! them and without `insecure_server: true`, `serve` and `check` refuse to start
//! with one line; a missing certificate file is named.
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
use tether_testkit::*;

/// A self-signed certificate for 127.0.0.1 made by `openssl`: (cert, key) paths.
fn self_signed(dir: &Path) -> (String, String) {
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
        // A server certificate, not a CA (rustls refuses a CA as the end entity).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req failed");
    (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    )
}

/// `config_yaml` with TLS on `address` instead of `insecure_server: true`.
fn tls_yaml(http: u16, ssh: u16, tls: &str) -> String {
    config_yaml(http, ssh, "http://127.0.0.1:9/", "")
        .replace("insecure_server: true\n", tls)
        .replace(
            "authenticate_service_url: http://",
            "authenticate_service_url: https://",
        )
}

fn openssl_present() -> bool {
    require(
        "openssl",
        Command::new("openssl").arg("version").output().is_ok(),
    )
}

#[test]
fn certificate_file_serves_https_with_that_certificate() {
    if !require("tether binary", tether_bin().exists()) || !openssl_present() {
        return;
    }
    let dir = private_tempdir("tether-e2e-");
    let (cert, key) = self_signed(dir.path());
    let (http, ssh) = (free_port(), free_port());
    let yaml = tls_yaml(
        http,
        ssh,
        &format!("certificate_file: {cert}\ncertificate_key_file: {key}\n"),
    );
    let gw = TetherProcess::start(&yaml, &[]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pem = std::fs::read(&cert).unwrap();
    let (status, body, untrusted, plain) = rt.block_on(async {
        let trusting = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let r = trusting
            .get(format!("https://127.0.0.1:{http}/ping"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HTTPS request failed: {e:?}\n{}", gw.logs()));
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        // Without the certificate trusted, the handshake is refused by the client;
        // and plain HTTP on the port gets no HTTP answer.
        let default = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let untrusted = default
            .get(format!("https://127.0.0.1:{http}/ping"))
            .send()
            .await
            .is_err();
        let plain = default
            .get(format!("http://127.0.0.1:{http}/ping"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        (status, body, untrusted, plain)
    });
    assert_eq!(status, 200, "{body}");
    assert!(untrusted, "an untrusted certificate was accepted");
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|s| *s != 200),
        "plain HTTP answered: {plain:?}"
    );
}

#[test]
fn https_without_a_certificate_is_refused_with_one_line() {
    if !require("tether binary", tether_bin().exists()) || !openssl_present() {
        return;
    }
    let dir = private_tempdir("tether-e2e-");
    let (http, ssh) = (free_port(), free_port());
    let missing = dir.path().join("nope.pem");
    let cases = [
        (
            String::new(),
            "HTTPS needs certificate_file and certificate_key_file".to_string(),
        ),
        (
            format!(
                "certificate_file: {0}\ncertificate_key_file: {0}\n",
                missing.display()
            ),
            format!("certificate_file {}", missing.display()),
        ),
    ];
    for (tls, expected) in cases {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, tls_yaml(http, ssh, &tls)).unwrap();
        for command in ["check", "serve"] {
            let mut cmd = Command::new(tether_bin());
            cmd.args([command, "-c", path.to_str().unwrap()])
                .env("TETHER_DATA_DIR", dir.path());
            let out = run_command(cmd, None, Duration::from_secs(30));
            assert_eq!(out.status, Some(2), "{command} {tls:?}: {}", out.stderr);
            let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.contains("INFO")).collect();
            assert_eq!(lines.len(), 1, "{command} {tls:?}: {}", out.stderr);
            assert!(lines[0].contains(&expected), "{command}: {}", lines[0]);
        }
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", http)).is_ok(),
            "nothing listens on the web port"
        );
    }
}
