//! The Secrets Manager operations.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};
use sluice_audit::{AuditEvent, AuditResource};
use sluice_core::{AwsError, CallContext, Principal, PrincipalKind};
use sluice_crypto::{KeyMaterial, canonical_context, decrypt_with_material, encrypt_with_material};
use sluice_kms::policy_authz::principal_info;
use sluice_policy::{Context, Decision, Inputs, Policy, Request, ResourceKind, evaluate};
use sluice_store::{Batch, KeyRange, StoreError};
use zeroize::Zeroizing;

use crate::model::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, NS_SECRETS, NS_VALUES, SecretRecord, ValueRecord,
    VersionMeta, value_key, value_prefix,
};
use crate::password::{PasswordOptions, generate};
use crate::{EVENT_SOURCE, NewValue, SecretValue, Secrets};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const DAY_MS: i64 = 24 * 3600 * 1000;
const MAX_TAGS: usize = 50;
/// AWS keeps at most about 100 versions; deprecated versions beyond that are removed once they
/// are older than a day.
const MAX_VERSIONS: usize = 100;
const SECRET_RESOURCE_TYPE: &str = "AWS::SecretsManager::Secret";
/// The nil UUID names the data key in the value envelope's header (the record identifies it).
const ENVELOPE_KEY_ID: &str = "00000000-0000-0000-0000-000000000000";
const VALIDATION_VERSION: &str = "RequestToValidateKeyAccess";

// ---------------------------------------------------------------- errors

pub(crate) fn not_found() -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        "Secrets Manager can't find the specified secret.",
    )
}

fn invalid_param(msg: impl Into<String>) -> AwsError {
    AwsError::client("InvalidParameterException", msg)
}

fn invalid_request(msg: impl Into<String>) -> AwsError {
    AwsError::client("InvalidRequestException", msg)
}

fn marked_for_deletion() -> AwsError {
    invalid_request(
        "You can't perform this operation on the secret because it was marked for deletion.",
    )
}

fn internal<E: std::fmt::Display>(e: E) -> AwsError {
    tracing::error!(error = %e, "secretsmanager internal error");
    AwsError::with_status(
        "InternalServiceError",
        500,
        "An error occurred on the server side.",
    )
}

/// Maps a KMS error met while reading (`write == false`) or writing a value.
fn kms_error(e: AwsError, write: bool) -> AwsError {
    match e.code.as_ref() {
        "AccessDeniedException" => {
            AwsError::access_denied(format!("Access to KMS is not allowed. {}", e.message))
        }
        "DisabledException"
        | "KMSInvalidStateException"
        | "NotFoundException"
        | "InvalidCiphertextException"
        | "IncorrectKeyException"
        | "KMSInternalException"
        | "InvalidKeyUsageException" => {
            if write {
                AwsError::client(
                    "EncryptionFailure",
                    format!(
                        "Secrets Manager can't encrypt the protected secret text using the provided KMS key. {}",
                        e.message
                    ),
                )
            } else {
                AwsError::client(
                    "DecryptionFailure",
                    format!(
                        "Secrets Manager can't decrypt the protected secret text using the provided KMS key. {}",
                        e.message
                    ),
                )
            }
        }
        _ => e,
    }
}

// ---------------------------------------------------------------- plumbing

/// The audit facts an operation gathers as it runs.
pub(crate) struct AuditCtx {
    params: Value,
    resources: Vec<AuditResource>,
}

impl AuditCtx {
    fn secret(&mut self, arn: &str) {
        if !self.resources.iter().any(|r| r.arn == arn) {
            self.resources.push(AuditResource {
                arn: arn.to_string(),
                kind: SECRET_RESOURCE_TYPE.to_string(),
            });
        }
    }
}

/// A plaintext value read by an operation.
pub(crate) struct Plain {
    binary: bool,
    bytes: Zeroizing<Vec<u8>>,
}

/// What a successful operation produced.
pub(crate) struct Outcome {
    pub(crate) response: Value,
    batch: Option<Batch>,
    elements: Value,
    /// Secrets (ARNs) whose AWSCURRENT changes when the batch commits.
    current_changed: Vec<String>,
    /// The value read (GetSecretValue), kept out of `response` until the wire needs it.
    pub(crate) value: Option<SecretValue>,
}

impl Outcome {
    fn read(response: Value) -> Self {
        Self {
            response,
            batch: None,
            elements: Value::Null,
            current_changed: Vec::new(),
            value: None,
        }
    }

    fn write(response: Value, batch: Batch) -> Self {
        Self {
            response,
            batch: Some(batch),
            elements: Value::Null,
            current_changed: Vec::new(),
            value: None,
        }
    }
}

fn is_read_only(op: &str) -> bool {
    matches!(
        op,
        "DescribeSecret"
            | "GetSecretValue"
            | "BatchGetSecretValue"
            | "ListSecrets"
            | "ListSecretVersionIds"
            | "GetRandomPassword"
            | "GetResourcePolicy"
            | "ValidateResourcePolicy"
    )
}

pub(crate) async fn dispatch(
    s: &Secrets,
    op: &str,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
) -> Result<Outcome, AwsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut a = AuditCtx {
            params: audit_params(input),
            resources: Vec::new(),
        };
        let result = run_op(s, op, ctx, input, managed, &mut a).await;
        let ev = AuditEvent {
            event_source: EVENT_SOURCE,
            event_name: op,
            request_parameters: a.params,
            resources: a.resources,
            read_only: is_read_only(op),
        };
        match result {
            Ok(mut out) => {
                let record = s
                    .audit
                    .record_for(ctx, ev, Ok(std::mem::take(&mut out.elements)));
                // A call that changed nothing commits only its audit record: deferred sync.
                let applied = match out.batch.take() {
                    Some(batch) => s.store.apply(s.audit.append_to(batch, &record)).await,
                    None => {
                        let batch = s.audit.append_to(Default::default(), &record);
                        s.store.apply_deferred(batch).await
                    }
                };
                match applied {
                    Ok(_) => {
                        for arn in &out.current_changed {
                            s.bump(arn);
                        }
                        return Ok(out);
                    }
                    Err(StoreError::Conflict) if attempt < 8 => continue,
                    Err(StoreError::Conflict) => {
                        let err = invalid_request(
                            "The secret was modified concurrently; retry the request.",
                        );
                        let record = s.audit.record_for(ctx, ev_again(op, input), Err(&err));
                        s.audit.write(&record).await?;
                        return Err(err);
                    }
                    Err(e) => return Err(internal(e)),
                }
            }
            Err(err) => {
                let record = s.audit.record_for(ctx, ev, Err(&err));
                s.audit.write(&record).await?;
                return Err(err);
            }
        }
    }
}

fn ev_again<'a>(op: &'a str, input: &Value) -> AuditEvent<'a> {
    AuditEvent {
        event_source: EVENT_SOURCE,
        event_name: op,
        request_parameters: audit_params(input),
        resources: Vec::new(),
        read_only: is_read_only(op),
    }
}

async fn run_op(
    s: &Secrets,
    op: &str,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    match op {
        "CreateSecret" => create_secret(s, ctx, input, managed, a).await,
        "DescribeSecret" => describe_secret(s, ctx, input, a).await,
        "GetSecretValue" => get_secret_value(s, ctx, input, a).await,
        "BatchGetSecretValue" => batch_get(s, ctx, input).await,
        "PutSecretValue" => put_secret_value(s, ctx, input, managed, a).await,
        "UpdateSecret" => update_secret(s, ctx, input, managed, a).await,
        "UpdateSecretVersionStage" => update_stage(s, ctx, input, managed, a).await,
        "ListSecrets" => list_secrets(s, ctx, input).await,
        "ListSecretVersionIds" => list_version_ids(s, ctx, input, a).await,
        "DeleteSecret" => delete_secret(s, ctx, input, managed, a).await,
        "RestoreSecret" => restore_secret(s, ctx, input, managed, a).await,
        "GetRandomPassword" => random_password(s, ctx, input),
        "TagResource" => tag_resource(s, ctx, input, managed, a).await,
        "UntagResource" => untag_resource(s, ctx, input, managed, a).await,
        "GetResourcePolicy" => get_policy(s, ctx, input, a).await,
        "PutResourcePolicy" => put_policy(s, ctx, input, managed, a).await,
        "DeleteResourcePolicy" => delete_policy(s, ctx, input, managed, a).await,
        "ValidateResourcePolicy" => validate_policy(s, ctx, input, a).await,
        "RotateSecret" | "CancelRotateSecret" => Err(invalid_request(
            "sluice has no rotation function runtime yet; rotation is not supported.",
        )),
        "ReplicateSecretToRegions"
        | "RemoveRegionsFromReplication"
        | "StopReplicationToReplica"
        | "AssociateCrossAccountReplica"
        | "DisassociateCrossAccountReplica"
        | "ListResourcePolicies" => Err(invalid_request(format!(
            "{op} is not supported by sluice: it serves a single region and account."
        ))),
        other => Err(AwsError::client(
            "UnknownOperationException",
            format!("The operation {other} is not supported by sluice's Secrets Manager."),
        )),
    }
}

