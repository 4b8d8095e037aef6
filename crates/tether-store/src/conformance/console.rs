//! The operator console's store calls: live sessions published per replica, a
//! connection ended by id (an event, wherever it lives), a user cut off.

use std::time::Duration;

use tether_core::connection::LiveSession;
use tether_core::Timestamp;

use super::{fingerprint, new_session, now, request, token, user, wait_for, H, MAX_TTL};
use crate::{Store, StoreEvent};

fn live(replica: &str, n: u64, user_id: &str, t0: Timestamp) -> LiveSession {
    let fp = fingerprint();
    LiveSession {
        id: format!("{replica}-{n}"),
        replica: replica.to_string(),
        user_id: user_id.to_string(),
        email: format!("{user_id}@example.com"),
        session_id: format!("sess-{}", token()),
        binding_id: tether_core::binding::binding_id(&fp),
        fingerprint: fp,
        route: n.is_multiple_of(2).then(|| "prod".to_string()),
        login: "alice".into(),
        source: "192.0.2.7:50022".into(),
        client_version: "SSH-2.0-OpenSSH_9.2p1".into(),
        started_at: t0.minus(Duration::from_secs(n)),
        bytes_in: 3 * n + u64::from(u32::MAX),
        bytes_out: 5 * n,
        last_active: t0,
    }
}

fn mine<'a>(all: &'a [LiveSession], replicas: &[&str]) -> Vec<&'a LiveSession> {
    all.iter()
        .filter(|s| replicas.contains(&s.replica.as_str()))
        .collect()
}

/// Each replica's publication replaces its last one and round-trips every field;
/// stale replicas drop out; an empty publication withdraws; purge deletes the dead.
pub(super) async fn live_sessions(s: &dyn Store) {
    let t0 = now();
    let (a, b) = (token().to_lowercase(), token().to_lowercase());
    let u = user("alice");
    let (a1, a2, b1) = (
        live(&a, 1, &u, t0),
        live(&a, 2, &u, t0),
        live(&b, 3, &u, t0),
    );
    s.publish_live_sessions(&a, &[a1.clone(), a2.clone()], t0)
        .await
        .unwrap();
    s.publish_live_sessions(&b, std::slice::from_ref(&b1), t0)
        .await
        .unwrap();
    let since = t0.minus(Duration::from_secs(15));
    let all = s.live_sessions(since).await.unwrap();
    // Oldest first, every field as published.
    assert_eq!(mine(&all, &[&a, &b]), vec![&b1, &a2, &a1]);

    // A new publication replaces the replica's rows.
    s.publish_live_sessions(&a, std::slice::from_ref(&a2), t0)
        .await
        .unwrap();
    let all = s.live_sessions(since).await.unwrap();
    assert_eq!(mine(&all, &[&a, &b]), vec![&b1, &a2]);

    // Stale: b published long ago, a re-published later.
    let later = t0.plus(Duration::from_secs(60));
    s.publish_live_sessions(&a, std::slice::from_ref(&a2), later)
        .await
        .unwrap();
    let all = s
        .live_sessions(later.minus(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(mine(&all, &[&a, &b]), vec![&a2]);

    // Withdrawn.
    s.publish_live_sessions(&a, &[], later).await.unwrap();
    let all = s.live_sessions(since).await.unwrap();
    assert_eq!(mine(&all, &[&a, &b]), vec![&b1]);

    // A replica that died long ago is purged; the others stay.
    let dead = token().to_lowercase();
    let long_ago = t0.minus(crate::LIVE_COUNTS_KEPT + Duration::from_secs(1));
    s.publish_live_sessions(&dead, &[live(&dead, 9, &u, long_ago)], long_ago)
        .await
        .unwrap();
    assert_eq!(
        mine(&s.live_sessions(Timestamp(0)).await.unwrap(), &[&dead]).len(),
        1
    );
    s.purge_expired(t0).await.unwrap();
    let all = s.live_sessions(Timestamp(0)).await.unwrap();
    assert!(mine(&all, &[&dead]).is_empty());
    assert_eq!(mine(&all, &[&b]), vec![&b1]);
    s.publish_live_sessions(&b, &[], t0).await.unwrap();
}

/// Ending a connection by id is an event on the feed; nothing else changes.
pub(super) async fn end_live_session(s: &dyn Store) {
    let mut rx = s.subscribe();
    let id = format!("{}-42", token().to_lowercase());
    s.end_live_session(&id, "session ended by an administrator")
        .await
        .unwrap();
    let ev = wait_for(
        &mut rx,
        "ConnectionEnded",
        |e| matches!(e, StoreEvent::ConnectionEnded { connection_id, .. } if *connection_id == id),
    )
    .await;
    assert_eq!(
        ev,
        StoreEvent::ConnectionEnded {
            connection_id: id,
            reason: "session ended by an administrator".into()
        }
    );
}

/// Cutting a user off removes every client binding, remembered key and web session
/// of that user (one event each) and nothing of anyone else.
pub(super) async fn cut_off_user(s: &dyn Store) {
    let t0 = now();
    let (alice, bob) = (user("alice"), user("bob"));
    let sa1 = new_session(s, &alice, t0, 14 * H).await;
    let sa2 = new_session(s, &alice, t0, 14 * H).await;
    let sb = new_session(s, &bob, t0, 14 * H).await;
    let mut keys = Vec::new();
    for (session, remember) in [(&sa1, true), (&sa2, false), (&sb, true)] {
        let fp = fingerprint();
        let req = s.open_request(request(&fp, t0, 900), t0).await.unwrap();
        s.approve_request(req.code.as_str(), session, remember, MAX_TTL, t0)
            .await
            .unwrap();
        keys.push(fp);
    }
    let mut rx = s.subscribe();
    let cut = s.cut_off_user(&alice, "cut off by admin").await.unwrap();
    let mut want_bindings: Vec<String> = keys[..2]
        .iter()
        .map(|fp| tether_core::binding::binding_id(fp))
        .collect();
    want_bindings.sort();
    assert_eq!(cut.client_bindings, want_bindings);
    assert_eq!(cut.identity_bindings, vec![keys[0].clone()]);
    let mut want_sessions = vec![sa1.id.clone(), sa2.id.clone()];
    want_sessions.sort();
    assert_eq!(cut.sessions, want_sessions);

    assert!(s.list_bindings(Some(&alice)).await.unwrap().is_empty());
    assert!(s
        .list_identity_bindings(Some(&alice))
        .await
        .unwrap()
        .is_empty());
    assert!(s.get_session(&sa1.id).await.unwrap().is_none());
    assert!(s.get_session(&sa2.id).await.unwrap().is_none());
    // Bob keeps everything.
    assert_eq!(s.list_bindings(Some(&bob)).await.unwrap().len(), 1);
    assert_eq!(s.list_identity_bindings(Some(&bob)).await.unwrap().len(), 1);
    assert!(s.get_session(&sb.id).await.unwrap().is_some());

    for id in &want_bindings {
        wait_for(&mut rx, "BindingRevoked", |e| {
            matches!(e, StoreEvent::BindingRevoked { binding_id, reason }
                if binding_id == id && reason == "cut off by admin")
        })
        .await;
    }
    for id in &want_sessions {
        wait_for(
            &mut rx,
            "SessionEnded",
            |e| matches!(e, StoreEvent::SessionEnded { session_id, .. } if session_id == id),
        )
        .await;
    }
    // Nobody left to cut: nothing happens.
    assert_eq!(
        s.cut_off_user(&alice, "again").await.unwrap(),
        crate::CutOff::default()
    );
}
