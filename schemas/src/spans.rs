//! The `spans` table: one row per span.
//!
//! ```text
//!  ExportTraceServiceRequest
//!   └ ResourceSpans ─ resource, schema_url ──────────────┐ repeated on every row
//!      └ ScopeSpans ─ scope, schema_url ─────────────────┤ (dictionary / RLE: ~free)
//!         └ Span ── validate ─┬─ ok ──▶ one row ◀────────┘
//!                             └─ bad ─▶ Converted::rejected (+ reason in the message)
//! ```
//!
//! Columns, in order: `trace_id`, `span_id`, `parent_span_id`, `trace_state`, `flags`,
//! `service_name`, `span_name`, `kind`, `start_time`, `duration_ns`, `status_code`,
//! `status_message`, `attributes`, `attribute_types`, `dropped_attributes_count`, `events`,
//! `dropped_events_count`, `links`, `dropped_links_count`, the resource and scope columns
//! (`resource_attributes` … `scope_schema_url`), the promoted columns, `sample_weight`.
//! See [`crate::columns`] for types.
//!
//! **Validation.** A span is rejected (counted, reason in the message, the rest of the request
//! kept) when: `trace_id` is not 16 bytes or is all zero; `span_id` is not 8 bytes or is all
//! zero; `parent_span_id` is neither empty nor 8 bytes; start, end or an event time is above
//! `i64::MAX` ns (year 2262); a link's trace or span id is invalid by the same rules. An
//! all-zero 8-byte `parent_span_id` is what some clients send for "no parent": it is stored as
//! null (root), so it comes back empty. A request whose resource and scope attributes,
//! repeated on every row, would exceed 8 388 608 map entries is rejected whole: without that
//! bound a few-MB request could expand to many GB.
//!
//! **Not kept exactly**: `kind` and `status.code` outside `i8` (not valid OTLP) are stored as
//! 0; `Resource.entity_refs` is not stored; an absent `status` comes back as a default (unset)
//! one; an empty and an absent string field (`trace_state`, schema URLs, …) are the same.
//!
//! **Promoted columns** (schema version 1). Typed copies of common semantic-convention
//! attributes, for fast filters and statistics; the attribute maps keep the originals and the
//! conversion back to OTLP ignores these columns. First matching key wins; string columns take
//! string values only.
//!
//! | column              | source (span attributes unless noted)                       |
//! |---------------------|-------------------------------------------------------------|
//! | `http_method`       | `http.request.method`, else `http.method`                   |
//! | `http_route`        | `http.route`                                                |
//! | `http_status_code`  | `http.response.status_code`, else `http.status_code` (int, or numeric string; Int32) |
//! | `rpc_system`        | `rpc.system`                                                |
//! | `rpc_service`       | `rpc.service`                                               |
//! | `rpc_method`        | `rpc.method`                                                |
//! | `db_system`         | `db.system.name`, else `db.system`                          |
//! | `messaging_system`  | `messaging.system`                                          |
//! | `peer_service`      | `peer.service`                                              |
//! | `server_address`    | `server.address`, else `net.peer.name`                      |
//! | `k8s_namespace_name`| resource `k8s.namespace.name`                               |
//! | `k8s_pod_name`      | resource `k8s.pod.name`                                     |
//!
//! **`sample_weight`** is the span's adjusted count: 1.0, unless its `trace_state` carries an
//! OpenTelemetry sampling threshold (`ot=th:<hex>`), in which case it is
//! `2^56 / (2^56 - threshold)` (e.g. `th:8` → 2.0), so counts computed as `SUM(sample_weight)`
//! stay unbiased under probability sampling.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeBinaryArray, Float64Builder, Int8Array, Int8Builder, Int32Builder,
    Int64Array, Int64Builder, ListArray, RecordBatch, StringArray, StringBuilder,
    StringDictionaryBuilder, StructArray, TimestampNanosecondArray, TimestampNanosecondBuilder,
    UInt32Array, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

use crate::arrow_util::{
    DictStr, IdBuilder, InternedDict, ListOffsets, Rejections, dict_type, downcast, finish_batch,
    list_item, list_type, str_or_empty, table_column, ts_type,
};
use crate::attributes::{AttrsBuilder, AttrsReader, map_type, types_type};
use crate::columns::*;
use crate::resource_scope::{
    self, Grouper, Origin, ResourceScopeBuilder, ResourceScopeColumns, Sizes, string_attr,
};
use crate::{Converted, Error, Result, Table};

/// The cap on resource and scope attributes repeated onto span rows, and its message.
pub use crate::resource_scope::{MAX_REPEATED_ENTRIES, TOO_MANY_REPEATED};

const BAD_TRACE_ID: &str = "invalid trace_id (must be 16 non-zero bytes)";
const BAD_SPAN_ID: &str = "invalid span_id (must be 8 non-zero bytes)";
const BAD_PARENT: &str = "invalid parent_span_id (must be empty or 8 bytes)";
const BAD_TIME: &str = "timestamp out of range (must be below 2^63 nanoseconds since 1970)";
const BAD_LINK: &str = "invalid link (trace_id must be 16 and span_id 8 non-zero bytes)";

fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new(event::TIME, ts_type(), false),
        Field::new(event::NAME, DataType::Utf8, false),
        Field::new(event::ATTRIBUTES, map_type(), false),
        Field::new(event::ATTRIBUTE_TYPES, types_type(), true),
        Field::new(event::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ])
}

fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new(link::TRACE_ID, DataType::FixedSizeBinary(16), false),
        Field::new(link::SPAN_ID, DataType::FixedSizeBinary(8), false),
        Field::new(link::TRACE_STATE, DataType::Utf8, true),
        Field::new(link::FLAGS, DataType::UInt32, false),
        Field::new(link::ATTRIBUTES, map_type(), false),
        Field::new(link::ATTRIBUTE_TYPES, types_type(), true),
        Field::new(link::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
    ])
}

/// Promoted string columns, in table order (`http_status_code` sits between route and rpc).
const PROMOTED_BEFORE_STATUS: [&str; 2] = [HTTP_METHOD, HTTP_ROUTE];
const PROMOTED_AFTER_STATUS: [&str; 9] = [
    RPC_SYSTEM,
    RPC_SERVICE,
    RPC_METHOD,
    DB_SYSTEM,
    MESSAGING_SYSTEM,
    PEER_SERVICE,
    SERVER_ADDRESS,
    K8S_NAMESPACE_NAME,
    K8S_POD_NAME,
];

/// The table schema; use [`Table::schema`] (cached) rather than calling this.
pub(crate) fn schema() -> Schema {
    use DataType::*;
    let mut fields = vec![
        Field::new(TRACE_ID, FixedSizeBinary(16), false),
        Field::new(SPAN_ID, FixedSizeBinary(8), false),
        Field::new(PARENT_SPAN_ID, FixedSizeBinary(8), true),
        Field::new(TRACE_STATE, Utf8, true),
        Field::new(FLAGS, UInt32, false),
        Field::new(SERVICE_NAME, dict_type(), false),
        Field::new(SPAN_NAME, dict_type(), false),
        Field::new(KIND, Int8, false),
        Field::new(START_TIME, ts_type(), false),
        Field::new(DURATION_NS, Int64, false),
        Field::new(STATUS_CODE, Int8, false),
        Field::new(STATUS_MESSAGE, Utf8, true),
        Field::new(ATTRIBUTES, map_type(), false),
        Field::new(ATTRIBUTE_TYPES, types_type(), true),
        Field::new(DROPPED_ATTRIBUTES_COUNT, UInt32, false),
        Field::new(EVENTS, list_type(Struct(event_fields())), false),
        Field::new(DROPPED_EVENTS_COUNT, UInt32, false),
        Field::new(LINKS, list_type(Struct(link_fields())), false),
        Field::new(DROPPED_LINKS_COUNT, UInt32, false),
    ];
    fields.extend(resource_scope::fields());
    for name in PROMOTED_BEFORE_STATUS {
        fields.push(Field::new(name, Utf8, true));
    }
    fields.push(Field::new(HTTP_STATUS_CODE, Int32, true));
    for name in PROMOTED_AFTER_STATUS {
        fields.push(Field::new(name, Utf8, true));
    }
    fields.push(Field::new(SAMPLE_WEIGHT, Float64, false));
    Schema::new(fields)
}

// =============================================================================================
// OTLP -> Arrow
// =============================================================================================

/// Converts one export request into a `spans` batch. Invalid spans are counted and described
/// in the result; the rest are kept. Never panics.
pub fn from_otlp(req: &ExportTraceServiceRequest) -> Converted {
    let mut sizes = Sizes::default();
    for rs in &req.resource_spans {
        let resource_attrs = rs.resource.as_ref().map_or(0, |r| r.attributes.len());
        for ss in &rs.scope_spans {
            sizes.add(
                ss.spans.len(),
                ss.spans.iter().map(|s| s.attributes.len()).sum(),
                resource_attrs,
                ss.scope.as_ref().map_or(0, |s| s.attributes.len()),
                0,
            );
        }
    }
    let mut rejections = Rejections::default();
    let columns = if sizes.too_large() {
        rejections.add(TOO_MANY_REPEATED, sizes.rows as u64);
        SpansBuilder::with_capacity(&Sizes::default()).finish()
    } else {
        let mut b = SpansBuilder::with_capacity(&sizes);
        append_request(&mut b, req, &mut rejections).and_then(|()| b.finish())
    };
    finish_batch(
        Table::Spans.schema(),
        columns,
        sizes.rows,
        rejections,
        "span",
        "spans",
    )
}

fn append_request(
    b: &mut SpansBuilder,
    req: &ExportTraceServiceRequest,
    rejections: &mut Rejections,
) -> Result<(), ArrowError> {
    for rs in &req.resource_spans {
        let res_attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
        // Per-resource values are computed once, not once per span.
        let res = ResourceDerived {
            service_name_key: b
                .service_name
                .intern(resource_scope::service_name(res_attrs))?,
            k8s_namespace: string_attr(res_attrs, "k8s.namespace.name"),
            k8s_pod: string_attr(res_attrs, "k8s.pod.name"),
        };
        for ss in &rs.scope_spans {
            let origin = Origin {
                resource: rs.resource.as_ref(),
                resource_schema_url: &rs.schema_url,
                scope: ss.scope.as_ref(),
                scope_schema_url: &ss.schema_url,
                scope_name_key: b.resource_scope.intern_scope_name(ss.scope.as_ref())?,
            };
            for span in &ss.spans {
                match validate_span(span) {
                    Ok(()) => b.append(span, &origin, &res)?,
                    Err(reason) => rejections.add(reason, 1),
                }
            }
        }
    }
    Ok(())
}

fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

fn valid_time(t: u64) -> bool {
    i64::try_from(t).is_ok()
}

