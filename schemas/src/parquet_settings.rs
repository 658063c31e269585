//! The one place that holds every Parquet writer setting Weft uses.
//!
//! What a written file looks like, and why:
//!
//! * **zstd** (level 3 by default): close to the best ratio for this data at a write speed the
//!   collector can sustain.
//! * **Page-level statistics**, so the column index and offset index (the *page index*) are
//!   written: a query can skip pages, not only row groups. With rows sorted by
//!   [`Table::sort_columns`], a trace id or a series maps to a few pages.
//! * **Bloom filter on `spans.trace_id` only**, sized from the expected number of rows: each
//!   file covers the whole random id space, so min/max statistics cannot rule a file out for a
//!   trace-id lookup, and the bloom filter can. No other column gets one (they are either
//!   sorted, low-cardinality or never looked up by exact value).
//! * **Dictionary encoding on string columns** (names, attribute keys and values, URLs: low
//!   cardinality, and parquet-rs falls back to plain per column chunk when a dictionary
//!   outgrows its page) and on a few small enum-like integers; not on ids, times or measured
//!   values, where it only costs. Format version 2 so those get DELTA_BINARY_PACKED.
//! * `sorting_columns` metadata = [`Table::sort_columns`]. The writer does not sort: callers
//!   must sort each batch (and the file) in that order before writing.
//! * Key-value metadata `weft.schema_version` = [`crate::SCHEMA_VERSION`] and `weft.table`.

use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::columns::*;
use crate::{Error, Result, SCHEMA_VERSION, Table};

/// Key-value metadata key holding [`SCHEMA_VERSION`].
pub const SCHEMA_VERSION_KEY: &str = "weft.schema_version";
/// Key-value metadata key holding [`Table::name`].
pub const TABLE_KEY: &str = "weft.table";

/// Tunable Parquet writer settings (config section). Every field has a default, so a config
/// only names what it changes.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetSettings {
    /// zstd compression level, 1..=22. Default 3.
    pub zstd_level: i32,
    /// Maximum rows per row group. Default 1 048 576 (parquet-rs's default): a typical
    /// collector file then holds one row group, so a trace-id lookup probes one bloom filter
    /// per file, while the page index keeps pruning fine-grained inside the row group.
    pub max_row_group_rows: usize,
    /// Target (uncompressed) data page size. Default 256 KiB, a quarter of parquet-rs's
    /// default: a point lookup (one trace, one series) decodes less per column, and the page
    /// index stays small (a few hundred KiB per million rows).
    pub data_page_size_bytes: usize,
    /// Maximum rows per data page. Default 10 000, for the same reason.
    pub data_page_row_count_limit: usize,
    /// Dictionary page size limit; past it a column chunk falls back to plain encoding.
    /// Default 1 MiB.
    pub dictionary_page_size_bytes: usize,
    /// Target false-positive probability of the `trace_id` bloom filter, in (0, 1).
    /// Default 0.01 (about 1.2 MB of filter per million distinct trace ids).
    pub bloom_filter_fpp: f64,
    /// Maximum length of min/max values kept in statistics and the column index (long
    /// attribute values would otherwise bloat the footer). Default 64 bytes.
    pub statistics_truncate_length: usize,
}

impl Default for ParquetSettings {
    fn default() -> Self {
        Self {
            zstd_level: 3,
            max_row_group_rows: 1024 * 1024,
            data_page_size_bytes: 256 * 1024,
            data_page_row_count_limit: 10_000,
            dictionary_page_size_bytes: 1024 * 1024,
            bloom_filter_fpp: 0.01,
            statistics_truncate_length: 64,
        }
    }
}

