//! Pull sources: one task per configured source scrapes its `/federate` (with `match[]`) or
//! `/metrics` endpoint every `interval` and ingests the body through
//! [`fleetgate_ingest::Ingester::scrape`]; a failure retries with backoff (1 s, 2 s, 4 s, … up to
//! the interval), is logged once per change of state and shows in `/metrics`
//! (`fleetgate_pull_*`). [`Pulls::reconcile`] starts, stops and restarts tasks to match a config,
//! at start and on reload (`POST /-/reload`, SIGHUP).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetgate_ingest::ClusterContext;
use fleetgate_ingest::exposition::parse::Format;
use fleetgate_ingest::exposition::{ScrapeState, Target};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::{Config, SourceConfig, url_authority};
use crate::http::{AppState, now_ms};

/// What a scrape asks for: the text format first (federation answers only it), OpenMetrics next.
const ACCEPT: &str =
    "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1";

#[derive(Debug)]
struct Running {
    config: SourceConfig,
    stop: watch::Sender<bool>,
}

/// The running pull tasks, by (cluster, source name).
#[derive(Debug, Default)]
pub(crate) struct Pulls {
    running: Mutex<HashMap<(String, String), Running>>,
}

/// The usual places of the system's CA bundle (Debian/Ubuntu, RHEL/Fedora, Alpine/others).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The HTTP client of one source: for https, rustls (ring) trusting `tls_ca_file` or the system's
/// CA bundle.
fn client_for(src: &SourceConfig) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    use rustls_pki_types::pem::PemObject as _;
    crate::tls::install_provider();
    let builder =
        reqwest::Client::builder().user_agent(concat!("fleetgate/", env!("CARGO_PKG_VERSION")));
    if !src.url.starts_with("https://") {
        return Ok(builder.build()?);
    }
    let bundle = match &src.tls_ca_file {
        Some(p) => p.clone(),
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no system CA bundle found; set `tls_ca_file` for {}",
                    src.url
                )
            })?,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(&bundle)
        .with_context(|| format!("reading CA certificates from {}", bundle.display()))?
    {
        let cert = cert.with_context(|| format!("a certificate in {}", bundle.display()))?;
        // a bundle may hold certificates rustls cannot use; the others still count
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        anyhow::bail!("no usable CA certificate in {}", bundle.display());
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(builder.tls_backend_preconfigured(tls).build()?)
}

/// The context a source's series are stored with: the configured cluster's (labels, limits), or
/// the default limits for a pull-only cluster.
fn cluster_context(cfg: &Config, name: &str) -> anyhow::Result<Arc<ClusterContext>> {
    match cfg.clusters.iter().position(|c| c.name == name) {
        Some(i) => {
            let c = &cfg.clusters[i];
            let extra = c
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Ok(Arc::new(ClusterContext::new(
                name,
                extra,
                cfg.cluster_limits(i)?,
            )?))
        }
        None => Ok(Arc::new(ClusterContext::new(
            name,
            Vec::new(),
            cfg.limits.clone(),
        )?)),
    }
}

/// What changed in a reconcile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) started: usize,
    pub(crate) stopped: usize,
    pub(crate) unchanged: usize,
}

