//! `zipkin2otlp`: converts a Zipkin v2 JSON file (a list of spans, or a list of traces) to
//! an OTLP/JSON `ExportTraceServiceRequest` on stdout, ready to POST to `/v1/traces`.
//!
//! ```text
//!  file or stdin ─> weft_schemas::zipkin::to_otlp ─> otlp_json::encode_resource_spans ─> stdout
//!                                                └─> summary and skipped spans ─> stderr
//! ```
//!
//! ```sh
//! zipkin2otlp schemas/testdata/zipkin-v2/yelp.json \
//!   | curl -H 'content-type: application/json' --data-binary @- http://127.0.0.1:4318/v1/traces
//! ```

// A binary: its output is what it prints.
#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Convert Zipkin v2 JSON to OTLP/JSON (see `weft_schemas::zipkin` for the mapping).
#[derive(Debug, Parser)]
#[command(name = "zipkin2otlp", version)]
struct Args {
    /// Zipkin v2 JSON file; `-` reads stdin.
    input: PathBuf,
    /// Indent the output.
    #[arg(long)]
    pretty: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut body = Vec::new();
    if args.input.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .context("reading stdin")?;
    } else {
        body = std::fs::read(&args.input)
            .with_context(|| format!("reading {}", args.input.display()))?;
    }
    let conversion = weft_schemas::zipkin::to_otlp(&body)
        .with_context(|| format!("converting {}", args.input.display()))?;
    for reason in &conversion.skipped {
        eprintln!("zipkin2otlp: skipped {reason}");
    }
    let json = weft_schemas::otlp_json::encode_resource_spans(&conversion.request.resource_spans);
    match write(&json, args.pretty) {
        // A reader that stops early (`| head`) is not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing stdout")?,
    }
    eprintln!(
        "zipkin2otlp: {} spans ({} fragments merged, {} skipped)",
        conversion.spans,
        conversion.merged,
        conversion.skipped.len()
    );
    Ok(())
}

fn write(json: &serde_json::Value, pretty: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if pretty {
        serde_json::to_writer_pretty(&mut out, json)?;
    } else {
        serde_json::to_writer(&mut out, json)?;
    }
    writeln!(out)?;
    out.flush()
}
