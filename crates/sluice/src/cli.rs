//! Command-line definitions and the operator commands (`credentials`, `audit`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};

/// sluice: EventBridge, Firehose, KMS and Secrets Manager, self-hosted, on AWS's own wire
/// protocols.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print the `export AWS_...` lines for the root access key pair.
    Credentials(DataDirArgs),
    /// Read the audit trail (every KMS call, newest first).
    Audit(AuditArgs),
    /// Test event patterns (no server needed).
    #[command(subcommand)]
    Pattern(crate::tools::PatternCommand),
    /// Evaluate and explain IAM / key policy decisions (no server needed).
    #[command(subcommand)]
    Policy(crate::tools::PolicyCommand),
    /// EventBridge dead letters: deliveries that exhausted their retries.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `sluice dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered deliveries (one JSON document a line).
    List {
        #[command(flatten)]
        /// Data directory.
        dir: DataDirArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Queue dead-lettered deliveries again (all, or the given ids); a running server delivers
    /// them on its next poll.
    Redrive {
        #[command(flatten)]
        /// Data directory.
        dir: DataDirArgs,
        /// Only these dead-letter ids.
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

/// Where the data directory is.
#[derive(Debug, Args)]
pub struct DataDirArgs {
    /// Data directory.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = ".sluice")]
    pub data_dir: PathBuf,
    /// TOML configuration file (its `data_dir`, `region`, `listen` are used when given).
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Flags of `sluice serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:4566].
    #[arg(long, env = "SLUICE_LISTEN")]
    pub listen: Option<String>,
    /// Data directory, created if missing [default: ./.sluice].
    #[arg(long, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Region to serve [default: us-east-1].
    #[arg(long, env = "SLUICE_REGION")]
    pub region: Option<String>,
    /// Account id to serve [default: 000000000000].
    #[arg(long, env = "SLUICE_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// Largest request body accepted, in bytes [default: 8388608].
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// TOML configuration file.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Let the root principal put events whose source begins with `aws.` (to inject AWS
    /// service events such as EC2 state changes). Off by default.
    #[arg(long, env = "SLUICE_ALLOW_AWS_SOURCES")]
    pub allow_aws_sources: bool,
    /// Do not serve `/_sluice/metrics`.
    #[arg(long, env = "SLUICE_NO_METRICS")]
    pub no_metrics: bool,
    /// Refuse plain-http delivery destinations (AWS's rule: https only).
    #[arg(long, env = "SLUICE_OUTBOUND_HTTPS_ONLY")]
    pub outbound_https_only: bool,
    /// Refuse delivery destinations on loopback addresses.
    #[arg(long, env = "SLUICE_OUTBOUND_DENY_LOOPBACK")]
    pub outbound_deny_loopback: bool,
    /// Allow delivery destinations on private networks (10/8, 172.16/12, 192.168/16, fc00::/7).
    #[arg(long, env = "SLUICE_OUTBOUND_ALLOW_PRIVATE")]
    pub outbound_allow_private: bool,
    /// How long Firehose caches secret values, in seconds [default: 600].
    #[arg(long, env = "SLUICE_SECRET_CACHE_TTL")]
    pub secret_cache_ttl: Option<u64>,
    /// Folder of the local object store for Firehose backups [default: <data-dir>/objects].
    #[arg(long, env = "SLUICE_OBJECTS_DIR")]
    pub objects_dir: Option<PathBuf>,
    /// Write Firehose objects to this S3-compatible endpoint instead of a local folder
    /// (credentials from SLUICE_S3_ACCESS_KEY_ID / SLUICE_S3_SECRET_ACCESS_KEY).
    #[arg(long, env = "SLUICE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region of the S3-compatible store [default: the served region].
    #[arg(long, env = "SLUICE_S3_REGION")]
    pub s3_region: Option<String>,
    /// Allow a plain-http S3 endpoint.
    #[arg(long, env = "SLUICE_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
}

/// Flags of `sluice audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    /// Data directory.
    pub dir: DataDirArgs,
    /// Only records about this key (key id, key ARN, or any part of a resource ARN).
    #[arg(long)]
    pub key: Option<String>,
    /// Only records by this principal (ARN, principal id or access key id).
    #[arg(long)]
    pub principal: Option<String>,
    /// Only records of this operation (e.g. Decrypt).
    #[arg(long)]
    pub event_name: Option<String>,
    /// Only records at or after this time (RFC 3339, or an age such as 15m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records at or before this time (RFC 3339, or an age such as 15m, 2h, 7d).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// One JSON document per line (the full CloudTrail-style record).
    #[arg(long)]
    pub json: bool,
}

/// Resolves `sluice serve` settings: flag or environment, then file, then default.
pub fn serve_config(a: &ServeArgs) -> anyhow::Result<Config> {
    let file = match &a.config {
        Some(p) => config::read_file(p)?,
        None => config::FileConfig::default(),
    };
    let data_dir = a
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(".sluice"));
    let mut cfg = Config::new(data_dir);
    if let Some(l) = a.listen.clone().or(file.listen.clone()) {
        cfg.listen = l
            .parse()
            .map_err(|e| anyhow::anyhow!("listen address {l:?}: {e}"))?;
    }
    if let Some(r) = a.region.clone().or(file.region.clone()) {
        cfg.region = r;
    }
    if let Some(acct) = a.account_id.clone().or(file.account_id.clone()) {
        cfg.account_id = acct;
    }
    if let Some(m) = a.max_body_bytes.or(file.max_body_bytes) {
        cfg.max_body_bytes = m;
    }
    cfg.allow_aws_sources = a.allow_aws_sources || file.allow_aws_sources.unwrap_or(false);
    cfg.metrics = !a.no_metrics && file.metrics.unwrap_or(true);
    cfg.outbound = sluice_outbound::OutboundPolicy {
        allow_http: !a.outbound_https_only && file.outbound_allow_http.unwrap_or(true),
        allow_loopback: !a.outbound_deny_loopback && file.outbound_allow_loopback.unwrap_or(true),
        allow_private: a.outbound_allow_private || file.outbound_allow_private.unwrap_or(false),
    };
    if let Some(t) = a.secret_cache_ttl.or(file.secret_cache_ttl_secs) {
        cfg.secret_cache_ttl = std::time::Duration::from_secs(t);
    }
    cfg.objects = match a.s3_endpoint.clone().or(file.s3_endpoint.clone()) {
        Some(endpoint) => Some(sluice_firehose::ObjectsConfig::S3 {
            endpoint: Some(endpoint),
            region: a
                .s3_region
                .clone()
                .or(file.s3_region.clone())
                .unwrap_or_else(|| cfg.region.clone()),
            access_key_id: std::env::var("SLUICE_S3_ACCESS_KEY_ID")
                .ok()
                .filter(|v| !v.is_empty()),
            secret_access_key: std::env::var("SLUICE_S3_SECRET_ACCESS_KEY")
                .ok()
                .filter(|v| !v.is_empty())
                .map(zeroize::Zeroizing::new),
            allow_http: a.s3_allow_http || file.s3_allow_http.unwrap_or(false),
        }),
        None => a
            .objects_dir
            .clone()
            .or(file.objects_dir.clone())
            .map(sluice_firehose::ObjectsConfig::Local),
    };
    if let Some(s) = &file.sqlite_sync {
        cfg.sqlite_full_sync = match s.as_str() {
            "full" => true,
            "normal" => false,
            other => anyhow::bail!("sqlite_sync must be \"full\" or \"normal\", got {other:?}"),
        };
    }
    if let Some(ms) = file.audit_sync_ms {
        if ms > 10_000 {
            anyhow::bail!("audit_sync_ms must be at most 10000, got {ms}");
        }
        cfg.audit_sync = std::time::Duration::from_millis(ms);
    }
    let id = std::env::var("SLUICE_ROOT_ACCESS_KEY_ID").ok();
    let secret = std::env::var("SLUICE_ROOT_SECRET_ACCESS_KEY").ok();
    cfg.root_credentials = match (id, secret) {
        (Some(i), Some(s)) if !i.is_empty() && !s.is_empty() => Some((i, s)),
        (None, None) => None,
        _ => anyhow::bail!(
            "set both SLUICE_ROOT_ACCESS_KEY_ID and SLUICE_ROOT_SECRET_ACCESS_KEY, or neither"
        ),
    };
    cfg.root_key = std::env::var("SLUICE_ROOT_KEY")
        .ok()
        .filter(|s| !s.is_empty());
    cfg.validate()?;
    Ok(cfg)
}

fn data_dir_of(a: &DataDirArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &a.config {
        let f = config::read_file(p)?;
        if let Some(d) = f.data_dir {
            return Ok(d);
        }
    }
    Ok(a.data_dir.clone())
}

/// Opens the store of an existing data directory for an operator command (also while a server
/// runs: SQLite's WAL lets a second process read and write).
pub fn open_store(dir: &std::path::Path) -> anyhow::Result<sluice_store::sqlite::SqliteStore> {
    let db = dir.join("sluice.db");
    if !db.exists() {
        anyhow::bail!("{} has no store (sluice.db)", dir.display());
    }
    sluice_store::sqlite::SqliteStore::open(&db, Default::default())
        .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))
}

