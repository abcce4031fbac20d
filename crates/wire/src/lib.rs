//! AWS JSON 1.1 framing and input validation driven by botocore's service models.
//!
//! sluice serves AWS APIs to real AWS SDKs and the CLI. This crate is the part of the wire
//! layer that needs no HTTP: it finds the operation from `X-Amz-Target`, checks the content
//! type, parses the body, validates it against the operation's input shape with AWS's own
//! error texts, and renders error bodies. The lead's axum server calls these pure functions.
//!
//! # Design constraints
//!
//! - **Models are data, checked in.** `models/<service>.json` are compact extracts of botocore
//!   1.44.5's `service-2.json` (format in [`model`]'s docs), embedded with `include_str!` and
//!   parsed once per process and service (`LazyLock`) into a shape graph with pre-compiled
//!   regexes. Regenerate or check them with (from the repository root):
//!
//!   ```text
//!   python3 crates/wire/tools/gen_models.py           # rewrite crates/wire/models/*.json
//!   python3 crates/wire/tools/gen_models.py --check   # CI: exit 1 if regeneration is not clean
//!   ```
//!
//!   The script pip-downloads the pinned botocore wheel into `~/.cache/sluice-botocore`
//!   (override with `--wheel FILE` or `--botocore-dir DIR`); its output is deterministic.
//! - **AWS's errors, AWS's order.** Type errors are `SerializationException`, constraint
//!   violations `ValidationException` with `N validation error(s) detected: ...`; see
//!   [`validate`](crate::Operation::validate) and the [`validate` module](crate::validate) docs.
//! - **Never leak, never panic.** Values of `sensitive` shapes (KMS `Plaintext`, Secrets
//!   Manager `SecretString`, ...) are never echoed in a message. No input can panic: nesting is
//!   limited to [`MAX_DEPTH`] levels, numbers are range-checked, and patterns the `regex` crate
//!   cannot express are skipped rather than failing (see [`pattern`]'s docs and
//!   [`Service::unenforced_patterns`]).
//! - **Fast.** Validation walks the JSON value once, allocates only for error messages and
//!   compiles nothing per request; a typical KMS `Encrypt` body validates in about 1.6 µs
//!   (median, measured on a heavily loaded 2-vCPU machine, so this is an upper bound); see
//!   `docs/PERFORMANCE-wire.md` and `cargo bench -p sluice-wire`. Each model is parsed on first
//!   use (0.3 to 24 ms): call [`service`] at startup to pay that early.
//!
//! # Framing decisions
//!
//! - `X-Amz-Target` is `<targetPrefix>.<Operation>`, split at the last `.` (CloudTrail's prefix
//!   `com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101` contains dots). Missing, malformed,
//!   or naming an unknown service or operation: `UnknownOperationException` (400).
//! - `Content-Type` (media type compared case-insensitively, parameters ignored) must be
//!   `application/x-amz-json-1.1`; `application/x-amz-json-1.0` is accepted too, since AWS's
//!   JSON services treat both alike (inference; every service here is `jsonVersion` 1.1 and every
//!   SDK sends 1.1). Anything else, or no content type: `UnknownOperationException` (400), as
//!   AWS does not route such a request to a JSON operation (observed: Kinesis answers
//!   `application/octet-stream` with `UnknownOperationException`).
//! - An empty (or all-whitespace) body is `{}`; malformed JSON or a non-object body is a
//!   `SerializationException`.
//! - Error bodies are `{"__type":"<code>","<message member>":"..."}` where the message member is
//!   the service's own casing ([`Service::error_message_member`]: `Message` for Secrets Manager,
//!   `message` elsewhere). botocore and aws-sdk-rust read either casing, so only one is sent.
//!
//! # Fuzzing
//!
//! `crates/wire/fuzz` is a cargo-fuzz project (its own workspace, outside sluice's):
//!
//! ```text
//! cargo install cargo-fuzz   # once
//! cd crates/wire/fuzz && mkdir -p corpus/parse_request
//! RUSTC_BOOTSTRAP=1 cargo fuzz run parse_request corpus/parse_request seeds/parse_request \
//!     -- -max_total_time=300
//! ```
//!
//! `RUSTC_BOOTSTRAP=1` lets the stable toolchain accept the sanitizer flags cargo-fuzz passes.
//! `seeds/` holds a few realistic bodies (checked in); `corpus/` and `artifacts/` are local.

