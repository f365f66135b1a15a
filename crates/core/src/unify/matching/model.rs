//! The Fellegi–Sunter model: how much each level of each field says, learnt from the data.
//!
//! # Design
//!
//! For each field and level, *m* is the probability of that level when the two records are
//! one person, *u* when they are two. A pair's match weight is the sum over its fields of
//! `log2(m/u)` plus the prior `log2(λ/(1−λ))`, λ being the share of all pairs that match;
//! its match probability is `1/(1+2^−weight)`. The weights are the explanation: "same birth
//! date: +14.5; different first name: −6.8" tells a reviewer why two records were merged.
//!
//! Nothing is set by hand; both are estimated from the records themselves, as Splink does:
//!
//! - **u from random pairs.** Two records drawn at random are almost never one person, so the
//!   levels of a large random sample of pairs ([`MatchConfig::u_sample_pairs`]) estimate u
//!   directly.
//! - **m by expectation–maximisation**: a two-class mixture (matches, non-matches) fitted to the
//!   counts of each combination of levels. Fitted on all candidates at once, the mixture would
//!   take households for matches — they share a home, a last name, often an email — and learn
//!   that a different first name or birth date is common among matches. So, as in Splink's
//!   training sessions, each m is learnt where households cannot be: on the candidates born the
//!   same day for names, location, email and phone; on the candidates with the same first and
//!   last name for the birth date (and location, email and phone again, averaged). Within a
//!   session the non-matches are not random pairs (blocking and the session's condition made
//!   them alike), so the mixture has its own u for them, which is thrown away after fitting.
//! - **The prior** λ comes from a last fit on all candidates with m fixed: its share of
//!   matches, times the number of candidates, over the number of all pairs.
//! - **Term frequencies.** An exact match on a value is worth `log2(m/f)` instead of
//!   `log2(m/u)`, where f is the share of records carrying that value: two records sharing
//!   "Martin" are less likely one person than two sharing "Quasimodo", and an email shared by
//!   a whole family says less than a personal one. Applied to the exact levels of names, email,
//!   phone, postcode and address line.
//!
//! Fitting runs on the counts of distinct level combinations (a few thousand), not on the pairs
//! (millions), so EM costs milliseconds whatever the number of records.

use super::compare::{Compared, Field, Gamma, Level, MAX_LEVELS, compare};
use super::record::Prepared;
use super::{MatchConfig, parallel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The number of fields.
const FIELD_COUNT: usize = Field::ALL.len();
/// Per field, per level index: a probability or a weight.
type Table = [[f64; MAX_LEVELS]; FIELD_COUNT];

/// What the model knows of one level of one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LevelParams {
    /// The level.
    pub level: Level,
    /// Probability of the level among matching pairs.
    pub m: f64,
    /// Probability of the level among random pairs.
    pub u: f64,
    /// `log2(m/u)`, before any term-frequency adjustment.
    pub weight: f64,
}

/// What the model knows of one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldParams {
    /// The field.
    pub field: Field,
    /// Its levels except [`Level::Missing`], which weighs 0.
    pub levels: Vec<LevelParams>,
}

/// How one EM fit went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The levels the fit's pairs were selected on (none for the fit of the prior); m was
    /// estimated for the other fields.
    pub given: Vec<(Field, Level)>,
    /// Candidate pairs it was fitted on.
    pub pairs: usize,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the parameters stopped moving before the iteration limit.
    pub converged: bool,
    /// The estimated share of its pairs that match.
    pub match_share: f64,
}

/// How the fit went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmSummary {
    /// The training sessions, then the fit of the prior.
    pub sessions: Vec<SessionSummary>,
    /// The estimated share of candidate pairs that match.
    pub candidate_match_share: f64,
    /// Candidate pairs the model was fitted on.
    pub candidate_pairs: usize,
    /// Random pairs u was estimated from.
    pub random_pairs: usize,
}

/// A fitted Fellegi–Sunter model.
#[derive(Clone, Debug, Serialize)]
pub struct Model {
    /// λ: the probability that two records drawn at random are one person.
    pub prior: f64,
    /// `log2(λ/(1−λ))`, the weight every pair starts from.
    pub prior_weight: f64,
    /// m, u and weights per field and level.
    pub fields: Vec<FieldParams>,
    /// How the fit went.
    pub em: EmSummary,
    #[serde(skip)]
    m: Table,
    #[serde(skip)]
    weight: Table,
}

