//! AWS Signature Version 4 verification for sluice: the security boundary between the network
//! and every service.
//!
//! # Design constraints
//! - No I/O, no async, no global state, no clock reads: the caller passes the request parts, the
//!   body, `now` and a credential lookup. Depends on no other sluice crate.
//! - HMAC-SHA256 and SHA-256 come from `aws-lc-rs`; the signature comparison is constant time
//!   (`subtle`). Secrets are held in `Zeroizing` buffers; [`Credential`]'s `Debug` redacts.
//! - Only `AWS4-HMAC-SHA256` (SigV4) in the `Authorization` header or in a presigned URL; no
//!   SigV4a, no S3 chunked (`STREAMING-*`) payloads, no SigV2.
//! - Cost: one SHA-256 of the body, one of the canonical request (a few hundred bytes) and one
//!   HMAC of the string to sign; [`Verifier`] caches derived signing keys (keyed by access key
//!   id, date, region and service, and checked against the secret) so the four derivation
//!   HMACs run once per key and day.
//!
//! # Entry points
//! [`Verifier::verify`] (cached keys; what the server uses) or [`verify`] (stateless), both
//! returning [`Verified`] or a [`SigV4Error`] carrying AWS's code, HTTP status and message
//! (see [`error`] for the table and texts).
//!
//! ```
//! use sluice_sigv4::{Credential, CredentialError, HttpRequestParts, Verifier, VerifyPolicy};
//!
//! let verifier = Verifier::new(VerifyPolicy::new("us-east-1", &["kms", "secretsmanager"]));
//! let headers: Vec<(&str, &[u8])> = vec![("host", b"localhost:4566")];
//! let parts = HttpRequestParts { method: "POST", path: "/", query: None, headers: &headers };
//! let lookup = |akid: &str, _token: Option<&str>| -> Result<Credential<u32>, CredentialError> {
//!     if akid == "AKIAEXAMPLE" { Ok(Credential::new("secret", 7)) }
//!     else { Err(CredentialError::UnknownAccessKey) }
//! };
//! let err = verifier.verify(&parts, b"{}", time::OffsetDateTime::now_utc(), &lookup).unwrap_err();
//! assert_eq!((err.code(), err.status()), ("MissingAuthenticationTokenException", 403));
//! ```
//!
//! # Order of checks (the first failure is reported)
//! 1. Authentication present: an `Authorization` header or `X-Amz-Algorithm`/`X-Amz-Credential`/
//!    `X-Amz-Signature` in the query, else `MissingAuthenticationTokenException`. Both at once, a
//!    repeated `Authorization` header or a repeated auth query parameter: `IncompleteSignature`.
//! 2. Parsing. Header form: `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`;
//!    the elements after the algorithm are split on commas and whitespace, each must be
//!    `key=value`; unknown keys are ignored, missing ones reported together with a missing date
//!    (`X-Amz-Date` header, else `Date` in IMF-fixdate form). Query form: all of `X-Amz-Algorithm`,
//!    `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`, `X-Amz-SignedHeaders`,
//!    `X-Amz-Signature` (values percent-decoded), optional `X-Amz-Security-Token`; `X-Amz-Expires`
//!    a decimal number of seconds at most [`VerifyPolicy::max_presign_expires`] (≤ 604800).
//! 3. Credential `AKID/YYYYMMDD/region/service/aws4_request`: exactly five `/`-separated
//!    elements, the terminator `aws4_request`.
//! 4. Scope: the date equals the request date's `YYYYMMDD`; the region equals
//!    [`VerifyPolicy::region`] (or is `us-east-1` for a service in
//!    [`VerifyPolicy::global_services`]); the service is in [`VerifyPolicy::allowed_services`]
//!    (empty list: any; the server still matches [`Verified::service`] to the operation).
//! 5. Time: header form: `|date - now| <= max_skew` (default 15 min); query form: the date is not
//!    later than `now + max_skew` and `now <= date + X-Amz-Expires`.
//! 6. SignedHeaders must contain `host` (and [`VerifyPolicy::required_signed_headers`]).
//! 7. Credential lookup with the access key id and the `X-Amz-Security-Token`
//!    ([`CredentialLookup`]): unknown key or bad token → `UnrecognizedClientException`, expired
//!    token → `ExpiredTokenException`.
//! 8. Payload: `x-amz-content-sha256` absent → SHA-256 of the body; a 64-digit hex value → it
//!    must equal the body's SHA-256 (else `XAmzContentSHA256Mismatch`, so an unsigned-but-declared
//!    digest can never vouch for a different body); `UNSIGNED-PAYLOAD` → accepted only with
//!    [`VerifyPolicy::allow_unsigned_payload`]; anything else (`STREAMING-...`) rejected. A
//!    presigned URL without the header is tried with the body's hash and then, if the policy
//!    allows unsigned payloads, with `UNSIGNED-PAYLOAD` (as S3-style presigners sign; botocore
//!    and aws-sigv4 presign non-S3 requests over the body hash, which is tried first).
//! 9. Signature: recomputed and compared in constant time with the 64 hex digits given.
//!
//! # Canonicalisation (exactly as computed)
//! The canonical request is
//! `METHOD \n URI \n QUERY \n HEADERS \n SIGNED_HEADERS \n PAYLOAD_HASH`, where
//! - `METHOD` is the method verbatim.
//! - `URI` (rules for every service but S3): the raw path as received (still percent-encoded);
//!   empty becomes `/`, a missing leading `/` is added; if it contains `.` or `//`, it is split
//!   on `/`, empty and `.` segments dropped, `..` drops the previous segment (never above the
//!   root), and it is joined again with a leading `/` and a trailing `/` if the input ended in
//!   `/`, `/.` or `/..` (or nothing is left). Then every byte except `A-Z a-z 0-9 - _ . ~` and
//!   `/` is percent-encoded with upper-case hex; since the input is already encoded this is
//!   AWS's double encoding (`%20` → `%2520`). `%2E` is not a dot segment.
//! - `QUERY`: the raw query is split on `&` (empty pieces skipped), each piece on its first `=`
//!   (no `=` → empty value). Name and value are decoded (`+` → space, valid `%XY` → byte, any
//!   other `%` kept literally) and re-encoded (every byte except `A-Z a-z 0-9 - _ . ~` as
//!   upper-case `%XY`). Pairs are sorted by encoded name, then encoded value (bytewise) and
//!   joined as `name=value` with `&`. In the query form `X-Amz-Signature` is left out. Decoding
//!   works on bytes: a non-UTF-8 escape such as `%FF` stays `%FF` (the Rust signer would turn it
//!   into U+FFFD; no SDK sends such a value).
//! - `HEADERS`: for each name of the client's SignedHeaders list, in the client's order: the name
//!   lower-cased, `:`, then the values of every header with that name (case-insensitive) in the
//!   order received, each with leading/trailing spaces removed and runs of spaces collapsed to
//!   one (only the space character; tabs stay), joined with `,`; then `\n`. A signed header that
//!   is absent gives an empty value. Only the signed headers take part. (botocore collapses
//!   every whitespace run, tabs included, to one space; aws-sigv4 and sluice only spaces, so a
//!   botocore-signed header value containing a tab would not verify. No AWS client signs such a
//!   header in the JSON or query protocols.)
//! - `SIGNED_HEADERS`: the client's list verbatim.
//! - `PAYLOAD_HASH`: see step 8.
//!
//! The string to sign is `AWS4-HMAC-SHA256 \n YYYYMMDDTHHMMSSZ \n date/region/service/aws4_request
//! \n hex(SHA-256(canonical request))`; the signing key is
//! `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")` and the
//! signature the lower-case hex of `HMAC(key, string to sign)`.

pub mod error;

mod canonical;
mod verify;

pub use error::{ErrorKind, SigV4Error};
pub use verify::{
    ALGORITHM, AuthLocation, Credential, CredentialError, CredentialLookup, HttpRequestParts,
    MAX_PRESIGN_EXPIRES, SigningKeyCache, UNSIGNED_PAYLOAD, Verified, Verifier, VerifyPolicy,
    canonical_request_bytes, canonical_request_string, derive_signing_key, header_pairs, verify,
};
