//! Cost allocation on a hand-checked fixture: three clusters with known requests, usage and
//! prices, a pod that runs half an hour, a pod without requests, a node without a price (config
//! prices), a node priced by its own OpenCost series, a spot node, a GPU node priced by a node
//! override, a volume shared by two pods, a load balancer, and a pod without a `team` label.
//! Every expected figure is worked out by hand in the comments; the code under test only
//! computes the left-hand sides.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetgate_query::cost::aggregate::{AggregateBy, AllocationQuery, Share, aggregate};
use fleetgate_query::cost::allocation::{Allocation, CostSet};
use fleetgate_query::cost::filter::Filter;
use fleetgate_query::cost::pricing::{NodeOverride, PriceSheet, Pricing};
use fleetgate_query::cost::window::{Period, Window, parse_window};
use fleetgate_query::cost::{CostEngine, CostOptions};
use fleetgate_query::promql::{EngineOptions, MemorySource, stale_nan};
use fleetgate_store::Labels;

/// 2026-11-01T00:00:00Z: a month and an hour boundary.
const T0: i64 = 1_793_491_200_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Scrape interval of the fixture.
const SCRAPE: i64 = 5 * MIN;
/// Hours of data in the fixture (the month window sees these and nothing else).
const DATA_HOURS: i64 = 48;

fn labels(metric: &str, pairs: &[(&str, &str)]) -> Labels {
    let mut v: Vec<(String, String)> = vec![("__name__".into(), metric.into())];
    v.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Labels::from_pairs(v)
}

/// A series and its samples.
type Written = (Labels, Vec<(i64, f64)>);

struct Fixture {
    series: Vec<Written>,
}

impl Fixture {
    /// A gauge scraped every 5 minutes over `[from, to)`, and a staleness marker at `to` when
    /// the series ends before the data does.
    fn gauge(&mut self, metric: &str, l: &[(&str, &str)], v: f64, from: i64, to: i64) {
        let mut pts: Vec<(i64, f64)> = (from..to)
            .step_by(SCRAPE as usize)
            .map(|t| (t, v))
            .collect();
        if to < T0 + DATA_HOURS * HOUR {
            pts.push((to, stale_nan()));
        }
        self.series.push((labels(metric, l), pts));
    }

    /// A counter growing `rate` per second over `[from, to)`.
    fn counter(&mut self, metric: &str, l: &[(&str, &str)], rate: f64, from: i64, to: i64) {
        let mut pts: Vec<(i64, f64)> = (from..to)
            .step_by(SCRAPE as usize)
            .map(|t| (t, 1000.0 + rate * (t - from) as f64 / 1000.0))
            .collect();
        if to < T0 + DATA_HOURS * HOUR {
            pts.push((to, stale_nan()));
        }
        self.series.push((labels(metric, l), pts));
    }

    fn node(
        &mut self,
        cluster: &str,
        node: &str,
        cores: f64,
        gib: f64,
        gpus: f64,
        extra: &[(&str, &str)],
    ) {
        let (a, b) = (T0 - HOUR, T0 + DATA_HOURS * HOUR);
        let base = [("cluster", cluster), ("node", node)];
        for (res, unit, v) in [
            ("cpu", "core", cores),
            ("memory", "byte", gib * GIB),
            ("nvidia_com_gpu", "integer", gpus),
        ] {
            if v > 0.0 {
                let mut l = base.to_vec();
                l.extend([("resource", res), ("unit", unit)]);
                self.gauge("kube_node_status_capacity", &l, v, a, b);
            }
        }
        let mut l = base.to_vec();
        l.extend_from_slice(extra);
        self.gauge("kube_node_labels", &l, 1.0, a, b);
    }

    #[allow(clippy::too_many_arguments)]
    fn container(
        &mut self,
        (cluster, ns, pod, container, node): (&str, &str, &str, &str, &str),
        (cpu_req, mem_req_gib, gpu_req): (f64, f64, f64),
        (cpu_use, mem_use_gib): (f64, f64),
        pod_labels: &[(&str, &str)],
        ip: &str,
        (from, to): (i64, i64),
    ) {
        let c = [
            ("cluster", cluster),
            ("namespace", ns),
            ("pod", pod),
            ("container", container),
        ];
        self.gauge("kube_pod_container_status_running", &c, 1.0, from, to);
        for (res, unit, v) in [
            ("cpu", "core", cpu_req),
            ("memory", "byte", mem_req_gib * GIB),
            ("nvidia_com_gpu", "integer", gpu_req),
        ] {
            if v > 0.0 {
                let mut l = c.to_vec();
                l.extend([("node", node), ("resource", res), ("unit", unit)]);
                self.gauge("kube_pod_container_resource_requests", &l, v, from, to);
            }
        }
        let mut cad = c.to_vec();
        cad.push(("id", "/kubepods/x"));
        self.counter("container_cpu_usage_seconds_total", &cad, cpu_use, from, to);
        self.gauge(
            "container_memory_working_set_bytes",
            &cad,
            mem_use_gib * GIB,
            from,
            to,
        );
        let p = [("cluster", cluster), ("namespace", ns), ("pod", pod)];
        let mut info = p.to_vec();
        info.extend([("node", node), ("pod_ip", ip)]);
        self.gauge("kube_pod_info", &info, 1.0, from, to);
        let mut pl = p.to_vec();
        pl.extend_from_slice(pod_labels);
        self.gauge("kube_pod_labels", &pl, 1.0, from, to);
    }

