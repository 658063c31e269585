//! OTLP exporters: gRPC (tonic) and HTTP (reqwest, protobuf or JSON).
//!
//! A request is encoded once into a [`Bytes`] payload ([`Transport::encode`])
//! which every attempt of that export then reuses, so retries cost no
//! re-encoding. Each attempt is classified into an [`Outcome`] following the
//! OTLP exporter retry rules; the retry loop itself lives in the runner.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use serde::Serialize;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::Protocol;

/// Longest server-requested retry delay we honour.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Largest response body read from an HTTP server.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Longest start-up connection check.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which OTLP signal an export carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        }
    }

    fn http_suffix(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

/// How one export attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The server acknowledged the export; `rejected` items were refused
    /// (OTLP partial success).
    Accepted { rejected: u64 },
    /// Back-pressure or a transient server error: retry, after `delay` if
    /// the server asked for one.
    Retryable {
        delay: Option<Duration>,
        reason: String,
    },
    /// A permanent failure. `connection` is true when no server response was
    /// received at all (refused, reset, timed out).
    Failed { reason: String, connection: bool },
}

/// An OTLP exporter bound to one endpoint.
#[derive(Clone)]
pub(crate) enum Transport {
    Grpc {
        channel: Channel,
        gzip: bool,
    },
    Http {
        client: reqwest::Client,
        traces_url: String,
        metrics_url: String,
        json: bool,
        gzip: bool,
    },
}

impl Transport {
    /// Connects (gRPC) or checks the endpoint accepts TCP connections (HTTP),
    /// so an unreachable server fails the run up front.
    pub(crate) async fn connect(
        protocol: Protocol,
        endpoint: &str,
        gzip: bool,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(endpoint)
            .with_context(|| format!("invalid endpoint URL {endpoint:?}"))?;
        if url.scheme() != "http" {
            bail!("endpoint {endpoint:?}: only plain http:// endpoints are supported");
        }
        match protocol {
            Protocol::Grpc => {
                let endpoint_cfg = Endpoint::from_shared(endpoint.to_owned())
                    .with_context(|| format!("invalid gRPC endpoint {endpoint:?}"))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(timeout)
                    .tcp_nodelay(true);
                let channel = tokio::time::timeout(CONNECT_TIMEOUT, endpoint_cfg.connect())
                    .await
                    .with_context(|| format!("timed out connecting to {endpoint}"))?
                    .with_context(|| format!("cannot connect to {endpoint}"))?;
                Ok(Transport::Grpc { channel, gzip })
            }
            Protocol::HttpProto | Protocol::HttpJson => {
                let host = url
                    .host_str()
                    .with_context(|| format!("endpoint {endpoint:?} has no host"))?
                    .to_owned();
                let port = url.port_or_known_default().unwrap_or(80);
                tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio::net::TcpStream::connect((host, port)),
                )
                .await
                .with_context(|| format!("timed out connecting to {endpoint}"))?
                .with_context(|| format!("cannot connect to {endpoint}"))?;
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .no_proxy()
                    .retry(reqwest::retry::never())
                    .build()
                    .context("building HTTP client")?;
                let (traces_url, metrics_url) = signal_urls(endpoint);
                Ok(Transport::Http {
                    client,
                    traces_url,
                    metrics_url,
                    json: protocol == Protocol::HttpJson,
                    gzip,
                })
            }
        }
    }

    /// Encodes an export request into the exact payload every attempt sends:
    /// protobuf or JSON, gzipped for HTTP when asked (tonic compresses gRPC
    /// messages itself).
    pub(crate) fn encode<M: Message + Serialize>(&self, msg: &M) -> std::io::Result<Bytes> {
        match self {
            Transport::Grpc { .. } => encode_payload(msg, false, false),
            Transport::Http { json, gzip, .. } => encode_payload(msg, *json, *gzip),
        }
    }

    /// Sends one export attempt.
    pub(crate) async fn export(&self, signal: Signal, body: Bytes) -> Outcome {
        match self {
            Transport::Grpc { channel, gzip } => {
                grpc_export(channel.clone(), *gzip, signal, body).await
            }
            Transport::Http {
                client,
                traces_url,
                metrics_url,
                json,
                gzip,
            } => {
                let url = match signal {
                    Signal::Traces => traces_url,
                    Signal::Metrics => metrics_url,
                };
                http_export(client, url, *json, *gzip, signal, body).await
            }
        }
    }
}

