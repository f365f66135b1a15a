//! The data catalog: what Confiance may collect, why, and for how long.
//!
//! # Design
//!
//! The catalog is code, kept in TOML next to the configuration: purposes with their legal
//! basis and retention, traits in the four tiers a business keeps (identity & contact,
//! business-specific, history, personal), events and their properties, journey touchpoints,
//! sources. Collection obeys it: what is not declared is not stored (data minimisation).
//!
//! Loading parses the file into raw structures that remember where each value came from, then
//! validates the whole catalog and reports *every* problem with its line and column, the way a
//! compiler would, instead of stopping at the first one. The validated [`Catalog`] exposes only
//! checked, cross-referenced data: a trait can never name a purpose that does not exist.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use toml::Spanned;

/// The catalog of the demo shop, used when the configuration declares no purposes.
pub const DEFAULT_TOML: &str = include_str!("../../../catalog/default.toml");

/// A validated data catalog.
#[derive(Clone, Debug, Serialize)]
pub struct Catalog {
    /// Who is responsible for the processing.
    pub controller: Controller,
    /// Purposes by id.
    pub purposes: BTreeMap<String, Purpose>,
    /// Traits by name.
    pub traits: BTreeMap<String, TraitDef>,
    /// Events by name.
    pub events: BTreeMap<String, EventDef>,
    /// Properties that `page` and `screen` calls may carry.
    pub page_properties: BTreeMap<String, ValueType>,
    /// Purposes that page and screen views serve.
    pub page_purposes: Vec<String>,
    /// The consent notice and proofs.
    pub consent: ConsentSettings,
    /// Journey touchpoints by id.
    pub touchpoints: BTreeMap<String, Touchpoint>,
    /// Declared sources by name.
    pub sources: BTreeMap<String, SourceDecl>,
    /// Identity resolution and golden-record rules.
    pub unify: UnifySettings,
    /// How long people are kept.
    pub retention: PeopleRetention,
}

/// How long people are kept (CNIL figures by default).
#[derive(Clone, Debug, Serialize)]
pub struct PeopleRetention {
    /// A prospect, after the last contact they initiated (CNIL NS-048: 3 years).
    pub prospects: Retention,
    /// A customer, after the end of the relationship (CNIL: 3 years).
    pub customers: Retention,
}

impl Default for PeopleRetention {
    fn default() -> Self {
        let three = Retention {
            years: 3,
            months: 0,
            days: 0,
        };
        Self {
            prospects: three,
            customers: three,
        }
    }
}

/// How identities are resolved and golden values chosen.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UnifySettings {
    /// Guards against merging strangers.
    pub guards: crate::unify::graph::Guards,
    /// Which source wins a trait.
    pub survivorship: crate::unify::golden::Survivorship,
}

/// The controller and its data protection officer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    /// Legal name.
    #[serde(default)]
    pub name: String,
    /// Postal address.
    #[serde(default)]
    pub address: String,
    /// Contact of the data protection officer.
    #[serde(default)]
    pub dpo_contact: String,
    /// Security measures (Art. 32) the records of processing describe, beyond Confiance's own.
    #[serde(default)]
    pub security: Vec<String>,
}

/// The lawful bases of GDPR Art. 6(1) that Confiance distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    /// Art. 6(1)(a): the subject agreed; needs a recorded, withdrawable consent.
    Consent,
    /// Art. 6(1)(b): needed to perform a contract with the subject.
    Contract,
    /// Art. 6(1)(f): the controller's legitimate interest, open to objection.
    LegitimateInterest,
    /// Art. 6(1)(c): required by law.
    LegalObligation,
}

