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
//! With `SLUICE_BENCH_PROCESS=1` the server is the release `sluice serve` binary in its own
//! process and the clients are the minimal raw HTTP/1.1 client (`support::RawConn`); the harness
//! then also prints the server's CPU time per request (from `/proc/<pid>/stat`), which does not
//! depend on what else the shared machine runs, and reads the counters from `/_sluice/metrics`.
//!
//! With `SLUICE_BENCH_ENDPOINT=http://127.0.0.1:<port>` the same setup and load go to another
//! server already running there (a peer such as moto's `moto_server`), through reqwest;
//! `SLUICE_BENCH_CLIENT=reqwest` makes the process mode use reqwest too, so that both sides of a
//! comparison pay the same client cost; `SLUICE_BENCH_ACCOUNT` names the peer's account (moto:
//! 123456789012) for the bus-target ARNs.
//!
//! `SLUICE_BENCH_BIN=<path>` (process mode) runs another `sluice` binary, e.g. a saved copy of
//! the build before a change, so that before and after can be measured back to back with the
//! same harness.
//!
//! Run: `cargo bench -p sluice --bench events_http` (env: SLUICE_BENCH_CLIENTS, SLUICE_BENCH_SECS,
//! SLUICE_BENCH_SYNC=normal, SLUICE_BENCH_PROCESS=1, SLUICE_BENCH_BIN, SLUICE_BENCH_ENDPOINT,
//! SLUICE_BENCH_CLIENT).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

mod support;

use support::{RawConn, encode_post, env_or, measure_window, pct, signed, start_server};

/// The value of counter `name` in a Prometheus text exposition.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0) as u64
}

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
        let full_sync = std::env::var("SLUICE_BENCH_SYNC").as_deref() != Ok("normal");
        // The account of the server under test (moto's default is 123456789012).
        let account =
            std::env::var("SLUICE_BENCH_ACCOUNT").unwrap_or_else(|_| "000000000000".to_string());
        let external = std::env::var("SLUICE_BENCH_ENDPOINT").ok();
        let (server, process, endpoint, _dir) = match external.clone() {
            Some(e) => (None, None, e, None),
            None => {
                let (s, p, e, d) = start_server(full_sync).await;
                (s, p, e, Some(d))
            }
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .unwrap();
        let call = |op: &str, body: serde_json::Value| {
            let body = body.to_string();
            let headers = signed(&endpoint, "events", &format!("AWSEvents.{op}"), &body);
            let r = support::post_signed(&http, &endpoint, &headers, body);
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
        let raw = Arc::new(encode_post(&endpoint, &headers, &body));
        let use_raw =
            process.is_some() && std::env::var("SLUICE_BENCH_CLIENT").as_deref() != Ok("reqwest");
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let http = http.clone();
            let endpoint = endpoint.clone();
            let (h, b, raw) = (headers.clone(), body.clone(), raw.clone());
            let stop = stop.clone();
            let measuring = measuring.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                let mut conn = if use_raw {
                    Some(RawConn::connect(&endpoint).await.unwrap())
                } else {
                    None
                };
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = if let Some(c) = conn.as_mut() {
                        // The raw client checks the status only (the body is read and
                        // dropped); the in-process mode below checks FailedEntryCount too.
                        match c.roundtrip(&raw).await {
                            Ok(st) => st == 200,
                            Err(_) => {
                                conn = Some(RawConn::connect(&endpoint).await.unwrap());
                                false
                            }
                        }
                    } else {
                        let r = support::post_signed(&http, &endpoint, &h, b.clone());
                        match r.send().await {
                            Ok(resp) => {
                                let st = resp.status();
                                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                                st.is_success() && v["FailedEntryCount"] == 0
                            }
                            Err(_) => false,
                        }
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
        let w = measure_window(secs, &measuring, &stop, tasks, process.as_ref()).await;
        let (all, errors, elapsed) = (&w.latencies, w.errors, w.elapsed);
        let (invocations, depth) = match &server {
            Some(server) => {
                let m = server.events().unwrap().metrics().await;
                (m.invocations, m.queue_depth)
            }
            None if external.is_some() => (0, 0),
            None => {
                let text = http
                    .get(format!("{endpoint}/_sluice/metrics"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                (
                    counter(&text, "sluice_events_invocations_total"),
                    counter(&text, "sluice_events_queue_depth"),
                )
            }
        };
        w.print_cpu();
        println!(
            "events_http clients={clients} secs={secs} requests={} errors={errors} events_per_s={:.0} req_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} invocations={} queue_depth_at_end={}",
            all.len(),
            all.len() as f64 * 10.0 / elapsed,
            all.len() as f64 / elapsed,
            pct(all, 0.50),
            pct(all, 0.90),
            pct(all, 0.99),
            pct(all, 1.0),
            invocations,
            depth,
        );
        if let Some(server) = server {
            server.shutdown().await.unwrap();
        }
        drop(process);
    });
}
