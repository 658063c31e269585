//! A DataFusion table over one Weft table: its committed Parquet files plus the rows the
//! collector holds in memory, read from one consistent snapshot per scan.
//!
//! ```text
//!  scan(filters) ─> Store::snapshot(table)
//!       ├─ files ─> trace_id = X / IN (..)? keep files whose in-memory trace id filter
//!       │           may hold X (weft_storage::trace_index), no I/O for the rest
//!       │        ─> DataSourceExec(Parquet: predicate -> row-group stats, bloom filters,
//!       │                          page index, late materialisation)
//!       └─ live  ─> DataSourceExec(memory)
//!  ─> UnionExec  (FilterExec above it re-applies every filter: pushdown is "inexact")
//! ```
//!
//! Damaged files: the files a scan reads are noted in the request's state; when the request
//! fails they are read completely (once per process) and an unreadable one is quarantined
//! by the store (moved aside, dropped from the manifest, incident recorded), after which SQL
//! retries once and other endpoints answer the next request from the remaining files.
//! Unacknowledged incidents are added to every answer's warnings.
//!
//! The Parquet side of a scan is shared with the cluster's table ([`crate::cluster`]) and
//! the rollup tables ([`crate::metrics::rollup`]): `inexact_pushdown`, `parquet_source`
//! and `parquet_files_scan`.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use datafusion::scalar::ScalarValue;
use weft_schemas::{Table, columns};
use weft_storage::Store;
use weft_storage::incidents::Incidents;

use crate::warnings::RequestState;

/// See the module docs.
#[derive(Debug)]
pub struct WeftTable {
    table: Table,
    store: Arc<Store>,
    request: RequestState,
}

impl WeftTable {
    /// A table whose scans report to the current request (warnings, files read).
    pub fn new(table: Table, store: Arc<Store>) -> Self {
        Self::with_request(table, store, RequestState::current_or_detached())
    }

    pub(crate) fn with_request(table: Table, store: Arc<Store>, request: RequestState) -> Self {
        Self {
            table,
            store,
            request,
        }
    }
}

#[async_trait]
impl TableProvider for WeftTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        inexact_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.table.schema();
        let snapshot = self.store.snapshot(self.table);
        // Damage that may have cost data stays in every answer until acknowledged.
        for incident in self.store.incidents().unacknowledged() {
            self.request.add(Incidents::warning(&incident));
        }
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        let files: Vec<_> = match wanted_trace_ids(filters) {
            Some(ids) => snapshot
                .files
                .iter()
                .filter(|f| match &f.trace_ids {
                    Some(filter) => ids.iter().any(|id| filter.may_contain(id)),
                    None => true,
                })
                .cloned()
                .collect(),
            None => snapshot.files.clone(),
        };
        if !files.is_empty() {
            self.request.note_scanned(&self.store, self.table, &files);
            let files = files
                .iter()
                .map(|f| {
                    let key = self
                        .store
                        .object_key(&f.path)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    Ok(stored_file(key.as_ref(), f.bytes))
                })
                .collect::<DfResult<Vec<_>>>()?;
            inputs.push(parquet_files_scan(
                state,
                storage_url()?,
                &schema,
                files,
                projection,
                filters,
                limit,
            )?);
        }
        if !snapshot.live.is_empty() || inputs.is_empty() {
            // The live rows are few and unsorted: a scan with the predicate above is cheap.
            inputs.push(MemorySourceConfig::try_new_exec(
                &[snapshot.live],
                schema,
                projection.cloned(),
            )?);
        }
        UnionExec::try_new(inputs)
    }
}

