//! The cost of one window computed from the samples, through the PromQL engine and the reader's
//! scoped view: which containers ran and for how long, what they requested and used, the prices
//! of the nodes they ran on, and the volumes, load balancers and egress they are charged for.
//!
//! Running time is counted on a grid of `resolution` steps: step `k` stands for the slice
//! `(start + (k−1)·res, start + k·res]` and is charged when `kube_pod_container_status_running`
//! is non-zero at its end (Prometheus's lookback applies, staleness markers end a container at
//! once). Quantities are averages over the window's range (`avg_over_time`, `increase`):
//! CPU used = core-seconds from `container_cpu_usage_seconds_total` ÷ seconds running; charged
//! cores = max(average request, average usage) × hours running (OpenCost's rule), RAM likewise,
//! GPUs = requests. A volume's cost in a step is split evenly between the running pods that mount
//! its claim in that step; a load balancer's between its service's running pods; a pod's share
//! evenly between its containers. Cost with no pod to carry it is charged to the cluster's
//! `__unmounted__` allocation, so nothing is lost.

use std::collections::{BTreeMap, HashMap};

use fleetgate_store::Labels;

use super::allocation::{
    Allocation, CostSet, DiskAsset, LoadBalancerAsset, ManagementAsset, NodeAsset, Properties,
    UNMOUNTED,
};
use super::pricing::{NodeFacts, NodePrices, Pricing};
use super::window::Window;
use crate::error::Result;
use crate::promql::{Engine, SeriesSource, Value};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const HOUR_MS: f64 = 3_600_000.0;

/// A container: (cluster, namespace, pod, container).
type CKey = (String, String, String, String);
/// A pod: (cluster, namespace, pod).
type PKey = (String, String, String);
/// A node: (cluster, node).
type NKey = (String, String);
/// Adds a share of a cost to an allocation.
type Apply = Box<dyn Fn(&mut Allocation, f64)>;
/// A load balancer: its address, presence, and its own price if it has one.
type LbEntry = (String, Steps, Option<f64>);

fn l<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels.get(name).unwrap_or("")
}

fn ckey(labels: &Labels) -> CKey {
    (
        l(labels, "cluster").into(),
        l(labels, "namespace").into(),
        l(labels, "pod").into(),
        l(labels, "container").into(),
    )
}

fn pkey(labels: &Labels, pod_label: &str) -> PKey {
    (
        l(labels, "cluster").into(),
        l(labels, "namespace").into(),
        l(labels, pod_label).into(),
    )
}

fn nkey(labels: &Labels) -> NKey {
    (l(labels, "cluster").into(), l(labels, "node").into())
}

/// Labels with `prefix` (`label_`, `annotation_`), the prefix dropped.
fn prefixed(labels: &Labels, prefix: &str) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter_map(|x| {
            x.name
                .strip_prefix(prefix)
                .map(|n| (n.to_string(), x.value.to_string()))
        })
        .collect()
}

/// The presence grid of one series over the window.
#[derive(Debug, Clone)]
struct Steps(Vec<bool>);

impl Steps {
    fn any(&self) -> bool {
        self.0.iter().any(|b| *b)
    }
    fn or(&mut self, o: &Steps) {
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a |= *b;
        }
    }
}

/// The queries of one window.
struct Fetch<'a, S> {
    engine: &'a Engine,
    src: &'a S,
    w: Window,
    res: i64,
    n: usize,
    range: String,
}

