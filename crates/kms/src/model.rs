//! Stored records of the KMS service and their JSON views.
//!
//! # Stored format
//! - Namespace `kms.keys`, key = the key id (UUID text), value = [`KeyRecord`] as JSON with
//!   `"v": 1`. Key material is stored only sealed under the root key (see
//!   [`sluice_crypto::RootKey::seal`]) with the label `kms-key/<key-id>/<material-id>`.
//! - Namespace `kms.aliases`, key = the alias name (`alias/...`), value = [`AliasRecord`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Namespace of key records.
pub const NS_KEYS: &str = "kms.keys";
/// Namespace of alias records.
pub const NS_ALIASES: &str = "kms.aliases";

/// One version of a key's material, sealed under the root key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaterialRecord {
    /// Material version (1, 2, ...); it is written into every ciphertext.
    pub id: u32,
    /// When it was created (Unix ms).
    pub created_ms: i64,
    /// The sealed material, base64.
    pub sealed: String,
}

/// Rotation settings of a key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RotationRecord {
    /// Automatic rotation on?
    pub enabled: bool,
    /// Rotation period in days (90..=2560).
    pub period_days: u32,
    /// When the next automatic rotation is due (Unix ms).
    pub next_ms: Option<i64>,
    /// When the last on-demand rotation started (Unix ms).
    pub on_demand_ms: Option<i64>,
}

/// A KMS key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Format marker.
    pub v: u8,
    /// UUID.
    pub key_id: String,
    /// Key ARN.
    pub arn: String,
    /// Owning account.
    pub account: String,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Description.
    pub description: String,
    /// `Enabled`, `Disabled` or `PendingDeletion`.
    pub state: String,
    /// When a key pending deletion is deleted (Unix ms).
    pub deletion_ms: Option<i64>,
    /// The window it was scheduled with.
    pub pending_window_days: Option<u32>,
    /// `ENCRYPT_DECRYPT`.
    pub key_usage: String,
    /// `SYMMETRIC_DEFAULT`.
    pub key_spec: String,
    /// `AWS_KMS`.
    pub origin: String,
    /// `CUSTOMER` or `AWS` (AWS managed keys such as `aws/secretsmanager`).
    pub key_manager: String,
    /// The key policy (JSON text) named `default`.
    pub policy: String,
    /// Tags, in insertion order.
    pub tags: Vec<(String, String)>,
    /// Rotation settings.
    pub rotation: RotationRecord,
    /// Every material version, oldest first.
    pub materials: Vec<MaterialRecord>,
    /// The material version new ciphertexts use.
    pub current_material: u32,
}

/// An alias.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    /// `alias/...`.
    pub name: String,
    /// The key id it points to.
    pub target_key_id: String,
    /// Creation time (Unix ms).
    pub created_ms: i64,
    /// Last update (Unix ms).
    pub updated_ms: i64,
}

/// Epoch seconds as AWS JSON 1.1 sends timestamps.
pub fn secs(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

impl KeyRecord {
    /// The `KeyMetadata` structure of DescribeKey / CreateKey.
    pub fn metadata(&self) -> Value {
        let mut m = json!({
            "AWSAccountId": self.account,
            "KeyId": self.key_id,
            "Arn": self.arn,
            "CreationDate": secs(self.created_ms),
            "Enabled": self.state == "Enabled",
            "Description": self.description,
            "KeyUsage": self.key_usage,
            "KeyState": self.state,
            "Origin": self.origin,
            "KeyManager": self.key_manager,
            "CustomerMasterKeySpec": self.key_spec,
            "KeySpec": self.key_spec,
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "MultiRegion": false,
            "CurrentKeyMaterialId": material_id_text(self.current_material),
        });
        if let Some(d) = self.deletion_ms {
            m["DeletionDate"] = secs(d);
        }
        if let Some(w) = self.pending_window_days {
            m["PendingDeletionWindowInDays"] = json!(w);
        }
        m
    }
}

/// The public form of a material version id (`KeyMaterialId`): 64 hex characters.
pub fn material_id_text(id: u32) -> String {
    format!("{:064x}", id)
}
