//! The records of processing activities (GDPR Art. 30(1)), one entry per purpose.
//!
//! # Design
//!
//! The register is generated from the catalog, so it cannot drift from what collection
//! enforces: the data categories of a purpose are the traits and events that name it, its
//! transfers and retention are the purpose's own. What the catalog cannot know comes from the
//! store as [`Flows`]: the recipients are the purpose's declared categories *and* the actual
//! destinations campaigns of that purpose send to (a webhook's host, never its path or query,
//! where tokens live), and the sources are those that actually supplied the purpose's traits,
//! whatever their kind (an in-store till as much as the website) and whether or not the catalog
//! declares them. It is laid out like the CNIL's
//! register template (one sheet per processing: controller and DPO, purposes, categories of
//! people and of data, sensitive data, recipients, transfers, retention, security measures) and
//! exported as JSON, CSV and HTML. A [`Register`] is plain data with `Deserialize`, so the
//! version kept for each catalog change renders exactly as it stood.

use crate::catalog::{Catalog, LegalBasis, Tier, Transfer};
use crate::source::SourceKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Measures Confiance itself applies to every processing (Art. 32), always listed.
pub const PLATFORM_MEASURES: [&str; 6] = [
    "minimisation at collection: undeclared fields are never stored",
    "consent and legal basis checked at collection and again at every read for a purpose",
    "write keys and API tokens kept only as SHA-256 digests; roles for staff access",
    "tamper-evident, hash-chained audit log holding pseudonymous references only",
    "IP addresses and user agents in consent proofs kept as keyed hashes",
    "erasure in one transaction with secure deletion; retention applied daily",
];

/// Used when a purpose declares no categories of people.
pub const DEFAULT_SUBJECTS: &str = "customers, prospects and visitors reached by the declared sources";

/// The whole register: the controller and one entry per purpose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// Legal name of the controller.
    pub controller: String,
    /// Its postal address.
    pub address: String,
    /// How to reach the data protection officer.
    pub dpo_contact: String,
    /// One entry per purpose of the catalog.
    pub processings: Vec<Processing>,
}

/// One processing activity (one purpose), with every field Art. 30(1) requires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Processing {
    /// Purpose id.
    pub purpose: String,
    /// Name.
    pub name: String,
    /// What it is for (Art. 30(1)(b)).
    pub description: String,
    /// Lawful basis, with its article.
    pub legal_basis: String,
    /// Categories of data subjects (Art. 30(1)(c)).
    pub subjects: Vec<String>,
    /// Categories of personal data, each with the traits it holds (Art. 30(1)(c)).
    pub data_categories: Vec<DataCategory>,
    /// Events collected for it.
    pub events: Vec<String>,
    /// Special-category data (Art. 9) and the exception relied on.
    pub special_categories: Vec<String>,
    /// Categories of recipients (Art. 30(1)(d)): the declared ones, then each destination.
    pub recipients: Vec<String>,
    /// Where campaigns of this purpose actually send personal data.
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// Transfers to third countries and their safeguards (Art. 30(1)(e)).
    pub transfers: Vec<Transfer>,
    /// Time limit for erasure (Art. 30(1)(f)).
    pub retention: String,
    /// Security measures (Art. 30(1)(g)).
    pub security: Vec<String>,
    /// The sources that supplied its traits, each with its kind and the traits it supplied.
    pub sources: Vec<String>,
}

/// A destination a campaign sends personal data to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Destination {
    /// The receiving host (`crm.shop.example`): no scheme, credentials, port, path or query.
    pub host: String,
    /// How data reaches it (`webhook`).
    pub channel: String,
    /// The campaign that sends there.
    pub campaign: String,
}

/// What the store knows about where data comes from and goes to.
#[derive(Clone, Debug, Default)]
pub struct Flows {
    /// `(purpose id, destination)` for every campaign that sends data out.
    pub destinations: Vec<(String, Destination)>,
    /// Registered sources and their kind, by name.
    pub sources: BTreeMap<String, SourceKind>,
    /// `(trait, source name)`: that source has supplied that trait.
    pub supplied: Vec<(String, String)>,
}

