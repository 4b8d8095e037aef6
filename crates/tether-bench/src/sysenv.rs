//! The operating-system limits a load benchmark runs into, and what it can do about
//! them from inside: the descriptor limit (`RLIMIT_NOFILE`, raised to the hard limit
//! here and inherited by every process the benchmark starts — tether, sshd, the
//! upstream server) and the sysctls it can only read and report (`fs.file-max`,
//! `fs.nr_open`, `net.ipv4.ip_local_port_range`, `net.core.somaxconn`, …).

use std::fmt::Write as _;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Soft and hard `RLIMIT_NOFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

/// What [`raise_nofile`] did.
#[derive(Debug, Clone)]
pub struct Raised {
    pub before: FdLimit,
    pub after: FdLimit,
    /// Why the hard limit could not go higher, when it was tried and refused.
    pub hard_refused: Option<String>,
}

impl Raised {
    /// One line for a benchmark's header.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "RLIMIT_NOFILE (ulimit -n) {} -> {} (hard {})",
            self.before.soft, self.after.soft, self.after.hard
        );
        if let Some(why) = &self.hard_refused {
            let _ = write!(
                s,
                "; raising the hard limit to fs.nr_open was refused ({why}: needs CAP_SYS_RESOURCE)"
            );
        }
        s
    }
}

fn nofile() -> FdLimit {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => FdLimit { soft, hard },
        Err(_) => FdLimit { soft: 0, hard: 0 },
    }
}

/// Raises this process's descriptor limit as far as it may go: first the hard limit
/// to `fs.nr_open` (allowed with CAP_SYS_RESOURCE), then the soft limit to the hard
/// one. Child processes started afterwards inherit it.
pub fn raise_nofile() -> Raised {
    let before = nofile();
    let mut hard_refused = None;
    if let Some(nr_open) = sysctl("fs.nr_open").and_then(|v| v.parse::<u64>().ok()) {
        if nr_open > before.hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, nr_open, nr_open) {
                hard_refused = Some(e.desc().to_string());
            }
        }
    }
    let now = nofile();
    if now.soft < now.hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, now.hard, now.hard);
    }
    Raised {
        before,
        after: nofile(),
        hard_refused,
    }
}

/// A sysctl's value from `/proc/sys` (`net.core.somaxconn` → `/proc/sys/net/core/somaxconn`),
/// whitespace collapsed.
pub fn sysctl(name: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    let v = std::fs::read_to_string(path).ok()?;
    Some(v.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The sysctls a many-connection run depends on.
pub const SYSCTLS: [&str; 7] = [
    "fs.file-max",
    "fs.nr_open",
    "net.ipv4.ip_local_port_range",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
];

/// `name=value` for each of [`SYSCTLS`], on one line.
pub fn describe_sysctls() -> String {
    SYSCTLS
        .iter()
        .map(|n| format!("{n}={}", sysctl(n).unwrap_or_else(|| "?".into())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ephemeral ports available per (source address, destination) pair.
pub fn ephemeral_ports() -> Option<u64> {
    let range = sysctl("net.ipv4.ip_local_port_range")?;
    let mut it = range.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// `Max open files` (soft) of a running process, from `/proc/<pid>/limits`.
pub fn process_fd_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many descriptors a process has open now.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Threads of a process, from `/proc/<pid>/status`.
pub fn threads(pid: u32) -> Option<u64> {
    crate::memory::status_field(pid, "Threads")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let raised = raise_nofile();
        assert!(raised.after.soft >= raised.before.soft);
        assert_eq!(raised.after.soft, raised.after.hard);
        assert_eq!(process_fd_limit(me), Some(raised.after.soft));
        assert!(open_fds(me).unwrap() >= 3);
        assert!(threads(me).unwrap() >= 1);
        assert!(sysctl("fs.nr_open").is_some());
        assert!(ephemeral_ports().unwrap() > 1000);
        assert!(describe_sysctls().contains("net.core.somaxconn="));
    }
}
