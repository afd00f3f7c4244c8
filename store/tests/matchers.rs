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
