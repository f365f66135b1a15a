//! The deterministic identity graph: which identifiers are one person.
//!
//! # Design
//!
//! Identifiers are nodes; every message links the identifiers it carries. A profile is a
//! connected component of the links that were *applied*. Resolution is incremental — one
//! message at a time, in log order — and runs the guards that keep strangers apart before
//! applying any link:
//!
//! - **blocked values** (`null`, `anonymous`, `-1`, `test@test.com`, a value made only of zeros
//!   and dashes, the shop's own phone number…) never link anything;
//! - **limits** of distinct values per kind and profile (one user id, five of anything else by
//!   default) and a cap on the number of identifiers of a profile;
//! - a **priority** order of kinds (user id, email, phone, …): identifiers are considered in
//!   that order, so when a link would break a limit it is the lower-priority identifier that is
//!   left out, and the message goes with the higher-priority one.
//!
//! A merge keeps the older profile's id and records the other as merged into it, so ids are
//! stable. Every applied link is stored with its provenance (message, source, time), which is
//! what lets a wrong merge be split again later: profiles are recomputed as the components of
//! the links that remain.

use super::identifier::Identifier;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Values that identify no one, whatever the field: placeholders and test addresses that forms
/// and tills fill in. Shared by deterministic resolution and probabilistic matching.
pub const BLOCKED_VALUES: [&str; 12] = [
    "",
    "null",
    "undefined",
    "none",
    "nil",
    "anonymous",
    "unknown",
    "n/a",
    "-1",
    "test@test.com",
    "test@example.com",
    "noemail@noemail.com",
];

/// The guards against over-merging, per identifier kind.
#[derive(Clone, Debug, Serialize)]
pub struct Guards {
    /// Values that never identify anyone, for every kind (compared lowercased).
    pub blocked: Vec<String>,
    /// Values blocked for one kind only (the shop's own phone number, a demo card).
    pub blocked_by_kind: BTreeMap<String, Vec<String>>,
    /// Most distinct values of a kind in one profile.
    pub limits: BTreeMap<String, usize>,
    /// The limit of kinds not listed in `limits`.
    pub default_limit: usize,
    /// Kinds from the most to the least trusted.
    pub priority: Vec<String>,
    /// Most identifiers in one profile.
    pub max_identifiers: usize,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            blocked: BLOCKED_VALUES.map(String::from).to_vec(),
            blocked_by_kind: BTreeMap::new(),
            limits: BTreeMap::from([("user_id".to_owned(), 1)]),
            default_limit: 5,
            priority: ["user_id", "email", "phone", "loyalty_card", "anonymous_id"]
                .map(String::from)
                .to_vec(),
            max_identifiers: 100,
        }
    }
}

impl Guards {
    /// Why `id` may never link anything, if it may not.
    pub fn blocked(&self, id: &Identifier) -> bool {
        let v = id.value().to_lowercase();
        let digits_of_nothing = !v.is_empty() && v.chars().all(|c| c == '0' || c == '-' || c == '+');
        digits_of_nothing
            || self.blocked.contains(&v)
            || self
                .blocked_by_kind
                .get(id.kind())
                .is_some_and(|list| list.iter().any(|b| b.to_lowercase() == v))
    }

    /// The limit of distinct values of `kind` in one profile.
    pub fn limit(&self, kind: &str) -> usize {
        self.limits.get(kind).copied().unwrap_or(self.default_limit)
    }

    /// Rank of a kind (lower is more trusted); unlisted kinds come last, in name order.
    fn rank(&self, kind: &str) -> usize {
        self.priority
            .iter()
            .position(|k| k == kind)
            .unwrap_or(self.priority.len())
    }

    /// Whether one profile may hold all of `ids`.
    fn fits(&self, ids: &BTreeSet<Identifier>) -> Result<(), LeftOut> {
        if ids.len() > self.max_identifiers {
            return Err(LeftOut::ProfileFull);
        }
        let mut per_kind: HashMap<&str, usize> = HashMap::new();
        for id in ids {
            let n = per_kind.entry(id.kind()).or_default();
            *n += 1;
            if *n > self.limit(id.kind()) {
                return Err(LeftOut::LimitReached {
                    kind: id.kind().to_owned(),
                    limit: self.limit(id.kind()),
                });
            }
        }
        Ok(())
    }
}

/// Why an identifier of a message was not linked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum LeftOut {
    /// A value that identifies no one.
    Blocked,
    /// Linking it would give the profile more values of its kind than allowed.
    LimitReached {
        /// Kind that would overflow.
        kind: String,
        /// Its limit.
        limit: usize,
    },
    /// Linking it would give the profile more identifiers than allowed.
    ProfileFull,
    /// A reviewer undid a merge this message made: its links are not applied again.
    Rejected,
}

/// The identifiers of one existing profile.
#[derive(Clone, Debug, Default)]
pub struct ProfileIds {
    /// Every identifier of the profile.
    pub ids: BTreeSet<Identifier>,
}

