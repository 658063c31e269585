//! Slow, idle, numerous and amplifying clients against a real `weft up` (issue 14, items 7,
//! 9 and 10): decode bombs are refused before they are decoded and memory stays bounded;
//! slow headers, stalled bodies, lying `Content-Length`s and unfinished gRPC messages are
//! cut and release their budget; more idle sockets than file descriptors do not stop
//! exports or queries.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::bad_input::{grpc_channel, grpc_raw_export_on, ids, request_of, span};
use crate::common::{DEADLINE, JSON, PROTOBUF, post};
use crate::server::TestServer;

const MIB: u64 = 1 << 20;

/// `{resourceSpans: [{scopeSpans: [{spans: [n empty spans]}]}]}` in protobuf: 2 bytes a span.
fn empty_spans_protobuf(n: usize) -> Vec<u8> {
    fn field(key: u8, inner: &[u8]) -> Vec<u8> {
        let mut out = vec![key];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    }
    let spans: Vec<u8> = std::iter::repeat_n([0x12u8, 0x00], n).flatten().collect();
    field(0x0a, &field(0x12, &spans))
}

/// The same in OTLP/JSON: 3 bytes a span.
fn empty_spans_json(n: usize) -> Vec<u8> {
    let mut body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":["#.to_vec();
    for i in 0..n {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{}");
    }
    body.extend_from_slice(b"]}]}]}");
    body
}

/// A one-span export body and its trace id (hex).
fn one_span(seed: u64, name: &str) -> (String, Vec<u8>) {
    let (t, s) = ids(seed);
    (
        hex::encode(t),
        request_of(vec![span(&t, &s, name, None)]).encode_to_vec(),
    )
}

fn addr(url: &str) -> &str {
    url.strip_prefix("http://").unwrap_or(url)
}

/// Reads until the peer closes or answers; `Some(reply)` (possibly empty) when it did within
/// `within`, `None` when the connection was still open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut reply = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&reply).into_owned())
}

/// Item 7: 16 MB of empty spans (8 million over protobuf, 5 million over JSON, the protobuf
/// body again over gRPC) sent at once get 413 / RESOURCE_EXHAUSTED naming the limit before
/// anything is decoded; the server's peak RSS stays far below the gigabytes decoding would
/// take, and a one-span export sent while they are in flight is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decode_bombs_are_refused_before_decoding() {
    let server = TestServer::start(&[]);
    let proto = empty_spans_protobuf(8_000_000);
    let json = empty_spans_json(5_000_000);
    assert!(proto.len() < 16 << 20 && json.len() < 16 << 20);
    let rss_before = server.proc_status_bytes("VmRSS");

    let url = server.http_url("/v1/traces");
    let proto_http = tokio::spawn({
        let (url, body) = (url.clone(), proto.clone());
        async move { post(&url, &[("content-type", PROTOBUF)], body).await }
    });
    let json_http = tokio::spawn({
        let url = url.clone();
        async move { post(&url, &[("content-type", JSON)], json).await }
    });
    let grpc_channel = grpc_channel(&server).await;
    let grpc = tokio::spawn({
        let channel = grpc_channel.clone();
        async move { grpc_raw_export_on(channel, proto).await }
    });

    // Sent after the three bombs: acknowledged, and stored.
    let (trace_id, small) = one_span(70, "beside-the-bombs");
    let started = Instant::now();
    let reply = post(&url, &[("content-type", PROTOBUF)], small).await;
    let small_latency = started.elapsed();
    assert_eq!(reply.status, 200, "one-span export: {}", reply.text());

    for (what, reply) in [
        ("protobuf", proto_http.await.expect("task")),
        ("json", json_http.await.expect("task")),
    ] {
        assert_eq!(reply.status, 413, "{what} bomb: {}", reply.text());
        assert!(
            reply.text().contains("max_items_per_request"),
            "{what}: the answer names the limit: {}",
            reply.text()
        );
    }
    let status = grpc.await.expect("task").expect_err("grpc bomb is refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_items_per_request"),
        "{status:?}"
    );

    let peak = server.proc_status_bytes("VmHWM");
    eprintln!(
        "decode bombs: rss before {} MiB, peak {} MiB; one-span export answered in {:?}",
        rss_before / MIB,
        peak / MIB,
        small_latency
    );
    assert!(
        peak < 1024 * MIB,
        "peak RSS {} MiB while refusing three 16 MB decode bombs",
        peak / MIB
    );
    assert!(
        server.trace(&trace_id).await.is_some(),
        "the small export is stored"
    );
}

