//! Unit prices: the fleet's defaults (OpenCost's `default.json`), per-cluster sheets, overrides
//! matched on node labels, spot detection, and the resolved per-node prices cost is charged at.
//!
//! Precedence for a node, lowest first: the fleet sheet, the cluster's sheet, each node override
//! whose `match` labels all equal the node's (in order), then the node's own OpenCost series
//! (`node_cpu_hourly_cost`, `node_ram_hourly_cost`, `node_gpu_hourly_cost`; a lone
//! `node_total_hourly_cost` is split in the ratio of the configured CPU, RAM and GPU prices). A node
//! is spot when `kubecost_node_is_spot` says so or one of the spot labels matches; spot nodes use
//! the spot prices of the sheet. The discount applies to CPU and RAM, as OpenCost applies it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// A price sheet; every field optional so that a sheet can override only some prices. Units:
/// CPU $ per vCPU-hour, RAM $ per GiB-hour, GPU $ per GPU-hour, storage $ per GiB-hour, egress
/// $ per GiB, load balancer and cluster management $ per hour, discount a fraction in [0, 1].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSheet {
    /// $ per vCPU-hour.
    pub cpu: Option<f64>,
    /// $ per vCPU-hour on spot capacity.
    pub spot_cpu: Option<f64>,
    /// $ per GiB-hour of RAM.
    pub ram: Option<f64>,
    /// $ per GiB-hour of RAM on spot capacity.
    pub spot_ram: Option<f64>,
    /// $ per GPU-hour.
    pub gpu: Option<f64>,
    /// $ per GPU-hour on spot capacity.
    pub spot_gpu: Option<f64>,
    /// $ per GiB-hour of persistent volume.
    pub storage: Option<f64>,
    /// $ per GiB sent to another zone of the region.
    pub zone_egress: Option<f64>,
    /// $ per GiB sent to another region.
    pub region_egress: Option<f64>,
    /// $ per GiB sent to the internet.
    pub internet_egress: Option<f64>,
    /// $ per hour of a load balancer with an ingress address.
    pub load_balancer: Option<f64>,
    /// $ per hour of the cluster's control plane (e.g. 0.10 on EKS and GKE).
    pub cluster_management: Option<f64>,
    /// Fraction taken off CPU and RAM prices (negotiated or committed-use discount).
    pub discount: Option<f64>,
}

/// A sheet applied to the nodes whose labels match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOverride {
    /// Node labels that must all match, by their Kubernetes names
    /// (`node.kubernetes.io/instance-type: m5.large`) or as kube-state-metrics writes them
    /// (`label_node_kubernetes_io_instance_type`), plus the derived `capacity_type`
    /// (`spot` | `on-demand`), `instance_type`, `region` and `zone`.
    #[serde(rename = "match")]
    pub match_labels: BTreeMap<String, String>,
    /// The prices for those nodes.
    pub prices: PriceSheet,
}

/// Resolved prices: every field set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    /// See [`PriceSheet::cpu`].
    pub cpu: f64,
    /// See [`PriceSheet::spot_cpu`].
    pub spot_cpu: f64,
    /// See [`PriceSheet::ram`].
    pub ram: f64,
    /// See [`PriceSheet::spot_ram`].
    pub spot_ram: f64,
    /// See [`PriceSheet::gpu`].
    pub gpu: f64,
    /// See [`PriceSheet::spot_gpu`].
    pub spot_gpu: f64,
    /// See [`PriceSheet::storage`].
    pub storage: f64,
    /// See [`PriceSheet::zone_egress`].
    pub zone_egress: f64,
    /// See [`PriceSheet::region_egress`].
    pub region_egress: f64,
    /// See [`PriceSheet::internet_egress`].
    pub internet_egress: f64,
    /// See [`PriceSheet::load_balancer`].
    pub load_balancer: f64,
    /// See [`PriceSheet::cluster_management`].
    pub cluster_management: f64,
    /// See [`PriceSheet::discount`].
    pub discount: f64,
}