/// What resolving one message decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The profile the message belongs to, when it exists already (after merges).
    pub profile: Option<i64>,
    /// Profiles merged: `(survivor, absorbed, identifier that linked them)`.
    pub merges: Vec<(i64, i64, Identifier)>,
    /// Identifiers newly attached to the profile.
    pub attached: Vec<Identifier>,
    /// Identifiers of the message that were not linked, with why.
    pub left_out: Vec<(Identifier, LeftOut)>,
    /// The links applied, from the message's anchor (its most trusted linked identifier).
    pub links: Vec<(Identifier, Identifier)>,
}

/// Resolves one message's identifiers against the current graph.
///
/// `owner` says which profile each known identifier belongs to; `profiles` holds the
/// identifiers of every profile `owner` names. Profile ids grow with age, so the smaller id of
/// a merge survives. Identifiers are taken most trusted first, known or not: each joins the
/// profile built so far if the guards allow, and is left out otherwise. When `profile` comes
/// back empty, the message founds a new profile with the `attached` identifiers.
pub fn resolve(
    message_ids: &[Identifier],
    owner: &HashMap<Identifier, i64>,
    profiles: &HashMap<i64, ProfileIds>,
    guards: &Guards,
) -> Resolution {
    let mut out = Resolution::default();
    let mut ids: Vec<&Identifier> = Vec::new();
    for id in message_ids {
        if ids.contains(&id) {
            continue;
        }
        if guards.blocked(id) {
            out.left_out.push((id.clone(), LeftOut::Blocked));
        } else {
            ids.push(id);
        }
    }
    ids.sort_by(|a, b| guards.rank(a.kind()).cmp(&guards.rank(b.kind())).then_with(|| a.cmp(b)));

    // The profile built so far (`None`: a new one), its identifiers, and the anchor that every
    // link of this message hangs from: its most trusted identifier.
    let mut profile: Option<i64> = None;
    let mut members: BTreeSet<Identifier> = BTreeSet::new();
    let mut anchor: Option<Identifier> = None;
    for id in ids {
        let Some(a) = anchor.clone() else {
            anchor = Some(id.clone());
            match owner.get(id) {
                Some(&p) => {
                    profile = Some(p);
                    members = profiles.get(&p).map(|p| p.ids.clone()).unwrap_or_default();
                }
                None => {
                    members.insert(id.clone());
                    out.attached.push(id.clone());
                }
            }
            continue;
        };
        match owner.get(id) {
            Some(&p) if Some(p) == profile => {}
            Some(&p) => {
                let theirs = profiles.get(&p).map(|p| p.ids.clone()).unwrap_or_default();
                let union: BTreeSet<Identifier> = members.union(&theirs).cloned().collect();
                match guards.fits(&union) {
                    Ok(()) => {
                        profile = Some(match profile {
                            // What was new so far simply joins the existing profile.
                            None => p,
                            Some(cur) => {
                                let (survivor, absorbed) = (cur.min(p), cur.max(p));
                                out.merges.push((survivor, absorbed, id.clone()));
                                survivor
                            }
                        });
                        members = union;
                        out.links.push((a, id.clone()));
                    }
                    Err(why) => out.left_out.push((id.clone(), why)),
                }
            }
            None => {
                let mut with = members.clone();
                with.insert(id.clone());
                match guards.fits(&with) {
                    Ok(()) => {
                        members = with;
                        out.attached.push(id.clone());
                        out.links.push((a, id.clone()));
                    }
                    Err(why) => out.left_out.push((id.clone(), why)),
                }
            }
        }
    }
    out.profile = profile;
    out
}

