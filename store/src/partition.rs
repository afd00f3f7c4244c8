//! Hour partitions of Parquet sample files: the Hive layout
//! `samples/date=YYYY-MM-DD/hour=HH/part-{seq:020}[-c].parquet` (UTC), and the in-memory list of
//! files; per file, a `series_id → rows` table (held in a bounded cache, rebuilt from the
//! `series_id` column on a miss) makes reading k series cost O(k).
//!
//! **Ordering of files** (last write wins on duplicate `(series, timestamp)`): a file's rank is
//! `(seq, generation)`; `seq` is global and increasing, so a higher seq is a newer write. A file
//! made by compaction is named with the *highest seq of its inputs* and a compaction generation
//! one above that input's (`part-S-c` is generation 1, `part-S-c2` generation 2, …; a flushed
//! file is generation 0): it takes its newest input's place in the order, above every older file
//! of its partition and below every later one. While inputs and output both exist (crash between
//! write and delete) they agree wherever an input has data, so their relative order does not
//! matter. A compaction never writes over a file that exists: a read may hold it.

pub(crate) mod cache;
pub(crate) mod layout;
pub mod read;
pub mod write;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::path::Path;

use crate::labels::SeriesId;

pub use write::{SamplesEncoding, TimestampEncoding, ValueEncoding};

