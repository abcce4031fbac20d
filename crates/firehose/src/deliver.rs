//! Delivery: one task per ACTIVE stream, started and stopped by a supervisor.
//!
//! # A stream's loop
//! 1. **Buffer.** The stream's in-memory `Buffered` counters (`lib.rs`) (kept by PutRecord after
//!    each commit, rebuilt from the store at start) say when to flush: when the buffered data
//!    reaches the size hint, or the oldest record has waited the interval (0: at once). An idle
//!    task also checks the store every `poll_ms`, so data committed by another path (an
//!    EventBridge hand-off) is never stranded.
//! 2. **Batch.** The oldest chunks of `firehose.records` are read, in key order, up to the size
//!    hint (and at most 10,000 records for an HTTP request). The batch gets a request id.
//! 3. **Attempt.** The configuration is re-read, the access key resolved (the sealed
//!    AccessKey, or the secret's `api_key` read as the stream's role through the secret cache),
//!    and the request sent with the outbound client (policy enforced at connect time, no
//!    redirects, response timeout, at most 1 MiB of response read). A 401/403 with a secret
//!    configured invalidates the cached secret, re-reads it and, if the value changed, re-sends
//!    at once: that exchange is part of the same attempt.
//! 4. **Outcome**, committed in one store batch: success deletes the batch's chunks (with
//!    `AllData`, after the raw copy is written to the backup bucket). A failure stores the
//!    [`BatchState`] (request id, attempts, the retry clock's start, the error) and waits
//!    [`codec::after_failure`]. When the retry duration is spent (or on a 413), the records are
//!    written to the backup bucket as error records and then deleted. If that write fails too,
//!    the batch stays: the stream is paused, and every backoff it tries the endpoint once more,
//!    then the backup.
//!
//! ExtendedS3 streams write each batch as one object and retry a failed write with the same
//! backoff until it succeeds.
//!
//! Only one process uses a data directory (its `LOCK`), so a stream's chunks have one owner and
//! need no lease; a scale-out store would need per-stream leases here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use sluice_core::{AwsError, CallContext, Principal};
use sluice_policy::{Context, Decision, Inputs, Request, ResourceKind, evaluate};
use sluice_store::{Batch, KeyRange};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::codec::{self, Failure, KeyParts, NextStep};
use crate::model::{
    self, BatchState, Destination, HttpSettings, NS_BATCHES, NS_RECORDS, NS_STREAMS, S3Settings,
    StreamRecord,
};
use crate::{Core, DeliveryError, Runtime, SERVICE_PRINCIPAL};

/// Most records in one HTTP delivery request.
pub const MAX_REQUEST_RECORDS: u64 = 10_000;
/// How long an assumed role session is reused, ms.
const ROLE_CACHE_MS: i64 = 60_000;

/// The running delivery workers.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops every delivery task and waits for them. An attempt in flight is abandoned; its
    /// batch is still in the store and is sent again after restart.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub(crate) fn start(core: Arc<Core>) -> WorkerHandle {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(supervise(core, rx));
    WorkerHandle { stop: tx, task }
}

