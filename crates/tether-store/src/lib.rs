//! tether-store: where sessions, sign-in requests, client bindings, identity bindings
//! and pinned upstream host keys live, behind one [`Store`] trait; with several
//! replicas, also each replica's live connection counts per binding.
//!
//! Backends: `memory` (tests, throwaway runs), `file` (embedded SQLite, WAL, the
//! default) and `postgres` (several replicas). Every state change commits in one
//! transaction and then appears on the change feed ([`StoreEvent`]) — in this process
//! at once, and in other processes sharing the database through the `events` outbox
//! table (tailed) or LISTEN/NOTIFY. The binding rules themselves come from
//! `tether-core`; this crate must not depend on russh or axum.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use tether_core::{BindingRequest, ClientBinding, Identity, IdentityBinding, Session, Timestamp};
use tokio::sync::broadcast;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod feed;
pub mod memory;
mod rules;
pub mod sql;

use std::sync::Arc;

pub use feed::{Feed, FEED_CAPACITY};
pub use tether_core::connection::LiveSession;

/// How long live counts that are no longer re-stamped are kept before
/// `purge_expired` deletes them (readers already ignore them once stale).
pub const LIVE_COUNTS_KEPT: Duration = Duration::from_secs(3600);
pub use memory::MemoryStore;
pub use sql::{Dialect, SqlStore};

/// Opens the store named by `databroker_storage_type` (`kind`) and
/// `databroker_storage_connection_string` (`conn`): `memory` (conn ignored), `file`
/// (SQLite path or `sqlite:` URL) or `postgres` (`postgres://…`). SQL backends run
/// their migrations and start their change-feed tailer before this returns, so it
/// must be called inside a tokio runtime.
pub async fn open(kind: &str, conn: &str) -> Result<Arc<dyn Store>, StoreError> {
    match kind {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        "file" => Ok(Arc::new(SqlStore::open_sqlite(conn).await?)),
        "postgres" => Ok(Arc::new(SqlStore::open_postgres(conn).await?)),
        other => Err(StoreError::Unavailable(format!(
            "unknown storage type {other:?} (expected file, memory or postgres)"
        ))),
    }
}

/// A change that committed. Published after the commit, never before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// A sign-in request was approved or denied (look it up for the outcome).
    RequestDecided {
        /// The code.
        code: String,
    },
    /// A client binding was created.
    BindingCreated {
        /// `sshkey-SHA256:...`
        binding_id: String,
        /// Owner.
        user_id: String,
    },
    /// A client binding was revoked; connections made with it must end.
    BindingRevoked {
        /// `sshkey-SHA256:...`
        binding_id: String,
        /// Plain-ASCII reason shown to the client (`revoked by alice@example.com`).
        reason: String,
    },
    /// A web session ended (sign-out); connections of its bindings must end.
    SessionEnded {
        /// Session id.
        session_id: String,
        /// Plain-ASCII reason.
        reason: String,
    },
    /// A web session's identity was refreshed at the IdP (new claims); connections
    /// of its bindings must be re-checked against their routes' policies.
    SessionRefreshed {
        /// Session id.
        session_id: String,
    },
    /// An identity binding (Remember me) was removed.
    IdentityBindingRemoved {
        /// `SHA256:...`
        fingerprint: String,
    },
    /// Someone ended one live SSH connection (operator console, `tether sessions
    /// kill`); the replica holding it closes it.
    ConnectionEnded {
        /// The live session id (`<replica>-<n>`).
        connection_id: String,
        /// Plain-ASCII reason shown to the client.
        reason: String,
    },
    /// The feed lagged or reconnected: consumers must re-check everything.
    Resync,
}

/// A store that cannot answer. Callers fail closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or returned an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded (corruption or a newer schema).
    #[error("store data invalid: {0}")]
    Corrupt(String),
}

/// Why a sign-in request could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// No request with this code (400 `code invalid`).
    #[error("code invalid")]
    NotFound,
    /// The code's lifetime is over (400 `expired`).
    #[error("expired")]
    Expired,
    /// Already approved or denied (409 `code already processed`).
    #[error("code already processed")]
    AlreadyDecided,
    /// The key is tied to another user; nothing changed and the request stays open.
    #[error("this key is bound to another user; that user must revoke it first")]
    KeyBoundToOtherUser,
    /// The deciding web session is gone or expired.
    #[error("session expired")]
    SessionGone,
    /// The store failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a revocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No such binding.
    #[error("binding not found")]
    NotFound,
    /// The binding belongs to another user (403); nothing changed.
    #[error("binding belongs to another user")]
    NotOwner,
    /// The store failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What approving a request did.
#[derive(Clone, Debug, PartialEq)]
pub struct Approval {
    /// The client binding created (or replaced) in the same transaction.
    pub binding: ClientBinding,
    /// Whether an identity binding (Remember me) was created too.
    pub remembered: bool,
}

/// What a sign-out did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignOut {
    /// Client bindings revoked (all of the user's).
    pub revoked_bindings: Vec<String>,
}

