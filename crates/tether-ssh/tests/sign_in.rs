//! Sign-in with the real OpenSSH client: the URL, approval, denial, timeout, one URL
//! per key, and a client that leaves while waiting.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use tether_core::{Clock, SystemClock};
use tether_store::Store;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_connection_signs_in_then_the_key_goes_straight_through() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();

    let mut run = ssh(&gw, &key, "alice", &[], Some("whoami"));
    let code = run.code().await;
    // Exactly the two lines of SPEC §1, no blank lines.
    let expected =
        format!("Please sign in to continue\n{BASE_URL}/.pomerium/sign_in?user_code={code}\n");
    assert!(run.stderr().ends_with(&expected), "{:?}", run.stderr());

    // What the Verify page will show.
    let req = gw
        .store
        .get_request(&code)
        .await
        .unwrap()
        .expect("request stored");
    assert_eq!(req.fingerprint, key.fingerprint);
    assert_eq!(req.key_type, "ssh-ed25519");
    assert!(
        req.public_key.starts_with("ssh-ed25519 AAAA"),
        "{}",
        req.public_key
    );
    assert!(
        req.details.client_version.starts_with("SSH-2.0-OpenSSH_"),
        "{:?}",
        req.details
    );
    assert!(req.details.source_addr.starts_with("127.0.0.1:"));
    assert_eq!(req.details.login, "alice");
    assert_eq!(req.details.route, None);

    let session = approve(&gw.store, &code, "alice@example.com").await;
    let done = run.finish(T).await;
    eprintln!("--- first connection stderr:\n{}", done.stderr);
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stdout.contains("Email:           alice@example.com\n"),
        "{}",
        done.stdout
    );
    // The web session id is a credential of the browser's: never shown (issue 12).
    assert!(
        !done.stdout.contains(&session.id) && !done.stdout.contains("Session ID"),
        "{}",
        done.stdout
    );
    assert!(done
        .stdout
        .contains(&format!("Key fingerprint: {}\n", key.fingerprint)));
    assert!(
        done.stdout.contains("Session expires: in 13h59m"),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("  groups: sre, dev\n"),
        "{}",
        done.stdout
    );

    // The binding now lets the key straight in, even in batch mode.
    let done = ssh(&gw, &key, "alice", &["-o", "BatchMode=yes"], Some("whoami"))
        .finish(T)
        .await;
    assert!(done.status.success(), "{}", done.stderr);
    assert!(done.stdout.contains("alice@example.com"), "{}", done.stdout);
    assert!(!done.stderr.contains("sign in"), "{}", done.stderr);
    let b = gw
        .store
        .get_binding(&key.binding_id())
        .await
        .unwrap()
        .unwrap();
    assert!(b.last_used.is_some());
    gw.shutdown.cancel();
    gw.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_code_closes_with_a_clear_message() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    let mut run = ssh(&gw, &key, "alice", &[], Some("whoami"));
    let code = run.code().await;
    let s = session_for("alice@example.com");
    gw.store.create_session(&s).await.unwrap();
    gw.store
        .deny_request(&code, s.user_id(), SystemClock.now())
        .await
        .unwrap();
    let done = run.finish(T).await;
    eprintln!("--- denied stderr:\n{}", done.stderr);
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("user has denied this code"),
        "{}",
        done.stderr
    );
    assert!(done.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecided_code_times_out() {
    let gw = start(Duration::from_secs(3)).await;
    let key = keygen();
    let mut run = ssh(&gw, &key, "alice", &[], Some("whoami"));
    let _code = run.code().await;
    let started = tokio::time::Instant::now();
    let done = run.finish(T).await;
    eprintln!("--- timeout stderr:\n{}", done.stderr);
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("authentication request timeout"),
        "{}",
        done.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_with_one_key_share_the_url() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    let mut a = ssh(&gw, &key, "alice", &[], Some("whoami"));
    let code_a = a.code().await;
    let mut b = ssh(&gw, &key, "alice", &[], Some("whoami"));
    let code_b = b.code().await;
    assert_eq!(code_a, code_b, "one URL per key");
    approve(&gw.store, &code_a, "alice@example.com").await;
    for run in [a, b] {
        let done = run.finish(T).await;
        assert!(done.status.success(), "{}", done.stderr);
        assert!(done.stdout.contains("alice@example.com"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_drops_its_request() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    let mut run = ssh(&gw, &key, "alice", &[], Some("whoami"));
    let code = run.code().await;
    assert!(gw.store.get_request(&code).await.unwrap().is_some());
    run.child.kill().await.unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if gw.store.get_request(&code).await.unwrap().is_none() {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "request still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_fails_closed_with_a_reference() {
    let (flaky, inner) = common::flaky::flaky();
    let gw = start_with(Duration::from_secs(60), flaky.clone(), inner).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    flaky.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    // Not in batch mode: the message travels as a DISCONNECT that OpenSSH reads on
    // its way to keyboard-interactive (batch mode stops at "Permission denied").
    let done = ssh(&gw, &key, "alice", &[], Some("whoami")).finish(T).await;
    eprintln!("--- store down stderr:\n{}", done.stderr);
    assert_eq!(done.status.code(), Some(255));
    assert!(done.stdout.is_empty(), "{}", done.stdout);
    assert!(
        done.stderr
            .contains("gateway store unavailable; try again later (ref "),
        "{}",
        done.stderr
    );
    assert!(
        !done.stderr.contains("10.9.9.9"),
        "no detail leaks: {}",
        done.stderr
    );
}