fn open_root(dir: &std::path::Path) -> anyhow::Result<sluice_crypto::RootKey> {
    if let Ok(t) = std::env::var("SLUICE_ROOT_KEY")
        && !t.is_empty()
    {
        return sluice_crypto::RootKey::from_base64(&t)
            .map_err(|e| anyhow::anyhow!("SLUICE_ROOT_KEY: {e}"));
    }
    let path = dir.join("root.key");
    if !path.exists() {
        anyhow::bail!(
            "{} has no root key: start `sluice serve --data-dir {}` once first",
            dir.display(),
            dir.display()
        );
    }
    Ok(sluice_crypto::RootKey::load_or_create(&path)
        .map_err(|e| anyhow::anyhow!("root key: {e}"))?
        .0)
}

/// `sluice credentials`: prints the shell lines that point the aws CLI and SDKs at sluice.
pub fn credentials(a: &DataDirArgs, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let dir = data_dir_of(a)?;
    let (region, listen) = match &a.config {
        Some(p) => {
            let f = config::read_file(p)?;
            (f.region, f.listen)
        }
        None => (None, None),
    };
    let region = std::env::var("SLUICE_REGION")
        .ok()
        .or(region)
        .unwrap_or_else(|| "us-east-1".into());
    let listen = std::env::var("SLUICE_LISTEN")
        .ok()
        .or(listen)
        .unwrap_or_else(|| "127.0.0.1:4566".into());
    let (id, secret) = match (
        std::env::var("SLUICE_ROOT_ACCESS_KEY_ID"),
        std::env::var("SLUICE_ROOT_SECRET_ACCESS_KEY"),
    ) {
        (Ok(i), Ok(s)) if !i.is_empty() && !s.is_empty() => (i, s),
        _ => {
            let root = open_root(&dir)?;
            let pair = crate::credentials::load(&dir, &root)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no generated credentials: start `sluice serve` once first",
                    dir.display()
                )
            })?;
            (pair.access_key_id.clone(), pair.secret_access_key.clone())
        }
    };
    writeln!(out, "export AWS_ACCESS_KEY_ID={id}")?;
    writeln!(out, "export AWS_SECRET_ACCESS_KEY={secret}")?;
    writeln!(out, "export AWS_DEFAULT_REGION={region}")?;
    writeln!(out, "export AWS_REGION={region}")?;
    writeln!(out, "export AWS_ENDPOINT_URL=http://{listen}")?;
    Ok(())
}