impl Default for Prices {
    /// OpenCost's `configs/default.json` (GCP us-central1 list prices); spot GPU, load balancer
    /// and management from OpenCost's provider code (0.308, 0.025 $/h; management 0 unless set).
    fn default() -> Self {
        Self {
            cpu: 0.031611,
            spot_cpu: 0.006655,
            ram: 0.004237,
            spot_ram: 0.000892,
            gpu: 0.95,
            spot_gpu: 0.308,
            storage: 0.00005479452,
            zone_egress: 0.01,
            region_egress: 0.01,
            internet_egress: 0.12,
            load_balancer: 0.025,
            cluster_management: 0.0,
            discount: 0.0,
        }
    }
}

impl Prices {
    /// These prices with the sheet's fields laid over them.
    pub fn with(mut self, s: &PriceSheet) -> Self {
        let set = |dst: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut self.cpu, s.cpu);
        set(&mut self.spot_cpu, s.spot_cpu);
        set(&mut self.ram, s.ram);
        set(&mut self.spot_ram, s.spot_ram);
        set(&mut self.gpu, s.gpu);
        set(&mut self.spot_gpu, s.spot_gpu);
        set(&mut self.storage, s.storage);
        set(&mut self.zone_egress, s.zone_egress);
        set(&mut self.region_egress, s.region_egress);
        set(&mut self.internet_egress, s.internet_egress);
        set(&mut self.load_balancer, s.load_balancer);
        set(&mut self.cluster_management, s.cluster_management);
        set(&mut self.discount, s.discount);
        self
    }
}

impl PriceSheet {
    /// Every price finite and ≥ 0, the discount in [0, 1]; the error names the field.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        let fields = [
            ("cpu", self.cpu),
            ("spot_cpu", self.spot_cpu),
            ("ram", self.ram),
            ("spot_ram", self.spot_ram),
            ("gpu", self.gpu),
            ("spot_gpu", self.spot_gpu),
            ("storage", self.storage),
            ("zone_egress", self.zone_egress),
            ("region_egress", self.region_egress),
            ("internet_egress", self.internet_egress),
            ("load_balancer", self.load_balancer),
            ("cluster_management", self.cluster_management),
        ];
        for (name, v) in fields {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("{at}.{name}: {v} is not a price (finite, ≥ 0)"));
            }
        }
        if let Some(d) = self.discount
            && !(0.0..=1.0).contains(&d)
        {
            return Err(format!("{at}.discount: {d} is not a fraction in [0, 1]"));
        }
        Ok(())
    }
}

/// A Kubernetes label name as kube-state-metrics writes it (`label_` prefix dropped):
/// every character outside `[A-Za-z0-9_]` becomes `_`.
pub fn sanitize_label(name: &str) -> String {
    let n = name.strip_prefix("label_").unwrap_or(name);
    n.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Node labels that mark spot (preemptible) capacity, sanitized, with the value that means spot
/// (compared case-insensitively): Karpenter, EKS, GKE (spot and preemptible), AKS.
pub const DEFAULT_SPOT_LABELS: [(&str, &str); 5] = [
    ("karpenter_sh_capacity_type", "spot"),
    ("eks_amazonaws_com_capacitytype", "spot"),
    ("cloud_google_com_gke_spot", "true"),
    ("cloud_google_com_gke_preemptible", "true"),
    ("kubernetes_azure_com_scalesetpriority", "spot"),
];

/// One cluster's prices: its sheet over the fleet's, and its node overrides after the fleet's.
#[derive(Debug, Clone)]
pub struct ClusterPricing {
    base: Prices,
    overrides: Vec<(Vec<(String, String)>, PriceSheet)>,
}

/// What is known about a node when its prices are resolved.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// Node labels, sanitized names without the `label_` prefix.
    pub labels: BTreeMap<String, String>,
    /// `kubecost_node_is_spot`, when the cluster sends it.
    pub is_spot: Option<bool>,
    /// `node_cpu_hourly_cost`.
    pub cpu_hourly: Option<f64>,
    /// `node_ram_hourly_cost` ($ per GiB-hour).
    pub ram_hourly: Option<f64>,
    /// `node_gpu_hourly_cost`.
    pub gpu_hourly: Option<f64>,
    /// `node_total_hourly_cost`.
    pub total_hourly: Option<f64>,
    /// Capacity, for splitting a total price: cores, GiB, GPUs.
    pub cores: f64,
    /// RAM in GiB.
    pub ram_gib: f64,
    /// GPUs.
    pub gpus: f64,
}

