//! Known strings from public sources, error cases, and properties: every model round-trips,
//! and no input makes the decoder panic.

use super::bits::{BitReader, BitWriter};
use super::codec;
use super::*;
use proptest::prelude::*;

/// The example string of the IAB specification ("Consent string and vendor list formats v2"),
/// core and publisher TC segments. Field values as decoded by @iabtechlabtcf/core 1.5.21.
const SPEC_EXAMPLE: &str =
    "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA.argAC0gAAAAAAAAAAAA";
const SPEC_EXAMPLE_CORE: &str = "CLcVDxRMWfGmWAVAHCENAXCkAKDAADnAABRgA5mdfCKZuYJez-NQm0TBMYA4oCAAGQYIAAAAAAEAIAEgAA";

/// From iabtcf-es issue 201: a real CMP string whose publisher restrictions list the same
/// purpose and type more than once.
const ISSUE_201: &str = "CO4VGswO4VGswAfZCBDEAzCsAP_AAH_AAAigGUNf_X9fb2vj-_599_t0eY1f9_63t-wzjheMs-8NyZ-X_J4Wv2MyvB34JqQKGRgkunLBAQdtHGncTQgBwIlViTLMY02MjzNKJrJEilsbe2dYGH9vn8XT_ZKZ70-_v__7v3___33_5Ayhr_6_r7e18f3_Pvv9ujzGr_v_W9v2GccLxln3huTPy_5PC1-xmV4O_BNSBQyMEl05YICDto407iaEAOBEqsSZZjGmxkeZpRNZIkUtjb2zrAw_t8_i6f7JTPen39___d-___--__ICgKAOAAcAA4AFAAjgB6AEYALcGACAW0AtoJAHAAOAAcACgARwA9ACMAFuFABALaAW0GgDgAHAAOABQAI4AegBGAC3DgAgFtALaEQBwADgAHAAoAEcAPQAjABbiQAQC2gFtCoA4ABwADgAUACOAHoARgAtxYAIBbQC2hkAcAA4ABwAKABHAD0AIwAW40AEAtoBbQ6AOAAcAA4AFAAjgB6AEYALceACAW0AtohAHAAOAAcACgARwA9ACMAFuRABALaAW0SgDgAHAAOABQAI4AegBGAC3JgAgFtALaKQBwADgAHAAoAEcAPQAjABblQAQC2gFtA";

/// From iabtcf-es issue 142: a disclosed-vendors bit field shorter than its MaxVendorId says.
const ISSUE_142: &str = "CLSYjTaOngnCIAOABBENAXCMAGOAABBAAA7IA5n-m7fP6_3fbqVv6E__PoA5Aqff3aJx8tv_1967rfnQEQoAIAAQCrwkAEABAcACABIMACAAuApEVABABUSABgBCAVSAtIoACACIArYQAHACgAFgAVwBJgDcAI7AWgMAAgBiKgAgBMgFfKQAQBRkQAQA4AFiBAAoA-AEVAJlAVgAtYcACAJcAr4eABAK8OgBgFzAOmAqwgABAWyA.IFukWSQh";

/// A TCF v1.1 consent string (iabtcf-es issue 156).
const TCF_V1: &str = "BOhwdphOxFC7tAHABBFRC--AAAAuhr_7__7-_9_-_f__9uj3Or_v_f__32ccL59v_h_7v-_7fi_20nV4u_1vft9yfk1-5ctDztp507iakivXmqdeb9v_nz3_5pxP78k89r7337Ew_v8_v-b7BCON_YxEiA";

/// Allowed vendors {1, 2, 3, 10} and disclosed vendors {5, 6, 700}, as the IAB library
/// encodes those segments (the disclosed vendors as ranges).
const ALLOWED_1_2_3_10: &str = "QAFOBAAA";
const DISCLOSED_5_6_700: &str = "IFeQAoACgAMArwAA";

fn ids<T: Copy>(it: impl Iterator<Item = T>) -> Vec<T> {
    it.collect()
}

