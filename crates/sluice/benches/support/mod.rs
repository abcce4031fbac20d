//! Shared pieces of the HTTP load harnesses: the bench credentials, a SigV4 signer (the
//! official `aws-sigv4` crate) for JSON 1.1 requests, and small statistics helpers.

#![allow(dead_code)]

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

pub const AKID: &str = "AKIABENCHBENCHBENCH0";
pub const SECRET: &str = "benchSecretKeyForSluiceLoadHarness000000";

/// The headers of a JSON 1.1 POST to `endpoint`, signed for `service`.
pub fn signed(endpoint: &str, service: &str, target: &str, body: &str) -> Vec<(String, String)> {
    let url = format!("{endpoint}/");
    let host = endpoint.trim_start_matches("http://").to_string();
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        ("x-amz-target".to_string(), target.to_string()),
        ("host".to_string(), host),
    ];
    let identity = Credentials::new(AKID, SECRET, None, None, "bench").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let req = SignableRequest::new(
        "POST",
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instr, _) = sign(req, &params).unwrap().into_parts();
    for (k, v) in instr.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    headers.retain(|(k, _)| k != "host");
    headers
}

/// An integer environment setting.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Percentile `p` of sorted microsecond latencies, in milliseconds.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// A `sluice serve` started as a separate process (the release binary of this build), so that
/// the load generator's CPU is not counted as the server's and the two can be told apart.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the server (the release binary of this build, or `SLUICE_BENCH_BIN`) on a free
    /// loopback port with the bench credentials and waits until `/_sluice/health` answers.
    /// `full_sync = false` selects `sqlite_sync = "normal"`.
    pub fn start(full_sync: bool) -> Self {
        Self::start_with_env(full_sync, &[])
    }

    /// [`ServerProcess::start`] with extra environment variables for the server process (such
    /// as `SLUICE_FIREHOSE_BACKOFF_SCALE`).
    pub fn start_with_env(full_sync: bool, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("sluice.toml");
        std::fs::write(
            &conf,
            format!(
                "sqlite_sync = \"{}\"\n",
                if full_sync { "full" } else { "normal" }
            ),
        )
        .unwrap();
        // `SLUICE_BENCH_BIN` runs another build of the binary (a saved "before" copy, for
        // back-to-back comparisons with the same harness).
        let bin = std::env::var("SLUICE_BENCH_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_string());
        let child = std::process::Command::new(bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&conf)
            .env("SLUICE_ROOT_ACCESS_KEY_ID", AKID)
            .env("SLUICE_ROOT_SECRET_ACCESS_KEY", SECRET)
            .env("SLUICE_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self {
            child,
            endpoint,
            _dir: dir,
        }
    }

    /// CPU seconds (user + system) the server process has used so far.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) of this process so far.
pub fn self_cpu_secs() -> f64 {
    proc_cpu_secs("/proc/self/stat")
}

fn proc_cpu_secs(stat_path: &str) -> f64 {
    let text = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // `rest` starts at field 3 (state), so field n is at index n - 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// A minimal HTTP/1.1 keep-alive client for load generation: requests are pre-encoded bytes
/// written as they are, responses are read by `Content-Length` (sluice always sends it). It
/// costs a few microseconds per request, so the load generator takes little CPU from the
/// server on a 2-core machine (reqwest took ~30 µs per request).
pub struct RawConn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    line: Vec<u8>,
}

impl RawConn {
    pub async fn connect(endpoint: &str) -> std::io::Result<Self> {
        let addr = endpoint.trim_start_matches("http://");
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufReader::with_capacity(64 * 1024, s),
            line: Vec::with_capacity(256),
        })
    }

    /// Sends one pre-encoded request and reads the response; returns the status code.
    pub async fn roundtrip(&mut self, request: &[u8]) -> std::io::Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        self.stream.get_mut().write_all(request).await?;
        let mut status = 0u16;
        let mut len = 0usize;
        loop {
            self.line.clear();
            let n = self.stream.read_until(b'\n', &mut self.line).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = &self.line;
            if status == 0 {
                status = std::str::from_utf8(l.get(9..12).unwrap_or(b""))
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if l == b"\r\n" {
                break;
            } else if l.len() > 15 && l[..15].eq_ignore_ascii_case(b"content-length:") {
                len = std::str::from_utf8(&l[15..])
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
            }
        }
        let mut remaining = len;
        let mut sink = [0u8; 8192];
        while remaining > 0 {
            let n = self.stream.read(&mut sink[..remaining.min(8192)]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            remaining -= n;
        }
        Ok(status)
    }
}