/// Why a span cannot be stored, in the words partial-success messages use; the ingest tier
/// applies the same rules before forwarding.
pub fn validate_span(s: &Span) -> Result<(), &'static str> {
    if !valid_id(&s.trace_id, 16) {
        return Err(BAD_TRACE_ID);
    }
    if !valid_id(&s.span_id, 8) {
        return Err(BAD_SPAN_ID);
    }
    if !(s.parent_span_id.is_empty() || s.parent_span_id.len() == 8) {
        return Err(BAD_PARENT);
    }
    if !valid_time(s.start_time_unix_nano)
        || !valid_time(s.end_time_unix_nano)
        || !s.events.iter().all(|e| valid_time(e.time_unix_nano))
    {
        return Err(BAD_TIME);
    }
    if !s
        .links
        .iter()
        .all(|l| valid_id(&l.trace_id, 16) && valid_id(&l.span_id, 8))
    {
        return Err(BAD_LINK);
    }
    Ok(())
}

struct ResourceDerived<'a> {
    service_name_key: i32,
    k8s_namespace: Option<&'a str>,
    k8s_pod: Option<&'a str>,
}

/// Promoted attribute values of one span, found in a single pass over its attributes.
#[derive(Default)]
struct Promoted<'a> {
    http_method: Option<&'a str>,
    http_method_legacy: Option<&'a str>,
    http_route: Option<&'a str>,
    status: Option<i32>,
    status_legacy: Option<i32>,
    rpc_system: Option<&'a str>,
    rpc_service: Option<&'a str>,
    rpc_method: Option<&'a str>,
    db_system: Option<&'a str>,
    db_system_legacy: Option<&'a str>,
    messaging_system: Option<&'a str>,
    peer_service: Option<&'a str>,
    server_address: Option<&'a str>,
    net_peer_name: Option<&'a str>,
}

impl<'a> Promoted<'a> {
    fn scan(attrs: &'a [KeyValue]) -> Self {
        use any_value::Value as V;
        let mut p = Promoted::default();
        for kv in attrs {
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
            let slot = match kv.key.as_str() {
                "http.response.status_code" | "http.status_code" => {
                    let code = match value {
                        Some(V::IntValue(i)) => i32::try_from(*i).ok(),
                        Some(V::StringValue(s)) => s.trim().parse::<i32>().ok(),
                        _ => None,
                    };
                    let slot = if kv.key == "http.status_code" {
                        &mut p.status_legacy
                    } else {
                        &mut p.status
                    };
                    if slot.is_none() {
                        *slot = code;
                    }
                    continue;
                }
                "http.request.method" => &mut p.http_method,
                "http.method" => &mut p.http_method_legacy,
                "http.route" => &mut p.http_route,
                "rpc.system" => &mut p.rpc_system,
                "rpc.service" => &mut p.rpc_service,
                "rpc.method" => &mut p.rpc_method,
                "db.system.name" => &mut p.db_system,
                "db.system" => &mut p.db_system_legacy,
                "messaging.system" => &mut p.messaging_system,
                "peer.service" => &mut p.peer_service,
                "server.address" => &mut p.server_address,
                "net.peer.name" => &mut p.net_peer_name,
                _ => continue,
            };
            if slot.is_none()
                && let Some(V::StringValue(s)) = value
            {
                *slot = Some(s);
            }
        }
        p
    }
}

/// The OpenTelemetry threshold-sampling adjusted count carried in `trace_state`
/// (`ot=th:<1-14 hex digits>`), or 1.0.
fn sample_weight(trace_state: &str) -> f64 {
    crate::sampling::adjusted_count(trace_state)
}

fn append_opt(b: &mut StringBuilder, s: &str) {
    if s.is_empty() {
        b.append_null();
    } else {
        b.append_value(s);
    }
}

struct EventsBuilder {
    list: ListOffsets,
    len: usize,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attrs: AttrsBuilder,
    dropped: UInt32Builder,
}

impl EventsBuilder {
    fn with_capacity(rows: usize) -> Self {
        Self {
            list: ListOffsets::with_capacity(rows),
            len: 0,
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            name: StringBuilder::new(),
            attrs: AttrsBuilder::with_capacity(0, 0),
            dropped: UInt32Builder::new(),
        }
    }

    fn append(&mut self, events: &[span::Event]) -> Result<(), ArrowError> {
        for e in events {
            // Validated: fits in i64.
            self.time.append_value(e.time_unix_nano as i64);
            self.name.append_value(&e.name);
            self.attrs.append(&e.attributes)?;
            self.dropped.append_value(e.dropped_attributes_count);
        }
        self.len += events.len();
        self.list.push(self.len)
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let (attrs, types) = self.attrs.finish();
        let fields = event_fields();
        let values = StructArray::try_new(
            fields.clone(),
            vec![
                Arc::new(self.time.finish()),
                Arc::new(self.name.finish()),
                attrs,
                types,
                Arc::new(self.dropped.finish()),
            ],
            None,
        )?;
        let (offsets, nulls) = self.list.finish();
        Ok(Arc::new(ListArray::try_new(
            list_item(DataType::Struct(fields)),
            offsets,
            Arc::new(values),
            nulls,
        )?))
    }
}

struct LinksBuilder {
    list: ListOffsets,
    len: usize,
    trace_id: IdBuilder,
    span_id: IdBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    attrs: AttrsBuilder,
    dropped: UInt32Builder,
}

