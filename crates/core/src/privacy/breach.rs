//! The breach register (GDPR Art. 33 and 34): what happened, whom it touched, the 72-hour
//! clock, the notification to the authority and the letters to the people affected.
//!
//! # Design
//!
//! A breach is declared with its *scope*: the traits (or whole data categories of the catalog),
//! the sources and the window of reception it concerns. The scope is resolved against the
//! catalog here, so the store only ever receives trait names that exist; the store then counts,
//! from the event log, whose data of those kinds from those sources was received in the window
//! ([`Affected`]). The figures are the store's, never typed in by hand, so the notification says
//! what Confiance actually held.
//!
//! The 72 hours of Art. 33(1) run from the moment the business *became aware*, not from the
//! declaration in Confiance, and stop when the authority is notified. [`Breach::clock`] gives the
//! deadline and a warning level (48, 24 and 12 hours left, overdue) for a given "now", so the
//! server's injectable clock drives it and tests can walk through it. The last day is
//! [`Warning::is_urgent`]: the server pushes it (a log line, the register, the compliance check)
//! rather than waiting for someone to look.
//!
//! The notification is drafted in French (the CNIL's language) from the record and the
//! computed figures, with every item of Art. 33(3); Art. 33(4) lets it be completed in phases,
//! so each update is kept with its phase and the draft shows the latest wording. The Art. 34
//! decision (high risk or not, and an Art. 34(3) exemption such as encryption) says whether the
//! people must be told; the letters are plain language, in French and English. Telling people
//! of a breach is a legal obligation, so it is never gated by marketing consent. Every breach
//! stays in the register, notified or not (Art. 33(5)).

use crate::catalog::Catalog;
use crate::error::{Error, ErrorCode};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How long the controller has to notify the authority after becoming aware (Art. 33(1)).
pub const NOTIFY_WITHIN: SignedDuration = SignedDuration::from_hours(72);
/// Hours left when the clock first warns.
pub const FIRST_WARNING_HOURS: i64 = 48;
/// Hours left when the clock warns again, urgently.
pub const LAST_WARNING_HOURS: i64 = 24;
/// Hours left when the clock warns for the last time before the deadline.
pub const FINAL_WARNING_HOURS: i64 = 12;

/// What a breach concerns: kinds of data, where they came from, when they were received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Trait names of the catalog.
    #[serde(default)]
    pub traits: Vec<String>,
    /// Data categories of the catalog (`contact`, `identity`, …): every trait in them.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Source names; empty means every source.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Start of the window (inclusive), on the reception time; none means since the beginning.
    pub from: Option<Timestamp>,
    /// End of the window (exclusive).
    pub to: Timestamp,
}

impl Scope {
    /// The trait names the scope covers, checked against `catalog`: the traits named plus every
    /// trait of the categories named, sorted. Every unknown name is reported at once.
    pub fn trait_names(&self, catalog: &Catalog) -> Result<Vec<String>, Error> {
        let mut names = BTreeSet::new();
        let mut unknown = Vec::new();
        for t in &self.traits {
            if catalog.traits.contains_key(t) {
                names.insert(t.clone());
            } else {
                unknown.push(format!("trait `{t}`"));
            }
        }
        for c in &self.categories {
            let before = names.len();
            let mut found = false;
            for def in catalog.traits.values().filter(|d| &d.category == c) {
                found = true;
                names.insert(def.name.clone());
            }
            if !found && names.len() == before {
                unknown.push(format!("category `{c}`"));
            }
        }
        if !unknown.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidField,
                format!("the catalog has no {}", unknown.join(", ")),
            ));
        }
        if names.is_empty() {
            return Err(Error::new(
                ErrorCode::MissingField,
                "a breach names at least one trait or data category",
            ));
        }
        if self.from.is_some_and(|from| from >= self.to) {
            return Err(Error::new(
                ErrorCode::InvalidField,
                "the window's `from` must be before its `to`",
            ));
        }
        Ok(names.into_iter().collect())
    }

    /// The data categories covered, for the notification.
    pub fn categories_of(&self, catalog: &Catalog) -> Vec<String> {
        let names = self.trait_names(catalog).unwrap_or_default();
        let set: BTreeSet<String> = names
            .iter()
            .filter_map(|n| catalog.traits.get(n).map(|d| d.category.clone()))
            .collect();
        set.into_iter().collect()
    }
}

