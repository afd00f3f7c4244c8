//! Sends generated or recorded requests over HTTP as a Prometheus remote-write queue
//! does: bounded concurrency, time order per series (epoch barrier per cluster),
//! wall-clock pacing and a samples/s limit, and retries of 5xx/429/network errors with
//! doubling backoff (30 ms … 5 s) that honours `Retry-After`; other 4xx are errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::encode::Payload;

const MIN_BACKOFF: Duration = Duration::from_millis(30);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How many error bodies are printed; later errors are only counted.
const SHOWN_ERRORS: u64 = 5;

/// Counters shared by the generator, the senders and the progress reporter.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) samples: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) retries: AtomicU64,
}

impl Stats {
    pub(crate) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// How to send.
#[derive(Debug, Clone)]
pub(crate) struct SendConfig {
    pub(crate) url: String,
    /// Cluster names by payload cluster index.
    pub(crate) clusters: Vec<String>,
    pub(crate) token_prefix: Option<String>,
    pub(crate) concurrency: usize,
    /// Samples per second; 0 = unlimited.
    pub(crate) rate: f64,
    /// Ignore `not_before_ms` (no wall-clock pacing).
    pub(crate) fast: bool,
    pub(crate) max_retries: u32,
    pub(crate) timeout: Duration,
}

/// Per-cluster headers, built once.
#[derive(Debug)]
struct Sender {
    client: reqwest::Client,
    url: String,
    headers: Vec<HeaderMap>,
    clusters: Vec<String>,
    max_retries: u32,
    stats: Arc<Stats>,
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sends every payload from `rx` until it closes (or Ctrl-C), then waits for the ones in flight.
pub(crate) async fn send_all(
    cfg: SendConfig,
    mut rx: mpsc::Receiver<Payload>,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    crate::tls::install_provider();
    let client = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .user_agent(concat!("fleetgate-simulate/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(cfg.concurrency.max(1))
        .build()
        .context("building the HTTP client")?;
    let mut headers = Vec::with_capacity(cfg.clusters.len());
    for name in &cfg.clusters {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        h.insert(
            "x-prometheus-remote-write-version",
            HeaderValue::from_static("0.1.0"),
        );
        h.insert(
            "x-fleetgate-cluster",
            HeaderValue::from_str(name).context("cluster name is not a valid header value")?,
        );
        if let Some(prefix) = &cfg.token_prefix {
            let v = HeaderValue::from_str(&format!("Bearer {prefix}{name}"))
                .context("--token-prefix gives an invalid header value")?;
            h.insert(header::AUTHORIZATION, v);
        }
        headers.push(h);
    }
    let sender = Arc::new(Sender {
        client,
        url: cfg.url.clone(),
        headers,
        clusters: cfg.clusters.clone(),
        max_retries: cfg.max_retries,
        stats: Arc::clone(&stats),
    });
    let sem = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    // cluster -> (epoch, requests of that epoch still possibly in flight)
    let mut inflight: HashMap<u32, (u64, Vec<JoinHandle<()>>)> = HashMap::new();
    let started = Instant::now();
    let mut dispatched_samples = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p { Some(p) => p, None => break },
            _ = &mut ctrl_c => {
                eprintln!("interrupted: waiting for requests in flight");
                break;
            }
        };
        let entry = inflight
            .entry(p.cluster)
            .or_insert_with(|| (p.epoch, Vec::new()));
        if entry.0 != p.epoch {
            // A series' next samples go out only after its previous ones were acknowledged.
            for h in entry.1.drain(..) {
                join(h, &stats).await;
            }
            entry.0 = p.epoch;
        } else {
            entry.1.retain(|h| !h.is_finished());
        }
        if !cfg.fast
            && let Some(nb) = p.not_before_ms
        {
            let wait = nb - unix_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
        }
        if cfg.rate > 0.0 {
            let due = started + Duration::from_secs_f64(dispatched_samples as f64 / cfg.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        dispatched_samples += u64::from(p.samples);
        let permit = Arc::clone(&sem)
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        let sender = Arc::clone(&sender);
        entry.1.push(tokio::spawn(async move {
            sender.send(p).await;
            drop(permit);
        }));
    }
    for (_, (_, handles)) in inflight {
        for h in handles {
            join(h, &stats).await;
        }
    }
    Ok(())
}

async fn join(h: JoinHandle<()>, stats: &Stats) {
    if let Err(e) = h.await {
        eprintln!("send task failed: {e}");
        stats.errors.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date.
pub(crate) fn parse_retry_after(v: &str, now_unix_s: i64) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(Duration::from_secs(
        at.saturating_sub(now_unix_s).max(0) as u64
    ))
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to unix seconds.
fn parse_http_date(v: &str) -> Option<i64> {
    let rest = v.split_once(", ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    if f.len() != 5 || f[4] != "GMT" {
        return None;
    }
    let day: i64 = f[0].parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == f[1])? as i64 + 1;
    let year: i64 = f[2].parse().ok()?;
    let t: Vec<i64> = f[3]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if t.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

impl Sender {
    async fn send(&self, p: Payload) {
        let cluster = self
            .clusters
            .get(p.cluster as usize)
            .map_or("?", String::as_str);
        let mut backoff = MIN_BACKOFF;
        let mut attempt = 0u32;
        loop {
            let res = self
                .client
                .post(&self.url)
                .headers(self.headers[p.cluster as usize].clone())
                .body(p.body.clone())
                .send()
                .await;
            let (retry, wait, what) = match res {
                Ok(resp) if resp.status().is_success() => {
                    self.stats
                        .samples
                        .fetch_add(u64::from(p.samples), Ordering::Relaxed);
                    self.stats
                        .bytes
                        .fetch_add(p.body.len() as u64, Ordering::Relaxed);
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retryable =
                        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                    let after = resp
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, unix_ms() / 1000));
                    let body = resp.text().await.unwrap_or_default();
                    let body: String = body.trim().chars().take(500).collect();
                    (retryable, after, format!("HTTP {status}: {body}"))
                }
                Err(e) => (true, None, format!("request failed: {e}")),
            };
            if retry && attempt < self.max_retries {
                attempt += 1;
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(wait.unwrap_or(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            let n = self.stats.errors.fetch_add(1, Ordering::Relaxed);
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            if n < SHOWN_ERRORS {
                let tries = if attempt > 0 {
                    format!(" after {attempt} retries")
                } else {
                    String::new()
                };
                eprintln!("request {} ({cluster}){tries}: {what}", p.seq);
            } else if n == SHOWN_ERRORS {
                eprintln!("(further errors are counted, not shown)");
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", 784_111_777),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:40 GMT", 784_111_999),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
