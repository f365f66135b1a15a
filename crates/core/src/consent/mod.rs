//! Consent: the append-only ledger of decisions with their proof, the state derived from it,
//! the signals other tools send, and the rule that decides whether data may be used.
//!
//! # Design
//!
//! Every decision — granted, denied, withdrawn — about one subject and one purpose is a
//! [`Decision`], appended to the ledger with its proof: server time, how it was given, the
//! exact notice shown (version and hash of its text), source, touchpoint, and keyed hashes of
//! the IP address and user agent. Nothing is ever updated in place: the current state is the
//! latest decision by server time (the ledger position breaks ties), so two concurrent requests
//! end with the last one by the clock, and the history keeps both.
//!
//! A subject is any identifier: anonymous id, user id, email or phone. When a message carries
//! several, the *effective* state of a purpose is the latest explicit decision across all of
//! them, so a withdrawal anywhere wins over an older grant and merging identifiers can never
//! widen what a person agreed to.
//!
//! Consent is only one of the legal bases of GDPR Art. 6: data kept for a purpose based on a
//! contract, a legal obligation or a legitimate interest needs no consent; [`has_basis`] is the
//! single place that says so.

pub mod enforce;
pub mod link;
pub mod receipt;
pub mod signals;
pub mod tcf;

use crate::catalog::{LegalBasis, Purpose};
use crate::error::{Error, ErrorCode};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The kinds of identifier a subject can be known by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    /// Segment's `userId`.
    UserId,
    /// Segment's `anonymousId` (a browser or device).
    AnonymousId,
    /// An email address, lowercased.
    Email,
    /// A phone number, digits and a leading `+` only.
    Phone,
}

impl IdKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserId => "user_id",
            Self::AnonymousId => "anonymous_id",
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }

    /// Parses a wire name (also Segment's camelCase forms).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user_id" | "userId" => Some(Self::UserId),
            "anonymous_id" | "anonymousId" => Some(Self::AnonymousId),
            "email" => Some(Self::Email),
            "phone" => Some(Self::Phone),
            _ => None,
        }
    }
}

/// One identifier of a person, normalised. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject {
    kind: IdKind,
    value: String,
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({}, [redacted])", self.kind.as_str())
    }
}

impl Subject {
    /// Parses and normalises an identifier of `kind`.
    pub fn parse(kind: IdKind, value: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::new(ErrorCode::InvalidField, format!("subject {}: {why}", kind.as_str()));
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(invalid("the value is empty"));
        }
        if trimmed.len() > 1024 {
            return Err(invalid("the value is longer than 1024 bytes"));
        }
        let value = match kind {
            IdKind::Email => {
                let lower = trimmed.to_lowercase();
                if !crate::catalog::ValueType::Email.accepts(&serde_json::Value::String(lower.clone())) {
                    return Err(invalid("not an email address"));
                }
                lower
            }
            IdKind::Phone => normalise_phone(trimmed).ok_or_else(|| invalid("not a phone number"))?,
            IdKind::UserId | IdKind::AnonymousId => trimmed.to_owned(),
        };
        Ok(Self { kind, value })
    }

    /// Parses the stored `kind:value` key.
    pub fn from_key(key: &str) -> Option<Self> {
        let (kind, value) = key.split_once(':')?;
        Some(Self {
            kind: IdKind::parse(kind)?,
            value: value.to_owned(),
        })
    }

    /// The kind of identifier.
    pub fn kind(&self) -> IdKind {
        self.kind
    }

    /// The normalised value (personal data: do not log).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The stored key, `kind:value`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.value)
    }

    /// The identifiers a normalised message carries: user id, anonymous id, and the email and
    /// phone of its traits (or context traits).
    pub fn of_message(body: &serde_json::Value) -> Vec<Subject> {
        let mut out = Vec::new();
        let mut push = |kind, v: Option<&serde_json::Value>| {
            if let Some(s) = v.and_then(serde_json::Value::as_str)
                && let Ok(subject) = Subject::parse(kind, s)
                && !out.contains(&subject)
            {
                out.push(subject);
            }
        };
        push(IdKind::UserId, body.get("userId"));
        push(IdKind::AnonymousId, body.get("anonymousId"));
        for traits in [
            body.get("traits"),
            crate::collect::at_path(body, &["context", "traits"]),
        ]
        .into_iter()
        .flatten()
        {
            push(IdKind::Email, traits.get("email"));
            push(IdKind::Phone, traits.get("phone"));
        }
        out
    }
}

