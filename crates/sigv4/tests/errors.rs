//! Error paths: AWS's codes, statuses and message texts for each kind of failure, plus the
//! `Date`-header and unsigned-payload paths.

use aws_lc_rs::hmac;
use sluice_sigv4::{
    AuthLocation, Credential, CredentialError, ErrorKind, HttpRequestParts, SigV4Error, Verified,
    VerifyPolicy, canonical_request_string, derive_signing_key, verify,
};
use time::OffsetDateTime;
use time::macros::datetime;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const NOW: OffsetDateTime = datetime!(2026-11-23 10:35:00 UTC);

fn lookup(akid: &str, token: Option<&str>) -> Result<Credential<&'static str>, CredentialError> {
    match (akid, token) {
        ("AKIDEXAMPLE", None) => Ok(Credential::new(SECRET, "alice")),
        ("ASIATEMP", Some("good-token")) => Ok(Credential::new(SECRET, "role-session")),
        ("ASIATEMP", Some("old-token")) => Err(CredentialError::ExpiredSessionToken),
        ("ASIATEMP", _) => Err(CredentialError::InvalidSessionToken),
        _ => Err(CredentialError::UnknownAccessKey),
    }
}

fn policy() -> VerifyPolicy {
    VerifyPolicy::new("us-east-1", &["kms", "secretsmanager"])
}

fn run(
    method: &str,
    query: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
    policy: &VerifyPolicy,
) -> Result<Verified<&'static str>, SigV4Error> {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let parts = HttpRequestParts {
        method,
        path: "/",
        query,
        headers: &headers,
    };
    verify(&parts, body, NOW, policy, &lookup)
}

fn err(headers: &[(&str, &str)]) -> SigV4Error {
    run("POST", None, headers, b"{}", &policy()).unwrap_err()
}

const CRED: &str = "AKIDEXAMPLE/20261123/us-east-1/kms/aws4_request";
const SIG: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn auth(cred: &str, signed: &str) -> String {
    format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders={signed}, Signature={SIG}")
}

/// Signs a header-form request with our own primitives (the canonical form itself is checked
/// against AWS's vectors and aws-sigv4 elsewhere).
fn self_signed(
    date_line: &str,
    headers: &mut Vec<(&'static str, String)>,
    signed: &str,
    payload: &str,
) {
    let raw: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let parts = HttpRequestParts {
        method: "POST",
        path: "/",
        query: None,
        headers: &raw,
    };
    let creq = canonical_request_string(&parts, signed, false, payload);
    let hash = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        creq.as_bytes(),
    ));
    let sts = format!("AWS4-HMAC-SHA256\n{date_line}\n20261123/us-east-1/kms/aws4_request\n{hash}");
    let key = derive_signing_key(SECRET, "20261123", "us-east-1", "kms");
    let sig = hex::encode(hmac::sign(&key, sts.as_bytes()));
    headers.push((
        "Authorization",
        format!("AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders={signed}, Signature={sig}"),
    ));
}

#[test]
fn missing_authentication() {
    let e = err(&[("host", "kms.us-east-1.amazonaws.com")]);
    assert_eq!(e.kind(), ErrorKind::MissingAuthenticationToken);
    assert_eq!(e.code(), "MissingAuthenticationTokenException");
    assert_eq!(e.status(), 403);
    assert_eq!(e.message(), "Missing Authentication Token");
    assert_eq!(e.query_code(), "MissingAuthenticationToken");
    assert_eq!(e.query_status(), 403);
}

#[test]
fn non_sigv4_authorization_lists_everything_missing() {
    let e = err(&[("host", "h"), ("Authorization", "Bearer abc")]);
    assert_eq!(e.code(), "IncompleteSignatureException");
    assert_eq!(e.status(), 400);
    assert_eq!(
        e.message(),
        "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=Bearer abc"
    );
    assert_eq!(e.query_code(), "IncompleteSignature");
}

#[test]
fn missing_single_parameter() {
    let a = format!("AWS4-HMAC-SHA256 Credential={CRED}, SignedHeaders=host");
    let e = err(&[
        ("host", "h"),
        ("x-amz-date", "20261123T103500Z"),
        ("Authorization", &a),
    ]);
    assert_eq!(
        e.message(),
        format!("Authorization header requires 'Signature' parameter. Authorization={a}")
    );
}

