//! In-memory samples not yet in Parquet: per series, plain vectors in arrival order (out-of-order
//! and duplicates allowed; the reader resolves them, last write wins).

use hashbrown::HashMap;

use crate::labels::SeriesId;

/// Heap bytes of one hash-map slot (key, two vector headers, control byte).
const SLOT_BYTES: usize = size_of::<(SeriesId, SeriesBuf)>() + 1;
/// Smallest growth of a series' vectors, in samples.
const MIN_GROWTH: usize = 16;

/// One series' samples in arrival order.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeriesBuf {
    pub(crate) ts: Vec<i64>,
    pub(crate) values: Vec<f64>,
}

/// Samples of many series.
///
/// Memory is accounted by *capacity* (what the allocator really holds), not by length, so that
/// `memtable_flush_bytes` and `memtable_max_bytes` bound real memory. The vectors grow by 1.25×
/// rather than doubling: at most a fifth of their capacity is slack (about a tenth on average)
/// instead of half (a quarter), for a few more reallocations (amortised copies ~4× the data
/// instead of ~2×, cheap next to the WAL).
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    pub(crate) series: HashMap<SeriesId, SeriesBuf>,
    /// Bytes of the series' vectors, by capacity.
    vec_bytes: usize,
    samples: usize,
    /// Smallest and largest timestamps held.
    pub(crate) min_ts: i64,
    pub(crate) max_ts: i64,
    /// Generation: the n-th memtable since open (identifies it across freeze).
    pub(crate) generation: u64,
    /// Some series received a sample older than its newest (its vectors are not sorted by
    /// time); while false, reads find a time range by binary search.
    out_of_order: bool,
}

impl Memtable {
    /// An empty memtable of generation `generation`.
    pub(crate) fn new(generation: u64) -> Self {
        Self {
            generation,
            ..Self::default()
        }
    }

    /// Adds one sample.
    pub(crate) fn push(&mut self, series: SeriesId, ts: i64, value: f64) {
        let buf = self.series.entry(series).or_default();
        let (ct, cv) = (buf.ts.capacity(), buf.values.capacity());
        if buf.ts.len() == ct || buf.values.len() == cv {
            let extra = (ct / 4).max(MIN_GROWTH);
            buf.ts.reserve_exact(extra);
            buf.values.reserve_exact(extra);
            self.vec_bytes += (buf.ts.capacity() - ct) * size_of::<i64>()
                + (buf.values.capacity() - cv) * size_of::<f64>();
        }
        self.out_of_order |= buf.ts.last().is_some_and(|last| *last > ts);
        buf.ts.push(ts);
        buf.values.push(value);
        if self.samples == 0 {
            self.min_ts = ts;
            self.max_ts = ts;
        } else {
            self.min_ts = self.min_ts.min(ts);
            self.max_ts = self.max_ts.max(ts);
        }
        self.samples += 1;
    }

    /// Heap bytes held: the vectors' capacities and (about) the hash map's slots.
    pub(crate) fn bytes(&self) -> usize {
        self.vec_bytes + self.series.capacity() * SLOT_BYTES
    }

    /// Number of samples.
    pub(crate) fn samples(&self) -> usize {
        self.samples
    }

    /// True when empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// Whether `series` has a sample in `[start, end]`.
    pub(crate) fn has_samples(&self, series: SeriesId, start: i64, end: i64) -> bool {
        if self.samples == 0 || self.max_ts < start || self.min_ts > end {
            return false;
        }
        let Some(b) = self.series.get(&series) else {
            return false;
        };
        if self.out_of_order {
            return b.ts.iter().any(|t| *t >= start && *t <= end);
        }
        let lo = b.ts.partition_point(|t| *t < start);
        lo < b.ts.len() && b.ts[lo] <= end
    }

    /// Appends the samples of `series` within `[start, end]` to `out`, in arrival order.
    pub(crate) fn collect(&self, series: SeriesId, start: i64, end: i64, out: &mut Samples) {
        if self.samples == 0 || self.max_ts < start || self.min_ts > end {
            return;
        }
        if let Some(b) = self.series.get(&series) {
            if !self.out_of_order {
                let lo = b.ts.partition_point(|t| *t < start);
                let hi = b.ts.partition_point(|t| *t <= end).max(lo);
                out.ts.extend_from_slice(&b.ts[lo..hi]);
                out.vs.extend_from_slice(&b.values[lo..hi]);
                return;
            }
            for (t, v) in b.ts.iter().zip(&b.values) {
                if *t >= start && *t <= end {
                    out.ts.push(*t);
                    out.vs.push(*v);
                }
            }
        }
    }
}

