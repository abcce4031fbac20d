//! The dispatcher: leases due deliveries, invokes targets, records outcomes; the dead letters.
//!
//! Queue protocol (namespaces and key layout in the crate docs):
//! - **Lease** (stored): for each due key, `DeleteAt(key, version)` and
//!   `Put(now + lease_ms ++ id, record with attempt + 1)`. All leases of one scan go in one
//!   batch (on a conflict, each is retried alone and the losers skipped). The new key is the
//!   lease; it becomes due again by itself if this process dies.
//! - **Hand-off** (the ingest fast path): while the background dispatcher runs, `PutEvents`
//!   writes its deliveries *already leased* (key `now + lease_ms ++ id`, attempt 1: exactly
//!   what a lease writes) and, once that batch has committed, passes the records and the
//!   batch's commit sequence (their version) to the dispatcher over an in-memory channel
//!   (`Inbox`). The dispatcher runs them like leased jobs without reading the queue or
//!   writing a lease. If the process dies first, the stored state is a lease whose holder
//!   died: the delivery runs when the lease runs out. Stopping the workers puts hand-offs
//!   and jobs that have not started back in the queue due now (attempt given back).
//!   Handed-off deliveries in flight take at most `EventsConfig::handoff_budget_bytes` of
//!   memory (64 MiB by default; a waiting one costs its record, not a task); beyond that (a
//!   slow target, a backlog) `PutEvents` writes them due now and the scan takes them, so
//!   memory stays bounded and the queue is the overflow. The dispatcher scans when woken (a
//!   retry, a bus hand-off, a write that could not hand off; while busy it lets such rows
//!   gather for `SCAN_GAP` first), when the earliest due time comes, and at least every
//!   `poll_ms`; hand-offs alone do not cause scans.
//! - **Sole dispatcher** (`EventsConfig::sole_dispatcher`, set by the embedded server, which
//!   holds its data directory's `LOCK`): no other dispatcher can take a delivery, so the scan
//!   leases in memory only. A due row stays where it is, at its due key, with the attempts
//!   made before this one; the held map is the lease, nothing expires and nothing is extended.
//!   If the process dies, its rows are simply due: they run at once after a restart. Two
//!   details keep a row from running twice: a row read by a scan that was released while the
//!   scan read (completed, moved) is not leased by that scan (`Held::recent`), and a scan
//!   resumes where the last one ended (a cursor) instead of re-reading the rows it holds.
//!   Rows this process queues behind the cursor move it back (`Core::due_written`); rows
//!   another process queues there (`sluice dlq redrive`) are found when the idle timer starts
//!   a scan over from the head, at most every `WRAP_POLLS` poll intervals. Hand-offs work as
//!   with stored leases, except that their rows are written due (attempt 0), not leased, at
//!   `now - HANDOFF_BEHIND_MS`: behind the cursor, so scans for new work do not read them;
//!   `Inbox::claim` puts them in the held map before their batch commits, so no scan takes
//!   them; and a crash leaves them due.
//! - **Complete**: `DeleteAt(lease key, lease version)` plus, by outcome:
//!   nothing more (success; a bus target adds its own deliveries), `Put(now + backoff ++ id)`
//!   (retryable failure with budget left), or `Put(events.dlq, now ++ id, DeadLetter)`
//!   (non-retryable failure, `MaximumRetryAttempts` or `MaximumEventAgeInSeconds` exhausted).
//!   A failed `DeleteAt` means the lease was lost (expired and taken elsewhere): the outcome
//!   is dropped, the other holder's wins. Completions are committed in groups: one committer
//!   task at a time takes every completion queued (up to `COMPLETION_GROUP`) and commits them
//!   as one batch, all `DeleteAt`s first, while the next group queues; a conflict in a group
//!   falls back to one batch per completion. Stopping the workers waits for the committer,
//!   so outcomes still land. Completions are committed with `Store::apply_deferred`: no
//!   client waits for them, and the only thing a power loss in the sync window can undo is an
//!   outcome, so the delivery runs again (at least once still holds; `kill -9` loses nothing).
//!   Their fsync rides on the next ingest commit or comes within the store's deferred-sync
//!   interval.
//! - **Circuit breaker** (per [`Target::breaker_key`]): after `breaker_threshold` consecutive
//!   retryable failures the breaker opens for `breaker_cooldown_ms`, doubling up to
//!   `breaker_max_ms` while failures continue. While open, that target's due deliveries are
//!   moved to the reopening time *without* counting an attempt, so a dead target does not burn
//!   its events' retry budget in a hot loop. The first invocation after the pause probes it.
//! - **Per-target concurrency**: leased jobs wait in their target's lane (per breaker key), run
//!   by at most `per_target_concurrency` worker tasks of that lane, so a slow target never
//!   holds back another's deliveries, and a waiting job costs its record, not a task. A
//!   worker hands an outcome to the committer and goes on to its next job. A job still
//!   waiting when its stored lease runs out is not leased twice: the scan sees it is held in
//!   memory and only extends the lease.
//!
//! Backoff after the n-th failed invocation: `min(retry_cap_ms, retry_base_ms * 2^(n-1))`,
//! then a uniformly random value in its upper half (jitter from the injected RNG).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use serde_json::Value;
use sluice_core::{AwsError, Clock};
use sluice_store::{Batch, KeyRange, Op, Store, StoreError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::model::{DeadLetter, DeliveryRecord, NS_DLQ, NS_DUE, key_due, queue_key};
use crate::targets::{Invocation, InvokeError, Target};
use crate::transform::{InputSpec, Reserved, transform};
use crate::{Core, Metrics, internal, millis_to_iso};

/// Deliveries leased per scan.
const SCAN_LIMIT: usize = 256;

/// What one handed-off delivery counts against `EventsConfig::handoff_budget_bytes`: its
/// event, and a bound on the rest of its record and its place in the dispatcher's maps and
/// lanes.
pub(crate) fn handoff_cost(d: &DeliveryRecord) -> usize {
    d.event.len() + 1024
}

/// A sole dispatcher's scan starts over from the head of the queue (to find rows another
/// process queued behind its cursor, such as `sluice dlq redrive`) when its timer wakes it and
/// this many poll intervals passed since the last time.
pub(crate) const WRAP_POLLS: i64 = 40;

/// How far in the past a sole dispatcher's hand-offs are written (due, so a restart runs them
/// at once, and behind its cursor, so its scans for new work do not read them), ms.
pub(crate) const HANDOFF_BEHIND_MS: i64 = 60_000;

/// How long a busy dispatcher lets new rows gather before a scan they woke it for.
const SCAN_GAP: Duration = Duration::from_millis(1);

/// Most completions committed in one batch.
const COMPLETION_GROUP: usize = 1024;

/// The in-memory path from `PutEvents` to the running dispatcher (see the module docs).
#[derive(Debug)]
pub(crate) struct Inbox {
    tx: mpsc::UnboundedSender<Handoff>,
    /// Bytes ([`handoff_cost`]) handed off and not yet completed.
    inflight: Arc<AtomicUsize>,
    budget: usize,
    /// The dispatcher's state (a sole dispatcher holds hand-offs from before their commit).
    state: Arc<State>,
}

impl Inbox {
    /// Reserves room for handing off deliveries of these [`handoff_cost`]s, or `None` when
    /// those in flight already take the budget.
    pub(crate) fn reserve(&self, costs: &[usize]) -> Option<Vec<Slot>> {
        let total: usize = costs.iter().sum();
        let before = self.inflight.fetch_add(total, Ordering::AcqRel);
        if before + total > self.budget {
            self.inflight.fetch_sub(total, Ordering::AcqRel);
            return None;
        }
        Some(
            costs
                .iter()
                .map(|&c| Slot(self.inflight.clone(), c))
                .collect(),
        )
    }

    /// A sole dispatcher's hand-offs are written due now: it holds them (version unknown yet)
    /// from before their batch commits, so its scan never takes them.
    pub(crate) fn claim(&self, items: &[(Vec<u8>, DeliveryRecord, Slot)]) {
        let mut held = self.state.held.lock();
        for (key, rec, _) in items {
            held.map.insert(rec.id.clone(), (key.clone(), 0));
        }
    }

    /// Undoes [`Inbox::claim`] for hand-offs whose batch did not commit.
    pub(crate) fn unclaim(&self, items: &[(Vec<u8>, DeliveryRecord, Slot)]) {
        let mut held = self.state.held.lock();
        for (_, rec, _) in items {
            held.release(&rec.id);
        }
    }

    /// Passes committed, pre-leased deliveries to the dispatcher. If it has stopped they stay
    /// leased in the store and are found by a scan once the lease runs out.
    pub(crate) fn send(&self, h: Handoff) {
        let _ = self.tx.send(h);
    }
}

/// One delivery's share of the in-memory hand-off budget (bytes); released when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicUsize>, usize);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// Deliveries committed by one batch (commit sequence `seq`) already leased to the running
/// dispatcher: each under its lease key, with its record (attempt 1) and capacity slot.
#[derive(Debug)]
pub(crate) struct Handoff {
    pub(crate) seq: u64,
    pub(crate) items: Vec<(Vec<u8>, DeliveryRecord, Slot)>,
}

/// A lease: the delivery's current queue key and its version.
type Lease = (Vec<u8>, u64);

/// Which counter a committed outcome bumps.
type Counter = fn(&Metrics) -> &AtomicU64;

/// A delivery outcome waiting to be committed with others.
struct Completion {
    id: String,
    /// The lease as the job knew it (the held map may know a newer one, after an extension).
    lease: (Vec<u8>, u64),
    /// What the outcome writes besides removing the lease.
    ops: Vec<Op>,
    counter: Option<Counter>,
    /// Whether the outcome queued something the dispatcher should look at soon.
    wake: bool,
    /// Who waits for the commit (`None`: a worker that went on; the committer logs failures).
    reply: Option<oneshot::Sender<Result<(), AwsError>>>,
}

#[derive(Default)]
struct Completions {
    queue: Vec<Completion>,
    committing: bool,
}

#[derive(Debug, Clone, Copy)]
struct Breaker {
    failures: u32,
    open_until: i64,
    cooldown: i64,
}

/// Deliveries leased by this dispatcher and not yet completed.
#[derive(Debug, Default)]
struct Held {
    /// Delivery id -> current lease key and version.
    map: HashMap<String, Lease>,
    /// Scans reading the queue right now.
    scans: usize,
    /// Ids released while a scan was reading: the rows it returns may predate the release
    /// (a completed delivery's deleted row), so it must not lease them.
    recent: HashSet<String>,
}

impl Held {
    /// Forgets the lease of `id` (completed, moved or given up).
    fn release(&mut self, id: &str) -> Option<Lease> {
        if self.scans > 0 {
            self.recent.insert(id.to_string());
        }
        self.map.remove(id)
    }
}

/// One target's leased jobs waiting to run, and how many workers run them (at most
/// `per_target_concurrency`; a worker takes jobs until the lane is empty).
#[derive(Default)]
struct Lane {
    queue: std::collections::VecDeque<Job>,
    workers: usize,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("queued", &self.queue.len())
            .field("workers", &self.workers)
            .finish()
    }
}

