//! The accept loop and the russh server configuration.
//!
//! [`run`] takes its listener and a cancellation token (STYLE habits 2 and 3): every
//! accepted connection becomes a task on one `TaskTracker`, inside a span carrying
//! the connection id and peer (user, key fingerprint and route are recorded on it
//! later). Cancelling the token stops accepting, tells every client the server is
//! shutting down, and waits a bounded time for the connections to end.

mod conn;
mod workers;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};
use russh::{cipher, kex, mac, MethodKind, MethodSet, Preferred, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admission::Upstreams;
use crate::context::Ctx;
use crate::gate::{self, CodeBudget, Gate};
use crate::SshDeps;

/// How long shutdown waits for connections to end after telling them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Constant-time floor for rejections (small: the gateway has no passwords).
const AUTH_REJECTION_TIME: Duration = Duration::from_millis(50);
/// A connection with no traffic at all for this long is dropped (keepalives count).
const INACTIVITY_TIMEOUT: Duration = Duration::from_secs(300);
/// Keepalive probe interval once nothing was heard from the client.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Unanswered keepalives before the connection is considered dead.
const KEEPALIVE_MAX: usize = 3;

/// Serves SSH on `listener` until `shutdown` is cancelled.
///
/// Also runs, in the same task tree, the registry's watch of the store's change
/// feed (revocations, §5) and its minutely policy re-check of live connections
/// (§6). Returns after the connections ended or the shutdown grace period passed.
pub async fn run(
    listener: TcpListener,
    deps: SshDeps,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if deps.host_keys.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no SSH host keys configured",
        ));
    }
    let ctx = context(deps);
    let workers = workers::Workers::per_core()?;
    let tracker = TaskTracker::new();
    tracker.spawn(
        ctx.registry
            .clone()
            .recheck_policies_periodically(shutdown.child_token()),
    );
    // Subscribed before accepting, so no revocation can slip past a connection.
    tracker.spawn(
        ctx.registry
            .clone()
            .watch(ctx.store.clone(), shutdown.child_token()),
    );
    tracing::info!(
        address = ?listener.local_addr().ok(),
        max_unauthenticated = ctx.gate.max_total(),
        "SSH listening"
    );
    accept_loop(&listener, &ctx, &workers, &tracker, &shutdown).await;
    drop(listener);
    tracker.close();
    tracing::info!(connections = tracker.len(), "SSH shutting down");
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "SSH connections still open after the grace period"
        );
    }
    // Ends the worker threads; connections still open past the grace are dropped.
    workers.stop();
    Ok(())
}

/// What every connection shares, made from the server's dependencies.
fn context(deps: SshDeps) -> Arc<Ctx> {
    let russh = Arc::new(russh_config(
        deps.host_keys,
        deps.config.ssh_sign_in_timeout,
    ));
    let limits = &deps.config.limits;
    let max_unauthenticated = unauthenticated_cap(limits.ssh_max_unauthenticated);
    let gate = Gate::new(
        max_unauthenticated,
        limits.ssh_max_unauthenticated_per_source,
        Some(deps.registry.metrics().clone()),
    );
    let codes = CodeBudget::new(limits.ssh_sign_in_codes_per_source);
    let live = deps.registry.adopt_config(deps.config.clone());
    let metrics = deps.registry.metrics().clone();
    Arc::new(Ctx {
        upstreams: Upstreams {
            user_ca: deps.user_ca,
            store: deps.store.clone(),
            config: live.clone(),
            metrics: metrics.clone(),
        },
        live,
        store: deps.store,
        clock: deps.clock,
        registry: deps.registry,
        metrics,
        russh,
        waiters: Default::default(),
        gate,
        codes,
        recordings_dir: deps.recordings_dir.clone(),
    })
}

