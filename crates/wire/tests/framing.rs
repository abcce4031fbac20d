//! `parse_request`, `error_body` and the output helpers.

use serde_json::{Value, json};
use sluice_core::AwsError;
use sluice_wire::{by_target, error_body, parse_request, service};

const CT: Option<&str> = Some("application/x-amz-json-1.1");

fn err(ct: Option<&str>, target: Option<&str>, body: &[u8]) -> AwsError {
    match parse_request(ct, target, body) {
        Err(e) => e,
        Ok((_, op, _)) => panic!("expected an error, got {}", op.name()),
    }
}

#[test]
fn routes_and_parses() {
    let (svc, op, v) = parse_request(
        CT,
        Some("TrentService.Encrypt"),
        br#"{"KeyId":"alias/a","Plaintext":"QUJD"}"#,
    )
    .unwrap();
    assert_eq!((svc.name(), op.name()), ("kms", "Encrypt"));
    assert_eq!(v["KeyId"], "alias/a");

    let (svc, op, v) = parse_request(
        Some("Application/X-Amz-Json-1.1; charset=utf-8"),
        Some("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"),
        b"",
    )
    .unwrap();
    assert_eq!((svc.name(), op.name()), ("cloudtrail", "LookupEvents"));
    assert_eq!(v, json!({}));

    for (target, svc) in [
        ("secretsmanager.ListSecrets", "secretsmanager"),
        ("AWSEvents.ListRules", "events"),
        ("Firehose_20150804.ListDeliveryStreams", "firehose"),
    ] {
        let (s, _, _) =
            parse_request(Some("application/x-amz-json-1.0"), Some(target), b" \n ").unwrap();
        assert_eq!(s.name(), svc);
    }
}

#[test]
fn target_prefix_table_matches_models() {
    for name in sluice_wire::SERVICE_NAMES {
        let svc = service(name).unwrap();
        if svc.protocol() != "json" {
            continue;
        }
        for op in svc.operations() {
            let (s, o) = by_target(&format!("{}.{}", svc.target_prefix(), op.name())).unwrap();
            assert!(std::ptr::eq(s, svc) && std::ptr::eq(o, op));
        }
    }
}

#[test]
fn unknown_operations() {
    for target in [
        None,
        Some(""),
        Some("TrentService"),
        Some("TrentService.Nope"),
        Some("Nope.Encrypt"),
        Some(".Encrypt"),
        Some("TrentService.encrypt"),
    ] {
        let e = err(CT, target, b"{}");
        assert_eq!(e.code, "UnknownOperationException", "{target:?}");
        assert_eq!(e.status, 400);
    }
    let long = "X".repeat(10_000);
    let e = err(CT, Some(&long), b"{}");
    assert!(e.message.len() < 300, "client header echoed unbounded");
}

#[test]
fn content_type_must_be_amz_json() {
    for ct in [None, Some("application/json"), Some("text/plain"), Some("")] {
        let e = err(ct, Some("TrentService.ListKeys"), b"{}");
        assert_eq!(e.code, "UnknownOperationException", "{ct:?}");
    }
}

#[test]
fn bodies_must_be_json_objects() {
    for body in [
        &b"{"[..],
        b"[]",
        b"null",
        b"\"s\"",
        b"12",
        b"{\"Limit\":1}garbage",
        b"\xff\xfe",
    ] {
        let e = err(CT, Some("TrentService.ListKeys"), body);
        assert_eq!(e.code, "SerializationException", "{body:?}");
    }
}

#[test]
fn nesting_is_limited() {
    let ok = format!("{}{}", "[".repeat(63), "]".repeat(63));
    let body = format!(r#"{{"Unknown":{ok}}}"#);
    parse_request(CT, Some("TrentService.ListKeys"), body.as_bytes()).unwrap();
    let deep = format!("{}{}", "[".repeat(64), "]".repeat(64));
    let body = format!(r#"{{"Unknown":{deep}}}"#);
    let e = err(CT, Some("TrentService.ListKeys"), body.as_bytes());
    assert_eq!(e.code, "SerializationException");
    // Brackets inside strings do not count.
    let body = format!(
        r#"{{"KeyId":"{}\"{}","Plaintext":"QQ=="}}"#,
        "[".repeat(100),
        "{".repeat(100)
    );
    parse_request(CT, Some("TrentService.Encrypt"), body.as_bytes()).unwrap();
}

#[test]
fn validation_runs_after_parsing() {
    let e = err(CT, Some("TrentService.Encrypt"), br#"{"Plaintext":"QQ=="}"#);
    assert_eq!(e.code, "ValidationException");
}

#[test]
fn error_bodies_use_the_service_casing() {
    let e = AwsError::validation("bad \"thing\"");
    let kms: Value = serde_json::from_slice(&error_body(service("kms").unwrap(), &e)).unwrap();
    assert_eq!(
        kms,
        json!({"__type": "ValidationException", "message": "bad \"thing\""})
    );
    let sm: Value =
        serde_json::from_slice(&error_body(service("secretsmanager").unwrap(), &e)).unwrap();
    assert_eq!(
        sm,
        json!({"__type": "ValidationException", "Message": "bad \"thing\""})
    );
    let ev: Value = serde_json::from_slice(&error_body(service("events").unwrap(), &e)).unwrap();
    assert_eq!(ev["message"], "bad \"thing\"");
    let generic: Value = serde_json::from_slice(&sluice_wire::generic_error_body(&e)).unwrap();
    assert_eq!(generic, kms);
}

#[test]
fn output_helpers() {
    use time::macros::datetime;
    assert_eq!(sluice_wire::blob_value(b"ABC"), json!("QUJD"));
    assert_eq!(sluice_wire::blob_value(b"A"), json!("QQ=="));
    assert_eq!(sluice_wire::decode_blob("QQ==").unwrap(), b"A");
    assert_eq!(sluice_wire::decode_blob("QQ").unwrap(), b"A");
    assert_eq!(
        sluice_wire::decode_blob("!!").unwrap_err().code,
        "SerializationException"
    );
    let t = datetime!(2023-11-14 22:13:20 UTC);
    assert_eq!(sluice_wire::timestamp_value(t), json!(1_700_000_000));
    let t = datetime!(2023-11-14 22:13:20.123 UTC);
    assert_eq!(sluice_wire::timestamp_value(t), json!(1_700_000_000.123));
    assert_eq!(
        sluice_wire::parse_timestamp(&json!(1_700_000_000.5)).unwrap(),
        datetime!(2023-11-14 22:13:20.5 UTC)
    );
    assert!(sluice_wire::parse_timestamp(&json!("x")).is_none());
}
