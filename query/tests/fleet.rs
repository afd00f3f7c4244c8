//! fleetgate's own PromQL behaviour tests, on a real `Store` in a tempdir: what Prometheus's
//! scripts (`promqltest.rs`) do not cover.
//!
//! - cluster labels: aggregation by `cluster`, joins on `cluster` (`group_left`, the OpenCost
//!   `kube_pod_labels` pattern), `exported_cluster` kept apart from `cluster`;
//! - data spread over several hour partitions (Parquet) plus the memtable, before and after
//!   compaction (`maintain`), after reopening (WAL replay) and after a final flush, checked
//!   against values computed here from the samples written;
//! - late, out-of-order and overwritten samples (last write wins) across a flush boundary;
//! - staleness markers stored in Parquet (and in the memtable / WAL);
//! - the point and sample limits.
//!
//! Cases are data where they fit: a query, the evaluation time(s) and the expected result, or a
//! reference function applied to the samples written.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use fleetgate_query::Error;
use fleetgate_query::error::ApiErrorType;
use fleetgate_query::promql::{Engine, EngineOptions, Value, is_stale_nan, stale_nan};
use fleetgate_store::{Labels, Matcher, SampleRef, Store, StoreOptions};

/// 2026-01-01T00:00:00Z (an hour boundary).
const T0: i64 = 1_767_225_600_000;
const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
/// The engine's default lookback.
const LOOKBACK: i64 = 5 * MIN;

/// A series' samples, `(timestamp ms, value)`.
type Points = Vec<(i64, f64)>;
/// An expected instant vector: labels written `name=value,...`, and the value.
type Expected = &'static [(&'static str, f64)];
/// A range query's `(start, end, step)`.
type Span = (i64, i64, i64);

// ---------------------------------------------------------------------------------------------
// store and query helpers

fn opts(dir: &Path) -> StoreOptions {
    StoreOptions {
        data_dir: dir.to_path_buf(),
        // two files in a closed hour partition are enough to compact it
        compaction_min_files: 2,
        ..StoreOptions::default()
    }
}

async fn open(dir: &Path) -> Arc<Store> {
    Store::open(opts(dir)).await.unwrap()
}

/// `metric` with the labels of `pairs`, written `name=value,name=value`.
fn lbl(metric: &str, pairs: &str) -> Labels {
    let mut v: Vec<(String, String)> = Vec::new();
    if !metric.is_empty() {
        v.push(("__name__".into(), metric.into()));
    }
    for p in pairs.split(',').filter(|p| !p.is_empty()) {
        let (n, val) = p.split_once('=').expect("name=value");
        v.push((n.into(), val.into()));
    }
    Labels::from_pairs(v)
}

/// Appends `pts` (in the order given) to the series `metric{pairs}`.
async fn write(store: &Store, metric: &str, pairs: &str, pts: &[(i64, f64)]) {
    let (id, _) = store.series_id(&lbl(metric, pairs)).unwrap();
    let samples: Vec<SampleRef> = pts
        .iter()
        .map(|&(t, v)| SampleRef {
            series: id,
            timestamp_ms: t,
            value: v,
        })
        .collect();
    store.append(&samples).await.unwrap();
}

/// An instant query's vector, by labels.
async fn instant(engine: &Engine, store: &Store, q: &str, t: i64) -> BTreeMap<String, f64> {
    match engine.instant(store, q, t).await {
        Ok(Value::Vector(v)) => {
            let n = v.len();
            let out: BTreeMap<String, f64> = v
                .into_iter()
                .map(|s| (s.labels.to_string(), s.value))
                .collect();
            assert_eq!(out.len(), n, "{q} @ {t}: duplicate label sets");
            out
        }
        other => panic!("{q} @ {t}: expected a vector, got {other:?}"),
    }
}

/// A range query's matrix, by labels.
async fn range(
    engine: &Engine,
    store: &Store,
    q: &str,
    start: i64,
    end: i64,
    step: i64,
) -> BTreeMap<String, Vec<(i64, f64)>> {
    match engine.range(store, q, start, end, step).await {
        Ok(Value::Matrix(m)) => m
            .into_iter()
            .map(|s| (s.labels.to_string(), s.points))
            .collect(),
        other => panic!("{q} [{start}, {end}] / {step}: expected a matrix, got {other:?}"),
    }
}

/// Equal, or both NaN, or within a relative 1e-9 (engine and reference sum in different orders).
fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_vector(got: &BTreeMap<String, f64>, want: &[(&str, f64)], ctx: &str) {
    let want: BTreeMap<String, f64> = want
        .iter()
        .map(|(l, v)| (lbl("", l).to_string(), *v))
        .collect();
    let ok = got.len() == want.len()
        && want
            .iter()
            .all(|(l, v)| got.get(l).is_some_and(|g| close(*g, *v)));
    assert!(ok, "{ctx}:\n  want {want:?}\n  got  {got:?}");
}

// ---------------------------------------------------------------------------------------------
// reference semantics, computed from the samples written

/// The newest sample in `(t - 5m, t]`, unless it is a staleness marker.
fn ref_at(p: &[(i64, f64)], t: i64) -> Option<(i64, f64)> {
    let i = p.partition_point(|s| s.0 <= t);
    let (ts, v) = *p.get(i.checked_sub(1)?)?;
    (ts > t - LOOKBACK && !is_stale_nan(v)).then_some((ts, v))
}

