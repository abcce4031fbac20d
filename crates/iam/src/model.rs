//! Stored records, identifiers and ARNs.
//!
//! # Stored format
//! Every value is a JSON object with a `"v": 1` marker. Names are unique case-insensitively
//! (as in AWS), so keys are the lowercased names.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `iam.users` | lowercased user name | [`UserRecord`] |
//! | `iam.roles` | lowercased role name | [`RoleRecord`] |
//! | `iam.policies` | lowercased managed policy name | [`PolicyRecord`] |
//! | `iam.access_keys` | access key id (`AKIA...`) | [`AccessKeyRecord`]: the secret sealed under the root key with label `iam/access-key/<id>` |
//! | `iam.sessions` | access key id (`ASIA...`) | [`SessionRecord`]: secret and session token sealed (labels `iam/session-secret/<id>`, `iam/session-token/<id>`) |
//!
//! Sealed values are base64 (standard alphabet) of `sluice_crypto` sealed blobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Namespace of users.
pub const NS_USERS: &str = "iam.users";
/// Namespace of roles.
pub const NS_ROLES: &str = "iam.roles";
/// Namespace of managed policies.
pub const NS_POLICIES: &str = "iam.policies";
/// Namespace of long-term access keys.
pub const NS_ACCESS_KEYS: &str = "iam.access_keys";
/// Namespace of STS sessions.
pub const NS_SESSIONS: &str = "iam.sessions";

fn one() -> u8 {
    1
}

/// A tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// An IAM user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Format marker.
    #[serde(default = "one")]
    pub v: u8,
    /// Name as created.
    pub name: String,
    /// Path (`/` by default).
    pub path: String,
    /// `AIDA...`.
    pub id: String,
    /// ARN.
    pub arn: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Inline policies: name -> document (as given, decoded from the form).
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    /// Attached managed policy ARNs.
    #[serde(default)]
    pub attached: Vec<String>,
}

/// An IAM role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    /// Format marker.
    #[serde(default = "one")]
    pub v: u8,
    /// Name as created.
    pub name: String,
    /// Path.
    pub path: String,
    /// `AROA...`.
    pub id: String,
    /// ARN.
    pub arn: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The trust policy document.
    pub trust: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Maximum session duration in seconds (3600..43200).
    pub max_session: u32,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Inline policies: name -> document.
    #[serde(default)]
    pub inline: BTreeMap<String, String>,
    /// Attached managed policy ARNs.
    #[serde(default)]
    pub attached: Vec<String>,
}

/// A customer managed policy (one version, `v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Format marker.
    #[serde(default = "one")]
    pub v: u8,
    /// Name.
    pub name: String,
    /// Path.
    pub path: String,
    /// `ANPA...`.
    pub id: String,
    /// ARN.
    pub arn: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// The document of version `v1`.
    pub document: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// A long-term access key of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    /// Format marker.
    #[serde(default = "one")]
    pub v: u8,
    /// `AKIA...`.
    pub id: String,
    /// The owning user's name.
    pub user: String,
    /// `Active` or `Inactive`.
    pub status: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// base64 of the sealed secret access key.
    pub secret_sealed: String,
}

/// Temporary credentials of a role session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Format marker.
    #[serde(default = "one")]
    pub v: u8,
    /// `ASIA...`.
    pub id: String,
    /// The role's ARN.
    pub role_arn: String,
    /// The role's id (`AROA...`).
    pub role_id: String,
    /// The session name.
    pub session_name: String,
    /// The account.
    pub account: String,
    /// Expiry, Unix milliseconds.
    pub expires_ms: i64,
    /// base64 of the sealed secret access key.
    pub secret_sealed: String,
    /// base64 of the sealed session token.
    pub token_sealed: String,
}

impl SessionRecord {
    /// The assumed-role session ARN.
    pub fn session_arn(&self) -> String {
        session_arn(
            &self.account,
            role_name_of(&self.role_arn),
            &self.session_name,
        )
    }
}

/// `arn:aws:sts::<acct>:assumed-role/<role>/<session>`.
pub fn session_arn(account: &str, role: &str, session: &str) -> String {
    format!("arn:aws:sts::{account}:assumed-role/{role}/{session}")
}

/// The last path segment of an IAM ARN (the name of the user, role or policy).
pub fn role_name_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Alphabet for ids: base32 (unbiased: 256 is a multiple of 32).
const ID_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// `prefix` followed by random base32 characters up to `len` characters in all.
pub fn new_id(prefix: &str, len: usize) -> String {
    let n = len.saturating_sub(prefix.len());
    let bytes = sluice_crypto::random_bytes(n);
    let mut s = String::with_capacity(len);
    s.push_str(prefix);
    s.extend(
        bytes
            .iter()
            .map(|b| ID_ALPHABET[(*b % 32) as usize] as char),
    );
    s
}

/// A 40-character secret access key (base64 alphabet, unbiased: 256 is a multiple of 64).
pub fn new_secret() -> zeroize::Zeroizing<String> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = sluice_crypto::random_bytes(40);
    zeroize::Zeroizing::new(
        bytes
            .iter()
            .map(|b| A[(*b % 64) as usize] as char)
            .collect(),
    )
}

/// An opaque session token: 96 random bytes, base64.
pub fn new_session_token() -> zeroize::Zeroizing<String> {
    use base64::Engine;
    let bytes = sluice_crypto::random_bytes(96);
    zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_aws_shapes() {
        let id = new_id("AIDA", 21);
        assert_eq!(id.len(), 21);
        assert!(id.starts_with("AIDA"));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert_ne!(new_id("AKIA", 20), new_id("AKIA", 20));
        let s = new_secret();
        assert_eq!(s.len(), 40);
        assert!(new_session_token().len() >= 128);
        assert_eq!(
            session_arn("1", "r", "s"),
            "arn:aws:sts::1:assumed-role/r/s"
        );
        assert_eq!(role_name_of("arn:aws:iam::1:role/a/b/name"), "name");
    }
}
