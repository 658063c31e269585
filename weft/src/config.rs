//! The `weft` configuration: one serde tree, read from a TOML file, then overridden by
//! `WEFT_*` environment variables, then by command-line flags.
//!
//! Environment variables name a key path with `__` between levels, e.g.
//! `WEFT_COLLECTOR__DATA_DIR=/var/lib/weft` or `WEFT_LISTEN__OTLP_GRPC=0.0.0.0:4317`.
//! Values are read as TOML (numbers, booleans) and fall back to plain strings.
//! Only `WEFT_<SECTION>__...` variables of a known section are configuration; other
//! `WEFT_*` names (tools' own variables such as `WEFT_URL`) are ignored with a warning.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use weft_cluster::ClusterConfig;
use weft_collector::CollectorConfig;
use weft_ingest::IngestConfig;
use weft_query::QueryConfig;
use weft_sampling::SamplingConfig;

/// Prefix of the environment variables that override config keys.
pub(crate) const ENV_PREFIX: &str = "WEFT_";
/// Variables with the prefix that are not config keys.
const ENV_RESERVED: &[&str] = &["WEFT_CONFIG", "WEFT_LOG"];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct WeftConfig {
    pub listen: ListenConfig,
    pub collector: CollectorConfig,
    pub query: QueryConfig,
    /// `weft ingest` / `weft collector` / `weft query` only (`weft up` is one node).
    pub cluster: ClusterConfig,
    /// `weft ingest` only: forwarding, retries, circuit breakers, the hand-off spool.
    pub ingest: IngestConfig,
    /// Head sampling (where spans enter: `weft up`, `weft ingest`), tail sampling (where
    /// traces are stored: `weft up`, `weft collector`), metrics limits. Reloaded on SIGHUP.
    pub sampling: SamplingConfig,
    /// Where Parquet files, trace-ID filters and manifests live (`storage.url`): local disk
    /// by default, or an S3-compatible, GCS or Azure bucket. WALs are always local.
    pub storage: weft_storage::StorageConfig,
}

/// Where the configuration came from, so SIGHUP can read it again the same way.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigSource {
    pub file: Option<std::path::PathBuf>,
    pub overrides: Vec<(String, String)>,
}

static SOURCE: std::sync::OnceLock<ConfigSource> = std::sync::OnceLock::new();

impl ConfigSource {
    /// Records the source of this process's configuration (once, from `main`).
    pub(crate) fn remember(self) {
        let _ = SOURCE.set(self);
    }

    /// Reads the configuration again: file, then environment, then flags.
    pub(crate) fn reload() -> anyhow::Result<WeftConfig> {
        let source = SOURCE.get().cloned().unwrap_or_default();
        WeftConfig::load(source.file.as_deref(), std::env::vars(), &source.overrides)
    }
}

/// Where `weft up` listens. Port 0 picks a free port; the chosen one is printed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ListenConfig {
    /// OTLP/gRPC receiver.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP receiver (also Prometheus remote-write at /api/v1/write).
    pub otlp_http: SocketAddr,
    /// Query API (SQL, traces) and the web viewer.
    pub query_http: SocketAddr,
    /// Postgres wire protocol (psql, BI tools): the same read-only SQL as the query API.
    pub postgres: SocketAddr,
    /// `weft collector`: internal OTLP/gRPC that ingest nodes forward to.
    pub cluster_grpc: SocketAddr,
    /// `weft collector`: internal HTTP (health, node info, unflushed rows for queries,
    /// Prometheus remote-write forwarded by ingest nodes).
    pub cluster_http: SocketAddr,
    /// `host:port` other nodes use to reach `cluster_grpc` (behind NAT, a proxy, or when
    /// listening on 0.0.0.0). Empty: the bound address.
    pub advertise_cluster_grpc: String,
    /// Same for `cluster_http`.
    pub advertise_cluster_http: String,
    /// Every listener: HTTP/1 request headers must arrive within this many seconds, and a
    /// keep-alive connection that sends no new request for this long is closed.
    pub header_read_timeout_secs: u64,
    /// A request body that sends nothing for this long is cut (408; the OTLP receivers
    /// release its in-flight budget).
    pub body_idle_timeout_secs: u64,
    /// A request body not complete after this long is cut (408): a minimum upload rate.
    pub body_timeout_secs: u64,
    /// A connection with no request running and no byte in or out for this long is closed.
    pub idle_timeout_secs: u64,
    /// Open connections per listener. At the cap the connection idle longest is closed to
    /// make room. 0: derived from the open-file limit (raised to its hard limit at start).
    pub max_connections: usize,
    /// HTTP/2 (gRPC): concurrent streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 (gRPC): ping an idle connection this often; close it when a ping is not
    /// answered within `http2_keepalive_timeout_secs`.
    pub http2_keepalive_interval_secs: u64,
    pub http2_keepalive_timeout_secs: u64,
}

