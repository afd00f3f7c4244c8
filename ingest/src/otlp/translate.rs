//! OTLP metrics to Prometheus series, pushed onto a [`Batch`]: the data model mapping of
//! Prometheus 3.x's OTLP receiver (job/instance from the `service.*` attributes, `target_info`,
//! promoted resource attributes, `;`-joined label collisions, type and unit suffixes, histogram and
//! summary series, staleness for `NoRecordedValue`), with delta temporality converted to
//! cumulative through [`DeltaStore`].

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint,
    ResourceMetrics, SummaryDataPoint, metric, number_data_point,
};
use xxhash_rust::xxh3::Xxh3;

use super::delta::{Buckets, DeltaStore};
use super::names::{MetricKind, bound_string, float_string, label_name, metric_name};
use super::{ExponentialHistograms, OtlpOptions};
use crate::error::Result;
use crate::outcome::RejectReason;
use crate::pipeline::{Batch, Sample, SeriesLabels};
use crate::sink::SeriesSink;

/// Prometheus's staleness marker.
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);
/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
const NO_RECORDED_VALUE: u32 = 1;
/// Resource attributes that make `job` and `instance`.
const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";
/// `target_info` samples are written this often between a resource's first and last data point
/// (half of Prometheus's default lookback delta), plus one at the last.
const TARGET_INFO_STEP_MS: i64 = 150_000;

type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// Counts of one request's translation, in OTLP terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointCounts {
    /// Data points in the request.
    pub points: u64,
    /// Data points of which at least one sample was not stored.
    pub rejected: u64,
}

/// One Prometheus series of a data point: the point's labels, the metric name and an optional
/// `le` / `quantile`.
struct Series<'p> {
    labels: &'p [(Cow<'p, str>, Cow<'p, str>)],
    name: &'p str,
    extra: Option<(&'static str, &'p str)>,
}

impl Series<'_> {
    fn shadowed(&self, name: &str) -> bool {
        name == "__name__" || self.extra.is_some_and(|(n, _)| n == name)
    }

    fn hash_into(&self, h: &mut Xxh3) {
        h.update(self.name.as_bytes());
        h.update(&[0xff]);
        if let Some((n, v)) = self.extra {
            h.update(n.as_bytes());
            h.update(&[0xfe]);
            h.update(v.as_bytes());
        }
        h.update(&[0xff]);
        for (n, v) in self.labels {
            h.update(n.as_bytes());
            h.update(&[0xfe]);
            h.update(v.as_bytes());
            h.update(&[0xff]);
        }
    }
}

impl SeriesLabels for Series<'_> {
    fn key(&self, seed: u64) -> u128 {
        let mut h = Xxh3::with_seed(seed);
        self.hash_into(&mut h);
        h.digest128()
    }

    fn labels<'s>(&'s self, out: &mut Vec<(&'s str, &'s str)>) -> Result<()> {
        out.push(("__name__", self.name));
        if let Some(extra) = self.extra {
            out.push(extra);
        }
        out.extend(
            self.labels
                .iter()
                .filter(|(n, _)| !self.shadowed(n))
                .map(|(n, v)| (&**n, &**v)),
        );
        Ok(())
    }
}

/// An attribute value as a label value (OTLP's `AsString`).
fn value_string(v: Option<&AnyValue>) -> Cow<'_, str> {
    match v.and_then(|v| v.value.as_ref()) {
        None => Cow::Borrowed(""),
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s),
        Some(any_value::Value::BoolValue(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Some(any_value::Value::IntValue(i)) => Cow::Owned(i.to_string()),
        Some(any_value::Value::DoubleValue(d)) => Cow::Owned(float_string(*d)),
        Some(any_value::Value::BytesValue(b)) => Cow::Owned(base64_std(b)),
        Some(other) => Cow::Owned(json_value(Some(other))),
        #[allow(unreachable_patterns)]
        _ => Cow::Borrowed(""),
    }
}

