//! Request verification: parsing the authentication, scope and time checks, credential lookup,
//! and the signature comparison.

use std::collections::HashMap;

use aws_lc_rs::{digest, hmac};
use parking_lot::Mutex;
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::canonical::{
    QueryParam, canonical_query_into, canonical_uri_into, decode_component, format_amz_date, hex32,
    parse_amz_date, parse_http_date, parse_query, trim_all_into,
};
use crate::error::{ErrorKind, SigV4Error};

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The `x-amz-content-sha256` value that opts out of payload signing.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The largest `X-Amz-Expires` AWS allows (one week).
pub const MAX_PRESIGN_EXPIRES: u64 = 604_800;

/// The parts of an HTTP request the verifier reads.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequestParts<'a> {
    /// The method as received (`POST`); used verbatim.
    pub method: &'a str,
    /// The raw path as received, still percent-encoded (`/`, `/a%20b`).
    pub path: &'a str,
    /// The raw query string as received, without the `?`; `None` or `Some("")` when absent.
    pub query: Option<&'a str>,
    /// All headers in the order received; names in any case, values as raw bytes. A header sent
    /// several times appears several times.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Borrows the headers of an [`http::HeaderMap`] in the form [`HttpRequestParts::headers`]
/// wants (repeated headers stay separate, in the order received).
pub fn header_pairs(map: &http::HeaderMap) -> Vec<(&str, &[u8])> {
    map.iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect()
}

/// What the server accepts.
#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    /// The region this server serves; the credential scope must name it.
    pub region: String,
    /// Services whose requests are also accepted when scoped to `us-east-1` whatever `region`
    /// is (global endpoints: IAM always signs in us-east-1, STS's global endpoint too).
    pub global_services: Vec<String>,
    /// Signing names accepted in the credential scope (`kms`, `secretsmanager`, `events`,
    /// `firehose`, `iam`, `sts`). Empty accepts any name; the server must then match
    /// [`Verified::service`] itself (it should anyway, against `X-Amz-Target` or the endpoint).
    pub allowed_services: Vec<String>,
    /// Largest allowed difference between the request's timestamp and `now`.
    pub max_skew: Duration,
    /// Accept `x-amz-content-sha256: UNSIGNED-PAYLOAD` (the body is then not covered by the
    /// signature), and presigned URLs signed with `UNSIGNED-PAYLOAD` (S3-style presigners).
    pub allow_unsigned_payload: bool,
    /// Accept the presigned query form at all.
    pub allow_presigned: bool,
    /// Largest accepted `X-Amz-Expires` (at most [`MAX_PRESIGN_EXPIRES`]).
    pub max_presign_expires: u64,
    /// Header names (lower case) that must be in SignedHeaders besides `host`, e.g.
    /// `x-amz-target` so that a captured request cannot be replayed against another operation.
    pub required_signed_headers: Vec<String>,
}

impl VerifyPolicy {
    /// A policy for `region` and `services` with AWS's defaults: 15 minutes skew, no unsigned
    /// payloads, presigned URLs up to a week, `iam` and `sts` accepted in us-east-1.
    pub fn new(region: impl Into<String>, services: &[&str]) -> Self {
        VerifyPolicy {
            region: region.into(),
            global_services: vec!["iam".to_owned(), "sts".to_owned()],
            allowed_services: services.iter().map(|s| (*s).to_owned()).collect(),
            max_skew: Duration::minutes(15),
            allow_unsigned_payload: false,
            allow_presigned: true,
            max_presign_expires: MAX_PRESIGN_EXPIRES,
            required_signed_headers: Vec::new(),
        }
    }
}

/// A secret access key and the principal it authenticates, as returned by a
/// [`CredentialLookup`].
pub struct Credential<T> {
    /// The secret access key; zeroed on drop.
    pub secret_access_key: Zeroizing<String>,
    /// Whatever the server wants back on success (user, role session, account...).
    pub principal: T,
}

impl<T> Credential<T> {
    /// A credential from a secret and principal.
    pub fn new(secret_access_key: impl Into<String>, principal: T) -> Self {
        Credential {
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            principal,
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Credential<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("secret_access_key", &"** redacted **")
            .field("principal", &self.principal)
            .finish()
    }
}

/// Why a lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// No such access key id (→ `UnrecognizedClientException`).
    UnknownAccessKey,
    /// The session token is missing, unknown or does not belong to the key
    /// (→ `UnrecognizedClientException`).
    InvalidSessionToken,
    /// The session credentials have expired (→ `ExpiredTokenException`).
    ExpiredSessionToken,
}

