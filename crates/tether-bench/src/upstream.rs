//! A lightweight upstream SSH server (russh) for load benchmarks, where a real sshd
//! per session would cost more than the machine has (10,000 idle sessions, 200
//! connections a second): it trusts tether's user CA exactly as sshd's
//! `TrustedUserCAKeys` does — an OpenSSH *user* certificate signed by that CA, valid
//! now, naming the login among its principals — and nothing else (no plain keys, no
//! passwords). Session channels are accepted; `exec true` exits 0 at once, `exec
//! echo WORDS` prints WORDS and exits 0, anything else (`sleep …`, a shell) is
//! accepted and stays open and silent: an idle session.
//!
//! It runs as a separate process so its memory is not counted in tether's or the
//! client's: the benchmark binary re-executes itself with [`SERVE_ARG`] as its first
//! argument ([`serve_if_asked`] at the top of `main`), and [`LightUpstream`] starts and
//! stops that process. The child exits when its stdin closes, so it cannot outlive the
//! benchmark even if the benchmark is killed. Every half second it writes its counters
//! to a status file ([`Status`]).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Certificate, Fingerprint};
use russh::keys::{HashAlg, PublicKey};
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};

/// First argument that turns a benchmark binary into the upstream server.
pub const SERVE_ARG: &str = "__tether_bench_upstream";

/// Listen backlog of the server socket.
const BACKLOG: u32 = 8192;

#[derive(Default)]
struct Counters {
    /// Connections now open (handshake started).
    connections: AtomicU64,
    /// Connections accepted since the start.
    accepted: AtomicU64,
    /// Session channels now open.
    channels: AtomicU64,
    /// Certificate logins accepted.
    logins: AtomicU64,
    /// Logins refused (not a user certificate from the CA for this login).
    refused: AtomicU64,
    /// `exec` requests answered with an exit status.
    execs: AtomicU64,
}

/// The server's counters, as last written to its status file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub connections: u64,
    pub accepted: u64,
    pub channels: u64,
    pub logins: u64,
    pub refused: u64,
    pub execs: u64,
}

impl Status {
    fn render(c: &Counters) -> String {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "connections={} accepted={} channels={} logins={} refused={} execs={}\n",
            l(&c.connections),
            l(&c.accepted),
            l(&c.channels),
            l(&c.logins),
            l(&c.refused),
            l(&c.execs)
        )
    }

    fn parse(text: &str) -> Status {
        let mut s = Status::default();
        for word in text.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            let v = v.parse().unwrap_or(0);
            match k {
                "connections" => s.connections = v,
                "accepted" => s.accepted = v,
                "channels" => s.channels = v,
                "logins" => s.logins = v,
                "refused" => s.refused = v,
                "execs" => s.execs = v,
                _ => {}
            }
        }
        s
    }
}

/// One connection's handler.
struct UpHandler {
    ca: Fingerprint,
    counters: Arc<Counters>,
    open: HashSet<ChannelId>,
}

impl Drop for UpHandler {
    fn drop(&mut self) {
        self.counters.connections.fetch_sub(1, Ordering::Relaxed);
        self.counters
            .channels
            .fetch_sub(self.open.len() as u64, Ordering::Relaxed);
    }
}

