//! One step's allocation answer: idle per cluster or node, shared namespaces/labels/overhead
//! spread over the rest, the filter, and aggregation by any of OpenCost's keys.
//!
//! Order, as OpenCost's `AggregateBy`: idle is computed from the assets and (if asked) shared
//! into the container rows first, weighted by each row's cost of that resource; then the shared
//! rows (and `shareCost`, and the cluster-management fee) are spread over every other row —
//! filtered-out rows included, so shared cost is conserved — weighted by cost or evenly per
//! aggregate; then the filter; then aggregation. An idle line that is not shared is scaled to
//! the part of its cluster's (node's) allocated cost that passed the filter.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::allocation::{
    Allocation, CostSet, IDLE, NodeAsset, Properties, SHARED, UNALLOCATED, UNMOUNTED,
};
use super::filter::{Filter, alias_label};
use super::pricing::sanitize_label;
use super::window::Window;
use crate::error::{Error, Result};

/// Hours in OpenCost's month (`shareCost` is monthly).
const MONTH_HOURS: f64 = 730.0;

/// How idle or shared cost is spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Share {
    /// Not spread (idle stays `__idle__`).
    #[default]
    None,
    /// In proportion to cost.
    Weighted,
    /// Equally per aggregate.
    Even,
}

/// One aggregation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateBy {
    /// `cluster`.
    Cluster,
    /// `node`.
    Node,
    /// `namespace`.
    Namespace,
    /// `controllerKind`.
    ControllerKind,
    /// `controller` (`kind:name`).
    Controller,
    /// `pod`.
    Pod,
    /// `container`.
    Container,
    /// `service` (the first service selecting the pod).
    Service,
    /// `providerID`.
    ProviderId,
    /// `deployment`, `statefulset`, `daemonset`, `job`: the controller's name when it is of this kind.
    Kind(&'static str),
    /// `label:<key>` (pod label, else namespace label) and the aliases.
    Label(String),
    /// `annotation:<key>`.
    Annotation(String),
}

impl AggregateBy {
    /// `aggregate=cluster,label:team`; unknown keys are refused naming the parameter.
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let lower = part.to_ascii_lowercase();
            let a = match lower.as_str() {
                "cluster" => Self::Cluster,
                "node" => Self::Node,
                "namespace" => Self::Namespace,
                "controllerkind" => Self::ControllerKind,
                "controller" => Self::Controller,
                "pod" => Self::Pod,
                "container" => Self::Container,
                "service" => Self::Service,
                "providerid" => Self::ProviderId,
                "deployment" => Self::Kind("deployment"),
                "statefulset" => Self::Kind("statefulset"),
                "daemonset" => Self::Kind("daemonset"),
                "job" => Self::Kind("job"),
                _ => {
                    let other = part;
                    if let Some(l) = alias_label(&lower) {
                        Self::Label(l.into())
                    } else if let Some(k) = other.strip_prefix("label:").filter(|k| !k.is_empty()) {
                        Self::Label(sanitize_label(k))
                    } else if let Some(k) =
                        other.strip_prefix("annotation:").filter(|k| !k.is_empty())
                    {
                        Self::Annotation(sanitize_label(k))
                    } else {
                        return Err(Error::BadParam {
                            param: "aggregate",
                            reason: format!(
                                "unknown aggregate {other:?}: expected cluster, node, namespace, controllerKind, controller, pod, container, service, providerID, deployment, statefulset, daemonset, job, department, environment, owner, product, team, label:<name> or annotation:<name>"
                            ),
                        });
                    }
                }
            };
            if out.len() >= 16 {
                return Err(Error::BadParam {
                    param: "aggregate",
                    reason: "at most 16 keys".into(),
                });
            }
            out.push(a);
        }
        Ok(out)
    }

    fn value(&self, p: &Properties) -> String {
        let or_un = |s: &str| {
            if s.is_empty() {
                UNALLOCATED.to_string()
            } else {
                s.to_string()
            }
        };
        match self {
            Self::Cluster => or_un(&p.cluster),
            Self::Node => or_un(&p.node),
            Self::Namespace => or_un(&p.namespace),
            Self::ControllerKind => or_un(&p.controller_kind),
            Self::Controller => {
                if p.controller.is_empty() {
                    UNALLOCATED.into()
                } else {
                    format!("{}:{}", p.controller_kind, p.controller)
                }
            }
            Self::Pod => or_un(&p.pod),
            Self::Container => or_un(&p.container),
            Self::Service => or_un(p.services.first().map_or("", String::as_str)),
            Self::ProviderId => or_un(&p.provider_id),
            Self::Kind(k) => {
                if p.controller_kind == *k {
                    or_un(&p.controller)
                } else {
                    UNALLOCATED.into()
                }
            }
            Self::Label(k) => or_un(
                p.labels
                    .get(k)
                    .or_else(|| p.namespace_labels.get(k))
                    .map_or("", String::as_str),
            ),
            Self::Annotation(k) => or_un(
                p.annotations
                    .get(k)
                    .or_else(|| p.namespace_annotations.get(k))
                    .map_or("", String::as_str),
            ),
        }
    }
}

