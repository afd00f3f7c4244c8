//! Self-metrics of the gateway, rendered in the Prometheus text exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Latency bucket bounds in seconds, shared by the HTTP and fsync histograms.
pub(crate) const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds of samples-read-per-query histograms.
pub(crate) const SAMPLE_BOUNDS: &[f64] = &[1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Bucket bounds of query durations in seconds (queries run up to `query.timeout`, 2 min).
pub(crate) const QUERY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A fixed-bucket histogram (non-cumulative bucket counts; rendered cumulative).
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of the observations, as `f64` bits.
    sum_bits: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::with_bounds(LATENCY_BOUNDS)
    }
}

impl Histogram {
    /// A histogram with these bucket bounds.
    pub(crate) fn with_bounds(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    /// Records one duration, in seconds.
    pub(crate) fn observe(&self, d: Duration) {
        self.observe_value(d.as_secs_f64());
    }

    /// Records one value.
    pub(crate) fn observe_value(&self, v: f64) {
        let idx = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(idx) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the buckets, sum and count with these labels (`k="v",…`, may be empty).
    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0u64;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = f64::from_bits(self.sum_bits.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Counters and histograms the gateway updates on its own.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    samples_accepted: Mutex<BTreeMap<String, u64>>,
    samples_rejected: Mutex<BTreeMap<(String, String), u64>>,
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    request_latency: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
    series_created: Mutex<BTreeMap<String, u64>>,
    query_duration: Mutex<BTreeMap<&'static str, std::sync::Arc<Histogram>>>,
    query_samples: Mutex<BTreeMap<&'static str, std::sync::Arc<Histogram>>>,
    /// Maintenance rounds that failed (or panicked) and will be retried.
    pub(crate) maintenance_failures: AtomicU64,
    /// Pull sources, by (cluster, source).
    pulls: Mutex<BTreeMap<(String, String), PullStats>>,
}

/// What the gateway knows of one pull source.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PullStats {
    /// Whether the last scrape succeeded.
    pub(crate) up: bool,
    /// Scrapes attempted.
    pub(crate) scrapes: u64,
    /// Scrapes that failed.
    pub(crate) failures: u64,
    /// Samples scraped in total.
    pub(crate) samples: u64,
    /// Duration of the last scrape, in seconds.
    pub(crate) last_duration_s: f64,
}

impl Telemetry {
    /// Records one scrape of a pull source.
    pub(crate) fn pull(
        &self,
        cluster: &str,
        source: &str,
        ok: bool,
        samples: u64,
        duration_s: f64,
    ) {
        let mut m = self.pulls.lock();
        let e = m
            .entry((cluster.to_string(), source.to_string()))
            .or_default();
        e.up = ok;
        e.scrapes += 1;
        e.failures += u64::from(!ok);
        e.samples += samples;
        e.last_duration_s = duration_s;
    }

    /// Forgets a pull source that was removed from the config.
    pub(crate) fn pull_removed(&self, cluster: &str, source: &str) {
        self.pulls
            .lock()
            .remove(&(cluster.to_string(), source.to_string()));
    }

    /// Adds accepted samples of a cluster.
    pub(crate) fn accepted(&self, cluster: &str, n: u64) {
        if n > 0 {
            *self
                .samples_accepted
                .lock()
                .entry(cluster.to_string())
                .or_default() += n;
        }
    }

    /// Adds created series of a cluster.
    pub(crate) fn series_created(&self, cluster: &str, n: u64) {
        if n > 0 {
            *self
                .series_created
                .lock()
                .entry(cluster.to_string())
                .or_default() += n;
        }
    }

    /// Adds rejected samples of a cluster for a reason.
    pub(crate) fn rejected(&self, cluster: &str, reason: &str, n: u64) {
        if n > 0 {
            *self
                .samples_rejected
                .lock()
                .entry((cluster.to_string(), reason.to_string()))
                .or_default() += n;
        }
    }

    /// Counts one finished request and its latency.
    pub(crate) fn request(&self, handler: &str, cluster: &str, code: u16, d: Duration) {
        *self
            .requests
            .lock()
            .entry((handler.to_string(), cluster.to_string(), code))
            .or_default() += 1;
        let h = {
            let mut m = self.request_latency.lock();
            std::sync::Arc::clone(m.entry(handler.to_string()).or_default())
        };
        h.observe(d);
    }

    /// Records one finished read of `kind` (`query`, `query_range`, `series`, …): its duration
    /// and the samples it read.
    pub(crate) fn query(&self, kind: &'static str, d: Duration, samples: u64) {
        let (dur, smp) = {
            let mut a = self.query_duration.lock();
            let dur = std::sync::Arc::clone(
                a.entry(kind)
                    .or_insert_with(|| std::sync::Arc::new(Histogram::with_bounds(QUERY_BOUNDS))),
            );
            drop(a);
            let mut b = self.query_samples.lock();
            let smp = std::sync::Arc::clone(
                b.entry(kind)
                    .or_insert_with(|| std::sync::Arc::new(Histogram::with_bounds(SAMPLE_BOUNDS))),
            );
            (dur, smp)
        };
        dur.observe(d);
        smp.observe_value(samples as f64);
    }

    /// Renders this registry plus the given gauges/extra text.
    pub(crate) fn render(&self, out: &mut String) {
        let pulls: Vec<((String, String), PullStats)> = self
            .pulls
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let pull_family = |out: &mut String,
                           name: &str,
                           kind: &str,
                           help: &str,
                           f: &dyn Fn(&PullStats) -> String| {
            family(out, name, kind, help);
            for ((c, src), st) in &pulls {
                let _ = writeln!(
                    out,
                    "{name}{{cluster=\"{}\",source=\"{}\"}} {}",
                    esc(c),
                    esc(src),
                    f(st)
                );
            }
        };
        pull_family(
            out,
            "fleetgate_pull_up",
            "gauge",
            "1 when the last scrape of a pull source succeeded.",
            &|s| u8::from(s.up).to_string(),
        );
        pull_family(
            out,
            "fleetgate_pull_scrapes_total",
            "counter",
            "Scrapes of a pull source.",
            &|s| s.scrapes.to_string(),
        );
        pull_family(
            out,
            "fleetgate_pull_failures_total",
            "counter",
            "Failed scrapes of a pull source.",
            &|s| s.failures.to_string(),
        );
        pull_family(
            out,
            "fleetgate_pull_samples_scraped_total",
            "counter",
            "Samples scraped from a pull source.",
            &|s| s.samples.to_string(),
        );
        pull_family(
            out,
            "fleetgate_pull_duration_seconds",
            "gauge",
            "Duration of the last scrape of a pull source.",
            &|s| s.last_duration_s.to_string(),
        );
        family(
            out,
            "fleetgate_samples_accepted_total",
            "counter",
            "Samples stored, by cluster.",
        );
        for (c, v) in self.samples_accepted.lock().iter() {
            let _ = writeln!(
                out,
                "fleetgate_samples_accepted_total{{cluster=\"{}\"}} {v}",
                esc(c)
            );
        }
        family(
            out,
            "fleetgate_samples_rejected_total",
            "counter",
            "Samples rejected, by cluster and reason.",
        );
        for ((c, r), v) in self.samples_rejected.lock().iter() {
            let _ = writeln!(
                out,
                "fleetgate_samples_rejected_total{{cluster=\"{}\",reason=\"{}\"}} {v}",
                esc(c),
                esc(r)
            );
        }
        family(
            out,
            "fleetgate_series_created_total",
            "counter",
            "New series created, by cluster.",
        );
        for (c, v) in self.series_created.lock().iter() {
            let _ = writeln!(
                out,
                "fleetgate_series_created_total{{cluster=\"{}\"}} {v}",
                esc(c)
            );
        }
        family(
            out,
            "fleetgate_http_requests_total",
            "counter",
            "HTTP requests, by handler, cluster and status code.",
        );
        for ((h, c, code), v) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "fleetgate_http_requests_total{{handler=\"{}\",cluster=\"{}\",code=\"{code}\"}} {v}",
                esc(h),
                esc(c)
            );
        }
        family(
            out,
            "fleetgate_http_request_duration_seconds",
            "histogram",
            "HTTP request latency, by handler.",
        );
        for (h, hist) in self.request_latency.lock().iter() {
            hist.render(
                out,
                "fleetgate_http_request_duration_seconds",
                &format!("handler=\"{}\"", esc(h)),
            );
        }
        family(
            out,
            "fleetgate_query_duration_seconds",
            "histogram",
            "Time reads spent on the query pool (PromQL, series, labels, export), by kind.",
        );
        for (k, hist) in self.query_duration.lock().iter() {
            hist.render(
                out,
                "fleetgate_query_duration_seconds",
                &format!("kind=\"{k}\""),
            );
        }
        family(
            out,
            "fleetgate_query_samples_read",
            "histogram",
            "Samples read per query, by kind.",
        );
        for (k, hist) in self.query_samples.lock().iter() {
            hist.render(
                out,
                "fleetgate_query_samples_read",
                &format!("kind=\"{k}\""),
            );
        }
    }
}

