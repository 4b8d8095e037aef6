//! Relay throughput: stream `--size` bytes (1 GiB) each way with the real OpenSSH
//! client, (1) directly to an OpenSSH sshd, (2) through tether to the same sshd and
//! (3) through an OpenSSH jump host (a second sshd, `ssh -W` as `ssh -J` does), for
//! chacha20-poly1305 and aes128-gcm, interleaved over `--rounds` rounds. Prints MB/s
//! for each, the ratios to direct and tether/jump, and the CPU seconds per GiB
//! relayed of tether and of the jump host's sshd (from `/proc/<pid>/stat`).
//!
//! `cargo run --release -p tether-bench --bin throughput [-- --size 256M --rounds 1]`
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
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use clap::Parser;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::PrivateKey;
use tether_bench::gateway::{self, Gateway};
use tether_bench::openssh::{self, ClientKey, Direction};
use tether_bench::procstat::{self, TreeSampler};
use tether_bench::sshc::Dialer;
use tether_bench::web::Web;
use tether_testkit::{ensure_user, Sshd};

/// The local login user on both sshds.
const LOGIN: &str = "tetherbench";
/// The route's name: `ssh LOGIN@ROUTE@gateway`.
const ROUTE: &str = "bench";
/// Targets of the issue: tether at least as fast as a jump host, and at most this many
/// CPU seconds per GiB relayed.
const TARGET_CPU_PER_GIB: f64 = 3.0;
/// How often the sshds' per-connection processes are sampled for their CPU time.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
const GIB: f64 = (1u64 << 30) as f64;
const DEFAULT_CIPHERS: [&str; 2] = ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"];

/// Set by Ctrl-C: the running transfer is killed and the run stops (cleaning up).
static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Parser, Debug)]
#[command(about = "tether relay throughput vs direct OpenSSH and an OpenSSH jump host")]
struct Args {
    /// Bytes per transfer: a number with an optional K, M or G suffix (powers of 1024).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,
    /// Rounds; each runs every cipher × path × direction once.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Paths to measure, comma-separated (a subset is for profiling and quick looks;
    /// the ratios need all three).
    #[arg(long, value_delimiter = ',', default_values_t = WAYS.map(|w| w.label().to_string()), value_parser = ["direct", "tether", "jump"])]
    paths: Vec<String>,
    /// Ciphers to compare (`ssh -c`), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_CIPHERS.map(String::from))]
    ciphers: Vec<String>,
}

impl Args {
    /// The chosen paths, in the canonical order.
    fn ways(&self) -> Vec<Way> {
        WAYS.into_iter()
            .filter(|w| self.paths.iter().any(|p| Way::from_label(p) == Some(*w)))
            .collect()
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a size: {s:?} (e.g. 1G, 256M, 1048576)"))?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        other => return Err(format!("unknown size unit {other:?} (K, M or G)")),
    };
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} too large"))?;
    if bytes == 0 {
        return Err("size must be positive".into());
    }
    Ok(bytes)
}

/// The three ways to the upstream sshd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Direct,
    Tether,
    Jump,
}

const WAYS: [Way; 3] = [Way::Direct, Way::Tether, Way::Jump];

impl Way {
    fn from_label(label: &str) -> Option<Way> {
        WAYS.into_iter().find(|w| w.label() == label)
    }

    fn label(self) -> &'static str {
        match self {
            Way::Direct => "direct",
            Way::Tether => "tether",
            Way::Jump => "jump",
        }
    }
}

/// Everything a run needs; dropping it stops every process and removes every file.
/// Fields drop in order: the gateway first (its upstream connections end), then the
/// sshds, then the key.
struct Bench {
    gw: Gateway,
    upstream: Sshd,
    jump: Sshd,
    client: ClientKey,
    jump_pid: u32,
    upstream_pid: u32,
}

/// One transfer's figures.
struct Sample {
    cipher: String,
    way: Way,
    dir: Direction,
    seconds: f64,
    /// CPU seconds per GiB of tether (tether runs) or the jump sshd (jump runs).
    relay_cpu_per_gib: Option<f64>,
    /// CPU seconds per GiB of the upstream sshd (its per-connection processes).
    upstream_cpu_per_gib: Option<f64>,
}

