//! The one typed configuration of `fleetgate serve`: defaults < YAML file < env < flags, then `validate()`.
//!
//! Every key is documented here; `deploy/fleetgate.example.yaml` shows them all and is parsed by a test.
//! Env overrides use `FLEETGATE__SECTION__KEY` (double underscore as the path separator, keys in any
//! case), e.g. `FLEETGATE__STORAGE__RETENTION=30d`. Flags (`--data-dir`, `--http-addr`) win over all.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetgate_ingest::Limits;
use fleetgate_query::cost::pricing::{NodeOverride, PriceSheet};
use serde::{Deserialize, Serialize};

/// The default HTTP port (remote-write, health, metrics; later the Prometheus API).
pub(crate) const DEFAULT_HTTP_PORT: u16 = 9201;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Local data directory: WAL, Parquet partitions and the series catalog. Default `./data`.
    pub(crate) data_dir: PathBuf,
    /// HTTP listen address. Default `0.0.0.0:9201` when cluster tokens are configured, and
    /// `127.0.0.1:9201` in open dev mode (no tokens), so an open gateway is never reachable from
    /// other hosts unless you say so.
    pub(crate) http_addr: Option<String>,
    /// Request size limits of the HTTP receivers.
    pub(crate) http: HttpConfig,
    /// Storage engine tuning.
    pub(crate) storage: StorageConfig,
    /// PromQL query limits.
    pub(crate) query: QueryConfig,
    /// Default per-cluster ingest limits; a cluster may override any of them.
    pub(crate) limits: Limits,
    /// Open dev mode (used only when `clusters` configures no token).
    pub(crate) dev: DevConfig,
    /// The OTLP receiver (HTTP `POST /v1/metrics` on the main port, and gRPC).
    pub(crate) otlp: OtlpConfig,
    /// SQL: `POST /api/v1/sql` on the main port and the PostgreSQL wire protocol.
    pub(crate) sql: SqlConfig,
    /// Cost allocation: prices and the allocation API's limits.
    pub(crate) cost: CostConfig,
    /// The cluster registry: one entry per sending cluster. A token maps to exactly one cluster,
    /// and every series that arrives with it is stored with `cluster="<name>"`. A cluster's token
    /// also reads that one cluster's series.
    pub(crate) clusters: Vec<ClusterConfig>,
    /// Readers: Grafana, teams, tools. Each sees the clusters of its `clusters` patterns only.
    pub(crate) users: Vec<UserConfig>,
    /// Pull sources: clusters that cannot push, scraped on an interval (`/federate` or
    /// `/metrics`).
    pub(crate) sources: Vec<SourceConfig>,
    /// A Kubecost multi-cluster `clusters.yaml` (the `kubecost-clusters-config` ConfigMap, its
    /// data file, or the bare list): each entry becomes a cluster with a pull source. Flag
    /// `--kubecost-clusters`.
    pub(crate) kubecost_clusters_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            http_addr: None,
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            query: QueryConfig::default(),
            limits: Limits::default(),
            dev: DevConfig::default(),
            otlp: OtlpConfig::default(),
            sql: SqlConfig::default(),
            cost: CostConfig::default(),
            clusters: Vec::new(),
            users: Vec::new(),
            sources: Vec::new(),
            kubecost_clusters_file: None,
        }
    }
}

/// HTTP request limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct HttpConfig {
    /// Largest accepted (compressed) request body in bytes; larger bodies get 413. Default 32 MiB.
    pub(crate) max_body_bytes: usize,
    /// Largest accepted decompressed remote-write payload in bytes (checked from the snappy header
    /// before allocating); larger payloads get 413. Default 128 MiB.
    pub(crate) max_decompressed_bytes: usize,
    /// PEM certificate chain for HTTPS. With `tls_key_file`, the listener serves TLS only; a
    /// configured certificate that cannot be used stops the start (never a fallback to HTTP).
    pub(crate) tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub(crate) tls_key_file: Option<PathBuf>,
    /// Bytes all write requests in flight may hold at once, compressed bodies and their declared
    /// decompressed size together; beyond it a write gets 503 + Retry-After before its body is
    /// read or decompressed. At least max_body_bytes + max_decompressed_bytes. Default 512 MiB.
    pub(crate) max_inflight_bytes: u64,
    /// Connections open at once; beyond it new connections wait in the kernel's backlog until
    /// one closes. Default 4096.
    pub(crate) max_connections: usize,
    /// A connection must send a complete request header within this long of being ready for
    /// one (new, or idle after a response), else it is closed: slow and idle clients hold no
    /// socket for long. Default `30s`.
    pub(crate) header_read_timeout: PromDuration,
    /// A request's whole body must arrive within this long of its header, else the request is
    /// answered 408 and the connection closed: a sender trickling a body cannot hold a
    /// connection and its reservation. Default `60s`.
    pub(crate) body_read_timeout: PromDuration,
    /// On SIGTERM/SIGINT, requests in flight get this long to finish; the connections left are
    /// then closed (their reads cancelled) and the memtables flushed. Default `30s`.
    pub(crate) shutdown_timeout: PromDuration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            max_decompressed_bytes: 128 << 20,
            tls_cert_file: None,
            tls_key_file: None,
            max_inflight_bytes: 512 << 20,
            max_connections: 4096,
            header_read_timeout: PromDuration(Duration::from_secs(30)),
            body_read_timeout: PromDuration(Duration::from_secs(60)),
            shutdown_timeout: PromDuration(Duration::from_secs(30)),
        }
    }
}

/// Storage engine settings (see `docs/storage.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StorageConfig {
    /// The memtable is flushed to Parquet at least this often. Default `10m`.
    pub(crate) flush_interval: PromDuration,
    /// A flush starts early when the memtable holds more than this many bytes. Default 256 MiB.
    pub(crate) memtable_flush_bytes: usize,
    /// Above this many memtable bytes writes are refused with 503 + Retry-After. Default 1 GiB.
    pub(crate) memtable_max_bytes: usize,
    /// Above this many WAL bytes on disk writes are refused with 503 + Retry-After. Default 4 GiB.
    pub(crate) wal_max_bytes: u64,
    /// WAL segment size before rotation. Default 64 MiB.
    pub(crate) wal_segment_bytes: u64,
    /// Samples older than this are rejected on ingest, and whole hour partitions older than this are
    /// deleted. Default `15d`.
    pub(crate) retention: PromDuration,
    /// A closed hour partition is compacted into one file once it has this many files. Default 4.
    pub(crate) compaction_min_files: usize,
    /// How often flush/compaction/retention run. Default `10s`.
    pub(crate) maintenance_interval: PromDuration,
    /// Bytes of per-file `series_id → rows` tables kept in memory (LRU; rebuilt from the file when
    /// evicted). Default 64 MiB.
    pub(crate) series_table_cache_bytes: u64,
    /// Bytes of parsed Parquet footers and page indexes kept in memory (LRU). Default 64 MiB.
    pub(crate) parquet_metadata_cache_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            flush_interval: PromDuration(Duration::from_secs(600)),
            memtable_flush_bytes: 256 << 20,
            memtable_max_bytes: 1 << 30,
            wal_max_bytes: 4 << 30,
            wal_segment_bytes: 64 << 20,
            retention: PromDuration(Duration::from_secs(15 * 86_400)),
            compaction_min_files: 4,
            maintenance_interval: PromDuration(Duration::from_secs(10)),
            series_table_cache_bytes: 64 << 20,
            parquet_metadata_cache_bytes: 64 << 20,
        }
    }
}

