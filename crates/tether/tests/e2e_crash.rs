//! Crash consistency and store faults (issue 12; SPEC §5, §9), through the real
//! binary, real OpenSSH, the real test IdP and a real PostgreSQL:
//!
//! - a loop that SIGKILLs tether at a random moment while an approve, a revoke or a
//!   sign-out is being committed, then — with tether dead — reads the store as the
//!   crash left it and checks it is in one of the two states the action allows
//!   (before or after, never half), restarts tether and checks that SSH agrees with
//!   the store (a revoked key is refused, a bound key admitted); on SQLite and on
//!   PostgreSQL;
//! - a PostgreSQL restart while two replicas run: a revocation on one still ends a
//!   live connection on the other, and new connections and sign-ins work;
//! - PostgreSQL stopped: new SSH connections are refused with one clear line and
//!   `/healthz` answers 503 saying the store is unavailable, then healthy again.
//!
//! The web actions are plain HTTP (one OIDC sign-in through the IdP's login form,
//! then form POSTs with the session cookie and CSRF token), so the kill can land
//! within the request's few milliseconds. The loop is seeded: the seed is printed
//! and `TETHER_CRASH_SEED=<seed>` replays the same choices and delays;
//! `TETHER_CRASH_ITERATIONS` sets the number of kills per backend (default 15).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tether_core::binding::RequestStatus;
use tether_core::ClientBinding;
use tether_testkit::*;

const T: Duration = Duration::from_secs(30);
/// Base64 of 32 bytes: replicas behind one address share the cookie secret.
const COOKIE_SECRET: &str = "dGV0aGVyLWNyYXNoLXRlc3QtY29va2llLWtleSEhISE=";
/// Every test here makes more sign-in codes from 127.0.0.1 than the default burst.
const EXTRA: &str = "ssh_sign_in_timeout: 5m\nssh_sign_in_codes_per_source: 1000\n";

// ---------------------------------------------------------------------------------
// Seeded randomness (splitmix64): enough for choices and delays, replayable.

struct Rng(u64);

