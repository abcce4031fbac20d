//! Amazon Data Firehose for sluice: DirectPut delivery streams that buffer records durably and
//! deliver them to HTTP endpoints (in the Firehose HTTP delivery format, with retries and an
//! S3 backup of failed or all data) or write them as objects (ExtendedS3).
//!
//! # Design constraints
//! - **No acknowledged record is lost.** PutRecord / PutRecordBatch write the call's records as
//!   one chunk in one store batch and answer only after that `apply` returned (durable, group
//!   committed). A chunk leaves the store only in the batch that records its fate: delivered
//!   (and, with `AllData`, backed up), or written to the backup bucket as error records. If the
//!   endpoint *and* the backup fail, the stream pauses and keeps the data (as AWS does).
//! - **At-least-once delivery.** A process killed mid-delivery re-sends the batch after restart.
//!   The request id (`X-Amz-Firehose-Request-Id`, for deduplication) is stable across the retries
//!   of a batch, and across restarts once an attempt has failed (the batch state is stored then).
//! - **One delivery task per stream**, batches in order; the configuration is re-read before
//!   every attempt, so UpdateDestination (new URL, new access key) applies to the next retry.
//! - **Credentials never leak.** The configured access key is sealed under the root key at rest
//!   and never returned by DescribeDeliveryStream; secret values come from
//!   [`sluice_secrets::SecretCache`] in zeroizing buffers. Neither is logged, audited, put in an
//!   error message or an error record.
//! - **The stream's role is enforced.** The delivery assumes the stream's role as
//!   `firehose.amazonaws.com` (trust policy checked by IAM), reads the secret as that role
//!   (Secrets Manager authorizes GetSecretValue and KMS the decrypt), and writes backup objects
//!   only if the role's policies allow `s3:PutObject` on the object. A denial is a delivery error
//!   naming the role, the action and the resource (DescribeDeliveryStream's
//!   `FailureDescription`, the logs, `/_sluice/metrics`).
//! - **The codec is pure** ([`codec`]: bodies, headers, response judgement, error records, key
//!   layout, backoff), and time and jitter are injected (clock, seeded RNG, a backoff scale).
//!
//! - **Hot path without a `Value` tree.** PutRecordBatch bodies in the usual form are decoded by
//!   [`ingest`] straight into the chunk that is committed (through
//!   [`sluice_core::JsonService::handle_raw`]); every other body takes the generic path, so
//!   clients see the same answers and errors either way.
//!
//! Stored formats are in [`model`]; the delivery loop in [`deliver`]; deliberate differences
//! from AWS in `docs/specs/firehose.md`.

pub mod codec;
pub mod deliver;
pub mod ingest;
pub mod model;
pub mod objects;
mod ops;
pub mod target;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rand::SeedableRng;
use serde_json::Value;
use sluice_audit::AuditLog;
use sluice_core::{AwsError, CallContext, Clock, Principal};
use sluice_crypto::RootKey;
use sluice_iam::Iam;
use sluice_outbound::{Outbound, OutboundPolicy};
use sluice_secrets::{SecretCache, Secrets};
use sluice_store::{KeyRange, Store};

use model::{BatchState, NS_BATCHES, NS_RECORDS, NS_STREAMS, StreamRecord};

pub use deliver::WorkerHandle;
pub use objects::ObjectsConfig;

/// The event source of Firehose audit records and the service principal the delivery acts as.
pub const SERVICE_PRINCIPAL: &str = "firehose.amazonaws.com";

/// Configuration of the Firehose service.
#[derive(Debug, Clone)]
pub struct FirehoseConfig {
    /// The account sluice serves.
    pub account: String,
    /// The region sluice serves.
    pub region: String,
    /// How long a secret value read for a stream is cached (default 10 minutes, as AWS); a
    /// stream's tag `sluice:secret-cache-ttl-seconds` overrides it for that stream.
    pub secret_cache_ttl: Duration,
    /// How long an endpoint may take to answer (default 3 minutes, as AWS).
    pub response_timeout: Duration,
    /// Multiplies every backoff wait (1.0 = AWS's schedule; tests use less).
    pub backoff_scale: f64,
    /// Longest sleep of an idle delivery task between checks, ms.
    pub poll_ms: u64,
    /// Seed of the jitter RNG (`None`: from the OS).
    pub rng_seed: Option<u64>,
    /// Where backup and ExtendedS3 objects go.
    pub objects: ObjectsConfig,
    /// Which endpoints deliveries may reach.
    pub outbound: OutboundPolicy,
}

