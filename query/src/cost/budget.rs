//! Budgets against thresholds: a cluster's monthly spend threshold, and budgets per namespace or
//! label value with a monthly or weekly period and a reset day. For each: spend to date, run
//! rate, projected spend at the period's end, and a state (`ok`, `forecast_breach`,
//! `breached`).
//!
//! A cluster's spend is what its assets cost (allocations, volumes, load balancers, egress,
//! management, and idle capacity); a namespace's or label value's is the cost allocated to it
//! (idle not shared in). Run rate = spend ÷ hours elapsed; projected = spend + run rate × hours
//! left (Kubecost's run-rate projection).

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::{AllocationQuery, aggregate};
use super::allocation::CostSet;
use super::window::Window;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// How often a budget resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// Every month, on `reset_day` (1–28).
    #[default]
    Monthly,
    /// Every week, on `reset_day` (0 = Sunday … 6 = Saturday).
    Weekly,
}

/// What a budget covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A whole cluster (its `monthly_spend_threshold`).
    Cluster(String),
    /// A namespace, in one cluster or across the fleet.
    Namespace {
        /// Only this cluster, or every cluster.
        cluster: Option<String>,
        /// The namespace.
        namespace: String,
    },
    /// The allocations whose pod (else namespace) label `key` is `value`.
    Label {
        /// Only this cluster, or every cluster.
        cluster: Option<String>,
        /// Label name (sanitized as kube-state-metrics writes it).
        key: String,
        /// Label value.
        value: String,
    },
}

/// One budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Its name (`cluster:<name>` for a cluster threshold).
    pub name: String,
    /// What it covers.
    pub target: Target,
    /// The threshold, in the currency of the prices.
    pub amount: f64,
    /// Its period.
    pub interval: Interval,
    /// The day it resets on (see [`Interval`]).
    pub reset_day: u32,
}

/// Where a budget stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Spend and projection under the amount.
    Ok,
    /// The projection at the period's end reaches the amount.
    ForecastBreach,
    /// Spend reached the amount.
    Breached,
}

impl State {
    /// `ok`, `forecast_breach`, `breached`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::ForecastBreach => "forecast_breach",
            State::Breached => "breached",
        }
    }
}

/// A budget evaluated at an instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The budget.
    pub budget: Budget,
    /// The current period.
    pub period: Window,
    /// Spend from the period's start to now.
    pub spend: f64,
    /// Spend per hour so far.
    pub run_rate_hourly: f64,
    /// Spend projected at the period's end.
    pub projected: f64,
    /// The state.
    pub state: State,
}

impl Budget {
    /// The cluster the budget is limited to, if any.
    pub fn cluster(&self) -> Option<&str> {
        match &self.target {
            Target::Cluster(c) => Some(c),
            Target::Namespace { cluster, .. } | Target::Label { cluster, .. } => cluster.as_deref(),
        }
    }

    /// `cluster`, `namespace` or `label`.
    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Cluster(_) => "cluster",
            Target::Namespace { .. } => "namespace",
            Target::Label { .. } => "label",
        }
    }

    /// The period containing `now_ms`: from the last reset to the next.
    pub fn period(&self, now_ms: i64) -> Window {
        let Some(t) = DateTime::<Utc>::from_timestamp_millis(now_ms) else {
            return Window::default();
        };
        let day0 = now_ms.div_euclid(DAY) * DAY;
        match self.interval {
            Interval::Weekly => {
                let reset = self.reset_day.min(6);
                let wd = t.weekday().num_days_from_sunday();
                let back = i64::from((wd + 7 - reset) % 7);
                let start = day0 - back * DAY;
                Window {
                    start_ms: start,
                    end_ms: start + 7 * DAY,
                }
            }
            Interval::Monthly => {
                let rd = self.reset_day.clamp(1, 28);
                let at = |y: i32, m: u32| -> i64 {
                    NaiveDate::from_ymd_opt(y, m, rd)
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map_or(0, |d| d.and_utc().timestamp_millis())
                };
                let shift = |y: i32, m: u32, by: i32| {
                    let n = y * 12 + m as i32 - 1 + by;
                    (n.div_euclid(12), n.rem_euclid(12) as u32 + 1)
                };
                let (y, m) = (t.year(), t.month());
                let this = at(y, m);
                let (start, (ny, nm)) = if now_ms >= this {
                    (this, shift(y, m, 1))
                } else {
                    let (py, pm) = shift(y, m, -1);
                    (at(py, pm), (y, m))
                };
                Window {
                    start_ms: start,
                    end_ms: at(ny, nm),
                }
            }
        }
    }

    /// Evaluates the budget on `set` (the costs of `[period start, now)`, merged).
    pub fn evaluate(&self, set: &CostSet, now_ms: i64) -> Status {
        let period = self.period(now_ms);
        let spend = spend(self, set);
        let elapsed_h = (now_ms.min(period.end_ms) - period.start_ms).max(0) as f64 / HOUR as f64;
        let left_h = (period.end_ms - now_ms).max(0) as f64 / HOUR as f64;
        let run_rate_hourly = if elapsed_h > 0.0 {
            spend / elapsed_h
        } else {
            0.0
        };
        let projected = spend + run_rate_hourly * left_h;
        let state = if spend >= self.amount && (self.amount > 0.0 || spend > 0.0) {
            State::Breached
        } else if projected >= self.amount && (self.amount > 0.0 || projected > 0.0) {
            State::ForecastBreach
        } else {
            State::Ok
        };
        Status {
            budget: self.clone(),
            period,
            spend,
            run_rate_hourly,
            projected,
            state,
        }
    }
}