/// One series' samples as two columns, in the order they were gathered.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Samples {
    pub(crate) ts: Vec<i64>,
    pub(crate) vs: Vec<f64>,
}

impl Samples {
    /// Appends `other`; takes its vectors as they are when this is empty (no copy).
    pub(crate) fn append(&mut self, other: Samples) {
        if self.ts.is_empty() {
            *self = other;
        } else {
            self.ts.extend_from_slice(&other.ts);
            self.vs.extend_from_slice(&other.vs);
        }
    }

    /// Sorted by time with, for equal timestamps, the last gathered kept (gathering order is
    /// write order).
    pub(crate) fn into_sorted(self) -> (Vec<i64>, Vec<f64>) {
        if self.ts.windows(2).all(|w| w[0] < w[1]) {
            return (self.ts, self.vs);
        }
        let mut pairs: Vec<(i64, f64)> = self.ts.into_iter().zip(self.vs).collect();
        sort_dedup_last(&mut pairs);
        pairs.into_iter().unzip()
    }
}

/// Sorts `samples` by time keeping, for equal timestamps, the last one (input order is write order).
pub(crate) fn sort_dedup_last(samples: &mut Vec<(i64, f64)>) {
    if samples.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    samples.sort_by_key(|s| s.0); // stable: equal timestamps keep write order
    let mut out = 0;
    for i in 0..samples.len() {
        if out > 0 && samples[out - 1].0 == samples[i].0 {
            samples[out - 1] = samples[i];
        } else {
            samples[out] = samples[i];
            out += 1;
        }
    }
    samples.truncate(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_wins_and_order() {
        let mut m = Memtable::default();
        for (t, v) in [(3, 1.0), (1, 2.0), (3, 3.0), (2, 4.0)] {
            m.push(9, t, v);
        }
        let mut out = Samples::default();
        m.collect(9, 0, 10, &mut out);
        assert_eq!(out.into_sorted(), (vec![1, 2, 3], vec![2.0, 4.0, 3.0]));
        assert_eq!(m.samples(), 4);
    }

    #[test]
    fn range_reads_in_order_and_out_of_order() {
        let read = |m: &Memtable, id, a, b| {
            let mut out = Samples::default();
            m.collect(id, a, b, &mut out);
            out.ts.into_iter().zip(out.vs).collect::<Vec<_>>()
        };
        let mut m = Memtable::default();
        for t in [10, 20, 20, 30, 40] {
            m.push(1, t, t as f64);
        }
        assert_eq!(
            read(&m, 1, 20, 30),
            vec![(20, 20.0), (20, 20.0), (30, 30.0)]
        );
        assert!(read(&m, 1, 41, 50).is_empty());
        // an older sample for another series switches reads to a filter; results stay the same
        m.push(2, 5, 1.0);
        m.push(2, 1, 2.0);
        assert_eq!(
            read(&m, 1, 20, 30),
            vec![(20, 20.0), (20, 20.0), (30, 30.0)]
        );
        assert_eq!(read(&m, 2, 0, 3), vec![(1, 2.0)]);
    }

    #[test]
    fn samples_append_and_sort() {
        let mut a = Samples::default();
        a.append(Samples {
            ts: vec![1, 3],
            vs: vec![1.0, 3.0],
        });
        a.append(Samples {
            ts: vec![2, 3],
            vs: vec![2.0, 4.0],
        });
        assert_eq!(
            a.clone().into_sorted(),
            (vec![1, 2, 3], vec![1.0, 2.0, 4.0])
        );
        let sorted = Samples {
            ts: vec![1, 2],
            vs: vec![5.0, 6.0],
        };
        assert_eq!(sorted.into_sorted(), (vec![1, 2], vec![5.0, 6.0]));
    }

    #[test]
    fn bytes_follow_capacity() {
        let mut m = Memtable::default();
        for t in 0..1000 {
            m.push(1, t, 0.0);
            m.push(2, t, 0.0);
        }
        let b = &m.series[&1];
        assert!(b.ts.capacity() >= 1000 && b.ts.capacity() <= 1250);
        let vecs: usize = m
            .series
            .values()
            .map(|b| (b.ts.capacity() + b.values.capacity()) * 8)
            .sum();
        assert_eq!(m.bytes(), vecs + m.series.capacity() * SLOT_BYTES);
    }
}