/// The unit prices one node is charged at (discount applied to CPU and RAM).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodePrices {
    /// $ per core-hour.
    pub cpu: f64,
    /// $ per GiB-hour.
    pub ram: f64,
    /// $ per GPU-hour.
    pub gpu: f64,
    /// Spot capacity.
    pub spot: bool,
    /// The discount that was applied.
    pub discount: f64,
    /// Where the prices came from: `series` (the cluster's own OpenCost series) or `config`.
    pub source: &'static str,
}

impl ClusterPricing {
    /// The cluster's resolved sheet (no node overrides).
    pub fn base(&self) -> &Prices {
        &self.base
    }

    /// Whether `labels` (sanitized) mark a spot node.
    fn spot_by_label(labels: &BTreeMap<String, String>) -> bool {
        DEFAULT_SPOT_LABELS
            .iter()
            .any(|(k, v)| labels.get(*k).is_some_and(|x| x.eq_ignore_ascii_case(v)))
    }

    /// The sheet for a node with these labels (overrides applied), and whether it is spot.
    fn sheet_for(&self, facts: &NodeFacts) -> (Prices, bool) {
        let spot = facts
            .is_spot
            .unwrap_or_else(|| Self::spot_by_label(&facts.labels));
        let mut labels = facts.labels.clone();
        labels
            .entry("capacity_type".into())
            .or_insert_with(|| if spot { "spot" } else { "on-demand" }.into());
        for (k, src) in [
            ("instance_type", "node_kubernetes_io_instance_type"),
            ("region", "topology_kubernetes_io_region"),
            ("zone", "topology_kubernetes_io_zone"),
        ] {
            if let Some(v) = facts.labels.get(src) {
                labels.entry(k.into()).or_insert_with(|| v.clone());
            }
        }
        let mut p = self.base;
        for (m, sheet) in &self.overrides {
            if m.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                p = p.with(sheet);
            }
        }
        (p, spot)
    }

    /// The prices a node is charged at.
    pub fn node_prices(&self, facts: &NodeFacts) -> NodePrices {
        let (p, spot) = self.sheet_for(facts);
        let (mut cpu, mut ram, mut gpu) = if spot {
            (p.spot_cpu, p.spot_ram, p.spot_gpu)
        } else {
            (p.cpu, p.ram, p.gpu)
        };
        let ok = |v: Option<f64>| v.filter(|x| x.is_finite() && *x >= 0.0);
        let mut source = "config";
        match (
            ok(facts.cpu_hourly),
            ok(facts.ram_hourly),
            ok(facts.gpu_hourly),
        ) {
            (None, None, None) => {
                if let Some(total) = ok(facts.total_hourly) {
                    // OpenCost's split: RAM price from the total and the configured ratios
                    let cpu_ratio = if ram > 0.0 { cpu / ram } else { 10.0 };
                    let gpu_ratio = if ram > 0.0 { gpu / ram } else { 100.0 };
                    let denom = facts.cores * cpu_ratio + facts.ram_gib + facts.gpus * gpu_ratio;
                    if denom > 0.0 {
                        ram = total / denom;
                        cpu = ram * cpu_ratio;
                        gpu = ram * gpu_ratio;
                        source = "series";
                    }
                }
            }
            (c, r, g) => {
                source = "series";
                cpu = c.unwrap_or(cpu);
                ram = r.unwrap_or(ram);
                gpu = g.unwrap_or(gpu);
            }
        }
        let keep = 1.0 - p.discount;
        NodePrices {
            cpu: cpu * keep,
            ram: ram * keep,
            gpu,
            spot,
            discount: p.discount,
            source,
        }
    }
}

/// Prices for the whole fleet.
#[derive(Debug, Clone)]
pub struct Pricing {
    fleet: ClusterPricing,
    clusters: HashMap<String, ClusterPricing>,
}

impl Default for Pricing {
    fn default() -> Self {
        Self::new(&PriceSheet::default(), &[], std::iter::empty())
    }
}

fn sanitize_match(m: &BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter()
        .map(|(k, v)| (sanitize_label(k), v.clone()))
        .collect()
}

