//! Attribute conditions of a search, and the scalar function that evaluates one of them on
//! the stored attribute maps.
//!
//! ```text
//!  "http.response.status_code>=500" ──parse──▶ AttributeCondition { Span, key, Ge(500) }
//!                                                 │ expr()
//!                                                 ▼
//!   [promoted column = value  AND]   weft_attribute_match(attributes [, resource_attributes,
//!    (cheap, pushed into Parquet)         scope_attributes, events, links])
//!                                                 │ per batch: walk each MapArray's offsets,
//!                                                 │ keys and values buffers directly
//!                                                 ▼
//!                                       BooleanArray, one value per span
//! ```
//!
//! **Semantics.** In one attribute list the first entry with the key counts (as
//! `pcommon.Map.Get` does in the OpenTelemetry Collector and Jaeger; OTLP forbids duplicate
//! keys, Weft stores them anyway). A condition scoped to several lists (Jaeger's tag search:
//! span, scope and resource attributes, every event, every link) holds when one of the
//! values found satisfies it; `!=` holds when the key is present somewhere and no value
//! found equals the operand. Values are compared in their stored rendering
//! ([`weft_schemas::attributes`]): text equality is exact, numbers compare numerically
//! (integers exactly, otherwise as doubles), a value that is not a number never satisfies a
//! numeric comparison. A key with an empty value is present but equals nothing.
//!
//! **Promoted columns.** When the key is the first-choice source of a promoted column
//! (`http.route` → `http_route`, ...) and the operand is text that no bool, number, bytes,
//! array or kvlist renders to, a span matches only if the promoted column holds the operand
//! (promotion takes the first string-typed entry, which is then the first entry). That
//! equality is added in front of the exact check: it reads one small column, can be pushed
//! into the Parquet decoder and prunes with statistics, and the map is then decoded only for
//! rows that pass it.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, MapArray, StructArray};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{col, lit};
use weft_schemas::columns;

use crate::{Error, Result};

/// Which attribute lists a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttributeScope {
    /// The span's own attributes.
    Span,
    /// The attributes of the span's resource (`service.name`, `k8s.pod.name`, ...).
    Resource,
    /// Everywhere Jaeger looks for a tag: span, scope and resource attributes, and the
    /// attributes of every event (log) and every link of the span.
    Anywhere,
}

impl AttributeScope {
    fn lists(self) -> &'static [AttributeList] {
        use AttributeList::*;
        match self {
            AttributeScope::Span => &[Span],
            AttributeScope::Resource => &[Resource],
            // Cheapest lists first: most matches are decided before the nested ones.
            AttributeScope::Anywhere => &[Span, Scope, Resource, Events, Links],
        }
    }

    fn name(self) -> &'static str {
        match self {
            AttributeScope::Span => "span",
            AttributeScope::Resource => "resource",
            AttributeScope::Anywhere => "anywhere",
        }
    }
}

/// One stored attribute list and the column that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttributeList {
    Span,
    Resource,
    Scope,
    /// `events[*].attributes`.
    Events,
    /// `links[*].attributes`.
    Links,
}

impl AttributeList {
    fn column(self) -> &'static str {
        match self {
            AttributeList::Span => columns::ATTRIBUTES,
            AttributeList::Resource => columns::RESOURCE_ATTRIBUTES,
            AttributeList::Scope => columns::SCOPE_ATTRIBUTES,
            AttributeList::Events => columns::EVENTS,
            AttributeList::Links => columns::LINKS,
        }
    }
}

/// A number in a condition or a stored value. Integers are kept exact (an `i64` above 2^53
/// does not survive a trip through `f64`).
#[derive(Debug, Clone, Copy)]
pub struct Number {
    integer: Option<i64>,
    float: f64,
}

