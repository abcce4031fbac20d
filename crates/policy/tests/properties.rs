//! Property tests: invariants of parsing, matching and evaluation that must hold for any input.

use proptest::prelude::*;
use sluice_policy::*;

/// Reference glob: `*` any run, `?` one character; everything else literal.
fn reference_glob(p: &[char], s: &[char]) -> bool {
    // Dynamic programming over (pattern index, string index).
    let mut dp = vec![vec![false; s.len() + 1]; p.len() + 1];
    dp[p.len()][s.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=s.len()).rev() {
            dp[i][j] = match p[i] {
                '*' => dp[i + 1][j] || (j < s.len() && dp[i][j + 1]),
                '?' => j < s.len() && dp[i + 1][j + 1],
                c => j < s.len() && s[j] == c && dp[i + 1][j + 1],
            };
        }
    }
    dp[0][0]
}

fn string_like_allows(pattern: &str, value: &str) -> bool {
    let doc = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringLike": {"app:k": pattern}}}]});
    let p = Policy::parse_identity_policy(&doc.to_string()).unwrap();
    let ctx = Context::new().with("app:k", value);
    let req = Request {
        principal: PrincipalInfo::user(
            "111122223333",
            "arn:aws:iam::111122223333:user/u",
            "AIDAU",
            "u",
        ),
        action: "s3:GetObject",
        resource: "*",
        context: &ctx,
    };
    let inputs = Inputs {
        identity_policies: &[&p],
        resource_policy: None,
        resource_account: "111122223333",
        kind: ResourceKind::Generic,
    };
    evaluate(&req, &inputs).is_allowed()
}

fn principal(kind: u8) -> PrincipalInfo<'static> {
    match kind % 5 {
        0 => PrincipalInfo::root("111122223333", "arn:aws:iam::111122223333:root"),
        1 => PrincipalInfo::user(
            "111122223333",
            "arn:aws:iam::111122223333:user/alice",
            "AIDAALICE",
            "alice",
        ),
        2 => PrincipalInfo::role_session(
            "111122223333",
            "arn:aws:sts::111122223333:assumed-role/app/s1",
            "arn:aws:iam::111122223333:role/app",
            "AROAAPP:s1",
        ),
        3 => PrincipalInfo::user(
            "444455556666",
            "arn:aws:iam::444455556666:user/bob",
            "AIDABOB",
            "bob",
        ),
        _ => PrincipalInfo::service("111122223333", "events.amazonaws.com"),
    }
}

const KEY_POLICIES: &[&str] = &[
    r#"{"Version":"2012-10-17","Statement":[
      {"Sid":"foreventbridge","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*",
       "Condition":{"StringLike":{"kms:ViaService":"secretsmanager.*.amazonaws.com","kms:EncryptionContext:SecretARN":"arn:aws:secretsmanager:*:*:secret:events!connection/*"}}},
      {"Sid":"Admin","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#,
    r#"{"Version":"2012-10-17","Statement":[
      {"Effect":"Allow","Principal":{"AWS":["444455556666","arn:aws:iam::111122223333:role/app"]},"Action":["kms:Decrypt","kms:GenerateDataKey*"],"Resource":"*"},
      {"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"Null":{"kms:ViaService":"true"},"StringNotEquals":{"aws:PrincipalAccount":"444455556666"}}},
      {"Effect":"Allow","Principal":{"Service":"events.amazonaws.com"},"Action":"kms:GenerateDataKey","Resource":"*"}]}"#,
    r#"{"Version":"2012-10-17","Statement":[
      {"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"},"ForAllValues:StringEquals":{"kms:EncryptionContextKeys":["SecretARN","SecretVersionId"]}}},
      {"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:ScheduleKeyDeletion","Resource":"*"}]}"#,
];

const IDENTITY_POLICIES: &[&str] = &[
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["kms:Decrypt"],"Resource":"arn:aws:kms:*:111122223333:key/*"},
      {"Effect":"Deny","Action":"kms:*","Resource":"*","Condition":{"BoolIfExists":{"aws:SecureTransport":"false"}}}]}"#,
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotAction":"kms:Schedule*","Resource":"*","Condition":{"StringLike":{"kms:ViaService":"*.amazonaws.com"}}}]}"#,
];

