//! Revocation latency (SPEC §5, "Revocation"): with `--idle` other authenticated
//! connections open, revoke `--revocations` bindings one after another through the
//! bindings page's Revoke POST, and time each from the POST's response to the moment
//! the revoked client sees its TCP connection close. Prints p50, p99, max and mean.
//!
//! `--end web` ends each connection's live session instead (the Disconnect POST of
//! the bindings page, the console's End: timed from the POST being sent, since its
//! response waits for the session to leave the list), `--end cli` with
//! `tether sessions kill ID` run as its own process (timed from its exit).
//!
//! `cargo run --release -p tether-bench --bin revocation [-- --quick] [--end web|cli]`

// A dev tool: stop with a message on any surprise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use tether_bench::gateway::{self, Gateway};
use tether_bench::sshc::{Conn, Dialer};
use tether_bench::stats::{ms, summarize, Summary};
use tether_bench::web::{binding_rows, Web};

/// SPEC §5: p99 under 100 ms on one node.
const TARGET_P99: Duration = Duration::from_millis(100);
/// SPEC §5's target across replicas sharing PostgreSQL.
const TARGET_P99_REPLICAS: Duration = Duration::from_secs(1);
/// The whole run, set-up included.
const RUN_TIMEOUT: Duration = Duration::from_secs(170);
/// One connection's sign-in, start to authenticated.
const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(30);
/// A revoked connection must be closed within this.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Base64 of 32 bytes, shared by the replicas of `--replicas`.
const REPLICA_COOKIE_SECRET: &str = "dGV0aGVyLWJlbmNoLXJlcGxpY2EtY29va2llLWtleSE=";

#[derive(Parser, Debug)]
#[command(about = "tether revocation latency: revoke response -> client TCP close")]
struct Args {
    /// Smoke run: 10 revocations, 10 idle connections.
    #[arg(long)]
    quick: bool,
    /// Bindings revoked, one at a time.
    #[arg(long, default_value_t = 100)]
    revocations: usize,
    /// Other authenticated connections kept open and idle throughout.
    #[arg(long, default_value_t = 100)]
    idle: usize,
    /// Sign-ins in flight at once during set-up.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Two replicas sharing a throwaway PostgreSQL (needs Debian's `postgresql`):
    /// the SSH clients connect to replica B, the revocations are posted to replica
    /// A, so every close crosses replicas (SPEC §5: under 1 s).
    #[arg(long)]
    replicas: bool,
    /// End live sessions instead of revoking bindings: `web` (the Disconnect
    /// POST) or `cli` (`tether sessions kill`, from its own process).
    #[arg(long, value_enum)]
    end: Option<End>,
}

/// How `--end` ends a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum End {
    Web,
    Cli,
}

impl Args {
    /// What the client is told, in part.
    fn reason(&self) -> &'static str {
        match self.end {
            None => "access revoked",
            Some(End::Web) => "session ended by its owner",
            Some(End::Cli) => "session ended by an administrator",
        }
    }

    /// What the figure is timed from.
    fn from(&self) -> &'static str {
        match self.end {
            None => "revoke response",
            Some(End::Web) => "end POST sent",
            Some(End::Cli) => "sessions kill exit",
        }
    }
}