/// Request parameters for the audit record: identifiers only, never values.
fn audit_params(input: &Value) -> Value {
    const KEEP: &[&str] = &[
        "SecretId",
        "Name",
        "VersionId",
        "VersionStage",
        "VersionStages",
        "ClientRequestToken",
        "Description",
        "KmsKeyId",
        "RecoveryWindowInDays",
        "ForceDeleteWithoutRecovery",
        "MoveToVersionId",
        "RemoveFromVersionId",
        "TagKeys",
        "Tags",
        "Filters",
        "MaxResults",
        "IncludeDeprecated",
        "IncludePlannedDeletion",
        "SortOrder",
        "BlockPublicPolicy",
        "ResourcePolicy",
        "SecretIdList",
        "PasswordLength",
        "ExcludeCharacters",
        "ExcludeNumbers",
        "ExcludePunctuation",
        "ExcludeUppercase",
        "ExcludeLowercase",
        "IncludeSpace",
        "RequireEachIncludedType",
    ];
    let mut out = serde_json::Map::new();
    if let Value::Object(m) = input {
        for (key, v) in m {
            if KEEP.contains(&key.as_str()) {
                let mut name = key.clone();
                if let Some(first) = name.get_mut(0..1) {
                    first.make_ascii_lowercase();
                }
                out.insert(name, v.clone());
            }
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

fn st<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

fn req_st<'a>(input: &'a Value, name: &str) -> Result<&'a str, AwsError> {
    st(input, name).ok_or_else(|| invalid_param(format!("{name} is required.")))
}

fn flag(input: &Value, name: &str) -> Option<bool> {
    input.get(name).and_then(Value::as_bool)
}

fn secs(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn now(s: &Secrets) -> i64 {
    s.clock.now_millis()
}

// ---------------------------------------------------------------- values

/// The value in a write request, if any.
fn new_value(input: &Value) -> Result<Option<Plain>, AwsError> {
    let string = st(input, "SecretString");
    let binary = st(input, "SecretBinary");
    match (string, binary) {
        (Some(_), Some(_)) => Err(invalid_param(
            "You can't specify both a binary secret value and a string secret value in the same secret.",
        )),
        (Some(t), None) => Ok(Some(Plain {
            binary: false,
            bytes: Zeroizing::new(t.as_bytes().to_vec()),
        })),
        (None, Some(b)) => {
            let bytes = Zeroizing::new(
                B64.decode(b)
                    .map_err(|_| invalid_param("SecretBinary is not valid base64."))?,
            );
            if bytes.is_empty() || bytes.len() > 65_536 {
                return Err(invalid_param(
                    "SecretBinary must be between 1 and 65536 bytes.",
                ));
            }
            Ok(Some(Plain {
                binary: true,
                bytes,
            }))
        }
        (None, None) => Ok(None),
    }
}

pub(crate) fn set_new_value(input: &mut Value, v: &NewValue<'_>) {
    match v {
        NewValue::String(s) => input["SecretString"] = json!(s),
        NewValue::Binary(b) => input["SecretBinary"] = json!(B64.encode(b)),
    }
}

pub(crate) fn put_value_in(response: &mut Value, v: &SecretValue) {
    if v.binary {
        response["SecretBinary"] = json!(B64.encode(&v.bytes[..]));
    } else {
        response["SecretString"] = json!(String::from_utf8_lossy(&v.bytes));
    }
}

fn enc_context(arn: &str, version_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("SecretARN".to_string(), arn.to_string()),
        ("SecretVersionId".to_string(), version_id.to_string()),
    ])
}

fn canonical(c: &BTreeMap<String, String>) -> Vec<u8> {
    canonical_context(c.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The KMS key new versions of `rec` are sealed under.
async fn key_of(s: &Secrets, kms_key_id: Option<&str>) -> Result<String, AwsError> {
    match kms_key_id {
        Some(k) => Ok(k.to_string()),
        None => s.managed_key_arn().await,
    }
}

/// Seals `value` as version `version_id` of secret `arn` under `key`.
async fn seal(
    s: &Secrets,
    ctx: &CallContext,
    key: &str,
    arn: &str,
    version_id: &str,
    value: &Plain,
) -> Result<ValueRecord, AwsError> {
    let enc = enc_context(arn, version_id);
    let dk = s
        .kms
        .generate_data_key(&ctx.via("secretsmanager"), key, 32, &enc)
        .await
        .map_err(|e| kms_error(e, true))?;
    let material = KeyMaterial::from_slice(&dk.plaintext).ok_or_else(AwsError::internal)?;
    let ct = encrypt_with_material(
        &material,
        ENVELOPE_KEY_ID,
        0,
        &canonical(&enc),
        &value.bytes,
    );
    Ok(ValueRecord {
        v: 1,
        binary: value.binary,
        kms_key_arn: dk.key_arn.clone(),
        data_key: B64.encode(&dk.ciphertext),
        ciphertext: B64.encode(ct),
    })
}

/// Opens version `version_id` of secret `arn`.
async fn open(
    s: &Secrets,
    ctx: &CallContext,
    arn: &str,
    version_id: &str,
    rec: &ValueRecord,
) -> Result<Plain, AwsError> {
    let enc = enc_context(arn, version_id);
    let data_key = B64.decode(&rec.data_key).map_err(internal)?;
    let (_, pt_key) = s
        .kms
        .decrypt(&ctx.via("secretsmanager"), &data_key, &enc, None)
        .await
        .map_err(|e| kms_error(e, false))?;
    let material = KeyMaterial::from_slice(&pt_key).ok_or_else(AwsError::internal)?;
    let ct = B64.decode(&rec.ciphertext).map_err(internal)?;
    let bytes = decrypt_with_material(&material, &ct, &canonical(&enc)).ok_or_else(|| {
        AwsError::client(
            "DecryptionFailure",
            "Secrets Manager can't decrypt the protected secret text: the stored ciphertext does not authenticate.",
        )
    })?;
    Ok(Plain {
        binary: rec.binary,
        bytes,
    })
}

/// Checks that `key` can be used for this secret: GenerateDataKey + Decrypt with the validation
/// version id, results thrown away.
async fn validate_key(
    s: &Secrets,
    ctx: &CallContext,
    key: &str,
    arn: &str,
) -> Result<(), AwsError> {
    let enc = enc_context(arn, VALIDATION_VERSION);
    let via = ctx.via("secretsmanager");
    let dk = s
        .kms
        .generate_data_key(&via, key, 32, &enc)
        .await
        .map_err(|e| kms_error(e, true))?;
    s.kms
        .decrypt(&via, &dk.ciphertext, &enc, None)
        .await
        .map_err(|e| kms_error(e, true))?;
    Ok(())
}

async fn load_value(s: &Secrets, name: &str, version_id: &str) -> Result<ValueRecord, AwsError> {
    let v = s
        .store
        .get(NS_VALUES, &value_key(name, version_id))
        .await
        .map_err(internal)?
        .ok_or_else(|| internal("a version's value is missing"))?;
    serde_json::from_slice(&v.value).map_err(internal)
}

// ---------------------------------------------------------------- secrets

fn secret_arn(s: &Secrets, name: &str) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut suffix = String::with_capacity(6);
    while suffix.len() < 6 {
        for b in sluice_crypto::random_bytes(16).iter() {
            // 248 = 4 * 62: rejection sampling keeps the characters uniform.
            if (*b as usize) < 248 && suffix.len() < 6 {
                suffix.push(ALNUM[*b as usize % 62] as char);
            }
        }
    }
    format!(
        "arn:aws:secretsmanager:{}:{}:secret:{name}-{suffix}",
        s.cfg.region, s.cfg.account
    )
}

fn check_name(name: &str) -> Result<(), AwsError> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-!".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid_param(
            "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!",
        ))
    }
}