/// Whom a breach touched, as computed from the event log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affected {
    /// How many people (profiles).
    pub subjects: u64,
    /// How many records (events carrying data in scope).
    pub records: u64,
    /// Records whose sender is not yet resolved into a profile (counted, not attributed).
    pub unresolved_records: u64,
    /// When it was computed.
    pub computed_at: Timestamp,
}

/// The phases of a notification given in several steps (Art. 33(4)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The first notification, possibly incomplete.
    Initial,
    /// Complements as the investigation goes on.
    Complementary,
    /// The last one: the investigation is closed.
    Final,
}

impl Phase {
    /// French name, as the CNIL's form has it.
    pub fn fr(self) -> &'static str {
        match self {
            Self::Initial => "notification initiale",
            Self::Complementary => "notification complémentaire",
            Self::Final => "notification finale",
        }
    }
}

/// The wording of what happened, its likely consequences and the measures, in one language.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wording {
    /// What happened (nature of the breach).
    pub nature: String,
    /// Likely consequences for the people.
    #[serde(default)]
    pub consequences: String,
    /// Measures taken or proposed, including to mitigate the effects.
    #[serde(default)]
    pub measures: String,
}

/// One update of the record (Art. 33(4)), kept in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The phase it belongs to.
    pub phase: Phase,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: String,
    /// What was said or learnt.
    pub note: String,
}

/// The Art. 34(3) cases where the people need not be told despite a high risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exemption {
    /// (a) the data was unintelligible to anyone not authorised (encrypted).
    Encrypted,
    /// (b) later measures removed the high risk.
    RiskRemoved,
    /// (c) telling each person would be disproportionate: a public communication instead.
    Disproportionate,
}

/// The Art. 34 decision: must the people be told?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the breach is likely to result in a high risk to people's rights and freedoms.
    pub high_risk: bool,
    /// An exemption of Art. 34(3), if one applies.
    pub exemption: Option<Exemption>,
    /// Why.
    pub reasons: String,
    /// Who decided.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

impl Decision {
    /// Whether the people must be told individually.
    pub fn people_must_be_told(&self) -> bool {
        self.high_risk && self.exemption.is_none()
    }
}

/// A breach, as the register keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    /// Id in the register.
    pub id: i64,
    /// When the business became aware of it: the 72 hours run from here.
    pub aware_at: Timestamp,
    /// When it was entered in Confiance.
    pub declared_at: Timestamp,
    /// Who entered it.
    pub declared_by: String,
    /// What it concerns.
    pub scope: Scope,
    /// The French wording (for the authority and the French letter).
    pub wording: Wording,
    /// The English wording of the letter, when given (the French one otherwise).
    pub wording_en: Option<Wording>,
    /// The current phase of the notification.
    pub phase: Phase,
    /// Updates in order.
    pub updates: Vec<Update>,
    /// Whom it touched, as last computed.
    pub affected: Affected,
    /// When the authority was notified; stops the clock.
    pub authority_notified_at: Option<Timestamp>,
    /// Why the notification is later than 72 hours (Art. 33(1)), when it is.
    pub delay_reasons: Option<String>,
    /// The Art. 34 decision, once taken.
    pub decision: Option<Decision>,
}

/// Where the 72-hour clock stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Warning {
    /// More than 48 hours left.
    Running,
    /// 48 hours or less left.
    FortyEightHours,
    /// 24 hours or less left.
    TwentyFourHours,
    /// 12 hours or less left.
    TwelveHours,
    /// Past the 72 hours, not notified.
    Overdue,
    /// Notified in time.
    Notified,
    /// Notified after the 72 hours (reasons are owed).
    NotifiedLate,
}

impl Warning {
    /// Whether the authority is still to be told and less than a day is left, or none: the
    /// levels the server pushes instead of waiting to be asked.
    pub fn is_urgent(self) -> bool {
        matches!(self, Warning::TwentyFourHours | Warning::TwelveHours | Warning::Overdue)
    }

