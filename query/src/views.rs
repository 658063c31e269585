//! Documented SQL views over the base tables, registered in every query session (HTTP SQL,
//! Postgres wire protocol, the viewer), so common questions need no hand-written joins.
//!
//! ```text
//!  VIEWS (name, SQL text; parsed once per process) ──┐
//!                                                    ▼
//!  QueryService::session() ─> tables spans, metrics ─> views::register(ctx)
//!        plan each view's SQL against this session's tables (logical plan only, no I/O)
//!        ─> ViewTable(plan): a query that names a view gets the plan inlined, so the
//!           optimizer pushes its filters and projections down into the base-table scans
//! ```
//!
//! Names and columns are a stable interface (documented in `docs/sql.md`); add columns at
//! the end, never rename. Every string column is plain `Utf8` (not the dictionary type of
//! the base tables) so clients see ordinary text.
//!
//! | view | one row per | columns |
//! | --- | --- | --- |
//! | `traces` | trace | `trace_id`, `start_time`, `end_time`, `duration_ns`, `root_service`, `root_operation`, `span_count`, `error_count`, `services`, `sample_weight` |
//! | `span_edges` | parent → child span pair whose services differ | `time`, `trace_id`, `parent_service`, `parent_operation`, `child_service`, `child_operation`, `child_kind`, `duration_ns`, `is_error`, `sample_weight` |
//! | `latency` | service, operation and minute | `minute`, `service`, `operation`, `count`, `errors`, `p50_ns`, `p95_ns`, `p99_ns`, `max_ns` |
//! | `metric_points` | metric data point | `time`, `start_time`, `metric_name`, `metric_type`, `unit`, `service_name`, `attributes`, `value`, `count`, `sum`, `min`, `max`, `temporality`, `is_monotonic`, `series_id` |
//!
//! - `traces`: the root is the span without a parent; a trace whose root has not arrived
//!   (or was never sent) takes its earliest span instead. `end_time` is the latest span
//!   end, `duration_ns = end_time - start_time`. `services` is the sorted distinct list.
//!   `sample_weight` is the trace's adjusted count (the largest of its spans'; tail
//!   sampling gives every span of a trace the same one), so `SUM(sample_weight)` estimates
//!   how many traces there were before sampling.
//!   An error is a span with status code 2 (`STATUS_CODE_ERROR`).
//! - `span_edges` is a plain self-join of `spans` on (trace_id, parent_span_id = span_id):
//!   fine for a time window, but for large ranges the `service_graph(...)` table function
//!   is faster. `time` and `duration_ns` are the child's; `child_kind` is the OTLP
//!   `SpanKind` number (2 server, 3 client, 4 producer, 5 consumer).
//! - `latency`: `count` and `errors` are sums of `sample_weight` (unbiased under
//!   sampling); the percentiles (doubles, in ns) are t-digest estimates weighted the same
//!   way; `max_ns` is exact.
//! - `metric_points`: `value` is the gauge or sum value as a double (integer points
//!   converted); `count`/`sum`/`min`/`max` are set for histograms and summaries.
//!   `metric_type` is `gauge`, `sum`, `histogram`, `exponential_histogram` or `summary`;
//!   `temporality` is `delta`, `cumulative` or null.

use std::sync::{Arc, LazyLock};

use datafusion::catalog::view::ViewTable;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement;

use crate::{Error, Result};

