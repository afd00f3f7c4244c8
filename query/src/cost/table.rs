//! The open schemas of the cost tables and the conversion of cost sets to and from them:
//! `cost_allocation` (one row per container and window: hour or day) and `cost_assets` (one row
//! per node, disk, load balancer and cluster-management fee and window). Both are plain Parquet
//! (see the README's "Cost tables"), readable by DuckDB without fleetgate.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Float64Array, MapBuilder,
    MapFieldNames, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType};

use super::allocation::{
    Allocation, CostSet, DiskAsset, LoadBalancerAsset, ManagementAsset, NodeAsset, Properties,
    PvPart,
};
use super::window::Window;
use crate::error::{Error, Result};

/// Format version of both tables (in each file's `fleetgate.format`).
pub const TABLE_VERSION: u32 = 1;
/// Directory and SQL name of the allocation table.
pub const ALLOCATION_TABLE: &str = "cost_allocation";
/// Directory and SQL name of the assets table.
pub const ASSETS_TABLE: &str = "cost_assets";

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn map_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

type Get = fn(&Allocation) -> f64;
type Set = fn(&mut Allocation, f64);

/// The numeric columns of `cost_allocation`, in order.
const ALLOC_F64: &[(&str, Get, Set)] = &[
    ("minutes", |a| a.minutes, |a, v| a.minutes = v),
    (
        "cpu_request_core_hours",
        |a| a.cpu_request_hours,
        |a, v| a.cpu_request_hours = v,
    ),
    (
        "cpu_usage_core_hours",
        |a| a.cpu_usage_hours,
        |a, v| a.cpu_usage_hours = v,
    ),
    (
        "cpu_limit_core_hours",
        |a| a.cpu_limit_hours,
        |a, v| a.cpu_limit_hours = v,
    ),
    (
        "cpu_core_hours",
        |a| a.cpu_core_hours,
        |a, v| a.cpu_core_hours = v,
    ),
    ("cpu_cost", |a| a.cpu_cost, |a, v| a.cpu_cost = v),
    (
        "ram_request_byte_hours",
        |a| a.ram_request_byte_hours,
        |a, v| a.ram_request_byte_hours = v,
    ),
    (
        "ram_usage_byte_hours",
        |a| a.ram_usage_byte_hours,
        |a, v| a.ram_usage_byte_hours = v,
    ),
    (
        "ram_limit_byte_hours",
        |a| a.ram_limit_byte_hours,
        |a, v| a.ram_limit_byte_hours = v,
    ),
    (
        "ram_byte_hours",
        |a| a.ram_byte_hours,
        |a, v| a.ram_byte_hours = v,
    ),
    ("ram_cost", |a| a.ram_cost, |a, v| a.ram_cost = v),
    ("gpu_hours", |a| a.gpu_hours, |a, v| a.gpu_hours = v),
    (
        "gpu_usage_hours",
        |a| a.gpu_usage_hours,
        |a, v| a.gpu_usage_hours = v,
    ),
    ("gpu_cost", |a| a.gpu_cost, |a, v| a.gpu_cost = v),
    (
        "pv_byte_hours",
        |a| a.pv_byte_hours,
        |a, v| a.pv_byte_hours = v,
    ),
    ("pv_cost", |a| a.pv_cost, |a, v| a.pv_cost = v),
    (
        "network_transfer_bytes",
        |a| a.network_transfer_bytes,
        |a, v| a.network_transfer_bytes = v,
    ),
    (
        "network_receive_bytes",
        |a| a.network_receive_bytes,
        |a, v| a.network_receive_bytes = v,
    ),
    (
        "network_cross_zone_cost",
        |a| a.network_cross_zone_cost,
        |a, v| a.network_cross_zone_cost = v,
    ),
    (
        "network_cross_region_cost",
        |a| a.network_cross_region_cost,
        |a, v| a.network_cross_region_cost = v,
    ),
    (
        "network_internet_cost",
        |a| a.network_internet_cost,
        |a, v| a.network_internet_cost = v,
    ),
    ("load_balancer_cost", |a| a.lb_cost, |a, v| a.lb_cost = v),
    ("shared_cost", |a| a.shared_cost, |a, v| a.shared_cost = v),
    (
        "external_cost",
        |a| a.external_cost,
        |a, v| a.external_cost = v,
    ),
];