impl Rng {
    fn from_env() -> (Rng, u64) {
        let seed = std::env::var("TETHER_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
            });
        (Rng(seed), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn iterations() -> usize {
    std::env::var("TETHER_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

// ---------------------------------------------------------------------------------
// The web app over HTTP, as one signed-in browser.

/// One web session: a cookie jar shared by a redirect-following client (sign-in,
/// pages) and one that returns the first response (the action under test).
struct Web {
    follow: reqwest::Client,
    raw: reqwest::Client,
    base: String,
    csrf: String,
}

/// The value of the first `name="NAME" value="…"` hidden field in `html`.
fn hidden_field(html: &str, name: &str) -> Option<String> {
    let mark = format!("name=\"{name}\" value=\"");
    let start = html.find(&mark)? + mark.len();
    let len = html[start..].find('"')?;
    Some(html[start..start + len].to_string())
}

impl Web {
    /// Signs `user` in through the IdP's login form (the OIDC round trip starts at
    /// `GET /.pomerium/`) and reads the session's CSRF token from the sign-out form.
    async fn sign_in(base: &str, user: &str) -> Web {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let build = |policy| {
            reqwest::Client::builder()
                .cookie_provider(Arc::clone(&jar))
                .redirect(policy)
                // A fresh connection per request: a restart kills pooled ones.
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap()
        };
        let follow = build(reqwest::redirect::Policy::limited(10));
        let raw = build(reqwest::redirect::Policy::none());
        let r = follow
            .get(format!("{base}/.pomerium/"))
            .send()
            .await
            .unwrap();
        let login_page = r.url().clone();
        let html = r.text().await.unwrap();
        let mark = "<form method=\"post\" action=\"";
        let start = html
            .find(mark)
            .unwrap_or_else(|| panic!("no IdP login form at {login_page}:\n{html}"))
            + mark.len();
        let action = &html[start..start + html[start..].find('"').unwrap()];
        let r = follow
            .post(login_page.join(action).unwrap())
            .form(&[
                ("login", user.to_string()),
                ("password", format!("{user}-password")),
            ])
            .send()
            .await
            .unwrap();
        let (status, url) = (r.status(), r.url().clone());
        let html = r.text().await.unwrap();
        assert!(
            status.is_success() && html.contains(&format!("{user}@example.com")),
            "sign-in as {user} did not end on the who-am-I page ({status}, {url}):\n{html}"
        );
        let mut web = Web {
            follow,
            raw,
            base: base.to_string(),
            csrf: String::new(),
        };
        let page = web.page("/.pomerium/sign_out").await;
        web.csrf = hidden_field(&page, "csrf_token")
            .unwrap_or_else(|| panic!("no CSRF token on the sign-out page:\n{page}"));
        web
    }

    /// `GET path` (redirects followed): the body.
    async fn page(&self, path: &str) -> String {
        let r = self
            .follow
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }

    /// Whether this session is still signed in (the sign-out page offers its form).
    async fn signed_in(&self) -> bool {
        self.page("/.pomerium/sign_out")
            .await
            .contains("csrf_token")
    }

    /// `POST path` with the CSRF token and `fields`, redirects not followed:
    /// `Ok((status, body))`, or `Err` when no response came (tether died).
    fn post(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> impl std::future::Future<Output = Result<(u16, String), String>> + Send + 'static {
        let mut form: Vec<(String, String)> = vec![("csrf_token".into(), self.csrf.clone())];
        form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let req = self.raw.post(format!("{}{path}", self.base)).form(&form);
        async move {
            let r = req.send().await.map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body = r.text().await.map_err(|e| e.to_string())?;
            Ok((status, body))
        }
    }
}

fn approve_path(code: &str) -> String {
    format!("/.pomerium/sign_in?user_code={code}")
}

/// Whether an approve POST's response says it was committed.
fn approved(res: &Result<(u16, String), String>) -> bool {
    matches!(res, Ok((200, body)) if body.contains("Sign in successful"))
}

// ---------------------------------------------------------------------------------
// Keys, SSH and the store as the test sees them.

/// A client key the test made, with every sign-in code it was shown.
struct Key {
    path: PathBuf,
    fp: String,
    codes: Vec<String>,
}

impl Key {
    fn binding_id(&self) -> String {
        format!("sshkey-{}", self.fp)
    }
}

/// Starts `ssh alice@gateway whoami` with `key` under a terminal and returns the
/// client (waiting on its sign-in) and the code it was shown.
fn open_request(ssh_port: u16, key: &mut Key) -> (SshClient, String) {
    let port = ssh_port.to_string();
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-p",
        &port,
        "-i",
        key.path.to_str().unwrap(),
        "alice@127.0.0.1",
        "whoami",
    ]);
    let ssh = SshClient::spawn(&args);
    let url = sign_in_url(&ssh);
    let code = url.rsplit("user_code=").next().unwrap().to_string();
    key.codes.push(code.clone());
    (ssh, code)
}

/// `ssh -o BatchMode=yes -i KEY alice@gateway whoami`: `true` when it got through
/// (exit 0, tether's `whoami` answered with `email`), `false` when refused at
/// authentication; anything else fails the test.
fn admitted(ssh_port: u16, key: &Path, email: &str) -> bool {
    let port = ssh_port.to_string();
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-o",
        "BatchMode=yes",
        "-p",
        &port,
        "-i",
        key.to_str().unwrap(),
        "alice@127.0.0.1",
        "whoami",
    ]);
    let (status, out, err) = run_ssh(&args, T);
    match status {
        Some(0) if out.contains(email) => true,
        Some(255) if err.contains("Permission denied") => false,
        other => panic!("unexpected ssh outcome {other:?}\nstdout: {out}\nstderr: {err}"),
    }
}

