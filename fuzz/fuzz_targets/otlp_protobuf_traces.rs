//! OTLP/protobuf traces -> Arrow: the body a receiver takes (prost decode) through
//! `weft_schemas::spans::from_otlp`. Never panics (debug assertions on, so a batch that fails
//! to build panics too), and every span is either a row or counted as rejected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ExportTraceServiceRequest::decode(data) else {
        return;
    };
    let spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let converted = weft_schemas::spans::from_otlp(&request);
    assert_eq!(
        converted.batch.num_rows() as u64 + converted.rejected,
        spans as u64,
        "rows + rejected = spans ({:?})",
        converted.rejection_message
    );
});
