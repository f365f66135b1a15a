//! Compliance checks: executable rules, each with a pass or fail and its evidence.
//!
//! # Design
//!
//! The store and the server gather [`Facts`] (a few counts and lists, never personal data:
//! ledger positions, request ids, profile ids); [`evaluate`] judges them. Keeping the judgement
//! pure makes every rule testable with a seeded violation and keeps the verdict identical
//! whether it is asked for over HTTP or by `confiance compliance check` in cron or CI.

use crate::catalog::{Catalog, LegalBasis, Retention, SPECIAL_CATEGORIES};
use crate::privacy::breach::{Clock, Warning};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::{Value, json};

/// How long the retention job may go without running.
pub const RETENTION_JOB_MAX_AGE: SignedDuration = SignedDuration::from_hours(24);
/// Art. 33(1): the authority is notified within 72 hours of becoming aware.
pub const BREACH_DEADLINE: SignedDuration = SignedDuration::from_hours(72);
/// How far back the send log is checked: a daily check reads each send many times over.
pub const SEND_WINDOW: SignedDuration = SignedDuration::from_hours(24 * 30);

/// A recorded breach, as far as the 72-hour rule needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreachFacts {
    /// Its id in the breach register.
    pub id: i64,
    /// When the controller became aware of it.
    pub aware_at: Timestamp,
    /// When the authority was notified.
    pub notified_at: Option<Timestamp>,
    /// Why it was notified late or not at all (no risk, Art. 33(1)), when recorded.
    pub reason: Option<String>,
}

/// A message the send log records as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    /// Campaign id.
    pub campaign: i64,
    /// Profile id.
    pub profile: i64,
    /// The campaign's purpose, if it names one.
    pub purpose: Option<String>,
    /// When it was sent.
    pub at: Timestamp,
    /// Whether the ledger held a granted consent for the purpose at that time.
    pub consented: bool,
}

/// Everything the rules judge.
#[derive(Clone, Debug)]
pub struct Facts {
    /// When the check runs.
    pub now: Timestamp,
    /// Ledger positions of current grants whose decision carries no proof.
    pub unproven_grants: Vec<i64>,
    /// Open rights requests: id and due date.
    pub open_requests: Vec<(i64, Timestamp)>,
    /// When the retention job last ran.
    pub last_retention: Option<Timestamp>,
    /// Current choices recorded before the validity cut-off: purpose, status, count.
    pub stale_choices: Vec<(String, String, i64)>,
    /// The breach register.
    pub breaches: Vec<BreachFacts>,
    /// Messages sent within [`SEND_WINDOW`].
    pub sent: Vec<SentMessage>,
    /// The audit chain's verification: entries checked, or where it broke.
    pub audit: Result<usize, String>,
}

/// A rule's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rule holds.
    Pass,
    /// The rule is broken; the evidence says where.
    Fail,
}

/// One rule's verdict and its evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleResult {
    /// Stable id (`purposes_have_basis_and_retention`…).
    pub rule: &'static str,
    /// What the rule says.
    pub title: &'static str,
    /// The verdict.
    pub outcome: Outcome,
    /// What was found, in a sentence.
    pub summary: String,
    /// The evidence: counts and pseudonymous references.
    pub evidence: Value,
}

/// The whole check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// When it ran.
    pub checked_at: Timestamp,
    /// Whether no rule failed.
    pub passed: bool,
    /// Every rule, in a fixed order.
    pub rules: Vec<RuleResult>,
}

/// The cut-off before which a choice must be asked again.
pub fn validity_cutoff(now: Timestamp, validity: Retention) -> Timestamp {
    now.to_zoned(jiff::tz::TimeZone::UTC)
        .checked_sub(validity.span())
        .map_or(Timestamp::MIN, |z| z.timestamp())
}

fn result(rule: &'static str, title: &'static str, failed: bool, summary: String, evidence: Value) -> RuleResult {
    RuleResult {
        rule,
        title,
        outcome: if failed { Outcome::Fail } else { Outcome::Pass },
        summary,
        evidence,
    }
}

/// Judges the facts against every rule.
pub fn evaluate(catalog: &Catalog, facts: &Facts) -> Report {
    let rules = vec![
        purposes_rule(catalog),
        special_rule(catalog),
        proofs_rule(facts),
        requests_rule(facts),
        retention_rule(facts),
        stale_rule(catalog, facts),
        breach_rule(facts),
        sends_rule(catalog, facts),
        audit_rule(facts),
    ];
    Report {
        checked_at: facts.now,
        passed: rules.iter().all(|r| r.outcome == Outcome::Pass),
        rules,
    }
}

