//! Memory of processes from `/proc`: resident set (`VmRSS`) and its high-water mark
//! (`VmHWM`, which writing `5` to `/proc/<pid>/clear_refs` resets), proportional set
//! size (`Pss` in `smaps_rollup`: shared pages split between the processes sharing
//! them, so a sum over sshd's per-connection processes is what they cost together),
//! process trees by parent, and a sampler that keeps the peak of a reading.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`) or a count (`Threads`).
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_value(&status, field)
}

/// The number after `field:` in a `/proc` key-value text.
fn field_value(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS")
}

/// Peak resident set size in KiB since start or the last [`reset_peak`].
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM")
}

/// Resets `VmHWM` to the current RSS (needs to own the process, or root).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// `Pss` of `/proc/<pid>/smaps_rollup`, KiB.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    field_value(&rollup, "Pss")
}

/// pid → (parent pid, command name) of every process.
pub fn processes() -> HashMap<u32, (u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (ppid, comm) = parse_ppid_comm(&stat)?;
        Some((pid, (ppid, comm)))
    })
    .collect()
}

/// Parent pid and command name from a `/proc/<pid>/stat` line.
fn parse_ppid_comm(stat: &str) -> Option<(u32, String)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm))
}

/// `root` and all its descendants, with their command names.
pub fn tree(root: u32) -> Vec<(u32, String)> {
    let procs = processes();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, (ppid, _)) in &procs {
        children.entry(*ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(pid) = frontier.pop() {
        if let Some((_, comm)) = procs.get(&pid) {
            out.push((pid, comm.clone()));
        }
        if let Some(kids) = children.get(&pid) {
            frontier.extend(kids.iter().copied().filter(|k| *k != root));
        }
    }
    out
}

/// Sum of `Pss` over `root`'s descendants (not `root`) whose command name is `comm`
/// (every descendant when `None`), and how many there were.
pub fn descendants_pss_kib(root: u32, comm: Option<&str>) -> (u64, usize) {
    let mut total = 0;
    let mut n = 0;
    for (pid, name) in tree(root) {
        if pid == root || comm.is_some_and(|c| c != name) {
            continue;
        }
        if let Some(pss) = pss_kib(pid) {
            total += pss;
            n += 1;
        }
    }
    (total, n)
}

/// Sum of `Pss` over `root` and all its descendants, KiB.
pub fn tree_pss_kib(root: u32) -> u64 {
    tree(root).iter().filter_map(|(pid, _)| pss_kib(*pid)).sum()
}

/// Calls a reading every `interval` on a thread and keeps its largest value.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl PeakSampler {
    pub fn start(interval: Duration, read: impl Fn() -> Option<u64> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = read().unwrap_or(0);
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                peak = peak.max(read().unwrap_or(0));
            }
            peak
        });
        PeakSampler { stop, thread }
    }

    /// Stops sampling; the largest value seen.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// A signed KiB difference as MiB with one decimal and a sign.
pub fn delta_mib(after: u64, before: u64) -> String {
    format!("{:+.1}", (after as f64 - before as f64) / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_texts() {
        let status = "Name:\ttether\nVmHWM:\t  123456 kB\nVmRSS:\t   65432 kB\nThreads:\t7\n";
        assert_eq!(field_value(status, "VmRSS"), Some(65432));
        assert_eq!(field_value(status, "VmHWM"), Some(123456));
        assert_eq!(field_value(status, "Threads"), Some(7));
        assert_eq!(field_value(status, "Vm"), None);
        assert_eq!(
            parse_ppid_comm("42 (sshd: x (y)) S 7 42 42 0"),
            Some((7, "sshd: x (y)".to_string()))
        );
        assert_eq!(mib(1536), "1.5");
        assert_eq!(delta_mib(1024, 2048), "-1.0");
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(hwm_kib(me).unwrap() >= rss_kib(me).unwrap() / 2);
        assert!(pss_kib(me).unwrap() > 0);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = tree(me);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.iter().any(|(pid, _)| *pid == me));
        assert!(found
            .iter()
            .any(|(pid, comm)| *pid == child.id() && comm == "sleep"));
        let sampler = PeakSampler::start(Duration::from_millis(5), || Some(3));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(sampler.finish(), 3);
    }
}
