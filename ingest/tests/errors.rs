//! Whole-request failures map to the right error kind, and nothing is stored.

use fleetgate_ingest::remote_write::synth::{Prng, live_request};
use fleetgate_ingest::{Error, ErrorKind, IngestOptions, Ingester, MemorySink};
use prost::Message;

use crate::util::*;

fn compress(raw: &[u8]) -> bytes::Bytes {
    snap::raw::Encoder::new().compress_vec(raw).unwrap().into()
}

#[tokio::test]
async fn bad_snappy_is_bad_request() {
    let ing = ingester();
    let good = body(vec![series(&[("__name__", "up")], &[(NOW_MS, 1.0)])]);
    for bad in [
        bytes::Bytes::from_static(b"\xff\xff\xff\xff\xff"),
        good.slice(..good.len() - 3),
        bytes::Bytes::from_static(b"not snappy at all"),
    ] {
        let err = ing.remote_write(&ctx("c"), bad, NOW_MS).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
    }
    assert_eq!(ing.store().appends(), 0);
}

#[tokio::test]
async fn oversized_is_payload_too_large_before_allocating() {
    let ing = Ingester::new(
        std::sync::Arc::new(MemorySink::new()),
        IngestOptions {
            max_decompressed_bytes: 1000,
            ..IngestOptions::default()
        },
    );
    let big = live_request(0, 50, 1, NOW_MS, &mut Prng::new(3))
        .encode_snappy()
        .unwrap();
    let err = ing
        .remote_write(&ctx("c"), big.into(), NOW_MS)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1000, .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    // a header claiming 4 GiB is refused from the header alone
    let liar = bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    let err = ingester()
        .remote_write(&ctx("c"), liar, NOW_MS)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{err}");
}

#[tokio::test]
async fn malformed_protobuf_is_bad_request_and_stores_nothing() {
    let ing = ingester();
    let req = live_request(0, 20, 1, NOW_MS, &mut Prng::new(4));
    let raw = req.encode_to_vec();
    // cut in the middle of the last series: the first series are valid but nothing is appended
    let err = ing
        .remote_write(&ctx("c"), compress(&raw[..raw.len() - 7]), NOW_MS)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(matches!(err, Error::Protobuf { .. }), "{err}");
    assert_eq!(ing.store().appends(), 0);
    // invalid UTF-8 in a label value
    let mut raw = fleetgate_ingest::remote_write::proto::WriteRequest {
        timeseries: vec![series(
            &[("__name__", "up"), ("job", "aXb")],
            &[(NOW_MS, 1.0)],
        )],
        metadata: vec![],
    }
    .encode_to_vec();
    let at = raw.iter().position(|b| *b == b'X').unwrap();
    raw[at] = 0xff;
    let err = ing
        .remote_write(&ctx("c"), compress(&raw), NOW_MS)
        .await
        .unwrap_err();
    match err {
        Error::Protobuf { offset, ref reason } => {
            assert_eq!(offset, at);
            assert!(reason.contains("UTF-8 in Label.value"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn garbage_never_panics_and_is_a_client_error() {
    let ing = ingester();
    let mut rng = Prng::new(99);
    for round in 0..2000 {
        let len = rng.below(300) as usize;
        let mut raw: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if round % 2 == 0 && !raw.is_empty() {
            raw[0] = 0x0a; // start like a TimeSeries field
        }
        // raw garbage as the body, and garbage wrapped in valid snappy
        for b in [bytes::Bytes::from(raw.clone()), compress(&raw)] {
            if let Err(e) = ing.remote_write(&ctx("c"), b, NOW_MS).await {
                // a garbage snappy header may also declare a huge size
                assert!(
                    matches!(e.kind(), ErrorKind::BadRequest | ErrorKind::PayloadTooLarge),
                    "{e}"
                );
            }
        }
    }
}

#[tokio::test]
async fn store_over_budget_is_overloaded() {
    let ing = ingester();
    ing.store().set_overloaded(Some("wal full".into()));
    let b = body(vec![series(&[("__name__", "up")], &[(NOW_MS, 1.0)])]);
    let err = ing
        .remote_write(&ctx("c"), b.clone(), NOW_MS)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert_eq!(ing.store().series_count(), 0);
    ing.store().set_overloaded(None);
    assert_eq!(
        ing.remote_write(&ctx("c"), b, NOW_MS)
            .await
            .unwrap()
            .samples_accepted,
        1
    );
}