impl Number {
    /// Decimal integer or floating-point text (`123`, `-7`, `72.5`, `1e3`, `NaN`, `inf`).
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(integer) = text.parse::<i64>() {
            return Some(Number {
                integer: Some(integer),
                float: integer as f64,
            });
        }
        text.parse::<f64>().ok().map(|float| Number {
            integer: None,
            float,
        })
    }

    fn compare(&self, other: &Number) -> Option<Ordering> {
        match (self.integer, other.integer) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => self.float.partial_cmp(&other.float),
        }
    }
}

// Equality and hashing by bit pattern: the function holding a condition must be `Eq` and
// `Hash` for DataFusion's plan comparison, which `f64` alone is not.
impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.integer == other.integer && self.float.to_bits() == other.float.to_bits()
    }
}

impl Eq for Number {}

impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.integer.hash(state);
        self.float.to_bits().hash(state);
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.integer {
            Some(i) => write!(f, "{i}"),
            None => write!(f, "{}", self.float),
        }
    }
}

/// The operand of `=` and `!=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttributeValue {
    /// Equal when the stored rendering is exactly this text.
    Text(String),
    /// Equal when the stored rendering is a number equal to this one.
    Number(Number),
}

impl AttributeValue {
    fn equals(&self, stored: &str) -> bool {
        match self {
            AttributeValue::Text(text) => stored == text,
            AttributeValue::Number(n) => {
                Number::parse(stored).is_some_and(|s| s.compare(n) == Some(Ordering::Equal))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttributeOp {
    Exists,
    Eq(AttributeValue),
    Ne(AttributeValue),
    Lt(Number),
    Le(Number),
    Gt(Number),
    Ge(Number),
}

/// One condition on an attribute, e.g. `http.route = "/cart"` on span attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttributeCondition {
    pub scope: AttributeScope,
    pub key: String,
    pub op: AttributeOp,
}

impl AttributeCondition {
    pub fn new(scope: AttributeScope, key: impl Into<String>, op: AttributeOp) -> Self {
        Self {
            scope,
            key: key.into(),
            op,
        }
    }

    /// Parses the text form used in query strings:
    ///
    /// | text | meaning |
    /// | --- | --- |
    /// | `key` | the key is present |
    /// | `key=value`, `key!=value` | equality; an unquoted number compares numerically, anything else (or `"quoted"`) as exact text |
    /// | `key<n`, `key<=n`, `key>n`, `key>=n` | numeric comparison |
    ///
    /// The key ends at the first `!`, `=`, `<` or `>`; spaces around it are ignored.
    pub fn parse(scope: AttributeScope, text: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadRequest(format!("attribute condition {text:?}: {why}"));
        let Some(at) = text.find(['!', '=', '<', '>']) else {
            let key = text.trim();
            if key.is_empty() {
                return Err(bad("empty"));
            }
            return Ok(Self::new(scope, key, AttributeOp::Exists));
        };
        let key = text[..at].trim();
        if key.is_empty() {
            return Err(bad("no attribute key before the operator"));
        }
        let rest = &text[at..];
        let (operator, operand) = ["!=", "<=", ">=", "=", "<", ">"]
            .into_iter()
            .find_map(|op| rest.strip_prefix(op).map(|value| (op, value)))
            .ok_or_else(|| bad("expected one of = != < <= > >="))?;
        let number = || {
            Number::parse(operand.trim())
                .ok_or_else(|| bad(&format!("{operator} needs a number, not {operand:?}")))
        };
        let op = match operator {
            "=" => AttributeOp::Eq(equality_operand(operand)),
            "!=" => AttributeOp::Ne(equality_operand(operand)),
            "<" => AttributeOp::Lt(number()?),
            "<=" => AttributeOp::Le(number()?),
            ">" => AttributeOp::Gt(number()?),
            _ => AttributeOp::Ge(number()?),
        };
        Ok(Self::new(scope, key, op))
    }

    /// The filter expression: the exact check, preceded by a promoted-column equality when
    /// one applies (see the module docs).
    pub fn expr(&self) -> Expr {
        let lists = self.scope.lists();
        let args = lists.iter().map(|list| col(list.column())).collect();
        let exact = ScalarUDF::new_from_impl(AttributeMatch::new(self.clone())).call(args);
        match self.promoted_equality() {
            Some(promoted) => promoted.and(exact),
            None => exact,
        }
    }

    fn promoted_equality(&self) -> Option<Expr> {
        let AttributeOp::Eq(AttributeValue::Text(value)) = &self.op else {
            return None;
        };
        let column = promoted_column(self.scope, &self.key)?;
        if could_render_from_non_string(value) {
            return None;
        }
        // `service_name` is also "unknown_service" when `service.name` is absent.
        if column == columns::SERVICE_NAME && value == UNKNOWN_SERVICE {
            return None;
        }
        Some(col(column).eq(lit(value.clone())))
    }
}

impl fmt::Display for AttributeCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let value = |v: &AttributeValue| match v {
            AttributeValue::Text(t) => format!("{t:?}"),
            AttributeValue::Number(n) => n.to_string(),
        };
        match &self.op {
            AttributeOp::Exists => write!(f, "{key}"),
            AttributeOp::Eq(v) => write!(f, "{key}={}", value(v)),
            AttributeOp::Ne(v) => write!(f, "{key}!={}", value(v)),
            AttributeOp::Lt(n) => write!(f, "{key}<{n}"),
            AttributeOp::Le(n) => write!(f, "{key}<={n}"),
            AttributeOp::Gt(n) => write!(f, "{key}>{n}"),
            AttributeOp::Ge(n) => write!(f, "{key}>={n}"),
        }
    }
}

fn equality_operand(text: &str) -> AttributeValue {
    if let Some(inner) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        return AttributeValue::Text(inner.to_owned());
    }
    match Number::parse(text.trim()) {
        Some(n) => AttributeValue::Number(n),
        None => AttributeValue::Text(text.to_owned()),
    }
}

