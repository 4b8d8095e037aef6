//! Conformance checks for sessions, sign-in requests (open, approve, deny, drop),
//! pinned host keys and purging.

use std::sync::Arc;
use std::time::Duration;

use tether_core::binding::binding_id;
use tether_core::{RequestStatus, Session, Timestamp};

use super::{
    about, drain, fingerprint, new_session, now, request, token, user, wait_for, H, MAX_TTL,
};
use crate::{DecideError, PinnedHostKey, Store, StoreEvent};

pub(super) async fn sessions_crud(s: &dyn Store) {
    let t0 = now();
    let alice = user("alice");
    let sess = new_session(s, &alice, t0, 14 * H).await;
    let got = s
        .get_session(&sess.id)
        .await
        .unwrap()
        .expect("session stored");
    assert_eq!(got, sess, "session round-trips with identity and claims");
    assert!(got.is_live(t0));
    assert!(!got.is_live(t0.plus(14 * H)), "expired at expires_at");
    assert!(s.get_session("no-such-session").await.unwrap().is_none());
    assert!(
        s.create_session(&sess).await.is_err(),
        "duplicate id refused"
    );

    let out = s.sign_out("no-such-session", "signed out").await.unwrap();
    assert!(out.revoked_bindings.is_empty());
    let mut rx = s.subscribe();
    let out = s.sign_out(&sess.id, "signed out").await.unwrap();
    assert!(out.revoked_bindings.is_empty());
    assert!(
        s.get_session(&sess.id).await.unwrap().is_none(),
        "sign-out ends the session"
    );
    let ev = wait_for(
        &mut rx,
        "SessionEnded",
        |e| matches!(e, StoreEvent::SessionEnded { session_id, .. } if *session_id == sess.id),
    )
    .await;
    assert_eq!(
        ev,
        StoreEvent::SessionEnded {
            session_id: sess.id.clone(),
            reason: "signed out".into()
        }
    );
}

