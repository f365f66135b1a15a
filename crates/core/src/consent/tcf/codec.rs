//! The field layout of each segment, read and written in the order the specification lists it.
//!
//! # Design
//!
//! One reading function and one writing function per structure, side by side, so that a
//! change to a layout is made in both at once. Reading is strict where the IAB library is
//! lenient about missing bits (it reads past the end of a segment as zeros in places): a
//! field that is cut short is an error naming the field and the bit. It is lenient where
//! leniency loses nothing: ids past `MaxVendorId` in a range encoding are kept, and bits after
//! the last field (padding) are ignored.

use super::bits::{BitReader, BitWriter};
use super::types::{
    Alpha2, CustomPurposes, FixedSet, PublisherRestrictions, PublisherTc, RestrictionType, TcfTimestamp, UInt,
    VendorSet,
};
use super::{TcModel, TcfError};

/// The only TC string version of TCF v2.0 to v2.3.
pub(super) const VERSION: u64 = 2;

/// Vendor ids, `MaxVendorId` and range ends are 16 bits.
const VENDOR_ID_BITS: u32 = 16;
/// `NumEntries`, `NumPubRestrictions`: 12 bits.
const COUNT_BITS: u32 = 12;
const MAX_COUNT: usize = (1 << COUNT_BITS) - 1;

/// The names of the fields of one vendor vector, for error messages.
pub(super) struct VectorFields {
    max_id: &'static str,
    is_range: &'static str,
    bit_field: &'static str,
    num_entries: &'static str,
    entry_is_range: &'static str,
    start: &'static str,
    end: &'static str,
}

macro_rules! vector_fields {
    ($name:literal) => {
        VectorFields {
            max_id: concat!($name, ".MaxVendorId"),
            is_range: concat!($name, ".IsRangeEncoding"),
            bit_field: concat!($name, ".BitField"),
            num_entries: concat!($name, ".NumEntries"),
            entry_is_range: concat!($name, ".IsARange"),
            start: concat!($name, ".StartOrOnlyVendorId"),
            end: concat!($name, ".EndVendorId"),
        }
    };
}

const VENDOR_CONSENTS: VectorFields = vector_fields!("VendorConsents");
const VENDOR_LEGITIMATE_INTERESTS: VectorFields = vector_fields!("VendorLegitimateInterests");
const PUB_RESTRICTIONS: VectorFields = vector_fields!("PubRestrictions");
pub(super) const DISCLOSED_VENDORS: VectorFields = vector_fields!("DisclosedVendors");
pub(super) const ALLOWED_VENDORS: VectorFields = vector_fields!("AllowedVendors");

// ---- reading -----------------------------------------------------------------------------------

fn uint<const BITS: u32>(r: &mut BitReader, field: &'static str) -> Result<UInt<BITS>, TcfError> {
    Ok(UInt::from_bits(r.int(BITS, field)?))
}

fn alpha2(r: &mut BitReader, field: &'static str) -> Result<Alpha2, TcfError> {
    let first = r.int(6, field)?;
    let second = r.int(6, field)?;
    Alpha2::from_indices(field, first, second)
}

/// `n` flags, the first for id 1, as a mask with bit `id - 1` set for each flag that is set.
fn flags(r: &mut BitReader, n: u32, field: &'static str) -> Result<u64, TcfError> {
    let value = r.int(n, field)?;
    Ok((0..n)
        .filter(|i| value >> (n - 1 - i) & 1 == 1)
        .fold(0, |mask, i| mask | 1 << i))
}

fn fixed<const N: u8>(r: &mut BitReader, field: &'static str) -> Result<FixedSet<N>, TcfError> {
    Ok(FixedSet::from_low_bits(flags(r, N.into(), field)?))
}

