//! Fuzz target: an OTLP/HTTP JSON body (proto3 JSON with OTLP's deviations) through the path a
//! request takes: JSON decode, translation, validation, limits, series resolution.
#![no_main]

#[path = "otlp_common.rs"]
mod common;

use fleetgate_ingest::otlp::Encoding;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::ingest(common::setup(), data, Encoding::Json);
});
