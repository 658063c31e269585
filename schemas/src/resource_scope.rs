//! The resource and instrumentation-scope columns, identical in both tables:
//! `resource_attributes`, `resource_attribute_types`, `resource_dropped_attributes_count`,
//! `resource_schema_url`, `scope_name`, `scope_version`, `scope_attributes`,
//! `scope_attribute_types`, `scope_dropped_attributes_count`, `scope_schema_url`.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, StringBuilder, UInt32Array, UInt32Builder};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::Result;
use crate::arrow_util::{
    DictStr, InternedDict, dict_type, downcast, opt_str, str_or_empty, table_column,
};
use crate::attributes::{AttrsBuilder, AttrsReader, map_type, types_type};
use crate::columns::*;

/// The ten fields, in table order.
pub(crate) fn fields() -> [Field; 10] {
    [
        Field::new(RESOURCE_ATTRIBUTES, map_type(), false),
        Field::new(RESOURCE_ATTRIBUTE_TYPES, types_type(), true),
        Field::new(RESOURCE_DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        Field::new(RESOURCE_SCHEMA_URL, DataType::Utf8, true),
        Field::new(SCOPE_NAME, dict_type(), false),
        Field::new(SCOPE_VERSION, DataType::Utf8, true),
        Field::new(SCOPE_ATTRIBUTES, map_type(), false),
        Field::new(SCOPE_ATTRIBUTE_TYPES, types_type(), true),
        Field::new(SCOPE_DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        Field::new(SCOPE_SCHEMA_URL, DataType::Utf8, true),
    ]
}

/// The resource and scope a row belongs to, borrowed from the request.
#[derive(Clone, Copy)]
pub(crate) struct Origin<'a> {
    pub resource: Option<&'a Resource>,
    pub resource_schema_url: &'a str,
    pub scope: Option<&'a InstrumentationScope>,
    pub scope_schema_url: &'a str,
    /// From [`ResourceScopeBuilder::intern_scope_name`], once per scope.
    pub scope_name_key: i32,
}

impl<'a> Origin<'a> {
    pub(crate) fn resource_attributes(&self) -> &'a [KeyValue] {
        self.resource.map_or(&[], |r| &r.attributes)
    }
}

fn append_opt(b: &mut StringBuilder, s: &str) {
    if s.is_empty() {
        b.append_null();
    } else {
        b.append_value(s);
    }
}

pub(crate) struct ResourceScopeBuilder {
    res_attrs: AttrsBuilder,
    res_dropped: UInt32Builder,
    res_schema_url: StringBuilder,
    scope_name: InternedDict,
    scope_version: StringBuilder,
    scope_attrs: AttrsBuilder,
    scope_dropped: UInt32Builder,
    scope_schema_url: StringBuilder,
}

/// Most attribute entries one request may produce through repetition (resource, scope and
/// metric-level attributes copied onto every row). Each row repeats them, so without a bound a
/// few-MB request (say 50k resource attributes and 50k spans) would expand to billions of
/// entries; normal requests produce thousands. Past the bound the whole request is rejected.
pub const MAX_REPEATED_ENTRIES: usize = 1 << 23;

pub const TOO_MANY_REPEATED: &str = "request too large once resource and scope \
     attributes are repeated on every row (more than 8388608 entries)";

/// Sizes of a request's output, counted before building so builders allocate once.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sizes {
    pub rows: usize,
    /// Row-level attribute entries (span or point attributes).
    pub attrs: usize,
    pub resource_attrs: usize,
    pub scope_attrs: usize,
    /// Everything repeated per row (resource + scope + metric metadata entries).
    pub repeated: usize,
}

impl Sizes {
    /// Adds `rows` rows of one resource/scope with `row_attrs` row-level entries in total and
    /// `extra_repeated` further entries repeated on each row (metric metadata).
    pub(crate) fn add(
        &mut self,
        rows: usize,
        row_attrs: usize,
        resource_attrs: usize,
        scope_attrs: usize,
        extra_repeated: usize,
    ) {
        self.rows = self.rows.saturating_add(rows);
        self.attrs = self.attrs.saturating_add(row_attrs);
        let res = resource_attrs.saturating_mul(rows);
        let scope = scope_attrs.saturating_mul(rows);
        self.resource_attrs = self.resource_attrs.saturating_add(res);
        self.scope_attrs = self.scope_attrs.saturating_add(scope);
        self.repeated = self
            .repeated
            .saturating_add(res)
            .saturating_add(scope)
            .saturating_add(extra_repeated.saturating_mul(rows));
    }

    pub(crate) fn too_large(&self) -> bool {
        self.repeated > MAX_REPEATED_ENTRIES
    }
}

