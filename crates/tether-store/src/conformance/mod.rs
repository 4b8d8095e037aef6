//! The store conformance suite: one set of behaviour checks that every backend
//! (memory, SQLite, PostgreSQL) must pass, so the backends cannot drift apart.
//!
//! Compiled for this crate's tests and, for other crates, behind the `conformance`
//! feature. [`run_all`] runs every check against one store, sequentially; each check
//! uses fresh random keys and users, so a shared database (PostgreSQL in CI) may hold
//! other data, and checks on events wait for the expected event while skipping
//! unrelated ones (another replica's changes arrive on the same feed).
//! [`cross_process_feed`] needs two stores on one database (SQL backends only).
//! Test-support code: it panics on failure, like any test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod bindings;
mod console;
mod refresh;
mod requests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tether_core::{
    BindingDetails, BindingRequest, Clock, Identity, RequestStatus, Session, SystemClock,
    Timestamp, UserCode,
};
use tokio::sync::broadcast;

use crate::{Store, StoreEvent};

/// One hour.
pub(crate) const H: Duration = Duration::from_secs(3600);
/// The default `ssh_binding_max_ttl`.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(48 * 3600);
/// How long a check waits for an event before failing.
const EVENT_WAIT: Duration = Duration::from_secs(5);

/// Runs every single-store check against `store`, one after the other (the backends'
/// tests run each check as its own test instead: [`checks`], [`CHECKS`]).
pub async fn run_all(store: Arc<dyn Store>) {
    for (_, check) in CHECKS {
        check(Arc::clone(&store)).await;
    }
}

/// A conformance check: runs against the store it is given and panics on failure.
pub type Check = fn(Arc<dyn Store>) -> futures::future::BoxFuture<'static, ()>;

/// Every single-store check by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("ping", |s| Box::pin(checks::ping(s))),
    ("sessions_crud", |s| Box::pin(checks::sessions_crud(s))),
    ("open_request_reuses_pending_code", |s| {
        Box::pin(checks::open_request_reuses_pending_code(s))
    }),
    ("drop_request_only_drops_pending", |s| {
        Box::pin(checks::drop_request_only_drops_pending(s))
    }),
    ("approve_creates_binding_and_decides_request", |s| {
        Box::pin(checks::approve_creates_binding_and_decides_request(s))
    }),
    ("approve_refusals", |s| {
        Box::pin(checks::approve_refusals(s))
    }),
    ("deny", |s| Box::pin(checks::deny(s))),
    ("key_bound_to_other_user_via_client_binding", |s| {
        Box::pin(checks::key_bound_to_other_user_via_client_binding(s))
    }),
    ("key_bound_to_other_user_via_identity_binding", |s| {
        Box::pin(checks::key_bound_to_other_user_via_identity_binding(s))
    }),
    ("invalid_binding_of_other_user_is_replaced", |s| {
        Box::pin(checks::invalid_binding_of_other_user_is_replaced(s))
    }),
    ("remember_creates_identity_binding", |s| {
        Box::pin(checks::remember_creates_identity_binding(s))
    }),
    ("binding_expiry_is_min_of_ttl_and_session", |s| {
        Box::pin(checks::binding_expiry_is_min_of_ttl_and_session(s))
    }),
    ("binding_invalid_once_session_signed_out", |s| {
        Box::pin(checks::binding_invalid_once_session_signed_out(s))
    }),
    ("sign_out_revokes_all_bindings_of_the_user", |s| {
        Box::pin(checks::sign_out_revokes_all_bindings_of_the_user(s))
    }),
    ("revoke_binding_checks_owner", |s| {
        Box::pin(checks::revoke_binding_checks_owner(s))
    }),
    ("revoke_identity_binding_checks_owner", |s| {
        Box::pin(checks::revoke_identity_binding_checks_owner(s))
    }),
    ("touch_and_list_bindings", |s| {
        Box::pin(checks::touch_and_list_bindings(s))
    }),
    ("concurrent_approvals_for_one_key", |s| {
        Box::pin(checks::concurrent_approvals_for_one_key(s))
    }),
    ("pinned_host_keys", |s| {
        Box::pin(checks::pinned_host_keys(s))
    }),
    ("purge_expired", |s| Box::pin(checks::purge_expired(s))),
    ("live_counts", |s| Box::pin(checks::live_counts(s))),
    ("session_refresh", |s| Box::pin(checks::session_refresh(s))),
    ("live_sessions", |s| Box::pin(checks::live_sessions(s))),
    ("end_live_session", |s| {
        Box::pin(checks::end_live_session(s))
    }),
    ("cut_off_user", |s| Box::pin(checks::cut_off_user(s))),
];