/// A sole dispatcher's position in the queue: the next scan reads from `next` (inclusive;
/// `None`: the head), unless [`Core::due_written`] noted rows due earlier.
#[derive(Debug, Default)]
struct Cursor {
    next: Option<Vec<u8>>,
    /// When a scan last started from the head, Unix ms.
    wrapped_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    /// Deliveries leased by this dispatcher and not yet completed: id -> current lease key
    /// and version (an extension moves the lease).
    held: Mutex<Held>,
    /// Where a sole dispatcher's next scan resumes.
    cursor: Mutex<Cursor>,
    breakers: Mutex<HashMap<String, Breaker>>,
    /// Leased jobs waiting for a worker, by target ([`Target::breaker_key`]).
    lanes: Mutex<HashMap<String, Lane>>,
    /// Workers, committers and other tasks in flight (stopping waits for them).
    running: Running,
    completions: Mutex<Completions>,
    /// Jobs given up unstarted while stopping: current lease and record.
    abandoned: Mutex<Vec<(Lease, DeliveryRecord)>>,
}

impl std::fmt::Debug for Completions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completions")
            .field("queued", &self.queue.len())
            .field("committing", &self.committing)
            .finish()
    }
}

/// Leases and runs deliveries. [`Dispatcher::run_once`] does one pass inline (tests, tools);
/// [`crate::Events::start_workers`] runs passes in the background.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    core: Arc<Core>,
    state: Arc<State>,
}