    fn owner(
        &mut self,
        cluster: &str,
        ns: &str,
        pod: &str,
        kind: &str,
        name: &str,
        (from, to): (i64, i64),
    ) {
        self.gauge(
            "kube_pod_owner",
            &[
                ("cluster", cluster),
                ("namespace", ns),
                ("pod", pod),
                ("owner_kind", kind),
                ("owner_name", name),
                ("owner_is_controller", "true"),
            ],
            1.0,
            from,
            to,
        );
    }
}

/// The fixture. Prices (fleet sheet): CPU $0.04 per core-hour, RAM $0.005 per GiB-hour, GPU $2,
/// spot CPU $0.01, spot RAM $0.002, storage $0.001 per GiB-hour, load balancer $0.03 per hour.
fn fixture() -> (MemorySource, Pricing) {
    let (series, pricing) = fixture_series();
    let mut src = MemorySource::new();
    for (l, pts) in series {
        src.add(l, &pts);
    }
    (src, pricing)
}

/// The fixture's series and samples, and its prices.
fn fixture_series() -> (Vec<Written>, Pricing) {
    let mut f = Fixture { series: Vec::new() };
    let all = (T0 - HOUR, T0 + DATA_HOURS * HOUR);
    // cluster a: a-n1 (4 cores, 16 GiB) priced by its own series at $0.05/core-h, $0.01/GiB-h;
    // a-n2 (2 cores, 8 GiB) has no price series: config prices.
    f.node(
        "a",
        "a-n1",
        4.0,
        16.0,
        0.0,
        &[("label_node_kubernetes_io_instance_type", "m5.xlarge")],
    );
    f.gauge(
        "node_cpu_hourly_cost",
        &[("cluster", "a"), ("node", "a-n1")],
        0.05,
        all.0,
        all.1,
    );
    f.gauge(
        "node_ram_hourly_cost",
        &[("cluster", "a"), ("node", "a-n1")],
        0.01,
        all.0,
        all.1,
    );
    f.node("a", "a-n2", 2.0, 8.0, 0.0, &[]);
    f.container(
        ("a", "web", "web-1", "app", "a-n1"),
        (1.0, 2.0, 0.0),
        (0.5, 1.0),
        &[("label_team", "alpha")],
        "10.0.0.1",
        all,
    );
    f.owner("a", "web", "web-1", "ReplicaSet", "web-abc", all);
    f.container(
        ("a", "web", "web-2", "app", "a-n1"),
        (0.5, 1.0, 0.0),
        (1.5, 3.0),
        &[("label_team", "alpha")],
        "10.0.0.2",
        all,
    );
    f.owner("a", "web", "web-2", "ReplicaSet", "web-abc", all);
    f.gauge(
        "kube_replicaset_owner",
        &[
            ("cluster", "a"),
            ("namespace", "web"),
            ("replicaset", "web-abc"),
            ("owner_kind", "Deployment"),
            ("owner_name", "web"),
        ],
        1.0,
        all.0,
        all.1,
    );
    // the half-hour pod: scraped running at :15, :20, …, :40 of the first hour, stale at :45
    let half = (T0 + 15 * MIN, T0 + 45 * MIN);
    f.container(
        ("a", "batch", "job-1", "worker", "a-n2"),
        (2.0, 4.0, 0.0),
        (1.0, 2.0),
        &[("label_team", "beta")],
        "10.0.0.3",
        half,
    );
    f.owner("a", "batch", "job-1", "Job", "job-1", half);
    f.gauge(
        "kube_job_owner",
        &[
            ("cluster", "a"),
            ("namespace", "batch"),
            ("job_name", "job-1"),
            ("owner_kind", "CronJob"),
            ("owner_name", "nightly"),
        ],
        1.0,
        half.0,
        half.1,
    );
    // two pods sharing claim db/data → pv-data, 100 GiB, no pv_hourly_cost: storage price
    f.container(
        ("a", "db", "db-0", "pg", "a-n2"),
        (0.25, 1.0, 0.0),
        (0.1, 0.5),
        &[("label_team", "gamma")],
        "10.0.0.4",
        all,
    );
    f.container(
        ("a", "db", "db-1", "pg", "a-n2"),
        (0.25, 1.0, 0.0),
        (0.1, 0.5),
        &[],
        "10.0.0.5",
        all,
    );
    f.owner("a", "db", "db-0", "StatefulSet", "db", all);
    f.owner("a", "db", "db-1", "StatefulSet", "db", all);
    f.gauge(
        "kube_persistentvolumeclaim_info",
        &[
            ("cluster", "a"),
            ("namespace", "db"),
            ("persistentvolumeclaim", "data"),
            ("volumename", "pv-data"),
            ("storageclass", "gp3"),
        ],
        1.0,
        all.0,
        all.1,
    );
    f.gauge(
        "kube_persistentvolume_capacity_bytes",
        &[("cluster", "a"), ("persistentvolume", "pv-data")],
        100.0 * GIB,
        all.0,
        all.1,
    );
    for pod in ["db-0", "db-1"] {
        f.gauge(
            "kube_pod_spec_volumes_persistentvolumeclaims_info",
            &[
                ("cluster", "a"),
                ("namespace", "db"),
                ("pod", pod),
                ("volume", "data"),
                ("persistentvolumeclaim", "data"),
            ],
            1.0,
            all.0,
            all.1,
        );
    }
    // cluster b: one spot node (8 cores, 32 GiB) and a pod without requests
    f.node(
        "b",
        "b-n1",
        8.0,
        32.0,
        0.0,
        &[("label_karpenter_sh_capacity_type", "spot")],
    );
    f.container(
        ("b", "api", "api-1", "server", "b-n1"),
        (0.0, 0.0, 0.0),
        (0.25, 0.5),
        &[("label_team", "alpha")],
        "10.1.0.1",
        all,
    );
    // cluster c: a GPU node priced by a node override (g4dn.xlarge: $0.03, $0.004, GPU $0.5),
    // a training pod with a GPU behind a load balancer
    f.node(
        "c",
        "c-n1",
        4.0,
        16.0,
        1.0,
        &[("label_node_kubernetes_io_instance_type", "g4dn.xlarge")],
    );
    f.container(
        ("c", "ml", "train-1", "trainer", "c-n1"),
        (2.0, 8.0, 1.0),
        (1.0, 4.0),
        &[("label_team", "beta")],
        "10.2.0.9",
        all,
    );
    f.owner("c", "ml", "train-1", "Job", "train", all);
    f.gauge(
        "kube_service_status_load_balancer_ingress",
        &[
            ("cluster", "c"),
            ("namespace", "ml"),
            ("service", "trainer-lb"),
            ("ip", "203.0.113.7"),
        ],
        1.0,
        all.0,
        all.1,
    );
    f.gauge(
        "kube_endpoint_address",
        &[
            ("cluster", "c"),
            ("namespace", "ml"),
            ("endpoint", "trainer-lb"),
            ("ip", "10.2.0.9"),
            ("ready", "true"),
        ],
        1.0,
        all.0,
        all.1,
    );

    let sheet = PriceSheet {
        cpu: Some(0.04),
        ram: Some(0.005),
        gpu: Some(2.0),
        spot_cpu: Some(0.01),
        spot_ram: Some(0.002),
        storage: Some(0.001),
        load_balancer: Some(0.03),
        ..PriceSheet::default()
    };
    let gpu_node = NodeOverride {
        match_labels: [(
            "node.kubernetes.io/instance-type".to_string(),
            "g4dn.xlarge".to_string(),
        )]
        .into(),
        prices: PriceSheet {
            cpu: Some(0.03),
            ram: Some(0.004),
            gpu: Some(0.5),
            ..PriceSheet::default()
        },
    };
    (
        f.series,
        Pricing::new(&sheet, &[gpu_node], std::iter::empty()),
    )
}

