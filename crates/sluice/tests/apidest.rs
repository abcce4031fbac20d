//! EventBridge connections and API destinations through the official AWS SDK for Rust, with
//! real HTTP receivers on 127.0.0.1: story A end to end (a customer managed key with story A's
//! policy, an API-key connection, an API destination, an EC2 rule with an input transformer,
//! injected `aws.ec2` events, the audit trail of KMS calls made through Secrets Manager), each
//! wrong key policy making the connection DEAUTHORIZED with a reason naming it, OAuth client
//! credentials (caching, refresh on 401, refresh failure), basic auth with parameters, retries,
//! the rate limit, bad input, and credentials never reaching disk, logs or responses.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::ProvideErrorMetadata;
use aws_sdk_eventbridge::types::{
    ApiDestinationHttpMethod, ConnectionAuthorizationType, ConnectionBodyParameter,
    ConnectionHeaderParameter, ConnectionHttpParameters, ConnectionOAuthHttpMethod,
    ConnectionQueryStringParameter, ConnectionState, CreateConnectionApiKeyAuthRequestParameters,
    CreateConnectionAuthRequestParameters, CreateConnectionBasicAuthRequestParameters,
    CreateConnectionOAuthClientRequestParameters, CreateConnectionOAuthRequestParameters,
    HttpParameters, InputTransformer, PutEventsRequestEntry, RetryPolicy, Target,
    UpdateConnectionApiKeyAuthRequestParameters, UpdateConnectionAuthRequestParameters,
};
use aws_sdk_kms::types::Tag as KmsTag;
use common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------- a receiver

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Req {
    fn h(&self, k: &str) -> Option<&str> {
        self.headers
            .get(&k.to_ascii_lowercase())
            .map(String::as_str)
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

type Reply = (u16, Vec<(&'static str, String)>, String);
type Handler = Arc<dyn Fn(&Req) -> Reply + Send + Sync>;

struct Receiver {
    addr: SocketAddr,
    reqs: Arc<Mutex<Vec<Req>>>,
    handler: Arc<Mutex<Handler>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reqs: Arc<Mutex<Vec<Req>>> = Arc::default();
        let ok: Handler = Arc::new(|_| (200, vec![], "{}".into()));
        let handler = Arc::new(Mutex::new(ok));
        let (r2, h2) = (reqs.clone(), handler.clone());
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (reqs, handler) = (r2.clone(), h2.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 4 << 20).await.unwrap();
                let r = Req {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or("").to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                        })
                        .collect(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let h = handler.lock().unwrap().clone();
                let (status, headers, text) = h(&r);
                reqs.lock().unwrap().push(r);
                let mut b = http::Response::builder().status(status);
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                b.body(axum::body::Body::from(text)).unwrap()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            reqs,
            handler,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set(&self, h: impl Fn(&Req) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().unwrap() = Arc::new(h);
    }

    fn on(&self, path: &str) -> Vec<Req> {
        self.reqs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(path))
            .cloned()
            .collect()
    }

    /// Waits (at most 40 s) until `n` requests to `path` arrived.
    async fn wait(&self, path: &str, n: usize) -> Vec<Req> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let got = self.on(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} requests to {path} arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------- helpers

const KEY_ADMIN: &str = r#"{"Sid": "Key administrators", "Effect": "Allow",
  "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
  "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*",
             "kms:Update*", "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*",
             "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
             "kms:CancelKeyDeletion"],
  "Resource": "*"}"#;

/// Story A's first statement, with the given ViaService and SecretARN patterns.
fn eventbridge_statement(via: &str, secret_arn: &str) -> String {
    format!(
        r#"{{"Sid": "foreventbridge", "Effect": "Allow",
  "Principal": {{"AWS": "arn:aws:iam::123456789012:root"}}, "Action": "kms:*", "Resource": "*",
  "Condition": {{"StringLike": {{"kms:ViaService": "{via}",
    "kms:EncryptionContext:SecretARN": "{secret_arn}"}}}}}}"#
    )
}

const GOOD_VIA: &str = "secretsmanager.*.amazonaws.com";
const GOOD_ARN: &str = "arn:aws:secretsmanager:*:*:secret:events!connection/*";

/// Story A's policy exactly: the EventBridge statement and the usual administrator statement.
fn story_a_policy() -> String {
    format!(
        r#"{{"Version": "2012-10-17", "Id": "key-policy-example", "Statement": [{},
  {{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
   "Principal": {{"AWS": "arn:aws:iam::123456789012:root"}}, "Action": "kms:*", "Resource": "*"}}]}}"#,
        eventbridge_statement(GOOD_VIA, GOOD_ARN)
    )
}

/// A policy of the given statements plus key administration (no cryptographic use).
fn policy_of(statements: &[String]) -> String {
    let mut all: Vec<String> = statements.to_vec();
    all.push(KEY_ADMIN.to_string());
    format!(
        r#"{{"Version": "2012-10-17", "Statement": [{}]}}"#,
        all.join(",")
    )
}

async fn tagged_key(kms: &aws_sdk_kms::Client, policy: &str, alias: &str) -> String {
    let k = kms
        .create_key()
        .policy(policy)
        .tags(
            KmsTag::builder()
                .tag_key("EventBridgeApiDestinations")
                .tag_value("true")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let arn = k.key_metadata().unwrap().arn().unwrap().to_string();
    kms.create_alias()
        .alias_name(alias)
        .target_key_id(&arn)
        .send()
        .await
        .unwrap();
    arn
}

fn api_key_auth(name: &str, value: &str) -> CreateConnectionAuthRequestParameters {
    CreateConnectionAuthRequestParameters::builder()
        .api_key_auth_parameters(
            CreateConnectionApiKeyAuthRequestParameters::builder()
                .api_key_name(name)
                .api_key_value(value)
                .build()
                .unwrap(),
        )
        .build()
}

fn update_api_key(value: &str) -> UpdateConnectionAuthRequestParameters {
    UpdateConnectionAuthRequestParameters::builder()
        .api_key_auth_parameters(
            UpdateConnectionApiKeyAuthRequestParameters::builder()
                .api_key_value(value)
                .build(),
        )
        .build()
}

async fn describe(
    c: &Client,
    name: &str,
) -> aws_sdk_eventbridge::operation::describe_connection::DescribeConnectionOutput {
    c.describe_connection().name(name).send().await.unwrap()
}

async fn rule_to(c: &Client, rule: &str, pattern: &str, target: Target) {
    c.put_rule()
        .name(rule)
        .event_pattern(pattern)
        .send()
        .await
        .unwrap();
    let r = c
        .put_targets()
        .rule(rule)
        .targets(target)
        .send()
        .await
        .unwrap();
    assert_eq!(r.failed_entry_count(), 0, "{:?}", r.failed_entries());
}

async fn put(c: &Client, entries: Vec<PutEventsRequestEntry>) {
    let r = c
        .put_events()
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(r.failed_entry_count(), 0, "{:?}", r.entries());
}

fn custom(source: &str, detail: Value) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .source(source)
        .detail_type("Test")
        .detail(detail.to_string())
        .build()
}

