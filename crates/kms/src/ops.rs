//! The KMS operations.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};
use sluice_audit::{AuditEvent, AuditResource};
use sluice_core::{AwsError, CallContext, Principal};
use sluice_crypto::{KeyMaterial, canonical_context, decrypt_with_material, encrypt_with_material};
use sluice_store::{Batch, KeyRange, StoreError};
use zeroize::Zeroizing;

use crate::authz::KeyRequest;
use crate::model::{
    AliasRecord, KeyRecord, MaterialRecord, NS_ALIASES, NS_KEYS, RotationRecord, secs,
};
use crate::{DataKey, EVENT_SOURCE, Kms, LoadedKey, internal};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const DAY_MS: i64 = 24 * 3600 * 1000;
const MAX_TAGS: usize = 50;
const MAX_POLICY_BYTES: usize = 32 * 1024;
const KEY_RESOURCE_TYPE: &str = "AWS::KMS::Key";

/// The audit facts an operation gathers as it runs.
#[derive(Default)]
pub(crate) struct AuditCtx {
    params: Value,
    resources: Vec<AuditResource>,
}

impl AuditCtx {
    fn key(&mut self, arn: &str) {
        if !self.resources.iter().any(|r| r.arn == arn) {
            self.resources.push(AuditResource {
                arn: arn.to_string(),
                kind: KEY_RESOURCE_TYPE.to_string(),
            });
        }
    }
}

/// What a successful operation produced.
pub(crate) struct Outcome {
    response: Value,
    /// State changes to commit together with the audit record.
    batch: Option<Batch>,
    /// Identifiers for the audit record's responseElements.
    elements: Value,
    /// Key ids whose cached copy must be dropped after commit.
    touched: Vec<String>,
}

impl Outcome {
    fn read(response: Value) -> Self {
        Self {
            response,
            batch: None,
            elements: Value::Null,
            touched: Vec::new(),
        }
    }

    fn write(response: Value, batch: Batch, touched: &str) -> Self {
        Self {
            response,
            batch: Some(batch),
            elements: Value::Null,
            touched: vec![touched.to_string()],
        }
    }
}

fn is_read_only(op: &str) -> bool {
    matches!(
        op,
        "DescribeKey"
            | "ListKeys"
            | "ListAliases"
            | "ListResourceTags"
            | "GetKeyPolicy"
            | "ListKeyPolicies"
            | "GetKeyRotationStatus"
            | "Encrypt"
            | "Decrypt"
            | "ReEncrypt"
            | "GenerateDataKey"
            | "GenerateDataKeyWithoutPlaintext"
            | "GenerateRandom"
    )
}

pub(crate) async fn dispatch(
    k: &Kms,
    op: &str,
    ctx: &CallContext,
    input: Value,
) -> Result<Value, AwsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut a = AuditCtx {
            params: audit_params(op, &input),
            resources: Vec::new(),
        };
        let result = run_op(k, op, ctx, &input, &mut a).await;
        match finish(k, ctx, op, a, result).await {
            Err(Retry) if attempt < 8 => continue,
            Err(Retry) => {
                return Err(AwsError::client(
                    "ConcurrentModificationException",
                    "The key was modified concurrently; retry the request.",
                ));
            }
            Ok(r) => return r,
        }
    }
}

struct Retry;

/// Marker in [`Outcome::touched`] for "an alias changed".
const ALIASES: &str = "alias:*";

fn forget_touched(k: &Kms, touched: &[String]) {
    for id in touched {
        if id == ALIASES {
            k.forget_aliases();
        } else {
            k.forget(id);
        }
    }
}

async fn finish(
    k: &Kms,
    ctx: &CallContext,
    op: &str,
    a: AuditCtx,
    result: Result<Outcome, AwsError>,
) -> Result<Result<Value, AwsError>, Retry> {
    let ev = AuditEvent {
        event_source: EVENT_SOURCE,
        event_name: op,
        request_parameters: a.params,
        resources: a.resources,
        read_only: is_read_only(op),
    };
    match result {
        Ok(out) => {
            let record = k.audit.record_for(ctx, ev, Ok(out.elements));
            // A call that changed nothing commits only its audit record: deferred sync.
            let applied = match out.batch {
                Some(batch) => k.store.apply(k.audit.append_to(batch, &record)).await,
                None => {
                    let batch = k.audit.append_to(Default::default(), &record);
                    k.store.apply_deferred(batch).await
                }
            };
            match applied {
                Ok(_) => {
                    forget_touched(k, &out.touched);
                    Ok(Ok(out.response))
                }
                Err(StoreError::Conflict) => {
                    forget_touched(k, &out.touched);
                    Err(Retry)
                }
                Err(e) => Ok(Err(internal(e))),
            }
        }
        Err(err) => {
            let record = k.audit.record_for(ctx, ev, Err(&err));
            if let Err(e) = k.audit.write(&record).await {
                return Ok(Err(e));
            }
            Ok(Err(err))
        }
    }
}

async fn run_op(
    k: &Kms,
    op: &str,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    match op {
        "CreateKey" => create_key(k, ctx, input, a).await,
        "DescribeKey" => describe_key(k, ctx, input, a).await,
        "ListKeys" => list_keys(k, ctx, input).await,
        "CreateAlias" => create_alias(k, ctx, input, a).await,
        "UpdateAlias" => update_alias(k, ctx, input, a).await,
        "DeleteAlias" => delete_alias(k, ctx, input, a).await,
        "ListAliases" => list_aliases(k, ctx, input, a).await,
        "EnableKey" => set_enabled(k, ctx, input, a, true).await,
        "DisableKey" => set_enabled(k, ctx, input, a, false).await,
        "ScheduleKeyDeletion" => schedule_deletion(k, ctx, input, a).await,
        "CancelKeyDeletion" => cancel_deletion(k, ctx, input, a).await,
        "TagResource" => tag_resource(k, ctx, input, a).await,
        "UntagResource" => untag_resource(k, ctx, input, a).await,
        "ListResourceTags" => list_tags(k, ctx, input, a).await,
        "GetKeyPolicy" => get_key_policy(k, ctx, input, a).await,
        "PutKeyPolicy" => put_key_policy(k, ctx, input, a).await,
        "ListKeyPolicies" => list_key_policies(k, ctx, input, a).await,
        "Encrypt" => encrypt(k, ctx, input, a).await,
        "Decrypt" => decrypt(k, ctx, input, a).await,
        "ReEncrypt" => re_encrypt(k, ctx, input, a).await,
        "GenerateDataKey" => generate_data_key(k, ctx, input, a, true).await,
        "GenerateDataKeyWithoutPlaintext" => generate_data_key(k, ctx, input, a, false).await,
        "GenerateRandom" => generate_random(k, ctx, input).await,
        "EnableKeyRotation" => enable_rotation(k, ctx, input, a).await,
        "DisableKeyRotation" => disable_rotation(k, ctx, input, a).await,
        "GetKeyRotationStatus" => rotation_status(k, ctx, input, a).await,
        "RotateKeyOnDemand" => rotate_on_demand(k, ctx, input, a).await,
        "UpdateKeyDescription" => update_description(k, ctx, input, a).await,
        other => Err(AwsError::client(
            "UnsupportedOperationException",
            format!("The operation {other} is not supported by sluice's KMS yet."),
        )),
    }
}