/// Accepts until shutdown: each connection passes the gate, then runs on a worker
/// in the tracker. Accept errors (a reset before accept, descriptor exhaustion)
/// are survived with a growing pause.
async fn accept_loop(
    listener: &TcpListener,
    ctx: &Arc<Ctx>,
    workers: &workers::Workers,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let next_id = AtomicU64::new(1);
    let mut backoff = Duration::from_millis(50);
    let refusals = Throttle::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(50);
                let slot = match ctx.gate.admit(peer.ip()) {
                    Ok(slot) => slot,
                    Err(refused) => {
                        refuse_early(&tcp, refused, ctx, &refusals);
                        continue;
                    }
                };
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let connection =
                    connection(id, tcp, peer, ctx.clone(), shutdown.child_token(), slot);
                if let Some(connection) = connection {
                    workers.spawn(tracker.track_future(connection));
                }
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One accepted connection as a future for a worker, in its own span; `None` if
/// the socket cannot be handed over.
fn connection(
    id: u64,
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    token: CancellationToken,
    slot: gate::Slot,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let span = tracing::info_span!(
        "ssh_conn",
        conn = id,
        peer = %peer,
        user = tracing::field::Empty,
        fingerprint = tracing::field::Empty,
        route = tracing::field::Empty,
    );
    // Handed to a worker as a std socket: it joins that worker's reactor.
    let tcp = match tcp.into_std() {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(peer = %peer, "cannot hand over accepted socket: {e}");
            return None;
        }
    };
    let connection = async move {
        match TcpStream::from_std(tcp) {
            Ok(tcp) => conn::serve(id, tcp, peer, ctx, token, slot).await,
            Err(e) => tracing::warn!("cannot adopt accepted socket: {e}"),
        }
    };
    Some(connection.instrument(span))
}

/// File descriptors kept for everything that is not an SSH connection (the web
/// app, the store, logs, upstream DNS).
const FD_RESERVE: u64 = 256;

/// The unauthenticated-connection cap in force: the configured one, lowered so
/// that unauthenticated connections (one descriptor each, two once an upstream is
/// connected) cannot exhaust the process's descriptor limit and starve the web app
/// and authenticated users. The soft limit is raised to the hard one first.
fn unauthenticated_cap(configured: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return configured;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    // Half the budget at most goes to connections nobody has authenticated.
    let budget = usize::try_from(soft.saturating_sub(FD_RESERVE) / 2).unwrap_or(usize::MAX);
    let cap = configured.min(budget.max(16));
    if cap < configured {
        tracing::warn!(
            configured,
            cap,
            nofile = soft,
            "ssh_max_unauthenticated lowered to fit the open-file limit (raise ulimit -n)"
        );
    }
    cap
}

/// Logs a burst of the same event at most once a second (with how many were not
/// logged), so a flood cannot flood the log.
#[derive(Default)]
struct Throttle {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// `Some(suppressed since the last line)` when a line may be written now.
    fn allow(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_second.swap(now, Ordering::Relaxed);
        if last == now {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        } else {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        }
    }
}

/// Turns away a connection the gate refused: one line (RFC 4253 allows text before
/// the identification string; OpenSSH prints it), then close.
fn refuse_early(tcp: &TcpStream, refused: gate::Refused, ctx: &Ctx, throttle: &Throttle) {
    let _ = tcp.try_write(format!("tether: {refused}\r\n").as_bytes());
    ctx.metrics.connections_shed.inc(refused.label());
    if let Some(suppressed) = throttle.allow() {
        let peer = tcp.peer_addr().ok();
        tracing::warn!(
            ?peer,
            suppressed,
            reason = refused.label(),
            "connection refused: {refused}"
        );
    }
}

