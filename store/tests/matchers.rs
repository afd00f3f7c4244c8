//! Series selection: equality, regex, negation and Prometheus missing-label semantics.

use fleetgate_store::{MatchOp, Matcher};

use crate::common::*;

#[tokio::test]
async fn select_and_scan_with_matchers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = series(
        &store,
        "http_requests_total",
        &[("job", "api"), ("env", "prod")],
    );
    let b = series(&store, "http_requests_total", &[("job", "web")]);
    let c = series(&store, "cpu", &[("job", "api"), ("env", "dev")]);
    store
        .append(&[s(a, T0, 1.0), s(b, T0, 2.0), s(c, T0, 3.0)])
        .await
        .unwrap();
    let ids = |ms: &[Matcher]| {
        store
            .select_series(ms)
            .into_iter()
            .map(|x| x.0)
            .collect::<Vec<_>>()
    };
    let re = |n: &str, v: &str| Matcher::new(MatchOp::RegexMatch, n, v).unwrap();
    let nre = |n: &str, v: &str| Matcher::new(MatchOp::RegexNoMatch, n, v).unwrap();
    let ne = |n: &str, v: &str| Matcher::new(MatchOp::NotEqual, n, v).unwrap();

    assert_eq!(
        ids(&[Matcher::equal("__name__", "http_requests_total")]),
        vec![a, b]
    );
    assert_eq!(ids(&[re("job", "ap.*")]), vec![c, a]); // sorted by labels: cpu < http…
    assert_eq!(ids(&[re("job", "pi")]), Vec::<u64>::new()); // anchored
    // env="" selects series without env
    assert_eq!(
        ids(&[
            Matcher::equal("__name__", "http_requests_total"),
            Matcher::equal("env", "")
        ]),
        vec![b]
    );
    // env!="prod" includes series without env
    assert_eq!(ids(&[ne("env", "prod")]), vec![c, b]);
    // env=~"prod|" : prod or missing
    assert_eq!(ids(&[re("env", "prod|")]), vec![a, b]);
    // env!~".+" : missing only
    assert_eq!(ids(&[nre("env", ".+")]), vec![b]);
    // only empty-matching matchers: scans all series
    assert_eq!(ids(&[re("nope", ".*")]).len(), 3);
    assert_eq!(ids(&[Matcher::equal("job", "nope")]), Vec::<u64>::new());

    let out = store
        .scan(&[re("job", "api|web"), ne("env", "dev")], T0, T0)
        .await
        .unwrap();
    assert_eq!(out.iter().map(|d| d.id).collect::<Vec<_>>(), vec![a, b]);
    assert_eq!(store.label_names(), vec!["__name__", "env", "job"]);
    assert_eq!(store.label_values("job"), vec!["api", "web"]);
    assert!(store.label_values("zzz").is_empty());
}

/// A cached selection and label-value list see series created after they were cached (the
/// store caches both on first use), in label order.
#[tokio::test]
async fn cached_selection_sees_series_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let a = series(&store, "cpu", &[("namespace", "payments"), ("pod", "p2")]);
    let _ = series(&store, "cpu", &[("namespace", "search"), ("pod", "p1")]);
    let ms = [
        Matcher::equal("__name__", "cpu"),
        Matcher::new(MatchOp::RegexMatch, "namespace", "pay.*").unwrap(),
    ];
    let ids = || {
        store
            .select_series(&ms)
            .into_iter()
            .map(|x| x.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(), vec![a]);
    assert_eq!(ids(), vec![a]); // cached
    assert_eq!(store.label_values("namespace"), ["payments", "search"]);
    store.append(&[s(a, T0, 1.0)]).await.unwrap();
    assert_eq!(store.scan(&ms, T0, T0).await.unwrap().len(), 1);

    // new series: one sorting before the cached one, one after, one in a new namespace
    let b = series(&store, "cpu", &[("namespace", "payments"), ("pod", "p1")]);
    let c = series(&store, "cpu", &[("namespace", "payment-gw"), ("pod", "p9")]);
    let _ = series(&store, "cpu", &[("namespace", "ads"), ("pod", "p0")]);
    assert_eq!(ids(), vec![c, b, a]);
    assert_eq!(
        store.label_values("namespace"),
        ["ads", "payment-gw", "payments", "search"]
    );
    store.append(&[s(b, T0, 2.0), s(c, T0, 3.0)]).await.unwrap();
    let got: Vec<u64> = store
        .scan(&ms, T0, T0)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(got, vec![c, b, a]);

    // after a restart (catalog reloaded, WAL replayed) the same answers
    store.close().await.unwrap();
    drop(store);
    let store = open(dir.path()).await;
    let again: Vec<u64> = store.select_series(&ms).into_iter().map(|x| x.0).collect();
    assert_eq!(again, vec![c, b, a]);
    store.close().await.unwrap();
}