impl<S: SeriesSource + Sync> Fetch<'_, S> {
    /// Length of step `k`'s slice (ms).
    fn slice_ms(&self, k: usize) -> i64 {
        let s = self.w.start_ms + k as i64 * self.res;
        (s + self.res).min(self.w.end_ms) - s
    }

    fn slice_hours(&self, k: usize) -> f64 {
        self.slice_ms(k) as f64 / HOUR_MS
    }

    fn minutes(&self, s: &Steps) -> f64 {
        s.0.iter()
            .enumerate()
            .filter(|(_, p)| **p)
            .map(|(k, _)| self.slice_ms(k) as f64 / 60_000.0)
            .sum()
    }

    /// First and last instant of the present slices.
    fn span(&self, s: &Steps) -> (i64, i64) {
        let first = s.0.iter().position(|p| *p).unwrap_or(0);
        let last = s.0.iter().rposition(|p| *p).unwrap_or(0);
        let a = self.w.start_ms + first as i64 * self.res;
        let b = (self.w.start_ms + (last as i64 + 1) * self.res).min(self.w.end_ms);
        (a, b)
    }

    /// `q` (with `{D}` replaced by the window's range) at the window's last instant.
    async fn vector(&self, q: &str) -> Result<Vec<(Labels, f64)>> {
        let q = q
            .replace("{D}", &self.range)
            .replace("{R}", &format!("{}ms", self.res));
        match self.engine.instant(self.src, &q, self.w.end_ms - 1).await? {
            Value::Vector(v) => Ok(v
                .into_iter()
                .filter(|s| s.value.is_finite())
                .map(|s| (s.labels, s.value))
                .collect()),
            _ => Ok(Vec::new()),
        }
    }

    /// Presence of each series of `q` on the step grid.
    async fn steps(&self, q: &str) -> Result<Vec<(Labels, Steps)>> {
        if self.n == 0 {
            return Ok(Vec::new());
        }
        let first = self.w.start_ms + self.res - 1;
        let last = self.w.start_ms + self.n as i64 * self.res - 1;
        let v = self
            .engine
            .range(self.src, q, first, last, self.res)
            .await?;
        let Value::Matrix(m) = v else {
            return Ok(Vec::new());
        };
        Ok(m.into_iter()
            .map(|s| {
                let mut st = Steps(vec![false; self.n]);
                for (t, v) in s.points {
                    let k = ((t - first) / self.res) as usize;
                    if k < self.n && v.is_finite() {
                        st.0[k] = true;
                    }
                }
                (s.labels, st)
            })
            .collect())
    }
}

/// Sums of one number per key.
fn by<K: std::hash::Hash + Eq>(
    v: Vec<(Labels, f64)>,
    key: impl Fn(&Labels) -> K,
) -> HashMap<K, f64> {
    let mut out = HashMap::new();
    for (labels, x) in v {
        *out.entry(key(&labels)).or_insert(0.0) += x;
    }
    out
}

