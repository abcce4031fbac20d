//! Differential test against the official signer (`aws-sigv4`): requests generated with
//! proptest (methods, paths with odd characters and dot segments, repeated and oddly encoded query
//! parameters, headers with odd spacing and case, bodies, services, regions, dates, session
//! tokens, payload modes, header and presigned forms) are signed by aws-sigv4 and must verify
//! with ours; then each signed element is changed in turn (body, a signed header, the query, the
//! date, the secret, the path, the method, the signature) and ours must reject every change.

use std::borrow::Cow;
use std::time::{Duration as StdDuration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use proptest::prelude::*;
use sluice_sigv4::{
    AuthLocation, Credential, CredentialError, HttpRequestParts, SigV4Error, Verified, Verifier,
    VerifyPolicy, header_pairs, verify,
};
use time::{Duration, OffsetDateTime};

const AKID: &str = "AKIAEXAMPLEDIFF1234";
const TOKEN: &str = "FQoGZXIvYXdzEXAMPLE//+/token==";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PayloadMode {
    /// SHA-256 of the body, no header.
    Hashed,
    /// SHA-256 of the body in `x-amz-content-sha256`.
    HashedWithHeader,
    /// `UNSIGNED-PAYLOAD` (header form: with the header).
    Unsigned,
}

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    host: &'static str,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    service: &'static str,
    region: &'static str,
    secret: String,
    token: bool,
    signed_at: i64,
    now_offset: i64,
    presigned: bool,
    expires: u64,
    payload: PayloadMode,
}

fn path_segment() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        "[A-Za-z0-9._~-]{1,5}",
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just(String::new()),
        Just("%20".to_owned()),
        Just("%2F".to_owned()),
        Just("%25".to_owned()),
        Just("%2E".to_owned()),
        Just("%C3%BC".to_owned()),
        Just("a+b".to_owned()),
        Just("!$&'()*,;=:@".to_owned()),
        Just("...".to_owned()),
    ];
    prop::collection::vec(token, 1..3).prop_map(|t| t.concat())
}

fn path() -> impl Strategy<Value = String> {
    (prop::collection::vec(path_segment(), 0..5), any::<bool>()).prop_map(|(segs, trailing)| {
        let mut p = String::new();
        for s in &segs {
            p.push('/');
            p.push_str(s);
        }
        if trailing || p.is_empty() {
            p.push('/');
        }
        p
    })
}

fn query_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._~-]{0,4}",
        Just("%20".to_owned()),
        Just("+".to_owned()),
        Just("%2B".to_owned()),
        Just("%2b".to_owned()),
        Just("%E2%82%AC".to_owned()),
        Just("%zz".to_owned()),
        // A lone `%` not followed by two hex digits (`%Ac...` would decode to a non-UTF-8 byte,
        // which aws-sigv4 replaces by U+FFFD and sluice keeps bytewise; see the crate docs).
        Just("%g".to_owned()),
        Just("%41".to_owned()),
        Just("a/b".to_owned()),
        Just("!$'()*,;:@?".to_owned()),
        Just("Action".to_owned()),
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    let param = (
        prop::collection::vec(query_part(), 0..3),
        prop::option::of(prop::collection::vec(
            prop_oneof![query_part(), Just("=".to_owned())],
            0..3,
        )),
    )
        .prop_map(|(name, value)| {
            let mut p = name.concat();
            if let Some(v) = value {
                p.push('=');
                p.push_str(&v.concat());
            }
            p
        });
    prop::option::of(
        prop::collection::vec(prop_oneof![4 => param, 1 => Just(String::new())], 0..6)
            .prop_map(|ps| ps.join("&")),
    )
}

fn header_value() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[A-Za-z0-9]{1,4}",
            " {1,3}",
            Just("\t".to_owned()),
            Just("/.:=;,".to_owned()),
            Just("application/x-amz-json-1.1".to_owned()),
        ],
        0..6,
    )
    .prop_map(|v| v.concat())
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("x-amz-target"),
        Just("content-type"),
        Just("X-Custom-Header"),
        Just("x-custom-header"),
        Just("X-AMZ-Meta-Odd"),
        Just("user-agent"),
        Just("x-amz-user-agent"),
        Just("content-length"),
    ];
    prop::collection::vec((name, header_value()), 0..6)
        .prop_map(|hs| hs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
}