/// A leased delivery.
pub(crate) struct Job {
    lease_key: Vec<u8>,
    version: u64,
    pub(crate) rec: DeliveryRecord,
    target: Option<Arc<dyn Target>>,
    bkey: String,
    /// The hand-off capacity this job holds (hand-offs only).
    _slot: Option<Slot>,
}

enum Plan {
    Lease(Box<Job>),
    Extend(String, Vec<u8>),
    Defer,
}

impl Dispatcher {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            state: Arc::new(State::default()),
        }
    }

    /// Leases every due delivery (up to a page) and runs them to completion, one after the
    /// other. Returns how many were invoked.
    pub async fn run_once(&self) -> Result<usize, AwsError> {
        let jobs = self.lease_due().await?;
        let n = jobs.len();
        for job in jobs {
            self.run_job(job).await;
        }
        Ok(n)
    }

    #[cfg(test)]
    pub(crate) async fn lease_due_for_test(&self) -> usize {
        self.lease_due().await.map(|j| j.len()).unwrap_or(0)
    }

    /// When the dispatcher should scan next, Unix ms: the earliest due time in the queue, or
    /// for a sole dispatcher (whose held deliveries stay in the queue, due) the earliest after
    /// its last scan's range (rows queued since behind it wake it: [`Core::due_written`]).
    async fn next_wake(&self) -> Result<Option<i64>, AwsError> {
        if !self.core.cfg.sole_dispatcher {
            return self.next_due().await;
        }
        // Where the next scan starts: after a scan that read everything due, the end of its
        // range.
        let from = self
            .state
            .cursor
            .lock()
            .next
            .clone()
            .unwrap_or_else(|| queue_key(self.core.clock.now_millis() + 1, &uuid::Uuid::nil()));
        let first = self
            .core
            .store
            .scan(NS_DUE, KeyRange::from(&from), 1, false)
            .await
            .map_err(internal)?;
        Ok(first.first().map(|(k, _)| key_due(k)))
    }

    /// The earliest due time in the queue, Unix ms.
    pub async fn next_due(&self) -> Result<Option<i64>, AwsError> {
        let first = self
            .core
            .store
            .scan(NS_DUE, KeyRange::all(), 1, false)
            .await
            .map_err(internal)?;
        Ok(first.first().map(|(k, _)| key_due(k)))
    }

    /// The target kind serving `arn`, and the key of its circuit breaker and lane (the ARN
    /// itself when no kind serves it).
    fn target_of(&self, arn: &str) -> (Option<Arc<dyn Target>>, String) {
        let target = self.core.target_for(arn);
        let bkey = target
            .as_ref()
            .map(|t| t.breaker_key(arn))
            .unwrap_or_else(|| arn.to_string());
        (target, bkey)
    }

    fn breaker_open_until(&self, bkey: &str, now: i64) -> Option<i64> {
        self.state
            .breakers
            .lock()
            .get(bkey)
            .filter(|b| b.failures >= self.core.cfg.breaker_threshold && b.open_until > now)
            .map(|b| b.open_until)
    }

    fn record_outcome(&self, bkey: &str, ok: bool, now: i64) {
        let cfg = &self.core.cfg;
        let mut m = self.state.breakers.lock();
        if ok {
            m.remove(bkey);
            return;
        }
        let b = m.entry(bkey.to_string()).or_insert(Breaker {
            failures: 0,
            open_until: 0,
            cooldown: cfg.breaker_cooldown_ms,
        });
        b.failures += 1;
        if b.failures >= cfg.breaker_threshold && b.open_until <= now {
            b.open_until = now + b.cooldown;
            b.cooldown = (b.cooldown * 2).min(cfg.breaker_max_ms);
            tracing::warn!(
                target = bkey,
                failures = b.failures,
                until = b.open_until,
                "circuit breaker open"
            );
        }
    }

    /// Leases due deliveries (up to a page) for this dispatcher to run.
    pub(crate) async fn lease_due(&self) -> Result<Vec<Job>, AwsError> {
        self.scan_due(false).await.map(|(jobs, _)| jobs)
    }

    /// One scan: the jobs leased, and whether more may be due at once (a full page). `idle`:
    /// the dispatcher woke by its timer, not for new work.
    pub(crate) async fn scan_due(&self, idle: bool) -> Result<(Vec<Job>, bool), AwsError> {
        if self.core.cfg.sole_dispatcher {
            self.lease_in_memory(idle).await
        } else {
            let jobs = self.lease_stored().await?;
            let more = jobs.len() >= SCAN_LIMIT;
            Ok((jobs, more))
        }
    }

    /// The sole dispatcher's scan: reads a page of due rows from its cursor and leases those
    /// it does not hold yet in memory only (see the module docs). Rows of a paused target are
    /// moved to the breaker's reopening time.
    async fn lease_in_memory(&self, idle: bool) -> Result<(Vec<Job>, bool), AwsError> {
        let core = &self.core;
        let now = core.clock.now_millis();
        let end = queue_key(now + 1, &uuid::Uuid::nil());
        let start = {
            let mut c = self.state.cursor.lock();
            let from = core.rescan_from.swap(i64::MAX, Ordering::AcqRel);
            let wrap_ms = (core.cfg.poll_ms as i64).saturating_mul(WRAP_POLLS);
            if idle && now - c.wrapped_ms >= wrap_ms {
                c.next = None;
            }
            if from != i64::MAX {
                let k = queue_key(from, &uuid::Uuid::nil());
                if c.next.as_ref().is_some_and(|n| k < *n) {
                    c.next = Some(k);
                }
            }
            if c.next.is_none() {
                c.wrapped_ms = now;
            }
            c.next.clone()
        };
        self.state.held.lock().scans += 1;
        let rows = core
            .store
            .scan(
                NS_DUE,
                KeyRange {
                    start,
                    end: Some(end.clone()),
                },
                SCAN_LIMIT,
                false,
            )
            .await;
        // Claim the rows not held yet, in the same critical section that ends the scan's
        // watch over releases.
        let (claimed, more) = {
            let mut held = self.state.held.lock();
            held.scans -= 1;
            let claimed = rows.map(|rows| {
                let more = rows.len() >= SCAN_LIMIT;
                // After a full page, resume after its last row; otherwise everything due was
                // read, and what is queued behind `end` from now on comes with a hint.
                self.state.cursor.lock().next = match rows.last() {
                    Some((last, _)) if more => {
                        let mut next = last.clone();
                        next.push(0);
                        Some(next)
                    }
                    _ => Some(end),
                };
                let mut claimed = Vec::new();
                for (key, v) in rows {
                    let Some(id) = key.get(8..24).and_then(|b| uuid::Uuid::from_slice(b).ok())
                    else {
                        continue;
                    };
                    let id = id.to_string();
                    if held.map.contains_key(&id) || held.recent.contains(&id) {
                        continue;
                    }
                    held.map.insert(id.clone(), (key.clone(), v.version));
                    claimed.push((id, key, v));
                }
                (claimed, more)
            });
            if held.scans == 0 {
                held.recent.clear();
            }
            claimed.map_err(internal)?
        };
        let mut jobs = Vec::with_capacity(claimed.len());
        let mut paused = Vec::new();
        for (id, key, v) in claimed {
            let mut rec: DeliveryRecord = match serde_json::from_slice(&v.value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "undecodable delivery record; left in place");
                    // Held until the process restarts, so the scan does not trip on it again.
                    continue;
                }
            };
            rec.id = id;
            let (target, bkey) = self.target_of(&rec.target.arn);
            rec.attempt += 1;
            let job = Job {
                lease_key: key,
                version: v.version,
                rec,
                target,
                bkey,
                _slot: None,
            };
            match self.breaker_open_until(&job.bkey, now) {
                Some(until) => paused.push((job, until)),
                None => jobs.push(job),
            }
        }
        if !paused.is_empty() {
            self.defer(paused).await;
        }
        Ok((jobs, more))
    }

    /// The scan of dispatchers sharing the store: leases each due delivery with a stored lease.
    async fn lease_stored(&self) -> Result<Vec<Job>, AwsError> {
        let core = &self.core;
        let now = core.clock.now_millis();
        let end = queue_key(now + 1, &uuid::Uuid::nil());
        let due = core
            .store
            .scan(
                NS_DUE,
                KeyRange {
                    start: None,
                    end: Some(end),
                },
                SCAN_LIMIT,
                false,
            )
            .await
            .map_err(internal)?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut plans = Vec::with_capacity(due.len());
        let mut batch = Batch::new();
        for (key, v) in due {
            let mut rec: DeliveryRecord = match serde_json::from_slice(&v.value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "undecodable delivery record; left in place");
                    continue;
                }
            };
            let Ok(id) = uuid::Uuid::parse_str(&rec.id) else {
                continue;
            };
            let (target, bkey) = self.target_of(&rec.target.arn);
            let (plan, due_at) = if self.state.held.lock().map.contains_key(&rec.id) {
                let until = now + core.cfg.lease_ms;
                (Plan::Extend(rec.id.clone(), queue_key(until, &id)), until)
            } else if let Some(until) = self.breaker_open_until(&bkey, now) {
                (Plan::Defer, until)
            } else {
                rec.attempt += 1;
                let lease_key = queue_key(now + core.cfg.lease_ms, &id);
                (
                    Plan::Lease(Box::new(Job {
                        lease_key,
                        version: 0,
                        rec: rec.clone(),
                        target,
                        bkey,
                        _slot: None,
                    })),
                    now + core.cfg.lease_ms,
                )
            };
            let ops = vec![
                Op::DeleteAt {
                    ns: NS_DUE.into(),
                    key,
                    version: v.version,
                },
                Op::Put {
                    ns: NS_DUE.into(),
                    key: queue_key(due_at, &id),
                    value: serde_json::to_vec(&rec).map_err(internal)?,
                },
            ];
            batch.ops.extend(ops.iter().cloned());
            plans.push((plan, ops));
        }
        let mut jobs = Vec::new();
        let mut done = |plan: Plan, seq: u64| match plan {
            Plan::Lease(mut j) => {
                j.version = seq;
                self.state
                    .held
                    .lock()
                    .map
                    .insert(j.rec.id.clone(), (j.lease_key.clone(), seq));
                jobs.push(*j);
            }
            Plan::Extend(id, key) => {
                if let Some(h) = self.state.held.lock().map.get_mut(&id) {
                    *h = (key, seq);
                }
            }
            Plan::Defer => {}
        };
        match core.store.apply(batch).await {
            Ok(seq) => {
                for (plan, _) in plans {
                    done(plan, seq);
                }
            }
            Err(StoreError::Conflict) => {
                for (plan, ops) in plans {
                    match core.store.apply(Batch { ops }).await {
                        Ok(seq) => done(plan, seq),
                        Err(StoreError::Conflict) => {}
                        Err(e) => return Err(internal(e)),
                    }
                }
            }
            Err(e) => return Err(internal(e)),
        }
        Ok(jobs)
    }

    /// Takes over deliveries that `PutEvents` committed already leased to this dispatcher:
    /// returns the jobs to run, and the jobs whose target's circuit breaker is open (to be
    /// [`Dispatcher::defer`]red).
    fn accept(&self, h: Handoff) -> (Vec<Job>, Vec<(Job, i64)>) {
        let now = self.core.clock.now_millis();
        let mut run = Vec::with_capacity(h.items.len());
        let mut defer = Vec::new();
        {
            let mut held = self.state.held.lock();
            for (lease_key, rec, _) in &h.items {
                held.map.insert(rec.id.clone(), (lease_key.clone(), h.seq));
            }
        }
        for (lease_key, rec, slot) in h.items {
            let (target, bkey) = self.target_of(&rec.target.arn);
            let job = Job {
                lease_key,
                version: h.seq,
                rec,
                target,
                bkey,
                _slot: Some(slot),
            };
            match self.breaker_open_until(&job.bkey, now) {
                Some(until) => defer.push((job, until)),
                None => run.push(job),
            }
        }
        (run, defer)
    }

    /// Moves handed-off jobs whose target's breaker is open to the breaker's reopening time,
    /// giving back the attempt their lease counted (as the scan does for due deliveries).
    async fn defer(&self, jobs: Vec<(Job, i64)>) {
        let moves: Vec<_> = {
            let mut held = self.state.held.lock();
            jobs.into_iter()
                .map(|(job, until)| {
                    held.release(&job.rec.id);
                    ((job.lease_key, job.version), job.rec, until)
                })
                .collect()
        };
        if let Some(e) = self.move_leases(moves).await {
            tracing::warn!(error = %e, "could not defer deliveries of a paused target; their leases will expire");
        }
    }

    /// Gives up a job that never ran (the workers are stopping): it is moved back to due now
    /// by [`Dispatcher::release_abandoned`].
    fn abandon(&self, job: Job) {
        let lease = self
            .state
            .held
            .lock()
            .release(&job.rec.id)
            .unwrap_or((job.lease_key, job.version));
        self.state.abandoned.lock().push((lease, job.rec));
    }

    /// Moves every abandoned job's lease back to due now (attempt given back), so that those
    /// deliveries run at once after a restart instead of when their leases run out.
    async fn release_abandoned(&self) {
        let now = self.core.clock.now_millis();
        let moves: Vec<_> = std::mem::take(&mut *self.state.abandoned.lock())
            .into_iter()
            .map(|(lease, rec)| (lease, rec, now))
            .collect();
        if let Some(e) = self.move_leases(moves).await {
            tracing::warn!(error = %e, "could not release unstarted deliveries; they run when their leases expire");
        }
    }

    /// Moves leased deliveries (current lease, record, new due time) to their new due time
    /// with the attempt their lease counted given back: per delivery `DeleteAt` the lease and
    /// `Put` the record. One batch; if a lease was lost meanwhile, one batch each, skipping the
    /// lost ones. Returns the first other error.
    async fn move_leases(&self, moves: Vec<(Lease, DeliveryRecord, i64)>) -> Option<StoreError> {
        let mut batches = Vec::with_capacity(moves.len());
        for ((key, version), mut rec, due) in moves {
            let Ok(id) = uuid::Uuid::parse_str(&rec.id) else {
                continue;
            };
            rec.attempt = rec.attempt.saturating_sub(1);
            let Ok(value) = serde_json::to_vec(&rec) else {
                continue;
            };
            batches.push(Batch::new().delete_at(NS_DUE, key, version).put(
                NS_DUE,
                queue_key(due, &id),
                value,
            ));
        }
        if batches.is_empty() {
            return None;
        }
        let all = Batch {
            ops: batches.iter().flat_map(|b| b.ops.iter().cloned()).collect(),
        };
        match self.core.store.apply(all).await {
            Err(StoreError::Conflict) => {
                futures::future::join_all(batches.into_iter().map(|b| self.core.store.apply(b)))
                    .await
                    .into_iter()
                    .find_map(|r| r.err().filter(|e| !matches!(e, StoreError::Conflict)))
            }
            r => r.err(),
        }
    }

    fn backoff_ms(&self, attempt: u32) -> i64 {
        let cfg = &self.core.cfg;
        let exp = attempt.saturating_sub(1).min(40);
        let d = cfg
            .retry_base_ms
            .saturating_mul(1i64 << exp)
            .min(cfg.retry_cap_ms)
            .max(1);
        let lo = d / 2;
        self.core.rng.lock().random_range(lo..=d)
    }

    /// Invokes the target of `job` and waits until its outcome is committed (tools, tests).
    pub(crate) async fn run_job(&self, job: Job) {
        let outcome = self.invoke(&job).await;
        let (reply, answer) = oneshot::channel();
        let done = match self.complete(&job, outcome, Some(reply)) {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err(internal("the completion committer stopped"))),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            self.unrecorded(&job, &e);
        }
    }

    /// Forgets `job`, whose outcome could not be recorded: its row stays, and it runs again.
    fn unrecorded(&self, job: &Job, e: &AwsError) {
        tracing::warn!(error = %e, delivery = %job.rec.id, "could not record a delivery outcome; it will be retried");
        self.state.held.lock().release(&job.rec.id);
    }

    /// Invokes the target of `job`: the outcome to record.
    async fn invoke(&self, job: &Job) -> Result<Batch, (InvokeError, &'static str)> {
        let core = &self.core;
        let now = core.clock.now_millis();
        let rec = &job.rec;
        let max_age_ms = rec.target.retry.max_age_secs as i64 * 1000;
        if now - rec.first_seen_ms > max_age_ms {
            Err((
                InvokeError::permanent(
                    "EXPIRED",
                    "the event is older than MaximumEventAgeInSeconds",
                ),
                "MaximumEventAgeInSeconds",
            ))
        } else {
            core.metrics.invocations.fetch_add(1, Ordering::Relaxed);
            let r = match &job.target {
                None => Err(InvokeError::permanent(
                    "NO_RESOURCE",
                    format!("No supported target serves {}.", rec.target.arn),
                )),
                Some(t) => match build_input(rec) {
                    Err(e) => Err(e),
                    Ok((input, event)) => {
                        let inv = Invocation::new(rec, input, event);
                        t.invoke(core, &inv).await
                    }
                },
            };
            let now = core.clock.now_millis();
            match &r {
                Ok(_) => self.record_outcome(&job.bkey, true, now),
                Err(e) => {
                    core.metrics
                        .failed_invocations
                        .fetch_add(1, Ordering::Relaxed);
                    if e.retryable {
                        self.record_outcome(&job.bkey, false, now);
                    }
                }
            }
            r.map_err(|e| {
                let exhausted = if !e.retryable {
                    ""
                } else if rec.attempt.saturating_sub(1) >= rec.target.retry.max_attempts {
                    "MaximumRetryAttempts"
                } else if now - rec.first_seen_ms > max_age_ms {
                    "MaximumEventAgeInSeconds"
                } else {
                    "-"
                };
                (e, exhausted)
            })
        }
    }

    /// Queues the outcome of `job` for the completion committer, which forgets the lease once
    /// the outcome is committed (or failed) and answers `reply`, if given (otherwise it logs a
    /// failure itself).
    fn complete(
        &self,
        job: &Job,
        outcome: Result<Batch, (InvokeError, &'static str)>,
        reply: Option<oneshot::Sender<Result<(), AwsError>>>,
    ) -> Result<(), AwsError> {
        let core = &self.core;
        let now = core.clock.now_millis();
        let id = uuid::Uuid::parse_str(&job.rec.id).map_err(internal)?;
        let (ops, counter, wake): (Vec<Op>, Option<Counter>, bool) = match outcome {
            // A bus target's hand-off queues deliveries due now.
            Ok(extra) => {
                let wake = !extra.ops.is_empty();
                (extra.ops, None, wake)
            }
            Err((e, "-")) => {
                let mut rec = job.rec.clone();
                rec.last_error = Some(format!("{}: {}", e.code, e.message));
                // The more conservative of the backoff and the target's Retry-After.
                let due = now
                    + self.backoff_ms(rec.attempt).max(
                        e.retry_after_ms
                            .unwrap_or(0)
                            .min(self.core.cfg.retry_cap_ms),
                    );
                let put = Op::Put {
                    ns: NS_DUE.into(),
                    key: queue_key(due, &id),
                    value: serde_json::to_vec(&rec).map_err(internal)?,
                };
                (vec![put], Some(|m: &Metrics| &m.retries), true)
            }
            Err((e, exhausted)) => {
                tracing::info!(delivery = %job.rec.id, rule = %job.rec.rule_arn, target = %job.rec.target.arn, code = %e.code, exhausted, "delivery dead-lettered");
                let dl = DeadLetter {
                    v: 1,
                    delivery: job.rec.clone(),
                    error_code: e.code,
                    error_message: e.message,
                    exhausted: exhausted.to_string(),
                    at_ms: now,
                };
                let put = Op::Put {
                    ns: NS_DLQ.into(),
                    key: queue_key(now, &id),
                    value: serde_json::to_vec(&dl).map_err(internal)?,
                };
                (vec![put], Some(|m: &Metrics| &m.dead_lettered), false)
            }
        };
        self.submit(Completion {
            id: job.rec.id.clone(),
            lease: (job.lease_key.clone(), job.version),
            ops,
            counter,
            wake,
            reply,
        });
        Ok(())
    }

    /// Queues a completion; starts a committer task unless one is running. The committer
    /// commits everything queued as one batch, and again for what queued meanwhile, so
    /// completions share store batches instead of paying one each.
    fn submit(&self, c: Completion) {
        let start = {
            let mut q = self.state.completions.lock();
            q.queue.push(c);
            !std::mem::replace(&mut q.committing, true)
        };
        if start {
            let d = self.clone();
            self.state
                .running
                .spawn(async move { d.commit_completions().await });
        }
    }

    async fn commit_completions(&self) {
        /// If the committer dies (panic, runtime shutdown), the callers still queued are
        /// answered with an error (their leases expire and the deliveries run again) and the
        /// next completion starts a new committer.
        struct Reset<'a>(&'a Mutex<Completions>);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                let mut q = self.0.lock();
                q.committing = false;
                q.queue.clear();
            }
        }
        let reset = Reset(&self.state.completions);
        loop {
            let group: Vec<Completion> = {
                let mut q = self.state.completions.lock();
                if q.queue.is_empty() {
                    q.committing = false;
                    drop(q);
                    std::mem::forget(reset);
                    return;
                }
                let n = q.queue.len().min(COMPLETION_GROUP);
                q.queue.drain(..n).collect()
            };
            self.commit_group(group).await;
        }
    }

    /// Commits `group` as one batch: per completion, `DeleteAt` its current lease, and its
    /// outcome's ops. A conflict (a lease lost or extended meanwhile) falls back to
    /// one batch per completion, so one lost lease does not fail the others.
    async fn commit_group(&self, group: Vec<Completion>) {
        let core = &self.core;
        // Every lease's `DeleteAt` first, then the outcomes' writes: a lost lease fails the
        // batch before anything else is written (completions touch distinct leases, so the
        // order changes nothing else).
        let mut takes = Vec::with_capacity(group.len() * 2);
        let mut writes = Vec::with_capacity(group.len());
        {
            let held = self.state.held.lock();
            for c in &group {
                let (key, version) = held
                    .map
                    .get(&c.id)
                    .cloned()
                    .unwrap_or_else(|| c.lease.clone());
                takes.push(Op::DeleteAt {
                    ns: NS_DUE.into(),
                    key,
                    version,
                });
                writes.extend(c.ops.iter().cloned());
            }
        }
        takes.append(&mut writes);
        let batch = Batch { ops: takes };
        let results: Vec<Result<bool, AwsError>> = match core.store.apply_deferred(batch).await {
            Ok(_) => group.iter().map(|_| Ok(true)).collect(),
            Err(StoreError::Conflict) => {
                futures::future::join_all(group.iter().map(|c| self.commit_one(c))).await
            }
            Err(e) => {
                let e = internal(e);
                group.iter().map(|_| Err(e.clone())).collect()
            }
        };
        {
            let mut held = self.state.held.lock();
            for c in &group {
                held.release(&c.id);
            }
        }
        // The earliest due time the committed outcomes queued (a retry, a bus hand-off).
        let mut queued_from: Option<i64> = None;
        for (c, r) in group.into_iter().zip(results) {
            if let Ok(true) = r {
                if let Some(counter) = c.counter {
                    counter(&core.metrics).fetch_add(1, Ordering::Relaxed);
                }
                if c.wake {
                    for op in &c.ops {
                        if let Op::Put { ns, key, .. } = op
                            && ns == NS_DUE
                        {
                            let due = key_due(key);
                            queued_from = Some(queued_from.map_or(due, |q| q.min(due)));
                        }
                    }
                }
            }
            match (c.reply, r) {
                (Some(reply), r) => {
                    let _ = reply.send(r.map(|_| ()));
                }
                (None, Err(e)) => {
                    tracing::warn!(error = %e, delivery = %c.id, "could not record a delivery outcome; it will be retried");
                }
                (None, Ok(_)) => {}
            }
        }
        if let Some(from) = queued_from {
            core.due_written(from);
        }
    }

    /// Commits one completion alone. The lease may have been extended while the invocation
    /// ran: commit against the current lease, re-reading it if an extension raced with this
    /// commit. `Ok(false)`: the lease was lost (taken by another dispatcher), whose outcome
    /// wins.
    async fn commit_one(&self, c: &Completion) -> Result<bool, AwsError> {
        for _ in 0..3 {
            let (key, version) = self
                .state
                .held
                .lock()
                .map
                .get(&c.id)
                .cloned()
                .unwrap_or_else(|| c.lease.clone());
            let mut b = Batch::new().delete_at(NS_DUE, key, version);
            b.ops.extend(c.ops.iter().cloned());
            match self.core.store.apply_deferred(b).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        Ok(false)
    }

    /// Queues `jobs` on their targets' lanes, starting a worker for a lane below its
    /// concurrency.
    fn spawn_jobs(&self, stop: &watch::Receiver<bool>, jobs: Vec<Job>) {
        let limit = self.core.cfg.per_target_concurrency.max(1);
        let mut lanes = self.state.lanes.lock();
        for job in jobs {
            let bkey = job.bkey.clone();
            let lane = lanes.entry(bkey.clone()).or_default();
            lane.queue.push_back(job);
            if lane.workers < limit {
                lane.workers += 1;
                let (d, stop) = (self.clone(), stop.clone());
                self.state.running.spawn(d.work(bkey, stop));
            }
        }
    }

    /// A worker of one lane: runs its jobs one after the other until the lane is empty or the
    /// workers stop (the jobs left are given up by the dispatcher). It does not wait for an
    /// outcome's commit before the next invocation: the lane's concurrency bounds calls to
    /// the target, and waiting for an fsync would cap a target at `per_target_concurrency`
    /// deliveries per commit latency.
    async fn work(self, bkey: String, stop: watch::Receiver<bool>) {
        loop {
            let job = {
                let mut lanes = self.state.lanes.lock();
                let Some(lane) = lanes.get_mut(&bkey) else {
                    return;
                };
                let next = if *stop.borrow() {
                    None
                } else {
                    lane.queue.pop_front()
                };
                match next {
                    Some(job) => job,
                    None => {
                        lane.workers -= 1;
                        if lane.workers == 0 && lane.queue.is_empty() {
                            lanes.remove(&bkey);
                        }
                        return;
                    }
                }
            };
            let outcome = self.invoke(&job).await;
            if let Err(e) = self.complete(&job, outcome, None) {
                self.unrecorded(&job, &e);
            }
        }
    }

    /// Gives up every job still waiting on a lane (the workers stopped).
    fn abandon_queued(&self) {
        let jobs: Vec<Job> = self
            .state
            .lanes
            .lock()
            .drain()
            .flat_map(|(_, lane)| lane.queue)
            .collect();
        for job in jobs {
            self.abandon(job);
        }
    }
}

