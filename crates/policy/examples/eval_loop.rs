//! Runs one benchmark scenario N times, for CPU-time measurement under `perf stat` on a busy
//! machine (criterion measures wall time, which other processes inflate):
//!
//! `perf stat -e task-clock cargo run --release --example eval_loop -p sluice-policy -- big 10000000`
//!
//! CPU ns per call = task-clock / N (with `EXPLAIN=1`, times `explain` instead). Scenarios: `story`, `big`, `deny`, `user`, `mixed`.

#[path = "../benches/support/scenario.rs"]
mod scenario;
use scenario::*;
use sluice_policy::*;
use std::hint::black_box;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("big");
    let n: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let story = Policy::parse_key_policy(STORY_A).unwrap();
    let big = Policy::parse_key_policy(&big_key_policy()).unwrap();
    let identity = Policy::parse_identity_policy(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Decrypt","kms:GenerateDataKey"],
        "Resource":"arn:aws:kms:us-east-1:111122223333:key/*"}]}"#,
    )
    .unwrap();
    let mut ctx = Context::new();
    ctx.set("kms:ViaService", "secretsmanager.us-east-1.amazonaws.com")
        .set("aws:SourceIp", "10.1.2.3")
        .set("aws:SecureTransport", "true")
        .set_encryption_context([
            ("SecretARN", "arn:aws:secretsmanager:us-east-1:111122223333:secret:events!connection/x/uuid-abcdef"),
            ("SecretVersionId", "v1"),
        ])
        .set_resource_tags([("EventBridgeApiDestinations", "true")]);
    let direct = Context::new().with("aws:SourceIp", "10.1.2.3");
    let root = PrincipalInfo::root(ACCT, "arn:aws:iam::111122223333:root");
    let alice = PrincipalInfo::user(
        ACCT,
        "arn:aws:iam::111122223333:user/alice",
        "AIDAALICE",
        "alice",
    );
    let ids = [&identity];
    let mixed = Policy::parse_identity_policy(&mixed_identity_policy()).unwrap();
    let mixed_ids = [&mixed];
    let (principal, context, policy, identities): (_, _, _, &[&Policy]) = match which {
        "story" => (root, &ctx, &story, &[]),
        "big" => (root, &ctx, &big, &[]),
        "deny" => (root, &direct, &big, &[]),
        "user" => (alice, &ctx, &big, &ids),
        "mixed" => (alice, &ctx, &story, &mixed_ids),
        other => panic!("unknown scenario {other:?} (story, big, deny, user, mixed)"),
    };
    let req = Request {
        principal,
        action: "kms:GenerateDataKey",
        resource: KEY,
        context,
    };
    let inputs = Inputs {
        identity_policies: identities,
        resource_policy: Some(policy),
        resource_account: ACCT,
        kind: ResourceKind::KmsKey,
    };
    let expected = evaluate(&req, &inputs).decision;
    if std::env::var_os("EXPLAIN").is_some() {
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert_eq!(
                explain(black_box(&req), black_box(&inputs))
                    .outcome
                    .decision,
                expected
            );
        }
        println!(
            "{which}: {n} explanations, wall {:.1} ns/call",
            start.elapsed().as_nanos() as f64 / n as f64
        );
        return;
    }
    let start = std::time::Instant::now();
    for _ in 0..n {
        let d = evaluate(black_box(&req), black_box(&inputs)).decision;
        assert_eq!(d, expected);
    }
    let wall = start.elapsed();
    println!(
        "{which}: {n} calls, {expected:?}, wall {:.1} ns/call",
        wall.as_nanos() as f64 / n as f64
    );
}
