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

/// A sample file whose offset index puts a page past the end of its column chunk: parquet's
/// in-memory row group sliced past its buffer (fuzz/parquet_open). The footer is now refused.
#[tokio::test]
async fn a_page_outside_its_column_chunk_is_an_error_not_a_panic() {
    let bytes = include_bytes!("fixtures/fuzz_parquet_page_past_chunk.parquet").to_vec();
    let r = fleetgate_store::fuzzing::sample_file(bytes).await;
    let e = r.expect_err("a damaged footer must be refused").to_string();
    assert!(e.contains("outside"), "{e}");
}

/// A data page in dictionary encoding in a column chunk without a dictionary page: parquet's
/// column decoder panics ("Decoder for dict should have been set"); the store contains the panic
/// and answers a corrupt-file error naming it (fuzz/parquet_open).
#[tokio::test]
async fn a_decoder_panic_is_contained_as_a_corrupt_file() {
    let bytes = include_bytes!("fixtures/fuzz_parquet_dict_page_missing.parquet").to_vec();
    let r = fleetgate_store::fuzzing::sample_file(bytes).await;
    let e = r
        .expect_err("a damaged file must fail its read")
        .to_string();
    assert!(
        e.contains("corrupt") && e.contains("decoder panicked"),
        "{e}"
    );
    assert!(!fleetgate_store::fuzzing::in_contained_decode());
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
