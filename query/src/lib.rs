//! Weft's query service: DataFusion over stored Parquet and the collector's live rows.
//!
//! ```text
//!  POST /api/v1/sql, Postgres wire (pg) ──> read-only check (no DDL / DML / COPY / SET) ─┐
//!  GET  /api/v1/traces/{id} ──> spans WHERE trace_id = id (streamed when huge) ───────────┤
//!  GET  /api/v1/search (search) ──> span conditions ─> candidate traces ─> summaries ─────┤
//!  GET  /api/v1/dependencies[/links] (graph), /api/v1/latency (latency) ─> scan ─> Rust ──┤
//!  GET  /api/v1/latency/slowest (latency::slowest) ──> DataFrame over `spans` ────────────┤
//!  GET  /api/v1/metrics…, …/metrics/heatmap (metrics) ──> DataFrame over `metrics` ───────┤
//!  Jaeger /api/… and /api/v3/… (jaeger) ──> search, trace by id, graph ──────────────────┤
//!                                                                                         ▼
//!   bulkhead: the query runtime (own threads, large stacks), at most
//!   query.max_concurrent_queries at once (else 503), 408 at query.timeout_secs
//!                                                                                         ▼
//!   SQL: size and depth limits on the parsed statement (sql_limits), then planning
//!             per-query SessionContext (own memory pool, no spilling, time limit,
//!             bounded function output: udf::capped)
//!               tables: spans, metrics = provider::WeftTable
//!                          ├─ committed Parquet files (trace id filters in memory, then
//!                          │  Parquet stats, page index, bloom filters)
//!                          └─ live rows not yet flushed (visible as soon as acknowledged)
//!               views: traces, span_edges, latency, metric_points (views)
//!               rollups: metrics_1m, metrics_1h (metrics::rollup: downsampled closed hours)
//!               table functions: service_graph, dependency_links, span_latency
//!                                (range_functions, over graph and latency)
//!  rows ──> JSON (default) | Arrow IPC stream | CSV | Postgres rows;  spans ──> OTLP/JSON
//! ```
//!
//! Where the tables come from ([`DataSource`]):
//!
//! ```text
//!  weft up     DataSource::Local(collector)   provider::WeftTable: Collector::snapshot, in
//!                                             process, one node, no copies to remove
//!  weft query  DataSource::Cluster(source)    cluster::ClusterTable: every collector's
//!                                             snapshot over HTTP (deadline per node) + the
//!                                             node directories on shared storage, copies
//!                                             removed by a sort-merge (see `cluster`)
//! ```
//!
//! A collector that does not answer makes an answer partial, and the answer says so
//! ([`warnings`]: the `x-weft-warnings` header, search's `warnings`, Jaeger's `errors`,
//! Postgres NOTICEs).
//!
//! The answers' TypeScript twins, which the viewer imports, are generated from the Rust
//! types ([`api_types`]).
//!
//! Only Weft's own tables are reachable: no URL tables, no file-reading table functions,
//! no object stores other than the data directory.

pub mod api_types;
pub mod bulkhead;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fuzzing;
pub mod graph;
pub mod http;
pub mod jaeger;
pub mod latency;
pub mod metrics;
pub mod params;
pub mod pg;
pub mod provider;
pub mod range_functions;
pub mod search;
pub mod span_scan;
pub mod sql_limits;
pub mod udf;
pub mod views;
pub mod warnings;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use weft_schemas::Table;
use weft_storage::Store;

pub use bulkhead::Bulkhead;
pub use cluster::ClusterSource;
pub use config::QueryConfig;
pub use error::{Error, Result};

/// Result rows of a SQL query.
#[derive(Debug)]
pub struct SqlResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// More rows existed than `max_result_rows`; they were cut off.
    pub truncated: bool,
    /// What the user must know about this answer, e.g. a collector that did not answer, so
    /// its unflushed rows are missing (see [`warnings`]). Empty on a single node.
    pub warnings: Vec<String>,
}

/// Where a query service's tables come from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// `weft up`: the store of this process's collector (files and live rows in memory).
    Local(Arc<Store>),
    /// `weft query`: the collectors of a cluster and their directories on shared storage.
    Cluster(Arc<ClusterSource>),
}

/// The query service of one process.
pub struct QueryService {
    source: DataSource,
    config: QueryConfig,
    /// Shared by all queries so Parquet footers are read once (metadata cache).
    base_runtime: Arc<RuntimeEnv>,
    /// Where queries run: own threads, bounded concurrency, time limit ([`bulkhead`]).
    bulkhead: Bulkhead,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService")
            .field("config", &self.config)
            .finish()
    }
}

