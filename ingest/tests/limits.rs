//! Per-series rejections: invalid series are counted and explained while the valid ones of the
//! same request are stored; the active-series limit.

use fleetgate_ingest::remote_write::proto::{Histogram, TimeSeries, WriteRequest};
use fleetgate_ingest::{Limits, RejectReason};

use crate::util::*;

#[tokio::test]
async fn invalid_series_rejected_valid_ones_stored() {
    let limits = Limits {
        max_label_names_per_series: 4,
        max_label_value_length: 10,
        ..Limits::default()
    };
    let c = ctx_with("prod", &[], limits);
    let ok = &[(NOW_MS, 1.0)][..];
    let two = &[(NOW_MS, 1.0), (NOW_MS + 1, 2.0)][..];
    let b = body(vec![
        series(&[("__name__", "good"), ("job", "a")], ok),
        series(
            &[("__name__", "m"), ("a", "1"), ("b", "2"), ("c", "3")],
            two,
        ),
        series(&[("__name__", "m"), ("a", "01234567890")], ok),
        series(&[("__name__", "bad-name")], ok),
        series(&[("__name__", "m"), ("bad.label", "x")], ok),
        series(&[("__name__", "m"), ("a", "1"), ("a", "2")], ok),
        series(&[("job", "x")], ok),
        series(&[("__name__", "m"), ("empty", "")], ok), // empty value: dropped, accepted
        series(
            &[("__name__", "good"), ("job", "b")],
            &[(NOW_MS + 601_000, 1.0)],
        ),
        series(
            &[("__name__", "good"), ("job", "c")],
            &[(NOW_MS - 25 * 3_600_000, 1.0), (NOW_MS, 2.0)],
        ),
    ]);
    let ing = ingester();
    let out = ing.remote_write(&c, b, NOW_MS).await.unwrap();
    let r = &out.rejected_samples_by_reason;
    assert_eq!(r.get(RejectReason::TooManyLabels), 2);
    assert_eq!(r.get(RejectReason::LabelValueTooLong), 1);
    assert_eq!(r.get(RejectReason::InvalidMetricName), 1);
    assert_eq!(r.get(RejectReason::InvalidLabelName), 1);
    assert_eq!(r.get(RejectReason::DuplicateLabel), 1);
    assert_eq!(r.get(RejectReason::MissingMetricName), 1);
    assert_eq!(r.get(RejectReason::SampleTooFarInFuture), 1);
    assert_eq!(r.get(RejectReason::SampleTooOld), 1);
    assert_eq!(out.samples_rejected(), 9);
    assert_eq!(out.samples_accepted, 3);
    assert!(out.has_rejections());
    assert_eq!(out.examples.len(), 8);
    assert!(
        out.examples.contains(
            &r#"m{a="1", b="2", c="3", cluster="prod"}: too_many_labels (5 > 4)"#.to_string()
        ),
        "{:#?}",
        out.examples
    );
    assert!(
        out.examples
            .contains(&r#"m{a="1", a="2"}: duplicate_label ("a")"#.to_string())
    );
    assert!(
        out.examples
            .iter()
            .any(|e| e.starts_with(r#"good{job="b"}: sample_too_far_in_future (timestamp"#))
    );
    let stored = ing.store();
    assert_eq!(stored.samples().len(), 3);
    assert!(
        stored
            .id_of(&labels(&[
                ("__name__", "good"),
                ("cluster", "prod"),
                ("job", "a")
            ]))
            .is_some()
    );
    assert!(
        stored
            .id_of(&labels(&[("__name__", "m"), ("cluster", "prod")]))
            .is_some()
    );
    assert!(
        stored
            .id_of(&labels(&[
                ("__name__", "good"),
                ("cluster", "prod"),
                ("job", "c")
            ]))
            .is_some()
    );
    assert_eq!(stored.series_count(), 3);
    assert_eq!(stored.appends(), 1);
}

#[tokio::test]
async fn rejected_series_are_rejected_again_and_valid_cached_ones_still_checked_for_time() {
    let ing = ingester();
    let c = ctx("prod");
    let mk = |ts| {
        body(vec![
            series(&[("__name__", "bad-name")], &[(ts, 1.0)]),
            series(&[("__name__", "ok")], &[(ts, 1.0)]),
        ])
    };
    for _ in 0..2 {
        let out = ing.remote_write(&c, mk(NOW_MS), NOW_MS).await.unwrap();
        assert_eq!(
            out.rejected_samples_by_reason
                .get(RejectReason::InvalidMetricName),
            1
        );
        assert_eq!(out.samples_accepted, 1);
    }
    // timestamps are checked first, so both samples count as too far in the future
    let out = ing
        .remote_write(&c, mk(NOW_MS + 3_600_000), NOW_MS)
        .await
        .unwrap();
    assert_eq!(
        out.rejected_samples_by_reason
            .get(RejectReason::SampleTooFarInFuture),
        2
    );
    assert_eq!(out.samples_accepted, 0);
}

#[tokio::test]
async fn active_series_limit() {
    let limits = Limits {
        max_active_series: 3,
        ..Limits::default()
    };
    let c = ctx_with("small", &[], limits);
    let ing = ingester();
    let one = |name: &str, v: f64| series(&[("__name__", name)], &[(NOW_MS, v)]);
    let out = ing
        .remote_write(&c, body(vec![one("a", 1.0), one("b", 1.0)]), NOW_MS)
        .await
        .unwrap();
    assert_eq!(out.samples_accepted, 2);
    // c fits, d and e do not; a and b are active and still accepted
    let out = ing
        .remote_write(
            &c,
            body(vec![
                one("c", 1.0),
                one("d", 1.0),
                one("a", 2.0),
                one("e", 1.0),
                one("b", 2.0),
            ]),
            NOW_MS,
        )
        .await
        .unwrap();
    assert_eq!(out.samples_accepted, 3);
    assert_eq!(
        out.rejected_samples_by_reason
            .get(RejectReason::MaxActiveSeries),
        2
    );
    assert_eq!(
        out.examples[0],
        r#"d{cluster="small"}: max_active_series (limit of 3 active series reached)"#
    );
    assert_eq!(ing.active_series("small"), 3);
    // another cluster has its own budget
    let other = ing
        .remote_write(&ctx("big"), body(vec![one("d", 1.0)]), NOW_MS)
        .await
        .unwrap();
    assert_eq!(other.samples_accepted, 1);
    // once idle series are swept (b and c here, d of "big"), new series fit again
    ing.remote_write(&c, body(vec![one("a", 3.0)]), NOW_MS + 3_000_000)
        .await
        .unwrap();
    assert_eq!(ing.sweep(NOW_MS + 3_700_000), 3);
    assert_eq!(ing.active_series("small"), 1);
    let out = ing
        .remote_write(
            &c,
            body(vec![one("d", 1.0), one("e", 1.0)]),
            NOW_MS + 3_700_000,
        )
        .await
        .unwrap();
    assert_eq!(out.samples_accepted, 2);
    assert_eq!(ing.active_series("small"), 3);
}

#[tokio::test]
async fn native_histograms_are_rejected_with_a_reason() {
    let mut ts: TimeSeries = series(&[("__name__", "lat"), ("job", "a")], &[(NOW_MS, 1.0)]);
    ts.histograms = vec![
        Histogram {
            timestamp: NOW_MS,
            ..Histogram::default()
        },
        Histogram {
            timestamp: NOW_MS + 1,
            ..Histogram::default()
        },
    ];
    let b = WriteRequest {
        timeseries: vec![ts],
        metadata: vec![],
    }
    .encode_snappy()
    .unwrap();
    let ing = ingester();
    let out = ing.remote_write(&ctx("c"), b.into(), NOW_MS).await.unwrap();
    assert_eq!(
        out.rejected_samples_by_reason
            .get(RejectReason::NativeHistogramUnsupported),
        2
    );
    assert_eq!(out.samples_accepted, 1);
    assert_eq!(
        out.examples,
        vec![r#"lat{job="a"}: native_histogram_unsupported"#.to_string()]
    );
}

#[tokio::test]
async fn empty_requests_succeed_without_an_append() {
    let ing = ingester();
    for b in [
        body(vec![]),
        bytes::Bytes::new(),
        body(vec![series(&[("__name__", "up")], &[])]),
    ] {
        let out = ing.remote_write(&ctx("c"), b, NOW_MS).await.unwrap();
        assert_eq!(out.samples_accepted, 0);
        assert!(!out.has_rejections());
    }
    assert_eq!(ing.store().appends(), 0);
    assert_eq!(ing.store().series_count(), 0);
}
