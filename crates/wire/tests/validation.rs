//! Table tests of validation against the real botocore models.

use serde_json::{Value, json};
use sluice_core::AwsError;
use sluice_wire::{by_target, service};

fn run(target: &str, body: Value) -> Result<(), AwsError> {
    let (_, op) = by_target(target).expect("known target");
    op.validate(&body)
}

fn validation(target: &str, body: Value) -> String {
    match run(target, body) {
        Err(e) => {
            assert_eq!(e.code, "ValidationException", "{e:?}");
            assert_eq!(e.status, 400);
            e.message
        }
        Ok(()) => panic!("{target}: expected a ValidationException"),
    }
}

fn serialization(target: &str, body: Value) -> String {
    match run(target, body) {
        Err(e) => {
            assert_eq!(e.code, "SerializationException", "{e:?}");
            assert_eq!(e.status, 400);
            e.message
        }
        Ok(()) => panic!("{target}: expected a SerializationException"),
    }
}

fn b64(n: usize) -> String {
    sluice_wire::blob_value(&vec![7u8; n])
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn valid_requests_pass() {
    let ok = [
        (
            "TrentService.Encrypt",
            json!({"KeyId": "alias/app", "Plaintext": b64(4096),
                   "EncryptionContext": {"tenant": "t-42"},
                   "EncryptionAlgorithm": "SYMMETRIC_DEFAULT", "Unknown": {"x": [1]}}),
        ),
        (
            "TrentService.GenerateDataKey",
            json!({"KeyId": "k", "NumberOfBytes": 1024}),
        ),
        (
            "TrentService.CreateAlias",
            json!({"AliasName": "alias/my-app_1", "TargetKeyId": "1234abcd"}),
        ),
        (
            "secretsmanager.CreateSecret",
            json!({"Name": "prod/db", "SecretString": "{\"password\":\"x\"}",
                   "Tags": [{"Key": "team", "Value": "core"}]}),
        ),
        (
            "AWSEvents.PutEvents",
            json!({"Entries": (0..10).map(|_| json!({"Source": "app", "DetailType": "t", "Detail": "{}"})).collect::<Vec<_>>()}),
        ),
        (
            "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents",
            json!({"StartTime": 1_700_000_000, "EndTime": 1_700_000_100.5, "MaxResults": 50,
                   "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "Encrypt"}]}),
        ),
        ("Firehose_20150804.ListDeliveryStreams", json!({})),
        ("TrentService.ListKeys", json!({"Limit": null})),
    ];
    for (target, body) in ok {
        assert_eq!(run(target, body), Ok(()), "{target}");
    }
}

#[test]
fn constraint_violations_have_aws_texts() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "TrentService.Encrypt",
            json!({"Plaintext": "QUJD"}),
            "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null",
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": "k".repeat(2049), "Plaintext": "QUJD"}),
            &*Box::leak(format!(
                "1 validation error detected: Value '{}' at 'keyId' failed to satisfy constraint: Member must have length less than or equal to 2048",
                "k".repeat(2049)
            ).into_boxed_str()),
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": "k", "Plaintext": "QUJD", "EncryptionAlgorithm": "AES"}),
            "1 validation error detected: Value 'AES' at 'encryptionAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]",
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": "k", "Plaintext": b64(4097)}),
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096",
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": "k", "Plaintext": ""}),
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ),
        (
            "TrentService.GenerateDataKey",
            json!({"KeyId": "k", "NumberOfBytes": 0}),
            "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: Member must have value greater than or equal to 1",
        ),
        (
            "TrentService.GenerateDataKey",
            json!({"KeyId": "k", "NumberOfBytes": 1025}),
            "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: Member must have value less than or equal to 1024",
        ),
        (
            "TrentService.CreateAlias",
            json!({"AliasName": "alias/bad name!", "TargetKeyId": "k"}),
            "1 validation error detected: Value 'alias/bad name!' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
        ),
        (
            "secretsmanager.CreateSecret",
            json!({"Name": "n".repeat(513)}),
            &*Box::leak(format!(
                "1 validation error detected: Value '{}' at 'name' failed to satisfy constraint: Member must have length less than or equal to 512",
                "n".repeat(513)
            ).into_boxed_str()),
        ),
        (
            "AWSEvents.PutEvents",
            json!({"Entries": (0..11).map(|_| json!({"Source": "app"})).collect::<Vec<_>>()}),
            "1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length less than or equal to 10",
        ),
        (
            "AWSEvents.PutEvents",
            json!({"Entries": []}),
            "1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ),
        (
            "secretsmanager.TagResource",
            json!({"SecretId": "s", "Tags": [{"Key": "ok", "Value": "v"}, {"Key": "", "Value": "v"}]}),
            "1 validation error detected: Value '' at 'tags.2.member.key' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ),
        (
            "TrentService.ListKeys",
            json!({"Limit": 0}),
            "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1",
        ),
    ];
    for (target, body, want) in cases {
        assert_eq!(validation(target, body), want, "{target}");
    }
}

#[test]
fn several_errors_are_joined_and_capped() {
    let msg = validation(
        "TrentService.CreateAlias",
        json!({"AliasName": "a ".repeat(129)}),
    );
    assert!(msg.starts_with("3 validation errors detected: "), "{msg}");
    assert_eq!(msg.matches("; ").count(), 2, "{msg}");
    assert!(msg.contains(
        "Value null at 'targetKeyId' failed to satisfy constraint: Member must not be null"
    ));
    assert!(msg.contains("Member must have length less than or equal to 256"));
    assert!(msg.contains("Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$"));

    // 30 bad tags produce 30 violations; AWS-style messages list at most MAX_REPORTED.
    let tags: Vec<Value> = (0..30)
        .map(|_| json!({"TagKey": "", "TagValue": "v"}))
        .collect();
    let msg = validation(
        "TrentService.TagResource",
        json!({"KeyId": "k", "Tags": tags}),
    );
    assert!(msg.starts_with("10 validation errors detected: "), "{msg}");
    assert_eq!(
        msg.matches("failed to satisfy constraint").count(),
        sluice_wire::MAX_REPORTED
    );
    assert!(msg.contains("'tags.1.member.tagKey'"));
    assert!(msg.contains("'tags.10.member.tagKey'"));
}

#[test]
fn map_keys_and_values_are_reported_once_per_map() {
    // KMS EncryptionContext keys/values have no constraints; Events InputPathsMap keys do.
    let msg = validation(
        "AWSEvents.PutTargets",
        json!({"Rule": "r", "Targets": [{"Id": "t", "Arn": "arn:aws:sqs:us-east-1:123456789012:q",
            "InputTransformer": {"InputTemplate": "x", "InputPathsMap": {"bad key": "$.a", "also bad": "$.b"}}}]}),
    );
    assert_eq!(
        msg,
        "1 validation error detected: Value '{also bad=$.b, bad key=$.a}' at 'targets.1.member.inputTransformer.inputPathsMap' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 256, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: [A-Za-z0-9\\_\\-]+]"
    );
}

#[test]
fn sensitive_values_are_never_echoed() {
    let secret = "hunter2-very-secret-value";
    let cases = vec![
        // Sensitive string shape (SecretStringType), too long.
        (
            "secretsmanager.CreateSecret",
            json!({"Name": "n", "SecretString": format!("{secret}{}", "x".repeat(65536))}),
        ),
        // Sensitive blob.
        (
            "TrentService.Encrypt",
            json!({"KeyId": "k", "Plaintext": b64(5000)}),
        ),
        // Sensitive member nested in a structure (Connection API key value), too long.
        (
            "AWSEvents.CreateConnection",
            json!({"Name": "c", "AuthorizationType": "API_KEY",
            "AuthParameters": {"ApiKeyAuthParameters": {"ApiKeyName": "n", "ApiKeyValue": format!("{secret}{}", "x".repeat(600))}}}),
        ),
        // Sensitive password in basic auth, empty (min 1).
        (
            "AWSEvents.CreateConnection",
            json!({"Name": "c", "AuthorizationType": "BASIC",
            "AuthParameters": {"BasicAuthParameters": {"Username": "u", "Password": ""}}}),
        ),
    ];
    for (target, body) in cases {
        let msg = validation(target, body);
        assert!(!msg.contains(secret), "{msg}");
        assert!(msg.contains("Value at '"), "{msg}");
        assert!(!msg.contains("Value '"), "{msg}");
    }
    // Type errors never echo values either.
    let msg = serialization(
        "TrentService.Encrypt",
        json!({"KeyId": "k", "Plaintext": format!("{secret}!")}),
    );
    assert!(!msg.contains(secret), "{msg}");
}

#[test]
fn wrong_types_are_serialization_errors() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "TrentService.Encrypt",
            json!({"KeyId": {"a": 1}, "Plaintext": "QQ=="}),
            "Start of structure or map found where not expected.",
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": ["a"], "Plaintext": "QQ=="}),
            "Start of list found where not expected.",
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": 5, "Plaintext": "QQ=="}),
            "NUMBER_VALUE can not be converted to a String",
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": "k", "Plaintext": "not base64!"}),
            "STRING_VALUE can not be converted to a Blob: it is not valid base64",
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": "k", "Plaintext": "QQ==", "EncryptionContext": "x"}),
            "STRING_VALUE can not be converted to a Map",
        ),
        (
            "TrentService.Encrypt",
            json!({"KeyId": "k", "Plaintext": "QQ==", "EncryptionContext": {"a": 1}}),
            "NUMBER_VALUE can not be converted to a String",
        ),
        (
            "TrentService.GenerateDataKey",
            json!({"KeyId": "k", "NumberOfBytes": "32"}),
            "STRING_VALUE can not be converted to an Integer",
        ),
        (
            "TrentService.GenerateDataKey",
            json!({"KeyId": "k", "NumberOfBytes": 2_147_483_648u64}),
            "NUMBER_VALUE can not be converted to an Integer",
        ),
        (
            "TrentService.GenerateDataKey",
            json!({"KeyId": "k", "NumberOfBytes": 32.5}),
            "NUMBER_VALUE can not be converted to an Integer",
        ),
        (
            "TrentService.CreateKey",
            json!({"BypassPolicyLockoutSafetyCheck": "true"}),
            "STRING_VALUE can not be converted to a Boolean",
        ),
        (
            "TrentService.CreateKey",
            json!({"Tags": {"TagKey": "a"}}),
            "Start of structure or map found where not expected.",
        ),
        (
            "TrentService.CreateKey",
            json!({"Tags": ["a"]}),
            "STRING_VALUE can not be converted to a Structure",
        ),
        (
            "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents",
            json!({"StartTime": "2024-01-01T00:00:00Z"}),
            "STRING_VALUE can not be converted to a Timestamp",
        ),
        (
            "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents",
            json!({"StartTime": 1e300}),
            "NUMBER_VALUE can not be converted to a Timestamp: out of range",
        ),
        (
            "secretsmanager.ListSecrets",
            json!({"MaxResults": 9_223_372_036_854_775_808u64}),
            "NUMBER_VALUE can not be converted to an Integer",
        ),
        (
            "TrentService.Encrypt",
            json!("just a string"),
            "STRING_VALUE can not be converted to a Structure",
        ),
    ];
    for (target, body, want) in cases {
        assert_eq!(serialization(target, body), want, "{target}");
    }
}