/// Finds the secret for an access key id. `session_token` is the request's
/// `X-Amz-Security-Token` (header or query), which the lookup must validate for temporary (STS)
/// credentials and should reject when given for long-term keys.
pub trait CredentialLookup<T> {
    /// Looks up `access_key_id`.
    fn lookup(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
    ) -> Result<Credential<T>, CredentialError>;
}

impl<T, F> CredentialLookup<T> for F
where
    F: Fn(&str, Option<&str>) -> Result<Credential<T>, CredentialError>,
{
    fn lookup(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
    ) -> Result<Credential<T>, CredentialError> {
        self(access_key_id, session_token)
    }
}

/// Where the signature was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLocation {
    /// `Authorization` header.
    Header,
    /// Presigned URL (`X-Amz-Signature` query parameter).
    Query,
}

/// A successfully verified request.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    /// The access key id from the credential.
    pub access_key_id: String,
    /// The credential scope's region.
    pub region: String,
    /// The credential scope's service (signing name); match it against the operation.
    pub service: String,
    /// The `X-Amz-Security-Token`, if any (already checked by the lookup).
    pub session_token: Option<String>,
    /// The principal the lookup returned.
    pub principal: T,
    /// The request's signing time.
    pub signed_at: OffsetDateTime,
    /// Header or presigned URL.
    pub location: AuthLocation,
    /// The SignedHeaders list as the client sent it.
    pub signed_headers: Vec<String>,
    /// True when the body is not covered by the signature (`UNSIGNED-PAYLOAD`).
    pub unsigned_payload: bool,
}

impl<T> Verified<T> {
    /// Whether the client signed header `name` (case-insensitive).
    pub fn is_signed(&self, name: &str) -> bool {
        self.signed_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// The derived signing keys of recent (secret, date, region, service) combinations, so that a
/// verification costs one HMAC over the string to sign instead of five. Entries are keyed by
/// access key id, date, region and service and remember the secret they were derived from, which
/// is compared (in constant time) before an entry is used, so a rotated secret never matches a
/// stale key. Bounded: when full it is emptied (dates roll daily, so entries age out anyway).
pub struct SigningKeyCache {
    entries: Mutex<HashMap<String, CacheEntry>>,
    capacity: usize,
}

struct CacheEntry {
    secret: Zeroizing<Vec<u8>>,
    key: hmac::Key,
}

impl SigningKeyCache {
    /// A cache holding at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        SigningKeyCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_or_derive(&self, akid: &str, secret: &str, scope: &Scope<'_>) -> hmac::Key {
        let mut id = String::with_capacity(
            akid.len() + scope.date.len() + scope.region.len() + scope.service.len() + 3,
        );
        for part in [akid, scope.date, scope.region, scope.service] {
            id.push_str(part);
            id.push('\0');
        }
        {
            let entries = self.entries.lock();
            if let Some(e) = entries.get(&id)
                && bool::from(e.secret.as_slice().ct_eq(secret.as_bytes()))
            {
                return e.key.clone();
            }
        }
        let key = derive_signing_key(secret, scope.date, scope.region, scope.service);
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&id) {
            entries.clear();
        }
        entries.insert(
            id,
            CacheEntry {
                secret: Zeroizing::new(secret.as_bytes().to_vec()),
                key: key.clone(),
            },
        );
        key
    }
}

impl Default for SigningKeyCache {
    fn default() -> Self {
        SigningKeyCache::new(4096)
    }
}

/// Derives the SigV4 signing key: `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region),
/// service), "aws4_request")`.
pub fn derive_signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut k_secret = Zeroizing::new(Vec::with_capacity(secret.len() + 4));
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret.as_bytes());
    let mut k: Zeroizing<Vec<u8>> = k_secret;
    for part in [date, region, service, "aws4_request"] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k), part.as_bytes());
        k = Zeroizing::new(tag.as_ref().to_vec());
    }
    hmac::Key::new(hmac::HMAC_SHA256, &k)
}

