//! Admission before authentication: what an unauthenticated client may hold.
//!
//! Every accepted connection takes a [`Slot`] from the [`Gate`] and gives it back
//! when it authenticates or closes. The gate caps unauthenticated connections
//! overall and per source (an IPv4 address, an IPv6 /64). At the overall cap it
//! sheds fairly: a newcomer from a source holding fewer connections than the
//! biggest holder takes the place of that holder's oldest connection that has not
//! yet been shown a sign-in link (a person may be signing in behind it); otherwise
//! the newcomer is refused. A flood from many addresses therefore cannot lock out
//! a user from another address, and one address cannot hold more than its share.
//!
//! [`CodeBudget`] limits the sign-in codes one source is issued (a token bucket),
//! so nobody can fill the store with pending sign-in requests.
//!
//! Pure bookkeeping behind one mutex: no I/O, and nothing here grows beyond the
//! caps (the code budget forgets sources whose bucket is full again).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_core::metrics::Metrics;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The unit limits are counted in: an IPv4 address, or an IPv6 /64 (one host's
/// usual allocation), so rotating addresses inside a /64 does not multiply a quota.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct Source(u128);

impl Source {
    pub(crate) fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(u128::from(u32::from(v4))),
                None => Source((u128::from(v6) >> 64) | (1 << 127)),
            },
        }
    }
}

/// Why a connection was not let in (or was let go); `Display` is the one line
/// written to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The source already holds its share of unauthenticated connections.
    #[error("too many unauthenticated connections from your address; try again later")]
    PerSource,
    /// The gateway holds its cap of unauthenticated connections.
    #[error("too many unauthenticated connections; try again later")]
    Total,
}

impl Refused {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::PerSource => "per_source",
            Refused::Total => "total",
        }
    }
}

struct Entry {
    id: u64,
    /// Cancelled when this connection is shed to make room.
    shed: CancellationToken,
    /// Set once the connection was shown a sign-in link: never shed after that.
    signing_in: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    total: usize,
    by_source: HashMap<Source, VecDeque<Entry>>,
    next_id: u64,
}

/// The pre-authentication caps and who holds them.
pub(crate) struct Gate {
    max_total: usize,
    max_per_source: usize,
    state: Mutex<State>,
    /// Where the number held is published (`tether_ssh_connections_unauthenticated`).
    metrics: Option<Arc<Metrics>>,
}

/// One unauthenticated connection's place; given back on drop or [`Slot::release`].
pub(crate) struct Slot {
    gate: Arc<Gate>,
    source: Source,
    id: u64,
    /// Cancelled if the gate sheds this connection.
    pub(crate) shed: CancellationToken,
    signing_in: Arc<AtomicBool>,
    released: bool,
}

impl Gate {
    pub(crate) fn new(
        max_total: usize,
        max_per_source: usize,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            state: Mutex::new(State::default()),
            metrics,
        })
    }

    /// The overall cap in force.
    pub(crate) fn max_total(&self) -> usize {
        self.max_total
    }

    fn publish(&self, held: usize) {
        if let Some(m) = &self.metrics {
            m.connections_unauthenticated
                .store(i64::try_from(held).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place for a new connection from `ip`, shedding another source's
    /// connection when the gate is full and that is fair; see the module docs.
    /// Returns the slot and, when one was shed, nothing more is needed: the shed
    /// connection's token is cancelled here.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let source = Source::of(ip);
        let mut st = self.lock();
        let mine = st.by_source.get(&source).map_or(0, VecDeque::len);
        if mine >= self.max_per_source {
            return Err(Refused::PerSource);
        }
        if st.total >= self.max_total {
            let victim = st
                .by_source
                .iter()
                .filter(|(s, q)| **s != source && q.len() > mine + 1)
                .filter(|(_, q)| q.iter().any(|e| !e.signing_in.load(Ordering::Relaxed)))
                .max_by_key(|(_, q)| q.len())
                .map(|(s, _)| *s);
            let Some(victim) = victim else {
                return Err(Refused::Total);
            };
            let mut emptied = false;
            if let Some(queue) = st.by_source.get_mut(&victim) {
                if let Some(i) = queue
                    .iter()
                    .position(|e| !e.signing_in.load(Ordering::Relaxed))
                {
                    if let Some(entry) = queue.remove(i) {
                        entry.shed.cancel();
                    }
                }
                emptied = queue.is_empty();
            }
            if emptied {
                st.by_source.remove(&victim);
            }
            st.total = st.total.saturating_sub(1);
        }
        st.next_id = st.next_id.wrapping_add(1);
        let id = st.next_id;
        let shed = CancellationToken::new();
        let signing_in = Arc::new(AtomicBool::new(false));
        st.by_source.entry(source).or_default().push_back(Entry {
            id,
            shed: shed.clone(),
            signing_in: signing_in.clone(),
        });
        st.total += 1;
        self.publish(st.total);
        Ok(Slot {
            gate: Arc::clone(self),
            source,
            id,
            shed,
            signing_in,
            released: false,
        })
    }

    fn give_back(&self, source: Source, id: u64) {
        let mut st = self.lock();
        let mut found = false;
        let mut emptied = false;
        if let Some(queue) = st.by_source.get_mut(&source) {
            if let Some(i) = queue.iter().position(|e| e.id == id) {
                queue.remove(i);
                found = true;
            }
            emptied = queue.is_empty();
        }
        if emptied {
            st.by_source.remove(&source);
        }
        if found {
            st.total = st.total.saturating_sub(1);
        }
        self.publish(st.total);
    }

    /// Unauthenticated connections held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.lock().total
    }
}

