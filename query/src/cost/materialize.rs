//! The cost ETL and its read side: every closed hour is computed once, for the whole fleet, into
//! the `cost_allocation` and `cost_assets` tables (partitions `resolution=hour/date=…/hour=…`),
//! re-computed when late samples arrive for it, and rolled up into days
//! (`resolution=day/date=…`) once the day is closed. Hourly rows are kept
//! `retention_hourly`, daily rows `retention_daily`, independently of the samples.
//!
//! An answer reads a whole day from its daily rows, a whole hour from its hourly rows, and
//! computes from the samples what is not materialized, is stale (samples arrived after it was
//! written) or is a part of an hour; so it is never stale or missing. Materialized rows are
//! filtered by the reader's cluster scope; computed ones read through the reader's view.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use fleetgate_store::Store;
use fleetgate_store::derived::DerivedTable;
use parking_lot::Mutex;

use super::CostEngine;
use super::aggregate::merge_sets;
use super::allocation::CostSet;
use super::table::{
    ALLOCATION_TABLE, ASSETS_TABLE, TABLE_VERSION, allocation_batch, allocations_from,
    assets_batch, assets_into,
};
use super::window::{Period, Window};
use crate::error::{Error, Result};
use crate::promql::{EngineOptions, SeriesSource};
use crate::scope::Scope;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Settings of the cost tables.
#[derive(Debug, Clone)]
pub struct MaterializeOptions {
    /// How long after its end an hour is materialized (late scrapes and remote-write retries
    /// land first). Default 10 minutes.
    pub settle_ms: i64,
    /// How long hourly rows are kept. Default 15 days.
    pub retention_hourly_ms: i64,
    /// How long daily rows are kept. Default 13 months (396 days).
    pub retention_daily_ms: i64,
    /// Hours computed in one pass at most (a pass is bounded; the next goes on).
    pub max_hours_per_pass: usize,
}