/// The host of an `http(s)` URL, lowercased, without credentials, port, path, query or fragment
/// (which may carry tokens): what the register may show of a destination.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.trim().split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => host_port.split(':').next()?.to_owned(),
    };
    (!host.is_empty() && host != "[]").then(|| host.to_ascii_lowercase())
}

/// A category of personal data and the traits in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataCategory {
    /// Category (contact, preferences…).
    pub category: String,
    /// Traits, with their own retention when shorter.
    pub traits: Vec<String>,
}

fn basis_label(b: LegalBasis) -> &'static str {
    match b {
        LegalBasis::Consent => "consent (Art. 6(1)(a))",
        LegalBasis::Contract => "contract (Art. 6(1)(b))",
        LegalBasis::LegalObligation => "legal obligation (Art. 6(1)(c))",
        LegalBasis::LegitimateInterest => "legitimate interest (Art. 6(1)(f))",
    }
}

fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Identity => "identity",
        Tier::Business => "business",
        Tier::History => "history",
        Tier::Personal => "personal",
    }
}

impl Register {
    /// The register the catalog describes, with the sources and destinations `flows` records.
    pub fn of(catalog: &Catalog, flows: &Flows) -> Register {
        let security: Vec<String> = PLATFORM_MEASURES
            .iter()
            .map(|m| (*m).to_owned())
            .chain(catalog.controller.security.iter().cloned())
            .collect();
        let processings = catalog
            .purposes
            .values()
            .map(|p| {
                let mut categories: BTreeMap<&str, Vec<String>> = BTreeMap::new();
                let mut special = Vec::new();
                for t in catalog.traits.values().filter(|t| t.purposes.contains(&p.id)) {
                    let label = match t.retention {
                        Some(r) => format!("{} ({}, kept {r})", t.name, tier_name(t.tier)),
                        None => format!("{} ({})", t.name, tier_name(t.tier)),
                    };
                    categories.entry(t.category.as_str()).or_default().push(label);
                    if let Some(basis) = t.special_basis {
                        let basis = serde_json::to_value(basis)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        special.push(format!("{}: {} (Art. 9(2): {basis})", t.name, t.category));
                    }
                }
                let mut events: Vec<String> = catalog
                    .events
                    .values()
                    .filter(|e| e.purposes.contains(&p.id))
                    .map(|e| e.name.clone())
                    .collect();
                if catalog.page_purposes.contains(&p.id) {
                    events.push("page and screen views".into());
                }
                let destinations: BTreeSet<Destination> = flows
                    .destinations
                    .iter()
                    .filter(|(purpose, _)| *purpose == p.id)
                    .map(|(_, d)| d.clone())
                    .collect();
                let mut recipients = p.recipients.clone();
                recipients.extend(
                    destinations
                        .iter()
                        .map(|d| format!("{} ({} of the campaign « {} »)", d.host, d.channel, d.campaign)),
                );
                Processing {
                    purpose: p.id.clone(),
                    name: p.name.clone(),
                    description: p.description.clone(),
                    legal_basis: basis_label(p.legal_basis).to_owned(),
                    subjects: if p.subjects.is_empty() {
                        vec![DEFAULT_SUBJECTS.to_owned()]
                    } else {
                        p.subjects.clone()
                    },
                    data_categories: categories
                        .into_iter()
                        .map(|(category, traits)| DataCategory {
                            category: category.to_owned(),
                            traits,
                        })
                        .collect(),
                    events,
                    special_categories: special,
                    recipients,
                    destinations: destinations.into_iter().collect(),
                    transfers: p.transfers.clone(),
                    retention: p.retention.to_string(),
                    security: security.clone(),
                    sources: sources_of(catalog, flows, &p.id),
                }
            })
            .collect();
        Register {
            controller: catalog.controller.name.clone(),
            address: catalog.controller.address.clone(),
            dpo_contact: catalog.controller.dpo_contact.clone(),
            processings,
        }
    }