/// Request parameters for the audit record: identifiers, contexts and sizes, never data.
fn audit_params(op: &str, input: &Value) -> Value {
    const KEEP: &[&str] = &[
        "KeyId",
        "SourceKeyId",
        "DestinationKeyId",
        "EncryptionContext",
        "SourceEncryptionContext",
        "DestinationEncryptionContext",
        "EncryptionAlgorithm",
        "KeySpec",
        "NumberOfBytes",
        "KeyUsage",
        "Description",
        "AliasName",
        "TargetKeyId",
        "PendingWindowInDays",
        "PolicyName",
        "Policy",
        "BypassPolicyLockoutSafetyCheck",
        "TagKeys",
        "RotationPeriodInDays",
        "DryRun",
        "Origin",
    ];
    let mut out = serde_json::Map::new();
    if let Value::Object(m) = input {
        for (key, v) in m {
            if KEEP.contains(&key.as_str()) {
                // CloudTrail uses lowerCamel member names.
                let mut name = key.clone();
                if let Some(first) = name.get_mut(0..1) {
                    first.make_ascii_lowercase();
                }
                out.insert(name, v.clone());
            }
        }
        if (op == "TagResource" || op == "CreateKey")
            && let Some(tags) = m.get("Tags")
        {
            out.insert("tags".into(), tags.clone());
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

// ---------------------------------------------------------------- input helpers

fn s<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

fn req_s<'a>(input: &'a Value, name: &str) -> Result<&'a str, AwsError> {
    s(input, name).ok_or_else(|| {
        let mut lc = name.to_string();
        if let Some(f) = lc.get_mut(0..1) {
            f.make_ascii_lowercase();
        }
        AwsError::validation(format!(
            "1 validation error detected: Value null at '{lc}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

fn blob(input: &Value, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, AwsError> {
    match s(input, name) {
        None => Ok(None),
        Some(t) => B64.decode(t).map(|v| Some(Zeroizing::new(v))).map_err(|_| {
            AwsError::serialization(format!("Value for '{name}' is not valid base64."))
        }),
    }
}

fn context(input: &Value, name: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(m)) = input.get(name) {
        for (key, v) in m {
            let v = v.as_str().ok_or_else(|| {
                AwsError::serialization(format!("The value of '{name}.{key}' must be a string."))
            })?;
            out.insert(key.clone(), v.to_string());
        }
    }
    Ok(out)
}

fn canonical(c: &BTreeMap<String, String>) -> Vec<u8> {
    canonical_context(c.iter().map(|(a, b)| (a.as_str(), b.as_str())))
}

fn dry_run(input: &Value) -> bool {
    input
        .get("DryRun")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn dry_run_error() -> AwsError {
    AwsError::with_status(
        "DryRunOperationException",
        412,
        "The request would have succeeded, but the DryRun option is set.",
    )
}

fn not_found(what: impl Into<String>) -> AwsError {
    AwsError::client("NotFoundException", what)
}

fn invalid_state(msg: impl Into<String>) -> AwsError {
    AwsError::client("KMSInvalidStateException", msg)
}

// ---------------------------------------------------------------- key resolution

/// What a KeyId string names.
pub(crate) enum KeyRef {
    Id(String),
    Alias(String),
}

pub(crate) fn parse_key_ref(k: &Kms, raw: &str) -> Result<KeyRef, AwsError> {
    let invalid = || not_found(format!("Invalid keyId '{raw}'"));
    if let Some(rest) = raw.strip_prefix("arn:") {
        // arn:aws:kms:<region>:<account>:key/<id> | alias/<name>
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        if parts.len() != 5 || parts[1] != "kms" {
            return Err(not_found(format!("Invalid arn {raw}")));
        }
        if parts[2] != k.cfg.region || parts[3] != k.cfg.account {
            return Err(not_found(format!("Key '{raw}' does not exist")));
        }
        let res = parts[4];
        if let Some(id) = res.strip_prefix("key/") {
            return if is_uuid(id) {
                Ok(KeyRef::Id(id.to_string()))
            } else {
                Err(not_found(format!("Invalid arn {raw}")))
            };
        }
        if res.starts_with("alias/") {
            return Ok(KeyRef::Alias(res.to_string()));
        }
        return Err(not_found(format!("Invalid arn {raw}")));
    }
    if raw.starts_with("alias/") {
        return Ok(KeyRef::Alias(raw.to_string()));
    }
    if is_uuid(raw) {
        return Ok(KeyRef::Id(raw.to_ascii_lowercase()));
    }
    Err(invalid())
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Resolves a KeyId (id, key ARN, alias name or alias ARN) to a loaded key, recording it for
/// the audit trail. Keys whose deletion window has passed are gone.
async fn resolve(k: &Kms, raw: &str, a: &mut AuditCtx) -> Result<Arc<LoadedKey>, AwsError> {
    let id = match parse_key_ref(k, raw)? {
        KeyRef::Id(id) => id,
        KeyRef::Alias(alias) => k
            .alias_target(&alias)
            .await?
            .ok_or_else(|| not_found(format!("Alias {} is not found.", k.alias_arn(&alias))))?,
    };
    let key = k
        .load_key(&id)
        .await?
        .ok_or_else(|| not_found(format!("Key '{}' does not exist", k.key_arn(&id))))?;
    if key.record.state == "PendingDeletion"
        && key
            .record
            .deletion_ms
            .is_some_and(|d| d <= k.clock.now_millis())
    {
        return Err(not_found(format!(
            "Key '{}' does not exist",
            key.record.arn
        )));
    }
    a.key(&key.record.arn);
    Ok(key)
}

fn authorize(
    k: &Kms,
    ctx: &CallContext,
    action: &str,
    key: &KeyRecord,
    enc: Option<&BTreeMap<String, String>>,
) -> Result<(), AwsError> {
    k.authz.authorize(
        ctx,
        &KeyRequest {
            action,
            key: Some(key),
            resource: &key.arn,
            encryption_context: enc,
            request_tags: None,
        },
    )
}

fn require_usable(key: &KeyRecord) -> Result<(), AwsError> {
    match key.state.as_str() {
        "Enabled" => Ok(()),
        "Disabled" => Err(AwsError::client(
            "DisabledException",
            format!("{} is disabled.", key.arn),
        )),
        "PendingDeletion" => Err(invalid_state(format!("{} is pending deletion.", key.arn))),
        other => Err(invalid_state(format!("{} is {other}.", key.arn))),
    }
}

fn require_not_pending(key: &KeyRecord) -> Result<(), AwsError> {
    if key.state == "PendingDeletion" {
        Err(invalid_state(format!("{} is pending deletion.", key.arn)))
    } else {
        Ok(())
    }
}

fn require_customer(key: &KeyRecord, op: &str) -> Result<(), AwsError> {
    if key.key_manager == "AWS" {
        Err(AwsError::client(
            "UnsupportedOperationException",
            format!("{op} is not supported on AWS managed key {}.", key.arn),
        ))
    } else {
        Ok(())
    }
}

fn key_put(batch: Batch, key: &LoadedKey, record: &KeyRecord) -> Batch {
    batch
        .expect(NS_KEYS, record.key_id.as_bytes(), Some(key.version))
        .put(
            NS_KEYS,
            record.key_id.as_bytes(),
            serde_json::to_vec(record).expect("key records serialize"),
        )
}

fn mutate(key: &LoadedKey, response: Value, f: impl FnOnce(&mut KeyRecord)) -> Outcome {
    let mut rec = key.record.clone();
    f(&mut rec);
    Outcome::write(response, key_put(Batch::new(), key, &rec), &rec.key_id)
}

// ---------------------------------------------------------------- tags

fn parse_tags(input: &Value) -> Result<Vec<(String, String)>, AwsError> {
    let mut out: Vec<(String, String)> = Vec::new();
    if let Some(Value::Array(tags)) = input.get("Tags") {
        for t in tags {
            let key = t.get("TagKey").and_then(Value::as_str).unwrap_or_default();
            let val = t
                .get("TagValue")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if key.starts_with("aws:") {
                return Err(AwsError::client(
                    "TagException",
                    "Tag keys beginning with 'aws:' are reserved for AWS use.",
                ));
            }
            if let Some(e) = out.iter_mut().find(|(k, _)| k == key) {
                e.1 = val.to_string();
            } else {
                out.push((key.to_string(), val.to_string()));
            }
        }
    }
    Ok(out)
}

fn merge_tags(
    existing: &mut Vec<(String, String)>,
    new: Vec<(String, String)>,
) -> Result<(), AwsError> {
    for (key, val) in new {
        if let Some(e) = existing.iter_mut().find(|(k, _)| *k == key) {
            e.1 = val;
        } else {
            existing.push((key, val));
        }
    }
    if existing.len() > MAX_TAGS {
        return Err(AwsError::client(
            "TagException",
            format!("A key can have at most {MAX_TAGS} tags."),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- key lifecycle

fn default_policy(account: &str) -> String {
    serde_json::to_string_pretty(&json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    }))
    .expect("json")
}

fn check_policy_size(policy: &str) -> Result<(), AwsError> {
    if policy.len() > MAX_POLICY_BYTES {
        return Err(AwsError::client(
            "LimitExceededException",
            format!("The key policy is larger than {MAX_POLICY_BYTES} bytes."),
        ));
    }
    Ok(())
}

/// Builds a fresh key record (with one material version) and its batch.
pub(crate) fn new_key_record(
    k: &Kms,
    description: &str,
    policy: String,
    tags: Vec<(String, String)>,
    key_manager: &str,
) -> KeyRecord {
    let key_id = uuid::Uuid::new_v4().to_string();
    let now = k.clock.now_millis();
    let material = KeyMaterial::generate();
    let sealed = k.seal_material(&key_id, 1, &material);
    KeyRecord {
        v: 1,
        arn: k.key_arn(&key_id),
        key_id,
        account: k.cfg.account.clone(),
        created_ms: now,
        description: description.to_string(),
        state: "Enabled".into(),
        deletion_ms: None,
        pending_window_days: None,
        key_usage: "ENCRYPT_DECRYPT".into(),
        key_spec: "SYMMETRIC_DEFAULT".into(),
        origin: "AWS_KMS".into(),
        key_manager: key_manager.into(),
        policy,
        tags,
        rotation: if key_manager == "AWS" {
            RotationRecord {
                enabled: true,
                period_days: 365,
                next_ms: Some(now + 365 * DAY_MS),
                on_demand_ms: None,
            }
        } else {
            RotationRecord {
                enabled: false,
                period_days: 365,
                next_ms: None,
                on_demand_ms: None,
            }
        },
        materials: vec![MaterialRecord {
            id: 1,
            created_ms: now,
            sealed,
        }],
        current_material: 1,
    }
}

async fn create_key(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    _a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let spec = s(input, "KeySpec")
        .or(s(input, "CustomerMasterKeySpec"))
        .unwrap_or("SYMMETRIC_DEFAULT");
    if spec != "SYMMETRIC_DEFAULT" {
        return Err(AwsError::client(
            "UnsupportedOperationException",
            format!(
                "KeySpec {spec} is not supported by sluice yet; only SYMMETRIC_DEFAULT keys can be created."
            ),
        ));
    }
    let usage = s(input, "KeyUsage").unwrap_or("ENCRYPT_DECRYPT");
    if usage != "ENCRYPT_DECRYPT" {
        return Err(AwsError::validation(format!(
            "KeyUsage {usage} is not compatible with KeySpec SYMMETRIC_DEFAULT."
        )));
    }
    let origin = s(input, "Origin").unwrap_or("AWS_KMS");
    if origin != "AWS_KMS" {
        return Err(AwsError::client(
            "UnsupportedOperationException",
            format!("Origin {origin} is not supported by sluice yet."),
        ));
    }
    if input.get("MultiRegion").and_then(Value::as_bool) == Some(true) {
        return Err(AwsError::client(
            "UnsupportedOperationException",
            "Multi-Region keys are not supported by sluice.",
        ));
    }
    let tags = parse_tags(input)?;
    if tags.len() > MAX_TAGS {
        return Err(AwsError::client("TagException", "Too many tags."));
    }
    k.authz.authorize(
        ctx,
        &KeyRequest {
            action: "kms:CreateKey",
            key: None,
            resource: "*",
            encryption_context: None,
            request_tags: Some(&tags),
        },
    )?;
    let policy = match s(input, "Policy") {
        Some(p) => {
            check_policy_size(p)?;
            p.to_string()
        }
        None => default_policy(&k.cfg.account),
    };
    let bypass = input
        .get("BypassPolicyLockoutSafetyCheck")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let record = new_key_record(
        k,
        s(input, "Description").unwrap_or(""),
        policy,
        tags,
        "CUSTOMER",
    );
    k.authz
        .validate_key_policy(ctx, &record.arn, &record.policy, bypass)?;
    let batch = Batch::new()
        .expect(NS_KEYS, record.key_id.as_bytes(), None)
        .put(
            NS_KEYS,
            record.key_id.as_bytes(),
            serde_json::to_vec(&record).expect("key records serialize"),
        );
    let mut out = Outcome::write(
        json!({"KeyMetadata": record.metadata()}),
        batch,
        &record.key_id,
    );
    out.elements = json!({"keyMetadata": {"keyId": record.key_id, "arn": record.arn}});
    _a.key(&record.arn);
    Ok(out)
}

async fn describe_key(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:DescribeKey", &key.record, None)?;
    Ok(Outcome::read(json!({"KeyMetadata": key.record.metadata()})))
}

async fn list_keys(k: &Kms, ctx: &CallContext, input: &Value) -> Result<Outcome, AwsError> {
    k.authz.authorize(
        ctx,
        &KeyRequest {
            action: "kms:ListKeys",
            key: None,
            resource: "*",
            encryption_context: None,
            request_tags: None,
        },
    )?;
    let limit = input.get("Limit").and_then(Value::as_u64).unwrap_or(100) as usize;
    let range = match s(input, "Marker") {
        Some(m) => {
            let mut start = m.as_bytes().to_vec();
            start.push(0);
            KeyRange::from(&start)
        }
        None => KeyRange::all(),
    };
    let rows = k
        .store
        .scan(NS_KEYS, range, limit + 1, false)
        .await
        .map_err(internal)?;
    let truncated = rows.len() > limit;
    let now = k.clock.now_millis();
    let mut keys = Vec::new();
    let mut last = None;
    for (key, v) in rows.into_iter().take(limit) {
        let id = String::from_utf8_lossy(&key).to_string();
        last = Some(id.clone());
        if let Ok(rec) = serde_json::from_slice::<KeyRecord>(&v.value)
            && rec.deletion_ms.is_some_and(|d| d <= now)
        {
            continue;
        }
        keys.push(json!({"KeyId": id, "KeyArn": k.key_arn(&id)}));
    }
    let mut out = json!({"Keys": keys, "Truncated": truncated});
    if truncated && let Some(l) = last {
        out["NextMarker"] = json!(l);
    }
    Ok(Outcome::read(out))
}

async fn set_enabled(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
    enable: bool,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    let action = if enable {
        "kms:EnableKey"
    } else {
        "kms:DisableKey"
    };
    authorize(k, ctx, action, &key.record, None)?;
    require_not_pending(&key.record)?;
    require_customer(&key.record, if enable { "EnableKey" } else { "DisableKey" })?;
    Ok(mutate(&key, json!({}), |r| {
        r.state = if enable { "Enabled" } else { "Disabled" }.into();
    }))
}

async fn schedule_deletion(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:ScheduleKeyDeletion", &key.record, None)?;
    let days = input
        .get("PendingWindowInDays")
        .and_then(Value::as_u64)
        .unwrap_or(30) as u32;
    if !(7..=30).contains(&days) {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed to satisfy constraint: Member must have value between 7 and 30"
        )));
    }
    require_customer(&key.record, "ScheduleKeyDeletion")?;
    require_not_pending(&key.record)?;
    let deletion = k.clock.now_millis() + days as i64 * DAY_MS;
    let resp = json!({
        "KeyId": key.record.arn,
        "DeletionDate": secs(deletion),
        "KeyState": "PendingDeletion",
        "PendingWindowInDays": days,
    });
    Ok(mutate(&key, resp, |r| {
        r.state = "PendingDeletion".into();
        r.deletion_ms = Some(deletion);
        r.pending_window_days = Some(days);
    }))
}

async fn cancel_deletion(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:CancelKeyDeletion", &key.record, None)?;
    if key.record.state != "PendingDeletion" {
        return Err(invalid_state(format!(
            "{} is not pending deletion.",
            key.record.arn
        )));
    }
    Ok(mutate(&key, json!({"KeyId": key.record.arn}), |r| {
        // As on AWS, a key whose deletion is cancelled comes back disabled.
        r.state = "Disabled".into();
        r.deletion_ms = None;
        r.pending_window_days = None;
    }))
}

async fn update_description(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:UpdateKeyDescription", &key.record, None)?;
    require_not_pending(&key.record)?;
    let d = req_s(input, "Description")?.to_string();
    Ok(mutate(&key, json!({}), |r| r.description = d))
}

// ---------------------------------------------------------------- aliases

/// A successful alias write: an empty response, and the alias cache dropped after commit.
fn alias_write(batch: Batch) -> Outcome {
    Outcome {
        response: json!({}),
        batch: Some(batch),
        elements: Value::Null,
        touched: vec![ALIASES.to_string()],
    }
}

/// Writes `rec` if the alias is still at `expected` (`None`: absent).
fn put_alias(expected: Option<u64>, rec: &AliasRecord) -> Batch {
    let key = rec.name.as_bytes();
    Batch::new().expect(NS_ALIASES, key, expected).put(
        NS_ALIASES,
        key,
        serde_json::to_vec(rec).expect("alias records serialize"),
    )
}

fn check_alias_prefix(name: &str) -> Result<(), AwsError> {
    if !name.starts_with("alias/") {
        return Err(AwsError::client(
            "InvalidAliasNameException",
            "Alias must start with the prefix \"alias/\".",
        ));
    }
    Ok(())
}

fn check_alias_name(name: &str) -> Result<(), AwsError> {
    check_alias_prefix(name)?;
    if name.len() <= "alias/".len() {
        return Err(AwsError::client(
            "InvalidAliasNameException",
            "Alias must start with the prefix \"alias/\".",
        ));
    }
    if name.starts_with("alias/aws/") {
        return Err(AwsError::client(
            "NotAuthorizedException",
            "Alias names beginning with alias/aws/ are reserved for AWS managed keys.",
        ));
    }
    Ok(())
}

async fn target_key(k: &Kms, raw: &str, a: &mut AuditCtx) -> Result<Arc<LoadedKey>, AwsError> {
    if raw.starts_with("alias/") || raw.contains(":alias/") {
        return Err(AwsError::validation(
            "TargetKeyId must be a key id or key ARN, not an alias.",
        ));
    }
    let key = resolve(k, raw, a).await?;
    require_not_pending(&key.record)?;
    if key.record.key_manager == "AWS" {
        return Err(AwsError::client(
            "NotAuthorizedException",
            "An alias cannot point to an AWS managed key.",
        ));
    }
    Ok(key)
}

async fn create_alias(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let name = req_s(input, "AliasName")?;
    check_alias_name(name)?;
    let key = target_key(k, req_s(input, "TargetKeyId")?, a).await?;
    authorize(k, ctx, "kms:CreateAlias", &key.record, None)?;
    if k.read_alias(name).await?.is_some() {
        return Err(AwsError::client(
            "AlreadyExistsException",
            format!(
                "An alias with the name {} already exists",
                k.alias_arn(name)
            ),
        ));
    }
    let now = k.clock.now_millis();
    let rec = AliasRecord {
        name: name.to_string(),
        target_key_id: key.record.key_id.clone(),
        created_ms: now,
        updated_ms: now,
    };
    Ok(alias_write(put_alias(None, &rec)))
}

async fn update_alias(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let name = req_s(input, "AliasName")?;
    check_alias_name(name)?;
    let (mut rec, version) = k
        .read_alias(name)
        .await?
        .ok_or_else(|| not_found(format!("Alias {} is not found.", k.alias_arn(name))))?;
    let key = target_key(k, req_s(input, "TargetKeyId")?, a).await?;
    authorize(k, ctx, "kms:UpdateAlias", &key.record, None)?;
    if let Some(old) = k.load_key(&rec.target_key_id).await? {
        a.key(&old.record.arn);
        authorize(k, ctx, "kms:UpdateAlias", &old.record, None)?;
    }
    rec.target_key_id = key.record.key_id.clone();
    rec.updated_ms = k.clock.now_millis();
    Ok(alias_write(put_alias(Some(version), &rec)))
}

async fn delete_alias(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let name = req_s(input, "AliasName")?;
    check_alias_prefix(name)?;
    let (rec, version) = k
        .read_alias(name)
        .await?
        .ok_or_else(|| not_found(format!("Alias {} is not found.", k.alias_arn(name))))?;
    if name.starts_with("alias/aws/") {
        return Err(AwsError::client(
            "NotAuthorizedException",
            "Aliases of AWS managed keys cannot be deleted.",
        ));
    }
    if let Some(key) = k.load_key(&rec.target_key_id).await? {
        a.key(&key.record.arn);
        authorize(k, ctx, "kms:DeleteAlias", &key.record, None)?;
    }
    Ok(alias_write(
        Batch::new()
            .expect(NS_ALIASES, name.as_bytes(), Some(version))
            .delete(NS_ALIASES, name.as_bytes()),
    ))
}

async fn list_aliases(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let filter_key = match s(input, "KeyId") {
        Some(raw) => {
            let key = resolve(k, raw, a).await?;
            authorize(k, ctx, "kms:ListAliases", &key.record, None)?;
            Some(key.record.key_id.clone())
        }
        None => {
            k.authz.authorize(
                ctx,
                &KeyRequest {
                    action: "kms:ListAliases",
                    key: None,
                    resource: "*",
                    encryption_context: None,
                    request_tags: None,
                },
            )?;
            None
        }
    };
    let limit = input.get("Limit").and_then(Value::as_u64).unwrap_or(100) as usize;
    let mut start = s(input, "Marker").map(|m| {
        let mut v = m.as_bytes().to_vec();
        v.push(0);
        v
    });
    let mut aliases = Vec::new();
    let mut truncated = false;
    let mut last = None;
    'outer: loop {
        let range = match &start {
            Some(st) => KeyRange::from(st),
            None => KeyRange::all(),
        };
        let rows = k
            .store
            .scan(NS_ALIASES, range, 256, false)
            .await
            .map_err(internal)?;
        let n = rows.len();
        for (key, v) in rows {
            let mut next = key.clone();
            next.push(0);
            start = Some(next);
            let rec: AliasRecord = serde_json::from_slice(&v.value).map_err(internal)?;
            if filter_key.as_ref().is_some_and(|f| *f != rec.target_key_id) {
                continue;
            }
            if aliases.len() == limit {
                truncated = true;
                break 'outer;
            }
            last = Some(rec.name.clone());
            aliases.push(json!({
                "AliasName": rec.name,
                "AliasArn": k.alias_arn(&rec.name),
                "TargetKeyId": rec.target_key_id,
                "CreationDate": secs(rec.created_ms),
                "LastUpdatedDate": secs(rec.updated_ms),
            }));
        }
        if n < 256 {
            break;
        }
    }
    let mut out = json!({"Aliases": aliases, "Truncated": truncated});
    if truncated && let Some(l) = last {
        out["NextMarker"] = json!(l);
    }
    Ok(Outcome::read(out))
}

// ---------------------------------------------------------------- tags

async fn tag_resource(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    let tags = parse_tags(input)?;
    k.authz.authorize(
        ctx,
        &KeyRequest {
            action: "kms:TagResource",
            key: Some(&key.record),
            resource: &key.record.arn,
            encryption_context: None,
            request_tags: Some(&tags),
        },
    )?;
    require_not_pending(&key.record)?;
    require_customer(&key.record, "TagResource")?;
    let mut merged = key.record.tags.clone();
    merge_tags(&mut merged, tags)?;
    Ok(mutate(&key, json!({}), |r| r.tags = merged))
}

async fn untag_resource(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:UntagResource", &key.record, None)?;
    require_not_pending(&key.record)?;
    require_customer(&key.record, "UntagResource")?;
    let remove: Vec<String> = input
        .get("TagKeys")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(mutate(&key, json!({}), |r| {
        r.tags.retain(|(k, _)| !remove.contains(k))
    }))
}

async fn list_tags(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:ListResourceTags", &key.record, None)?;
    let limit = input.get("Limit").and_then(Value::as_u64).unwrap_or(50) as usize;
    let start: usize = match s(input, "Marker") {
        None => 0,
        Some(m) => m
            .parse()
            .map_err(|_| AwsError::client("InvalidMarkerException", "The marker is not valid."))?,
    };
    let tags: Vec<Value> = key
        .record
        .tags
        .iter()
        .skip(start)
        .take(limit)
        .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
        .collect();
    let truncated = start + tags.len() < key.record.tags.len();
    let mut out = json!({"Tags": tags, "Truncated": truncated});
    if truncated {
        out["NextMarker"] = json!((start + limit).to_string());
    }
    Ok(Outcome::read(out))
}

// ---------------------------------------------------------------- key policy

fn check_policy_name(input: &Value) -> Result<(), AwsError> {
    match s(input, "PolicyName") {
        None | Some("default") => Ok(()),
        Some(other) => Err(not_found(format!(
            "No such policy exists: {other}. The only key policy name is \"default\"."
        ))),
    }
}

async fn get_key_policy(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:GetKeyPolicy", &key.record, None)?;
    check_policy_name(input)?;
    Ok(Outcome::read(
        json!({"Policy": key.record.policy, "PolicyName": "default"}),
    ))
}

async fn put_key_policy(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:PutKeyPolicy", &key.record, None)?;
    check_policy_name(input)?;
    require_not_pending(&key.record)?;
    require_customer(&key.record, "PutKeyPolicy")?;
    let policy = req_s(input, "Policy")?;
    check_policy_size(policy)?;
    let bypass = input
        .get("BypassPolicyLockoutSafetyCheck")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    k.authz
        .validate_key_policy(ctx, &key.record.arn, policy, bypass)?;
    let policy = policy.to_string();
    Ok(mutate(&key, json!({}), |r| r.policy = policy))
}

async fn list_key_policies(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:ListKeyPolicies", &key.record, None)?;
    Ok(Outcome::read(
        json!({"PolicyNames": ["default"], "Truncated": false}),
    ))
}

// ---------------------------------------------------------------- cryptography

fn check_algorithm(input: &Value, name: &str) -> Result<(), AwsError> {
    match s(input, name) {
        None | Some("SYMMETRIC_DEFAULT") => Ok(()),
        Some(other) => Err(AwsError::client(
            "InvalidKeyUsageException",
            format!(
                "The encryption algorithm {other} is not compatible with a SYMMETRIC_DEFAULT key."
            ),
        )),
    }
}

fn seal_with(
    key: &LoadedKey,
    enc: &BTreeMap<String, String>,
    plaintext: &[u8],
) -> Result<Vec<u8>, AwsError> {
    let id = key.record.current_material;
    let m = key.material(id).ok_or_else(AwsError::internal)?;
    Ok(encrypt_with_material(
        m,
        &key.record.key_id,
        id,
        &canonical(enc),
        plaintext,
    ))
}

fn invalid_ciphertext() -> AwsError {
    AwsError::client(
        "InvalidCiphertextException",
        "The ciphertext is invalid, was not produced by this KMS, or the encryption context does not match the one used to encrypt it.",
    )
}

async fn encrypt(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    let enc = context(input, "EncryptionContext")?;
    authorize(k, ctx, "kms:Encrypt", &key.record, Some(&enc))?;
    require_usable(&key.record)?;
    check_algorithm(input, "EncryptionAlgorithm")?;
    let pt = blob(input, "Plaintext")?.ok_or_else(|| {
        AwsError::validation("1 validation error detected: Value null at 'plaintext' failed to satisfy constraint: Member must not be null")
    })?;
    if dry_run(input) {
        return Err(dry_run_error());
    }
    let ct = seal_with(&key, &enc, &pt)?;
    Ok(Outcome::read(json!({
        "CiphertextBlob": B64.encode(ct),
        "KeyId": key.record.arn,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    })))
}

/// Finds and authorizes the key of a ciphertext, and opens it.
#[allow(clippy::too_many_arguments)] // one private helper shared by Decrypt and ReEncrypt
async fn open_ciphertext(
    k: &Kms,
    ctx: &CallContext,
    action: &str,
    blob: &[u8],
    enc: &BTreeMap<String, String>,
    key_id: Option<&str>,
    a: &mut AuditCtx,
    dry: bool,
) -> Result<(Arc<LoadedKey>, Zeroizing<Vec<u8>>), AwsError> {
    let header = sluice_crypto::parse_header(blob).ok_or_else(invalid_ciphertext)?;
    let key = match k.load_key(&header.key_id).await? {
        Some(key) => key,
        None => return Err(invalid_ciphertext()),
    };
    a.key(&key.record.arn);
    if let Some(raw) = key_id {
        let named = resolve(k, raw, a).await?;
        if named.record.key_id != key.record.key_id {
            return Err(AwsError::client(
                "IncorrectKeyException",
                "The key ID in the request does not identify a KMS key that can perform this operation.",
            ));
        }
    }
    authorize(k, ctx, action, &key.record, Some(enc))?;
    if key
        .record
        .deletion_ms
        .is_some_and(|d| d <= k.clock.now_millis())
    {
        return Err(not_found(format!(
            "Key '{}' does not exist",
            key.record.arn
        )));
    }
    require_usable(&key.record)?;
    if dry {
        return Err(dry_run_error());
    }
    let m = key
        .material(header.material_id)
        .ok_or_else(invalid_ciphertext)?;
    let pt = decrypt_with_material(m, blob, &canonical(enc)).ok_or_else(invalid_ciphertext)?;
    Ok((key, pt))
}

async fn decrypt(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let ct = blob(input, "CiphertextBlob")?.ok_or_else(|| {
        AwsError::validation("1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: Member must not be null")
    })?;
    check_algorithm(input, "EncryptionAlgorithm")?;
    if input.get("Recipient").is_some() {
        return Err(AwsError::client(
            "UnsupportedOperationException",
            "Nitro Enclaves attestation (Recipient) is not supported by sluice.",
        ));
    }
    let enc = context(input, "EncryptionContext")?;
    let (key, pt) = open_ciphertext(
        k,
        ctx,
        "kms:Decrypt",
        &ct,
        &enc,
        s(input, "KeyId"),
        a,
        dry_run(input),
    )
    .await?;
    let header = sluice_crypto::parse_header(&ct).expect("parsed above");
    Ok(Outcome::read(json!({
        "KeyId": key.record.arn,
        "Plaintext": B64.encode(&pt[..]),
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "KeyMaterialId": crate::model::material_id_text(header.material_id),
    })))
}

async fn re_encrypt(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let ct = blob(input, "CiphertextBlob")?.ok_or_else(|| {
        AwsError::validation("1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: Member must not be null")
    })?;
    check_algorithm(input, "SourceEncryptionAlgorithm")?;
    check_algorithm(input, "DestinationEncryptionAlgorithm")?;
    let src_enc = context(input, "SourceEncryptionContext")?;
    let dst_enc = context(input, "DestinationEncryptionContext")?;
    let dest = resolve(k, req_s(input, "DestinationKeyId")?, a).await?;
    let (src, pt) = open_ciphertext(
        k,
        ctx,
        "kms:ReEncryptFrom",
        &ct,
        &src_enc,
        s(input, "SourceKeyId"),
        a,
        false,
    )
    .await?;
    authorize(k, ctx, "kms:ReEncryptTo", &dest.record, Some(&dst_enc))?;
    require_usable(&dest.record)?;
    if dry_run(input) {
        return Err(dry_run_error());
    }
    let out = seal_with(&dest, &dst_enc, &pt)?;
    Ok(Outcome::read(json!({
        "CiphertextBlob": B64.encode(out),
        "SourceKeyId": src.record.arn,
        "KeyId": dest.record.arn,
        "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
    })))
}

fn data_key_len(input: &Value) -> Result<usize, AwsError> {
    let n = input.get("NumberOfBytes").and_then(Value::as_u64);
    let spec = s(input, "KeySpec");
    match (n, spec) {
        (Some(_), Some(_)) => Err(AwsError::validation(
            "Specify either NumberOfBytes or KeySpec, not both.",
        )),
        (None, None) => Err(AwsError::validation(
            "Please specify either number of bytes or key spec.",
        )),
        (Some(n), None) if (1..=1024).contains(&n) => Ok(n as usize),
        (Some(n), None) => Err(AwsError::validation(format!(
            "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value between 1 and 1024"
        ))),
        (None, Some("AES_256")) => Ok(32),
        (None, Some("AES_128")) => Ok(16),
        (None, Some(other)) => Err(AwsError::validation(format!(
            "1 validation error detected: Value '{other}' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"
        ))),
    }
}

async fn generate_data_key(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
    with_plaintext: bool,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    let enc = context(input, "EncryptionContext")?;
    let action = if with_plaintext {
        "kms:GenerateDataKey"
    } else {
        "kms:GenerateDataKeyWithoutPlaintext"
    };
    if input.get("Recipient").is_some() {
        return Err(AwsError::client(
            "UnsupportedOperationException",
            "Nitro Enclaves attestation (Recipient) is not supported by sluice.",
        ));
    }
    authorize(k, ctx, action, &key.record, Some(&enc))?;
    require_usable(&key.record)?;
    let n = data_key_len(input)?;
    if dry_run(input) {
        return Err(dry_run_error());
    }
    let pt = sluice_crypto::random_bytes(n);
    let ct = seal_with(&key, &enc, &pt)?;
    let mut out = json!({
        "CiphertextBlob": B64.encode(ct),
        "KeyId": key.record.arn,
        "KeyMaterialId": crate::model::material_id_text(key.record.current_material),
    });
    if with_plaintext {
        out["Plaintext"] = json!(B64.encode(&pt[..]));
    }
    Ok(Outcome::read(out))
}

async fn generate_random(k: &Kms, ctx: &CallContext, input: &Value) -> Result<Outcome, AwsError> {
    k.authz.authorize(
        ctx,
        &KeyRequest {
            action: "kms:GenerateRandom",
            key: None,
            resource: "*",
            encryption_context: None,
            request_tags: None,
        },
    )?;
    if input.get("CustomKeyStoreId").is_some() || input.get("Recipient").is_some() {
        return Err(AwsError::client(
            "UnsupportedOperationException",
            "Custom key stores and Recipient are not supported by sluice.",
        ));
    }
    let n = match input.get("NumberOfBytes").and_then(Value::as_u64) {
        Some(n) if (1..=1024).contains(&n) => n as usize,
        Some(n) => {
            return Err(AwsError::validation(format!(
                "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value between 1 and 1024"
            )));
        }
        None => {
            return Err(AwsError::validation("NumberOfBytes is required."));
        }
    };
    let bytes = sluice_crypto::random_bytes(n);
    Ok(Outcome::read(json!({"Plaintext": B64.encode(&bytes[..])})))
}

// ---------------------------------------------------------------- rotation

fn rotated(k: &Kms, key: &LoadedKey, r: &mut KeyRecord) {
    let id = r.materials.iter().map(|m| m.id).max().unwrap_or(0) + 1;
    let material = KeyMaterial::generate();
    let sealed = k.seal_material(&key.record.key_id, id, &material);
    r.materials.push(MaterialRecord {
        id,
        created_ms: k.clock.now_millis(),
        sealed,
    });
    r.current_material = id;
}

async fn enable_rotation(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:EnableKeyRotation", &key.record, None)?;
    require_customer(&key.record, "EnableKeyRotation")?;
    require_usable(&key.record)?;
    let days = input
        .get("RotationPeriodInDays")
        .and_then(Value::as_u64)
        .unwrap_or(365) as u32;
    if !(90..=2560).contains(&days) {
        return Err(AwsError::validation(format!(
            "1 validation error detected: Value '{days}' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value between 90 and 2560"
        )));
    }
    let next = k.clock.now_millis() + days as i64 * DAY_MS;
    Ok(mutate(&key, json!({}), |r| {
        r.rotation.enabled = true;
        r.rotation.period_days = days;
        r.rotation.next_ms = Some(next);
    }))
}

async fn disable_rotation(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:DisableKeyRotation", &key.record, None)?;
    require_customer(&key.record, "DisableKeyRotation")?;
    require_usable(&key.record)?;
    Ok(mutate(&key, json!({}), |r| {
        r.rotation.enabled = false;
        r.rotation.next_ms = None;
    }))
}

async fn rotation_status(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:GetKeyRotationStatus", &key.record, None)?;
    let r = &key.record.rotation;
    let mut out = json!({"KeyRotationEnabled": r.enabled, "KeyId": key.record.arn});
    if r.enabled {
        out["RotationPeriodInDays"] = json!(r.period_days);
        if let Some(n) = r.next_ms {
            out["NextRotationDate"] = secs(n);
        }
    }
    if let Some(d) = r.on_demand_ms {
        out["OnDemandRotationStartDate"] = secs(d);
    }
    Ok(Outcome::read(out))
}

async fn rotate_on_demand(
    k: &Kms,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let key = resolve(k, req_s(input, "KeyId")?, a).await?;
    authorize(k, ctx, "kms:RotateKeyOnDemand", &key.record, None)?;
    require_customer(&key.record, "RotateKeyOnDemand")?;
    require_usable(&key.record)?;
    let now = k.clock.now_millis();
    let mut rec = key.record.clone();
    rotated(k, &key, &mut rec);
    rec.rotation.on_demand_ms = Some(now);
    Ok(Outcome::write(
        json!({"KeyId": rec.arn}),
        key_put(Batch::new(), &key, &rec),
        &rec.key_id,
    ))
}

// ---------------------------------------------------------------- typed API for services

pub(crate) async fn generate_data_key_typed(
    k: &Kms,
    ctx: &CallContext,
    key_id: &str,
    bytes: usize,
    enc: &BTreeMap<String, String>,
) -> Result<DataKey, AwsError> {
    let input = json!({"KeyId": key_id, "NumberOfBytes": bytes, "EncryptionContext": enc});
    let out = dispatch(k, "GenerateDataKey", ctx, input).await?;
    let ct = B64
        .decode(out["CiphertextBlob"].as_str().unwrap_or_default())
        .map_err(internal)?;
    let pt = Zeroizing::new(
        B64.decode(out["Plaintext"].as_str().unwrap_or_default())
            .map_err(internal)?,
    );
    Ok(DataKey {
        key_arn: out["KeyId"].as_str().unwrap_or_default().to_string(),
        ciphertext: ct,
        plaintext: pt,
    })
}

pub(crate) async fn decrypt_typed(
    k: &Kms,
    ctx: &CallContext,
    ct: &[u8],
    enc: &BTreeMap<String, String>,
    key_id: Option<&str>,
) -> Result<(String, Zeroizing<Vec<u8>>), AwsError> {
    let mut input = json!({"CiphertextBlob": B64.encode(ct), "EncryptionContext": enc});
    if let Some(id) = key_id {
        input["KeyId"] = json!(id);
    }
    let out = dispatch(k, "Decrypt", ctx, input).await?;
    let pt = Zeroizing::new(
        B64.decode(out["Plaintext"].as_str().unwrap_or_default())
            .map_err(internal)?,
    );
    Ok((out["KeyId"].as_str().unwrap_or_default().to_string(), pt))
}

// ---------------------------------------------------------------- maintenance

pub(crate) async fn maintenance(k: &Kms) -> Result<(), AwsError> {
    let now = k.clock.now_millis();
    let svc = CallContext::direct(
        Principal::service(&k.cfg.account, "kms.amazonaws.com"),
        &k.cfg.region,
        &uuid::Uuid::new_v4().to_string(),
    );
    let mut start: Option<Vec<u8>> = None;
    loop {
        let range = match &start {
            Some(s) => KeyRange::from(s),
            None => KeyRange::all(),
        };
        let rows = k
            .store
            .scan(NS_KEYS, range, 256, false)
            .await
            .map_err(internal)?;
        let n = rows.len();
        for (id, v) in rows {
            let mut next = id.clone();
            next.push(0);
            start = Some(next);
            let Ok(rec) = serde_json::from_slice::<KeyRecord>(&v.value) else {
                continue;
            };
            if rec.state == "PendingDeletion" && rec.deletion_ms.is_some_and(|d| d <= now) {
                delete_key_now(k, &svc, &rec, v.version).await?;
            } else if rec.state == "Enabled"
                && rec.rotation.enabled
                && rec.rotation.next_ms.is_some_and(|d| d <= now)
            {
                rotate_due(k, &svc, &rec).await?;
            }
        }
        if n < 256 {
            return Ok(());
        }
    }
}

async fn delete_key_now(
    k: &Kms,
    svc: &CallContext,
    rec: &KeyRecord,
    version: u64,
) -> Result<(), AwsError> {
    let mut batch = Batch::new()
        .expect(NS_KEYS, rec.key_id.as_bytes(), Some(version))
        .delete(NS_KEYS, rec.key_id.as_bytes());
    let aliases = k
        .store
        .scan(NS_ALIASES, KeyRange::all(), usize::MAX, false)
        .await
        .map_err(internal)?;
    for (name, v) in aliases {
        if let Ok(a) = serde_json::from_slice::<AliasRecord>(&v.value)
            && a.target_key_id == rec.key_id
        {
            batch = batch.delete(NS_ALIASES, name);
        }
    }
    let ev = AuditEvent {
        event_source: EVENT_SOURCE,
        event_name: "DeleteKey",
        request_parameters: Value::Null,
        resources: vec![AuditResource {
            arn: rec.arn.clone(),
            kind: KEY_RESOURCE_TYPE.into(),
        }],
        read_only: false,
    };
    let mut record = k.audit.record_for(svc, ev, Ok(Value::Null));
    record.event_type = "AwsServiceEvent".into();
    let batch = k.audit.append_to(batch, &record);
    match k.store.apply(batch).await {
        Ok(_) | Err(StoreError::Conflict) => {
            k.forget(&rec.key_id);
            k.forget_aliases();
            Ok(())
        }
        Err(e) => Err(internal(e)),
    }
}

async fn rotate_due(k: &Kms, svc: &CallContext, rec: &KeyRecord) -> Result<(), AwsError> {
    let Some(key) = k.load_key(&rec.key_id).await? else {
        return Ok(());
    };
    let mut r = key.record.clone();
    rotated(k, &key, &mut r);
    r.rotation.next_ms = Some(k.clock.now_millis() + r.rotation.period_days as i64 * DAY_MS);
    let ev = AuditEvent {
        event_source: EVENT_SOURCE,
        event_name: "RotateKey",
        request_parameters: Value::Null,
        resources: vec![AuditResource {
            arn: rec.arn.clone(),
            kind: KEY_RESOURCE_TYPE.into(),
        }],
        read_only: false,
    };
    let mut record = k.audit.record_for(svc, ev, Ok(Value::Null));
    record.event_type = "AwsServiceEvent".into();
    let batch = k.audit.append_to(key_put(Batch::new(), &key, &r), &record);
    match k.store.apply(batch).await {
        Ok(_) | Err(StoreError::Conflict) => {
            k.forget(&rec.key_id);
            Ok(())
        }
        Err(e) => Err(internal(e)),
    }
}