/// What a run measured.
struct Report {
    setup: Duration,
    connections: usize,
    close: Summary,
    close_from_sent: Summary,
    disconnect_msg: Option<Summary>,
    post_rtt: Summary,
    closed_before_response: usize,
    revoked_with_reason: usize,
    idle_alive: usize,
    idle_listed_live: usize,
    reason_sample: String,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.revocations = 10;
        args.idle = 10;
    }
    match main_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("revocation benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_inner(args: &Args) -> Result<()> {
    ensure!(args.revocations > 0, "--revocations must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let bin = gateway::tether_binary()?;
    let version = gateway::version(&bin);
    print_header(args, &bin, &version);

    // The gateways are stopped when they drop: on return, on error and on panic
    // (before the PostgreSQL server, declared first).
    let _pg;
    let (gw, ssh_gw) = if args.replicas {
        ensure!(
            tether_testkit::postgres_bin_dir().is_some(),
            "--replicas needs PostgreSQL's server binaries (Debian package postgresql)"
        );
        let pg = tether_testkit::Postgres::start();
        let db = pg.create_database("tether_bench");
        _pg = Some(pg);
        let storage = format!(
            "databroker_storage_type: postgres\n\
             databroker_storage_connection_string: {db}\n\
             cookie_secret: {REPLICA_COOKIE_SECRET}\n"
        );
        let a = Gateway::start_replica(&bin, &storage)?;
        // Behind one address, both replicas send users to the same sign-in URL.
        let b = Gateway::start_replica(
            &bin,
            &format!("{storage}authenticate_service_url: {}\n", a.base_url()),
        )?;
        println!(
            "replicas: A web :{} (sign-in, revocations), B ssh :{} (clients), one PostgreSQL",
            a.http_port, b.ssh_port
        );
        (a, Some(b))
    } else {
        _pg = None;
        (Gateway::start(&bin)?, None)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        tokio::select! {
            r = tokio::time::timeout(RUN_TIMEOUT, run(args, &gw, ssh_gw.as_ref().unwrap_or(&gw))) => {
                r.unwrap_or_else(|_| bail!("run did not finish within {RUN_TIMEOUT:?}"))
            }
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    });
    // Close the clients before stopping the gateway.
    rt.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(report) => {
            print_report(args, &report);
            Ok(())
        }
        Err(e) => {
            let logs = gw.process.logs();
            let tail: String = logs
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            eprintln!("--- last tether log lines ---\n{tail}");
            Err(e)
        }
    }
}

/// Whether the bindings page's `rows` list `binding_id` with one live connection.
fn listed_live(rows: &[(String, u32)], binding_id: &str) -> bool {
    rows.iter().any(|(id, live)| id == binding_id && *live == 1)
}

