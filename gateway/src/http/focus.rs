//! `GET /api/v1/cost/focus`: the allocation as a FinOps FOCUS 1.2 cost and usage export, CSV
//! (default) or Parquet (`format=parquet`). One row per container, resource and charge period
//! (`step`, default `1d`): CPU core-hours, RAM GiB-hours, GPU-hours, storage GiB-hours, network
//! GiB, load-balancer hours, and with `includeIdle` (default true) one idle row per cluster and
//! resource, so the rows add up to what the clusters' assets cost.
//!
//! Prices are list prices (the configured sheets, or the clusters' own OpenCost series), so
//! BilledCost = EffectiveCost = ListCost = ContractedCost; SubAccountId is the cluster; Tags
//! hold the pod labels and the `fleetgate/`-prefixed cluster, namespace, controller and node.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fleetgate_query::Error;
use fleetgate_query::cost::aggregate::{AllocationQuery, aggregate};
use fleetgate_query::cost::allocation::Allocation;
use fleetgate_query::cost::window::{Period, Window, parse_step, parse_window};

use super::AppState;
use super::cost::{cost_tables, engine_for, not_ready};
use crate::prom_api::{Params, query_error};
use crate::reader::Reader;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One FOCUS row before encoding.
struct Row {
    charge: Window,
    billing: Window,
    cost: f64,
    quantity: f64,
    unit: &'static str,
    sku: &'static str,
    description: &'static str,
    resource_id: String,
    resource_name: String,
    resource_type: &'static str,
    cluster: String,
    tags: String,
    namespace: String,
    controller: String,
    node: String,
}

fn month_of(ms: i64) -> Window {
    use chrono::{DateTime, Datelike, NaiveDate, Utc};
    let Some(t) = DateTime::<Utc>::from_timestamp_millis(ms) else {
        return Window::default();
    };
    let first = |y: i32, m: u32| {
        NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(0, |d| d.and_utc().timestamp_millis())
    };
    let (y, m) = (t.year(), t.month());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Window {
        start_ms: first(y, m),
        end_ms: first(ny, nm),
    }
}

fn tags(a: &Allocation) -> String {
    let mut m = serde_json::Map::new();
    for (k, v) in &a.properties.labels {
        m.insert(k.clone(), v.as_str().into());
    }
    let p = &a.properties;
    for (k, v) in [
        ("fleetgate/cluster", &p.cluster),
        ("fleetgate/namespace", &p.namespace),
        ("fleetgate/controller", &p.controller),
        ("fleetgate/controllerKind", &p.controller_kind),
        ("fleetgate/node", &p.node),
    ] {
        if !v.is_empty() {
            m.insert(k.into(), v.as_str().into());
        }
    }
    serde_json::Value::Object(m).to_string()
}