impl FirehoseConfig {
    /// Defaults for `account` / `region`, objects under `objects_dir`.
    pub fn new(account: &str, region: &str, objects_dir: PathBuf) -> Self {
        Self {
            account: account.to_string(),
            region: region.to_string(),
            secret_cache_ttl: sluice_secrets::cache::DEFAULT_TTL,
            response_timeout: Duration::from_secs(180),
            backoff_scale: 1.0,
            poll_ms: 250,
            rng_seed: None,
            objects: ObjectsConfig::Local(objects_dir),
            outbound: OutboundPolicy::default(),
        }
    }

    /// Applies the operator's environment overrides: `SLUICE_FIREHOSE_BACKOFF_SCALE` (a factor
    /// on every retry wait), `SLUICE_FIREHOSE_RESPONSE_TIMEOUT_MS`, `SLUICE_FIREHOSE_POLL_MS`
    /// (unparsable values are ignored with a warning).
    pub fn with_env(mut self) -> Self {
        fn get<T: std::str::FromStr>(name: &str) -> Option<T> {
            let v = std::env::var(name).ok()?;
            let parsed = v.parse().ok();
            if parsed.is_none() {
                tracing::warn!(variable = name, value = %v, "ignoring an unparsable setting");
            }
            parsed
        }
        if let Some(v) = get::<f64>("SLUICE_FIREHOSE_BACKOFF_SCALE").filter(|v| *v >= 0.0) {
            self.backoff_scale = v;
        }
        if let Some(v) = get::<u64>("SLUICE_FIREHOSE_RESPONSE_TIMEOUT_MS").filter(|v| *v > 0) {
            self.response_timeout = Duration::from_millis(v);
        }
        if let Some(v) = get::<u64>("SLUICE_FIREHOSE_POLL_MS").filter(|v| *v > 0) {
            self.poll_ms = v;
        }
        self
    }
}

/// Counters (see [`Firehose::metrics_text`]).
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) incoming_records: AtomicU64,
    pub(crate) incoming_bytes: AtomicU64,
    pub(crate) delivered_records: AtomicU64,
    pub(crate) delivered_bytes: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) backed_up_records: AtomicU64,
    pub(crate) objects_written: AtomicU64,
    /// Delivery errors by (stream, error code).
    pub(crate) errors: Mutex<HashMap<(String, String), u64>>,
}

/// The buffered (not yet delivered) data of a stream, kept in memory to decide when to flush.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Buffered {
    pub bytes: u64,
    pub records: u64,
    pub oldest_ms: Option<i64>,
}

