//! OTLP/protobuf metrics -> Arrow: the body a receiver takes (prost decode) through
//! `weft_schemas::metrics::from_otlp`. Never panics (debug assertions on, so a batch that
//! fails to build panics too), and every data point is either a row or counted as rejected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ExportMetricsServiceRequest::decode(data) else {
        return;
    };
    let points: usize = request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            None => 0,
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
        })
        .sum();
    let converted = weft_schemas::metrics::from_otlp(&request);
    assert_eq!(
        converted.batch.num_rows() as u64 + converted.rejected,
        points as u64,
        "rows + rejected = data points ({:?})",
        converted.rejection_message
    );
});
