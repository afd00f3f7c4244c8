//! Fuzz target: bytes as an hour partition's sample file, opened as at start (footer, schema,
//! key-value metadata, series table) and read whole. Must never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = rt().block_on(fleetgate_store::fuzzing::sample_file(data.to_vec()));
});