/// The latest delivery error of a stream.
#[derive(Debug, Clone)]
pub struct DeliveryError {
    /// The error code (`HttpEndpoint.DestinationException`, `SecretsManager.AccessDenied`, ...).
    pub code: String,
    /// The message (names role, action and resource for permission errors).
    pub message: String,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// In-memory state of one stream incarnation.
#[derive(Debug, Default)]
pub(crate) struct Runtime {
    pub buffered: Mutex<Buffered>,
    pub notify: tokio::sync::Notify,
    pub last_error: Mutex<Option<DeliveryError>>,
}

/// Shared state of the service.
pub struct Core {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) audit: AuditLog,
    pub(crate) iam: Arc<Iam>,
    pub(crate) secrets: Arc<Secrets>,
    pub(crate) root: Arc<RootKey>,
    pub(crate) outbound: Outbound,
    pub(crate) objects: objects::Objects,
    pub(crate) cfg: FirehoseConfig,
    pub(crate) streams: RwLock<HashMap<String, Arc<StreamRecord>>>,
    pub(crate) runtimes: RwLock<HashMap<String, Arc<Runtime>>>,
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    pub(crate) seq: AtomicU64,
    pub(crate) caches: Mutex<HashMap<u64, Arc<SecretCache>>>,
    pub(crate) roles: Mutex<HashMap<(String, String), (Principal, i64)>>,
    pub(crate) metrics: Metrics,
    pub(crate) rng: Mutex<rand::rngs::StdRng>,
    pub(crate) wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The Firehose service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Firehose {
    pub(crate) core: Arc<Core>,
}

pub(crate) fn internal<E: std::fmt::Display>(e: E) -> AwsError {
    tracing::error!(error = %e, "firehose internal error");
    AwsError::with_status(
        "ServiceUnavailableException",
        500,
        "The service is unavailable. Back off and retry the operation.",
    )
}

/// What the service is built from.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The audit trail.
    pub audit: AuditLog,
    /// IAM (role assumption, identity policies).
    pub iam: Arc<Iam>,
    /// Secrets Manager.
    pub secrets: Arc<Secrets>,
    /// The root key (seals access keys).
    pub root: Arc<RootKey>,
}

/// Reads every entry of `ns` (for loading state).
pub(crate) async fn scan_all(
    store: &dyn Store,
    ns: &str,
    range: KeyRange,
) -> Result<Vec<(Vec<u8>, sluice_store::Versioned)>, AwsError> {
    let mut out = Vec::new();
    let mut start = range.start.clone();
    loop {
        let r = KeyRange {
            start: start.clone(),
            end: range.end.clone(),
        };
        let page = store.scan(ns, r, 500, false).await.map_err(internal)?;
        let n = page.len();
        if let Some((k, _)) = page.last() {
            let mut k = k.clone();
            k.push(0);
            start = Some(k);
        }
        out.extend(page);
        if n < 500 {
            return Ok(out);
        }
    }
}

