//! What a `weft up` on a developer's machine exposes, and what its environment may do to it.
//!
//! - DNS rebinding: the query port (API and viewer) answers only loopback names, IP
//!   literals and the names in `query.allowed_hosts`; any other `Host` gets 403.
//! - Environment: only `WEFT_<SECTION>__<KEY>` variables of known sections are config;
//!   other `WEFT_*` names (tools' own, such as the viewer tests' `WEFT_URL`) are ignored.

use crate::common::raw_http;
use crate::server::TestServer;

/// `GET path` with the given `Host` header over a fresh connection.
async fn get_with_host(server: &TestServer, path: &str, host: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw_http(&server.query_http, request.as_bytes()).await
}

#[tokio::test]
async fn query_port_refuses_foreign_host_names() {
    let server = TestServer::start(&["--set", r#"query.allowed_hosts=["weft.test"]"#]);
    let port = server
        .query_http
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    for path in ["/api/services", "/api/v1/search?limit=1", "/", "/readyz"] {
        // A rebinding page's own name: refused, with the way out named.
        let (status, reply) = get_with_host(&server, path, &format!("evil.example:{port}")).await;
        assert_eq!(status, 403, "{path}: {reply}");
        assert!(reply.contains("query.allowed_hosts"), "{path}: {reply}");
        // Names that lead to this machine, and the configured one, are answered.
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("weft.test:{port}"),
            "WEFT.TEST".to_owned(),
        ] {
            let (status, reply) = get_with_host(&server, path, &host).await;
            assert_eq!(status, 200, "{path} with Host {host}: {reply}");
        }
    }
    let (_, services) = get_with_host(&server, "/api/services", "localhost").await;
    assert!(
        services.contains("\"data\""),
        "jaeger services body: {services}"
    );
}

#[tokio::test]
async fn unrelated_weft_variables_do_not_stop_weft_up() {
    let server = TestServer::start_with_env(
        &[],
        &[
            ("WEFT_URL", "http://127.0.0.1:1"),
            ("WEFT_FACTS", "/nonexistent/facts.json"),
            ("WEFT_QUERY__MAX_RESULT_ROWS", "3"),
        ],
    );
    // Started (the harness waited for `weft: ready`), and the known variable took effect.
    let reply = server
        .sql_reply("SELECT * FROM (VALUES (1), (2), (3), (4), (5)) AS t(x)")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json().as_array().map(Vec::len),
        Some(3),
        "{}",
        reply.text()
    );
}