/// Verifies requests against a fixed policy with a signing-key cache. Cheap to share
/// (`Arc<Verifier>`); all methods take `&self`.
pub struct Verifier {
    policy: VerifyPolicy,
    cache: SigningKeyCache,
}

impl Verifier {
    /// A verifier for `policy` with the default cache size.
    pub fn new(policy: VerifyPolicy) -> Self {
        Verifier {
            policy,
            cache: SigningKeyCache::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &VerifyPolicy {
        &self.policy
    }

    /// The signing-key cache.
    pub fn cache(&self) -> &SigningKeyCache {
        &self.cache
    }

    /// Verifies `req` with body `body` at time `now`; see [`verify`].
    pub fn verify<T>(
        &self,
        req: &HttpRequestParts<'_>,
        body: &[u8],
        now: OffsetDateTime,
        lookup: &dyn CredentialLookup<T>,
    ) -> Result<Verified<T>, SigV4Error> {
        verify_impl(req, body, now, &self.policy, lookup, Some(&self.cache))
    }
}

/// Verifies the SigV4 signature of `req` (header or presigned form) with body `body` at time
/// `now` under `policy`, looking the access key up with `lookup`. Derives the signing key every
/// time; [`Verifier`] caches it.
pub fn verify<T>(
    req: &HttpRequestParts<'_>,
    body: &[u8],
    now: OffsetDateTime,
    policy: &VerifyPolicy,
    lookup: &dyn CredentialLookup<T>,
) -> Result<Verified<T>, SigV4Error> {
    verify_impl(req, body, now, policy, lookup, None)
}

struct Scope<'a> {
    akid: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

/// The authentication values of either form, before any check.
struct AuthValues {
    location: AuthLocation,
    credential: String,
    signed_headers: String,
    signature: String,
    timestamp: OffsetDateTime,
    /// The date as the client sent it (for messages).
    date_text: String,
    session_token: Option<String>,
    expires: Option<u64>,
}

fn incomplete(msg: impl Into<String>) -> SigV4Error {
    SigV4Error::new(ErrorKind::IncompleteSignature, msg)
}

fn invalid(msg: impl Into<String>) -> SigV4Error {
    SigV4Error::new(ErrorKind::InvalidSignature, msg)
}

fn headers_named<'h>(
    headers: &'h [(&'h str, &'h [u8])],
    name: &'h str,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The single value of header `name`: `Ok(None)` if absent, an error if repeated or not UTF-8.
fn single_header<'h>(
    headers: &'h [(&'h str, &'h [u8])],
    name: &'static str,
) -> Result<Option<&'h str>, SigV4Error> {
    let mut it = headers_named(headers, name);
    let Some(first) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(incomplete(format!(
            "The request must not contain more than one '{name}' header."
        )));
    }
    std::str::from_utf8(first)
        .map(|s| Some(s.trim_matches(|c| c == ' ' || c == '\t')))
        .map_err(|_| incomplete(format!("The '{name}' header is not valid UTF-8.")))
}

fn date_format_error(value: &str) -> SigV4Error {
    incomplete(format!(
        "Date must be in ISO-8601 'basic format'. Got '{value}'. See http://en.wikipedia.org/wiki/ISO_8601"
    ))
}

const AUTH_QUERY_PARAMS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

