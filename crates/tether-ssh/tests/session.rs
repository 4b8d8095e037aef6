//! After authentication: the internal CLI, routes, revocation and logout, with the
//! real OpenSSH client (and a russh client where OpenSSH cannot hold a channel open).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use russh::keys::PrivateKeyWithHashAlg;
use russh::ChannelMsg;
use tether_store::Store;

const T: Duration = Duration::from_secs(20);

fn batch() -> &'static [&'static str] {
    &["-o", "BatchMode=yes"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_unknown_and_shell_print_usage_with_status_1() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    for cmd in [Some("--help"), Some("help"), None] {
        let done = ssh(&gw, &key, "alice", batch(), cmd).finish(T).await;
        assert_eq!(done.status.code(), Some(1), "{cmd:?}: {}", done.stderr);
        for c in ["whoami", "logout", "routes", "portal"] {
            assert!(done.stdout.contains(c), "{cmd:?}: {}", done.stdout);
        }
    }
    let done = ssh(&gw, &key, "alice", batch(), Some("frobnicate"))
        .finish(T)
        .await;
    assert_eq!(done.status.code(), Some(1));
    assert!(
        done.stderr.contains("unknown command \"frobnicate\""),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("whoami"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_on_a_terminal_uses_crlf() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let done = ssh(
        &gw,
        &key,
        "alice",
        &["-o", "BatchMode=yes", "-tt"],
        Some("whoami"),
    )
    .finish(T)
    .await;
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stdout
            .contains("Email:           alice@example.com\r\n"),
        "{:?}",
        done.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_username_signs_in_then_reports_the_route_one_line() {
    // The test config's route "prod" points at 127.0.0.1:1, where nothing listens.
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    let mut run = ssh(&gw, &key, "alice@prod", &[], Some("uptime"));
    let code = run.code().await;
    let req = gw.store.get_request(&code).await.unwrap().unwrap();
    assert_eq!(req.details.route.as_deref(), Some("prod"));
    assert_eq!(req.details.login, "alice");
    approve(&gw.store, &code, "alice@example.com").await;
    let done = run.finish(T).await;
    assert_eq!(done.status.code(), Some(255), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("route \"prod\": upstream 127.0.0.1:1 unreachable"),
        "{}",
        done.stderr
    );

    let done = ssh(&gw, &key, "alice@nope", batch(), None).finish(T).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("route \"nope\" not found"),
        "{}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_binding_ends_a_live_connection() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let run = ssh(&gw, &key, "alice", &["-o", "BatchMode=yes", "-N"], None);
    let registry = gw.registry.clone();
    let id = key.binding_id();
    eventually("live connection", T, || registry.live_count(&id) == 1).await;

    let revoked_at = tokio::time::Instant::now();
    gw.store
        .revoke_binding(&id, None, "revoked by admin")
        .await
        .unwrap();
    let done = run.finish(Duration::from_secs(3)).await;
    let took = revoked_at.elapsed();
    eprintln!("--- revoked after {took:?}, stderr:\n{}", done.stderr);
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("access revoked: revoked by admin"),
        "{}",
        done.stderr
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    eventually("registry empty", T, || registry.total() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_prints_its_result_then_ends_everything() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    let session = sign_in(&gw, &key, "alice@example.com").await;
    // A second connection of the same user, which the logout must end too.
    let other = ssh(&gw, &key, "alice", &["-o", "BatchMode=yes", "-N"], None);
    let registry = gw.registry.clone();
    let id = key.binding_id();
    eventually("live connection", T, || registry.live_count(&id) == 1).await;

    let done = ssh(&gw, &key, "alice", batch(), Some("logout"))
        .finish(T)
        .await;
    eprintln!(
        "--- logout stdout {:?} stderr:\n{}",
        done.stdout, done.stderr
    );
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, "Logged out successfully\n");
    assert!(
        !done.stderr.contains("Received disconnect"),
        "{}",
        done.stderr
    );

    let done = other.finish(Duration::from_secs(3)).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("access revoked: logged out"),
        "{}",
        done.stderr
    );
    assert!(gw.store.get_binding(&id).await.unwrap().is_none());
    assert!(gw.store.get_session(&session.id).await.unwrap().is_none());

    // The key needs a new sign-in now.
    let done = ssh(&gw, &key, "alice", batch(), Some("whoami"))
        .finish(T)
        .await;
    assert_eq!(done.status.code(), Some(255));
}

struct AnyServer;

impl russh::client::Handler for AnyServer {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

async fn russh_client(gw: &Gateway) -> russh::client::Handle<AnyServer> {
    let config = Arc::new(russh::client::Config::default());
    russh::client::connect(config, gw.addr, AnyServer)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_notice_reaches_open_session_channels() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;

    let mut client = russh_client(&gw).await;
    let secret = russh::keys::load_secret_key(&key.path, None).unwrap();
    let auth = client
        .authenticate_publickey("alice", PrivateKeyWithHashAlg::new(Arc::new(secret), None))
        .await
        .unwrap();
    assert!(auth.success(), "{auth:?}");
    let mut channel = client.channel_open_session().await.unwrap();
    gw.store
        .revoke_binding(&key.binding_id(), None, "revoked by alice@example.com")
        .await
        .unwrap();
    let mut stderr = String::new();
    let got = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(msg) = channel.wait().await {
            if let ChannelMsg::ExtendedData { data, ext: 1 } = msg {
                stderr.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await;
    assert!(got.is_ok(), "channel not closed");
    assert_eq!(
        stderr,
        "tether: access revoked: revoked by alice@example.com\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_failures_close_the_connection() {
    let gw = start(Duration::from_secs(60)).await;
    let mut client = russh_client(&gw).await;
    let mut failures = 0;
    for _ in 0..10 {
        match client.authenticate_password("alice", "guess").await {
            // The client reports a closed connection as a failure with no methods.
            Ok(russh::client::AuthResult::Failure {
                remaining_methods, ..
            }) if !remaining_methods.is_empty() => failures += 1,
            Ok(r) => {
                assert!(!r.success());
                break;
            }
            Err(_) => break,
        }
    }
    assert_eq!(failures, 6, "the sixth failure closes the connection");
    eventually("connection closed", T, || client.is_closed()).await;
    // A fresh connection is served as usual.
    let mut client = russh_client(&gw).await;
    let r = client.authenticate_none("alice").await.unwrap();
    assert!(!r.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_requests_then_the_connection_is_closed() {
    let gw = start(Duration::from_secs(60)).await;
    let key = keygen();
    let secret = Arc::new(russh::keys::load_secret_key(&key.path, None).unwrap());
    let mut client = russh_client(&gw).await;
    let mut partial = 0;
    for _ in 0..50 {
        let r = client
            .authenticate_publickey("alice", PrivateKeyWithHashAlg::new(secret.clone(), None))
            .await;
        match r {
            Ok(russh::client::AuthResult::Failure {
                partial_success: true,
                ..
            }) => partial += 1,
            _ => break,
        }
    }
    // OpenSSH would move on to keyboard-interactive; this client keeps asking. Each
    // attempt is two requests (a query, then the signed request): the 41st request,
    // the query of attempt 21, is refused.
    assert_eq!(partial, 20);
    eventually("connection closed", T, || client.is_closed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_end_when_the_binding_or_session_expires() {
    let gw = start(Duration::from_secs(60)).await;
    for (session_life, max_ttl, reason) in [
        (
            Duration::from_secs(3),
            Duration::from_secs(3600),
            "access revoked: session expired",
        ),
        (
            Duration::from_secs(3600),
            Duration::from_secs(3),
            "access revoked: binding expired",
        ),
    ] {
        let key = keygen();
        let mut run = ssh(&gw, &key, "alice", &["-N"], None);
        let code = run.code().await;
        let s = session_lasting("alice@example.com", session_life);
        approve_with(&gw.store, &code, s, max_ttl).await;
        let started = tokio::time::Instant::now();
        let done = run.finish(Duration::from_secs(8)).await;
        assert_eq!(done.status.code(), Some(255));
        assert!(done.stderr.contains(reason), "{}", done.stderr);
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