/// What held before item 7 still holds: 300,000 spans in one request (under the item cap)
/// are accepted and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_thousand_spans_still_fit() {
    let server = TestServer::start(&[]);
    let (t, _) = ids(71);
    let spans = (0..300_000u64)
        .map(|i| span(&t, &(i + 1).to_be_bytes(), "s", None))
        .collect();
    let body = request_of(spans).encode_to_vec();
    assert!(body.len() < 16 << 20, "{}", body.len());
    let reply = post(
        &server.http_url("/v1/traces"),
        &[("content-type", PROTOBUF)],
        body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stored = server
        .sql_count(&format!(
            "SELECT count(*) AS n FROM spans WHERE trace_id = trace_id_from_hex('{}')",
            hex::encode(t)
        ))
        .await;
    assert_eq!(stored, 300_000);
}

/// Item 9: a client that sends its request headers one byte at a time is disconnected
/// after `listen.header_read_timeout_secs`, on every HTTP port (gRPC's too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut() {
    const TIMEOUT_SECS: u64 = 2;
    let server = TestServer::start(&[
        "--set",
        &format!("listen.header_read_timeout_secs={TIMEOUT_SECS}"),
    ]);
    let ports = [
        server.otlp_http.clone(),
        server.query_http.clone(),
        server.otlp_grpc.clone(),
    ];
    let mut tasks = Vec::new();
    for base in ports {
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr(&base)).await.expect("connect");
            let started = Instant::now();
            let request = b"POST /v1/traces HTTP/1.1\r\nHost: weft\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            // One byte every 500 ms; bounded: the request is 100 bytes long (50 s).
            for byte in request.iter() {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                if closed_within(&mut stream, Duration::from_millis(500))
                    .await
                    .is_some()
                {
                    break;
                }
            }
            (base, started.elapsed())
        }));
    }
    for task in tasks {
        let (base, open_for) = task.await.expect("task");
        eprintln!("slow-loris connection to {base} stayed open {open_for:?}");
        assert!(
            open_for < Duration::from_secs(3 * TIMEOUT_SECS + 1),
            "{base}: a slow-header connection stayed open {open_for:?} \
             (header_read_timeout_secs = {TIMEOUT_SECS})"
        );
    }
    // The server is still fine.
    let (trace_id, body) = one_span(72, "after-slow-headers");
    let reply = server.otlp_post("/v1/traces", PROTOBUF, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(server.trace(&trace_id).await.is_some());
}

/// Item 9: uploads that stop half-way hold the in-flight budget only until
/// `listen.body_idle_timeout_secs`: each is answered 408, and an export that needs the
/// budget they held is then accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_are_cut_and_release_their_budget() {
    const TIMEOUT_SECS: u64 = 2;
    let server = TestServer::start(&[
        "--set",
        &format!("listen.body_idle_timeout_secs={TIMEOUT_SECS}"),
        "--set",
        "collector.receiver.max_inflight_bytes=8388608",
    ]);
    // 10 uploads announce 1 MiB and send 700 KiB: together about the whole 8 MiB budget.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(addr(&server.otlp_http))
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: weft\r\nContent-Type: {PROTOBUF}\r\n\
             Content-Length: {}\r\n\r\n",
            1 << 20
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream
            .write_all(&vec![0u8; 700 << 10])
            .await
            .expect("part of the body");
        stalled.push(stream);
    }
    let started = Instant::now();
    for stream in &mut stalled {
        let reply = closed_within(stream, DEADLINE)
            .await
            .expect("a stalled upload is answered");
        let status = reply.split_whitespace().nth(1).unwrap_or("");
        assert!(
            status == "408" || status == "429",
            "a stalled upload gets 408 (or 429 if the budget was already full): {reply:?}"
        );
    }
    let cut_after = started.elapsed();
    eprintln!("stalled uploads answered within {cut_after:?}");
    assert!(cut_after < Duration::from_secs(3 * TIMEOUT_SECS + 5));
    // The budget is free again: a 3 MiB export fits.
    let (t, s) = ids(73);
    let big = request_of(vec![span(
        &t,
        &s,
        "after-stalls",
        Some(("filler", &"x".repeat(3 << 20))),
    )]);
    let reply = server
        .otlp_post("/v1/traces", PROTOBUF, big.encode_to_vec())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Item 9: requests that announce 16 MB and send one byte cost what they sent, not what
/// they announced (RSS stays bounded), and are cut after the body idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_lengths_allocate_nothing() {
    const REQUESTS: usize = 1_000;
    let server = TestServer::start(&["--set", "listen.body_idle_timeout_secs=2"]);
    let rss_before = server.proc_status_bytes("VmRSS");
    let mut streams = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let mut stream = TcpStream::connect(addr(&server.otlp_http))
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: weft\r\nContent-Type: {PROTOBUF}\r\n\
             Content-Length: 16000000\r\n\r\nx"
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        streams.push(stream);
    }
    let mut answered = 0;
    for stream in &mut streams {
        if let Some(reply) = closed_within(stream, DEADLINE).await {
            assert!(reply.contains(" 408 "), "{reply:?}");
            answered += 1;
        }
    }
    assert_eq!(answered, REQUESTS, "every lying request is answered");
    let peak = server.proc_status_bytes("VmHWM");
    eprintln!(
        "{REQUESTS} requests announcing 16 MB: rss before {} MiB, peak {} MiB",
        rss_before / MIB,
        peak / MIB
    );
    assert!(
        peak < rss_before + 256 * MIB,
        "peak RSS {} MiB (before: {} MiB)",
        peak / MIB,
        rss_before / MIB
    );
}

