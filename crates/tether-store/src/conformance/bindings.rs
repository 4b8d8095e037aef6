//! Conformance checks for client and identity bindings: the one-key-one-user rule,
//! expiry, sign-out, revocation with owner checks, and racing approvals.

use std::sync::Arc;
use std::time::Duration;

use tether_core::binding::binding_id;
use tether_core::RequestStatus;

use super::{about, drain, fingerprint, new_session, now, request, user, wait_for, H, MAX_TTL};
use crate::{DecideError, RevokeError, Store, StoreEvent};

pub(super) async fn key_bound_to_other_user_via_client_binding(s: &dyn Store) {
    let t0 = now();
    let (alice, bob) = (user("alice"), user("bob"));
    let sa = new_session(s, &alice, t0, 14 * H).await;
    let sb = new_session(s, &bob, t0, 14 * H).await;
    let fp = fingerprint();
    let r1 = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let mine = s
        .approve_request(r1.code.as_str(), &sa, false, MAX_TTL, t0)
        .await
        .unwrap();

    // A second sign-in for the same key (say, the binding is being refreshed) that
    // bob opens and authorizes: refused, nothing changes, the request stays open.
    let r2 = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    assert_ne!(r2.code, r1.code);
    let mut rx = s.subscribe();
    let r = s
        .approve_request(r2.code.as_str(), &sb, true, MAX_TTL, t0)
        .await;
    assert!(matches!(r, Err(DecideError::KeyBoundToOtherUser)), "{r:?}");
    assert_eq!(
        s.get_request(r2.code.as_str())
            .await
            .unwrap()
            .unwrap()
            .status,
        RequestStatus::Pending
    );
    let (b, _) = s.binding_for_key(&fp).await.unwrap().unwrap();
    assert_eq!(b, mine.binding, "alice's binding untouched");
    assert!(
        s.identity_binding_for_key(&fp).await.unwrap().is_none(),
        "no Remember me for bob"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let evs = drain(&mut rx);
    assert!(
        evs.iter().all(|e| !about(e, &fp, r2.code.as_str())),
        "no events: {evs:?}"
    );

    // The request stays open for alice.
    let again = s
        .approve_request(r2.code.as_str(), &sa, false, MAX_TTL, t0)
        .await
        .unwrap();
    assert_eq!(again.binding.user_id, alice);
}

pub(super) async fn key_bound_to_other_user_via_identity_binding(s: &dyn Store) {
    let t0 = now();
    let (alice, bob) = (user("alice"), user("bob"));
    let sa = new_session(s, &alice, t0, 14 * H).await;
    let sb = new_session(s, &bob, t0, 14 * H).await;
    let fp = fingerprint();
    let r1 = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    s.approve_request(r1.code.as_str(), &sa, true, MAX_TTL, t0)
        .await
        .unwrap();
    // Alice signs out: her client binding goes, Remember me stays.
    s.sign_out(&sa.id, "signed out").await.unwrap();
    assert!(s.binding_for_key(&fp).await.unwrap().is_none());
    assert!(s.identity_binding_for_key(&fp).await.unwrap().is_some());

    let r2 = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let r = s
        .approve_request(r2.code.as_str(), &sb, false, MAX_TTL, t0)
        .await;
    assert!(matches!(r, Err(DecideError::KeyBoundToOtherUser)), "{r:?}");
    assert_eq!(
        s.get_request(r2.code.as_str())
            .await
            .unwrap()
            .unwrap()
            .status,
        RequestStatus::Pending
    );
    assert!(
        s.binding_for_key(&fp).await.unwrap().is_none(),
        "nothing bound"
    );

    // Once alice removes Remember me, bob may bind the key.
    s.revoke_identity_binding(&fp, Some(&alice)).await.unwrap();
    let a = s
        .approve_request(r2.code.as_str(), &sb, false, MAX_TTL, t0)
        .await
        .unwrap();
    assert_eq!(a.binding.user_id, bob);
}

pub(super) async fn invalid_binding_of_other_user_is_replaced(s: &dyn Store) {
    let t0 = now();
    let (alice, bob) = (user("alice"), user("bob"));
    let sa = new_session(s, &alice, t0, 14 * H).await;
    let sb = new_session(s, &bob, t0, 14 * H).await;

    // Expired binding (1 s TTL) of alice: bob's approval replaces it.
    let fp = fingerprint();
    let r1 = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    s.approve_request(r1.code.as_str(), &sa, false, Duration::from_secs(1), t0)
        .await
        .unwrap();
    let later = t0.plus(Duration::from_secs(2));
    let r2 = s
        .open_request(request(&fp, later, 900), later)
        .await
        .unwrap();
    let a = s
        .approve_request(r2.code.as_str(), &sb, false, MAX_TTL, later)
        .await
        .unwrap();
    assert_eq!(a.binding.user_id, bob);
    assert_eq!(a.binding.session_id, sb.id);
    let (b, sess) = s.binding_for_key(&fp).await.unwrap().unwrap();
    assert_eq!(b, a.binding, "the old binding was replaced");
    assert!(b.is_valid(later, sess.as_ref()));
    assert_eq!(
        s.list_bindings(Some(&alice)).await.unwrap(),
        vec![],
        "alice has none left"
    );

    // Binding whose session expired (its own expiry is capped at the session's).
    let short = new_session(s, &alice, t0, Duration::from_secs(5)).await;
    let fp = fingerprint();
    let r1 = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    s.approve_request(r1.code.as_str(), &short, false, MAX_TTL, t0)
        .await
        .unwrap();
    let later = t0.plus(Duration::from_secs(6));
    let r2 = s
        .open_request(request(&fp, later, 900), later)
        .await
        .unwrap();
    let a = s
        .approve_request(r2.code.as_str(), &sb, false, MAX_TTL, later)
        .await
        .unwrap();
    assert_eq!(a.binding.user_id, bob);

    // The same user re-approving a valid binding of their own replaces it too.
    let fp = fingerprint();
    let r1 = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    s.approve_request(r1.code.as_str(), &sa, false, MAX_TTL, t0)
        .await
        .unwrap();
    let r2 = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let at = t0.plus(Duration::from_secs(1));
    let a = s
        .approve_request(r2.code.as_str(), &sa, false, MAX_TTL, at)
        .await
        .unwrap();
    assert_eq!(
        s.binding_for_key(&fp).await.unwrap().unwrap().0.issued_at,
        at
    );
    assert_eq!(a.binding.user_id, alice);
}

pub(super) async fn remember_creates_identity_binding(s: &dyn Store) {
    let t0 = now();
    let alice = user("alice");
    let sa = new_session(s, &alice, t0, 14 * H).await;
    let fp = fingerprint();
    let r = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let a = s
        .approve_request(r.code.as_str(), &sa, true, MAX_TTL, t0)
        .await
        .unwrap();
    assert!(a.remembered);
    let ib = s
        .identity_binding_for_key(&fp)
        .await
        .unwrap()
        .expect("identity binding");
    assert_eq!(ib.fingerprint, fp);
    assert_eq!(ib.user_id, alice);
    assert_eq!(ib.email, format!("{alice}@example.com"));
    assert_eq!(ib.key_type, "ssh-ed25519");
    assert_eq!(ib.created_at, t0);
    assert_eq!(
        s.list_identity_bindings(Some(&alice)).await.unwrap(),
        vec![ib.clone()]
    );
    assert!(s.list_identity_bindings(None).await.unwrap().contains(&ib));

    // Remembering again (same user) keeps the original identity binding.
    let later = t0.plus(H);
    let r2 = s
        .open_request(request(&fp, later, 900), later)
        .await
        .unwrap();
    s.approve_request(r2.code.as_str(), &sa, true, MAX_TTL, later)
        .await
        .unwrap();
    assert_eq!(s.identity_binding_for_key(&fp).await.unwrap(), Some(ib));
}

pub(super) async fn binding_expiry_is_min_of_ttl_and_session(s: &dyn Store) {
    let t0 = now();
    let alice = user("alice");
    let sa = new_session(s, &alice, t0, 14 * H).await;
    let fp = fingerprint();
    let r = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let a = s
        .approve_request(r.code.as_str(), &sa, false, MAX_TTL, t0)
        .await
        .unwrap();
    assert_eq!(
        a.binding.expires_at,
        t0.plus(14 * H),
        "capped by the session"
    );

    let fp = fingerprint();
    let r = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let a = s
        .approve_request(r.code.as_str(), &sa, false, H, t0)
        .await
        .unwrap();
    assert_eq!(a.binding.expires_at, t0.plus(H), "capped by the TTL");
    let (b, sess) = s.binding_for_key(&fp).await.unwrap().unwrap();
    assert_eq!(b.expires_at, t0.plus(H));
    assert!(b.is_valid(t0.plus(H).minus(Duration::from_millis(1)), sess.as_ref()));
    assert!(!b.is_valid(t0.plus(H), sess.as_ref()));
}

pub(super) async fn binding_invalid_once_session_signed_out(s: &dyn Store) {
    let t0 = now();
    let alice = user("alice");
    let s1 = new_session(s, &alice, t0, 14 * H).await;
    let s2 = new_session(s, &alice, t0, 14 * H).await;
    let fp = fingerprint();
    let r = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    s.approve_request(r.code.as_str(), &s1, false, MAX_TTL, t0)
        .await
        .unwrap();
    let (b, sess) = s.binding_for_key(&fp).await.unwrap().unwrap();
    assert!(b.is_valid(t0, sess.as_ref()));

    // Signing out of the binding's own session: the binding is gone.
    let mut rx = s.subscribe();
    let out = s.sign_out(&s1.id, "signed out").await.unwrap();
    assert_eq!(out.revoked_bindings, vec![b.id.clone()]);
    assert!(s.binding_for_key(&fp).await.unwrap().is_none());
    assert!(s.get_binding(&b.id).await.unwrap().is_none());
    wait_for(
        &mut rx,
        "BindingRevoked on sign-out",
        |e| matches!(e, StoreEvent::BindingRevoked { binding_id, .. } if *binding_id == b.id),
    )
    .await;
    // Had the row survived, it would be invalid without its session.
    assert!(!b.is_valid(t0, None));

    // Signing out of ANOTHER session of the same user revokes it as well.
    let r = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let s3 = new_session(s, &alice, t0, 14 * H).await;
    s.approve_request(r.code.as_str(), &s3, false, MAX_TTL, t0)
        .await
        .unwrap();
    let out = s.sign_out(&s2.id, "signed out").await.unwrap();
    assert_eq!(out.revoked_bindings, vec![binding_id(&fp)]);
    assert!(s.binding_for_key(&fp).await.unwrap().is_none());
    assert!(
        s.get_session(&s3.id).await.unwrap().is_some(),
        "other sessions stay"
    );
}

pub(super) async fn sign_out_revokes_all_bindings_of_the_user(s: &dyn Store) {
    let t0 = now();
    let (alice, bob) = (user("alice"), user("bob"));
    let sa = new_session(s, &alice, t0, 14 * H).await;
    let sb = new_session(s, &bob, t0, 14 * H).await;
    let (k1, k2, k3) = (fingerprint(), fingerprint(), fingerprint());
    for (fp, sess, remember) in [(&k1, &sa, true), (&k2, &sa, false), (&k3, &sb, false)] {
        let r = s.open_request(request(fp, t0, 900), t0).await.unwrap();
        s.approve_request(r.code.as_str(), sess, remember, MAX_TTL, t0)
            .await
            .unwrap();
    }
    let mut rx = s.subscribe();
    let out = s.sign_out(&sa.id, "signed out").await.unwrap();
    let mut expected = vec![binding_id(&k1), binding_id(&k2)];
    expected.sort();
    assert_eq!(out.revoked_bindings, expected);
    for id in &expected {
        let ev = wait_for(
            &mut rx,
            "BindingRevoked per binding",
            |e| matches!(e, StoreEvent::BindingRevoked { binding_id, .. } if binding_id == id),
        )
        .await;
        assert_eq!(
            ev,
            StoreEvent::BindingRevoked {
                binding_id: id.clone(),
                reason: "signed out".into()
            }
        );
    }
    wait_for(
        &mut rx,
        "SessionEnded",
        |e| matches!(e, StoreEvent::SessionEnded { session_id, .. } if *session_id == sa.id),
    )
    .await;
    assert!(s.list_bindings(Some(&alice)).await.unwrap().is_empty());
    assert_eq!(
        s.list_bindings(Some(&bob)).await.unwrap().len(),
        1,
        "bob untouched"
    );
    assert!(s.binding_for_key(&k3).await.unwrap().is_some());
    assert!(
        s.identity_binding_for_key(&k1).await.unwrap().is_some(),
        "Remember me stays"
    );
    assert!(s.get_session(&sa.id).await.unwrap().is_none());
    assert!(s.get_session(&sb.id).await.unwrap().is_some());
}

pub(super) async fn revoke_binding_checks_owner(s: &dyn Store) {
    let t0 = now();
    let (alice, bob) = (user("alice"), user("bob"));
    let sa = new_session(s, &alice, t0, 14 * H).await;
    let fp = fingerprint();
    let r = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    let a = s
        .approve_request(r.code.as_str(), &sa, false, MAX_TTL, t0)
        .await
        .unwrap();
    let id = a.binding.id.clone();

    let mut rx = s.subscribe();
    let r = s.revoke_binding(&id, Some(&bob), "revoked by bob").await;
    assert!(matches!(r, Err(RevokeError::NotOwner)), "{r:?}");
    assert_eq!(
        s.get_binding(&id).await.unwrap(),
        Some(a.binding.clone()),
        "nothing changed"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        drain(&mut rx).iter().all(|e| !about(e, &fp, "")),
        "no event for a refused revoke"
    );

    let r = s
        .revoke_binding(&binding_id(&fingerprint()), Some(&alice), "x")
        .await;
    assert!(matches!(r, Err(RevokeError::NotFound)), "{r:?}");
    let r = s.revoke_binding("not-a-binding-id", None, "x").await;
    assert!(matches!(r, Err(RevokeError::NotFound)), "{r:?}");

    let gone = s
        .revoke_binding(&id, Some(&alice), "revoked by alice@example.com")
        .await
        .unwrap();
    assert_eq!(gone, a.binding);
    assert!(s.get_binding(&id).await.unwrap().is_none());
    let ev = wait_for(&mut rx, "BindingRevoked", |e| about(e, &fp, "")).await;
    assert_eq!(
        ev,
        StoreEvent::BindingRevoked {
            binding_id: id.clone(),
            reason: "revoked by alice@example.com".into()
        }
    );
    let r = s.revoke_binding(&id, Some(&alice), "again").await;
    assert!(matches!(r, Err(RevokeError::NotFound)), "{r:?}");

    // Admin revoke (no owner check).
    let r = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    s.approve_request(r.code.as_str(), &sa, false, MAX_TTL, t0)
        .await
        .unwrap();
    s.revoke_binding(&id, None, "revoked by admin")
        .await
        .unwrap();
    assert!(s.binding_for_key(&fp).await.unwrap().is_none());
}

pub(super) async fn revoke_identity_binding_checks_owner(s: &dyn Store) {
    let t0 = now();
    let (alice, bob) = (user("alice"), user("bob"));
    let sa = new_session(s, &alice, t0, 14 * H).await;
    let fp = fingerprint();
    let r = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
    s.approve_request(r.code.as_str(), &sa, true, MAX_TTL, t0)
        .await
        .unwrap();
    let ib = s.identity_binding_for_key(&fp).await.unwrap().unwrap();

    let r = s.revoke_identity_binding(&fp, Some(&bob)).await;
    assert!(matches!(r, Err(RevokeError::NotOwner)), "{r:?}");
    assert_eq!(
        s.identity_binding_for_key(&fp).await.unwrap(),
        Some(ib.clone())
    );
    let r = s.revoke_identity_binding(&fingerprint(), None).await;
    assert!(matches!(r, Err(RevokeError::NotFound)), "{r:?}");

    let mut rx = s.subscribe();
    assert_eq!(
        s.revoke_identity_binding(&fp, Some(&alice)).await.unwrap(),
        ib
    );
    assert!(s.identity_binding_for_key(&fp).await.unwrap().is_none());
    assert!(
        s.binding_for_key(&fp).await.unwrap().is_some(),
        "the client binding stays"
    );
    wait_for(
        &mut rx,
        "IdentityBindingRemoved",
        |e| matches!(e, StoreEvent::IdentityBindingRemoved { fingerprint } if *fingerprint == fp),
    )
    .await;
}

pub(super) async fn touch_and_list_bindings(s: &dyn Store) {
    let t0 = now();
    let alice = user("alice");
    let sa = new_session(s, &alice, t0, 14 * H).await;
    let mut ids = Vec::new();
    for i in 0..3u64 {
        let fp = fingerprint();
        let at = t0.plus(Duration::from_secs(i));
        let r = s.open_request(request(&fp, at, 900), at).await.unwrap();
        ids.push(
            s.approve_request(r.code.as_str(), &sa, false, MAX_TTL, at)
                .await
                .unwrap()
                .binding
                .id,
        );
    }
    let listed: Vec<String> = s
        .list_bindings(Some(&alice))
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    let all = s.list_bindings(None).await.unwrap();
    assert!(ids.iter().all(|id| all.iter().any(|b| &b.id == id)));
    assert!(s
        .list_bindings(Some("nobody-at-all"))
        .await
        .unwrap()
        .is_empty());

    let used = t0.plus(Duration::from_secs(90));
    s.touch_binding(&ids[0], used).await.unwrap();
    assert_eq!(
        s.get_binding(&ids[0]).await.unwrap().unwrap().last_used,
        Some(used)
    );
    s.touch_binding("sshkey-SHA256:nothing-here", used)
        .await
        .unwrap();
}

/// Two users approve two different codes for the same key at the same time:
/// exactly one wins, the other is told the key is bound to another user.
pub(super) async fn concurrent_approvals_for_one_key(s: Arc<dyn Store>) {
    let t0 = now();
    let (alice, bob) = (user("alice"), user("bob"));
    let sa = new_session(s.as_ref(), &alice, t0, 14 * H).await;
    let sb = new_session(s.as_ref(), &bob, t0, 14 * H).await;
    for round in 0..10 {
        let fp = fingerprint();
        // Two open codes for one key: the first one's lifetime ends as the second is
        // opened, but both are still decidable at `t0` (the decision time below).
        let r1 = s.open_request(request(&fp, t0, 60), t0).await.unwrap();
        let t1 = t0.plus(Duration::from_secs(60));
        let r2 = s.open_request(request(&fp, t1, 900), t1).await.unwrap();
        assert_ne!(r1.code, r2.code);

        let (s1, s2) = (Arc::clone(&s), Arc::clone(&s));
        let (c1, c2) = (r1.code.clone(), r2.code.clone());
        let (sa2, sb2) = (sa.clone(), sb.clone());
        let at = t0.plus(Duration::from_secs(1));
        let a = tokio::spawn(async move {
            s1.approve_request(c1.as_str(), &sa2, false, MAX_TTL, at)
                .await
        });
        let b = tokio::spawn(async move {
            s2.approve_request(c2.as_str(), &sb2, false, MAX_TTL, at)
                .await
        });
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let winner = match (&a, &b) {
            (Ok(w), Err(DecideError::KeyBoundToOtherUser))
            | (Err(DecideError::KeyBoundToOtherUser), Ok(w)) => w.binding.user_id.clone(),
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        };
        let (stored, _) = s.binding_for_key(&fp).await.unwrap().unwrap();
        assert_eq!(stored.user_id, winner, "round {round}");
        let loser_code = if winner == alice { &r2.code } else { &r1.code };
        assert_eq!(
            s.get_request(loser_code.as_str())
                .await
                .unwrap()
                .unwrap()
                .status,
            RequestStatus::Pending,
            "round {round}: the loser's request stays open"
        );
    }
}
