//! IAB TCF v2 TC strings (TCF v2.2 and v2.3): decoding them into a [`TcModel`] and encoding
//! one back.
//!
//! A TC string is how a consent management platform (CMP) on a publisher's page tells ad-tech
//! vendors what the user chose: consent and legitimate interest per purpose and per vendor,
//! special-feature opt-ins, the publisher's restrictions and its own purposes. Confiance reads
//! the ones sources send as consent signals (the catalog maps TCF purposes to its own), and can
//! write one from its own record of consent.
//!
//! ```
//! use confiance_core::consent::tcf;
//!
//! // The example of the IAB specification: a core and a publisher TC segment.
//! let model = tcf::decode(
//!     "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA.argAC0gAAAAAAAAAAAA",
//! )?;
//! assert_eq!(model.cmp_id.get(), 21);
//! assert!(model.purpose_consented(1));
//! assert_eq!(tcf::decode(&tcf::encode(&model)?)?, model);
//! # Ok::<(), tcf::TcfError>(())
//! ```
//!
//! # Design
//!
//! **One model, exact both ways.** [`decode`] gives a [`TcModel`] and [`encode`] writes it
//! back; `decode(encode(m)) == m` for every model. The model holds what the string holds and
//! nothing the string cannot hold (see [`types`]): no version field, because TCF v2.0 to v2.3
//! all write version 2 and any other version is refused; times in deciseconds, the unit of the
//! string. The bytes need not round-trip: a decoder accepts both vendor encodings and any
//! padding, the encoder picks one.
//!
//! **TCF v2.2 and v2.3 share one layout.** They differ in policy, which the string carries as
//! `policy_version` (4 for TCF v2.2, 5 for v2.3, the IAB library's default), and in which
//! segments a CMP must write: TCF v2.3 makes the disclosed-vendors segment mandatory for strings
//! created from 28 February 2026, and earlier strings stay valid. So the decoder does not refuse
//! a string without it; [`TcModel::disclosed_vendors`] is `None` and the caller, who knows the
//! date and the policy it applies, decides.
//!
//! **Segments.** The core segment comes first; then, in any order and at most once each, the
//! disclosed-vendors segment (type 1), the publisher TC segment (type 3) and the allowed-vendors
//! segment (type 2). Allowed vendors belonged to the "out-of-band" mechanism that TCF v2.2
//! removed: a string that still carries the segment is accepted, the segment is checked like
//! any other and then dropped, so it is neither in the model nor written back. Segment types
//! 4 to 7 are refused.
//!
//! **Errors, never panics.** Malformed input gives a [`TcfError`] naming what is wrong and
//! where: the character that is not base64url, the field that runs past the end of its segment
//! and at which bit, the value out of range. The decoder is fuzzed (`fuzz/`) and cross-checked
//! against the IAB's own library (`crates/core/tests/tcf_oracle.rs`).
//!
//! **Only the format.** The rules of the TCF policy that depend on the Global Vendor List
//! (a vendor that did not declare a purpose has no signal for it; no legitimate interest for
//! purposes 1 and 3 to 6 since TCF v2.2) are not applied here: the codec reports what the
//! string says, and the consent module judges it.

mod bits;
mod codec;
pub mod types;

#[cfg(test)]
mod tests;

pub use types::{
    Alpha2, CustomPurposes, FixedSet, PublisherRestrictions, PublisherTc, PurposeSet, RestrictionType,
    SpecialFeatureSet, TcfTimestamp, UInt, VendorSet,
};

use bits::{BitReader, BitWriter};
use serde::Serialize;
use std::fmt;

/// Everything a TC string says (version 2: TCF v2.0 to v2.3), field for field.
///
/// Serialises to the normalised JSON that the oracle test compares with the IAB library's
/// decoding: sets as sorted id lists, times as deciseconds, absent segments as `null`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TcModel {
    /// When the string was first created.
    pub created: TcfTimestamp,
    /// When the string was last updated.
    pub last_updated: TcfTimestamp,
    /// The IAB-registered id of the CMP that last updated the string.
    pub cmp_id: UInt<12>,
    /// That CMP's own version number.
    pub cmp_version: UInt<12>,
    /// The CMP's screen on which consent was given, a number of the CMP's choosing.
    pub consent_screen: UInt<6>,
    /// The language (ISO 639-1) in which the CMP asked.
    pub consent_language: Alpha2,
    /// The Global Vendor List version used.
    pub vendor_list_version: UInt<12>,
    /// The TCF policy version: 4 for TCF v2.2, 5 for TCF v2.3 (2 for v2.0, 3 for v2.1).
    pub policy_version: UInt<6>,
    /// Whether the signals apply to this service (site or app) only; always so since the
    /// global scope was retired.
    pub is_service_specific: bool,
    /// Whether the CMP used non-standard texts (customised stack descriptions).
    pub use_non_standard_texts: bool,
    /// Special features the user opted in to.
    pub special_feature_optins: SpecialFeatureSet,
    /// Purposes the user consented to.
    pub purpose_consents: PurposeSet,
    /// Purposes with legitimate interest established and not objected to.
    pub purpose_legitimate_interests: PurposeSet,
    /// Whether purpose 1 was not disclosed, because the publisher's country does not ask for
    /// consent to store information on a device.
    pub purpose_one_treatment: bool,
    /// The publisher's country (ISO 3166-1 alpha-2).
    pub publisher_country_code: Alpha2,
    /// Vendors the user consented to.
    pub vendor_consents: VendorSet,
    /// Vendors with legitimate interest established and not objected to.
    pub vendor_legitimate_interests: VendorSet,
    /// The publisher's restrictions on vendors' purposes.
    pub publisher_restrictions: PublisherRestrictions,
    /// The vendors the CMP disclosed to the user, when the string has that segment.
    pub disclosed_vendors: Option<VendorSet>,
    /// The publisher's own purposes, when the string has that segment.
    pub publisher_tc: Option<PublisherTc>,
}