/// Arrays and maps as JSON, as `AsString` writes them.
fn json_value(v: Option<&any_value::Value>) -> String {
    fn to_json(v: Option<&any_value::Value>, depth: usize) -> serde_json::Value {
        use serde_json::Value as J;
        if depth > 32 {
            return J::Null;
        }
        match v {
            None => J::Null,
            Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
            Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
            Some(any_value::Value::IntValue(i)) => J::from(*i),
            Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
                .map_or_else(|| J::String(float_string(*d)), J::Number),
            Some(any_value::Value::BytesValue(b)) => J::String(base64_std(b)),
            Some(any_value::Value::ArrayValue(a)) => J::Array(
                a.values
                    .iter()
                    .map(|x| to_json(x.value.as_ref(), depth + 1))
                    .collect(),
            ),
            Some(any_value::Value::KvlistValue(kv)) => J::Object(
                kv.values
                    .iter()
                    .map(|kv| {
                        (
                            kv.key.clone(),
                            to_json(kv.value.as_ref().and_then(|v| v.value.as_ref()), depth + 1),
                        )
                    })
                    .collect(),
            ),
            #[allow(unreachable_patterns)]
            Some(_) => J::Null,
        }
    }
    to_json(v, 0).to_string()
}

fn base64_std(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(char::from(T[((v >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Attribute labels: sanitized names, values of keys that map to the same name joined with `;`
/// in the lexical order of the original keys; sorted by name. `Err(key)` for a key that has no
/// label name.
fn attribute_labels<'a>(attrs: &'a [KeyValue], skip: &[&str]) -> Result<Pairs<'a>, &'a str> {
    let mut by_key: Vec<&KeyValue> = attrs
        .iter()
        .filter(|kv| !skip.contains(&kv.key.as_str()))
        .collect();
    by_key.sort_by(|a, b| a.key.cmp(&b.key));
    let mut named: Pairs<'a> = Vec::with_capacity(by_key.len() + 4);
    for kv in by_key {
        let name = label_name(&kv.key).ok_or(kv.key.as_str())?;
        named.push((name, value_string(kv.value.as_ref())));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Pairs<'a> = Vec::with_capacity(named.len() + 4);
    for (n, v) in named {
        match out.last_mut() {
            Some((last, joined)) if *last == n => {
                let s = joined.to_mut();
                s.push(';');
                s.push_str(&v);
            }
            _ => out.push((n, v)),
        }
    }
    Ok(out)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// What every series of one resource shares.
struct ResourceLabels<'r> {
    /// Promoted resource attributes, sanitized.
    promoted: Pairs<'r>,
    job: Option<Cow<'r, str>>,
    instance: Option<Cow<'r, str>>,
}

impl<'r> ResourceLabels<'r> {
    fn new(attrs: &'r [KeyValue], options: &OtlpOptions) -> Self {
        let mut promoted: Pairs<'r> = Vec::new();
        for key in &options.promote_resource_attributes {
            if let Some(kv) = attrs.iter().find(|kv| kv.key == *key)
                && let Some(name) = label_name(&kv.key)
                && !promoted.iter().any(|(n, _)| *n == name)
            {
                promoted.push((name, value_string(kv.value.as_ref())));
            }
        }
        let name = attr(attrs, SERVICE_NAME).map(|v| value_string(Some(v)));
        let job = name.map(|name| match attr(attrs, SERVICE_NAMESPACE) {
            Some(ns) => Cow::Owned(format!("{}/{name}", value_string(Some(ns)))),
            None => name,
        });
        let instance = attr(attrs, SERVICE_INSTANCE_ID).map(|v| value_string(Some(v)));
        Self {
            promoted,
            job,
            instance,
        }
    }

    /// Adds the promoted attributes (a data point's own label of the same name wins), then `job`
    /// and `instance` (they win over the data point's).
    fn apply<'p>(&'p self, labels: &mut Pairs<'p>) {
        for (n, v) in &self.promoted {
            if !labels.iter().any(|(m, _)| m == n) {
                labels.push((Cow::Borrowed(&**n), Cow::Borrowed(&**v)));
            }
        }
        for (name, value) in [("job", &self.job), ("instance", &self.instance)] {
            let Some(value) = value else { continue };
            match labels.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = Cow::Borrowed(&**value),
                None => labels.push((Cow::Borrowed(name), Cow::Borrowed(&**value))),
            }
        }
    }
}

/// Translates one `ResourceMetrics` onto `batch`.
pub(crate) struct Translator<'t> {
    pub(crate) options: &'t OtlpOptions,
    pub(crate) deltas: &'t DeltaStore,
    /// The cluster's name: part of the delta streams' identity.
    pub(crate) cluster: &'t str,
    pub(crate) now_ms: i64,
    pub(crate) counts: PointCounts,
}

/// The timestamp of a data point in milliseconds (integer division, as Prometheus).
fn millis(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

fn flags_stale(flags: u32) -> bool {
    flags & NO_RECORDED_VALUE != 0
}

impl Translator<'_> {
    pub(crate) fn resource<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        rm: &ResourceMetrics,
    ) -> Result<()> {
        let attrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
        let res = ResourceLabels::new(attrs, self.options);
        let mut span: Option<(i64, i64)> = None;
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                if let Some(t) = self.metric(batch, &res, m)? {
                    span = Some(span.map_or(t, |(a, b)| (a.min(t.0), b.max(t.1))));
                }
            }
        }
        if let Some(span) = span {
            self.target_info(batch, attrs, &res, span)?;
        }
        Ok(())
    }

    /// One metric's data points; returns the range of their timestamps.
    fn metric<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        res: &ResourceLabels<'_>,
        m: &opentelemetry_proto::tonic::metrics::v1::Metric,
    ) -> Result<Option<(i64, i64)>> {
        let Some(data) = &m.data else {
            return Ok(None);
        };
        let kind = match data {
            metric::Data::Gauge(_) => MetricKind::Gauge,
            metric::Data::Sum(s) if s.is_monotonic => MetricKind::Counter,
            metric::Data::Sum(_) => MetricKind::UpDownCounter,
            metric::Data::Histogram(_) | metric::Data::ExponentialHistogram(_) => {
                MetricKind::Histogram
            }
            metric::Data::Summary(_) => MetricKind::Summary,
        };
        let points = match data {
            metric::Data::Gauge(g) => g.data_points.len(),
            metric::Data::Sum(s) => s.data_points.len(),
            metric::Data::Histogram(h) => h.data_points.len(),
            metric::Data::ExponentialHistogram(h) => h.data_points.len(),
            metric::Data::Summary(s) => s.data_points.len(),
        } as u64;
        if points == 0 {
            return Ok(None);
        }
        self.counts.points += points;
        let Some(name) = metric_name(&m.name, &m.unit, kind) else {
            self.reject_points(batch, RejectReason::InvalidMetricName, points, || {
                format!("metric {:?}: no Prometheus name survives escaping", m.name)
            });
            return Ok(None);
        };
        let temporality = match data {
            metric::Data::Sum(s) => s.aggregation_temporality,
            metric::Data::Histogram(h) => h.aggregation_temporality,
            metric::Data::ExponentialHistogram(h) => h.aggregation_temporality,
            _ => AggregationTemporality::Cumulative as i32,
        };
        let delta = temporality == AggregationTemporality::Delta as i32;
        if !delta && temporality != AggregationTemporality::Cumulative as i32 {
            self.reject_points(batch, RejectReason::InvalidTemporality, points, || {
                format!(
                    "{name}: {} (aggregation_temporality {temporality}; 1 = delta, 2 = cumulative)",
                    RejectReason::InvalidTemporality
                )
            });
            return Ok(None);
        }
        if matches!(data, metric::Data::ExponentialHistogram(_))
            && self.options.exponential_histograms == ExponentialHistograms::Reject
        {
            self.reject_points(
                batch,
                RejectReason::ExponentialHistogramUnsupported,
                points,
                || {
                    format!(
                        "{name}: {} (otlp.exponential_histograms is reject)",
                        RejectReason::ExponentialHistogramUnsupported
                    )
                },
            );
            return Ok(None);
        }
        let mut span: Option<(i64, i64)> = None;
        let mut seen = |ns: u64| {
            let t = millis(ns);
            span = Some(span.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
        };
        match data {
            metric::Data::Gauge(g) => {
                for p in &g.data_points {
                    seen(p.time_unix_nano);
                    self.number(batch, res, &name, p, false)?;
                }
            }
            metric::Data::Sum(s) => {
                for p in &s.data_points {
                    seen(p.time_unix_nano);
                    self.number(batch, res, &name, p, delta)?;
                }
            }
            metric::Data::Histogram(h) => {
                for p in &h.data_points {
                    seen(p.time_unix_nano);
                    self.histogram(batch, res, &name, p, delta)?;
                }
            }
            metric::Data::ExponentialHistogram(h) => {
                for p in &h.data_points {
                    seen(p.time_unix_nano);
                    self.exponential(batch, res, &name, p, delta)?;
                }
            }
            metric::Data::Summary(s) => {
                for p in &s.data_points {
                    seen(p.time_unix_nano);
                    self.summary(batch, res, &name, p)?;
                }
            }
        }
        Ok(span)
    }

    fn reject_points<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        reason: RejectReason,
        points: u64,
        example: impl FnOnce() -> String,
    ) {
        self.counts.rejected += points;
        batch.reject(reason, points, example);
    }

    /// The labels of a data point, or `None` after rejecting it for an attribute key that has no
    /// label name.
    fn point_labels<'p, S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        res: &'p ResourceLabels<'p>,
        name: &str,
        attrs: &'p [KeyValue],
        samples: u64,
    ) -> Option<Pairs<'p>> {
        match attribute_labels(attrs, &[]) {
            Ok(mut labels) => {
                res.apply(&mut labels);
                Some(labels)
            }
            Err(key) => {
                self.counts.rejected += 1;
                batch.reject(RejectReason::InvalidLabelName, samples, || {
                    format!(
                        "{name}: {} (attribute {key:?} has no Prometheus label name)",
                        RejectReason::InvalidLabelName
                    )
                });
                None
            }
        }
    }

    /// Pushes the series of one data point, counting the point as rejected when any of its
    /// samples was.
    fn push_point<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        series: &[(Series<'_>, f64)],
        ts: i64,
    ) -> Result<()> {
        let before = batch.outcome_mut().samples_rejected();
        for (s, v) in series {
            batch.push(
                s,
                &[Sample {
                    timestamp_ms: ts,
                    value: *v,
                }],
            )?;
        }
        if batch.outcome_mut().samples_rejected() > before {
            self.counts.rejected += 1;
        }
        Ok(())
    }

    /// The identity of a delta stream: cluster, metric name and labels.
    fn stream_key(&self, name: &str, labels: &[(Cow<'_, str>, Cow<'_, str>)]) -> u128 {
        let mut h = Xxh3::with_seed(0);
        h.update(self.cluster.as_bytes());
        h.update(&[0xfd]);
        Series {
            labels,
            name,
            extra: None,
        }
        .hash_into(&mut h);
        h.digest128()
    }

    fn number<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        res: &ResourceLabels<'_>,
        name: &str,
        p: &NumberDataPoint,
        delta: bool,
    ) -> Result<()> {
        batch.outcome_mut().exemplars_ignored += p.exemplars.len() as u64;
        let Some(labels) = self.point_labels(batch, res, name, &p.attributes, 1) else {
            return Ok(());
        };
        let mut value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => 0.0,
        };
        if flags_stale(p.flags) {
            value = STALE_NAN;
        } else if delta {
            let key = self.stream_key(name, &labels);
            match self
                .deltas
                .add_sum(key, p.time_unix_nano, value, self.now_ms)
            {
                Ok(total) => value = total,
                Err(reason) => {
                    self.counts.rejected += 1;
                    batch.reject(reason, 1, || {
                        format!("{name}: {reason} (time_unix_nano {})", p.time_unix_nano)
                    });
                    return Ok(());
                }
            }
        }
        let series = [(
            Series {
                labels: &labels,
                name,
                extra: None,
            },
            value,
        )];
        self.push_point(batch, &series, millis(p.time_unix_nano))
    }

    /// The `_bucket`, `_count` and `_sum` series of a histogram with finite `buckets` (bound and
    /// the count of that bucket alone) and the total `count`.
    #[allow(clippy::too_many_arguments)]
    fn emit_histogram<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        labels: &[(Cow<'_, str>, Cow<'_, str>)],
        name: &str,
        buckets: &Buckets,
        count: u64,
        sum: Option<f64>,
        stale: bool,
        ts: i64,
    ) -> Result<()> {
        let bucket_name = format!("{name}_bucket");
        let count_name = format!("{name}_count");
        let sum_name = format!("{name}_sum");
        let les: Vec<String> = buckets.bounds.iter().map(|b| bound_string(*b)).collect();
        let v = |x: f64| if stale { STALE_NAN } else { x };
        let mut series: Vec<(Series<'_>, f64)> = Vec::with_capacity(les.len() + 3);
        let mut cumulative = 0u64;
        for (le, n) in les.iter().zip(&buckets.counts) {
            cumulative = cumulative.saturating_add(*n);
            series.push((
                Series {
                    labels,
                    name: &bucket_name,
                    extra: Some(("le", le)),
                },
                v(cumulative as f64),
            ));
        }
        series.push((
            Series {
                labels,
                name: &bucket_name,
                extra: Some(("le", "+Inf")),
            },
            v(count as f64),
        ));
        series.push((
            Series {
                labels,
                name: &count_name,
                extra: None,
            },
            v(count as f64),
        ));
        if let Some(sum) = sum {
            series.push((
                Series {
                    labels,
                    name: &sum_name,
                    extra: None,
                },
                v(sum),
            ));
        }
        self.push_point(batch, &series, ts)
    }

    fn histogram<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        res: &ResourceLabels<'_>,
        name: &str,
        p: &HistogramDataPoint,
        delta: bool,
    ) -> Result<()> {
        batch.outcome_mut().exemplars_ignored += p.exemplars.len() as u64;
        let n = p.explicit_bounds.len() as u64 + 3;
        let Some(labels) = self.point_labels(batch, res, name, &p.attributes, n) else {
            return Ok(());
        };
        let buckets = Buckets {
            bounds: p.explicit_bounds.clone(),
            counts: (0..p.explicit_bounds.len())
                .map(|i| p.bucket_counts.get(i).copied().unwrap_or(0))
                .collect(),
        };
        self.histogram_like(
            batch,
            &labels,
            name,
            buckets,
            (p.count, p.sum, p.flags, p.time_unix_nano),
            delta,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn histogram_like<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        labels: &[(Cow<'_, str>, Cow<'_, str>)],
        name: &str,
        buckets: Buckets,
        (count, sum, flags, time_ns): (u64, Option<f64>, u32, u64),
        delta: bool,
        fixed_grid: bool,
    ) -> Result<()> {
        let stale = flags_stale(flags);
        let (buckets, count, sum) = if delta && !stale {
            let key = self.stream_key(name, labels);
            match self.deltas.add_histogram(
                key,
                time_ns,
                buckets,
                count,
                sum,
                fixed_grid,
                self.now_ms,
            ) {
                Ok(v) => v,
                Err(reason) => {
                    self.counts.rejected += 1;
                    batch.reject(reason, 1, || {
                        format!("{name}: {reason} (time_unix_nano {time_ns})")
                    });
                    return Ok(());
                }
            }
        } else {
            (buckets, count, sum)
        };
        self.emit_histogram(
            batch,
            labels,
            name,
            &buckets,
            count,
            sum,
            stale,
            millis(time_ns),
        )
    }

    fn exponential<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        res: &ResourceLabels<'_>,
        name: &str,
        p: &ExponentialHistogramDataPoint,
        delta: bool,
    ) -> Result<()> {
        batch.outcome_mut().exemplars_ignored += p.exemplars.len() as u64;
        let buckets = super::delta::exponential_to_classic(p);
        let n = buckets.bounds.len() as u64 + 3;
        let Some(labels) = self.point_labels(batch, res, name, &p.attributes, n) else {
            return Ok(());
        };
        self.histogram_like(
            batch,
            &labels,
            name,
            buckets,
            (p.count, p.sum, p.flags, p.time_unix_nano),
            delta,
            true,
        )
    }

    fn summary<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        res: &ResourceLabels<'_>,
        name: &str,
        p: &SummaryDataPoint,
    ) -> Result<()> {
        let n = p.quantile_values.len() as u64 + 2;
        let Some(labels) = self.point_labels(batch, res, name, &p.attributes, n) else {
            return Ok(());
        };
        let stale = flags_stale(p.flags);
        let v = |x: f64| if stale { STALE_NAN } else { x };
        let count_name = format!("{name}_count");
        let sum_name = format!("{name}_sum");
        let qs: Vec<String> = p
            .quantile_values
            .iter()
            .map(|q| bound_string(q.quantile))
            .collect();
        let mut series: Vec<(Series<'_>, f64)> = Vec::with_capacity(qs.len() + 2);
        for (q, qv) in qs.iter().zip(&p.quantile_values) {
            series.push((
                Series {
                    labels: &labels,
                    name,
                    extra: Some(("quantile", q)),
                },
                v(qv.value),
            ));
        }
        series.push((
            Series {
                labels: &labels,
                name: &count_name,
                extra: None,
            },
            v(p.count as f64),
        ));
        series.push((
            Series {
                labels: &labels,
                name: &sum_name,
                extra: None,
            },
            v(p.sum),
        ));
        self.push_point(batch, &series, millis(p.time_unix_nano))
    }

    /// `target_info` of a resource: its non-identifying attributes plus `job`/`instance`, value 1,
    /// every [`TARGET_INFO_STEP_MS`] over the span of its data points and at the last one. Not
    /// written without `job` and `instance`, or without other attributes.
    fn target_info<S: SeriesSink>(
        &mut self,
        batch: &mut Batch<'_, S>,
        attrs: &[KeyValue],
        res: &ResourceLabels<'_>,
        (first, last): (i64, i64),
    ) -> Result<()> {
        if res.job.is_none() && res.instance.is_none() {
            return Ok(());
        }
        let identifying = [SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID];
        if !attrs
            .iter()
            .any(|kv| !identifying.contains(&kv.key.as_str()))
        {
            return Ok(());
        }
        let Ok(mut labels) = attribute_labels(attrs, &identifying) else {
            // an unnamable resource attribute: the data points were stored, the info is not
            return Ok(());
        };
        res.apply(&mut labels);
        let series = Series {
            labels: &labels,
            name: "target_info",
            extra: None,
        };
        let mut samples = Vec::new();
        let mut t = first;
        while t < last && samples.len() < 1024 {
            samples.push(Sample {
                timestamp_ms: t,
                value: 1.0,
            });
            t = t.saturating_add(TARGET_INFO_STEP_MS);
        }
        samples.push(Sample {
            timestamp_ms: last,
            value: 1.0,
        });
        batch.push(&series, &samples)
    }
}

#[cfg(test)]
mod tests;