fn engine(pricing: Pricing) -> CostEngine {
    CostEngine::new(Arc::new(pricing), CostOptions::default())
}

/// Sets of `window` cut by `period`, computed from the fixture (now = 2026-12-01).
async fn sets(window: Window, period: Period) -> Vec<CostSet> {
    let (src, pricing) = fixture();
    engine(pricing)
        .steps(
            &src,
            &EngineOptions::default(),
            window,
            period,
            T0 + 30 * 24 * HOUR,
        )
        .await
        .unwrap()
}

fn first_hour() -> Window {
    Window::new(T0, T0 + HOUR).unwrap()
}

fn totals(allocs: &[Allocation]) -> BTreeMap<String, f64> {
    allocs
        .iter()
        .map(|a| (a.name.clone(), a.total_cost()))
        .collect()
}

#[track_caller]
fn assert_totals(got: &[Allocation], want: &[(&str, f64)]) {
    let got = totals(got);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    let want_names: Vec<&str> = want.iter().map(|(n, _)| *n).collect();
    let mut sorted = want_names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "allocation names");
    for (n, v) in want {
        let g = got[*n];
        assert!((g - v).abs() < 1e-9, "{n}: got {g}, want {v}");
    }
}

fn query(aggregate: &str) -> AllocationQuery {
    AllocationQuery {
        aggregate: AggregateBy::parse_list(aggregate).unwrap(),
        share_split: Share::Weighted,
        share_tenancy: true,
        ..AllocationQuery::default()
    }
}

