//! Captured-style payloads in `tests/fixtures/`: snappy-compressed `WriteRequest`s as a cluster
//! Prometheus sends them. Missing files are generated from `remote_write::synth` (set
//! `FLEETGATE_REGEN_FIXTURES=1` to rewrite them); the tests then read them from disk.

use std::path::PathBuf;

use fleetgate_ingest::RejectReason;
use fleetgate_ingest::remote_write::proto::{
    Exemplar, Histogram, Label, MetricMetadata, TimeSeries, WriteRequest,
};
use fleetgate_ingest::remote_write::synth::{Prng, live_request};
use prost::Message;

use crate::util::*;

/// Fixture timestamps are fixed; tests ingest them at this gateway time.
const FIXTURE_NOW_MS: i64 = 1_760_000_000_000;

fn fixture(name: &str, generate: impl FnOnce() -> WriteRequest) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    if !path.exists() || std::env::var_os("FLEETGATE_REGEN_FIXTURES").is_some() {
        std::fs::write(&path, generate().encode_snappy().unwrap()).unwrap();
    }
    std::fs::read(&path).unwrap()
}

fn live() -> Vec<u8> {
    fixture("live_2000x1.snappy", || {
        live_request(0, 2000, 1, FIXTURE_NOW_MS - 10_000, &mut Prng::new(2024))
    })
}

fn mixed() -> Vec<u8> {
    fixture("mixed_features.snappy", || {
        let mut up = series(
            &[
                ("__name__", "up"),
                ("cluster", "spoofed"),
                ("instance", "10.0.0.1:9100"),
                ("job", "node"),
            ],
            &[
                (FIXTURE_NOW_MS - 30_000, 1.0),
                (
                    FIXTURE_NOW_MS - 15_000,
                    f64::from_bits(0x7ff0_0000_0000_0002),
                ),
            ],
        );
        up.exemplars = vec![Exemplar {
            labels: vec![Label::new("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")],
            value: 0.25,
            timestamp: FIXTURE_NOW_MS - 15_000,
        }];
        let mut hist = series(
            &[
                ("__name__", "http_request_duration_seconds"),
                ("job", "api"),
            ],
            &[],
        );
        hist.histograms = vec![Histogram {
            timestamp: FIXTURE_NOW_MS - 15_000,
            ..Histogram::default()
        }];
        let inf = series(
            &[
                ("__name__", "node_filesystem_files_free"),
                ("mountpoint", "/"),
            ],
            &[(FIXTURE_NOW_MS - 15_000, f64::INFINITY)],
        );
        WriteRequest {
            timeseries: vec![up, hist, inf, TimeSeries::default()],
            metadata: vec![MetricMetadata {
                r#type: 2,
                metric_family_name: "up".into(),
                help: "1 if the target is up".into(),
                unit: String::new(),
            }],
        }
    })
}

#[tokio::test]
async fn live_fixture() {
    let body = live();
    let raw = fleetgate_ingest::remote_write::decode::decompress(&body, 1 << 20).unwrap();
    assert_eq!(
        WriteRequest::decode(raw.as_slice())
            .unwrap()
            .timeseries
            .len(),
        2000
    );
    let ing = ingester();
    let out = ing
        .remote_write(&ctx("prod"), body.clone().into(), FIXTURE_NOW_MS)
        .await
        .unwrap();
    assert_eq!((out.samples_accepted, out.series_created), (2000, 2000));
    assert!(!out.has_rejections());
    let again = ing
        .remote_write(&ctx("prod"), body.into(), FIXTURE_NOW_MS)
        .await
        .unwrap();
    assert_eq!((again.samples_accepted, again.series_created), (2000, 0));
}

#[tokio::test]
async fn mixed_fixture() {
    let ing = ingester();
    let out = ing
        .remote_write(&ctx("prod"), mixed().into(), FIXTURE_NOW_MS)
        .await
        .unwrap();
    assert_eq!(out.samples_accepted, 3);
    assert_eq!(out.exemplars_ignored, 1);
    assert_eq!(out.metadata_ignored, 1);
    assert_eq!(
        out.rejected_samples_by_reason
            .get(RejectReason::NativeHistogramUnsupported),
        1
    );
    assert_eq!(out.samples_rejected(), 1);
    let sink = ing.store();
    let up = sink
        .id_of(&labels(&[
            ("__name__", "up"),
            ("cluster", "prod"),
            ("exported_cluster", "spoofed"),
            ("instance", "10.0.0.1:9100"),
            ("job", "node"),
        ]))
        .unwrap();
    let stored = sink.samples();
    let up_samples: Vec<u64> = stored
        .iter()
        .filter(|s| s.series == up)
        .map(|s| s.value.to_bits())
        .collect();
    assert_eq!(up_samples, vec![1.0f64.to_bits(), 0x7ff0_0000_0000_0002]);
    assert_eq!(sink.series_count(), 2);
}
