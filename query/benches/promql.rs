//! Read-path latency on a realistic fleet: ~21.6k series in 4 clusters × 20 namespaces
//! (`container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`,
//! `kube_pod_labels`, `http_request_duration_seconds_bucket` with 11 `le` buckets), 6 h of 15 s
//! samples (~31 M samples). The first 4.5 h are flushed to Parquet in three flushes (so hour
//! partitions 1 and 3 hold two files each); the last 1.5 h stay in the memtable.
//!
//! Measured:
//! - `select/*`: [`Store::select_series`] with `=` matchers and with a regex matcher
//!   (`namespace=~"pay.*|search"`), and [`Store::label_values`] — the inverted index alone;
//! - `engine/*`: the PromQL engine over the store (index + memtable + Parquet + evaluation) on
//!   dashboard queries: `sum by (cluster) (rate(container_cpu_usage_seconds_total[5m]))` as an
//!   instant query and as a 6 h range at 30 s step, a `histogram_quantile(0.99, …)` instant query
//!   and a `topk(10, …)` instant query.
//!
//! Run: `cargo bench -p fleetgate-query --bench promql`. The store lives in
//! `FLEETGATE_BENCH_DIR` (default: the system temp dir). Setup takes well under a minute.
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: panics are failures

use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use fleetgate_query::promql::{Engine, Value};
use fleetgate_store::{Labels, MatchOp, Matcher, SampleRef, SeriesId, Store, StoreOptions};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const STEP_MS: i64 = 15_000;
const HOURS: i64 = 6;
/// Scrapes per hour at 15 s.
const SCRAPES_PER_HOUR: i64 = 3_600_000 / STEP_MS;
/// Flush after these many scrapes: 1.5 h, 3 h, 4.5 h; the last 1.5 h stay in the memtable.
const FLUSH_EVERY: i64 = SCRAPES_PER_HOUR * 3 / 2;
const FLUSHES: i64 = 3;

const CLUSTERS: [&str; 4] = ["prod-eu-1", "prod-us-1", "prod-ap-1", "staging-eu-1"];
const NAMESPACES: [&str; 20] = [
    "payments",
    "payment-gateway",
    "search",
    "search-indexer",
    "checkout",
    "cart",
    "catalog",
    "identity",
    "notifications",
    "billing",
    "shipping",
    "inventory",
    "recommendations",
    "reviews",
    "ads",
    "analytics",
    "monitoring",
    "logging",
    "ingress-nginx",
    "kube-system",
];
const PODS_PER_NAMESPACE: usize = 40;
const SERVICES_PER_NAMESPACE: usize = 5;
const LE: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
];

/// Deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a series' value moves from one scrape to the next.
#[derive(Clone, Copy)]
enum Kind {
    /// Float counter: += U(0, rate).
    Counter(f64),
    /// Gauge around a level.
    Gauge(f64),
    /// Always 1.
    Constant,
    /// Histogram bucket: += the share `frac` of a per-(service, handler) request count.
    Bucket { group: usize, frac: f64 },
}

struct Fleet {
    ids: Vec<SeriesId>,
    kinds: Vec<Kind>,
    groups: usize,
}

fn create_series(store: &Store) -> Fleet {
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    let mut add = |labels: Labels, kind: Kind| {
        ids.push(store.series_id(&labels).unwrap().0);
        kinds.push(kind);
    };
    let mut groups = 0;
    for (ci, cluster) in CLUSTERS.iter().enumerate() {
        for (ni, ns) in NAMESPACES.iter().enumerate() {
            for p in 0..PODS_PER_NAMESPACE {
                let pod = format!("{ns}-{:x}-{p:03}", 0x5f3a_u32 + (ci * 31 + ni) as u32);
                let node = format!("ip-10-{ci}-{}-{}.ec2.internal", ni, p % 8);
                for container in [*ns, "istio-proxy"] {
                    let rate = if container == "istio-proxy" { 0.2 } else { 1.5 };
                    add(
                        Labels::from_pairs([
                            ("__name__", "container_cpu_usage_seconds_total"),
                            ("cluster", cluster),
                            ("namespace", ns),
                            ("pod", pod.as_str()),
                            ("container", container),
                            ("node", node.as_str()),
                        ]),
                        Kind::Counter(rate * 15.0 * (1.0 + (p % 5) as f64 / 5.0)),
                    );
                }
                add(
                    Labels::from_pairs([
                        ("__name__", "container_memory_working_set_bytes"),
                        ("cluster", cluster),
                        ("namespace", ns),
                        ("pod", pod.as_str()),
                        ("container", ns),
                        ("node", node.as_str()),
                    ]),
                    Kind::Gauge(2.0e8 * (1 + p % 7) as f64),
                );
                add(
                    Labels::from_pairs([
                        ("__name__", "kube_pod_labels"),
                        ("cluster", cluster),
                        ("namespace", ns),
                        ("pod", pod.as_str()),
                        ("label_app", ns),
                        ("label_team", if ni % 2 == 0 { "core" } else { "growth" }),
                    ]),
                    Kind::Constant,
                );
            }
            for s in 0..SERVICES_PER_NAMESPACE {
                let service = format!("{ns}-svc-{s}");
                for handler in ["/api/v1/read", "/api/v1/write"] {
                    let group = groups;
                    groups += 1;
                    for (k, le) in LE.iter().enumerate() {
                        add(
                            Labels::from_pairs([
                                ("__name__", "http_request_duration_seconds_bucket"),
                                ("cluster", cluster),
                                ("namespace", ns),
                                ("service", service.as_str()),
                                ("handler", handler),
                                ("le", le),
                            ]),
                            Kind::Bucket {
                                group,
                                frac: ((k + 1) as f64 / LE.len() as f64).sqrt(),
                            },
                        );
                    }
                }
            }
        }
    }
    Fleet { ids, kinds, groups }
}

