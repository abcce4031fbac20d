//! Load harness for Firehose, three measurements in one run:
//!
//! 1. **ingest** (`sluice`): signed PutRecordBatch requests of 500 records x 1 KiB, durably
//!    committed (`synchronous=FULL` unless `SLUICE_BENCH_SYNC=normal`), from
//!    `SLUICE_BENCH_CLIENTS` (default 8) keep-alive clients for `SLUICE_BENCH_SECS` (default
//!    10) seconds after a 2-second warm-up, against an in-process server whose stream delivers
//!    to an in-process receiver as in production (buffer 5 MiB, interval 0). The request is
//!    signed once with the official `aws-sigv4` crate and re-sent; the server verifies each in
//!    full. Prints records/s, MiB/s of record data, latency percentiles.
//! 2. **ingest** (`moto`): the same load against `moto_server` (PyPI `moto[server]`), started
//!    as a separate process on a free port when it is on PATH, with a stream delivering to the
//!    same receiver; the ratio sluice/moto is printed.
//! 3. **delivery**: `SLUICE_BENCH_DELIVERY_MIB` (default 256) MiB of 1 KiB records are loaded
//!    while the receiver answers 503 (so they wait in the buffer), then the receiver starts
//!    accepting and the time until every record has been delivered (counted at the receiver) is
//!    measured: MiB/s of record data delivered, with `SLUICE_BENCH_BUFFER_MB` (default 5) as the
//!    stream's buffer size.
//!
//! Run: `cargo bench -p sluice --bench firehose_http` (`SLUICE_BENCH_MODE=ingest|moto|delivery`
//! runs one part).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::{AKID, SECRET, env_or, pct, signed};

const RECORD: usize = 1024;
const PER_REQUEST: usize = 500;

/// A receiver that answers like a Firehose HTTP endpoint and counts records and bytes.
#[derive(Default)]
struct Sink {
    failing: AtomicBool,
    records: AtomicU64,
    bytes: AtomicU64,
}

fn count(hay: &[u8], needle: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    while let Some(p) = hay[i..].windows(needle.len()).position(|w| w == needle) {
        n += 1;
        i += p + needle.len();
    }
    n
}

fn request_id(body: &[u8]) -> String {
    let Some(p) = body.windows(11).position(|w| w == b"\"requestId\"") else {
        return String::new();
    };
    let rest = &body[p + 11..body.len().min(p + 120)];
    let text = String::from_utf8_lossy(rest);
    text.split('"').nth(1).unwrap_or_default().to_string()
}

async fn start_sink() -> (String, Arc<Sink>) {
    let sink = Arc::new(Sink::default());
    let s = sink.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let s = s.clone();
        async move {
            let body = axum::body::to_bytes(req.into_body(), 256 * 1024 * 1024)
                .await
                .unwrap_or_default();
            let rid = request_id(&body);
            let status = if s.failing.load(Ordering::Relaxed) {
                503
            } else {
                s.records
                    .fetch_add(count(&body, b"\"data\""), Ordering::Relaxed);
                s.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                200
            };
            axum::response::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(
                    serde_json::json!({"requestId": rid, "timestamp": 1}).to_string(),
                ))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, sink)
}