fn purposes_rule(catalog: &Catalog) -> RuleResult {
    let missing: Vec<&str> = catalog
        .purposes
        .values()
        .filter(|p| p.retention == Retention::default())
        .map(|p| p.id.as_str())
        .collect();
    let unknown: Vec<String> = catalog
        .traits
        .values()
        .flat_map(|t| t.purposes.iter().map(move |p| (format!("trait {}", t.name), p)))
        .chain(
            catalog
                .events
                .values()
                .flat_map(|e| e.purposes.iter().map(move |p| (format!("event {}", e.name), p))),
        )
        .filter(|(_, p)| !catalog.purposes.contains_key(*p))
        .map(|(owner, p)| format!("{owner} → {p}"))
        .collect();
    let bases: serde_json::Map<String, Value> = catalog
        .purposes
        .values()
        .map(|p| {
            (
                p.id.clone(),
                json!({"legal_basis": p.legal_basis, "retention": p.retention.to_string()}),
            )
        })
        .collect();
    result(
        "purposes_have_basis_and_retention",
        "every purpose has a legal basis and a retention",
        !missing.is_empty() || !unknown.is_empty(),
        format!(
            "{} purposes; {} without a retention; {} uses of an undeclared purpose",
            catalog.purposes.len(),
            missing.len(),
            unknown.len()
        ),
        json!({"purposes": bases, "without_retention": missing, "undeclared_purposes": unknown}),
    )
}

fn special_rule(catalog: &Catalog) -> RuleResult {
    let special: Vec<&crate::catalog::TraitDef> = catalog
        .traits
        .values()
        .filter(|t| SPECIAL_CATEGORIES.contains(&t.category.as_str()))
        .collect();
    let unflagged: Vec<String> = special
        .iter()
        .filter(|t| t.special_basis.is_none())
        .map(|t| format!("{} ({})", t.name, t.category))
        .collect();
    result(
        "special_categories_flagged",
        "no special-category data without its flag and Art. 9(2) basis",
        !unflagged.is_empty(),
        format!(
            "{} special-category traits, {} without a basis",
            special.len(),
            unflagged.len()
        ),
        json!({"special_traits": special.iter().map(|t| &t.name).collect::<Vec<_>>(), "without_basis": unflagged}),
    )
}

fn proofs_rule(facts: &Facts) -> RuleResult {
    result(
        "granted_consents_have_proof",
        "every granted consent has its proof",
        !facts.unproven_grants.is_empty(),
        format!(
            "{} current grants without a notice hash or proof",
            facts.unproven_grants.len()
        ),
        json!({"ledger": facts.unproven_grants.iter().map(|s| format!("ledger:{s}")).collect::<Vec<_>>()}),
    )
}

fn requests_rule(facts: &Facts) -> RuleResult {
    let overdue: Vec<Value> = facts
        .open_requests
        .iter()
        .filter(|(_, due)| *due < facts.now)
        .map(|(id, due)| json!({"request": format!("request:{id}"), "due_at": due}))
        .collect();
    result(
        "no_overdue_requests",
        "no rights request overdue (Art. 12(3))",
        !overdue.is_empty(),
        format!("{} open requests, {} overdue", facts.open_requests.len(), overdue.len()),
        json!({"open": facts.open_requests.len(), "overdue": overdue}),
    )
}

fn retention_rule(facts: &Facts) -> RuleResult {
    let fresh = facts
        .last_retention
        .is_some_and(|t| facts.now.duration_since(t) <= RETENTION_JOB_MAX_AGE);
    let summary = match facts.last_retention {
        Some(t) => format!("the retention job last ran at {t}"),
        None => "the retention job never ran".to_owned(),
    };
    result(
        "retention_job_ran",
        "the retention job ran within the last 24 hours",
        !fresh,
        summary,
        json!({"last_run": facts.last_retention, "max_age_hours": 24}),
    )
}

fn stale_rule(catalog: &Catalog, facts: &Facts) -> RuleResult {
    let granted: i64 = facts
        .stale_choices
        .iter()
        .filter(|(_, status, _)| status == "granted")
        .map(|(_, _, n)| n)
        .sum();
    let total: i64 = facts.stale_choices.iter().map(|(_, _, n)| n).sum();
    let by_purpose: Vec<Value> = facts
        .stale_choices
        .iter()
        .map(|(p, s, n)| json!({"purpose": p, "status": s, "count": n}))
        .collect();
    result(
        "stale_choices_reasked",
        "choices older than the validity period are asked again",
        granted > 0,
        format!(
            "{total} choices older than {} to ask again, {granted} of them consents still in use",
            catalog.consent.validity
        ),
        json!({"validity": catalog.consent.validity.to_string(), "to_reask": total, "stale_consents": granted, "by_purpose": by_purpose}),
    )
}

