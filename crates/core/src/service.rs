//! The interfaces between the server and the services it hosts.
//!
//! The server verifies the signature, parses and validates the request, and then hands it to the
//! service registered under the credential scope's signing name: a [`JsonService`] for AWS JSON
//! 1.1 services (KMS, Secrets Manager, EventBridge, Firehose, CloudTrail), a [`QueryService`]
//! for awsQuery services (IAM, STS). [`CredentialSource`]s resolve access keys that are not the
//! root pair (IAM users' keys, STS session credentials).

use async_trait::async_trait;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::{AwsError, CallContext, Principal};

/// A service speaking AWS JSON 1.1.
#[async_trait]
pub trait JsonService: Send + Sync + std::fmt::Debug {
    /// The SigV4 signing name, as in the service's botocore model (`kms`, `secretsmanager`, ...).
    fn signing_name(&self) -> &'static str;

    /// Handles operation `op` with an input already validated against the model. The service
    /// authorizes `ctx.principal` itself before any effect.
    async fn handle(&self, op: &str, ctx: &CallContext, input: Value) -> Result<Value, AwsError>;

    /// Handles operation `op` straight from its raw body, for the few hot operations whose
    /// service decodes the body itself (Firehose PutRecordBatch). The server calls it after the
    /// signature is verified and the target, content type and signing name are checked, and
    /// before parsing the body; `None` (the default) means "not handled here": the server then
    /// parses and validates the body and calls [`JsonService::handle`]. A service returns
    /// `Some` only for bodies that the generic path would accept, with the same outcome and
    /// the same response bytes, so that clients cannot tell the paths apart.
    async fn handle_raw(
        &self,
        _op: &str,
        _ctx: &CallContext,
        _body: &[u8],
    ) -> Option<Result<Vec<u8>, AwsError>> {
        None
    }
}

/// The response of an awsQuery call: status and XML body (an `<ErrorResponse>` for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResponse {
    /// HTTP status.
    pub status: u16,
    /// XML body.
    pub body: String,
}

/// A service speaking awsQuery (form-encoded `Action=...&Version=...`, XML responses).
#[async_trait]
pub trait QueryService: Send + Sync + std::fmt::Debug {
    /// The SigV4 signing name (`iam`, `sts`).
    fn signing_name(&self) -> &'static str;

    /// Handles one request; `params` are the decoded form fields in order (including `Action`
    /// and `Version`).
    async fn handle_query(&self, ctx: &CallContext, params: Vec<(String, String)>)
    -> QueryResponse;

    /// The XML error body for an error raised before the service was reached (signature,
    /// malformed form).
    fn error_response(&self, err: &AwsError, request_id: &str) -> QueryResponse;
}

/// Why a credential lookup failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialLookupError {
    /// The access key id is not known here.
    Unknown,
    /// The session token is missing, wrong, or was sent with a long-term key.
    InvalidToken,
    /// The temporary credentials have expired.
    Expired,
}

/// Resolves access key ids to their secret and principal.
pub trait CredentialSource: Send + Sync + std::fmt::Debug {
    /// Looks up `access_key_id` with the request's session token at time `now_ms`.
    fn lookup(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
        now_ms: i64,
    ) -> Result<(Zeroizing<String>, Principal), CredentialLookupError>;
}
