//! Blocking: which pairs of records are worth comparing.
//!
//! # Design
//!
//! Comparing every record with every other is quadratic: half a trillion pairs for a million
//! records. A blocking rule is a key; only records with equal keys are compared. One rule
//! misses what its key misses (a moved person has a new postcode), so several rules are
//! OR-ed, each catching what the others miss:
//!
//! | rule | catches |
//! |---|---|
//! | postcode + name initials | same home, typos past the first letter, a missing birth date |
//! | birth date + name initials | people who moved |
//! | postcode + birth date | misspelt initials, a missing name |
//! | birth date + sound of the last name | moved, with a nickname of another initial or no first name |
//! | postcode + sound of the last name | nicknames with another initial (Bob, Robert), a missing first name |
//! | postcode + address line | a missing or mangled name |
//! | double metaphones of both names + birth year | moved with a typo in the birth date's day or month, misspelt initials |
//! | email, phone | everything else, when the sources have them |
//!
//! Initials and metaphones are taken as an unordered pair, so swapped first and last names
//! share every key. A pair found by several rules is kept once, by the first rule that finds
//! it: when rule *k* yields a pair, it checks the keys of rules *0..k* for that pair instead of
//! keeping a set of every pair seen (which would take gigabytes for a million records).
//!
//! A block larger than [`MatchConfig::max_block_size`] is skipped and reported: a key shared
//! by thousands of records (a placeholder email nobody listed, a very common name in a big
//! town) would cost millions of comparisons and bring no evidence worth having, and the other
//! rules still see those records.

use super::MatchConfig;
use super::compare::Pair;
use super::parallel;
use super::record::{NONE, Prepared, unpack_date};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A blocking rule: records whose keys are equal are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockingRule {
    /// The same postcode and the same initials of first and last name, in either order.
    PostcodeInitials,
    /// The same birth date and the same initials, in either order.
    BirthDateInitials,
    /// The same postcode and birth date.
    PostcodeBirthDate,
    /// The same birth date and double metaphone code of the last name.
    BirthDateLastNameSound,
    /// The same postcode and double metaphone code of the last name.
    PostcodeLastNameSound,
    /// The same postcode and address line.
    PostcodeAddress,
    /// The same double metaphone codes of first and last name, in either order, and the same
    /// birth year.
    PhoneticNamesBirthYear,
    /// The same email.
    Email,
    /// The same phone.
    Phone,
}

impl BlockingRule {
    /// Every rule, in the default order.
    pub const ALL: [BlockingRule; 9] = [
        Self::PostcodeInitials,
        Self::BirthDateInitials,
        Self::PostcodeBirthDate,
        Self::BirthDateLastNameSound,
        Self::PostcodeLastNameSound,
        Self::PostcodeAddress,
        Self::PhoneticNamesBirthYear,
        Self::Email,
        Self::Phone,
    ];