/// What cutting a user off removed ([`Store::cut_off_user`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutOff {
    /// Client bindings revoked.
    pub client_bindings: Vec<String>,
    /// Identity bindings (remembered keys) removed, by fingerprint.
    pub identity_bindings: Vec<String>,
    /// Web sessions ended.
    pub sessions: Vec<String>,
}

/// A web session due for an identity refresh at the IdP, claimed by one caller
/// ([`Store::claim_session_refreshes`]): no other caller gets it until its lease ends.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshClaim {
    /// Session id.
    pub session_id: String,
    /// The session's user (IdP subject).
    pub user_id: String,
    /// The refresh token as the web side stored it (sealed; never logged).
    pub token: String,
    /// The first failed attempt since the last success (IdP unreachable), if any.
    pub failing_since: Option<Timestamp>,
}

impl std::fmt::Debug for RefreshClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshClaim")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("token", &"[redacted]")
            .field("failing_since", &self.failing_since)
            .finish()
    }
}

/// A pinned upstream host key (`accept-new` policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedHostKey {
    /// `host:port` of the upstream.
    pub address: String,
    /// OpenSSH public key line (`ssh-ed25519 AAAA...`).
    pub public_key: String,
}

/// The storage interface. Every method is one transaction; every mutation that
/// matters to live connections publishes a [`StoreEvent`] after commit.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Readiness: is the database reachable?
    async fn ping(&self) -> Result<(), StoreError>;

    /// Subscribes to the change feed (this process's and other replicas' changes).
    /// `RecvError::Lagged` means events were lost: treat it as [`StoreEvent::Resync`].
    /// `RecvError::Closed` means the store was dropped.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;

    /// Stops the store's background tasks (the SQL backends' outbox tailer and
    /// PostgreSQL listener) and waits for them to end: the process calls it last,
    /// so nothing the store started outlives the process's task tree. The store
    /// keeps answering calls (without other processes' changes on its feed).
    async fn close(&self) {}

    // --- web sessions ---

    /// Stores a new session.
    async fn create_session(&self, session: &Session) -> Result<(), StoreError>;
    /// A session by id, whether or not expired (callers check `is_live`).
    async fn get_session(&self, id: &str) -> Result<Option<Session>, StoreError>;
    /// Ends a session and revokes ALL client bindings of its user, one transaction.
    /// Publishes `SessionEnded` and one `BindingRevoked` per binding. Unknown id: Ok(empty).
    async fn sign_out(&self, session_id: &str, reason: &str) -> Result<SignOut, StoreError>;

    // --- identity refresh at the IdP ---

    /// Gives session `session_id` a refresh token (`token`, sealed by the caller) and
    /// its first refresh time `due`. Unknown session: Ok (nothing to refresh).
    async fn set_session_refresh(
        &self,
        session_id: &str,
        token: &str,
        due: Timestamp,
    ) -> Result<(), StoreError>;
    /// Claims at most `limit` live sessions with a refresh token whose refresh is due
    /// at `now`, pushing each one's next refresh to `lease_until` in the same
    /// transaction, so another replica running the same loop does not refresh it too
    /// (a rotated refresh token used twice can revoke the whole grant).
    async fn claim_session_refreshes(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<RefreshClaim>, StoreError>;
    /// Stores the refreshed `identity` of session `session_id` (and the rotated
    /// `token`, if the IdP sent one), due again at `next_due`, failures cleared; the
    /// email on the user's client and identity bindings follows. Publishes
    /// `SessionRefreshed`. Returns false when the session is gone (nothing changed).
    async fn session_refreshed(
        &self,
        session_id: &str,
        identity: &Identity,
        token: Option<&str>,
        next_due: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Records a refresh attempt that could not reach the IdP at `now`: the first
    /// failure's time is kept (`failing_since`), the next attempt is at `retry_at`.
    async fn session_refresh_failed(
        &self,
        session_id: &str,
        now: Timestamp,
        retry_at: Timestamp,
    ) -> Result<(), StoreError>;

    // --- sign-in requests (codes) ---

    /// Returns the pending, unexpired request for `new.fingerprint` if there is one
    /// (one URL per key, §3.6), otherwise stores `new` and returns it.
    async fn open_request(
        &self,
        new: BindingRequest,
        now: Timestamp,
    ) -> Result<BindingRequest, StoreError>;
    /// A request by code.
    async fn get_request(&self, code: &str) -> Result<Option<BindingRequest>, StoreError>;
    /// Authorize, in ONE transaction: the request must be pending and unexpired, the
    /// session live, the key not tied to another user (tether_core::binding rules);
    /// then the client binding is written (replacing an invalid old one for the same
    /// key), the identity binding too when `remember`, and the request marked
    /// approved. Expiry = `client_binding_expiry(now, max_ttl, session.expires_at)`.
    /// Publishes `BindingCreated` and `RequestDecided`.
    async fn approve_request(
        &self,
        code: &str,
        session: &Session,
        remember: bool,
        max_ttl: Duration,
        now: Timestamp,
    ) -> Result<Approval, DecideError>;
    /// Deny: the request must be pending and unexpired. Publishes `RequestDecided`.
    async fn deny_request(
        &self,
        code: &str,
        user_id: &str,
        now: Timestamp,
    ) -> Result<(), DecideError>;
    /// Drops a pending request whose connection went away (no-op if decided/absent).
    async fn drop_request(&self, code: &str) -> Result<(), StoreError>;

    // --- client bindings ---

    /// The binding for a key fingerprint together with its session (if it still
    /// exists), whether or not valid — callers apply `ClientBinding::is_valid`.
    async fn binding_for_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<(ClientBinding, Option<Session>)>, StoreError>;
    /// A binding by id.
    async fn get_binding(&self, id: &str) -> Result<Option<ClientBinding>, StoreError>;
    /// Records a successful authentication with the binding.
    async fn touch_binding(&self, id: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Client bindings, all or one user's (by user id), newest first.
    async fn list_bindings(&self, user_id: Option<&str>) -> Result<Vec<ClientBinding>, StoreError>;
    /// Revokes a client binding. With `owner = Some(user)`, only if it belongs to
    /// that user (`NotOwner` otherwise, nothing changes). Publishes `BindingRevoked`.
    async fn revoke_binding(
        &self,
        id: &str,
        owner: Option<&str>,
        reason: &str,
    ) -> Result<ClientBinding, RevokeError>;

    // --- identity bindings (Remember me) ---

    /// The identity binding for a key, if any.
    async fn identity_binding_for_key(
        &self,
        fingerprint: &str,
    ) -> Result<Option<IdentityBinding>, StoreError>;
    /// Identity bindings, all or one user's.
    async fn list_identity_bindings(
        &self,
        user_id: Option<&str>,
    ) -> Result<Vec<IdentityBinding>, StoreError>;
    /// Removes an identity binding, own only when `owner` is given.
    /// Publishes `IdentityBindingRemoved`.
    async fn revoke_identity_binding(
        &self,
        fingerprint: &str,
        owner: Option<&str>,
    ) -> Result<IdentityBinding, RevokeError>;

    // --- upstream host keys (accept-new pinning) ---

    /// The pinned key for an upstream address.
    async fn pinned_host_key(&self, address: &str) -> Result<Option<PinnedHostKey>, StoreError>;
    /// Pins a key if none is pinned yet; returns the key now pinned (the existing
    /// one if another writer won).
    async fn pin_host_key(&self, key: &PinnedHostKey) -> Result<PinnedHostKey, StoreError>;

    // --- live connection counts (several replicas) ---

    /// Replaces what `replica` last published: its live SSH connections per client
    /// binding id (counts above zero), stamped `now`. An empty list withdraws it.
    async fn publish_live_counts(
        &self,
        replica: &str,
        counts: &[(String, u32)],
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Re-stamps what `replica` published with `now`, unchanged (its heartbeat).
    async fn refresh_live_counts(&self, replica: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Live connections per binding id among `binding_ids`, summed over the
    /// replicas other than `replica` whose last stamp is at or after `since`;
    /// binding ids without any are left out.
    async fn live_counts_elsewhere(
        &self,
        replica: &str,
        binding_ids: &[String],
        since: Timestamp,
    ) -> Result<HashMap<String, u32>, StoreError>;

    // --- live sessions (operator console) ---

    /// Replaces what `replica` last published: its live SSH connections, stamped
    /// `now`. An empty list withdraws it.
    async fn publish_live_sessions(
        &self,
        replica: &str,
        sessions: &[LiveSession],
        now: Timestamp,
    ) -> Result<(), StoreError>;
    /// Every replica's live connections whose replica stamped them at or after
    /// `since` (a replica that died drops out), oldest first.
    async fn live_sessions(&self, since: Timestamp) -> Result<Vec<LiveSession>, StoreError>;
    /// Asks whichever replica holds live connection `id` to end it with `reason`:
    /// publishes `ConnectionEnded` (no state changes).
    async fn end_live_session(&self, id: &str, reason: &str) -> Result<(), StoreError>;
    /// Cuts user `user_id` off in one transaction: every client binding revoked,
    /// every identity binding removed, every web session ended (with their refresh
    /// tokens). Publishes `BindingRevoked`, `IdentityBindingRemoved` and
    /// `SessionEnded` for each, so the user's connections end on every replica.
    async fn cut_off_user(&self, user_id: &str, reason: &str) -> Result<CutOff, StoreError>;

    // --- housekeeping ---

    /// Deletes expired sessions (publishing `SessionEnded` for each), expired
    /// bindings (publishing `BindingRevoked` with reason `binding expired`) and
    /// expired or decided requests older than a grace period, and live counts
    /// and live sessions not re-stamped for [`LIVE_COUNTS_KEPT`] (a replica that died).
    async fn purge_expired(&self, now: Timestamp) -> Result<(), StoreError>;
}