/// What an allocation answer asks for (OpenCost's and Kubecost's parameters).
#[derive(Debug, Clone, Default)]
pub struct AllocationQuery {
    /// Aggregation keys; empty = one row per container.
    pub aggregate: Vec<AggregateBy>,
    /// Add idle lines.
    pub include_idle: bool,
    /// Spread idle into the allocations.
    pub share_idle: Share,
    /// Idle per node rather than per cluster.
    pub idle_by_node: bool,
    /// Keep one idle line per cluster (node) rather than one `__idle__`.
    pub split_idle: bool,
    /// Namespaces whose cost is spread over the rest.
    pub share_namespaces: Vec<String>,
    /// `label=value` pairs whose allocations' cost is spread over the rest.
    pub share_labels: Vec<(String, String)>,
    /// A monthly overhead ($) spread over the allocations.
    pub share_cost_monthly: f64,
    /// How shared cost is spread (weighted or even).
    pub share_split: Share,
    /// Spread each cluster's management fee over its allocations.
    pub share_tenancy: bool,
    /// Only allocations that pass.
    pub filter: Option<Filter>,
}

/// The idle key of an allocation or node: the cluster, and the node when idle is per node.
fn idle_key(cluster: &str, node: &str, by_node: bool) -> (String, String) {
    (
        cluster.to_string(),
        if by_node {
            node.to_string()
        } else {
            String::new()
        },
    )
}

#[derive(Debug, Default, Clone, Copy)]
struct Res {
    cpu: f64,
    ram: f64,
    gpu: f64,
}

fn asset_sums(nodes: &[NodeAsset], by_node: bool) -> HashMap<(String, String), Res> {
    let mut m: HashMap<(String, String), Res> = HashMap::new();
    for n in nodes {
        let e = m.entry(idle_key(&n.cluster, &n.node, by_node)).or_default();
        e.cpu += n.cpu_cost;
        e.ram += n.ram_cost;
        e.gpu += n.gpu_cost;
    }
    m
}