impl ListenConfig {
    /// The connection limits of one of `listeners` listeners of this process.
    pub(crate) fn limits(&self, listeners: usize) -> weft_receiver::listen::Limits {
        use std::time::Duration;
        let secs = |s: u64| Duration::from_secs(s.max(1));
        weft_receiver::listen::Limits {
            header_read_timeout: secs(self.header_read_timeout_secs),
            body_idle_timeout: secs(self.body_idle_timeout_secs),
            body_timeout: secs(self.body_timeout_secs),
            idle_timeout: secs(self.idle_timeout_secs),
            max_connections: match self.max_connections {
                0 => weft_receiver::listen::default_max_connections(listeners),
                n => n,
            },
            http2_max_concurrent_streams: self.http2_max_concurrent_streams.max(1),
            http2_keepalive_interval: secs(self.http2_keepalive_interval_secs),
            http2_keepalive_timeout: secs(self.http2_keepalive_timeout_secs),
            ..weft_receiver::listen::Limits::default()
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            otlp_grpc: SocketAddr::from(([127, 0, 0, 1], 4317)),
            otlp_http: SocketAddr::from(([127, 0, 0, 1], 4318)),
            query_http: SocketAddr::from(([127, 0, 0, 1], 3200)),
            // 5433, not Postgres' 5432, so Weft runs beside a local PostgreSQL server.
            postgres: SocketAddr::from(([127, 0, 0, 1], 5433)),
            cluster_grpc: SocketAddr::from(([127, 0, 0, 1], 4417)),
            cluster_http: SocketAddr::from(([127, 0, 0, 1], 4419)),
            advertise_cluster_grpc: String::new(),
            advertise_cluster_http: String::new(),
            header_read_timeout_secs: 10,
            body_idle_timeout_secs: 30,
            body_timeout_secs: 300,
            idle_timeout_secs: 300,
            max_connections: 0,
            http2_max_concurrent_streams: 256,
            http2_keepalive_interval_secs: 30,
            http2_keepalive_timeout_secs: 20,
        }
    }
}

impl WeftConfig {
    /// Loads the file (if any), applies `vars` (normally `std::env::vars()`), then the
    /// `key.path=value` overrides from flags.
    pub(crate) fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
        overrides: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let mut tree = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        let sections = Self::sections();
        for (name, value) in vars {
            let Some(path) = env_key_path(&name, &sections) else {
                continue;
            };
            set_path(&mut tree, &path, &value)
                .with_context(|| format!("environment variable {name}"))?;
        }
        for (key, value) in overrides {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set_path(&mut tree, &path, value).with_context(|| format!("override {key}"))?;
        }
        let config: WeftConfig = toml::Value::Table(tree)
            .try_into()
            .context("invalid configuration")?;
        config
            .sampling
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config
            .query
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Ok(config)
    }
}

impl WeftConfig {
    /// The top-level sections (`listen`, `collector`, ...): only `WEFT_<SECTION>__...`
    /// variables are configuration.
    fn sections() -> Vec<String> {
        toml::Value::try_from(WeftConfig::default())
            .ok()
            .and_then(|v| v.as_table().map(|t| t.keys().cloned().collect()))
            .unwrap_or_default()
    }

    /// `WEFT_*` variables in `vars` that are not configuration (no known section, or no
    /// `__`): ignored by [`WeftConfig::load`], worth a warning in case of a typo.
    pub(crate) fn ignored_env_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Vec<String> {
        let sections = Self::sections();
        let mut ignored: Vec<String> = vars
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| {
                name.starts_with(ENV_PREFIX)
                    && !ENV_RESERVED.contains(&name.as_str())
                    && env_key_path(name, &sections).is_none()
            })
            .collect();
        ignored.sort();
        ignored
    }
}

/// The config key path a `WEFT_*` variable sets: `WEFT_QUERY__TIMEOUT_SECS` ->
/// `["query", "timeout_secs"]`. `None` for other variables: the reserved ones, names
/// without `__`, and names whose first part is not a config section (`WEFT_URL`, which
/// tools and test scripts use for their own purposes), so those never stop Weft.
fn env_key_path(name: &str, sections: &[String]) -> Option<Vec<String>> {
    if ENV_RESERVED.contains(&name) {
        return None;
    }
    let key = name.strip_prefix(ENV_PREFIX)?;
    let (section, rest) = key.split_once("__")?;
    let section = section.to_ascii_lowercase();
    if rest.is_empty() || !sections.contains(&section) {
        return None;
    }
    let mut path = vec![section];
    path.extend(rest.split("__").map(|p| p.to_ascii_lowercase()));
    Some(path)
}

