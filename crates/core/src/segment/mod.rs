//! Segment: who to talk to, counted only over lawful data.
//!
//! [`query`] is the segment language (text and JSON), [`index`] the in-memory audience index
//! that answers it, [`kpi`] the KPIs and journey map counted over that index. This module joins
//! them to the catalog: [`check`] refuses a query that reads data its purpose may not use, and
//! [`facts`] turns a profile's golden record and history into what the index keeps.
//!
//! # Design
//!
//! A segment always serves one declared purpose, and that purpose decides twice: which data the
//! query may read (a trait or event the catalog does not declare for the purpose is refused
//! when the segment is saved or previewed, with its name), and who can be a member (only
//! profiles with a legal basis for the purpose now — see [`index`]).

pub mod index;
pub mod kpi;
pub mod query;

use crate::catalog::{Catalog, Purpose};
use crate::collect::MessageType;
use crate::unify::golden::{Computed, EventView, GoldenValue};
use index::{COMPUTED, EventFact, ProfileFacts, Schema};
use query::{Query, Ref};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Names the index gives page and screen views.
pub const PAGE_VIEWED: &str = "Page Viewed";
/// See [`PAGE_VIEWED`].
pub const SCREEN_VIEWED: &str = "Screen Viewed";

/// Why a query may not serve a purpose.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// No such purpose in the catalog.
    #[error("unknown purpose `{0}`")]
    UnknownPurpose(String),
    /// No such trait.
    #[error("unknown trait `{name}`{hint}")]
    UnknownField {
        /// The name.
        name: String,
        /// A suggestion.
        hint: String,
    },
    /// No such event.
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    /// The event does not declare the property.
    #[error("event `{event}` has no declared property `{property}`")]
    UnknownProperty {
        /// The event.
        event: String,
        /// The property.
        property: String,
    },
    /// The data may not be used for the purpose.
    #[error("`{name}` may not be used for the purpose `{purpose}` (the catalog declares it for: {allowed})")]
    NotForPurpose {
        /// Trait or event.
        name: String,
        /// The segment's purpose.
        purpose: String,
        /// The purposes that may use it.
        allowed: String,
    },
}

/// The purposes that may read a trait, computed trait or event.
fn purposes_of(catalog: &Catalog, r: Ref<'_>) -> Result<Vec<String>, CheckError> {
    let event_purposes = |name: &str| -> Option<Vec<String>> {
        if name == PAGE_VIEWED || name == SCREEN_VIEWED {
            return Some(catalog.page_purposes.clone());
        }
        catalog.events.get(name).map(|e| e.purposes.clone())
    };
    match r {
        Ref::Field(name) => {
            if let Some(t) = catalog.traits.get(name) {
                return Ok(t.purposes.clone());
            }
            let Some((_, _, from)) = COMPUTED.iter().find(|(n, _, _)| *n == name) else {
                let hint = strsim_closest(
                    name,
                    catalog
                        .traits
                        .keys()
                        .map(String::as_str)
                        .chain(COMPUTED.iter().map(|c| c.0)),
                )
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
                return Err(CheckError::UnknownField {
                    name: name.into(),
                    hint,
                });
            };
            // A computed trait serves the purposes of the events it is computed from; one
            // computed from every event serves any purpose some event serves.
            let mut out: BTreeSet<String> = BTreeSet::new();
            if from.is_empty() {
                out.extend(catalog.page_purposes.iter().cloned());
                out.extend(catalog.events.values().flat_map(|e| e.purposes.iter().cloned()));
            }
            for e in *from {
                out.extend(event_purposes(e).unwrap_or_default());
            }
            Ok(out.into_iter().collect())
        }
        Ref::Event(name) => event_purposes(name).ok_or_else(|| CheckError::UnknownEvent(name.into())),
        Ref::Property(event, property) => {
            let declared = catalog
                .events
                .get(event)
                .map(|e| e.properties.contains_key(property))
                .unwrap_or_else(|| catalog.page_properties.contains_key(property));
            if !declared {
                return Err(CheckError::UnknownProperty {
                    event: event.into(),
                    property: property.into(),
                });
            }
            event_purposes(event).ok_or_else(|| CheckError::UnknownEvent(event.into()))
        }
        Ref::Segment(_) => Ok(Vec::new()),
    }
}