async fn supervise(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let creating: Vec<Arc<StreamRecord>> = core
            .streams
            .read()
            .values()
            .filter(|s| s.status == "CREATING")
            .cloned()
            .collect();
        for s in creating {
            activate(&core, &s).await;
        }
        let active: Vec<(String, String)> = core
            .streams
            .read()
            .values()
            .filter(|s| s.status == "ACTIVE")
            .map(|s| (s.name.clone(), s.uid.clone()))
            .collect();
        tasks.retain(|_, t| !t.is_finished());
        for (name, uid) in active {
            if let std::collections::hash_map::Entry::Vacant(e) = tasks.entry(uid.clone()) {
                e.insert(tokio::spawn(stream_loop(
                    core.clone(),
                    name,
                    uid,
                    stop.clone(),
                )));
            }
        }
        tokio::select! {
            _ = core.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
    for (_, t) in tasks {
        let _ = t.await;
    }
}

/// CREATING -> ACTIVE, or CREATING_FAILED when a role of the stream cannot be assumed by
/// Firehose.
async fn activate(core: &Arc<Core>, s: &StreamRecord) {
    let mut roles: Vec<String> = Vec::new();
    match &s.destination {
        Destination::Http(v) => {
            let h = model::http_settings(v);
            roles.extend(h.role_arn.clone());
            roles.push(h.s3.role_arn.clone());
            if let Some((_, Some(r))) = &h.secret {
                roles.push(r.clone());
            }
        }
        Destination::S3(v) => roles.push(model::s3_settings(v).role_arn),
    }
    roles.sort();
    roles.dedup();
    let mut failure = None;
    for r in roles.iter().filter(|r| !r.is_empty()) {
        if let Err(e) = core.assume(r, &s.name).await {
            failure = Some(format!(
                "Firehose could not assume role {r} ({}: {}). Check the role's trust policy \
                 allows firehose.amazonaws.com.",
                e.code, e.message
            ));
            break;
        }
    }
    let _guard = core.write_lock.lock().await;
    let Ok(Some(cur)) = core.store.get(NS_STREAMS, s.name.as_bytes()).await else {
        return;
    };
    let Ok(mut rec) = serde_json::from_slice::<StreamRecord>(&cur.value) else {
        return;
    };
    if rec.uid != s.uid || rec.status != "CREATING" {
        return;
    }
    match &failure {
        None => rec.status = "ACTIVE".into(),
        Some(f) => {
            rec.status = "CREATING_FAILED".into();
            rec.failure = Some(f.clone());
            tracing::warn!(stream = %rec.name, reason = %f, "delivery stream creation failed");
        }
    }
    let Ok(bytes) = serde_json::to_vec(&rec) else {
        return;
    };
    let batch = Batch::new()
        .expect(NS_STREAMS, rec.name.as_bytes().to_vec(), Some(cur.version))
        .put(NS_STREAMS, rec.name.as_bytes().to_vec(), bytes);
    if core.store.apply(batch).await.is_ok() {
        core.streams.write().insert(rec.name.clone(), Arc::new(rec));
    }
}

impl Core {
    /// The role session Firehose acts as for stream `stream` (cached for a minute).
    pub(crate) async fn assume(&self, role: &str, stream: &str) -> Result<Principal, AwsError> {
        let session = if stream.len() >= 2 {
            stream.to_string()
        } else {
            format!("{stream}-firehose")
        };
        let key = (role.to_string(), session.clone());
        let now = self.clock.now_millis();
        if let Some((p, at)) = self.roles.lock().get(&key)
            && now - *at < ROLE_CACHE_MS
        {
            return Ok(p.clone());
        }
        let p = self
            .iam
            .assume_role_for_service(SERVICE_PRINCIPAL, role, &session)
            .await?;
        let mut roles = self.roles.lock();
        if roles.len() > 10_000 {
            roles.clear();
        }
        roles.insert(key, (p.clone(), now));
        Ok(p)
    }

    /// Whether `principal` (a role session) may `s3:PutObject` the object.
    fn authorize_put(&self, principal: &Principal, bucket: &str, key: &str) -> Result<(), Failure> {
        let resource = format!("arn:aws:s3:::{bucket}/{key}");
        let identity = sluice_kms::IdentityPolicies::policies_for(&*self.iam, principal);
        let refs: Vec<&sluice_policy::Policy> = identity.iter().map(|p| p.as_ref()).collect();
        let mut context = Context::new();
        context.set_time(self.clock.now().unix_timestamp());
        let request = Request {
            principal: sluice_kms::policy_authz::principal_info(principal),
            action: "s3:PutObject",
            resource: &resource,
            context: &context,
        };
        let outcome = evaluate(
            &request,
            &Inputs {
                identity_policies: &refs,
                resource_policy: None,
                resource_account: &self.cfg.account,
                kind: ResourceKind::Generic,
            },
        );
        if outcome.decision == Decision::Allow {
            return Ok(());
        }
        Err(Failure::retry(
            "S3.AccessDenied",
            format!(
                "Role {} is not authorized to perform s3:PutObject on {resource}",
                principal.policy_arn()
            ),
        ))
    }

    /// Writes an object as the role `role_arn` of stream `s`.
    async fn put_object(
        &self,
        s: &StreamRecord,
        role_arn: &str,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<(), Failure> {
        let principal = self.assume(role_arn, &s.name).await.map_err(|e| {
            Failure::retry(
                "S3.AssumeRoleFailed",
                format!(
                    "Firehose could not assume role {role_arn} to write to bucket {bucket}: {}",
                    e.message
                ),
            )
        })?;
        self.authorize_put(&principal, bucket, key)?;
        self.objects
            .put(bucket, key, body)
            .await
            .map_err(|e| Failure::retry("S3.WriteFailed", e))?;
        self.metrics.objects_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The access key to send for stream `s`: the secret's `api_key` when Secrets Manager is
    /// enabled (read as the stream's role; `refresh` drops the cached value first), else the
    /// configured AccessKey.
    async fn access_key_for(
        &self,
        s: &StreamRecord,
        set: &HttpSettings,
        refresh: bool,
    ) -> Result<Option<Zeroizing<String>>, Failure> {
        let Some((secret_arn, sm_role)) = &set.secret else {
            return Ok(self.access_key(s));
        };
        let Some(role) = sm_role.as_ref().or(set.role_arn.as_ref()) else {
            return Err(Failure::retry(
                "SecretsManager.InvalidConfiguration",
                "SecretsManagerConfiguration is enabled but no role is configured to read the secret",
            ));
        };
        let principal = self.assume(role, &s.name).await.map_err(|e| {
            Failure::retry(
                "SecretsManager.AssumeRoleFailed",
                format!(
                    "Firehose could not assume role {role} to read secret {secret_arn}: {}",
                    e.message
                ),
            )
        })?;
        let ttl = s
            .secret_cache_ttl()
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.secret_cache_ttl);
        let cache = self.secret_cache(ttl);
        if refresh {
            cache.invalidate(secret_arn);
        }
        let ctx = CallContext::direct(
            principal,
            &self.cfg.region,
            &uuid::Uuid::new_v4().to_string(),
        );
        let value = cache.get(&ctx, secret_arn).await.map_err(|e| {
            let code = match e.code.as_ref() {
                "AccessDeniedException" => "SecretsManager.AccessDenied",
                "ResourceNotFoundException" => "SecretsManager.SecretNotFound",
                "DecryptionFailure" => "SecretsManager.DecryptionFailure",
                "InvalidRequestException" => "SecretsManager.InvalidSecret",
                _ => "SecretsManager.ReadFailed",
            };
            Failure::retry(
                code,
                format!(
                    "Role {role} could not read secret {secret_arn} (secretsmanager:GetSecretValue): {}",
                    e.message
                ),
            )
        })?;
        #[derive(serde::Deserialize)]
        struct ApiKey {
            api_key: String,
        }
        let parsed = value
            .as_str()
            .and_then(|t| serde_json::from_str::<ApiKey>(t).ok())
            .ok_or_else(|| {
                Failure::retry(
                    "SecretsManager.InvalidSecret",
                    format!(
                        "Secret {secret_arn} is not a JSON object with a string field \"api_key\""
                    ),
                )
            })?;
        Ok(Some(Zeroizing::new(parsed.api_key)))
    }

    fn set_error(&self, s: &StreamRecord, rt: &Runtime, f: &Failure) {
        self.count_error(&s.name, &f.code);
        tracing::warn!(stream = %s.name, code = %f.code, message = %f.message, "firehose delivery error");
        *rt.last_error.lock() = Some(DeliveryError {
            code: f.code.clone(),
            message: f.message.clone(),
            at_ms: self.clock.now_millis(),
        });
    }

    fn jitter(&self) -> f64 {
        self.rng.lock().random::<f64>()
    }
}

/// A batch being delivered.
struct Pending {
    state: BatchState,
    persisted: bool,
    keys: Vec<Vec<u8>>,
    chunks: Vec<Vec<u8>>,
    records: u64,
    bytes: u64,
}

impl Pending {
    fn each_record(&self) -> impl Iterator<Item = (i64, &[u8])> {
        self.chunks
            .iter()
            .filter_map(|c| model::decode_chunk(c))
            .flat_map(|c| {
                let at = c.arrival_ms;
                c.records.into_iter().map(move |r| (at, r))
            })
    }
}

fn limits(s: &StreamRecord) -> (u64, i64, u64) {
    match &s.destination {
        Destination::Http(v) => {
            let h = model::http_settings(v);
            (h.buffer_bytes, h.interval_ms, MAX_REQUEST_RECORDS)
        }
        Destination::S3(v) => {
            let h = model::s3_settings(v);
            (h.buffer_bytes, h.interval_ms, u64::MAX)
        }
    }
}

async fn wait(rt: &Runtime, stop: &mut watch::Receiver<bool>, ms: u64) {
    tokio::select! {
        _ = rt.notify.notified() => {}
        _ = tokio::time::sleep(Duration::from_millis(ms.max(1))) => {}
        _ = stop.changed() => {}
    }
}

/// Recomputes a stream's buffered counters from the store.
async fn recount(core: &Core, uid: &[u8; 16], rt: &Runtime) {
    let mut b = crate::Buffered::default();
    let mut start = KeyRange::prefix(uid);
    loop {
        let Ok(page) = core.store.scan(NS_RECORDS, start.clone(), 256, false).await else {
            return;
        };
        for (_, v) in &page {
            if let Some((arrival, count)) = model::chunk_header(&v.value) {
                b.records += u64::from(count);
                b.bytes += (v.value.len() as u64).saturating_sub(13 + 4 * u64::from(count));
                b.oldest_ms = Some(b.oldest_ms.map_or(arrival, |o| o.min(arrival)));
            }
        }
        if page.len() < 256 {
            break;
        }
        if let Some((k, _)) = page.last() {
            let mut k = k.clone();
            k.push(0);
            start.start = Some(k);
        }
    }
    *rt.buffered.lock() = b;
}

async fn stream_loop(core: Arc<Core>, name: String, uid: String, mut stop: watch::Receiver<bool>) {
    let rt = core.runtime(&uid);
    let uid_b = model::uid_bytes(&uid);
    let mut pending = load_pending(&core, &uid_b).await;
    let poll = core.cfg.poll_ms;
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(s) = core.streams.read().get(&name).cloned() else {
            return;
        };
        if s.uid != uid {
            return;
        }
        let now = core.clock.now_millis();
        if pending.is_none() {
            let buffered = *rt.buffered.lock();
            if buffered.records == 0 {
                // Data committed without a notification (an EventBridge hand-off) is found here.
                let first = core
                    .store
                    .scan(NS_RECORDS, KeyRange::prefix(&uid_b), 1, false)
                    .await
                    .unwrap_or_default();
                if first.is_empty() {
                    wait(&rt, &mut stop, poll).await;
                    continue;
                }
                recount(&core, &uid_b, &rt).await;
                continue;
            }
            let (size, interval, max_records) = limits(&s);
            let due = buffered.oldest_ms.unwrap_or(now) + interval;
            if buffered.bytes < size && buffered.records < max_records && now < due {
                wait(&rt, &mut stop, ((due - now) as u64).min(poll.max(1000))).await;
                continue;
            }
            match form_batch(&core, &uid_b, size, max_records).await {
                Some(p) => pending = Some(p),
                None => {
                    recount(&core, &uid_b, &rt).await;
                    wait(&rt, &mut stop, poll).await;
                    continue;
                }
            }
        }
        let Some(p) = pending.as_mut() else {
            continue;
        };
        if p.state.next_attempt_ms > now {
            wait(
                &rt,
                &mut stop,
                ((p.state.next_attempt_ms - now) as u64).min(poll.max(1000)),
            )
            .await;
            continue;
        }
        let done = tokio::select! {
            d = run_batch(&core, &s, &rt, p) => d,
            _ = stop.changed() => return,
        };
        if done {
            pending = None;
        }
    }
}

async fn load_pending(core: &Core, uid: &[u8; 16]) -> Option<Pending> {
    let v = core.store.get(NS_BATCHES, uid).await.ok()??;
    let state: BatchState = serde_json::from_slice(&v.value).ok()?;
    let mut keys = Vec::new();
    let mut chunks = Vec::new();
    let (mut records, mut bytes) = (0u64, 0u64);
    for seq in &state.seqs {
        let k = model::record_key(uid, *seq);
        if let Ok(Some(c)) = core.store.get(NS_RECORDS, &k).await {
            if let Some((_, n)) = model::chunk_header(&c.value) {
                records += u64::from(n);
                bytes += (c.value.len() as u64).saturating_sub(13 + 4 * u64::from(n));
            }
            keys.push(k);
            chunks.push(c.value);
        }
    }
    if keys.is_empty() {
        let _ = core
            .store
            .apply(Batch::new().delete(NS_BATCHES, uid.to_vec()))
            .await;
        return None;
    }
    Some(Pending {
        state,
        persisted: true,
        keys,
        chunks,
        records,
        bytes,
    })
}

async fn form_batch(core: &Core, uid: &[u8; 16], size: u64, max_records: u64) -> Option<Pending> {
    let mut keys = Vec::new();
    let mut chunks = Vec::new();
    let mut seqs = Vec::new();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut range = KeyRange::prefix(uid);
    'outer: loop {
        let page = core
            .store
            .scan(NS_RECORDS, range.clone(), 64, false)
            .await
            .ok()?;
        let n = page.len();
        for (k, v) in page {
            let Some((_, count)) = model::chunk_header(&v.value) else {
                // A malformed chunk cannot be delivered; drop it rather than block the stream.
                tracing::error!("dropping a malformed firehose chunk");
                let _ = core.store.apply(Batch::new().delete(NS_RECORDS, k)).await;
                continue;
            };
            let count = u64::from(count);
            if !keys.is_empty() && records + count > max_records {
                break 'outer;
            }
            records += count;
            bytes += (v.value.len() as u64).saturating_sub(13 + 4 * count);
            seqs.push(model::key_seq(&k));
            let mut next = k.clone();
            next.push(0);
            range.start = Some(next);
            keys.push(k);
            chunks.push(v.value);
            if bytes >= size || records >= max_records {
                break 'outer;
            }
        }
        if n < 64 {
            break;
        }
    }
    if keys.is_empty() {
        return None;
    }
    Some(Pending {
        state: BatchState {
            v: 1,
            request_id: uuid::Uuid::new_v4().to_string(),
            seqs,
            attempts: 0,
            failures: 0,
            first_failure_ms: 0,
            next_attempt_ms: 0,
            last_code: String::new(),
            last_message: String::new(),
            gave_up: false,
            delivered: false,
        },
        persisted: false,
        keys,
        chunks,
        records,
        bytes,
    })
}

