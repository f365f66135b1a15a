//! Probabilistic matching: which records that share no identifier are one person.
//!
//! A till purchase knows a name, a postcode and a birth date; a CRM import knows a name, an
//! address and an email; a web account knows an email and a user id. The deterministic identity
//! graph links records that share an identifier; this module finds the people it cannot link,
//! and says how sure it is and why.
//!
//! ```text
//! records ─▶ Prepared ─▶ Candidates ─▶ Compared ─▶ Model ──────────▶ Scored ─▶ cluster() ───▶ MatchOutcome
//!            normalise,   blocking      levels      u: random pairs   weights,  union-find,    clusters, merges with
//!            block,       rules, OR-ed  per field   m: EM sessions    TF        profiles,      evidence, review queue,
//!            intern                                 λ: EM             applied   guards         refusals, report
//! ```
//!
//! [`match_records`] runs every stage; each stage is also public, so a caller can time them or
//! re-cluster with new review decisions without comparing again.
//!
//! # Design
//!
//! - **Fellegi–Sunter, as Splink does it.** Each field is compared at a few ordered levels
//!   ([`compare`]); each level has a weight `log2(m/u)` learnt from the data ([`model`]), with
//!   term-frequency adjustment so that a shared "Martin" weighs less than a shared
//!   "Quasimodo". The sum of the weights is a match probability, and the weights themselves
//!   are the explanation kept with every merge: [`Evidence`] per field.
//! - **Nothing hand-set but the thresholds.** u comes from random pairs, m from EM training
//!   sessions over the candidate pairs, the prior from EM's share of matches. What a business
//!   decides is how sure is sure enough: [`MatchConfig::auto_merge_threshold`] and the grey
//!   zone down to [`MatchConfig::review_threshold`], which goes to a person. The default of
//!   0.99 puts precision first: a wrong merge shows one person's data to another.
//! - **Clusters, not pairs** ([`mod@cluster`]): merges are transitive, so what may never
//!   happen is checked on the clusters. Blocked values and identifiers shared by too many
//!   records are missing, not evidence; a cluster never gets two user ids, or more emails or
//!   phones than the limits, or two records with strong evidence against being one person
//!   (what keeps a household apart when a thin record is close to each of its members);
//!   reviewers' rejections hold transitively. Clusters joined by a grey-zone pair are then
//!   compared as profiles, since a profile knows more than each of its records.
//! - **Pure and deterministic.** No I/O, no clock, no store: records in, outcome out, the same
//!   for the same records, configuration and seed, whatever the number of threads. The caller
//!   persists merges, evidence and review decisions.
//! - **Fast enough for a batch of a million records on two cores**: values are interned once
//!   ([`record`]), blocking never scans pairs, "one edit apart" is a linear test rather than a
//!   distance table, EM runs on level-combination counts, and the comparisons are spread over
//!   threads with `std::thread::scope` (a thread pool crate would buy little for four loops).
//! - **A synthetic generator with known truth** ([`synthetic`]) is part of the crate, not of
//!   its tests: the accuracy test, the million-record example and a future demo all draw the
//!   same people, and a feature flag would make `cargo run --example` need one.

pub mod blocking;
pub mod cluster;
pub mod compare;
pub mod model;
pub mod record;
pub mod synthetic;

pub use blocking::{BlockingReport, BlockingRule, Candidates, RuleCount, SkippedBlock};
pub use cluster::{MatchOutcome, MatchReport, Refusal, RefusedMerge, ReviewDecisions, cluster};
pub use compare::{Compared, Field, Level};
pub use model::{EmSummary, Evidence, FieldParams, LevelParams, Model, Scored, ScoredPair, SessionSummary};
pub use record::{Attribute, MatchError, MatchRecord, Prepared, ValueCount};

use jiff::civil::{Date, date};
use serde::{Deserialize, Serialize};

/// How many distinct identifiers one person may have, and how many records one identifier may
/// be on before it stops identifying anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Distinct user ids in a cluster (1: one account per person).
    pub max_user_ids: usize,
    /// Distinct emails in a cluster.
    pub max_emails: usize,
    /// Distinct phones in a cluster.
    pub max_phones: usize,
    /// Records an email or phone may be on before it is treated as missing and reported (the
    /// shop's own phone typed in for customers who gave none).
    pub max_records_per_identifier: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_user_ids: 1,
            max_emails: 5,
            max_phones: 5,
            max_records_per_identifier: 100,
        }
    }
}

