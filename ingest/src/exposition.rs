//! Pulled metrics onto the [`crate::pipeline`]: one scrape of a `/metrics` or `/federate`
//! endpoint, parsed ([`parse`]), labelled with its target's labels (`honor_labels` semantics),
//! staleness markers for series that disappeared since the previous scrape, and the scrape's own
//! `up`, `scrape_duration_seconds` and `scrape_samples_scraped`, as Prometheus writes them.
//!
//! Samples with their own timestamp (as `/federate` answers) are stored at that timestamp and, as
//! in Prometheus, get no staleness marker when they disappear; the others are stored at the
//! scrape's time. A failed scrape (no answer, a bad status, a malformed body) writes `up` 0 and
//! marks every series of the previous scrape stale.

pub mod parse;

use std::borrow::Cow;

use hashbrown::{HashMap, HashSet};
use xxhash_rust::xxh3::Xxh3;

use self::parse::{Format, ParsedSample};
use crate::cluster::ClusterContext;
use crate::error::{Error, Result};
use crate::outcome::WriteOutcome;
use crate::pipeline::{Batch, Ingester, Sample, SeriesLabels};
use crate::sink::SeriesSink;

/// Prometheus's staleness marker.
const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);
/// Prefix of a scraped label that a target label of the same name displaced.
const EXPORTED: &str = "exported_";

/// What a scrape's series are labelled with besides their own labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Target labels (`job`, `instance`, …), added to every scraped series.
    pub labels: Vec<(String, String)>,
    /// Labels only the scrape's own series (`up`, `scrape_*`) get besides `labels`, e.g. `source`.
    pub scrape_labels: Vec<(String, String)>,
    /// `true`: a scraped label wins over the target's (as federation needs); `false`: the
    /// target's wins and the scraped value is kept as `exported_<name>`.
    pub honor_labels: bool,
}

impl Target {
    /// Part of every cache key of the target's series: two targets with different labels (or
    /// different scrape labels) never share a key.
    fn seed(&self) -> u64 {
        let mut h = Xxh3::new();
        for group in [&self.labels, &self.scrape_labels] {
            for (n, v) in group {
                h.update(n.as_bytes());
                h.update(&[0xfe]);
                h.update(v.as_bytes());
                h.update(&[0xff]);
            }
            h.update(&[0xfd]);
        }
        h.update(&[u8::from(self.honor_labels)]);
        h.digest()
    }
}

/// Per-target memory between scrapes: the series of the previous scrape that had no timestamp
/// of their own (the ones that get a staleness marker when they disappear).
#[derive(Debug, Default)]
pub struct ScrapeState {
    previous: HashMap<u128, OwnedSeries>,
}

impl ScrapeState {
    /// Series remembered for staleness.
    pub fn len(&self) -> usize {
        self.previous.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.previous.is_empty()
    }
}

#[derive(Debug, Clone)]
struct OwnedSeries {
    name: String,
    labels: Vec<(String, String)>,
}

/// What a scrape did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrapeReport {
    /// Counts of the write (scraped samples, markers and the scrape's own series).
    pub outcome: WriteOutcome,
    /// Samples in the scraped body.
    pub samples_scraped: u64,
    /// Staleness markers written for series that disappeared.
    pub stale_markers: u64,
}

/// A scraped series as the pipeline sees it: its own labels merged with the target's.
struct Scraped<'s> {
    name: &'s str,
    labels: &'s [(&'s str, Cow<'s, str>)],
    target: &'s Target,
    seed: u64,
}

fn key_of<'a>(seed: u64, name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> u128 {
    let mut h = Xxh3::with_seed(seed);
    h.update(name.as_bytes());
    h.update(&[0xff]);
    for (n, v) in labels {
        h.update(n.as_bytes());
        h.update(&[0xfe]);
        h.update(v.as_bytes());
        h.update(&[0xff]);
    }
    h.digest128()
}

