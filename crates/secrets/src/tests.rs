//! Service tests through the Rust API (the SDK tests are in crates/sluice/tests/secrets.rs).

use std::sync::Arc;

use serde_json::{Value, json};
use sluice_audit::{AuditFilter, AuditLog};
use sluice_core::{AwsError, CallContext, Clock, ManualClock, Principal};
use sluice_crypto::RootKey;
use sluice_kms::{Kms, KmsConfig, NoIdentityPolicies, PolicyAuthorizer};
use sluice_store::Store;
use sluice_store::sqlite::SqliteStore;

use crate::{NewValue, SecretCache, Secrets, SecretsConfig};

const ACCT: &str = "111122223333";

struct Env {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    audit: AuditLog,
    kms: Arc<Kms>,
    sm: Arc<Secrets>,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("db"), Default::default()).unwrap());
    let clock = ManualClock::new(time::macros::datetime!(2026-01-01 00:00 UTC));
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let audit = AuditLog::new(store.clone(), c.clone(), ACCT);
    let kms = Arc::new(Kms::new(
        store.clone(),
        Arc::new(RootKey::from_bytes(&[9; 32])),
        c.clone(),
        audit.clone(),
        Arc::new(PolicyAuthorizer::new(Arc::new(NoIdentityPolicies))),
        KmsConfig {
            account: ACCT.into(),
            region: "us-east-1".into(),
        },
    ));
    let sm = Arc::new(Secrets::new(
        store,
        kms.clone(),
        c,
        audit.clone(),
        Arc::new(NoIdentityPolicies),
        SecretsConfig {
            account: ACCT.into(),
            region: "us-east-1".into(),
        },
    ));
    Env {
        _dir: dir,
        clock,
        audit,
        kms,
        sm,
    }
}

fn root() -> CallContext {
    CallContext::direct(Principal::root(ACCT, None), "us-east-1", "req-1")
}

impl Env {
    async fn call(&self, op: &str, input: Value) -> Result<Value, AwsError> {
        self.sm.handle(op, &root(), input).await
    }

    async fn count(&self, source: &str, name: &str) -> usize {
        self.audit
            .query(
                &AuditFilter {
                    event_name: Some(name.into()),
                    event_source: Some(source.into()),
                    ..Default::default()
                },
                100_000,
                None,
            )
            .await
            .unwrap()
            .len()
    }

    async fn decrypts(&self) -> usize {
        self.count("kms.amazonaws.com", "Decrypt").await
    }
}

#[tokio::test]
async fn values_are_enveloped_and_versions_move_labels() {
    let e = env();
    let created = e
        .call("CreateSecret", json!({"Name": "db", "SecretString": "one"}))
        .await
        .unwrap();
    let arn = created["ARN"].as_str().unwrap().to_string();
    let v1 = created["VersionId"].as_str().unwrap().to_string();
    assert!(arn.starts_with(&format!(
        "arn:aws:secretsmanager:us-east-1:{ACCT}:secret:db-"
    )));
    assert_eq!(
        arn.len(),
        format!("arn:aws:secretsmanager:us-east-1:{ACCT}:secret:db-").len() + 6
    );
    // By name, full ARN and partial ARN.
    for id in [
        "db".to_string(),
        arn.clone(),
        format!("arn:aws:secretsmanager:us-east-1:{ACCT}:secret:db"),
    ] {
        let got = e
            .call("GetSecretValue", json!({"SecretId": id}))
            .await
            .unwrap();
        assert_eq!(got["SecretString"], "one");
    }
    let put = e
        .call(
            "PutSecretValue",
            json!({"SecretId": "db", "SecretString": "two"}),
        )
        .await
        .unwrap();
    let v2 = put["VersionId"].as_str().unwrap().to_string();
    let d = e
        .call("DescribeSecret", json!({"SecretId": "db"}))
        .await
        .unwrap();
    assert_eq!(d["VersionIdsToStages"][&v2], json!(["AWSCURRENT"]));
    assert_eq!(d["VersionIdsToStages"][&v1], json!(["AWSPREVIOUS"]));
    assert!(d.get("KmsKeyId").is_none(), "managed key is not shown");
    let prev = e
        .call(
            "GetSecretValue",
            json!({"SecretId": "db", "VersionStage": "AWSPREVIOUS"}),
        )
        .await
        .unwrap();
    assert_eq!(prev["SecretString"], "one");
    // The AWS managed key exists and is AWS managed.
    let key = e
        .kms
        .handle(
            "DescribeKey",
            &root(),
            json!({"KeyId": "alias/aws/secretsmanager"}),
        )
        .await
        .unwrap();
    assert_eq!(key["KeyMetadata"]["KeyManager"], "AWS");
    // KMS saw both data keys bound to {SecretARN, SecretVersionId} via Secrets Manager.
    let gdk = e
        .audit
        .query(
            &AuditFilter {
                event_name: Some("GenerateDataKey".into()),
                ..Default::default()
            },
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(gdk.len(), 2);
    for (_, r) in &gdk {
        assert_eq!(
            r.user_identity.invoked_by.as_deref(),
            Some("secretsmanager.amazonaws.com")
        );
        assert_eq!(r.request_parameters["encryptionContext"]["SecretARN"], arn);
    }
}

#[tokio::test]
async fn idempotency_tokens() {
    let e = env();
    let token = "a".repeat(32);
    e.call("CreateSecret", json!({"Name": "s", "SecretString": "x"}))
        .await
        .unwrap();
    let a = e
        .call(
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "y", "ClientRequestToken": token}),
        )
        .await
        .unwrap();
    assert_eq!(a["VersionId"], token);
    let again = e
        .call(
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "y", "ClientRequestToken": token}),
        )
        .await
        .unwrap();
    assert_eq!(again["VersionId"], token);
    let other = e
        .call(
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "z", "ClientRequestToken": token}),
        )
        .await
        .unwrap_err();
    assert_eq!(other.code, "ResourceExistsException");
    let list = e
        .call(
            "ListSecretVersionIds",
            json!({"SecretId": "s", "IncludeDeprecated": true}),
        )
        .await
        .unwrap();
    assert_eq!(list["Versions"].as_array().unwrap().len(), 2);
    // Both a string and a binary value: refused.
    let both = e
        .call(
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "y", "SecretBinary": "AAE="}),
        )
        .await
        .unwrap_err();
    assert_eq!(both.code, "InvalidParameterException");
}