impl Pulls {
    /// Makes the running tasks match `cfg.sources`: new and changed sources start (a changed one
    /// restarts), removed ones stop.
    pub(crate) fn reconcile(&self, st: &Arc<AppState>, cfg: &Config) -> anyhow::Result<Changes> {
        let mut wanted: HashMap<(String, String), &SourceConfig> = HashMap::new();
        for s in &cfg.sources {
            wanted.insert((s.cluster.clone(), s.display_name()), s);
        }
        let mut running = self.running.lock();
        // Everything a new or changed source needs is built first: a source that cannot start
        // (an unreadable CA file) leaves every task as it was.
        let mut to_start = Vec::new();
        for (key, src) in &wanted {
            if running.get(key).is_some_and(|r| r.config == **src) {
                continue;
            }
            let named = |e: anyhow::Error| {
                anyhow::anyhow!(
                    "source {:?} of cluster {:?}: {e:#}",
                    src.display_name(),
                    src.cluster
                )
            };
            let ctx = cluster_context(cfg, &src.cluster).map_err(named)?;
            let client = client_for(src).map_err(named)?;
            to_start.push((key.clone(), *src, ctx, client));
        }
        let mut changes = Changes::default();
        running.retain(|key, r| {
            let keep = wanted.get(key).is_some_and(|w| **w == r.config);
            if !keep {
                let _ = r.stop.send(true);
                st.telemetry.pull_removed(&key.0, &key.1);
                changes.stopped += 1;
            }
            keep
        });
        changes.unchanged = running.len();
        for (key, src, ctx, client) in to_start {
            let (stop, rx) = watch::channel(false);
            tokio::spawn(run(
                Arc::clone(st),
                src.clone(),
                ctx,
                client,
                cfg.http.max_decompressed_bytes,
                rx,
            ));
            running.insert(
                key,
                Running {
                    config: src.clone(),
                    stop,
                },
            );
            changes.started += 1;
        }
        Ok(changes)
    }

    /// Stops every task (at shutdown: no staleness markers).
    pub(crate) fn stop_all(&self) {
        for r in self.running.lock().values() {
            let _ = r.stop.send(true);
        }
    }
}

/// Re-reads the config the gateway was started with and reconciles the pull sources with it.
/// A config that does not load leaves everything as it was.
pub(crate) fn reload(st: &Arc<AppState>) -> anyhow::Result<Changes> {
    let Some(from) = &st.reload_from else {
        anyhow::bail!("no config source to reload from");
    };
    let cfg = from.load()?;
    let changes = st.pulls.reconcile(st, &cfg)?;
    tracing::info!(
        started = changes.started,
        stopped = changes.stopped,
        unchanged = changes.unchanged,
        "config reloaded (pull sources; other changes take effect on restart)"
    );
    Ok(changes)
}

/// The target labels of a source: `job` and `instance` on every scraped series (federated series
/// keep their own), plus `source` on the scrape's own `up` / `scrape_*` series.
fn target(src: &SourceConfig) -> Target {
    let federate = src.is_federate();
    let job = src
        .job
        .clone()
        .unwrap_or_else(|| if federate { "federate" } else { "pull" }.to_string());
    Target {
        labels: vec![
            ("instance".into(), url_authority(&src.url).to_string()),
            ("job".into(), job),
        ],
        scrape_labels: vec![("source".into(), src.display_name())],
        honor_labels: src.honor_labels.unwrap_or(federate),
    }
}