/// Runs one step of a batch; `true` when the batch is finished (its chunks deleted).
async fn run_batch(core: &Arc<Core>, s: &StreamRecord, rt: &Runtime, p: &mut Pending) -> bool {
    match &s.destination {
        Destination::Http(v) => run_http(core, s, rt, &model::http_settings(v), p).await,
        Destination::S3(v) => run_s3(core, s, rt, &model::s3_settings(v), p).await,
    }
}

fn random_string() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn key_parts<'a>(s: &'a StreamRecord, random: &'a str, gzip: bool) -> KeyParts<'a> {
    KeyParts {
        stream: &s.name,
        version: s.version,
        at: time::OffsetDateTime::now_utc(),
        random,
        extension: if gzip { ".gz" } else { "" },
    }
}

async fn run_s3(
    core: &Arc<Core>,
    s: &StreamRecord,
    rt: &Runtime,
    set: &S3Settings,
    p: &mut Pending,
) -> bool {
    core.metrics.attempts.fetch_add(1, Ordering::Relaxed);
    let random = random_string();
    let mut parts = key_parts(s, &random, set.gzip);
    parts.at = core.clock.now();
    let result = match codec::object_key(&set.prefix, &parts) {
        Ok(key) => {
            let mut body = Vec::with_capacity(p.bytes as usize);
            for (_, r) in p.each_record() {
                body.extend_from_slice(r);
            }
            if set.gzip {
                body = codec::gzip(&body);
            }
            core.put_object(s, &set.role_arn, &set.bucket, &key, body)
                .await
        }
        Err(e) => Err(Failure::retry("S3.InvalidPrefix", e)),
    };
    match result {
        Ok(()) => {
            core.metrics
                .delivered_records
                .fetch_add(p.records, Ordering::Relaxed);
            core.metrics
                .delivered_bytes
                .fetch_add(p.bytes, Ordering::Relaxed);
            finish(core, s, rt, p).await
        }
        Err(f) => {
            fail_and_wait(core, s, rt, p, &f).await;
            false
        }
    }
}

