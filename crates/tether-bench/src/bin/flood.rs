//! Pre-authentication flood (issue 11): `--silent` (2,000) TCP connections to the SSH
//! port that never send a byte and `--slowloris` (300) HTTP requests to the web port
//! whose headers never finish (a byte every `--drip` seconds), all from 127.0.0.2–250,
//! held for `--window` (60 s) after the last one is established. Meanwhile, from
//! 127.0.0.1, a user with a bound key runs `ssh … echo ok` through a route every
//! `--probe-every` seconds (time to the command's output, retrying for up to 20 s when
//! refused) and `GET /ping` is polled four times a second. Reported: tether's RSS
//! before / peak / after, the user's time to get in before and during the flood, the
//! `/ping` latency, and how many of the flood's connections the server itself closed
//! within the window. Then the same silent flood and probes against plain OpenSSH sshd
//! (its defaults: MaxStartups 10:30:100, LoginGraceTime 120), measured in the same run.
//!
//! `cargo run --release -p tether-bench --bin flood [-- --quick]`
//!
//! Needs root (a login user is created, sshd runs on loopback), OpenSSH, and about
//! `silent + slowloris + 100` descriptors in this process and in tether (the
//! descriptor limit is raised to the hard limit; see docs/PERFORMANCE.md).
//! Informational: exits 0 whatever the figures, non-zero only when the run fails.

// A dev tool: stop with a message on any surprise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use tether_bench::flood::{self, Flood, Kind, Tally};
use tether_bench::memory::{self, PeakSampler};
use tether_bench::openssh::{self, ClientKey};
use tether_bench::rig::{self, Rig, UserCa, LOGIN, ROUTE};
use tether_bench::stats::{ms, summarize};
use tether_bench::{gateway, loopback, sysenv};
use tether_testkit::{ensure_user, Sshd};

/// Targets of the issue.
const TARGET_GROWTH_MIB: f64 = 64.0;
const TARGET_CLOSED_SHARE: f64 = 0.90;
/// "Within seconds": every probe in within this.
const TARGET_USER_IN: Duration = Duration::from_secs(5);
/// One probe keeps retrying for this long.
const PROBE_DEADLINE: Duration = Duration::from_secs(20);
const PING_EVERY: Duration = Duration::from_millis(250);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
const CIPHER: &str = "aes128-gcm@openssh.com";

#[derive(Parser, Debug, Clone)]
#[command(about = "tether under a pre-authentication flood, beside plain OpenSSH sshd")]
struct Args {
    /// Smoke run: 200 silent connections, 30 slowloris requests, 15 s window.
    #[arg(long)]
    quick: bool,
    /// Silent TCP connections to the SSH port.
    #[arg(long, default_value_t = 2000)]
    silent: usize,
    /// Slowloris requests to the web port (tether only).
    #[arg(long, default_value_t = 300)]
    slowloris: usize,
    /// Seconds the flood is held after the last connection is established; "closed
    /// within" counts closes within this many seconds of a connection's own start.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Seconds between a slowloris request's header bytes.
    #[arg(long, default_value_t = 5)]
    drip: u64,
    /// Seconds between the user's probes during the flood.
    #[arg(long, default_value_t = 10)]
    probe_every: u64,
    /// Skip the OpenSSH sshd half.
    #[arg(long)]
    no_sshd: bool,
}

/// One probe: did the user get in, how long it took (retries included), how many
/// attempts failed first, the last error.
#[derive(Debug, Clone)]
struct Probe {
    took: Option<Duration>,
    failed_attempts: usize,
    last_error: Option<String>,
}