/// A phone number in E.164 form (`+33612345678`), read as French when it has no country
/// code, so that `06 12 34 56 78` and `+33 6 12 34 56 78` are one identifier.
pub fn normalise_phone(text: &str) -> Option<String> {
    if text
        .chars()
        .any(|c| !(c.is_ascii_digit() || matches!(c, '+' | ' ' | '.' | '-' | '(' | ')')))
    {
        return None;
    }
    let number = phonenumber::parse(Some(phonenumber::country::Id::FR), text).ok()?;
    phonenumber::is_valid(&number).then(|| number.format().mode(phonenumber::Mode::E164).to_string())
}

/// A decision about one purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The subject agreed.
    Granted,
    /// The subject refused (or never agreed, when asked).
    Denied,
    /// The subject took back an earlier consent.
    Withdrawn,
    /// The subject objected to the processing (GDPR Art. 21): it stops, and for direct
    /// marketing for good unless they opt in again themself.
    Objected,
    /// The processing is restricted (GDPR Art. 18): the data is kept but not used.
    Restricted,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Denied => "denied",
            Self::Withdrawn => "withdrawn",
            Self::Objected => "objected",
            Self::Restricted => "restricted",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Granted,
            Self::Denied,
            Self::Withdrawn,
            Self::Objected,
            Self::Restricted,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// How a decision was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The cookie banner.
    Banner,
    /// A form (newsletter sign-up, contest, questionnaire, account creation).
    Form,
    /// The preference centre.
    PreferenceCentre,
    /// The API, on the business's behalf (e.g. a recorded phone call).
    Api,
    /// A CSV import of consents collected elsewhere.
    Import,
    /// An IAB TCF TC string.
    TcString,
    /// A Global Privacy Control signal: only ever a refusal.
    Gpc,
    /// A consent-manager signal in a message (Segment's or RudderStack's context).
    Signal,
    /// A one-click unsubscribe from a message (RFC 8058).
    Unsubscribe,
    /// A data-subject request: objection (Art. 21) or restriction (Art. 18) and their lifting.
    Request,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 10] = [
        Self::Banner,
        Self::Form,
        Self::PreferenceCentre,
        Self::Api,
        Self::Import,
        Self::TcString,
        Self::Gpc,
        Self::Signal,
        Self::Unsubscribe,
        Self::Request,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Banner => "banner",
            Self::Form => "form",
            Self::PreferenceCentre => "preference_centre",
            Self::Api => "api",
            Self::Import => "import",
            Self::TcString => "tc_string",
            Self::Gpc => "gpc",
            Self::Signal => "signal",
            Self::Unsubscribe => "unsubscribe",
            Self::Request => "request",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The exact notice a person saw: its version and the SHA-256 of its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Version label.
    pub version: String,
    /// Hex SHA-256 of the notice's text.
    pub hash: String,
}

/// One decision to append to the ledger, with its proof.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Who.
    pub subject: Subject,
    /// Which purpose (a catalog id).
    pub purpose: String,
    /// What.
    pub status: Status,
    /// How.
    pub method: Method,
    /// Server time.
    pub recorded_at: Timestamp,
    /// The notice shown, when there was one.
    pub notice: Option<Notice>,
    /// The source it came through.
    pub source_id: Option<i64>,
    /// The journey touchpoint.
    pub touchpoint: Option<String>,
    /// Keyed hash of the IP address.
    pub ip_hash: Option<String>,
    /// Keyed hash of the user agent.
    pub ua_hash: Option<String>,
    /// Anything else that proves it (message id, TC string, categories sent…).
    pub proof: serde_json::Value,
}

