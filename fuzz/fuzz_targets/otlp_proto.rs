//! Fuzz target: an OTLP/HTTP protobuf body through the path a request takes (gzip when it is
//! gzip, protobuf decode, translation, validation, limits, series resolution), and the same
//! bytes as a gzip member's content.
#![no_main]

use std::sync::{Arc, OnceLock};

use fleetgate_ingest::otlp::{self, Encoding, OtlpOptions, OtlpReceiver};
use fleetgate_ingest::{ClusterContext, IngestOptions, Ingester, Limits, MemorySink};
use libfuzzer_sys::fuzz_target;

struct Setup {
    ingester: Ingester<MemorySink>,
    otlp: OtlpReceiver,
    cluster: Arc<ClusterContext>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| Setup {
        ingester: Ingester::new(Arc::new(MemorySink::discarding()), IngestOptions::default()),
        otlp: OtlpReceiver::new(OtlpOptions {
            max_delta_streams: 10_000,
            ..OtlpOptions::default()
        }),
        cluster: Arc::new(
            ClusterContext::new("fuzz", Vec::new(), Limits::default())
                .unwrap_or_else(|e| panic!("cluster context: {e}")),
        ),
    })
}

fn ingest(s: &Setup, body: &[u8]) {
    let Ok(req) = otlp::decode(body, Encoding::Protobuf) else {
        return;
    };
    let mut pick = |_: Option<&str>| Arc::clone(&s.cluster);
    let _ = s.otlp.prepare(&s.ingester, &req, &mut pick, 1_767_225_600_000);
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    ingest(s, data);
    if let Ok(raw) = otlp::gunzip(data, 1 << 20) {
        ingest(s, &raw);
    }
});
