//! Shared set-up for tether's end-to-end tests: the real binary, the real IdP
//! (npm oidc-provider), real OpenSSH and headless Chromium.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
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

/// `<repo>/target/clients-venv/bin/<name>` (tests/clients/install.sh makes it).
pub fn venv_bin(name: &str) -> PathBuf {
    repo_root().join("target/clients-venv/bin").join(name)
}

/// Whether the clients venv has `program` (fails in CI when it does not).
pub fn venv_present(program: &str) -> bool {
    require(
        &format!("target/clients-venv/bin/{program} (run tests/clients/install.sh)"),
        venv_bin(program).is_file(),
    )
}

/// A directory for an Ansible run through the gateway: `inventory.ini` with one
/// host, `prod`, reached at the gateway's SSH port as `ansible_user` with `key`,
/// and an empty `ansible.cfg`. Upstream paths must be absolute: Ansible expands
/// `~` as `~<ansible_user>`, and no upstream user is called `alice@prod`.
pub struct AnsibleWork {
    pub dir: PathBuf,
    pub inventory: PathBuf,
    config: PathBuf,
}

impl AnsibleWork {
    pub fn new(
        dir: PathBuf,
        ssh_port: u16,
        ansible_user: &str,
        key: &Path,
        remote_tmp: &str,
    ) -> AnsibleWork {
        std::fs::create_dir_all(&dir).unwrap();
        let inventory = dir.join("inventory.ini");
        std::fs::write(
            &inventory,
            format!(
                "[gateway]\nprod ansible_host=127.0.0.1 ansible_port={ssh_port} \
                 ansible_user='{ansible_user}' ansible_ssh_private_key_file={key} \
                 ansible_python_interpreter=/usr/bin/python3 ansible_remote_tmp={remote_tmp}\n",
                key = key.display(),
            ),
        )
        .unwrap();
        let config = dir.join("ansible.cfg");
        std::fs::write(&config, "[defaults]\n").unwrap();
        AnsibleWork {
            dir,
            inventory,
            config,
        }
    }

    /// `program -i inventory -c connection` (from the venv) with a private
    /// home, no colour, no host-key prompt, and ssh options that read no user
    /// config, use only the inventory's key, never ask, and leave no
    /// ControlPersist master behind (every task its own connection).
    pub fn command(&self, program: &str, connection: &str) -> Command {
        let mut cmd = Command::new(venv_bin(program));
        cmd.arg("-i")
            .arg(&self.inventory)
            .args(["-c", connection])
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env("ANSIBLE_CONFIG", &self.config)
            .env("ANSIBLE_HOME", self.dir.join("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.join("ansible-tmp"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env(
                "ANSIBLE_SSH_ARGS",
                "-F /dev/null -o ControlMaster=no -o IdentitiesOnly=yes -o BatchMode=yes \
                 -o IdentityAgent=none -o UserKnownHostsFile=/dev/null",
            );
        cmd
    }
}

/// Signs `key` in as `user` through the browser profile; returns once bound.
pub fn bind_key(gw: &Gateway, key: &Path, user: &str, browser: &BrowserProfile, remember: bool) {
    let mut ssh = gw.ssh(key, user, &["whoami"]);
    let url = sign_in_url(&ssh);
    let mut steps = vec![
        json!({"goto": url}),
        json!({"login": {"user": user, "password": format!("{user}-password")}}),
    ];
    if remember {
        steps.push(json!({"check": "#remember"}));
    }
    steps.push(json!({"click": "#authorize"}));
    steps.push(json!({"expectText": "Sign in successful"}));
    browser.run(json!(steps)).assert_ok();
    assert_eq!(
        ssh.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        ssh.output()
    );
}

/// Two replicas on free ports behind one public sign-in address (A's, as a load
/// balancer's would be in production), sharing `shared` config lines (the store,
/// the cookie secret, routes, ...), with the test IdP.
pub struct Replicas {
    pub idp: Idp,
    pub a: TetherProcess,
    pub b: TetherProcess,
    pub http_a: u16,
    pub ssh_a: u16,
    pub http_b: u16,
    pub ssh_b: u16,
}

pub fn start_replicas(shared: &str) -> Replicas {
    let (http_a, ssh_a, http_b, ssh_b) = (free_port(), free_port(), free_port(), free_port());
    let idp = Idp::start(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("http://127.0.0.1:{http_a}/oauth2/callback"),
    );
    let yaml_a = config_yaml(http_a, ssh_a, &idp.issuer, shared);
    let yaml_b = config_yaml(http_b, ssh_b, &idp.issuer, shared).replace(
        &format!("authenticate_service_url: http://127.0.0.1:{http_b}"),
        &format!("authenticate_service_url: http://127.0.0.1:{http_a}"),
    );
    let a = TetherProcess::start(&yaml_a, &[]);
    let b = TetherProcess::start(&yaml_b, &[]);
    Replicas {
        idp,
        a,
        b,
        http_a,
        ssh_a,
        http_b,
        ssh_b,
    }
}
