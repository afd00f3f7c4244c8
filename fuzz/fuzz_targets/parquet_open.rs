//! Fuzz target: bytes as an hour partition's sample file, opened as at start (footer, schema,
//! key-value metadata, series table) and read whole. Must never crash: a panic inside the
//! Parquet/Arrow decoders is contained by the store (an error naming the file) and reported once
//! per location; any other panic aborts.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        fleetgate_store::fuzzing::install_contained_panic_hook();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = rt().block_on(fleetgate_store::fuzzing::sample_file(data.to_vec()));
});