/// Binds a fresh key through the web session `web` (no kill); returns it once the
/// waiting `whoami` got through.
async fn bind_fresh(web: &Web, ssh_port: u16, keys: &Path, name: &str) -> Key {
    let path = new_key(keys, name);
    let mut key = Key {
        fp: fingerprint(&path),
        path,
        codes: Vec::new(),
    };
    let (mut ssh, code) = open_request(ssh_port, &mut key);
    let res = web.post(&approve_path(&code), &[("confirm", "true")]).await;
    assert!(approved(&res), "approve {name}: {res:?}");
    assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    key
}

/// What a store read right after the kill shows.
struct Snapshot {
    bindings: HashMap<String, ClientBinding>,
    requests: HashMap<String, RequestStatus>,
    sessions: HashMap<String, bool>,
}

impl Snapshot {
    /// Opens the store as tether would (`kind`, `conn`) and reads every binding, the
    /// status of every code in `keys` and whether each of `sessions` exists.
    async fn read(kind: &str, conn: &str, keys: &[&Key], sessions: &[&str]) -> Snapshot {
        let store = tether_store::open(kind, conn)
            .await
            .unwrap_or_else(|e| panic!("opening the {kind} store after the kill: {e}"));
        let bindings = store
            .list_bindings(None)
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.id.clone(), b))
            .collect();
        let mut requests = HashMap::new();
        for code in keys.iter().flat_map(|k| k.codes.iter()) {
            let r = store.get_request(code).await.unwrap();
            let r = r.unwrap_or_else(|| panic!("request {code} vanished"));
            requests.insert(code.clone(), r.status);
        }
        let mut found = HashMap::new();
        for id in sessions {
            found.insert(
                id.to_string(),
                store.get_session(id).await.unwrap().is_some(),
            );
        }
        store.close().await;
        Snapshot {
            bindings,
            requests,
            sessions: found,
        }
    }

    /// No binding without its approved request, none on a missing session, none the
    /// test did not make.
    fn check_invariants(&self, keys: &[&Key]) {
        for b in self.bindings.values() {
            let key = keys
                .iter()
                .find(|k| k.fp == b.fingerprint)
                .unwrap_or_else(|| panic!("binding {} for a key the test never bound", b.id));
            let approved_by_request = key.codes.iter().any(|c| {
                matches!(self.requests.get(c),
                    Some(RequestStatus::Approved { binding_id, .. }) if *binding_id == b.id)
            });
            assert!(
                approved_by_request,
                "binding {} has no approved request (codes {:?} → {:?})",
                b.id,
                key.codes,
                key.codes
                    .iter()
                    .map(|c| self.requests.get(c))
                    .collect::<Vec<_>>()
            );
            if let Some(exists) = self.sessions.get(&b.session_id) {
                assert!(exists, "binding {} on a session that is gone", b.id);
            }
        }
    }

    fn bound(&self, key: &Key) -> bool {
        self.bindings.contains_key(&key.binding_id())
    }
}

/// The raw-SQL form of "no binding without its approved request", for a backend the
/// test can query directly (psql, or the sqlite3 shell when installed).
const ORPHAN_SQL: &str = "SELECT count(*) FROM client_bindings b WHERE NOT EXISTS \
     (SELECT 1 FROM binding_requests r WHERE r.binding_id = b.id AND r.status = 'approved')";

fn orphan_bindings_sqlite(db: &Path) -> Option<String> {
    if !have_program("sqlite3") {
        return None;
    }
    let mut cmd = std::process::Command::new("sqlite3");
    cmd.args(["-cmd", ".timeout 10000"]).arg(db).arg(ORPHAN_SQL);
    let out = run_command(cmd, None, T);
    assert!(out.success(), "sqlite3: {out:?}");
    Some(out.stdout.trim().to_string())
}

// ---------------------------------------------------------------------------------
// The kill loop.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Action {
    Approve,
    Revoke,
    SignOut,
}

