//! Load harness: events delivered through an EventBridge API destination (API-key connection,
//! credentials in a KMS-sealed managed secret) to a local HTTP receiver, and the accuracy of
//! InvocationRateLimitPerSecond.
//!
//! Setup: an in-process server on 127.0.0.1 (`synchronous=FULL` unless
//! `SLUICE_BENCH_SYNC=normal`), an axum receiver on 127.0.0.1 that answers 200 and records the
//! arrival time of each request, one API-key connection, and per scenario one API destination
//! and one rule (`{"source":["bench-<scenario>"]}`) targeting it.
//!
//! - **throughput**: rate limit 1,000,000/s (so it never binds). `SLUICE_BENCH_EVENTS` events
//!   (default 20,000) are put by 8 concurrent clients, 10 entries per PutEvents request; the
//!   result is events delivered per second, from the first PutEvents to the last delivery, and
//!   the invocation latency distribution is not measured (the receiver is local). A warm-up
//!   burst of a fifth as many events comes first and is not counted.
//! - **latency**: rate limit 1,000,000/s; one event per PutEvents, sent one after another with
//!   a pause of 10 ms (about 90 events/s: low load), `SLUICE_BENCH_LATENCY_EVENTS` events
//!   (default 500) per run. Each event carries a sequence number; the receiver reads it from the
//!   delivered body, and the latency of an event is its arrival at the receiver minus the moment
//!   its PutEvents response reached the client (the client and the receiver share one clock:
//!   same process). Prints p50, p90, p99 and max.
//! - **rate 50 / rate 300**: the API destination's limit is 50 (resp. 300); `6 x rate` events
//!   are put at once (faster than the limit), and the achieved rate is
//!   `(n - 1) / (last arrival - first arrival)` over all deliveries, and over the steady part
//!   (arrivals after the first second).
//!
//! Each scenario runs `SLUICE_BENCH_RUNS` times (default 3); the harness prints every run and the
//! medians. `SLUICE_BENCH_SCENARIOS` (comma-separated: `throughput`, `latency`, `rate`; default
//! all) picks scenarios. Run: `cargo bench -p sluice --bench apidest_http`.
//!
//! With `SLUICE_BENCH_ENDPOINT=http://127.0.0.1:<port>` the same setup and load go to another
//! server already running there (a peer: moto's `moto_server` with
//! `MOTO_EVENTS_INVOKE_HTTP=true`, which calls API destinations), through reqwest.
//!
//! With `SLUICE_BENCH_PROCESS=1` the server is the release `sluice serve` binary in its own
//! process (`support::ServerProcess`, `SLUICE_BENCH_BIN` for another build), the throughput
//! scenario's PutEvents go through the raw pre-encoded client (`support::RawConn`) instead of
//! reqwest, and the throughput lines add the server's CPU time per delivered event (read from
//! `/proc`; it varies less than throughput with what else the machine runs) and the harness's
//! own (the clients and the receiver share its process).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::{RawConn, encode_post, env_or, signed, start_server};

struct Rx {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    /// Arrivals of latency-scenario events by their sequence number.
    tagged: Arc<Mutex<Vec<(u64, Instant)>>>,
    addr: std::net::SocketAddr,
}

