//! EventBridge through the official AWS SDK for Rust: the API and its errors, patterns via
//! rules, input transformation, bus-to-bus delivery, dead letters, bus resource policies, and a
//! crash test of the real binary (SIGKILL under PutEvents load; every acknowledged event is
//! delivered at least once after restart).
//!
//! Deliveries are observed through the dead-letter store: a rule whose target is an event bus
//! that has been deleted dead-letters every delivery at once (`NO_RESOURCE`, as AWS does for a
//! missing target), recording the delivered event, the rule and the bus it came through.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::ProvideErrorMetadata;
use aws_sdk_eventbridge::types::{
    DeadLetterConfig, InputTransformer, PutEventsRequestEntry, RetryPolicy, RuleState, Tag, Target,
};
use common::*;
use serde_json::{Value, json};

fn bus_arn(name: &str) -> String {
    format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{name}")
}

fn entry(bus: &str, source: &str, detail: Value) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(source)
        .detail_type("Test Event")
        .detail(detail.to_string())
        .build()
}

fn target(id: &str, arn: &str) -> Target {
    Target::builder().id(id).arn(arn).build().unwrap()
}

/// A bus that existed and was deleted: deliveries to it are dead-lettered at once.
async fn dead_bus(c: &Client, name: &str) -> String {
    c.create_event_bus().name(name).send().await.unwrap();
    c.delete_event_bus().name(name).send().await.unwrap();
    bus_arn(name)
}

