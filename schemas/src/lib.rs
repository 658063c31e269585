//! Weft's data model: the Arrow schemas of the tables Weft stores, the conversions between
//! OTLP (protobuf or JSON) / Prometheus remote-write and Arrow, and the one place that holds
//! every Parquet writer setting.
//!
//! Every other crate goes through this one to touch stored data, so the shape of a row is
//! decided here and nowhere else.
//!
//! ```text
//!  ingest (collector)                                         query
//!  ──────────────────                                         ─────
//!  OTLP protobuf ──prost──┐                                   Parquet files
//!  OTLP/JSON ─otlp_json───┤                                        │ read (DataFusion / parquet)
//!                         ▼                                        ▼
//!         ExportTraceServiceRequest ──spans::from_otlp────▶ RecordBatch (Table::Spans)
//!         ExportMetricsServiceRequest ─metrics::from_otlp─▶ RecordBatch (Table::Metrics)
//!  remote-write ─prometheus::decode_remote_write─▶ WriteRequest
//!                 └─prometheus::metrics_from_remote_write─▶ RecordBatch (Table::Metrics)
//!                                                                │
//!            validate ids / times; bad rows counted in           │ sort by Table::sort_columns()
//!            Converted::rejected (OTLP partial success)          ▼
//!                                              parquet_settings::writer_properties ─▶ .parquet
//!
//!  RecordBatch ──spans::to_otlp / metrics::to_otlp──▶ ResourceSpans / ResourceMetrics
//!                      └─otlp_json::encode_*──▶ OTLP/JSON for the HTTP API
//! ```
//!
//! Before decoding, `shape` counts a body's items and bounds its decoded size without
//! allocating (admission by decoded size); after decoding, `window` drops spans and points
//! whose times lie outside the accepted window (reported as partial success).
//!
//! [`metrics_algebra`] holds the arithmetic of metric points (counter increases across
//! resets, histogram merge, increase and rescale) that ingest and queries share.
//!
//! Design rules that hold for both tables:
//!
//! * One row per span / per data point. Resource and scope are repeated on every row (they
//!   compress to almost nothing) so a row is self-contained and files can be split anywhere.
//! * Attributes live in `Map<Utf8, Utf8>` columns (`attributes['http.route']` works in SQL)
//!   with a parallel `List<Int8>` of type codes that is NULL when every value is a string, so
//!   the original `AnyValue` types are recoverable at almost no cost (see [`attributes`]).
//! * A short, versioned list of promoted typed columns (see [`spans`]) holds copies of common
//!   semantic-convention attributes; the maps always keep the originals, so the conversion back
//!   to OTLP never reads a promoted column.
//! * The conversion is lossless for everything OTLP carries except `Resource.entity_refs` and
//!   the profiles-only `AnyValue.string_value_strindex`, which are not stored.
//! * [`SCHEMA_VERSION`] is written into every Parquet file; bump it whenever a column is added,
//!   removed or changes meaning.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::SchemaRef;

pub mod attributes;
pub mod columns;
pub mod error;
pub mod metrics;
pub mod metrics_algebra;
pub mod otlp_json;
pub mod parquet_settings;
pub mod prometheus;
pub mod sampling;
pub mod shape;
pub mod spans;
pub mod window;
pub mod zipkin;

mod arrow_util;
mod resource_scope;

pub use error::{Error, Result};

/// Version of the stored layout of both tables. Written into every Parquet file as the
/// key-value metadata entry `weft.schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// The tables Weft stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// One row per span.
    Spans,
    /// One row per metric data point (all OTLP point types in one wide table).
    Metrics,
}

impl Table {
    /// Every table, in a fixed order.
    pub const ALL: [Table; 2] = [Table::Spans, Table::Metrics];

    /// The table's name, used in paths and SQL.
    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::Metrics => "metrics",
        }
    }

    /// The table's Arrow schema. Built once and shared: every batch produced by this crate has
    /// exactly this schema (`Arc` pointer-equal).
    pub fn schema(self) -> SchemaRef {
        static SPANS: OnceLock<SchemaRef> = OnceLock::new();
        static METRICS: OnceLock<SchemaRef> = OnceLock::new();
        match self {
            Table::Spans => Arc::clone(SPANS.get_or_init(|| Arc::new(spans::schema()))),
            Table::Metrics => Arc::clone(METRICS.get_or_init(|| Arc::new(metrics::schema()))),
        }
    }

    /// The order rows must be sorted in before they are written (also recorded as Parquet
    /// `sorting_columns`). Spans are sorted by trace so a trace is contiguous and trace-id
    /// lookups prune by min/max statistics; metrics by series so a series is contiguous.
    pub fn sort_columns(self) -> &'static [&'static str] {
        match self {
            Table::Spans => &[columns::TRACE_ID, columns::START_TIME],
            Table::Metrics => &[
                columns::METRIC_NAME,
                columns::SERVICE_NAME,
                columns::SERIES_ID,
                columns::TIME,
            ],
        }
    }

    /// The column that time-range queries and time partitioning use.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Spans => columns::START_TIME,
            Table::Metrics => columns::TIME,
        }
    }
}

/// Output of converting one OTLP export request (or one remote-write request).
#[derive(Debug)]
pub struct Converted {
    /// The accepted rows; `batch.schema() == table.schema()`.
    pub batch: arrow::record_batch::RecordBatch,
    /// Number of spans or data points rejected.
    pub rejected: u64,
    /// Lowercase description of why, e.g.
    /// `"2 spans rejected: invalid trace_id (must be 16 non-zero bytes)"`; `None` when nothing
    /// was rejected. Suitable for the OTLP partial-success `error_message`.
    pub rejection_message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_metadata_is_consistent() {
        for table in Table::ALL {
            let schema = table.schema();
            assert!(Arc::ptr_eq(&schema, &table.schema()), "schema is cached");
            for col in table.sort_columns() {
                assert!(
                    schema.field_with_name(col).is_ok(),
                    "{col} in {}",
                    table.name()
                );
            }
            assert!(schema.field_with_name(table.time_column()).is_ok());
        }
        assert_eq!(Table::Spans.name(), "spans");
        assert_eq!(Table::Metrics.name(), "metrics");
    }
}
