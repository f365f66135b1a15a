//! The value types of a TC model: each one holds only what its TC string field can hold.
//!
//! # Design
//!
//! Every bound of the format lives in a type, so that a [`TcModel`](super::TcModel) that exists
//! can be encoded: a 12-bit field is a [`UInt<12>`], a purpose set cannot hold purpose 25, a
//! vendor set cannot hold vendor 0, a custom-purpose consent cannot point past the number of
//! custom purposes. Values are checked once, where they are made, and the encoder does not
//! check them again. Sets serialise as sorted id lists, the shape the oracle test compares.

use super::TcfError;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// An unsigned integer that fits in `BITS` bits (at most 16), the width of its TC string field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UInt<const BITS: u32>(u16);

impl<const BITS: u32> UInt<BITS> {
    /// The largest value the field holds.
    pub const MAX: u16 = ((1u32 << BITS) - 1) as u16;

    /// The value, if it fits in `BITS` bits.
    pub fn new(value: u16) -> Result<Self, TcfError> {
        if value > Self::MAX {
            return Err(TcfError::TooWide {
                value: value.into(),
                bits: BITS,
            });
        }
        Ok(Self(value))
    }

    /// Keeps the low `BITS` bits; for values the decoder read with exactly that width.
    pub(super) fn from_bits(bits: u64) -> Self {
        Self((bits & u64::from(Self::MAX)) as u16)
    }

    /// The value.
    pub const fn get(self) -> u16 {
        self.0
    }
}

/// The `Created` and `LastUpdated` fields: deciseconds since the Unix epoch, in 36 bits.
///
/// The format stores tenths of a second, so the model does too: a decoded time re-encodes to
/// the same bits, which a [`jiff::Timestamp`] with its nanoseconds would not promise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TcfTimestamp(u64);

impl TcfTimestamp {
    const MAX: u64 = (1 << 36) - 1;

    /// The time `deciseconds` tenths of a second after the epoch, if it fits in 36 bits
    /// (until the year 2187).
    pub fn from_deciseconds(deciseconds: u64) -> Result<Self, TcfError> {
        if deciseconds > Self::MAX {
            return Err(TcfError::TooWide {
                value: deciseconds,
                bits: 36,
            });
        }
        Ok(Self(deciseconds))
    }

    /// The decisecond in which `timestamp` falls (earlier digits are dropped).
    pub fn from_timestamp(timestamp: jiff::Timestamp) -> Result<Self, TcfError> {
        u64::try_from(timestamp.as_millisecond().div_euclid(100))
            .ok()
            .and_then(|ds| Self::from_deciseconds(ds).ok())
            .ok_or(TcfError::TimestampOutOfRange(timestamp))
    }

    /// Keeps the low 36 bits; for values the decoder read with exactly that width.
    pub(super) fn from_bits(bits: u64) -> Self {
        Self(bits & Self::MAX)
    }

    /// Tenths of a second since the epoch.
    pub const fn deciseconds(self) -> u64 {
        self.0
    }

    /// As a [`jiff::Timestamp`].
    pub fn to_timestamp(self) -> jiff::Timestamp {
        // 2^36 deciseconds is within jiff's range, so this cannot fail.
        jiff::Timestamp::from_millisecond(self.0 as i64 * 100).unwrap_or(jiff::Timestamp::MAX)
    }
}

/// Two letters A–Z: the consent language (ISO 639-1) or the publisher's country (ISO 3166-1).
///
/// Each letter is 6 bits in the string, so a value past `Z` is malformed rather than a letter.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alpha2([u8; 2]);

