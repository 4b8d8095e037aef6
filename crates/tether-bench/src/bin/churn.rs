//! Connection churn (issue 11): `--rate` (200) new connections per second for
//! `--duration` (60) seconds, open loop (started on schedule whether or not earlier
//! ones have finished), each from the next of 127.0.0.2–250: an in-process russh client
//! logs in with a bound key as `LOGIN@ROUTE` (tether connects the upstream before it
//! accepts), runs `echo ok` on a session channel, waits for the channel to close and
//! disconnects. Reported: errors by stage (zero expected), p50/p99/max from the start
//! of the TCP connect to authenticated, to the first output and to the channel's
//! close, the rate achieved, tether's CPU per 1,000 connections and its RSS before and
//! after (growth that stays is a leak). Then the same against plain OpenSSH sshd
//! directly (the key in `authorized_keys`), in the same run.
//!
//! `cargo run --release -p tether-bench --bin churn [-- --quick]`
//!
//! Needs root (a login user is created, sshd runs on loopback) and OpenSSH.
//! Informational: exits 0 whatever the figures, non-zero only when the run fails.

// A dev tool: stop with a message on any surprise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use russh::keys::PrivateKey;
use tether_bench::memory;
use tether_bench::openssh::{self, ClientKey};
use tether_bench::procstat::{self, TreeSampler};
use tether_bench::rig::{self, Rig, UserCa, LOGIN, ROUTE};
use tether_bench::sshc::Dialer;
use tether_bench::stats::{ms, summarize, Summary};
use tether_bench::upstream::{self, LightUpstream};
use tether_bench::{gateway, loopback, sysenv};
use tether_testkit::{ensure_user, Sshd};

/// The command each connection runs.
const COMMAND: &str = "echo ok";
/// sshd options: no random early drop of connections still authenticating (its
/// default MaxStartups 10:30:100 would count as errors here what is a tuning choice).
const SSHD_CHURN: &str = "MaxStartups 1000:30:2000";

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum UpstreamKind {
    /// The benchmark's russh server in a separate process (trusts tether's CA).
    Light,
    /// The same OpenSSH sshd the comparison uses.
    Sshd,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "tether under connection churn, beside plain OpenSSH sshd")]
struct Args {
    /// Smoke run: 50 connections per second for 10 s.
    #[arg(long)]
    quick: bool,
    /// New connections per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of churn.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// One connection's limit, connect to close, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Only authenticate (no session channel, no command).
    #[arg(long)]
    auth_only: bool,
    /// tether's route goes to this upstream.
    #[arg(long, value_enum, default_value_t = UpstreamKind::Light)]
    upstream: UpstreamKind,
    /// Skip the OpenSSH sshd half.
    #[arg(long)]
    no_sshd: bool,
}

/// One connection's outcome.
#[derive(Debug, Clone)]
enum Outcome {
    Ok {
        auth: Duration,
        output: Option<Duration>,
        done: Duration,
    },
    Failed {
        stage: &'static str,
        error: String,
    },
}

/// One side's figures.
#[derive(Debug, Default)]
struct Side {
    outcomes: Vec<Outcome>,
    wall: Duration,
    max_in_flight: usize,
    /// How far the scheduler fell behind at worst.
    max_lag: Duration,
    /// CPU seconds of the server (tether; sshd's processes) and of tether's upstream.
    server_cpu: f64,
    upstream_cpu: Option<f64>,
    /// tether only: RSS before, right after, and 10 s after the churn (KiB).
    rss: Option<(u64, u64, u64)>,
    fds: Option<(usize, usize)>,
    gauge_after: Option<f64>,
    log_errors: Option<String>,
}

impl Side {
    fn ok(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Ok { .. }))
            .count()
    }

    fn errors(&self) -> BTreeMap<&'static str, (usize, String)> {
        let mut m: BTreeMap<&'static str, (usize, String)> = BTreeMap::new();
        for o in &self.outcomes {
            if let Outcome::Failed { stage, error } = o {
                let e = m.entry(stage).or_insert((0, error.clone()));
                e.0 += 1;
            }
        }
        m
    }

    fn summary(&self, pick: impl Fn(&Outcome) -> Option<Duration>) -> Option<Summary> {
        let v: Vec<Duration> = self.outcomes.iter().filter_map(pick).collect();
        summarize(&v)
    }
}