fn parse_header_auth(value: &str, headers: &[(&str, &[u8])]) -> Result<AuthValues, SigV4Error> {
    let value_trimmed = value.trim();
    let (algorithm, rest) = value_trimmed
        .split_once([' ', '\t'])
        .unwrap_or((value_trimmed, ""));
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    if algorithm == ALGORITHM {
        for element in rest.split([',', ' ', '\t']).filter(|e| !e.is_empty()) {
            let Some((k, v)) = element.split_once('=') else {
                return Err(incomplete(format!(
                    "'{element}' not a valid key=value pair (missing equal-sign) in Authorization header: '{value}'."
                )));
            };
            let slot = match k {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => continue,
            };
            if slot.is_some() {
                return Err(incomplete(format!(
                    "Authorization header has more than one '{k}' parameter. Authorization={value}"
                )));
            }
            *slot = Some(v);
        }
    } else if algorithm.starts_with("AWS4-") {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'. Authorization={value}"
        )));
    }
    let amz_date = single_header(headers, "x-amz-date")?;
    let date_header = if amz_date.is_none() {
        single_header(headers, "date")?
    } else {
        None
    };
    let mut missing = String::new();
    for (name, v) in [
        ("Credential", credential.is_none()),
        ("Signature", signature.is_none()),
        ("SignedHeaders", signed_headers.is_none()),
    ] {
        if v {
            missing.push_str("Authorization header requires '");
            missing.push_str(name);
            missing.push_str("' parameter. ");
        }
    }
    if amz_date.is_none() && date_header.is_none() {
        missing.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
        );
    }
    if !missing.is_empty() {
        missing.push_str("Authorization=");
        missing.push_str(value);
        return Err(incomplete(missing));
    }
    let (timestamp, date_text) = match (amz_date, date_header) {
        (Some(d), _) => (parse_amz_date(d).ok_or_else(|| date_format_error(d))?, d),
        (None, Some(d)) => (parse_http_date(d).ok_or_else(|| date_format_error(d))?, d),
        (None, None) => return Err(SigV4Error::missing_authentication()),
    };
    let session_token = single_header(headers, "x-amz-security-token")?.map(str::to_owned);
    Ok(AuthValues {
        location: AuthLocation::Header,
        credential: credential.unwrap_or_default().to_owned(),
        signed_headers: signed_headers.unwrap_or_default().to_owned(),
        signature: signature.unwrap_or_default().to_owned(),
        timestamp,
        date_text: date_text.to_owned(),
        session_token,
        expires: None,
    })
}

fn parse_query_auth(params: &[QueryParam<'_>]) -> Result<AuthValues, SigV4Error> {
    let mut values: [Option<String>; 7] = Default::default();
    for p in params {
        if let Some(i) = AUTH_QUERY_PARAMS
            .iter()
            .position(|n| n.as_bytes() == p.enc_name.as_slice())
        {
            if values[i].is_some() {
                return Err(incomplete(format!(
                    "The query string must not contain more than one '{}' parameter.",
                    AUTH_QUERY_PARAMS[i]
                )));
            }
            let decoded = decode_component(p.raw_value.as_bytes());
            let s = String::from_utf8(decoded).map_err(|_| {
                incomplete(format!(
                    "The '{}' query parameter is not valid UTF-8.",
                    AUTH_QUERY_PARAMS[i]
                ))
            })?;
            values[i] = Some(s);
        }
    }
    let [
        algorithm,
        credential,
        date,
        expires,
        signed_headers,
        signature,
        token,
    ] = values;
    let (
        Some(algorithm),
        Some(credential),
        Some(date),
        Some(expires),
        Some(signed_headers),
        Some(signature),
    ) = (
        algorithm,
        credential,
        date,
        expires,
        signed_headers,
        signature,
    )
    else {
        return Err(incomplete(
            "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', and 'X-Amz-Expires'. Re-examine the query-string parameters.",
        ));
    };
    if algorithm != ALGORITHM {
        return Err(incomplete(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let timestamp = parse_amz_date(&date).ok_or_else(|| date_format_error(&date))?;
    let expires: u64 = if !expires.is_empty() && expires.bytes().all(|b| b.is_ascii_digit()) {
        expires.parse().map_err(|_| {
            incomplete("X-Amz-Expires must be less than a week (in seconds) that is 604800")
        })?
    } else {
        return Err(incomplete("X-Amz-Expires should be a number"));
    };
    Ok(AuthValues {
        location: AuthLocation::Query,
        credential,
        signed_headers,
        signature,
        timestamp,
        date_text: date,
        session_token: token,
        expires: Some(expires),
    })
}

fn parse_scope(credential: &str) -> Result<Scope<'_>, SigV4Error> {
    let mut parts = credential.split('/');
    let fields: [Option<&str>; 5] = std::array::from_fn(|_| parts.next());
    match (fields, parts.next()) {
        (
            [
                Some(akid),
                Some(date),
                Some(region),
                Some(service),
                Some(term),
            ],
            None,
        ) if !akid.is_empty() => {
            if term != "aws4_request" {
                return Err(invalid(format!(
                    "Credential should be scoped with a valid terminator: 'aws4_request', not '{term}'. "
                )));
            }
            Ok(Scope {
                akid,
                date,
                region,
                service,
            })
        }
        _ => Err(incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        ))),
    }
}

fn check_scope(
    scope: &Scope<'_>,
    amz_date: &str,
    date_text: &str,
    policy: &VerifyPolicy,
) -> Result<(), SigV4Error> {
    let day = &amz_date[..8];
    if scope.date != day {
        return Err(invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{day}', from '{date_text}'.",
            scope.date
        )));
    }
    let region_ok = scope.region == policy.region
        || (scope.region == "us-east-1"
            && policy.global_services.iter().any(|s| s == scope.service));
    if !region_ok {
        return Err(SigV4Error::wrong_region(scope.region));
    }
    if !policy.allowed_services.is_empty()
        && !policy.allowed_services.iter().any(|s| s == scope.service)
    {
        let expected = policy.allowed_services.first().map_or("", String::as_str);
        return Err(SigV4Error::wrong_service(expected));
    }
    Ok(())
}