impl LinksBuilder {
    fn with_capacity(rows: usize) -> Self {
        Self {
            list: ListOffsets::with_capacity(rows),
            len: 0,
            trace_id: IdBuilder::with_capacity(16, 0),
            span_id: IdBuilder::with_capacity(8, 0),
            trace_state: StringBuilder::new(),
            flags: UInt32Builder::new(),
            attrs: AttrsBuilder::with_capacity(0, 0),
            dropped: UInt32Builder::new(),
        }
    }

    fn append(&mut self, links: &[span::Link]) -> Result<(), ArrowError> {
        for l in links {
            self.trace_id.push(&l.trace_id);
            self.span_id.push(&l.span_id);
            append_opt(&mut self.trace_state, &l.trace_state);
            self.flags.append_value(l.flags);
            self.attrs.append(&l.attributes)?;
            self.dropped.append_value(l.dropped_attributes_count);
        }
        self.len += links.len();
        self.list.push(self.len)
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let (attrs, types) = self.attrs.finish();
        let fields = link_fields();
        let values = StructArray::try_new(
            fields.clone(),
            vec![
                self.trace_id.finish()?,
                self.span_id.finish()?,
                Arc::new(self.trace_state.finish()),
                Arc::new(self.flags.finish()),
                attrs,
                types,
                Arc::new(self.dropped.finish()),
            ],
            None,
        )?;
        let (offsets, nulls) = self.list.finish();
        Ok(Arc::new(ListArray::try_new(
            list_item(DataType::Struct(fields)),
            offsets,
            Arc::new(values),
            nulls,
        )?))
    }
}

struct SpansBuilder {
    trace_id: IdBuilder,
    span_id: IdBuilder,
    parent_span_id: IdBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    service_name: InternedDict,
    span_name: StringDictionaryBuilder<Int32Type>,
    kind: Int8Builder,
    start_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: Int8Builder,
    status_message: StringBuilder,
    attrs: AttrsBuilder,
    dropped_attrs: UInt32Builder,
    events: EventsBuilder,
    dropped_events: UInt32Builder,
    links: LinksBuilder,
    dropped_links: UInt32Builder,
    resource_scope: ResourceScopeBuilder,
    /// In `PROMOTED_BEFORE_STATUS` then `PROMOTED_AFTER_STATUS` order.
    promoted: [StringBuilder; 11],
    http_status_code: Int32Builder,
    sample_weight: Float64Builder,
}

impl SpansBuilder {
    fn with_capacity(sizes: &Sizes) -> Self {
        let rows = sizes.rows;
        Self {
            trace_id: IdBuilder::with_capacity(16, rows),
            span_id: IdBuilder::with_capacity(8, rows),
            parent_span_id: IdBuilder::with_capacity(8, rows),
            trace_state: StringBuilder::with_capacity(rows, 0),
            flags: UInt32Builder::with_capacity(rows),
            service_name: InternedDict::with_capacity(rows),
            span_name: StringDictionaryBuilder::with_capacity(rows, 64, 2048),
            kind: Int8Builder::with_capacity(rows),
            start_time: TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            duration_ns: Int64Builder::with_capacity(rows),
            status_code: Int8Builder::with_capacity(rows),
            status_message: StringBuilder::with_capacity(rows, 0),
            attrs: AttrsBuilder::with_capacity(rows, sizes.attrs),
            dropped_attrs: UInt32Builder::with_capacity(rows),
            events: EventsBuilder::with_capacity(rows),
            dropped_events: UInt32Builder::with_capacity(rows),
            links: LinksBuilder::with_capacity(rows),
            dropped_links: UInt32Builder::with_capacity(rows),
            resource_scope: ResourceScopeBuilder::with_capacity(sizes),
            promoted: std::array::from_fn(|_| StringBuilder::with_capacity(rows, 0)),
            http_status_code: Int32Builder::with_capacity(rows),
            sample_weight: Float64Builder::with_capacity(rows),
        }
    }

