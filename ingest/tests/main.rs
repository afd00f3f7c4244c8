//! Integration tests of fleetgate-ingest, built as one binary.

// Test helpers outside `#[test]` functions panic on purpose.
#![allow(clippy::unwrap_used)]

mod util;

mod cache;
mod cluster;
mod errors;
mod fixtures;
mod fuzz_seeds;
mod limits;
mod oracle;
mod store;
mod values;