async fn get_record(s: &Secrets, name: &str) -> Result<Option<(SecretRecord, u64)>, AwsError> {
    match s
        .store
        .get(NS_SECRETS, name.as_bytes())
        .await
        .map_err(internal)?
    {
        None => Ok(None),
        Some(v) => Ok(Some((
            serde_json::from_slice(&v.value).map_err(internal)?,
            v.version,
        ))),
    }
}

/// Resolves a SecretId: a name, a full ARN, or a partial ARN (without the random suffix).
pub(crate) async fn resolve(s: &Secrets, secret_id: &str) -> Result<(SecretRecord, u64), AwsError> {
    if let Some(rest) = secret_id.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(6, ':').collect();
        if parts.len() != 6
            || parts[1] != "secretsmanager"
            || parts[2] != s.cfg.region
            || parts[3] != s.cfg.account
        {
            return Err(not_found());
        }
        if parts[4] != "secret" {
            return Err(not_found());
        }
        let name = parts[5];
        // Full ARN: name-XXXXXX.
        if name.len() > 7 {
            let (base, suffix) = name.split_at(name.len() - 7);
            if suffix.starts_with('-')
                && suffix[1..].bytes().all(|b| b.is_ascii_alphanumeric())
                && let Some((rec, v)) = get_record(s, base).await?
                && rec.arn == secret_id
            {
                return Ok((rec, v));
            }
        }
        // Partial ARN.
        return get_record(s, name).await?.ok_or_else(not_found);
    }
    get_record(s, secret_id).await?.ok_or_else(not_found)
}

fn put_record(batch: Batch, rec: &SecretRecord, version: Option<u64>) -> Batch {
    batch.expect(NS_SECRETS, rec.name.as_bytes(), version).put(
        NS_SECRETS,
        rec.name.as_bytes(),
        serde_json::to_vec(rec).expect("secret records serialize"),
    )
}

fn put_value(batch: Batch, name: &str, version_id: &str, v: &ValueRecord) -> Batch {
    batch.put(
        NS_VALUES,
        value_key(name, version_id),
        serde_json::to_vec(v).expect("value records serialize"),
    )
}

fn require_live(rec: &SecretRecord) -> Result<(), AwsError> {
    if rec.deleted_ms.is_some() {
        Err(marked_for_deletion())
    } else {
        Ok(())
    }
}

/// Refuses a change of a service-owned secret unless it comes through that service's API.
fn require_owner(rec: &SecretRecord, managed: Option<&str>) -> Result<(), AwsError> {
    match (&rec.owning_service, managed) {
        (None, _) => Ok(()),
        (Some(o), Some(m)) if o == m => Ok(()),
        (Some(o), _) => Err(invalid_request(format!(
            "You can't modify secret {} because it's managed by {o}. Change it through {o}.",
            rec.arn
        ))),
    }
}

// ---------------------------------------------------------------- authorization

/// What is being asked.
struct AuthReq<'a> {
    action: &'a str,
    resource: &'a str,
    secret: Option<&'a SecretRecord>,
    request_tags: Option<&'a [(String, String)]>,
    extra: &'a [(&'a str, &'a str)],
}

