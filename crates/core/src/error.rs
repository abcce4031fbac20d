//! The AWS-shaped error every service returns.

use std::borrow::Cow;

/// An error as AWS clients expect it: an error shape name, an HTTP status and a message.
///
/// `message` is shown to the client; it must never contain secret material, key bytes,
/// plaintext, or internal details (file paths, SQL). Use [`AwsError::internal`] for failures
/// that are not the caller's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AwsError {
    /// Error shape name, e.g. `NotFoundException`; becomes the `__type` of the envelope.
    pub code: Cow<'static, str>,
    /// HTTP status code.
    pub status: u16,
    /// Human-readable message.
    pub message: String,
}

impl AwsError {
    /// A client error (HTTP 400) with the given code.
    pub fn client(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            status: 400,
            message: message.into(),
        }
    }

    /// An error with an explicit status.
    pub fn with_status(
        code: impl Into<Cow<'static, str>>,
        status: u16,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code: code.into(),
            status,
            message: message.into(),
        }
    }

    /// `ValidationException` (400).
    pub fn validation(message: impl Into<String>) -> Self {
        Self::client("ValidationException", message)
    }

    /// `SerializationException` (400): the body is not what the operation's shape expects.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::client("SerializationException", message)
    }

    /// `AccessDeniedException` (400, as the JSON services send it).
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::client("AccessDeniedException", message)
    }

    /// An internal failure. The detail is logged by the caller if needed but never sent: the
    /// client sees only a generic message.
    pub fn internal() -> Self {
        Self::with_status(
            "InternalFailure",
            500,
            "The request processing has failed because of an unknown error, exception or failure.",
        )
    }

    /// `ServiceUnavailable` (503): the server is shutting down or overloaded.
    pub fn unavailable() -> Self {
        Self::with_status("ServiceUnavailable", 503, "The service is unavailable.")
    }
}
