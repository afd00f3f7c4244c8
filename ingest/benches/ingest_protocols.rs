//! The same live-shaped batch (2,000 series × 1 sample, ten labels each, from
//! `remote_write::synth`) through every decoder onto the pipeline, steady state (warm series
//! cache) against an in-memory sink, in samples (OTLP: data points) per second of one core:
//! - `remote_write`: snappy + protobuf → `Ingester::prepare`;
//! - `otlp_proto`: protobuf `ExportMetricsServiceRequest` (one gauge per metric name, the labels as
//!   data point attributes) → decode + translate + `OtlpReceiver::prepare`;
//! - `otlp_json`: the same request as OTLP JSON;
//! - `exposition`: the same series as Prometheus text → `Ingester::scrape` (parse, target labels,
//!   staleness tracking, the scrape's own series, append to the sink): the pull cost per sample.

// The requests are generated here, not received: a failure to encode or decode them is a bug
// that should abort the bench.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetgate_ingest::exposition::parse::Format;
use fleetgate_ingest::exposition::{ScrapeState, Target};
use fleetgate_ingest::otlp::{self, Encoding, OtlpOptions, OtlpReceiver};
use fleetgate_ingest::remote_write::synth::{Prng, live_request, live_series_labels};
use fleetgate_ingest::{ClusterContext, IngestOptions, Ingester, Limits, MemorySink};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use prost::Message;

const SERIES: usize = 2_000;
const NOW_MS: i64 = 1_760_000_000_000;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// The synthetic series as `(metric name, labels without it)`.
fn series() -> Vec<(String, Vec<(String, String)>)> {
    (0..SERIES)
        .map(|i| {
            let mut name = String::new();
            let mut labels = Vec::new();
            for l in live_series_labels(i) {
                if l.name == "__name__" {
                    name = l.value;
                } else {
                    labels.push((l.name, l.value));
                }
            }
            (name, labels)
        })
        .collect()
}

fn otlp_request(ts_ms: i64) -> ExportMetricsServiceRequest {
    let mut by_name: BTreeMap<String, Vec<NumberDataPoint>> = BTreeMap::new();
    for (i, (name, labels)) in series().into_iter().enumerate() {
        by_name.entry(name).or_default().push(NumberDataPoint {
            attributes: labels.iter().map(|(k, v)| kv(k, v)).collect(),
            time_unix_nano: ts_ms as u64 * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(i as f64 * 1.5)),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![kv("service.name", "kubelet")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: by_name
                    .into_iter()
                    .map(|(name, points)| Metric {
                        name,
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: points,
                        })),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn exposition_text() -> String {
    let mut out = String::new();
    for (i, (name, labels)) in series().into_iter().enumerate() {
        out.push_str(&name);
        out.push('{');
        for (j, (k, v)) in labels.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&format!("{k}=\"{v}\""));
        }
        out.push_str(&format!("}} {}\n", i as f64 * 1.5));
    }
    out
}

fn ctx() -> ClusterContext {
    ClusterContext::new(
        "prod-eu-1",
        vec![("region".into(), "eu-west-1".into())],
        Limits::default(),
    )
    .unwrap()
}

fn protocols(c: &mut Criterion) {
    let ctx = ctx();
    let mut g = c.benchmark_group("ingest_protocols");
    g.throughput(Throughput::Elements(SERIES as u64));

    let rw = live_request(0, SERIES, 1, NOW_MS - 5_000, &mut Prng::new(42))
        .encode_snappy()
        .unwrap();
    let ingester = Ingester::new(Arc::new(MemorySink::discarding()), IngestOptions::default());
    assert_eq!(
        ingester.prepare(&ctx, &rw, NOW_MS).unwrap().samples.len(),
        SERIES
    );
    g.bench_function("remote_write", |b| {
        b.iter(|| {
            ingester
                .prepare(&ctx, black_box(&rw), NOW_MS)
                .unwrap()
                .samples
                .len()
        })
    });

    let req = otlp_request(NOW_MS - 5_000);
    let proto = req.encode_to_vec();
    let json = serde_json::to_vec(&req).unwrap();
    eprintln!(
        "request: {SERIES} series; remote-write {} bytes snappy, OTLP {} bytes protobuf, {} bytes JSON",
        rw.len(),
        proto.len(),
        json.len()
    );
    let rx = OtlpReceiver::new(OtlpOptions::default());
    let shared = Arc::new(ctx.clone());
    let ingester = Ingester::new(Arc::new(MemorySink::discarding()), IngestOptions::default());
    for (name, body, enc) in [
        ("otlp_proto", &proto, Encoding::Protobuf),
        ("otlp_json", &json, Encoding::Json),
    ] {
        let mut pick = |_: Option<&str>| Arc::clone(&shared);
        let warm = otlp::decode(body, enc).unwrap();
        let p = rx.prepare(&ingester, &warm, &mut pick, NOW_MS).unwrap();
        assert!(
            !p.write.outcome.has_rejections(),
            "{}",
            p.write.outcome.rejection_message()
        );
        assert_eq!(p.points.points, SERIES as u64);
        g.bench_function(name, |b| {
            b.iter(|| {
                let req = otlp::decode(black_box(body), enc).unwrap();
                let mut pick = |_: Option<&str>| Arc::clone(&shared);
                rx.prepare(&ingester, &req, &mut pick, NOW_MS)
                    .unwrap()
                    .write
                    .samples
                    .len()
            })
        });
    }

    let text = exposition_text();
    let ingester = Ingester::new(Arc::new(MemorySink::discarding()), IngestOptions::default());
    let target = Target {
        labels: vec![
            ("instance".into(), "10.0.0.1:9100".into()),
            ("job".into(), "pull".into()),
        ],
        scrape_labels: vec![("source".into(), "bench".into())],
        honor_labels: false,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut state = ScrapeState::default();
    let first = rt
        .block_on(ingester.scrape(&ctx, &target, &mut state, &text, Format::Text, 0.01, NOW_MS))
        .unwrap();
    assert_eq!(first.samples_scraped, SERIES as u64);
    g.bench_function("exposition", |b| {
        b.iter(|| {
            rt.block_on(ingester.scrape(
                &ctx,
                &target,
                &mut state,
                black_box(&text),
                Format::Text,
                0.01,
                NOW_MS,
            ))
            .unwrap()
            .samples_scraped
        })
    });
    g.finish();
}

criterion_group!(benches, protocols);
criterion_main!(benches);
