//! The Firehose HTTP endpoint delivery codec: everything about the wire format of a delivery
//! that does not need I/O. Pure functions, unit-tested here.
//!
//! - [`request_body`] / [`request_headers`]: the POST Firehose sends (`X-Amz-Firehose-*`
//!   headers, `{"requestId", "timestamp", "records": [{"data": <base64>}]}`), optionally GZIP.
//! - [`judge_response`]: only a 200 whose JSON body echoes the request id is a success; 413 is
//!   permanent; every other answer (and every malformed one) is retried.
//! - [`error_record`]: the newline-delimited JSON error records written to the S3 backup.
//! - [`object_key`] / [`error_key`]: AWS's S3 key layout, with `!{timestamp:..}`,
//!   `!{firehose:error-output-type}` and `!{firehose:random-string}` expressions.
//! - [`backoff_ms`] / [`after_failure`]: the retry schedule (1 s doubling to 120 s, +-15 %
//!   jitter) and the retry-duration clock that starts at the first failure.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use time::OffsetDateTime;

/// The `X-Amz-Firehose-Protocol-Version` sent.
pub const PROTOCOL_VERSION: &str = "1.0";
/// The error-output type of the HTTP endpoint destination.
pub const HTTP_ERROR_OUTPUT_TYPE: &str = "http-endpoint-failed";
/// Largest response body read from an endpoint (AWS: 1 MiB).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Longest backoff between attempts, ms.
pub const MAX_BACKOFF_MS: u64 = 120_000;

/// The JSON body of a delivery request for `records`, at `timestamp_ms`.
pub fn request_body<'a>(
    request_id: &str,
    timestamp_ms: i64,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"requestId\":");
    json_string(&mut out, request_id);
    out.extend_from_slice(b",\"timestamp\":");
    out.extend_from_slice(timestamp_ms.to_string().as_bytes());
    out.extend_from_slice(b",\"records\":[");
    let mut first = true;
    for r in records {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b"{\"data\":\"");
        let start = out.len();
        out.resize(start + r.len().div_ceil(3) * 4, 0);
        let n = B64
            .encode_slice(r, &mut out[start..])
            .expect("the buffer was sized for the encoding");
        out.truncate(start + n);
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"]}");
    out
}

/// GZIP-compresses a body (for `ContentEncoding: GZIP`).
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// What the request headers are built from.
#[derive(Debug, Clone, Copy)]
pub struct HeaderInputs<'a> {
    /// The request id (stable across retries of one batch).
    pub request_id: &'a str,
    /// The delivery stream ARN.
    pub source_arn: &'a str,
    /// The access key, if any (from the configuration or the secret's `api_key`).
    pub access_key: Option<&'a str>,
    /// `RequestConfiguration.CommonAttributes`.
    pub common_attributes: &'a [(String, String)],
    /// Whether the body is GZIP-compressed.
    pub gzip: bool,
}

/// The delivery request headers (Content-Length is added by the HTTP client).
pub fn request_headers(h: &HeaderInputs<'_>) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("content-type", "application/json".to_string()),
        (
            "x-amz-firehose-protocol-version",
            PROTOCOL_VERSION.to_string(),
        ),
        ("x-amz-firehose-request-id", h.request_id.to_string()),
        ("x-amz-firehose-source-arn", h.source_arn.to_string()),
        (
            "user-agent",
            "Amazon Kinesis Data Firehose Agent/1.0".to_string(),
        ),
        (
            "x-amz-firehose-common-attributes",
            common_attributes_header(h.common_attributes),
        ),
    ];
    if let Some(k) = h.access_key {
        out.push(("x-amz-firehose-access-key", k.to_string()));
    }
    if h.gzip {
        out.push(("content-encoding", "gzip".to_string()));
    }
    out
}

/// `{"commonAttributes":{"<name>":"<value>",...}}`.
pub fn common_attributes_header(attrs: &[(String, String)]) -> String {
    let mut m = serde_json::Map::new();
    for (k, v) in attrs {
        m.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    serde_json::json!({ "commonAttributes": m }).to_string()
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    let v = serde_json::to_vec(s).expect("strings serialize");
    out.extend_from_slice(&v);
}

/// Why an attempt failed, in CloudWatch's error-code vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `HttpEndpoint.DestinationException`, `HttpEndpoint.RequestTimeout`, ...
    pub code: String,
    /// What happened (never a credential).
    pub message: String,
    /// Whether retrying may help (false only for 413).
    pub retryable: bool,
}