fn breach_rule(facts: &Facts) -> RuleResult {
    let breaches = &facts.breaches;
    let late: Vec<Value> = breaches
        .iter()
        .filter(|b| b.reason.as_deref().is_none_or(|r| r.trim().is_empty()))
        .filter(|b| {
            let deadline = b.aware_at.checked_add(BREACH_DEADLINE).unwrap_or(Timestamp::MAX);
            b.notified_at.map_or(facts.now > deadline, |n| n > deadline)
        })
        .map(|b| json!({"breach": format!("breach:{}", b.id), "aware_at": b.aware_at, "notified_at": b.notified_at}))
        .collect();
    // Not a failure yet, but the last day: shown so that a daily check pushes it to the DPO.
    let due_soon: Vec<Value> = breaches
        .iter()
        .map(|b| (b, Clock::at(b.aware_at, b.notified_at, facts.now)))
        .filter(|(_, c)| matches!(c.warning, Warning::TwentyFourHours | Warning::TwelveHours))
        .map(|(b, c)| {
            json!({"breach": format!("breach:{}", b.id), "deadline": c.deadline, "warning": c.warning,
                   "seconds_left": c.seconds_left})
        })
        .collect();
    result(
        "breaches_notified_in_72h",
        "no breach past 72 hours unnotified without a recorded reason (Art. 33)",
        !late.is_empty(),
        format!(
            "{} breaches recorded, {} late without a reason, {} to notify within 24 hours",
            breaches.len(),
            late.len(),
            due_soon.len()
        ),
        json!({"breaches": breaches.len(), "late": late, "due_soon": due_soon}),
    )
}

fn sends_rule(catalog: &Catalog, facts: &Facts) -> RuleResult {
    let unlawful: Vec<Value> = facts
        .sent
        .iter()
        .filter_map(|s| {
            let why = match s.purpose.as_deref().and_then(|p| catalog.purposes.get(p)) {
                None => "purpose unknown to the catalog",
                Some(p) if p.legal_basis == LegalBasis::Consent && !s.consented => "no consent at send time",
                Some(_) => return None,
            };
            Some(json!({
                "campaign": s.campaign, "profile": format!("profile:{}", s.profile),
                "purpose": s.purpose, "at": s.at, "reason": why,
            }))
        })
        .collect();
    result(
        "marketing_sent_with_basis",
        "zero marketing messages sent without a legal basis (send log)",
        !unlawful.is_empty(),
        format!(
            "{} messages sent in the last 30 days, {} without a legal basis",
            facts.sent.len(),
            unlawful.len()
        ),
        json!({"sent": facts.sent.len(), "window_days": 30, "without_basis": unlawful}),
    )
}

