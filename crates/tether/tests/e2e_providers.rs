//! Named identity providers (issue 15) through the real binary, the real OpenSSH
//! client and headless Chromium:
//! - `idp_provider: github` against a local stand-in speaking GitHub's OAuth web
//!   flow and REST API (`tests/idp/github.js`, Enterprise Server layout): identity
//!   from `/user`, the verified primary email from `/user/emails`, groups from
//!   `/user/orgs` and `/user/teams` (`org/team`) deciding routes.
//! - `idp_provider: azure` against the test IdP with an Entra-shaped issuer
//!   (`/<tenant>/v2.0`) and claims (`tid`, `oid`, no `email_verified` but
//!   `xms_edov`, `groups`); a user with the group overage is refused a
//!   groups-policy route, with the reason, and admitted to an email one.
//! - `idp_provider: azure` at the multi-tenant `/common/v2.0` (placeholder issuer
//!   in discovery, each token's `iss` checked with its `tid`).
//! - `idp_provider: cognito` (`cognito:groups`), `auth0` (namespaced groups
//!   claim, issuer with a trailing `/`), `gitlab` (`groups_direct`), `okta`
//!   (groups claim, authorization server path) and `google` (`hd`, its
//!   authorization parameters) against the test IdP shaped like each.
//! - `idp_provider: onelogin` at a v2 issuer (`/oidc/2`) that releases groups
//!   only for the `groups` scope, and `idp_provider: ping` at a PingOne-shaped
//!   issuer (`/<environment>/as`): a groups route admits alice through each.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::json;
use tether_testkit::*;

const T: Duration = Duration::from_secs(30);

/// Routes to one sshd: `sre` (groups has SRE_GROUP), `other` (groups has
/// `other-team`), `mail` (email is alice@example.com or olga@example.com),
/// `extra` (the policy given).
fn routes(sshd_port: u16, ca: &Path, sre_group: &str, extra_policy: &str) -> String {
    format!(
        "ssh_user_ca_key_file: {ca}
ssh_sign_in_timeout: 2m
routes:
  - from: ssh://sre
    to: ssh://127.0.0.1:{sshd_port}
    policy:
      - allow:
          or:
            - groups:
                has: {sre_group}
  - from: ssh://other
    to: ssh://127.0.0.1:{sshd_port}
    policy:
      - allow:
          or:
            - groups:
                has: other-team
  - from: ssh://mail
    to: ssh://127.0.0.1:{sshd_port}
    policy:
      - allow:
          or:
            - email:
                in: [alice@example.com, olga@example.com]
  - from: ssh://extra
    to: ssh://127.0.0.1:{sshd_port}
    policy:
{extra_policy}",
        ca = ca.display()
    )
}

struct Upstream {
    sshd: Sshd,
    ca: PathBuf,
    keys: tempfile::TempDir,
}

fn upstream() -> Upstream {
    ensure_user("alice");
    ensure_user("olga");
    let keys = key_dir();
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(&PathBuf::from(format!("{}.pub", ca.display())));
    Upstream { sshd, ca, keys }
}

/// The gateway's base config with `provider` at `url` (the test client).
fn base(http_port: u16, ssh_port: u16, provider: &str, url: &str) -> String {
    config_yaml(http_port, ssh_port, url, "").replace(
        "idp_provider: oidc\n",
        &format!("idp_provider: {provider}\n"),
    )
}

