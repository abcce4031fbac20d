//! Verification errors with AWS's error codes, HTTP statuses and message texts.
//!
//! AWS answers an authentication failure differently per wire protocol:
//!
//! | [`ErrorKind`] | JSON 1.1 `__type` (status) | query protocol `Code` (status) |
//! |---|---|---|
//! | `MissingAuthenticationToken` | `MissingAuthenticationTokenException` (403) | `MissingAuthenticationToken` (403) |
//! | `IncompleteSignature` | `IncompleteSignatureException` (400) | `IncompleteSignature` (400) |
//! | `InvalidSignature` | `InvalidSignatureException` (400) | `SignatureDoesNotMatch` (403) |
//! | `UnrecognizedClient` | `UnrecognizedClientException` (400) | `InvalidClientTokenId` (403) |
//! | `ExpiredToken` | `ExpiredTokenException` (400) | `ExpiredToken` (400) |
//! | `ContentSha256Mismatch` | `XAmzContentSHA256Mismatch` (400) | `XAmzContentSHA256Mismatch` (400) |
//!
//! [`SigV4Error::code`] and [`SigV4Error::status`] give the JSON form (KMS, Secrets Manager,
//! EventBridge, Firehose); [`SigV4Error::query_code`] and [`SigV4Error::query_status`] the query
//! form (IAM, STS). The message is the same in both.
//!
//! Message texts (AWS's, as observed in public error reports; "(sluice)" marks texts AWS has no
//! documented equivalent for, which we chose):
//! - missing authentication: `Missing Authentication Token`.
//! - Authorization header without a parameter: one sentence per missing item,
//!   `Authorization header requires 'Credential' parameter. ` (likewise `'Signature'`,
//!   `'SignedHeaders'`, and `Authorization header requires existence of either a 'X-Amz-Date' or
//!   a 'Date' header. `), then `Authorization=<the header as received>`.
//! - a header element without `=`: `'<element>' not a valid key=value pair (missing equal-sign) in
//!   Authorization header: '<header>'.`
//! - credential with the wrong shape: `Credential must have exactly 5 slash-delimited elements,
//!   e.g. keyid/date/region/service/term, got '<credential>'`.
//! - scope date: `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date
//!   from HTTP: '<scope date>' != '<date>', from '<x-amz-date>'.`
//! - scope region: `Credential should be scoped to a valid region, not '<region>'. ` (AWS keeps the
//!   trailing space); service: `Credential should be scoped to correct service: '<service>'. `;
//!   terminator: `Credential should be scoped with a valid terminator: 'aws4_request', not
//!   '<term>'. `
//! - unparseable date: `Date must be in ISO-8601 'basic format'. Got '<value>'. See
//!   http://en.wikipedia.org/wiki/ISO_8601`
//! - skew: `Signature expired: 20261123T100000Z is now earlier than 20261123T102000Z
//!   (20261123T103500Z - 15 min.)` and `Signature not yet current: <date> is still later than
//!   <now + skew> (<now> + 15 min.)`, both `InvalidSignature`.
//! - wrong signature: `The request signature we calculated does not match the signature you
//!   provided. Check your AWS Secret Access Key and signing method. Consult the service
//!   documentation for details.`
//! - unknown access key or invalid session token: `The security token included in the request is
//!   invalid.`; an expired session token: `The security token included in the request is expired`.
//! - `x-amz-content-sha256` not matching the body: `The provided 'x-amz-content-sha256' header
//!   does not match what was computed.` (S3's text).
//! - presigned URL past `X-Amz-Date + X-Amz-Expires`: `Signature expired: <expiry> is now earlier
//!   than <now>.` (sluice; AWS's non-S3 text is undocumented).
//! - `host` not signed: `'Host' or ':authority' must be a 'SignedHeader' in the AWS
//!   Authorization.` (AWS's text); a header the policy requires: `'<name>' must be a
//!   'SignedHeader' in the AWS Authorization.` (sluice, modelled on it).
//! - presigned query parameters (S3's texts, as non-S3 services are undocumented): `AWS
//!   query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential',
//!   'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', and 'X-Amz-Expires'. Re-examine the
//!   query-string parameters.`, `X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"`, `X-Amz-Expires
//!   must be less than a week (in seconds) that is 604800`, `X-Amz-Expires should be a number`,
//!   and `Only one auth mechanism allowed; ...` when both forms are present.
//! - sluice's own texts (no AWS equivalent known): `Unsupported AWS 'algorithm': '<alg>'.
//!   Authorization=<header>` (SigV4a and others), repeated `Authorization`/`X-Amz-Date`/... headers
//!   or auth query parameters, non-UTF-8 auth values, `UNSIGNED-PAYLOAD is not accepted by this
//!   endpoint; sign the request body.` and `x-amz-content-sha256 value '<v>' is not supported by
//!   this endpoint.`
//!
//! Statuses: AWS's JSON services answer all of these with 400 except the missing token (403 as
//! recorded for sluice); the query services (IAM, STS) use 403 for signature and key
//! failures. Both are as observed in public error reports, not from a specification.