fn authorize(
    s: &Secrets,
    ctx: &CallContext,
    managed: Option<&str>,
    r: AuthReq<'_>,
) -> Result<(), AwsError> {
    // A sluice service acting as itself may act on the secrets its service owns (the
    // equivalent of its service-linked role's policy).
    if let Some(svc) = managed
        && ctx.principal.kind == PrincipalKind::Service
        && ctx.principal.arn == format!("{svc}.amazonaws.com")
        && r.secret
            .is_none_or(|rec| rec.owning_service.as_deref() == Some(svc))
    {
        return Ok(());
    }
    let mut c = Context::new();
    c.set_time(s.clock.now().unix_timestamp());
    // Every secret lives in the served account (the service-linked role policy of EventBridge
    // API destinations conditions on it).
    c.set("aws:ResourceAccount", s.cfg.account.as_str());
    c.set(
        "aws:SecureTransport",
        if ctx.secure_transport {
            "true"
        } else {
            "false"
        },
    );
    if let Some(ip) = &ctx.source_ip {
        c.set("aws:SourceIp", ip.as_str());
    }
    if let Some(rec) = r.secret {
        c.set("secretsmanager:SecretId", rec.arn.as_str());
        c.set_resource_tags(rec.tags.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        for (k, v) in &rec.tags {
            c.set(&format!("secretsmanager:ResourceTag/{k}"), v.as_str());
        }
    }
    if let Some(t) = r.request_tags {
        c.set_request_tags(t.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    }
    for (k, v) in r.extra {
        c.set(k, *v);
    }
    let identity = s.identity.policies_for(&ctx.principal);
    let identity_refs: Vec<&Policy> = identity.iter().map(|p| p.as_ref()).collect();
    let resource_policy = match r
        .secret
        .and_then(|rec| rec.policy.as_deref().map(|p| (rec, p)))
    {
        Some((rec, text)) => Some(s.compiled_policy(&rec.arn, text)?),
        None => None,
    };
    let request = Request {
        principal: principal_info(&ctx.principal),
        action: r.action,
        resource: r.resource,
        context: &c,
    };
    let outcome = evaluate(
        &request,
        &Inputs {
            identity_policies: &identity_refs,
            resource_policy: resource_policy.as_deref(),
            resource_account: &s.cfg.account,
            kind: ResourceKind::Generic,
        },
    );
    if outcome.decision == Decision::Allow {
        return Ok(());
    }
    let msg = outcome.denial_message(&request).unwrap_or_else(|| {
        format!(
            "User: {} is not authorized to perform: {} on resource: {}",
            ctx.principal.arn, r.action, r.resource
        )
    });
    Err(AwsError::access_denied(msg))
}

fn authorize_secret(
    s: &Secrets,
    ctx: &CallContext,
    managed: Option<&str>,
    action: &str,
    rec: &SecretRecord,
) -> Result<(), AwsError> {
    authorize(
        s,
        ctx,
        managed,
        AuthReq {
            action,
            resource: &rec.arn,
            secret: Some(rec),
            request_tags: None,
            extra: &[],
        },
    )
}

fn authorize_account(s: &Secrets, ctx: &CallContext, action: &str) -> Result<(), AwsError> {
    authorize(
        s,
        ctx,
        None,
        AuthReq {
            action,
            resource: "*",
            secret: None,
            request_tags: None,
            extra: &[],
        },
    )
}

/// Resolves, records for the audit trail, and authorizes.
async fn target(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    action: &str,
    a: &mut AuditCtx,
) -> Result<(SecretRecord, u64), AwsError> {
    let (rec, v) = resolve(s, req_st(input, "SecretId")?).await?;
    a.secret(&rec.arn);
    authorize_secret(s, ctx, managed, action, &rec)?;
    Ok((rec, v))
}

// ---------------------------------------------------------------- tags

fn parse_tags(input: &Value) -> Result<Vec<(String, String)>, AwsError> {
    let mut out: Vec<(String, String)> = Vec::new();
    if let Some(list) = input.get("Tags").and_then(Value::as_array) {
        for t in list {
            let k = t
                .get("Key")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_param("A tag needs a Key."))?;
            let v = t.get("Value").and_then(Value::as_str).unwrap_or("");
            if k.starts_with("aws:") {
                return Err(invalid_param("Tag keys can't start with aws:."));
            }
            match out.iter_mut().find(|(ok, _)| ok == k) {
                Some(e) => e.1 = v.to_string(),
                None => out.push((k.to_string(), v.to_string())),
            }
        }
    }
    Ok(out)
}

fn tags_json(tags: &[(String, String)]) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

// ---------------------------------------------------------------- versions and labels

/// Moves `stage` to version `to`, taking it off any other version; moving AWSCURRENT puts
/// AWSPREVIOUS on the version that was current.
fn move_stage(rec: &mut SecretRecord, stage: &str, to: &str) {
    let previous = rec
        .version_with_stage(stage)
        .map(|v| v.id.clone())
        .filter(|id| id != to);
    for v in rec.versions.iter_mut() {
        if v.id != to {
            v.stages.retain(|s| s != stage);
        } else if !v.stages.iter().any(|s| s == stage) {
            v.stages.push(stage.to_string());
        }
    }
    if stage == AWSCURRENT
        && let Some(prev) = previous
    {
        move_stage(rec, AWSPREVIOUS, &prev);
    }
}

/// Drops the oldest deprecated (unlabeled) versions older than a day while there are more than
/// [`MAX_VERSIONS`]; returns the dropped version ids.
fn prune(rec: &mut SecretRecord, now_ms: i64) -> Vec<String> {
    let mut dropped = Vec::new();
    while rec.versions.len() > MAX_VERSIONS {
        let Some(i) = rec
            .versions
            .iter()
            .position(|v| v.stages.is_empty() && v.created_ms + DAY_MS <= now_ms)
        else {
            break;
        };
        dropped.push(rec.versions.remove(i).id);
    }
    dropped
}

fn version_id(input: &Value) -> String {
    st(input, "ClientRequestToken")
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The idempotency check for a token that names an existing version: same value -> `true`
/// (nothing to do), another value -> ResourceExistsException.
async fn same_version_value(
    s: &Secrets,
    ctx: &CallContext,
    rec: &SecretRecord,
    version_id: &str,
    value: &Plain,
) -> Result<bool, AwsError> {
    if rec.version(version_id).is_none() {
        return Ok(false);
    }
    let stored = load_value(s, &rec.name, version_id).await?;
    let existing = open(s, ctx, &rec.arn, version_id, &stored).await?;
    if existing.binary == value.binary && existing.bytes[..] == value.bytes[..] {
        Ok(true)
    } else {
        Err(AwsError::client(
            "ResourceExistsException",
            "You can't modify an existing version, you can only create a new version.",
        ))
    }
}

/// Adds version `id` with `value` and `stages` to `rec`; returns the batch additions.
#[allow(clippy::too_many_arguments)]
async fn add_version(
    s: &Secrets,
    ctx: &CallContext,
    rec: &mut SecretRecord,
    id: &str,
    value: &Plain,
    stages: &[String],
    batch: Batch,
    changed: &mut Vec<String>,
) -> Result<Batch, AwsError> {
    let key = key_of(s, rec.kms_key_id.as_deref()).await?;
    let sealed = seal(s, ctx, &key, &rec.arn, id, value).await?;
    let now = now(s);
    rec.versions.push(VersionMeta {
        id: id.to_string(),
        created_ms: now,
        stages: Vec::new(),
        kms_key_arn: sealed.kms_key_arn.clone(),
    });
    for stage in stages {
        if stage == AWSCURRENT {
            changed.push(rec.arn.clone());
        }
        move_stage(rec, stage, id);
    }
    rec.last_changed_ms = now;
    let mut batch = batch
        .expect(NS_VALUES, value_key(&rec.name, id), None)
        .pipe(|b| put_value(b, &rec.name, id, &sealed));
    for gone in prune(rec, now) {
        batch = batch.delete(NS_VALUES, value_key(&rec.name, &gone));
    }
    Ok(batch)
}

trait Pipe: Sized {
    fn pipe(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }
}
impl Pipe for Batch {}

// ---------------------------------------------------------------- operations

async fn create_secret(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let name = req_st(input, "Name")?;
    check_name(name)?;
    let value = new_value(input)?;
    let tags = parse_tags(input)?;
    if tags.len() > MAX_TAGS {
        return Err(AwsError::client(
            "LimitExceededException",
            format!("A secret can have at most {MAX_TAGS} tags."),
        ));
    }
    if input
        .get("AddReplicaRegions")
        .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(invalid_request(
            "sluice serves a single region; AddReplicaRegions is not supported.",
        ));
    }
    let kms_key_id = st(input, "KmsKeyId").filter(|k| *k != crate::MANAGED_KEY_ALIAS);
    if let Some((existing, _)) = get_record(s, name).await? {
        a.secret(&existing.arn);
        authorize_secret(s, ctx, managed, "secretsmanager:CreateSecret", &existing)?;
        if existing.deleted_ms.is_some() {
            return Err(invalid_request(
                "You can't create this secret because a secret with this name is already scheduled for deletion.",
            ));
        }
        // A retried CreateSecret (same token, same value) answers as the first did.
        if let (Some(token), Some(v)) = (st(input, "ClientRequestToken"), &value)
            && same_version_value(s, ctx, &existing, token, v).await?
        {
            return Ok(Outcome::read(json!({
                "ARN": existing.arn, "Name": existing.name, "VersionId": token,
                "ReplicationStatus": [],
            })));
        }
        return Err(AwsError::client(
            "ResourceExistsException",
            format!("The operation failed because the secret {name} already exists."),
        ));
    }
    let arn = secret_arn(s, name);
    a.secret(&arn);
    let description = st(input, "Description");
    let mut extra: Vec<(&str, &str)> = vec![("secretsmanager:Name", name)];
    if let Some(d) = description {
        extra.push(("secretsmanager:Description", d));
    }
    if let Some(k) = kms_key_id {
        extra.push(("secretsmanager:KmsKeyId", k));
    }
    authorize(
        s,
        ctx,
        managed,
        AuthReq {
            action: "secretsmanager:CreateSecret",
            resource: &arn,
            secret: None,
            request_tags: Some(&tags),
            extra: &extra,
        },
    )?;
    if let Some(k) = kms_key_id {
        validate_key(s, ctx, k, &arn).await?;
    }
    let now = now(s);
    let mut rec = SecretRecord {
        v: 1,
        name: name.to_string(),
        arn: arn.clone(),
        description: description.map(str::to_string),
        kms_key_id: kms_key_id.map(str::to_string),
        created_ms: now,
        last_changed_ms: now,
        deleted_ms: None,
        purge_ms: None,
        tags,
        policy: None,
        owning_service: managed.map(str::to_string),
        versions: Vec::new(),
    };
    let mut batch = Batch::new();
    let mut changed = Vec::new();
    let mut response = json!({"ARN": arn, "Name": name, "ReplicationStatus": []});
    if let Some(v) = &value {
        let id = version_id(input);
        batch = add_version(
            s,
            ctx,
            &mut rec,
            &id,
            v,
            &[AWSCURRENT.to_string()],
            batch,
            &mut changed,
        )
        .await?;
        response["VersionId"] = json!(id);
    }
    let batch = put_record(batch, &rec, None);
    let mut out = Outcome::write(response, batch);
    out.current_changed = changed;
    out.elements = json!({"arn": arn});
    Ok(out)
}

fn describe(rec: &SecretRecord, list_entry: bool) -> Value {
    let mut d = json!({
        "ARN": rec.arn,
        "Name": rec.name,
        "RotationEnabled": false,
        "LastChangedDate": secs(rec.last_changed_ms),
        "CreatedDate": secs(rec.created_ms),
        "Tags": tags_json(&rec.tags),
    });
    if let Some(x) = &rec.description {
        d["Description"] = json!(x);
    }
    if let Some(k) = &rec.kms_key_id {
        d["KmsKeyId"] = json!(k);
    }
    if let Some(o) = &rec.owning_service {
        d["OwningService"] = json!(o);
    }
    if let Some(t) = rec.deleted_ms {
        d["DeletedDate"] = secs(t);
    }
    let mut map = serde_json::Map::new();
    for v in rec.versions.iter().filter(|v| !v.stages.is_empty()) {
        map.insert(v.id.clone(), json!(v.stages));
    }
    let key = if list_entry {
        "SecretVersionsToStages"
    } else {
        "VersionIdsToStages"
    };
    d[key] = Value::Object(map);
    d
}

async fn describe_secret(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (rec, _) = target(s, ctx, input, None, "secretsmanager:DescribeSecret", a).await?;
    Ok(Outcome::read(describe(&rec, false)))
}

/// Picks the version a read names (VersionId and/or VersionStage, default AWSCURRENT).
fn pick_version<'a>(rec: &'a SecretRecord, input: &Value) -> Result<&'a VersionMeta, AwsError> {
    let id = st(input, "VersionId");
    let stage = st(input, "VersionStage");
    let v = match (id, stage) {
        (Some(id), _) => rec.version(id).ok_or_else(|| {
            AwsError::client(
                "ResourceNotFoundException",
                format!(
                    "Secrets Manager can't find the specified secret value for VersionId: {id}"
                ),
            )
        })?,
        (None, stage) => {
            let stage = stage.unwrap_or(AWSCURRENT);
            rec.version_with_stage(stage).ok_or_else(|| {
                AwsError::client(
                    "ResourceNotFoundException",
                    format!(
                        "Secrets Manager can't find the specified secret value for staging label: {stage}"
                    ),
                )
            })?
        }
    };
    if let (Some(_), Some(stage)) = (id, stage)
        && !v.stages.iter().any(|s| s == stage)
    {
        return Err(invalid_param(format!(
            "The version {} does not have the staging label {stage}.",
            v.id
        )));
    }
    Ok(v)
}