/// The configuration of a matching run. Every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatchConfig {
    /// Pairs at or above this match probability are merged.
    pub auto_merge_threshold: f64,
    /// Pairs at or above this probability, and below the auto-merge threshold, go to review.
    pub review_threshold: f64,
    /// The blocking rules, OR-ed.
    pub rules: Vec<BlockingRule>,
    /// Blocks of more records than this are skipped and reported.
    pub max_block_size: usize,
    /// Identifier limits.
    pub limits: Limits,
    /// The most evidence against being one person, in bits, that two records of one cluster
    /// may have, location left out (people move). With weights learnt on typical data, a
    /// different first name is about 8 bits and a different birth date or last name 9 to 12:
    /// the default refuses two such disagreements, and a different last name on its own.
    pub max_evidence_against: f64,
    /// Values that mean "nothing" in any field, compared as typed (trimmed, lowercased) and as
    /// normalised: placeholders, test addresses, the shop's own phone number. Values made only
    /// of zeros and dashes are always blocked.
    pub blocked_values: Vec<String>,
    /// Birth dates that forms use as placeholders.
    pub blocked_birth_dates: Vec<Date>,
    /// Random pairs drawn to estimate u.
    pub u_sample_pairs: usize,
    /// Most EM iterations.
    pub em_max_iterations: usize,
    /// Seed of the random pairs, so runs are reproducible.
    pub seed: u64,
    /// Threads to use; 0 means as many as the machine has.
    pub threads: usize,
}

impl Default for MatchConfig {
    fn default() -> Self {
        Self {
            auto_merge_threshold: 0.99,
            review_threshold: 0.80,
            rules: BlockingRule::ALL.to_vec(),
            max_block_size: 500,
            limits: Limits::default(),
            max_evidence_against: 10.0,
            blocked_values: crate::unify::graph::BLOCKED_VALUES.map(String::from).to_vec(),
            blocked_birth_dates: vec![date(1900, 1, 1), date(1901, 1, 1)],
            u_sample_pairs: 1_000_000,
            em_max_iterations: 200,
            seed: 0x636f_6e66_6961_6e63,
            threads: 0,
        }
    }
}

impl MatchConfig {
    /// Checks that the thresholds and limits make sense together.
    fn check(&self) -> Result<(), MatchError> {
        let probability = |p: f64| p > 0.0 && p < 1.0;
        if !probability(self.auto_merge_threshold) || !probability(self.review_threshold) {
            return Err(MatchError::InvalidConfig(
                "thresholds must be probabilities strictly between 0 and 1",
            ));
        }
        if self.review_threshold > self.auto_merge_threshold {
            return Err(MatchError::InvalidConfig(
                "the review threshold must not be above the auto-merge threshold",
            ));
        }
        if self.max_block_size < 2 {
            return Err(MatchError::InvalidConfig("blocks must allow two records"));
        }
        Ok(())
    }

    /// The number of threads to use.
    fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

/// Runs `f` over `threads` contiguous chunks of `items` at once; results in chunk order.
fn parallel<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    if threads <= 1 || items.len() < 2 {
        return vec![f(items)];
    }
    let size = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items.chunks(size).map(|chunk| s.spawn(|| f(chunk))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a matching thread panicked"))
            .collect()
    })
}

/// Matches `records`: every stage, from normalisation to clusters.
pub fn match_records(
    records: &[MatchRecord],
    config: &MatchConfig,
    decisions: &ReviewDecisions,
) -> Result<MatchOutcome, MatchError> {
    let prepared = Prepared::new(records, config)?;
    let candidates = Candidates::new(&prepared, config);
    let compared = Compared::new(&prepared, candidates, config);
    let model = Model::estimate(&prepared, &compared, config);
    let scored = model.score(&prepared, &compared, config);
    cluster(&prepared, compared, model, scored, decisions, config)
}

#[cfg(test)]
mod tests;
