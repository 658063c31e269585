//! The dependency graph and latency APIs over HTTP against a real `weft up`: a Zipkin trace
//! (yelp.json, converted with `weft_schemas::zipkin`) sent over OTLP/HTTP, queried from the
//! live rows, then again from Parquet after a restart; malformed parameters get 400.
//!
//! Expected values are read off yelp.json by hand (see the comments); the query crate's unit
//! tests cover the algorithms in depth.

use serde_json::Value;

use crate::common::{JSON, Reply, fixtures_dir, get};
use crate::server::TestServer;

/// yelp.json's spans all start within this second (2019-10-24T05:52:55Z).
const START: &str = "2019-10-24T05:52:55Z";
const END_NS: &str = "1571896376000000000";

async fn ingest_yelp(server: &TestServer) {
    let zipkin = std::fs::read(fixtures_dir().join("zipkin-v2/yelp.json")).expect("yelp.json");
    let conversion = weft_schemas::zipkin::to_otlp(&zipkin).expect("zipkin conversion");
    assert_eq!(conversion.spans, 16);
    let body = weft_schemas::otlp_json::encode_resource_spans(&conversion.request.resource_spans);
    let reply = server
        .otlp_post("/v1/traces", JSON, body.to_string().into_bytes())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn ok_json(reply: &Reply, what: &str) -> Value {
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    reply.json()
}

fn find<'a>(list: &'a Value, pred: impl Fn(&Value) -> bool, what: &str) -> &'a Value {
    list.as_array()
        .expect("a list")
        .iter()
        .find(|v| pred(v))
        .unwrap_or_else(|| panic!("{what} not in {list}"))
}

/// The graph and a latency report, as the API returns them, checked against yelp.json.
async fn check_graph_and_latency(server: &TestServer, stage: &str) {
    let graph = ok_json(
        &get(&server.query_url(&format!("/api/v1/dependencies?start={START}&end={END_NS}"))).await,
        stage,
    );
    let edges = &graph["edges"];
    // 3 shared-id pairs, 4 client-only groups (blt, memcache x2 services, mysql), 1 user edge.
    assert_eq!(
        edges.as_array().expect("edges").len(),
        8,
        "{stage}: {edges}"
    );
    let call = find(
        edges,
        |e| e["client"] == "yelp-main" && e["server"] == "mobile_api",
        "yelp-main -> mobile_api",
    );
    assert_eq!(call["calls"], 1.0, "{stage}");
    assert_eq!(call["virtual"], false);
    assert_eq!(call["kind"], "request");
    // yelp-main measured 56000 µs, mobile_api 41740 µs.
    assert_eq!(call["client_latency_ns"]["p50"], 56_000_000);
    assert_eq!(call["server_latency_ns"]["p50"], 41_740_000);
    assert_eq!(
        call["example_trace_ids"][0],
        "0000000000000000a03ee8fff1dcd9b9"
    );
    let memcache = find(
        edges,
        |e| e["client"] == "yelp-main" && e["server"] == "memcache",
        "yelp-main -> memcache",
    );
    assert_eq!(memcache["calls"], 3.0);
    assert_eq!(memcache["virtual_node"], "server");
    assert!(memcache["server_latency_ns"].is_null());
    let user = find(edges, |e| e["client"] == "user", "user edge");
    assert_eq!(user["server"], "routing");
    assert_eq!(user["virtual_node"], "client");
    let nodes = &graph["nodes"];
    assert_eq!(
        find(nodes, |n| n["service"] == "memcache", "memcache")["virtual"],
        true
    );
    let mobile_api = find(nodes, |n| n["service"] == "mobile_api", "mobile_api");
    assert_eq!(mobile_api["virtual"], false);
    assert_eq!(mobile_api["spans"], 5.0);
    assert_eq!(mobile_api["calls_in"], 1.0);
    assert_eq!(mobile_api["calls_out"], 4.0);

    // mobile_api's five spans: 1026, 1066, 3000, 14000 and 41740 µs.
    let report = ok_json(
        &get(&server.query_url(&format!(
            "/api/v1/latency?service=mobile_api&start={START}&end={END_NS}&step=250ms"
        )))
        .await,
        stage,
    );
    assert_eq!(report["service"], "mobile_api");
    assert_eq!(report["step_ns"], 250_000_000);
    let current = &report["current"];
    assert_eq!(current["count"], 5.0, "{stage}: {current}");
    assert_eq!(current["errors"], 0.0);
    assert_eq!(current["latency_ns"]["max"], 41_740_000);
    assert_eq!(current["latency_ns"]["min"], 1_026_000);
    let p50 = current["latency_ns"]["p50"].as_i64().expect("p50");
    assert!(
        (p50 - 3_000_000).abs() <= 3_000_000 / 128,
        "{stage}: p50 {p50}"
    );
    let series = current["series"].as_array().expect("series");
    assert_eq!(series.len(), 4);
    // mobile_api's spans start at 05:52:55.297–.322: all in the second 250 ms step.
    assert_eq!(series[1]["count"], 5.0);
    assert!(report["compare"].is_null());
    assert_eq!(
        current["slowest_operations"][0]["operation"],
        "post /location/update/v4"
    );

    // Without a service: every (service, operation); yelp.json has 16 spans.
    let table = ok_json(
        &get(&server.query_url(&format!("/api/v1/latency?start={START}&end={END_NS}"))).await,
        stage,
    );
    let total: f64 = table["current"]["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| o["count"].as_f64().expect("count"))
        .sum();
    assert_eq!(total, 16.0, "{stage}");

    // Parent → child pairs (the service map's second kind of edge): the 15 non-root spans.
    let links = ok_json(
        &get(&server.query_url(&format!(
            "/api/v1/dependencies/links?start={START}&end={END_NS}"
        )))
        .await,
        stage,
    );
    let pairs: Vec<(String, String, u64)> = links["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            (
                l["parent"].as_str().expect("parent").to_owned(),
                l["child"].as_str().expect("child").to_owned(),
                l["call_count"].as_u64().expect("call_count"),
            )
        })
        .collect();
    let pair = |p: &str, c: &str, n: u64| (p.to_owned(), c.to_owned(), n);
    assert_eq!(
        pairs,
        vec![
            pair("mobile_api", "mobile_api", 4),
            pair("mobile_api", "spectre", 1),
            pair("routing", "unknown", 1),
            pair("routing", "yelp-main", 1),
            pair("unknown", "yelp_main/api_proxy", 1),
            pair("yelp-main", "mobile_api", 1),
            pair("yelp-main", "yelp-main", 4),
            pair("yelp_main/api_proxy", "yelp-main", 2),
        ],
        "{stage}"
    );
    assert_eq!(links["end_ns"].as_i64(), END_NS.parse().ok());

    // The slowest spans of mobile_api, one per trace: yelp.json is one trace, whose
    // longest mobile_api span is the 41740 µs server span.
    let slowest = ok_json(
        &get(&server.query_url(&format!(
            "/api/v1/latency/slowest?service=mobile_api&start={START}&end={END_NS}"
        )))
        .await,
        stage,
    );
    let spans = slowest["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 1, "{stage}: {slowest}");
    assert_eq!(spans[0]["trace_id"], "0000000000000000a03ee8fff1dcd9b9");
    assert_eq!(spans[0]["duration_ns"], 41_740_000);
    assert_eq!(
        spans[0]["span_name"],
        current["slowest_operations"][0]["operation"]
    );
    assert_eq!(spans[0]["status_code"], 0);
    assert!(
        spans[0]["start_time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2019-10-24T05:52:55.")),
        "{stage}: {slowest}"
    );
    // An operation narrows the spans; a service with no spans has none (the name is a
    // value, never SQL: quotes and all).
    let fast = ok_json(
        &get(&server.query_url(&format!(
            "/api/v1/latency/slowest?service=mobile_api&operation=get&start={START}&end={END_NS}&limit=3"
        )))
        .await,
        stage,
    );
    // mobile_api's one `get` span lasted 3000 µs.
    assert_eq!(
        fast["spans"].as_array().map(Vec::len),
        Some(1),
        "{stage}: {fast}"
    );
    assert_eq!(fast["spans"][0]["span_name"], "get");
    assert_eq!(fast["spans"][0]["duration_ns"], 3_000_000);
    let none = ok_json(
        &get(&server.query_url(&format!(
            "/api/v1/latency/slowest?service=x%27%20OR%20%271%27%3D%271&start={START}&end={END_NS}"
        )))
        .await,
        stage,
    );
    assert_eq!(none["spans"], serde_json::json!([]), "{stage}");
}

