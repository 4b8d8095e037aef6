//! The interactive `portal` in a real terminal: the real OpenSSH client runs inside
//! tmux (`ssh -tt ... portal`), the test presses keys with `tmux send-keys` and reads
//! the screen with `tmux capture-pane`. Routes lead to a real sshd trusting the
//! gateway's user CA. Covered: the picker's list (policy decides), an upstream that
//! cannot be reached and a login rule refusing the choice (one line, picker stays),
//! picking the second route and landing in its shell with the original pty (size
//! and later window changes), the client's `env` and agent forwarding reaching the
//! chosen route, the shell's `exit` ending the session, `q` quitting,
//! a policy re-check ending a portal session, and a revocation while the picker
//! shows (the normal screen comes back).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
mod route_support;
mod upstream_support;

use std::process::Command;
use std::time::Duration;

use common::*;
use route_support::*;
use tether_core::config::{Config, Route};
use tether_core::policy::Criterion;
use tether_store::Store;
use upstream_support::{can_run_sshd, USER};

/// A tmux server of its own (so parallel tests never meet) with one session; the
/// server is killed and its socket removed on drop, whatever the test did.
struct Tmux {
    /// Holds the server's socket.
    dir: tempfile::TempDir,
    name: String,
}

impl Tmux {
    fn available() -> bool {
        let ok = Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        upstream_support::require("tmux", ok)
    }

    /// Runs `command` (a shell command line) in a 120x40 terminal.
    fn start(command: &str) -> Tmux {
        let mut b = [0u8; 6];
        getrandom::getrandom(&mut b).unwrap();
        let tag: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let t = Tmux {
            dir: tempfile::tempdir().unwrap(),
            name: format!("portal-{tag}"),
        };
        let st = t
            .tmux()
            .args(["new-session", "-d", "-s", &t.name, "-x", "120", "-y", "40"])
            .arg(command)
            .status()
            .unwrap();
        assert!(st.success(), "tmux new-session failed");
        t
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S")
            .arg(self.dir.path().join("tmux.sock"))
            .args(["-f", "/dev/null"]);
        c
    }

