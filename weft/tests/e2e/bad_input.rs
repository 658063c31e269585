//! Broken and hostile input gets the documented answer — and the server keeps serving.
//!
//! Ingest: truncated protobuf, garbage, invalid JSON, invalid ids mixed with good spans
//! (partial success), oversized bodies (plain, chunked, gzip bombs; HTTP and gRPC), unknown
//! media types and encodings, wrong methods, logs. Query: DDL/DML/COPY/SET, file access,
//! runaway queries, malformed requests and trace ids; statements and searches deep or large
//! enough to overflow a stack (400 naming the limit, answered at the limit); a CPU-bound
//! query that must not stall ingest and health checks (408 at its limit, 503 over the
//! concurrency limit); functions that amplify their input (422 naming the limit, the
//! process's peak RSS bounded).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use serde_json::json;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::common::{
    JSON, MAX_POLLS, POLL_EVERY, PROTOBUF, Reply, chunked, get, gzip, json_u64, post, raw_http,
    request,
};
use crate::server::TestServer;

/// The request-size cap the ingest tests run with.
const CAP: usize = 100_000;

/// `google.rpc.Status`, decoded here from the protobuf error bodies.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// Fresh random-looking ids (distinct per call within a process).
pub(crate) fn ids(seed: u64) -> ([u8; 16], [u8; 8]) {
    let mut x = now_ns() ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&next().to_be_bytes());
    trace[8..].copy_from_slice(&next().to_be_bytes());
    let span = next().to_be_bytes();
    (trace, span)
}

pub(crate) fn span(
    trace_id: &[u8],
    span_id: &[u8],
    name: &str,
    attr: Option<(&str, &str)>,
) -> Span {
    let start = now_ns() - 1_000_000_000;
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        name: name.to_owned(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_234_567,
        attributes: attr.map(|(k, v)| vec![string_kv(k, v)]).unwrap_or_default(),
        ..Default::default()
    }
}

pub(crate) fn request_of(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_kv("service.name", "e2e-bad-input")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "e2e".to_owned(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A valid one-span request whose encoding is about `size` bytes (a big attribute).
fn big_request(size: usize, seed: u64) -> ExportTraceServiceRequest {
    let (t, s) = ids(seed);
    let filler = "a".repeat(size);
    request_of(vec![span(&t, &s, "big", Some(("filler", &filler)))])
}

fn rpc_status(reply: &Reply) -> RpcStatus {
    RpcStatus::decode(reply.body.as_slice())
        .unwrap_or_else(|e| panic!("not a google.rpc.Status ({e}): {}", reply.text()))
}

/// 4xx with a `google.rpc.Status` in the request's encoding carrying `grpc_code`.
fn assert_status_body(reply: &Reply, status: u16, grpc_code: i32, json_body: bool, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    if json_body {
        let body = reply.json();
        assert_eq!(body["code"], grpc_code, "{what}: status body {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: status message in {body}"
        );
    } else {
        let body = rpc_status(reply);
        assert_eq!(body.code, grpc_code, "{what}: status body {body:?}");
        assert!(!body.message.is_empty(), "{what}: status message");
    }
}

pub(crate) async fn grpc_channel(server: &TestServer) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(server.otlp_grpc.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("grpc connect")
}

/// Sends bytes as they are as the gRPC message (no protobuf encoding on our side).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

pub(crate) async fn grpc_raw_export(
    server: &TestServer,
    message: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    grpc_raw_export_on(grpc_channel(server).await, message).await
}

/// [`grpc_raw_export`] on an existing channel.
pub(crate) async fn grpc_raw_export_on(
    channel: tonic::transport::Channel,
    message: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("grpc ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(tonic::Request::new(message), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

async fn span_count(server: &TestServer) -> u64 {
    server.sql_count("SELECT count(*) AS n FROM spans").await
}

/// Proves the server still takes data and answers: one valid export per transport, each
/// visible by trace id right after the acknowledgement.
pub(crate) async fn assert_keeps_serving(server: &TestServer) {
    for path in ["/livez", "/readyz"] {
        assert_eq!(
            get(&server.http_url(path)).await.status,
            200,
            "otlp-http {path}"
        );
        assert_eq!(
            get(&server.query_url(path)).await.status,
            200,
            "query-http {path}"
        );
    }
    let mut sent = Vec::new();
    // OTLP/HTTP protobuf
    let (t, s) = ids(1);
    let reply = server
        .otlp_post(
            "/v1/traces",
            PROTOBUF,
            request_of(vec![span(&t, &s, "after-proto", None)]).encode_to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200, "valid protobuf export: {}", reply.text());
    sent.push((hex::encode(t), "after-proto"));
    // OTLP/HTTP JSON
    let (t, s) = ids(2);
    let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": hex::encode(t), "spanId": hex::encode(s), "name": "after-json", "kind": 1,
        "startTimeUnixNano": (now_ns() - 5_000).to_string(), "endTimeUnixNano": now_ns().to_string()
    }]}]}]});
    let reply = server
        .otlp_post("/v1/traces", JSON, serde_json::to_vec(&body).expect("json"))
        .await;
    assert_eq!(reply.status, 200, "valid json export: {}", reply.text());
    sent.push((hex::encode(t), "after-json"));
    // OTLP/gRPC
    let (t, s) = ids(3);
    TraceServiceClient::new(grpc_channel(server).await)
        .export(request_of(vec![span(&t, &s, "after-grpc", None)]))
        .await
        .expect("valid grpc export");
    sent.push((hex::encode(t), "after-grpc"));

    for (trace_id, name) in sent {
        let trace = server.trace(&trace_id).await.expect("trace is stored");
        let got = trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"].clone();
        assert_eq!(got, name, "trace {trace_id}");
        let rows = server
            .sql(&format!(
                "SELECT span_name FROM spans WHERE trace_id = trace_id_from_hex('{trace_id}')"
            ))
            .await;
        assert_eq!(
            rows,
            vec![json!({"span_name": name})],
            "trace {trace_id} via sql"
        );
    }
}