fn main() -> ExitCode {
    upstream::serve_if_asked();
    let mut args = Args::parse();
    if args.quick {
        args.rate = 50;
        args.duration = 10;
    }
    match main_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("churn benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(args: &Args) -> Result<()> {
    ensure!(
        args.rate > 0 && args.duration > 0,
        "--rate and --duration must be positive"
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

    ensure_user(LOGIN);
    let client = ClientKey::generate()?;
    let ca = UserCa::generate()?;
    let sshd = Sshd::start_with(
        &ca.pub_path,
        &[
            &format!("AuthorizedKeysFile {}", client.authorized_keys.display()),
            SSHD_CHURN,
            "LogLevel INFO",
        ],
    );
    let sshd_pid = rig::sshd_pid(&sshd)?;
    let light = match args.upstream {
        UpstreamKind::Light => Some(LightUpstream::start(&ca.pub_path)?),
        UpstreamKind::Sshd => None,
    };
    let upstream_url = light
        .as_ref()
        .map_or_else(|| sshd.url(), LightUpstream::url);
    let rig = Rig::start(&bin, &ca, &upstream_url, "")?;
    rig::bind_key_blocking(&rig.gw, &client.key)?;
    let key = Arc::new(client.key.clone());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let work = async {
            let tck = procstat::ticks_per_second();
            // tether
            println!();
            println!(
                "[tether] {} connections/s for {} s",
                args.rate, args.duration
            );
            let pid = rig.pid();
            let dialer = Dialer::for_load(rig.ssh_addr(), &format!("{LOGIN}@{ROUTE}"));
            warm_up(&dialer, &key, args)
                .await
                .context("tether: a first connection")?;
            let rss_before = memory::rss_kib(pid).unwrap_or(0);
            let fds_before = sysenv::open_fds(pid).unwrap_or(0);
            let cpu_before = procstat::cpu_ticks(pid)?.own;
            let up_before = light
                .as_ref()
                .and_then(|l| procstat::cpu_ticks(l.pid()).ok())
                .map(|t| t.own);
            let sshd_tree = (args.upstream == UpstreamKind::Sshd)
                .then(|| TreeSampler::start(vec![sshd_pid], Duration::from_millis(20)));
            let mut t = churn(&dialer, &key, args).await;
            t.server_cpu = procstat::seconds(procstat::cpu_ticks(pid)?.own - cpu_before, tck);
            t.upstream_cpu = match (&light, up_before, sshd_tree) {
                (Some(l), Some(b), _) => Some(procstat::seconds(
                    procstat::cpu_ticks(l.pid())?.own - b,
                    tck,
                )),
                (_, _, Some(s)) => Some(procstat::seconds(s.finish()[0], tck)),
                _ => None,
            };
            let rss_right_after = memory::rss_kib(pid).unwrap_or(0);
            tokio::time::sleep(Duration::from_secs(10)).await;
            t.rss = Some((
                rss_before,
                rss_right_after,
                memory::rss_kib(pid).unwrap_or(0),
            ));
            t.fds = Some((fds_before, sysenv::open_fds(pid).unwrap_or(0)));
            t.gauge_after = rig.metric("tether_ssh_connections_open");
            let logs = rig.gw.process.logs();
            let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR")).collect();
            if !errors.is_empty() {
                t.log_errors = Some(format!(
                    "{} ERROR lines, e.g. {}",
                    errors.len(),
                    errors[0].trim()
                ));
            }
            report_side("tether", &t);

            // sshd
            let s = if args.no_sshd {
                None
            } else {
                println!();
                println!("[sshd] {} connections/s for {} s", args.rate, args.duration);
                let dialer = Dialer::for_load(SocketAddr::from(([127, 0, 0, 1], sshd.port)), LOGIN);
                warm_up(&dialer, &key, args)
                    .await
                    .context("sshd: a first connection")?;
                let listener_before = procstat::cpu_ticks(sshd_pid)?.own;
                let tree = TreeSampler::start(vec![sshd_pid], Duration::from_millis(20));
                let mut s = churn(&dialer, &key, args).await;
                let children = tree.finish()[0];
                let listener = procstat::cpu_ticks(sshd_pid)?.own - listener_before;
                s.server_cpu = procstat::seconds(children + listener, tck);
                report_side("sshd", &s);
                Some(s)
            };
            anyhow::Ok((t, s))
        };
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok((t, s)) => {
            print_report(args, &t, s.as_ref());
            Ok(())
        }
        Err(e) => {
            eprintln!("--- last tether log lines ---\n{}", rig.log_tail(40));
            Err(e)
        }
    }
}

/// One connection, to check the way works (and pin the host key) before timing.
async fn warm_up(dialer: &Dialer, key: &Arc<PrivateKey>, args: &Args) -> Result<()> {
    match one(dialer.clone(), key.clone(), 0, args).await {
        Outcome::Ok { .. } => Ok(()),
        Outcome::Failed { stage, error } => bail!("{stage}: {error}"),
    }
}

/// One churn connection from the `i`-th load address.
async fn one(dialer: Dialer, key: Arc<PrivateKey>, i: usize, args: &Args) -> Outcome {
    let started = Instant::now();
    let limit = Duration::from_secs(args.timeout);
    let auth_only = args.auth_only;
    let run = async move {
        let conn = dialer
            .connect_bound(key, Some(loopback::source(i)))
            .await
            .map_err(|e| {
                let text = format!("{e:#}");
                let stage = if text.starts_with("TCP connect") {
                    "tcp connect"
                } else if text.starts_with("SSH handshake") {
                    "ssh handshake"
                } else {
                    "authentication"
                };
                (stage, text)
            })?;
        let auth = started.elapsed();
        let (output, done) = if auth_only {
            (None, started.elapsed())
        } else {
            let exec = conn
                .exec(COMMAND)
                .await
                .map_err(|e| ("command", format!("{e:#}")))?;
            if exec.exit_status != Some(0) {
                return Err(("command", format!("exit status {:?}", exec.exit_status)));
            }
            if exec.first_output.is_none() {
                return Err(("command", "no output".to_string()));
            }
            (
                exec.first_output
                    .map(|t| t.saturating_duration_since(started)),
                exec.done.map_or_else(
                    || started.elapsed(),
                    |t| t.saturating_duration_since(started),
                ),
            )
        };
        conn.close().await;
        Ok(Outcome::Ok { auth, output, done })
    };
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(o)) => o,
        Ok(Err((stage, error))) => Outcome::Failed { stage, error },
        Err(_) => Outcome::Failed {
            stage: "timeout",
            error: format!("not done within {limit:?}"),
        },
    }
}

