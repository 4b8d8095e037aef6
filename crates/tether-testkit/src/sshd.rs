//! A throwaway OpenSSH `sshd` (the upstream tether connects to) trusting a given user
//! CA, on a free loopback port, with its log captured so tests can see who logged in.

use crate::process::{run_command, spawn_group, tail, terminate};
use crate::{free_port, wait_for_port};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// Absolute path of the OpenSSH server (sshd refuses to run from a relative path).
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running `sshd -D -e`. Killed on drop, with every process of the sessions it
/// started (login shells outlive sshd when their connection ends without a pty).
pub struct Sshd {
    /// Its loopback port.
    pub port: u16,
    child: Child,
    dir: TempDir,
    /// The value of [`SESSION_TAG_VAR`] in this sshd's sessions.
    tag: String,
}

/// The environment variable sshd sets (`SetEnv`) in every session it starts, so the
/// session's processes can be found and stopped when the test ends.
pub const SESSION_TAG_VAR: &str = "TETHER_TESTKIT_SSHD";

/// Kills (SIGKILL) every process whose environment holds `var=tag`; returns how
/// many were signalled. Reads `/proc/*/environ` (root can read every process's).
pub fn kill_tagged(var: &str, tag: &str) -> usize {
    let needle = format!("{var}={tag}");
    let mut killed = 0;
    // Twice: a shell may fork a last child while the first pass runs.
    for _ in 0..2 {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return killed;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ
                .split(|b| *b == 0)
                .any(|var| var == needle.as_bytes())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                killed += 1;
            }
        }
    }
    killed
}

impl Sshd {
    /// Starts sshd trusting the user CA public key at `ca_pub_path`.
    pub fn start(ca_pub_path: &Path) -> Sshd {
        Sshd::start_with(ca_pub_path, &[])
    }

    /// As [`Sshd::start`], with extra `sshd_config` lines appended.
    pub fn start_with(ca_pub_path: &Path, extra_config: &[&str]) -> Sshd {
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("tether-sshd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let ca = d.join("ca.pub");
        std::fs::copy(ca_pub_path, &ca)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", ca_pub_path.display()));
        let hostkey = d.join("hostkey");
        let mut keygen = Command::new("ssh-keygen");
        keygen
            .args(["-t", "ed25519", "-N", "", "-q", "-C", "test-sshd", "-f"])
            .arg(&hostkey);
        let out = run_command(keygen, None, Duration::from_secs(30));
        assert!(out.success(), "ssh-keygen for the sshd host key: {out:?}");

        let port = free_port();
        let tag = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cfg = format!(
            "Port {port}\n\
             SetEnv {SESSION_TAG_VAR}={tag}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {hostkey}\n\
             PidFile {pid}\n\
             TrustedUserCAKeys {ca}\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             LogLevel VERBOSE\n\
             Subsystem sftp internal-sftp\n\
             AllowTcpForwarding yes\n\
             AllowAgentForwarding yes\n",
            hostkey = hostkey.display(),
            pid = d.join("sshd.pid").display(),
            ca = ca.display(),
        );
        for line in extra_config {
            cfg.push_str(line);
            cfg.push('\n');
        }
        let cfg_path = d.join("sshd_config");
        std::fs::write(&cfg_path, cfg).expect("write sshd_config");

        let mut check = Command::new(SSHD);
        check.arg("-t").arg("-f").arg(&cfg_path);
        let out = run_command(check, None, Duration::from_secs(30));
        assert!(out.success(), "sshd -t rejected the config: {out:?}");

        let log = File::create(d.join("sshd.log")).expect("create sshd.log");
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let mut child = spawn_group(&mut cmd, "sshd");
        if !wait_for_port(port, Duration::from_secs(10)) {
            terminate(&mut child, Duration::from_secs(1));
            panic!(
                "sshd did not listen on 127.0.0.1:{port} within 10 s; log:\n{}",
                std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
        }
        Sshd {
            port,
            child,
            dir,
            tag,
        }
    }

    /// Everything sshd logged so far (`Accepted certificate ID "<key id>" …` lines
    /// name who logged in).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The host public key line, `ssh-ed25519 AAAA… test-sshd`.
    pub fn host_pub_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hostkey.pub"))
            .expect("read hostkey.pub")
            .trim()
            .to_string()
    }

    /// A `known_hosts` line for this server: `[127.0.0.1]:<port> ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        let key = self.host_pub_key();
        let mut parts = key.split_whitespace();
        let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {blob}", self.port)
    }

    /// The host key's `SHA256:…` fingerprint.
    pub fn host_key_fingerprint(&self) -> String {
        crate::fingerprint(&self.dir.path().join("hostkey.pub"))
    }

    /// The temporary directory holding config, keys and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ssh://127.0.0.1:<port>`, the form a route's `to:` takes.
    pub fn url(&self) -> String {
        format!("ssh://127.0.0.1:{}", self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- sshd log ---\n{}", tail(&self.log(), 8000));
        }
        terminate(&mut self.child, Duration::from_secs(3));
        kill_tagged(SESSION_TAG_VAR, &self.tag);
    }
}

/// Makes sure local user `name` exists (`useradd -m`), so sshd accepts it as a login.
/// The password field is set to `*` (no password, but not "locked": with `UsePAM no`
/// sshd refuses accounts whose password starts with `!`). Safe to call concurrently,
/// also from several test processes.
pub fn ensure_user(name: &str) {
    let exists = || {
        let mut id = Command::new("id");
        id.arg(name);
        run_command(id, None, Duration::from_secs(10)).success()
    };
    if exists() {
        return;
    }
    let lock = File::create(std::env::temp_dir().join("tether-testkit-useradd.lock"))
        .expect("create useradd lock");
    lock.lock().expect("lock useradd lock");
    let mut last = None;
    for _ in 0..10 {
        if exists() {
            return;
        }
        let mut add = Command::new("useradd");
        add.args(["-m", "-p", "*", "-s", "/bin/bash", name]);
        let out = run_command(add, None, Duration::from_secs(30));
        if out.success() {
            return;
        }
        last = Some(out);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        exists(),
        "useradd -m {name} failed (are tests running as root?): {last:?}"
    );
}
