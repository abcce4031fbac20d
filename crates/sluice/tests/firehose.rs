//! Firehose with the official SDK against a real receiver on 127.0.0.1: story B (the access key
//! from Secrets Manager, rotation without loss, failed data to the backup folder as error
//! records, the role's permissions enforced), ExtendedS3 objects, EventBridge rules targeting a
//! stream, the API's errors, and black-box tests of the real binary (SIGKILL under
//! PutRecordBatch load, no credential in the logs or on disk).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_firehose::Client;
use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::{
    BufferingHints, CompressionFormat, ExtendedS3DestinationConfiguration,
    HttpEndpointBufferingHints, HttpEndpointConfiguration, HttpEndpointDestinationConfiguration,
    HttpEndpointDestinationUpdate, HttpEndpointRetryOptions, HttpEndpointS3BackupMode, Record,
    S3DestinationConfiguration, SecretsManagerConfiguration, Tag,
};
use base64::Engine;
use common::*;
use serde_json::{Value, json};
use sluice::server::RunningServer;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const BUCKET: &str = "secrets-integration-fail-log-bucket-123456789012";
const API_KEY: &str = "tOTxb=#9Ek$si^GA";

// ---------------------------------------------------------------------------------------------
// A receiver speaking the Firehose HTTP endpoint protocol.

