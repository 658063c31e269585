//! The cluster roles: `weft collector`, `weft ingest`, `weft query`.
//!
//! ```text
//!  apps ─OTLP─> weft ingest (any number, behind a TCP load balancer)
//!                 │ split by trace ID, hash ring, R copies, retries, breaker, spool
//!                 ▼ internal OTLP/gRPC (listen.cluster_grpc)
//!               weft collector (one per node id) ── WAL ── Parquet under nodes/<id>/ of storage.url
//!                 ▲ /internal/v1/snapshot (listen.cluster_http): unflushed rows
//!               weft query ── reads nodes/*/ of storage.url + asks every collector ── SQL, API, viewer
//!
//!  every role: membership (static list, DNS or gossip) ─> ClusterView ─> /api/v1/cluster
//! ```
//!
//! Each role prints `weft: <listener> listening on <addr>` lines and then `weft: ready`,
//! like `weft up`, so scripts and tests find the ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use axum::Router;
use tokio::sync::watch;
use weft_cluster::info::NodeInfoHandle;
use weft_cluster::membership::{Membership, Role};
use weft_cluster::{NodeInfo, node_data_dir};
use weft_collector::{Collector, CollectorOptions};
use weft_ingest::Ingest;
use weft_query::QueryService;
use weft_query::cluster::ClusterSource;
use weft_telemetry::Telemetry;

use crate::config::WeftConfig;
use crate::operator;
use crate::server::{Health, bind, health_routes, otlp_grpc_server, shutdown_signal};

