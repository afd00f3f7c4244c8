//! OTLP from the binary: the official Rust OpenTelemetry SDK (`opentelemetry_sdk` +
//! `opentelemetry-otlp`) exports a counter, an up-down counter, a gauge, a histogram and a delta
//! counter over OTLP/HTTP (protobuf, JSON, gzip) and OTLP/gRPC with a cluster token; the values are
//! read back through PromQL under Prometheus's translated names with `cluster` set. Bad input gets
//! OTLP's statuses and loses nothing else of the request.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{
    Compression, MetricExporter, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use prost::Message as _;

use crate::harness::*;

const TOKEN: &str = "tok-a"; // cluster `alpha` of the two-cluster config

/// Records one of each instrument on `provider` (names prefixed with `p`) and exports them.
fn record_and_flush(provider: &SdkMeterProvider, p: &str) {
    let meter = provider.meter("fleetgate-test");
    let attrs = [KeyValue::new("http.method", "GET")];
    let requests = meter
        .u64_counter(format!("{p}.requests"))
        .with_unit("1")
        .build();
    requests.add(3, &attrs);
    requests.add(4, &attrs);
    let queue = meter.i64_up_down_counter(format!("{p}.queue")).build();
    queue.add(5, &[]);
    queue.add(-2, &[]);
    let temp = meter
        .f64_gauge(format!("{p}.temperature"))
        .with_unit("Cel")
        .build();
    temp.record(21.5, &[]);
    let latency = meter
        .f64_histogram(format!("{p}.latency"))
        .with_unit("s")
        .with_boundaries(vec![0.1, 1.0])
        .build();
    for v in [0.05, 0.5, 0.7, 3.0] {
        latency.record(v, &[]);
    }
    provider.force_flush().expect("export");
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "checkout"),
            KeyValue::new("service.namespace", "shop"),
            KeyValue::new("service.instance.id", "pod-7"),
            KeyValue::new("k8s.namespace.name", "payments"),
            KeyValue::new("k8s.cluster.name", "ignored-with-a-token"),
        ])
        .build()
}

fn provider(exporter: MetricExporter) -> SdkMeterProvider {
    SdkMeterProvider::builder()
        .with_resource(resource())
        .with_periodic_exporter(exporter)
        .build()
}

fn auth_headers() -> HashMap<String, String> {
    HashMap::from([("Authorization".to_string(), format!("Bearer {TOKEN}"))])
}