    /// The key of record `i`, or 0 when the record has none under this rule.
    fn key(self, p: &Prepared, i: usize) -> u64 {
        let initials = || -> Option<u64> {
            let initial = |name: u32| (name != NONE).then(|| u64::from(p.name_meta[name as usize].initial));
            let (f, l) = (initial(p.first[i]), initial(p.last[i]));
            if f.is_none() && l.is_none() {
                return None;
            }
            let (f, l) = (f.unwrap_or(0), l.unwrap_or(0));
            Some(f.min(l) << 8 | f.max(l))
        };
        let key = match self {
            Self::PostcodeInitials => (p.postcode[i] != NONE)
                .then(initials)
                .flatten()
                .map(|ini| mix(mix(1, u64::from(p.postcode[i])), ini)),
            Self::BirthDateInitials => (p.birth[i] != 0)
                .then(initials)
                .flatten()
                .map(|ini| mix(mix(2, u64::from(p.birth[i])), ini)),
            Self::PostcodeBirthDate => (p.postcode[i] != NONE && p.birth[i] != 0)
                .then(|| mix(mix(6, u64::from(p.postcode[i])), u64::from(p.birth[i]))),
            Self::PostcodeLastNameSound => (p.postcode[i] != NONE && p.last[i] != NONE).then(|| {
                let sound = p.name_meta[p.last[i] as usize].metaphone.0;
                mix(mix(7, u64::from(p.postcode[i])), u64::from(sound))
            }),
            Self::BirthDateLastNameSound => (p.birth[i] != 0 && p.last[i] != NONE).then(|| {
                let sound = p.name_meta[p.last[i] as usize].metaphone.0;
                mix(mix(9, u64::from(p.birth[i])), u64::from(sound))
            }),
            Self::PostcodeAddress => (p.postcode[i] != NONE && p.address[i] != NONE)
                .then(|| mix(mix(8, u64::from(p.postcode[i])), u64::from(p.address[i]))),
            Self::PhoneticNamesBirthYear => {
                let (f, l) = (p.first[i], p.last[i]);
                (f != NONE && l != NONE && p.birth[i] != 0).then(|| {
                    let (mf, ml) = (p.name_meta[f as usize].metaphone.0, p.name_meta[l as usize].metaphone.0);
                    let (lo, hi) = (u64::from(mf.min(ml)), u64::from(mf.max(ml)));
                    mix(mix(mix(3, lo), hi), u64::from(unpack_date(p.birth[i]).0))
                })
            }
            Self::Email => (p.email[i] != NONE).then(|| mix(4, u64::from(p.email[i]))),
            Self::Phone => (p.phone[i] != NONE).then(|| mix(5, u64::from(p.phone[i]))),
        };
        // 0 means "no key": a hash that happens to be 0 moves to 1.
        key.map_or(0, |k| k.max(1))
    }

    /// What the records of `i`'s block share, for the report.
    fn describe(self, p: &Prepared, i: usize) -> String {
        let initials = || {
            let initial = |name: u32| {
                if name == NONE {
                    '-'
                } else {
                    char::from(p.name_meta[name as usize].initial)
                }
            };
            format!("{} {}", initial(p.first[i]), initial(p.last[i]))
        };
        let date = || {
            let (y, m, d) = unpack_date(p.birth[i]);
            format!("{y:04}-{m:02}-{d:02}")
        };
        match self {
            Self::PostcodeInitials => format!("postcode {}, initials {}", p.postcodes.get(p.postcode[i]), initials()),
            Self::BirthDateInitials => format!("born {}, initials {}", date(), initials()),
            Self::PostcodeBirthDate => format!("postcode {}, born {}", p.postcodes.get(p.postcode[i]), date()),
            Self::PostcodeLastNameSound => format!(
                "postcode {}, last name sounding like {}",
                p.postcodes.get(p.postcode[i]),
                p.metaphones.get(p.name_meta[p.last[i] as usize].metaphone.0)
            ),
            Self::BirthDateLastNameSound => format!(
                "born {}, last name sounding like {}",
                date(),
                p.metaphones.get(p.name_meta[p.last[i] as usize].metaphone.0)
            ),
            Self::PostcodeAddress => format!(
                "postcode {}, address {}",
                p.postcodes.get(p.postcode[i]),
                p.addresses.get(p.address[i])
            ),
            Self::PhoneticNamesBirthYear => format!(
                "names sounding like {} {}, born {}",
                p.metaphones.get(p.name_meta[p.first[i] as usize].metaphone.0),
                p.metaphones.get(p.name_meta[p.last[i] as usize].metaphone.0),
                unpack_date(p.birth[i]).0
            ),
            Self::Email => format!("email {}", p.emails.get(p.email[i])),
            Self::Phone => format!("phone {}", p.phones.get(p.phone[i])),
        }
    }
}

