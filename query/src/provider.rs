//! A DataFusion table over one Weft table: its committed Parquet files plus the rows the
//! collector holds in memory, read from one consistent snapshot per scan.
//!
//! ```text
//!  scan(filters) ─> Collector::snapshot(table)
//!       ├─ files ─> DataSourceExec(Parquet: predicate -> row-group stats, bloom filters,
//!       │                          page index, late materialisation)
//!       └─ live  ─> DataSourceExec(memory)
//!  ─> UnionExec  (FilterExec above it re-applies every filter: pushdown is "inexact")
//! ```

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use weft_collector::Collector;
use weft_schemas::Table;

/// See the module docs.
#[derive(Debug)]
pub struct WeftTable {
    table: Table,
    collector: Arc<Collector>,
}

impl WeftTable {
    pub fn new(table: Table, collector: Arc<Collector>) -> Self {
        Self { table, collector }
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
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.table.schema();
        let snapshot = self.collector.snapshot(self.table);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        if !snapshot.files.is_empty() {
            let data_dir = self.collector.store().data_dir();
            let mut source = ParquetSource::new(schema.clone())
                .with_enable_page_index(true)
                .with_bloom_filter_on_read(true)
                .with_pushdown_filters(true);
            if let Some(filter) = conjunction(filters.to_vec()) {
                let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
                let predicate = state.create_physical_expr(filter, &df_schema)?;
                source = source.with_predicate(predicate);
            }
            let files = snapshot
                .files
                .iter()
                .map(|f| partitioned_file(data_dir, &f.path, f.bytes))
                .collect::<DfResult<Vec<_>>>()?;
            let groups = split_into_groups(files, state.config().target_partitions());
            let config =
                FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                    .with_file_groups(groups)
                    .with_projection_indices(projection.cloned())?
                    .with_limit(limit)
                    .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        if !snapshot.live.is_empty() || inputs.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[snapshot.live],
                schema,
                projection.cloned(),
            )?);
        }
        UnionExec::try_new(inputs)
    }
}

fn partitioned_file(data_dir: &Path, relative: &str, size: u64) -> DfResult<PartitionedFile> {
    let absolute = data_dir.join(relative);
    let location = object_store::path::Path::from_absolute_path(&absolute)
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
