//! Load harness: signed Secrets Manager GetSecretValue over HTTP with keep-alive and concurrent
//! clients, against an in-process server on 127.0.0.1.
//!
//! Method: as `kms_http.rs`. One GetSecretValue request is signed with the official `aws-sigv4`
//! crate at start and sent repeatedly (the server verifies every request in full). Each of
//! `SLUICE_BENCH_CLIENTS` (default 64) tasks sends it in a loop over its own keep-alive connection
//! for `SLUICE_BENCH_SECS` (default 10) seconds after a 2-second warm-up. Every request is a full
//! server request: SigV4, JSON 1.1 validation, Secrets Manager authorization, a store read, one
//! KMS Decrypt of the data key on the caller's behalf (key policy evaluation, AES-GCM), AES-GCM of
//! the value, and two durable audit records (KMS's and Secrets Manager's, group-committed).
//! Prints requests/s and latency percentiles.
//!
//! Run: `cargo bench -p sluice --bench secrets_http` (env: SLUICE_BENCH_CLIENTS,
//! SLUICE_BENCH_SECS, SLUICE_BENCH_SYNC=normal for synchronous=NORMAL).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::{AKID, SECRET, env_or, pct, signed};

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        // `cargo test --benches` / `cargo bench -- --list`: nothing to list or test here.
        return;
    }
    let clients = env_or("SLUICE_BENCH_CLIENTS", 64) as usize;
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
        let server = sluice::server::start_with(cfg, std::future::pending())
            .await
            .unwrap();
        let endpoint = format!("http://{}", server.addr());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .unwrap();
        let send = |headers: &Vec<(String, String)>, body: String| {
            let r = support::post_signed(&http, &endpoint, headers, body);
            r.send()
        };
        let create_body = serde_json::json!({"Name": "bench/api-key",
            "SecretString": "{\"api_key\":\"0123456789abcdef0123456789abcdef\"}"})
        .to_string();
        let create = signed(&endpoint, "secretsmanager", "secretsmanager.CreateSecret", &create_body);
        let created = send(&create, create_body).await.unwrap();
        assert!(created.status().is_success(), "CreateSecret failed");
        let get_body = serde_json::json!({"SecretId": "bench/api-key"}).to_string();
        let get_headers = signed(&endpoint, "secretsmanager", "secretsmanager.GetSecretValue", &get_body);
        let first = send(&get_headers, get_body.clone()).await.unwrap();
        assert!(first.status().is_success(), "GetSecretValue failed");

        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let http = http.clone();
            let endpoint = endpoint.clone();
            let (h, b) = (get_headers.clone(), get_body.clone());
            let stop = stop.clone();
            let measuring = measuring.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = support::post_signed(&http, &endpoint, &h, b.clone());
                    let ok = match r.send().await {
                        Ok(resp) => {
                            let st = resp.status();
                            let _ = resp.bytes().await;
                            st.is_success()
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
        println!(
            "secrets_http GetSecretValue clients={clients} secs={secs} requests={} errors={errors} req_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            all.len(),
            all.len() as f64 / elapsed,
            pct(&all, 0.50),
            pct(&all, 0.90),
            pct(&all, 0.99),
            pct(&all, 1.0),
        );
        server.shutdown().await.unwrap();
    });
}
