//! Per-subject encryption at rest, so that erasure can destroy every copy (crypto-shredding).
//!
//! # Design
//!
//! Each subject — the primary identifier of a message: its `user_id`, or else its
//! `anonymous_id` — has a data key of its own, 256 random bits. What a message says about the
//! person (its body: traits, properties, context) is sealed with that key (AES-256-GCM, a random
//! 96-bit nonce per message, the subject's tag as associated data, so a body cannot be moved to
//! another subject unnoticed). Data keys are kept wrapped by the master key, in a key vault that
//! lives apart from the database the bodies are in: a backup of the database holds sealed bodies
//! and no keys. Erasing a subject deletes their wrapped key from the vault; from then on every
//! older copy of their bodies — a backup, a page left in a write-ahead log, a dead PostgreSQL
//! tuple — is ciphertext that nothing can open.
//!
//! The vault knows subjects by a tag, an HMAC-SHA256 of the identifier under a key derived from
//! the master key: the vault alone does not say whose keys it holds.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;

/// The first byte of a sealed value: the format's version.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const CHECK_AAD: &[u8] = b"confiance vault check";
const CHECK_TEXT: &[u8] = b"this vault's master key";

/// A subject's tag: how the vault names the subject without naming the person.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub [u8; 32]);

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", hex::encode(&self.0[..6]))
    }
}

/// Why a sealed value or a wrapped key could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The master key is not 32 bytes of hex or base64.
    #[error("the master key must be 32 bytes, written as 64 hexadecimal digits or in base64")]
    BadMasterKey,
    /// The value is not in a known sealed format.
    #[error("not a sealed value")]
    NotSealed,
    /// Authentication failed: another key, another subject, or altered bytes.
    #[error("the value could not be authenticated")]
    Forged,
}

/// The master key: it wraps the data keys and derives the subjects' tags.
#[derive(Clone)]
pub struct MasterKey {
    wrap: Aes256Gcm,
    tags: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

fn derive(secret: &[u8], purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"confiance vault\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(secret);
    h.finalize().into()
}

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            wrap: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&derive(bytes, "wrap"))),
            tags: derive(bytes, "tags"),
        }
    }

    /// A master key written as 64 hexadecimal digits or as base64 (surrounding blanks ignored).
    pub fn parse(text: &str) -> Result<Self, VaultError> {
        use base64::Engine;
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or(VaultError::BadMasterKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| VaultError::BadMasterKey)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A master key derived from another secret of the instance, for installations that set
    /// none: the vault still lives apart from the data, which is what shredding needs.
    pub fn derived_from(secret: &[u8]) -> Self {
        Self::from_bytes(&derive(secret, "master"))
    }

    /// A new random master key, as 64 hexadecimal digits.
    pub fn generate_hex() -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// A value only this master key opens, kept in the vault so that a store is never run
    /// under another key (every body would then seem erased).
    pub fn check_value(&self) -> Vec<u8> {
        seal_with(&self.wrap, CHECK_AAD, CHECK_TEXT)
    }

    /// Whether `value` is a [`MasterKey::check_value`] of this key.
    pub fn checks(&self, value: &[u8]) -> bool {
        open_with(&self.wrap, CHECK_AAD, value).is_ok_and(|plain| plain == CHECK_TEXT)
    }

    /// The tag of a subject, named by its identifier (`user_id:…` or `anonymous_id:…`).
    pub fn tag(&self, identifier: &str) -> Tag {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.tags).expect("HMAC takes any key length");
        mac.update(identifier.as_bytes());
        Tag(mac.finalize().into_bytes().into())
    }

    /// A new data key for `tag`, and its wrapped form for the vault.
    pub fn new_data_key(&self, tag: &Tag) -> (DataKey, Vec<u8>) {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let wrapped = seal_with(&self.wrap, &tag.0, &bytes);
        (DataKey::from_bytes(&bytes), wrapped)
    }

    /// Opens a wrapped data key of `tag`.
    pub fn unwrap_key(&self, tag: &Tag, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        let bytes = open_with(&self.wrap, &tag.0, wrapped)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| VaultError::Forged)?;
        Ok(DataKey::from_bytes(&bytes))
    }
}

/// A subject's data key.
#[derive(Clone)]
pub struct DataKey(Aes256Gcm);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

impl DataKey {
    fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)))
    }

    /// Seals `plain`, bound to the subject `tag`.
    pub fn seal(&self, tag: &Tag, plain: &[u8]) -> Vec<u8> {
        seal_with(&self.0, &tag.0, plain)
    }

    /// Opens what [`DataKey::seal`] sealed for `tag`.
    pub fn open(&self, tag: &Tag, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        open_with(&self.0, &tag.0, sealed)
    }
}

