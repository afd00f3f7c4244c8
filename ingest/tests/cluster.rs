//! Cluster identity on stored series: the authenticated cluster wins, the sender's is exported.

use fleetgate_ingest::Limits;

use crate::util::*;

#[tokio::test]
async fn spoofed_cluster_label_becomes_exported_cluster() {
    let ing = ingester();
    let b = body(vec![
        series(
            &[("__name__", "up"), ("cluster", "other"), ("job", "a")],
            &[(NOW_MS, 1.0)],
        ),
        series(&[("__name__", "up"), ("job", "b")], &[(NOW_MS, 1.0)]),
    ]);
    let out = ing.remote_write(&ctx("prod"), b, NOW_MS).await.unwrap();
    assert_eq!(out.samples_accepted, 2);
    assert!(!out.has_rejections());
    let sink = ing.store();
    assert!(
        sink.id_of(&labels(&[
            ("__name__", "up"),
            ("cluster", "prod"),
            ("exported_cluster", "other"),
            ("job", "a")
        ]))
        .is_some()
    );
    assert!(
        sink.id_of(&labels(&[
            ("__name__", "up"),
            ("cluster", "prod"),
            ("job", "b")
        ]))
        .is_some()
    );
    assert_eq!(sink.series_count(), 2);
}

#[tokio::test]
async fn extra_labels_override_and_export() {
    let ing = ingester();
    let c = ctx_with("prod", &[("region", "eu")], Limits::default());
    let b = body(vec![series(
        &[("__name__", "up"), ("region", "us")],
        &[(NOW_MS, 1.0)],
    )]);
    ing.remote_write(&c, b, NOW_MS).await.unwrap();
    assert!(
        ing.store()
            .id_of(&labels(&[
                ("__name__", "up"),
                ("cluster", "prod"),
                ("exported_region", "us"),
                ("region", "eu")
            ]))
            .is_some()
    );
}

#[tokio::test]
async fn same_labels_from_two_clusters_are_two_series() {
    let ing = ingester();
    let mk = || body(vec![series(&[("__name__", "up")], &[(NOW_MS, 1.0)])]);
    ing.remote_write(&ctx("a"), mk(), NOW_MS).await.unwrap();
    ing.remote_write(&ctx("b"), mk(), NOW_MS).await.unwrap();
    let samples = ing.store().samples();
    assert_eq!(samples.len(), 2);
    assert_ne!(samples[0].series, samples[1].series);
    assert_eq!(ing.active_series("a"), 1);
    assert_eq!(ing.active_series("b"), 1);
}

#[tokio::test]
async fn changed_extra_labels_take_effect_for_cached_series() {
    let ing = ingester();
    let mk = || body(vec![series(&[("__name__", "up")], &[(NOW_MS, 1.0)])]);
    ing.remote_write(&ctx("a"), mk(), NOW_MS).await.unwrap();
    let c2 = ctx_with("a", &[("env", "prod")], Limits::default());
    let out = ing.remote_write(&c2, mk(), NOW_MS).await.unwrap();
    assert_eq!(out.series_created, 1);
    assert!(
        ing.store()
            .id_of(&labels(&[
                ("__name__", "up"),
                ("cluster", "a"),
                ("env", "prod")
            ]))
            .is_some()
    );
}
