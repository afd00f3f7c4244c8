//! Reading sample files: only the rows of wanted series (parquet `RowSelection` with the page
//! index, so unselected pages are not fetched), projecting `series_id, timestamp, value`; and
//! (re)building a file's `series_id → rows` table from the `series_id` column alone, at open and
//! whenever the table cache misses. Footers (with the page index) go through the footer cache.

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
use crate::partition::cache::FileCaches;
use crate::partition::{FileMeta, SAMPLES_FORMAT, SeriesTable};

/// Rows of one series read from a file, in file order (ascending time).
pub(crate) type SeriesChunk = (SeriesId, Vec<i64>, Vec<f64>);

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Runs a decode of the file at `path`, turning a panic inside the Parquet and Arrow decoders
/// into [`Error::Corrupt`] naming the file. Those crates are not panic-free on damaged input
/// (fuzz/parquet_open found a data page in dictionary encoding without a dictionary page
/// panicking the column decoder); [`super::layout`] refuses what a footer check can, this
/// contains the rest, so a damaged file fails its read and nothing else.
async fn contained<T>(path: &Path, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let fut = Contained(Box::pin(fut));
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => Err(corrupt(
            path,
            format!("decoder panicked: {}", crate::panic_message(&*panic)),
        )),
    }
}

thread_local! {
    static CONTAINED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// True while this thread polls a decode run by [`contained`]: a panic now is caught and becomes
/// an error (the fuzz targets' panic hook uses this to tell contained panics from crashes).
pub fn in_contained_decode() -> bool {
    CONTAINED.with(|c| c.get() > 0)
}

/// Runs `f` marked as a contained decode (see [`in_contained_decode`]); the caller catches the
/// panic.
pub(crate) fn contained_sync<T>(f: impl FnOnce() -> T) -> T {
    struct Mark;
    impl Drop for Mark {
        fn drop(&mut self) {
            CONTAINED.with(|c| c.set(c.get().saturating_sub(1)));
        }
    }
    CONTAINED.with(|c| c.set(c.get() + 1));
    let _mark = Mark;
    f()
}

/// Marks the thread as inside [`contained`] for the duration of each poll.
struct Contained<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for Contained<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let inner = self.0.as_mut();
        contained_sync(|| inner.poll(cx))
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
            super::layout::check(&m, size).map_err(ParquetError::General)?;
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
    // The Arrow schema is derived from the Parquet schema, never decoded from the file's
    // embedded `ARROW:schema` IPC blob: arrow-ipc panics on some malformed ones (found by
    // fuzz/parquet_open), and our files' columns map to the same types either way.
    let opts = ArrowReaderOptions::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .with_skip_arrow_metadata(true);
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

/// The series table of `file`: from the cache, or rebuilt from its `series_id` column (and then
/// cached). Also returns the footer when it had to be read for that.
async fn series_table_with(
    objects: &Objects,
    caches: &FileCaches,
    file: &FileMeta,
    metadata: Option<Arc<ParquetMetaData>>,
) -> Result<(Arc<SeriesTable>, Option<Arc<ParquetMetaData>>)> {
    if let Some(t) = caches.table(file.key) {
        return Ok((t, metadata));
    }
    let b = builder(objects, &file.path, file.size, metadata).await?;
    let md = Arc::clone(b.metadata());
    let table = read_table(b, &file.path).await?;
    if table.rows() != file.rows
        || (table.rows() > 0 && table.id_range() != (file.min_id, file.max_id))
    {
        return Err(corrupt(&file.path, "series_id column changed since open"));
    }
    let table = Arc::new(table);
    caches.put_table(file.key, Arc::clone(&table));
    Ok((table, Some(md)))
}

/// The series table of `file` (cached), without reading any sample column.
pub(crate) async fn series_table(
    objects: &Objects,
    caches: &FileCaches,
    file: &FileMeta,
) -> Result<Arc<SeriesTable>> {
    contained(&file.path, series_table_inner(objects, caches, file)).await
}

async fn series_table_inner(
    objects: &Objects,
    caches: &FileCaches,
    file: &FileMeta,
) -> Result<Arc<SeriesTable>> {
    if file.rows == 0 {
        return Ok(Arc::new(SeriesTable::default()));
    }
    let md = caches.metadata(file.key);
    let had_md = md.is_some();
    let (table, md) = series_table_with(objects, caches, file, md).await?;
    if !had_md && let Some(m) = md {
        caches.put_metadata(file.key, m);
    }
    Ok(table)
}

/// Reads the rows of the `wanted` series (sorted ids), or of every series when `wanted` is `None`.
pub(crate) async fn read_series(
    objects: &Objects,
    caches: &FileCaches,
    file: &FileMeta,
    wanted: Option<&[SeriesId]>,
) -> Result<Vec<SeriesChunk>> {
    contained(&file.path, read_series_inner(objects, caches, file, wanted)).await
}

async fn read_series_inner(
    objects: &Objects,
    caches: &FileCaches,
    file: &FileMeta,
    wanted: Option<&[SeriesId]>,
) -> Result<Vec<SeriesChunk>> {
    let cached_md = caches.metadata(file.key);
    let mut md = cached_md.clone();
    let ranges = match wanted {
        Some(w) => {
            if !file.may_hold(w) {
                return Ok(Vec::new());
            }
            let (table, m) = series_table_with(objects, caches, file, md).await?;
            md = m;
            let r = table.row_ranges(w);
            if r.is_empty() {
                if cached_md.is_none()
                    && let Some(m) = md
                {
                    caches.put_metadata(file.key, m);
                }
                return Ok(Vec::new());
            }
            Some(r)
        }
        None => None,
    };
    let b = builder(objects, &file.path, file.size, md).await?;
    if cached_md.is_none() {
        caches.put_metadata(file.key, Arc::clone(b.metadata()));
    }
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
        // rows come in runs of one series: copy each run at once
        let mut i = 0;
        while i < ids.len() {
            let id = ids[i];
            let j = i + ids[i..]
                .iter()
                .position(|x| *x != id)
                .unwrap_or(ids.len() - i);
            match out.last_mut() {
                Some(c) if c.0 == id => {
                    c.1.extend_from_slice(&ts[i..j]);
                    c.2.extend_from_slice(&vals[i..j]);
                }
                _ => out.push((id, ts[i..j].to_vec(), vals[i..j].to_vec())),
            }
            i = j;
        }
    }
    Ok(out)
}

