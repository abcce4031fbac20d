//! The audit trail: every KMS call recorded, readable with CloudTrail LookupEvents, no
//! plaintext anywhere in the data directory.

mod common;

use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use aws_sdk_kms::primitives::Blob;
use base64::Engine;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_audited_and_no_plaintext_is_stored() {
    let mut s = TestServer::start().await;
    let kms = s.kms().await;
    let key = kms.create_key().send().await.unwrap();
    let key_arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    let secret_text = b"PLAINTEXT-MARKER-7f3a9c1e-never-on-disk".to_vec();
    let enc = kms
        .encrypt()
        .key_id(&key_arn)
        .plaintext(Blob::new(secret_text.clone()))
        .encryption_context(
            "SecretARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
        )
        .send()
        .await
        .unwrap();
    let ct = enc.ciphertext_blob().unwrap().clone();
    kms.decrypt()
        .ciphertext_blob(ct.clone())
        .encryption_context(
            "SecretARN",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
        )
        .send()
        .await
        .unwrap();
    let dk = kms
        .generate_data_key()
        .key_id(&key_arn)
        .number_of_bytes(32)
        .send()
        .await
        .unwrap();
    let data_key = dk.plaintext().unwrap().as_ref().to_vec();
    // A failed call is audited too.
    kms.decrypt()
        .ciphertext_blob(ct.clone())
        .send()
        .await
        .unwrap_err();

    let ct_client = s.cloudtrail().await;
    let events = ct_client
        .lookup_events()
        .lookup_attributes(
            LookupAttribute::builder()
                .attribute_key(LookupAttributeKey::EventName)
                .attribute_value("Decrypt")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let evs = events.events();
    assert_eq!(evs.len(), 2, "one successful and one failed Decrypt");
    let docs: Vec<serde_json::Value> = evs
        .iter()
        .map(|e| serde_json::from_str(e.cloud_trail_event().unwrap()).unwrap())
        .collect();
    // Newest first: the failed one.
    assert_eq!(docs[0]["errorCode"], "InvalidCiphertextException");
    assert!(docs[1]["errorCode"].is_null());
    assert_eq!(docs[1]["eventSource"], "kms.amazonaws.com");
    assert_eq!(
        docs[1]["requestParameters"]["encryptionContext"]["SecretARN"],
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"
    );
    assert_eq!(docs[1]["userIdentity"]["type"], "Root");
    assert_eq!(docs[1]["userIdentity"]["accessKeyId"], AKID);
    assert_eq!(docs[1]["resources"][0]["ARN"], key_arn.as_str());
    assert_eq!(
        evs[1].resources()[0].resource_name(),
        Some(key_arn.as_str())
    );

    // Filter by resource, pagination.
    let all = ct_client
        .lookup_events()
        .lookup_attributes(
            LookupAttribute::builder()
                .attribute_key(LookupAttributeKey::ResourceName)
                .attribute_value(&key_arn)
                .build()
                .unwrap(),
        )
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(all.events().len(), 2);
    let next = all.next_token().expect("more pages").to_string();
    let page2 = ct_client
        .lookup_events()
        .lookup_attributes(
            LookupAttribute::builder()
                .attribute_key(LookupAttributeKey::ResourceName)
                .attribute_value(&key_arn)
                .build()
                .unwrap(),
        )
        .max_results(50)
        .next_token(next)
        .send()
        .await
        .unwrap();
    // CreateKey, Encrypt, Decrypt, GenerateDataKey, Decrypt(failed) = 5 in all.
    assert_eq!(page2.events().len(), 3);

    // Nothing in the data directory holds the plaintexts, in raw or base64 form.
    s.stop().await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let needles = [
        secret_text.clone(),
        b64.encode(&secret_text).into_bytes(),
        data_key.clone(),
        b64.encode(&data_key).into_bytes(),
    ];
    let files = files_under(&s.dir);
    assert!(files.iter().any(|(p, _)| p.ends_with("sluice.db")));
    for (path, bytes) in files {
        for n in &needles {
            assert!(
                !contains(&bytes, n),
                "{} contains plaintext",
                path.display()
            );
        }
    }
}