/// Records a failed step and schedules the next one with the plain backoff.
async fn fail_and_wait(core: &Core, s: &StreamRecord, rt: &Runtime, p: &mut Pending, f: &Failure) {
    core.metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
    core.set_error(s, rt, f);
    let now = core.clock.now_millis();
    p.state.failures += 1;
    if p.state.first_failure_ms == 0 {
        p.state.first_failure_ms = now;
    }
    p.state.last_code = f.code.clone();
    p.state.last_message = f.message.clone();
    p.state.next_attempt_ms =
        now + codec::backoff_ms(p.state.failures, core.jitter(), core.cfg.backoff_scale) as i64;
    persist(core, s, p).await;
}

async fn persist(core: &Core, s: &StreamRecord, p: &mut Pending) {
    let Ok(bytes) = serde_json::to_vec(&p.state) else {
        return;
    };
    match core
        .store
        .apply(Batch::new().put(NS_BATCHES, s.uid_bytes().to_vec(), bytes))
        .await
    {
        Ok(_) => p.persisted = true,
        Err(e) => {
            tracing::warn!(stream = %s.name, error = %e, "could not store a batch's retry state")
        }
    }
}

/// Deletes a finished batch's chunks (and its retry state); `true` once committed.
async fn finish(core: &Core, s: &StreamRecord, rt: &Runtime, p: &mut Pending) -> bool {
    let mut b = Batch::new();
    for k in &p.keys {
        b = b.delete(NS_RECORDS, k.clone());
    }
    if p.persisted {
        b = b.delete(NS_BATCHES, s.uid_bytes().to_vec());
    }
    if let Err(e) = core.store.apply(b).await {
        tracing::warn!(stream = %s.name, error = %e, "could not commit a delivered batch; it will be sent again");
        p.state.next_attempt_ms = core.clock.now_millis() + 1000;
        return false;
    }
    {
        let mut buf = rt.buffered.lock();
        buf.records = buf.records.saturating_sub(p.records);
        buf.bytes = buf.bytes.saturating_sub(p.bytes);
        if buf.records == 0 {
            buf.oldest_ms = None;
        }
    }
    if buf_oldest_unknown(rt) {
        let first = core
            .store
            .scan(NS_RECORDS, KeyRange::prefix(&s.uid_bytes()), 1, false)
            .await
            .unwrap_or_default();
        let oldest = first
            .first()
            .and_then(|(_, v)| model::chunk_header(&v.value))
            .map(|(a, _)| a);
        rt.buffered.lock().oldest_ms = oldest;
    }
    true
}

