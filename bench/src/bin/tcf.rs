//! TC string decode and encode rates, against base64url-decoding the same strings (the part of
//! decoding no codec can skip), measured in the same run.
//!
//! ```text
//! cargo run --release -p confiance-bench --bin tcf [-- --strings N]
//! ```

use base64::Engine;
use confiance_core::consent::tcf::{decode, encode};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .skip_while(|a| a != "--strings")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    // A realistic string: most purposes consented, some by legitimate interest, a few hundred
    // vendors spread over the list, and the disclosed-vendors segment.
    let mut model =
        decode("CPyVcAAPyVcAAAHABBENCzCgAAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAAA").expect("the seed string decodes");
    for p in [1, 2, 3, 4, 7, 8, 9, 10] {
        model.purpose_consents.insert(p).expect("a TCF purpose");
    }
    for p in [2, 7, 9, 10] {
        model.purpose_legitimate_interests.insert(p).expect("a TCF purpose");
    }
    for v in (1..900u16).filter(|v| v % 3 == 0 || v % 7 == 0) {
        model.vendor_consents.insert(v).expect("a vendor id");
    }
    for v in (1..900u16).step_by(11) {
        model.vendor_legitimate_interests.insert(v).expect("a vendor id");
    }
    let string = encode(&model).expect("the model encodes");
    let strings: Vec<&str> = std::iter::repeat_n(string.as_str(), n).collect();
    let models: Vec<_> = strings.iter().map(|s| decode(s).expect("decodes")).collect();

    let start = Instant::now();
    let mut bytes = 0usize;
    for s in &strings {
        for segment in s.split('.') {
            bytes += base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(segment)
                .map_or(0, |b| b.len());
        }
    }
    let base = start.elapsed();
    let start = Instant::now();
    let mut purposes = 0usize;
    for s in &strings {
        purposes += decode(s).map_or(0, |m| (1..=11).filter(|p| m.purpose_consented(*p)).count());
    }
    let dec = start.elapsed();
    let start = Instant::now();
    let mut len = 0usize;
    for m in &models {
        len += encode(m).map_or(0, |s| s.len());
    }
    let enc = start.elapsed();
    let rate = |d: std::time::Duration| strings.len() as f64 / d.as_secs_f64();
    println!("TC strings: {} (checksum {bytes}/{purposes}/{len})", strings.len());
    println!("{:<28} {:>14}", "", "strings/s");
    println!("{:<28} {:>14.0}", "base64url decode (baseline)", rate(base));
    println!(
        "{:<28} {:>14.0}   {:.1}× the baseline's time",
        "decode (Rust codec)",
        rate(dec),
        dec.as_secs_f64() / base.as_secs_f64()
    );
    println!("{:<28} {:>14.0}", "encode (Rust codec)", rate(enc));
}
