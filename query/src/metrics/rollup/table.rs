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
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use weft_schemas::columns::TIME;

use super::store::{RollupFile, RollupFiles};
use super::{HOUR_NS, Resolution, files_of, fold};
use crate::QueryService;
use datafusion::execution::object_store::ObjectStoreUrl;

use crate::provider::{inexact_pushdown, parquet_files_scan, partitioned_file_at};

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
        inexact_pushdown(filters)
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
        // Rollup files are on the query node's local disk.
        parquet_files_scan(
            state,
            ObjectStoreUrl::local_filesystem(),
            &schema,
            files,
            projection,
            filters,
            limit,
        )
    }
}
