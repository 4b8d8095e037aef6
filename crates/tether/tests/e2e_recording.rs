//! Session recording (issue 14) through the real binary: the real OpenSSH client
//! under tmux (`ssh -tt`) on a recorded route to a real sshd, signed in at the
//! real test IdP in headless Chromium. Typed commands and a resize land in an
//! asciicast v2 file (0600) with valid timing; the player page plays it back in
//! Chromium; bob may not open alice's recording; a command's line and exit status
//! and an sftp put/get/rm are audit events; a recording that cannot be written
//! refuses the session with a one-line reason.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tether_testkit::*;

/// A tmux server of the test's own (its socket name), killed when dropped — with
/// every process in it.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("tether-rec-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "rec"]).stdout).into_owned()
    }

    fn wait_pane(&self, needle: &str) -> bool {
        wait_until(Duration::from_secs(20), || self.pane().contains(needle))
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "rec"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn casts(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "cast"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// sshd, and a gateway with routes `prod` (recorded: `recorded` are its
/// `session_recording` keys) and `plain`, recordings in `recordings`.
fn rig(recordings: &Path, recorded: &str) -> (Sshd, Gateway, tempfile::TempDir) {
    rig_with(recordings, recorded, "")
}

/// [`rig`] with `extra` top-level config lines.
fn rig_with(recordings: &Path, recorded: &str, extra: &str) -> (Sshd, Gateway, tempfile::TempDir) {
    let keys = key_dir();
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(Path::new(&format!("{}.pub", ca.display())));
    let gw = Gateway::start(&format!(
        "ssh_user_ca_key_file: {ca}
administrators:
  - allow:
      or:
        - groups:
            has: tether-admins
session_recording:
  directory: {dir}
routes:
  - from: ssh://prod
    to: ssh://127.0.0.1:{port}
    allow_any_authenticated_user: true
    session_recording: {{{recorded}}}
  - from: ssh://plain
    to: ssh://127.0.0.1:{port}
    allow_any_authenticated_user: true
{extra}",
        ca = ca.display(),
        dir = recordings.display(),
        port = sshd.port,
    ));
    (sshd, gw, keys)
}

#[test]
fn a_recorded_terminal_session_plays_back_and_commands_and_files_are_audited() {
    if !components_present()
        || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists())
        || !require("tmux", have_program("tmux"))
    {
        return;
    }
    ensure_user("alice");
    let recordings = tempfile::tempdir().unwrap();
    let (_sshd, gw, keys) = rig(recordings.path(), "enabled: true");
    let keys = keys.path();
    gw.idp.set_groups("carol", &["tether-admins"]);
    let key = new_key(keys, "alice");
    let alice = BrowserProfile::new("recording_alice");
    bind_key(&gw, &key, "alice", &alice, false);

    // An unrecorded route writes nothing.
    let (status, out, err) = gw.ssh_batch(&key, "alice@plain", &["echo", "unrecorded"]);
    assert_eq!((status, out.trim()), (Some(0), "unrecorded"), "{err}");
    assert!(casts(recordings.path()).is_empty());

    // A terminal session under tmux: type, resize, exit.
    let tmux = Tmux::new();
    let mut ssh: Vec<String> = vec!["ssh".into(), "-tt".into()];
    ssh.extend(SSH_DEFAULT_ARGS.iter().map(|s| s.to_string()));
    ssh.extend([
        "-p".into(),
        gw.ssh_port.to_string(),
        "-i".into(),
        key.display().to_string(),
        "alice@prod@127.0.0.1".into(),
    ]);
    let line: Vec<String> = ssh.iter().map(|a| shell_quote(a)).collect();
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "rec",
        "-x",
        "120",
        "-y",
        "40",
        &line.join(" "),
    ]);
    assert!(started.status.success(), "{started:?}");
    let token = format!("typed-{}", std::process::id());
    assert!(
        wait_until(Duration::from_secs(20), || {
            let p = tmux.pane();
            p.contains('$') || p.contains('#')
        }),
        "no prompt: {}\n{}",
        tmux.pane(),
        gw.tether.logs()
    );
    tmux.run(&["send-keys", "-t", "rec", &format!("echo {token}"), "Enter"]);
    assert!(tmux.wait_pane(&format!("\n{token}")), "{}", tmux.pane());
    tmux.run(&["resize-window", "-t", "rec", "-x", "100", "-y", "30"]);
    std::thread::sleep(Duration::from_millis(700));
    tmux.run(&["send-keys", "-t", "rec", "stty size", "Enter"]);
    assert!(tmux.wait_pane("30 100"), "{}", tmux.pane());
    tmux.run(&["send-keys", "-t", "rec", "exit", "Enter"]);
    assert!(
        wait_until(Duration::from_secs(20), || !tmux.alive()),
        "ssh did not end"
    );

    // The asciicast file.
    assert!(wait_until(Duration::from_secs(10), || gw
        .tether
        .logs()
        .contains("\"event\":\"recording_ended\"")));
    let files = casts(recordings.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{header}");
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(120), Some(40)),
        "{header}"
    );
    assert_eq!(header["tether"]["route"], "prod");
    assert_eq!(header["tether"]["login"], "alice");
    assert_eq!(header["tether"]["email"], "alice@example.com");
    assert_eq!(header["tether"]["fingerprint"], fingerprint(&key).as_str());
    assert!(header["tether"]["session_id"]
        .as_str()
        .unwrap()
        .contains('-'));
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut last = 0.0;
    for e in &events {
        let t = e[0].as_f64().unwrap();
        assert!(t >= last, "time goes forward: {e} after {last}");
        last = t;
    }
    let output: String = events
        .iter()
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap())
        .collect();
    assert!(output.contains(&token), "output recorded: {output}");
    assert!(
        events.iter().any(|e| e[1] == "r" && e[2] == "100x30"),
        "the resize: {events:?}"
    );
    assert!(
        !events.iter().any(|e| e[1] == "i"),
        "input is off by default"
    );
    assert!(
        events.iter().any(|e| e[1] == "m" && e[2] == "exit 0"),
        "{events:?}"
    );
    let id = file.file_stem().unwrap().to_str().unwrap().to_string();
    let session = header["tether"]["session_id"].as_str().unwrap().to_string();

    // Played back in the browser: the typed text shows in the player.
    let list = format!("{}/.tether/recordings", gw.base());
    alice
        .run(json!([
            {"goto": list},
            {"expectText": session},
            {"click": format!("#play-{id}")},
            {"expectText": "Download .cast"},
            {"click": ".ap-player"},
            {"expectText": token},
            {"screenshot": "recording-playback"},
        ]))
        .assert_ok();
    assert!(gw.tether.logs().contains("\"event\":\"recording_viewed\""));

    // bob may not open it.
    let bob = BrowserProfile::new("recording_bob");
    bob.run(json!([
        {"goto": format!("{}/.tether/recordings", gw.base())},
        {"login": {"user": "bob", "password": "bob-password"}},
        {"expectNoText": session},
        {"goto": format!("{}/.tether/recordings/{id}", gw.base())},
        {"expectStatus": 403},
        {"goto": format!("{}/.tether/recordings/{id}/cast", gw.base())},
        {"expectStatus": 403},
        {"screenshot": "recording-bob-403"},
    ]))
    .assert_ok();
    assert!(gw.tether.logs().contains("\"event\":\"recording_refused\""));

    // A command: its line, exit status and bytes are audited.
    let (status, _, err) = gw.ssh_batch(&key, "alice@prod", &["sh", "-c", "'echo out; exit 3'"]);
    assert_eq!(status, Some(3), "{err}");
    let logs = gw.tether.logs();
    let command = logs
        .lines()
        .find(|l| l.contains("\"event\":\"session_command\""))
        .unwrap_or_else(|| panic!("no session_command: {logs}"));
    assert!(command.contains("echo out; exit 3"), "{command}");
    assert!(command.contains("\"exit_status\":3"), "{command}");
    assert!(command.contains("\"bytes_to_client\":4"), "{command}");
    assert_eq!(
        casts(recordings.path()).len(),
        1,
        "a command's output is not recorded unless the route says so"
    );

    // sftp put, get, rm: file operations with paths and sizes.
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("up.bin");
    std::fs::write(&local, vec![7u8; 5000]).unwrap();
    let remote = format!("/tmp/tether-rec-{}.bin", std::process::id());
    let batch = work.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} {remote}\nget {remote} {}\nrm {remote}\n",
            local.display(),
            work.path().join("down.bin").display()
        ),
    )
    .unwrap();
    let mut sftp = Command::new("sftp");
    sftp.args(SSH_DEFAULT_ARGS)
        .args(["-o", "BatchMode=yes", "-P"])
        .arg(gw.ssh_port.to_string())
        .arg("-i")
        .arg(&key)
        .arg("-b")
        .arg(&batch)
        .arg("alice@prod@127.0.0.1");
    let out = run_command(sftp, None, Duration::from_secs(60));
    assert!(out.success(), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read(work.path().join("down.bin")).unwrap().len(),
        5000
    );
    assert!(
        wait_until(Duration::from_secs(10), || gw
            .tether
            .logs()
            .contains("\"op\":\"remove\"")),
        "{}",
        gw.tether.logs()
    );
    let logs = gw.tether.logs();
    let sftp_events: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"event\":\"sftp_operation\"") && l.contains(&remote))
        .collect();
    assert!(
        sftp_events
            .iter()
            .any(|l| l.contains("\"bytes_written\":5000")),
        "the put: {sftp_events:#?}"
    );
    assert!(
        sftp_events
            .iter()
            .any(|l| l.contains("\"bytes_read\":5000")),
        "the get: {sftp_events:#?}"
    );
    assert!(
        sftp_events
            .iter()
            .any(|l| l.contains("\"op\":\"remove\"") && l.contains("\"status\":\"ok\"")),
        "the rm: {sftp_events:#?}"
    );
}

