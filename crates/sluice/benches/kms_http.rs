//! Load harness: signed KMS Encrypt + Decrypt round trips over HTTP with keep-alive and
//! concurrent clients, against an in-process server on 127.0.0.1.
//!
//! Method: one Encrypt and one Decrypt request are signed with the official `aws-sigv4` crate at
//! start and then sent repeatedly (SigV4 allows reuse within the 15-minute skew; the server
//! verifies every request in full), pre-encoded as HTTP/1.1 bytes and written by a minimal
//! keep-alive client (`support::RawConn`), so the load generator takes little CPU. Each of
//! `SLUICE_BENCH_CLIENTS` (default 64) tasks sends Encrypt then Decrypt in a loop over its own
//! keep-alive connection for `SLUICE_BENCH_SECS` (default 10) seconds after a 2-second warm-up.
//! Every request is a full server request: SigV4, JSON 1.1 validation, policy evaluation, AES-GCM,
//! and an audit record committed before the answer (group commit; as a record of a call that
//! changes nothing its fsync is deferred, see `Store::apply_deferred`). Prints requests/s and
//! latency percentiles.
//!
//! With `SLUICE_BENCH_PROCESS=1` the server is the release `sluice serve` binary in its own
//! process instead of in-process, so the server's CPU time per request can be read apart from
//! the load generator's (`server_cpu_us_per_req`, from `/proc/<pid>/stat`). The CPU figures do
//! not depend on what else the shared machine runs; requests/s does.
//!
//! Run: `cargo bench -p sluice --bench kms_http` (env: SLUICE_BENCH_CLIENTS, SLUICE_BENCH_SECS,
//! SLUICE_BENCH_SYNC=normal for synchronous=NORMAL, SLUICE_BENCH_PROCESS=1).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

mod support;

use support::{RawConn, encode_post, env_or, measure_window, pct, signed, start_server};

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
        let full_sync = std::env::var("SLUICE_BENCH_SYNC").as_deref() != Ok("normal");
        let (server, process, endpoint, _dir) = start_server(full_sync).await;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients)
            .build()
            .unwrap();
        let send = |headers: &Vec<(String, String)>, body: String| {
            let r = support::post_signed(&http, &endpoint, headers, body);
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
        let enc_req = Arc::new(encode_post(&endpoint, &enc_headers, &enc_body));
        let dec_req = Arc::new(encode_post(&endpoint, &dec_headers, &dec_body));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let endpoint = endpoint.clone();
            let (enc_req, dec_req) = (enc_req.clone(), dec_req.clone());
            let stop = stop.clone();
            let measuring = measuring.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(100_000);
                let mut errors = 0u64;
                let mut i = 0u64;
                let mut conn = RawConn::connect(&endpoint).await.unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let req = if i.is_multiple_of(2) { &enc_req } else { &dec_req };
                    i += 1;
                    let t = Instant::now();
                    let ok = match conn.roundtrip(req).await {
                        Ok(st) => st == 200,
                        Err(_) => {
                            conn = RawConn::connect(&endpoint).await.unwrap();
                            false
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
        w.print_cpu();
        println!(
            "kms_http clients={clients} secs={secs} requests={} errors={errors} req_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            all.len(),
            all.len() as f64 / elapsed,
            pct(all, 0.50),
            pct(all, 0.90),
            pct(all, 0.99),
            pct(all, 1.0),
        );
        if let Some(server) = server {
            server.shutdown().await.unwrap();
        }
        drop(process);
    });
}
