//! Shared pieces of the HTTP load harnesses: the bench credentials, a SigV4 signer (the
//! official `aws-sigv4` crate) for JSON 1.1 requests, and small statistics helpers.

#![allow(dead_code)]

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

pub const AKID: &str = "AKIABENCHBENCHBENCH0";
pub const SECRET: &str = "benchSecretKeyForSluiceLoadHarness000000";

/// The headers of a JSON 1.1 POST to `endpoint`, signed for `service`.
pub fn signed(endpoint: &str, service: &str, target: &str, body: &str) -> Vec<(String, String)> {
    let url = format!("{endpoint}/");
    let host = endpoint.trim_start_matches("http://").to_string();
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        ("x-amz-target".to_string(), target.to_string()),
        ("host".to_string(), host),
    ];
    let identity = Credentials::new(AKID, SECRET, None, None, "bench").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let req = SignableRequest::new(
        "POST",
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instr, _) = sign(req, &params).unwrap().into_parts();
    for (k, v) in instr.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    headers.retain(|(k, _)| k != "host");
    headers
}

/// An integer environment setting.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Percentile `p` of sorted microsecond latencies, in milliseconds.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}
