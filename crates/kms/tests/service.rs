//! The KMS service through its Rust API: time-driven behaviour (deletion windows, automatic
//! rotation) with a manual clock, and key policies evaluated with the via-service context of a
//! service-to-service call (story A).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sluice_audit::AuditLog;
use sluice_core::{CallContext, Clock, ManualClock, Principal};
use sluice_crypto::RootKey;
use sluice_kms::{Kms, KmsConfig, NoIdentityPolicies, PolicyAuthorizer};
use sluice_store::Store;
use sluice_store::sqlite::SqliteStore;

const ACCT: &str = "111122223333";
const DAY_MS: i64 = 86_400_000;

struct Fixture {
    kms: Kms,
    clock: ManualClock,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("t.db"), Default::default()).unwrap());
    let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let audit = AuditLog::new(store.clone(), c.clone(), ACCT);
    let kms = Kms::new(
        store.clone(),
        Arc::new(RootKey::from_bytes(&[9u8; 32])),
        c,
        audit,
        Arc::new(PolicyAuthorizer::new(Arc::new(NoIdentityPolicies))),
        KmsConfig {
            account: ACCT.into(),
            region: "us-east-1".into(),
        },
    );
    Fixture {
        kms,
        clock,
        store,
        _dir: dir,
    }
}

fn root() -> CallContext {
    CallContext::direct(Principal::root(ACCT, None), "us-east-1", "req-1")
}

async fn call(f: &Fixture, op: &str, input: Value) -> Result<Value, sluice_core::AwsError> {
    f.kms.handle(op, &root(), input).await
}

#[tokio::test]
async fn key_is_deleted_when_its_window_ends_and_rotation_happens_when_due() {
    let f = fixture();
    let k = call(&f, "CreateKey", json!({})).await.unwrap();
    let id = k["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    call(
        &f,
        "CreateAlias",
        json!({"AliasName": "alias/gone", "TargetKeyId": id}),
    )
    .await
    .unwrap();
    call(
        &f,
        "ScheduleKeyDeletion",
        json!({"KeyId": id, "PendingWindowInDays": 7}),
    )
    .await
    .unwrap();

    f.clock.advance_millis(6 * DAY_MS);
    f.kms.run_maintenance().await.unwrap();
    let d = call(&f, "DescribeKey", json!({"KeyId": id})).await.unwrap();
    assert_eq!(d["KeyMetadata"]["KeyState"], "PendingDeletion");

    f.clock.advance_millis(DAY_MS + 1);
    // Even before maintenance runs, a key past its window is gone.
    let e = call(&f, "DescribeKey", json!({"KeyId": id}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "NotFoundException");
    f.kms.run_maintenance().await.unwrap();
    let e = call(&f, "DescribeKey", json!({"KeyId": "alias/gone"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "NotFoundException");
    let keys = call(&f, "ListKeys", json!({})).await.unwrap();
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 0);

    // Automatic rotation.
    let k = call(&f, "CreateKey", json!({})).await.unwrap();
    let id = k["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    call(
        &f,
        "EnableKeyRotation",
        json!({"KeyId": id, "RotationPeriodInDays": 90}),
    )
    .await
    .unwrap();
    let before = call(&f, "Encrypt", json!({"KeyId": id, "Plaintext": "aGVsbG8="}))
        .await
        .unwrap();
    f.clock.advance_millis(91 * DAY_MS);
    f.kms.run_maintenance().await.unwrap();
    let after = call(&f, "Encrypt", json!({"KeyId": id, "Plaintext": "aGVsbG8="}))
        .await
        .unwrap();
    let d1 = call(
        &f,
        "Decrypt",
        json!({"CiphertextBlob": before["CiphertextBlob"]}),
    )
    .await
    .unwrap();
    let d2 = call(
        &f,
        "Decrypt",
        json!({"CiphertextBlob": after["CiphertextBlob"]}),
    )
    .await
    .unwrap();
    assert_eq!(d1["Plaintext"], "aGVsbG8=");
    assert_eq!(d2["Plaintext"], "aGVsbG8=");
    assert_ne!(d1["KeyMaterialId"], d2["KeyMaterialId"]);
    let st = call(&f, "GetKeyRotationStatus", json!({"KeyId": id}))
        .await
        .unwrap();
    let next = st["NextRotationDate"].as_f64().unwrap() * 1000.0;
    assert!(next as i64 > f.clock.now_millis() + 89 * DAY_MS);

    // The service events are in the audit trail.
    let log = AuditLog::new(f.store.clone(), Arc::new(f.clock.clone()), ACCT);
    for name in ["DeleteKey", "RotateKey"] {
        let rows = log
            .query(
                &sluice_audit::AuditFilter {
                    event_name: Some(name.into()),
                    ..Default::default()
                },
                10,
                None,
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{name}");
        assert_eq!(rows[0].1.event_type, "AwsServiceEvent");
    }
}

fn story_a_policy(admin: bool, via: &str, arn_pattern: &str) -> String {
    let mut statements = vec![json!({
        "Sid": "foreventbridge", "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCT}:root")}, "Action": "kms:*", "Resource": "*",
        "Condition": {"StringLike": {
            "kms:ViaService": via,
            "kms:EncryptionContext:SecretARN": arn_pattern}}
    })];
    if admin {
        statements.push(json!({"Sid": "Enable IAM User Permissions", "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCT}:root")}, "Action": "kms:*", "Resource": "*"}));
    }
    json!({"Version": "2012-10-17", "Id": "key-policy-example", "Statement": statements})
        .to_string()
}