/// Answers one step: `set` holds the step's container rows and assets.
pub fn aggregate(set: &CostSet, q: &AllocationQuery) -> Vec<Allocation> {
    let w = set.window;
    let by_node = q.idle_by_node;
    let mut rows: Vec<Allocation> = set.allocations.clone();

    // --- idle --------------------------------------------------------------------------------
    let want_idle = q.include_idle || q.share_idle != Share::None;
    let mut idle: HashMap<(String, String), Res> = HashMap::new();
    let mut alloc_sums: HashMap<(String, String), Res> = HashMap::new();
    if want_idle {
        for a in rows.iter().filter(|a| !a.is_unmounted()) {
            let e = alloc_sums
                .entry(idle_key(&a.properties.cluster, &a.properties.node, by_node))
                .or_default();
            e.cpu += a.cpu_cost;
            e.ram += a.ram_cost;
            e.gpu += a.gpu_cost;
        }
        for (k, asset) in asset_sums(&set.nodes, by_node) {
            let used = alloc_sums.get(&k).copied().unwrap_or_default();
            idle.insert(
                k,
                Res {
                    cpu: (asset.cpu - used.cpu).max(0.0),
                    ram: (asset.ram - used.ram).max(0.0),
                    gpu: (asset.gpu - used.gpu).max(0.0),
                },
            );
        }
    }
    // idle that stays a line of its own (not shared, or nothing to share it with)
    let mut idle_lines: HashMap<(String, String), Res> = HashMap::new();
    match q.share_idle {
        Share::Weighted => {
            for (k, i) in &idle {
                let used = alloc_sums.get(k).copied().unwrap_or_default();
                let mut rest = Res::default();
                for (idle_part, total, dst) in [
                    (i.cpu, used.cpu, 0usize),
                    (i.ram, used.ram, 1),
                    (i.gpu, used.gpu, 2),
                ] {
                    if idle_part <= 0.0 {
                        continue;
                    }
                    if total <= 0.0 {
                        match dst {
                            0 => rest.cpu += idle_part,
                            1 => rest.ram += idle_part,
                            _ => rest.gpu += idle_part,
                        }
                        continue;
                    }
                    for a in rows.iter_mut().filter(|a| {
                        !a.is_unmounted()
                            && idle_key(&a.properties.cluster, &a.properties.node, by_node) == *k
                    }) {
                        match dst {
                            0 => a.cpu_cost_idle += idle_part * a.cpu_cost / total,
                            1 => a.ram_cost_idle += idle_part * a.ram_cost / total,
                            _ => a.gpu_cost_idle += idle_part * a.gpu_cost / total,
                        }
                    }
                }
                if rest.cpu + rest.ram + rest.gpu > 0.0 {
                    idle_lines.insert(k.clone(), rest);
                }
            }
        }
        Share::None | Share::Even => {
            if q.include_idle || q.share_idle == Share::Even {
                idle_lines = idle.clone();
            }
        }
    }

    // --- shared cost -------------------------------------------------------------------------
    let is_shared = |a: &Allocation| {
        !a.is_unmounted()
            && (q.share_namespaces.contains(&a.properties.namespace)
                || q.share_labels
                    .iter()
                    .any(|(k, v)| a.properties.labels.get(k) == Some(v)))
    };
    let (shared, mut rows): (Vec<Allocation>, Vec<Allocation>) =
        rows.into_iter().partition(|a| is_shared(a));
    let mut leftover = 0.0;
    let global_pool: f64 = shared.iter().map(Allocation::total_cost).sum::<f64>()
        + q.share_cost_monthly / MONTH_HOURS * w.hours();
    let key_of = |a: &Allocation| -> String {
        if q.aggregate.is_empty() {
            a.name.clone()
        } else {
            q.aggregate
                .iter()
                .map(|k| k.value(&a.properties))
                .collect::<Vec<_>>()
                .join("/")
        }
    };
    leftover += spread(&mut rows, global_pool, q.share_split, None, &key_of);
    if q.share_tenancy {
        for m in &set.management {
            leftover += spread(&mut rows, m.cost, q.share_split, Some(&m.cluster), &key_of);
        }
    }

    // --- filter ------------------------------------------------------------------------------
    let passed: Vec<Allocation> = match &q.filter {
        Some(f) => rows
            .into_iter()
            .filter(|a| f.matches(&a.properties))
            .collect(),
        None => rows,
    };
    let mut idle_rows = Vec::new();
    let mut keys: Vec<_> = idle_lines.keys().cloned().collect();
    keys.sort();
    for k in keys {
        let mut r = idle_lines[&k];
        if q.filter.is_some() {
            let all = alloc_sums.get(&k).copied().unwrap_or_default();
            let mut kept = Res::default();
            for a in passed.iter().filter(|a| {
                !a.is_unmounted()
                    && idle_key(&a.properties.cluster, &a.properties.node, by_node) == k
            }) {
                kept.cpu += a.cpu_cost;
                kept.ram += a.ram_cost;
                kept.gpu += a.gpu_cost;
            }
            let frac = |k: f64, a: f64| if a > 0.0 { k / a } else { 0.0 };
            r.cpu *= frac(kept.cpu, all.cpu);
            r.ram *= frac(kept.ram, all.ram);
            r.gpu *= frac(kept.gpu, all.gpu);
            if r.cpu + r.ram + r.gpu <= 0.0 {
                continue;
            }
        }
        idle_rows.push((k, r));
    }

    // --- aggregate ---------------------------------------------------------------------------
    let mut out: BTreeMap<String, Allocation> = BTreeMap::new();
    let mut touches: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for a in &passed {
        let name = if a.is_unmounted() {
            if q.aggregate.is_empty() {
                a.name.clone()
            } else {
                q.aggregate
                    .iter()
                    .map(|k| match k {
                        AggregateBy::Cluster => a.properties.cluster.clone(),
                        _ => UNMOUNTED.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            }
        } else {
            key_of(a)
        };
        if q.share_idle == Share::Even && !a.is_unmounted() {
            touches
                .entry(idle_key(&a.properties.cluster, &a.properties.node, by_node))
                .or_default()
                .insert(name.clone());
        }
        add_into(&mut out, name, a);
    }
    if q.share_idle == Share::Even {
        for (k, r) in &idle_rows {
            let Some(names) = touches.get(k) else {
                continue;
            };
            let n = names.len() as f64;
            for name in names {
                if let Some(a) = out.get_mut(name) {
                    a.cpu_cost_idle += r.cpu / n;
                    a.ram_cost_idle += r.ram / n;
                    a.gpu_cost_idle += r.gpu / n;
                }
            }
        }
        idle_rows.retain(|(k, _)| !touches.contains_key(k));
    }
    for ((cluster, node), r) in idle_rows {
        let name = if q.split_idle {
            if node.is_empty() {
                format!("{cluster}/{IDLE}")
            } else {
                format!("{cluster}/{node}/{IDLE}")
            }
        } else {
            IDLE.to_string()
        };
        let a = Allocation {
            name: name.clone(),
            properties: Properties {
                cluster,
                node,
                ..Properties::default()
            },
            window: w,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            minutes: w.len_ms() as f64 / 60_000.0,
            cpu_cost: r.cpu,
            ram_cost: r.ram,
            gpu_cost: r.gpu,
            ..Allocation::default()
        };
        add_into(&mut out, name, &a);
    }
    if leftover > 0.0 {
        let a = Allocation {
            name: SHARED.into(),
            window: w,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            minutes: w.len_ms() as f64 / 60_000.0,
            shared_cost: leftover,
            ..Allocation::default()
        };
        add_into(&mut out, SHARED.into(), &a);
    }
    out.into_values().collect()
}

fn add_into(out: &mut BTreeMap<String, Allocation>, name: String, a: &Allocation) {
    match out.get_mut(&name) {
        Some(x) => x.add(a),
        None => {
            let mut x = a.clone();
            x.name = name.clone();
            out.insert(name, x);
        }
    }
}

/// Spreads `pool` over `rows` (of `cluster` only, when given; idle and unmounted rows never
/// receive): weighted by each row's cost, or evenly per aggregate and, inside one, by cost.
/// Returns what found no row.
fn spread(
    rows: &mut [Allocation],
    pool: f64,
    how: Share,
    cluster: Option<&str>,
    key_of: &dyn Fn(&Allocation) -> String,
) -> f64 {
    if pool <= 0.0 {
        return 0.0;
    }
    let takes = |a: &Allocation| {
        !a.is_unmounted() && !a.is_idle() && cluster.is_none_or(|c| a.properties.cluster == c)
    };
    let idx: Vec<usize> = (0..rows.len()).filter(|i| takes(&rows[*i])).collect();
    if idx.is_empty() {
        return pool;
    }
    let base = |a: &Allocation| a.total_cost() - a.shared_cost;
    match how {
        Share::Even => {
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for i in idx {
                groups.entry(key_of(&rows[i])).or_default().push(i);
            }
            let per = pool / groups.len() as f64;
            for members in groups.values() {
                give(rows, members, per, &base);
            }
        }
        Share::Weighted | Share::None => give(rows, &idx, pool, &base),
    }
    0.0
}

/// Gives `amount` to `members` in proportion to `weight` (evenly when all weigh 0).
fn give(
    rows: &mut [Allocation],
    members: &[usize],
    amount: f64,
    weight: &dyn Fn(&Allocation) -> f64,
) {
    let total: f64 = members.iter().map(|i| weight(&rows[*i]).max(0.0)).sum();
    for i in members {
        let share = if total > 0.0 {
            weight(&rows[*i]).max(0.0) / total
        } else {
            1.0 / members.len() as f64
        };
        rows[*i].shared_cost += amount * share;
    }
}

/// Sums hour sets into one set over `window`: allocations by name, assets by identity.
pub fn merge_sets(window: Window, sets: &[CostSet]) -> CostSet {
    let mut allocs: BTreeMap<String, Allocation> = BTreeMap::new();
    let mut nodes: BTreeMap<(String, String), NodeAsset> = BTreeMap::new();
    let mut disks = BTreeMap::new();
    let mut lbs = BTreeMap::new();
    let mut mgmt = BTreeMap::new();
    for s in sets {
        for a in &s.allocations {
            add_into(&mut allocs, a.name.clone(), a);
        }
        for n in &s.nodes {
            match nodes.get_mut(&(n.cluster.clone(), n.node.clone())) {
                Some(x) => {
                    let m = x.minutes + n.minutes;
                    if m > 0.0 {
                        x.cpu_cores = (x.cpu_cores * x.minutes + n.cpu_cores * n.minutes) / m;
                        x.ram_bytes = (x.ram_bytes * x.minutes + n.ram_bytes * n.minutes) / m;
                        x.gpu_count = (x.gpu_count * x.minutes + n.gpu_count * n.minutes) / m;
                    }
                    x.minutes = m;
                    x.start_ms = x.start_ms.min(n.start_ms);
                    x.end_ms = x.end_ms.max(n.end_ms);
                    x.cpu_cost += n.cpu_cost;
                    x.ram_cost += n.ram_cost;
                    x.gpu_cost += n.gpu_cost;
                }
                None => {
                    nodes.insert((n.cluster.clone(), n.node.clone()), n.clone());
                }
            }
        }
        for d in &s.disks {
            let e = disks
                .entry((d.cluster.clone(), d.name.clone()))
                .or_insert_with(|| super::allocation::DiskAsset {
                    minutes: 0.0,
                    byte_hours: 0.0,
                    cost: 0.0,
                    ..d.clone()
                });
            e.minutes += d.minutes;
            e.byte_hours += d.byte_hours;
            e.cost += d.cost;
            e.bytes = if e.minutes > 0.0 {
                e.byte_hours / (e.minutes / 60.0)
            } else {
                0.0
            };
        }
        for l in &s.load_balancers {
            let e = lbs
                .entry((l.cluster.clone(), l.namespace.clone(), l.service.clone()))
                .or_insert_with(|| super::allocation::LoadBalancerAsset {
                    minutes: 0.0,
                    cost: 0.0,
                    ..l.clone()
                });
            e.minutes += l.minutes;
            e.cost += l.cost;
        }
        for m in &s.management {
            let e = mgmt.entry(m.cluster.clone()).or_insert_with(|| {
                super::allocation::ManagementAsset {
                    minutes: 0.0,
                    cost: 0.0,
                    ..m.clone()
                }
            });
            e.minutes += m.minutes;
            e.cost += m.cost;
        }
    }
    let fix = |mut a: Allocation| {
        a.window = window;
        a
    };
    CostSet {
        window,
        allocations: allocs.into_values().map(fix).collect(),
        nodes: nodes
            .into_values()
            .map(|mut n| {
                n.window = window;
                n
            })
            .collect(),
        disks: disks
            .into_values()
            .map(|mut d| {
                d.window = window;
                d
            })
            .collect(),
        load_balancers: lbs
            .into_values()
            .map(|mut l| {
                l.window = window;
                l
            })
            .collect(),
        management: mgmt
            .into_values()
            .map(|mut m| {
                m.window = window;
                m
            })
            .collect(),
    }
}