/// Encodes a POST of `body` to `/` of `endpoint` with `headers` as HTTP/1.1 bytes.
pub fn encode_post(endpoint: &str, headers: &[(String, String)], body: &str) -> Vec<u8> {
    let host = endpoint.trim_start_matches("http://");
    let mut out = format!(
        "POST / HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// What a load window measured: sorted latencies (µs) of successful requests, failures, the
/// window's length, and CPU seconds of this process and of the server process (if separate).
pub struct Window {
    pub latencies: Vec<u64>,
    pub errors: u64,
    pub elapsed: f64,
    pub self_cpu: f64,
    pub server_cpu: Option<f64>,
}

/// Runs the load window shared by the HTTP harnesses: a 2-second warm-up, then `secs` seconds
/// with `measuring` set, then `stop`; collects every client task's `(latencies, errors)`.
pub async fn measure_window(
    secs: u64,
    measuring: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<(Vec<u64>, u64)>>,
    process: Option<&ServerProcess>,
) -> Window {
    use std::sync::atomic::Ordering;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    let (self0, server0) = (self_cpu_secs(), process.map(|p| p.cpu_secs()));
    tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let self_cpu = self_cpu_secs() - self0;
    let server_cpu = process
        .map(|p| p.cpu_secs())
        .zip(server0)
        .map(|(a, b)| a - b);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    Window {
        latencies,
        errors,
        elapsed,
        self_cpu,
        server_cpu,
    }
}

impl Window {
    /// Prints CPU microseconds per successful request (server and client apart when the server
    /// is its own process).
    pub fn print_cpu(&self) {
        let n = self.latencies.len().max(1) as f64;
        match self.server_cpu {
            Some(sc) => println!(
                "cpu server_cpu_us_per_req={:.1} client_cpu_us_per_req={:.1}",
                sc * 1e6 / n,
                self.self_cpu * 1e6 / n
            ),
            None => println!(
                "cpu process_cpu_us_per_req={:.1} (server and clients together)",
                self.self_cpu * 1e6 / n
            ),
        }
    }
}

/// The server under test, started the way every HTTP harness does it: with
/// `SLUICE_BENCH_PROCESS` set, the release binary as its own process ([`ServerProcess`]);
/// otherwise in this process on a free loopback port. Returns the in-process server or the
/// process (one of them), the endpoint, and the in-process server's data directory (keep it
/// alive as long as the server).
pub async fn start_server(
    full_sync: bool,
) -> (
    Option<sluice::server::RunningServer>,
    Option<ServerProcess>,
    String,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var("SLUICE_BENCH_PROCESS").is_ok() {
        let p = ServerProcess::start(full_sync);
        let e = p.endpoint.clone();
        return (None, Some(p), e, dir);
    }
    let mut cfg = sluice::config::Config::new(dir.path().to_path_buf());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.root_credentials = Some((AKID.into(), SECRET.into()));
    cfg.sqlite_full_sync = full_sync;
    let server = sluice::server::start_with(cfg, std::future::pending())
        .await
        .unwrap();
    let e = format!("http://{}", server.addr());
    (Some(server), None, e, dir)
}

/// A reqwest POST of `body` to `/` of `endpoint` carrying `headers` (as [`signed`] made them).
pub fn post_signed(
    http: &reqwest::Client,
    endpoint: &str,
    headers: &[(String, String)],
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    headers
        .iter()
        .fold(http.post(format!("{endpoint}/")).body(body), |r, (k, v)| {
            r.header(k, v)
        })
}
