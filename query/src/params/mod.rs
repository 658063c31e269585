//! The one grammar for times and durations in Weft's native HTTP API (search, dependencies,
//! latency, metrics, the SQL range table functions), and the query-string reader the
//! endpoints share. Foreign APIs speak their own dialect through an explicit adapter on top
//! of it: [`jaeger`] (microsecond and millisecond epochs, Go durations, tag JSON); a
//! Prometheus adapter (`prometheus.rs`: RFC 3339 or float unix seconds, `5m`, float-second
//! `step`) belongs beside it.
//!
//! ```text
//!  query string ─> Params (pairs in request order; repeats kept, unknown names refused)
//!     ├─ instant:  2024-01-01T00:00:00Z | 2024-01-01T01:00:00.5+01:00      RFC 3339
//!     │            1704067200 | 1704067200000 | 1704067200000000 | 1704067200000000000
//!     │                        bare number: unix time, unit read off its size
//!     │            1704067200s | 1704067200000ms | …us | …ns   unix time, unit given
//!     ├─ duration: 250ms | 1.5s | 5m | 1h30m | 2d | 1w   (ns us µs ms s m h d w, terms add)
//!     │            60 | 0.5                            bare number: seconds
//!     └─ range:    start, end (end defaults to now, start to an hour before end), start < end
//!  errors: ParamError, naming the parameter and the accepted forms (HTTP 400)
//! ```
//!
//! **Bare numbers as instants.** Search took unix nanoseconds and metrics unix seconds, and
//! clients of both exist, so a bare number's unit follows from its size: below 10^11 it is
//! seconds (fractions allowed; up to the year 5138), below 10^14 milliseconds, below 10^17
//! microseconds, otherwise nanoseconds. A millisecond time before March 1973 would read as
//! seconds: give such times in RFC 3339 or with a unit (`5ns`).

pub mod jaeger;

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_HOUR: i64 = 3_600 * NANOS_PER_SECOND;

/// What a parameter's value should have looked like, for error messages.
pub const INSTANT_FORMS: &str = "an RFC 3339 time (2024-01-01T00:00:00Z) or unix time \
    (1704067200 seconds, or ms/us/ns told apart by size, or with a unit: 1704067200000ms)";
/// What a duration should have looked like, for error messages.
pub const DURATION_FORMS: &str = "a duration such as 250ms, 1.5s, 5m or 1h30m (units ns, us, \
    ms, s, m, h, d, w) or bare seconds (60)";

/// A parameter that could not be read. Every message names the parameter; the HTTP layer
/// answers 400 with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("{name}: {value:?} is not a time: expected {INSTANT_FORMS}")]
    Instant { name: String, value: String },
    #[error("{name}: {value:?} is not a duration: expected {DURATION_FORMS}")]
    Duration { name: String, value: String },
    #[error("{name}={value:?} must be a positive duration such as 30s, 5m or 250ms")]
    NotPositive { name: String, value: String },
    #[error("{start_name} ({start_ns}) must be before {end_name} ({end_ns})")]
    EmptyRange {
        start_name: String,
        start_ns: i64,
        end_name: String,
        end_ns: i64,
    },
    #[error("parameter {0:?} is given more than once")]
    Repeated(String),
    #[error("unknown parameter {name:?}; known parameters: {known}")]
    Unknown { name: String, known: String },
    /// A dialect's own rule (see [`jaeger`]), with the dialect's wording.
    #[error("{0}")]
    Dialect(String),
}

pub type Result<T, E = ParamError> = std::result::Result<T, E>;

