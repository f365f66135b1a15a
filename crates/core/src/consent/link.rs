//! Signed preference-centre links: one subject, an expiry, an HMAC.
//!
//! # Design
//!
//! Every message Confiance sends carries a link to the preference centre where the person can
//! change or withdraw consent in one click, without an account. The link is a token:
//! `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`, the payload holding the
//! expiry and the subject. It is stateless, so any node of a cluster can check it, and it can
//! only be forged with the instance's secret. The payload is not encrypted: a link is only ever
//! sent to the subject it names, over a channel of theirs. A bad token is refused without saying
//! why beyond "invalid or expired", so probing reveals nothing.

use super::{IdKind, Subject};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;

/// Why a token was refused (kept internal to logs and tests; clients see one answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a token at all.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match: forged or altered.
    #[error("bad signature")]
    BadSignature,
    /// Past its expiry.
    #[error("expired")]
    Expired,
}

/// The key that signs links, derived from the instance secret.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl LinkKey {
    /// Derives the link key from the instance secret.
    pub fn derive(instance_secret: &[u8]) -> Self {
        Self(derive_key(instance_secret, b"confiance preference links v1"))
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// A token for `subject`, valid until `expires`.
    pub fn sign(&self, subject: &Subject, expires: Timestamp) -> String {
        let payload = format!(
            "1|{}|{}|{}",
            expires.as_second(),
            subject.kind().as_str(),
            subject.value()
        );
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(tag))
    }

    /// The subject of a valid token at `now`.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Subject, LinkError> {
        let (payload, tag) = token.split_once('.').ok_or(LinkError::Malformed)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| LinkError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| LinkError::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag).map_err(|_| LinkError::BadSignature)?;
        let payload = String::from_utf8(payload).map_err(|_| LinkError::Malformed)?;
        let mut parts = payload.splitn(4, '|');
        let (Some("1"), Some(exp), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Malformed);
        };
        let exp: i64 = exp.parse().map_err(|_| LinkError::Malformed)?;
        if now.as_second() >= exp {
            return Err(LinkError::Expired);
        }
        let kind = IdKind::parse(kind).ok_or(LinkError::Malformed)?;
        Subject::parse(kind, value).map_err(|_| LinkError::Malformed)
    }
}

/// A 32-byte key for one use, derived from the instance secret (HMAC-SHA256 as a PRF).
pub fn derive_key(instance_secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(instance_secret).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// A keyed hash of an IP address or user agent, for consent proofs: comparable, not
/// reversible without the instance secret (a plain hash of an IPv4 address is).
pub fn keyed_hash(instance_secret: &[u8], label: &str, value: &str) -> String {
    let key = derive_key(instance_secret, label.as_bytes());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn tokens_bind_one_subject_until_expiry() {
        let key = LinkKey::derive(b"instance secret");
        let ana = Subject::parse(IdKind::Email, "ana@example.org").unwrap();
        let token = key.sign(&ana, at("2026-12-31T00:00:00Z"));
        assert_eq!(key.verify(&token, at("2026-12-01T00:00:00Z")), Ok(ana.clone()));
        assert_eq!(key.verify(&token, at("2026-12-31T00:00:00Z")), Err(LinkError::Expired));
        assert_eq!(
            LinkKey::derive(b"another instance").verify(&token, at("2026-12-01T00:00:00Z")),
            Err(LinkError::BadSignature)
        );
        // Swapping in another subject's payload breaks the signature.
        let bob = key.sign(
            &Subject::parse(IdKind::Email, "bob@example.org").unwrap(),
            at("2026-12-31T00:00:00Z"),
        );
        let forged = format!(
            "{}.{}",
            bob.split('.').next().unwrap(),
            token.split('.').nth(1).unwrap()
        );
        assert_eq!(
            key.verify(&forged, at("2026-12-01T00:00:00Z")),
            Err(LinkError::BadSignature)
        );
        for bad in ["", "abc", "a.b", "%%.%%"] {
            assert!(key.verify(bad, at("2026-12-01T00:00:00Z")).is_err());
        }
    }

    #[test]
    fn keyed_hashes_are_stable_and_secret_dependent() {
        assert_eq!(
            keyed_hash(b"s", "ip", "203.0.113.7"),
            keyed_hash(b"s", "ip", "203.0.113.7")
        );
        assert_ne!(
            keyed_hash(b"s", "ip", "203.0.113.7"),
            keyed_hash(b"t", "ip", "203.0.113.7")
        );
        assert_ne!(
            keyed_hash(b"s", "ip", "203.0.113.7"),
            keyed_hash(b"s", "ua", "203.0.113.7")
        );
    }
}