/// PromQL query limits (`/api/v1/query`, `/api/v1/query_range`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct QueryConfig {
    /// Longest a query may run; a request's own `timeout` can only shorten it. Default `2m`.
    pub(crate) timeout: PromDuration,
    /// Most samples a query may hold in memory at once; beyond it the query fails with an
    /// `execution` error instead of exhausting memory. Default 50,000,000.
    pub(crate) max_samples: usize,
    /// Threads of the query pool (its own runtime and its own parallel-evaluation pool), apart
    /// from the workers that decode, log and acknowledge writes. Default: half the cores,
    /// rounded up (1 on a 2-core machine).
    pub(crate) threads: usize,
    /// Reads (PromQL, series, labels, export) evaluated at once. Default 8.
    pub(crate) max_concurrency: usize,
    /// Reads waiting for a slot; beyond it a read gets 503 + `Retry-After`. Default 16.
    pub(crate) max_queued: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            timeout: PromDuration(Duration::from_secs(120)),
            max_samples: 50_000_000,
            threads: cores.div_ceil(2),
            max_concurrency: 8,
            max_queued: 16,
        }
    }
}

/// The default PostgreSQL wire port.
pub(crate) const DEFAULT_PG_PORT: u16 = 5433;

/// SQL over HTTP (`POST /api/v1/sql`) and the PostgreSQL wire protocol. Every SQL query reads
/// through the principal's cluster scope, is read-only, and runs on the query pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SqlConfig {
    /// PostgreSQL wire listen address, or `off`. Default `:5433` on the host of the main
    /// listener's default (`127.0.0.1` in open dev mode, else `0.0.0.0`). Flag `--pg-addr`.
    /// It speaks TLS when `http.tls_cert_file` is set, and then refuses plaintext connections.
    pub(crate) pg_addr: Option<String>,
    /// Bytes all running SQL queries may hold together (aggregations, sorts, joins, scan
    /// buffers); a query that needs more fails with a clear error (HTTP 503, SQLSTATE 53200)
    /// while ingest goes on. Default 1 GiB.
    pub(crate) memory_limit: usize,
    /// Longest a SQL query may run (a session's `statement_timeout` can only shorten it).
    /// Default `2m`.
    pub(crate) timeout: PromDuration,
    /// SQL queries running at once (HTTP and PostgreSQL together); beyond it a query gets 503 +
    /// `Retry-After` (SQLSTATE 53300). Default 4.
    pub(crate) max_concurrency: usize,
    /// Open PostgreSQL connections; beyond it a connection is refused (SQLSTATE 53300).
    /// Default 64.
    pub(crate) max_connections: usize,
    /// Longest SQL text accepted. Default 256 KiB.
    pub(crate) max_query_bytes: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            pg_addr: None,
            memory_limit: 1 << 30,
            timeout: PromDuration(Duration::from_secs(120)),
            max_concurrency: 4,
            max_connections: 64,
            max_query_bytes: 256 << 10,
        }
    }
}

/// Cost allocation on the OpenCost model (`/allocation/compute`, `/assets`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CostConfig {
    /// The fleet's prices, laid over OpenCost's `default.json` (CPU $0.031611 per vCPU-hour,
    /// spot $0.006655; RAM $0.004237 per GiB-hour, spot $0.000892; GPU $0.95 per hour, spot
    /// $0.308; storage $0.00005479452 per GiB-hour; egress $0.01 zone, $0.01 region, $0.12
    /// internet per GiB; load balancer $0.025 per hour; cluster management $0; discount 0).
    pub(crate) pricing: PriceSheet,
    /// Prices for the nodes whose labels match (`match: {node.kubernetes.io/instance-type:
    /// m5.large}`, or `capacity_type: spot`, `region`, `zone`, `instance_type`), applied in order
    /// over the cluster's sheet. A cluster's own `node_pricing` comes after these.
    pub(crate) node_pricing: Vec<NodeOverride>,
    /// Step of the grid running time is counted on (OpenCost's resolution). Default `1m`.
    pub(crate) resolution: PromDuration,
    /// The most hours one allocation or assets request may cover. Default 9600 (400 days).
    pub(crate) max_window_hours: usize,
    /// How often the cost tables are brought up to date (closed hours computed, late samples
    /// re-computed, days rolled up, retention applied). Default `5m`.
    pub(crate) materialize_interval: PromDuration,
    /// How long after its end an hour is materialized. Default `10m`.
    pub(crate) settle: PromDuration,
    /// How long hourly rows of `cost_allocation` / `cost_assets` are kept. Default `15d`.
    pub(crate) retention_hourly: PromDuration,
    /// How long daily rows are kept. Default `396d` (13 months).
    pub(crate) retention_daily: PromDuration,
    /// Currency of the prices (FOCUS `BillingCurrency`). Default `USD`.
    pub(crate) currency: String,
    /// Budgets per namespace or label value (each cluster's `monthly_spend_threshold` is a
    /// budget too, named `cluster:<name>`).
    pub(crate) budgets: Vec<BudgetConfig>,
}

/// One budget: a namespace or a label value (in one cluster, or across the fleet), an amount
/// and a period.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BudgetConfig {
    /// Its name (unique).
    pub(crate) name: String,
    /// The namespace it covers (or give `label`).
    pub(crate) namespace: Option<String>,
    /// The pod (or namespace) label value it covers: one `name: value` pair.
    pub(crate) label: BTreeMap<String, String>,
    /// Only this cluster; default every cluster.
    pub(crate) cluster: Option<String>,
    /// The threshold, in the currency of the prices.
    pub(crate) amount: f64,
    /// `monthly` (default) or `weekly`.
    pub(crate) interval: fleetgate_query::cost::budget::Interval,
    /// Monthly: day of the month it resets (1–28, default 1). Weekly: day of the week (0 =
    /// Sunday … 6 = Saturday, default 1 = Monday).
    pub(crate) reset_day: Option<u32>,
}

impl CostConfig {
    /// Every budget: the clusters' thresholds, then `cost.budgets`.
    pub(crate) fn budgets(
        &self,
        clusters: &[ClusterConfig],
    ) -> Vec<fleetgate_query::cost::budget::Budget> {
        use fleetgate_query::cost::budget::{Budget, Interval, Target};
        let mut out: Vec<Budget> = clusters
            .iter()
            .filter_map(|c| {
                c.monthly_spend_threshold.map(|amount| Budget {
                    name: format!("cluster:{}", c.name),
                    target: Target::Cluster(c.name.clone()),
                    amount,
                    interval: Interval::Monthly,
                    reset_day: 1,
                })
            })
            .collect();
        for b in &self.budgets {
            let target = match (&b.namespace, b.label.iter().next()) {
                (Some(ns), _) => Target::Namespace {
                    cluster: b.cluster.clone(),
                    namespace: ns.clone(),
                },
                (None, Some((k, v))) => Target::Label {
                    cluster: b.cluster.clone(),
                    key: fleetgate_query::cost::pricing::sanitize_label(k),
                    value: v.clone(),
                },
                (None, None) => match &b.cluster {
                    Some(c) => Target::Cluster(c.clone()),
                    None => continue,
                },
            };
            let reset_day = b.reset_day.unwrap_or(1);
            out.push(Budget {
                name: b.name.clone(),
                target,
                amount: b.amount,
                interval: b.interval,
                reset_day,
            });
        }
        out
    }

    /// The materialization settings.
    pub(crate) fn materialize_options(
        &self,
    ) -> fleetgate_query::cost::materialize::MaterializeOptions {
        fleetgate_query::cost::materialize::MaterializeOptions {
            settle_ms: self.settle.0.as_millis() as i64,
            retention_hourly_ms: self.retention_hourly.0.as_millis() as i64,
            retention_daily_ms: self.retention_daily.0.as_millis() as i64,
            ..Default::default()
        }
    }
}

