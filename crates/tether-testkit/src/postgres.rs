//! A scratch PostgreSQL cluster (Debian's `postgresql` server binaries) in a temporary
//! directory owned by the `postgres` user, on a free loopback port, trust auth.

use crate::free_port;
use crate::process::{run_command, tail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

/// A running PostgreSQL server. Stopped (`pg_ctl -m fast stop`) on drop.
pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub url: String,
    /// Its loopback port.
    pub port: u16,
    bin: PathBuf,
    dir: TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`, if any.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    cmd
}

fn ids_of_postgres() -> (u32, u32) {
    let id = |flag: &str| {
        let mut cmd = Command::new("id");
        cmd.args([flag, "postgres"]);
        let out = run_command(cmd, None, Duration::from_secs(10));
        assert!(out.success(), "no postgres user: {out:?}");
        out.stdout.trim().parse::<u32>().expect("numeric id")
    };
    (id("-u"), id("-g"))
}

impl Postgres {
    /// Whether the server binaries are installed.
    pub fn available() -> bool {
        postgres_bin_dir().is_some()
    }

    /// initdb + pg_ctl start (as the `postgres` user; tests run as root).
    pub fn start() -> Postgres {
        let bin = postgres_bin_dir().expect("PostgreSQL server binaries not installed");
        let dir = tempfile::Builder::new()
            .prefix("tether-pg-")
            .tempdir()
            .expect("tempdir");
        let (uid, gid) = ids_of_postgres();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown pg dir");
        let data = dir.path().join("data");

        let mut initdb = as_postgres(&bin, "initdb");
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        let out = run_command(initdb, None, Duration::from_secs(120));
        assert!(out.success(), "initdb failed: {out:?}");

        let port = free_port();
        let pg = Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            bin,
            dir,
        };
        pg.start_server();
        pg
    }

    /// `pg_ctl start` on this server's data directory and port (again, after
    /// [`Postgres::stop_server`]).
    pub fn start_server(&self) {
        let mut start = as_postgres(&self.bin, "pg_ctl");
        start
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("pg.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                self.port,
                self.dir.path().display()
            ))
            .args(["-w", "-t", "60", "start"]);
        let out = run_command(start, None, Duration::from_secs(90));
        assert!(
            out.success(),
            "pg_ctl start failed: {out:?}\n{}",
            tail(&self.log(), 4000)
        );
    }

    /// Stops the server (`pg_ctl stop -m fast`: clients are disconnected) and keeps
    /// its data, so [`Postgres::start_server`] brings it back.
    pub fn stop_server(&self) {
        self.pg_ctl_stop();
    }

    fn pg_ctl_stop(&self) {
        let mut stop = as_postgres(&self.bin, "pg_ctl");
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"]);
        let _ = run_command(stop, None, Duration::from_secs(40));
    }

    /// Runs `sql` with psql as the `postgres` superuser; returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let mut cmd = as_postgres(&self.bin, "psql");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"])
            .args(["-A", "-t", "-c", sql]);
        let out = run_command(cmd, None, Duration::from_secs(60));
        assert!(out.success(), "psql {sql:?}: {out:?}");
        out.stdout
    }

    /// Creates database `name`; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE \"{name}\""));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- postgres log ---\n{}", tail(&self.log(), 4000));
        }
        self.pg_ctl_stop();
    }
}
