//! Configuration: command-line flags, `SLUICE_*` environment variables, a TOML file, defaults.
//!
//! Precedence, highest first: a flag on the command line, its environment variable, the TOML
//! file named by `--config` / `SLUICE_CONFIG`, the built-in default. Every setting is listed in
//! the README.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Settings read from the TOML file; every member optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address.
    pub listen: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Region served.
    pub region: Option<String>,
    /// Account id served.
    pub account_id: Option<String>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Log filter (tracing env-filter syntax).
    pub log: Option<String>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// SQLite synchronous mode: `full` (default) or `normal`.
    pub sqlite_sync: Option<String>,
    /// Longest time, in milliseconds, the audit record of a call that changed nothing waits
    /// for its fsync after the answer (default 50; 0 = fsync before answering).
    pub audit_sync_ms: Option<u64>,
    /// Let the root principal put events whose source begins `aws.` (off by default).
    pub allow_aws_sources: Option<bool>,
    /// Serve Prometheus metrics at `/_sluice/metrics` without authentication (default true).
    pub metrics: Option<bool>,
    /// Outbound deliveries may use plain http (default true).
    pub outbound_allow_http: Option<bool>,
    /// Outbound deliveries may reach loopback addresses (default true).
    pub outbound_allow_loopback: Option<bool>,
    /// Outbound deliveries may reach private-network addresses (default false).
    pub outbound_allow_private: Option<bool>,
    /// How long Firehose caches a secret value, seconds (default 600).
    pub secret_cache_ttl_secs: Option<u64>,
    /// Folder of the local object store (default `<data_dir>/objects`).
    pub objects_dir: Option<PathBuf>,
    /// S3-compatible object store endpoint (instead of the local folder).
    pub s3_endpoint: Option<String>,
    /// Region of the S3-compatible store (default: the served region).
    pub s3_region: Option<String>,
    /// Allow a plain-http S3 endpoint (default false).
    pub s3_allow_http: Option<bool>,
}

/// The resolved configuration of `sluice serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (default 127.0.0.1:4566).
    pub listen: SocketAddr,
    /// Data directory (default ./.sluice).
    pub data_dir: PathBuf,
    /// Region (default us-east-1).
    pub region: String,
    /// Account id (default 000000000000).
    pub account_id: String,
    /// Largest request body accepted (default 8 MiB).
    pub max_body_bytes: usize,
    /// SQLite `synchronous=FULL` (true, default) or `NORMAL`.
    pub sqlite_full_sync: bool,
    /// Longest time the audit record of a call that changed nothing (Decrypt, GetSecretValue,
    /// a denial) waits for its fsync after the call answered (default 50 ms; zero: before).
    pub audit_sync: std::time::Duration,
    /// Root access key pair from the environment, if given.
    pub root_credentials: Option<(String, String)>,
    /// Root key (base64) from the environment, if given.
    pub root_key: Option<String>,
    /// Let the root principal put events whose source begins `aws.` (default false).
    pub allow_aws_sources: bool,
    /// Serve `/_sluice/metrics` (default true).
    pub metrics: bool,
    /// Which destinations API destinations and Firehose endpoints may reach (default: http and
    /// loopback allowed, private networks refused, link-local never).
    pub outbound: sluice_outbound::OutboundPolicy,
    /// How long Firehose caches secret values (default 10 minutes; a stream's tag
    /// `sluice:secret-cache-ttl-seconds` overrides it).
    pub secret_cache_ttl: std::time::Duration,
    /// Where Firehose writes objects (`None`: the folder `<data_dir>/objects`).
    pub objects: Option<sluice_firehose::ObjectsConfig>,
    /// Factor on every Firehose retry wait (1.0 = AWS's 1 s .. 120 s schedule; tests and
    /// demos shrink it). `SLUICE_FIREHOSE_BACKOFF_SCALE` sets it for `sluice serve`.
    pub firehose_backoff_scale: Option<f64>,
}

impl Config {
    /// Defaults for everything, in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            listen: "127.0.0.1:4566".parse().expect("valid address"),
            data_dir,
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            max_body_bytes: 8 * 1024 * 1024,
            sqlite_full_sync: true,
            audit_sync: std::time::Duration::from_millis(50),
            root_credentials: None,
            root_key: None,
            allow_aws_sources: false,
            metrics: true,
            outbound: sluice_outbound::OutboundPolicy::default(),
            secret_cache_ttl: std::time::Duration::from_secs(600),
            objects: None,
            firehose_backoff_scale: None,
        }
    }

    /// Checks values a typo could make dangerous or meaningless.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::bail!("account id must be 12 digits, got {:?}", self.account_id);
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            anyhow::bail!("region {:?} is not a valid region name", self.region);
        }
        if self.max_body_bytes < 1024 {
            anyhow::bail!("max_body_bytes must be at least 1024");
        }
        Ok(())
    }
}

/// Reads a TOML config file.
pub fn read_file(path: &std::path::Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
}
