//! What cost is made of: an allocation (one container over a window, or a sum of them) and the
//! assets it runs on (nodes, disks, load balancers, cluster management), with OpenCost's derived
//! figures (averages, efficiency, total) computed from the summed quantities.

use std::collections::BTreeMap;

use super::window::Window;

/// Which allocation this is: OpenCost's `properties`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// Cluster name (from authentication, like every series).
    pub cluster: String,
    /// Node the pod ran on.
    pub node: String,
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// `deployment`, `statefulset`, `daemonset`, `job`, `cronjob`, `replicaset`, `rollout`, or empty.
    pub controller_kind: String,
    /// The controller's name.
    pub controller: String,
    /// Services that select the pod.
    pub services: Vec<String>,
    /// The node's provider id.
    pub provider_id: String,
    /// Pod labels (names as kube-state-metrics writes them, `label_` dropped).
    pub labels: BTreeMap<String, String>,
    /// Pod annotations (`annotation_` dropped).
    pub annotations: BTreeMap<String, String>,
    /// Namespace labels.
    pub namespace_labels: BTreeMap<String, String>,
    /// Namespace annotations.
    pub namespace_annotations: BTreeMap<String, String>,
}

impl Properties {
    /// What `self` and `other` have in common (OpenCost keeps a property on an aggregate only
    /// when every member has the same value).
    pub fn intersect(&mut self, other: &Properties) {
        fn s(a: &mut String, b: &str) {
            if a != b {
                a.clear();
            }
        }
        fn m(a: &mut BTreeMap<String, String>, b: &BTreeMap<String, String>) {
            a.retain(|k, v| b.get(k) == Some(v));
        }
        s(&mut self.cluster, &other.cluster);
        s(&mut self.node, &other.node);
        s(&mut self.namespace, &other.namespace);
        s(&mut self.pod, &other.pod);
        s(&mut self.container, &other.container);
        s(&mut self.controller_kind, &other.controller_kind);
        s(&mut self.controller, &other.controller);
        s(&mut self.provider_id, &other.provider_id);
        self.services.retain(|x| other.services.contains(x));
        m(&mut self.labels, &other.labels);
        m(&mut self.annotations, &other.annotations);
        m(&mut self.namespace_labels, &other.namespace_labels);
        m(
            &mut self.namespace_annotations,
            &other.namespace_annotations,
        );
    }
}

/// A persistent volume's part in an allocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PvPart {
    /// GiB-free byte-hours charged.
    pub byte_hours: f64,
    /// Its cost.
    pub cost: f64,
    /// The volume's provider id.
    pub provider_id: String,
}

/// One allocation: a container over a window, or the sum of several.
///
/// Quantities are stored as hour-integrals (core-hours, byte-hours) so that sums are exact;
/// averages are derived over the allocation's span, as OpenCost derives them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allocation {
    /// Name: `cluster/node/namespace/pod/container`, or the aggregate key.
    pub name: String,
    /// What it is.
    pub properties: Properties,
    /// The window asked for.
    pub window: Window,
    /// First instant it ran (ms).
    pub start_ms: i64,
    /// Last instant it ran (ms).
    pub end_ms: i64,
    /// Minutes it ran (for one container: counted from `kube_pod_container_status_running`).
    pub minutes: f64,
    /// Requested core-hours.
    pub cpu_request_hours: f64,
    /// Used core-hours.
    pub cpu_usage_hours: f64,
    /// Core-hours of the limit.
    pub cpu_limit_hours: f64,
    /// Charged core-hours: max(request, usage) × hours.
    pub cpu_core_hours: f64,
    /// CPU cost.
    pub cpu_cost: f64,
    /// CPU idle cost shared into this allocation.
    pub cpu_cost_idle: f64,
    /// Peak core usage (one container only).
    pub cpu_usage_max: Option<f64>,
    /// Requested byte-hours.
    pub ram_request_byte_hours: f64,
    /// Used byte-hours.
    pub ram_usage_byte_hours: f64,
    /// Byte-hours of the limit.
    pub ram_limit_byte_hours: f64,
    /// Charged byte-hours.
    pub ram_byte_hours: f64,
    /// RAM cost.
    pub ram_cost: f64,
    /// RAM idle cost shared in.
    pub ram_cost_idle: f64,
    /// Peak working set (one container only).
    pub ram_usage_max: Option<f64>,
    /// Requested GPU-hours (= charged GPU-hours).
    pub gpu_hours: f64,
    /// GPU-hours of use (DCGM), when known.
    pub gpu_usage_hours: f64,
    /// GPU cost.
    pub gpu_cost: f64,
    /// GPU idle cost shared in.
    pub gpu_cost_idle: f64,
    /// Persistent-volume byte-hours.
    pub pv_byte_hours: f64,
    /// Persistent-volume cost.
    pub pv_cost: f64,
    /// Per volume (`cluster=<c>:name=<pv>`).
    pub pvs: BTreeMap<String, PvPart>,
    /// Bytes sent.
    pub network_transfer_bytes: f64,
    /// Bytes received.
    pub network_receive_bytes: f64,
    /// Egress to another zone.
    pub network_cross_zone_cost: f64,
    /// Egress to another region.
    pub network_cross_region_cost: f64,
    /// Egress to the internet.
    pub network_internet_cost: f64,
    /// Load-balancer cost.
    pub lb_cost: f64,
    /// Shared cost spread into this allocation (shared namespaces or labels, overhead).
    pub shared_cost: f64,
    /// Cost from outside the cluster (none today; kept for the shape).
    pub external_cost: f64,
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}