async fn read_value(
    s: &Secrets,
    ctx: &CallContext,
    rec: &SecretRecord,
    input: &Value,
) -> Result<(Value, SecretValue), AwsError> {
    require_live(rec)?;
    let version = pick_version(rec, input)?;
    let stored = load_value(s, &rec.name, &version.id).await?;
    let plain = open(s, ctx, &rec.arn, &version.id, &stored).await?;
    let response = json!({
        "ARN": rec.arn,
        "Name": rec.name,
        "VersionId": version.id,
        "VersionStages": version.stages,
        "CreatedDate": secs(version.created_ms),
    });
    Ok((
        response,
        SecretValue {
            arn: rec.arn.clone(),
            name: rec.name.clone(),
            version_id: version.id.clone(),
            binary: plain.binary,
            bytes: plain.bytes,
        },
    ))
}

async fn get_secret_value(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (rec, _) = target(s, ctx, input, None, "secretsmanager:GetSecretValue", a).await?;
    let mut extra = Vec::new();
    if let Some(v) = st(input, "VersionId") {
        extra.push(("secretsmanager:VersionId", v));
    }
    if let Some(v) = st(input, "VersionStage") {
        extra.push(("secretsmanager:VersionStage", v));
    }
    if !extra.is_empty() {
        authorize(
            s,
            ctx,
            None,
            AuthReq {
                action: "secretsmanager:GetSecretValue",
                resource: &rec.arn,
                secret: Some(&rec),
                request_tags: None,
                extra: &extra,
            },
        )?;
    }
    let (response, value) = read_value(s, ctx, &rec, input).await?;
    let mut out = Outcome::read(response);
    out.elements = json!({"versionId": value.version_id});
    out.value = Some(value);
    Ok(out)
}

async fn batch_get(s: &Secrets, ctx: &CallContext, input: &Value) -> Result<Outcome, AwsError> {
    authorize_account(s, ctx, "secretsmanager:BatchGetSecretValue")?;
    let ids: Vec<String> = match (input.get("SecretIdList"), input.get("Filters")) {
        (Some(_), Some(_)) => {
            return Err(invalid_param(
                "Either SecretIdList or Filters must be provided, not both.",
            ));
        }
        (Some(list), None) => list
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        (None, Some(_)) => {
            let (recs, next) = list_page(s, input).await?;
            let mut ids: Vec<String> = recs.into_iter().map(|r| r.arn).collect();
            ids.truncate(20);
            let mut out = batch_values(s, ctx, &ids).await?;
            if let Some(t) = next {
                out.response["NextToken"] = json!(t);
            }
            return Ok(out);
        }
        (None, None) => {
            return Err(invalid_param(
                "Either SecretIdList or Filters must be provided.",
            ));
        }
    };
    if ids.len() > 20 {
        return Err(invalid_param(
            "SecretIdList can contain at most 20 secrets.",
        ));
    }
    batch_values(s, ctx, &ids).await
}

async fn batch_values(s: &Secrets, ctx: &CallContext, ids: &[String]) -> Result<Outcome, AwsError> {
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for id in ids {
        // Each secret is a GetSecretValue of its own, authorized and audited as such.
        let input = json!({"SecretId": id});
        match Box::pin(dispatch(s, "GetSecretValue", ctx, &input, None)).await {
            Ok(mut o) => {
                if let Some(v) = o.value.take() {
                    put_value_in(&mut o.response, &v);
                }
                values.push(o.response);
            }
            Err(e) => {
                errors.push(json!({"SecretId": id, "ErrorCode": e.code, "Message": e.message}))
            }
        }
    }
    Ok(Outcome::read(
        json!({"SecretValues": values, "Errors": errors}),
    ))
}

async fn put_secret_value(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (mut rec, ver) = target(s, ctx, input, managed, "secretsmanager:PutSecretValue", a).await?;
    require_owner(&rec, managed)?;
    require_live(&rec)?;
    if input.get("RotationToken").is_some() {
        return Err(invalid_request(
            "sluice has no rotation function runtime yet; RotationToken is not supported.",
        ));
    }
    let value = new_value(input)?
        .ok_or_else(|| invalid_param("You must provide either SecretString or SecretBinary."))?;
    let stages: Vec<String> = match input.get("VersionStages").and_then(Value::as_array) {
        Some(l) => l
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        None => vec![AWSCURRENT.to_string()],
    };
    let id = version_id(input);
    if same_version_value(s, ctx, &rec, &id, &value).await? {
        let stages = rec
            .version(&id)
            .map(|v| v.stages.clone())
            .unwrap_or_default();
        return Ok(Outcome::read(json!({
            "ARN": rec.arn, "Name": rec.name, "VersionId": id, "VersionStages": stages,
        })));
    }
    let mut changed = Vec::new();
    let batch = add_version(
        s,
        ctx,
        &mut rec,
        &id,
        &value,
        &stages,
        Batch::new(),
        &mut changed,
    )
    .await?;
    let new_stages = rec
        .version(&id)
        .map(|v| v.stages.clone())
        .unwrap_or_default();
    let batch = put_record(batch, &rec, Some(ver));
    let mut out = Outcome::write(
        json!({"ARN": rec.arn, "Name": rec.name, "VersionId": id, "VersionStages": new_stages}),
        batch,
    );
    out.current_changed = changed;
    out.elements = json!({"versionId": id});
    Ok(out)
}

async fn update_secret(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (mut rec, ver) = target(s, ctx, input, managed, "secretsmanager:UpdateSecret", a).await?;
    require_owner(&rec, managed)?;
    require_live(&rec)?;
    let value = new_value(input)?;
    let mut batch = Batch::new();
    let mut changed = Vec::new();
    let mut touched = false;
    if let Some(d) = st(input, "Description") {
        rec.description = Some(d.to_string());
        touched = true;
    }
    // A new key: validate it, then re-seal the labeled versions under it.
    if let Some(k) = st(input, "KmsKeyId") {
        let new_key = (k != crate::MANAGED_KEY_ALIAS).then(|| k.to_string());
        if new_key != rec.kms_key_id {
            let key = key_of(s, new_key.as_deref()).await?;
            validate_key(s, ctx, &key, &rec.arn).await?;
            let labeled: Vec<String> = rec
                .versions
                .iter()
                .filter(|v| {
                    v.stages
                        .iter()
                        .any(|s| s == AWSCURRENT || s == AWSPENDING || s == AWSPREVIOUS)
                })
                .map(|v| v.id.clone())
                .collect();
            for id in labeled {
                let stored = load_value(s, &rec.name, &id).await?;
                let plain = open(s, ctx, &rec.arn, &id, &stored).await?;
                let sealed = seal(s, ctx, &key, &rec.arn, &id, &plain).await?;
                if let Some(v) = rec.versions.iter_mut().find(|v| v.id == id) {
                    v.kms_key_arn = sealed.kms_key_arn.clone();
                }
                batch = put_value(batch, &rec.name, &id, &sealed);
            }
            rec.kms_key_id = new_key;
            touched = true;
        }
    }
    let mut response = json!({"ARN": rec.arn, "Name": rec.name});
    if let Some(v) = &value {
        let id = version_id(input);
        if same_version_value(s, ctx, &rec, &id, v).await? {
            response["VersionId"] = json!(id);
        } else {
            batch = add_version(
                s,
                ctx,
                &mut rec,
                &id,
                v,
                &[AWSCURRENT.to_string()],
                batch,
                &mut changed,
            )
            .await?;
            response["VersionId"] = json!(id);
            touched = true;
        }
    }
    if !touched {
        return Ok(Outcome::read(response));
    }
    rec.last_changed_ms = now(s);
    let batch = put_record(batch, &rec, Some(ver));
    let mut out = Outcome::write(response, batch);
    out.current_changed = changed;
    Ok(out)
}