/// `NumEntries` then that many single ids or ranges, added to `set`.
fn ranges(r: &mut BitReader, names: &VectorFields, set: &mut VendorSet) -> Result<(), TcfError> {
    for _ in 0..r.int(COUNT_BITS, names.num_entries)? {
        let is_range = r.bool(names.entry_is_range)?;
        let start = r.int(VENDOR_ID_BITS, names.start)? as u16;
        let end = if is_range {
            r.int(VENDOR_ID_BITS, names.end)? as u16
        } else {
            start
        };
        if start == 0 {
            return Err(TcfError::IdOutOfRange {
                field: names.start,
                id: 0,
                max: u16::MAX.into(),
            });
        }
        if end < start {
            return Err(TcfError::InvalidRange {
                field: names.end,
                start,
                end,
            });
        }
        set.insert_range(start, end)?;
    }
    Ok(())
}

/// A vendor vector: `MaxVendorId`, the encoding type, then a bit field or range entries.
pub(super) fn vendors(r: &mut BitReader, names: &VectorFields) -> Result<VendorSet, TcfError> {
    let max_id = r.int(VENDOR_ID_BITS, names.max_id)? as u16;
    let mut set = VendorSet::new();
    if r.bool(names.is_range)? {
        ranges(r, names, &mut set)?;
    } else {
        r.require(max_id.into(), names.bit_field)?;
        for id in 1..=max_id {
            if r.bool(names.bit_field)? {
                set.insert(id)?;
            }
        }
    }
    Ok(set)
}

fn restrictions(r: &mut BitReader) -> Result<PublisherRestrictions, TcfError> {
    let mut out = PublisherRestrictions::new();
    for _ in 0..r.int(COUNT_BITS, "PubRestrictions.NumPubRestrictions")? {
        let purpose = r.int(6, "PubRestrictions.PurposeId")? as u8;
        let code = r.int(2, "PubRestrictions.RestrictionType")?;
        let restriction_type = RestrictionType::from_code(code).ok_or(TcfError::ReservedRestrictionType { purpose })?;
        if purpose == 0 {
            return Err(TcfError::IdOutOfRange {
                field: "PubRestrictions.PurposeId",
                id: 0,
                max: 63,
            });
        }
        let mut vendors = VendorSet::new();
        ranges(r, &PUB_RESTRICTIONS, &mut vendors)?;
        out.add(purpose, restriction_type, &vendors)?;
    }
    Ok(out)
}

/// The core segment, from its first bit (the version); the optional segments are left `None`.
pub(super) fn core(r: &mut BitReader) -> Result<TcModel, TcfError> {
    let version = r.int(6, "Version")?;
    if version != VERSION {
        return Err(TcfError::UnsupportedVersion(version as u8));
    }
    Ok(TcModel {
        created: TcfTimestamp::from_bits(r.int(36, "Created")?),
        last_updated: TcfTimestamp::from_bits(r.int(36, "LastUpdated")?),
        cmp_id: uint(r, "CmpId")?,
        cmp_version: uint(r, "CmpVersion")?,
        consent_screen: uint(r, "ConsentScreen")?,
        consent_language: alpha2(r, "ConsentLanguage")?,
        vendor_list_version: uint(r, "VendorListVersion")?,
        policy_version: uint(r, "TcfPolicyVersion")?,
        is_service_specific: r.bool("IsServiceSpecific")?,
        use_non_standard_texts: r.bool("UseNonStandardTexts")?,
        special_feature_optins: fixed(r, "SpecialFeatureOptIns")?,
        purpose_consents: fixed(r, "PurposesConsent")?,
        purpose_legitimate_interests: fixed(r, "PurposesLITransparency")?,
        purpose_one_treatment: r.bool("PurposeOneTreatment")?,
        publisher_country_code: alpha2(r, "PublisherCC")?,
        vendor_consents: vendors(r, &VENDOR_CONSENTS)?,
        vendor_legitimate_interests: vendors(r, &VENDOR_LEGITIMATE_INTERESTS)?,
        publisher_restrictions: restrictions(r)?,
        disclosed_vendors: None,
        publisher_tc: None,
    })
}

/// The publisher TC segment, after its segment type.
pub(super) fn publisher_tc(r: &mut BitReader) -> Result<PublisherTc, TcfError> {
    let purpose_consents = fixed(r, "PubPurposesConsent")?;
    let purpose_legitimate_interests = fixed(r, "PubPurposesLITransparency")?;
    let count: UInt<6> = uint(r, "NumCustomPurposes")?;
    let n = u32::from(count.get());
    let consents = flags(r, n, "CustomPurposesConsent")?;
    let legitimate_interests = flags(r, n, "CustomPurposesLITransparency")?;
    Ok(PublisherTc {
        purpose_consents,
        purpose_legitimate_interests,
        custom: CustomPurposes::from_bits(count, consents, legitimate_interests),
    })
}

