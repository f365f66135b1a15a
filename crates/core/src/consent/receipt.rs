//! Consent receipts: a subject's ledger as records another system (or the subject) can keep.
//!
//! Each ledger entry becomes one receipt with the fields of the Kantara Initiative Consent
//! Receipt (v1.1) — controller, principal, services and purposes, collection method, timestamp
//! — plus the record fields of ISO/IEC TS 27560 that Kantara lacks: the state of the consent,
//! the notice shown (version and hash), and the event history position.

use super::{LedgerEntry, Status};
use crate::catalog::{Catalog, LegalBasis};
use serde_json::{Value, json};

fn basis_name(b: LegalBasis) -> &'static str {
    match b {
        LegalBasis::Consent => "consent (GDPR Art. 6(1)(a))",
        LegalBasis::Contract => "contract (GDPR Art. 6(1)(b))",
        LegalBasis::LegalObligation => "legal obligation (GDPR Art. 6(1)(c))",
        LegalBasis::LegitimateInterest => "legitimate interest (GDPR Art. 6(1)(f))",
    }
}

/// The receipt of one ledger entry.
pub fn receipt(entry: &LedgerEntry, catalog: &Catalog) -> Value {
    let purpose = catalog.purposes.get(&entry.purpose);
    let pii_categories: Vec<&str> = catalog
        .traits
        .values()
        .filter(|t| t.purposes.contains(&entry.purpose))
        .map(|t| t.category.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let controller = &catalog.controller;
    json!({
        "version": "KI-CR-v1.1.0",
        "jurisdiction": "FR",
        "consentTimestamp": entry.recorded_at.as_second(),
        "collectionMethod": entry.method.as_str(),
        "consentReceiptID": format!("confiance-{}", entry.seq),
        "language": "fr",
        "piiPrincipalId": entry.subject_value,
        "piiPrincipalIdType": entry.subject_type.as_str(),
        "piiControllers": [{
            "piiController": controller.name,
            "address": controller.address,
            "contact": controller.dpo_contact,
            "email": controller.dpo_contact,
        }],
        "policyUrl": "/privacy",
        "services": [{
            "service": controller.name,
            "purposes": [{
                "purpose": purpose.map_or(entry.purpose.as_str(), |p| p.description.as_str()),
                "purposeId": entry.purpose,
                "purposeCategory": [purpose.map_or("", |p| p.name.as_str())],
                "consentType": if entry.method == super::Method::Gpc { "EXPLICIT_REFUSAL_SIGNAL" } else { "EXPLICIT" },
                "piiCategory": pii_categories,
                "primaryPurpose": false,
                "termination": purpose.map(|p| format!("withdrawal, or {} after collection", p.retention)),
                "thirdPartyDisclosure": purpose.is_some_and(|p| !p.recipients.is_empty()),
                "thirdPartyName": purpose.map(|p| p.recipients.join(", ")),
                "legalBasis": purpose.map(|p| basis_name(p.legal_basis)),
            }],
        }],
        "sensitive": false,
        "spiCat": [],
        // ISO/IEC TS 27560 record fields.
        "state": match entry.status {
            Status::Granted => "given",
            Status::Denied => "refused",
            Status::Withdrawn => "withdrawn",
            Status::Objected => "objected",
            Status::Restricted => "restricted",
        },
        "notice": {"version": entry.notice_version, "sha256": entry.notice_hash},
        "touchpoint": entry.touchpoint,
        "sourceId": entry.source_id,
        "evidence": {"ipHash": entry.ip_hash, "userAgentHash": entry.ua_hash, "proof": entry.proof},
        "recordedAt": entry.recorded_at.to_string(),
    })
}
