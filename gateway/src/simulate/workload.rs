//! The simulated fleet: clusters, nodes, pods, services and PVCs, the series their
//! exporters (node-exporter, cAdvisor, kube-state-metrics, OpenCost, the apps) emit,
//! and how each value moves from one scrape to the next.
//!
//! Every *unit* (a node, a pod, a PVC) owns its series and its own PRNG stream, so a
//! unit can be advanced through a whole backfill window on its own and encoded before
//! the next one is touched; memory stays at one unit's samples, not the fleet's.

use super::encode::{Payload, RequestBuilder, encode_labels};
use super::rng::{Rng, mix};

/// Prometheus' staleness marker (`value.StaleNaN`).
pub(crate) const STALE_NAN: u64 = fleetgate_query::promql::STALE_NAN_BITS;

/// Characters Kubernetes uses for generated name suffixes.
const K8S_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// `http_request_duration_seconds` buckets (the Go client's defaults); `+Inf` is implied.
const LE: [(f64, &str); 11] = [
    (0.005, "0.005"),
    (0.01, "0.01"),
    (0.025, "0.025"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (0.5, "0.5"),
    (1.0, "1"),
    (2.5, "2.5"),
    (5.0, "5"),
    (10.0, "10"),
];
const CODES: [&str; 3] = ["200", "404", "500"];
const POD_PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];
const REGIONS: [&str; 5] = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "us-west-2",
    "eu-central-1",
];
/// `(mode, min share, max share)` of one CPU's seconds per second.
const CPU_MODES: [(&str, f64, f64); 8] = [
    ("idle", 0.55, 0.9),
    ("iowait", 0.001, 0.01),
    ("irq", 0.0, 0.0),
    ("nice", 0.0, 0.0),
    ("softirq", 0.002, 0.01),
    ("steal", 0.0, 0.002),
    ("system", 0.02, 0.08),
    ("user", 0.05, 0.3),
];
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug)]
struct InstanceType {
    name: &'static str,
    cores: u32,
    mem_gib: u32,
    cpu_hourly: f64,
    ram_gib_hourly: f64,
}

const INSTANCE_TYPES: [InstanceType; 5] = [
    InstanceType {
        name: "m5.xlarge",
        cores: 4,
        mem_gib: 16,
        cpu_hourly: 0.031611,
        ram_gib_hourly: 0.004237,
    },
    InstanceType {
        name: "m5.2xlarge",
        cores: 8,
        mem_gib: 32,
        cpu_hourly: 0.031611,
        ram_gib_hourly: 0.004237,
    },
    InstanceType {
        name: "c5.2xlarge",
        cores: 8,
        mem_gib: 16,
        cpu_hourly: 0.028312,
        ram_gib_hourly: 0.003794,
    },
    InstanceType {
        name: "r5.xlarge",
        cores: 4,
        mem_gib: 32,
        cpu_hourly: 0.025174,
        ram_gib_hourly: 0.005042,
    },
    InstanceType {
        name: "m6i.4xlarge",
        cores: 16,
        mem_gib: 64,
        cpu_hourly: 0.031611,
        ram_gib_hourly: 0.004237,
    },
];

/// `(service, namespace, team)`; services beyond the list get a numeric suffix.
const SERVICES: [(&str, &str, &str); 8] = [
    ("payments-api", "payments", "payments"),
    ("search-frontend", "search", "search"),
    ("checkout-web", "checkout", "checkout"),
    ("ledger", "payments", "payments"),
    ("search-indexer", "search", "search"),
    ("cart", "checkout", "checkout"),
    ("web", "default", "web"),
    ("recommendations", "search", "ml"),
];
/// `(handler, method)` pairs; each service serves two of them.
const ENDPOINTS: [(&str, &str); 6] = [
    ("/api/v1/items", "GET"),
    ("/api/v1/items", "POST"),
    ("/api/v1/search", "GET"),
    ("/api/v1/orders", "POST"),
    ("/healthz", "GET"),
    ("/api/v1/users/:id", "GET"),
];

/// Everything that shapes the generated fleet and its timeline.
#[derive(Debug, Clone)]
pub(crate) struct FleetConfig {
    pub(crate) clusters: u32,
    pub(crate) nodes: u32,
    pub(crate) pods_per_node: u32,
    pub(crate) services: u32,
    pub(crate) seed: u64,
    pub(crate) scrape_interval_ms: i64,
    /// Fraction of pods replaced per hour.
    pub(crate) churn_per_hour: f64,
    /// Unix ms of live tick 0; backfill ticks lie before it.
    pub(crate) start_ms: i64,
}

/// A run of consecutive scrape ticks that go out together: one backfill window, or one
/// live tick. Tick `t` is scraped at `start_ms + t * scrape_interval_ms` (backfill `t < 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    pub(crate) index: u64,
    pub(crate) first_tick: i64,
    pub(crate) ticks: u64,
    pub(crate) live: bool,
}

/// Backfill windows of `per_request` ticks covering the `backfill_ticks` before the start,
/// then `live_ticks` one-tick epochs.
pub(crate) fn epochs(backfill_ticks: u64, per_request: u64, live_ticks: u64) -> Vec<Epoch> {
    let per_request = per_request.max(1);
    let mut out = Vec::new();
    let mut t = -(backfill_ticks as i64);
    while t < 0 {
        let ticks = per_request.min(t.unsigned_abs());
        out.push(Epoch {
            index: out.len() as u64,
            first_tick: t,
            ticks,
            live: false,
        });
        t += ticks as i64;
    }
    for t in 0..live_ticks {
        out.push(Epoch {
            index: out.len() as u64,
            first_tick: t as i64,
            ticks: 1,
            live: true,
        });
    }
    out
}