/// A purpose of processing.
#[derive(Clone, Debug, Serialize)]
pub struct Purpose {
    /// Stable id, referenced by traits, events and consents.
    pub id: String,
    /// Short name shown to people.
    pub name: String,
    /// What the data is used for, in plain language.
    pub description: String,
    /// Lawful basis.
    pub legal_basis: LegalBasis,
    /// How long data kept for this purpose lives.
    pub retention: Retention,
    /// Who receives the data (categories of recipients).
    pub recipients: Vec<String>,
    /// English name (the French one when not given).
    pub name_en: String,
    /// English description (the French one when not given).
    pub description_en: String,
    /// Whether the cookie banner offers it as a category (trackers need consent).
    pub banner: bool,
    /// What it collects, in plain French, for the banner (the event names when not given).
    pub collects: Option<String>,
    /// What it collects, in plain English.
    pub collects_en: Option<String>,
    /// The marketing channel it is the consent for (email, sms, phone, postal), if any.
    pub channel: Option<String>,
    /// How consent signals in incoming data map onto it.
    pub signals: SignalMapping,
    /// Categories of people whose data it processes (customers, prospects…), for Art. 30.
    pub subjects: Vec<String>,
    /// Transfers outside the EU and their safeguards (Art. 30(1)(e), 46).
    pub transfers: Vec<Transfer>,
}

/// A transfer of personal data to a third country.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Who receives the data.
    pub recipient: String,
    /// The third country.
    pub country: String,
    /// The safeguard (adequacy decision, standard contractual clauses…).
    pub safeguard: String,
}

/// How consent signals sent by other tools map onto a purpose.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SignalMapping {
    /// Keys of Segment's `context.consent.categoryPreferences` that grant or deny it.
    pub segment: Vec<String>,
    /// RudderStack consent ids (`context.consentManagement`) that grant or deny it.
    pub rudderstack: Vec<String>,
    /// IAB TCF purposes that must all be consented for it to be granted.
    pub tcf: Vec<u8>,
    /// Whether a Global Privacy Control signal (`Sec-GPC: 1`) refuses it.
    pub gpc_refuses: bool,
}

/// Settings of the consent notice (the cookie banner) and of consent proofs.
#[derive(Clone, Debug, Serialize)]
pub struct ConsentSettings {
    /// Version of the notice; a new version asks everyone again.
    pub notice_version: String,
    /// How long a choice (consent or refusal) is kept before asking again.
    pub validity: Retention,
    /// How long a preference-centre link stays valid.
    pub link_validity: Retention,
}

impl Default for ConsentSettings {
    fn default() -> Self {
        Self {
            notice_version: "1".into(),
            validity: Retention {
                years: 0,
                months: 6,
                days: 0,
            },
            link_validity: Retention {
                years: 0,
                months: 0,
                days: 30,
            },
        }
    }
}

/// The four tiers of data a business keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Identity and contact: name, address, phone, email.
    Identity,
    /// What this business specifically needs (favourite music style for a music shop).
    Business,
    /// The history of interactions: purchases, problems.
    History,
    /// Personal touches: birthday, favourite artist, a birth in the household.
    Personal,
}

/// The type a trait or property value must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Any JSON string.
    String,
    /// Any JSON number.
    Number,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An ISO-8601 instant.
    Datetime,
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
    /// Anything.
    Any,
}

impl ValueType {
    /// Whether `value` has this type. `null` always passes: it clears a value.
    pub fn accepts(self, value: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (self, value) {
            (_, V::Null) | (Self::Any, _) => true,
            (Self::String, V::String(_)) => true,
            (Self::Number, V::Number(_)) => true,
            (Self::Integer, V::Number(n)) => n.is_i64() || n.is_u64(),
            (Self::Boolean, V::Bool(_)) => true,
            (Self::Date, V::String(s)) => s.parse::<jiff::civil::Date>().is_ok(),
            (Self::Datetime, V::String(s)) => s.parse::<jiff::Timestamp>().is_ok(),
            (Self::Email, V::String(s)) => looks_like_email(s),
            (Self::Phone, V::String(s)) => looks_like_phone(s),
            (Self::Object, V::Object(_)) => true,
            (Self::Array, V::Array(_)) => true,
            _ => false,
        }
    }

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::Datetime => "datetime",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Object => "object",
            Self::Array => "array",
            Self::Any => "any",
        }
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace)
                && s.len() <= 254
        }
        None => false,
    }
}

fn looks_like_phone(s: &str) -> bool {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    (6..=20).contains(&digits)
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'))
}

/// Special categories of personal data (GDPR Art. 9(1)).
pub const SPECIAL_CATEGORIES: [&str; 9] = [
    "racial_or_ethnic_origin",
    "political_opinions",
    "religious_or_philosophical_beliefs",
    "trade_union_membership",
    "genetic",
    "biometric",
    "health",
    "sex_life",
    "sexual_orientation",
];

