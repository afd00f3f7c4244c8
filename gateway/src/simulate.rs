//! `fleetgate simulate`: a deterministic load generator that plays a fleet of Kubernetes
//! clusters sending Prometheus remote-write 1.0, live or backfilled, to a gateway (or
//! records the exact request bodies for replay against any receiver).

mod encode;
mod record;
mod rng;
mod send;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;

use send::{SendConfig, Stats};
use workload::{Fleet, FleetConfig, cluster_name, epochs};

/// `println!` that ignores a closed stdout (e.g. piped into `head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Flags of `fleetgate simulate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SimulateArgs {
    /// Remote-write endpoint to send to.
    #[arg(long, default_value = "http://127.0.0.1:9201/api/v1/write")]
    pub(crate) url: String,
    /// Number of simulated clusters, named sim-00, sim-01, …
    #[arg(long, default_value_t = 3)]
    pub(crate) clusters: u32,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 5)]
    pub(crate) nodes: u32,
    /// Pods per node (two of them are the kube-proxy and node-exporter daemonsets).
    #[arg(long, default_value_t = 20)]
    pub(crate) pods_per_node: u32,
    /// Instrumented HTTP services per cluster (their pods emit http_* series).
    #[arg(long, default_value_t = 4)]
    pub(crate) services: u32,
    /// PRNG seed: same seed, flags and --start-ms give byte-identical requests.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Unix milliseconds of the first live scrape (default: now). Backfill lies before it.
    #[arg(long)]
    pub(crate) start_ms: Option<i64>,
    /// Scrape interval, e.g. 15s, 500ms, 1m.
    #[arg(long, default_value = "15s", value_parser = crate::config::parse_duration)]
    pub(crate) scrape_interval: Duration,
    /// Fraction of pods replaced per hour; a replaced pod's series get a stale marker.
    #[arg(long, default_value_t = 0.2)]
    pub(crate) churn: f64,
    /// Maximum series per request.
    #[arg(long, default_value_t = 2000)]
    pub(crate) series_per_request: usize,
    /// First send this many hours before the start, many samples per series per request.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) backfill_hours: f64,
    /// Samples per series per backfill request.
    #[arg(long, default_value_t = 120)]
    pub(crate) backfill_samples_per_series: u64,
    /// Live mode length in simulated time, e.g. 60s, 10m; 0 skips live mode.
    #[arg(long, default_value = "60s", value_parser = crate::config::parse_duration)]
    pub(crate) duration: Duration,
    /// Do not pace live mode by the wall clock (timestamps still advance per scrape).
    #[arg(long)]
    pub(crate) fast: bool,
    /// Limit on samples sent per second; 0 = unlimited.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) rate: f64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) concurrency: usize,
    /// Send `Authorization: Bearer <prefix><cluster>`; without it no Authorization header.
    #[arg(long)]
    pub(crate) token_prefix: Option<String>,
    /// Retries of a request that got 5xx, 429 or a network error before it counts as an error.
    #[arg(long, default_value_t = 10)]
    pub(crate) max_retries: u32,
    /// Timeout of one HTTP attempt, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = crate::config::parse_duration)]
    pub(crate) timeout: Duration,
    /// Also write each request body to DIR/NNNNNNNN.snappy and DIR/index.tsv.
    #[arg(long, value_name = "DIR")]
    pub(crate) record_dir: Option<PathBuf>,
    /// Generate (and record, with --record-dir) but send nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Send a recorded directory as-is instead of simulating.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["record_dir", "dry_run"])]
    pub(crate) replay_dir: Option<PathBuf>,
}

/// Runs the simulator (or a replay) to the end; fails if any request ended in error.
pub(crate) async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.series_per_request > 0,
        "--series-per-request must be at least 1"
    );
    anyhow::ensure!(
        args.rate >= 0.0 && args.churn >= 0.0,
        "--rate and --churn must not be negative"
    );
    if let Some(dir) = args.replay_dir.clone() {
        return replay(args, dir).await;
    }
    let interval_ms = args.scrape_interval.as_millis() as i64;
    anyhow::ensure!(interval_ms > 0, "--scrape-interval must be at least 1ms");
    anyhow::ensure!(
        args.backfill_hours >= 0.0,
        "--backfill-hours must not be negative"
    );
    let cfg = FleetConfig {
        clusters: args.clusters,
        nodes: args.nodes,
        pods_per_node: args.pods_per_node,
        services: args.services,
        seed: args.seed,
        scrape_interval_ms: interval_ms,
        churn_per_hour: args.churn,
        start_ms: args.start_ms.unwrap_or_else(crate::http::now_ms),
    };
    let backfill_ticks = (args.backfill_hours * 3_600_000.0 / interval_ms as f64).round() as u64;
    let live_ticks = (args.duration.as_millis() as u64).div_ceil(interval_ms as u64);
    let plan = epochs(backfill_ticks, args.backfill_samples_per_series, live_ticks);
    let start_ms = cfg.start_ms;
    let fleet = tokio::task::spawn_blocking(move || Fleet::new(cfg))
        .await
        .context("building the fleet")?;
    let active = fleet.active_series();
    say!(
        "simulating {} clusters × {} nodes × {} pods/node, {} services/cluster: {} active series; \
         start {} ms, {} backfill + {} live scrapes every {} ms",
        args.clusters,
        args.nodes,
        args.pods_per_node,
        args.services,
        active,
        start_ms,
        backfill_ticks,
        live_ticks,
        interval_ms
    );
    let clusters: Vec<String> = (0..args.clusters).map(cluster_name).collect();
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let progress = spawn_progress(Arc::clone(&stats), args.dry_run);

    let (tx, rx) = mpsc::channel(args.concurrency * 2);
    let gen_stats = Arc::clone(&stats);
    let dry_run = args.dry_run;
    let record_dir = args.record_dir.clone();
    let spr = args.series_per_request;
    let names = clusters.clone();
    let generator = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut fleet = fleet;
        let mut recorder = record_dir
            .as_deref()
            .map(record::Recorder::create)
            .transpose()?;
        let mut emit = |p: encode::Payload| -> anyhow::Result<()> {
            if let Some(r) = recorder.as_mut() {
                r.write(&p, &names[p.cluster as usize])?;
            }
            if dry_run {
                gen_stats
                    .samples
                    .fetch_add(u64::from(p.samples), Ordering::Relaxed);
                gen_stats
                    .bytes
                    .fetch_add(p.body.len() as u64, Ordering::Relaxed);
                gen_stats.requests.fetch_add(1, Ordering::Relaxed);
                Ok(())
            } else {
                tx.blocking_send(p)
                    .map_err(|_| anyhow::anyhow!("sender stopped"))
            }
        };
        for epoch in &plan {
            if let Err(e) = fleet.generate(epoch, spr, &mut emit) {
                if !dry_run && tx.is_closed() {
                    break; // interrupted: the sender has gone
                }
                return Err(e);
            }
        }
        if let Some(r) = recorder {
            r.finish()?;
        }
        Ok(())
    });
    let sent = if dry_run {
        drop(rx);
        Ok(())
    } else {
        let cfg = send_config(&args, clusters);
        send::send_all(cfg, rx, Arc::clone(&stats)).await
    };
    let generated = generator.await.context("generator thread failed")?;
    progress.abort();
    summarize(&stats, started.elapsed(), active, dry_run);
    sent?;
    generated?;
    check_errors(&stats)
}