/// `labels` (the scraped ones) merged with the target's into `(name, value)` pairs without
/// `__name__`: with `honor_labels` a scraped label wins; otherwise the target's wins and the
/// scraped value moves to `exported_<name>` (the prefix repeated while that name is taken).
fn owned_merge(
    name: &str,
    labels: &[(&str, Cow<'_, str>)],
    target: &Target,
) -> Vec<(String, String)> {
    let _ = name;
    let mut out: Vec<(String, String)> = labels
        .iter()
        .filter(|(n, _)| *n != "__name__")
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let mut displaced = Vec::new();
    for (tn, tv) in &target.labels {
        match out.iter().position(|(n, v)| n == tn && !v.is_empty()) {
            Some(_) if target.honor_labels => {}
            Some(i) => displaced.push(i),
            None => out.push((tn.clone(), tv.clone())),
        }
    }
    for i in displaced {
        let (n, v) = out[i].clone();
        let mut new = format!("{EXPORTED}{n}");
        while out.iter().any(|(m, _)| *m == new) {
            new.insert_str(0, EXPORTED);
        }
        out[i] = (new, v);
        if let Some(tv) = target
            .labels
            .iter()
            .find(|(tn, _)| *tn == n)
            .map(|(_, v)| v)
        {
            out.push((n, tv.clone()));
        }
    }
    out
}

impl SeriesLabels for Scraped<'_> {
    fn key(&self, seed: u64) -> u128 {
        key_of(
            seed ^ self.seed,
            self.name,
            self.labels.iter().map(|(n, v)| (*n, &**v)),
        )
    }

    /// Only used when no target label displaces a scraped one (see [`needs_owned`]).
    fn labels<'s>(&'s self, out: &mut Vec<(&'s str, &'s str)>) -> Result<()> {
        out.push(("__name__", self.name));
        out.extend(
            self.labels
                .iter()
                .filter(|(n, _)| *n != "__name__")
                .map(|(n, v)| (*n, &**v)),
        );
        for (tn, tv) in &self.target.labels {
            if !self
                .labels
                .iter()
                .any(|(n, v)| *n == tn.as_str() && !v.is_empty())
            {
                out.push((tn.as_str(), tv.as_str()));
            }
        }
        Ok(())
    }
}

/// A series with labels owned (a displaced label renamed, or a remembered series).
struct Owned<'s> {
    name: &'s str,
    pairs: Vec<(String, String)>,
    key: u128,
}

impl SeriesLabels for Owned<'_> {
    fn key(&self, _seed: u64) -> u128 {
        self.key
    }

    fn labels<'s>(&'s self, out: &mut Vec<(&'s str, &'s str)>) -> Result<()> {
        out.push(("__name__", self.name));
        out.extend(self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        Ok(())
    }
}

