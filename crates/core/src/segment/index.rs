//! The audience index: every profile's traits, history and legal bases, held in memory as
//! bitmaps so that a segment is counted in well under a millisecond.
//!
//! # Design
//!
//! Each profile gets a dense slot number. A text, list or yes/no field keeps one Roaring bitmap
//! per distinct value (the slots holding it): an equality is one bitmap, `in` a union,
//! `contains` on a text a union over the matching dictionary entries. Numbers, dates and instants
//! are bit-sliced (one bitmap per bit of the value, after flipping the sign bit so that signed
//! order is unsigned order): a range is answered with O'Neil's comparison, a handful of bitmap
//! operations per bit, never a scan of the profiles. Evaluation passes the set of candidates
//! still possible down the tree (the conditions of an `and` run cheapest first), so a range
//! after three equalities only touches the few thousand slots left.
//!
//! Event conditions keep each profile's events (name, time, declared properties) and count
//! those that match, only for candidate profiles that did the event at all.
//!
//! The legal basis is part of the index: one bitmap per purpose of the profiles that have a
//! basis for it *now* (a standing consent, no objection, no restriction). [`AudienceIndex::count`]
//! always intersects with it: there is no way to count a segment while ignoring consent.
//!
//! The index is updated one profile at a time ([`AudienceIndex::upsert`], [`AudienceIndex::remove`]),
//! which is how the server follows the store's change feed instead of rebuilding.

use super::query::{Cond, Count, Did, Literal, Op, Operand, Query, Span, Test, Unit};
use crate::catalog::{Catalog, ValueType};
use jiff::Timestamp;
use roaring::RoaringBitmap;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// How a field is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Text, compared without regard to case.
    Text,
    /// A list of texts.
    List,
    /// `true` or `false`.
    Bool,
    /// A number, kept to the hundredth.
    Number,
    /// A calendar date.
    Date,
    /// An instant.
    Instant,
}

impl Kind {
    /// The kind a catalog type is indexed as; `None` for objects, which segments do not read.
    pub fn of(t: ValueType) -> Option<Kind> {
        Some(match t {
            ValueType::String | ValueType::Email | ValueType::Phone | ValueType::Any => Kind::Text,
            ValueType::Number | ValueType::Integer => Kind::Number,
            ValueType::Boolean => Kind::Bool,
            ValueType::Date => Kind::Date,
            ValueType::Datetime => Kind::Instant,
            ValueType::Array => Kind::List,
            ValueType::Object => return None,
        })
    }
}

/// The traits computed from history (see `unify::golden::computed`), their kind and the events
/// they are computed from, which decide the purposes that may read them.
pub const COMPUTED: &[(&str, Kind, &[&str])] = &[
    ("orders", Kind::Number, &["Order Completed"]),
    ("total_spent", Kind::Number, &["Order Completed"]),
    ("average_basket", Kind::Number, &["Order Completed"]),
    ("last_order", Kind::Instant, &["Order Completed"]),
    ("first_seen", Kind::Instant, &[]),
    ("last_seen", Kind::Instant, &[]),
    (
        "favourite_category",
        Kind::Text,
        &["Product Viewed", "Product Added", "Order Completed"],
    ),
    ("journey_phase", Kind::Text, &[]),
];

/// The fields a segment can read, with their kinds.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    fields: Vec<(String, Kind)>,
    by_name: HashMap<String, u16>,
}

impl Schema {
    /// The catalog's traits (objects excepted) and the computed traits.
    pub fn of(catalog: &Catalog) -> Schema {
        let mut fields: Vec<(String, Kind)> = catalog
            .traits
            .values()
            .filter_map(|t| Kind::of(t.value_type).map(|k| (t.name.clone(), k)))
            .collect();
        for (name, kind, _) in COMPUTED {
            if !catalog.traits.contains_key(*name) {
                fields.push(((*name).to_owned(), *kind));
            }
        }
        Schema::new(fields)
    }

    /// A schema of the given fields.
    pub fn new(fields: Vec<(String, Kind)>) -> Schema {
        let by_name = fields
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i as u16))
            .collect();
        Schema { fields, by_name }
    }

    /// The kind of a field.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        self.by_name.get(name).map(|i| self.fields[*i as usize].1)
    }

    /// Every field.
    pub fn fields(&self) -> &[(String, Kind)] {
        &self.fields
    }
}

/// What the index knows of one profile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileFacts {
    /// Golden and computed trait values by name.
    pub traits: BTreeMap<String, Value>,
    /// Behavioural events (tracks, page and screen views).
    pub events: Vec<EventFact>,
    /// Purposes the profile has a legal basis for now.
    pub lawful: BTreeSet<String>,
}

