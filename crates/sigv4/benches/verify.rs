//! Verification cost for requests shaped like the Rust SDK's (six signed headers, small JSON
//! body), signed by aws-sigv4: cached vs. stateless key derivation, presigned URLs, a 64 KiB body
//! and a rejected signature. Each case is measured twice: wall-clock time (criterion's default)
//! and the benchmark thread's CPU time (`cpu/...`), which stays meaningful when the machine is
//! shared and the thread is descheduled. Results: docs/PERFORMANCE-sigv4.md.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_sigv4::{
    Credential, CredentialError, HttpRequestParts, Verifier, VerifyPolicy, header_pairs, verify,
};
use time::OffsetDateTime;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SIGNED_AT: u64 = 1_795_430_100; // 2026-11-23T10:35:00Z

struct Signed {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn signed_request(body: Vec<u8>, presigned: bool) -> Signed {
    let uri = "https://kms.us-east-1.amazonaws.com/";
    let mut request = http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", "kms.us-east-1.amazonaws.com")
        .header("content-type", "application/x-amz-json-1.1")
        .header("content-length", body.len().to_string())
        .header("x-amz-target", "TrentService.GenerateDataKey")
        .header(
            "x-amz-user-agent",
            "aws-sdk-rust/1.3.9 ua/2.1 api/kms/1.70.0 os/linux lang/rust/1.95.0",
        )
        .header("user-agent", "aws-sdk-rust/1.3.9 os/linux lang/rust/1.95.0")
        .body(())
        .expect("request");
    let identity: Identity = Credentials::new("AKIDEXAMPLE", SECRET, None, None, "bench").into();
    let mut settings = SigningSettings::default();
    if presigned {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(900));
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("kms")
        .time(SystemTime::UNIX_EPOCH + Duration::from_secs(SIGNED_AT))
        .settings(settings)
        .build()
        .expect("params")
        .into();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
        .collect();
    let signable =
        SignableRequest::new("POST", uri, headers.into_iter(), SignableBody::Bytes(&body))
            .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    instructions.apply_to_request_http1x(&mut request);
    Signed {
        method: "POST".to_owned(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        headers: header_pairs(request.headers())
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect(),
        body,
    }
}

fn lookup(akid: &str, _token: Option<&str>) -> Result<Credential<u64>, CredentialError> {
    if akid == "AKIDEXAMPLE" {
        Ok(Credential::new(SECRET, 42))
    } else {
        Err(CredentialError::UnknownAccessKey)
    }
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
struct ThreadCpu;

struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _t: &Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "ns"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpu {
    type Intermediate = cpu_time::ThreadTime;
    type Value = Duration;
    fn start(&self) -> Self::Intermediate {
        cpu_time::ThreadTime::now()
    }
    fn end(&self, i: Self::Intermediate) -> Self::Value {
        i.elapsed()
    }
    fn add(&self, v1: &Duration, v2: &Duration) -> Duration {
        *v1 + *v2
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

fn wall(c: &mut Criterion) {
    bench(c, "");
}

fn cpu(c: &mut Criterion<ThreadCpu>) {
    bench(c, "cpu/");
}

fn bench<M: Measurement + 'static>(c: &mut Criterion<M>, prefix: &str) {
    let now = OffsetDateTime::from_unix_timestamp(SIGNED_AT as i64 + 30).expect("now");
    let policy = VerifyPolicy::new("us-east-1", &["kms"]);
    let verifier = Verifier::new(policy.clone());
    let json = br#"{"KeyId":"alias/sluice-bench","KeySpec":"AES_256","EncryptionContext":{"app":"bench"}}"#.to_vec();

    let cases = [
        ("header_small_body", signed_request(json.clone(), false)),
        ("presigned_small_body", signed_request(json.clone(), true)),
        (
            "header_64KiB_body",
            signed_request(vec![b'x'; 64 * 1024], false),
        ),
    ];
    for (name, s) in &cases {
        let headers: Vec<(&str, &[u8])> = s
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let parts = HttpRequestParts {
            method: &s.method,
            path: &s.path,
            query: s.query.as_deref(),
            headers: &headers,
        };
        assert!(verifier.verify(&parts, &s.body, now, &lookup).is_ok());
        c.bench_function(&format!("{prefix}verify_cached/{name}"), |b| {
            b.iter(|| verifier.verify(black_box(&parts), black_box(&s.body), now, &lookup))
        });
        c.bench_function(&format!("{prefix}verify_uncached/{name}"), |b| {
            b.iter(|| verify(black_box(&parts), black_box(&s.body), now, &policy, &lookup))
        });
    }

    // A wrong signature costs the same as a right one (plus building the error).
    let s = &cases[0].1;
    let mut headers = s.headers.clone();
    let auth = headers
        .iter_mut()
        .find(|(n, _)| n == "authorization")
        .expect("authorization");
    let last = auth.1.len() - 1;
    auth.1[last] = if auth.1[last] == b'0' { b'1' } else { b'0' };
    let refs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let parts = HttpRequestParts {
        method: &s.method,
        path: &s.path,
        query: s.query.as_deref(),
        headers: &refs,
    };
    assert!(verifier.verify(&parts, &s.body, now, &lookup).is_err());
    c.bench_function(&format!("{prefix}verify_cached/rejected_signature"), |b| {
        b.iter(|| verifier.verify(black_box(&parts), black_box(&s.body), now, &lookup))
    });
}

criterion_group!(wall_benches, wall);
criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = cpu
}
criterion_main!(wall_benches, cpu_benches);
