//! The filter that selects the spans of a set of traces.
//!
//! A few ids become `trace_id IN (…)`: DataFusion turns the literals into guarantees that
//! the Parquet bloom filters and `trace_id` statistics use to skip whole row groups and
//! pages. Thousands of ids would defeat that pruning anyway (every row group holds one of
//! them) and make plans of thousands of literal expressions, so a large set becomes
//! `weft_trace_id_in_set(trace_id)`: one sorted list, a binary search per row, still
//! evaluated inside the Parquet decoder (`trace_id` is a primitive column) before any other
//! column is decoded.

use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{Expr, col, lit};
use datafusion::scalar::ScalarValue;
use weft_schemas::columns::TRACE_ID;

/// Above this many ids the set function replaces the `IN` list.
const MAX_IN_LIST: usize = 256;

/// Spans whose trace is one of `ids`.
pub(crate) fn spans_of(ids: &[[u8; 16]]) -> Expr {
    if ids.len() <= MAX_IN_LIST {
        let list = ids
            .iter()
            .map(|id| lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec()))))
            .collect();
        return col(TRACE_ID).in_list(list, false);
    }
    let mut sorted: Vec<u128> = ids.iter().map(|id| u128::from_be_bytes(*id)).collect();
    sorted.sort_unstable();
    sorted.dedup();
    ScalarUDF::new_from_impl(TraceIdInSet {
        ids: sorted,
        signature: Signature::exact(vec![DataType::FixedSizeBinary(16)], Volatility::Immutable),
    })
    .call(vec![col(TRACE_ID)])
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TraceIdInSet {
    /// Big-endian ids as numbers, sorted: byte order and number order agree.
    ids: Vec<u128>,
    signature: Signature,
}

impl ScalarUDFImpl for TraceIdInSet {
    fn name(&self) -> &str {
        "weft_trace_id_in_set"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let Some(arg) = args.args.into_iter().next() else {
            return exec_err!("weft_trace_id_in_set takes one argument");
        };
        let array = arg.into_array(rows)?;
        let Some(ids) = array
            .as_fixed_size_binary_opt()
            .filter(|a| a.value_length() == 16)
        else {
            return exec_err!("weft_trace_id_in_set takes 16-byte trace ids");
        };
        let contains = |row: usize| {
            ids.is_valid(row)
                && <[u8; 16]>::try_from(ids.value(row))
                    .is_ok_and(|id| self.ids.binary_search(&u128::from_be_bytes(id)).is_ok())
        };
        let values = BooleanBuffer::collect_bool(rows, contains);
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(
            values, None,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{FixedSizeBinaryArray, RecordBatch};
    use arrow::datatypes::{Field, Schema};
    use datafusion::prelude::SessionContext;

    async fn count(ids: &[[u8; 16]], stored: &[[u8; 16]]) -> usize {
        let array = FixedSizeBinaryArray::try_from_iter(stored.iter()).unwrap();
        let schema = Schema::new(vec![Field::new(
            TRACE_ID,
            DataType::FixedSizeBinary(16),
            false,
        )]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(array)]).unwrap();
        SessionContext::new()
            .read_batch(batch)
            .unwrap()
            .filter(spans_of(ids))
            .unwrap()
            .count()
            .await
            .unwrap()
    }

    fn id(n: u32) -> [u8; 16] {
        let mut id = [0xa5; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[tokio::test]
    async fn small_and_large_sets_select_the_same_rows() {
        let stored: Vec<[u8; 16]> = (0..2_000).map(id).collect();
        // Every third stored id plus ids that are not stored.
        let wanted: Vec<[u8; 16]> = (0..4_000).step_by(3).map(id).collect();
        assert!(wanted.len() > MAX_IN_LIST);
        assert_eq!(count(&wanted, &stored).await, 667);
        assert_eq!(count(&wanted[..100], &stored).await, 100);
        assert_eq!(count(&[id(5_000)], &stored).await, 0);
    }
}