fn cap_args() -> Vec<String> {
    vec![
        "--set".to_owned(),
        format!("collector.receiver.max_request_bytes={CAP}"),
    ]
}

fn start_with_cap() -> TestServer {
    let args = cap_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestServer::start(&args)
}

/// Truncated protobuf, garbage and invalid JSON: 400 with a `google.rpc.Status` body
/// (INVALID_ARGUMENT) in the request's encoding; nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400() {
    let server = start_with_cap();
    let (t1, s1) = ids(10);
    let (t2, s2) = ids(11);
    let valid = request_of(vec![
        span(&t1, &s1, "first", Some(("k", "v"))),
        span(&t2, &s2, "second", Some(("k", "v"))),
    ])
    .encode_to_vec();
    let truncated = valid[..valid.len() - 7].to_vec();
    assert!(ExportTraceServiceRequest::decode(truncated.as_slice()).is_err());
    let garbage = vec![0xffu8; 64];

    for (path, body, what) in [
        ("/v1/traces", truncated.clone(), "truncated protobuf"),
        ("/v1/traces", garbage.clone(), "garbage protobuf"),
        (
            "/v1/metrics",
            truncated.clone(),
            "truncated protobuf (metrics)",
        ),
        ("/v1/metrics", garbage.clone(), "garbage protobuf (metrics)"),
    ] {
        let reply = server.otlp_post(path, PROTOBUF, body).await;
        assert_status_body(&reply, 400, 3, false, what);
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some(PROTOBUF),
            "{what}"
        );
    }
    // Gzip of garbage: decompresses fine, does not decode.
    let reply = post(
        &server.http_url("/v1/traces"),
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        gzip(&garbage),
    )
    .await;
    assert_status_body(&reply, 400, 3, false, "gzipped garbage");
    // Not gzip at all although it says so.
    let reply = post(
        &server.http_url("/v1/traces"),
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        b"this is not gzip".to_vec(),
    )
    .await;
    assert_status_body(&reply, 400, 3, false, "invalid gzip");

    for (path, body, what) in [
        (
            "/v1/traces",
            &br#"{"resourceSpans": ["#[..],
            "unterminated json",
        ),
        ("/v1/traces", &b"not json at all"[..], "not json"),
        (
            "/v1/traces",
            &[0xff, 0xfe, 0x00, 0x01][..],
            "binary garbage as json",
        ),
        ("/v1/traces", &b"[1, 2, 3]"[..], "json array"),
        (
            "/v1/traces",
            &br#"{"resourceSpans": {}}"#[..],
            "wrong json type",
        ),
        (
            "/v1/traces",
            &br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#[..],
            "non-hex trace id",
        ),
        (
            "/v1/metrics",
            &br#"{"resourceMetrics": 7}"#[..],
            "wrong json type (metrics)",
        ),
    ] {
        let reply = server.otlp_post(path, JSON, body.to_vec()).await;
        assert_status_body(&reply, 400, 3, true, what);
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some(JSON),
            "{what}"
        );
    }

    assert_eq!(
        span_count(&server).await,
        0,
        "nothing from a refused request is stored"
    );
    assert_eq!(
        server.sql_count("SELECT count(*) AS n FROM metrics").await,
        0,
        "no metric from a refused request is stored"
    );
    assert_keeps_serving(&server).await;
}