/// A decision as the ledger holds it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LedgerEntry {
    /// Position in the ledger.
    pub seq: i64,
    /// The subject's kind.
    pub subject_type: IdKind,
    /// The subject's value (personal data).
    pub subject_value: String,
    /// Purpose id.
    pub purpose: String,
    /// Decision.
    pub status: Status,
    /// How.
    pub method: Method,
    /// Server time.
    pub recorded_at: Timestamp,
    /// Notice version shown.
    pub notice_version: Option<String>,
    /// Hash of the notice text.
    pub notice_hash: Option<String>,
    /// Source id.
    pub source_id: Option<i64>,
    /// Touchpoint.
    pub touchpoint: Option<String>,
    /// Keyed hash of the IP address.
    pub ip_hash: Option<String>,
    /// Keyed hash of the user agent.
    pub ua_hash: Option<String>,
    /// Extra proof.
    pub proof: serde_json::Value,
}

/// The current state of one purpose for one subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StateEntry {
    /// Latest decision.
    pub status: Status,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// Its ledger position (breaks ties between equal times).
    pub seq: i64,
}

impl StateEntry {
    /// Whether this entry is newer than `other`.
    pub fn newer_than(&self, other: &StateEntry) -> bool {
        (self.recorded_at, self.seq) > (other.recorded_at, other.seq)
    }
}

/// The current states of one subject, purpose by purpose.
pub type SubjectStates = HashMap<String, StateEntry, foldhash::fast::RandomState>;

/// Current states of several subjects, as read from the store: subject key → purpose → state.
/// A subject's states are shared with whoever read them (a store keeping them in memory) and
/// copied only when the view changes them.
#[derive(Clone, Default)]
pub struct ConsentView {
    states: HashMap<String, Arc<SubjectStates>, foldhash::fast::RandomState>,
}

/// Says how many subjects, never their keys: they are identifiers.
impl fmt::Debug for ConsentView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConsentView({} subjects)", self.states.len())
    }
}

impl ConsentView {
    /// Adds a stored state, unless the view holds a newer one. Copies the key and the purpose
    /// only when they are new to the view: a store reads hundreds of rows for one request.
    pub fn insert(&mut self, subject_key: &str, purpose: &str, entry: StateEntry) {
        let Some(slot) = self.states.get_mut(subject_key) else {
            let mut slot = SubjectStates::default();
            slot.insert(purpose.to_owned(), entry);
            self.states.insert(subject_key.to_owned(), Arc::new(slot));
            return;
        };
        match slot.get(purpose) {
            Some(existing) if !entry.newer_than(existing) => {}
            _ => {
                Arc::make_mut(slot).insert(purpose.to_owned(), entry);
            }
        }
    }

    /// Adds all the states of one subject at once, sharing them when the view knew none.
    pub fn insert_subject(&mut self, subject_key: &str, states: &Arc<SubjectStates>) {
        if self.states.contains_key(subject_key) {
            for (purpose, entry) in states.iter() {
                self.insert(subject_key, purpose, *entry);
            }
        } else {
            self.states.insert(subject_key.to_owned(), Arc::clone(states));
        }
    }

    /// Adds every state of another view.
    pub fn extend(&mut self, other: ConsentView) {
        for (subject, states) in other.states {
            self.insert_subject(&subject, &states);
        }
    }

    /// The state of a purpose for one subject.
    pub fn get(&self, subject: &Subject, purpose: &str) -> Option<StateEntry> {
        self.get_by_key(&subject.key(), purpose)
    }

    /// [`ConsentView::get`] for a subject given by its key ([`Subject::key`]).
    pub fn get_by_key(&self, subject_key: &str, purpose: &str) -> Option<StateEntry> {
        self.states.get(subject_key).and_then(|m| m.get(purpose)).copied()
    }

    /// The effective state of a purpose across several identifiers of one person: the latest
    /// explicit decision among them.
    pub fn effective(&self, subjects: &[Subject], purpose: &str) -> Option<StateEntry> {
        let keys: Vec<String> = subjects.iter().map(Subject::key).collect();
        self.effective_by_keys(&keys, purpose)
    }

    /// [`ConsentView::effective`] for subjects given by their keys ([`Subject::key`]), for a
    /// caller that asks about many purposes of one person.
    pub fn effective_by_keys(&self, subject_keys: &[String], purpose: &str) -> Option<StateEntry> {
        subject_keys
            .iter()
            .filter_map(|k| self.get_by_key(k, purpose))
            .reduce(|a, b| if b.newer_than(&a) { b } else { a })
    }
}

