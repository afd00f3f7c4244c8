//! `information_schema` as PostgreSQL clients read it: `schemata`, `tables`, `columns` (with
//! PostgreSQL type names in `data_type` and `udt_name`, which Grafana's PostgreSQL datasource
//! asks for) and an empty `views`, built from the session's catalog when a query names them.
//! DataFusion's own `information_schema` (Arrow type names, no `udt_name`) is off.

use std::sync::{Arc, Weak};

use arrow::array::{ArrayRef, Int32Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::MemTable;

use super::CATALOG;

/// The schema's name.
pub(crate) const NAME: &str = "information_schema";
const TABLES: [&str; 4] = ["schemata", "tables", "columns", "views"];
/// Most rows of `information_schema.columns` (a catalog past it is listed in part).
const MAX_COLUMN_ROWS: usize = 1_000_000;

/// `(schema, table)`.
type TableName = (String, String);

/// The schema, over the catalog it describes.
#[derive(Debug)]
pub(crate) struct InformationSchema {
    catalog: Weak<dyn CatalogProvider>,
}

impl InformationSchema {
    pub(crate) fn new(catalog: &Arc<dyn CatalogProvider>) -> Self {
        Self {
            catalog: Arc::downgrade(catalog),
        }
    }
}

/// `(data_type, udt_name, numeric_precision, numeric_scale)` of an Arrow type, as PostgreSQL
/// names the type it is sent as.
pub(crate) fn pg_type_names(
    t: &DataType,
) -> (&'static str, &'static str, Option<i32>, Option<i32>) {
    match t {
        DataType::Dictionary(_, v) => pg_type_names(v),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Map(..) => {
            ("text", "text", None, None)
        }
        DataType::Float64 => ("double precision", "float8", Some(53), None),
        DataType::Float32 | DataType::Float16 => ("real", "float4", Some(24), None),
        DataType::Int64 | DataType::UInt32 => ("bigint", "int8", Some(64), Some(0)),
        DataType::Int32 | DataType::UInt16 => ("integer", "int4", Some(32), Some(0)),
        DataType::Int16 | DataType::Int8 | DataType::UInt8 => {
            ("smallint", "int2", Some(16), Some(0))
        }
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => {
            ("numeric", "numeric", None, None)
        }
        DataType::Boolean => ("boolean", "bool", None, None),
        DataType::Timestamp(_, Some(_)) => ("timestamp with time zone", "timestamptz", None, None),
        DataType::Timestamp(_, None) => ("timestamp without time zone", "timestamp", None, None),
        DataType::Date32 | DataType::Date64 => ("date", "date", None, None),
        DataType::Time32(_) | DataType::Time64(_) => ("time without time zone", "time", None, None),
        DataType::Interval(_) | DataType::Duration(_) => ("interval", "interval", None, None),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            ("bytea", "bytea", None, None)
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            ("ARRAY", "_text", None, None)
        }
        _ => ("text", "text", None, None),
    }
}

fn text_fields(names: &[&str]) -> Vec<Field> {
    names
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8, true))
        .collect()
}

