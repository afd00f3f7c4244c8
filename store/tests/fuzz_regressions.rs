//! Inputs the fuzz targets (`fuzz/`) found crashing the store, kept as tests: each must now be a
//! clean error.

/// A sample file whose embedded Arrow schema (IPC) has an integer of bit width 0: arrow-ipc
/// panicked decoding it when the store opened the file (fuzz/parquet_open).
#[tokio::test]
async fn a_malformed_embedded_arrow_schema_is_an_error_not_a_panic() {
    let bytes = include_bytes!("fixtures/fuzz_parquet_bad_arrow_schema.parquet").to_vec();
    let r = fleetgate_store::fuzzing::sample_file(bytes).await;
    assert!(r.is_err(), "{r:?}");
}

/// A WAL segment of junk after a valid header replays as damage, not a failure.
#[test]
fn junk_after_a_wal_header_is_counted_damage() {
    let mut seg = b"FGWL\x01\x00\x00\x00".to_vec();
    seg.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let (records, _, bad) = fleetgate_store::fuzzing::wal_segment(&seg).unwrap();
    assert_eq!(records, 0);
    assert!(bad >= 1);
}