// ---- writing -----------------------------------------------------------------------------------

fn write_flags(w: &mut BitWriter, mask: u64, n: u32) {
    for i in 0..n {
        w.bool(mask >> i & 1 == 1);
    }
}

fn write_ranges(w: &mut BitWriter, runs: &[(u16, u16)]) {
    w.int(runs.len() as u64, COUNT_BITS);
    for &(start, end) in runs {
        w.bool(start != end);
        w.int(start.into(), VENDOR_ID_BITS);
        if start != end {
            w.int(end.into(), VENDOR_ID_BITS);
        }
    }
}

/// A vendor vector in whichever encoding is shorter (the bit field on a tie).
pub(super) fn write_vendors(w: &mut BitWriter, set: &VendorSet) {
    let max_id = set.max_id();
    let runs = set.runs();
    let range_bits: usize = COUNT_BITS as usize + runs.iter().map(|(s, e)| if s == e { 17 } else { 33 }).sum::<usize>();
    w.int(max_id.into(), VENDOR_ID_BITS);
    // A range encoding shorter than a 65,535-bit field has far fewer than 4,096 entries.
    if range_bits < usize::from(max_id) {
        w.bool(true);
        write_ranges(w, &runs);
    } else {
        w.bool(false);
        for id in 1..=max_id {
            w.bool(set.contains(id));
        }
    }
}

fn write_restrictions(w: &mut BitWriter, r: &PublisherRestrictions) -> Result<(), TcfError> {
    // At most 63 purposes times 3 types: always within the 12-bit count.
    w.int(r.len() as u64, COUNT_BITS);
    for (purpose, restriction_type, vendors) in r.iter() {
        let runs = vendors.runs();
        if runs.len() > MAX_COUNT {
            return Err(TcfError::TooManyEntries {
                purpose,
                restriction_type,
                entries: runs.len(),
            });
        }
        w.int(purpose.into(), 6);
        w.int(restriction_type.code(), 2);
        write_ranges(w, &runs);
    }
    Ok(())
}

pub(super) fn write_core(m: &TcModel) -> Result<String, TcfError> {
    let mut w = BitWriter::default();
    w.int(VERSION, 6);
    w.int(m.created.deciseconds(), 36);
    w.int(m.last_updated.deciseconds(), 36);
    w.int(m.cmp_id.get().into(), 12);
    w.int(m.cmp_version.get().into(), 12);
    w.int(m.consent_screen.get().into(), 6);
    for letter in m.consent_language.indices() {
        w.int(letter, 6);
    }
    w.int(m.vendor_list_version.get().into(), 12);
    w.int(m.policy_version.get().into(), 6);
    w.bool(m.is_service_specific);
    w.bool(m.use_non_standard_texts);
    write_flags(&mut w, m.special_feature_optins.bits(), 12);
    write_flags(&mut w, m.purpose_consents.bits(), 24);
    write_flags(&mut w, m.purpose_legitimate_interests.bits(), 24);
    w.bool(m.purpose_one_treatment);
    for letter in m.publisher_country_code.indices() {
        w.int(letter, 6);
    }
    write_vendors(&mut w, &m.vendor_consents);
    write_vendors(&mut w, &m.vendor_legitimate_interests);
    write_restrictions(&mut w, &m.publisher_restrictions)?;
    Ok(w.finish())
}

pub(super) fn write_publisher_tc(w: &mut BitWriter, p: &PublisherTc) {
    write_flags(w, p.purpose_consents.bits(), 24);
    write_flags(w, p.purpose_legitimate_interests.bits(), 24);
    let n = p.custom.count();
    w.int(n.into(), 6);
    write_flags(w, p.custom.consents().bits(), n.into());
    write_flags(w, p.custom.legitimate_interests().bits(), n.into());
}