fn batch_body(stream: &str) -> String {
    let data = base64_of(&vec![b'x'; RECORD]);
    let records: Vec<serde_json::Value> = (0..PER_REQUEST)
        .map(|_| serde_json::json!({ "Data": data }))
        .collect();
    serde_json::json!({"DeliveryStreamName": stream, "Records": records}).to_string()
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn call(
    http: &reqwest::Client,
    endpoint: &str,
    service: &str,
    target: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let body = body.to_string();
    let headers = signed(endpoint, service, target, &body);
    let mut r = http.post(format!("{endpoint}/")).body(body);
    for (k, v) in &headers {
        r = r.header(k, v);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status();
    let text = resp.text().await.unwrap();
    assert!(st.is_success(), "{target}: {st} {text}");
    serde_json::from_str(&text).unwrap_or_default()
}

async fn create_stream(
    http: &reqwest::Client,
    endpoint: &str,
    name: &str,
    url: &str,
    buffer_mb: u64,
) {
    let role = "arn:aws:iam::000000000000:role/bench";
    call(
        http,
        endpoint,
        "firehose",
        "Firehose_20150804.CreateDeliveryStream",
        serde_json::json!({
            "DeliveryStreamName": name,
            "DeliveryStreamType": "DirectPut",
            "HttpEndpointDestinationConfiguration": {
                "EndpointConfiguration": {"Url": url, "Name": "sink"},
                "BufferingHints": {"SizeInMBs": buffer_mb, "IntervalInSeconds": 0},
                "RetryOptions": {"DurationInSeconds": 7200},
                "RoleARN": role,
                "S3BackupMode": "FailedDataOnly",
                "S3Configuration": {"RoleARN": role, "BucketARN": "arn:aws:s3:::bench-backup"}
            }
        }),
    )
    .await;
    for _ in 0..200 {
        let d = call(
            http,
            endpoint,
            "firehose",
            "Firehose_20150804.DescribeDeliveryStream",
            serde_json::json!({"DeliveryStreamName": name}),
        )
        .await;
        if d["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("stream {name} did not become ACTIVE");
}

/// Runs the ingest load against `endpoint`; returns (records/s, p50, p99, errors).
async fn ingest(endpoint: &str, stream: &str, clients: usize, secs: u64) -> (f64, f64, f64, u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let body = batch_body(stream);
    let headers = signed(
        endpoint,
        "firehose",
        "Firehose_20150804.PutRecordBatch",
        &body,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, endpoint) = (http.clone(), endpoint.to_string());
        let (h, b) = (headers.clone(), bytes::Bytes::from(body.clone()));
        let (stop, measuring) = (stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
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
                        st.is_success() && v["FailedPutCount"] == 0
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
    (
        all.len() as f64 * PER_REQUEST as f64 / elapsed,
        pct(&all, 0.5),
        pct(&all, 0.99),
        errors,
    )
}

async fn start_sluice(
    full_sync: bool,
    backoff_scale: f64,
) -> (sluice::server::RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sluice::config::Config::new(dir.path().to_path_buf());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.root_credentials = Some((AKID.into(), SECRET.into()));
    cfg.sqlite_full_sync = full_sync;
    cfg.firehose_backoff_scale = Some(backoff_scale);
    let server = sluice::server::start_with(cfg, std::future::pending())
        .await
        .unwrap();
    // The streams' role, trusted by Firehose.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(format!("http://{}", server.addr()))
        .credentials_provider(aws_credential_types::Credentials::from_keys(
            AKID, SECRET, None,
        ))
        .load()
        .await;
    aws_sdk_iam::Client::new(&sdk)
        .create_role()
        .role_name("bench")
        .assume_role_policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"Service": "firehose.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    (server, dir)
}

struct Moto(std::process::Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let clients = env_or("SLUICE_BENCH_CLIENTS", 8) as usize;
    let secs = env_or("SLUICE_BENCH_SECS", 10);
    let mode = std::env::var("SLUICE_BENCH_MODE").unwrap_or_else(|_| "all".into());
    let full_sync = std::env::var("SLUICE_BENCH_SYNC").as_deref() != Ok("normal");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (sink_url, sink) = start_sink().await;
        let http = reqwest::Client::new();
        let mut sluice_rate = None;
        if mode == "all" || mode == "ingest" {
            let (server, _dir) = start_sluice(full_sync, 1.0).await;
            let endpoint = format!("http://{}", server.addr());
            create_stream(&http, &endpoint, "bench", &sink_url, 5).await;
            let (rate, p50, p99, errors) = ingest(&endpoint, "bench", clients, secs).await;
            println!(
                "firehose_ingest target=sluice clients={clients} secs={secs} sync={} records_per_s={rate:.0} data_mib_per_s={:.1} p50_ms={p50:.1} p99_ms={p99:.1} errors={errors} delivered_during_run={}",
                if full_sync { "full" } else { "normal" },
                rate * RECORD as f64 / 1048576.0,
                sink.records.load(Ordering::Relaxed),
            );
            sluice_rate = Some(rate);
            server.shutdown().await.unwrap();
        }
        if (mode == "all" || mode == "moto") && which("moto_server") {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = std::process::Command::new("moto_server")
                .args(["-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let _moto = Moto(child);
            let endpoint = format!("http://127.0.0.1:{port}");
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            create_stream(&http, &endpoint, "bench", &sink_url, 5).await;
            let before = sink.records.load(Ordering::Relaxed);
            let (rate, p50, p99, errors) = ingest(&endpoint, "bench", clients, secs).await;
            println!(
                "firehose_ingest target=moto clients={clients} secs={secs} records_per_s={rate:.0} p50_ms={p50:.1} p99_ms={p99:.1} errors={errors} delivered_during_run={}",
                sink.records.load(Ordering::Relaxed) - before,
            );
            if let Some(s) = sluice_rate {
                println!("firehose_ingest ratio sluice/moto = {:.1}", s / rate.max(1e-9));
            }
        }
        if mode == "all" || mode == "delivery" {
            let mib = env_or("SLUICE_BENCH_DELIVERY_MIB", 256);
            let buffer_mb = env_or("SLUICE_BENCH_BUFFER_MB", 5);
            let (server, _dir) = start_sluice(full_sync, 0.001).await;
            let endpoint = format!("http://{}", server.addr());
            sink.failing.store(true, Ordering::Relaxed);
            create_stream(&http, &endpoint, "drain", &sink_url, buffer_mb).await;
            let body = batch_body("drain");
            let headers = signed(&endpoint, "firehose", "Firehose_20150804.PutRecordBatch", &body);
            let total = mib * 1024 * 1024 / (RECORD as u64 * PER_REQUEST as u64);
            let mut loads = Vec::new();
            for w in 0..4u64 {
                let (http, endpoint, h, b) = (http.clone(), endpoint.clone(), headers.clone(), bytes::Bytes::from(body.clone()));
                loads.push(tokio::spawn(async move {
                    for _ in (w..total).step_by(4) {
                        let mut r = http.post(format!("{endpoint}/")).body(b.clone());
                        for (k, v) in &h {
                            r = r.header(k, v);
                        }
                        let resp = r.send().await.unwrap();
                        assert!(resp.status().is_success());
                    }
                }));
            }
            for l in loads {
                l.await.unwrap();
            }
            let want = total * PER_REQUEST as u64;
            let base = sink.records.load(Ordering::Relaxed);
            let base_bytes = sink.bytes.load(Ordering::Relaxed);
            let t0 = Instant::now();
            sink.failing.store(false, Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(600);
            while sink.records.load(Ordering::Relaxed) - base < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let el = t0.elapsed().as_secs_f64();
            let got = sink.records.load(Ordering::Relaxed) - base;
            let wire = sink.bytes.load(Ordering::Relaxed) - base_bytes;
            println!(
                "firehose_delivery loaded_mib={mib} buffer_mb={buffer_mb} records={got}/{want} secs={el:.2} data_mib_per_s={:.1} wire_mib_per_s={:.1} records_per_s={:.0}",
                got as f64 * RECORD as f64 / 1048576.0 / el,
                wire as f64 / 1048576.0 / el,
                got as f64 / el,
            );
            server.shutdown().await.unwrap();
        }
    });
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}