/// Per container, first hour:
/// - web-1 on a-n1 ($0.05, $0.01): CPU max(1, 0.5) = 1 core × 1 h × 0.05 = 0.05; RAM max(2, 1)
///   = 2 GiB × 0.01 = 0.02 → 0.07.
/// - web-2 on a-n1: CPU max(0.5, 1.5) = 1.5 × 0.05 = 0.075; RAM max(1, 3) = 3 × 0.01 = 0.03 → 0.105.
/// - job-1 on a-n2 ($0.04, $0.005), 30 minutes: CPU 2 × 0.5 h × 0.04 = 0.04; RAM 4 × 0.5 ×
///   0.005 = 0.01 → 0.05.
/// - db-0, db-1 on a-n2: CPU 0.25 × 0.04 = 0.01; RAM 1 × 0.005 = 0.005; the volume 100 GiB ×
///   0.001 = 0.1 per hour, half each = 0.05 → 0.065 each.
/// - api-1 on b-n1 (spot: $0.01, $0.002), no requests: CPU max(0, 0.25) × 0.01 = 0.0025; RAM
///   0.5 × 0.002 = 0.001 → 0.0035.
/// - train-1 on c-n1 ($0.03, $0.004, GPU $0.5): CPU 2 × 0.03 = 0.06; RAM 8 × 0.004 = 0.032;
///   GPU 1 × 0.5 = 0.5; load balancer 0.03 → 0.622.
#[tokio::test]
async fn containers_in_the_first_hour() {
    let s = sets(first_hour(), Period::All).await;
    assert_eq!(s.len(), 1);
    let got = aggregate(&s[0], &query(""));
    assert_totals(
        &got,
        &[
            ("a/a-n1/web/web-1/app", 0.07),
            ("a/a-n1/web/web-2/app", 0.105),
            ("a/a-n2/batch/job-1/worker", 0.05),
            ("a/a-n2/db/db-0/pg", 0.065),
            ("a/a-n2/db/db-1/pg", 0.065),
            ("b/b-n1/api/api-1/server", 0.0035),
            ("c/c-n1/ml/train-1/trainer", 0.622),
        ],
    );
    let by = |n: &str| got.iter().find(|a| a.name.contains(n)).unwrap();
    let job = by("job-1");
    assert_eq!(job.minutes, 30.0);
    assert_eq!(job.start_ms, T0 + 15 * MIN);
    assert_eq!(job.end_ms, T0 + 45 * MIN);
    assert!((job.cpu_core_hours - 1.0).abs() < 1e-9, "2 cores × 0.5 h");
    assert_eq!(job.properties.controller_kind, "cronjob");
    assert_eq!(job.properties.controller, "nightly");
    let web = by("web-1");
    // efficiency: CPU 0.5 / 1, RAM 1 GiB / 2 GiB, total (0.5 × 0.05 + 0.5 × 0.02) / 0.07 = 0.5
    assert!((web.cpu_efficiency() - 0.5).abs() < 1e-9);
    assert!((web.ram_efficiency() - 0.5).abs() < 1e-9);
    assert!((web.total_efficiency() - 0.5).abs() < 1e-9);
    assert_eq!(web.properties.controller_kind, "deployment");
    assert_eq!(web.properties.controller, "web");
    assert!((web.cpu_usage_average() - 0.5).abs() < 1e-9);
    assert!((web.ram_request_average() - 2.0 * GIB).abs() < 1e-3);
    // no requests but usage: efficiency 1
    assert_eq!(by("api-1").cpu_efficiency(), 1.0);
    let train = by("train-1");
    assert_eq!(train.gpu_hours, 1.0);
    assert!((train.lb_cost - 0.03).abs() < 1e-12);
    assert_eq!(train.properties.services, vec!["trainer-lb".to_string()]);
    let db = by("db-0");
    assert!((db.pv_cost - 0.05).abs() < 1e-12);
    assert!((db.pv_byte_hours - 50.0 * GIB).abs() < 1e-3);
    assert_eq!(db.pvs.len(), 1);
}

/// Nodes, first hour: a-n1 4 × 0.05 + 16 × 0.01 = 0.36; a-n2 2 × 0.04 + 8 × 0.005 = 0.12;
/// b-n1 (spot) 8 × 0.01 + 32 × 0.002 = 0.144; c-n1 4 × 0.03 + 16 × 0.004 + 1 × 0.5 = 0.684.
#[tokio::test]
async fn assets_in_the_first_hour() {
    let s = sets(first_hour(), Period::All).await;
    let nodes: BTreeMap<&str, (f64, &str, bool)> = s[0]
        .nodes
        .iter()
        .map(|n| {
            (
                n.node.as_str(),
                (n.total_cost(), n.price_source, n.preemptible),
            )
        })
        .collect();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(nodes["a-n1"].0, 0.36) && nodes["a-n1"].1 == "series");
    assert!(close(nodes["a-n2"].0, 0.12) && nodes["a-n2"].1 == "config");
    assert!(close(nodes["b-n1"].0, 0.144) && nodes["b-n1"].2);
    assert!(close(nodes["c-n1"].0, 0.684));
    assert_eq!(s[0].disks.len(), 1);
    assert!(close(s[0].disks[0].cost, 0.1));
    assert_eq!(s[0].disks[0].claim, "data");
    assert_eq!(s[0].load_balancers.len(), 1);
    assert!(close(s[0].load_balancers[0].cost, 0.03));
}