/// The value of the single series `query` selects now, with its labels.
fn instant(g: &Gateway, query: &str) -> (f64, serde_json::Value) {
    let path = format!("/api/v1/query?query={}", urlencode(query));
    for _ in 0..50 {
        let (code, body) = http_get(&g.addr, &path).unwrap();
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let result = &v["data"]["result"];
        if let Some(first) = result.as_array().and_then(|a| a.first()) {
            assert_eq!(result.as_array().unwrap().len(), 1, "{query}: {body}");
            let value: f64 = first["value"][1].as_str().unwrap().parse().unwrap();
            return (value, first["metric"].clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{query}: no result");
}

fn check_exported(g: &Gateway, p: &str) {
    let (v, labels) = instant(g, &format!("{p}_requests_total"));
    assert_eq!(v, 7.0);
    assert_eq!(labels["cluster"], "alpha", "the token's cluster: {labels}");
    assert_eq!(labels["region"], "eu", "the cluster's configured label");
    assert_eq!(labels["job"], "shop/checkout");
    assert_eq!(labels["instance"], "pod-7");
    assert_eq!(labels["http_method"], "GET");
    assert_eq!(labels["k8s_namespace_name"], "payments", "promoted");
    assert!(
        labels.get("k8s_cluster_name").is_none(),
        "not promoted: {labels}"
    );
    assert_eq!(instant(g, &format!("{p}_queue")).0, 3.0);
    assert_eq!(instant(g, &format!("{p}_temperature_celsius")).0, 21.5);
    let h = format!("{p}_latency_seconds");
    assert_eq!(instant(g, &format!("{h}_count")).0, 4.0);
    assert!((instant(g, &format!("{h}_sum")).0 - 4.25).abs() < 1e-9);
    assert_eq!(instant(g, &format!("{h}_bucket{{le=\"0.1\"}}")).0, 1.0);
    assert_eq!(instant(g, &format!("{h}_bucket{{le=\"1\"}}")).0, 3.0);
    assert_eq!(instant(g, &format!("{h}_bucket{{le=\"+Inf\"}}")).0, 4.0);
    let (v, info) = instant(g, "target_info{job=\"shop/checkout\"}");
    assert_eq!(v, 1.0);
    assert_eq!(info["k8s_cluster_name"], "ignored-with-a-token", "{info}");
}

#[test]
fn sdk_exports_over_http_protobuf_json_and_grpc() {
    // the SDK's reqwest client needs the process's rustls provider (the workspace builds reqwest
    // with rustls and no provider of its own)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(dir.path(), "");
    let g = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let endpoint = format!("http://{}/v1/metrics", g.addr);

    // OTLP/HTTP protobuf, gzip
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&endpoint)
        .with_headers(auth_headers())
        .with_compression(Compression::Gzip)
        .build()
        .unwrap();
    let p = provider(exporter);
    record_and_flush(&p, "proto");
    check_exported(&g, "proto");

    // OTLP/HTTP JSON
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(&endpoint)
        .with_headers(auth_headers())
        .build()
        .unwrap();
    let p = provider(exporter);
    record_and_flush(&p, "json");
    check_exported(&g, "json");

    // a delta counter: the gateway accumulates, two exports make 7
    let exporter = MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&endpoint)
        .with_headers(auth_headers())
        .with_temporality(Temporality::Delta)
        .build()
        .unwrap();
    let p = provider(exporter);
    let c = p.meter("t").u64_counter("delta.events").build();
    c.add(3, &[]);
    p.force_flush().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    c.add(4, &[]);
    p.force_flush().unwrap();
    assert_eq!(instant(&g, "delta_events_total").0, 7.0);

    // OTLP/gRPC, gzip, the token in `authorization` metadata
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let mut md = opentelemetry_otlp::tonic_types::metadata::MetadataMap::new();
    md.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let exporter = MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", g.grpc_addr))
        .with_metadata(md)
        .with_compression(Compression::Gzip)
        .build()
        .unwrap();
    let p = provider(exporter);
    record_and_flush(&p, "grpc");
    check_exported(&g, "grpc");
    g.stop();
}

/// A raw OTLP/HTTP POST; `(status, content type, body bytes)`.
fn post(g: &Gateway, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(&g.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "POST /v1/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (code, ct, raw[split + 4..].to_vec())
}

fn gauge_request(name: &str, with_exponential: bool) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data, number_data_point::Value,
    };
    let t = now_ms() as u64 * 1_000_000;
    let mut metrics = vec![Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: t,
                value: Some(Value::AsDouble(42.0)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    }];
    if with_exponential {
        metrics.push(Metric {
            name: "sizes".into(),
            data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    time_unix_nano: t,
                    count: 1,
                    zero_count: 1,
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn bad_requests_get_otlp_statuses() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(
        dir.path(),
        "http:\n  max_body_bytes: 100000\n  max_decompressed_bytes: 100000\notlp:\n  exponential_histograms: reject\n",
    );
    let g = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let bearer = format!("Bearer {TOKEN}");
    let proto = [
        ("Content-Type", "application/x-protobuf"),
        ("Authorization", bearer.as_str()),
    ];
    let status_of = |body: &[u8]| {
        // google.rpc.Status: code (1), message (2)
        #[derive(prost::Message)]
        struct Status {
            #[prost(int32, tag = "1")]
            code: i32,
            #[prost(string, tag = "2")]
            message: String,
        }
        let s = Status::decode(body).unwrap();
        (s.code, s.message)
    };

    // malformed protobuf: 400, INVALID_ARGUMENT, naming the problem
    let (code, ct, body) = post(&g, &proto, b"\x0a\xff\xff\xff\x0f");
    assert_eq!((code, ct.as_str()), (400, "application/x-protobuf"));
    let (c, msg) = status_of(&body);
    assert_eq!(c, 3);
    assert!(msg.contains("protobuf"), "{msg}");

    // malformed JSON: 400 in JSON, naming where
    let json = [
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let (code, ct, body) = post(&g, &json, br#"{"resourceMetrics": [{"scopeMetrics": 7}]}"#);
    assert_eq!((code, ct.as_str()), (400, "application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(
        v["message"].as_str().unwrap().contains("scopeMetrics"),
        "{v}"
    );

    // wrong content type: 415
    let (code, _, _) = post(
        &g,
        &[("Content-Type", "text/plain"), ("Authorization", &bearer)],
        b"x",
    );
    assert_eq!(code, 415);

    // unknown token: 401, UNAUTHENTICATED
    let (code, _, body) = post(
        &g,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Authorization", "Bearer nope"),
        ],
        &gauge_request("never_stored", false),
    );
    assert_eq!(code, 401);
    assert_eq!(status_of(&body).0, 16);

    // over the decompressed limit (gzip bomb): 413, nothing stored
    let big = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 1 << 20]).unwrap();
        e.finish().unwrap()
    };
    let (code, _, _) = post(
        &g,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
            ("Authorization", &bearer),
        ],
        &big,
    );
    assert_eq!(code, 413);

    // an exponential histogram under `reject`: 200 with partial_success; the gauge is stored
    let (code, _, body) = post(&g, &proto, &gauge_request("kept_gauge", true));
    assert_eq!(code, 200);
    let resp = ExportMetricsServiceResponse::decode(body.as_slice()).unwrap();
    let ps = resp.partial_success.expect("partial_success");
    assert_eq!(ps.rejected_data_points, 1);
    assert!(
        ps.error_message
            .contains("exponential_histogram_unsupported"),
        "{}",
        ps.error_message
    );
    assert_eq!(instant(&g, "kept_gauge").0, 42.0);
    let (_, body) = http_get(&g.addr, "/api/v1/query?query=never_stored").unwrap();
    assert!(body.contains("\"result\":[]"), "{body}");

    // a good export: 200, no partial_success
    let (code, _, body) = post(&g, &proto, &gauge_request("second_gauge", false));
    assert_eq!(code, 200);
    let resp = ExportMetricsServiceResponse::decode(body.as_slice()).unwrap();
    assert!(resp.partial_success.is_none());
    g.stop();
}

#[test]
fn open_mode_takes_the_cluster_from_the_resource() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(&dir.path().join("data"), None, &[]);
    let body = br#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"k8s.cluster.name","value":{"stringValue":"east-1"}}]},"scopeMetrics":[{"metrics":[{"name":"open.gauge","gauge":{"dataPoints":[{"timeUnixNano":"TS","asInt":"5"}]}}]}]}]}"#;
    let ts = (now_ms() as u64 * 1_000_000).to_string();
    let body = String::from_utf8_lossy(body).replace("TS", &ts);
    let (code, _, _) = post(&g, &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(code, 200);
    let (v, labels) = instant(&g, "open_gauge");
    assert_eq!(v, 5.0);
    assert_eq!(labels["cluster"], "east-1");
    g.stop();
}

/// A codec that sends bytes as they are: a malformed message on the wire.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `body` as the Export message, as it is.
async fn raw_export(addr: &str, body: Vec<u8>) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(body);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    );
    grpc.unary(req, path, RawCodec).await.unwrap_err()
}