#[test]
fn type_errors_win_over_constraint_errors() {
    // A missing required member and a wrong type: AWS fails deserialization first.
    let msg = serialization("TrentService.Encrypt", json!({"Plaintext": 5}));
    assert_eq!(msg, "NUMBER_VALUE can not be converted to a Blob");
}

#[test]
fn every_model_loads_and_only_known_patterns_are_unenforced() {
    let mut unenforced = Vec::new();
    for name in sluice_wire::SERVICE_NAMES {
        let svc = service(name).expect("model");
        assert_eq!(svc.name(), *name);
        assert!(svc.operations().len() > 5, "{name}");
        for (shape, pattern) in svc.unenforced_patterns() {
            unenforced.push(format!("{name}:{shape}:{pattern}"));
        }
    }
    unenforced.sort();
    assert_eq!(
        unenforced,
        [
            r"firehose:ClusterJDBCURL:jdbc:(redshift|postgresql)://((?!-)[A-Za-z0-9-]{1,63}(?<!-)\.)+(redshift(-serverless)?)\.([a-zA-Z0-9\.\-]+):\d{1,5}/[a-zA-Z0-9_$-]+",
            r"iam:accountAliasType:^[a-z0-9]([a-z0-9]|-(?!-)){1,61}[a-z0-9]$",
        ]
    );
}