    /// Appends a span that passed [`validate`].
    fn append(
        &mut self,
        s: &Span,
        origin: &Origin<'_>,
        res: &ResourceDerived<'_>,
    ) -> Result<(), ArrowError> {
        self.trace_id.push(&s.trace_id);
        self.span_id.push(&s.span_id);
        if s.parent_span_id.iter().all(|b| *b == 0) {
            // Empty, or the all-zero id some clients use for "no parent".
            self.parent_span_id.push_null();
        } else {
            self.parent_span_id.push(&s.parent_span_id);
        }
        append_opt(&mut self.trace_state, &s.trace_state);
        self.flags.append_value(s.flags);
        self.service_name.push(res.service_name_key);
        self.span_name.append_value(&s.name);
        self.kind.append_value(i8::try_from(s.kind).unwrap_or(0));
        // Validated: both fit in i64, so the difference fits too.
        let start = s.start_time_unix_nano as i64;
        let end = s.end_time_unix_nano as i64;
        self.start_time.append_value(start);
        self.duration_ns.append_value(end - start);
        let (code, message) = s
            .status
            .as_ref()
            .map_or((0, ""), |st| (st.code, st.message.as_str()));
        self.status_code
            .append_value(i8::try_from(code).unwrap_or(0));
        append_opt(&mut self.status_message, message);
        self.attrs.append(&s.attributes)?;
        self.dropped_attrs.append_value(s.dropped_attributes_count);
        self.events.append(&s.events)?;
        self.dropped_events.append_value(s.dropped_events_count);
        self.links.append(&s.links)?;
        self.dropped_links.append_value(s.dropped_links_count);
        self.resource_scope.append(origin)?;

        let p = Promoted::scan(&s.attributes);
        let values: [Option<&str>; 11] = [
            p.http_method.or(p.http_method_legacy),
            p.http_route,
            p.rpc_system,
            p.rpc_service,
            p.rpc_method,
            p.db_system.or(p.db_system_legacy),
            p.messaging_system,
            p.peer_service,
            p.server_address.or(p.net_peer_name),
            res.k8s_namespace,
            res.k8s_pod,
        ];
        for (b, v) in self.promoted.iter_mut().zip(values) {
            b.append_option(v);
        }
        self.http_status_code
            .append_option(p.status.or(p.status_legacy));
        self.sample_weight
            .append_value(sample_weight(&s.trace_state));
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<ArrayRef>, ArrowError> {
        let mut cols: Vec<ArrayRef> = vec![
            self.trace_id.finish()?,
            self.span_id.finish()?,
            self.parent_span_id.finish()?,
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            self.service_name.finish()?,
            Arc::new(self.span_name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
        ];
        let (attrs, types) = self.attrs.finish();
        cols.extend([attrs, types, Arc::new(self.dropped_attrs.finish())]);
        cols.push(self.events.finish()?);
        cols.push(Arc::new(self.dropped_events.finish()));
        cols.push(self.links.finish()?);
        cols.push(Arc::new(self.dropped_links.finish()));
        cols.extend(self.resource_scope.finish()?);
        let mut promoted = self.promoted.iter_mut();
        for b in promoted.by_ref().take(PROMOTED_BEFORE_STATUS.len()) {
            cols.push(Arc::new(b.finish()));
        }
        cols.push(Arc::new(self.http_status_code.finish()));
        for b in promoted {
            cols.push(Arc::new(b.finish()));
        }
        cols.push(Arc::new(self.sample_weight.finish()));
        Ok(cols)
    }
}

// =============================================================================================
// Arrow -> OTLP
// =============================================================================================

/// Converts `spans` batches (from this crate, Parquet, or a query selecting at least the
/// non-derived columns) back to OTLP. Consecutive rows with identical resource, then scope,
/// are grouped into one `ResourceSpans` / `ScopeSpans`, also across batch boundaries.
pub fn to_otlp(batches: &[RecordBatch]) -> Result<Vec<ResourceSpans>> {
    let schema = Table::Spans.schema();
    let mut grouper: Grouper<ResourceSpans, ScopeSpans> = Grouper::new(
        |resource, schema_url| ResourceSpans {
            resource: Some(resource),
            scope_spans: Vec::new(),
            schema_url,
        },
        |r| (r.resource.as_ref(), r.schema_url.as_str()),
        |r| &mut r.scope_spans,
        |scope, schema_url| ScopeSpans {
            scope: Some(scope),
            spans: Vec::new(),
            schema_url,
        },
        |s| (s.scope.as_ref(), s.schema_url.as_str()),
    );
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let cols = SpanColumns::new(batch, &schema)?;
        let spans = cols.reader()?;
        let rs_cols = ResourceScopeColumns::new(batch, &schema)?;
        let rs = rs_cols.reader()?;
        for row in 0..batch.num_rows() {
            let span = spans.span(row)?;
            let (scope, _) = grouper.group_for(&rs, row, row == 0)?;
            scope.spans.push(span);
        }
    }
    Ok(grouper.out)
}

/// Names of the span-level columns `to_otlp` reads, in [`SpanColumns`] order.
const READ_COLUMNS: [&str; 18] = [
    TRACE_ID,
    SPAN_ID,
    PARENT_SPAN_ID,
    TRACE_STATE,
    FLAGS,
    SPAN_NAME,
    KIND,
    START_TIME,
    DURATION_NS,
    STATUS_CODE,
    STATUS_MESSAGE,
    ATTRIBUTES,
    ATTRIBUTE_TYPES,
    DROPPED_ATTRIBUTES_COUNT,
    EVENTS,
    DROPPED_EVENTS_COUNT,
    LINKS,
    DROPPED_LINKS_COUNT,
];

struct SpanColumns(Vec<ArrayRef>);

impl SpanColumns {
    fn new(batch: &RecordBatch, schema: &Schema) -> Result<Self> {
        READ_COLUMNS
            .iter()
            .map(|name| table_column(batch, schema, name))
            .collect::<Result<Vec<_>>>()
            .map(Self)
    }

    fn reader(&self) -> Result<SpanReader<'_>> {
        let c = |i: usize| self.0[i].as_ref();
        Ok(SpanReader {
            trace_id: downcast(c(0), TRACE_ID)?,
            span_id: downcast(c(1), SPAN_ID)?,
            parent_span_id: downcast(c(2), PARENT_SPAN_ID)?,
            trace_state: downcast(c(3), TRACE_STATE)?,
            flags: downcast(c(4), FLAGS)?,
            name: DictStr::new(c(5), SPAN_NAME)?,
            kind: downcast(c(6), KIND)?,
            start_time: downcast(c(7), START_TIME)?,
            duration: downcast(c(8), DURATION_NS)?,
            status_code: downcast(c(9), STATUS_CODE)?,
            status_message: downcast(c(10), STATUS_MESSAGE)?,
            attrs: AttrsReader::new(c(11), c(12), ATTRIBUTES)?,
            dropped_attrs: downcast(c(13), DROPPED_ATTRIBUTES_COUNT)?,
            events: EventsReader::new(c(14))?,
            dropped_events: downcast(c(15), DROPPED_EVENTS_COUNT)?,
            links: LinksReader::new(c(16))?,
            dropped_links: downcast(c(17), DROPPED_LINKS_COUNT)?,
        })
    }
}

