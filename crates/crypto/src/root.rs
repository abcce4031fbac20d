//! The root key: seals every other key at rest.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine;
use zeroize::Zeroizing;

const SEAL_MAGIC: u8 = b'S';
const SEAL_VERSION: u8 = 1;
const TAG_LEN: usize = 16;

/// An error sealing or opening a blob. Carries no detail on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The blob is not a sealed blob of a known version.
    #[error("the sealed blob is malformed")]
    Malformed,
    /// Authentication failed: wrong root key, wrong label, or tampered blob.
    #[error("the sealed blob could not be opened")]
    Open,
    /// The root key file could not be read or written.
    #[error("root key file error: {0}")]
    File(&'static str),
}

/// The root key of a sluice installation (32 bytes).
pub struct RootKey {
    sealing: LessSafeKey,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey(..)")
    }
}

impl RootKey {
    /// A root key from 32 bytes of key material.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut derived = Zeroizing::new([0u8; 32]);
        let prk = Salt::new(HKDF_SHA256, b"sluice-seal").extract(bytes);
        prk.expand(&[b"v1"], &AES_256_GCM)
            .and_then(|okm| okm.fill(&mut derived[..]))
            .expect("HKDF output of 32 bytes is always valid");
        let unbound = UnboundKey::new(&AES_256_GCM, &derived[..]).expect("32-byte AES key");
        Self {
            sealing: LessSafeKey::new(unbound),
        }
    }

    /// A root key from its base64 text form (as an operator supplies it).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| SealError::File("the root key is not valid base64"))?,
        );
        let arr: Zeroizing<[u8; 32]> = Zeroizing::new(
            raw.as_slice()
                .try_into()
                .map_err(|_| SealError::File("the root key must be 32 bytes"))?,
        );
        Ok(Self::from_bytes(&arr))
    }

    /// Loads the root key from `path`, creating it (32 random bytes, base64, mode 0600) if the
    /// file does not exist. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), SealError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                Ok((Self::from_base64(&text)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = crate::random_bytes(32);
                let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&bytes));
                write_private(path, text.as_bytes())
                    .map_err(|_| SealError::File("cannot write the root key file"))?;
                Ok((Self::from_base64(&text)?, true))
            }
            Err(_) => Err(SealError::File("cannot read the root key file")),
        }
    }

    /// Seals `plaintext` under this root key, bound to `label`.
    pub fn seal(&self, label: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = crate::random_bytes(NONCE_LEN);
        let mut out = Vec::with_capacity(2 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(SEAL_MAGIC);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce_bytes);
        let mut body = Zeroizing::new(plaintext.to_vec());
        let nonce = Nonce::try_assume_unique_for_key(&nonce_bytes).expect("12-byte nonce");
        self.sealing
            .seal_in_place_append_tag(nonce, Aad::from(label), &mut *body)
            .expect("AES-GCM sealing of an in-memory buffer cannot fail");
        out.extend_from_slice(&body);
        out
    }

    /// Opens a blob made by [`RootKey::seal`] with the same `label`.
    pub fn open(&self, label: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 2 + NONCE_LEN + TAG_LEN
            || sealed[0] != SEAL_MAGIC
            || sealed[1] != SEAL_VERSION
        {
            return Err(SealError::Malformed);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[2..2 + NONCE_LEN])
            .map_err(|_| SealError::Malformed)?;
        let mut body = Zeroizing::new(sealed[2 + NONCE_LEN..].to_vec());
        let len = self
            .sealing
            .open_in_place(nonce, Aad::from(label), &mut body)
            .map_err(|_| SealError::Open)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

/// Writes `data` to `path` with permissions 0600, atomically (temp file + rename), creating
/// the file with restrictive permissions from the start.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_label_binding() {
        let root = RootKey::from_bytes(&[7u8; 32]);
        let blob = root.seal(b"label-a", b"secret bytes");
        assert_eq!(&root.open(b"label-a", &blob).unwrap()[..], b"secret bytes");
        assert_eq!(root.open(b"label-b", &blob), Err(SealError::Open));
        let other = RootKey::from_bytes(&[8u8; 32]);
        assert_eq!(other.open(b"label-a", &blob), Err(SealError::Open));
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(root.open(b"label-a", &tampered), Err(SealError::Open));
        assert_eq!(root.open(b"label-a", &blob[..5]), Err(SealError::Malformed));
    }

    #[test]
    fn root_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let (k1, created) = RootKey::load_or_create(&path).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let blob = k1.seal(b"x", b"y");
        let (k2, created) = RootKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(&k2.open(b"x", &blob).unwrap()[..], b"y");
    }

    #[test]
    fn bad_root_key_text_is_rejected() {
        assert!(RootKey::from_base64("not base64!").is_err());
        assert!(RootKey::from_base64("AAAA").is_err());
    }
}
