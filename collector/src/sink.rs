//! The collector as the receivers' sink: what `weft up` and `weft collector` serve.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;
use weft_receiver::{OtlpSink, ReceiverConfig};

use crate::{Collector, ExportOutcome, Format, Result};

impl OtlpSink for Collector {
    fn receiver_config(&self) -> &ReceiverConfig {
        &self.config().receiver
    }

    fn inflight(&self) -> &Arc<Semaphore> {
        Collector::inflight(self)
    }

    fn export_traces(
        &self,
        body: Bytes,
        format: Format,
    ) -> impl Future<Output = Result<ExportOutcome>> + Send {
        Collector::export_traces(self, body, format)
    }

    fn export_metrics(
        &self,
        body: Bytes,
        format: Format,
    ) -> impl Future<Output = Result<ExportOutcome>> + Send {
        Collector::export_metrics(self, body, format)
    }

    fn export_prometheus(
        &self,
        snappy_body: Bytes,
    ) -> impl Future<Output = Result<ExportOutcome>> + Send {
        Collector::export_prometheus(self, snappy_body)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use weft_schemas::prometheus::{Label, Sample, TimeSeries, WriteRequest};

    use tokio::sync::OwnedSemaphorePermit;
    use weft_receiver::{BodyKind, admit_decoded};

    use super::*;
    use crate::{CollectorConfig, Error};

    fn collector(dir: &std::path::Path) -> Arc<Collector> {
        Collector::open(CollectorConfig {
            data_dir: dir.to_path_buf(),
            ..CollectorConfig::default()
        })
        .unwrap()
    }

    fn permit(c: &Collector) -> OwnedSemaphorePermit {
        std::sync::Arc::clone(c.inflight())
            .try_acquire_many_owned(1)
            .unwrap()
    }

    #[tokio::test]
    async fn decode_bombs_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let c = collector(dir.path());
        let budget = c.inflight().available_permits();

        // 600k empty spans: over max_items_per_request.
        let spans: Vec<u8> = std::iter::repeat_n([0x12u8, 0x00], 600_000)
            .flatten()
            .collect();
        let mut scope = vec![0x12];
        prost::encoding::encode_varint(spans.len() as u64, &mut scope);
        scope.extend(spans);
        let mut body = vec![0x0a];
        prost::encoding::encode_varint(scope.len() as u64, &mut body);
        body.extend(scope);
        let mut p = permit(&c);
        let body = Bytes::from(body);
        let err = admit_decoded(&*c, &body, BodyKind::Traces(Format::Protobuf), &mut p)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TooManyItems { items: 600_000, .. }),
            "{err}"
        );
        assert_eq!(err.http_status(), ::http::StatusCode::PAYLOAD_TOO_LARGE);

        // Remote write: one series with 1 MB of labels and 50k samples becomes 50 GB once
        // the labels are copied onto every sample.
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: (0..10_000)
                    .map(|i| Label {
                        name: format!("l{i}"),
                        value: "v".repeat(100),
                    })
                    .collect(),
                samples: vec![Sample::default(); 50_000],
                ..Default::default()
            }],
            metadata: Vec::new(),
        };
        let err = admit_decoded(
            &*c,
            &Bytes::from(req.encode_to_vec()),
            BodyKind::RemoteWrite,
            &mut p,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::DecodesTooLarge { .. }), "{err}");
        assert_eq!(err.to_grpc_status().code(), tonic::Code::ResourceExhausted);

        // Truncated protobuf: 400 before decoding.
        let err = admit_decoded(
            &*c,
            &body.slice(..body.len() - 1),
            BodyKind::Traces(Format::Protobuf),
            &mut p,
        )
        .await
        .unwrap_err();
        assert_eq!(err.http_status(), ::http::StatusCode::BAD_REQUEST, "{err}");

        // Nothing was charged by the refusals; a normal request is charged its decoded size.
        assert_eq!(c.inflight().available_permits(), budget - 1);
        let shape = admit_decoded(
            &*c,
            &Bytes::from_static(b"{}"),
            BodyKind::Traces(Format::Json),
            &mut p,
        )
        .await
        .unwrap();
        assert_eq!(shape.items(), 0);
        assert!(c.inflight().available_permits() < budget - 1);
        drop(p);
        assert_eq!(c.inflight().available_permits(), budget);
    }
}
