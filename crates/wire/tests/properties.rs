//! Property tests: no input panics the validator or the framing, error texts keep their shape,
//! and sensitive values never appear in messages.

use proptest::prelude::*;
use serde_json::{Map, Value};
use sluice_wire::{SERVICE_NAMES, parse_request, service};

/// Every member name of every shipped model, so that generated objects hit real members and
/// validation goes deep instead of ignoring unknown keys.
fn member_names() -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for svc in SERVICE_NAMES {
        let text =
            std::fs::read_to_string(manifest_dir().join(format!("models/{svc}.json"))).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        for shape in doc["shapes"].as_object().unwrap().values() {
            if let Some(members) = shape.get("members").and_then(Value::as_object) {
                names.extend(members.keys().cloned());
            }
        }
    }
    names.into_iter().collect()
}

/// All `(service, operation)` pairs.
fn operations() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for svc in SERVICE_NAMES {
        for op in service(svc).unwrap().operations() {
            out.push((*svc, op.name().to_owned()));
        }
    }
    out
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            0i64, 1, -1, 7, 10, 11, 1024, 1025, 2048, 2049, 4096, 65536
        ])
        .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[A-Za-z0-9+/]{0,12}={0,2}".prop_map(Value::String),
        prop::sample::select(vec![
            "SYMMETRIC_DEFAULT",
            "AES_256",
            "alias/x",
            "arn:aws:kms:us-east-1:123456789012:key/k",
            "",
        ])
        .prop_map(|s| Value::String(s.into())),
        (0usize..5000).prop_map(|n| Value::String("a".repeat(n))),
    ]
}

fn json_value(names: Vec<String>) -> impl Strategy<Value = Value> {
    leaf().prop_recursive(8, 256, 8, move |inner| {
        let names = names.clone();
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(names).boxed(), ".{0,8}".boxed()],
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn check_error_shape(e: &sluice_core::AwsError) {
    assert_eq!(e.status, 400);
    match e.code.as_ref() {
        "ValidationException" => {
            let n: usize = e.message.split(' ').next().unwrap().parse().unwrap();
            assert!(
                (1..=sluice_wire::MAX_REPORTED).contains(&n),
                "{}",
                e.message
            );
            // An echoed value could itself contain the phrase, hence `>=`.
            assert!(e.message.matches("failed to satisfy constraint").count() >= n);
            let head = if n == 1 {
                "1 validation error detected: ".to_owned()
            } else {
                format!("{n} validation errors detected: ")
            };
            assert!(e.message.starts_with(&head), "{}", e.message);
        }
        "SerializationException" | "UnknownOperationException" => {}
        other => panic!("unexpected error code {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn validate_never_panics(
        op in prop::sample::select(operations()),
        body in prop::collection::vec((prop::sample::select(member_names()), json_value(member_names())), 0..10)
    ) {
        let (svc, op) = op;
        let op = service(svc).unwrap().operation(&op).unwrap();
        let body = Value::Object(body.into_iter().collect());
        if let Err(e) = op.validate(&body) {
            check_error_shape(&e);
        }
    }

    #[test]
    fn validate_accepts_any_value_shape(value in json_value(member_names())) {
        for (svc, op) in [("kms", "Encrypt"), ("events", "PutTargets"), ("firehose", "CreateDeliveryStream")] {
            let op = service(svc).unwrap().operation(op).unwrap();
            if let Err(e) = op.validate(&value) {
                check_error_shape(&e);
            }
        }
    }

    #[test]
    fn parse_request_never_panics(
        target in prop::sample::select(operations()).prop_map(|(s, o)| format!("{}.{o}", service(s).unwrap().target_prefix())),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Err(e) = parse_request(Some("application/x-amz-json-1.1"), Some(&target), &body) {
            check_error_shape(&e);
        }
    }

    #[test]
    fn parse_request_on_serialized_json(
        target in prop::sample::select(operations()).prop_map(|(s, o)| format!("{}.{o}", service(s).unwrap().target_prefix())),
        value in json_value(member_names()),
    ) {
        let body = serde_json::to_vec(&value).unwrap();
        if let Err(e) = parse_request(Some("application/x-amz-json-1.1"), Some(&target), &body) {
            check_error_shape(&e);
        }
    }

    #[test]
    fn sensitive_values_never_leak(secret in "[A-Za-z0-9]{12,20}", pad in 0usize..70000, extra in json_value(member_names())) {
        let marker = format!("MARK{secret}");
        let long = format!("{marker}{}", "x".repeat(pad));
        let b64 = |s: &str| sluice_wire::blob_value(s.as_bytes());
        let cases = [
            ("secretsmanager", "CreateSecret", serde_json::json!({"Name": "n", "SecretString": long, "Tags": extra})),
            ("secretsmanager", "PutSecretValue", serde_json::json!({"SecretId": "", "SecretString": long, "SecretBinary": b64(&long)})),
            ("kms", "Encrypt", serde_json::json!({"Plaintext": b64(&long), "GrantTokens": extra})),
            ("events", "CreateConnection", serde_json::json!({"Name": "bad name", "AuthorizationType": "BASIC",
                "AuthParameters": {"BasicAuthParameters": {"Username": "", "Password": long},
                    "InvocationHttpParameters": {"HeaderParameters": [{"Key": "k", "Value": long, "IsValueSecret": true}]}}})),
            ("sts", "AssumeRoleWithWebIdentity", serde_json::json!({"RoleArn": "a", "RoleSessionName": "s", "WebIdentityToken": long})),
            ("sts", "AssumeRoleWithSAML", serde_json::json!({"RoleArn": "a", "PrincipalArn": "p", "SAMLAssertion": long})),
        ];
        for (svc, op, body) in cases {
            let op = service(svc).unwrap().operation(op).unwrap();
            if let Err(e) = op.validate(&body) {
                prop_assert!(!e.message.contains(&marker), "{} leaked in {}", svc, e.message);
            }
        }
    }
}

/// The package directory at run time (`cargo test` sets it). The compile-time value can name
/// another checkout when a shared target directory is reused across clones.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
