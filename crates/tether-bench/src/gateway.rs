//! The gateway under test: the built `tether` binary (`$TETHER_BIN`, else
//! `target/release/tether`, built with `cargo build --release -p tether` when
//! missing), started by `tether-testkit` with a development-IdP config on free
//! loopback ports and stopped when dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use tether_testkit::{free_port, repo_root, TetherProcess};

/// The dev IdP user every benchmark signs in as.
pub const USER: &str = "alice";
/// Its password (development IdP, loopback only).
pub const PASSWORD: &str = "pw";

/// The tether binary to benchmark; builds the release binary if it is missing.
pub fn tether_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("TETHER_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("TETHER_BIN={} is not a file", bin.display());
        }
        // Absolute: the gateway runs in its own temporary directory.
        return bin
            .canonicalize()
            .with_context(|| format!("TETHER_BIN={}", bin.display()));
    }
    let root = repo_root();
    let bin = root.join("target/release/tether");
    if !bin.is_file() {
        eprintln!(
            "{} is missing; running cargo build --release -p tether",
            bin.display()
        );
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "-p", "tether"])
            .current_dir(&root)
            .status()
            .context("running cargo build")?;
        if !status.success() || !bin.is_file() {
            bail!("cargo build --release -p tether failed ({status})");
        }
    }
    Ok(bin)
}

/// `tether --version`, e.g. `tether 0.1.0`.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown version".into())
}

/// A running gateway and the directory holding its data.
pub struct Gateway {
    /// Declared first so it stops before `data` is removed.
    pub process: TetherProcess,
    pub http_port: u16,
    pub ssh_port: u16,
    data: tempfile::TempDir,
}

impl Gateway {
    /// Starts `bin serve` with SQLite storage, the dev IdP (user `alice`, password
    /// `pw`) and `ssh_sign_in_timeout: 5m`; blocks until it answers (60 s at most,
    /// else panics with its logs).
    pub fn start(bin: &Path) -> Result<Gateway> {
        Gateway::start_with(bin, |_| Ok(String::new()))
    }

    /// As [`Gateway::start`] with `storage` (YAML lines: `databroker_storage_type`,
    /// connection string, shared `cookie_secret`) instead of SQLite: a replica.
    pub fn start_replica(bin: &Path, storage: &str) -> Result<Gateway> {
        let storage = storage.to_string();
        Gateway::start_with(bin, move |_| Ok(storage))
    }

    /// As [`Gateway::start`], after `prepare` has run on the (empty, mode 0700) data
    /// directory; the YAML it returns (top-level keys, e.g. `routes:`) is appended to
    /// the config.
    pub fn start_with(
        bin: &Path,
        prepare: impl FnOnce(&Path) -> Result<String>,
    ) -> Result<Gateway> {
        let data = tempfile::Builder::new()
            .prefix("tether-bench-")
            .tempdir()
            .context("temporary data dir")?;
        // tether refuses a data directory others can open.
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o700))
            .context("chmod 700 the data dir")?;
        let (http_port, ssh_port) = (free_port(), free_port());
        let extra = prepare(data.path()).context("preparing the gateway's data directory")?;
        let mut yaml = config_yaml(http_port, ssh_port, data.path());
        // Keys the extra YAML sets replace the defaults.
        for key in ["databroker_storage_type", "authenticate_service_url"] {
            if extra.contains(&format!("{key}:")) {
                yaml = yaml
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{key}:")))
                    .map(|l| format!("{l}\n"))
                    .collect();
            }
        }
        yaml.push_str(&extra);
        let process = TetherProcess::start_bin(bin, &yaml, &[("RUST_LOG", "info")]);
        Ok(Gateway {
            process,
            http_port,
            ssh_port,
            data,
        })
    }

    /// The data directory (`data_dir:`), e.g. for `ssh_user_ca_key.pub`.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The gateway's process id.
    pub fn pid(&self) -> Result<u32> {
        self.process.pid().context("tether is not running")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

/// The benchmark's config.
pub fn config_yaml(http_port: u16, ssh_port: u16, data_dir: &Path) -> String {
    let base = format!("http://127.0.0.1:{http_port}");
    format!(
        "address: 127.0.0.1:{http_port}
insecure_server: true
authenticate_service_url: {base}
idp_provider: oidc
idp_provider_url: {base}/dev-idp
idp_client_id: tether-bench
idp_client_secret: tether-bench-secret
ssh_address: 127.0.0.1:{ssh_port}
ssh_sign_in_timeout: 5m
# Every benchmark client signs in from 127.0.0.1: lift the per-source caps meant
# for the internet (the flood benchmark sets its own).
ssh_sign_in_codes_per_source: 100000
databroker_storage_type: file
data_dir: {data}
dev_idp:
  enabled: true
  users:
    - username: {USER}
      password: {PASSWORD}
      email: alice@example.com
      name: Alice
      groups: [sre]
",
        data = data_dir.display(),
    )
}
