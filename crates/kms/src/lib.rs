//! AWS KMS for sluice: symmetric keys, aliases, tags, key policies, envelope encryption,
//! rotation, deletion windows, and an audit record for every call.
//!
//! Design constraints:
//! - Key material exists unsealed only in memory, in [`sluice_crypto::KeyMaterial`] (zeroized
//!   on drop), inside the per-process key cache; at rest it is sealed under the root key.
//! - Every call, allowed or denied, successful or not, appends one audit record (see
//!   `sluice-audit`); state changes and their audit record commit in one store batch.
//! - Authorization runs before any effect, through [`authz`]: the key policy is authoritative
//!   (AWS's key-policy semantics), evaluated with the caller's identity and the via-service and
//!   encryption-context keys of the call.
//! - The service is a plain Rust API ([`Kms::handle`] for wire requests, typed methods such as
//!   [`Kms::generate_data_key`] and [`Kms::decrypt`] for other services); it knows nothing of
//!   HTTP.
//! - Concurrency: read-modify-write of a key record uses the store's optimistic `Expect` on the
//!   record's version and retries on conflict, so concurrent writers (or nodes) never lose an
//!   update.

pub mod authz;
mod managed;
pub mod model;
mod ops;
pub mod policy_authz;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use parking_lot::RwLock;
use serde_json::Value;
use sluice_audit::AuditLog;
use sluice_core::{AwsError, CallContext, Clock};
use sluice_crypto::{KeyMaterial, RootKey};
use sluice_store::Store;

pub use authz::{Authorizer, DefaultAuthorizer};
use model::{KeyRecord, NS_KEYS};
pub use policy_authz::{IdentityPolicies, NoIdentityPolicies, PolicyAuthorizer};

/// The event source of KMS audit records.
pub const EVENT_SOURCE: &str = "kms.amazonaws.com";

/// The X-Amz-Target prefix of KMS.
pub const TARGET_PREFIX: &str = "TrentService";

/// A key as the service uses it: the record plus its unsealed materials.
#[derive(Debug)]
pub struct LoadedKey {
    /// The record.
    pub record: KeyRecord,
    /// The record's store version.
    pub version: u64,
    /// Unsealed materials by material id.
    materials: HashMap<u32, KeyMaterial>,
}

impl LoadedKey {
    fn material(&self, id: u32) -> Option<&KeyMaterial> {
        self.materials.get(&id)
    }
}

/// Configuration of the KMS service.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// The account sluice serves.
    pub account: String,
    /// The region sluice serves.
    pub region: String,
}

/// The KMS service.
#[derive(Debug)]
pub struct Kms {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) root: Arc<RootKey>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) audit: AuditLog,
    pub(crate) authz: Arc<dyn Authorizer>,
    pub(crate) cfg: KmsConfig,
    /// Loaded keys by key id; an entry is valid while its store version is current.
    cache: RwLock<HashMap<String, Arc<LoadedKey>>>,
    /// Alias name -> key id, for aliases read since the last alias write.
    aliases: RwLock<HashMap<String, String>>,
    /// Bumped by every [`Kms::forget`]; a load that raced with a write does not cache.
    generation: std::sync::atomic::AtomicU64,
}

/// The plaintext and ciphertext of a data key.
pub struct DataKey {
    /// The key ARN that encrypted it.
    pub key_arn: String,
    /// The encrypted data key.
    pub ciphertext: Vec<u8>,
    /// The plaintext data key (wiped on drop).
    pub plaintext: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_arn", &self.key_arn)
            .finish_non_exhaustive()
    }
}

