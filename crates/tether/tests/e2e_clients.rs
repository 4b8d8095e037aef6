//! Every SSH client gets in (docs/CLIENTS.md): client interoperability through the real
//! binary. Each client goes through a route (`alice@prod`) to a real OpenSSH sshd
//! trusting tether's user CA, first on a fresh key (it must show the sign-in URL in
//! its own output; headless Chromium signs in at the real test IdP and clicks
//! Authorize; then `echo ok` prints `ok`), then again on the now bound key with no
//! sign-in at all: OpenSSH, PuTTY's plink, paramiko, libssh2 (a C program, and curl's
//! `sftp://`), Node's ssh2, asyncssh and Dropbear's dbclient. Then the patterns real
//! users have, on a key bound once with OpenSSH: Ansible with the `ssh` and the
//! `paramiko` connection plugins, OpenSSH ControlMaster/ControlPersist, `ssh -D`
//! (SOCKS) and `git clone`/`git push` of a bare repository upstream.
//!
//! The client scripts live in `tests/clients/`; `tests/clients/install.sh` installs
//! the Python venv (`target/clients-venv`) and the npm packages they need.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use serde_json::json;
use tether_testkit::*;

/// Failure bound for a client to finish once nothing waits on a person.
const T: Duration = Duration::from_secs(90);
/// Failure bound for the sign-in URL to show up in a client's output.
const URL_WAIT: Duration = Duration::from_secs(45);
/// The wire user every client logs in as: login `alice`, route `prod`.
const USER: &str = "alice@prod";

/// One gateway with route `prod` → a real sshd, the test IdP, and a scratch directory
/// for keys and client files.
struct Rig {
    gw: Gateway,
    sshd: Sshd,
    dir: tempfile::TempDir,
    metrics_port: u16,
}

impl Rig {
    fn start() -> Rig {
        ensure_user("alice");
        let dir = key_dir();
        let ca = gen_client_key(dir.path(), "tether_ca");
        let sshd = Sshd::start(&dir.path().join("tether_ca.pub"));
        let metrics_port = free_port();
        let gw = Gateway::start(&format!(
            "ssh_user_ca_key_file: {ca}
metrics_address: 127.0.0.1:{metrics_port}
ssh_sign_in_timeout: 5m
routes:
  - from: ssh://prod
    to: {to}
    allow_any_authenticated_user: true
    ssh_allowed_logins: [alice]
    ssh_permit: {{port_forwarding: true}}
",
            ca = ca.display(),
            to = sshd.url(),
        ));
        Rig {
            gw,
            sshd,
            dir,
            metrics_port,
        }
    }