use std::sync::LazyLock;

use base64::Engine as _;
use serde_json::Value;
use sluice_core::AwsError;

pub mod model;
pub mod pattern;
pub mod validate;

pub use model::{Operation, Service};
pub use validate::{MAX_DEPTH, MAX_REPORTED};

macro_rules! services {
    ($($id:ident => $name:literal),* $(,)?) => {
        $(
            static $id: LazyLock<Service> =
                LazyLock::new(|| Service::load($name, include_str!(concat!("../models/", $name, ".json"))));
        )*
        /// Names of the services whose models this crate ships.
        pub const SERVICE_NAMES: &[&str] = &[$($name),*];

        /// The model of a service by its short name (`kms`, `secretsmanager`, `events`,
        /// `firehose`, `cloudtrail`, `iam`, `sts`). Parsed on first use.
        pub fn service(name: &str) -> Option<&'static Service> {
            match name {
                $($name => Some(&*$id),)*
                _ => None,
            }
        }
    };
}

services! {
    KMS => "kms",
    SECRETSMANAGER => "secretsmanager",
    EVENTS => "events",
    FIREHOSE => "firehose",
    CLOUDTRAIL => "cloudtrail",
    IAM => "iam",
    STS => "sts",
}

/// `X-Amz-Target` prefix -> service name, for the JSON-protocol services (a test keeps this in
/// step with the models, so routing does not have to parse every model).
const TARGET_PREFIXES: &[(&str, &str)] = &[
    ("TrentService", "kms"),
    ("secretsmanager", "secretsmanager"),
    ("AWSEvents", "events"),
    ("Firehose_20150804", "firehose"),
    (
        "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101",
        "cloudtrail",
    ),
];

fn unknown_operation(what: &str) -> AwsError {
    AwsError::client("UnknownOperationException", what.to_owned())
}

/// Echo at most this much of a client-supplied header in an error message.
const ECHO_LIMIT: usize = 128;

fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(ECHO_LIMIT)
        .collect();
    if s.chars().count() > ECHO_LIMIT {
        out.push_str("...");
    }
    out
}

/// Resolves an `X-Amz-Target` header value such as `TrentService.Encrypt`.
pub fn by_target(x_amz_target: &str) -> Result<(&'static Service, &'static Operation), AwsError> {
    let Some((prefix, op)) = x_amz_target.rsplit_once('.') else {
        return Err(unknown_operation(&format!(
            "Unknown operation: {}",
            echo(x_amz_target)
        )));
    };
    let svc = TARGET_PREFIXES
        .iter()
        .find(|(p, _)| *p == prefix)
        .and_then(|(_, name)| service(name));
    match svc.and_then(|s| Some((s, s.operation(op)?))) {
        Some(found) => Ok(found),
        None => Err(unknown_operation(&format!(
            "Unknown operation: {}",
            echo(x_amz_target)
        ))),
    }
}

fn is_json_content_type(ct: &str) -> bool {
    let media = ct.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/x-amz-json-1.1")
        || media.eq_ignore_ascii_case("application/x-amz-json-1.0")
}

