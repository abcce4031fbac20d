//! IAM and STS through the crate's Rust API over a real SQLite store, with a manual clock:
//! session expiry, credential lookups, the in-memory index after a reload, the service
//! assume-role path, and secrets never stored in the clear.

use std::sync::Arc;

use sluice_audit::AuditLog;
use sluice_core::{
    CallContext, Clock, CredentialLookupError, CredentialSource, ManualClock, Principal,
    PrincipalKind, QueryService,
};
use sluice_crypto::RootKey;
use sluice_iam::{Iam, IamConfig, IamService, StsService};
use sluice_kms::IdentityPolicies;
use sluice_store::sqlite::{SqliteOptions, SqliteStore};
use sluice_store::{KeyRange, Store};

const ACCOUNT: &str = "111122223333";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    root: Arc<RootKey>,
    clock: ManualClock,
    iam: Arc<Iam>,
}

async fn open(store: Arc<dyn Store>, root: Arc<RootKey>, clock: &ManualClock) -> Arc<Iam> {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let audit = AuditLog::new(store.clone(), clock.clone(), ACCOUNT);
    Arc::new(
        Iam::open(
            store,
            root,
            clock,
            audit,
            IamConfig {
                account: ACCOUNT.into(),
                region: "us-east-1".into(),
            },
        )
        .await
        .unwrap(),
    )
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("db"), SqliteOptions::default()).unwrap());
    let root = Arc::new(RootKey::from_bytes(&[7u8; 32]));
    let clock = ManualClock::new(time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
    let iam = open(store.clone(), root.clone(), &clock).await;
    Fixture {
        _dir: dir,
        store,
        root,
        clock,
        iam,
    }
}

fn root_ctx() -> CallContext {
    CallContext::direct(Principal::root(ACCOUNT, None), "us-east-1", "req-1")
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The text of the first `<tag>` in `xml`.
fn leaf(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find(&format!("</{tag}>")).unwrap() + start;
    xml[start..end].to_string()
}

async fn iam_call(iam: &Arc<Iam>, ctx: &CallContext, pairs: &[(&str, &str)]) -> (u16, String) {
    let r = IamService(iam.clone())
        .handle_query(ctx, params(pairs))
        .await;
    (r.status, r.body)
}

async fn sts_call(iam: &Arc<Iam>, ctx: &CallContext, pairs: &[(&str, &str)]) -> (u16, String) {
    let r = StsService(iam.clone())
        .handle_query(ctx, params(pairs))
        .await;
    (r.status, r.body)
}

const TRUST_ROOT: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"sts:AssumeRole"}]}"#;

#[tokio::test]
async fn session_credentials_expire_with_the_clock() {
    let f = fixture().await;
    let ctx = root_ctx();
    let (st, _) = iam_call(
        &f.iam,
        &ctx,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "worker"),
            ("AssumeRolePolicyDocument", TRUST_ROOT),
        ],
    )
    .await;
    assert_eq!(st, 200);
    let (st, body) = sts_call(
        &f.iam,
        &ctx,
        &[
            ("Action", "AssumeRole"),
            ("RoleArn", "arn:aws:iam::111122223333:role/worker"),
            ("RoleSessionName", "job-1"),
            ("DurationSeconds", "900"),
        ],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let akid = leaf(&body, "AccessKeyId");
    let secret = leaf(&body, "SecretAccessKey");
    let token = leaf(&body, "SessionToken");
    assert_eq!(leaf(&body, "Expiration"), "2027-01-15T08:15:00Z");
    let now = f.clock.now_millis();

    let (got, principal) = f.iam.lookup(&akid, Some(&token), now).unwrap();
    assert_eq!(*got, secret);
    assert_eq!(principal.kind, PrincipalKind::AssumedRole);
    assert_eq!(
        principal.arn,
        "arn:aws:sts::111122223333:assumed-role/worker/job-1"
    );
    assert_eq!(
        principal.role_arn.as_deref(),
        Some("arn:aws:iam::111122223333:role/worker")
    );
    assert!(principal.user_id.starts_with("AROA") && principal.user_id.ends_with(":job-1"));
    assert_eq!(
        f.iam.lookup(&akid, None, now).unwrap_err(),
        CredentialLookupError::InvalidToken
    );
    assert_eq!(
        f.iam.lookup(&akid, Some("other"), now).unwrap_err(),
        CredentialLookupError::InvalidToken
    );
    assert_eq!(
        f.iam
            .lookup("ASIAUNKNOWNUNKNOWN00", Some(&token), now)
            .unwrap_err(),
        CredentialLookupError::Unknown
    );

    // One millisecond before expiry it still works; at expiry it does not.
    f.clock.advance_millis(900_000 - 1);
    assert!(
        f.iam
            .lookup(&akid, Some(&token), f.clock.now_millis())
            .is_ok()
    );
    f.clock.advance_millis(1);
    assert_eq!(
        f.iam
            .lookup(&akid, Some(&token), f.clock.now_millis())
            .unwrap_err(),
        CredentialLookupError::Expired
    );

    // Stored sealed: neither the secret nor the token appears in the store.
    for ns in ["iam.sessions", "audit"] {
        for (_, v) in f
            .store
            .scan(ns, KeyRange::all(), 10_000, false)
            .await
            .unwrap()
        {
            let text = String::from_utf8_lossy(&v.value);
            assert!(!text.contains(&secret), "secret in {ns}");
            assert!(!text.contains(&token), "token in {ns}");
        }
    }
}