/// One round of the SplitMix64 finaliser over `h` and `v`: keys only need to be spread, and
/// a collision only costs one useless comparison.
fn mix(h: u64, v: u64) -> u64 {
    let mut z = (h ^ v.rotate_left(32)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A block that was too large to compare. Its key may be personal data (a name, an email), so
/// `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedBlock {
    /// The rule that made it.
    pub rule: BlockingRule,
    /// How many records shared the key.
    pub records: usize,
    /// What they shared.
    pub key: String,
}

impl fmt::Debug for SkippedBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SkippedBlock")
            .field("rule", &self.rule)
            .field("records", &self.records)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// How many pairs a rule found that no earlier rule had.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCount {
    /// The rule.
    pub rule: BlockingRule,
    /// Pairs it found first.
    pub pairs: usize,
}

/// What blocking found and skipped, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockingReport {
    /// Pairs found by each rule (and by no earlier one).
    pub pairs_by_rule: Vec<RuleCount>,
    /// Blocks skipped for their size, largest first.
    pub skipped_blocks: Vec<SkippedBlock>,
}

/// The candidate pairs of a run: each pair of records that shares a key, once.
pub struct Candidates {
    pub(crate) pairs: Vec<Pair>,
    /// Pairs found by each rule.
    pub by_rule: Vec<RuleCount>,
    /// Blocks that were skipped for their size, largest first.
    pub skipped: Vec<SkippedBlock>,
}

/// The keys of one rule, with the records sorted by key.
struct RuleKeys {
    keys: Vec<u64>,
    sorted: Vec<(u64, u32)>,
    skipped: Vec<SkippedBlock>,
}

impl RuleKeys {
    fn new(p: &Prepared, rule: BlockingRule, max_block: usize) -> Self {
        let mut keys: Vec<u64> = (0..p.len()).map(|i| rule.key(p, i)).collect();
        let mut sorted: Vec<(u64, u32)> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| **k != 0)
            .map(|(i, &k)| (k, i as u32))
            .collect();
        sorted.sort_unstable();
        let mut skipped = Vec::new();
        let mut kept = Vec::with_capacity(sorted.len());
        for block in sorted.chunk_by(|x, y| x.0 == y.0) {
            if block.len() > max_block {
                skipped.push(SkippedBlock {
                    rule,
                    records: block.len(),
                    key: rule.describe(p, block[0].1 as usize),
                });
                // The pairs of a skipped block are not "already found" for later rules.
                for &(_, i) in block {
                    keys[i as usize] = 0;
                }
            } else if block.len() > 1 {
                kept.extend_from_slice(block);
            }
        }
        Self {
            keys,
            sorted: kept,
            skipped,
        }
    }
}

