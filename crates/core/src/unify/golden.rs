//! The golden record: one value per trait, the reason it won, every value ever seen, and the
//! traits computed from history.
//!
//! # Design
//!
//! Every trait value a source sends is an *observation*, kept with its source and time (the
//! lineage). The golden value of a trait is chosen by survivorship rules: a value the person
//! rectified wins; otherwise the most trusted source kind wins (account > store > support >
//! form > server > web by default: what a customer typed in their account beats what a cookie
//! suggested), and among its values the most recent. The record says, per trait, why that value
//! won, so nobody has to guess.
//!
//! Computed traits (first and last seen, orders, total spent, last order, favourite category,
//! journey phase) are functions of the profile's events, recomputed rather than stored, so
//! they can never drift from the log.

use crate::catalog::Phase;
use crate::collect::MessageType;
use crate::source::SourceKind;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One event of a profile, as the golden record reads it.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    /// Message type.
    pub kind: MessageType,
    /// Event name of a track.
    pub event: Option<&'a str>,
    /// The stored message.
    pub body: &'a Value,
    /// When it happened.
    pub timestamp: Timestamp,
    /// Position in the log.
    pub seq: i64,
    /// Source name.
    pub source: &'a str,
    /// Source kind.
    pub source_kind: SourceKind,
}

/// One value of a trait seen in one message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Observation {
    /// The value.
    pub value: Value,
    /// Source name.
    pub source: String,
    /// Source kind.
    pub source_kind: SourceKind,
    /// When the message happened.
    pub at: Timestamp,
    /// Log position.
    pub seq: i64,
    /// Whether the person rectified it themself (GDPR Art. 16).
    pub rectified: bool,
}

/// The golden value of a trait and why it won.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoldenValue {
    /// The value.
    pub value: Value,
    /// Where it came from.
    pub source: String,
    /// When it was observed.
    pub at: Timestamp,
    /// Why it won, in plain words.
    pub why: String,
}

/// Survivorship rules.
#[derive(Clone, Debug, Serialize)]
pub struct Survivorship {
    /// Source kinds from the most to the least trusted.
    pub source_priority: Vec<SourceKind>,
}

impl Default for Survivorship {
    fn default() -> Self {
        use SourceKind::*;
        Self {
            source_priority: vec![Account, Store, Support, Form, Server, Web],
        }
    }
}

impl Survivorship {
    fn rank(&self, kind: SourceKind) -> usize {
        self.source_priority
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(self.source_priority.len())
    }
}

/// The traits a message carries: `traits` of an identify, and `context.traits` of any message.
pub fn observations(e: &EventView<'_>, rectified: bool) -> Vec<(String, Observation)> {
    let mut out = Vec::new();
    let own = matches!(e.kind, MessageType::Identify)
        .then(|| e.body.get("traits"))
        .flatten();
    for traits in [own, crate::collect::at_path(e.body, &["context", "traits"])]
        .into_iter()
        .flatten()
    {
        if let Value::Object(map) = traits {
            for (name, value) in map {
                out.push((
                    name.clone(),
                    Observation {
                        value: value.clone(),
                        source: e.source.to_owned(),
                        source_kind: e.source_kind,
                        at: e.timestamp,
                        seq: e.seq,
                        rectified,
                    },
                ));
            }
        }
    }
    out
}

/// Chooses the golden value of each trait from its observations.
pub fn survive(lineage: &BTreeMap<String, Vec<Observation>>, rules: &Survivorship) -> BTreeMap<String, GoldenValue> {
    let mut out = BTreeMap::new();
    for (name, seen) in lineage {
        let candidates: Vec<&Observation> = seen.iter().filter(|o| !o.value.is_null()).collect();
        let best = candidates.iter().copied().max_by(|a, b| {
            (a.rectified, std::cmp::Reverse(rules.rank(a.source_kind)), a.at, a.seq).cmp(&(
                b.rectified,
                std::cmp::Reverse(rules.rank(b.source_kind)),
                b.at,
                b.seq,
            ))
        });
        let Some(best) = best else { continue };
        let same_kind = candidates.iter().filter(|o| o.source_kind == best.source_kind).count();
        let distinct = {
            let mut values: Vec<&Value> = candidates.iter().map(|o| &o.value).collect();
            values.dedup();
            values.len()
        };
        let why = if best.rectified {
            "rectified by the subject".to_owned()
        } else if distinct <= 1 {
            format!("the only value seen ({} observation(s))", candidates.len())
        } else {
            format!(
                "from {} (source kind ranked {} of {}), the most recent of {} value(s) from that kind",
                best.source_kind,
                rules.rank(best.source_kind) + 1,
                rules.source_priority.len(),
                same_kind
            )
        };
        out.insert(
            name.clone(),
            GoldenValue {
                value: best.value.clone(),
                source: best.source.clone(),
                at: best.at,
                why,
            },
        );
    }
    out
}

/// Traits computed from a profile's history.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Computed {
    /// First event.
    pub first_seen: Option<Timestamp>,
    /// Last event.
    pub last_seen: Option<Timestamp>,
    /// Orders completed.
    pub orders: u64,
    /// Sum of the orders' totals.
    pub total_spent: f64,
    /// Last order.
    pub last_order: Option<Timestamp>,
    /// The product category seen most often in views, carts and orders.
    pub favourite_category: Option<String>,
    /// Where the person is in the customer journey.
    pub journey_phase: Option<Phase>,
}

