//! How OTLP attribute lists are stored: a `Map<Utf8, Utf8>` column plus a parallel, nullable
//! `List<Int8>` of type codes.
//!
//! ```text
//!  [{k:"http.method", v:"GET"}, {k:"retries", v:3}]
//!        │
//!        ├─▶ attributes      = {"http.method": "GET", "retries": "3"}   (SQL: attributes['retries'])
//!        └─▶ attribute_types = [1, 3]        (NULL when every value is a string: the common case)
//! ```
//!
//! Value rendering (what SQL sees), per type code:
//!
//! | code | type   | rendering                                                         |
//! |------|--------|-------------------------------------------------------------------|
//! | 0    | empty  | NULL (an `AnyValue` with no value, or a `KeyValue` without value) |
//! | 1    | string | as is                                                             |
//! | 2    | bool   | `true` / `false`                                                  |
//! | 3    | int    | decimal                                                           |
//! | 4    | double | Rust `{}` of `f64`: shortest round-trip form; `NaN`, `inf`, `-inf`, `-0` |
//! | 5    | bytes  | base64 (standard alphabet, padded)                                |
//! | 6    | array  | compact OTLP/JSON of the `AnyValue` (`{"arrayValue":{"values":[…]}}`) |
//! | 7    | kvlist | compact OTLP/JSON of the `AnyValue` (`{"kvlistValue":{"values":[…]}}`) |
//!
//! Every rendering parses back to the identical value (NaN payloads and the sign of NaN
//! excepted), which is what makes the round trip to OTLP lossless. Map entries keep the order
//! and duplicates of the original list. The profiles-only `string_value_strindex` is stored as
//! empty (it is meaningless without the profile's string table).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Int8Array, Int8Builder, ListArray, ListBuilder, MapArray, MapBuilder,
    StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Fields};
use arrow::error::ArrowError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

use crate::arrow_util::{downcast, format_i64};
use crate::columns::{LIST_ITEM, map};
use crate::{Error, Result};

/// Type code: no value.
pub const TYPE_EMPTY: i8 = 0;
/// Type code: string.
pub const TYPE_STRING: i8 = 1;
/// Type code: bool.
pub const TYPE_BOOL: i8 = 2;
/// Type code: int64.
pub const TYPE_INT: i8 = 3;
/// Type code: double.
pub const TYPE_DOUBLE: i8 = 4;
/// Type code: bytes.
pub const TYPE_BYTES: i8 = 5;
/// Type code: array.
pub const TYPE_ARRAY: i8 = 6;
/// Type code: key-value list.
pub const TYPE_KVLIST: i8 = 7;

/// The type code of a value (see the module docs).
pub fn type_code(v: Option<&AnyValue>) -> i8 {
    use any_value::Value as V;
    match v.and_then(|v| v.value.as_ref()) {
        None | Some(V::StringValueStrindex(_)) => TYPE_EMPTY,
        Some(V::StringValue(_)) => TYPE_STRING,
        Some(V::BoolValue(_)) => TYPE_BOOL,
        Some(V::IntValue(_)) => TYPE_INT,
        Some(V::DoubleValue(_)) => TYPE_DOUBLE,
        Some(V::BytesValue(_)) => TYPE_BYTES,
        Some(V::ArrayValue(_)) => TYPE_ARRAY,
        Some(V::KvlistValue(_)) => TYPE_KVLIST,
    }
}

/// The stored (SQL-visible) rendering of a value; `None` for an empty value.
pub fn render_value(v: &AnyValue) -> Option<String> {
    use any_value::Value as V;
    match &v.value {
        None | Some(V::StringValueStrindex(_)) => None,
        Some(V::StringValue(s)) => Some(s.clone()),
        Some(other) => {
            let mut out = String::new();
            // Writing into a String cannot fail.
            let _ = write_rendering(&mut out, other);
            Some(out)
        }
    }
}