#[test]
fn service_metadata() {
    let kms = service("kms").unwrap();
    assert_eq!(kms.target_prefix(), "TrentService");
    assert_eq!(kms.error_message_member(), "message");
    assert_eq!(kms.json_version(), Some("1.1"));
    assert_eq!(kms.signing_name(), "kms");
    assert_eq!(kms.operations().len(), 56);
    let sm = service("secretsmanager").unwrap();
    assert_eq!(sm.error_message_member(), "Message");
    assert_eq!(
        sm.operation("CreateSecret")
            .unwrap()
            .idempotency_token_members()
            .collect::<Vec<_>>(),
        ["ClientRequestToken"]
    );
    assert_eq!(service("events").unwrap().operations().len(), 57);
    assert_eq!(service("events").unwrap().api_version(), "2015-10-07");
    assert_eq!(service("firehose").unwrap().operations().len(), 12);
    assert_eq!(service("iam").unwrap().protocol(), "query");
    assert_eq!(service("iam").unwrap().target_prefix(), "");
    assert_eq!(
        service("sts")
            .unwrap()
            .operation("GetCallerIdentity")
            .unwrap()
            .name(),
        "GetCallerIdentity"
    );
    assert!(service("s3").is_none());
    assert!(kms.operation("encrypt").is_none());
}

