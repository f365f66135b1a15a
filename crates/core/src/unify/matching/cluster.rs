//! Clusters: which records are one person, from the pairs the model is sure of.
//!
//! # Design
//!
//! Pairs at or above [`MatchConfig::auto_merge_threshold`] are merged with a union-find,
//! strongest first. Then the clusters of each grey-zone pair are compared as profiles: a
//! record too thin to be merged on its own (a till receipt: name, postcode, birth date) is
//! merged when its profile and another's, each field at its best level between their
//! records, reach the threshold — the golden record knows more than each of its records. Pairs in the grey zone down to
//! [`MatchConfig::review_threshold`] go to a reviewer, unless their records ended up together
//! anyway. Merging is transitive, so one
//! wrong pair can join two people with all their records; what a merge may never do is
//! checked on the clusters, not on the pair:
//!
//! - a person has **one user id** (the shop's account id): a merge that would give a cluster
//!   two is refused, however sure the model is;
//! - at most [`Limits::max_emails`] distinct emails and [`Limits::max_phones`] phones;
//! - records a reviewer **rejected** as different people are never brought together, not even
//!   through a third record;
//! - no two records of a cluster may have more than
//!   [`MatchConfig::max_evidence_against`] bits of evidence against being one person (a
//!   different first name *and* a different birth date, say). This is what stops a chain: a record that
//!   knows only a family's last name, address and shared email is rightly close to each member
//!   of the household, and merging it with both would merge the household. The strongest of
//!   its pairs wins; the other is refused.
//!
//! Strongest first matters: when a weak pair and a strong pair compete for a limit, the strong
//! one wins. Blocked and overused values never reach this stage: they were made missing when
//! the records were prepared, so they can neither count as evidence nor as identifiers.
//! Every merge and every refusal is returned with its per-field evidence, so the API can show
//! why.

use super::blocking::BlockingReport;
use super::compare::{Compared, compare};
use super::model::{Model, Scored, ScoredPair};
use super::record::{Attribute, MatchError, NONE, Prepared, ValueCount};
use super::{Limits, MatchConfig, parallel};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// What reviewers decided about grey-zone pairs, by record id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewDecisions {
    /// Pairs a reviewer said are one person: merged (within the limits) whatever their score.
    pub accepted: Vec<(u64, u64)>,
    /// Pairs a reviewer said are two people: never in one cluster.
    pub rejected: Vec<(u64, u64)>,
}

/// Why a merge was refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// The merged cluster would carry more distinct values of an identifier than allowed.
    Limit {
        /// The identifier.
        attribute: Attribute,
        /// Distinct values the merge would have made.
        distinct: usize,
        /// The limit.
        limit: usize,
    },
    /// A reviewer said two of the records it would join are different people.
    Rejected,
    /// Two of the records it would join have too much evidence against being one person.
    Conflict {
        /// One record.
        a: u64,
        /// The other.
        b: u64,
        /// Their evidence against, in bits (negative).
        evidence_against: f64,
    },
}

/// A merge that was refused, with the pair that asked for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefusedMerge {
    /// The pair, with its evidence.
    pub pair: ScoredPair,
    /// Why it was refused.
    pub refusal: Refusal,
}

/// Everything a run found besides its clusters.
#[derive(Clone, Debug, Serialize)]
pub struct MatchReport {
    /// Records matched.
    pub records: usize,
    /// Candidate pairs by rule, and skipped blocks.
    pub blocking: BlockingReport,
    /// Candidate pairs compared.
    pub compared_pairs: usize,
    /// Values left out as blocked.
    pub blocked_values: Vec<ValueCount>,
    /// Emails and phones left out for being on too many records.
    pub overused_values: Vec<ValueCount>,
    /// The fitted model.
    pub model: Model,
    /// Pairs at or above the auto-merge threshold (before clustering).
    pub above_auto_merge: usize,
    /// Pairs in the grey zone (before clustering).
    pub in_grey_zone: usize,
}

/// The result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct MatchOutcome {
    /// Groups of record ids that are one person, each sorted, ordered by their first id.
    /// Records matched with nothing are left out.
    pub clusters: Vec<Vec<u64>>,
    /// The merges made, each the pair that joined two clusters, with its evidence.
    pub merges: Vec<ScoredPair>,
    /// Grey-zone pairs for a reviewer, most probable first.
    pub review: Vec<ScoredPair>,
    /// Merges the guards refused.
    pub refused: Vec<RefusedMerge>,
    /// How the run went.
    pub report: MatchReport,
}

/// Kinds of entries in a cluster's identity list, in sort order.
const USER: u8 = 0;
const EMAIL: u8 = 1;
const PHONE: u8 = 2;
/// An entry naming a record a reviewer rejected with one of the cluster's records.
const REJECTED: u8 = 3;

