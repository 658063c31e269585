//! Parsing of the values HTTP callers put in query strings: times, Go-style durations, span
//! kinds and statuses, result cursors, and the repeated-parameter list itself. Shared by the
//! native search endpoint and the Jaeger API, so both reject the same bad input the same way.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// The query string as `(name, value)` pairs in request order, so repeated parameters
/// (`attr=a&attr=b`) survive, which a struct-shaped extractor would not allow.
#[derive(Debug, Default)]
pub(crate) struct Params(pub Vec<(String, String)>);

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
            return Err(Error::BadRequest(format!(
                "parameter {name:?} is given more than once"
            )));
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
            Some((key, _)) => Err(Error::BadRequest(format!(
                "unknown parameter {key:?}; known parameters: {}",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A point in time given as RFC 3339 (`2017-01-26T15:46:31.639875Z`, offsets allowed) or as
/// an integer number of nanoseconds since the Unix epoch.
pub(crate) fn parse_time(name: &str, text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(ns) = text.parse::<i64>() {
        return Ok(ns);
    }
    rfc3339(text).map_err(|e| {
        Error::BadRequest(format!(
            "{name}: {text:?} is neither an RFC 3339 time nor unix nanoseconds ({e})"
        ))
    })
}

/// RFC 3339 only (what Jaeger's API v3 takes).
pub(crate) fn parse_rfc3339(name: &str, text: &str) -> Result<i64> {
    rfc3339(text.trim())
        .map_err(|e| Error::BadRequest(format!("{name}: {text:?} is not an RFC 3339 time ({e})")))
}

fn rfc3339(text: &str) -> std::result::Result<i64, arrow::error::ArrowError> {
    // Arrow's parser also takes `2017-01-26 15:46:31` and bare dates, which is harmless;
    // anything shorter than a date (a stray "5") it refuses.
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(text)
}

/// An integer count of `unit_ns` since the Unix epoch (Jaeger's `start`/`end` in
/// microseconds, `endTs` in milliseconds), as nanoseconds.
pub(crate) fn parse_epoch(name: &str, text: &str, unit_ns: i64) -> Result<i64> {
    text.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_ns))
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "unable to parse param '{name}': {text:?} is not an integer timestamp"
            ))
        })
}

/// Renders nanoseconds since the epoch as RFC 3339 with nanoseconds, in UTC.
pub(crate) fn format_rfc3339(ns: i64) -> String {
    match arrow::temporal_conversions::timestamp_ns_to_datetime(ns) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string(),
        None => ns.to_string(),
    }
}

/// A duration as Go's `time.ParseDuration` reads it (`1.5s`, `500ms`, `10us`, `10µs`,
/// `1h30m`, `-2s`, `0`), in nanoseconds. A bare integer is taken as nanoseconds, which Go
/// would refuse; the native API documents it.
pub(crate) fn parse_duration(name: &str, text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(ns) = text.parse::<i64>() {
        return Ok(ns);
    }
    parse_go_duration(text).ok_or_else(|| {
        Error::BadRequest(format!(
            "{name}: {text:?} is not a duration such as 1.5s, 500ms, 10us or 1h30m"
        ))
    })
}

/// Go's `time.ParseDuration`: a sign, then one or more `<decimal><unit>` terms. `None` on
/// malformed input or overflow.
pub(crate) fn parse_go_duration(text: &str) -> Option<i64> {
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
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        total = total.checked_add(whole.checked_mul(unit_ns)?)?;
        if !fraction.is_empty() {
            // Digits beyond the 19th cannot change a result in nanoseconds of an i64.
            let fraction = &fraction[..fraction.len().min(19)];
            let scale = 10u128.pow(fraction.len() as u32);
            total = total.checked_add(fraction.parse::<u128>().ok()? * unit_ns / scale)?;
        }
        rest = next;
    }
    let magnitude = i64::try_from(total).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// OTLP span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl SpanKind {
    pub const ALL: [SpanKind; 6] = [
        SpanKind::Unspecified,
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ];

    /// The stored `kind` value.
    pub fn code(self) -> i8 {
        self as i8
    }

    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Lowercase name, as Jaeger writes it (`server`); `unspecified` for 0.
    pub fn name(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    /// `server`, `SERVER` or the OTLP enum name `SPAN_KIND_SERVER`.
    pub fn parse(text: &str) -> Option<Self> {
        let lower = text.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("span_kind_").unwrap_or(&lower);
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// OTLP span status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanStatus {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

impl SpanStatus {
    /// The stored `status_code` value.
    pub fn code(self) -> i8 {
        self as i8
    }

    /// `ok`, `OK` or the OTLP enum name `STATUS_CODE_OK`.
    pub fn parse(text: &str) -> Option<Self> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.strip_prefix("status_code_").unwrap_or(&lower) {
            "unset" => Some(SpanStatus::Unset),
            "ok" => Some(SpanStatus::Ok),
            "error" => Some(SpanStatus::Error),
            _ => None,
        }
    }
}

/// Where the previous page of a search ended: the last trace's (start, id). The next page
/// holds the traces that sort after it (older start, or same start and smaller id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub start_ns: i64,
    pub trace_id: [u8; 16],
}