impl Firehose {
    /// Loads the service's state from the store.
    pub async fn open(d: Deps, cfg: FirehoseConfig) -> Result<Self, AwsError> {
        let rng = match cfg.rng_seed {
            Some(s) => rand::rngs::StdRng::seed_from_u64(s),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        let core = Arc::new(Core {
            store: d.store,
            clock: d.clock,
            audit: d.audit,
            iam: d.iam,
            secrets: d.secrets,
            root: d.root,
            outbound: Outbound::new(cfg.outbound),
            objects: objects::Objects::new(cfg.objects.clone()),
            cfg,
            streams: RwLock::new(HashMap::new()),
            runtimes: RwLock::new(HashMap::new()),
            write_lock: tokio::sync::Mutex::new(()),
            seq: AtomicU64::new(0),
            caches: Mutex::new(HashMap::new()),
            roles: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            rng: Mutex::new(rng),
            wake: tokio::sync::Notify::new(),
        });
        core.load().await?;
        Ok(Self { core })
    }

    /// [`Firehose::open`] for synchronous callers (service assembly).
    pub fn open_blocking(d: Deps, cfg: FirehoseConfig) -> Result<Self, AwsError> {
        futures::executor::block_on(Self::open(d, cfg))
    }

    /// Handles one wire operation (`op` is the part of X-Amz-Target after `Firehose_20150804.`).
    pub async fn handle(
        &self,
        op: &str,
        ctx: &CallContext,
        input: Value,
    ) -> Result<Value, AwsError> {
        ops::dispatch(&self.core, op, ctx, input).await
    }

    /// Handles a hot operation from its raw body (PutRecordBatch, decoded by [`ingest`]
    /// straight into a chunk); `None` when `op` or the body is not for the fast path and
    /// [`Firehose::handle`] must be called with the parsed, validated body instead.
    pub async fn handle_raw(
        &self,
        op: &str,
        ctx: &CallContext,
        body: &[u8],
    ) -> Option<Result<Vec<u8>, AwsError>> {
        match op {
            "PutRecordBatch" => ops::put_record_batch_raw(&self.core, ctx, body).await,
            _ => None,
        }
    }

    /// Starts the delivery tasks on the current Tokio runtime. Stop them with
    /// [`WorkerHandle::stop`] before closing the store.
    pub fn start_workers(&self) -> WorkerHandle {
        deliver::start(self.core.clone())
    }

    /// The EventBridge target kind delivering to this service's streams.
    pub fn target(&self) -> target::FirehoseTarget {
        target::FirehoseTarget::new(self.clone())
    }

    /// The latest delivery error of stream `name`, if its last attempt failed.
    pub fn delivery_error(&self, name: &str) -> Option<DeliveryError> {
        let s = self.core.streams.read().get(name).cloned()?;
        let rt = self.core.runtimes.read().get(&s.uid).cloned()?;
        rt.last_error.lock().clone()
    }

    /// Prometheus text for the service's counters.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let m = &self.core.metrics;
        let mut out = String::new();
        let mut c = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        c(
            "sluice_firehose_incoming_records_total",
            "Records accepted by PutRecord and PutRecordBatch (IncomingRecords).",
            "counter",
            l(&m.incoming_records),
        );
        c(
            "sluice_firehose_incoming_bytes_total",
            "Bytes accepted (IncomingBytes).",
            "counter",
            l(&m.incoming_bytes),
        );
        c(
            "sluice_firehose_delivered_records_total",
            "Records delivered to their destination (DeliveryToHttpEndpoint.Records / DeliveryToS3.Records).",
            "counter",
            l(&m.delivered_records),
        );
        c(
            "sluice_firehose_delivered_bytes_total",
            "Bytes delivered to their destination.",
            "counter",
            l(&m.delivered_bytes),
        );
        c(
            "sluice_firehose_delivery_attempts_total",
            "Delivery attempts.",
            "counter",
            l(&m.attempts),
        );
        c(
            "sluice_firehose_failed_attempts_total",
            "Delivery attempts that failed.",
            "counter",
            l(&m.failed_attempts),
        );
        c(
            "sluice_firehose_backed_up_records_total",
            "Records written to the backup bucket as error records.",
            "counter",
            l(&m.backed_up_records),
        );
        c(
            "sluice_firehose_objects_written_total",
            "Objects written (backups and ExtendedS3 deliveries).",
            "counter",
            l(&m.objects_written),
        );
        let buffered: u64 = self
            .core
            .runtimes
            .read()
            .values()
            .map(|r| r.buffered.lock().records)
            .sum();
        c(
            "sluice_firehose_buffered_records",
            "Records buffered and not yet delivered.",
            "gauge",
            buffered,
        );
        let errors = m.errors.lock().clone();
        if !errors.is_empty() {
            out.push_str(
                "# HELP sluice_firehose_delivery_errors_total Delivery errors by stream and error code.\n\
                 # TYPE sluice_firehose_delivery_errors_total counter\n",
            );
            let mut rows: Vec<_> = errors.into_iter().collect();
            rows.sort();
            for ((stream, code), n) in rows {
                let _ = writeln!(
                    out,
                    "sluice_firehose_delivery_errors_total{{stream=\"{}\",code=\"{}\"}} {n}",
                    prom_escape(&stream),
                    prom_escape(&code)
                );
            }
        }
        out
    }

    /// The account served.
    pub fn account(&self) -> &str {
        &self.core.cfg.account
    }
}

