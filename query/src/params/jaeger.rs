//! Jaeger's dialect of query parameters, as its HTTP APIs take them. Nothing here is native
//! grammar: these forms are read only under `/api/…` (v1) and `/api/v3/…`.
//!
//! | form | where | example |
//! | --- | --- | --- |
//! | integer unix microseconds | v1 `start`, `end` | `1485445591639875` |
//! | integer unix milliseconds | v1 `endTs`, `lookback` of `/api/dependencies` | `1485445591639` |
//! | Go duration (`time.ParseDuration`; `0`, signs) | v1 `minDuration`, `maxDuration`, `lookback`; v3 `query.duration_*` | `1.2ms`, `1h30m` |
//! | RFC 3339 | v3 `query.start_time_*`, `startTime`, `endTime` | `2017-01-26T15:46:31.639875Z` |
//! | tags as a JSON object | v1 `tags`, v3 `query.attributes` | `{"error":"true"}` |
//! | repeated `key:value` | v1 `tag` | `tag=http.status_code:500` |

use std::collections::BTreeMap;

use super::{ParamError, Result};

/// An integer count of `unit_ns` since the Unix epoch (v1 `start`/`end` in microseconds,
/// `endTs` in milliseconds), as nanoseconds.
pub fn epoch(name: &str, text: &str, unit_ns: i64) -> Result<i64> {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ns))
        .ok_or_else(|| {
            ParamError::Dialect(format!(
                "unable to parse param '{name}': {text:?} is not an integer timestamp"
            ))
        })
}

/// A v1 duration parameter (`minDuration`): Go syntax, in nanoseconds.
pub fn duration(name: &str, text: &str) -> Result<i64> {
    go_duration(text.trim()).ok_or_else(|| {
        ParamError::Dialect(format!(
            "unable to parse param '{name}': {text:?} is not a duration such as 1.2s, 500ms or 10us"
        ))
    })
}

/// A v3 duration parameter (`query.duration_min`): Go syntax, in nanoseconds.
pub fn v3_duration(name: &str, text: &str) -> Result<i64> {
    go_duration(text.trim()).ok_or_else(|| {
        ParamError::Dialect(format!(
            "malformed parameter {name}: {text:?} is not a duration such as 1.2s or 500ms"
        ))
    })
}

/// A v3 time: RFC 3339 (Arrow's reader, which also takes `2017-01-26 15:46:31`).
pub fn v3_time(name: &str, text: &str) -> Result<i64> {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text.trim()).map_err(|e| {
        ParamError::Dialect(format!(
            "malformed parameter {name}: {text:?} is not an RFC 3339 time ({e})"
        ))
    })
}

/// v1 `tag=key:value` (the value may hold more colons).
pub fn tag_pair(tag: &str) -> Result<(String, String)> {
    match tag.split_once(':') {
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err(ParamError::Dialect(format!(
            "malformed 'tag' parameter, expecting key:value, received: {tag}"
        ))),
    }
}

/// Tags as a JSON object of scalars (v1 `tags`, v3 `query.attributes`), added to `into`.
pub fn tags_json(name: &str, text: &str, into: &mut BTreeMap<String, String>) -> Result<()> {
    let bad = |why: String| ParamError::Dialect(format!("malformed '{name}' parameter: {why}"));
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| bad(format!("expected a JSON object ({e})")))?;
    for (key, value) in map {
        let value = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => return Err(bad(format!("tag {key:?} has a non-scalar value {other}"))),
        };
        into.insert(key, value);
    }
    Ok(())
}

/// Go's `time.ParseDuration`: a sign, then one or more `<decimal><unit>` terms (`1.5s`,
/// `500ms`, `10us`, `10µs`, `1h30m`, `-2s`, `0`). `None` on malformed input or overflow.
pub fn go_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return None;
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        // Go has no days or weeks.
        let unit_ns = match unit {
            "d" | "w" => return None,
            unit => super::duration_unit(unit)?,
        };
        total = total.checked_add(super::scaled(whole, fraction, unit_ns)?)?;
        rest = next;
    }
    let magnitude = i64::try_from(total).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        let cases = [
            ("0", 0),
            ("1.2s", 1_200_000_000),
            ("500ms", 500_000_000),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("10μs", 10_000),
            ("7ns", 7),
            ("1h30m", 5_400_000_000_000),
            ("-2s", -2_000_000_000),
            ("+3m", 180_000_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("2.0000000015s", 2_000_000_001),
            ("1m0.5s", 60_500_000_000),
        ];
        for (text, ns) in cases {
            assert_eq!(go_duration(text), Some(ns), "{text}");
        }
        for bad in [
            "",
            "s",
            "1",
            "1x",
            "1.2.3s",
            ".s",
            "-",
            "1s2",
            "9999999999h",
            "1 s",
            "ms",
            "1d",
        ] {
            assert_eq!(go_duration(bad), None, "{bad:?} must be refused");
        }
    }

    #[test]
    fn epochs_are_integers_in_the_dialects_unit() {
        let ns = 1_485_445_591_639_875_000;
        assert_eq!(epoch("start", "1485445591639875", 1_000).unwrap(), ns);
        assert!(epoch("start", "1.5", 1_000).is_err());
        assert!(epoch("endTs", &i64::MAX.to_string(), 1_000_000).is_err());
        assert_eq!(
            v3_time("t", "2017-01-26T16:46:31.639875+01:00").unwrap(),
            ns
        );
        let err = duration("minDuration", "10").unwrap_err();
        assert!(err.to_string().contains("minDuration"), "{err}");
    }

    #[test]
    fn tags_come_as_pairs_or_json() {
        assert_eq!(
            tag_pair("peer:host:1").unwrap(),
            ("peer".to_owned(), "host:1".to_owned())
        );
        assert!(tag_pair("novalue").is_err());
        let mut tags = BTreeMap::new();
        tags_json("tags", r#"{"a":"b","n":5,"t":true}"#, &mut tags).unwrap();
        assert_eq!(tags.len(), 3);
        assert_eq!(tags["n"], "5");
        assert!(tags_json("tags", "{oops", &mut tags).is_err());
        assert!(tags_json("tags", r#"{"a":[1]}"#, &mut tags).is_err());
    }
}
