//! Conformance checks for identity refresh (SPEC §5): claiming due sessions once,
//! storing the refreshed identity with its event, and recording failures.

use std::time::Duration;

use super::{fingerprint, new_session, now, request, user, wait_for, H, MAX_TTL};
use crate::{Store, StoreEvent};

/// A session with a refresh token is claimed once when due (a second claimer in the
/// lease gets nothing), a refresh stores the new identity and token, moves the email
/// of the user's bindings and publishes `SessionRefreshed`; a failure keeps the
/// first failure's time until the next success; a signed-out session is never
/// claimed again.
pub(crate) async fn session_refresh(store: &dyn Store) {
    let t0 = now();
    let alice = user("alice");
    let s = new_session(store, &alice, t0, 14 * H).await;
    let mine = |claims: &[crate::RefreshClaim]| {
        claims
            .iter()
            .filter(|c| c.session_id == s.id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let soon = t0.plus(Duration::from_secs(60));
    assert!(
        mine(
            &store
                .claim_session_refreshes(soon, soon, 1000)
                .await
                .unwrap()
        )
        .is_empty(),
        "no refresh token: nothing to claim"
    );
    store
        .set_session_refresh(&s.id, "sealed-token-1", soon)
        .await
        .unwrap();
    assert!(mine(&store.claim_session_refreshes(t0, t0, 1000).await.unwrap()).is_empty());
    let lease = soon.plus(Duration::from_secs(30));
    let claimed = mine(
        &store
            .claim_session_refreshes(soon, lease, 1000)
            .await
            .unwrap(),
    );
    assert_eq!(claimed.len(), 1, "due: claimed");
    assert_eq!(claimed[0].token, "sealed-token-1");
    assert_eq!(claimed[0].user_id, alice);
    assert_eq!(claimed[0].failing_since, None);
    assert!(
        !format!("{:?}", claimed[0]).contains("sealed-token-1"),
        "Debug redacts the token"
    );
    assert!(
        mine(
            &store
                .claim_session_refreshes(soon, lease, 1000)
                .await
                .unwrap()
        )
        .is_empty(),
        "leased: a second claimer gets nothing"
    );

    // Unreachable IdP twice: the first failure's time stays.
    let f1 = soon.plus(Duration::from_secs(1));
    store.session_refresh_failed(&s.id, f1, f1).await.unwrap();
    let c = mine(
        &store
            .claim_session_refreshes(f1, lease, 1000)
            .await
            .unwrap(),
    );
    assert_eq!(c[0].failing_since, Some(f1));
    let f2 = f1.plus(Duration::from_secs(5));
    store.session_refresh_failed(&s.id, f2, f2).await.unwrap();
    let c = mine(
        &store
            .claim_session_refreshes(f2, lease, 1000)
            .await
            .unwrap(),
    );
    assert_eq!(c[0].failing_since, Some(f1), "first failure kept");

    // A binding and a remembered key follow the refreshed email.
    let fp = fingerprint();
    let req = store
        .open_request(request(&fp, t0, 15 * 60), t0)
        .await
        .unwrap();
    store
        .approve_request(req.code.as_str(), &s, true, MAX_TTL, t0)
        .await
        .unwrap();
    let mut rx = store.subscribe();
    let mut fresh = s.identity.clone();
    fresh.email = format!("{alice}@new.example.com");
    fresh
        .claims
        .insert("groups".into(), serde_json::json!(["dev"]));
    let next = f2.plus(Duration::from_secs(300));
    assert!(store
        .session_refreshed(&s.id, &fresh, Some("sealed-token-2"), next)
        .await
        .unwrap());
    wait_for(
        &mut rx,
        "SessionRefreshed",
        |e| matches!(e, StoreEvent::SessionRefreshed { session_id } if *session_id == s.id),
    )
    .await;
    let got = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(got.identity, fresh);
    let (b, bs) = store.binding_for_key(&fp).await.unwrap().unwrap();
    assert_eq!(b.email, fresh.email);
    assert_eq!(
        bs.unwrap().identity,
        fresh,
        "the binding's session is fresh"
    );
    let ib = store.identity_binding_for_key(&fp).await.unwrap().unwrap();
    assert_eq!(ib.email, fresh.email);
    assert!(mine(
        &store
            .claim_session_refreshes(f2, lease, 1000)
            .await
            .unwrap()
    )
    .is_empty());
    let c = mine(
        &store
            .claim_session_refreshes(next, next, 1000)
            .await
            .unwrap(),
    );
    assert_eq!(c[0].token, "sealed-token-2", "rotated token stored");
    assert_eq!(c[0].failing_since, None, "success clears failures");
    // No new token: the old one stays.
    store
        .session_refreshed(&s.id, &fresh, None, next)
        .await
        .unwrap();
    let c = mine(
        &store
            .claim_session_refreshes(next, next, 1000)
            .await
            .unwrap(),
    );
    assert_eq!(c[0].token, "sealed-token-2");

    store.sign_out(&s.id, "signed out").await.unwrap();
    assert!(mine(
        &store
            .claim_session_refreshes(next, next, 1000)
            .await
            .unwrap()
    )
    .is_empty());
    assert!(!store
        .session_refreshed(&s.id, &fresh, None, next)
        .await
        .unwrap());
    store
        .session_refresh_failed(&s.id, next, next)
        .await
        .unwrap();

    // An expired session is not claimed.
    let old = new_session(store, &user("bob"), t0, Duration::from_secs(10)).await;
    store.set_session_refresh(&old.id, "t", t0).await.unwrap();
    let late = t0.plus(Duration::from_secs(20));
    assert!(!store
        .claim_session_refreshes(late, late, 1000)
        .await
        .unwrap()
        .iter()
        .any(|c| c.session_id == old.id));
}
