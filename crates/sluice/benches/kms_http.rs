//! Load harness: signed KMS Encrypt + Decrypt round trips over HTTP with keep-alive and
//! concurrent clients, against an in-process server on 127.0.0.1.
//!
//! Method: one Encrypt and one Decrypt request are signed with the official `aws-sigv4` crate at
//! start and then sent repeatedly (SigV4 allows reuse within the 15-minute skew; the server
//! verifies every request in full), so the client spends its CPU on HTTP only. Each of
//! `SLUICE_BENCH_CLIENTS` (default 64) tasks sends Encrypt then Decrypt in a loop over its own
//! keep-alive connection for `SLUICE_BENCH_SECS` (default 10) seconds after a 2-second warm-up.
//! Every request is a full server request: SigV4, JSON 1.1 validation, policy evaluation, AES-GCM,
//! and a durable audit record (group-committed). Prints requests/s and latency percentiles.
//!
//! Run: `cargo bench -p sluice --bench kms_http` (env: SLUICE_BENCH_CLIENTS, SLUICE_BENCH_SECS,
//! SLUICE_BENCH_SYNC=normal for synchronous=NORMAL).

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
            let mut r = http.post(format!("{endpoint}/")).body(body);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.send()
        };
        let create = signed(&endpoint, "kms", "TrentService.CreateKey", "{}");
        let key: serde_json::Value = send(&create, "{}".into()).await.unwrap().json().await.unwrap();
        let key_id = key["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
        let enc_body = serde_json::json!({"KeyId": key_id, "Plaintext": "aGVsbG8gd29ybGQ=",
            "EncryptionContext": {"purpose": "bench"}})
        .to_string();
        let enc_headers = signed(&endpoint, "kms", "TrentService.Encrypt", &enc_body);
        let ct: serde_json::Value = send(&enc_headers, enc_body.clone())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let dec_body = serde_json::json!({"CiphertextBlob": ct["CiphertextBlob"],
            "EncryptionContext": {"purpose": "bench"}})
        .to_string();
        let dec_headers = signed(&endpoint, "kms", "TrentService.Decrypt", &dec_body);

        let stop = Arc::new(AtomicBool::new(false));
        let measuring = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let http = http.clone();
            let endpoint = endpoint.clone();
            let (eh, eb, dh, db) = (
                enc_headers.clone(),
                enc_body.clone(),
                dec_headers.clone(),
                dec_body.clone(),
            );
            let stop = stop.clone();
            let measuring = measuring.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (h, b) = if i.is_multiple_of(2) { (&eh, &eb) } else { (&dh, &db) };
                    i += 1;
                    let t = Instant::now();
                    let mut r = http.post(format!("{endpoint}/")).body(b.clone());
                    for (k, v) in h {
                        r = r.header(k, v);
                    }
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
            "kms_http clients={clients} secs={secs} requests={} errors={errors} req_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
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
