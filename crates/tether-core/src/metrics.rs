//! Process metrics (SPEC §10) and their Prometheus text rendering.
//!
//! Plain atomics and fixed-bucket histograms, no I/O: the SSH side records, the
//! binary serves [`Metrics::render`] on `metrics_address`. Label values come from
//! closed sets chosen by the code (never from client input), so the number of
//! series is bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Bucket upper bounds in seconds, shared by every histogram (1 ms to 5 min).
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 300.0,
];

/// A histogram of durations with [`BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        if let Some(b) = self.buckets.get(slot) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label: Option<(&str, &str)>) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let extra = label
            .map(|(k, v)| format!("{k}=\"{v}\","))
            .unwrap_or_default();
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |v| v.to_string());
            let _ = writeln!(out, "{name}_bucket{{{extra}le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let labels = label
            .map(|(k, v)| format!("{{{k}=\"{v}\"}}"))
            .unwrap_or_default();
        let _ = writeln!(out, "{name}_sum{labels} {sum}");
        let _ = writeln!(out, "{name}_count{labels} {cumulative}");
    }
}

/// A counter split by one label.
#[derive(Debug, Default)]
pub struct LabeledCounter(Mutex<BTreeMap<&'static str, u64>>);

impl LabeledCounter {
    /// Adds one to the series `value`.
    pub fn inc(&self, value: &'static str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(value).or_insert(0) += 1;
    }

    /// The current count of series `value`.
    pub fn get(&self, value: &str) -> u64 {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(value).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (value, n) in map.iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }
}

/// Everything SPEC §10 lists, for one process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// SSH connections open now.
    pub connections_open: AtomicI64,
    /// SSH connections accepted since start.
    pub connections_total: AtomicU64,
    /// Closed SSH connections by outcome (see [`connection_outcome`]).
    pub connections_closed: LabeledCounter,
    /// Connections refused or closed by a pre-authentication limit, by reason
    /// (`per_source`, `total`, `shed`, `handshake_timeout`, `login_timeout`,
    /// `sign_in_codes`, `http_total`, `http_per_source`).
    pub connections_shed: LabeledCounter,
    /// Unauthenticated SSH connections held now.
    pub connections_unauthenticated: AtomicI64,
    /// Sign-in codes issued.
    pub codes_issued: AtomicU64,
    /// Sign-in codes decided, by outcome (`approved`, `denied`, `expired`, `abandoned`).
    pub codes_decided: LabeledCounter,
    /// Time from a code's issue to its decision.
    pub code_decision: Histogram,
    /// Time from a revocation reaching this process to the connection's close.
    pub revocation: Histogram,
    /// Payload bytes relayed from clients to upstreams.
    pub bytes_to_upstream: AtomicU64,
    /// Payload bytes relayed from upstreams to clients.
    pub bytes_to_client: AtomicU64,
    /// Time to connect, verify and log in to an upstream, successful attempts.
    pub upstream_connect: Histogram,
    /// Upstream connection attempts that failed.
    pub upstream_connect_failures: AtomicU64,
}

/// The `outcome` label of a closed connection: `unauthenticated` (never got in),
/// `revoked` (ended by a revocation, sign-out, expiry or policy change),
/// `client_closed` or `server_closed`.
pub fn connection_outcome(authenticated: bool, ended_by: &str) -> &'static str {
    if ended_by.contains("access revoked") {
        "revoked"
    } else if !authenticated {
        "unauthenticated"
    } else if ended_by == "client" {
        "client_closed"
    } else {
        "server_closed"
    }
}

impl Metrics {
    /// The Prometheus text exposition; `bindings_active` is read from the store by
    /// the caller (`None` when the store could not answer: the series is left out).
    pub fn render(&self, bindings_active: Option<u64>) -> String {
        let mut out = String::new();
        self.render_connections(&mut out);
        self.render_sign_in(&mut out, bindings_active);
        self.render_relay(&mut out);
        out
    }

