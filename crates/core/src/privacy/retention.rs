//! Retention: what is past its time.
//!
//! # Design
//!
//! Three rules, all from the catalog, with the CNIL's figures as defaults:
//!
//! 1. **Events** live as long as the longest retention of the purposes they were collected
//!    for, counted from when they happened.
//! 2. **Traits** with a retention of their own (a birth in the household, one year) are removed
//!    from the messages that carried them once that time has passed; the rest of the message
//!    stays.
//! 3. **People**: a prospect (no order) is erased three years after the last contact *they*
//!    initiated — a visit, a form, a reply, a purchase; a message we sent, or its opening, does
//!    not count — and a customer three years after the end of the relationship (their last order
//!    or contact).
//!
//! The functions here decide; the caller scans the store and applies, or only reports in a dry
//! run.

use crate::catalog::{Catalog, Retention};
use crate::collect::MessageType;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

fn before(now: Timestamp, r: Retention) -> Timestamp {
    now.to_zoned(TimeZone::UTC)
        .checked_sub(r.span())
        .map_or(Timestamp::MIN, |z| z.timestamp())
}

/// Whether an event collected for `purposes` at `at` is past every purpose's retention. Events
/// that only link identifiers (no purpose) follow their person, not this rule.
pub fn event_expired(purposes: &[String], at: Timestamp, catalog: &Catalog, now: Timestamp) -> bool {
    let longest = purposes
        .iter()
        .filter_map(|p| catalog.purposes.get(p))
        .map(|p| p.retention)
        .max_by_key(|r| (r.years * 12 + r.months) * 31 + r.days);
    match longest {
        Some(r) => at < before(now, r),
        None => false,
    }
}

/// The traits a message carried that are past their own retention.
pub fn expired_traits(body: &serde_json::Value, at: Timestamp, catalog: &Catalog, now: Timestamp) -> Vec<String> {
    let mut out = Vec::new();
    for traits in [
        body.get("traits"),
        crate::collect::at_path(body, &["context", "traits"]),
    ]
    .into_iter()
    .flatten()
    {
        for name in traits.as_object().into_iter().flat_map(|m| m.keys()) {
            let expired = catalog
                .traits
                .get(name)
                .and_then(|t| t.retention)
                .is_some_and(|r| at < before(now, r));
            if expired && !out.contains(name) {
                out.push(name.clone());
            }
        }
    }
    out
}

/// Whether the subject started a message (a visit, a form, a purchase, a reply), rather than
/// the business (a delivery notice, a questionnaire sent, an email opened).
pub fn subject_initiated(kind: MessageType, event: Option<&str>, catalog: &Catalog) -> bool {
    match kind {
        MessageType::Track => event
            .and_then(|e| catalog.events.get(e))
            .is_none_or(|d| d.subject_initiated),
        MessageType::Page | MessageType::Screen | MessageType::Identify => true,
        MessageType::Group | MessageType::Alias => false,
    }
}

/// What the retention rules say about one person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonVerdict {
    /// Keep.
    Keep,
    /// A prospect whose last own contact is older than the prospects' retention.
    ExpiredProspect,
    /// A customer whose relationship ended longer ago than the customers' retention.
    ExpiredCustomer,
}

/// Judges a person from their last own contact and last order.
pub fn person(
    last_contact: Option<Timestamp>,
    last_order: Option<Timestamp>,
    catalog: &Catalog,
    now: Timestamp,
) -> PersonVerdict {
    let r = &catalog.retention;
    match (last_order, last_contact) {
        (Some(order), contact) => {
            let end = contact.map_or(order, |c| c.max(order));
            if end < before(now, r.customers) {
                PersonVerdict::ExpiredCustomer
            } else {
                PersonVerdict::Keep
            }
        }
        (None, Some(contact)) if contact < before(now, r.prospects) => PersonVerdict::ExpiredProspect,
        _ => PersonVerdict::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn events_follow_their_longest_purpose() {
        let c = Catalog::builtin();
        let now = at("2026-11-29T00:00:00Z");
        let analytics = vec!["analytics".to_owned()];
        assert!(
            event_expired(&analytics, at("2024-10-01T00:00:00Z"), &c, now),
            "audience data: 25 months"
        );
        assert!(!event_expired(&analytics, at("2024-11-01T00:00:00Z"), &c, now));
        let order = vec!["service".to_owned(), "accounting".to_owned()];
        assert!(
            !event_expired(&order, at("2020-01-01T00:00:00Z"), &c, now),
            "accounting keeps it 10 years"
        );
        assert!(!event_expired(&[], at("2000-01-01T00:00:00Z"), &c, now));
    }

    #[test]
    fn traits_with_their_own_retention() {
        let c = Catalog::builtin();
        let body = json!({"traits": {"household_birth": "2025-01-10", "city": "Lyon"}});
        let now = at("2026-11-29T00:00:00Z");
        assert_eq!(
            expired_traits(&body, at("2025-06-01T00:00:00Z"), &c, now),
            ["household_birth"]
        );
        assert!(expired_traits(&body, at("2026-06-01T00:00:00Z"), &c, now).is_empty());
    }

    #[test]
    fn prospects_and_customers() {
        let c = Catalog::builtin();
        let now = at("2026-11-29T00:00:00Z");
        assert_eq!(
            person(Some(at("2023-11-01T00:00:00Z")), None, &c, now),
            PersonVerdict::ExpiredProspect
        );
        assert_eq!(
            person(Some(at("2024-01-01T00:00:00Z")), None, &c, now),
            PersonVerdict::Keep
        );
        assert_eq!(
            person(None, Some(at("2023-06-01T00:00:00Z")), &c, now),
            PersonVerdict::ExpiredCustomer
        );
        assert_eq!(
            person(
                Some(at("2025-01-01T00:00:00Z")),
                Some(at("2023-06-01T00:00:00Z")),
                &c,
                now
            ),
            PersonVerdict::Keep
        );
        assert!(!subject_initiated(MessageType::Track, Some("Questionnaire Sent"), &c));
        assert!(subject_initiated(
            MessageType::Track,
            Some("Questionnaire Answered"),
            &c
        ));
    }
}