async fn receiver() -> Rx {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let tagged: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let (a2, t2) = (arrivals.clone(), tagged.clone());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (a, t) = (a2.clone(), t2.clone());
        async move {
            let latency = req.uri().path().ends_with("/lat");
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await;
            let now = Instant::now();
            a.lock().unwrap().push(now);
            if latency
                && let Ok(b) = body
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
                && let Some(seq) = v["detail"]["seq"].as_u64()
            {
                t.lock().unwrap().push((seq, now));
            }
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Rx {
        arrivals,
        tagged,
        addr,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let runs = env_or("SLUICE_BENCH_RUNS", 3) as usize;
    let n_events = env_or("SLUICE_BENCH_EVENTS", 20_000) as usize;
    let scenarios = std::env::var("SLUICE_BENCH_SCENARIOS").unwrap_or_default();
    let wanted = |s: &str| scenarios.is_empty() || scenarios.split(',').any(|x| x.trim() == s);
    let (do_tput, do_lat, do_rate) = (wanted("throughput"), wanted("latency"), wanted("rate"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let full_sync = std::env::var("SLUICE_BENCH_SYNC").as_deref() != Ok("normal");
        let (server, process, endpoint, _dir) = match std::env::var("SLUICE_BENCH_ENDPOINT") {
            Ok(e) => (None, None, e, None),
            Err(_) => {
                let (s, p, e, d) = start_server(full_sync).await;
                (s, p, e, Some(d))
            }
        };
        let raw = process.is_some();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .build()
            .unwrap();
        let call = |op: &str, body: serde_json::Value| {
            let body = body.to_string();
            let headers = signed(&endpoint, "events", &format!("AWSEvents.{op}"), &body);
            let r = support::post_signed(&http, &endpoint, &headers, body);
            async move {
                let resp = r.send().await.unwrap();
                let ok = resp.status().is_success();
                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                assert!(ok, "{v}");
                v
            }
        };
        let rx = receiver().await;
        let conn = call(
            "CreateConnection",
            serde_json::json!({"Name": "bench", "AuthorizationType": "API_KEY",
                "AuthParameters": {"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "bench-key"}}}),
        )
        .await;
        assert!(
            conn["ConnectionState"] == "AUTHORIZED" || conn["ConnectionState"] == "AUTHORIZING",
            "{conn}"
        );
        let conn_arn = conn["ConnectionArn"].as_str().unwrap().to_string();

        // Puts `n` events with `source` from 8 clients, 10 per request.
        let put_all = |source: String, n: usize| {
            let endpoint = endpoint.clone();
            let http = http.clone();
            async move {
                let entries: Vec<serde_json::Value> = (0..10)
                    .map(|j| serde_json::json!({"Source": source, "DetailType": "Bench",
                        "Detail": serde_json::json!({"n": j, "payload": "x".repeat(200)}).to_string()}))
                    .collect();
                let body = serde_json::json!({"Entries": entries}).to_string();
                let headers = signed(&endpoint, "events", "AWSEvents.PutEvents", &body);
                let requests = n.div_ceil(10);
                let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let mut tasks = Vec::new();
                let encoded = Arc::new(encode_post(&endpoint, &headers, &body));
                for _ in 0..8 {
                    let (http, endpoint, body, headers, next) =
                        (http.clone(), endpoint.clone(), body.clone(), headers.clone(), next.clone());
                    let encoded = encoded.clone();
                    tasks.push(tokio::spawn(async move {
                        if raw {
                            // The raw client reads only the status: deliveries are counted at
                            // the receiver, which must see every event.
                            let mut conn = RawConn::connect(&endpoint).await.unwrap();
                            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                                assert_eq!(conn.roundtrip(&encoded).await.unwrap(), 200);
                            }
                            return;
                        }
                        while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                            let r = support::post_signed(&http, &endpoint, &headers, body.clone());
                            let v: serde_json::Value = r.send().await.unwrap().json().await.unwrap();
                            assert_eq!(v["FailedEntryCount"], 0, "{v}");
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                requests * 10
            }
        };

        let mut scenario = 0;
        let mut setup = |rate: u64, path: &'static str| {
            scenario += 1;
            let name = format!("s{scenario}");
            let url = format!("http://{}/in/{name}{path}", rx.addr);
            let conn_arn = conn_arn.clone();
            let call = &call;
            async move {
                let d = call(
                    "CreateApiDestination",
                    serde_json::json!({"Name": name, "ConnectionArn": conn_arn,
                        "InvocationEndpoint": url, "HttpMethod": "POST",
                        "InvocationRateLimitPerSecond": rate}),
                )
                .await;
                let source = format!("bench-{name}");
                call("PutRule", serde_json::json!({"Name": name,
                    "EventPattern": serde_json::json!({"source": [source]}).to_string()})).await;
                call("PutTargets", serde_json::json!({"Rule": name,
                    "Targets": [{"Id": "d", "Arn": d["ApiDestinationArn"]}]})).await;
                source
            }
        };
        let wait_for = |n: usize| {
            let arrivals = rx.arrivals.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(600);
                loop {
                    if arrivals.lock().unwrap().len() >= n {
                        return;
                    }
                    assert!(Instant::now() < deadline, "deliveries stalled");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };

        let mut tput = Vec::new();
        if do_tput && n_events >= 50 {
            // Warm-up, not counted: the first burst into a fresh data directory also grows
            // its database file and heap, which no later run does.
            let source = setup(1_000_000, "").await;
            rx.arrivals.lock().unwrap().clear();
            let t0 = Instant::now();
            let n = put_all(source, n_events / 5).await;
            wait_for(n).await;
            println!(
                "apidest_http throughput warm-up events={n} secs={:.2}",
                t0.elapsed().as_secs_f64()
            );
        }
        for run in 0..if do_tput { runs } else { 0 } {
            let source = setup(1_000_000, "").await;
            rx.arrivals.lock().unwrap().clear();
            let cpu0 = process.as_ref().map(|p| p.cpu_secs());
            let own0 = support::self_cpu_secs();
            let t0 = Instant::now();
            let n = put_all(source, n_events).await;
            let acked = t0.elapsed().as_secs_f64();
            wait_for(n).await;
            let last = *rx.arrivals.lock().unwrap().iter().max().unwrap();
            let secs = (last - t0).as_secs_f64();
            let eps = n as f64 / secs;
            let cpu = match (process.as_ref(), cpu0) {
                (Some(p), Some(c0)) => format!(
                    " server_cpu_us_per_event={:.1} harness_cpu_us_per_event={:.1}",
                    (p.cpu_secs() - c0) * 1e6 / n as f64,
                    (support::self_cpu_secs() - own0) * 1e6 / n as f64
                ),
                _ => String::new(),
            };
            println!(
                "apidest_http throughput run={run} events={n} put_secs={acked:.2} delivered_secs={secs:.2} delivered_per_s={eps:.0}{cpu}"
            );
            tput.push(eps);
        }
        if do_tput {
            println!("apidest_http throughput median delivered_per_s={:.0}", median(&mut tput));
        }

        let n_lat = env_or("SLUICE_BENCH_LATENCY_EVENTS", 500);
        let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
        for run in 0..if do_lat { runs } else { 0 } {
            let source = setup(1_000_000, "/lat").await;
            rx.tagged.lock().unwrap().clear();
            let mut acked = Vec::with_capacity(n_lat as usize);
            for seq in 0..n_lat {
                let entries = serde_json::json!([{"Source": source, "DetailType": "Bench",
                    "Detail": serde_json::json!({"seq": seq, "payload": "x".repeat(200)}).to_string()}]);
                let v = call("PutEvents", serde_json::json!({"Entries": entries})).await;
                acked.push(Instant::now());
                assert_eq!(v["FailedEntryCount"], 0, "{v}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while rx.tagged.lock().unwrap().len() < n_lat as usize {
                assert!(Instant::now() < deadline, "latency deliveries stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut lat: Vec<f64> = rx
                .tagged
                .lock()
                .unwrap()
                .iter()
                .map(|(seq, at)| at.saturating_duration_since(acked[*seq as usize]).as_secs_f64() * 1e3)
                .collect();
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            println!(
                "apidest_http latency run={run} events={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
                lat.len(),
                q(0.50),
                q(0.90),
                q(0.99),
                lat[lat.len() - 1]
            );
            p50s.push(q(0.50));
            p99s.push(q(0.99));
        }
        if do_lat {
            println!(
                "apidest_http latency median p50_ms={:.2} p99_ms={:.2}",
                median(&mut p50s),
                median(&mut p99s)
            );
        }

        for rate in if do_rate { &[50u64, 300][..] } else { &[] } {
            let rate = *rate;
            let mut all = Vec::new();
            let mut steady = Vec::new();
            for run in 0..runs {
                let source = setup(rate, "").await;
                rx.arrivals.lock().unwrap().clear();
                let n = put_all(source, (rate * 6) as usize).await;
                wait_for(n).await;
                let mut t = rx.arrivals.lock().unwrap().clone();
                t.sort();
                let first = t[0];
                let span = (t[t.len() - 1] - first).as_secs_f64();
                let a = (t.len() - 1) as f64 / span;
                let later: Vec<&Instant> = t
                    .iter()
                    .filter(|x| (**x - first) >= Duration::from_secs(1))
                    .collect();
                let s = (later.len() - 1) as f64
                    / (**later.last().unwrap() - *later[0]).as_secs_f64();
                println!(
                    "apidest_http rate limit={rate} run={run} events={n} span_secs={span:.2} achieved_per_s={a:.1} steady_per_s={s:.1} ratio={:.3}",
                    a / rate as f64
                );
                all.push(a);
                steady.push(s);
            }
            println!(
                "apidest_http rate limit={rate} median achieved_per_s={:.1} steady_per_s={:.1} ratio={:.3}",
                median(&mut all),
                median(&mut steady),
                median(&mut all.clone()) / rate as f64
            );
        }
        if let Some(server) = server {
            let m = server.events().unwrap().metrics().await;
            println!(
                "apidest_http invocations={} failed={} dead_lettered={}",
                m.invocations, m.failed_invocations, m.dead_lettered
            );
            server.shutdown().await.unwrap();
        }
        drop(process);
    });
}
