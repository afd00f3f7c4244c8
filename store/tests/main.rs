//! Integration tests of the store, built as one binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test/bench code: panics are failures

mod caches;
mod catalog;
mod common;
mod compaction;
mod fuzz_regressions;
mod layout;
mod lifecycle;
mod matchers;
mod round_trip;
mod wal;
