//! The built `tether` binary as a child process: `tether serve -c <config>` in a
//! temporary directory, ready once its web app answers `GET /ping`.

use crate::process::{run_command, spawn_group, tail, terminate, CmdOutput};
use crate::{http_get, repo_root, wait_for_port, wait_until};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// The tether binary under test: `$TETHER_BIN`, else `<repo>/target/release/tether`
/// if built, else `<repo>/target/debug/tether`.
pub fn tether_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TETHER_BIN") {
        return PathBuf::from(bin);
    }
    let root = repo_root();
    let release = root.join("target/release/tether");
    if release.is_file() {
        return release;
    }
    root.join("target/debug/tether")
}

/// A running `tether serve`. Stopped on drop (SIGTERM, SIGKILL after 5 s).
///
/// Readiness: the top-level `address:` of the config (`host:port`; `:port` means
/// 127.0.0.1) must answer `GET /ping` with 200 (only a TCP accept when the config has
/// `certificate_file`, i.e. HTTPS), and the top-level `ssh_address:`, if any, must
/// accept TCP. Both within 60 s, or the start panics with the logs.
pub struct TetherProcess {
    bin: PathBuf,
    child: Option<Child>,
    dir: TempDir,
    env: Vec<(String, String)>,
    /// The web app's `host:port` (from `address:`), if the config has one.
    pub http_addr: Option<String>,
    /// The SSH listener's `host:port` (from `ssh_address:`), if any.
    pub ssh_addr: Option<String>,
}

/// The value of a top-level `key: value` line of a YAML document (quotes removed).
pub(crate) fn top_level_value(yaml: &str, key: &str) -> Option<String> {
    yaml.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let value = rest.split(" #").next().unwrap_or("").trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

fn loopback(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => addr.replace("0.0.0.0:", "127.0.0.1:"),
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in address {addr:?}"))
}

impl TetherProcess {
    /// Writes `config_yaml` to `<tmp>/config.yaml`, sets `TETHER_DATA_DIR=<tmp>/data`
    /// plus `extra_env`, runs `tether serve -c <tmp>/config.yaml` and waits until it is
    /// ready (see the type's docs). `RUST_LOG` defaults to `info`.
    pub fn start(config_yaml: &str, extra_env: &[(&str, &str)]) -> TetherProcess {
        TetherProcess::start_bin(&tether_bin(), config_yaml, extra_env)
    }

    /// As [`TetherProcess::start`] with another binary (`bin serve -c <config>`).
    pub fn start_bin(bin: &Path, config_yaml: &str, extra_env: &[(&str, &str)]) -> TetherProcess {
        let dir = crate::private_tempdir("tether-e2e-");
        std::fs::create_dir_all(dir.path().join("data")).expect("mkdir data");
        let mut env: Vec<(String, String)> = vec![
            ("RUST_LOG".into(), "info".into()),
            (
                "TETHER_DATA_DIR".into(),
                dir.path().join("data").to_string_lossy().into_owned(),
            ),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut t = TetherProcess {
            bin: bin.to_path_buf(),
            child: None,
            dir,
            env,
            http_addr: None,
            ssh_addr: None,
        };
        t.write_config(config_yaml);
        t.spawn();
        t
    }

    fn write_config(&mut self, yaml: &str) {
        std::fs::write(self.config_path(), yaml).expect("write config.yaml");
        self.http_addr = top_level_value(yaml, "address").map(|a| loopback(&a));
        self.ssh_addr = top_level_value(yaml, "ssh_address").map(|a| loopback(&a));
    }

    fn spawn(&mut self) {
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .expect("open log")
        };
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("-c")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(open("stdout.log"))
            .stderr(open("stderr.log"));
        self.child = Some(spawn_group(&mut cmd, "tether serve"));

        let tls = std::fs::read_to_string(self.config_path())
            .map(|c| top_level_value(&c, "certificate_file").is_some())
            .unwrap_or(false);
        let ready = wait_until(Duration::from_secs(60), || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return true; // exited: reported below
            }
            let http_ok = match &self.http_addr {
                None => true,
                Some(addr) if tls => wait_for_port(port_of(addr), Duration::ZERO),
                Some(addr) => http_get(&format!("http://{addr}/ping"), Duration::from_secs(2))
                    .map(|r| r.status == 200)
                    .unwrap_or(false),
            };
            let ssh_ok = self
                .ssh_addr
                .as_deref()
                .is_none_or(|addr| wait_for_port(port_of(addr), Duration::ZERO));
            http_ok && ssh_ok
        });
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "tether serve exited during start-up ({status}); logs:\n{}",
                tail(&self.logs(), 8000)
            );
        }
        if !ready {
            self.stop();
            panic!(
                "tether serve not ready within 60 s (http {:?}, ssh {:?}); logs:\n{}",
                self.http_addr,
                self.ssh_addr,
                tail(&self.logs(), 8000)
            );
        }
    }

    /// stdout and stderr so far (stdout first).
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    /// Waits until the logs contain `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.logs().contains(needle))
    }

    /// The temporary directory (config, logs, `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `<tmp>/config.yaml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// `<tmp>/data` (also `TETHER_DATA_DIR`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `http://<address>`, the web app's base URL.
    pub fn base_url(&self) -> String {
        format!(
            "http://{}",
            self.http_addr.as_deref().expect("config has no address:")
        )
    }

    /// The SSH listener's port.
    pub fn ssh_port(&self) -> u16 {
        port_of(
            self.ssh_addr
                .as_deref()
                .expect("config has no ssh_address:"),
        )
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends `sig` to the tether process (e.g. `SIGHUP` to reload the config).
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    /// Replaces the config file (without signalling; see [`TetherProcess::signal`]).
    pub fn rewrite_config(&mut self, yaml: &str) {
        self.write_config(yaml);
    }

    /// Stops it (SIGTERM, SIGKILL after 5 s); returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.child
            .take()
            .and_then(|mut c| terminate(&mut c, Duration::from_secs(5)))
    }

    /// Stops it and starts it again with the same config, environment and data
    /// directory (logs are appended).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs `tether <args>` (e.g. `bindings list -c <config>`) with the same
    /// environment and directory, to completion (60 s at most).
    pub fn cli(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        run_command(cmd, None, Duration::from_secs(60))
    }
}