/// Union-find whose roots carry the sorted identifiers of their cluster.
struct Forest {
    parent: Vec<u32>,
    size: Vec<u32>,
    identity: Vec<Vec<(u8, u32)>>,
    /// The records of each root's cluster (empty for records that are not roots).
    members: Vec<Vec<u32>>,
}

impl Forest {
    fn new(p: &Prepared) -> Self {
        let identity = (0..p.len())
            .map(|i| {
                let mut ids: Vec<(u8, u32)> = [(USER, p.user[i]), (EMAIL, p.email[i]), (PHONE, p.phone[i])]
                    .into_iter()
                    .filter(|&(_, v)| v != NONE)
                    .collect();
                ids.shrink_to_fit();
                ids
            })
            .collect();
        Self {
            parent: (0..p.len() as u32).collect(),
            size: vec![1; p.len()],
            identity,
            members: (0..p.len() as u32).map(|i| vec![i]).collect(),
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grandparent = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grandparent;
            x = grandparent;
        }
        x
    }

    fn reject(&mut self, a: u32, b: u32) {
        for (x, y) in [(a, b), (b, a)] {
            let root = self.find(x) as usize;
            let list = &mut self.identity[root];
            if let Err(at) = list.binary_search(&(REJECTED, y)) {
                list.insert(at, (REJECTED, y));
            }
        }
    }

    /// The first pair of records across the clusters of roots `ra` and `rb` with more than
    /// `limit` bits of evidence against being one person.
    fn conflict(&self, p: &Prepared, model: &Model, ra: u32, rb: u32, limit: f64) -> Option<Refusal> {
        let (xs, ys) = (&self.members[ra as usize], &self.members[rb as usize]);
        xs.iter().find_map(|&x| {
            ys.iter().find_map(|&y| {
                let against = model.evidence_against(compare(p, x.min(y), x.max(y)));
                (against < -limit).then(|| Refusal::Conflict {
                    a: p.id(x),
                    b: p.id(y),
                    evidence_against: against,
                })
            })
        })
    }

    /// Joins the clusters of roots `ra` and `rb`, or says why not.
    fn join(&mut self, ra: u32, rb: u32, limits: &Limits) -> Result<(), Refusal> {
        let rejected = self.identity[ra as usize]
            .iter()
            .filter(|(kind, _)| *kind == REJECTED)
            .map(|&(_, r)| r)
            .collect::<Vec<_>>();
        if rejected.into_iter().any(|r| self.find(r) == rb) {
            return Err(Refusal::Rejected);
        }
        let merged = merge_sorted(&self.identity[ra as usize], &self.identity[rb as usize]);
        for (kind, attribute, limit) in [
            (USER, Attribute::UserId, limits.max_user_ids),
            (EMAIL, Attribute::Email, limits.max_emails),
            (PHONE, Attribute::Phone, limits.max_phones),
        ] {
            let distinct = merged.iter().filter(|(k, _)| *k == kind).count();
            if distinct > limit {
                return Err(Refusal::Limit {
                    attribute,
                    distinct,
                    limit,
                });
            }
        }
        let (big, small) = if self.size[ra as usize] >= self.size[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small as usize] = big;
        self.size[big as usize] += self.size[small as usize];
        self.identity[big as usize] = merged;
        self.identity[small as usize] = Vec::new();
        let moved = std::mem::take(&mut self.members[small as usize]);
        self.members[big as usize].extend(moved);
        Ok(())
    }
}

/// The sorted union of two sorted lists.
fn merge_sorted(a: &[(u8, u32)], b: &[(u8, u32)]) -> Vec<(u8, u32)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// Record indexes of a pair of ids, in order.
fn indexes(p: &Prepared, (a, b): (u64, u64)) -> Result<(u32, u32), MatchError> {
    let index = |id| p.index.get(&id).copied().ok_or(MatchError::UnknownId(id));
    let (x, y) = (index(a)?, index(b)?);
    Ok((x.min(y), x.max(y)))
}