/// One side's figures (tether or sshd).
#[derive(Debug, Default)]
struct Side {
    /// Memory before / peak / after, KiB (tether: RSS; sshd: PSS summed over its
    /// processes).
    mem_before: u64,
    mem_peak: u64,
    mem_after: u64,
    procs_peak: usize,
    fds_peak: Option<usize>,
    baseline: Vec<Duration>,
    probes: Vec<Probe>,
    silent: Tally,
    silent_setup: Duration,
    slowloris: Option<Tally>,
    pings: Vec<Result<Duration, String>>,
    log_note: Option<String>,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.silent = 200;
        args.slowloris = 30;
        args.window = 15;
        args.probe_every = 5;
    }
    match main_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flood benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(args: &Args) -> Result<()> {
    ensure!(
        args.window > 0 && args.probe_every > 0 && args.drip > 0,
        "durations must be positive"
    );
    ensure!(
        Path::new(openssh::SSH).is_file() && Path::new(tether_testkit::SSHD).is_file(),
        "needs OpenSSH: {} and {}",
        openssh::SSH,
        tether_testkit::SSHD
    );
    let raised = sysenv::raise_nofile();
    let bin = gateway::tether_binary()?;
    print_header(args, &bin, &raised);
    let needed = (args.silent + args.slowloris + 200) as u64;
    ensure!(
        raised.after.soft >= needed,
        "needs {needed} descriptors (ulimit -n), the limit is {}",
        raised.after.soft
    );

    ensure_user(LOGIN);
    let client = ClientKey::generate()?;
    let ca = UserCa::generate()?;
    // Plain OpenSSH with its defaults (MaxStartups, LoginGraceTime): the route's
    // upstream, and the comparison when flooded itself.
    let sshd = Sshd::start_with(
        &ca.pub_path,
        &[&format!(
            "AuthorizedKeysFile {}",
            client.authorized_keys.display()
        )],
    );
    let sshd_pid = rig::sshd_pid(&sshd)?;
    let rig = Rig::start(&bin, &ca, &sshd.url(), "")?;
    rig::bind_key_blocking(&rig.gw, &client.key)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let outcome = rt.block_on(async {
        let work = async {
            let tether_args = ssh_args(
                &client,
                rig.gw.ssh_port,
                &format!("{LOGIN}@{ROUTE}@127.0.0.1"),
            );
            let tether = run_side(
                args,
                "tether",
                rig.ssh_addr(),
                Some(SocketAddr::from(([127, 0, 0, 1], rig.gw.http_port))),
                tether_args,
                Mem::Rss(rig.pid()),
                stop.clone(),
            )
            .await
            .context("flooding tether")?;
            let sshd_side = if args.no_sshd {
                None
            } else {
                let direct = ssh_args(&client, sshd.port, &format!("{LOGIN}@127.0.0.1"));
                Some(
                    run_side(
                        args,
                        "sshd",
                        SocketAddr::from(([127, 0, 0, 1], sshd.port)),
                        None,
                        direct,
                        Mem::SshdTree(sshd_pid),
                        stop.clone(),
                    )
                    .await
                    .context("flooding sshd")?,
                )
            };
            anyhow::Ok((tether, sshd_side))
        };
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => {
                stop.store(true, Ordering::Relaxed);
                anyhow::bail!("interrupted")
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    rt.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok((mut tether, sshd_side)) => {
            tether.log_note = log_note(&rig.gw.process.logs());
            print_report(args, &tether, sshd_side.as_ref());
            Ok(())
        }
        Err(e) => {
            eprintln!("--- last tether log lines ---\n{}", rig.log_tail(40));
            Err(e)
        }
    }
}

/// A line about what tether logged of the flood (shedding, accept errors), if anything.
fn log_note(logs: &str) -> Option<String> {
    let count = |needle: &str| logs.lines().filter(|l| l.contains(needle)).count();
    let notes: Vec<String> = [
        "Too many open files",
        "shed",
        "timed out",
        "accept failed",
        "refused",
    ]
    .iter()
    .map(|n| (n, count(n)))
    .filter(|(_, c)| *c > 0)
    .map(|(n, c)| format!("{c} lines with {n:?}"))
    .collect();
    (!notes.is_empty()).then(|| notes.join(", "))
}

fn ssh_args(client: &ClientKey, port: u16, target: &str) -> Vec<String> {
    let mut args = openssh::common_options(&client.path, CIPHER);
    args.extend([
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-p".into(),
        port.to_string(),
        target.to_string(),
    ]);
    args
}

/// Whose memory to read.
#[derive(Clone, Copy)]
enum Mem {
    /// A process's RSS.
    Rss(u32),
    /// PSS summed over an sshd listener and all its children.
    SshdTree(u32),
}

impl Mem {
    fn read(self) -> Option<u64> {
        match self {
            Mem::Rss(pid) => memory::rss_kib(pid),
            Mem::SshdTree(pid) => Some(memory::tree_pss_kib(pid)),
        }
    }

    fn procs(self) -> usize {
        match self {
            Mem::Rss(_) => 1,
            Mem::SshdTree(pid) => memory::tree(pid).len(),
        }
    }
}

/// Probes the user's way in until it works or [`PROBE_DEADLINE`] passes.
fn probe(args: &[String]) -> Probe {
    let started = Instant::now();
    let mut failed = 0;
    let mut last = None;
    loop {
        let left = PROBE_DEADLINE.saturating_sub(started.elapsed());
        match openssh::time_to_output(args, "echo ok", left.min(Duration::from_secs(15))) {
            Ok(_) => {
                return Probe {
                    took: Some(started.elapsed()),
                    failed_attempts: failed,
                    last_error: last,
                }
            }
            Err(e) => {
                failed += 1;
                last = Some(format!("{e:#}"));
            }
        }
        if started.elapsed() + Duration::from_millis(200) >= PROBE_DEADLINE {
            return Probe {
                took: None,
                failed_attempts: failed,
                last_error: last,
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn run_side(
    args: &Args,
    name: &str,
    ssh: SocketAddr,
    web: Option<SocketAddr>,
    probe_args: Vec<String>,
    mem: Mem,
    stop: Arc<AtomicBool>,
) -> Result<Side> {
    let mut side = Side::default();
    println!();
    println!("[{name}] baseline: 3 probes without load");
    for _ in 0..3 {
        let a = probe_args.clone();
        let p = tokio::task::spawn_blocking(move || probe(&a)).await?;
        let took = p.took.with_context(|| {
            format!(
                "{name}: the user cannot get in even without load: {:?}",
                p.last_error
            )
        })?;
        side.baseline.push(took);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    side.mem_before = mem.read().unwrap_or(0);
    let pid = match mem {
        Mem::Rss(pid) => {
            memory::reset_peak(pid);
            Some(pid)
        }
        Mem::SshdTree(_) => None,
    };
    let sampler = PeakSampler::start(
        match mem {
            Mem::Rss(_) => Duration::from_millis(100),
            Mem::SshdTree(_) => Duration::from_millis(500),
        },
        move || mem.read(),
    );
    let procs_peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fds_peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter_stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (procs_peak, fds_peak) = (procs_peak.clone(), fds_peak.clone());
        let (flag, stop) = (counter_stop.clone(), stop.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                procs_peak.fetch_max(mem.procs(), Ordering::Relaxed);
                if let Some(fds) = pid.and_then(sysenv::open_fds) {
                    fds_peak.fetch_max(fds, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    println!(
        "[{name}] flood: {} silent SSH connections{} from {}",
        args.silent,
        match web {
            Some(_) => format!(" + {} slowloris HTTP requests", args.slowloris),
            None => String::new(),
        },
        loopback::describe()
    );
    let silent = Flood::start(ssh, args.silent, Kind::Silent, 0);
    let slow = web.map(|w| {
        Flood::start(
            w,
            args.slowloris,
            Kind::Slowloris {
                drip: Duration::from_secs(args.drip),
            },
            args.silent,
        )
    });

    // /ping, four times a second, from the first connect to the end of the window.
    let ping_stop = Arc::new(AtomicBool::new(false));
    let pinger = web.map(|w| {
        let ping_stop = ping_stop.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            let mut tick = tokio::time::interval(PING_EVERY);
            while !ping_stop.load(Ordering::Relaxed) {
                tick.tick().await;
                out.push(
                    flood::ping(w, PING_TIMEOUT)
                        .await
                        .map_err(|e| format!("{e:#}")),
                );
            }
            out
        })
    });

    side.silent_setup = silent.established(Duration::from_secs(60)).await;
    if let Some(s) = &slow {
        s.established(Duration::from_secs(60)).await;
    }
    let window = Duration::from_secs(args.window);
    let t = flood::tally(&silent.snapshot(), window);
    println!(
        "[{name}] {} of {} established in {:.1} s ({} failed to connect, {} already closed by the server); holding for {} s",
        t.established,
        t.total,
        side.silent_setup.as_secs_f64(),
        t.connect_failed,
        t.established - t.open,
        args.window
    );

    // The user's probes, one after another, every `probe_every` seconds.
    let window_end = Instant::now() + window;
    let every = Duration::from_secs(args.probe_every);
    let pa = probe_args.clone();
    let probe_stop = stop.clone();
    let probes = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut next = Instant::now() + Duration::from_secs(2).min(every);
        while next < window_end && !probe_stop.load(Ordering::Relaxed) {
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            out.push(probe(&pa));
            next += every;
        }
        out
    });
    tokio::time::sleep_until(window_end.into()).await;
    side.probes = probes.await?;

    side.silent = flood::tally(&silent.snapshot(), window);
    side.slowloris = slow.as_ref().map(|s| flood::tally(&s.snapshot(), window));
    ping_stop.store(true, Ordering::Relaxed);
    if let Some(p) = pinger {
        side.pings = p.await?;
    }
    side.mem_peak = sampler.finish();
    if let Some(pid) = pid {
        side.mem_peak = side.mem_peak.max(memory::hwm_kib(pid).unwrap_or(0));
    }
    counter_stop.store(true, Ordering::Relaxed);
    let _ = counter.join();
    side.procs_peak = procs_peak.load(Ordering::Relaxed);
    side.fds_peak = pid.map(|_| fds_peak.load(Ordering::Relaxed));

    silent.stop().await;
    if let Some(s) = slow {
        s.stop().await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    side.mem_after = mem.read().unwrap_or(0);
    println!("[{name}] flood dropped; memory read 5 s later");
    Ok(side)
}

fn print_header(args: &Args, bin: &Path, raised: &sysenv::Raised) {
    println!("tether under a pre-authentication flood, beside plain OpenSSH sshd");
    println!("{}", tether_bench::machine::describe());
    println!(
        "gateway: {} ({}, repo at {}); sshd: {}",
        gateway::version(bin),
        bin.display(),
        rig::git_describe(),
        rig::openssh_version()
    );
    println!("limits: {}", raised.describe());
    println!("sysctls: {}", sysenv::describe_sysctls());
    println!(
        "plan: {} silent SSH connections + {} slowloris HTTP requests (a header byte every {} s) from {}, held {} s after the last is established;",
        args.silent,
        args.slowloris,
        args.drip,
        loopback::describe(),
        args.window
    );
    println!(
        "  meanwhile from 127.0.0.1: `ssh {LOGIN}@{ROUTE}@127.0.0.1 echo ok` with a bound key every {} s (time to output, retried for up to {} s), GET /ping every {} ms",
        args.probe_every,
        PROBE_DEADLINE.as_secs(),
        PING_EVERY.as_millis()
    );
    if !args.no_sshd {
        println!(
            "  then the same silent flood and probes (`ssh {LOGIN}@127.0.0.1 echo ok`) against OpenSSH sshd with its defaults (MaxStartups 10:30:100, LoginGraceTime 120)"
        );
    }
    println!(
        "  memory: tether RSS (VmRSS, peak from VmHWM and 100 ms samples); sshd: PSS summed over the listener and all its children (smaps_rollup)"
    );
    println!("load average at the start: {}", rig::loadavg());
}

fn pct(n: usize, of: usize) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / of as f64)
    }
}

fn probes_line(p: &[Probe]) -> String {
    let ins: Vec<Duration> = p.iter().filter_map(|p| p.took).collect();
    let retried = p.iter().filter(|p| p.failed_attempts > 0).count();
    let mut s = format!("{}/{} in", ins.len(), p.len());
    if let Some(sum) = summarize(&ins) {
        s.push_str(&format!(
            ", median {} ms, max {} ms",
            ms(sum.p50),
            ms(sum.max)
        ));
    }
    if retried > 0 {
        s.push_str(&format!(", {retried} needed retries"));
    }
    s
}

fn median(d: &[Duration]) -> Option<Duration> {
    summarize(d).map(|s| s.p50)
}

fn row(label: &str, tether: &str, sshd: &str) {
    println!("  {label:<44} {tether:>28} {sshd:>28}");
}

fn print_report(args: &Args, t: &Side, s: Option<&Side>) {
    let dash = || "-".to_string();
    let sv = |f: &dyn Fn(&Side) -> String| s.map_or_else(dash, f);
    println!();
    println!(
        "results (window {} s; memory MiB: tether RSS, sshd PSS over all its processes)",
        args.window
    );
    row("", "tether", "OpenSSH sshd");
    let established = |x: &Side| {
        format!(
            "{}/{} in {:.1} s",
            x.silent.established,
            x.silent.total,
            x.silent_setup.as_secs_f64()
        )
    };
    row(
        "silent SSH connections established",
        &established(t),
        &sv(&|x| established(x)),
    );
    let closed = |x: &Side| {
        format!(
            "{} ({})",
            x.silent.closed_within,
            pct(x.silent.closed_within, x.silent.established)
        )
    };
    row(
        &format!("  closed by the server within {} s", args.window),
        &closed(t),
        &sv(&|x| closed(x)),
    );
    row(
        "    of which at once (< 1 s: refused)",
        &t.silent.closed_at_once.to_string(),
        &sv(&|x| x.silent.closed_at_once.to_string()),
    );
    row(
        "  still open at the end of the window",
        &t.silent.open.to_string(),
        &sv(&|x| x.silent.open.to_string()),
    );
    if let Some(sl) = &t.slowloris {
        row(
            "slowloris requests established",
            &format!("{}/{}", sl.established, sl.total),
            "-",
        );
        row(
            &format!("  closed by the server within {} s", args.window),
            &format!(
                "{} ({})",
                sl.closed_within,
                pct(sl.closed_within, sl.established)
            ),
            "-",
        );
        row(
            "    with a response (e.g. 408)",
            &sl.closed_with_bytes.to_string(),
            "-",
        );
    }
    let base = |x: &Side| median(&x.baseline).map_or_else(dash, |m| format!("{} ms", ms(m)));
    row(
        "bound-key user, no load (median of 3)",
        &base(t),
        &sv(&|x| base(x)),
    );
    row(
        "bound-key user during the flood",
        &probes_line(&t.probes),
        &sv(&|x| probes_line(&x.probes)),
    );
    let during = |x: &Side| {
        let ins: Vec<Duration> = x.probes.iter().filter_map(|p| p.took).collect();
        match (median(&ins), median(&x.baseline)) {
            (Some(d), Some(b)) if ins.len() == x.probes.len() => {
                format!("{:.2}x", d.as_secs_f64() / b.as_secs_f64())
            }
            _ => "locked out".into(),
        }
    };
    row(
        "  during / no load (medians)",
        &during(t),
        &sv(&|x| during(x)),
    );
    if !t.pings.is_empty() {
        let ok: Vec<Duration> = t
            .pings
            .iter()
            .filter_map(|p| p.as_ref().ok().copied())
            .collect();
        let failed = t.pings.len() - ok.len();
        let line = match summarize(&ok) {
            Some(sum) => format!(
                "{}/{} ok, p50 {} p99 {} max {} ms",
                ok.len(),
                t.pings.len(),
                ms(sum.p50),
                ms(sum.p99),
                ms(sum.max)
            ),
            None => format!("0/{} ok", t.pings.len()),
        };
        row("GET /ping during the flood", &line, "-");
        if failed > 0 {
            if let Some(Err(e)) = t.pings.iter().find(|p| p.is_err()) {
                println!("    (a failed /ping: {e})");
            }
        }
    }
    let mem = |x: &Side| {
        format!(
            "{} / {} / {}",
            memory::mib(x.mem_before),
            memory::mib(x.mem_peak),
            memory::mib(x.mem_after)
        )
    };
    row(
        "memory before / peak / after, MiB",
        &mem(t),
        &sv(&|x| mem(x)),
    );
    let growth = |x: &Side| format!("{} MiB", memory::delta_mib(x.mem_peak, x.mem_before));
    row("  growth at peak", &growth(t), &sv(&|x| growth(x)));
    row(
        "processes at peak / descriptors at peak",
        &format!("1 / {}", t.fds_peak.map_or_else(dash, |f| f.to_string())),
        &sv(&|x| format!("{} / -", x.procs_peak)),
    );
    for (who, side) in [("tether", Some(t)), ("sshd", s)] {
        let Some(side) = side else { continue };
        if let Some(p) = side.probes.iter().find(|p| p.took.is_none()) {
            println!(
                "  {who}: a probe that did not get in ({} attempts): {}",
                p.failed_attempts,
                p.last_error.clone().unwrap_or_default()
            );
        }
    }
    if let Some(note) = &t.log_note {
        println!("  tether's log: {note}");
    }

    let growth_mib = (t.mem_peak as f64 - t.mem_before as f64) / 1024.0;
    let share = if t.silent.established == 0 {
        0.0
    } else {
        t.silent.closed_within as f64 / t.silent.established as f64
    };
    let all_in = !t.probes.is_empty()
        && t.probes
            .iter()
            .all(|p| p.took.is_some_and(|d| d <= TARGET_USER_IN));
    let pings_ok = !t.pings.is_empty() && t.pings.iter().all(|p| p.is_ok());
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!("targets (issue 11):");
    println!(
        "  tether RSS growth <= {TARGET_GROWTH_MIB} MiB: {growth_mib:.1} MiB ({})",
        met(growth_mib <= TARGET_GROWTH_MIB)
    );
    println!(
        "  tether closes >= {:.0}% of the silent connections within {} s: {:.1}% ({})",
        TARGET_CLOSED_SHARE * 100.0,
        args.window,
        share * 100.0,
        met(share >= TARGET_CLOSED_SHARE && args.window <= 60)
    );
    println!(
        "  the bound-key user gets in within {} s on every probe: {} ({})",
        TARGET_USER_IN.as_secs(),
        probes_line(&t.probes),
        met(all_in)
    );
    println!("  /ping answers throughout: {}", met(pings_ok));
    if let Some(s) = s {
        let sshd_growth = (s.mem_peak as f64 - s.mem_before as f64) / 1024.0;
        println!(
            "  beside OpenSSH: memory growth tether/sshd {}, silent connections closed tether {} vs sshd {}",
            if sshd_growth > 0.0 {
                format!("{:.2}", growth_mib / sshd_growth)
            } else {
                "-".into()
            },
            pct(t.silent.closed_within, t.silent.established),
            pct(s.silent.closed_within, s.silent.established)
        );
    }
    println!("load average at the end: {}", rig::loadavg());
    println!("(informational: the exit status does not depend on the figures)");
}