/// Sends `request` and SIGKILLs tether `delay` after it was handed to the client;
/// returns what the client got (a response, or the error of a dead server).
fn post_then_kill(
    rt: &tokio::runtime::Runtime,
    tether: &TetherProcess,
    request: impl std::future::Future<Output = Result<(u16, String), String>> + Send + 'static,
    delay: Duration,
) -> Result<(u16, String), String> {
    rt.block_on(async {
        let task = tokio::spawn(request);
        // A blocking sleep, for sub-millisecond delays; the request runs on the
        // runtime's worker threads meanwhile.
        std::thread::sleep(delay);
        tether.signal(Signal::SIGKILL);
        task.await.unwrap()
    })
}

/// `fut` timed: (output, elapsed).
fn timed<F: std::future::Future>(rt: &tokio::runtime::Runtime, fut: F) -> (F::Output, Duration) {
    let start = Instant::now();
    let out = rt.block_on(fut);
    (out, start.elapsed())
}

/// The kill loop on one backend: `kind`/`conn` as tether's store config
/// (`databroker_storage_type` / connection string, `conn` empty for the data
/// directory's `tether.db`), `orphans` the raw-SQL check for that backend.
fn crash_loop(name: &str, storage: &str, kind: &str, conn: Option<&str>, pg: Option<&Postgres>) {
    let (mut rng, seed) = Rng::from_env();
    let n = iterations();
    eprintln!("{name}: {n} kills, seed {seed} (replay: TETHER_CRASH_SEED={seed})");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (http, ssh_port) = (free_port(), free_port());
    let idp = Idp::start(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("http://127.0.0.1:{http}/oauth2/callback"),
    );
    let mut tether = TetherProcess::start(
        &config_yaml(http, ssh_port, &idp.issuer, &format!("{storage}{EXTRA}")),
        &[],
    );
    let db_file = tether.data_dir().join("tether.db");
    let conn = conn.map_or_else(|| db_file.display().to_string(), str::to_string);
    let base = tether.base_url();
    let keys_dir = key_dir();
    let mut keys: Vec<Key> = Vec::new();

    // The long-lived web session S1 and bob's key, which no action of alice's may
    // touch. The first approve, revoke and sign-out are timed without a kill.
    let alice = rt.block_on(Web::sign_in(&base, "alice"));
    let bob = rt.block_on(Web::sign_in(&base, "bob"));
    let bob_key = rt.block_on(bind_fresh(&bob, ssh_port, keys_dir.path(), "bob"));
    let mut spans: HashMap<Action, Duration> = HashMap::new();
    {
        let path = new_key(keys_dir.path(), "warm");
        let mut key = Key {
            fp: fingerprint(&path),
            path,
            codes: Vec::new(),
        };
        let (mut ssh, code) = open_request(ssh_port, &mut key);
        let (res, took) = timed(
            &rt,
            alice.post(&approve_path(&code), &[("confirm", "true")]),
        );
        assert!(approved(&res), "{res:?}");
        assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
        spans.insert(Action::Approve, took);
        let (res, took) = timed(
            &rt,
            alice.post(
                "/.pomerium/session_binding/revoke",
                &[("sessionBindingID", &key.binding_id())],
            ),
        );
        assert!(matches!(res, Ok((303, _))), "{res:?}");
        spans.insert(Action::Revoke, took);
        let s2 = rt.block_on(Web::sign_in(&base, "alice"));
        let (res, took) = timed(&rt, s2.post("/.pomerium/sign_out", &[]));
        assert!(
            matches!(&res, Ok((200, b)) if b.contains("Signed out")),
            "{res:?}"
        );
        spans.insert(Action::SignOut, took);
        keys.push(key);
    }
    eprintln!("{name}: uninterrupted request times {spans:?}");
    // Each kind's delays are drawn from [0, reach]; the reach grows after a kill
    // that landed before the commit and shrinks after one that landed after it, so
    // under any load about half the kills land on each side.
    let mut reach: HashMap<Action, u64> = spans
        .iter()
        .map(|(a, d)| (*a, 2 * d.as_micros() as u64))
        .collect();

    let mut outcomes: HashMap<(Action, bool), usize> = HashMap::new();
    for i in 0..n {
        let action = match rng.below(3) {
            0 => Action::Approve,
            1 => Action::Revoke,
            _ => Action::SignOut,
        };
        let hi = reach[&action];
        let delay = Duration::from_micros(rng.below(hi + 1));

        // Set up what the action needs (no kill), then race it against SIGKILL.
        let mut waiting = None;
        let mut s2: Option<(Web, String)> = None;
        let target: usize;
        let res = match action {
            Action::Approve => {
                let path = new_key(keys_dir.path(), &format!("k{i}"));
                keys.push(Key {
                    fp: fingerprint(&path),
                    path,
                    codes: Vec::new(),
                });
                target = keys.len() - 1;
                let (ssh, code) = open_request(ssh_port, &mut keys[target]);
                waiting = Some(ssh);
                let req = alice.post(&approve_path(&code), &[("confirm", "true")]);
                post_then_kill(&rt, &tether, req, delay)
            }
            Action::Revoke => {
                let bound = rt.block_on(bound_now(kind, &conn, &keys));
                target = match bound.first() {
                    Some((t, _)) => *t,
                    None => {
                        let k = rt.block_on(bind_fresh(
                            &alice,
                            ssh_port,
                            keys_dir.path(),
                            &format!("k{i}"),
                        ));
                        keys.push(k);
                        keys.len() - 1
                    }
                };
                let id = keys[target].binding_id();
                let req = alice.post(
                    "/.pomerium/session_binding/revoke",
                    &[("sessionBindingID", &id)],
                );
                post_then_kill(&rt, &tether, req, delay)
            }
            Action::SignOut => {
                // A second session S2 with a key of its own; signing S2 out must end
                // S2 and every binding of alice's (S1's too) in one step.
                if rt.block_on(bound_now(kind, &conn, &keys)).is_empty() {
                    let k = rt.block_on(bind_fresh(
                        &alice,
                        ssh_port,
                        keys_dir.path(),
                        &format!("k{i}a"),
                    ));
                    keys.push(k);
                }
                let web = rt.block_on(Web::sign_in(&base, "alice"));
                let k = rt.block_on(bind_fresh(
                    &web,
                    ssh_port,
                    keys_dir.path(),
                    &format!("k{i}b"),
                ));
                keys.push(k);
                target = keys.len() - 1;
                let session = rt
                    .block_on(bound_now(kind, &conn, &keys))
                    .into_iter()
                    .find(|(t, _)| *t == target)
                    .map(|(_, session)| session)
                    .expect("the S2 key is bound");
                let req = web.post("/.pomerium/sign_out", &[]);
                let res = post_then_kill(&rt, &tether, req, delay);
                s2 = Some((web, session));
                res
            }
        };
        drop(waiting);
        // Reap it, so nothing of the killed process holds a lock while the store is
        // read (SQLite's are released when the process is gone).
        tether.stop();

        // With tether dead: the store exactly as the crash left it.
        let all: Vec<&Key> = keys.iter().chain(std::iter::once(&bob_key)).collect();
        let sessions: Vec<&str> = s2.iter().map(|(_, id)| id.as_str()).collect();
        let snap = rt.block_on(Snapshot::read(kind, &conn, &all, &sessions));
        snap.check_invariants(&all);
        let orphans = match pg {
            Some(pg) => Some(pg.psql(ORPHAN_SQL).trim().to_string()),
            None => orphan_bindings_sqlite(&db_file),
        };
        if let Some(o) = orphans {
            assert_eq!(o, "0", "bindings without an approved request (raw SQL)");
        }
        assert!(
            snap.bound(&bob_key),
            "bob's binding must survive alice's actions"
        );
        let key = &keys[target];
        let committed = match action {
            Action::Approve => {
                let code = key.codes.last().unwrap();
                let status = &snap.requests[code];
                let bound = snap.bound(key);
                match status {
                    RequestStatus::Pending => assert!(!bound, "binding without approval"),
                    RequestStatus::Approved { binding_id, .. } => {
                        assert!(bound, "request approved but no binding {binding_id}");
                        assert_eq!(binding_id, &key.binding_id());
                    }
                    other => panic!("request {code} is {other:?}"),
                }
                if approved(&res) {
                    assert!(bound, "approve answered success but did not stick");
                }
                bound
            }
            Action::Revoke => {
                let gone = !snap.bound(key);
                if matches!(res, Ok((303, _))) {
                    assert!(gone, "revoke answered 303 but the binding is still there");
                }
                gone
            }
            Action::SignOut => {
                let alice_bound = keys.iter().filter(|k| snap.bound(k)).count();
                let gone = !snap.bound(key);
                let (_, s2_id) = s2.as_ref().unwrap();
                assert_eq!(
                    snap.sessions[s2_id], !gone,
                    "S2's session and its binding must go together"
                );
                if gone {
                    assert_eq!(
                        alice_bound, 0,
                        "sign-out committed but some of alice's bindings survived"
                    );
                } else {
                    assert!(
                        alice_bound >= 2,
                        "sign-out not committed but some of alice's bindings are gone"
                    );
                }
                if matches!(&res, Ok((200, b)) if b.contains("Signed out")) {
                    assert!(gone, "sign-out answered success but did not stick");
                }
                gone
            }
        };
        *outcomes.entry((action, committed)).or_default() += 1;
        let r = reach.get_mut(&action).unwrap();
        *r = if committed { *r * 4 / 5 } else { *r * 3 / 2 }.max(200);
        eprintln!(
            "{name}: kill {i}: {action:?} after {delay:?}: {} → {}",
            match &res {
                Ok((s, _)) => format!("HTTP {s}"),
                Err(_) => "no response".to_string(),
            },
            if committed {
                "committed"
            } else {
                "not committed"
            }
        );

        // Restart: SSH and the web app agree with the store.
        tether.restart();
        for k in &all {
            let want = snap.bound(k);
            let email = if k.fp == bob_key.fp {
                "bob@example.com"
            } else {
                "alice@example.com"
            };
            // Only the keys this iteration touched (and bob's), to keep it short.
            if std::ptr::eq(*k, &keys[target]) || k.fp == bob_key.fp || action == Action::SignOut {
                assert_eq!(
                    admitted(ssh_port, &k.path, email),
                    want,
                    "{name}: after kill {i} ({action:?}) key {} admitted ≠ bound in store\n{}",
                    k.fp,
                    tether.logs()
                );
            }
        }
        if let Some((web, _)) = &s2 {
            let signed_in = rt.block_on(web.signed_in());
            assert_eq!(
                signed_in,
                !committed,
                "S2 signed in after a {} sign-out",
                if committed { "committed" } else { "lost" }
            );
        }
        assert!(
            rt.block_on(alice.signed_in()),
            "S1 must stay signed in (sign-out ends only its own session)"
        );
    }
    eprintln!("{name}: outcomes (action, committed) → count: {outcomes:?}");
    let listed = tether.cli(&[
        "bindings",
        "list",
        "-c",
        tether.config_path().to_str().unwrap(),
    ]);
    assert!(listed.success(), "{listed:?}");
    assert!(listed.stdout.contains(&bob_key.fp), "{}", listed.stdout);
}