impl Sample {
    fn mbps(&self, bytes: u64) -> f64 {
        bytes as f64 / self.seconds / 1e6
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                eprintln!("interrupted: stopping the transfer and cleaning up");
                STOP.store(true, Ordering::Relaxed);
            }
        }
    });
    match main_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throughput benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_stop() -> Result<()> {
    ensure!(!STOP.load(Ordering::Relaxed), "interrupted");
    Ok(())
}

fn main_inner(args: &Args) -> Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(!args.ciphers.is_empty(), "--ciphers must name at least one");
    ensure!(
        Path::new(openssh::SSH).is_file() && Path::new(tether_testkit::SSHD).is_file(),
        "needs OpenSSH: {} and {}",
        openssh::SSH,
        tether_testkit::SSHD
    );
    let bin = gateway::tether_binary()?;
    print_header(args, &bin);

    let bench = set_up(&bin)?;
    let outcome = measure(args, &bench);
    if outcome.is_err() {
        eprintln!(
            "--- last tether log lines ---\n{}",
            tail(&bench.gw.process.logs(), 40)
        );
        eprintln!(
            "--- last upstream sshd log lines ---\n{}",
            tail(&bench.upstream.log(), 20)
        );
        eprintln!(
            "--- last jump sshd log lines ---\n{}",
            tail(&bench.jump.log(), 20)
        );
    }
    drop(bench);
    let samples = outcome?;
    print_results(args, &samples);
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A fresh ed25519 key.
fn new_ca() -> Result<PrivateKey> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("random seed: {e}"))?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment("tether user CA (tether-bench)");
    Ok(key)
}

fn pid_file(sshd: &Sshd) -> Result<u32> {
    let path = sshd.dir().join("sshd.pid");
    tether_testkit::wait_until(Duration::from_secs(5), || path.is_file());
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("no pid in {}", path.display()))
}

