//! Derived tables (cost allocation and assets) as plain Parquet beside the samples, through the
//! same object store: one file per (table, partition), written durably and replaced whole,
//! listed and read back as Arrow batches. Files carry `fleetgate.format = <table>/v<version>` in
//! their key-value metadata; a file of another format or version is refused on read.
//!
//! Layout: `<table>/<k1>=<v1>/<k2>=<v2>/part.parquet` (Hive style, so DuckDB, Spark or Trino read
//! `<table>/**/*.parquet` with the partition columns).

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::objects::Objects;

/// The file name inside a partition directory.
const FILE: &str = "part.parquet";
/// Largest derived file read back (a damaged or foreign file cannot make a read allocate more).
const MAX_FILE_BYTES: usize = 1 << 30;

/// One partition of a derived table: its `key=value` path segments and the file's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedPartition {
    /// `k1=v1/k2=v2`.
    pub key: String,
    /// Bytes of its file.
    pub size: u64,
}

/// A derived table: Parquet partitions under `<data_dir>/<name>/`.
#[derive(Debug, Clone)]
pub struct DerivedTable {
    objects: Objects,
    name: String,
    format: String,
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|seg| {
            seg.split_once('=').is_some_and(|(k, v)| {
                !k.is_empty()
                    && !v.is_empty()
                    && seg.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'=' | b'-' | b'_' | b'.')
                    })
                    && v != "."
                    && v != ".."
            })
        })
}

impl DerivedTable {
    pub(crate) fn new(objects: Objects, name: &str, version: u32) -> Self {
        Self {
            objects,
            name: name.to_string(),
            format: format!("{name}/v{version}"),
        }
    }

    /// The table's name (its directory).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, key: &str) -> Result<Path> {
        if !valid_segment(key) {
            return Err(Error::InvalidSeries(format!(
                "derived partition key {key:?} is not k=v[/k=v…]"
            )));
        }
        Ok(Path::from(format!("{}/{key}/{FILE}", self.name)))
    }

    /// Writes (or replaces) partition `key` with `batches` (all of one schema), durably.
    pub async fn put(&self, key: &str, batches: &[RecordBatch]) -> Result<()> {
        let path = self.path(key)?;
        let Some(first) = batches.first() else {
            return self.delete(key).await;
        };
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "fleetgate.format".to_string(),
                self.format.clone(),
            )]))
            .build();
        let mut w = ArrowWriter::try_new(Vec::new(), first.schema(), Some(props))?;
        for b in batches {
            w.write(b)?;
        }
        let bytes = w.into_inner()?;
        self.objects.put_durable(&path, Bytes::from(bytes)).await
    }

    /// Every partition, sorted by key.
    pub async fn partitions(&self) -> Result<Vec<DerivedPartition>> {
        let prefix = format!("{}/", self.name);
        let mut out: Vec<DerivedPartition> = self
            .objects
            .list(&self.name)
            .await?
            .into_iter()
            .filter_map(|m| {
                let p = m.location.as_ref();
                let rest = p.strip_prefix(&prefix)?.strip_suffix(&format!("/{FILE}"))?;
                valid_segment(rest).then(|| DerivedPartition {
                    key: rest.to_string(),
                    size: m.size,
                })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The batches of partition `key`; a file of another format, or damaged, is
    /// [`Error::Corrupt`].
    pub async fn get(&self, key: &str) -> Result<Vec<RecordBatch>> {
        let path = self.path(key)?;
        let bytes = self.objects.get(&path).await?;
        let name = path.to_string();
        if bytes.len() > MAX_FILE_BYTES {
            return Err(Error::Corrupt {
                path: name,
                reason: format!("{} bytes is more than a derived file may hold", bytes.len()),
            });
        }
        let format = self.format.clone();
        std::panic::catch_unwind(move || {
            crate::partition::read::contained_sync(|| decode(&name, &format, bytes))
        })
        .unwrap_or_else(|panic| {
            Err(Error::Corrupt {
                path: path.to_string(),
                reason: format!("decoder panicked: {}", crate::panic_message(&*panic)),
            })
        })
    }

    /// The batches of partition `key`, or `None` if it is not there (removed since it was
    /// listed: retention and re-materialization replace partitions while readers list them).
    pub async fn get_present(&self, key: &str) -> Result<Option<Vec<RecordBatch>>> {
        match self.get(key).await {
            Ok(b) => Ok(Some(b)),
            Err(Error::ObjectStore(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes partition `key` (a missing one is not an error).
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        self.objects.delete(&path).await
    }
}

fn decode(path: &str, format: &str, bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_string(),
        reason,
    };
    let opts = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, opts)?;
    let found = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == "fleetgate.format"))
        .and_then(|k| k.value.clone());
    if found.as_deref() != Some(format) {
        return Err(corrupt(format!("format {found:?}, expected {format:?}")));
    }
    let reader = builder.build()?;
    let mut out = Vec::new();
    for b in reader {
        out.push(b?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::valid_segment;

    #[test]
    fn partition_keys() {
        assert!(valid_segment("date=2026-11-01/hour=07"));
        assert!(valid_segment("day=2026-11-01"));
        for bad in [
            "",
            "x",
            "a=",
            "=b",
            "a=b/../c=d",
            "a=..",
            "a=b/c",
            "a=b c",
            "a=b\\c",
            "a=1:2",
        ] {
            assert!(!valid_segment(bad), "{bad}");
        }
    }
}