/// Inverse of [`render_value`] + [`type_code`]: rebuilds the `AnyValue` from its stored form.
/// Returns `None` for [`TYPE_EMPTY`].
pub fn parse_value(type_code: i8, rendered: Option<&str>) -> Result<Option<AnyValue>> {
    use any_value::Value as V;
    if type_code == TYPE_EMPTY {
        return Ok(None);
    }
    let s = rendered.ok_or_else(|| {
        Error::InvalidData(format!("null attribute value with type code {type_code}"))
    })?;
    let bad = |what: &str| Error::InvalidData(format!("attribute value {s:?} is not {what}"));
    let value = match type_code {
        TYPE_STRING => V::StringValue(s.to_owned()),
        TYPE_BOOL => match s {
            "true" => V::BoolValue(true),
            "false" => V::BoolValue(false),
            _ => return Err(bad("a bool")),
        },
        TYPE_INT => V::IntValue(s.parse().map_err(|_| bad("an int"))?),
        TYPE_DOUBLE => V::DoubleValue(s.parse().map_err(|_| bad("a double"))?),
        TYPE_BYTES => V::BytesValue(BASE64.decode(s).map_err(|_| bad("base64"))?),
        TYPE_ARRAY | TYPE_KVLIST => {
            let json: serde_json::Value = serde_json::from_str(s).map_err(|_| bad("otlp/json"))?;
            let v = crate::otlp_json::any_value_from_json(&json)
                .map_err(|e| Error::InvalidData(e.to_string()))?;
            match (&v.value, type_code) {
                (Some(V::ArrayValue(_)), TYPE_ARRAY) | (Some(V::KvlistValue(_)), TYPE_KVLIST) => {
                    return Ok(Some(v));
                }
                _ => return Err(bad("an array or kvlist of the recorded type")),
            }
        }
        other => {
            return Err(Error::InvalidData(format!(
                "unknown attribute type code {other}"
            )));
        }
    };
    Ok(Some(AnyValue { value: Some(value) }))
}

/// Writes the rendering of a non-string, non-empty value. Strings are appended directly by
/// callers (no formatting machinery on the common path).
fn write_rendering(out: &mut impl std::fmt::Write, v: &any_value::Value) -> std::fmt::Result {
    use any_value::Value as V;
    match v {
        V::StringValue(s) => out.write_str(s),
        V::BoolValue(b) => out.write_str(if *b { "true" } else { "false" }),
        V::IntValue(i) => write!(out, "{i}"),
        V::DoubleValue(d) => write!(out, "{d}"),
        V::BytesValue(b) => write!(out, "{}", base64::display::Base64Display::new(b, &BASE64)),
        V::ArrayValue(_) | V::KvlistValue(_) => {
            let json = crate::otlp_json::any_value_to_json(&AnyValue {
                value: Some(v.clone()),
            });
            write!(out, "{json}")
        }
        V::StringValueStrindex(_) => Ok(()),
    }
}

// =============================================================================================
// Arrow types, builder, reader (crate-internal)
// =============================================================================================

/// `Map<Utf8 (not null), Utf8 (nullable)>` exactly as arrow's default `MapBuilder` builds it.
pub(crate) fn map_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new(map::KEYS, DataType::Utf8, false),
        Field::new(map::VALUES, DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new(map::ENTRIES, DataType::Struct(entries), false)),
        false,
    )
}

/// `List<Int8 (not null)>`.
pub(crate) fn types_type() -> DataType {
    DataType::List(types_item_field())
}

fn types_item_field() -> Arc<Field> {
    Arc::new(Field::new(LIST_ITEM, DataType::Int8, false))
}

/// Appends attribute lists to a map column and its type-code column.
pub(crate) struct AttrsBuilder {
    map: MapBuilder<StringBuilder, StringBuilder>,
    types: ListBuilder<Int8Builder>,
}

