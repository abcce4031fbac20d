//! Runs the JSON corpus in `tests/corpus/*.json`.
//!
//! File format (every member optional unless noted):
//! ```text
//! { "description": "...",
//!   "policies": { "<name>": <policy document or string> },
//!   "defaults": { <any case member> },
//!   "cases": [ {
//!       "name": "..." (required),
//!       "policy": <identity policy document>            (shorthand for one identity policy)
//!       "condition": <Condition block>                  (shorthand: Allow * on * with it)
//!       "identity": ["<policy name>", ...],
//!       "resource_policy": "<policy name>",
//!       "resource_policy_as": "any" | "resource" | "key"  (default: key for KmsKey, else resource)
//!       "kind": "Generic" | "KmsKey",
//!       "resource_account": "111122223333",
//!       "principal": "root:ACCT" | "user:ACCT:name" | "role:ACCT:role/session" | "service:ACCT:name",
//!       "action": "kms:Decrypt", "resource": "arn:...",
//!       "context": { "key": "value" | ["v1", "v2"] },
//!       "expect": "Allow" | "ExplicitDeny" | "ImplicitDeny"  (required),
//!       "reason": "NoIdentityPolicyAllows" | ...,
//!       "decided_by": "resource:0" | "identity0:1",
//!       "message": "exact AccessDenied text" } ],
//!   "invalid": [ { "name": "...", "as": "any" | "identity" | "resource" | "key",
//!                  "policy": <document or raw string>, "error": ["substring", ...] } ] }
//! ```
//! Policies named in `policies` are parsed as key policies when the case kind is KmsKey, as
//! resource policies otherwise when used as `resource_policy`, and as identity policies when
//! listed in `identity`.

use serde_json::{Map, Value};
use sluice_policy::*;
use std::collections::BTreeMap;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

struct Who {
    arn: String,
    role_arn: Option<String>,
    account: String,
    user_id: String,
    username: Option<String>,
    root: bool,
    service: bool,
}

fn who(spec: &str) -> Who {
    let parts: Vec<&str> = spec.splitn(3, ':').collect();
    match parts.as_slice() {
        ["root", acct] => Who {
            arn: format!("arn:aws:iam::{acct}:root"),
            role_arn: None,
            account: acct.to_string(),
            user_id: acct.to_string(),
            username: None,
            root: true,
            service: false,
        },
        ["user", acct, name] => Who {
            arn: format!("arn:aws:iam::{acct}:user/{name}"),
            role_arn: None,
            account: acct.to_string(),
            user_id: format!("AIDA{}", name.to_ascii_uppercase()),
            username: Some(name.to_string()),
            root: false,
            service: false,
        },
        ["role", acct, rs] => {
            let (role, session) = rs.split_once('/').expect("role:ACCT:role/session");
            Who {
                arn: format!("arn:aws:sts::{acct}:assumed-role/{role}/{session}"),
                role_arn: Some(format!("arn:aws:iam::{acct}:role/{role}")),
                account: acct.to_string(),
                user_id: format!("AROA{}:{session}", role.to_ascii_uppercase()),
                username: None,
                root: false,
                service: false,
            }
        }
        ["service", acct, name] => Who {
            arn: name.to_string(),
            role_arn: None,
            account: acct.to_string(),
            user_id: name.to_string(),
            username: None,
            root: false,
            service: true,
        },
        _ => panic!("bad principal spec {spec:?}"),
    }
}

fn parse_kind(kind: &str, doc: &str) -> Result<Policy, PolicyError> {
    match kind {
        "any" => Policy::parse(doc),
        "identity" => Policy::parse_identity_policy(doc),
        "resource" => Policy::parse_resource_policy(doc),
        "key" => Policy::parse_key_policy(doc),
        other => panic!("unknown parse kind {other:?}"),
    }
}