/// The input of `rec`'s target, and the parsed event if building the input needed it (only
/// InputPath and InputTransformer look inside the event; the whole event or a constant input
/// is passed on without parsing it).
fn build_input(rec: &DeliveryRecord) -> Result<(String, Option<Value>), InvokeError> {
    let spec = rec.target.input_spec();
    let render = |ingestion: &str, event: &Value| {
        transform(
            &spec,
            &rec.event,
            event,
            &Reserved {
                rule_arn: &rec.rule_arn,
                rule_name: &rec.rule,
                ingestion_time: ingestion,
            },
        )
    };
    match spec {
        InputSpec::Event | InputSpec::Constant(_) => Ok((render("", &Value::Null), None)),
        InputSpec::Path(_) | InputSpec::Transformer { .. } => {
            let event: Value = serde_json::from_str(&rec.event)
                .map_err(|e| InvokeError::permanent("INVALID_INPUT", e.to_string()))?;
            let ingestion = millis_to_iso(rec.first_seen_ms);
            Ok((render(&ingestion, &event), Some(event)))
        }
    }
}

/// The background tasks of the service; see [`crate::Events::start_workers`].
#[derive(Debug)]
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Stops leasing and scheduling, lets running invocations finish, and returns. Jobs still
    /// waiting for a target slot, and hand-offs not yet taken, are put back in the queue due
    /// now (attempt given back), so they run at once after a restart. (If that last write
    /// fails, or the process dies instead of stopping, their leases expire and they run then.)
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub(crate) fn start(core: Arc<Core>) -> WorkerHandle {
    let (tx, rx) = watch::channel(false);
    let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
    let d = Dispatcher::new(core.clone());
    *core.inbox.write() = Some(Inbox {
        tx: inbox_tx,
        inflight: Arc::new(AtomicUsize::new(0)),
        budget: core.cfg.handoff_budget_bytes,
        state: d.state.clone(),
    });
    let dispatcher = tokio::spawn(dispatch_loop(d, rx.clone(), inbox_rx));
    let scheduler = tokio::spawn(crate::schedule::schedule_loop(core, rx));
    WorkerHandle {
        stop: tx,
        tasks: vec![dispatcher, scheduler],
    }
}

