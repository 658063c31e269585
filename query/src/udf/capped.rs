//! Bounded output for the functions that can make values much larger than their input.
//!
//! A query's memory pool accounts for what operators buffer (sorts, joins, aggregation
//! state), not for the arrays a function returns, so `repeat('x', 1e9)` or
//! `array_repeat(1, 150000000)` could take gigabytes before anything noticed. The analyzer
//! rule [`CapFunctions`] replaces every call of such a function (and the string `||`
//! operator) by a [`Capped`] wrapper that, per batch and before calling the real function,
//! computes an upper bound of each output value from the arguments, and refuses with
//! `ResourcesExhausted` (HTTP 422, SQLSTATE 53200) naming the limit when
//!
//! - one value would exceed `query.max_value_bytes`, or
//! - the values of one batch together would exceed `query.max_batch_bytes`.
//!
//! The output is measured again afterwards, for functions whose bound is loose.
//!
//! | function | bound of one value |
//! | --- | --- |
//! | `repeat(s, n)` | `len(s) * n` |
//! | `lpad` / `rpad(s, n[, fill])` | `n` characters (1 byte each when ASCII, else 4) |
//! | `replace(s, from, to)` | `len(s) + matches * len(to)`, matches ≤ `len(s) / len(from)` (+1 when `from` is empty) |
//! | `regexp_replace(s, re, r[, flags])` | `len(s) * (1 + backreferences in r) + matches * len(r)`, matches ≤ `len(s) + 1` with flags, else 1 |
//! | `concat`, `concat_ws`, `\|\|`, `overlay`, `translate` (×4), `encode` (×2), `array_concat`, `array_append`, `array_prepend`, `make_array`, `array_union`, `flatten` | the sum of the arguments |
//! | `array_repeat(v, n)`, `array_resize(a, n[, v])` | `n * (size of an element + 8)` |
//! | `range` / `generate_series` (scalar, list-valued) | elements * 8 |
//! | `array_to_string(a, d[, null])` | `3 * size(a) + len(a) * (len(d) + len(null))` |
//!
//! Functions whose output is at most a small constant times their input (`upper`, `lower`,
//! `substr`, `to_hex`, hashes, `string_to_array`, …) are left alone: chains of them cannot
//! grow a value without bound. The `range(…)` and `generate_series(…)` *table* functions
//! stream their rows and need no bound.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, IntervalMonthDayNano, IntervalUnit, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Documentation, Expr, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

use crate::QueryConfig;

/// The two limits (from [`QueryConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutputLimits {
    pub max_value_bytes: u64,
    pub max_batch_bytes: u64,
    /// When the query's time is up. A single operator step (a nested-loop join whose
    /// filter matches nothing) may call these functions for minutes without yielding, so
    /// they end it themselves.
    pub deadline: Option<(Instant, u64)>,
}

/// How a time-limit error starts; [`crate::Error`] maps it to a timeout.
pub const TIME_LIMIT_MESSAGE: &str = "query did not finish within its time limit of ";

impl OutputLimits {
    pub fn from_config(config: &QueryConfig) -> Self {
        Self {
            max_value_bytes: config.max_value_bytes as u64,
            max_batch_bytes: config.max_batch_bytes as u64,
            deadline: Some((
                Instant::now() + std::time::Duration::from_secs(config.timeout_secs),
                config.timeout_secs,
            )),
        }
    }

    fn check_time(&self) -> Result<()> {
        match self.deadline {
            Some((deadline, secs)) if Instant::now() >= deadline => Err(
                DataFusionError::Execution(format!("{TIME_LIMIT_MESSAGE}{secs}s")),
            ),
            _ => Ok(()),
        }
    }

    fn check(&self, function: &str, largest: u64, total: u64, what: &str) -> Result<()> {
        self.check_time()?;
        if largest > self.max_value_bytes {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{function} {what} a value of {largest} bytes, over the limit of {} bytes \
                 per value (query.max_value_bytes)",
                self.max_value_bytes
            )));
        }
        if total > self.max_batch_bytes {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{function} {what} {total} bytes for one batch of rows, over the limit of {} \
                 bytes (query.max_batch_bytes)",
                self.max_batch_bytes
            )));
        }
        Ok(())
    }
}

