//! Errors of the upstream client. Every `Display` is one short line that can be shown
//! to the SSH user as is (no secrets, no internals); details worth logging are kept in
//! fields and `source()`.

use tether_store::StoreError;

use crate::cert::CertError;

/// Why an upstream connection or a request on it failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed or timed out.
    #[error("route \"{route}\": upstream {address} unreachable")]
    Unreachable {
        /// Route name.
        route: String,
        /// `host:port` of the upstream.
        address: String,
        /// The socket error (`None` when the connect timed out).
        #[source]
        source: Option<std::io::Error>,
    },
    /// The SSH handshake (version exchange, key exchange) failed.
    #[error("route \"{route}\": SSH handshake with upstream {address} failed")]
    Handshake {
        /// Route name.
        route: String,
        /// `host:port` of the upstream.
        address: String,
        /// What russh reported.
        detail: String,
    },
    /// The upstream did not finish the handshake or authentication in time.
    #[error("route \"{route}\": upstream {address} did not answer in time")]
    TimedOut {
        /// Route name.
        route: String,
        /// `host:port` of the upstream.
        address: String,
    },
    /// The upstream presented a host key other than the one pinned (`accept-new`) or
    /// recorded for it in the known_hosts file (`strict`).
    #[error("upstream host key for route \"{route}\" changed: expected {expected}, got {got}")]
    HostKeyChanged {
        /// Route name.
        route: String,
        /// Fingerprint of the trusted key (`SHA256:...`).
        expected: String,
        /// Fingerprint of the presented key.
        got: String,
    },
    /// `strict`: the presented host key (or host certificate) is not trusted by the
    /// known_hosts file.
    #[error("upstream host key for route \"{route}\" is not trusted: {fingerprint}")]
    HostKeyUntrusted {
        /// Route name.
        route: String,
        /// Fingerprint of the presented key (`SHA256:...`).
        fingerprint: String,
        /// Why (unknown host, revoked key, certificate not valid for the host, ...).
        reason: String,
    },
    /// The host key could not be checked at all (no or unreadable known_hosts file,
    /// undecodable pinned key). Fails closed.
    #[error("route \"{route}\": cannot verify the upstream host key")]
    HostKeyUnverifiable {
        /// Route name.
        route: String,
        /// What is missing or broken.
        reason: String,
    },
    /// The store failed while looking up or pinning the host key. Fails closed.
    #[error("route \"{route}\": cannot verify the upstream host key (store unavailable)")]
    Store {
        /// Route name.
        route: String,
        /// The store error.
        #[source]
        source: StoreError,
    },
    /// The grant has no login name (jump-host mode): there is nobody to log in as.
    #[error("route \"{route}\": no login name for the upstream")]
    NoLogin {
        /// Route name.
        route: String,
    },
    /// The upstream rejected the certificate login.
    #[error("upstream refused the certificate for login \"{login}\"")]
    AuthRefused {
        /// The upstream login name.
        login: String,
    },
    /// The user certificate or the ephemeral key could not be made.
    #[error("cannot issue the upstream certificate: {0}")]
    Certificate(#[from] CertError),
    /// The upstream refused to open a channel.
    #[error("upstream refused to open the channel")]
    ChannelOpenRefused {
        /// russh's description of the failure.
        detail: String,
    },
    /// The upstream refused a global request (e.g. `tcpip-forward`).
    #[error("upstream refused the request")]
    RequestRefused,
    /// The upstream did not answer a channel request in time.
    #[error("upstream did not answer the channel request in time")]
    RequestTimedOut,
    /// The upstream connection or the channel is gone.
    #[error("upstream connection closed")]
    Closed,
}

impl UpstreamError {
    /// Maps a russh error from an established connection: a refusal stays a refusal,
    /// everything else means the connection or channel is gone.
    pub(crate) fn from_russh(err: russh::Error) -> UpstreamError {
        match err {
            russh::Error::ChannelOpenFailure(reason) => UpstreamError::ChannelOpenRefused {
                detail: format!("{reason:?}"),
            },
            russh::Error::RequestDenied => UpstreamError::RequestRefused,
            _ => UpstreamError::Closed,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_what_matters() {
        let e = UpstreamError::HostKeyChanged {
            route: "prod".into(),
            expected: "SHA256:aaa".into(),
            got: "SHA256:bbb".into(),
        };
        assert_eq!(
            e.to_string(),
            "upstream host key for route \"prod\" changed: expected SHA256:aaa, got SHA256:bbb"
        );
        let e = UpstreamError::Unreachable {
            route: "prod".into(),
            address: "10.0.0.5:22".into(),
            source: None,
        };
        assert_eq!(
            e.to_string(),
            "route \"prod\": upstream 10.0.0.5:22 unreachable"
        );
        let e = UpstreamError::AuthRefused { login: "x".into() };
        assert_eq!(
            e.to_string(),
            "upstream refused the certificate for login \"x\""
        );
    }
}