impl Default for CostConfig {
    fn default() -> Self {
        Self {
            pricing: PriceSheet::default(),
            node_pricing: Vec::new(),
            resolution: PromDuration(Duration::from_secs(60)),
            max_window_hours: 24 * 400,
            materialize_interval: PromDuration(Duration::from_secs(300)),
            settle: PromDuration(Duration::from_secs(600)),
            retention_hourly: PromDuration(Duration::from_secs(15 * 86_400)),
            retention_daily: PromDuration(Duration::from_secs(396 * 86_400)),
            budgets: Vec::new(),
            currency: "USD".into(),
        }
    }
}

/// Open dev mode settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DevConfig {
    /// Request header that names the cluster in open mode. If absent, the sender's own `cluster`
    /// label (a Prometheus external label) is used, else `default_cluster`.
    pub(crate) cluster_header: String,
    /// Cluster name used in open mode when neither the header nor a `cluster` label is present.
    pub(crate) default_cluster: String,
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            cluster_header: "X-Fleetgate-Cluster".into(),
            default_cluster: "default".into(),
        }
    }
}

/// The default OTLP/gRPC port.
pub(crate) const DEFAULT_OTLP_GRPC_PORT: u16 = 4317;

/// The OTLP receiver. OTLP/HTTP is always served on the main port (`POST /v1/metrics`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct OtlpConfig {
    /// An extra listener serving only OTLP/HTTP (the OTLP default port is 4318), e.g.
    /// `0.0.0.0:4318`. Default none: `/v1/metrics` on the main port is enough.
    pub(crate) http_addr: Option<String>,
    /// OTLP/gRPC listen address (`MetricsService/Export`), or `off`. Default `:4317` on the host
    /// of the main listener's default: `127.0.0.1:4317` in open dev mode, `0.0.0.0:4317`
    /// otherwise.
    pub(crate) grpc_addr: Option<String>,
    /// Resource attributes copied onto every series of the resource, as Prometheus's
    /// `promote_resource_attributes` (a data point attribute of the same name wins). Default the
    /// Kubernetes attributes cost allocation needs: `k8s.namespace.name`, `k8s.pod.name`,
    /// `k8s.node.name`, `k8s.container.name`, `k8s.deployment.name`.
    pub(crate) promote_resource_attributes: Vec<String>,
    /// `classic` (default): exponential histograms become `_bucket{le}` series at power-of-two
    /// bounds; `reject`: they are refused through `partial_success`.
    pub(crate) exponential_histograms: ExponentialHistogramsMode,
    /// Most delta streams held for delta-to-cumulative conversion. Default 1,000,000.
    pub(crate) max_delta_streams: usize,
}

/// See [`OtlpConfig::exponential_histograms`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ExponentialHistogramsMode {
    /// Converted to classic buckets.
    #[default]
    Classic,
    /// Rejected.
    Reject,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        let o = fleetgate_ingest::otlp::OtlpOptions::default();
        Self {
            http_addr: None,
            grpc_addr: None,
            promote_resource_attributes: o.promote_resource_attributes,
            exponential_histograms: ExponentialHistogramsMode::Classic,
            max_delta_streams: o.max_delta_streams,
        }
    }
}

impl OtlpConfig {
    /// The ingest crate's options.
    pub(crate) fn options(&self) -> fleetgate_ingest::otlp::OtlpOptions {
        use fleetgate_ingest::otlp::ExponentialHistograms;
        fleetgate_ingest::otlp::OtlpOptions {
            promote_resource_attributes: self.promote_resource_attributes.clone(),
            exponential_histograms: match self.exponential_histograms {
                ExponentialHistogramsMode::Classic => ExponentialHistograms::Classic,
                ExponentialHistogramsMode::Reject => ExponentialHistograms::Reject,
            },
            max_delta_streams: self.max_delta_streams,
        }
    }
}

/// One sending cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ClusterConfig {
    /// The cluster's name: the value of the `cluster` label on every series it sends.
    pub(crate) name: String,
    /// The bearer token (or basic-auth password) of the cluster, in clear.
    pub(crate) token: Option<String>,
    /// The SHA-256 of the token, hex; use instead of `token` to keep secrets out of the file.
    pub token_sha256: Option<String>,
    /// Extra labels added to every series of this cluster (e.g. `region`, `env`). They override the
    /// sender's labels of the same name, which are kept as `exported_<name>`.
    pub(crate) labels: BTreeMap<String, String>,
    /// Per-cluster limit overrides; unset keys take the top-level `limits`.
    pub(crate) limits: Option<serde_yaml::Value>,
    /// The cluster's monthly spend threshold (currency units), checked by budgets; from a
    /// Kubecost clusters file's `monthlySpendThreshold`.
    pub(crate) monthly_spend_threshold: Option<f64>,
    /// The cluster's prices over `cost.pricing`.
    pub(crate) pricing: PriceSheet,
    /// Node overrides of this cluster, after `cost.node_pricing`.
    pub(crate) node_pricing: Vec<NodeOverride>,
}

/// One pull source: a cluster's Prometheus `/federate` (or any `/metrics` endpoint) scraped on an
/// interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SourceConfig {
    /// The cluster the series are stored under (`cluster="<name>"`).
    pub(crate) cluster: String,
    /// The source's name (the `source` label of `up`); default the URL's host:port.
    pub(crate) name: Option<String>,
    /// `http://` or `https://` URL. A path ending in `/federate` is asked with `match[]`; any
    /// other URL is scraped as a `/metrics` endpoint.
    pub(crate) url: String,
    /// Bearer token sent to the source.
    pub(crate) bearer_token: Option<String>,
    /// A file holding the bearer token (re-read on every scrape, as a mounted secret rotates).
    pub(crate) bearer_token_file: Option<PathBuf>,
    /// https: PEM certificates of the CAs to trust for this source instead of the system's
    /// (`/etc/ssl/certs/ca-certificates.crt` and the other usual bundle paths).
    pub(crate) tls_ca_file: Option<PathBuf>,
    /// How often to scrape. Default 30s.
    pub(crate) interval: PromDuration,
    /// Per-scrape timeout (at most the interval). Default 10s.
    pub(crate) timeout: PromDuration,
    /// `/federate` selectors; default [`DEFAULT_FEDERATE_MATCH`].
    #[serde(rename = "match")]
    pub(crate) match_: Vec<String>,
    /// Scraped labels win over the target's (`job`, `instance`, `source`); default true for
    /// `/federate` (federation keeps the source's labels), false otherwise.
    pub(crate) honor_labels: Option<bool>,
    /// The `job` target label; default `federate` for `/federate`, else `pull`.
    pub(crate) job: Option<String>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            cluster: String::new(),
            name: None,
            url: String::new(),
            bearer_token: None,
            bearer_token_file: None,
            tls_ca_file: None,
            interval: PromDuration(Duration::from_secs(30)),
            timeout: PromDuration(Duration::from_secs(10)),
            match_: Vec::new(),
            honor_labels: None,
            job: None,
        }
    }
}

/// The metric families a `/federate` source is asked for by default: what cost allocation
/// (OpenCost's inputs) and the fleet dashboards read.
pub(crate) const DEFAULT_FEDERATE_MATCH: &[&str] = &[
    "{__name__=~\"up|kube_.*|container_cpu_usage_seconds_total|container_memory_working_set_bytes|container_memory_usage_bytes|container_network_.*_bytes_total|container_fs_.*_bytes.*|node_cpu_seconds_total|node_memory_.*_bytes|node_filesystem_.*_bytes|node_network_.*_bytes_total|node_total_hourly_cost|node_cpu_hourly_cost|node_ram_hourly_cost|node_gpu_hourly_cost|pv_hourly_cost|kubecost_.*|opencost_.*|http_requests_total|http_request_duration_seconds_.*\"}",
];