/// Every aggregation of the first hour.
#[tokio::test]
async fn aggregations_in_the_first_hour() {
    let s = sets(first_hour(), Period::All).await;
    let agg = |a: &str| aggregate(&s[0], &query(a));
    // a = 0.07 + 0.105 + 0.05 + 0.065 + 0.065 = 0.355
    assert_totals(
        &agg("cluster"),
        &[("a", 0.355), ("b", 0.0035), ("c", 0.622)],
    );
    // web 0.07 + 0.105; db 0.065 × 2
    assert_totals(
        &agg("namespace"),
        &[
            ("web", 0.175),
            ("batch", 0.05),
            ("db", 0.13),
            ("api", 0.0035),
            ("ml", 0.622),
        ],
    );
    // a-n2 = 0.05 + 0.065 + 0.065
    assert_totals(
        &agg("node"),
        &[
            ("a-n1", 0.175),
            ("a-n2", 0.18),
            ("b-n1", 0.0035),
            ("c-n1", 0.622),
        ],
    );
    // alpha = web-1 + web-2 + api-1 = 0.07 + 0.105 + 0.0035; beta = job-1 + train-1; db-1 has
    // no team label
    let team = [
        ("alpha", 0.1785),
        ("beta", 0.672),
        ("gamma", 0.065),
        ("__unallocated__", 0.065),
    ];
    assert_totals(&agg("label:team"), &team);
    assert_totals(&agg("team"), &team);
    assert_totals(
        &agg("controller"),
        &[
            ("deployment:web", 0.175),
            ("cronjob:nightly", 0.05),
            ("statefulset:db", 0.13),
            ("job:train", 0.622),
            ("__unallocated__", 0.0035),
        ],
    );
    assert_totals(
        &agg("controllerKind"),
        &[
            ("deployment", 0.175),
            ("cronjob", 0.05),
            ("statefulset", 0.13),
            ("job", 0.622),
            ("__unallocated__", 0.0035),
        ],
    );
    assert_totals(
        &agg("deployment"),
        &[
            ("web", 0.175),
            ("__unallocated__", 0.05 + 0.13 + 0.0035 + 0.622),
        ],
    );
    assert_totals(
        &agg("pod"),
        &[
            ("web-1", 0.07),
            ("web-2", 0.105),
            ("job-1", 0.05),
            ("db-0", 0.065),
            ("db-1", 0.065),
            ("api-1", 0.0035),
            ("train-1", 0.622),
        ],
    );
    assert_totals(
        &agg("container"),
        &[
            ("app", 0.175),
            ("worker", 0.05),
            ("pg", 0.13),
            ("server", 0.0035),
            ("trainer", 0.622),
        ],
    );
    assert_totals(
        &agg("service"),
        &[("trainer-lb", 0.622), ("__unallocated__", 0.355 + 0.0035)],
    );
    assert_totals(
        &agg("cluster,label:team"),
        &[
            ("a/alpha", 0.175),
            ("a/beta", 0.05),
            ("a/gamma", 0.065),
            ("a/__unallocated__", 0.065),
            ("b/alpha", 0.0035),
            ("c/beta", 0.622),
        ],
    );
    // an aggregate's averages are over its span: web = web-1 + web-2 over the same hour
    let web = agg("namespace")
        .into_iter()
        .find(|a| a.name == "web")
        .unwrap();
    assert!(
        (web.cpu_request_average() - 1.5).abs() < 1e-9,
        "1 + 0.5 cores requested"
    );
    assert_eq!(web.properties.namespace, "web");
    assert_eq!(web.properties.pod, "", "pods differ: not kept");
}

