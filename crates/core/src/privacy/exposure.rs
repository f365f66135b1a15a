//! Which of a person's traits each source passed on, and when: what a breach register needs to
//! say in seconds whom a breach touched, kept in memory beside the audience index.
//!
//! # Design
//!
//! Every profile gets a dense slot; a slot keeps one compact entry per event of the profile that
//! carries traits (see [`crate::collect::carried_traits`]): its position in the log, its source,
//! its reception time and the *set* of trait names it carries. Sets are interned — a shop's
//! messages carry a few dozen distinct combinations — so an entry is 24 bytes, and a breach is
//! one pass over the entries: the sets that hold one of the breach's traits are marked first,
//! then each entry is a handful of comparisons. The events need no sort and no identity lookup,
//! because entries already sit under the profile their sender belongs to; only the profiles
//! touched are sorted, by id.
//!
//! The follower of the log that keeps the audience index current replaces a profile's entries
//! whenever it re-reads the profile (a new event, a merge, a split, an erasure), so the index
//! answers for every event up to the follower's position; [`Exposure::touched`] takes that
//! position, and what came after it is the store's to count.

use jiff::Timestamp;
use std::collections::HashMap;

/// One event of a profile that carries traits, as the follower reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carry {
    /// Position in the event log.
    pub seq: i64,
    /// Source id.
    pub source: i64,
    /// When it was received.
    pub received_at: Timestamp,
    /// The trait names it carries.
    pub traits: Vec<String>,
}

/// What a breach covers, as the index reads it.
#[derive(Clone, Copy, Debug)]
pub struct Window<'a> {
    /// Trait names; an event carrying any of them is in scope.
    pub traits: &'a [String],
    /// Source ids.
    pub sources: &'a [i64],
    /// Start of the reception window (inclusive).
    pub from: Option<Timestamp>,
    /// End of the reception window (exclusive).
    pub to: Timestamp,
    /// Only events at or before this position of the log.
    pub upto: i64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: i64,
    received: i64,
    source: u32,
    set: u32,
}

/// The index: per profile, the events that carry traits.
#[derive(Debug, Default)]
pub struct Exposure {
    profiles: Vec<i64>,
    entries: Vec<Vec<Entry>>,
    slot_of: HashMap<i64, usize>,
    free: Vec<usize>,
    names: HashMap<String, u32>,
    sets: Vec<Vec<u32>>,
    set_of: HashMap<Vec<u32>, u32>,
    sources: HashMap<i64, u32>,
    source_ids: Vec<i64>,
}

impl Exposure {
    /// An empty index.
    pub fn new() -> Exposure {
        Exposure::default()
    }

    /// Replaces what the index holds for `profile`.
    pub fn upsert(&mut self, profile: i64, carries: impl IntoIterator<Item = Carry>) {
        let mut entries: Vec<Entry> = carries.into_iter().map(|c| self.entry(c)).collect();
        // Collected in place, the vector would keep the larger allocation of the carries.
        entries.shrink_to_fit();
        if entries.is_empty() {
            self.remove(profile);
            return;
        }
        let slot = self.slot(profile);
        self.entries[slot] = entries;
    }