/// Computes the cost of window `w` from the samples `src` can see.
pub async fn compute<S: SeriesSource + Sync>(
    engine: &Engine,
    src: &S,
    pricing: &Pricing,
    w: Window,
    resolution_ms: i64,
) -> Result<CostSet> {
    let res = resolution_ms.max(1_000);
    let len = w.len_ms().max(0);
    let n = (len + res - 1) / res;
    let f = Fetch {
        engine,
        src,
        w,
        res,
        n: n as usize,
        range: format!("{}ms", len.max(1)),
    };
    let mut set = CostSet {
        window: w,
        ..CostSet::default()
    };
    if len == 0 {
        return Ok(set);
    }

    // --- nodes -------------------------------------------------------------------------------
    let node_steps = f
        .steps(r#"max by (cluster, node) (kube_node_status_capacity{resource="cpu"}) or max by (cluster, node) (kube_node_status_allocatable{resource="cpu"})"#)
        .await?;
    let node_res = |r: &str| {
        format!(
            r#"max by (cluster, node) (avg_over_time(kube_node_status_capacity{{resource=~"{r}"}}[{{D}}])) or max by (cluster, node) (avg_over_time(kube_node_status_allocatable{{resource=~"{r}"}}[{{D}}]))"#
        )
    };
    let cores = by(f.vector(&node_res("cpu")).await?, nkey);
    let ram = by(f.vector(&node_res("memory")).await?, nkey);
    let gpus = by(
        f.vector(&node_res("nvidia_com_gpu|amd_com_gpu")).await?,
        nkey,
    );
    let avg_node = |m: &str| format!("avg by (cluster, node) (avg_over_time({m}[{{D}}]))");
    let cpu_hourly = by(f.vector(&avg_node("node_cpu_hourly_cost")).await?, nkey);
    let ram_hourly = by(f.vector(&avg_node("node_ram_hourly_cost")).await?, nkey);
    let gpu_hourly = by(f.vector(&avg_node("node_gpu_hourly_cost")).await?, nkey);
    let total_hourly = by(f.vector(&avg_node("node_total_hourly_cost")).await?, nkey);
    let is_spot = by(f.vector(&avg_node("kubecost_node_is_spot")).await?, nkey);
    let mut node_labels: HashMap<NKey, BTreeMap<String, String>> = HashMap::new();
    for (labels, _) in f.vector("last_over_time(kube_node_labels[{D}])").await? {
        node_labels
            .entry(nkey(&labels))
            .or_default()
            .extend(prefixed(&labels, "label_"));
    }
    let mut node_provider: HashMap<NKey, String> = HashMap::new();
    for (labels, _) in f
        .vector(r#"last_over_time(kube_node_info{provider_id!=""}[{D}])"#)
        .await?
    {
        node_provider.insert(nkey(&labels), l(&labels, "provider_id").into());
    }
    let mut node_prices: HashMap<NKey, NodePrices> = HashMap::new();
    let mut cluster_steps: HashMap<String, Steps> = HashMap::new();
    for (labels, steps) in &node_steps {
        let k = nkey(labels);
        let get = |m: &HashMap<NKey, f64>| m.get(&k).copied();
        let lab = node_labels.get(&k).cloned().unwrap_or_default();
        let facts = NodeFacts {
            labels: lab.clone(),
            is_spot: get(&is_spot).map(|v| v >= 0.5),
            cpu_hourly: get(&cpu_hourly),
            ram_hourly: get(&ram_hourly),
            gpu_hourly: get(&gpu_hourly),
            total_hourly: get(&total_hourly),
            cores: get(&cores).unwrap_or(0.0),
            ram_gib: get(&ram).unwrap_or(0.0) / GIB,
            gpus: get(&gpus).unwrap_or(0.0),
        };
        let p = pricing.cluster(&k.0).node_prices(&facts);
        node_prices.insert(k.clone(), p);
        cluster_steps
            .entry(k.0.clone())
            .and_modify(|s| s.or(steps))
            .or_insert_with(|| steps.clone());
        let minutes = f.minutes(steps);
        let hours = minutes / 60.0;
        let (start_ms, end_ms) = f.span(steps);
        set.nodes.push(NodeAsset {
            cluster: k.0.clone(),
            node: k.1.clone(),
            instance_type: lab
                .get("node_kubernetes_io_instance_type")
                .or_else(|| lab.get("beta_kubernetes_io_instance_type"))
                .cloned()
                .unwrap_or_default(),
            region: lab
                .get("topology_kubernetes_io_region")
                .cloned()
                .unwrap_or_default(),
            zone: lab
                .get("topology_kubernetes_io_zone")
                .cloned()
                .unwrap_or_default(),
            provider_id: node_provider.get(&k).cloned().unwrap_or_default(),
            labels: lab,
            preemptible: p.spot,
            price_source: p.source,
            window: w,
            start_ms,
            end_ms,
            minutes,
            cpu_cores: facts.cores,
            ram_bytes: facts.ram_gib * GIB,
            gpu_count: facts.gpus,
            cpu_price: p.cpu,
            ram_price: p.ram,
            gpu_price: p.gpu,
            discount: p.discount,
            cpu_cost: facts.cores * hours * p.cpu,
            ram_cost: facts.ram_gib * hours * p.ram,
            gpu_cost: facts.gpus * hours * p.gpu,
        });
    }
    for (cluster, steps) in &cluster_steps {
        let price = pricing.cluster(cluster).base().cluster_management;
        if price > 0.0 {
            let minutes = f.minutes(steps);
            set.management.push(ManagementAsset {
                cluster: cluster.clone(),
                window: w,
                minutes,
                price,
                cost: price * minutes / 60.0,
            });
        }
    }

    // --- containers --------------------------------------------------------------------------
    let running: HashMap<CKey, Steps> = f
        .steps(r#"max by (cluster, namespace, pod, container) (kube_pod_container_status_running{container!="", container!="POD"} != 0)"#)
        .await?
        .into_iter()
        .filter(|(_, s)| s.any())
        .map(|(labels, s)| (ckey(&labels), s))
        .collect();
    let mut pod_steps: HashMap<PKey, Steps> = HashMap::new();
    let mut pod_containers: HashMap<PKey, Vec<CKey>> = HashMap::new();
    for (k, s) in &running {
        let p = (k.0.clone(), k.1.clone(), k.2.clone());
        pod_steps
            .entry(p.clone())
            .and_modify(|x| x.or(s))
            .or_insert_with(|| s.clone());
        pod_containers.entry(p).or_default().push(k.clone());
    }
    for v in pod_containers.values_mut() {
        v.sort();
    }
    let req = |r: &str| {
        format!(
            r#"avg by (cluster, namespace, pod, container) (avg_over_time(kube_pod_container_resource_requests{{resource=~"{r}", container!="", container!="POD"}}[{{D}}]))"#
        )
    };
    let cpu_req = by(f.vector(&req("cpu")).await?, ckey);
    let ram_req = by(f.vector(&req("memory")).await?, ckey);
    let gpu_req = by(f.vector(&req("nvidia_com_gpu|amd_com_gpu")).await?, ckey);
    let lim = |r: &str| req(r).replace("resource_requests", "resource_limits");
    let cpu_lim = by(f.vector(&lim("cpu")).await?, ckey);
    let ram_lim = by(f.vector(&lim("memory")).await?, ckey);
    let cpu_used = by(
        f.vector(r#"sum by (cluster, namespace, pod, container) (increase(container_cpu_usage_seconds_total{container!="", container!="POD"}[{D}]))"#)
            .await?,
        ckey,
    );
    let cpu_max = by(
        f.vector(r#"max by (cluster, namespace, pod, container) (max_over_time(irate(container_cpu_usage_seconds_total{container!="", container!="POD"}[5m])[{D}:{R}]))"#)
            .await?,
        ckey,
    );
    let ram_used = by(
        f.vector(r#"avg by (cluster, namespace, pod, container) (avg_over_time(container_memory_working_set_bytes{container!="", container!="POD"}[{D}]))"#)
            .await?,
        ckey,
    );
    let ram_max = by(
        f.vector(r#"max by (cluster, namespace, pod, container) (max_over_time(container_memory_working_set_bytes{container!="", container!="POD"}[{D}]))"#)
            .await?,
        ckey,
    );
    let gpu_used = by(
        f.vector(r#"avg by (cluster, namespace, pod, container) (avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE{container!=""}[{D}]))"#)
            .await?,
        ckey,
    );

    // where each pod ran, its address, labels, owner
    let mut pod_node: HashMap<PKey, String> = HashMap::new();
    let mut pod_ip: HashMap<(String, String, String), PKey> = HashMap::new();
    for (labels, _) in f
        .vector(r#"last_over_time(kube_pod_container_resource_requests{node!=""}[{D}])"#)
        .await?
    {
        pod_node.insert(pkey(&labels, "pod"), l(&labels, "node").into());
    }
    for (labels, _) in f.vector("last_over_time(kube_pod_info[{D}])").await? {
        let p = pkey(&labels, "pod");
        let node = l(&labels, "node");
        if !node.is_empty() {
            pod_node.insert(p.clone(), node.into());
        }
        let ip = l(&labels, "pod_ip");
        if !ip.is_empty() {
            pod_ip.insert((p.0.clone(), p.1.clone(), ip.into()), p);
        }
    }
    let mut pod_labels: HashMap<PKey, BTreeMap<String, String>> = HashMap::new();
    for (labels, _) in f.vector("last_over_time(kube_pod_labels[{D}])").await? {
        pod_labels
            .entry(pkey(&labels, "pod"))
            .or_default()
            .extend(prefixed(&labels, "label_"));
    }
    let mut pod_annotations: HashMap<PKey, BTreeMap<String, String>> = HashMap::new();
    for (labels, _) in f
        .vector("last_over_time(kube_pod_annotations[{D}])")
        .await?
    {
        pod_annotations
            .entry(pkey(&labels, "pod"))
            .or_default()
            .extend(prefixed(&labels, "annotation_"));
    }
    let ns_key = |labels: &Labels| -> (String, String) {
        (l(labels, "cluster").into(), l(labels, "namespace").into())
    };
    let mut ns_labels: HashMap<(String, String), BTreeMap<String, String>> = HashMap::new();
    for (labels, _) in f
        .vector("last_over_time(kube_namespace_labels[{D}])")
        .await?
    {
        ns_labels
            .entry(ns_key(&labels))
            .or_default()
            .extend(prefixed(&labels, "label_"));
    }
    let mut ns_annotations: HashMap<(String, String), BTreeMap<String, String>> = HashMap::new();
    for (labels, _) in f
        .vector("last_over_time(kube_namespace_annotations[{D}])")
        .await?
    {
        ns_annotations
            .entry(ns_key(&labels))
            .or_default()
            .extend(prefixed(&labels, "annotation_"));
    }
    let owner_of = |labels: &Labels, name: &str| -> ((String, String, String), (String, String)) {
        (
            (
                l(labels, "cluster").into(),
                l(labels, "namespace").into(),
                l(labels, name).into(),
            ),
            (
                l(labels, "owner_kind").into(),
                l(labels, "owner_name").into(),
            ),
        )
    };
    let mut rs_owner = HashMap::new();
    for (labels, _) in f
        .vector("last_over_time(kube_replicaset_owner[{D}])")
        .await?
    {
        let (k, v) = owner_of(&labels, "replicaset");
        rs_owner.insert(k, v);
    }
    let mut job_owner = HashMap::new();
    for (labels, _) in f.vector("last_over_time(kube_job_owner[{D}])").await? {
        let (k, v) = owner_of(&labels, "job_name");
        job_owner.insert(k, v);
    }
    let mut pod_owner: HashMap<PKey, (String, String)> = HashMap::new();
    for (labels, _) in f.vector("last_over_time(kube_pod_owner[{D}])").await? {
        let (k, (kind, name)) = owner_of(&labels, "pod");
        if kind.is_empty() || kind == "<none>" {
            continue;
        }
        let controller = l(&labels, "owner_is_controller") != "false";
        if controller || !pod_owner.contains_key(&k) {
            pod_owner.insert(k, (kind, name));
        }
    }
    // services: endpoints by address, and OpenCost's selector series
    let mut pod_services: HashMap<PKey, Vec<String>> = HashMap::new();
    for (labels, _) in f
        .vector("last_over_time(kube_endpoint_address[{D}])")
        .await?
    {
        let k = (
            l(&labels, "cluster").to_string(),
            l(&labels, "namespace").to_string(),
            l(&labels, "ip").to_string(),
        );
        if let Some(p) = pod_ip.get(&k) {
            pod_services
                .entry(p.clone())
                .or_default()
                .push(l(&labels, "endpoint").into());
        }
    }
    let selectors = f
        .vector("last_over_time(service_selector_labels[{D}])")
        .await?;
    if !selectors.is_empty() {
        for (labels, _) in selectors {
            let sel = prefixed(&labels, "label_");
            if sel.is_empty() {
                continue;
            }
            let (c, ns, svc) = (
                l(&labels, "cluster"),
                l(&labels, "namespace"),
                l(&labels, "service"),
            );
            for (p, pl) in &pod_labels {
                if p.0 == c && p.1 == ns && sel.iter().all(|(k, v)| pl.get(k) == Some(v)) {
                    pod_services.entry(p.clone()).or_default().push(svc.into());
                }
            }
        }
    }
    for v in pod_services.values_mut() {
        v.sort();
        v.dedup();
    }

    let mut allocs: HashMap<CKey, Allocation> = HashMap::new();
    for (k, steps) in &running {
        let p = (k.0.clone(), k.1.clone(), k.2.clone());
        let minutes = f.minutes(steps);
        let hours = minutes / 60.0;
        let (start_ms, end_ms) = f.span(steps);
        let node = pod_node.get(&p).cloned().unwrap_or_default();
        let nk = (k.0.clone(), node.clone());
        let prices = node_prices
            .get(&nk)
            .copied()
            .unwrap_or_else(|| pricing.cluster(&k.0).node_prices(&NodeFacts::default()));
        let g = |m: &HashMap<CKey, f64>| m.get(k).copied().unwrap_or(0.0).max(0.0);
        let (creq, rreq, greq) = (g(&cpu_req), g(&ram_req), g(&gpu_req));
        let cuse = if minutes > 0.0 {
            g(&cpu_used) / (minutes * 60.0)
        } else {
            0.0
        };
        let ruse = g(&ram_used);
        let cpu_cores = creq.max(cuse);
        let ram_bytes = rreq.max(ruse);
        let (kind, controller) = controller_of(&p, &pod_owner, &rs_owner, &job_owner);
        let properties = Properties {
            cluster: k.0.clone(),
            node: node.clone(),
            namespace: k.1.clone(),
            pod: k.2.clone(),
            container: k.3.clone(),
            controller_kind: kind,
            controller,
            services: pod_services.get(&p).cloned().unwrap_or_default(),
            provider_id: node_provider.get(&nk).cloned().unwrap_or_default(),
            labels: pod_labels.get(&p).cloned().unwrap_or_default(),
            annotations: pod_annotations.get(&p).cloned().unwrap_or_default(),
            namespace_labels: ns_labels
                .get(&(k.0.clone(), k.1.clone()))
                .cloned()
                .unwrap_or_default(),
            namespace_annotations: ns_annotations
                .get(&(k.0.clone(), k.1.clone()))
                .cloned()
                .unwrap_or_default(),
        };
        allocs.insert(
            k.clone(),
            Allocation {
                name: format!("{}/{}/{}/{}/{}", k.0, node, k.1, k.2, k.3),
                properties,
                window: w,
                start_ms,
                end_ms,
                minutes,
                cpu_request_hours: creq * hours,
                cpu_usage_hours: cuse * hours,
                cpu_limit_hours: g(&cpu_lim) * hours,
                cpu_core_hours: cpu_cores * hours,
                cpu_cost: cpu_cores * hours * prices.cpu,
                cpu_usage_max: cpu_max.get(k).copied(),
                ram_request_byte_hours: rreq * hours,
                ram_usage_byte_hours: ruse * hours,
                ram_limit_byte_hours: g(&ram_lim) * hours,
                ram_byte_hours: ram_bytes * hours,
                ram_cost: ram_bytes / GIB * hours * prices.ram,
                ram_usage_max: ram_max.get(k).copied(),
                gpu_hours: greq * hours,
                gpu_usage_hours: g(&gpu_used).min(1.0) * greq * hours,
                gpu_cost: greq * hours * prices.gpu,
                ..Allocation::default()
            },
        );
    }

    // per-pod network: bytes for information, egress for cost
    let tx = by(
        f.vector(r#"sum by (cluster, namespace, pod) (increase(container_network_transmit_bytes_total{pod!=""}[{D}]))"#)
            .await?,
        |x| pkey(x, "pod"),
    );
    let rx = by(
        f.vector(r#"sum by (cluster, namespace, pod) (increase(container_network_receive_bytes_total{pod!=""}[{D}]))"#)
            .await?,
        |x| pkey(x, "pod"),
    );
    let egress = f
        .vector(r#"sum by (cluster, namespace, pod_name, internet, same_zone, same_region) (increase(kubecost_pod_network_egress_bytes_total[{D}]))"#)
        .await?;
    let cluster_price = |m: &str| format!("avg by (cluster) (avg_over_time({m}[{{D}}]))");
    let zone_price = by(
        f.vector(&cluster_price("kubecost_network_zone_egress_cost"))
            .await?,
        |x| l(x, "cluster").to_string(),
    );
    let region_price = by(
        f.vector(&cluster_price("kubecost_network_region_egress_cost"))
            .await?,
        |x| l(x, "cluster").to_string(),
    );
    let internet_price = by(
        f.vector(&cluster_price("kubecost_network_internet_egress_cost"))
            .await?,
        |x| l(x, "cluster").to_string(),
    );
    let spread = |allocs: &mut HashMap<CKey, Allocation>,
                  p: &PKey,
                  apply: &dyn Fn(&mut Allocation, f64)|
     -> bool {
        let Some(cs) = pod_containers.get(p) else {
            return false;
        };
        let share = 1.0 / cs.len() as f64;
        for c in cs {
            if let Some(a) = allocs.get_mut(c) {
                apply(a, share);
            }
        }
        true
    };
    for (p, v) in &tx {
        spread(&mut allocs, p, &|a, s| a.network_transfer_bytes += v * s);
    }
    for (p, v) in &rx {
        spread(&mut allocs, p, &|a, s| a.network_receive_bytes += v * s);
    }
    let mut unmounted: HashMap<String, Allocation> = HashMap::new();
    for (labels, bytes) in egress {
        let p = pkey(&labels, "pod_name");
        let base = pricing.cluster(&p.0).base();
        let gib = bytes.max(0.0) / GIB;
        let (internet, zone) = (
            l(&labels, "internet") == "true",
            l(&labels, "same_zone") == "true",
        );
        let region = l(&labels, "same_region") == "true";
        let cost;
        let apply: Apply = if internet {
            cost = gib
                * internet_price
                    .get(&p.0)
                    .copied()
                    .unwrap_or(base.internet_egress);
            Box::new(move |a, s| a.network_internet_cost += cost * s)
        } else if !zone && region {
            cost = gib * zone_price.get(&p.0).copied().unwrap_or(base.zone_egress);
            Box::new(move |a, s| a.network_cross_zone_cost += cost * s)
        } else if !region {
            cost = gib
                * region_price
                    .get(&p.0)
                    .copied()
                    .unwrap_or(base.region_egress);
            Box::new(move |a, s| a.network_cross_region_cost += cost * s)
        } else {
            continue; // same zone: free
        };
        if !spread(&mut allocs, &p, &*apply) {
            apply(unmounted_for(&mut unmounted, &p.0, w), 1.0);
        }
    }

    // --- volumes -------------------------------------------------------------------------------
    let mut claims: HashMap<(String, String), (String, String)> = HashMap::new(); // pv -> claim
    let mut pv_class: HashMap<(String, String), String> = HashMap::new();
    let mut disk_steps: HashMap<(String, String), Steps> = HashMap::new();
    for (labels, s) in f
        .steps(r#"max by (cluster, namespace, persistentvolumeclaim, volumename, storageclass) (kube_persistentvolumeclaim_info{volumename!=""})"#)
        .await?
    {
        let pv = (l(&labels, "cluster").to_string(), l(&labels, "volumename").to_string());
        claims.insert(
            pv.clone(),
            (l(&labels, "namespace").into(), l(&labels, "persistentvolumeclaim").into()),
        );
        pv_class.insert(pv.clone(), l(&labels, "storageclass").into());
        disk_steps.entry(pv).and_modify(|x| x.or(&s)).or_insert(s);
    }
    for (labels, s) in f
        .steps("max by (cluster, persistentvolume) (kube_persistentvolume_capacity_bytes)")
        .await?
    {
        let pv = (
            l(&labels, "cluster").to_string(),
            l(&labels, "persistentvolume").to_string(),
        );
        disk_steps.entry(pv).and_modify(|x| x.or(&s)).or_insert(s);
    }
    let pv_bytes = by(
        f.vector("avg by (cluster, persistentvolume) (avg_over_time(kube_persistentvolume_capacity_bytes[{D}]))")
            .await?,
        |x| (l(x, "cluster").to_string(), l(x, "persistentvolume").to_string()),
    );
    let claim_bytes = by(
        f.vector("avg by (cluster, namespace, persistentvolumeclaim) (avg_over_time(kube_persistentvolumeclaim_resource_requests_storage_bytes[{D}]))")
            .await?,
        |x| pkey(x, "persistentvolumeclaim"),
    );
    let mut pv_price: HashMap<(String, String), (f64, String)> = HashMap::new();
    for (labels, v) in f
        .vector("avg by (cluster, volumename, provider_id) (avg_over_time(pv_hourly_cost[{D}]))")
        .await?
    {
        pv_price.insert(
            (
                l(&labels, "cluster").into(),
                l(&labels, "volumename").into(),
            ),
            (v, l(&labels, "provider_id").into()),
        );
    }
    let mut mounts: HashMap<PKey, Vec<PKey>> = HashMap::new(); // claim -> pods
    for q in [
        "last_over_time(kube_pod_spec_volumes_persistentvolumeclaims_info[{D}])",
        "last_over_time(pod_pvc_allocation[{D}])",
    ] {
        for (labels, _) in f.vector(q).await? {
            let claim = pkey(&labels, "persistentvolumeclaim");
            let pod = pkey(&labels, "pod");
            let v = mounts.entry(claim).or_default();
            if !v.contains(&pod) {
                v.push(pod);
            }
        }
    }
    let mut disks: Vec<_> = disk_steps.into_iter().collect();
    disks.sort_by(|a, b| a.0.cmp(&b.0));
    for (pv, steps) in disks {
        let claim = claims.get(&pv).cloned().unwrap_or_default();
        let ck = (pv.0.clone(), claim.0.clone(), claim.1.clone());
        let bytes = pv_bytes
            .get(&pv)
            .or_else(|| claim_bytes.get(&ck))
            .copied()
            .unwrap_or(0.0)
            .max(0.0);
        let (price, provider_id) = pv_price
            .get(&pv)
            .cloned()
            .unwrap_or_else(|| (pricing.cluster(&pv.0).base().storage, String::new()));
        let minutes = f.minutes(&steps);
        let pods = mounts.get(&ck).cloned().unwrap_or_default();
        let pv_name = format!("cluster={}:name={}", pv.0, pv.1);
        for (k, present) in steps.0.iter().enumerate() {
            if !*present {
                continue;
            }
            let bh = bytes * f.slice_hours(k);
            let cost = bh / GIB * price;
            let on: Vec<&PKey> = pods
                .iter()
                .filter(|p| pod_steps.get(*p).is_some_and(|s| s.0[k]))
                .collect();
            let part = |a: &mut Allocation, share: f64| {
                a.pv_byte_hours += bh * share;
                a.pv_cost += cost * share;
                let e = a.pvs.entry(pv_name.clone()).or_default();
                e.byte_hours += bh * share;
                e.cost += cost * share;
                if e.provider_id.is_empty() {
                    e.provider_id.clone_from(&provider_id);
                }
            };
            if on.is_empty() {
                part(unmounted_for(&mut unmounted, &pv.0, w), 1.0);
            } else {
                let pod_share = 1.0 / on.len() as f64;
                for p in on {
                    spread(&mut allocs, p, &|a, s| part(a, s * pod_share));
                }
            }
        }
        set.disks.push(DiskAsset {
            cluster: pv.0.clone(),
            name: pv.1.clone(),
            claim: claim.1,
            claim_namespace: claim.0,
            storage_class: pv_class.get(&pv).cloned().unwrap_or_default(),
            provider_id,
            window: w,
            minutes,
            bytes,
            byte_hours: bytes * minutes / 60.0,
            price,
            cost: bytes / GIB * price * minutes / 60.0,
        });
    }

    // --- load balancers ------------------------------------------------------------------------
    let mut lbs: BTreeMap<PKey, LbEntry> = BTreeMap::new();
    let lb_price = by(
        f.vector("avg by (cluster, namespace, service_name) (avg_over_time(kubecost_load_balancer_cost[{D}]))")
            .await?,
        |x| pkey(x, "service_name"),
    );
    for (labels, s) in f
        .steps(
            "max by (cluster, namespace, service_name, ingress_ip) (kubecost_load_balancer_cost)",
        )
        .await?
    {
        let k = pkey(&labels, "service_name");
        let price = lb_price.get(&k).copied();
        lbs.insert(k, (l(&labels, "ingress_ip").into(), s, price));
    }
    for (labels, s) in f
        .steps(
            "max by (cluster, namespace, service, ip) (kube_service_status_load_balancer_ingress)",
        )
        .await?
    {
        let k = pkey(&labels, "service");
        lbs.entry(k)
            .or_insert_with(|| (l(&labels, "ip").into(), s, None));
    }
    let mut service_pods: HashMap<PKey, Vec<PKey>> = HashMap::new();
    for (p, svcs) in &pod_services {
        for s in svcs {
            service_pods
                .entry((p.0.clone(), p.1.clone(), s.clone()))
                .or_default()
                .push(p.clone());
        }
    }
    for (svc, (ip, steps, price)) in lbs {
        let price = price.unwrap_or_else(|| pricing.cluster(&svc.0).base().load_balancer);
        let pods = service_pods.get(&svc).cloned().unwrap_or_default();
        for (k, present) in steps.0.iter().enumerate() {
            if !*present {
                continue;
            }
            let cost = price * f.slice_hours(k);
            let on: Vec<&PKey> = pods
                .iter()
                .filter(|p| pod_steps.get(*p).is_some_and(|s| s.0[k]))
                .collect();
            if on.is_empty() {
                unmounted_for(&mut unmounted, &svc.0, w).lb_cost += cost;
            } else {
                let pod_share = 1.0 / on.len() as f64;
                for p in on {
                    spread(&mut allocs, p, &|a, s| a.lb_cost += cost * s * pod_share);
                }
            }
        }
        let minutes = f.minutes(&steps);
        set.load_balancers.push(LoadBalancerAsset {
            cluster: svc.0,
            namespace: svc.1,
            service: svc.2,
            ip,
            window: w,
            minutes,
            price,
            cost: price * minutes / 60.0,
        });
    }

    let mut out: Vec<Allocation> = allocs.into_values().collect();
    out.extend(unmounted.into_values());
    out.sort_by(|a, b| a.name.cmp(&b.name));
    set.allocations = out;
    set.nodes
        .sort_by(|a, b| (&a.cluster, &a.node).cmp(&(&b.cluster, &b.node)));
    set.management.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    Ok(set)
}

/// The cluster's `__unmounted__` allocation.
fn unmounted_for<'a>(
    m: &'a mut HashMap<String, Allocation>,
    cluster: &str,
    w: Window,
) -> &'a mut Allocation {
    m.entry(cluster.to_string()).or_insert_with(|| Allocation {
        name: format!("{cluster}/{UNMOUNTED}/{UNMOUNTED}/{UNMOUNTED}/{UNMOUNTED}"),
        properties: Properties {
            cluster: cluster.to_string(),
            node: UNMOUNTED.into(),
            namespace: UNMOUNTED.into(),
            pod: UNMOUNTED.into(),
            container: UNMOUNTED.into(),
            ..Properties::default()
        },
        window: w,
        start_ms: w.start_ms,
        end_ms: w.end_ms,
        minutes: w.len_ms() as f64 / 60_000.0,
        ..Allocation::default()
    })
}

/// A pod's controller: a ReplicaSet resolves to its Deployment (or Rollout), a Job to its
/// CronJob; kinds are lower-case as OpenCost writes them.
fn controller_of(
    p: &PKey,
    pod_owner: &HashMap<PKey, (String, String)>,
    rs_owner: &HashMap<PKey, (String, String)>,
    job_owner: &HashMap<PKey, (String, String)>,
) -> (String, String) {
    let Some((kind, name)) = pod_owner.get(p) else {
        return (String::new(), String::new());
    };
    let up = |m: &HashMap<PKey, (String, String)>| {
        m.get(&(p.0.clone(), p.1.clone(), name.clone()))
            .filter(|(k, n)| !k.is_empty() && k != "<none>" && !n.is_empty())
            .cloned()
    };
    let (k, n) = match kind.as_str() {
        "ReplicaSet" => up(rs_owner).unwrap_or_else(|| (kind.clone(), name.clone())),
        "Job" => up(job_owner).unwrap_or_else(|| (kind.clone(), name.clone())),
        _ => (kind.clone(), name.clone()),
    };
    (k.to_ascii_lowercase(), n)
}
