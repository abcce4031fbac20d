//! Secrets Manager through the official AWS SDK for Rust against a running sluice server: the
//! API, versions and labels, idempotency, deletion and restore, resource policies, the KMS
//! envelope (key policies, disabled keys, audit trail), and no secret value at rest or in logs.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use common::*;

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<none>").to_string()
}

fn msg<E: ProvideErrorMetadata>(e: &E) -> String {
    e.message().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_versions_labels_and_listing() {
    let s = TestServer::start().await;
    let sm = s.secrets().await;

    let created = sm
        .create_secret()
        .name("prod/db")
        .description("database")
        .secret_string(r#"{"user":"a","password":"one"}"#)
        .tags(Tag::builder().key("team").value("core").build())
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap().to_string();
    let v1 = created.version_id().unwrap().to_string();
    let prefix = format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod/db-");
    assert!(
        arn.starts_with(&prefix) && arn.len() == prefix.len() + 6,
        "{arn}"
    );

    // Name, full ARN, partial ARN.
    for id in [
        "prod/db".to_string(),
        arn.clone(),
        format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod/db"),
    ] {
        let got = sm.get_secret_value().secret_id(&id).send().await.unwrap();
        assert_eq!(
            got.secret_string(),
            Some(r#"{"user":"a","password":"one"}"#)
        );
        assert_eq!(got.version_id(), Some(v1.as_str()));
        assert_eq!(got.version_stages(), ["AWSCURRENT"]);
        assert_eq!(got.arn(), Some(arn.as_str()));
    }
    let missing = sm
        .get_secret_value()
        .secret_id("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&missing), "ResourceNotFoundException");
    assert_eq!(
        msg(&missing),
        "Secrets Manager can't find the specified secret."
    );
    let dup = sm
        .create_secret()
        .name("prod/db")
        .secret_string("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&dup), "ResourceExistsException");

    // A new value: AWSCURRENT moves, AWSPREVIOUS follows.
    let put = sm
        .put_secret_value()
        .secret_id("prod/db")
        .secret_string("two")
        .send()
        .await
        .unwrap();
    let v2 = put.version_id().unwrap().to_string();
    assert_eq!(put.version_stages(), ["AWSCURRENT"]);
    let d = sm.describe_secret().secret_id(&arn).send().await.unwrap();
    let stages = d.version_ids_to_stages().unwrap();
    assert_eq!(stages[&v2], ["AWSCURRENT"]);
    assert_eq!(stages[&v1], ["AWSPREVIOUS"]);
    assert_eq!(d.description(), Some("database"));
    assert_eq!(d.kms_key_id(), None, "the AWS managed key is not shown");
    assert_eq!(d.tags()[0].key(), Some("team"));
    assert_eq!(d.owning_service(), None);
    let prev = sm
        .get_secret_value()
        .secret_id("prod/db")
        .version_stage("AWSPREVIOUS")
        .send()
        .await
        .unwrap();
    assert_eq!(prev.version_id(), Some(v1.as_str()));

    // A pending version with a custom label, then promoted by hand.
    let pending = sm
        .put_secret_value()
        .secret_id("prod/db")
        .secret_string("three")
        .version_stages("AWSPENDING")
        .version_stages("blue")
        .send()
        .await
        .unwrap();
    let v3 = pending.version_id().unwrap().to_string();
    let cur = sm
        .get_secret_value()
        .secret_id("prod/db")
        .send()
        .await
        .unwrap();
    assert_eq!(cur.secret_string(), Some("two"));
    // Moving AWSCURRENT without naming its holder is refused.
    let e = sm
        .update_secret_version_stage()
        .secret_id("prod/db")
        .version_stage("AWSCURRENT")
        .move_to_version_id(&v3)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidParameterException");
    sm.update_secret_version_stage()
        .secret_id("prod/db")
        .version_stage("AWSCURRENT")
        .move_to_version_id(&v3)
        .remove_from_version_id(&v2)
        .send()
        .await
        .unwrap();
    let d = sm
        .describe_secret()
        .secret_id("prod/db")
        .send()
        .await
        .unwrap();
    let stages = d.version_ids_to_stages().unwrap();
    let mut s3 = stages[&v3].clone();
    s3.sort();
    assert_eq!(s3, ["AWSCURRENT", "AWSPENDING", "blue"]);
    assert_eq!(stages[&v2], ["AWSPREVIOUS"]);
    assert!(!stages.contains_key(&v1), "v1 lost its label: deprecated");
    let by_label = sm
        .get_secret_value()
        .secret_id("prod/db")
        .version_stage("blue")
        .send()
        .await
        .unwrap();
    assert_eq!(by_label.secret_string(), Some("three"));
    // Deprecated versions are listed only on request.
    let listed = sm
        .list_secret_version_ids()
        .secret_id("prod/db")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.versions().len(), 2);
    let listed = sm
        .list_secret_version_ids()
        .secret_id("prod/db")
        .include_deprecated(true)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.versions().len(), 3);
    // The deprecated version is still readable by id.
    let old = sm
        .get_secret_value()
        .secret_id("prod/db")
        .version_id(&v1)
        .send()
        .await
        .unwrap();
    assert!(old.version_stages().is_empty());

    // Binary secrets; string and binary together are refused.
    sm.create_secret()
        .name("bin")
        .secret_binary(Blob::new(vec![0u8, 1, 2, 255]))
        .send()
        .await
        .unwrap();
    let b = sm.get_secret_value().secret_id("bin").send().await.unwrap();
    assert_eq!(b.secret_binary().unwrap().as_ref(), &[0u8, 1, 2, 255]);
    assert_eq!(b.secret_string(), None);
    let both = sm
        .put_secret_value()
        .secret_id("bin")
        .secret_string("x")
        .secret_binary(Blob::new(vec![1]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&both), "InvalidParameterException");

    // UpdateSecret: description and a new current value.
    let upd = sm
        .update_secret()
        .secret_id("bin")
        .description("bytes")
        .secret_string("now text")
        .send()
        .await
        .unwrap();
    assert!(upd.version_id().is_some());
    let b = sm.get_secret_value().secret_id("bin").send().await.unwrap();
    assert_eq!(b.secret_string(), Some("now text"));

    // Tags.
    sm.tag_resource()
        .secret_id("bin")
        .tags(Tag::builder().key("env").value("test").build())
        .tags(Tag::builder().key("k2").value("v2").build())
        .send()
        .await
        .unwrap();
    sm.untag_resource()
        .secret_id("bin")
        .tag_keys("k2")
        .send()
        .await
        .unwrap();
    let d = sm.describe_secret().secret_id("bin").send().await.unwrap();
    assert_eq!(d.tags().len(), 1);
    assert_eq!(d.tags()[0].value(), Some("test"));

    // ListSecrets: filters and pagination.
    for i in 0..4 {
        sm.create_secret()
            .name(format!("page/{i}"))
            .send()
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = sm
            .list_secrets()
            .filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values("page/")
                    .build(),
            )
            .max_results(3)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        names.extend(
            page.secret_list()
                .iter()
                .map(|e| e.name().unwrap().to_string()),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 2);
    names.sort();
    assert_eq!(names, ["page/0", "page/1", "page/2", "page/3"]);
    let tagged = sm
        .list_secrets()
        .filters(
            Filter::builder()
                .key(FilterNameStringType::TagKey)
                .values("team")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.secret_list().len(), 1);
    assert_eq!(tagged.secret_list()[0].name(), Some("prod/db"));
    let negated = sm
        .list_secrets()
        .filters(
            Filter::builder()
                .key(FilterNameStringType::Name)
                .values("!page")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(negated.secret_list().len(), 2);

    // BatchGetSecretValue: values and per-secret errors.
    let batch = sm
        .batch_get_secret_value()
        .secret_id_list("prod/db")
        .secret_id_list("bin")
        .secret_id_list("missing")
        .send()
        .await
        .unwrap();
    assert_eq!(batch.secret_values().len(), 2);
    assert_eq!(batch.errors().len(), 1);
    assert_eq!(
        batch.errors()[0].error_code(),
        Some("ResourceNotFoundException")
    );

    // GetRandomPassword.
    let p = sm
        .get_random_password()
        .password_length(40)
        .exclude_punctuation(true)
        .exclude_characters("abc")
        .send()
        .await
        .unwrap();
    let pw = p.random_password().unwrap();
    assert_eq!(pw.len(), 40);
    assert!(
        pw.chars()
            .all(|c| c.is_ascii_alphanumeric() && !"abc".contains(c))
    );

    // Rotation is refused clearly.
    let r = sm
        .rotate_secret()
        .secret_id("prod/db")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&r), "InvalidRequestException");
    assert!(msg(&r).contains("rotation is not supported"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_tokens_deletion_and_restore() {
    let s = TestServer::start().await;
    let sm = s.secrets().await;
    let token = "11111111-2222-3333-4444-555555555555";
    let a = sm
        .create_secret()
        .name("idem")
        .secret_string("v")
        .client_request_token(token)
        .send()
        .await
        .unwrap();
    assert_eq!(a.version_id(), Some(token));
    // Same token, same value: the same answer (a retried create).
    let b = sm
        .create_secret()
        .name("idem")
        .secret_string("v")
        .client_request_token(token)
        .send()
        .await
        .unwrap();
    assert_eq!(b.arn(), a.arn());
    assert_eq!(b.version_id(), Some(token));
    // Same token, another value.
    let e = sm
        .put_secret_value()
        .secret_id("idem")
        .secret_string("w")
        .client_request_token(token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceExistsException");
    let same = sm
        .put_secret_value()
        .secret_id("idem")
        .secret_string("v")
        .client_request_token(token)
        .send()
        .await
        .unwrap();
    assert_eq!(same.version_id(), Some(token));
    let versions = sm
        .list_secret_version_ids()
        .secret_id("idem")
        .include_deprecated(true)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions().len(), 1);

    // Deletion with a recovery window.
    let bad = sm
        .delete_secret()
        .secret_id("idem")
        .recovery_window_in_days(31)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&bad), "InvalidParameterException");
    let both = sm
        .delete_secret()
        .secret_id("idem")
        .recovery_window_in_days(7)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&both), "InvalidParameterException");
    let del = sm
        .delete_secret()
        .secret_id("idem")
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let deletion = del.deletion_date().unwrap().secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((deletion - now - 7 * 86_400).abs() < 600);
    let e = sm
        .get_secret_value()
        .secret_id("idem")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidRequestException");
    assert_eq!(
        msg(&e),
        "You can't perform this operation on the secret because it was marked for deletion."
    );
    let d = sm.describe_secret().secret_id("idem").send().await.unwrap();
    assert!(d.deleted_date().is_some());
    let listed = sm.list_secrets().send().await.unwrap();
    assert!(listed.secret_list().is_empty());
    let listed = sm
        .list_secrets()
        .include_planned_deletion(true)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.secret_list().len(), 1);
    let again = sm
        .create_secret()
        .name("idem")
        .secret_string("v")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&again), "InvalidRequestException");
    sm.restore_secret().secret_id("idem").send().await.unwrap();
    let got = sm
        .get_secret_value()
        .secret_id("idem")
        .send()
        .await
        .unwrap();
    assert_eq!(got.secret_string(), Some("v"));

    // Forced deletion: gone at once, the name is free, the old ARN names nothing.
    sm.delete_secret()
        .secret_id("idem")
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let e = sm
        .describe_secret()
        .secret_id("idem")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    let c = sm
        .create_secret()
        .name("idem")
        .secret_string("new")
        .send()
        .await
        .unwrap();
    assert_ne!(c.arn(), a.arn());
    let e = sm
        .get_secret_value()
        .secret_id(a.arn().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_policies() {
    let s = TestServer::start().await;
    let sm = s.secrets().await;
    let arn = sm
        .create_secret()
        .name("pol")
        .secret_string("x")
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let none = sm
        .get_resource_policy()
        .secret_id("pol")
        .send()
        .await
        .unwrap();
    assert_eq!(none.resource_policy(), None);

    let malformed = sm
        .put_resource_policy()
        .secret_id("pol")
        .resource_policy(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Maybe"}]}"#)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&malformed), "MalformedPolicyDocumentException");
    let public = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"secretsmanager:GetSecretValue","Resource":"{arn}"}}]}}"#
    );
    let blocked = sm
        .put_resource_policy()
        .secret_id("pol")
        .resource_policy(&public)
        .block_public_policy(true)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&blocked), "PublicPolicyException");
    let v = sm
        .validate_resource_policy()
        .secret_id("pol")
        .resource_policy(&public)
        .send()
        .await
        .unwrap();
    assert!(!v.policy_validation_passed());
    let deny = r#"{"Version":"2012-10-17","Statement":[{"Sid":"NoReads","Effect":"Deny","Principal":{"AWS":"*"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#.to_string();
    let v = sm
        .validate_resource_policy()
        .resource_policy(&deny)
        .send()
        .await
        .unwrap();
    assert!(v.policy_validation_passed());
    sm.put_resource_policy()
        .secret_id("pol")
        .resource_policy(&deny)
        .block_public_policy(true)
        .send()
        .await
        .unwrap();
    let got = sm
        .get_resource_policy()
        .secret_id("pol")
        .send()
        .await
        .unwrap();
    assert_eq!(got.resource_policy(), Some(deny.as_str()));
    // An explicit deny binds even the root.
    let e = sm
        .get_secret_value()
        .secret_id("pol")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    assert!(
        msg(&e).contains("secretsmanager:GetSecretValue"),
        "{}",
        msg(&e)
    );
    sm.describe_secret().secret_id("pol").send().await.unwrap();
    sm.delete_resource_policy()
        .secret_id("pol")
        .send()
        .await
        .unwrap();
    sm.get_secret_value().secret_id("pol").send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_envelope_policies_disabled_keys_and_audit() {
    let s = TestServer::start().await;
    let sm = s.secrets().await;
    let kms = s.kms().await;

    // A customer key whose policy lets the account use it only through Secrets Manager and
    // denies Decrypt for secrets named deny/*.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Sid":"Admin","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
        {{"Sid":"NoDecrypt","Effect":"Deny","Principal":{{"AWS":"*"}},"Action":"kms:Decrypt","Resource":"*",
          "Condition":{{"StringLike":{{"kms:EncryptionContext:SecretARN":"arn:aws:secretsmanager:*:*:secret:deny/*"}}}}}}]}}"#
    );
    let key = kms.create_key().policy(policy).send().await.unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    let key_id = key.key_metadata().unwrap().key_id().to_string();

    // The validation round trip (GenerateDataKey + Decrypt) runs up front: a deny on Decrypt
    // fails CreateSecret before anything is stored.
    let e = sm
        .create_secret()
        .name("deny/x")
        .kms_key_id(&key_id)
        .secret_string("v")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    assert!(
        msg(&e).starts_with("Access to KMS is not allowed"),
        "{}",
        msg(&e)
    );
    assert_eq!(
        code(
            &sm.describe_secret()
                .secret_id("deny/x")
                .send()
                .await
                .unwrap_err()
        ),
        "ResourceNotFoundException"
    );

    let c = sm
        .create_secret()
        .name("cmk/app")
        .kms_key_id(&key_id)
        .secret_string("cmk value")
        .send()
        .await
        .unwrap();
    let arn = c.arn().unwrap().to_string();
    let vid = c.version_id().unwrap().to_string();
    let d = sm.describe_secret().secret_id(&arn).send().await.unwrap();
    assert_eq!(d.kms_key_id(), Some(key_id.as_str()));
    sm.get_secret_value().secret_id(&arn).send().await.unwrap();

    // A key policy that later denies Decrypt: GetSecretValue is AccessDeniedException.
    let deny_all = format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Sid":"Admin","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}},
        {{"Sid":"NoDecryptViaSM","Effect":"Deny","Principal":{{"AWS":"*"}},"Action":"kms:Decrypt","Resource":"*",
          "Condition":{{"StringEquals":{{"kms:ViaService":"secretsmanager.{REGION}.amazonaws.com"}}}}}}]}}"#
    );
    kms.put_key_policy()
        .key_id(&key_id)
        .policy(&deny_all)
        .send()
        .await
        .unwrap();
    let e = sm
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    assert!(
        msg(&e).contains("Access to KMS is not allowed"),
        "{}",
        msg(&e)
    );
    assert!(msg(&e).contains("kms:Decrypt"), "{}", msg(&e));

    // Back to a usable policy; then a disabled key: DecryptionFailure on read, EncryptionFailure
    // on write, the KMS reason in the message.
    kms.put_key_policy()
        .key_id(&key_id)
        .policy(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Admin","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    kms.disable_key().key_id(&key_id).send().await.unwrap();
    let e = sm
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DecryptionFailure");
    assert!(msg(&e).contains("disabled"), "{}", msg(&e));
    let e = sm
        .put_secret_value()
        .secret_id(&arn)
        .secret_string("w")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "EncryptionFailure");

    // Changing the key re-seals the labeled versions: readable with the old key disabled.
    kms.enable_key().key_id(&key_id).send().await.unwrap();
    let key2 = kms.create_key().send().await.unwrap();
    let key2_arn = key2.key_metadata().unwrap().arn().unwrap().to_string();
    sm.update_secret()
        .secret_id(&arn)
        .kms_key_id(&key2_arn)
        .send()
        .await
        .unwrap();
    kms.disable_key().key_id(&key_id).send().await.unwrap();
    let got = sm.get_secret_value().secret_id(&arn).send().await.unwrap();
    assert_eq!(got.secret_string(), Some("cmk value"));
    let versions = sm
        .list_secret_version_ids()
        .secret_id(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.versions()[0].kms_key_ids(), [key2_arn.as_str()]);

    // The trail: KMS calls on the caller's behalf, invoked by Secrets Manager, bound to
    // {SecretARN, SecretVersionId}; the validation call uses RequestToValidateKeyAccess.
    let ct = s.cloudtrail().await;
    let docs = |name: &'static str| {
        let ct = ct.clone();
        async move {
            ct.lookup_events()
                .lookup_attributes(
                    LookupAttribute::builder()
                        .attribute_key(LookupAttributeKey::EventName)
                        .attribute_value(name)
                        .build()
                        .unwrap(),
                )
                .max_results(50)
                .send()
                .await
                .unwrap()
                .events()
                .iter()
                .map(|e| {
                    serde_json::from_str::<serde_json::Value>(e.cloud_trail_event().unwrap())
                        .unwrap()
                })
                .collect::<Vec<_>>()
        }
    };
    let gdk = docs("GenerateDataKey").await;
    let ours: Vec<_> = gdk
        .iter()
        .filter(|d| d["requestParameters"]["encryptionContext"]["SecretARN"] == arn.as_str())
        .collect();
    assert!(ours.iter().any(
        |d| d["requestParameters"]["encryptionContext"]["SecretVersionId"] == vid.as_str()
            && d["resources"][0]["ARN"] == key_arn.as_str()
    ));
    assert!(ours.iter().any(
        |d| d["requestParameters"]["encryptionContext"]["SecretVersionId"]
            == "RequestToValidateKeyAccess"
    ));
    for d in &ours {
        assert_eq!(
            d["userIdentity"]["invokedBy"],
            "secretsmanager.amazonaws.com"
        );
        assert_eq!(d["userIdentity"]["type"], "Root");
    }
    let dec = docs("Decrypt").await;
    let denied = dec
        .iter()
        .find(|d| d["errorCode"] == "AccessDeniedException")
        .expect("the denied Decrypt is audited");
    assert_eq!(
        denied["userIdentity"]["invokedBy"],
        "secretsmanager.amazonaws.com"
    );
    assert!(dec.iter().any(|d| d["errorCode"].is_null()
        && d["requestParameters"]["encryptionContext"]["SecretARN"] == arn.as_str()
        && d["requestParameters"]["encryptionContext"]["SecretVersionId"] == vid.as_str()));
    // Secrets Manager's own calls are in the same trail, without values.
    let gsv = docs("GetSecretValue").await;
    assert!(
        gsv.iter()
            .any(|d| d["eventSource"] == "secretsmanager.amazonaws.com"
                && d["errorCode"] == "DecryptionFailure")
    );
    for d in gsv {
        assert!(!d.to_string().contains("cmk value"));
    }
    // The AWS managed key is created on first use, AWS managed, with its policy.
    sm.create_secret()
        .name("managed-key")
        .secret_string("m")
        .send()
        .await
        .unwrap();
    let mk = kms
        .describe_key()
        .key_id("alias/aws/secretsmanager")
        .send()
        .await
        .unwrap();
    assert_eq!(
        mk.key_metadata().unwrap().key_manager(),
        Some(&aws_sdk_kms::types::KeyManagerType::Aws)
    );
    let p = kms
        .get_key_policy()
        .key_id(mk.key_metadata().unwrap().key_id())
        .send()
        .await
        .unwrap();
    assert!(
        p.policy()
            .unwrap()
            .contains(&format!("secretsmanager.{REGION}.amazonaws.com"))
    );
    // Used directly (not via Secrets Manager) the managed key refuses to decrypt.
    let direct = kms
        .generate_data_key()
        .key_id("alias/aws/secretsmanager")
        .number_of_bytes(32)
        .send()
        .await
        .unwrap_err();
    assert_eq!(direct.code(), Some("AccessDeniedException"));
}