/// While tether runs: (index into `keys`, session id) of each of alice's keys
/// bound now.
async fn bound_now(kind: &str, conn: &str, keys: &[Key]) -> Vec<(usize, String)> {
    let store = tether_store::open(kind, conn).await.unwrap();
    let bindings = store.list_bindings(None).await.unwrap();
    store.close().await;
    keys.iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let b = bindings.iter().find(|b| b.fingerprint == k.fp)?;
            Some((i, b.session_id.clone()))
        })
        .collect()
}

#[test]
fn sigkill_during_approve_revoke_sign_out_keeps_sqlite_consistent() {
    if !components_present() {
        return;
    }
    crash_loop("sqlite", "", "file", None, None);
}

#[test]
fn sigkill_during_approve_revoke_sign_out_keeps_postgres_consistent() {
    if !components_present() || !require("PostgreSQL server", postgres_bin_dir().is_some()) {
        return;
    }
    let pg = Postgres::start();
    let storage = format!(
        "databroker_storage_type: postgres\ndatabroker_storage_connection_string: {}\n",
        pg.url
    );
    crash_loop("postgres", &storage, "postgres", Some(&pg.url), Some(&pg));
}

/// `GET /healthz`: (status, body), or `None` when nothing answered.
fn healthz(base: &str) -> Option<(u16, String)> {
    http_get(&format!("{base}/healthz"), Duration::from_secs(15))
        .ok()
        .map(|r| (r.status, r.body))
}