    /// The CSV export: a header and one row per processing; lists are joined with `; `.
    pub fn to_csv(&self) -> String {
        let header = [
            "controller",
            "address",
            "dpo_contact",
            "purpose",
            "name",
            "description",
            "legal_basis",
            "subjects",
            "data_categories",
            "events",
            "special_categories",
            "recipients",
            "transfers",
            "retention",
            "security",
            "sources",
        ];
        let mut out = header.join(",");
        out.push_str("\r\n");
        for p in &self.processings {
            let row = [
                self.controller.clone(),
                self.address.clone(),
                self.dpo_contact.clone(),
                p.purpose.clone(),
                p.name.clone(),
                p.description.clone(),
                p.legal_basis.clone(),
                p.subjects.join("; "),
                categories_text(&p.data_categories),
                p.events.join("; "),
                p.special_categories.join("; "),
                p.recipients.join("; "),
                transfers_text(&p.transfers),
                p.retention.clone(),
                p.security.join("; "),
                p.sources.join("; "),
            ];
            let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
            out.push_str(&cells.join(","));
            out.push_str("\r\n");
        }
        out
    }

    /// The HTML export, one sheet per processing in the order of the CNIL's template.
    pub fn to_html(&self, title_date: &str) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>Records of processing activities — {}</title>\
             <style>body{{font-family:sans-serif;max-width:60rem;margin:auto}}\
             table{{border-collapse:collapse;width:100%;margin-bottom:2rem}}\
             th,td{{border:1px solid #999;padding:.4rem;text-align:left;vertical-align:top}}\
             th{{width:30%;background:#eee}}</style></head><body>\
             <h1>Records of processing activities (GDPR Art. 30)</h1><p>As it stood on {}</p>\
             <h2>Controller</h2><table><tr><th>Name</th><td>{}</td></tr>\
             <tr><th>Address</th><td>{}</td></tr>\
             <tr><th>Data protection officer</th><td>{}</td></tr></table>",
            esc(&self.controller),
            esc(title_date),
            esc(&self.controller),
            esc(&self.address),
            esc(&self.dpo_contact),
        );
        for p in &self.processings {
            let _ = write!(
                h,
                "<section id=\"{}\"><h2>{}</h2><table>",
                esc(&p.purpose),
                esc(&p.name)
            );
            let rows: [(&str, String); 11] = [
                ("Purpose", format!("{} ({})", esc(&p.description), esc(&p.purpose))),
                ("Legal basis", esc(&p.legal_basis)),
                ("Categories of data subjects", list(&p.subjects)),
                ("Categories of personal data", esc(&categories_text(&p.data_categories))),
                ("Events collected", list(&p.events)),
                ("Sensitive data (Art. 9)", list_or(&p.special_categories, "none")),
                ("Recipients", list(&p.recipients)),
                (
                    "Transfers outside the EU and safeguards",
                    if p.transfers.is_empty() {
                        "none declared".into()
                    } else {
                        esc(&transfers_text(&p.transfers))
                    },
                ),
                ("Retention (erasure time limit)", esc(&p.retention)),
                ("Security measures", list(&p.security)),
                ("Sources", list(&p.sources)),
            ];
            for (k, v) in rows {
                let _ = write!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
            }
            h.push_str("</table></section>");
        }
        h.push_str("</body></html>");
        h
    }
}

/// Each source that supplied a trait of `purpose`: `name (kind): trait, trait`.
fn sources_of(catalog: &Catalog, flows: &Flows, purpose: &str) -> Vec<String> {
    let mut by_source: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, source) in &flows.supplied {
        if catalog
            .traits
            .get(name)
            .is_some_and(|t| t.purposes.iter().any(|p| p == purpose))
        {
            by_source.entry(source).or_default().insert(name);
        }
    }
    by_source
        .into_iter()
        .map(|(source, traits)| {
            let kind = flows
                .sources
                .get(source)
                .copied()
                .or_else(|| catalog.sources.get(source).map(|s| s.kind))
                .map_or("unregistered", SourceKind::as_str);
            let traits: Vec<&str> = traits.into_iter().collect();
            format!("{source} ({kind}): {}", traits.join(", "))
        })
        .collect()
}

fn categories_text(c: &[DataCategory]) -> String {
    c.iter()
        .map(|c| format!("{}: {}", c.category, c.traits.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn transfers_text(t: &[Transfer]) -> String {
    t.iter()
        .map(|t| format!("{} ({}): {}", t.recipient, t.country, t.safeguard))
        .collect::<Vec<_>>()
        .join("; ")
}

fn list(items: &[String]) -> String {
    list_or(items, "—")
}

fn list_or(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        return empty.to_owned();
    }
    let mut out = String::from("<ul>");
    for i in items {
        let _ = write!(out, "<li>{}</li>", esc(i));
    }
    out.push_str("</ul>");
    out
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_purpose_has_every_field() {
        let catalog = Catalog::builtin();
        let r = Register::of(&catalog, &Flows::default());
        assert_eq!(r.processings.len(), catalog.purposes.len());
        assert!(!r.dpo_contact.is_empty());
        for p in &r.processings {
            assert!(!p.legal_basis.is_empty() && !p.retention.is_empty(), "{p:?}");
            assert!(!p.subjects.is_empty() && !p.security.is_empty(), "{p:?}");
        }
        let csv = r.to_csv();
        assert_eq!(csv.lines().count(), catalog.purposes.len() + 1);
        assert!(r.to_html("2026-11-29").contains("Categories of data subjects"));
    }

    #[test]
    fn destinations_and_sources_come_from_the_flows() {
        let catalog = Catalog::builtin();
        let flows = Flows {
            destinations: vec![(
                "marketing_email".into(),
                Destination {
                    host: "crm.example".into(),
                    channel: "webhook".into(),
                    campaign: "relance".into(),
                },
            )],
            sources: BTreeMap::from([("caisse-lyon".into(), SourceKind::Store)]),
            supplied: vec![
                ("email".into(), "caisse-lyon".into()),
                ("city".into(), "caisse-lyon".into()),
                ("not_a_trait".into(), "web".into()),
            ],
        };
        let r = Register::of(&catalog, &flows);
        let p = |id: &str| r.processings.iter().find(|p| p.purpose == id).unwrap();
        let email = p("marketing_email");
        assert_eq!(email.destinations[0].host, "crm.example");
        assert!(
            email.recipients.iter().any(|r| r.starts_with("crm.example (webhook")),
            "{email:?}"
        );
        assert!(
            email
                .recipients
                .starts_with(&catalog.purposes["marketing_email"].recipients)
        );
        assert_eq!(email.sources, ["caisse-lyon (store): email"]);
        assert!(p("analytics").destinations.is_empty());
        assert!(r.to_csv().contains("crm.example"));
    }

    #[test]
    fn a_destination_shows_its_host_only() {
        assert_eq!(
            host_of("https://bot:s3cret@Hooks.Example.com:8443/t/ABCDEF?token=xyz#f").as_deref(),
            Some("hooks.example.com")
        );
        assert_eq!(host_of("http://[::1]:9000/x").as_deref(), Some("[::1]"));
        assert_eq!(host_of("http://crm.example").as_deref(), Some("crm.example"));
        assert_eq!(host_of("crm.example/path"), None);
        assert_eq!(host_of("https:///path"), None);
    }

    #[test]
    fn csv_quotes_commas_and_quotes() {
        assert_eq!(csv_cell("a, \"b\""), "\"a, \"\"b\"\"\"");
        assert_eq!(esc("<a href='x'>"), "&lt;a href=&#39;x&#39;&gt;");
    }
}
