//! Whole-request translation cases: an OTLP request in, the stored series and samples out
//! (rendered `name{labels}` with the gateway's `cluster` label), one case per rule.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, any_value::Value as AV,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exponential_histogram_data_point::Buckets as ExpBuckets, metric::Data,
    number_data_point::Value, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::otlp::{ExponentialHistograms, OtlpOptions, OtlpReceiver};
use crate::outcome::RejectReason;
use crate::{ClusterContext, IngestOptions, Ingester, Limits, MemorySink};

const T: u64 = 1_700_000_000_123_456_789; // ns; 1_700_000_000_123 ms

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(AV::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn kv(k: &str, v: AV) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn num(attrs: Vec<KeyValue>, v: f64, t: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: t,
        value: Some(Value::AsDouble(v)),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Run {
    sink: Arc<MemorySink>,
    ingester: Ingester<MemorySink>,
    otlp: OtlpReceiver,
    ctx: Arc<ClusterContext>,
}

impl Run {
    fn new(options: OtlpOptions) -> Self {
        let sink = Arc::new(MemorySink::new());
        let ingester = Ingester::new(Arc::clone(&sink), IngestOptions::default());
        let ctx = Arc::new(ClusterContext::new("c1", vec![], Limits::default()).unwrap());
        Self {
            sink,
            ingester,
            otlp: OtlpReceiver::new(options),
            ctx,
        }
    }

    /// Exports and returns (rejected data points, reasons) and the stored samples as
    /// `name{labels} ts value`, sorted.
    fn export(&self, req: &ExportMetricsServiceRequest) -> (u64, Vec<RejectReason>, Vec<String>) {
        let ctx = Arc::clone(&self.ctx);
        let mut pick = move |_: Option<&str>| Arc::clone(&ctx);
        let before = self.sink.samples().len();
        let prepared = self
            .otlp
            .prepare(&self.ingester, req, &mut pick, 1_700_000_000_200)
            .unwrap();
        let counts = prepared.points;
        let prepared = prepared.write;
        let reasons = prepared
            .outcome
            .rejected_samples_by_reason
            .iter()
            .map(|(r, _)| r)
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(self.ingester.commit(prepared)).unwrap();
        let mut out: Vec<String> = self.sink.samples()[before..]
            .iter()
            .map(|s| {
                let v = if s.value.to_bits() == super::STALE_NAN.to_bits() {
                    "stale".to_string()
                } else {
                    s.value.to_string()
                };
                format!(
                    "{} {} {v}",
                    self.sink.labels(s.series).unwrap(),
                    s.timestamp_ms
                )
            })
            .collect();
        out.sort();
        (counts.rejected, reasons, out)
    }
}

fn stored(req: ExportMetricsServiceRequest) -> Vec<String> {
    let (rejected, reasons, out) = Run::new(OtlpOptions::default()).export(&req);
    assert_eq!((rejected, reasons), (0, vec![]), "{out:?}");
    out
}

const MS: i64 = 1_700_000_000_123;

#[test]
fn gauge_job_instance_and_target_info() {
    let req = request(
        vec![
            s("service.name", "api"),
            s("service.namespace", "shop"),
            s("service.instance.id", "pod-1"),
            s("k8s.pod.name", "api-7f"),
            s("host.arch", "amd64"),
        ],
        vec![metric(
            "memory.usage",
            "By",
            Data::Gauge(Gauge {
                data_points: vec![num(vec![s("state", "used")], 5.0, T)],
            }),
        )],
    );
    assert_eq!(
        stored(req),
        vec![
            format!(
                "memory_usage_bytes{{cluster=\"c1\", instance=\"pod-1\", job=\"shop/api\", k8s_pod_name=\"api-7f\", state=\"used\"}} {MS} 5"
            ),
            format!(
                "target_info{{cluster=\"c1\", host_arch=\"amd64\", instance=\"pod-1\", job=\"shop/api\", k8s_pod_name=\"api-7f\"}} {MS} 1"
            ),
        ]
    );
}

#[test]
fn no_target_info_without_other_attributes_or_identity() {
    let only_identity = request(
        vec![s("service.name", "api"), s("service.instance.id", "i")],
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![num(vec![], 1.0, T)],
            }),
        )],
    );
    assert_eq!(
        stored(only_identity),
        vec![format!(
            "g{{cluster=\"c1\", instance=\"i\", job=\"api\"}} {MS} 1"
        )]
    );
    let no_identity = request(
        vec![s("host.name", "h")],
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![num(vec![], 1.0, T)],
            }),
        )],
    );
    assert_eq!(
        stored(no_identity),
        vec![format!("g{{cluster=\"c1\"}} {MS} 1")]
    );
}