fn minutes_text(d: Duration) -> String {
    let secs = d.whole_seconds();
    if secs % 60 == 0 {
        format!("{} min.", secs / 60)
    } else {
        format!("{secs} sec.")
    }
}

fn check_time(
    auth: &AuthValues,
    now: OffsetDateTime,
    policy: &VerifyPolicy,
) -> Result<(), SigV4Error> {
    let t = auth.timestamp;
    let skew = policy.max_skew;
    let now_text = || format_amz_date(now);
    if t > now.saturating_add(skew) {
        return Err(invalid(format!(
            "Signature not yet current: {} is still later than {} ({} + {})",
            format_amz_date(t),
            format_amz_date(now.saturating_add(skew)),
            now_text(),
            minutes_text(skew)
        )));
    }
    match auth.expires {
        None => {
            if t < now.saturating_sub(skew) {
                return Err(invalid(format!(
                    "Signature expired: {} is now earlier than {} ({} - {})",
                    format_amz_date(t),
                    format_amz_date(now.saturating_sub(skew)),
                    now_text(),
                    minutes_text(skew)
                )));
            }
        }
        Some(expires) => {
            if expires > policy.max_presign_expires.min(MAX_PRESIGN_EXPIRES) {
                return Err(incomplete(format!(
                    "X-Amz-Expires must be less than a week (in seconds) that is {}",
                    policy.max_presign_expires.min(MAX_PRESIGN_EXPIRES)
                )));
            }
            let expiry = t.saturating_add(Duration::seconds(
                i64::try_from(expires).unwrap_or(i64::MAX),
            ));
            if now > expiry {
                return Err(invalid(format!(
                    "Signature expired: {} is now earlier than {}.",
                    format_amz_date(expiry),
                    now_text()
                )));
            }
        }
    }
    Ok(())
}

/// How the payload line of the canonical request is obtained.
enum Payload {
    /// Hex digest (the body's, or the matching declared one).
    Hash([u8; 64]),
    /// `UNSIGNED-PAYLOAD`.
    Unsigned,
}

fn payload(
    headers: &[(&str, &[u8])],
    body: &[u8],
    policy: &VerifyPolicy,
) -> Result<Payload, SigV4Error> {
    let declared = single_header(headers, "x-amz-content-sha256")?;
    let body_hash = || hex32(digest::digest(&digest::SHA256, body).as_ref());
    match declared {
        None => Ok(Payload::Hash(body_hash())),
        Some(UNSIGNED_PAYLOAD) => {
            if policy.allow_unsigned_payload {
                Ok(Payload::Unsigned)
            } else {
                Err(invalid(
                    "UNSIGNED-PAYLOAD is not accepted by this endpoint; sign the request body.",
                ))
            }
        }
        Some(d) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let computed = body_hash();
            if d.as_bytes() == computed {
                Ok(Payload::Hash(computed))
            } else {
                Err(SigV4Error::new(
                    ErrorKind::ContentSha256Mismatch,
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ))
            }
        }
        Some(other) => Err(invalid(format!(
            "x-amz-content-sha256 value '{other}' is not supported by this endpoint."
        ))),
    }
}

