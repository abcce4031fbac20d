//! EventBridge for sluice: event buses, rules, targets, `PutEvents` with durable delivery,
//! retries with backoff, dead letters, scheduled rules, bus-to-bus targets, and connections
//! and API destinations (HTTP endpoints invoked with credentials sealed under KMS).
//!
//! # Design constraints
//! - **No acknowledged event is lost.** `PutEvents` matches every entry against the in-memory
//!   [`sluice_pattern::Matcher`] of its bus *before* committing, then writes one store batch
//!   holding every delivery (event x rule x target) of the request, and answers only after that
//!   one `apply` returns (durable). The store group-commits concurrent requests. An entry that
//!   matches no rule is acknowledged without a write (as AWS drops unmatched events). While the
//!   background dispatcher runs, the deliveries are written already leased to it and handed
//!   over in memory after the commit (see [`dispatch`]), so the common path writes each
//!   delivery once and deletes it once, and never reads it back.
//! - **At-least-once delivery.** A delivery leaves the queue only in the same batch that records
//!   its outcome (success, next retry, or dead letter). A dispatcher that dies mid-invocation
//!   leaves its row due (a sole dispatcher's in-memory lease) or a stored lease that expires,
//!   and the delivery is invoked again.
//! - **The in-memory rule state mirrors the store.** [`Events::open`] loads buses and rules and
//!   builds one matcher per bus; every management write updates the mirror after its batch
//!   commits. Management writes are serialized by one async lock and also carry `Expect`s.
//! - **Time and randomness are injected** ([`sluice_core::Clock`]; the jitter RNG is seeded from
//!   [`EventsConfig::rng_seed`] when set), so retries and schedules are testable.
//!
//! # Stored formats (all values JSON with `"v": 1`; see [`model`])
//! Optional fields at their defaults (`null`, `false`, 0, the default retry policy) are left
//! out when written and filled in when read, so records written before and after that change
//! read the same.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `events.buses` | bus name | [`model::BusRecord`] |
//! | `events.rules` | bus name, `0x00`, rule name | [`model::RuleRecord`] (targets inline) |
//! | `events.due` | due time (u64 BE, Unix ms) ++ delivery id (16 bytes) | [`model::DeliveryRecord`] |
//! | `events.dlq` | dead-letter time (u64 BE ms) ++ delivery id | [`model::DeadLetter`] |
//! | `events.sched` | rule ARN | [`model::SchedRecord`] (last firing of a scheduled rule) |
//! | `events.connections` | connection name | [`model::ConnectionRecord`] (no credentials; see [`connections`]) |
//! | `events.apidests` | API destination name | [`model::ApiDestinationRecord`] |
//!
//! Connection credentials are not in the EventBridge namespaces at all: they are in a Secrets
//! Manager secret owned by EventBridge (format and rules in [`connections`]); invocation of API
//! destinations is in [`apidest`], OAuth token handling in `oauth`.
//!
//! # The delivery queue
//! `events.due` is ordered by due time. A dispatcher scans keys due at or before now and
//! *leases* each. The embedded server's dispatcher is the only one of its store
//! ([`EventsConfig::sole_dispatcher`]) and leases in memory: the row stays where it is, and a
//! crash leaves it due. Dispatchers sharing a store lease by moving the row into the future: in
//! one batch, `DeleteAt` the key at its version and `Put` the record (attempt + 1) under
//! `now + lease` with the same id; if the process dies, it becomes due again when the lease
//! runs out. After invoking the target the dispatcher commits, with a `DeleteAt` of the lease
//! key at its version: success deletes the lease (a bus target adds the deliveries it produced
//! to the same batch); a retryable failure moves the key to `now + backoff(attempt)`;
//! exhausting `MaximumRetryAttempts` or `MaximumEventAgeInSeconds`, or a non-retryable
//! failure, moves the record to `events.dlq`. A target whose circuit breaker is open has its
//! due deliveries moved to the breaker's reopening time without counting an attempt. See
//! [`dispatch`].
//!
//! Deliberate differences from AWS are in `docs/specs/events.md`.

pub mod apidest;
pub mod connections;
pub mod dispatch;
pub mod model;
mod oauth;
mod ops;
pub mod schedule;
pub mod targets;
pub mod transform;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use rand::SeedableRng;
use serde_json::Value;
use sluice_audit::AuditLog;
use sluice_core::{AwsError, CallContext, Clock, PrincipalKind};
use sluice_kms::IdentityPolicies;
use sluice_pattern::Matcher;
use sluice_policy::{Context, Decision, Inputs, Policy, Request, ResourceKind, evaluate};
use sluice_store::{Batch, KeyRange, Store};