fn strsim_closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Checks that `query` only reads data the catalog declares for `purpose`. `segments` gives
/// the queries of saved segments it names, which must obey the same rule.
pub fn check<'c>(
    catalog: &'c Catalog,
    purpose: &str,
    query: &Query,
    segments: &dyn Fn(&str) -> Option<Query>,
) -> Result<&'c Purpose, CheckError> {
    let p = catalog
        .purposes
        .get(purpose)
        .ok_or_else(|| CheckError::UnknownPurpose(purpose.into()))?;
    let mut first_error = None;
    let mut seen = BTreeSet::new();
    let mut pending = vec![query.clone()];
    while let Some(q) = pending.pop() {
        q.visit(&mut |r| {
            if first_error.is_some() {
                return;
            }
            if let Ref::Segment(name) = r {
                if seen.insert(name.to_owned())
                    && let Some(inner) = segments(name)
                {
                    pending.push(inner);
                }
                return;
            }
            match purposes_of(catalog, r) {
                Ok(allowed) if allowed.iter().any(|a| a == purpose) => {}
                Ok(allowed) => {
                    first_error = Some(CheckError::NotForPurpose {
                        name: match r {
                            Ref::Field(n) | Ref::Event(n) | Ref::Segment(n) => n.into(),
                            Ref::Property(e, n) => format!("{e}.{n}"),
                        },
                        purpose: purpose.into(),
                        allowed: if allowed.is_empty() {
                            "none".into()
                        } else {
                            allowed.join(", ")
                        },
                    })
                }
                Err(e) => first_error = Some(e),
            }
        });
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(p),
    }
}

/// What the index keeps of a profile: golden values, computed traits, behavioural events and
/// the purposes it has a basis for.
pub fn facts(
    catalog: &Catalog,
    golden: &BTreeMap<String, GoldenValue>,
    computed: &Computed,
    events: &[EventView<'_>],
    lawful: BTreeSet<String>,
) -> ProfileFacts {
    let mut traits: BTreeMap<String, Value> = golden
        .iter()
        .filter(|(name, _)| catalog.traits.contains_key(*name))
        .map(|(name, g)| (name.clone(), g.value.clone()))
        .collect();
    let mut put = |name: &str, v: Value| {
        if !v.is_null() && !traits.contains_key(name) {
            traits.insert(name.to_owned(), v);
        }
    };
    put("orders", json!(computed.orders));
    put("total_spent", json!(computed.total_spent));
    if computed.orders > 0 {
        put(
            "average_basket",
            json!((computed.total_spent / computed.orders as f64 * 100.0).round() / 100.0),
        );
    }
    put("last_order", json!(computed.last_order));
    put("first_seen", json!(computed.first_seen));
    put("last_seen", json!(computed.last_seen));
    put("favourite_category", json!(computed.favourite_category));
    put("journey_phase", json!(computed.journey_phase));
    ProfileFacts {
        traits,
        events: events.iter().filter_map(|e| event_fact(catalog, e)).collect(),
        lawful,
    }
}

/// The index's view of one event: tracks by name, pages and screens as `Page Viewed` and
/// `Screen Viewed`; identifies, groups and aliases are not behaviour.
pub fn event_fact(catalog: &Catalog, e: &EventView<'_>) -> Option<EventFact> {
    let name = match e.kind {
        MessageType::Track => e.event?,
        MessageType::Page => PAGE_VIEWED,
        MessageType::Screen => SCREEN_VIEWED,
        _ => return None,
    };
    let properties = match e.body.get("properties") {
        Some(Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let declared = catalog.events.get(name);
    let touchpoint = properties
        .get("touchpoint")
        .and_then(Value::as_str)
        .filter(|t| catalog.touchpoints.contains_key(*t))
        .map(str::to_owned)
        .or_else(|| {
            // Where the event can happen, narrowed to where its source collects: a till's order
            // happened at the till, a site's at the checkout.
            let covered = catalog.sources.get(e.source).map(|s| &s.touchpoints);
            let possible: Vec<&String> = match declared {
                Some(d) => d.touchpoints.iter().collect(),
                None => covered.into_iter().flatten().collect(),
            };
            possible
                .iter()
                .find(|t| covered.is_some_and(|c| c.contains(t)))
                .or(possible.first())
                .map(|t| (*t).clone())
        });
    Some(EventFact {
        name: name.to_owned(),
        at: e.timestamp,
        source: e.source.to_owned(),
        touchpoint,
        properties,
    })
}

/// The schema of the catalog, for [`index::AudienceIndex::new`].
pub fn schema(catalog: &Catalog) -> Schema {
    Schema::of(catalog)
}