const ACTIONS: &[&str] = &[
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:ScheduleKeyDeletion",
    "kms:DescribeKey",
    "KMS:decrypt",
];

fn context(bits: u8) -> Context {
    let mut c = Context::new();
    if bits & 1 != 0 {
        c.set("kms:ViaService", "secretsmanager.us-east-1.amazonaws.com");
    }
    if bits & 2 != 0 {
        c.set_encryption_context([
            (
                "SecretARN",
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:events!connection/c/u-abc",
            ),
            ("SecretVersionId", "v1"),
        ]);
    }
    if bits & 4 != 0 {
        c.set(
            "aws:SecureTransport",
            if bits & 8 != 0 { "true" } else { "false" },
        );
    }
    if bits & 16 != 0 {
        c.set_multi("kms:EncryptionContextKeys", ["SecretARN", "Other"]);
    }
    c
}

fn case_shuffle(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// StringLike agrees with a reference glob implementation.
    #[test]
    fn string_like_matches_reference(p in "[ab*?é]{0,7}", s in "[abé]{0,8}") {
        let pc: Vec<char> = p.chars().collect();
        let sc: Vec<char> = s.chars().collect();
        prop_assert_eq!(string_like_allows(&p, &s), reference_glob(&pc, &sc), "pattern {:?} value {:?}", p, s);
    }

    /// `explain` reports exactly the outcome of `evaluate`, for any combination of inputs.
    #[test]
    fn explain_agrees_with_evaluate(kp in 0..KEY_POLICIES.len() + 1, ip in proptest::collection::vec(0..IDENTITY_POLICIES.len(), 0..3),
                                    who in 0u8..5, action in 0..ACTIONS.len(), bits in 0u8..32, kms in any::<bool>()) {
        let key = KEY_POLICIES.get(kp).map(|s| Policy::parse_key_policy(s).unwrap());
        let ids: Vec<Policy> = ip.iter().map(|i| Policy::parse_identity_policy(IDENTITY_POLICIES[*i]).unwrap()).collect();
        let id_refs: Vec<&Policy> = ids.iter().collect();
        let ctx = context(bits);
        let req = Request { principal: principal(who), action: ACTIONS[action], resource: "arn:aws:kms:us-east-1:111122223333:key/k", context: &ctx };
        let inputs = Inputs { identity_policies: &id_refs, resource_policy: key.as_ref(), resource_account: "111122223333",
                              kind: if kms { ResourceKind::KmsKey } else { ResourceKind::Generic } };
        let out = evaluate(&req, &inputs);
        let ex = explain(&req, &inputs);
        prop_assert_eq!(ex.outcome, out);
        // The denial message is present exactly when denied, and names the action.
        prop_assert_eq!(ex.denial_message.is_some(), !out.is_allowed());
        if let Some(m) = &ex.denial_message {
            prop_assert!(m.contains(ACTIONS[action]));
        }
        // The structured form serializes.
        prop_assert!(serde_json::to_string(&ex).is_ok());
        // A decided-by reference always points at an applicable statement of the right effect.
        if let Some(r) = out.decided_by {
            let trace = ex.policies.iter().find(|p| p.slot == r.policy).unwrap();
            let st = &trace.statements[r.statement];
            prop_assert!(st.applies);
            let want = if out.decision == Decision::ExplicitDeny { Effect::Deny } else { Effect::Allow };
            prop_assert_eq!(st.effect, want);
        }
    }

    /// Adding a `Deny * on *` identity policy always yields an explicit deny; adding an
    /// `Allow * on *` identity policy never turns an allow into a deny.
    #[test]
    fn deny_wins_and_allow_is_monotonic(kp in 0..KEY_POLICIES.len(), ip in proptest::collection::vec(0..IDENTITY_POLICIES.len(), 0..3),
                                        who in 0u8..4, action in 0..ACTIONS.len(), bits in 0u8..32) {
        let key = Policy::parse_key_policy(KEY_POLICIES[kp]).unwrap();
        let mut ids: Vec<Policy> = ip.iter().map(|i| Policy::parse_identity_policy(IDENTITY_POLICIES[*i]).unwrap()).collect();
        let ctx = context(bits);
        let req = Request { principal: principal(who), action: ACTIONS[action], resource: "arn:aws:kms:us-east-1:111122223333:key/k", context: &ctx };
        let run = |ids: &[Policy]| {
            let refs: Vec<&Policy> = ids.iter().collect();
            evaluate(&req, &Inputs { identity_policies: &refs, resource_policy: Some(&key), resource_account: "111122223333", kind: ResourceKind::KmsKey })
        };
        let before = run(&ids);
        ids.push(Policy::parse_identity_policy(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#).unwrap());
        let with_allow = run(&ids);
        if before.is_allowed() {
            prop_assert!(with_allow.is_allowed());
        }
        if before.decision == Decision::ExplicitDeny {
            prop_assert_eq!(with_allow.decision, Decision::ExplicitDeny);
        }
        ids.push(Policy::parse_identity_policy(r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}"#).unwrap());
        prop_assert_eq!(run(&ids).decision, Decision::ExplicitDeny);
    }

    /// Condition key names are case-insensitive, on either side.
    #[test]
    fn condition_key_case_does_not_matter(mask in any::<u64>(), mask2 in any::<u64>(), via in any::<bool>()) {
        let key = case_shuffle("kms:EncryptionContext:SecretARN", mask);
        let doc = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "111122223333"},
            "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringLike": {key: "arn:aws:secretsmanager:*:*:secret:events!connection/*"}}}]});
        let p = Policy::parse_key_policy(&doc.to_string()).unwrap();
        let mut ctx = Context::new();
        if via {
            ctx.set(&case_shuffle("kms:encryptioncontext:secretarn", mask2), "arn:aws:secretsmanager:us-east-1:111122223333:secret:events!connection/c/u-abc");
        }
        let req = Request { principal: principal(0), action: "kms:Decrypt", resource: "*", context: &ctx };
        let out = evaluate(&req, &Inputs { identity_policies: &[], resource_policy: Some(&p), resource_account: "111122223333", kind: ResourceKind::KmsKey });
        prop_assert_eq!(out.is_allowed(), via);
    }

    /// ForAllValues / ForAnyValue agree with set semantics on any request set.
    #[test]
    fn set_operators_follow_set_semantics(policy_set in proptest::collection::btree_set("[abc]", 1..3),
                                          request in proptest::option::of(proptest::collection::vec("[abcd]", 0..4))) {
        let vals: Vec<&String> = policy_set.iter().collect();
        for (prefix, negated) in [("ForAllValues:", false), ("ForAnyValue:", false), ("ForAllValues:", true), ("ForAnyValue:", true)] {
            let op = format!("{prefix}{}", if negated { "StringNotEquals" } else { "StringEquals" });
            let doc = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                "Condition": {op.clone(): {"aws:TagKeys": vals}}}]});
            let p = Policy::parse_identity_policy(&doc.to_string()).unwrap();
            let mut ctx = Context::new();
            if let Some(r) = &request {
                ctx.set_multi("aws:TagKeys", r.iter().cloned());
            }
            let req = Request { principal: principal(1), action: "s3:GetObject", resource: "*", context: &ctx };
            let got = evaluate(&req, &Inputs { identity_policies: &[&p], resource_policy: None, resource_account: "111122223333", kind: ResourceKind::Generic }).is_allowed();
            let r: Vec<String> = request.clone().unwrap_or_default();
            let inside = |v: &String| policy_set.contains(v) != negated;
            let want = if prefix == "ForAllValues:" { r.iter().all(inside) } else { r.iter().any(inside) };
            prop_assert_eq!(got, want, "{} {:?} vs {:?}", op, policy_set, request);
        }
    }

    /// Evaluation never panics on arbitrary request strings (actions, resources, context values
    /// with multi-byte characters), whatever the operator.
    #[test]
    fn evaluate_never_panics(action in "\\PC{0,20}", resource in "(arn:[a-z:*?é/-]{0,30})|\\PC{0,20}",
                             value in "\\PC{0,30}", many in proptest::collection::vec("\\PC{0,8}", 0..3)) {
        const DOC: &str = r#"{"Version":"2012-10-17","Statement":[
          {"Effect":"Allow","Action":["s3:G?t*","s3:é*"],"Resource":["arn:aws:s3:::b/${aws:username}/*","arn:*:s?:*:*:*"],
           "Condition":{"StringLike":{"app:v":"*é?*"},"ArnLike":{"app:v":"arn:aws:*:*:${app:v}:*"},"StringEqualsIgnoreCase":{"app:v":"ÉA"}}},
          {"Effect":"Deny","NotAction":"kms:*","NotResource":"arn:aws:kms:*:*:key/*",
           "Condition":{"IpAddress":{"app:v":"10.0.0.0/8"},"DateLessThan":{"app:v":"2030-01-01"},"NumericGreaterThan":{"app:v":"1.5"},
                        "BinaryEquals":{"app:v":"AAEC"},"ForAllValues:StringLike":{"app:m":["a*","?"]},"ForAnyValue:StringNotLike":{"app:m":"*"}}}]}"#;
        let p = Policy::parse_identity_policy(DOC).unwrap();
        let ctx = Context::new().with("app:v", value.clone()).with_multi("app:m", many.clone());
        let req = Request { principal: principal(1), action: &action, resource: &resource, context: &ctx };
        let inputs = Inputs { identity_policies: &[&p], resource_policy: None, resource_account: "111122223333", kind: ResourceKind::Generic };
        let out = evaluate(&req, &inputs);
        prop_assert_eq!(explain(&req, &inputs).outcome, out);
    }

    /// The parser never panics, whatever it is given.
    #[test]
    fn parse_never_panics(s in "\\PC{0,200}") {
        let _ = Policy::parse(&s);
        let _ = Policy::parse_key_policy(&s);
    }

    /// Nor on documents that are structurally close to valid ones.
    #[test]
    fn parse_never_panics_on_mutated_documents(cut in 0usize..600, insert in "[\\[\\]{}\",:*?$a-z0-9 ]{0,6}") {
        let base = KEY_POLICIES[0];
        let mut cut = cut.min(base.len());
        while !base.is_char_boundary(cut) {
            cut -= 1;
        }
        let doc = format!("{}{}{}", &base[..cut], insert, &base[cut..]);
        if let Err(e) = Policy::parse_key_policy(&doc) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn key_policy_size_limit() {
    let big = format!(
        r#"{{"Version":"2012-10-17","Id":"{}","Statement":[{{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}]}}"#,
        "x".repeat(KEY_POLICY_MAX_BYTES)
    );
    let e = Policy::parse_key_policy(&big).unwrap_err();
    assert!(e.to_string().contains("the limit is 32768"), "{e}");
    assert!(Policy::parse_resource_policy(&big).is_ok());
}

#[test]
fn source_and_metadata_are_kept() {
    let src = KEY_POLICIES[0];
    let p = Policy::parse_key_policy(src).unwrap();
    assert_eq!(p.source(), src);
    assert_eq!(p.statement_count(), 2);
    assert_eq!(p.sid(0), Some("foreventbridge"));
    assert_eq!(p.version(), Some("2012-10-17"));
    assert_eq!(p.kind(), PolicyKind::KeyPolicy);
}

#[test]
fn error_fields_are_structured() {
    let e = Policy::parse_key_policy(
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"ok","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"},
        {"Sid":"bad","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Condition":{"ForAllValues:StringEquals":{"aws:RequestTag/a":"b"}}}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.statement, Some(1));
    assert_eq!(e.sid.as_deref(), Some("bad"));
    assert_eq!(
        e.member.as_deref(),
        Some("Condition.ForAllValues:StringEquals.aws:RequestTag/a")
    );
    assert!(e.message.starts_with("OverlyPermissiveCondition"));
}

#[test]
fn compiled_policies_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Policy>();
    assert_send_sync::<Context>();
    assert_send_sync::<Explanation>();
    assert_send_sync::<PolicyError>();
}

#[test]
fn statement_level_id_is_rejected() {
    let e = Policy::parse(r#"{"Version":"2012-10-17","Statement":[{"Id":"x","Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#)
        .unwrap_err();
    assert_eq!(e.statement, Some(0));
    assert!(e.message.contains("unknown member \"Id\""), "{e}");
}
