//! The root principal's access key pair.
//!
//! From `SLUICE_ROOT_ACCESS_KEY_ID` / `SLUICE_ROOT_SECRET_ACCESS_KEY` when both are set;
//! otherwise generated on first start and kept in `<data-dir>/credentials.sealed` (mode 0600),
//! sealed under the root key like every other secret (label `root-credentials`), so the secret
//! key is never on disk in the clear. `sluice credentials` unseals and prints it.
//!
//! File format: the sealed bytes of the JSON `{"access_key_id": "...", "secret_access_key": "..."}`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sluice_crypto::RootKey;
use zeroize::Zeroizing;

const FILE: &str = "credentials.sealed";
const LABEL: &[u8] = b"root-credentials";

/// An access key pair.
#[derive(Clone, Serialize, Deserialize)]
pub struct AccessKeyPair {
    /// The access key id (`AKIA...`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for AccessKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyPair")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .finish()
    }
}

impl Drop for AccessKeyPair {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret_access_key.zeroize();
    }
}

/// A fresh pair: `AKIA` + 16 characters, and a 40-character secret, from the CSPRNG.
pub fn generate() -> AccessKeyPair {
    const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let r = sluice_crypto::random_bytes(56);
    let id: String = "AKIA"
        .chars()
        .chain(r[..16].iter().map(|b| ID_CHARS[(*b as usize) % 32] as char))
        .collect();
    let secret: String = r[16..]
        .iter()
        .map(|b| SECRET_CHARS[(*b as usize) % 64] as char)
        .collect();
    AccessKeyPair {
        access_key_id: id,
        secret_access_key: secret,
    }
}

/// Loads the stored pair, creating and storing one if there is none.
pub fn load_or_create(data_dir: &Path, root: &RootKey) -> anyhow::Result<AccessKeyPair> {
    if let Some(p) = load(data_dir, root)? {
        return Ok(p);
    }
    let pair = generate();
    let json = Zeroizing::new(serde_json::to_vec(&pair)?);
    let sealed = root.seal(LABEL, &json);
    sluice_crypto::root::write_private(&data_dir.join(FILE), &sealed)?;
    Ok(pair)
}

/// Loads the stored pair, if any.
pub fn load(data_dir: &Path, root: &RootKey) -> anyhow::Result<Option<AccessKeyPair>> {
    let path = data_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(sealed) => {
            let json = root.open(LABEL, &sealed).map_err(|_| {
                anyhow::anyhow!(
                    "{} cannot be opened with this root key (was the root key replaced?)",
                    path.display()
                )
            })?;
            Ok(Some(serde_json::from_slice(&json)?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}
