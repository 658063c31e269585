// Throwaway end-to-end check against mock OTLP servers. Not committed.
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::*;
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use weft_load_test::*;

#[derive(Default)]
struct Mock { n: AtomicU64, spans: AtomicU64 }

#[tonic::async_trait]
impl TraceService for Mock {
    async fn export(&self, req: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let i = self.n.fetch_add(1, Ordering::Relaxed);
        if i % 10 == 3 {
            let d = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(30)));
            use tonic_types::StatusExt;
            return Err(tonic::Status::with_error_details(tonic::Code::ResourceExhausted, "busy", d));
        }
        if i % 10 == 5 { return Err(tonic::Status::unavailable("later")); }
        self.spans.fetch_add(span_count(req.get_ref()) as u64, Ordering::Relaxed);
        let partial = (i % 7 == 0).then(|| ExportTracePartialSuccess { rejected_spans: 3, error_message: "x".into() });
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: partial }))
    }
}

async fn grpc_server(port: u16, stop: tokio::sync::oneshot::Receiver<()>) -> Arc<Mock> {
    let mock = Arc::new(Mock::default());
    let svc = TraceServiceServer::from_arc(mock.clone()).accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder().add_service(svc).serve_with_shutdown(addr, async { let _ = stop.await; }).await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    mock
}

async fn http_server(port: u16, spans: Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let n = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let (sock, _) = l.accept().await.unwrap();
            let n = n.clone(); let spans = spans.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 { return; }
                    let (mut len, mut json, mut gz) = (0usize, false, false);
                    loop {
                        let mut h = String::new(); r.read_line(&mut h).await.unwrap();
                        let hl = h.to_ascii_lowercase();
                        if hl.trim().is_empty() { break; }
                        if let Some(v) = hl.strip_prefix("content-length:") { len = v.trim().parse().unwrap(); }
                        if hl.starts_with("content-type:") && hl.contains("json") { json = true; }
                        if hl.starts_with("content-encoding:") && hl.contains("gzip") { gz = true; }
                    }
                    assert!(line.starts_with("POST /v1/traces"), "{line}");
                    let mut body = vec![0; len]; r.read_exact(&mut body).await.unwrap();
                    if gz { let mut d = flate2::read::GzDecoder::new(&body[..]); let mut o = vec![]; std::io::Read::read_to_end(&mut d, &mut o).unwrap(); body = o; }
                    let req: ExportTraceServiceRequest = if json {
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let tid = v["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"].as_str().unwrap().to_owned();
                        assert_eq!(tid.len(), 32);
                        serde_json::from_slice(&body).unwrap()
                    } else { ExportTraceServiceRequest::decode(&body[..]).unwrap() };
                    let i = n.fetch_add(1, Ordering::Relaxed);
                    let resp = if i % 10 == 4 {
                        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n".to_string()
                    } else if i % 10 == 6 {
                        "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n".to_string()
                    } else {
                        spans.fetch_add(span_count(&req) as u64, Ordering::Relaxed);
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
                    };
                    r.get_mut().write_all(resp.as_bytes()).await.unwrap();
                }
            });
        }
    });
}

fn acks() -> (AckCallback, Arc<Mutex<(u64, HashSet<Vec<u8>>)>>) {
    let seen = Arc::new(Mutex::new((0u64, HashSet::new())));
    let s2 = seen.clone();
    let cb: AckCallback = Arc::new(move |req: &ExportTraceServiceRequest| {
        let mut g = s2.lock().unwrap();
        g.0 += span_count(req) as u64;
        for rs in &req.resource_spans { for ss in &rs.scope_spans { for s in &ss.spans { g.1.insert(s.span_id.clone()); } } }
    });
    (cb, seen)
}

#[tokio::main]
async fn main() {
    // gRPC, AFAP, gzip, metrics (metrics unimplemented on the mock -> errors)
    let (_tx, rx) = tokio::sync::oneshot::channel();
    let mock = grpc_server(14317, rx).await;
    let (cb, seen) = acks();
    let cfg = LoadConfig { endpoint: "http://127.0.0.1:14317".into(), duration: Duration::from_secs(3), gzip: true, metrics: true, quiet: true, server_pid: Some(std::process::id()), ..Default::default() };
    let r = run(cfg, Some(cb)).await.unwrap();
    print!("{r}");
    let g = seen.lock().unwrap();
    println!("acked via callback {} unique ids {}; server counted {}", g.0, g.1.len(), mock.spans.load(Ordering::Relaxed));
    assert_eq!(g.0, r.spans_accepted + r.rejected);
    assert_eq!(g.0, mock.spans.load(Ordering::Relaxed));
    drop(g);

    // gRPC paced
    let cfg = LoadConfig { endpoint: "http://127.0.0.1:14317".into(), duration: Duration::from_secs(3), rate: 20_000, quiet: true, ..Default::default() };
    let r = run(cfg, None).await.unwrap();
    print!("{r}");

    // HTTP proto + json, max_spans
    let hs = Arc::new(AtomicU64::new(0));
    http_server(14318, hs.clone()).await;
    for (protocol, gzip) in [(Protocol::HttpProto, false), (Protocol::HttpJson, true)] {
        let before = hs.load(Ordering::Relaxed);
        let (cb, seen) = acks();
        let cfg = LoadConfig { endpoint: "http://127.0.0.1:14318".into(), protocol, gzip, duration: Duration::from_secs(3), max_spans: Some(50_001), quiet: true, ..Default::default() };
        let r = run(cfg, Some(cb)).await.unwrap();
        print!("{r}");
        assert_eq!(r.spans_sent, 50_001);
        assert_eq!(seen.lock().unwrap().0, hs.load(Ordering::Relaxed) - before);
    }

    // server goes away mid-run
    let (tx, rx) = tokio::sync::oneshot::channel();
    grpc_server(14319, rx).await;
    tokio::spawn(async move { tokio::time::sleep(Duration::from_secs(1)).await; let _ = tx.send(()); });
    let t = std::time::Instant::now();
    let cfg = LoadConfig { endpoint: "http://127.0.0.1:14319".into(), duration: Duration::from_secs(30), rate: 50_000, quiet: true, ..Default::default() };
    let r = run(cfg, None).await.unwrap();
    print!("{r}");
    println!("took {:?}", t.elapsed());
    assert!(r.stopped_early.is_some());

    // nothing listening
    let cfg = LoadConfig { endpoint: "http://127.0.0.1:14399".into(), protocol: Protocol::HttpProto, quiet: true, ..Default::default() };
    println!("unreachable: {:#}", run(cfg, None).await.unwrap_err());
}
