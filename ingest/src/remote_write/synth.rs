//! Live-shaped synthetic remote-write requests (Kubernetes node/pod series as a cluster
//! Prometheus sends them) and a tiny deterministic PRNG, for tests, benches and the simulator.

use super::proto::{Label, Sample, TimeSeries, WriteRequest};

/// SplitMix64: deterministic, dependency-free, good enough for test data.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; 0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

const METRICS: [&str; 20] = [
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
    "container_memory_rss",
    "container_network_receive_bytes_total",
    "container_network_transmit_bytes_total",
    "container_fs_reads_bytes_total",
    "container_fs_writes_bytes_total",
    "container_cpu_cfs_throttled_periods_total",
    "kube_pod_container_resource_requests",
    "kube_pod_container_resource_limits",
    "kube_pod_status_phase",
    "kube_pod_container_status_restarts_total",
    "kube_pod_info",
    "kube_pod_owner",
    "node_cpu_seconds_total",
    "node_memory_MemAvailable_bytes",
    "node_filesystem_avail_bytes",
    "node_network_receive_bytes_total",
    "up",
    "scrape_duration_seconds",
];

const NAMESPACES: [&str; 8] = [
    "default",
    "kube-system",
    "monitoring",
    "payments",
    "checkout",
    "search",
    "ingress-nginx",
    "data-pipeline",
];

const APPS: [&str; 10] = [
    "api",
    "worker",
    "frontend",
    "redis",
    "postgres",
    "kafka",
    "envoy",
    "fluent-bit",
    "coredns",
    "scheduler",
];

/// The labels of synthetic series number `i` of a cluster, sorted by name as Prometheus sends
/// them: ten labels (`__name__`, container, endpoint, instance, job, namespace, node, pod,
/// prometheus, service) with realistic values. Distinct `i` give distinct label sets.
pub fn live_series_labels(i: usize) -> Vec<Label> {
    let metric = METRICS[i % METRICS.len()];
    let pod_no = i / METRICS.len();
    let ns = NAMESPACES[pod_no % NAMESPACES.len()];
    let app = APPS[(pod_no / NAMESPACES.len()) % APPS.len()];
    let node_no = pod_no % 37;
    let hash = (pod_no as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let pod = format!(
        "{app}-{:08x}-{}",
        (hash >> 32) as u32 & 0x3fff_ffff,
        pod_suffix(hash)
    );
    let ip = format!(
        "10.{}.{}.{}",
        20 + node_no / 8,
        node_no % 8 * 16 + 3,
        2 + pod_no % 250
    );
    vec![
        Label::new("__name__", metric),
        Label::new("container", app),
        Label::new("endpoint", "http-metrics"),
        Label::new("instance", format!("{ip}:8080")),
        Label::new("job", format!("{ns}/{app}")),
        Label::new("namespace", ns),
        Label::new(
            "node",
            format!(
                "ip-10-0-{}-{}.eu-west-1.compute.internal",
                node_no / 4,
                10 + node_no
            ),
        ),
        Label::new("pod", pod),
        Label::new("prometheus", "monitoring/k8s"),
        Label::new("service", app),
    ]
}

fn pod_suffix(hash: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|k| ALPHABET[((hash >> (k * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// A live-shaped request: series `first..first + series`, each with `samples_per_series` samples
/// at `ts_ms`, `ts_ms + 15s`, …, values counter-like or gauge-like.
pub fn live_request(
    first: usize,
    series: usize,
    samples_per_series: usize,
    ts_ms: i64,
    rng: &mut Prng,
) -> WriteRequest {
    let timeseries = (first..first + series)
        .map(|i| TimeSeries {
            labels: live_series_labels(i),
            samples: (0..samples_per_series)
                .map(|k| Sample {
                    value: if rng.chance(0.5) {
                        rng.below(1 << 40) as f64
                    } else {
                        rng.unit() * 1e6
                    },
                    timestamp: ts_ms + 15_000 * k as i64,
                })
                .collect(),
            ..TimeSeries::default()
        })
        .collect();
    WriteRequest {
        timeseries,
        metadata: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn series_are_distinct_and_sorted() {
        let mut seen = HashSet::new();
        for i in 0..5000 {
            let l = live_series_labels(i);
            assert!(l.windows(2).all(|w| w[0].name < w[1].name));
            assert!(seen.insert(l));
        }
    }

    #[test]
    fn prng_is_deterministic() {
        let (mut a, mut b) = (Prng::new(7), Prng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!((0..1000).all(|_| a.unit() < 1.0));
    }
}