/// Parses `--since` / `--until`: RFC 3339, or an age (`90s`, `15m`, `2h`, `7d`).
pub fn parse_time(text: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let (num, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is neither an RFC 3339 time nor an age like 15m"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("{text:?}: an age ends in s, m, h or d"),
    };
    Ok(now_ms - n * ms)
}

/// `sluice dlq list|redrive`: opens the data directory's store (also while a server runs; SQLite
/// allows it) and works on EventBridge's dead-letter namespace.
pub async fn dlq(cmd: &DlqCommand, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    use std::sync::Arc;
    let dir = match cmd {
        DlqCommand::List { dir, .. } | DlqCommand::Redrive { dir, .. } => data_dir_of(dir)?,
    };
    let root = Arc::new(open_root(&dir)?);
    let store: Arc<dyn sluice_store::Store> = Arc::new(open_store(&dir)?);
    let clock: Arc<dyn sluice_core::Clock> = Arc::new(sluice_core::SystemClock);
    let audit = sluice_audit::AuditLog::new(store.clone(), clock.clone(), "");
    let (account, region) = (
        std::env::var("SLUICE_ACCOUNT_ID").unwrap_or_else(|_| "000000000000".into()),
        std::env::var("SLUICE_REGION").unwrap_or_else(|_| "us-east-1".into()),
    );
    let iam = Arc::new(
        sluice_iam::Iam::open(
            store.clone(),
            root,
            clock.clone(),
            audit.clone(),
            sluice_iam::IamConfig {
                account: account.clone(),
                region: region.clone(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("loading IAM: {}", e.message))?,
    );
    let events = sluice_events::Events::open(
        store.clone(),
        clock,
        audit,
        iam,
        sluice_events::EventsConfig::new(&account, &region),
    )
    .await
    .map_err(|e| anyhow::anyhow!("loading EventBridge: {}", e.message))?;
    match cmd {
        DlqCommand::List { limit, .. } => {
            for e in events
                .dead_letters(*limit)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?
            {
                writeln!(out, "{}", serde_json::to_string(&e)?)?;
            }
        }
        DlqCommand::Redrive { ids, .. } => {
            let n = events
                .redrive(if ids.is_empty() { None } else { Some(ids) })
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            writeln!(out, "redriven: {n}")?;
        }
    }
    store.close().await.ok();
    Ok(())
}

/// `sluice audit`: reads the trail from the data directory (also while a server runs).
pub async fn audit(a: &AuditArgs, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    use sluice_core::Clock;
    let dir = data_dir_of(&a.dir)?;
    let store: std::sync::Arc<dyn sluice_store::Store> = std::sync::Arc::new(open_store(&dir)?);
    let clock = std::sync::Arc::new(sluice_core::SystemClock);
    let now = clock.now_millis();
    let log = sluice_audit::AuditLog::new(store.clone(), clock, "");
    let filter = sluice_audit::AuditFilter {
        resource: a.key.clone(),
        principal: a.principal.clone(),
        event_name: a.event_name.clone(),
        start_ms: a.since.as_deref().map(|s| parse_time(s, now)).transpose()?,
        end_ms: a.until.as_deref().map(|s| parse_time(s, now)).transpose()?,
        ..Default::default()
    };
    let rows = log
        .query(&filter, a.limit, None)
        .await
        .map_err(|e| anyhow::anyhow!("reading the audit trail: {}", e.message))?;
    for (_, r) in &rows {
        if a.json {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        } else {
            let key = r.resources.first().map(|x| x.arn.as_str()).unwrap_or("-");
            let via = r.user_identity.invoked_by.as_deref().unwrap_or("-");
            let ctx = r
                .request_parameters
                .get("encryptionContext")
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{}  {:<32} {:<8} {}  principal={} via={} context={}",
                r.event_time,
                r.event_name,
                r.error_code.as_deref().unwrap_or("OK"),
                key,
                r.user_identity.arn,
                via,
                ctx
            )?;
        }
    }
    store.close().await.ok();
    Ok(())
}