impl ResourceScopeBuilder {
    pub(crate) fn with_capacity(sizes: &Sizes) -> Self {
        let rows = sizes.rows;
        Self {
            res_attrs: AttrsBuilder::with_capacity(rows, sizes.resource_attrs),
            res_dropped: UInt32Builder::with_capacity(rows),
            res_schema_url: StringBuilder::with_capacity(rows, 0),
            scope_name: InternedDict::with_capacity(rows),
            scope_version: StringBuilder::with_capacity(rows, 0),
            scope_attrs: AttrsBuilder::with_capacity(rows, sizes.scope_attrs),
            scope_dropped: UInt32Builder::with_capacity(rows),
            scope_schema_url: StringBuilder::with_capacity(rows, 0),
        }
    }

    /// The `scope_name` dictionary key of a scope; call once per scope, not per row.
    pub(crate) fn intern_scope_name(
        &mut self,
        scope: Option<&InstrumentationScope>,
    ) -> Result<i32, ArrowError> {
        self.scope_name
            .intern(scope.map_or("", |s| s.name.as_str()))
    }

    pub(crate) fn append(&mut self, o: &Origin<'_>) -> Result<(), ArrowError> {
        self.res_attrs.append(o.resource_attributes())?;
        self.res_dropped
            .append_value(o.resource.map_or(0, |r| r.dropped_attributes_count));
        append_opt(&mut self.res_schema_url, o.resource_schema_url);
        let scope = o.scope;
        self.scope_name.push(o.scope_name_key);
        append_opt(
            &mut self.scope_version,
            scope.map_or("", |s| s.version.as_str()),
        );
        self.scope_attrs
            .append(scope.map_or(&[], |s| &s.attributes))?;
        self.scope_dropped
            .append_value(scope.map_or(0, |s| s.dropped_attributes_count));
        append_opt(&mut self.scope_schema_url, o.scope_schema_url);
        Ok(())
    }

    /// The ten columns, in table order.
    pub(crate) fn finish(&mut self) -> Result<[ArrayRef; 10], ArrowError> {
        let (ra, rt) = self.res_attrs.finish();
        let (sa, st) = self.scope_attrs.finish();
        Ok([
            ra,
            rt,
            Arc::new(self.res_dropped.finish()),
            Arc::new(self.res_schema_url.finish()),
            self.scope_name.finish()?,
            Arc::new(self.scope_version.finish()),
            sa,
            st,
            Arc::new(self.scope_dropped.finish()),
            Arc::new(self.scope_schema_url.finish()),
        ])
    }
}

/// The columns, converted to their canonical types, owned so readers can borrow from them.
pub(crate) struct ResourceScopeColumns([ArrayRef; 10]);

impl ResourceScopeColumns {
    pub(crate) fn new(batch: &RecordBatch, schema: &Schema) -> Result<Self> {
        let names = fields();
        let mut cols = Vec::with_capacity(names.len());
        for f in &names {
            cols.push(table_column(batch, schema, f.name())?);
        }
        let cols: [ArrayRef; 10] = cols
            .try_into()
            .map_err(|_| crate::Error::InvalidData("resource/scope columns".into()))?;
        Ok(Self(cols))
    }

    pub(crate) fn reader(&self) -> Result<ResourceScopeReader<'_>> {
        let c = &self.0;
        Ok(ResourceScopeReader {
            res_attrs: AttrsReader::new(c[0].as_ref(), c[1].as_ref(), RESOURCE_ATTRIBUTES)?,
            res_dropped: downcast(c[2].as_ref(), RESOURCE_DROPPED_ATTRIBUTES_COUNT)?,
            res_schema_url: downcast(c[3].as_ref(), RESOURCE_SCHEMA_URL)?,
            scope_name: DictStr::new(c[4].as_ref(), SCOPE_NAME)?,
            scope_version: downcast(c[5].as_ref(), SCOPE_VERSION)?,
            scope_attrs: AttrsReader::new(c[6].as_ref(), c[7].as_ref(), SCOPE_ATTRIBUTES)?,
            scope_dropped: downcast(c[8].as_ref(), SCOPE_DROPPED_ATTRIBUTES_COUNT)?,
            scope_schema_url: downcast(c[9].as_ref(), SCOPE_SCHEMA_URL)?,
        })
    }
}

pub(crate) struct ResourceScopeReader<'a> {
    res_attrs: AttrsReader<'a>,
    res_dropped: &'a UInt32Array,
    res_schema_url: &'a StringArray,
    scope_name: DictStr<'a>,
    scope_version: &'a StringArray,
    scope_attrs: AttrsReader<'a>,
    scope_dropped: &'a UInt32Array,
    scope_schema_url: &'a StringArray,
}