/// Object-store folder of sample files.
pub(crate) const SAMPLES_DIR: &str = "samples";
/// Format tag in the sample files' key-value metadata (`fleetgate.format`).
pub const SAMPLES_FORMAT: &str = "samples/1";
/// Partition length.
pub const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Start of the hour holding `ts` (`i64::MIN` for the lowest, partial hour: a query bound of
/// "no start" must not overflow).
pub(crate) fn hour_of(ts: i64) -> i64 {
    ts.saturating_sub(ts.rem_euclid(HOUR_MS))
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian (H. Hinnant's
/// algorithm). Used for partition paths and by the query engine's date functions.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `samples/date=YYYY-MM-DD/hour=HH` of the hour starting at `hour_ms`.
pub(crate) fn partition_prefix(hour_ms: i64) -> String {
    let (y, m, d) = civil_from_days(hour_ms.div_euclid(DAY_MS));
    let h = hour_ms.rem_euclid(DAY_MS) / HOUR_MS;
    format!("{SAMPLES_DIR}/date={y:04}-{m:02}-{d:02}/hour={h:02}")
}

/// Object path of a sample file of compaction `generation` (0: flushed).
pub(crate) fn file_path(hour_ms: i64, seq: u64, generation: u32) -> Path {
    let suffix = match generation {
        0 => String::new(),
        1 => "-c".to_string(),
        g => format!("-c{g}"),
    };
    Path::from(format!(
        "{}/part-{seq:020}{suffix}.parquet",
        partition_prefix(hour_ms)
    ))
}

/// Parses `(hour_ms, seq, generation)` from a sample file path.
pub(crate) fn parse_file_path(path: &str) -> Option<(i64, u64, u32)> {
    let mut parts = path.split('/');
    if parts.next()? != SAMPLES_DIR {
        return None;
    }
    let date = parts.next()?.strip_prefix("date=")?;
    let hour: i64 = parts.next()?.strip_prefix("hour=")?.parse().ok()?;
    let file = parts
        .next()?
        .strip_prefix("part-")?
        .strip_suffix(".parquet")?;
    if parts.next().is_some() || !(0..24).contains(&hour) {
        return None;
    }
    let (seq, generation) = match file.split_once("-c") {
        Some((s, "")) => (s, 1),
        Some((s, g)) if g.bytes().all(|b| b.is_ascii_digit()) && !g.starts_with('0') => {
            (s, g.parse().ok().filter(|g| *g >= 2)?)
        }
        Some(_) => return None,
        None => (file, 0),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some((
        days_from_civil(y, m, d) * DAY_MS + hour * HOUR_MS,
        seq.parse().ok()?,
        generation,
    ))
}

/// Source of [`FileMeta::key`].
static NEXT_FILE_KEY: AtomicU64 = AtomicU64::new(1);

/// One Parquet sample file as the store knows it: only what is small. Its `series_id → rows`
/// table and its parsed footer live in the bounded [`cache::FileCaches`], keyed by `key`, and are
/// rebuilt from the file on a miss.
#[derive(Debug, Clone)]
pub(crate) struct FileMeta {
    /// Cache key, unique per entry made in this process (a path can be rewritten in place).
    pub(crate) key: u64,
    pub(crate) path: Path,
    pub(crate) hour: i64,
    pub(crate) seq: u64,
    /// Compaction generation: 0 for a flushed file, 1 for `-c`, n for `-cn`.
    pub(crate) compacted: u32,
    pub(crate) size: u64,
    pub(crate) rows: u64,
    pub(crate) min_ts: i64,
    pub(crate) max_ts: i64,
    /// Smallest series id in the file (`0` when the file has no rows).
    pub(crate) min_id: SeriesId,
    /// Largest series id in the file (`0` when the file has no rows).
    pub(crate) max_id: SeriesId,
}

impl FileMeta {
    /// A fresh cache key.
    pub(crate) fn new_key() -> u64 {
        NEXT_FILE_KEY.fetch_add(1, Ordering::Relaxed)
    }

    /// Rank in last-write-wins order.
    pub(crate) fn rank(&self) -> (u64, u32) {
        (self.seq, self.compacted)
    }

    /// False when none of the `wanted` series (sorted ids) can be in this file.
    pub(crate) fn may_hold(&self, wanted: &[SeriesId]) -> bool {
        let i = wanted.partition_point(|id| *id < self.min_id);
        self.rows > 0 && i < wanted.len() && wanted[i] <= self.max_id
    }
}

/// A file's `series_id → rows` table (rows of one series are contiguous): 16 B per series.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SeriesTable {
    /// Series in the file, ascending.
    ids: Vec<SeriesId>,
    /// First row of `ids[i]`.
    first_row: Vec<u32>,
    /// Row count of `ids[i]`.
    counts: Vec<u32>,
}

impl SeriesTable {
    /// From `(series, first row, row count)` entries in any order; `None` when a series appears
    /// twice (its rows are not contiguous).
    pub(crate) fn from_entries(mut entries: Vec<(SeriesId, u32, u32)>) -> Option<Self> {
        entries.sort_unstable_by_key(|t| t.0);
        if entries.windows(2).any(|w| w[0].0 == w[1].0) {
            return None;
        }
        Some(Self {
            ids: entries.iter().map(|t| t.0).collect(),
            first_row: entries.iter().map(|t| t.1).collect(),
            counts: entries.iter().map(|t| t.2).collect(),
        })
    }

    /// `(min, max)` series id, `(0, 0)` when empty.
    pub(crate) fn id_range(&self) -> (SeriesId, SeriesId) {
        (
            self.ids.first().copied().unwrap_or(0),
            self.ids.last().copied().unwrap_or(0),
        )
    }

    /// Series in the file, ascending.
    pub(crate) fn ids(&self) -> &[SeriesId] {
        &self.ids
    }

    /// Whether series `id` has rows in the file.
    pub(crate) fn contains(&self, id: SeriesId) -> bool {
        self.ids.binary_search(&id).is_ok()
    }

    /// Rows covered by the table.
    pub(crate) fn rows(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(*c)).sum()
    }

    /// Heap bytes held, plus the struct itself.
    pub(crate) fn heap_bytes(&self) -> usize {
        size_of::<Self>()
            + self.ids.capacity() * size_of::<SeriesId>()
            + (self.first_row.capacity() + self.counts.capacity()) * size_of::<u32>()
    }

    /// Row ranges of the `wanted` series (sorted ids) present in the file, in row order.
    pub(crate) fn row_ranges(&self, wanted: &[SeriesId]) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut push = |i: usize| {
            let s = self.first_row[i] as usize;
            out.push(s..s + self.counts[i] as usize);
        };
        if wanted.len() * 8 < self.ids.len() {
            for id in wanted {
                if let Ok(i) = self.ids.binary_search(id) {
                    push(i);
                }
            }
        } else {
            let mut j = 0;
            for (i, id) in self.ids.iter().enumerate() {
                while j < wanted.len() && wanted[j] < *id {
                    j += 1;
                }
                if j < wanted.len() && wanted[j] == *id {
                    push(i);
                }
            }
        }
        out.sort_by_key(|r| r.start);
        // merge adjacent ranges
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(out.len());
        for r in out {
            match merged.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => merged.push(r),
            }
        }
        merged
    }
}

