//! `GET /internal/v1/snapshot` on a collector node: its committed files and the rows it has
//! not flushed yet, from one consistent `Collector::snapshot`, in the wire format of
//! [`weft_cluster::snapshot`] (which the query service decodes).

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use weft_cluster::snapshot::{CONTENT_TYPE, PATH, SnapshotRequest, encode};

use crate::Collector;

/// The snapshot endpoint of `collector`, to merge into the node's internal HTTP router.
pub fn router(collector: Arc<Collector>) -> Router {
    Router::new()
        .route(PATH, get(snapshot))
        .with_state(collector)
}

async fn snapshot(State(collector): State<Arc<Collector>>, RawQuery(query): RawQuery) -> Response {
    let request = match SnapshotRequest::parse(query.as_deref().unwrap_or("")) {
        Ok(request) => request,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason.to_string()).into_response(),
    };
    match encode(&collector.snapshot(request.table), &request) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(reason) => {
            tracing::error!(error = %reason, "snapshot failed");
            (StatusCode::INTERNAL_SERVER_ERROR, reason.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use weft_cluster::snapshot::decode;
    use weft_schemas::Table;

    use super::*;
    use crate::config::{CollectorConfig, SyncPolicy, WalConfig};

    fn spans(trace_ids: &[&str], start_ns: i64) -> Bytes {
        let spans: Vec<String> = trace_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                format!(
                    r#"{{"traceId":"{id}","spanId":"{:016x}","name":"op","startTimeUnixNano":"{}","endTimeUnixNano":"{}"}}"#,
                    i + 1,
                    start_ns,
                    start_ns + 1000
                )
            })
            .collect();
        Bytes::from(format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            spans.join(",")
        ))
    }

    #[tokio::test]
    async fn answers_carry_files_and_matching_live_rows() {
        let dir = tempfile::tempdir().unwrap();
        let collector = Collector::open(CollectorConfig {
            data_dir: dir.path().to_path_buf(),
            wal: WalConfig {
                sync: SyncPolicy::Os,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        collector
            .export_traces(
                spans(&[a, b], 1_700_000_000_000_000_000),
                crate::Format::Json,
            )
            .await
            .unwrap();
        collector.flush_all().await.unwrap();
        collector
            .export_traces(
                spans(&[a, b, b], 1_700_000_100_000_000_000),
                crate::Format::Json,
            )
            .await
            .unwrap();

        let fetch = |request: SnapshotRequest| {
            let collector = std::sync::Arc::clone(&collector);
            async move {
                let body = encode(&collector.snapshot(request.table), &request).unwrap();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                decode(request.table, &bytes).unwrap()
            }
        };
        let all = fetch(SnapshotRequest::all(Table::Spans)).await;
        assert_eq!(all.header.files.len(), 1);
        assert_eq!(all.header.files[0].rows, 2);
        assert!(dir.path().join(&all.header.files[0].path).exists());
        assert_eq!(all.header.live_rows, 3);

        let mut only_a = SnapshotRequest::all(Table::Spans);
        only_a.trace_ids.push([0xaa; 16]);
        let answer_a = fetch(only_a.clone()).await;
        assert_eq!(answer_a.header.live_rows, 1);
        assert_eq!(answer_a.header.files.len(), 1);
        only_a.trace_ids = vec![[0xcc; 16]];
        let none = fetch(only_a).await;
        assert_eq!(none.header.live_rows, 0);
        assert!(
            none.header.files.is_empty(),
            "the trace id filter rules it out"
        );

        let mut recent = SnapshotRequest::all(Table::Spans);
        recent.min_time_ns = Some(1_700_000_050_000_000_000);
        let answer_recent = fetch(recent).await;
        assert!(answer_recent.header.files.is_empty());
        assert_eq!(answer_recent.header.live_rows, 3);

        assert!(decode(Table::Metrics, b"nope").is_err());
        let body = encode(
            &collector.snapshot(Table::Spans),
            &SnapshotRequest::all(Table::Spans),
        )
        .unwrap();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert!(decode(Table::Metrics, &bytes).is_err(), "wrong table");
        assert!(decode(Table::Spans, &bytes[..bytes.len() - 9]).is_err());

        // The manifest reader sees the same committed files, read-only.
        let objects = weft_storage::ObjectStorage::local(dir.path()).unwrap();
        let committed = weft_storage::store::read_committed_files(&objects, "").unwrap();
        assert_eq!(committed[&Table::Spans].len(), 1);
        assert_eq!(committed[&Table::Spans][0].path, all.header.files[0].path);
        assert!(committed[&Table::Metrics].is_empty());
        let empty = tempfile::tempdir().unwrap();
        assert!(
            weft_storage::store::read_committed_files(
                &weft_storage::ObjectStorage::local(empty.path()).unwrap(),
                ""
            )
            .unwrap()
            .is_empty()
        );
    }
}
