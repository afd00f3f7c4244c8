//! Series catalog: dense ids from 1 in creation order, labels by id, id by label hash, the
//! inverted index, and the catalog's Parquet files (`catalog/series-{first}-{last}.parquet`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, MapBuilder, RecordBatch, StringBuilder, StringDictionaryBuilder,
    UInt64Array,
};
use arrow::datatypes::{Field, Int32Type, Schema, UInt64Type};
use bytes::Bytes;
use hashbrown::HashMap;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::labels::{Label, Labels, SeriesId};

/// Object-store folder of the catalog files.
pub(crate) const CATALOG_DIR: &str = "catalog";
/// Format tag in the catalog files' key-value metadata.
pub(crate) const CATALOG_FORMAT: &str = "catalog/1";

/// Hash of a canonical label set (names and values separated by 0xff, which UTF-8 never holds).
pub(crate) fn hash_labels(labels: &Labels) -> u64 {
    let mut h = Xxh3::new();
    for l in labels {
        h.update(l.name.as_bytes());
        h.update(&[0xff]);
        h.update(l.value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// All series known to the store.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    by_hash: HashMap<u64, SeriesId>,
    collisions: HashMap<u64, Vec<SeriesId>>,
    /// `by_id[id - 1]`; `None` for ids lost to corruption.
    by_id: Vec<Option<Labels>>,
    count: u64,
    pub(crate) index: Index,
}

impl Catalog {
    /// The id of `labels`, if known.
    pub(crate) fn lookup(&self, labels: &Labels) -> Option<SeriesId> {
        self.lookup_hashed(hash_labels(labels), labels)
    }

    /// Like [`Catalog::lookup`] with a precomputed hash.
    pub(crate) fn lookup_hashed(&self, h: u64, labels: &Labels) -> Option<SeriesId> {
        let id = *self.by_hash.get(&h)?;
        if self.labels_of(id) == Some(labels) {
            return Some(id);
        }
        self.collisions
            .get(&h)?
            .iter()
            .copied()
            .find(|&id| self.labels_of(id) == Some(labels))
    }

    /// Labels of series `id`.
    pub(crate) fn labels_of(&self, id: SeriesId) -> Option<&Labels> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.by_id.get(i)?.as_ref()
    }

    /// Highest id assigned.
    pub(crate) fn max_id(&self) -> SeriesId {
        self.by_id.len() as SeriesId
    }

    /// Number of series.
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    /// Every id, ascending.
    pub(crate) fn all_ids(&self) -> Vec<SeriesId> {
        self.by_id
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_some())
            .map(|(i, _)| i as SeriesId + 1)
            .collect()
    }

    /// Series with `after < id <= upto`.
    pub(crate) fn range(&self, after: SeriesId, upto: SeriesId) -> Vec<(SeriesId, Labels)> {
        (after + 1..=upto)
            .filter_map(|id| Some((id, self.labels_of(id)?.clone())))
            .collect()
    }

    /// Registers series `id` (new or from disk), interning its strings. Returns false when the id
    /// is already taken (its labels are then left alone).
    pub(crate) fn insert(&mut self, id: SeriesId, labels: &Labels) -> bool {
        let Some(i) = usize::try_from(id).ok().and_then(|i| i.checked_sub(1)) else {
            return false;
        };
        if self.by_id.get(i).is_some_and(Option::is_some) {
            return false;
        }
        let interned = Labels::from_sorted(
            labels
                .iter()
                .map(|l| {
                    let (name, value) = self.index.intern(&l.name, &l.value);
                    Label { name, value }
                })
                .collect(),
        );
        let h = hash_labels(&interned);
        self.index.add(id, &interned);
        if self.by_id.len() <= i {
            self.by_id.resize(i + 1, None);
        }
        self.by_id[i] = Some(interned);
        if self.by_hash.contains_key(&h) {
            self.collisions.entry(h).or_default().push(id);
        } else {
            self.by_hash.insert(h, id);
        }
        self.count += 1;
        true
    }
}

/// One catalog file on the object store: the id range its name claims, and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CatalogFile {
    /// First series id of the file's range.
    pub(crate) first: SeriesId,
    /// Last series id of the file's range.
    pub(crate) last: SeriesId,
    /// Its object path.
    pub(crate) path: object_store::path::Path,
}

impl CatalogFile {
    /// The file `catalog/series-{first}-{last}.parquet`.
    pub(crate) fn new(first: SeriesId, last: SeriesId) -> Self {
        Self {
            first,
            last,
            path: catalog_path(first, last),
        }
    }
}