    /// SSH connections: open, accepted, closed, shed, unauthenticated.
    fn render_connections(&self, out: &mut String) {
        gauge(
            out,
            "tether_ssh_connections_open",
            "SSH connections open now.",
            self.connections_open.load(Ordering::Relaxed),
        );
        counter(
            out,
            "tether_ssh_connections_total",
            "SSH connections accepted.",
            self.connections_total.load(Ordering::Relaxed),
        );
        self.connections_closed.render(
            out,
            "tether_ssh_connections_closed_total",
            "SSH connections closed, by outcome.",
            "outcome",
        );
        self.connections_shed.render(
            out,
            "tether_connections_shed_total",
            "Connections refused or closed by a pre-authentication limit, by reason.",
            "reason",
        );
        gauge(
            out,
            "tether_ssh_connections_unauthenticated",
            "SSH connections not authenticated yet.",
            self.connections_unauthenticated.load(Ordering::Relaxed),
        );
    }

    /// Sign-in codes and bindings.
    fn render_sign_in(&self, out: &mut String, bindings_active: Option<u64>) {
        counter(
            out,
            "tether_auth_codes_issued_total",
            "Sign-in codes issued.",
            self.codes_issued.load(Ordering::Relaxed),
        );
        self.codes_decided.render(
            out,
            "tether_auth_codes_decided_total",
            "Sign-in codes decided, by outcome.",
            "outcome",
        );
        self.code_decision.render(
            out,
            "tether_auth_code_decision_seconds",
            "Time from a sign-in code's issue to its decision.",
            None,
        );
        if let Some(n) = bindings_active {
            gauge(
                out,
                "tether_bindings_active",
                "Client bindings currently valid.",
                i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
    }

    /// Revocation, relayed bytes and upstream connections.
    fn render_relay(&self, out: &mut String) {
        self.revocation.render(
            out,
            "tether_revocation_seconds",
            "Time from a revocation reaching this process to the connection's close.",
            None,
        );
        let _ = writeln!(
            out,
            "# HELP tether_relayed_bytes_total Payload bytes relayed, by direction.\n\
             # TYPE tether_relayed_bytes_total counter\n\
             tether_relayed_bytes_total{{direction=\"to_upstream\"}} {}\n\
             tether_relayed_bytes_total{{direction=\"to_client\"}} {}",
            self.bytes_to_upstream.load(Ordering::Relaxed),
            self.bytes_to_client.load(Ordering::Relaxed),
        );
        self.upstream_connect.render(
            out,
            "tether_upstream_connect_seconds",
            "Time to connect, verify and log in to an upstream (successful attempts).",
            None,
        );
        counter(
            out,
            "tether_upstream_connect_failures_total",
            "Upstream connection attempts that failed.",
            self.upstream_connect_failures.load(Ordering::Relaxed),
        );
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: i64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let m = Metrics::default();
        m.upstream_connect.observe(Duration::from_millis(3));
        m.upstream_connect.observe(Duration::from_millis(40));
        m.upstream_connect.observe(Duration::from_secs(1000));
        let text = m.render(None);
        assert!(text.contains("tether_upstream_connect_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(text.contains("tether_upstream_connect_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("tether_upstream_connect_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("tether_upstream_connect_seconds_bucket{le=\"300\"} 2\n"));
        assert!(text.contains("tether_upstream_connect_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("tether_upstream_connect_seconds_count 3\n"));
        assert!(text.contains("tether_upstream_connect_seconds_sum 1000.043\n"));
    }

    #[test]
    fn labeled_counters_and_optional_gauge() {
        let m = Metrics::default();
        m.codes_decided.inc("approved");
        m.codes_decided.inc("approved");
        m.codes_decided.inc("denied");
        let text = m.render(Some(4));
        assert!(text.contains("tether_auth_codes_decided_total{outcome=\"approved\"} 2\n"));
        assert!(text.contains("tether_auth_codes_decided_total{outcome=\"denied\"} 1\n"));
        assert!(text.contains("tether_bindings_active 4\n"));
        assert!(!m.render(None).contains("tether_bindings_active"));
        // Every sample line belongs to a declared metric family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} "))
                    || text.contains(&format!("# TYPE {name} ")),
                "{line}"
            );
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            connection_outcome(false, "client left during sign-in"),
            "unauthenticated"
        );
        assert_eq!(connection_outcome(true, "client"), "client_closed");
        assert_eq!(
            connection_outcome(true, "access revoked: binding revoked by its owner"),
            "revoked"
        );
        assert_eq!(
            connection_outcome(true, "server shutting down"),
            "server_closed"
        );
    }
}
