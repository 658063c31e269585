//! Fuzz entry points (`fuzz/fuzz_targets/query_params.rs`): one function per HTTP parameter
//! parser, each taking the raw query string (what follows `?`) and running it through the
//! same extractor and parser its endpoint uses. Thin on purpose: they only wire the query
//! string to the parser, so the parsers can change behind them. Times that default to "now"
//! use a fixed instant, so a crash reproduces.

use axum::extract::Query;
use http::Uri;
use serde::de::DeserializeOwned;

use crate::params::Params;
use crate::{Error, Result};

/// The "now" every entry point passes to its parser: 2026-01-01T00:00:00Z.
const NOW_NS: i64 = 1_767_225_600_000_000_000;

/// `query` as axum's `Query` extractor deserializes it for a handler.
fn extract<T: DeserializeOwned>(query: &str) -> Result<T> {
    let uri: Uri = format!("/?{query}")
        .parse()
        .map_err(|e| Error::BadRequest(format!("not a request target: {e}")))?;
    let Query(value) = Query::try_from_uri(&uri).map_err(|e| Error::BadRequest(e.body_text()))?;
    Ok(value)
}

fn params(query: &str) -> Result<Params> {
    extract::<Vec<(String, String)>>(query).map(Params)
}

/// `GET /api/v1/search`.
pub fn parse_search_params(query: &str) -> Result<()> {
    crate::search::http::request_from(&params(query)?).map(drop)
}

/// `GET /api/v1/dependencies`.
pub fn parse_graph_params(query: &str) -> Result<()> {
    let range: crate::graph::RangeParams = extract(query)?;
    crate::params::time_range(range.start.as_deref(), range.end.as_deref(), NOW_NS)
        .map(drop)
        .map_err(Into::into)
}

/// `GET /api/v1/latency`.
pub fn parse_latency_params(query: &str) -> Result<()> {
    extract::<crate::latency::LatencyParams>(query)?
        .parse(NOW_NS)
        .map(drop)
}

/// `GET /api/v1/metrics/query_range`.
pub fn parse_metrics_query_params(query: &str) -> Result<()> {
    let pairs = extract::<Vec<(String, String)>>(query)?;
    crate::metrics::query::parse_range_query(&pairs, NOW_NS).map(drop)
}

/// Jaeger `GET /api/traces` (a search).
pub fn parse_jaeger_v1_params(query: &str) -> Result<()> {
    crate::jaeger::v1::search_request(&params(query)?, NOW_NS).map(drop)
}

/// Jaeger `GET /api/v3/traces`.
pub fn parse_jaeger_v3_params(query: &str) -> Result<()> {
    crate::jaeger::v3::search_request(&params(query)?).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each entry point reaches its parser: a valid query string parses, a bad value is
    /// refused with the parser's own message.
    #[test]
    fn entry_points_reach_their_parsers() {
        assert!(parse_search_params("service=web&min_duration=10ms").is_ok());
        let err = parse_search_params("kind=sideways")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sideways"), "{err}");
        assert!(parse_graph_params("start=2025-12-31T23:00:00Z").is_ok());
        assert!(parse_graph_params("servce=web").is_err());
        assert!(parse_latency_params("service=web&step=1m").is_ok());
        assert!(parse_latency_params("operation=get").is_err());
        assert!(parse_metrics_query_params("metric=http.requests&step=60s").is_ok());
        assert!(parse_metrics_query_params("step=60s").is_err());
        assert!(parse_jaeger_v1_params("service=web&lookback=1h").is_ok());
        assert!(parse_jaeger_v1_params("lookback=1h").is_err());
        assert!(
            parse_jaeger_v3_params(
                "query.service_name=web&query.start_time_min=2017-01-26T15:46:31Z\
                 &query.start_time_max=2017-01-26T17:46:31Z"
            )
            .is_ok()
        );
        assert!(parse_jaeger_v3_params("query.service_name=web").is_err());
        assert!(parse_search_params("service=%ZZ\u{7f}").is_err());
    }
}