/// Two replicas on one PostgreSQL; the database restarts under them. Afterwards a
/// revocation on A still ends a live connection on B (B's change feed is back), a
/// sign-in decided on A still lets a connection waiting on B through, and bound keys
/// connect on both.
#[test]
fn postgres_restart_while_replicas_run() {
    if !components_present() || !require("PostgreSQL server", postgres_bin_dir().is_some()) {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = Postgres::start();
    let (http_a, ssh_a, http_b, ssh_b) = (free_port(), free_port(), free_port(), free_port());
    let idp = Idp::start(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("http://127.0.0.1:{http_a}/oauth2/callback"),
    );
    let shared = format!(
        "databroker_storage_type: postgres
databroker_storage_connection_string: {}
cookie_secret: {COOKIE_SECRET}
{EXTRA}",
        pg.url
    );
    let yaml_a = config_yaml(http_a, ssh_a, &idp.issuer, &shared);
    let yaml_b = config_yaml(http_b, ssh_b, &idp.issuer, &shared).replace(
        &format!("authenticate_service_url: http://127.0.0.1:{http_b}"),
        &format!("authenticate_service_url: http://127.0.0.1:{http_a}"),
    );
    let a = TetherProcess::start(&yaml_a, &[]);
    let b = TetherProcess::start(&yaml_b, &[]);
    let logs = || format!("--- A ---\n{}\n--- B ---\n{}", a.logs(), b.logs());
    let web = rt.block_on(Web::sign_in(&a.base_url(), "alice"));
    let keys = key_dir();
    // Bound through a code shown on B and approved on A.
    let k1 = rt.block_on(bind_fresh(&web, ssh_b, keys.path(), "k1"));
    let k2 = rt.block_on(bind_fresh(&web, ssh_b, keys.path(), "k2"));
    let authed = b.logs().matches("ssh_authenticated").count();
    let mut live = hold_on(ssh_b, &k1.path, "alice");
    assert!(
        wait_until(T, || b.logs().matches("ssh_authenticated").count() > authed),
        "held connection on B authenticated\n{}",
        logs()
    );

    // `pg_ctl -m fast stop` ends every database connection (pool and LISTEN alike),
    // then the server comes back on the same port.
    pg.stop_server();
    pg.start_server();
    for t in [&a, &b] {
        assert!(
            wait_until(T, || healthz(&t.base_url()).is_some_and(|(s, _)| s == 200)),
            "healthy again after the restart\n{}",
            logs()
        );
    }
    assert!(
        live.is_running(),
        "a live connection with a valid binding survives the database restart: {}\n{}",
        live.output(),
        logs()
    );

    let res = rt.block_on(web.post(
        "/.pomerium/session_binding/revoke",
        &[("sessionBindingID", &k1.binding_id())],
    ));
    assert!(matches!(res, Ok((303, _))), "{res:?}\n{}", logs());
    assert_eq!(
        live.wait_exit(T),
        Some(255),
        "revoked on A after the restart: B's connection ends\n{}\n{}",
        live.output(),
        logs()
    );
    assert!(
        live.output().contains("access revoked"),
        "{}",
        live.output()
    );

    for port in [ssh_a, ssh_b] {
        assert!(
            !admitted(port, &k1.path, "alice@example.com"),
            "k1 on :{port}"
        );
        assert!(
            admitted(port, &k2.path, "alice@example.com"),
            "k2 on :{port}\n{}",
            logs()
        );
    }
    // A new sign-in: the code shown on B, decided on A, lets B's connection through.
    let k3 = rt.block_on(bind_fresh(&web, ssh_b, keys.path(), "k3"));
    assert!(admitted(ssh_a, &k3.path, "alice@example.com"));
    let restarts = |t: &TetherProcess| {
        t.logs()
            .lines()
            .filter(|l| l.contains("LISTEN connection"))
            .count()
    };
    eprintln!(
        "LISTEN reconnect log lines: A {}, B {}",
        restarts(&a),
        restarts(&b)
    );
}

/// PostgreSQL stopped under a running tether: `/healthz` answers 503 saying the
/// store is unavailable (promptly), a new SSH connection — bound key or fresh — is
/// refused with one line saying so, and once the database is back both recover.
#[test]
fn store_unreachable_refuses_new_connections_and_healthz_says_so() {
    if !components_present() || !require("PostgreSQL server", postgres_bin_dir().is_some()) {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = Postgres::start();
    let (http, ssh_port) = (free_port(), free_port());
    let idp = Idp::start(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("http://127.0.0.1:{http}/oauth2/callback"),
    );
    let storage = format!(
        "databroker_storage_type: postgres\ndatabroker_storage_connection_string: {}\n{EXTRA}",
        pg.url
    );
    let tether = TetherProcess::start(&config_yaml(http, ssh_port, &idp.issuer, &storage), &[]);
    let base = tether.base_url();
    let web = rt.block_on(Web::sign_in(&base, "alice"));
    let keys = key_dir();
    let bound = rt.block_on(bind_fresh(&web, ssh_port, keys.path(), "bound"));
    let fresh = new_key(keys.path(), "fresh");
    assert_eq!(healthz(&base), Some((200, "OK".to_string())));

    pg.stop_server();
    let started = Instant::now();
    let (status, body) = healthz(&base).expect("/healthz answers while the store is down");
    eprintln!(
        "/healthz with the store down: {status} {body:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("store") && body.contains("unavailable"),
        "{body}"
    );
    // An upper bound only: the readiness check gives up on the store well before
    // the store's own 5 s pool timeout, so a probe sees the reason, not a timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    let port = ssh_port.to_string();
    for key in [&bound.path, &fresh] {
        let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
        args.extend([
            "-p",
            &port,
            "-i",
            key.to_str().unwrap(),
            "alice@127.0.0.1",
            "whoami",
        ]);
        let (status, out, err) = run_ssh(&args, T);
        eprintln!("ssh with the store down: {status:?}\nstdout: {out}\nstderr: {err}");
        assert_eq!(status, Some(255), "{out}\n{err}");
        let line = err
            .lines()
            .find(|l| l.contains("store"))
            .unwrap_or_else(|| panic!("no line about the store in the client's stderr:\n{err}"));
        assert!(
            line.contains("unavailable") && line.contains("try again"),
            "{line}"
        );
        assert!(!out.contains("alice@example.com"), "{out}");
    }

    pg.start_server();
    assert!(
        wait_until(T, || healthz(&base) == Some((200, "OK".to_string()))),
        "healthy again\n{}",
        tether.logs()
    );
    assert!(
        admitted(ssh_port, &bound.path, "alice@example.com"),
        "{}",
        tether.logs()
    );
    let k = rt.block_on(bind_fresh(&web, ssh_port, keys.path(), "after"));
    assert!(admitted(ssh_port, &k.path, "alice@example.com"));
}