/// How the output of a function is bounded from its arguments (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bound {
    Repeat,
    Pad,
    Replace,
    RegexpReplace,
    /// Sum of the arguments, times a factor.
    Sum(u64),
    ConcatWs,
    ArrayRepeat,
    ArrayResize,
    Range,
    ArrayToString,
}

fn bound_of(name: &str) -> Option<Bound> {
    Some(match name {
        "repeat" => Bound::Repeat,
        "lpad" | "rpad" => Bound::Pad,
        "replace" => Bound::Replace,
        "regexp_replace" => Bound::RegexpReplace,
        "concat" | "overlay" | "array_concat" | "array_cat" | "list_concat" | "list_cat"
        | "array_append" | "list_append" | "array_push_back" | "list_push_back"
        | "array_prepend" | "list_prepend" | "array_push_front" | "list_push_front"
        | "make_array" | "make_list" | "array_union" | "list_union" | "flatten" => Bound::Sum(1),
        "encode" => Bound::Sum(2),
        "translate" => Bound::Sum(4),
        "concat_ws" => Bound::ConcatWs,
        "array_repeat" | "list_repeat" => Bound::ArrayRepeat,
        "array_resize" | "list_resize" => Bound::ArrayResize,
        "range" | "generate_series" => Bound::Range,
        "array_to_string" | "list_to_string" | "array_join" | "list_join" => Bound::ArrayToString,
        _ => return None,
    })
}

/// Analyzer rule: every call of a function with a `Bound`, and `||` on strings, goes
/// through a [`Capped`] wrapper. Runs after type coercion, on every plan (SQL and the
/// DataFrame plans of search, graph and metrics), subqueries included.
#[derive(Debug)]
pub struct CapFunctions {
    limits: OutputLimits,
}

impl CapFunctions {
    pub fn new(config: &QueryConfig) -> Self {
        Self {
            limits: OutputLimits::from_config(config),
        }
    }

    fn rewrite(&self, expr: Expr) -> Result<Transformed<Expr>> {
        match expr {
            Expr::ScalarFunction(ScalarFunction { func, args }) if !func.inner().is::<Capped>() => {
                match bound_of(func.name()) {
                    Some(bound) => {
                        let capped = Capped::wrap(func, bound, self.limits);
                        Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                            func: capped,
                            args,
                        })))
                    }
                    None => Ok(Transformed::no(Expr::ScalarFunction(ScalarFunction {
                        func,
                        args,
                    }))),
                }
            }
            // Lists were already turned into array_concat & co. by the planner.
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::StringConcat,
                right,
            }) => {
                let func = Arc::new(ScalarUDF::new_from_impl(StringConcat::new(self.limits)));
                Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                    func,
                    args: vec![*left, *right],
                })))
            }
            other => Ok(Transformed::no(other)),
        }
    }
}

impl AnalyzerRule for CapFunctions {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| {
            // Column names stay those of the original expressions (`a || b`).
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let saved = names.save(&expr);
                Ok(expr
                    .transform_up(|e| self.rewrite(e))?
                    .update_data(|e| saved.restore(e)))
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "weft_cap_function_output"
    }
}

/// A DataFusion function with its output bounded; everything but evaluation is the
/// wrapped function's.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Capped {
    inner: Arc<ScalarUDF>,
    bound: Bound,
    limits: OutputLimits,
}

impl Capped {
    fn wrap(inner: Arc<ScalarUDF>, bound: Bound, limits: OutputLimits) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            inner,
            bound,
            limits,
        }))
    }
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.inner.name().to_owned();
        let (largest, total) = estimate(self.bound, &args.args, args.number_rows)?;
        self.limits.check(&name, largest, total, "would make")?;
        let output = self.inner.invoke_with_args(args)?;
        let (largest, total) = measure(&output);
        self.limits.check(&name, largest, total, "made")?;
        Ok(output)
    }
}