fn rows_of(a: &Allocation, charge: Window, out: &mut Vec<Row>) {
    let idle = a.is_idle();
    let p = &a.properties;
    let (id, name, kind) = if idle {
        (
            format!("{}/__idle__", p.cluster),
            "__idle__".to_string(),
            "Idle capacity",
        )
    } else {
        (
            format!("{}/{}/{}/{}", p.cluster, p.namespace, p.pod, p.container),
            format!("{}/{}", p.pod, p.container),
            "Container",
        )
    };
    let resources: [(&'static str, f64, f64, &'static str, &'static str); 6] = [
        (
            "cpu",
            a.cpu_total_cost(),
            a.cpu_core_hours,
            "Core-Hours",
            "CPU core-hours (max of request and usage)",
        ),
        (
            "ram",
            a.ram_total_cost(),
            a.ram_byte_hours / GIB,
            "GiB-Hours",
            "Memory GiB-hours (max of request and usage)",
        ),
        (
            "gpu",
            a.gpu_total_cost(),
            a.gpu_hours,
            "GPU-Hours",
            "GPU-hours requested",
        ),
        (
            "storage",
            a.pv_cost,
            a.pv_byte_hours / GIB,
            "GiB-Hours",
            "Persistent volume GiB-hours",
        ),
        (
            "network",
            a.network_cost(),
            a.network_transfer_bytes / GIB,
            "GiB",
            "Network egress",
        ),
        (
            "load_balancer",
            a.lb_cost,
            0.0,
            "Hours",
            "Load balancer share",
        ),
    ];
    for (sku, cost, qty, unit, desc) in resources {
        if cost <= 0.0 && qty <= 0.0 {
            continue;
        }
        out.push(Row {
            charge,
            billing: month_of(charge.start_ms),
            cost,
            quantity: qty,
            unit,
            sku,
            description: if idle {
                "Idle capacity (asset cost not allocated to a container)"
            } else {
                desc
            },
            resource_id: id.clone(),
            resource_name: name.clone(),
            resource_type: kind,
            cluster: p.cluster.clone(),
            tags: tags(a),
            namespace: p.namespace.clone(),
            controller: if p.controller.is_empty() {
                String::new()
            } else {
                format!("{}:{}", p.controller_kind, p.controller)
            },
            node: p.node.clone(),
        });
    }
    if a.shared_cost > 0.0 {
        out.push(Row {
            charge,
            billing: month_of(charge.start_ms),
            cost: a.shared_cost,
            quantity: 0.0,
            unit: "Hours",
            sku: "shared",
            description: "Shared cost spread into this allocation",
            resource_id: id,
            resource_name: name,
            resource_type: kind,
            cluster: p.cluster.clone(),
            tags: tags(a),
            namespace: p.namespace.clone(),
            controller: String::new(),
            node: p.node.clone(),
        });
    }
}

fn batch(rows: &[Row], currency: &str) -> Result<RecordBatch, arrow::error::ArrowError> {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let s = |name: &str| Field::new(name, DataType::Utf8, true);
    let f = |name: &str| Field::new(name, DataType::Float64, true);
    let t = |name: &str| Field::new(name, ts(), false);
    let schema = Arc::new(Schema::new(vec![
        f("BilledCost"),
        s("BillingAccountId"),
        s("BillingAccountName"),
        s("BillingCurrency"),
        t("BillingPeriodStart"),
        t("BillingPeriodEnd"),
        s("ChargeCategory"),
        s("ChargeClass"),
        s("ChargeDescription"),
        s("ChargeFrequency"),
        t("ChargePeriodStart"),
        t("ChargePeriodEnd"),
        f("ConsumedQuantity"),
        s("ConsumedUnit"),
        f("ContractedCost"),
        f("ContractedUnitPrice"),
        f("EffectiveCost"),
        s("InvoiceIssuerName"),
        f("ListCost"),
        f("ListUnitPrice"),
        s("PricingCategory"),
        f("PricingQuantity"),
        s("PricingUnit"),
        s("ProviderName"),
        s("PublisherName"),
        s("ResourceId"),
        s("ResourceName"),
        s("ResourceType"),
        s("ServiceCategory"),
        s("ServiceName"),
        s("ServiceSubcategory"),
        s("SkuId"),
        s("SubAccountId"),
        s("SubAccountName"),
        s("SubAccountType"),
        s("Tags"),
        s("x_Namespace"),
        s("x_Controller"),
        s("x_Node"),
    ]));
    let strs = |f: &dyn Fn(&Row) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(rows.iter().map(f)))
    };
    let konst =
        |v: &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(rows.iter().map(|_| v))) };
    let nums = |f: &dyn Fn(&Row) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from_iter(rows.iter().map(f)))
    };
    let times = |f: &dyn Fn(&Row) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(f)).with_timezone("UTC"),
        )
    };
    let unit_price = |r: &Row| (r.quantity > 0.0).then(|| r.cost / r.quantity);
    let qty = |r: &Row| (r.quantity > 0.0).then_some(r.quantity);
    let none =
        || -> ArrayRef { Arc::new(StringArray::from_iter(rows.iter().map(|_| None::<&str>))) };
    let cols: Vec<ArrayRef> = vec![
        nums(&|r| Some(r.cost)),
        konst("fleetgate"),
        konst("fleetgate"),
        konst(currency),
        times(&|r| r.billing.start_ms),
        times(&|r| r.billing.end_ms),
        konst("Usage"),
        none(),
        strs(&|r| Some(r.description.to_string())),
        konst("Usage-Based"),
        times(&|r| r.charge.start_ms),
        times(&|r| r.charge.end_ms),
        nums(&|r| qty(r)),
        strs(&|r| qty(r).map(|_| r.unit.to_string())),
        nums(&|r| Some(r.cost)),
        nums(&|r| unit_price(r)),
        nums(&|r| Some(r.cost)),
        konst("fleetgate"),
        nums(&|r| Some(r.cost)),
        nums(&|r| unit_price(r)),
        konst("Standard"),
        nums(&|r| qty(r)),
        strs(&|r| qty(r).map(|_| r.unit.to_string())),
        konst("Kubernetes"),
        konst("fleetgate"),
        strs(&|r| Some(r.resource_id.clone())),
        strs(&|r| Some(r.resource_name.clone())),
        strs(&|r| Some(r.resource_type.to_string())),
        konst("Compute"),
        konst("Kubernetes"),
        konst("Containers"),
        strs(&|r| Some(r.sku.to_string())),
        strs(&|r| Some(r.cluster.clone())),
        strs(&|r| Some(r.cluster.clone())),
        konst("Kubernetes Cluster"),
        strs(&|r| Some(r.tags.clone())),
        strs(&|r| (!r.namespace.is_empty()).then(|| r.namespace.clone())),
        strs(&|r| (!r.controller.is_empty()).then(|| r.controller.clone())),
        strs(&|r| (!r.node.is_empty()).then(|| r.node.clone())),
    ];
    RecordBatch::try_new(schema, cols)
}