/// What `b` covers in `set`.
fn spend(b: &Budget, set: &CostSet) -> f64 {
    let in_cluster = |c: &str| b.cluster().is_none_or(|x| x == c);
    match &b.target {
        Target::Cluster(c) => {
            // allocations (with unmounted cost) + idle + the management fee
            let q = AllocationQuery {
                include_idle: true,
                split_idle: true,
                ..AllocationQuery::default()
            };
            let mut one = set.clone();
            one.allocations.retain(|a| &a.properties.cluster == c);
            one.nodes.retain(|n| &n.cluster == c);
            one.management.retain(|m| &m.cluster == c);
            let allocated: f64 = aggregate(&one, &q).iter().map(|a| a.total_cost()).sum();
            allocated + one.management.iter().map(|m| m.cost).sum::<f64>()
        }
        Target::Namespace { namespace, .. } => set
            .allocations
            .iter()
            .filter(|a| in_cluster(&a.properties.cluster) && &a.properties.namespace == namespace)
            .map(|a| a.total_cost())
            .sum(),
        Target::Label { key, value, .. } => set
            .allocations
            .iter()
            .filter(|a| {
                in_cluster(&a.properties.cluster)
                    && !a.is_unmounted()
                    && a.properties
                        .labels
                        .get(key)
                        .or_else(|| a.properties.namespace_labels.get(key))
                        == Some(value)
            })
            .map(|a| a.total_cost())
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn budget(interval: Interval, reset_day: u32) -> Budget {
        Budget {
            name: "x".into(),
            target: Target::Cluster("a".into()),
            amount: 100.0,
            interval,
            reset_day,
        }
    }

    #[test]
    fn periods_across_month_and_year_boundaries() {
        let m = budget(Interval::Monthly, 1);
        assert_eq!(
            m.period(t("2026-12-03T17:00:00Z")),
            Window::new(t("2026-12-01T00:00:00Z"), t("2027-01-01T00:00:00Z")).unwrap()
        );
        let m15 = budget(Interval::Monthly, 15);
        assert_eq!(
            m15.period(t("2026-12-03T17:00:00Z")),
            Window::new(t("2026-11-15T00:00:00Z"), t("2026-12-15T00:00:00Z")).unwrap()
        );
        assert_eq!(
            m15.period(t("2027-01-20T00:00:00Z")).start_ms,
            t("2027-01-15T00:00:00Z")
        );
        assert_eq!(
            m15.period(t("2027-01-02T00:00:00Z")).start_ms,
            t("2026-12-15T00:00:00Z")
        );
        // weekly from Monday (1): Thursday 2026-12-03 is in the week of Monday 11-30
        let w = budget(Interval::Weekly, 1);
        assert_eq!(
            w.period(t("2026-12-03T17:00:00Z")),
            Window::new(t("2026-11-30T00:00:00Z"), t("2026-12-07T00:00:00Z")).unwrap()
        );
        assert_eq!(
            budget(Interval::Weekly, 4)
                .period(t("2026-12-03T17:00:00Z"))
                .start_ms,
            t("2026-12-03T00:00:00Z")
        );
    }
}