use std::fmt;

/// The class of a verification failure; decides the AWS error code and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No SigV4 authentication at all (no `Authorization` header, no `X-Amz-*` query auth).
    MissingAuthenticationToken,
    /// Authentication present but malformed or incomplete.
    IncompleteSignature,
    /// Wrong signature, wrong scope, or a timestamp outside the allowed window.
    InvalidSignature,
    /// The access key id is unknown, or the session token is invalid.
    UnrecognizedClient,
    /// The session token has expired.
    ExpiredToken,
    /// `x-amz-content-sha256` names a digest that is not the body's.
    ContentSha256Mismatch,
}

impl ErrorKind {
    /// The error code for JSON 1.1 services (the `__type` of the error body).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorKind::IncompleteSignature => "IncompleteSignatureException",
            ErrorKind::InvalidSignature => "InvalidSignatureException",
            ErrorKind::UnrecognizedClient => "UnrecognizedClientException",
            ErrorKind::ExpiredToken => "ExpiredTokenException",
            ErrorKind::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }

    /// The HTTP status for JSON 1.1 services.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::MissingAuthenticationToken => 403,
            _ => 400,
        }
    }

    /// The error code for query-protocol services (IAM, STS).
    pub fn query_code(self) -> &'static str {
        match self {
            ErrorKind::MissingAuthenticationToken => "MissingAuthenticationToken",
            ErrorKind::IncompleteSignature => "IncompleteSignature",
            ErrorKind::InvalidSignature => "SignatureDoesNotMatch",
            ErrorKind::UnrecognizedClient => "InvalidClientTokenId",
            ErrorKind::ExpiredToken => "ExpiredToken",
            ErrorKind::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }

    /// The HTTP status for query-protocol services (IAM, STS).
    pub fn query_status(self) -> u16 {
        match self {
            ErrorKind::MissingAuthenticationToken
            | ErrorKind::InvalidSignature
            | ErrorKind::UnrecognizedClient => 403,
            _ => 400,
        }
    }
}

/// A verification failure: an [`ErrorKind`] and AWS's message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Error {
    kind: ErrorKind,
    message: String,
}

/// The signature-mismatch message.
pub const SIGNATURE_MISMATCH_MESSAGE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
/// The unknown-key / invalid-token message.
pub const INVALID_TOKEN_MESSAGE: &str = "The security token included in the request is invalid.";
/// The expired-session-token message.
pub const EXPIRED_TOKEN_MESSAGE: &str = "The security token included in the request is expired";
/// The missing-authentication message.
pub const MISSING_TOKEN_MESSAGE: &str = "Missing Authentication Token";

impl SigV4Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SigV4Error {
            kind,
            message: message.into(),
        }
    }

    /// No authentication information in the request.
    pub fn missing_authentication() -> Self {
        Self::new(ErrorKind::MissingAuthenticationToken, MISSING_TOKEN_MESSAGE)
    }

    /// The signature does not match.
    pub fn signature_mismatch() -> Self {
        Self::new(ErrorKind::InvalidSignature, SIGNATURE_MISMATCH_MESSAGE)
    }

    /// Unknown access key id or invalid session token.
    pub fn unrecognized_client() -> Self {
        Self::new(ErrorKind::UnrecognizedClient, INVALID_TOKEN_MESSAGE)
    }

    /// Expired session token.
    pub fn expired_token() -> Self {
        Self::new(ErrorKind::ExpiredToken, EXPIRED_TOKEN_MESSAGE)
    }

    /// The credential scope names a service other than the one the request is for. The server
    /// uses this after matching [`crate::Verified::service`] against the `X-Amz-Target` or the
    /// endpoint; `expected` is the signing name the server wanted.
    pub fn wrong_service(expected: &str) -> Self {
        Self::new(
            ErrorKind::InvalidSignature,
            format!("Credential should be scoped to correct service: '{expected}'. "),
        )
    }

    /// The credential scope names a region the server does not serve.
    pub fn wrong_region(got: &str) -> Self {
        Self::new(
            ErrorKind::InvalidSignature,
            format!("Credential should be scoped to a valid region, not '{got}'. "),
        )
    }

    /// The failure class.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// JSON 1.1 error code (`__type`).
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// JSON 1.1 HTTP status.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// Query-protocol error code.
    pub fn query_code(&self) -> &'static str {
        self.kind.query_code()
    }

    /// Query-protocol HTTP status.
    pub fn query_status(&self) -> u16 {
        self.kind.query_status()
    }

    /// The message AWS sends with this error.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SigV4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for SigV4Error {}