#[tokio::test]
async fn dependencies_and_latency_over_http() {
    let server = TestServer::start(&[]);
    ingest_yelp(&server).await;
    check_graph_and_latency(&server, "live rows").await;

    // A graceful stop flushes to Parquet; the restarted server reads the files.
    let mut server = server;
    let status = server.stop();
    assert!(status.success(), "weft exited with {status}");
    let restarted = TestServer::start_in(&server.data_dir, &[]);
    check_graph_and_latency(&restarted, "parquet").await;
}

#[tokio::test]
async fn malformed_parameters_get_400() {
    let server = TestServer::start(&[]);
    for path in [
        "/api/v1/dependencies?start=yesterday",
        "/api/v1/dependencies?start=2024-01-02T00:00:00Z&end=2024-01-01T00:00:00Z",
        "/api/v1/dependencies?begin=5",
        "/api/v1/latency?operation=GET",
        "/api/v1/latency?service=a&step=0s",
        "/api/v1/latency?service=a&step=1ms",
        "/api/v1/latency?service=a&compare_start=5",
        "/api/v1/latency?end=12abc",
        "/api/v1/latency?service=a&colour=blue",
        "/api/v1/dependencies/links?start=yesterday",
        "/api/v1/dependencies/links?begin=5",
        "/api/v1/latency/slowest",
        "/api/v1/latency/slowest?service=a&limit=0",
        "/api/v1/latency/slowest?service=a&limit=many",
        "/api/v1/latency/slowest?service=a&colour=blue",
        "/api/v1/metrics/heatmap",
        "/api/v1/metrics/heatmap?metric=m&agg=sum",
        "/api/v1/metrics/heatmap?metric=m&step=0s",
    ] {
        let reply = get(&server.query_url(path)).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
        let body = reply.json();
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
}
