//! Delta temporality made cumulative: per stream (cluster, metric name, labels) a running sum (or
//! running histogram buckets), kept in memory; and exponential histograms as classic buckets.
//!
//! A stream's first delta point starts it at that point's value. Points at or before the stream's
//! last time are out of order and rejected. State idle for longer than the active-series window
//! is dropped ([`DeltaStore::sweep`]), and lost on restart: a stream then starts again from its
//! next delta, which PromQL's `rate()`/`increase()` read as a counter reset. The number of
//! streams is capped; past the cap new streams are rejected until idle ones are swept.

use hashbrown::HashMap;
use opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint;
use parking_lot::Mutex;

use crate::outcome::RejectReason;

/// Finite bucket upper bounds, ascending, with the count of each bucket alone (not cumulative);
/// the `+Inf` bucket is the histogram's total count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    /// Upper bounds (`le`).
    pub bounds: Vec<f64>,
    /// Observations in each bucket (same length as `bounds`).
    pub counts: Vec<u64>,
}

#[derive(Debug)]
enum Value {
    Sum(f64),
    Histogram {
        buckets: Buckets,
        count: u64,
        sum: Option<f64>,
    },
}

#[derive(Debug)]
struct Stream {
    last_ns: u64,
    seen_ms: i64,
    value: Value,
}

/// The running totals of every delta stream.
#[derive(Debug)]
pub struct DeltaStore {
    streams: Mutex<HashMap<u128, Stream>>,
    max_streams: usize,
}

impl DeltaStore {
    /// A store holding at most `max_streams` streams.
    pub fn new(max_streams: usize) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            max_streams,
        }
    }

    /// Streams held.
    pub fn len(&self) -> usize {
        self.streams.lock().len()
    }

    /// True when no stream is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops streams not seen since `cutoff_ms`; returns how many.
    pub fn sweep(&self, cutoff_ms: i64) -> usize {
        let mut s = self.streams.lock();
        let before = s.len();
        s.retain(|_, st| st.seen_ms >= cutoff_ms);
        before - s.len()
    }

    /// Finds or starts the stream `key` for a point at `time_ns`.
    fn with_stream<T>(
        &self,
        key: u128,
        time_ns: u64,
        now_ms: i64,
        start: impl FnOnce() -> Value,
        update: impl FnOnce(&mut Value) -> T,
    ) -> Result<T, RejectReason> {
        let mut streams = self.streams.lock();
        let full = streams.len() >= self.max_streams;
        let st = match streams.entry(key) {
            hashbrown::hash_map::Entry::Occupied(o) => {
                let st = o.into_mut();
                if time_ns <= st.last_ns {
                    return Err(RejectReason::OutOfOrderDelta);
                }
                st
            }
            hashbrown::hash_map::Entry::Vacant(v) => {
                if full {
                    return Err(RejectReason::MaxActiveSeries);
                }
                v.insert(Stream {
                    last_ns: 0,
                    seen_ms: now_ms,
                    value: start(),
                })
            }
        };
        st.last_ns = time_ns;
        st.seen_ms = now_ms;
        Ok(update(&mut st.value))
    }

    /// Adds a delta sum point; returns the cumulative value.
    pub fn add_sum(
        &self,
        key: u128,
        time_ns: u64,
        delta: f64,
        now_ms: i64,
    ) -> Result<f64, RejectReason> {
        self.with_stream(
            key,
            time_ns,
            now_ms,
            || Value::Sum(0.0),
            |v| match v {
                Value::Sum(total) => {
                    *total += delta;
                    *total
                }
                other => {
                    // the same labels were a histogram before: start over as a sum
                    *other = Value::Sum(delta);
                    delta
                }
            },
        )
    }

    /// Adds a delta histogram point; returns the cumulative buckets, count and sum. With
    /// `fixed_grid` (buckets on a grid shared by every point, as converted exponential
    /// histograms are) buckets of different points are merged by bound; otherwise a change of
    /// the bucket bounds starts the stream over.
    #[allow(clippy::too_many_arguments)]
    pub fn add_histogram(
        &self,
        key: u128,
        time_ns: u64,
        buckets: Buckets,
        count: u64,
        sum: Option<f64>,
        fixed_grid: bool,
        now_ms: i64,
    ) -> Result<(Buckets, u64, Option<f64>), RejectReason> {
        let zeroed = Buckets {
            bounds: buckets.bounds.clone(),
            counts: vec![0; buckets.bounds.len()],
        };
        let fresh = move || Value::Histogram {
            buckets: zeroed,
            count: 0,
            sum: sum.map(|_| 0.0),
        };
        self.with_stream(key, time_ns, now_ms, fresh, |v| {
            let restart = match v {
                Value::Histogram { buckets: b, .. } => !fixed_grid && b.bounds != buckets.bounds,
                Value::Sum(_) => true,
            };
            if restart {
                *v = Value::Histogram {
                    buckets: buckets.clone(),
                    count,
                    sum,
                };
            } else if let Value::Histogram {
                buckets: acc,
                count: c,
                sum: s,
            } = v
            {
                merge(acc, &buckets);
                *c = c.saturating_add(count);
                *s = match (*s, sum) {
                    (Some(a), Some(b)) => Some(a + b),
                    (None, b) => b,
                    (a, None) => a,
                };
            }
            match v {
                Value::Histogram {
                    buckets: b,
                    count: c,
                    sum: s,
                } => (b.clone(), *c, *s),
                Value::Sum(_) => (buckets, count, sum),
            }
        })
    }
}