#[test]
fn the_specification_example_decodes_field_for_field() {
    let m = decode(SPEC_EXAMPLE).unwrap();
    assert_eq!(m.created.deciseconds(), 12_286_442_577);
    assert_eq!(m.created.to_timestamp().to_string(), "2008-12-07T10:04:17.7Z");
    assert_eq!(m.last_updated.deciseconds(), 13_262_154_134);
    assert_eq!(m.cmp_id.get(), 21);
    assert_eq!(m.cmp_version.get(), 7);
    assert_eq!(m.consent_screen.get(), 2);
    assert_eq!(m.consent_language.as_str(), "EN");
    assert_eq!(m.vendor_list_version.get(), 23);
    assert_eq!(m.policy_version.get(), 2);
    assert!(m.is_service_specific);
    assert!(!m.use_non_standard_texts);
    assert_eq!(ids(m.special_feature_optins.iter()), [2]);
    assert_eq!(ids(m.purpose_consents.iter()), [1, 3, 9, 10]);
    assert_eq!(ids(m.purpose_legitimate_interests.iter()), [3, 4, 5, 8, 9, 10]);
    assert!(m.purpose_consented(1) && !m.purpose_consented(2));
    assert!(m.purpose_legitimate_interest(8));
    assert!(!m.purpose_one_treatment);
    assert_eq!(m.publisher_country_code.as_str(), "KM");
    assert_eq!(m.vendor_consents.len(), 56);
    assert_eq!(m.vendor_consents.max_id(), 115);
    assert!(m.vendor_consented(2) && !m.vendor_consented(1) && !m.vendor_consented(284));
    assert_eq!(
        ids(m.vendor_legitimate_interests.iter()),
        [1, 9, 26, 27, 30, 36, 37, 43, 86, 97, 110, 113]
    );
    assert!(m.vendor_legitimate_interest(113));
    assert!(m.publisher_restrictions.is_empty());
    assert_eq!(m.disclosed_vendors, None);
    let p = m.publisher_tc.unwrap();
    assert_eq!(ids(p.purpose_consents.iter()), [2, 4, 6, 8, 9, 10]);
    assert_eq!(ids(p.purpose_legitimate_interests.iter()), [2, 4, 5, 7, 10]);
    assert_eq!(p.custom.count(), 0);
}

#[test]
fn repeated_publisher_restrictions_are_merged() {
    let m = decode(ISSUE_201).unwrap();
    assert_eq!(m.cmp_id.get(), 31);
    assert_eq!(m.consent_language.as_str(), "DE");
    assert_eq!(m.publisher_country_code.as_str(), "EU");
    assert_eq!(m.vendor_consents.len(), 479);
    assert_eq!(m.publisher_restrictions.len(), 20);
    for purpose in 1..=10 {
        let consent = m
            .publisher_restrictions
            .vendors(purpose, RestrictionType::RequireConsent)
            .unwrap();
        assert_eq!(ids(consent.iter()), [7, 20, 71, 122, 140, 183]);
        let li = m
            .publisher_restrictions
            .vendors(purpose, RestrictionType::RequireLegitimateInterest)
            .unwrap();
        assert_eq!(ids(li.iter()), [730]);
    }
    assert_eq!(
        ids(m.publisher_restrictions.for_vendor(730)).len(),
        10,
        "vendor 730 is restricted for purposes 1 to 10"
    );
    assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
}

#[test]
fn optional_segments_decode_in_any_order_and_allowed_vendors_are_skipped() {
    let core = decode(SPEC_EXAMPLE_CORE).unwrap();
    let with = |segments: &[&str]| decode(&[&[SPEC_EXAMPLE_CORE], segments].concat().join("."));

    let m = with(&[ALLOWED_1_2_3_10, DISCLOSED_5_6_700]).unwrap();
    assert_eq!(ids(m.disclosed_vendors.as_ref().unwrap().iter()), [5, 6, 700]);
    assert_eq!(
        TcModel {
            disclosed_vendors: None,
            ..m.clone()
        },
        core
    );
    assert_eq!(with(&[DISCLOSED_5_6_700, ALLOWED_1_2_3_10]).unwrap(), m);
    assert_eq!(with(&[ALLOWED_1_2_3_10]).unwrap(), core);
    // What is written back: the core, then the disclosed vendors; no allowed vendors.
    assert_eq!(encode(&m).unwrap().split('.').count(), 2);
}