async fn update_stage(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (mut rec, ver) = target(
        s,
        ctx,
        input,
        managed,
        "secretsmanager:UpdateSecretVersionStage",
        a,
    )
    .await?;
    require_owner(&rec, managed)?;
    require_live(&rec)?;
    let stage = req_st(input, "VersionStage")?;
    let remove_from = st(input, "RemoveFromVersionId");
    let move_to = st(input, "MoveToVersionId");
    for id in [remove_from, move_to].into_iter().flatten() {
        if rec.version(id).is_none() {
            return Err(invalid_param(format!(
                "The version {id} does not exist for this secret."
            )));
        }
    }
    let holder = rec.version_with_stage(stage).map(|v| v.id.clone());
    if let Some(from) = remove_from
        && holder.as_deref() != Some(from)
    {
        return Err(invalid_param(format!(
            "The staging label {stage} is not attached to version {from}."
        )));
    }
    if let (Some(h), Some(to)) = (&holder, move_to)
        && h != to
        && remove_from.is_none()
    {
        return Err(invalid_param(format!(
            "The staging label {stage} is currently attached to version {h}. You must specify RemoveFromVersionId to move it."
        )));
    }
    let mut changed = Vec::new();
    match (move_to, remove_from) {
        (Some(to), _) => {
            if stage == AWSCURRENT && holder.as_deref() != Some(to) {
                changed.push(rec.arn.clone());
            }
            move_stage(&mut rec, stage, to);
        }
        (None, Some(from)) => {
            if stage == AWSCURRENT {
                return Err(invalid_param(
                    "You can't remove the staging label AWSCURRENT; move it to another version instead.",
                ));
            }
            if let Some(v) = rec.versions.iter_mut().find(|v| v.id == from) {
                v.stages.retain(|s| s != stage);
            }
        }
        (None, None) => {
            return Err(invalid_param(
                "Specify MoveToVersionId, RemoveFromVersionId, or both.",
            ));
        }
    }
    let now = now(s);
    rec.last_changed_ms = now;
    let mut batch = Batch::new();
    for gone in prune(&mut rec, now) {
        batch = batch.delete(NS_VALUES, value_key(&rec.name, &gone));
    }
    let batch = put_record(batch, &rec, Some(ver));
    let mut out = Outcome::write(json!({"ARN": rec.arn, "Name": rec.name}), batch);
    out.current_changed = changed;
    Ok(out)
}

// ---------------------------------------------------------------- listing

fn filter_matches(rec: &SecretRecord, key: &str, values: &[&str]) -> bool {
    let test = |field: &str, v: &str| -> bool {
        match v.strip_prefix('!') {
            Some(neg) => !field.to_lowercase().starts_with(&neg.to_lowercase()),
            None => field.to_lowercase().starts_with(&v.to_lowercase()),
        }
    };
    let any = |fields: Vec<&str>, v: &str| -> bool {
        if let Some(neg) = v.strip_prefix('!') {
            fields
                .iter()
                .all(|f| !f.to_lowercase().starts_with(&neg.to_lowercase()))
        } else {
            fields.iter().any(|f| test(f, v))
        }
    };
    values.iter().any(|v| match key {
        "name" => test(&rec.name, v),
        "description" => test(rec.description.as_deref().unwrap_or(""), v),
        "tag-key" => any(rec.tags.iter().map(|t| t.0.as_str()).collect(), v),
        "tag-value" => any(rec.tags.iter().map(|t| t.1.as_str()).collect(), v),
        "owning-service" => test(rec.owning_service.as_deref().unwrap_or(""), v),
        "primary-region" => false,
        "all" => {
            let fields = [rec.name.as_str(), rec.description.as_deref().unwrap_or("")]
                .into_iter()
                .chain(rec.tags.iter().flat_map(|t| [t.0.as_str(), t.1.as_str()]))
                .chain(rec.owning_service.as_deref())
                .collect();
            any(fields, v)
        }
        _ => false,
    })
}

/// Secrets matching the request's filters, sorted, one page; and the next token.
async fn list_page(
    s: &Secrets,
    input: &Value,
) -> Result<(Vec<SecretRecord>, Option<String>), AwsError> {
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(list) = input.get("Filters").and_then(Value::as_array) {
        for f in list {
            let key = f.get("Key").and_then(Value::as_str).unwrap_or("");
            if !matches!(
                key,
                "description"
                    | "name"
                    | "tag-key"
                    | "tag-value"
                    | "primary-region"
                    | "owning-service"
                    | "all"
            ) {
                return Err(invalid_param(format!("Invalid filter key: {key}")));
            }
            let values = f
                .get("Values")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            filters.push((key.to_string(), values));
        }
    }
    let include_deleted = flag(input, "IncludePlannedDeletion").unwrap_or(false);
    let rows = s
        .store
        .scan(NS_SECRETS, KeyRange::all(), usize::MAX, false)
        .await
        .map_err(internal)?;
    let mut recs: Vec<SecretRecord> = rows
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice::<SecretRecord>(&v.value).ok())
        .filter(|r| include_deleted || r.deleted_ms.is_none())
        .filter(|r| {
            filters.iter().all(|(k, vals)| {
                let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
                filter_matches(r, k, &vals)
            })
        })
        .collect();
    let desc = st(input, "SortOrder") == Some("desc");
    recs.sort_by(|a, b| (a.created_ms, &a.name).cmp(&(b.created_ms, &b.name)));
    if desc {
        recs.reverse();
    }
    let start = match st(input, "NextToken") {
        Some(t) => {
            let bytes = B64
                .decode(t)
                .map_err(|_| invalid_param("Invalid NextToken."))?;
            let text = String::from_utf8(bytes).map_err(|_| invalid_param("Invalid NextToken."))?;
            let (ms, name) = text
                .split_once('/')
                .ok_or_else(|| invalid_param("Invalid NextToken."))?;
            let ms: i64 = ms
                .parse()
                .map_err(|_| invalid_param("Invalid NextToken."))?;
            recs.iter()
                .position(|r| {
                    let o = (r.created_ms, r.name.as_str()).cmp(&(ms, name));
                    if desc { o.is_lt() } else { o.is_gt() }
                })
                .unwrap_or(recs.len())
        }
        None => 0,
    };
    let max = input
        .get("MaxResults")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .clamp(1, 100) as usize;
    let page: Vec<SecretRecord> = recs.iter().skip(start).take(max).cloned().collect();
    let next = (start + page.len() < recs.len())
        .then(|| page.last())
        .flatten()
        .map(|r| B64.encode(format!("{}/{}", r.created_ms, r.name)));
    Ok((page, next))
}

async fn list_secrets(s: &Secrets, ctx: &CallContext, input: &Value) -> Result<Outcome, AwsError> {
    authorize_account(s, ctx, "secretsmanager:ListSecrets")?;
    let (page, next) = list_page(s, input).await?;
    let mut out = json!({"SecretList": page.iter().map(|r| describe(r, true)).collect::<Vec<_>>()});
    if let Some(t) = next {
        out["NextToken"] = json!(t);
    }
    Ok(Outcome::read(out))
}

async fn list_version_ids(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (rec, _) = target(
        s,
        ctx,
        input,
        None,
        "secretsmanager:ListSecretVersionIds",
        a,
    )
    .await?;
    let include_deprecated = flag(input, "IncludeDeprecated").unwrap_or(false);
    let all: Vec<&VersionMeta> = rec
        .versions
        .iter()
        .rev()
        .filter(|v| include_deprecated || !v.stages.is_empty())
        .collect();
    let start = match st(input, "NextToken") {
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| invalid_param("Invalid NextToken."))?,
        None => 0,
    };
    let max = input
        .get("MaxResults")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .clamp(1, 100) as usize;
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(max)
        .map(|v| {
            json!({
                "VersionId": v.id,
                "VersionStages": v.stages,
                "CreatedDate": secs(v.created_ms),
                "KmsKeyIds": [v.kms_key_arn],
            })
        })
        .collect();
    let mut out = json!({"ARN": rec.arn, "Name": rec.name, "Versions": page});
    if start + max < all.len() {
        out["NextToken"] = json!((start + max).to_string());
    }
    Ok(Outcome::read(out))
}