pub use connections::ApiDestinationDeps;
pub use dispatch::{DeadLetterEntry, Dispatcher, WorkerHandle, list_dead_letters, redrive};
use model::{BusRecord, DeliveryRecord, NS_BUSES, NS_DUE, NS_RULES, RuleRecord, queue_key};
pub use targets::{Invocation, InvokeError, Target};

/// The event source of EventBridge audit records.
pub const EVENT_SOURCE: &str = "events.amazonaws.com";

/// Configuration of the EventBridge service.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// The account sluice serves.
    pub account: String,
    /// The region sluice serves.
    pub region: String,
    /// Let the account's root principal put events whose `source` begins with `aws.` (operator
    /// switch, `sluice serve --allow-aws-sources`); everyone else gets
    /// `NotAuthorizedForSourceException` per entry, as on AWS.
    pub allow_aws_sources: bool,
    /// Largest total size of a PutEvents request's entries (AWS's entry-size formula), bytes.
    pub max_entry_bytes: usize,
    /// How long a leased delivery stays invisible before another dispatcher may take it, ms.
    pub lease_ms: i64,
    /// This process's dispatcher is the only one working the store's queue (the embedded
    /// server holds its data directory's `LOCK`). Its scan then leases due deliveries in
    /// memory instead of writing a lease per delivery, and after a crash they are due again at
    /// once. Off by default: with it off, leases are stored, which is what dispatchers sharing
    /// a store need. See the `dispatch` module docs.
    pub sole_dispatcher: bool,
    /// Memory, in bytes (each delivery counts its event and 1 KiB), that deliveries handed
    /// from `PutEvents` to the running dispatcher in memory may take until they complete;
    /// beyond it they are queued for the dispatcher's scan.
    pub handoff_budget_bytes: usize,
    /// First retry delay, ms (doubled per attempt, with jitter).
    pub retry_base_ms: i64,
    /// Largest retry delay, ms.
    pub retry_cap_ms: i64,
    /// Concurrent invocations per target.
    pub per_target_concurrency: usize,
    /// Consecutive failures that open a target's circuit breaker.
    pub breaker_threshold: u32,
    /// First open period of a breaker, ms (doubled while failures continue).
    pub breaker_cooldown_ms: i64,
    /// Longest open period of a breaker, ms.
    pub breaker_max_ms: i64,
    /// Longest time a dispatcher sleeps between queue scans, ms.
    pub poll_ms: u64,
    /// Seed of the jitter RNG (`None`: from the OS).
    pub rng_seed: Option<u64>,
    /// Bus-to-bus hops an event may make before it is dead-lettered as a loop.
    pub max_hops: u32,
    /// How long an invocation may reuse a connection's credentials read from its secret, ms
    /// (a change of the secret inside sluice ends it at once).
    pub connection_secret_ttl_ms: u64,
}

impl EventsConfig {
    /// Defaults for `account` / `region`.
    pub fn new(account: &str, region: &str) -> Self {
        Self {
            account: account.to_string(),
            region: region.to_string(),
            allow_aws_sources: false,
            max_entry_bytes: 256 * 1024,
            lease_ms: 30_000,
            sole_dispatcher: false,
            handoff_budget_bytes: 64 << 20,
            retry_base_ms: 1_000,
            retry_cap_ms: 300_000,
            per_target_concurrency: 8,
            breaker_threshold: 5,
            breaker_cooldown_ms: 1_000,
            breaker_max_ms: 60_000,
            poll_ms: 250,
            rng_seed: None,
            max_hops: 5,
            connection_secret_ttl_ms: 60_000,
        }
    }

