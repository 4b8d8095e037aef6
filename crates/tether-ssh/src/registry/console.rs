//! What the operator console sees of this replica's connections (SPEC §5): each
//! authenticated connection's [`Shown`] facts (who, which key, route, login, where
//! from, which client, since when) plus its live byte counts and idle time, as
//! [`LiveSession`]s; and ending one by its live session id.
//!
//! Idle time is measured without touching the relay path: every snapshot compares
//! a connection's byte counts with the previous snapshot's and moves its
//! last-activity time when they changed, so it is as fine as the snapshots (the
//! publisher takes one every few seconds, and every console page view one more).

use tether_core::connection::{self, LiveSession};
use tether_core::Timestamp;

use super::{Entry, Registration, Registry};
use crate::stream::Probe;

/// How every reason for ending one connection begins (`session ended by an
/// administrator (…)`, `session ended by its owner`): the client is told that
/// line as it is, not as an access revocation.
pub const ENDED_BY: &str = "session ended by ";

/// The facts of one authenticated connection, fixed when it authenticated.
#[derive(Clone, Debug)]
pub(crate) struct Shown {
    pub(crate) conn: u64,
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) fingerprint: String,
    pub(crate) route: Option<String>,
    pub(crate) login: String,
    pub(crate) source: String,
    pub(crate) started_at: Timestamp,
    /// The client socket: identification line and byte counts.
    pub(crate) probe: Probe,
}

/// The last byte counts seen and since when they stand.
#[derive(Clone, Copy, Debug)]
pub(super) struct Activity {
    bytes: (u64, u64),
    since: Timestamp,
}

impl Registration {
    /// Attaches what the console shows of this (authenticated) connection.
    pub(crate) fn show(&self, shown: Shown) {
        let activity = Activity {
            bytes: shown.probe.byte_counts(),
            since: shown.started_at,
        };
        if let Some(e) = self.registry.lock().get_mut(&self.key) {
            e.shown = Some((Box::new(shown), activity));
        }
        self.registry.changed.notify_one();
    }
}

impl Entry {
    fn live_session(&mut self, replica: &str, now: Timestamp) -> Option<LiveSession> {
        let session_id = self.session_id.clone()?;
        let (shown, activity) = self.shown.as_mut()?;
        let bytes = shown.probe.byte_counts();
        if bytes != activity.bytes {
            *activity = Activity { bytes, since: now };
        }
        Some(LiveSession {
            id: connection::session_id(replica, shown.conn),
            replica: replica.to_string(),
            user_id: shown.user_id.clone(),
            email: shown.email.clone(),
            session_id,
            binding_id: self.binding_id.clone(),
            fingerprint: shown.fingerprint.clone(),
            route: shown.route.clone(),
            login: shown.login.clone(),
            source: shown.source.clone(),
            client_version: shown.probe.client_version().unwrap_or_default(),
            started_at: shown.started_at,
            bytes_in: bytes.0,
            bytes_out: bytes.1,
            last_active: activity.since,
        })
    }
}

impl Registry {
    /// This replica's id among the replicas sharing a store (the first part of
    /// its live session ids).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// This replica's authenticated connections, oldest first.
    pub fn live_sessions(&self) -> Vec<LiveSession> {
        let now = self.clock.now();
        let mut all: Vec<LiveSession> = self
            .lock()
            .values_mut()
            .filter(|e| !e.revoker.is_revoked())
            .filter_map(|e| e.live_session(&self.replica, now))
            .collect();
        all.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        all
    }

    /// Ends this replica's connection with live session id `id` (another
    /// replica's id, or one that is gone, ends nothing); returns how many ended.
    pub(crate) fn end_connection(&self, id: &str, reason: &str) -> usize {
        let Some(conn) = id
            .strip_prefix(self.replica.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            return 0;
        };
        self.revoke_where(reason, |e| {
            e.shown.as_ref().is_some_and(|(s, _)| s.conn == conn)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use tether_core::{Clock, SystemClock};
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::stream::ClientStream;

    async fn probe() -> (ClientStream, Probe, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let (stream, probe) = ClientStream::new(server);
        (stream, probe, client)
    }

    fn shown(conn: u64, probe: Probe) -> Shown {
        Shown {
            conn,
            user_id: "u-alice".into(),
            email: "alice@example.com".into(),
            fingerprint: "SHA256:a".into(),
            route: Some("prod".into()),
            login: "alice".into(),
            source: "127.0.0.1:40000".into(),
            started_at: SystemClock.now(),
            probe,
        }
    }

    #[tokio::test]
    async fn lists_authenticated_connections_and_ends_one_by_id() {
        let reg = Arc::new(Registry::for_replica("r1"));
        let (_s1, p1, _c1) = probe().await;
        let (mut s2, p2, mut c2) = probe().await;
        let a = reg.register("sshkey-SHA256:a");
        a.activate("sess-1");
        a.show(shown(7, p1));
        let b = reg.register("sshkey-SHA256:a");
        b.activate("sess-1");
        b.show(shown(8, p2));
        let pending = reg.register("sshkey-SHA256:b");

        // Bytes from the client count as activity.
        c2.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::io::AsyncReadExt::read(&mut s2, &mut buf)
            .await
            .unwrap();
        assert_eq!(n, 23);
        let live = reg.live_sessions();
        let ids: Vec<&str> = live.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["r1-7", "r1-8"]);
        let second = &live[1];
        assert_eq!(second.client_version, "SSH-2.0-OpenSSH_9.2p1");
        assert_eq!((second.bytes_in, second.bytes_out), (23, 0));
        assert_eq!(second.session_id, "sess-1");
        assert_eq!(second.route.as_deref(), Some("prod"));

        // Another replica's id, a malformed one or a gone one end nothing.
        assert_eq!(reg.end_connection("r2-7", "x"), 0);
        assert_eq!(reg.end_connection("r1-x", "x"), 0);
        assert_eq!(reg.end_connection("r1-99", "x"), 0);
        let reason = "session ended by an administrator (admin@example.com)";
        assert_eq!(reg.end_connection("r1-7", reason), 1);
        assert_eq!(a.revoker().revoked().await, reason);
        assert!(!b.revoker().is_revoked());
        assert!(!pending.revoker().is_revoked());
        // Ending: no longer listed.
        let ids: Vec<String> = reg.live_sessions().into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["r1-8"]);
    }
}