#[tokio::test]
async fn identity_policies_and_keys_survive_a_reload() {
    let f = fixture().await;
    let ctx = root_ctx();
    for p in [
        vec![("Action", "CreateUser"), ("UserName", "Ann")],
        vec![
            ("Action", "PutUserPolicy"),
            ("UserName", "ann"),
            ("PolicyName", "inline"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}"#,
            ),
        ],
        vec![
            ("Action", "CreatePolicy"),
            ("PolicyName", "managed"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}"#,
            ),
        ],
        vec![
            ("Action", "AttachUserPolicy"),
            ("UserName", "Ann"),
            ("PolicyArn", "arn:aws:iam::111122223333:policy/managed"),
        ],
    ] {
        let (st, body) = iam_call(&f.iam, &ctx, &p).await;
        assert_eq!(st, 200, "{body}");
    }
    let (st, body) = iam_call(
        &f.iam,
        &ctx,
        &[("Action", "CreateAccessKey"), ("UserName", "Ann")],
    )
    .await;
    assert_eq!(st, 200);
    let akid = leaf(&body, "AccessKeyId");
    let secret = leaf(&body, "SecretAccessKey");

    let check = |iam: &Arc<Iam>| {
        let (got, principal) = iam.lookup(&akid, None, 0).unwrap();
        assert_eq!(*got, secret);
        assert_eq!(principal.kind, PrincipalKind::IamUser);
        assert_eq!(principal.arn, "arn:aws:iam::111122223333:user/Ann");
        assert_eq!(
            iam.lookup(&akid, Some("token"), 0).unwrap_err(),
            CredentialLookupError::InvalidToken
        );
        assert_eq!(iam.policies_for(&principal).len(), 2);
        // A different user with the same ARN but another id gets nothing.
        let mut other = principal.clone();
        other.user_id = "AIDAOTHEROTHEROTHER00".into();
        assert!(iam.policies_for(&other).is_empty());
        assert!(iam.policies_for(&Principal::root(ACCOUNT, None)).is_empty());
    };
    check(&f.iam);
    let reloaded = open(f.store.clone(), f.root.clone(), &f.clock).await;
    check(&reloaded);

    // The secret is sealed at rest.
    for (_, v) in f
        .store
        .scan("iam.access_keys", KeyRange::all(), 100, false)
        .await
        .unwrap()
    {
        assert!(!String::from_utf8_lossy(&v.value).contains(&secret));
    }
    // A different root key cannot open it: the key is skipped, not served.
    let other_root = Arc::new(RootKey::from_bytes(&[8u8; 32]));
    let wrong = open(f.store.clone(), other_root, &f.clock).await;
    assert_eq!(
        wrong.lookup(&akid, None, 0).unwrap_err(),
        CredentialLookupError::Unknown
    );
}