impl Candidates {
    /// Finds the candidate pairs of `p` under `config`'s rules.
    pub fn new(p: &Prepared, config: &MatchConfig) -> Self {
        let threads = config.threads();
        let rules = &config.rules;
        let keys: Vec<RuleKeys> = parallel(rules, threads, |chunk| {
            chunk
                .iter()
                .map(|&rule| RuleKeys::new(p, rule, config.max_block_size))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        let indexed: Vec<usize> = (0..rules.len()).collect();
        let found: Vec<Vec<Pair>> = parallel(&indexed, threads, |chunk| {
            chunk.iter().map(|&r| pairs_of_rule(&keys, r)).collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        let by_rule = rules
            .iter()
            .zip(&found)
            .map(|(&rule, pairs)| RuleCount {
                rule,
                pairs: pairs.len(),
            })
            .collect();
        let mut skipped: Vec<SkippedBlock> = keys.into_iter().flat_map(|k| k.skipped).collect();
        skipped.sort_by(|a, b| b.records.cmp(&a.records).then(a.key.cmp(&b.key)));
        Self {
            pairs: found.concat(),
            by_rule,
            skipped,
        }
    }

    /// The number of candidate pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when no pair is worth comparing.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The pairs of rule `r` that no earlier rule finds.
fn pairs_of_rule(keys: &[RuleKeys], r: usize) -> Vec<Pair> {
    let mut out = Vec::new();
    let earlier = &keys[..r];
    for block in keys[r].sorted.chunk_by(|x, y| x.0 == y.0) {
        for (n, &(_, i)) in block.iter().enumerate() {
            for &(_, j) in &block[n + 1..] {
                let (a, b) = (i.min(j), i.max(j));
                let seen = earlier.iter().any(|e| {
                    let k = e.keys[a as usize];
                    k != 0 && k == e.keys[b as usize]
                });
                if !seen {
                    out.push((a, b));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unify::matching::MatchRecord;
    use jiff::civil::date;
    use std::collections::HashSet;

    fn rec(id: u64, first: &str, last: &str, postcode: &str, phone: &str) -> MatchRecord {
        MatchRecord {
            id,
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            postcode: Some(postcode.into()),
            birth_date: Some(date(1980, 1, 1 + id as i8 % 28)),
            phone: (!phone.is_empty()).then(|| phone.into()),
            ..MatchRecord::default()
        }
    }

    #[test]
    fn each_pair_once_and_swaps_share_keys() {
        let records = [
            rec(0, "Jean", "Martin", "75015", "0639980001"),
            rec(1, "Martin", "Jean", "75015", "0639980001"),
            rec(2, "Louise", "Durand", "69007", ""),
        ];
        let p = Prepared::new(&records, &MatchConfig::default()).unwrap();
        let c = Candidates::new(&p, &MatchConfig::default());
        assert_eq!(c.pairs, vec![(0, 1)]);
        assert_eq!(c.by_rule[0].pairs, 1);
        assert!(c.by_rule[1..].iter().all(|r| r.pairs == 0));
    }

    #[test]
    fn giant_blocks_are_skipped_and_reported_without_losing_other_rules() {
        // Ten customers given the shop's phone; two of them also share a home.
        let names = [
            "Bernard", "Dubois", "Lefebvre", "Moreau", "Girard", "Fournier", "Mercier", "Blanc", "Guerin", "Roux",
        ];
        let mut records: Vec<MatchRecord> = (0..10)
            .map(|i| {
                let postcode = format!("{}", 10000 + i);
                rec(i, "Ana", names[i as usize], &postcode, "0199000000")
            })
            .collect();
        records[1].postcode = records[0].postcode.clone();
        records[1].last_name = records[0].last_name.clone();
        let config = MatchConfig {
            max_block_size: 5,
            ..MatchConfig::default()
        };
        let p = Prepared::new(&records, &config).unwrap();
        let c = Candidates::new(&p, &config);
        assert_eq!(c.skipped.len(), 1);
        assert_eq!(c.skipped[0].rule, BlockingRule::Phone);
        assert_eq!(c.skipped[0].records, 10);
        assert_eq!(c.pairs, vec![(0, 1)]);
    }

    #[test]
    fn rules_together_find_what_each_finds() {
        let records: Vec<MatchRecord> = (0..40)
            .map(|i| {
                rec(
                    i,
                    ["Jean", "Jeanne", "Louis"][i as usize % 3],
                    ["Martin", "Martine", "Morel"][i as usize % 3 / 2],
                    ["75015", "75016"][i as usize % 2],
                    "",
                )
            })
            .collect();
        let config = MatchConfig::default();
        let p = Prepared::new(&records, &config).unwrap();
        let c = Candidates::new(&p, &config);
        let found: HashSet<Pair> = c.pairs.iter().copied().collect();
        assert_eq!(found.len(), c.pairs.len(), "no pair twice");
        for rule in BlockingRule::ALL {
            for a in 0..40u32 {
                for b in a + 1..40 {
                    let k = rule.key(&p, a as usize);
                    if k != 0 && k == rule.key(&p, b as usize) {
                        assert!(found.contains(&(a, b)), "{rule:?} {a} {b}");
                    }
                }
            }
        }
    }
}