/// Starts the upstream sshd, tether with a route to it and the jump sshd, and binds
/// the client key to the dev IdP's user through the real sign-in flow.
fn set_up(bin: &Path) -> Result<Bench> {
    ensure_user(LOGIN);
    let client = ClientKey::generate()?;
    let authorized = format!("AuthorizedKeysFile {}", client.authorized_keys.display());

    // The upstream must trust tether's user CA before tether starts (the route names
    // the upstream's port): put the CA key where tether loads it from instead of
    // generating one (`<data_dir>/ssh_user_ca_key`), and its public half where tether
    // writes it on start.
    let mut upstream = None;
    let mut ca_pub = String::new();
    let gw = Gateway::start_with(bin, |data| {
        let ca = new_ca()?;
        openssh::write_private_key(&data.join("ssh_user_ca_key"), &ca)?;
        ca_pub = openssh::public_line(&ca)?;
        let pub_path = data.join("ssh_user_ca_key.pub");
        std::fs::write(&pub_path, format!("{ca_pub}\n"))?;
        let sshd = Sshd::start_with(&pub_path, &[&authorized]);
        let yaml = format!(
            "ssh_upstream_host_key_policy: accept-new
routes:
  - from: ssh://{ROUTE}
    to: {to}
    allow_any_authenticated_user: true
",
            to = sshd.url()
        );
        upstream = Some(sshd);
        Ok(yaml)
    })?;
    let upstream = upstream.context("upstream sshd not started")?;
    // The CA public key tether wrote on start is the one the upstream trusts.
    let written = std::fs::read_to_string(gw.data_dir().join("ssh_user_ca_key.pub"))
        .context("tether did not write ssh_user_ca_key.pub")?;
    let key_of = |line: &str| {
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    ensure!(
        key_of(&written) == key_of(&ca_pub),
        "tether's ssh_user_ca_key.pub is not the CA the upstream trusts"
    );

    // The jump host trusts nothing but the client key (the CA file is unused there).
    let jump = Sshd::start_with(&gw.data_dir().join("ssh_user_ca_key.pub"), &[&authorized]);
    let (jump_pid, upstream_pid) = (pid_file(&jump)?, pid_file(&upstream)?);

    let bench = Bench {
        gw,
        upstream,
        jump,
        client,
        jump_pid,
        upstream_pid,
    };
    bind_client_key(&bench)?;
    Ok(bench)
}

/// Signs the client key in once as the dev IdP's user, with no route in the username
/// (`alice@gateway`); from then on `ssh LOGIN@ROUTE@gateway` with that key goes
/// straight through (bindings are per key).
fn bind_client_key(b: &Bench) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let web = Web::new(&b.gw.base_url())?;
        web.sign_in(gateway::USER, gateway::PASSWORD)
            .await
            .context("web sign-in")?;
        let dialer = Dialer::new(
            SocketAddr::from(([127, 0, 0, 1], b.gw.ssh_port)),
            gateway::USER,
        );
        let conn = tokio::time::timeout(
            Duration::from_secs(60),
            dialer.sign_in_with(&web, b.client.key.clone()),
        )
        .await
        .context("sign-in timed out")?
        .context("binding the client key")?;
        let _ = conn
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// The `ssh` arguments (before the remote command) for `way` with `cipher`.
fn ssh_args(b: &Bench, way: Way, cipher: &str) -> Vec<String> {
    let mut args = openssh::common_options(&b.client.path, cipher);
    let target = |port: u16, user: String| ["-p".to_string(), port.to_string(), user];
    match way {
        Way::Direct => args.extend(target(b.upstream.port, format!("{LOGIN}@127.0.0.1"))),
        Way::Tether => args.extend(target(b.gw.ssh_port, format!("{LOGIN}@{ROUTE}@127.0.0.1"))),
        Way::Jump => {
            let proxy = openssh::proxy_command(&args, LOGIN, b.jump.port);
            args.extend(["-o".into(), format!("ProxyCommand={proxy}")]);
            args.extend(target(b.upstream.port, format!("{LOGIN}@127.0.0.1")));
        }
    }
    args
}

fn measure(args: &Args, b: &Bench) -> Result<Vec<Sample>> {
    let ways = args.ways();
    let tck = procstat::ticks_per_second();
    let tether_pid = b.gw.pid()?;
    let (jump_pid, upstream_pid) = (b.jump_pid, b.upstream_pid);
    println!(
        "pids (e.g. for perf record -p): tether {tether_pid}, upstream sshd {upstream_pid}, jump sshd {jump_pid}"
    );
    let per_gib = |ticks: u64| procstat::seconds(ticks, tck) / (args.size as f64 / GIB);

    // Every way works, with every cipher; and what a connection alone costs.
    println!();
    println!(
        "connection set-up alone (`ssh … true`, median of 3), included in every transfer's time:"
    );
    for cipher in &args.ciphers {
        let mut line = format!("  {cipher:<30}");
        for &way in &ways {
            let mut times = Vec::new();
            for _ in 0..3 {
                check_stop()?;
                let t = openssh::run_command(
                    &ssh_args(b, way, cipher),
                    "true",
                    Duration::from_secs(60),
                )
                .with_context(|| format!("{} with {cipher}: ssh … true", way.label()))?;
                times.push(t.as_secs_f64());
            }
            let _ = write!(
                line,
                "  {} {:>4.0} ms",
                way.label(),
                median(&mut times) * 1000.0
            );
        }
        println!("{line}");
    }
    ensure!(
        b.upstream.log().contains(&format!(
            "Accepted certificate ID \"{}\"",
            "alice@example.com"
        )),
        "the upstream did not log tether's certificate login for alice@example.com"
    );

    let timeout = Duration::from_secs(60) + Duration::from_secs_f64(args.size as f64 / 2e6);
    println!();
    println!(
        "{:>5} {:<30} {:<6} {:<4} {:>7} {:>7} {:>15} {:>14} {:>5}",
        "round", "cipher", "path", "dir", "s", "MB/s", "relay CPU-s/GiB", "sshd CPU-s/GiB", "load"
    );
    let mut samples = Vec::new();
    for round in 1..=args.rounds {
        for (ci, cipher) in args.ciphers.iter().enumerate() {
            for k in 0..ways.len() {
                let way = ways[(k + round - 1 + ci) % ways.len()];
                let ssh = ssh_args(b, way, cipher);
                for dir in [Direction::Up, Direction::Down] {
                    check_stop()?;
                    let tether_before = procstat::cpu_ticks(tether_pid)?.own;
                    let sshds = TreeSampler::start(vec![jump_pid, upstream_pid], SAMPLE_EVERY);
                    let elapsed = openssh::transfer(&ssh, dir, args.size, timeout, &STOP);
                    let sshd_ticks = sshds.finish();
                    let elapsed = elapsed.with_context(|| {
                        format!("round {round}, {cipher}, {}, {}", way.label(), dir.label())
                    })?;
                    let tether_ticks = procstat::cpu_ticks(tether_pid)?.own - tether_before;
                    let relay_ticks = match way {
                        Way::Tether => Some(tether_ticks),
                        Way::Jump => Some(sshd_ticks[0]),
                        Way::Direct => None,
                    };
                    let s = Sample {
                        cipher: cipher.clone(),
                        way,
                        dir,
                        seconds: elapsed.as_secs_f64(),
                        relay_cpu_per_gib: relay_ticks.map(per_gib),
                        upstream_cpu_per_gib: Some(per_gib(sshd_ticks[1])),
                    };
                    println!(
                        "{:>5} {:<30} {:<6} {:<4} {:>7.2} {:>7.1} {:>15} {:>14} {:>5}",
                        round,
                        cipher,
                        way.label(),
                        dir.label(),
                        s.seconds,
                        s.mbps(args.size),
                        opt(s.relay_cpu_per_gib),
                        opt(s.upstream_cpu_per_gib),
                        loadavg().split(' ').next().unwrap_or("?"),
                    );
                    samples.push(s);
                }
            }
        }
    }
    Ok(samples)
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
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

fn git_describe() -> String {
    let root = tether_testkit::repo_root();
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{rev}{}", if dirty { "+dirty" } else { "" })
        }
        None => "unknown commit".into(),
    }
}