impl ParquetSettings {
    /// Checks every value is in range; call when loading configuration.
    /// [`writer_properties`] never panics, falling back to defaults for out-of-range values.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::InvalidSettings(m));
        if ZstdLevel::try_new(self.zstd_level).is_err() {
            return fail(format!("zstd_level {} not in 1..=22", self.zstd_level));
        }
        if !(self.bloom_filter_fpp > 0.0 && self.bloom_filter_fpp < 1.0) {
            return fail(format!(
                "bloom_filter_fpp {} not in (0, 1)",
                self.bloom_filter_fpp
            ));
        }
        for (name, v) in [
            ("max_row_group_rows", self.max_row_group_rows),
            ("data_page_size_bytes", self.data_page_size_bytes),
            ("data_page_row_count_limit", self.data_page_row_count_limit),
            (
                "dictionary_page_size_bytes",
                self.dictionary_page_size_bytes,
            ),
            (
                "statistics_truncate_length",
                self.statistics_truncate_length,
            ),
        ] {
            if v == 0 {
                return fail(format!("{name} must be positive"));
            }
        }
        Ok(())
    }
}

/// Small integer columns worth a dictionary (few distinct values per chunk).
const DICTIONARY_INTS: &[&str] = &[
    KIND,
    STATUS_CODE,
    FLAGS,
    HTTP_STATUS_CODE,
    METRIC_TYPE,
    AGGREGATION_TEMPORALITY,
];

/// Random fixed-width ids: plain is smallest (delta/dictionary only add overhead).
const PLAIN_IDS: &[&str] = &[SPAN_ID, PARENT_SPAN_ID];