/// One event of a profile.
#[derive(Clone, Debug, PartialEq)]
pub struct EventFact {
    /// Event name (`Page Viewed` and `Screen Viewed` for pages and screens).
    pub name: String,
    /// When it happened.
    pub at: Timestamp,
    /// Source name.
    pub source: String,
    /// Journey touchpoint, when known.
    pub touchpoint: Option<String>,
    /// Declared properties.
    pub properties: serde_json::Map<String, Value>,
}

/// One property value as the index keeps it: texts and names are shared between events, and
/// objects (a product line) are only known to be there — conditions read scalars and lists.
#[derive(Clone, Debug, PartialEq)]
pub enum Prop {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as sent.
    Number(serde_json::Number),
    /// A text.
    Text(Arc<str>),
    /// A list.
    List(Box<[Prop]>),
    /// An object.
    Object,
}

impl Prop {
    /// The text, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Prop::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Prop::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// The JSON value (an object reads as an empty one).
    pub fn to_value(&self) -> Value {
        match self {
            Prop::Null => Value::Null,
            Prop::Bool(b) => Value::Bool(*b),
            Prop::Number(n) => Value::Number(n.clone()),
            Prop::Text(t) => Value::String(t.to_string()),
            Prop::List(items) => Value::Array(items.iter().map(Prop::to_value).collect()),
            Prop::Object => Value::Object(serde_json::Map::new()),
        }
    }
}

/// An event's properties, compactly (a `serde_json::Map` costs several hundred bytes an event).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Props(Box<[(Arc<str>, Prop)]>);

impl Props {
    /// The value of a property.
    pub fn get(&self, name: &str) -> Option<&Prop> {
        self.0.iter().find(|(k, _)| &**k == name).map(|(_, v)| v)
    }
}

/// Shares equal strings between events.
#[derive(Default)]
struct Strings(std::collections::HashSet<Arc<str>>);

impl Strings {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }

    fn prop(&mut self, v: &Value) -> Prop {
        match v {
            Value::Null => Prop::Null,
            Value::Bool(b) => Prop::Bool(*b),
            Value::Number(n) => Prop::Number(n.clone()),
            Value::String(t) => Prop::Text(self.get(t)),
            Value::Array(items) => Prop::List(items.iter().map(|i| self.prop(i)).collect()),
            Value::Object(_) => Prop::Object,
        }
    }

    fn props(&mut self, map: &serde_json::Map<String, Value>) -> Props {
        Props(map.iter().map(|(k, v)| (self.get(k), self.prop(v))).collect())
    }
}

/// An event as the index keeps it.
#[derive(Clone, Debug)]
pub struct EventRow {
    /// Interned name.
    pub name: u32,
    /// Unix seconds.
    pub at: i64,
    /// Interned source name.
    pub source: u32,
    /// Interned touchpoint (`u32::MAX`: none).
    pub touchpoint: u32,
    /// Properties.
    pub properties: Props,
}

/// Why a query cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The field is not a trait nor a computed trait.
    #[error("unknown trait `{0}`")]
    UnknownField(String),
    /// The value does not fit the field.
    #[error("{0}")]
    BadValue(String),
    /// A segment named in the query does not exist.
    #[error("unknown segment `{0}`")]
    UnknownSegment(String),
    /// Segments name each other in a loop.
    #[error("segment `{0}` refers to itself")]
    Cycle(String),
}

#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }
}

/// Values of a text, list or yes/no field.
#[derive(Default)]
struct Dictionary {
    values: Interner,
    bitmaps: Vec<RoaringBitmap>,
}

impl Dictionary {
    fn insert(&mut self, value: &str, slot: u32) -> u32 {
        let id = self.values.id(value);
        if id as usize == self.bitmaps.len() {
            self.bitmaps.push(RoaringBitmap::new());
        }
        self.bitmaps[id as usize].insert(slot);
        id
    }

    fn get(&self, value: &str) -> Option<&RoaringBitmap> {
        self.values.get(value).map(|id| &self.bitmaps[id as usize])
    }
}

/// A bit-sliced index of signed 64-bit values.
#[derive(Default)]
struct Bsi {
    exists: RoaringBitmap,
    slices: Vec<RoaringBitmap>,
    /// For dates: the slots per day of the year (`month * 32 + day`), for yearly triggers.
    yearly: Option<Vec<RoaringBitmap>>,
}

/// The position of a month and day in [`Bsi::yearly`].
fn day_of_year(days: i64) -> Option<usize> {
    let d = jiff::civil::date(1970, 1, 1)
        .checked_add(jiff::Span::new().try_days(days).ok()?)
        .ok()?;
    Some(d.month() as usize * 32 + d.day() as usize)
}