fn audit_rule(facts: &Facts) -> RuleResult {
    let (failed, summary, evidence) = match &facts.audit {
        Ok(n) => (false, format!("{n} audit entries verify"), json!({"entries": n})),
        Err(e) => (true, format!("the audit chain is broken: {e}"), json!({"broken": e})),
    };
    result(
        "audit_chain_verifies",
        "the audit chain verifies",
        failed,
        summary,
        evidence,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn clean() -> Facts {
        Facts {
            now: at("2026-11-29T10:00:00Z"),
            unproven_grants: vec![],
            open_requests: vec![(1, at("2026-12-20T00:00:00Z"))],
            last_retention: Some(at("2026-11-29T03:00:00Z")),
            stale_choices: vec![],
            breaches: vec![],
            sent: vec![],
            audit: Ok(3),
        }
    }

    fn outcome(catalog: &Catalog, facts: &Facts, rule: &str) -> Outcome {
        evaluate(catalog, facts)
            .rules
            .into_iter()
            .find(|r| r.rule == rule)
            .unwrap()
            .outcome
    }

    #[test]
    fn a_clean_instance_passes() {
        let report = evaluate(&Catalog::builtin(), &clean());
        assert!(report.passed, "{report:#?}");
        assert_eq!(report.rules.len(), 9);
    }

    #[test]
    fn each_rule_fails_on_its_violation() {
        let c = Catalog::builtin();
        let mut bad = c.clone();
        bad.purposes.get_mut("analytics").unwrap().retention = Retention::default();
        assert_eq!(
            outcome(&bad, &clean(), "purposes_have_basis_and_retention"),
            Outcome::Fail
        );
        let mut bad = c.clone();
        let t = bad.traits.values_mut().next().unwrap();
        t.category = "health".into();
        t.special_basis = None;
        assert_eq!(outcome(&bad, &clean(), "special_categories_flagged"), Outcome::Fail);

        let mut f = clean();
        f.open_requests.push((2, at("2026-11-28T00:00:00Z")));
        assert_eq!(outcome(&c, &f, "no_overdue_requests"), Outcome::Fail);
        let mut f = clean();
        f.last_retention = Some(at("2026-11-28T09:00:00Z"));
        assert_eq!(outcome(&c, &f, "retention_job_ran"), Outcome::Fail);
        let mut f = clean();
        f.stale_choices.push(("analytics".into(), "denied".into(), 4));
        assert_eq!(outcome(&c, &f, "stale_choices_reasked"), Outcome::Pass);
        f.stale_choices.push(("analytics".into(), "granted".into(), 1));
        assert_eq!(outcome(&c, &f, "stale_choices_reasked"), Outcome::Fail);
        let mut f = clean();
        f.unproven_grants.push(7);
        assert_eq!(outcome(&c, &f, "granted_consents_have_proof"), Outcome::Fail);
        let mut f = clean();
        f.audit = Err("entry 4".into());
        assert_eq!(outcome(&c, &f, "audit_chain_verifies"), Outcome::Fail);
        let mut f = clean();
        f.sent.push(SentMessage {
            campaign: 1,
            profile: 2,
            purpose: Some("marketing_email".into()),
            at: at("2026-11-28T00:00:00Z"),
            consented: false,
        });
        assert_eq!(outcome(&c, &f, "marketing_sent_with_basis"), Outcome::Fail);
        f.sent[0].consented = true;
        assert_eq!(outcome(&c, &f, "marketing_sent_with_basis"), Outcome::Pass);
    }

    #[test]
    fn breaches_need_notice_within_72_hours_or_a_reason() {
        let c = Catalog::builtin();
        let mut f = clean();
        let mut breach = BreachFacts {
            id: 1,
            aware_at: at("2026-11-25T10:00:00Z"),
            notified_at: None,
            reason: None,
        };
        f.breaches = vec![breach.clone()];
        assert_eq!(outcome(&c, &f, "breaches_notified_in_72h"), Outcome::Fail);
        breach.notified_at = Some(at("2026-11-27T10:00:00Z"));
        f.breaches = vec![breach.clone()];
        assert_eq!(outcome(&c, &f, "breaches_notified_in_72h"), Outcome::Pass);
        breach.notified_at = None;
        breach.reason = Some("encrypted laptop, no risk".into());
        f.breaches = vec![breach];
        assert_eq!(outcome(&c, &f, "breaches_notified_in_72h"), Outcome::Pass);
    }

    #[test]
    fn a_breach_in_its_last_day_is_shown_due_soon_without_failing() {
        let c = Catalog::builtin();
        let mut f = clean();
        let due_soon = |f: &Facts| {
            let report = evaluate(&c, f);
            let rule = report
                .rules
                .iter()
                .find(|r| r.rule == "breaches_notified_in_72h")
                .unwrap();
            (rule.outcome, rule.evidence["due_soon"].clone())
        };
        let mut breach = BreachFacts {
            id: 4,
            aware_at: f.now - SignedDuration::from_hours(47),
            notified_at: None,
            reason: None,
        };
        f.breaches = vec![breach.clone()];
        assert_eq!(due_soon(&f), (Outcome::Pass, json!([])));
        breach.aware_at = f.now - SignedDuration::from_hours(49);
        f.breaches = vec![breach.clone()];
        let (outcome, due) = due_soon(&f);
        assert_eq!(
            (outcome, due[0]["warning"].as_str()),
            (Outcome::Pass, Some("twenty_four_hours"))
        );
        assert_eq!(due[0]["breach"], "breach:4");
        breach.aware_at = f.now - SignedDuration::from_hours(61);
        f.breaches = vec![breach.clone()];
        assert_eq!(due_soon(&f).1[0]["warning"], "twelve_hours");
        breach.notified_at = Some(f.now);
        f.breaches = vec![breach];
        assert_eq!(due_soon(&f), (Outcome::Pass, json!([])));
    }
}