    /// Applies the operator's environment overrides: `SLUICE_EVENTS_LEASE_MS`,
    /// `SLUICE_EVENTS_MAX_ENTRY_BYTES`, `SLUICE_EVENTS_RETRY_BASE_MS`,
    /// `SLUICE_EVENTS_PER_TARGET_CONCURRENCY`, `SLUICE_EVENTS_CONNECTION_SECRET_TTL_MS`
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
        if let Some(v) = get::<i64>("SLUICE_EVENTS_LEASE_MS").filter(|v| *v > 0) {
            self.lease_ms = v;
        }
        if let Some(v) = get::<usize>("SLUICE_EVENTS_MAX_ENTRY_BYTES").filter(|v| *v > 0) {
            self.max_entry_bytes = v;
        }
        if let Some(v) = get::<i64>("SLUICE_EVENTS_RETRY_BASE_MS").filter(|v| *v > 0) {
            self.retry_base_ms = v;
        }
        if let Some(v) = get::<usize>("SLUICE_EVENTS_PER_TARGET_CONCURRENCY").filter(|v| *v > 0) {
            self.per_target_concurrency = v;
        }
        if let Some(v) = get::<u64>("SLUICE_EVENTS_CONNECTION_SECRET_TTL_MS") {
            self.connection_secret_ttl_ms = v;
        }
        self
    }
}

/// Counters; see [`Events::metrics`].
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) matched_events: AtomicU64,
    pub(crate) triggered_rules: AtomicU64,
    pub(crate) invocations: AtomicU64,
    pub(crate) failed_invocations: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) put_events_entries: AtomicU64,
    pub(crate) scheduled_firings: AtomicU64,
}

/// A snapshot of the counters since start (CloudWatch's EventBridge metric names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// Entries PutEvents accepted.
    pub put_events_entries: u64,
    /// Events that matched at least one rule.
    pub matched_events: u64,
    /// Rule matches that had targets (one per event and rule).
    pub triggered_rules: u64,
    /// Target invocations started.
    pub invocations: u64,
    /// Invocations that failed.
    pub failed_invocations: u64,
    /// Deliveries re-queued for another attempt.
    pub retries: u64,
    /// Deliveries moved to the dead-letter namespace.
    pub dead_lettered: u64,
    /// Scheduled-rule firings.
    pub scheduled_firings: u64,
    /// Deliveries in the queue (due, waiting or leased) when the snapshot was taken.
    pub queue_depth: u64,
}

type RuleId = (String, String);

/// How [`Core::enqueue_new`] queued deliveries.
pub(crate) enum Queued {
    /// Due from this time (Unix ms) on; the dispatcher's scan finds them.
    Scan(i64),
    /// Leased to the running dispatcher: lease key, record, hand-off slot.
    Handoff(Vec<(Vec<u8>, DeliveryRecord, dispatch::Slot)>),
}

/// The EventBridge service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    pub(crate) core: Arc<Core>,
}

/// Shared state of the service.
pub struct Core {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) audit: AuditLog,
    pub(crate) identity: Arc<dyn IdentityPolicies>,
    pub(crate) cfg: EventsConfig,
    pub(crate) buses: RwLock<HashMap<String, Arc<BusRecord>>>,
    pub(crate) rules: RwLock<HashMap<RuleId, Arc<RuleRecord>>>,
    pub(crate) matchers: RwLock<HashMap<String, Arc<Matcher<Arc<str>>>>>,
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    pub(crate) targets: RwLock<Vec<Arc<dyn Target>>>,
    pub(crate) metrics: Metrics,
    pub(crate) wake: tokio::sync::Notify,
    /// The earliest due time (Unix ms) of rows this process queued since the dispatcher's last
    /// scan began (`i64::MAX`: none): a sole dispatcher's scan resumes after its cursor, and
    /// starts here instead if that is earlier (see [`Core::due_written`]).
    pub(crate) rescan_from: std::sync::atomic::AtomicI64,
    pub(crate) rng: Mutex<rand::rngs::StdRng>,
    pub(crate) conns: connections::ConnState,
    /// The running dispatcher's in-memory hand-off (`None` while no dispatcher runs).
    pub(crate) inbox: RwLock<Option<dispatch::Inbox>>,
    policies: RwLock<HashMap<String, (String, Arc<Policy>)>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

pub(crate) fn internal<E: std::fmt::Display>(e: E) -> AwsError {
    tracing::error!(error = %e, "events internal error");
    AwsError::with_status(
        "InternalException",
        500,
        "An internal error occurred in EventBridge.",
    )
}