/// The dispatcher's tasks in flight, so that stopping can wait for them (a counter rather
/// than a `JoinSet`: nothing needs their results, and thousands start every second).
#[derive(Debug, Clone, Default)]
struct Running(Arc<(AtomicUsize, tokio::sync::Notify)>);

/// Counts one task of [`Running`] until dropped (also when the task panics or is dropped).
struct RunningGuard(Running);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let (count, idle) = &*(self.0).0;
        if count.fetch_sub(1, Ordering::AcqRel) == 1 {
            idle.notify_waiters();
        }
    }
}

impl Running {
    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.0.fetch_add(1, Ordering::AcqRel);
        let guard = RunningGuard(self.clone());
        tokio::spawn(async move {
            let _guard = guard;
            f.await;
        });
    }

    /// Returns once no task is in flight.
    async fn idle(&self) {
        let (count, idle) = &*self.0;
        loop {
            let notified = idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The next hand-off (never, once the channel is gone).
async fn next_handoff(inbox: &mut Option<mpsc::UnboundedReceiver<Handoff>>) -> Option<Handoff> {
    match inbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs a hand-off's jobs; defers those of paused targets on a task of their own.
fn take_handoff(d: &Dispatcher, stop: &watch::Receiver<bool>, h: Handoff) {
    let (jobs, paused) = d.accept(h);
    d.spawn_jobs(stop, jobs);
    if !paused.is_empty() {
        let d2 = d.clone();
        d.state.running.spawn(async move { d2.defer(paused).await });
    }
}

/// The dispatcher task: runs hand-offs as they arrive, and scans the queue when woken (a
/// retry, a bus hand-off, a write that could not hand off), when the earliest due time comes,
/// and at least every `poll_ms`.
async fn dispatch_loop(
    d: Dispatcher,
    mut stop: watch::Receiver<bool>,
    inbox: mpsc::UnboundedReceiver<Handoff>,
) {
    let mut inbox = Some(inbox);
    let poll = Duration::from_millis(d.core.cfg.poll_ms.max(1));
    let mut scan = true;
    // Whether the timer (not new work) triggered the scan.
    let mut idle = true;
    // Whether the last scan found work: the queue is busy.
    let mut busy = false;
    let mut deadline = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        if scan && busy && !idle {
            // New rows while the queue is busy (an ingest burst beyond the hand-off budget
            // wakes the dispatcher once per request): let a few arrive, one scan takes them.
            tokio::time::sleep(SCAN_GAP).await;
        }
        while let Some(h) = inbox.as_mut().and_then(|rx| rx.try_recv().ok()) {
            take_handoff(&d, &stop, h);
        }
        if scan {
            let (jobs, more) = match d.scan_due(idle).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!(error = %e, "leasing deliveries failed");
                    (Vec::new(), false)
                }
            };
            idle = false;
            busy = !jobs.is_empty();
            d.spawn_jobs(&stop, jobs);
            if more {
                continue;
            }
            scan = false;
            // While busy, the next wake comes soon, and the timer's scan looks ahead.
            let wait = match if busy { Ok(None) } else { d.next_wake().await } {
                Ok(Some(t)) => {
                    let ms = t - d.core.clock.now_millis();
                    Duration::from_millis(ms.clamp(1, poll.as_millis() as i64) as u64)
                }
                _ => poll,
            };
            deadline = tokio::time::Instant::now() + wait;
        }
        tokio::select! {
            h = next_handoff(&mut inbox) => match h {
                Some(h) => take_handoff(&d, &stop, h),
                // Replaced by a newer dispatcher: scans only.
                None => inbox = None,
            },
            _ = d.core.wake.notified() => scan = true,
            _ = tokio::time::sleep_until(deadline) => (scan, idle) = (true, true),
            _ = stop.changed() => {}
        }
    }
    // New deliveries are queued due now from here on. Hand-offs not taken yet and jobs no
    // worker started go back to due now once the running invocations are done.
    d.core.inbox.write().take();
    if let Some(rx) = inbox.as_mut() {
        while let Ok(h) = rx.try_recv() {
            let (jobs, paused) = d.accept(h);
            for job in jobs.into_iter().chain(paused.into_iter().map(|(j, _)| j)) {
                d.abandon(job);
            }
        }
    }
    d.state.running.idle().await;
    d.abandon_queued();
    d.release_abandoned().await;
}