impl TcModel {
    /// Whether the user consented to `purpose` (1-based; false for ids outside 1 to 24).
    pub fn purpose_consented(&self, purpose: u8) -> bool {
        self.purpose_consents.contains(purpose)
    }

    /// Whether legitimate interest is established for `purpose` (1-based).
    pub fn purpose_legitimate_interest(&self, purpose: u8) -> bool {
        self.purpose_legitimate_interests.contains(purpose)
    }

    /// Whether the user consented to vendor `vendor`. This is the vendor's own consent bit; a
    /// vendor may process for a purpose only with the purpose's consent too, and subject to
    /// [`TcModel::publisher_restrictions`].
    pub fn vendor_consented(&self, vendor: u16) -> bool {
        self.vendor_consents.contains(vendor)
    }

    /// Whether legitimate interest is established for vendor `vendor`.
    pub fn vendor_legitimate_interest(&self, vendor: u16) -> bool {
        self.vendor_legitimate_interests.contains(vendor)
    }
}

/// The segments of a TC string, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// The core segment (always first; its first bits are the version).
    Core,
    /// Segment type 1: the vendors the CMP disclosed.
    DisclosedVendors,
    /// Segment type 2: the vendors allowed out-of-band, removed in TCF v2.2.
    AllowedVendors,
    /// Segment type 3: the publisher's own purposes.
    PublisherTc,
}

impl fmt::Display for SegmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Core => "core",
            Self::DisclosedVendors => "disclosed vendors",
            Self::AllowedVendors => "allowed vendors",
            Self::PublisherTc => "publisher TC",
        })
    }
}

/// Why a TC string could not be decoded, or a model or value could not be built or encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TcfError {
    /// The string is empty.
    #[error("the TC string is empty")]
    Empty,
    /// Two dots in a row, or a dot at either end.
    #[error("segment {index} of the TC string is empty")]
    EmptySegment {
        /// 0-based position of the segment among the dot-separated segments.
        index: usize,
    },
    /// A character outside the base64url alphabet (`=` padding included).
    #[error(
        "segment {index} has {character:?} at byte {position}, which is not base64url (A-Z a-z 0-9 - _, without padding)"
    )]
    InvalidBase64 {
        /// 0-based position of the segment.
        index: usize,
        /// Byte offset of the character within the segment.
        position: usize,
        /// The character.
        character: char,
    },
    /// The first segment is not a core segment.
    #[error("the TC string starts with a segment of type {segment_type}, not with its core segment")]
    MissingCore {
        /// The segment type found (its first 3 bits).
        segment_type: u8,
    },
    /// The core segment's version is not 2 (version 1 was TCF v1, gone since 2020).
    #[error("TC string version {0} is not supported: TCF v2.0 to v2.3 strings are version 2")]
    UnsupportedVersion(u8),
    /// A segment type that TCF v2 does not define (4 to 7).
    #[error("segment {index} has type {segment_type}, which TCF v2 does not define")]
    UnknownSegmentType {
        /// 0-based position of the segment.
        index: usize,
        /// The 3-bit segment type.
        segment_type: u8,
    },
    /// A segment type appears twice (for the core: a later segment has type 0).
    #[error("the {0} segment appears more than once")]
    DuplicateSegment(SegmentKind),
    /// A field runs past the end of its segment.
    #[error("the {segment} segment is truncated: {field} starts at bit {bit} but the segment has {length} bits")]
    Truncated {
        /// The segment being read.
        segment: SegmentKind,
        /// The field, named as in the specification.
        field: &'static str,
        /// Where the field starts, in bits from the start of the segment.
        bit: usize,
        /// How many bits the segment has.
        length: usize,
    },
    /// A letter field (language, country) holds a number past `Z`.
    #[error("{field} holds letter number {value}, past Z (25)")]
    InvalidLetter {
        /// The field.
        field: &'static str,
        /// The 6-bit value.
        value: u64,
    },
    /// Text given as a language or country code is not two ASCII letters.
    #[error("{0:?} is not two letters A-Z")]
    InvalidLetters(String),
    /// An id (vendor, purpose, feature) of 0, or past the highest id the field can hold.
    #[error("{field}: id {id} is outside 1 to {max}")]
    IdOutOfRange {
        /// The field or set.
        field: &'static str,
        /// The id.
        id: u32,
        /// The highest valid id.
        max: u32,
    },
    /// A vendor range whose end comes before its start.
    #[error("{field}: the range {start}-{end} ends before it starts")]
    InvalidRange {
        /// The field.
        field: &'static str,
        /// The first id.
        start: u16,
        /// The last id.
        end: u16,
    },
    /// A publisher restriction with restriction type 3, which the format reserves.
    #[error("a publisher restriction of purpose {purpose} has the reserved restriction type 3")]
    ReservedRestrictionType {
        /// The restricted purpose.
        purpose: u8,
    },
    /// A value does not fit in its field.
    #[error("{value} does not fit in {bits} bits")]
    TooWide {
        /// The value.
        value: u64,
        /// The field's width.
        bits: u32,
    },
    /// A time before 1970 or after 2187 cannot be a TC string time.
    #[error("{0} is outside the times a TC string can hold (1970 to 2187)")]
    TimestampOutOfRange(jiff::Timestamp),
    /// A publisher restriction needs more vendor ranges than its 12-bit count can say.
    #[error(
        "the publisher restriction of purpose {purpose} ({restriction_type}) needs {entries} vendor ranges; a TC string holds at most 4095"
    )]
    TooManyEntries {
        /// The restricted purpose.
        purpose: u8,
        /// The restriction.
        restriction_type: RestrictionType,
        /// How many ranges its vendors form.
        entries: usize,
    },
}

