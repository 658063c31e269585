//! `weft up`: binds every listener, prints the addresses, serves until SIGINT/SIGTERM,
//! then flushes buffered data.
//!
//! ```text
//!  :4317 tonic  ── OTLP gRPC ──┐
//!  :4318 axum   ── OTLP HTTP ──┼─> weft_collector::Collector ──> WAL, Parquet
//!  :3200 axum   ── query API, web viewer ──> weft_query::QueryService ──┘ (snapshots)
//!  :5433 pgwire ── Postgres protocol (psql) ──┘ (same read-only SQL path)
//! ```
//!
//! Every listener goes through `weft_receiver::listen` (header, body and idle timeouts,
//! HTTP/2 limits, a connection cap that sheds the idle longest; see `[listen]`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_collector::{Collector, CollectorOptions};
use weft_query::QueryService;
use weft_receiver::listen::{Limits, Listener, serve_http};
use weft_telemetry::Telemetry;

use crate::config::WeftConfig;

/// Liveness and readiness, shared by every listener.
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub(crate) shutting_down: AtomicBool,
}

pub(crate) fn health_routes(health: Arc<Health>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Arc<Health>>| async move {
                if h.shutting_down.load(Ordering::Relaxed) {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
                } else {
                    (StatusCode::OK, "ready")
                }
            }),
        )
        .with_state(health)
}

pub(crate) async fn up(config: WeftConfig) -> anyhow::Result<()> {
    let data_dir = &config.collector.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let mut collector_config = config.collector.clone();
    collector_config.data_dir = std::fs::canonicalize(data_dir)?;
    // Parquet files and manifests: the data directory itself unless `storage.url` says
    // otherwise; the WAL always stays in the data directory.
    let objects = weft_storage::ObjectStorage::open(&config.storage, &collector_config.data_dir)
        .context("opening storage.url")?;
    // The WAL is replayed here, before any listener accepts data.
    let telemetry = Telemetry::new();
    let collector = Collector::open_with(
        collector_config,
        CollectorOptions {
            sampling: config.sampling.clone(),
            head_sampling: true,
            metrics_limits: true,
            time_window: true,
            telemetry: std::sync::Arc::clone(&telemetry),
            objects: Some(objects),
            objects_prefix: String::new(),
            retention: Some((
                config.storage.retention.clone(),
                config.storage.delete_grace(),
            )),
        },
    )
    .context("opening the collector")?;
    let reloaded = std::sync::Arc::clone(&collector);
    crate::reload::spawn(
        config.clone(),
        std::sync::Arc::clone(&telemetry),
        move |new| {
            reloaded
                .reload_sampling(&new.sampling)
                .map_err(|e| e.to_string())?;
            reloaded.reload_retention(&new.storage.retention, new.storage.delete_grace());
            Ok(())
        },
    );
    let query = Arc::new(QueryService::new(
        std::sync::Arc::clone(collector.store()),
        config.query.clone(),
    )?);
    // 1-minute and 1-hour metrics rollups of closed hours (`[query.rollups]`).
    let rollups = weft_query::metrics::rollup::spawn_rollup_loop(std::sync::Arc::clone(&query));
    let health = Arc::new(Health::default());

    // Four listeners share the process's file descriptors.
    let limits = config.listen.limits(4);
    let grpc_listener = bind(config.listen.otlp_grpc, "otlp-grpc", &limits).await?;
    let http_listener = bind(config.listen.otlp_http, "otlp-http", &limits).await?;
    let query_listener = bind(config.listen.query_http, "query-http", &limits).await?;
    let postgres_listener = bind(config.listen.postgres, "postgres", &limits).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let query_addr = query_listener.local_addr()?;
    let postgres_addr = postgres_listener.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let grpc = otlp_grpc_server(
        std::sync::Arc::clone(&collector),
        grpc_listener,
        stopped(stop_rx.clone()),
    );
    // Own metrics on the OTLP/HTTP port: on the query port `/metrics` is the viewer's page.
    let otlp_http = weft_receiver::http::router(std::sync::Arc::clone(&collector))
        .merge(weft_telemetry::route(telemetry))
        .merge(health_routes(std::sync::Arc::clone(&health)));
    let postgres = weft_query::pg::serve(
        postgres_listener,
        std::sync::Arc::clone(&query),
        stopped(stop_rx.clone()),
    );
    let query_http = weft_query::http::guard_hosts(
        weft_query::http::router(query)
            .merge(weft_ui::router())
            .merge(health_routes(std::sync::Arc::clone(&health))),
        &config.query.allowed_hosts,
    );

    println!("weft: otlp-grpc listening on {grpc_addr}");
    println!("weft: otlp-http listening on http://{http_addr}");
    println!("weft: query-http listening on http://{query_addr}");
    println!("weft: postgres listening on {postgres_addr}");
    println!("weft: web viewer at http://{query_addr}/");
    println!(
        "weft: data directory {}",
        collector.store().data_dir().display()
    );
    println!("weft: ready");

    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(serve_http(
        http_listener,
        otlp_http,
        stopped(stop_rx.clone()),
    ));
    let query_task = tokio::spawn(serve_http(
        query_listener,
        query_http,
        stopped(stop_rx.clone()),
    ));

    let postgres_task = tokio::spawn(postgres);

    shutdown_signal().await;
    tracing::info!("shutting down: draining requests, then flushing buffered data");
    health.shutting_down.store(true, Ordering::Relaxed);
    // A pass cut short leaves only temporary files, removed by a later pass.
    rollups.abort();
    let _ = stop_tx.send(true);
    let (grpc_result, http_result, query_result, postgres_result) =
        tokio::join!(grpc_task, http_task, query_task, postgres_task);
    grpc_result?.context("otlp-grpc server")?;
    http_result?.context("otlp-http server")?;
    query_result?.context("query server")?;
    postgres_result?.context("postgres server")?;
    collector.shutdown().await.context("final flush")?;
    tracing::info!("stopped");
    Ok(())
}

/// The OTLP/gRPC services of `sink` (a collector or an ingest node) on `listener`, until
/// `shutdown` resolves.
/// Served like every HTTP listener ([`serve_http`]: timeouts, HTTP/2 limits, connection
/// cap), so gRPC clients get the same protection as HTTP ones.
pub(crate) fn otlp_grpc_server<S: weft_receiver::OtlpSink>(
    sink: Arc<S>,
    listener: Listener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
    let (traces, metrics, logs) = weft_receiver::grpc::services(sink);
    let routes = tonic::service::Routes::new(traces)
        .add_service(metrics)
        .add_service(logs);
    serve_http(listener, routes, shutdown)
}

/// Binds `addr`; the listener applies `limits` (connection cap, idle shedding).
pub(crate) async fn bind(
    addr: std::net::SocketAddr,
    what: &'static str,
    limits: &Limits,
) -> anyhow::Result<Listener> {
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} on {addr}"))?;
    Ok(Listener::new(tcp, what, limits.clone()))
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
