//! Wire protocol and authentication: the errors clients expect, on raw signed requests and
//! through the SDK.

mod common;

use aws_sdk_kms::error::ProvideErrorMetadata;
use common::*;
use serde_json::json;

const CT: (&str, &str) = ("content-type", "application/x-amz-json-1.1");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_auth_and_everything_else_does() {
    let s = TestServer::start().await;
    let r = reqwest::get(format!("{}/_sluice/health", s.endpoint()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-amzn-requestid"));

    // Unsigned request.
    let r = raw(
        &s.endpoint(),
        "kms",
        &[CT, ("x-amz-target", "TrentService.ListKeys")],
        b"{}".to_vec(),
        false,
        SECRET,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["__type"], "MissingAuthenticationTokenException");
    assert!(r.headers.contains_key("x-amzn-requestid"));

    // Wrong secret.
    let r = raw(
        &s.endpoint(),
        "kms",
        &[CT, ("x-amz-target", "TrentService.ListKeys")],
        b"{}".to_vec(),
        true,
        "wrong-secret",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["__type"], "InvalidSignatureException");

    // Unknown access key, through the SDK.
    let cfg = sdk_config_with(&s.endpoint(), "AKIAUNKNOWNUNKNOWN00", SECRET).await;
    let e = aws_sdk_kms::Client::new(&cfg)
        .list_keys()
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("UnrecognizedClientException"));

    // Signed for the wrong service.
    let r = raw(
        &s.endpoint(),
        "secretsmanager",
        &[CT, ("x-amz-target", "TrentService.ListKeys")],
        b"{}".to_vec(),
        true,
        SECRET,
    )
    .await;
    assert_eq!(r.body["__type"], "InvalidSignatureException");

    // A malformed Authorization header.
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/", s.endpoint()))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "TrentService.ListKeys")
        .header("x-amz-date", "20260101T000000Z")
        .header("authorization", "AWS4-HMAC-SHA256 Signature=abc")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["__type"], "IncompleteSignatureException");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_typed_errors() {
    let s = TestServer::start().await;
    let ep = s.endpoint();
    let send = |target: &'static str, ct: &'static str, body: Vec<u8>| {
        let ep = ep.clone();
        async move {
            raw(
                &ep,
                "kms",
                &[("content-type", ct), ("x-amz-target", target)],
                body,
                true,
                SECRET,
            )
            .await
        }
    };
    let r = send("TrentService.NoSuchThing", CT.1, b"{}".to_vec()).await;
    assert_eq!(r.body["__type"], "UnknownOperationException");
    assert_eq!(r.status, 400);

    let r = send("TrentService.ListKeys", CT.1, b"{not json".to_vec()).await;
    assert_eq!(r.body["__type"], "SerializationException");

    let r = send("TrentService.ListKeys", CT.1, b"[1,2]".to_vec()).await;
    assert_eq!(r.body["__type"], "SerializationException");

    let r = send("TrentService.ListKeys", "text/plain", b"{}".to_vec()).await;
    assert!(r.status >= 400);
    assert!(r.body["__type"].is_string());

    let r = send(
        "TrentService.Encrypt",
        CT.1,
        json!({"Plaintext": "aGk="}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.body["__type"], "ValidationException");
    assert!(r.body["message"].as_str().unwrap().contains("keyId"));

    let r = send(
        "TrentService.Encrypt",
        CT.1,
        json!({"KeyId": 5, "Plaintext": "aGk="})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(r.body["__type"], "SerializationException");

    let r = send(
        "TrentService.ListKeys",
        CT.1,
        json!({"Limit": 0}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.body["__type"], "ValidationException");

    let r = send(
        "TrentService.CreateKey",
        CT.1,
        json!({"KeyUsage": "SOMETHING"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.body["__type"], "ValidationException");

    // Body over the configured limit (1 MiB in tests).
    let big = format!("{{\"Description\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let r = send("TrentService.CreateKey", CT.1, big.into_bytes()).await;
    assert_eq!(r.status, 413);

    // Deeply nested JSON does not crash anything.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = send("TrentService.ListKeys", CT.1, deep.into_bytes()).await;
    assert_eq!(r.body["__type"], "SerializationException");

    // The server is still fine.
    let r = send("TrentService.ListKeys", CT.1, b"{}".to_vec()).await;
    assert_eq!(r.status, 200);
    assert!(r.body["Keys"].is_array());
}