/// An allocation that is idle capacity (`…/__idle__`).
pub const IDLE: &str = "__idle__";
/// An allocation of shared cost that was not spread (`__shared__`).
pub const SHARED: &str = "__shared__";
/// Cost with no pod to charge (a volume no running pod mounted, a load balancer with no pods).
pub const UNMOUNTED: &str = "__unmounted__";
/// The value of an aggregation key the allocation does not have.
pub const UNALLOCATED: &str = "__unallocated__";

impl Allocation {
    /// Hours of the span the averages are taken over: the running minutes for one container;
    /// for a sum, OpenCost's `end − start`.
    pub fn hours(&self) -> f64 {
        self.minutes / 60.0
    }

    /// Whether this is an idle allocation.
    pub fn is_idle(&self) -> bool {
        self.name.ends_with(IDLE)
    }

    /// Whether this is unmounted cost.
    pub fn is_unmounted(&self) -> bool {
        self.name.ends_with(UNMOUNTED)
    }

    /// Average requested cores.
    pub fn cpu_request_average(&self) -> f64 {
        ratio(self.cpu_request_hours, self.hours())
    }
    /// Average core limit.
    pub fn cpu_limit_average(&self) -> f64 {
        ratio(self.cpu_limit_hours, self.hours())
    }
    /// Average RAM limit.
    pub fn ram_limit_average(&self) -> f64 {
        ratio(self.ram_limit_byte_hours, self.hours())
    }
    /// Average used cores.
    pub fn cpu_usage_average(&self) -> f64 {
        ratio(self.cpu_usage_hours, self.hours())
    }
    /// Average charged cores.
    pub fn cpu_cores(&self) -> f64 {
        ratio(self.cpu_core_hours, self.hours())
    }
    /// Average requested bytes.
    pub fn ram_request_average(&self) -> f64 {
        ratio(self.ram_request_byte_hours, self.hours())
    }
    /// Average used bytes.
    pub fn ram_usage_average(&self) -> f64 {
        ratio(self.ram_usage_byte_hours, self.hours())
    }
    /// Average charged bytes.
    pub fn ram_bytes(&self) -> f64 {
        ratio(self.ram_byte_hours, self.hours())
    }
    /// Average GPUs.
    pub fn gpu_count(&self) -> f64 {
        ratio(self.gpu_hours, self.hours())
    }
    /// Average PV bytes.
    pub fn pv_bytes(&self) -> f64 {
        ratio(self.pv_byte_hours, self.hours())
    }
    /// All network cost.
    pub fn network_cost(&self) -> f64 {
        self.network_cross_zone_cost + self.network_cross_region_cost + self.network_internet_cost
    }
    /// CPU cost including shared-in idle.
    pub fn cpu_total_cost(&self) -> f64 {
        self.cpu_cost + self.cpu_cost_idle
    }
    /// RAM cost including shared-in idle.
    pub fn ram_total_cost(&self) -> f64 {
        self.ram_cost + self.ram_cost_idle
    }
    /// GPU cost including shared-in idle.
    pub fn gpu_total_cost(&self) -> f64 {
        self.gpu_cost + self.gpu_cost_idle
    }

    /// OpenCost's `TotalCost`: every resource (with idle shared in), PV, network, load
    /// balancer, shared and external cost.
    pub fn total_cost(&self) -> f64 {
        self.cpu_total_cost()
            + self.ram_total_cost()
            + self.gpu_total_cost()
            + self.pv_cost
            + self.network_cost()
            + self.lb_cost
            + self.shared_cost
            + self.external_cost
    }