#[test]
fn label_collisions_join_in_key_order_and_values_stringify() {
    let req = request(
        vec![],
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![num(
                    vec![
                        s("a/b", "2"),
                        s("a.b", "1"),
                        kv("flag", AV::BoolValue(true)),
                        kv("n", AV::IntValue(-3)),
                        kv("d", AV::DoubleValue(0.5)),
                        kv(
                            "arr",
                            AV::ArrayValue(ArrayValue {
                                values: vec![AnyValue {
                                    value: Some(AV::StringValue("x".into())),
                                }],
                            }),
                        ),
                        s("empty", ""),
                    ],
                    1.0,
                    T,
                )],
            }),
        )],
    );
    assert_eq!(
        stored(req),
        vec![format!(
            "g{{a_b=\"1;2\", arr=\"[\\\"x\\\"]\", cluster=\"c1\", d=\"0.5\", flag=\"true\", n=\"-3\"}} {MS} 1"
        )]
    );
}

#[test]
fn promoted_attribute_loses_to_data_point_and_cluster_attribute_is_not_promoted() {
    let req = request(
        vec![
            s("k8s.namespace.name", "shop"),
            s("k8s.node.name", "n1"),
            s("k8s.cluster.name", "other"),
        ],
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![num(vec![s("k8s.node.name", "mine")], 1.0, T)],
            }),
        )],
    );
    assert_eq!(
        stored(req),
        vec![format!(
            "g{{cluster=\"c1\", k8s_namespace_name=\"shop\", k8s_node_name=\"mine\"}} {MS} 1"
        )]
    );
}

#[test]
fn sums_counters_and_up_down_counters() {
    let sum = |mono: bool, temporality: AggregationTemporality, pts: Vec<NumberDataPoint>| Sum {
        data_points: pts,
        aggregation_temporality: temporality as i32,
        is_monotonic: mono,
    };
    let req = request(
        vec![],
        vec![
            metric(
                "http.requests",
                "1",
                Data::Sum(sum(
                    true,
                    AggregationTemporality::Cumulative,
                    vec![num(vec![], 7.0, T)],
                )),
            ),
            metric(
                "queue.depth",
                "1",
                Data::Sum(sum(
                    false,
                    AggregationTemporality::Cumulative,
                    vec![num(vec![], -2.0, T)],
                )),
            ),
            metric(
                "events",
                "",
                Data::Sum(sum(
                    true,
                    AggregationTemporality::Delta,
                    vec![num(vec![], 2.0, T), num(vec![], 3.0, T + 1_000_000_000)],
                )),
            ),
        ],
    );
    assert_eq!(
        stored(req),
        vec![
            format!("events_total{{cluster=\"c1\"}} {MS} 2"),
            format!("events_total{{cluster=\"c1\"}} {} 5", MS + 1000),
            format!("http_requests_total{{cluster=\"c1\"}} {MS} 7"),
            format!("queue_depth{{cluster=\"c1\"}} {MS} -2"),
        ]
    );
}

#[test]
fn delta_state_spans_requests_and_rejects_out_of_order() {
    let run = Run::new(OtlpOptions::default());
    let req = |v: f64, t: u64| {
        request(
            vec![],
            vec![metric(
                "c",
                "",
                Data::Sum(Sum {
                    data_points: vec![num(vec![], v, t)],
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                    is_monotonic: true,
                }),
            )],
        )
    };
    assert_eq!(
        run.export(&req(1.0, T)).2,
        vec![format!("c_total{{cluster=\"c1\"}} {MS} 1")]
    );
    assert_eq!(
        run.export(&req(4.0, T + 1_000_000)).2,
        vec![format!("c_total{{cluster=\"c1\"}} {} 5", MS + 1)]
    );
    let (rejected, reasons, out) = run.export(&req(4.0, T));
    assert_eq!(
        (rejected, reasons, out),
        (1, vec![RejectReason::OutOfOrderDelta], vec![])
    );
}