    fn port(&self) -> String {
        self.gw.ssh_port.to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh ed25519 key pair `<dir>/<name>`, `<dir>/<name>.pub`.
    fn key(&self, name: &str) -> PathBuf {
        gen_client_key(self.dir.path(), name)
    }

    /// tether's generated host key (data dir `ssh_host_ed25519_key`).
    fn host_key(&self) -> PathBuf {
        self.gw.tether.data_dir().join("ssh_host_ed25519_key")
    }

    /// Its `SHA256:…` fingerprint, as clients pin it.
    fn host_key_fp(&self) -> String {
        fingerprint(&self.host_key())
    }

    /// Its public key as `ssh-ed25519 AAAA…` (type and key, no comment: Dropbear's
    /// known_hosts parser takes a comment for part of the key).
    fn host_pub_line(&self) -> String {
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-y").arg("-f").arg(self.host_key());
        let out = run_command(cmd, None, Duration::from_secs(30));
        assert!(out.success(), "ssh-keygen -y: {out:?}");
        let mut words = out.stdout.split_whitespace();
        format!("{} {}", words.next().unwrap(), words.next().unwrap())
    }

    /// Signs in as alice at the IdP on the page `url` and clicks Authorize. Returns
    /// the client version the Verify page showed.
    fn approve(&self, url: &str, browser: &BrowserProfile) -> String {
        assert!(
            url.starts_with(&format!("{}/.pomerium/sign_in?user_code=", self.gw.base())),
            "{url}"
        );
        let flow = browser.run(json!([
            {"goto": url},
            {"login": {"user": "alice", "password": "alice-password"}},
            {"expectText": "Authorize"},
            {"text": {"name": "version", "selector": "#client-version"}},
            {"screenshot": "verify-page"},
            {"click": "#authorize"},
            {"expectText": "Sign in successful"},
            {"screenshot": "signed-in"},
        ]));
        flow.assert_ok();
        flow.text("version").to_string()
    }

    /// Binds `key` to alice with OpenSSH (sign-in on a route connection).
    fn bind(&self, key: &Path, browser: &BrowserProfile) {
        let mut ssh = self.gw.ssh(key, USER, &["true"]);
        let url = sign_in_url(&ssh);
        self.approve(&url, browser);
        assert_eq!(ssh.wait_exit(T), Some(0), "{}", ssh.output());
    }

    /// The upstream sshd logged alice in with tether's certificate (key id = email).
    fn assert_upstream_login(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self
                .sshd
                .log()
                .contains("Accepted certificate ID \"alice@example.com\"")),
            "sshd log: {}",
            self.sshd.log()
        );
    }

    /// How many times sshd let alice in with a tether certificate.
    fn upstream_logins(&self) -> usize {
        self.sshd
            .log()
            .lines()
            .filter(|l| {
                l.starts_with("Accepted publickey for alice ") && l.contains("ID alice@example.com")
            })
            .count()
    }

    /// The value of one Prometheus sample on tether's metrics endpoint.
    fn metric(&self, series: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let res = http_get(&url, Duration::from_secs(10)).unwrap();
        assert_eq!(res.status, 200, "{res:?}");
        res.body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in:\n{}", res.body))
            .trim()
            .parse()
            .unwrap()
    }

    /// `ssh` with the bound `key` as `USER`, `BatchMode=yes`, no terminal.
    fn ssh_batch(&self, key: &Path, args: &[&str]) -> (Option<i32>, String, String) {
        self.gw.ssh_batch(key, USER, args)
    }
}

/// Whether `output` has a line that is exactly `ok` (what `echo ok` prints).
fn has_ok_line(output: &str) -> bool {
    output.lines().any(|l| l.trim() == "ok")
}

/// How many sign-in URLs `output` shows.
fn url_count(output: &str) -> usize {
    output.matches("/.pomerium/sign_in?user_code=").count()
}