#[tokio::test]
async fn story_a_key_policy_allows_only_secrets_manager_with_the_connection_context() {
    let f = fixture();
    let good_arn =
        format!("arn:aws:secretsmanager:us-east-1:{ACCT}:secret:events!connection/dd/1b2c-abcdef");
    let mut enc = BTreeMap::new();
    enc.insert("SecretARN".to_string(), good_arn.clone());
    enc.insert("SecretVersionId".to_string(), "v1".to_string());
    let via_sm = root().via("secretsmanager");

    // Without the admin statement the lockout check refuses the policy unless bypassed.
    let policy = story_a_policy(
        false,
        "secretsmanager.*.amazonaws.com",
        "arn:aws:secretsmanager:*:*:secret:events!connection/*",
    );
    let e = call(&f, "CreateKey", json!({"Policy": policy}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "MalformedPolicyDocumentException");
    let k = call(
        &f,
        "CreateKey",
        json!({"Policy": policy, "BypassPolicyLockoutSafetyCheck": true}),
    )
    .await
    .unwrap();
    let id = k["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();

    // Via Secrets Manager with the connection's SecretARN: allowed.
    let dk = f
        .kms
        .generate_data_key(&via_sm, &id, 32, &enc)
        .await
        .unwrap();
    let (_, pt) = f
        .kms
        .decrypt(&via_sm, &dk.ciphertext, &enc, None)
        .await
        .unwrap();
    assert_eq!(&pt[..], &dk.plaintext[..]);

    // Direct use: denied, and the message names the action and resource.
    let e = f
        .kms
        .decrypt(&root(), &dk.ciphertext, &enc, None)
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    assert!(e.message.contains("kms:Decrypt"), "{}", e.message);
    // Another service: denied.
    let e = f
        .kms
        .generate_data_key(&root().via("events"), &id, 32, &enc)
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    // A secret that is not a connection's: denied.
    let mut other = enc.clone();
    other.insert(
        "SecretARN".into(),
        format!("arn:aws:secretsmanager:us-east-1:{ACCT}:secret:mine-abcdef"),
    );
    let e = f
        .kms
        .generate_data_key(&via_sm, &id, 32, &other)
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    // Not even DescribeKey directly: the only statement needs the conditions.
    let e = call(&f, "DescribeKey", json!({"KeyId": id}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");

    // With the admin statement, direct use is allowed again.
    let k2 = call(
        &f,
        "CreateKey",
        json!({"Policy": story_a_policy(true, "secretsmanager.*.amazonaws.com", "arn:aws:secretsmanager:*:*:secret:events!connection/*")}),
    )
    .await
    .unwrap();
    let id2 = k2["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let dk = f
        .kms
        .generate_data_key(&root(), &id2, 32, &enc)
        .await
        .unwrap();
    f.kms
        .decrypt(&root(), &dk.ciphertext, &enc, None)
        .await
        .unwrap();

    // The audit trail shows the via-service calls with their context, never plaintext.
    let log = AuditLog::new(f.store.clone(), Arc::new(f.clock.clone()), ACCT);
    let rows = log
        .query(
            &sluice_audit::AuditFilter {
                event_name: Some("GenerateDataKey".into()),
                resource: Some(id.clone()),
                ..Default::default()
            },
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "one allowed, two denied");
    let ok: Vec<_> = rows
        .iter()
        .filter(|(_, r)| r.error_code.is_none())
        .collect();
    assert_eq!(ok.len(), 1);
    let r = &ok[0].1;
    assert_eq!(
        r.user_identity.invoked_by.as_deref(),
        Some("secretsmanager.amazonaws.com")
    );
    assert_eq!(
        r.request_parameters["encryptionContext"]["SecretARN"],
        good_arn.as_str()
    );
    let text = serde_json::to_string(r).unwrap();
    assert!(!text.contains("Plaintext") && !text.contains("plaintext"));
}
