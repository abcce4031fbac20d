//! KMS through the official AWS SDK for Rust against a running sluice server.

mod common;

use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState, Tag};
use common::*;

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<none>").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lifecycle_encrypt_decrypt_and_errors() {
    let s = TestServer::start().await;
    let kms = s.kms().await;

    let created = kms
        .create_key()
        .description("first key")
        .tags(
            Tag::builder()
                .tag_key("team")
                .tag_value("core")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let md = created.key_metadata().unwrap();
    let key_id = md.key_id().to_string();
    let key_arn = md.arn().unwrap().to_string();
    assert_eq!(md.key_state(), Some(&KeyState::Enabled));
    assert_eq!(md.aws_account_id(), Some(ACCOUNT));
    assert_eq!(
        key_arn,
        format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
    );
    assert_eq!(md.description(), Some("first key"));

    // Describe by id and by ARN.
    for id in [&key_id, &key_arn] {
        let d = kms.describe_key().key_id(id).send().await.unwrap();
        assert_eq!(d.key_metadata().unwrap().key_id(), key_id);
    }
    let listed = kms.list_keys().send().await.unwrap();
    assert!(
        listed
            .keys()
            .iter()
            .any(|k| k.key_id() == Some(key_id.as_str()))
    );

    // Encrypt / decrypt, with and without KeyId, context bound.
    let enc = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"attack at dawn".to_vec()))
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(enc.key_id(), Some(key_arn.as_str()));
    let ct = enc.ciphertext_blob().unwrap().clone();
    let dec = kms
        .decrypt()
        .ciphertext_blob(ct.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), b"attack at dawn");
    assert_eq!(dec.key_id(), Some(key_arn.as_str()));
    let dec = kms
        .decrypt()
        .key_id(&key_id)
        .ciphertext_blob(ct.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), b"attack at dawn");

    // Wrong or missing context, garbage ciphertext.
    for bad in [Some(("purpose", "other")), Some(("Purpose", "test")), None] {
        let mut r = kms.decrypt().ciphertext_blob(ct.clone());
        if let Some((k, v)) = bad {
            r = r.encryption_context(k, v);
        }
        let e = r.send().await.unwrap_err();
        assert_eq!(code(&e), "InvalidCiphertextException");
    }
    let e = kms
        .decrypt()
        .ciphertext_blob(Blob::new(vec![7u8; 80]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidCiphertextException");

    // Decrypt naming another key: IncorrectKeyException.
    let other = kms.create_key().send().await.unwrap();
    let other_id = other.key_metadata().unwrap().key_id().to_string();
    let e = kms
        .decrypt()
        .key_id(&other_id)
        .ciphertext_blob(ct.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "IncorrectKeyException");

    // ReEncrypt to the other key.
    let re = kms
        .re_encrypt()
        .ciphertext_blob(ct.clone())
        .source_encryption_context("purpose", "test")
        .destination_key_id(&other_id)
        .destination_encryption_context("purpose", "moved")
        .send()
        .await
        .unwrap();
    assert_eq!(re.source_key_id(), Some(key_arn.as_str()));
    let dec = kms
        .decrypt()
        .ciphertext_blob(re.ciphertext_blob().unwrap().clone())
        .encryption_context("purpose", "moved")
        .send()
        .await
        .unwrap();
    assert_eq!(dec.plaintext().unwrap().as_ref(), b"attack at dawn");

    // Unknown keys and malformed ids.
    let e = kms
        .describe_key()
        .key_id("11111111-2222-3333-4444-555555555555")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    let e = kms
        .describe_key()
        .key_id("not-a-key")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    let e = kms
        .describe_key()
        .key_id("x".repeat(2049))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(vec![1u8; 4097]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    assert!(
        !e.message().unwrap_or_default().contains("\u{1}"),
        "sensitive values are not echoed"
    );

    // Description update.
    kms.update_key_description()
        .key_id(&key_id)
        .description("renamed")
        .send()
        .await
        .unwrap();
    let d = kms.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(d.key_metadata().unwrap().description(), Some("renamed"));

    // Disable / enable.
    kms.disable_key().key_id(&key_id).send().await.unwrap();
    let e = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DisabledException");
    let e = kms
        .decrypt()
        .ciphertext_blob(ct.clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DisabledException");
    kms.enable_key().key_id(&key_id).send().await.unwrap();

    // Schedule deletion, state enforced, cancel leaves it disabled.
    let sched = kms
        .schedule_key_deletion()
        .key_id(&key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    assert_eq!(sched.key_state(), Some(&KeyState::PendingDeletion));
    assert_eq!(sched.pending_window_in_days(), Some(7));
    assert!(sched.deletion_date().is_some());
    let e = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "KMSInvalidStateException");
    let e = kms.enable_key().key_id(&key_id).send().await.unwrap_err();
    assert_eq!(code(&e), "KMSInvalidStateException");
    let e = kms
        .schedule_key_deletion()
        .key_id(&key_id)
        .pending_window_in_days(3)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    kms.cancel_key_deletion()
        .key_id(&key_id)
        .send()
        .await
        .unwrap();
    let d = kms.describe_key().key_id(&key_id).send().await.unwrap();
    assert_eq!(
        d.key_metadata().unwrap().key_state(),
        Some(&KeyState::Disabled)
    );
    let e = kms
        .cancel_key_deletion()
        .key_id(&key_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "KMSInvalidStateException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_tags_policies() {
    let s = TestServer::start().await;
    let kms = s.kms().await;
    let a = kms.create_key().send().await.unwrap();
    let a_id = a.key_metadata().unwrap().key_id().to_string();
    let b = kms.create_key().send().await.unwrap();
    let b_id = b.key_metadata().unwrap().key_id().to_string();

    kms.create_alias()
        .alias_name("alias/app")
        .target_key_id(&a_id)
        .send()
        .await
        .unwrap();
    let e = kms
        .create_alias()
        .alias_name("alias/app")
        .target_key_id(&b_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AlreadyExistsException");
    let e = kms
        .create_alias()
        .alias_name("alias/aws/mine")
        .target_key_id(&b_id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotAuthorizedException");
    let e = kms
        .create_alias()
        .alias_name("app2")
        .target_key_id(&b_id)
        .send()
        .await
        .unwrap_err();
    assert!(
        ["InvalidAliasNameException", "ValidationException"].contains(&code(&e).as_str()),
        "{}",
        code(&e)
    );

    // Use by alias name and alias ARN.
    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:alias/app");
    for id in ["alias/app", alias_arn.as_str()] {
        let enc = kms
            .encrypt()
            .key_id(id)
            .plaintext(Blob::new(b"hi".to_vec()))
            .send()
            .await
            .unwrap();
        assert!(enc.key_id().unwrap().ends_with(&a_id));
    }
    let aliases = kms.list_aliases().key_id(&a_id).send().await.unwrap();
    assert_eq!(aliases.aliases().len(), 1);
    assert_eq!(aliases.aliases()[0].alias_name(), Some("alias/app"));
    assert_eq!(aliases.aliases()[0].alias_arn(), Some(alias_arn.as_str()));

    kms.update_alias()
        .alias_name("alias/app")
        .target_key_id(&b_id)
        .send()
        .await
        .unwrap();
    let d = kms.describe_key().key_id("alias/app").send().await.unwrap();
    assert_eq!(d.key_metadata().unwrap().key_id(), b_id);
    kms.delete_alias()
        .alias_name("alias/app")
        .send()
        .await
        .unwrap();
    let e = kms
        .describe_key()
        .key_id("alias/app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");
    let e = kms
        .delete_alias()
        .alias_name("alias/app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NotFoundException");

    // Tags.
    kms.tag_resource()
        .key_id(&a_id)
        .tags(
            Tag::builder()
                .tag_key("EventBridgeApiDestinations")
                .tag_value("true")
                .build()
                .unwrap(),
        )
        .tags(
            Tag::builder()
                .tag_key("env")
                .tag_value("dev")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    kms.tag_resource()
        .key_id(&a_id)
        .tags(
            Tag::builder()
                .tag_key("env")
                .tag_value("prod")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let tags = kms.list_resource_tags().key_id(&a_id).send().await.unwrap();
    let mut got: Vec<(String, String)> = tags
        .tags()
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("EventBridgeApiDestinations".to_string(), "true".to_string()),
            ("env".to_string(), "prod".to_string())
        ]
    );
    kms.untag_resource()
        .key_id(&a_id)
        .tag_keys("env")
        .send()
        .await
        .unwrap();
    let tags = kms.list_resource_tags().key_id(&a_id).send().await.unwrap();
    assert_eq!(tags.tags().len(), 1);
    let e = kms
        .tag_resource()
        .key_id(&a_id)
        .tags(
            Tag::builder()
                .tag_key("aws:reserved")
                .tag_value("x")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "TagException");

    // Key policies.
    let p = kms.get_key_policy().key_id(&a_id).send().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(p.policy().unwrap()).unwrap();
    assert_eq!(
        doc["Statement"][0]["Principal"]["AWS"],
        format!("arn:aws:iam::{ACCOUNT}:root")
    );
    let names = kms.list_key_policies().key_id(&a_id).send().await.unwrap();
    assert_eq!(names.policy_names(), ["default".to_string()]);
    let e = kms
        .put_key_policy()
        .key_id(&a_id)
        .policy("{not json")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MalformedPolicyDocumentException");
    let new_policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "root", "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
            "Action": "kms:*", "Resource": "*"},
            {"Sid": "extra", "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
            "Action": "kms:Decrypt", "Resource": "*"}]
    })
    .to_string();
    kms.put_key_policy()
        .key_id(&a_id)
        .policy(&new_policy)
        .send()
        .await
        .unwrap();
    let p = kms.get_key_policy().key_id(&a_id).send().await.unwrap();
    assert_eq!(p.policy(), Some(new_policy.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_random_and_rotation() {
    let s = TestServer::start().await;
    let kms = s.kms().await;
    let k = kms.create_key().send().await.unwrap();
    let id = k.key_metadata().unwrap().key_id().to_string();

    let dk = kms
        .generate_data_key()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("SecretARN", "arn:x")
        .send()
        .await
        .unwrap();
    assert_eq!(dk.plaintext().unwrap().as_ref().len(), 32);
    let back = kms
        .decrypt()
        .ciphertext_blob(dk.ciphertext_blob().unwrap().clone())
        .encryption_context("SecretARN", "arn:x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        back.plaintext().unwrap().as_ref(),
        dk.plaintext().unwrap().as_ref()
    );
    let dk = kms
        .generate_data_key()
        .key_id(&id)
        .number_of_bytes(64)
        .send()
        .await
        .unwrap();
    assert_eq!(dk.plaintext().unwrap().as_ref().len(), 64);
    let e = kms
        .generate_data_key()
        .key_id(&id)
        .number_of_bytes(0)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let e = kms
        .generate_data_key()
        .key_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let np = kms
        .generate_data_key_without_plaintext()
        .key_id(&id)
        .key_spec(DataKeySpec::Aes128)
        .send()
        .await
        .unwrap();
    let back = kms
        .decrypt()
        .ciphertext_blob(np.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(back.plaintext().unwrap().as_ref().len(), 16);

    let r1 = kms
        .generate_random()
        .number_of_bytes(1024)
        .send()
        .await
        .unwrap();
    let r2 = kms
        .generate_random()
        .number_of_bytes(1024)
        .send()
        .await
        .unwrap();
    assert_eq!(r1.plaintext().unwrap().as_ref().len(), 1024);
    assert_ne!(
        r1.plaintext().unwrap().as_ref(),
        r2.plaintext().unwrap().as_ref()
    );
    let e = kms
        .generate_random()
        .number_of_bytes(1025)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");

    // Rotation: status, on-demand rotation, old ciphertexts still open.
    let st = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert!(!st.key_rotation_enabled());
    kms.enable_key_rotation()
        .key_id(&id)
        .rotation_period_in_days(180)
        .send()
        .await
        .unwrap();
    let st = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert!(st.key_rotation_enabled());
    assert_eq!(st.rotation_period_in_days(), Some(180));
    assert!(st.next_rotation_date().is_some());
    let e = kms
        .enable_key_rotation()
        .key_id(&id)
        .rotation_period_in_days(10)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");

    let old = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"before rotation".to_vec()))
        .send()
        .await
        .unwrap();
    kms.rotate_key_on_demand().key_id(&id).send().await.unwrap();
    let st = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert!(st.on_demand_rotation_start_date().is_some());
    let new = kms
        .encrypt()
        .key_id(&id)
        .plaintext(Blob::new(b"after rotation".to_vec()))
        .send()
        .await
        .unwrap();
    let d_old = kms
        .decrypt()
        .ciphertext_blob(old.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(d_old.plaintext().unwrap().as_ref(), b"before rotation");
    let d_new = kms
        .decrypt()
        .ciphertext_blob(new.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(d_new.plaintext().unwrap().as_ref(), b"after rotation");
    assert_ne!(d_old.key_material_id(), d_new.key_material_id());
    kms.disable_key_rotation().key_id(&id).send().await.unwrap();
    let st = kms
        .get_key_rotation_status()
        .key_id(&id)
        .send()
        .await
        .unwrap();
    assert!(!st.key_rotation_enabled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_aliases_and_ciphertexts_survive_restart() {
    let mut s = TestServer::start().await;
    let kms = s.kms().await;
    let k = kms
        .create_key()
        .description("durable")
        .send()
        .await
        .unwrap();
    let id = k.key_metadata().unwrap().key_id().to_string();
    kms.create_alias()
        .alias_name("alias/durable")
        .target_key_id(&id)
        .send()
        .await
        .unwrap();
    kms.rotate_key_on_demand().key_id(&id).send().await.unwrap();
    let ct = kms
        .encrypt()
        .key_id("alias/durable")
        .plaintext(Blob::new(b"persist me".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob()
        .unwrap()
        .clone();

    s.restart().await;
    let kms = s.kms().await;
    let d = kms
        .describe_key()
        .key_id("alias/durable")
        .send()
        .await
        .unwrap();
    assert_eq!(d.key_metadata().unwrap().key_id(), id);
    assert_eq!(d.key_metadata().unwrap().description(), Some("durable"));
    let pt = kms.decrypt().ciphertext_blob(ct).send().await.unwrap();
    assert_eq!(pt.plaintext().unwrap().as_ref(), b"persist me");
    s.stop().await;
}