/// Samples in `(t - range, t]` without staleness markers.
fn ref_window(p: &[(i64, f64)], t: i64, range: i64) -> Vec<(i64, f64)> {
    p.iter()
        .filter(|s| s.0 > t - range && s.0 <= t && !is_stale_nan(s.1))
        .copied()
        .collect()
}

/// Prometheus's `extrapolatedRate` (rate, increase, delta).
fn ref_extrapolated(
    w: &[(i64, f64)],
    t: i64,
    range: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        for p in w.windows(2) {
            if p[1].1 < p[0].1 {
                result += p[0].1;
            }
        }
    }
    let secs = |ms: i64| ms as f64 / 1000.0;
    let mut to_start = secs(first.0 - (t - range));
    let mut to_end = secs(t - last.0);
    let sampled = secs(last.0 - first.0);
    let avg = sampled / (w.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if counter {
        let mut to_zero = to_start;
        if result > 0.0 && first.1 >= 0.0 {
            to_zero = sampled * (first.1 / result);
        }
        to_start = to_start.min(to_zero);
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= secs(range);
    }
    Some(result * factor)
}

/// What a case computes from one series' samples at time `t`.
#[derive(Debug, Clone, Copy)]
enum F {
    /// Instant selector with this offset.
    At(i64),
    /// `timestamp(x)`.
    Timestamp,
    SumOver(i64),
    CountOver(i64),
    MaxOver(i64),
    MinOver(i64),
    AvgOver(i64),
    LastOver(i64),
    Increase(i64),
    Rate(i64),
    Delta(i64),
    Resets(i64),
    Changes(i64),
}

fn ref_eval(f: F, p: &[(i64, f64)], t: i64) -> Option<f64> {
    let win = |r: i64| {
        let w = ref_window(p, t, r);
        (!w.is_empty()).then_some(w)
    };
    let vals = |r: i64| win(r).map(|w| w.into_iter().map(|s| s.1).collect::<Vec<f64>>());
    match f {
        F::At(off) => ref_at(p, t - off).map(|s| s.1),
        F::Timestamp => ref_at(p, t).map(|s| s.0 as f64 / 1000.0),
        F::SumOver(r) => vals(r).map(|v| v.iter().sum()),
        F::CountOver(r) => vals(r).map(|v| v.len() as f64),
        F::MaxOver(r) => vals(r).map(|v| v.iter().copied().fold(f64::MIN, f64::max)),
        F::MinOver(r) => vals(r).map(|v| v.iter().copied().fold(f64::MAX, f64::min)),
        F::AvgOver(r) => vals(r).map(|v| v.iter().sum::<f64>() / v.len() as f64),
        F::LastOver(r) => vals(r).and_then(|v| v.last().copied()),
        F::Increase(r) => ref_extrapolated(&ref_window(p, t, r), t, r, true, false),
        F::Rate(r) => ref_extrapolated(&ref_window(p, t, r), t, r, true, true),
        F::Delta(r) => ref_extrapolated(&ref_window(p, t, r), t, r, false, false),
        F::Resets(r) => vals(r).map(|v| v.windows(2).filter(|w| w[1] < w[0]).count() as f64),
        F::Changes(r) => vals(r).map(|v| v.windows(2).filter(|w| w[1] != w[0]).count() as f64),
    }
}

/// A query whose single result is `f` of the series `series` (summed when several: the query
/// then aggregates with `sum`).
#[derive(Debug)]
struct RefCase {
    q: &'static str,
    series: &'static [&'static str],
    f: F,
}