#[test]
fn histogram_series_and_stale_points() {
    let req = request(
        vec![],
        vec![metric(
            "http.server.duration",
            "s",
            Data::Histogram(Histogram {
                data_points: vec![
                    HistogramDataPoint {
                        time_unix_nano: T,
                        count: 6,
                        sum: Some(2.5),
                        bucket_counts: vec![1, 2, 3],
                        explicit_bounds: vec![0.1, 1.0],
                        attributes: vec![s("le", "ignored")],
                        ..Default::default()
                    },
                    HistogramDataPoint {
                        time_unix_nano: T + 1_000_000,
                        count: 0,
                        flags: 1,
                        explicit_bounds: vec![0.1, 1.0],
                        bucket_counts: vec![0, 0, 0],
                        attributes: vec![s("le", "ignored")],
                        ..Default::default()
                    },
                ],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )],
    );
    let n = "http_server_duration_seconds";
    let l = "cluster=\"c1\"";
    let t2 = MS + 1;
    assert_eq!(
        stored(req),
        vec![
            format!("{n}_bucket{{{l}, le=\"+Inf\"}} {MS} 6"),
            format!("{n}_bucket{{{l}, le=\"+Inf\"}} {t2} stale"),
            format!("{n}_bucket{{{l}, le=\"0.1\"}} {MS} 1"),
            format!("{n}_bucket{{{l}, le=\"0.1\"}} {t2} stale"),
            format!("{n}_bucket{{{l}, le=\"1\"}} {MS} 3"),
            format!("{n}_bucket{{{l}, le=\"1\"}} {t2} stale"),
            // a data point's own `le` gives way on `_bucket` only (as in Prometheus)
            format!("{n}_count{{{l}, le=\"ignored\"}} {MS} 6"),
            format!("{n}_count{{{l}, le=\"ignored\"}} {t2} stale"),
            format!("{n}_sum{{{l}, le=\"ignored\"}} {MS} 2.5"),
        ]
    );
}

#[test]
fn summary_series() {
    let req = request(
        vec![],
        vec![metric(
            "rpc.latency",
            "ms",
            Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: T,
                    count: 10,
                    sum: 55.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 4.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 9.5,
                        },
                    ],
                    ..Default::default()
                }],
            }),
        )],
    );
    assert_eq!(
        stored(req),
        vec![
            format!("rpc_latency_milliseconds_count{{cluster=\"c1\"}} {MS} 10"),
            format!("rpc_latency_milliseconds_sum{{cluster=\"c1\"}} {MS} 55"),
            format!("rpc_latency_milliseconds{{cluster=\"c1\", quantile=\"0.5\"}} {MS} 4"),
            format!("rpc_latency_milliseconds{{cluster=\"c1\", quantile=\"0.99\"}} {MS} 9.5"),
        ]
    );
}

fn exponential() -> ExportMetricsServiceRequest {
    request(
        vec![],
        vec![metric(
            "size",
            "By",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: T,
                    count: 4,
                    sum: Some(9.0),
                    scale: 0,
                    zero_count: 1,
                    positive: Some(ExpBuckets {
                        offset: 1,
                        bucket_counts: vec![3],
                    }),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )],
    )
}

#[test]
fn exponential_histograms_classic_or_rejected() {
    let l = "cluster=\"c1\"";
    assert_eq!(
        stored(exponential()),
        vec![
            format!("size_bytes_bucket{{{l}, le=\"+Inf\"}} {MS} 4"),
            format!("size_bytes_bucket{{{l}, le=\"0\"}} {MS} 1"),
            format!("size_bytes_bucket{{{l}, le=\"4\"}} {MS} 4"),
            format!("size_bytes_count{{{l}}} {MS} 4"),
            format!("size_bytes_sum{{{l}}} {MS} 9"),
        ]
    );
    let run = Run::new(OtlpOptions {
        exponential_histograms: ExponentialHistograms::Reject,
        ..OtlpOptions::default()
    });
    let mut req = exponential();
    // the rest of the request is stored
    req.resource_metrics[0].scope_metrics[0]
        .metrics
        .push(metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![num(vec![], 1.0, T)],
            }),
        ));
    let (rejected, reasons, out) = run.export(&req);
    assert_eq!(rejected, 1);
    assert_eq!(reasons, vec![RejectReason::ExponentialHistogramUnsupported]);
    assert_eq!(out, vec![format!("g{{{l}}} {MS} 1")]);
}

#[test]
fn bad_points_are_rejected_alone() {
    let run = Run::new(OtlpOptions::default());
    let req = request(
        vec![],
        vec![
            metric(
                "...",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![num(vec![], 1.0, T)],
                }),
            ),
            metric(
                "g",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![num(vec![s("...", "x")], 1.0, T), num(vec![], 2.0, T)],
                }),
            ),
            metric(
                "unspecified",
                "",
                Data::Sum(Sum {
                    data_points: vec![num(vec![], 1.0, T)],
                    aggregation_temporality: 0,
                    is_monotonic: true,
                }),
            ),
        ],
    );
    let (rejected, mut reasons, out) = run.export(&req);
    reasons.sort();
    assert_eq!(rejected, 3);
    assert_eq!(
        reasons,
        vec![
            RejectReason::InvalidMetricName,
            RejectReason::InvalidLabelName,
            RejectReason::InvalidTemporality
        ]
    );
    assert_eq!(out, vec![format!("g{{cluster=\"c1\"}} {MS} 2")]);
}

#[test]
fn integer_values_and_millisecond_truncation() {
    let mut p = num(vec![], 0.0, 1_999_999);
    p.value = Some(Value::AsInt(42));
    let req = request(
        vec![],
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![p],
            }),
        )],
    );
    let run = Run::new(OtlpOptions::default());
    let (_, reasons, out) = run.export(&req);
    assert!(reasons.is_empty());
    assert_eq!(out, vec!["g{cluster=\"c1\"} 1 42".to_string()]);
}
