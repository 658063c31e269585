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
//! | `crash` | after SIGKILL under load every acknowledged span is stored exactly once |
//!
//! Shared helpers live in `common`; the server harness in `server`.

mod bad_input;
mod common;
mod crash;
mod fixtures;
mod graph;
mod jaeger;
mod pg;
mod sdk;
mod server;
mod trace_lookup;