/// The query string as `(name, value)` pairs in request order, so repeated parameters
/// (`attr=a&attr=b`) survive, which a struct-shaped extractor would not allow.
#[derive(Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Test input: `[("service", "web"), ...]`.
    #[cfg(test)]
    pub fn from_pairs(query: &[(&str, &str)]) -> Self {
        Params(
            query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The value of `name`, `None` when absent; an empty value counts as absent (HTML forms
    /// and the Jaeger UI send `operation=` for "any"). Given twice it is an error rather than
    /// a silent pick of one.
    pub fn one(&self, name: &str) -> Result<Option<&str>> {
        let mut found = self
            .0
            .iter()
            .filter(|(key, value)| key == name && !value.is_empty());
        let first = found.next().map(|(_, value)| value.as_str());
        if found.next().is_some() {
            return Err(ParamError::Repeated(name.to_owned()));
        }
        Ok(first)
    }

    /// The first non-empty value of any of `names` (a canonical name and its aliases).
    pub fn first_of<'n>(&self, names: &[&'n str]) -> Result<Option<(&'n str, &str)>> {
        for name in names {
            if let Some(value) = self.one(name)? {
                return Ok(Some((name, value)));
            }
        }
        Ok(None)
    }

    /// Every non-empty value of `name`, in request order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    /// Fails on a parameter not in `known`, so a typo (`servce=`) is reported instead of
    /// silently widening the search.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        match self
            .0
            .iter()
            .find(|(key, _)| !known.contains(&key.as_str()))
        {
            Some((key, _)) => Err(ParamError::Unknown {
                name: key.clone(),
                known: known.join(", "),
            }),
            None => Ok(()),
        }
    }
}

/// `[start_ns, end_ns)`, unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ns: i64,
    pub end_ns: i64,
}

impl TimeRange {
    /// The range's length in seconds (for rates).
    pub fn seconds(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }

