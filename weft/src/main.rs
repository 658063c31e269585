//! `weft`: one binary for every role. `weft up` runs all of them in one process.
//!
//! Configuration comes from a TOML file (`--config` / `WEFT_CONFIG`), then `WEFT_*`
//! environment variables, then flags; see `config.example.toml`.

mod config;
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
    /// Print the effective configuration as TOML.
    Config {
        /// Print the built-in defaults instead (the content of config.example.toml).
        #[arg(long)]
        defaults: bool,
    },
}

fn parse_override(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut overrides = cli.overrides.clone();
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
        Command::Up { .. } => {
            init_logging();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("weft")
                .build()
                .context("starting the tokio runtime")?
                .block_on(server::up(config))
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