/// The trace ids a query is restricted to, when one of its (ANDed) filters is
/// `trace_id = <literal>` or `trace_id IN (<literals>)`.
pub(crate) fn wanted_trace_ids(filters: &[Expr]) -> Option<Vec<Vec<u8>>> {
    fn literal_id(expr: &Expr) -> Option<Vec<u8>> {
        match expr {
            Expr::Literal(ScalarValue::FixedSizeBinary(16, Some(id)), _) => Some(id.clone()),
            _ => None,
        }
    }
    fn is_trace_id(expr: &Expr) -> bool {
        matches!(expr, Expr::Column(c) if c.name == columns::TRACE_ID)
    }
    filters.iter().find_map(|filter| match filter {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if *op == Operator::Eq => {
            if is_trace_id(left) {
                literal_id(right).map(|id| vec![id])
            } else if is_trace_id(right) {
                literal_id(left).map(|id| vec![id])
            } else {
                None
            }
        }
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if is_trace_id(expr) => list.iter().map(literal_id).collect(),
        _ => None,
    })
}

/// Where DataFusion finds Weft's storage: the [`weft_storage::ObjectStorage`] of the
/// process (local disk or an object store) is registered under this URL.
pub(crate) const STORAGE_URL: &str = "weft://storage";

pub(crate) fn storage_url() -> DfResult<ObjectStoreUrl> {
    ObjectStoreUrl::parse(STORAGE_URL)
}

/// Makes `store` the storage that [`STORAGE_URL`] names in sessions over `runtime`.
pub(crate) fn register_storage(
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
    store: Arc<dyn object_store::ObjectStore>,
) -> DfResult<()> {
    runtime.register_object_store(storage_url()?.as_ref(), store);
    Ok(())
}

/// A stored file (object key, size) as DataFusion's scans name it.
pub(crate) fn stored_file(key: &str, size: u64) -> PartitionedFile {
    PartitionedFile::new(key.to_owned(), size)
}

/// Every filter is pushed down as `Inexact`: scans use them to skip files, row groups and
/// pages, and the `FilterExec` DataFusion puts above the scan applies them all again.
pub(crate) fn inexact_pushdown(filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
    Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
}

/// A Parquet source over `schema` that prunes with the ANDed `filters` (row-group
/// statistics, page index, bloom filters) and applies them while decoding.
pub(crate) fn parquet_source(
    state: &dyn Session,
    schema: &SchemaRef,
    filters: &[Expr],
) -> DfResult<ParquetSource> {
    let mut source = ParquetSource::new(Arc::clone(schema))
        .with_enable_page_index(true)
        .with_bloom_filter_on_read(true)
        .with_pushdown_filters(true);
    if let Some(filter) = conjunction(filters.to_vec()) {
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        source = source.with_predicate(state.create_physical_expr(filter, &df_schema)?);
    }
    Ok(source)
}