fn biased(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

impl Bsi {
    fn insert(&mut self, slot: u32, v: i64) {
        let u = biased(v);
        let width = 64 - u.leading_zeros() as usize;
        if self.slices.len() < width {
            self.slices.resize_with(width, RoaringBitmap::new);
        }
        for (i, s) in self.slices.iter_mut().enumerate() {
            if u >> i & 1 == 1 {
                s.insert(slot);
            }
        }
        self.exists.insert(slot);
    }

    fn remove(&mut self, slot: u32) {
        if self.yearly.is_some()
            && let Some(d) = self.value(slot).and_then(day_of_year)
            && let Some(yearly) = &mut self.yearly
        {
            yearly[d].remove(slot);
        }
        if self.exists.remove(slot) {
            for s in &mut self.slices {
                s.remove(slot);
            }
        }
    }

    /// The value of one slot, read back from its bits.
    fn value(&self, slot: u32) -> Option<i64> {
        if !self.exists.contains(slot) {
            return None;
        }
        let u = self
            .slices
            .iter()
            .enumerate()
            .filter(|(_, s)| s.contains(slot))
            .fold(0u64, |u, (i, _)| u | 1 << i);
        Some((u ^ (1 << 63)) as i64)
    }

    /// The slots of `within` whose value is less than, equal to and greater than `c`.
    fn compare(&self, c: i64, within: &RoaringBitmap) -> (RoaringBitmap, RoaringBitmap, RoaringBitmap) {
        let all = within & &self.exists;
        let u = biased(c);
        if (64 - u.leading_zeros() as usize) > self.slices.len() {
            // c has a bit above every stored value: all are smaller.
            return (all, RoaringBitmap::new(), RoaringBitmap::new());
        }
        let mut eq = all.clone();
        let mut gt = RoaringBitmap::new();
        let stored = self.exists.len();
        for (i, slice) in self.slices.iter().enumerate().rev() {
            if eq.is_empty() {
                break;
            }
            let bit = u >> i & 1 == 1;
            // Most high slices hold no value or every value (the sign bit of positive numbers,
            // the unused high bits of a date): decide them without touching a bitmap.
            if slice.is_empty() {
                if bit {
                    eq.clear();
                }
                continue;
            }
            if slice.len() == stored {
                if !bit {
                    gt |= &eq;
                    eq.clear();
                }
                continue;
            }
            if bit {
                eq &= slice;
            } else {
                gt |= &eq & slice;
                eq -= slice;
            }
        }
        let lt = all - &gt - &eq;
        (lt, eq, gt)
    }

    fn range(&self, low: i64, high: i64, within: &RoaringBitmap) -> RoaringBitmap {
        if low > high {
            return RoaringBitmap::new();
        }
        let (_, eq, gt) = self.compare(low, within);
        let from = eq | gt;
        let (lt, eq, _) = self.compare(high, &from);
        lt | eq
    }
}

enum FieldIndex {
    Values(Dictionary),
    Numbers(Bsi),
}

/// The in-memory audience index.
pub struct AudienceIndex {
    schema: Schema,
    profiles: Vec<i64>,
    slots: HashMap<i64, u32>,
    live: RoaringBitmap,
    fields: Vec<FieldIndex>,
    /// Per slot, the dictionary entries it is in, to take it out again.
    held: Vec<Vec<(u16, u32)>>,
    events: Vec<Vec<EventRow>>,
    event_names: Interner,
    touchpoints: Interner,
    sources: Interner,
    strings: Strings,
    did: Vec<RoaringBitmap>,
    lawful: HashMap<String, RoaringBitmap>,
}

/// Scale of numbers in the index: hundredths.
const CENTS: f64 = 100.0;

impl AudienceIndex {
    /// An empty index over these fields.
    pub fn new(schema: Schema) -> AudienceIndex {
        let fields = schema
            .fields
            .iter()
            .map(|(_, k)| match k {
                Kind::Text | Kind::List | Kind::Bool => FieldIndex::Values(Dictionary::default()),
                Kind::Date => FieldIndex::Numbers(Bsi {
                    yearly: Some(vec![RoaringBitmap::new(); 13 * 32]),
                    ..Bsi::default()
                }),
                Kind::Number | Kind::Instant => FieldIndex::Numbers(Bsi::default()),
            })
            .collect();
        AudienceIndex {
            schema,
            profiles: Vec::new(),
            slots: HashMap::new(),
            live: RoaringBitmap::new(),
            fields,
            held: Vec::new(),
            events: Vec::new(),
            event_names: Interner::default(),
            touchpoints: Interner::default(),
            sources: Interner::default(),
            strings: Strings::default(),
            did: Vec::new(),
            lawful: HashMap::new(),
        }
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// How many profiles are indexed.
    pub fn len(&self) -> u64 {
        self.live.len()
    }

    /// Whether no profile is indexed.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Whether a profile is indexed.
    pub fn contains(&self, profile: i64) -> bool {
        self.slots.get(&profile).is_some_and(|s| self.live.contains(*s))
    }

    /// Replaces what the index knows of a profile.
    pub fn upsert(&mut self, profile: i64, facts: &ProfileFacts) {
        let slot = match self.slots.get(&profile).copied() {
            Some(s) => {
                self.clear(s);
                s
            }
            None => {
                let s = self.profiles.len() as u32;
                self.profiles.push(profile);
                self.held.push(Vec::new());
                self.events.push(Vec::new());
                self.slots.insert(profile, s);
                s
            }
        };
        self.live.insert(slot);
        let mut held = Vec::new();
        for (name, value) in &facts.traits {
            let Some(&f) = self.schema.by_name.get(name) else {
                continue;
            };
            let kind = self.schema.fields[f as usize].1;
            match &mut self.fields[f as usize] {
                FieldIndex::Values(d) => {
                    for key in value_keys(kind, value) {
                        held.push((f, d.insert(&key, slot)));
                    }
                }
                FieldIndex::Numbers(b) => {
                    if let Some(v) = number_of(kind, value) {
                        b.insert(slot, v);
                        if let Some(yearly) = &mut b.yearly
                            && let Some(d) = day_of_year(v)
                        {
                            yearly[d].insert(slot);
                        }
                    }
                }
            }
        }
        self.held[slot as usize] = held;
        let mut rows = Vec::with_capacity(facts.events.len());
        for e in &facts.events {
            let name = self.event_names.id(&e.name);
            if name as usize == self.did.len() {
                self.did.push(RoaringBitmap::new());
            }
            self.did[name as usize].insert(slot);
            rows.push(EventRow {
                name,
                at: e.at.as_second(),
                source: self.sources.id(&e.source),
                touchpoint: e.touchpoint.as_deref().map_or(u32::MAX, |t| self.touchpoints.id(t)),
                properties: self.strings.props(&e.properties),
            });
        }
        rows.sort_by_key(|r| r.at);
        self.events[slot as usize] = rows;
        for p in &facts.lawful {
            self.lawful.entry(p.clone()).or_default().insert(slot);
        }
    }

    /// Takes a profile out (merged into another, or erased).
    pub fn remove(&mut self, profile: i64) {
        if let Some(&slot) = self.slots.get(&profile) {
            self.clear(slot);
            self.live.remove(slot);
        }
    }

    fn clear(&mut self, slot: u32) {
        for (f, v) in std::mem::take(&mut self.held[slot as usize]) {
            if let FieldIndex::Values(d) = &mut self.fields[f as usize] {
                d.bitmaps[v as usize].remove(slot);
            }
        }
        for f in &mut self.fields {
            if let FieldIndex::Numbers(b) = f {
                b.remove(slot);
            }
        }
        for r in std::mem::take(&mut self.events[slot as usize]) {
            self.did[r.name as usize].remove(slot);
        }
        for bits in self.lawful.values_mut() {
            bits.remove(slot);
        }
    }

    /// The profiles with a legal basis for `purpose` now.
    pub fn lawful(&self, purpose: &str) -> RoaringBitmap {
        self.lawful.get(purpose).cloned().unwrap_or_default()
    }

    /// The members of a query for a purpose: those matching it *and* with a legal basis for the
    /// purpose now. `segments` resolves `segment "name"` references.
    pub fn members(
        &self,
        query: &Query,
        purpose: &str,
        now: Timestamp,
        segments: &dyn Fn(&str) -> Option<Query>,
    ) -> Result<RoaringBitmap, QueryError> {
        let lawful = self.lawful(purpose);
        let mut ctx = Eval {
            index: self,
            now,
            segments,
            stack: Vec::new(),
        };
        ctx.eval(query, &lawful)
    }

    /// The members among `slots` (see [`AudienceIndex::members`]): how one profile's change is
    /// checked against a segment without evaluating it for everyone.
    pub fn members_within(
        &self,
        query: &Query,
        purpose: &str,
        now: Timestamp,
        segments: &dyn Fn(&str) -> Option<Query>,
        slots: &RoaringBitmap,
    ) -> Result<RoaringBitmap, QueryError> {
        let within = self.lawful(purpose) & slots;
        let mut ctx = Eval {
            index: self,
            now,
            segments,
            stack: Vec::new(),
        };
        ctx.eval(query, &within)
    }

    /// How many members a query has for a purpose.
    pub fn count(
        &self,
        query: &Query,
        purpose: &str,
        now: Timestamp,
        segments: &dyn Fn(&str) -> Option<Query>,
    ) -> Result<u64, QueryError> {
        Ok(self.members(query, purpose, now, segments)?.len())
    }

    /// The profile id of a slot.
    pub fn profile(&self, slot: u32) -> i64 {
        self.profiles[slot as usize]
    }

    /// The slot of a profile.
    pub fn slot(&self, profile: i64) -> Option<u32> {
        self.slots.get(&profile).copied().filter(|s| self.live.contains(*s))
    }

    /// Every indexed slot.
    pub fn live(&self) -> &RoaringBitmap {
        &self.live
    }

    /// The events of a slot, oldest first.
    pub fn events_of(&self, slot: u32) -> &[EventRow] {
        &self.events[slot as usize]
    }

    /// The id of an event name, if any profile did it.
    pub fn event_id(&self, name: &str) -> Option<u32> {
        self.event_names.get(name)
    }

    /// The name of a touchpoint id.
    pub fn touchpoint_name(&self, id: u32) -> Option<&str> {
        self.touchpoints.names.get(id as usize).map(|s| &**s)
    }

    /// The date a slot holds in a date field.
    pub fn date_of(&self, field: &str, slot: u32) -> Option<jiff::civil::Date> {
        match self.schema.by_name.get(field).map(|f| &self.fields[*f as usize]) {
            Some(FieldIndex::Numbers(b)) if b.yearly.is_some() => jiff::civil::date(1970, 1, 1)
                .checked_add(jiff::Span::new().try_days(b.value(slot)?).ok()?)
                .ok(),
            _ => None,
        }
    }

    /// The slots whose date field falls on this month and day, any year: the candidates of a
    /// yearly trigger, without looking at anyone else.
    pub fn on_day(&self, field: &str, month: i8, day: i8) -> RoaringBitmap {
        match self.schema.by_name.get(field).map(|f| &self.fields[*f as usize]) {
            Some(FieldIndex::Numbers(Bsi { yearly: Some(y), .. })) => {
                y.get(month as usize * 32 + day as usize).cloned().unwrap_or_default()
            }
            _ => RoaringBitmap::new(),
        }
    }

    /// The (normalised) texts a slot holds in a text or list field.
    pub fn texts_of(&self, field: &str, slot: u32) -> Vec<&str> {
        match self.schema.by_name.get(field).map(|f| &self.fields[*f as usize]) {
            Some(FieldIndex::Values(d)) => d
                .bitmaps
                .iter()
                .enumerate()
                .filter(|(_, b)| b.contains(slot))
                .map(|(i, _)| &*d.values.names[i])
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The name of a source id.
    pub fn source_name(&self, id: u32) -> Option<&str> {
        self.sources.names.get(id as usize).map(|s| &**s)
    }

    /// The id of a source name, if an event came from it.
    pub fn source_id(&self, name: &str) -> Option<u32> {
        self.sources.get(name)
    }

    /// The id of a touchpoint, if an event carried it.
    pub fn touchpoint_id(&self, name: &str) -> Option<u32> {
        self.touchpoints.get(name)
    }

    /// The slots whose field has this exact (text) value.
    pub fn with_value(&self, field: &str, value: &str) -> RoaringBitmap {
        match self.schema.by_name.get(field).map(|f| &self.fields[*f as usize]) {
            Some(FieldIndex::Values(d)) => d.get(&value.trim().to_lowercase()).cloned().unwrap_or_default(),
            _ => RoaringBitmap::new(),
        }
    }

    /// An estimate of the heap the index holds, in bytes.
    pub fn heap_bytes(&self) -> usize {
        let bitmaps = |b: &RoaringBitmap| b.serialized_size();
        let mut total = self.live.serialized_size() + self.profiles.capacity() * 8 + self.slots.capacity() * 16;
        for f in &self.fields {
            total += match f {
                FieldIndex::Values(d) => d.bitmaps.iter().map(bitmaps).sum::<usize>() + d.values.names.len() * 32,
                FieldIndex::Numbers(b) => bitmaps(&b.exists) + b.slices.iter().map(bitmaps).sum::<usize>(),
            };
        }
        total += self.held.iter().map(|h| 24 + h.capacity() * 8).sum::<usize>();
        total += self
            .events
            .iter()
            .map(|e| 24 + e.capacity() * std::mem::size_of::<EventRow>())
            .sum::<usize>();
        total + self.lawful.values().map(bitmaps).sum::<usize>() + self.did.iter().map(bitmaps).sum::<usize>()
    }
}

/// The dictionary keys a value is indexed under.
fn value_keys(kind: Kind, value: &Value) -> Vec<String> {
    match (kind, value) {
        (_, Value::Null) => Vec::new(),
        (Kind::List, Value::Array(items)) => items.iter().filter_map(scalar_key).collect(),
        (Kind::Bool, Value::Bool(b)) => vec![b.to_string()],
        (Kind::Bool, _) => Vec::new(),
        (_, v) => scalar_key(v).into_iter().collect(),
    }
}

fn scalar_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_lowercase()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn literal_key(l: &Literal) -> String {
    match l {
        Literal::Text(s) => s.trim().to_lowercase(),
        // A whole number reads as sent (`75001`, not `75001.0`), as a stored JSON integer does.
        Literal::Number(n) if n.fract() == 0.0 && n.abs() < 9e15 => (*n as i64).to_string(),
        Literal::Number(n) => serde_json::Number::from_f64(*n).map_or_else(|| n.to_string(), |n| n.to_string()),
        Literal::Bool(b) => b.to_string(),
    }
}

/// The indexed integer of a number, date or instant value.
pub fn number_of(kind: Kind, value: &Value) -> Option<i64> {
    match (kind, value) {
        (Kind::Number, Value::Number(n)) => n.as_f64().map(|f| (f * CENTS).round() as i64),
        (Kind::Date, Value::String(s)) => date_days(s),
        (Kind::Instant, Value::String(s)) => instant_seconds(s),
        _ => None,
    }
}

fn date_days(s: &str) -> Option<i64> {
    let d: jiff::civil::Date = s.get(..10)?.parse().ok()?;
    Some(instant_days(d.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp()))
}

fn instant_seconds(s: &str) -> Option<i64> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t.as_second());
    }
    let d: jiff::civil::Date = s.get(..10)?.parse().ok()?;
    Some(d.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_second())
}

/// `now` minus a span, in calendar terms (UTC).
pub fn ago(now: Timestamp, span: Span) -> Timestamp {
    let n = i64::from(span.n);
    let s = match span.unit {
        Unit::Hours => jiff::Span::new().hours(n),
        Unit::Days => jiff::Span::new().days(n),
        Unit::Weeks => jiff::Span::new().weeks(n),
        Unit::Months => jiff::Span::new().months(n),
        Unit::Years => jiff::Span::new().years(n),
    };
    now.to_zoned(jiff::tz::TimeZone::UTC)
        .checked_sub(s)
        .map_or(Timestamp::MIN, |z| z.timestamp())
}

fn instant_days(t: Timestamp) -> i64 {
    t.as_second().div_euclid(86_400)
}

struct Eval<'a> {
    index: &'a AudienceIndex,
    now: Timestamp,
    segments: &'a dyn Fn(&str) -> Option<Query>,
    stack: Vec<String>,
}

