//! The committed fuzz seeds of the OTLP decoders (`fuzz/corpus/otlp_*`, one request of every
//! metric type) and of the exposition parser (`fuzz/corpus/exposition`) decode and translate
//! without a rejection into the expected series: the seeds stay meaningful inputs.

use std::sync::Arc;

use fleetgate_ingest::otlp::{self, Encoding, OtlpOptions, OtlpReceiver};
use fleetgate_ingest::{ClusterContext, IngestOptions, Ingester, Limits, MemorySink};

fn translate(body: &[u8], encoding: Encoding) -> (u64, Vec<String>) {
    let sink = Arc::new(MemorySink::new());
    let ingester = Ingester::new(Arc::clone(&sink), IngestOptions::default());
    let rx = OtlpReceiver::new(OtlpOptions::default());
    let ctx = Arc::new(ClusterContext::new("seed", vec![], Limits::default()).unwrap());
    let req = otlp::decode(body, encoding).unwrap();
    let mut pick = |_: Option<&str>| Arc::clone(&ctx);
    let p = rx
        .prepare(&ingester, &req, &mut pick, 1_767_225_600_000)
        .unwrap();
    assert!(
        !p.write.outcome.has_rejections(),
        "{}",
        p.write.outcome.rejection_message()
    );
    let mut names: Vec<String> = p
        .write
        .samples
        .iter()
        .map(|s| sink.labels(s.series).unwrap().metric_name().to_string())
        .collect();
    names.sort();
    names.dedup();
    (p.points.points, names)
}

fn seed(name: &str) -> Vec<u8> {
    let p = format!("{}/../fuzz/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn protobuf_seed() {
    let (points, names) = translate(&seed("otlp_proto/seed-all-types.pb"), Encoding::Protobuf);
    assert_eq!(points, 7);
    assert_eq!(
        names,
        [
            "events_per_second_total",
            "http_requests_total",
            "latency_seconds_bucket",
            "latency_seconds_count",
            "latency_seconds_sum",
            "memory_usage_bytes",
            "rpc_latency_milliseconds",
            "rpc_latency_milliseconds_count",
            "rpc_latency_milliseconds_sum",
            "sizes_bytes_bucket",
            "sizes_bytes_count",
            "sizes_bytes_sum",
            "target_info",
        ]
    );
    let gz = seed("otlp_proto/seed-all-types.pb.gz");
    let raw = otlp::gunzip(&gz, 1 << 20).unwrap();
    assert_eq!(raw, seed("otlp_proto/seed-all-types.pb"));
}

#[test]
fn json_seed() {
    let (points, names) = translate(&seed("otlp_json/seed-all-types.json"), Encoding::Json);
    assert_eq!(points, 6);
    assert_eq!(
        names,
        [
            "events_total",
            "http_requests_total",
            "latency_seconds_bucket",
            "latency_seconds_count",
            "latency_seconds_sum",
            "memory_usage_bytes",
            "rpc_latency_milliseconds",
            "rpc_latency_milliseconds_count",
            "rpc_latency_milliseconds_sum",
            "sizes_bucket",
            "sizes_count",
            "target_info",
        ]
    );
    assert_eq!(
        translate(&seed("otlp_json/seed-empty.json"), Encoding::Json).0,
        0
    );
}

#[test]
fn exposition_seeds() {
    use fleetgate_ingest::exposition::parse::{Format, parse};
    let count = |name: &str, format| {
        let text = String::from_utf8(seed(name)).unwrap();
        let mut n = 0;
        parse(&text, format, |_| n += 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        n
    };
    assert_eq!(count("exposition/seed-text.prom", Format::Text), 10);
    assert_eq!(
        count("exposition/seed-openmetrics.om", Format::OpenMetrics),
        3
    );
}