/// What `spans.service_name` holds for a resource without a string `service.name`.
pub(crate) const UNKNOWN_SERVICE: &str = "unknown_service";

/// The promoted column whose first-choice source is `key` in `scope` (see
/// `weft_schemas::spans`). Keys that are only a fallback source (`http.method`, `db.system`,
/// `net.peer.name`) are not listed: the column may hold the preferred key's value instead.
/// `http.response.status_code` is not listed either: its column also takes numeric strings
/// and the legacy key, so it is not an exact pre-filter.
fn promoted_column(scope: AttributeScope, key: &str) -> Option<&'static str> {
    use weft_schemas::columns::*;
    match scope {
        AttributeScope::Span => match key {
            "http.request.method" => Some(HTTP_METHOD),
            "http.route" => Some(HTTP_ROUTE),
            "rpc.system" => Some(RPC_SYSTEM),
            "rpc.service" => Some(RPC_SERVICE),
            "rpc.method" => Some(RPC_METHOD),
            "db.system.name" => Some(DB_SYSTEM),
            "messaging.system" => Some(MESSAGING_SYSTEM),
            "peer.service" => Some(PEER_SERVICE),
            "server.address" => Some(SERVER_ADDRESS),
            _ => None,
        },
        AttributeScope::Resource => match key {
            "service.name" => Some(SERVICE_NAME),
            "k8s.namespace.name" => Some(K8S_NAMESPACE_NAME),
            "k8s.pod.name" => Some(K8S_POD_NAME),
            _ => None,
        },
        AttributeScope::Anywhere => None,
    }
}

/// Whether a bool, int, double, bytes (base64), array or kvlist value could be stored as
/// exactly `text`; promoted columns hold string values only, so for such text they are not
/// an exact pre-filter.
fn could_render_from_non_string(text: &str) -> bool {
    text == "true"
        || text == "false"
        || text.parse::<f64>().is_ok()
        || text.starts_with('{')
        || is_padded_base64(text)
}