fn buf_oldest_unknown(rt: &Runtime) -> bool {
    let b = rt.buffered.lock();
    b.records > 0
}

fn send_failure(e: &sluice_outbound::SendError) -> Failure {
    use sluice_outbound::SendErrorKind as K;
    let code = match e.kind {
        K::Timeout => "HttpEndpoint.RequestTimeout",
        K::ConnectionFailed => "HttpEndpoint.ConnectionFailed",
        K::ConnectionReset => "HttpEndpoint.ConnectionReset",
        K::Refused => "HttpEndpoint.DestinationRefused",
        K::InvalidUrl => "HttpEndpoint.InvalidUrl",
    };
    Failure::retry(code, e.message.clone())
}

/// Sends one request; `Ok(status)` when the exchange completed and the answer was judged.
async fn send_once(
    core: &Core,
    s: &StreamRecord,
    set: &HttpSettings,
    request_id: &str,
    body: &Bytes,
    access_key: Option<&str>,
) -> (Option<u16>, Result<(), Failure>) {
    let headers = codec::request_headers(&codec::HeaderInputs {
        request_id,
        source_arn: &s.arn,
        access_key,
        common_attributes: &set.common_attributes,
        gzip: set.gzip,
    });
    let mut req = core.outbound.client().post(&set.url).body(body.clone());
    for (k, v) in &headers {
        req = req.header(*k, v.as_str());
    }
    let req = match req.build() {
        Ok(r) => r,
        Err(_) => {
            return (
                None,
                Err(Failure::retry(
                    "HttpEndpoint.InvalidRequest",
                    "The request could not be built: the URL, the access key or a common \
                     attribute holds characters not allowed in HTTP",
                )),
            );
        }
    };
    match core
        .outbound
        .send(req, core.cfg.response_timeout, codec::MAX_RESPONSE_BYTES)
        .await
    {
        Ok(resp) => {
            let ct = resp
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            (
                Some(resp.status),
                codec::judge_response(resp.status, ct, &resp.body, resp.truncated, request_id),
            )
        }
        Err(e) => (None, Err(send_failure(&e))),
    }
}