#[test]
fn element_without_equal_sign() {
    let a = format!("AWS4-HMAC-SHA256 Credential= {CRED}, SignedHeaders=host, Signature={SIG}");
    let e = err(&[
        ("host", "h"),
        ("x-amz-date", "20261123T103500Z"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "IncompleteSignatureException");
    assert_eq!(
        e.message(),
        format!(
            "'{CRED}' not a valid key=value pair (missing equal-sign) in Authorization header: '{a}'."
        )
    );
}

#[test]
fn unsupported_algorithm() {
    let e = err(&[
        ("host", "h"),
        ("x-amz-date", "20261123T103500Z"),
        ("Authorization", "AWS4-ECDSA-P256-SHA256 Credential=x"),
    ]);
    assert_eq!(e.code(), "IncompleteSignatureException");
    assert!(
        e.message()
            .starts_with("Unsupported AWS 'algorithm': 'AWS4-ECDSA-P256-SHA256'")
    );
}

#[test]
fn credential_shape_and_scope() {
    let date = ("x-amz-date", "20261123T103500Z");
    let e = err(&[
        ("host", "h"),
        date,
        (
            "Authorization",
            &auth("AKID/20261123/us-east-1/kms", "host"),
        ),
    ]);
    assert_eq!(e.code(), "IncompleteSignatureException");
    assert_eq!(
        e.message(),
        "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got 'AKID/20261123/us-east-1/kms'"
    );

    let e = err(&[
        ("host", "h"),
        date,
        (
            "Authorization",
            &auth("AKID/20261123/us-east-1/kms/aws5", "host"),
        ),
    ]);
    assert_eq!(e.code(), "InvalidSignatureException");
    assert_eq!(
        e.message(),
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5'. "
    );

    let e = err(&[
        ("host", "h"),
        date,
        (
            "Authorization",
            &auth("AKID/20261122/us-east-1/kms/aws4_request", "host"),
        ),
    ]);
    assert_eq!(e.code(), "InvalidSignatureException");
    assert_eq!(
        e.message(),
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20261122' != '20261123', from '20261123T103500Z'."
    );

    let e = err(&[
        ("host", "h"),
        date,
        (
            "Authorization",
            &auth("AKID/20261123/eu-west-1/kms/aws4_request", "host"),
        ),
    ]);
    assert_eq!(e.code(), "InvalidSignatureException");
    assert_eq!(e.query_code(), "SignatureDoesNotMatch");
    assert_eq!(e.query_status(), 403);
    assert_eq!(
        e.message(),
        "Credential should be scoped to a valid region, not 'eu-west-1'. "
    );

    let e = err(&[
        ("host", "h"),
        date,
        (
            "Authorization",
            &auth("AKID/20261123/us-east-1/events/aws4_request", "host"),
        ),
    ]);
    assert_eq!(
        e.message(),
        "Credential should be scoped to correct service: 'kms'. "
    );
}

#[test]
fn global_services_accept_us_east_1() {
    let mut p = VerifyPolicy::new("eu-west-1", &["iam", "kms"]);
    p.max_skew = time::Duration::minutes(15);
    let date = ("x-amz-date", "20261123T103500Z");
    // iam in us-east-1 passes the scope checks and fails only on the (zero) signature.
    let a = auth(
        "AKIDEXAMPLE/20261123/us-east-1/iam/aws4_request",
        "host;x-amz-date",
    );
    let e = run(
        "POST",
        None,
        &[("host", "h"), date, ("Authorization", &a)],
        b"",
        &p,
    )
    .unwrap_err();
    assert_eq!(e.message(), sluice_sigv4::error::SIGNATURE_MISMATCH_MESSAGE);
    // kms is regional.
    let a = auth(
        "AKIDEXAMPLE/20261123/us-east-1/kms/aws4_request",
        "host;x-amz-date",
    );
    let e = run(
        "POST",
        None,
        &[("host", "h"), date, ("Authorization", &a)],
        b"",
        &p,
    )
    .unwrap_err();
    assert_eq!(
        e.message(),
        "Credential should be scoped to a valid region, not 'us-east-1'. "
    );
}

#[test]
fn clock_skew_messages() {
    let a = auth(
        "AKIDEXAMPLE/20261123/us-east-1/kms/aws4_request",
        "host;x-amz-date",
    );
    let e = err(&[
        ("host", "h"),
        ("x-amz-date", "20261123T100000Z"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "InvalidSignatureException");
    assert_eq!(e.status(), 400);
    assert_eq!(
        e.message(),
        "Signature expired: 20261123T100000Z is now earlier than 20261123T102000Z (20261123T103500Z - 15 min.)"
    );
    let e = err(&[
        ("host", "h"),
        ("x-amz-date", "20261123T105001Z"),
        ("Authorization", &a),
    ]);
    assert_eq!(
        e.message(),
        "Signature not yet current: 20261123T105001Z is still later than 20261123T105000Z (20261123T103500Z + 15 min.)"
    );
    // Exactly at the edge is accepted (fails later, on the signature).
    let e = err(&[
        ("host", "h"),
        ("x-amz-date", "20261123T102000Z"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.message(), sluice_sigv4::error::SIGNATURE_MISMATCH_MESSAGE);

    let mut p = policy();
    p.max_skew = time::Duration::minutes(5);
    let e = run(
        "POST",
        None,
        &[
            ("host", "h"),
            ("x-amz-date", "20261123T102000Z"),
            ("Authorization", &a),
        ],
        b"",
        &p,
    )
    .unwrap_err();
    assert_eq!(
        e.message(),
        "Signature expired: 20261123T102000Z is now earlier than 20261123T103000Z (20261123T103500Z - 5 min.)"
    );
}

#[test]
fn bad_date_formats() {
    let a = auth(CRED, "host;x-amz-date");
    let e = err(&[
        ("host", "h"),
        ("x-amz-date", "2026-11-23T10:35:00Z"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "IncompleteSignatureException");
    assert_eq!(
        e.message(),
        "Date must be in ISO-8601 'basic format'. Got '2026-11-23T10:35:00Z'. See http://en.wikipedia.org/wiki/ISO_8601"
    );
    let e = err(&[
        ("host", "h"),
        ("x-amz-date", "a"),
        ("x-amz-date", "b"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "IncompleteSignatureException");
}

#[test]
fn host_must_be_signed_and_required_headers() {
    let a = auth(CRED, "x-amz-date");
    let e = err(&[
        ("host", "h"),
        ("x-amz-date", "20261123T103500Z"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "IncompleteSignatureException");
    assert_eq!(
        e.message(),
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
    );

    let mut p = policy();
    p.required_signed_headers = vec!["x-amz-target".to_owned()];
    let a = auth(CRED, "host;x-amz-date");
    let e = run(
        "POST",
        None,
        &[
            ("host", "h"),
            ("x-amz-date", "20261123T103500Z"),
            ("Authorization", &a),
        ],
        b"",
        &p,
    )
    .unwrap_err();
    assert_eq!(
        e.message(),
        "'x-amz-target' must be a 'SignedHeader' in the AWS Authorization."
    );
}

#[test]
fn unknown_key_invalid_and_expired_tokens() {
    let date = ("x-amz-date", "20261123T103500Z");
    let a = auth(
        "AKIDUNKNOWN/20261123/us-east-1/kms/aws4_request",
        "host;x-amz-date",
    );
    let e = err(&[("host", "h"), date, ("Authorization", &a)]);
    assert_eq!(e.code(), "UnrecognizedClientException");
    assert_eq!(e.status(), 400);
    assert_eq!(
        e.message(),
        "The security token included in the request is invalid."
    );
    assert_eq!(e.query_code(), "InvalidClientTokenId");
    assert_eq!(e.query_status(), 403);

    let a = auth(
        "ASIATEMP/20261123/us-east-1/kms/aws4_request",
        "host;x-amz-date",
    );
    let e = err(&[
        ("host", "h"),
        date,
        ("x-amz-security-token", "forged"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "UnrecognizedClientException");
    let e = err(&[("host", "h"), date, ("Authorization", &a)]);
    assert_eq!(e.code(), "UnrecognizedClientException");
    let e = err(&[
        ("host", "h"),
        date,
        ("x-amz-security-token", "old-token"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "ExpiredTokenException");
    assert_eq!(
        e.message(),
        "The security token included in the request is expired"
    );
    let e = err(&[
        ("host", "h"),
        date,
        ("x-amz-security-token", "good-token"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "InvalidSignatureException");
    assert_eq!(e.message(), sluice_sigv4::error::SIGNATURE_MISMATCH_MESSAGE);
}

#[test]
fn payload_declarations() {
    let date = ("x-amz-date", "20261123T103500Z");
    let a = auth(CRED, "host;x-amz-content-sha256;x-amz-date");
    let e = err(&[
        ("host", "h"),
        date,
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "InvalidSignatureException");
    assert!(e.message().starts_with("UNSIGNED-PAYLOAD is not accepted"));

    let wrong = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e";
    let e = err(&[
        ("host", "h"),
        date,
        ("x-amz-content-sha256", wrong),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "XAmzContentSHA256Mismatch");
    assert_eq!(
        e.message(),
        "The provided 'x-amz-content-sha256' header does not match what was computed."
    );

    let e = err(&[
        ("host", "h"),
        date,
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("Authorization", &a),
    ]);
    assert_eq!(e.code(), "InvalidSignatureException");
}

#[test]
fn both_mechanisms_or_repeated_authorization() {
    let a = auth(CRED, "host;x-amz-date");
    let date = ("x-amz-date", "20261123T103500Z");
    let e = run(
        "GET",
        Some("X-Amz-Algorithm=AWS4-HMAC-SHA256"),
        &[("host", "h"), date, ("Authorization", &a)],
        b"",
        &policy(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "IncompleteSignatureException");
    let e = err(&[
        ("host", "h"),
        date,
        ("Authorization", &a),
        ("authorization", &a),
    ]);
    assert_eq!(e.code(), "IncompleteSignatureException");
}

#[test]
fn presigned_errors() {
    let base = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261123%2Fus-east-1%2Fkms%2Faws4_request&X-Amz-Date=20261123T103000Z&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
    let q = |extra: &str| format!("{base}{extra}");
    let h = [("host", "h")];

    let e = run("GET", Some(base), &h, b"", &policy()).unwrap_err();
    assert_eq!(e.code(), "IncompleteSignatureException");
    assert!(
        e.message()
            .starts_with("AWS query-string parameters must include")
    );

    let e = run("GET", Some(&q("&X-Amz-Expires=604801")), &h, b"", &policy()).unwrap_err();
    assert_eq!(
        e.message(),
        "X-Amz-Expires must be less than a week (in seconds) that is 604800"
    );

    let e = run("GET", Some(&q("&X-Amz-Expires=-1")), &h, b"", &policy()).unwrap_err();
    assert_eq!(e.message(), "X-Amz-Expires should be a number");

    let e = run("GET", Some(&q("&X-Amz-Expires=60")), &h, b"", &policy()).unwrap_err();
    assert_eq!(e.code(), "InvalidSignatureException");
    assert_eq!(
        e.message(),
        "Signature expired: 20261123T103100Z is now earlier than 20261123T103500Z."
    );

    let e = run("GET", Some(&q("&X-Amz-Expires=600")), &h, b"", &policy()).unwrap_err();
    assert_eq!(e.message(), sluice_sigv4::error::SIGNATURE_MISMATCH_MESSAGE);

    let e = run(
        "GET",
        Some(&q("&X-Amz-Expires=600&X-Amz-Date=20261123T103000Z")),
        &h,
        b"",
        &policy(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "IncompleteSignatureException");

    let mut p = policy();
    p.allow_presigned = false;
    let e = run("GET", Some(&q("&X-Amz-Expires=600")), &h, b"", &p).unwrap_err();
    assert_eq!(e.code(), "MissingAuthenticationTokenException");
}

#[test]
fn date_header_instead_of_x_amz_date() {
    let mut headers: Vec<(&'static str, String)> = vec![
        ("Host", "kms.us-east-1.amazonaws.com".to_owned()),
        ("Date", "Mon, 23 Nov 2026 10:34:00 GMT".to_owned()),
        ("X-Amz-Target", "TrentService.ListKeys".to_owned()),
    ];
    let body = b"{}";
    let hash = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body));
    self_signed(
        "20261123T103400Z",
        &mut headers,
        "date;host;x-amz-target",
        &hash,
    );
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let v = run("POST", None, &refs, body, &policy()).unwrap();
    assert_eq!(v.principal, "alice");
    assert_eq!(v.signed_at, datetime!(2026-11-23 10:34:00 UTC));
    assert_eq!(v.location, AuthLocation::Header);
    assert!(v.is_signed("X-Amz-Target"));
    assert!(!v.is_signed("content-type"));
    // The body is covered.
    assert!(run("POST", None, &refs, b"{ }", &policy()).is_err());
}

#[test]
fn unsigned_payload_when_allowed() {
    let mut headers: Vec<(&'static str, String)> = vec![
        ("host", "h".to_owned()),
        ("x-amz-date", "20261123T103500Z".to_owned()),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD".to_owned()),
    ];
    self_signed(
        "20261123T103500Z",
        &mut headers,
        "host;x-amz-content-sha256;x-amz-date",
        "UNSIGNED-PAYLOAD",
    );
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut p = policy();
    assert!(run("POST", None, &refs, b"anything", &p).is_err());
    p.allow_unsigned_payload = true;
    let v = run("POST", None, &refs, b"anything", &p).unwrap();
    assert!(v.unsigned_payload);
}

#[test]
fn credential_debug_is_redacted() {
    let c = Credential::new("very-secret", 1u8);
    let s = format!("{c:?}");
    assert!(!s.contains("very-secret"));
}
