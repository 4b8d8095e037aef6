//! Files readable by others (issue 12): the real binary creates its data directory
//! 0700 and every secret it writes there (keys, cookie secret, the SQLite database
//! and its `-wal` / `-shm`) 0600; `serve` and `check` refuse, with one line and exit
//! 2 before any port is bound, a data directory or a config file holding inline
//! secrets that another local user could read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use tether_testkit::*;

fn tether(args: &[&str], env: &[(&str, &str)]) -> CmdOutput {
    let mut cmd = Command::new(tether_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(cmd, None, Duration::from_secs(30))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A directory in /tmp that every user can reach (as `/var/lib` or `/etc` are).
fn open_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("tether-e2e-open-")
        .tempdir_in("/tmp")
        .unwrap();
    set_mode(d.path(), 0o755);
    d
}

#[test]
fn data_dir_and_secrets_are_private() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let (http, ssh) = (free_port(), free_port());
    let place = open_dir();
    let data = place.path().join("var").join("tether");
    let audit = place.path().join("audit.jsonl");
    let extra = format!(
        "data_dir: {}\naudit_log: {}\n",
        data.display(),
        audit.display()
    );
    let mut t = TetherProcess::start(&config_yaml(http, ssh, "http://127.0.0.1:9/", &extra), &[]);
    // The store writes at start (migrations), so the WAL and its index exist now.
    assert_eq!(mode(&data), 0o700, "data_dir");
    for f in [
        "tether.db",
        "tether.db-wal",
        "tether.db-shm",
        "cookie_secret",
        "ssh_host_ed25519_key",
        "ssh_user_ca_key",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert_eq!(
        mode(&data.join("ssh_user_ca_key.pub")),
        0o644,
        "public half"
    );
    assert_eq!(mode(&audit), 0o600, "audit_log");
    t.stop();

    // An older tether's files (0644) come back 0600 on the next start.
    for f in ["tether.db", "tether.db-wal", "tether.db-shm"] {
        if data.join(f).exists() {
            set_mode(&data.join(f), 0o644);
        }
    }
    t.restart();
    for f in ["tether.db", "tether.db-wal", "tether.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f} after restart");
    }
    t.stop();

    // The same directory opened to others: refused by serve and by check.
    set_mode(&data, 0o755);
    let cfg = place.path().join("config.yaml");
    std::fs::write(&cfg, config_yaml(http, ssh, "http://127.0.0.1:9/", &extra)).unwrap();
    set_mode(&cfg, 0o600);
    for cmd in ["serve", "check"] {
        let out = tether(&[cmd, "-c", cfg.to_str().unwrap()], &[]);
        assert_eq!(out.status, Some(2), "{cmd}: {}", out.stderr);
        let line = out.stderr.lines().last().unwrap_or("");
        assert!(
            line.contains(&format!("data_dir {}", data.display()))
                && line.contains("0755")
                && line.contains("chmod 700"),
            "{cmd}: {}",
            out.stderr
        );
        assert!(
            port_is_free(http) && port_is_free(ssh),
            "{cmd}: nothing bound"
        );
    }
    // Group access counts too.
    set_mode(&data, 0o750);
    let out = tether(&["check", "-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status, Some(2), "{}", out.stderr);
    set_mode(&data, 0o700);
    let out = tether(&["check", "-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
}

#[test]
fn config_with_inline_secrets_readable_by_others_is_refused() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let (http, ssh) = (free_port(), free_port());
    let place = open_dir();
    let data = place.path().join("data");
    let cfg = place.path().join("config.yaml");
    let secret_file = place.path().join("client_secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    set_mode(&secret_file, 0o600);
    let inline = config_yaml(
        http,
        ssh,
        "http://127.0.0.1:9/",
        &format!(
            "data_dir: {}\ncookie_secret: {}\n",
            data.display(),
            "A".repeat(43) + "="
        ),
    );
    std::fs::write(&cfg, &inline).unwrap();
    set_mode(&cfg, 0o644);
    for cmd in ["serve", "check", "bindings list"] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.extend(["-c", cfg.to_str().unwrap()]);
        let out = tether(&args, &[]);
        assert_eq!(out.status, Some(2), "{cmd}: {}", out.stderr);
        let line = out.stderr.lines().last().unwrap_or("");
        assert!(
            line.starts_with(&format!("{}:", cfg.display()))
                && line.contains("cookie_secret, idp_client_secret")
                && line.contains("0644")
                && line.contains("chmod 600"),
            "{cmd}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains(CLIENT_SECRET),
            "no secret in the error"
        );
        assert!(
            port_is_free(http) && port_is_free(ssh),
            "{cmd}: nothing bound"
        );
    }
    // 0600: accepted.
    set_mode(&cfg, 0o600);
    let out = tether(&["check", "-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    // A world-readable config without inline secrets is fine.
    let by_file = inline
        .lines()
        .filter(|l| !l.starts_with("cookie_secret:"))
        .map(|l| {
            if l.starts_with("idp_client_secret:") {
                format!("idp_client_secret_file: {}", secret_file.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg, by_file + "\n").unwrap();
    set_mode(&cfg, 0o644);
    let out = tether(&["check", "-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    // A password in the PostgreSQL connection string is a secret too.
    std::fs::write(
        &cfg,
        format!(
            "{}databroker_storage_type: postgres\n\
             databroker_storage_connection_string: postgres://tether:pw@127.0.0.1:9/tether\n",
            std::fs::read_to_string(&cfg).unwrap()
        ),
    )
    .unwrap();
    let out = tether(&["check", "-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("(databroker_storage_connection_string)"),
        "{}",
        out.stderr
    );
}

/// A reload is held to the start-up rule: a config file rewritten with an inline
/// secret while others can read it is refused (logged, old config kept); once it
/// is 0600, SIGHUP applies it.
#[test]
fn a_reload_with_inline_secrets_readable_by_others_is_refused() {
    if !require("tether binary", tether_bin().exists()) {
        return;
    }
    let (http, ssh) = (free_port(), free_port());
    let base = config_yaml(http, ssh, "http://127.0.0.1:9/", "");
    let mut t = TetherProcess::start(&base, &[]);
    let cfg = t.config_path();
    // Served from a private directory; now let others through to the file.
    set_mode(t.dir(), 0o755);
    set_mode(&cfg, 0o644);
    let with_secret = format!("{base}cookie_secret: {}=\n", "A".repeat(43));
    t.rewrite_config(&with_secret);
    assert!(
        t.wait_for_log("config reload refused", Duration::from_secs(15)),
        "{}",
        t.logs()
    );
    let logs = t.logs();
    let refused = logs
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap();
    assert!(
        refused.contains("cookie_secret") && refused.contains("chmod 600"),
        "{refused}"
    );
    assert!(!logs.contains("config reloaded"), "{logs}");
    assert!(!logs.contains(&"A".repeat(43)), "no secret in the log");

    set_mode(&cfg, 0o600);
    t.signal(Signal::SIGHUP);
    assert!(
        t.wait_for_log("config reloaded", Duration::from_secs(15)),
        "{}",
        t.logs()
    );
    t.stop();
}