/// `a || b` on strings: null when either is null (unlike `concat`), bounded like `concat`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct StringConcat {
    signature: Signature,
    limits: OutputLimits,
}

impl StringConcat {
    fn new(limits: OutputLimits) -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
            limits,
        }
    }
}

impl ScalarUDFImpl for StringConcat {
    fn name(&self) -> &str {
        "||"
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        Ok(format!(
            "{} || {}",
            args[0].schema_name(),
            args[1].schema_name()
        ))
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (largest, total) = estimate(Bound::Sum(1), &args.args, args.number_rows)?;
        self.limits.check("||", largest, total, "would make")?;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let left = args.args[0].to_array(rows)?;
        let right = args.args[1].to_array(rows)?;
        let out = arrow::compute::kernels::concat_elements::concat_elements_dyn(&left, &right)?;
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

// ---- sizes ----------------------------------------------------------------------------------

/// Bytes of one value of an argument, per row.
enum Sizes {
    Scalar(u64),
    Array {
        array: ArrayRef,
        /// Average bytes of one element of a list's values.
        element: u64,
    },
}

impl Sizes {
    fn of(value: &ColumnarValue) -> Self {
        match value {
            ColumnarValue::Scalar(scalar) => Sizes::Scalar(scalar_bytes(scalar)),
            ColumnarValue::Array(array) => {
                let element = list_values(array.as_ref()).map_or(8, average_bytes);
                Sizes::Array {
                    array: std::sync::Arc::clone(array),
                    element,
                }
            }
        }
    }

    fn at(&self, row: usize) -> u64 {
        match self {
            Sizes::Scalar(n) => *n,
            Sizes::Array { array, element } => value_bytes(array.as_ref(), row, *element),
        }
    }

    /// Elements of the list at `row` (1 for a non-list).
    fn len_at(&self, row: usize) -> u64 {
        match self {
            Sizes::Scalar(_) => 1,
            Sizes::Array { array, .. } => list_len(array.as_ref(), row),
        }
    }
}

fn list_values(array: &dyn Array) -> Option<&ArrayRef> {
    match array.data_type() {
        DataType::List(_) => Some(array.as_list::<i32>().values()),
        DataType::LargeList(_) => Some(array.as_list::<i64>().values()),
        DataType::FixedSizeList(..) => Some(array.as_fixed_size_list().values()),
        _ => None,
    }
}

fn average_bytes(values: &ArrayRef) -> u64 {
    (values.get_array_memory_size() as u64)
        .div_ceil(values.len().max(1) as u64)
        .max(1)
}

fn list_len(array: &dyn Array, row: usize) -> u64 {
    if array.is_null(row) {
        return 0;
    }
    match array.data_type() {
        DataType::List(_) => array.as_list::<i32>().value_length(row) as u64,
        DataType::LargeList(_) => array.as_list::<i64>().value_length(row) as u64,
        DataType::FixedSizeList(_, n) => *n as u64,
        _ => 1,
    }
}

fn value_bytes(array: &dyn Array, row: usize, element: u64) -> u64 {
    if array.is_null(row) {
        return 0;
    }
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).len() as u64,
        DataType::LargeUtf8 => array.as_string::<i64>().value(row).len() as u64,
        DataType::Utf8View => array.as_string_view().value(row).len() as u64,
        DataType::Binary => array.as_binary::<i32>().value(row).len() as u64,
        DataType::LargeBinary => array.as_binary::<i64>().value(row).len() as u64,
        DataType::BinaryView => array.as_binary_view().value(row).len() as u64,
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            list_len(array, row).saturating_mul(element)
        }
        other => other
            .primitive_width()
            .map_or_else(|| average_bytes(&array.slice(row, 1)), |w| w as u64),
    }
}

