//! Entry points for the fuzz targets in `fuzz/`: the gateway's parsers of operator input,
//! reachable without a process. Not an API (hidden from the docs; may change with any release).

use crate::config::{Config, FlagOverrides};

/// Parses and validates `yaml` as a config file, as `fleetgate serve --config` does, with
/// `env` as `FLEETGATE__…` variables: `Ok` with the effective config's YAML, or the error text.
pub fn config_yaml(yaml: &str, env: &[(String, String)]) -> Result<String, String> {
    let cfg = Config::from_text(
        Some(yaml),
        "fuzz",
        env.iter().cloned(),
        &FlagOverrides::default(),
    )
    .map_err(|e| e.to_string())?;
    serde_yaml::to_string(&cfg).map_err(|e| e.to_string())
}
