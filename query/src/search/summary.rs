//! Whole-trace summaries: root service and operation, start, duration, span and error
//! counts, services involved. Built from the few columns [`SUMMARY_COLUMNS`] of every span
//! of the candidate traces, in any row order and across any number of batches.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int8Type, Int64Type};
use weft_schemas::columns;

use crate::{Error, Result};

/// The columns [`SummaryBuilder::add`] reads, in this order.
pub(crate) const SUMMARY_COLUMNS: [&str; 7] = [
    columns::TRACE_ID,
    columns::PARENT_SPAN_ID,
    columns::SERVICE_NAME,
    columns::SPAN_NAME,
    columns::START_TIME,
    columns::DURATION_NS,
    columns::STATUS_CODE,
];

/// OTLP `STATUS_CODE_ERROR`.
const STATUS_ERROR: i8 = 2;

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    pub trace_id: [u8; 16],
    /// The span without a parent (the earliest one if there are several); `None` when the
    /// root has not arrived or was never sent.
    pub root: Option<RootSpan>,
    /// Earliest span start, nanoseconds since the Unix epoch.
    pub start_ns: i64,
    /// Latest span end minus `start_ns` (0 if every span has a negative duration).
    pub duration_ns: i64,
    pub span_count: u64,
    /// Spans with status ERROR.
    pub error_count: u64,
    /// Services with their span counts, most spans first, then by name.
    pub services: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSpan {
    pub service: String,
    pub operation: String,
}

#[derive(Debug)]
struct Partial {
    start: i64,
    end: i64,
    spans: u64,
    errors: u64,
    services: HashMap<String, u64>,
    /// (start, service, operation) of the best root so far.
    root: Option<(i64, String, String)>,
}

/// Accumulates [`TraceSummary`]s from span rows.
#[derive(Debug, Default)]
pub(crate) struct SummaryBuilder {
    traces: HashMap<[u8; 16], Partial>,
}

