//! Time criteria: `date` (after/before an instant), `day_of_week` (`mon-fri`,
//! `tue,thu`, `monday,tuesday`) and `time_of_day` (`after`/`before` `HH:MM`, optional
//! `timezone`: `UTC` or a fixed offset such as `+02:00`; named zones are refused
//! rather than guessed).

use crate::config::yaml::Node;
use crate::time::Timestamp;

/// `date: {after, before}`; either bound optional.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateRange {
    /// Matches at or after this instant.
    pub after: Option<Timestamp>,
    /// Matches before this instant.
    pub before: Option<Timestamp>,
}

impl DateRange {
    /// Whether `now` is inside.
    pub fn matches(&self, now: Timestamp) -> bool {
        self.after.is_none_or(|a| now >= a) && self.before.is_none_or(|b| now < b)
    }
}

/// Days of the week as a bit set, bit 0 = Sunday.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Days {
    /// Bit set.
    pub bits: u8,
    /// Offset from UTC in minutes for deciding the day.
    pub offset_minutes: i32,
}

impl Days {
    /// Whether `now` falls on one of the days.
    pub fn matches(&self, now: Timestamp) -> bool {
        let local = now.unix_seconds() + i64::from(self.offset_minutes) * 60;
        // 1970-01-01 was a Thursday (4).
        let weekday = (local.div_euclid(86_400) + 4).rem_euclid(7);
        self.bits & (1u8 << weekday) != 0
    }
}

/// `time_of_day: {after, before, timezone}` in minutes since midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRange {
    /// Matches at or after (minutes since local midnight).
    pub after: Option<u32>,
    /// Matches before.
    pub before: Option<u32>,
    /// Offset from UTC in minutes.
    pub offset_minutes: i32,
}

impl TimeRange {
    /// Whether `now` is inside; `after > before` wraps past midnight.
    pub fn matches(&self, now: Timestamp) -> bool {
        let local = now.unix_seconds() + i64::from(self.offset_minutes) * 60;
        let minute = u32::try_from(local.rem_euclid(86_400) / 60).unwrap_or(0);
        match (self.after, self.before) {
            (Some(a), Some(b)) if a > b => minute >= a || minute < b,
            (a, b) => a.is_none_or(|a| minute >= a) && b.is_none_or(|b| minute < b),
        }
    }
}

const DAY_NAMES: [(&str, &str); 7] = [
    ("sun", "sunday"),
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
];

fn day_index(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    if let Ok(n) = s.parse::<u8>() {
        return (n < 7).then_some(n);
    }
    DAY_NAMES
        .iter()
        .position(|(short, long)| s == *short || s == *long)
        .and_then(|i| u8::try_from(i).ok())
}

/// Parses `mon-fri`, `tue,thu`, `monday,tuesday`, `sat-sun` (ranges wrap).
pub fn parse_days(text: &str) -> Result<Days, String> {
    let mut bits = 0u8;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("unknown day {part:?} (expected e.g. mon-fri or tue,thu)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a).ok_or_else(bad)?, day_index(b).ok_or_else(bad)?);
                let mut d = a;
                loop {
                    bits |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => bits |= 1 << day_index(part).ok_or_else(bad)?,
        }
    }
    if bits == 0 {
        return Err("expected at least one day".into());
    }
    Ok(Days {
        bits,
        offset_minutes: 0,
    })
}

/// `UTC`, `Z`, `Etc/UTC`, `+02:00`, `-0530`.
pub fn parse_offset(tz: &str) -> Result<i32, String> {
    let t = tz.trim();
    if matches!(t, "UTC" | "utc" | "Z" | "Etc/UTC" | "GMT") {
        return Ok(0);
    }
    let unsupported =
        || format!("timezone {t:?} not supported (use UTC or a fixed offset such as +02:00)");
    let (sign, rest) = match t.chars().next() {
        Some('+') => (1, t.get(1..).unwrap_or("")),
        Some('-') => (-1, t.get(1..).unwrap_or("")),
        _ => return Err(unsupported()),
    };
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 4 || rest.len() > 5 {
        return Err(unsupported());
    }
    let h: i32 = digits
        .get(..2)
        .and_then(|s| s.parse().ok())
        .ok_or_else(unsupported)?;
    let m: i32 = digits
        .get(2..)
        .and_then(|s| s.parse().ok())
        .ok_or_else(unsupported)?;
    if h > 14 || m > 59 {
        return Err(unsupported());
    }
    Ok(sign * (h * 60 + m))
}

fn parse_hhmm(s: &str) -> Result<u32, String> {
    let bad = || format!("expected HH:MM, found {s:?}");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let m = m.get(..2).unwrap_or(m);
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Days since the epoch of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses RFC 3339 (`2026-01-31T09:00:00Z`, `...+02:00`) or a bare date (UTC midnight).
pub fn parse_instant(s: &str) -> Result<Timestamp, String> {
    let bad = || format!("expected an RFC 3339 time such as 2026-01-31T09:00:00Z, found {s:?}");
    let s = s.trim();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r).and_then(|t| t.parse::<i64>().ok()).ok_or_else(bad)
    };
    if s.len() < 10 || s.get(4..5) != Some("-") || s.get(7..8) != Some("-") {
        return Err(bad());
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    if s.len() > 10 {
        if !matches!(s.get(10..11), Some("T" | "t" | " ")) || s.get(13..14) != Some(":") {
            return Err(bad());
        }
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + se;
        let mut rest = s.get(19..).ok_or_else(bad)?;
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(frac.len());
            rest = frac.get(n..).unwrap_or("");
        }
        let offset = parse_offset(if rest.is_empty() { "Z" } else { rest }).map_err(|_| bad())?;
        secs -= i64::from(offset) * 60;
    }
    Ok(Timestamp(secs.saturating_mul(1000)))
}

pub(super) fn parse_date_range(v: &Node) -> Result<DateRange, String> {
    let get = |k: &str| -> Result<Option<Timestamp>, String> {
        v.get(k)
            .map(|n| {
                n.as_str()
                    .ok_or_else(|| format!("{k}: expected a time"))
                    .and_then(parse_instant)
            })
            .transpose()
    };
    if v.as_map().is_none() {
        return Err("expected after: and/or before:".into());
    }
    let range = DateRange {
        after: get("after")?,
        before: get("before")?,
    };
    if range.after.is_none() && range.before.is_none() {
        return Err("expected after: and/or before:".into());
    }
    Ok(range)
}

pub(super) fn parse_time_range(v: &Node) -> Result<TimeRange, String> {
    if v.as_map().is_none() {
        return Err("expected after: and/or before: (HH:MM)".into());
    }
    let get = |k: &str| -> Result<Option<u32>, String> {
        v.get(k)
            .map(|n| {
                n.as_str()
                    .ok_or_else(|| format!("{k}: expected HH:MM"))
                    .and_then(parse_hhmm)
            })
            .transpose()
    };
    let offset_minutes = match v.get("timezone").and_then(Node::as_str) {
        Some(tz) => parse_offset(tz)?,
        None => 0,
    };
    let range = TimeRange {
        after: get("after")?,
        before: get("before")?,
        offset_minutes,
    };
    if range.after.is_none() && range.before.is_none() {
        return Err("expected after: and/or before: (HH:MM)".into());
    }
    Ok(range)
}