/// Invalid spans (all-zero trace id, all-zero / short / missing span id) are rejected one by
/// one through partial success; the good span of the same request is stored. Over HTTP JSON,
/// HTTP protobuf and gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_are_rejected_by_partial_success() {
    let server = start_with_cap();
    let start = (now_ns() - 2_000_000_000).to_string();
    let end = (now_ns() - 1_000_000_000).to_string();

    // --- JSON ---
    let (good_t, good_s) = ids(20);
    let (t2, _) = ids(21);
    let (t3, _) = ids(22);
    let (t4, _) = ids(23);
    let json_span = |trace: String, span: String, name: &str| {
        json!({"traceId": trace, "spanId": span, "name": name, "kind": 2,
               "startTimeUnixNano": start, "endTimeUnixNano": end})
    };
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "e2e-partial"}}]},
        "scopeSpans": [{"scope": {"name": "e2e"}, "spans": [
            json_span(hex::encode(good_t), hex::encode(good_s), "good-json"),
            json_span("0".repeat(32), "1111111111111111".into(), "bad-zero-trace"),
            json_span(hex::encode(t2), "01020304050607".into(), "bad-short-span"),
            json_span(hex::encode(t3), "0".repeat(16), "bad-zero-span"),
            json_span(hex::encode(t4), String::new(), "bad-no-span"),
        ]}]
    }]});
    let reply = server
        .otlp_post("/v1/traces", JSON, serde_json::to_vec(&body).expect("json"))
        .await;
    assert_eq!(
        reply.status,
        200,
        "partial success is a success: {}",
        reply.text()
    );
    let answer = reply.json();
    let partial = &answer["partialSuccess"];
    assert_eq!(
        json_u64(&partial["rejectedSpans"]),
        Some(4),
        "json answer {answer}"
    );
    assert!(
        partial["errorMessage"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "json answer explains the rejection: {answer}"
    );

    // --- HTTP protobuf ---
    let (good_t2, good_s2) = ids(24);
    let (t5, _) = ids(25);
    let request = request_of(vec![
        span(&[0; 16], &[7; 8], "bad-zero-trace-proto", None),
        span(&good_t2, &good_s2, "good-proto", None),
        span(&t5, &[1, 2, 3], "bad-short-span-proto", None),
        span(&good_t2[..15], &[9; 8], "bad-short-trace-proto", None),
    ]);
    let reply = server
        .otlp_post("/v1/traces", PROTOBUF, request.encode_to_vec())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = ExportTraceServiceResponse::decode(reply.body.as_slice()).expect("response");
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 3, "protobuf answer {partial:?}");
    assert!(!partial.error_message.is_empty());

    // --- gRPC ---
    let (good_t3, good_s3) = ids(26);
    let request = request_of(vec![
        span(&good_t3, &good_s3, "good-grpc", None),
        span(&[0; 16], &[5; 8], "bad-zero-trace-grpc", None),
        span(&good_t3, &[0; 8], "bad-zero-span-grpc", None),
    ]);
    let answer = TraceServiceClient::new(grpc_channel(&server).await)
        .export(request)
        .await
        .expect("grpc export")
        .into_inner();
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2, "grpc answer {partial:?}");
    assert!(!partial.error_message.is_empty());

    // The good spans are there, the bad ones are not.
    for (t, s, name) in [
        (good_t, good_s, "good-json"),
        (good_t2, good_s2, "good-proto"),
        (good_t3, good_s3, "good-grpc"),
    ] {
        let rows = server
            .sql_rows(&format!(
                "SELECT hex_id(span_id) AS span_id, span_name FROM spans \
                 WHERE trace_id = trace_id_from_hex('{}')",
                hex::encode(t)
            ))
            .await;
        assert_eq!(
            rows,
            vec![json!({"span_id": hex::encode(s), "span_name": name})]
        );
        let trace = server
            .trace(&hex::encode(t))
            .await
            .expect("good trace stored");
        assert_eq!(
            trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"],
            name
        );
    }
    assert_eq!(
        span_count(&server).await,
        3,
        "only the three good spans are stored"
    );
    assert_eq!(
        server
            .sql_count("SELECT count(*) AS n FROM spans WHERE span_name LIKE 'bad-%'")
            .await,
        0
    );
    assert_keeps_serving(&server).await;
}

