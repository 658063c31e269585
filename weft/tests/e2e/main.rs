//! End-to-end tests: the real `weft up` binary, started on loopback ports with its own data
//! directory, driven by real clients (the OpenTelemetry Rust SDK, recorded client bodies,
//! hand-made hostile requests, the load generator).
//!
//! | module | what it proves |
//! | --- | --- |
//! | `sdk` | the OTel SDK's OTLP exporters (gRPC, HTTP/protobuf, HTTP/JSON, each ± gzip) round-trip every span field and metric value, from live rows and from Parquet |
//! | `fixtures` | every recorded client body and upstream example is accepted and queryable |
//! | `bad_input` | hostile or broken input gets the documented status and the server keeps serving |
//! | `trace_lookup` | a 100,000-span trace streams back complete under a memory pool too small to sort it |
//! | `jaeger` | Jaeger's storage conformance queries (v1 and v3) find exactly the expected traces; the otlp2jaeger golden translation; native search is exact and pages every match once |
//! | `graph` | dependency graph and latency reports over HTTP, from live rows and from Parquet; bad parameters are 400 |
//! | `pg` | the real `psql`: exact rows from tables and views, writes/COPY/file reads refused with 42501 on a connection that stays usable, cancel, limits; metrics endpoints |
//! | `ui` | the web viewer in headless Chromium (Playwright tests in `ui/web/e2e`) against the demo dataset: pages load cleanly, search finds known traces, the waterfall, critical path, span panel, service map, latency report and SQL console show what was sent |
//! | `cluster` | a multi-process cluster (2 ingest, 3 collectors, 1 query) under load from the load generator and the SDK: every acknowledged span exactly once, through SIGKILL and SIGSTOP of a collector, a collector added and one removed, and a cut connection handed off through the spool; the same cluster on one S3 bucket through a collector SIGKILL |
//! | `exposure` | the query port refuses foreign `Host` names (DNS rebinding) and answers loopback names, IPs and `query.allowed_hosts`; unrelated `WEFT_*` variables do not stop `weft up` |
//! | `crash` | after SIGKILL under load every acknowledged span is stored exactly once |
//! | `edge` | slow, idle, numerous and amplifying clients: decode bombs get 413 in bounded memory, slow headers / stalled bodies / lying lengths / unfinished gRPC messages are cut and release their budget, idle sockets past the fd limit do not block exports or queries |
//! | `damage` | a torn WAL segment, a flipped byte mid-WAL and an unreadable Parquet file: acknowledged spans are never silently lost, the rest is served, the damage is reported (incidents, `/metrics`, `x-weft-warnings`) |
//! | `time_window` | spans outside the accepted time window are refused by partial success; 20,000 hours in one request leave a bounded number of files |
//! | `upgrade` | a data directory written by the previous release (checked in) opens whole: old manifest, WAL replay, nothing doubled |
//! | `object_storage` | `storage.url = s3://…` against a real S3-compatible server process (moto): the OTel SDK's data round-trips from live rows and from Parquet in the bucket; SIGKILL under load, a bucket unreachable under load, and an endpoint answering 503/500/late on a schedule keep every acknowledged span exactly once; retention drops exactly the expired hour partitions; a bulk-loaded directory serves its spans; a full disk (a tmpfs the test mounts) gets 503 + Retry-After and recovers |
//! | `sampling` | two ingest nodes make identical head decisions (the spec's threshold arithmetic), tail sampling keeps error traces whole with the right weights across replicas, SIGHUP reloads `[sampling]` (a bad file is refused), `/metrics` shows kept/dropped |
//!
//! Shared helpers live in `common`; the server harness in `server`.

// Helpers of tests may unwrap (a failed step is a failed test) and print (cargo test shows a
// failed test's output).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod bad_input;
mod cluster;
mod cluster_harness;
mod common;
mod crash;
mod damage;
mod edge;
mod exposure;
mod fixtures;
mod graph;
mod jaeger;
mod object_storage;
mod pg;
mod sampling;
mod sdk;
mod server;
mod time_window;
mod trace_lookup;
mod ui;
mod upgrade;