/// First byte of an encoded cursor, so the format can change without misreading old ones.
const CURSOR_VERSION: u8 = 1;

impl Cursor {
    /// Opaque to clients: 50 hex digits (version, start, trace id).
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(25);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&self.start_ns.to_be_bytes());
        bytes.extend_from_slice(&self.trace_id);
        hex::encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Self> {
        let bad = || Error::BadRequest(format!("cursor {text:?} is not one this server issued"));
        let mut bytes = [0u8; 25];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| bad())?;
        if bytes[0] != CURSOR_VERSION {
            return Err(bad());
        }
        let start_ns = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| bad())?);
        let trace_id = bytes[9..25].try_into().map_err(|_| bad())?;
        Ok(Cursor { start_ns, trace_id })
    }
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
            assert_eq!(parse_go_duration(text), Some(ns), "{text}");
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
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?} must be refused");
        }
    }

    #[test]
    fn durations_take_go_syntax_or_nanoseconds() {
        assert_eq!(parse_duration("d", "1500").unwrap(), 1500);
        assert_eq!(parse_duration("d", " 2ms ").unwrap(), 2_000_000);
        let err = parse_duration("min_duration", "fast").unwrap_err();
        assert!(matches!(err, Error::BadRequest(ref m) if m.contains("min_duration")));
    }

    #[test]
    fn times_take_rfc3339_or_nanoseconds() {
        let ns = 1_485_445_591_639_875_000;
        assert_eq!(
            parse_time("start", "2017-01-26T15:46:31.639875Z").unwrap(),
            ns
        );
        assert_eq!(
            parse_time("start", "2017-01-26T16:46:31.639875+01:00").unwrap(),
            ns
        );
        assert_eq!(parse_time("start", &ns.to_string()).unwrap(), ns);
        assert!(parse_time("start", "yesterday").is_err());
        assert!(parse_time("start", "5s").is_err());
        assert_eq!(format_rfc3339(ns), "2017-01-26T15:46:31.639875000Z");
        assert_eq!(parse_epoch("start", "1485445591639875", 1_000).unwrap(), ns);
        assert!(parse_epoch("start", "1.5", 1_000).is_err());
        assert!(parse_epoch("endTs", &i64::MAX.to_string(), 1_000_000).is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            start_ns: -5,
            trace_id: [7; 16],
        };
        let text = cursor.encode();
        assert_eq!(text.len(), 50);
        assert_eq!(Cursor::decode(&text).unwrap(), cursor);
        assert!(Cursor::decode("").is_err());
        assert!(Cursor::decode(&text[..48]).is_err());
        assert!(Cursor::decode(&format!("02{}", &text[2..])).is_err());
        assert!(Cursor::decode(&text.replace('0', "g")).is_err());
    }

    #[test]
    fn kinds_and_statuses_parse_all_spellings() {
        assert_eq!(SpanKind::parse("server"), Some(SpanKind::Server));
        assert_eq!(SpanKind::parse("SPAN_KIND_CLIENT"), Some(SpanKind::Client));
        assert_eq!(SpanKind::parse("Consumer"), Some(SpanKind::Consumer));
        assert_eq!(SpanKind::parse("sideways"), None);
        assert_eq!(SpanKind::from_code(4), Some(SpanKind::Producer));
        assert_eq!(SpanStatus::parse("ERROR"), Some(SpanStatus::Error));
        assert_eq!(SpanStatus::parse("status_code_ok"), Some(SpanStatus::Ok));
        assert_eq!(SpanStatus::parse("fine"), None);
    }

    #[test]
    fn params_keep_repeats_and_refuse_ambiguity() {
        let params = Params(vec![
            ("attr".into(), "a=1".into()),
            ("attr".into(), "b".into()),
            ("service".into(), "x".into()),
            ("service".into(), "y".into()),
            ("operation".into(), String::new()),
        ]);
        assert_eq!(params.all("attr").collect::<Vec<_>>(), ["a=1", "b"]);
        assert!(params.one("service").is_err());
        assert_eq!(params.one("operation").unwrap(), None);
        assert!(params.reject_unknown(&["attr", "service"]).is_err());
        assert!(
            params
                .reject_unknown(&["attr", "service", "operation"])
                .is_ok()
        );
    }
}
