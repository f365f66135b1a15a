//! Identifiers: the nodes of the identity graph.
//!
//! # Design
//!
//! An identifier is a kind and a normalised value: `user_id`, `anonymous_id`, `email`
//! (lowercased), `phone` (E.164, read as French when it has no country code), and any trait the
//! catalog flags as an identifier (a loyalty card). Its key, `kind:value`, is the same as a
//! consent subject's, so that the consent ledger and the identity graph speak of the same
//! things.

use crate::consent::{IdKind, Subject};
use std::fmt;

/// One identifier, normalised. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier {
    kind: String,
    value: String,
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identifier({}, [redacted])", self.kind)
    }
}

impl Identifier {
    /// Parses and normalises a value of `kind`; `None` when it is not a usable identifier.
    pub fn parse(kind: &str, value: &str) -> Option<Self> {
        match IdKind::parse(kind) {
            Some(k) => Subject::parse(k, value).ok().map(|s| Self::from(&s)),
            None => {
                let v = value.trim();
                (!v.is_empty() && v.len() <= 256 && is_kind(kind)).then(|| Self {
                    kind: kind.to_owned(),
                    value: v.to_owned(),
                })
            }
        }
    }

    /// Parses a stored `kind:value` key.
    pub fn from_key(key: &str) -> Option<Self> {
        let (kind, value) = key.split_once(':')?;
        Some(Self {
            kind: kind.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The normalised value (personal data: do not log).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The stored key, `kind:value`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.value)
    }

    /// The consent subject this identifier is, when it is one of the four consent kinds.
    pub fn subject(&self) -> Option<Subject> {
        IdKind::parse(&self.kind).and_then(|k| Subject::parse(k, &self.value).ok())
    }
}

impl From<&Subject> for Identifier {
    fn from(s: &Subject) -> Self {
        Self {
            kind: s.kind().as_str().to_owned(),
            value: s.value().to_owned(),
        }
    }
}

fn is_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The identifiers a normalised message carries: its user and anonymous ids, the previous id of
/// an alias, and the emails, phones and identifier traits of its traits and context traits.
pub fn message_identifiers(body: &serde_json::Value, catalog: &crate::catalog::Catalog) -> Vec<Identifier> {
    let mut out: Vec<Identifier> = Vec::new();
    let mut push = |id: Option<Identifier>| {
        if let Some(id) = id
            && !out.contains(&id)
        {
            out.push(id);
        }
    };
    let text = |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_str).map(str::to_owned);
    if let Some(u) = text(body.get("userId")) {
        push(Identifier::parse("user_id", &u));
    }
    if let Some(a) = text(body.get("anonymousId")) {
        push(Identifier::parse("anonymous_id", &a));
    }
    // Segment's alias says a previous id (usually the anonymous one) is this user.
    if body.get("type").and_then(serde_json::Value::as_str) == Some("alias")
        && let Some(prev) = text(body.get("previousId"))
    {
        push(Identifier::parse("anonymous_id", &prev));
    }
    for traits in [
        body.get("traits"),
        crate::collect::at_path(body, &["context", "traits"]),
    ]
    .into_iter()
    .flatten()
    {
        let Some(map) = traits.as_object() else { continue };
        push(text(map.get("email")).and_then(|e| Identifier::parse("email", &e)));
        push(text(map.get("phone")).and_then(|p| Identifier::parse("phone", &p)));
        for (name, value) in map {
            if catalog.traits.get(name).is_some_and(|t| t.identifier)
                && let Some(v) = value.as_str()
            {
                push(Identifier::parse(name, v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_share_consent_keys() {
        let e = Identifier::parse("email", " Ana@Example.ORG").unwrap();
        assert_eq!(e.key(), "email:ana@example.org");
        assert_eq!(e.subject().unwrap().key(), e.key());
        let p = Identifier::parse("phone", "06 12 34 56 78").unwrap();
        assert_eq!(p.key(), "phone:+33612345678");
        assert_eq!(Identifier::parse("phone", "+33 6 12 34 56 78").unwrap(), p);
        let card = Identifier::parse("loyalty_card", " VC-PAR-000123 ").unwrap();
        assert_eq!(card.key(), "loyalty_card:VC-PAR-000123");
        assert!(Identifier::parse("Loyalty Card", "x").is_none());
        assert!(!format!("{card:?}").contains("VC-PAR"));
    }
}
