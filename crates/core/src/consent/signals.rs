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
use crate::collect::at_path;
use serde_json::{Value, json};

/// One decision a message expresses about a purpose of the catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal<'c> {
    /// Purpose id.
    pub purpose: &'c str,
    /// Granted or denied.
    pub status: Status,
    /// Which kind of signal.
    pub method: Method,
    /// Where in the request it was read.
    from: Origin,
}

/// Where a signal was read: what its proof quotes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Origin {
    Gpc,
    TcString,
    CategoryPreferences,
    ConsentManagement,
}

impl Signal<'_> {
    /// What was sent, as proof (never personal data), from the message `body` it was read in.
    /// Built only for the signals recorded: most repeat a standing choice.
    pub fn proof(&self, body: &Value) -> Value {
        let consent = |field: &str| at_path(body, &["context", "consent", field]).cloned();
        match self.from {
            Origin::Gpc => json!({"sec_gpc": "1"}),
            Origin::TcString => json!({"tc_string": consent("tcString")}),
            Origin::CategoryPreferences => json!({"categoryPreferences": consent("categoryPreferences")}),
            Origin::ConsentManagement => {
                let cm = at_path(body, &["context", "consentManagement"]);
                json!({"consentManagement": {"provider": cm.and_then(|c| c.get("provider")),
                    "allowedConsentIds": consent_ids(cm, "allowedConsentIds"),
                    "deniedConsentIds": consent_ids(cm, "deniedConsentIds")}})
            }
        }
    }
}

/// What reading the signals of a message found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Signals<'c> {
    /// One decision per purpose at most.
    pub decisions: Vec<Signal<'c>>,
    /// A TC string was present but could not be decoded (its error).
    pub invalid_tc_string: Option<String>,
}

fn push<'c>(out: &mut Vec<Signal<'c>>, purpose: &'c str, status: Status, method: Method, from: Origin) {
    if !out.iter().any(|s| s.purpose == purpose) {
        out.push(Signal {
            purpose,
            status,
            method,
            from,
        });
    }
}

/// The ids listed under `field` of RudderStack's `consentManagement`, numbers as text.
fn consent_ids(cm: Option<&Value>, field: &str) -> Vec<String> {
    cm.and_then(|c| c.get(field))
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
}

/// The consent decisions a normalised message expresses. `gpc` is whether the request carried
/// `Sec-GPC: 1`.
pub fn read<'c>(body: &Value, catalog: &'c Catalog, gpc: bool) -> Signals<'c> {
    let mut out = Signals::default();
    let consent = at_path(body, &["context", "consent"]);

    if gpc {
        for p in catalog.purposes.values().filter(|p| p.signals.gpc_refuses) {
            push(&mut out.decisions, &p.id, Status::Denied, Method::Gpc, Origin::Gpc);
        }
    }

    if let Some(tc) = consent.and_then(|c| c.get("tcString")).and_then(Value::as_str) {
        match tcf::decode(tc) {
            Ok(model) => {
                for p in catalog.purposes.values().filter(|p| !p.signals.tcf.is_empty()) {
                    let granted = p.signals.tcf.iter().all(|n| model.purpose_consented(*n));
                    let status = if granted { Status::Granted } else { Status::Denied };
                    push(&mut out.decisions, &p.id, status, Method::TcString, Origin::TcString);
                }
            }
            Err(e) => out.invalid_tc_string = Some(e.to_string()),
        }
    }

    if let Some(prefs) = consent
        .and_then(|c| c.get("categoryPreferences"))
        .and_then(Value::as_object)
    {
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
            push(
                &mut out.decisions,
                &p.id,
                status,
                Method::Signal,
                Origin::CategoryPreferences,
            );
        }
    }

    if let Some(cm) = at_path(body, &["context", "consentManagement"]) {
        let (allowed, denied) = (
            consent_ids(Some(cm), "allowedConsentIds"),
            consent_ids(Some(cm), "deniedConsentIds"),
        );
        for p in catalog.purposes.values().filter(|p| !p.signals.rudderstack.is_empty()) {
            let status = if p.signals.rudderstack.iter().any(|id| allowed.contains(id)) {
                Status::Granted
            } else if p.signals.rudderstack.iter().any(|id| denied.contains(id)) {
                Status::Denied
            } else {
                continue;
            };
            push(
                &mut out.decisions,
                &p.id,
                status,
                Method::Signal,
                Origin::ConsentManagement,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statuses<'c>(s: &Signals<'c>) -> Vec<(&'c str, Status, Method)> {
        let mut v: Vec<_> = s.decisions.iter().map(|d| (d.purpose, d.status, d.method)).collect();
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
    fn each_decision_quotes_what_was_sent_as_its_proof() {
        let c = Catalog::builtin();
        let prefs = json!({"Analytics": true, "Advertising": false});
        let body = json!({"context": {
            "consent": {"categoryPreferences": prefs},
            "consentManagement": {"provider": "custom", "allowedConsentIds": ["personalisation", 7]}
        }});
        let read = read(&body, &c, true);
        let proof_of = |purpose: &str| {
            let signal = read.decisions.iter().find(|d| d.purpose == purpose).unwrap();
            signal.proof(&body)
        };
        assert_eq!(proof_of("advertising"), json!({"sec_gpc": "1"}));
        assert_eq!(proof_of("analytics"), json!({"categoryPreferences": prefs}));
        assert_eq!(
            proof_of("personalisation"),
            json!({"consentManagement": {"provider": "custom",
                "allowedConsentIds": ["personalisation", "7"], "deniedConsentIds": []}})
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