#[test]
fn malformed_strings_are_refused_with_the_reason() {
    let cases: &[(&str, TcfError)] = &[
        ("", TcfError::Empty),
        (&format!("{SPEC_EXAMPLE_CORE}."), TcfError::EmptySegment { index: 1 }),
        (
            &format!("{SPEC_EXAMPLE_CORE}=="),
            TcfError::InvalidBase64 {
                index: 0,
                position: SPEC_EXAMPLE_CORE.len(),
                character: '=',
            },
        ),
        (TCF_V1, TcfError::UnsupportedVersion(1)),
        (DISCLOSED_5_6_700, TcfError::MissingCore { segment_type: 1 }),
        (
            &format!("{SPEC_EXAMPLE_CORE}.{SPEC_EXAMPLE_CORE}"),
            TcfError::DuplicateSegment(SegmentKind::Core),
        ),
        (
            &format!("{SPEC_EXAMPLE_CORE}.{DISCLOSED_5_6_700}.{DISCLOSED_5_6_700}"),
            TcfError::DuplicateSegment(SegmentKind::DisclosedVendors),
        ),
        (
            // 'g' is 100000: segment type 4.
            &format!("{SPEC_EXAMPLE_CORE}.gAAA"),
            TcfError::UnknownSegmentType {
                index: 1,
                segment_type: 4,
            },
        ),
        (
            "CLcVDxRMWfGm",
            TcfError::Truncated {
                segment: SegmentKind::Core,
                field: "LastUpdated",
                bit: 42,
                length: 72,
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(decode(input).as_ref(), Err(expected), "{input}");
    }
    // MaxVendorId says more vendors than the bits that follow.
    assert_eq!(
        decode(ISSUE_142),
        Err(TcfError::Truncated {
            segment: SegmentKind::DisclosedVendors,
            field: "DisclosedVendors.BitField",
            bit: 20,
            length: 48
        })
    );
}

#[test]
fn out_of_range_values_in_a_string_are_named() {
    let base = decode(SPEC_EXAMPLE_CORE).unwrap();
    // Rewrites the bits of the core from `bit` on with `value`.
    let patched = |bit: usize, width: u32, value: u64| -> String {
        let text = codec::write_core(&base).unwrap();
        let mut r = BitReader::new(&text, 0).unwrap();
        let mut w = BitWriter::default();
        for _ in 0..bit {
            w.bool(r.bool("head").unwrap());
        }
        r.int(width, "old").unwrap();
        w.int(value, width);
        while let Ok(b) = r.bool("tail") {
            w.bool(b);
        }
        w.finish()
    };
    // ConsentLanguage starts at bit 6 + 36 + 36 + 12 + 12 + 6 = 108.
    assert_eq!(
        decode(&patched(108, 6, 30)),
        Err(TcfError::InvalidLetter {
            field: "ConsentLanguage",
            value: 30
        })
    );
    assert_eq!(patched(108, 6, 4).len(), codec::write_core(&base).unwrap().len());
    assert_eq!(decode(&patched(108, 6, 4)).unwrap().consent_language.as_str(), "EN");
}

#[test]
fn vendor_sets_take_the_shorter_encoding() {
    let encoding_of = |set: &VendorSet| {
        let mut w = BitWriter::default();
        codec::write_vendors(&mut w, set);
        let text = w.finish();
        let mut r = BitReader::new(&text, 0).unwrap();
        r.int(16, "max").unwrap();
        (r.bool("range").unwrap(), text.len())
    };
    let mut run = VendorSet::new();
    run.insert_range(1, 1000).unwrap();
    assert!(encoding_of(&run).0, "one range beats 1000 bits");
    let every_other = VendorSet::from_ids((1..=200).map(|i| i * 2)).unwrap();
    assert!(!encoding_of(&every_other).0, "100 ranges lose to 400 bits");
    assert_eq!(encoding_of(&VendorSet::new()), (false, 4));
    // One vendor at 20: 29 range bits against a 20-bit field.
    assert!(!encoding_of(&VendorSet::from_ids([20]).unwrap()).0);
    assert!(encoding_of(&VendorSet::from_ids([30]).unwrap()).0);
}

#[test]
fn a_restriction_with_too_many_ranges_is_an_encoding_error() {
    let mut m = decode(SPEC_EXAMPLE).unwrap();
    let scattered = VendorSet::from_ids((1..=4096).map(|i| i * 2)).unwrap();
    m.publisher_restrictions
        .add(2, RestrictionType::NotAllowed, &scattered)
        .unwrap();
    assert_eq!(
        encode(&m),
        Err(TcfError::TooManyEntries {
            purpose: 2,
            restriction_type: RestrictionType::NotAllowed,
            entries: 4096
        })
    );
}

#[test]
fn values_are_checked_where_they_are_made() {
    assert!(UInt::<6>::new(63).is_ok());
    assert_eq!(UInt::<6>::new(64), Err(TcfError::TooWide { value: 64, bits: 6 }));
    assert_eq!(Alpha2::parse("fr").unwrap().as_str(), "FR");
    assert!(Alpha2::parse("F1").is_err() && Alpha2::parse("FRA").is_err());
    assert!(PurposeSet::from_ids([24]).is_ok() && PurposeSet::from_ids([25]).is_err());
    assert!(SpecialFeatureSet::from_ids([0]).is_err());
    assert!(VendorSet::from_ids([0]).is_err());
    assert!(VendorSet::new().insert_range(5, 4).is_err());
    assert!(CustomPurposes::new(3, [1, 3], [2]).is_ok());
    assert!(CustomPurposes::new(3, [4], []).is_err());
    assert!(CustomPurposes::new(64, [], []).is_err());
    assert!(
        PublisherRestrictions::new()
            .add(64, RestrictionType::NotAllowed, &VendorSet::new())
            .is_err()
    );
    let t: jiff::Timestamp = "2026-03-01T12:00:00.25Z".parse().unwrap();
    let tc = TcfTimestamp::from_timestamp(t).unwrap();
    assert_eq!(tc.to_timestamp().to_string(), "2026-03-01T12:00:00.2Z");
    assert!(TcfTimestamp::from_timestamp("1969-12-31T23:59:59Z".parse().unwrap()).is_err());
    assert!(TcfTimestamp::from_deciseconds(1 << 36).is_err());
}

#[test]
fn the_model_serialises_to_the_normalised_json() {
    let m = decode(&format!("{ISSUE_201}.{DISCLOSED_5_6_700}")).unwrap();
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["created"], 15_977_442_096u64);
    assert_eq!(json["consent_language"], "DE");
    assert_eq!(json["special_feature_optins"], serde_json::json!([1, 2]));
    assert_eq!(json["disclosed_vendors"], serde_json::json!([5, 6, 700]));
    assert_eq!(json["publisher_tc"], serde_json::Value::Null);
    assert_eq!(
        json["publisher_restrictions"][1],
        serde_json::json!({"purpose": 1, "restriction_type": "require_legitimate_interest", "vendors": [730]})
    );
    let spec = serde_json::to_value(decode(SPEC_EXAMPLE).unwrap()).unwrap();
    assert_eq!(
        spec["publisher_tc"],
        serde_json::json!({
            "purpose_consents": [2, 4, 6, 8, 9, 10],
            "purpose_legitimate_interests": [2, 4, 5, 7, 10],
            "custom_purposes": 0,
            "custom_purpose_consents": [],
            "custom_purpose_legitimate_interests": [],
        })
    );
}

// ---- properties --------------------------------------------------------------------------------

fn vendor_set() -> impl Strategy<Value = VendorSet> {
    let from_ranges = |ranges: Vec<(u16, u16)>| {
        let mut set = VendorSet::new();
        for (start, len) in ranges {
            set.insert_range(start, start.saturating_add(len)).unwrap();
        }
        set
    };
    prop_oneof![
        Just(VendorSet::new()),
        prop::collection::vec(1u16..=700, 0..120).prop_map(|v| VendorSet::from_ids(v).unwrap()),
        prop::collection::vec((1u16..=u16::MAX, 0u16..400), 0..6).prop_map(from_ranges),
        prop::collection::vec(1u16..=u16::MAX, 0..12).prop_map(|v| VendorSet::from_ids(v).unwrap()),
    ]
}

fn alpha2() -> impl Strategy<Value = Alpha2> {
    (0u64..26, 0u64..26).prop_map(|(a, b)| Alpha2::from_indices("test", a, b).unwrap())
}

fn restrictions() -> impl Strategy<Value = PublisherRestrictions> {
    prop::collection::vec((1u8..=63, 0u64..3, vendor_set()), 0..5).prop_map(|list| {
        let mut r = PublisherRestrictions::new();
        for (purpose, code, vendors) in list {
            let t = RestrictionType::from_code(code).unwrap();
            r.add(purpose, t, &vendors).unwrap();
        }
        r
    })
}

fn publisher_tc() -> impl Strategy<Value = PublisherTc> {
    (any::<u64>(), any::<u64>(), 0u64..64, any::<u64>(), any::<u64>()).prop_map(
        |(consents, li, count, custom_consents, custom_li)| {
            let mask = (1u64 << count) - 1;
            PublisherTc {
                purpose_consents: FixedSet::from_low_bits(consents),
                purpose_legitimate_interests: FixedSet::from_low_bits(li),
                custom: CustomPurposes::from_bits(UInt::from_bits(count), custom_consents & mask, custom_li & mask),
            }
        },
    )
}

prop_compose! {
    fn model()(
        times in (0u64..1 << 36, 0u64..1 << 36),
        cmp in (0u64..4096, 0u64..4096, 0u64..64, 0u64..4096, 0u64..64),
        flags in any::<[bool; 3]>(),
        languages in (alpha2(), alpha2()),
        purposes in (any::<u64>(), any::<u64>(), any::<u64>()),
        vendors in (vendor_set(), vendor_set()),
        publisher_restrictions in restrictions(),
        disclosed_vendors in prop::option::of(vendor_set()),
        publisher_tc in prop::option::of(publisher_tc()),
    ) -> TcModel {
        TcModel {
            created: TcfTimestamp::from_bits(times.0),
            last_updated: TcfTimestamp::from_bits(times.1),
            cmp_id: UInt::from_bits(cmp.0),
            cmp_version: UInt::from_bits(cmp.1),
            consent_screen: UInt::from_bits(cmp.2),
            consent_language: languages.0,
            vendor_list_version: UInt::from_bits(cmp.3),
            policy_version: UInt::from_bits(cmp.4),
            is_service_specific: flags[0],
            use_non_standard_texts: flags[1],
            special_feature_optins: FixedSet::from_low_bits(purposes.0),
            purpose_consents: FixedSet::from_low_bits(purposes.1),
            purpose_legitimate_interests: FixedSet::from_low_bits(purposes.2),
            purpose_one_treatment: flags[2],
            publisher_country_code: languages.1,
            vendor_consents: vendors.0,
            vendor_legitimate_interests: vendors.1,
            publisher_restrictions,
            disclosed_vendors,
            publisher_tc,
        }
    }
}

/// Decoding must not panic; when it succeeds, the model must survive encode and decode.
fn decode_is_total(input: &str) {
    if let Ok(m) = decode(input) {
        match encode(&m) {
            Ok(again) => assert_eq!(decode(&again).as_ref(), Ok(&m), "{input}"),
            // Merging repeated restrictions can need more ranges than one restriction holds.
            Err(e) => assert!(matches!(e, TcfError::TooManyEntries { .. }), "{e}"),
        }
    }
}

const BASE64URL_AND_DOT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

proptest! {
    #[test]
    fn every_model_round_trips(m in model()) {
        let text = encode(&m).unwrap();
        prop_assert_eq!(decode(&text), Ok(m));
        for segment in text.split('.') {
            prop_assert_eq!(segment.len() % 4, 0);
        }
    }

    #[test]
    fn alpha2_accepts_exactly_two_ascii_letters(text in "\\PC{0,3}") {
        let two_letters = text.len() == 2 && text.bytes().all(|b| b.is_ascii_alphabetic());
        match Alpha2::parse(&text) {
            Ok(code) => {
                prop_assert!(two_letters);
                prop_assert_eq!(code.as_str(), text.to_ascii_uppercase());
            }
            Err(e) => {
                prop_assert!(!two_letters);
                prop_assert_eq!(e, TcfError::InvalidLetters(text));
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        decode_is_total(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_base64url_never_panics(
        chars in prop::collection::vec(prop::sample::select(BASE64URL_AND_DOT), 0..400),
        first in prop::sample::select(&b"CDEFGHIJKLMNOPQRSTUVWXYZ"[..]),
    ) {
        // Mostly starting like a version-2 core segment, to get past the first checks.
        let text: String = std::iter::once(first).chain(chars).map(char::from).collect();
        decode_is_total(&text);
    }

    #[test]
    fn damaged_encodings_never_panic(
        m in model(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(BASE64URL_AND_DOT)), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut text = encode(&m).unwrap().into_bytes();
        for (at, c) in edits {
            let i = at.index(text.len());
            text[i] = c;
        }
        if let Some(cut) = cut {
            text.truncate(cut.index(text.len() + 1));
        }
        decode_is_total(&String::from_utf8(text).unwrap());
    }
}