/// Bodies over the cap — plain, chunked, gzip bombs — get 413 over HTTP and
/// RESOURCE_EXHAUSTED over gRPC; a body just under the cap is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused() {
    let server = start_with_cap();

    // Just under the cap: accepted.
    let under = big_request(CAP - 1_000, 30).encode_to_vec();
    assert!(under.len() < CAP, "{}", under.len());
    let reply = server.otlp_post("/v1/traces", PROTOBUF, under).await;
    assert_eq!(reply.status, 200, "a body under the cap: {}", reply.text());

    // Plain, with Content-Length.
    let over = big_request(CAP + 1_000, 31).encode_to_vec();
    let reply = server.otlp_post("/v1/traces", PROTOBUF, over.clone()).await;
    assert_status_body(&reply, 413, 8, false, "plain body over the cap");
    let reply = server
        .otlp_post("/v1/metrics", PROTOBUF, over.clone())
        .await;
    assert_eq!(
        reply.status,
        413,
        "metrics body over the cap: {}",
        reply.text()
    );

    // Chunked, no Content-Length: a small one is accepted, a big one refused.
    let addr = server.otlp_http.clone();
    let small = big_request(1_000, 32).encode_to_vec();
    let head = "POST /v1/traces HTTP/1.1\r\nHost: weft\r\nContent-Type: application/x-protobuf\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let mut raw = head.as_bytes().to_vec();
    raw.extend(chunked(&small, 300));
    let (status, text) = raw_http(&addr, &raw).await;
    assert_eq!(status, 200, "chunked body under the cap: {text}");
    let mut raw = head.as_bytes().to_vec();
    raw.extend(chunked(&over, 10_000));
    let (status, text) = raw_http(&addr, &raw).await;
    assert_eq!(status, 413, "chunked body over the cap: {text}");

    // Gzip bombs: small on the wire, over the cap once inflated.
    let bomb = gzip(&vec![0u8; 20 * CAP]);
    assert!(bomb.len() < CAP / 4, "the bomb is small: {}", bomb.len());
    for content_type in [PROTOBUF, JSON] {
        let reply = post(
            &server.http_url("/v1/traces"),
            &[("content-type", content_type), ("content-encoding", "gzip")],
            bomb.clone(),
        )
        .await;
        assert_status_body(&reply, 413, 8, content_type == JSON, "gzip bomb");
    }
    let bomb_request = gzip(&over);
    assert!(bomb_request.len() < CAP);
    let reply = post(
        &server.http_url("/v1/traces"),
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        bomb_request,
    )
    .await;
    assert_eq!(
        reply.status,
        413,
        "valid request over the cap once inflated: {}",
        reply.text()
    );

    // gRPC: plain and gzip-compressed messages over the cap.
    let channel = grpc_channel(&server).await;
    let err = TraceServiceClient::new(channel.clone())
        .export(big_request(CAP + 1_000, 33))
        .await
        .expect_err("grpc message over the cap");
    assert_eq!(
        err.code(),
        tonic::Code::ResourceExhausted,
        "plain grpc: {err:?}"
    );
    let err = TraceServiceClient::new(channel.clone())
        .send_compressed(CompressionEncoding::Gzip)
        .export(big_request(20 * CAP, 34))
        .await
        .expect_err("gzip grpc message over the cap once inflated");
    assert_eq!(
        err.code(),
        tonic::Code::ResourceExhausted,
        "gzip grpc: {err:?}"
    );
    // gRPC under the cap, compressed: fine.
    TraceServiceClient::new(channel)
        .send_compressed(CompressionEncoding::Gzip)
        .export(big_request(CAP / 2, 35))
        .await
        .expect("gzip grpc message under the cap");

    assert_eq!(
        server
            .sql_count("SELECT count(*) AS n FROM spans WHERE span_name = 'big'")
            .await,
        3,
        "exactly the three bodies under the cap are stored"
    );
    assert_keeps_serving(&server).await;
}

/// Unknown media types and encodings (415), wrong methods (405), logs (501 / UNIMPLEMENTED),
/// garbage over gRPC (INVALID_ARGUMENT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_media_methods_and_signals() {
    let server = start_with_cap();
    let (t, s) = ids(40);
    let valid = request_of(vec![span(&t, &s, "never-stored", None)]).encode_to_vec();

    for content_type in [
        "text/plain",
        "application/xml",
        "application/grpc",
        "multipart/form-data",
    ] {
        let reply = server
            .otlp_post("/v1/traces", content_type, valid.clone())
            .await;
        assert_eq!(
            reply.status,
            415,
            "content type {content_type}: {}",
            reply.text()
        );
    }
    let reply = post(&server.http_url("/v1/traces"), &[], valid.clone()).await;
    assert_eq!(reply.status, 415, "no content type: {}", reply.text());
    let reply = post(
        &server.http_url("/v1/metrics"),
        &[("content-type", "text/plain")],
        valid.clone(),
    )
    .await;
    assert_eq!(
        reply.status,
        415,
        "metrics with text/plain: {}",
        reply.text()
    );
    let reply = post(
        &server.http_url("/v1/traces"),
        &[("content-type", PROTOBUF), ("content-encoding", "br")],
        valid.clone(),
    )
    .await;
    assert_eq!(
        reply.status,
        415,
        "unsupported content encoding: {}",
        reply.text()
    );

    for (method, path) in [
        (reqwest::Method::GET, "/v1/traces"),
        (reqwest::Method::PUT, "/v1/traces"),
        (reqwest::Method::DELETE, "/v1/traces"),
        (reqwest::Method::GET, "/v1/metrics"),
        (reqwest::Method::PUT, "/v1/metrics"),
    ] {
        let body = (method != reqwest::Method::GET).then(|| valid.clone());
        let reply = request(
            method.clone(),
            &server.http_url(path),
            &[("content-type", PROTOBUF)],
            body,
        )
        .await;
        assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text());
    }

    // Logs are refused loudly, never dropped silently.
    let reply = server
        .otlp_post(
            "/v1/logs",
            PROTOBUF,
            ExportLogsServiceRequest::default().encode_to_vec(),
        )
        .await;
    assert_status_body(&reply, 501, 12, false, "protobuf logs");
    assert!(
        rpc_status(&reply).message.contains("logs"),
        "{}",
        reply.text()
    );
    let reply = server
        .otlp_post("/v1/logs", JSON, br#"{"resourceLogs":[]}"#.to_vec())
        .await;
    assert_status_body(&reply, 501, 12, true, "json logs");
    let err = LogsServiceClient::new(grpc_channel(&server).await)
        .export(ExportLogsServiceRequest::default())
        .await
        .expect_err("grpc logs");
    assert_eq!(err.code(), tonic::Code::Unimplemented, "grpc logs: {err:?}");

    // gRPC garbage.
    for garbage in [vec![0xffu8; 64], b"\x0a\xff\xff\xff\xff\x0f".to_vec()] {
        let err = grpc_raw_export(&server, garbage)
            .await
            .expect_err("garbage over grpc");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "grpc garbage: {err:?}"
        );
    }
    // The raw path itself works: a valid message sent the same way is accepted.
    let (t2, s2) = ids(41);
    let answer = grpc_raw_export(
        &server,
        request_of(vec![span(&t2, &s2, "raw-grpc", None)]).encode_to_vec(),
    )
    .await
    .expect("valid raw grpc export");
    let answer = ExportTraceServiceResponse::decode(answer.as_slice()).expect("response");
    assert_eq!(answer.partial_success.map_or(0, |p| p.rejected_spans), 0);

    assert_eq!(
        server
            .sql_count("SELECT count(*) AS n FROM spans WHERE span_name = 'never-stored'")
            .await,
        0
    );
    assert_eq!(
        span_count(&server).await,
        1,
        "only the raw valid export is stored"
    );
    assert_keeps_serving(&server).await;
}