/// The real binary, debug logs on: a known secret value appears nowhere in the data directory
/// or the logs, in raw or base64 form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_never_reach_disk_or_logs() {
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
    let cfg = sdk_config_with(&format!("http://127.0.0.1:{port}"), AKID, SECRET).await;
    let sm = aws_sdk_secretsmanager::Client::new(&cfg);
    let marker = "SECRET-VALUE-MARKER-4e1d77c2-never-on-disk";
    let bin_marker = b"BINARY-SECRET-MARKER-09af63".to_vec();
    sm.create_secret()
        .name("marker")
        .secret_string(marker)
        .send()
        .await
        .unwrap();
    sm.put_secret_value()
        .secret_id("marker")
        .secret_binary(Blob::new(bin_marker.clone()))
        .send()
        .await
        .unwrap();
    let got = sm
        .get_secret_value()
        .secret_id("marker")
        .send()
        .await
        .unwrap();
    assert_eq!(got.secret_binary().unwrap().as_ref(), &bin_marker[..]);
    let prev = sm
        .get_secret_value()
        .secret_id("marker")
        .version_stage("AWSPREVIOUS")
        .send()
        .await
        .unwrap();
    assert_eq!(prev.secret_string(), Some(marker));
    // A failing call with the value in it (both members) must not echo it either.
    let e = sm
        .put_secret_value()
        .secret_id("marker")
        .secret_string(marker)
        .secret_binary(Blob::new(bin_marker.clone()))
        .send()
        .await
        .unwrap_err();
    assert!(!msg(&e).contains(marker));

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
    let needles = [
        marker.as_bytes().to_vec(),
        b64.encode(marker).into_bytes(),
        bin_marker.clone(),
        b64.encode(&bin_marker).into_bytes(),
    ];
    let mut files = files_under(&dir);
    assert!(files.iter().any(|(p, _)| p.ends_with("sluice.db")));
    let log_bytes = std::fs::read(&log).unwrap();
    assert!(
        String::from_utf8_lossy(&log_bytes).contains("sluice is serving"),
        "logs are written"
    );
    files.push((log.clone(), log_bytes));
    for (path, bytes) in files {
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{} contains a secret value",
                path.display()
            );
        }
    }
}