async fn wait_dead_letters(
    ev: &sluice_events::Events,
    n: usize,
) -> Vec<sluice_events::DeadLetterEntry> {
    for _ in 0..400 {
        let dl = ev.dead_letters(10_000).await.unwrap();
        if dl.len() >= n {
            return dl;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} dead letters arrived");
}

#[tokio::test]
async fn buses_rules_targets_and_their_errors() {
    let s = TestServer::start().await;
    let c = s.events().await;

    let buses = c.list_event_buses().send().await.unwrap();
    let names: Vec<&str> = buses
        .event_buses()
        .iter()
        .filter_map(|b| b.name())
        .collect();
    assert_eq!(names, vec!["default"]);
    let arn = c
        .create_event_bus()
        .name("orders")
        .description("d")
        .send()
        .await
        .unwrap();
    assert_eq!(arn.event_bus_arn(), Some(bus_arn("orders").as_str()));
    let e = c
        .create_event_bus()
        .name("orders")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceAlreadyExistsException"));
    let e = c
        .describe_event_bus()
        .name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    let e = c
        .delete_event_bus()
        .name("default")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"));
    c.update_event_bus()
        .name("orders")
        .description("new")
        .send()
        .await
        .unwrap();
    let d = c
        .describe_event_bus()
        .name(bus_arn("orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(d.description(), Some("new"));

    // Rules.
    let e = c
        .put_rule()
        .name("bad")
        .event_pattern(r#"{"detail":{"n":[{"numeric":[">"]}]}}"#)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidEventPatternException"));
    assert!(
        e.message().unwrap().contains("detail.n"),
        "{:?}",
        e.message()
    );
    let e = c.put_rule().name("none").send().await.unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"));
    let e = c
        .put_rule()
        .name("r")
        .event_bus_name("nope")
        .event_pattern(r#"{"source":["a"]}"#)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    let e = c
        .put_rule()
        .name("sched")
        .schedule_expression("rate(1 minutes)")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"));
    c.put_rule()
        .name("sched")
        .schedule_expression("cron(0 12 ? * MON-FRI *)")
        .send()
        .await
        .unwrap();
    let r = c
        .put_rule()
        .name("r1")
        .event_bus_name("orders")
        .event_pattern(r#"{"source":["shop"]}"#)
        .description("first")
        .tags(Tag::builder().key("team").value("a").build().unwrap())
        .send()
        .await
        .unwrap();
    let rule_arn = format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/orders/r1");
    assert_eq!(r.rule_arn(), Some(rule_arn.as_str()));
    let d = c
        .describe_rule()
        .name("r1")
        .event_bus_name("orders")
        .send()
        .await
        .unwrap();
    assert_eq!(d.state(), Some(&RuleState::Enabled));
    assert_eq!(d.event_pattern(), Some(r#"{"source":["shop"]}"#));
    c.disable_rule()
        .name("r1")
        .event_bus_name("orders")
        .send()
        .await
        .unwrap();
    let d = c
        .describe_rule()
        .name("r1")
        .event_bus_name("orders")
        .send()
        .await
        .unwrap();
    assert_eq!(d.state(), Some(&RuleState::Disabled));
    c.enable_rule()
        .name("r1")
        .event_bus_name("orders")
        .send()
        .await
        .unwrap();
    let e = c.describe_rule().name("zz").send().await.unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    let rules = c
        .list_rules()
        .event_bus_name("orders")
        .send()
        .await
        .unwrap();
    assert_eq!(rules.rules().len(), 1);

    // Targets.
    let out = c
        .put_targets()
        .rule("r1")
        .event_bus_name("orders")
        .targets(target("ok", &bus_arn("default")))
        .targets(target(
            "lambda",
            "arn:aws:lambda:us-east-1:123456789012:function:f",
        ))
        .targets(
            Target::builder()
                .id("dlq")
                .arn(bus_arn("default"))
                .dead_letter_config(
                    DeadLetterConfig::builder()
                        .arn("arn:aws:sqs:us-east-1:123456789012:q")
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .targets(
            Target::builder()
                .id("tpl")
                .arn(bus_arn("default"))
                .input_transformer(
                    InputTransformer::builder()
                        .input_template("{\"a\": <undefined>}")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 3);
    let failed: Vec<(&str, &str)> = out
        .failed_entries()
        .iter()
        .map(|f| (f.target_id().unwrap(), f.error_message().unwrap()))
        .collect();
    assert_eq!(failed[0].0, "lambda");
    assert!(
        failed[0].1.contains("not a kind of target"),
        "{}",
        failed[0].1
    );
    assert_eq!(failed[1].0, "dlq");
    assert!(failed[1].1.contains("SQS"), "{}", failed[1].1);
    assert_eq!(failed[2].0, "tpl");
    let mut req = c.put_targets().rule("r1").event_bus_name("orders");
    for i in 0..5 {
        req = req.targets(target(&format!("t{i}"), &bus_arn("default")));
    }
    let e = req.send().await.unwrap_err();
    assert_eq!(e.code(), Some("LimitExceededException"));
    let t = c
        .list_targets_by_rule()
        .rule("r1")
        .event_bus_name("orders")
        .send()
        .await
        .unwrap();
    assert_eq!(t.targets().len(), 1);
    let names = c
        .list_rule_names_by_target()
        .target_arn(bus_arn("default"))
        .event_bus_name("orders")
        .send()
        .await
        .unwrap();
    assert_eq!(names.rule_names(), ["r1".to_string()]);
    let e = c
        .delete_rule()
        .name("r1")
        .event_bus_name("orders")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"));

    // Tags.
    let tags = c
        .list_tags_for_resource()
        .resource_arn(&rule_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags().len(), 1);
    c.tag_resource()
        .resource_arn(bus_arn("orders"))
        .tags(Tag::builder().key("env").value("test").build().unwrap())
        .send()
        .await
        .unwrap();
    c.untag_resource()
        .resource_arn(&rule_arn)
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    let tags = c
        .list_tags_for_resource()
        .resource_arn(&rule_arn)
        .send()
        .await
        .unwrap();
    assert!(tags.tags().is_empty());
    let tags = c
        .list_tags_for_resource()
        .resource_arn(bus_arn("orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags()[0].key(), "env");

    c.remove_targets()
        .rule("r1")
        .event_bus_name("orders")
        .ids("ok")
        .send()
        .await
        .unwrap();
    c.delete_rule()
        .name("r1")
        .event_bus_name("orders")
        .send()
        .await
        .unwrap();
    c.delete_event_bus().name("orders").send().await.unwrap();

    // TestEventPattern uses the same engine.
    let event = json!({"id": "1", "account": ACCOUNT, "source": "shop", "time": "2024-01-01T00:00:00Z",
        "region": REGION, "detail-type": "x", "resources": [], "detail": {"n": 12}});
    let yes = c
        .test_event_pattern()
        .event_pattern(r#"{"detail":{"n":[{"numeric":[">",10]}]}}"#)
        .event(event.to_string())
        .send()
        .await
        .unwrap();
    assert!(yes.result());
    let no = c
        .test_event_pattern()
        .event_pattern(r#"{"detail":{"n":[{"numeric":["<",10]}]}}"#)
        .event(event.to_string())
        .send()
        .await
        .unwrap();
    assert!(!no.result());

    // PutEvents limits and per-entry errors.
    let mut req = c.put_events();
    for _ in 0..11 {
        req = req.entries(entry("default", "a", json!({})));
    }
    assert_eq!(
        req.send().await.unwrap_err().code(),
        Some("ValidationException")
    );
    let out = c
        .put_events()
        .entries(entry("default", "aws.ec2", json!({})))
        .entries(entry("default", "mine", json!({"ok": true})))
        .entries(
            PutEventsRequestEntry::builder()
                .source("mine")
                .detail_type("x")
                .detail("not json")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 2);
    let codes: Vec<Option<&str>> = out.entries().iter().map(|e| e.error_code()).collect();
    assert_eq!(
        codes,
        vec![
            Some("NotAuthorizedForSourceException"),
            None,
            Some("MalformedDetail")
        ]
    );
    assert!(out.entries()[1].event_id().is_some());
}

#[tokio::test]
async fn bus_to_bus_delivery_with_input_transformer_and_dead_letters() {
    let s = TestServer::start().await;
    let c = s.events().await;
    let ev = s.server.as_ref().unwrap().events().unwrap().clone();
    c.create_event_bus().name("second").send().await.unwrap();
    let gone = dead_bus(&c, "gone").await;
    // default --(pattern, transformer)--> second --(pattern)--> gone (dead letters)
    c.put_rule()
        .name("orders")
        .event_pattern(r#"{"source":["shop"],"detail":{"total":[{"numeric":[">=",100]}]}}"#)
        .send()
        .await
        .unwrap();
    let template = r#"{"version":"0","id":"t-1","detail-type":"Big Order","source":"router","account":"123456789012","time":"2024-01-01T00:00:00Z","region":"us-east-1","resources":[],"detail":{"total":<total>,"who":"<name> via <aws.events.rule-name>","missing":<nope>}}"#;
    c.put_targets()
        .rule("orders")
        .targets(
            Target::builder()
                .id("fwd")
                .arn(bus_arn("second"))
                .input_transformer(
                    InputTransformer::builder()
                        .input_paths_map("total", "$.detail.total")
                        .input_paths_map("name", "$.detail.customer.name")
                        .input_paths_map("nope", "$.detail.absent")
                        .input_template(template)
                        .build()
                        .unwrap(),
                )
                .retry_policy(
                    RetryPolicy::builder()
                        .maximum_retry_attempts(3)
                        .maximum_event_age_in_seconds(600)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let t = c
        .list_targets_by_rule()
        .rule("orders")
        .send()
        .await
        .unwrap();
    assert_eq!(
        t.targets()[0]
            .retry_policy()
            .unwrap()
            .maximum_retry_attempts(),
        Some(3)
    );
    c.put_rule()
        .name("big")
        .event_bus_name("second")
        .event_pattern(r#"{"detail-type":["Big Order"]}"#)
        .send()
        .await
        .unwrap();
    c.put_targets()
        .rule("big")
        .event_bus_name("second")
        .targets(target("sink", &gone))
        .send()
        .await
        .unwrap();

    let out = c
        .put_events()
        .entries(entry(
            "default",
            "shop",
            json!({"total": 50, "customer": {"name": "Ann"}}),
        ))
        .entries(entry(
            "default",
            "shop",
            json!({"total": 150, "customer": {"name": "Bob"}}),
        ))
        .entries(entry("default", "other", json!({"total": 500})))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0);
    let dl = wait_dead_letters(&ev, 1).await;
    assert_eq!(dl.len(), 1);
    let l = &dl[0].letter;
    assert_eq!(l.error_code, "NO_RESOURCE");
    assert_eq!(l.delivery.bus, "second");
    assert_eq!(l.delivery.rule, "big");
    assert_eq!(l.delivery.hops, 1);
    let delivered: Value = serde_json::from_str(&l.delivery.event).unwrap();
    assert_eq!(
        delivered["detail"],
        json!({"total": 150, "who": "Bob via orders", "missing": null})
    );
    let m = ev.metrics().await;
    assert_eq!(m.dead_lettered, 1);
    assert_eq!(m.invocations, 2);
    assert_eq!(m.put_events_entries, 3);

    // Redrive: the target bus exists again, so the event now reaches its rules (none match
    // there), and the dead letter is gone.
    c.create_event_bus().name("gone").send().await.unwrap();
    assert_eq!(ev.redrive(None).await.unwrap(), 1);
    for _ in 0..400 {
        if ev.metrics().await.queue_depth == 0 && ev.metrics().await.invocations == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ev.metrics().await.invocations, 3);
    assert!(ev.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn bus_policies_govern_put_events_from_other_principals() {
    let s = TestServer::start().await;
    let c = s.events().await;
    let iam = s.iam().await;
    iam.create_user()
        .user_name("producer")
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name("producer")
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    let user = Client::new(
        &s.sdk_config_as(key.access_key_id(), key.secret_access_key(), None)
            .await,
    );

    let out = user
        .put_events()
        .entries(entry("default", "app", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(out.entries()[0].error_code(), Some("AccessDeniedException"));
    let e = user.list_event_buses().send().await.unwrap_err();
    assert_eq!(e.code(), Some("AccessDeniedException"));

    c.put_permission()
        .event_bus_name("default")
        .action("events:PutEvents")
        .principal("*")
        .statement_id("anyone")
        .send()
        .await
        .unwrap();
    let d = c.describe_event_bus().send().await.unwrap();
    let policy: Value = serde_json::from_str(d.policy().unwrap()).unwrap();
    assert_eq!(policy["Statement"][0]["Sid"], "anyone");
    let e = c
        .put_permission()
        .action("events:PutEvents")
        .principal("*")
        .statement_id("anyone")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceAlreadyExistsException"));
    let out = user
        .put_events()
        .entries(entry("default", "app", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0);
    // The policy grants PutEvents only.
    let e = user.list_rules().send().await.unwrap_err();
    assert_eq!(e.code(), Some("AccessDeniedException"));

    c.remove_permission()
        .statement_id("anyone")
        .send()
        .await
        .unwrap();
    let out = user
        .put_events()
        .entries(entry("default", "app", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(out.entries()[0].error_code(), Some("AccessDeniedException"));
    let e = c
        .remove_permission()
        .statement_id("anyone")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
}

#[tokio::test]
async fn rules_and_queued_deliveries_survive_a_restart() {
    let mut s = TestServer::start().await;
    let c = s.events().await;
    let gone = dead_bus(&c, "gone").await;
    c.put_rule()
        .name("r")
        .event_pattern(r#"{"source":["keep"]}"#)
        .send()
        .await
        .unwrap();
    c.put_targets()
        .rule("r")
        .targets(target("t", &gone))
        .send()
        .await
        .unwrap();
    s.restart().await;
    let c = s.events().await;
    let d = c.describe_rule().name("r").send().await.unwrap();
    assert_eq!(d.event_pattern(), Some(r#"{"source":["keep"]}"#));
    c.put_events()
        .entries(entry("default", "keep", json!({"a": 1})))
        .send()
        .await
        .unwrap();
    let ev = s.server.as_ref().unwrap().events().unwrap().clone();
    let dl = wait_dead_letters(&ev, 1).await;
    assert_eq!(dl[0].letter.delivery.rule, "r");
}

// ---- crash test against the real binary ----

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &Path, port: u16) -> Child {
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("SLUICE_ROOT_ACCESS_KEY_ID", AKID)
        .env("SLUICE_ROOT_SECRET_ACCESS_KEY", SECRET)
        .env("SLUICE_ACCOUNT_ID", ACCOUNT)
        .env("SLUICE_REGION", REGION)
        .env("SLUICE_EVENTS_LEASE_MS", "300")
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_serving(port);
    child
}

fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn queue_state(dir: &Path) -> (usize, HashSet<String>) {
    use sluice_store::Store;
    let store = sluice_store::sqlite::SqliteStore::open(
        &dir.join("sluice.db"),
        sluice_store::sqlite::SqliteOptions::default(),
    )
    .unwrap();
    let due = store
        .scan(
            "events.due",
            sluice_store::KeyRange::all(),
            1_000_000,
            false,
        )
        .await
        .unwrap()
        .len();
    let dl = sluice_events::list_dead_letters(&store, 1_000_000)
        .await
        .unwrap();
    store.close().await.unwrap();
    (
        due,
        dl.into_iter().map(|d| d.letter.delivery.event_id).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_port();
    let mut child = spawn(&dir, port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let c = Client::new(&sdk_config_with(&endpoint, AKID, SECRET).await);
    let gone = dead_bus(&c, "gone").await;
    c.put_rule()
        .name("load")
        .event_pattern(r#"{"source":["load"]}"#)
        .send()
        .await
        .unwrap();
    c.put_targets()
        .rule("load")
        .targets(target("t", &gone))
        .send()
        .await
        .unwrap();

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let c = c.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let mut req = c.put_events();
                for k in 0..10 {
                    req = req.entries(entry("default", "load", json!({"w": w, "i": i, "k": k})));
                }
                match req.send().await {
                    Ok(out) => {
                        let mut a = acked.lock().unwrap();
                        a.extend(
                            out.entries()
                                .iter()
                                .filter_map(|e| e.event_id().map(str::to_string)),
                        );
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once a few hundred events are acknowledged, with requests in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 400 {
        assert!(Instant::now() < deadline, "load did not progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop(&mut child, "-KILL");
    for t in tasks {
        t.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() >= 400);

    // Restart until the queue has drained (leases of the killed process expire after 300 ms).
    let mut delivered = HashSet::new();
    for _ in 0..10 {
        let port = free_port();
        let mut child = spawn(&dir, port);
        tokio::time::sleep(Duration::from_millis(800)).await;
        stop(&mut child, "-TERM");
        let (due, dl) = queue_state(&dir).await;
        delivered = dl;
        if due == 0 {
            break;
        }
    }
    let lost: Vec<&String> = acked.iter().filter(|id| !delivered.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events were never delivered",
        lost.len(),
        acked.len()
    );
}