/// Every sample file, by hour partition, each partition's files in rank order.
#[derive(Debug, Default)]
pub(crate) struct PartitionSet {
    parts: BTreeMap<i64, Vec<Arc<FileMeta>>>,
}

impl PartitionSet {
    /// Adds a file.
    pub(crate) fn add(&mut self, f: Arc<FileMeta>) {
        let v = self.parts.entry(f.hour).or_default();
        v.retain(|x| x.path != f.path);
        let pos = v.partition_point(|x| x.rank() <= f.rank());
        v.insert(pos, f);
    }

    /// Removes a file by path.
    pub(crate) fn remove(&mut self, hour: i64, path: &Path) {
        if let Some(v) = self.parts.get_mut(&hour) {
            v.retain(|x| &x.path != path);
            if v.is_empty() {
                self.parts.remove(&hour);
            }
        }
    }

    /// Every file.
    pub(crate) fn all(&self) -> Vec<Arc<FileMeta>> {
        self.parts.values().flatten().cloned().collect()
    }

    /// Files that may hold samples in `[start, end]`, in global rank order.
    pub(crate) fn overlapping(&self, start: i64, end: i64) -> Vec<Arc<FileMeta>> {
        if end < start {
            return Vec::new();
        }
        let mut out: Vec<Arc<FileMeta>> = self
            .parts
            .range(hour_of(start)..=hour_of(end))
            .flat_map(|(_, v)| v.iter())
            .filter(|f| f.max_ts >= start && f.min_ts <= end)
            .cloned()
            .collect();
        out.sort_by_key(|f| f.rank());
        out
    }

    /// Every partition with its files.
    pub(crate) fn partitions(&self) -> impl Iterator<Item = (i64, &Vec<Arc<FileMeta>>)> {
        self.parts.iter().map(|(h, v)| (*h, v))
    }

    /// Number of partitions.
    pub(crate) fn partition_count(&self) -> usize {
        self.parts.len()
    }

    /// Number of files.
    pub(crate) fn file_count(&self) -> usize {
        self.parts.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        // 2024-02-29 13:00 UTC
        let h = 1_709_211_600_000;
        let p = file_path(h, 42, 0);
        assert_eq!(
            p.as_ref(),
            "samples/date=2024-02-29/hour=13/part-00000000000000000042.parquet"
        );
        assert_eq!(parse_file_path(p.as_ref()), Some((h, 42, 0)));
        let c = file_path(h, 7, 1);
        assert!(
            c.as_ref().ends_with("part-00000000000000000007-c.parquet"),
            "{c}"
        );
        assert_eq!(parse_file_path(c.as_ref()), Some((h, 7, 1)));
        let c3 = file_path(h, 7, 3);
        assert!(
            c3.as_ref()
                .ends_with("part-00000000000000000007-c3.parquet"),
            "{c3}"
        );
        assert_eq!(parse_file_path(c3.as_ref()), Some((h, 7, 3)));
        for bad in ["-c0", "-c1", "-c01", "-cx", "-c-2"] {
            let p = c.as_ref().replace("-c.parquet", &format!("{bad}.parquet"));
            assert_eq!(parse_file_path(&p), None, "{p}");
        }
        assert_eq!(partition_prefix(0), "samples/date=1970-01-01/hour=00");
        assert_eq!(hour_of(-1), -HOUR_MS);
        assert_eq!(hour_of(i64::MIN), i64::MIN);
        assert_eq!(hour_of(i64::MAX), i64::MAX - i64::MAX.rem_euclid(HOUR_MS));
    }
}