impl UpHandler {
    fn closed(&mut self, id: ChannelId) {
        if self.open.remove(&id) {
            self.counters.channels.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Answers an exec: optional output, exit status 0, EOF, close.
    fn finish(
        &mut self,
        id: ChannelId,
        output: Option<String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        if let Some(out) = output {
            session.data(id, out.into_bytes())?;
        }
        session.exit_status_request(id, 0)?;
        session.eof(id)?;
        session.close(id)?;
        self.counters.execs.fetch_add(1, Ordering::Relaxed);
        self.closed(id);
        Ok(())
    }
}

impl server::Handler for UpHandler {
    type Error = russh::Error;

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let ok = certificate.cert_type() == CertType::User
            && certificate.valid_principals().iter().any(|p| p == user)
            && certificate.validate([&self.ca]).is_ok();
        if ok {
            self.counters.logins.fetch_add(1, Ordering::Relaxed);
            Ok(Auth::Accept)
        } else {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The requests arrive through the callbacks below; the channel object
        // itself is not needed (russh ignores sends to a dropped one).
        let id = channel.id();
        drop(channel);
        reply.accept().await;
        if self.open.insert(id) {
            self.counters.channels.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.closed(id);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(id)
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(id)
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(id)
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(id)?;
        let command = String::from_utf8_lossy(data);
        let command = command.trim();
        if command == "true" {
            self.finish(id, None, session)?;
        } else if let Some(words) = command.strip_prefix("echo ") {
            self.finish(id, Some(format!("{words}\n")), session)?;
        }
        // Anything else: accepted, open and silent (an idle session).
        Ok(())
    }
}

/// If this process was started as the upstream server (first argument
/// [`SERVE_ARG`]), runs it and exits; otherwise returns at once. Call first in `main`.
pub fn serve_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(SERVE_ARG) {
        return;
    }
    let (Some(ca), Some(status)) = (args.get(2), args.get(3)) else {
        eprintln!("usage: {} {SERVE_ARG} CA_PUB_FILE STATUS_FILE", args[0]);
        std::process::exit(2);
    };
    let code = match serve(Path::new(ca), Path::new(status)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("upstream server failed: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn serve(ca_pub: &Path, status_path: &Path) -> Result<()> {
    crate::sysenv::raise_nofile();
    let line =
        std::fs::read_to_string(ca_pub).with_context(|| format!("reading {}", ca_pub.display()))?;
    let ca = PublicKey::from_openssh(line.trim())
        .map_err(|e| anyhow::anyhow!("{}: {e}", ca_pub.display()))?;
    let ca = ca.fingerprint(HashAlg::Sha256);
    let (host_key, _) = crate::sshc::new_key()?;

    // Exit when the benchmark goes away (its end of our stdin closes).
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let config = Arc::new(server::Config {
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(10),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            inactivity_timeout: None,
            keepalive_interval: None,
            nodelay: true,
            ..Default::default()
        });
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(BACKLOG)?;
        let port = listener.local_addr()?.port();
        let mut out = std::io::stdout();
        writeln!(out, "port {port}")?;
        out.flush()?;

        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let status_path = status_path.to_path_buf();
        tokio::spawn(async move {
            let tmp = status_path.with_extension("tmp");
            loop {
                if std::fs::write(&tmp, Status::render(&c)).is_ok() {
                    let _ = std::fs::rename(&tmp, &status_path);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            counters.connections.fetch_add(1, Ordering::Relaxed);
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            let handler = UpHandler {
                ca,
                counters: counters.clone(),
                open: HashSet::new(),
            };
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(session) = server::run_stream(config, stream, handler).await {
                    let _ = session.await;
                }
            });
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    })
}

/// The upstream server as a child process; killed when dropped.
pub struct LightUpstream {
    pub port: u16,
    child: Child,
    /// Closing it (on drop) also makes the child exit.
    _stdin: ChildStdin,
    status_path: PathBuf,
    dir: tempfile::TempDir,
}

impl LightUpstream {
    /// Starts this binary as the upstream server trusting the CA public key in
    /// `ca_pub` (an OpenSSH public key line); waits until it listens.
    pub fn start(ca_pub: &Path) -> Result<LightUpstream> {
        let dir = tempfile::Builder::new()
            .prefix("tether-bench-upstream-")
            .tempdir()?;
        let status_path = dir.path().join("status");
        let log = std::fs::File::create(dir.path().join("upstream.log"))?;
        let exe = std::env::current_exe().context("locating this benchmark binary")?;
        let mut child = Command::new(exe)
            .arg(SERVE_ARG)
            .arg(ca_pub)
            .arg(&status_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting the upstream server")?;
        let stdin = child.stdin.take().context("upstream stdin")?;
        let stdout = child.stdout.take().context("upstream stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let guard = |mut child: Child| {
            let _ = child.kill();
            let _ = child.wait();
        };
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                guard(child);
                bail!("the upstream server did not report its port within 30 s");
            }
        };
        let Some(port) = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
        else {
            guard(child);
            bail!(
                "the upstream server said {line:?}; log: {}",
                std::fs::read_to_string(dir.path().join("upstream.log")).unwrap_or_default()
            );
        };
        Ok(LightUpstream {
            port,
            child,
            _stdin: stdin,
            status_path,
            dir,
        })
    }

    /// `ssh://127.0.0.1:PORT`, for a route's `to:`.
    pub fn url(&self) -> String {
        format!("ssh://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its counters as of the last status write (at most half a second old).
    pub fn status(&self) -> Status {
        Status::parse(&std::fs::read_to_string(&self.status_path).unwrap_or_default())
    }

    /// What it wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("upstream.log")).unwrap_or_default()
    }
}

impl Drop for LightUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip() {
        let c = Counters::default();
        c.connections.store(3, Ordering::Relaxed);
        c.channels.store(2, Ordering::Relaxed);
        c.execs.store(9, Ordering::Relaxed);
        let s = Status::parse(&Status::render(&c));
        assert_eq!(
            s,
            Status {
                connections: 3,
                channels: 2,
                execs: 9,
                ..Status::default()
            }
        );
        assert_eq!(Status::parse("garbage x=1"), Status::default());
    }
}