type PGet = fn(&Properties) -> &String;
type PSet = fn(&mut Properties, String);

/// The text columns of `cost_allocation` (after `window_start`, `window_end`, `name`).
const ALLOC_STR: &[(&str, PGet, PSet)] = &[
    ("cluster", |p| &p.cluster, |p, v| p.cluster = v),
    ("node", |p| &p.node, |p, v| p.node = v),
    ("namespace", |p| &p.namespace, |p, v| p.namespace = v),
    (
        "controller_kind",
        |p| &p.controller_kind,
        |p, v| p.controller_kind = v,
    ),
    ("controller", |p| &p.controller, |p, v| p.controller = v),
    ("pod", |p| &p.pod, |p, v| p.pod = v),
    ("container", |p| &p.container, |p, v| p.container = v),
    ("provider_id", |p| &p.provider_id, |p, v| p.provider_id = v),
];

type MGet = fn(&Properties) -> &BTreeMap<String, String>;
type MSet = fn(&mut Properties, BTreeMap<String, String>);

const ALLOC_MAPS: &[(&str, MGet, MSet)] = &[
    ("labels", |p| &p.labels, |p, v| p.labels = v),
    ("annotations", |p| &p.annotations, |p, v| p.annotations = v),
    (
        "namespace_labels",
        |p| &p.namespace_labels,
        |p, v| p.namespace_labels = v,
    ),
    (
        "namespace_annotations",
        |p| &p.namespace_annotations,
        |p, v| p.namespace_annotations = v,
    ),
];

/// `cost_allocation`'s schema.
pub fn allocation_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut f = vec![
            Field::new("window_start", ts(), false),
            Field::new("window_end", ts(), false),
            Field::new("name", DataType::Utf8, false),
        ];
        f.extend(
            ALLOC_STR
                .iter()
                .map(|(n, _, _)| Field::new(*n, DataType::Utf8, false)),
        );
        f.push(Field::new("services", DataType::Utf8, false));
        f.extend(
            ALLOC_MAPS
                .iter()
                .map(|(n, _, _)| Field::new(*n, map_type(), false)),
        );
        f.push(Field::new("start", ts(), false));
        f.push(Field::new("end", ts(), false));
        f.extend(
            ALLOC_F64
                .iter()
                .map(|(n, _, _)| Field::new(*n, DataType::Float64, false)),
        );
        f.push(Field::new("cpu_usage_max", DataType::Float64, true));
        f.push(Field::new("ram_usage_max", DataType::Float64, true));
        f.push(Field::new("pvs", DataType::Utf8, false));
        f.push(Field::new("total_cost", DataType::Float64, false));
        Arc::new(Schema::new(f))
    });
    Arc::clone(&S)
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(
        Some(MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    )
}

fn ts_col(v: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
    for x in v {
        b.append_value(x);
    }
    Arc::new(b.finish())
}

fn map_col<'a>(rows: impl Iterator<Item = &'a BTreeMap<String, String>>) -> Result<ArrayRef> {
    let mut b = map_builder();
    for m in rows {
        for (k, v) in m {
            b.keys().append_value(k);
            b.values().append_value(v);
        }
        b.append(true).map_err(arrow_err)?;
    }
    Ok(Arc::new(b.finish()))
}

fn arrow_err(e: arrow::error::ArrowError) -> Error {
    Error::Execution(format!("cost table: {e}"))
}

fn pvs_json(a: &Allocation) -> String {
    let m: serde_json::Map<String, serde_json::Value> = a
        .pvs
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::json!({"byteHours": v.byte_hours, "cost": v.cost, "providerID": v.provider_id}),
            )
        })
        .collect();
    serde_json::Value::Object(m).to_string()
}