#[tokio::test]
async fn services_assume_roles_through_the_trust_policy() {
    let f = fixture().await;
    let ctx = root_ctx();
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"firehose.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let (st, _) = iam_call(
        &f.iam,
        &ctx,
        &[
            ("Action", "CreateRole"),
            ("RoleName", "delivery"),
            ("AssumeRolePolicyDocument", trust),
        ],
    )
    .await;
    assert_eq!(st, 200);
    iam_call(
        &f.iam,
        &ctx,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "delivery"),
            ("PolicyName", "p"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:GenerateDataKey","Resource":"*"}]}"#,
            ),
        ],
    )
    .await;
    let arn = "arn:aws:iam::111122223333:role/delivery";
    let p = f
        .iam
        .assume_role_for_service("firehose.amazonaws.com", arn, "stream-1")
        .await
        .unwrap();
    assert_eq!(p.kind, PrincipalKind::AssumedRole);
    assert_eq!(
        p.arn,
        "arn:aws:sts::111122223333:assumed-role/delivery/stream-1"
    );
    assert_eq!(p.role_arn.as_deref(), Some(arn));
    assert!(p.access_key_id.is_none());
    assert_eq!(f.iam.policies_for(&p).len(), 1);
    let mut forged = p.clone();
    forged.user_id = "AROAOTHEROTHEROTHER00:stream-1".into();
    assert!(f.iam.policies_for(&forged).is_empty());

    let e = f
        .iam
        .assume_role_for_service("events.amazonaws.com", arn, "x")
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");
    assert_eq!(e.status, 403);
    let e = f
        .iam
        .assume_role_for_service(
            "firehose.amazonaws.com",
            "arn:aws:iam::111122223333:role/none",
            "x",
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");

    // The root cannot assume a role that trusts only the service.
    let (st, body) = sts_call(
        &f.iam,
        &ctx,
        &[
            ("Action", "AssumeRole"),
            ("RoleArn", arn),
            ("RoleSessionName", "root-session"),
        ],
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(leaf(&body, "Code"), "AccessDenied");

    // Every call is audited under the right event source.
    let records = f
        .store
        .scan("audit", KeyRange::all(), 100, false)
        .await
        .unwrap();
    let sources: Vec<String> = records
        .iter()
        .map(|(_, v)| {
            let r: serde_json::Value = serde_json::from_slice(&v.value).unwrap();
            format!(
                "{}/{}",
                r["eventSource"].as_str().unwrap(),
                r["eventName"].as_str().unwrap()
            )
        })
        .collect();
    assert!(sources.contains(&"iam.amazonaws.com/CreateRole".to_string()));
    // A write's record (committed with the change) carries its response elements.
    let created: serde_json::Value = records
        .iter()
        .map(|(_, v)| serde_json::from_slice::<serde_json::Value>(&v.value).unwrap())
        .find(|r| r["eventName"] == "CreateRole")
        .unwrap();
    assert!(
        created["responseElements"]["role"]["roleId"]
            .as_str()
            .unwrap()
            .starts_with("AROA")
    );
    assert_eq!(created["resources"][0]["ARN"], arn);
    assert_eq!(
        sources
            .iter()
            .filter(|s| *s == "iam.amazonaws.com/CreateRole")
            .count(),
        1
    );
    assert!(sources.contains(&"sts.amazonaws.com/AssumeRole".to_string()));
    assert_eq!(
        sources
            .iter()
            .filter(|s| *s == "sts.amazonaws.com/AssumeRole")
            .count(),
        4
    );
}

#[tokio::test]
async fn protocol_errors_come_back_as_xml() {
    let f = fixture().await;
    let ctx = root_ctx();
    let (st, body) = iam_call(&f.iam, &ctx, &[("Action", "Nope")]).await;
    assert_eq!(st, 400);
    assert_eq!(leaf(&body, "Code"), "InvalidAction");
    let (st, body) = iam_call(&f.iam, &ctx, &[("Action", "GetRole"), ("RoleName", "a<b")]).await;
    assert_eq!(st, 400);
    assert_eq!(leaf(&body, "Code"), "ValidationError");
    assert!(body.contains("a&lt;b"), "{body}");
    // An operation in the model that sluice does not serve.
    let (st, body) = iam_call(
        &f.iam,
        &ctx,
        &[("Action", "CreateGroup"), ("GroupName", "g")],
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(leaf(&body, "Code"), "InvalidAction");
    let (st, body) = sts_call(&f.iam, &ctx, &[("Action", "GetCallerIdentity")]).await;
    assert_eq!(st, 200);
    assert!(body.starts_with(
        r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>"#
    ));
    assert_eq!(leaf(&body, "Arn"), "arn:aws:iam::111122223333:root");
    assert_eq!(leaf(&body, "RequestId"), "req-1");
}

#[tokio::test]
async fn open_blocking_loads_inside_a_current_thread_runtime() {
    let f = fixture().await;
    let (st, _) = iam_call(
        &f.iam,
        &root_ctx(),
        &[("Action", "CreateUser"), ("UserName", "zed")],
    )
    .await;
    assert_eq!(st, 200);
    let clock: Arc<dyn Clock> = Arc::new(f.clock.clone());
    let iam = Arc::new(
        Iam::open_blocking(
            f.store.clone(),
            f.root.clone(),
            clock.clone(),
            AuditLog::new(f.store.clone(), clock, ACCOUNT),
            IamConfig {
                account: ACCOUNT.into(),
                region: "us-east-1".into(),
            },
        )
        .unwrap(),
    );
    let (st, body) = iam_call(
        &iam,
        &root_ctx(),
        &[("Action", "GetUser"), ("UserName", "ZED")],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(leaf(&body, "Arn"), "arn:aws:iam::111122223333:user/zed");
}