/// Adds the series of catalog file `path` to `catalog`. Files may overlap (a crash between a
/// catalog compaction's write and the deletion of its inputs leaves both): an id seen before must
/// carry the same labels, and every id must lie in the file's `[first, last]` range (compaction
/// and the persisted-id watermark rely on it); anything else is [`Error::Corrupt`].
pub(crate) fn load_into(
    catalog: &mut Catalog,
    file: &CatalogFile,
    series: Vec<(SeriesId, Labels)>,
) -> Result<()> {
    for (id, labels) in series {
        let corrupt = |reason: String| Error::Corrupt {
            path: file.path.to_string(),
            reason,
        };
        if id == 0 || id < file.first || id > file.last {
            return Err(corrupt(format!(
                "series id {id} outside the file's range {}..={}",
                file.first, file.last
            )));
        }
        if !catalog.insert(id, &labels) {
            match catalog.labels_of(id) {
                Some(known) if *known == labels => {}
                Some(known) => {
                    return Err(corrupt(format!(
                        "series {id} has labels {labels} here but {known} in another catalog file"
                    )));
                }
                None => return Err(corrupt(format!("series id {id} cannot be registered"))),
            }
        }
    }
    Ok(())
}

/// Object path of a catalog file.
pub(crate) fn catalog_path(first: SeriesId, last: SeriesId) -> object_store::path::Path {
    object_store::path::Path::from(format!(
        "{CATALOG_DIR}/series-{first:020}-{last:020}.parquet"
    ))
}

/// Parses `(first, last)` from a catalog file name.
pub(crate) fn parse_catalog_name(name: &str) -> Option<(SeriesId, SeriesId)> {
    let rest = name.strip_prefix("series-")?.strip_suffix(".parquet")?;
    let (a, b) = rest.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Encodes series as a catalog Parquet file: `series_id, metric, cluster, labels` (a map of
/// every label including `__name__` and `cluster`).
pub(crate) fn encode(series: &[(SeriesId, Labels)]) -> Result<Vec<u8>> {
    let ids = UInt64Array::from_iter_values(series.iter().map(|(id, _)| *id));
    let mut metric = StringDictionaryBuilder::<Int32Type>::new();
    let mut cluster = StringDictionaryBuilder::<Int32Type>::new();
    let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for (_, labels) in series {
        match labels.get("__name__") {
            Some(v) => metric.append_value(v),
            None => metric.append_null(),
        }
        match labels.get("cluster") {
            Some(v) => cluster.append_value(v),
            None => cluster.append_null(),
        }
        for l in labels {
            map.keys().append_value(&*l.name);
            map.values().append_value(&*l.value);
        }
        map.append(true)?;
    }
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("series_id", Arc::new(ids)),
        ("metric", Arc::new(metric.finish())),
        ("cluster", Arc::new(cluster.finish())),
        ("labels", Arc::new(map.finish())),
    ];
    let schema = Arc::new(Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), *n != "series_id"))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(Arc::clone(&schema), cols.into_iter().map(|c| c.1).collect())?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "fleetgate.format".to_string(),
            CATALOG_FORMAT.to_string(),
        )]))
        .build();
    let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props))?;
    w.write(&batch)?;
    Ok(w.into_inner()?)
}

/// Decodes a catalog file.
pub(crate) fn decode(path: &str, bytes: Bytes) -> Result<Vec<(SeriesId, Labels)>> {
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.to_string(),
        reason: reason.into(),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let ids = batch
            .column_by_name("series_id")
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| corrupt("series_id column missing or not UInt64"))?;
        let map = batch
            .column_by_name("labels")
            .and_then(|c| c.as_map_opt())
            .ok_or_else(|| corrupt("labels column missing or not a map"))?;
        let keys = map
            .keys()
            .as_string_opt::<i32>()
            .ok_or_else(|| corrupt("label names not utf8"))?;
        let vals = map
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| corrupt("label values not utf8"))?;
        let offs = map.value_offsets();
        for row in 0..batch.num_rows() {
            let (a, b) = (offs[row] as usize, offs[row + 1] as usize);
            let labels = Labels::from_pairs((a..b).map(|i| (keys.value(i), vals.value(i))));
            out.push((ids.value(row), labels));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_and_file_round_trip() {
        let mut c = Catalog::default();
        let a = Labels::from_pairs([("__name__", "up"), ("cluster", "c1"), ("job", "api")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "web")]);
        assert!(c.insert(1, &a));
        assert!(c.insert(2, &b));
        assert!(!c.insert(2, &a));
        assert_eq!(c.lookup(&a), Some(1));
        assert_eq!(c.lookup(&b), Some(2));
        // interned: both share the "__name__" and "up" strings
        let (la, lb) = (c.labels_of(1).unwrap(), c.labels_of(2).unwrap());
        assert!(Arc::ptr_eq(
            &la.as_slice()[0].value,
            &lb.as_slice()[0].value
        ));
        let bytes = encode(&c.range(0, 2)).unwrap();
        let back = decode("x", Bytes::from(bytes)).unwrap();
        assert_eq!(back, vec![(1, a), (2, b)]);
        assert_eq!(
            parse_catalog_name("series-00000000000000000001-00000000000000000002.parquet"),
            Some((1, 2))
        );
    }
}