fn order_total(body: &Value) -> f64 {
    let p = body.get("properties");
    p.and_then(|p| p.get("total").or_else(|| p.get("revenue")))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// Computes the history traits of a profile from its events (Segment's e-commerce event names).
pub fn computed(events: &[EventView<'_>]) -> Computed {
    let mut c = Computed::default();
    let mut categories: BTreeMap<String, u64> = BTreeMap::new();
    let (mut cart, mut delivered_or_after) = (false, false);
    for e in events {
        c.first_seen = Some(c.first_seen.map_or(e.timestamp, |t| t.min(e.timestamp)));
        c.last_seen = Some(c.last_seen.map_or(e.timestamp, |t| t.max(e.timestamp)));
        let props = e.body.get("properties");
        match e.event {
            Some("Order Completed") => {
                c.orders += 1;
                c.total_spent += order_total(e.body);
                c.last_order = Some(c.last_order.map_or(e.timestamp, |t| t.max(e.timestamp)));
                if let Some(Value::Array(products)) = props.and_then(|p| p.get("products")) {
                    for p in products {
                        if let Some(cat) = p.get("category").and_then(Value::as_str) {
                            *categories.entry(cat.to_owned()).or_default() += 1;
                        }
                    }
                }
            }
            Some("Product Viewed" | "Product Added") => {
                cart |= e.event == Some("Product Added");
                if let Some(cat) = props.and_then(|p| p.get("category")).and_then(Value::as_str) {
                    *categories.entry(cat.to_owned()).or_default() += 1;
                }
            }
            Some("Checkout Started") => cart = true,
            Some("Order Delivered" | "Support Ticket Opened" | "Support Ticket Resolved") => delivered_or_after = true,
            _ => {}
        }
    }
    c.total_spent = (c.total_spent * 100.0).round() / 100.0;
    c.favourite_category = categories
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(cat, _)| cat);
    c.journey_phase = if events.is_empty() {
        None
    } else if c.orders > 0 && delivered_or_after {
        Some(Phase::PostPurchase)
    } else if c.orders > 0 || cart {
        Some(Phase::Purchase)
    } else {
        Some(Phase::Discovery)
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn obs(value: Value, kind: SourceKind, when: &str, seq: i64) -> Observation {
        Observation {
            value,
            source: kind.as_str().into(),
            source_kind: kind,
            at: at(when),
            seq,
            rectified: false,
        }
    }

    #[test]
    fn the_account_beats_a_newer_web_value_and_rectification_beats_all() {
        let mut lineage = BTreeMap::new();
        lineage.insert(
            "city".to_owned(),
            vec![
                obs(json!("Lyon"), SourceKind::Account, "2025-01-01T00:00:00Z", 1),
                obs(json!("Paris"), SourceKind::Web, "2026-01-01T00:00:00Z", 2),
                obs(json!("Lille"), SourceKind::Account, "2025-06-01T00:00:00Z", 3),
            ],
        );
        let rules = Survivorship::default();
        let g = survive(&lineage, &rules);
        assert_eq!(g["city"].value, json!("Lille"));
        assert!(g["city"].why.contains("from account"), "{}", g["city"].why);
        let mut fixed = obs(json!("Marseille"), SourceKind::Web, "2024-01-01T00:00:00Z", 4);
        fixed.rectified = true;
        lineage.get_mut("city").unwrap().push(fixed);
        let g = survive(&lineage, &rules);
        assert_eq!(
            (g["city"].value.clone(), g["city"].why.as_str()),
            (json!("Marseille"), "rectified by the subject")
        );
    }

    #[test]
    fn history_traits() {
        let bodies = [
            json!({"properties": {"category": "jazz"}}),
            json!({"properties": {"total": 25.5, "products": [{"category": "rock"}, {"category": "jazz"}]}}),
            json!({"properties": {"total": 10.0}}),
            json!({}),
        ];
        let ev = |i: usize, event: &'static str, when: &str| EventView {
            kind: MessageType::Track,
            event: Some(event),
            body: &bodies[i],
            timestamp: at(when),
            seq: i as i64,
            source: "web",
            source_kind: SourceKind::Web,
        };
        let events = [
            ev(0, "Product Viewed", "2026-01-01T00:00:00Z"),
            ev(1, "Order Completed", "2026-02-01T00:00:00Z"),
            ev(2, "Order Completed", "2026-03-01T00:00:00Z"),
        ];
        let c = computed(&events);
        assert_eq!((c.orders, c.total_spent), (2, 35.5));
        assert_eq!(c.favourite_category.as_deref(), Some("jazz"));
        assert_eq!(c.last_order, Some(at("2026-03-01T00:00:00Z")));
        assert_eq!(c.journey_phase, Some(Phase::Purchase));
        let mut more = events.to_vec();
        more.push(ev(3, "Order Delivered", "2026-03-04T00:00:00Z"));
        assert_eq!(computed(&more).journey_phase, Some(Phase::PostPurchase));
        assert_eq!(computed(&events[..1]).journey_phase, Some(Phase::Discovery));
    }
}