    /// Usage / request; 1 with usage but no request; 0 otherwise.
    fn efficiency(usage: f64, request: f64, cost: f64) -> f64 {
        if request > 0.0 {
            usage / request
        } else if usage > 0.0 && cost > 0.0 {
            1.0
        } else {
            0.0
        }
    }

    /// CPU usage / request.
    pub fn cpu_efficiency(&self) -> f64 {
        Self::efficiency(
            self.cpu_usage_hours,
            self.cpu_request_hours,
            self.cpu_total_cost(),
        )
    }

    /// RAM usage / request.
    pub fn ram_efficiency(&self) -> f64 {
        Self::efficiency(
            self.ram_usage_byte_hours,
            self.ram_request_byte_hours,
            self.ram_total_cost(),
        )
    }

    /// GPU usage / request.
    pub fn gpu_efficiency(&self) -> f64 {
        Self::efficiency(self.gpu_usage_hours, self.gpu_hours, self.gpu_total_cost())
    }

    /// CPU and RAM efficiency weighted by their cost (GPU left out, as OpenCost does).
    pub fn total_efficiency(&self) -> f64 {
        let (c, r) = (self.cpu_total_cost(), self.ram_total_cost());
        ratio(self.cpu_efficiency() * c + self.ram_efficiency() * r, c + r)
    }

    /// Adds `o` into `self` (OpenCost's `Add`): quantities and costs sum, the span widens and
    /// the minutes become the span's, properties keep what both share, peaks are dropped.
    pub fn add(&mut self, o: &Allocation) {
        if self.start_ms == 0 && self.end_ms == 0 {
            self.start_ms = o.start_ms;
            self.end_ms = o.end_ms;
        } else {
            self.start_ms = self.start_ms.min(o.start_ms);
            self.end_ms = self.end_ms.max(o.end_ms);
        }
        self.minutes = (self.end_ms - self.start_ms) as f64 / 60_000.0;
        self.properties.intersect(&o.properties);
        self.window = Window {
            start_ms: self.window.start_ms.min(o.window.start_ms),
            end_ms: self.window.end_ms.max(o.window.end_ms),
        };
        self.cpu_request_hours += o.cpu_request_hours;
        self.cpu_usage_hours += o.cpu_usage_hours;
        self.cpu_limit_hours += o.cpu_limit_hours;
        self.cpu_core_hours += o.cpu_core_hours;
        self.cpu_cost += o.cpu_cost;
        self.cpu_cost_idle += o.cpu_cost_idle;
        self.cpu_usage_max = None;
        self.ram_request_byte_hours += o.ram_request_byte_hours;
        self.ram_usage_byte_hours += o.ram_usage_byte_hours;
        self.ram_limit_byte_hours += o.ram_limit_byte_hours;
        self.ram_byte_hours += o.ram_byte_hours;
        self.ram_cost += o.ram_cost;
        self.ram_cost_idle += o.ram_cost_idle;
        self.ram_usage_max = None;
        self.gpu_hours += o.gpu_hours;
        self.gpu_usage_hours += o.gpu_usage_hours;
        self.gpu_cost += o.gpu_cost;
        self.gpu_cost_idle += o.gpu_cost_idle;
        self.pv_byte_hours += o.pv_byte_hours;
        self.pv_cost += o.pv_cost;
        for (k, v) in &o.pvs {
            let e = self.pvs.entry(k.clone()).or_default();
            e.byte_hours += v.byte_hours;
            e.cost += v.cost;
            if e.provider_id.is_empty() {
                e.provider_id.clone_from(&v.provider_id);
            }
        }
        self.network_transfer_bytes += o.network_transfer_bytes;
        self.network_receive_bytes += o.network_receive_bytes;
        self.network_cross_zone_cost += o.network_cross_zone_cost;
        self.network_cross_region_cost += o.network_cross_region_cost;
        self.network_internet_cost += o.network_internet_cost;
        self.lb_cost += o.lb_cost;
        self.shared_cost += o.shared_cost;
        self.external_cost += o.external_cost;
    }