const fn rc(q: &'static str, series: &'static [&'static str], f: F) -> RefCase {
    RefCase { q, series, f }
}

/// Expected value of `c` at `t` from the final samples in `data`.
fn expected(c: &RefCase, data: &HashMap<&str, Vec<(i64, f64)>>, t: i64) -> Option<f64> {
    let vals: Vec<f64> = c
        .series
        .iter()
        .filter_map(|k| ref_eval(c.f, &data[k], t))
        .collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

/// Runs every case as instant queries at `times` and as one range query over `span`
/// (`start, end, step`), each against the reference.
async fn check_ref_cases(
    store: &Store,
    data: &HashMap<&str, Vec<(i64, f64)>>,
    cases: &[RefCase],
    times: &[i64],
    span: Span,
    phase: &str,
) {
    let engine = Engine::default();
    let mut failures = Vec::new();
    for c in cases {
        let mut values = 0;
        for &t in times {
            let got = instant(&engine, store, c.q, t).await;
            let want = expected(c, data, t);
            values += usize::from(want.is_some());
            let ok = match (got.values().next(), want) {
                (None, None) => true,
                (Some(g), Some(w)) => got.len() == 1 && close(*g, w),
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{phase}: {} @ T0+{}s: want {want:?}, got {got:?}",
                    c.q,
                    (t - T0) / SEC
                ));
            }
        }
        let (start, end, step) = span;
        let got = range(&engine, store, c.q, start, end, step).await;
        let want: Vec<(i64, f64)> = (0..=(end - start) / step)
            .map(|i| start + i * step)
            .filter_map(|t| expected(c, data, t).map(|v| (t, v)))
            .collect();
        // a case must compare values, not only agree that there are none
        assert!(
            values > 0 && !want.is_empty(),
            "{phase}: {} has no expected values",
            c.q
        );
        let got_pts = got.values().next().cloned().unwrap_or_default();
        let ok = got.len() <= 1
            && got_pts.len() == want.len()
            && got_pts
                .iter()
                .zip(&want)
                .all(|(g, w)| g.0 == w.0 && close(g.1, w.1));
        if !ok {
            failures.push(format!(
                "{phase}: range {}:\n    want {want:?}\n    got  {got:?}",
                c.q
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 1. cluster labels

/// A counter growing `per_sec` per second from 100 at T0, every 15s up to T0+1h.
fn counter(per_sec: f64) -> Vec<(i64, f64)> {
    (0..=240)
        .map(|i| (T0 + i * 15 * SEC, 100.0 + per_sec * (i * 15) as f64))
        .collect()
}

/// A constant every 15s up to T0+1h.
fn constant(v: f64) -> Vec<(i64, f64)> {
    (0..=240).map(|i| (T0 + i * 15 * SEC, v)).collect()
}

/// Expected result of a query at T0+1h: a vector (labels as `name=value,...`), or an error of
/// API class `execution`.
#[derive(Debug)]
enum Want {
    Vector(Expected),
    ExecutionError,
}

const CLUSTER_CASES: &[(&str, Want)] = &[
    // rate is exactly `per_sec`: samples cover the 5m window every 15s
    (
        r#"sum by (cluster) (rate(http_requests_total[5m]))"#,
        Want::Vector(&[
            ("cluster=c1", 3.0),
            ("cluster=c2", 3.0),
            ("cluster=c3", 4.0),
        ]),
    ),
    // `cluster="c1"` does not match the federated series whose exported_cluster is c1
    (
        r#"sum(rate(http_requests_total{cluster="c1"}[5m]))"#,
        Want::Vector(&[("", 3.0)]),
    ),
    (
        r#"sum by (exported_cluster) (rate(http_requests_total[5m]))"#,
        Want::Vector(&[("", 6.0), ("exported_cluster=c1", 4.0)]),
    ),
    (
        r#"sum by (cluster, exported_cluster) (rate(http_requests_total[5m]))"#,
        Want::Vector(&[
            ("cluster=c1", 3.0),
            ("cluster=c2", 3.0),
            ("cluster=c3,exported_cluster=c1", 4.0),
        ]),
    ),
    (
        r#"count by (cluster) (up)"#,
        Want::Vector(&[
            ("cluster=c1", 3.0),
            ("cluster=c2", 2.0),
            ("cluster=c3", 1.0),
        ]),
    ),
    (
        r#"count by (cluster) (up == 0)"#,
        Want::Vector(&[("cluster=c1", 1.0)]),
    ),
    (r#"count(up{cluster=~"c1|c2"})"#, Want::Vector(&[("", 5.0)])),
    (
        r#"count(up{exported_cluster="c1"})"#,
        Want::Vector(&[("", 1.0)]),
    ),
    // a per-cluster info metric joined on `cluster`; the federated series joins on its own
    // `cluster` (c3 → ap), not on `exported_cluster`
    (
        r#"sum by (region) (rate(http_requests_total[5m]) * on(cluster) group_left(region) cluster_info)"#,
        Want::Vector(&[("region=eu", 3.0), ("region=us", 3.0), ("region=ap", 4.0)]),
    ),
    (
        r#"up{job="federate"} * on(cluster) group_left(region) cluster_info"#,
        Want::Vector(&[(
            "cluster=c3,exported_cluster=c1,instance=a,job=federate,region=ap",
            1.0,
        )]),
    ),
    // OpenCost: CPU by team, the team taken from kube_pod_labels of the same cluster
    (
        r#"sum by (cluster, label_team) (rate(container_cpu_usage_seconds_total[5m]) * on(cluster, namespace, pod) group_left(label_team) kube_pod_labels)"#,
        Want::Vector(&[
            ("cluster=c1,label_team=checkout", 0.625),
            ("cluster=c1,label_team=search", 0.25),
            ("cluster=c2,label_team=payments", 1.5),
            ("cluster=c3,label_team=platform", 2.0),
        ]),
    ),
    (
        r#"sum by (label_team) (rate(container_cpu_usage_seconds_total[5m]) * on(cluster, namespace, pod) group_left(label_team) kube_pod_labels)"#,
        Want::Vector(&[
            ("label_team=checkout", 0.625),
            ("label_team=search", 0.25),
            ("label_team=payments", 1.5),
            ("label_team=platform", 2.0),
        ]),
    ),
    // only the listed label comes over: the right side's exported_cluster does not
    (
        r#"rate(container_cpu_usage_seconds_total{cluster="c3"}[5m]) * on(cluster, namespace, pod) group_left(label_team) kube_pod_labels"#,
        Want::Vector(&[(
            "cluster=c3,container=app,label_team=platform,namespace=shop,pod=web-1",
            2.0,
        )]),
    ),
    (
        r#"kube_pod_labels{exported_cluster="c2"}"#,
        Want::Vector(&[(
            "__name__=kube_pod_labels,cluster=c3,exported_cluster=c2,label_team=platform,namespace=shop,pod=web-1",
            1.0,
        )]),
    ),
    // without `cluster` in `on`, web-1 of c1, c2 and c3 fall into one match group
    (
        r#"rate(container_cpu_usage_seconds_total[5m]) * on(namespace, pod) group_left(label_team) kube_pod_labels"#,
        Want::ExecutionError,
    ),
    // cluster-level sums joined one-to-one on cluster
    (
        r#"sum by (cluster) (rate(container_cpu_usage_seconds_total[5m])) / on(cluster) sum by (cluster) (rate(http_requests_total[5m]))"#,
        Want::Vector(&[
            ("cluster=c1", 0.875 / 3.0),
            ("cluster=c2", 0.5),
            ("cluster=c3", 0.5),
        ]),
    ),
];

#[tokio::test]
async fn cluster_labels() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let half = 120; // first half of the samples flushed to Parquet, the rest in the memtable
    let mut all: Vec<(&str, &str, Points)> = Vec::new();
    for (pairs, k) in [
        ("cluster=c1,job=api,instance=a", 1.0),
        ("cluster=c1,job=api,instance=b", 2.0),
        ("cluster=c2,job=api,instance=a", 3.0),
        (
            "cluster=c3,exported_cluster=c1,job=federate,instance=a",
            4.0,
        ),
    ] {
        all.push(("http_requests_total", pairs, counter(k)));
    }
    for (pairs, v) in [
        ("cluster=c1,job=api,instance=a", 1.0),
        ("cluster=c1,job=api,instance=b", 1.0),
        ("cluster=c1,job=node,instance=n1", 0.0),
        ("cluster=c2,job=api,instance=a", 1.0),
        ("cluster=c2,job=node,instance=n1", 1.0),
        (
            "cluster=c3,exported_cluster=c1,job=federate,instance=a",
            1.0,
        ),
    ] {
        all.push(("up", pairs, constant(v)));
    }
    for pairs in [
        "cluster=c1,region=eu",
        "cluster=c2,region=us",
        "cluster=c3,region=ap",
    ] {
        all.push(("cluster_info", pairs, constant(1.0)));
    }
    for pairs in [
        "cluster=c1,namespace=shop,pod=web-1,label_team=checkout",
        "cluster=c1,namespace=shop,pod=web-2,label_team=search",
        "cluster=c2,namespace=shop,pod=web-1,label_team=payments",
        "cluster=c3,exported_cluster=c2,namespace=shop,pod=web-1,label_team=platform",
    ] {
        all.push(("kube_pod_labels", pairs, constant(1.0)));
    }
    for (pairs, k) in [
        ("cluster=c1,namespace=shop,pod=web-1,container=app", 0.5),
        ("cluster=c1,namespace=shop,pod=web-1,container=proxy", 0.125),
        ("cluster=c1,namespace=shop,pod=web-2,container=app", 0.25),
        ("cluster=c2,namespace=shop,pod=web-1,container=app", 1.5),
        ("cluster=c3,namespace=shop,pod=web-1,container=app", 2.0),
    ] {
        all.push(("container_cpu_usage_seconds_total", pairs, counter(k)));
    }
    for (m, pairs, pts) in &all {
        write(&store, m, pairs, &pts[..half]).await;
    }
    store.flush().await.unwrap();
    for (m, pairs, pts) in &all {
        write(&store, m, pairs, &pts[half..]).await;
    }

    let engine = Engine::default();
    let t = T0 + HOUR;
    for (q, want) in CLUSTER_CASES {
        match want {
            Want::Vector(w) => {
                let got = instant(&engine, &store, q, t).await;
                assert_vector(&got, w, q);
                // the same through a range query ending at t
                let m = range(&engine, &store, q, t - 2 * MIN, t, MIN).await;
                let last: BTreeMap<String, f64> = m
                    .into_iter()
                    .filter_map(|(l, p)| p.last().filter(|p| p.0 == t).map(|p| (l, p.1)))
                    .collect();
                assert_vector(&last, w, &format!("range {q}"));
            }
            Want::ExecutionError => match engine.instant(store.as_ref(), q, t).await {
                Err(e) => assert_eq!(e.api_error_type(), ApiErrorType::Execution, "{q}: {e}"),
                Ok(v) => panic!("{q}: expected an execution error, got {v:?}"),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. several Parquet partitions plus the memtable, compaction, reopen

/// The gauge and the two counters: 3h in Parquet (two files per hour), 30m in the memtable.
fn tier_data() -> HashMap<&'static str, Vec<(i64, f64)>> {
    let mut g = Vec::new();
    let mut c1 = Vec::new();
    let mut v = 0.0;
    for i in 0..=420 {
        let t = T0 + i * 30 * SEC;
        g.push((t, ((i * 37) % 101) as f64 - 50.25));
        v = if i == 200 {
            // counter reset at T0+1h40m, inside the second hour partition
            (i % 7) as f64
        } else {
            v + ((i % 7) + 1) as f64
        };
        c1.push((t, v));
    }
    // a second cluster, every 20s from T0+7s
    let c2: Vec<(i64, f64)> = (0..630)
        .map(|j| (T0 + 7 * SEC + j * 20 * SEC, 5.0 + 2.0 * j as f64))
        .collect();
    HashMap::from([("g1", g), ("c1", c1), ("c2", c2)])
}

const TIER_CASES: &[RefCase] = &[
    rc(r#"g{cluster="c1"}"#, &["g1"], F::At(0)),
    rc(r#"g{cluster="c1"} offset 1h"#, &["g1"], F::At(HOUR)),
    rc(r#"timestamp(g{cluster="c1"})"#, &["g1"], F::Timestamp),
    rc(
        r#"sum_over_time(g{cluster="c1"}[2h])"#,
        &["g1"],
        F::SumOver(2 * HOUR),
    ),
    rc(
        r#"count_over_time(g{cluster="c1"}[4h])"#,
        &["g1"],
        F::CountOver(4 * HOUR),
    ),
    rc(
        r#"max_over_time(g{cluster="c1"}[90m])"#,
        &["g1"],
        F::MaxOver(90 * MIN),
    ),
    rc(
        r#"min_over_time(g{cluster="c1"}[90m])"#,
        &["g1"],
        F::MinOver(90 * MIN),
    ),
    rc(
        r#"avg_over_time(g{cluster="c1"}[1h])"#,
        &["g1"],
        F::AvgOver(HOUR),
    ),
    rc(
        r#"last_over_time(g{cluster="c1"}[1h])"#,
        &["g1"],
        F::LastOver(HOUR),
    ),
    rc(r#"changes(g{cluster="c1"}[1h])"#, &["g1"], F::Changes(HOUR)),
    rc(r#"delta(g{cluster="c1"}[1h])"#, &["g1"], F::Delta(HOUR)),
    rc(
        r#"increase(c{cluster="c1"}[30m])"#,
        &["c1"],
        F::Increase(30 * MIN),
    ),
    rc(r#"rate(c{cluster="c1"}[3h])"#, &["c1"], F::Rate(3 * HOUR)),
    rc(
        r#"resets(c{cluster="c1"}[4h])"#,
        &["c1"],
        F::Resets(4 * HOUR),
    ),
    rc(r#"rate(c{cluster="c2"}[10m])"#, &["c2"], F::Rate(10 * MIN)),
    rc(r#"sum(increase(c[1h]))"#, &["c1", "c2"], F::Increase(HOUR)),
    rc(r#"sum(c)"#, &["c1", "c2"], F::At(0)),
];

/// Instant times: inside the memtable span, at its start, just before it, and at its end.
const TIER_TIMES: &[i64] = &[
    T0 + 3 * HOUR + 10 * MIN,
    T0 + 3 * HOUR,
    T0 + 3 * HOUR - 30 * SEC,
    T0 + 3 * HOUR + 30 * MIN,
    T0 + 2 * HOUR + 15 * MIN,
];
const TIER_SPAN: Span = (T0 + 2 * HOUR + 30 * MIN, T0 + 3 * HOUR + 40 * MIN, 5 * MIN);

#[tokio::test]
async fn partitions_memtable_compaction_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = tier_data();
    let names = [
        ("g1", "g", "cluster=c1"),
        ("c1", "c", "cluster=c1"),
        ("c2", "c", "cluster=c2"),
    ];
    let split = T0 + 3 * HOUR;
    {
        let store = open(dir.path()).await;
        // hours 0-2 in two flushes (even samples, then odd ones): two files per hour partition
        for parity in [0, 1] {
            for (k, m, pairs) in names {
                let pts: Vec<(i64, f64)> = data[k]
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| s.0 < split && i % 2 == parity)
                    .map(|(_, s)| *s)
                    .collect();
                write(&store, m, pairs, &pts).await;
            }
            store.flush().await.unwrap();
        }
        // the last 30m stay in the memtable
        for (k, m, pairs) in names {
            let recent: Vec<(i64, f64)> =
                data[k].iter().filter(|s| s.0 >= split).copied().collect();
            write(&store, m, pairs, &recent).await;
        }
        let st = store.stats();
        assert_eq!((st.partitions, st.files), (3, 6), "{st:?}");
        assert!(st.memtable_samples > 0);
        check_ref_cases(
            &store,
            &data,
            TIER_CASES,
            TIER_TIMES,
            TIER_SPAN,
            "files+memtable",
        )
        .await;

        // compaction of the three closed hours; the memtable is left alone (no flush due)
        let m = store.maintain(T0 + 10 * HOUR).await.unwrap();
        assert!(m.flush.is_none(), "{m:?}");
        assert_eq!((m.compacted_partitions, m.compacted_files), (3, 6), "{m:?}");
        let st = store.stats();
        assert_eq!((st.partitions, st.files), (3, 3), "{st:?}");
        assert!(st.memtable_samples > 0);
        check_ref_cases(
            &store,
            &data,
            TIER_CASES,
            TIER_TIMES,
            TIER_SPAN,
            "after compaction",
        )
        .await;
        // dropped without close: the memtable comes back from the WAL
    }
    let store = open(dir.path()).await;
    let st = store.stats();
    let recent: u64 = data
        .values()
        .map(|p| p.iter().filter(|s| s.0 >= split).count() as u64)
        .sum();
    assert_eq!((st.files, st.memtable_samples), (3, recent), "{st:?}");
    check_ref_cases(
        &store,
        &data,
        TIER_CASES,
        TIER_TIMES,
        TIER_SPAN,
        "after reopen",
    )
    .await;

    // and with everything in Parquet
    store.flush().await.unwrap();
    assert_eq!(store.stats().memtable_samples, 0);
    check_ref_cases(
        &store,
        &data,
        TIER_CASES,
        TIER_TIMES,
        TIER_SPAN,
        "all flushed",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. out-of-order, late and overwritten samples

/// One step of the write history of `ooo_total{cluster="c1"}`.
#[derive(Debug)]
enum Op {
    /// One append, samples in this order.
    Write(Vec<(i64, f64)>),
    Flush,
    /// Compaction (`maintain`) of the closed partitions.
    Compact,
    /// Drop the store without closing it and open it again (WAL replay).
    Reopen,
    /// Compare the queries with the final data written so far.
    Check(&'static str),
}

/// The true counter: `10 i + i % 3` at `T0 + 15s i`, two hours.
fn ooo_true(i: i64) -> (i64, f64) {
    (T0 + i * 15 * SEC, (10 * i + i % 3) as f64)
}

fn ooo_history() -> Vec<Op> {
    // newest hour first (skipping 250..260), with a wrong value at 300 and 310 written twice
    let mut newer: Vec<(i64, f64)> = Vec::new();
    for i in 240..480 {
        if (250..260).contains(&i) {
            continue;
        }
        if i == 300 {
            newer.push((ooo_true(i).0, 1e6));
            continue;
        }
        if i == 310 {
            newer.push((ooo_true(i).0, 0.0));
        }
        newer.push(ooo_true(i));
    }
    // then, after a flush, the older hour backwards, the gap of the newer hour shuffled, and the
    // correction of sample 300 (its wrong value is in Parquet by now)
    let mut late: Vec<(i64, f64)> = (0..240).rev().map(ooo_true).collect();
    late.extend([257, 251, 259, 250, 255, 253, 252, 258, 254, 256].map(ooo_true));
    late.push(ooo_true(300));
    vec![
        Op::Write(newer),
        Op::Flush,
        Op::Write(late),
        Op::Check("late writes in the memtable over a file"),
        Op::Flush,
        Op::Check("two files in one hour partition"),
        // a later rewrite of a sample of a flushed hour, alone in its append
        Op::Write(vec![(ooo_true(320).0, 3205.0)]),
        Op::Check("rewrite in the memtable"),
        Op::Flush,
        Op::Compact,
        Op::Check("after compaction"),
        Op::Write(vec![(ooo_true(330).0, 3302.0), (ooo_true(100).0, 1000.5)]),
        Op::Reopen,
        Op::Check("after reopen"),
    ]
}

const OOO_CASES: &[RefCase] = &[
    rc(r#"ooo_total"#, &["ooo"], F::At(0)),
    rc(r#"timestamp(ooo_total)"#, &["ooo"], F::Timestamp),
    rc(r#"increase(ooo_total[1h])"#, &["ooo"], F::Increase(HOUR)),
    rc(r#"rate(ooo_total[5m])"#, &["ooo"], F::Rate(5 * MIN)),
    rc(r#"resets(ooo_total[2h])"#, &["ooo"], F::Resets(2 * HOUR)),
    rc(
        r#"count_over_time(ooo_total[2h])"#,
        &["ooo"],
        F::CountOver(2 * HOUR),
    ),
    rc(
        r#"max_over_time(ooo_total[10m])"#,
        &["ooo"],
        F::MaxOver(10 * MIN),
    ),
    rc(r#"changes(ooo_total[2h])"#, &["ooo"], F::Changes(2 * HOUR)),
];

const OOO_TIMES: &[i64] = &[
    T0 + HOUR,
    T0 + HOUR + 3 * MIN,
    T0 + HOUR + 15 * MIN,
    T0 + HOUR + 20 * MIN,
    T0 + 2 * HOUR,
    T0 + 30 * MIN,
];
const OOO_SPAN: Span = (T0 + 50 * MIN, T0 + HOUR + 30 * MIN, MIN);

#[tokio::test]
async fn out_of_order_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path()).await;
    let mut written: BTreeMap<i64, f64> = BTreeMap::new();
    let mut checks = 0;
    for op in ooo_history() {
        match op {
            Op::Write(pts) => {
                write(&store, "ooo_total", "cluster=c1", &pts).await;
                written.extend(pts); // in order: the last write of a timestamp wins
            }
            Op::Flush => {
                store.flush().await.unwrap();
            }
            Op::Compact => {
                let m = store.maintain(T0 + 10 * HOUR).await.unwrap();
                assert!(m.compacted_partitions >= 1, "{m:?}");
            }
            Op::Reopen => {
                drop(store);
                store = open(dir.path()).await;
            }
            Op::Check(phase) => {
                let final_pts: Vec<(i64, f64)> = written.iter().map(|(t, v)| (*t, *v)).collect();
                // the history rewrote every wrong value: a clean counter with 480 samples
                assert_eq!(final_pts.len(), 480);
                assert!(final_pts.windows(2).all(|w| w[0].1 < w[1].1));
                let data = HashMap::from([("ooo", final_pts)]);
                check_ref_cases(&store, &data, OOO_CASES, OOO_TIMES, OOO_SPAN, phase).await;
                // and literally: no reset, every sample counted
                let engine = Engine::default();
                let q = r#"resets(ooo_total[3h])"#;
                assert_vector(
                    &instant(&engine, &store, q, T0 + 2 * HOUR).await,
                    &[("cluster=c1", 0.0)],
                    phase,
                );
                let q = r#"count_over_time(ooo_total[3h])"#;
                assert_vector(
                    &instant(&engine, &store, q, T0 + 2 * HOUR).await,
                    &[("cluster=c1", 480.0)],
                    phase,
                );
                checks += 1;
            }
        }
    }
    assert_eq!(checks, 5);
}

// ---------------------------------------------------------------------------------------------
// 4. staleness across storage tiers

/// Every 15s from T0 to T0+10m: `i` at `T0 + 15s i`.
fn first_ten_minutes() -> Vec<(i64, f64)> {
    (0..=40).map(|i| (T0 + i * 15 * SEC, i as f64)).collect()
}

const STALE_AT: i64 = T0 + 10 * MIN + 15 * SEC;

const STALENESS_CASES: &[(&str, i64, Expected)] = &[
    // `s`: marker in Parquet, resumes at T0+20m in the memtable with 100 + j
    ("s", T0 + 10 * MIN, &[("__name__=s,cluster=c1", 40.0)]),
    ("s", STALE_AT, &[]),
    ("s", T0 + 12 * MIN, &[]),
    ("s", T0 + 19 * MIN + 59 * SEC, &[]),
    ("s", T0 + 20 * MIN, &[("__name__=s,cluster=c1", 100.0)]),
    ("s", T0 + 22 * MIN, &[("__name__=s,cluster=c1", 108.0)]),
    // range functions skip the marker: (T0+7m, T0+12m] holds samples 29..=40
    (
        "count_over_time(s[5m])",
        T0 + 12 * MIN,
        &[("cluster=c1", 12.0)],
    ),
    // last_over_time keeps the metric name, as in Prometheus 3
    (
        "last_over_time(s[15m])",
        T0 + 21 * MIN,
        &[("__name__=s,cluster=c1", 104.0)],
    ),
    (
        "last_over_time(s[15m])",
        T0 + 15 * MIN,
        &[("__name__=s,cluster=c1", 40.0)],
    ),
    ("count by (cluster) (s)", T0 + 12 * MIN, &[]),
    (
        "count by (cluster) (s)",
        T0 + 21 * MIN,
        &[("cluster=c1", 1.0)],
    ),
    // `s2`: samples in Parquet, marker in the memtable
    ("s2", T0 + 10 * MIN, &[("__name__=s2,cluster=c1", 40.0)]),
    ("s2", T0 + 12 * MIN, &[]),
    // `nan_g`: an ordinary NaN is a value, not a marker
    (
        "nan_g",
        T0 + 12 * MIN,
        &[("__name__=nan_g,cluster=c1", f64::NAN)],
    ),
    // `s3`: marker and older samples in different hour partitions (T0+55m..T0+1h, marker at 1h)
    (
        "s3",
        T0 + HOUR - 15 * SEC,
        &[("__name__=s3,cluster=c1", 20.0)],
    ),
    ("s3", T0 + HOUR + MIN, &[]),
];

#[tokio::test]
async fn staleness_across_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path()).await;
    let mut s = first_ten_minutes();
    s.push((STALE_AT, stale_nan()));
    write(&store, "s", "cluster=c1", &s).await;
    write(&store, "s2", "cluster=c1", &first_ten_minutes()).await;
    let mut n = first_ten_minutes();
    n.iter_mut().for_each(|p| p.1 = 1.0);
    n.push((STALE_AT, f64::NAN));
    write(&store, "nan_g", "cluster=c1", &n).await;
    let s3: Vec<(i64, f64)> = (0..20)
        .map(|i| (T0 + 55 * MIN + i * 15 * SEC, (i + 1) as f64))
        .collect();
    write(&store, "s3", "cluster=c1", &s3).await;
    write(&store, "s3", "cluster=c1", &[(T0 + HOUR, stale_nan())]).await;
    store.flush().await.unwrap();
    // the marker comes back from Parquet with its exact bit pattern
    let got = store
        .scan(&[Matcher::equal("__name__", "s")], STALE_AT, STALE_AT)
        .await
        .unwrap();
    assert!(is_stale_nan(got[0].values[0]), "{got:?}");
    write(&store, "s2", "cluster=c1", &[(STALE_AT, stale_nan())]).await;
    let resumed: Vec<(i64, f64)> = (0..=20)
        .map(|j| (T0 + 20 * MIN + j * 15 * SEC, (100 + j) as f64))
        .collect();
    write(&store, "s", "cluster=c1", &resumed).await;

    let engine = Engine::default();
    for phase in ["parquet + memtable", "after reopen", "all flushed"] {
        match phase {
            "after reopen" => {
                drop(store);
                store = open(dir.path()).await;
            }
            "all flushed" => {
                store.flush().await.unwrap();
            }
            _ => {}
        }
        for (q, t, want) in STALENESS_CASES {
            let got = instant(&engine, &store, q, *t).await;
            assert_vector(
                &got,
                want,
                &format!("{phase}: {q} @ T0+{}s", (t - T0) / SEC),
            );
        }
        // a range query across the gap: the series ends at the marker and comes back
        let m = range(&engine, &store, "s", T0 + 9 * MIN, T0 + 21 * MIN, MIN).await;
        let want = vec![
            (T0 + 9 * MIN, 36.0),
            (T0 + 10 * MIN, 40.0),
            (T0 + 20 * MIN, 100.0),
            (T0 + 21 * MIN, 104.0),
        ];
        assert_eq!(m.len(), 1, "{phase}: {m:?}");
        assert_eq!(m.values().next(), Some(&want), "{phase}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. limits

#[tokio::test]
async fn limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let pts: Vec<(i64, f64)> = (0..100).map(|i| (T0 + i * 15 * SEC, i as f64)).collect();
    write(&store, "x", "cluster=c1", &pts).await;
    store.flush().await.unwrap();

    // points per series: (end - start) / step = 11,000 is fine (11,001 points, as in
    // Prometheus), 11,001 is refused before anything is read
    let engine = Engine::default();
    let step = 15 * SEC;
    let ok = engine
        .range(store.as_ref(), "x", T0, T0 + 11_000 * step, step)
        .await
        .unwrap();
    assert!(matches!(ok, Value::Matrix(ref m) if m.len() == 1), "{ok:?}");
    let err = engine
        .range(store.as_ref(), "x", T0, T0 + 11_001 * step, step)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::TooManyPoints { limit: 11_000 }),
        "{err:?}"
    );
    assert_eq!(err.api_error_type(), ApiErrorType::BadData);
    assert!(err.to_string().contains("of 11,000 points"), "{err}");

    // samples: a tiny budget refuses the query as an `execution` error
    let tiny = Engine::new(EngineOptions {
        max_samples: 50,
        ..EngineOptions::default()
    });
    let cases: &[(&str, Option<Span>)] = &[
        // 100 samples selected > 50: refused when the series are read
        ("count_over_time(x[1h])", None),
        // 20 samples read, but the range query's vector holds one per step (200 > 50)
        ("x", Some((T0 + 20 * MIN, T0 + 20 * MIN + 199 * SEC, SEC))),
        // a subquery over a huge inner grid: refused before its steps are allocated
        ("max_over_time(vector(1)[1000d:1s])", None),
        ("sum_over_time((x > 0)[10m:1s])", None),
    ];
    for (q, span) in cases {
        let res = match span {
            None => tiny.instant(store.as_ref(), q, T0 + 25 * MIN).await,
            Some((s, e, st)) => tiny.range(store.as_ref(), q, *s, *e, *st).await,
        };
        match res {
            Err(e @ Error::TooManySamples { limit: 50, .. }) => {
                assert_eq!(e.api_error_type(), ApiErrorType::Execution, "{q}");
                assert!(!e.is_client_error(), "{q}");
            }
            other => panic!("{q}: expected TooManySamples, got {other:?}"),
        }
    }
    // within the budget the same engine answers
    let v = instant(&tiny, &store, "x", T0 + 20 * MIN).await;
    assert_vector(&v, &[("__name__=x,cluster=c1", 80.0)], "x within budget");
    let v = instant(&tiny, &store, "count_over_time(x[5m])", T0 + 20 * MIN).await;
    assert_vector(&v, &[("cluster=c1", 20.0)], "count_over_time within budget");
}

/// Range queries streamed in small chunks (reads of the next chunk running beside the evaluation
/// of the current one, on a multi-threaded runtime) answer exactly like one pass, over data in
/// several hour partitions, a compacted hour and the memtable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_range_queries_over_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let hour = HOUR;
    // 5 h of 15 s scrapes for 40 series; flushed every 50 min so hours hold several files
    for block in 0..6i64 {
        for s in 0..40i64 {
            let pts: Vec<(i64, f64)> = (0..200)
                .map(|i| {
                    let k = block * 200 + i;
                    (T0 + k * 15 * SEC, ((k * (s + 1)) % 5_000) as f64)
                })
                .collect();
            let pairs = format!("cluster=c{},pod=p{s}", s % 3);
            write(&store, "req_total", &pairs, &pts).await;
        }
        if block < 5 {
            store.flush().await.unwrap();
        }
    }
    let one_pass = Engine::new(EngineOptions {
        range_chunk_samples: 0,
        ..EngineOptions::default()
    });
    let chunked = Engine::new(EngineOptions {
        range_chunk_samples: 2_000,
        ..EngineOptions::default()
    });
    for q in [
        "sum by (cluster) (rate(req_total[5m]))",
        "max_over_time(req_total[10m])",
        "req_total offset 7m",
        "topk(3, req_total)",
        "avg_over_time(rate(req_total[2m])[15m:1m])",
    ] {
        for (start, end, step) in [
            (T0, T0 + 5 * hour, 30 * SEC),
            (T0 + 17 * MIN, T0 + 4 * hour + 3 * MIN, 61 * SEC),
            (T0, T0 + 5 * hour, hour),
        ] {
            let a = range(&one_pass, &store, q, start, end, step).await;
            let b = range(&chunked, &store, q, start, end, step).await;
            assert!(!a.is_empty(), "{q}");
            assert_eq!(a.len(), b.len(), "{q} [{start}, {end}] / {step}");
            for (k, pa) in &a {
                let pb = &b[k];
                assert_eq!(pa.len(), pb.len(), "{q} {k}");
                for (x, y) in pa.iter().zip(pb) {
                    assert!(x.0 == y.0 && close(x.1, y.1), "{q} {k}: {x:?} vs {y:?}");
                }
            }
        }
    }
}
