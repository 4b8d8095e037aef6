//! Latency summaries: nearest-rank percentiles over the recorded samples (no
//! interpolation, so p99 of 100 samples is the 99th smallest and max the 100th).

use std::time::Duration;

/// n, p50, p99, max and mean of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of ascending `sorted` samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The summary of `samples` (any order); `None` when there are none.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let total: Duration = sorted.iter().sum();
    Some(Summary {
        n: sorted.len(),
        p50: percentile(&sorted, 50.0),
        p99: percentile(&sorted, 99.0),
        max: *sorted.last().unwrap(),
        mean: total / u32::try_from(sorted.len()).unwrap(),
    })
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = summarize(&hundred).unwrap();
        assert_eq!(s.n, 100);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));

        let ten = summarize(&millis(&[5, 1, 9, 3, 7, 2, 8, 4, 6, 10])).unwrap();
        assert_eq!(ten.p50, Duration::from_millis(5));
        assert_eq!(ten.p99, Duration::from_millis(10));
        assert_eq!(
            summarize(&millis(&[7])).unwrap().p50,
            Duration::from_millis(7)
        );
        assert_eq!(summarize(&[]), None);
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(ms(Duration::from_micros(1234)), "1.23");
    }
}