impl Drop for TetherProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- tether logs ---\n{}", tail(&self.logs(), 16000));
        }
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_top_level_values() {
        let yaml = "address: 127.0.0.1:8080\nssh_address: \":2222\" # comment\nroutes:\n  - from: ssh://x\n    address: nope\n";
        assert_eq!(
            top_level_value(yaml, "address").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            top_level_value(yaml, "ssh_address")
                .map(|a| loopback(&a))
                .as_deref(),
            Some("127.0.0.1:2222")
        );
        assert_eq!(top_level_value(yaml, "routes"), None);
        assert_eq!(top_level_value(yaml, "missing"), None);
    }

    /// A stand-in `tether`: node serving `GET /ping` on the config's address and
    /// accepting TCP on its ssh_address, logging to stderr, exiting on SIGTERM.
    const FAKE_TETHER: &str = r#"#!/usr/bin/env node
const fs = require('fs'); const http = require('http'); const net = require('net');
const get = (k) => (new RegExp('^' + k + ':\\s*"?([^"\\s]+)', 'm').exec(cfg) || [])[1];
const split = (a) => { const i = a.lastIndexOf(':'); return [a.slice(0, i) || '127.0.0.1', +a.slice(i + 1)]; };
if (process.argv[2] !== 'serve') { console.log('cli', process.argv.slice(2).join(' ')); process.exit(0); }
const cfg = fs.readFileSync(process.argv[4], 'utf8');
const [h, p] = split(get('address'));
http.createServer((q, s) => { s.statusCode = q.url === '/ping' ? 200 : 404; s.end('OK'); }).listen(p, h);
const [sh, sp] = split(get('ssh_address'));
net.createServer((c) => c.end()).listen(sp, sh);
console.error('fake tether up, data dir ' + process.env.TETHER_DATA_DIR);
process.on('SIGTERM', () => { console.error('fake tether stopping'); process.exit(0); });
"#;

    #[test]
    fn starts_waits_for_ping_and_stops() {
        if !crate::require("node", crate::have_program("node")) {
            return;
        }
        let bin_dir = tempfile::tempdir().unwrap();
        let bin = bin_dir.path().join("fake-tether");
        std::fs::write(&bin, FAKE_TETHER).unwrap();
        let mut perms = std::fs::metadata(&bin).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&bin, perms).unwrap();

        let (http, ssh) = (crate::free_port(), crate::free_port());
        let yaml = format!("address: 127.0.0.1:{http}\nssh_address: \":{ssh}\"\n");
        let mut t = TetherProcess::start_bin(&bin, &yaml, &[("EXTRA", "1")]);
        assert_eq!(t.ssh_port(), ssh);
        assert_eq!(t.base_url(), format!("http://127.0.0.1:{http}"));
        let ping = http_get(&format!("{}/ping", t.base_url()), Duration::from_secs(5)).unwrap();
        assert_eq!(ping.status, 200);
        assert!(
            t.wait_for_log("fake tether up", Duration::from_secs(5)),
            "{}",
            t.logs()
        );
        assert!(t
            .logs()
            .contains(&t.data_dir().to_string_lossy().into_owned()));
        let cli = t.cli(&["bindings", "list"]);
        assert_eq!(cli.stdout.trim(), "cli bindings list");
        t.restart();
        assert_eq!(t.stop(), Some(0));
        assert!(
            t.logs().matches("fake tether up").count() == 2,
            "{}",
            t.logs()
        );
        assert!(t.logs().contains("fake tether stopping"));
    }

    #[test]
    fn tether_bin_prefers_the_env() {
        // Only checks the shape; the env var is process-wide, so do not set it here.
        let bin = tether_bin();
        assert!(bin.ends_with("tether"), "{}", bin.display());
    }
}