fn seal_with(cipher: &Aes256Gcm, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let body = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .expect("AES-GCM seals any message shorter than 64 GiB");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
    out.push(SEALED_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    out
}

fn open_with(cipher: &Aes256Gcm, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    match sealed.split_first() {
        Some((&SEALED_V1, rest)) if rest.len() >= NONCE_LEN + 16 => {
            let (nonce, body) = rest.split_at(NONCE_LEN);
            cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
                .map_err(|_| VaultError::Forged)
        }
        _ => Err(VaultError::NotSealed),
    }
}

/// The identifier whose key seals a message: its `user_id`, or else its `anonymous_id`.
pub fn subject_of(user_id: Option<&str>, anonymous_id: Option<&str>) -> Option<String> {
    match (user_id, anonymous_id) {
        (Some(u), _) => Some(format!("user_id:{u}")),
        (None, Some(a)) => Some(format!("anonymous_id:{a}")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::parse(&"ab".repeat(32)).unwrap()
    }

    #[test]
    fn a_sealed_body_opens_with_its_key_and_subject_only() {
        let m = master();
        let alice = m.tag("user_id:alice");
        let bob = m.tag("user_id:bob");
        let (key, wrapped) = m.new_data_key(&alice);
        let sealed = key.seal(&alice, br#"{"email":"alice@example.org"}"#);
        assert!(!sealed.windows(5).any(|w| w == b"alice"), "the plaintext shows through");
        assert_eq!(key.open(&alice, &sealed).unwrap(), br#"{"email":"alice@example.org"}"#);
        // Moved to another subject, or altered, it does not open.
        assert_eq!(key.open(&bob, &sealed), Err(VaultError::Forged));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&alice, &altered), Err(VaultError::Forged));
        // The wrapped key opens under the master key, for its subject only.
        let again = m.unwrap_key(&alice, &wrapped).unwrap();
        assert_eq!(
            again.open(&alice, &sealed).unwrap(),
            br#"{"email":"alice@example.org"}"#
        );
        assert!(m.unwrap_key(&bob, &wrapped).is_err());
        let other = MasterKey::parse(&"cd".repeat(32)).unwrap();
        assert!(other.unwrap_key(&alice, &wrapped).is_err());
    }

    #[test]
    fn another_subjects_key_cannot_open_a_body() {
        let m = master();
        let alice = m.tag("user_id:alice");
        let (alice_key, _) = m.new_data_key(&alice);
        let (bob_key, _) = m.new_data_key(&alice);
        let sealed = alice_key.seal(&alice, b"x");
        assert_eq!(bob_key.open(&alice, &sealed), Err(VaultError::Forged));
        assert_eq!(bob_key.open(&alice, b"{}"), Err(VaultError::NotSealed));
    }

    #[test]
    fn tags_are_stable_per_master_key_and_name_no_one() {
        let m = master();
        assert_eq!(m.tag("user_id:alice"), m.tag("user_id:alice"));
        assert_ne!(m.tag("user_id:alice"), m.tag("anonymous_id:alice"));
        assert_ne!(
            m.tag("user_id:alice"),
            MasterKey::derived_from(b"s").tag("user_id:alice")
        );
        assert_eq!(format!("{:?}", m), "MasterKey([redacted])");
    }

    #[test]
    fn a_check_value_tells_the_master_key_it_was_made_with() {
        let m = master();
        let other = MasterKey::parse(&"cd".repeat(32)).unwrap();
        assert!(m.checks(&m.check_value()));
        assert!(!other.checks(&m.check_value()));
        assert!(!m.checks(b"garbage"));
    }

    #[test]
    fn master_keys_are_read_as_hex_or_base64() {
        assert!(MasterKey::parse(&MasterKey::generate_hex()).is_ok());
        assert!(MasterKey::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").is_ok());
        assert_eq!(MasterKey::parse("short").unwrap_err(), VaultError::BadMasterKey);
        assert_eq!(
            MasterKey::parse(&"ab".repeat(31)).unwrap_err(),
            VaultError::BadMasterKey
        );
    }

    #[test]
    fn the_subject_is_the_user_id_before_the_anonymous_id() {
        assert_eq!(subject_of(Some("u1"), Some("a1")).as_deref(), Some("user_id:u1"));
        assert_eq!(subject_of(None, Some("a1")).as_deref(), Some("anonymous_id:a1"));
        assert_eq!(subject_of(None, None), None);
    }
}