/// RFC 3339 text of a Unix time in ms, whole seconds, UTC (`2024-01-01T00:04:00Z`); empty for
/// years RFC 3339 cannot write (before 0 or after 9999).
fn millis_to_iso(ms: i64) -> String {
    use std::fmt::Write;
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut s = String::with_capacity(20);
    if (0..=9999).contains(&t.year()) {
        let _ = write!(
            s,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
    }
    s
}

/// Appends `v` as a JSON string literal (the escapes serde_json writes: quote, backslash and
/// control characters).
fn push_json_str(out: &mut String, v: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut rest = v;
    while let Some(i) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

impl Events {
    /// Loads the service's state from `store` (creating the `default` bus if needed).
    pub async fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
        identity: Arc<dyn IdentityPolicies>,
        cfg: EventsConfig,
    ) -> Result<Self, AwsError> {
        let rng = match cfg.rng_seed {
            Some(s) => rand::rngs::StdRng::seed_from_u64(s),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        let core = Arc::new(Core {
            store,
            clock,
            audit,
            identity,
            cfg,
            buses: RwLock::new(HashMap::new()),
            rules: RwLock::new(HashMap::new()),
            matchers: RwLock::new(HashMap::new()),
            write_lock: tokio::sync::Mutex::new(()),
            targets: RwLock::new(vec![
                Arc::new(targets::BusTarget) as Arc<dyn Target>,
                Arc::new(apidest::ApiDestinationTarget),
            ]),
            metrics: Metrics::default(),
            wake: tokio::sync::Notify::new(),
            rescan_from: std::sync::atomic::AtomicI64::new(i64::MAX),
            rng: Mutex::new(rng),
            conns: connections::ConnState::default(),
            inbox: RwLock::new(None),
            policies: RwLock::new(HashMap::new()),
        });
        core.load().await?;
        Ok(Self { core })
    }

    /// [`Events::open`] for synchronous callers (service assembly).
    pub fn open_blocking(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
        identity: Arc<dyn IdentityPolicies>,
        cfg: EventsConfig,
    ) -> Result<Self, AwsError> {
        futures::executor::block_on(Self::open(store, clock, audit, identity, cfg))
    }

    /// Handles one wire operation (`op` is the part of X-Amz-Target after `AWSEvents.`).
    pub async fn handle(
        &self,
        op: &str,
        ctx: &CallContext,
        input: Value,
    ) -> Result<Value, AwsError> {
        ops::dispatch(&self.core, op, ctx, input).await
    }

    /// Registers a further target kind (API destinations, Firehose, test targets). Targets are
    /// consulted in registration order; the first whose [`Target::handles`] accepts an ARN
    /// serves it. Call before PutTargets names such ARNs.
    pub fn add_target_kind(&self, t: Arc<dyn Target>) {
        self.core.targets.write().push(t);
    }

    /// Enables connections and API destinations: their credentials go to `deps.secrets`, their
    /// requests through `deps.outbound`. Without it those operations answer
    /// `ValidationException`. Call once, before serving.
    pub fn enable_api_destinations(&self, deps: ApiDestinationDeps) {
        let ttl = std::time::Duration::from_millis(self.core.cfg.connection_secret_ttl_ms);
        let _ = self
            .core
            .conns
            .runtime
            .set(connections::Runtime::new(deps, ttl));
    }

    /// A snapshot of the counters (for `/_sluice/metrics`).
    pub async fn metrics(&self) -> MetricsSnapshot {
        let m = &self.core.metrics;
        let depth = count_keys(&*self.core.store, NS_DUE).await;
        MetricsSnapshot {
            put_events_entries: m.put_events_entries.load(Ordering::Relaxed),
            matched_events: m.matched_events.load(Ordering::Relaxed),
            triggered_rules: m.triggered_rules.load(Ordering::Relaxed),
            invocations: m.invocations.load(Ordering::Relaxed),
            failed_invocations: m.failed_invocations.load(Ordering::Relaxed),
            retries: m.retries.load(Ordering::Relaxed),
            dead_lettered: m.dead_lettered.load(Ordering::Relaxed),
            scheduled_firings: m.scheduled_firings.load(Ordering::Relaxed),
            queue_depth: depth,
        }
    }

    /// A dispatcher over this service's queue (see [`Dispatcher`]).
    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(self.core.clone())
    }

    /// Starts the background dispatcher and scheduler tasks on the current Tokio runtime.
    /// Stop them with [`WorkerHandle::stop`] before closing the store.
    pub fn start_workers(&self) -> WorkerHandle {
        dispatch::start(self.core.clone())
    }

    /// [`list_dead_letters`] on this service's store.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetterEntry>, AwsError> {
        list_dead_letters(&*self.core.store, limit).await
    }

    /// [`redrive`] on this service's store; wakes the dispatcher.
    pub async fn redrive(&self, ids: Option<&[String]>) -> Result<usize, AwsError> {
        let from = self.core.clock.now_millis();
        let n = redrive(&*self.core.store, &*self.core.clock, ids).await?;
        self.core.due_written(from);
        Ok(n)
    }

    /// The account served.
    pub fn account(&self) -> &str {
        &self.core.cfg.account
    }
}

