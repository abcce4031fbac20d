//! Operator switches of `sluice serve`: `--allow-aws-sources` and `/_sluice/metrics`.

mod common;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use common::*;

fn ec2_event() -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .source("aws.ec2")
        .detail_type("EC2 Instance State-change Notification")
        .detail(r#"{"instance-id":"i-0abc","state":"running"}"#)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sources_need_the_operator_switch_and_metrics_count_them() {
    // Default: `aws.` sources are refused per entry.
    let s = TestServer::start().await;
    let out = s
        .events()
        .await
        .put_events()
        .entries(ec2_event())
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count(), 1);
    assert!(out.entries()[0].error_code().is_some());

    // With the switch, the root principal may inject them.
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.allow_aws_sources = true;
    let server = sluice::server::start_with(cfg, std::future::pending())
        .await
        .unwrap();
    let endpoint = format!("http://{}", server.addr());
    let ev = aws_sdk_eventbridge::Client::new(&sdk_config_with(&endpoint, AKID, SECRET).await);
    let out = ev.put_events().entries(ec2_event()).send().await.unwrap();
    assert_eq!(out.failed_entry_count(), 0, "{:?}", out.entries());

    // Metrics: no authentication, Prometheus text, the accepted entry counted.
    let text = reqwest::get(format!("{endpoint}/_sluice/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# TYPE sluice_events_put_entries_total counter"),
        "{text}"
    );
    assert!(text.contains("sluice_events_put_entries_total 1"), "{text}");
    assert!(text.contains("sluice_http_requests_total"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_events_follows_identity_policies() {
    use aws_sdk_kms::error::ProvideErrorMetadata;
    let s = TestServer::start().await;
    let iam = s.iam().await;
    let mut clients = Vec::new();
    for (name, allow) in [("auditor", true), ("intern", false)] {
        iam.create_user().user_name(name).send().await.unwrap();
        if allow {
            iam.put_user_policy()
                .user_name(name)
                .policy_name("trail")
                .policy_document(
                    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"cloudtrail:LookupEvents","Resource":"*"}]}"#,
                )
                .send()
                .await
                .unwrap();
        }
        let k = iam
            .create_access_key()
            .user_name(name)
            .send()
            .await
            .unwrap();
        let k = k.access_key().unwrap();
        let cfg = s
            .sdk_config_as(k.access_key_id(), k.secret_access_key(), None)
            .await;
        clients.push(aws_sdk_cloudtrail::Client::new(&cfg));
    }
    let ok = clients[0].lookup_events().send().await.unwrap();
    assert!(
        !ok.events().is_empty(),
        "the IAM calls above are in the trail"
    );
    let e = clients[1].lookup_events().send().await.unwrap_err();
    assert_eq!(e.code(), Some("AccessDeniedException"));
    assert!(e.message().unwrap().contains("cloudtrail:LookupEvents"));
}
