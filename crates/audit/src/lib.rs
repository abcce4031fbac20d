//! The audit trail: one CloudTrail-style record per audited call (success or denial).
//!
//! Design constraints:
//! - A record never holds plaintext, ciphertext, key material or secret values: callers build
//!   `request_parameters` / `response_elements` only from identifiers, encryption contexts and
//!   sizes. [`AuditRecord`] has no field that could carry a blob.
//! - Records are appended to the store namespace [`NS`] with `Op::Append`, so they are kept in
//!   commit order and each is committed before the audited call answers its client. The
//!   record of a state change commits in the change's own batch (durable together); the record
//!   of a call that changed nothing (Encrypt, Decrypt, GetSecretValue, any denial) uses the
//!   store's deferred sync: it survives `kill -9` at once and reaches the disk within the
//!   store's deferred-sync interval (50 ms by default), like CloudTrail, which also records
//!   calls after it answers them, and without an fsync per read.
//! - Reads (the `sluice audit` command and CloudTrail `LookupEvents`) scan newest first and
//!   filter in memory; the trail is an operator tool, not a hot path.
//!
//! # Stored format
//! Namespace `audit`, key = store-assigned append key (commit sequence, op index), value = the
//! record as JSON (the CloudTrail event document shape, camelCase), with a `"v": 1` marker.

pub mod lookup;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::{AwsError, CallContext, Clock};
use sluice_store::{Batch, KeyRange, Store};

/// Store namespace of audit records.
pub const NS: &str = "audit";

/// Who made the call (CloudTrail `userIdentity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    /// `Root`, `IAMUser`, `AssumedRole`, `AWSService`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The principal id (`aws:userid`).
    pub principal_id: String,
    /// The principal ARN.
    pub arn: String,
    /// The principal's account.
    pub account_id: String,
    /// The access key the request was signed with.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub access_key_id: Option<String>,
    /// The service that made the call on the principal's behalf (`secretsmanager.amazonaws.com`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub invoked_by: Option<String>,
}

/// A resource the call touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditResource {
    /// The resource ARN.
    #[serde(rename = "ARN")]
    pub arn: String,
    /// The CloudTrail resource type, e.g. `AWS::KMS::Key`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// One audited call, in the CloudTrail event document shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Format marker.
    #[serde(default = "one")]
    pub v: u8,
    /// CloudTrail's `eventVersion`.
    pub event_version: String,
    /// Unique id of this record.
    pub event_id: String,
    /// RFC 3339 time of the call.
    pub event_time: String,
    /// Unix milliseconds of the call (for filtering).
    pub event_time_ms: i64,
    /// `kms.amazonaws.com`, ...
    pub event_source: String,
    /// The operation, e.g. `Decrypt`.
    pub event_name: String,
    /// The region.
    pub aws_region: String,
    /// The caller's address, or the invoking service's name for service calls.
    #[serde(rename = "sourceIPAddress")]
    pub source_ip_address: String,
    /// The caller's User-Agent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_agent: Option<String>,
    /// Who.
    pub user_identity: UserIdentity,
    /// Request parameters: identifiers and encryption contexts only, never data.
    pub request_parameters: serde_json::Value,
    /// Response elements: identifiers only, never data.
    pub response_elements: serde_json::Value,
    /// The AWS error code if the call failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_code: Option<String>,
    /// The error message if the call failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_message: Option<String>,
    /// The request id.
    pub request_id: String,
    /// Resources touched.
    pub resources: Vec<AuditResource>,
    /// Whether the call only read.
    pub read_only: bool,
    /// `AwsApiCall` or `AwsServiceEvent`.
    pub event_type: String,
    /// Whether the call was made by a service on the principal's behalf... and the account.
    pub recipient_account_id: String,
}

fn one() -> u8 {
    1
}

/// What an audited call is, before its outcome is known.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    /// `kms.amazonaws.com`, ...
    pub event_source: &'a str,
    /// The operation.
    pub event_name: &'a str,
    /// Sanitized request parameters.
    pub request_parameters: serde_json::Value,
    /// Resources.
    pub resources: Vec<AuditResource>,
    /// Read-only call?
    pub read_only: bool,
}

/// Filters for reading the trail.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Records whose resources include this ARN or key id (substring of an ARN).
    pub resource: Option<String>,
    /// Records by this principal ARN (or principal id, or access key id).
    pub principal: Option<String>,
    /// Records of this operation.
    pub event_name: Option<String>,
    /// Records of this event source.
    pub event_source: Option<String>,
    /// Records at or after this time (Unix ms).
    pub start_ms: Option<i64>,
    /// Records before or at this time (Unix ms).
    pub end_ms: Option<i64>,
    /// Records with this event id.
    pub event_id: Option<String>,
    /// Records with this read-only flag.
    pub read_only: Option<bool>,
    /// Records signed with this access key id.
    pub access_key_id: Option<String>,
}