impl ResourceScopeReader<'_> {
    /// The resource of `row` and the resource-level schema URL.
    pub(crate) fn resource(&self, row: usize) -> Result<(Resource, String)> {
        Ok((
            Resource {
                attributes: self.res_attrs.read(row)?,
                dropped_attributes_count: self.res_dropped.value(row),
                entity_refs: Vec::new(),
            },
            str_or_empty(self.res_schema_url, row).to_owned(),
        ))
    }

    /// The scope of `row` and the scope-level schema URL.
    pub(crate) fn scope(&self, row: usize) -> Result<(InstrumentationScope, String)> {
        Ok((
            InstrumentationScope {
                name: self.scope_name.get(row).to_owned(),
                version: str_or_empty(self.scope_version, row).to_owned(),
                attributes: self.scope_attrs.read(row)?,
                dropped_attributes_count: self.scope_dropped.value(row),
            },
            str_or_empty(self.scope_schema_url, row).to_owned(),
        ))
    }

    pub(crate) fn same_resource(&self, a: usize, b: usize) -> bool {
        self.res_dropped.value(a) == self.res_dropped.value(b)
            && opt_str(self.res_schema_url, a) == opt_str(self.res_schema_url, b)
            && self.res_attrs.row_eq(a, b)
    }

    pub(crate) fn same_scope(&self, a: usize, b: usize) -> bool {
        self.scope_name.get(a) == self.scope_name.get(b)
            && opt_str(self.scope_version, a) == opt_str(self.scope_version, b)
            && self.scope_dropped.value(a) == self.scope_dropped.value(b)
            && opt_str(self.scope_schema_url, a) == opt_str(self.scope_schema_url, b)
            && self.scope_attrs.row_eq(a, b)
    }
}

/// Groups consecutive rows into resource → scope → items, merging across batch boundaries.
/// `R` is `ResourceSpans`/`ResourceMetrics`, `S` is `ScopeSpans`/`ScopeMetrics`.
pub(crate) struct Grouper<R, S> {
    pub out: Vec<R>,
    new_resource: fn(Resource, String) -> R,
    resource_of: fn(&R) -> (Option<&Resource>, &str),
    scopes_of: fn(&mut R) -> &mut Vec<S>,
    new_scope: fn(InstrumentationScope, String) -> S,
    scope_of: fn(&S) -> (Option<&InstrumentationScope>, &str),
}

impl<R, S> Grouper<R, S> {
    pub(crate) fn new(
        new_resource: fn(Resource, String) -> R,
        resource_of: fn(&R) -> (Option<&Resource>, &str),
        scopes_of: fn(&mut R) -> &mut Vec<S>,
        new_scope: fn(InstrumentationScope, String) -> S,
        scope_of: fn(&S) -> (Option<&InstrumentationScope>, &str),
    ) -> Self {
        Self {
            out: Vec::new(),
            new_resource,
            resource_of,
            scopes_of,
            new_scope,
            scope_of,
        }
    }

    /// Returns the scope group row `row` belongs to, opening new groups where the resource or
    /// scope differs from the previous row's. `first_in_batch` rows are compared with the last
    /// group by value (it may come from the previous batch).
    pub(crate) fn group_for(
        &mut self,
        r: &ResourceScopeReader<'_>,
        row: usize,
        first_in_batch: bool,
    ) -> Result<(&mut S, bool)> {
        let resource_changed = first_in_batch || !r.same_resource(row - 1, row);
        let scope_changed = resource_changed || !r.same_scope(row - 1, row);
        let mut opened_scope = false;
        if resource_changed {
            let (res, url) = r.resource(row)?;
            let same_as_last = self.out.last().is_some_and(|last| {
                let (lr, lu) = (self.resource_of)(last);
                lr == Some(&res) && lu == url
            });
            if !same_as_last {
                self.out.push((self.new_resource)(res, url));
            }
        }
        if scope_changed {
            let (scope, url) = r.scope(row)?;
            let scope_of = self.scope_of;
            let new_scope = self.new_scope;
            let Some(last) = self.out.last_mut() else {
                return Err(crate::Error::InvalidData("no resource group".into()));
            };
            let scopes = (self.scopes_of)(last);
            let same_as_last = scopes.last().is_some_and(|s| {
                let (ls, lu) = scope_of(s);
                ls == Some(&scope) && lu == url
            });
            if !same_as_last {
                scopes.push(new_scope(scope, url));
                opened_scope = true;
            }
        }
        let Some(last) = self.out.last_mut() else {
            return Err(crate::Error::InvalidData("no resource group".into()));
        };
        match (self.scopes_of)(last).last_mut() {
            Some(s) => Ok((s, opened_scope)),
            None => Err(crate::Error::InvalidData("no scope group".into())),
        }
    }
}

/// `service_name` when the resource has no string `service.name` (the OTel SDK default prefix).
pub(crate) const UNKNOWN_SERVICE: &str = "unknown_service";

/// The first string value of `key` in `attrs`.
pub(crate) fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The derived `service_name` of a resource.
pub(crate) fn service_name(attrs: &[KeyValue]) -> &str {
    string_attr(attrs, "service.name").unwrap_or(UNKNOWN_SERVICE)
}