/// Whether data may be used for `purpose` given the subject's effective state for it: nothing
/// is used while restricted (Art. 18); purposes based on consent need a standing grant; a
/// legitimate interest yields to an objection (Art. 21); a contract or a legal obligation needs
/// nothing more.
pub fn has_basis(purpose: &Purpose, state: Option<StateEntry>) -> bool {
    let status = state.map(|s| s.status);
    if status == Some(Status::Restricted) {
        return false;
    }
    match purpose.legal_basis {
        LegalBasis::Consent => status == Some(Status::Granted),
        LegalBasis::LegitimateInterest => status != Some(Status::Objected),
        LegalBasis::Contract | LegalBasis::LegalObligation => true,
    }
}

/// The purposes an objection to direct marketing covers (Art. 21(2–3)): every marketing channel,
/// targeted advertising, and the profiling related to it (personalised recommendations).
pub fn direct_marketing_purposes(catalog: &crate::catalog::Catalog) -> Vec<String> {
    catalog
        .purposes
        .values()
        .filter(|p| p.channel.is_some() || p.id == "advertising" || p.id == "personalisation")
        .map(|p| p.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn subjects_are_normalised_and_never_printed() {
        let e = Subject::parse(IdKind::Email, "  Ana.Martin@Example.ORG ").unwrap();
        assert_eq!(e.key(), "email:ana.martin@example.org");
        assert_eq!(Subject::from_key(&e.key()), Some(e.clone()));
        assert!(!format!("{e:?}").contains("ana"));
        let p = Subject::parse(IdKind::Phone, "+33 6 12-34.56 78").unwrap();
        assert_eq!(p.value(), "+33612345678");
        assert_eq!(Subject::parse(IdKind::Phone, "06 12 34 56 78").unwrap(), p);
        assert_eq!(
            Subject::parse(IdKind::Phone, "+1 415 555 0132").unwrap().value(),
            "+14155550132"
        );
        assert!(Subject::parse(IdKind::Phone, "06 12 ab").is_err());
        assert!(Subject::parse(IdKind::Phone, "123").is_err());
        assert!(Subject::parse(IdKind::Email, "nope").is_err());
        assert!(Subject::parse(IdKind::UserId, "  ").is_err());
    }

    #[test]
    fn the_latest_decision_across_identifiers_wins() {
        let anon = Subject::parse(IdKind::AnonymousId, "a1").unwrap();
        let email = Subject::parse(IdKind::Email, "ana@example.org").unwrap();
        let mut view = ConsentView::default();
        let grant = StateEntry {
            status: Status::Granted,
            recorded_at: at("2026-01-01T00:00:00Z"),
            seq: 1,
        };
        let withdraw = StateEntry {
            status: Status::Withdrawn,
            recorded_at: at("2026-02-01T00:00:00Z"),
            seq: 2,
        };
        view.insert(&anon.key(), "analytics", grant);
        view.insert(&email.key(), "analytics", withdraw);
        let both = [anon.clone(), email.clone()];
        assert_eq!(view.effective(&both, "analytics").unwrap().status, Status::Withdrawn);
        // An older entry never overrides a newer one, whatever the order they are read in.
        view.insert(&email.key(), "analytics", grant);
        assert_eq!(view.effective(&both, "analytics").unwrap().status, Status::Withdrawn);
        let catalog = Catalog::builtin();
        assert!(!has_basis(
            &catalog.purposes["analytics"],
            view.effective(&both, "analytics")
        ));
        assert!(has_basis(
            &catalog.purposes["analytics"],
            view.effective(&[anon], "analytics")
        ));
        assert!(has_basis(&catalog.purposes["service"], None));
        assert!(!has_basis(&catalog.purposes["marketing_email"], None));
    }

    #[test]
    fn message_identifiers_include_trait_emails() {
        let body = serde_json::json!({"userId": "u1", "anonymousId": "a1",
            "context": {"traits": {"email": "Ana@Example.org", "phone": "+33 6 11 22 33 44"}}});
        let keys: Vec<String> = Subject::of_message(&body).iter().map(Subject::key).collect();
        assert_eq!(
            keys,
            [
                "user_id:u1",
                "anonymous_id:a1",
                "email:ana@example.org",
                "phone:+33611223344"
            ]
        );
    }
}