/// Turns scored pairs into clusters, merges, review candidates and refusals.
pub fn cluster(
    p: &Prepared,
    compared: Compared,
    model: Model,
    scored: Scored,
    decisions: &ReviewDecisions,
    config: &MatchConfig,
) -> Result<MatchOutcome, MatchError> {
    let accepted = decisions
        .accepted
        .iter()
        .map(|&pair| indexes(p, pair))
        .collect::<Result<Vec<_>, _>>()?;
    let rejected = decisions
        .rejected
        .iter()
        .map(|&pair| indexes(p, pair))
        .collect::<Result<Vec<_>, _>>()?;
    let decided: HashSet<(u32, u32)> = accepted.iter().chain(&rejected).copied().collect();

    let mut forest = Forest::new(p);
    for &(a, b) in &rejected {
        forest.reject(a, b);
    }
    let mut merges = Vec::new();
    let mut refused = Vec::new();
    // Reviewers' acceptances override the model's conflicts, not the limits.
    let mut try_merge = |forest: &mut Forest, pair: ScoredPair, a: u32, b: u32, reviewed: bool| {
        let (ra, rb) = (forest.find(a), forest.find(b));
        if ra == rb {
            return;
        }
        let conflict = if reviewed {
            None
        } else {
            forest.conflict(p, &model, ra, rb, config.max_evidence_against)
        };
        let joined = match conflict {
            Some(refusal) => Err(refusal),
            None => forest.join(ra, rb, &config.limits),
        };
        match joined {
            Ok(()) => merges.push(pair),
            Err(refusal) => refused.push(RefusedMerge { pair, refusal }),
        }
    };
    for &(a, b) in &accepted {
        let pair = model.scored_pair(p, a, b, compare(p, a, b));
        try_merge(&mut forest, pair, a, b, true);
    }
    let auto_weight = (config.auto_merge_threshold / (1.0 - config.auto_merge_threshold)).log2();
    let split = scored.pairs.partition_point(|&(_, w)| w >= auto_weight);
    let (auto, grey) = scored.pairs.split_at(split);
    for &(i, _) in auto {
        let (a, b) = compared.pairs[i as usize];
        if decided.contains(&(a, b)) {
            continue;
        }
        let pair = model.scored_pair(p, a, b, compared.gammas[i as usize]);
        try_merge(&mut forest, pair, a, b, false);
    }
    let auto_pairs = auto.len();

    // Second pass: profiles. A till record (name, postcode, birth date) and a support ticket
    // (name, postcode, email) may be too thin to merge on their own, yet the ticket's profile
    // may already hold the birth date from a web account. Each pair of clusters joined by a
    // grey-zone pair is compared as profiles, strongest first, and compared again when its
    // turn comes, since clusters grow as the pass goes. (Pairs below the grey zone are not
    // worth it: a profile rarely lifts them to certainty, and they are most of the pairs.)
    let mut links: HashMap<(u32, u32), (u32, u32)> = HashMap::new();
    for &(i, _) in grey {
        let (a, b) = compared.pairs[i as usize];
        let (ra, rb) = (forest.find(a), forest.find(b));
        let grown = forest.size[ra as usize] > 1 || forest.size[rb as usize] > 1;
        if ra != rb && grown && !decided.contains(&(a, b)) {
            links.entry((ra.min(rb), ra.max(rb))).or_insert((a, b));
        }
    }
    let mut links: Vec<((u32, u32), (u32, u32))> = links.into_iter().collect();
    links.sort_unstable();
    let forest_now = &forest;
    let mut profile_merges: Vec<(f64, (u32, u32))> = parallel(&links, config.threads(), |chunk| {
        chunk
            .iter()
            .filter_map(|&((ra, rb), pair)| {
                let members = (
                    forest_now.members[ra as usize].as_slice(),
                    forest_now.members[rb as usize].as_slice(),
                );
                let w = model.profile_pair(p, pair, members).weight;
                (w >= auto_weight).then_some((w, pair))
            })
            .collect::<Vec<_>>()
    })
    .concat();
    profile_merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    for (_, (a, b)) in profile_merges {
        let (ra, rb) = (forest.find(a), forest.find(b));
        if ra == rb {
            continue;
        }
        let members = (
            forest.members[ra as usize].as_slice(),
            forest.members[rb as usize].as_slice(),
        );
        let pair = model.profile_pair(p, (a, b), members);
        if pair.weight >= auto_weight {
            try_merge(&mut forest, pair, a, b, false);
        }
    }

    let review = grey
        .iter()
        .filter_map(|&(i, _)| {
            let (a, b) = compared.pairs[i as usize];
            (!decided.contains(&(a, b)) && forest.find(a) != forest.find(b))
                .then(|| model.scored_pair(p, a, b, compared.gammas[i as usize]))
        })
        .collect();

    let mut members: HashMap<u32, Vec<u64>> = HashMap::new();
    for i in 0..p.len() as u32 {
        let root = forest.find(i);
        if forest.size[root as usize] > 1 {
            members.entry(root).or_default().push(p.id(i));
        }
    }
    let mut clusters: Vec<Vec<u64>> = members.into_values().collect();
    for c in &mut clusters {
        c.sort_unstable();
    }
    clusters.sort_unstable_by_key(|c| c[0]);

    Ok(MatchOutcome {
        clusters,
        merges,
        review,
        refused,
        report: MatchReport {
            records: p.len(),
            blocking: compared.blocking,
            compared_pairs: scored.scored,
            blocked_values: p.blocked.clone(),
            overused_values: p.overused.clone(),
            model,
            above_auto_merge: auto_pairs,
            in_grey_zone: grey.len(),
        },
    })
}