/// Decodes a TC string: the core segment, then any optional segments (see the module docs).
pub fn decode(tc_string: &str) -> Result<TcModel, TcfError> {
    if tc_string.is_empty() {
        return Err(TcfError::Empty);
    }
    let mut segments = tc_string.split('.').enumerate();
    let mut model = match segments.next() {
        Some((index, text)) => {
            let mut r = BitReader::new(text, index)?;
            let segment_type = r.peek(3, "SegmentType")?;
            if segment_type != 0 {
                return Err(TcfError::MissingCore {
                    segment_type: segment_type as u8,
                });
            }
            codec::core(&mut r)?
        }
        None => return Err(TcfError::Empty),
    };
    let mut allowed_vendors_seen = false;
    for (index, text) in segments {
        let mut r = BitReader::new(text, index)?;
        match r.int(3, "SegmentType")? {
            0 => return Err(TcfError::DuplicateSegment(SegmentKind::Core)),
            1 => {
                r.set_segment(SegmentKind::DisclosedVendors);
                if model.disclosed_vendors.is_some() {
                    return Err(TcfError::DuplicateSegment(SegmentKind::DisclosedVendors));
                }
                model.disclosed_vendors = Some(codec::vendors(&mut r, &codec::DISCLOSED_VENDORS)?);
            }
            2 => {
                r.set_segment(SegmentKind::AllowedVendors);
                if allowed_vendors_seen {
                    return Err(TcfError::DuplicateSegment(SegmentKind::AllowedVendors));
                }
                allowed_vendors_seen = true;
                codec::vendors(&mut r, &codec::ALLOWED_VENDORS)?;
            }
            3 => {
                r.set_segment(SegmentKind::PublisherTc);
                if model.publisher_tc.is_some() {
                    return Err(TcfError::DuplicateSegment(SegmentKind::PublisherTc));
                }
                model.publisher_tc = Some(codec::publisher_tc(&mut r)?);
            }
            segment_type => {
                return Err(TcfError::UnknownSegmentType {
                    index,
                    segment_type: segment_type as u8,
                });
            }
        }
    }
    Ok(model)
}

/// Encodes a model: the core segment, then the disclosed-vendors and publisher TC segments when
/// present, joined with dots, each base64url without padding.
///
/// Fails only for a publisher restriction whose vendors form more than 4,095 separate ranges.
pub fn encode(model: &TcModel) -> Result<String, TcfError> {
    let mut out = codec::write_core(model)?;
    if let Some(disclosed) = &model.disclosed_vendors {
        let mut w = BitWriter::default();
        w.int(1, 3);
        codec::write_vendors(&mut w, disclosed);
        out.push('.');
        out.push_str(&w.finish());
    }
    if let Some(publisher_tc) = &model.publisher_tc {
        let mut w = BitWriter::default();
        w.int(3, 3);
        codec::write_publisher_tc(&mut w, publisher_tc);
        out.push('.');
        out.push_str(&w.finish());
    }
    Ok(out)
}