async fn count_keys(store: &dyn Store, ns: &str) -> u64 {
    let mut n = 0u64;
    let mut start: Option<Vec<u8>> = None;
    loop {
        let range = match &start {
            Some(s) => {
                let mut k = s.clone();
                k.push(0);
                KeyRange::from(&k)
            }
            None => KeyRange::all(),
        };
        let Ok(page) = store.scan(ns, range, 1000, false).await else {
            return n;
        };
        n += page.len() as u64;
        if page.len() < 1000 {
            return n;
        }
        start = page.last().map(|(k, _)| k.clone());
    }
}

/// Reads every entry of `ns` (for loading state).
pub(crate) async fn scan_all(
    store: &dyn Store,
    ns: &str,
) -> Result<Vec<(Vec<u8>, sluice_store::Versioned)>, AwsError> {
    let mut out = Vec::new();
    let mut start: Option<Vec<u8>> = None;
    loop {
        let range = match &start {
            Some(s) => {
                let mut k = s.clone();
                k.push(0);
                KeyRange::from(&k)
            }
            None => KeyRange::all(),
        };
        let page = store.scan(ns, range, 500, false).await.map_err(internal)?;
        let n = page.len();
        start = page.last().map(|(k, _)| k.clone());
        out.extend(page);
        if n < 500 {
            return Ok(out);
        }
    }
}

impl Core {
    async fn load(&self) -> Result<(), AwsError> {
        let mut buses = HashMap::new();
        for (_, v) in scan_all(&*self.store, NS_BUSES).await? {
            let b: BusRecord = serde_json::from_slice(&v.value).map_err(internal)?;
            buses.insert(b.name.clone(), Arc::new(b));
        }
        if !buses.contains_key("default") {
            let now = self.clock.now_millis();
            let b = BusRecord {
                v: 1,
                name: "default".into(),
                arn: self.bus_arn("default"),
                description: None,
                policy: None,
                tags: Default::default(),
                created_ms: now,
                modified_ms: now,
            };
            let batch = Batch::new()
                .expect(NS_BUSES, b"default".to_vec(), None)
                .put(
                    NS_BUSES,
                    b"default".to_vec(),
                    serde_json::to_vec(&b).map_err(internal)?,
                );
            match self.store.apply(batch).await {
                Ok(_) | Err(sluice_store::StoreError::Conflict) => {}
                Err(e) => return Err(internal(e)),
            }
            buses.insert("default".into(), Arc::new(b));
        }
        let mut rules = HashMap::new();
        for (_, v) in scan_all(&*self.store, NS_RULES).await? {
            let r: RuleRecord = serde_json::from_slice(&v.value).map_err(internal)?;
            rules.insert((r.bus.clone(), r.name.clone()), Arc::new(r));
        }
        let mut matchers: HashMap<String, Arc<Matcher<Arc<str>>>> = HashMap::new();
        for name in buses.keys() {
            matchers.insert(name.clone(), Arc::new(Matcher::new()));
        }
        for r in rules.values() {
            if let (true, Some(p)) = (r.enabled(), &r.pattern)
                && let Some(m) = matchers.get(&r.bus)
                && let Err(e) = m.add_pattern(Arc::from(r.name.as_str()), p)
            {
                tracing::error!(rule = %r.arn, error = %e, "stored rule pattern does not compile; rule ignored");
            }
        }
        *self.buses.write() = buses;
        *self.rules.write() = rules;
        *self.matchers.write() = matchers;
        self.conns.load(&*self.store).await
    }

