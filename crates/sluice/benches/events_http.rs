//! Load harness: signed EventBridge PutEvents (10 entries per request) matched against 100
//! rules and durably committed, over HTTP with keep-alive and concurrent clients, against an
//! in-process server on 127.0.0.1.
//!
//! Setup: 100 rules on the default bus, rule i matching `{"source":["bench"],"detail":{"kind":
//! ["k<i>"]}}` with one target, the bus `sink` (which has no rules, so a delivery ends there).
//! Every entry of the request matches exactly one rule, so each request commits 10 deliveries
//! in one durable batch (`synchronous=FULL` unless `SLUICE_BENCH_SYNC=normal`), and the
//! server's dispatcher leases and delivers them concurrently, as in production. The request is
//! signed once with the official `aws-sigv4` crate and resent (the server verifies every
//! request in full; event ids are assigned by the server). Each of `SLUICE_BENCH_CLIENTS`
//! (default 32) tasks sends in a loop for `SLUICE_BENCH_SECS` (default 10) seconds after a
//! 2-second warm-up. Prints events/s (acknowledged entries), requests/s, latency percentiles,
//! and the queue depth left at the end.
//!
//! Run: `cargo bench -p sluice --bench events_http`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::{AKID, SECRET, env_or, pct, signed};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let clients = env_or("SLUICE_BENCH_CLIENTS", 32) as usize;
    let secs = env_or("SLUICE_BENCH_SECS", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = sluice::config::Config::new(dir.path().to_path_buf());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.root_credentials = Some((AKID.into(), SECRET.into()));
        cfg.sqlite_full_sync = std::env::var("SLUICE_BENCH_SYNC").as_deref() != Ok("normal");
        let account = cfg.account_id.clone();
        let server = sluice::server::start_with(cfg, std::future::pending())
            .await
            .unwrap();
        let endpoint = format!("http://{}", server.addr());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .unwrap();
        let call = |op: &str, body: serde_json::Value| {
            let body = body.to_string();
            let headers = signed(&endpoint, "events", &format!("AWSEvents.{op}"), &body);
            let mut r = http.post(format!("{endpoint}/")).body(body);
            for (k, v) in &headers {
                r = r.header(k, v);
            }
            async move {
                let resp = r.send().await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
            }
        };
        call("CreateEventBus", serde_json::json!({"Name": "sink"})).await;
        let sink = format!("arn:aws:events:us-east-1:{account}:event-bus/sink");
        for i in 0..100 {
            let pattern = format!(r#"{{"source":["bench"],"detail":{{"kind":["k{i}"]}}}}"#);
            call("PutRule", serde_json::json!({"Name": format!("r{i}"), "EventPattern": pattern})).await;
            call(
                "PutTargets",
                serde_json::json!({"Rule": format!("r{i}"), "Targets": [{"Id": "sink", "Arn": sink}]}),
            )
            .await;
        }
        let entries: Vec<serde_json::Value> = (0..10)
            .map(|j| {
                serde_json::json!({"Source": "bench", "DetailType": "Bench Event",
                    "Detail": serde_json::json!({"kind": format!("k{}", j * 7), "n": j,
                        "payload": "x".repeat(200)}).to_string()})
            })
            .collect();
        let body = serde_json::json!({ "Entries": entries }).to_string();
        let headers = signed(&endpoint, "events", "AWSEvents.PutEvents", &body);

        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let http = http.clone();
            let endpoint = endpoint.clone();
            let (h, b) = (headers.clone(), body.clone());
            let stop = stop.clone();
            let measuring = measuring.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let mut r = http.post(format!("{endpoint}/")).body(b.clone());
                    for (k, v) in &h {
                        r = r.header(k, v);
                    }
                    let ok = match r.send().await {
                        Ok(resp) => {
                            let st = resp.status();
                            let v: serde_json::Value = resp.json().await.unwrap_or_default();
                            st.is_success() && v["FailedEntryCount"] == 0
                        }
                        Err(_) => false,
                    };
                    if measuring.load(Ordering::Relaxed) {
                        if ok {
                            lat.push(t.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                }
                (lat, errors)
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.unwrap();
            all.extend(l);
            errors += e;
        }
        all.sort_unstable();
        let m = server.events().unwrap().metrics().await;
        println!(
            "events_http clients={clients} secs={secs} requests={} errors={errors} events_per_s={:.0} req_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} invocations={} queue_depth_at_end={}",
            all.len(),
            all.len() as f64 * 10.0 / elapsed,
            all.len() as f64 / elapsed,
            pct(&all, 0.50),
            pct(&all, 0.90),
            pct(&all, 0.99),
            pct(&all, 1.0),
            m.invocations,
            m.queue_depth,
        );
        server.shutdown().await.unwrap();
    });
}
