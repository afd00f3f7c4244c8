//! The Kubecost multi-cluster `clusters.yaml` as fleetgate config: each entry `{name, address,
//! bearerToken, local, monthlySpendThreshold}` becomes a cluster (its threshold its
//! `monthly_spend_threshold`) with a pull source on its address. Accepted as the
//! `kubecost-clusters-config` ConfigMap, as its data file (`clusters: [...]`), or as the bare list;
//! `${VAR}` references are resolved from the environment before parsing.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::config::{ClusterConfig, Config, SourceConfig};

/// One entry of the file. Keys fleetgate does not use (`auth`, `details`, …) are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    name: String,
    address: String,
    #[serde(default)]
    bearer_token: Option<String>,
    /// Kubecost's "this is the local cluster"; a pull source either way here.
    #[serde(default)]
    #[allow(dead_code)]
    local: Option<serde_yaml::Value>,
    #[serde(default)]
    monthly_spend_threshold: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Wrapped {
    clusters: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct ConfigMap {
    kind: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// Replaces `${NAME}` with the value of `NAME` from `env`; an unset variable is an error naming it.
/// Comment lines are left as they are.
pub(crate) fn expand(text: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
        } else {
            expand_line(line, &env, &mut out)?;
        }
    }
    Ok(out)
}

fn expand_line(
    line: &str,
    env: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> anyhow::Result<()> {
    let mut rest = line;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            bail!("unterminated `${{` reference");
        };
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("`${{{name}}}` is not a variable reference");
        }
        match env(name) {
            Some(v) => out.push_str(&v),
            None => bail!("environment variable {name} (referenced as `${{{name}}}`) is not set"),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

fn entries(text: &str) -> anyhow::Result<Vec<Entry>> {
    let v: serde_yaml::Value = serde_yaml::from_str(text).context("not YAML")?;
    if v.is_sequence() {
        return serde_path_to_error::deserialize(v)
            .map_err(|e| anyhow::anyhow!("at `{}`: {}", e.path(), e.inner()));
    }
    if v.get("kind").is_some() {
        let cm: ConfigMap = serde_yaml::from_value(v).context("a ConfigMap")?;
        if cm.kind != "ConfigMap" {
            bail!("kind {:?}: expected a ConfigMap", cm.kind);
        }
        let mut all = Vec::new();
        for (key, text) in &cm.data {
            all.extend(entries(text).with_context(|| format!("data key {key:?}"))?);
        }
        return Ok(all);
    }
    let w: Wrapped = serde_path_to_error::deserialize(v)
        .map_err(|e| anyhow::anyhow!("at `{}`: {}", e.path(), e.inner()))?;
    Ok(w.clusters)
}

/// The pull URL of an address: the address itself when it names a path, else its `/federate`.
fn pull_url(address: &str) -> String {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    match rest.find('/') {
        Some(i) if !rest[i..].trim_end_matches('/').is_empty() => address.to_string(),
        _ => format!("{}/federate", address.trim_end_matches('/')),
    }
}

/// Adds the clusters and sources of a Kubecost clusters file (`text`) to `cfg`. A cluster already
/// configured under the same name keeps its token, labels and limits and gains the threshold
/// and the source; a source already configured for it (same cluster, name `kubecost`) wins.
pub(crate) fn apply(
    cfg: &mut Config,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let text = expand(text, env)?;
    for (i, e) in entries(&text)?.into_iter().enumerate() {
        if e.name.trim().is_empty() {
            bail!("clusters[{i}].name: must not be empty");
        }
        if !(e.address.starts_with("http://") || e.address.starts_with("https://")) {
            bail!(
                "clusters[{i}].address: {:?} is not an http(s) URL",
                e.address
            );
        }
        if let Some(t) = e.monthly_spend_threshold
            && !(t.is_finite() && t >= 0.0)
        {
            bail!("clusters[{i}].monthlySpendThreshold: must be a non-negative number");
        }
        match cfg.clusters.iter_mut().find(|c| c.name == e.name) {
            Some(c) => {
                if e.monthly_spend_threshold.is_some() {
                    c.monthly_spend_threshold = e.monthly_spend_threshold;
                }
            }
            None => cfg.clusters.push(ClusterConfig {
                name: e.name.clone(),
                monthly_spend_threshold: e.monthly_spend_threshold,
                ..ClusterConfig::default()
            }),
        }
        let name = Some("kubecost".to_string());
        if !cfg
            .sources
            .iter()
            .any(|s| s.cluster == e.name && s.name == name)
        {
            cfg.sources.push(SourceConfig {
                cluster: e.name.clone(),
                name,
                url: pull_url(&e.address),
                bearer_token: e.bearer_token.filter(|t| !t.is_empty()),
                ..SourceConfig::default()
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables() {
        let env = |k: &str| (k == "TOKEN_A").then(|| "s3cret".to_string());
        assert_eq!(expand("t: ${TOKEN_A}!", env).unwrap(), "t: s3cret!");
        assert!(
            expand("${MISSING}", env)
                .unwrap_err()
                .to_string()
                .contains("MISSING")
        );
        assert!(expand("${oops", env).is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(pull_url("http://p:9090"), "http://p:9090/federate");
        assert_eq!(pull_url("http://p:9090/"), "http://p:9090/federate");
        assert_eq!(pull_url("http://p:9090/metrics"), "http://p:9090/metrics");
        assert_eq!(
            pull_url("https://p/prometheus/federate"),
            "https://p/prometheus/federate"
        );
    }

    #[test]
    fn the_three_shapes_parse_alike() {
        let list = "- name: a\n  address: http://a:9090\n  monthlySpendThreshold: 100\n";
        let wrapped =
            "clusters:\n  - name: a\n    address: http://a:9090\n    monthlySpendThreshold: 100\n";
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kubecost-clusters-config}}\ndata:\n  default-clusters.yaml: |\n{}",
            wrapped
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let wrapped = wrapped.to_string();
        for text in [list.to_string(), wrapped, cm] {
            let e = entries(&text).unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(e.len(), 1, "{text}");
            assert_eq!(
                (e[0].name.as_str(), e[0].monthly_spend_threshold),
                ("a", Some(100.0))
            );
        }
    }
}