/// `ssh` as `wire_user` with `key`, signed in in `browser` as `user`; returns the
/// client after the browser's Authorize.
fn sign_in(
    ssh_port: u16,
    key: &Path,
    wire_user: &str,
    user: &str,
    browser: &BrowserProfile,
    args: &[&str],
) -> SshClient {
    let port = ssh_port.to_string();
    let target = format!("{wire_user}@127.0.0.1");
    let mut all = vec!["-p", &port, "-i", key.to_str().unwrap(), &target];
    all.extend(args);
    let ssh = SshClient::spawn(&all);
    let url = sign_in_url(&ssh);
    browser
        .run(json!([
            {"goto": url},
            {"login": {"user": user, "password": format!("{user}-password")}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    ssh
}

fn batch(
    ssh_port: u16,
    key: &Path,
    wire_user: &str,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let port = ssh_port.to_string();
    let target = format!("{wire_user}@127.0.0.1");
    let mut all = vec![
        "-o",
        "BatchMode=yes",
        "-p",
        &port,
        "-i",
        key.to_str().unwrap(),
        &target,
    ];
    all.extend(args);
    run_ssh(&all, T)
}

fn present() -> bool {
    components_present() && require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists())
}

#[test]
fn github_oauth_sign_in_with_orgs_and_teams_as_groups() {
    if !present() {
        return;
    }
    let up = upstream();
    let http_port = free_port();
    let ssh_port = free_port();
    let gh = FakeGithub::start(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("http://127.0.0.1:{http_port}/oauth2/callback"),
    );
    let yaml = format!(
        "{}{}",
        base(http_port, ssh_port, "github", &gh.url),
        routes(
            up.sshd.port,
            &up.ca,
            "acme/sre",
            "      - allow:\n          and:\n            - claim/preferred_username: alice\n",
        )
    );
    let tether = TetherProcess::start(&yaml, &[]);
    let check = tether.cli(&["check", "-c", tether.config_path().to_str().unwrap()]);
    assert!(check.stdout.contains("idp_provider: github"), "{check:?}");

    let k = new_key(up.keys.path(), "alice");
    let browser = BrowserProfile::new("github_alice");
    let mut ssh = sign_in(ssh_port, &k, "alice@sre", "alice", &browser, &["id", "-un"]);
    assert_eq!(
        ssh.wait_exit(T),
        Some(0),
        "{}\n{}",
        ssh.output(),
        tether.logs()
    );
    assert!(ssh.output().contains("alice"), "{}", ssh.output());
    assert!(
        gh.log()
            .contains("alice authorized (scope user:email read:org)"),
        "{}",
        gh.log()
    );

    // whoami: the verified primary email, the GitHub node id, orgs and teams.
    let (status, out, err) = batch(ssh_port, &k, "alice", &["whoami"]);
    assert_eq!(status, Some(0), "{err}");
    assert!(out.contains("alice@example.com"), "{out}");
    assert!(out.contains("U_alice_node"), "{out}");
    assert!(
        out.contains("acme/sre") && out.contains("acme/dev"),
        "{out}"
    );
    assert!(
        !out.contains("alice@old.example"),
        "only the primary email: {out}"
    );

    // Groups decide: the email and login-claim routes admit, `other` refuses.
    let (status, out, err) = batch(ssh_port, &k, "alice@mail", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "alice"), "{err}");
    let (status, out, err) = batch(ssh_port, &k, "alice@extra", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "alice"), "{err}");
    let (status, _, err) = batch(ssh_port, &k, "alice@other", &["id", "-un"]);
    assert_ne!(status, Some(0));
    assert!(
        err.contains("access denied: route \"other\": not in group other-team"),
        "{err}"
    );

    // An unverified primary address is not an email: the email route refuses.
    let m = new_key(up.keys.path(), "mallory");
    let browser = BrowserProfile::new("github_mallory");
    let mut ssh = sign_in(
        ssh_port,
        &m,
        "alice@mail",
        "mallory",
        &browser,
        &["id", "-un"],
    );
    assert_ne!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    assert!(
        ssh.output().contains("access denied: route \"mail\""),
        "{}",
        ssh.output()
    );
}

/// One OIDC provider shaped by the test IdP (`env`: `IDP_PROFILE`, …): alice
/// signs in on `route` (`sre`: groups has sre, from the provider's groups claim)
/// and lands upstream.
fn oidc_provider_case(
    provider: &str,
    env: &[(&str, &str)],
    route: &str,
    extra_policy: &str,
) -> (TetherProcess, Idp, Upstream, u16, PathBuf) {
    oidc_provider_case_at(provider, env, route, extra_policy, |idp| idp.issuer.clone())
}

/// As [`oidc_provider_case`], with `idp_provider_url` derived from the IdP by `url`.
fn oidc_provider_case_at(
    provider: &str,
    env: &[(&str, &str)],
    route: &str,
    extra_policy: &str,
    url: fn(&Idp) -> String,
) -> (TetherProcess, Idp, Upstream, u16, PathBuf) {
    let up = upstream();
    let http_port = free_port();
    let ssh_port = free_port();
    let idp = Idp::start_with_env(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("http://127.0.0.1:{http_port}/oauth2/callback"),
        env,
    );
    let yaml = format!(
        "{}{}",
        base(http_port, ssh_port, provider, &url(&idp)),
        routes(up.sshd.port, &up.ca, "sre", extra_policy)
    );
    let tether = TetherProcess::start(&yaml, &[]);
    let k = new_key(up.keys.path(), "alice");
    let browser = BrowserProfile::new(&format!("{provider}_alice"));
    let wire = format!("alice@{route}");
    let mut ssh = sign_in(ssh_port, &k, &wire, "alice", &browser, &["id", "-un"]);
    assert_eq!(
        ssh.wait_exit(T),
        Some(0),
        "{provider}: {}\n{}\n{}",
        ssh.output(),
        tether.logs(),
        idp.log()
    );
    assert!(ssh.output().contains("alice"), "{}", ssh.output());
    (tether, idp, up, ssh_port, k)
}

#[test]
fn azure_entra_shaped_issuer_claims_and_group_overage() {
    if !present() {
        return;
    }
    let tenant = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let path = format!("/{tenant}/v2.0");
    let (tether, idp, up, ssh_port, k) = oidc_provider_case(
        "azure",
        &[("IDP_PROFILE", "azure"), ("IDP_ISSUER_PATH", &path)],
        "sre",
        "      - allow:\n          and:\n            - claim/tid: 9188040d-6c67-4c5b-b112-36a304b66dad\n",
    );
    assert!(idp.issuer.ends_with(&format!("/{tenant}/v2.0")));
    // Entra sends no email_verified; xms_edov makes the email count.
    let (status, out, err) = batch(ssh_port, &k, "alice@mail", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "alice"), "{err}");
    let (status, out, err) = batch(ssh_port, &k, "alice@extra", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "alice"), "{err}");

    // Olga's groups did not fit the token (overage): a groups route refuses her
    // with the reason; the email route admits her.
    let o = new_key(up.keys.path(), "olga");
    let browser = BrowserProfile::new("azure_olga");
    let mut ssh = sign_in(ssh_port, &o, "olga@sre", "olga", &browser, &["id", "-un"]);
    assert_ne!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    assert!(
        ssh.output()
            .contains("access denied: route \"sre\": your groups are not in the sign-in token"),
        "{}\n{}",
        ssh.output(),
        tether.logs()
    );
    let (status, out, err) = batch(ssh_port, &o, "olga@mail", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "olga"), "{err}");
}

