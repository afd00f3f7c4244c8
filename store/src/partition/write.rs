//! Writing one sample file: rows sorted by `(metric, series_id, timestamp)`, de-duplicated, with
//! the encodings chosen by measurement (see [`SamplesEncoding`]).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringDictionaryBuilder, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use object_store::path::Path;
use parquet::arrow::{ArrowWriter, AsyncArrowWriter};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::labels::SeriesId;
use crate::objects::Objects;
use crate::partition::{FileMeta, SAMPLES_FORMAT, SeriesTable};

/// Rows per row group.
const ROW_GROUP_ROWS: usize = 1 << 20;
/// Rows per data page (finer pages let a row selection skip more).
const PAGE_ROWS: usize = 8192;
/// Rows per Arrow batch handed to the writer.
pub(crate) const BATCH_ROWS: usize = 64 * 1024;

/// How the `value` column is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueEncoding {
    /// `BYTE_STREAM_SPLIT`: byte planes, which ZSTD then compresses well.
    ByteStreamSplit,
    /// `PLAIN` little-endian doubles.
    Plain,
    /// Dictionary (falls back to plain once the dictionary page is full).
    Dictionary,
}

/// How the `timestamp` column is encoded when `delta_ids_and_timestamps` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampEncoding {
    /// `DELTA_BINARY_PACKED`.
    Delta,
    /// `PLAIN` (ZSTD does the work).
    Plain,
    /// `BYTE_STREAM_SPLIT` (byte planes, then ZSTD).
    ByteStreamSplit,
}

/// The encoding knobs of a sample file; `Default` is what the store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplesEncoding {
    /// `DELTA_BINARY_PACKED` for `series_id` and (see `timestamp`) `timestamp`; else parquet's
    /// default (dictionary with plain fallback) for every column.
    pub delta_ids_and_timestamps: bool,
    /// Encoding of `timestamp` when `delta_ids_and_timestamps` is set.
    pub timestamp: TimestampEncoding,
    /// Encoding of `value`.
    pub value: ValueEncoding,
    /// ZSTD level.
    pub zstd_level: i32,
}

impl Default for SamplesEncoding {
    fn default() -> Self {
        Self {
            delta_ids_and_timestamps: true,
            timestamp: TimestampEncoding::Delta,
            value: ValueEncoding::ByteStreamSplit,
            zstd_level: 3,
        }
    }
}