/// The Art. 9(2) exceptions that allow processing special-category data in a shop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialBasis {
    /// Art. 9(2)(a).
    ExplicitConsent,
    /// Art. 9(2)(e): made manifestly public by the subject.
    ManifestlyPublic,
    /// Art. 9(2)(f): legal claims.
    LegalClaims,
}

/// A declared trait.
#[derive(Clone, Debug, Serialize)]
pub struct TraitDef {
    /// Trait name as sent in `traits`.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Which of the four tiers.
    pub tier: Tier,
    /// Category of data (contact, preferences, purchase history, …).
    pub category: String,
    /// Purposes that may use it.
    pub purposes: Vec<String>,
    /// Own retention when shorter than its purposes'.
    pub retention: Option<Retention>,
    /// The Art. 9(2) exception when the category is special.
    pub special_basis: Option<SpecialBasis>,
    /// Whether its value identifies a person (a loyalty card): a node of the identity graph.
    pub identifier: bool,
}

/// A declared event.
#[derive(Clone, Debug, Serialize)]
pub struct EventDef {
    /// Event name as sent in `track`.
    pub name: String,
    /// Purposes the event serves.
    pub purposes: Vec<String>,
    /// Touchpoints where it happens.
    pub touchpoints: Vec<String>,
    /// Declared properties and their types.
    pub properties: BTreeMap<String, ValueType>,
    /// Whether the subject starts it (a visit, a purchase) rather than the business (a
    /// delivery notice, a questionnaire sent): only the former extend a prospect's retention.
    pub subject_initiated: bool,
}

/// Phases of the customer journey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the purchase: finding the offer.
    Discovery,
    /// The purchase itself.
    Purchase,
    /// Delivery, service, satisfaction, repurchase.
    PostPurchase,
}

/// A journey touchpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Touchpoint {
    /// Stable id.
    pub id: String,
    /// Journey phase.
    pub phase: Phase,
    /// Channel (web, app, store, email, phone, social, post…).
    pub channel: String,
    /// What happens there.
    pub description: String,
}

/// A declared source.
#[derive(Clone, Debug, Serialize)]
pub struct SourceDecl {
    /// Name, as given to `confiance source add`.
    pub name: String,
    /// Kind.
    pub kind: crate::source::SourceKind,
    /// What it is.
    pub description: String,
    /// Touchpoints it covers.
    pub touchpoints: Vec<String>,
}

/// A retention period in calendar units ("3 years", "25 months", "1 year 6 months").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Retention {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
}