/// Writer properties for a file of `table` expected to hold about `expected_rows` rows
/// (sizes the bloom filter; pass the batch's row count, or an estimate, when unknown).
pub fn writer_properties(
    table: Table,
    settings: &ParquetSettings,
    expected_rows: u64,
) -> WriterProperties {
    let defaults = ParquetSettings::default();
    let positive = |v: usize, d: usize| if v == 0 { d } else { v };
    let zstd = ZstdLevel::try_new(settings.zstd_level).unwrap_or_default();
    let max_rows = positive(settings.max_row_group_rows, defaults.max_row_group_rows);
    let fpp = if settings.bloom_filter_fpp > 0.0 && settings.bloom_filter_fpp < 1.0 {
        settings.bloom_filter_fpp
    } else {
        defaults.bloom_filter_fpp
    };

    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(max_rows))
        .set_data_page_size_limit(positive(
            settings.data_page_size_bytes,
            defaults.data_page_size_bytes,
        ))
        .set_data_page_row_count_limit(positive(
            settings.data_page_row_count_limit,
            defaults.data_page_row_count_limit,
        ))
        .set_dictionary_page_size_limit(positive(
            settings.dictionary_page_size_bytes,
            defaults.dictionary_page_size_bytes,
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_statistics_truncate_length(Some(positive(
            settings.statistics_truncate_length,
            defaults.statistics_truncate_length,
        )))
        .set_column_index_truncate_length(Some(positive(
            settings.statistics_truncate_length,
            defaults.statistics_truncate_length,
        )))
        .set_dictionary_enabled(false)
        .set_bloom_filter_enabled(false)
        .set_key_value_metadata(Some(vec![
            KeyValue::new(SCHEMA_VERSION_KEY.to_owned(), SCHEMA_VERSION.to_string()),
            KeyValue::new(TABLE_KEY.to_owned(), table.name().to_owned()),
        ]));

    // Leaf columns come from the same Arrow -> Parquet mapping the writer uses, so nested
    // paths (`attributes.entries.keys`, `events.list.element.name`, …) are exactly right.
    match parquet::arrow::ArrowSchemaConverter::new().convert(&table.schema()) {
        Ok(descr) => {
            for col in descr.columns() {
                let path = col.path().clone();
                let top = path.parts().first().map(String::as_str).unwrap_or_default();
                let is_string = col.physical_type() == parquet::basic::Type::BYTE_ARRAY;
                if is_string || (path.parts().len() == 1 && DICTIONARY_INTS.contains(&top)) {
                    b = b.set_column_dictionary_enabled(path.clone(), true);
                }
                if col.physical_type() == parquet::basic::Type::FIXED_LEN_BYTE_ARRAY
                    && (PLAIN_IDS.contains(&top) || path.parts().len() > 1)
                {
                    b = b.set_column_encoding(path, Encoding::PLAIN);
                }
            }
            let sorting: Vec<SortingColumn> = table
                .sort_columns()
                .iter()
                .filter_map(|name| {
                    let idx = descr
                        .columns()
                        .iter()
                        .position(|c| c.path().parts() == [name.to_string()])?;
                    Some(SortingColumn {
                        column_idx: i32::try_from(idx).ok()?,
                        descending: false,
                        nulls_first: false,
                    })
                })
                .collect();
            debug_assert_eq!(sorting.len(), table.sort_columns().len());
            b = b.set_sorting_columns(Some(sorting));
        }
        Err(e) => debug_assert!(false, "table schema does not convert to parquet: {e}"),
    }

    if table == Table::Spans {
        let trace_id = ColumnPath::from(TRACE_ID);
        // Bloom filters are per row group, and a row group never has more distinct trace ids
        // than rows. parquet-rs folds an oversized filter down once it has seen the data.
        let ndv = expected_rows.clamp(1, max_rows as u64);
        b = b
            .set_column_bloom_filter_enabled(trace_id.clone(), true)
            .set_column_bloom_filter_fpp(trace_id.clone(), fpp)
            .set_column_bloom_filter_max_ndv(trace_id, ndv);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_config_is_strict() {
        ParquetSettings::default().validate().unwrap();
        let s: ParquetSettings = serde_json::from_str(r#"{"zstd_level": 5}"#).unwrap();
        assert_eq!(s.zstd_level, 5);
        assert_eq!(s.bloom_filter_fpp, 0.01);
        assert!(serde_json::from_str::<ParquetSettings>(r#"{"zstd": 5}"#).is_err());
        for bad in [
            ParquetSettings {
                zstd_level: 40,
                ..Default::default()
            },
            ParquetSettings {
                bloom_filter_fpp: 1.0,
                ..Default::default()
            },
            ParquetSettings {
                max_row_group_rows: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err());
            // Still usable: out-of-range values fall back to defaults instead of panicking.
            let _ = writer_properties(Table::Spans, &bad, 0);
        }
    }

    #[test]
    fn properties_per_table() {
        let s = ParquetSettings::default();
        let p = writer_properties(Table::Spans, &s, 5_000);
        let trace_id = ColumnPath::from(TRACE_ID);
        let bloom = p.bloom_filter_properties(&trace_id).unwrap();
        assert_eq!((bloom.fpp(), bloom.ndv()), (0.01, 5_000));
        assert!(
            p.bloom_filter_properties(&ColumnPath::from(SPAN_ID))
                .is_none()
        );
        assert!(matches!(p.compression(&trace_id), Compression::ZSTD(_)));
        assert_eq!(p.statistics_enabled(&trace_id), EnabledStatistics::Page);
        assert!(!p.dictionary_enabled(&trace_id));
        assert!(p.dictionary_enabled(&ColumnPath::from(SPAN_NAME)));
        assert!(p.dictionary_enabled(&ColumnPath::from(vec![
            ATTRIBUTES.to_string(),
            "entries".to_string(),
            "keys".to_string()
        ])));
        let sorting = p.sorting_columns().unwrap();
        assert_eq!(sorting.len(), 2);
        assert_eq!(sorting[0].column_idx, 0);
        assert_eq!(sorting[1].column_idx, 8); // start_time is the 9th leaf
        let kv = p.key_value_metadata().unwrap();
        assert!(
            kv.iter()
                .any(|k| k.key == SCHEMA_VERSION_KEY && k.value.as_deref() == Some("1"))
        );

        let m = writer_properties(Table::Metrics, &s, 5_000);
        assert!(
            m.bloom_filter_properties(&ColumnPath::from(TRACE_ID))
                .is_none()
        );
        assert_eq!(m.sorting_columns().unwrap().len(), 4);
    }
}