/// The russh server configuration: identification, algorithms, limits.
///
/// The inactivity timeout must outlast the longest sign-in wait: russh does not
/// poll its timers while an authentication callback waits, and checks the
/// (by then elapsed) inactivity deadline when it writes the answer.
pub(crate) fn russh_config(
    host_keys: Vec<PrivateKey>,
    sign_in_timeout: Duration,
) -> russh::server::Config {
    let inactivity = INACTIVITY_TIMEOUT.max(sign_in_timeout + Duration::from_secs(60));
    russh::server::Config {
        server_id: SshId::Standard(format!("SSH-2.0-tether_{}", env!("CARGO_PKG_VERSION")).into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: AUTH_REJECTION_TIME,
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: host_keys,
        preferred: preferred(),
        // The actor enforces the limits of §3.5 with its own messages; russh's own
        // cap sits one above as a backstop.
        max_auth_attempts: crate::actor::MAX_AUTH_FAILURES as usize + 1,
        inactivity_timeout: Some(inactivity),
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        ..Default::default()
    }
}

/// The client-facing algorithm lists: what OpenSSH 9.x's sshd offers by default, in
/// its order, minus what russh does not implement (`sntrup761x25519-sha512`, the
/// `umac-*` MACs) and plus `mlkem768x25519-sha256` (OpenSSH 9.9's default) first.
/// Clients built on libssh2 1.10 (curl, PHP, libgit2) need the non-ETM HMACs and the
/// classic key exchanges; nothing here is broken (no SHA-1 key exchange, no `ssh-rsa`
/// signatures, no CBC ciphers), and `docs/CLIENTS.md` lists what is left out and why.
fn preferred() -> Preferred {
    Preferred {
        kex: vec![
            kex::MLKEM768X25519_SHA256,
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::ECDH_SHA2_NISTP256,
            kex::ECDH_SHA2_NISTP384,
            kex::ECDH_SHA2_NISTP521,
            kex::DH_GEX_SHA256,
            kex::DH_G16_SHA512,
            kex::DH_G18_SHA512,
            kex::DH_G14_SHA256,
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]
        .into(),
        key: vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]
        .into(),
        cipher: vec![
            cipher::CHACHA20_POLY1305,
            cipher::AES_128_CTR,
            cipher::AES_192_CTR,
            cipher::AES_256_CTR,
            cipher::AES_128_GCM,
            cipher::AES_256_GCM,
        ]
        .into(),
        mac: vec![
            mac::HMAC_SHA256_ETM,
            mac::HMAC_SHA512_ETM,
            mac::HMAC_SHA1_ETM,
            mac::HMAC_SHA256,
            mac::HMAC_SHA512,
            mac::HMAC_SHA1,
        ]
        .into(),
        ..Preferred::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identification_and_methods() {
        let c = russh_config(Vec::new(), Duration::from_secs(900));
        let SshId::Standard(id) = &c.server_id else {
            unreachable!("standard id")
        };
        assert_eq!(
            id.as_ref(),
            format!("SSH-2.0-tether_{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(&*c.methods, &[MethodKind::PublicKey]);
        assert!(c.auth_rejection_time <= Duration::from_millis(100));
        assert!(
            c.inactivity_timeout > Some(Duration::from_secs(900)),
            "outlasts a sign-in"
        );
    }

    #[test]
    fn no_legacy_algorithms() {
        let p = preferred();
        assert!(
            !p.key.contains(&Algorithm::Rsa { hash: None }),
            "no ssh-rsa (SHA-1)"
        );
        assert!(p.kex.iter().all(|k| !k.as_ref().contains("sha1")));
        assert!(p.cipher.iter().all(|c| !c.as_ref().contains("cbc")));
    }

    #[test]
    fn what_libssh2_1_10_needs_is_offered() {
        // libssh2 1.10 (Debian 12): no ETM MACs, no AES-GCM.
        let p = preferred();
        assert!(p.mac.contains(&mac::HMAC_SHA256));
        assert!(p.cipher.contains(&cipher::AES_128_CTR));
        assert!(p.kex.contains(&kex::ECDH_SHA2_NISTP256));
        assert!(p.kex.contains(&kex::DH_G14_SHA256));
        // Every name is one russh implements.
        let extensions = ["ext-info-", "kex-strict-"];
        for k in p
            .kex
            .iter()
            .filter(|k| !extensions.iter().any(|e| k.as_ref().starts_with(e)))
        {
            assert!(kex::ALL_KEX_ALGORITHMS.contains(&k), "{k:?}");
        }
        for m in p.mac.iter() {
            assert!(mac::ALL_MAC_ALGORITHMS.contains(&m), "{m:?}");
        }
    }
}
