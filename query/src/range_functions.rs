//! SQL table functions over a time range (registered in every session; they use both
//! `graph` and `latency`, which is why they live beside them and not inside either):
//!
//! ```text
//!  SELECT * FROM service_graph('2024-01-01T00:00:00Z', '2024-01-02T00:00:00Z')
//!  SELECT * FROM dependency_links(1704067200000000000, 1704153600000000000)
//!  SELECT * FROM span_latency('2024-01-01T00:00:00Z', '2024-01-02T00:00:00Z')
//!     │ planning: arguments read as times in the native grammar
//!     │           (`crate::params`: RFC 3339, unix time; none = the last hour)
//!     ▼
//!  RangeTable::scan ─> graph::compute / latency::operation_rows on the same session's
//!                      `spans` table ─> one RecordBatch ─> memory exec (projection applied)
//! ```
//!
//! The work happens in `scan`, so registering the functions in every session costs nothing
//! and the query's own time and memory limits apply.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::future::BoxFuture;

use crate::Result;
use crate::graph::{Edge, Percentiles, VirtualNode};
use crate::params::{self, TimeRange};

type Compute = for<'a> fn(&'a dyn Session, TimeRange) -> BoxFuture<'a, Result<RecordBatch>>;

/// Registers every range table function in `ctx`.
pub fn register(ctx: &SessionContext) {
    let functions: [(&'static str, SchemaRef, Compute); 3] = [
        ("service_graph", service_graph_schema(), |s, r| {
            Box::pin(service_graph_batch(s, r))
        }),
        ("dependency_links", links_schema(), |s, r| {
            Box::pin(links_batch(s, r))
        }),
        (
            "span_latency",
            crate::latency::operation_schema(),
            |s, r| Box::pin(crate::latency::operation_batch(s, r)),
        ),
    ];
    for (name, schema, compute) in functions {
        ctx.register_udtf(
            name,
            Arc::new(RangeFunction {
                name,
                schema,
                compute,
            }),
        );
    }
}

struct RangeFunction {
    name: &'static str,
    schema: SchemaRef,
    compute: Compute,
}

impl std::fmt::Debug for RangeFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeFunction")
            .field("name", &self.name)
            .finish()
    }
}

impl TableFunctionImpl for RangeFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let range = range_of(self.name, args.exprs())?;
        Ok(Arc::new(RangeTable {
            name: self.name,
            schema: std::sync::Arc::clone(&self.schema),
            compute: self.compute,
            range,
        }))
    }
}

/// `(start, end)` arguments: strings and integers in the native time grammar, or
/// timestamps; none for the last hour, one for "from start until now".
pub(crate) fn range_of(name: &str, args: &[Expr]) -> DfResult<TimeRange> {
    if args.len() > 2 {
        return plan_err!("{name}(start, end) takes at most two arguments");
    }
    let instants: Vec<i64> = args
        .iter()
        .map(|arg| time_arg(name, arg))
        .collect::<DfResult<_>>()?;
    params::range_of_instants(
        ("start", instants.first().copied()),
        ("end", instants.get(1).copied()),
        params::now_ns(),
    )
    .map_err(|e| DataFusionError::Plan(format!("{name}: {e}")))
}

fn time_arg(name: &str, arg: &Expr) -> DfResult<i64> {
    let bad = || {
        plan_err!(
            "{name}(start, end): arguments must be RFC 3339 strings, unix times or \
             timestamps, got {arg}"
        )
    };
    let value = match arg {
        Expr::Literal(value, _) => value,
        // `TIMESTAMP '…'` arrives as a cast of a string literal.
        Expr::Cast(cast) => match &*cast.expr {
            Expr::Literal(value, _) => value,
            _ => return bad(),
        },
        _ => return bad(),
    };
    let text = match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        // Plain numbers read as the same digits would in a URL (see `crate::params`).
        ScalarValue::Int64(Some(n)) => n.to_string(),
        ScalarValue::Int32(Some(n)) => n.to_string(),
        ScalarValue::UInt64(Some(n)) => n.to_string(),
        ScalarValue::TimestampNanosecond(Some(n), _) => return Ok(*n),
        ScalarValue::TimestampMicrosecond(Some(n), _) => return Ok(n.saturating_mul(1_000)),
        ScalarValue::TimestampMillisecond(Some(n), _) => return Ok(n.saturating_mul(1_000_000)),
        ScalarValue::TimestampSecond(Some(n), _) => return Ok(n.saturating_mul(1_000_000_000)),
        _ => return bad(),
    };
    params::parse_instant(name, &text).map_err(|e| DataFusionError::Plan(e.to_string()))
}

