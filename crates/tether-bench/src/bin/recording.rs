//! Session recording overhead (issue 14): the real OpenSSH client runs
//! `ssh -tt … 'cat FILE'` (a pty, a text file of `--mib` MiB, 256 by default) to one
//! OpenSSH sshd three ways, `--runs` times each (3 by default), interleaved:
//! directly (plain OpenSSH), through tether's route `plain` (not recorded) and
//! through tether's route `rec` (recorded: `session_recording: {enabled: true,
//! command_output: true}`, so an exec with a pty writes an asciicast file). Prints,
//! as medians, MiB/s over the wall time of the whole command, tether's CPU seconds
//! (utime+stime from `/proc/<pid>/stat`) and the upstream sshd's per GiB relayed,
//! and for `rec` the recording's size, its ratio to the output relayed and the
//! recording's write rate. A recorded run without its complete recording fails.
//!
//! `cargo run --release -p tether-bench --bin recording [-- --runs 5 --mib 1024]`
//! (or `RECORDING_BENCH_RUNS`, `RECORDING_BENCH_MIB`; `--quick`: one run of 32 MiB).
//!
//! The top-level `max_size` is raised to 4 GiB (or twice the file, if larger):
//! the default 100 MiB would truncate the recording mid-run.
//!
//! Needs root (a login user is created, sshd runs on loopback) and OpenSSH.
//! Informational: exits 0 whatever the figures, non-zero only when a run fails.

// A dev tool: stop with a message on any surprise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fmt::Write as _;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use tether_bench::gateway::{self, Gateway};
use tether_bench::openssh::{self, ClientKey};
use tether_bench::procstat::{self, TreeSampler};
use tether_bench::rig::{self, UserCa, LOGIN};
use tether_testkit::{ensure_user, Sshd};

/// The unrecorded route.
const PLAIN: &str = "plain";
/// The recorded route.
const REC: &str = "rec";
/// Bytes per line of the text file, newline included.
const LINE: usize = 100;
/// How often the sshd's per-connection processes are sampled for their CPU time.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How long a recording may take to be complete after its client exited.
const RECORDING_DEADLINE: Duration = Duration::from_secs(60);
const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

/// Set by Ctrl-C: the running client is killed and the run stops (cleaning up).
static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Parser, Debug)]
#[command(
    about = "tether's session recording overhead: `cat` in a pty, recorded vs not vs plain OpenSSH"
)]
struct Args {
    /// Runs per path [env RECORDING_BENCH_RUNS; default 3].
    #[arg(long)]
    runs: Option<usize>,
    /// Size of the text file `cat` prints, in MiB [env RECORDING_BENCH_MIB; default 256].
    #[arg(long)]
    mib: Option<u64>,
    /// The client's cipher (`ssh -c`); tether's leg to the sshd is AES-GCM whatever this says.
    #[arg(long, default_value = "aes128-gcm@openssh.com")]
    cipher: String,
    /// A short smoke run: one run of a 32 MiB file.
    #[arg(long)]
    quick: bool,
}

/// What the run uses, flags over environment over defaults.
struct Plan {
    runs: usize,
    size: u64,
    cipher: String,
}

impl Plan {
    fn from_args(args: &Args) -> Result<Plan> {
        let env = |name: &str| -> Result<Option<u64>> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .with_context(|| format!("{name}={v:?} is not a number")),
                Err(_) => Ok(None),
            }
        };
        let (default_runs, default_mib) = if args.quick { (1, 32) } else { (3, 256) };
        let runs = match args.runs {
            Some(r) => r,
            None => env("RECORDING_BENCH_RUNS")?.map_or(default_runs, |r| r as usize),
        };
        let mib = match args.mib {
            Some(m) => m,
            None => env("RECORDING_BENCH_MIB")?.unwrap_or(default_mib),
        };
        ensure!(runs > 0, "runs must be at least 1");
        ensure!(
            (1..=65536).contains(&mib),
            "the file must be 1 to 65536 MiB"
        );
        Ok(Plan {
            runs,
            size: mib << 20,
            cipher: args.cipher.clone(),
        })
    }

    /// The top-level `max_size`: 4 GiB, or twice the file when that is more (the
    /// JSON escaping inflates the output), so that no recording is truncated.
    fn max_size_mib(&self) -> u64 {
        (self.size >> 20).saturating_mul(2).max(4096)
    }
}