fn mem(schema: SchemaRef, columns: Vec<ArrayRef>) -> DfResult<Arc<dyn TableProvider>> {
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// The columns of `information_schema.columns` (PostgreSQL's, in its order, up to `udt_name`).
fn columns_schema() -> SchemaRef {
    let mut fields = text_fields(&["table_catalog", "table_schema", "table_name", "column_name"]);
    fields.push(Field::new("ordinal_position", DataType::Int32, false));
    fields.extend(text_fields(&["column_default", "is_nullable", "data_type"]));
    for n in [
        "character_maximum_length",
        "numeric_precision",
        "numeric_scale",
        "datetime_precision",
    ] {
        fields.push(Field::new(n, DataType::Int32, true));
    }
    fields.extend(text_fields(&["udt_catalog", "udt_schema", "udt_name"]));
    Arc::new(Schema::new(fields))
}

impl InformationSchema {
    fn catalog(&self) -> DfResult<Arc<dyn CatalogProvider>> {
        self.catalog
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("the catalog is gone".into()))
    }

    fn schemata(&self) -> DfResult<Arc<dyn TableProvider>> {
        let cat = self.catalog()?;
        let schema = Arc::new(Schema::new(text_fields(&[
            "catalog_name",
            "schema_name",
            "schema_owner",
        ])));
        let mut names = cat.schema_names();
        names.push(NAME.to_string());
        names.sort();
        names.dedup();
        let mut c = StringBuilder::new();
        let mut s = StringBuilder::new();
        let mut o = StringBuilder::new();
        for n in &names {
            c.append_value(CATALOG);
            s.append_value(n);
            o.append_value("fleetgate");
        }
        mem(
            schema,
            vec![
                Arc::new(c.finish()),
                Arc::new(s.finish()),
                Arc::new(o.finish()),
            ],
        )
    }

    /// `(schema, table)` of every table, this schema's own included.
    fn table_list(&self) -> DfResult<(Arc<dyn CatalogProvider>, Vec<TableName>)> {
        let cat = self.catalog()?;
        let mut out = Vec::new();
        let mut schemas = cat.schema_names();
        schemas.sort();
        for s in schemas {
            if s == NAME {
                continue;
            }
            if let Some(p) = cat.schema(&s) {
                let mut t = p.table_names();
                t.sort();
                out.extend(t.into_iter().map(|t| (s.clone(), t)));
            }
        }
        out.extend(TABLES.iter().map(|t| (NAME.to_string(), t.to_string())));
        Ok((cat, out))
    }

    fn tables(&self) -> DfResult<Arc<dyn TableProvider>> {
        let (_, list) = self.table_list()?;
        let schema = Arc::new(Schema::new(text_fields(&[
            "table_catalog",
            "table_schema",
            "table_name",
            "table_type",
        ])));
        let (mut c, mut s, mut t, mut k) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        for (schema_name, table) in &list {
            c.append_value(CATALOG);
            s.append_value(schema_name);
            t.append_value(table);
            // the catalog's own tables are views in PostgreSQL
            k.append_value(if schema_name == NAME || schema_name == "pg_catalog" {
                "VIEW"
            } else {
                "BASE TABLE"
            });
        }
        mem(
            schema,
            vec![
                Arc::new(c.finish()),
                Arc::new(s.finish()),
                Arc::new(t.finish()),
                Arc::new(k.finish()),
            ],
        )
    }

    async fn columns(&self) -> DfResult<Arc<dyn TableProvider>> {
        let (cat, list) = self.table_list()?;
        let schema = columns_schema();
        let mut text: Vec<StringBuilder> = (0..7).map(|_| StringBuilder::new()).collect();
        let mut ints: Vec<Int32Builder> = (0..5).map(|_| Int32Builder::new()).collect();
        let mut udt: Vec<StringBuilder> = (0..3).map(|_| StringBuilder::new()).collect();
        let mut rows = 0usize;
        'tables: for (schema_name, table) in &list {
            let table_schema = if schema_name == NAME {
                self.own_schema(table)?
            } else {
                let Some(p) = cat.schema(schema_name) else {
                    continue;
                };
                match p.table(table).await? {
                    Some(t) => t.schema(),
                    None => continue,
                }
            };
            for (i, f) in table_schema.fields().iter().enumerate() {
                if rows >= MAX_COLUMN_ROWS {
                    break 'tables;
                }
                rows += 1;
                let (data_type, udt_name, precision, scale) = pg_type_names(f.data_type());
                text[0].append_value(CATALOG);
                text[1].append_value(schema_name);
                text[2].append_value(table);
                text[3].append_value(f.name());
                ints[0].append_value(i32::try_from(i + 1).unwrap_or(i32::MAX));
                text[4].append_null();
                text[5].append_value(if f.is_nullable() { "YES" } else { "NO" });
                text[6].append_value(data_type);
                ints[1].append_null();
                ints[2].append_option(precision);
                ints[3].append_option(scale);
                ints[4]
                    .append_option(matches!(f.data_type(), DataType::Timestamp(..)).then_some(3));
                udt[0].append_value(CATALOG);
                udt[1].append_value("pg_catalog");
                udt[2].append_value(udt_name);
            }
        }
        let text: Vec<ArrayRef> = text
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let ints: Vec<ArrayRef> = ints
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        // the order of `columns_schema`: 4 text, 1 int, 3 text, 4 int, 3 text (udt)
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(15);
        columns.extend(text[..4].iter().cloned());
        columns.push(Arc::clone(&ints[0]));
        columns.extend(text[4..7].iter().cloned());
        columns.extend(ints[1..5].iter().cloned());
        columns.extend(udt.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        mem(schema, columns)
    }

    fn views(&self) -> DfResult<Arc<dyn TableProvider>> {
        let schema = Arc::new(Schema::new(text_fields(&[
            "table_catalog",
            "table_schema",
            "table_name",
            "view_definition",
        ])));
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?))
    }

    /// The schema of one of this schema's own tables.
    fn own_schema(&self, table: &str) -> DfResult<SchemaRef> {
        Ok(match table {
            "schemata" => self.schemata()?.schema(),
            "tables" => self.tables()?.schema(),
            "views" => self.views()?.schema(),
            _ => columns_schema(),
        })
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(Some(match name.to_ascii_lowercase().as_str() {
            "schemata" => self.schemata()?,
            "tables" => self.tables()?,
            "columns" => self.columns().await?,
            "views" => self.views()?,
            _ => return Ok(None),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name.to_ascii_lowercase().as_str())
    }
}
