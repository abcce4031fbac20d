//! Stored records of the Secrets Manager service.
//!
//! # Stored format
//! - Namespace `secrets.secrets`, key = the secret name (UTF-8), value = [`SecretRecord`] as
//!   JSON with `"v": 1`: metadata, tags, resource policy, owning service, and the version list
//!   with each version's staging labels. It never holds a secret value.
//! - Namespace `secrets.values`, key = `<secret name> 0x00 <version id>`, value =
//!   [`ValueRecord`] as JSON with `"v": 1`: the KMS-encrypted data key and the value's
//!   ciphertext (both base64), never the plaintext.
//! - Value ciphertext: the `sluice_crypto` envelope (`0x01 | key id | material id | nonce |
//!   AES-256-GCM ciphertext | tag`) under the 32-byte data key, with the nil UUID as key id and
//!   material id 0 (the data key is identified by the record, not the blob), and the canonical
//!   encryption context `{SecretARN, SecretVersionId}` as AAD, the same context KMS binds to
//!   the data key. A ciphertext copied to another version or secret fails to open.

use serde::{Deserialize, Serialize};

/// Namespace of secret records.
pub const NS_SECRETS: &str = "secrets.secrets";
/// Namespace of encrypted secret values.
pub const NS_VALUES: &str = "secrets.values";

/// The store key of a version's value.
pub fn value_key(name: &str, version_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1 + version_id.len());
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(version_id.as_bytes());
    k
}

/// The store key prefix of every value of secret `name`.
pub fn value_prefix(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.push(0);
    k
}

/// One version of a secret (metadata only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// The version id (the ClientRequestToken that created it, or a UUID).
    pub id: String,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Staging labels attached to it (a label is on at most one version of a secret).
    pub stages: Vec<String>,
    /// The ARN of the KMS key that encrypted its data key.
    pub kms_key_arn: String,
}

/// A secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// Format marker.
    pub v: u8,
    /// The secret name.
    pub name: String,
    /// The secret ARN (`...:secret:<name>-<6 random characters>`).
    pub arn: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// The KMS key as the caller named it; `None` for the AWS managed key
    /// `alias/aws/secretsmanager`.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Last change of metadata or value (Unix ms).
    pub last_changed_ms: i64,
    /// When DeleteSecret was called, if the secret is scheduled for deletion (Unix ms).
    #[serde(default)]
    pub deleted_ms: Option<i64>,
    /// When a secret scheduled for deletion is purged (Unix ms).
    #[serde(default)]
    pub purge_ms: Option<i64>,
    /// Tags in insertion order.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The resource policy (JSON text).
    #[serde(default)]
    pub policy: Option<String>,
    /// The sluice service that owns the secret (`events` for connection secrets).
    #[serde(default)]
    pub owning_service: Option<String>,
    /// Versions, oldest first.
    #[serde(default)]
    pub versions: Vec<VersionMeta>,
}

impl SecretRecord {
    /// The version carrying `stage`.
    pub fn version_with_stage(&self, stage: &str) -> Option<&VersionMeta> {
        self.versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
    }

    /// The version with id `id`.
    pub fn version(&self, id: &str) -> Option<&VersionMeta> {
        self.versions.iter().find(|v| v.id == id)
    }

    /// The id of the AWSCURRENT version.
    pub fn current_id(&self) -> Option<&str> {
        self.version_with_stage(AWSCURRENT).map(|v| v.id.as_str())
    }
}

/// An encrypted secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueRecord {
    /// Format marker.
    pub v: u8,
    /// `true` for SecretBinary, `false` for SecretString.
    pub binary: bool,
    /// The ARN of the KMS key that encrypted the data key.
    pub kms_key_arn: String,
    /// The KMS ciphertext of the data key, base64.
    pub data_key: String,
    /// The value's ciphertext under the data key, base64.
    pub ciphertext: String,
}

/// The label of the current version.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The label of the version that was current before.
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
/// The label of a version being rotated in.
pub const AWSPENDING: &str = "AWSPENDING";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_keys_of_a_secret_share_its_prefix_only() {
        let k = value_key("a/b", "v1");
        assert!(k.starts_with(&value_prefix("a/b")));
        assert!(!value_key("a/bc", "v1").starts_with(&value_prefix("a/b")));
    }
}
