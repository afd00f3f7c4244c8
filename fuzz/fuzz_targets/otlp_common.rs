//! What the OTLP fuzz targets share: an ingester over a discarding sink, a receiver with a
//! bounded delta store, one cluster, and the ingest of one body in one encoding.

use std::sync::{Arc, OnceLock};

use fleetgate_ingest::otlp::{self, Encoding, OtlpOptions, OtlpReceiver};
use fleetgate_ingest::{ClusterContext, IngestOptions, Ingester, Limits, MemorySink};

pub(crate) struct Setup {
    ingester: Ingester<MemorySink>,
    otlp: OtlpReceiver,
    cluster: Arc<ClusterContext>,
}

pub(crate) fn setup() -> &'static Setup {
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

/// Decodes `body` in `encoding` and, when it decodes, translates it onto the pipeline.
pub(crate) fn ingest(s: &Setup, body: &[u8], encoding: Encoding) {
    let Ok(req) = otlp::decode(body, encoding) else {
        return;
    };
    let mut pick = |_: Option<&str>| Arc::clone(&s.cluster);
    let _ = s.otlp.prepare(&s.ingester, &req, &mut pick, 1_767_225_600_000);
}
