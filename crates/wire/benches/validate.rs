//! Validation and framing costs (see docs/PERFORMANCE-wire.md).
//!
//! `cargo bench -p sluice-wire --bench validate`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;

const ENCRYPT: &[u8] = br#"{"KeyId":"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab","Plaintext":"c2VjcmV0IGRhdGEga2V5IG1hdGVyaWFsIDMyIGJ5dGVzISE=","EncryptionContext":{"SecretARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf","SecretVersionId":"0a1b2c3d-4e5f-6789-abcd-ef0123456789"},"EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}"#;

fn put_events() -> Vec<u8> {
    let entry = r#"{"Source":"com.example.orders","DetailType":"OrderPlaced","Detail":"{\"orderId\":\"o-1\",\"amount\":42}","EventBusName":"default","Resources":["arn:aws:s3:::bucket"]}"#;
    let entries = [entry; 10].join(",");
    format!(r#"{{"Entries":[{entries}]}}"#).into_bytes()
}

fn bench(c: &mut Criterion) {
    let (_, encrypt) = sluice_wire::by_target("TrentService.Encrypt").unwrap();
    let encrypt_body: Value = serde_json::from_slice(ENCRYPT).unwrap();
    c.bench_function("validate/kms_encrypt", |b| {
        b.iter(|| encrypt.validate(black_box(&encrypt_body)).unwrap())
    });
    c.bench_function("parse_request/kms_encrypt", |b| {
        b.iter(|| {
            sluice_wire::parse_request(
                Some("application/x-amz-json-1.1"),
                Some("TrentService.Encrypt"),
                black_box(ENCRYPT),
            )
            .unwrap()
        })
    });
    let bad: Value =
        serde_json::from_str(r#"{"Plaintext":"QUJD","EncryptionAlgorithm":"AES"}"#).unwrap();
    c.bench_function("validate/kms_encrypt_2_errors", |b| {
        b.iter(|| encrypt.validate(black_box(&bad)).unwrap_err())
    });
    let (_, put) = sluice_wire::by_target("AWSEvents.PutEvents").unwrap();
    let pe = put_events();
    let pe_body: Value = serde_json::from_slice(&pe).unwrap();
    c.bench_function("validate/events_put_events_10", |b| {
        b.iter(|| put.validate(black_box(&pe_body)).unwrap())
    });
    c.bench_function("parse_request/events_put_events_10", |b| {
        b.iter(|| {
            sluice_wire::parse_request(
                Some("application/x-amz-json-1.1"),
                Some("AWSEvents.PutEvents"),
                black_box(&pe),
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