impl Slot {
    /// The connection authenticated (or closed): its place is free again.
    pub(crate) fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.gate.give_back(self.source, self.id);
        }
    }

    /// The connection was shown a sign-in link: a person may be behind it, so it is
    /// no longer shed (it still counts until it authenticates).
    pub(crate) fn signing_in(&self) {
        self.signing_in.store(true, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// How long a full bucket of sign-in codes takes to earn one code back.
const CODE_REFILL: Duration = Duration::from_secs(60);
/// Sources remembered at most; past it, sources whose bucket is full are forgotten
/// and, if all are in use, new sources are refused codes (fail closed).
const CODE_SOURCES: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-source sign-in code budget: `burst` codes, then one per [`CODE_REFILL`].
pub(crate) struct CodeBudget {
    burst: f64,
    buckets: Mutex<HashMap<Source, Bucket>>,
}

impl CodeBudget {
    pub(crate) fn new(burst: u32) -> CodeBudget {
        CodeBudget {
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one code for `ip` at `now`; `false` when its budget is spent.
    pub(crate) fn take(&self, ip: IpAddr, now: Instant) -> bool {
        let source = Source::of(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let rate = 1.0 / CODE_REFILL.as_secs_f64();
        let refill = |b: &mut Bucket| {
            let earned = now.saturating_duration_since(b.at).as_secs_f64() * rate;
            b.tokens = (b.tokens + earned).min(self.burst);
            b.at = now;
        };
        if !buckets.contains_key(&source) && buckets.len() >= CODE_SOURCES {
            buckets.retain(|_, b| {
                refill(b);
                b.tokens < self.burst
            });
            if buckets.len() >= CODE_SOURCES {
                return false;
            }
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        refill(bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_cap_refuses_the_extra_connection_and_frees_on_release() {
        let gate = Gate::new(100, 2, None);
        let a = gate.admit(ip("10.0.0.1")).unwrap();
        let _b = gate.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(gate.admit(ip("10.0.0.1")).err(), Some(Refused::PerSource));
        // Another source is unaffected.
        let _c = gate.admit(ip("10.0.0.2")).unwrap();
        drop(a);
        assert!(gate.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn ipv6_sources_are_counted_per_64() {
        let gate = Gate::new(100, 1, None);
        let _a = gate.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            gate.admit(ip("2001:db8:1:2::ffff")).err(),
            Some(Refused::PerSource)
        );
        assert!(gate.admit(ip("2001:db8:1:3::1")).is_ok());
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
    }

    #[test]
    fn at_the_cap_a_small_source_sheds_the_biggest_holders_oldest() {
        let gate = Gate::new(4, 10, None);
        let flood: Vec<Slot> = (0..4)
            .map(|_| gate.admit(ip("10.9.9.9")).unwrap())
            .collect();
        assert_eq!(gate.held(), 4);
        let newcomer = gate.admit(ip("10.0.0.1")).unwrap();
        assert!(
            flood[0].shed.is_cancelled(),
            "the oldest flood connection goes"
        );
        assert!(flood[1..].iter().all(|s| !s.shed.is_cancelled()));
        assert!(!newcomer.shed.is_cancelled());
        assert_eq!(gate.held(), 4);
        // The flooding source cannot shed anyone to make room for itself.
        assert_eq!(gate.admit(ip("10.9.9.9")).err(), Some(Refused::Total));
        // Dropping the shed slot later does not free a second place.
        drop(flood);
        assert_eq!(gate.held(), 1);
    }

    #[test]
    fn sources_with_equal_shares_refuse_instead_of_shedding() {
        let gate = Gate::new(4, 10, None);
        let _a: Vec<Slot> = (0..2)
            .map(|_| gate.admit(ip("10.0.0.1")).unwrap())
            .collect();
        let _b: Vec<Slot> = (0..2)
            .map(|_| gate.admit(ip("10.0.0.2")).unwrap())
            .collect();
        // 10.0.0.3 holds 0; the biggest holds 2 > 1: it may shed one.
        let _c = gate.admit(ip("10.0.0.3")).unwrap();
        // Now 10.0.0.3 holds 1; every other source holds at most 2: refused.
        assert_eq!(gate.admit(ip("10.0.0.3")).err(), Some(Refused::Total));
    }

    #[test]
    fn a_connection_showing_a_sign_in_link_is_not_shed() {
        let gate = Gate::new(2, 10, None);
        let a = gate.admit(ip("10.9.9.9")).unwrap();
        let b = gate.admit(ip("10.9.9.9")).unwrap();
        a.signing_in();
        b.signing_in();
        assert_eq!(gate.admit(ip("10.0.0.1")).err(), Some(Refused::Total));
        assert!(!a.shed.is_cancelled() && !b.shed.is_cancelled());
    }

    #[test]
    fn released_slots_are_not_counted_and_release_is_idempotent() {
        let gate = Gate::new(10, 10, None);
        let mut a = gate.admit(ip("10.0.0.1")).unwrap();
        a.release();
        a.release();
        drop(a);
        assert_eq!(gate.held(), 0);
    }

    #[test]
    fn code_budget_is_a_per_source_bucket() {
        let budget = CodeBudget::new(2);
        let t0 = Instant::now();
        assert!(budget.take(ip("10.0.0.1"), t0));
        assert!(budget.take(ip("10.0.0.1"), t0));
        assert!(!budget.take(ip("10.0.0.1"), t0), "burst spent");
        assert!(
            budget.take(ip("10.0.0.2"), t0),
            "other sources have their own"
        );
        assert!(!budget.take(ip("10.0.0.1"), t0 + Duration::from_secs(30)));
        assert!(budget.take(ip("10.0.0.1"), t0 + Duration::from_secs(61)));
    }
}