/// Profiles recomputed from links, for splitting: the connected components of `links` over
/// `ids` (identifiers without links are components of their own), each as a sorted set.
pub fn components(ids: &BTreeSet<Identifier>, links: &[(Identifier, Identifier)]) -> Vec<BTreeSet<Identifier>> {
    let index: HashMap<&Identifier, usize> = ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let mut parent: Vec<usize> = (0..ids.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for (a, b) in links {
        if let (Some(&i), Some(&j)) = (index.get(a), index.get(b)) {
            let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
            if ri != rj {
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut groups: BTreeMap<usize, BTreeSet<Identifier>> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().insert(id.clone());
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, v: &str) -> Identifier {
        Identifier::parse(kind, v).unwrap()
    }

    struct Graph {
        owner: HashMap<Identifier, i64>,
        profiles: HashMap<i64, ProfileIds>,
        next: i64,
        guards: Guards,
    }

    impl Graph {
        fn new() -> Self {
            Self {
                owner: HashMap::new(),
                profiles: HashMap::new(),
                next: 1,
                guards: Guards::default(),
            }
        }

        /// Applies a resolution the way the store does.
        fn feed(&mut self, ids: &[Identifier]) -> (i64, Resolution) {
            let r = resolve(ids, &self.owner, &self.profiles, &self.guards);
            let profile = match r.profile {
                Some(p) => p,
                None => {
                    self.next += 1;
                    self.next - 1
                }
            };
            for (survivor, absorbed, _) in &r.merges {
                let moved = self.profiles.remove(absorbed).unwrap_or_default();
                for i in &moved.ids {
                    self.owner.insert(i.clone(), *survivor);
                }
                self.profiles.entry(*survivor).or_default().ids.extend(moved.ids);
            }
            for i in &r.attached {
                self.owner.insert(i.clone(), profile);
                self.profiles.entry(profile).or_default().ids.insert(i.clone());
            }
            (profile, r)
        }
    }

    #[test]
    fn identify_links_a_browser_to_a_user_and_merges_keep_the_older_id() {
        let mut g = Graph::new();
        let (p1, _) = g.feed(&[id("anonymous_id", "a1")]);
        let (p2, _) = g.feed(&[id("user_id", "u1"), id("email", "ana@example.org")]);
        assert_ne!(p1, p2);
        let (p, r) = g.feed(&[id("user_id", "u1"), id("anonymous_id", "a1")]);
        assert_eq!(p, p1.min(p2), "the older profile survives");
        assert_eq!(r.merges.len(), 1);
        assert_eq!(g.profiles[&p].ids.len(), 3);
        assert_eq!(r.links, vec![(id("user_id", "u1"), id("anonymous_id", "a1"))]);
    }

    #[test]
    fn a_shared_family_email_never_merges_two_user_ids() {
        let mut g = Graph::new();
        let (ana, _) = g.feed(&[id("user_id", "ana"), id("email", "famille@example.org")]);
        let (bob, r) = g.feed(&[id("user_id", "bob"), id("email", "famille@example.org")]);
        assert_eq!(
            r.left_out,
            vec![(
                id("email", "famille@example.org"),
                LeftOut::LimitReached {
                    kind: "user_id".into(),
                    limit: 1
                }
            )]
        );
        // Known first or not, the user id decides: the same holds when the user id is new.
        let (_, r) = g.feed(&[id("email", "famille@example.org"), id("user_id", "carla")]);
        assert_eq!(r.left_out[0].0, id("email", "famille@example.org"));
        assert_ne!(ana, bob, "the lower-priority email is left out; the user id decides");
        assert!(!g.profiles[&bob].ids.contains(&id("email", "famille@example.org")));
    }

    #[test]
    fn blocked_values_link_nothing() {
        let mut g = Graph::new();
        g.guards
            .blocked_by_kind
            .insert("phone".into(), vec!["+33140000000".into()]);
        let (a, _) = g.feed(&[id("user_id", "a"), id("phone", "01 40 00 00 00")]);
        let (b, r) = g.feed(&[
            id("user_id", "b"),
            id("phone", "+33 1 40 00 00 00"),
            id("anonymous_id", "null"),
        ]);
        assert_ne!(a, b);
        assert_eq!(r.left_out.iter().filter(|(_, w)| *w == LeftOut::Blocked).count(), 2);
        let (_, r) = g.feed(&[id("anonymous_id", "0000-0000"), id("user_id", "-1")]);
        assert_eq!(r.left_out.len(), 2);
    }

    #[test]
    fn limits_and_profile_size_are_enforced() {
        let mut g = Graph::new();
        g.guards.limits.insert("anonymous_id".into(), 2);
        let (p, _) = g.feed(&[id("user_id", "u"), id("anonymous_id", "d1")]);
        g.feed(&[id("user_id", "u"), id("anonymous_id", "d2")]);
        let (q, r) = g.feed(&[id("user_id", "u"), id("anonymous_id", "d3")]);
        assert_eq!(p, q);
        assert_eq!(
            r.left_out[0].1,
            LeftOut::LimitReached {
                kind: "anonymous_id".into(),
                limit: 2
            }
        );
        g.guards.max_identifiers = 3;
        let (_, r) = g.feed(&[id("user_id", "u"), id("email", "u@example.org")]);
        assert_eq!(r.left_out[0].1, LeftOut::ProfileFull);
    }

    #[test]
    fn components_split_on_the_links_that_remain() {
        let ids: BTreeSet<Identifier> = [
            id("user_id", "a"),
            id("anonymous_id", "x"),
            id("user_id", "b"),
            id("anonymous_id", "y"),
        ]
        .into();
        let links = vec![
            (id("user_id", "a"), id("anonymous_id", "x")),
            (id("user_id", "b"), id("anonymous_id", "y")),
        ];
        let parts = components(&ids, &links);
        assert_eq!(parts.len(), 2);
        assert!(
            parts
                .iter()
                .any(|p| p.contains(&id("user_id", "a")) && p.contains(&id("anonymous_id", "x")))
        );
    }
}