/// Parquet `files` of `schema` in the object store `store` as one scan
/// ([`parquet_source`]), spread over the session's target partitions by size.
pub(crate) fn parquet_files_scan(
    state: &dyn Session,
    store: ObjectStoreUrl,
    schema: &SchemaRef,
    files: Vec<PartitionedFile>,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let source = parquet_source(state, schema, filters)?;
    let groups = split_into_groups(files, state.config().target_partitions());
    let config = FileScanConfigBuilder::new(store, Arc::new(source))
        .with_file_groups(groups)
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// A file of the local file system (`absolute` path) as DataFusion's scans name it.
pub(crate) fn partitioned_file_at(absolute: &Path, size: u64) -> DfResult<PartitionedFile> {
    let location = object_store::path::Path::from_absolute_path(absolute)
        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    Ok(PartitionedFile::new(location.to_string(), size))
}

/// Spreads files over `partitions` groups of similar total size, so scans run in parallel.
fn split_into_groups(mut files: Vec<PartitionedFile>, partitions: usize) -> Vec<FileGroup> {
    let partitions = partitions.clamp(1, files.len().max(1));
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
    for file in files {
        let smallest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        smallest.0 += file.object_meta.size;
        smallest.1.push(file);
    }
    groups
        .into_iter()
        .filter(|(_, files)| !files.is_empty())
        .map(|(_, files)| FileGroup::new(files))
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use datafusion::physical_plan::displayable;
    use weft_collector::config::{CollectorConfig, SyncPolicy, WalConfig};
    use weft_collector::{Collector, Format};

    use super::*;
    use crate::{QueryConfig, QueryService};

    fn one_span(trace_id: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},
            "scopeSpans":[{{"spans":[{{"traceId":"{trace_id}","spanId":"0102030405060708","name":"op",
            "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000001000"}}]}}]}}]}}"#
        ))
    }

    fn open(dir: &Path) -> Arc<Collector> {
        Collector::open(CollectorConfig {
            data_dir: dir.to_path_buf(),
            wal: WalConfig {
                sync: SyncPolicy::Os,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap()
    }

    /// Parquet files the scan for `trace_id = id` would open.
    async fn files_scanned(collector: &Arc<Collector>, id: &str) -> usize {
        let service = QueryService::new(
            std::sync::Arc::clone(collector.store()),
            QueryConfig::default(),
        )
        .unwrap();
        let ctx = service.session().unwrap();
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(id, &mut bytes).unwrap();
        let filter = datafusion::prelude::col(columns::TRACE_ID).eq(datafusion::prelude::lit(
            ScalarValue::FixedSizeBinary(16, Some(bytes.to_vec())),
        ));
        let table = WeftTable::new(Table::Spans, std::sync::Arc::clone(collector.store()));
        let plan = table
            .scan(&ctx.state(), None, &[filter], None)
            .await
            .unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        text.matches(".parquet").count()
    }

    #[tokio::test]
    async fn trace_lookups_open_only_files_whose_filter_may_hold_the_trace() {
        let dir = tempfile::tempdir().unwrap();
        let first = "11111111111111111111111111111111";
        let second = "22222222222222222222222222222222";
        let collector = open(dir.path());
        for id in [first, second] {
            collector
                .export_traces(one_span(id), Format::Json)
                .await
                .unwrap();
            collector.flush_all().await.unwrap();
        }
        assert_eq!(collector.snapshot(Table::Spans).files.len(), 2);
        assert_eq!(files_scanned(&collector, first).await, 1);
        assert_eq!(
            files_scanned(&collector, "33333333333333333333333333333333").await,
            0
        );
        let service = QueryService::new(
            std::sync::Arc::clone(collector.store()),
            QueryConfig::default(),
        )
        .unwrap();
        let mut id = [0u8; 16];
        hex::decode_to_slice(second, &mut id).unwrap();
        let rows: usize = service
            .trace(id)
            .await
            .unwrap()
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 1);
        drop(service);
        drop(collector);

        // The filters are read back on start; a missing or damaged one is rebuilt from the
        // file's trace ids.
        let collector = open(dir.path());
        assert_eq!(files_scanned(&collector, first).await, 1);
        let file = &collector.snapshot(Table::Spans).files[0];
        assert!(file.trace_ids.as_ref().unwrap().may_contain(&[0x11; 16]));
        let sidecar = dir.path().join(file.path.replace(".parquet", ".tids"));
        let written = std::fs::read(&sidecar).unwrap();
        std::fs::write(&sidecar, &written[..written.len() / 2]).unwrap();
        drop(collector);
        let collector = open(dir.path());
        assert_eq!(files_scanned(&collector, first).await, 1);
        assert_eq!(files_scanned(&collector, second).await, 1);
        assert_eq!(
            std::fs::read(&sidecar).unwrap(),
            written,
            "rebuilt identically"
        );
        std::fs::remove_file(&sidecar).unwrap();
        drop(collector);
        let collector = open(dir.path());
        assert_eq!(files_scanned(&collector, first).await, 1);
        assert_eq!(
            std::fs::read(&sidecar).unwrap(),
            written,
            "rebuilt identically"
        );
        let service = QueryService::new(
            std::sync::Arc::clone(collector.store()),
            QueryConfig::default(),
        )
        .unwrap();
        let mut id = [0u8; 16];
        hex::decode_to_slice(first, &mut id).unwrap();
        assert!(service.trace(id).await.unwrap().is_some());
    }
}
