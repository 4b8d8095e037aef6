//! The test OpenID Connect provider (`tests/idp/idp.js`, npm `oidc-provider`) as a
//! child process on a free loopback port.

use crate::process::{ensure_node_modules, pump, spawn_group, tail, terminate, text, SharedBuf};
use crate::repo_root;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The IdP's static users: (login, password, subject, email, groups).
pub const IDP_USERS: [(&str, &str, &str, &str, &[&str]); 3] = [
    (
        "alice",
        "alice-password",
        "alice-sub",
        "alice@example.com",
        &["sre", "dev"],
    ),
    (
        "bob",
        "bob-password",
        "bob-sub",
        "bob@example.com",
        &["dev"],
    ),
    (
        "carol",
        "carol-password",
        "carol-sub",
        "carol@example.com",
        &[],
    ),
];

/// A running test IdP. Killed (SIGTERM, then SIGKILL) on drop.
pub struct Idp {
    /// Issuer URL, `http://127.0.0.1:<port>` (plus `IDP_ISSUER_PATH` when set), no
    /// trailing slash.
    pub issuer: String,
    /// The port it listens on.
    pub port: u16,
    child: Child,
    stderr: SharedBuf,
}

impl Idp {
    /// Starts the IdP with one confidential client. `redirect_uri` may list several
    /// URIs separated by commas (one per tether replica).
    pub fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> Idp {
        Idp::start_with_env(client_id, client_secret, redirect_uri, &[])
    }

    /// As [`Idp::start`], with extra environment (e.g. `("IDP_TTL_ID_TOKEN", "60")`).
    pub fn start_with_env(
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        env: &[(&str, &str)],
    ) -> Idp {
        let dir = repo_root().join("tests/idp");
        ensure_node_modules(&dir, "oidc-provider");
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("idp.js"))
            .current_dir(&dir)
            .env("IDP_PORT", "0")
            .env("IDP_CLIENT_ID", client_id)
            .env("IDP_CLIENT_SECRET", client_secret)
            .env("IDP_REDIRECT_URI", redirect_uri)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (child, stderr, issuer) = start_node(
            &mut cmd,
            "IDP_READY ",
            "the test IdP (node tests/idp/idp.js)",
        );
        // `http://127.0.0.1:<port>[/path]` (IDP_ISSUER_PATH).
        let port = issuer
            .strip_prefix("http://127.0.0.1:")
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse the port of issuer {issuer}"));
        Idp {
            issuer,
            port,
            child,
            stderr,
        }
    }

    fn admin(&self, path: &str, body: &[u8]) -> String {
        let url = format!("{}/test-admin/{path}", self.issuer);
        let res = crate::http_request(
            "POST",
            &url,
            &[("Content-Type", "application/json")],
            Some(body),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("test IdP admin {path}: {e}"));
        assert_eq!(res.status, 200, "test IdP admin {path}: {res:?}");
        res.body
    }

    /// Gives `login` these groups from now on (ID tokens issued later, including
    /// on refresh, carry them).
    pub fn set_groups(&self, login: &str, groups: &[&str]) {
        let body = serde_json::to_vec(groups).unwrap();
        self.admin(&format!("users/{login}/groups"), &body);
    }

    /// Destroys every grant `login` gave: their refresh tokens answer
    /// `invalid_grant` from now on. Returns how many grants were revoked.
    pub fn revoke_grants(&self, login: &str) -> u64 {
        let body = self.admin(&format!("users/{login}/revoke"), b"");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["revoked"].as_u64().unwrap()
    }

    /// How many `refresh_token` grants the IdP answered successfully so far.
    pub fn refreshes(&self) -> u64 {
        let url = format!("{}/test-admin/refreshes", self.issuer);
        let res = crate::http_get(&url, Duration::from_secs(10)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&res.body).unwrap();
        v["refreshes"].as_u64().unwrap()
    }

    /// What the IdP wrote to stderr so far (sign-ins, errors).
    pub fn log(&self) -> String {
        text(&self.stderr)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- test IdP log ---\n{}", tail(&self.log(), 8000));
        }
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

/// A stand-in for GitHub's OAuth flow and REST API (`tests/idp/github.js`) on a
/// free loopback port, laid out as GitHub Enterprise Server (REST under `/api/v3`).
/// Users: `alice` (orgs `acme`, teams `acme/sre`, `acme/dev`), `bob` (`acme`,
/// `other`, `acme/dev`), `mallory` (an unverified primary email); password
/// `<login>-password`. Killed on drop.
pub struct FakeGithub {
    /// Base URL, `http://127.0.0.1:<port>` (what `idp_provider_url` names).
    pub url: String,
    child: Child,
    stderr: SharedBuf,
}