impl Failure {
    /// A retryable failure.
    pub fn retry(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
            retryable: true,
        }
    }
}

/// Judges an endpoint's answer to the request `request_id`.
pub fn judge_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    truncated: bool,
    request_id: &str,
) -> Result<(), Failure> {
    if truncated {
        return Err(Failure::retry(
            "HttpEndpoint.ResponseTooLarge",
            format!(
                "The response received from the endpoint is larger than {MAX_RESPONSE_BYTES} bytes."
            ),
        ));
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
    if status != 200 {
        let message = format!(
            "Received the following response from the endpoint destination. {status}: {text}"
        );
        return Err(Failure {
            code: "HttpEndpoint.DestinationException".into(),
            message,
            retryable: status != 413,
        });
    }
    let invalid = |why: &str| {
        Failure::retry(
            "HttpEndpoint.InvalidResponseFromDestination",
            format!("The response received from the endpoint is invalid: {why}. Response: {text}"),
        )
    };
    let ct_ok = content_type
        .map(|c| {
            c.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
        .unwrap_or(false);
    if !ct_ok {
        return Err(invalid("the Content-Type is not application/json"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| invalid("the body is not JSON"))?;
    match v.get("requestId").and_then(|r| r.as_str()) {
        Some(r) if r == request_id => {}
        Some(_) => return Err(invalid("the requestId does not match the request's")),
        None => return Err(invalid("the requestId is missing")),
    }
    if !v.get("timestamp").is_some_and(|t| t.is_number()) {
        return Err(invalid("the timestamp is missing"));
    }
    Ok(())
}

/// One record of the error output (a JSON line).
#[derive(Debug, Clone, Copy)]
pub struct ErrorRecord<'a> {
    /// Attempts made before giving up.
    pub attempts_made: u32,
    /// When the record arrived, ms.
    pub arrival_ms: i64,
    /// The last error code.
    pub error_code: &'a str,
    /// The last error message.
    pub error_message: &'a str,
    /// When the last attempt ended, ms.
    pub attempt_ending_ms: i64,
    /// The record's data.
    pub raw: &'a [u8],
}

/// Appends `r` as one JSON line (with its newline) to `out`.
pub fn error_record(out: &mut Vec<u8>, r: &ErrorRecord<'_>) {
    let v = serde_json::json!({
        "attemptsMade": r.attempts_made,
        "arrivalTimestamp": r.arrival_ms,
        "errorCode": r.error_code,
        "errorMessage": r.error_message,
        "attemptEndingTimestamp": r.attempt_ending_ms,
        "rawData": B64.encode(r.raw),
    });
    serde_json::to_writer(&mut *out, &v).expect("writing to a Vec cannot fail");
    out.push(b'\n');
}

/// The pieces an S3 key is made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    /// The delivery stream name.
    pub stream: &'a str,
    /// The stream's version id.
    pub version: u64,
    /// The time the key is for (UTC).
    pub at: OffsetDateTime,
    /// A random string (lowercase alphanumerics).
    pub random: &'a str,
    /// A file extension to append (`.gz`), or empty.
    pub extension: &'a str,
}

fn two(n: u8) -> String {
    format!("{n:02}")
}

fn time_path(t: OffsetDateTime) -> String {
    format!(
        "{:04}/{}/{}/{}/",
        t.year(),
        two(t.month() as u8),
        two(t.day()),
        two(t.hour())
    )
}

fn file_name(p: &KeyParts<'_>) -> String {
    let t = p.at;
    format!(
        "{}-{}-{:04}-{}-{}-{}-{}-{}-{}{}",
        p.stream,
        p.version,
        t.year(),
        two(t.month() as u8),
        two(t.day()),
        two(t.hour()),
        two(t.minute()),
        two(t.second()),
        p.random,
        p.extension
    )
}

/// Whether a prefix uses `!{...}` expressions.
pub fn has_expressions(prefix: &str) -> bool {
    prefix.contains("!{")
}

/// Evaluates the `!{...}` expressions of `prefix`. Unknown expressions are an error.
pub fn evaluate_prefix(
    prefix: &str,
    at: OffsetDateTime,
    error_output_type: Option<&str>,
    random: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(prefix.len() + 16);
    let mut rest = prefix;
    while let Some(i) = rest.find("!{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated expression in prefix {prefix:?}"));
        };
        let expr = &after[..end];
        if let Some(fmt) = expr.strip_prefix("timestamp:") {
            out.push_str(&java_time(fmt, at)?);
        } else if expr == "firehose:error-output-type" {
            match error_output_type {
                Some(t) => out.push_str(t),
                None => {
                    return Err(
                        "!{firehose:error-output-type} may only be used in ErrorOutputPrefix"
                            .into(),
                    );
                }
            }
        } else if expr == "firehose:random-string" {
            out.push_str(random);
        } else {
            return Err(format!("unsupported expression !{{{expr}}}"));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Formats `t` with the subset of Java's DateTimeFormatter letters that S3 prefixes use:
/// `yyyy`, `yy`, `MM`, `dd`, `HH`, `mm`, `ss`; other characters are copied.
pub fn java_time(fmt: &str, t: OffsetDateTime) -> Result<String, String> {
    let mut out = String::new();
    let b = fmt.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let mut n = 1;
        while i + n < b.len() && b[i + n] == c {
            n += 1;
        }
        let piece = match (c, n) {
            (b'y', 4) => format!("{:04}", t.year()),
            (b'y', 2) => format!("{:02}", t.year().rem_euclid(100)),
            (b'M', 2) => two(t.month() as u8),
            (b'd', 2) => two(t.day()),
            (b'H', 2) => two(t.hour()),
            (b'm', 2) => two(t.minute()),
            (b's', 2) => two(t.second()),
            (c, _) if c.is_ascii_alphabetic() => {
                return Err(format!("unsupported timestamp pattern {fmt:?}"));
            }
            _ => fmt[i..i + n].to_string(),
        };
        out.push_str(&piece);
        i += n;
    }
    Ok(out)
}

/// The key of a data object: `<prefix>YYYY/MM/dd/HH/<stream>-<version>-YYYY-MM-dd-HH-MM-SS-<random>`
/// (the time path is left out when the prefix has expressions).
pub fn object_key(prefix: &str, p: &KeyParts<'_>) -> Result<String, String> {
    let base = if has_expressions(prefix) {
        evaluate_prefix(prefix, p.at, None, p.random)?
    } else {
        format!("{prefix}{}", time_path(p.at))
    };
    Ok(format!("{base}{}", file_name(p)))
}

/// The key of an error object. With an `ErrorOutputPrefix`, its expressions are evaluated
/// (without expressions the time path is appended); without one, the failed data goes to
/// `<Prefix><error-output-type>/YYYY/MM/dd/HH/`.
pub fn error_key(
    prefix: &str,
    error_output_prefix: Option<&str>,
    error_output_type: &str,
    p: &KeyParts<'_>,
) -> Result<String, String> {
    let base = match error_output_prefix.filter(|s| !s.is_empty()) {
        Some(e) if has_expressions(e) => {
            evaluate_prefix(e, p.at, Some(error_output_type), p.random)?
        }
        Some(e) => format!("{e}{}", time_path(p.at)),
        None => {
            let pre = if has_expressions(prefix) {
                String::new()
            } else {
                prefix.to_string()
            };
            format!("{pre}{error_output_type}/{}", time_path(p.at))
        }
    };
    Ok(format!("{base}{}", file_name(p)))
}

/// The wait before the attempt after the `failures`-th consecutive failure (1-based):
/// `min(120 s, 1 s * 2^(failures-1) * jitter)` with `jitter` in [0.85, 1.15], times `scale`
/// (1.0 in production; tests shrink it).
pub fn backoff_ms(failures: u32, jitter_unit: f64, scale: f64) -> u64 {
    let exp = failures.saturating_sub(1).min(20);
    let base = 1000f64 * (1u64 << exp) as f64;
    let j = 0.85 + 0.30 * jitter_unit.clamp(0.0, 1.0);
    let ms = (base * j).min(MAX_BACKOFF_MS as f64);
    (ms * scale.max(0.0)).round() as u64
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try again at this time (Unix ms).
    RetryAt(i64),
    /// The retry duration is spent: back the data up.
    GiveUp,
}

/// The retry-duration clock: `first_failure_ms` is when the first attempt failed, `now_ms` when
/// the latest did, `failures` how many have failed in a row. Retries go on until
/// `duration_s` has passed since the first failure; the last retry is made at the deadline.
pub fn after_failure(
    first_failure_ms: i64,
    now_ms: i64,
    failures: u32,
    duration_s: u32,
    jitter_unit: f64,
    scale: f64,
) -> NextStep {
    let deadline = first_failure_ms + i64::from(duration_s) * 1000;
    if now_ms >= deadline {
        return NextStep::GiveUp;
    }
    let wait = backoff_ms(failures, jitter_unit, scale) as i64;
    NextStep::RetryAt((now_ms + wait).min(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn body_has_request_id_timestamp_and_base64_records() {
        let recs: Vec<&[u8]> = vec![b"hello", b"", b"\x00\xff"];
        let body = request_body("rid-1", 1578090901599, recs);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["requestId"], "rid-1");
        assert_eq!(v["timestamp"], 1578090901599i64);
        assert_eq!(v["records"][0]["data"], "aGVsbG8=");
        assert_eq!(v["records"][1]["data"], "");
        assert_eq!(v["records"][2]["data"], "AP8=");
        assert_eq!(v["records"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn gzip_round_trips() {
        let body = request_body("r", 1, [b"x".as_slice()]);
        let z = gzip(&body);
        let mut d = flate2::read::GzDecoder::new(&z[..]);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut out).unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn headers_carry_the_protocol_fields() {
        let attrs = vec![("team".to_string(), "a\"b".to_string())];
        let h = request_headers(&HeaderInputs {
            request_id: "rid",
            source_arn: "arn:aws:firehose:us-east-1:1:deliverystream/s",
            access_key: Some("k"),
            common_attributes: &attrs,
            gzip: true,
        });
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-firehose-protocol-version"), Some("1.0"));
        assert_eq!(get("x-amz-firehose-request-id"), Some("rid"));
        assert_eq!(get("x-amz-firehose-access-key"), Some("k"));
        assert_eq!(get("content-encoding"), Some("gzip"));
        assert_eq!(get("content-type"), Some("application/json"));
        let ca: serde_json::Value =
            serde_json::from_str(get("x-amz-firehose-common-attributes").unwrap()).unwrap();
        assert_eq!(ca["commonAttributes"]["team"], "a\"b");
        let none = request_headers(&HeaderInputs {
            request_id: "rid",
            source_arn: "a",
            access_key: None,
            common_attributes: &[],
            gzip: false,
        });
        assert!(!none.iter().any(|(k, _)| *k == "x-amz-firehose-access-key"));
        assert!(!none.iter().any(|(k, _)| *k == "content-encoding"));
    }

    #[test]
    fn only_200_with_matching_request_id_succeeds() {
        let ok = br#"{"requestId":"r1","timestamp":5}"#;
        let ct = Some("application/json");
        assert!(judge_response(200, ct, ok, false, "r1").is_ok());
        let e = judge_response(200, ct, ok, false, "r2").unwrap_err();
        assert_eq!(e.code, "HttpEndpoint.InvalidResponseFromDestination");
        assert!(e.retryable);
        let e = judge_response(200, ct, br#"{"requestId":"r1"}"#, false, "r1").unwrap_err();
        assert!(e.retryable);
        let e = judge_response(200, Some("text/plain"), ok, false, "r1").unwrap_err();
        assert_eq!(e.code, "HttpEndpoint.InvalidResponseFromDestination");
        let e = judge_response(201, ct, ok, false, "r1").unwrap_err();
        assert_eq!(e.code, "HttpEndpoint.DestinationException");
        assert!(e.retryable);
        let e = judge_response(413, ct, b"too big", false, "r1").unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("413"));
        let e = judge_response(500, ct, b"boom", false, "r1").unwrap_err();
        assert!(e.retryable && e.message.contains("boom"));
        let e = judge_response(200, ct, ok, true, "r1").unwrap_err();
        assert_eq!(e.code, "HttpEndpoint.ResponseTooLarge");
        assert!(judge_response(200, ct, b"not json", false, "r1").is_err());
    }

    #[test]
    fn error_records_are_json_lines() {
        let mut out = Vec::new();
        for raw in [b"test".as_slice(), b"x"] {
            error_record(
                &mut out,
                &ErrorRecord {
                    attempts_made: 3,
                    arrival_ms: 10,
                    error_code: "HttpEndpoint.ConnectionFailed",
                    error_message: "down",
                    attempt_ending_ms: 20,
                    raw,
                },
            );
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["attemptsMade"], 3);
        assert_eq!(v["rawData"], "dGVzdA==");
        assert_eq!(v["errorCode"], "HttpEndpoint.ConnectionFailed");
        assert_eq!(v["arrivalTimestamp"], 10);
        assert_eq!(v["attemptEndingTimestamp"], 20);
    }

    fn parts(at: OffsetDateTime) -> KeyParts<'static> {
        KeyParts {
            stream: "s",
            version: 2,
            at,
            random: "abc123",
            extension: "",
        }
    }

    #[test]
    fn key_layout_follows_aws() {
        let at = datetime!(2026-03-04 05:06:07 UTC);
        assert_eq!(
            object_key("logs/", &parts(at)).unwrap(),
            "logs/2026/03/04/05/s-2-2026-03-04-05-06-07-abc123"
        );
        assert_eq!(
            error_key("logs/", None, HTTP_ERROR_OUTPUT_TYPE, &parts(at)).unwrap(),
            "logs/http-endpoint-failed/2026/03/04/05/s-2-2026-03-04-05-06-07-abc123"
        );
        assert_eq!(
            error_key("", None, HTTP_ERROR_OUTPUT_TYPE, &parts(at)).unwrap(),
            "http-endpoint-failed/2026/03/04/05/s-2-2026-03-04-05-06-07-abc123"
        );
        assert_eq!(
            error_key(
                "x/",
                Some("err/!{firehose:error-output-type}/!{timestamp:yyyy-MM-dd}/"),
                HTTP_ERROR_OUTPUT_TYPE,
                &parts(at)
            )
            .unwrap(),
            "err/http-endpoint-failed/2026-03-04/s-2-2026-03-04-05-06-07-abc123"
        );
        assert_eq!(
            error_key("x/", Some("err/"), HTTP_ERROR_OUTPUT_TYPE, &parts(at)).unwrap(),
            "err/2026/03/04/05/s-2-2026-03-04-05-06-07-abc123"
        );
        assert_eq!(
            object_key("d/!{timestamp:yyyy}/!{firehose:random-string}/", &parts(at)).unwrap(),
            "d/2026/abc123/s-2-2026-03-04-05-06-07-abc123"
        );
        assert!(object_key("d/!{firehose:error-output-type}/", &parts(at)).is_err());
        assert!(object_key("d/!{nope}/", &parts(at)).is_err());
        assert!(java_time("yyyy-QQ", at).is_err());
    }

    #[test]
    fn backoff_doubles_from_one_second_to_two_minutes_with_jitter() {
        assert_eq!(backoff_ms(1, 0.5, 1.0), 1000);
        assert_eq!(backoff_ms(2, 0.5, 1.0), 2000);
        assert_eq!(backoff_ms(3, 0.0, 1.0), 3400);
        assert_eq!(backoff_ms(3, 1.0, 1.0), 4600);
        assert_eq!(backoff_ms(8, 0.5, 1.0), 120_000);
        assert_eq!(backoff_ms(40, 1.0, 1.0), 120_000);
        assert_eq!(backoff_ms(1, 0.5, 0.01), 10);
        for n in 1..30 {
            for u in [0.0, 0.3, 1.0] {
                let b = backoff_ms(n, u, 1.0);
                assert!((850..=120_000).contains(&b), "{n} {u} {b}");
            }
        }
    }

    #[test]
    fn retry_clock_starts_at_the_first_failure() {
        // Duration 0: no retry at all.
        assert_eq!(after_failure(1000, 1000, 1, 0, 0.5, 1.0), NextStep::GiveUp);
        // 10 s budget: first retry after ~1 s.
        assert_eq!(
            after_failure(1000, 1000, 1, 10, 0.5, 1.0),
            NextStep::RetryAt(2000)
        );
        // A wait that would pass the deadline is cut to the deadline (one last attempt).
        assert_eq!(
            after_failure(1000, 9000, 5, 10, 0.5, 1.0),
            NextStep::RetryAt(11_000)
        );
        assert_eq!(
            after_failure(1000, 11_000, 6, 10, 0.5, 1.0),
            NextStep::GiveUp
        );
    }
}
