//! Results for text-shaped outputs (CSV, the PostgreSQL wire): columns a text client cannot take
//! as they are become plain ones: a map (`samples.labels`) becomes its JSON object text, a
//! dictionary-encoded label column its plain strings.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, MapArray, StringArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::error::Error;

fn plain_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Map(..) => Some(DataType::Utf8),
        DataType::Dictionary(_, v) => Some(plain_type(v).unwrap_or_else(|| v.as_ref().clone())),
        _ => None,
    }
}

/// The schema of [`plain_batch`]'s output for `schema`.
pub fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| plain_type(f.data_type()).is_some())
    {
        return Arc::clone(schema);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match plain_type(f.data_type()) {
            Some(t) => Field::new(f.name(), t, true).with_metadata(f.metadata().clone()),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with map columns as JSON object text and dictionary columns decoded.
pub fn plain_batch(batch: RecordBatch) -> Result<RecordBatch, Error> {
    let schema = batch.schema();
    let out_schema = plain_schema(&schema);
    if Arc::ptr_eq(&schema, &out_schema) {
        return Ok(batch);
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (col, field) in batch.columns().iter().zip(out_schema.fields()) {
        columns.push(plain_column(col, field.data_type())?);
    }
    RecordBatch::try_new(out_schema, columns).map_err(|e| Error::SqlInternal(e.to_string()))
}

fn plain_column(col: &ArrayRef, to: &DataType) -> Result<ArrayRef, Error> {
    match col.data_type() {
        DataType::Map(..) => {
            let map = col
                .as_any()
                .downcast_ref::<MapArray>()
                .ok_or_else(|| Error::SqlInternal("map column is not a MapArray".into()))?;
            Ok(Arc::new(map_to_json(map)?))
        }
        DataType::Dictionary(..) => {
            cast(col, to).map_err(|e| Error::SqlInternal(format!("decoding a dictionary: {e}")))
        }
        _ => Ok(Arc::clone(col)),
    }
}

/// Each map as `{"key":"value",…}` (keys and values as text; a null value as JSON null).
fn map_to_json(map: &MapArray) -> Result<StringArray, Error> {
    let as_text = |a: &ArrayRef| {
        cast(a, &DataType::Utf8).map_err(|e| Error::SqlInternal(format!("map entries: {e}")))
    };
    let keys = as_text(map.keys())?;
    let values = as_text(map.values())?;
    let (keys, values) = match (
        keys.as_any().downcast_ref::<StringArray>(),
        values.as_any().downcast_ref::<StringArray>(),
    ) {
        (Some(k), Some(v)) => (k, v),
        _ => return Err(Error::SqlInternal("map entries are not text".into())),
    };
    let offsets = map.value_offsets();
    let mut out = StringBuilder::with_capacity(map.len(), map.len() * 64);
    let mut text = String::new();
    for row in 0..map.len() {
        if map.is_null(row) {
            out.append_null();
            continue;
        }
        text.clear();
        text.push('{');
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        for i in start..end {
            if i > start {
                text.push(',');
            }
            text.push_str(&serde_json_string(keys.value(i)));
            text.push(':');
            if values.is_null(i) {
                text.push_str("null");
            } else {
                text.push_str(&serde_json_string(values.value(i)));
            }
        }
        text.push('}');
        out.append_value(&text);
    }
    Ok(out.finish())
}

/// `s` as a JSON string literal.
fn serde_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, MapBuilder, StringBuilder};
    use arrow::datatypes::Int32Type;

    use super::*;

    #[test]
    fn maps_become_json_and_dictionaries_plain() {
        let mut b = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        b.keys().append_value("job");
        b.values().append_value("a\"b");
        b.keys().append_value("le");
        b.values().append_null();
        b.append(true).unwrap();
        b.append(false).unwrap();
        let map: ArrayRef = Arc::new(b.finish());
        let dict: ArrayRef = Arc::new(
            vec!["x", "y"]
                .into_iter()
                .collect::<DictionaryArray<Int32Type>>(),
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("labels", map.data_type().clone(), true),
            Field::new("cluster", dict.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(schema, vec![map, dict]).unwrap();
        let out = plain_batch(batch).unwrap();
        assert_eq!(out.schema().field(0).data_type(), &DataType::Utf8);
        assert_eq!(out.schema().field(1).data_type(), &DataType::Utf8);
        let labels = out
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(labels.value(0), r#"{"job":"a\"b","le":null}"#);
        assert!(labels.is_null(1));
        let cluster = out
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(cluster.value(1), "y");
    }
}