/// The single-store checks, each taking the store it runs against, so a backend's
/// test file can run each one as its own test (a failure names itself).
pub mod checks {
    use std::sync::Arc;

    use super::{bindings, console, refresh, requests};
    use crate::Store;

    /// The store answers a ping.
    pub async fn ping(store: Arc<dyn Store>) {
        store.ping().await.expect("ping");
    }

    macro_rules! checks_by_ref {
        ($($module:ident :: $name:ident),* $(,)?) => {$(
            #[doc = concat!("`", stringify!($module), "::", stringify!($name), "`.")]
            pub async fn $name(store: Arc<dyn Store>) {
                $module::$name(store.as_ref()).await
            }
        )*};
    }

    macro_rules! checks_by_arc {
        ($($module:ident :: $name:ident),* $(,)?) => {$(
            #[doc = concat!("`", stringify!($module), "::", stringify!($name), "`.")]
            pub async fn $name(store: Arc<dyn Store>) {
                $module::$name(store).await
            }
        )*};
    }

    checks_by_ref!(
        requests::sessions_crud,
        requests::open_request_reuses_pending_code,
        requests::drop_request_only_drops_pending,
        requests::approve_creates_binding_and_decides_request,
        requests::approve_refusals,
        requests::deny,
        requests::purge_expired,
        requests::live_counts,
        bindings::key_bound_to_other_user_via_client_binding,
        bindings::key_bound_to_other_user_via_identity_binding,
        bindings::invalid_binding_of_other_user_is_replaced,
        bindings::remember_creates_identity_binding,
        bindings::binding_expiry_is_min_of_ttl_and_session,
        bindings::binding_invalid_once_session_signed_out,
        bindings::sign_out_revokes_all_bindings_of_the_user,
        bindings::revoke_binding_checks_owner,
        bindings::revoke_identity_binding_checks_owner,
        bindings::touch_and_list_bindings,
        refresh::session_refresh,
        console::live_sessions,
        console::end_live_session,
        console::cut_off_user,
    );
    checks_by_arc!(
        bindings::concurrent_approvals_for_one_key,
        requests::pinned_host_keys,
    );
}

/// Two stores on the same database (two processes or replicas): a revocation made
/// through `a` reaches `b`'s feed as `BindingRevoked` within 2 s, and `b` does not
/// see its own changes twice.
pub async fn cross_process_feed(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let t0 = now();
    let alice = user("alice");
    let sa = new_session(a.as_ref(), &alice, t0, 14 * H).await;
    let fp = fingerprint();
    let req = a.open_request(request(&fp, t0, 15 * 60), t0).await.unwrap();
    let mut rx_b = b.subscribe();
    let approval = a
        .approve_request(req.code.as_str(), &sa, false, MAX_TTL, t0)
        .await
        .unwrap();
    let id = approval.binding.id.clone();
    wait_for(
        &mut rx_b,
        "BindingCreated from the other store",
        |e| matches!(e, StoreEvent::BindingCreated { binding_id, .. } if *binding_id == id),
    )
    .await;

    // `b` sees the binding `a` wrote, and `a`'s revocation within 2 s.
    assert!(b.binding_for_key(&fp).await.unwrap().is_some());
    let started = tokio::time::Instant::now();
    a.revoke_binding(&id, Some(&alice), "revoked by alice@example.com")
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match rx_b.recv().await {
                Ok(StoreEvent::BindingRevoked { binding_id, reason }) if binding_id == id => {
                    return reason;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("feed closed"),
            }
        }
    })
    .await
    .expect("BindingRevoked reached the other store within 2 s");
    assert_eq!(ev, "revoked by alice@example.com");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A change made through `b` is published on `b` once, not again by its tailer.
    let mut rx_b = b.subscribe();
    let sb = new_session(b.as_ref(), &alice, t0, 14 * H).await;
    b.sign_out(&sb.id, "signed out").await.unwrap();
    let ended = |e: &StoreEvent| matches!(e, StoreEvent::SessionEnded { session_id, .. } if *session_id == sb.id);
    wait_for(&mut rx_b, "SessionEnded on the same store", ended).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        drain(&mut rx_b).iter().all(|e| !ended(e)),
        "own event republished by the tailer"
    );
}