/// One delivery attempt (including the immediate re-send with a refreshed secret).
async fn attempt_http(
    core: &Core,
    s: &StreamRecord,
    set: &HttpSettings,
    p: &Pending,
) -> Result<(), Failure> {
    let key = core.access_key_for(s, set, false).await?;
    let mut body = codec::request_body(
        &p.state.request_id,
        core.clock.now_millis(),
        p.each_record().map(|(_, r)| r),
    );
    if set.gzip {
        body = codec::gzip(&body);
    }
    let body = Bytes::from(body);
    let (status, result) = send_once(
        core,
        s,
        set,
        &p.state.request_id,
        &body,
        key.as_deref().map(String::as_str),
    )
    .await;
    if matches!(status, Some(401) | Some(403)) && set.secret.is_some() {
        let fresh = core.access_key_for(s, set, true).await?;
        if fresh != key {
            tracing::info!(stream = %s.name, "endpoint rejected the access key; re-sending with the secret's new value");
            return send_once(
                core,
                s,
                set,
                &p.state.request_id,
                &body,
                fresh.as_deref().map(String::as_str),
            )
            .await
            .1;
        }
    }
    result
}

async fn run_http(
    core: &Arc<Core>,
    s: &StreamRecord,
    rt: &Runtime,
    set: &HttpSettings,
    p: &mut Pending,
) -> bool {
    if !p.state.delivered {
        core.metrics.attempts.fetch_add(1, Ordering::Relaxed);
        p.state.attempts += 1;
        match attempt_http(core, s, set, p).await {
            Ok(()) => {
                core.metrics
                    .delivered_records
                    .fetch_add(p.records, Ordering::Relaxed);
                core.metrics
                    .delivered_bytes
                    .fetch_add(p.bytes, Ordering::Relaxed);
                *rt.last_error.lock() = None;
                if !set.all_data {
                    return finish(core, s, rt, p).await;
                }
                p.state.delivered = true;
            }
            Err(f) => {
                core.metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
                core.set_error(s, rt, &f);
                let now = core.clock.now_millis();
                p.state.failures += 1;
                if p.state.first_failure_ms == 0 {
                    p.state.first_failure_ms = now;
                }
                p.state.last_code = f.code.clone();
                p.state.last_message = f.message.clone();
                if f.retryable && !p.state.gave_up {
                    match codec::after_failure(
                        p.state.first_failure_ms,
                        now,
                        p.state.failures,
                        set.retry_s,
                        core.jitter(),
                        core.cfg.backoff_scale,
                    ) {
                        NextStep::RetryAt(t) => {
                            p.state.next_attempt_ms = t;
                            persist(core, s, p).await;
                            return false;
                        }
                        NextStep::GiveUp => {}
                    }
                }
                p.state.gave_up = true;
                return back_up_failed(core, s, rt, set, p).await;
            }
        }
    }
    // Delivered with AllData: the raw copy goes to the bucket under Prefix.
    let random = random_string();
    let mut parts = key_parts(s, &random, set.s3.gzip);
    parts.at = core.clock.now();
    let result = match codec::object_key(&set.s3.prefix, &parts) {
        Ok(key) => {
            let mut body = Vec::with_capacity(p.bytes as usize);
            for (_, r) in p.each_record() {
                body.extend_from_slice(r);
            }
            if set.s3.gzip {
                body = codec::gzip(&body);
            }
            core.put_object(s, &set.s3.role_arn, &set.s3.bucket, &key, body)
                .await
        }
        Err(e) => Err(Failure::retry("S3.InvalidPrefix", e)),
    };
    match result {
        Ok(()) => finish(core, s, rt, p).await,
        Err(f) => {
            fail_and_wait(core, s, rt, p, &f).await;
            false
        }
    }
}

