//! KMS ciphertexts: AES-256-GCM under a key's material, bound to the encryption context.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

const FORMAT: u8 = 1;
const KEY_ID_LEN: usize = 36;
/// Length of the ciphertext header: format byte, key id, material id.
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN + 4;
const TAG_LEN: usize = 16;
/// Bytes a ciphertext adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// 256 bits of symmetric key material, wiped on drop.
pub struct KeyMaterial(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(..)")
    }
}

impl KeyMaterial {
    /// Fresh material from the CSPRNG.
    pub fn generate() -> Self {
        let mut m = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut m[..]).expect("the system CSPRNG failed");
        Self(m)
    }

    /// Material from bytes (for example just unsealed); `None` unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    /// The raw bytes, for sealing under the root key.
    pub fn expose(&self) -> &[u8] {
        &self.0[..]
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0[..]).expect("32-byte AES key"))
    }
}

/// What the header of a KMS ciphertext says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiphertextHeader {
    /// The key id (UUID text).
    pub key_id: String,
    /// The key material version that encrypted it.
    pub material_id: u32,
}

/// Reads the header of a KMS ciphertext; `None` if it is not one of ours.
pub fn parse_header(blob: &[u8]) -> Option<CiphertextHeader> {
    if blob.len() < OVERHEAD || blob[0] != FORMAT {
        return None;
    }
    let key_id = std::str::from_utf8(&blob[1..1 + KEY_ID_LEN]).ok()?;
    if !key_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    let material_id = u32::from_be_bytes(blob[1 + KEY_ID_LEN..HEADER_LEN].try_into().ok()?);
    Some(CiphertextHeader {
        key_id: key_id.to_string(),
        material_id,
    })
}

/// The canonical byte form of an encryption context (sorted by key, length-prefixed pairs).
pub fn canonical_context<'a, I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut v: Vec<(&str, &str)> = pairs.into_iter().collect();
    v.sort_unstable();
    let mut out = Vec::new();
    for (k, val) in v {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(val.len() as u32).to_be_bytes());
        out.extend_from_slice(val.as_bytes());
    }
    out
}

/// Encrypts `plaintext` under `material` (version `material_id` of key `key_id`), binding the
/// canonical encryption context `context` (see [`canonical_context`]).
pub fn encrypt_with_material(
    material: &KeyMaterial,
    key_id: &str,
    material_id: u32,
    context: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    assert_eq!(key_id.len(), KEY_ID_LEN, "key ids are UUIDs");
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(FORMAT);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&material_id.to_be_bytes());
    let nonce_bytes = crate::random_bytes(NONCE_LEN);
    out.extend_from_slice(&nonce_bytes);
    let aad = aad_for(&out[..HEADER_LEN], context);
    let mut body = Zeroizing::new(plaintext.to_vec());
    material
        .aead()
        .seal_in_place_append_tag(
            Nonce::try_assume_unique_for_key(&nonce_bytes).expect("12-byte nonce"),
            Aad::from(&aad[..]),
            &mut *body,
        )
        .expect("AES-GCM sealing of an in-memory buffer cannot fail");
    out.extend_from_slice(&body);
    out
}

/// Decrypts a ciphertext made by [`encrypt_with_material`]; `None` if authentication fails
/// (wrong material, wrong context, tampered blob).
pub fn decrypt_with_material(
    material: &KeyMaterial,
    blob: &[u8],
    context: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < OVERHEAD || blob[0] != FORMAT {
        return None;
    }
    let aad = aad_for(&blob[..HEADER_LEN], context);
    let nonce = Nonce::try_assume_unique_for_key(&blob[HEADER_LEN..HEADER_LEN + NONCE_LEN]).ok()?;
    let mut body = Zeroizing::new(blob[HEADER_LEN + NONCE_LEN..].to_vec());
    let len = material
        .aead()
        .open_in_place(nonce, Aad::from(&aad[..]), &mut body)
        .ok()?
        .len();
    body.truncate(len);
    Some(body)
}

fn aad_for(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn round_trip_and_context_binding() {
        let m = KeyMaterial::generate();
        let ctx = canonical_context([("SecretARN", "arn:x"), ("SecretVersionId", "v1")]);
        let ct = encrypt_with_material(&m, KID, 3, &ctx, b"hello");
        let h = parse_header(&ct).unwrap();
        assert_eq!(h.key_id, KID);
        assert_eq!(h.material_id, 3);
        assert_eq!(&decrypt_with_material(&m, &ct, &ctx).unwrap()[..], b"hello");
        // Order of pairs does not matter.
        let ctx2 = canonical_context([("SecretVersionId", "v1"), ("SecretARN", "arn:x")]);
        assert!(decrypt_with_material(&m, &ct, &ctx2).is_some());
        // Any other context fails, including none and a case change.
        assert!(decrypt_with_material(&m, &ct, &[]).is_none());
        let ctx3 = canonical_context([("secretarn", "arn:x"), ("SecretVersionId", "v1")]);
        assert!(decrypt_with_material(&m, &ct, &ctx3).is_none());
        // Another key's material fails.
        assert!(decrypt_with_material(&KeyMaterial::generate(), &ct, &ctx).is_none());
        // A header rewritten to claim another material id fails.
        let mut forged = ct.clone();
        forged[HEADER_LEN - 1] ^= 1;
        assert!(decrypt_with_material(&m, &forged, &ctx).is_none());
    }

    #[test]
    fn garbage_has_no_header() {
        assert!(parse_header(b"").is_none());
        assert!(parse_header(&[1u8; 100]).is_none());
        assert!(parse_header(&[0u8; 100]).is_none());
    }

    proptest! {
        #[test]
        fn any_plaintext_round_trips(pt in proptest::collection::vec(any::<u8>(), 0..512),
                                      k in "[a-z]{0,8}", v in "[ -~]{0,16}") {
            let m = KeyMaterial::generate();
            let ctx = canonical_context([(k.as_str(), v.as_str())]);
            let ct = encrypt_with_material(&m, KID, 1, &ctx, &pt);
            prop_assert_eq!(ct.len(), pt.len() + OVERHEAD);
            prop_assert_eq!(&decrypt_with_material(&m, &ct, &ctx).unwrap()[..], &pt[..]);
        }

        #[test]
        fn parse_header_never_panics(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_header(&b);
        }
    }
}
