//! AWS Secrets Manager for sluice: secrets, versions and staging labels, KMS envelope
//! encryption, resource policies, service-managed secrets, and a secret cache for sluice's own
//! services.
//!
//! Design constraints:
//! - A secret value is never stored, logged, audited or put in an error message in plaintext.
//!   Each version is sealed the way Secrets Manager does it: a fresh 256-bit data key from
//!   [`sluice_kms::Kms::generate_data_key`] with the encryption context
//!   `{"SecretARN": <arn>, "SecretVersionId": <version id>}`, AES-256-GCM locally through
//!   `sluice_crypto` (key bytes only in zeroizing buffers), and only the encrypted data key and
//!   the ciphertext are stored (see [`model`] for the stored format). Reads call
//!   [`sluice_kms::Kms::decrypt`] with the same context. KMS is always called on the caller's
//!   behalf (`ctx.via("secretsmanager")`), so key policies see `kms:ViaService` and KMS audits
//!   the call with `invokedBy secretsmanager.amazonaws.com`.
//! - Without a KmsKeyId the AWS managed key `alias/aws/secretsmanager` is used; it is created on
//!   first use with AWS's default policy for it ([`managed_key_policy`]).
//! - Every call is authorized before any effect with the policy engine: the secret's resource
//!   policy plus the caller's identity policies (IAM's generic rules), and every call, allowed or
//!   not, appends one audit record (event source `secretsmanager.amazonaws.com`) holding
//!   identifiers only. A state change and its audit record commit in one store batch.
//! - Read-modify-write of a secret record uses the store's `Expect` on the record version and
//!   retries on conflict, so concurrent writers never lose an update.
//! - Secrets owned by another sluice service (`OwningService`) can be changed only through the
//!   Rust API for services ([`Secrets::create_managed_secret`] and friends).
//! - When the AWSCURRENT version of a secret changes (or the secret is deleted or restored),
//!   [`Secrets`] bumps that secret's generation; [`SecretCache`] entries from an older
//!   generation are refetched, so sluice's own services never serve a replaced value.
//! - Time comes from the injected clock (deletion windows, cache TTL).

pub mod cache;
pub mod model;
mod ops;
pub mod password;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use serde_json::{Value, json};
use sluice_audit::AuditLog;
use sluice_core::{AwsError, CallContext, Clock};
use sluice_kms::{IdentityPolicies, Kms};
use sluice_policy::Policy;
use sluice_store::Store;
use zeroize::Zeroizing;

pub use cache::SecretCache;

/// The event source of Secrets Manager audit records.
pub const EVENT_SOURCE: &str = "secretsmanager.amazonaws.com";
/// The alias of the AWS managed key.
pub const MANAGED_KEY_ALIAS: &str = "alias/aws/secretsmanager";

/// Configuration of the service.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    /// The account sluice serves.
    pub account: String,
    /// The region sluice serves.
    pub region: String,
}

/// A secret value in memory (wiped on drop).
pub struct SecretValue {
    /// The secret ARN.
    pub arn: String,
    /// The secret name.
    pub name: String,
    /// The version read.
    pub version_id: String,
    /// `true` for SecretBinary.
    pub binary: bool,
    /// The value bytes (UTF-8 for SecretString).
    pub bytes: Zeroizing<Vec<u8>>,
}

impl SecretValue {
    /// The value as text (SecretString), if it is text.
    pub fn as_str(&self) -> Option<&str> {
        if self.binary {
            None
        } else {
            std::str::from_utf8(&self.bytes).ok()
        }
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("arn", &self.arn)
            .field("version_id", &self.version_id)
            .finish_non_exhaustive()
    }
}

/// A value to store: text (SecretString) or bytes (SecretBinary).
pub enum NewValue<'a> {
    /// SecretString.
    String(&'a str),
    /// SecretBinary.
    Binary(&'a [u8]),
}

/// What a managed-secret write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// The secret ARN.
    pub arn: String,
    /// The secret name.
    pub name: String,
    /// The version written, if a value was written.
    pub version_id: Option<String>,
}

/// The Secrets Manager service.
#[derive(Debug)]
pub struct Secrets {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) kms: Arc<Kms>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) audit: AuditLog,
    pub(crate) identity: Arc<dyn IdentityPolicies>,
    pub(crate) cfg: SecretsConfig,
    /// ARN of the AWS managed key, once known.
    managed_key: RwLock<Option<String>>,
    /// Compiled resource policies by secret ARN (with their text).
    policies: RwLock<HashMap<String, (String, Arc<Policy>)>>,
    /// Generation of each secret whose AWSCURRENT changed since start, by ARN.
    generations: RwLock<HashMap<String, u64>>,
    counter: AtomicU64,
}