/// Writes the batch as error records to the backup bucket and finishes it; if the write fails
/// the stream pauses (the batch stays, the endpoint is tried again after the backoff).
async fn back_up_failed(
    core: &Arc<Core>,
    s: &StreamRecord,
    rt: &Runtime,
    set: &HttpSettings,
    p: &mut Pending,
) -> bool {
    let now = core.clock.now_millis();
    let mut body = Vec::with_capacity(p.bytes as usize * 2);
    for (arrival, r) in p.each_record() {
        codec::error_record(
            &mut body,
            &codec::ErrorRecord {
                attempts_made: p.state.attempts,
                arrival_ms: arrival,
                error_code: &p.state.last_code,
                error_message: &p.state.last_message,
                attempt_ending_ms: now,
                raw: r,
            },
        );
    }
    if set.s3.gzip {
        body = codec::gzip(&body);
    }
    let random = random_string();
    let mut parts = key_parts(s, &random, set.s3.gzip);
    parts.at = core.clock.now();
    let result = match codec::error_key(
        &set.s3.prefix,
        set.s3.error_output_prefix.as_deref(),
        codec::HTTP_ERROR_OUTPUT_TYPE,
        &parts,
    ) {
        Ok(key) => {
            core.put_object(s, &set.s3.role_arn, &set.s3.bucket, &key, body)
                .await
        }
        Err(e) => Err(Failure::retry("S3.InvalidPrefix", e)),
    };
    match result {
        Ok(()) => {
            core.metrics
                .backed_up_records
                .fetch_add(p.records, Ordering::Relaxed);
            tracing::warn!(stream = %s.name, records = p.records, code = %p.state.last_code, "records written to the backup bucket after delivery failed");
            finish(core, s, rt, p).await
        }
        Err(f) => {
            let f = Failure::retry(
                &f.code,
                format!(
                    "{} (the endpoint failed with {} and the backup failed too: the stream is \
                     paused and keeps its data)",
                    f.message, p.state.last_code
                ),
            );
            core.set_error(s, rt, &f);
            let now = core.clock.now_millis();
            p.state.next_attempt_ms = now
                + codec::backoff_ms(p.state.failures, core.jitter(), core.cfg.backoff_scale) as i64;
            persist(core, s, p).await;
            false
        }
    }
}