fn run_file(path: &std::path::Path) -> (usize, Vec<String>) {
    let raw = std::fs::read_to_string(path).unwrap();
    let file: Value =
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fname = path.file_name().unwrap().to_string_lossy().to_string();
    let named: BTreeMap<String, String> = file
        .get("policies")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    let defaults = file
        .get("defaults")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut failures = Vec::new();
    let mut count = 0;
    for case in file
        .get("cases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        count += 1;
        let mut c: Map<String, Value> = defaults.clone();
        for (k, v) in case.as_object().unwrap() {
            c.insert(k.clone(), v.clone());
        }
        let name = format!("{fname}: {}", c["name"].as_str().unwrap());
        let get = |k: &str| c.get(k).and_then(Value::as_str);
        let kind = match get("kind").unwrap_or("Generic") {
            "Generic" => ResourceKind::Generic,
            "KmsKey" => ResourceKind::KmsKey,
            other => panic!("{name}: kind {other:?}"),
        };
        let mut identity: Vec<Policy> = Vec::new();
        if let Some(cond) = c.get("condition") {
            let doc = serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": cond}]});
            identity.push(
                Policy::parse_identity_policy(&doc.to_string())
                    .unwrap_or_else(|e| panic!("{name}: condition: {e}")),
            );
        }
        if let Some(p) = c.get("policy") {
            identity.push(
                Policy::parse_identity_policy(&text(p))
                    .unwrap_or_else(|e| panic!("{name}: policy: {e}")),
            );
        }
        for n in c
            .get("identity")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let n = n.as_str().unwrap();
            let doc = named
                .get(n)
                .unwrap_or_else(|| panic!("{name}: no policy {n:?}"));
            identity.push(
                Policy::parse_identity_policy(doc).unwrap_or_else(|e| panic!("{name}: {n}: {e}")),
            );
        }
        let resource = get("resource_policy").map(|n| {
            let doc = named
                .get(n)
                .unwrap_or_else(|| panic!("{name}: no policy {n:?}"));
            let r = match get("resource_policy_as") {
                Some(k) => parse_kind(k, doc),
                None if kind == ResourceKind::KmsKey => Policy::parse_key_policy(doc),
                None => Policy::parse_resource_policy(doc),
            };
            r.unwrap_or_else(|e| panic!("{name}: {n}: {e}"))
        });
        let w = who(get("principal").unwrap_or("user:111122223333:alice"));
        let principal = PrincipalInfo {
            arn: &w.arn,
            role_arn: w.role_arn.as_deref(),
            account: &w.account,
            user_id: &w.user_id,
            username: w.username.as_deref(),
            is_root: w.root,
            is_service: w.service,
        };
        let mut ctx = Context::new();
        for (k, v) in c
            .get("context")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            match v {
                Value::Array(a) => {
                    ctx.set_multi(k, a.iter().map(text));
                }
                other => {
                    ctx.set(k, text(other));
                }
            }
        }
        let action = get("action").unwrap_or("kms:Decrypt").to_string();
        let res = get("resource").unwrap_or("*").to_string();
        let req = Request {
            principal,
            action: &action,
            resource: &res,
            context: &ctx,
        };
        let ids: Vec<&Policy> = identity.iter().collect();
        let inputs = Inputs {
            identity_policies: &ids,
            resource_policy: resource.as_ref(),
            resource_account: get("resource_account").unwrap_or("111122223333"),
            kind,
        };
        let out = evaluate(&req, &inputs);
        let ex = explain(&req, &inputs);
        if ex.outcome != out {
            failures.push(format!(
                "{name}: explain {:?} != evaluate {:?}",
                ex.outcome, out
            ));
        }
        let expect = get("expect").unwrap_or_else(|| panic!("{name}: no expect"));
        let got = format!("{:?}", out.decision);
        if got != expect {
            failures.push(format!("{name}: expected {expect}, got {got}\n{ex}"));
            continue;
        }
        if let Some(r) = get("reason") {
            let g = out.reason.map(|r| format!("{r:?}")).unwrap_or_default();
            if g != r {
                failures.push(format!("{name}: expected reason {r}, got {g:?}\n{ex}"));
            }
        }
        if let Some(d) = get("decided_by") {
            let g = match out.decided_by {
                Some(StatementRef {
                    policy: PolicySlot::Resource,
                    statement,
                }) => format!("resource:{statement}"),
                Some(StatementRef {
                    policy: PolicySlot::Identity(i),
                    statement,
                }) => format!("identity{i}:{statement}"),
                None => "none".into(),
            };
            if g != d {
                failures.push(format!("{name}: expected decided_by {d}, got {g}\n{ex}"));
            }
        }
        if let Some(m) = get("message") {
            let g = out.denial_message(&req).unwrap_or_default();
            if g != m {
                failures.push(format!("{name}: expected message\n  {m}\ngot\n  {g}"));
            }
        }
        if let Some(parts) = c.get("explain_contains").and_then(Value::as_array) {
            let shown = ex.to_string();
            for p in parts {
                let p = p.as_str().unwrap();
                if !shown.contains(p) {
                    failures.push(format!("{name}: explanation lacks {p:?}:\n{shown}"));
                }
            }
        }
    }
    for case in file
        .get("invalid")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        count += 1;
        let name = format!("{fname}: {}", case["name"].as_str().unwrap());
        let doc = text(&case["policy"]);
        let as_ = case.get("as").and_then(Value::as_str).unwrap_or("any");
        match parse_kind(as_, &doc) {
            Ok(_) => failures.push(format!("{name}: expected a parse error, parsed fine")),
            Err(e) => {
                let shown = e.to_string();
                for want in case
                    .get("error")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let want = want.as_str().unwrap();
                    if !shown.contains(want) {
                        failures.push(format!("{name}: error {shown:?} lacks {want:?}"));
                    }
                }
            }
        }
    }
    for case in file
        .get("valid")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        count += 1;
        let name = format!("{fname}: {}", case["name"].as_str().unwrap());
        let doc = text(&case["policy"]);
        let as_ = case.get("as").and_then(Value::as_str).unwrap_or("any");
        if let Err(e) = parse_kind(as_, &doc) {
            failures.push(format!("{name}: expected to parse, got {e}"));
        }
    }
    (count, failures)
}

#[test]
fn corpus() {
    let dir = manifest_dir().join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {}", dir.display());
    let mut total = 0;
    let mut failures = Vec::new();
    for f in &files {
        let (n, fails) = run_file(f);
        assert!(n > 0, "{} has no cases", f.display());
        total += n;
        failures.extend(fails);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} corpus cases failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!("{total} corpus cases passed in {} files", files.len());
}

/// The package directory at run time (`cargo test` sets it). The compile-time value can name
/// another checkout when a shared target directory is reused across clones.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
