//! Dev-only helpers for tether's end-to-end tests: start the real things tether talks
//! to — a throwaway OpenSSH `sshd`, the Node OIDC provider in `tests/idp`, Debian's
//! chromium driven by `tests/browser/flow.js`, a scratch PostgreSQL cluster and the
//! built `tether` binary — on free loopback ports, and stop them again on `Drop`.
//! It also runs the real `ssh` client (under a pseudo-terminal when asked) and reads
//! its output incrementally.
//!
//! Every helper panics with a message naming the component when something is wrong:
//! this is test code, and a loud failure is what a test wants. Tests decide whether a
//! missing component skips or fails with [`require`] (fail under `CI`, skip locally).
//! This crate must never be a dependency of the product crates; it depends only on
//! std-ish crates and spawns external programs, never links russh, axum or sqlx.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod browser;
mod http;
mod idp;
mod postgres;
mod process;
mod ssh;
mod sshd;
mod tether;

pub use browser::{screenshot_dir, Browser, BrowserProfile, FlowResult};
pub use http::{http_get, http_request, HttpResponse};
pub use idp::{CiIssuer, FakeGithub, Idp, IDP_USERS};
pub use nix::sys::signal::Signal;
pub use postgres::{postgres_bin_dir, Postgres};
pub use process::{run_command, CmdOutput};
pub use ssh::{
    extract_url, fingerprint, gen_client_key, gen_key, run_ssh, shell_quote, sign_user_cert,
    SshClient, SSH, SSH_DEFAULT_ARGS,
};
pub use sshd::{ensure_user, kill_tagged, Sshd, SESSION_TAG_VAR, SSHD};
pub use tether::{tether_bin, TetherProcess};

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A temporary directory only its owner may open (mode 0700), as a real deployment
/// keeps tether's config and data: tether refuses a config holding inline secrets,
/// or a data directory, that another local user could read.
pub fn private_tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .expect("tempdir")
}

/// A loopback port where a TCP connect neither succeeds nor fails: a listener whose
/// accept queue (backlog 0) is already full with one connection nobody accepts, so
/// the kernel drops further SYNs and a client's connect hangs — a host that went
/// silent (powered off, firewalled) rather than one that refuses. Gone on drop.
pub struct SilentPort {
    /// The port.
    pub port: u16,
    _listener: TcpListener,
    _queued: std::net::TcpStream,
}

impl SilentPort {
    /// Binds it and fills its queue.
    pub fn new() -> SilentPort {
        use nix::sys::socket::{listen, Backlog};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        // listen(2) again on the listening socket only changes its backlog.
        listen(&listener, Backlog::new(0).expect("backlog 0")).expect("listen(backlog 0)");
        let port = listener.local_addr().expect("local_addr").port();
        let queued = std::net::TcpStream::connect(("127.0.0.1", port)).expect("fill the queue");
        SilentPort {
            port,
            _listener: listener,
            _queued: queued,
        }
    }
}

impl Default for SilentPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A loopback TCP port that was free a moment ago and that this process has not handed
/// out before (the OS could still give it to someone else; the window is tiny).
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if given.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// The workspace root: the nearest ancestor of this crate holding `Cargo.lock` and
/// `tests/idp`.
pub fn repo_root() -> PathBuf {
    let start = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file() && dir.join("tests/idp").is_dir())
        .unwrap_or_else(|| panic!("no workspace root above {}", start.display()))
        .to_path_buf()
}

/// Whether an end-to-end test may go on. `present == true` → `true`. Otherwise, with
/// the `CI` environment variable set, panics (a missing component must fail CI); on a
/// developer machine prints a skip notice and returns `false` so the test can return.
///
/// ```no_run
/// # use tether_testkit::require;
/// if !require("sshd", std::path::Path::new("/usr/sbin/sshd").exists()) {
///     return;
/// }
/// ```
pub fn require(component: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "required test component missing: {component} (CI is set, so this fails instead \
             of skipping; run .ci/run or install it)"
        );
    }
    eprintln!("SKIP: {component} is not available on this machine; test skipped");
    false
}

/// Whether `program` is found as an executable file (absolute path or on `PATH`).
pub fn have_program(program: &str) -> bool {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Polls until `127.0.0.1:port` accepts a TCP connection (at least one attempt);
/// `false` after `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    wait_until(timeout, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// Polls `cond` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!(TcpListener::bind(("127.0.0.1", a)).is_ok());
    }

    #[test]
    fn repo_root_has_the_node_tools() {
        let root = repo_root();
        assert!(root.join("tests/idp/idp.js").is_file());
        assert!(root.join("tests/browser/flow.js").is_file());
    }

    #[test]
    fn require_passes_when_present() {
        assert!(require("anything", true));
    }
}
