//! Shared benchmark scenario: the story A key policy and a 20-statement key policy with
//! conditions (used by benches/evaluate.rs and examples/eval_loop.rs).

#![allow(dead_code)]

pub const ACCT: &str = "111122223333";
pub const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

pub const STORY_A: &str = r#"{"Version": "2012-10-17", "Id": "key-policy-example", "Statement": [
 {"Sid": "foreventbridge", "Effect": "Allow",
  "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*",
  "Condition": {"StringLike": {
    "kms:ViaService": "secretsmanager.*.amazonaws.com",
    "kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:*:*:secret:events!connection/*"}}},
 {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
  "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"}]}"#;

/// A 20-statement key policy: 19 statements that do not apply to the benchmark request for
/// various reasons (principal, action, a failing condition late in the block), every one with
/// conditions, and the story A statement last.
pub fn big_key_policy() -> String {
    let mut st = Vec::new();
    for i in 0..19 {
        let s = match i % 5 {
            0 => format!(
                r#"{{"Sid":"Other{i}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:role/app-{i}"}},
                "Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*",
                "Condition":{{"StringEquals":{{"kms:CallerAccount":"111122223333"}}}}}}"#
            ),
            1 => format!(
                r#"{{"Sid":"Admins{i}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},
                "Action":["kms:Create*","kms:Describe*","kms:Enable*","kms:List*","kms:Put*","kms:Update*","kms:Revoke*"],
                "Resource":"*","Condition":{{"Bool":{{"aws:SecureTransport":"true"}}}}}}"#
            ),
            2 => format!(
                r#"{{"Sid":"Ctx{i}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::111122223333:root"}},
                "Action":"kms:*","Resource":"*",
                "Condition":{{"StringEquals":{{"kms:ViaService":"secretsmanager.us-east-1.amazonaws.com"}},
                "StringLike":{{"kms:EncryptionContext:SecretARN":"arn:aws:secretsmanager:*:*:secret:team-{i}/*"}}}}}}"#
            ),
            3 => format!(
                r#"{{"Sid":"Ip{i}","Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*",
                "Condition":{{"NotIpAddress":{{"aws:SourceIp":["10.0.0.0/8","192.168.0.0/16"]}},
                "Bool":{{"aws:ViaAWSService":"false"}}}}}}"#
            ),
            _ => format!(
                r#"{{"Sid":"Tags{i}","Effect":"Allow","Principal":{{"AWS":"*"}},"Action":"kms:Decrypt","Resource":"*",
                "Condition":{{"StringEquals":{{"aws:ResourceTag/team":"${{aws:PrincipalTag/team}}","kms:CallerAccount":"444455556666"}},
                "ForAllValues:StringEquals":{{"kms:EncryptionContextKeys":["SecretARN","SecretVersionId"]}}}}}}"#
            ),
        };
        st.push(s);
    }
    st.push(
        r#"{"Sid":"foreventbridge","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},
        "Action":"kms:*","Resource":"*","Condition":{"StringLike":{"kms:ViaService":"secretsmanager.*.amazonaws.com",
        "kms:EncryptionContext:SecretARN":"arn:aws:secretsmanager:*:*:secret:events!connection/*"}}}"#
            .to_string(),
    );
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        st.join(",")
    )
}

/// A 20-statement identity policy over several services, every statement with a condition, as
/// IAM users accumulate them; the request (kms:Decrypt) matches the last statement only.
pub fn mixed_identity_policy() -> String {
    let services = [
        "s3",
        "ec2",
        "sqs",
        "sns",
        "dynamodb",
        "logs",
        "events",
        "firehose",
        "secretsmanager",
        "lambda",
    ];
    let mut st = Vec::new();
    for i in 0..19 {
        let svc = services[i % services.len()];
        st.push(format!(
            r#"{{"Sid":"S{i}","Effect":"{}","Action":["{svc}:Get*","{svc}:List*","{svc}:Describe*"],
            "Resource":"arn:aws:{svc}:us-east-1:111122223333:*/team-{i}/*",
            "Condition":{{"StringEquals":{{"aws:RequestedRegion":"us-east-1"}},"Bool":{{"aws:SecureTransport":"true"}}}}}}"#,
            if i % 7 == 3 { "Deny" } else { "Allow" }
        ));
    }
    st.push(
        r#"{"Sid":"UseKeyViaSecretsManager","Effect":"Allow","Action":["kms:Decrypt","kms:GenerateDataKey"],
        "Resource":"arn:aws:kms:us-east-1:111122223333:key/*",
        "Condition":{"StringLike":{"kms:ViaService":"secretsmanager.*.amazonaws.com"}}}"#
            .to_string(),
    );
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        st.join(",")
    )
}