impl Retention {
    /// Parses "3 years", "25 months", "1 year 6 months", "30 days".
    pub fn parse(s: &str) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        if words.is_empty() || !words.len().is_multiple_of(2) {
            return Err(format!(
                "retention `{s}` should read like \"3 years\" or \"1 year 6 months\""
            ));
        }
        let mut r = Retention::default();
        for pair in words.chunks(2) {
            let n: u32 = pair[0]
                .parse()
                .map_err(|_| format!("retention `{s}`: `{}` is not a whole number", pair[0]))?;
            match pair[1].trim_end_matches('s') {
                "year" => r.years += n,
                "month" => r.months += n,
                "day" => r.days += n,
                unit => {
                    return Err(format!(
                        "retention `{s}`: unknown unit `{unit}` (years, months or days)"
                    ));
                }
            }
        }
        if r == Retention::default() {
            return Err(format!("retention `{s}` is zero"));
        }
        Ok(r)
    }

    /// As a jiff span, for calendar arithmetic.
    pub fn span(self) -> jiff::Span {
        jiff::Span::new()
            .years(i64::from(self.years))
            .months(i64::from(self.months))
            .days(i64::from(self.days))
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (n, unit) in [(self.years, "year"), (self.months, "month"), (self.days, "day")] {
            match n {
                0 => {}
                1 => parts.push(format!("1 {unit}")),
                n => parts.push(format!("{n} {unit}s")),
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// One problem found in a catalog, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogError {
    /// 1-based line, 0 when the problem is about the file as a whole.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        }
    }
}

// ---- raw, as written in the file -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    /// Server settings share the configuration file; they are read elsewhere.
    #[serde(default)]
    #[allow(dead_code)]
    server: Option<toml::Table>,
    #[serde(default)]
    controller: Controller,
    #[serde(default)]
    purposes: Vec<RawPurpose>,
    #[serde(default)]
    traits: Vec<RawTrait>,
    #[serde(default)]
    events: Vec<RawEvent>,
    #[serde(default)]
    page_properties: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    page_purposes: Option<Spanned<Vec<Spanned<String>>>>,
    consent: Option<RawConsent>,
    #[serde(default)]
    touchpoints: Vec<RawTouchpoint>,
    #[serde(default)]
    sources: Vec<RawSource>,
    unify: Option<RawUnify>,
    retention: Option<RawRetention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    prospects: Option<Spanned<String>>,
    customers: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnify {
    /// Values that identify no one, for every kind (added to the built-in list).
    #[serde(default)]
    blocked_values: Vec<String>,
    /// Values blocked for one kind: `phone = ["+33 1 40 00 00 00"]` (the shop's own number).
    #[serde(default)]
    blocked: BTreeMap<String, Vec<String>>,
    /// Most distinct values of a kind per profile.
    #[serde(default)]
    limits: BTreeMap<String, usize>,
    default_limit: Option<usize>,
    priority: Option<Vec<String>>,
    max_identifiers: Option<usize>,
    source_priority: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    id: Spanned<String>,
    name: Option<String>,
    description: Spanned<String>,
    legal_basis: Spanned<String>,
    retention: Option<Spanned<String>>,
    #[serde(default)]
    recipients: Vec<String>,
    name_en: Option<String>,
    description_en: Option<String>,
    #[serde(default)]
    banner: Option<Spanned<bool>>,
    collects: Option<String>,
    collects_en: Option<String>,
    channel: Option<Spanned<String>>,
    #[serde(default)]
    segment_categories: Vec<String>,
    #[serde(default)]
    rudderstack_ids: Vec<String>,
    #[serde(default)]
    tcf_purposes: Vec<Spanned<i64>>,
    #[serde(default)]
    gpc_refuses: bool,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    transfers: Vec<Transfer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    notice_version: Spanned<String>,
    validity: Option<Spanned<String>>,
    link_validity: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrait {
    name: Spanned<String>,
    #[serde(rename = "type")]
    value_type: Spanned<String>,
    tier: Spanned<String>,
    category: Spanned<String>,
    purposes: Spanned<Vec<Spanned<String>>>,
    retention: Option<Spanned<String>>,
    #[serde(default)]
    special_category: Option<Spanned<bool>>,
    #[serde(default)]
    identifier: bool,
    special_basis: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    name: Spanned<String>,
    purposes: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    touchpoints: Vec<Spanned<String>>,
    #[serde(default)]
    properties: BTreeMap<String, Spanned<String>>,
    subject_initiated: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTouchpoint {
    id: Spanned<String>,
    phase: Spanned<String>,
    channel: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    touchpoints: Vec<Spanned<String>>,
}

/// Collects problems with their positions while validating.
struct Problems<'a> {
    text: &'a str,
    found: Vec<CatalogError>,
}

impl Problems<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.found.push(CatalogError { line, column, message });
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn parse_enum<T: for<'de> Deserialize<'de>>(
    p: &mut Problems<'_>,
    value: &Spanned<String>,
    what: &str,
    allowed: &str,
) -> Option<T> {
    let parsed = T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(
        value.get_ref(),
    ));
    match parsed {
        Ok(v) => Some(v),
        Err(_) => {
            p.at(
                value.span(),
                format!("unknown {what} `{}`: expected {allowed}", value.get_ref()),
            );
            None
        }
    }
}

const VALUE_TYPES: &str = "string, number, integer, boolean, date, datetime, email, phone, object, array or any";

fn check_purpose_refs(
    p: &mut Problems<'_>,
    refs: &Spanned<Vec<Spanned<String>>>,
    purposes: &BTreeSet<String>,
    owner: &str,
) -> Vec<String> {
    if refs.get_ref().is_empty() {
        p.at(
            refs.span(),
            format!("{owner} names no purpose: everything collected must serve one"),
        );
    }
    let mut out = Vec::new();
    for r in refs.get_ref() {
        if purposes.contains(r.get_ref()) {
            out.push(r.get_ref().clone());
        } else {
            p.at(r.span(), format!("{owner} names unknown purpose `{}`", r.get_ref()));
        }
    }
    out
}

impl Catalog {
    /// The built-in catalog of the demo shop.
    pub fn builtin() -> Catalog {
        Catalog::from_toml(DEFAULT_TOML).expect("the built-in catalog is valid")
    }

    /// Whether a TOML text declares a catalog (any purpose) or only server settings.
    pub fn declared_in(text: &str) -> bool {
        toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("purposes"))
    }

    /// Parses and validates a catalog, reporting every problem found.
    pub fn from_toml(text: &str) -> Result<Catalog, Vec<CatalogError>> {
        let raw: RawCatalog = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
                return Err(vec![CatalogError {
                    line,
                    column,
                    message: e.message().to_owned(),
                }]);
            }
        };
        let mut p = Problems {
            text,
            found: Vec::new(),
        };

        let mut purposes = BTreeMap::new();
        for rp in &raw.purposes {
            let id = rp.id.get_ref().clone();
            if !is_identifier(&id) {
                p.at(rp.id.span(), format!("purpose id `{id}` must be snake_case ASCII"));
            }
            if rp.description.get_ref().trim().is_empty() {
                p.at(
                    rp.description.span(),
                    format!("purpose `{id}` needs a description people can read"),
                );
            }
            let basis = parse_enum::<LegalBasis>(
                &mut p,
                &rp.legal_basis,
                "legal basis",
                "consent, contract, legitimate_interest or legal_obligation",
            );
            let retention = match &rp.retention {
                None => {
                    p.at(
                        rp.id.span(),
                        format!("purpose `{id}` has no retention: every purpose needs one"),
                    );
                    None
                }
                Some(r) => match Retention::parse(r.get_ref()) {
                    Ok(r) => Some(r),
                    Err(msg) => {
                        p.at(r.span(), msg);
                        None
                    }
                },
            };
            let needs_consent = basis == Some(LegalBasis::Consent);
            let banner = rp.banner.as_ref().is_some_and(|b| *b.get_ref());
            if let Some(b) = rp.banner.as_ref().filter(|b| *b.get_ref() && !needs_consent) {
                p.at(
                    b.span(),
                    format!("purpose `{id}` is in the cookie banner but its legal basis is not consent"),
                );
            }
            let has_signals = !rp.segment_categories.is_empty()
                || !rp.rudderstack_ids.is_empty()
                || !rp.tcf_purposes.is_empty()
                || rp.gpc_refuses;
            if has_signals && basis.is_some() && !needs_consent {
                p.at(
                    rp.id.span(),
                    format!("purpose `{id}` maps consent signals but its legal basis is not consent"),
                );
            }
            let mut tcf = Vec::new();
            for t in &rp.tcf_purposes {
                match u8::try_from(*t.get_ref()) {
                    Ok(n) if (1..=11).contains(&n) => tcf.push(n),
                    _ => p.at(
                        t.span(),
                        format!("TCF purpose {} does not exist (1 to 11)", t.get_ref()),
                    ),
                }
            }
            let channel = rp.channel.as_ref().and_then(|c| {
                let known = ["email", "sms", "phone", "postal"].contains(&c.get_ref().as_str());
                if !known {
                    p.at(
                        c.span(),
                        format!(
                            "unknown channel `{}`: expected email, sms, phone or postal",
                            c.get_ref()
                        ),
                    );
                }
                known.then(|| c.get_ref().clone())
            });
            let name = rp.name.clone().unwrap_or_else(|| id.clone());
            let purpose = basis.zip(retention).map(|(legal_basis, retention)| Purpose {
                id: id.clone(),
                name_en: rp.name_en.clone().unwrap_or_else(|| name.clone()),
                description_en: rp
                    .description_en
                    .clone()
                    .unwrap_or_else(|| rp.description.get_ref().clone()),
                name,
                description: rp.description.get_ref().clone(),
                legal_basis,
                retention,
                recipients: rp.recipients.clone(),
                banner,
                collects: rp.collects.clone(),
                collects_en: rp.collects_en.clone().or_else(|| rp.collects.clone()),
                channel,
                signals: SignalMapping {
                    segment: rp.segment_categories.clone(),
                    rudderstack: rp.rudderstack_ids.clone(),
                    tcf,
                    gpc_refuses: rp.gpc_refuses,
                },
                subjects: rp.subjects.clone(),
                transfers: rp.transfers.clone(),
            });
            match purposes.entry(id) {
                std::collections::btree_map::Entry::Occupied(e) => {
                    p.at(rp.id.span(), format!("purpose `{}` is declared twice", e.key()));
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    if let Some(purpose) = purpose {
                        e.insert(purpose);
                    }
                }
            }
        }
        if raw.purposes.is_empty() {
            p.found.push(CatalogError {
                line: 0,
                column: 0,
                message: "the catalog declares no purpose: nothing could be collected".into(),
            });
        }
        // Cross-references are checked against every declared id, even one whose own
        // declaration had a problem, so one mistake is reported once.
        let purpose_ids: BTreeSet<String> = raw.purposes.iter().map(|r| r.id.get_ref().clone()).collect();

        let mut touchpoints = BTreeMap::new();
        for rt in &raw.touchpoints {
            let id = rt.id.get_ref().clone();
            let phase = parse_enum::<Phase>(&mut p, &rt.phase, "phase", "discovery, purchase or post_purchase");
            if touchpoints.contains_key(&id) {
                p.at(rt.id.span(), format!("touchpoint `{id}` is declared twice"));
            } else if let Some(phase) = phase {
                touchpoints.insert(
                    id.clone(),
                    Touchpoint {
                        id,
                        phase,
                        channel: rt.channel.clone(),
                        description: rt.description.clone(),
                    },
                );
            }
        }
        let touchpoint_ids: BTreeSet<String> = raw.touchpoints.iter().map(|r| r.id.get_ref().clone()).collect();
        let check_touchpoints = |p: &mut Problems<'_>, refs: &[Spanned<String>], owner: &str| {
            refs.iter()
                .filter(|t| {
                    let known = touchpoint_ids.contains(t.get_ref());
                    if !known {
                        p.at(t.span(), format!("{owner} names unknown touchpoint `{}`", t.get_ref()));
                    }
                    known
                })
                .map(|t| t.get_ref().clone())
                .collect::<Vec<_>>()
        };

        let mut traits = BTreeMap::new();
        for rt in &raw.traits {
            let name = rt.name.get_ref().clone();
            let owner = format!("trait `{name}`");
            let value_type = parse_enum::<ValueType>(&mut p, &rt.value_type, "type", VALUE_TYPES);
            let tier = parse_enum::<Tier>(&mut p, &rt.tier, "tier", "identity, business, history or personal");
            let trait_purposes = check_purpose_refs(&mut p, &rt.purposes, &purpose_ids, &owner);
            let retention = rt.retention.as_ref().and_then(|r| match Retention::parse(r.get_ref()) {
                Ok(r) => Some(r),
                Err(msg) => {
                    p.at(r.span(), msg);
                    None
                }
            });
            let category = rt.category.get_ref().clone();
            let flagged = rt.special_category.as_ref().is_some_and(|f| *f.get_ref());
            let is_special = SPECIAL_CATEGORIES.contains(&category.as_str());
            let special_basis = rt.special_basis.as_ref().and_then(|b| {
                parse_enum::<SpecialBasis>(
                    &mut p,
                    b,
                    "special-category basis",
                    "explicit_consent, manifestly_public or legal_claims",
                )
            });
            if is_special && !flagged {
                p.at(
                    rt.category.span(),
                    format!(
                        "{owner} is special-category data (`{category}`, GDPR Art. 9): declare it with `special_category = true` and a `special_basis`"
                    ),
                );
            }
            if (is_special || flagged) && rt.special_basis.is_none() {
                p.at(
                    rt.name.span(),
                    format!("{owner} is special-category data: state its `special_basis` (Art. 9(2))"),
                );
            }
            if flagged && !is_special {
                p.at(
                    rt.category.span(),
                    format!(
                        "{owner} is flagged special_category but its category `{category}` is not one of the Art. 9 categories ({})",
                        SPECIAL_CATEGORIES.join(", ")
                    ),
                );
            }
            if traits.contains_key(&name) {
                p.at(rt.name.span(), format!("{owner} is declared twice"));
            } else if let (Some(value_type), Some(tier)) = (value_type, tier) {
                traits.insert(
                    name.clone(),
                    TraitDef {
                        name,
                        value_type,
                        tier,
                        category,
                        purposes: trait_purposes,
                        retention,
                        special_basis: if is_special { special_basis } else { None },
                        identifier: rt.identifier,
                    },
                );
            }
        }

        let mut events = BTreeMap::new();
        for re in &raw.events {
            let name = re.name.get_ref().clone();
            let owner = format!("event `{name}`");
            let event_purposes = check_purpose_refs(&mut p, &re.purposes, &purpose_ids, &owner);
            let event_touchpoints = check_touchpoints(&mut p, &re.touchpoints, &owner);
            let mut properties = BTreeMap::new();
            for (prop, ty) in &re.properties {
                if let Some(t) = parse_enum::<ValueType>(&mut p, ty, "type", VALUE_TYPES) {
                    properties.insert(prop.clone(), t);
                }
            }
            if events.contains_key(&name) {
                p.at(re.name.span(), format!("{owner} is declared twice"));
            } else {
                events.insert(
                    name.clone(),
                    EventDef {
                        name,
                        purposes: event_purposes,
                        touchpoints: event_touchpoints,
                        properties,
                        subject_initiated: re.subject_initiated.unwrap_or(true),
                    },
                );
            }
        }

        let mut page_properties = BTreeMap::new();
        for (prop, ty) in &raw.page_properties {
            if let Some(t) = parse_enum::<ValueType>(&mut p, ty, "type", VALUE_TYPES) {
                page_properties.insert(prop.clone(), t);
            }
        }

        let page_purposes = match &raw.page_purposes {
            Some(refs) => check_purpose_refs(&mut p, refs, &purpose_ids, "page_purposes"),
            None if !raw.page_properties.is_empty() => {
                p.found.push(CatalogError {
                    line: 0,
                    column: 0,
                    message: "page_properties are declared but page_purposes is not: page views must serve a purpose"
                        .into(),
                });
                Vec::new()
            }
            None => Vec::new(),
        };

        let mut consent = ConsentSettings::default();
        if let Some(rc) = &raw.consent {
            consent.notice_version = rc.notice_version.get_ref().clone();
            if consent.notice_version.trim().is_empty() {
                p.at(rc.notice_version.span(), "the notice version cannot be empty".into());
            }
            for (field, target) in [
                (&rc.validity, &mut consent.validity),
                (&rc.link_validity, &mut consent.link_validity),
            ] {
                if let Some(v) = field {
                    match Retention::parse(v.get_ref()) {
                        Ok(r) => *target = r,
                        Err(msg) => p.at(v.span(), msg),
                    }
                }
            }
        }

        let mut unify = UnifySettings::default();
        if let Some(ru) = &raw.unify {
            let g = &mut unify.guards;
            g.blocked
                .extend(ru.blocked_values.iter().map(|v| v.trim().to_lowercase()));
            for (kind, values) in &ru.blocked {
                // Compared with normalised identifiers: normalise the list the same way.
                let normalised = values.iter().map(|v| {
                    crate::unify::identifier::Identifier::parse(kind, v)
                        .map_or_else(|| v.clone(), |id| id.value().to_owned())
                });
                g.blocked_by_kind.entry(kind.clone()).or_default().extend(normalised);
            }
            g.limits.extend(ru.limits.clone());
            if let Some(n) = ru.default_limit {
                g.default_limit = n;
            }
            if let Some(p) = &ru.priority {
                g.priority = p.clone();
            }
            if let Some(n) = ru.max_identifiers {
                g.max_identifiers = n;
            }
            if let Some(order) = &ru.source_priority {
                let kinds: Vec<crate::source::SourceKind> = order
                    .iter()
                    .filter_map(|k| {
                        parse_enum(&mut p, k, "source kind", "web, server, form, account, store or support")
                    })
                    .collect();
                unify.survivorship.source_priority = kinds;
            }
        }

        let mut retention = PeopleRetention::default();
        if let Some(rr) = &raw.retention {
            for (field, target) in [
                (&rr.prospects, &mut retention.prospects),
                (&rr.customers, &mut retention.customers),
            ] {
                if let Some(v) = field {
                    match Retention::parse(v.get_ref()) {
                        Ok(r) => *target = r,
                        Err(msg) => p.at(v.span(), msg),
                    }
                }
            }
        }

        let mut sources = BTreeMap::new();
        for rs in &raw.sources {
            let name = rs.name.get_ref().clone();
            if crate::source::SourceName::parse(&name).is_err() {
                p.at(
                    rs.name.span(),
                    format!("source name `{name}`: lowercase letters, digits, `-` and `_` only"),
                );
            }
            let kind = parse_enum::<crate::source::SourceKind>(
                &mut p,
                &rs.kind,
                "source kind",
                "web, server, form, account, store or support",
            );
            let tps = check_touchpoints(&mut p, &rs.touchpoints, &format!("source `{name}`"));
            if let Some(kind) = kind {
                sources.insert(
                    name.clone(),
                    SourceDecl {
                        name,
                        kind,
                        description: rs.description.clone(),
                        touchpoints: tps,
                    },
                );
            }
        }

        if p.found.is_empty() {
            Ok(Catalog {
                controller: raw.controller,
                purposes,
                traits,
                events,
                page_properties,
                page_purposes,
                consent,
                touchpoints,
                sources,
                unify,
                retention,
            })
        } else {
            p.found.sort_by_key(|e| (e.line, e.column));
            Err(p.found)
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_is_valid() {
        let c = Catalog::builtin();
        assert!(c.purposes.contains_key("marketing_email"));
        assert!(c.events.contains_key("Order Completed"));
        assert!(c.traits.contains_key("email"));
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let text = r#"
[[purposes]]
id = "analytics"
description = "Mesure d'audience"
legal_basis = "consentement"
retention = "25 months"

[[purposes]]
id = "orders"
description = "Commandes"
legal_basis = "contract"

[[traits]]
name = "email"
type = "mail"
tier = "identity"
category = "contact"
purposes = ["marketing"]

[[traits]]
name = "allergies"
type = "string"
tier = "personal"
category = "health"
purposes = ["orders"]
"#;
        let errors = Catalog::from_toml(text).unwrap_err();
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 6, "{rendered:#?}");
        assert!(
            rendered[0].starts_with("5:15: unknown legal basis `consentement`"),
            "{rendered:#?}"
        );
        assert!(
            rendered[1].starts_with("9:6: purpose `orders` has no retention"),
            "{rendered:#?}"
        );
        assert!(rendered[2].starts_with("15:8: unknown type `mail`"), "{rendered:#?}");
        assert!(rendered[3].contains("unknown purpose `marketing`"), "{rendered:#?}");
        assert!(rendered[4].contains("special_basis"), "{rendered:#?}");
        assert!(rendered[5].contains("special-category data (`health`"), "{rendered:#?}");
    }

    #[test]
    fn special_category_needs_flag_and_basis() {
        let text = r#"
[[purposes]]
id = "care"
description = "Adapter le service"
legal_basis = "consent"
retention = "1 year"

[[traits]]
name = "hearing_aid"
type = "boolean"
tier = "personal"
category = "health"
purposes = ["care"]
special_category = true
special_basis = "explicit_consent"
"#;
        let c = Catalog::from_toml(text).unwrap();
        assert_eq!(
            c.traits["hearing_aid"].special_basis,
            Some(SpecialBasis::ExplicitConsent)
        );
    }

    #[test]
    fn retention_parses_calendar_units() {
        assert_eq!(
            Retention::parse("1 year 6 months").unwrap(),
            Retention {
                years: 1,
                months: 6,
                days: 0
            }
        );
        assert_eq!(Retention::parse("25 months").unwrap().to_string(), "25 months");
        assert!(Retention::parse("3 decades").is_err());
        assert!(Retention::parse("0 days").is_err());
        assert!(Retention::parse("years").is_err());
    }

    #[test]
    fn value_types() {
        use serde_json::json;
        assert!(ValueType::Email.accepts(&json!("ana@example.org")));
        assert!(!ValueType::Email.accepts(&json!("ana@")));
        assert!(ValueType::Date.accepts(&json!("1990-02-28")));
        assert!(!ValueType::Date.accepts(&json!("1990-02-30")));
        assert!(ValueType::Phone.accepts(&json!("+33 6 12 34 56 78")));
        assert!(!ValueType::Integer.accepts(&json!(1.5)));
        assert!(ValueType::String.accepts(&json!(null)));
    }
}