impl AttrsBuilder {
    /// `rows` attribute lists holding about `entries` entries in total.
    pub(crate) fn with_capacity(rows: usize, entries: usize) -> Self {
        let map = MapBuilder::with_capacity(
            None,
            StringBuilder::with_capacity(entries, entries * 16),
            StringBuilder::with_capacity(entries, entries * 16),
            rows,
        );
        Self {
            map,
            types: ListBuilder::with_capacity(Int8Builder::new(), rows)
                .with_field(types_item_field()),
        }
    }

    /// Appends one row.
    pub(crate) fn append(&mut self, kvs: &[KeyValue]) -> Result<(), ArrowError> {
        use any_value::Value as V;
        let (keys, values) = self.map.entries();
        let mut all_strings = true;
        let mut int_buf = [0u8; 20];
        for kv in kvs {
            keys.append_value(&kv.key);
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(V::StringValue(s)) => values.append_value(s),
                Some(V::IntValue(i)) => {
                    values.append_value(format_i64(*i, &mut int_buf));
                    all_strings = false;
                }
                Some(V::BoolValue(b)) => {
                    values.append_value(if *b { "true" } else { "false" });
                    all_strings = false;
                }
                None | Some(V::StringValueStrindex(_)) => {
                    values.append_null();
                    all_strings = false;
                }
                Some(other) => {
                    // StringBuilder's fmt::Write extends the pending value; append_value("")
                    // then closes it. No intermediate String.
                    write_rendering(values, other).map_err(|_| {
                        ArrowError::ComputeError("failed to render attribute value".into())
                    })?;
                    values.append_value("");
                    all_strings = false;
                }
            }
        }
        self.map.append(true)?;
        if all_strings {
            self.types.append_null();
        } else {
            let codes = self.types.values();
            for kv in kvs {
                codes.append_value(type_code(kv.value.as_ref()));
            }
            self.types.append(true);
        }
        Ok(())
    }

    /// The map column and the type-code column.
    pub(crate) fn finish(&mut self) -> (ArrayRef, ArrayRef) {
        (Arc::new(self.map.finish()), Arc::new(self.types.finish()))
    }
}

/// Reads attribute lists back from a map column and its type-code column.
pub(crate) struct AttrsReader<'a> {
    map: &'a MapArray,
    keys: &'a StringArray,
    values: &'a StringArray,
    types: &'a ListArray,
    codes: &'a Int8Array,
}

impl<'a> AttrsReader<'a> {
    /// `map` and `types` must already have the canonical types ([`map_type`], [`types_type`]).
    pub(crate) fn new(map: &'a dyn Array, types: &'a dyn Array, name: &str) -> Result<Self> {
        let map: &MapArray = downcast(map, name)?;
        let types: &ListArray = downcast(types, name)?;
        Ok(Self {
            keys: downcast(map.keys().as_ref(), name)?,
            values: downcast(map.values().as_ref(), name)?,
            codes: downcast(types.values().as_ref(), name)?,
            map,
            types,
        })
    }

    fn entries(&self, row: usize) -> std::ops::Range<usize> {
        let offsets = self.map.value_offsets();
        // Offsets are non-negative by Arrow's validation.
        offsets[row] as usize..offsets[row + 1] as usize
    }