pub(super) async fn open_request_reuses_pending_code(s: &dyn Store) {
    let t0 = now();
    let fp = fingerprint();
    let first = request(&fp, t0, 900);
    let r1 = s.open_request(first.clone(), t0).await.unwrap();
    assert_eq!(r1, first, "a new request is stored as given");
    assert_eq!(
        s.get_request(first.code.as_str()).await.unwrap(),
        Some(first.clone())
    );

    // Same key while pending: the same code (one URL per key).
    let second = request(&fp, t0.plus(Duration::from_secs(5)), 900);
    let r2 = s
        .open_request(second.clone(), t0.plus(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(r2.code, r1.code);
    assert!(
        s.get_request(second.code.as_str()).await.unwrap().is_none(),
        "not stored"
    );

    // Another key: its own code.
    let other = request(&fingerprint(), t0, 900);
    assert_eq!(
        s.open_request(other.clone(), t0).await.unwrap().code,
        other.code
    );

    // After expiry: a new code.
    let later = t0.plus(Duration::from_secs(900));
    let third = request(&fp, later, 900);
    let r3 = s.open_request(third.clone(), later).await.unwrap();
    assert_eq!(r3.code, third.code, "expired request is not reused");
    assert_ne!(r3.code, r1.code);

    // After a decision: a new code.
    s.deny_request(r3.code.as_str(), &user("bob"), later)
        .await
        .unwrap();
    let fourth = request(&fp, later, 900);
    let r4 = s.open_request(fourth.clone(), later).await.unwrap();
    assert_eq!(r4.code, fourth.code, "decided request is not reused");
}

pub(super) async fn drop_request_only_drops_pending(s: &dyn Store) {
    let t0 = now();
    let r = s
        .open_request(request(&fingerprint(), t0, 900), t0)
        .await
        .unwrap();
    s.drop_request(r.code.as_str()).await.unwrap();
    assert!(s.get_request(r.code.as_str()).await.unwrap().is_none());
    s.drop_request("no-such-code-xxxxxxxxx").await.unwrap();

    let d = s
        .open_request(request(&fingerprint(), t0, 900), t0)
        .await
        .unwrap();
    s.deny_request(d.code.as_str(), "bob", t0).await.unwrap();
    s.drop_request(d.code.as_str()).await.unwrap();
    assert!(
        matches!(
            s.get_request(d.code.as_str())
                .await
                .unwrap()
                .map(|r| r.status),
            Some(RequestStatus::Denied { .. })
        ),
        "a decided request is kept"
    );
}

pub(super) async fn approve_creates_binding_and_decides_request(s: &dyn Store) {
    let t0 = now();
    let alice = user("alice");
    let sess = new_session(s, &alice, t0, 14 * H).await;
    let fp = fingerprint();
    let req = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let mut rx = s.subscribe();
    let at = t0.plus(Duration::from_secs(30));
    let a = s
        .approve_request(req.code.as_str(), &sess, false, MAX_TTL, at)
        .await
        .unwrap();
    assert!(!a.remembered);

    let b = &a.binding;
    assert_eq!(b.id, binding_id(&fp));
    assert_eq!(b.fingerprint, fp);
    assert_eq!(b.key_type, "ssh-ed25519");
    assert_eq!(b.user_id, alice);
    assert_eq!(b.email, format!("{alice}@example.com"));
    assert_eq!(b.session_id, sess.id);
    assert_eq!(b.issued_at, at);
    assert_eq!(b.expires_at, sess.expires_at, "min(48h, session expiry)");
    assert_eq!(b.details, req.details);
    assert_eq!(b.last_used, None);

    assert_eq!(
        s.get_request(req.code.as_str())
            .await
            .unwrap()
            .unwrap()
            .status,
        RequestStatus::Approved {
            user_id: alice.clone(),
            binding_id: b.id.clone()
        }
    );
    let (stored, session) = s
        .binding_for_key(&fp)
        .await
        .unwrap()
        .expect("binding stored");
    assert_eq!(&stored, b);
    assert_eq!(session.as_ref(), Some(&sess));
    assert!(stored.is_valid(at, session.as_ref()));
    assert_eq!(s.get_binding(&b.id).await.unwrap().as_ref(), Some(b));
    assert!(
        s.identity_binding_for_key(&fp).await.unwrap().is_none(),
        "not remembered"
    );

    let created = wait_for(
        &mut rx,
        "BindingCreated",
        |e| matches!(e, StoreEvent::BindingCreated { binding_id, .. } if *binding_id == b.id),
    )
    .await;
    assert_eq!(
        created,
        StoreEvent::BindingCreated {
            binding_id: b.id.clone(),
            user_id: alice.clone()
        }
    );
    wait_for(
        &mut rx,
        "RequestDecided",
        |e| matches!(e, StoreEvent::RequestDecided { code } if code == req.code.as_str()),
    )
    .await;
}

pub(super) async fn approve_refusals(s: &dyn Store) {
    let t0 = now();
    let alice = user("alice");
    let sess = new_session(s, &alice, t0, 14 * H).await;

    let r = s.approve_request(&token(), &sess, false, MAX_TTL, t0).await;
    assert!(
        matches!(r, Err(DecideError::NotFound)),
        "unknown code: {r:?}"
    );

    // Expired: refused, and nothing changes.
    let fp = fingerprint();
    let req = s.open_request(request(&fp, t0, 60), t0).await.unwrap();
    let late = t0.plus(Duration::from_secs(60));
    let r = s
        .approve_request(req.code.as_str(), &sess, false, MAX_TTL, late)
        .await;
    assert!(
        matches!(r, Err(DecideError::Expired)),
        "expired code: {r:?}"
    );
    let r = s.deny_request(req.code.as_str(), &alice, late).await;
    assert!(
        matches!(r, Err(DecideError::Expired)),
        "expired code (deny): {r:?}"
    );
    assert_eq!(
        s.get_request(req.code.as_str())
            .await
            .unwrap()
            .unwrap()
            .status,
        RequestStatus::Pending
    );
    assert!(s.binding_for_key(&fp).await.unwrap().is_none());

    // Session gone or expired: refused.
    let fp = fingerprint();
    let req = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let ghost = Session {
        id: format!("sess-{}", token()),
        ..sess.clone()
    };
    let r = s
        .approve_request(req.code.as_str(), &ghost, false, MAX_TTL, t0)
        .await;
    assert!(
        matches!(r, Err(DecideError::SessionGone)),
        "session not in store: {r:?}"
    );
    let short = new_session(s, &alice, t0, Duration::from_secs(10)).await;
    let r = s
        .approve_request(
            req.code.as_str(),
            &short,
            false,
            MAX_TTL,
            t0.plus(Duration::from_secs(10)),
        )
        .await;
    assert!(
        matches!(r, Err(DecideError::SessionGone)),
        "session expired: {r:?}"
    );
    assert_eq!(
        s.get_request(req.code.as_str())
            .await
            .unwrap()
            .unwrap()
            .status,
        RequestStatus::Pending
    );

    // Already decided (approved): approve and deny both refused, even after expiry.
    s.approve_request(req.code.as_str(), &sess, false, MAX_TTL, t0)
        .await
        .unwrap();
    let r = s
        .approve_request(req.code.as_str(), &sess, false, MAX_TTL, t0)
        .await;
    assert!(
        matches!(r, Err(DecideError::AlreadyDecided)),
        "approved twice: {r:?}"
    );
    let r = s.deny_request(req.code.as_str(), &alice, t0).await;
    assert!(
        matches!(r, Err(DecideError::AlreadyDecided)),
        "deny after approve: {r:?}"
    );
    let r = s
        .approve_request(req.code.as_str(), &sess, false, MAX_TTL, t0.plus(H))
        .await;
    assert!(
        matches!(r, Err(DecideError::AlreadyDecided)),
        "decided beats expired: {r:?}"
    );
}

pub(super) async fn deny(s: &dyn Store) {
    let t0 = now();
    let bob = user("bob");
    let sess = new_session(s, &bob, t0, 14 * H).await;
    let fp = fingerprint();
    let req = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let mut rx = s.subscribe();
    s.deny_request(req.code.as_str(), &bob, t0).await.unwrap();
    assert_eq!(
        s.get_request(req.code.as_str())
            .await
            .unwrap()
            .unwrap()
            .status,
        RequestStatus::Denied {
            user_id: bob.clone()
        }
    );
    wait_for(
        &mut rx,
        "RequestDecided after deny",
        |e| matches!(e, StoreEvent::RequestDecided { code } if code == req.code.as_str()),
    )
    .await;
    assert!(
        s.binding_for_key(&fp).await.unwrap().is_none(),
        "deny binds nothing"
    );
    let r = s.deny_request(req.code.as_str(), &bob, t0).await;
    assert!(matches!(r, Err(DecideError::AlreadyDecided)), "{r:?}");
    let r = s
        .approve_request(req.code.as_str(), &sess, false, MAX_TTL, t0)
        .await;
    assert!(matches!(r, Err(DecideError::AlreadyDecided)), "{r:?}");
    let r = s.deny_request(&token(), &bob, t0).await;
    assert!(matches!(r, Err(DecideError::NotFound)), "{r:?}");
}

pub(super) async fn pinned_host_keys(s: Arc<dyn Store>) {
    let addr = format!("10.0.0.{}:22-{}", 5, token());
    assert!(s.pinned_host_key(&addr).await.unwrap().is_none());
    let first = PinnedHostKey {
        address: addr.clone(),
        public_key: "ssh-ed25519 AAAAfirst".into(),
    };
    assert_eq!(s.pin_host_key(&first).await.unwrap(), first);
    let second = PinnedHostKey {
        address: addr.clone(),
        public_key: "ssh-ed25519 AAAAsecond".into(),
    };
    assert_eq!(
        s.pin_host_key(&second).await.unwrap(),
        first,
        "first pin wins"
    );
    assert_eq!(s.pinned_host_key(&addr).await.unwrap(), Some(first));

    // Concurrent first use: everyone gets the same winner.
    let addr = format!("race-{}", token());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = Arc::clone(&s);
            let key = PinnedHostKey {
                address: addr.clone(),
                public_key: format!("ssh-ed25519 AAAA{i}"),
            };
            tokio::spawn(async move { s.pin_host_key(&key).await.unwrap() })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        winners.push(t.await.unwrap());
    }
    assert!(winners.windows(2).all(|w| w[0] == w[1]), "{winners:?}");
}

pub(super) async fn purge_expired(s: &dyn Store) {
    let t0 = now();
    let alice = user("alice");
    let bob = user("bob");
    // alice's session ends in 10 s (and her binding with it); bob's lives on.
    let short = new_session(s, &alice, t0, Duration::from_secs(10)).await;
    let long = new_session(s, &bob, t0, 14 * H).await;
    let fa = fingerprint();
    let fb = fingerprint();
    let ra = s.open_request(request(&fa, t0, 900), t0).await.unwrap();
    let rb = s.open_request(request(&fb, t0, 900), t0).await.unwrap();
    s.approve_request(ra.code.as_str(), &short, false, MAX_TTL, t0)
        .await
        .unwrap();
    s.approve_request(rb.code.as_str(), &long, false, MAX_TTL, t0)
        .await
        .unwrap();
    let stale = s
        .open_request(request(&fingerprint(), t0, 1), t0)
        .await
        .unwrap();
    let recent = s
        .open_request(request(&fingerprint(), t0, 5), t0)
        .await
        .unwrap();

    let mut rx = s.subscribe();
    // 11 s later; `stale` expired more than the grace period ago only at +601 s.
    s.purge_expired(t0.plus(Duration::from_secs(11)))
        .await
        .unwrap();
    let revoked = wait_for(&mut rx, "BindingRevoked for the expired binding", |e| {
        matches!(e, StoreEvent::BindingRevoked { binding_id, .. } if *binding_id == binding_id_of(&fa))
    })
    .await;
    assert_eq!(
        revoked,
        StoreEvent::BindingRevoked {
            binding_id: binding_id_of(&fa),
            reason: "binding expired".into()
        }
    );
    wait_for(
        &mut rx,
        "SessionEnded for the expired session",
        |e| matches!(e, StoreEvent::SessionEnded { session_id, .. } if *session_id == short.id),
    )
    .await;
    assert!(s.binding_for_key(&fa).await.unwrap().is_none());
    assert!(s.get_session(&short.id).await.unwrap().is_none());
    assert!(
        s.binding_for_key(&fb).await.unwrap().is_some(),
        "live binding kept"
    );
    assert!(
        s.get_session(&long.id).await.unwrap().is_some(),
        "live session kept"
    );
    assert!(
        s.get_request(stale.code.as_str()).await.unwrap().is_some(),
        "within grace"
    );

    s.purge_expired(t0.plus(Duration::from_secs(602)))
        .await
        .unwrap();
    assert!(
        s.get_request(stale.code.as_str()).await.unwrap().is_none(),
        "past grace: purged"
    );
    assert!(
        s.get_request(recent.code.as_str()).await.unwrap().is_some(),
        "still within grace"
    );
    assert!(s.get_request(rb.code.as_str()).await.unwrap().is_some());
    let events = drain(&mut rx);
    assert!(
        events.iter().all(|e| !about(e, &fb, rb.code.as_str())),
        "nothing published about the live binding: {events:?}"
    );
}

fn binding_id_of(fp: &str) -> String {
    binding_id(fp)
}

/// Live counts: each replica's publication replaces its last one; readers sum the
/// other, fresh replicas over the ids asked for; a heartbeat keeps a replica fresh;
/// an empty publication withdraws it; purge deletes long-stale rows.
pub(super) async fn live_counts(s: &dyn Store) {
    let t0 = now();
    let (a, b, c) = (user("replica-a"), user("replica-b"), user("replica-c"));
    let (x, y, z) = (
        binding_id(&fingerprint()),
        binding_id(&fingerprint()),
        binding_id(&fingerprint()),
    );
    let ids = vec![x.clone(), y.clone(), z.clone()];
    let since = t0.minus(Duration::from_secs(15));
    s.publish_live_counts(&a, &[(x.clone(), 2), (y.clone(), 1)], t0)
        .await
        .unwrap();
    s.publish_live_counts(&b, &[(x.clone(), 3), (z.clone(), 0)], t0)
        .await
        .unwrap();

    // From c: a's and b's summed; zero counts and unasked ids left out.
    let seen = s.live_counts_elsewhere(&c, &ids, since).await.unwrap();
    assert_eq!(seen.get(&x), Some(&5));
    assert_eq!(seen.get(&y), Some(&1));
    assert_eq!(seen.get(&z), None);
    let only_y = s
        .live_counts_elsewhere(&c, std::slice::from_ref(&y), since)
        .await
        .unwrap();
    assert_eq!(only_y.len(), 1);
    // A replica does not count itself.
    let from_a = s.live_counts_elsewhere(&a, &ids, since).await.unwrap();
    assert_eq!(from_a.get(&x), Some(&3));
    assert_eq!(from_a.get(&y), None);

    // A new publication replaces the old one.
    s.publish_live_counts(&a, &[(y.clone(), 4)], t0)
        .await
        .unwrap();
    let seen = s.live_counts_elsewhere(&c, &ids, since).await.unwrap();
    assert_eq!((seen.get(&x), seen.get(&y)), (Some(&3), Some(&4)));

    // Stale rows are ignored until a heartbeat re-stamps them.
    let later = t0.plus(Duration::from_secs(60));
    let later_since = later.minus(Duration::from_secs(15));
    let seen = s
        .live_counts_elsewhere(&c, &ids, later_since)
        .await
        .unwrap();
    assert!(seen.is_empty(), "{seen:?}");
    s.refresh_live_counts(&b, later).await.unwrap();
    let seen = s
        .live_counts_elsewhere(&c, &ids, later_since)
        .await
        .unwrap();
    assert_eq!((seen.get(&x), seen.get(&y)), (Some(&3), None));

    // Withdrawn: nothing left of b.
    s.publish_live_counts(&b, &[], later).await.unwrap();
    let seen = s.live_counts_elsewhere(&c, &ids, since).await.unwrap();
    assert_eq!((seen.get(&x), seen.get(&y)), (None, Some(&4)));

    // Housekeeping deletes rows not re-stamped for LIVE_COUNTS_KEPT (a replica that
    // died), and keeps the others. (Purging at `t0` leaves other checks' data be.)
    let dead = user("replica-dead");
    let long_ago = t0.minus(crate::LIVE_COUNTS_KEPT + Duration::from_secs(1));
    s.publish_live_counts(&dead, &[(z.clone(), 7)], long_ago)
        .await
        .unwrap();
    let all = s
        .live_counts_elsewhere(&c, &ids, Timestamp(0))
        .await
        .unwrap();
    assert_eq!((all.get(&y), all.get(&z)), (Some(&4), Some(&7)));
    s.purge_expired(t0).await.unwrap();
    let all = s
        .live_counts_elsewhere(&c, &ids, Timestamp(0))
        .await
        .unwrap();
    assert_eq!((all.get(&y), all.get(&z)), (Some(&4), None));
    s.publish_live_counts(&a, &[], t0).await.unwrap();
}
