//! Reading stored metric points back: the histogram columns of the `metrics` table as a
//! [`Hist`] (range queries and rollups both read raw points through this).

use arrow::array::{Array, AsArray, Float64Array, Int32Array, ListArray, RecordBatch, UInt64Array};
use arrow::datatypes::{Float64Type, UInt64Type};
use weft_schemas::columns::*;
use weft_schemas::metrics::metric_type;
use weft_schemas::metrics_algebra::Histogram as Hist;

use crate::{Error, Result};

/// Column `name` of `batch` as array type `T`.
pub(crate) fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Execution(format!("unexpected type of column {name}")))
}

/// The histogram columns of the `metrics` table in a batch (raw range queries, rollups).
pub(crate) struct HistColumns<'a> {
    counts: &'a ListArray,
    bounds: &'a ListArray,
    scale: &'a Int32Array,
    zero_count: &'a UInt64Array,
    zero_threshold: &'a Float64Array,
    pos_offset: &'a Int32Array,
    pos_counts: &'a ListArray,
    neg_offset: &'a Int32Array,
    neg_counts: &'a ListArray,
}

impl<'a> HistColumns<'a> {
    pub(crate) fn new(batch: &'a RecordBatch) -> Result<Self> {
        Ok(Self {
            counts: column(batch, BUCKET_COUNTS)?,
            bounds: column(batch, EXPLICIT_BOUNDS)?,
            scale: column(batch, EXP_SCALE)?,
            zero_count: column(batch, EXP_ZERO_COUNT)?,
            zero_threshold: column(batch, EXP_ZERO_THRESHOLD)?,
            pos_offset: column(batch, EXP_POSITIVE_OFFSET)?,
            pos_counts: column(batch, EXP_POSITIVE_BUCKET_COUNTS)?,
            neg_offset: column(batch, EXP_NEGATIVE_OFFSET)?,
            neg_counts: column(batch, EXP_NEGATIVE_BUCKET_COUNTS)?,
        })
    }

    fn u64s(list: &ListArray, row: usize) -> Vec<u64> {
        if list.is_null(row) {
            return Vec::new();
        }
        list.value(row)
            .as_primitive::<UInt64Type>()
            .values()
            .to_vec()
    }

    /// The histogram of `row` (`None` unless `metric_type` is a histogram).
    pub(crate) fn read(&self, metric_type: i8, row: usize) -> Option<Hist> {
        match metric_type {
            metric_type::HISTOGRAM => {
                let counts = Self::u64s(self.counts, row);
                let bounds = if self.bounds.is_null(row) {
                    Vec::new()
                } else {
                    self.bounds
                        .value(row)
                        .as_primitive::<Float64Type>()
                        .values()
                        .to_vec()
                };
                Some(Hist::explicit(&bounds, &counts))
            }
            metric_type::EXPONENTIAL_HISTOGRAM => {
                let side = |offset: &Int32Array, counts: &ListArray| {
                    (!offset.is_null(row)).then(|| (offset.value(row), Self::u64s(counts, row)))
                };
                let positive = side(self.pos_offset, self.pos_counts);
                let negative = side(self.neg_offset, self.neg_counts);
                Some(Hist::exponential(
                    self.scale.value(row),
                    self.zero_count.value(row),
                    self.zero_threshold.value(row),
                    positive.as_ref().map(|(o, c)| (*o, c.as_slice())),
                    negative.as_ref().map(|(o, c)| (*o, c.as_slice())),
                ))
            }
            _ => None,
        }
    }
}