fn case() -> impl Strategy<Value = Case> {
    let request = (
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("PUT"),
            Just("DELETE"),
            Just("PATCH")
        ],
        prop_oneof![
            Just("example.amazonaws.com"),
            Just("localhost:4566"),
            Just("127.0.0.1:8080")
        ],
        path(),
        query(),
        headers(),
        prop::collection::vec(any::<u8>(), 0..64),
    );
    let signing = (
        prop_oneof![
            Just("kms"),
            Just("secretsmanager"),
            Just("events"),
            Just("firehose"),
            Just("iam"),
            Just("sts")
        ],
        prop_oneof![Just("us-east-1"), Just("eu-west-1"), Just("ap-southeast-2")],
        "[A-Za-z0-9/+]{40}",
        any::<bool>(),
        // 2020-01-01 .. 2030-01-01
        1_577_836_800i64..1_893_456_000i64,
        -890i64..890,
        any::<bool>(),
        1u64..604_800,
        prop_oneof![
            Just(PayloadMode::Hashed),
            Just(PayloadMode::HashedWithHeader),
            Just(PayloadMode::Unsigned)
        ],
    );
    (request, signing).prop_map(
        |(
            (method, host, path, query, headers, body),
            (service, region, secret, token, signed_at, now_offset, presigned, expires, payload),
        )| Case {
            method,
            host,
            path,
            query,
            headers,
            body,
            service,
            region,
            secret,
            token,
            signed_at,
            now_offset,
            presigned,
            expires,
            payload,
        },
    )
}