/// Writes the HELP and TYPE lines of a metric family.
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a single unlabelled gauge or counter with its HELP/TYPE.
pub(crate) fn single(out: &mut String, name: &str, kind: &str, help: &str, v: f64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {v}");
}

/// Renders a histogram snapshot given as bounds + cumulative bucket counts (Prometheus `le` style).
pub(crate) fn render_snapshot(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
    count: u64,
) {
    family(out, name, "histogram", help);
    for (i, b) in bounds.iter().enumerate() {
        let cum = counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {count}");
}

/// Process CPU seconds and resident bytes from /proc/self (Linux); zeros elsewhere.
pub(crate) fn process_stats() -> (f64, f64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|pages| pages * 4096.0)
        .unwrap_or(0.0);
    (cpu, rss)
}

/// Escapes a label value for the text format.
pub(crate) fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let t = Telemetry::default();
        t.accepted("eu", 5);
        t.rejected("eu", "sample_too_old", 2);
        t.request("remote_write", "eu", 204, Duration::from_millis(3));
        let mut s = String::new();
        t.render(&mut s);
        assert!(s.contains("fleetgate_samples_accepted_total{cluster=\"eu\"} 5"));
        assert!(s.contains(
            "fleetgate_samples_rejected_total{cluster=\"eu\",reason=\"sample_too_old\"} 2"
        ));
        assert!(s.contains("fleetgate_http_request_duration_seconds_bucket{handler=\"remote_write\",le=\"0.005\"} 1"));
        assert!(
            s.contains("fleetgate_http_request_duration_seconds_count{handler=\"remote_write\"} 1")
        );
    }
}