struct SpanReader<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    span_id: &'a FixedSizeBinaryArray,
    parent_span_id: &'a FixedSizeBinaryArray,
    trace_state: &'a StringArray,
    flags: &'a UInt32Array,
    name: DictStr<'a>,
    kind: &'a Int8Array,
    start_time: &'a TimestampNanosecondArray,
    duration: &'a Int64Array,
    status_code: &'a Int8Array,
    status_message: &'a StringArray,
    attrs: AttrsReader<'a>,
    dropped_attrs: &'a UInt32Array,
    events: EventsReader<'a>,
    dropped_events: &'a UInt32Array,
    links: LinksReader<'a>,
    dropped_links: &'a UInt32Array,
}

fn to_unix_nanos(t: i64) -> Result<u64> {
    u64::try_from(t).map_err(|_| Error::InvalidData(format!("negative timestamp {t}")))
}

impl SpanReader<'_> {
    fn span(&self, row: usize) -> Result<Span> {
        let start = self.start_time.value(row);
        let end = i128::from(start) + i128::from(self.duration.value(row));
        let end = u64::try_from(end)
            .map_err(|_| Error::InvalidData(format!("span end time {end} out of range")))?;
        let code = i32::from(self.status_code.value(row));
        let message = str_or_empty(self.status_message, row);
        // Always present: SDKs always send a status, and an absent one means the same (unset).
        let status = Some(Status {
            message: message.to_owned(),
            code,
        });
        Ok(Span {
            trace_id: self.trace_id.value(row).to_vec(),
            span_id: self.span_id.value(row).to_vec(),
            trace_state: str_or_empty(self.trace_state, row).to_owned(),
            parent_span_id: if self.parent_span_id.is_null(row) {
                Vec::new()
            } else {
                self.parent_span_id.value(row).to_vec()
            },
            flags: self.flags.value(row),
            name: self.name.get(row).to_owned(),
            kind: i32::from(self.kind.value(row)),
            start_time_unix_nano: to_unix_nanos(start)?,
            end_time_unix_nano: end,
            attributes: self.attrs.read(row)?,
            dropped_attributes_count: self.dropped_attrs.value(row),
            events: self.events.read(row)?,
            dropped_events_count: self.dropped_events.value(row),
            links: self.links.read(row)?,
            dropped_links_count: self.dropped_links.value(row),
            status,
        })
    }
}

fn list_range(list: &ListArray, row: usize) -> std::ops::Range<usize> {
    let offsets = list.value_offsets();
    offsets[row] as usize..offsets[row + 1] as usize
}

fn struct_child<'a, T: Array + 'static>(s: &'a StructArray, name: &str) -> Result<&'a T> {
    let col = s
        .column_by_name(name)
        .ok_or_else(|| Error::InvalidData(format!("missing struct field {name}")))?;
    downcast(col.as_ref(), name)
}

fn struct_values<'a>(list: &'a dyn Array, name: &str) -> Result<(&'a ListArray, &'a StructArray)> {
    let list: &ListArray = downcast(list, name)?;
    let values: &StructArray = downcast(list.values().as_ref(), name)?;
    Ok((list, values))
}

struct EventsReader<'a> {
    list: &'a ListArray,
    time: &'a TimestampNanosecondArray,
    name: &'a StringArray,
    attrs: AttrsReader<'a>,
    dropped: &'a UInt32Array,
}

impl<'a> EventsReader<'a> {
    fn new(a: &'a dyn Array) -> Result<Self> {
        let (list, s) = struct_values(a, EVENTS)?;
        Ok(Self {
            list,
            time: struct_child(s, event::TIME)?,
            name: struct_child(s, event::NAME)?,
            attrs: AttrsReader::new(
                struct_child::<arrow::array::MapArray>(s, event::ATTRIBUTES)?,
                struct_child::<ListArray>(s, event::ATTRIBUTE_TYPES)?,
                event::ATTRIBUTES,
            )?,
            dropped: struct_child(s, event::DROPPED_ATTRIBUTES_COUNT)?,
        })
    }

    fn read(&self, row: usize) -> Result<Vec<span::Event>> {
        list_range(self.list, row)
            .map(|i| {
                Ok(span::Event {
                    time_unix_nano: to_unix_nanos(self.time.value(i))?,
                    name: str_or_empty(self.name, i).to_owned(),
                    attributes: self.attrs.read(i)?,
                    dropped_attributes_count: self.dropped.value(i),
                })
            })
            .collect()
    }
}

struct LinksReader<'a> {
    list: &'a ListArray,
    trace_id: &'a FixedSizeBinaryArray,
    span_id: &'a FixedSizeBinaryArray,
    trace_state: &'a StringArray,
    flags: &'a UInt32Array,
    attrs: AttrsReader<'a>,
    dropped: &'a UInt32Array,
}