/// Adds `add`'s bucket counts into `acc`, inserting bounds `acc` does not have.
fn merge(acc: &mut Buckets, add: &Buckets) {
    if acc.bounds == add.bounds {
        for (a, b) in acc.counts.iter_mut().zip(&add.counts) {
            *a = a.saturating_add(*b);
        }
        return;
    }
    let mut bounds = Vec::with_capacity(acc.bounds.len() + add.bounds.len());
    let mut counts = Vec::with_capacity(bounds.capacity());
    let (mut i, mut j) = (0, 0);
    while i < acc.bounds.len() || j < add.bounds.len() {
        let a = acc.bounds.get(i).copied();
        let b = add.bounds.get(j).copied();
        match (a, b) {
            (Some(x), Some(y)) if x == y => {
                bounds.push(x);
                counts.push(acc.counts[i].saturating_add(add.counts[j]));
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                bounds.push(x);
                counts.push(acc.counts[i]);
                i += 1;
            }
            (Some(x), None) => {
                bounds.push(x);
                counts.push(acc.counts[i]);
                i += 1;
            }
            (_, Some(y)) => {
                bounds.push(y);
                counts.push(add.counts[j]);
                j += 1;
            }
            (None, None) => break,
        }
    }
    acc.bounds = bounds;
    acc.counts = counts;
}

/// The scale exponential buckets are converted at: scale 0 (powers of two) or the point's own
/// scale when coarser, so that points of one stream share bucket bounds however their SDK
/// rescaled.
const CLASSIC_MAX_SCALE: i32 = 0;