/// `{endpoint}/v1/traces` and `{endpoint}/v1/metrics`; an endpoint already
/// naming a signal path is used as given for that signal.
pub(crate) fn signal_urls(endpoint: &str) -> (String, String) {
    let base = endpoint.trim_end_matches('/');
    for signal in [Signal::Traces, Signal::Metrics] {
        if let Some(root) = base.strip_suffix(signal.http_suffix()) {
            let traces = format!("{root}{}", Signal::Traces.http_suffix());
            let metrics = format!("{root}{}", Signal::Metrics.http_suffix());
            return (traces, metrics);
        }
    }
    (
        format!("{base}{}", Signal::Traces.http_suffix()),
        format!("{base}{}", Signal::Metrics.http_suffix()),
    )
}

/// Protobuf (or OTLP/JSON) encoding of `msg`, optionally gzipped.
pub(crate) fn encode_payload<M: Message + Serialize>(
    msg: &M,
    json: bool,
    gzip: bool,
) -> std::io::Result<Bytes> {
    let body = if json {
        Bytes::from(serde_json::to_vec(msg).map_err(std::io::Error::other)?)
    } else {
        let mut buf = BytesMut::with_capacity(msg.encoded_len());
        msg.encode(&mut buf).map_err(std::io::Error::other)?;
        buf.freeze()
    };
    if gzip { gzip_bytes(&body) } else { Ok(body) }
}

pub(crate) fn gzip_bytes(data: &[u8]) -> std::io::Result<Bytes> {
    // Level 6 is what tonic uses for gRPC and what OTLP SDKs use by default.
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::new(6));
    enc.write_all(data)?;
    Ok(Bytes::from(enc.finish()?))
}

/// Parses `partial_success` out of a successful response body.
fn rejected_count(signal: Signal, json: bool, body: &[u8]) -> u64 {
    if body.is_empty() {
        return 0;
    }
    let rejected = match (signal, json) {
        (Signal::Traces, false) => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_spans),
        (Signal::Traces, true) => serde_json::from_slice::<ExportTraceServiceResponse>(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_spans),
        (Signal::Metrics, false) => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_data_points),
        (Signal::Metrics, true) => serde_json::from_slice::<ExportMetricsServiceResponse>(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_data_points),
    };
    rejected.unwrap_or(0).max(0) as u64
}

// ---------------------------------------------------------------------------
// gRPC

/// Sends pre-encoded protobuf bytes and returns the raw response bytes.
///
/// Wire-identical to the generated `TraceServiceClient` (same path, same
/// tonic framing and compression), but the payload is encoded once per
/// export instead of once per attempt, and the request need not be cloned
/// to survive a retry.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
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
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

async fn grpc_export(channel: Channel, gzip: bool, signal: Signal, body: Bytes) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel).accept_compressed(CompressionEncoding::Gzip);
    if gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    if let Err(e) = grpc.ready().await {
        return Outcome::Failed {
            reason: format!("grpc: channel not ready: {e}"),
            connection: true,
        };
    }
    let path = PathAndQuery::from_static(signal.grpc_path());
    match grpc.unary(tonic::Request::new(body), path, RawCodec).await {
        Ok(resp) => Outcome::Accepted {
            rejected: rejected_count(signal, false, resp.get_ref()),
        },
        Err(status) => classify_grpc(&status),
    }
}

fn classify_grpc(status: &Status) -> Outcome {
    let code = status.code();
    let reason = with_detail(format!("grpc {code:?}"), status.message());
    // tonic attaches a source error only to statuses it synthesised locally
    // (connect refused, connection reset, timeout); statuses sent by the
    // server have none.
    if let Some(source) = std::error::Error::source(status) {
        return Outcome::Failed {
            reason: format!(
                "{reason} ({})",
                truncate(&innermost(source).to_string(), 120)
            ),
            connection: true,
        };
    }
    match code {
        // OTLP/gRPC retryable codes; RESOURCE_EXHAUSTED is the server's
        // back-pressure signal and is retried even without RetryInfo.
        // OUT_OF_RANGE, retryable in the spec, is what tonic servers answer
        // to an oversized message, which no retry can fix.
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::DataLoss => Outcome::Retryable {
            delay: status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay),
            reason,
        },
        _ => Outcome::Failed {
            reason,
            connection: false,
        },
    }
}