/// Builds a file's series table from its `series_id` column alone.
async fn read_table(
    b: ParquetRecordBatchStreamBuilder<ObjectReader>,
    path: &Path,
) -> Result<SeriesTable> {
    let mask = projection(&b, path, &["series_id"])?;
    let mut stream = b.with_projection(mask).with_batch_size(65536).build()?;
    let mut entries: Vec<(SeriesId, u32, u32)> = Vec::new();
    let mut row = 0u32;
    while let Some(batch) = stream.try_next().await? {
        let ids = batch
            .column(0)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| corrupt(path, "series_id is not UInt64"))?;
        if ids.null_count() > 0 {
            return Err(corrupt(path, "null series_id"));
        }
        for &id in ids.values().iter() {
            match entries.last_mut() {
                Some(t) if t.0 == id => t.2 += 1,
                _ => entries.push((id, row, 1)),
            }
            row = row
                .checked_add(1)
                .ok_or_else(|| corrupt(path, "more than 2^32 rows"))?;
        }
    }
    SeriesTable::from_entries(entries)
        .ok_or_else(|| corrupt(path, "rows of a series are not contiguous"))
}

/// Rebuilds a file's in-memory entry from its metadata and `series_id` column; its series table
/// and footer go to `caches`.
pub(crate) async fn load_meta(
    objects: &Objects,
    caches: &FileCaches,
    path: Path,
    size: u64,
    hour: i64,
    seq: u64,
    compacted: u32,
) -> Result<FileMeta> {
    let shown = path.clone();
    contained(&shown, async move {
        let b = builder(objects, &path, size, None).await?;
        let metadata = Arc::clone(b.metadata());
        let kv = metadata
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
        let rows = metadata.file_metadata().num_rows() as u64;
        let table = read_table(b, &path).await?;
        if table.rows() != rows {
            return Err(corrupt(
                &path,
                "series_id rows differ from the footer's row count",
            ));
        }
        let (min_id, max_id) = table.id_range();
        let meta = FileMeta {
            key: FileMeta::new_key(),
            path,
            hour,
            seq,
            compacted,
            size,
            rows,
            min_ts,
            max_ts,
            min_id,
            max_id,
        };
        caches.put_table(meta.key, Arc::new(table));
        caches.put_metadata(meta.key, metadata);
        Ok(meta)
    })
    .await
}