/// The Arrow schema of sample files.
pub fn samples_schema() -> SchemaRef {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("metric", dict.clone(), false),
        Field::new("cluster", dict, true),
        Field::new("series_id", DataType::UInt64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// One series' rows for a file: sorted by time, no duplicate timestamps.
#[derive(Debug, Clone)]
pub struct SeriesRows {
    /// Series id.
    pub id: SeriesId,
    /// `__name__` ("" when absent).
    pub metric: Arc<str>,
    /// `cluster` label.
    pub cluster: Option<Arc<str>>,
    /// Timestamps (ms), ascending, unique.
    pub ts: Vec<i64>,
    /// Values, parallel to `ts`.
    pub values: Vec<f64>,
}

fn writer_props(enc: SamplesEncoding, min_ts: i64, max_ts: i64) -> Result<WriterProperties> {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(enc.zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_sorting_columns(Some(
            [0, 2, 3]
                .into_iter()
                .map(|c| SortingColumn {
                    column_idx: c,
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
        ))
        .set_key_value_metadata(Some(vec![
            KeyValue::new("fleetgate.format".into(), SAMPLES_FORMAT.to_string()),
            KeyValue::new("fleetgate.min_ts".into(), min_ts.to_string()),
            KeyValue::new("fleetgate.max_ts".into(), max_ts.to_string()),
        ]));
    if enc.delta_ids_and_timestamps {
        b = b
            .set_dictionary_enabled(false)
            .set_column_dictionary_enabled(ColumnPath::from("metric"), true)
            .set_column_dictionary_enabled(ColumnPath::from("cluster"), true)
            .set_column_encoding(ColumnPath::from("series_id"), Encoding::DELTA_BINARY_PACKED)
            .set_column_encoding(
                ColumnPath::from("timestamp"),
                match enc.timestamp {
                    TimestampEncoding::Delta => Encoding::DELTA_BINARY_PACKED,
                    TimestampEncoding::Plain => Encoding::PLAIN,
                    TimestampEncoding::ByteStreamSplit => Encoding::BYTE_STREAM_SPLIT,
                },
            );
    }
    b = match enc.value {
        ValueEncoding::ByteStreamSplit => b
            .set_column_dictionary_enabled(ColumnPath::from("value"), false)
            .set_column_encoding(ColumnPath::from("value"), Encoding::BYTE_STREAM_SPLIT),
        ValueEncoding::Plain => b
            .set_column_dictionary_enabled(ColumnPath::from("value"), false)
            .set_column_encoding(ColumnPath::from("value"), Encoding::PLAIN),
        ValueEncoding::Dictionary => {
            b.set_column_dictionary_enabled(ColumnPath::from("value"), true)
        }
    };
    Ok(b.build())
}

/// Cuts the rows of a file, pushed series by series in file order, into Arrow batches of about
/// [`BATCH_ROWS`] rows (a series is never split; one larger than that is a batch of its own), and
/// records the file's series table. Only the batch being built is held.
pub(crate) struct Batcher {
    schema: SchemaRef,
    metric: StringDictionaryBuilder<Int32Type>,
    cluster: StringDictionaryBuilder<Int32Type>,
    ids: Vec<u64>,
    ts: Vec<i64>,
    vals: Vec<f64>,
    table: Vec<(SeriesId, u32, u32)>,
    row: u32,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("batch_rows", &self.ts.len())
            .field("rows", &self.row)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    pub(crate) fn new() -> Self {
        Self {
            schema: samples_schema(),
            metric: StringDictionaryBuilder::new(),
            cluster: StringDictionaryBuilder::new(),
            ids: Vec::new(),
            ts: Vec::new(),
            vals: Vec::new(),
            table: Vec::new(),
            row: 0,
        }
    }

    /// Adds one series' rows (sorted, unique timestamps; `values` parallel). Returns the batch
    /// completed before them, if adding them would have made it exceed [`BATCH_ROWS`].
    pub(crate) fn push(
        &mut self,
        id: SeriesId,
        metric: &str,
        cluster: Option<&str>,
        ts: &[i64],
        values: &[f64],
    ) -> Result<Option<RecordBatch>> {
        let k = ts.len().min(values.len());
        if k == 0 {
            return Ok(None);
        }
        let n = self.ts.len();
        let done = if n > 0 && n + k > BATCH_ROWS {
            self.take_batch()?
        } else {
            None
        };
        if self.ts.capacity() == 0 {
            let cap = k.max(BATCH_ROWS);
            self.ids.reserve_exact(cap);
            self.ts.reserve_exact(cap);
            self.vals.reserve_exact(cap);
        }
        self.metric.append_values(metric, k);
        match cluster {
            Some(c) => self.cluster.append_values(c, k),
            None => self.cluster.append_nulls(k),
        }
        self.ids.extend(std::iter::repeat_n(id, k));
        self.ts.extend_from_slice(&ts[..k]);
        self.vals.extend_from_slice(&values[..k]);
        let k32 = u32::try_from(k).map_err(|_| too_many_rows())?;
        self.table.push((id, self.row, k32));
        self.row = self.row.checked_add(k32).ok_or_else(too_many_rows)?;
        Ok(done)
    }

    /// The batch being built, if it has rows; the builder starts a new one.
    pub(crate) fn take_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.ts.is_empty() {
            return Ok(None);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.metric.finish()),
            Arc::new(self.cluster.finish()),
            Arc::new(UInt64Array::from(std::mem::take(&mut self.ids))),
            Arc::new(
                TimestampMillisecondArray::from(std::mem::take(&mut self.ts)).with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(std::mem::take(&mut self.vals))),
        ];
        Ok(Some(RecordBatch::try_new(Arc::clone(&self.schema), cols)?))
    }

    /// Rows pushed so far.
    pub(crate) fn rows(&self) -> u64 {
        u64::from(self.row)
    }

    /// The file's series table and its entry (`size` bytes, written to `path`).
    pub(crate) fn finish(
        self,
        file: FileInfo,
        size: u64,
        min_ts: i64,
        max_ts: i64,
    ) -> Result<FileMetaPublic> {
        let rows = self.rows();
        let table = SeriesTable::from_entries(self.table)
            .ok_or_else(|| Error::InvalidSeries("a series appears twice in one file".into()))?;
        let (min_id, max_id) = table.id_range();
        let meta = FileMeta {
            key: FileMeta::new_key(),
            path: file.path,
            hour: file.hour,
            seq: file.seq,
            compacted: file.compacted,
            size,
            rows,
            min_ts,
            max_ts,
            min_id,
            max_id,
        };
        Ok(FileMetaPublic(meta, Arc::new(table)))
    }
}

fn too_many_rows() -> Error {
    Error::InvalidSeries("more than 2^32 rows in one sample file".into())
}

/// Name and place of a sample file.
#[derive(Debug, Clone)]
pub(crate) struct FileInfo {
    pub(crate) path: Path,
    pub(crate) hour: i64,
    pub(crate) seq: u64,
    /// Compaction generation (0: flushed).
    pub(crate) compacted: u32,
}

/// The Parquet writer of a sample file: `min_ts`/`max_ts` (its key-value metadata) must be known
/// before the first row.
pub(crate) fn samples_writer<W: std::io::Write + Send>(
    sink: W,
    enc: SamplesEncoding,
    min_ts: i64,
    max_ts: i64,
) -> Result<ArrowWriter<W>> {
    Ok(ArrowWriter::try_new(
        sink,
        samples_schema(),
        Some(writer_props(enc, min_ts, max_ts)?),
    )?)
}

/// `(min, max)` timestamp of sorted series (`(hour, hour)` when there are no rows).
pub(crate) fn ts_range<'a>(ts: impl Iterator<Item = &'a [i64]>, hour: i64) -> (i64, i64) {
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for t in ts {
        if let (Some(a), Some(b)) = (t.first(), t.last()) {
            lo = lo.min(*a);
            hi = hi.max(*b);
        }
    }
    if lo > hi { (hour, hour) } else { (lo, hi) }
}

/// Encodes a sample file in memory. `series` is sorted here by `(metric, id)`; returns the bytes
/// and the file's in-memory entry (`size` set, `path` as given). The store's flush streams to the
/// object store instead (see `Store::write_memtable`); both produce the same file.
pub fn encode_samples(
    mut series: Vec<SeriesRows>,
    enc: SamplesEncoding,
    hour: i64,
    seq: u64,
    compacted: u32,
    path: Path,
) -> Result<(Vec<u8>, FileMetaPublic)> {
    series.retain(|s| !s.ts.is_empty());
    series.sort_by(|a, b| a.metric.cmp(&b.metric).then(a.id.cmp(&b.id)));
    let (min_ts, max_ts) = ts_range(series.iter().map(|s| &s.ts[..]), hour);
    let mut w = samples_writer(Vec::new(), enc, min_ts, max_ts)?;
    let mut b = Batcher::new();
    for s in &series {
        let done = b.push(s.id, &s.metric, s.cluster.as_deref(), &s.ts, &s.values)?;
        if let Some(batch) = done {
            w.write(&batch)?;
        }
    }
    if let Some(batch) = b.take_batch()? {
        w.write(&batch)?;
    }
    let bytes = w.into_inner()?;
    let file = FileInfo {
        path,
        hour,
        seq,
        compacted,
    };
    let meta = b.finish(file, bytes.len() as u64, min_ts, max_ts)?;
    Ok((bytes, meta))
}

/// One series' rows for [`write_samples_streaming`]: `(id, metric, cluster, timestamps, values)`,
/// timestamps ascending and unique, values parallel.
pub(crate) type SeriesSlice<'a> = (SeriesId, &'a str, Option<&'a str>, &'a [i64], &'a [f64]);

/// Encodes a sample file from `series` (in file order: by `(metric, id)`) and streams it to the
/// object store as it goes, holding one Arrow batch, one row group and one upload part at a time
/// rather than the file; on the local filesystem the file and its directory are fsync'd before
/// this returns. `min_ts`/`max_ts` go to the key-value metadata. Produces the same bytes as
/// [`encode_samples`]. On error the upload is aborted (no object appears). Must run on a
/// blocking thread (it drives the upload with `rt.block_on`).
pub(crate) fn write_samples_streaming<'a>(
    objects: &Objects,
    rt: &Handle,
    file: FileInfo,
    enc: SamplesEncoding,
    (min_ts, max_ts): (i64, i64),
    series: impl Iterator<Item = SeriesSlice<'a>>,
) -> Result<FileMetaPublic> {
    let mut w = AsyncArrowWriter::try_new(
        objects.streaming_writer(&file.path),
        samples_schema(),
        Some(writer_props(enc, min_ts, max_ts)?),
    )?;
    let mut b = Batcher::new();
    // Set once `finish` has shut the upload down: it can no longer be aborted (object_store's
    // `BufWriter::abort` panics on a writer that was shut down); a failed finish leaves no object.
    let mut finishing = false;
    let run = || -> Result<()> {
        for (id, metric, cluster, ts, values) in series {
            if let Some(batch) = b.push(id, metric, cluster, ts, values)? {
                rt.block_on(w.write(&batch))?;
            }
        }
        if let Some(batch) = b.take_batch()? {
            rt.block_on(w.write(&batch))?;
        }
        finishing = true;
        rt.block_on(w.finish())?;
        Ok(())
    };
    if let Err(e) = run() {
        if !finishing {
            let mut upload = w.into_inner();
            if let Err(abort) = rt.block_on(upload.abort()) {
                tracing::warn!(path = %file.path, error = %abort, "aborting a sample file upload");
            }
        }
        return Err(e);
    }
    let size = w.bytes_written() as u64;
    objects.sync_blocking(&file.path)?;
    b.finish(file, size, min_ts, max_ts)
}

/// The in-memory entry of an encoded file and its series table (opaque outside the crate).
#[derive(Debug)]
pub struct FileMetaPublic(pub(crate) FileMeta, pub(crate) Arc<SeriesTable>);

impl FileMetaPublic {
    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        self.0.rows
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use parquet::file::metadata::ParquetMetaDataReader;

    use super::*;

    /// Regular 15 s scrapes with ±3 ms jitter: timestamps and ids must cost well under a byte.
    #[test]
    fn regular_series_encode_densely() {
        let t0 = 1_767_225_600_000i64;
        let rows: Vec<SeriesRows> = (0..200u64)
            .map(|id| SeriesRows {
                id: id + 1,
                metric: Arc::from(format!("m{}", id / 50)),
                cluster: Some(Arc::from("c")),
                ts: (0..240)
                    .map(|k| t0 + k * 15_000 + ((k * 7 + id as i64) % 7) - 3)
                    .collect(),
                values: (0..240).map(|k| (k * 3) as f64).collect(),
            })
            .collect();
        let n = 200 * 240;
        let (bytes, meta) =
            encode_samples(rows, SamplesEncoding::default(), t0, 1, 0, Path::from("x")).unwrap();
        assert_eq!(meta.rows(), n);
        let md = ParquetMetaDataReader::new()
            .parse_and_finish(&Bytes::from(bytes))
            .unwrap();
        let rows: i64 = md.row_groups().iter().map(|rg| rg.num_rows()).sum();
        assert_eq!(rows as u64, n);
        let col = |i: usize| -> f64 {
            md.row_groups()
                .iter()
                .map(|rg| rg.column(i).compressed_size())
                .sum::<i64>() as f64
                / rows as f64
        };
        assert!(col(2) < 0.1, "series_id {} B/row", col(2));
        assert!(col(3) < 1.0, "timestamp {} B/row", col(3));
        assert!(col(0) < 0.1, "metric {} B/row", col(0));
    }
}
