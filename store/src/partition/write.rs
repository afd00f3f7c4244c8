//! Writing one sample file: rows sorted by `(metric, series_id, timestamp)`, de-duplicated, with
//! the encodings chosen by measurement (see [`SamplesEncoding`]).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringDictionaryBuilder, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::labels::SeriesId;
use crate::partition::{FileMeta, SAMPLES_FORMAT, SeriesTable};

/// Rows per row group.
const ROW_GROUP_ROWS: usize = 1 << 20;
/// Rows per data page (finer pages let a row selection skip more).
const PAGE_ROWS: usize = 8192;
/// Rows per Arrow batch handed to the writer.
const BATCH_ROWS: usize = 64 * 1024;

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

/// Encodes a sample file. `series` is sorted here by `(metric, id)`; returns the bytes and the
/// file's in-memory entry (`size` set, `path` as given).
pub fn encode_samples(
    mut series: Vec<SeriesRows>,
    enc: SamplesEncoding,
    hour: i64,
    seq: u64,
    compacted: bool,
    path: Path,
) -> Result<(Vec<u8>, FileMetaPublic)> {
    series.retain(|s| !s.ts.is_empty());
    series.sort_by(|a, b| a.metric.cmp(&b.metric).then(a.id.cmp(&b.id)));
    let rows: usize = series.iter().map(|s| s.ts.len()).sum();
    let min_ts = series
        .iter()
        .filter_map(|s| s.ts.first())
        .copied()
        .min()
        .unwrap_or(hour);
    let max_ts = series
        .iter()
        .filter_map(|s| s.ts.last())
        .copied()
        .max()
        .unwrap_or(hour);
    let schema = samples_schema();
    let mut w = ArrowWriter::try_new(
        Vec::new(),
        Arc::clone(&schema),
        Some(writer_props(enc, min_ts, max_ts)?),
    )?;

    let mut table: Vec<(SeriesId, u32, u32)> = Vec::with_capacity(series.len());
    let mut row = 0u32;
    // Build batches of ~BATCH_ROWS rows (never splitting a series' bookkeeping).
    let mut i = 0;
    while i < series.len() {
        let mut j = i;
        let mut n = 0;
        while j < series.len() && (n == 0 || n + series[j].ts.len() <= BATCH_ROWS) {
            n += series[j].ts.len();
            j += 1;
        }
        let chunk = &series[i..j];
        let mut metric = StringDictionaryBuilder::<Int32Type>::new();
        let mut cluster = StringDictionaryBuilder::<Int32Type>::new();
        let mut ids = Vec::with_capacity(n);
        let mut ts = Vec::with_capacity(n);
        let mut vals = Vec::with_capacity(n);
        for s in chunk {
            let k = s.ts.len();
            metric.append_values(&*s.metric, k);
            match &s.cluster {
                Some(c) => cluster.append_values(&**c, k),
                None => cluster.append_nulls(k),
            }
            ids.extend(std::iter::repeat_n(s.id, k));
            ts.extend_from_slice(&s.ts);
            vals.extend_from_slice(&s.values);
            table.push((s.id, row, k as u32));
            row += k as u32;
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(metric.finish()),
            Arc::new(cluster.finish()),
            Arc::new(UInt64Array::from(ids)),
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Float64Array::from(vals)),
        ];
        w.write(&RecordBatch::try_new(Arc::clone(&schema), cols)?)?;
        i = j;
    }
    let bytes = w.into_inner()?;
    let table = SeriesTable::from_entries(table)
        .ok_or_else(|| Error::InvalidSeries("a series appears twice in one file".into()))?;
    let (min_id, max_id) = table.id_range();
    let meta = FileMeta {
        key: FileMeta::new_key(),
        path,
        hour,
        seq,
        compacted,
        size: bytes.len() as u64,
        rows: rows as u64,
        min_ts,
        max_ts,
        min_id,
        max_id,
    };
    Ok((bytes, FileMetaPublic(meta, Arc::new(table))))
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
        let (bytes, meta) = encode_samples(
            rows,
            SamplesEncoding::default(),
            t0,
            1,
            false,
            Path::from("x"),
        )
        .unwrap();
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