    /// The snake_case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Warning::Running => "running",
            Warning::FortyEightHours => "forty_eight_hours",
            Warning::TwentyFourHours => "twenty_four_hours",
            Warning::TwelveHours => "twelve_hours",
            Warning::Overdue => "overdue",
            Warning::Notified => "notified",
            Warning::NotifiedLate => "notified_late",
        }
    }
}

/// The clock of a breach at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// When the 72 hours end.
    pub deadline: Timestamp,
    /// Seconds left (negative once overdue); none once notified.
    pub seconds_left: Option<i64>,
    /// The warning level.
    pub warning: Warning,
}

impl Clock {
    /// The clock of a breach the business became aware of at `aware_at`, notified to the
    /// authority at `notified_at` if it was, seen at `now`.
    pub fn at(aware_at: Timestamp, notified_at: Option<Timestamp>, now: Timestamp) -> Clock {
        let deadline = aware_at.saturating_add(NOTIFY_WITHIN).unwrap_or(aware_at);
        if let Some(at) = notified_at {
            let warning = if at > deadline {
                Warning::NotifiedLate
            } else {
                Warning::Notified
            };
            return Clock {
                deadline,
                seconds_left: None,
                warning,
            };
        }
        let left = deadline.as_second() - now.as_second();
        let warning = if now > deadline {
            Warning::Overdue
        } else if left <= FINAL_WARNING_HOURS * 3600 {
            Warning::TwelveHours
        } else if left <= LAST_WARNING_HOURS * 3600 {
            Warning::TwentyFourHours
        } else if left <= FIRST_WARNING_HOURS * 3600 {
            Warning::FortyEightHours
        } else {
            Warning::Running
        };
        Clock {
            deadline,
            seconds_left: Some(left),
            warning,
        }
    }
}

/// A breach as declared, before it has an id.
#[derive(Clone, Debug)]
pub struct Declaration {
    /// When the business became aware.
    pub aware_at: Timestamp,
    /// What it concerns.
    pub scope: Scope,
    /// French wording.
    pub wording: Wording,
    /// English wording of the letter.
    pub wording_en: Option<Wording>,
}

impl Breach {
    /// A new breach, checked against `catalog`: a known scope, some wording of what happened,
    /// an awareness that is not in the future.
    pub fn declare(d: Declaration, catalog: &Catalog, actor: &str, now: Timestamp) -> Result<Self, Error> {
        d.scope.trait_names(catalog)?;
        if d.wording.nature.trim().is_empty() {
            return Err(Error::new(ErrorCode::MissingField, "`nature` says what happened"));
        }
        if d.aware_at > now {
            return Err(Error::new(ErrorCode::InvalidField, "`aware_at` is in the future"));
        }
        Ok(Self {
            id: 0,
            aware_at: d.aware_at,
            declared_at: now,
            declared_by: actor.to_owned(),
            scope: d.scope,
            wording: d.wording,
            wording_en: d.wording_en,
            phase: Phase::Initial,
            updates: Vec::new(),
            affected: Affected::default(),
            authority_notified_at: None,
            delay_reasons: None,
            decision: None,
        })
    }

    /// When the 72 hours end.
    pub fn deadline(&self) -> Timestamp {
        self.aware_at.saturating_add(NOTIFY_WITHIN).unwrap_or(self.aware_at)
    }

    /// Where the clock stands at `now`.
    pub fn clock(&self, now: Timestamp) -> Clock {
        Clock::at(self.aware_at, self.authority_notified_at, now)
    }

    /// Adds an update in `phase`, replacing the wording given with it. A final phase cannot be
    /// followed by another.
    pub fn update(
        &mut self,
        phase: Phase,
        wording: Option<Wording>,
        note: String,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), Error> {
        if self.phase == Phase::Final && phase != Phase::Final {
            return Err(Error::new(
                ErrorCode::InvalidField,
                "the breach's final phase is already recorded",
            ));
        }
        if let Some(w) = wording {
            if w.nature.trim().is_empty() {
                return Err(Error::new(ErrorCode::MissingField, "`nature` says what happened"));
            }
            self.wording = w;
        }
        self.phase = phase;
        self.updates.push(Update {
            phase,
            at: now,
            actor: actor.to_owned(),
            note,
        });
        Ok(())
    }

