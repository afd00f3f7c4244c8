//! On-disk layout an outside reader (DuckDB, Spark) relies on: Hive paths and Parquet schemas.

use std::fs::File;

use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Encoding;

use crate::common::*;

#[tokio::test]
async fn files_and_schema_are_documented_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = series(&store, "up", &[("cluster", "prod-eu"), ("job", "api")]);
    store
        .append(&[s(a, T0 + 5, 1.0), s(a, T0 + 3_600_000 + 5, 2.0)])
        .await
        .unwrap();
    store.flush().await.unwrap();

    let p0 = dir.path().join("samples/date=2026-01-01/hour=00");
    let p1 = dir.path().join("samples/date=2026-01-01/hour=01");
    let f0: Vec<_> = std::fs::read_dir(&p0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(f0.len(), 1);
    let name = f0[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("part-") && name.ends_with(".parquet") && name.len() == 5 + 20 + 8,
        "{name}"
    );
    assert!(p1.is_dir());

    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(&f0[0]).unwrap()).unwrap();
    let schema = std::sync::Arc::clone(b.schema());
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        vec!["metric", "cluster", "series_id", "timestamp", "value"]
    );
    assert_eq!(
        schema.field(3).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    assert_eq!(schema.field(2).data_type(), &DataType::UInt64);
    assert_eq!(schema.field(4).data_type(), &DataType::Float64);
    let md = std::sync::Arc::clone(b.metadata());
    let kv = md.file_metadata().key_value_metadata().unwrap();
    assert!(
        kv.iter()
            .any(|k| k.key == "fleetgate.format" && k.value.as_deref() == Some("samples/1"))
    );
    let rg = md.row_group(0);
    assert!(
        rg.column(3)
            .encodings()
            .any(|e| e == Encoding::DELTA_BINARY_PACKED)
    );
    assert!(
        rg.column(4)
            .encodings()
            .any(|e| e == Encoding::BYTE_STREAM_SPLIT)
    );
    assert!(rg.column(0).dictionary_page_offset().is_some());
    assert!(
        rg.column(3).offset_index_offset().is_some(),
        "page index written"
    );
    let batches: Vec<_> = b.build().unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    let cat: Vec<_> = std::fs::read_dir(dir.path().join("catalog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cat.len(), 1);
    assert_eq!(
        cat[0].file_name().unwrap().to_str().unwrap(),
        "series-00000000000000000001-00000000000000000001.parquet"
    );
    let b = ParquetRecordBatchReaderBuilder::try_new(File::open(&cat[0]).unwrap()).unwrap();
    let names: Vec<String> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, vec!["series_id", "metric", "cluster", "labels"]);
    assert!(matches!(
        b.schema().field(3).data_type(),
        DataType::Map(_, _)
    ));
}