/// Whether the body nests deeper than [`MAX_DEPTH`]; a byte scan that skips strings.
fn nests_too_deep(body: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses and validates one AWS JSON 1.1 request.
///
/// `content_type` and `target` are the raw `Content-Type` and `X-Amz-Target` header values.
/// On success returns the service, the operation and the parsed body (an object). Errors:
/// `UnknownOperationException` for a missing or unknown target or a non-JSON-1.x content type,
/// `SerializationException` for a body that is not a JSON object of the right types, and
/// `ValidationException` for constraint violations.
pub fn parse_request(
    content_type: Option<&str>,
    target: Option<&str>,
    body: &[u8],
) -> Result<(&'static Service, &'static Operation, Value), AwsError> {
    let (svc, op) = route(content_type, target)?;
    Ok((svc, op, parse_body(op, body)?))
}

/// The framing checks of [`parse_request`] without the body: the operation named by
/// `X-Amz-Target` and a JSON 1.x content type (the same errors, in the same order). A server
/// may use it to hand a hot operation's raw body to its service and fall back to
/// [`parse_request`] otherwise.
pub fn route(
    content_type: Option<&str>,
    target: Option<&str>,
) -> Result<(&'static Service, &'static Operation), AwsError> {
    let Some(target) = target else {
        return Err(unknown_operation(
            "Missing X-Amz-Target header: the operation to call is unknown.",
        ));
    };
    let (svc, op) = by_target(target)?;
    match content_type {
        Some(ct) if is_json_content_type(ct) => {}
        Some(ct) => {
            return Err(unknown_operation(&format!(
                "Unsupported Content-Type {}: expected application/x-amz-json-1.1.",
                echo(ct)
            )));
        }
        None => {
            return Err(unknown_operation(
                "Missing Content-Type: expected application/x-amz-json-1.1.",
            ));
        }
    }
    Ok((svc, op))
}

/// Parses and validates the body of a request for `op` (the body part of [`parse_request`]).
fn parse_body(op: &Operation, body: &[u8]) -> Result<Value, AwsError> {
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        if nests_too_deep(body) {
            return Err(AwsError::serialization(format!(
                "Request body is nested too deeply (more than {MAX_DEPTH} levels)."
            )));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return Err(AwsError::serialization(
                    "The request body must be a JSON object.",
                ));
            }
            Err(e) => {
                return Err(AwsError::serialization(format!(
                    "Malformed JSON at line {} column {}.",
                    e.line(),
                    e.column()
                )));
            }
        }
    };
    op.validate(&value)?;
    Ok(value)
}

impl Operation {
    /// Validates an input body (a JSON object) against the operation's input shape.
    /// See the [`validate` module](crate::validate) for the rules and texts.
    pub fn validate(&self, input: &Value) -> Result<(), AwsError> {
        validate::validate(self, input)
    }
}

/// The JSON error body for `err`: `{"__type":"<code>","message":"..."}` with the service's
/// casing of the message member. Status and `x-amzn-ErrorType` are the caller's business
/// (`err.status`, `err.code`).
pub fn error_body(service: &Service, err: &AwsError) -> Vec<u8> {
    error_body_with(service.error_message_member(), err)
}

/// [`error_body`] for when no service is known (e.g. an `X-Amz-Target` naming no service):
/// uses the `message` casing.
pub fn generic_error_body(err: &AwsError) -> Vec<u8> {
    error_body_with("message", err)
}

fn error_body_with(message_member: &str, err: &AwsError) -> Vec<u8> {
    let mut m = serde_json::Map::with_capacity(2);
    m.insert("__type".into(), Value::String(err.code.to_string()));
    m.insert(
        message_member.to_owned(),
        Value::String(err.message.clone()),
    );
    // Serializing a map of strings cannot fail.
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A blob for a JSON 1.1 response: standard, padded base64 (as AWS sends it).
pub fn blob_value(bytes: &[u8]) -> Value {
    Value::String(B64.encode(bytes))
}

/// Decodes a blob member of a validated request (padded or unpadded standard base64, the
/// same leniency as validation). `SerializationException` if it is not base64.
pub fn decode_blob(s: &str) -> Result<Vec<u8>, AwsError> {
    B64.decode(s).map_err(|_| {
        AwsError::serialization(
            "STRING_VALUE can not be converted to a Blob: it is not valid base64",
        )
    })
}

/// A timestamp for a JSON 1.1 response: epoch seconds as a JSON number, an integer when whole
/// seconds, else with millisecond precision (what AWS sends, e.g. `1700000000.123`).
pub fn timestamp_value(t: time::OffsetDateTime) -> Value {
    let secs = t.unix_timestamp();
    let millis = t.millisecond();
    if millis == 0 {
        Value::from(secs)
    } else {
        let f = secs as f64 + f64::from(millis) / 1000.0;
        serde_json::Number::from_f64(f).map_or(Value::from(secs), Value::Number)
    }
}

/// Reads a timestamp member of a validated request (epoch seconds, fractional allowed).
pub fn parse_timestamp(v: &Value) -> Option<time::OffsetDateTime> {
    let f = v.as_f64()?;
    if !f.is_finite() {
        return None;
    }
    let nanos = (f * 1e9).round();
    if nanos.abs() > 9.2e18 {
        // Beyond i64 nanoseconds: whole seconds are enough precision.
        return time::OffsetDateTime::from_unix_timestamp(f.trunc() as i64).ok();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos as i128).ok()
}