    /// Records that the authority was notified at `at`; past the 72 hours, the reasons for the
    /// delay are required (Art. 33(1)).
    pub fn notified(&mut self, at: Timestamp, delay_reasons: Option<String>) -> Result<(), Error> {
        let late = at > self.deadline();
        let reasons = delay_reasons.filter(|r| !r.trim().is_empty());
        if late && reasons.is_none() {
            return Err(Error::new(
                ErrorCode::MissingField,
                "notified after 72 hours: `delay_reasons` must say why (Art. 33(1))",
            ));
        }
        self.authority_notified_at = Some(at);
        self.delay_reasons = reasons;
        Ok(())
    }

    /// Whether the people must be told: only after a decision that says so.
    pub fn people_must_be_told(&self) -> bool {
        self.decision.as_ref().is_some_and(Decision::people_must_be_told)
    }

    /// The notification to the authority, in French, with every item of Art. 33(3), as plain
    /// text.
    pub fn notification_text(&self, catalog: &Catalog) -> String {
        self.notification_items(catalog)
            .into_iter()
            .map(|(title, body)| format!("{title}\n{body}\n"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The same notification as an HTML fragment.
    pub fn notification_html(&self, catalog: &Catalog) -> String {
        let mut out = format!(
            "<article lang=\"fr\"><h1>Notification de violation de données n° {}</h1>\n",
            self.id
        );
        for (title, body) in self.notification_items(catalog) {
            out.push_str(&format!(
                "<h2>{}</h2>\n<p>{}</p>\n",
                escape(&title),
                escape(&body).replace('\n', "<br>")
            ));
        }
        out.push_str("</article>\n");
        out
    }

    /// The items of the notification: `(title, text)`, in the order of Art. 33(3).
    pub fn notification_items(&self, catalog: &Catalog) -> Vec<(String, String)> {
        let c = &catalog.controller;
        let or_pending = |s: &str| {
            if s.trim().is_empty() {
                "À compléter (l'information sera fournie dans une notification complémentaire, art. 33(4)).".to_owned()
            } else {
                s.to_owned()
            }
        };
        let traits = self.scope.trait_names(catalog).unwrap_or_default();
        let sources = if self.scope.sources.is_empty() {
            "toutes les sources".to_owned()
        } else {
            self.scope.sources.join(", ")
        };
        let window = match self.scope.from {
            Some(from) => format!("données reçues du {} au {}", fr_time(from), fr_time(self.scope.to)),
            None => format!("données reçues jusqu'au {}", fr_time(self.scope.to)),
        };
        let mut items = vec![
            (
                "Responsable du traitement".to_owned(),
                format!("{}, {}", c.name, c.address),
            ),
            (
                "Type de notification".to_owned(),
                format!(
                    "{} ; violation constatée le {} ; notification due avant le {}.",
                    self.phase.fr(),
                    fr_time(self.aware_at),
                    fr_time(self.deadline())
                ),
            ),
            ("Nature de la violation".to_owned(), or_pending(&self.wording.nature)),
            (
                "Catégories de données concernées".to_owned(),
                format!(
                    "Catégories : {}. Données : {}. Sources : {} ; {}.",
                    self.scope.categories_of(catalog).join(", "),
                    traits.join(", "),
                    sources,
                    window
                ),
            ),
            (
                "Catégories et nombre approximatif de personnes concernées".to_owned(),
                format!(
                    "Clients et prospects dont les données figuraient dans le périmètre : environ {} personne(s) (calcul du {}).",
                    self.affected.subjects,
                    fr_time(self.affected.computed_at)
                ),
            ),
            (
                "Nombre approximatif d'enregistrements concernés".to_owned(),
                format!(
                    "Environ {} enregistrement(s){}.",
                    self.affected.records,
                    if self.affected.unresolved_records > 0 {
                        format!(
                            ", dont {} non encore rattaché(s) à une personne",
                            self.affected.unresolved_records
                        )
                    } else {
                        String::new()
                    }
                ),
            ),
            (
                "Point de contact (délégué à la protection des données)".to_owned(),
                or_pending(&c.dpo_contact),
            ),
            (
                "Conséquences probables".to_owned(),
                or_pending(&self.wording.consequences),
            ),
            (
                "Mesures prises ou envisagées".to_owned(),
                or_pending(&self.wording.measures),
            ),
        ];
        if let Some(d) = &self.decision {
            let told = match (d.high_risk, d.exemption) {
                (false, _) => {
                    "Risque élevé non retenu : les personnes ne sont pas informées individuellement.".to_owned()
                }
                (true, None) => "Risque élevé : les personnes concernées sont informées (art. 34).".to_owned(),
                (true, Some(e)) => format!("Risque élevé, mais exemption de l'art. 34(3) : {}.", exemption_fr(e)),
            };
            items.push((
                "Information des personnes concernées".to_owned(),
                format!("{told} Motifs : {}", d.reasons),
            ));
        }
        if let Some(r) = &self.delay_reasons {
            items.push(("Motifs du retard".to_owned(), r.clone()));
        }
        if !self.updates.is_empty() {
            let history = self
                .updates
                .iter()
                .map(|u| format!("{} ({}) : {}", fr_time(u.at), u.phase.fr(), u.note))
                .collect::<Vec<_>>()
                .join("\n");
            items.push(("Historique".to_owned(), history));
        }
        items
    }

    /// The letter to a person, in plain language, in `lang` (`fr` or `en`; French otherwise):
    /// `(subject, body)`. It carries what Art. 34(2) asks: what happened, the contact point, the
    /// likely consequences and the measures.
    pub fn notice(&self, lang: &str, catalog: &Catalog) -> (String, String) {
        let c = &catalog.controller;
        if lang == "en" {
            let w = self.wording_en.as_ref().unwrap_or(&self.wording);
            let subject = format!("{}: a security incident concerning your data", c.name);
            let body = format!(
                "Hello,\n\nWe are writing to tell you about a security incident that concerns some of your personal data ({data}).\n\nWhat happened: {nature}\n\nWhat this may mean for you: {consequences}\n\nWhat we are doing about it: {measures}\n\nIf you have any question, write to our data protection officer: {dpo}.\nYou may also complain to the CNIL (www.cnil.fr).\n\nWe are sorry for this.\n{name}\n",
                data = self.scope.categories_of(catalog).join(", "),
                nature = w.nature,
                consequences = non_empty(
                    &w.consequences,
                    "we are still assessing it and will tell you more if needed."
                ),
                measures = non_empty(&w.measures, "we have stopped the incident and are investigating."),
                dpo = c.dpo_contact,
                name = c.name,
            );
            (subject, body)
        } else {
            let w = &self.wording;
            let subject = format!("{} : un incident de sécurité concerne vos données", c.name);
            let body = format!(
                "Bonjour,\n\nNous vous informons d'un incident de sécurité qui concerne certaines de vos données personnelles ({data}).\n\nCe qui s'est passé : {nature}\n\nCe que cela peut signifier pour vous : {consequences}\n\nCe que nous faisons : {measures}\n\nPour toute question, écrivez à notre délégué à la protection des données : {dpo}.\nVous pouvez aussi adresser une réclamation à la CNIL (www.cnil.fr).\n\nNous vous prions de nous en excuser.\n{name}\n",
                data = self.scope.categories_of(catalog).join(", "),
                nature = w.nature,
                consequences = non_empty(
                    &w.consequences,
                    "nous l'évaluons encore et vous tiendrons informé si nécessaire."
                ),
                measures = non_empty(&w.measures, "nous avons mis fin à l'incident et menons l'enquête."),
                dpo = c.dpo_contact,
                name = c.name,
            );
            (subject, body)
        }
    }
}

fn non_empty<'a>(s: &'a str, otherwise: &'a str) -> &'a str {
    if s.trim().is_empty() { otherwise } else { s }
}

fn exemption_fr(e: Exemption) -> &'static str {
    match e {
        Exemption::Encrypted => "les données étaient chiffrées et incompréhensibles pour un tiers",
        Exemption::RiskRemoved => "des mesures ultérieures ont supprimé le risque élevé",
        Exemption::Disproportionate => {
            "une information individuelle serait disproportionnée ; une communication publique la remplace"
        }
    }
}

/// An instant as a French reader expects it, in the controller's time zone.
fn fr_time(t: Timestamp) -> String {
    t.to_zoned(super::requests::controller_tz())
        .strftime("%d/%m/%Y à %H:%M (%Z)")
        .to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn breach() -> Breach {
        let d = Declaration {
            aware_at: at("2026-03-02T10:00:00Z"),
            scope: Scope {
                categories: vec!["contact".into()],
                sources: vec!["web".into()],
                to: at("2026-03-01T00:00:00Z"),
                ..Scope::default()
            },
            wording: Wording {
                nature: "Export laissé en accès public".into(),
                ..Wording::default()
            },
            wording_en: None,
        };
        Breach::declare(d, &Catalog::builtin(), "admin:alice", at("2026-03-02T12:00:00Z")).unwrap()
    }

    #[test]
    fn categories_expand_to_their_traits_and_unknown_names_are_all_reported() {
        let catalog = Catalog::builtin();
        let names = breach().scope.trait_names(&catalog).unwrap();
        assert!(
            names.contains(&"email".to_owned()) && names.contains(&"address".to_owned()),
            "{names:?}"
        );
        assert!(!names.contains(&"birthday".to_owned()));
        let bad = Scope {
            traits: vec!["shoe_size".into()],
            categories: vec!["dreams".into()],
            to: at("2026-03-01T00:00:00Z"),
            ..Scope::default()
        };
        let e = bad.trait_names(&catalog).unwrap_err();
        assert!(
            e.message.contains("shoe_size") && e.message.contains("dreams"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_clock_warns_at_48_24_and_12_hours_then_is_overdue_and_stops_when_notified() {
        let mut b = breach();
        assert_eq!(b.deadline(), at("2026-03-05T10:00:00Z"));
        assert_eq!(b.clock(at("2026-03-03T09:59:59Z")).warning, Warning::Running);
        assert_eq!(b.clock(at("2026-03-03T10:00:00Z")).warning, Warning::FortyEightHours);
        assert_eq!(b.clock(at("2026-03-04T10:00:00Z")).warning, Warning::TwentyFourHours);
        assert!(!b.clock(at("2026-03-04T09:59:59Z")).warning.is_urgent());
        assert!(b.clock(at("2026-03-04T10:00:00Z")).warning.is_urgent());
        assert_eq!(b.clock(at("2026-03-04T21:59:59Z")).warning, Warning::TwentyFourHours);
        assert_eq!(b.clock(at("2026-03-04T22:00:00Z")).warning, Warning::TwelveHours);
        assert_eq!(
            serde_json::to_value(Warning::TwelveHours).unwrap(),
            Warning::TwelveHours.as_str()
        );
        assert_eq!(b.clock(at("2026-03-05T10:00:00Z")).seconds_left, Some(0));
        assert_eq!(b.clock(at("2026-03-05T10:00:01Z")).warning, Warning::Overdue);
        assert!(
            b.notified(at("2026-03-05T11:00:00Z"), None).is_err(),
            "late needs reasons"
        );
        b.notified(at("2026-03-05T11:00:00Z"), Some("enquête du prestataire".into()))
            .unwrap();
        assert_eq!(b.clock(at("2026-03-09T00:00:00Z")).warning, Warning::NotifiedLate);
    }

    #[test]
    fn an_encrypted_breach_needs_no_letters() {
        let mut b = breach();
        assert!(!b.people_must_be_told());
        b.decision = Some(Decision {
            high_risk: true,
            exemption: Some(Exemption::Encrypted),
            reasons: "AES-256".into(),
            by: "dpo".into(),
            at: at("2026-03-03T00:00:00Z"),
        });
        assert!(!b.people_must_be_told());
        b.decision.as_mut().unwrap().exemption = None;
        assert!(b.people_must_be_told());
    }

    #[test]
    fn the_draft_has_every_item_of_article_33_3() {
        let text = breach().notification_text(&Catalog::builtin());
        for item in [
            "Nature de la violation",
            "nombre approximatif de personnes",
            "Nombre approximatif d'enregistrements",
            "Point de contact",
            "dpo@vinyles-et-cie.example",
            "Conséquences probables",
            "Mesures prises ou envisagées",
            "notification initiale",
        ] {
            assert!(text.contains(item), "missing {item}:\n{text}");
        }
    }
}