/// AWS's default key policy of `aws/secretsmanager` for `account` in `region`.
pub fn managed_key_policy(account: &str, region: &str) -> String {
    serde_json::to_string_pretty(&json!({
        "Version": "2012-10-17",
        "Id": "auto-secretsmanager-2",
        "Statement": [
            {
                "Sid": "Allow access through AWS Secrets Manager for all principals in the account that are authorized to use AWS Secrets Manager",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant", "kms:DescribeKey"],
                "Resource": "*",
                "Condition": {"StringEquals": {
                    "kms:ViaService": format!("secretsmanager.{region}.amazonaws.com"),
                    "kms:CallerAccount": account
                }}
            },
            {
                "Sid": "Allow access through AWS Secrets Manager for all principals in the account that are authorized to use AWS Secrets Manager (GenerateDataKey)",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "kms:GenerateDataKey*",
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:CallerAccount": account},
                              "StringLike": {"kms:ViaService": "secretsmanager.*.amazonaws.com"}}
            },
            {
                "Sid": "Allow direct access to key metadata to the account",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
                "Action": ["kms:Describe*", "kms:Get*", "kms:List*", "kms:RevokeGrant"],
                "Resource": "*"
            }
        ]
    }))
    .expect("json")
}

impl Secrets {
    /// A Secrets Manager service over `store`, encrypting through `kms`.
    pub fn new(
        store: Arc<dyn Store>,
        kms: Arc<Kms>,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
        identity: Arc<dyn IdentityPolicies>,
        cfg: SecretsConfig,
    ) -> Self {
        Self {
            store,
            kms,
            clock,
            audit,
            identity,
            cfg,
            managed_key: RwLock::new(None),
            policies: RwLock::new(HashMap::new()),
            generations: RwLock::new(HashMap::new()),
            counter: AtomicU64::new(0),
        }
    }

    /// Handles one wire operation (`op` is the part of X-Amz-Target after `secretsmanager.`);
    /// `input` has already been validated against the operation's model.
    pub async fn handle(
        &self,
        op: &str,
        ctx: &CallContext,
        input: Value,
    ) -> Result<Value, AwsError> {
        let mut out = ops::dispatch(self, op, ctx, &input, None).await?;
        if let Some(v) = out.value.take() {
            ops::put_value_in(&mut out.response, &v);
        }
        Ok(out.response)
    }

    /// GetSecretValue for sluice's own services: the value stays in a zeroizing buffer.
    /// `version_stage` defaults to AWSCURRENT. Authorized and audited like the API call.
    pub async fn get_secret_value(
        &self,
        ctx: &CallContext,
        secret_id: &str,
        version_id: Option<&str>,
        version_stage: Option<&str>,
    ) -> Result<SecretValue, AwsError> {
        let mut input = json!({"SecretId": secret_id});
        if let Some(v) = version_id {
            input["VersionId"] = json!(v);
        }
        if let Some(s) = version_stage {
            input["VersionStage"] = json!(s);
        }
        let mut out = ops::dispatch(self, "GetSecretValue", ctx, &input, None).await?;
        out.value.take().ok_or_else(AwsError::internal)
    }

    /// Creates a secret owned by `owning_service` (e.g. `events`), with an AWSCURRENT value.
    /// Ordinary callers cannot change or delete it. `ctx` is the principal on whose behalf the
    /// service acts (or the service principal `<service>.amazonaws.com`, which may act on the
    /// secrets its service owns).
    pub async fn create_managed_secret(
        &self,
        ctx: &CallContext,
        owning_service: &str,
        name: &str,
        value: NewValue<'_>,
        kms_key_id: Option<&str>,
    ) -> Result<SecretRef, AwsError> {
        let mut input = json!({"Name": name});
        ops::set_new_value(&mut input, &value);
        if let Some(k) = kms_key_id {
            input["KmsKeyId"] = json!(k);
        }
        let out = ops::dispatch(self, "CreateSecret", ctx, &input, Some(owning_service)).await?;
        Ok(secret_ref(&out.response))
    }