/// Idle = node cost − allocated CPU/RAM/GPU cost, per cluster:
/// a: CPU (0.2 + 0.08) − (0.05 + 0.075 + 0.04 + 0.01 + 0.01) = 0.28 − 0.185 = 0.095;
///    RAM (0.16 + 0.04) − (0.02 + 0.03 + 0.01 + 0.005 + 0.005) = 0.2 − 0.07 = 0.13 → 0.225.
/// b: CPU 0.08 − 0.0025 = 0.0775; RAM 0.064 − 0.001 = 0.063 → 0.1405.
/// c: CPU 0.12 − 0.06 = 0.06; RAM 0.064 − 0.032 = 0.032; GPU 0.5 − 0.5 = 0 → 0.092.
#[tokio::test]
async fn idle_and_its_sharing() {
    let s = sets(first_hour(), Period::All).await;
    let mut q = query("cluster");
    q.include_idle = true;
    let idle = 0.225 + 0.1405 + 0.092;
    assert_totals(
        &aggregate(&s[0], &q),
        &[
            ("a", 0.355),
            ("b", 0.0035),
            ("c", 0.622),
            ("__idle__", idle),
        ],
    );
    q.split_idle = true;
    assert_totals(
        &aggregate(&s[0], &q),
        &[
            ("a", 0.355),
            ("b", 0.0035),
            ("c", 0.622),
            ("a/__idle__", 0.225),
            ("b/__idle__", 0.1405),
            ("c/__idle__", 0.092),
        ],
    );
    // shared by weight: each cluster carries its own idle; the assets are conserved
    // (a: 0.355 + 0.225 = 0.58 = 0.36 + 0.12 + the volume 0.1)
    q.split_idle = false;
    q.share_idle = Share::Weighted;
    let got = aggregate(&s[0], &q);
    assert_totals(&got, &[("a", 0.58), ("b", 0.144), ("c", 0.714)]);
    // weighted by CPU cost inside a: web-2 carries 0.095 × 0.075 / 0.185 of CPU idle
    let rows = aggregate(
        &s[0],
        &AllocationQuery {
            share_idle: Share::Weighted,
            ..query("")
        },
    );
    let web2 = rows.iter().find(|a| a.name.contains("web-2")).unwrap();
    assert!((web2.cpu_cost_idle - 0.095 * 0.075 / 0.185).abs() < 1e-12);
    assert!((web2.ram_cost_idle - 0.13 * 0.03 / 0.07).abs() < 1e-12);
    // by node: a-n1 idle CPU 0.2 − 0.125 = 0.075, RAM 0.16 − 0.05 = 0.11 → a-n1 = 0.175 + 0.185
    // = 0.36 (the node's cost); a-n2 = 0.18 + (0.08 − 0.06) + (0.04 − 0.02) = 0.22
    let mut q = query("node");
    q.share_idle = Share::Weighted;
    q.idle_by_node = true;
    assert_totals(
        &aggregate(&s[0], &q),
        &[
            ("a-n1", 0.36),
            ("a-n2", 0.22),
            ("b-n1", 0.144),
            ("c-n1", 0.714),
        ],
    );
    // even: within cluster a, each namespace (web, batch, db) gets 0.225 / 3 = 0.075
    let mut q = query("namespace");
    q.share_idle = Share::Even;
    assert_totals(
        &aggregate(&s[0], &q),
        &[
            ("web", 0.25),
            ("batch", 0.125),
            ("db", 0.205),
            ("api", 0.144),
            ("ml", 0.714),
        ],
    );
    // a filter keeps the idle of what passed: web is 0.125 of a's 0.185 CPU cost and 0.05 of
    // its 0.07 RAM cost → idle 0.095 × 0.125/0.185 + 0.13 × 0.05/0.07
    let mut q = query("namespace");
    q.include_idle = true;
    q.filter = Some(Filter::parse(r#"namespace:"web""#).unwrap());
    let want_idle = 0.095 * 0.125 / 0.185 + 0.13 * 0.05 / 0.07;
    assert_totals(
        &aggregate(&s[0], &q),
        &[("web", 0.175), ("__idle__", want_idle)],
    );
}

/// Shared namespaces, labels and overhead; totals are conserved.
#[tokio::test]
async fn shared_costs() {
    let s = sets(first_hour(), Period::All).await;
    // db (0.13) spread evenly over the 4 other namespaces: 0.0325 each
    let mut q = query("namespace");
    q.share_namespaces = vec!["db".into()];
    q.share_split = Share::Even;
    let got = aggregate(&s[0], &q);
    assert_totals(
        &got,
        &[
            ("web", 0.2075),
            ("batch", 0.0825),
            ("api", 0.036),
            ("ml", 0.6545),
        ],
    );
    let sum: f64 = got.iter().map(Allocation::total_cost).sum();
    assert!((sum - 0.9805).abs() < 1e-9, "conserved: {sum}");
    // weighted: by cost among the rest, whose total is 0.175 + 0.05 + 0.0035 + 0.622 = 0.8505
    q.share_split = Share::Weighted;
    let rest = 0.8505;
    assert_totals(
        &aggregate(&s[0], &q),
        &[
            ("web", 0.175 + 0.13 * 0.175 / rest),
            ("batch", 0.05 + 0.13 * 0.05 / rest),
            ("api", 0.0035 + 0.13 * 0.0035 / rest),
            ("ml", 0.622 + 0.13 * 0.622 / rest),
        ],
    );
    // a label: team=gamma (db-0, 0.065) spread evenly over the 3 other team values
    let mut q = query("label:team");
    q.share_labels = vec![("team".into(), "gamma".into())];
    q.share_split = Share::Even;
    assert_totals(
        &aggregate(&s[0], &q),
        &[
            ("alpha", 0.1785 + 0.065 / 3.0),
            ("beta", 0.672 + 0.065 / 3.0),
            ("__unallocated__", 0.065 + 0.065 / 3.0),
        ],
    );
    // overhead: $73 a month is 73 / 730 = $0.1 an hour, evenly over 5 namespaces
    let mut q = query("namespace");
    q.share_cost_monthly = 73.0;
    q.share_split = Share::Even;
    assert_totals(
        &aggregate(&s[0], &q),
        &[
            ("web", 0.195),
            ("batch", 0.07),
            ("db", 0.15),
            ("api", 0.0235),
            ("ml", 0.642),
        ],
    );
    // a filter hides rows but not the cost they receive: web only
    q.filter = Some(Filter::parse(r#"namespace:"web""#).unwrap());
    assert_totals(&aggregate(&s[0], &q), &[("web", 0.195)]);
}

/// The month: the fixture holds 48 hours from 2026-11-01; every container but job-1 runs all of
/// them, job-1 only its half hour. web-1 = 0.07 × 48 = 3.36; job-1 = 0.05; a = 0.305 × 48 + 0.05.
#[tokio::test]
async fn the_month_by_day_and_accumulated() {
    let month = parse_window("lastmonth", T0 + 30 * 24 * HOUR + 5 * HOUR).unwrap();
    assert_eq!(month, Window::new(T0, T0 + 30 * 24 * HOUR).unwrap());
    let all = sets(month, Period::All).await;
    assert_eq!(all.len(), 1);
    assert_totals(
        &aggregate(&all[0], &query("cluster")),
        &[
            ("a", 0.305 * 48.0 + 0.05),
            ("b", 0.0035 * 48.0),
            ("c", 0.622 * 48.0),
        ],
    );
    let pods = aggregate(&all[0], &query("pod"));
    let web1 = pods.iter().find(|a| a.name == "web-1").unwrap();
    assert!((web1.total_cost() - 3.36).abs() < 1e-9);
    assert_eq!(web1.minutes, 48.0 * 60.0);
    assert!((web1.cpu_cores() - 1.0).abs() < 1e-9);
    // by day: two days with data (the 1st with job-1), then 28 empty days
    let days = sets(month, Period::Fixed(24 * HOUR)).await;
    assert_eq!(days.len(), 30);
    let d = |i: usize| totals(&aggregate(&days[i], &query("cluster")));
    assert!((d(0)["a"] - (0.305 * 24.0 + 0.05)).abs() < 1e-9);
    assert!((d(1)["a"] - 0.305 * 24.0).abs() < 1e-9);
    assert!(d(2).is_empty());
    // idle over the month: a's nodes cost 0.48 × 48; allocated compute is 0.205 an hour
    // (web-1 0.07, web-2 0.105, db-0 and db-1 0.015 each; the volume is not in idle) and job-1's
    // 0.05 once
    let mut q = query("cluster");
    q.include_idle = true;
    q.split_idle = true;
    let idle_a = totals(&aggregate(&all[0], &q))["a/__idle__"];
    assert!(
        (idle_a - (0.48 * 48.0 - 0.205 * 48.0 - 0.05)).abs() < 1e-6,
        "{idle_a}"
    );
}

/// The cost tables on a real store: closed hours are materialized and answer as the samples
/// do; a late sample makes its hour stale (answered from the samples until re-computed); days
/// roll up; a reader's scope filters materialized rows.
#[tokio::test]
async fn materialized_hours_days_and_late_samples() {
    use fleetgate_query::cost::materialize::{CostTables, MaterializeOptions};
    use fleetgate_query::read::ReadView;
    use fleetgate_query::scope::Scope;
    use fleetgate_store::{SampleRef, Store, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions {
        data_dir: dir.path().to_path_buf(),
        ..StoreOptions::default()
    })
    .await
    .unwrap();
    let (series, pricing) = fixture_series();
    for (l, pts) in &series {
        let (id, _) = store.series_id(l).unwrap();
        let samples: Vec<SampleRef> = pts
            .iter()
            .map(|(t, v)| SampleRef {
                series: id,
                timestamp_ms: *t,
                value: *v,
            })
            .collect();
        store.append(&samples).await.unwrap();
    }
    let engine = engine(pricing);
    let eopts = EngineOptions::default();
    let tables = CostTables::open(
        Arc::clone(&store),
        MaterializeOptions {
            max_hours_per_pass: 100,
            ..MaterializeOptions::default()
        },
    )
    .await
    .unwrap();
    let now = T0 + 3 * 24 * HOUR;
    // the hours of the 48 with data, and the hour before them (the nodes start at T0 − 1h)
    let s = tables.run(&engine, &eopts, now).await.unwrap();
    assert_eq!(s.hours, 49, "{s:?}");
    assert!(tables.is_hour_fresh(T0));
    // days: 2026-10-31 (one hour of data), 11-01 and 11-02
    assert_eq!(s.days, 3, "{s:?}");
    assert!(tables.is_day_fresh(T0) && tables.is_day_fresh(T0 + 24 * HOUR));
    // the files are plain Parquet beside the samples
    assert!(
        dir.path()
            .join("cost_allocation/resolution=hour/date=2026-11-01/hour=00/part.parquet")
            .exists()
    );
    assert!(
        dir.path()
            .join("cost_assets/resolution=day/date=2026-11-01/part.parquet")
            .exists()
    );

    let fleet = ReadView::new(Arc::clone(&store), Scope::fleet());
    let month = Window::new(T0, T0 + 30 * 24 * HOUR).unwrap();
    let from_tables = tables
        .steps(
            &engine,
            &fleet,
            fleet.scope(),
            &eopts,
            month,
            Period::All,
            now,
        )
        .await
        .unwrap();
    assert_totals(
        &aggregate(&from_tables[0], &query("cluster")),
        &[
            ("a", 0.305 * 48.0 + 0.05),
            ("b", 0.0035 * 48.0),
            ("c", 0.622 * 48.0),
        ],
    );
    // the same hour from the table and from the samples
    let hour = tables
        .steps(
            &engine,
            &fleet,
            fleet.scope(),
            &eopts,
            first_hour(),
            Period::All,
            now,
        )
        .await
        .unwrap();
    let computed = engine
        .steps(&fleet, &eopts, first_hour(), Period::All, now)
        .await
        .unwrap();
    assert_eq!(
        totals(&aggregate(&hour[0], &query(""))),
        totals(&aggregate(&computed[0], &query("")))
    );

    // a scoped reader sees its clusters only, from the tables too
    let only_b = ReadView::new(Arc::clone(&store), Scope::cluster("b"));
    let got = tables
        .steps(
            &engine,
            &only_b,
            only_b.scope(),
            &eopts,
            month,
            Period::All,
            now,
        )
        .await
        .unwrap();
    assert_totals(
        &aggregate(&got[0], &query("cluster")),
        &[("b", 0.0035 * 48.0)],
    );
    assert!(got[0].nodes.iter().all(|n| n.cluster == "b"));

    // the same rows in SQL: day rows and hour rows from the month's start add up to what the
    // tables answer, per cluster
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for a in &from_tables[0].allocations {
        *want.entry(a.properties.cluster.clone()).or_default() += a.total_cost();
    }
    let sql =
        fleetgate_query::sql::SqlEngine::new(fleetgate_query::sql::SqlOptions::default()).unwrap();
    let per_cluster = |scope: Scope, resolution: &'static str| {
        let view = Arc::new(ReadView::new(Arc::clone(&store), scope));
        let session = sql.session(view, EngineOptions::default()).unwrap();
        async move {
            let q = format!(
                "SELECT cluster, sum(total_cost) AS c FROM cost_allocation \
                 WHERE resolution = '{resolution}' \
                 AND window_start >= TIMESTAMP '2026-11-01T00:00:00Z' GROUP BY cluster ORDER BY cluster"
            );
            let batches: Vec<arrow::array::RecordBatch> =
                futures::TryStreamExt::try_collect(session.execute(&q).await.unwrap())
                    .await
                    .unwrap();
            let mut out = BTreeMap::new();
            for b in &batches {
                let c = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap();
                let v = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<arrow::array::Float64Array>()
                    .unwrap();
                for i in 0..b.num_rows() {
                    out.insert(c.value(i).to_string(), v.value(i));
                }
            }
            out
        }
    };
    for res in ["day", "hour"] {
        let got = per_cluster(Scope::fleet(), res).await;
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{res}"
        );
        for (c, w) in &want {
            assert!((got[c] - w).abs() < 1e-9, "{res} {c}: {} vs {w}", got[c]);
        }
    }
    let b_only = per_cluster(Scope::cluster("b"), "day").await;
    assert_eq!(b_only.keys().collect::<Vec<_>>(), vec!["b"]);
    assert!((b_only["b"] - want["b"]).abs() < 1e-9);
    // assets: nodes of the scoped reader's cluster only; a pruned time range reads nothing
    let view = Arc::new(ReadView::new(Arc::clone(&store), Scope::cluster("b")));
    let session = sql.session(view, EngineOptions::default()).unwrap();
    let batches: Vec<arrow::array::RecordBatch> = futures::TryStreamExt::try_collect(
        session
            .execute(
                "SELECT DISTINCT cluster FROM cost_assets WHERE asset_type = 'node' \
                 UNION ALL SELECT 'rows before the data: ' || count(*) FROM cost_allocation \
                 WHERE window_start < TIMESTAMP '2026-10-01T00:00:00Z'",
            )
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let mut seen: Vec<String> = Vec::new();
    for b in &batches {
        let c = arrow::array::cast::AsArray::as_string::<i32>(b.column(0));
        seen.extend((0..b.num_rows()).map(|i| c.value(i).to_string()));
    }
    seen.sort();
    assert_eq!(seen, vec!["b", "rows before the data: 0"]);

    // a late sample for the first hour: api-1's memory doubles for its last 10 minutes
    // (avg over the hour = (10 × 0.5 + 2 × 1.0) / 12 = 7/12 GiB; RAM cost 7/12 × 0.002)
    let late = labels(
        "container_memory_working_set_bytes",
        &[
            ("cluster", "b"),
            ("namespace", "api"),
            ("pod", "api-1"),
            ("container", "server"),
            ("id", "/kubepods/x"),
        ],
    );
    let id = store.lookup(&late).unwrap();
    store
        .append(&[
            SampleRef {
                series: id,
                timestamp_ms: T0 + 50 * MIN,
                value: GIB,
            },
            SampleRef {
                series: id,
                timestamp_ms: T0 + 55 * MIN,
                value: GIB,
            },
        ])
        .await
        .unwrap();
    assert!(
        !tables.is_hour_fresh(T0),
        "the late samples make the hour stale"
    );
    assert!(!tables.is_day_fresh(T0));
    let want_api = 0.0025 + 7.0 / 12.0 * 0.002;
    let check = |sets: &[CostSet]| {
        let t = totals(&aggregate(&sets[0], &query("pod")));
        assert!((t["api-1"] - want_api).abs() < 1e-9, "{}", t["api-1"]);
    };
    // stale: answered from the samples at once
    check(
        &tables
            .steps(
                &engine,
                &fleet,
                fleet.scope(),
                &eopts,
                first_hour(),
                Period::All,
                now,
            )
            .await
            .unwrap(),
    );
    // re-computed by the next pass (and its day rolled up again)
    let s = tables.run(&engine, &eopts, now).await.unwrap();
    assert_eq!((s.hours, s.days), (1, 1), "{s:?}");
    assert!(tables.is_hour_fresh(T0) && tables.is_day_fresh(T0));
    check(
        &tables
            .steps(
                &engine,
                &fleet,
                fleet.scope(),
                &eopts,
                first_hour(),
                Period::All,
                now,
            )
            .await
            .unwrap(),
    );
    let day = Window::new(T0, T0 + 24 * HOUR).unwrap();
    let d = tables
        .steps(
            &engine,
            &fleet,
            fleet.scope(),
            &eopts,
            day,
            Period::All,
            now,
        )
        .await
        .unwrap();
    let b = totals(&aggregate(&d[0], &query("cluster")))["b"];
    assert!((b - (0.0035 * 23.0 + want_api)).abs() < 1e-9, "{b}");

    // retention: 20 days later the hourly rows of the first days are gone, the daily stay
    let later = now + 20 * 24 * HOUR;
    let s = tables.run(&engine, &eopts, later).await.unwrap();
    assert!(s.removed >= 49, "{s:?}");
    assert!(
        !dir.path()
            .join("cost_allocation/resolution=hour/date=2026-11-01/hour=00/part.parquet")
            .exists()
    );
    assert!(tables.is_day_fresh(T0));
}
