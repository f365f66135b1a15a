//! The data inventory: for each declared trait, where it comes from, how many people have it,
//! which purposes actually read it, and how long it is kept — with the traits that fail
//! minimisation flagged.
//!
//! # Design
//!
//! The catalog says which purposes *may* use a trait; what uses it in fact are the saved
//! segments and campaigns, each bound to one purpose. A trait is read by a purpose when one of
//! them names it (as a whole word in its query, conditions or templates). Identifiers (email,
//! phone, declared identifiers) are read by identity resolution and by the channels, so they
//! count as read. Two flags follow (Art. 5(1)(c)): declared but never read by any purpose, and
//! — worse — held for people yet never read.

use crate::catalog::{Catalog, Retention, TraitDef, ValueType};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What the store observed of a trait in the event log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// People (profiles) it was collected for.
    pub subjects: i64,
    /// People per source name.
    pub sources: BTreeMap<String, i64>,
}

/// Something that reads traits for a purpose: a saved segment or a campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reader {
    /// `segment:3`, `campaign:7`.
    pub what: String,
    /// Its purpose.
    pub purpose: String,
    /// Its definition, as text (JSON of its query, conditions and templates).
    pub text: String,
}

/// One trait of the inventory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraitEntry {
    /// Trait name.
    pub name: String,
    /// Tier.
    pub tier: crate::catalog::Tier,
    /// Category of data.
    pub category: String,
    /// Whether it is special-category data (Art. 9).
    pub special: bool,
    /// Purposes the catalog allows.
    pub declared_purposes: Vec<String>,
    /// How long it is kept: its own retention, else the longest of its purposes'.
    pub retention: String,
    /// Sources that supplied it, with the number of people each.
    pub sources: BTreeMap<String, i64>,
    /// People who have it.
    pub subjects: i64,
    /// Purposes that read it, with what reads it.
    pub used_by: BTreeMap<String, Vec<String>>,
    /// `never_used` and/or `collected_never_read`.
    pub flags: Vec<&'static str>,
}

/// The inventory: every declared trait, and the flagged ones by flag.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Inventory {
    /// Every declared trait, by name.
    pub traits: Vec<TraitEntry>,
    /// Declared traits no purpose reads.
    pub never_used: Vec<String>,
    /// Traits held for people that no purpose reads.
    pub collected_never_read: Vec<String>,
    /// Trait names found in the log that the catalog does not declare (should be none:
    /// collection drops them).
    pub undeclared_observed: Vec<String>,
}

fn names_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

fn is_identifier(t: &TraitDef) -> bool {
    t.identifier || matches!(t.value_type, ValueType::Email | ValueType::Phone)
}

fn longest(a: Retention, b: Retention) -> Retention {
    let months = |r: Retention| r.years * 12 + r.months;
    if (months(a), a.days) >= (months(b), b.days) {
        a
    } else {
        b
    }
}

/// Builds the inventory from the catalog, what the log holds and what reads it.
pub fn build(catalog: &Catalog, observed: &BTreeMap<String, Observed>, readers: &[Reader]) -> Inventory {
    let mut traits = Vec::new();
    for t in catalog.traits.values() {
        let seen = observed.get(&t.name).cloned().unwrap_or_default();
        let mut used_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in readers.iter().filter(|r| names_word(&r.text, &t.name)) {
            used_by.entry(r.purpose.clone()).or_default().push(r.what.clone());
        }
        if is_identifier(t) {
            used_by
                .entry("identity resolution".into())
                .or_default()
                .push("identity graph and channels".into());
        }
        let retention = t.retention.unwrap_or_else(|| {
            t.purposes
                .iter()
                .filter_map(|p| catalog.purposes.get(p))
                .map(|p| p.retention)
                .fold(Retention::default(), longest)
        });
        let mut flags = Vec::new();
        if used_by.is_empty() {
            flags.push("never_used");
            if seen.subjects > 0 {
                flags.push("collected_never_read");
            }
        }
        traits.push(TraitEntry {
            name: t.name.clone(),
            tier: t.tier,
            category: t.category.clone(),
            special: t.special_basis.is_some(),
            declared_purposes: t.purposes.clone(),
            retention: retention.to_string(),
            sources: seen.sources,
            subjects: seen.subjects,
            used_by,
            flags,
        });
    }
    let flagged = |flag: &str| -> Vec<String> {
        traits
            .iter()
            .filter(|t| t.flags.contains(&flag))
            .map(|t| t.name.clone())
            .collect()
    };
    let declared: BTreeSet<&String> = catalog.traits.keys().collect();
    Inventory {
        never_used: flagged("never_used"),
        collected_never_read: flagged("collected_never_read"),
        undeclared_observed: observed.keys().filter(|k| !declared.contains(k)).cloned().collect(),
        traits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_whole_words_and_flags_follow() {
        assert!(names_word(r#"{"query":"city = 'Lyon'"}"#, "city"));
        assert!(!names_word(r#"{"query":"capacity > 3"}"#, "city"));
        let catalog = Catalog::builtin();
        let mut observed = BTreeMap::new();
        observed.insert(
            "city".to_owned(),
            Observed {
                subjects: 2,
                sources: BTreeMap::from([("web".to_owned(), 2)]),
            },
        );
        observed.insert(
            "hobbies".to_owned(),
            Observed {
                subjects: 1,
                sources: BTreeMap::from([("web".to_owned(), 1)]),
            },
        );
        let readers = [Reader {
            what: "segment:1".into(),
            purpose: "personalisation".into(),
            text: r#"{"query":"city = 'Lyon'"}"#.into(),
        }];
        let inv = build(&catalog, &observed, &readers);
        let city = inv.traits.iter().find(|t| t.name == "city").unwrap();
        assert!(city.flags.is_empty() && city.subjects == 2, "{city:?}");
        assert_eq!(city.used_by["personalisation"], ["segment:1"]);
        assert!(inv.collected_never_read.contains(&"hobbies".to_owned()));
        assert!(!inv.never_used.contains(&"email".to_owned()), "identifiers are read");
        assert!(inv.never_used.contains(&"gender".to_owned()));
        assert!(!inv.collected_never_read.contains(&"gender".to_owned()));
    }
}