impl AuditFilter {
    /// Whether `r` passes every filter.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        if let Some(res) = &self.resource
            && !r
                .resources
                .iter()
                .any(|x| x.arn == *res || x.arn.contains(res.as_str()))
        {
            return false;
        }
        if let Some(p) = &self.principal {
            let u = &r.user_identity;
            if u.arn != *p && u.principal_id != *p && u.access_key_id.as_deref() != Some(p) {
                return false;
            }
        }
        if let Some(n) = &self.event_name
            && r.event_name != *n
        {
            return false;
        }
        if let Some(s) = &self.event_source
            && r.event_source != *s
        {
            return false;
        }
        if let Some(t) = self.start_ms
            && r.event_time_ms < t
        {
            return false;
        }
        if let Some(t) = self.end_ms
            && r.event_time_ms > t
        {
            return false;
        }
        if let Some(id) = &self.event_id
            && r.event_id != *id
        {
            return false;
        }
        if let Some(ro) = self.read_only
            && r.read_only != ro
        {
            return false;
        }
        if let Some(k) = &self.access_key_id
            && r.user_identity.access_key_id.as_deref() != Some(k.as_str())
        {
            return false;
        }
        true
    }
}

/// The audit trail over a store.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    account: String,
}

impl AuditLog {
    /// A trail writing to `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, account: &str) -> Self {
        Self {
            store,
            clock,
            account: account.to_string(),
        }
    }

    /// Builds the record of a call made in `ctx`, with its outcome.
    pub fn record_for(
        &self,
        ctx: &CallContext,
        ev: AuditEvent<'_>,
        outcome: Result<serde_json::Value, &AwsError>,
    ) -> AuditRecord {
        let now = self.clock.now();
        let invoked_by = ctx.via_service.as_ref().map(|v| {
            // `secretsmanager.us-east-1.amazonaws.com` -> `secretsmanager.amazonaws.com`
            let svc = v.split('.').next().unwrap_or(v);
            format!("{svc}.amazonaws.com")
        });
        let p = &ctx.principal;
        let (response_elements, error_code, error_message) = match outcome {
            Ok(v) => (v, None, None),
            Err(e) => (
                serde_json::Value::Null,
                Some(e.code.to_string()),
                Some(e.message.clone()),
            ),
        };
        AuditRecord {
            v: 1,
            event_version: "1.08".to_string(),
            event_id: uuid::Uuid::new_v4().to_string(),
            event_time: now
                .replace_nanosecond(0)
                .unwrap_or(now)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            event_time_ms: (now.unix_timestamp_nanos() / 1_000_000) as i64,
            event_source: ev.event_source.to_string(),
            event_name: ev.event_name.to_string(),
            aws_region: ctx.region.clone(),
            source_ip_address: match (&invoked_by, &ctx.source_ip) {
                (Some(svc), _) => svc.clone(),
                (None, Some(ip)) => ip.clone(),
                (None, None) => "127.0.0.1".to_string(),
            },
            user_agent: ctx.user_agent.clone(),
            user_identity: UserIdentity {
                kind: p.trail_type().to_string(),
                principal_id: p.user_id.clone(),
                arn: p.arn.clone(),
                account_id: p.account.clone(),
                access_key_id: p.access_key_id.clone(),
                invoked_by,
            },
            request_parameters: ev.request_parameters,
            response_elements,
            error_code,
            error_message,
            request_id: ctx.request_id.clone(),
            resources: ev.resources,
            read_only: ev.read_only,
            event_type: "AwsApiCall".to_string(),
            recipient_account_id: self.account.clone(),
        }
    }

    /// The batch op that appends `record` (to commit it together with a state change).
    pub fn append_to(&self, batch: Batch, record: &AuditRecord) -> Batch {
        let json = serde_json::to_vec(record).expect("audit records serialize");
        batch.append(NS, json)
    }

    /// Appends the record of a call that changed nothing (a read, a denial, a failed call),
    /// with the store's deferred durability ([`Store::apply_deferred`]): committed before the
    /// call answers and safe from `kill -9`; synced to disk within the store's deferred-sync
    /// interval. A call that changed state commits its record with the change instead
    /// ([`AuditLog::append_to`] into the change's batch).
    pub async fn write(&self, record: &AuditRecord) -> Result<(), AwsError> {
        let batch = self.append_to(Batch::new(), record);
        self.store
            .apply_deferred(batch)
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, "audit write failed");
                AwsError::internal()
            })
    }

    /// Reads up to `limit` records passing `filter`, newest first, starting after the store key
    /// `before` (exclusive; for pagination). Returns the records with their store keys.
    pub async fn query(
        &self,
        filter: &AuditFilter,
        limit: usize,
        before: Option<Vec<u8>>,
    ) -> Result<Vec<(Vec<u8>, AuditRecord)>, AwsError> {
        let mut out = Vec::new();
        let mut end = before;
        const PAGE: usize = 512;
        loop {
            let range = KeyRange {
                start: None,
                end: end.clone(),
            };
            let rows = self.store.scan(NS, range, PAGE, true).await.map_err(|e| {
                tracing::error!(error = %e, "audit read failed");
                AwsError::internal()
            })?;
            let n = rows.len();
            for (key, v) in rows {
                end = Some(key.clone());
                let Ok(rec) = serde_json::from_slice::<AuditRecord>(&v.value) else {
                    continue;
                };
                // Records are in commit order, so once we are before the window we can stop.
                if let Some(t) = filter.start_ms
                    && rec.event_time_ms < t - 60_000
                {
                    return Ok(out);
                }
                if filter.matches(&rec) {
                    out.push((key, rec));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if n < PAGE {
                return Ok(out);
            }
        }
    }
}