    /// Multiplies every cost and quantity by `f` (used to take a filtered share of idle).
    pub fn scale(&mut self, f: f64) {
        for x in [
            &mut self.cpu_request_hours,
            &mut self.cpu_usage_hours,
            &mut self.cpu_limit_hours,
            &mut self.cpu_core_hours,
            &mut self.cpu_cost,
            &mut self.cpu_cost_idle,
            &mut self.ram_request_byte_hours,
            &mut self.ram_usage_byte_hours,
            &mut self.ram_limit_byte_hours,
            &mut self.ram_byte_hours,
            &mut self.ram_cost,
            &mut self.ram_cost_idle,
            &mut self.gpu_hours,
            &mut self.gpu_usage_hours,
            &mut self.gpu_cost,
            &mut self.gpu_cost_idle,
            &mut self.pv_byte_hours,
            &mut self.pv_cost,
            &mut self.network_transfer_bytes,
            &mut self.network_receive_bytes,
            &mut self.network_cross_zone_cost,
            &mut self.network_cross_region_cost,
            &mut self.network_internet_cost,
            &mut self.lb_cost,
            &mut self.shared_cost,
            &mut self.external_cost,
        ] {
            *x *= f;
        }
    }
}

/// A node's cost over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeAsset {
    /// Cluster.
    pub cluster: String,
    /// Node name.
    pub node: String,
    /// `node.kubernetes.io/instance-type`.
    pub instance_type: String,
    /// Region label.
    pub region: String,
    /// Zone label.
    pub zone: String,
    /// Provider id.
    pub provider_id: String,
    /// Node labels (sanitized, `label_` dropped).
    pub labels: BTreeMap<String, String>,
    /// Spot capacity.
    pub preemptible: bool,
    /// Where the prices came from (`series` or `config`).
    pub price_source: &'static str,
    /// The window asked for.
    pub window: Window,
    /// First instant it was up.
    pub start_ms: i64,
    /// Last instant it was up.
    pub end_ms: i64,
    /// Minutes up.
    pub minutes: f64,
    /// Cores (capacity, else allocatable).
    pub cpu_cores: f64,
    /// RAM bytes.
    pub ram_bytes: f64,
    /// GPUs.
    pub gpu_count: f64,
    /// $ per core-hour charged (discount applied).
    pub cpu_price: f64,
    /// $ per GiB-hour charged (discount applied).
    pub ram_price: f64,
    /// $ per GPU-hour.
    pub gpu_price: f64,
    /// The discount applied.
    pub discount: f64,
    /// CPU cost.
    pub cpu_cost: f64,
    /// RAM cost.
    pub ram_cost: f64,
    /// GPU cost.
    pub gpu_cost: f64,
}

impl NodeAsset {
    /// CPU + RAM + GPU.
    pub fn total_cost(&self) -> f64 {
        self.cpu_cost + self.ram_cost + self.gpu_cost
    }
}

/// A persistent volume's cost over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskAsset {
    /// Cluster.
    pub cluster: String,
    /// PersistentVolume name.
    pub name: String,
    /// Claim bound to it.
    pub claim: String,
    /// The claim's namespace.
    pub claim_namespace: String,
    /// Storage class.
    pub storage_class: String,
    /// Provider id.
    pub provider_id: String,
    /// The window asked for.
    pub window: Window,
    /// Minutes present.
    pub minutes: f64,
    /// Average bytes.
    pub bytes: f64,
    /// Byte-hours.
    pub byte_hours: f64,
    /// $ per GiB-hour.
    pub price: f64,
    /// Cost.
    pub cost: f64,
}

/// A load balancer's cost over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadBalancerAsset {
    /// Cluster.
    pub cluster: String,
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Ingress address.
    pub ip: String,
    /// The window asked for.
    pub window: Window,
    /// Minutes with an ingress address.
    pub minutes: f64,
    /// $ per hour.
    pub price: f64,
    /// Cost.
    pub cost: f64,
}

/// A cluster's control-plane fee over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManagementAsset {
    /// Cluster.
    pub cluster: String,
    /// The window asked for.
    pub window: Window,
    /// Minutes any node of the cluster was up.
    pub minutes: f64,
    /// $ per hour.
    pub price: f64,
    /// Cost.
    pub cost: f64,
}

/// Everything cost is computed from, for one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostSet {
    /// The window.
    pub window: Window,
    /// One per container that ran, plus `__unmounted__` per cluster when some cost had no pod.
    pub allocations: Vec<Allocation>,
    /// Nodes.
    pub nodes: Vec<NodeAsset>,
    /// Volumes.
    pub disks: Vec<DiskAsset>,
    /// Load balancers.
    pub load_balancers: Vec<LoadBalancerAsset>,
    /// Control planes.
    pub management: Vec<ManagementAsset>,
}