impl QueryService {
    /// One node (`weft up`): tables over the collector's `store` (files and live rows).
    pub fn new(store: Arc<Store>, config: QueryConfig) -> Result<Self> {
        Self::with_source(DataSource::Local(store), config)
    }

    /// A cluster (`weft query`): tables over every collector of `source`, copies removed.
    pub fn new_cluster(source: ClusterSource, config: QueryConfig) -> Result<Self> {
        Self::with_source(DataSource::Cluster(Arc::new(source)), config)
    }

    pub fn with_source(source: DataSource, config: QueryConfig) -> Result<Self> {
        let base_runtime = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let objects = match &source {
            DataSource::Local(store) => store.objects(),
            DataSource::Cluster(cluster) => cluster.objects(),
        };
        provider::register_storage(&base_runtime, Arc::clone(objects.store()))?;
        let bulkhead = Bulkhead::new(&config)?;
        Ok(Self {
            source,
            config,
            base_runtime,
            bulkhead,
        })
    }

    /// Where every query runs (see [`bulkhead`]). HTTP handlers and Postgres statements
    /// enter through [`Bulkhead::run`].
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    pub fn source(&self) -> &DataSource {
        &self.source
    }

    /// A fresh session with Weft's tables and functions and this query's own memory pool.
    /// In a cluster its tables report to the current request's warnings
    /// ([`warnings::collect`], [`warnings::layer`]).
    pub fn session(&self) -> Result<SessionContext> {
        let mut runtime = (*self.base_runtime).clone();
        runtime.memory_pool = Arc::new(TrackConsumersPool::new(
            GreedyMemoryPool::new(self.config.memory_limit_bytes),
            NonZeroUsize::new(3).expect("non-zero"),
        ));
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
        let options = config.options_mut();
        options.execution.parquet.pushdown_filters = true;
        options.execution.parquet.reorder_filters = true;
        options.execution.parquet.bloom_filter_on_read = true;
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(Arc::new(runtime))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(bulkhead::YieldInAmplifyingOperators))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let request = warnings::RequestState::current_or_detached();
        for table in Table::ALL {
            let provider: Arc<dyn datafusion::catalog::TableProvider> = match &self.source {
                DataSource::Local(store) => Arc::new(provider::WeftTable::with_request(
                    table,
                    std::sync::Arc::clone(store),
                    request.clone(),
                )),
                DataSource::Cluster(source) => Arc::new(cluster::ClusterTable::new(
                    table,
                    std::sync::Arc::clone(source),
                    request.clone(),
                )),
            };
            ctx.register_table(table.name(), provider)?;
        }
        for udf in udf::all() {
            ctx.register_udf(udf);
        }
        // Functions that can make large values get a bounded output (after type coercion).
        ctx.add_analyzer_rule(Arc::new(udf::capped::CapFunctions::new(&self.config)));
        range_functions::register(&ctx);
        views::register(&ctx)?;
        metrics::rollup::register(&ctx, self)?;
        Ok(ctx)
    }

    fn read_only() -> SQLOptions {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
    }

    /// Parses `sql`, checks it against the size and depth limits ([`sql_limits`]), plans it
    /// and refuses anything but a read-only query. Every SQL entry point plans through here.
    pub async fn plan_sql(&self, ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
        if sql.len() > self.config.max_sql_bytes {
            return Err(Error::BadRequest(format!(
                "the SQL text is {} bytes, over the limit of {} (query.max_sql_bytes)",
                sql.len(),
                self.config.max_sql_bytes
            )));
        }
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        sql_limits::SqlLimits::from_config(&self.config).check(&statement)?;
        let plan = state.statement_to_plan(statement).await?;
        Self::read_only().verify_plan(&plan)?;
        Ok(ctx.execute_logical_plan(plan).await?)
    }

    /// Runs one read-only SQL statement within the time and memory limits.
    pub async fn sql(&self, sql: &str) -> Result<SqlResult> {
        self.sql_with_params(sql, ParamValues::List(Vec::new()))
            .await
    }

    /// [`QueryService::sql`] with `$n` placeholders bound (the Postgres extended protocol).
    /// Every SQL entry point goes through here, so all get the same limits.
    pub async fn sql_with_params(&self, sql: &str, params: ParamValues) -> Result<SqlResult> {
        let timeout = Duration::from_secs(self.config.timeout_secs);
        let max_rows = self.config.max_result_rows;
        let run = async {
            let first = self.run_sql(sql, params.clone()).await;
            // A committed file may be unreadable: check the files this query read; if one
            // was quarantined, answer from the others (same deadline).
            if let Err(Error::DataUnreadable(_)) = &first
                && let Some(state) = warnings::RequestState::current()
                && state.quarantine_unreadable_scanned().await > 0
            {
                return self.run_sql(sql, params).await;
            }
            first
        };
        let (outcome, warnings) = warnings::collect(tokio::time::timeout(timeout, run)).await;
        let (schema, mut batches) =
            outcome.map_err(|_| Error::Timeout(self.config.timeout_secs))??;
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        let truncated = total > max_rows;
        if truncated {
            let mut keep = max_rows;
            for batch in &mut batches {
                let take = keep.min(batch.num_rows());
                *batch = batch.slice(0, take);
                keep -= take;
            }
            batches.retain(|b| b.num_rows() > 0);
        }
        Ok(SqlResult {
            schema,
            batches,
            truncated,
            warnings,
        })
    }

    async fn run_sql(
        &self,
        sql: &str,
        params: ParamValues,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let max_rows = self.config.max_result_rows;
        let ctx = self.session()?;
        let mut df = self.plan_sql(&ctx, sql).await?;
        if !matches!(&params, ParamValues::List(list) if list.is_empty()) {
            df = df.with_param_values(params)?;
        }
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        // EXPLAIN cannot sit under a LIMIT, and its output is a few rows anyway.
        let explains = matches!(
            df.logical_plan(),
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
        );
        let df = if explains {
            df
        } else {
            df.limit(0, Some(max_rows + 1))?
        };
        // The answer is held whole until it is encoded: count it in the query's pool, so
        // many large values cannot add up past the memory limit.
        let reservation =
            MemoryConsumer::new("sql result").register(&ctx.runtime_env().memory_pool);
        let mut stream = df.execute_stream().await?;
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            reservation.try_grow(batch.get_array_memory_size())?;
            batches.push(batch);
        }
        Ok((schema, batches))
    }

    /// All spans of one trace, ordered by start time, or `None` when no span has that ID.
    /// Collects the whole trace: for traces of any size use [`QueryService::trace_rows`].
    pub async fn trace(&self, trace_id: [u8; 16]) -> Result<Option<Vec<RecordBatch>>> {
        match self.trace_rows(trace_id).await? {
            None => Ok(None),
            Some(TraceRows::Complete(batches)) => Ok(Some(batches)),
            Some(TraceRows::Streaming { head, mut rest, .. }) => {
                let mut batches = head;
                while let Some(batch) = rest.next().await {
                    batches.push(batch?);
                }
                let batch = sort_by_start_time(&batches)?;
                Ok(Some(vec![batch]))
            }
        }
    }

    /// The spans of one trace without a time hint. Parquet statistics, the page index and
    /// bloom filters on `trace_id` skip what cannot match, so one query reads a few pages.
    ///
    /// A trace of at most `trace_sort_max_spans` spans comes back whole and sorted by start
    /// time (one pass). A larger one is streamed in storage order (each file's rows are
    /// sorted by start time within the trace) after a count, so a 100,000-span trace never
    /// sits in memory at once.
    pub async fn trace_rows(&self, trace_id: [u8; 16]) -> Result<Option<TraceRows>> {
        let timeout = Duration::from_secs(self.config.timeout_secs);
        let deadline = tokio::time::Instant::now() + timeout;
        let limit = self.config.trace_sort_max_spans;
        let run = async {
            let mut stream = self.trace_stream(trace_id).await?;
            let mut head = Vec::new();
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows();
                head.push(batch);
                if rows > limit {
                    let span_count = self.trace_span_count(trace_id).await?;
                    return Ok::<_, Error>(Some(TraceRows::Streaming {
                        span_count,
                        head,
                        rest: with_deadline(stream, deadline, self.config.timeout_secs),
                    }));
                }
            }
            if rows == 0 {
                return Ok(None);
            }
            Ok(Some(TraceRows::Complete(vec![sort_by_start_time(&head)?])))
        };
        tokio::time::timeout_at(deadline, run)
            .await
            .map_err(|_| Error::Timeout(self.config.timeout_secs))?
    }

    async fn trace_filter(&self, ctx: &SessionContext, trace_id: [u8; 16]) -> Result<DataFrame> {
        let id = lit(ScalarValue::FixedSizeBinary(16, Some(trace_id.to_vec())));
        Ok(ctx
            .table(Table::Spans.name())
            .await?
            .filter(col(weft_schemas::columns::TRACE_ID).eq(id))?)
    }

    async fn trace_stream(&self, trace_id: [u8; 16]) -> Result<SendableRecordBatchStream> {
        let ctx = self.session()?;
        Ok(self
            .trace_filter(&ctx, trace_id)
            .await?
            .execute_stream()
            .await?)
    }

    async fn trace_span_count(&self, trace_id: [u8; 16]) -> Result<usize> {
        let ctx = self.session()?;
        Ok(self.trace_filter(&ctx, trace_id).await?.count().await?)
    }
}