#[tokio::test]
async fn deletion_window_restore_and_purge() {
    let e = env();
    e.call("CreateSecret", json!({"Name": "gone", "SecretString": "x"}))
        .await
        .unwrap();
    let bad = e
        .call(
            "DeleteSecret",
            json!({"SecretId": "gone", "RecoveryWindowInDays": 3}),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code, "InvalidParameterException");
    e.call(
        "DeleteSecret",
        json!({"SecretId": "gone", "RecoveryWindowInDays": 7}),
    )
    .await
    .unwrap();
    let err = e
        .call("GetSecretValue", json!({"SecretId": "gone"}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "InvalidRequestException");
    assert!(err.message.contains("marked for deletion"));
    e.call("RestoreSecret", json!({"SecretId": "gone"}))
        .await
        .unwrap();
    e.call("GetSecretValue", json!({"SecretId": "gone"}))
        .await
        .unwrap();
    e.call(
        "DeleteSecret",
        json!({"SecretId": "gone", "RecoveryWindowInDays": 7}),
    )
    .await
    .unwrap();
    e.clock.advance_millis(6 * 24 * 3600 * 1000);
    e.sm.run_maintenance().await.unwrap();
    e.call("DescribeSecret", json!({"SecretId": "gone"}))
        .await
        .unwrap();
    e.clock.advance_millis(24 * 3600 * 1000);
    e.sm.run_maintenance().await.unwrap();
    let err = e
        .call("DescribeSecret", json!({"SecretId": "gone"}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "ResourceNotFoundException");
    assert_eq!(
        err.message,
        "Secrets Manager can't find the specified secret."
    );
    // The name is free again.
    e.call("CreateSecret", json!({"Name": "gone", "SecretString": "y"}))
        .await
        .unwrap();
}

#[tokio::test]
async fn managed_secrets_refuse_ordinary_changes() {
    let e = env();
    let events = CallContext::direct(
        Principal::service(ACCT, "events.amazonaws.com"),
        "us-east-1",
        "r",
    );
    let r =
        e.sm.create_managed_secret(
            &events,
            "events",
            "events!connection/c1/1234",
            NewValue::String("{\"a\":1}"),
            None,
        )
        .await
        .unwrap();
    let d = e
        .call("DescribeSecret", json!({"SecretId": r.arn}))
        .await
        .unwrap();
    assert_eq!(d["OwningService"], "events");
    for (op, input) in [
        (
            "PutSecretValue",
            json!({"SecretId": r.arn, "SecretString": "x"}),
        ),
        (
            "UpdateSecret",
            json!({"SecretId": r.arn, "Description": "x"}),
        ),
        ("DeleteSecret", json!({"SecretId": r.arn})),
    ] {
        let err = e.call(op, input).await.unwrap_err();
        assert_eq!(err.code, "InvalidRequestException", "{op}");
        assert!(err.message.contains("managed by events"), "{}", err.message);
    }
    // The owner can.
    e.sm.update_managed_secret(
        &events,
        "events",
        &r.arn,
        NewValue::String("{\"a\":2}"),
        None,
    )
    .await
    .unwrap();
    let v =
        e.sm.get_secret_value(&root(), &r.arn, None, None)
            .await
            .unwrap();
    assert_eq!(v.as_str(), Some("{\"a\":2}"));
    // Another service cannot.
    let firehose = CallContext::direct(
        Principal::service(ACCT, "firehose.amazonaws.com"),
        "us-east-1",
        "r",
    );
    assert!(
        e.sm.update_managed_secret(&firehose, "firehose", &r.arn, NewValue::String("x"), None)
            .await
            .is_err()
    );
    e.sm.delete_managed_secret(&events, "events", &r.arn)
        .await
        .unwrap();
    assert_eq!(
        e.call("DescribeSecret", json!({"SecretId": r.arn}))
            .await
            .unwrap_err()
            .code,
        "ResourceNotFoundException"
    );
}

#[tokio::test]
async fn cache_hits_cost_no_kms_call_and_die_with_the_current_version() {
    let e = env();
    e.call("CreateSecret", json!({"Name": "api", "SecretString": "k1"}))
        .await
        .unwrap();
    let cache = SecretCache::new(e.sm.clone());
    let base = e.decrypts().await;
    assert_eq!(&cache.get(&root(), "api").await.unwrap().bytes[..], b"k1");
    assert_eq!(e.decrypts().await, base + 1, "a miss costs one Decrypt");
    for _ in 0..5 {
        assert_eq!(&cache.get(&root(), "api").await.unwrap().bytes[..], b"k1");
    }
    assert_eq!(e.decrypts().await, base + 1, "hits cost none");
    // A new AWSCURRENT inside sluice invalidates at once.
    e.call(
        "PutSecretValue",
        json!({"SecretId": "api", "SecretString": "k2"}),
    )
    .await
    .unwrap();
    assert_eq!(&cache.get(&root(), "api").await.unwrap().bytes[..], b"k2");
    assert_eq!(e.decrypts().await, base + 2);
    // A stage that is not AWSCURRENT does not.
    e.call(
        "PutSecretValue",
        json!({"SecretId": "api", "SecretString": "k3", "VersionStages": ["AWSPENDING"]}),
    )
    .await
    .unwrap();
    assert_eq!(&cache.get(&root(), "api").await.unwrap().bytes[..], b"k2");
    assert_eq!(e.decrypts().await, base + 2);
    // Explicit invalidation.
    cache.invalidate("api");
    cache.get(&root(), "api").await.unwrap();
    assert_eq!(e.decrypts().await, base + 3);
    // TTL (10 minutes by default) on the injected clock.
    e.clock.advance_millis(9 * 60 * 1000);
    cache.get(&root(), "api").await.unwrap();
    assert_eq!(e.decrypts().await, base + 3);
    e.clock.advance_millis(60 * 1000);
    cache.get(&root(), "api").await.unwrap();
    assert_eq!(e.decrypts().await, base + 4);
    // Deletion invalidates: the next read fails.
    e.call("DeleteSecret", json!({"SecretId": "api"}))
        .await
        .unwrap();
    assert_eq!(
        cache.get(&root(), "api").await.unwrap_err().code,
        "InvalidRequestException"
    );
}

#[tokio::test]
async fn resource_policy_deny_applies_to_root_and_malformed_policies_are_refused() {
    let e = env();
    let c = e
        .call("CreateSecret", json!({"Name": "p", "SecretString": "x"}))
        .await
        .unwrap();
    let arn = c["ARN"].as_str().unwrap();
    let bad = e
        .call(
            "PutResourcePolicy",
            json!({"SecretId": "p", "ResourcePolicy": "{\"Statement\": 5}"}),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code, "MalformedPolicyDocumentException");
    let deny =
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": {"AWS": "*"},
        "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]})
        .to_string();
    e.call(
        "PutResourcePolicy",
        json!({"SecretId": "p", "ResourcePolicy": deny}),
    )
    .await
    .unwrap();
    let err = e
        .call("GetSecretValue", json!({"SecretId": arn}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "AccessDeniedException");
    e.call("DescribeSecret", json!({"SecretId": "p"}))
        .await
        .unwrap();
    e.call("DeleteResourcePolicy", json!({"SecretId": "p"}))
        .await
        .unwrap();
    e.call("GetSecretValue", json!({"SecretId": "p"}))
        .await
        .unwrap();
    // The denial was audited; no audit record holds the value.
    let denied = e
        .audit
        .query(
            &AuditFilter {
                event_source: Some(crate::EVENT_SOURCE.into()),
                ..Default::default()
            },
            1000,
            None,
        )
        .await
        .unwrap();
    assert!(
        denied
            .iter()
            .any(|(_, r)| r.error_code.as_deref() == Some("AccessDeniedException"))
    );
    for (_, r) in denied {
        assert!(!serde_json::to_string(&r).unwrap().contains("\"x\""));
    }
}

#[tokio::test]
async fn rotation_is_refused_clearly() {
    let e = env();
    e.call("CreateSecret", json!({"Name": "r", "SecretString": "x"}))
        .await
        .unwrap();
    let err = e
        .call("RotateSecret", json!({"SecretId": "r"}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "InvalidRequestException");
    assert!(err.message.contains("rotation is not supported"));
}

#[test]
fn managed_key_policy_compiles_as_a_key_policy() {
    let text = crate::managed_key_policy(ACCT, "us-east-1");
    if let Err(e) = sluice_policy::Policy::parse_key_policy(&text) {
        panic!("{e}");
    }
}