/// Starts `rate × duration` connections on schedule and waits for all of them.
async fn churn(dialer: &Dialer, key: &Arc<PrivateKey>, args: &Args) -> Side {
    let total = args.rate as usize * args.duration as usize;
    let period = Duration::from_secs(1) / args.rate;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut max_lag = Duration::ZERO;
    let mut tasks = Vec::with_capacity(total);
    let args = Arc::new(args.clone());
    for i in 0..total {
        let due = started + period * u32::try_from(i).unwrap();
        tokio::time::sleep_until(due.into()).await;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        let (dialer, key, task_args) = (dialer.clone(), key.clone(), args.clone());
        let (flying, max_flying) = (in_flight.clone(), max_in_flight.clone());
        tasks.push(tokio::spawn(async move {
            let now = flying.fetch_add(1, Ordering::Relaxed) + 1;
            max_flying.fetch_max(now, Ordering::Relaxed);
            let o = one(dialer, key, i + 1, &task_args).await;
            flying.fetch_sub(1, Ordering::Relaxed);
            o
        }));
        if i % (args.rate as usize * 10) == 0 && i > 0 {
            println!(
                "  {:>3} s: {i} started, {} in flight",
                started.elapsed().as_secs(),
                in_flight.load(Ordering::Relaxed)
            );
        }
    }
    let mut outcomes = Vec::with_capacity(total);
    for t in tasks {
        outcomes.push(t.await.unwrap_or_else(|e| Outcome::Failed {
            stage: "panic",
            error: e.to_string(),
        }));
    }
    Side {
        outcomes,
        wall: started.elapsed(),
        max_in_flight: max_in_flight.load(Ordering::Relaxed),
        max_lag,
        ..Side::default()
    }
}

fn report_side(name: &str, s: &Side) {
    let errors: usize = s.errors().values().map(|(n, _)| n).sum();
    println!(
        "[{name}] {} ok, {errors} errors in {:.1} s (at most {} in flight)",
        s.ok(),
        s.wall.as_secs_f64(),
        s.max_in_flight
    );
}

fn print_header(args: &Args, bin: &Path, raised: &sysenv::Raised) {
    println!("tether under connection churn, beside plain OpenSSH sshd");
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
        "plan: {} new connections/s for {} s ({} in all), open loop, from {}; clients: in-process russh (curve25519) on 2 threads",
        args.rate,
        args.duration,
        args.rate as u64 * args.duration,
        loopback::describe()
    );
    println!(
        "  tether: bound key, `{LOGIN}@{ROUTE}`, route to {}; {}",
        match args.upstream {
            UpstreamKind::Light => "the light russh upstream (separate process)",
            UpstreamKind::Sshd => "the OpenSSH sshd",
        },
        if args.auth_only {
            "authenticate, disconnect".to_string()
        } else {
            format!("authenticate, `exec {COMMAND}` on a session channel, wait for its close, disconnect")
        }
    );
    if !args.no_sshd {
        println!(
            "  sshd: the same directly to OpenSSH sshd (key in authorized_keys; {SSHD_CHURN})"
        );
    }
    println!("  times from the start of the TCP connect; CPU: tether's utime+stime, sshd's listener + per-connection processes");
    println!("load average at the start: {}", rig::loadavg());
}

