//! `weft-demo-data`: loads the viewer's demo dataset (generated traffic, a 50,000-span
//! trace, a trace with a known critical path, metrics) into a running Weft over OTLP/HTTP
//! and writes what it sent as JSON (see `weft_load_test::demo`).
//!
//! ```sh
//! weft-demo-data --otlp-http http://127.0.0.1:4318 --facts /tmp/facts.json
//! ```

// A binary: its output is what it prints.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Load the viewer's demo dataset into a running Weft.
#[derive(Debug, Parser)]
#[command(name = "weft-demo-data", version)]
struct Args {
    /// Weft's OTLP/HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    otlp_http: String,
    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write the facts (JSON); stdout when absent.
    #[arg(long)]
    facts: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let facts = weft_load_test::demo::load(&args.otlp_http, args.seed).await?;
    let json = serde_json::to_string_pretty(&facts)?;
    match args.facts {
        Some(path) => {
            std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{json}"),
    }
    Ok(())
}