impl FakeGithub {
    /// Starts it for one OAuth app.
    pub fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> FakeGithub {
        let dir = repo_root().join("tests/idp");
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("github.js"))
            .current_dir(&dir)
            .env("GH_CLIENT_ID", client_id)
            .env("GH_CLIENT_SECRET", client_secret)
            .env("GH_REDIRECT_URI", redirect_uri)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (child, stderr, url) = start_node(
            &mut cmd,
            "GITHUB_READY ",
            "the fake GitHub (node tests/idp/github.js)",
        );
        FakeGithub { url, child, stderr }
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        text(&self.stderr)
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- fake GitHub log ---\n{}", tail(&self.log(), 8000));
        }
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

/// A CI system's token issuer (`tests/idp/ci.js`, npm `oidc-provider`): jobs get
/// JWT access tokens through the client-credentials grant. Jobs: `deploy-main`,
/// `other-repo`, `wrong-aud`, `short-lived` (see the script). Killed on drop.
pub struct CiIssuer {
    /// Issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
    child: Child,
    stderr: SharedBuf,
}

impl CiIssuer {
    /// Starts it; tokens are for `audience` (except `wrong-aud`'s).
    pub fn start(audience: &str) -> CiIssuer {
        let dir = repo_root().join("tests/idp");
        ensure_node_modules(&dir, "oidc-provider");
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("ci.js"))
            .current_dir(&dir)
            .env("CI_AUDIENCE", audience)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (child, stderr, issuer) = start_node(
            &mut cmd,
            "CI_READY ",
            "the CI token issuer (node tests/idp/ci.js)",
        );
        CiIssuer {
            issuer,
            child,
            stderr,
        }
    }

    /// A fresh token for `job` (client credentials), or panics with the answer.
    pub fn token(&self, job: &str) -> String {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{job}:{job}"));
        let auth = format!("Basic {basic}");
        let res = crate::http_request(
            "POST",
            &format!("{}/token", self.issuer),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(b"grant_type=client_credentials&scope=ci"),
            Duration::from_secs(10),
        )
        .expect("token request");
        let v: serde_json::Value = serde_json::from_str(&res.body)
            .unwrap_or_else(|_| panic!("token answer is not JSON: {}", res.body));
        v.get("access_token")
            .and_then(|t| t.as_str())
            .unwrap_or_else(|| panic!("no access_token for {job}: {}", res.body))
            .to_string()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        text(&self.stderr)
    }
}

impl Drop for CiIssuer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- CI issuer log ---\n{}", tail(&self.log(), 8000));
        }
        terminate(&mut self.child, Duration::from_secs(3));
    }
}

/// Spawns a Node script and waits for the stdout line starting with `marker`,
/// returning the rest of it. A script that exits first is a failure at once (its
/// stderr says why); one that is merely slow — a loaded CI machine — is given
/// 30 s, then killed and started again, three attempts in all.
fn start_node(cmd: &mut Command, marker: &'static str, what: &str) -> (Child, SharedBuf, String) {
    const ATTEMPTS: u32 = 3;
    const READY_WITHIN: Duration = Duration::from_secs(30);
    for attempt in 1..=ATTEMPTS {
        let mut child = spawn_group(cmd, what);
        let stderr: SharedBuf = Arc::default();
        pump(child.stderr.take().unwrap(), stderr.clone());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix(marker) {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(READY_WITHIN) {
            Ok(ready) => return (child, stderr, ready),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                terminate(&mut child, Duration::from_secs(1));
                panic!(
                    "{what} exited before printing {marker}; stderr:\n{}",
                    tail(&text(&stderr), 4000)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                terminate(&mut child, Duration::from_secs(1));
                if attempt == ATTEMPTS {
                    panic!(
                        "{what} did not print {marker}within {} s, {ATTEMPTS} attempts; stderr:\n{}",
                        READY_WITHIN.as_secs(),
                        tail(&text(&stderr), 4000)
                    );
                }
                eprintln!(
                    "{what} did not print {marker}within {} s (attempt {attempt}); starting it again",
                    READY_WITHIN.as_secs()
                );
            }
        }
    }
    unreachable!("the loop returns or panics")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{have_program, http_get, require};

    #[test]
    fn idp_serves_discovery() {
        if !require("node", have_program("node")) {
            return;
        }
        let idp = Idp::start("tether", "s3cret", "http://127.0.0.1:9/oauth2/callback");
        assert!(idp.issuer.starts_with("http://127.0.0.1:"));
        let url = format!("{}/.well-known/openid-configuration", idp.issuer);
        let res = http_get(&url, Duration::from_secs(10)).unwrap();
        assert_eq!(res.status, 200, "{res:?}");
        let doc: serde_json::Value = serde_json::from_str(&res.body).unwrap();
        assert_eq!(doc["issuer"], idp.issuer.as_str());
        assert!(doc["code_challenge_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&"S256".into()));
    }
}