fn print_header(args: &Args, bin: &Path) {
    println!("tether relay throughput vs plain OpenSSH (direct) and an OpenSSH jump host");
    println!("{}", tether_bench::machine::describe());
    println!(
        "gateway: {} ({}, repo at {})",
        gateway::version(bin),
        bin.display(),
        git_describe()
    );
    let ssh_version = Command::new(openssh::SSH)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    println!("client and servers: {ssh_version}; everything on 127.0.0.1, sharing the CPUs");
    println!(
        "plan: {} round(s) × {} cipher(s) × 3 paths × up+down, {} bytes ({:.2} GiB) per transfer, paths rotated each round",
        args.rounds,
        args.ciphers.len(),
        args.size,
        args.size as f64 / GIB
    );
    println!("  direct: ssh -p SSHD {LOGIN}@127.0.0.1");
    println!("  tether: ssh -p TETHER {LOGIN}@{ROUTE}@127.0.0.1   (tether -> sshd leg: russh client, AES-GCM whatever -c says)");
    println!("  jump:   ssh -o ProxyCommand='ssh … -W %h:%p -p JUMP {LOGIN}@127.0.0.1' -p SSHD {LOGIN}@127.0.0.1   (same -c on both legs, like ssh -J)");
    println!("  up: zeros into ssh's stdin, remote `wc -c` must count them all; down: remote `head -c N /dev/zero`, every byte counted");
    println!(
        "  MB/s = bytes / wall time of the whole ssh command / 1e6 (connection set-up included)"
    );
    println!(
        "  relay CPU-s/GiB: tether's utime+stime from /proc/<pid>/stat ({} ticks/s), or the jump sshd's per-connection processes;",
        procstat::ticks_per_second()
    );
    println!(
        "  sshd CPU-s/GiB: the upstream sshd's per-connection processes (wc/head included); sshds sampled from /proc every {} ms",
        SAMPLE_EVERY.as_millis()
    );
    println!(
        "load average at the start: {} (other work on the machine skews absolute figures; interleaving keeps the ratios fair)",
        loadavg()
    );
}

