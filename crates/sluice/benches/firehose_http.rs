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
//! With `SLUICE_BENCH_PROCESS=1` sluice is the release `sluice serve` binary in its own process
//! (started by `support::ServerProcess`) and the clients are the minimal pre-encoded HTTP/1.1
//! client (`support::RawConn`, a few µs per request instead of reqwest's JSON-parsing client)
//! for sluice (moto is always driven by reqwest: its werkzeug server does not serve the raw
//! client's keep-alive requests, and moto's own cost dwarfs the client's); the harness then prints the server's CPU time per request and per
//! record (from `/proc/<pid>/stat`, independent of what else the shared machine runs) and, for
//! the delivery part, the server's CPU ms per MiB delivered. The receiver stays in the harness
//! process and counts records with one pass over the quotes of each body.
//! `SLUICE_BENCH_CLIENT=reqwest|raw` overrides the client.
//!
//! Run: `cargo bench -p sluice --bench firehose_http` (`SLUICE_BENCH_MODE=ingest|moto|delivery`
//! runs one part; `SLUICE_BENCH_PROCESS=1`; `SLUICE_BENCH_CLIENT`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::{
    AKID, RawConn, SECRET, ServerProcess, encode_post, env_or, measure_window, pct, signed,
};

const RECORD: usize = 1024;
const PER_REQUEST: usize = 500;

/// A receiver that answers like a Firehose HTTP endpoint and counts records and bytes.
#[derive(Default)]
struct Sink {
    failing: AtomicBool,
    records: AtomicU64,
    bytes: AtomicU64,
}