// --- fixtures shared by the checks ---

/// The wall clock; every check offsets from it so shared databases stay consistent.
pub(crate) fn now() -> Timestamp {
    SystemClock.now()
}

/// A random token for unique names.
pub(crate) fn token() -> String {
    UserCode::generate().unwrap().as_str().to_string()
}

/// A unique user id (IdP subject) with a readable prefix.
pub(crate) fn user(name: &str) -> String {
    format!("{name}-{}", token())
}

/// A unique key fingerprint.
pub(crate) fn fingerprint() -> String {
    format!("SHA256:{}", token())
}

/// Creates and stores a session of `user_id` issued at `t0`, living `life`.
pub(crate) async fn new_session(
    store: &dyn Store,
    user_id: &str,
    t0: Timestamp,
    life: Duration,
) -> Session {
    let mut claims = BTreeMap::new();
    claims.insert("groups".to_string(), serde_json::json!(["sre", "dev"]));
    let s = Session {
        id: format!("sess-{}", token()),
        identity: Identity {
            subject: user_id.to_string(),
            email: format!("{user_id}@example.com"),
            name: Some("Test User".into()),
            claims,
        },
        issued_at: t0,
        expires_at: t0.plus(life),
    };
    store.create_session(&s).await.unwrap();
    s
}

/// A pending request for `fp` issued at `t0`, living `secs` seconds.
pub(crate) fn request(fp: &str, t0: Timestamp, secs: u64) -> BindingRequest {
    BindingRequest {
        code: UserCode::generate().unwrap(),
        fingerprint: fp.to_string(),
        key_type: "ssh-ed25519".into(),
        public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE test".into(),
        details: BindingDetails {
            source_addr: "192.0.2.7:50022".into(),
            client_version: "SSH-2.0-OpenSSH_9.2p1".into(),
            route: Some("prod".into()),
            login: "alice".into(),
        },
        issued_at: t0,
        expires_at: t0.plus(Duration::from_secs(secs)),
        status: RequestStatus::Pending,
    }
}

/// Waits (up to 5 s) for an event matching `pred`, skipping others.
pub(crate) async fn wait_for(
    rx: &mut broadcast::Receiver<StoreEvent>,
    what: &str,
    pred: impl Fn(&StoreEvent) -> bool,
) -> StoreEvent {
    let found = tokio::time::timeout(EVENT_WAIT, async {
        loop {
            match rx.recv().await {
                Ok(ev) if pred(&ev) => return ev,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("feed closed"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no event within {EVENT_WAIT:?}: {what}"))
}

/// Everything already delivered to `rx`.
pub(crate) fn drain(rx: &mut broadcast::Receiver<StoreEvent>) -> Vec<StoreEvent> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(ev) => out.push(ev),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

/// Whether an event concerns the key `fp` (its binding id) or the code `code`.
pub(crate) fn about(ev: &StoreEvent, fp: &str, code: &str) -> bool {
    let id = tether_core::binding::binding_id(fp);
    match ev {
        StoreEvent::RequestDecided { code: c } => c == code,
        StoreEvent::BindingCreated { binding_id, .. }
        | StoreEvent::BindingRevoked { binding_id, .. } => *binding_id == id,
        StoreEvent::IdentityBindingRemoved { fingerprint } => fingerprint == fp,
        StoreEvent::SessionEnded { .. }
        | StoreEvent::SessionRefreshed { .. }
        | StoreEvent::ConnectionEnded { .. }
        | StoreEvent::Resync => false,
    }
}
