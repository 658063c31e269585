//! Search's own parameter values: span kinds and statuses, and result cursors. Times,
//! durations and the query-string reader are the native grammar of [`crate::params`] (and
//! its Jaeger dialect), shared with every other endpoint.

use crate::{Error, Result};

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
}