/// How a series' value moves. Counter and gauge values are kept in integer quanta so
/// that emitted values are exactly what an exporter would print.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Const,
    /// `value` counts quanta; grows by about `rate` quanta/s; emitted as `value / div`.
    Counter {
        rate: f64,
        div: f64,
    },
    /// `value` counts quanta in `[lo, hi]`, random-walks by up to `step`; emitted `value * mul`.
    Gauge {
        lo: f64,
        hi: f64,
        step: f64,
        mul: f64,
    },
    /// Reads the unit's histogram `idx`.
    Hist {
        idx: u8,
        field: HistField,
    },
}

#[derive(Debug, Clone, Copy)]
enum HistField {
    Bucket(u8),
    Inf,
    Sum,
    Count,
    Code(u8),
}

#[derive(Debug)]
struct Series {
    /// Pre-encoded `TimeSeries.labels`.
    labels: Box<[u8]>,
    /// Scrape target id (timestamp jitter is per target and tick).
    target: u64,
    kind: Kind,
    value: f64,
    /// Samples generated but not yet encoded, in time order.
    pending: Vec<(i64, f64)>,
}

impl Series {
    fn new(
        name: &str,
        labels: &[(&'static str, &str)],
        target: u64,
        kind: Kind,
        value: f64,
    ) -> Self {
        let mut all: Vec<(&str, String)> = Vec::with_capacity(labels.len() + 1);
        all.push(("__name__", name.to_string()));
        all.extend(labels.iter().map(|(k, v)| (*k, (*v).to_string())));
        Self {
            labels: encode_labels(all),
            target,
            kind,
            value,
            pending: Vec::new(),
        }
    }

    fn advance(&mut self, dt_s: f64, rng: &mut Rng) {
        match self.kind {
            Kind::Const | Kind::Hist { .. } => {}
            Kind::Counter { rate, .. } => {
                if rate > 0.0 {
                    self.value += (rate * dt_s * rng.range_f64(0.5, 1.5)).round();
                }
            }
            Kind::Gauge { lo, hi, step, .. } => {
                let mut v = self.value + (rng.range_f64(-step, step)).round();
                if v < lo {
                    v = 2.0 * lo - v;
                }
                if v > hi {
                    v = 2.0 * hi - v;
                }
                self.value = v.clamp(lo, hi).round();
            }
        }
    }

    fn emit(&self, hists: &[Hist]) -> f64 {
        match self.kind {
            Kind::Const => self.value,
            Kind::Counter { div, .. } => self.value / div,
            Kind::Gauge { mul, .. } => self.value * mul,
            Kind::Hist { idx, field } => {
                let h = &hists[usize::from(idx)];
                match field {
                    HistField::Bucket(i) => h.buckets[usize::from(i)],
                    HistField::Inf | HistField::Count => h.count,
                    HistField::Sum => h.sum,
                    HistField::Code(i) => h.codes[usize::from(i)],
                }
            }
        }
    }
}

/// One `(handler, method)` of one pod: request counts by code and the latency histogram,
/// updated together so that `_count` equals the sum of `http_requests_total`.
#[derive(Debug, Clone)]
struct Hist {
    rps: f64,
    mean_latency_s: f64,
    codes: [f64; CODES.len()],
    buckets: [f64; LE.len()],
    count: f64,
    sum: f64,
}

impl Hist {
    fn new(rps: f64, mean_latency_s: f64) -> Self {
        Self {
            rps,
            mean_latency_s,
            codes: [0.0; 3],
            buckets: [0.0; LE.len()],
            count: 0.0,
            sum: 0.0,
        }
    }

    fn advance(&mut self, dt_s: f64, rng: &mut Rng) {
        let n = (self.rps * dt_s * rng.range_f64(0.8, 1.2)).round();
        let e404 = (n * 0.02 * rng.range_f64(0.0, 2.0)).round();
        let e500 = (n * 0.005 * rng.range_f64(0.0, 2.0)).round().min(n - e404);
        self.codes[0] += n - e404 - e500;
        self.codes[1] += e404;
        self.codes[2] += e500;
        self.count += n;
        let m = self.mean_latency_s * rng.range_f64(0.8, 1.25);
        for (b, (le, _)) in self.buckets.iter_mut().zip(LE) {
            // Exponential latency: rounding a monotone CDF keeps buckets cumulative.
            *b += (n * (1.0 - (-le / m).exp())).round();
        }
        self.sum += n * m;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerKind {
    Deployment,
    DaemonSet,
    StatefulSet,
}

#[derive(Debug)]
struct Container {
    name: String,
    image: String,
    cpu_request: f64,
    mem_request: f64,
    cpu_limit: f64,
    mem_limit: f64,
    cpu_use: f64,
    mem_use: f64,
}

#[derive(Debug)]
struct Workload {
    name: String,
    namespace: &'static str,
    team: &'static str,
    kind: OwnerKind,
    /// ReplicaSet hash for Deployments.
    rs_hash: String,
    containers: Vec<Container>,
    /// `(handler, method)` pairs and per-pod req/s and mean latency, for services.
    endpoints: Vec<(&'static str, &'static str, f64, f64)>,
    /// PVC size in bytes, for workloads that keep data.
    pvc_bytes: Option<f64>,
}

#[derive(Debug)]
struct NodeInfo {
    name: String,
    ip: String,
    zone: String,
    itype: &'static InstanceType,
    provider_id: String,
}

#[derive(Debug)]
struct ClusterInfo {
    index: u32,
    seed: u64,
    region: &'static str,
    nodes: Vec<NodeInfo>,
    workloads: Vec<Workload>,
    ksm_instance: String,
    opencost_instance: String,
}

#[derive(Debug, Clone, Copy)]
struct PodSpec {
    node: u32,
    slot: u32,
    workload: u32,
    generation: u32,
}

#[derive(Debug, Clone, Copy)]
enum UnitKind {
    Node(u32),
    Pod(PodSpec),
    Pvc(u32),
    /// A Deployment's ReplicaSet (its `kube_replicaset_owner`).
    ReplicaSet(u32),
}

#[derive(Debug)]
struct Unit {
    kind: UnitKind,
    rng: Rng,
    series: Vec<Series>,
    /// Series of a replaced pod, holding their last samples and stale markers.
    retired: Vec<Series>,
    hists: Vec<Hist>,
    /// Built but not yet sampled: the first tick emits the initial values.
    fresh: bool,
}

/// Per-tick values shared by every unit of a cluster.
#[derive(Debug, Clone, Copy)]
struct TickCtx {
    seed: u64,
    cluster: u32,
    tick: i64,
    base_ms: i64,
    dt_s: f64,
    churn_p: f64,
}

impl TickCtx {
    /// Scrape timestamp of `target` at this tick: the tick time ±3 ms.
    fn ts(&self, target: u64) -> i64 {
        let j = mix(
            self.seed,
            &[u64::from(self.cluster), target, self.tick as u64],
        ) % 7;
        self.base_ms + j as i64 - 3
    }
}

// Target ids: kind in the high bits, node or pod in the low bits.
fn target_exporter(node: u32) -> u64 {
    (1 << 40) | u64::from(node)
}
fn target_kubelet(node: u32) -> u64 {
    (2 << 40) | u64::from(node)
}
const TARGET_KSM: u64 = 3 << 40;
const TARGET_OPENCOST: u64 = 4 << 40;

fn k8s_suffix(mut h: u64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        s.push(char::from(
            K8S_ALPHABET[(h % K8S_ALPHABET.len() as u64) as usize],
        ));
        h /= K8S_ALPHABET.len() as u64;
    }
    s
}

fn uuid(h1: u64, h2: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        h1 >> 32,
        (h1 >> 16) & 0xffff,
        h1 & 0xfff,
        0x8000 | ((h2 >> 48) & 0x3fff),
        h2 & 0xffff_ffff_ffff
    )
}

impl ClusterInfo {
    fn build(cfg: &FleetConfig, index: u32) -> Self {
        let seed = mix(cfg.seed, &[u64::from(index)]);
        let mut rng = Rng::new(seed);
        let region = REGIONS[index as usize % REGIONS.len()];
        let nodes = (0..cfg.nodes)
            .map(|n| {
                let itype = rng.pick(&INSTANCE_TYPES);
                let zone = format!("{region}{}", ['a', 'b', 'c'][n as usize % 3]);
                let ip = format!("10.{}.{}.{}", index % 256, 16 + n / 250, 10 + n % 250);
                let name = format!("ip-{}.{region}.compute.internal", ip.replace('.', "-"));
                let provider_id = format!("aws:///{zone}/i-{:017x}", rng.next_u64() >> 4);
                NodeInfo {
                    name,
                    ip,
                    zone,
                    itype,
                    provider_id,
                }
            })
            .collect();
        let mut workloads = Vec::new();
        let image = |ns: &str, name: &str, rng: &mut Rng| {
            format!(
                "registry.example.com/{ns}/{name}:v1.{}.{}",
                rng.below(40),
                rng.below(10)
            )
        };
        for i in 0..cfg.services {
            let (base, namespace, team) = SERVICES[i as usize % SERVICES.len()];
            let name = match i as usize / SERVICES.len() {
                0 => base.to_string(),
                k => format!("{base}-{k}"),
            };
            let mut containers = vec![Container {
                image: image(namespace, base, &mut rng),
                name: name.clone(),
                cpu_request: *rng.pick(&[0.1, 0.25, 0.5, 1.0]),
                mem_request: *rng.pick(&[128.0, 256.0, 512.0, 1024.0]) * MIB,
                cpu_limit: 2.0,
                mem_limit: 2048.0 * MIB,
                cpu_use: rng.range_f64(0.02, 0.6),
                mem_use: rng.range_f64(80.0, 700.0) * MIB,
            }];
            if i % 2 == 0 {
                containers.push(Container {
                    name: "envoy".into(),
                    image: "docker.io/envoyproxy/envoy:v1.31.2".into(),
                    cpu_request: 0.05,
                    mem_request: 64.0 * MIB,
                    cpu_limit: 0.5,
                    mem_limit: 256.0 * MIB,
                    cpu_use: rng.range_f64(0.005, 0.05),
                    mem_use: rng.range_f64(30.0, 90.0) * MIB,
                });
            }
            let e = rng.below(ENDPOINTS.len() as u64) as usize;
            let endpoints = [
                e,
                (e + 1 + rng.below(ENDPOINTS.len() as u64 - 1) as usize) % ENDPOINTS.len(),
            ]
            .iter()
            .map(|&k| {
                let (h, m) = ENDPOINTS[k];
                (h, m, rng.range_f64(2.0, 60.0), rng.range_f64(0.01, 0.3))
            })
            .collect();
            workloads.push(Workload {
                name,
                namespace,
                team,
                kind: OwnerKind::Deployment,
                rs_hash: k8s_suffix(rng.next_u64(), 10),
                containers,
                endpoints,
                pvc_bytes: (i % 2 == 1).then(|| f64::from(*rng.pick(&[10u32, 20, 50, 100])) * GIB),
            });
        }
        let mut infra = |name: &str,
                         ns: &'static str,
                         team: &'static str,
                         kind: OwnerKind,
                         cpu: f64,
                         mem_mib: f64,
                         pvc: Option<f64>| {
            workloads.push(Workload {
                name: name.to_string(),
                namespace: ns,
                team,
                kind,
                rs_hash: k8s_suffix(rng.next_u64(), 10),
                containers: vec![Container {
                    name: name.to_string(),
                    image: image(ns, name, &mut rng),
                    cpu_request: cpu,
                    mem_request: mem_mib * MIB,
                    cpu_limit: cpu * 4.0,
                    mem_limit: mem_mib * 2.0 * MIB,
                    cpu_use: cpu * rng.range_f64(0.2, 1.2),
                    mem_use: mem_mib * rng.range_f64(0.4, 1.1) * MIB,
                }],
                endpoints: Vec::new(),
                pvc_bytes: pvc,
            });
        };
        // Indices fixed below: daemonsets first, then singletons, then the rest.
        infra(
            "kube-proxy",
            "kube-system",
            "platform",
            OwnerKind::DaemonSet,
            0.1,
            64.0,
            None,
        );
        infra(
            "node-exporter",
            "monitoring",
            "platform",
            OwnerKind::DaemonSet,
            0.1,
            64.0,
            None,
        );
        infra(
            "kube-state-metrics",
            "monitoring",
            "platform",
            OwnerKind::Deployment,
            0.1,
            256.0,
            None,
        );
        infra(
            "opencost",
            "monitoring",
            "finops",
            OwnerKind::Deployment,
            0.1,
            512.0,
            None,
        );
        infra(
            "prometheus-k8s",
            "monitoring",
            "platform",
            OwnerKind::StatefulSet,
            1.0,
            4096.0,
            Some(200.0 * GIB),
        );
        infra(
            "coredns",
            "kube-system",
            "platform",
            OwnerKind::Deployment,
            0.1,
            70.0,
            None,
        );
        infra(
            "batch-worker",
            "default",
            "data",
            OwnerKind::Deployment,
            0.5,
            1024.0,
            None,
        );
        Self {
            index,
            seed,
            region,
            nodes,
            workloads,
            ksm_instance: format!("10.{}.0.5:8080", index % 256),
            opencost_instance: format!("10.{}.0.6:9003", index % 256),
        }
    }

    /// Which workload runs in `slot` of a node; `global` counts non-daemonset slots.
    fn workload_for_slot(services: u32, slot: u32, global: u32, rng: &mut Rng) -> u32 {
        let s = services;
        match slot {
            0 => s,     // kube-proxy
            1 => s + 1, // node-exporter
            _ => match global {
                0 => s + 2, // kube-state-metrics
                1 => s + 3, // opencost
                2 => s + 4, // prometheus-k8s
                _ if s > 0 && rng.chance(0.8) => rng.below(u64::from(s)) as u32,
                _ => s + 5 + rng.below(2) as u32, // coredns, batch-worker
            },
        }
    }

    fn build_node(&self, n: u32, rng: &mut Rng) -> Vec<Series> {
        let node = &self.nodes[n as usize];
        let it = node.itype;
        let mut out = Vec::new();
        let inst = format!("{}:9100", node.ip);
        let ne = [
            ("job", "node-exporter"),
            ("instance", inst.as_str()),
            ("node", node.name.as_str()),
        ];
        let te = target_exporter(n);
        let uptime = rng.range_f64(3600.0, 30.0 * 86400.0);
        for cpu in 0..it.cores {
            let cpu_s = cpu.to_string();
            for (mode, lo, hi) in CPU_MODES {
                let mut l = ne.to_vec();
                l.extend([("cpu", cpu_s.as_str()), ("mode", mode)]);
                let rate = rng.range_f64(lo, hi) * 100.0;
                let kind = if rate > 0.0 {
                    Kind::Counter { rate, div: 100.0 }
                } else {
                    Kind::Const
                };
                out.push(Series::new(
                    "node_cpu_seconds_total",
                    &l,
                    te,
                    kind,
                    (rate * uptime).round(),
                ));
            }
        }
        let total = f64::from(it.mem_gib) * GIB - 350.0 * MIB;
        out.push(Series::new(
            "node_memory_MemTotal_bytes",
            &ne,
            te,
            Kind::Const,
            total,
        ));
        let pages = total / 4096.0;
        let kind = Kind::Gauge {
            lo: (pages * 0.2).round(),
            hi: (pages * 0.8).round(),
            step: (pages * 0.01).round(),
            mul: 4096.0,
        };
        out.push(Series::new(
            "node_memory_MemAvailable_bytes",
            &ne,
            te,
            kind,
            (pages * rng.range_f64(0.3, 0.7)).round(),
        ));
        let fs = [
            ("/dev/nvme0n1p1", "/", "xfs", 80.0 * GIB),
            ("/dev/nvme1n1", "/var/lib/containerd", "ext4", 200.0 * GIB),
            ("tmpfs", "/run", "tmpfs", f64::from(it.mem_gib) * GIB / 2.0),
        ];
        for (device, mountpoint, fstype, size) in fs {
            let mut l = ne.to_vec();
            l.extend([
                ("device", device),
                ("mountpoint", mountpoint),
                ("fstype", fstype),
            ]);
            out.push(Series::new(
                "node_filesystem_size_bytes",
                &l,
                te,
                Kind::Const,
                size,
            ));
            let blocks = size / 4096.0;
            let kind = Kind::Gauge {
                lo: (blocks * 0.1).round(),
                hi: (blocks * 0.95).round(),
                step: (blocks * 0.002).round(),
                mul: 4096.0,
            };
            out.push(Series::new(
                "node_filesystem_avail_bytes",
                &l,
                te,
                kind,
                (blocks * rng.range_f64(0.3, 0.8)).round(),
            ));
        }
        let ksm = [
            ("job", "kube-state-metrics"),
            ("instance", self.ksm_instance.as_str()),
            ("node", node.name.as_str()),
        ];
        for (resource, unit, v) in [
            ("cpu", "core", f64::from(it.cores) - 0.08),
            ("memory", "byte", total - 1536.0 * MIB),
            ("pods", "integer", 110.0),
        ] {
            let mut l = ksm.to_vec();
            l.extend([("resource", resource), ("unit", unit)]);
            out.push(Series::new(
                "kube_node_status_allocatable",
                &l,
                TARGET_KSM,
                Kind::Const,
                v,
            ));
        }
        let mut l = ksm.to_vec();
        l.extend([
            ("label_node_kubernetes_io_instance_type", it.name),
            ("label_topology_kubernetes_io_region", self.region),
            ("label_topology_kubernetes_io_zone", node.zone.as_str()),
            ("label_kubernetes_io_arch", "amd64"),
            ("label_kubernetes_io_os", "linux"),
        ]);
        out.push(Series::new(
            "kube_node_labels",
            &l,
            TARGET_KSM,
            Kind::Const,
            1.0,
        ));
        // OpenCost's own `instance` label collides with the target's and is kept as
        // `exported_instance` by Prometheus (honor_labels: false).
        let oc = [
            ("job", "opencost"),
            ("instance", self.opencost_instance.as_str()),
            ("exported_instance", node.name.as_str()),
            ("node", node.name.as_str()),
            ("instance_type", it.name),
            ("region", self.region),
            ("provider_id", node.provider_id.as_str()),
            ("arch", "amd64"),
        ];
        let cpu_cost = it.cpu_hourly;
        let ram_cost = it.ram_gib_hourly;
        let total_cost = cpu_cost * f64::from(it.cores) + ram_cost * f64::from(it.mem_gib);
        out.push(Series::new(
            "node_cpu_hourly_cost",
            &oc,
            TARGET_OPENCOST,
            Kind::Const,
            cpu_cost,
        ));
        out.push(Series::new(
            "node_ram_hourly_cost",
            &oc,
            TARGET_OPENCOST,
            Kind::Const,
            ram_cost,
        ));
        out.push(Series::new(
            "node_total_hourly_cost",
            &oc,
            TARGET_OPENCOST,
            Kind::Const,
            total_cost,
        ));
        out
    }

    fn build_pod(&self, spec: PodSpec, rng: &mut Rng) -> (Vec<Series>, Vec<Hist>) {
        let w = &self.workloads[spec.workload as usize];
        let node = &self.nodes[spec.node as usize];
        let h = mix(
            self.seed,
            &[
                0x9d,
                u64::from(spec.node),
                u64::from(spec.slot),
                u64::from(spec.generation),
            ],
        );
        let pod = match w.kind {
            OwnerKind::Deployment => format!("{}-{}-{}", w.name, w.rs_hash, k8s_suffix(h, 5)),
            OwnerKind::DaemonSet => format!("{}-{}", w.name, k8s_suffix(h, 5)),
            OwnerKind::StatefulSet => format!("{}-{}", w.name, spec.node * 1000 + spec.slot),
        };
        let uid = uuid(h, rng.next_u64());
        let ip = format!(
            "10.{}.{}.{}",
            128 + self.index % 128,
            spec.node % 256,
            2 + (h >> 40) % 250
        );
        // A pod present at the start has run for a while; a replacement starts from zero.
        let uptime = if spec.generation == 0 {
            rng.range_f64(600.0, 5.0 * 86400.0)
        } else {
            rng.range_f64(0.0, 20.0)
        };
        let (owner_kind, owner_name) = match w.kind {
            OwnerKind::Deployment => ("ReplicaSet", format!("{}-{}", w.name, w.rs_hash)),
            OwnerKind::DaemonSet => ("DaemonSet", w.name.clone()),
            OwnerKind::StatefulSet => ("StatefulSet", w.name.clone()),
        };
        let mut out = Vec::new();
        let kubelet_inst = format!("{}:10250", node.ip);
        let cad = [
            ("job", "kubelet"),
            ("instance", kubelet_inst.as_str()),
            ("metrics_path", "/metrics/cadvisor"),
            ("node", node.name.as_str()),
            ("namespace", w.namespace),
            ("pod", pod.as_str()),
        ];
        let tk = target_kubelet(spec.node);
        let ksm = [
            ("job", "kube-state-metrics"),
            ("instance", self.ksm_instance.as_str()),
            ("namespace", w.namespace),
            ("pod", pod.as_str()),
            ("uid", uid.as_str()),
        ];
        let pod_cgroup = format!("/kubepods/burstable/pod{uid}");
        for (ci, c) in w.containers.iter().enumerate() {
            let cid = format!(
                "{:016x}{:016x}",
                mix(h, &[ci as u64, 1]),
                mix(h, &[ci as u64, 2])
            );
            let id = format!("{pod_cgroup}/{cid}");
            let mut l = cad.to_vec();
            l.extend([
                ("container", c.name.as_str()),
                ("id", id.as_str()),
                ("image", c.image.as_str()),
                ("name", cid.as_str()),
            ]);
            let rate = c.cpu_use * 1e9 * rng.range_f64(0.7, 1.3);
            out.push(Series::new(
                "container_cpu_usage_seconds_total",
                &l,
                tk,
                Kind::Counter { rate, div: 1e9 },
                (rate * uptime).round(),
            ));
            let pages = c.mem_use / 4096.0;
            let hi = (pages * 1.5).min(c.mem_limit / 4096.0).round();
            let kind = Kind::Gauge {
                lo: (pages * 0.5).round(),
                hi,
                step: (pages * 0.03).round().max(1.0),
                mul: 4096.0,
            };
            out.push(Series::new(
                "container_memory_working_set_bytes",
                &l,
                tk,
                kind,
                pages.round(),
            ));

            let mut kc = ksm.to_vec();
            kc.push(("container", c.name.as_str()));
            let mut kn = kc.clone();
            kn.push(("node", node.name.as_str()));
            for (metric, cpu, mem) in [
                (
                    "kube_pod_container_resource_requests",
                    c.cpu_request,
                    c.mem_request,
                ),
                (
                    "kube_pod_container_resource_limits",
                    c.cpu_limit,
                    c.mem_limit,
                ),
            ] {
                let mut l = kn.clone();
                l.extend([("resource", "cpu"), ("unit", "core")]);
                out.push(Series::new(metric, &l, TARGET_KSM, Kind::Const, cpu));
                let mut l = kn.clone();
                l.extend([("resource", "memory"), ("unit", "byte")]);
                out.push(Series::new(metric, &l, TARGET_KSM, Kind::Const, mem));
            }
            out.push(Series::new(
                "kube_pod_container_status_running",
                &kc,
                TARGET_KSM,
                Kind::Const,
                1.0,
            ));
            let container_id = format!("containerd://{cid}");
            let mut l = kc.clone();
            l.extend([
                ("image", c.image.as_str()),
                ("container_id", container_id.as_str()),
            ]);
            out.push(Series::new(
                "kube_pod_container_info",
                &l,
                TARGET_KSM,
                Kind::Const,
                1.0,
            ));
        }
        for (metric, lo, hi) in [
            ("container_network_receive_bytes_total", 2e3, 4e5),
            ("container_network_transmit_bytes_total", 1e3, 2e5),
        ] {
            let mut l = cad.to_vec();
            l.extend([
                ("container", "POD"),
                ("id", pod_cgroup.as_str()),
                ("interface", "eth0"),
            ]);
            let rate = rng.range_f64(lo, hi);
            out.push(Series::new(
                metric,
                &l,
                tk,
                Kind::Counter { rate, div: 1.0 },
                (rate * uptime).round(),
            ));
        }
        if w.pvc_bytes.is_some() {
            // every pod of the workload mounts its claim (`build_pvc`)
            let claim = format!("data-{}", w.name);
            let mut l = ksm.to_vec();
            l.extend([
                ("volume", "data"),
                ("persistentvolumeclaim", claim.as_str()),
            ]);
            out.push(Series::new(
                "kube_pod_spec_volumes_persistentvolumeclaims_info",
                &l,
                TARGET_KSM,
                Kind::Const,
                1.0,
            ));
        }
        let mut l = ksm.to_vec();
        l.extend([("label_team", w.team), ("label_app", w.name.as_str())]);
        out.push(Series::new(
            "kube_pod_labels",
            &l,
            TARGET_KSM,
            Kind::Const,
            1.0,
        ));
        let mut l = ksm.to_vec();
        l.extend([
            ("owner_kind", owner_kind),
            ("owner_name", owner_name.as_str()),
            ("owner_is_controller", "true"),
        ]);
        out.push(Series::new(
            "kube_pod_owner",
            &l,
            TARGET_KSM,
            Kind::Const,
            1.0,
        ));
        for phase in POD_PHASES {
            let mut l = ksm.to_vec();
            l.push(("phase", phase));
            let v = if phase == "Running" { 1.0 } else { 0.0 };
            out.push(Series::new(
                "kube_pod_status_phase",
                &l,
                TARGET_KSM,
                Kind::Const,
                v,
            ));
        }
        let mut hists = Vec::new();
        if !w.endpoints.is_empty() {
            let inst = format!("{ip}:8080");
            let app = [
                ("job", w.name.as_str()),
                ("instance", inst.as_str()),
                ("namespace", w.namespace),
                ("pod", pod.as_str()),
            ];
            let ta = (5 << 40) ^ (h & 0xff_ffff_ffff);
            for (idx, &(handler, method, rps, lat)) in w.endpoints.iter().enumerate() {
                let mut hist = Hist::new(rps * rng.range_f64(0.7, 1.3), lat);
                hist.advance(uptime, rng);
                hists.push(hist);
                let idx = idx as u8;
                let hm = [("handler", handler), ("method", method)];
                for (ci, code) in CODES.iter().enumerate() {
                    let mut l = app.to_vec();
                    l.extend(hm);
                    l.push(("code", code));
                    out.push(Series::new(
                        "http_requests_total",
                        &l,
                        ta,
                        Kind::Hist {
                            idx,
                            field: HistField::Code(ci as u8),
                        },
                        0.0,
                    ));
                }
                for (bi, (_, le)) in LE.iter().enumerate() {
                    let mut l = app.to_vec();
                    l.extend(hm);
                    l.push(("le", le));
                    out.push(Series::new(
                        "http_request_duration_seconds_bucket",
                        &l,
                        ta,
                        Kind::Hist {
                            idx,
                            field: HistField::Bucket(bi as u8),
                        },
                        0.0,
                    ));
                }
                let mut l = app.to_vec();
                l.extend(hm);
                l.push(("le", "+Inf"));
                out.push(Series::new(
                    "http_request_duration_seconds_bucket",
                    &l,
                    ta,
                    Kind::Hist {
                        idx,
                        field: HistField::Inf,
                    },
                    0.0,
                ));
                let mut l = app.to_vec();
                l.extend(hm);
                out.push(Series::new(
                    "http_request_duration_seconds_sum",
                    &l,
                    ta,
                    Kind::Hist {
                        idx,
                        field: HistField::Sum,
                    },
                    0.0,
                ));
                out.push(Series::new(
                    "http_request_duration_seconds_count",
                    &l,
                    ta,
                    Kind::Hist {
                        idx,
                        field: HistField::Count,
                    },
                    0.0,
                ));
            }
        }
        (out, hists)
    }

    fn build_replicaset(&self, wi: u32) -> Vec<Series> {
        let w = &self.workloads[wi as usize];
        let rs = format!("{}-{}", w.name, w.rs_hash);
        vec![Series::new(
            "kube_replicaset_owner",
            &[
                ("job", "kube-state-metrics"),
                ("instance", self.ksm_instance.as_str()),
                ("namespace", w.namespace),
                ("replicaset", rs.as_str()),
                ("owner_kind", "Deployment"),
                ("owner_name", w.name.as_str()),
                ("owner_is_controller", "true"),
            ],
            TARGET_KSM,
            Kind::Const,
            1.0,
        )]
    }

    fn build_pvc(&self, wi: u32, rng: &mut Rng) -> Vec<Series> {
        let w = &self.workloads[wi as usize];
        let bytes = w.pvc_bytes.unwrap_or(GIB);
        let claim = format!("data-{}", w.name);
        let volume = format!("pvc-{}", uuid(rng.next_u64(), rng.next_u64()));
        let zone = format!("{}a", self.region);
        let provider = format!("aws://{zone}/vol-{:017x}", rng.next_u64() >> 4);
        let ksm = [
            ("job", "kube-state-metrics"),
            ("instance", self.ksm_instance.as_str()),
            ("namespace", w.namespace),
            ("persistentvolumeclaim", claim.as_str()),
        ];
        let mut info = ksm.to_vec();
        info.extend([("storageclass", "gp3"), ("volumename", volume.as_str())]);
        let oc = [
            ("job", "opencost"),
            ("instance", self.opencost_instance.as_str()),
            ("volumename", volume.as_str()),
            ("persistentvolume", volume.as_str()),
            ("provider_id", provider.as_str()),
        ];
        vec![
            Series::new(
                "kube_persistentvolumeclaim_info",
                &info,
                TARGET_KSM,
                Kind::Const,
                1.0,
            ),
            Series::new(
                "kube_persistentvolumeclaim_resource_requests_storage_bytes",
                &ksm,
                TARGET_KSM,
                Kind::Const,
                bytes,
            ),
            Series::new(
                "kube_persistentvolume_capacity_bytes",
                &[
                    ("job", "kube-state-metrics"),
                    ("instance", self.ksm_instance.as_str()),
                    ("persistentvolume", volume.as_str()),
                ],
                TARGET_KSM,
                Kind::Const,
                bytes,
            ),
            // gp3 list price, $0.08 per GiB-month, as $ per GiB-hour.
            Series::new(
                "pv_hourly_cost",
                &oc,
                TARGET_OPENCOST,
                Kind::Const,
                0.08 / 730.0,
            ),
        ]
    }
}

impl Unit {
    fn new(info: &ClusterInfo, index: u32, kind: UnitKind) -> Self {
        let generation = match kind {
            UnitKind::Pod(p) => p.generation,
            _ => 0,
        };
        let mut rng = Rng::new(mix(
            info.seed,
            &[0x717, u64::from(index), u64::from(generation)],
        ));
        let (series, hists) = match kind {
            UnitKind::Node(n) => (info.build_node(n, &mut rng), Vec::new()),
            UnitKind::Pod(spec) => info.build_pod(spec, &mut rng),
            UnitKind::Pvc(w) => (info.build_pvc(w, &mut rng), Vec::new()),
            UnitKind::ReplicaSet(w) => (info.build_replicaset(w), Vec::new()),
        };
        Self {
            kind,
            rng,
            series,
            retired: Vec::new(),
            hists,
            fresh: true,
        }
    }

    fn step(&mut self, info: &ClusterInfo, index: u32, ctx: &TickCtx) {
        if !self.fresh {
            let churn = match self.kind {
                UnitKind::Pod(spec)
                    if ctx.churn_p > 0.0
                        && info.workloads[spec.workload as usize].kind
                            != OwnerKind::StatefulSet =>
                {
                    self.rng.chance(ctx.churn_p).then_some(spec)
                }
                _ => None,
            };
            if let Some(mut spec) = churn {
                // The pod is gone: one stale marker per series, then its replacement.
                let stale = f64::from_bits(STALE_NAN);
                for s in &mut self.series {
                    s.pending.push((ctx.ts(s.target), stale));
                }
                let mut retired = std::mem::take(&mut self.retired);
                retired.append(&mut self.series);
                spec.generation += 1;
                *self = Unit::new(info, index, UnitKind::Pod(spec));
                self.retired = retired;
            } else {
                for h in &mut self.hists {
                    h.advance(ctx.dt_s, &mut self.rng);
                }
                for s in &mut self.series {
                    s.advance(ctx.dt_s, &mut self.rng);
                }
            }
        }
        let hists = &self.hists;
        for s in &mut self.series {
            let v = s.emit(hists);
            s.pending.push((ctx.ts(s.target), v));
        }
        self.fresh = false;
    }
}

#[derive(Debug)]
struct Cluster {
    info: ClusterInfo,
    units: Vec<Unit>,
}

/// The whole simulated fleet and its position in time.
#[derive(Debug)]
pub(crate) struct Fleet {
    cfg: FleetConfig,
    clusters: Vec<Cluster>,
    builder: RequestBuilder,
    seq: u64,
}

/// Name of cluster `i`: `sim-00`, `sim-01`, …
pub(crate) fn cluster_name(i: u32) -> String {
    format!("sim-{i:02}")
}

impl Fleet {
    pub(crate) fn new(cfg: FleetConfig) -> Self {
        let clusters = (0..cfg.clusters)
            .map(|c| {
                let info = ClusterInfo::build(&cfg, c);
                let mut kinds = Vec::new();
                for n in 0..cfg.nodes {
                    kinds.push(UnitKind::Node(n));
                }
                let mut rng = Rng::new(mix(info.seed, &[0x51]));
                let mut global = 0;
                for n in 0..cfg.nodes {
                    for slot in 0..cfg.pods_per_node {
                        let workload =
                            ClusterInfo::workload_for_slot(cfg.services, slot, global, &mut rng);
                        if slot >= 2 {
                            global += 1;
                        }
                        kinds.push(UnitKind::Pod(PodSpec {
                            node: n,
                            slot,
                            workload,
                            generation: 0,
                        }));
                    }
                }
                for (w, wl) in info.workloads.iter().enumerate() {
                    if wl.pvc_bytes.is_some()
                        && kinds
                            .iter()
                            .any(|k| matches!(k, UnitKind::Pod(p) if p.workload == w as u32))
                    {
                        kinds.push(UnitKind::Pvc(w as u32));
                    }
                    if wl.kind == OwnerKind::Deployment
                        && kinds
                            .iter()
                            .any(|k| matches!(k, UnitKind::Pod(p) if p.workload == w as u32))
                    {
                        kinds.push(UnitKind::ReplicaSet(w as u32));
                    }
                }
                let units = kinds
                    .into_iter()
                    .enumerate()
                    .map(|(i, k)| Unit::new(&info, i as u32, k))
                    .collect();
                Cluster { info, units }
            })
            .collect();
        Self {
            cfg,
            clusters,
            builder: RequestBuilder::default(),
            seq: 0,
        }
    }

    /// Series currently alive (each gets one sample per scrape).
    pub(crate) fn active_series(&self) -> usize {
        self.clusters
            .iter()
            .flat_map(|c| &c.units)
            .map(|u| u.series.len())
            .sum()
    }

    /// Unix ms of tick `t`.
    pub(crate) fn tick_ms(&self, t: i64) -> i64 {
        self.cfg.start_ms + t * self.cfg.scrape_interval_ms
    }

    /// Advances every cluster through `epoch` and hands out its requests, cluster by
    /// cluster, each with at most `series_per_request` series.
    pub(crate) fn generate(
        &mut self,
        epoch: &Epoch,
        series_per_request: usize,
        emit: &mut dyn FnMut(Payload) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let series_per_request = series_per_request.max(1) as u32;
        let not_before_ms = epoch.live.then(|| self.tick_ms(epoch.first_tick) + 3);
        let dt_s = self.cfg.scrape_interval_ms as f64 / 1000.0;
        let churn_p = (self.cfg.churn_per_hour * dt_s / 3600.0).clamp(0.0, 1.0);
        let Fleet {
            cfg,
            clusters,
            builder,
            seq,
        } = self;
        for cluster in clusters.iter_mut() {
            let ci = cluster.info.index;
            let mut flush = |builder: &mut RequestBuilder, seq: &mut u64| -> anyhow::Result<()> {
                if let Some((body, series, samples)) = builder.finish()? {
                    emit(Payload {
                        seq: *seq,
                        cluster: ci,
                        epoch: epoch.index,
                        series,
                        samples,
                        not_before_ms,
                        body,
                    })?;
                    *seq += 1;
                }
                Ok(())
            };
            for (ui, unit) in cluster.units.iter_mut().enumerate() {
                for t in epoch.first_tick..epoch.first_tick + epoch.ticks as i64 {
                    let ctx = TickCtx {
                        seed: cfg.seed,
                        cluster: ci,
                        tick: t,
                        base_ms: cfg.start_ms + t * cfg.scrape_interval_ms,
                        dt_s,
                        churn_p,
                    };
                    unit.step(&cluster.info, ui as u32, &ctx);
                }
                for s in unit.retired.iter().chain(unit.series.iter()) {
                    builder.push(&s.labels, &s.pending);
                    if builder.series() >= series_per_request {
                        flush(builder, seq)?;
                    }
                }
                unit.retired.clear();
                for s in &mut unit.series {
                    if s.pending.capacity() > 4 {
                        s.pending = Vec::new();
                    } else {
                        s.pending.clear();
                    }
                }
            }
            flush(builder, seq)?;
        }
        Ok(())
    }
}