/// The allocation rows of `set` as one batch.
pub fn allocation_batch(set: &CostSet) -> Result<RecordBatch> {
    let rows = &set.allocations;
    let w = set.window;
    let mut cols: Vec<ArrayRef> = vec![
        ts_col(rows.iter().map(|_| w.start_ms)),
        ts_col(rows.iter().map(|_| w.end_ms)),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|a| a.name.as_str()),
        )),
    ];
    for (_, get, _) in ALLOC_STR {
        cols.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|a| get(&a.properties).as_str()),
        )));
    }
    cols.push(Arc::new(StringArray::from_iter_values(rows.iter().map(
        |a| serde_json::Value::from(a.properties.services.clone()).to_string(),
    ))));
    for (_, get, _) in ALLOC_MAPS {
        cols.push(map_col(rows.iter().map(|a| get(&a.properties)))?);
    }
    cols.push(ts_col(rows.iter().map(|a| a.start_ms)));
    cols.push(ts_col(rows.iter().map(|a| a.end_ms)));
    for (_, get, _) in ALLOC_F64 {
        cols.push(Arc::new(Float64Array::from_iter_values(
            rows.iter().map(get),
        )));
    }
    cols.push(Arc::new(Float64Array::from_iter(
        rows.iter().map(|a| a.cpu_usage_max),
    )));
    cols.push(Arc::new(Float64Array::from_iter(
        rows.iter().map(|a| a.ram_usage_max),
    )));
    cols.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(pvs_json),
    )));
    cols.push(Arc::new(Float64Array::from_iter_values(
        rows.iter().map(Allocation::total_cost),
    )));
    RecordBatch::try_new(allocation_schema(), cols).map_err(arrow_err)
}

fn corrupt(what: &str) -> Error {
    Error::Execution(format!(
        "cost table: column {what} missing or of the wrong type"
    ))
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name).ok_or_else(|| corrupt(name))
}

fn strs<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    col(b, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt(name))
}

fn f64s<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Float64Array> {
    col(b, name)?
        .as_primitive_opt::<arrow::datatypes::Float64Type>()
        .ok_or_else(|| corrupt(name))
}

fn times<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a TimestampMillisecondArray> {
    col(b, name)?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| corrupt(name))
}

fn maps(b: &RecordBatch, name: &str) -> Result<Vec<BTreeMap<String, String>>> {
    let m = col(b, name)?.as_map_opt().ok_or_else(|| corrupt(name))?;
    let keys = m
        .keys()
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt(name))?;
    let vals = m
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt(name))?;
    let offs = m.value_offsets();
    Ok((0..b.num_rows())
        .map(|r| {
            let (lo, hi) = (offs[r] as usize, offs[r + 1] as usize);
            (lo..hi)
                .filter(|i| *i < keys.len() && *i < vals.len())
                .map(|i| (keys.value(i).to_string(), vals.value(i).to_string()))
                .collect()
        })
        .collect())
}

fn opt(a: &Float64Array, i: usize) -> Option<f64> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// Allocation rows read back from a batch of `cost_allocation`.
pub fn allocations_from(b: &RecordBatch) -> Result<Vec<Allocation>> {
    let n = b.num_rows();
    let (ws, we) = (times(b, "window_start")?, times(b, "window_end")?);
    let (st, en) = (times(b, "start")?, times(b, "end")?);
    let name = strs(b, "name")?;
    let services = strs(b, "services")?;
    let pvs = strs(b, "pvs")?;
    let strcols: Vec<_> = ALLOC_STR
        .iter()
        .map(|(c, _, set)| Ok((strs(b, c)?, *set)))
        .collect::<Result<_>>()?;
    let mapcols: Vec<_> = ALLOC_MAPS
        .iter()
        .map(|(c, _, set)| Ok((maps(b, c)?, *set)))
        .collect::<Result<_>>()?;
    let numcols: Vec<_> = ALLOC_F64
        .iter()
        .map(|(c, _, set)| Ok((f64s(b, c)?, *set)))
        .collect::<Result<_>>()?;
    let (cmax, rmax) = (f64s(b, "cpu_usage_max")?, f64s(b, "ram_usage_max")?);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut a = Allocation {
            name: name.value(i).to_string(),
            window: Window {
                start_ms: ws.value(i),
                end_ms: we.value(i),
            },
            start_ms: st.value(i),
            end_ms: en.value(i),
            cpu_usage_max: opt(cmax, i),
            ram_usage_max: opt(rmax, i),
            ..Allocation::default()
        };
        for (c, set) in &strcols {
            set(&mut a.properties, c.value(i).to_string());
        }
        for (c, set) in &mapcols {
            set(&mut a.properties, c[i].clone());
        }
        for (c, set) in &numcols {
            set(&mut a, c.value(i));
        }
        a.properties.services = serde_json::from_str(services.value(i)).unwrap_or_default();
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(pvs.value(i)) {
            for (k, v) in m {
                a.pvs.insert(
                    k,
                    PvPart {
                        byte_hours: v["byteHours"].as_f64().unwrap_or(0.0),
                        cost: v["cost"].as_f64().unwrap_or(0.0),
                        provider_id: v["providerID"].as_str().unwrap_or("").to_string(),
                    },
                );
            }
        }
        out.push(a);
    }
    Ok(out)
}