/// Builds the canonical request (see the crate docs) into a byte vector.
fn canonical_request(
    req: &HttpRequestParts<'_>,
    params: &[QueryParam<'_>],
    signed_headers: &str,
    presigned: bool,
    payload_line: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b'\n');
    canonical_uri_into(&mut out, req.path);
    out.push(b'\n');
    canonical_query_into(&mut out, params, |p| {
        presigned && p.enc_name.as_slice() == b"X-Amz-Signature"
    });
    out.push(b'\n');
    for name in signed_headers.split(';') {
        for b in name.bytes() {
            out.push(b.to_ascii_lowercase());
        }
        out.push(b':');
        let mut first = true;
        for v in headers_named(req.headers, name) {
            if !first {
                out.push(b',');
            }
            first = false;
            trim_all_into(&mut out, v);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_line);
    out
}

/// The canonical request that [`verify`] computes for `req` (exact bytes; header values need not
/// be UTF-8). `signed_headers` is the SignedHeaders list, `presigned` leaves `X-Amz-Signature`
/// out of the query, `payload_hash` is the payload line (hex digest or `UNSIGNED-PAYLOAD`).
pub fn canonical_request_bytes(
    req: &HttpRequestParts<'_>,
    signed_headers: &str,
    presigned: bool,
    payload_hash: &str,
) -> Vec<u8> {
    let params = parse_query(req.query.unwrap_or(""));
    canonical_request(
        req,
        &params,
        signed_headers,
        presigned,
        payload_hash.as_bytes(),
    )
}

/// [`canonical_request_bytes`] as text (lossy for non-UTF-8 header values); for diagnostics
/// and tests.
pub fn canonical_request_string(
    req: &HttpRequestParts<'_>,
    signed_headers: &str,
    presigned: bool,
    payload_hash: &str,
) -> String {
    let bytes = canonical_request_bytes(req, signed_headers, presigned, payload_hash);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The string to sign for a canonical request.
fn string_to_sign(amz_date: &str, scope: &Scope<'_>, creq: &[u8]) -> Vec<u8> {
    let hash = hex32(digest::digest(&digest::SHA256, creq).as_ref());
    let mut s = Vec::with_capacity(160);
    s.extend_from_slice(ALGORITHM.as_bytes());
    s.push(b'\n');
    s.extend_from_slice(amz_date.as_bytes());
    s.push(b'\n');
    for part in [scope.date, scope.region, scope.service] {
        s.extend_from_slice(part.as_bytes());
        s.push(b'/');
    }
    s.extend_from_slice(b"aws4_request\n");
    s.extend_from_slice(&hash);
    s
}

fn verify_impl<T>(
    req: &HttpRequestParts<'_>,
    body: &[u8],
    now: OffsetDateTime,
    policy: &VerifyPolicy,
    lookup: &dyn CredentialLookup<T>,
    cache: Option<&SigningKeyCache>,
) -> Result<Verified<T>, SigV4Error> {
    let params = parse_query(req.query.unwrap_or(""));
    let has_query_auth = params.iter().any(|p| {
        matches!(
            p.enc_name.as_slice(),
            b"X-Amz-Algorithm" | b"X-Amz-Credential" | b"X-Amz-Signature"
        )
    });
    let mut auth_headers = headers_named(req.headers, "authorization");
    let auth_header = auth_headers.next();
    if auth_headers.next().is_some() {
        return Err(incomplete(
            "The request must not contain more than one 'Authorization' header.",
        ));
    }
    let auth = match (auth_header, has_query_auth) {
        (None, false) => return Err(SigV4Error::missing_authentication()),
        (Some(_), true) => {
            return Err(incomplete(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified",
            ));
        }
        (Some(h), false) => {
            let h = std::str::from_utf8(h)
                .map_err(|_| incomplete("The 'Authorization' header is not valid UTF-8."))?;
            parse_header_auth(h, req.headers)?
        }
        (None, true) => {
            if !policy.allow_presigned {
                return Err(SigV4Error::missing_authentication());
            }
            parse_query_auth(&params)?
        }
    };
    let presigned = auth.location == AuthLocation::Query;
    let scope = parse_scope(&auth.credential)?;
    let amz_date = format_amz_date(auth.timestamp);
    check_scope(&scope, &amz_date, &auth.date_text, policy)?;
    check_time(&auth, now, policy)?;

    let signed_list: Vec<&str> = auth.signed_headers.split(';').collect();
    if !signed_list.iter().any(|h| h.eq_ignore_ascii_case("host")) {
        return Err(incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    for required in &policy.required_signed_headers {
        if !signed_list.iter().any(|h| h.eq_ignore_ascii_case(required)) {
            return Err(incomplete(format!(
                "'{required}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }

    let credential = lookup
        .lookup(scope.akid, auth.session_token.as_deref())
        .map_err(|e| match e {
            CredentialError::UnknownAccessKey | CredentialError::InvalidSessionToken => {
                SigV4Error::unrecognized_client()
            }
            CredentialError::ExpiredSessionToken => SigV4Error::expired_token(),
        })?;

    let payload = payload(req.headers, body, policy)?;
    let key = match cache {
        Some(c) => c.get_or_derive(scope.akid, &credential.secret_access_key, &scope),
        None => derive_signing_key(
            &credential.secret_access_key,
            scope.date,
            scope.region,
            scope.service,
        ),
    };
    let matches = |payload_line: &[u8]| -> bool {
        let creq = canonical_request(req, &params, &auth.signed_headers, presigned, payload_line);
        let sts = string_to_sign(&amz_date, &scope, &creq);
        let expected = hex32(hmac::sign(&key, &sts).as_ref());
        bool::from(expected.as_slice().ct_eq(auth.signature.as_bytes()))
    };
    let mut unsigned_payload = false;
    let ok = match payload {
        Payload::Hash(h) => {
            if matches(&h) {
                true
            } else if presigned
                && policy.allow_unsigned_payload
                && single_header(req.headers, "x-amz-content-sha256")?.is_none()
                && matches(UNSIGNED_PAYLOAD.as_bytes())
            {
                unsigned_payload = true;
                true
            } else {
                false
            }
        }
        Payload::Unsigned => {
            unsigned_payload = true;
            matches(UNSIGNED_PAYLOAD.as_bytes())
        }
    };
    if !ok {
        return Err(SigV4Error::signature_mismatch());
    }
    Ok(Verified {
        access_key_id: scope.akid.to_owned(),
        region: scope.region.to_owned(),
        service: scope.service.to_owned(),
        session_token: auth.session_token.clone(),
        principal: credential.principal,
        signed_at: auth.timestamp,
        location: auth.location,
        signed_headers: signed_list.iter().map(|s| (*s).to_owned()).collect(),
        unsigned_payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope<'a>(date: &'a str) -> Scope<'a> {
        Scope {
            akid: "AKID",
            date,
            region: "us-east-1",
            service: "kms",
        }
    }

    fn sig(key: &hmac::Key) -> Vec<u8> {
        hmac::sign(key, b"string to sign").as_ref().to_vec()
    }

    #[test]
    fn verifier_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Verifier>();
        assert_send_sync::<SigningKeyCache>();
    }

    #[test]
    fn cache_matches_derivation_and_honours_rotation() {
        let cache = SigningKeyCache::new(2);
        let s = scope("20261123");
        let direct = derive_signing_key("secret-1", "20261123", "us-east-1", "kms");
        assert_eq!(
            sig(&cache.get_or_derive("AKID", "secret-1", &s)),
            sig(&direct)
        );
        assert_eq!(cache.len(), 1);
        // Hit.
        assert_eq!(
            sig(&cache.get_or_derive("AKID", "secret-1", &s)),
            sig(&direct)
        );
        assert_eq!(cache.len(), 1);
        // Same key id, rotated secret: must not reuse the stale key.
        let rotated = derive_signing_key("secret-2", "20261123", "us-east-1", "kms");
        assert_eq!(
            sig(&cache.get_or_derive("AKID", "secret-2", &s)),
            sig(&rotated)
        );
        assert_ne!(sig(&rotated), sig(&direct));
        assert_eq!(cache.len(), 1);
        // Bounded: a third distinct entry into a cache of two empties it first.
        cache.get_or_derive("AKID", "secret-2", &scope("20261124"));
        assert_eq!(cache.len(), 2);
        cache.get_or_derive("AKID", "secret-2", &scope("20261125"));
        assert_eq!(cache.len(), 1);
        assert!(!cache.is_empty());
    }

    #[test]
    fn signing_key_known_answer() {
        // AWS documentation example: secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20150830,
        // us-east-1, iam; string to sign from the "GET ListUsers" example.
        let key = derive_signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20150830",
            "us-east-1",
            "iam",
        );
        let sts = "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\nf536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59";
        let signature = hex32(hmac::sign(&key, sts.as_bytes()).as_ref());
        assert_eq!(
            std::str::from_utf8(&signature).unwrap(),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }
}
