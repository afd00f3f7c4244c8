//! Fuzz target: bytes as a WAL segment, replayed as at open (header, framing, CRC, record
//! decoding, resynchronisation after damage). Must never panic; damage is counted, not fatal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fleetgate_store::fuzzing::wal_segment(data);
    // the same bytes behind a valid header, so the record decoder sees them too
    let mut with_header = b"FGWL\x01\x00\x00\x00".to_vec();
    with_header.extend_from_slice(data);
    let _ = fleetgate_store::fuzzing::wal_segment(&with_header);
});