fn build_store(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (Arc<Store>, usize) {
    let store = rt
        .block_on(Store::open(StoreOptions {
            data_dir: dir.to_path_buf(),
            memtable_flush_bytes: 1 << 30,
            memtable_max_bytes: 4 << 30,
            wal_max_bytes: 16 << 30,
            ..StoreOptions::default()
        }))
        .unwrap();
    let fleet = create_series(&store);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut state: Vec<f64> = fleet
        .kinds
        .iter()
        .map(|k| match k {
            Kind::Gauge(level) => *level,
            _ => 0.0,
        })
        .collect();
    let mut group_count = vec![0.0f64; fleet.groups];
    let mut batch = Vec::with_capacity(fleet.ids.len());
    rt.block_on(async {
        for scrape in 0..HOURS * SCRAPES_PER_HOUR {
            let t = T0 + scrape * STEP_MS;
            for c in group_count.iter_mut() {
                *c += (rng.next() % 200) as f64;
            }
            batch.clear();
            for (i, (&id, kind)) in fleet.ids.iter().zip(&fleet.kinds).enumerate() {
                let v = match *kind {
                    Kind::Counter(r) => {
                        state[i] += rng.f() * r;
                        state[i]
                    }
                    Kind::Gauge(level) => level * (0.9 + 0.2 * rng.f()),
                    Kind::Constant => 1.0,
                    Kind::Bucket { group, frac } => (group_count[group] * frac).floor(),
                };
                batch.push(SampleRef {
                    series: id,
                    timestamp_ms: t + (i as i64 % 7) - 3,
                    value: v,
                });
            }
            store.append(&batch).await.unwrap();
            if (scrape + 1) % FLUSH_EVERY == 0 && (scrape + 1) / FLUSH_EVERY <= FLUSHES {
                store.flush().await.unwrap();
            }
        }
    });
    (store, fleet.ids.len())
}

fn bench(c: &mut Criterion) {
    let base = std::env::var_os("FLEETGATE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t0 = Instant::now();
    let (store, n_series) = build_store(&rt, dir.path());
    let stats = store.stats();
    println!(
        "setup: {n_series} series, {} samples, {} files in {} partitions, {} samples in the \
         memtable, {:.1} s",
        stats.samples_appended_total,
        stats.files,
        stats.partitions,
        stats.memtable_samples,
        t0.elapsed().as_secs_f64()
    );

    let mut g = c.benchmark_group("select");
    g.sample_size(10);
    let eq = [
        Matcher::equal("__name__", "container_cpu_usage_seconds_total"),
        Matcher::equal("cluster", "prod-eu-1"),
        Matcher::equal("namespace", "payments"),
    ];
    assert_eq!(store.select_series(&eq).len(), PODS_PER_NAMESPACE * 2);
    g.bench_function("select_series_equal", |b| {
        b.iter(|| store.select_series(&eq))
    });
    let re = [
        Matcher::equal("__name__", "container_cpu_usage_seconds_total"),
        Matcher::new(MatchOp::RegexMatch, "namespace", "pay.*|search").unwrap(),
    ];
    assert_eq!(
        store.select_series(&re).len(),
        CLUSTERS.len() * 3 * PODS_PER_NAMESPACE * 2
    );
    g.bench_function("select_series_regex", |b| {
        b.iter(|| store.select_series(&re))
    });
    assert_eq!(store.label_values("namespace").len(), NAMESPACES.len());
    g.bench_function("label_values_namespace", |b| {
        b.iter(|| store.label_values("namespace"))
    });
    g.finish();

    let engine = Engine::default();
    let end = T0 + HOURS * 3_600_000 - STEP_MS;
    let instant = |q: &'static str, want: usize| {
        let v = rt.block_on(engine.instant(&*store, q, end)).unwrap();
        match v {
            Value::Vector(s) => assert_eq!(s.len(), want, "{q}"),
            other => panic!("{q}: {other:?}"),
        }
    };
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    let sum_rate = "sum by (cluster) (rate(container_cpu_usage_seconds_total[5m]))";
    instant(sum_rate, CLUSTERS.len());
    g.bench_function("sum_rate_instant", |b| {
        b.iter(|| instant(sum_rate, CLUSTERS.len()))
    });
    g.bench_function("sum_rate_range_6h_30s", |b| {
        b.iter(|| {
            let v = rt
                .block_on(engine.range(&*store, sum_rate, T0, end, 30_000))
                .unwrap();
            match v {
                Value::Matrix(m) => assert_eq!(m.len(), CLUSTERS.len()),
                other => panic!("{other:?}"),
            }
        })
    });
    let hq = "histogram_quantile(0.99, sum by (le) \
              (rate(http_request_duration_seconds_bucket[5m])))";
    instant(hq, 1);
    g.bench_function("histogram_quantile_instant", |b| b.iter(|| instant(hq, 1)));
    let topk = "topk(10, sum by (namespace, pod) \
                (rate(container_cpu_usage_seconds_total{cluster=\"prod-eu-1\"}[5m])))";
    instant(topk, 10);
    g.bench_function("topk_instant", |b| b.iter(|| instant(topk, 10)));
    g.finish();

    rt.block_on(store.close()).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
