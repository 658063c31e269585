//! OTLP receivers: protocol handling only (framing, compression, size caps, media types).
//! Everything they accept goes through [`crate::Collector`]'s export methods.

pub mod grpc;
pub mod http;