/// `weft collector`: stores the traces the ring gives it; serves its unflushed rows.
pub(crate) async fn collector(config: WeftConfig) -> anyhow::Result<()> {
    let limits = config.listen.limits(2);
    let grpc_listener = bind(config.listen.cluster_grpc, "cluster-grpc", &limits).await?;
    let http_listener = bind(config.listen.cluster_http, "cluster-http", &limits).await?;
    let (grpc_bound, http_bound) = (grpc_listener.local_addr()?, http_listener.local_addr()?);
    let grpc_addr = advertised(
        &config.listen.advertise_cluster_grpc,
        grpc_listener.local_addr()?,
    );
    let http_addr = advertised(
        &config.listen.advertise_cluster_http,
        http_listener.local_addr()?,
    );
    let node_id = node_id(&config, http_listener.local_addr()?);

    let data_dir = node_data_dir(&config.cluster.storage, &node_id);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating node directory {}", data_dir.display()))?;
    let mut collector_config = config.collector.clone();
    collector_config.data_dir = std::fs::canonicalize(&data_dir)?;
    // Files and manifests under nodes/<id>/ of `storage.url` (default: cluster.storage);
    // the WAL stays in the node's local directory.
    let objects = weft_storage::ObjectStorage::open(&config.storage, &config.cluster.storage)
        .context("opening storage.url")?;
    let telemetry = Telemetry::new();
    let collector = Collector::open_with(
        collector_config,
        CollectorOptions {
            sampling: config.sampling.clone(),
            // Ingest nodes head-sample; collectors tail-sample what they own.
            head_sampling: false,
            // Not exact when a series' points spread over collectors (see CollectorOptions).
            metrics_limits: false,
            // The ingest node applied the time window when the client sent the data.
            time_window: false,
            telemetry: std::sync::Arc::clone(&telemetry),
            objects: Some(objects),
            objects_prefix: weft_cluster::node_prefix(&node_id),
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

    let info = NodeInfoHandle::new(NodeInfo {
        node_id: node_id.clone(),
        grpc_addr: grpc_addr.clone(),
        http_addr: http_addr.clone(),
        ready: false,
    });
    let membership = Membership::start(&config.cluster, Role::Collector, Some(info.clone()))
        .await
        .context("joining the cluster")?;
    let health = Arc::new(Health::default());

    let (stop_tx, stop_rx) = watch::channel(false);
    let grpc = otlp_grpc_server(
        std::sync::Arc::clone(&collector),
        grpc_listener,
        stopped(stop_rx.clone()),
    );
    let http = weft_receiver::http::router(std::sync::Arc::clone(&collector))
        .merge(weft_cluster::info::router(info.clone()))
        .merge(weft_collector::snapshot_server::router(
            std::sync::Arc::clone(&collector),
        ))
        .merge(weft_telemetry::route(telemetry))
        .merge(operator::router(operator::Source::new(
            "collector",
            &node_id,
            &membership,
            None,
        )))
        .merge(health_routes(std::sync::Arc::clone(&health)));

    println!("weft: node id {node_id}");
    println!("weft: cluster-grpc listening on {grpc_bound}");
    println!("weft: cluster-http listening on http://{http_bound}");
    if grpc_addr != grpc_bound.to_string() || http_addr != http_bound.to_string() {
        println!("weft: advertised as grpc {grpc_addr}, http {http_addr}");
    }
    println!(
        "weft: data directory {}",
        collector.store().data_dir().display()
    );
    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(serve(http_listener, http, stop_rx.clone()));
    info.set_ready(true);
    println!("weft: ready");

    shutdown_signal().await;
    tracing::info!("shutting down: leaving the cluster, draining, flushing");
    // Not ready first, so ingest nodes route around this node before it stops answering.
    info.set_ready(false);
    health.shutting_down.store(true, Ordering::Relaxed);
    membership.shutdown().await;
    let _ = stop_tx.send(true);
    let (grpc_result, http_result) = tokio::join!(grpc_task, http_task);
    grpc_result?.context("cluster-grpc server")?;
    http_result?.context("cluster-http server")?;
    collector.shutdown().await.context("final flush")?;
    tracing::info!("stopped");
    Ok(())
}

/// `weft ingest`: OTLP from apps, forwarded to the owners of each trace.
pub(crate) async fn ingest(config: WeftConfig) -> anyhow::Result<()> {
    let limits = config.listen.limits(2);
    let grpc_listener = bind(config.listen.otlp_grpc, "otlp-grpc", &limits).await?;
    let http_listener = bind(config.listen.otlp_http, "otlp-http", &limits).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let node_id = node_id(&config, http_addr);

    let membership = Membership::start(&config.cluster, Role::Ingest, None)
        .await
        .context("joining the cluster")?;
    let telemetry = Telemetry::new();
    let ingest = Ingest::start_with(
        config.ingest.clone(),
        config.collector.receiver.clone(),
        membership.view(),
        &config.sampling.head,
        std::sync::Arc::clone(&telemetry),
    )
    .context("starting the forwarder")?;
    let reloaded = std::sync::Arc::clone(&ingest);
    crate::reload::spawn(
        config.clone(),
        std::sync::Arc::clone(&telemetry),
        move |new| {
            reloaded
                .reload_sampling(&new.sampling)
                .map_err(|e| e.to_string())
        },
    );
    let health = Arc::new(Health::default());

    let (stop_tx, stop_rx) = watch::channel(false);
    let grpc = otlp_grpc_server(
        std::sync::Arc::clone(&ingest),
        grpc_listener,
        stopped(stop_rx.clone()),
    );
    let http = weft_receiver::http::router(std::sync::Arc::clone(&ingest))
        .merge(weft_telemetry::route(telemetry))
        .merge(operator::router(operator::Source::new(
            "ingest",
            &node_id,
            &membership,
            Some(std::sync::Arc::clone(&ingest)),
        )))
        .merge(health_routes(std::sync::Arc::clone(&health)));

    println!("weft: node id {node_id}");
    println!("weft: otlp-grpc listening on {grpc_addr}");
    println!("weft: otlp-http listening on http://{http_addr}");
    println!("weft: ready");
    let grpc_task = tokio::spawn(grpc);
    let http_task = tokio::spawn(serve(http_listener, http, stop_rx.clone()));

    shutdown_signal().await;
    tracing::info!("shutting down: draining requests, delivering or spooling what is queued");
    health.shutting_down.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let (grpc_result, http_result) = tokio::join!(grpc_task, http_task);
    grpc_result?.context("otlp-grpc server")?;
    http_result?.context("otlp-http server")?;
    ingest.shutdown().await;
    membership.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// `weft query`: SQL, APIs and the viewer over the shared storage plus live collector rows.
pub(crate) async fn query(config: WeftConfig) -> anyhow::Result<()> {
    let limits = config.listen.limits(2);
    let query_listener = bind(config.listen.query_http, "query-http", &limits).await?;
    let postgres_listener = bind(config.listen.postgres, "postgres", &limits).await?;
    let query_addr = query_listener.local_addr()?;
    let postgres_addr = postgres_listener.local_addr()?;
    let node_id = node_id(&config, query_addr);

    let membership = Membership::start(&config.cluster, Role::Query, None)
        .await
        .context("joining the cluster")?;
    let objects = weft_storage::ObjectStorage::open(&config.storage, &config.cluster.storage)
        .context("opening storage.url")?;
    let source = ClusterSource::with_objects(
        objects,
        config.cluster.storage.clone(),
        membership.view(),
        std::time::Duration::from_millis(config.cluster.fanout_timeout_ms),
    );
    let query = Arc::new(QueryService::new_cluster(source, config.query.clone())?);
    // 1-minute and 1-hour metrics rollups of closed hours (`[query.rollups]`).
    let rollups = weft_query::metrics::rollup::spawn_rollup_loop(std::sync::Arc::clone(&query));
    let health = Arc::new(Health::default());

    let (stop_tx, stop_rx) = watch::channel(false);
    let postgres = weft_query::pg::serve(
        postgres_listener,
        std::sync::Arc::clone(&query),
        stopped(stop_rx.clone()),
    );
    let http = weft_query::http::router(query)
        .merge(operator::router(operator::Source::new(
            "query",
            &node_id,
            &membership,
            None,
        )))
        .merge(weft_ui::router())
        .merge(health_routes(std::sync::Arc::clone(&health)));
    let http = weft_query::http::guard_hosts(http, &config.query.allowed_hosts);

    println!("weft: node id {node_id}");
    println!("weft: query-http listening on http://{query_addr}");
    println!("weft: postgres listening on {postgres_addr}");
    println!("weft: web viewer at http://{query_addr}/");
    println!("weft: ready");
    let http_task = tokio::spawn(serve(query_listener, http, stop_rx.clone()));
    let postgres_task = tokio::spawn(postgres);

    shutdown_signal().await;
    health.shutting_down.store(true, Ordering::Relaxed);
    // A pass cut short leaves only temporary files, removed by a later pass.
    rollups.abort();
    let _ = stop_tx.send(true);
    let (http_result, postgres_result) = tokio::join!(http_task, postgres_task);
    http_result?.context("query server")?;
    postgres_result?.context("postgres server")?;
    membership.shutdown().await;
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn serve(
    listener: weft_receiver::listen::Listener,
    router: Router,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    weft_receiver::listen::serve_http(listener, router, stopped(stop)).await
}

/// The configured node id, or `<hostname>-<port>` of the node's main listener.
fn node_id(config: &WeftConfig, listener: SocketAddr) -> String {
    if !config.cluster.node_id.is_empty() {
        return config.cluster.node_id.clone();
    }
    format!("{}-{}", hostname(), listener.port())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weft".to_owned())
}

/// The address other nodes should use: the configured one, else the bound address (with
/// the host name instead of an unspecified IP such as 0.0.0.0).
fn advertised(configured: &str, bound: SocketAddr) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    if bound.ip().is_unspecified() {
        format!("{}:{}", hostname(), bound.port())
    } else {
        bound.to_string()
    }
}
