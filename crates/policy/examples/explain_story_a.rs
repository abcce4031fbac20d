//! Prints the explanation of story A's refused direct use of the key, as `sluice policy explain`
//! would show it: `cargo run -p sluice-policy --example explain_story_a [json]`.

#[path = "../benches/support/scenario.rs"]
mod scenario;
use scenario::*;
use sluice_policy::*;

fn main() {
    let only_first = STORY_A.replace(
        r#",
 {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
  "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"}]}"#,
        "]}",
    );
    let policy = Policy::parse_key_policy(&only_first).expect("story A policy");
    let ctx = Context::new().with(
        "kms:EncryptionContext:SecretARN",
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:mysecret-a1b2c3",
    );
    let req = Request {
        principal: PrincipalInfo::root(ACCT, "arn:aws:iam::111122223333:root"),
        action: "kms:Decrypt",
        resource: KEY,
        context: &ctx,
    };
    let inputs = Inputs {
        identity_policies: &[],
        resource_policy: Some(&policy),
        resource_account: ACCT,
        kind: ResourceKind::KmsKey,
    };
    let ex = explain(&req, &inputs);
    if std::env::args().nth(1).as_deref() == Some("json") {
        println!(
            "{}",
            serde_json::to_string_pretty(&ex).expect("serializable")
        );
    } else {
        print!("{ex}");
    }
}