impl SourceConfig {
    /// True when the URL is a Prometheus `/federate` endpoint.
    pub(crate) fn is_federate(&self) -> bool {
        url_path(&self.url)
            .trim_end_matches('/')
            .ends_with("/federate")
    }

    /// The selectors asked for (`/federate` only).
    pub(crate) fn matchers(&self) -> Vec<String> {
        if self.match_.is_empty() {
            DEFAULT_FEDERATE_MATCH
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            self.match_.clone()
        }
    }

    /// The source's name: configured, else the URL's `host:port`.
    pub(crate) fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| url_authority(&self.url).to_string())
    }
}

/// The path of an `http(s)://authority/path?query` URL.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    rest.find('/').map_or("", |i| &rest[i..])
}

/// The authority (`host:port`) of a URL.
pub(crate) fn url_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

/// One reader (a person, Grafana, a team's tool).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct UserConfig {
    /// The user name (HTTP basic auth; later the PostgreSQL login).
    pub(crate) name: String,
    /// The password in clear (dev only; prefer `password_scram`).
    pub(crate) password: Option<String>,
    /// The password as a PostgreSQL SCRAM-SHA-256 verifier
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`); `fleetgate passwd` prints one.
    pub(crate) password_scram: Option<String>,
    /// A bearer token in clear.
    pub(crate) token: Option<String>,
    /// The SHA-256 of the bearer token, hex.
    pub(crate) token_sha256: Option<String>,
    /// The clusters this user reads: names or globs (`eu-*`); `"*"` is the whole fleet.
    pub(crate) clusters: Vec<String>,
}

/// A Prometheus-style duration (`500ms`, `15s`, `10m`, `1h30m`, `15d`, `2w`, `1y`) in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PromDuration(pub Duration);

impl Serialize for PromDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(PromDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a Prometheus duration string.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ms: u128 = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "invalid duration {s:?}: expected a number at position {start}"
            ));
        }
        let n: u128 = s[start..i]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms: u128 = match &s[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (ms, s, m, h, d, w, y)"
                ));
            }
            u => return Err(format!("invalid duration {s:?}: unknown unit {u:?}")),
        };
        total_ms = total_ms
            .checked_add(n.saturating_mul(unit_ms))
            .ok_or_else(|| format!("duration {s:?} overflows"))?;
    }
    let ms = u64::try_from(total_ms).map_err(|_| format!("duration {s:?} overflows"))?;
    Ok(Duration::from_millis(ms))
}

/// Formats a duration the way `parse_duration` reads it.
pub(crate) fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Where a config came from, to load it again on reload (the environment is read afresh).
#[derive(Debug, Clone)]
pub(crate) struct LoadSource {
    /// `--config`
    pub(crate) file: Option<PathBuf>,
    /// The flags.
    pub(crate) flags: FlagOverrides,
}

impl LoadSource {
    /// Loads and validates the config again.
    pub(crate) fn load(&self) -> anyhow::Result<Config> {
        Config::load(self.file.as_deref(), std::env::vars(), &self.flags)
    }
}

/// Values given on the command line (or their `FLEETGATE_*` env vars, handled by clap).
#[derive(Debug, Default, Clone)]
pub(crate) struct FlagOverrides {
    /// `--data-dir`
    pub(crate) data_dir: Option<PathBuf>,
    /// `--http-addr`
    pub(crate) http_addr: Option<String>,
    /// `--otlp-grpc-addr`
    pub(crate) otlp_grpc_addr: Option<String>,
    /// `--kubecost-clusters`
    pub(crate) kubecost_clusters: Option<PathBuf>,
    /// `--pg-addr`
    pub(crate) pg_addr: Option<String>,
}

impl Config {
    /// Loads defaults, then the YAML file (if any), then `FLEETGATE__…` env vars, then flags, and
    /// validates the result. Errors name the key.
    pub(crate) fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &FlagOverrides,
    ) -> anyhow::Result<Self> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
                Self::from_text(Some(&text), &path.display().to_string(), env, flags)
            }
            None => Self::from_text(None, "", env, flags),
        }
    }

    /// [`Config::load`] with the file's text already read (`origin` names it in errors).
    pub(crate) fn from_text(
        text: Option<&str>,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &FlagOverrides,
    ) -> anyhow::Result<Self> {
        let mut tree = match text {
            Some(text) => {
                let v: serde_yaml::Value = serde_yaml::from_str(text)
                    .map_err(|e| anyhow::anyhow!("config file {origin}: {e}"))?;
                if v.is_null() {
                    serde_yaml::Value::Mapping(Default::default())
                } else {
                    v
                }
            }
            None => serde_yaml::Value::Mapping(Default::default()),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        apply_env(&mut tree, env.iter().cloned())?;
        let env_lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut cfg: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("config key `{path}`: {}", e.into_inner())
        })?;
        if let Some(d) = &flags.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(a) = &flags.http_addr {
            cfg.http_addr = Some(a.clone());
        }
        if let Some(a) = &flags.otlp_grpc_addr {
            cfg.otlp.grpc_addr = Some(a.clone());
        }
        if let Some(p) = &flags.kubecost_clusters {
            cfg.kubecost_clusters_file = Some(p.clone());
        }
        if let Some(a) = &flags.pg_addr {
            cfg.sql.pg_addr = Some(a.clone());
        }
        if let Some(p) = cfg.kubecost_clusters_file.clone() {
            let text = std::fs::read_to_string(&p).map_err(|e| {
                anyhow::anyhow!("config key `kubecost_clusters_file`: {}: {e}", p.display())
            })?;
            crate::kubecost::apply(&mut cfg, &text, env_lookup).map_err(|e| {
                anyhow::anyhow!("config key `kubecost_clusters_file` ({}): {e}", p.display())
            })?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// True when no cluster has a token: writes are open and take the cluster from the request.
    pub(crate) fn open_mode(&self) -> bool {
        self.clusters
            .iter()
            .all(|c| c.token.is_none() && c.token_sha256.is_none())
    }

    /// True when reads need no credentials: no cluster token and no user is configured.
    pub(crate) fn open_reads(&self) -> bool {
        self.open_mode() && self.users.is_empty()
    }

    /// The resolved listen address.
    pub(crate) fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        match &self.http_addr {
            Some(a) => a.parse().map_err(|e| {
                anyhow::anyhow!("config key `http_addr`: {a:?} is not a socket address: {e}")
            }),
            None if self.open_mode() => Ok(SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT))),
            None => Ok(SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT))),
        }
    }

    /// The OTLP/gRPC listen address; `None` when `otlp.grpc_addr` is `off`.
    pub(crate) fn otlp_grpc_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        self.side_addr(
            "otlp.grpc_addr",
            self.otlp.grpc_addr.as_deref(),
            DEFAULT_OTLP_GRPC_PORT,
        )
    }

    /// The PostgreSQL wire listen address; `None` when `sql.pg_addr` is `off`.
    pub(crate) fn pg_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        self.side_addr("sql.pg_addr", self.sql.pg_addr.as_deref(), DEFAULT_PG_PORT)
    }

    /// A side listener's address: `port` on the main listener's default host when unset (or
    /// given as `:port`), `None` for `off`.
    fn side_addr(
        &self,
        key: &str,
        value: Option<&str>,
        port: u16,
    ) -> anyhow::Result<Option<SocketAddr>> {
        let host = if self.open_mode() {
            [127, 0, 0, 1]
        } else {
            [0, 0, 0, 0]
        };
        match value.map(str::trim) {
            None => Ok(Some(SocketAddr::from((host, port)))),
            Some("off") => Ok(None),
            Some(a) => {
                let full = if a.starts_with(':') {
                    format!("{}{a}", std::net::Ipv4Addr::from(host))
                } else {
                    a.to_string()
                };
                full.parse().map(Some).map_err(|e| {
                    anyhow::anyhow!(
                        "config key `{key}`: {a:?} is not a socket address (or `off`): {e}"
                    )
                })
            }
        }
    }

    /// The extra OTLP/HTTP listen address, if configured.
    pub(crate) fn otlp_http_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.otlp.http_addr.as_deref().map(str::trim) {
            None | Some("") | Some("off") => Ok(None),
            Some(a) => a.parse().map(Some).map_err(|e| {
                anyhow::anyhow!("config key `otlp.http_addr`: {a:?} is not a socket address: {e}")
            }),
        }
    }

    /// The limits of cluster `i`: top-level `limits` overlaid with the cluster's own.
    pub(crate) fn cluster_limits(&self, i: usize) -> anyhow::Result<Limits> {
        let Some(c) = self.clusters.get(i) else {
            return Ok(self.limits.clone());
        };
        let Some(over) = &c.limits else {
            return Ok(self.limits.clone());
        };
        let mut base = serde_yaml::to_value(&self.limits)?;
        merge_yaml(&mut base, over.clone());
        serde_path_to_error::deserialize(base).map_err(|e| {
            anyhow::anyhow!(
                "config key `clusters[{i}].limits.{}`: {}",
                e.path(),
                e.inner()
            )
        })
    }

    /// Checks every value; the error names the offending key.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if self.data_dir.as_os_str().is_empty() {
            bail!("config key `data_dir`: must not be empty");
        }
        self.listen_addr()?;
        self.otlp_grpc_addr()?;
        self.otlp_http_addr()?;
        self.pg_addr()?;
        let q = &self.sql;
        if q.memory_limit < 16 << 20 {
            bail!("config key `sql.memory_limit`: must be at least 16 MiB");
        }
        if q.timeout.0 < Duration::from_millis(1) {
            bail!("config key `sql.timeout`: must be positive");
        }
        if q.max_concurrency == 0 {
            bail!("config key `sql.max_concurrency`: must be > 0");
        }
        if q.max_connections == 0 {
            bail!("config key `sql.max_connections`: must be > 0");
        }
        if !(64..=16 << 20).contains(&q.max_query_bytes) {
            bail!("config key `sql.max_query_bytes`: must be between 64 bytes and 16 MiB");
        }
        self.validate_cost()?;
        for (i, a) in self.otlp.promote_resource_attributes.iter().enumerate() {
            if fleetgate_ingest::otlp::names::label_name(a).is_none() {
                anyhow::bail!(
                    "config key `otlp.promote_resource_attributes[{i}]`: {a:?} has no Prometheus label name"
                );
            }
        }
        if self.otlp.max_delta_streams == 0 {
            anyhow::bail!("config key `otlp.max_delta_streams`: must be at least 1");
        }
        if self.http.max_body_bytes == 0 {
            bail!("config key `http.max_body_bytes`: must be > 0");
        }
        if self.http.max_decompressed_bytes < self.http.max_body_bytes {
            bail!("config key `http.max_decompressed_bytes`: must be ≥ http.max_body_bytes");
        }
        let s = &self.storage;
        if s.retention.0 < Duration::from_secs(3600) {
            bail!("config key `storage.retention`: must be at least 1h");
        }
        if s.flush_interval.0 < Duration::from_secs(1) {
            bail!("config key `storage.flush_interval`: must be at least 1s");
        }
        if s.maintenance_interval.0 < Duration::from_millis(100) {
            bail!("config key `storage.maintenance_interval`: must be at least 100ms");
        }
        if s.memtable_flush_bytes == 0 || s.memtable_max_bytes < s.memtable_flush_bytes {
            bail!(
                "config key `storage.memtable_max_bytes`: must be ≥ storage.memtable_flush_bytes > 0"
            );
        }
        if s.wal_segment_bytes < 1 << 20 {
            bail!("config key `storage.wal_segment_bytes`: must be at least 1 MiB");
        }
        if s.wal_max_bytes < s.wal_segment_bytes {
            bail!("config key `storage.wal_max_bytes`: must be ≥ storage.wal_segment_bytes");
        }
        if self.query.timeout.0 < Duration::from_millis(1) {
            bail!("config key `query.timeout`: must be positive");
        }
        if self.query.max_samples == 0 {
            bail!("config key `query.max_samples`: must be > 0");
        }
        if self.query.threads == 0 || self.query.threads > 1024 {
            bail!("config key `query.threads`: must be between 1 and 1024");
        }
        if self.query.max_concurrency == 0 {
            bail!("config key `query.max_concurrency`: must be > 0");
        }
        let one_request = self.http.max_body_bytes as u64 + self.http.max_decompressed_bytes as u64;
        if self.http.max_inflight_bytes < one_request {
            bail!(
                "config key `http.max_inflight_bytes`: must be ≥ http.max_body_bytes + http.max_decompressed_bytes ({one_request}), or the largest request could never pass"
            );
        }
        if self.http.max_connections == 0 {
            bail!("config key `http.max_connections`: must be > 0");
        }
        if self.http.header_read_timeout.0 < Duration::from_millis(100) {
            bail!("config key `http.header_read_timeout`: must be at least 100ms");
        }
        if self.http.body_read_timeout.0 < Duration::from_millis(100) {
            bail!("config key `http.body_read_timeout`: must be at least 100ms");
        }
        match (&self.http.tls_cert_file, &self.http.tls_key_file) {
            (Some(_), None) => {
                bail!("config key `http.tls_key_file`: required with http.tls_cert_file")
            }
            (None, Some(_)) => {
                bail!("config key `http.tls_cert_file`: required with http.tls_key_file")
            }
            _ => {}
        }
        if s.compaction_min_files < 2 {
            bail!("config key `storage.compaction_min_files`: must be at least 2");
        }
        if self.dev.cluster_header.is_empty()
            || axum::http::HeaderName::try_from(self.dev.cluster_header.as_str()).is_err()
        {
            bail!(
                "config key `dev.cluster_header`: {:?} is not a valid header name",
                self.dev.cluster_header
            );
        }
        if self.dev.default_cluster.is_empty() {
            bail!("config key `dev.default_cluster`: must not be empty");
        }
        let mut names = HashSet::new();
        let mut tokens = HashSet::new();
        let any_token = !self.open_mode();
        for (i, c) in self.clusters.iter().enumerate() {
            if c.name.is_empty() {
                bail!("config key `clusters[{i}].name`: must not be empty");
            }
            if !names.insert(c.name.as_str()) {
                bail!(
                    "config key `clusters[{i}].name`: duplicate cluster {:?}",
                    c.name
                );
            }
            let digest = match (&c.token, &c.token_sha256) {
                (Some(_), Some(_)) => {
                    bail!("config key `clusters[{i}]`: set `token` or `token_sha256`, not both")
                }
                (Some(t), None) => {
                    if t.is_empty() {
                        bail!("config key `clusters[{i}].token`: must not be empty");
                    }
                    Some(crate::auth::sha256_hex(t))
                }
                (None, Some(h)) => {
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bail!("config key `clusters[{i}].token_sha256`: must be 64 hex digits");
                    }
                    Some(h.to_ascii_lowercase())
                }
                // a pull-only cluster (it has a source) does not push, so needs no token
                (None, None) if any_token && !self.sources.iter().any(|s| s.cluster == c.name) => {
                    bail!(
                        "config key `clusters[{i}]`: every cluster needs `token` or `token_sha256` once any cluster has one (or a pull source)"
                    )
                }
                (None, None) => None,
            };
            if let Some(d) = digest
                && !tokens.insert(d)
            {
                bail!(
                    "config key `clusters[{i}].token`: the same token is used by another cluster"
                );
            }
            for (k, v) in &c.labels {
                if !fleetgate_ingest::validate::is_valid_label_name(k.as_bytes()) {
                    bail!("config key `clusters[{i}].labels.{k}`: not a valid label name");
                }
                if k == "cluster" || k == "__name__" {
                    bail!(
                        "config key `clusters[{i}].labels.{k}`: `{k}` is set by fleetgate itself"
                    );
                }
                if v.is_empty() {
                    bail!("config key `clusters[{i}].labels.{k}`: value must not be empty");
                }
            }
            let limits = self.cluster_limits(i)?;
            let extra = c
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            fleetgate_ingest::ClusterContext::new(c.name.as_str(), extra, limits)
                .map_err(|e| anyhow::anyhow!("config key `clusters[{i}]`: {e}"))?;
        }
        self.validate_users(&mut tokens)?;
        self.validate_sources()
    }

    /// Checks `sources`: a cluster name, an http(s) URL with a host, one token form at most, a
    /// positive interval and a timeout within it, and `match[]` only for `/federate`.
    fn validate_cost(&self) -> anyhow::Result<()> {
        let c = &self.cost;
        c.pricing
            .validate("cost.pricing")
            .map_err(|e| anyhow::anyhow!("config key `{e}`"))?;
        let overrides = |at: &str, v: &[NodeOverride]| -> anyhow::Result<()> {
            for (i, o) in v.iter().enumerate() {
                if o.match_labels.is_empty() {
                    anyhow::bail!(
                        "config key `{at}[{i}].match`: must name at least one node label"
                    );
                }
                o.prices
                    .validate(&format!("{at}[{i}].prices"))
                    .map_err(|e| anyhow::anyhow!("config key `{e}`"))?;
            }
            Ok(())
        };
        overrides("cost.node_pricing", &c.node_pricing)?;
        let res = c.resolution.0;
        if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&res) {
            anyhow::bail!("config key `cost.resolution`: must be between 10s and 1h");
        }
        if c.max_window_hours == 0 {
            anyhow::bail!("config key `cost.max_window_hours`: must be > 0");
        }
        if c.materialize_interval.0 < Duration::from_millis(100) {
            anyhow::bail!("config key `cost.materialize_interval`: must be at least 100ms");
        }
        if c.retention_hourly.0 < Duration::from_secs(3600) {
            anyhow::bail!("config key `cost.retention_hourly`: must be at least 1h");
        }
        if c.retention_daily.0 < c.retention_hourly.0 {
            anyhow::bail!(
                "config key `cost.retention_daily`: must not be shorter than `cost.retention_hourly`"
            );
        }
        let mut names = HashSet::new();
        for (i, b) in c.budgets.iter().enumerate() {
            let at = format!("cost.budgets[{i}]");
            if b.name.trim().is_empty() {
                anyhow::bail!("config key `{at}.name`: must not be empty");
            }
            if !names.insert(b.name.clone()) {
                anyhow::bail!("config key `{at}.name`: {:?} is used twice", b.name);
            }
            if !(b.amount.is_finite() && b.amount >= 0.0) {
                anyhow::bail!(
                    "config key `{at}.amount`: {} is not an amount ≥ 0",
                    b.amount
                );
            }
            match (&b.namespace, b.label.len(), &b.cluster) {
                (Some(_), 0, _) | (None, 1, _) | (None, 0, Some(_)) => {}
                (Some(_), _, _) => {
                    anyhow::bail!("config key `{at}`: give `namespace` or `label`, not both")
                }
                (None, 0, None) => {
                    anyhow::bail!("config key `{at}`: give `namespace`, `label` or `cluster`")
                }
                (None, _, _) => {
                    anyhow::bail!("config key `{at}.label`: exactly one `name: value` pair")
                }
            }
            let ok = match (b.interval, b.reset_day) {
                (_, None) => true,
                (fleetgate_query::cost::budget::Interval::Monthly, Some(d)) => {
                    (1..=28).contains(&d)
                }
                (fleetgate_query::cost::budget::Interval::Weekly, Some(d)) => d <= 6,
            };
            if !ok {
                anyhow::bail!(
                    "config key `{at}.reset_day`: 1–28 for monthly, 0–6 (Sunday–Saturday) for weekly"
                );
            }
        }
        for (i, k) in self.clusters.iter().enumerate() {
            k.pricing
                .validate(&format!("clusters[{i}].pricing"))
                .map_err(|e| anyhow::anyhow!("config key `{e}`"))?;
            overrides(&format!("clusters[{i}].node_pricing"), &k.node_pricing)?;
            if let Some(t) = k.monthly_spend_threshold
                && !(t.is_finite() && t >= 0.0)
            {
                anyhow::bail!(
                    "config key `clusters[{i}].monthly_spend_threshold`: {t} is not an amount ≥ 0"
                );
            }
        }
        Ok(())
    }

    fn validate_sources(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        let mut names = HashSet::new();
        for (i, src) in self.sources.iter().enumerate() {
            let key = format!("sources[{i}]");
            if src.cluster.is_empty() {
                bail!("config key `{key}.cluster`: must name the cluster the series belong to");
            }
            let https = src.url.starts_with("https://");
            if !(https || src.url.starts_with("http://")) || url_authority(&src.url).is_empty() {
                bail!(
                    "config key `{key}.url`: {:?} is not an http:// or https:// URL",
                    src.url
                );
            }
            if src.tls_ca_file.is_some() && !https {
                bail!("config key `{key}.tls_ca_file`: only an https:// URL uses a CA file");
            }
            if src.bearer_token.is_some() && src.bearer_token_file.is_some() {
                bail!("config key `{key}`: set `bearer_token` or `bearer_token_file`, not both");
            }
            if src.interval.0 < Duration::from_secs(1) {
                bail!("config key `{key}.interval`: must be at least 1s");
            }
            if src.timeout.0.is_zero() || src.timeout.0 > src.interval.0 {
                bail!("config key `{key}.timeout`: must be positive and at most the interval");
            }
            if !src.match_.is_empty() && !src.is_federate() {
                bail!("config key `{key}.match`: only a /federate URL takes selectors");
            }
            if src.match_.iter().any(|m| m.trim().is_empty()) {
                bail!("config key `{key}.match`: a selector must not be empty");
            }
            if !names.insert((src.cluster.clone(), src.display_name())) {
                bail!(
                    "config key `{key}`: another source of cluster {:?} has the name {:?} (set `name`)",
                    src.cluster,
                    src.display_name()
                );
            }
        }
        Ok(())
    }

    /// Checks `users`: unique names, one password form and one token form at most, at least one
    /// credential, valid verifiers, digests and cluster patterns; no token shared with a cluster.
    fn validate_users(&self, tokens: &mut HashSet<String>) -> anyhow::Result<()> {
        use anyhow::bail;
        let mut names = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let key = format!("users[{i}]");
            if u.name.is_empty() || u.name.contains(':') {
                bail!("config key `{key}.name`: must be non-empty and contain no `:`");
            }
            if !names.insert(u.name.as_str()) {
                bail!("config key `{key}.name`: duplicate user {:?}", u.name);
            }
            match (&u.password, &u.password_scram) {
                (Some(_), Some(_)) => {
                    bail!("config key `{key}`: set `password` or `password_scram`, not both")
                }
                (Some(p), None) if p.is_empty() => {
                    bail!("config key `{key}.password`: must not be empty")
                }
                (None, Some(v)) => {
                    crate::auth::ScramVerifier::parse(v)
                        .map_err(|e| anyhow::anyhow!("config key `{key}.password_scram`: {e}"))?;
                }
                _ => {}
            }
            let digest = match (&u.token, &u.token_sha256) {
                (Some(_), Some(_)) => {
                    bail!("config key `{key}`: set `token` or `token_sha256`, not both")
                }
                (Some(t), None) if t.is_empty() => {
                    bail!("config key `{key}.token`: must not be empty")
                }
                (Some(t), None) => Some(crate::auth::sha256_hex(t)),
                (None, Some(h)) => {
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bail!("config key `{key}.token_sha256`: must be 64 hex digits");
                    }
                    Some(h.to_ascii_lowercase())
                }
                (None, None) => None,
            };
            if u.password.is_none() && u.password_scram.is_none() && digest.is_none() {
                bail!(
                    "config key `{key}`: needs a credential (`password`, `password_scram`, `token` or `token_sha256`)"
                );
            }
            if let Some(d) = digest
                && !tokens.insert(d)
            {
                bail!(
                    "config key `{key}.token`: the same token is used by a cluster or another user"
                );
            }
            if u.clusters.is_empty() {
                bail!(
                    "config key `{key}.clusters`: list the clusters this user reads (names, globs, or \"*\" for the whole fleet)"
                );
            }
            fleetgate_query::scope::Scope::from_patterns(&u.clusters)
                .map_err(|e| anyhow::anyhow!("config key `{key}.clusters`: {e}"))?;
        }
        Ok(())
    }
}

/// Overlays `FLEETGATE__A__B=value` env vars onto the YAML tree (values parsed as YAML scalars).
fn apply_env(
    tree: &mut serde_yaml::Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("FLEETGATE__"))
        .collect();
    vars.sort();
    for (key, value) in vars {
        let path: Vec<String> = key["FLEETGATE__".len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            anyhow::bail!("env {key}: empty path segment");
        }
        let parsed: serde_yaml::Value = serde_yaml::from_str(&value)
            .unwrap_or_else(|_| serde_yaml::Value::String(value.clone()));
        let mut node = &mut *tree;
        for (n, seg) in path.iter().enumerate() {
            let serde_yaml::Value::Mapping(map) = node else {
                anyhow::bail!("env {key}: `{}` is not a section", path[..n].join("."));
            };
            let k = serde_yaml::Value::String(seg.clone());
            if n + 1 == path.len() {
                map.insert(k, parsed.clone());
                break;
            }
            node = map
                .entry(k)
                .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
        }
    }
    Ok(())
}

fn merge_yaml(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) => merge_yaml(bv, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)], flags: FlagOverrides) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml)?;
        Config::load(
            Some(&p),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            &flags,
        )
    }

    #[test]
    fn cost_errors_name_the_key() {
        for (yaml, key) in [
            ("cost:\n  pricing: {cpu: -1}\n", "cost.pricing.cpu"),
            (
                "cost:\n  pricing: {discount: 1.5}\n",
                "cost.pricing.discount",
            ),
            ("cost:\n  pricing: {cpus: 1}\n", "cpus"),
            (
                "cost:\n  node_pricing: [{match: {}, prices: {cpu: 1}}]\n",
                "cost.node_pricing[0].match",
            ),
            (
                "cost:\n  node_pricing: [{match: {a: b}, prices: {ram: -2}}]\n",
                "cost.node_pricing[0].prices.ram",
            ),
            ("cost:\n  resolution: 1s\n", "cost.resolution"),
            ("cost:\n  retention_hourly: 10m\n", "cost.retention_hourly"),
            ("cost:\n  retention_daily: 1d\n", "cost.retention_daily"),
            (
                "cost:\n  budgets: [{name: x, amount: 1}]\n",
                "cost.budgets[0]",
            ),
            (
                "cost:\n  budgets: [{name: x, namespace: a, amount: -1}]\n",
                "cost.budgets[0].amount",
            ),
            (
                "cost:\n  budgets: [{name: x, namespace: a, amount: 1}, {name: x, namespace: b, amount: 1}]\n",
                "cost.budgets[1].name",
            ),
            (
                "cost:\n  budgets: [{name: x, namespace: a, amount: 1, reset_day: 31}]\n",
                "cost.budgets[0].reset_day",
            ),
            (
                "cost:\n  budgets: [{name: x, namespace: a, amount: 1, interval: weekly, reset_day: 7}]\n",
                "cost.budgets[0].reset_day",
            ),
            (
                "clusters:\n  - {name: a, token: t, monthly_spend_threshold: -3}\n",
                "clusters[0].monthly_spend_threshold",
            ),
            (
                "clusters:\n  - {name: a, token: t, pricing: {gpu: -1}}\n",
                "clusters[0].pricing.gpu",
            ),
        ] {
            let e = load(yaml, &[], FlagOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
        let cfg = load(
            "cost:\n  budgets: [{name: ml, label: {team: ml}, amount: 5, interval: weekly}]\nclusters:\n  - {name: a, token: t, monthly_spend_threshold: 10}\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap();
        let b = cfg.cost.budgets(&cfg.clusters);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].name, "cluster:a");
        assert_eq!(b[1].kind(), "label");
    }

    #[test]
    fn example_config_in_deploy_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fleetgate.example.yaml");
        let cfg = Config::load(Some(&path), Vec::new(), &FlagOverrides::default()).unwrap();
        assert!(!cfg.open_mode());
        assert!(cfg.clusters.len() >= 2);
        assert_eq!(cfg.listen_addr().unwrap().port(), DEFAULT_HTTP_PORT);
        for i in 0..cfg.clusters.len() {
            cfg.cluster_limits(i).unwrap();
        }
        assert_eq!(
            cfg.otlp_grpc_addr().unwrap().map(|a| a.port()),
            Some(DEFAULT_OTLP_GRPC_PORT)
        );
        assert_eq!(
            cfg.otlp.options(),
            fleetgate_ingest::otlp::OtlpOptions::default()
        );
    }

    #[test]
    fn kubecost_clusters_file_in_deploy_becomes_clusters_and_sources() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/senders/kubecost-clusters.yaml");
        let env = [
            ("KUBECOST_TOKEN_US_EAST_1", "tok-us"),
            ("KUBECOST_TOKEN_EU_WEST_1", "tok-eu"),
        ];
        let yaml = format!(
            "clusters:\n  - name: prod-eu-west-1\n    token: push-token\nkubecost_clusters_file: {}\n",
            path.display()
        );
        let cfg = load(&yaml, &env, FlagOverrides::default()).unwrap();
        let names: Vec<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["prod-eu-west-1", "prod-us-east-1", "staging"]);
        assert_eq!(cfg.clusters[0].token.as_deref(), Some("push-token"), "kept");
        assert_eq!(cfg.clusters[0].monthly_spend_threshold, Some(18000.0));
        assert_eq!(cfg.clusters[1].monthly_spend_threshold, Some(25000.0));
        assert_eq!(cfg.clusters[2].monthly_spend_threshold, None);
        let src: Vec<(&str, &str, Option<&str>, bool)> = cfg
            .sources
            .iter()
            .map(|s| {
                (
                    s.cluster.as_str(),
                    s.url.as_str(),
                    s.bearer_token.as_deref(),
                    s.is_federate(),
                )
            })
            .collect();
        assert_eq!(
            src,
            [
                (
                    "prod-us-east-1",
                    "http://prometheus.us-east-1.example.internal:9090/federate",
                    Some("tok-us"),
                    true
                ),
                (
                    "prod-eu-west-1",
                    "http://prometheus.eu-west-1.example.internal:9090/federate",
                    Some("tok-eu"),
                    true
                ),
                (
                    "staging",
                    "http://staging-node-exporter.example.internal:9100/metrics",
                    None,
                    false
                ),
            ]
        );
        // the flag names the file too; an unset variable is an error naming it
        let flags = FlagOverrides {
            kubecost_clusters: Some(path.clone()),
            ..FlagOverrides::default()
        };
        let e = load("", &env[..1], flags).unwrap_err().to_string();
        assert!(
            e.contains("KUBECOST_TOKEN_EU_WEST_1") && e.contains("kubecost_clusters_file"),
            "{e}"
        );
    }

    #[test]
    fn source_checks_name_the_key() {
        for (yaml, key) in [
            (
                "sources:\n  - url: http://a/metrics\n",
                "sources[0].cluster",
            ),
            (
                "sources:\n  - cluster: c\n    url: ftp://a\n",
                "sources[0].url",
            ),
            (
                "sources:\n  - cluster: c\n    url: http://a/metrics\n    tls_ca_file: /x\n",
                "sources[0].tls_ca_file",
            ),
            (
                "sources:\n  - cluster: c\n    url: http://a/metrics\n    timeout: 1m\n",
                "sources[0].timeout",
            ),
            (
                "sources:\n  - cluster: c\n    url: http://a/metrics\n    match: [up]\n",
                "sources[0].match",
            ),
            (
                "sources:\n  - cluster: c\n    url: http://a/metrics\n  - cluster: c\n    url: http://a/metrics\n",
                "sources[1]",
            ),
        ] {
            let e = load(yaml, &[], FlagOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
        let ok = load(
            "sources:\n  - cluster: c\n    url: http://p:9090/federate\n    interval: 15s\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap();
        assert!(ok.sources[0].is_federate());
        assert_eq!(ok.sources[0].matchers().len(), DEFAULT_FEDERATE_MATCH.len());
        assert_eq!(ok.sources[0].display_name(), "p:9090");
    }

    #[test]
    fn otlp_addresses_and_checks() {
        let open = load("", &[], FlagOverrides::default()).unwrap();
        let a = open.otlp_grpc_addr().unwrap().unwrap();
        assert!(a.ip().is_loopback() && a.port() == DEFAULT_OTLP_GRPC_PORT);
        let port_only = load(
            "otlp:\n  grpc_addr: \":5317\"\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(port_only.otlp_grpc_addr().unwrap().unwrap().port(), 5317);
        let off = load(
            "otlp:\n  grpc_addr: \"off\"\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap();
        assert!(off.otlp_grpc_addr().unwrap().is_none());
        for (yaml, key) in [
            ("otlp:\n  grpc_addr: nope\n", "otlp.grpc_addr"),
            ("otlp:\n  http_addr: nope\n", "otlp.http_addr"),
            (
                "otlp:\n  promote_resource_attributes: [\"...\"]\n",
                "otlp.promote_resource_attributes[0]",
            ),
            (
                "otlp:\n  exponential_histograms: native\n",
                "otlp.exponential_histograms",
            ),
            ("otlp:\n  max_delta_streams: 0\n", "otlp.max_delta_streams"),
        ] {
            let e = load(yaml, &[], FlagOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let yaml = "data_dir: /from/file\nstorage:\n  retention: 7d\n";
        let cfg = load(yaml, &[], FlagOverrides::default()).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/from/file"));
        assert_eq!(cfg.storage.retention.0, Duration::from_secs(7 * 86_400));
        assert_eq!(cfg.storage.compaction_min_files, 4, "default kept");
        let cfg = load(
            yaml,
            &[
                ("FLEETGATE__STORAGE__RETENTION", "30d"),
                ("FLEETGATE__DATA_DIR", "/from/env"),
            ],
            FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(cfg.storage.retention.0, Duration::from_secs(30 * 86_400));
        assert_eq!(cfg.data_dir, PathBuf::from("/from/env"));
        let flags = FlagOverrides {
            data_dir: Some("/from/flag".into()),
            http_addr: Some("127.0.0.1:1".into()),
            otlp_grpc_addr: Some("127.0.0.1:2".into()),
            kubecost_clusters: None,
            pg_addr: Some("127.0.0.1:3".into()),
        };
        let cfg = load(yaml, &[("FLEETGATE__DATA_DIR", "/from/env")], flags).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(cfg.listen_addr().unwrap().port(), 1);
        assert_eq!(cfg.pg_addr().unwrap().map(|a| a.port()), Some(3));
        assert_eq!(cfg.otlp_grpc_addr().unwrap().map(|a| a.port()), Some(2));
    }

    #[test]
    fn open_mode_binds_loopback_by_default() {
        let cfg = load("{}", &[], FlagOverrides::default()).unwrap();
        assert!(cfg.open_mode());
        assert!(cfg.listen_addr().unwrap().ip().is_loopback());
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("storage:\n  retention: 5x\n", &[], FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("storage.retention"), "{e}");
        let e = load("stroage: {}\n", &[], FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("stroage"), "{e}");
        let e = load(
            "clusters:\n  - name: a\n    token: x\n  - name: a\n    token: y\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("clusters[1].name"), "{e}");
        let e = load(
            "clusters:\n  - name: a\n    token: x\n  - name: b\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("clusters[1]"), "{e}");
        let e = load(
            "clusters:\n  - name: a\n    token_sha256: abc\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("clusters[0].token_sha256"), "{e}");
        let e = load(
            "clusters:\n  - name: a\n    token: t\n    labels: {cluster: x}\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("clusters[0].labels.cluster"), "{e}");
        let e = load("http_addr: nope\n", &[], FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("http_addr"), "{e}");
        let e = load(
            "storage:\n  retention: 10m\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("storage.retention"), "{e}");
    }

    #[test]
    fn users_are_validated_with_the_key_named() {
        let clusters = "clusters:\n  - name: a\n    token: tok\n";
        let ok = format!(
            "{clusters}users:\n  - name: g\n    password: pw\n    clusters: [\"*\"]\n  - name: t\n    token: tt\n    clusters: [\"eu-*\", a]\n"
        );
        let cfg = load(&ok, &[], FlagOverrides::default()).unwrap();
        assert_eq!(cfg.users.len(), 2);
        assert!(!cfg.open_reads());
        for (users, key) in [
            ("  - name: g\n    clusters: [\"*\"]\n", "users[0]"),
            ("  - name: g\n    password: p\n", "users[0].clusters"),
            (
                "  - name: g\n    password: p\n    password_scram: x\n    clusters: [a]\n",
                "users[0]",
            ),
            (
                "  - name: g\n    password_scram: md5xyz\n    clusters: [a]\n",
                "users[0].password_scram",
            ),
            (
                "  - name: g\n    token: tok\n    clusters: [a]\n",
                "users[0].token",
            ),
            (
                "  - name: g\n    token_sha256: abc\n    clusters: [a]\n",
                "users[0].token_sha256",
            ),
            (
                "  - name: g\n    password: p\n    clusters: [a]\n  - name: g\n    password: q\n    clusters: [a]\n",
                "users[1].name",
            ),
            (
                "  - name: \"a:b\"\n    password: p\n    clusters: [a]\n",
                "users[0].name",
            ),
            (
                "  - name: g\n    password: p\n    clusters: [\"\"]\n",
                "users[0].clusters",
            ),
        ] {
            let e = load(
                &format!("{clusters}users:\n{users}"),
                &[],
                FlagOverrides::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        // users without any cluster token: writes stay open (loopback), reads need credentials
        let cfg = load(
            "users:\n  - name: g\n    password: p\n    clusters: [\"*\"]\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap();
        assert!(cfg.open_mode() && !cfg.open_reads());
        assert!(cfg.listen_addr().unwrap().ip().is_loopback());
        let e = load(
            "http:\n  tls_cert_file: /x\n",
            &[],
            FlagOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("http.tls_key_file"), "{e}");
        let e = load("query:\n  threads: 0\n", &[], FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("query.threads"), "{e}");
    }

    #[test]
    fn durations_round_trip() {
        for s in ["500ms", "15s", "10m", "1h30m", "15d"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("x").is_err());
    }
}
