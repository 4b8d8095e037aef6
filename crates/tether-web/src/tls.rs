//! HTTPS on `address` (SPEC §2: `certificate_file`, `certificate_key_file`, rustls).
//!
//! [`server_config`] loads the PEM certificate chain and key; [`TlsListener`] is an
//! axum listener that accepts TCP connections and completes their TLS handshakes
//! off the accept path (each bounded in time, at most [`HANDSHAKES`] at once), so a
//! slow or silent client never holds up the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// How long a client gets to complete its TLS handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond this are closed at once.
pub const HANDSHAKES: usize = 256;
/// Handshaken connections waiting for the HTTP server.
const READY_QUEUE: usize = 64;

pub use rustls::ServerConfig;

/// The TLS server configuration from PEM files; `Err` is one line naming the file.
pub fn server_config(
    certificate_file: &str,
    certificate_key_file: &str,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(certificate_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("certificate_file {certificate_file}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate_file {certificate_file}: no PEM certificate in it"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(certificate_key_file)
        .map_err(|e| format!("certificate_key_file {certificate_key_file}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate_file / certificate_key_file: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections on a TCP listener, for [`crate::serve_tls`].
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    /// The accept loop; ends with the listener.
    _acceptor: AbortOnDropHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` until `shutdown`.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let permits = Arc::new(Semaphore::new(HANDSHAKES));
        // The acceptor belongs to the listener (aborted when it is dropped, so it
        // ends with the server task that owns the listener) and owns the handshakes
        // in progress (a JoinSet: they end with it). Nothing outlives the server.
        let acceptor_task = tokio::spawn(async move {
            let mut handshakes = JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("web accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "too many TLS handshakes in progress; closed");
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                handshakes.spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_WAIT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            drop(permit);
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            _acceptor: AbortOnDropHandle::new(acceptor_task),
        })
    }
}

impl crate::serve::Accept for TlsListener {
    type Io = TlsStream<TcpStream>;

    async fn next(&mut self) -> Option<(Self::Io, SocketAddr)> {
        // `None` once the acceptor stopped (shutdown): nothing more will come.
        self.ready.recv().await
    }
}

impl TlsListener {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}
