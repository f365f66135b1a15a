//! Sources: the touchpoints that send data in, and the write keys they authenticate with.
//!
//! # Design
//!
//! A write key only lets its source write. It is shown once when the source is created and
//! only its SHA-256 digest is stored, so a copy of the database does not hand out the right to
//! write into it. Write keys are long random strings (192 bits), so an unsalted digest is
//! enough: there is nothing to brute-force.

use crate::error::{Error, ErrorCode};
use crate::secret::Secret;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// What kind of touchpoint a source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A website or web app (analytics.js, the cookie banner).
    Web,
    /// A back-end server (analytics-node, analytics-python).
    Server,
    /// Questionnaires, contest entries, newsletter forms.
    Form,
    /// The customer-account system.
    Account,
    /// In-store tills (point of sale).
    Store,
    /// Customer-service tools and exports.
    Support,
}

impl SourceKind {
    /// Every kind, in display order.
    pub const ALL: [SourceKind; 6] = [
        Self::Web,
        Self::Server,
        Self::Form,
        Self::Account,
        Self::Store,
        Self::Support,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Server => "server",
            Self::Form => "form",
            Self::Account => "account",
            Self::Store => "store",
            Self::Support => "support",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidField,
                format!("unknown source kind `{s}`: expected web, server, form, account, store or support"),
            )
        })
    }
}

/// A source's name: 1 to 64 characters among lowercase ASCII letters, digits, `-` and `_`,
/// starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SourceName(String);

impl SourceName {
    /// Parses a source name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(valid_char)
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::new(
                ErrorCode::InvalidField,
                "a source name has 1 to 64 characters among a-z, 0-9, `-` and `_`, and starts with a letter or digit",
            ))
        }
    }
}

impl AsRef<str> for SourceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registered source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Store-assigned id.
    pub id: i64,
    /// Unique name.
    pub name: SourceName,
    /// Kind of touchpoint.
    pub kind: SourceKind,
    /// The first characters of the write key, to recognise it without revealing it.
    pub key_prefix: String,
    /// When the source was created.
    pub created_at: jiff::Timestamp,
}

/// A write key in clear, as a client presents it. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct WriteKey(Secret<String>);

/// How many characters of a write key are kept in clear to recognise it.
const PREFIX_LEN: usize = 8;

impl WriteKey {
    /// A new random write key: `wk_` and 32 base64url characters (192 bits).
    pub fn generate() -> Self {
        use base64::Engine;
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Self(Secret::new(format!("wk_{body}")))
    }

    /// Takes a key as presented by a client. Any non-empty string is accepted here; whether it
    /// belongs to a source is the store's question.
    pub fn from_presented(s: &str) -> Option<Self> {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 256).then(|| Self(Secret::new(s.to_owned())))
    }

    /// The key in clear, to show the operator once.
    pub fn reveal(&self) -> &str {
        self.0.expose()
    }

    /// The digest stored in place of the key.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest(Sha256::digest(self.0.expose().as_bytes()).into())
    }

    /// The recognisable prefix kept in clear.
    pub fn prefix(&self) -> String {
        self.0.expose().chars().take(PREFIX_LEN).collect()
    }
}

impl fmt::Debug for WriteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteKey([redacted])")
    }
}

/// The SHA-256 digest of a write key or an API token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// Lowercase hex, as stored.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parses the stored hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// The digest of an arbitrary token.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Compares in constant time.
    pub fn ct_eq(&self, other: &KeyDigest) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_digest_stably() {
        let a = WriteKey::generate();
        let b = WriteKey::generate();
        assert_ne!(a.reveal(), b.reveal());
        assert_eq!(a.reveal().len(), 35);
        assert_eq!(a.digest(), WriteKey::from_presented(a.reveal()).unwrap().digest());
        assert!(!format!("{a:?}").contains(a.reveal()));
    }

    #[test]
    fn source_names() {
        assert!(SourceName::parse("web-shop_2").is_ok());
        for bad in ["", "Web", "-x", "a b", &"x".repeat(65)] {
            assert!(SourceName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
