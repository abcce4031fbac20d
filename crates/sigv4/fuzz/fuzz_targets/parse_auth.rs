//! Arbitrary requests (raw or SigV4-shaped Authorization headers, presigned query strings,
//! odd paths, queries, headers and dates) through the full verifier: it must never panic, every
//! error must carry one of the known codes, and nothing forged may verify.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sluice_sigv4::{
    Credential, CredentialError, HttpRequestParts, VerifyPolicy, canonical_request_string, verify,
};
use time::OffsetDateTime;

#[derive(Arbitrary, Debug)]
enum Auth {
    None,
    Raw(Vec<u8>),
    Templated {
        credential: String,
        signed_headers: String,
        signature: String,
        separator: bool,
    },
    Presigned {
        params: Vec<(u8, String)>,
        extra: String,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(u8, String, Vec<u8>)>,
    date: Option<String>,
    auth: Auth,
    body: Vec<u8>,
    now: u32,
    allow_unsigned: bool,
    signed_for_canonical: String,
}

const HEADER_NAMES: [&str; 8] = [
    "host",
    "x-amz-date",
    "date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "content-type",
    "Authorization",
    "x-amz-target",
];

const PARAM_NAMES: [&str; 8] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
    "X%2DAmz-Signature",
];

const KNOWN_CODES: [&str; 6] = [
    "MissingAuthenticationTokenException",
    "IncompleteSignatureException",
    "InvalidSignatureException",
    "UnrecognizedClientException",
    "ExpiredTokenException",
    "XAmzContentSHA256Mismatch",
];

fuzz_target!(|input: Input| {
    let mut headers: Vec<(String, Vec<u8>)> = input
        .headers
        .iter()
        .map(|(i, custom, v)| {
            let name = if *i < 200 {
                HEADER_NAMES[usize::from(*i) % HEADER_NAMES.len()].to_owned()
            } else {
                custom.clone()
            };
            (name, v.clone())
        })
        .collect();
    if let Some(d) = &input.date {
        headers.push(("X-Amz-Date".to_owned(), d.clone().into_bytes()));
    }
    let mut query = input.query.clone().unwrap_or_default();
    match &input.auth {
        Auth::None => {}
        Auth::Raw(v) => headers.push(("Authorization".to_owned(), v.clone())),
        Auth::Templated {
            credential,
            signed_headers,
            signature,
            separator,
        } => {
            let sep = if *separator { ", " } else { "," };
            headers.push((
                "Authorization".to_owned(),
                format!(
                    "AWS4-HMAC-SHA256 Credential={credential}{sep}SignedHeaders={signed_headers}{sep}Signature={signature}"
                )
                .into_bytes(),
            ));
        }
        Auth::Presigned { params, extra } => {
            for (i, v) in params {
                if !query.is_empty() {
                    query.push('&');
                }
                query.push_str(PARAM_NAMES[usize::from(*i) % PARAM_NAMES.len()]);
                query.push('=');
                query.push_str(v);
            }
            query.push_str(extra);
        }
    }
    let header_refs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let parts = HttpRequestParts {
        method: &input.method,
        path: &input.path,
        query: Some(&query),
        headers: &header_refs,
    };
    let _ = canonical_request_string(
        &parts,
        &input.signed_for_canonical,
        true,
        "UNSIGNED-PAYLOAD",
    );

    let mut policy = VerifyPolicy::new("us-east-1", &["kms", "sts"]);
    policy.allow_unsigned_payload = input.allow_unsigned;
    let lookup = |akid: &str, token: Option<&str>| -> Result<Credential<()>, CredentialError> {
        match (akid, token) {
            ("AKIDEXAMPLE", None) => Ok(Credential::new("secret", ())),
            ("ASIAEXAMPLE", Some("old")) => Err(CredentialError::ExpiredSessionToken),
            ("ASIAEXAMPLE", Some(_)) => Ok(Credential::new("temp-secret", ())),
            _ => Err(CredentialError::UnknownAccessKey),
        }
    };
    // 2026-01-01 plus up to ~136 years of seconds.
    let now = OffsetDateTime::from_unix_timestamp(1_767_225_600 + i64::from(input.now))
        .expect("in range");
    match verify(&parts, &input.body, now, &policy, &lookup) {
        Ok(v) => {
            // Only reachable with a correct HMAC: the fuzzer cannot forge one.
            panic!("forged request verified: {v:?}");
        }
        Err(e) => {
            assert!(KNOWN_CODES.contains(&e.code()), "unknown code {}", e.code());
            assert!(matches!(e.status(), 400 | 403));
            assert!(!e.message().is_empty());
        }
    }
});
