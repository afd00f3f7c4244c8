//! Fuzz target: an OTLP/HTTP protobuf body through the path a request takes (protobuf decode,
//! translation, validation, limits, series resolution), and the same bytes as a gzip member's
//! content (gzip first, as for `Content-Encoding: gzip`).
#![no_main]

#[path = "otlp_common.rs"]
mod common;

use fleetgate_ingest::otlp::{self, Encoding};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = common::setup();
    common::ingest(s, data, Encoding::Protobuf);
    if let Ok(raw) = otlp::gunzip(data, 1 << 20) {
        common::ingest(s, &raw, Encoding::Protobuf);
    }
});
