//! Fuzz target: a remote-write body through the ingest path a request takes (snappy, protobuf,
//! validation, limits, series resolution), once as sent and once snappy-compressed by us so the
//! fuzzer also reaches the protobuf decoder with arbitrary bytes.
#![no_main]

use std::sync::{Arc, OnceLock};

use fleetgate_ingest::{ClusterContext, IngestOptions, Ingester, Limits, MemorySink};
use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (Ingester<MemorySink>, ClusterContext) {
    static S: OnceLock<(Ingester<MemorySink>, ClusterContext)> = OnceLock::new();
    S.get_or_init(|| {
        let ingester = Ingester::new(
            Arc::new(MemorySink::discarding()),
            IngestOptions {
                max_decompressed_bytes: 1 << 20,
                ..IngestOptions::default()
            },
        );
        let cluster = ClusterContext::new("fuzz", Vec::new(), Limits::default())
            .unwrap_or_else(|e| panic!("cluster context: {e}"));
        (ingester, cluster)
    })
}

fuzz_target!(|data: &[u8]| {
    let (ingester, cluster) = setup();
    let now = 1_767_225_600_000;
    let _ = ingester.prepare(cluster, data, now);
    if let Ok(compressed) = snap::raw::Encoder::new().compress_vec(data) {
        let _ = ingester.prepare(cluster, &compressed, now);
    }
});