impl Kms {
    /// A KMS service over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        root: Arc<RootKey>,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
        authz: Arc<dyn Authorizer>,
        cfg: KmsConfig,
    ) -> Self {
        Self {
            store,
            root,
            clock,
            audit,
            authz,
            cfg,
            cache: RwLock::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            aliases: RwLock::new(HashMap::new()),
        }
    }

    /// Handles one wire operation (`op` is the part of X-Amz-Target after `TrentService.`);
    /// `input` has already been validated against the operation's model.
    pub async fn handle(
        &self,
        op: &str,
        ctx: &CallContext,
        input: Value,
    ) -> Result<Value, AwsError> {
        ops::dispatch(self, op, ctx, input).await
    }

    /// GenerateDataKey on behalf of `ctx` (used by other services with a via-service context).
    pub async fn generate_data_key(
        &self,
        ctx: &CallContext,
        key_id: &str,
        bytes: usize,
        context: &BTreeMap<String, String>,
    ) -> Result<DataKey, AwsError> {
        ops::generate_data_key_typed(self, ctx, key_id, bytes, context).await
    }

    /// Decrypt on behalf of `ctx` (used by other services with a via-service context).
    pub async fn decrypt(
        &self,
        ctx: &CallContext,
        ciphertext: &[u8],
        context: &BTreeMap<String, String>,
        key_id: Option<&str>,
    ) -> Result<(String, zeroize::Zeroizing<Vec<u8>>), AwsError> {
        ops::decrypt_typed(self, ctx, ciphertext, context, key_id).await
    }

    /// Explains whether `ctx` may call `action` (e.g. `kms:Decrypt`) on key `key_id` (id, ARN,
    /// alias or alias ARN) with encryption context `context`: which key-policy or identity-policy
    /// statement decides and, for a refusal, which conditions failed. For diagnostics (an
    /// EventBridge connection's StateReason): it performs nothing and is not audited. `None` if
    /// the key does not exist or the authorizer cannot explain.
    pub async fn explain_access(
        &self,
        ctx: &CallContext,
        key_id: &str,
        action: &str,
        context: &BTreeMap<String, String>,
    ) -> Option<String> {
        let id = match ops::parse_key_ref(self, key_id).ok()? {
            ops::KeyRef::Id(id) => id,
            ops::KeyRef::Alias(a) => self.alias_target(&a).await.ok()??,
        };
        let key = self.load_key(&id).await.ok()??;
        self.authz.explain(
            ctx,
            &authz::KeyRequest {
                action,
                key: Some(&key.record),
                resource: &key.record.arn,
                encryption_context: Some(context),
                request_tags: None,
            },
        )
    }

    /// Deletes keys whose deletion window has ended and rotates keys whose rotation is due.
    /// The server calls this periodically; it is idempotent.
    pub async fn run_maintenance(&self) -> Result<(), AwsError> {
        ops::maintenance(self).await
    }

    pub(crate) fn key_arn(&self, key_id: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{}",
            self.cfg.region, self.cfg.account, key_id
        )
    }

    pub(crate) fn alias_arn(&self, alias: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:{}",
            self.cfg.region, self.cfg.account, alias
        )
    }

    /// Loads key `key_id` (a UUID), from the cache when present.
    ///
    /// The cache is authoritative because this process is the only writer of its store (the
    /// data directory is locked) and every write of a key record drops the cached copy
    /// ([`Kms::forget`]) once it commits. A scale-out store will need version checks here.
    pub(crate) async fn load_key(&self, key_id: &str) -> Result<Option<Arc<LoadedKey>>, AwsError> {
        if let Some(k) = self.cache.read().get(key_id) {
            return Ok(Some(k.clone()));
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let stored = self
            .store
            .get(NS_KEYS, key_id.as_bytes())
            .await
            .map_err(internal)?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let record: KeyRecord = serde_json::from_slice(&stored.value).map_err(internal)?;
        let mut materials = HashMap::new();
        for m in &record.materials {
            let sealed = base64::engine::general_purpose::STANDARD
                .decode(&m.sealed)
                .map_err(internal)?;
            let label = material_label(&record.key_id, m.id);
            let raw = self.root.open(label.as_bytes(), &sealed).map_err(|e| {
                tracing::error!(key_id = %record.key_id, error = %e, "cannot unseal key material");
                AwsError::with_status(
                    "KMSInternalException",
                    500,
                    "The key material could not be unsealed.",
                )
            })?;
            let mat = KeyMaterial::from_slice(&raw).ok_or_else(AwsError::internal)?;
            materials.insert(m.id, mat);
        }
        let loaded = Arc::new(LoadedKey {
            record,
            version: stored.version,
            materials,
        });
        let mut cache = self.cache.write();
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            cache.insert(key_id.to_string(), loaded.clone());
        }
        Ok(Some(loaded))
    }

    /// The key id an alias names, from the alias cache or the store.
    pub(crate) async fn alias_target(&self, alias: &str) -> Result<Option<String>, AwsError> {
        if let Some(id) = self.aliases.read().get(alias) {
            return Ok(Some(id.clone()));
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let Some((rec, _)) = self.read_alias(alias).await? else {
            return Ok(None);
        };
        let mut cache = self.aliases.write();
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            cache.insert(alias.to_string(), rec.target_key_id.clone());
        }
        Ok(Some(rec.target_key_id))
    }

    /// Reads an alias record and its store version (no cache).
    pub(crate) async fn read_alias(
        &self,
        alias: &str,
    ) -> Result<Option<(model::AliasRecord, u64)>, AwsError> {
        match self
            .store
            .get(model::NS_ALIASES, alias.as_bytes())
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

    /// Drops every cached alias (after any alias write).
    pub(crate) fn forget_aliases(&self) {
        let mut cache = self.aliases.write();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.clear();
    }

    pub(crate) fn forget(&self, key_id: &str) {
        let mut cache = self.cache.write();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.remove(key_id);
    }

    pub(crate) fn seal_material(&self, key_id: &str, id: u32, m: &KeyMaterial) -> String {
        let sealed = self
            .root
            .seal(material_label(key_id, id).as_bytes(), m.expose());
        base64::engine::general_purpose::STANDARD.encode(sealed)
    }

    /// The account sluice serves.
    pub fn account(&self) -> &str {
        &self.cfg.account
    }
}

fn material_label(key_id: &str, id: u32) -> String {
    format!("kms-key/{key_id}/{id}")
}

pub(crate) fn internal<E: std::fmt::Display>(e: E) -> AwsError {
    tracing::error!(error = %e, "kms internal error");
    AwsError::with_status(
        "KMSInternalException",
        500,
        "An internal error occurred in KMS.",
    )
}

#[async_trait::async_trait]
impl sluice_core::JsonService for Kms {
    fn signing_name(&self) -> &'static str {
        "kms"
    }

    async fn handle(&self, op: &str, ctx: &CallContext, input: Value) -> Result<Value, AwsError> {
        Kms::handle(self, op, ctx, input).await
    }
}