/// GET `/api/v1/cost/focus?window=…[&step=1d][&format=csv|parquet][&includeIdle=true]`.
pub(crate) async fn focus(
    State(st): State<Arc<AppState>>,
    reader: Reader,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, Response> {
    let p = Params::parse(q.as_deref(), &body);
    let now = crate::http::now_ms();
    let parsed = (|| -> Result<_, Error> {
        let w = match p.get("window").filter(|s| !s.trim().is_empty()) {
            Some(s) => parse_window(s, now)?,
            None => {
                return Err(Error::BadParam {
                    param: "window",
                    reason: "is required".into(),
                });
            }
        };
        let step = match p.get("step").filter(|s| !s.trim().is_empty()) {
            Some(s) => parse_step("step", s)?,
            None => 24 * 3_600_000,
        };
        let parquet = match p.get("format").map(str::trim) {
            None | Some("" | "csv") => false,
            Some("parquet") => true,
            Some(other) => {
                return Err(Error::BadParam {
                    param: "format",
                    reason: format!("{other:?}: csv or parquet"),
                });
            }
        };
        let idle = match p.get("includeIdle").map(str::trim) {
            None | Some("" | "true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                return Err(Error::BadParam {
                    param: "includeIdle",
                    reason: format!("{other:?} is not true or false"),
                });
            }
        };
        Ok((w, step, parquet, idle, engine_for(&st, &p)?))
    })();
    let (w, step, parquet, idle, (engine, mut opts)) = parsed.map_err(|e| query_error(&e))?;
    let tables = cost_tables(&st).ok_or_else(not_ready)?;
    let view = Arc::clone(&reader.view);
    let currency = st.config.cost.currency.clone();
    let r = reader
        .run(&st, "cost", move |cancel| async move {
            opts.cancel = Some(cancel);
            let sets = tables
                .steps(
                    &engine,
                    &*view,
                    view.scope(),
                    &opts,
                    w,
                    Period::Fixed(step),
                    now,
                )
                .await?;
            let q = AllocationQuery {
                include_idle: idle,
                split_idle: true,
                share_tenancy: true,
                ..AllocationQuery::default()
            };
            let mut rows = Vec::new();
            for set in &sets {
                for a in aggregate(set, &q) {
                    rows_of(&a, set.window, &mut rows);
                }
            }
            let b = batch(&rows, &currency).map_err(|e| Error::Execution(e.to_string()))?;
            let mut out = Vec::new();
            if parquet {
                let mut wr = parquet::arrow::ArrowWriter::try_new(&mut out, b.schema(), None)
                    .map_err(|e| Error::Execution(e.to_string()))?;
                wr.write(&b).map_err(|e| Error::Execution(e.to_string()))?;
                wr.close().map_err(|e| Error::Execution(e.to_string()))?;
            } else {
                let mut wr = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%SZ".to_string())
                    .build(&mut out);
                wr.write(&b).map_err(|e| Error::Execution(e.to_string()))?;
            }
            Ok::<_, Error>(out)
        })
        .await?;
    match r {
        Ok(bytes) => {
            let mut resp = bytes.into_response();
            let (ct, name) = if parquet {
                ("application/vnd.apache.parquet", "focus.parquet")
            } else {
                ("text/csv; charset=utf-8", "focus.csv")
            };
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            Ok(resp)
        }
        Err(e) => Err(query_error(&e)),
    }
}