fn scalar_bytes(scalar: &ScalarValue) -> u64 {
    match scalar {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
            s.as_ref().map_or(0, |s| s.len() as u64)
        }
        ScalarValue::Binary(b) | ScalarValue::LargeBinary(b) | ScalarValue::BinaryView(b) => {
            b.as_ref().map_or(0, |b| b.len() as u64)
        }
        ScalarValue::List(list) => list.get_array_memory_size() as u64,
        ScalarValue::LargeList(list) => list.get_array_memory_size() as u64,
        ScalarValue::FixedSizeList(list) => list.get_array_memory_size() as u64,
        other => other.size() as u64,
    }
}

/// Integer argument values per row (null and negative count as 0).
enum Ints {
    Scalar(i64),
    Array(arrow::array::Int64Array),
}

impl Ints {
    fn of(value: &ColumnarValue) -> Result<Self> {
        Ok(match value {
            ColumnarValue::Scalar(scalar) => {
                let cast = scalar.cast_to(&DataType::Int64)?;
                Ints::Scalar(match cast {
                    ScalarValue::Int64(Some(n)) => n,
                    _ => 0,
                })
            }
            ColumnarValue::Array(array) => {
                let cast = arrow::compute::cast(array, &DataType::Int64)?;
                Ints::Array(cast.as_primitive::<arrow::datatypes::Int64Type>().clone())
            }
        })
    }

    fn at(&self, row: usize) -> i64 {
        match self {
            Ints::Scalar(n) => *n,
            Ints::Array(array) if array.is_null(row) => 0,
            Ints::Array(array) => array.value(row),
        }
    }

    fn count_at(&self, row: usize) -> u64 {
        self.at(row).max(0) as u64
    }
}

/// Whether every string of an argument is ASCII (one byte per character).
fn all_ascii(value: &ColumnarValue) -> bool {
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s),
        ) => s.as_ref().is_none_or(|s| s.is_ascii()),
        ColumnarValue::Array(array) => match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().values().is_ascii(),
            DataType::LargeUtf8 => array.as_string::<i64>().values().is_ascii(),
            _ => false,
        },
        _ => false,
    }
}

/// Number of `\`, `$` in a replacement: each may copy a capture group (at most the input).
fn references(value: &ColumnarValue, row: usize) -> u64 {
    let count = |s: &str| s.bytes().filter(|b| *b == b'\\' || *b == b'$').count() as u64;
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s),
        ) => s.as_deref().map_or(0, count),
        ColumnarValue::Array(array) if !array.is_null(row) => match array.data_type() {
            DataType::Utf8 => count(array.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => count(array.as_string::<i64>().value(row)),
            DataType::Utf8View => count(array.as_string_view().value(row)),
            _ => 0,
        },
        _ => 0,
    }
}

