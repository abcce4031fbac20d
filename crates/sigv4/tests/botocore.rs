//! Known-answer requests signed by botocore 1.44.5 (the signer of the aws CLI v1 and boto3),
//! generated once with `botocore.auth.SigV4Auth` / `SigV4QueryAuth` and recorded here, with the
//! `Host` header the HTTP client adds. They must verify (with the default policy: botocore
//! presigns non-S3 requests over the body's hash, not `UNSIGNED-PAYLOAD`), and a changed body or
//! signature must fail.

use sluice_sigv4::{
    AuthLocation, Credential, CredentialError, HttpRequestParts, VerifyPolicy, verify,
};
use time::{Duration, OffsetDateTime};

const SECRET: &str = "botocoreSecretKeyExample/0123456789+abcdEF";

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    body_hex: &'static str,
    service: &'static str,
    region: &'static str,
    token: Option<&'static str>,
    presigned: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "kms-generate-data-key",
        method: "POST",
        path: r#"/"#,
        query: None,
        headers: &[
            (r#"Content-Type"#, r#"application/x-amz-json-1.1"#),
            (r#"X-Amz-Target"#, r#"TrentService.GenerateDataKey"#),
            (r#"X-Amz-Date"#, r#"20261123T111659Z"#),
            (
                r#"Authorization"#,
                r#"AWS4-HMAC-SHA256 Credential=AKIABOTOCOREEXAMPLE/20261123/us-east-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=9f39da572ea83ad45deda7d7af1ffa76c6e600192ff848c79a7f4117628ac475"#,
            ),
            (r#"Content-Length"#, r#"44"#),
            (r#"Host"#, r#"kms.us-east-1.amazonaws.com"#),
        ],
        body_hex: "7b224b65794964223a2022616c6961732f617070222c20224b657953706563223a20224145535f323536227d",
        service: "kms",
        region: "us-east-1",
        token: None,
        presigned: false,
    },
    Case {
        name: "secretsmanager-session-token",
        method: "POST",
        path: r#"/"#,
        query: None,
        headers: &[
            (r#"Content-Type"#, r#"application/x-amz-json-1.1"#),
            (r#"X-Amz-Target"#, r#"secretsmanager.GetSecretValue"#),
            (r#"X-Amz-Date"#, r#"20261123T111659Z"#),
            (
                r#"X-Amz-Security-Token"#,
                r#"FwoGZXIvYXdzEBotoCoRe//token+/=="#,
            ),
            (
                r#"Authorization"#,
                r#"AWS4-HMAC-SHA256 Credential=ASIABOTOCOREEXAMPLE/20261123/eu-west-1/secretsmanager/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=a88de54ebdb94fb528a608ef4d814728b2efb977e68d98c0d7a629aa3fa6baeb"#,
            ),
            (r#"Content-Length"#, r#"27"#),
            (r#"Host"#, r#"secretsmanager.eu-west-1.amazonaws.com"#),
        ],
        body_hex: "7b225365637265744964223a202264622f70617373776f7264227d",
        service: "secretsmanager",
        region: "eu-west-1",
        token: Some(r#"FwoGZXIvYXdzEBotoCoRe//token+/=="#),
        presigned: false,
    },
    Case {
        name: "events-empty-body",
        method: "POST",
        path: r#"/"#,
        query: None,
        headers: &[
            (r#"Content-Type"#, r#"application/x-amz-json-1.1"#),
            (r#"X-Amz-Target"#, r#"AWSEvents.ListRules"#),
            (r#"X-Amz-Date"#, r#"20261123T111659Z"#),
            (
                r#"Authorization"#,
                r#"AWS4-HMAC-SHA256 Credential=AKIABOTOCOREEXAMPLE/20261123/us-east-1/events/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=f674da8dd59a66f747dc115c49384d2141b1f5db1a4d01a414d8af5c83001733"#,
            ),
            (r#"Content-Length"#, r#"2"#),
            (r#"Host"#, r#"127.0.0.1:4566"#),
        ],
        body_hex: "7b7d",
        service: "events",
        region: "us-east-1",
        token: None,
        presigned: false,
    },
    Case {
        name: "iam-query-form-body",
        method: "POST",
        path: r#"/"#,
        query: None,
        headers: &[
            (
                r#"Content-Type"#,
                r#"application/x-www-form-urlencoded; charset=utf-8"#,
            ),
            (r#"X-Amz-Date"#, r#"20261123T111659Z"#),
            (
                r#"Authorization"#,
                r#"AWS4-HMAC-SHA256 Credential=AKIABOTOCOREEXAMPLE/20261123/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=364a237202cb70ad9dd52b78c57c8a72127ae237b0ec25a6bed6715722cb0939"#,
            ),
            (r#"Content-Length"#, r#"35"#),
            (r#"Host"#, r#"iam.amazonaws.com"#),
        ],
        body_hex: "416374696f6e3d4c69737455736572732656657273696f6e3d323031302d30352d3038",
        service: "iam",
        region: "us-east-1",
        token: None,
        presigned: false,
    },
    Case {
        name: "sts-get-query",
        method: "GET",
        path: r#"/"#,
        query: Some(r#"Action=GetCallerIdentity&Version=2011-06-15"#),
        headers: &[
            (r#"X-Amz-Date"#, r#"20261123T111659Z"#),
            (
                r#"Authorization"#,
                r#"AWS4-HMAC-SHA256 Credential=AKIABOTOCOREEXAMPLE/20261123/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=6aa8082831e942e17d93cb7e9b49aab7944cd9e90c994c4841b5d25b1895274a"#,
            ),
            (r#"Host"#, r#"sts.amazonaws.com"#),
        ],
        body_hex: "",
        service: "sts",
        region: "us-east-1",
        token: None,
        presigned: false,
    },
    Case {
        name: "odd-path-and-query",
        method: "GET",
        path: r#"/foo/bar%20baz/./x/../%2F/~a"#,
        query: Some(r#"b=%2B&a=2&a=1&c=&d=%E2%82%AC&e=a%20b"#),
        headers: &[
            (r#"X-Amz-Date"#, r#"20261123T111659Z"#),
            (
                r#"Authorization"#,
                r#"AWS4-HMAC-SHA256 Credential=AKIABOTOCOREEXAMPLE/20261123/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=98b7bbd75863edda84d559b09875519896b29e7af8ccad3f3ae548983f053ae9"#,
            ),
            (r#"Host"#, r#"localhost:4566"#),
        ],
        body_hex: "",
        service: "kms",
        region: "us-east-1",
        token: None,
        presigned: false,
    },
    Case {
        name: "spaces-in-header",
        method: "POST",
        path: r#"/"#,
        query: None,
        headers: &[
            (r#"Content-Type"#, r#"application/x-amz-json-1.1"#),
            (r#"X-Amz-Target"#, r#"TrentService.ListKeys"#),
            (r#"X-Custom"#, r#"  a   b  c  "#),
            (r#"X-Amz-Date"#, r#"20261123T111659Z"#),
            (
                r#"Authorization"#,
                r#"AWS4-HMAC-SHA256 Credential=AKIABOTOCOREEXAMPLE/20261123/us-east-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target;x-custom, Signature=1da588d674c6aa0bc29111b38ca91413cfe50b900244793ff8605b605c16506b"#,
            ),
            (r#"Content-Length"#, r#"13"#),
            (r#"Host"#, r#"kms.us-east-1.amazonaws.com"#),
        ],
        body_hex: "7b224c696d6974223a2031307d",
        service: "kms",
        region: "us-east-1",
        token: None,
        presigned: false,
    },
    Case {
        name: "presigned-sts",
        method: "GET",
        path: r#"/"#,
        query: Some(
            r#"Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIABOTOCOREEXAMPLE%2F20261123%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20261123T111659Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=cbb878bcd5bd0efab1c50c2939b6399b2c15fee1cae4ceaf91a086826b369e48"#,
        ),
        headers: &[
            (r#"x-k8s-aws-id"#, r#"my-cluster"#),
            (r#"Host"#, r#"sts.amazonaws.com"#),
        ],
        body_hex: "",
        service: "sts",
        region: "us-east-1",
        token: None,
        presigned: true,
    },
    Case {
        name: "presigned-with-token",
        method: "GET",
        path: r#"/some/path"#,
        query: Some(
            r#"x=1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIABOTOCOREEXAMPLE%2F20261123%2Fus-east-1%2Fkms%2Faws4_request&X-Amz-Date=20261123T111659Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdzEBotoCoRe%2F%2Ftoken%2B%2F%3D%3D&X-Amz-Signature=26cc3328e1c4df1b6607fe46e88440b8721f66ab780605cc33028ac5351261b3"#,
        ),
        headers: &[(r#"Host"#, r#"localhost:4566"#)],
        body_hex: "",
        service: "kms",
        region: "us-east-1",
        token: Some(r#"FwoGZXIvYXdzEBotoCoRe//token+/=="#),
        presigned: true,
    },
];

fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn signed_at(case: &Case) -> OffsetDateTime {
    let date = case
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amz-date"))
        .map(|(_, v)| *v)
        .or_else(|| {
            case.query
                .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("X-Amz-Date=")))
        })
        .unwrap();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(date, fmt)
        .unwrap()
        .assume_utc()
}

fn run(
    case: &Case,
    headers: &[(&str, &[u8])],
    query: Option<&str>,
    body: &[u8],
    unsigned_ok: bool,
) -> Result<sluice_sigv4::Verified<()>, sluice_sigv4::SigV4Error> {
    let parts = HttpRequestParts {
        method: case.method,
        path: case.path,
        query,
        headers,
    };
    let mut policy = VerifyPolicy::new(case.region, &[case.service]);
    policy.allow_unsigned_payload = unsigned_ok;
    let token = case.token;
    let lookup = move |akid: &str, t: Option<&str>| -> Result<Credential<()>, CredentialError> {
        if !akid.ends_with("BOTOCOREEXAMPLE") {
            return Err(CredentialError::UnknownAccessKey);
        }
        if t != token {
            return Err(CredentialError::InvalidSessionToken);
        }
        Ok(Credential::new(SECRET, ()))
    };
    verify(
        &parts,
        body,
        signed_at(case) + Duration::seconds(30),
        &policy,
        &lookup,
    )
}

#[test]
fn botocore_signed_requests_verify() {
    assert_eq!(CASES.len(), 9);
    for case in CASES {
        let headers: Vec<(&str, &[u8])> = case
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_bytes()))
            .collect();
        let body = decode_hex(case.body_hex);
        let v = run(case, &headers, case.query, &body, false)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(v.service, case.service);
        assert_eq!(v.session_token.as_deref(), case.token);
        assert_eq!(
            v.location == AuthLocation::Query,
            case.presigned,
            "{}",
            case.name
        );
        assert!(!v.unsigned_payload, "{}", case.name);

        if case.presigned {
            let q = case.query.unwrap();
            let flipped = match q.strip_suffix('0') {
                Some(rest) => format!("{rest}1"),
                None => format!("{}0", &q[..q.len() - 1]),
            };
            assert!(
                run(case, &headers, Some(&flipped), &body, true).is_err(),
                "{}",
                case.name
            );
        } else {
            let mut changed = body.clone();
            changed.push(b' ');
            assert!(
                run(case, &headers, case.query, &changed, false).is_err(),
                "{}",
                case.name
            );
        }
    }
}