#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Value,
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn records(&self) -> Vec<Vec<u8>> {
        self.body["records"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| B64.decode(r["data"].as_str().unwrap_or_default()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
enum Mode {
    /// Answer 200 to everything.
    Accept,
    /// Answer 401 unless the access key is this one.
    OnlyKey(String),
    /// Answer this status to everything.
    Fail(u16),
}

#[derive(Debug)]
struct Receiver {
    url: String,
    state: Arc<Mutex<(Mode, Vec<Received>)>>,
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new((Mode::Accept, Vec::new())));
        let st = state.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let st = st.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, 128 * 1024 * 1024)
                    .await
                    .unwrap_or_default();
                let headers: Vec<(String, String)> = parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let gz = headers
                    .iter()
                    .any(|(k, v)| k == "content-encoding" && v == "gzip");
                let raw = if gz {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&bytes[..]),
                        &mut out,
                    )
                    .unwrap();
                    out
                } else {
                    bytes.to_vec()
                };
                let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                let key = headers
                    .iter()
                    .find(|(k, _)| k == "x-amz-firehose-access-key")
                    .map(|(_, v)| v.clone());
                let mut g = st.lock().unwrap();
                let status = match &g.0 {
                    Mode::Accept => 200,
                    Mode::OnlyKey(k) if key.as_deref() == Some(k.as_str()) => 200,
                    Mode::OnlyKey(_) => 401,
                    Mode::Fail(s) => *s,
                };
                let rid = body["requestId"].as_str().unwrap_or_default().to_string();
                g.1.push(Received {
                    headers,
                    body,
                    status,
                });
                let reply = json!({"requestId": rid, "timestamp": 1_700_000_000_000i64,
                    "errorMessage": if status == 200 { Value::Null } else { json!("Unauthorized or failing") }});
                axum::response::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(reply.to_string()))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/ingest?src=sluice",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    fn set_mode(&self, m: Mode) {
        self.state.lock().unwrap().0 = m;
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().1.clone()
    }

    /// Every record of every request answered 200.
    fn delivered(&self) -> Vec<Vec<u8>> {
        self.received()
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| r.records())
            .collect()
    }

    async fn wait_for(&self, what: &str, f: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if f(&self.received()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// An in-process server with fast retries.

struct Srv {
    server: RunningServer,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Srv {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.firehose_backoff_scale = Some(0.02);
        cfg.max_body_bytes = 8 * 1024 * 1024;
        let server = sluice::server::start_with(cfg, std::future::pending())
            .await
            .unwrap();
        Self {
            server,
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    async fn sdk(&self) -> aws_config::SdkConfig {
        sdk_config_with(&self.endpoint(), AKID, SECRET).await
    }

    async fn firehose(&self) -> Client {
        Client::new(&self.sdk().await)
    }
}

fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// An ExtendedS3 stream `name` to `bucket` (its role, `<name>-role`, may put objects there),
/// flushing at once, with `configure` adding settings; returns once it is ACTIVE.
async fn create_s3_stream(
    iam: &aws_sdk_iam::Client,
    fh: &Client,
    name: &str,
    bucket: &str,
    configure: impl FnOnce(
        aws_sdk_firehose::types::builders::ExtendedS3DestinationConfigurationBuilder,
    ) -> aws_sdk_firehose::types::builders::ExtendedS3DestinationConfigurationBuilder,
) {
    let role = create_role(
        iam,
        &format!("{name}-role"),
        json!([{"Effect": "Allow", "Action": "s3:PutObject", "Resource": format!("arn:aws:s3:::{bucket}/*")}]),
    )
    .await;
    let config = ExtendedS3DestinationConfiguration::builder()
        .role_arn(&role)
        .bucket_arn(format!("arn:aws:s3:::{bucket}"))
        .buffering_hints(
            BufferingHints::builder()
                .size_in_mbs(1)
                .interval_in_seconds(0)
                .build(),
        );
    fh.create_delivery_stream()
        .delivery_stream_name(name)
        .extended_s3_destination_configuration(configure(config).build().unwrap())
        .send()
        .await
        .unwrap();
    wait_status(fh, name, "ACTIVE").await;
}

/// The template's role: trusted by firehose.amazonaws.com, with the given statements.
async fn create_role(iam: &aws_sdk_iam::Client, name: &str, statements: Value) -> String {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "firehose.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    iam.create_role()
        .role_name(name)
        .path("/")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name(name)
        .policy_name("secrets-integration-deliver-policy")
        .policy_document(json!({"Version": "2012-10-17", "Statement": statements}).to_string())
        .send()
        .await
        .unwrap();
    role_arn(name)
}

async fn create_secret(sm: &aws_sdk_secretsmanager::Client, name: &str, key: &str) -> String {
    sm.create_secret()
        .name(name)
        .secret_string(json!({ "api_key": key }).to_string())
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string()
}

fn backup_config(role: &str) -> S3DestinationConfiguration {
    S3DestinationConfiguration::builder()
        .bucket_arn(format!("arn:aws:s3:::{BUCKET}"))
        .role_arn(role)
        .build()
        .unwrap()
}

struct StreamSpec<'a> {
    url: &'a str,
    role: &'a str,
    secret: Option<&'a str>,
    access_key: Option<&'a str>,
    retry_s: i32,
}

async fn create_stream(fh: &Client, name: &str, spec: StreamSpec<'_>) {
    let mut ep = HttpEndpointConfiguration::builder()
        .url(spec.url)
        .name("receiver");
    if let Some(k) = spec.access_key {
        ep = ep.access_key(k);
    }
    let mut dest = HttpEndpointDestinationConfiguration::builder()
        .endpoint_configuration(ep.build().unwrap())
        .s3_backup_mode(HttpEndpointS3BackupMode::FailedDataOnly)
        .role_arn(spec.role)
        .s3_configuration(backup_config(spec.role))
        .buffering_hints(
            HttpEndpointBufferingHints::builder()
                .size_in_mbs(1)
                .interval_in_seconds(0)
                .build(),
        )
        .retry_options(
            HttpEndpointRetryOptions::builder()
                .duration_in_seconds(spec.retry_s)
                .build(),
        );
    if let Some(s) = spec.secret {
        dest = dest.secrets_manager_configuration(
            SecretsManagerConfiguration::builder()
                .enabled(true)
                .secret_arn(s)
                .build()
                .unwrap(),
        );
    }
    fh.create_delivery_stream()
        .delivery_stream_name(name)
        .delivery_stream_type(aws_sdk_firehose::types::DeliveryStreamType::DirectPut)
        .http_endpoint_destination_configuration(dest.build())
        .send()
        .await
        .unwrap();
    wait_status(fh, name, "ACTIVE").await;
}

async fn wait_status(fh: &Client, name: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = fh
            .describe_delivery_stream()
            .delivery_stream_name(name)
            .send()
            .await
            .unwrap();
        let st = d
            .delivery_stream_description()
            .unwrap()
            .delivery_stream_status()
            .as_str()
            .to_string();
        if st == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} is {st}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put(fh: &Client, name: &str, data: &[u8]) -> String {
    fh.put_record()
        .delivery_stream_name(name)
        .record(Record::builder().data(Blob::new(data)).build().unwrap())
        .send()
        .await
        .unwrap()
        .record_id()
        .to_string()
}

async fn failure_details(fh: &Client, name: &str) -> Option<String> {
    let d = fh
        .describe_delivery_stream()
        .delivery_stream_name(name)
        .send()
        .await
        .unwrap();
    d.delivery_stream_description()
        .unwrap()
        .failure_description()
        .map(|f| f.details().to_string())
}

async fn wait_failure(fh: &Client, name: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(d) = failure_details(fh, name).await
            && f(&d)
        {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "no matching FailureDescription; last: {:?}",
            failure_details(fh, name).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The objects under `dir` (recursively) whose write has finished: the local object store
/// writes `<name>#<n>` and renames it to `<name>` when complete.
fn objects_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .filter(|(p, _)| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains('#'))
        })
        .collect()
}

/// Every JSON line of every object under `dir` (recursively), with the object's path.
fn json_lines(dir: &Path) -> Vec<(PathBuf, Value)> {
    if !dir.exists() {
        return Vec::new();
    }
    objects_under(dir)
        .into_iter()
        .flat_map(|(p, b)| {
            String::from_utf8_lossy(&b)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .map(|v| (p.clone(), v))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn template_statements(secret_arn: &str) -> Value {
    json!([
        {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": format!("arn:aws:s3:::{BUCKET}/*")},
        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": secret_arn}
    ])
}

// ---------------------------------------------------------------------------------------------
// Story B.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_b_access_key_from_secrets_manager_and_rotation_without_loss() {
    let srv = Srv::start().await;
    let sdk = srv.sdk().await;
    let (iam, sm, fh) = (
        aws_sdk_iam::Client::new(&sdk),
        aws_sdk_secretsmanager::Client::new(&sdk),
        srv.firehose().await,
    );
    let rx = Receiver::start().await;
    let secret = create_secret(&sm, "firehose-integration", API_KEY).await;
    let role = create_role(
        &iam,
        "secrets-integration-firehose-role",
        template_statements(&secret),
    )
    .await;
    create_stream(
        &fh,
        "secrets-integration-test",
        StreamSpec {
            url: &rx.url,
            role: &role,
            secret: Some(&secret),
            access_key: None,
            retry_s: 300,
        },
    )
    .await;

    // put-record "test": a POST in the Firehose format carrying the secret's api_key.
    put(&fh, "secrets-integration-test", b"test").await;
    rx.wait_for("the first delivery", |r| !r.is_empty()).await;
    let first = rx.received()[0].clone();
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-amz-firehose-access-key"), Some(API_KEY));
    assert_eq!(first.header("x-amz-firehose-protocol-version"), Some("1.0"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(
        first.header("x-amz-firehose-source-arn"),
        Some(
            format!("arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/secrets-integration-test")
                .as_str()
        )
    );
    let rid = first
        .header("x-amz-firehose-request-id")
        .unwrap()
        .to_string();
    assert_eq!(first.body["requestId"], rid.as_str());
    assert!(first.body["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(first.records(), vec![b"test".to_vec()]);
    assert!(first.header("x-amz-firehose-common-attributes").is_some());

    // The endpoint switches to a new key before the secret does: the record is retried (same
    // request id) and delivered with the new value as soon as the secret holds it, without
    // waiting for the cache's 10 minutes.
    rx.set_mode(Mode::OnlyKey("foobar".into()));
    put(&fh, "secrets-integration-test", b"during-rotation").await;
    rx.wait_for("a rejected attempt", |r| r.iter().any(|x| x.status == 401))
        .await;
    sm.put_secret_value()
        .secret_id(&secret)
        .secret_string(json!({"api_key": "foobar"}).to_string())
        .send()
        .await
        .unwrap();
    rx.wait_for("delivery with the new key", |r| {
        r.iter()
            .any(|x| x.status == 200 && x.records() == vec![b"during-rotation".to_vec()])
    })
    .await;
    let rotation: Vec<Received> = rx
        .received()
        .into_iter()
        .filter(|x| x.records() == vec![b"during-rotation".to_vec()])
        .collect();
    let ids: HashSet<&str> = rotation
        .iter()
        .map(|x| x.header("x-amz-firehose-request-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "the request id is stable across retries");
    let ok = rotation.iter().find(|x| x.status == 200).unwrap();
    assert_eq!(ok.header("x-amz-firehose-access-key"), Some("foobar"));

    // Later `foobar1`, secret first: the next record carries it at once.
    sm.put_secret_value()
        .secret_id(&secret)
        .secret_string(json!({"api_key": "foobar1"}).to_string())
        .send()
        .await
        .unwrap();
    rx.set_mode(Mode::OnlyKey("foobar1".into()));
    put(&fh, "secrets-integration-test", b"after-rotation").await;
    rx.wait_for("delivery with foobar1", |r| {
        r.iter()
            .any(|x| x.status == 200 && x.records() == vec![b"after-rotation".to_vec()])
    })
    .await;
    let delivered = rx.delivered();
    for want in [&b"test"[..], b"during-rotation", b"after-rotation"] {
        assert_eq!(
            delivered.iter().filter(|d| d.as_slice() == want).count(),
            1,
            "{:?} delivered exactly once",
            String::from_utf8_lossy(want)
        );
    }
    // Nothing failed over to the backup bucket.
    assert!(json_lines(&srv.dir.join("objects")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_down_past_the_retry_duration_leaves_every_record_in_the_backup_folder() {
    let srv = Srv::start().await;
    let sdk = srv.sdk().await;
    let (iam, sm, fh) = (
        aws_sdk_iam::Client::new(&sdk),
        aws_sdk_secretsmanager::Client::new(&sdk),
        srv.firehose().await,
    );
    let rx = Receiver::start().await;
    rx.set_mode(Mode::Fail(500));
    let secret = create_secret(&sm, "firehose-integration", API_KEY).await;
    let role = create_role(&iam, "firehose-role", template_statements(&secret)).await;
    create_stream(
        &fh,
        "down",
        StreamSpec {
            url: &rx.url,
            role: &role,
            secret: Some(&secret),
            access_key: None,
            retry_s: 1,
        },
    )
    .await;
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut batch = fh.put_record_batch().delivery_stream_name("down");
    for i in 0..20 {
        let d = format!("record-{i}").into_bytes();
        batch = batch.records(
            Record::builder()
                .data(Blob::new(d.clone()))
                .build()
                .unwrap(),
        );
        sent.push(d);
    }
    let out = batch.send().await.unwrap();
    assert_eq!(out.failed_put_count(), 0);
    assert_eq!(out.request_responses().len(), 20);
    let ids: HashSet<&str> = out
        .request_responses()
        .iter()
        .map(|r| r.record_id().unwrap())
        .collect();
    assert_eq!(ids.len(), 20);
    sent.push(b"single".to_vec());
    put(&fh, "down", b"single").await;

    let root = srv.dir.join("objects").join(BUCKET);
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let l = json_lines(&root);
        if l.len() >= sent.len() {
            break l;
        }
        assert!(Instant::now() < deadline, "backup has {} records", l.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut backed: Vec<Vec<u8>> = Vec::new();
    for (path, v) in &lines {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(rel.starts_with("http-endpoint-failed/"), "{rel}");
        assert!(rel.contains("/down-1-"), "{rel}");
        assert!(v["attemptsMade"].as_u64().unwrap() >= 2, "{v}");
        assert_eq!(v["errorCode"], "HttpEndpoint.DestinationException");
        assert!(v["errorMessage"].as_str().unwrap().contains("500"), "{v}");
        assert!(v["arrivalTimestamp"].as_i64().unwrap() > 0);
        assert!(
            v["attemptEndingTimestamp"].as_i64().unwrap()
                >= v["arrivalTimestamp"].as_i64().unwrap()
        );
        backed.push(B64.decode(v["rawData"].as_str().unwrap()).unwrap());
    }
    backed.sort();
    sent.sort();
    assert_eq!(backed, sent, "every record is in the backup, once");
    // The retries carried one request id per batch.
    let by_id: HashSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("x-amz-firehose-request-id").unwrap().to_string())
        .collect();
    assert!(by_id.len() <= 2, "{by_id:?}");
    assert!(rx.received().len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_get_secret_value_produces_an_error_naming_role_action_and_secret() {
    let srv = Srv::start().await;
    let sdk = srv.sdk().await;
    let (iam, sm, fh) = (
        aws_sdk_iam::Client::new(&sdk),
        aws_sdk_secretsmanager::Client::new(&sdk),
        srv.firehose().await,
    );
    let rx = Receiver::start().await;
    let secret = create_secret(&sm, "firehose-integration", API_KEY).await;
    let role = create_role(
        &iam,
        "no-secret-role",
        json!([{"Effect": "Allow", "Action": "s3:PutObject", "Resource": format!("arn:aws:s3:::{BUCKET}/*")}]),
    )
    .await;
    create_stream(
        &fh,
        "denied",
        StreamSpec {
            url: &rx.url,
            role: &role,
            secret: Some(&secret),
            access_key: None,
            retry_s: 300,
        },
    )
    .await;
    put(&fh, "denied", b"held back").await;
    let details = wait_failure(&fh, "denied", |d| d.contains("SecretsManager.AccessDenied")).await;
    assert!(details.contains(&role), "{details}");
    assert!(
        details.contains("secretsmanager:GetSecretValue"),
        "{details}"
    );
    assert!(details.contains(&secret), "{details}");
    assert!(rx.received().is_empty(), "nothing is sent without the key");
    let metrics = reqwest::get(format!("{}/_sluice/metrics", srv.endpoint()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "sluice_firehose_delivery_errors_total{stream=\"denied\",code=\"SecretsManager.AccessDenied\"}"
        ),
        "{metrics}"
    );
    let e = srv
        .server
        .firehose()
        .unwrap()
        .delivery_error("denied")
        .unwrap();
    assert_eq!(e.code, "SecretsManager.AccessDenied");

    // Granting the permission releases the held record.
    iam.put_role_policy()
        .role_name("no-secret-role")
        .policy_name("secrets-integration-deliver-policy")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": template_statements(&secret)}).to_string(),
        )
        .send()
        .await
        .unwrap();
    rx.wait_for("the held record", |r| {
        r.iter()
            .any(|x| x.status == 200 && x.records() == vec![b"held back".to_vec()])
    })
    .await;
    assert_eq!(
        rx.received()[0].header("x-amz-firehose-access-key"),
        Some(API_KEY)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_endpoint_and_backup_both_fail_the_stream_pauses_and_keeps_the_data() {
    let srv = Srv::start().await;
    let sdk = srv.sdk().await;
    let (iam, fh) = (aws_sdk_iam::Client::new(&sdk), srv.firehose().await);
    let rx = Receiver::start().await;
    rx.set_mode(Mode::Fail(503));
    // The role may not write the bucket.
    let role = create_role(
        &iam,
        "no-s3-role",
        json!([{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]),
    )
    .await;
    create_stream(
        &fh,
        "paused",
        StreamSpec {
            url: &rx.url,
            role: &role,
            secret: None,
            access_key: Some("configured-key"),
            retry_s: 0,
        },
    )
    .await;
    put(&fh, "paused", b"keep me").await;
    let details = wait_failure(&fh, "paused", |d| d.contains("S3.AccessDenied")).await;
    assert!(details.contains(&role), "{details}");
    assert!(details.contains("s3:PutObject"), "{details}");
    assert!(
        details.contains(&format!("arn:aws:s3:::{BUCKET}/http-endpoint-failed/")),
        "{details}"
    );
    assert!(json_lines(&srv.dir.join("objects")).is_empty());
    // The endpoint comes back: the paused record is delivered, with the configured AccessKey.
    rx.set_mode(Mode::Accept);
    rx.wait_for("the paused record", |r| {
        r.iter()
            .any(|x| x.status == 200 && x.records() == vec![b"keep me".to_vec()])
    })
    .await;
    let ok = rx.received().into_iter().find(|x| x.status == 200).unwrap();
    assert_eq!(
        ok.header("x-amz-firehose-access-key"),
        Some("configured-key")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_s3_writes_gzip_objects_with_the_prefix_layout() {
    let srv = Srv::start().await;
    let sdk = srv.sdk().await;
    let (iam, fh) = (aws_sdk_iam::Client::new(&sdk), srv.firehose().await);
    create_s3_stream(&iam, &fh, "to-s3", "data-bucket", |b| {
        b.prefix("logs/")
            .compression_format(CompressionFormat::Gzip)
    })
    .await;
    fh.put_record_batch()
        .delivery_stream_name("to-s3")
        .records(Record::builder().data(Blob::new("a\n")).build().unwrap())
        .records(Record::builder().data(Blob::new("b\n")).build().unwrap())
        .send()
        .await
        .unwrap();
    let root = srv.dir.join("objects").join("data-bucket");
    let deadline = Instant::now() + Duration::from_secs(30);
    let files = loop {
        let f = if root.exists() {
            objects_under(&root)
        } else {
            vec![]
        };
        if !f.is_empty() {
            break f;
        }
        assert!(Instant::now() < deadline, "no object written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (path, bytes) = &files[0];
    let rel = path
        .strip_prefix(&root)
        .unwrap()
        .to_string_lossy()
        .to_string();
    let parts: Vec<&str> = rel.split('/').collect();
    assert_eq!(parts[0], "logs");
    assert_eq!(parts.len(), 6, "{rel}");
    assert!(
        parts[5].starts_with("to-s3-1-") && parts[5].ends_with(".gz"),
        "{rel}"
    );
    let mut out = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out).unwrap();
    assert_eq!(out, "a\nb\n");
}

/// PutRecordBatch bodies in the SDKs' form take the server's fast path; any other valid JSON
/// form (whitespace, escapes, members the model does not know) takes the generic path. Both
/// answer alike and store the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_record_batch_bodies_in_any_json_form_are_answered_and_stored_alike() {
    let srv = Srv::start().await;
    let sdk = srv.sdk().await;
    let (iam, fh) = (aws_sdk_iam::Client::new(&sdk), srv.firehose().await);
    create_s3_stream(&iam, &fh, "forms", "forms", |b| b).await;
    let send = |body: &'static str| {
        let ep = srv.endpoint();
        async move {
            common::raw(
                &ep,
                "firehose",
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", "Firehose_20150804.PutRecordBatch"),
                ],
                body.as_bytes().to_vec(),
                true,
                SECRET,
            )
            .await
        }
    };
    // "one\n" and "two?\n" in the usual form, then "three?\n" (base64 with a "/", escaped as
    // JSON allows), with whitespace and a member the model does not know.
    let usual = send(
        r#"{"DeliveryStreamName":"forms","Records":[{"Data":"b25lCg=="},{"Data":"dHdvPwo="}]}"#,
    )
    .await;
    let other = send(
        "{ \"Records\" : [ {\"Data\": \"dGhyZWU\\/Cg==\", \"Extra\": 1} ],\n \"DeliveryStreamName\": \"forms\" }",
    )
    .await;
    for (r, n) in [(&usual, 2), (&other, 1)] {
        assert_eq!(r.status, 200, "{}", r.body);
        let obj = r.body.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys, ["Encrypted", "FailedPutCount", "RequestResponses"]);
        assert_eq!(
            (&r.body["FailedPutCount"], &r.body["Encrypted"]),
            (&json!(0), &json!(false))
        );
        let ids = r.body["RequestResponses"].as_array().unwrap();
        assert_eq!(ids.len(), n);
        for id in ids {
            let id = id["RecordId"].as_str().unwrap();
            assert!(
                id.len() == 26 && id.bytes().all(|c| c.is_ascii_digit()),
                "{id}"
            );
        }
    }
    // Errors come from the generic path, whichever form the body has.
    let bad = send(r#"{"DeliveryStreamName":"forms","Records":[]}"#).await;
    assert_eq!(bad.body["__type"], "ValidationException");
    let missing = send(r#"{"DeliveryStreamName":"nope","Records":[{"Data":"eA=="}]}"#).await;
    assert_eq!(missing.body["__type"], "ResourceNotFoundException");
    let root = srv.dir.join("objects").join("forms");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut all: Vec<u8> = if root.exists() {
            objects_under(&root)
                .into_iter()
                .flat_map(|(_, b)| b)
                .collect()
        } else {
            vec![]
        };
        all.sort_unstable();
        let mut want = b"one\ntwo?\nthree?\n".to_vec();
        want.sort_unstable();
        if all == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "objects hold {:?}",
            String::from_utf8_lossy(&all)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_rules_deliver_events_into_a_stream() {
    let srv = Srv::start().await;
    let sdk = srv.sdk().await;
    let (iam, fh, eb) = (
        aws_sdk_iam::Client::new(&sdk),
        srv.firehose().await,
        aws_sdk_eventbridge::Client::new(&sdk),
    );
    let rx = Receiver::start().await;
    let role = create_role(
        &iam,
        "r",
        json!([{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}]),
    )
    .await;
    create_stream(
        &fh,
        "from-events",
        StreamSpec {
            url: &rx.url,
            role: &role,
            secret: None,
            access_key: None,
            retry_s: 60,
        },
    )
    .await;
    eb.put_rule()
        .name("to-firehose")
        .event_pattern(r#"{"source":["app"]}"#)
        .send()
        .await
        .unwrap();
    let out = eb
        .put_targets()
        .rule("to-firehose")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("fh")
                .arn(format!(
                    "arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/from-events"
                ))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 0);
    eb.put_events()
        .entries(
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .source("app")
                .detail_type("Order")
                .detail(r#"{"n":1}"#)
                .build(),
        )
        .send()
        .await
        .unwrap();
    rx.wait_for("the event", |r| r.iter().any(|x| x.status == 200))
        .await;
    let rec = rx.delivered();
    let ev: Value = serde_json::from_slice(&rec[0]).unwrap();
    assert_eq!(ev["source"], "app");
    assert_eq!(ev["detail"]["n"], 1);
}

// ---------------------------------------------------------------------------------------------
// API behaviour and errors.

fn code<E, R>(e: &aws_sdk_firehose::error::SdkError<E, R>) -> String
where
    E: aws_sdk_firehose::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .unwrap_or("<no service error>")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_operations_and_their_errors() {
    let srv = Srv::start().await;
    let sdk = srv.sdk().await;
    let (iam, fh) = (aws_sdk_iam::Client::new(&sdk), srv.firehose().await);
    let rx = Receiver::start().await;
    let role = create_role(
        &iam,
        "api-role",
        json!([{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}]),
    )
    .await;
    let spec = || StreamSpec {
        url: &rx.url,
        role: &role,
        secret: None,
        access_key: Some("super-secret-access-key-0123456789"),
        retry_s: 60,
    };
    create_stream(&fh, "api", spec()).await;

    // Describe: the configuration, defaults filled, never the access key.
    let d = fh
        .describe_delivery_stream()
        .delivery_stream_name("api")
        .send()
        .await
        .unwrap();
    let desc = d.delivery_stream_description().unwrap();
    assert_eq!(desc.version_id(), "1");
    assert_eq!(desc.destinations().len(), 1);
    let dest = desc.destinations()[0]
        .http_endpoint_destination_description()
        .unwrap();
    assert_eq!(
        dest.endpoint_configuration().unwrap().url(),
        Some(rx.url.as_str())
    );
    assert_eq!(
        dest.endpoint_configuration().unwrap().name(),
        Some("receiver")
    );
    assert_eq!(
        dest.s3_backup_mode(),
        Some(&HttpEndpointS3BackupMode::FailedDataOnly)
    );
    let raw_desc = raw(
        &srv.endpoint(),
        "firehose",
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "Firehose_20150804.DescribeDeliveryStream"),
        ],
        br#"{"DeliveryStreamName":"api"}"#.to_vec(),
        true,
        SECRET,
    )
    .await;
    assert_eq!(raw_desc.status, 200);
    let text = raw_desc.body.to_string();
    assert!(!text.contains("super-secret-access-key"), "{text}");
    assert!(!text.contains("AccessKey"), "{text}");

    // The configured AccessKey reaches the endpoint.
    put(&fh, "api", b"x").await;
    rx.wait_for("delivery", |r| !r.is_empty()).await;
    assert_eq!(
        rx.received()[0].header("x-amz-firehose-access-key"),
        Some("super-secret-access-key-0123456789")
    );

    // Duplicates, unknown streams, bad arguments.
    let e = fh
        .create_delivery_stream()
        .delivery_stream_name("api")
        .http_endpoint_destination_configuration(
            HttpEndpointDestinationConfiguration::builder()
                .endpoint_configuration(
                    HttpEndpointConfiguration::builder()
                        .url(&rx.url)
                        .build()
                        .unwrap(),
                )
                .s3_configuration(backup_config(&role))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    let e = fh
        .describe_delivery_stream()
        .delivery_stream_name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    let e = fh
        .put_record()
        .delivery_stream_name("nope")
        .record(Record::builder().data(Blob::new("x")).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    for url in ["http://169.254.169.254/latest", "ftp://example.com/"] {
        let e = fh
            .create_delivery_stream()
            .delivery_stream_name("bad-url")
            .http_endpoint_destination_configuration(
                HttpEndpointDestinationConfiguration::builder()
                    .endpoint_configuration(
                        HttpEndpointConfiguration::builder()
                            .url(url)
                            .build()
                            .unwrap(),
                    )
                    .s3_configuration(backup_config(&role))
                    .build(),
            )
            .send()
            .await
            .unwrap_err();
        let c = code(&e);
        assert!(
            c == "InvalidArgumentException" || c == "ValidationException",
            "{url}: {c}"
        );
    }
    let e = fh
        .create_delivery_stream()
        .delivery_stream_name("two")
        .http_endpoint_destination_configuration(
            HttpEndpointDestinationConfiguration::builder()
                .endpoint_configuration(
                    HttpEndpointConfiguration::builder()
                        .url(&rx.url)
                        .build()
                        .unwrap(),
                )
                .s3_configuration(backup_config(&role))
                .build(),
        )
        .extended_s3_destination_configuration(
            ExtendedS3DestinationConfiguration::builder()
                .role_arn(&role)
                .bucket_arn("arn:aws:s3:::b")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = fh
        .create_delivery_stream()
        .delivery_stream_name("bad name!")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let mut big = fh.put_record_batch().delivery_stream_name("api");
    for _ in 0..501 {
        big = big.records(Record::builder().data(Blob::new("x")).build().unwrap());
    }
    assert_eq!(code(&big.send().await.unwrap_err()), "ValidationException");
    // More than 4 MiB of record data in one call.
    let mut heavy = fh.put_record_batch().delivery_stream_name("api");
    for _ in 0..5 {
        heavy = heavy.records(
            Record::builder()
                .data(Blob::new(vec![b'z'; 1_000_000]))
                .build()
                .unwrap(),
        );
    }
    assert_eq!(
        code(&heavy.send().await.unwrap_err()),
        "InvalidArgumentException"
    );

    // UpdateDestination: optimistic concurrency on the version id; the new URL applies.
    let upd = || {
        HttpEndpointDestinationUpdate::builder()
            .endpoint_configuration(
                HttpEndpointConfiguration::builder()
                    .url(format!("{}&v=2", rx.url))
                    .name("receiver-2")
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let e = fh
        .update_destination()
        .delivery_stream_name("api")
        .current_delivery_stream_version_id("7")
        .destination_id("destinationId-000000000001")
        .http_endpoint_destination_update(upd())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ConcurrentModificationException");
    fh.update_destination()
        .delivery_stream_name("api")
        .current_delivery_stream_version_id("1")
        .destination_id("destinationId-000000000001")
        .http_endpoint_destination_update(upd())
        .send()
        .await
        .unwrap();
    let d = fh
        .describe_delivery_stream()
        .delivery_stream_name("api")
        .send()
        .await
        .unwrap();
    let desc = d.delivery_stream_description().unwrap();
    assert_eq!(desc.version_id(), "2");
    assert!(desc.last_update_timestamp().is_some());
    let ep = desc.destinations()[0]
        .http_endpoint_destination_description()
        .unwrap()
        .endpoint_configuration()
        .unwrap();
    assert_eq!(ep.name(), Some("receiver-2"));
    put(&fh, "api", b"y").await;
    rx.wait_for("delivery to the new URL", |r| {
        r.iter().any(|x| x.records() == vec![b"y".to_vec()])
    })
    .await;

    // Tags.
    fh.tag_delivery_stream()
        .delivery_stream_name("api")
        .tags(Tag::builder().key("team").value("data").build().unwrap())
        .tags(
            Tag::builder()
                .key("sluice:secret-cache-ttl-seconds")
                .value("30")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let e = fh
        .tag_delivery_stream()
        .delivery_stream_name("api")
        .tags(
            Tag::builder()
                .key("sluice:secret-cache-ttl-seconds")
                .value("soon")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    fh.untag_delivery_stream()
        .delivery_stream_name("api")
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    let tags = fh
        .list_tags_for_delivery_stream()
        .delivery_stream_name("api")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags().len(), 1);
    assert_eq!(tags.tags()[0].key(), "sluice:secret-cache-ttl-seconds");
    assert!(!tags.has_more_tags());

    // A role Firehose may not assume: CREATING_FAILED with a FailureDescription.
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    iam.create_role()
        .role_name("not-for-firehose")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    let other = role_arn("not-for-firehose");
    fh.create_delivery_stream()
        .delivery_stream_name("failing")
        .http_endpoint_destination_configuration(
            HttpEndpointDestinationConfiguration::builder()
                .endpoint_configuration(
                    HttpEndpointConfiguration::builder()
                        .url(&rx.url)
                        .build()
                        .unwrap(),
                )
                .role_arn(&other)
                .s3_configuration(backup_config(&other))
                .build(),
        )
        .send()
        .await
        .unwrap();
    wait_status(&fh, "failing", "CREATING_FAILED").await;
    let f = failure_details(&fh, "failing").await.unwrap();
    assert!(f.contains(&other), "{f}");
    let e = fh
        .put_record()
        .delivery_stream_name("failing")
        .record(Record::builder().data(Blob::new("x")).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");

    // List and delete.
    let l = fh.list_delivery_streams().send().await.unwrap();
    assert_eq!(l.delivery_stream_names(), ["api", "failing"]);
    assert!(!l.has_more_delivery_streams());
    let l = fh.list_delivery_streams().limit(1).send().await.unwrap();
    assert_eq!(l.delivery_stream_names(), ["api"]);
    assert!(l.has_more_delivery_streams());
    fh.delete_delivery_stream()
        .delivery_stream_name("failing")
        .send()
        .await
        .unwrap();
    let e = fh
        .describe_delivery_stream()
        .delivery_stream_name("failing")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_need_firehose_permissions() {
    let srv = Srv::start().await;
    let sdk = srv.sdk().await;
    let iam = aws_sdk_iam::Client::new(&sdk);
    iam.create_user().user_name("writer").send().await.unwrap();
    iam.put_user_policy()
        .user_name("writer")
        .policy_name("p")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": "firehose:ListDeliveryStreams", "Resource": "*"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let key = iam
        .create_access_key()
        .user_name("writer")
        .send()
        .await
        .unwrap();
    let key = key.access_key().unwrap();
    let fh = Client::new(
        &sdk_config_with(
            &srv.endpoint(),
            key.access_key_id(),
            key.secret_access_key(),
        )
        .await,
    );
    fh.list_delivery_streams().send().await.unwrap();
    let e = fh
        .describe_delivery_stream()
        .delivery_stream_name("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
}

// ---------------------------------------------------------------------------------------------
// The real binary.

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &Path, port: u16, log: &Path) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir)
        .env("SLUICE_ROOT_ACCESS_KEY_ID", AKID)
        .env("SLUICE_ROOT_SECRET_ACCESS_KEY", SECRET)
        .env("SLUICE_ACCOUNT_ID", ACCOUNT)
        .env("SLUICE_REGION", REGION)
        .env("SLUICE_FIREHOSE_BACKOFF_SCALE", "0.01")
        .env("SLUICE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    wait_until_serving(port);
    child
}

fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_put_record_batch_load_delivers_every_acknowledged_record_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("sluice.log");
    let rx = Receiver::start().await;
    let port = free_port();
    let mut child = spawn(&dir, port, &log);
    let endpoint = format!("http://127.0.0.1:{port}");
    let sdk = sdk_config_with(&endpoint, AKID, SECRET).await;
    let iam = aws_sdk_iam::Client::new(&sdk);
    let fh = Client::new(&sdk);
    let role = create_role(
        &iam,
        "load-role",
        json!([{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}]),
    )
    .await;
    create_stream(
        &fh,
        "load",
        StreamSpec {
            url: &rx.url,
            role: &role,
            secret: None,
            access_key: Some("k"),
            retry_s: 600,
        },
    )
    .await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let fh = fh.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100_000 {
                let mut req = fh.put_record_batch().delivery_stream_name("load");
                let mut names = Vec::new();
                for k in 0..50 {
                    let n = format!("w{w}-i{i}-k{k}");
                    req = req.records(
                        Record::builder()
                            .data(Blob::new(n.clone()))
                            .build()
                            .unwrap(),
                    );
                    names.push(n);
                }
                match req.send().await {
                    Ok(out) if out.failed_put_count() == 0 => acked.lock().unwrap().extend(names),
                    _ => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 3000 {
        assert!(Instant::now() < deadline, "load did not progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop(&mut child, "-KILL");
    for t in tasks {
        t.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();

    let port = free_port();
    let mut child = spawn(&dir, port, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let got: HashSet<String> = rx
            .delivered()
            .into_iter()
            .map(|d| String::from_utf8(d).unwrap())
            .collect();
        let missing: Vec<String> = acked
            .iter()
            .filter(|a| !got.contains(*a))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop(&mut child, "-TERM");
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged records were never delivered (e.g. {:?})",
        missing.len(),
        acked.len(),
        missing.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_keys_and_secret_values_never_reach_the_logs_or_the_disk_unsealed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("sluice.log");
    let rx = Receiver::start().await;
    let port = free_port();
    let mut child = spawn(&dir, port, &log);
    let endpoint = format!("http://127.0.0.1:{port}");
    let sdk = sdk_config_with(&endpoint, AKID, SECRET).await;
    let (iam, sm, fh) = (
        aws_sdk_iam::Client::new(&sdk),
        aws_sdk_secretsmanager::Client::new(&sdk),
        Client::new(&sdk),
    );
    const SECRET_KEY: &str = "Zq9-secret-api-key-from-secrets-manager";
    const CONFIG_KEY: &str = "Xw7-configured-access-key-in-the-stream";
    let secret = create_secret(&sm, "leak-check", SECRET_KEY).await;
    let role = create_role(&iam, "leak-role", template_statements(&secret)).await;
    create_stream(
        &fh,
        "with-secret",
        StreamSpec {
            url: &rx.url,
            role: &role,
            secret: Some(&secret),
            access_key: None,
            retry_s: 60,
        },
    )
    .await;
    create_stream(
        &fh,
        "with-key",
        StreamSpec {
            url: &rx.url,
            role: &role,
            secret: None,
            access_key: Some(CONFIG_KEY),
            retry_s: 60,
        },
    )
    .await;
    // A rejected key makes the delivery log its errors (which must not name the key).
    rx.set_mode(Mode::OnlyKey("something-else".into()));
    put(&fh, "with-secret", b"one").await;
    put(&fh, "with-key", b"two").await;
    rx.wait_for("rejections", |r| {
        r.iter().filter(|x| x.status == 401).count() >= 4
    })
    .await;
    rx.set_mode(Mode::Accept);
    rx.wait_for("deliveries", |r| {
        r.iter().filter(|x| x.status == 200).count() >= 2
    })
    .await;
    let keys: HashSet<String> = rx
        .received()
        .iter()
        .filter_map(|r| r.header("x-amz-firehose-access-key").map(str::to_string))
        .collect();
    assert!(
        keys.contains(SECRET_KEY) && keys.contains(CONFIG_KEY),
        "{keys:?}"
    );
    stop(&mut child, "-TERM");

    let logs = std::fs::read(&log).unwrap();
    assert!(
        contains(&logs, b"firehose delivery error"),
        "the failures were logged"
    );
    for needle in [SECRET_KEY, CONFIG_KEY] {
        assert!(!contains(&logs, needle.as_bytes()), "{needle} in the logs");
        for (path, bytes) in files_under(&dir) {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{needle} unsealed in {}",
                path.display()
            );
        }
    }
}
