//! Column names of both tables, one constant per top-level column (shared names such as
//! `service_name` serve both tables), plus the field names inside nested columns.
//!
//! Use these instead of string literals so a rename is a compile error, not a silent miss.

// ---- shared by both tables ----------------------------------------------------------------
/// `Dictionary(Int32, Utf8)` not null: resource attribute `service.name` as a string, or
/// `"unknown_service"` when absent. Derived: the round trip restores the resource attributes.
pub const SERVICE_NAME: &str = "service_name";
/// `Timestamp(ns, UTC)`: span start (spans, not null) / point start time (metrics, nullable).
pub const START_TIME: &str = "start_time";
/// `UInt32` not null: W3C trace flags (spans) / data point flags (metrics).
pub const FLAGS: &str = "flags";
/// `Map<Utf8, Utf8>` not null: span or data point attributes, values rendered as strings.
pub const ATTRIBUTES: &str = "attributes";
/// `List<Int8>` nullable: type codes of [`ATTRIBUTES`] values; NULL when all are strings.
pub const ATTRIBUTE_TYPES: &str = "attribute_types";
/// `Map<Utf8, Utf8>` not null.
pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
/// `List<Int8>` nullable.
pub const RESOURCE_ATTRIBUTE_TYPES: &str = "resource_attribute_types";
/// `UInt32` not null.
pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: &str = "resource_dropped_attributes_count";
/// `Utf8` nullable: `ResourceSpans.schema_url` / `ResourceMetrics.schema_url`.
pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
/// `Dictionary(Int32, Utf8)` not null (may be `""`).
pub const SCOPE_NAME: &str = "scope_name";
/// `Utf8` nullable.
pub const SCOPE_VERSION: &str = "scope_version";
/// `Map<Utf8, Utf8>` not null.
pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
/// `List<Int8>` nullable.
pub const SCOPE_ATTRIBUTE_TYPES: &str = "scope_attribute_types";
/// `UInt32` not null.
pub const SCOPE_DROPPED_ATTRIBUTES_COUNT: &str = "scope_dropped_attributes_count";
/// `Utf8` nullable: `ScopeSpans.schema_url` / `ScopeMetrics.schema_url`.
pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";

// ---- spans ----------------------------------------------------------------------------------
/// `FixedSizeBinary(16)` not null.
pub const TRACE_ID: &str = "trace_id";
/// `FixedSizeBinary(8)` not null.
pub const SPAN_ID: &str = "span_id";
/// `FixedSizeBinary(8)` nullable: null for a root span.
pub const PARENT_SPAN_ID: &str = "parent_span_id";
/// `Utf8` nullable: W3C tracestate, null when empty.
pub const TRACE_STATE: &str = "trace_state";
/// `Dictionary(Int32, Utf8)` not null.
pub const SPAN_NAME: &str = "span_name";
/// `Int8` not null: OTLP `SpanKind` value.
pub const KIND: &str = "kind";
/// `Int64` not null: end - start in nanoseconds (may be negative for skewed clients).
pub const DURATION_NS: &str = "duration_ns";
/// `Int8` not null: OTLP `StatusCode` value.
pub const STATUS_CODE: &str = "status_code";
/// `Utf8` nullable.
pub const STATUS_MESSAGE: &str = "status_message";
/// `UInt32` not null.
pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
/// `List<Struct>` not null, fields in [`event`].
pub const EVENTS: &str = "events";
/// `UInt32` not null.
pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
/// `List<Struct>` not null, fields in [`link`].
pub const LINKS: &str = "links";
/// `UInt32` not null.
pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
/// Promoted `Utf8`: `http.request.method`, else `http.method`.
pub const HTTP_METHOD: &str = "http_method";
/// Promoted `Utf8`: `http.route`.
pub const HTTP_ROUTE: &str = "http_route";
/// Promoted `Int32`: `http.response.status_code`, else `http.status_code`.
pub const HTTP_STATUS_CODE: &str = "http_status_code";
/// Promoted `Utf8`: `rpc.system`.
pub const RPC_SYSTEM: &str = "rpc_system";
/// Promoted `Utf8`: `rpc.service`.
pub const RPC_SERVICE: &str = "rpc_service";
/// Promoted `Utf8`: `rpc.method`.
pub const RPC_METHOD: &str = "rpc_method";
/// Promoted `Utf8`: `db.system.name`, else `db.system`.
pub const DB_SYSTEM: &str = "db_system";
/// Promoted `Utf8`: `messaging.system`.
pub const MESSAGING_SYSTEM: &str = "messaging_system";
/// Promoted `Utf8`: `peer.service`.
pub const PEER_SERVICE: &str = "peer_service";
/// Promoted `Utf8`: `server.address`, else `net.peer.name`.
pub const SERVER_ADDRESS: &str = "server_address";
/// Promoted `Utf8` from resource attribute `k8s.namespace.name`.
pub const K8S_NAMESPACE_NAME: &str = "k8s_namespace_name";
/// Promoted `Utf8` from resource attribute `k8s.pod.name`.
pub const K8S_POD_NAME: &str = "k8s_pod_name";
/// `Float64` not null: sampling adjusted count (how many spans this one stands for).
pub const SAMPLE_WEIGHT: &str = "sample_weight";