impl<'a> LinksReader<'a> {
    fn new(a: &'a dyn Array) -> Result<Self> {
        let (list, s) = struct_values(a, LINKS)?;
        Ok(Self {
            list,
            trace_id: struct_child(s, link::TRACE_ID)?,
            span_id: struct_child(s, link::SPAN_ID)?,
            trace_state: struct_child(s, link::TRACE_STATE)?,
            flags: struct_child(s, link::FLAGS)?,
            attrs: AttrsReader::new(
                struct_child::<arrow::array::MapArray>(s, link::ATTRIBUTES)?,
                struct_child::<ListArray>(s, link::ATTRIBUTE_TYPES)?,
                link::ATTRIBUTES,
            )?,
            dropped: struct_child(s, link::DROPPED_ATTRIBUTES_COUNT)?,
        })
    }

    fn read(&self, row: usize) -> Result<Vec<span::Link>> {
        list_range(self.list, row)
            .map(|i| {
                Ok(span::Link {
                    trace_id: self.trace_id.value(i).to_vec(),
                    span_id: self.span_id.value(i).to_vec(),
                    trace_state: str_or_empty(self.trace_state, i).to_owned(),
                    attributes: self.attrs.read(i)?,
                    dropped_attributes_count: self.dropped.value(i),
                    flags: self.flags.value(i),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array, Int32Array};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            key_strindex: 0,
        }
    }

    fn sv(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.into())
    }

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("op{id}"),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 1_500,
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", sv("checkout")),
                        kv("k8s.pod.name", sv("pod-1")),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn schema_matches_built_batch() {
        let c = from_otlp(&request(vec![span(1, 1)]));
        assert_eq!(c.batch.schema(), Table::Spans.schema());
        assert_eq!(c.batch.num_rows(), 1);
        let empty = from_otlp(&ExportTraceServiceRequest::default());
        assert_eq!(empty.batch.num_rows(), 0);
        assert_eq!(empty.rejected, 0);
        assert_eq!(empty.rejection_message, None);
    }

    #[test]
    fn invalid_spans_are_rejected_and_the_rest_kept() {
        let mut zero_trace = span(0, 2);
        zero_trace.trace_id = vec![0; 16];
        let mut short_trace = span(1, 3);
        short_trace.trace_id = vec![1; 15];
        let mut zero_span = span(1, 4);
        zero_span.span_id = vec![0; 8];
        let mut bad_parent = span(1, 5);
        bad_parent.parent_span_id = vec![1; 4];
        let mut bad_time = span(1, 6);
        bad_time.end_time_unix_nano = u64::MAX;
        let mut bad_link = span(1, 7);
        bad_link.links.push(span::Link {
            trace_id: vec![1; 16],
            span_id: vec![],
            ..Default::default()
        });
        let mut zero_parent = span(1, 8);
        zero_parent.parent_span_id = vec![0; 8];
        let req = request(vec![
            span(1, 1),
            zero_trace,
            short_trace,
            zero_span,
            bad_parent,
            bad_time,
            bad_link,
            zero_parent,
        ]);
        let c = from_otlp(&req);
        assert_eq!(c.batch.num_rows(), 2);
        assert_eq!(c.rejected, 6);
        let msg = c.rejection_message.unwrap();
        assert!(msg.starts_with("6 spans rejected: "), "{msg}");
        for part in [
            "invalid trace_id (must be 16 non-zero bytes) [2]",
            "invalid span_id (must be 8 non-zero bytes) [1]",
            "invalid parent_span_id",
            "timestamp out of range",
            "invalid link",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        assert_eq!(msg, msg.to_lowercase());
        // The all-zero parent is stored as a root.
        let parents = c.batch.column_by_name(PARENT_SPAN_ID).unwrap();
        assert!(parents.is_null(1));

        let only_bad = from_otlp(&request(vec![{
            let mut s = span(1, 1);
            s.trace_id.clear();
            s
        }]));
        assert_eq!(only_bad.batch.num_rows(), 0);
        assert_eq!(
            only_bad.rejection_message.as_deref(),
            Some("1 span rejected: invalid trace_id (must be 16 non-zero bytes)")
        );
    }

    /// Resource attributes are repeated on every row: a request that would expand past the
    /// bound is rejected whole instead of exhausting memory.
    #[test]
    fn amplification_is_bounded() {
        let mut req = request((0..3000u32).map(|i| span(1, (i % 250 + 1) as u8)).collect());
        let resource = req.resource_spans[0].resource.as_mut().unwrap();
        resource
            .attributes
            .extend((0..3000).map(|i| kv(&format!("k{i}"), sv("v"))));
        let c = from_otlp(&req);
        assert_eq!((c.batch.num_rows(), c.rejected), (0, 3000));
        assert!(c.rejection_message.unwrap().contains("request too large"));
    }

    #[test]
    fn promoted_columns_and_weight() {
        let mut s = span(1, 1);
        s.attributes = vec![
            kv("http.method", sv("POST")),
            kv("http.request.method", sv("GET")),
            kv("http.status_code", sv("404")),
            kv("http.response.status_code", any_value::Value::IntValue(503)),
            kv("db.system", sv("mysql")),
            kv("net.peer.name", sv("db.local")),
            kv("rpc.method", any_value::Value::IntValue(1)),
        ];
        s.trace_state = "vendor=x, ot=rv:abc;th:8".into();
        s.end_time_unix_nano = 400; // negative duration is kept
        let c = from_otlp(&request(vec![s.clone()]));
        let b = &c.batch;
        let str_col = |n: &str| {
            let col = b.column_by_name(n).unwrap().as_string::<i32>().clone();
            (!col.is_null(0)).then(|| col.value(0).to_owned())
        };
        assert_eq!(str_col(HTTP_METHOD).as_deref(), Some("GET"));
        assert_eq!(str_col(DB_SYSTEM).as_deref(), Some("mysql"));
        assert_eq!(str_col(SERVER_ADDRESS).as_deref(), Some("db.local"));
        assert_eq!(str_col(RPC_METHOD), None);
        assert_eq!(str_col(K8S_POD_NAME).as_deref(), Some("pod-1"));
        assert_eq!(str_col(K8S_NAMESPACE_NAME), None);
        let status: &Int32Array = b.column_by_name(HTTP_STATUS_CODE).unwrap().as_primitive();
        assert_eq!(status.value(0), 503);
        let w: &Float64Array = b.column_by_name(SAMPLE_WEIGHT).unwrap().as_primitive();
        assert_eq!(w.value(0), 2.0);
        let d: &Int64Array = b.column_by_name(DURATION_NS).unwrap().as_primitive();
        assert_eq!(d.value(0), -600);
        let back = to_otlp(std::slice::from_ref(b)).unwrap();
        s.status = Some(Status::default());
        assert_eq!(back[0].scope_spans[0].spans[0], s);
    }

    /// Query engines hand back other physical types (DataFusion reads strings as `Utf8View`,
    /// may unpack dictionaries): `to_otlp` converts them back instead of failing.
    #[test]
    fn to_otlp_accepts_equivalent_types() {
        fn viewify(dt: &DataType) -> DataType {
            match dt {
                DataType::Utf8 | DataType::Dictionary(_, _) => DataType::Utf8View,
                DataType::List(f) => DataType::List(Arc::new(
                    f.as_ref().clone().with_data_type(viewify(f.data_type())),
                )),
                DataType::Struct(fields) => DataType::Struct(
                    fields
                        .iter()
                        .map(|f| f.as_ref().clone().with_data_type(viewify(f.data_type())))
                        .collect(),
                ),
                DataType::Map(f, sorted) => DataType::Map(
                    Arc::new(f.as_ref().clone().with_data_type(viewify(f.data_type()))),
                    *sorted,
                ),
                other => other.clone(),
            }
        }
        let mut s = span(1, 1);
        s.attributes = vec![kv("a", sv("b")), kv("n", any_value::Value::IntValue(3))];
        s.events.push(span::Event {
            name: "e".into(),
            attributes: vec![kv("x", sv("y"))],
            ..Default::default()
        });
        s.status = Some(Status::default());
        let req = request(vec![s]);
        let batch = from_otlp(&req).batch;
        let mut fields = Vec::new();
        let mut cols = Vec::new();
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            let dt = viewify(f.data_type());
            cols.push(arrow::compute::cast(c, &dt).unwrap());
            fields.push(f.as_ref().clone().with_data_type(dt));
        }
        let viewed = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
        assert_eq!(to_otlp(&[viewed]).unwrap(), req.resource_spans);
    }

    #[test]
    fn sampling_thresholds() {
        assert_eq!(sample_weight(""), 1.0);
        assert_eq!(sample_weight("ot=th:0"), 1.0);
        assert_eq!(sample_weight("ot=th:c"), 4.0);
        assert_eq!(sample_weight("a=b,ot=th:8;rv:1"), 2.0);
        assert_eq!(sample_weight("ot=th:zz"), 1.0);
        assert_eq!(sample_weight("ot=th:123456789abcdef0"), 1.0);
        assert!(sample_weight("ot=th:ffffffffffffff") > 7.2e16);
    }

    #[test]
    fn never_panics_on_garbage() {
        // Every span field at an extreme; ids of every length around the valid ones.
        let mut spans = Vec::new();
        for len in [0usize, 1, 7, 8, 9, 15, 16, 17] {
            let mut s = span(1, 1);
            s.trace_id = vec![0xff; len];
            s.span_id = vec![0xff; len.min(9)];
            s.parent_span_id = vec![0xff; len % 9];
            s.kind = i32::MIN;
            s.status = Some(Status {
                code: i32::MAX,
                message: "\u{0}".into(),
            });
            s.start_time_unix_nano = i64::MAX as u64;
            s.end_time_unix_nano = 0;
            spans.push(s);
        }
        let c = from_otlp(&request(spans));
        assert_eq!(c.batch.num_rows() as u64 + c.rejected, 8);
        assert!(to_otlp(&[c.batch]).is_ok());
    }

    #[test]
    fn real_client_protobuf_captures_convert() {
        for name in [
            "node-http-proto",
            "python-grpc",
            "python-http-proto",
            "rust-http-proto",
        ] {
            let path = format!(
                "{}/testdata/real-client-captures/{name}.traces.pb",
                env!("CARGO_MANIFEST_DIR")
            );
            let body = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
            let req = ExportTraceServiceRequest::decode(&body[..]).unwrap();
            let c = from_otlp(&req);
            assert_eq!(c.rejected, 0, "{name}: {:?}", c.rejection_message);
            assert_eq!(c.batch.num_rows(), 3, "{name}");
            let services = c.batch.column_by_name(SERVICE_NAME).unwrap();
            let services = arrow::compute::cast(services, &DataType::Utf8).unwrap();
            assert!(
                services.as_string::<i32>().value(0).ends_with("realclient"),
                "{name}"
            );
            let back = to_otlp(&[c.batch]).unwrap();
            assert_eq!(back, req.resource_spans, "{name}: exact round trip");
        }
    }
}