/// The number of `"data"` keys in a delivery body: one pass over the quotes (base64 has none),
/// so the receiver costs little next to the server on a shared 2-core machine.
fn count_records(body: &[u8]) -> u64 {
    let mut n = 0;
    let mut rest = body;
    while let Some(p) = rest.iter().position(|&b| b == b'"') {
        rest = &rest[p + 1..];
        if rest.starts_with(b"data\"") {
            n += 1;
            rest = &rest[5..];
        }
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
                s.records.fetch_add(count_records(&body), Ordering::Relaxed);
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
    let r = support::post_signed(http, endpoint, &headers, body);
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

/// The server under test: in this process, or the release binary as its own process.
enum Sluice {
    InProcess(sluice::server::RunningServer, tempfile::TempDir),
    Process(ServerProcess),
}

impl Sluice {
    fn endpoint(&self) -> String {
        match self {
            Sluice::InProcess(s, _) => format!("http://{}", s.addr()),
            Sluice::Process(p) => p.endpoint.clone(),
        }
    }

    fn process(&self) -> Option<&ServerProcess> {
        match self {
            Sluice::Process(p) => Some(p),
            Sluice::InProcess(..) => None,
        }
    }

    async fn stop(self) {
        match self {
            Sluice::InProcess(s, _dir) => s.shutdown().await.unwrap(),
            Sluice::Process(p) => drop(p),
        }
    }
}

/// What one ingest window measured.
struct Ingest {
    records_per_s: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    /// Server CPU µs per request (when the server is its own process).
    server_us_per_req: Option<f64>,
    /// This process's CPU µs per request (clients, receiver; and the server when in-process).
    self_us_per_req: f64,
}

/// Sends one pre-signed PutRecordBatch request in a loop from each of `clients` keep-alive
/// connections: the minimal raw client when `raw`, else reqwest.
async fn ingest(
    endpoint: &str,
    stream: &str,
    clients: usize,
    secs: u64,
    raw: bool,
    process: Option<&ServerProcess>,
) -> Ingest {
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
    let encoded = Arc::new(encode_post(endpoint, &headers, &body));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, endpoint) = (http.clone(), endpoint.to_string());
        let (h, b) = (headers.clone(), bytes::Bytes::from(body.clone()));
        let encoded = encoded.clone();
        let (stop, measuring) = (stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut conn = if raw {
                Some(RawConn::connect(&endpoint).await.unwrap())
            } else {
                None
            };
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match conn.as_mut() {
                    Some(c) => match c.roundtrip(&encoded).await {
                        Ok(st) => st == 200,
                        Err(_) => {
                            conn = Some(RawConn::connect(&endpoint).await.unwrap());
                            false
                        }
                    },
                    None => {
                        let r = support::post_signed(&http, &endpoint, &h, b.clone());
                        match r.send().await {
                            Ok(resp) => {
                                let st = resp.status();
                                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                                st.is_success() && v["FailedPutCount"] == 0
                            }
                            Err(_) => false,
                        }
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
    let w = measure_window(secs, &measuring, &stop, tasks, process).await;
    let n = w.latencies.len().max(1) as f64;
    Ingest {
        records_per_s: w.latencies.len() as f64 * PER_REQUEST as f64 / w.elapsed,
        p50: pct(&w.latencies, 0.5),
        p99: pct(&w.latencies, 0.99),
        errors: w.errors,
        server_us_per_req: w.server_cpu.map(|c| c * 1e6 / n),
        self_us_per_req: w.self_cpu * 1e6 / n,
    }
}

/// Starts sluice (as its own process when `process`) and creates the streams' role.
async fn start_sluice(full_sync: bool, backoff_scale: f64, process: bool) -> Sluice {
    let server = if process {
        let scale = backoff_scale.to_string();
        Sluice::Process(ServerProcess::start_with_env(
            full_sync,
            &[("SLUICE_FIREHOSE_BACKOFF_SCALE", &scale)],
        ))
    } else {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = sluice::config::Config::new(dir.path().to_path_buf());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.root_credentials = Some((AKID.into(), SECRET.into()));
        cfg.sqlite_full_sync = full_sync;
        cfg.firehose_backoff_scale = Some(backoff_scale);
        let server = sluice::server::start_with(cfg, std::future::pending())
            .await
            .unwrap();
        Sluice::InProcess(server, dir)
    };
    // The streams' role, trusted by Firehose.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(server.endpoint())
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
    server
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
    let process = std::env::var("SLUICE_BENCH_PROCESS").is_ok();
    let raw = match std::env::var("SLUICE_BENCH_CLIENT").as_deref() {
        Ok("reqwest") => false,
        Ok("raw") => true,
        _ => process,
    };
    let client_name = if raw { "raw" } else { "reqwest" };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (sink_url, sink) = start_sink().await;
        let http = reqwest::Client::new();
        let mut sluice_rate = None;
        if mode == "all" || mode == "ingest" {
            let server = start_sluice(full_sync, 1.0, process).await;
            let endpoint = server.endpoint();
            create_stream(&http, &endpoint, "bench", &sink_url, 5).await;
            let r = ingest(&endpoint, "bench", clients, secs, raw, server.process()).await;
            let cpu = match r.server_us_per_req {
                Some(us) => format!(
                    "server_cpu_us_per_req={us:.0} server_cpu_us_per_record={:.2} bench_process_cpu_us_per_req={:.0}",
                    us / PER_REQUEST as f64,
                    r.self_us_per_req
                ),
                None => format!(
                    "process_cpu_us_per_req={:.0} (server, clients and receiver together)",
                    r.self_us_per_req
                ),
            };
            println!(
                "firehose_ingest target=sluice server={} client={client_name} clients={clients} secs={secs} sync={} records_per_s={:.0} data_mib_per_s={:.1} p50_ms={:.1} p99_ms={:.1} errors={} delivered_during_run={} {cpu}",
                if process { "process" } else { "in-process" },
                if full_sync { "full" } else { "normal" },
                r.records_per_s,
                r.records_per_s * RECORD as f64 / 1048576.0,
                r.p50,
                r.p99,
                r.errors,
                sink.records.load(Ordering::Relaxed),
            );
            sluice_rate = Some(r.records_per_s);
            server.stop().await;
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
            // moto (werkzeug) does not keep the raw client's connections alive: reqwest always.
            let r = ingest(&endpoint, "bench", clients, secs, false, None).await;
            println!(
                "firehose_ingest target=moto client=reqwest clients={clients} secs={secs} records_per_s={:.0} p50_ms={:.1} p99_ms={:.1} errors={} delivered_during_run={}",
                r.records_per_s,
                r.p50,
                r.p99,
                r.errors,
                sink.records.load(Ordering::Relaxed) - before,
            );
            if let Some(s) = sluice_rate {
                println!(
                    "firehose_ingest ratio sluice/moto = {:.1}",
                    s / r.records_per_s.max(1e-9)
                );
            }
        }
        if mode == "all" || mode == "delivery" {
            let mib = env_or("SLUICE_BENCH_DELIVERY_MIB", 256);
            let buffer_mb = env_or("SLUICE_BENCH_BUFFER_MB", 5);
            let server = start_sluice(full_sync, 0.001, process).await;
            let endpoint = server.endpoint();
            sink.failing.store(true, Ordering::Relaxed);
            create_stream(&http, &endpoint, "drain", &sink_url, buffer_mb).await;
            let body = batch_body("drain");
            let headers = signed(&endpoint, "firehose", "Firehose_20150804.PutRecordBatch", &body);
            let encoded = Arc::new(encode_post(&endpoint, &headers, &body));
            let total = mib * 1024 * 1024 / (RECORD as u64 * PER_REQUEST as u64);
            let mut loads = Vec::new();
            for w in 0..4u64 {
                let encoded = encoded.clone();
                let endpoint = endpoint.clone();
                loads.push(tokio::spawn(async move {
                    let mut conn = RawConn::connect(&endpoint).await.unwrap();
                    for _ in (w..total).step_by(4) {
                        assert_eq!(conn.roundtrip(&encoded).await.unwrap(), 200);
                    }
                }));
            }
            for l in loads {
                l.await.unwrap();
            }
            let want = total * PER_REQUEST as u64;
            let base = sink.records.load(Ordering::Relaxed);
            let base_bytes = sink.bytes.load(Ordering::Relaxed);
            let cpu0 = server.process().map(ServerProcess::cpu_secs);
            let t0 = Instant::now();
            sink.failing.store(false, Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(600);
            while sink.records.load(Ordering::Relaxed) - base < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let el = t0.elapsed().as_secs_f64();
            let got = sink.records.load(Ordering::Relaxed) - base;
            let wire = sink.bytes.load(Ordering::Relaxed) - base_bytes;
            let data_mib = got as f64 * RECORD as f64 / 1048576.0;
            let cpu = match (cpu0, server.process().map(ServerProcess::cpu_secs)) {
                (Some(a), Some(b)) => {
                    format!(" server_cpu_ms_per_mib={:.2}", (b - a) * 1e3 / data_mib.max(1e-9))
                }
                _ => String::new(),
            };
            println!(
                "firehose_delivery server={} loaded_mib={mib} buffer_mb={buffer_mb} records={got}/{want} secs={el:.2} data_mib_per_s={:.1} wire_mib_per_s={:.1} records_per_s={:.0}{cpu}",
                if process { "process" } else { "in-process" },
                data_mib / el,
                wire as f64 / 1048576.0 / el,
                got as f64 / el,
            );
            server.stop().await;
        }
    });
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}