    fn codes(&self, row: usize) -> Option<&'a [i8]> {
        if self.types.is_null(row) {
            return None;
        }
        let offsets = self.types.value_offsets();
        self.codes
            .values()
            .get(offsets[row] as usize..offsets[row + 1] as usize)
    }

    fn value(&self, i: usize) -> Option<&'a str> {
        (!self.values.is_null(i)).then(|| self.values.value(i))
    }

    /// The attribute list of `row`.
    pub(crate) fn read(&self, row: usize) -> Result<Vec<KeyValue>> {
        let range = self.entries(row);
        let codes = self.codes(row);
        if let Some(c) = codes
            && c.len() != range.len()
        {
            return Err(Error::InvalidData(format!(
                "{} attribute type codes for {} attributes",
                c.len(),
                range.len()
            )));
        }
        let mut out = Vec::with_capacity(range.len());
        for (n, i) in range.enumerate() {
            let code = match codes {
                Some(c) => c[n],
                // A NULL type list means "all strings"; a null value then can only be a
                // hand-made batch, and reads as empty rather than failing.
                None if self.values.is_null(i) => TYPE_EMPTY,
                None => TYPE_STRING,
            };
            out.push(KeyValue {
                key: self.keys.value(i).to_owned(),
                value: parse_value(code, self.value(i))?,
                key_strindex: 0,
            });
        }
        Ok(out)
    }

    /// Whether rows `a` and `b` hold the same attributes (cheap: no allocation).
    pub(crate) fn row_eq(&self, a: usize, b: usize) -> bool {
        let (ra, rb) = (self.entries(a), self.entries(b));
        ra.len() == rb.len()
            && self.codes(a) == self.codes(b)
            && ra.zip(rb).all(|(i, j)| {
                self.keys.value(i) == self.keys.value(j) && self.value(i) == self.value(j)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use any_value::Value as V;

    fn av(v: V) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn renderings() {
        let cases = [
            (V::StringValue("GET".into()), "GET", TYPE_STRING),
            (V::BoolValue(true), "true", TYPE_BOOL),
            (V::IntValue(-42), "-42", TYPE_INT),
            (V::DoubleValue(0.1), "0.1", TYPE_DOUBLE),
            (V::DoubleValue(-0.0), "-0", TYPE_DOUBLE),
            (V::DoubleValue(f64::INFINITY), "inf", TYPE_DOUBLE),
            (V::BytesValue(vec![0, 1, 2, 255]), "AAEC/w==", TYPE_BYTES),
            (
                V::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: vec![av(V::StringValue("a".into())), av(V::IntValue(1))],
                }),
                r#"{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"1"}]}}"#,
                TYPE_ARRAY,
            ),
        ];
        for (v, text, code) in cases {
            let v = av(v);
            assert_eq!(render_value(&v).as_deref(), Some(text));
            assert_eq!(type_code(Some(&v)), code);
            assert_eq!(parse_value(code, Some(text)).unwrap(), Some(v));
        }
        // Display never uses an exponent: long, but exact and parseable.
        let big = render_value(&av(V::DoubleValue(1e300))).unwrap();
        assert_eq!(big, format!("1{}", "0".repeat(300)));
        assert_eq!(big.parse::<f64>().unwrap(), 1e300);
        assert_eq!(render_value(&AnyValue { value: None }), None);
        assert_eq!(type_code(None), TYPE_EMPTY);
        let nan = parse_value(TYPE_DOUBLE, Some("NaN")).unwrap().unwrap();
        assert!(matches!(nan.value, Some(V::DoubleValue(d)) if d.is_nan()));
        assert!(parse_value(TYPE_INT, Some("x")).is_err());
        assert!(parse_value(TYPE_ARRAY, Some(r#"{"stringValue":"a"}"#)).is_err());
        assert!(parse_value(9, Some("x")).is_err());
    }

    #[test]
    fn builder_types_column_is_null_for_all_strings() {
        let kv = |k: &str, v: Option<V>| KeyValue {
            key: k.into(),
            value: v.map(av),
            key_strindex: 0,
        };
        let mut b = AttrsBuilder::with_capacity(3, 4);
        b.append(&[kv("a", Some(V::StringValue("x".into())))])
            .unwrap();
        b.append(&[]).unwrap();
        b.append(&[kv("n", Some(V::IntValue(7))), kv("e", None)])
            .unwrap();
        let (m, t) = b.finish();
        assert_eq!(m.data_type(), &map_type());
        assert_eq!(t.data_type(), &types_type());
        assert!(t.is_null(0) && t.is_null(1) && t.is_valid(2));
        let r = AttrsReader::new(m.as_ref(), t.as_ref(), "attributes").unwrap();
        assert_eq!(r.read(2).unwrap()[0].value, Some(av(V::IntValue(7))));
        assert_eq!(r.read(2).unwrap()[1].value, None);
        assert!(r.row_eq(0, 0) && !r.row_eq(0, 1));
    }
}