    fn send(&self, keys: &[&str]) {
        let st = self
            .tmux()
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn resize(&self, cols: u32, rows: u32) {
        let st = self
            .tmux()
            .args(["resize-window", "-t", &self.name])
            .args(["-x", &cols.to_string(), "-y", &rows.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `needle`; returns the screen.
    async fn wait_for(&self, needle: &str) -> String {
        self.wait_until(needle, |screen| screen.contains(needle))
            .await
    }

    /// Waits until the shell prompt (`$`, trailing space trimmed by tmux) is the
    /// screen's last non-empty line.
    async fn wait_for_prompt(&self) -> String {
        self.wait_until("a shell prompt", |screen| {
            screen.lines().rev().find(|l| !l.trim().is_empty()) == Some("$")
        })
        .await
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let end = tokio::time::Instant::now() + T;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            if tokio::time::Instant::now() > end {
                panic!("screen never showed {what:?}; it shows:\n{screen}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// `ssh -tt LOGIN@gateway portal` as a shell command line that reports ssh's exit
/// status and then keeps the pane open.
fn portal_command(gw: &Gateway, key: &common::ClientKey, login: &str) -> String {
    let opts = client_opts(key).join(" ");
    let port = gw.addr.port();
    format!(
        "ssh {opts} -p {port} -tt {login}@127.0.0.1 portal; echo \"ssh exited with $?\"; sleep 600"
    )
}

fn portal_config(routes: Vec<Route>) -> Config {
    let mut c = config_with(routes);
    c.runtime_flags.ssh_routes_portal = true;
    c
}

fn admins_only(addr: &str) -> Route {
    route(
        "admin",
        addr,
        Some(vec![Criterion::Groups(vec!["admins".into()])]),
        false,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_the_second_route_and_land_in_its_shell() {
    if !can_run_sshd() || !Tmux::available() {
        return;
    }
    let rig = rig_with("", |addr| {
        portal_config(vec![
            route("broken", "127.0.0.1:1", None, true),
            admins_only(addr),
            route("prod", addr, None, true),
        ])
    })
    .await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let tmux = Tmux::start(&portal_command(&rig.gw, &key, USER));

    let screen = tmux.wait_for("tether: choose a route").await;
    assert!(screen.contains("> broken"), "{screen}");
    assert!(screen.contains("  prod"), "{screen}");
    assert!(
        !screen.contains("admin"),
        "not allowed: not listed\n{screen}"
    );

    // The first route's upstream is down: one line, and the picker stays.
    tmux.send(&["Enter"]);
    tmux.wait_for("route \"broken\": upstream 127.0.0.1:1 unreachable")
        .await;

    tmux.send(&["Down", "Enter"]);
    tmux.wait_for_prompt().await;
    tmux.send(&["id -un; tty; stty size", "Enter"]);
    let screen = tmux.wait_for("/dev/pts/").await;
    assert!(
        screen.lines().any(|l| l.trim_end() == USER),
        "login name not shown:\n{screen}"
    );
    // The picker's screen is gone: the shell runs on the normal screen.
    assert!(!screen.contains("choose a route"), "{screen}");
    // The upstream pty has the client's size.
    tmux.wait_for("\n40 120\n").await;
    assert!(
        rig.sshd
            .wait_log("Accepted certificate ID \"alice@example.com\"")
            .await,
        "{}",
        rig.sshd.log()
    );

    // Later window changes reach the upstream pty.
    tmux.resize(100, 30);
    tokio::time::sleep(Duration::from_millis(300)).await;
    tmux.send(&["stty size", "Enter"]);
    tmux.wait_for("30 100").await;

    // The shell's exit ends the session with its status.
    tmux.send(&["exit 3", "Enter"]);
    let screen = tmux.wait_for("ssh exited with ").await;
    assert!(screen.contains("ssh exited with 3"), "{screen}");
    eventually("the connection to end", T, || rig.gw.registry.total() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chosen_route_gets_the_clients_env_and_agent() {
    if !can_run_sshd() || !Tmux::available() {
        return;
    }
    let rig = rig_with("", |addr| {
        let mut c = portal_config(vec![route("prod", addr, None, true)]);
        permit_all(&mut c, "prod");
        c
    })
    .await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;

    // The client's agent, holding a key of its own.
    let agent = start_agent().await;

    // `SendEnv` and `-A` on the portal connection (without the usual
    // `IdentityAgent=none`, which also keeps the agent from being forwarded); the
    // upstream sshd accepts TETHER_TEST_* variables.
    let opts = client_opts(&key)
        .join(" ")
        .replace("-o IdentityAgent=none ", "");
    let port = rig.gw.addr.port();
    let tmux = Tmux::start(&format!(
        "SSH_AUTH_SOCK={} TETHER_TEST_CARRIED=from-the-client ssh {opts} \
         -o SendEnv=TETHER_TEST_CARRIED -A -p {port} -tt {USER}@127.0.0.1 portal; \
         echo \"ssh exited with $?\"; sleep 600",
        agent.sock.display()
    ));
    tmux.wait_for("tether: choose a route").await;
    tmux.send(&["Enter"]);
    tmux.wait_for_prompt().await;
    tmux.send(&["echo \"carried=$TETHER_TEST_CARRIED\"; ssh-add -l", "Enter"]);
    tmux.wait_for("carried=from-the-client").await;
    tmux.wait_for(&agent.key.fingerprint).await;

    tmux.send(&["exit", "Enter"]);
    let screen = tmux.wait_for("ssh exited with ").await;
    assert!(screen.contains("ssh exited with 0"), "{screen}");
}

/// The route's `ssh_permit` holds through the portal: with agent forwarding not
/// permitted (the default), the carried `-A` is dropped and the upstream shell has
/// no agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chosen_route_gets_no_agent_where_it_is_not_permitted() {
    if !can_run_sshd() || !Tmux::available() {
        return;
    }
    let rig = rig_with("", |addr| {
        portal_config(vec![route("prod", addr, None, true)])
    })
    .await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let agent = start_agent().await;
    let opts = client_opts(&key)
        .join(" ")
        .replace("-o IdentityAgent=none ", "");
    let port = rig.gw.addr.port();
    let tmux = Tmux::start(&format!(
        "SSH_AUTH_SOCK={} ssh {opts} -A -p {port} -tt {USER}@127.0.0.1 portal; \
         echo \"ssh exited with $?\"; sleep 600",
        agent.sock.display()
    ));
    tmux.wait_for("tether: choose a route").await;
    tmux.send(&["Enter"]);
    tmux.wait_for_prompt().await;
    tmux.send(&[
        "ssh-add -l; echo \"agent=$?${SSH_AUTH_SOCK:-unset}\"",
        "Enter",
    ]);
    // The output line, not the typed command (which also holds `agent=`).
    let screen = tmux
        .wait_until("the agent check's output", |screen| {
            screen.lines().any(|l| l.starts_with("agent="))
        })
        .await;
    assert!(screen.contains("agent=2unset"), "{screen}");
    assert!(!screen.contains(&agent.key.fingerprint), "{screen}");
    tmux.send(&["exit", "Enter"]);
    let screen = tmux.wait_for("ssh exited with ").await;
    assert!(screen.contains("ssh exited with 0"), "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_choice_keeps_the_picker_and_q_quits() {
    if !Tmux::available() {
        return;
    }
    // A login rule is skipped for the list but decides the choice.
    let gw = start_config(portal_config(vec![
        route(
            "mine",
            "127.0.0.1:1",
            Some(vec![Criterion::SshUsernameMatchesEmail]),
            false,
        ),
        route("other", "127.0.0.1:1", None, true),
    ]))
    .await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let tmux = Tmux::start(&portal_command(&gw, &key, "root"));

    let screen = tmux.wait_for("tether: choose a route").await;
    assert!(screen.contains("> mine"), "{screen}");
    tmux.send(&["Enter"]);
    tmux.wait_for("access denied: route \"mine\": login name \"root\" does not match your email")
        .await;
    // Moving on clears the line; j/k move too.
    tmux.send(&["j"]);
    let screen = tmux.wait_for("> other").await;
    assert!(!screen.contains("access denied"), "{screen}");

    tmux.send(&["q"]);
    let screen = tmux.wait_for("ssh exited with ").await;
    assert!(screen.contains("no route chosen"), "{screen}");
    assert!(screen.contains("ssh exited with 0"), "{screen}");
    assert!(
        !screen.contains("choose a route"),
        "normal screen back\n{screen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_session_is_rechecked_against_policy_changes() {
    if !can_run_sshd() || !Tmux::available() {
        return;
    }
    let mut upstream = String::new();
    let rig = rig_with("", |addr| {
        upstream = addr.to_string();
        portal_config(vec![route("prod", addr, None, true)])
    })
    .await;
    let key = keygen();
    sign_in(&rig.gw, &key, "alice@example.com").await;
    let tmux = Tmux::start(&portal_command(&rig.gw, &key, USER));

    tmux.wait_for("> prod").await;
    tmux.send(&["Enter"]);
    tmux.wait_for_prompt().await;
    tmux.send(&["echo $((6 * 7))", "Enter"]);
    tmux.wait_for("\n42\n").await;

    // The route now requires a group alice lacks: the portal session ends.
    let mut stricter = portal_config(vec![admins_only(&upstream)]);
    stricter.routes[0].name = "prod".into();
    assert_eq!(rig.gw.registry.recheck_policies(&stricter), 1);
    let screen = tmux.wait_for("ssh exited with ").await;
    assert!(
        screen
            .contains("tether: access revoked: access denied: route \"prod\": not in group admins"),
        "{screen}"
    );
    assert!(screen.contains("ssh exited with 255"), "{screen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_while_picking_restores_the_screen_and_disconnects() {
    if !Tmux::available() {
        return;
    }
    let gw = start_config(portal_config(vec![route(
        "prod",
        "127.0.0.1:1",
        None,
        true,
    )]))
    .await;
    let key = keygen();
    sign_in(&gw, &key, "alice@example.com").await;
    let tmux = Tmux::start(&portal_command(&gw, &key, "alice"));
    tmux.wait_for("> prod").await;

    gw.store
        .revoke_binding(&key.binding_id(), None, "revoked by alice@example.com")
        .await
        .unwrap();
    let screen = tmux.wait_for("ssh exited with ").await;
    assert!(
        screen.contains("tether: access revoked: revoked by alice@example.com"),
        "{screen}"
    );
    assert!(screen.contains("ssh exited with 255"), "{screen}");
    assert!(
        !screen.contains("choose a route"),
        "normal screen back\n{screen}"
    );
}
