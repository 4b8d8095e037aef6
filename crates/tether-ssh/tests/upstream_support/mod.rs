//! Test helpers for the upstream tests: a throwaway OpenSSH sshd (run as root, with
//! its own config on a free loopback port, as docs/TESTING.md describes) trusting a
//! user CA generated here, keys, free ports.
//! Deliberately local (no tether-testkit dependency).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::ssh_key::{certificate, LineEnding, PrivateKey, PublicKey};
use tether_core::{Clock, SystemClock, Timestamp};
use tether_ssh::access::{authorize, AccessGranted, AccessRequest};
use tether_ssh::cert::ephemeral_ed25519;
use tether_ssh::upstream::{HostKeyCheck, UpstreamTarget, UpstreamUser};
use tether_store::memory::MemoryStore;
use tether_store::Store;

pub const USER: &str = "tetheruser";
pub const EMAIL: &str = "alice@example.com";

/// Whether a test may go on: `true` when `present`. Otherwise, with `CI` set, panics
/// (a missing component must fail CI, never pass silently); on a developer machine
/// prints a skip notice and returns `false` so the test can return.
pub fn require(component: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "required test component missing: {component} (CI is set, so this fails instead of skipping)"
    );
    eprintln!("SKIP: {component} is not available on this machine; test skipped");
    false
}

/// Whether this process may start sshd (root) and sshd exists: under `CI` a missing
/// one fails the test ([`require`]).
pub fn can_run_sshd() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    require("root", root) && require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists())
}

/// Creates the login user once (unlocked: `*` password, so sshd without PAM lets
/// it in with a certificate).
pub fn ensure_user() {
    let exists = Command::new("id")
        .arg(USER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-p", "*", USER])
            .status();
    } else {
        let _ = Command::new("usermod").args(["-p", "*", USER]).status();
    }
    std::fs::create_dir_all("/run/sshd").unwrap();
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn new_key() -> PrivateKey {
    ephemeral_ed25519().unwrap()
}

pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(russh::keys::HashAlg::Sha256).to_string()
}

pub fn write_private_key(path: &Path, key: &PrivateKey) {
    std::fs::write(path, key.to_openssh(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let _ = Command::new("chmod").arg("600").arg(path).status();
}

/// Signs a host certificate for `host_key` with `host_ca`, valid for `principal`.
pub fn host_certificate(host_ca: &PrivateKey, host_key: &PublicKey, principal: &str) -> String {
    let now = SystemClock.now().unix_seconds() as u64;
    let mut b = certificate::Builder::new(
        vec![7u8; 32],
        host_key.key_data().clone(),
        now - 60,
        now + 3600,
    )
    .unwrap();
    b.serial(1).unwrap();
    b.key_id("test host").unwrap();
    b.cert_type(certificate::CertType::Host).unwrap();
    b.valid_principal(principal).unwrap();
    b.sign(host_ca).unwrap().to_openssh().unwrap()
}

/// A running sshd; killed on drop.
pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub host_key: PrivateKey,
    child: Child,
    /// The value of [`SESSION_TAG_VAR`] in this sshd's sessions.
    tag: String,
}

/// The environment variable sshd sets (`SetEnv`) in every session it starts, so
/// the session's processes (a `sleep 600` outlives sshd when its connection ends
/// without a pty) can be found and stopped with the server.
pub const SESSION_TAG_VAR: &str = "TETHER_SSHD_SESSION_TAG";

/// Kills every process whose environment holds `SESSION_TAG_VAR=tag` (twice: a
/// shell may fork a last child during the first pass).
fn kill_sessions(tag: &str) {
    let needle = format!("{SESSION_TAG_VAR}={tag}");
    for _ in 0..2 {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

impl Sshd {
    /// Starts sshd on `port` (or a free one) with `host_key`, trusting `ca` for
    /// users; `extra` goes first in sshd_config (so it can override the defaults).
    pub fn start(ca: &PublicKey, host_key: &PrivateKey, port: Option<u16>, extra: &str) -> Sshd {
        ensure_user();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = port.unwrap_or_else(free_port);
        write_private_key(&d.join("hostkey"), host_key);
        std::fs::write(d.join("ca.pub"), ca.to_openssh().unwrap()).unwrap();
        let tag = d.file_name().unwrap().to_string_lossy().into_owned();
        // `extra` first: for most keywords sshd keeps the first value it reads.
        let cfg = format!(
            "{extra}\nSetEnv {SESSION_TAG_VAR}={tag}\nPort {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
             TrustedUserCAKeys {d}/ca.pub\nAuthorizedKeysFile none\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel VERBOSE\n\
             Subsystem sftp internal-sftp\nAcceptEnv TETHER_TEST_*\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), cfg).unwrap();
        let check = Command::new("/usr/sbin/sshd")
            .arg("-t")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "sshd -t: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let sshd = Sshd {
            port,
            dir,
            host_key: host_key.clone(),
            child,
            tag,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (sshd writes it asynchronously).
    pub async fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_sessions(&self.tag);
    }
}

pub fn target(sshd: &Sshd) -> UpstreamTarget {
    UpstreamTarget {
        route: "prod".into(),
        address: sshd.address(),
        failover: Vec::new(),
    }
}

pub fn user(login: &str) -> UpstreamUser {
    UpstreamUser {
        login: login.into(),
        email: EMAIL.into(),
        binding_expires_at: SystemClock.now().plus(Duration::from_secs(48 * 3600)),
    }
}

/// The authorization proof the upstream connector needs: `target`'s route with
/// `allow_any_authenticated_user`, evaluated for `user`.
pub fn grant(target: &UpstreamTarget, user: &UpstreamUser) -> AccessGranted {
    let route = tether_core::config::Route {
        name: target.route.clone(),
        to: target.address.clone(),
        failover: target.failover.clone(),
        allow_any_authenticated_user: true,
        policy: None,
        line: 1,
    };
    let identity = tether_core::Identity {
        subject: "u-test".into(),
        email: user.email.clone(),
        name: None,
        claims: Default::default(),
    };
    let key = tether_core::policy::KeyInput::default();
    let request = AccessRequest {
        identity: &identity,
        login: Some(&user.login),
        key: &key,
        source: None,
        binding_expires_at: user.binding_expires_at,
        now: SystemClock.now(),
    };
    let limits = tether_core::config::UpstreamLimits {
        permit: tether_core::config::Permit::ALL,
        ..Default::default()
    };
    authorize(Some(&route), &limits, &route.name, &request).unwrap()
}

pub fn expiring_user(login: &str, at: Timestamp) -> UpstreamUser {
    UpstreamUser {
        binding_expires_at: at,
        ..user(login)
    }
}

pub fn memory_store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

pub fn accept_new(store: Arc<dyn Store>) -> HostKeyCheck {
    HostKeyCheck::new(tether_core::config::HostKeyPolicy::AcceptNew, None, store)
}

pub fn strict(known_hosts: &Path) -> HostKeyCheck {
    HostKeyCheck::new(
        tether_core::config::HostKeyPolicy::Strict,
        Some(known_hosts.to_path_buf()),
        memory_store(),
    )
}

/// Reads a session channel until close: (stdout, stderr, exit status).
pub async fn collect(
    reader: &mut tether_ssh::upstream::UpstreamReader,
) -> (Vec<u8>, Vec<u8>, Option<u32>) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut status = None;
    let fut = async {
        while let Some(msg) = reader.wait().await {
            match msg {
                russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
                russh::ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
                russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                russh::ChannelMsg::Close => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("channel did not close");
    (out, err, status)
}