fn set_path(tree: &mut toml::Table, path: &[String], raw: &str) -> anyhow::Result<()> {
    let Some((last, parents)) = path.split_last() else {
        bail!("empty key");
    };
    let mut table = tree;
    for part in parents {
        let entry = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(next) = entry else {
            bail!("{part} is not a table");
        };
        table = next;
    }
    table.insert(last.clone(), parse_value(raw));
    Ok(())
}

/// `8080` -> integer, `true` -> boolean, `"x"`/`[1]` -> TOML; anything else a string.
fn parse_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weft.toml");
        std::fs::write(
            &file,
            "[collector]\ndata_dir = \"/from/file\"\n[query]\ntimeout_secs = 5\n",
        )
        .unwrap();
        let vars = vec![
            (
                "WEFT_COLLECTOR__DATA_DIR".to_owned(),
                "/from/env".to_owned(),
            ),
            ("WEFT_QUERY__TIMEOUT_SECS".to_owned(), "7".to_owned()),
            ("WEFT_CONFIG".to_owned(), "ignored".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let flags = vec![("query.timeout_secs".to_owned(), "9".to_owned())];
        let config = WeftConfig::load(Some(&file), vars, &flags).unwrap();
        assert_eq!(config.collector.data_dir, Path::new("/from/env"));
        assert_eq!(config.query.timeout_secs, 9);
    }

    #[test]
    fn invalid_sampling_values_name_their_key() {
        let vars = vec![("WEFT_SAMPLING__HEAD__RATIO".to_owned(), "1.5".to_owned())];
        let err = WeftConfig::load(None, vars, &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("sampling.head.ratio: 1.5 is outside [0, 1]"),
            "{err:#}"
        );
        let flags = vec![("sampling.tail.decision_wait_ms".to_owned(), "0".to_owned())];
        let err = WeftConfig::load(None, Vec::new(), &flags).unwrap_err();
        assert!(
            format!("{err:#}").contains("sampling.tail.decision_wait_ms must be > 0"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let vars = vec![("WEFT_QUERY__NO_SUCH_KEY".to_owned(), "1".to_owned())];
        let err = WeftConfig::load(None, vars, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("no_such_key"), "{err:#}");
    }

    #[test]
    fn only_variables_of_known_sections_are_config() {
        let vars = vec![
            ("WEFT_URL".to_owned(), "http://127.0.0.1:3200".to_owned()),
            ("WEFT_FACTS".to_owned(), "/tmp/facts.json".to_owned()),
            ("WEFT_NOT_A_SECTION__KEY".to_owned(), "1".to_owned()),
            ("WEFT_QUERY".to_owned(), "1".to_owned()),
            ("WEFT_QUERY__".to_owned(), "1".to_owned()),
            ("WEFT_LOG".to_owned(), "debug".to_owned()),
            ("WEFT_QUERY__TIMEOUT_SECS".to_owned(), "9".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let config = WeftConfig::load(None, vars.clone(), &[]).unwrap();
        assert_eq!(config.query.timeout_secs, 9);
        assert_eq!(
            WeftConfig::ignored_env_vars(vars),
            [
                "WEFT_FACTS",
                "WEFT_NOT_A_SECTION__KEY",
                "WEFT_QUERY",
                "WEFT_QUERY__",
                "WEFT_URL"
            ]
        );
        // A known section with an unknown key is still a typo worth refusing.
        let typo = vec![("WEFT_LISTEN__OTLP_GRCP".to_owned(), "x".to_owned())];
        assert!(WeftConfig::load(None, typo, &[]).is_err());
    }

    /// `config.example.toml` documents every key with its default value.
    #[test]
    fn example_config_matches_the_code() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example: WeftConfig = toml::from_str(&text).unwrap();
        assert_eq!(
            example,
            WeftConfig::default(),
            "example values must be the defaults"
        );
        let example_keys = keys(&text.parse::<toml::Table>().unwrap(), "");
        let default_text = toml::to_string(&WeftConfig::default()).unwrap();
        let default_keys = keys(&default_text.parse::<toml::Table>().unwrap(), "");
        assert_eq!(example_keys, default_keys, "example must list every key");
    }

    fn keys(table: &toml::Table, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in table {
            let key = format!("{prefix}{k}");
            match v {
                toml::Value::Table(t) => out.extend(keys(t, &format!("{key}."))),
                _ => out.push(key),
            }
        }
        out.sort();
        out
    }
}