/// The three ways to the sshd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Direct,
    Plain,
    Rec,
}

const WAYS: [Way; 3] = [Way::Direct, Way::Plain, Way::Rec];

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::Plain => PLAIN,
            Way::Rec => REC,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Way::Direct => "plain OpenSSH (direct)",
            Way::Plain => "tether, route `plain`",
            Way::Rec => "tether, route `rec` (recorded)",
        }
    }
}

/// Everything a run needs; dropping it stops every process and removes every file.
/// Fields drop in order: the gateway first (its upstream connections end), then the
/// sshd, then the text file and the recordings, the key and the CA.
struct Bench {
    gw: Gateway,
    sshd: Sshd,
    sshd_pid: u32,
    files: Files,
    client: ClientKey,
    _ca: UserCa,
}

/// The text file `cat` prints and the recording directory, in one temporary
/// directory (mode 0755 so that the login user can read the file), removed on drop.
struct Files {
    text: PathBuf,
    /// Bytes the client receives for the file: the pty turns each `\n` into `\r\n`.
    expected_output: u64,
    recordings: PathBuf,
    _dir: tempfile::TempDir,
}

/// One `cat`'s figures.
struct Sample {
    way: Way,
    wall: f64,
    received: u64,
    tether_cpu_per_gib: f64,
    sshd_cpu_per_gib: f64,
    recording: Option<RecordingFile>,
}

impl Sample {
    fn mibps(&self) -> f64 {
        self.received as f64 / MIB / self.wall
    }
}

/// A recording after its run.
struct RecordingFile {
    bytes: u64,
    /// From the client's exit to the end marker in the file.
    done_after: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                eprintln!("interrupted: stopping the client and cleaning up");
                STOP.store(true, Ordering::Relaxed);
            }
        }
    });
    match Plan::from_args(&args).and_then(|plan| main_inner(&plan)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recording benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_stop() -> Result<()> {
    ensure!(!STOP.load(Ordering::Relaxed), "interrupted");
    Ok(())
}

fn main_inner(plan: &Plan) -> Result<()> {
    ensure!(
        Path::new(openssh::SSH).is_file() && Path::new(tether_testkit::SSHD).is_file(),
        "needs OpenSSH: {} and {}",
        openssh::SSH,
        tether_testkit::SSHD
    );
    let bin = gateway::tether_binary()?;
    print_header(plan, &bin);

    let bench = set_up(plan, &bin)?;
    let outcome = measure(plan, &bench);
    if outcome.is_err() {
        eprintln!(
            "--- last tether log lines ---\n{}",
            rig::tail(&bench.gw.process.logs(), 40)
        );
        eprintln!(
            "--- last sshd log lines ---\n{}",
            rig::tail(&bench.sshd.log(), 20)
        );
    }
    drop(bench);
    let samples = outcome?;
    print_results(plan, &samples);
    Ok(())
}

/// Writes `size` bytes of printable ASCII in lines of [`LINE`] bytes (a line number,
/// then a rotating run of every printable character, quotes and backslashes
/// included); the number of newlines.
fn write_text(path: &Path, size: u64) -> Result<u64> {
    let printable: Vec<u8> = (b' '..=b'~').collect();
    let pattern: Vec<u8> = printable.iter().chain(&printable).copied().collect();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let (mut left, mut lines, mut line) = (size, 0u64, Vec::with_capacity(LINE));
    while left > 0 {
        line.clear();
        let _ = write!(line, "{:08} ", lines % 100_000_000);
        let start = (lines % printable.len() as u64) as usize;
        line.extend_from_slice(&pattern[start..start + (LINE - 1 - line.len())]);
        line.push(b'\n');
        let n = line.len().min(usize::try_from(left).unwrap_or(LINE));
        out.write_all(&line[..n])?;
        if n == LINE {
            lines += 1;
        }
        left -= n as u64;
    }
    out.flush()?;
    Ok(lines)
}

fn set_up(plan: &Plan, bin: &Path) -> Result<Bench> {
    ensure_user(LOGIN);
    let client = ClientKey::generate()?;
    let ca = UserCa::generate()?;

    let dir = tempfile::Builder::new()
        .prefix("tether-bench-recording-")
        .tempdir()
        .context("temporary directory")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let text = dir.path().join("text.txt");
    let started = Instant::now();
    let newlines = write_text(&text, plan.size).context("writing the text file")?;
    std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o644))?;
    println!(
        "text file: {} bytes, {newlines} lines, written in {:.1} s",
        plan.size,
        started.elapsed().as_secs_f64()
    );
    let files = Files {
        text,
        expected_output: plan.size + newlines,
        // tether creates it (0700) with the first recording.
        recordings: dir.path().join("recordings"),
        _dir: dir,
    };

    let sshd = Sshd::start_with(
        &ca.pub_path,
        &[&format!(
            "AuthorizedKeysFile {}",
            client.authorized_keys.display()
        )],
    );
    let sshd_pid = rig::sshd_pid(&sshd)?;
    let gw = Gateway::start_with(bin, |data| {
        // The CA the sshd trusts, where tether loads it instead of generating one.
        openssh::write_private_key(&data.join("ssh_user_ca_key"), &ca.key)?;
        std::fs::write(
            data.join("ssh_user_ca_key.pub"),
            format!("{}\n", ca.pub_line),
        )?;
        Ok(format!(
            "ssh_upstream_host_key_policy: accept-new
session_recording:
  directory: {dir}
  max_size: {max}MiB
routes:
  - from: ssh://{PLAIN}
    to: {to}
    allow_any_authenticated_user: true
  - from: ssh://{REC}
    to: {to}
    allow_any_authenticated_user: true
    session_recording: {{enabled: true, command_output: true}}
",
            dir = files.recordings.display(),
            max = plan.max_size_mib(),
            to = sshd.url(),
        ))
    })?;
    let written = std::fs::read_to_string(gw.data_dir().join("ssh_user_ca_key.pub"))
        .context("tether did not write ssh_user_ca_key.pub")?;
    let key_of = |line: &str| {
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    ensure!(
        key_of(&written) == key_of(&ca.pub_line),
        "tether's ssh_user_ca_key.pub is not the CA the sshd trusts"
    );
    rig::bind_key_blocking(&gw, &client.key)?;
    Ok(Bench {
        gw,
        sshd,
        sshd_pid,
        files,
        client,
        _ca: ca,
    })
}