/// What [`QueryService::trace_rows`] found.
pub enum TraceRows {
    /// The whole trace, sorted by start time.
    Complete(Vec<RecordBatch>),
    /// A large trace: `span_count` spans, of which `head` has been read and `rest` follows.
    Streaming {
        span_count: usize,
        head: Vec<RecordBatch>,
        rest: SendableRecordBatchStream,
    },
}

impl TraceRows {
    pub fn span_count(&self) -> usize {
        match self {
            TraceRows::Complete(batches) => batches.iter().map(|b| b.num_rows()).sum(),
            TraceRows::Streaming { span_count, .. } => *span_count,
        }
    }
}

fn sort_by_start_time(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let batch = arrow::compute::concat_batches(&Table::Spans.schema(), batches)
        .map_err(|e| Error::Execution(e.to_string()))?;
    let start = batch
        .column_by_name(weft_schemas::columns::START_TIME)
        .ok_or_else(|| Error::Execution("spans without start_time".into()))?;
    let order = arrow::compute::sort_to_indices(start, None, None)
        .map_err(|e| Error::Execution(e.to_string()))?;
    arrow::compute::take_record_batch(&batch, &order).map_err(|e| Error::Execution(e.to_string()))
}

/// Ends `stream` with a timeout error once `deadline` passes, so a slow reader of a huge
/// trace cannot hold a scan open for ever.
fn with_deadline(
    stream: SendableRecordBatchStream,
    deadline: tokio::time::Instant,
    timeout_secs: u64,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let limited = futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((
                Err(datafusion::error::DataFusionError::Execution(format!(
                    "trace read did not finish within its time limit of {timeout_secs}s"
                ))),
                None,
            )),
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, limited))
}