/// Signs in and revokes on `gw`'s web app; the SSH clients connect to `ssh_gw`
/// (the same gateway, or another replica).
async fn run(args: &Args, gw: &Gateway, ssh_gw: &Gateway) -> Result<Report> {
    // The bindings page counts live connections on every replica (published
    // through the shared store), so `live == 1` holds on either replica.
    let web = Web::new(&gw.base_url())?;
    web.sign_in(gateway::USER, gateway::PASSWORD)
        .await
        .context("web sign-in")?;

    let total = args.revocations + args.idle;
    let addr = SocketAddr::from(([127, 0, 0, 1], ssh_gw.ssh_port));
    let dialer = Dialer::new(addr, gateway::USER);
    let started = Instant::now();
    let results: Vec<Result<Conn>> = stream::iter(0..total)
        .map(|i| {
            let (dialer, web) = (&dialer, &web);
            async move {
                tokio::time::timeout(SIGN_IN_TIMEOUT, dialer.sign_in(web))
                    .await
                    .unwrap_or_else(|_| bail!("timed out"))
                    .with_context(|| format!("connection {i}"))
            }
        })
        .buffered(args.concurrency)
        .collect()
        .await;
    let mut conns = results.into_iter().collect::<Result<Vec<Conn>>>()?;
    let setup = started.elapsed();
    println!(
        "set-up: {total} connections signed in through the real flow in {:.1} s",
        setup.as_secs_f64()
    );

    // The CSRF token from the bindings page (one per web session), and a check that
    // every binding is listed with its one live connection. Another replica's
    // counts arrive through the store a few ms after its connections: re-read the
    // page for up to 2 s.
    let mut page = web.bindings_page().await?;
    for _ in 0..20 {
        let rows = binding_rows(&page);
        let sessions_listed =
            args.end.is_none() || tether_bench::web::session_rows(&page).len() >= conns.len();
        if sessions_listed && conns.iter().all(|c| listed_live(&rows, &c.binding_id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = web.bindings_page().await?;
    }
    let csrf = tether_bench::html::input_value(&page, "csrf_token")
        .context("no csrf_token on the bindings page")?;
    if let Some(seen) = web.csrf_seen() {
        ensure!(
            seen == csrf,
            "the bindings page and Verify page CSRF tokens differ"
        );
    }
    let rows = binding_rows(&page);
    for c in &conns {
        ensure!(
            listed_live(&rows, &c.binding_id),
            "binding {} not listed with 1 live connection",
            c.binding_id
        );
    }
    ensure!(
        conns.iter().all(|c| !c.is_closed()),
        "a connection closed before the revocations began"
    );

    let mut close = Vec::with_capacity(args.revocations);
    let mut close_from_sent = Vec::with_capacity(args.revocations);
    let mut disconnect_msg = Vec::with_capacity(args.revocations);
    let mut post_rtt = Vec::with_capacity(args.revocations);
    let mut closed_before_response = 0;
    let mut revoked_with_reason = 0;
    let mut reason_sample = String::new();
    let sessions = tether_bench::web::session_rows(&page);
    let session_of = |binding_id: &str| -> Result<String> {
        sessions
            .iter()
            .find(|(_, b)| b == binding_id)
            .map(|(id, _)| id.clone())
            .with_context(|| format!("no live session listed for {binding_id}"))
    };
    for (i, conn) in conns.iter_mut().take(args.revocations).enumerate() {
        let revoked = match args.end {
            None => web
                .revoke(&conn.binding_id, &csrf)
                .await
                .with_context(|| format!("revoke #{i}"))?,
            Some(End::Web) => web
                .end_session(&session_of(&conn.binding_id)?, &csrf)
                .await
                .with_context(|| format!("end #{i}"))?,
            Some(End::Cli) => kill(gw, &session_of(&conn.binding_id)?).await?,
        };
        ensure!(
            revoked.status == StatusCode::SEE_OTHER,
            "revoke #{i} of {}: HTTP {}",
            conn.binding_id,
            revoked.status
        );
        let closed_at = tokio::time::timeout(CLOSE_TIMEOUT, conn.closed.wait_for(Option::is_some))
            .await
            .with_context(|| {
                format!(
                    "revoke #{i}: connection of {} still open after {CLOSE_TIMEOUT:?}",
                    conn.binding_id
                )
            })?
            .context("close watch dropped")?
            .expect("waited for Some");
        // Timed from the response; an End POST from its sending (its response
        // waits for the session to leave the list).
        let reference = match args.end {
            Some(End::Web) => revoked.sent,
            _ => revoked.response,
        };
        if closed_at < reference {
            closed_before_response += 1;
        }
        close.push(closed_at.saturating_duration_since(reference));
        close_from_sent.push(closed_at.saturating_duration_since(revoked.sent));
        post_rtt.push(revoked.response - revoked.sent);
        if let Some((at, text)) = conn.goodbye.lock().unwrap().at.clone() {
            disconnect_msg.push(at.saturating_duration_since(reference));
            if text.contains(args.reason()) {
                revoked_with_reason += 1;
            }
            if reason_sample.is_empty() {
                reason_sample = text;
            }
        }
    }

    // The others: still open, and answering.
    let idle = &conns[args.revocations..];
    let mut idle_alive = 0;
    for conn in idle {
        let ping = tokio::time::timeout(Duration::from_secs(5), conn.handle.send_ping()).await;
        if matches!(ping, Ok(Ok(()))) && !conn.is_closed() && !conn.handle.is_closed() {
            idle_alive += 1;
        }
    }
    let rows = binding_rows(&web.bindings_page().await?);
    let idle_listed_live = idle
        .iter()
        .filter(|c| listed_live(&rows, &c.binding_id))
        .count();
    if args.end.is_none() {
        let revoked_listed = conns[..args.revocations]
            .iter()
            .filter(|c| rows.iter().any(|(id, _)| id == &c.binding_id))
            .count();
        ensure!(
            revoked_listed == 0,
            "{revoked_listed} revoked bindings are still listed"
        );
    } else {
        // Ending a session leaves its binding: listed, with no live connection
        // (another replica's count follows through the store: re-read for 2 s).
        let idle_of = |rows: &[(String, u32)]| {
            conns[..args.revocations]
                .iter()
                .filter(|c| rows.iter().any(|(id, n)| id == &c.binding_id && *n == 0))
                .count()
        };
        let mut kept = idle_of(&rows);
        for _ in 0..20 {
            if kept == args.revocations {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            kept = idle_of(&binding_rows(&web.bindings_page().await?));
        }
        ensure!(
            kept == args.revocations,
            "{} ended sessions' bindings not listed idle",
            args.revocations - kept
        );
    }

    let report = Report {
        setup,
        connections: total,
        close: summarize(&close).context("no samples")?,
        close_from_sent: summarize(&close_from_sent).context("no samples")?,
        disconnect_msg: summarize(&disconnect_msg),
        post_rtt: summarize(&post_rtt).context("no samples")?,
        closed_before_response,
        revoked_with_reason,
        idle_alive,
        idle_listed_live,
        reason_sample,
    };
    ensure!(
        idle_alive == idle.len() && idle_listed_live == idle.len(),
        "idle connections lost: {idle_alive}/{} answering, {idle_listed_live}/{} listed live",
        idle.len(),
        idle.len()
    );
    Ok(report)
}

/// `tether sessions kill ID -c <gw's config>` as its own process; `sent` is its
/// start and `response` its exit (a 303 stands for success).
async fn kill(gw: &Gateway, id: &str) -> Result<tether_bench::web::Revoked> {
    let bin = gateway::tether_binary()?;
    let config = gw.process.config_path();
    let sent = Instant::now();
    let out = tokio::process::Command::new(&bin)
        .args(["sessions", "kill", id, "-c"])
        .arg(&config)
        .current_dir(gw.data_dir())
        .output()
        .await
        .context("tether sessions kill")?;
    let response = Instant::now();
    ensure!(
        out.status.success(),
        "tether sessions kill {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(tether_bench::web::Revoked {
        status: StatusCode::SEE_OTHER,
        sent,
        response,
    })
}

fn print_header(args: &Args, bin: &std::path::Path, version: &str) {
    println!("tether revocation latency: revoke POST's response -> revoked client sees TCP close");
    println!("{}", tether_bench::machine::describe());
    if args.replicas {
        println!(
            "gateway: {version} ({}), two replicas on one PostgreSQL (LISTEN/NOTIFY), dev IdP; \
             revoked on A, clients on B",
            bin.display()
        );
    } else {
        println!(
            "gateway: {version} ({}), one node, SQLite (databroker_storage_type: file), dev IdP",
            bin.display()
        );
    }
    let what = match args.end {
        None => "revocations",
        Some(End::Web) => "live sessions ended (Disconnect POST)",
        Some(End::Cli) => "live sessions ended (tether sessions kill)",
    };
    println!(
        "plan: {} {what} one at a time, {} other idle authenticated connections open",
        args.revocations, args.idle
    );
}

fn row(label: &str, s: &Summary) {
    println!(
        "{label:<42} {:>4} {:>9} {:>9} {:>9} {:>9}",
        s.n,
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        ms(s.mean)
    );
}

fn print_report(args: &Args, r: &Report) {
    println!();
    println!(
        "{:<42} {:>4} {:>9} {:>9} {:>9} {:>9}",
        "measure (ms)", "n", "p50", "p99", "max", "mean"
    );
    let from = args.from();
    row(&format!("{from} -> client TCP close"), &r.close);
    if let Some(d) = &r.disconnect_msg {
        row(&format!("{from} -> SSH disconnect handled"), d);
    }
    if args.end.is_none() {
        row("revoke POST sent -> client TCP close", &r.close_from_sent);
        row("revoke POST round trip (context)", &r.post_rtt);
    } else {
        row("request round trip (context)", &r.post_rtt);
    }
    println!();
    println!(
        "idle connections still up: {}/{} (ping answered, binding listed with 1 live connection: {}/{})",
        r.idle_alive, args.idle, r.idle_listed_live, args.idle
    );
    println!(
        "ended connections closed: {}/{}; with a {:?} disconnect message: {}/{} (e.g. {:?})",
        r.close.n,
        args.revocations,
        args.reason(),
        r.revoked_with_reason,
        args.revocations,
        r.reason_sample
    );
    if r.closed_before_response > 0 {
        println!(
            "closed before the POST's response arrived (counted as 0 ms): {}",
            r.closed_before_response
        );
    }
    println!(
        "set-up: {} connections in {:.1} s",
        r.connections,
        r.setup.as_secs_f64()
    );
    // Ending one session: within 1 s on whichever replica holds it (SPEC §5).
    let target = if args.replicas || args.end.is_some() {
        TARGET_P99_REPLICAS
    } else {
        TARGET_P99
    };
    let ratio = r.close.p99.as_secs_f64() / target.as_secs_f64();
    println!(
        "target (SPEC §5): p99 < {} ms -> p99/target = {ratio:.3} ({})",
        target.as_millis(),
        if r.close.p99 < target {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "plain OpenSSH baseline: not applicable (OpenSSH has no revocation of live connections)"
    );
}
