//! Scrapes onto a memory sink: target labels, honor_labels, staleness, the scrape's own series.

use std::sync::Arc;

use super::parse::Format;
use super::*;
use crate::{IngestOptions, Limits, MemorySink};

fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn target(honor: bool) -> Target {
    Target {
        labels: vec![
            ("job".into(), "node".into()),
            ("instance".into(), "10.0.0.1:9100".into()),
        ],
        scrape_labels: vec![],
        honor_labels: honor,
    }
}

fn stored(sink: &MemorySink, from: usize) -> Vec<String> {
    let mut v: Vec<String> = sink.samples()[from..]
        .iter()
        .map(|s| {
            let v = if s.value.to_bits() == STALE_NAN.to_bits() {
                "stale".into()
            } else {
                s.value.to_string()
            };
            format!("{} {} {v}", sink.labels(s.series).unwrap(), s.timestamp_ms)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn scrape_labels_staleness_and_up() {
    let sink = Arc::new(MemorySink::new());
    let ing = Ingester::new(Arc::clone(&sink), IngestOptions::default());
    let ctx = ClusterContext::new("c1", vec![], Limits::default()).unwrap();
    let t = target(false);
    let mut st = ScrapeState::default();
    let body = "a{job=\"own\"} 1\nb 2\n";
    let r = run(ing.scrape(&ctx, &t, &mut st, body, Format::Text, 0.5, 1000)).unwrap();
    assert_eq!((r.samples_scraped, r.stale_markers), (2, 0));
    let inst = "instance=\"10.0.0.1:9100\"";
    assert_eq!(
        stored(&sink, 0),
        vec![
            format!("a{{cluster=\"c1\", exported_job=\"own\", {inst}, job=\"node\"}} 1000 1"),
            format!("b{{cluster=\"c1\", {inst}, job=\"node\"}} 1000 2"),
            format!("scrape_duration_seconds{{cluster=\"c1\", {inst}, job=\"node\"}} 1000 0.5"),
            format!("scrape_samples_scraped{{cluster=\"c1\", {inst}, job=\"node\"}} 1000 2"),
            format!("up{{cluster=\"c1\", {inst}, job=\"node\"}} 1000 1"),
        ]
    );
    // `a` disappears: one staleness marker
    let n = sink.samples().len();
    let r = run(ing.scrape(&ctx, &t, &mut st, "b 3\n", Format::Text, 0.1, 2000)).unwrap();
    assert_eq!(r.stale_markers, 1);
    assert!(stored(&sink, n).contains(&format!(
        "a{{cluster=\"c1\", exported_job=\"own\", {inst}, job=\"node\"}} 2000 stale"
    )));
    // a failed scrape: up 0, `b` stale
    let n = sink.samples().len();
    let r = run(ing.scrape_failed(&ctx, &t, &mut st, 0.2, 3000)).unwrap();
    assert_eq!(r.stale_markers, 1);
    let after = stored(&sink, n);
    assert!(after.contains(&format!(
        "b{{cluster=\"c1\", {inst}, job=\"node\"}} 3000 stale"
    )));
    assert!(after.contains(&format!(
        "up{{cluster=\"c1\", {inst}, job=\"node\"}} 3000 0"
    )));
    assert!(st.is_empty());
}

#[test]
fn federation_keeps_labels_and_timestamps_without_staleness() {
    let sink = Arc::new(MemorySink::new());
    let ing = Ingester::new(Arc::clone(&sink), IngestOptions::default());
    let ctx = ClusterContext::new("c1", vec![], Limits::default()).unwrap();
    let t = target(true);
    let mut st = ScrapeState::default();
    let body = "up{job=\"node\",instance=\"n1\",cluster=\"their-name\"} 1 900\n";
    run(ing.scrape(&ctx, &t, &mut st, body, Format::Text, 0.1, 1000)).unwrap();
    assert!(stored(&sink, 0).contains(
        &"up{cluster=\"c1\", exported_cluster=\"their-name\", instance=\"n1\", job=\"node\"} 900 1"
            .to_string()
    ));
    assert!(st.is_empty(), "timestamped samples get no staleness");
    let r = run(ing.scrape(&ctx, &t, &mut st, "", Format::Text, 0.1, 2000)).unwrap();
    assert_eq!(r.stale_markers, 0);
}

#[test]
fn malformed_body_stores_nothing() {
    let sink = Arc::new(MemorySink::new());
    let ing = Ingester::new(Arc::clone(&sink), IngestOptions::default());
    let ctx = ClusterContext::new("c1", vec![], Limits::default()).unwrap();
    let mut st = ScrapeState::default();
    let e = run(ing.scrape(
        &ctx,
        &target(false),
        &mut st,
        "a 1\nb{ 2\n",
        Format::Text,
        0.1,
        1000,
    ))
    .unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
    assert!(sink.samples().is_empty());
}