impl Eval<'_> {
    /// The slots of `within` that match `q`.
    fn eval(&mut self, q: &Query, within: &RoaringBitmap) -> Result<RoaringBitmap, QueryError> {
        match q {
            Query::And(parts) => {
                let mut order: Vec<&Query> = parts.iter().collect();
                order.sort_by_key(|p| cost(p));
                let mut acc = within.clone();
                for p in order {
                    if acc.is_empty() {
                        break;
                    }
                    acc = self.eval(p, &acc)?;
                }
                Ok(acc)
            }
            Query::Or(parts) => {
                let mut acc = RoaringBitmap::new();
                for p in parts {
                    let rest = within - &acc;
                    if rest.is_empty() {
                        break;
                    }
                    acc |= self.eval(p, &rest)?;
                }
                Ok(acc)
            }
            Query::Not(inner) => Ok(within - self.eval(inner, within)?),
            Query::Segment(name) => {
                if self.stack.iter().any(|s| s == name) {
                    return Err(QueryError::Cycle(name.clone()));
                }
                let inner = (self.segments)(name).ok_or_else(|| QueryError::UnknownSegment(name.clone()))?;
                self.stack.push(name.clone());
                let out = self.eval(&inner, within);
                self.stack.pop();
                out
            }
            Query::Cond(c) => self.cond(c, within),
            Query::Did(d) => self.did(d, within),
        }
    }

    fn cond(&self, c: &Cond, within: &RoaringBitmap) -> Result<RoaringBitmap, QueryError> {
        let &f = self
            .index
            .schema
            .by_name
            .get(&c.field)
            .ok_or_else(|| QueryError::UnknownField(c.field.clone()))?;
        let kind = self.index.schema.fields[f as usize].1;
        match &self.index.fields[f as usize] {
            FieldIndex::Values(d) => self.values(d, kind, c, within),
            FieldIndex::Numbers(b) => self.numbers(b, kind, c, within),
        }
    }

    fn values(
        &self,
        d: &Dictionary,
        kind: Kind,
        c: &Cond,
        within: &RoaringBitmap,
    ) -> Result<RoaringBitmap, QueryError> {
        let one = |l: &Literal| -> Result<RoaringBitmap, QueryError> {
            if kind == Kind::Bool && !matches!(l, Literal::Bool(_)) {
                return Err(QueryError::BadValue(format!("`{}` is true or false", c.field)));
            }
            Ok(d.get(&literal_key(l)).map_or_else(RoaringBitmap::new, |b| b & within))
        };
        let bad = |what: &str| QueryError::BadValue(format!("`{}` is a {} field: {what}", c.field, kind_name(kind)));
        match &c.test {
            Test::Cmp {
                op: Op::Eq,
                value: Operand::Value(l),
            } => one(l),
            Test::Cmp {
                op: Op::Ne,
                value: Operand::Value(l),
            } => {
                let mut has = RoaringBitmap::new();
                for b in &d.bitmaps {
                    has |= b & within;
                }
                Ok(has - one(l)?)
            }
            Test::In { values } => {
                let mut acc = RoaringBitmap::new();
                for l in values {
                    acc |= one(l)?;
                }
                Ok(acc)
            }
            Test::Contains { value } => {
                if kind == Kind::List {
                    return one(value);
                }
                let needle = literal_key(value);
                let mut acc = RoaringBitmap::new();
                for (i, v) in d.values.names.iter().enumerate() {
                    if v.contains(needle.as_str()) {
                        acc |= &d.bitmaps[i] & within;
                    }
                }
                Ok(acc)
            }
            Test::Exists => {
                let mut acc = RoaringBitmap::new();
                for b in &d.bitmaps {
                    acc |= b & within;
                }
                Ok(acc)
            }
            _ => Err(bad("compare it with =, !=, in, contains or exists")),
        }
    }

    /// The indexed integer of an operand for a field of this kind.
    fn operand(&self, kind: Kind, field: &str, o: &Operand) -> Result<i64, QueryError> {
        let bad = || {
            QueryError::BadValue(format!(
                "`{field}` is a {} field: {}",
                kind_name(kind),
                match kind {
                    Kind::Number => "compare it with a number",
                    Kind::Date => "compare it with a date \"YYYY-MM-DD\" or `N years ago`",
                    _ => "compare it with an instant, a date or `N days ago`",
                }
            ))
        };
        match (kind, o) {
            (Kind::Number, Operand::Value(Literal::Number(n))) => Ok((n * CENTS).round() as i64),
            (Kind::Number, _) => Err(bad()),
            (Kind::Date, Operand::Value(Literal::Text(s))) => date_days(s).ok_or_else(bad),
            (Kind::Date, Operand::Now) => Ok(instant_days(self.now)),
            (Kind::Date, Operand::Ago(span)) => Ok(instant_days(ago(self.now, *span))),
            (_, Operand::Value(Literal::Text(s))) => instant_seconds(s).ok_or_else(bad),
            (_, Operand::Now) => Ok(self.now.as_second()),
            (_, Operand::Ago(span)) => Ok(ago(self.now, *span).as_second()),
            _ => Err(bad()),
        }
    }

    fn numbers(&self, b: &Bsi, kind: Kind, c: &Cond, within: &RoaringBitmap) -> Result<RoaringBitmap, QueryError> {
        let field = c.field.as_str();
        match &c.test {
            Test::Cmp { op, value } => {
                let v = self.operand(kind, field, value)?;
                let (lt, eq, gt) = b.compare(v, within);
                Ok(match op {
                    Op::Eq => eq,
                    Op::Ne => lt | gt,
                    Op::Lt => lt,
                    Op::Le => lt | eq,
                    Op::Gt => gt,
                    Op::Ge => gt | eq,
                })
            }
            Test::Between { from, to } => {
                let (a, z) = (self.operand(kind, field, from)?, self.operand(kind, field, to)?);
                Ok(b.range(a.min(z), a.max(z), within))
            }
            Test::In { values } => {
                let mut acc = RoaringBitmap::new();
                for l in values {
                    let v = self.operand(kind, field, &Operand::Value(l.clone()))?;
                    acc |= b.range(v, v, within);
                }
                Ok(acc)
            }
            Test::Within { span } => {
                let now = self.operand(kind, field, &Operand::Now)?;
                let from = self.operand(kind, field, &Operand::Ago(*span))?;
                Ok(b.range(from, now, within))
            }
            Test::Exists => Ok(within & &b.exists),
            Test::Contains { .. } => Err(QueryError::BadValue(format!(
                "`{field}` is a {} field: `contains` is for texts and lists",
                kind_name(kind)
            ))),
        }
    }

    fn did(&self, d: &Did, within: &RoaringBitmap) -> Result<RoaringBitmap, QueryError> {
        let count = d.count.unwrap_or(Count::AtLeast(1));
        let zero_counts = count.holds(0);
        let Some(name) = self.index.event_names.get(&d.event) else {
            return Ok(if zero_counts {
                within.clone()
            } else {
                RoaringBitmap::new()
            });
        };
        let since = d.within.map_or(i64::MIN, |s| ago(self.now, s).as_second());
        let now = self.now.as_second();
        let did = &self.index.did[name as usize];
        let mut out = if zero_counts {
            within - did
        } else {
            RoaringBitmap::new()
        };
        for slot in within & did {
            let n = self.index.events[slot as usize]
                .iter()
                .filter(|e| e.name == name && e.at >= since && (d.within.is_none() || e.at <= now))
                .filter(|e| {
                    d.filter.iter().all(|c| {
                        let value = e.properties.get(&c.field).map_or(Value::Null, Prop::to_value);
                        property_matches(c, &value, self.now)
                    })
                })
                .count();
            if count.holds(n as u32) {
                out.insert(slot);
            }
        }
        Ok(out)
    }
}

