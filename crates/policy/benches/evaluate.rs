//! Evaluation speed of compiled policies (see docs/PERFORMANCE-policy.md).

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use sluice_policy::*;

#[path = "support/scenario.rs"]
mod scenario;
use scenario::*;

fn bench(c: &mut Criterion) {
    let story = Policy::parse_key_policy(STORY_A).unwrap();
    let big_src = big_key_policy();
    let big = Policy::parse_key_policy(&big_src).unwrap();
    assert_eq!(big.statement_count(), 20);
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
    let req = |principal, context| Request {
        principal,
        action: "kms:GenerateDataKey",
        resource: KEY,
        context,
    };
    let key_inputs = |p| Inputs {
        identity_policies: &[],
        resource_policy: Some(p),
        resource_account: ACCT,
        kind: ResourceKind::KmsKey,
    };

    let mut g = c.benchmark_group("evaluate");
    let r = req(root, &ctx);
    let i = key_inputs(&story);
    assert!(evaluate(&r, &i).is_allowed());
    g.bench_function("story_a_2_statements_allow", |b| {
        b.iter(|| evaluate(black_box(&r), black_box(&i)))
    });

    let i = key_inputs(&big);
    assert!(evaluate(&r, &i).is_allowed());
    g.bench_function("key_policy_20_statements_allow_last", |b| {
        b.iter(|| evaluate(black_box(&r), black_box(&i)))
    });

    let rd = req(root, &direct);
    assert_eq!(evaluate(&rd, &i).decision, Decision::ImplicitDeny);
    g.bench_function("key_policy_20_statements_implicit_deny", |b| {
        b.iter(|| evaluate(black_box(&rd), black_box(&i)))
    });

    let ids = [&identity];
    let ra = req(alice, &ctx);
    let ia = Inputs {
        identity_policies: &ids,
        resource_policy: Some(&big),
        resource_account: ACCT,
        kind: ResourceKind::KmsKey,
    };
    assert!(evaluate(&ra, &ia).is_allowed());
    g.bench_function("key_policy_20_plus_identity_user_allow", |b| {
        b.iter(|| evaluate(black_box(&ra), black_box(&ia)))
    });

    let mixed = Policy::parse_identity_policy(&mixed_identity_policy()).unwrap();
    assert_eq!(mixed.statement_count(), 20);
    let mixed_ids = [&mixed];
    let rg = Request {
        principal: alice,
        action: "kms:Decrypt",
        resource: KEY,
        context: &ctx,
    };
    let ig = Inputs {
        identity_policies: &mixed_ids,
        resource_policy: Some(&story),
        resource_account: ACCT,
        kind: ResourceKind::KmsKey,
    };
    assert!(evaluate(&rg, &ig).is_allowed());
    g.bench_function("identity_20_mixed_services_plus_story_a", |b| {
        b.iter(|| evaluate(black_box(&rg), black_box(&ig)))
    });
    g.finish();

    let mut g = c.benchmark_group("slow_path");
    let i = key_inputs(&big);
    g.bench_function("explain_20_statements", |b| {
        b.iter(|| explain(black_box(&r), black_box(&i)))
    });
    g.bench_function("parse_20_statements", |b| {
        b.iter(|| Policy::parse_key_policy(black_box(&big_src)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
