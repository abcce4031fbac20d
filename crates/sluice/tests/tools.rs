//! The offline operator tools of the real binary: `sluice policy explain` and `sluice pattern`.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

const STORY_A: &str = r#"{"Version": "2012-10-17", "Statement": [
 {"Sid": "foreventbridge", "Effect": "Allow",
  "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*",
  "Condition": {"StringLike": {
    "kms:ViaService": "secretsmanager.*.amazonaws.com",
    "kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:*:*:secret:events!connection/*"}}}]}"#;

const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn explain(via: &str, secret_arn: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["policy", "explain", "--kms", "--policy", STORY_A])
        .args(["--principal", "arn:aws:iam::123456789012:root"])
        .args(["--action", "kms:Decrypt", "--resource", KEY])
        .args(["--via-service", via])
        .arg("--encryption-context")
        .arg(format!("SecretARN={secret_arn}"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn policy_explain_answers_story_a_without_a_server() {
    let good = "arn:aws:secretsmanager:us-east-1:123456789012:secret:events!connection/dd/u-abcdef";
    let (code, text) = explain("secretsmanager", good);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ALLOW") && text.contains("foreventbridge"),
        "{text}"
    );

    let (code, text) = explain("events", good);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("kms:ViaService"), "{text}");

    let (code, text) = explain(
        "secretsmanager",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:mine-abcdef",
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("kms:EncryptionContext:SecretARN"), "{text}");

    // A malformed policy is an error, exit 2, with the reason.
    let out = Command::new(BIN)
        .args([
            "policy",
            "explain",
            "--policy",
            r#"{"Statement": [{"Effect": "Maybe"}]}"#,
        ])
        .args([
            "--principal",
            "arn:aws:iam::123456789012:root",
            "--action",
            "kms:Decrypt",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_ne!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty());
}

#[test]
fn pattern_test_exit_codes() {
    let run = |p: &str, e: &str| {
        let out = Command::new(BIN)
            .args(["pattern", "test", "--pattern", p, "--event", e])
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let p = r#"{"source":["aws.ec2"],"detail":{"state":["running"]}}"#;
    assert_eq!(
        run(p, r#"{"source":"aws.ec2","detail":{"state":"running"}}"#).0,
        0
    );
    let (code, text) = run(p, r#"{"source":"aws.ec2","detail":{"state":"stopped"}}"#);
    assert_eq!(code, 1);
    assert!(text.contains("detail.state"), "{text}");
    assert_eq!(run(r#"{"source":"aws.ec2"}"#, "{}").0, 2);
    assert_eq!(run(p, "not json").0, 2);
}
