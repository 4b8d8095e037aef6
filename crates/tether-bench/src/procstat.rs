//! CPU time of a process from `/proc/<pid>/stat`: its own (`utime + stime`, all
//! threads) and that of its waited-for children (`cutime + cstime`).

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// A process's CPU time in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    /// `utime + stime`: the process itself, every thread.
    pub own: u64,
    /// `cutime + cstime`: its children that exited and were waited for.
    pub children: u64,
}

/// The fields of `/proc/<pid>/stat` after the command name, numbered as in proc(5)
/// from field 3 (`state`) on.
fn fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    // The command name is in parentheses and may itself contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// Field `n` (1-based, as in proc(5); n >= 3) of a stat line.
fn field(fields: &[&str], n: usize) -> Option<u64> {
    fields.get(n.checked_sub(3)?)?.parse().ok()
}

/// Parses a `/proc/<pid>/stat` line.
pub fn parse_stat(stat: &str) -> Option<(u32, CpuTicks)> {
    let f = fields_after_comm(stat)?;
    let ppid = u32::try_from(field(&f, 4)?).ok()?;
    let own = field(&f, 14)? + field(&f, 15)?;
    let children = field(&f, 16)? + field(&f, 17)?;
    Some((ppid, CpuTicks { own, children }))
}

/// The CPU time of `pid` so far.
pub fn cpu_ticks(pid: u32) -> Result<CpuTicks> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&stat)
        .map(|(_, t)| t)
        .with_context(|| format!("unexpected {path}: {stat:?}"))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when that cannot be run, which is
/// the value on every Linux this runs on).
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Every process's parent and CPU ticks, from one pass over `/proc`.
fn snapshot() -> HashMap<u32, (u32, CpuTicks)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name();
        let pid: u32 = name.to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some((pid, parse_stat(&stat)?))
    })
    .collect()
}

/// The descendants of `root` in `procs` (not `root` itself).
fn descendants(procs: &HashMap<u32, (u32, CpuTicks)>, root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (&pid, &(ppid, _)) in procs {
            if ppid == parent && pid != root && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// Per descendant: ticks when first seen (0 when it appeared while sampling), and
/// when last seen.
type Seen = HashMap<u32, (u64, u64)>;

fn record(seen: &mut [Seen], roots: &[u32], first_pass: bool) {
    let procs = snapshot();
    for (root, seen) in roots.iter().zip(seen.iter_mut()) {
        for pid in descendants(&procs, *root) {
            let Some(&(_, ticks)) = procs.get(&pid) else {
                continue;
            };
            let entry = seen
                .entry(pid)
                .or_insert((if first_pass { ticks.own } else { 0 }, 0));
            entry.1 = entry.1.max(ticks.own);
        }
    }
}

/// CPU time spent by the descendants of some processes (e.g. an sshd's
/// per-connection processes, which its `cutime` does not reliably include), sampled
/// from `/proc` every `interval` on a thread. A process's CPU after its last sample
/// is missed, so the figure is a lower bound, short by at most about one interval of
/// CPU per process that exits while sampling.
pub struct TreeSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Seen>>,
}

impl TreeSampler {
    /// Starts sampling the descendants of each of `roots`.
    pub fn start(roots: Vec<u32>, interval: Duration) -> TreeSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let mut seen = vec![Seen::new(); roots.len()];
        record(&mut seen, &roots, true);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                record(&mut seen, &roots, false);
            }
            seen
        });
        TreeSampler { stop, thread }
    }

    /// Stops sampling; per root, the CPU ticks its descendants used meanwhile.
    pub fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_default()
            .iter()
            .map(|seen| {
                seen.values()
                    .map(|(first, last)| last.saturating_sub(*first))
                    .sum()
            })
            .collect()
    }
}

/// Seconds for `ticks` clock ticks.
pub fn seconds(ticks: u64, per_second: u64) -> f64 {
    ticks as f64 / per_second.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "1234 (tether (a) b) S 99 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 75 3 4 20 0 5 0 100 1000 10 18446744073709551615";
        let (ppid, t) = parse_stat(line).unwrap();
        assert_eq!(ppid, 99);
        assert_eq!(
            t,
            CpuTicks {
                own: 325,
                children: 7
            }
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = cpu_ticks(std::process::id()).unwrap();
        assert!(me.own < u64::MAX);
        assert!(ticks_per_second() > 0);
        assert!((seconds(150, 100) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn samples_a_busy_child() {
        let me = std::process::id();
        let sampler = TreeSampler::start(vec![me], Duration::from_millis(10));
        let mut child = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let ticks = sampler.finish();
        child.wait().unwrap();
        assert_eq!(ticks.len(), 1);
        assert!(ticks[0] > 0, "no CPU seen for a busy child");
    }
}