    /// Creates a secret owned by `owning_service` with no value yet, and so without any KMS
    /// call (it names the AWS managed key until a value is written with
    /// [`Secrets::update_managed_secret`], which may name another key). A service uses it to
    /// know the secret's ARN before it seals a value under a customer key, so that it can
    /// explain a key policy that refuses the `SecretARN` encryption context.
    pub async fn reserve_managed_secret(
        &self,
        ctx: &CallContext,
        owning_service: &str,
        name: &str,
    ) -> Result<SecretRef, AwsError> {
        let input = json!({"Name": name});
        let out = ops::dispatch(self, "CreateSecret", ctx, &input, Some(owning_service)).await?;
        Ok(secret_ref(&out.response))
    }

    /// Writes a new AWSCURRENT value of a secret owned by `owning_service` (and, if given, moves
    /// it to another KMS key first).
    pub async fn update_managed_secret(
        &self,
        ctx: &CallContext,
        owning_service: &str,
        secret_id: &str,
        value: NewValue<'_>,
        kms_key_id: Option<&str>,
    ) -> Result<SecretRef, AwsError> {
        let mut input = json!({"SecretId": secret_id});
        ops::set_new_value(&mut input, &value);
        if let Some(k) = kms_key_id {
            input["KmsKeyId"] = json!(k);
        }
        let out = ops::dispatch(self, "UpdateSecret", ctx, &input, Some(owning_service)).await?;
        Ok(secret_ref(&out.response))
    }

    /// Deletes a secret owned by `owning_service` at once (no recovery window), as services do
    /// when the resource that owns the secret goes away.
    pub async fn delete_managed_secret(
        &self,
        ctx: &CallContext,
        owning_service: &str,
        secret_id: &str,
    ) -> Result<(), AwsError> {
        let input = json!({"SecretId": secret_id, "ForceDeleteWithoutRecovery": true});
        ops::dispatch(self, "DeleteSecret", ctx, &input, Some(owning_service)).await?;
        Ok(())
    }

    /// Purges secrets whose recovery window has ended. The server calls this periodically; it is
    /// idempotent.
    pub async fn run_maintenance(&self) -> Result<(), AwsError> {
        ops::maintenance(self).await
    }

    /// The generation of secret `arn`: it changes whenever its AWSCURRENT version changes, or
    /// it is deleted or restored, inside this process.
    pub fn generation(&self, arn: &str) -> u64 {
        self.generations.read().get(arn).copied().unwrap_or(0)
    }

    /// A counter that grows with every generation change of any secret.
    pub fn change_counter(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    pub(crate) fn bump(&self, arn: &str) {
        let mut g = self.generations.write();
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        g.insert(arn.to_string(), n);
    }

    /// The ARN of the AWS managed key, creating it on first use.
    pub(crate) async fn managed_key_arn(&self) -> Result<String, AwsError> {
        if let Some(k) = self.managed_key.read().clone() {
            return Ok(k);
        }
        let arn = self
            .kms
            .ensure_aws_managed_key(
                MANAGED_KEY_ALIAS,
                &managed_key_policy(&self.cfg.account, &self.cfg.region),
            )
            .await?;
        *self.managed_key.write() = Some(arn.clone());
        Ok(arn)
    }

    pub(crate) fn compiled_policy(&self, arn: &str, text: &str) -> Result<Arc<Policy>, AwsError> {
        if let Some((t, p)) = self.policies.read().get(arn)
            && t == text
        {
            return Ok(p.clone());
        }
        let p = Arc::new(Policy::parse_resource_policy(text).map_err(|e| {
            tracing::error!(secret = arn, error = %e, "stored resource policy does not compile");
            AwsError::internal()
        })?);
        let mut c = self.policies.write();
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(arn.to_string(), (text.to_string(), p.clone()));
        Ok(p)
    }

    /// The account sluice serves.
    pub fn account(&self) -> &str {
        &self.cfg.account
    }
}

fn secret_ref(v: &Value) -> SecretRef {
    SecretRef {
        arn: v["ARN"].as_str().unwrap_or_default().to_string(),
        name: v["Name"].as_str().unwrap_or_default().to_string(),
        version_id: v["VersionId"].as_str().map(str::to_string),
    }
}

#[async_trait::async_trait]
impl sluice_core::JsonService for Secrets {
    fn signing_name(&self) -> &'static str {
        "secretsmanager"
    }

    async fn handle(&self, op: &str, ctx: &CallContext, input: Value) -> Result<Value, AwsError> {
        Secrets::handle(self, op, ctx, input).await
    }
}

#[cfg(test)]
mod tests;