/// Whether an event's properties meet a condition. Properties are compared as they were
/// sent: texts without regard to case, numbers as numbers, dates as dates.
pub fn property_matches(c: &Cond, value: &Value, now: Timestamp) -> bool {
    let text = |l: &Literal| literal_key(l);
    let key = scalar_key(value);
    let num = |o: &Operand| -> Option<(f64, f64)> {
        match (value, o) {
            (Value::Number(n), Operand::Value(Literal::Number(c))) => Some((n.as_f64()?, *c)),
            (Value::String(s), Operand::Value(Literal::Text(c))) => {
                Some((instant_seconds(s)? as f64, instant_seconds(c)? as f64))
            }
            (Value::String(s), Operand::Ago(span)) => {
                Some((instant_seconds(s)? as f64, ago(now, *span).as_second() as f64))
            }
            (Value::String(s), Operand::Now) => Some((instant_seconds(s)? as f64, now.as_second() as f64)),
            _ => None,
        }
    };
    // One value equal to a literal: numbers as numbers (the text of a sent `10` is "10", of a
    // typed `10` "10.0"), anything else by its text.
    let same = |v: &Value, l: &Literal| match (v, l) {
        (Value::Number(n), Literal::Number(c)) => n.as_f64() == Some(*c),
        _ => scalar_key(v).is_some_and(|k| k == text(l)),
    };
    match &c.test {
        Test::Exists => !value.is_null(),
        Test::In { values } => match value {
            Value::Array(items) => items.iter().any(|v| values.iter().any(|l| same(v, l))),
            _ => values.iter().any(|l| same(value, l)),
        },
        Test::Contains { value: l } => match value {
            Value::Array(items) => items.iter().any(|v| same(v, l)),
            _ => key.is_some_and(|k| k.contains(&text(l))),
        },
        Test::Cmp { op, value: o } => {
            if let (Some((v, c)), true) = (num(o), !matches!(op, Op::Eq | Op::Ne) || value.is_number()) {
                return match op {
                    Op::Eq => v == c,
                    Op::Ne => v != c,
                    Op::Lt => v < c,
                    Op::Le => v <= c,
                    Op::Gt => v > c,
                    Op::Ge => v >= c,
                };
            }
            match (op, o, key) {
                (Op::Eq, Operand::Value(l), Some(k)) => k == text(l),
                (Op::Ne, Operand::Value(l), Some(k)) => k != text(l),
                _ => false,
            }
        }
        Test::Between { from, to } => match (num(from), num(to)) {
            (Some((v, a)), Some((_, z))) => v >= a.min(z) && v <= a.max(z),
            _ => false,
        },
        Test::Within { span } => match value {
            Value::String(s) => {
                instant_seconds(s).is_some_and(|v| v >= ago(now, *span).as_second() && v <= now.as_second())
            }
            _ => false,
        },
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::List => "list",
        Kind::Bool => "yes/no",
        Kind::Number => "number",
        Kind::Date => "date",
        Kind::Instant => "date and time",
    }
}

/// A rough cost, to run the cheap conditions of an `and` first and narrow the candidates.
fn cost(q: &Query) -> u8 {
    match q {
        Query::Cond(Cond {
            test: Test::Cmp { op: Op::Eq, .. } | Test::In { .. },
            ..
        }) => 0,
        Query::Cond(Cond {
            test: Test::Contains { .. } | Test::Exists,
            ..
        }) => 1,
        Query::Cond(_) => 2,
        Query::Segment(_) | Query::And(_) | Query::Or(_) | Query::Not(_) => 3,
        Query::Did(_) => 4,
    }
}