/// The route portal's hand-over to a recorded route is recorded too (no way
/// around the recording through `ssh -t gateway portal`).
#[test]
fn a_recorded_route_chosen_in_the_portal_is_recorded() {
    if !components_present()
        || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists())
        || !require("tmux", have_program("tmux"))
    {
        return;
    }
    ensure_user("alice");
    let recordings = tempfile::tempdir().unwrap();
    let (_sshd, gw, keys) = rig_with(
        recordings.path(),
        "enabled: true",
        "runtime_flags:\n  ssh_routes_portal: true\n",
    );
    let key = new_key(keys.path(), "alice");
    bind_key(
        &gw,
        &key,
        "alice",
        &BrowserProfile::new("recording_portal"),
        false,
    );
    let tmux = Tmux::new();
    let mut ssh: Vec<String> = vec!["ssh".into(), "-tt".into()];
    ssh.extend(SSH_DEFAULT_ARGS.iter().map(|s| s.to_string()));
    ssh.extend([
        "-p".into(),
        gw.ssh_port.to_string(),
        "-i".into(),
        key.display().to_string(),
        "alice@127.0.0.1".into(),
        "portal".into(),
    ]);
    let line: Vec<String> = ssh.iter().map(|a| shell_quote(a)).collect();
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "rec",
        "-x",
        "100",
        "-y",
        "30",
        &line.join(" "),
    ]);
    assert!(started.status.success(), "{started:?}");
    assert!(tmux.wait_pane("> prod"), "{}", tmux.pane());
    tmux.run(&["send-keys", "-t", "rec", "Enter"]);
    assert!(
        wait_until(Duration::from_secs(20), || tmux.pane().contains('$')),
        "no prompt: {}\n{}",
        tmux.pane(),
        gw.tether.logs()
    );
    let token = format!("portal-{}", std::process::id());
    tmux.run(&["send-keys", "-t", "rec", &format!("echo {token}"), "Enter"]);
    assert!(tmux.wait_pane(&format!("\n{token}")), "{}", tmux.pane());
    tmux.run(&["send-keys", "-t", "rec", "exit", "Enter"]);
    assert!(
        wait_until(Duration::from_secs(20), || !tmux.alive()),
        "ssh did not end: {}",
        tmux.pane()
    );
    assert!(wait_until(Duration::from_secs(10), || gw
        .tether
        .logs()
        .contains("\"event\":\"recording_ended\"")));
    let files = casts(recordings.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["tether"]["route"], "prod", "{header}");
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(100), Some(30))
    );
    assert!(
        text.contains(&token),
        "the portal's shell output is recorded"
    );
}

