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
use crate::matcher::Matcher;
use crate::select_cache::{self, LabelValues, SelectCache, Selection};

mod ids;

use ids::IdTable;
pub(crate) use ids::MAX_ID;

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
    /// Labels by id (paged; ids lost to corruption or removed are absent).
    ids: IdTable,
    pub(crate) index: Index,
    /// Bumped when an id is registered that is not above every id before it (loading, holes):
    /// cached index answers of another epoch cannot be brought up to date by looking only at
    /// the ids above what they have seen (see [`select_cache`]).
    epoch: u64,
    /// Cached selections and label values, valid per `epoch` and `max_id` (see [`select_cache`]).
    cache: SelectCache,
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
    #[inline]
    pub(crate) fn labels_of(&self, id: SeriesId) -> Option<&Labels> {
        self.ids.get(id)
    }

    /// True when series `id` exists (not removed); one bit test.
    #[inline]
    pub(crate) fn contains(&self, id: SeriesId) -> bool {
        self.ids.contains(id)
    }

    /// Highest id assigned (or claimed by a catalog file's range); never decreases.
    pub(crate) fn max_id(&self) -> SeriesId {
        self.ids.max_id()
    }

    /// Number of series.
    pub(crate) fn len(&self) -> u64 {
        self.ids.len()
    }

    /// Bytes of the id table itself (for the memory report).
    pub(crate) fn id_table_bytes(&self) -> usize {
        self.ids.table_bytes()
    }

    /// Every id, ascending.
    pub(crate) fn all_ids(&self) -> Vec<SeriesId> {
        self.ids.range(0, SeriesId::MAX).map(|(id, _)| id).collect()
    }

    /// Every id up to `upto`, ascending.
    pub(crate) fn ids_upto(&self, upto: SeriesId) -> Vec<SeriesId> {
        self.ids.range(0, upto).map(|(id, _)| id).collect()
    }

    /// Series with `after < id <= upto`.
    pub(crate) fn range(&self, after: SeriesId, upto: SeriesId) -> Vec<(SeriesId, Labels)> {
        self.ids
            .range(after, upto)
            .map(|(id, l)| (id, l.clone()))
            .collect()
    }

    /// Makes sure no id up to `id` is handed out again (a catalog file claims the range).
    pub(crate) fn reserve(&mut self, id: SeriesId) {
        self.ids.reserve(id);
    }

    /// Removes the series `dead` (ascending) from the id table, the label-hash map and the
    /// index; label values no series carries any more leave the index (and with them their
    /// interned strings). Cached selections are invalidated. Returns how many were removed.
    pub(crate) fn remove(&mut self, dead: &[SeriesId]) -> u64 {
        let mut removed: Vec<(SeriesId, Labels)> = Vec::with_capacity(dead.len());
        for &id in dead {
            let Some(labels) = self.ids.remove(id) else {
                continue;
            };
            let h = hash_labels(&labels);
            if self.by_hash.get(&h) == Some(&id) {
                match self.collisions.get_mut(&h).and_then(Vec::pop) {
                    Some(next) => {
                        self.by_hash.insert(h, next);
                    }
                    None => {
                        self.by_hash.remove(&h);
                    }
                }
            } else if let Some(c) = self.collisions.get_mut(&h) {
                c.retain(|&x| x != id);
            }
            if self.collisions.get(&h).is_some_and(Vec::is_empty) {
                self.collisions.remove(&h);
            }
            removed.push((id, labels));
        }
        if removed.is_empty() {
            return 0;
        }
        self.index.remove(&removed);
        self.epoch += 1;
        self.cache.clear();
        removed.len() as u64
    }

    /// Registers series `id` (new or from disk), interning its strings. Returns false when the id
    /// is already taken (its labels are then left alone).
    pub(crate) fn insert(&mut self, id: SeriesId, labels: &Labels) -> bool {
        if id == 0 || id > MAX_ID || self.ids.contains(id) {
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
        if id <= self.ids.max_id() {
            self.epoch += 1;
        }
        self.index.add(id, &interned);
        self.ids.insert(id, interned);
        if self.by_hash.contains_key(&h) {
            self.collisions.entry(h).or_default().push(id);
        } else {
            self.by_hash.insert(h, id);
        }
        true
    }

    /// The labels of `id` as a sort key (empty for an unknown id).
    fn sort_key(&self, id: SeriesId) -> &[Label] {
        self.labels_of(id).map(Labels::as_slice).unwrap_or(&[])
    }

    /// Ids of the series matching every matcher, sorted by labels; cached (see [`select_cache`]).
    pub(crate) fn select_sorted(&self, matchers: &[Matcher]) -> Arc<[SeriesId]> {
        let key = select_cache::selection_key(matchers);
        let max = self.max_id();
        let cached = self
            .cache
            .selection(&key)
            .filter(|c| c.epoch == self.epoch && c.upto <= max);
        let ids: Arc<[SeriesId]> = match cached {
            Some(c) if c.upto == max => return Arc::clone(&c.ids),
            Some(c) if max - c.upto <= select_cache::MAX_EXTEND => {
                let mut new: Vec<SeriesId> = (c.upto + 1..=max)
                    .filter(|&id| {
                        self.labels_of(id)
                            .is_some_and(|l| matchers.iter().all(|m| m.matches(l)))
                    })
                    .collect();
                if new.is_empty() {
                    Arc::clone(&c.ids)
                } else {
                    new.sort_by(|a, b| self.sort_key(*a).cmp(self.sort_key(*b)));
                    self.merge_by_labels(&c.ids, &new).into()
                }
            }
            _ => {
                let mut ids =
                    self.index
                        .select(matchers, || self.all_ids(), |id| self.labels_of(id));
                ids.sort_by(|a, b| self.sort_key(*a).cmp(self.sort_key(*b)));
                ids.into()
            }
        };
        self.cache.put_selection(
            key,
            Arc::new(Selection {
                epoch: self.epoch,
                upto: max,
                ids: Arc::clone(&ids),
            }),
        );
        ids
    }

    /// Merges two id lists sorted by labels (no id in both).
    fn merge_by_labels(&self, old: &[SeriesId], new: &[SeriesId]) -> Vec<SeriesId> {
        let mut out = Vec::with_capacity(old.len() + new.len());
        let mut i = 0;
        for &n in new {
            let key = self.sort_key(n);
            let p = i + old[i..].partition_point(|&o| self.sort_key(o) < key);
            out.extend_from_slice(&old[i..p]);
            out.push(n);
            i = p;
        }
        out.extend_from_slice(&old[i..]);
        out
    }

    /// Sorted values of label `name`; cached (see [`select_cache`]).
    pub(crate) fn label_values(&self, name: &str) -> Arc<[String]> {
        let max = self.max_id();
        let cached = self
            .cache
            .label_values(name)
            .filter(|c| c.epoch == self.epoch && c.upto <= max);
        let values: Arc<[String]> = match cached {
            Some(c) if c.upto == max => return Arc::clone(&c.values),
            Some(c) if max - c.upto <= select_cache::MAX_EXTEND => {
                let mut new: Vec<&str> = (c.upto + 1..=max)
                    .filter_map(|id| self.labels_of(id)?.get(name))
                    .filter(|v| c.values.binary_search_by(|x| x.as_str().cmp(v)).is_err())
                    .collect();
                if new.is_empty() {
                    Arc::clone(&c.values)
                } else {
                    new.sort_unstable();
                    new.dedup();
                    let mut all: Vec<String> = c.values.to_vec();
                    all.extend(new.into_iter().map(str::to_string));
                    all.sort_unstable();
                    all.into()
                }
            }
            _ => self.index.label_values(name).into(),
        };
        self.cache.put_label_values(
            name,
            Arc::new(LabelValues {
                epoch: self.epoch,
                upto: max,
                values: Arc::clone(&values),
            }),
        );
        values
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

/// Decodes a catalog file; a panic inside the Parquet decoder (not panic-free on damaged input,
/// see `partition::read`) is [`Error::Corrupt`].
pub(crate) fn decode(path: &str, bytes: Bytes) -> Result<Vec<(SeriesId, Labels)>> {
    std::panic::catch_unwind(|| {
        crate::partition::read::contained_sync(|| decode_inner(path, bytes))
    })
    .unwrap_or_else(|panic| {
        Err(Error::Corrupt {
            path: path.to_string(),
            reason: format!("decoder panicked: {}", crate::panic_message(&*panic)),
        })
    })
}

fn decode_inner(path: &str, bytes: Bytes) -> Result<Vec<(SeriesId, Labels)>> {
    let corrupt = |reason: &str| Error::Corrupt {
        path: path.to_string(),
        reason: reason.into(),
    };
    // Schema from the Parquet schema, not the embedded Arrow IPC blob (see partition/read.rs).
    let opts =
        parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let size = bytes.len() as u64;
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, opts)?;
    crate::partition::layout::check(builder.metadata(), size).map_err(|r| corrupt(&r))?;
    let reader = builder.build()?;
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
    use crate::matcher::MatchOp;

    fn uncached(c: &Catalog, ms: &[Matcher]) -> Vec<SeriesId> {
        let mut ids = c.index.select(ms, || c.all_ids(), |id| c.labels_of(id));
        ids.sort_by(|a, b| c.sort_key(*a).cmp(c.sort_key(*b)));
        ids
    }

    /// A cached selection (and label-value list) sees series created after it was cached, in
    /// label order, whether the entry is extended (same epoch) or recomputed (epoch changed).
    #[test]
    fn cached_selection_sees_new_series() {
        let mut c = Catalog::default();
        let l = |job: &str, pod: &str| {
            Labels::from_pairs([("__name__", "up"), ("job", job), ("pod", pod)])
        };
        assert!(c.insert(1, &l("api", "p5")));
        assert!(c.insert(2, &l("web", "p1")));
        assert!(c.insert(3, &l("api", "p2")));
        let eq = [
            Matcher::equal("__name__", "up"),
            Matcher::equal("job", "api"),
        ];
        let re = [Matcher::new(MatchOp::RegexMatch, "job", "ap.*|db").unwrap()];
        assert_eq!(&*c.select_sorted(&eq), &[3, 1]);
        assert_eq!(&*c.select_sorted(&re), &[3, 1]);
        assert_eq!(&*c.label_values("pod"), &["p1", "p2", "p5"]);
        // a hit returns the cached list itself
        assert!(Arc::ptr_eq(&c.select_sorted(&eq), &c.select_sorted(&eq)));
        // matcher order does not matter
        let eq_rev = [eq[1].clone(), eq[0].clone()];
        assert!(Arc::ptr_eq(
            &c.select_sorted(&eq),
            &c.select_sorted(&eq_rev)
        ));

        // New series at the end, one sorting in the middle, one at the front, one not matching.
        assert!(c.insert(4, &l("api", "p3")));
        assert!(c.insert(5, &l("web", "p0")));
        assert!(c.insert(6, &l("api", "p0")));
        assert!(c.insert(7, &l("db", "p9")));
        assert_eq!(&*c.select_sorted(&eq), &[6, 3, 4, 1]);
        assert_eq!(&*c.select_sorted(&eq), uncached(&c, &eq).as_slice());
        assert_eq!(&*c.select_sorted(&re), &[6, 3, 4, 1, 7]);
        assert_eq!(&*c.select_sorted(&re), uncached(&c, &re).as_slice());
        assert_eq!(
            &*c.label_values("pod"),
            &["p0", "p1", "p2", "p3", "p5", "p9"]
        );
        // no new series matching: same answer, extended entry
        assert!(c.insert(8, &l("web", "p2")));
        assert_eq!(&*c.select_sorted(&eq), &[6, 3, 4, 1]);
        assert_eq!(
            &*c.label_values("pod"),
            &["p0", "p1", "p2", "p3", "p5", "p9"]
        );

        // An id below the maximum (filling a hole) changes the epoch: recomputed.
        assert!(c.insert(12, &l("api", "p7")));
        assert_eq!(&*c.select_sorted(&eq), &[6, 3, 4, 1, 12]);
        let before = c.epoch;
        assert!(c.insert(10, &l("api", "p1")));
        assert_eq!(c.epoch, before + 1);
        assert_eq!(&*c.select_sorted(&eq), &[6, 10, 3, 4, 1, 12]);
        assert_eq!(&*c.select_sorted(&eq), uncached(&c, &eq).as_slice());
        assert!(c.insert(11, &l("x", "p8")));
        assert_eq!(
            &*c.label_values("pod"),
            &["p0", "p1", "p2", "p3", "p5", "p7", "p8", "p9"]
        );
    }

    /// Far behind (more new series than `MAX_EXTEND`): recomputed, same answer.
    #[test]
    fn far_behind_entry_is_recomputed() {
        let mut c = Catalog::default();
        let l = |i: u64| {
            Labels::from_pairs([
                ("__name__".to_string(), "m".to_string()),
                ("i".to_string(), format!("{i:06}")),
            ])
        };
        assert!(c.insert(1, &l(1)));
        let ms = [Matcher::equal("__name__", "m")];
        assert_eq!(&*c.select_sorted(&ms), &[1]);
        let n = select_cache::MAX_EXTEND + 10;
        for id in 2..=n {
            assert!(c.insert(id, &l(id)));
        }
        let got = c.select_sorted(&ms);
        assert_eq!(got.len() as u64, n);
        assert_eq!(&*got, uncached(&c, &ms).as_slice());
    }

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