impl Alpha2 {
    /// Parses two ASCII letters, in either case; they are kept upper-case.
    pub fn parse(text: &str) -> Result<Self, TcfError> {
        match text.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(TcfError::InvalidLetters(text.to_owned())),
        }
    }

    /// From the two 6-bit letter numbers of the string (0 is `A`).
    pub(super) fn from_indices(field: &'static str, a: u64, b: u64) -> Result<Self, TcfError> {
        let letter = |value: u64| {
            u8::try_from(value)
                .ok()
                .filter(|v| *v < 26)
                .map(|v| b'A' + v)
                .ok_or(TcfError::InvalidLetter { field, value })
        };
        Ok(Self([letter(a)?, letter(b)?]))
    }

    /// The two letter numbers (0 is `A`).
    pub(super) fn indices(self) -> [u64; 2] {
        self.0.map(|c| u64::from(c - b'A'))
    }

    /// The two letters.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Alpha2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Alpha2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Alpha2 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A set of ids 1..=`N` (N at most 63): purposes (24), special features (12), custom purposes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FixedSet<const N: u8>(u64);

/// Purposes 1 to 24, the width of the purpose fields of the core and publisher TC segments.
pub type PurposeSet = FixedSet<24>;
/// Special features 1 to 12.
pub type SpecialFeatureSet = FixedSet<12>;

impl<const N: u8> FixedSet<N> {
    /// The empty set.
    pub const fn new() -> Self {
        Self(0)
    }

    /// The set of `ids`, if each is within 1..=`N`.
    pub fn from_ids(ids: impl IntoIterator<Item = u8>) -> Result<Self, TcfError> {
        let mut set = Self::new();
        for id in ids {
            set.insert(id)?;
        }
        Ok(set)
    }

    /// Adds `id`, if it is within 1..=`N`.
    pub fn insert(&mut self, id: u8) -> Result<(), TcfError> {
        if id == 0 || id > N {
            return Err(TcfError::IdOutOfRange {
                field: "purpose or feature",
                id: id.into(),
                max: N.into(),
            });
        }
        self.0 |= 1 << (id - 1);
        Ok(())
    }

    /// Whether `id` is in the set (never for ids outside 1..=`N`).
    pub fn contains(&self, id: u8) -> bool {
        id != 0 && id <= N && self.0 & (1 << (id - 1)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (1..=N).filter(|&id| self.contains(id))
    }

    /// Bit `id - 1` of `bits` for each id, ignoring bits past `N`; for bits read from the string.
    pub(super) fn from_low_bits(bits: u64) -> Self {
        Self(bits & ((1 << N) - 1))
    }

    /// Bit `id - 1` set for each id.
    pub(super) fn bits(self) -> u64 {
        self.0
    }
}

impl<const N: u8> fmt::Debug for FixedSet<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<const N: u8> Serialize for FixedSet<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// A set of vendor ids 1..=65535, the range of the 16-bit vendor id fields.
///
/// # Design
///
/// A bit set: membership is what the TCF asks of it, a range entry of the string can name
/// 65,535 vendors at once, and the encoder needs the ids in order to find runs. Trailing zero
/// words are never kept, so two equal sets have equal representations.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct VendorSet {
    words: Vec<u64>,
}

