//! Consent signals carried by incoming data, mapped onto the catalog's purposes.
//!
//! # Design
//!
//! Sites instrumented with a consent manager already send their visitors' choices with every
//! message: Segment's `context.consent.categoryPreferences`, RudderStack's
//! `context.consentManagement`, an IAB TCF TC string, and browsers' Global Privacy Control
//! header. Each purpose of the catalog says which categories, ids or TCF purposes stand for it;
//! this module turns a message into the decisions it expresses, and nothing more: recording
//! them (only when they change the subject's state) is the ingestion's job.
//!
//! GPC is only ever a refusal, never a consent. When signals in one message disagree, a GPC
//! refusal wins; otherwise the most specific signal (TCF, then Segment, then RudderStack) is
//! read first and later ones only fill purposes it did not speak about.

use super::{Method, Status, tcf};
use crate::catalog::Catalog;
use serde_json::Value;
use std::sync::Arc;

/// One decision a message expresses about a purpose.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// Purpose id.
    pub purpose: String,
    /// Granted or denied.
    pub status: Status,
    /// Which kind of signal.
    pub method: Method,
    /// What was sent, as proof (never personal data). Shared by the purposes one signal speaks
    /// about: most signals repeat a standing choice and are never recorded.
    pub proof: Arc<Value>,
}

/// What reading the signals of a message found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals {
    /// One decision per purpose at most.
    pub decisions: Vec<Signal>,
    /// A TC string was present but could not be decoded (its error).
    pub invalid_tc_string: Option<String>,
}

fn push(out: &mut Vec<Signal>, purpose: &str, status: Status, method: Method, proof: &Arc<Value>) {
    if !out.iter().any(|s| s.purpose == purpose) {
        out.push(Signal {
            purpose: purpose.to_owned(),
            status,
            method,
            proof: proof.clone(),
        });
    }
}

/// The consent decisions a normalised message expresses. `gpc` is whether the request carried
/// `Sec-GPC: 1`.
pub fn read(body: &Value, catalog: &Catalog, gpc: bool) -> Signals {
    let mut out = Signals::default();
    let consent = body.pointer("/context/consent");

    if gpc {
        let proof = Arc::new(serde_json::json!({"sec_gpc": "1"}));
        for p in catalog.purposes.values().filter(|p| p.signals.gpc_refuses) {
            push(&mut out.decisions, &p.id, Status::Denied, Method::Gpc, &proof);
        }
    }

    if let Some(tc) = consent.and_then(|c| c.get("tcString")).and_then(Value::as_str) {
        match tcf::decode(tc) {
            Ok(model) => {
                let proof = Arc::new(serde_json::json!({"tc_string": tc}));
                for p in catalog.purposes.values().filter(|p| !p.signals.tcf.is_empty()) {
                    let granted = p.signals.tcf.iter().all(|n| model.purpose_consented(*n));
                    let status = if granted { Status::Granted } else { Status::Denied };
                    push(&mut out.decisions, &p.id, status, Method::TcString, &proof);
                }
            }
            Err(e) => out.invalid_tc_string = Some(e.to_string()),
        }
    }

    if let Some(prefs) = consent
        .and_then(|c| c.get("categoryPreferences"))
        .and_then(Value::as_object)
    {
        let proof = Arc::new(serde_json::json!({"categoryPreferences": prefs}));
        for p in catalog.purposes.values().filter(|p| !p.signals.segment.is_empty()) {
            let mapped: Vec<bool> = p
                .signals
                .segment
                .iter()
                .filter_map(|k| prefs.get(k).and_then(Value::as_bool))
                .collect();
            // An empty object is Segment's way of saying "no consent at all".
            let status = if prefs.is_empty() || (!mapped.is_empty() && mapped.iter().all(|g| !g)) {
                Status::Denied
            } else if mapped.iter().any(|g| *g) {
                Status::Granted
            } else {
                continue;
            };
            push(&mut out.decisions, &p.id, status, Method::Signal, &proof);
        }
    }

    if let Some(cm) = body.pointer("/context/consentManagement") {
        let ids = |field: &str| -> Vec<String> {
            cm.get(field)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| {
                            v.as_str()
                                .map(str::to_owned)
                                .or_else(|| v.as_i64().map(|n| n.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let (allowed, denied) = (ids("allowedConsentIds"), ids("deniedConsentIds"));
        let proof = Arc::new(serde_json::json!({"consentManagement": {"provider": cm.get("provider"),
            "allowedConsentIds": allowed, "deniedConsentIds": denied}}));
        for p in catalog.purposes.values().filter(|p| !p.signals.rudderstack.is_empty()) {
            let status = if p.signals.rudderstack.iter().any(|id| allowed.contains(id)) {
                Status::Granted
            } else if p.signals.rudderstack.iter().any(|id| denied.contains(id)) {
                Status::Denied
            } else {
                continue;
            };
            push(&mut out.decisions, &p.id, status, Method::Signal, &proof);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statuses(s: &Signals) -> Vec<(&str, Status, Method)> {
        let mut v: Vec<_> = s
            .decisions
            .iter()
            .map(|d| (d.purpose.as_str(), d.status, d.method))
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    #[test]
    fn segment_category_preferences() {
        let c = Catalog::builtin();
        let body = json!({"context": {"consent": {"categoryPreferences": {"Analytics": true, "Advertising": false}}}});
        assert_eq!(
            statuses(&read(&body, &c, false)),
            vec![
                ("advertising", Status::Denied, Method::Signal),
                ("analytics", Status::Granted, Method::Signal)
            ]
        );
        let none = json!({"context": {"consent": {"categoryPreferences": {}}}});
        let s = read(&none, &c, false);
        assert!(s.decisions.iter().all(|d| d.status == Status::Denied));
        assert_eq!(
            s.decisions.len(),
            3,
            "every purpose mapped to Segment categories is refused"
        );
    }

    #[test]
    fn gpc_refuses_and_never_grants() {
        let c = Catalog::builtin();
        let body = json!({"context": {"consent": {"categoryPreferences": {"Advertising": true, "Analytics": true}}}});
        let s = read(&body, &c, true);
        assert_eq!(
            statuses(&s),
            vec![
                ("advertising", Status::Denied, Method::Gpc),
                ("analytics", Status::Granted, Method::Signal)
            ]
        );
        assert!(
            read(&json!({}), &c, true)
                .decisions
                .iter()
                .all(|d| d.status == Status::Denied)
        );
    }

    #[test]
    fn rudderstack_consent_management() {
        let c = Catalog::builtin();
        let body = json!({"context": {"consentManagement": {"provider": "custom",
            "allowedConsentIds": ["analytics"], "deniedConsentIds": ["advertising", "personalisation"]}}});
        assert_eq!(
            statuses(&read(&body, &c, false)),
            vec![
                ("advertising", Status::Denied, Method::Signal),
                ("analytics", Status::Granted, Method::Signal),
                ("personalisation", Status::Denied, Method::Signal),
            ]
        );
    }

    #[test]
    fn a_bad_tc_string_is_reported_not_fatal() {
        let c = Catalog::builtin();
        let s = read(&json!({"context": {"consent": {"tcString": "%%%"}}}), &c, false);
        assert!(s.invalid_tc_string.is_some());
        assert!(s.decisions.is_empty());
    }
}
