//! The dev IdP's password form is rate-limited per source address (issue 12): a
//! token bucket per IP (IPv6 by /64), [`BURST`] attempts at once and one more every
//! [`REFILL`], with at most [`MAX_SOURCES`] buckets held. When the table is full,
//! buckets that have refilled completely are forgotten (they say nothing a fresh
//! bucket would not); if none has, a new source is refused — fail closed, memory
//! stays bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts a source may make at once.
pub(crate) const BURST: u32 = 10;
/// One more attempt per this much time.
pub(crate) const REFILL: Duration = Duration::from_secs(6);
/// Sources tracked at once.
pub(crate) const MAX_SOURCES: usize = 4096;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt / REFILL.as_secs_f64()).min(f64::from(BURST));
        self.last = now;
    }
}

/// Per-source attempt buckets.
#[derive(Default)]
pub(crate) struct Throttle {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The key for an address: IPv4 as is, IPv6 by its /64.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut s = v6.segments();
            for x in s.iter_mut().skip(4) {
                *x = 0;
            }
            IpAddr::from(s)
        }
    }
}

impl Throttle {
    /// Takes one attempt for `ip` at `now`; `false` when it must wait.
    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let key = source(ip);
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&key) && map.len() >= MAX_SOURCES {
            map.retain(|_, b| {
                b.refill(now);
                b.tokens < f64::from(BURST)
            });
            if map.len() >= MAX_SOURCES {
                return false;
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: f64::from(BURST),
            last: now,
        });
        b.refill(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sources currently tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_source() {
        let t = Throttle::default();
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..BURST {
            assert!(t.allow(a, now));
        }
        assert!(!t.allow(a, now), "burst spent");
        assert!(t.allow(b, now), "another source is not affected");
        assert!(!t.allow(a, now + REFILL / 2));
        assert!(t.allow(a, now + REFILL + REFILL / 2), "one refilled");
        // One IPv6 /64 is one source.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 0..BURST {
            assert!(t.allow(v6(&format!("2001:db8::{i:x}")), now));
        }
        assert!(!t.allow(v6("2001:db8::ffff:1"), now));
    }

    #[test]
    fn memory_is_bounded_and_full_table_fails_closed() {
        let t = Throttle::default();
        let now = Instant::now();
        let ip = |i: usize| IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        for i in 0..MAX_SOURCES {
            assert!(t.allow(ip(i), now));
        }
        assert_eq!(t.len(), MAX_SOURCES);
        assert!(!t.allow(ip(MAX_SOURCES), now), "full: a new source waits");
        // Once the old buckets have refilled they are forgotten.
        let later = now + REFILL * 2;
        assert!(t.allow(ip(MAX_SOURCES), later));
        assert!(t.len() <= MAX_SOURCES);
    }
}