/// `cost_assets`'s schema: one row per asset and window; columns that do not apply to an
/// asset type are null.
pub fn assets_schema() -> SchemaRef {
    static S: LazyLock<SchemaRef> = LazyLock::new(|| {
        let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
        let f = |n: &str| Field::new(n, DataType::Float64, true);
        Arc::new(Schema::new(vec![
            Field::new("window_start", ts(), false),
            Field::new("window_end", ts(), false),
            s("asset_type", false),
            s("cluster", false),
            s("name", false),
            Field::new("start", ts(), true),
            Field::new("end", ts(), true),
            Field::new("minutes", DataType::Float64, false),
            s("provider_id", true),
            Field::new("labels", map_type(), true),
            s("instance_type", true),
            s("region", true),
            s("zone", true),
            Field::new("preemptible", DataType::Boolean, true),
            s("price_source", true),
            f("cpu_cores"),
            f("ram_bytes"),
            f("gpu_count"),
            f("cpu_price"),
            f("ram_price"),
            f("gpu_price"),
            f("discount"),
            f("cpu_cost"),
            f("ram_cost"),
            f("gpu_cost"),
            s("claim", true),
            s("claim_namespace", true),
            s("storage_class", true),
            f("bytes"),
            f("byte_hours"),
            f("price"),
            s("namespace", true),
            s("service", true),
            s("ip", true),
            Field::new("total_cost", DataType::Float64, false),
        ]))
    });
    Arc::clone(&S)
}

/// One asset as a row of `cost_assets`.
#[derive(Default)]
struct AssetRow {
    kind: &'static str,
    cluster: String,
    name: String,
    start: Option<i64>,
    end: Option<i64>,
    minutes: f64,
    provider_id: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    instance_type: Option<String>,
    region: Option<String>,
    zone: Option<String>,
    preemptible: Option<bool>,
    price_source: Option<String>,
    nums: [Option<f64>; 10],
    claim: Option<String>,
    claim_namespace: Option<String>,
    storage_class: Option<String>,
    disk: [Option<f64>; 3],
    namespace: Option<String>,
    service: Option<String>,
    ip: Option<String>,
    total: f64,
}

fn asset_rows(set: &CostSet) -> Vec<AssetRow> {
    let mut out = Vec::new();
    for n in &set.nodes {
        out.push(AssetRow {
            kind: "node",
            cluster: n.cluster.clone(),
            name: n.node.clone(),
            start: Some(n.start_ms),
            end: Some(n.end_ms),
            minutes: n.minutes,
            provider_id: Some(n.provider_id.clone()),
            labels: Some(n.labels.clone()),
            instance_type: Some(n.instance_type.clone()),
            region: Some(n.region.clone()),
            zone: Some(n.zone.clone()),
            preemptible: Some(n.preemptible),
            price_source: Some(n.price_source.to_string()),
            nums: [
                n.cpu_cores,
                n.ram_bytes,
                n.gpu_count,
                n.cpu_price,
                n.ram_price,
                n.gpu_price,
                n.discount,
                n.cpu_cost,
                n.ram_cost,
                n.gpu_cost,
            ]
            .map(Some),
            total: n.total_cost(),
            ..AssetRow::default()
        });
    }
    for d in &set.disks {
        out.push(AssetRow {
            kind: "disk",
            cluster: d.cluster.clone(),
            name: d.name.clone(),
            minutes: d.minutes,
            provider_id: Some(d.provider_id.clone()),
            claim: Some(d.claim.clone()),
            claim_namespace: Some(d.claim_namespace.clone()),
            storage_class: Some(d.storage_class.clone()),
            disk: [Some(d.bytes), Some(d.byte_hours), Some(d.price)],
            total: d.cost,
            ..AssetRow::default()
        });
    }
    for l in &set.load_balancers {
        out.push(AssetRow {
            kind: "load_balancer",
            cluster: l.cluster.clone(),
            name: format!("{}/{}", l.namespace, l.service),
            minutes: l.minutes,
            disk: [None, None, Some(l.price)],
            namespace: Some(l.namespace.clone()),
            service: Some(l.service.clone()),
            ip: Some(l.ip.clone()),
            total: l.cost,
            ..AssetRow::default()
        });
    }
    for m in &set.management {
        out.push(AssetRow {
            kind: "cluster_management",
            cluster: m.cluster.clone(),
            name: m.cluster.clone(),
            minutes: m.minutes,
            disk: [None, None, Some(m.price)],
            total: m.cost,
            ..AssetRow::default()
        });
    }
    out
}

