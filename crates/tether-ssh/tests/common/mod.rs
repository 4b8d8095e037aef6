//! Small helpers for the integration tests: a gateway on 127.0.0.1:0 with a memory
//! store, client keys from `ssh-keygen`, the real OpenSSH client, and a "browser"
//! that decides sign-in codes directly through the store.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod flaky;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_core::config::{
    Config, HostKeyPolicy, IdpConfig, LogFormat, Route, RuntimeFlags, StorageType,
};
use tether_core::{Clock, Identity, Session, SystemClock};
use tether_ssh::{Registry, SshDeps};
use tether_store::memory::MemoryStore;
use tether_store::Store;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const BASE_URL: &str = "https://auth.example.com";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn config(sign_in_timeout: Duration) -> Config {
    Config {
        address: "127.0.0.1:0".into(),
        insecure_server: true,
        certificate_file: None,
        certificate_key_file: None,
        authenticate_service_url: BASE_URL.into(),
        idp: IdpConfig {
            provider: "oidc".into(),
            provider_url: "https://idp.example.com".into(),
            client_id: "tether".into(),
            client_secret: None,
            client_secret_file: None,
            scopes: vec!["openid".into(), "email".into()],
        },
        assume_email_verified: false,
        session_refresh: Default::default(),
        cookie_secret: None,
        cookie_secret_file: None,
        cookie_name: "_pomerium".into(),
        cookie_expire: Duration::from_secs(14 * 3600),
        ssh_address: Some("127.0.0.1:0".into()),
        ssh_host_key_files: vec![],
        ssh_host_keys: vec![],
        ssh_user_ca_key_file: None,
        ssh_user_ca_key: None,
        storage_type: StorageType::Memory,
        storage_connection_string: None,
        runtime_flags: RuntimeFlags::default(),
        metrics_address: None,
        metrics_basic_auth: None,
        routes: vec![Route {
            name: "prod".into(),
            to: "127.0.0.1:1".into(),
            failover: Vec::new(),
            allow_any_authenticated_user: true,
            policy: None,
            line: 1,
        }],
        upstream_limits: Default::default(),
        data_dir: None,
        ssh_binding_max_ttl: Duration::from_secs(48 * 3600),
        ssh_sign_in_timeout: sign_in_timeout,
        ssh_upstream_known_hosts_file: None,
        ssh_upstream_host_key_policy: HostKeyPolicy::AcceptNew,
        limits: Default::default(),
        log_format: LogFormat::Text,
        audit_log: None,
        dev_idp_users: vec![],
        administrators: None,
        signout_redirect_url: None,
        workload_identity: Vec::new(),
        recording: Default::default(),
        recording_storage: Default::default(),
    }
}

pub struct Gateway {
    pub addr: SocketAddr,
    /// The user CA's public key (upstream sshds trust it).
    pub user_ca: russh::keys::PublicKey,
    pub store: Arc<MemoryStore>,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn start(sign_in_timeout: Duration) -> Gateway {
    let store = Arc::new(MemoryStore::new());
    start_with(sign_in_timeout, store.clone(), store).await
}

/// A gateway using `served` as its store; the test drives `store` directly.
pub async fn start_with(
    sign_in_timeout: Duration,
    served: Arc<dyn Store>,
    store: Arc<MemoryStore>,
) -> Gateway {
    start_full(config(sign_in_timeout), served, store).await
}

/// A gateway with `config` and a fresh memory store.
pub async fn start_config(config: Config) -> Gateway {
    let store = Arc::new(MemoryStore::new());
    start_full(config, store.clone(), store).await
}

async fn start_full(config: Config, served: Arc<dyn Store>, store: Arc<MemoryStore>) -> Gateway {
    init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Arc::new(Registry::new());
    let host_key = random_key();
    let user_ca = random_key();
    let user_ca_public = user_ca.public_key().clone();
    let deps = SshDeps {
        config: Arc::new(config),
        store: served,
        host_keys: vec![host_key],
        user_ca: Arc::new(user_ca),
        clock: Arc::new(SystemClock),
        registry: registry.clone(),
        recordings_dir: None,
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tether_ssh::run(listener, deps, shutdown.clone()));
    Gateway {
        addr,
        user_ca: user_ca_public,
        store,
        registry,
        shutdown,
        task,
    }
}

pub fn random_key() -> russh::keys::PrivateKey {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    russh::keys::PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
        &seed,
    ))
}

pub struct ClientKey {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub fingerprint: String,
}

impl ClientKey {
    pub fn binding_id(&self) -> String {
        format!("sshkey-{}", self.fingerprint)
    }
}

pub fn keygen() -> ClientKey {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    let out = std::process::Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let fingerprint = text.split_whitespace().nth(1).unwrap().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{text}");
    ClientKey {
        _dir: dir,
        path,
        fingerprint,
    }
}