fn print_report(args: &Args, t: &Side, s: Option<&Side>) {
    let total = args.rate as usize * args.duration as usize;
    println!();
    println!("results ({total} connections each; times in ms from the start of the TCP connect)");
    println!(
        "  {:<34} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "", "ok", "errors", "p50", "p99", "max", "mean", "CPU-s/1000"
    );
    let auth = |o: &Outcome| match o {
        Outcome::Ok { auth, .. } => Some(*auth),
        Outcome::Failed { .. } => None,
    };
    let output = |o: &Outcome| match o {
        Outcome::Ok { output, .. } => *output,
        Outcome::Failed { .. } => None,
    };
    let done = |o: &Outcome| match o {
        Outcome::Ok { done, .. } => Some(*done),
        Outcome::Failed { .. } => None,
    };
    let mut rows = Vec::new();
    for (name, side) in [("tether", Some(t)), ("OpenSSH sshd", s)] {
        let Some(side) = side else { continue };
        let errors: usize = side.errors().values().map(|(n, _)| n).sum();
        let cpu = side.server_cpu * 1000.0 / total.max(1) as f64;
        let mut first = true;
        for (what, pick) in [
            (
                "authenticated",
                &auth as &dyn Fn(&Outcome) -> Option<Duration>,
            ),
            ("first output", &output),
            ("channel closed", &done),
        ] {
            if args.auth_only && what != "authenticated" {
                continue;
            }
            let Some(sum) = side.summary(pick) else {
                continue;
            };
            println!(
                "  {:<34} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>12}",
                format!("{name}: {what}"),
                if first {
                    side.ok().to_string()
                } else {
                    String::new()
                },
                if first {
                    errors.to_string()
                } else {
                    String::new()
                },
                ms(sum.p50),
                ms(sum.p99),
                ms(sum.max),
                ms(sum.mean),
                if first {
                    format!("{cpu:.2}")
                } else {
                    String::new()
                },
            );
            first = false;
            rows.push((name, what, sum));
        }
    }
    for (name, side) in [("tether", Some(t)), ("sshd", s)] {
        let Some(side) = side else { continue };
        println!(
            "  {name}: achieved {:.1} connections/s over {:.1} s, at most {} in flight, scheduler lag at most {} ms",
            side.ok() as f64 / side.wall.as_secs_f64().max(1e-9),
            side.wall.as_secs_f64(),
            side.max_in_flight,
            ms(side.max_lag)
        );
        for (stage, (n, e)) in side.errors() {
            println!("  {name}: {n} errors at {stage}, e.g. {e}");
        }
    }
    if let Some(up) = t.upstream_cpu {
        println!(
            "  tether's upstream ({}): {:.2} CPU-s per 1000 connections (not in tether's figure)",
            match args.upstream {
                UpstreamKind::Light => "light russh",
                UpstreamKind::Sshd => "sshd",
            },
            up * 1000.0 / total.max(1) as f64
        );
    }
    if let Some((before, after, settled)) = t.rss {
        println!(
            "  tether RSS before / right after / 10 s after: {} / {} / {} MiB ({} MiB that stayed)",
            memory::mib(before),
            memory::mib(after),
            memory::mib(settled),
            memory::delta_mib(settled, before)
        );
    }
    if let Some((before, after)) = t.fds {
        println!("  tether descriptors before / 10 s after: {before} / {after}");
    }
    if let Some(g) = t.gauge_after {
        println!("  tether_ssh_connections_open 10 s after: {g:.0}");
    }
    if let Some(e) = &t.log_errors {
        println!("  tether's log: {e}");
    }
    if let Some(s) = s {
        println!();
        println!("tether / sshd (p50, p99):");
        for what in ["authenticated", "first output", "channel closed"] {
            let find = |who: &str| {
                rows.iter()
                    .find(|(n, w, _)| *n == who && *w == what)
                    .map(|(_, _, s)| *s)
            };
            if let (Some(a), Some(b)) = (find("tether"), find("OpenSSH sshd")) {
                println!(
                    "  {what:<16} {:.2}x, {:.2}x",
                    a.p50.as_secs_f64() / b.p50.as_secs_f64(),
                    a.p99.as_secs_f64() / b.p99.as_secs_f64()
                );
            }
        }
        if s.server_cpu > 0.0 {
            println!("  server CPU        {:.2}x", t.server_cpu / s.server_cpu);
        }
    }
    let errors: usize = t.errors().values().map(|(n, _)| n).sum();
    println!();
    println!(
        "target (issue 11): {} connections/s for {} s with zero errors: {} errors ({})",
        args.rate,
        args.duration,
        errors,
        if errors == 0 { "met" } else { "NOT met" }
    );
    if let Some(sum) = t.summary(auth) {
        println!("  p99 connect to authenticated: {} ms", ms(sum.p99));
    }
    println!("load average at the end: {}", rig::loadavg());
    println!("(informational: the exit status does not depend on the figures)");
}
