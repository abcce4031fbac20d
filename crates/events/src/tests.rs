//! Service tests through the Rust API: ManualClock, a real SQLite store, a recording target.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;
use serde_json::{Value, json};
use sluice_audit::AuditLog;
use sluice_core::{CallContext, Clock, ManualClock, Principal};
use sluice_store::Store;
use sluice_store::sqlite::{SqliteOptions, SqliteStore};

use crate::model::TargetRecord;
use crate::targets::{Invocation, InvokeError, Target};
use crate::{Core, Events, EventsConfig};

const ACCT: &str = "123456789012";
const REGION: &str = "us-east-1";
const TEST_ARN: &str = "arn:sluice:test:::recorder";

/// Records inputs; fails (retryably) while `fail` > 0, decrementing it.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
    fail: AtomicU32,
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl Target for Recorder {
    fn handles(&self, _core: &Core, arn: &str) -> bool {
        arn.starts_with("arn:sluice:test:")
    }
    fn validate(&self, _core: &Core, _t: &TargetRecord) -> Result<(), String> {
        Ok(())
    }
    async fn invoke(
        &self,
        _core: &Arc<Core>,
        inv: &Invocation<'_>,
    ) -> Result<sluice_store::Batch, InvokeError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
            .is_ok()
        {
            return Err(InvokeError::retryable("ERROR_FROM_TARGET", "HTTP 500"));
        }
        self.seen.lock().push(inv.input.clone());
        Ok(sluice_store::Batch::new())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    clock: ManualClock,
    ev: Events,
    rec: Arc<Recorder>,
}

fn t0() -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_704_067_200).unwrap()
}

async fn open_on(
    store: Arc<dyn Store>,
    clock: &ManualClock,
    cfg: EventsConfig,
) -> (Events, Arc<Recorder>) {
    let c: Arc<dyn sluice_core::Clock> = Arc::new(clock.clone());
    let audit = AuditLog::new(store.clone(), c.clone(), ACCT);
    let ev = Events::open(
        store,
        c,
        audit,
        Arc::new(sluice_kms::NoIdentityPolicies),
        cfg,
    )
    .await
    .unwrap();
    let rec = Arc::new(Recorder::default());
    ev.add_target_kind(rec.clone());
    (ev, rec)
}

fn cfg() -> EventsConfig {
    let mut c = EventsConfig::new(ACCT, REGION);
    c.rng_seed = Some(7);
    c
}

async fn env_with(cfg: EventsConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("db"), SqliteOptions::default()).unwrap());
    let clock = ManualClock::new(t0());
    let (ev, rec) = open_on(store.clone(), &clock, cfg).await;
    Env {
        _dir: dir,
        store,
        clock,
        ev,
        rec,
    }
}

fn root() -> CallContext {
    CallContext::direct(Principal::root(ACCT, None), REGION, "req")
}

async fn call(ev: &Events, op: &str, input: Value) -> Result<Value, sluice_core::AwsError> {
    ev.handle(op, &root(), input).await
}

async fn rule_to_recorder(ev: &Events, bus: &str, name: &str, pattern: &str, extra: Value) {
    call(
        ev,
        "PutRule",
        json!({"Name": name, "EventBusName": bus, "EventPattern": pattern}),
    )
    .await
    .unwrap();
    let mut t = json!({"Id": "rec", "Arn": TEST_ARN});
    if let (Value::Object(m), Value::Object(x)) = (&mut t, extra) {
        m.extend(x);
    }
    let out = call(
        ev,
        "PutTargets",
        json!({"Rule": name, "EventBusName": bus, "Targets": [t]}),
    )
    .await
    .unwrap();
    assert_eq!(out["FailedEntryCount"], 0, "{out}");
}

