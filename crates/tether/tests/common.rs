//! Shared set-up for tether's end-to-end tests: the real binary, the real IdP
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! (npm oidc-provider), real OpenSSH and headless Chromium.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_testkit::*;

pub const CLIENT_ID: &str = "tether-e2e";
pub const CLIENT_SECRET: &str = "tether-e2e-secret";

/// Fails in CI, skips on a laptop, when a component is missing.
pub fn components_present() -> bool {
    require("/usr/bin/ssh", Path::new("/usr/bin/ssh").exists())
        && require("/usr/bin/chromium", Path::new("/usr/bin/chromium").exists())
        && require("node", have_program("node"))
        && require("tether binary", tether_bin().exists())
}

/// A running gateway wired to a running IdP.
pub struct Gateway {
    pub tether: TetherProcess,
    pub idp: Idp,
    pub http_port: u16,
    pub ssh_port: u16,
}

/// Config text for a gateway on the given ports; `extra` is appended verbatim.
pub fn config_yaml(http_port: u16, ssh_port: u16, issuer: &str, extra: &str) -> String {
    format!(
        "address: 127.0.0.1:{http_port}
insecure_server: true
authenticate_service_url: http://127.0.0.1:{http_port}
idp_provider: oidc
idp_provider_url: {issuer}
idp_client_id: {CLIENT_ID}
idp_client_secret: {CLIENT_SECRET}
ssh_address: 127.0.0.1:{ssh_port}
{extra}"
    )
}

impl Gateway {
    /// Starts the IdP and tether with `extra` config lines.
    pub fn start(extra: &str) -> Gateway {
        let http_port = free_port();
        let ssh_port = free_port();
        let idp = Idp::start(
            CLIENT_ID,
            CLIENT_SECRET,
            &format!("http://127.0.0.1:{http_port}/oauth2/callback"),
        );
        let tether =
            TetherProcess::start(&config_yaml(http_port, ssh_port, &idp.issuer, extra), &[]);
        Gateway {
            tether,
            idp,
            http_port,
            ssh_port,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `ssh -p PORT -i KEY user@127.0.0.1 ARGS...` under a terminal.
    pub fn ssh(&self, key: &Path, user: &str, args: &[&str]) -> SshClient {
        let port = self.ssh_port.to_string();
        let target = format!("{user}@127.0.0.1");
        let mut all: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
        all.extend(["-p", &port, "-i", key.to_str().unwrap(), &target]);
        all.extend(args);
        SshClient::spawn(&all)
    }

    /// The same without a terminal and with `BatchMode=yes`.
    pub fn ssh_batch(
        &self,
        key: &Path,
        user: &str,
        args: &[&str],
    ) -> (Option<i32>, String, String) {
        let port = self.ssh_port.to_string();
        let target = format!("{user}@127.0.0.1");
        let mut all: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
        all.extend([
            "-o",
            "BatchMode=yes",
            "-p",
            &port,
            "-i",
            key.to_str().unwrap(),
            &target,
        ]);
        all.extend(args);
        run_ssh(&all, Duration::from_secs(30))
    }
}

/// `ssh -N` as `user` on `ssh_port` with a bound key (`BatchMode=yes`, no
/// terminal): holds a connection open until it is ended.
pub fn hold_on(ssh_port: u16, key: &Path, user: &str) -> SshClient {
    let port = ssh_port.to_string();
    let target = format!("{user}@127.0.0.1");
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-o",
        "BatchMode=yes",
        "-N",
        "-p",
        &port,
        "-i",
        key.to_str().unwrap(),
        &target,
    ]);
    SshClient::spawn_piped(&args)
}

/// A directory for client keys.
pub fn key_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn new_key(dir: &Path, name: &str) -> PathBuf {
    gen_client_key(dir, name)
}

/// Waits for the sign-in URL the gateway prints.
pub fn sign_in_url(client: &SshClient) -> String {
    client
        .wait_for_url(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no sign-in URL printed; output:\n{}", client.output()))
}

/// The bindings page's row for the key with fingerprint `fp` (a CSS selector).
pub fn row(fp: &str) -> String {
    format!("tr[data-binding-id=\"sshkey-{fp}\"]")
}
