//! Shared test harness: an in-process server on 127.0.0.1 with a temporary data directory,
//! clients of the official AWS SDK for Rust pointed at it, and a raw SigV4 signer for
//! protocol-level tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use sluice::config::Config;
use sluice::server::RunningServer;

pub const AKID: &str = "AKIATESTTESTTESTTEST";
pub const SECRET: &str = "testSecretKeyForSluiceIntegrationTests0";
pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn config(dir: &Path) -> Config {
    let mut cfg = Config::new(dir.to_path_buf());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.account_id = ACCOUNT.into();
    cfg.region = REGION.into();
    cfg.root_credentials = Some((AKID.into(), SECRET.into()));
    cfg.max_body_bytes = 1024 * 1024;
    cfg
}

impl TestServer {
    pub async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir).await;
        s._tmp = Some(tmp);
        s
    }

    /// Starts with the test configuration changed by `f` (e.g. `allow_aws_sources`).
    pub async fn start_configured(f: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        f(&mut cfg);
        let server = sluice::server::start_with(cfg, std::future::pending())
            .await
            .expect("server starts");
        Self {
            server: Some(server),
            dir: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
        }
    }

    pub async fn start_in(dir: &Path) -> Self {
        let server = sluice::server::start_with(config(dir), std::future::pending())
            .await
            .expect("server starts");
        Self {
            server: Some(server),
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.as_ref().unwrap().addr())
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_with(&self.endpoint(), AKID, SECRET).await
    }

    pub async fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config().await)
    }

    pub async fn events(&self) -> aws_sdk_eventbridge::Client {
        aws_sdk_eventbridge::Client::new(&self.sdk_config().await)
    }

    pub async fn cloudtrail(&self) -> aws_sdk_cloudtrail::Client {
        aws_sdk_cloudtrail::Client::new(&self.sdk_config().await)
    }

    pub async fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
    }

    pub async fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk_config().await)
    }

    pub async fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.sdk_config().await)
    }

    pub async fn firehose(&self) -> aws_sdk_firehose::Client {
        aws_sdk_firehose::Client::new(&self.sdk_config().await)
    }

    /// An SDK config signing with other credentials (an IAM user's key, STS session credentials).
    pub async fn sdk_config_as(
        &self,
        akid: &str,
        secret: &str,
        token: Option<&str>,
    ) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(
                akid,
                secret,
                token.map(str::to_string),
                None,
                "test",
            ))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await
    }

    /// Stops the server (graceful), keeping the data directory.
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }

    /// Restarts on the same data directory (new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        let server = sluice::server::start_with(config(&self.dir), std::future::pending())
            .await
            .expect("server restarts");
        self.server = Some(server);
    }
}

pub async fn sdk_config_with(endpoint: &str, akid: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::from_keys(akid, secret, None))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await
}

/// A raw HTTP response.
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

/// Sends `body` to `endpoint` with the given headers, signed with SigV4 for `service` unless
/// `sign` is false.
pub async fn raw(
    endpoint: &str,
    service: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    sign: bool,
    secret: &str,
) -> RawResponse {
    use aws_sigv4::http_request::{
        SignableBody, SignableRequest, SigningSettings, sign as do_sign,
    };
    use aws_sigv4::sign::v4;
    let url = format!("{endpoint}/");
    let host = endpoint.trim_start_matches("http://").to_string();
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("host".into(), host));
    if sign {
        let identity = Credentials::new(AKID, secret, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name(service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            "POST",
            &url,
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&body),
        )
        .unwrap();
        let (instructions, _) = do_sign(signable, &params).unwrap().into_parts();
        for (k, v) in instructions.headers() {
            all.push((k.to_string(), v.to_string()));
        }
    }
    let client = reqwest::Client::new();
    let mut req = client.post(&url).body(body);
    for (k, v) in &all {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Every file under `dir`, recursively, with its bytes.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Waits (at most 20 s) until a sluice server on `127.0.0.1:port` answers
/// `GET /_sluice/health` with 200. A bare TCP connect is not enough: while nothing listens yet,
/// Linux can connect a socket to itself when the kernel picks the target port as its source
/// port, and a test would then talk to no server at all.
pub fn wait_until_serving(port: u16) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let healthy = std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
                s.write_all(
                    b"GET /_sluice/health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
                )?;
                let mut head = [0u8; 12];
                s.read_exact(&mut head)?;
                Ok(&head == b"HTTP/1.1 200")
            })
            .unwrap_or(false);
        if healthy {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}
