//! Child-process plumbing shared by every helper: own process group, output captured
//! by background threads, bounded waits, SIGTERM-then-SIGKILL shutdown, and the
//! one-time `npm ci` of the Node tools.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes written by a child so far, shared with the thread that reads them.
pub(crate) type SharedBuf = Arc<Mutex<Vec<u8>>>;

/// Exit code of `status`; a death by signal N is reported as `128 + N`, like a shell.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Starts `cmd` as the leader of a new process group, so the whole tree can be
/// signalled at once.
pub(crate) fn spawn_group(cmd: &mut Command, what: &str) -> Child {
    cmd.process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"))
}

/// Sends `sig` to the process group led by `child` (ignoring "no such process").
pub(crate) fn signal_group(child: &Child, sig: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

/// Waits up to `timeout` for `child` to exit.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
}

/// SIGTERM to the group, up to `grace` to exit, then SIGKILL to the group; reaps the
/// leader. Returns its exit code (`128 + signal` when killed).
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> Option<i32> {
    if let Ok(Some(status)) = child.try_wait() {
        // The leader is gone; make sure nothing it left in its group survives.
        signal_group(child, Signal::SIGKILL);
        return Some(exit_code(status));
    }
    signal_group(child, Signal::SIGTERM);
    let status = wait_timeout(child, grace).or_else(|| {
        signal_group(child, Signal::SIGKILL);
        let _ = child.kill();
        child.wait().ok()
    });
    signal_group(child, Signal::SIGKILL);
    status.map(exit_code)
}

/// Copies everything `reader` yields into `buf` until EOF, on a new thread.
pub(crate) fn pump(mut reader: impl Read + Send + 'static, buf: SharedBuf) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Like [`pump`], appending to two buffers (e.g. one stream and the combined output).
pub(crate) fn pump_tee(
    mut reader: impl Read + Send + 'static,
    a: SharedBuf,
    b: SharedBuf,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    a.lock().unwrap().extend_from_slice(&chunk[..n]);
                    b.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            }
        }
    })
}

/// `buf` as text (invalid UTF-8 replaced).
pub(crate) fn text(buf: &SharedBuf) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

/// What a finished (or timed-out) command printed.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit code (`128 + N` for signal N); `None` when it timed out and was killed.
    pub status: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CmdOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs `cmd` to completion with `stdin` fed to it (or /dev/null), stdout and stderr
/// captured, killed (whole process group) after `timeout`.
pub fn run_command(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> CmdOutput {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = spawn_group(&mut cmd, "command");
    let out: SharedBuf = Arc::default();
    let err: SharedBuf = Arc::default();
    let t_out = pump(child.stdout.take().unwrap(), out.clone());
    let t_err = pump(child.stderr.take().unwrap(), err.clone());
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        // A writer thread, so a child that does not read cannot block us past timeout.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let status = match wait_timeout(&mut child, timeout) {
        Some(status) => Some(exit_code(status)),
        None => {
            terminate(&mut child, Duration::from_millis(500));
            None
        }
    };
    // Grandchildren may hold the pipes open; do not wait for them forever.
    signal_group(&child, Signal::SIGKILL);
    let _ = t_out.join();
    let _ = t_err.join();
    CmdOutput {
        status,
        stdout: text(&out),
        stderr: text(&err),
    }
}

/// Makes sure `<dir>/node_modules` is installed, running `npm ci` there at most once at
/// a time across all test processes (an exclusive lock on a file in the temp dir).
pub(crate) fn ensure_node_modules(dir: &Path, marker_package: &str) {
    let marker = dir.join("node_modules").join(marker_package);
    if marker.is_dir() {
        return;
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let lock_path = std::env::temp_dir().join(format!(
        "tether-testkit-npm-ci-{}.lock",
        name.unwrap_or_default()
    ));
    let lock = File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock().expect("lock .npm-ci.lock");
    if !marker.is_dir() {
        eprintln!("testkit: running npm ci in {}", dir.display());
        let mut cmd = Command::new("npm");
        cmd.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
        let out = run_command(cmd, None, Duration::from_secs(300));
        assert!(
            out.success() && marker.is_dir(),
            "npm ci in {} failed ({:?}):\n{}\n{}",
            dir.display(),
            out.status,
            out.stdout,
            out.stderr
        );
    }
    let _ = lock.unlock();
}

/// The last `max` bytes of `s` (on a char boundary), for panic messages.
pub(crate) fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_command_captures_output_and_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "read x; echo out:$x; echo err >&2; exit 3"]);
        let out = run_command(cmd, Some(b"hello\n"), Duration::from_secs(10));
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, "out:hello\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn run_command_times_out_and_kills_the_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let started = Instant::now();
        let out = run_command(cmd, None, Duration::from_millis(300));
        assert_eq!(out.status, None);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn tail_keeps_char_boundaries() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("abcdef", 2), "ef");
    }
}