/// The `ssh` arguments (before the remote command) for `way`: a forced pty (`-tt`).
fn ssh_args(b: &Bench, way: Way, cipher: &str) -> Vec<String> {
    let mut args: Vec<String> = openssh::common_options(&b.client.path, cipher)
        .into_iter()
        .filter(|a| a != "-T")
        .collect();
    args.push("-tt".into());
    let (port, user) = match way {
        Way::Direct => (b.sshd.port, format!("{LOGIN}@127.0.0.1")),
        Way::Plain | Way::Rec => (b.gw.ssh_port, format!("{LOGIN}@{}@127.0.0.1", way.label())),
    };
    args.extend(["-p".to_string(), port.to_string(), user]);
    args
}

/// Kills and reaps the client when dropped (an error or a panic mid-run).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `ssh <args> <remote>` with its stdin held open (no input, no EOF) and its
/// output counted and dropped; the client must exit 0. The wall time from spawn to
/// exit and the bytes received.
fn run_counted(args: &[String], remote: &str, timeout: Duration) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = ChildGuard(
        Command::new(openssh::SSH)
            .args(args)
            .arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ssh")?,
    );
    let stdin = child.0.stdin.take();
    let mut stdout = child.0.stdout.take().context("stdout")?;
    let mut stderr = child.0.stderr.take().context("stderr")?;
    let counter = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 18];
        let mut total = 0u64;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.0.try_wait().context("waiting for ssh")? {
            break status;
        }
        check_stop()?;
        ensure!(
            started.elapsed() < timeout,
            "ssh did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    drop(stdin);
    let received = counter.join().unwrap_or(0);
    let errors = errors.join().unwrap_or_default();
    ensure!(
        status.success(),
        "ssh {remote} exited with {status}; stderr: {}",
        errors.trim()
    );
    Ok((elapsed, received))
}

