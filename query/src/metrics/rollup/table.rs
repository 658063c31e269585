//! `metrics_1m` and `metrics_1h`: DataFusion tables over the rollup files.
//!
//! ```text
//!  scan(filters) ─> bounds on `time` ─> hour files in range (listed now) ─> Parquet
//!                   (predicate ─> row-group stats, page index; FilterExec above re-applies)
//! ```

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use weft_schemas::columns::TIME;

use super::store::{RollupFile, RollupFiles};
use super::{HOUR_NS, Resolution, files_of, fold};
use crate::QueryService;
use crate::provider::partitioned_file_at;

/// A rollup table: every file of one resolution, or a fixed list (range queries).
#[derive(Debug)]
pub struct RollupTable {
    files: RollupFiles,
    resolution: Resolution,
    fixed: Option<Vec<RollupFile>>,
}

impl RollupTable {
    /// All rollup files of `resolution` of `service`'s storage.
    pub fn new(service: &QueryService, resolution: Resolution) -> Self {
        Self {
            files: files_of(service),
            resolution,
            fixed: None,
        }
    }

    /// Only `files` (already listed).
    pub fn with_files(
        service: &QueryService,
        resolution: Resolution,
        files: Vec<RollupFile>,
    ) -> Self {
        Self {
            files: files_of(service),
            resolution,
            fixed: Some(files),
        }
    }
}

#[async_trait]
impl TableProvider for RollupTable {
    fn schema(&self) -> SchemaRef {
        fold::schema()
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
        let schema = fold::schema();
        let files = match &self.fixed {
            Some(files) => files.clone(),
            None => {
                let (min, max) = crate::cluster::table::time_bounds(filters, TIME);
                let hours = (
                    min.map_or(i64::MIN, |t| t.div_euclid(HOUR_NS)),
                    max.map_or(i64::MAX, |t| t.div_euclid(HOUR_NS)),
                );
                let listing = self.files.clone();
                let resolution = self.resolution;
                tokio::task::spawn_blocking(move || listing.list(resolution, Some(hours)))
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?
            }
        };
        if files.is_empty() {
            return Ok(MemorySourceConfig::try_new_exec(
                &[Vec::new()],
                schema,
                projection.cloned(),
            )?);
        }
        let mut source = ParquetSource::new(std::sync::Arc::clone(&schema))
            .with_enable_page_index(true)
            .with_pushdown_filters(true);
        if let Some(filter) = conjunction(filters.to_vec()) {
            let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(filter, &df_schema)?);
        }
        let files = files
            .iter()
            .map(|f| {
                // The modification time too: the footer cache must never take a new
                // version of a path for an old one.
                let mut file = partitioned_file_at(&f.path, f.bytes)?;
                file.object_meta.last_modified = f.modified.into();
                Ok(file)
            })
            .collect::<DfResult<Vec<_>>>()?;
        let config =
            FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(groups(files, state.config().target_partitions()))
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// Spreads files over `partitions` groups of similar total size.
fn groups(mut files: Vec<PartitionedFile>, partitions: usize) -> Vec<FileGroup> {
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
