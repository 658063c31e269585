//! The ingest tier (`weft ingest`): placeholder, being written.

pub mod breaker;
pub mod spool;
