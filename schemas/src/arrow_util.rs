//! Small Arrow helpers shared by the span and metric conversions.

use std::sync::Arc;

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, DictionaryArray, FixedSizeBinaryArray, Int32Array, NullBufferBuilder,
    RecordBatch, StringArray, StringBuilder, TypedDictionaryArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Int32Type, TimeUnit};
use arrow::error::ArrowError;

use crate::columns::LIST_ITEM;
use crate::{Error, Result};

/// `Timestamp(Nanosecond, "UTC")`.
pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Dictionary(Int32, Utf8)`.
pub(crate) fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// `List<item>` with a non-nullable item named as arrow's `ListBuilder` names it.
pub(crate) fn list_type(item: DataType) -> DataType {
    DataType::List(list_item(item))
}

pub(crate) fn list_item(item: DataType) -> Arc<Field> {
    Arc::new(Field::new(LIST_ITEM, item, false))
}

/// Downcasts with an error (not a panic) naming the column.
pub(crate) fn downcast<'a, T: Array + 'static>(a: &'a dyn Array, name: &str) -> Result<&'a T> {
    a.as_any().downcast_ref::<T>().ok_or_else(|| {
        Error::InvalidData(format!(
            "column {name} has unexpected type {}",
            a.data_type()
        ))
    })
}

/// A column of a batch (read back from Parquet or produced by a query) converted to the
/// canonical type this crate builds, so readers can downcast without caring whether an engine
/// handed back `Utf8View`, plain strings instead of dictionaries, etc.
pub(crate) fn column(batch: &RecordBatch, name: &str, canonical: &DataType) -> Result<ArrayRef> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| Error::InvalidData(format!("missing column {name}")))?;
    if col.data_type() == canonical {
        return Ok(Arc::clone(col));
    }
    arrow::compute::cast(col, canonical).map_err(|e| {
        Error::InvalidData(format!(
            "column {name} has type {} which does not convert to {canonical}: {e}",
            col.data_type()
        ))
    })
}

/// Fetches `name` from `batch` with the type the table schema gives it.
pub(crate) fn table_column(
    batch: &RecordBatch,
    schema: &arrow::datatypes::Schema,
    name: &str,
) -> Result<ArrayRef> {
    let field = schema
        .field_with_name(name)
        .map_err(|_| Error::InvalidData(format!("unknown column {name}")))?;
    column(batch, name, field.data_type())
}

/// Read access to a `Dictionary(Int32, Utf8)` column.
pub(crate) struct DictStr<'a>(TypedDictionaryArray<'a, Int32Type, StringArray>);

impl<'a> DictStr<'a> {
    pub(crate) fn new(a: &'a dyn Array, name: &str) -> Result<Self> {
        let dict: &DictionaryArray<Int32Type> = downcast(a, name)?;
        let typed = dict.downcast_dict::<StringArray>().ok_or_else(|| {
            Error::InvalidData(format!("column {name}: dictionary of non-strings"))
        })?;
        Ok(Self(typed))
    }

    /// The value, `""` for null.
    pub(crate) fn get(&self, i: usize) -> &'a str {
        use arrow::array::ArrayAccessor;
        if self.0.is_null(i) {
            ""
        } else {
            self.0.value(i)
        }
    }
}

/// `Some(value)` unless null.
pub(crate) fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// The value, `""` for null (nullable string columns store "" as null).
pub(crate) fn str_or_empty(a: &StringArray, i: usize) -> &str {
    opt_str(a, i).unwrap_or("")
}

/// Builds a `FixedSizeBinary(width)` column from validated ids without per-value `Result`s:
/// any length mismatch surfaces once, as an error from `finish`.
pub(crate) struct IdBuilder {
    width: usize,
    data: Vec<u8>,
    nulls: NullBufferBuilder,
}

impl IdBuilder {
    pub(crate) fn with_capacity(width: usize, rows: usize) -> Self {
        Self {
            width,
            data: Vec::with_capacity(width * rows),
            nulls: NullBufferBuilder::new(rows),
        }
    }

    /// Appends an id the caller has checked to be `width` bytes long.
    pub(crate) fn push(&mut self, id: &[u8]) {
        self.data.extend_from_slice(id);
        self.nulls.append_non_null();
    }

    pub(crate) fn push_null(&mut self) {
        self.data.resize(self.data.len() + self.width, 0);
        self.nulls.append_null();
    }

    pub(crate) fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let width = i32::try_from(self.width)
            .map_err(|_| ArrowError::InvalidArgumentError("id width".into()))?;
        let data = std::mem::take(&mut self.data);
        let rows = data.len() / self.width.max(1);
        if self.nulls.len() != rows || !data.len().is_multiple_of(self.width.max(1)) {
            return Err(ArrowError::InvalidArgumentError(format!(
                "id column: {} bytes for {} rows of width {}",
                data.len(),
                self.nulls.len(),
                self.width
            )));
        }
        Ok(Arc::new(FixedSizeBinaryArray::try_new(
            width,
            Buffer::from_vec(data),
            self.nulls.finish(),
        )?))
    }
}

/// A `Dictionary(Int32, Utf8)` column whose value is constant over runs of rows
/// (`service_name` per resource, `scope_name` per scope): the caller interns the value once per
/// run and pushes the key per row, so a row costs no hashing or string comparison.
#[derive(Default)]
pub(crate) struct InternedDict {
    keys: Vec<i32>,
    values: StringBuilder,
    index: HashMap<String, i32>,
}

impl InternedDict {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        Self {
            keys: Vec::with_capacity(rows),
            ..Default::default()
        }
    }

    /// The key of `value`, adding it to the dictionary if new.
    pub(crate) fn intern(&mut self, value: &str) -> Result<i32, ArrowError> {
        if let Some(k) = self.index.get(value) {
            return Ok(*k);
        }
        let k =
            i32::try_from(self.index.len()).map_err(|_| ArrowError::DictionaryKeyOverflowError)?;
        self.values.append_value(value);
        self.index.insert(value.to_owned(), k);
        Ok(k)
    }

    /// Appends a row holding the value `key` was interned for.
    pub(crate) fn push(&mut self, key: i32) {
        self.keys.push(key);
    }

    pub(crate) fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let keys = Int32Array::from(std::mem::take(&mut self.keys));
        self.index.clear();
        Ok(Arc::new(DictionaryArray::try_new(
            keys,
            Arc::new(self.values.finish()),
        )?))
    }
}

/// Renders an integer without the `fmt` machinery (attribute ints are common and this runs
/// per value on the ingest path).
pub(crate) fn format_i64(v: i64, buf: &mut [u8; 20]) -> &str {
    let mut n = v.unsigned_abs();
    let mut pos = buf.len();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        pos -= 1;
        buf[pos] = b'-';
    }
    // Only ASCII digits and '-' were written.
    std::str::from_utf8(&buf[pos..]).unwrap_or_default()
}

/// Offsets and validity of a list column whose child is built separately (lists of structs).
pub(crate) struct ListOffsets {
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl ListOffsets {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            nulls: NullBufferBuilder::new(rows),
        }
    }

    fn last(&self) -> i32 {
        self.offsets.last().copied().unwrap_or(0)
    }

    /// Closes a list whose child now holds `child_len` values in total.
    pub(crate) fn push(&mut self, child_len: usize) -> Result<(), ArrowError> {
        let end = i32::try_from(child_len)
            .map_err(|_| ArrowError::InvalidArgumentError("list child too long".into()))?;
        self.offsets.push(end);
        self.nulls.append_non_null();
        Ok(())
    }

    pub(crate) fn push_null(&mut self) {
        let last = self.last();
        self.offsets.push(last);
        self.nulls.append_null();
    }

    pub(crate) fn finish(&mut self) -> (OffsetBuffer<i32>, Option<NullBuffer>) {
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        (
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            self.nulls.finish(),
        )
    }
}

/// Rejected rows counted by reason, turned into the OTLP partial-success message.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    by_reason: Vec<(&'static str, u64)>,
}

impl Rejections {
    pub(crate) fn add(&mut self, reason: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        match self.by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.by_reason.push((reason, n)),
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.by_reason.iter().map(|(_, c)| c).sum()
    }

    /// e.g. `"2 spans rejected: invalid trace_id (must be 16 non-zero bytes)"`, or with several
    /// reasons `"3 data points rejected: empty metric name [2]; ... [1]"`.
    pub(crate) fn message(&self, singular: &str, plural: &str) -> Option<String> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let unit = if total == 1 { singular } else { plural };
        let detail = match self.by_reason.as_slice() {
            [(reason, _)] => (*reason).to_owned(),
            many => many
                .iter()
                .map(|(r, c)| format!("{r} [{c}]"))
                .collect::<Vec<_>>()
                .join("; "),
        };
        Some(format!("{total} {unit} rejected: {detail}"))
    }
}

/// Assembles a batch. If assembly fails (a bug, never input-dependent) the result is an empty
/// batch with all `request_rows` rows counted as rejected, so callers report a failure instead
/// of the process panicking.
pub(crate) fn finish_batch(
    schema: arrow::datatypes::SchemaRef,
    columns: Result<Vec<ArrayRef>, ArrowError>,
    request_rows: usize,
    rejections: Rejections,
    singular: &str,
    plural: &str,
) -> crate::Converted {
    match columns.and_then(|c| RecordBatch::try_new(Arc::clone(&schema), c)) {
        Ok(batch) => crate::Converted {
            batch,
            rejected: rejections.total(),
            rejection_message: rejections.message(singular, plural),
        },
        Err(e) => {
            debug_assert!(false, "building a batch failed: {e}");
            let mut all = Rejections::default();
            all.add(
                "internal error while building arrow arrays",
                request_rows as u64,
            );
            crate::Converted {
                batch: RecordBatch::new_empty(schema),
                rejected: all.total(),
                rejection_message: all.message(singular, plural).map(|m| format!("{m}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_messages() {
        let mut r = Rejections::default();
        assert_eq!(r.message("span", "spans"), None);
        r.add("invalid trace_id (must be 16 non-zero bytes)", 2);
        assert_eq!(
            r.message("span", "spans").unwrap(),
            "2 spans rejected: invalid trace_id (must be 16 non-zero bytes)"
        );
        r.add("invalid span_id (must be 8 non-zero bytes)", 1);
        assert_eq!(
            r.message("span", "spans").unwrap(),
            "3 spans rejected: invalid trace_id (must be 16 non-zero bytes) [2]; \
             invalid span_id (must be 8 non-zero bytes) [1]"
        );
        let mut one = Rejections::default();
        one.add("x", 1);
        assert_eq!(one.message("span", "spans").unwrap(), "1 span rejected: x");
    }

    #[test]
    fn integers() {
        let mut buf = [0u8; 20];
        for v in [0, 7, -7, 10, 1234567890, i64::MAX, i64::MIN] {
            assert_eq!(format_i64(v, &mut buf), v.to_string());
        }
    }

    #[test]
    fn interned_dict() {
        let mut d = InternedDict::with_capacity(3);
        let a = d.intern("a").unwrap();
        let b = d.intern("b").unwrap();
        assert_eq!(d.intern("a").unwrap(), a);
        d.push(a);
        d.push(b);
        d.push(a);
        let arr = d.finish().unwrap();
        assert_eq!(arr.data_type(), &dict_type());
        let s = arrow::compute::cast(&arr, &DataType::Utf8).unwrap();
        let s: &StringArray = downcast(s.as_ref(), "x").unwrap();
        assert_eq!(s.iter().flatten().collect::<Vec<_>>(), vec!["a", "b", "a"]);
    }

    #[test]
    fn id_builder() {
        let mut b = IdBuilder::with_capacity(2, 2);
        b.push(&[1, 2]);
        b.push_null();
        let a = b.finish().unwrap();
        assert_eq!(a.len(), 2);
        assert!(a.is_null(1));
        let mut bad = IdBuilder::with_capacity(2, 1);
        bad.push(&[1, 2, 3]);
        assert!(bad.finish().is_err());
    }
}
