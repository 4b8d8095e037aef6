//! Live SSH connections as the operator console shows them (SPEC §5): one
//! [`LiveSession`] per authenticated connection, made by the replica that holds it,
//! published through the store so every replica's console and the CLI list all of
//! them, and ended by id wherever it lives.

use crate::time::Timestamp;

/// One authenticated SSH connection, as its replica last reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveSession {
    /// `<replica>-<connection>`: unique among the replicas sharing a store.
    pub id: String,
    /// The replica holding the connection.
    pub replica: String,
    /// The user (IdP subject).
    pub user_id: String,
    /// The user's email.
    pub email: String,
    /// The web session the key's binding was approved in.
    pub session_id: String,
    /// `sshkey-SHA256:…`.
    pub binding_id: String,
    /// `SHA256:…` of the client's key.
    pub fingerprint: String,
    /// The route (`None`: the internal CLI, or jump-host mode before a hop).
    pub route: Option<String>,
    /// The login name asked for.
    pub login: String,
    /// The client's address (`ip:port`).
    pub source: String,
    /// The client's identification line (`SSH-2.0-OpenSSH_9.2p1`).
    pub client_version: String,
    /// When the connection authenticated.
    pub started_at: Timestamp,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// When a byte last moved either way.
    pub last_active: Timestamp,
}

impl LiveSession {
    /// How long nothing moved, at `now`.
    pub fn idle(&self, now: Timestamp) -> std::time::Duration {
        self.last_active.until(now)
    }
}

/// The live session id of connection `conn` on `replica`.
pub fn session_id(replica: &str, conn: u64) -> String {
    format!("{replica}-{conn}")
}

/// Whether `id` has the shape of a live session id (bounded, printable): anything
/// else is refused before it reaches the store.
pub fn is_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_replica_and_connection() {
        assert_eq!(session_id("a1b2c3d4", 17), "a1b2c3d4-17");
        assert!(is_session_id("a1b2c3d4-17"));
        assert!(!is_session_id(""));
        assert!(!is_session_id("a b"));
        assert!(!is_session_id("a'; DROP"));
        assert!(!is_session_id(&"a".repeat(65)));
    }

    #[test]
    fn idle_is_time_since_last_activity() {
        let s = LiveSession {
            id: "r-1".into(),
            replica: "r".into(),
            user_id: "u".into(),
            email: "e".into(),
            session_id: "s".into(),
            binding_id: "b".into(),
            fingerprint: "f".into(),
            route: None,
            login: "l".into(),
            source: "127.0.0.1:1".into(),
            client_version: "SSH-2.0-x".into(),
            started_at: Timestamp(1_000),
            bytes_in: 0,
            bytes_out: 0,
            last_active: Timestamp(4_000),
        };
        assert_eq!(s.idle(Timestamp(10_000)).as_secs(), 6);
    }
}