fn send_config(args: &SimulateArgs, clusters: Vec<String>) -> SendConfig {
    SendConfig {
        url: args.url.clone(),
        clusters,
        token_prefix: args.token_prefix.clone(),
        concurrency: args.concurrency,
        rate: args.rate,
        fast: args.fast,
        max_retries: args.max_retries,
        timeout: args.timeout,
    }
}

/// `--replay-dir`: sends a recorded directory's bodies in order.
async fn replay(args: SimulateArgs, dir: PathBuf) -> anyhow::Result<()> {
    let index = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || record::read_index(&dir))
            .await
            .context("reading the index")??
    };
    let mut clusters: Vec<String> = Vec::new();
    let mut ids = Vec::with_capacity(index.len());
    for e in &index {
        let id = match clusters.iter().position(|c| *c == e.cluster) {
            Some(i) => i,
            None => {
                clusters.push(e.cluster.clone());
                clusters.len() - 1
            }
        };
        ids.push(id as u32);
    }
    let total: u64 = index.iter().map(|e| u64::from(e.samples)).sum();
    say!(
        "replaying {}: {} requests, {} samples, {} clusters",
        dir.display(),
        index.len(),
        total,
        clusters.len()
    );
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let progress = spawn_progress(Arc::clone(&stats), false);
    let (tx, rx) = mpsc::channel(args.concurrency * 2);
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for (e, id) in index.iter().zip(ids) {
            let p = record::load(&dir, e, id)?;
            if tx.blocking_send(p).is_err() {
                break; // interrupted
            }
        }
        Ok(())
    });
    let sent = send::send_all(send_config(&args, clusters), rx, Arc::clone(&stats)).await;
    let read = reader.await.context("reader thread failed")?;
    progress.abort();
    summarize(&stats, started.elapsed(), 0, false);
    sent?;
    read?;
    check_errors(&stats)
}

/// Prints `sent N samples (X samples/s), R requests, E errors` every 5 s.
fn spawn_progress(stats: Arc<Stats>, dry_run: bool) -> tokio::task::JoinHandle<()> {
    let verb = if dry_run { "generated" } else { "sent" };
    tokio::spawn(async move {
        let period = Duration::from_secs(5);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut last = (0u64, Instant::now());
        loop {
            tick.tick().await;
            let samples = Stats::get(&stats.samples);
            let now = Instant::now();
            let rate = (samples - last.0) as f64 / now.duration_since(last.1).as_secs_f64();
            last = (samples, now);
            say!(
                "{verb} {samples} samples ({rate:.0} samples/s), {} requests, {} errors",
                Stats::get(&stats.requests),
                Stats::get(&stats.errors)
            );
        }
    })
}

fn summarize(stats: &Stats, elapsed: Duration, active: usize, dry_run: bool) {
    let samples = Stats::get(&stats.samples);
    let requests = Stats::get(&stats.requests);
    let errors = Stats::get(&stats.errors);
    let bytes = Stats::get(&stats.bytes);
    let secs = elapsed.as_secs_f64();
    let per_sec = if secs > 0.0 {
        samples as f64 / secs
    } else {
        0.0
    };
    say!(
        "done: {} {samples} samples in {secs:.2} s ({per_sec:.0} samples/s), {requests} requests \
         ({bytes} bytes), {} retries, {errors} errors",
        if dry_run { "generated" } else { "sent" },
        Stats::get(&stats.retries),
    );
    say!(
        "{}",
        serde_json::json!({
            "samples": samples,
            "requests": requests,
            "errors": errors,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "samples_per_sec": per_sec.round(),
            "active_series": active,
        })
    );
}

fn check_errors(stats: &Stats) -> anyhow::Result<()> {
    let errors = Stats::get(&stats.errors);
    anyhow::ensure!(errors == 0, "{errors} requests ended in error");
    Ok(())
}

#[cfg(test)]
mod tests;