// ---------------------------------------------------------------------------
// HTTP

async fn http_export(
    client: &reqwest::Client,
    url: &str,
    json: bool,
    gzip: bool,
    signal: Signal,
    body: Bytes,
) -> Outcome {
    let content_type = if json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    if gzip {
        req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
    }
    let mut resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => {
            return Outcome::Failed {
                reason: format!("http: {}", describe_reqwest(&e)),
                connection: true,
            };
        }
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match read_body(&mut resp).await {
        Ok(body) => body,
        Err(e) => {
            return Outcome::Failed {
                reason: format!(
                    "http {}: reading response: {}",
                    status.as_u16(),
                    describe_reqwest(&e)
                ),
                connection: true,
            };
        }
    };
    let code = status.as_u16();
    if status.is_success() {
        return Outcome::Accepted {
            rejected: rejected_count(signal, json, &body),
        };
    }
    let reason = with_detail(format!("http {code}"), &String::from_utf8_lossy(&body));
    match code {
        // OTLP/HTTP retryable responses.
        429 | 502 | 503 | 504 => Outcome::Retryable {
            delay: retry_after,
            reason,
        },
        _ => Outcome::Failed {
            reason,
            connection: false,
        },
    }
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a response body.
async fn read_body(resp: &mut reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    // Each chunk is non-empty, so the size cap also bounds the iterations.
    for _ in 0..MAX_RESPONSE_BYTES {
        match resp.chunk().await? {
            Some(chunk) => {
                let room = MAX_RESPONSE_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_RESPONSE_BYTES {
                    break;
                }
            }
            None => break,
        }
    }
    Ok(body)
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "transport error"
    };
    // The innermost cause carries the useful bit ("Connection refused").
    format!("{kind}: {}", truncate(&innermost(e).to_string(), 120))
}

fn innermost<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut cause = e;
    for _ in 0..16 {
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    cause
}

/// `"{what}: {detail}"`, detail shortened; just `what` when there is no detail.
fn with_detail(what: String, detail: &str) -> String {
    match truncate(detail, 120) {
        "" => what,
        detail => format!("{what}: {detail}"),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s.trim();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_urls_append_or_keep_paths() {
        let (t, m) = signal_urls("http://127.0.0.1:4318");
        assert_eq!(t, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(m, "http://127.0.0.1:4318/v1/metrics");
        let (t, m) = signal_urls("http://h:1/otlp/v1/traces/");
        assert_eq!(t, "http://h:1/otlp/v1/traces");
        assert_eq!(m, "http://h:1/otlp/v1/metrics");
    }

    #[test]
    fn grpc_classification() {
        assert!(matches!(
            classify_grpc(&Status::unavailable("busy")),
            Outcome::Retryable { delay: None, .. }
        ));
        assert!(matches!(
            classify_grpc(&Status::resource_exhausted("full")),
            Outcome::Retryable { .. }
        ));
        assert!(matches!(
            classify_grpc(&Status::invalid_argument("bad")),
            Outcome::Failed {
                connection: false,
                ..
            }
        ));
        let details = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(250)));
        let status = Status::with_error_details(Code::ResourceExhausted, "slow down", details);
        match classify_grpc(&status) {
            Outcome::Retryable { delay, .. } => assert_eq!(delay, Some(Duration::from_millis(250))),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn partial_success_is_parsed() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
        let resp = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 7,
                error_message: "too old".into(),
            }),
        };
        assert_eq!(
            rejected_count(Signal::Traces, false, &resp.encode_to_vec()),
            7
        );
        let json = serde_json::to_vec(&resp).unwrap();
        assert_eq!(rejected_count(Signal::Traces, true, &json), 7);
        assert_eq!(rejected_count(Signal::Traces, false, b""), 0);
    }
}
