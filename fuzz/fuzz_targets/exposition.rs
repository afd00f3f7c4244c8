//! Fuzz target: bytes as a scraped `/metrics` or `/federate` body, in the text format and as
//! OpenMetrics → parse, target labels, staleness against the previous input, validation, limits,
//! series resolution (`Ingester::scrape`).
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use fleetgate_ingest::exposition::parse::Format;
use fleetgate_ingest::exposition::{ScrapeState, Target};
use fleetgate_ingest::{ClusterContext, IngestOptions, Ingester, Limits, MemorySink};
use libfuzzer_sys::fuzz_target;

struct Setup {
    ingester: Ingester<MemorySink>,
    cluster: ClusterContext,
    target: Target,
    state: Mutex<ScrapeState>,
    rt: tokio::runtime::Runtime,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| Setup {
        ingester: Ingester::new(Arc::new(MemorySink::discarding()), IngestOptions::default()),
        cluster: ClusterContext::new("fuzz", Vec::new(), Limits::default())
            .unwrap_or_else(|e| panic!("cluster context: {e}")),
        target: Target {
            labels: vec![
                ("instance".into(), "127.0.0.1:9100".into()),
                ("job".into(), "pull".into()),
            ],
            scrape_labels: vec![("source".into(), "fuzz".into())],
            honor_labels: false,
        },
        state: Mutex::new(ScrapeState::default()),
        rt: tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}")),
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut state = s.state.lock().unwrap_or_else(|e| e.into_inner());
    for format in [Format::Text, Format::OpenMetrics] {
        let _ = s.rt.block_on(s.ingester.scrape(
            &s.cluster,
            &s.target,
            &mut state,
            text,
            format,
            0.01,
            1_767_225_600_000,
        ));
    }
    if state.len() > 100_000 {
        *state = ScrapeState::default();
    }
});