impl Pricing {
    /// The fleet's sheet and overrides over OpenCost's defaults, then each cluster's
    /// `(name, sheet, overrides)` over those.
    pub fn new<'a>(
        fleet: &PriceSheet,
        overrides: &[NodeOverride],
        clusters: impl IntoIterator<Item = (&'a str, &'a PriceSheet, &'a [NodeOverride])>,
    ) -> Self {
        let base = Prices::default().with(fleet);
        let fleet_overrides: Vec<_> = overrides
            .iter()
            .map(|o| (sanitize_match(&o.match_labels), o.prices.clone()))
            .collect();
        let fleet = ClusterPricing {
            base,
            overrides: fleet_overrides.clone(),
        };
        let clusters = clusters
            .into_iter()
            .map(|(name, sheet, ovs)| {
                let mut overrides = fleet_overrides.clone();
                overrides.extend(
                    ovs.iter()
                        .map(|o| (sanitize_match(&o.match_labels), o.prices.clone())),
                );
                (
                    name.to_string(),
                    ClusterPricing {
                        base: base.with(sheet),
                        overrides,
                    },
                )
            })
            .collect();
        Self { fleet, clusters }
    }

    /// The prices of one cluster (the fleet's when it has none of its own).
    pub fn cluster(&self, name: &str) -> &ClusterPricing {
        self.clusters.get(name).unwrap_or(&self.fleet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(labels: &[(&str, &str)]) -> NodeFacts {
        NodeFacts {
            labels: labels
                .iter()
                .map(|(k, v)| (sanitize_label(k), v.to_string()))
                .collect(),
            cores: 4.0,
            ram_gib: 16.0,
            ..NodeFacts::default()
        }
    }

    #[test]
    fn precedence() {
        let over = vec![NodeOverride {
            match_labels: [(
                "node.kubernetes.io/instance-type".to_string(),
                "m5.xlarge".to_string(),
            )]
            .into(),
            prices: PriceSheet {
                cpu: Some(0.05),
                ..PriceSheet::default()
            },
        }];
        let sheet = PriceSheet {
            ram: Some(0.01),
            discount: Some(0.5),
            ..PriceSheet::default()
        };
        let p = Pricing::new(
            &PriceSheet::default(),
            &[],
            [("a", &sheet, over.as_slice())],
        );
        // fleet defaults for an unknown cluster
        let d = p.cluster("zzz").node_prices(&facts(&[]));
        assert_eq!((d.cpu, d.ram, d.source), (0.031611, 0.004237, "config"));
        // cluster sheet + override + discount
        let n = p.cluster("a").node_prices(&facts(&[(
            "label_node_kubernetes_io_instance_type",
            "m5.xlarge",
        )]));
        assert_eq!((n.cpu, n.ram), (0.025, 0.005));
        // spot by label
        let s = p
            .cluster("zzz")
            .node_prices(&facts(&[("karpenter.sh/capacity-type", "spot")]));
        assert!(s.spot);
        assert_eq!(s.cpu, 0.006655);
        // the node's own series win
        let mut f = facts(&[]);
        f.cpu_hourly = Some(0.04);
        let o = p.cluster("zzz").node_prices(&f);
        assert_eq!((o.cpu, o.ram, o.source), (0.04, 0.004237, "series"));
        // a total only: split by the configured ratio. ratio = 0.031611/0.004237;
        // ram = 1.0 / (4 × ratio + 16)
        let mut t = facts(&[]);
        t.total_hourly = Some(1.0);
        let o = p.cluster("zzz").node_prices(&t);
        let ratio = 0.031611 / 0.004237;
        assert!((o.ram - 1.0 / (4.0 * ratio + 16.0)).abs() < 1e-12);
        assert!((o.cpu * 4.0 + o.ram * 16.0 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn validate_names_the_field() {
        let s = PriceSheet {
            ram: Some(-1.0),
            ..PriceSheet::default()
        };
        assert!(
            s.validate("cost.pricing")
                .unwrap_err()
                .contains("cost.pricing.ram")
        );
        let s = PriceSheet {
            discount: Some(2.0),
            ..PriceSheet::default()
        };
        assert!(s.validate("x").unwrap_err().contains("x.discount"));
    }
}