/// `(name, SQL)` of every view. The SQL only names base tables, never another view, so the
/// views can be planned in any order.
pub const VIEWS: [(&str, &str); 4] = [
    (
        "traces",
        "SELECT trace_id,
            min(start_time) AS start_time,
            arrow_cast(max(arrow_cast(start_time, 'Int64') + duration_ns),
                       'Timestamp(Nanosecond, Some(\"UTC\"))') AS end_time,
            max(arrow_cast(start_time, 'Int64') + duration_ns)
                - arrow_cast(min(start_time), 'Int64') AS duration_ns,
            first_value(arrow_cast(service_name, 'Utf8')
                ORDER BY parent_span_id IS NOT NULL, start_time) AS root_service,
            first_value(arrow_cast(span_name, 'Utf8')
                ORDER BY parent_span_id IS NOT NULL, start_time) AS root_operation,
            count(*) AS span_count,
            sum(CASE WHEN status_code = 2 THEN 1 ELSE 0 END) AS error_count,
            array_sort(array_agg(DISTINCT arrow_cast(service_name, 'Utf8'))) AS services,
            max(sample_weight) AS sample_weight
         FROM spans
         GROUP BY trace_id",
    ),
    (
        "span_edges",
        "SELECT c.start_time AS time,
            c.trace_id,
            arrow_cast(p.service_name, 'Utf8') AS parent_service,
            arrow_cast(p.span_name, 'Utf8') AS parent_operation,
            arrow_cast(c.service_name, 'Utf8') AS child_service,
            arrow_cast(c.span_name, 'Utf8') AS child_operation,
            c.kind AS child_kind,
            c.duration_ns,
            c.status_code = 2 AS is_error,
            c.sample_weight
         FROM spans c
         JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
         WHERE c.service_name <> p.service_name",
    ),
    (
        "latency",
        "SELECT date_trunc('minute', start_time) AS minute,
            arrow_cast(service_name, 'Utf8') AS service,
            arrow_cast(span_name, 'Utf8') AS operation,
            sum(sample_weight) AS count,
            sum(CASE WHEN status_code = 2 THEN sample_weight ELSE 0.0 END) AS errors,
            approx_percentile_cont_with_weight(sample_weight, 0.5)
                WITHIN GROUP (ORDER BY duration_ns) AS p50_ns,
            approx_percentile_cont_with_weight(sample_weight, 0.95)
                WITHIN GROUP (ORDER BY duration_ns) AS p95_ns,
            approx_percentile_cont_with_weight(sample_weight, 0.99)
                WITHIN GROUP (ORDER BY duration_ns) AS p99_ns,
            max(duration_ns) AS max_ns
         FROM spans
         GROUP BY 1, 2, 3",
    ),
    (
        "metric_points",
        "SELECT time,
            start_time,
            arrow_cast(metric_name, 'Utf8') AS metric_name,
            CASE metric_type
                WHEN 1 THEN 'gauge' WHEN 2 THEN 'sum' WHEN 3 THEN 'histogram'
                WHEN 4 THEN 'exponential_histogram' WHEN 5 THEN 'summary' END AS metric_type,
            metric_unit AS unit,
            arrow_cast(service_name, 'Utf8') AS service_name,
            attributes,
            coalesce(value_double, arrow_cast(value_int, 'Float64')) AS value,
            count,
            sum,
            min,
            max,
            CASE aggregation_temporality
                WHEN 1 THEN 'delta' WHEN 2 THEN 'cumulative' END AS temporality,
            is_monotonic,
            series_id
         FROM metrics",
    ),
];

/// The parsed view statements: parsing is pure, so it happens once per process.
static PARSED: LazyLock<Vec<(&'static str, &'static str, Statement)>> = LazyLock::new(|| {
    VIEWS
        .iter()
        .map(|(name, sql)| {
            let mut statements = datafusion::sql::parser::DFParser::parse_sql(sql)
                .unwrap_or_else(|e| panic!("view {name} does not parse: {e}"));
            assert_eq!(statements.len(), 1, "view {name} must be one statement");
            let statement = statements.pop_front().expect("one statement");
            (*name, *sql, statement)
        })
        .collect()
});

