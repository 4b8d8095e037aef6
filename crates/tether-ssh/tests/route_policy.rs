//! Route policies enforced with the real OpenSSH client: groups, `ssh_publickey`
//! (the client falls back to its next key), `ssh_username_matches_email`, `ssh_ca`
//! (OpenSSH user certificates made by `ssh-keygen -s`), and live
//! connections ended by revocation and by a policy re-check.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod route_support;
mod upstream_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use route_support::*;
use tether_core::policy::Criterion;
use tether_core::Session;
use tether_store::Store;
use upstream_support::{can_run_sshd, USER};

fn session_with_groups(email: &str, groups: &[&str]) -> Session {
    let mut s = session_for(email);
    let mut claims = BTreeMap::new();
    claims.insert("email".to_string(), serde_json::json!(email));
    claims.insert("groups".to_string(), serde_json::json!(groups));
    s.identity.claims = claims;
    s
}

/// A rig whose route `prod` admits authenticated users passing `key_rule` (a
/// criterion on the client's key or certificate).
async fn key_policy_rig(key_rule: Criterion) -> Rig {
    rig("", move |addr| {
        vec![route(
            "prod",
            addr,
            Some(vec![Criterion::AuthenticatedUser, key_rule]),
            false,
        )]
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_policy_refuses_a_user_without_the_group() {
    if !can_run_sshd() {
        return;
    }
    let rig = rig("", |addr| {
        vec![route(
            "prod",
            addr,
            Some(vec![Criterion::Groups(vec!["sre".into()])]),
            false,
        )]
    })
    .await;
    let user = format!("{USER}@prod");

    let dev = keygen();
    sign_in_session(
        &rig.gw,
        &dev,
        session_with_groups("dave@example.com", &["dev"]),
    )
    .await;
    let done = ssh_batch(&rig.gw, &dev, &user, &[], Some("id -un")).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr
            .contains(": access denied: route \"prod\": not in group sre\n"),
        "{}",
        done.stderr
    );
    assert!(!rig.sshd.log().contains("Accepted"), "{}", rig.sshd.log());

    // The same policy decides right after a fresh sign-in on the route.
    let fresh = keygen();
    let mut run = ssh(&rig.gw, &fresh, &user, &[], Some("id -un"));
    let code = run.code().await;
    approve_with(
        &rig.gw.store,
        &code,
        session_with_groups("erin@example.com", &["dev"]),
        Duration::from_secs(3600),
    )
    .await;
    let done = run.finish(T).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr
            .contains("access denied: route \"prod\": not in group sre"),
        "{}",
        done.stderr
    );

    let sre = keygen();
    sign_in_session(
        &rig.gw,
        &sre,
        session_with_groups("sam@example.com", &["sre"]),
    )
    .await;
    let done = ssh_batch(&rig.gw, &sre, &user, &[], Some("id -un")).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, format!("{USER}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publickey_policy_lets_the_client_fall_back_to_its_next_key() {
    if !can_run_sshd() {
        return;
    }
    let listed = keygen();
    let rig = key_policy_rig(Criterion::SshPublickey(vec![public_line(&listed)])).await;
    let other = keygen();
    // Both keys are bound to alice (one web session).
    let s = sign_in(&rig.gw, &other, "alice@example.com").await;
    let mut run = ssh(&rig.gw, &listed, "alice", &[], Some("whoami"));
    let code = run.code().await;
    rig.gw
        .store
        .approve_request(
            &code,
            &s,
            false,
            Duration::from_secs(3600),
            tether_core::Clock::now(&tether_core::SystemClock),
        )
        .await
        .unwrap();
    assert!(run.finish(T).await.status.success());
    let user = format!("{USER}@prod");

    // `other` first: refused on the key alone, so the client tries `listed`.
    let listed_path = listed.path.to_str().unwrap().to_string();
    let done = ssh_batch(
        &rig.gw,
        &other,
        &user,
        &["-i", &listed_path],
        Some("id -un"),
    )
    .await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, format!("{USER}\n"));
    let owner = |b: Option<tether_core::ClientBinding>| b.map(|b| b.user_id);
    let store = &rig.gw.store;
    assert_eq!(
        owner(store.get_binding(&other.binding_id()).await.unwrap()),
        owner(store.get_binding(&listed.binding_id()).await.unwrap()),
    );

    // With only the unlisted key there is nothing left to try.
    let done = ssh_batch(&rig.gw, &other, &user, &[], Some("id -un")).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains("Permission denied (publickey)"),
        "{}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_matches_email_admits_alice_as_alice_not_root() {
    if !can_run_sshd() {
        return;
    }
    ensure_login("alice");
    let rig = rig("", |addr| {
        vec![route(
            "prod",
            addr,
            Some(vec![Criterion::SshUsernameMatchesEmail]),
            false,
        )]
    })
    .await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;

    let done = ssh_batch(&rig.gw, &key, "alice@prod", &[], Some("id -un")).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, "alice\n");

    let done = ssh_batch(&rig.gw, &key, "root@prod", &[], Some("id -un")).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr.contains(
            ": access denied: route \"prod\": login name \"root\" does not match your email\n"
        ),
        "{}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_binding_cuts_a_relayed_session() {
    if !can_run_sshd() {
        return;
    }
    let rig = rig("", |addr| vec![route("prod", addr, None, true)]).await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let mut run = ssh(
        &rig.gw,
        &key,
        &format!("{USER}@prod"),
        &["-o", "BatchMode=yes"],
        Some("echo started >&2; sleep 600"),
    );
    let registry = rig.gw.registry.clone();
    let id = key.binding_id();
    run.line_with("started", T).await;
    assert_eq!(registry.live_count(&id), 1);

    rig.gw
        .store
        .revoke_binding(&id, None, "revoked by alice@example.com")
        .await
        .unwrap();
    let t0 = Instant::now();
    run.line_with("tether: access revoked: revoked by alice@example.com", T)
        .await;
    let done = run.finish(Duration::from_secs(5)).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(
        done.stderr
            .contains("access revoked: revoked by alice@example.com"),
        "{}",
        done.stderr
    );
    eventually("no live connections", T, || registry.total() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_recheck_ends_connections_the_new_config_denies() {
    if !can_run_sshd() {
        return;
    }
    let rig = rig("", |addr| vec![route("prod", addr, None, true)]).await;
    let addr = rig.sshd.address();
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let user = format!("{USER}@prod");
    let mut run = ssh(
        &rig.gw,
        &key,
        &user,
        &["-o", "BatchMode=yes"],
        Some("echo started >&2; sleep 600"),
    );
    let registry = rig.gw.registry.clone();
    run.line_with("started", T).await;
    assert_eq!(registry.total(), 1);

    // Reload with the same policy plus a new route: nothing ends, and new
    // connections see the new route.
    let mut same = config_with(vec![
        route("prod", &addr, None, true),
        route("staging", &addr, None, true),
    ]);
    assert_eq!(registry.recheck_policies(&same), 0);
    let done = ssh_batch(
        &rig.gw,
        &key,
        &format!("{USER}@staging"),
        &[],
        Some("id -un"),
    )
    .await;
    assert!(done.status.success(), "{}", done.stderr);

    // Tightened: the live connection ends through the revocation path.
    same.routes[0] = route(
        "prod",
        &addr,
        Some(vec![Criterion::Groups(vec!["admins".into()])]),
        false,
    );
    assert_eq!(registry.recheck_policies(&same), 1);
    run.line_with(
        "tether: access revoked: access denied: route \"prod\": not in group admins",
        T,
    )
    .await;
    let done = run.finish(Duration::from_secs(5)).await;
    assert_eq!(done.status.code(), Some(255));
    eventually("no live connections", T, || registry.total() == 0).await;

    // And new connections get the new decision.
    let done = ssh_batch(&rig.gw, &key, &user, &[], Some("true")).await;
    assert_eq!(done.status.code(), Some(255));
    assert!(
        done.stderr
            .contains("access denied: route \"prod\": not in group admins"),
        "{}",
        done.stderr
    );
}

/// Signs `key`'s public key with the CA at `ca` into `<key>-cert.pub`, which the
/// OpenSSH client offers (before the plain key) whenever it uses `-i <key>`.
fn certify(ca: &ClientKey, key: &ClientKey, principals: &str, validity: &str) {
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca.path)
        .args(["-I", "alice@example.com", "-n", principals, "-V", validity])
        .arg(key.path.with_extension("pub"))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(key.path.with_file_name("id_ed25519-cert.pub").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_ca_policy_admits_only_a_current_certificate_from_the_ca_naming_the_login() {
    if !can_run_sshd() {
        return;
    }
    let ca = keygen();
    let rig = key_policy_rig(Criterion::SshCa(vec![public_line(&ca)])).await;
    let user = format!("{USER}@prod");
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let refused = |done: &Finished, why: &str| {
        assert_eq!(done.status.code(), Some(255), "{why}: {}", done.stderr);
        assert!(
            done.stderr.contains("Permission denied (publickey)"),
            "{why}: {}",
            done.stderr
        );
    };

    // The bound key alone: the route wants a certificate.
    let done = ssh_batch(&rig.gw, &key, &user, &[], Some("id -un")).await;
    refused(&done, "plain key");

    // A current certificate from the CA naming the login: in, as that login.
    certify(&ca, &key, &format!("{USER},other"), "-5m:+1h");
    let done = ssh_batch(&rig.gw, &key, &user, &[], Some("id -un")).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stdout, format!("{USER}\n"));

    // Expired, from another CA, or not naming the login: refused.
    certify(&ca, &key, USER, "20200101:20200102");
    let done = ssh_batch(&rig.gw, &key, &user, &[], Some("id -un")).await;
    refused(&done, "expired certificate");
    let other_ca = keygen();
    certify(&other_ca, &key, USER, "-5m:+1h");
    let done = ssh_batch(&rig.gw, &key, &user, &[], Some("id -un")).await;
    refused(&done, "certificate from another CA");
    certify(&ca, &key, "somebody-else", "-5m:+1h");
    let done = ssh_batch(&rig.gw, &key, &user, &[], Some("id -un")).await;
    refused(&done, "certificate without the login");

    // Only the one admitted connection reached the upstream.
    assert_eq!(rig.sshd.log().matches("Accepted publickey for").count(), 1);
}
