//! Reading sample files: only the rows of wanted series (parquet `RowSelection` with the page
//! index, so unselected pages are not fetched), projecting `series_id, timestamp, value`; and
//! rebuilding a file's `series_id → rows` table at open from the `series_id` column alone.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::error::{Error, Result};
use crate::labels::SeriesId;
use crate::objects::Objects;
use crate::partition::{FileMeta, SAMPLES_FORMAT};

/// Rows of one series read from a file, in file order (ascending time).
pub(crate) type SeriesChunk = (SeriesId, Vec<i64>, Vec<f64>);

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// An [`AsyncFileReader`] over one object of known size, reusing cached footer metadata
/// (`ParquetObjectReader` is deprecated in parquet 59; this is its documented replacement).
#[derive(Debug)]
pub(crate) struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    metadata: Option<Arc<ParquetMetaData>>,
}

fn pq_err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(pq_err)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(pq_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            if let Some(m) = &self.metadata {
                return Ok(Arc::clone(m));
            }
            let size = self.size;
            let m = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_page_index_policy(PageIndexPolicy::Optional)
                .load_and_finish(&mut *self, size)
                .await?;
            let m = Arc::new(m);
            self.metadata = Some(Arc::clone(&m));
            Ok(m)
        }
        .boxed()
    }
}

async fn builder(
    objects: &Objects,
    path: &Path,
    size: u64,
    metadata: Option<Arc<ParquetMetaData>>,
) -> Result<ParquetRecordBatchStreamBuilder<ObjectReader>> {
    let reader = ObjectReader {
        store: Arc::clone(&objects.store),
        path: path.clone(),
        size,
        metadata,
    };
    let opts = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    Ok(ParquetRecordBatchStreamBuilder::new_with_options(reader, opts).await?)
}

fn projection(
    b: &ParquetRecordBatchStreamBuilder<ObjectReader>,
    path: &Path,
    names: &[&str],
) -> Result<ProjectionMask> {
    let schema = b.schema();
    let mut idx = Vec::with_capacity(names.len());
    for n in names {
        idx.push(
            schema
                .index_of(n)
                .map_err(|_| corrupt(path, format!("no column {n}")))?,
        );
    }
    Ok(ProjectionMask::roots(b.parquet_schema(), idx))
}

/// Reads the rows of the `wanted` series (sorted ids), or of every series when `wanted` is `None`.
pub(crate) async fn read_series(
    objects: &Objects,
    file: &FileMeta,
    wanted: Option<&[SeriesId]>,
) -> Result<Vec<SeriesChunk>> {
    let ranges = match wanted {
        Some(w) => {
            let r = file.row_ranges(w);
            if r.is_empty() {
                return Ok(Vec::new());
            }
            Some(r)
        }
        None => None,
    };
    let b = builder(objects, &file.path, file.size, file.metadata.get().cloned()).await?;
    let _ = file.metadata.set(Arc::clone(b.metadata()));
    let mask = projection(&b, &file.path, &["series_id", "timestamp", "value"])?;
    let mut b = b.with_projection(mask).with_batch_size(8192);
    if let Some(r) = ranges {
        b = b.with_row_selection(RowSelection::from_consecutive_ranges(
            r.into_iter(),
            file.rows as usize,
        ));
    }
    let batches: Vec<RecordBatch> = b.build()?.try_collect().await?;
    let mut out: Vec<SeriesChunk> = Vec::new();
    for batch in &batches {
        let ids = batch
            .column(0)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| corrupt(&file.path, "series_id is not UInt64"))?;
        let ts = batch
            .column(1)
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| corrupt(&file.path, "timestamp is not Timestamp(ms)"))?;
        let vals = batch
            .column(2)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| corrupt(&file.path, "value is not Float64"))?;
        if ids.null_count() + ts.null_count() > 0 {
            return Err(corrupt(&file.path, "null series_id or timestamp"));
        }
        let (ids, ts, vals) = (ids.values(), ts.values(), vals.values());
        for i in 0..ids.len() {
            match out.last_mut() {
                Some(c) if c.0 == ids[i] => {
                    c.1.push(ts[i]);
                    c.2.push(vals[i]);
                }
                _ => out.push((ids[i], vec![ts[i]], vec![vals[i]])),
            }
        }
    }
    Ok(out)
}

/// Rebuilds a file's in-memory entry from its metadata and `series_id` column.
pub(crate) async fn load_meta(
    objects: &Objects,
    path: Path,
    size: u64,
    hour: i64,
    seq: u64,
    compacted: bool,
) -> Result<FileMeta> {
    let b = builder(objects, &path, size, None).await?;
    let metadata = std::sync::OnceLock::new();
    let _ = metadata.set(Arc::clone(b.metadata()));
    let kv = b
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let get = |k: &str| kv.iter().find(|e| e.key == k).and_then(|e| e.value.clone());
    if get("fleetgate.format").as_deref() != Some(SAMPLES_FORMAT) {
        return Err(corrupt(&path, "missing or unknown fleetgate.format"));
    }
    let min_ts = get("fleetgate.min_ts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(hour);
    let max_ts = get("fleetgate.max_ts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(hour + super::HOUR_MS - 1);
    let rows = b.metadata().file_metadata().num_rows() as u64;
    let mask = projection(&b, &path, &["series_id"])?;
    let batches: Vec<RecordBatch> = b
        .with_projection(mask)
        .with_batch_size(65536)
        .build()?
        .try_collect()
        .await?;
    let mut table: Vec<(SeriesId, u32, u32)> = Vec::new();
    let mut row = 0u32;
    for batch in &batches {
        let ids = batch
            .column(0)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| corrupt(&path, "series_id is not UInt64"))?;
        for &id in ids.values().iter() {
            match table.last_mut() {
                Some(t) if t.0 == id => t.2 += 1,
                _ => table.push((id, row, 1)),
            }
            row += 1;
        }
    }
    table.sort_unstable_by_key(|t| t.0);
    if table.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(corrupt(&path, "rows of a series are not contiguous"));
    }
    Ok(FileMeta {
        path,
        hour,
        seq,
        compacted,
        size,
        rows,
        min_ts,
        max_ts,
        ids: table.iter().map(|t| t.0).collect(),
        first_row: table.iter().map(|t| t.1).collect(),
        counts: table.iter().map(|t| t.2).collect(),
        metadata,
    })
}