/// A random hex token, so files left in alice's home by earlier runs never match.
fn token() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The program the client tests have in common: run a client on a FRESH key (it
/// must print the sign-in URL; the browser approves it; the command prints `ok`),
/// then again on the now bound key (`ok`, no URL). `client_id` is what the Verify
/// page must show as the client's version (proves which implementation signed in).
/// Returns both outputs.
fn fresh_then_bound(
    rig: &Rig,
    test: &str,
    client_id: &str,
    mut run: impl FnMut(bool) -> SshClient,
) -> (String, String) {
    let browser = BrowserProfile::new(test);
    let mut first = run(true);
    // The URL, or the client gave up (then fail at once, with what it said).
    let mut url = None;
    wait_until(URL_WAIT, || {
        let exited = !first.is_running();
        url = extract_url(&first.output());
        url.is_some() || exited
    });
    let url = url.unwrap_or_else(|| {
        panic!(
            "{test}: no sign-in URL in the client's output (fresh key; exit status {:?}):\n{}",
            first.wait_exit(Duration::ZERO),
            first.output()
        )
    });
    let version = rig.approve(&url, &browser);
    assert!(
        version.contains(client_id),
        "{test}: the Verify page shows client version {version:?}, expected {client_id:?}"
    );
    let status = first.wait_exit(T);
    let out = first.output();
    eprintln!("--- {test}, fresh key: what the client printed ---\n{out}");
    assert_eq!(status, Some(0), "{test} (fresh key) exit status: {out}");
    assert!(
        has_ok_line(&out),
        "{test} (fresh key) printed no `ok`:\n{out}"
    );
    rig.assert_upstream_login();

    let mut second = run(false);
    let status = second.wait_exit(T);
    let again = second.output();
    eprintln!("--- {test}, bound key ---\n{again}");
    assert_eq!(status, Some(0), "{test} (bound key) exit status: {again}");
    assert!(
        has_ok_line(&again),
        "{test} (bound key) printed no `ok`:\n{again}"
    );
    assert_eq!(
        url_count(&again),
        0,
        "{test}: a bound key must go straight through:\n{again}"
    );
    assert_eq!(
        rig.upstream_logins(),
        2,
        "{test}: two upstream logins: {}",
        rig.sshd.log()
    );
    (out, again)
}

fn sshd_present() -> bool {
    components_present() && require("/usr/sbin/sshd", Path::new(SSHD).exists())
}

/// `tests/clients/<name>`.
fn client_script(name: &str) -> PathBuf {
    repo_root().join("tests/clients").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `cmd` to completion (bounded by [`T`]) and panics unless it succeeds.
fn must(what: &str, cmd: Command) -> CmdOutput {
    let out = run_command(cmd, None, T);
    assert!(
        out.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

// ---------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------

#[test]
fn openssh_signs_in_then_goes_straight_through() {
    if !sshd_present() {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("openssh");
    let (first, _) = fresh_then_bound(&rig, "clients_openssh", "OpenSSH", |fresh| {
        if fresh {
            // Under a terminal, as a person types it.
            rig.gw.ssh(&key, USER, &["echo", "ok"])
        } else {
            let port = rig.port();
            SshClient::spawn_piped(&[
                "-o",
                "BatchMode=yes",
                "-p",
                &port,
                "-i",
                s(&key),
                "alice@prod@127.0.0.1",
                "echo",
                "ok",
            ])
        }
    });
    assert!(first.contains("Please sign in to continue"), "{first}");
    assert_eq!(url_count(&first), 1, "the URL shown once: {first}");
}

#[test]
fn plink_signs_in_then_goes_straight_through() {
    if !sshd_present()
        || !require("plink (putty-tools)", have_program("plink"))
        || !require("puttygen (putty-tools)", have_program("puttygen"))
    {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("plink");
    let ppk = rig.path("plink.ppk");
    let mut cmd = Command::new("puttygen");
    cmd.arg(&key).args(["-O", "private", "-o"]).arg(&ppk);
    must("puttygen", cmd);
    let home = rig.path("plink-home");
    std::fs::create_dir_all(&home).unwrap();
    let home_env = format!("HOME={}", home.display());
    let fp = rig.host_key_fp();
    let port = rig.port();
    let (first, _) = fresh_then_bound(&rig, "clients_plink", "PuTTY", |_| {
        SshClient::spawn_program(
            "env",
            &[
                &home_env,
                "plink",
                "-ssh",
                "-batch",
                "-noagent",
                "-P",
                &port,
                "-i",
                s(&ppk),
                "-hostkey",
                &fp,
                "-l",
                USER,
                "127.0.0.1",
                "echo",
                "ok",
            ],
            false,
        )
    });
    assert!(first.contains("Please sign in to continue"), "{first}");
    assert_eq!(url_count(&first), 1, "the URL shown once: {first}");
}

#[test]
fn paramiko_signs_in_then_goes_straight_through() {
    if !sshd_present() || !venv_present("python") {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("paramiko");
    let fp = rig.host_key_fp();
    let port = rig.port();
    let python = venv_bin("python");
    let script = client_script("paramiko_client.py");
    let (first, again) = fresh_then_bound(&rig, "clients_paramiko", "paramiko", |_| {
        SshClient::spawn_program(
            s(&python),
            &[
                s(&script),
                "127.0.0.1",
                &port,
                USER,
                s(&key),
                &fp,
                "echo ok",
            ],
            false,
        )
    });
    assert!(
        first.contains("kbd-interactive name: Please sign in to continue"),
        "{first}"
    );
    assert!(
        !again.contains("partial success"),
        "bound key: publickey alone: {again}"
    );
}

#[test]
fn libssh2_signs_in_then_goes_straight_through_and_curl_sftp_downloads() {
    if !sshd_present()
        || !require("gcc", have_program("gcc"))
        || !require(
            "libssh2 headers (libssh2-1-dev)",
            Path::new("/usr/include/libssh2.h").exists(),
        )
        || !require("curl", have_program("curl"))
    {
        return;
    }
    let rig = Rig::start();
    let bin = rig.path("libssh2_client");
    let mut cc = Command::new("gcc");
    cc.args(["-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&bin)
        .arg(client_script("libssh2_client.c"))
        .arg("-lssh2");
    must("gcc libssh2_client.c", cc);

    let key = rig.key("libssh2");
    let pubkey = rig.path("libssh2.pub");
    let fp = rig.host_key_fp();
    let port = rig.port();
    let run = |command: &str| {
        SshClient::spawn_program(
            s(&bin),
            &["127.0.0.1", &port, USER, s(&key), s(&pubkey), &fp, command],
            false,
        )
    };
    let (first, again) = fresh_then_bound(&rig, "clients_libssh2", "libssh2", |_| run("echo ok"));
    assert!(
        first.contains("kbd-interactive name: Please sign in to continue"),
        "{first}"
    );
    assert!(!again.contains("keyboard-interactive"), "{again}");

    // curl's sftp:// (libssh2 underneath) with the bound key: a file written upstream
    // by the libssh2 client comes back.
    let tok = token();
    let name = format!("tether-clients-sftp-{tok}.txt");
    let mut write = run(&format!("echo {tok} > {name}"));
    assert_eq!(write.wait_exit(T), Some(0), "{}", write.output());
    let down = rig.path("sftp-download.txt");
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "60", "-u", &format!("{USER}:")])
        .arg("--key")
        .arg(&key)
        .arg("--pubkey")
        .arg(&pubkey)
        .args(["--hostpubsha256", fp.trim_start_matches("SHA256:")])
        .arg(format!("sftp://127.0.0.1:{port}/~/{name}"))
        .arg("-o")
        .arg(&down);
    let out = run_command(curl, None, T);
    let _ = std::fs::remove_file(Path::new("/home/alice").join(&name));
    assert!(out.success(), "curl sftp:// failed: {out:?}");
    assert_eq!(std::fs::read_to_string(&down).unwrap().trim(), tok);
}

#[test]
fn node_ssh2_signs_in_through_the_banner_then_goes_straight_through() {
    if !sshd_present()
        || !require(
            "tests/clients/node_modules (run tests/clients/install.sh)",
            client_script("node_modules/ssh2").is_dir(),
        )
    {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("ssh2");
    let fp = rig.host_key_fp();
    let port = rig.port();
    let script = client_script("ssh2_client.js");
    let (first, _) = fresh_then_bound(&rig, "clients_node_ssh2", "ssh2js", |_| {
        SshClient::spawn_program(
            "node",
            &[
                s(&script),
                "127.0.0.1",
                &port,
                USER,
                s(&key),
                &fp,
                "echo ok",
            ],
            false,
        )
    });
    // ssh2 answers the zero-prompt INFO_REQUEST itself: the banner carries the URL.
    assert!(
        first
            .lines()
            .any(|l| l.starts_with("banner: ") && l.contains("Please sign in to continue")),
        "{first}"
    );
    assert!(
        first
            .lines()
            .skip_while(|l| !l.starts_with("banner: "))
            .take(3)
            .any(|l| l.contains("/.pomerium/sign_in?user_code=")),
        "the URL is in the banner: {first}"
    );
}

#[test]
fn asyncssh_signs_in_then_goes_straight_through() {
    if !sshd_present() || !venv_present("python") {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("asyncssh");
    let known_hosts = rig.path("asyncssh_known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", rig.gw.ssh_port, rig.host_pub_line()),
    )
    .unwrap();
    let port = rig.port();
    let python = venv_bin("python");
    let script = client_script("asyncssh_client.py");
    let (first, _) = fresh_then_bound(&rig, "clients_asyncssh", "AsyncSSH", |_| {
        SshClient::spawn_program(
            s(&python),
            &[
                s(&script),
                "127.0.0.1",
                &port,
                USER,
                s(&key),
                s(&known_hosts),
                "echo ok",
            ],
            false,
        )
    });
    assert!(
        first.contains("kbd-interactive name: Please sign in to continue"),
        "{first}"
    );
}

#[test]
fn dropbear_dbclient_signs_in_then_goes_straight_through() {
    if !sshd_present()
        || !require("dbclient (dropbear-bin)", have_program("dbclient"))
        || !require(
            "dropbearconvert (dropbear-bin)",
            have_program("dropbearconvert"),
        )
    {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("dropbear");
    let db = rig.path("dropbear.db");
    let mut cmd = Command::new("dropbearconvert");
    cmd.args(["openssh", "dropbear"]).arg(&key).arg(&db);
    must("dropbearconvert", cmd);
    // dbclient checks the host key against $HOME/.ssh/known_hosts (keyed by host
    // name alone, without the port): pin tether's.
    let home = rig.path("dropbear-home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".ssh/known_hosts"),
        format!("127.0.0.1 {}\n", rig.host_pub_line()),
    )
    .unwrap();
    let home_env = format!("HOME={}", home.display());
    let port = rig.port();
    let (first, _) = fresh_then_bound(&rig, "clients_dropbear", "dropbear", |fresh| {
        // It asks keyboard-interactive questions only on a terminal.
        SshClient::spawn_program(
            "env",
            &[
                &home_env,
                "dbclient",
                "-l",
                USER,
                "-p",
                &port,
                "-i",
                s(&db),
                "127.0.0.1",
                "echo",
                "ok",
            ],
            fresh,
        )
    });
    assert!(first.contains("Please sign in to continue"), "{first}");
    assert_eq!(url_count(&first), 1, "the URL shown once: {first}");
}

// ---------------------------------------------------------------------------------
// What users do with them
// ---------------------------------------------------------------------------------

/// `ansible -m ping` and a playbook (write a file upstream, read it back, `echo ok`)
/// through the route with the connection plugin `connection`, on a key bound once
/// with OpenSSH.
fn ansible_through_route(test: &str, connection: &str) {
    if !sshd_present() || !venv_present("ansible") || !venv_present("ansible-playbook") {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("ansible");
    rig.bind(&key, &BrowserProfile::new(test));

    let work = AnsibleWork::new(
        rig.path("ansible-work"),
        rig.gw.ssh_port,
        USER,
        &key,
        "/home/alice/.ansible/tmp",
    );
    let tok = token();
    let file = format!("tether-ansible-{connection}-{tok}.txt");
    // Absolute paths upstream (see `AnsibleWork`).
    let playbook = work.dir.join("playbook.yml");
    std::fs::write(
        &playbook,
        format!(
            "- hosts: gateway
  gather_facts: false
  tasks:
    - name: write a file upstream
      ansible.builtin.copy:
        content: \"{tok}\\n\"
        dest: \"/home/alice/{file}\"
    - name: read it back
      ansible.builtin.command: cat /home/alice/{file}
      register: back
    - name: it is what was written
      ansible.builtin.assert:
        that: back.stdout == \"{tok}\"
    - name: run a command
      ansible.builtin.command: echo ok
      register: said
    - name: show it
      ansible.builtin.debug:
        var: said.stdout
"
        ),
    )
    .unwrap();
    let ansible = |program: &str, args: &[&str]| {
        let mut cmd = work.command(program, connection);
        cmd.args(args);
        let out = run_command(cmd, None, Duration::from_secs(180));
        assert!(
            out.success(),
            "{program} -c {connection} failed ({:?}):\n{}\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        out
    };

    let ping = ansible("ansible", &["gateway", "-m", "ansible.builtin.ping"]);
    assert!(
        ping.stdout.contains("prod | SUCCESS") && ping.stdout.contains("\"ping\": \"pong\""),
        "{}\n{}",
        ping.stdout,
        ping.stderr
    );
    rig.assert_upstream_login();

    let play = ansible("ansible-playbook", &[s(&playbook)]);
    let upstream_file = Path::new("/home/alice").join(&file);
    let written = std::fs::read_to_string(&upstream_file);
    let owner = std::fs::metadata(&upstream_file).map(|m| m.uid());
    let _ = std::fs::remove_file(&upstream_file);
    assert!(
        play.stdout.contains("\"said.stdout\": \"ok\""),
        "{}",
        play.stdout
    );
    assert!(
        play.stdout.lines().any(|l| l.starts_with("prod")
            && l.contains("failed=0")
            && l.contains("unreachable=0")),
        "{}",
        play.stdout
    );
    assert_eq!(written.unwrap().trim(), tok, "the file landed upstream");
    let mut id = Command::new("id");
    id.args(["-u", "alice"]);
    let alice_uid: u32 = must("id -u alice", id).stdout.trim().parse().unwrap();
    assert_eq!(owner.unwrap(), alice_uid, "written as alice");
}

#[test]
fn ansible_ping_and_playbook_with_the_ssh_plugin() {
    ansible_through_route("clients_ansible_ssh", "ssh");
}

#[test]
fn ansible_ping_and_playbook_with_the_paramiko_plugin() {
    ansible_through_route("clients_ansible_paramiko", "paramiko");
}

/// An OpenSSH ControlMaster, stopped with `ssh -O exit` (and killed if that fails)
/// however the test ends.
struct Master {
    ctl: PathBuf,
    port: String,
    pid: Option<i32>,
}

impl Master {
    fn ctl_arg(&self) -> String {
        format!("ControlPath={}", self.ctl.display())
    }

    fn control(&self, op: &str) -> (Option<i32>, String, String) {
        run_ssh(
            &[
                "-o",
                &self.ctl_arg(),
                "-O",
                op,
                "-p",
                &self.port,
                "alice@prod@127.0.0.1",
            ],
            Duration::from_secs(30),
        )
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.control("exit");
        let Some(pid) = self.pid else { return };
        // Still there after `-O exit` (and still our ssh, not a reused pid): kill it.
        let cmdline = format!("/proc/{pid}/cmdline");
        let ours = || {
            std::fs::read(&cmdline)
                .map(|c| c.starts_with(b"ssh") || c.starts_with(SSH.as_bytes()))
                .unwrap_or(false)
        };
        if !wait_until(Duration::from_secs(5), || !ours()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

#[test]
fn openssh_control_master_multiplexes_a_second_session() {
    if !sshd_present() {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("mux");
    let mut master = Master {
        ctl: rig.path("cm"),
        port: rig.port(),
        pid: None,
    };
    let ctl = master.ctl_arg();
    let port = rig.port();
    let mux_opts = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "-o",
            "ControlMaster=auto",
            "-o",
            ctl.as_str(),
            "-o",
            "ControlPersist=600",
            "-p",
            port.as_str(),
            "-i",
            s(&key),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };

    // The first session signs in on a fresh key and becomes the master; it persists.
    let args = mux_opts(&["alice@prod@127.0.0.1", "echo", "ok"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = SshClient::spawn(&args);
    let url = sign_in_url(&first);
    rig.approve(&url, &BrowserProfile::new("clients_control_master"));
    assert_eq!(first.wait_exit(T), Some(0), "{}", first.output());
    assert!(has_ok_line(&first.output()), "{}", first.output());

    let connections = rig.metric("tether_ssh_connections_total");
    let (status, _, err) = master.control("check");
    assert_eq!(status, Some(0), "ssh -O check: {err}");
    assert!(err.contains("Master running"), "{err}");
    master.pid = err
        .split("pid=")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok());

    // A second session over the same client connection: no new connection to tether,
    // no new upstream login, no authentication at all (BatchMode, -v shows the mux).
    let args = mux_opts(&[
        "-v",
        "-o",
        "BatchMode=yes",
        "alice@prod@127.0.0.1",
        "echo",
        "second",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, out, err) = run_ssh(&args, T);
    assert_eq!(status, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "second");
    assert!(
        err.contains("mux_client_request_session: master session id"),
        "the second session went through the master: {err}"
    );
    assert!(
        !err.contains("Authenticated to"),
        "no new authentication: {err}"
    );
    assert_eq!(rig.metric("tether_ssh_connections_total"), connections);
    assert_eq!(rig.metric("tether_ssh_connections_open"), 1.0);
    let logs = rig.gw.tether.logs();
    assert_eq!(
        logs.matches("\"connection_opened\"").count(),
        1,
        "one SSH connection in tether's audit log: {logs}"
    );
    assert_eq!(rig.upstream_logins(), 1, "{}", rig.sshd.log());

    // ssh -O exit ends the master and with it the one connection.
    let (status, _, err) = master.control("exit");
    assert_eq!(status, Some(0), "ssh -O exit: {err}");
    assert!(err.contains("Exit request sent"), "{err}");
    assert!(
        wait_until(Duration::from_secs(20), || rig
            .metric("tether_ssh_connections_open")
            == 0.0),
        "the master's connection is closed"
    );
    let (status, _, _) = master.control("check");
    assert_ne!(status, Some(0), "no master any more");
}

/// A one-page HTTP server on 127.0.0.1 (a thread of this test), answering every
/// request with `body` and recording the request lines. Stopped on drop.
struct HttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    fn start(body: String) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req);
                requests2
                    .lock()
                    .unwrap()
                    .push(text.lines().next().unwrap_or("").to_string());
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        HttpServer {
            port,
            stop,
            requests,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn openssh_dynamic_forward_socks_through_a_route() {
    if !sshd_present() || !require("curl", have_program("curl")) {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("socks");
    rig.bind(&key, &BrowserProfile::new("clients_socks"));
    let tok = token();
    let web = HttpServer::start(format!("hello through socks {tok}\n"));

    let socks_port = free_port().to_string();
    let port = rig.port();
    let mut socks = SshClient::spawn_piped(&[
        "-o",
        "BatchMode=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-N",
        "-D",
        &format!("127.0.0.1:{socks_port}"),
        "-p",
        &port,
        "-i",
        s(&key),
        "alice@prod@127.0.0.1",
    ]);
    assert!(
        wait_for_port(socks_port.parse().unwrap(), Duration::from_secs(30)),
        "ssh -D is not listening: {}",
        socks.output()
    );
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "--max-time",
        "60",
        "--noproxy",
        "",
        "--socks5-hostname",
        &format!("127.0.0.1:{socks_port}"),
        &format!("http://127.0.0.1:{}/via-socks-{tok}", web.port),
    ]);
    let out = run_command(curl, None, T);
    assert!(
        out.success(),
        "curl through ssh -D: {out:?}\n{}",
        socks.output()
    );
    assert_eq!(out.stdout, format!("hello through socks {tok}\n"));
    assert!(
        web.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with(&format!("GET /via-socks-{tok} "))),
        "{:?}",
        web.requests.lock().unwrap()
    );
    rig.assert_upstream_login();
    assert!(socks.is_running(), "{}", socks.output());
    socks.kill();
}

/// Removes a directory (a repository left in alice's home) however the test ends.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn git_clone_and_push_over_a_route() {
    if !sshd_present() || !require("git", have_program("git")) {
        return;
    }
    let rig = Rig::start();
    let key = rig.key("git");
    rig.bind(&key, &BrowserProfile::new("clients_git"));
    let tok = token();
    let repo = format!("tether-clients-{tok}.git");
    let _cleanup = RemoveDir(Path::new("/home/alice").join(&repo));
    let (status, out, err) = rig.ssh_batch(&key, &["git", "init", "--bare", "-q", &repo]);
    assert_eq!(status, Some(0), "git init --bare upstream: {out}{err}");

    let git_ssh = format!(
        "ssh {} -o BatchMode=yes -p {} -i {}",
        SSH_DEFAULT_ARGS.join(" "),
        rig.gw.ssh_port,
        key.display()
    );
    let remote = format!("alice@prod@127.0.0.1:{repo}");
    let git = |dir: &Path, args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.args([
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.com",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_SSH_COMMAND", &git_ssh)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0");
        must(&format!("git {}", args.join(" ")), cmd)
    };

    let work = rig.path("git-work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["clone", "-q", &remote, "one"]);
    let one = work.join("one");
    std::fs::write(one.join("README"), format!("pushed through tether {tok}\n")).unwrap();
    git(&one, &["add", "README"]);
    git(&one, &["commit", "-q", "-m", &format!("commit {tok}")]);
    git(&one, &["push", "-q", "origin", "HEAD:refs/heads/main"]);

    let refs = git(&work, &["ls-remote", &remote]);
    assert!(refs.stdout.contains("refs/heads/main"), "{}", refs.stdout);
    git(&work, &["clone", "-q", "-b", "main", &remote, "two"]);
    assert_eq!(
        std::fs::read_to_string(work.join("two/README")).unwrap(),
        format!("pushed through tether {tok}\n")
    );
    let log = git(&work.join("two"), &["log", "--format=%s"]);
    assert_eq!(log.stdout.trim(), format!("commit {tok}"));
    rig.assert_upstream_login();
}