/// A real `ssh-agent` on a socket of its own, holding one fresh key; the agent is
/// killed when this is dropped.
pub struct TestAgent {
    _dir: tempfile::TempDir,
    _agent: Child,
    /// The agent's socket (`SSH_AUTH_SOCK`).
    pub sock: PathBuf,
    /// The key it holds.
    pub key: ClientKey,
}

pub async fn start_agent() -> TestAgent {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("agent socket", Duration::from_secs(30), || sock.exists()).await;
    let key = keygen();
    let st = std::process::Command::new("ssh-add")
        .arg(&key.path)
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ssh-add failed");
    TestAgent {
        _dir: dir,
        _agent: agent,
        sock,
        key,
    }
}

pub fn ssh(
    gw: &Gateway,
    key: &ClientKey,
    user: &str,
    extra: &[&str],
    command: Option<&str>,
) -> SshRun {
    let mut cmd = Command::new("/usr/bin/ssh");
    cmd.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "ConnectTimeout=10",
        "-i",
    ])
    .arg(&key.path)
    .args(["-p", &gw.addr.port().to_string()])
    .args(extra)
    .arg("--")
    .arg(format!("{user}@127.0.0.1"));
    if let Some(c) = command {
        cmd.arg(c);
    }
    SshRun::spawn(cmd)
}

/// A running client process with its stderr streamed line by line.
pub struct SshRun {
    pub child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    stdout: tokio::task::JoinHandle<String>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl SshRun {
    pub fn spawn(mut cmd: Command) -> SshRun {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let stdout = tokio::spawn(async move {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s).await;
            s
        });
        let (tx, lines) = mpsc::unbounded_channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let all = stderr.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(err).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                all.lock().unwrap().push_str(&line);
                all.lock().unwrap().push('\n');
                let _ = tx.send(line);
            }
        });
        SshRun {
            child,
            lines,
            stderr,
            stdout,
        }
    }

    /// Waits for a stderr line containing `pat`.
    pub async fn line_with(&mut self, pat: &str, within: Duration) -> String {
        let found = tokio::time::timeout(within, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(pat) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no stderr line with {pat:?}; stderr so far:\n{}",
                self.stderr()
            ),
        }
    }

    /// The sign-in code from the printed URL.
    pub async fn code(&mut self) -> String {
        let line = self.line_with("user_code=", Duration::from_secs(15)).await;
        let url = line.trim();
        assert!(
            url.starts_with(&format!("{BASE_URL}/.pomerium/sign_in?user_code=")),
            "{url:?}"
        );
        url.rsplit('=').next().unwrap().to_string()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub async fn finish(mut self, within: Duration) -> Finished {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => panic!(
                "ssh still running after {within:?}; stderr:\n{}",
                self.stderr()
            ),
        };
        let stdout = (&mut self.stdout).await.unwrap();
        // Let the stderr reader drain.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Finished {
            status,
            stdout,
            stderr: self.stderr(),
        }
    }
}

pub fn session_for(email: &str) -> Session {
    session_lasting(email, Duration::from_secs(14 * 3600))
}

pub fn session_lasting(email: &str, lifetime: Duration) -> Session {
    let now = SystemClock.now();
    let mut claims = BTreeMap::new();
    claims.insert("email".to_string(), serde_json::json!(email));
    claims.insert("groups".to_string(), serde_json::json!(["sre", "dev"]));
    Session {
        id: format!("sess-{}", rand_suffix()),
        identity: Identity {
            subject: format!("sub-{email}"),
            email: email.to_string(),
            name: Some("Test User".into()),
            claims,
        },
        issued_at: now,
        expires_at: now.plus(lifetime),
    }
}

fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The browser: sign in as `email` and authorize `code`.
pub async fn approve(store: &MemoryStore, code: &str, email: &str) -> Session {
    approve_with(
        store,
        code,
        session_for(email),
        Duration::from_secs(48 * 3600),
    )
    .await
}

/// Authorizes `code` from web session `s`, with binding lifetime `max_ttl`.
pub async fn approve_with(
    store: &MemoryStore,
    code: &str,
    s: Session,
    max_ttl: Duration,
) -> Session {
    store.create_session(&s).await.unwrap();
    store
        .approve_request(code, &s, false, max_ttl, SystemClock.now())
        .await
        .unwrap();
    s
}

/// Signs `key` in as `email` through a full interactive connection running `whoami`.
pub async fn sign_in(gw: &Gateway, key: &ClientKey, email: &str) -> Session {
    let mut run = ssh(gw, key, "alice", &[], Some("whoami"));
    let code = run.code().await;
    let s = approve(&gw.store, &code, email).await;
    let done = run.finish(Duration::from_secs(15)).await;
    assert!(done.status.success(), "sign-in run failed: {}", done.stderr);
    s
}

/// Polls `f` until it is true.
pub async fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + within;
    while !f() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