/// Registers the views in a query session. Call after the base tables are registered.
pub fn register(ctx: &SessionContext) -> Result<()> {
    let state = ctx.state();
    for (name, sql, statement) in PARSED.iter() {
        // Planning resolves table names through the session's in-memory catalog, which
        // never waits, so the future completes on its first poll; blocking here keeps
        // `session()` synchronous without tying up a runtime thread.
        let plan = futures::executor::block_on(state.statement_to_plan(statement.clone()))
            .map_err(|e| Error::Execution(format!("planning view {name}: {e}")))?;
        ctx.register_table(
            *name,
            Arc::new(ViewTable::new(plan, Some((*sql).to_owned()))),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::RecordBatch;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use datafusion::datasource::MemTable;
    use weft_schemas::Table;

    /// Two traces: `t1` = frontend (root, server) -> backend (error) -> backend (db call),
    /// plus a frontend -> cache edge; `t2` has no root span (its parent never arrived).
    const TRACES: &str = r#"{"resourceSpans":[
      {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"frontend"}}]},
       "scopeSpans":[{"spans":[
        {"traceId":"11111111111111111111111111111111","spanId":"1000000000000001",
         "name":"GET /","kind":2,
         "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000900000000"},
        {"traceId":"22222222222222222222222222222222","spanId":"2000000000000002",
         "parentSpanId":"2000000000000001","name":"late","kind":1,
         "startTimeUnixNano":"1700000100000000000","endTimeUnixNano":"1700000100000000500"}
       ]}]},
      {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"backend"}}]},
       "scopeSpans":[{"spans":[
        {"traceId":"11111111111111111111111111111111","spanId":"1000000000000002",
         "parentSpanId":"1000000000000001","name":"handle","kind":2,
         "startTimeUnixNano":"1700000000100000000","endTimeUnixNano":"1700000000600000000",
         "status":{"code":2}},
        {"traceId":"11111111111111111111111111111111","spanId":"1000000000000003",
         "parentSpanId":"1000000000000002","name":"query","kind":3,
         "startTimeUnixNano":"1700000000200000000","endTimeUnixNano":"1700000000300000000"}
       ]}]},
      {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cache"}}]},
       "scopeSpans":[{"spans":[
        {"traceId":"11111111111111111111111111111111","spanId":"1000000000000004",
         "parentSpanId":"1000000000000001","name":"get","kind":2,
         "startTimeUnixNano":"1700000000050000000","endTimeUnixNano":"1700000001000000000"}
       ]}]}
    ]}"#;

    const METRICS: &str = r#"{"resourceMetrics":[{
      "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
      "scopeMetrics":[{"metrics":[
        {"name":"requests","unit":"1","sum":{"aggregationTemporality":2,"isMonotonic":true,
          "dataPoints":[{"asInt":"7","timeUnixNano":"1700000000000000000",
            "attributes":[{"key":"route","value":{"stringValue":"/a"}}]}]}},
        {"name":"temperature","unit":"Cel","gauge":{"dataPoints":[
          {"asDouble":21.5,"timeUnixNano":"1700000001000000000"}]}},
        {"name":"latency","unit":"ms","histogram":{"aggregationTemporality":1,"dataPoints":[
          {"count":"3","sum":12.5,"bucketCounts":["1","2"],"explicitBounds":[5],
           "timeUnixNano":"1700000002000000000"}]}}
      ]}]}]}"#;

    fn context() -> SessionContext {
        let ctx = SessionContext::new();
        let spans = weft_schemas::otlp_json::decode_traces(TRACES.as_bytes()).unwrap();
        let spans = weft_schemas::spans::from_otlp(&spans);
        assert_eq!(spans.rejected, 0);
        let metrics = weft_schemas::otlp_json::decode_metrics(METRICS.as_bytes()).unwrap();
        let metrics = weft_schemas::metrics::from_otlp(&metrics);
        assert_eq!(metrics.rejected, 0);
        for (table, batch) in [(Table::Spans, spans.batch), (Table::Metrics, metrics.batch)] {
            let mem = MemTable::try_new(table.schema(), vec![vec![batch]]).unwrap();
            ctx.register_table(table.name(), Arc::new(mem)).unwrap();
        }
        for udf in crate::udf::all() {
            ctx.register_udf(udf);
        }
        register(&ctx).unwrap();
        ctx
    }

    /// Rows as `|`-separated display strings, for exact comparison.
    fn rows(batches: &[RecordBatch]) -> Vec<String> {
        let options = FormatOptions::default().with_null("NULL");
        let mut out = Vec::new();
        for batch in batches {
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                let cells: Vec<String> = formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect();
                out.push(cells.join("|"));
            }
        }
        out
    }

    async fn query(ctx: &SessionContext, sql: &str) -> Vec<String> {
        rows(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
    }

    #[tokio::test]
    async fn traces_view() {
        let ctx = context();
        let got = query(
            &ctx,
            "SELECT hex_id(trace_id), start_time, end_time, duration_ns, root_service,
                    root_operation, span_count, error_count, services
             FROM traces ORDER BY start_time",
        )
        .await;
        assert_eq!(
            got,
            vec![
                "11111111111111111111111111111111|2023-11-14T22:13:20Z|2023-11-14T22:13:21Z|\
                 1000000000|frontend|GET /|4|1|[backend, cache, frontend]",
                "22222222222222222222222222222222|2023-11-14T22:15:00Z|\
                 2023-11-14T22:15:00.000000500Z|500|frontend|late|1|0|[frontend]",
            ]
        );
    }

    #[tokio::test]
    async fn span_edges_view() {
        let ctx = context();
        let got = query(
            &ctx,
            "SELECT time, hex_id(trace_id), parent_service, parent_operation, child_service,
                    child_operation, child_kind, duration_ns, is_error, sample_weight
             FROM span_edges ORDER BY time",
        )
        .await;
        // backend -> backend (handle -> query) is inside one service: not an edge.
        assert_eq!(
            got,
            vec![
                "2023-11-14T22:13:20.050Z|11111111111111111111111111111111|frontend|GET /|\
                 cache|get|2|950000000|false|1.0",
                "2023-11-14T22:13:20.100Z|11111111111111111111111111111111|frontend|GET /|\
                 backend|handle|2|500000000|true|1.0",
            ]
        );
    }

    #[tokio::test]
    async fn latency_view() {
        let ctx = context();
        let got = query(
            &ctx,
            "SELECT minute, service, operation, count, errors, p50_ns, p99_ns, max_ns
             FROM latency ORDER BY minute, service, operation",
        )
        .await;
        assert_eq!(
            got,
            vec![
                "2023-11-14T22:13:00Z|backend|handle|1.0|1.0|500000000.0|500000000.0|500000000",
                "2023-11-14T22:13:00Z|backend|query|1.0|0.0|100000000.0|100000000.0|100000000",
                "2023-11-14T22:13:00Z|cache|get|1.0|0.0|950000000.0|950000000.0|950000000",
                "2023-11-14T22:13:00Z|frontend|GET /|1.0|0.0|900000000.0|900000000.0|900000000",
                "2023-11-14T22:15:00Z|frontend|late|1.0|0.0|500.0|500.0|500",
            ]
        );
    }

    #[tokio::test]
    async fn metric_points_view() {
        let ctx = context();
        let got = query(
            &ctx,
            "SELECT time, metric_name, metric_type, unit, service_name, attributes['route'],
                    value, count, sum, temporality, is_monotonic
             FROM metric_points ORDER BY time",
        )
        .await;
        assert_eq!(
            got,
            vec![
                "2023-11-14T22:13:20Z|requests|sum|1|api|/a|7.0|NULL|NULL|cumulative|true",
                "2023-11-14T22:13:21Z|temperature|gauge|Cel|api|NULL|21.5|NULL|NULL|NULL|NULL",
                "2023-11-14T22:13:22Z|latency|histogram|ms|api|NULL|NULL|3|12.5|delta|NULL",
            ]
        );
    }

    /// Filters on a view reach the base table: the plan scans `spans` with the predicate.
    #[tokio::test]
    async fn view_filters_are_pushed_down() {
        let ctx = context();
        let plan = query(
            &ctx,
            "EXPLAIN SELECT count(*) FROM span_edges WHERE time > TIMESTAMP '2030-01-01T00:00:00Z'",
        )
        .await
        .join("\n");
        assert!(plan.contains("start_time > "), "{plan}");
        let none = query(
            &ctx,
            "SELECT count(*) FROM span_edges WHERE time > TIMESTAMP '2030-01-01T00:00:00Z'",
        )
        .await;
        assert_eq!(none, vec!["0"]);
    }
}