#[test]
fn a_recording_that_cannot_be_written_refuses_the_session() {
    if !components_present() || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists()) {
        return;
    }
    ensure_user("alice");
    // Not a directory, even for root.
    let (_sshd, gw, keys) = rig(
        Path::new("/dev/null/recordings"),
        "enabled: true, command_output: true",
    );
    let keys = keys.path();
    let key = new_key(keys, "alice");
    let alice = BrowserProfile::new("recording_refused_alice");
    bind_key(&gw, &key, "alice", &alice, false);
    let (status, out, err) = gw.ssh_batch(&key, "alice@prod", &["echo", "should-not-run"]);
    assert_ne!(status, Some(0));
    assert!(!out.contains("should-not-run"), "{out}");
    assert!(
        err.contains("session refused") && err.contains("recording cannot be written"),
        "one line says why: {err}\n{}",
        gw.tether.logs()
    );
    assert!(gw.tether.logs().contains("\"event\":\"recording_failed\""));
    // Unrecorded routes are unaffected.
    let (status, out, _) = gw.ssh_batch(&key, "alice@plain", &["echo", "fine"]);
    assert_eq!((status, out.trim()), (Some(0), "fine"));
}

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Two replicas on one PostgreSQL share the recording directory: a session on
/// replica A that floods output is capped at `max_size` (tether's memory stays
/// flat: the relay waits for the disk), and alice plays it from replica B's web app.
#[test]
fn a_flood_is_capped_and_another_replica_plays_it_back() {
    if !components_present()
        || !require("PostgreSQL server", postgres_bin_dir().is_some())
        || !require("/usr/sbin/sshd", Path::new("/usr/sbin/sshd").exists())
    {
        return;
    }
    ensure_user("alice");
    let pg = Postgres::start();
    let db = pg.create_database("tether_recording");
    let keys = key_dir();
    let recordings = tempfile::tempdir().unwrap();
    let ca = gen_client_key(keys.path(), "tether_ca");
    let sshd = Sshd::start(&PathBuf::from(format!("{}.pub", ca.display())));
    let shared = format!(
        "databroker_storage_type: postgres
databroker_storage_connection_string: {db}
cookie_secret: dGV0aGVyLXJlY29yZGluZy1yZXBsaWNhcy1rZXkhISE=
ssh_user_ca_key_file: {ca}
session_recording:
  directory: {dir}
  max_size: 1MiB
routes:
  - from: ssh://prod
    to: ssh://127.0.0.1:{port}
    allow_any_authenticated_user: true
    session_recording: {{enabled: true}}
",
        ca = ca.display(),
        dir = recordings.path().display(),
        port = sshd.port,
    );
    let Replicas {
        idp: _idp,
        a,
        b,
        ssh_a,
        http_b,
        ..
    } = start_replicas(&shared);

    // alice binds a key on A.
    let key = new_key(keys.path(), "alice");
    let port_a = ssh_a.to_string();
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-p",
        &port_a,
        "-i",
        key.to_str().unwrap(),
        "alice@127.0.0.1",
        "whoami",
    ]);
    let mut first = SshClient::spawn(&args);
    let alice = BrowserProfile::new("recording_replicas_alice");
    alice
        .run(json!([
            {"goto": sign_in_url(&first)},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
        ]))
        .assert_ok();
    assert_eq!(
        first.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        first.output()
    );

    // A shell on A that prints ~60 MiB through its terminal.
    let pid = a.pid().unwrap();
    let before = rss_kib(pid);
    let mut args: Vec<&str> = SSH_DEFAULT_ARGS.to_vec();
    args.extend([
        "-tt",
        "-p",
        &port_a,
        "-i",
        key.to_str().unwrap(),
        "alice@prod@127.0.0.1",
        "head -c 45000000 /dev/zero | base64 -w 76; echo flood-done",
    ]);
    let (status, out, err) = run_ssh(&args, Duration::from_secs(240));
    assert_eq!(status, Some(0), "{err}");
    assert!(
        out.contains("flood-done"),
        "the whole output reached the client"
    );
    let after = rss_kib(pid);
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "tether grew from {before} KiB to {after} KiB relaying a recorded flood"
    );
    assert!(wait_until(Duration::from_secs(10), || a
        .logs()
        .contains("\"event\":\"recording_ended\"")));
    let files = casts(recordings.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let size = std::fs::metadata(&files[0]).unwrap().len();
    assert!(size <= (1 << 20) + 200, "capped at max_size: {size} bytes");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("recording truncated"), "the cap is marked");
    assert!(a.logs().contains("\"truncated\":true"), "{}", a.logs());
    let id = files[0].file_stem().unwrap().to_str().unwrap().to_string();

    // Replica B's web app lists and plays what A recorded (same cookie secret, so
    // alice's session from A holds on B).
    alice
        .run(json!([
            {"goto": format!("http://127.0.0.1:{http_b}/.tether/recordings")},
            {"click": format!("#play-{id}")},
            {"expectText": "Download .cast"},
            {"screenshot": "recording-played-on-replica-b"},
        ]))
        .assert_ok();
    assert!(
        b.logs().contains("\"event\":\"recording_viewed\""),
        "{}",
        b.logs()
    );
    drop(sshd);
}
