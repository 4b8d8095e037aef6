//! Idle sessions (issue 11): hold N concurrent idle sessions through tether — each a
//! real relayed session: an in-process russh client logs in with a bound key as
//! `LOGIN@ROUTE`, tether connects to the upstream with a certificate from its user CA,
//! and the client's session channel runs `exec sleep 86400`, which the upstream
//! accepts and leaves silent — and report tether's RSS per idle session
//! ((RSS with N held, after `--settle` s − RSS before) / N) and whether all N are
//! still held at the end (client connection open and answering a keepalive, the
//! upstream's channel open, tether's own gauge). The upstream is a light russh server
//! in a separate process that trusts the CA (`--upstream light`, the default: a real
//! sshd per session does not fit 10,000 times on this machine) or a real sshd
//! (`--upstream sshd`). For comparison, plain OpenSSH sshd holding `--sshd-sessions`
//! (300) idle sessions directly: the PSS of its per-session processes.
//!
//! `cargo run --release -p tether-bench --bin idle [-- --quick | --sessions 1000]`
//!
//! Needs root (a login user is created, sshd runs on loopback) and OpenSSH; tether
//! needs two descriptors per session (client and upstream sockets) plus its own, so
//! N = 10,000 needs `ulimit -n` above 20,100 (the benchmark raises the soft limit to
//! the hard one; when tether's limit is too low, N is lowered to what fits and the
//! report says so — `--no-clamp` tries anyway). Informational: exits 0 whatever the
//! figures, non-zero only when the run fails.

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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use futures::stream::{self, StreamExt};
use russh::keys::PrivateKey;
use tether_bench::memory::{self, PeakSampler};
use tether_bench::openssh::{self, ClientKey};
use tether_bench::rig::{self, Rig, UserCa, LOGIN, ROUTE};
use tether_bench::sshc::{Conn, Dialer};
use tether_bench::upstream::{self, LightUpstream};
use tether_bench::{gateway, loopback, sysenv};
use tether_testkit::{ensure_user, Sshd};

/// The target: at most this much tether RSS per idle session.
const TARGET_KIB_PER_SESSION: f64 = 64.0;
/// The idle command.
const IDLE_COMMAND: &str = "sleep 86400";
/// One session's set-up (connect, log in, start the command).
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Descriptors tether needs beyond two per session (listeners, store, runtime).
const FD_MARGIN: u64 = 64;
/// sshd options for holding many sessions: no random early drop while they connect.
const SSHD_MANY: [&str; 2] = ["MaxStartups 1000:30:2000", "MaxSessions 10"];

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum UpstreamKind {
    /// The benchmark's russh server in a separate process (trusts tether's CA).
    Light,
    /// A real OpenSSH sshd (a process pair per session on the upstream side).
    Sshd,
}

#[derive(Parser, Debug)]
#[command(about = "tether RSS per idle session, beside OpenSSH sshd's PSS per session")]
struct Args {
    /// Smoke run: 100 sessions through tether, 30 through sshd, 3 s settle.
    #[arg(long)]
    quick: bool,
    /// Session counts, each run on a fresh tether (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 10000])]
    sessions: Vec<usize>,
    /// Idle sessions held directly by OpenSSH sshd for comparison (0: skip).
    #[arg(long, default_value_t = 300)]
    sshd_sessions: usize,
    /// Seconds to wait with all sessions held before reading the memory.
    #[arg(long, default_value_t = 15)]
    settle: u64,
    /// Sessions being set up at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// tether's upstream.
    #[arg(long, value_enum, default_value_t = UpstreamKind::Light)]
    upstream: UpstreamKind,
    /// Run the requested N even when tether's descriptor limit cannot hold it.
    #[arg(long)]
    no_clamp: bool,
}

/// Sessions a set-up attempt produced, and its failures.
struct Opened {
    conns: Vec<Conn>,
    failures: usize,
    first_error: Option<String>,
    took: Duration,
}

