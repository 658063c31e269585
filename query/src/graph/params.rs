//! Query parameters shared by `/api/v1/dependencies`, `/api/v1/latency` and the SQL table
//! functions: times (RFC 3339 or unix nanoseconds) and durations (`30s`, `5m`, `250ms`).

use std::time::{SystemTime, UNIX_EPOCH};

use super::scan::TimeRange;
use crate::{Error, Result};

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// A time given as RFC 3339 (`2024-01-01T00:00:00Z`, any offset) or as integer unix
/// nanoseconds.
pub fn parse_time(name: &str, text: &str) -> Result<i64> {
    let text = text.trim();
    if !text.is_empty()
        && text
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
    {
        return text.parse::<i64>().map_err(|_| {
            Error::BadRequest(format!(
                "{name}={text:?} is out of range for unix nanoseconds"
            ))
        });
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "{name}={text:?} is neither an RFC 3339 time nor unix nanoseconds"
            ))
        })
}

/// A positive duration: an integer with a unit (`ns`, `us`, `ms`, `s`, `m`, `h`, `d`), or
/// a bare integer of seconds.
pub fn parse_duration(name: &str, text: &str) -> Result<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let per_unit: i64 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => NANOS_PER_HOUR,
        "d" => 24 * NANOS_PER_HOUR,
        _ => 0,
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit))
        .filter(|ns| *ns > 0)
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "{name}={text:?} is not a positive duration such as 30s, 5m or 250ms"
            ))
        })
}

/// Now, in unix nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

/// `[start, end)` from optional parameters: `end` defaults to now, `start` to one hour
/// before `end`. An empty or reversed range is refused.
pub fn time_range(start: Option<&str>, end: Option<&str>, now_ns: i64) -> Result<TimeRange> {
    let end_ns = end
        .map(|e| parse_time("end", e))
        .transpose()?
        .unwrap_or(now_ns);
    let start_ns = start
        .map(|s| parse_time("start", s))
        .transpose()?
        .unwrap_or(end_ns.saturating_sub(NANOS_PER_HOUR));
    if start_ns >= end_ns {
        return Err(Error::BadRequest(format!(
            "start ({start_ns}) must be before end ({end_ns})"
        )));
    }
    Ok(TimeRange { start_ns, end_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_nanoseconds() {
        assert_eq!(
            parse_time("t", "1700000000000000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("t", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time("t", "2023-11-14T23:13:20.5+01:00").unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(parse_time("t", "-5").unwrap(), -5);
        for bad in ["", "yesterday", "2023-11-14", "99999999999999999999", "1e9"] {
            let err = parse_time("start", bad).unwrap_err();
            assert!(matches!(err, Error::BadRequest(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_need_a_known_unit_and_a_positive_value() {
        assert_eq!(parse_duration("step", "30s").unwrap(), 30_000_000_000);
        assert_eq!(parse_duration("step", "5m").unwrap(), 300_000_000_000);
        assert_eq!(parse_duration("step", "250ms").unwrap(), 250_000_000);
        assert_eq!(parse_duration("step", "60").unwrap(), 60_000_000_000);
        for bad in ["0s", "-1s", "5 parsecs", "m", "", "9999999999999999d"] {
            assert!(parse_duration("step", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_default_to_the_last_hour_and_must_not_be_empty() {
        let now = 10 * NANOS_PER_HOUR;
        assert_eq!(
            time_range(None, None, now).unwrap(),
            TimeRange {
                start_ns: 9 * NANOS_PER_HOUR,
                end_ns: now
            }
        );
        assert_eq!(
            time_range(Some("5"), Some("7"), now).unwrap(),
            TimeRange {
                start_ns: 5,
                end_ns: 7
            }
        );
        assert!(time_range(Some("7"), Some("7"), now).is_err());
        assert!(time_range(Some("8"), Some("7"), now).is_err());
    }
}