/// `{v:.prec$}` right-aligned in `width`, or `-` for a missing figure.
fn num(v: f64, width: usize, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:>width$.prec$}")
    } else {
        format!("{:>width$}", "-")
    }
}

fn print_results(args: &Args, samples: &[Sample]) {
    let ways = args.ways();
    let pick = |cipher: &str, way: Way, dir: Direction| -> Vec<&Sample> {
        samples
            .iter()
            .filter(|s| s.cipher == cipher && s.way == way && s.dir == dir)
            .collect()
    };
    let med_mbps = |cipher: &str, way: Way, dir: Direction| {
        let mut v: Vec<f64> = pick(cipher, way, dir)
            .iter()
            .map(|s| s.mbps(args.size))
            .collect();
        median(&mut v)
    };
    let med_cpu = |cipher: &str, way: Way, dir: Direction| {
        let mut v: Vec<f64> = pick(cipher, way, dir)
            .iter()
            .filter_map(|s| s.relay_cpu_per_gib)
            .collect();
        median(&mut v)
    };
    let (up, down) = (Direction::Up, Direction::Down);

    println!();
    println!(
        "summary: medians over {} round(s), ratios of medians; relay CPU = tether's process, or the jump host's sshd processes",
        args.rounds
    );
    let mut verdicts = Vec::new();
    for cipher in &args.ciphers {
        println!();
        println!(
            "{cipher:<30} {:>9} {:>9} {:>10} {:>11} {:>19}",
            "up MB/s", "down MB/s", "up/direct", "down/direct", "relay CPU-s/GiB u/d"
        );
        for &way in &ways {
            let (mu, md) = (med_mbps(cipher, way, up), med_mbps(cipher, way, down));
            let (du, dd) = (
                med_mbps(cipher, Way::Direct, up),
                med_mbps(cipher, Way::Direct, down),
            );
            let (cu, cd) = (med_cpu(cipher, way, up), med_cpu(cipher, way, down));
            let cpu = if cu.is_finite() && cd.is_finite() {
                format!("{cu:.2} / {cd:.2}")
            } else {
                "-".into()
            };
            println!(
                "  {:<28} {} {} {} {} {cpu:>19}",
                match way {
                    Way::Direct => "direct (plain OpenSSH)",
                    Way::Tether => "tether",
                    Way::Jump => "jump host (OpenSSH -W)",
                },
                num(mu, 9, 1),
                num(md, 9, 1),
                num(mu / du, 10, 2),
                num(md / dd, 11, 2),
            );
        }
        let tether_jump = |d| med_mbps(cipher, Way::Tether, d) / med_mbps(cipher, Way::Jump, d);
        let (tju, tjd) = (tether_jump(up), tether_jump(down));
        if tju.is_finite() && tjd.is_finite() {
            println!(
                "  {:<28} {} {}",
                "tether/jump",
                num(tju, 9, 2),
                num(tjd, 9, 2)
            );
        }
        if ways.contains(&Way::Tether) && ways.contains(&Way::Jump) {
            let worst_cpu =
                med_cpu(cipher, Way::Tether, up).max(med_cpu(cipher, Way::Tether, down));
            let met = |ok: bool| if ok { "met" } else { "NOT met" };
            verdicts.push(format!(
                "{cipher}: tether/jump up {tju:.2}, down {tjd:.2} ({}); tether {worst_cpu:.2} CPU-s/GiB, the worse direction ({})",
                met(tju >= 1.0 && tjd >= 1.0),
                met(worst_cpu <= TARGET_CPU_PER_GIB),
            ));
        }
    }
    if !verdicts.is_empty() {
        println!();
        println!(
            "targets: tether's throughput >= the jump host's both ways, and <= {TARGET_CPU_PER_GIB} CPU-s per GiB relayed"
        );
        for v in verdicts {
            println!("  {v}");
        }
    }
    println!("load average at the end: {}", loadavg());
    println!("(informational: the exit status does not depend on the figures)");
}

/// `/proc/loadavg`'s first three fields.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1T").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }
}