/// Opens `n` idle sessions through `dialer` (`concurrency` at once), the `i`-th from
/// [`loopback::source`]`(i)`.
async fn open_sessions(
    dialer: &Dialer,
    key: &Arc<PrivateKey>,
    n: usize,
    concurrency: usize,
) -> Opened {
    let started = Instant::now();
    let results: Vec<Result<Conn>> = stream::iter(0..n)
        .map(|i| {
            let (dialer, key) = (dialer.clone(), key.clone());
            async move {
                let one = async {
                    let conn = dialer.connect_bound(key, Some(loopback::source(i))).await?;
                    // The channel object is not needed: the session stays open
                    // until the connection closes.
                    drop(conn.exec_start(IDLE_COMMAND).await?);
                    anyhow::Ok(conn)
                };
                tokio::time::timeout(SESSION_TIMEOUT, one)
                    .await
                    .unwrap_or_else(|_| bail!("timed out after {SESSION_TIMEOUT:?}"))
                    .with_context(|| format!("session {i}"))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut conns = Vec::with_capacity(n);
    let mut failures = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(c) => conns.push(c),
            Err(e) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    Opened {
        conns,
        failures,
        first_error,
        took: started.elapsed(),
    }
}

/// How many of `conns` are open and answer a keepalive within 10 s.
async fn alive(conns: &[Conn]) -> usize {
    stream::iter(conns)
        .map(|c| async move {
            let ping = tokio::time::timeout(Duration::from_secs(10), c.handle.send_ping()).await;
            matches!(ping, Ok(Ok(()))) && !c.is_closed() && !c.handle.is_closed()
        })
        .buffer_unordered(256)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

async fn close_all(conns: Vec<Conn>) {
    stream::iter(conns)
        .for_each_concurrent(256, |c| async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
        })
        .await;
}

/// One tether run's figures.
#[derive(Debug, Default)]
struct TetherRun {
    requested: usize,
    ran: usize,
    clamp_note: Option<String>,
    opened: usize,
    failures: usize,
    first_error: Option<String>,
    ramp: Duration,
    held: usize,
    upstream_channels: Option<u64>,
    gauge_open: Option<f64>,
    rss_before: u64,
    rss_ramped: u64,
    rss_settled: u64,
    peak: u64,
    fds_before: usize,
    fds_held: usize,
    threads_held: u64,
    fd_limit: u64,
    upstream_kib_per_conn: Option<f64>,
    log_note: Option<String>,
}

impl TetherRun {
    fn kib_per_session(&self) -> Option<f64> {
        (self.held > 0)
            .then(|| (self.rss_settled as f64 - self.rss_before as f64) / self.held as f64)
    }
}

/// The sshd comparison's figures.
#[derive(Debug, Default)]
struct SshdRun {
    requested: usize,
    held: usize,
    failures: usize,
    first_error: Option<String>,
    ramp: Duration,
    /// PSS summed over the per-session sshd processes, and their count.
    sshd_pss: u64,
    sshd_procs: usize,
    /// PSS summed over every process of the sessions (sshd, the shell, sleep).
    all_pss: u64,
    all_procs: usize,
}

impl SshdRun {
    fn kib_per_session(&self) -> Option<f64> {
        (self.held > 0).then(|| self.sshd_pss as f64 / self.held as f64)
    }
}

/// tether's upstream for a run.
enum Up {
    Light(LightUpstream),
    Sshd(Sshd),
}

impl Up {
    fn url(&self) -> String {
        match self {
            Up::Light(u) => u.url(),
            Up::Sshd(s) => s.url(),
        }
    }
}

fn main() -> ExitCode {
    upstream::serve_if_asked();
    let mut args = Args::parse();
    if args.quick {
        args.sessions = vec![100];
        args.sshd_sessions = 30;
        args.settle = 3;
    }
    match main_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("idle benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(args: &Args) -> Result<()> {
    ensure!(
        !args.sessions.is_empty(),
        "--sessions needs at least one count"
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
    let most = args
        .sessions
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(args.sshd_sessions) as u64;
    ensure!(
        raised.after.soft > most + FD_MARGIN,
        "this process needs about {} descriptors for its clients; the limit is {}",
        most + FD_MARGIN,
        raised.after.soft
    );
    ensure_user(LOGIN);
    let client = ClientKey::generate()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let work = async {
            let mut sshd_run = None;
            if args.sshd_sessions > 0 {
                sshd_run = Some(run_sshd(args, &client).await.context("sshd comparison")?);
            }
            let mut runs = Vec::new();
            for &n in &args.sessions {
                runs.push(
                    run_tether(args, &bin, &client, n)
                        .await
                        .with_context(|| format!("tether with {n} sessions"))?,
                );
            }
            anyhow::Ok((runs, sshd_run))
        };
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    let (runs, sshd_run) = outcome?;
    print_report(args, &runs, sshd_run.as_ref());
    Ok(())
}

async fn run_sshd(args: &Args, client: &ClientKey) -> Result<SshdRun> {
    let n = args.sshd_sessions;
    println!();
    println!("[sshd] {n} idle sessions directly to OpenSSH sshd (`exec {IDLE_COMMAND}`)");
    let ca = UserCa::generate()?;
    let authorized = format!("AuthorizedKeysFile {}", client.authorized_keys.display());
    let mut cfg = vec![authorized.as_str()];
    cfg.extend(SSHD_MANY);
    let sshd = Sshd::start_with(&ca.pub_path, &cfg);
    let pid = rig::sshd_pid(&sshd)?;
    let dialer = Dialer::for_load(SocketAddr::from(([127, 0, 0, 1], sshd.port)), LOGIN);
    let key = Arc::new(client.key.clone());
    // sshd forks and execs per connection: a few at a time.
    let opened = open_sessions(&dialer, &key, n, args.concurrency.min(8)).await;
    println!(
        "[sshd] {} held, {} failed, set up in {:.1} s; settling {} s",
        opened.conns.len(),
        opened.failures,
        opened.took.as_secs_f64(),
        args.settle
    );
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let held = alive(&opened.conns).await;
    let (sshd_pss, sshd_procs) = memory::descendants_pss_kib(pid, Some("sshd"));
    let (all_pss, all_procs) = memory::descendants_pss_kib(pid, None);
    let run = SshdRun {
        requested: n,
        held,
        failures: opened.failures,
        first_error: opened.first_error,
        ramp: opened.took,
        sshd_pss,
        sshd_procs,
        all_pss,
        all_procs,
    };
    close_all(opened.conns).await;
    drop(sshd);
    Ok(run)
}

async fn run_tether(args: &Args, bin: &Path, client: &ClientKey, n: usize) -> Result<TetherRun> {
    println!();
    println!(
        "[tether N={n}] fresh gateway, upstream: {}",
        match args.upstream {
            UpstreamKind::Light => "light russh server (separate process)",
            UpstreamKind::Sshd => "OpenSSH sshd",
        }
    );
    let ca = UserCa::generate()?;
    let up = match args.upstream {
        UpstreamKind::Light => Up::Light(LightUpstream::start(&ca.pub_path)?),
        UpstreamKind::Sshd => {
            let mut cfg = vec![];
            cfg.extend(SSHD_MANY);
            Up::Sshd(Sshd::start_with(&ca.pub_path, &cfg))
        }
    };
    let rig = Rig::start(bin, &ca, &up.url(), "")?;
    rig::bind_key(&rig.gw, &client.key).await?;
    let pid = rig.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut run = TetherRun {
        requested: n,
        rss_before: memory::rss_kib(pid).unwrap_or(0),
        fds_before: sysenv::open_fds(pid).unwrap_or(0),
        fd_limit: sysenv::process_fd_limit(pid).unwrap_or(0),
        ..TetherRun::default()
    };
    let fits = (run
        .fd_limit
        .saturating_sub(run.fds_before as u64 + FD_MARGIN)
        / 2) as usize;
    run.ran = n;
    if n > fits {
        let note = format!(
            "tether's descriptor limit is {} (ulimit -n; the hard limit here cannot be raised): {} sessions need about {}; ",
            run.fd_limit,
            n,
            2 * n as u64 + run.fds_before as u64 + FD_MARGIN
        );
        if args.no_clamp {
            run.clamp_note = Some(format!("{note}running {n} anyway (--no-clamp)"));
        } else {
            run.ran = fits;
            run.clamp_note = Some(format!(
                "{note}ran {fits}, what fits (--no-clamp to try {n})"
            ));
        }
        println!(
            "[tether N={n}] {}",
            run.clamp_note.as_deref().unwrap_or_default()
        );
    }
    memory::reset_peak(pid);
    let sampler = PeakSampler::start(Duration::from_millis(200), move || memory::rss_kib(pid));
    let dialer = Dialer::for_load(rig.ssh_addr(), &format!("{LOGIN}@{ROUTE}"));
    let key = Arc::new(client.key.clone());
    let opened = open_sessions(&dialer, &key, run.ran, args.concurrency).await;
    run.opened = opened.conns.len();
    run.failures = opened.failures;
    run.first_error = opened.first_error;
    run.ramp = opened.took;
    run.rss_ramped = memory::rss_kib(pid).unwrap_or(0);
    println!(
        "[tether N={n}] {} open, {} failed, set up in {:.1} s ({:.0}/s); settling {} s",
        run.opened,
        run.failures,
        run.ramp.as_secs_f64(),
        run.opened as f64 / run.ramp.as_secs_f64().max(1e-9),
        args.settle
    );
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    run.rss_settled = memory::rss_kib(pid).unwrap_or(0);
    run.peak = sampler.finish().max(memory::hwm_kib(pid).unwrap_or(0));
    run.fds_held = sysenv::open_fds(pid).unwrap_or(0);
    run.threads_held = sysenv::threads(pid).unwrap_or(0);
    run.held = alive(&opened.conns).await;
    run.gauge_open = rig.metric("tether_ssh_connections_open");
    if let Up::Light(u) = &up {
        // The status file is rewritten every 500 ms.
        tokio::time::sleep(Duration::from_millis(600)).await;
        run.upstream_channels = Some(u.status().channels);
        let conns = u.status().connections.max(1);
        run.upstream_kib_per_conn = memory::rss_kib(u.pid()).map(|r| r as f64 / conns as f64);
    }
    let logs = rig.gw.process.logs();
    let errors = logs
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("Too many open files"))
        .count();
    if errors > 0 {
        run.log_note = Some(format!(
            "{errors} ERROR lines in tether's log, e.g. {}",
            logs.lines()
                .find(|l| l.contains("ERROR") || l.contains("Too many open files"))
                .unwrap_or_default()
                .trim()
        ));
    }
    println!(
        "[tether N={n}] {} of {} held at the end; closing",
        run.held, run.ran
    );
    close_all(opened.conns).await;
    drop(rig);
    drop(up);
    Ok(run)
}

fn print_header(args: &Args, bin: &Path, raised: &sysenv::Raised) {
    println!("tether memory per idle session, beside OpenSSH sshd");
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
        "plan: N = {:?} idle sessions through tether (a fresh gateway each), clients: in-process russh on 2 threads from {}, {} set up at once;",
        args.sessions,
        loopback::describe(),
        args.concurrency
    );
    println!(
        "  each: bound key, `{LOGIN}@{ROUTE}`, tether -> {} upstream, one session channel with `exec {IDLE_COMMAND}` (silent); then {} s settle",
        match args.upstream {
            UpstreamKind::Light => "light russh (separate process, trusts tether's user CA)",
            UpstreamKind::Sshd => "OpenSSH sshd",
        },
        args.settle
    );
    println!(
        "  tether KiB/session = (VmRSS with N held after the settle - VmRSS before) / N held; held = open and answering a keepalive at the end"
    );
    if args.sshd_sessions > 0 {
        println!(
            "  OpenSSH: {} idle sessions directly to sshd (same command); KiB/session = sum of smaps_rollup Pss over the per-session sshd processes / sessions",
            args.sshd_sessions
        );
    }
    println!("load average at the start: {}", rig::loadavg());
}

fn cell(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

fn print_report(args: &Args, runs: &[TetherRun], s: Option<&SshdRun>) {
    println!();
    let mut head = format!("  {:<46}", "");
    for r in runs {
        head.push_str(&format!(" {:>16}", format!("tether N={}", r.requested)));
    }
    if let Some(s) = s {
        head.push_str(&format!(" {:>16}", format!("sshd N={}", s.requested)));
    }
    println!("results");
    println!("{head}");
    let line = |label: &str, f: &dyn Fn(&TetherRun) -> String, g: &dyn Fn(&SshdRun) -> String| {
        let mut l = format!("  {label:<46}");
        for r in runs {
            l.push_str(&format!(" {:>16}", f(r)));
        }
        if let Some(s) = s {
            l.push_str(&format!(" {:>16}", g(s)));
        }
        println!("{l}");
    };
    let dash = |_: &SshdRun| "-".to_string();
    let tdash = |_: &TetherRun| "-".to_string();
    line(
        "sessions run / held at the end",
        &|r| format!("{}/{}", r.ran, r.held),
        &|s| format!("{}/{}", s.requested, s.held),
    );
    line("set-up failures", &|r| r.failures.to_string(), &|s| {
        s.failures.to_string()
    });
    line(
        "set-up time, s",
        &|r| format!("{:.1}", r.ramp.as_secs_f64()),
        &|s| format!("{:.1}", s.ramp.as_secs_f64()),
    );
    line(
        "tether RSS before, MiB",
        &|r| memory::mib(r.rss_before),
        &dash,
    );
    line(
        "tether RSS just after set-up, MiB",
        &|r| memory::mib(r.rss_ramped),
        &dash,
    );
    line(
        "tether RSS held, after the settle, MiB",
        &|r| memory::mib(r.rss_settled),
        &dash,
    );
    line(
        "tether peak RSS (VmHWM), MiB",
        &|r| memory::mib(r.peak),
        &dash,
    );
    line(
        "KiB per idle session (tether RSS / sshd PSS)",
        &|r| cell(r.kib_per_session().map(|k| format!("{k:.0}"))),
        &|s| cell(s.kib_per_session().map(|k| format!("{k:.0}"))),
    );
    line(
        "  sshd: incl. the sessions' shell/sleep, KiB",
        &tdash,
        &|s| cell((s.held > 0).then(|| format!("{:.0}", s.all_pss as f64 / s.held as f64))),
    );
    line("  sshd: processes (sshd / all)", &tdash, &|s| {
        format!("{} / {}", s.sshd_procs, s.all_procs)
    });
    line(
        "tether descriptors before / held",
        &|r| format!("{} / {}", r.fds_before, r.fds_held),
        &dash,
    );
    line(
        "tether descriptor limit",
        &|r| r.fd_limit.to_string(),
        &dash,
    );
    line(
        "tether threads held",
        &|r| r.threads_held.to_string(),
        &dash,
    );
    line(
        "tether_ssh_connections_open (tether's gauge)",
        &|r| cell(r.gauge_open.map(|g| format!("{g:.0}"))),
        &dash,
    );
    line(
        "upstream channels open (light upstream)",
        &|r| cell(r.upstream_channels.map(|c| c.to_string())),
        &dash,
    );
    line(
        "light upstream RSS per connection, KiB",
        &|r| cell(r.upstream_kib_per_conn.map(|k| format!("{k:.0}"))),
        &dash,
    );
    if let Some(s) = s {
        line(
            "sshd KiB per session / tether KiB per session",
            &|r| match (s.kib_per_session(), r.kib_per_session()) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            },
            &dash,
        );
    }
    for r in runs {
        if let Some(note) = &r.clamp_note {
            println!("  N={}: {note}", r.requested);
        }
        if let Some(e) = &r.first_error {
            println!("  N={}: first set-up failure: {e}", r.requested);
        }
        if let Some(note) = &r.log_note {
            println!("  N={}: {note}", r.requested);
        }
    }
    if let Some(e) = s.and_then(|s| s.first_error.as_ref()) {
        println!("  sshd: first set-up failure: {e}");
    }
    println!();
    println!("targets (issue 11): <= {TARGET_KIB_PER_SESSION:.0} KiB of tether RSS per idle session; 10,000 sessions held");
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    for r in runs {
        let k = r.kib_per_session();
        println!(
            "  N={}: {} KiB per session ({}); {} of {} requested held ({})",
            r.requested,
            k.map_or_else(|| "-".into(), |k| format!("{k:.0}")),
            met(k.is_some_and(|k| k <= TARGET_KIB_PER_SESSION)),
            r.held,
            r.requested,
            met(r.held == r.requested)
        );
    }
    if !args.sessions.contains(&10_000) {
        println!("  (10,000 was not run: --sessions {:?})", args.sessions);
    }
    println!("load average at the end: {}", rig::loadavg());
    println!("(informational: the exit status does not depend on the figures)");
}