/// A request as the server receives it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// Signs `case` with aws-sigv4 and returns the request as sent.
fn sign_case(case: &Case) -> Received {
    let mut uri = format!("http://{}{}", case.host, case.path);
    if let Some(q) = &case.query {
        uri.push('?');
        uri.push_str(q);
    }
    let mut builder = http::Request::builder()
        .method(case.method)
        .uri(&uri)
        .header("host", case.host);
    for (n, v) in &case.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    let mut request = builder.body(()).expect("valid request");

    let identity: Identity = Credentials::new(
        AKID,
        case.secret.clone(),
        case.token.then(|| TOKEN.to_owned()),
        None,
        "differential",
    )
    .into();
    let mut settings = SigningSettings::default();
    if case.presigned {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(StdDuration::from_secs(case.expires));
    }
    if case.payload == PayloadMode::HashedWithHeader
        || (case.payload == PayloadMode::Unsigned && !case.presigned)
    {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let time = SystemTime::UNIX_EPOCH + StdDuration::from_secs(case.signed_at as u64);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(case.region)
        .name(case.service)
        .time(time)
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let body = match case.payload {
        PayloadMode::Unsigned => SignableBody::UnsignedPayload,
        _ => SignableBody::Bytes(&case.body),
    };
    let header_strs: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii header")))
        .collect();
    let signable = SignableRequest::new(
        case.method,
        Cow::Borrowed(uri.as_str()),
        header_strs.into_iter(),
        body,
    )
    .expect("signable");
    let (instructions, _signature) = sign(signable, &params).expect("sign").into_parts();
    instructions.apply_to_request_http1x(&mut request);

    Received {
        method: case.method.to_owned(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
        headers: header_pairs(request.headers())
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect(),
        body: case.body.clone(),
    }
}

fn policy(case: &Case) -> VerifyPolicy {
    let mut p = VerifyPolicy::new(case.region, &[case.service]);
    p.allow_unsigned_payload = case.payload == PayloadMode::Unsigned;
    p
}

fn now(case: &Case) -> OffsetDateTime {
    let signed = OffsetDateTime::from_unix_timestamp(case.signed_at).expect("time");
    if case.presigned {
        // Anywhere inside the validity window.
        signed
            + Duration::seconds(case.now_offset.unsigned_abs() as i64 % (case.expires as i64 + 1))
    } else {
        signed + Duration::seconds(case.now_offset)
    }
}

fn run(
    case: &Case,
    rx: &Received,
    secret: &str,
    verifier: Option<&Verifier>,
) -> Result<Verified<u32>, SigV4Error> {
    let headers: Vec<(&str, &[u8])> = rx
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let parts = HttpRequestParts {
        method: &rx.method,
        path: &rx.path,
        query: rx.query.as_deref(),
        headers: &headers,
    };
    let expect_token = case.token;
    let lookup = |akid: &str, token: Option<&str>| -> Result<Credential<u32>, CredentialError> {
        if akid != AKID {
            return Err(CredentialError::UnknownAccessKey);
        }
        if token.is_some() != expect_token || token.is_some_and(|t| t != TOKEN) {
            return Err(CredentialError::InvalidSessionToken);
        }
        Ok(Credential::new(secret, 7))
    };
    match verifier {
        Some(v) => v.verify(&parts, &rx.body, now(case), &lookup),
        None => verify(&parts, &rx.body, now(case), &policy(case), &lookup),
    }
}

fn signed_header_names(rx: &Received) -> Vec<String> {
    let v = run_signed_headers(rx);
    v.split(';').map(str::to_owned).collect()
}

fn run_signed_headers(rx: &Received) -> String {
    if let Some((_, auth)) = rx
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
    {
        let auth = String::from_utf8(auth.clone()).unwrap();
        let start = auth.find("SignedHeaders=").unwrap() + "SignedHeaders=".len();
        let end = auth[start..].find(',').map_or(auth.len(), |e| start + e);
        auth[start..end].to_owned()
    } else {
        let q = rx.query.as_deref().unwrap();
        let p = q
            .split('&')
            .find_map(|p| p.strip_prefix("X-Amz-SignedHeaders="))
            .unwrap();
        p.replace("%3B", ";")
    }
}

fn flip_char(s: &mut String) {
    let last = s.pop().unwrap_or('a');
    s.push(if last == 'a' { 'b' } else { 'a' });
}

/// Applies mutation `which` (0..8) to a signed request; `None` if it does not apply.
fn mutate(case: &Case, rx: &Received, which: u8, pick: usize) -> Option<(Received, String)> {
    let mut m = rx.clone();
    let mut secret = case.secret.clone();
    match which {
        0 => {
            if case.payload == PayloadMode::Unsigned {
                return None;
            }
            m.body.push(pick as u8);
        }
        1 => {
            let signed = signed_header_names(rx);
            let candidates: Vec<usize> = m
                .headers
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| signed.iter().any(|s| s.eq_ignore_ascii_case(n)))
                .map(|(i, _)| i)
                .collect();
            let i = candidates[pick % candidates.len()];
            m.headers[i].1.push(b'x');
        }
        2 => {
            let q = m.query.get_or_insert_with(String::new);
            let user_params: Vec<&str> = q
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("X-Amz-"))
                .collect();
            if user_params.is_empty() || pick.is_multiple_of(2) {
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str("zz=1");
            } else {
                // Change the value of the first non-auth parameter.
                let first = user_params[pick % user_params.len()].to_owned();
                let changed = format!("{first}Q");
                *q = q.replacen(&first, &changed, 1);
                if *q == rx.query.clone().unwrap_or_default() {
                    return None;
                }
            }
        }
        3 => {
            let bump = |d: &str| -> String {
                let t = OffsetDateTime::parse(
                    d,
                    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
                );
                let t = match t {
                    Ok(t) => t,
                    Err(_) => time::PrimitiveDateTime::parse(
                        d,
                        time::macros::format_description!(
                            "[year][month][day]T[hour][minute][second]Z"
                        ),
                    )
                    .unwrap()
                    .assume_utc(),
                };
                let t = t + Duration::seconds(1);
                format!(
                    "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            };
            if case.presigned {
                let q = m.query.as_mut().unwrap();
                let start = q.find("X-Amz-Date=").unwrap() + "X-Amz-Date=".len();
                let new = bump(&q[start..start + 16]);
                q.replace_range(start..start + 16, &new);
            } else {
                let h = m
                    .headers
                    .iter_mut()
                    .find(|(n, _)| n.eq_ignore_ascii_case("x-amz-date"))
                    .unwrap();
                h.1 = bump(std::str::from_utf8(&h.1).unwrap()).into_bytes();
            }
        }
        4 => flip_char(&mut secret),
        5 => m.path.push('x'),
        6 => {
            m.method = if m.method == "POST" { "PUT" } else { "POST" }.to_owned();
        }
        _ => {
            if case.presigned {
                let q = m.query.as_mut().unwrap();
                let start = q.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
                let c = &q[start + 10..start + 11];
                let new = if c == "0" { "1" } else { "0" };
                q.replace_range(start + 10..start + 11, new);
            } else {
                let h = m
                    .headers
                    .iter_mut()
                    .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                    .unwrap();
                let last = h.1.len() - 1;
                h.1[last] = if h.1[last] == b'0' { b'1' } else { b'0' };
            }
        }
    }
    Some((m, secret))
}

proptest! {
    // SIGV4_DIFF_CASES=20000 for a deeper run; 256 keeps `cargo test` fast.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("SIGV4_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn signed_by_aws_sigv4_verifies_and_every_mutation_is_rejected(
        case in case(),
        pick in 0usize..1000,
    ) {
        let rx = sign_case(&case);
        let verifier = Verifier::new(policy(&case));
        let ok = run(&case, &rx, &case.secret, None);
        let v = match ok {
            Ok(v) => v,
            Err(e) => {
                return Err(TestCaseError::fail(format!("rejected {rx:?}: {e}")));
            }
        };
        prop_assert_eq!(v.access_key_id.as_str(), AKID);
        prop_assert_eq!(v.service.as_str(), case.service);
        prop_assert_eq!(v.region.as_str(), case.region);
        prop_assert_eq!(v.principal, 7);
        prop_assert_eq!(v.session_token.is_some(), case.token);
        prop_assert_eq!(
            v.location,
            if case.presigned { AuthLocation::Query } else { AuthLocation::Header }
        );
        prop_assert_eq!(v.unsigned_payload, case.payload == PayloadMode::Unsigned);
        // Cached path: twice (derive, then hit).
        prop_assert!(run(&case, &rx, &case.secret, Some(&verifier)).is_ok());
        prop_assert!(run(&case, &rx, &case.secret, Some(&verifier)).is_ok());

        for which in 0..8u8 {
            let Some((m, secret)) = mutate(&case, &rx, which, pick) else { continue };
            let r = run(&case, &m, &secret, None);
            prop_assert!(r.is_err(), "mutation {} accepted: {:?}", which, m);
            // The cached verifier must reject too (a rotated secret must not hit a stale key).
            let r = run(&case, &m, &secret, Some(&verifier));
            prop_assert!(r.is_err(), "mutation {} accepted by the cached verifier", which);
        }
        // With an unsigned payload the body is deliberately not covered.
        if case.payload == PayloadMode::Unsigned {
            let mut m = rx.clone();
            m.body.push(1);
            prop_assert!(run(&case, &m, &case.secret, None).is_ok());
        }
    }

    #[test]
    fn wrong_region_service_or_time_is_rejected(case in case()) {
        let rx = sign_case(&case);
        let headers: Vec<(&str, &[u8])> =
            rx.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let parts = HttpRequestParts {
            method: &rx.method,
            path: &rx.path,
            query: rx.query.as_deref(),
            headers: &headers,
        };
        let secret = case.secret.clone();
        let lookup = move |_: &str, _: Option<&str>| -> Result<Credential<()>, CredentialError> {
            Ok(Credential::new(secret.clone(), ()))
        };
        let mut p = policy(&case);
        p.region = "xx-nowhere-1".to_owned();
        p.global_services.clear();
        let e = verify(&parts, &rx.body, now(&case), &p, &lookup).unwrap_err();
        prop_assert_eq!(e.code(), "InvalidSignatureException");
        prop_assert!(e.message().starts_with("Credential should be scoped to a valid region"));

        let mut p = policy(&case);
        p.allowed_services = vec!["nothing".to_owned()];
        let e = verify(&parts, &rx.body, now(&case), &p, &lookup).unwrap_err();
        prop_assert_eq!(e.message(), "Credential should be scoped to correct service: 'nothing'. ");

        let late = OffsetDateTime::from_unix_timestamp(case.signed_at).unwrap()
            + if case.presigned {
                Duration::seconds(case.expires as i64 + 1)
            } else {
                Duration::minutes(15) + Duration::seconds(1)
            };
        let e = verify(&parts, &rx.body, late, &policy(&case), &lookup).unwrap_err();
        prop_assert_eq!(e.code(), "InvalidSignatureException");
        prop_assert!(e.message().starts_with("Signature expired: "), "{}", e.message());

        let early = OffsetDateTime::from_unix_timestamp(case.signed_at).unwrap()
            - Duration::minutes(15) - Duration::seconds(1);
        let e = verify(&parts, &rx.body, early, &policy(&case), &lookup).unwrap_err();
        prop_assert!(e.message().starts_with("Signature not yet current: "), "{}", e.message());
    }
}
