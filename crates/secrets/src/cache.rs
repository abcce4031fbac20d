//! A cache of secret values for sluice's own services (Firehose endpoint keys, EventBridge
//! connection credentials).
//!
//! Design constraints:
//! - A hit costs no KMS call and no store read; a miss costs one GetSecretValue (one KMS
//!   Decrypt), authorized and audited like any other.
//! - Entries are per (principal, SecretId): a hit never lets a principal read a value it was
//!   not authorized to read once.
//! - Entries live at most `ttl` (default 10 minutes, as Firehose caches secrets), measured with
//!   the service's injected clock, and die at once when the secret's AWSCURRENT version changes
//!   inside sluice (the service bumps a per-secret generation; an entry fetched before the bump
//!   is stale) or when [`SecretCache::invalidate`] is called (a service that sees its endpoint
//!   reject the credentials invalidates and re-reads).
//! - Values stay in zeroizing buffers; nothing here logs them.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use sluice_core::{AwsError, CallContext};

use crate::{SecretValue, Secrets};

/// The default time to live of an entry.
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(600);

struct Entry {
    value: Arc<SecretValue>,
    fetched_ms: i64,
    /// The service's change counter when the fetch started.
    counter: u64,
}

/// A read-through cache of AWSCURRENT secret values.
pub struct SecretCache {
    secrets: Arc<Secrets>,
    ttl_ms: i64,
    entries: RwLock<HashMap<(String, String), Entry>>,
}

impl std::fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCache")
            .field("ttl_ms", &self.ttl_ms)
            .field("entries", &self.entries.read().len())
            .finish()
    }
}

impl SecretCache {
    /// A cache over `secrets` with the default TTL.
    pub fn new(secrets: Arc<Secrets>) -> Self {
        Self::with_ttl(secrets, DEFAULT_TTL)
    }

    /// A cache over `secrets` whose entries live at most `ttl`.
    pub fn with_ttl(secrets: Arc<Secrets>, ttl: std::time::Duration) -> Self {
        Self {
            secrets,
            ttl_ms: ttl.as_millis().min(i64::MAX as u128) as i64,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The AWSCURRENT value of `secret_id` (name or ARN) as `ctx` may read it.
    pub async fn get(
        &self,
        ctx: &CallContext,
        secret_id: &str,
    ) -> Result<Arc<SecretValue>, AwsError> {
        let key = (ctx.principal.arn.clone(), secret_id.to_string());
        let now = self.secrets.clock.now_millis();
        if let Some(e) = self.entries.read().get(&key)
            && now.saturating_sub(e.fetched_ms) < self.ttl_ms
            && self.secrets.generation(&e.value.arn) <= e.counter
        {
            return Ok(e.value.clone());
        }
        let counter = self.secrets.change_counter();
        let value = Arc::new(
            self.secrets
                .get_secret_value(ctx, secret_id, None, None)
                .await?,
        );
        let mut entries = self.entries.write();
        if entries.len() >= 10_000 {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                value: value.clone(),
                fetched_ms: now,
                counter,
            },
        );
        Ok(value)
    }

    /// Drops every entry of `secret` (a name, ARN or the SecretId a caller used).
    pub fn invalidate(&self, secret: &str) {
        self.entries
            .write()
            .retain(|(_, id), e| id != secret && e.value.arn != secret && e.value.name != secret);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.write().clear();
    }
}