/// The assets of `set` as one batch.
pub fn assets_batch(set: &CostSet) -> Result<RecordBatch> {
    let rows = asset_rows(set);
    let w = set.window;
    let s = |f: &dyn Fn(&AssetRow) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(rows.iter().map(f)))
    };
    let f = |f: &dyn Fn(&AssetRow) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(f)))
    };
    let t = |f: &dyn Fn(&AssetRow) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
        for r in &rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let mut labels = map_builder();
    for r in &rows {
        match &r.labels {
            Some(m) => {
                for (k, v) in m {
                    labels.keys().append_value(k);
                    labels.values().append_value(v);
                }
                labels.append(true).map_err(arrow_err)?;
            }
            None => labels.append(false).map_err(arrow_err)?,
        }
    }
    let mut pre = BooleanBuilder::new();
    for r in &rows {
        pre.append_option(r.preemptible);
    }
    let mut cols: Vec<ArrayRef> = vec![
        ts_col(rows.iter().map(|_| w.start_ms)),
        ts_col(rows.iter().map(|_| w.end_ms)),
        s(&|r| Some(r.kind)),
        s(&|r| Some(r.cluster.as_str())),
        s(&|r| Some(r.name.as_str())),
        t(&|r| r.start),
        t(&|r| r.end),
        f(&|r| Some(r.minutes)),
        s(&|r| r.provider_id.as_deref()),
        Arc::new(labels.finish()),
        s(&|r| r.instance_type.as_deref()),
        s(&|r| r.region.as_deref()),
        s(&|r| r.zone.as_deref()),
        Arc::new(pre.finish()),
        s(&|r| r.price_source.as_deref()),
    ];
    for i in 0..10 {
        cols.push(f(&|r| r.nums[i]));
    }
    cols.push(s(&|r| r.claim.as_deref()));
    cols.push(s(&|r| r.claim_namespace.as_deref()));
    cols.push(s(&|r| r.storage_class.as_deref()));
    for i in 0..3 {
        cols.push(f(&|r| r.disk[i]));
    }
    cols.push(s(&|r| r.namespace.as_deref()));
    cols.push(s(&|r| r.service.as_deref()));
    cols.push(s(&|r| r.ip.as_deref()));
    cols.push(f(&|r| Some(r.total)));
    RecordBatch::try_new(assets_schema(), cols).map_err(arrow_err)
}