// ---- metrics --------------------------------------------------------------------------------
/// `Dictionary(Int32, Utf8)` not null.
pub const METRIC_NAME: &str = "metric_name";
/// `Utf8` nullable.
pub const METRIC_DESCRIPTION: &str = "metric_description";
/// `Utf8` nullable.
pub const METRIC_UNIT: &str = "metric_unit";
/// `Int8` not null: 1 gauge, 2 sum, 3 histogram, 4 exponential histogram, 5 summary.
pub const METRIC_TYPE: &str = "metric_type";
/// `Int8` nullable: OTLP `AggregationTemporality` (sum and histograms only).
pub const AGGREGATION_TEMPORALITY: &str = "aggregation_temporality";
/// `Boolean` nullable: sums only.
pub const IS_MONOTONIC: &str = "is_monotonic";
/// `Map<Utf8, Utf8>` not null: `Metric.metadata`.
pub const METRIC_METADATA: &str = "metric_metadata";
/// `List<Int8>` nullable.
pub const METRIC_METADATA_TYPES: &str = "metric_metadata_types";
/// `UInt64` not null: stable hash identifying the series (see [`crate::metrics::series_id`]).
pub const SERIES_ID: &str = "series_id";
/// `Timestamp(ns, UTC)` not null: the point's time.
pub const TIME: &str = "time";
/// `Float64` nullable: gauge/sum double value.
pub const VALUE_DOUBLE: &str = "value_double";
/// `Int64` nullable: gauge/sum integer value.
pub const VALUE_INT: &str = "value_int";
/// `UInt64` nullable: histogram/summary count.
pub const COUNT: &str = "count";
/// `Float64` nullable: histogram/summary sum.
pub const SUM: &str = "sum";
/// `Float64` nullable.
pub const MIN: &str = "min";
/// `Float64` nullable.
pub const MAX: &str = "max";
/// `List<UInt64>` nullable: explicit-bucket histogram counts.
pub const BUCKET_COUNTS: &str = "bucket_counts";
/// `List<Float64>` nullable: explicit-bucket histogram bounds.
pub const EXPLICIT_BOUNDS: &str = "explicit_bounds";
/// `Int32` nullable.
pub const EXP_SCALE: &str = "exp_scale";
/// `UInt64` nullable.
pub const EXP_ZERO_COUNT: &str = "exp_zero_count";
/// `Float64` nullable.
pub const EXP_ZERO_THRESHOLD: &str = "exp_zero_threshold";
/// `Int32` nullable: null when the point has no positive bucket message.
pub const EXP_POSITIVE_OFFSET: &str = "exp_positive_offset";
/// `List<UInt64>` nullable.
pub const EXP_POSITIVE_BUCKET_COUNTS: &str = "exp_positive_bucket_counts";
/// `Int32` nullable.
pub const EXP_NEGATIVE_OFFSET: &str = "exp_negative_offset";
/// `List<UInt64>` nullable.
pub const EXP_NEGATIVE_BUCKET_COUNTS: &str = "exp_negative_bucket_counts";
/// `List<Struct>` nullable (summary only), fields in [`quantile`].
pub const QUANTILES: &str = "quantiles";
/// `List<Struct>` not null, fields in [`exemplar`].
pub const EXEMPLARS: &str = "exemplars";

/// Field names of the structs inside [`EVENTS`].
pub mod event {
    /// `Timestamp(ns, UTC)` not null.
    pub const TIME: &str = "time";
    /// `Utf8` not null.
    pub const NAME: &str = "name";
    /// `Map<Utf8, Utf8>` not null.
    pub const ATTRIBUTES: &str = "attributes";
    /// `List<Int8>` nullable.
    pub const ATTRIBUTE_TYPES: &str = "attribute_types";
    /// `UInt32` not null.
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
}

/// Field names of the structs inside [`LINKS`].
pub mod link {
    /// `FixedSizeBinary(16)` not null.
    pub const TRACE_ID: &str = "trace_id";
    /// `FixedSizeBinary(8)` not null.
    pub const SPAN_ID: &str = "span_id";
    /// `Utf8` nullable.
    pub const TRACE_STATE: &str = "trace_state";
    /// `UInt32` not null.
    pub const FLAGS: &str = "flags";
    /// `Map<Utf8, Utf8>` not null.
    pub const ATTRIBUTES: &str = "attributes";
    /// `List<Int8>` nullable.
    pub const ATTRIBUTE_TYPES: &str = "attribute_types";
    /// `UInt32` not null.
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
}

/// Field names of the structs inside [`QUANTILES`].
pub mod quantile {
    /// `Float64` not null.
    pub const QUANTILE: &str = "quantile";
    /// `Float64` not null.
    pub const VALUE: &str = "value";
}

/// Field names of the structs inside [`EXEMPLARS`].
pub mod exemplar {
    /// `Timestamp(ns, UTC)` not null.
    pub const TIME: &str = "time";
    /// `Float64` nullable.
    pub const VALUE_DOUBLE: &str = "value_double";
    /// `Int64` nullable.
    pub const VALUE_INT: &str = "value_int";
    /// `FixedSizeBinary(8)` nullable.
    pub const SPAN_ID: &str = "span_id";
    /// `FixedSizeBinary(16)` nullable.
    pub const TRACE_ID: &str = "trace_id";
    /// `Map<Utf8, Utf8>` not null.
    pub const FILTERED_ATTRIBUTES: &str = "filtered_attributes";
    /// `List<Int8>` nullable.
    pub const FILTERED_ATTRIBUTE_TYPES: &str = "filtered_attribute_types";
}

/// Names arrow's `MapBuilder` gives the parts of every map column (kept as the defaults so
/// batches built anywhere with a default `MapBuilder` have the same type).
pub mod map {
    /// The entries struct.
    pub const ENTRIES: &str = "entries";
    /// The key field (Utf8, not null).
    pub const KEYS: &str = "keys";
    /// The value field (Utf8, nullable).
    pub const VALUES: &str = "values";
}

/// Name of the item field of every list column (arrow's `ListBuilder` default).
pub const LIST_ITEM: &str = "item";
