//! Unit tests of the engine's tricky semantics: lookback, staleness, rate extrapolation, matching errors.

use fleetgate_store::Labels;

use super::super::source::MemorySource;
use super::super::value::{Value, stale_nan};
use super::*;

fn src() -> MemorySource {
    let mut m = MemorySource::new();
    // a counter every 15s from 0 to 10m: 0, 1, 2, ...
    let pts: Vec<(i64, f64)> = (0..=40).map(|i| (i * 15_000, i as f64)).collect();
    m.add(Labels::from_pairs([("__name__", "c"), ("job", "a")]), &pts);
    m.add(
        Labels::from_pairs([("__name__", "g"), ("job", "a")]),
        &[(0, 1.0), (60_000, 2.0), (120_000, stale_nan())],
    );
    m.add(
        Labels::from_pairs([("__name__", "x"), ("job", "a"), ("i", "1")]),
        &[(0, 1.0)],
    );
    m.add(
        Labels::from_pairs([("__name__", "x"), ("job", "a"), ("i", "2")]),
        &[(0, 2.0)],
    );
    m.add(
        Labels::from_pairs([("__name__", "y"), ("job", "a")]),
        &[(0, 10.0)],
    );
    m
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn run(q: &str, t: i64) -> Result<Value> {
    let rt = runtime();
    rt.block_on(Engine::default().instant(&src(), q, t))
}

fn scalar_of(v: Value) -> Vec<f64> {
    match v {
        Value::Vector(s) => s.into_iter().map(|s| s.value).collect(),
        Value::Scalar { value, .. } => vec![value],
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn lookback_is_five_minutes_left_open() {
    // last sample of x at 0: visible up to (but not at) 5m
    assert_eq!(scalar_of(run("x{i=\"1\"}", 299_999).unwrap()), vec![1.0]);
    assert!(scalar_of(run("x{i=\"1\"}", 300_000).unwrap()).is_empty());
}

#[test]
fn staleness_marker_ends_series() {
    assert_eq!(scalar_of(run("g", 119_999).unwrap()), vec![2.0]);
    assert!(scalar_of(run("g", 120_000).unwrap()).is_empty());
}

#[test]
fn rate_extrapolates_like_prometheus() {
    // 1 per 15s: rate is exactly 1/15 when samples cover the window
    let v = scalar_of(run("rate(c[1m])", 300_000).unwrap());
    assert!((v[0] - 1.0 / 15.0).abs() < 1e-9, "{v:?}");
    let v = scalar_of(run("increase(c[1m])", 300_000).unwrap());
    assert!((v[0] - 4.0).abs() < 1e-9, "{v:?}");
}

#[test]
fn matching_errors() {
    // two x series match the single y on job: needs group_left
    assert!(run("x / on(job) y", 0).is_err());
    assert_eq!(
        scalar_of(run("x / on(job) group_left y", 0).unwrap()).len(),
        2
    );
    assert!(run("y / on(job) x", 0).is_err());
}

#[test]
fn range_query_steps() {
    let rt = runtime();
    let v = rt
        .block_on(Engine::default().range(&src(), "c", 0, 60_000, 30_000))
        .unwrap();
    let Value::Matrix(m) = v else { panic!() };
    assert_eq!(m[0].points, vec![(0, 0.0), (30_000, 2.0), (60_000, 4.0)]);
    let err = rt.block_on(Engine::default().range(&src(), "c", 0, 20_000_000, 1));
    assert!(matches!(err, Err(Error::TooManyPoints { .. })));
}

fn labels_of(v: Value) -> Vec<String> {
    match v {
        Value::Vector(s) => s.into_iter().map(|s| format!("{}", s.labels)).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn set_operators_match_on_labels_without_name() {
    assert_eq!(labels_of(run("x and y", 0).unwrap()).len(), 0);
    assert_eq!(labels_of(run("x and on(job) y", 0).unwrap()).len(), 2);
    assert_eq!(labels_of(run("x unless on(job) y", 0).unwrap()).len(), 0);
    assert_eq!(labels_of(run("x or y", 0).unwrap()).len(), 3);
}

#[test]
fn duplicate_one_side_is_many_to_many_error() {
    let err = run("y / on(job) group_left x", 0).unwrap_err();
    assert!(err.to_string().contains("duplicate series"), "{err}");
    assert_eq!(err.api_error_type(), crate::error::ApiErrorType::Execution);
}

#[test]
fn comparison_filters_and_bool_drops_name() {
    let v = run("x > 1", 0).unwrap();
    assert_eq!(labels_of(v), vec![r#"x{i="2", job="a"}"#.to_string()]);
    let v = run("x > bool 1", 0).unwrap();
    let l = labels_of(v);
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|l| l.starts_with('{')));
}

#[test]
fn delayed_name_removal_keeps_name_for_by_name() {
    // rate drops the name at the end, but `sum by (__name__)` still groups by it
    let v = run("sum by (__name__) (rate(c[1m]))", 300_000).unwrap();
    assert_eq!(labels_of(v), vec!["{}".to_string()]);
    let v = run("sum by (__name__) (c)", 300_000).unwrap();
    assert_eq!(labels_of(v), vec!["c{}".to_string()]);
}

#[test]
fn offset_and_at_shift_the_reference_time() {
    assert_eq!(scalar_of(run("c offset 1m", 300_000).unwrap()), vec![16.0]);
    assert_eq!(scalar_of(run("c @ 60", 300_000).unwrap()), vec![4.0]);
    assert_eq!(scalar_of(run("c @ end()", 60_000).unwrap()), vec![4.0]);
}

#[test]
fn subquery_windows_are_aligned_and_left_open() {
    // inner points at 4m30s, 5m (step 30s, aligned); window (4m, 5m] holds 4m30s and 5m
    let v = scalar_of(run("count_over_time(c[1m:30s])", 300_000).unwrap());
    assert_eq!(v, vec![2.0]);
    let v = scalar_of(run("max_over_time(c[1m:30s])", 300_000).unwrap());
    assert_eq!(v, vec![20.0]);
}

#[test]
fn sample_budget_is_enforced() {
    let rt = runtime();
    let engine = Engine::new(EngineOptions {
        max_samples: 5,
        ..Default::default()
    });
    let err = rt.block_on(engine.range(&src(), "c", 0, 600_000, 15_000));
    assert!(matches!(err, Err(Error::TooManySamples { .. })), "{err:?}");
}

#[test]
fn store_is_a_series_source() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = fleetgate_store::Store::open(fleetgate_store::StoreOptions {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        })
        .await
        .unwrap();
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
        let (id, _) = store.series_id(&labels).unwrap();
        let samples: Vec<fleetgate_store::SampleRef> = (0..10)
            .map(|i| fleetgate_store::SampleRef {
                series: id,
                timestamp_ms: i * 60_000,
                value: i as f64,
            })
            .collect();
        store.append(&samples).await.unwrap();
        let v = Engine::default()
            .instant(store.as_ref(), "sum(rate(up[5m]))", 540_000)
            .await
            .unwrap();
        let Value::Vector(s) = v else { panic!() };
        assert!((s[0].value - 1.0 / 60.0).abs() < 1e-12, "{s:?}");
        store.close().await.unwrap();
    });
}

/// Compile-time check: query futures over the store are `Send` (HTTP handlers need that).
#[allow(dead_code)]
fn query_futures_are_send(engine: &Engine, store: &fleetgate_store::Store) {
    fn assert_send<T: Send>(_: T) {}
    assert_send(engine.instant(store, "up", 0));
    assert_send(engine.range(store, "up", 0, 1, 1));
}

#[test]
#[ignore = "timing probe; run with --ignored --nocapture"]
fn timing_probe() {
    let mut m = MemorySource::new();
    for s in 0..200 {
        let pts: Vec<(i64, f64)> = (0..8640).map(|i| (i * 10_000, (i * s) as f64)).collect();
        m.add(
            Labels::from_pairs([
                ("__name__", "req_total".to_string()),
                ("pod", s.to_string()),
                ("job", (s % 5).to_string()),
            ]),
            &pts,
        );
    }
    let rt = runtime();
    for q in [
        "sum by (job) (rate(req_total[5m]))",
        "req_total / on(pod) group_left req_total",
        "topk(5, req_total)",
        "max_over_time(rate(req_total[5m])[30m:1m])",
    ] {
        let t = Instant::now();
        let v = rt
            .block_on(Engine::default().range(&m, q, 0, 86_400_000, 15_000))
            .unwrap();
        let Value::Matrix(mx) = v else { panic!() };
        println!("{q}: {} series in {:?}", mx.len(), t.elapsed());
    }
}

/// A source counting its reads.
struct Counting {
    inner: MemorySource,
    calls: std::sync::atomic::AtomicUsize,
}

impl SeriesSource for Counting {
    async fn select(
        &self,
        matchers: &[fleetgate_store::Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<SeriesData>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.select(matchers, start_ms, end_ms).await
    }
}

/// A selector repeated with the same span is read once; a different span is read again.
#[test]
fn repeated_selector_is_read_once() {
    let rt = runtime();
    let count = |q: &str| {
        let src = Counting {
            inner: src(),
            calls: Default::default(),
        };
        let v = rt
            .block_on(Engine::default().range(&src, q, 300_000, 600_000, 30_000))
            .unwrap();
        (src.calls.into_inner(), v)
    };
    let (n, v) = count("sum(rate(c[5m])) / count(rate(c{job=\"a\"}[5m]))");
    assert_eq!(n, 2); // different matchers
    let (n, same) = count("sum(rate(c{job=\"a\"}[5m])) / count(rate(c{job=\"a\"}[5m]))");
    assert_eq!(n, 1);
    assert_eq!(v, same);
    let (n, _) = count("rate(c{job=\"a\"}[5m]) / rate({job=\"a\", __name__=\"c\"}[5m])");
    assert_eq!(n, 1); // matcher order does not matter
    let (n, _) = count("rate(c[5m]) / rate(c[5m] offset 1m)");
    assert_eq!(n, 2);
    let (n, _) = count("rate(c[5m]) / rate(c[1m])");
    assert_eq!(n, 2);
}

fn annos(q: &str, t: i64, range: bool) -> Annotations {
    let rt = runtime();
    let e = Engine::default();
    let r = if range {
        rt.block_on(e.range_annotated(&src(), q, 0, t, 60_000))
    } else {
        rt.block_on(e.instant_annotated(&src(), q, t))
    };
    r.unwrap().1
}

#[test]
fn annotations_are_collected_once_without_position() {
    let a = annos("rate(c[5m]) + rate(c[5m])", 300_000, false);
    assert_eq!(
        a.infos,
        vec![
            "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"c\""
                .to_string()
        ]
    );
    assert!(a.warnings.is_empty());
    let a = annos("quantile(1.5, x)", 0, false);
    assert_eq!(
        a.warnings,
        vec!["PromQL warning: quantile value should be between 0 and 1, got 1.5".to_string()]
    );
    let a = annos("limit_ratio(-1.1, x)", 0, false);
    assert_eq!(
        a.warnings,
        vec![
            "PromQL warning: ratio value should be between -1 and 1, got -1.1, capping to -1"
                .to_string()
        ]
    );
    assert!(annos("sort(x)", 0, false).is_empty());
    assert_eq!(annos("sort(x)", 120_000, true).warnings.len(), 1);
    assert!(annos("delta(c[5m])", 300_000, false).is_empty());
}

/// A fleet of counters and histograms over 6 h, for comparing chunked and one-pass range queries.
fn long_src() -> MemorySource {
    let mut m = MemorySource::new();
    for c in 0..3 {
        for p in 0..4 {
            let cluster = format!("c{c}");
            let pod = format!("p{p}");
            // a counter that resets every 2 h and has a gap in its 3rd hour
            let pts: Vec<(i64, f64)> = (0..1440)
                .filter(|i| !(720..760).contains(i))
                .map(|i| (i * 15_000, ((i % 480) * (p + 1)) as f64))
                .collect();
            m.add(
                Labels::from_pairs([
                    ("__name__", "req_total"),
                    ("cluster", cluster.as_str()),
                    ("pod", pod.as_str()),
                ]),
                &pts,
            );
            for (le, f) in [("0.1", 1), ("1", 3), ("+Inf", 4)] {
                let pts: Vec<(i64, f64)> = (0..1440)
                    .map(|i| (i * 15_000, (i * f * (c + 1)) as f64))
                    .collect();
                m.add(
                    Labels::from_pairs([
                        ("__name__", "lat_bucket"),
                        ("cluster", cluster.as_str()),
                        ("pod", pod.as_str()),
                        ("le", le),
                    ]),
                    &pts,
                );
            }
        }
    }
    m
}

#[test]
fn chunked_range_queries_match_one_pass() {
    let rt = runtime();
    let src = long_src();
    let one_pass = Engine::new(EngineOptions {
        range_chunk_samples: 0,
        ..EngineOptions::default()
    });
    // the smallest chunks: an hour each (a step each at a 1 h step)
    let chunked = Engine::new(EngineOptions {
        range_chunk_samples: 50,
        ..EngineOptions::default()
    });
    let queries = [
        "sum by (cluster) (rate(req_total[5m]))",
        "histogram_quantile(0.9, sum by (le, cluster) (rate(lat_bucket[10m])))",
        "topk(2, req_total)",
        "max_over_time(rate(req_total[2m])[30m:1m])",
        "req_total @ start()",
        "rate(req_total[5m] @ end())",
        "timestamp(req_total offset 10m)",
        "absent(nope)",
        "time() - 1",
        "count_values(\"v\", req_total % 3)",
        "label_replace(req_total, \"x\", \"$1\", \"pod\", \"p(.*)\")",
    ];
    for (start, end, step) in [
        (0, 21_600_000, 60_000),
        (1_234_567, 20_000_000, 137_000),
        (0, 21_600_000, 3_600_000),
    ] {
        for q in queries {
            let a = rt
                .block_on(one_pass.range(&src, q, start, end, step))
                .unwrap();
            let b = rt
                .block_on(chunked.range(&src, q, start, end, step))
                .unwrap();
            let (Value::Matrix(a), Value::Matrix(b)) = (a, b) else {
                panic!("{q}: not matrices");
            };
            assert!(!a.is_empty(), "{q}: empty result");
            assert_eq!(a.len(), b.len(), "{q} [{start},{end},{step}]: series count");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.labels, y.labels, "{q}");
                assert_eq!(x.points.len(), y.points.len(), "{q} {:?}", x.labels);
                for (p, r) in x.points.iter().zip(&y.points) {
                    assert_eq!(p.0, r.0, "{q} {:?}", x.labels);
                    assert!(
                        p.1 == r.1 || (p.1.is_nan() && r.1.is_nan()),
                        "{q} {:?} at {}: {} vs {}",
                        x.labels,
                        p.0,
                        p.1,
                        r.1
                    );
                }
            }
        }
    }
}

#[test]
fn sample_limit_applies_per_chunk() {
    let rt = runtime();
    let src = long_src();
    // 60 series × 1440 samples = 86,400 samples in 6 h; each chunk reads far fewer
    let opts = EngineOptions {
        max_samples: 20_000,
        range_chunk_samples: 5_000,
        ..EngineOptions::default()
    };
    let eng = Engine::new(opts.clone());
    let v = rt
        .block_on(eng.range(&src, "sum(rate(lat_bucket[5m]))", 0, 21_600_000, 60_000))
        .unwrap();
    assert!(matches!(v, Value::Matrix(m) if m.len() == 1 && m[0].points.len() > 300));
    // one pass over the whole span is refused by the same limit
    let whole = Engine::new(EngineOptions {
        range_chunk_samples: 0,
        ..opts
    });
    let err = rt
        .block_on(whole.range(&src, "sum(rate(lat_bucket[5m]))", 0, 21_600_000, 60_000))
        .unwrap_err();
    assert!(matches!(err, Error::TooManySamples { .. }), "{err}");
}