/// A dead letter and its key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadLetterEntry {
    /// The delivery id.
    pub id: String,
    /// The record.
    pub letter: DeadLetter,
}

/// Lists up to `limit` dead letters, oldest first (`sluice dlq list`).
pub async fn list_dead_letters(
    store: &dyn Store,
    limit: usize,
) -> Result<Vec<DeadLetterEntry>, AwsError> {
    let rows = store
        .scan(NS_DLQ, KeyRange::all(), limit, false)
        .await
        .map_err(internal)?;
    let mut out = Vec::with_capacity(rows.len());
    for (_, v) in rows {
        let letter: DeadLetter = serde_json::from_slice(&v.value).map_err(internal)?;
        out.push(DeadLetterEntry {
            id: letter.delivery.id.clone(),
            letter,
        });
    }
    Ok(out)
}

/// Moves dead letters back to the queue, due now, with a fresh retry budget and age (attempts
/// 0, first-seen now). `ids`: only these delivery ids; `None`: all. Returns how many moved
/// (`sluice dlq redrive`). Each move is one atomic batch (`DeleteAt` the dead letter, queue the
/// delivery), so a concurrent redrive never duplicates a delivery.
pub async fn redrive(
    store: &dyn Store,
    clock: &dyn Clock,
    ids: Option<&[String]>,
) -> Result<usize, AwsError> {
    let mut moved = 0;
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
        let rows = store
            .scan(NS_DLQ, range, 200, false)
            .await
            .map_err(internal)?;
        let n = rows.len();
        start = rows.last().map(|(k, _)| k.clone());
        for (key, v) in rows {
            let letter: DeadLetter = serde_json::from_slice(&v.value).map_err(internal)?;
            if let Some(ids) = ids
                && !ids.contains(&letter.delivery.id)
            {
                continue;
            }
            let now = clock.now_millis();
            let mut rec = letter.delivery;
            rec.attempt = 0;
            rec.first_seen_ms = now;
            let id = uuid::Uuid::parse_str(&rec.id).map_err(internal)?;
            let batch = Batch::new().delete_at(NS_DLQ, key, v.version).put(
                NS_DUE,
                queue_key(now, &id),
                serde_json::to_vec(&rec).map_err(internal)?,
            );
            match store.apply(batch).await {
                Ok(_) => moved += 1,
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(internal(e)),
            }
        }
        if n < 200 {
            return Ok(moved);
        }
    }
}