/// Assets read back from a batch of `cost_assets` into `set` (its window is the caller's).
pub fn assets_into(b: &RecordBatch, set: &mut CostSet) -> Result<()> {
    let ws = times(b, "window_start")?;
    let we = times(b, "window_end")?;
    let kind = strs(b, "asset_type")?;
    let cluster = strs(b, "cluster")?;
    let name = strs(b, "name")?;
    let (st, en) = (times(b, "start")?, times(b, "end")?);
    let minutes = f64s(b, "minutes")?;
    let provider = strs(b, "provider_id")?;
    let labels = maps(b, "labels")?;
    let it = strs(b, "instance_type")?;
    let region = strs(b, "region")?;
    let zone = strs(b, "zone")?;
    let pre: &BooleanArray = col(b, "preemptible")?
        .as_boolean_opt()
        .ok_or_else(|| corrupt("preemptible"))?;
    let source = strs(b, "price_source")?;
    let num = |n: &str| f64s(b, n);
    let (cores, ram, gpus) = (num("cpu_cores")?, num("ram_bytes")?, num("gpu_count")?);
    let (cp, rp, gp) = (num("cpu_price")?, num("ram_price")?, num("gpu_price")?);
    let disc = num("discount")?;
    let (cc, rc, gc) = (num("cpu_cost")?, num("ram_cost")?, num("gpu_cost")?);
    let claim = strs(b, "claim")?;
    let claim_ns = strs(b, "claim_namespace")?;
    let class = strs(b, "storage_class")?;
    let (bytes, bh, price) = (num("bytes")?, num("byte_hours")?, num("price")?);
    let ns = strs(b, "namespace")?;
    let svc = strs(b, "service")?;
    let ip = strs(b, "ip")?;
    let total = num("total_cost")?;
    let g = |a: &Float64Array, i: usize| opt(a, i).unwrap_or(0.0);
    let sv = |a: &StringArray, i: usize| {
        if a.is_null(i) {
            String::new()
        } else {
            a.value(i).to_string()
        }
    };
    for i in 0..b.num_rows() {
        let window = Window {
            start_ms: ws.value(i),
            end_ms: we.value(i),
        };
        match kind.value(i) {
            "node" => set.nodes.push(NodeAsset {
                cluster: cluster.value(i).into(),
                node: name.value(i).into(),
                instance_type: sv(it, i),
                region: sv(region, i),
                zone: sv(zone, i),
                provider_id: sv(provider, i),
                labels: labels.get(i).cloned().unwrap_or_default(),
                preemptible: !pre.is_null(i) && pre.value(i),
                price_source: if sv(source, i) == "series" {
                    "series"
                } else {
                    "config"
                },
                window,
                start_ms: if st.is_null(i) {
                    window.start_ms
                } else {
                    st.value(i)
                },
                end_ms: if en.is_null(i) {
                    window.end_ms
                } else {
                    en.value(i)
                },
                minutes: minutes.value(i),
                cpu_cores: g(cores, i),
                ram_bytes: g(ram, i),
                gpu_count: g(gpus, i),
                cpu_price: g(cp, i),
                ram_price: g(rp, i),
                gpu_price: g(gp, i),
                discount: g(disc, i),
                cpu_cost: g(cc, i),
                ram_cost: g(rc, i),
                gpu_cost: g(gc, i),
            }),
            "disk" => set.disks.push(DiskAsset {
                cluster: cluster.value(i).into(),
                name: name.value(i).into(),
                claim: sv(claim, i),
                claim_namespace: sv(claim_ns, i),
                storage_class: sv(class, i),
                provider_id: sv(provider, i),
                window,
                minutes: minutes.value(i),
                bytes: g(bytes, i),
                byte_hours: g(bh, i),
                price: g(price, i),
                cost: total.value(i),
            }),
            "load_balancer" => set.load_balancers.push(LoadBalancerAsset {
                cluster: cluster.value(i).into(),
                namespace: sv(ns, i),
                service: sv(svc, i),
                ip: sv(ip, i),
                window,
                minutes: minutes.value(i),
                price: g(price, i),
                cost: total.value(i),
            }),
            "cluster_management" => set.management.push(ManagementAsset {
                cluster: cluster.value(i).into(),
                window,
                minutes: minutes.value(i),
                price: g(price, i),
                cost: total.value(i),
            }),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let w = Window::new(0, 3_600_000).unwrap();
        let mut a = Allocation {
            name: "c/n/ns/p/x".into(),
            window: w,
            start_ms: 60_000,
            end_ms: 3_600_000,
            minutes: 59.0,
            cpu_cost: 1.25,
            ram_usage_max: Some(7.0),
            ..Allocation::default()
        };
        a.properties.cluster = "c".into();
        a.properties.labels.insert("team".into(), "x".into());
        a.properties.services = vec!["s".into()];
        a.pvs.insert(
            "cluster=c:name=v".into(),
            PvPart {
                byte_hours: 2.0,
                cost: 0.5,
                provider_id: "p".into(),
            },
        );
        let set = CostSet {
            window: w,
            allocations: vec![a.clone()],
            nodes: vec![NodeAsset {
                cluster: "c".into(),
                node: "n".into(),
                window: w,
                cpu_cost: 2.0,
                price_source: "series",
                ..NodeAsset::default()
            }],
            disks: vec![DiskAsset {
                cluster: "c".into(),
                name: "v".into(),
                window: w,
                cost: 0.1,
                ..DiskAsset::default()
            }],
            ..CostSet::default()
        };
        let b = allocation_batch(&set).unwrap();
        assert_eq!(allocations_from(&b).unwrap(), vec![a]);
        let mut back = CostSet {
            window: w,
            ..CostSet::default()
        };
        assets_into(&assets_batch(&set).unwrap(), &mut back).unwrap();
        assert_eq!(back.nodes, set.nodes);
        assert_eq!(back.disks, set.disks);
    }
}