/// Upper bound of the output of `bound` over `args`: (largest value, sum over the batch).
fn estimate(bound: Bound, args: &[ColumnarValue], number_rows: usize) -> Result<(u64, u64)> {
    let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let rows = if scalar { 1 } else { number_rows };
    let sizes: Vec<Sizes> = args.iter().map(Sizes::of).collect();
    let sizes = &sizes;
    let size = |i: usize, row: usize| sizes.get(i).map_or(0, |s| s.at(row));
    let per_row: Box<dyn Fn(usize) -> u64 + '_> = match bound {
        Bound::Repeat => {
            let n = Ints::of(&args[1])?;
            Box::new(move |row| size(0, row).saturating_mul(n.count_at(row)))
        }
        Bound::Pad => {
            let n = Ints::of(&args[1])?;
            let ascii = args
                .iter()
                .take(3)
                .enumerate()
                .all(|(i, a)| i == 1 || all_ascii(a));
            let width = if ascii { 1 } else { 4 };
            Box::new(move |row| size(0, row).max(n.count_at(row).saturating_mul(width)))
        }
        Bound::Replace => Box::new(move |row| {
            let (s, from, to) = (size(0, row), size(1, row), size(2, row));
            // An empty pattern matches between every character.
            let matches = s.checked_div(from).unwrap_or(s + 1);
            s.saturating_add(matches.saturating_mul(to))
        }),
        Bound::RegexpReplace => {
            let global = args.len() > 3;
            Box::new(move |row| {
                let (s, r) = (size(0, row), size(2, row));
                let refs = references(&args[2], row);
                let matches = if global { s + 1 } else { 1 };
                s.saturating_mul(1 + refs)
                    .saturating_add(matches.saturating_mul(r))
            })
        }
        Bound::Sum(factor) => Box::new(move |row| {
            (0..args.len())
                .map(|i| size(i, row))
                .fold(0u64, u64::saturating_add)
                .saturating_mul(factor)
        }),
        Bound::ConcatWs => Box::new(move |row| {
            let separators = size(0, row).saturating_mul(args.len() as u64);
            (1..args.len())
                .map(|i| size(i, row))
                .fold(separators, u64::saturating_add)
        }),
        Bound::ArrayRepeat => {
            let n = Ints::of(&args[1])?;
            Box::new(move |row| {
                size(0, row)
                    .saturating_add(8)
                    .saturating_mul(n.count_at(row))
            })
        }
        Bound::ArrayResize => {
            let n = Ints::of(&args[1])?;
            let element = match &sizes[0] {
                Sizes::Array { element, .. } => *element,
                Sizes::Scalar(_) => match &args[0] {
                    ColumnarValue::Scalar(s) => {
                        let array = s.to_array()?;
                        list_values(array.as_ref()).map_or(8, average_bytes)
                    }
                    ColumnarValue::Array(_) => 8,
                },
            };
            Box::new(move |row| {
                element
                    .max(size(2, row))
                    .saturating_add(8)
                    .saturating_mul(n.count_at(row))
            })
        }
        Bound::Range => {
            let elements = range_elements(args)?;
            Box::new(move |row| elements(row).saturating_mul(8))
        }
        Bound::ArrayToString => Box::new(move |row| {
            let glue = size(1, row).saturating_add(size(2, row)).saturating_add(1);
            size(0, row)
                .saturating_mul(3)
                .saturating_add(sizes[0].len_at(row).saturating_mul(glue))
        }),
    };
    let mut largest = 0u64;
    let mut total = 0u64;
    for row in 0..rows {
        let bytes = per_row(row);
        largest = largest.max(bytes);
        total = total.saturating_add(bytes);
    }
    Ok((largest, total))
}

/// Elements `range` / `generate_series` would make per row: integers, or dates and
/// timestamps stepped by an interval (a month counted as 28 days, a day as 23 hours, so
/// the count is an upper bound).
fn range_elements(args: &[ColumnarValue]) -> Result<Box<dyn Fn(usize) -> u64 + '_>> {
    let (start, stop, step) = match args.len() {
        1 => (None, &args[0], None),
        2 => (Some(&args[0]), &args[1], None),
        _ => (Some(&args[0]), &args[1], Some(&args[2])),
    };
    let nanos_per_unit = |value: &ColumnarValue| -> Option<i64> {
        match value.data_type() {
            DataType::Date32 => Some(86_400_000_000_000),
            DataType::Date64 => Some(1_000_000),
            DataType::Timestamp(unit, _) => Some(match unit {
                TimeUnit::Second => 1_000_000_000,
                TimeUnit::Millisecond => 1_000_000,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1,
            }),
            _ => None,
        }
    };
    match nanos_per_unit(stop) {
        None => {
            // Integers.
            let start = start.map(Ints::of).transpose()?;
            let stop = Ints::of(stop)?;
            let step = step.map(Ints::of).transpose()?;
            Ok(Box::new(move |row| {
                let from = start.as_ref().map_or(0, |s| s.at(row));
                let to = stop.at(row);
                let by = step.as_ref().map_or(1, |s| s.at(row)).unsigned_abs().max(1);
                to.abs_diff(from) / by + 1
            }))
        }
        Some(unit) => {
            let as_ints = |value: &ColumnarValue| -> Result<Ints> {
                let raw = match value.data_type() {
                    DataType::Date32 => value.cast_to(&DataType::Int32, None)?,
                    DataType::Timestamp(..) | DataType::Date64 => {
                        value.cast_to(&DataType::Int64, None)?
                    }
                    _ => value.clone(),
                };
                Ints::of(&raw)
            };
            let start = start.map(as_ints).transpose()?;
            let stop = as_ints(stop)?;
            let step = match step {
                Some(step) => {
                    let month_day_nano = DataType::Interval(IntervalUnit::MonthDayNano);
                    let step = step.to_array(1)?;
                    let step = arrow::compute::cast(&step, &month_day_nano)?;
                    let step = step.as_primitive::<arrow::datatypes::IntervalMonthDayNanoType>();
                    if step.is_null(0) {
                        1
                    } else {
                        min_nanos(step.value(0))
                    }
                }
                None => 86_400_000_000_000,
            };
            Ok(Box::new(move |row| {
                let from = start.as_ref().map_or(0, |s| s.at(row));
                let to = stop.at(row);
                let span = (to.abs_diff(from) as u128) * unit as u128;
                (span / step.max(1) as u128 + 1).min(u64::MAX as u128) as u64
            }))
        }
    }
}