// ---------------------------------------------------------------- deletion

async fn purge_batch(s: &Secrets, rec: &SecretRecord, ver: u64) -> Result<Batch, AwsError> {
    let mut batch = Batch::new()
        .expect(NS_SECRETS, rec.name.as_bytes(), Some(ver))
        .delete(NS_SECRETS, rec.name.as_bytes());
    let values = s
        .store
        .scan(
            NS_VALUES,
            KeyRange::prefix(&value_prefix(&rec.name)),
            usize::MAX,
            false,
        )
        .await
        .map_err(internal)?;
    for (k, _) in values {
        batch = batch.delete(NS_VALUES, k);
    }
    Ok(batch)
}

async fn delete_secret(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (mut rec, ver) = target(s, ctx, input, managed, "secretsmanager:DeleteSecret", a).await?;
    require_owner(&rec, managed)?;
    let force = flag(input, "ForceDeleteWithoutRecovery").unwrap_or(false);
    let window = input.get("RecoveryWindowInDays").and_then(Value::as_i64);
    if force && window.is_some() {
        return Err(invalid_param(
            "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.",
        ));
    }
    let window = window.unwrap_or(30);
    if !(7..=30).contains(&window) {
        return Err(invalid_param(
            "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).",
        ));
    }
    let now = now(s);
    let (batch, deletion) = if force {
        (purge_batch(s, &rec, ver).await?, now)
    } else {
        if rec.deleted_ms.is_some() {
            return Err(marked_for_deletion());
        }
        rec.deleted_ms = Some(now);
        rec.purge_ms = Some(now + window * DAY_MS);
        (
            put_record(Batch::new(), &rec, Some(ver)),
            now + window * DAY_MS,
        )
    };
    let mut out = Outcome::write(
        json!({"ARN": rec.arn, "Name": rec.name, "DeletionDate": secs(deletion)}),
        batch,
    );
    out.current_changed = vec![rec.arn.clone()];
    Ok(out)
}

async fn restore_secret(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (mut rec, ver) = target(s, ctx, input, managed, "secretsmanager:RestoreSecret", a).await?;
    require_owner(&rec, managed)?;
    let mut out = Outcome::read(json!({"ARN": rec.arn, "Name": rec.name}));
    if rec.deleted_ms.is_some() {
        rec.deleted_ms = None;
        rec.purge_ms = None;
        out.batch = Some(put_record(Batch::new(), &rec, Some(ver)));
        out.current_changed = vec![rec.arn.clone()];
    }
    Ok(out)
}

