//! Requests built from fuzz input are signed with the SigV4 primitives (header or presigned
//! form) and must verify; changing the body, a header value or the method must then fail.

#![no_main]

use aws_lc_rs::{digest, hmac};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sluice_sigv4::{
    Credential, CredentialError, HttpRequestParts, Verifier, VerifyPolicy, canonical_request_bytes,
    derive_signing_key,
};
use time::OffsetDateTime;

#[derive(Arbitrary, Debug)]
struct Input {
    method: bool,
    path: String,
    query: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    presigned: bool,
    secret: String,
    skew: i16,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a user query could spell one of the auth parameter names (directly or encoded).
fn may_spell_auth_param(q: &str) -> bool {
    let lower = q.to_ascii_lowercase();
    lower.contains("mz")
        || lower.contains("%4")
        || lower.contains("%5")
        || lower.contains("%6")
        || lower.contains("%7")
}

fuzz_target!(|input: Input| {
    if may_spell_auth_param(&input.query) || input.secret.is_empty() {
        return;
    }
    // Header names: lower-case token characters, no names the signer owns.
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for (n, v) in &input.headers {
        let name: String = n
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
            .to_ascii_lowercase();
        if name.is_empty()
            || matches!(
                name.as_str(),
                "host"
                    | "authorization"
                    | "x-amz-date"
                    | "date"
                    | "x-amz-content-sha256"
                    | "x-amz-security-token"
            )
        {
            continue;
        }
        headers.push((name, v.clone()));
    }
    headers.push(("host".to_owned(), b"kms.us-east-1.amazonaws.com".to_vec()));
    let amz_date = "20261123T103500Z";
    let scope = "20261123/us-east-1/kms/aws4_request";
    let mut names: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
    if !input.presigned {
        headers.push(("x-amz-date".to_owned(), amz_date.as_bytes().to_vec()));
        names.push("x-amz-date".to_owned());
    }
    names.sort();
    names.dedup();
    let signed = names.join(";");
    let method = if input.method { "POST" } else { "GET" };

    let mut query = input.query.clone();
    if input.presigned {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F{}&X-Amz-Date={amz_date}&X-Amz-Expires=300&X-Amz-SignedHeaders={}",
            scope.replace('/', "%2F"),
            signed.replace(';', "%3B")
        ));
    }
    let payload = hex(digest::digest(&digest::SHA256, &input.body).as_ref());
    let sign = |headers: &[(String, Vec<u8>)], query: &str| -> String {
        let refs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let parts = HttpRequestParts {
            method,
            path: &input.path,
            query: Some(query),
            headers: &refs,
        };
        let creq = canonical_request_bytes(&parts, &signed, input.presigned, &payload);
        let sts = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, &creq).as_ref())
        );
        let key = derive_signing_key(&input.secret, "20261123", "us-east-1", "kms");
        hex(hmac::sign(&key, sts.as_bytes()).as_ref())
    };
    let signature = sign(&headers, &query);
    if input.presigned {
        query.push_str("&X-Amz-Signature=");
        query.push_str(&signature);
    } else {
        headers.push((
            "authorization".to_owned(),
            format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, SignedHeaders={signed}, Signature={signature}")
                .into_bytes(),
        ));
    }

    let verifier = Verifier::new(VerifyPolicy::new("us-east-1", &["kms"]));
    let secret = input.secret.clone();
    let lookup = move |akid: &str, _: Option<&str>| -> Result<Credential<()>, CredentialError> {
        if akid == "AKIDEXAMPLE" {
            Ok(Credential::new(secret.clone(), ()))
        } else {
            Err(CredentialError::UnknownAccessKey)
        }
    };
    let now = OffsetDateTime::from_unix_timestamp(1_795_430_100 + i64::from(input.skew % 240))
        .expect("time");
    let check = |method: &str, headers: &[(String, Vec<u8>)], body: &[u8]| {
        let refs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let parts = HttpRequestParts {
            method,
            path: &input.path,
            query: Some(&query),
            headers: &refs,
        };
        verifier.verify(&parts, body, now, &lookup)
    };
    if let Err(e) = check(method, &headers, &input.body) {
        panic!("signed request rejected: {e}");
    }
    let mut body = input.body.clone();
    body.push(0);
    assert!(
        check(method, &headers, &body).is_err(),
        "changed body accepted"
    );
    let other = if input.method { "GET" } else { "POST" };
    assert!(
        check(other, &headers, &input.body).is_err(),
        "changed method accepted"
    );
    let mut changed = headers.clone();
    let host = changed.iter_mut().find(|(n, _)| n == "host").expect("host");
    host.1.push(b'x');
    assert!(
        check(method, &changed, &input.body).is_err(),
        "changed host accepted"
    );
});