/// The shortest a step can be, in nanoseconds.
fn min_nanos(step: IntervalMonthDayNano) -> u64 {
    const DAY: u64 = 23 * 3_600_000_000_000;
    (step.months.unsigned_abs() as u64)
        .saturating_mul(28 * DAY)
        .saturating_add((step.days.unsigned_abs() as u64).saturating_mul(DAY))
        .saturating_add(step.nanoseconds.unsigned_abs())
        .max(1)
}

/// The output as made: (largest value, whole output).
fn measure(output: &ColumnarValue) -> (u64, u64) {
    match output {
        ColumnarValue::Scalar(scalar) => {
            let bytes = scalar_bytes(scalar);
            (bytes, bytes)
        }
        ColumnarValue::Array(array) => {
            let total = array.get_array_memory_size() as u64;
            let sizes = Sizes::of(output);
            let largest = (0..array.len()).map(|row| sizes.at(row)).max().unwrap_or(0);
            (largest, total)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> OutputLimits {
        OutputLimits {
            max_value_bytes: 16 << 20,
            max_batch_bytes: 128 << 20,
            deadline: None,
        }
    }

    fn s(text: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.to_owned())))
    }

    fn i(n: i64) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(n)))
    }

    #[test]
    fn bounds_cover_what_the_functions_make() {
        assert_eq!(estimate(Bound::Repeat, &[s("ab"), i(5)], 1).unwrap().0, 10);
        assert_eq!(estimate(Bound::Pad, &[s("ab"), i(5)], 1).unwrap().0, 5);
        assert_eq!(
            estimate(Bound::Pad, &[s("ab"), i(5), s("é")], 1).unwrap().0,
            20
        );
        assert_eq!(estimate(Bound::Range, &[i(0), i(10)], 1).unwrap().0, 88);
        assert_eq!(
            estimate(Bound::Range, &[i(0), i(1_000_000_000_000)], 1)
                .unwrap()
                .0,
            8_000_000_000_008
        );
        let (largest, _) = estimate(Bound::Replace, &[s("aaaa"), s(""), s("xy")], 1).unwrap();
        assert!(largest >= "xyaxyaxyaxyaxy".len() as u64);
        let (largest, _) =
            estimate(Bound::RegexpReplace, &[s("abc"), s(""), s("xy"), s("g")], 1).unwrap();
        assert!(largest >= "xyaxybxycxy".len() as u64);
    }

    #[test]
    fn limits_name_themselves() {
        let err = limits()
            .check("repeat", 1 << 30, 1 << 30, "would make")
            .unwrap_err();
        assert!(err.to_string().contains("query.max_value_bytes"), "{err}");
        let err = limits()
            .check("repeat", 1 << 20, 1 << 30, "would make")
            .unwrap_err();
        assert!(err.to_string().contains("query.max_batch_bytes"), "{err}");
        limits()
            .check("repeat", 1 << 20, 1 << 20, "would make")
            .unwrap();
    }
}
