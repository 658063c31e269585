//! `weft`: one binary for every role. `weft up` runs all of them in one process.
//!
//! Configuration comes from a TOML file (`--config` / `WEFT_CONFIG`), then `WEFT_*`
//! environment variables, then flags; see `config.example.toml`.

// A binary: its output is what it prints.
#![allow(clippy::print_stdout)]

mod config;
mod operator;
mod reload;
mod roles;
mod server;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::WeftConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "Distributed tracing and metrics backend"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "WEFT_CONFIG")]
    config: Option<PathBuf>,
    /// Override any config key: `--set collector.buffer.flush_age_secs=5` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE", value_parser = parse_override)]
    overrides: Vec<(String, String)>,
    #[command(subcommand)]
    command: Command,
}

// The doc comments are `--help` text, where `<storage>` is a placeholder, not HTML.
#[allow(rustdoc::invalid_html_tags)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role in one process: OTLP receivers, storage, query API and web viewer.
    Up {
        /// Directory for the write-ahead log and Parquet files.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// OTLP/gRPC listen address.
        #[arg(long)]
        otlp_grpc: Option<String>,
        /// OTLP/HTTP listen address.
        #[arg(long)]
        otlp_http: Option<String>,
        /// Query API and web viewer listen address.
        #[arg(long)]
        query_http: Option<String>,
        /// Postgres wire protocol listen address.
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Cluster role: store the traces the hash ring assigns to this node (WAL, Parquet under
    /// <storage>/nodes/<node id>/) and serve its unflushed rows to query nodes.
    Collector {
        #[command(flatten)]
        cluster: ClusterFlags,
        /// Internal OTLP/gRPC listen address (ingest nodes forward here).
        #[arg(long)]
        cluster_grpc: Option<String>,
        /// Internal HTTP listen address (health, node info, snapshots).
        #[arg(long)]
        cluster_http: Option<String>,
    },
    /// Cluster role: receive OTLP and forward every trace to its owning collectors.
    Ingest {
        #[command(flatten)]
        cluster: ClusterFlags,
        /// OTLP/gRPC listen address.
        #[arg(long)]
        otlp_grpc: Option<String>,
        /// OTLP/HTTP listen address (also health and /api/v1/cluster).
        #[arg(long)]
        otlp_http: Option<String>,
        /// Directory of the hinted hand-off spool.
        #[arg(long)]
        spool_dir: Option<PathBuf>,
    },
    /// Cluster role: SQL, trace/search/graph APIs and the web viewer over the shared storage
    /// plus every collector's unflushed rows.
    Query {
        #[command(flatten)]
        cluster: ClusterFlags,
        /// Query API and web viewer listen address.
        #[arg(long)]
        query_http: Option<String>,
        /// Postgres wire protocol listen address.
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Show the ring as a node sees it: members, state, token ranges, queues, spool.
    Ring {
        /// Any node's HTTP base URL (ingest: its OTLP/HTTP port; collector: its cluster-http
        /// port; query: its query port).
        #[arg(long, default_value = "http://127.0.0.1:4318")]
        url: String,
        /// Also list every token range.
        #[arg(long)]
        ranges: bool,
        /// Print the JSON as received.
        #[arg(long)]
        json: bool,
    },
    /// Write-ahead log tools.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Print the effective configuration as TOML.
    Config {
        /// Print the built-in defaults instead (the content of config.example.toml).
        #[arg(long)]
        defaults: bool,
    },
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Read the WAL of a data directory and print what replay would find damaged (torn
    /// tails, corruption, missing sequence numbers) without changing anything. Exit status
    /// 1 when corruption is found.
    Check {
        /// The data directory (the WAL is its `wal/` subdirectory).
        data_dir: PathBuf,
    },
}

/// Flags every cluster role shares (anything else: the config file or `--set`).
#[derive(Debug, clap::Args)]
struct ClusterFlags {
    /// This node's id (collectors: names its data directory; keep it across restarts).
    #[arg(long)]
    node_id: Option<String>,
    /// Shared storage root.
    #[arg(long)]
    storage: Option<PathBuf>,
    /// Static membership: collectors' internal HTTP addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    collectors: Vec<String>,
    /// Gossip membership: UDP listen address for this node.
    #[arg(long)]
    gossip_listen: Option<String>,
    /// Gossip membership: seed nodes' UDP addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    gossip_seeds: Vec<String>,
}

impl ClusterFlags {
    fn overrides(&self) -> Vec<(&'static str, Option<String>)> {
        let list = |items: &[String]| {
            (!items.is_empty()).then(|| {
                let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
                format!("[{}]", quoted.join(","))
            })
        };
        let mut out = vec![
            (
                "cluster.node_id",
                self.node_id.as_ref().map(|v| format!("{v:?}")),
            ),
            (
                "cluster.storage",
                self.storage
                    .as_ref()
                    .map(|p| format!("{:?}", p.display().to_string())),
            ),
            (
                "cluster.membership.static_collectors",
                list(&self.collectors),
            ),
            (
                "cluster.membership.gossip_listen",
                self.gossip_listen.as_ref().map(|v| format!("{v:?}")),
            ),
            ("cluster.membership.gossip_seeds", list(&self.gossip_seeds)),
        ];
        if self.gossip_listen.is_some() || !self.gossip_seeds.is_empty() {
            out.push(("cluster.membership.mode", Some("\"gossip\"".to_owned())));
        } else if !self.collectors.is_empty() {
            out.push(("cluster.membership.mode", Some("\"static\"".to_owned())));
        }
        out
    }
}

fn quoted(value: &Option<String>) -> Option<String> {
    value.as_ref().map(|v| format!("{v:?}"))
}

fn parse_override(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Flags come after --set so a flag wins over a generic override of the same key.
    let mut overrides = cli.overrides.clone();
    let role_flags: Vec<(&str, Option<String>)> = match &cli.command {
        Command::Collector {
            cluster,
            cluster_grpc,
            cluster_http,
        } => {
            let mut flags = cluster.overrides();
            flags.push(("listen.cluster_grpc", quoted(cluster_grpc)));
            flags.push(("listen.cluster_http", quoted(cluster_http)));
            flags
        }
        Command::Ingest {
            cluster,
            otlp_grpc,
            otlp_http,
            spool_dir,
        } => {
            let mut flags = cluster.overrides();
            flags.push(("listen.otlp_grpc", quoted(otlp_grpc)));
            flags.push(("listen.otlp_http", quoted(otlp_http)));
            flags.push((
                "ingest.spool_dir",
                spool_dir
                    .as_ref()
                    .map(|p| format!("{:?}", p.display().to_string())),
            ));
            flags
        }
        Command::Query {
            cluster,
            query_http,
            postgres,
        } => {
            let mut flags = cluster.overrides();
            flags.push(("listen.query_http", quoted(query_http)));
            flags.push(("listen.postgres", quoted(postgres)));
            flags
        }
        _ => Vec::new(),
    };
    for (key, value) in role_flags {
        if let Some(value) = value {
            overrides.push((key.to_owned(), value));
        }
    }
    if let Command::Up {
        data_dir,
        otlp_grpc,
        otlp_http,
        query_http,
        postgres,
    } = &cli.command
    {
        let flags = [
            (
                "collector.data_dir",
                data_dir.as_ref().map(|p| p.display().to_string()),
            ),
            ("listen.otlp_grpc", otlp_grpc.clone()),
            ("listen.otlp_http", otlp_http.clone()),
            ("listen.query_http", query_http.clone()),
            ("listen.postgres", postgres.clone()),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                // Quoted so paths and addresses stay strings.
                overrides.push((key.to_owned(), format!("{value:?}")));
            }
        }
    }
    let config = WeftConfig::load(cli.config.as_deref(), std::env::vars(), &overrides)?;
    for name in WeftConfig::ignored_env_vars(std::env::vars()) {
        // Logging starts with the role, so this goes straight to stderr.
        eprintln!(
            "weft: warning: environment variable {name} is not configuration (only \
             WEFT_<SECTION>__<KEY> of a known section is); ignored"
        );
    }
    config::ConfigSource {
        file: cli.config.clone(),
        overrides,
    }
    .remember();
    match cli.command {
        Command::Config { defaults } => {
            let shown = if defaults {
                WeftConfig::default()
            } else {
                config
            };
            print!("{}", toml::to_string_pretty(&shown)?);
            Ok(())
        }
        Command::Up { .. } => run(server::up(config)),
        Command::Collector { .. } => run(roles::collector(config)),
        Command::Ingest { .. } => run(roles::ingest(config)),
        Command::Query { .. } => run(roles::query(config)),
        Command::Wal {
            command: WalCommand::Check { data_dir },
        } => wal_check(&data_dir),
        Command::Ring { url, ranges, json } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(operator::print_ring(&url, ranges, json))
        }
    }
}

/// `weft wal check`: the analysis of replay, read-only, as JSON lines and a summary.
fn wal_check(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let report = weft_storage::wal::check(&data_dir.join("wal"))
        .with_context(|| format!("reading the WAL of {}", data_dir.display()))?;
    for damage in &report.damage {
        println!("{}", serde_json::to_string(damage)?);
    }
    let corrupt = report.corruption().count();
    println!(
        "weft: {} records readable, next sequence number {}, {} torn tail(s), {corrupt} \
         corrupt range(s)",
        report.records,
        report.next_seq,
        report.damage.len() - corrupt
    );
    if corrupt > 0 {
        anyhow::bail!("the WAL is corrupt: records in the ranges above are lost");
    }
    Ok(())
}

fn run(role: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    init_logging();
    // Before any listener exists: their default connection caps derive from this limit.
    match weft_receiver::listen::raise_fd_limit() {
        Ok(limit) if limit.now > limit.before => tracing::info!(
            from = limit.before,
            to = limit.now,
            "raised the open-file limit to its hard limit"
        ),
        Ok(limit) => tracing::info!(limit = limit.now, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weft")
        .build()
        .context("starting the tokio runtime")?
        .block_on(role)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