/// The table one call of a range function stands for.
struct RangeTable {
    name: &'static str,
    schema: SchemaRef,
    compute: Compute,
    range: TimeRange,
}

impl std::fmt::Debug for RangeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeTable")
            .field("name", &self.name)
            .field("range", &self.range)
            .finish()
    }
}

#[async_trait]
impl TableProvider for RangeTable {
    fn schema(&self) -> SchemaRef {
        std::sync::Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = (self.compute)(state, self.range)
            .await
            .map_err(to_datafusion)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            std::sync::Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

/// Keeps the meaning of an error across DataFusion, so the SQL endpoint answers with the
/// same status as the HTTP APIs would.
fn to_datafusion(error: crate::Error) -> DataFusionError {
    match error {
        crate::Error::BadRequest(m) => DataFusionError::Plan(m),
        crate::Error::ResourcesExhausted(m) => DataFusionError::ResourcesExhausted(m),
        other => DataFusionError::External(Box::new(other)),
    }
}

fn service_graph_schema() -> SchemaRef {
    let ns = |name: &str| Field::new(name, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new("client", DataType::Utf8, false),
        Field::new("server", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("virtual_node", DataType::Utf8, true),
        Field::new("calls", DataType::Float64, false),
        Field::new("errors", DataType::Float64, false),
        ns("client_p50_ns"),
        ns("client_p95_ns"),
        ns("client_p99_ns"),
        ns("server_p50_ns"),
        ns("server_p95_ns"),
        ns("server_p99_ns"),
        Field::new(
            "example_trace_ids",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            false,
        ),
    ]))
}

async fn service_graph_batch(session: &dyn Session, range: TimeRange) -> Result<RecordBatch> {
    let graph = crate::graph::compute(session, range)
        .await?
        .graph(range.start_ns, range.end_ns);
    let edges = &graph.edges;
    let strings = |f: &dyn Fn(&Edge) -> Option<String>| -> ArrayRef {
        Arc::new(edges.iter().map(f).collect::<StringArray>())
    };
    let floats = |f: &dyn Fn(&Edge) -> f64| -> ArrayRef {
        Arc::new(edges.iter().map(f).collect::<Float64Array>())
    };
    let pick =
        |side: fn(&Edge) -> Option<Percentiles>, which: fn(&Percentiles) -> i64| -> ArrayRef {
            Arc::new(
                edges
                    .iter()
                    .map(|e| side(e).as_ref().map(which))
                    .collect::<Int64Array>(),
            )
        };
    let client = |e: &Edge| e.client_latency_ns;
    let server = |e: &Edge| e.server_latency_ns;
    let mut examples = ListBuilder::new(StringBuilder::new());
    for edge in edges {
        for id in &edge.example_trace_ids {
            examples.values().append_value(id);
        }
        examples.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        strings(&|e| Some(e.client.clone())),
        strings(&|e| Some(e.server.clone())),
        strings(&|e| Some(e.kind.as_str().to_owned())),
        strings(&|e| {
            e.virtual_node.map(|v| match v {
                VirtualNode::Client => "client".to_owned(),
                VirtualNode::Server => "server".to_owned(),
            })
        }),
        floats(&|e| e.calls),
        floats(&|e| e.errors),
        pick(client, |p| p.p50),
        pick(client, |p| p.p95),
        pick(client, |p| p.p99),
        pick(server, |p| p.p50),
        pick(server, |p| p.p95),
        pick(server, |p| p.p99),
        Arc::new(examples.finish()),
    ];
    RecordBatch::try_new(service_graph_schema(), columns)
        .map_err(|e| crate::Error::Execution(e.to_string()))
}

fn links_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("parent", DataType::Utf8, false),
        Field::new("child", DataType::Utf8, false),
        Field::new("call_count", DataType::UInt64, false),
    ]))
}

async fn links_batch(session: &dyn Session, range: TimeRange) -> Result<RecordBatch> {
    let links = crate::graph::compute(session, range).await?.links();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            links
                .iter()
                .map(|l| Some(l.parent.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            links
                .iter()
                .map(|l| Some(l.child.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(links.iter().map(|l| l.call_count).collect::<UInt64Array>()),
    ];
    RecordBatch::try_new(links_schema(), columns)
        .map_err(|e| crate::Error::Execution(e.to_string()))
}
