//! The only sluice crate that touches key bytes.
//!
//! Design constraints:
//! - One provider: aws-lc-rs (AES-256-GCM, HKDF-SHA256, its CSPRNG). No `unsafe`.
//! - Key bytes live in [`zeroize::Zeroizing`] buffers and are wiped when dropped; no type here
//!   implements `Debug` or `Display` in a way that prints key bytes.
//! - Nothing here does I/O except [`RootKey::load_or_create`], which reads or creates the root key
//!   file with 0600 permissions.
//!
//! # Formats
//! **Sealed blob** (key material and other secrets at rest, sealed under the root key):
//! ```text
//! 0x53 ('S') | version 0x01 | nonce (12 bytes) | AES-256-GCM ciphertext | tag (16 bytes)
//! ```
//! The sealing key is HKDF-SHA256(root key, salt = "sluice-seal", info = "v1"). The caller's
//! `label` (for example `kms-key/<key-id>/<material-id>`) is the AAD, so a sealed blob moved to
//! another record fails to open.
//!
//! **KMS ciphertext** (what Encrypt / GenerateDataKey return, at most 6144 bytes):
//! ```text
//! 0x01 | key id (36 ASCII bytes, UUID) | material id (u32 BE) | nonce (12) | ciphertext | tag (16)
//! ```
//! The first 41 bytes (the header) identify the key and the key material version, so Decrypt
//! works without a KeyId and rotated keys still open old ciphertexts. The AAD is the header
//! followed by the canonical encryption context: the pairs sorted by key, each as
//! `u32 BE length | key bytes | u32 BE length | value bytes`. Decrypting with any other context,
//! or with an altered header, fails authentication.

pub mod envelope;
pub mod root;

pub use envelope::{
    CiphertextHeader, KeyMaterial, canonical_context, decrypt_with_material, encrypt_with_material,
    parse_header,
};
pub use root::{RootKey, SealError};

/// Fills a fresh buffer of `n` bytes from the CSPRNG.
pub fn random_bytes(n: usize) -> zeroize::Zeroizing<Vec<u8>> {
    let mut v = zeroize::Zeroizing::new(vec![0u8; n]);
    // aws-lc-rs' system random only fails if the OS RNG is broken; there is nothing sensible to
    // continue with then.
    aws_lc_rs::rand::fill(&mut v).expect("the system CSPRNG failed");
    v
}