async fn put(ev: &Events, bus: &str, detail: Value) -> Value {
    call(
        ev,
        "PutEvents",
        json!({"Entries": [{"Source": "shop", "DetailType": "Order", "Detail": detail.to_string(), "EventBusName": bus}]}),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn matched_events_reach_the_target_transformed() {
    let e = env_with(cfg()).await;
    rule_to_recorder(
        &e.ev,
        "default",
        "big",
        r#"{"detail":{"n":[{"numeric":[">",10]}]}}"#,
        json!({"InputTransformer": {"InputPathsMap": {"n": "$.detail.n", "t": "$.detail-type"},
               "InputTemplate": "{\"n\": <n>, \"s\": \"<t> of <n>\", \"r\": <aws.events.rule-name>}"}}),
    )
    .await;
    let r = put(&e.ev, "default", json!({"n": 5})).await;
    assert_eq!(r["FailedEntryCount"], 0);
    let r = put(&e.ev, "default", json!({"n": 50})).await;
    assert!(r["Entries"][0]["EventId"].is_string());
    assert_eq!(e.ev.metrics().await.queue_depth, 1);
    assert_eq!(e.ev.dispatcher().run_once().await.unwrap(), 1);
    let seen = e.rec.seen.lock().clone();
    assert_eq!(
        seen,
        vec![r#"{"n": 50, "s": "Order of 50", "r": "big"}"#.to_string()]
    );
    let m = e.ev.metrics().await;
    assert_eq!(
        (
            m.matched_events,
            m.triggered_rules,
            m.invocations,
            m.queue_depth
        ),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn bus_to_bus_delivery_is_handed_over_in_the_ack_batch() {
    let e = env_with(cfg()).await;
    call(&e.ev, "CreateEventBus", json!({"Name": "second"}))
        .await
        .unwrap();
    call(
        &e.ev,
        "PutRule",
        json!({"Name": "fwd", "EventPattern": r#"{"source":["shop"]}"#}),
    )
    .await
    .unwrap();
    let bus_arn = format!("arn:aws:events:{REGION}:{ACCT}:event-bus/second");
    let out = call(
        &e.ev,
        "PutTargets",
        json!({"Rule": "fwd", "Targets": [{"Id": "b", "Arn": bus_arn}]}),
    )
    .await
    .unwrap();
    assert_eq!(out["FailedEntryCount"], 0);
    rule_to_recorder(
        &e.ev,
        "second",
        "sink",
        r#"{"detail":{"k":["v"]}}"#,
        json!({"InputPath": "$.detail"}),
    )
    .await;
    put(&e.ev, "default", json!({"k": "v"})).await;
    let d = e.ev.dispatcher();
    assert_eq!(d.run_once().await.unwrap(), 1); // default -> second
    assert_eq!(d.run_once().await.unwrap(), 1); // second -> recorder
    assert_eq!(*e.rec.seen.lock(), vec![r#"{"k":"v"}"#.to_string()]);
    // A deleted target bus is a permanent failure: straight to the dead letters.
    call(&e.ev, "DeleteEventBus", json!({"Name": "second"}))
        .await
        .unwrap();
    put(&e.ev, "default", json!({"k": "v"})).await;
    assert_eq!(d.run_once().await.unwrap(), 1);
    let dl = crate::list_dead_letters(&*e.store, 10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].letter.error_code, "NO_RESOURCE");
    assert_eq!(dl[0].letter.delivery.attempt, 1);
    assert_eq!(dl[0].letter.exhausted, "");
}

#[tokio::test]
async fn retries_back_off_then_dead_letter_then_redrive() {
    let e = env_with(cfg()).await;
    rule_to_recorder(
        &e.ev,
        "default",
        "r",
        r#"{"source":["shop"]}"#,
        json!({"RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600}}),
    )
    .await;
    e.rec.fail.store(100, Ordering::SeqCst);
    put(&e.ev, "default", json!({})).await;
    let d = e.ev.dispatcher();
    assert_eq!(d.run_once().await.unwrap(), 1);
    // Not due again until the backoff (0.5 s .. 1 s) has passed.
    assert_eq!(d.run_once().await.unwrap(), 0);
    let next = d.next_due().await.unwrap().unwrap();
    let now = e.clock.now_millis_for_test();
    assert!((now + 500..=now + 1000).contains(&next), "{}", next - now);
    e.clock.advance_millis(1000);
    assert_eq!(d.run_once().await.unwrap(), 1);
    let next = d.next_due().await.unwrap().unwrap();
    let now = e.clock.now_millis_for_test();
    assert!((now + 1000..=now + 2000).contains(&next), "{}", next - now);
    e.clock.advance_millis(2000);
    assert_eq!(d.run_once().await.unwrap(), 1);
    assert_eq!(e.rec.calls.load(Ordering::SeqCst), 3);
    let dl = crate::list_dead_letters(&*e.store, 10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].letter.exhausted, "MaximumRetryAttempts");
    assert_eq!(dl[0].letter.delivery.attempt, 3);
    let m = e.ev.metrics().await;
    assert_eq!(
        (
            m.retries,
            m.dead_lettered,
            m.failed_invocations,
            m.queue_depth
        ),
        (2, 1, 3, 0)
    );

    e.rec.fail.store(0, Ordering::SeqCst);
    let clock: &dyn sluice_core::Clock = &e.clock;
    assert_eq!(crate::redrive(&*e.store, clock, None).await.unwrap(), 1);
    assert!(
        crate::list_dead_letters(&*e.store, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(d.run_once().await.unwrap(), 1);
    assert_eq!(e.rec.seen.lock().len(), 1);
}

#[tokio::test]
async fn event_age_limit_dead_letters_without_invoking() {
    let e = env_with(cfg()).await;
    rule_to_recorder(
        &e.ev,
        "default",
        "r",
        r#"{"source":["shop"]}"#,
        json!({"RetryPolicy": {"MaximumEventAgeInSeconds": 60}}),
    )
    .await;
    e.rec.fail.store(1, Ordering::SeqCst);
    put(&e.ev, "default", json!({})).await;
    let d = e.ev.dispatcher();
    assert_eq!(d.run_once().await.unwrap(), 1);
    e.clock.advance_millis(61_000);
    assert_eq!(d.run_once().await.unwrap(), 1);
    assert_eq!(e.rec.calls.load(Ordering::SeqCst), 1);
    let dl = crate::list_dead_letters(&*e.store, 10).await.unwrap();
    assert_eq!(dl[0].letter.exhausted, "MaximumEventAgeInSeconds");
}

#[tokio::test]
async fn open_breaker_defers_without_spending_attempts() {
    let mut c = cfg();
    c.breaker_threshold = 2;
    c.breaker_cooldown_ms = 10_000;
    c.retry_base_ms = 10;
    c.retry_cap_ms = 10;
    let e = env_with(c).await;
    rule_to_recorder(&e.ev, "default", "r", r#"{"source":["shop"]}"#, json!({})).await;
    for _ in 0..3 {
        put(&e.ev, "default", json!({})).await;
    }
    let d = e.ev.dispatcher();
    // First pass: all three are leased and fail; the second failure opens the breaker (the
    // third, already leased, does not extend it).
    e.rec.fail.store(3, Ordering::SeqCst);
    assert_eq!(d.run_once().await.unwrap(), 3);
    assert_eq!(e.rec.calls.load(Ordering::SeqCst), 3);
    // Backoff elapsed, but the breaker is open: nothing is invoked, deliveries move to its
    // reopening time with their attempt counts unchanged.
    e.clock.advance_millis(100);
    assert_eq!(d.run_once().await.unwrap(), 0);
    assert_eq!(e.rec.calls.load(Ordering::SeqCst), 3);
    let rows = due_rows(&*e.store).await;
    assert_eq!(rows.len(), 3);
    for (k, r) in &rows {
        assert_eq!(r.attempt, 1);
        assert!(crate::model::key_due(k) >= e.clock.now_millis_for_test() + 9_000);
    }
    e.clock.advance_millis(10_000);
    assert_eq!(d.run_once().await.unwrap(), 3);
    assert_eq!(e.rec.seen.lock().len(), 3);
}

#[tokio::test]
async fn expired_lease_is_invoked_again_after_a_crash() {
    let e = env_with(cfg()).await;
    rule_to_recorder(&e.ev, "default", "r", r#"{"source":["shop"]}"#, json!({})).await;
    put(&e.ev, "default", json!({"x": 1})).await;
    // A dispatcher leases the delivery and "crashes" before invoking.
    let jobs = e.ev.dispatcher().lease_due_for_test().await;
    assert_eq!(jobs, 1);
    // A fresh service on the same store (restart): nothing due until the lease runs out.
    let (ev2, rec2) = open_on(e.store.clone(), &e.clock, cfg()).await;
    let d2 = ev2.dispatcher();
    assert_eq!(d2.run_once().await.unwrap(), 0);
    e.clock.advance_millis(30_001);
    assert_eq!(d2.run_once().await.unwrap(), 1);
    assert_eq!(rec2.seen.lock().len(), 1);
    // Rules survived the restart.
    assert_eq!(put(&ev2, "default", json!({})).await["FailedEntryCount"], 0);
    assert_eq!(d2.run_once().await.unwrap(), 1);
}

#[tokio::test]
async fn a_job_outliving_its_lease_is_extended_not_run_twice() {
    let e = env_with(cfg()).await;
    rule_to_recorder(&e.ev, "default", "r", r#"{"source":["shop"]}"#, json!({})).await;
    put(&e.ev, "default", json!({})).await;
    let d = e.ev.dispatcher();
    let mut jobs = d.lease_due().await.unwrap();
    assert_eq!(jobs.len(), 1);
    // The job waits (a slow target) past its lease: the next scan only extends the lease.
    e.clock.advance_millis(30_001);
    assert!(d.lease_due().await.unwrap().is_empty());
    d.run_job(jobs.pop().unwrap()).await;
    assert_eq!(e.rec.calls.load(Ordering::SeqCst), 1);
    assert_eq!(e.ev.metrics().await.queue_depth, 0);
    e.clock.advance_millis(60_000);
    assert_eq!(d.run_once().await.unwrap(), 0);
    assert_eq!(e.rec.calls.load(Ordering::SeqCst), 1);
}

/// A target whose invocations wait for a permit.
#[derive(Debug)]
struct Gate {
    entered: AtomicU32,
    release: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl Target for Gate {
    fn handles(&self, _core: &Core, arn: &str) -> bool {
        arn.starts_with("arn:sluice:slow:")
    }
    fn validate(&self, _core: &Core, _t: &TargetRecord) -> Result<(), String> {
        Ok(())
    }
    async fn invoke(
        &self,
        _core: &Arc<Core>,
        _inv: &Invocation<'_>,
    ) -> Result<sluice_store::Batch, InvokeError> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.release.acquire().await.unwrap().forget();
        Ok(sluice_store::Batch::new())
    }
}

async fn due_rows(store: &dyn Store) -> Vec<(Vec<u8>, crate::model::DeliveryRecord)> {
    store
        .scan(
            crate::model::NS_DUE,
            sluice_store::KeyRange::all(),
            100,
            false,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_slice(&v.value).unwrap()))
        .collect()
}

/// Writes `rec` under id `id` to the queue, due at `due_ms` (as another writer would).
async fn queue_row(
    store: &dyn Store,
    mut rec: crate::model::DeliveryRecord,
    id: uuid::Uuid,
    due_ms: i64,
) {
    rec.id = id.to_string();
    store
        .apply(sluice_store::Batch::new().put(
            crate::model::NS_DUE,
            crate::model::queue_key(due_ms, &id),
            serde_json::to_vec(&rec).unwrap(),
        ))
        .await
        .unwrap();
}

/// A [`Gate`] letting `permits` invocations through, registered as a target kind of `ev`.
fn add_gate(ev: &Events, permits: usize) -> Arc<Gate> {
    let gate = Arc::new(Gate {
        entered: AtomicU32::new(0),
        release: tokio::sync::Semaphore::new(permits),
    });
    ev.add_target_kind(gate.clone());
    gate
}

/// A rule `name` on the default bus for `shop` events, targeting the gate.
async fn rule_to_gate(ev: &Events, name: &str) {
    call(
        ev,
        "PutRule",
        json!({"Name": name, "EventPattern": r#"{"source":["shop"]}"#}),
    )
    .await
    .unwrap();
    call(
        ev,
        "PutTargets",
        json!({"Rule": name, "Targets": [{"Id": "g", "Arn": "arn:sluice:slow:::g"}]}),
    )
    .await
    .unwrap();
}

async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_keep_a_slow_target_from_delaying_others_and_stop_gracefully() {
    let mut c = cfg();
    c.per_target_concurrency = 1;
    c.poll_ms = 20;
    let e = env_with(c).await;
    let gate = add_gate(&e.ev, 0);
    rule_to_recorder(
        &e.ev,
        "default",
        "fast",
        r#"{"source":["shop"]}"#,
        json!({}),
    )
    .await;
    rule_to_gate(&e.ev, "slow").await;
    let workers = e.ev.start_workers();
    for _ in 0..3 {
        put(&e.ev, "default", json!({})).await;
    }
    // The fast target gets all three while the slow one holds its single slot.
    until(|| e.rec.seen.lock().len() == 3).await;
    assert_eq!(gate.entered.load(Ordering::SeqCst), 1);
    gate.release.add_permits(3);
    until(|| gate.entered.load(Ordering::SeqCst) == 3).await;
    for _ in 0..500 {
        if e.ev.metrics().await.queue_depth == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(e.ev.metrics().await.queue_depth, 0);
    workers.stop().await;
    assert_eq!(e.ev.metrics().await.invocations, 6);
}

#[tokio::test]
async fn scheduled_rule_fires_once_per_period() {
    let e = env_with(cfg()).await;
    call(
        &e.ev,
        "PutRule",
        json!({"Name": "tick", "ScheduleExpression": "rate(1 minute)"}),
    )
    .await
    .unwrap();
    call(
        &e.ev,
        "PutTargets",
        json!({"Rule": "tick", "Targets": [{"Id": "t", "Arn": TEST_ARN}]}),
    )
    .await
    .unwrap();
    let core = e.ev.core.clone();
    assert_eq!(crate::schedule::tick(&core).await.unwrap(), 0);
    e.clock.advance_millis(60_000);
    assert_eq!(crate::schedule::tick(&core).await.unwrap(), 1);
    assert_eq!(crate::schedule::tick(&core).await.unwrap(), 0);
    e.clock.advance_millis(3 * 60_000 + 5_000);
    assert_eq!(crate::schedule::tick(&core).await.unwrap(), 1);
    let d = e.ev.dispatcher();
    assert_eq!(d.run_once().await.unwrap(), 2);
    let seen = e.rec.seen.lock().clone();
    let ev: Value = serde_json::from_str(&seen[1]).unwrap();
    assert_eq!(ev["source"], "aws.events");
    assert_eq!(ev["detail-type"], "Scheduled Event");
    assert_eq!(ev["time"], "2024-01-01T00:04:00Z");
    assert_eq!(
        ev["resources"][0],
        format!("arn:aws:events:{REGION}:{ACCT}:rule/tick")
    );
    // The last firing survives a restart: no extra firing.
    let (ev2, _) = open_on(e.store.clone(), &e.clock, cfg()).await;
    assert_eq!(crate::schedule::tick(&ev2.core).await.unwrap(), 0);
}

#[tokio::test]
async fn aws_sources_need_the_operator_switch() {
    let e = env_with(cfg()).await;
    let out = call(
        &e.ev,
        "PutEvents",
        json!({"Entries": [
            {"Source": "aws.ec2", "DetailType": "x", "Detail": "{}"},
            {"Source": "mine", "DetailType": "x", "Detail": "{}"},
            {"Source": "mine", "DetailType": "x", "Detail": "[1]"},
            {"Source": "mine", "DetailType": "x"}
        ]}),
    )
    .await
    .unwrap();
    assert_eq!(out["FailedEntryCount"], 3);
    assert_eq!(
        out["Entries"][0]["ErrorCode"],
        "NotAuthorizedForSourceException"
    );
    assert!(out["Entries"][1]["EventId"].is_string());
    assert_eq!(out["Entries"][2]["ErrorCode"], "MalformedDetail");
    assert_eq!(out["Entries"][3]["ErrorCode"], "InvalidArgument");
    let mut c = cfg();
    c.allow_aws_sources = true;
    let e2 = env_with(c).await;
    let out = call(
        &e2.ev,
        "PutEvents",
        json!({"Entries": [{"Source": "aws.ec2", "DetailType": "x", "Detail": "{}"}]}),
    )
    .await
    .unwrap();
    assert_eq!(out["FailedEntryCount"], 0);
}

trait NowForTest {
    fn now_millis_for_test(&self) -> i64;
}

impl NowForTest for ManualClock {
    fn now_millis_for_test(&self) -> i64 {
        sluice_core::Clock::now_millis(self)
    }
}

#[tokio::test]
async fn the_event_envelope_escapes_what_json_needs() {
    let e = env_with(cfg()).await;
    rule_to_recorder(&e.ev, "default", "all", r#"{"source":["s\"q"]}"#, json!({})).await;
    let detail_type = "quote \" backslash \\ newline \n tab \t bell \u{7} é ✓";
    let resource = "arn:x:\"r\"\\\u{1f}";
    let out = call(
        &e.ev,
        "PutEvents",
        json!({"Entries": [{"Source": "s\"q", "DetailType": detail_type,
            "Detail": "{\"k\": [1, \"\\u0001\"]}", "Resources": [resource]}]}),
    )
    .await
    .unwrap();
    assert_eq!(out["FailedEntryCount"], 0, "{out}");
    assert_eq!(e.ev.dispatcher().run_once().await.unwrap(), 1);
    let seen = e.rec.seen.lock().clone();
    let ev: Value = serde_json::from_str(&seen[0]).unwrap();
    assert_eq!(ev["id"], out["Entries"][0]["EventId"]);
    assert_eq!(ev["detail-type"], detail_type);
    assert_eq!(ev["source"], "s\"q");
    assert_eq!(ev["account"], ACCT);
    assert_eq!(ev["region"], REGION);
    assert_eq!(ev["time"], "2024-01-01T00:00:00Z");
    assert_eq!(ev["resources"], json!([resource]));
    assert_eq!(ev["detail"], json!({"k": [1, "\u{1}"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_off_delivery_runs_after_its_lease_if_its_dispatcher_dies() {
    // The first dispatcher never scans again during the test (it would extend its lease, as
    // a live dispatcher should).
    let mut c = cfg();
    c.poll_ms = 600_000;
    let e = env_with(c).await;
    let gate = add_gate(&e.ev, 0);
    rule_to_gate(&e.ev, "stuck").await;
    // The running dispatcher takes the delivery in memory and hangs in the target.
    let _workers = e.ev.start_workers();
    put(&e.ev, "default", json!({})).await;
    until(|| gate.entered.load(Ordering::SeqCst) == 1).await;
    // A second process on the same store (the first one "died"): nothing is due before the
    // lease runs out, then the delivery runs again.
    let (ev2, _) = open_on(e.store.clone(), &e.clock, cfg()).await;
    let open_gate = add_gate(&ev2, 1);
    let d2 = ev2.dispatcher();
    assert_eq!(d2.run_once().await.unwrap(), 0);
    e.clock.advance_millis(cfg().lease_ms + 1);
    assert_eq!(d2.run_once().await.unwrap(), 1);
    assert_eq!(open_gate.entered.load(Ordering::SeqCst), 1);
    assert_eq!(ev2.metrics().await.queue_depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_workers_puts_unstarted_deliveries_back_due_now() {
    let mut c = cfg();
    c.per_target_concurrency = 1;
    let e = env_with(c).await;
    let gate = add_gate(&e.ev, 0);
    rule_to_gate(&e.ev, "one-at-a-time").await;
    let workers = e.ev.start_workers();
    put(&e.ev, "default", json!({"n": 1})).await;
    put(&e.ev, "default", json!({"n": 2})).await;
    // One delivery is in the target, the other waits for the target's only slot.
    until(|| gate.entered.load(Ordering::SeqCst) == 1).await;
    let stopping = tokio::spawn(workers.stop());
    // Let the waiting job see the stop before the slot frees up.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    gate.release.add_permits(1);
    stopping.await.unwrap();
    assert_eq!(gate.entered.load(Ordering::SeqCst), 1);
    // After a restart the unstarted delivery is due at once (no lease to wait out), with its
    // attempt given back.
    let (ev2, _) = open_on(e.store.clone(), &e.clock, cfg()).await;
    let open_gate = add_gate(&ev2, 1);
    let due = due_rows(&*e.store).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1.attempt, 0);
    assert_eq!(ev2.dispatcher().run_once().await.unwrap(), 1);
    assert_eq!(open_gate.entered.load(Ordering::SeqCst), 1);
    assert_eq!(ev2.metrics().await.queue_depth, 0);
}

fn sole() -> EventsConfig {
    let mut c = cfg();
    c.sole_dispatcher = true;
    c
}

#[tokio::test]
async fn a_sole_dispatcher_leases_in_memory_and_a_restart_runs_at_once() {
    let e = env_with(sole()).await;
    rule_to_recorder(&e.ev, "default", "r", r#"{"source":["shop"]}"#, json!({})).await;
    put(&e.ev, "default", json!({"x": 1})).await;
    let before = due_rows(&*e.store).await;
    let d = e.ev.dispatcher();
    let mut jobs = d.lease_due().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].rec.attempt, 1);
    // Nothing was written: the row is still due now, with no attempt counted.
    assert_eq!(due_rows(&*e.store).await, before);
    assert_eq!(before[0].1.attempt, 0);
    // Held in memory, it is not leased again, however long it waits (nothing expires).
    assert!(d.lease_due().await.unwrap().is_empty());
    e.clock.advance_millis(sole().lease_ms * 3);
    assert!(d.lease_due().await.unwrap().is_empty());

    // The process "crashes" with the job unrun: after a restart it is due at once.
    let (ev2, rec2) = open_on(e.store.clone(), &e.clock, sole()).await;
    assert_eq!(ev2.dispatcher().run_once().await.unwrap(), 1);
    assert_eq!(rec2.seen.lock().len(), 1);
    assert_eq!(ev2.metrics().await.queue_depth, 0);
    // The first process's outcome comes too late: its row is gone, so it is dropped.
    d.run_job(jobs.pop().unwrap()).await;
    assert_eq!(e.rec.calls.load(Ordering::SeqCst), 1);
    assert_eq!(ev2.metrics().await.queue_depth, 0);
}

#[tokio::test]
async fn a_sole_dispatcher_retries_with_the_attempt_counted_in_the_retry() {
    let e = env_with(sole()).await;
    rule_to_recorder(&e.ev, "default", "r", r#"{"source":["shop"]}"#, json!({})).await;
    e.rec.fail.store(2, Ordering::SeqCst);
    put(&e.ev, "default", json!({})).await;
    let d = e.ev.dispatcher();
    assert_eq!(d.run_once().await.unwrap(), 1);
    let rows = due_rows(&*e.store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.attempt, 1);
    assert_eq!(d.run_once().await.unwrap(), 0, "the retry is not due yet");
    e.clock.advance_millis(1_000);
    assert_eq!(d.run_once().await.unwrap(), 1);
    assert_eq!(due_rows(&*e.store).await[0].1.attempt, 2);
    e.clock.advance_millis(2_000);
    assert_eq!(d.run_once().await.unwrap(), 1);
    assert_eq!(e.rec.seen.lock().len(), 1);
    assert!(due_rows(&*e.store).await.is_empty());
}

/// A store whose queue scans, once armed, read their rows and then wait for `go` before
/// answering: a scan that returns rows older than what happened meanwhile.
#[derive(Debug)]
struct SlowScans {
    inner: Arc<dyn Store>,
    armed: std::sync::atomic::AtomicBool,
    read: tokio::sync::Notify,
    go: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl Store for SlowScans {
    async fn get(
        &self,
        ns: &str,
        key: &[u8],
    ) -> Result<Option<sluice_store::Versioned>, sluice_store::StoreError> {
        self.inner.get(ns, key).await
    }
    async fn scan(
        &self,
        ns: &str,
        range: sluice_store::KeyRange,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, sluice_store::Versioned)>, sluice_store::StoreError> {
        let rows = self.inner.scan(ns, range, limit, reverse).await;
        if ns == crate::model::NS_DUE && self.armed.swap(false, Ordering::SeqCst) {
            self.read.notify_one();
            self.go.acquire().await.unwrap().forget();
        }
        rows
    }
    async fn apply(&self, batch: sluice_store::Batch) -> Result<u64, sluice_store::StoreError> {
        self.inner.apply(batch).await
    }
    async fn close(&self) -> Result<(), sluice_store::StoreError> {
        self.inner.close().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_dispatcher_does_not_lease_a_delivery_completed_while_it_scanned() {
    let e = env_with(sole()).await;
    let slow = Arc::new(SlowScans {
        inner: e.store.clone(),
        armed: false.into(),
        read: tokio::sync::Notify::new(),
        go: tokio::sync::Semaphore::new(0),
    });
    let (ev, rec) = open_on(slow.clone(), &e.clock, sole()).await;
    rule_to_recorder(&ev, "default", "r", r#"{"source":["shop"]}"#, json!({})).await;
    put(&ev, "default", json!({})).await;
    let d = ev.dispatcher();
    let mut jobs = d.lease_due().await.unwrap();
    assert_eq!(jobs.len(), 1);
    // A scan reads the row (from the head of the queue), then the job completes and deletes
    // it before the scan looks at what it read.
    e.clock.advance_millis(sole().poll_ms as i64 * 100);
    slow.armed.store(true, Ordering::SeqCst);
    let read = slow.read.notified();
    let d2 = d.clone();
    let scan = tokio::spawn(async move { d2.scan_due(true).await.unwrap().0.len() });
    read.await;
    d.run_job(jobs.pop().unwrap()).await;
    assert!(due_rows(&*e.store).await.is_empty());
    slow.go.add_permits(1);
    assert_eq!(
        scan.await.unwrap(),
        0,
        "a completed delivery was leased again"
    );
    assert_eq!(rec.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_sole_dispatcher_finds_rows_queued_behind_its_cursor() {
    let e = env_with(sole()).await;
    rule_to_recorder(&e.ev, "default", "r", r#"{"source":["shop"]}"#, json!({})).await;
    put(&e.ev, "default", json!({"n": 1})).await;
    let d = e.ev.dispatcher();
    let held = d.lease_due().await.unwrap();
    assert_eq!(held.len(), 1);
    // Another process (`sluice dlq redrive`) queues a row due before the cursor, and says
    // nothing: scans for new work resume after the cursor and miss it...
    let rec = due_rows(&*e.store).await[0].1.clone();
    let id = uuid::Uuid::nil();
    let now = e.clock.now_millis();
    queue_row(&*e.store, rec.clone(), id, now - 1).await;
    assert!(d.scan_due(false).await.unwrap().0.is_empty());
    // ...and the timer's scan, once enough polls passed, starts over from the head.
    e.clock
        .advance_millis(sole().poll_ms as i64 * crate::dispatch::WRAP_POLLS);
    let jobs = d.scan_due(true).await.unwrap().0;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].rec.id, id.to_string());
    // A row this process queues behind the cursor is found by the next scan.
    let id2 = uuid::Uuid::from_u128(2);
    queue_row(&*e.store, rec, id2, now - 2).await;
    e.ev.core.due_written(now - 2);
    let jobs = d.scan_due(false).await.unwrap().0;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].rec.id, id2.to_string());
}

/// A burst of 200 events through a running dispatcher, each delivered exactly once. With a
/// hand-off budget of two small deliveries most go through the queue and the scan; with the
/// default budget and a 1 ms poll, the scan runs all the time beside the hand-offs.
async fn burst(sole_dispatcher: bool, budget: Option<usize>) {
    let mut c = cfg();
    c.sole_dispatcher = sole_dispatcher;
    match budget {
        Some(b) => c.handoff_budget_bytes = b,
        None => c.poll_ms = 1,
    }
    let e = env_with(c).await;
    rule_to_recorder(&e.ev, "default", "r", r#"{"source":["shop"]}"#, json!({})).await;
    let workers = e.ev.start_workers();
    let puts = (0..20).map(|r| {
        let ev = e.ev.clone();
        async move {
            let entries: Vec<Value> = (0..10)
                .map(|i| json!({"Source": "shop", "DetailType": "Order", "Detail": json!({"n": r * 10 + i}).to_string()}))
                .collect();
            let out = call(&ev, "PutEvents", json!({ "Entries": entries })).await.unwrap();
            assert_eq!(out["FailedEntryCount"], 0);
        }
    });
    futures::future::join_all(puts).await;
    until(|| e.rec.seen.lock().len() >= 200).await;
    workers.stop().await;
    let mut seen: Vec<i64> = e
        .rec
        .seen
        .lock()
        .iter()
        .map(|s| {
            serde_json::from_str::<Value>(s).unwrap()["detail"]["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
    assert_eq!(e.ev.metrics().await.queue_depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_handoff_budget_runs_each_delivery_once_sole() {
    burst(true, Some(3 * 1024)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_dispatchers_scan_never_takes_its_hand_offs() {
    burst(true, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_handoff_budget_runs_each_delivery_once_stored_leases() {
    burst(false, Some(3 * 1024)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_dispatchers_hand_off_runs_at_once_after_a_crash() {
    let mut c = sole();
    c.poll_ms = 600_000;
    let e = env_with(c).await;
    let gate = add_gate(&e.ev, 0);
    rule_to_gate(&e.ev, "stuck").await;
    // The running dispatcher takes the delivery in memory and hangs in the target; its row
    // is due now with no attempt counted.
    let _workers = e.ev.start_workers();
    put(&e.ev, "default", json!({})).await;
    until(|| gate.entered.load(Ordering::SeqCst) == 1).await;
    let rows = due_rows(&*e.store).await;
    assert_eq!(rows.len(), 1);
    assert!(crate::model::key_due(&rows[0].0) <= e.clock.now_millis());
    assert_eq!(rows[0].1.attempt, 0);
    // A second process on the same store (the first one "died"): due at once, no lease.
    let (ev2, _) = open_on(e.store.clone(), &e.clock, sole()).await;
    let open_gate = add_gate(&ev2, 1);
    assert_eq!(ev2.dispatcher().run_once().await.unwrap(), 1);
    assert_eq!(open_gate.entered.load(Ordering::SeqCst), 1);
    assert_eq!(ev2.metrics().await.queue_depth, 0);
}
