//! Enforcement at collection: what a message may keep, given its subject's consent.
//!
//! # Design
//!
//! Each part of a message serves purposes declared in the catalog: an event its event's
//! purposes, a page view the page purposes, a trait the trait's purposes. A part is kept when
//! at least one of its purposes has a legal basis for the subject (see [`super::has_basis`]).
//!
//! An event or page view with no purpose left is **dropped**: it is not stored at all, with or
//! without identifiers, and only an anonymous per-source counter (`dropped.no_legal_basis`) and
//! a metric record that it happened. Counting it anonymously would still need a consent-exempt
//! audience-measurement purpose to be declared; until one is, nothing of it is kept. A trait with
//! no purpose left is removed from the message, which is kept for what remains. Messages that
//! only link identifiers (`alias`, `identify` without traits) are kept: they are what lets a
//! later refusal be applied to every identifier of the person.

use super::{ConsentView, has_basis};
use crate::catalog::Catalog;
use crate::collect::{DropReason, Dropped, MessageType, Normalized, at_path_mut};
use serde_json::Value;

/// Whether a message is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Stored (possibly without some traits).
    Keep,
    /// Not stored: none of its purposes has a legal basis.
    Drop,
}

/// Applies consent to a normalised message in place and says whether to keep it. On `Keep`,
/// `message.purposes` holds the purposes it may be used for.
///
/// `subject_keys` are the message's subjects ([`super::Subject::of_message`]) by their keys
/// ([`super::Subject::key`]), read once by a caller that also records the consent signals they
/// carry.
pub fn enforce<'c>(
    normalized: &mut Normalized,
    catalog: &'c Catalog,
    view: &ConsentView,
    subject_keys: &[String],
) -> Verdict {
    let mut bases = Bases {
        catalog,
        view,
        subject_keys,
        known: Vec::new(),
    };
    let mut allowed = |purpose: &'c String| bases.allowed(purpose);
    let message = &mut normalized.message;
    let mut purposes: Vec<String> = match message.kind {
        MessageType::Track => message
            .event
            .as_ref()
            .and_then(|e| catalog.events.get(e))
            .map(|d| d.purposes.iter().filter(|p| allowed(p)).cloned().collect())
            .unwrap_or_default(),
        MessageType::Page | MessageType::Screen => {
            catalog.page_purposes.iter().filter(|p| allowed(p)).cloned().collect()
        }
        MessageType::Identify | MessageType::Group | MessageType::Alias => Vec::new(),
    };
    let serves_events = matches!(
        message.kind,
        MessageType::Track | MessageType::Page | MessageType::Screen
    );
    if serves_events && purposes.is_empty() {
        return Verdict::Drop;
    }

    for (path, prefix) in [(&["traits"][..], "traits"), (&["context", "traits"], "context.traits")] {
        let Some(Value::Object(traits)) = at_path_mut(&mut message.body, path) else {
            continue;
        };
        traits.retain(|name, _| {
            let kept: Vec<&String> = catalog
                .traits
                .get(name)
                .map(|t| t.purposes.iter().filter(|p| allowed(p)).collect())
                .unwrap_or_default();
            if kept.is_empty() {
                normalized.dropped.push(Dropped {
                    field: format!("{prefix}.{name}"),
                    reason: DropReason::NoLegalBasis,
                });
                return false;
            }
            if !serves_events {
                for p in kept {
                    if !purposes.contains(p) {
                        purposes.push(p.clone());
                    }
                }
            }
            true
        });
    }
    purposes.sort();
    message.purposes = purposes;
    Verdict::Keep
}

/// Whether each purpose has a legal basis for one message's subjects, each asked about once
/// however many parts of the message serve it.
struct Bases<'c, 'v> {
    catalog: &'c Catalog,
    view: &'v ConsentView,
    subject_keys: &'v [String],
    known: Vec<(&'c str, bool)>,
}

impl<'c> Bases<'c, '_> {
    fn allowed(&mut self, purpose: &'c str) -> bool {
        if let Some((_, has)) = self.known.iter().find(|(p, _)| *p == purpose) {
            return *has;
        }
        let has = self
            .catalog
            .purposes
            .get(purpose)
            .is_some_and(|p| has_basis(p, self.view.effective_by_keys(self.subject_keys, purpose)));
        self.known.push((purpose, has));
        has
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{Envelope, normalize};
    use crate::consent::{IdKind, StateEntry, Status, Subject};
    use serde_json::json;

    fn now() -> jiff::Timestamp {
        "2026-11-29T10:00:00Z".parse().unwrap()
    }

    fn run(raw: Value, view: &ConsentView) -> (Verdict, Normalized) {
        let catalog = Catalog::builtin();
        let mut n = normalize(raw, &Envelope::default(), &catalog, now()).unwrap();
        let keys: Vec<String> = Subject::of_message(&n.message.body).iter().map(Subject::key).collect();
        let v = enforce(&mut n, &catalog, view, &keys);
        (v, n)
    }

    fn granted(view: &mut ConsentView, kind: IdKind, value: &str, purpose: &str) {
        let s = Subject::parse(kind, value).unwrap();
        view.insert(
            &s.key(),
            purpose,
            StateEntry {
                status: Status::Granted,
                recorded_at: now(),
                seq: 1,
            },
        );
    }

    #[test]
    fn a_page_view_without_analytics_consent_is_dropped() {
        let mut view = ConsentView::default();
        let page = json!({"type": "page", "anonymousId": "a1", "properties": {"path": "/"}});
        assert_eq!(run(page.clone(), &view).0, Verdict::Drop);
        granted(&mut view, IdKind::AnonymousId, "a1", "analytics");
        let (v, n) = run(page, &view);
        assert_eq!(v, Verdict::Keep);
        assert_eq!(n.message.purposes, ["analytics"]);
    }

    #[test]
    fn an_order_is_kept_for_its_contract_purposes_only() {
        let view = ConsentView::default();
        let order = json!({"type": "track", "userId": "u1", "event": "Order Completed", "properties": {"total": 10}});
        let (v, n) = run(order, &view);
        assert_eq!(v, Verdict::Keep);
        assert_eq!(
            n.message.purposes,
            ["accounting", "service"],
            "personalisation needs consent"
        );
    }

    #[test]
    fn traits_without_a_basis_are_removed() {
        let mut view = ConsentView::default();
        let identify = json!({"type": "identify", "userId": "u1", "traits": {
            "email": "ana@example.org", "favorite_style": "jazz", "gender": "f"}});
        let (v, n) = run(identify.clone(), &view);
        assert_eq!(v, Verdict::Keep);
        assert_eq!(n.message.body["traits"], json!({"email": "ana@example.org"}));
        let fields: Vec<&str> = n.dropped.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["traits.favorite_style", "traits.gender"]);
        // Consent given under the email counts for a message that carries that email.
        granted(&mut view, IdKind::Email, "ana@example.org", "personalisation");
        let (_, n) = run(identify, &view);
        assert_eq!(n.message.body["traits"]["favorite_style"], "jazz");
        assert!(n.message.purposes.contains(&"personalisation".to_owned()));
    }
}