    /// The slot of `profile`, taken (a freed one first) when it has none.
    fn slot(&mut self, profile: i64) -> usize {
        if let Some(&slot) = self.slot_of.get(&profile) {
            return slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.profiles[slot] = profile;
                slot
            }
            None => {
                self.profiles.push(profile);
                self.entries.push(Vec::new());
                self.profiles.len() - 1
            }
        };
        self.slot_of.insert(profile, slot);
        slot
    }

    /// Adds one event to `profile`'s, for a build that reads the log once, in order: no list of
    /// every event is held on the way.
    pub fn push(&mut self, profile: i64, carry: Carry) {
        let entry = self.entry(carry);
        let slot = self.slot(profile);
        self.entries[slot].push(entry);
    }

    /// Gives back what pushing reserved beyond the entries, once a build is done.
    pub fn shrink(&mut self) {
        for entries in &mut self.entries {
            entries.shrink_to_fit();
        }
    }

    /// Forgets `profile` (merged away, erased).
    pub fn remove(&mut self, profile: i64) {
        if let Some(slot) = self.slot_of.remove(&profile) {
            self.entries[slot] = Vec::new();
            self.free.push(slot);
        }
    }

    /// How many events the index holds.
    pub fn len(&self) -> usize {
        self.entries.iter().map(Vec::len).sum()
    }

    /// An estimate of the memory the index holds, in bytes: the entries, the slots and the
    /// sets; the dictionaries of names and sources (a few kilobytes) are left out.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let entries: usize = self.entries.iter().map(|e| e.capacity() * size_of::<Entry>()).sum();
        entries
            + self.entries.capacity() * size_of::<Vec<Entry>>()
            + self.profiles.capacity() * size_of::<i64>()
            + self.slot_of.capacity() * (size_of::<(i64, usize)>() + 1)
            + self.free.capacity() * size_of::<usize>()
            + self
                .sets
                .iter()
                .map(|s| 2 * s.capacity() * size_of::<u32>())
                .sum::<usize>()
    }

    /// Whether the index holds no event.
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Every profile with events in `window`, and how many: `(profile id, records)` by id.
    pub fn touched(&self, window: &Window<'_>) -> Vec<(i64, i64)> {
        let wanted: Vec<u32> = window
            .traits
            .iter()
            .filter_map(|n| self.names.get(n).copied())
            .collect();
        let sets: Vec<bool> = self
            .sets
            .iter()
            .map(|set| set.iter().any(|n| wanted.contains(n)))
            .collect();
        let sources: Vec<u32> = window
            .sources
            .iter()
            .filter_map(|s| self.sources.get(s).copied())
            .collect();
        let from = window.from.map_or(i64::MIN, |t| t.as_microsecond());
        let to = window.to.as_microsecond();
        let mut out = Vec::new();
        for (slot, entries) in self.entries.iter().enumerate() {
            let n = entries
                .iter()
                .filter(|e| {
                    e.seq <= window.upto
                        && e.received >= from
                        && e.received < to
                        && sets[e.set as usize]
                        && sources.contains(&e.source)
                })
                .count();
            if n > 0 {
                out.push((self.profiles[slot], n as i64));
            }
        }
        out.sort_unstable();
        out
    }

    fn entry(&mut self, c: Carry) -> Entry {
        let mut ids: Vec<u32> = c
            .traits
            .into_iter()
            .map(|name| {
                let next = self.names.len() as u32;
                *self.names.entry(name).or_insert(next)
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let set = match self.set_of.get(&ids) {
            Some(&set) => set,
            None => {
                let set = self.sets.len() as u32;
                self.sets.push(ids.clone());
                self.set_of.insert(ids, set);
                set
            }
        };
        let next = self.source_ids.len() as u32;
        let source = *self.sources.entry(c.source).or_insert(next);
        if source == next {
            self.source_ids.push(c.source);
        }
        Entry {
            seq: c.seq,
            received: c.received_at.as_microsecond(),
            source,
            set,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carry(seq: i64, source: i64, day: i64, traits: &[&str]) -> Carry {
        Carry {
            seq,
            source,
            received_at: Timestamp::from_second(1_767_225_600 + day * 86_400).unwrap(),
            traits: traits.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn window<'a>(traits: &'a [String], sources: &'a [i64], from: Option<i64>, to: i64, upto: i64) -> Window<'a> {
        let day = |d: i64| Timestamp::from_second(1_767_225_600 + d * 86_400).unwrap();
        Window {
            traits,
            sources,
            from: from.map(day),
            to: day(to),
            upto,
        }
    }

    #[test]
    fn counts_the_events_of_each_profile_in_the_window_from_the_sources_with_the_traits() {
        let mut x = Exposure::new();
        x.upsert(
            7,
            [
                carry(1, 1, 0, &["email"]),
                carry(2, 1, 5, &["email", "phone"]),
                carry(3, 2, 1, &["email"]),
            ],
        );
        x.upsert(3, [carry(4, 1, 2, &["phone"]), carry(5, 1, 20, &["email"])]);
        let email = ["email".to_owned()];
        assert_eq!(x.touched(&window(&email, &[1], Some(0), 10, i64::MAX)), [(7, 2)]);
        assert_eq!(
            x.touched(&window(&email, &[1, 2], None, 30, i64::MAX)),
            [(3, 1), (7, 3)]
        );
        let phone = ["phone".to_owned(), "city".to_owned()];
        assert_eq!(x.touched(&window(&phone, &[1], None, 30, i64::MAX)), [(3, 1), (7, 1)]);
        assert_eq!(
            x.touched(&window(&email, &[1, 2], None, 30, 3)),
            [(7, 3)],
            "only up to a position"
        );
        assert!(
            x.touched(&window(&email, &[9], None, 30, i64::MAX)).is_empty(),
            "unknown source"
        );
        assert_eq!(x.len(), 5);
    }

    #[test]
    fn a_build_pushing_events_one_by_one_answers_as_upserting_them() {
        let events = [
            (7, carry(1, 1, 0, &["email"])),
            (3, carry(2, 1, 2, &["phone"])),
            (7, carry(3, 2, 1, &["email"])),
        ];
        let mut pushed = Exposure::new();
        for (p, c) in events.clone() {
            pushed.push(p, c);
        }
        pushed.shrink();
        let mut upserted = Exposure::new();
        upserted.upsert(7, [events[0].1.clone(), events[2].1.clone()]);
        upserted.upsert(3, [events[1].1.clone()]);
        let all = ["email".to_owned(), "phone".to_owned()];
        let w = window(&all, &[1, 2], None, 30, i64::MAX);
        assert_eq!(pushed.touched(&w), upserted.touched(&w));
        assert_eq!(pushed.touched(&w), [(3, 1), (7, 2)]);
    }

    #[test]
    fn a_profile_re_read_replaces_its_events_and_a_removed_one_frees_its_slot() {
        let mut x = Exposure::new();
        let email = ["email".to_owned()];
        x.upsert(1, [carry(1, 1, 0, &["email"])]);
        x.upsert(2, [carry(2, 1, 0, &["email"])]);
        x.upsert(1, [carry(1, 1, 0, &["email"]), carry(3, 1, 1, &["email"])]);
        x.remove(2);
        assert_eq!(x.touched(&window(&email, &[1], None, 5, i64::MAX)), [(1, 2)]);
        x.upsert(9, [carry(4, 1, 0, &["email"])]);
        assert_eq!(x.profiles.len(), 2, "the freed slot is reused");
        assert_eq!(x.touched(&window(&email, &[1], None, 5, i64::MAX)), [(1, 2), (9, 1)]);
        x.upsert(9, []);
        assert_eq!(x.touched(&window(&email, &[1], None, 5, i64::MAX)), [(1, 2)]);
    }
}