#[test]
fn nested_paths_and_character_lengths() {
    // Required member of a structure inside a list.
    let msg = validation(
        "TrentService.TagResource",
        json!({"KeyId": "k", "Tags": [{"TagKey": "a", "TagValue": "b"}, {"TagKey": "c"}]}),
    );
    assert_eq!(
        msg,
        "1 validation error detected: Value null at 'tags.2.member.tagValue' failed to satisfy constraint: Member must not be null"
    );
    // A list of strings: element constraints are reported on the element.
    let msg = validation(
        "TrentService.Encrypt",
        json!({"KeyId": "k", "Plaintext": "QQ==", "GrantTokens": ["ok", ""]}),
    );
    assert_eq!(
        msg,
        "1 validation error detected: Value '' at 'grantTokens.2.member' failed to satisfy constraint: Member must have length greater than or equal to 1"
    );
    // String lengths count characters, not bytes (Description: max 2048).
    assert_eq!(
        run(
            "secretsmanager.CreateSecret",
            json!({"Name": "n", "Description": "é".repeat(2048)})
        ),
        Ok(())
    );
    let msg = validation(
        "secretsmanager.CreateSecret",
        json!({"Name": "n", "Description": "é".repeat(2049)}),
    );
    assert!(
        msg.ends_with("at 'description' failed to satisfy constraint: Member must have length less than or equal to 2048"),
        "{msg}"
    );
}