fn ec2(instance: &str, state: &str) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .source("aws.ec2")
        .detail_type("EC2 Instance State-change Notification")
        .time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
        .resources(format!(
            "arn:aws:ec2:us-east-1:123456789012:instance/{instance}"
        ))
        .detail(json!({"instance-id": instance, "state": state}).to_string())
        .build()
}

async fn trail(s: &TestServer, name: &str) -> Vec<Value> {
    use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
    let ct = s.cloudtrail().await;
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let r = ct
            .lookup_events()
            .lookup_attributes(
                LookupAttribute::builder()
                    .attribute_key(LookupAttributeKey::EventName)
                    .attribute_value(name)
                    .build()
                    .unwrap(),
            )
            .max_results(50)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        out.extend(
            r.events()
                .iter()
                .map(|e| serde_json::from_str::<Value>(e.cloud_trail_event().unwrap()).unwrap()),
        );
        token = r.next_token().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

async fn aws_sources_server() -> TestServer {
    TestServer::start_configured(|c| c.allow_aws_sources = true).await
}

// ---------------------------------------------------------------- story A

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_a_end_to_end_and_every_wrong_key_policy() {
    let s = aws_sources_server().await;
    let rx = Receiver::start().await;
    let ev = s.events().await;
    let kms = s.kms().await;
    let key_arn = tagged_key(&kms, &story_a_policy(), "alias/datadog").await;
    let dd_key = "dd-0123456789abcdef";

    // 2. The connection, its key named by alias ARN.
    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/datadog");
    let created = ev
        .create_connection()
        .name("datadog")
        .authorization_type(ConnectionAuthorizationType::ApiKey)
        .auth_parameters(api_key_auth("DD-API-KEY", dd_key))
        .kms_key_identifier(&alias_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.connection_state(),
        Some(&ConnectionState::Authorized)
    );
    let conn_arn = created.connection_arn().unwrap().to_string();
    assert!(conn_arn.starts_with(&format!(
        "arn:aws:events:{REGION}:{ACCOUNT}:connection/datadog/"
    )));
    let d = describe(&ev, "datadog").await;
    assert_eq!(d.state_reason(), None);
    assert_eq!(d.kms_key_identifier(), Some(alias_arn.as_str()));
    let secret_arn = d.secret_arn().unwrap().to_string();
    let uuid = conn_arn.rsplit('/').next().unwrap();
    assert!(
        secret_arn.starts_with(&format!(
            "arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:events!connection/datadog/{uuid}-"
        )),
        "{secret_arn}"
    );
    let api = d
        .auth_parameters()
        .unwrap()
        .api_key_auth_parameters()
        .unwrap();
    assert_eq!(api.api_key_name(), Some("DD-API-KEY"));
    assert!(
        !format!("{d:?}").contains(dd_key),
        "Describe shows no secret"
    );
    // The secret is owned by EventBridge, encrypted under the key, and closed to the user.
    let sm = s.secrets().await;
    let meta = sm
        .describe_secret()
        .secret_id(&secret_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(meta.owning_service(), Some("events"));
    let e = sm
        .put_secret_value()
        .secret_id(&secret_arn)
        .secret_string("{}")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidRequestException"));
    let versions = sm
        .list_secret_version_ids()
        .secret_id(&secret_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions()[0].kms_key_ids(), [key_arn.as_str()]);

    // 3. The API destination; 4. the rule with the EC2 pattern and an input transformer.
    let dest = ev
        .create_api_destination()
        .name("datadog-intake")
        .connection_arn(&conn_arn)
        .invocation_endpoint(rx.url("/api/v1/events"))
        .http_method(ApiDestinationHttpMethod::Post)
        .send()
        .await
        .unwrap();
    let dest_arn = dest.api_destination_arn().unwrap().to_string();
    let dd = ev
        .describe_api_destination()
        .name("datadog-intake")
        .send()
        .await
        .unwrap();
    assert_eq!(dd.invocation_rate_limit_per_second(), Some(300));
    let transformer = InputTransformer::builder()
        .input_paths_map("instance", "$.detail.instance-id")
        .input_paths_map("state", "$.detail.state")
        .input_paths_map("time", "$.time")
        .input_template(
            r#"{"title": "EC2 instance <instance>", "text": "<instance> is now <state>", "date_happened": <time>, "tags": ["source:sluice"]}"#,
        )
        .build()
        .unwrap();
    rule_to(
        &ev,
        "ec2-to-datadog",
        r#"{"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]}"#,
        Target::builder()
            .id("datadog")
            .arn(&dest_arn)
            .input_transformer(transformer)
            .build()
            .unwrap(),
    )
    .await;

    // 5. An instance starts and stops; 6. one POST per event with the key and the body.
    put(
        &ev,
        vec![ec2("i-0abc", "running"), ec2("i-0abc", "stopped")],
    )
    .await;
    let got = rx.wait("/api/v1/events", 2).await;
    let mut texts = HashSet::new();
    for r in &got {
        assert_eq!(r.method, "POST");
        assert_eq!(r.h("DD-API-KEY"), Some(dd_key));
        assert_eq!(
            r.h("user-agent"),
            Some("Amazon/EventBridge/ApiDestinations")
        );
        assert_eq!(r.h("content-type"), Some("application/json; charset=utf-8"));
        assert_eq!(r.h("range"), Some("bytes=0-1048575"));
        let b = r.json();
        assert_eq!(b["title"], "EC2 instance i-0abc");
        assert_eq!(b["date_happened"], "2023-11-14T22:13:20Z");
        assert_eq!(b["tags"], json!(["source:sluice"]));
        texts.insert(b["text"].as_str().unwrap().to_string());
    }
    assert_eq!(
        texts,
        HashSet::from([
            "i-0abc is now running".to_string(),
            "i-0abc is now stopped".to_string()
        ])
    );

    // The trail: KMS calls made by EventBridge's service-linked role through Secrets Manager,
    // bound to the secret's ARN; no API key anywhere in it.
    let gdk = trail(&s, "GenerateDataKey").await;
    let ours: Vec<&Value> = gdk
        .iter()
        .filter(|d| d["requestParameters"]["encryptionContext"]["SecretARN"] == secret_arn.as_str())
        .collect();
    assert!(
        !ours.is_empty(),
        "GenerateDataKey for the connection secret is audited"
    );
    for d in &ours {
        assert_eq!(
            d["userIdentity"]["invokedBy"],
            "secretsmanager.amazonaws.com"
        );
        assert_eq!(d["userIdentity"]["type"], "AssumedRole");
        assert!(
            d["userIdentity"]["arn"]
                .as_str()
                .unwrap()
                .contains("assumed-role/AWSServiceRoleForAmazonEventBridgeApiDestinations/"),
            "{d}"
        );
        assert_eq!(d["resources"][0]["ARN"], key_arn.as_str());
    }
    let dec = trail(&s, "Decrypt").await;
    assert!(dec.iter().any(|d| d["errorCode"].is_null()
        && d["requestParameters"]["encryptionContext"]["SecretARN"] == secret_arn.as_str()
        && d["requestParameters"]["encryptionContext"]["SecretVersionId"]
            != "RequestToValidateKeyAccess"
        && d["userIdentity"]["invokedBy"] == "secretsmanager.amazonaws.com"));
    let cc = trail(&s, "CreateConnection").await;
    assert_eq!(cc.len(), 1);
    assert_eq!(
        cc[0]["requestParameters"]["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"],
        "HIDDEN_DUE_TO_SECURITY_REASONS"
    );
    for name in [
        "CreateConnection",
        "GenerateDataKey",
        "Decrypt",
        "GetSecretValue",
        "UpdateSecret",
    ] {
        for d in trail(&s, name).await {
            assert!(
                !d.to_string().contains(dd_key),
                "{name} audit record has the key"
            );
        }
    }

    // 7. Wrong key policies: each makes the connection DEAUTHORIZED (the re-entered key cannot
    // be sealed) with a reason naming what is wrong; the right policy authorizes it again.
    let variants: Vec<(&str, String, &str)> = vec![
        (
            "no matching statement",
            policy_of(&[]),
            "no key policy statement that applies allows kms:GenerateDataKey",
        ),
        (
            "wrong ViaService",
            policy_of(&[eventbridge_statement("s3.*.amazonaws.com", GOOD_ARN)]),
            "kms:ViaService",
        ),
        (
            "wrong SecretARN pattern",
            policy_of(&[eventbridge_statement(
                GOOD_VIA,
                "arn:aws:secretsmanager:*:*:secret:other/*",
            )]),
            "kms:EncryptionContext:SecretARN",
        ),
    ];
    let mut n_delivered = 2;
    for (what, bad, expect) in &variants {
        kms.put_key_policy()
            .key_id(&key_arn)
            .policy(bad)
            .send()
            .await
            .unwrap();
        let u = ev
            .update_connection()
            .name("datadog")
            .auth_parameters(update_api_key(dd_key))
            .send()
            .await
            .unwrap();
        assert_eq!(
            u.connection_state(),
            Some(&ConnectionState::Deauthorized),
            "{what}"
        );
        let d = describe(&ev, "datadog").await;
        let reason = d.state_reason().unwrap_or_default().to_string();
        eprintln!("{what}: {reason}");
        assert!(reason.contains(expect), "{what}: {reason}");
        assert!(
            reason.contains(&key_arn),
            "{what}: the reason names the key: {reason}"
        );
        assert!(reason.contains("kms:GenerateDataKey"), "{what}: {reason}");
        assert!(!reason.contains(dd_key));
        assert!(
            d.secret_arn().is_none(),
            "{what}: the unusable secret is gone"
        );

        // The fix: the first statement alone (with key administration) is enough.
        kms.put_key_policy()
            .key_id(&key_arn)
            .policy(policy_of(&[eventbridge_statement(GOOD_VIA, GOOD_ARN)]))
            .send()
            .await
            .unwrap();
        let u = ev
            .update_connection()
            .name("datadog")
            .auth_parameters(update_api_key(dd_key))
            .send()
            .await
            .unwrap();
        assert_eq!(
            u.connection_state(),
            Some(&ConnectionState::Authorized),
            "{what}"
        );
        put(&ev, vec![ec2("i-0def", "running")]).await;
        n_delivered += 1;
        rx.wait("/api/v1/events", n_delivered).await;
    }

    // The tag requirement: without EventBridgeApiDestinations=true the role may not use the
    // key, and the reason says so.
    kms.untag_resource()
        .key_id(&key_arn)
        .tag_keys("EventBridgeApiDestinations")
        .send()
        .await
        .unwrap();
    let u = ev
        .update_connection()
        .name("datadog")
        .auth_parameters(update_api_key(dd_key))
        .send()
        .await
        .unwrap();
    assert_eq!(u.connection_state(), Some(&ConnectionState::Deauthorized));
    let reason = describe(&ev, "datadog")
        .await
        .state_reason()
        .unwrap()
        .to_string();
    eprintln!("untagged key: {reason}");
    assert!(
        reason.contains("EventBridgeApiDestinations=true"),
        "{reason}"
    );
    assert!(reason.contains(&key_arn), "{reason}");
    kms.tag_resource()
        .key_id(&key_arn)
        .tags(
            KmsTag::builder()
                .tag_key("EventBridgeApiDestinations")
                .tag_value("true")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // A disabled key.
    kms.disable_key().key_id(&key_arn).send().await.unwrap();
    let u = ev
        .update_connection()
        .name("datadog")
        .auth_parameters(update_api_key(dd_key))
        .send()
        .await
        .unwrap();
    assert_eq!(u.connection_state(), Some(&ConnectionState::Deauthorized));
    let reason = describe(&ev, "datadog")
        .await
        .state_reason()
        .unwrap()
        .to_string();
    eprintln!("disabled key: {reason}");
    assert!(reason.contains("is disabled"), "{reason}");
    assert!(reason.contains(&key_arn), "{reason}");
    kms.enable_key().key_id(&key_arn).send().await.unwrap();
    let u = ev
        .update_connection()
        .name("datadog")
        .auth_parameters(update_api_key(dd_key))
        .send()
        .await
        .unwrap();
    assert_eq!(u.connection_state(), Some(&ConnectionState::Authorized));

    // DeauthorizeConnection removes the secret; events wait (retried) and are delivered once
    // UpdateConnection authorizes the connection again.
    let before = secret_arn_of(&ev, "datadog").await.unwrap();
    let d = ev
        .deauthorize_connection()
        .name("datadog")
        .send()
        .await
        .unwrap();
    assert_eq!(d.connection_state(), Some(&ConnectionState::Deauthorized));
    assert!(secret_arn_of(&ev, "datadog").await.is_none());
    let e = sm
        .describe_secret()
        .secret_id(&before)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    put(&ev, vec![ec2("i-0fed", "stopping")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let u = ev
        .update_connection()
        .name("datadog")
        .auth_parameters(update_api_key(dd_key))
        .send()
        .await
        .unwrap();
    assert_eq!(u.connection_state(), Some(&ConnectionState::Authorized));
    n_delivered += 1;
    let got = rx.wait("/api/v1/events", n_delivered).await;
    assert!(
        got.iter()
            .any(|r| r.json()["text"] == "i-0fed is now stopping")
    );

    // The endpoint rejecting the key (401) deauthorizes an API-key connection by itself.
    rx.set(|_| (401, vec![], "{\"errors\":[\"Forbidden\"]}".into()));
    put(&ev, vec![ec2("i-0bad", "running")]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let d = describe(&ev, "datadog").await;
        if d.connection_state() == Some(&ConnectionState::Deauthorized) {
            break d.state_reason().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "not deauthorized after a 401");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reason.contains("HTTP 401"), "{reason}");

    // A key disabled after the secret was sealed: the next read of the secret (here the first
    // after a restart, which empties the credential cache) fails to decrypt and deauthorizes
    // the connection, naming the key and the operation. Connections survive the restart.
    rx.set(|_| (200, vec![], "{}".into()));
    let u = ev
        .update_connection()
        .name("datadog")
        .auth_parameters(update_api_key(dd_key))
        .send()
        .await
        .unwrap();
    assert_eq!(u.connection_state(), Some(&ConnectionState::Authorized));
    kms.disable_key().key_id(&key_arn).send().await.unwrap();
    let mut s = s;
    s.stop().await;
    let mut cfg = config(&s.dir);
    cfg.allow_aws_sources = true;
    s.server = Some(
        sluice::server::start_with(cfg, std::future::pending())
            .await
            .unwrap(),
    );
    let ev = s.events().await;
    put(&ev, vec![ec2("i-0late", "running")]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let d = describe(&ev, "datadog").await;
        if d.connection_state() == Some(&ConnectionState::Deauthorized) {
            break d.state_reason().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "not deauthorized when the key was disabled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("disabled at invocation: {reason}");
    assert!(
        reason.contains("Decrypt") && reason.contains("is disabled"),
        "{reason}"
    );
    assert!(
        !rx.on("/api/v1/events")
            .iter()
            .any(|r| r.body.contains("i-0late"))
    );
    let kms = s.kms().await;
    kms.enable_key().key_id(&key_arn).send().await.unwrap();
    let u = ev
        .update_connection()
        .name("datadog")
        .auth_parameters(update_api_key(dd_key))
        .send()
        .await
        .unwrap();
    assert_eq!(u.connection_state(), Some(&ConnectionState::Authorized));
    let deadline = Instant::now() + Duration::from_secs(40);
    while !rx
        .on("/api/v1/events")
        .iter()
        .any(|r| r.body.contains("i-0late"))
    {
        assert!(
            Instant::now() < deadline,
            "not delivered once re-authorized"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn secret_arn_of(ev: &Client, name: &str) -> Option<String> {
    describe(ev, name).await.secret_arn().map(str::to_string)
}

// ---------------------------------------------------------------- OAuth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_client_credentials_cache_refresh_and_failure() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let ev = s.events().await;
    // The token endpoint issues tok-1, tok-2, ...; the API accepts only the latest token
    // unless `revoked` moved past it. `token_status` lets the test break the token endpoint.
    let issued = Arc::new(AtomicUsize::new(0));
    let revoked = Arc::new(AtomicUsize::new(0));
    let token_status = Arc::new(AtomicUsize::new(200));
    let expires_in = Arc::new(AtomicUsize::new(3600));
    {
        let (issued, revoked, token_status, expires_in) = (
            issued.clone(),
            revoked.clone(),
            token_status.clone(),
            expires_in.clone(),
        );
        rx.set(move |r| {
            if r.path == "/oauth/token" {
                use base64::Engine;
                let want = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("client-1:client-secret-1")
                );
                let form: HashMap<String, String> = url_pairs(&r.body);
                if r.h("authorization") != Some(want.as_str())
                    || form.get("grant_type").map(String::as_str) != Some("client_credentials")
                    || form.get("scope").map(String::as_str) != Some("events:write")
                    || r.h("x-tenant") != Some("t1")
                    || r.h("content-type") != Some("application/x-www-form-urlencoded")
                {
                    return (400, vec![], "{\"error\":\"invalid_request\"}".into());
                }
                let st = token_status.load(Ordering::SeqCst) as u16;
                if st != 200 {
                    return (st, vec![], "{\"error\":\"invalid_client\"}".into());
                }
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                let body = json!({"access_token": format!("tok-{n}"), "token_type": "bearer",
                    "expires_in": expires_in.load(Ordering::SeqCst)});
                return (
                    200,
                    vec![("content-type", "application/json".into())],
                    body.to_string(),
                );
            }
            let latest = issued.load(Ordering::SeqCst);
            let ok = latest > revoked.load(Ordering::SeqCst)
                && r.h("authorization") == Some(format!("Bearer tok-{latest}").as_str());
            if ok {
                (200, vec![], "{}".into())
            } else {
                (401, vec![], "{}".into())
            }
        });
    }
    let oauth_http = ConnectionHttpParameters::builder()
        .body_parameters(
            ConnectionBodyParameter::builder()
                .key("scope")
                .value("events:write")
                .build(),
        )
        .header_parameters(
            ConnectionHeaderParameter::builder()
                .key("X-Tenant")
                .value("t1")
                .build(),
        )
        .build();
    let c = ev
        .create_connection()
        .name("saas-oauth")
        .authorization_type(ConnectionAuthorizationType::OauthClientCredentials)
        .auth_parameters(
            CreateConnectionAuthRequestParameters::builder()
                .o_auth_parameters(
                    CreateConnectionOAuthRequestParameters::builder()
                        .client_parameters(
                            CreateConnectionOAuthClientRequestParameters::builder()
                                .client_id("client-1")
                                .client_secret("client-secret-1")
                                .build()
                                .unwrap(),
                        )
                        .authorization_endpoint(rx.url("/oauth/token"))
                        .http_method(ConnectionOAuthHttpMethod::Post)
                        .o_auth_http_parameters(oauth_http)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(c.connection_state(), Some(&ConnectionState::Authorized));
    assert_eq!(
        issued.load(Ordering::SeqCst),
        1,
        "one token request at authorization"
    );
    let d = describe(&ev, "saas-oauth").await;
    let o = d.auth_parameters().unwrap().o_auth_parameters().unwrap();
    assert_eq!(o.client_parameters().unwrap().client_id(), Some("client-1"));
    assert!(!format!("{d:?}").contains("client-secret-1"));
    assert!(!format!("{d:?}").contains("tok-1"));
    let dest = ev
        .create_api_destination()
        .name("saas")
        .connection_arn(c.connection_arn().unwrap())
        .invocation_endpoint(rx.url("/v1/ingest"))
        .http_method(ApiDestinationHttpMethod::Post)
        .send()
        .await
        .unwrap();
    rule_to(
        &ev,
        "to-saas",
        r#"{"source": ["app"]}"#,
        Target::builder()
            .id("saas")
            .arn(dest.api_destination_arn().unwrap())
            .retry_policy(RetryPolicy::builder().maximum_retry_attempts(5).build())
            .build()
            .unwrap(),
    )
    .await;

    // Caching: three events, one token.
    for i in 0..3 {
        put(&ev, vec![custom("app", json!({"n": i}))]).await;
    }
    let got = rx.wait("/v1/ingest", 3).await;
    assert!(
        got.iter()
            .all(|r| r.h("authorization") == Some("Bearer tok-1"))
    );
    assert_eq!(issued.load(Ordering::SeqCst), 1, "the token is cached");

    // The API revokes tok-1: the 401 makes EventBridge refresh and send again.
    revoked.store(1, Ordering::SeqCst);
    put(&ev, vec![custom("app", json!({"n": "after-revoke"}))]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rx
        .on("/v1/ingest")
        .iter()
        .any(|r| r.h("authorization") == Some("Bearer tok-2") && r.body.contains("after-revoke"))
    {
        assert!(
            Instant::now() < deadline,
            "not delivered with a refreshed token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(issued.load(Ordering::SeqCst), 2);

    // A token that expires within 60 s is refreshed before use. (Waits on which token an
    // event went out with, not on request counts: a 401 and its retry interleave with other
    // work, and the connection's credential cache may send one attempt with an older token.)
    let token_no = |r: &Req| {
        r.h("authorization")
            .and_then(|a| a.strip_prefix("Bearer tok-"))
            .and_then(|k| k.parse::<usize>().ok())
    };
    let sent_with_newer = |what: &str, than: usize| {
        rx.on("/v1/ingest")
            .iter()
            .any(|r| r.body.contains(what) && token_no(r).is_some_and(|k| k > than))
    };
    expires_in.store(30, Ordering::SeqCst);
    revoked.store(2, Ordering::SeqCst);
    put(&ev, vec![custom("app", json!({"n": "short-1"}))]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sent_with_newer("short-1", 2) {
        assert!(
            Instant::now() < deadline,
            "short-1 not sent with a new token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The token short-1 was accepted with expires in 30 s.
    let n = issued.load(Ordering::SeqCst);
    put(&ev, vec![custom("app", json!({"n": "short-2"}))]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sent_with_newer("short-2", n) {
        assert!(
            Instant::now() < deadline,
            "short-2 not sent with a refreshed token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        issued.load(Ordering::SeqCst) > n,
        "a token expiring within 60 s was refreshed proactively"
    );
    assert_eq!(
        describe(&ev, "saas-oauth").await.connection_state(),
        Some(&ConnectionState::Authorized)
    );

    // The token endpoint fails: the refresh after the next 401 fails and the connection is
    // deauthorized, saying why.
    expires_in.store(3600, Ordering::SeqCst);
    token_status.store(401, Ordering::SeqCst);
    revoked.store(usize::MAX / 2, Ordering::SeqCst);
    put(&ev, vec![custom("app", json!({"n": "broken"}))]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        let d = describe(&ev, "saas-oauth").await;
        if d.connection_state() == Some(&ConnectionState::Deauthorized) {
            break d.state_reason().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "not deauthorized when the refresh failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reason.contains("OAuth"), "{reason}");
    assert!(reason.contains("HTTP 401"), "{reason}");
    assert!(!reason.contains("client-secret-1"));
}

fn url_pairs(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":")))
        .collect()
}

// ---------------------------------------------------------------- basic auth and parameters

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_parameters_retries_and_dead_letters() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let ev = s.events().await;
    let params = ConnectionHttpParameters::builder()
        .header_parameters(
            ConnectionHeaderParameter::builder()
                .key("X-Conn")
                .value("from-connection")
                .build(),
        )
        .header_parameters(
            ConnectionHeaderParameter::builder()
                .key("X-Secret-Header")
                .value("hdr-secret-77")
                .is_value_secret(true)
                .build(),
        )
        .header_parameters(
            ConnectionHeaderParameter::builder()
                .key("User-Agent")
                .value("spoofed")
                .build(),
        )
        .query_string_parameters(
            ConnectionQueryStringParameter::builder()
                .key("q")
                .value("conn")
                .build(),
        )
        .body_parameters(
            ConnectionBodyParameter::builder()
                .key("extra")
                .value("added")
                .build(),
        )
        .build();
    let c = ev
        .create_connection()
        .name("basic")
        .description("basic auth")
        .authorization_type(ConnectionAuthorizationType::Basic)
        .auth_parameters(
            CreateConnectionAuthRequestParameters::builder()
                .basic_auth_parameters(
                    CreateConnectionBasicAuthRequestParameters::builder()
                        .username("svc-user")
                        .password("pw-secret-42")
                        .build()
                        .unwrap(),
                )
                .invocation_http_parameters(params)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(c.connection_state(), Some(&ConnectionState::Authorized));
    let d = describe(&ev, "basic").await;
    assert!(d.kms_key_identifier().is_none());
    let auth = d.auth_parameters().unwrap();
    assert_eq!(
        auth.basic_auth_parameters().unwrap().username(),
        Some("svc-user")
    );
    let headers = auth
        .invocation_http_parameters()
        .unwrap()
        .header_parameters();
    let secret_h = headers
        .iter()
        .find(|h| h.key() == Some("X-Secret-Header"))
        .unwrap();
    assert_eq!(
        secret_h.value(),
        None,
        "secret parameter values are not shown"
    );
    assert!(!format!("{d:?}").contains("pw-secret-42"));
    assert!(!format!("{d:?}").contains("hdr-secret-77"));

    let dest = ev
        .create_api_destination()
        .name("items")
        .connection_arn(c.connection_arn().unwrap())
        .invocation_endpoint(rx.url("/items/*/sub/*"))
        .http_method(ApiDestinationHttpMethod::Put)
        .invocation_rate_limit_per_second(1000)
        .send()
        .await
        .unwrap();
    let target = Target::builder()
        .id("items")
        .arn(dest.api_destination_arn().unwrap())
        .http_parameters(
            HttpParameters::builder()
                .path_parameter_values("$.detail.id")
                .path_parameter_values("fixed")
                .header_parameters("X-Conn", "from-target")
                .header_parameters("X-Target", "$.detail.id")
                .query_string_parameters("q", "target")
                .query_string_parameters("t", "$.detail.kind")
                .build(),
        )
        .retry_policy(RetryPolicy::builder().maximum_retry_attempts(3).build())
        .build()
        .unwrap();
    rule_to(&ev, "items", r#"{"source": ["shop"]}"#, target).await;
    let listed = ev
        .list_targets_by_rule()
        .rule("items")
        .send()
        .await
        .unwrap();
    let hp = listed.targets()[0].http_parameters().unwrap();
    assert_eq!(hp.path_parameter_values(), ["$.detail.id", "fixed"]);

    // A 429 with Retry-After first, then success: delivered once retried.
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let calls = calls.clone();
        rx.set(move |r| {
            if r.path.starts_with("/items/") && calls.fetch_add(1, Ordering::SeqCst) == 0 {
                (429, vec![("retry-after", "1".into())], String::new())
            } else {
                (200, vec![], String::new())
            }
        });
    }
    put(
        &ev,
        vec![custom("shop", json!({"id": "sku-9", "kind": "shoe"}))],
    )
    .await;
    let got = rx.wait("/items/", 2).await;
    let r = &got[1];
    assert_eq!(r.method, "PUT");
    assert_eq!(r.path, "/items/sku-9/sub/fixed");
    let q: HashMap<String, String> = url_pairs(&r.query);
    assert_eq!(
        q.get("q").map(String::as_str),
        Some("conn"),
        "connection values win"
    );
    assert_eq!(q.get("t").map(String::as_str), Some("shoe"));
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("svc-user:pw-secret-42")
    );
    assert_eq!(r.h("authorization"), Some(basic.as_str()));
    assert_eq!(r.h("x-conn"), Some("from-connection"));
    assert_eq!(r.h("x-target"), Some("sku-9"));
    assert_eq!(r.h("x-secret-header"), Some("hdr-secret-77"));
    assert_eq!(
        r.h("user-agent"),
        Some("Amazon/EventBridge/ApiDestinations")
    );
    let body = r.json();
    assert_eq!(body["extra"], "added");
    assert_eq!(body["detail"]["id"], "sku-9");
    assert_eq!(got[0].body, got[1].body);

    // A redirect and a 400 are not retried: they go to the dead letters at once.
    let events = s.server.as_ref().unwrap().events().unwrap().clone();
    rx.set(|r| {
        if r.body.contains("redirect") {
            (
                302,
                vec![("location", "http://127.0.0.1:1/".into())],
                String::new(),
            )
        } else {
            (400, vec![], "bad".into())
        }
    });
    put(
        &ev,
        vec![custom("shop", json!({"id": "redirect", "kind": "x"}))],
    )
    .await;
    put(
        &ev,
        vec![custom("shop", json!({"id": "invalid", "kind": "x"}))],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let dl = loop {
        let dl = events.dead_letters(100).await.unwrap();
        if dl.len() >= 2 {
            break dl;
        }
        assert!(Instant::now() < deadline, "no dead letters");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for l in &dl {
        assert_eq!(l.letter.error_code, "ERROR_FROM_TARGET");
        assert_eq!(l.letter.delivery.attempt, 1, "not retried");
        assert!(!l.letter.error_message.contains("pw-secret"));
    }
    assert!(dl.iter().any(|l| {
        l.letter.error_message.contains("HTTP 302")
            && l.letter
                .error_message
                .contains("redirects are not followed")
    }));
    assert!(
        dl.iter()
            .any(|l| l.letter.error_message.contains("HTTP 400"))
    );
    assert_eq!(
        rx.on("/")
            .iter()
            .filter(|r| r.path.starts_with("http"))
            .count(),
        0
    );
}

// ---------------------------------------------------------------- rate limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_delays_events_and_drops_none() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let ev = s.events().await;
    let c = ev
        .create_connection()
        .name("k")
        .authorization_type(ConnectionAuthorizationType::ApiKey)
        .auth_parameters(api_key_auth("x-api-key", "k"))
        .send()
        .await
        .unwrap();
    let dest = ev
        .create_api_destination()
        .name("slow")
        .connection_arn(c.connection_arn().unwrap())
        .invocation_endpoint(rx.url("/slow"))
        .http_method(ApiDestinationHttpMethod::Post)
        .invocation_rate_limit_per_second(20)
        .send()
        .await
        .unwrap();
    rule_to(
        &ev,
        "slow",
        r#"{"source": ["burst"]}"#,
        Target::builder()
            .id("slow")
            .arn(dest.api_destination_arn().unwrap())
            .build()
            .unwrap(),
    )
    .await;
    for b in 0..6 {
        let entries = (0..10)
            .map(|i| custom("burst", json!({"n": b * 10 + i})))
            .collect();
        put(&ev, entries).await;
    }
    let got = rx.wait("/slow", 60).await;
    let ns: HashSet<i64> = got
        .iter()
        .map(|r| r.json()["detail"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns.len(), 60, "every event delivered once");
    let events = s.server.as_ref().unwrap().events().unwrap().clone();
    assert!(events.dead_letters(10).await.unwrap().is_empty());
    let m = events.metrics().await;
    assert_eq!(m.failed_invocations, 0);
}

// ---------------------------------------------------------------- bad input

#[tokio::test]
async fn bad_input_gets_aws_errors() {
    let s = TestServer::start().await;
    let ev = s.events().await;
    let rx_url = "http://127.0.0.1:9/x";

    // The auth block must match the type.
    let e = ev
        .create_connection()
        .name("c1")
        .authorization_type(ConnectionAuthorizationType::Basic)
        .auth_parameters(api_key_auth("k", "v"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"), "{e:?}");
    let e = ev
        .create_connection()
        .name("bad name!")
        .authorization_type(ConnectionAuthorizationType::ApiKey)
        .auth_parameters(api_key_auth("k", "v"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"));
    let c = ev
        .create_connection()
        .name("c1")
        .authorization_type(ConnectionAuthorizationType::ApiKey)
        .auth_parameters(api_key_auth("k", "v"))
        .send()
        .await
        .unwrap();
    let conn_arn = c.connection_arn().unwrap().to_string();
    let e = ev
        .create_connection()
        .name("c1")
        .authorization_type(ConnectionAuthorizationType::ApiKey)
        .auth_parameters(api_key_auth("k", "v"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceAlreadyExistsException"));
    // A key that does not exist: the connection exists but is not authorized, and says why.
    let c2 = ev
        .create_connection()
        .name("c2")
        .authorization_type(ConnectionAuthorizationType::ApiKey)
        .auth_parameters(api_key_auth("k", "v"))
        .kms_key_identifier("alias/does-not-exist")
        .send()
        .await
        .unwrap();
    assert_eq!(c2.connection_state(), Some(&ConnectionState::Deauthorized));
    let reason = describe(&ev, "c2")
        .await
        .state_reason()
        .unwrap()
        .to_string();
    assert!(reason.contains("alias/does-not-exist"), "{reason}");
    let e = ev
        .describe_connection()
        .name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    let e = ev
        .delete_connection()
        .name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    let e = ev
        .deauthorize_connection()
        .name("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    let e = ev
        .update_connection()
        .name("c1")
        .authorization_type(ConnectionAuthorizationType::Basic)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some("ValidationException"),
        "basic needs a username and password"
    );

    // API destinations.
    let e = ev
        .create_api_destination()
        .name("d")
        .connection_arn(format!(
            "arn:aws:events:{REGION}:{ACCOUNT}:connection/none/0000"
        ))
        .invocation_endpoint(rx_url)
        .http_method(ApiDestinationHttpMethod::Post)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    for bad in [
        "http://169.254.169.254/latest/meta-data",
        "ftp://example.com/x",
        "http://*.example.com/x",
        "http://10.0.0.1/x",
    ] {
        let e = ev
            .create_api_destination()
            .name("d")
            .connection_arn(&conn_arn)
            .invocation_endpoint(bad)
            .http_method(ApiDestinationHttpMethod::Post)
            .send()
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("ValidationException"), "{bad}: {e:?}");
    }
    let e = ev
        .create_api_destination()
        .name("d")
        .connection_arn(&conn_arn)
        .invocation_endpoint(rx_url)
        .http_method(ApiDestinationHttpMethod::Post)
        .invocation_rate_limit_per_second(0)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ValidationException"));
    for name in ["d1", "d2", "other"] {
        ev.create_api_destination()
            .name(name)
            .connection_arn(&conn_arn)
            .invocation_endpoint(rx_url)
            .http_method(ApiDestinationHttpMethod::Get)
            .send()
            .await
            .unwrap();
    }
    let e = ev
        .create_api_destination()
        .name("d1")
        .connection_arn(&conn_arn)
        .invocation_endpoint(rx_url)
        .http_method(ApiDestinationHttpMethod::Get)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceAlreadyExistsException"));
    let l = ev
        .list_api_destinations()
        .name_prefix("d")
        .limit(1)
        .send()
        .await
        .unwrap();
    assert_eq!(l.api_destinations().len(), 1);
    let l2 = ev
        .list_api_destinations()
        .name_prefix("d")
        .set_next_token(l.next_token().map(str::to_string))
        .send()
        .await
        .unwrap();
    assert_eq!(l2.api_destinations()[0].name(), Some("d2"));
    let u = ev
        .update_api_destination()
        .name("d1")
        .invocation_rate_limit_per_second(7)
        .http_method(ApiDestinationHttpMethod::Patch)
        .send()
        .await
        .unwrap();
    assert!(u.api_destination_arn().is_some());
    let d1 = ev
        .describe_api_destination()
        .name("d1")
        .send()
        .await
        .unwrap();
    assert_eq!(d1.invocation_rate_limit_per_second(), Some(7));
    assert_eq!(d1.http_method(), Some(&ApiDestinationHttpMethod::Patch));
    let e = ev
        .describe_api_destination()
        .name("zz")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    ev.delete_api_destination()
        .name("other")
        .send()
        .await
        .unwrap();
    let e = ev
        .delete_api_destination()
        .name("other")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));

    // Targets naming an API destination that does not exist are refused per entry.
    ev.put_rule()
        .name("r")
        .event_pattern(r#"{"source":["a"]}"#)
        .send()
        .await
        .unwrap();
    let r = ev
        .put_targets()
        .rule("r")
        .targets(
            Target::builder()
                .id("t")
                .arn(format!(
                    "arn:aws:events:{REGION}:{ACCOUNT}:api-destination/none/0000"
                ))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.failed_entry_count(), 1);

    // Listing connections, by state.
    let l = ev
        .list_connections()
        .connection_state(ConnectionState::Deauthorized)
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = l.connections().iter().filter_map(|c| c.name()).collect();
    assert_eq!(names, ["c2"]);
    let l = ev.list_connections().send().await.unwrap();
    assert_eq!(l.connections().len(), 2);

    // Deleting a connection deletes its secret.
    let secret = secret_arn_of(&ev, "c1").await.unwrap();
    let del = ev.delete_connection().name("c1").send().await.unwrap();
    assert_eq!(del.connection_state(), Some(&ConnectionState::Deleting));
    let e = s
        .secrets()
        .await
        .describe_secret()
        .secret_id(&secret)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
}

// ---------------------------------------------------------------- no credential leaks

/// The real binary with debug logs: API keys, passwords, client secrets, OAuth tokens and
/// secret parameter values reach the receiver but never the data directory, the logs, the
/// audit trail or any API answer (raw or base64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_disk_logs_or_answers() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("sluice.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&dir)
        .env("SLUICE_LOG", "debug")
        .env("SLUICE_ROOT_ACCESS_KEY_ID", AKID)
        .env("SLUICE_ROOT_SECRET_ACCESS_KEY", SECRET)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until_serving(port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let cfg = sdk_config_with(&endpoint, AKID, SECRET).await;
    let ev = Client::new(&cfg);
    let rx = Receiver::start().await;
    let api_key = "APIKEY-MARKER-7d1c0e55";
    let password = "PASSWORD-MARKER-91ab";
    let client_secret = "CLIENTSECRET-MARKER-3f2e";
    let token = "TOKEN-MARKER-c0ffee11";
    let param = "PARAM-MARKER-5150";
    rx.set(move |r| {
        if r.path == "/token" {
            let body = json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600});
            return (200, vec![], body.to_string());
        }
        if r.path == "/reject" {
            return (401, vec![], format!("echo {api_key}"));
        }
        (200, vec![], String::new())
    });
    let secret_param = ConnectionHttpParameters::builder()
        .header_parameters(
            ConnectionHeaderParameter::builder()
                .key("X-Hidden")
                .value(param)
                .is_value_secret(true)
                .build(),
        )
        .build();
    let mut arns = Vec::new();
    let a = ev
        .create_connection()
        .name("apikey")
        .authorization_type(ConnectionAuthorizationType::ApiKey)
        .auth_parameters(
            CreateConnectionAuthRequestParameters::builder()
                .api_key_auth_parameters(
                    CreateConnectionApiKeyAuthRequestParameters::builder()
                        .api_key_name("X-Key")
                        .api_key_value(api_key)
                        .build()
                        .unwrap(),
                )
                .invocation_http_parameters(secret_param)
                .build(),
        )
        .send()
        .await
        .unwrap();
    arns.push(a.connection_arn().unwrap().to_string());
    let b = ev
        .create_connection()
        .name("basic")
        .authorization_type(ConnectionAuthorizationType::Basic)
        .auth_parameters(
            CreateConnectionAuthRequestParameters::builder()
                .basic_auth_parameters(
                    CreateConnectionBasicAuthRequestParameters::builder()
                        .username("u")
                        .password(password)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    arns.push(b.connection_arn().unwrap().to_string());
    let o = ev
        .create_connection()
        .name("oauth")
        .authorization_type(ConnectionAuthorizationType::OauthClientCredentials)
        .auth_parameters(
            CreateConnectionAuthRequestParameters::builder()
                .o_auth_parameters(
                    CreateConnectionOAuthRequestParameters::builder()
                        .client_parameters(
                            CreateConnectionOAuthClientRequestParameters::builder()
                                .client_id("cid")
                                .client_secret(client_secret)
                                .build()
                                .unwrap(),
                        )
                        .authorization_endpoint(rx.url("/token"))
                        .http_method(ConnectionOAuthHttpMethod::Post)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(o.connection_state(), Some(&ConnectionState::Authorized));
    arns.push(o.connection_arn().unwrap().to_string());
    for (i, (arn, path)) in arns.iter().zip(["/a", "/reject", "/o"]).enumerate() {
        let d = ev
            .create_api_destination()
            .name(format!("d{i}"))
            .connection_arn(arn)
            .invocation_endpoint(rx.url(path))
            .http_method(ApiDestinationHttpMethod::Post)
            .send()
            .await
            .unwrap();
        rule_to(
            &ev,
            &format!("r{i}"),
            r#"{"source": ["leak"]}"#,
            Target::builder()
                .id("t")
                .arn(d.api_destination_arn().unwrap())
                .retry_policy(RetryPolicy::builder().maximum_retry_attempts(0).build())
                .build()
                .unwrap(),
        )
        .await;
    }
    put(&ev, vec![custom("leak", json!({"k": 1}))]).await;
    let a = rx.wait("/a", 1).await;
    assert_eq!(a[0].h("x-key"), Some(api_key));
    assert_eq!(a[0].h("x-hidden"), Some(param));
    rx.wait("/reject", 1).await;
    let o = rx.wait("/o", 1).await;
    assert_eq!(
        o[0].h("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    // Wait for the 401 to deauthorize the basic connection (a log line with its reason).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = ev.describe_connection().name("basic").send().await.unwrap();
        if d.connection_state() == Some(&ConnectionState::Deauthorized) {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every answer: Describe, List, the audit trail.
    let mut answers = String::new();
    for n in ["apikey", "basic", "oauth"] {
        answers.push_str(&format!(
            "{:?}",
            ev.describe_connection().name(n).send().await.unwrap()
        ));
    }
    answers.push_str(&format!(
        "{:?}",
        ev.list_connections().send().await.unwrap()
    ));
    let ct = aws_sdk_cloudtrail::Client::new(&cfg);
    let mut token_next = None;
    loop {
        let r = ct
            .lookup_events()
            .max_results(50)
            .set_next_token(token_next)
            .send()
            .await
            .unwrap();
        for e in r.events() {
            answers.push_str(e.cloud_trail_event().unwrap_or(""));
        }
        token_next = r.next_token().map(str::to_string);
        if token_next.is_none() {
            break;
        }
    }
    assert!(answers.contains("HIDDEN_DUE_TO_SECURITY_REASONS"));

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "exit status {st:?}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for m in [api_key, password, client_secret, token, param] {
        needles.push(m.as_bytes().to_vec());
        needles.push(b64.encode(m).into_bytes());
    }
    needles.push(b64.encode(format!("u:{password}")).into_bytes());
    needles.push(b64.encode(format!("cid:{client_secret}")).into_bytes());
    let mut files = files_under(&dir);
    assert!(files.iter().any(|(p, _)| p.ends_with("sluice.db")));
    let log_bytes = std::fs::read(&log).unwrap();
    let log_text = String::from_utf8_lossy(&log_bytes).to_string();
    assert!(
        log_text.contains("connection deauthorized"),
        "the logs are written"
    );
    files.push((log.clone(), log_bytes));
    files.push((tmp.path().join("answers"), answers.into_bytes()));
    for (path, bytes) in files {
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{} contains a credential ({})",
                path.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
}