/// Parses a trace ID from hex: 32 digits, or 16 for a 64-bit ID (zero-padded on the left,
/// as Zipkin and Jaeger do). The all-zero ID is invalid in OTLP.
pub fn parse_trace_id(text: &str) -> Result<[u8; 16]> {
    let text = text.trim();
    let padded;
    let full = match text.len() {
        32 => text,
        16 => {
            padded = format!("{:0>32}", text);
            &padded
        }
        _ => {
            return Err(Error::BadRequest(format!(
                "trace id {text:?} must be 32 hex digits"
            )));
        }
    };
    let mut id = [0u8; 16];
    hex::decode_to_slice(full, &mut id)
        .map_err(|_| Error::BadRequest(format!("trace id {text:?} is not hex")))?;
    if id == [0u8; 16] {
        return Err(Error::BadRequest("the all-zero trace id is invalid".into()));
    }
    Ok(id)
}

#[cfg(test)]
mod sampling_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_parse_strictly() {
        let id = parse_trace_id("5b8efff798038103d269b633813fc60c").unwrap();
        assert_eq!(id[0], 0x5b);
        let short = parse_trace_id("d269b633813fc60c").unwrap();
        assert_eq!(&short[..8], &[0; 8]);
        assert!(parse_trace_id("00000000000000000000000000000000").is_err());
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id("5b8efff798038103d269b633813fc60g").is_err());
    }

    #[tokio::test]
    async fn explain_and_explain_analyze_run_through_the_sql_path() {
        let dir = tempfile::tempdir().unwrap();
        let collector = weft_collector::Collector::open(weft_collector::CollectorConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap();
        let service = QueryService::new(
            std::sync::Arc::clone(collector.store()),
            QueryConfig::default(),
        )
        .unwrap();
        for sql in [
            "EXPLAIN SELECT count(*) FROM spans",
            "EXPLAIN ANALYZE SELECT count(*) FROM spans",
        ] {
            let result = service.sql(sql).await.unwrap();
            assert_eq!(result.schema.field(0).name(), "plan_type", "{sql}");
            assert!(result.batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
        }
    }
}