impl VendorSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self { words: Vec::new() }
    }

    /// The set of `ids`, if none is 0.
    pub fn from_ids(ids: impl IntoIterator<Item = u16>) -> Result<Self, TcfError> {
        let mut set = Self::new();
        for id in ids {
            set.insert(id)?;
        }
        Ok(set)
    }

    /// Adds `id`, if it is not 0 (vendor ids start at 1).
    pub fn insert(&mut self, id: u16) -> Result<(), TcfError> {
        self.insert_range(id, id)
    }

    /// Adds every id from `start` to `end` inclusive, if `start` is not 0 and not after `end`.
    pub fn insert_range(&mut self, start: u16, end: u16) -> Result<(), TcfError> {
        if start == 0 {
            return Err(TcfError::IdOutOfRange {
                field: "vendor",
                id: 0,
                max: u16::MAX.into(),
            });
        }
        if end < start {
            return Err(TcfError::InvalidRange {
                field: "vendor range",
                start,
                end,
            });
        }
        let (first, last) = (usize::from(start), usize::from(end));
        if self.words.len() <= last / 64 {
            self.words.resize(last / 64 + 1, 0);
        }
        for word in first / 64..=last / 64 {
            let low = if word == first / 64 { first % 64 } else { 0 };
            let high = if word == last / 64 { last % 64 } else { 63 };
            self.words[word] |= (u64::MAX >> (63 - high)) & (u64::MAX << low);
        }
        Ok(())
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u16) -> bool {
        let id = usize::from(id);
        self.words.get(id / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The highest id, or 0 for the empty set (the string's `MaxVendorId`).
    pub fn max_id(&self) -> u16 {
        self.words.last().map_or(0, |w| {
            ((self.words.len() - 1) * 64 + 63 - w.leading_zeros() as usize) as u16
        })
    }

    /// How many ids the set holds.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |bit| w & (1 << bit) != 0)
                .map(move |bit| (i * 64 + bit) as u16)
        })
    }

    /// Maximal runs of consecutive ids, as inclusive `(start, end)` pairs in ascending order.
    pub fn runs(&self) -> Vec<(u16, u16)> {
        let mut runs: Vec<(u16, u16)> = Vec::new();
        for id in self.iter() {
            match runs.last_mut() {
                Some((_, end)) if *end + 1 == id => *end = id,
                _ => runs.push((id, id)),
            }
        }
        runs
    }

    /// Adds every id of `other`.
    pub(super) fn union_with(&mut self, other: &VendorSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (w, o) in self.words.iter_mut().zip(&other.words) {
            *w |= o;
        }
    }
}

impl fmt::Debug for VendorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for VendorSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// The publisher's custom purposes: how many there are, and the user's choices on them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CustomPurposes {
    count: UInt<6>,
    consents: FixedSet<63>,
    legitimate_interests: FixedSet<63>,
}

impl CustomPurposes {
    /// `count` custom purposes (at most 63), with consent and legitimate interest established
    /// for the given ids, each of which must be within 1..=`count`.
    pub fn new(
        count: u8,
        consents: impl IntoIterator<Item = u8>,
        legitimate_interests: impl IntoIterator<Item = u8>,
    ) -> Result<Self, TcfError> {
        let count_field = UInt::new(count.into())?;
        let within = |ids: &mut dyn Iterator<Item = u8>| -> Result<FixedSet<63>, TcfError> {
            let mut set = FixedSet::new();
            for id in ids {
                if id == 0 || id > count {
                    return Err(TcfError::IdOutOfRange {
                        field: "custom purpose",
                        id: id.into(),
                        max: count.into(),
                    });
                }
                set.insert(id)?;
            }
            Ok(set)
        };
        Ok(Self {
            count: count_field,
            consents: within(&mut consents.into_iter())?,
            legitimate_interests: within(&mut legitimate_interests.into_iter())?,
        })
    }

    /// From the fields as read: `count`, then `count` bits of each vector.
    pub(super) fn from_bits(count: UInt<6>, consents: u64, legitimate_interests: u64) -> Self {
        Self {
            count,
            consents: FixedSet::from_low_bits(consents),
            legitimate_interests: FixedSet::from_low_bits(legitimate_interests),
        }
    }

    /// How many custom purposes the publisher declared.
    pub fn count(&self) -> u8 {
        self.count.get() as u8
    }

    /// The custom purposes the user consented to.
    pub fn consents(&self) -> FixedSet<63> {
        self.consents
    }

    /// The custom purposes with legitimate interest established (not objected to).
    pub fn legitimate_interests(&self) -> FixedSet<63> {
        self.legitimate_interests
    }
}

/// What a publisher restriction requires of the vendors it lists, for one purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestrictionType {
    /// The purpose is not allowed at all (0).
    NotAllowed,
    /// The purpose needs consent, even where the vendor declared legitimate interest (1).
    RequireConsent,
    /// The purpose needs legitimate interest, even where the vendor declared consent (2).
    RequireLegitimateInterest,
}

impl RestrictionType {
    /// The 2-bit code; 3 is reserved by the format and has no variant.
    pub(super) fn code(self) -> u64 {
        match self {
            Self::NotAllowed => 0,
            Self::RequireConsent => 1,
            Self::RequireLegitimateInterest => 2,
        }
    }