fn is_padded_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    text.len().is_multiple_of(4)
        && text.len() - body.len() <= 2
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// `weft_attribute_match(<list columns>)`: evaluates one [`AttributeCondition`] per row.
/// The condition lives in the function (not in literal arguments) so it is parsed once per
/// query, and the arguments are exactly the columns to read.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AttributeMatch {
    condition: AttributeCondition,
    signature: Signature,
}

impl AttributeMatch {
    fn new(condition: AttributeCondition) -> Self {
        let arity = condition.scope.lists().len();
        Self {
            condition,
            signature: Signature::any(arity, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AttributeMatch {
    fn name(&self) -> &str {
        "weft_attribute_match"
    }

    fn schema_name(&self, _args: &[Expr]) -> DfResult<String> {
        // Shown in EXPLAIN; also keeps two conditions in one plan distinct by name.
        Ok(format!(
            "weft_attribute_match({}: {})",
            self.condition.scope.name(),
            self.condition
        ))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .into_iter()
            .map(|arg| arg.into_array(rows))
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        let sources = arrays
            .iter()
            .map(|array| Source::new(array.as_ref()))
            .collect::<DfResult<Vec<_>>>()?;
        let key = self.condition.key.as_str();
        let op = &self.condition.op;
        let values = BooleanBuffer::collect_bool(rows, |row| matches_row(op, key, &sources, row));
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
            values, None,
        ))))
    }
}

/// Decides one row: feeds the value of `key` from each list to the operator until it can
/// answer.
fn matches_row(op: &AttributeOp, key: &str, sources: &[Source<'_>], row: usize) -> bool {
    let mut present = false;
    for source in sources {
        for maps_row in source.map_rows(row) {
            let Some(value) = source.maps.first_value(maps_row, key) else {
                continue;
            };
            present = true;
            let satisfied = value.is_some_and(|stored| satisfies(op, stored));
            match op {
                AttributeOp::Exists => return true,
                // One equal value is enough to fail `!=`.
                AttributeOp::Ne(_) if satisfied => return false,
                AttributeOp::Ne(_) => {}
                _ if satisfied => return true,
                _ => {}
            }
        }
    }
    matches!(op, AttributeOp::Ne(_)) && present
}

/// Whether a stored value satisfies the operator (for `!=`: equals the operand).
fn satisfies(op: &AttributeOp, stored: &str) -> bool {
    let compare = |n: &Number, accept: fn(Ordering) -> bool| {
        Number::parse(stored)
            .and_then(|s| s.compare(n))
            .is_some_and(accept)
    };
    match op {
        AttributeOp::Exists => true,
        AttributeOp::Eq(v) | AttributeOp::Ne(v) => v.equals(stored),
        AttributeOp::Lt(n) => compare(n, Ordering::is_lt),
        AttributeOp::Le(n) => compare(n, Ordering::is_le),
        AttributeOp::Gt(n) => compare(n, Ordering::is_gt),
        AttributeOp::Ge(n) => compare(n, Ordering::is_ge),
    }
}

/// An argument column seen as "a row has these attribute maps".
struct Source<'a> {
    /// `None`: one map per row (row i is map i). `Some`: a list per row (events, links),
    /// whose items each carry one map; these are the list offsets.
    items: Option<(&'a [i32], Option<&'a NullBuffer>)>,
    maps: Maps<'a>,
}

impl<'a> Source<'a> {
    fn new(array: &'a dyn Array) -> DfResult<Self> {
        match array.data_type() {
            DataType::Map(..) => Ok(Source {
                items: None,
                maps: Maps::new(array.as_map())?,
            }),
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                let structs: &StructArray = list.values().as_struct();
                // Events and links name their map alike.
                let Some(map) = structs
                    .column_by_name(columns::event::ATTRIBUTES)
                    .and_then(|c| c.as_map_opt())
                else {
                    return exec_err!("weft_attribute_match: list items carry no attribute map");
                };
                Ok(Source {
                    items: Some((list.value_offsets(), list.nulls())),
                    maps: Maps::new(map)?,
                })
            }
            other => exec_err!("weft_attribute_match: cannot read attributes from {other}"),
        }
    }

    /// Indexes into `maps` of the maps row `row` has.
    fn map_rows(&self, row: usize) -> std::ops::Range<usize> {
        match self.items {
            None => row..row + 1,
            Some((_, Some(nulls))) if nulls.is_null(row) => 0..0,
            Some((offsets, _)) => offsets[row] as usize..offsets[row + 1] as usize,
        }
    }
}