/// The `.cast` files in the recording directory (none when it does not exist yet).
fn recordings(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cast"))
        .collect()
}

/// The last line of a file (its last 4 KiB at most).
fn last_line(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096)))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    Ok(text
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .unwrap_or("")
        .to_string())
}

/// The single recording a run made, once complete (its last line is the end
/// marker, `[t, "m", "exit 0"]`); fails loudly when there is none, more than one,
/// or it was truncated.
fn finished_recording(dir: &Path, client_exit: Instant) -> Result<(PathBuf, RecordingFile)> {
    loop {
        let found = recordings(dir);
        ensure!(
            found.len() <= 1,
            "{} recordings for one session in {}",
            found.len(),
            dir.display()
        );
        if let Some(path) = found.first() {
            let last = last_line(path)?;
            if last.contains(", \"m\", ") {
                ensure!(
                    !last.contains("truncated"),
                    "the recording was truncated ({last}): max_size is too small"
                );
                ensure!(
                    last.contains("\"exit 0\""),
                    "the recording ends with {last}, not the exit"
                );
                let done_after = client_exit.elapsed();
                let bytes = std::fs::metadata(path)?.len();
                return Ok((path.clone(), RecordingFile { bytes, done_after }));
            }
        }
        check_stop()?;
        if client_exit.elapsed() > RECORDING_DEADLINE {
            match found.first() {
                None => bail!(
                    "RECORDING MISSING: the recorded route made no file in {} within {RECORDING_DEADLINE:?}",
                    dir.display()
                ),
                Some(path) => bail!(
                    "RECORDING INCOMPLETE: {} has no end marker {RECORDING_DEADLINE:?} after the client exited (last line {:?})",
                    path.display(),
                    last_line(path).unwrap_or_default()
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes every recording (between runs: each run must make exactly one).
fn clear_recordings(dir: &Path) -> Result<()> {
    for path in recordings(dir) {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

fn measure(plan: &Plan, b: &Bench) -> Result<Vec<Sample>> {
    let tck = procstat::ticks_per_second();
    let tether_pid = b.gw.pid()?;
    println!(
        "pids (e.g. for perf record -p): tether {tether_pid}, sshd {}",
        b.sshd_pid
    );

    // Every way works with a pty, the recorded one makes a recording; and what a
    // connection alone costs.
    println!();
    println!(
        "connection set-up alone (`ssh -tt … true`, median of 3), included in every run's time:"
    );
    let mut line = String::from(" ");
    for way in WAYS {
        let mut times = Vec::new();
        for _ in 0..3 {
            check_stop()?;
            let (t, _) = run_counted(
                &ssh_args(b, way, &plan.cipher),
                "true",
                Duration::from_secs(60),
            )
            .with_context(|| format!("{}: ssh -tt … true", way.label()))?;
            if way == Way::Rec {
                finished_recording(&b.files.recordings, Instant::now())
                    .context("the recorded route's `true`")?;
                clear_recordings(&b.files.recordings)?;
            }
            times.push(t.as_secs_f64());
        }
        let _ = write!(
            line,
            " {} {:.0} ms",
            way.label(),
            median(&mut times) * 1000.0
        );
    }
    println!("{line}");
    ensure!(
        b.sshd
            .log()
            .contains("Accepted certificate ID \"alice@example.com\""),
        "the sshd did not log tether's certificate login for alice@example.com"
    );
    ensure!(
        recordings(&b.files.recordings).is_empty(),
        "an unrecorded run left a recording"
    );

    let remote = format!("cat {}", b.files.text.display());
    let timeout = Duration::from_secs(60) + Duration::from_secs_f64(plan.size as f64 / 2e6);
    let per_gib = |ticks: u64, bytes: u64| procstat::seconds(ticks, tck) / (bytes as f64 / GIB);
    println!();
    println!(
        "{:>3} {:<6} {:>7} {:>8} {:>12} {:>10} {:>9} {:>7} {:>9} {:>5}",
        "run",
        "path",
        "s",
        "MiB/s",
        "tether s/GiB",
        "sshd s/GiB",
        "rec MiB",
        "rec/out",
        "rec MiB/s",
        "load"
    );
    let mut samples = Vec::new();
    for run in 1..=plan.runs {
        for k in 0..WAYS.len() {
            let way = WAYS[(k + run - 1) % WAYS.len()];
            check_stop()?;
            let ssh = ssh_args(b, way, &plan.cipher);
            let tether_before = procstat::cpu_ticks(tether_pid)?.own;
            let sshd = TreeSampler::start(vec![b.sshd_pid], SAMPLE_EVERY);
            let ran = run_counted(&ssh, &remote, timeout);
            let client_exit = Instant::now();
            let recording = match (&ran, way) {
                (Ok(_), Way::Rec) => Some(
                    finished_recording(&b.files.recordings, client_exit)
                        .with_context(|| format!("run {run}, route {REC}"))?,
                ),
                _ => None,
            };
            let sshd_ticks = sshd.finish()[0];
            let (elapsed, received) = ran.with_context(|| format!("run {run}, {}", way.label()))?;
            let tether_ticks = procstat::cpu_ticks(tether_pid)?.own - tether_before;
            ensure!(
                received == b.files.expected_output,
                "run {run}, {}: received {received} bytes, expected {} (the file with \\r\\n line ends)",
                way.label(),
                b.files.expected_output
            );
            let recording = match recording {
                Some((path, rec)) => {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                    Some(rec)
                }
                None => {
                    ensure!(
                        recordings(&b.files.recordings).is_empty(),
                        "run {run}: the unrecorded path {} left a recording",
                        way.label()
                    );
                    None
                }
            };
            let s = Sample {
                way,
                wall: elapsed.as_secs_f64(),
                received,
                tether_cpu_per_gib: per_gib(tether_ticks, received),
                sshd_cpu_per_gib: per_gib(sshd_ticks, received),
                recording,
            };
            let rec = s.recording.as_ref();
            println!(
                "{:>3} {:<6} {:>7.2} {:>8.1} {:>12.2} {:>10.2} {:>9} {:>7} {:>9} {:>5}",
                run,
                way.label(),
                s.wall,
                s.mibps(),
                s.tether_cpu_per_gib,
                s.sshd_cpu_per_gib,
                opt(rec.map(|r| r.bytes as f64 / MIB), 1),
                opt(rec.map(|r| r.bytes as f64 / received as f64), 3),
                opt(rec.map(|r| r.bytes as f64 / MIB / s.wall), 1),
                rig::loadavg().split(' ').next().unwrap_or("?"),
            );
            if let Some(r) = rec {
                if r.done_after > Duration::from_millis(500) {
                    println!(
                        "    (the recording was complete {} ms after the client exited)",
                        r.done_after.as_millis()
                    );
                }
            }
            samples.push(s);
        }
    }
    Ok(samples)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}"))
}

/// The median (mean of the middle two for an even count); NaN when empty.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_header(plan: &Plan, bin: &Path) {
    println!("tether session recording overhead: `cat` of a text file in a pty, recorded vs not, beside plain OpenSSH");
    println!("{}", tether_bench::machine::describe());
    println!(
        "gateway: {} ({}, repo at {})",
        gateway::version(bin),
        bin.display(),
        rig::git_describe()
    );
    println!(
        "client and server: {}; everything on 127.0.0.1, sharing the CPUs",
        rig::openssh_version()
    );
    println!(
        "plan: {} run(s) × 3 paths, a {} MiB text file ({LINE}-byte lines of printable ASCII), paths rotated each run, cipher {}",
        plan.runs,
        plan.size >> 20,
        plan.cipher
    );
    println!("  direct: ssh -tt -p SSHD {LOGIN}@127.0.0.1 'cat FILE'");
    println!(
        "  plain:  ssh -tt -p TETHER {LOGIN}@{PLAIN}@127.0.0.1 'cat FILE'   (route not recorded)"
    );
    println!(
        "  rec:    ssh -tt -p TETHER {LOGIN}@{REC}@127.0.0.1 'cat FILE'   (session_recording: {{enabled: true, command_output: true}}; max_size {} MiB, not the default 100 MiB that would truncate)",
        plan.max_size_mib()
    );
    println!("  the client's output (the file, \\n turned into \\r\\n by the pty) is counted and dropped; every byte must arrive");
    println!("  MiB/s = bytes received / wall time of the whole ssh command (connection set-up included) / 2^20");
    println!(
        "  tether s/GiB: tether's utime+stime from /proc/<pid>/stat ({} ticks/s) per GiB received, until the recording is complete;",
        procstat::ticks_per_second()
    );
    println!(
        "  sshd s/GiB: the sshd's per-connection processes (cat included), sampled from /proc every {} ms",
        SAMPLE_EVERY.as_millis()
    );
    println!("  rec MiB: the .cast file; rec/out: its size / bytes received; rec MiB/s: its size / wall time");
    println!("load average at the start: {}", rig::loadavg());
}

fn print_results(plan: &Plan, samples: &[Sample]) {
    let med = |way: Way, f: &dyn Fn(&Sample) -> Option<f64>| {
        let mut v: Vec<f64> = samples
            .iter()
            .filter(|s| s.way == way)
            .filter_map(f)
            .collect();
        median(&mut v)
    };
    let mibps = |w| med(w, &|s| Some(s.mibps()));
    let tether_cpu = |w| med(w, &|s| Some(s.tether_cpu_per_gib));
    let sshd_cpu = |w| med(w, &|s| Some(s.sshd_cpu_per_gib));
    let direct = mibps(Way::Direct);

    println!();
    println!(
        "summary: medians over {} run(s) of {} MiB each",
        plan.runs,
        plan.size >> 20
    );
    println!(
        "{:<32} {:>8} {:>9} {:>12} {:>10} {:>9} {:>7} {:>9}",
        "", "MiB/s", "vs direct", "tether s/GiB", "sshd s/GiB", "rec MiB", "rec/out", "rec MiB/s"
    );
    for way in WAYS {
        let rec = |f: &dyn Fn(&Sample, &RecordingFile) -> f64| {
            med(way, &|s| s.recording.as_ref().map(|r| f(s, r)))
        };
        println!(
            "{:<32} {} {} {} {} {} {} {}",
            way.title(),
            num(mibps(way), 8, 1),
            num(mibps(way) / direct, 9, 2),
            if way == Way::Direct {
                format!("{:>12}", "-")
            } else {
                num(tether_cpu(way), 12, 2)
            },
            num(sshd_cpu(way), 10, 2),
            num(rec(&|_, r| r.bytes as f64 / MIB), 9, 1),
            num(rec(&|s, r| r.bytes as f64 / s.received as f64), 7, 3),
            num(rec(&|s, r| r.bytes as f64 / MIB / s.wall), 9, 1),
        );
    }
    let (pt, rt) = (mibps(Way::Plain), mibps(Way::Rec));
    let (pc, rc) = (tether_cpu(Way::Plain), tether_cpu(Way::Rec));
    println!();
    println!(
        "recording overhead: throughput rec/plain {:.2} ({:+.1} %); tether CPU {:.2} -> {:.2} s/GiB ({:+.2} s/GiB, ×{:.2})",
        rt / pt,
        (rt / pt - 1.0) * 100.0,
        pc,
        rc,
        rc - pc,
        rc / pc
    );
    println!("load average at the end: {}", rig::loadavg());
    println!("(informational: the exit status does not depend on the figures)");
}

/// `{v:.prec$}` right-aligned in `width`, or `-` for a missing figure.
fn num(v: f64, width: usize, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:>width$.prec$}")
    } else {
        format!("{:>width$}", "-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_file_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        assert_eq!(write_text(&path, 250).unwrap(), 2);
        let text = std::fs::read(&path).unwrap();
        assert_eq!(text.len(), 250);
        assert_eq!(text.iter().filter(|&&c| c == b'\n').count(), 2);
        assert!(text
            .iter()
            .all(|&c| c == b'\n' || (b' '..=b'~').contains(&c)));
        assert!(text.starts_with(b"00000000  !\"#"));
        assert_eq!(text[LINE - 1], b'\n');
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn max_size_never_truncates() {
        let plan = |mib: u64| Plan {
            runs: 1,
            size: mib << 20,
            cipher: String::new(),
        };
        assert_eq!(plan(256).max_size_mib(), 4096);
        assert_eq!(plan(4096).max_size_mib(), 8192);
    }
}