/// An exponential histogram point as classic buckets: negative buckets (upper bound
/// `-base^index`), the zero bucket (`le` = the zero threshold), positive buckets (upper bound
/// `base^(index+1)`), merged down to scale [`CLASSIC_MAX_SCALE`] at most. Bounds that overflow
/// `f64` fall into `+Inf`.
pub fn exponential_to_classic(p: &ExponentialHistogramDataPoint) -> Buckets {
    let scale = p.scale.clamp(-10, 20);
    let target = scale.min(CLASSIC_MAX_SCALE);
    let shift = (scale - target) as u32;
    // base^index = 2^(index * 2^-target); target <= 0 so 2^-target is an integer
    let step = 2f64.powi(-target);
    let pow = |index: i64| (index as f64 * step).exp2();
    let mut out: Vec<(f64, u64)> = Vec::new();
    let collect = |b: &Option<_>, out: &mut Vec<(i64, u64)>| {
        if let Some(b) = b {
            let b: &opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets = b;
            for (i, n) in b.bucket_counts.iter().enumerate() {
                if *n == 0 {
                    continue;
                }
                let index = (i64::from(b.offset) + i as i64) >> shift;
                match out.last_mut() {
                    Some((last, c)) if *last == index => *c = c.saturating_add(*n),
                    _ => out.push((index, *n)),
                }
            }
        }
    };
    let mut neg = Vec::new();
    collect(&p.negative, &mut neg);
    let mut pos = Vec::new();
    collect(&p.positive, &mut pos);
    // negative buckets, most negative first: bucket `index` holds [-base^(index+1), -base^index)
    for (index, n) in neg.iter().rev() {
        out.push((-pow(*index), *n));
    }
    let zero = if p.zero_threshold.is_finite() && p.zero_threshold > 0.0 {
        p.zero_threshold
    } else {
        0.0
    };
    if p.zero_count > 0 || !pos.is_empty() || !neg.is_empty() {
        out.push((zero, p.zero_count));
    }
    for (index, n) in &pos {
        out.push((pow(index + 1), *n));
    }
    let mut b = Buckets::default();
    for (bound, n) in out {
        if !bound.is_finite() {
            continue; // counted in +Inf (the total count)
        }
        match b.bounds.last() {
            Some(last) if *last >= bound => {
                if let Some(c) = b.counts.last_mut() {
                    *c = c.saturating_add(n);
                }
            }
            _ => {
                b.bounds.push(bound);
                b.counts.push(n);
            }
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets as ExpBuckets;

    #[test]
    fn sums_accumulate_and_reject_out_of_order() {
        let d = DeltaStore::new(10);
        assert_eq!(d.add_sum(1, 10, 2.0, 0), Ok(2.0));
        assert_eq!(d.add_sum(1, 20, 3.0, 0), Ok(5.0));
        assert_eq!(d.add_sum(1, 20, 3.0, 0), Err(RejectReason::OutOfOrderDelta));
        assert_eq!(d.add_sum(2, 5, 1.0, 0), Ok(1.0));
        assert_eq!(d.sweep(1), 2);
        assert_eq!(d.add_sum(1, 30, 1.0, 5), Ok(1.0), "swept: starts over");
    }

    #[test]
    fn stream_cap() {
        let d = DeltaStore::new(1);
        assert!(d.add_sum(1, 1, 1.0, 0).is_ok());
        assert_eq!(d.add_sum(2, 1, 1.0, 0), Err(RejectReason::MaxActiveSeries));
        assert!(d.add_sum(1, 2, 1.0, 0).is_ok(), "existing streams go on");
    }

    #[test]
    fn histograms_accumulate_and_restart_on_new_bounds() {
        let d = DeltaStore::new(10);
        let b = |bounds: &[f64], counts: &[u64]| Buckets {
            bounds: bounds.to_vec(),
            counts: counts.to_vec(),
        };
        let (acc, c, s) = d
            .add_histogram(1, 1, b(&[1.0, 5.0], &[1, 2]), 4, Some(3.0), false, 0)
            .unwrap();
        assert_eq!((acc, c, s), (b(&[1.0, 5.0], &[1, 2]), 4, Some(3.0)));
        let (acc, c, s) = d
            .add_histogram(1, 2, b(&[1.0, 5.0], &[0, 1]), 2, Some(1.5), false, 0)
            .unwrap();
        assert_eq!((acc, c, s), (b(&[1.0, 5.0], &[1, 3]), 6, Some(4.5)));
        let (acc, c, _) = d
            .add_histogram(1, 3, b(&[2.0], &[1]), 1, None, false, 0)
            .unwrap();
        assert_eq!((acc, c), (b(&[2.0], &[1]), 1), "new bounds: starts over");
        // on a fixed grid, buckets merge by bound
        let (acc, _, _) = d
            .add_histogram(2, 1, b(&[1.0, 4.0], &[1, 1]), 2, None, true, 0)
            .unwrap();
        assert_eq!(acc, b(&[1.0, 4.0], &[1, 1]));
        let (acc, c, _) = d
            .add_histogram(2, 2, b(&[2.0, 4.0], &[3, 1]), 4, None, true, 0)
            .unwrap();
        assert_eq!((acc, c), (b(&[1.0, 2.0, 4.0], &[1, 3, 2]), 6));
    }

    #[test]
    fn exponential_buckets_at_scale_zero() {
        // scale 1: base sqrt(2); positive index 0 = (1, 1.414], 1 = (1.414, 2], 2 = (2, 2.83]
        let p = ExponentialHistogramDataPoint {
            scale: 1,
            count: 7,
            zero_count: 1,
            zero_threshold: 0.0,
            positive: Some(ExpBuckets {
                offset: 0,
                bucket_counts: vec![1, 2, 3],
            }),
            negative: Some(ExpBuckets {
                offset: 0,
                bucket_counts: vec![0, 0, 0],
            }),
            ..Default::default()
        };
        let b = exponential_to_classic(&p);
        // at scale 0: index 0 = (1, 2] gets 1 + 2, index 1 = (2, 4] gets 3
        assert_eq!(b.bounds, vec![0.0, 2.0, 4.0]);
        assert_eq!(b.counts, vec![1, 3, 3]);

        let n = ExponentialHistogramDataPoint {
            scale: 0,
            count: 3,
            negative: Some(ExpBuckets {
                offset: 1,
                bucket_counts: vec![1, 2],
            }),
            ..Default::default()
        };
        let b = exponential_to_classic(&n);
        // negative index 2 = [-8, -4), index 1 = [-4, -2); then the (empty) zero bucket
        assert_eq!(b.bounds, vec![-4.0, -2.0, 0.0]);
        assert_eq!(b.counts, vec![2, 1, 0]);
    }
}