/// The buffers of one `MapArray`.
struct Maps<'a> {
    offsets: &'a [i32],
    nulls: Option<&'a NullBuffer>,
    keys: Strings<'a>,
    values: Strings<'a>,
}

impl<'a> Maps<'a> {
    fn new(map: &'a MapArray) -> DfResult<Self> {
        Ok(Maps {
            offsets: map.value_offsets(),
            nulls: map.nulls(),
            keys: Strings::new(map.keys())?,
            values: Strings::new(map.values())?,
        })
    }

    /// The value of the first entry with `key` in map `index`: `None` when absent,
    /// `Some(None)` when present with an empty value.
    fn first_value(&self, index: usize, key: &str) -> Option<Option<&'a str>> {
        if self.nulls.is_some_and(|n| n.is_null(index)) {
            return None;
        }
        let entries = self.offsets[index] as usize..self.offsets[index + 1] as usize;
        entries
            .into_iter()
            .find(|&entry| self.keys.get(entry) == Some(key))
            .map(|entry| self.values.get(entry))
    }
}

/// A string column in any of Arrow's three layouts (Parquet reads may yield views).
enum Strings<'a> {
    Utf8(&'a arrow::array::StringArray),
    Large(&'a arrow::array::LargeStringArray),
    View(&'a arrow::array::StringViewArray),
}

impl<'a> Strings<'a> {
    fn new(array: &'a ArrayRef) -> DfResult<Self> {
        Ok(match array.data_type() {
            DataType::Utf8 => Strings::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Strings::Large(array.as_string::<i64>()),
            DataType::Utf8View => Strings::View(array.as_string_view()),
            other => return exec_err!("weft_attribute_match: map of {other}, not strings"),
        })
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strings::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::RecordBatch;
    use datafusion::prelude::SessionContext;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value::Value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn text(s: &str) -> Value {
        Value::StringValue(s.into())
    }

    /// Span `n` (span id n) with the given lists; every span has one resource and scope.
    fn span(
        n: u8,
        attributes: Vec<KeyValue>,
        events: Vec<Vec<KeyValue>>,
        links: Vec<Vec<KeyValue>>,
    ) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![0, 0, 0, 0, 0, 0, 0, n],
            name: format!("span-{n}"),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes,
            events: events
                .into_iter()
                .map(|attributes| span::Event {
                    time_unix_nano: 1_500,
                    name: "e".into(),
                    attributes,
                    ..Default::default()
                })
                .collect(),
            links: links
                .into_iter()
                .map(|attributes| span::Link {
                    trace_id: vec![2; 16],
                    span_id: vec![3; 8],
                    attributes,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn batch(resource: Vec<KeyValue>, scope: Vec<KeyValue>, spans: Vec<Span>) -> RecordBatch {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        attributes: scope,
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let converted = weft_schemas::spans::from_otlp(&request);
        assert_eq!(converted.rejected, 0);
        converted.batch
    }

    /// Span names (in row order) that the condition selects, evaluated by DataFusion.
    async fn selected(batch: &RecordBatch, condition: &str, scope: AttributeScope) -> Vec<String> {
        let condition = AttributeCondition::parse(scope, condition).unwrap();
        let ctx = SessionContext::new();
        let rows = ctx
            .read_batch(batch.clone())
            .unwrap()
            .filter(condition.expr())
            .unwrap()
            .select(vec![col(columns::SPAN_NAME)])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut names = Vec::new();
        for b in rows {
            let names_col = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            names.extend(
                names_col
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap().to_owned()),
            );
        }
        names
    }

    fn typed_batch() -> RecordBatch {
        batch(
            vec![kv("service.name", text("svc")), kv("region", text("eu"))],
            vec![],
            vec![
                span(
                    1,
                    vec![
                        kv("http.route", text("/cart")),
                        kv("code", Value::IntValue(500)),
                        kv("ratio", Value::DoubleValue(72.5)),
                        kv("ok", Value::BoolValue(true)),
                        kv("big", Value::IntValue(9_007_199_254_740_993)),
                    ],
                    vec![],
                    vec![],
                ),
                span(
                    2,
                    vec![
                        kv("http.route", text("/home")),
                        kv("code", Value::IntValue(200)),
                        kv("code", Value::IntValue(500)),
                        kv("empty", Value::StringValue(String::new())),
                        kv("nothing", Value::BytesValue(vec![])),
                    ],
                    vec![],
                    vec![],
                ),
                span(
                    3,
                    vec![
                        kv("code", text("not a number")),
                        KeyValue {
                            key: "novalue".into(),
                            ..Default::default()
                        },
                    ],
                    vec![],
                    vec![],
                ),
            ],
        )
    }

    #[tokio::test]
    async fn typed_comparisons_follow_the_stored_rendering() {
        let b = typed_batch();
        let span = AttributeScope::Span;
        assert_eq!(selected(&b, "http.route=/cart", span).await, ["span-1"]);
        assert_eq!(selected(&b, "http.route!=/cart", span).await, ["span-2"]);
        // Only the first `code` of span 2 counts (200), as in pcommon.Map.Get.
        assert_eq!(selected(&b, "code=500", span).await, ["span-1"]);
        assert_eq!(selected(&b, "code>=200", span).await, ["span-1", "span-2"]);
        assert_eq!(selected(&b, "code<500", span).await, ["span-2"]);
        assert_eq!(selected(&b, "code > 499.5", span).await, ["span-1"]);
        // A non-numeric value never satisfies a numeric comparison, but is not equal either.
        assert_eq!(selected(&b, "code!=500", span).await, ["span-2", "span-3"]);
        assert_eq!(
            selected(&b, r#"code="not a number""#, span).await,
            ["span-3"]
        );
        assert_eq!(selected(&b, "ratio=72.5", span).await, ["span-1"]);
        assert_eq!(selected(&b, "ratio<=72.5", span).await, ["span-1"]);
        assert_eq!(selected(&b, "ok=true", span).await, ["span-1"]);
        // Integers compare exactly beyond 2^53.
        assert_eq!(selected(&b, "big=9007199254740993", span).await, ["span-1"]);
        assert!(selected(&b, "big=9007199254740992", span).await.is_empty());
        assert_eq!(selected(&b, r#"empty="""#, span).await, ["span-2"]);
        assert_eq!(selected(&b, "nothing", span).await, ["span-2"]);
        // Present without a value: exists, equals nothing, differs from everything.
        assert_eq!(selected(&b, "novalue", span).await, ["span-3"]);
        assert!(selected(&b, "novalue=x", span).await.is_empty());
        assert_eq!(selected(&b, "novalue!=x", span).await, ["span-3"]);
        // Span scope does not see resource attributes; resource scope does.
        assert!(selected(&b, "region=eu", span).await.is_empty());
        let resource = AttributeScope::Resource;
        assert_eq!(selected(&b, "region=eu", resource).await.len(), 3);
        assert_eq!(selected(&b, "service.name=svc", resource).await.len(), 3);
        assert!(
            selected(&b, "service.name=other", resource)
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn anywhere_looks_in_every_list_of_the_same_span() {
        let b = batch(
            vec![
                kv("service.name", text("svc")),
                kv("in_resource", text("r")),
            ],
            vec![kv("in_scope", Value::IntValue(7))],
            vec![
                span(
                    1,
                    vec![kv("in_span", Value::BoolValue(true))],
                    vec![vec![], vec![kv("in_event", Value::DoubleValue(1.5))]],
                    vec![],
                ),
                span(2, vec![], vec![], vec![vec![kv("in_link", text("l"))]]),
            ],
        );
        let any = AttributeScope::Anywhere;
        assert_eq!(selected(&b, "in_span=true", any).await, ["span-1"]);
        assert_eq!(selected(&b, "in_event=1.5", any).await, ["span-1"]);
        assert_eq!(selected(&b, "in_event>1", any).await, ["span-1"]);
        assert_eq!(selected(&b, "in_link=l", any).await, ["span-2"]);
        assert_eq!(selected(&b, "in_scope=7", any).await, ["span-1", "span-2"]);
        assert_eq!(
            selected(&b, "in_resource=r", any).await,
            ["span-1", "span-2"]
        );
        assert!(selected(&b, "in_link=x", any).await.is_empty());
        assert!(
            selected(&b, "in_event", AttributeScope::Span)
                .await
                .is_empty()
        );
    }

    #[test]
    fn conditions_parse_from_text() {
        use AttributeOp::*;
        let parse = |t: &str| AttributeCondition::parse(AttributeScope::Span, t).unwrap();
        assert_eq!(parse("a.b").op, Exists);
        assert_eq!(parse(" http.route = /x").key, "http.route");
        assert_eq!(parse("k=/x").op, Eq(AttributeValue::Text("/x".into())));
        assert_eq!(
            parse("k=12").op,
            Eq(AttributeValue::Number(Number::parse("12").unwrap()))
        );
        assert_eq!(parse(r#"k="12""#).op, Eq(AttributeValue::Text("12".into())));
        assert_eq!(parse("k!=a=b").op, Ne(AttributeValue::Text("a=b".into())));
        assert_eq!(parse("k>=1.5").op, Ge(Number::parse("1.5").unwrap()));
        assert_eq!(parse("k<-3").op, Lt(Number::parse("-3").unwrap()));
        for bad in ["", "=x", "k>abc", "k<", "k!x", " <= 3"] {
            assert!(
                AttributeCondition::parse(AttributeScope::Span, bad).is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn promoted_columns_prefilter_only_when_exact() {
        let cond = |scope, t: &str| AttributeCondition::parse(scope, t).unwrap();
        let span = AttributeScope::Span;
        let route = cond(span, "http.route=/api/users/{id}").promoted_equality();
        assert_eq!(
            route,
            Some(col(columns::HTTP_ROUTE).eq(lit("/api/users/{id}")))
        );
        // Text an int, bool or bytes value could render to: the map decides alone.
        assert_eq!(cond(span, r#"http.route="5""#).promoted_equality(), None);
        assert_eq!(cond(span, "http.route=true").promoted_equality(), None);
        assert_eq!(cond(span, "http.route=/abc").promoted_equality(), None);
        // Fallback keys and other operators never use the promoted column.
        assert_eq!(cond(span, "http.method=GET").promoted_equality(), None);
        assert_eq!(cond(span, "http.route!=/x").promoted_equality(), None);
        let resource = AttributeScope::Resource;
        assert!(
            cond(resource, "k8s.pod.name=web-1")
                .promoted_equality()
                .is_some()
        );
        assert!(
            cond(resource, "service.name=cart-svc")
                .promoted_equality()
                .is_some()
        );
        // Four letters are valid base64: a bytes value could render to them.
        assert_eq!(
            cond(resource, "service.name=cart").promoted_equality(),
            None
        );
        assert_eq!(
            cond(resource, "service.name=unknown_service").promoted_equality(),
            None
        );
        assert_eq!(
            cond(AttributeScope::Anywhere, "http.route=/x1").promoted_equality(),
            None
        );
    }

    #[test]
    fn base64_detection_is_conservative() {
        assert!(is_padded_base64("AAAwOQ=="));
        assert!(is_padded_base64(""));
        assert!(is_padded_base64("/abc"));
        assert!(!is_padded_base64("/ab"));
        assert!(!is_padded_base64("a==="));
        assert!(!is_padded_base64("ab c"));
    }
}