/// Entra's multi-tenant endpoint (`/common/v2.0`): its discovery document names
/// the placeholder issuer `…/{tenantid}/v2.0`; the ID token's `iss` is checked
/// against it with the token's `tid`.
#[test]
fn azure_multi_tenant_common_endpoint() {
    if !present() {
        return;
    }
    let path = "/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0";
    let (tether, _idp, _up, _, _) = oidc_provider_case_at(
        "azure",
        &[("IDP_PROFILE", "azure"), ("IDP_ISSUER_PATH", path)],
        "sre",
        "      - allow:\n          and:\n            - accept: true\n",
        |idp| format!("http://127.0.0.1:{}/common/v2.0", idp.port),
    );
    assert!(
        tether.logs().contains("/common/v2.0 provider=\"azure\""),
        "{}",
        tether.logs()
    );
}

#[test]
fn cognito_auth0_gitlab_okta_and_google_shaped_claims() {
    if !present() {
        return;
    }
    // Cognito (a user pool's issuer path): groups from cognito:groups.
    let case = oidc_provider_case(
        "cognito",
        &[
            ("IDP_PROFILE", "cognito"),
            ("IDP_ISSUER_PATH", "/eu-west-1_AbCdEf"),
        ],
        "sre",
        "      - allow:\n          and:\n            - claim/cognito:username: alice\n",
    );
    let (status, out, err) = batch(case.3, &case.4, "alice@extra", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "alice"), "{err}");
    drop(case);

    // Auth0: an issuer ending with `/`, groups from a namespaced custom claim.
    let case = oidc_provider_case(
        "auth0",
        &[("IDP_PROFILE", "auth0"), ("IDP_ISSUER_SLASH", "1")],
        "sre",
        "      - allow:\n          and:\n            - accept: true\n",
    );
    assert!(case.1.issuer.ends_with('/'), "{}", case.1.issuer);
    drop(case);

    // GitLab (self-managed URL): groups from groups_direct.
    drop(oidc_provider_case(
        "gitlab",
        &[("IDP_PROFILE", "gitlab")],
        "sre",
        "      - allow:\n          and:\n            - accept: true\n",
    ));

    // Okta (a custom authorization server path): the groups claim as sent.
    drop(oidc_provider_case(
        "okta",
        &[
            ("IDP_PROFILE", "okta"),
            ("IDP_ISSUER_PATH", "/oauth2/default"),
        ],
        "sre",
        "      - allow:\n          and:\n            - accept: true\n",
    ));

    // Google (its URL overridden to the test IdP; access_type=offline and
    // prompt=consent asked): hd is the Workspace domain, no groups.
    let case = oidc_provider_case(
        "google",
        &[("IDP_PROFILE", "google")],
        "extra",
        "      - allow:\n          and:\n            - claim/hd: example.com\n",
    );
    let (status, _, err) = batch(case.3, &case.4, "alice@sre", &["id", "-un"]);
    assert_ne!(status, Some(0));
    assert!(err.contains("not in group sre"), "{err}");
}