/// One field's contribution to a pair's match weight.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The field.
    pub field: Field,
    /// How alike the two values were.
    pub level: Level,
    /// What it added to the match weight, in bits (term frequency included).
    pub weight: f32,
}

/// A pair of records with its match probability and the evidence for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredPair {
    /// One record's id.
    pub a: u64,
    /// The other record's id.
    pub b: u64,
    /// The match probability.
    pub probability: f64,
    /// The match weight: the prior plus the evidence's weights.
    pub weight: f64,
    /// Each field's contribution.
    pub evidence: [Evidence; FIELD_COUNT],
    /// True when the evidence compares the profiles the two records were already part of
    /// (each field at its best level between any of their records), not the two records
    /// alone.
    pub profiles: bool,
}

/// The candidate pairs worth deciding on: at or above the review threshold.
pub struct Scored {
    /// (index into the compared pairs, match weight), strongest first.
    pub(crate) pairs: Vec<(u32, f64)>,
    /// Pairs scored in all.
    pub scored: usize,
}

/// The probability for a match weight.
pub(crate) fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

/// The match weight for a probability.
fn weight_of(probability: f64) -> f64 {
    (probability / (1.0 - probability)).log2()
}

fn levels_of(k: usize) -> usize {
    Field::ALL[k].levels().len()
}

/// Level counts of `pairs` random pairs of `p`, per field.
fn random_level_counts(p: &Prepared, pairs: usize, config: &MatchConfig) -> Table {
    // A fixed number of chunks, each with its own seed, so the sample does not depend on the
    // number of threads.
    const CHUNKS: u64 = 64;
    let n = p.len() as u32;
    let chunks: Vec<u64> = (0..CHUNKS).collect();
    let counts = parallel(&chunks, config.threads(), |chunk| {
        let mut counts: Table = [[0.0; MAX_LEVELS]; FIELD_COUNT];
        for &c in chunk {
            let mut rng = StdRng::seed_from_u64(config.seed ^ c.wrapping_mul(0x9e37_79b9));
            let share = pairs / CHUNKS as usize + usize::from((c as usize) < pairs % CHUNKS as usize);
            for _ in 0..share {
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let g = compare(p, a.min(b), a.max(b));
                for (k, row) in counts.iter_mut().enumerate() {
                    row[g.level(k)] += 1.0;
                }
            }
        }
        counts
    });
    let mut total: Table = [[0.0; MAX_LEVELS]; FIELD_COUNT];
    for c in counts {
        for (k, row) in c.iter().enumerate() {
            for (l, v) in row.iter().enumerate() {
                total[k][l] += v;
            }
        }
    }
    total
}

/// Whether level `l` of field `k` carries weight.
fn is_evidence(k: usize, l: usize) -> bool {
    let field = Field::ALL[k];
    field.is_evidence(field.levels()[l])
}

/// Probabilities from counts over the levels that are evidence, with one pseudo-count per
/// level so that a level never seen is rare rather than impossible.
fn normalise(counts: &Table) -> Table {
    let mut out: Table = [[0.0; MAX_LEVELS]; FIELD_COUNT];
    for k in 0..FIELD_COUNT {
        let levels = (0..levels_of(k)).filter(|&l| is_evidence(k, l));
        let total: f64 = levels.clone().map(|l| counts[k][l] + 1.0).sum();
        for l in levels {
            out[k][l] = (counts[k][l] + 1.0) / total;
        }
    }
    out
}

/// Starting m: each level half as likely as the one before, most alike first.
fn initial_m() -> Table {
    let mut counts: Table = [[0.0; MAX_LEVELS]; FIELD_COUNT];
    for (k, row) in counts.iter_mut().enumerate() {
        for (l, v) in row.iter_mut().enumerate().take(levels_of(k)).skip(1) {
            *v = 1000.0 / f64::from(1u32 << l);
        }
    }
    normalise(&counts)
}

/// The result of fitting the mixture.
struct Fit {
    m: Table,
    iterations: usize,
    converged: bool,
    share: f64,
}

