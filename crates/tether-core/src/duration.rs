//! Go duration syntax (`14h`, `30m`, `1h30m`, `5s`, `250ms`), as Pomerium's config uses.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// The string was empty.
    #[error("empty duration")]
    Empty,
    /// The string is not `<number><unit>` repeated.
    #[error("invalid duration {0:?} (expected Go syntax such as 14h, 30m, 1h30m, 90s)")]
    Invalid(String),
}

/// Parses a Go duration string. Negative durations are refused.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || DurationError::Invalid(input.to_string());
    let mut total_nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_nanos: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        let value: f64 = num.parse().map_err(|_| bad())?;
        let nanos = value * unit_nanos;
        if !nanos.is_finite() || !(0.0..=1e20).contains(&nanos) {
            return Err(bad());
        }
        // Bounded above, so the conversion cannot overflow.
        total_nanos = total_nanos.saturating_add(nanos as u128);
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| bad())?;
    let sub = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_examples() {
        assert_eq!(parse_duration("14h"), Ok(Duration::from_secs(14 * 3600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_garbage() {
        for s in ["", "h", "10", "10d", "-5s", "1h-", "abc", "1e400h"] {
            assert!(parse_duration(s).is_err(), "{s:?} should be refused");
        }
    }
}
