//! SQL helpers for binary IDs: `hex_id(trace_id)` renders an ID as lowercase hex;
//! `trace_id_from_hex('…')` / `span_id_from_hex('…')` turn hex text into the stored
//! FixedSizeBinary form, so `WHERE trace_id = trace_id_from_hex('…')` can use the
//! Parquet statistics and bloom filters.

pub mod capped;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryBuilder, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// Every UDF Weft registers.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(HexId::new()),
        ScalarUDF::new_from_impl(IdFromHex::new("trace_id_from_hex", 16)),
        ScalarUDF::new_from_impl(IdFromHex::new("span_id_from_hex", 8)),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct HexId {
    signature: Signature,
}

impl HexId {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HexId {
    fn name(&self) -> &str {
        "hex_id"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(
                DataType::FixedSizeBinary(_)
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::Null,
            ) => Ok(DataType::Utf8),
            Some(other) => plan_err!("hex_id takes a binary id, not {other}"),
            None => plan_err!("hex_id takes one argument"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].clone().into_array(args.number_rows)?;
        let mut out = StringBuilder::with_capacity(array.len(), array.len() * 32);
        let mut push = |value: Option<&[u8]>| match value {
            Some(bytes) => out.append_value(hex::encode(bytes)),
            None => out.append_null(),
        };
        match array.data_type() {
            DataType::FixedSizeBinary(_) => array.as_fixed_size_binary().iter().for_each(&mut push),
            DataType::Binary => array.as_binary::<i32>().iter().for_each(&mut push),
            DataType::LargeBinary => array.as_binary::<i64>().iter().for_each(&mut push),
            DataType::BinaryView => array.as_binary_view().iter().for_each(&mut push),
            DataType::Null => (0..array.len()).for_each(|_| push(None)),
            other => return exec_err!("hex_id takes a binary id, not {other}"),
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IdFromHex {
    name: &'static str,
    width: i32,
    signature: Signature,
}

impl IdFromHex {
    fn new(name: &'static str, width: i32) -> Self {
        Self {
            name,
            width,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8View]),
                    TypeSignature::Exact(vec![DataType::LargeUtf8]),
                ],
                Volatility::Immutable,
            ),
        }
    }

    fn parse(&self, text: &str) -> Result<Vec<u8>> {
        let width = self.width as usize;
        match hex::decode(text.trim()) {
            Ok(bytes) if bytes.len() == width => Ok(bytes),
            _ => exec_err!("{}: {text:?} is not {} hex digits", self.name, width * 2),
        }
    }
}

impl ScalarUDFImpl for IdFromHex {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::FixedSizeBinary(self.width))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // A literal argument stays a scalar so the planner can push the comparison into
        // Parquet pruning.
        if let ColumnarValue::Scalar(scalar) = &args.args[0] {
            let text = match scalar {
                ScalarValue::Utf8(v) | ScalarValue::Utf8View(v) | ScalarValue::LargeUtf8(v) => {
                    v.clone()
                }
                other => return exec_err!("{} takes text, not {other}", self.name),
            };
            let bytes = text.map(|t| self.parse(&t)).transpose()?;
            return Ok(ColumnarValue::Scalar(ScalarValue::FixedSizeBinary(
                self.width, bytes,
            )));
        }
        let array = args.args[0].clone().into_array(args.number_rows)?;
        let array = arrow::compute::cast(&array, &DataType::Utf8)?;
        let mut out = FixedSizeBinaryBuilder::with_capacity(array.len(), self.width);
        for value in array.as_string::<i32>() {
            match value {
                Some(text) => out.append_value(self.parse(text)?)?,
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