fn needs_owned(labels: &[(&str, Cow<'_, str>)], target: &Target) -> bool {
    !target.honor_labels
        && target
            .labels
            .iter()
            .any(|(tn, _)| labels.iter().any(|(n, v)| n == tn && !v.is_empty()))
}

impl<S: SeriesSink> Ingester<S> {
    /// Ingests one successful scrape of `body` for `cluster`: the samples, staleness markers for
    /// the series of the previous scrape that are gone, and `up` 1 with the scrape's duration and
    /// sample count. A malformed body fails as a whole ([`Error::Exposition`]) with nothing
    /// stored; the caller then records it with [`Ingester::scrape_failed`].
    #[allow(clippy::too_many_arguments)]
    pub async fn scrape(
        &self,
        cluster: &ClusterContext,
        target: &Target,
        state: &mut ScrapeState,
        body: &str,
        format: Format,
        duration_s: f64,
        now_ms: i64,
    ) -> Result<ScrapeReport> {
        self.check_budget()?;
        let mut parsed: Vec<ParsedSample<'_>> = Vec::new();
        parse::parse(body, format, |s| parsed.push(s))
            .map_err(|e| Error::Exposition(e.to_string()))?;
        let seed = self.series_seed() ^ target.seed();
        let mut batch = self.batch(cluster, now_ms, parsed.len() + 8);
        let mut seen: HashSet<u128> = HashSet::with_capacity(state.previous.len());
        for s in &parsed {
            let sample = Sample {
                timestamp_ms: s.timestamp_ms.unwrap_or(now_ms),
                value: s.value,
            };
            let key = key_of(seed, s.name, s.labels.iter().map(|(n, v)| (*n, &**v)));
            if needs_owned(&s.labels, target) {
                let owned = Owned {
                    name: s.name,
                    pairs: owned_merge(s.name, &s.labels, target),
                    key,
                };
                batch.push(&owned, &[sample])?;
            } else {
                let series = Scraped {
                    name: s.name,
                    labels: &s.labels,
                    target,
                    seed: target.seed(),
                };
                batch.push(&series, &[sample])?;
            }
            if s.timestamp_ms.is_none() {
                seen.insert(key);
                if !state.previous.contains_key(&key) {
                    state.previous.insert(
                        key,
                        OwnedSeries {
                            name: s.name.to_string(),
                            labels: owned_merge(s.name, &s.labels, target),
                        },
                    );
                }
            }
        }
        let gone: Vec<u128> = state
            .previous
            .keys()
            .filter(|k| !seen.contains(*k))
            .copied()
            .collect();
        let stale_markers = self.mark_stale(&mut batch, state, &gone, now_ms)?;
        self.scrape_series(
            &mut batch,
            target,
            1.0,
            duration_s,
            Some(parsed.len() as u64),
            now_ms,
        )?;
        let outcome = self.commit(batch.finish()).await?;
        Ok(ScrapeReport {
            outcome,
            samples_scraped: parsed.len() as u64,
            stale_markers,
        })
    }

    /// Records a failed scrape: `up` 0, the duration, and every series of the previous scrape
    /// marked stale.
    pub async fn scrape_failed(
        &self,
        cluster: &ClusterContext,
        target: &Target,
        state: &mut ScrapeState,
        duration_s: f64,
        now_ms: i64,
    ) -> Result<ScrapeReport> {
        self.check_budget()?;
        let mut batch = self.batch(cluster, now_ms, state.previous.len() + 8);
        let gone: Vec<u128> = state.previous.keys().copied().collect();
        let stale_markers = self.mark_stale(&mut batch, state, &gone, now_ms)?;
        self.scrape_series(&mut batch, target, 0.0, duration_s, Some(0), now_ms)?;
        let outcome = self.commit(batch.finish()).await?;
        Ok(ScrapeReport {
            outcome,
            samples_scraped: 0,
            stale_markers,
        })
    }

    /// Ends a target (its source was removed from the config): staleness markers for the series
    /// of its last scrape and for its `up` and `scrape_*` series, as Prometheus writes when a
    /// target goes away.
    pub async fn scrape_ended(
        &self,
        cluster: &ClusterContext,
        target: &Target,
        state: &mut ScrapeState,
        now_ms: i64,
    ) -> Result<u64> {
        let mut batch = self.batch(cluster, now_ms, state.previous.len() + 8);
        let gone: Vec<u128> = state.previous.keys().copied().collect();
        let n = self.mark_stale(&mut batch, state, &gone, now_ms)?;
        self.scrape_series(&mut batch, target, STALE_NAN, STALE_NAN, None, now_ms)?;
        self.commit(batch.finish()).await?;
        Ok(n + 3)
    }

    fn mark_stale(
        &self,
        batch: &mut Batch<'_, S>,
        state: &mut ScrapeState,
        gone: &[u128],
        now_ms: i64,
    ) -> Result<u64> {
        let mut n = 0;
        for key in gone {
            if let Some(s) = state.previous.remove(key) {
                let owned = Owned {
                    name: &s.name,
                    pairs: s.labels.clone(),
                    key: *key,
                };
                batch.push(
                    &owned,
                    &[Sample {
                        timestamp_ms: now_ms,
                        value: STALE_NAN,
                    }],
                )?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// `up`, `scrape_duration_seconds` and `scrape_samples_scraped` of a scrape, with the
    /// target's labels.
    fn scrape_series(
        &self,
        batch: &mut Batch<'_, S>,
        target: &Target,
        up: f64,
        duration_s: f64,
        scraped: Option<u64>,
        now_ms: i64,
    ) -> Result<()> {
        for (name, value) in [
            ("up", up),
            ("scrape_duration_seconds", duration_s),
            (
                "scrape_samples_scraped",
                scraped.map_or(STALE_NAN, |n| n as f64),
            ),
        ] {
            let owned = Owned {
                name,
                pairs: target
                    .labels
                    .iter()
                    .chain(&target.scrape_labels)
                    .cloned()
                    .collect(),
                key: key_of(
                    self.series_seed() ^ target.seed() ^ 0x5c4a,
                    name,
                    std::iter::empty(),
                ),
            };
            batch.push(
                &owned,
                &[Sample {
                    timestamp_ms: now_ms,
                    value,
                }],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