    pub(super) fn from_code(code: u64) -> Option<Self> {
        match code {
            0 => Some(Self::NotAllowed),
            1 => Some(Self::RequireConsent),
            2 => Some(Self::RequireLegitimateInterest),
            _ => None,
        }
    }
}

impl fmt::Display for RestrictionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAllowed => "not allowed",
            Self::RequireConsent => "require consent",
            Self::RequireLegitimateInterest => "require legitimate interest",
        })
    }
}

/// Publisher restrictions: for a (purpose, restriction type) pair, the vendors it applies to.
///
/// # Design
///
/// Keyed by the pair, like the IAB library: a string that lists the same pair twice means the
/// union of both vendor lists. A pair with no vendor restricts nothing, so none is kept; two
/// models that restrict the same vendors are then equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublisherRestrictions(BTreeMap<(u8, RestrictionType), VendorSet>);

impl PublisherRestrictions {
    /// Purpose ids are 6 bits and start at 1.
    const MAX_PURPOSE: u8 = 63;

    /// No restriction.
    pub const fn new() -> Self {
        Self(BTreeMap::new())
    }

    /// Restricts `purpose` (1 to 63) for each vendor of `vendors`.
    pub fn add(&mut self, purpose: u8, restriction_type: RestrictionType, vendors: &VendorSet) -> Result<(), TcfError> {
        if purpose == 0 || purpose > Self::MAX_PURPOSE {
            return Err(TcfError::IdOutOfRange {
                field: "restricted purpose",
                id: purpose.into(),
                max: Self::MAX_PURPOSE.into(),
            });
        }
        if !vendors.is_empty() {
            self.0
                .entry((purpose, restriction_type))
                .or_default()
                .union_with(vendors);
        }
        Ok(())
    }

    /// The vendors restricted for `purpose` in this way, if any.
    pub fn vendors(&self, purpose: u8, restriction_type: RestrictionType) -> Option<&VendorSet> {
        self.0.get(&(purpose, restriction_type))
    }

    /// The restrictions that apply to `vendor`, as (purpose, type) pairs in ascending order.
    pub fn for_vendor(&self, vendor: u16) -> impl Iterator<Item = (u8, RestrictionType)> + '_ {
        self.0
            .iter()
            .filter(move |(_, vendors)| vendors.contains(vendor))
            .map(|(&key, _)| key)
    }

    /// Every restriction: purpose, type and vendors, ordered by purpose then type.
    pub fn iter(&self) -> impl Iterator<Item = (u8, RestrictionType, &VendorSet)> + '_ {
        self.0.iter().map(|(&(p, t), v)| (p, t, v))
    }

    /// How many (purpose, type) pairs restrict at least one vendor.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is restricted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for PublisherRestrictions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Entry<'a>(u8, RestrictionType, &'a VendorSet);
        impl Serialize for Entry<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut st = s.serialize_struct("PublisherRestriction", 3)?;
                st.serialize_field("purpose", &self.0)?;
                st.serialize_field("restriction_type", &self.1)?;
                st.serialize_field("vendors", self.2)?;
                st.end()
            }
        }
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for (p, t, v) in self.iter() {
            seq.serialize_element(&Entry(p, t, v))?;
        }
        seq.end()
    }
}

/// The publisher TC segment: the user's choices on the publisher's own use of each purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct PublisherTc {
    /// Purposes the user consented to for the publisher (`PubPurposesConsent`).
    pub purpose_consents: PurposeSet,
    /// Purposes with the publisher's legitimate interest established
    /// (`PubPurposesLITransparency`).
    pub purpose_legitimate_interests: PurposeSet,
    /// The publisher's custom purposes.
    #[serde(flatten)]
    pub custom: CustomPurposes,
}

impl Serialize for CustomPurposes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CustomPurposes", 3)?;
        st.serialize_field("custom_purposes", &self.count)?;
        st.serialize_field("custom_purpose_consents", &self.consents)?;
        st.serialize_field("custom_purpose_legitimate_interests", &self.legitimate_interests)?;
        st.end()
    }
}