/// Starts a gRPC export over a fresh HTTP/2 connection whose message header announces
/// `announced` bytes, sends `sent` bytes of it and then nothing; returns the `grpc-status`
/// of the answer (the stream and connection stay open until the answer).
async fn unfinished_grpc_message(base: &str, announced: u32, sent: usize) -> Option<i32> {
    use tonic::codegen::http;
    let tcp = TcpStream::connect(addr(base)).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.expect("h2 ready");
    let request = http::Request::post(format!(
        "{base}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (response, mut stream) = client.send_request(request, false).expect("send request");
    let mut message = vec![0u8];
    message.extend_from_slice(&announced.to_be_bytes());
    message.extend(std::iter::repeat_n(0u8, sent));
    // Queued; h2 sends it as the server's flow-control window allows.
    stream
        .send_data(bytes::Bytes::from(message), false)
        .expect("send data");
    let response = response.await.expect("response");
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    drop(stream);
    driver.abort();
    status
}

/// Item 9: unfinished gRPC messages are charged to the in-flight budget as their bytes
/// arrive (one bigger than the budget is refused with UNAVAILABLE before it completes), and
/// a stalled one is cut with DEADLINE_EXCEEDED after the body idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_grpc_messages_are_charged_and_cut() {
    let server = TestServer::start(&[
        "--set",
        "listen.body_idle_timeout_secs=2",
        "--set",
        "collector.receiver.max_inflight_bytes=8388608",
    ]);
    // 12 MiB of an announced 16 MB message: more than the 8 MiB budget.
    let status = tokio::time::timeout(
        DEADLINE,
        unfinished_grpc_message(&server.otlp_grpc, 16_000_000, 12 << 20),
    )
    .await
    .expect("answered before the message completes");
    assert_eq!(status, Some(tonic::Code::Unavailable as i32));

    // 1 MiB of it, then nothing: cut after the body idle timeout.
    let started = Instant::now();
    let status = tokio::time::timeout(
        DEADLINE,
        unfinished_grpc_message(&server.otlp_grpc, 16_000_000, 1 << 20),
    )
    .await
    .expect("a stalled message is answered");
    let open_for = started.elapsed();
    assert_eq!(status, Some(tonic::Code::DeadlineExceeded as i32));
    eprintln!("stalled grpc message cut after {open_for:?}");
    assert!(open_for < Duration::from_secs(3 * 2 + 5));

    // Nothing is left charged: an export that needs most of the budget fits.
    let (t, s) = ids(74);
    let big = request_of(vec![span(
        &t,
        &s,
        "after-grpc-stalls",
        Some(("filler", &"x".repeat(2 << 20))),
    )]);
    TraceServiceClient::new(grpc_channel(&server).await)
        .export(big)
        .await
        .expect("export after the stalled streams");
}

/// Item 10: with an open-file limit of 256 that cannot be raised, 900 idle sockets (300 on
/// each HTTP port) do not stop an export over HTTP and gRPC, nor a query: the listeners cap
/// their connections and close the idle longest to make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_past_the_fd_limit_do_not_block_exports() {
    let server = TestServer::start_wrapped(&["prlimit", "--nofile=256:256", "--"], &[]);
    let mut idle = Vec::new();
    for base in [&server.otlp_http, &server.query_http, &server.otlp_grpc] {
        for _ in 0..300 {
            idle.push(TcpStream::connect(addr(base)).await.expect("connect"));
        }
    }
    let (trace_id, body) = one_span(75, "past-the-fd-limit");
    let reply = tokio::time::timeout(
        DEADLINE,
        post(
            &server.http_url("/v1/traces"),
            &[("content-type", PROTOBUF)],
            body,
        ),
    )
    .await
    .expect("the export is answered despite the idle sockets");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (t, s) = ids(76);
    tokio::time::timeout(DEADLINE, async {
        TraceServiceClient::new(grpc_channel(&server).await)
            .export(request_of(vec![span(
                &t,
                &s,
                "grpc-past-the-fd-limit",
                None,
            )]))
            .await
    })
    .await
    .expect("the grpc export is answered")
    .expect("grpc export");
    let stored = tokio::time::timeout(
        DEADLINE,
        server.sql_count(&format!(
            "SELECT count(*) AS n FROM spans WHERE trace_id IN \
             (trace_id_from_hex('{trace_id}'), trace_id_from_hex('{}'))",
            hex::encode(t)
        )),
    )
    .await
    .expect("the query is answered despite the idle sockets");
    assert_eq!(stored, 2);
    drop(idle);
}