/// The URL asked: a `/federate` URL with its `match[]` selectors.
fn request_url(src: &SourceConfig) -> String {
    if !src.is_federate() {
        return src.url.clone();
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    for m in src.matchers() {
        q.append_pair("match[]", &m);
    }
    let sep = if src.url.contains('?') { '&' } else { '?' };
    format!("{}{sep}{}", src.url, q.finish())
}

async fn fetch(
    client: &reqwest::Client,
    src: &SourceConfig,
    url: &str,
    max_bytes: usize,
) -> Result<(String, Format), String> {
    let token = match (&src.bearer_token, &src.bearer_token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(p)) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("reading bearer_token_file {}: {e}", p.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let mut req = client
        .get(url)
        .timeout(src.timeout.0)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", src.timeout.0.as_secs_f64()),
        );
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let mut resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let format = Format::from_content_type(
        resp.headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max_bytes {
            return Err(format!(
                "body over {max_bytes} bytes (http.max_decompressed_bytes)"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body)
        .map(|b| (b, format))
        .map_err(|e| format!("body is not UTF-8 at byte {}", e.utf8_error().valid_up_to()))
}

/// One source's loop until `stop`.
async fn run(
    st: Arc<AppState>,
    src: SourceConfig,
    ctx: Arc<ClusterContext>,
    client: reqwest::Client,
    max_bytes: usize,
    mut stop: watch::Receiver<bool>,
) {
    let name = src.display_name();
    let target = target(&src);
    let url = request_url(&src);
    let mut state = ScrapeState::default();
    let mut last_ok: Option<bool> = None;
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(core) = st.core.get() else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                _ = stop.wait_for(|v| *v) => return,
            }
        };
        let started = Instant::now();
        let now = now_ms();
        let fetched = tokio::select! {
            r = fetch(&client, &src, &url, max_bytes) => r,
            _ = stop.wait_for(|v| *v) => break,
        };
        let duration = started.elapsed().as_secs_f64();
        let result = match fetched {
            Ok((body, format)) => core
                .ingester
                .scrape(&ctx, &target, &mut state, &body, format, duration, now)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let (ok, samples, error) = match result {
            Ok(report) => {
                st.telemetry
                    .accepted(&ctx.name, report.outcome.samples_accepted);
                st.telemetry
                    .series_created(&ctx.name, report.outcome.series_created);
                for (reason, n) in report.outcome.rejected_samples_by_reason.iter() {
                    st.telemetry.rejected(&ctx.name, reason.as_str(), n);
                }
                (true, report.samples_scraped, None)
            }
            Err(e) => {
                // counted before `up` turns 0, so a reader who sees the one sees the other
                st.telemetry.pull(&ctx.name, &name, false, 0, duration);
                // up 0 and staleness for the previous scrape's series
                if let Err(e2) = core
                    .ingester
                    .scrape_failed(&ctx, &target, &mut state, duration, now)
                    .await
                {
                    tracing::debug!(cluster = %ctx.name, source = %name, error = %e2, "recording a failed scrape");
                }
                (false, 0, Some(e))
            }
        };
        if ok {
            st.telemetry.pull(&ctx.name, &name, ok, samples, duration);
        }
        if last_ok != Some(ok) {
            match &error {
                Some(e) => {
                    tracing::warn!(cluster = %ctx.name, source = %name, url = %src.url, error = %e, "pull source failing; retrying with backoff")
                }
                None => {
                    tracing::info!(cluster = %ctx.name, source = %name, url = %src.url, samples, "pull source up")
                }
            }
            last_ok = Some(ok);
        }
        let wait = if ok {
            failures = 0;
            src.interval.0
        } else {
            failures = failures.saturating_add(1);
            Duration::from_secs(1u64 << (failures - 1).min(16)).min(src.interval.0)
        };
        let wait = wait.saturating_sub(started.elapsed().min(wait));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|v| *v) => break,
        }
    }
    // removed from the config: its series go stale (not at shutdown: a restart resumes them)
    if !st.shutting_down.load(std::sync::atomic::Ordering::Relaxed)
        && let Some(core) = st.core.get()
        && let Err(e) = core
            .ingester
            .scrape_ended(&ctx, &target, &mut state, now_ms())
            .await
    {
        tracing::debug!(cluster = %ctx.name, source = %name, error = %e, "ending a pull source");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federate_urls_carry_their_selectors() {
        let src = SourceConfig {
            cluster: "c".into(),
            url: "http://p:9090/federate".into(),
            match_: vec!["{job=\"node\"}".into(), "up".into()],
            ..SourceConfig::default()
        };
        assert_eq!(
            request_url(&src),
            "http://p:9090/federate?match%5B%5D=%7Bjob%3D%22node%22%7D&match%5B%5D=up"
        );
        let t = target(&src);
        assert!(t.honor_labels);
        assert_eq!(t.labels[1], ("job".to_string(), "federate".to_string()));
        let m = SourceConfig {
            url: "http://n:9100/metrics".into(),
            ..src
        };
        assert_eq!(request_url(&m), "http://n:9100/metrics");
        assert!(!target(&m).honor_labels);
    }
}