impl SummaryBuilder {
    /// Adds the rows of a batch holding [`SUMMARY_COLUMNS`] (by name).
    pub(super) fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::Execution(format!("summary rows without {name}")))
        };
        let as_type = |name: &str, to: &DataType| {
            arrow::compute::cast(column(name)?, to)
                .map_err(|e| Error::Execution(format!("summary column {name}: {e}")))
        };
        let trace_ids = column(columns::TRACE_ID)?.as_fixed_size_binary();
        let parents = column(columns::PARENT_SPAN_ID)?;
        // Dictionary or view encodings depend on where the rows come from; plain strings
        // and integers are what this reads.
        let services = as_type(columns::SERVICE_NAME, &DataType::Utf8)?;
        let services = services.as_string::<i32>();
        let names = as_type(columns::SPAN_NAME, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let starts = as_type(columns::START_TIME, &DataType::Int64)?;
        let starts = starts.as_primitive::<Int64Type>();
        let durations = as_type(columns::DURATION_NS, &DataType::Int64)?;
        let durations = durations.as_primitive::<Int64Type>();
        let statuses = as_type(columns::STATUS_CODE, &DataType::Int8)?;
        let statuses = statuses.as_primitive::<Int8Type>();

        for row in 0..batch.num_rows() {
            let Ok(trace_id) = <[u8; 16]>::try_from(trace_ids.value(row)) else {
                return Err(Error::Execution("trace_id is not 16 bytes".into()));
            };
            let start = starts.value(row);
            let end = start.saturating_add(durations.value(row));
            let service = services.value(row);
            let partial = self.traces.entry(trace_id).or_insert_with(|| Partial {
                start,
                end,
                spans: 0,
                errors: 0,
                services: HashMap::new(),
                root: None,
            });
            partial.start = partial.start.min(start);
            partial.end = partial.end.max(end);
            partial.spans += 1;
            partial.errors += u64::from(statuses.value(row) == STATUS_ERROR);
            match partial.services.get_mut(service) {
                Some(count) => *count += 1,
                None => {
                    partial.services.insert(service.to_owned(), 1);
                }
            }
            if parents.is_null(row) {
                let operation = names.value(row);
                // Earliest root wins; ties broken by name so the answer does not depend on
                // row order.
                let better = partial.root.as_ref().is_none_or(|(s, svc, op)| {
                    (start, service, operation) < (*s, svc.as_str(), op.as_str())
                });
                if better {
                    partial.root = Some((start, service.to_owned(), operation.to_owned()));
                }
            }
        }
        Ok(())
    }

    pub(super) fn finish(self) -> HashMap<[u8; 16], TraceSummary> {
        self.traces
            .into_iter()
            .map(|(trace_id, p)| {
                let mut services: Vec<(String, u64)> = p.services.into_iter().collect();
                services.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let summary = TraceSummary {
                    trace_id,
                    root: p
                        .root
                        .map(|(_, service, operation)| RootSpan { service, operation }),
                    start_ns: p.start,
                    duration_ns: p.end.saturating_sub(p.start).max(0),
                    span_count: p.spans,
                    error_count: p.errors,
                    services,
                };
                (trace_id, summary)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, FixedSizeBinaryArray, Int8Array, Int64Array, StringArray,
        TimestampNanosecondArray,
    };
    use arrow::datatypes::{Field, Schema, TimeUnit};

    /// (trace, parent, service, name, start, duration, status)
    type Row = (u8, Option<u8>, &'static str, &'static str, i64, i64, i8);

    fn batch(rows: &[Row]) -> RecordBatch {
        let ids = FixedSizeBinaryArray::try_from_iter(rows.iter().map(|r| [r.0; 16])).unwrap();
        let parents = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
            rows.iter().map(|r| r.1.map(|p| [p; 8])),
            8,
        )
        .unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(ids),
            Arc::new(parents),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(
                TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.4))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.5))),
            Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.6))),
        ];
        let schema = Schema::new(vec![
            Field::new(columns::TRACE_ID, DataType::FixedSizeBinary(16), false),
            Field::new(columns::PARENT_SPAN_ID, DataType::FixedSizeBinary(8), true),
            Field::new(columns::SERVICE_NAME, DataType::Utf8, false),
            Field::new(columns::SPAN_NAME, DataType::Utf8, false),
            Field::new(
                columns::START_TIME,
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new(columns::DURATION_NS, DataType::Int64, false),
            Field::new(columns::STATUS_CODE, DataType::Int8, false),
        ]);
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    #[test]
    fn summaries_aggregate_across_batches_in_any_order() {
        let mut builder = SummaryBuilder::default();
        builder
            .add(&batch(&[
                (1, Some(9), "db", "SELECT", 150, 10, 2),
                (2, Some(5), "web", "child", 500, 5, 0),
                (1, None, "web", "GET /", 100, 100, 0),
            ]))
            .unwrap();
        builder
            .add(&batch(&[
                (1, Some(9), "cache", "get", 160, 300, 2),
                (1, Some(9), "db", "SELECT", 170, 1, 1),
            ]))
            .unwrap();
        let summaries = builder.finish();
        assert_eq!(summaries.len(), 2);
        assert_eq!(
            summaries[&[1; 16]],
            TraceSummary {
                trace_id: [1; 16],
                root: Some(RootSpan {
                    service: "web".into(),
                    operation: "GET /".into()
                }),
                start_ns: 100,
                duration_ns: 360,
                span_count: 4,
                error_count: 2,
                services: vec![("db".into(), 2), ("cache".into(), 1), ("web".into(), 1)],
            }
        );
        let orphan = &summaries[&[2; 16]];
        assert_eq!(orphan.root, None);
        assert_eq!((orphan.start_ns, orphan.duration_ns), (500, 5));
    }

    #[test]
    fn earliest_root_wins_and_negative_durations_clamp() {
        let mut builder = SummaryBuilder::default();
        builder
            .add(&batch(&[
                (3, None, "late", "b", 20, -50, 0),
                (3, None, "early", "a", 10, -50, 0),
            ]))
            .unwrap();
        let summary = &builder.finish()[&[3; 16]];
        assert_eq!(summary.root.as_ref().unwrap().service, "early");
        assert_eq!(summary.duration_ns, 0);
    }
}