    pub fn contains(&self, t: i64) -> bool {
        t >= self.start_ns && t < self.end_ns
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A point in time (see the module docs), as unix nanoseconds.
pub fn parse_instant(name: &str, text: &str) -> Result<i64> {
    let bad = || ParamError::Instant {
        name: name.to_owned(),
        value: text.to_owned(),
    };
    let trimmed = text.trim();
    let (negative, unsigned) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    if let Some((whole, fraction)) = decimal(unsigned) {
        let unit_ns = unix_unit_of(whole).ok_or_else(bad)?;
        let ns = scaled(whole, fraction, unit_ns).ok_or_else(bad)?;
        return signed(negative, ns).ok_or_else(bad);
    }
    let number_end = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    if number_end > 0 && !unsigned.contains([':', 'T']) {
        let (number, unit) = unsigned.split_at(number_end);
        let unit_ns = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SECOND as u128,
            _ => return Err(bad()),
        };
        let (whole, fraction) = decimal(number).ok_or_else(bad)?;
        let ns = scaled(whole, fraction, unit_ns).ok_or_else(bad)?;
        return signed(negative, ns).ok_or_else(bad);
    }
    chrono::DateTime::parse_from_rfc3339(trimmed)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(bad)
}

/// A non-negative duration (see the module docs), in nanoseconds.
pub fn parse_duration(name: &str, text: &str) -> Result<i64> {
    let bad = || ParamError::Duration {
        name: name.to_owned(),
        value: text.to_owned(),
    };
    let mut rest = text.trim();
    if let Some((whole, fraction)) = decimal(rest) {
        return scaled(whole, fraction, NANOS_PER_SECOND as u128)
            .and_then(|ns| i64::try_from(ns).ok())
            .ok_or_else(bad);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let (whole, fraction) = decimal(number).ok_or_else(bad)?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let unit_ns = duration_unit(unit).ok_or_else(bad)?;
        total = scaled(whole, fraction, unit_ns)
            .and_then(|ns| total.checked_add(ns))
            .ok_or_else(bad)?;
        rest = next;
    }
    i64::try_from(total).map_err(|_| bad())
}

/// A duration that must be above zero (a `step`).
pub fn parse_positive_duration(name: &str, text: &str) -> Result<i64> {
    let ns = parse_duration(name, text)?;
    if ns <= 0 {
        return Err(ParamError::NotPositive {
            name: name.to_owned(),
            value: text.to_owned(),
        });
    }
    Ok(ns)
}

/// `[start, end)` from optional `start` and `end`: `end` defaults to `now_ns`, `start` to
/// one hour before `end`. An empty or reversed range is refused.
pub fn time_range(start: Option<&str>, end: Option<&str>, now_ns: i64) -> Result<TimeRange> {
    time_range_named(("start", start), ("end", end), now_ns)
}

/// [`time_range`] for parameters with other names (`compare_start`, `compare_end`).
pub fn time_range_named(
    (start_name, start): (&str, Option<&str>),
    (end_name, end): (&str, Option<&str>),
    now_ns: i64,
) -> Result<TimeRange> {
    let end_ns = end.map(|e| parse_instant(end_name, e)).transpose()?;
    let start_ns = start.map(|s| parse_instant(start_name, s)).transpose()?;
    range_of_instants((start_name, start_ns), (end_name, end_ns), now_ns)
}

/// [`time_range_named`] for instants already read (the SQL table functions' arguments).
pub fn range_of_instants(
    (start_name, start_ns): (&str, Option<i64>),
    (end_name, end_ns): (&str, Option<i64>),
    now_ns: i64,
) -> Result<TimeRange> {
    let end_ns = end_ns.unwrap_or(now_ns);
    let start_ns = start_ns.unwrap_or(end_ns.saturating_sub(NANOS_PER_HOUR));
    if start_ns >= end_ns {
        return Err(ParamError::EmptyRange {
            start_name: start_name.to_owned(),
            start_ns,
            end_name: end_name.to_owned(),
            end_ns,
        });
    }
    Ok(TimeRange { start_ns, end_ns })
}

/// An instant as RFC 3339 in UTC with nanoseconds (`2017-01-26T15:46:31.639875000Z`), the
/// form every native answer uses; [`parse_instant`] reads it back exactly.
pub fn format_instant(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

/// A duration in the largest unit that holds it exactly (`90s`, `250ms`, `1500ns`, `0s`);
/// [`parse_duration`] reads it back exactly.
pub fn format_duration(ns: i64) -> String {
    const UNITS: [(&str, i64); 7] = [
        ("d", 86_400 * NANOS_PER_SECOND),
        ("h", NANOS_PER_HOUR),
        ("m", 60 * NANOS_PER_SECOND),
        ("s", NANOS_PER_SECOND),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    if ns == 0 {
        return "0s".to_owned();
    }
    let (unit, per) = UNITS
        .into_iter()
        .find(|(_, per)| ns % per == 0)
        .unwrap_or(("ns", 1));
    format!("{}{unit}", ns / per)
}

fn duration_unit(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 604_800_000_000_000,
        _ => return None,
    })
}

/// The unit of a bare unix time, from the size of its whole part (see the module docs).
fn unix_unit_of(whole: &str) -> Option<u128> {
    let value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    Some(match value {
        0..100_000_000_000 => 1_000_000_000,
        100_000_000_000..100_000_000_000_000 => 1_000_000,
        100_000_000_000_000..100_000_000_000_000_000 => 1_000,
        _ => 1,
    })
}

/// `digits[.digits]` or `.digits`: the whole and fractional digits. `None` for anything
/// else (signs, exponents, units).
fn decimal(text: &str) -> Option<(&str, &str)> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    Some((whole, fraction))
}

/// `whole.fraction` units of `unit_ns` nanoseconds, truncated to whole nanoseconds.
fn scaled(whole: &str, fraction: &str, unit_ns: u128) -> Option<u128> {
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut ns = whole.checked_mul(unit_ns)?;
    if !fraction.is_empty() {
        // Digits beyond the 19th cannot change a result in nanoseconds of an i64.
        let fraction = &fraction[..fraction.len().min(19)];
        let scale = 10u128.pow(fraction.len() as u32);
        ns = ns.checked_add(fraction.parse::<u128>().ok()? * unit_ns / scale)?;
    }
    Some(ns)
}

fn signed(negative: bool, ns: u128) -> Option<i64> {
    let ns = i128::try_from(ns).ok()?;
    i64::try_from(if negative { -ns } else { ns }).ok()
}

#[cfg(test)]
mod tests;
