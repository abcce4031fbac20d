//! IAM and STS through the official AWS SDK for Rust against a running sluice server: users and
//! their keys, identity policies enforced on IAM and KMS, roles and AssumeRole (trust policies,
//! ExternalId, session credentials), managed policies, the simulator.

mod common;

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum, PolicyEvaluationDecisionType, Tag};
use aws_sdk_kms::primitives::Blob;
use common::*;

fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<none>").to_string()
}

fn message<E: ProvideErrorMetadata>(e: &E) -> String {
    e.message().unwrap_or("").to_string()
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

/// Creates a user with an inline policy and an access key; returns (akid, secret).
async fn user_with_policy(iam: &aws_sdk_iam::Client, name: &str, policy: &str) -> (String, String) {
    iam.create_user().user_name(name).send().await.unwrap();
    iam.put_user_policy()
        .user_name(name)
        .policy_name("narrow")
        .policy_document(policy)
        .send()
        .await
        .unwrap();
    let k = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .unwrap();
    let k = k.access_key().unwrap();
    assert_eq!(k.user_name(), name);
    assert!(k.access_key_id().starts_with("AKIA") && k.access_key_id().len() == 20);
    assert_eq!(k.secret_access_key().len(), 40);
    (
        k.access_key_id().to_string(),
        k.secret_access_key().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_a_narrow_policy_can_do_exactly_what_it_allows() {
    let s = TestServer::start().await;
    let iam = s.iam().await;
    let kms = s.kms().await;
    let k1 = kms.create_key().send().await.unwrap();
    let k1_arn = k1.key_metadata().unwrap().arn().unwrap().to_string();
    let k2 = kms.create_key().send().await.unwrap();
    let k2_id = k2.key_metadata().unwrap().key_id().to_string();

    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Effect":"Allow","Action":["iam:GetUser","iam:ListAccessKeys"],"Resource":"{}"}},
        {{"Effect":"Allow","Action":"iam:ListUsers","Resource":"*"}},
        {{"Effect":"Allow","Action":"kms:Encrypt","Resource":"{k1_arn}"}}]}}"#,
        user_arn("alice")
    );
    let (akid, secret) = user_with_policy(&iam, "alice", &policy).await;
    let cfg = s.sdk_config_as(&akid, &secret, None).await;
    let alice_iam = aws_sdk_iam::Client::new(&cfg);
    let alice_kms = aws_sdk_kms::Client::new(&cfg);
    let alice_sts = aws_sdk_sts::Client::new(&cfg);

    // Who am I.
    let me = alice_sts.get_caller_identity().send().await.unwrap();
    assert_eq!(me.arn(), Some(user_arn("alice").as_str()));
    assert_eq!(me.account(), Some(ACCOUNT));
    assert!(me.user_id().unwrap().starts_with("AIDA"));
    assert_eq!(me.user_id().unwrap().len(), 21);

    // Allowed.
    let u = alice_iam.get_user().send().await.unwrap();
    assert_eq!(u.user().unwrap().user_name(), "alice");
    assert_eq!(u.user().unwrap().arn(), user_arn("alice"));
    let listed = alice_iam.list_users().send().await.unwrap();
    assert_eq!(listed.users().len(), 1);
    let keys = alice_iam
        .list_access_keys()
        .user_name("alice")
        .send()
        .await
        .unwrap();
    assert_eq!(keys.access_key_metadata().len(), 1);
    assert_eq!(
        keys.access_key_metadata()[0].access_key_id(),
        Some(akid.as_str())
    );
    let enc = alice_kms
        .encrypt()
        .key_id(&k1_arn)
        .plaintext(Blob::new(b"hi".to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(enc.key_id(), Some(k1_arn.as_str()));

    // Denied: another IAM action, another key, another KMS action on the allowed key.
    let e = alice_iam
        .create_user()
        .user_name("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    assert_eq!(
        message(&e),
        format!(
            "User: {} is not authorized to perform: iam:CreateUser on resource: {} because no identity-based policy allows the iam:CreateUser action",
            user_arn("alice"),
            user_arn("x")
        )
    );
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 403);
    let e = alice_iam
        .put_user_policy()
        .user_name("alice")
        .policy_name("more")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = alice_kms
        .encrypt()
        .key_id(&k2_id)
        .plaintext(Blob::new(b"hi".to_vec()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    let e = alice_kms
        .describe_key()
        .key_id(&k1_arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDeniedException");
    assert!(message(&e).contains(&user_arn("alice")), "{}", message(&e));

    // A user with no policy at all can still ask who it is.
    iam.create_user().user_name("bob").send().await.unwrap();
    let bk = iam
        .create_access_key()
        .user_name("bob")
        .send()
        .await
        .unwrap();
    let bk = bk.access_key().unwrap();
    let bob_cfg = s
        .sdk_config_as(bk.access_key_id(), bk.secret_access_key(), None)
        .await;
    let bob = aws_sdk_sts::Client::new(&bob_cfg)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(bob.arn(), Some(user_arn("bob").as_str()));
    let e = aws_sdk_iam::Client::new(&bob_cfg)
        .list_users()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");

    // An inactive key is refused; reactivated, it works again.
    for (status, works) in [
        (aws_sdk_iam::types::StatusType::Inactive, false),
        (aws_sdk_iam::types::StatusType::Active, true),
    ] {
        iam.update_access_key()
            .user_name("bob")
            .access_key_id(bk.access_key_id())
            .status(status)
            .send()
            .await
            .unwrap();
        let r = aws_sdk_sts::Client::new(&bob_cfg)
            .get_caller_identity()
            .send()
            .await;
        assert_eq!(r.is_ok(), works);
        if let Err(e) = r {
            assert_eq!(code(&e), "InvalidClientTokenId");
        }
    }

    // A wrong secret, and a deleted key, are rejected by the signature layer.
    let bad = s.sdk_config_as(&akid, "x".repeat(40).as_str(), None).await;
    let e = aws_sdk_sts::Client::new(&bad)
        .get_caller_identity()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "SignatureDoesNotMatch");
    // DeleteUser refuses while keys and policies remain.
    let e = iam
        .delete_user()
        .user_name("alice")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DeleteConflict");
    iam.delete_access_key()
        .user_name("alice")
        .access_key_id(&akid)
        .send()
        .await
        .unwrap();
    let e = alice_sts.get_caller_identity().send().await.unwrap_err();
    assert_eq!(code(&e), "InvalidClientTokenId");
    iam.delete_user_policy()
        .user_name("alice")
        .policy_name("narrow")
        .send()
        .await
        .unwrap();
    iam.delete_user().user_name("alice").send().await.unwrap();
    let e = iam.get_user().user_name("alice").send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchEntity");
    assert_eq!(message(&e), "The user with name alice cannot be found.");
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 404);

    // Identity policies survive a restart (the index is reloaded from the store).
    let mut s = s;
    s.restart().await;
    let bob_cfg = s
        .sdk_config_as(bk.access_key_id(), bk.secret_access_key(), None)
        .await;
    let bob = aws_sdk_sts::Client::new(&bob_cfg)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(bob.arn(), Some(user_arn("bob").as_str()));
}

fn trust_with_external_id(principal: &str, ext: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{principal}"}},"Action":"sts:AssumeRole","Condition":{{"StringEquals":{{"sts:ExternalId":"{ext}"}}}}}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_enforces_the_trust_policy_and_its_credentials_work() {
    let s = TestServer::start().await;
    let iam = s.iam().await;
    let sts = s.sts().await;
    let root = format!("arn:aws:iam::{ACCOUNT}:root");
    let role = iam
        .create_role()
        .role_name("deployer")
        .assume_role_policy_document(trust_with_external_id(&root, "ext-123"))
        .description("deploys <things> & more")
        .send()
        .await
        .unwrap();
    let role = role.role().unwrap();
    let role_arn = role.arn().to_string();
    assert_eq!(role_arn, format!("arn:aws:iam::{ACCOUNT}:role/deployer"));
    assert!(role.role_id().starts_with("AROA") && role.role_id().len() == 21);
    assert_eq!(role.description(), Some("deploys <things> & more"));
    assert_eq!(
        decode(role.assume_role_policy_document().unwrap()),
        trust_with_external_id(&root, "ext-123")
    );
    iam.put_role_policy()
        .role_name("deployer")
        .policy_name("list")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["iam:ListRoles","iam:GetRole"],"Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();

    // ExternalId required: missing or wrong -> AccessDenied.
    for ext in [None, Some("wrong")] {
        let e = sts
            .assume_role()
            .role_arn(&role_arn)
            .role_session_name("s1")
            .set_external_id(ext.map(str::to_string))
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&e), "AccessDenied", "{ext:?}");
        assert!(message(&e).contains("sts:AssumeRole"), "{}", message(&e));
        assert_eq!(e.raw_response().unwrap().status().as_u16(), 403);
    }
    // A role that does not exist looks the same.
    let e = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/nope"))
        .role_session_name("s1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    // Longer than the role allows.
    let e = sts
        .assume_role()
        .role_arn(&role_arn)
        .role_session_name("s1")
        .external_id("ext-123")
        .duration_seconds(7200)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError");

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let out = sts
        .assume_role()
        .role_arn(&role_arn)
        .role_session_name("s1")
        .external_id("ext-123")
        .duration_seconds(900)
        .send()
        .await
        .unwrap();
    let creds = out.credentials().unwrap();
    assert!(creds.access_key_id().starts_with("ASIA") && creds.access_key_id().len() == 20);
    assert_eq!(creds.secret_access_key().len(), 40);
    let expires = creds.expiration().secs();
    assert!(
        (before + 900 - 5..=before + 900 + 60).contains(&expires),
        "expiration {expires} is not ~900 s after {before}"
    );
    let user = out.assumed_role_user().unwrap();
    let session_arn = format!("arn:aws:sts::{ACCOUNT}:assumed-role/deployer/s1");
    assert_eq!(user.arn(), session_arn);
    assert_eq!(user.assumed_role_id(), format!("{}:s1", role.role_id()));

    // The session's credentials work, with the role's policies.
    let cfg = s
        .sdk_config_as(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token()),
        )
        .await;
    let me = aws_sdk_sts::Client::new(&cfg)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(me.arn(), Some(session_arn.as_str()));
    assert_eq!(
        me.user_id(),
        Some(format!("{}:s1", role.role_id()).as_str())
    );
    let role_iam = aws_sdk_iam::Client::new(&cfg);
    let roles = role_iam.list_roles().send().await.unwrap();
    assert_eq!(roles.roles().len(), 1);
    let e = role_iam
        .create_user()
        .user_name("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    assert!(
        message(&e).starts_with(&format!(
            "User: {session_arn} is not authorized to perform: iam:CreateUser"
        )),
        "{}",
        message(&e)
    );

    // Without the token, or with another one: rejected.
    let no_token = s
        .sdk_config_as(creds.access_key_id(), creds.secret_access_key(), None)
        .await;
    let e = aws_sdk_sts::Client::new(&no_token)
        .get_caller_identity()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidClientTokenId");
    let wrong = s
        .sdk_config_as(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some("bm90IHRoZSB0b2tlbg=="),
        )
        .await;
    let e = aws_sdk_sts::Client::new(&wrong)
        .get_caller_identity()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidClientTokenId");

    // A user of the account: the trust policy names the account, so the user also needs an
    // identity policy allowing sts:AssumeRole.
    iam.create_role()
        .role_name("open")
        .assume_role_policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{ACCOUNT}"}},"Action":"sts:AssumeRole"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    let open_arn = format!("arn:aws:iam::{ACCOUNT}:role/open");
    iam.create_user().user_name("carol").send().await.unwrap();
    let ck = iam
        .create_access_key()
        .user_name("carol")
        .send()
        .await
        .unwrap();
    let ck = ck.access_key().unwrap();
    let carol = aws_sdk_sts::Client::new(
        &s.sdk_config_as(ck.access_key_id(), ck.secret_access_key(), None)
            .await,
    );
    let e = carol
        .assume_role()
        .role_arn(&open_arn)
        .role_session_name("carol-session")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    iam.put_user_policy()
        .user_name("carol")
        .policy_name("assume")
        .policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"{open_arn}"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    let ok = carol
        .assume_role()
        .role_arn(&open_arn)
        .role_session_name("carol-session")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.assumed_role_user().unwrap().arn(),
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/open/carol-session")
    );
    // ... but not the ExternalId role, whose trust names only the root.
    let e = carol
        .assume_role()
        .role_arn(&role_arn)
        .role_session_name("carol-session")
        .external_id("ext-123")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");

    // UpdateAssumeRolePolicy takes effect at once.
    iam.update_assume_role_policy()
        .role_name("deployer")
        .policy_document(format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"{root}"}},"Action":"sts:AssumeRole"}}]}}"#
        ))
        .send()
        .await
        .unwrap();
    sts.assume_role()
        .role_arn(&role_arn)
        .role_session_name("s2")
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_policies_attachments_and_errors() {
    let s = TestServer::start().await;
    let iam = s.iam().await;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"firehose.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role()
        .role_name("delivery")
        .path("/service/")
        .assume_role_policy_document(trust)
        .tags(
            Tag::builder()
                .key("team")
                .value("a+b=c @x")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let e = iam
        .create_role()
        .role_name("DELIVERY")
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "EntityAlreadyExists");
    assert_eq!(e.raw_response().unwrap().status().as_u16(), 409);
    let e = iam
        .create_role()
        .role_name("bad")
        .assume_role_policy_document("{not json")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MalformedPolicyDocument");
    let e = iam
        .create_role()
        .role_name("bad name!")
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationError");
    assert!(message(&e).contains("roleName"), "{}", message(&e));
    let e = iam.get_role().role_name("nope").send().await.unwrap_err();
    assert_eq!(code(&e), "NoSuchEntity");

    let got = iam.get_role().role_name("delivery").send().await.unwrap();
    let r = got.role().unwrap();
    assert_eq!(r.path(), "/service/");
    assert_eq!(
        r.arn(),
        format!("arn:aws:iam::{ACCOUNT}:role/service/delivery")
    );
    assert_eq!(r.max_session_duration(), Some(3600));
    assert_eq!(r.tags()[0].value(), "a+b=c @x");

    // Inline policy with characters that need escaping and encoding.
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Sid":"a<b>&'c'","Effect":"Allow","Action":"firehose:PutRecord","Resource":"*"}]}"#;
    iam.put_role_policy()
        .role_name("delivery")
        .policy_name("p1")
        .policy_document(doc)
        .send()
        .await
        .unwrap();
    let got = iam
        .get_role_policy()
        .role_name("delivery")
        .policy_name("p1")
        .send()
        .await
        .unwrap();
    assert_eq!(decode(got.policy_document()), doc);
    assert_eq!(got.role_name(), "delivery");
    let names = iam
        .list_role_policies()
        .role_name("delivery")
        .send()
        .await
        .unwrap();
    assert_eq!(names.policy_names(), ["p1"]);
    let e = iam
        .put_role_policy()
        .role_name("delivery")
        .policy_name("p2")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*"}]}"#,
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "MalformedPolicyDocument");

    // Managed policies.
    let pdoc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"}]}"#;
    let p = iam
        .create_policy()
        .policy_name("decrypt")
        .policy_document(pdoc)
        .description("d")
        .send()
        .await
        .unwrap();
    let p = p.policy().unwrap();
    let parn = p.arn().unwrap().to_string();
    assert_eq!(parn, format!("arn:aws:iam::{ACCOUNT}:policy/decrypt"));
    assert!(p.policy_id().unwrap().starts_with("ANPA"));
    assert_eq!(p.default_version_id(), Some("v1"));
    let e = iam
        .create_policy()
        .policy_name("decrypt")
        .policy_document(pdoc)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "EntityAlreadyExists");
    let v = iam
        .get_policy_version()
        .policy_arn(&parn)
        .version_id("v1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        decode(v.policy_version().unwrap().document().unwrap()),
        pdoc
    );
    iam.attach_role_policy()
        .role_name("delivery")
        .policy_arn(&parn)
        .send()
        .await
        .unwrap();
    let att = iam
        .list_attached_role_policies()
        .role_name("delivery")
        .send()
        .await
        .unwrap();
    assert_eq!(att.attached_policies()[0].policy_arn(), Some(parn.as_str()));
    let got = iam.get_policy().policy_arn(&parn).send().await.unwrap();
    assert_eq!(got.policy().unwrap().attachment_count(), Some(1));
    let listed = iam
        .list_policies()
        .scope(aws_sdk_iam::types::PolicyScopeType::Local)
        .only_attached(true)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.policies().len(), 1);
    let e = iam
        .delete_policy()
        .policy_arn(&parn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DeleteConflict");
    let e = iam
        .delete_role()
        .role_name("delivery")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "DeleteConflict");
    let e = iam
        .attach_role_policy()
        .role_name("delivery")
        .policy_arn(format!("arn:aws:iam::{ACCOUNT}:policy/missing"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchEntity");

    // Tags.
    iam.tag_role()
        .role_name("delivery")
        .tags(Tag::builder().key("env").value("prod").build().unwrap())
        .send()
        .await
        .unwrap();
    iam.untag_role()
        .role_name("delivery")
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    let r = iam.get_role().role_name("delivery").send().await.unwrap();
    let tags: Vec<(&str, &str)> = r
        .role()
        .unwrap()
        .tags()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags, [("env", "prod")]);

    // Clean up in AWS's order.
    iam.detach_role_policy()
        .role_name("delivery")
        .policy_arn(&parn)
        .send()
        .await
        .unwrap();
    iam.delete_role_policy()
        .role_name("delivery")
        .policy_name("p1")
        .send()
        .await
        .unwrap();
    iam.delete_role()
        .role_name("delivery")
        .send()
        .await
        .unwrap();
    iam.delete_policy().policy_arn(&parn).send().await.unwrap();
    assert!(iam.list_roles().send().await.unwrap().roles().is_empty());

    // Service-linked role for EventBridge API destinations.
    let slr = iam
        .create_service_linked_role()
        .aws_service_name("apidestinations.events.amazonaws.com")
        .send()
        .await
        .unwrap();
    let slr = slr.role().unwrap();
    assert_eq!(
        slr.role_name(),
        "AWSServiceRoleForAmazonEventBridgeApiDestinations"
    );
    assert_eq!(
        slr.path(),
        "/aws-service-role/apidestinations.events.amazonaws.com/"
    );
    assert!(
        decode(slr.assume_role_policy_document().unwrap())
            .contains("apidestinations.events.amazonaws.com")
    );
    let e = iam
        .create_service_linked_role()
        .aws_service_name("apidestinations.events.amazonaws.com")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidInput");

    // Pagination.
    for i in 0..3 {
        iam.create_user()
            .user_name(format!("u{i}"))
            .send()
            .await
            .unwrap();
    }
    let p1 = iam.list_users().max_items(2).send().await.unwrap();
    assert_eq!(p1.users().len(), 2);
    assert!(p1.is_truncated());
    let p2 = iam
        .list_users()
        .max_items(2)
        .marker(p1.marker().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(p2.users().len(), 1);
    assert!(!p2.is_truncated());
    assert_eq!(p2.users()[0].user_name(), "u2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_principal_policy_explains_decisions() {
    let s = TestServer::start().await;
    let iam = s.iam().await;
    iam.create_user().user_name("dave").send().await.unwrap();
    iam.put_user_policy()
        .user_name("dave")
        .policy_name("s3read")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bucket/*",
             "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}},
            {"Effect":"Deny","Action":"s3:DeleteObject","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let run = |ctx: Option<&str>| {
        let mut r = iam
            .simulate_principal_policy()
            .policy_source_arn(user_arn("dave"))
            .action_names("s3:GetObject")
            .action_names("s3:DeleteObject")
            .action_names("s3:PutObject")
            .resource_arns("arn:aws:s3:::bucket/a");
        if let Some(ip) = ctx {
            r = r.context_entries(
                ContextEntry::builder()
                    .context_key_name("aws:SourceIp")
                    .context_key_type(ContextKeyTypeEnum::Ip)
                    .context_key_values(ip)
                    .build(),
            );
        }
        r.send()
    };
    let out = run(None).await.unwrap();
    let r = out.evaluation_results();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].eval_action_name(), "s3:GetObject");
    assert_eq!(r[0].eval_resource_name(), Some("arn:aws:s3:::bucket/a"));
    assert_eq!(
        r[0].eval_decision(),
        &PolicyEvaluationDecisionType::ImplicitDeny
    );
    assert_eq!(r[0].missing_context_values(), ["aws:SourceIp"]);
    assert!(r[0].matched_statements().is_empty());
    assert_eq!(
        r[1].eval_decision(),
        &PolicyEvaluationDecisionType::ExplicitDeny
    );
    assert_eq!(
        r[1].matched_statements()[0].source_policy_id(),
        Some("s3read")
    );
    assert_eq!(
        r[1].matched_statements()[0].source_policy_type(),
        Some(&aws_sdk_iam::types::PolicySourceType::User)
    );
    assert_eq!(
        r[2].eval_decision(),
        &PolicyEvaluationDecisionType::ImplicitDeny
    );
    assert!(r[2].missing_context_values().is_empty());

    let out = run(Some("10.1.2.3")).await.unwrap();
    let r = out.evaluation_results();
    assert_eq!(r[0].eval_decision(), &PolicyEvaluationDecisionType::Allowed);
    assert!(r[0].missing_context_values().is_empty());
    assert_eq!(r[0].matched_statements().len(), 1);
    let m = &r[0].matched_statements()[0];
    let start = m.start_position().unwrap();
    let end = m.end_position().unwrap();
    assert_eq!((start.line(), start.column()), (2, 13));
    assert_eq!((end.line(), end.column()), (3, 69));
    let out = run(Some("192.168.0.1")).await.unwrap();
    assert_eq!(
        out.evaluation_results()[0].eval_decision(),
        &PolicyEvaluationDecisionType::ImplicitDeny
    );

    let custom = iam
        .simulate_custom_policy()
        .policy_input_list(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sqs:*","Resource":"*"}]}"#)
        .action_names("sqs:SendMessage")
        .action_names("sns:Publish")
        .send()
        .await
        .unwrap();
    let r = custom.evaluation_results();
    assert_eq!(r[0].eval_decision(), &PolicyEvaluationDecisionType::Allowed);
    assert_eq!(
        r[0].matched_statements()[0].source_policy_id(),
        Some("PolicyInputList.1")
    );
    assert_eq!(
        r[1].eval_decision(),
        &PolicyEvaluationDecisionType::ImplicitDeny
    );

    let e = iam
        .simulate_principal_policy()
        .policy_source_arn(user_arn("nobody"))
        .action_names("s3:GetObject")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "NoSuchEntity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_calls_are_audited_without_secrets() {
    let s = TestServer::start().await;
    let iam = s.iam().await;
    iam.create_user().user_name("erin").send().await.unwrap();
    let k = iam
        .create_access_key()
        .user_name("erin")
        .send()
        .await
        .unwrap();
    let secret = k.access_key().unwrap().secret_access_key().to_string();
    let _ = iam.get_user().user_name("ghost").send().await.unwrap_err();
    let ct = s.cloudtrail().await;
    let ev = ct.lookup_events().send().await.unwrap();
    let names: Vec<(&str, &str)> = ev
        .events()
        .iter()
        .map(|e| (e.event_name().unwrap_or(""), e.event_source().unwrap_or("")))
        .collect();
    for want in ["CreateUser", "CreateAccessKey", "GetUser"] {
        assert!(
            names.contains(&(want, "iam.amazonaws.com")),
            "{want} missing from {names:?}"
        );
    }
    for e in ev.events() {
        assert!(!e.cloud_trail_event().unwrap_or("").contains(&secret));
    }
    let mut s = s;
    s.stop().await;
    for (path, bytes) in files_under(&s.dir) {
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "secret in {}",
            path.display()
        );
    }
}