/// Expectation–maximisation of a two-class mixture over `patterns` (level combination,
/// count), on the `active` fields only. m starts at `m` and is re-estimated when `learn_m`,
/// else held; the non-matches' u starts at `u` and is always re-estimated.
fn em(
    patterns: &[(Gamma, f64)],
    active: [bool; FIELD_COUNT],
    (mut m, mut u): (Table, Table),
    learn_m: bool,
    max_iterations: usize,
) -> Fit {
    let evidence: Vec<(usize, usize)> = (0..FIELD_COUNT)
        .filter(|&k| active[k])
        .flat_map(|k| (0..levels_of(k)).map(move |l| (k, l)))
        .filter(|&(k, l)| is_evidence(k, l))
        .collect();
    let counts = |g: Gamma| evidence.iter().filter(move |&&(k, l)| g.level(k) == l);
    let mut share = 0.1;
    let mut iterations = 0;
    let mut converged = false;
    while iterations < max_iterations {
        iterations += 1;
        let mut m_counts: Table = [[0.0; MAX_LEVELS]; FIELD_COUNT];
        let mut u_counts: Table = [[0.0; MAX_LEVELS]; FIELD_COUNT];
        let (mut matched, mut total) = (0.0, 0.0);
        for &(g, count) in patterns {
            let (mut pm, mut pu) = (share, 1.0 - share);
            for &(k, l) in counts(g) {
                pm *= m[k][l];
                pu *= u[k][l];
            }
            let posterior = pm / (pm + pu);
            for &(k, l) in counts(g) {
                m_counts[k][l] += count * posterior;
                u_counts[k][l] += count * (1.0 - posterior);
            }
            matched += count * posterior;
            total += count;
        }
        let new_m = if learn_m { normalise(&m_counts) } else { m };
        let new_share = matched / total;
        let moved = new_m
            .iter()
            .flatten()
            .zip(m.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold((new_share - share).abs(), f64::max);
        (m, u, share) = (new_m, normalise(&u_counts), new_share);
        if moved < 1e-6 {
            converged = true;
            break;
        }
    }
    Fit {
        m,
        iterations,
        converged,
        share,
    }
}

/// The training sessions: each selects the candidates at the given levels and learns m for the
/// other fields (see the module's design).
const SESSIONS: [&[(Field, Level)]; 2] = [
    &[(Field::BirthDate, Level::Exact)],
    &[(Field::FirstName, Level::Exact), (Field::LastName, Level::Exact)],
];

/// The index of `level` in `field`'s levels.
fn level_index(field: Field, level: Level) -> usize {
    field
        .levels()
        .iter()
        .position(|&l| l == level)
        .expect("a level of the field")
}

impl Model {
    /// Estimates u from random pairs of `p` and m by EM over the compared candidates.
    pub fn estimate(p: &Prepared, compared: &Compared, config: &MatchConfig) -> Self {
        let n = p.len() as f64;
        let all_pairs = n * (n - 1.0) / 2.0;
        let random_pairs = if p.len() < 2 {
            0
        } else {
            config.u_sample_pairs.min(all_pairs as usize)
        };
        let u = normalise(&random_level_counts(p, random_pairs, config));

        let mut counts: HashMap<Gamma, f64> = HashMap::new();
        for &g in &compared.gammas {
            *counts.entry(g).or_default() += 1.0;
        }
        let mut patterns: Vec<(Gamma, f64)> = counts.into_iter().collect();
        patterns.sort_by_key(|(g, _)| *g);

        let mut sessions = Vec::new();
        let (mut m_sum, mut estimates): (Table, [f64; FIELD_COUNT]) =
            ([[0.0; MAX_LEVELS]; FIELD_COUNT], [0.0; FIELD_COUNT]);
        for given in SESSIONS {
            let selected: Vec<(Gamma, f64)> = patterns
                .iter()
                .copied()
                .filter(|(g, _)| {
                    given.iter().all(|&(field, level)| {
                        let k = Field::ALL.iter().position(|&f| f == field).expect("a field");
                        g.level(k) == level_index(field, level)
                    })
                })
                .collect();
            let pairs = selected.iter().map(|(_, c)| c).sum::<f64>() as usize;
            let active = Field::ALL.map(|f| !given.iter().any(|&(g, _)| g == f));
            // Too few pairs to learn from: the starting guesses stand for these fields.
            if pairs < 10 {
                continue;
            }
            let fit = em(&selected, active, (initial_m(), u), true, config.em_max_iterations);
            for k in (0..FIELD_COUNT).filter(|&k| active[k]) {
                estimates[k] += 1.0;
                for (sum, m) in m_sum[k].iter_mut().zip(fit.m[k]) {
                    *sum += m;
                }
            }
            sessions.push(SessionSummary {
                given: given.to_vec(),
                pairs,
                iterations: fit.iterations,
                converged: fit.converged,
                match_share: fit.share,
            });
        }
        let start = initial_m();
        let m: Table = std::array::from_fn(|k| {
            if estimates[k] == 0.0 {
                start[k]
            } else {
                m_sum[k].map(|v| v / estimates[k])
            }
        });
        let fit = em(&patterns, [true; FIELD_COUNT], (m, u), false, config.em_max_iterations);
        sessions.push(SessionSummary {
            given: Vec::new(),
            pairs: compared.gammas.len(),
            iterations: fit.iterations,
            converged: fit.converged,
            match_share: fit.share,
        });

        let expected_matches = fit.share * compared.gammas.len() as f64;
        let prior = (expected_matches / all_pairs.max(1.0)).clamp(1e-15, 0.5);
        let mut weight: Table = [[0.0; MAX_LEVELS]; FIELD_COUNT];
        let fields = Field::ALL
            .iter()
            .enumerate()
            .map(|(k, &field)| FieldParams {
                field,
                levels: (1..levels_of(k))
                    .filter(|&l| is_evidence(k, l))
                    .map(|l| {
                        weight[k][l] = (m[k][l] / u[k][l]).log2();
                        LevelParams {
                            level: field.levels()[l],
                            m: m[k][l],
                            u: u[k][l],
                            weight: weight[k][l],
                        }
                    })
                    .collect(),
            })
            .collect();
        Self {
            prior,
            prior_weight: weight_of(prior),
            fields,
            em: EmSummary {
                sessions,
                candidate_match_share: fit.share,
                candidate_pairs: compared.gammas.len(),
                random_pairs,
            },
            m,
            weight,
        }
    }

    /// The weight of field `k` at level `l` for records `a` and `b`, with the term-frequency
    /// adjustment of exact matches.
    fn field_weight(&self, p: &Prepared, k: usize, l: usize, a: usize) -> f64 {
        let field = Field::ALL[k];
        let frequency = match (field, field.levels()[l]) {
            (Field::FirstName, Level::Exact) => p.first_counts.frequency(p.first[a]),
            (Field::LastName, Level::Exact) => p.last_counts.frequency(p.last[a]),
            (Field::Location, Level::SameAddress) => p.address_counts.frequency(p.address[a]),
            (Field::Location, Level::SamePostcode) => p.postcode_counts.frequency(p.postcode[a]),
            (Field::Email, Level::Exact) => p.email_counts.frequency(p.email[a]),
            (Field::Phone, Level::Exact) => p.phone_counts.frequency(p.phone[a]),
            _ => return self.weight[k][l],
        };
        (self.m[k][l] / frequency).log2()
    }

    /// The match weight of a pair whose first record is `a`, compared as `g` (exact matches
    /// share their value, so one record tells the term frequency).
    pub(crate) fn pair_weight(&self, p: &Prepared, a: u32, g: Gamma) -> f64 {
        (0..FIELD_COUNT)
            .filter(|&k| g.level(k) != 0)
            .map(|k| self.field_weight(p, k, g.level(k), a as usize))
            .sum::<f64>()
            + self.prior_weight
    }

    /// Each field's contribution for a pair whose first record is `a`, compared as `g`.
    pub(crate) fn evidence(&self, p: &Prepared, a: u32, g: Gamma) -> [Evidence; FIELD_COUNT] {
        std::array::from_fn(|k| {
            let field = Field::ALL[k];
            let l = g.level(k);
            Evidence {
                field,
                level: field.levels()[l],
                weight: if is_evidence(k, l) {
                    self.field_weight(p, k, l, a as usize) as f32
                } else {
                    0.0
                },
            }
        })
    }

    /// The evidence against records `a` and `b` being one person: the sum of the negative
    /// weights of their fields, in bits (0 or less). Location is left out: people move, and a
    /// move on top of a misspelt name would otherwise split a person.
    pub(crate) fn evidence_against(&self, g: Gamma) -> f64 {
        Field::ALL
            .iter()
            .enumerate()
            .filter(|&(_, &f)| f != Field::Location)
            .map(|(k, _)| self.weight[k][g.level(k)].min(0.0))
            .sum()
    }

    /// The pair `(a, b)` compared as `g`, with its evidence.
    pub(crate) fn scored_pair(&self, p: &Prepared, a: u32, b: u32, g: Gamma) -> ScoredPair {
        let weight = self.pair_weight(p, a, g);
        ScoredPair {
            a: p.id(a),
            b: p.id(b),
            probability: probability(weight),
            weight,
            evidence: self.evidence(p, a, g),
            profiles: false,
        }
    }

    /// Records `a` and `b` compared as the profiles `xs` and `ys` they belong to: each field
    /// at the best level found between a record of one and a record of the other (the birth
    /// date one record knows against the birth date another knows), the missing levels only
    /// where no pair has the field.
    pub(crate) fn profile_pair(&self, p: &Prepared, (a, b): (u32, u32), (xs, ys): (&[u32], &[u32])) -> ScoredPair {
        let mut best: [Option<Evidence>; FIELD_COUNT] = [None; FIELD_COUNT];
        for &x in xs {
            for &y in ys {
                let (lo, hi) = (x.min(y), x.max(y));
                let g = compare(p, lo, hi);
                for (k, e) in self.evidence(p, lo, g).into_iter().enumerate() {
                    let counts = is_evidence(k, g.level(k));
                    if counts && best[k].is_none_or(|b| e.weight > b.weight) {
                        best[k] = Some(e);
                    }
                }
            }
        }
        let evidence = std::array::from_fn(|k| {
            best[k].unwrap_or(Evidence {
                field: Field::ALL[k],
                level: Level::Missing,
                weight: 0.0,
            })
        });
        let weight = self.prior_weight + evidence.iter().map(|e| f64::from(e.weight)).sum::<f64>();
        ScoredPair {
            a: p.id(a),
            b: p.id(b),
            probability: probability(weight),
            weight,
            evidence,
            profiles: true,
        }
    }

    /// Scores every compared pair and keeps those at or above the review threshold.
    pub fn score(&self, p: &Prepared, compared: &Compared, config: &MatchConfig) -> Scored {
        let floor = weight_of(config.review_threshold);
        let indexes: Vec<u32> = (0..compared.pairs.len() as u32).collect();
        let mut pairs: Vec<(u32, f64)> = parallel(&indexes, config.threads(), |chunk| {
            chunk
                .iter()
                .filter_map(|&i| {
                    let (a, _) = compared.pairs[i as usize];
                    let w = self.pair_weight(p, a, compared.gammas[i as usize]);
                    (w >= floor).then_some((i, w))
                })
                .collect::<Vec<_>>()
        })
        .concat();
        pairs.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        Scored {
            pairs,
            scored: compared.pairs.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three fields, each exact or different: matches agree on each 90% of the time,
    /// non-matches 5%; one pair in ten matches. (Two fields would not do: a two-class mixture
    /// of two binary fields has more parameters than the data has cells.)
    #[test]
    fn em_recovers_m_of_a_known_mixture() {
        // Level indexes of "exact" and "different" for first name, last name, birth date.
        let (exact, different) = ([1u8, 1, 1], [8u8, 7, 4]);
        let mut patterns = Vec::new();
        for bits in 0..8u32 {
            let agrees = |k: u32| bits & (1 << k) != 0;
            let (mut pm, mut pu) = (0.1, 0.9);
            let mut code = 0;
            for k in 0..3 {
                let level = if agrees(k) {
                    exact[k as usize]
                } else {
                    different[k as usize]
                };
                code |= u32::from(level) << (4 * k);
                pm *= if agrees(k) { 0.9 } else { 0.1 };
                pu *= if agrees(k) { 0.05 } else { 0.95 };
            }
            patterns.push((Gamma(code), 20_000.0 * (pm + pu)));
        }
        let mut u = initial_m();
        for k in 0..3 {
            u[k][1] = 0.3;
            u[k][usize::from(different[k])] = 0.7;
        }
        let fit = em(&patterns, [true; FIELD_COUNT], (initial_m(), u), true, 500);
        assert!(fit.converged);
        assert!((fit.share - 0.1).abs() < 0.01, "{}", fit.share);
        for k in 0..3 {
            assert!((fit.m[k][1] - 0.9).abs() < 0.02, "{k}: {}", fit.m[k][1]);
        }
    }

    #[test]
    fn probability_and_weight_are_inverse() {
        for w in [-20.0, -1.0, 0.0, 3.5, 20.0] {
            assert!((weight_of(probability(w)) - w).abs() < 1e-6);
        }
    }
}