#[test]
fn onelogin_v2_groups_scope_and_ping_issuer() {
    if !present() {
        return;
    }
    // OneLogin v2: groups come only with the `groups` scope tether asks for; the
    // `sre` route (groups has sre) admits alice, `other` (other-team) does not.
    let case = oidc_provider_case(
        "onelogin",
        &[("IDP_PROFILE", "onelogin"), ("IDP_ISSUER_PATH", "/oidc/2")],
        "sre",
        "      - allow:\n          and:\n            - accept: true\n",
    );
    assert!(case.1.issuer.ends_with("/oidc/2"), "{}", case.1.issuer);
    let (status, _, err) = batch(case.3, &case.4, "alice@other", &["id", "-un"]);
    assert_ne!(status, Some(0));
    assert!(err.contains("not in group other-team"), "{err}");
    drop(case);

    // PingOne: the environment's issuer path, groups as sent.
    let case = oidc_provider_case(
        "ping",
        &[
            ("IDP_PROFILE", "ping"),
            ("IDP_ISSUER_PATH", "/0a7af3ae-6b0e-4b3a-9a1e-3f2a9c3c1d11/as"),
        ],
        "sre",
        "      - allow:\n          and:\n            - email:\n                is: alice@example.com\n",
    );
    let (status, out, err) = batch(case.3, &case.4, "alice@extra", &["id", "-un"]);
    assert_eq!((status, out.trim()), (Some(0), "alice"), "{err}");
}

/// `signout_redirect_url` (here the IdP's discovery document, another origin):
/// after the sign-out form the real browser lands there — the form's CSP lets
/// it — and the binding made before is gone.
#[test]
fn sign_out_lands_on_signout_redirect_url() {
    if !present() {
        return;
    }
    let up = upstream();
    let http_port = free_port();
    let ssh_port = free_port();
    let idp = Idp::start(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("http://127.0.0.1:{http_port}/oauth2/callback"),
    );
    let bye = format!("{}/.well-known/openid-configuration", idp.issuer);
    let yaml = format!(
        "{}signout_redirect_url: {bye}\n{}",
        base(http_port, ssh_port, "oidc", &idp.issuer),
        routes(
            up.sshd.port,
            &up.ca,
            "sre",
            "      - allow:\n          and:\n            - accept: true\n"
        )
    );
    let tether = TetherProcess::start(&yaml, &[]);
    let k = new_key(up.keys.path(), "alice");
    let browser = BrowserProfile::new("signout_redirect_alice");
    let mut ssh = sign_in(ssh_port, &k, "alice@sre", "alice", &browser, &["id", "-un"]);
    assert_eq!(
        ssh.wait_exit(T),
        Some(0),
        "{}\n{}",
        ssh.output(),
        tether.logs()
    );

    browser
        .run(json!([
            {"goto": format!("http://127.0.0.1:{http_port}/.pomerium/sign_out")},
            {"click": "#sign-out"},
            {"expectText": "authorization_endpoint"},
            {"screenshot": "signout-redirect"},
        ]))
        .assert_ok();
    // Signed out: the key is asked to sign in again.
    let port = ssh_port.to_string();
    let again = SshClient::spawn(&[
        "-p",
        &port,
        "-i",
        k.to_str().unwrap(),
        "alice@sre@127.0.0.1",
    ]);
    assert!(sign_in_url(&again).contains("/.pomerium/sign_in?user_code="));
}