impl Default for MaterializeOptions {
    fn default() -> Self {
        Self {
            settle_ms: 10 * 60_000,
            retention_hourly_ms: 15 * DAY,
            retention_daily_ms: 396 * DAY,
            max_hours_per_pass: 48,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaterializeStats {
    /// Hours computed and written (new or re-computed).
    pub hours: usize,
    /// Days rolled up.
    pub days: usize,
    /// Partitions removed by retention.
    pub removed: usize,
    /// Hours left for the next pass.
    pub pending: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Hour → wall time its rows were computed from (0: found on disk at open).
    hours: BTreeMap<i64, i64>,
    /// Day → wall time it was rolled up.
    days: BTreeMap<i64, i64>,
}

/// The two cost tables of one store.
#[derive(Debug)]
pub struct CostTables {
    store: Arc<Store>,
    alloc: DerivedTable,
    assets: DerivedTable,
    opts: MaterializeOptions,
    state: Mutex<State>,
    /// One pass at a time.
    pass: tokio::sync::Mutex<()>,
}

fn date(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map_or_else(String::new, |t| t.format("%Y-%m-%d").to_string())
}

fn hour_key(h: i64) -> String {
    let hh = h.rem_euclid(DAY) / HOUR;
    format!("resolution=hour/date={}/hour={hh:02}", date(h))
}

fn day_key(d: i64) -> String {
    format!("resolution=day/date={}", date(d))
}

/// `(true, start)` for an hour key, `(false, start)` for a day key.
fn parse_key(key: &str) -> Option<(bool, i64)> {
    let mut parts = key.split('/');
    let res = parts.next()?.strip_prefix("resolution=")?;
    let d = parts.next()?.strip_prefix("date=")?;
    let day = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)?
        .and_utc()
        .timestamp_millis();
    match (res, parts.next()) {
        ("hour", Some(h)) => {
            let h: i64 = h.strip_prefix("hour=")?.parse().ok()?;
            (0..24).contains(&h).then_some((true, day + h * HOUR))
        }
        ("day", None) => Some((false, day)),
        _ => None,
    }
}

fn now_wall() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl CostTables {
    /// The tables of `store`; what is on disk counts as materialized (and is re-computed if the
    /// WAL replay brought samples for it).
    pub async fn open(store: Arc<Store>, opts: MaterializeOptions) -> Result<Self> {
        let alloc = store.derived(ALLOCATION_TABLE, TABLE_VERSION);
        let assets = store.derived(ASSETS_TABLE, TABLE_VERSION);
        let mut state = State::default();
        for p in alloc.partitions().await? {
            match parse_key(&p.key) {
                Some((true, h)) => {
                    state.hours.insert(h, 0);
                }
                Some((false, d)) => {
                    state.days.insert(d, 0);
                }
                None => {}
            }
        }
        Ok(Self {
            store,
            alloc,
            assets,
            opts,
            state: Mutex::new(state),
            pass: tokio::sync::Mutex::new(()),
        })
    }

    /// The options in use.
    pub fn options(&self) -> &MaterializeOptions {
        &self.opts
    }

    fn hour_fresh(&self, st: &State, h: i64) -> bool {
        st.hours
            .get(&h)
            .is_some_and(|at| self.store.hour_last_write(h).is_none_or(|w| w < *at))
    }

    fn day_fresh(&self, st: &State, d: i64) -> bool {
        st.days.get(&d).is_some_and(|at| {
            (0..24).all(|i| {
                self.store
                    .hour_last_write(d + i * HOUR)
                    .is_none_or(|w| w < *at)
            })
        })
    }

    /// Hourly rows materialized and current for the hour starting at `h`.
    pub fn is_hour_fresh(&self, h: i64) -> bool {
        self.hour_fresh(&self.state.lock(), h)
    }

    /// Daily rows materialized and current for the day starting at `d`.
    pub fn is_day_fresh(&self, d: i64) -> bool {
        self.day_fresh(&self.state.lock(), d)
    }

    async fn read(&self, key: &str, window: Window, scope: &Scope) -> Result<CostSet> {
        let mut set = CostSet {
            window,
            ..CostSet::default()
        };
        for b in self.assets.get(key).await? {
            assets_into(&b, &mut set)?;
        }
        for b in self.alloc.get(key).await? {
            set.allocations.extend(allocations_from(&b)?);
        }
        if !scope.is_fleet() {
            set.allocations
                .retain(|a| scope.allows(&a.properties.cluster));
            set.nodes.retain(|n| scope.allows(&n.cluster));
            set.disks.retain(|n| scope.allows(&n.cluster));
            set.load_balancers.retain(|n| scope.allows(&n.cluster));
            set.management.retain(|n| scope.allows(&n.cluster));
        }
        Ok(set)
    }

    async fn write(&self, key: &str, set: &CostSet) -> Result<()> {
        // assets first: a partition of the allocation table means both are whole
        self.assets.put(key, &[assets_batch(set)?]).await?;
        self.alloc.put(key, &[allocation_batch(set)?]).await?;
        Ok(())
    }

    /// One pass: computes the closed hours that are missing or stale (oldest first, at most
    /// `max_hours_per_pass`), rolls closed days up, applies retention.
    pub async fn run(
        &self,
        engine: &CostEngine,
        eopts: &EngineOptions,
        now_ms: i64,
    ) -> Result<MaterializeStats> {
        let _one = self.pass.lock().await;
        let mut stats = MaterializeStats::default();
        let closed_end = now_ms - self.opts.settle_ms;
        let oldest = now_ms - self.opts.retention_daily_ms;
        let hour_floor = now_ms - self.opts.retention_hourly_ms;
        let due: Vec<i64> = {
            let st = self.state.lock();
            self.store
                .data_hours()
                .into_iter()
                .filter(|h| *h >= oldest && h + HOUR <= closed_end && !self.hour_fresh(&st, *h))
                // past the hourly retention an hour is needed only to roll its day up again
                .filter(|h| h + HOUR > hour_floor || !self.day_fresh(&st, h.div_euclid(DAY) * DAY))
                .collect()
        };
        stats.pending = due.len().saturating_sub(self.opts.max_hours_per_pass);
        for h in due.into_iter().take(self.opts.max_hours_per_pass) {
            let at = now_wall();
            let w = Window {
                start_ms: h,
                end_ms: h + HOUR,
            };
            let set = engine.window(&*self.store, eopts, w).await?;
            self.write(&hour_key(h), &set).await?;
            self.state.lock().hours.insert(h, at);
            stats.hours += 1;
        }
        // days whose hours are all closed and current
        let days: BTreeSet<i64> = {
            let st = self.state.lock();
            st.hours
                .keys()
                .map(|h| h.div_euclid(DAY) * DAY)
                .filter(|d| d + DAY <= closed_end && !self.day_fresh(&st, *d))
                .collect()
        };
        let with_data: BTreeSet<i64> = self.store.data_hours().into_iter().collect();
        for d in days {
            let ready = {
                let st = self.state.lock();
                (0..24).all(|i| {
                    let h = d + i * HOUR;
                    self.hour_fresh(&st, h) || !with_data.contains(&h)
                })
            };
            if !ready {
                continue;
            }
            let at = now_wall();
            let mut sets = Vec::new();
            for i in 0..24 {
                let h = d + i * HOUR;
                if self.state.lock().hours.contains_key(&h) {
                    let w = Window {
                        start_ms: h,
                        end_ms: h + HOUR,
                    };
                    sets.push(self.read(&hour_key(h), w, &Scope::fleet()).await?);
                }
            }
            let day = Window {
                start_ms: d,
                end_ms: d + DAY,
            };
            self.write(&day_key(d), &merge_sets(day, &sets)).await?;
            self.state.lock().days.insert(d, at);
            stats.days += 1;
        }
        // retention: hourly rows once their day is rolled up and past `retention_hourly`
        let day_floor = oldest;
        let (old_hours, old_days): (Vec<i64>, Vec<i64>) = {
            let st = self.state.lock();
            (
                st.hours
                    .keys()
                    .copied()
                    .filter(|h| {
                        *h + HOUR <= hour_floor && st.days.contains_key(&(h.div_euclid(DAY) * DAY))
                    })
                    .chain(st.hours.keys().copied().filter(|h| *h + HOUR <= day_floor))
                    .collect(),
                st.days
                    .keys()
                    .copied()
                    .filter(|d| *d + DAY <= day_floor)
                    .collect(),
            )
        };
        let old_hours: BTreeSet<i64> = old_hours.into_iter().collect();
        for h in old_hours {
            self.alloc.delete(&hour_key(h)).await?;
            self.assets.delete(&hour_key(h)).await?;
            self.state.lock().hours.remove(&h);
            stats.removed += 1;
        }
        for d in old_days {
            self.alloc.delete(&day_key(d)).await?;
            self.assets.delete(&day_key(d)).await?;
            self.state.lock().days.remove(&d);
            stats.removed += 1;
        }
        self.store.forget_hour_writes(day_floor);
        Ok(stats)
    }

    /// The sets of `window` cut by `period` for a reader: whole days and hours from the tables
    /// where they are current, the rest computed from the samples through `src` (the reader's
    /// view, whose scope is `scope`).
    #[allow(clippy::too_many_arguments)]
    pub async fn steps<S: SeriesSource + Sync>(
        &self,
        engine: &CostEngine,
        src: &S,
        scope: &Scope,
        eopts: &EngineOptions,
        window: Window,
        period: Period,
        now_ms: i64,
    ) -> Result<Vec<CostSet>> {
        steps(
            Some(self),
            engine,
            src,
            scope,
            eopts,
            window,
            period,
            now_ms,
        )
        .await
    }
}

/// See [`CostTables::steps`]; without tables every part is computed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn steps<S: SeriesSource + Sync>(
    tables: Option<&CostTables>,
    engine: &CostEngine,
    src: &S,
    scope: &Scope,
    eopts: &EngineOptions,
    window: Window,
    period: Period,
    now_ms: i64,
) -> Result<Vec<CostSet>> {
    let n_hours = window.hours_within().len();
    if n_hours > engine.options().max_hours {
        return Err(Error::BadParam {
            param: "window",
            reason: format!(
                "covers {n_hours} hours; at most {} are answered at once",
                engine.options().max_hours
            ),
        });
    }
    let deadline = eopts.timeout.map(|d| std::time::Instant::now() + d);
    let mut out = Vec::new();
    for step in period.split(window) {
        if step.start_ms >= now_ms {
            break;
        }
        let end = step.end_ms.min(now_ms);
        let mut sets = Vec::new();
        let mut t = step.start_ms;
        while t < end {
            if let Some(tb) = tables {
                if t.rem_euclid(DAY) == 0 && t + DAY <= end && tb.is_day_fresh(t) {
                    let w = Window {
                        start_ms: t,
                        end_ms: t + DAY,
                    };
                    match tb.read(&day_key(t), w, scope).await {
                        Ok(s) => {
                            sets.push(s);
                            t += DAY;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, day = %date(t), "cost day rows unreadable; computing from samples")
                        }
                    }
                }
                if t.rem_euclid(HOUR) == 0 && t + HOUR <= end && tb.is_hour_fresh(t) {
                    let w = Window {
                        start_ms: t,
                        end_ms: t + HOUR,
                    };
                    match tb.read(&hour_key(t), w, scope).await {
                        Ok(s) => {
                            sets.push(s);
                            t += HOUR;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, hour = t, "cost hour rows unreadable; computing from samples")
                        }
                    }
                }
            }
            let next = (t.div_euclid(HOUR) + 1) * HOUR;
            let w = Window {
                start_ms: t,
                end_ms: next.min(end),
            };
            let mut opts = eopts.clone();
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout("cost allocation"));
                }
                opts.timeout = Some(left);
            }
            sets.push(engine.window(src, &opts, w).await?);
            t = w.end_ms;
        }
        out.push(merge_sets(step, &sets));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let h = 1_793_491_200_000 + 7 * HOUR; // 2026-11-01T07:00Z
        assert_eq!(hour_key(h), "resolution=hour/date=2026-11-01/hour=07");
        assert_eq!(parse_key(&hour_key(h)), Some((true, h)));
        let d = 1_793_491_200_000;
        assert_eq!(day_key(d), "resolution=day/date=2026-11-01");
        assert_eq!(parse_key(&day_key(d)), Some((false, d)));
        assert_eq!(parse_key("resolution=hour/date=2026-11-01/hour=24"), None);
        assert_eq!(parse_key("resolution=week/date=2026-11-01"), None);
    }
}
