//! The query service's HTTP parameter parsers (`weft_query::fuzzing`): the raw query string
//! through the endpoint's extractor and parser, for every endpoint at once (their parameter
//! names overlap, so one corpus of real query strings serves them all). Never panics; a bad
//! query string is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_query::fuzzing as parse;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse::parse_search_params(query);
    let _ = parse::parse_graph_params(query);
    let _ = parse::parse_latency_params(query);
    let _ = parse::parse_metrics_query_params(query);
    let _ = parse::parse_jaeger_v1_params(query);
    let _ = parse::parse_jaeger_v3_params(query);
});