/// 4xx with `{"error": "..."}`.
pub(crate) fn assert_query_error(reply: &Reply, status: &[u16], what: &str) {
    assert!(
        status.contains(&reply.status),
        "{what}: expected {status:?}, got {} {}",
        reply.status,
        reply.text()
    );
    let body = reply.json();
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: error body {body}"
    );
}

async fn sql_body(server: &TestServer, body: &[u8]) -> Reply {
    post(
        &server.query_url("/api/v1/sql"),
        &[("content-type", JSON)],
        body.to_vec(),
    )
    .await
}

/// The SQL endpoint is read-only, cannot reach files, stops runaway queries, and refuses
/// malformed requests; trace ids are validated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sql_and_trace_ids() {
    let server = TestServer::start(&[
        "--set",
        "query.timeout_secs=2",
        "--set",
        "query.memory_limit_bytes=33554432",
    ]);
    // Some data, so DML would have something to work on.
    let (t, s) = ids(50);
    let reply = server
        .otlp_post(
            "/v1/traces",
            PROTOBUF,
            request_of(vec![span(&t, &s, "victim", None)]).encode_to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200);

    let scratch = tempfile::tempdir().expect("tempdir");
    let copy_target = scratch.path().join("stolen.parquet");
    let table_dir = scratch.path().join("external");
    std::fs::create_dir_all(&table_dir).expect("mkdir");
    let forbidden = [
        format!(
            "CREATE EXTERNAL TABLE e2e_x (a INT) STORED AS CSV LOCATION '{}'",
            table_dir.display()
        ),
        "CREATE EXTERNAL TABLE e2e_pw STORED AS CSV LOCATION '/etc/passwd'".to_owned(),
        "CREATE TABLE e2e_t AS SELECT 1 AS a".to_owned(),
        "CREATE VIEW e2e_v AS SELECT * FROM spans".to_owned(),
        format!("COPY (SELECT 1 AS a) TO '{}'", copy_target.display()),
        format!(
            "COPY spans TO '{}' STORED AS PARQUET",
            copy_target.display()
        ),
        "INSERT INTO spans SELECT * FROM spans".to_owned(),
        "DROP TABLE spans".to_owned(),
        "DROP TABLE IF EXISTS metrics".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
        "SET datafusion.execution.target_partitions = 1".to_owned(),
    ];
    for sql in &forbidden {
        let reply = server.sql_reply(sql).await;
        assert_query_error(&reply, &[403], sql);
    }
    assert!(
        !copy_target.exists(),
        "COPY wrote {}",
        copy_target.display()
    );
    assert_eq!(
        span_count(&server).await,
        1,
        "the table is intact and not doubled"
    );
    assert_eq!(
        server
            .sql_count(
                "SELECT count(*) AS n FROM information_schema.tables WHERE table_name LIKE 'e2e_%'"
            )
            .await,
        0,
        "no table or view was created"
    );

    // Files outside the data directory are not reachable.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ] {
        let reply = server.sql_reply(sql).await;
        assert_query_error(&reply, &[400, 403], sql);
        assert!(
            !reply.text().contains("root:"),
            "{sql} leaked the file: {}",
            reply.text()
        );
    }

    // Plain SQL errors.
    for sql in [
        "SELEC 1",
        "SELECT * FROM no_such_table",
        "SELECT no_such_column FROM spans",
        "",
    ] {
        let reply = server.sql_reply(sql).await;
        assert_query_error(&reply, &[400], sql);
    }

    // Malformed requests.
    for body in [
        &br#"{"sql": "#[..],
        &b"not json"[..],
        &br#"{"query": "SELECT 1"}"#[..],
        &br#"{"sql": 5}"#[..],
    ] {
        let reply = sql_body(&server, body).await;
        assert_query_error(&reply, &[400], &String::from_utf8_lossy(body));
    }

    // A query that would run forever is stopped by the time limit.
    let sql = "SELECT sum(value) AS s FROM generate_series(1, 1000000000000)";
    let reply = server.sql_reply(sql).await;
    assert_query_error(&reply, &[408], sql);
    // One that would hold far more than the memory limit is stopped too.
    let sql = "SELECT a.value AS x, b.value AS y FROM generate_series(1, 100000000) a \
               CROSS JOIN generate_series(1, 100000000) b ORDER BY x DESC, y DESC";
    let reply = server.sql_reply(sql).await;
    assert_query_error(&reply, &[408, 422], sql);
    let sql = "SELECT value % 100000000 AS k, count(*) AS n FROM generate_series(1, 1000000000) \
               GROUP BY k ORDER BY n DESC";
    let reply = server.sql_reply(sql).await;
    assert_query_error(&reply, &[408, 422], sql);

    // Trace ids.
    for id in [
        "nothex",
        "00000000000000000000000000000000",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdeg",
        "0123456789abcdef0123456789abcdef00",
    ] {
        let reply = server.trace_reply(id).await;
        assert_query_error(&reply, &[400], &format!("trace id {id}"));
    }
    let (unknown, _) = ids(51);
    let reply = server.trace_reply(&hex::encode(unknown)).await;
    assert_eq!(reply.status, 404, "unknown trace id: {}", reply.text());
    assert!(
        server.trace(&hex::encode(t)).await.is_some(),
        "the known trace is found"
    );

    // Still answering, in every output format.
    let rows = server.sql_rows("SELECT 1 AS one").await;
    assert_eq!(rows, vec![json!({"one": 1})]);
    let reply = request(
        reqwest::Method::POST,
        &server.query_url("/api/v1/sql"),
        &[("content-type", JSON), ("accept", "text/csv")],
        Some(br#"{"sql": "SELECT 1 AS one, 'x' AS two"}"#.to_vec()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "one,two\n1,x\n");
    let reply = request(
        reqwest::Method::POST,
        &server.query_url("/api/v1/sql"),
        &[
            ("content-type", JSON),
            ("accept", "application/vnd.apache.arrow.stream"),
        ],
        Some(br#"{"sql": "SELECT span_name FROM spans"}"#.to_vec()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reader = arrow::ipc::reader::StreamReader::try_new(reply.body.as_slice(), None)
        .expect("arrow ipc stream");
    let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(rows, 1);
    assert_keeps_serving(&server).await;
}

/// A wrong argument to one of Weft's SQL functions is the client's mistake: 400, like any
/// other SQL error, not a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_to_weft_sql_functions_are_400() {
    let server = TestServer::start(&[]);
    let mut wrong = Vec::new();
    for sql in [
        "SELECT hex_id(42)",
        "SELECT hex_id('not binary')",
        "SELECT trace_id_from_hex('zz') AS t",
        "SELECT span_id_from_hex('0102')",
    ] {
        let reply = server.sql_reply(sql).await;
        if reply.status != 400 {
            wrong.push(format!(
                "{sql}: expected 400, got {} {}",
                reply.status,
                reply.text()
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_keeps_serving(&server).await;
}

// ---- size, depth, time and memory limits of queries ----------------------------------------

/// `SELECT 1+1+…+1 AS s` with `terms` terms: nests `terms + 1` deep (query block included).
pub(crate) fn sum_sql(terms: usize) -> String {
    format!("SELECT {} AS s", vec!["1"; terms].join("+"))
}

/// `branches` single-row SELECTs joined by UNION ALL.
pub(crate) fn union_sql(branches: usize) -> String {
    vec!["SELECT 1 AS one"; branches].join(" UNION ALL ")
}

pub(crate) fn or_chain_sql(terms: usize) -> String {
    let terms: Vec<String> = (0..terms).map(|i| format!("flags = {i}")).collect();
    format!(
        "SELECT count(*) AS n FROM spans WHERE {}",
        terms.join(" OR ")
    )
}

/// Peak resident memory of a process (`VmHWM`), in bytes.
pub(crate) fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// CPU time a process has used (user + system), in clock ticks of 1/100 s.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The largest default limits: `query.max_expression_depth`, `query.max_set_operation_branches`,
/// `query.max_search_conditions`.
const MAX_DEPTH: usize = 256;
const MAX_BRANCHES: usize = 256;
const MAX_CONDITIONS: usize = 64;

/// Statements and searches deep or long enough to overflow a thread's stack in planning
/// (once they aborted the whole process) get 400 naming the limit; at the limit they are
/// answered correctly; the server keeps taking data and answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_statements_and_searches_are_refused_at_their_limits() {
    let server = TestServer::start(&[]);
    let (t, s) = ids(60);
    let reply = server
        .otlp_post(
            "/v1/traces",
            PROTOBUF,
            request_of(vec![span(&t, &s, "deep", Some(("k0", "v")))]).encode_to_vec(),
        )
        .await;
    assert_eq!(reply.status, 200);

    // At the limit: answered, and right.
    let rows = server.sql_rows(&sum_sql(MAX_DEPTH - 1)).await;
    assert_eq!(rows, vec![json!({"s": MAX_DEPTH - 1})]);
    let rows = server.sql_rows(&union_sql(MAX_BRANCHES)).await;
    assert_eq!(rows.len(), MAX_BRANCHES);
    assert_eq!(server.sql_count(&or_chain_sql(200)).await, 1);

    // Over it: 400 naming the limit.
    for (sql, limit) in [
        (sum_sql(MAX_DEPTH), "query.max_expression_depth"),
        (sum_sql(2_000), "query.max_expression_depth"),
        (or_chain_sql(2_000), "query.max_expression_depth"),
        (
            union_sql(MAX_BRANCHES + 1),
            "query.max_set_operation_branches",
        ),
        (union_sql(5_000), "query.max_set_operation_branches"),
    ] {
        let what = format!("{}… ({} bytes)", &sql[..40], sql.len());
        let reply = server.sql_reply(&sql).await;
        assert_query_error(&reply, &[400], &what);
        assert!(reply.text().contains(limit), "{what}: {}", reply.text());
    }

    // Search and Jaeger: a bounded number of conditions.
    let search = |n: usize| {
        let attrs: String = (0..n).map(|i| format!("&attr=k{i}%3Dv")).collect();
        server.query_url(&format!("/api/v1/search?limit=5{attrs}"))
    };
    let reply = get(&search(MAX_CONDITIONS)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    for n in [MAX_CONDITIONS + 1, 2_000] {
        let reply = get(&search(n)).await;
        assert_query_error(&reply, &[400], &format!("search with {n} attr="));
        assert!(
            reply.text().contains("query.max_search_conditions"),
            "{}",
            reply.text()
        );
    }
    let jaeger = |n: usize| {
        let tags: String = (0..n).map(|i| format!("&tag=k{i}:v")).collect();
        server.query_url(&format!("/api/traces?service=unknown-service{tags}"))
    };
    let reply = get(&jaeger(MAX_CONDITIONS)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Jaeger's own error shape: {"errors": [{"code": 400, "msg": …}]}.
    let reply = get(&jaeger(2_000)).await;
    assert_eq!(reply.status, 400, "jaeger with 2000 tag=: {}", reply.text());
    assert!(
        reply.text().contains("query.max_search_conditions"),
        "{}",
        reply.text()
    );

    assert_keeps_serving(&server).await;
}

/// A CPU-bound query (a cross join through `regexp_replace`) runs in the query bulkhead:
/// while it runs, /readyz and OTLP exports are answered; it is answered 408
/// at its time limit (within a 3x margin) and its work stops; a query over the concurrency
/// limit waits briefly and gets 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cpu_bound_query_cannot_stall_the_server() {
    const LIMIT_SECS: u64 = 2;
    let server = TestServer::start(&[
        "--set",
        &format!("query.timeout_secs={LIMIT_SECS}"),
        "--set",
        "query.max_concurrent_queries=2",
        "--set",
        "query.queue_timeout_ms=200",
    ]);
    let hostile = |seed: u64| {
        let url = server.query_url("/api/v1/sql");
        let sql = format!(
            "SELECT count(*) AS n FROM generate_series(1, 200000) a \
             CROSS JOIN generate_series(1, 200000) b \
             WHERE regexp_replace(CAST(a.value + {seed} AS VARCHAR) || 'x' || \
             CAST(b.value AS VARCHAR), '^([0-9]+)+x', 'y') = 'z'"
        );
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let body = serde_json::to_vec(&json!({ "sql": sql })).expect("json");
            let reply = post(&url, &[("content-type", JSON)], body).await;
            (reply, started.elapsed())
        })
    };

    let running = hostile(1);
    // Everything else answers while the hostile query runs.
    let mut rounds_during = 0;
    for round in 0..MAX_POLLS {
        if running.is_finished() {
            break;
        }
        assert_eq!(get(&server.http_url("/readyz")).await.status, 200);
        assert_eq!(get(&server.query_url("/readyz")).await.status, 200);
        let (t, s) = ids(100 + round as u64);
        let reply = server
            .otlp_post(
                "/v1/traces",
                PROTOBUF,
                request_of(vec![span(&t, &s, "during", None)]).encode_to_vec(),
            )
            .await;
        assert_eq!(
            reply.status,
            200,
            "export during the query: {}",
            reply.text()
        );
        if !running.is_finished() {
            rounds_during += 1;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert!(
        rounds_during > 0,
        "no health check, export and query completed while the hostile query ran"
    );
    let (reply, elapsed) = running.await.expect("hostile task");
    assert_query_error(&reply, &[408], "cross join with regexp_replace");
    assert!(
        elapsed < std::time::Duration::from_secs(3 * LIMIT_SECS),
        "answered after {elapsed:?}, limit {LIMIT_SECS}s"
    );

    // Two running fill the bulkhead: a third waits 200 ms, then 503 + Retry-After.
    let first = hostile(2);
    let second = hostile(3);
    let mut refused = None;
    for _ in 0..MAX_POLLS {
        let reply = server.sql_reply("SELECT 2 AS two").await;
        if first.is_finished() || second.is_finished() {
            break;
        }
        if reply.status == 503 {
            refused = Some(reply);
            break;
        }
        tokio::time::sleep(POLL_EVERY / 4).await;
    }
    let refused = refused.expect("a query over the concurrency limit was refused with 503");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert!(
        refused.text().contains("query.max_concurrent_queries"),
        "{}",
        refused.text()
    );
    for task in [first, second] {
        let (reply, elapsed) = task.await.expect("hostile task");
        assert_query_error(&reply, &[408], "concurrent cross join");
        assert!(elapsed < std::time::Duration::from_secs(3 * LIMIT_SECS));
    }

    // Cancellation reaches the operators: the process goes quiet (under a quarter of a
    // core over half a second) instead of computing the abandoned joins.
    let mut quiet = false;
    for _ in 0..40 {
        let before = cpu_ticks(server.pid());
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if cpu_ticks(server.pid()) - before < 13 {
            quiet = true;
            break;
        }
    }
    assert!(
        quiet,
        "the server kept computing after the queries timed out"
    );
    assert_eq!(
        server.sql_rows("SELECT 3 AS three").await,
        vec![json!({"three": 3})]
    );
    assert_keeps_serving(&server).await;
}

/// Every function that can make a value much larger than its input is refused before it
/// makes it (422 naming the limit), and the process's peak memory stays far below what the
/// values would take; aggregates stay within the memory pool; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_functions_are_refused_and_memory_stays_bounded() {
    let server = TestServer::start(&[]);
    for (sql, limit) in AMPLIFYING {
        let reply = server.sql_reply(sql).await;
        assert_query_error(&reply, &[422], sql);
        assert!(reply.text().contains(limit), "{sql}: {}", reply.text());
    }
    // Within the limits the same functions work.
    let rows = server
        .sql_rows(
            "SELECT length(repeat('x', 1000000)) AS a, length(lpad('x', 1000)) AS b, \
             cardinality(array_repeat(1, 1000)) AS c, length('ab' || 'cd') AS d, \
             cardinality(range(0, 100000)) AS e",
        )
        .await;
    assert_eq!(
        rows,
        vec![json!({"a": 1_000_000, "b": 1000, "c": 1000, "d": 4, "e": 100_000})]
    );
    let peak = peak_rss(server.pid());
    assert!(peak < 1536 << 20, "peak RSS {} MiB", peak >> 20);
    assert_keeps_serving(&server).await;
}

/// Hostile statements of the memory item and the limit each must name.
pub(crate) const AMPLIFYING: &[(&str, &str)] = &[
    (
        "SELECT repeat('x', 1000000000) AS v",
        "query.max_value_bytes",
    ),
    ("SELECT lpad('x', 1000000000) AS v", "query.max_value_bytes"),
    (
        "SELECT rpad('x', 1000000000, 'yz') AS v",
        "query.max_value_bytes",
    ),
    (
        "SELECT regexp_replace(repeat('x', 10000000), '', 'yyyyyyyyyy', 'g') AS v",
        "query.max_value_bytes",
    ),
    (
        "SELECT replace(repeat('x', 10000000), 'x', 'yyyy') AS v",
        "query.max_value_bytes",
    ),
    (
        "SELECT array_repeat(1, 150000000) AS v",
        "query.max_value_bytes",
    ),
    ("SELECT range(0, 150000000) AS v", "query.max_value_bytes"),
    (
        "SELECT generate_series(TIMESTAMP '2000-01-01', TIMESTAMP '2001-01-01', \
         INTERVAL '1 millisecond') AS v",
        "query.max_value_bytes",
    ),
    (
        "WITH a AS (SELECT repeat('x', 10000000) AS s) SELECT length(s || s) AS v FROM a",
        "query.max_value_bytes",
    ),
    (
        "WITH a AS (SELECT repeat('x', 10000000) AS s) SELECT length(concat(s, s)) AS v FROM a",
        "query.max_value_bytes",
    ),
    (
        "SELECT length(translate(repeat('x', 10000000), 'x', 'é')) AS v",
        "query.max_value_bytes",
    ),
    (
        "SELECT length(repeat('x', CAST(value % 2 + 100000 AS INT))) AS v \
         FROM generate_series(1, 100000)",
        "query.max_batch_bytes",
    ),
    (
        "SELECT length(string_agg(repeat('x', 1000), ',')) AS v FROM generate_series(1, 1000000)",
        "memory limit",
    ),
    (
        "SELECT cardinality(array_agg(x)) AS v FROM generate_series(1, 200000000) AS t(x)",
        "memory limit",
    ),
];