pub(crate) async fn maintenance(s: &Secrets) -> Result<(), AwsError> {
    let now = now(s);
    let rows = s
        .store
        .scan(NS_SECRETS, KeyRange::all(), usize::MAX, false)
        .await
        .map_err(internal)?;
    let svc = CallContext::direct(
        Principal::service(&s.cfg.account, EVENT_SOURCE),
        &s.cfg.region,
        &uuid::Uuid::new_v4().to_string(),
    );
    for (_, v) in rows {
        let Ok(rec) = serde_json::from_slice::<SecretRecord>(&v.value) else {
            continue;
        };
        if rec.purge_ms.is_some_and(|t| t <= now) {
            let batch = purge_batch(s, &rec, v.version).await?;
            // Audited as the end of the deletion the caller scheduled.
            let record = s.audit.record_for(
                &svc,
                AuditEvent {
                    event_source: EVENT_SOURCE,
                    event_name: "DeleteSecret",
                    request_parameters: json!({"secretId": rec.arn, "endOfRecoveryWindow": true}),
                    resources: vec![AuditResource {
                        arn: rec.arn.clone(),
                        kind: SECRET_RESOURCE_TYPE.to_string(),
                    }],
                    read_only: false,
                },
                Ok(Value::Null),
            );
            match s.store.apply(s.audit.append_to(batch, &record)).await {
                Ok(_) => s.bump(&rec.arn),
                // Restored or changed meanwhile: the next pass looks again.
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(internal(e)),
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- random passwords

fn random_password(s: &Secrets, ctx: &CallContext, input: &Value) -> Result<Outcome, AwsError> {
    authorize_account(s, ctx, "secretsmanager:GetRandomPassword")?;
    let d = PasswordOptions::default();
    let o = PasswordOptions {
        length: input
            .get("PasswordLength")
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .unwrap_or(d.length),
        exclude_characters: st(input, "ExcludeCharacters").unwrap_or("").to_string(),
        exclude_numbers: flag(input, "ExcludeNumbers").unwrap_or(false),
        exclude_punctuation: flag(input, "ExcludePunctuation").unwrap_or(false),
        exclude_uppercase: flag(input, "ExcludeUppercase").unwrap_or(false),
        exclude_lowercase: flag(input, "ExcludeLowercase").unwrap_or(false),
        include_space: flag(input, "IncludeSpace").unwrap_or(false),
        require_each_included_type: flag(input, "RequireEachIncludedType").unwrap_or(true),
    };
    let p = generate(&o)?;
    Ok(Outcome::read(json!({"RandomPassword": p.as_str()})))
}

// ---------------------------------------------------------------- tags

async fn tag_resource(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (mut rec, ver) = resolve(s, req_st(input, "SecretId")?).await?;
    a.secret(&rec.arn);
    let tags = parse_tags(input)?;
    authorize(
        s,
        ctx,
        managed,
        AuthReq {
            action: "secretsmanager:TagResource",
            resource: &rec.arn,
            secret: Some(&rec),
            request_tags: Some(&tags),
            extra: &[],
        },
    )?;
    require_live(&rec)?;
    for (k, v) in tags {
        match rec.tags.iter_mut().find(|(ok, _)| *ok == k) {
            Some(e) => e.1 = v,
            None => rec.tags.push((k, v)),
        }
    }
    if rec.tags.len() > MAX_TAGS {
        return Err(AwsError::client(
            "LimitExceededException",
            format!("A secret can have at most {MAX_TAGS} tags."),
        ));
    }
    Ok(Outcome::write(
        json!({}),
        put_record(Batch::new(), &rec, Some(ver)),
    ))
}

async fn untag_resource(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (mut rec, ver) = resolve(s, req_st(input, "SecretId")?).await?;
    a.secret(&rec.arn);
    let keys: Vec<String> = input
        .get("TagKeys")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    authorize(
        s,
        ctx,
        managed,
        AuthReq {
            action: "secretsmanager:UntagResource",
            resource: &rec.arn,
            secret: Some(&rec),
            request_tags: Some(&[]),
            extra: &[],
        },
    )?;
    require_live(&rec)?;
    rec.tags.retain(|(k, _)| !keys.contains(k));
    Ok(Outcome::write(
        json!({}),
        put_record(Batch::new(), &rec, Some(ver)),
    ))
}

// ---------------------------------------------------------------- resource policies

/// Parses a resource policy with the policy engine; malformed -> MalformedPolicyDocumentException.
fn parse_policy(text: &str, arn: &str) -> Result<Policy, AwsError> {
    if text.len() > 20_480 {
        return Err(AwsError::client(
            "LimitExceededException",
            "The resource policy is larger than 20480 characters.",
        ));
    }
    let p = Policy::parse_resource_policy(text)
        .map_err(|e| AwsError::client("MalformedPolicyDocumentException", e.to_string()))?;
    // Statements must be about this secret (or `*`).
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    for stmt in statements(&v) {
        for r in one_or_many(stmt.get("Resource")) {
            if r != "*" && r != arn && !r.starts_with("arn:aws:secretsmanager:") {
                return Err(AwsError::client(
                    "MalformedPolicyDocumentException",
                    format!("The resource {r} in the policy is not a secret."),
                ));
            }
        }
    }
    Ok(p)
}

fn statements(v: &Value) -> Vec<&Value> {
    match v.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(o @ Value::Object(_)) => vec![o],
        _ => Vec::new(),
    }
}

fn one_or_many(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether a policy grants access to everyone: an Allow statement whose principal is `*`
/// (or `{"AWS": "*"}`) without a condition.
fn is_public(text: &str) -> bool {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    statements(&v).into_iter().any(|stmt| {
        let allow = stmt.get("Effect").and_then(Value::as_str) == Some("Allow");
        let star = match stmt.get("Principal") {
            Some(Value::String(p)) => p == "*",
            Some(Value::Object(m)) => m.values().any(|v| one_or_many(Some(v)).contains(&"*")),
            _ => false,
        };
        let conditioned = stmt
            .get("Condition")
            .and_then(Value::as_object)
            .is_some_and(|c| !c.is_empty());
        allow && star && !conditioned
    })
}

async fn get_policy(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (rec, _) = target(s, ctx, input, None, "secretsmanager:GetResourcePolicy", a).await?;
    let mut out = json!({"ARN": rec.arn, "Name": rec.name});
    if let Some(p) = &rec.policy {
        out["ResourcePolicy"] = json!(p);
    }
    Ok(Outcome::read(out))
}

async fn put_policy(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (mut rec, ver) = target(
        s,
        ctx,
        input,
        managed,
        "secretsmanager:PutResourcePolicy",
        a,
    )
    .await?;
    require_owner(&rec, managed)?;
    require_live(&rec)?;
    let text = req_st(input, "ResourcePolicy")?;
    parse_policy(text, &rec.arn)?;
    if flag(input, "BlockPublicPolicy").unwrap_or(false) && is_public(text) {
        return Err(AwsError::client(
            "PublicPolicyException",
            "The BlockPublicPolicy parameter is set to true, and the resource policy did not prevent broad access to the secret.",
        ));
    }
    rec.policy = Some(text.to_string());
    rec.last_changed_ms = now(s);
    Ok(Outcome::write(
        json!({"ARN": rec.arn, "Name": rec.name}),
        put_record(Batch::new(), &rec, Some(ver)),
    ))
}

async fn delete_policy(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    managed: Option<&str>,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let (mut rec, ver) = target(
        s,
        ctx,
        input,
        managed,
        "secretsmanager:DeleteResourcePolicy",
        a,
    )
    .await?;
    require_owner(&rec, managed)?;
    require_live(&rec)?;
    rec.policy = None;
    rec.last_changed_ms = now(s);
    Ok(Outcome::write(
        json!({"ARN": rec.arn, "Name": rec.name}),
        put_record(Batch::new(), &rec, Some(ver)),
    ))
}

async fn validate_policy(
    s: &Secrets,
    ctx: &CallContext,
    input: &Value,
    a: &mut AuditCtx,
) -> Result<Outcome, AwsError> {
    let text = req_st(input, "ResourcePolicy")?;
    let arn = match st(input, "SecretId") {
        Some(_) => {
            let (rec, _) = target(
                s,
                ctx,
                input,
                None,
                "secretsmanager:ValidateResourcePolicy",
                a,
            )
            .await?;
            rec.arn
        }
        None => {
            authorize_account(s, ctx, "secretsmanager:ValidateResourcePolicy")?;
            format!(
                "arn:aws:secretsmanager:{}:{}:secret:*",
                s.cfg.region, s.cfg.account
            )
        }
    };
    parse_policy(text, &arn)?;
    let mut errors = Vec::new();
    if is_public(text) {
        errors.push(json!({
            "CheckName": "BROAD_ACCESS_CHECK",
            "ErrorMessage": "The resource policy grants access to every principal (\"*\") without a condition.",
        }));
    }
    Ok(Outcome::read(json!({
        "PolicyValidationPassed": errors.is_empty(),
        "ValidationErrors": errors,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> SecretRecord {
        SecretRecord {
            v: 1,
            name: "n".into(),
            arn: "arn".into(),
            description: None,
            kms_key_id: None,
            created_ms: 0,
            last_changed_ms: 0,
            deleted_ms: None,
            purge_ms: None,
            tags: vec![],
            policy: None,
            owning_service: None,
            versions: ["a", "b", "c"]
                .iter()
                .map(|id| VersionMeta {
                    id: id.to_string(),
                    created_ms: 0,
                    stages: vec![],
                    kms_key_arn: "k".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn moving_current_moves_previous_and_labels_are_unique() {
        let mut r = rec();
        move_stage(&mut r, AWSCURRENT, "a");
        assert_eq!(r.current_id(), Some("a"));
        assert!(r.version_with_stage(AWSPREVIOUS).is_none());
        move_stage(&mut r, AWSCURRENT, "b");
        assert_eq!(r.current_id(), Some("b"));
        assert_eq!(r.version_with_stage(AWSPREVIOUS).unwrap().id, "a");
        move_stage(&mut r, "custom", "a");
        move_stage(&mut r, AWSCURRENT, "c");
        assert_eq!(r.version_with_stage(AWSPREVIOUS).unwrap().id, "b");
        assert_eq!(r.version("a").unwrap().stages, vec!["custom".to_string()]);
        for stage in [AWSCURRENT, AWSPREVIOUS, "custom"] {
            let holders = r
                .versions
                .iter()
                .filter(|v| v.stages.iter().any(|s| s == stage))
                .count();
            assert_eq!(holders, 1, "{stage}");
        }
        // Moving a label onto the version that has it changes nothing.
        let before = r.clone();
        move_stage(&mut r, AWSCURRENT, "c");
        assert_eq!(r, before);
    }

    #[test]
    fn pruning_drops_only_old_deprecated_versions_beyond_the_limit() {
        let mut r = rec();
        r.versions.clear();
        for i in 0..105 {
            r.versions.push(VersionMeta {
                id: format!("v{i}"),
                created_ms: i,
                stages: if i == 0 {
                    vec![AWSCURRENT.into()]
                } else {
                    vec![]
                },
                kms_key_arn: "k".into(),
            });
        }
        // Nothing is a day old yet: nothing goes.
        assert!(prune(&mut r, 1000).is_empty());
        let gone = prune(&mut r, 2 * DAY_MS);
        assert_eq!(gone, (1..=5).map(|i| format!("v{i}")).collect::<Vec<_>>());
        assert_eq!(r.versions.len(), MAX_VERSIONS);
        assert_eq!(r.current_id(), Some("v0"));
    }

    #[test]
    fn filters_match_prefixes_and_negations() {
        let mut r = rec();
        r.name = "prod/db".into();
        r.tags = vec![("team".into(), "core".into())];
        assert!(filter_matches(&r, "name", &["prod"]));
        assert!(filter_matches(&r, "name", &["PROD/"]));
        assert!(!filter_matches(&r, "name", &["dev"]));
        assert!(filter_matches(&r, "name", &["!dev"]));
        assert!(filter_matches(&r, "tag-key", &["te"]));
        assert!(!filter_matches(&r, "tag-key", &["!team"]));
        assert!(filter_matches(&r, "tag-value", &["core"]));
        assert!(filter_matches(&r, "all", &["cor"]));
        assert!(!filter_matches(&r, "owning-service", &["events"]));
    }

    #[test]
    fn public_policies_are_recognised() {
        let public = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#;
        let public2 = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":"secretsmanager:*","Resource":"*"}}"#;
        let scoped = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#;
        let deny = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"secretsmanager:*","Resource":"*"}]}"#;
        assert!(is_public(public));
        assert!(is_public(public2));
        assert!(!is_public(scoped));
        assert!(!is_public(deny));
    }

    #[test]
    fn kms_errors_map_to_secrets_manager_errors() {
        let denied = kms_error(AwsError::access_denied("no"), false);
        assert_eq!(denied.code, "AccessDeniedException");
        assert!(denied.message.starts_with("Access to KMS is not allowed"));
        assert!(denied.message.contains("no"));
        let disabled = AwsError::client("DisabledException", "key is disabled");
        assert_eq!(kms_error(disabled.clone(), false).code, "DecryptionFailure");
        assert_eq!(kms_error(disabled, true).code, "EncryptionFailure");
        let nf = kms_error(AwsError::client("NotFoundException", "gone"), true);
        assert!(nf.message.contains("gone"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("prod/db-1_a+b=c.d@e!f").is_ok());
        assert!(check_name("has space").is_err());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(513)).is_err());
    }
}