    pub(crate) fn bus_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:events:{}:{}:event-bus/{}",
            self.cfg.region, self.cfg.account, name
        )
    }

    pub(crate) fn rule_arn(&self, bus: &str, name: &str) -> String {
        if bus == "default" {
            format!(
                "arn:aws:events:{}:{}:rule/{}",
                self.cfg.region, self.cfg.account, name
            )
        } else {
            format!(
                "arn:aws:events:{}:{}:rule/{}/{}",
                self.cfg.region, self.cfg.account, bus, name
            )
        }
    }

    /// The bus a name or ARN refers to (`None` = default), if it is one of ours.
    pub(crate) fn bus_name<'a>(&self, name_or_arn: Option<&'a str>) -> Result<&'a str, AwsError> {
        let Some(s) = name_or_arn else {
            return Ok("default");
        };
        if let Some(rest) = s.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if parts.len() == 5
                && parts[1] == "events"
                && let Some(name) = parts[4].strip_prefix("event-bus/")
            {
                if parts[3] != self.cfg.account || parts[2] != self.cfg.region {
                    return Err(AwsError::client(
                        "ResourceNotFoundException",
                        format!("Event bus {name} does not exist."),
                    ));
                }
                return Ok(name);
            }
            return Err(AwsError::validation(format!(
                "Parameter {s} is not valid. Reason: not an event bus ARN."
            )));
        }
        Ok(s)
    }

    pub(crate) fn bus(&self, name: &str) -> Result<Arc<BusRecord>, AwsError> {
        self.buses.read().get(name).cloned().ok_or_else(|| {
            AwsError::client(
                "ResourceNotFoundException",
                format!("Event bus {name} does not exist."),
            )
        })
    }

    pub(crate) fn rule(&self, bus: &str, name: &str) -> Result<Arc<RuleRecord>, AwsError> {
        self.rules
            .read()
            .get(&(bus.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| {
                AwsError::client(
                    "ResourceNotFoundException",
                    format!("Rule {name} does not exist on EventBus {bus}."),
                )
            })
    }

    /// Authorizes `action` on `resource` (a bus or rule ARN) of `bus`.
    pub(crate) fn authorize(
        &self,
        ctx: &CallContext,
        action: &str,
        resource: &str,
        bus: Option<&BusRecord>,
    ) -> Result<(), AwsError> {
        let p = &ctx.principal;
        let policy_text = bus.and_then(|b| b.policy.as_deref());
        if p.kind == PrincipalKind::Root && p.account == self.cfg.account && policy_text.is_none() {
            return Ok(());
        }
        let resource_policy = match (bus, policy_text) {
            (Some(b), Some(t)) => Some(self.compiled_policy(&b.arn, t)?),
            _ => None,
        };
        let identity = self.identity.policies_for(p);
        let identity_refs: Vec<&Policy> = identity.iter().map(|x| x.as_ref()).collect();
        let mut context = Context::new();
        context.set_time(self.clock.now().unix_timestamp());
        context.set(
            "aws:SecureTransport",
            if ctx.secure_transport {
                "true"
            } else {
                "false"
            },
        );
        if let Some(ip) = &ctx.source_ip {
            context.set("aws:SourceIp", ip.as_str());
        }
        if let Some(b) = bus {
            context.set_resource_tags(b.tags.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        }
        let request = Request {
            principal: sluice_kms::policy_authz::principal_info(p),
            action,
            resource,
            context: &context,
        };
        let outcome = evaluate(
            &request,
            &Inputs {
                identity_policies: &identity_refs,
                resource_policy: resource_policy.as_deref(),
                resource_account: &self.cfg.account,
                kind: ResourceKind::Generic,
            },
        );
        if outcome.decision == Decision::Allow
            || (p.kind == PrincipalKind::Root
                && p.account == self.cfg.account
                && outcome.decision != Decision::ExplicitDeny)
        {
            return Ok(());
        }
        let msg = outcome.denial_message(&request).unwrap_or_else(|| {
            format!(
                "User: {} is not authorized to perform: {action} on resource: {resource}",
                p.arn
            )
        });
        Err(AwsError::access_denied(msg))
    }

    fn compiled_policy(&self, arn: &str, text: &str) -> Result<Arc<Policy>, AwsError> {
        if let Some((t, p)) = self.policies.read().get(arn)
            && t == text
        {
            return Ok(p.clone());
        }
        let p = Arc::new(Policy::parse_resource_policy(text).map_err(internal)?);
        let mut c = self.policies.write();
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(arn.to_string(), (text.to_string(), p.clone()));
        Ok(p)
    }

    /// The deliveries an event on `bus` produces: one per target of every enabled rule whose
    /// pattern matches. `event_text` must be a JSON object.
    pub(crate) fn route(
        &self,
        bus: &str,
        event_id: &str,
        event_text: &str,
        first_seen_ms: i64,
        hops: u32,
    ) -> Result<Vec<DeliveryRecord>, sluice_pattern::EventError> {
        let matcher = self.matchers.read().get(bus).cloned();
        // A bus without rules matches nothing (callers validated the event already).
        let Some(matcher) = matcher.filter(|m| !m.is_empty()) else {
            return Ok(Vec::new());
        };
        let names = matcher.matches_for_event(event_text.as_bytes())?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        self.metrics.matched_events.fetch_add(1, Ordering::Relaxed);
        let rules = self.rules.read();
        let mut out = Vec::new();
        for name in names {
            let Some(rule) = rules.get(&(bus.to_string(), name.to_string())) else {
                continue;
            };
            if !rule.enabled() || rule.targets.is_empty() {
                continue;
            }
            self.metrics.triggered_rules.fetch_add(1, Ordering::Relaxed);
            out.extend(self.deliveries_for(rule, event_id, event_text, first_seen_ms, hops));
        }
        Ok(out)
    }

    pub(crate) fn deliveries_for(
        &self,
        rule: &RuleRecord,
        event_id: &str,
        event_text: &str,
        first_seen_ms: i64,
        hops: u32,
    ) -> Vec<DeliveryRecord> {
        rule.targets
            .iter()
            .map(|t| DeliveryRecord {
                v: 1,
                id: uuid::Uuid::new_v4().to_string(),
                event_id: event_id.to_string(),
                event: event_text.to_string(),
                bus: rule.bus.clone(),
                rule: rule.name.clone(),
                rule_arn: rule.arn.clone(),
                target: t.clone(),
                attempt: 0,
                first_seen_ms,
                hops,
                last_error: None,
            })
            .collect()
    }

    /// Adds `deliveries` to `batch`, due now.
    pub(crate) fn enqueue(
        &self,
        mut batch: Batch,
        deliveries: &[DeliveryRecord],
    ) -> Result<Batch, AwsError> {
        let now = self.clock.now_millis();
        for d in deliveries {
            let id = uuid::Uuid::parse_str(&d.id).map_err(internal)?;
            batch = batch.put(
                NS_DUE,
                queue_key(now, &id),
                serde_json::to_vec(d).map_err(internal)?,
            );
        }
        Ok(batch)
    }

    /// Adds the new deliveries of an ingest to `batch`. If the background dispatcher runs and
    /// has room, [`Core::queued`] hands them over in memory once the batch commits: the
    /// dispatcher neither reads them back nor writes a lease. They are written already leased
    /// to it (under `now + lease_ms`, attempt 1), or, for a sole dispatcher, due (attempt 0,
    /// `HANDOFF_BEHIND_MS` in the past, behind its scan cursor) and held by it from before
    /// the commit. Otherwise they are written due now for the dispatcher's
    /// scan. Either way the stored state is one the queue protocol knows, so a crash at any
    /// point loses nothing: a due delivery runs after the restart, a leased one whose holder
    /// died when its lease runs out.
    pub(crate) fn enqueue_new(
        &self,
        mut batch: Batch,
        deliveries: Vec<DeliveryRecord>,
    ) -> Result<(Batch, Queued), AwsError> {
        let inbox = self.inbox.read();
        let slots = inbox.as_ref().and_then(|i| {
            let costs: Vec<usize> = deliveries.iter().map(dispatch::handoff_cost).collect();
            i.reserve(&costs)
        });
        let (Some(slots), Some(inbox)) = (slots, inbox.as_ref()) else {
            let from = self.clock.now_millis();
            return Ok((self.enqueue(batch, &deliveries)?, Queued::Scan(from)));
        };
        // Stored leases: written leased (attempt 1) until `now + lease_ms`. A sole
        // dispatcher: written due (attempt 0), behind its scan cursor, and claimed in memory
        // before the commit.
        let sole = self.cfg.sole_dispatcher;
        let now = self.clock.now_millis();
        let (at, stored_attempt) = if sole {
            (now - dispatch::HANDOFF_BEHIND_MS, 0)
        } else {
            (now + self.cfg.lease_ms, 1)
        };
        let mut items = Vec::with_capacity(deliveries.len());
        batch.ops.reserve(deliveries.len());
        for (mut d, slot) in deliveries.into_iter().zip(slots) {
            d.attempt = stored_attempt;
            let id = uuid::Uuid::parse_str(&d.id).map_err(internal)?;
            let key = queue_key(at, &id);
            batch = batch.put(
                NS_DUE,
                key.clone(),
                serde_json::to_vec(&d).map_err(internal)?,
            );
            d.attempt = 1;
            items.push((key, d, slot));
        }
        if sole {
            inbox.claim(&items);
        }
        Ok((batch, Queued::Handoff(items)))
    }

    /// Commits `batch` holding deliveries [`Core::enqueue_new`] queued, then tells the
    /// dispatcher. A hand-off commits on a task of its own: if the caller is dropped mid-way
    /// (its client went away), the committed deliveries still reach the dispatcher instead of
    /// waiting for their lease to run out.
    pub(crate) async fn commit_new(
        core: &Arc<Core>,
        batch: Batch,
        queued: Queued,
    ) -> Result<(), sluice_store::StoreError> {
        match queued {
            Queued::Scan(from) => {
                let seq = core.store.apply(batch).await?;
                core.queued(Queued::Scan(from), seq);
                Ok(())
            }
            handoff => {
                let c = core.clone();
                tokio::spawn(async move {
                    match c.store.apply(batch).await {
                        Ok(seq) => {
                            c.queued(handoff, seq);
                            Ok(())
                        }
                        Err(e) => {
                            if let (Queued::Handoff(items), Some(inbox)) =
                                (&handoff, c.inbox.read().as_ref())
                            {
                                inbox.unclaim(items);
                            }
                            Err(e)
                        }
                    }
                })
                .await
                .map_err(|e| sluice_store::StoreError::Backend(e.to_string()))?
            }
        }
    }

    /// Tells the dispatcher about deliveries [`Core::enqueue_new`] queued, once their batch
    /// committed as `seq`.
    pub(crate) fn queued(&self, q: Queued, seq: u64) {
        match q {
            Queued::Scan(from) => self.due_written(from),
            Queued::Handoff(items) => {
                // If the dispatcher stopped meanwhile, the leases run out and a scan finds them.
                if let Some(inbox) = self.inbox.read().as_ref() {
                    inbox.send(dispatch::Handoff { seq, items });
                }
            }
        }
    }

    /// Tells the dispatcher that rows due from `from_ms` on were committed to the queue (call
    /// it after the commit): it wakes, and a sole dispatcher's next scan starts no later than
    /// there.
    pub(crate) fn due_written(&self, from_ms: i64) {
        self.rescan_from.fetch_min(from_ms, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Finds the target kind serving `arn`.
    pub(crate) fn target_for(&self, arn: &str) -> Option<Arc<dyn Target>> {
        self.targets
            .read()
            .iter()
            .find(|t| t.handles(self, arn))
            .cloned()
    }

    /// Builds an event envelope's JSON text.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn envelope(
        &self,
        id: &str,
        detail_type: &str,
        source: &str,
        time_ms: i64,
        resources: &[String],
        detail_text: &str,
    ) -> String {
        let mut s = String::with_capacity(200 + detail_text.len());
        s.push_str("{\"version\":\"0\",\"id\":");
        push_json_str(&mut s, id);
        s.push_str(",\"detail-type\":");
        push_json_str(&mut s, detail_type);
        s.push_str(",\"source\":");
        push_json_str(&mut s, source);
        s.push_str(",\"account\":");
        push_json_str(&mut s, &self.cfg.account);
        s.push_str(",\"time\":");
        push_json_str(&mut s, &millis_to_iso(time_ms));
        s.push_str(",\"region\":");
        push_json_str(&mut s, &self.cfg.region);
        s.push_str(",\"resources\":[");
        for (i, r) in resources.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            push_json_str(&mut s, r);
        }
        s.push_str("],\"detail\":");
        s.push_str(detail_text.trim());
        s.push('}');
        s
    }

    /// Replaces the in-memory copy of a rule (after its write committed) and its matcher entry.
    pub(crate) fn install_rule(&self, rule: Option<RuleRecord>, key: &RuleId) {
        let matcher = self.matchers.read().get(&key.0).cloned();
        if let Some(m) = &matcher {
            m.remove_rule(&Arc::from(key.1.as_str()));
        }
        match rule {
            Some(r) => {
                if let (true, Some(p), Some(m)) = (r.enabled(), &r.pattern, &matcher)
                    && let Err(e) = m.add_pattern(Arc::from(r.name.as_str()), p)
                {
                    tracing::error!(rule = %r.arn, error = %e, "rule pattern does not compile");
                }
                self.rules.write().insert(key.clone(), Arc::new(r));
            }
            None => {
                self.rules.write().remove(key);
            }
        }
    }
}

#[async_trait::async_trait]
impl sluice_core::JsonService for Events {
    fn signing_name(&self) -> &'static str {
        "events"
    }

    async fn handle(&self, op: &str, ctx: &CallContext, input: Value) -> Result<Value, AwsError> {
        Events::handle(self, op, ctx, input).await
    }
}