fn prom_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Core {
    async fn load(&self) -> Result<(), AwsError> {
        let mut streams = HashMap::new();
        let mut runtimes = HashMap::new();
        for (_, v) in scan_all(&*self.store, NS_STREAMS, KeyRange::all()).await? {
            let s: StreamRecord = serde_json::from_slice(&v.value).map_err(internal)?;
            runtimes.insert(s.uid.clone(), Arc::new(Runtime::default()));
            streams.insert(s.name.clone(), Arc::new(s));
        }
        let by_uid: HashMap<[u8; 16], String> = streams
            .values()
            .map(|s| (s.uid_bytes(), s.uid.clone()))
            .collect();
        // Buffered amounts, the highest sequence, and orphans of deleted streams.
        let mut max_seq = 0u64;
        let mut orphans = sluice_store::Batch::new();
        let mut start: Option<Vec<u8>> = None;
        loop {
            let r = KeyRange {
                start: start.clone(),
                end: None,
            };
            let page = self
                .store
                .scan(NS_RECORDS, r, 256, false)
                .await
                .map_err(internal)?;
            let n = page.len();
            for (k, v) in &page {
                let uid: [u8; 16] = k[..16.min(k.len())].try_into().unwrap_or([0; 16]);
                max_seq = max_seq.max(model::key_seq(k));
                match by_uid.get(&uid).and_then(|u| runtimes.get(u)) {
                    Some(rt) => {
                        let mut b = rt.buffered.lock();
                        if let Some((arrival, count)) = model::chunk_header(&v.value) {
                            b.records += u64::from(count);
                            b.bytes +=
                                (v.value.len() as u64).saturating_sub(13 + 4 * u64::from(count));
                            b.oldest_ms = Some(b.oldest_ms.map_or(arrival, |o| o.min(arrival)));
                        }
                    }
                    None => orphans = orphans.delete(NS_RECORDS, k.clone()),
                }
            }
            if let Some((k, _)) = page.last() {
                let mut k = k.clone();
                k.push(0);
                start = Some(k);
            }
            if orphans.ops.len() >= 256 {
                let b = std::mem::take(&mut orphans);
                self.store.apply(b).await.map_err(internal)?;
            }
            if n < 256 {
                break;
            }
        }
        for (k, v) in scan_all(&*self.store, NS_BATCHES, KeyRange::all()).await? {
            let uid: [u8; 16] = k[..16.min(k.len())].try_into().unwrap_or([0; 16]);
            match by_uid.get(&uid).and_then(|u| runtimes.get(u)) {
                Some(rt) => {
                    if let Ok(b) = serde_json::from_slice::<BatchState>(&v.value) {
                        *rt.last_error.lock() = Some(DeliveryError {
                            code: b.last_code,
                            message: b.last_message,
                            at_ms: b.next_attempt_ms,
                        });
                    }
                }
                None => orphans = orphans.delete(NS_BATCHES, k.clone()),
            }
        }
        if !orphans.ops.is_empty() {
            self.store.apply(orphans).await.map_err(internal)?;
        }
        let now_us = (self.clock.now_millis().max(0) as u64) * 1000;
        self.seq
            .store(max_seq.max(now_us).saturating_add(1), Ordering::SeqCst);
        *self.streams.write() = streams;
        *self.runtimes.write() = runtimes;
        Ok(())
    }

    pub(crate) fn stream_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:firehose:{}:{}:deliverystream/{}",
            self.cfg.region, self.cfg.account, name
        )
    }

    pub(crate) fn runtime(&self, uid: &str) -> Arc<Runtime> {
        if let Some(r) = self.runtimes.read().get(uid) {
            return r.clone();
        }
        self.runtimes
            .write()
            .entry(uid.to_string())
            .or_default()
            .clone()
    }

    /// The secret cache for `ttl_s` seconds (one cache per distinct TTL in use).
    pub(crate) fn secret_cache(&self, ttl: Duration) -> Arc<SecretCache> {
        let key = ttl.as_secs();
        self.caches
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(SecretCache::with_ttl(self.secrets.clone(), ttl)))
            .clone()
    }

    pub(crate) fn count_error(&self, stream: &str, code: &str) {
        *self
            .metrics
            .errors
            .lock()
            .entry((stream.to_string(), code.to_string()))
            .or_insert(0) += 1;
    }
}

#[async_trait::async_trait]
impl sluice_core::JsonService for Firehose {
    fn signing_name(&self) -> &'static str {
        "firehose"
    }

    async fn handle(&self, op: &str, ctx: &CallContext, input: Value) -> Result<Value, AwsError> {
        Firehose::handle(self, op, ctx, input).await
    }

    async fn handle_raw(
        &self,
        op: &str,
        ctx: &CallContext,
        body: &[u8],
    ) -> Option<Result<Vec<u8>, AwsError>> {
        Firehose::handle_raw(self, op, ctx, body).await
    }
}

#[cfg(test)]
mod tests;
