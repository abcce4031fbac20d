//! CloudTrail `LookupEvents` over the audit trail (`aws cloudtrail lookup-events`).
//!
//! Input and output follow the CloudTrail 2013-11-01 model: at most one lookup attribute,
//! `StartTime`/`EndTime` in epoch seconds (default: the last 90 days), `MaxResults` 1-50
//! (default 50), an opaque `NextToken` (the base64 of the last returned record's store key).

use base64::Engine;
use serde_json::{Value, json};
use sluice_core::AwsError;

use crate::{AuditFilter, AuditLog, AuditRecord};

const NINETY_DAYS_MS: i64 = 90 * 24 * 3600 * 1000;

fn secs_to_ms(v: &Value) -> Option<i64> {
    v.as_f64().map(|s| (s * 1000.0) as i64)
}

/// Answers a `LookupEvents` request body with its response body.
pub async fn lookup_events(log: &AuditLog, input: &Value, now_ms: i64) -> Result<Value, AwsError> {
    let mut filter = AuditFilter::default();
    if let Some(attrs) = input.get("LookupAttributes").and_then(Value::as_array) {
        if attrs.len() > 1 {
            return Err(AwsError::client(
                "InvalidLookupAttributesException",
                "You cannot specify more than one lookup attribute.",
            ));
        }
        if let Some(a) = attrs.first() {
            let key = a.get("AttributeKey").and_then(Value::as_str).unwrap_or("");
            let val = a
                .get("AttributeValue")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match key {
                "EventId" => filter.event_id = Some(val),
                "EventName" => filter.event_name = Some(val),
                "ReadOnly" => match val.as_str() {
                    "true" => filter.read_only = Some(true),
                    "false" => filter.read_only = Some(false),
                    _ => {
                        return Err(AwsError::client(
                            "InvalidLookupAttributesException",
                            "ReadOnly must be true or false.",
                        ));
                    }
                },
                "Username" => filter.principal = Some(val),
                "ResourceName" => filter.resource = Some(val),
                "EventSource" => filter.event_source = Some(val),
                "AccessKeyId" => filter.access_key_id = Some(val),
                "ResourceType" => {
                    // Every record sluice writes is about a resource type it names; filter below.
                    filter.resource = None;
                }
                other => {
                    return Err(AwsError::client(
                        "InvalidLookupAttributesException",
                        format!("Lookup attribute key {other} is not supported."),
                    ));
                }
            }
        }
    }
    let resource_type = input
        .get("LookupAttributes")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .filter(|a| a.get("AttributeKey").and_then(Value::as_str) == Some("ResourceType"))
        .and_then(|a| a.get("AttributeValue").and_then(Value::as_str))
        .map(str::to_string);
    let start = input.get("StartTime").and_then(secs_to_ms);
    let end = input.get("EndTime").and_then(secs_to_ms);
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(AwsError::client(
            "InvalidTimeRangeException",
            "Start time must be before end time.",
        ));
    }
    filter.start_ms = Some(start.unwrap_or(now_ms - NINETY_DAYS_MS));
    filter.end_ms = end;
    let max = match input.get("MaxResults") {
        None | Some(Value::Null) => 50,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=50).contains(&n) => n as usize,
            _ => {
                return Err(AwsError::client(
                    "InvalidMaxResultsException",
                    "MaxResults must be between 1 and 50.",
                ));
            }
        },
    };
    let before = match input.get("NextToken").and_then(Value::as_str) {
        None => None,
        Some(t) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .map_err(|_| {
                    AwsError::client("InvalidNextTokenException", "The NextToken is not valid.")
                })?,
        ),
    };
    // Fetch one more than asked to know whether there is a next page.
    let mut rows = if let Some(rt) = &resource_type {
        let all = log.query(&filter, usize::MAX, before).await?;
        all.into_iter()
            .filter(|(_, r)| r.resources.iter().any(|x| &x.kind == rt))
            .take(max + 1)
            .collect()
    } else {
        log.query(&filter, max + 1, before).await?
    };
    let next = if rows.len() > max {
        rows.truncate(max);
        rows.last()
            .map(|(k, _)| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k))
    } else {
        None
    };
    let events: Vec<Value> = rows.iter().map(|(_, r)| event_json(r)).collect();
    let mut out = json!({ "Events": events });
    if let Some(n) = next {
        out["NextToken"] = Value::String(n);
    }
    Ok(out)
}

fn event_json(r: &AuditRecord) -> Value {
    let username = match r.user_identity.kind.as_str() {
        "Root" => "root".to_string(),
        _ => r
            .user_identity
            .arn
            .rsplit('/')
            .next()
            .unwrap_or(&r.user_identity.arn)
            .to_string(),
    };
    let mut e = json!({
        "EventId": r.event_id,
        "EventName": r.event_name,
        "ReadOnly": if r.read_only { "true" } else { "false" },
        "EventTime": r.event_time_ms as f64 / 1000.0,
        "EventSource": r.event_source,
        "Username": username,
        "Resources": r.resources.iter().map(|x| json!({"ResourceType": x.kind, "ResourceName": x.arn})).collect::<Vec<_>>(),
        "CloudTrailEvent": serde_json::to_string(r).unwrap_or_default(),
    });
    if let Some(k) = &r.user_identity.access_key_id {
        e["AccessKeyId"] = Value::String(k.clone());
    }
    e
}