#[test]
fn grpc_statuses() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let cfg = two_cluster_config(
        dir.path(),
        "http:\n  max_body_bytes: 100000\n  max_decompressed_bytes: 100000\n",
    );
    let g = Gateway::start(&dir.path().join("data"), Some(&cfg), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // malformed protobuf: INVALID_ARGUMENT; over the size limit: RESOURCE_EXHAUSTED
        let e = raw_export(&g.grpc_addr, b"\x0a\xff\xff\xff\x0f".to_vec()).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        let e = raw_export(&g.grpc_addr, vec![0u8; 200_000]).await;
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
        let mut client = MetricsServiceClient::connect(format!("http://{}", g.grpc_addr))
            .await
            .unwrap();
        let req =
            ExportMetricsServiceRequest::decode(gauge_request("grpc_gauge", false).as_slice())
                .unwrap();
        // no token, then an unknown one: UNAUTHENTICATED
        let e = client
            .export(tonic::Request::new(req.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
        let mut bad = tonic::Request::new(req.clone());
        bad.metadata_mut()
            .insert("authorization", "Bearer nope".parse().unwrap());
        let e = client.export(bad).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
        // the cluster token: stored
        let mut ok = tonic::Request::new(req);
        ok.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        let resp = client.export(ok).await.unwrap().into_inner();
        assert!(resp.partial_success.is_none());
    });
    let (v, labels) = instant(&g, "grpc_gauge");
    assert_eq!((v, labels["cluster"].as_str()), (42.0, Some("alpha")));
    g.stop();
}
