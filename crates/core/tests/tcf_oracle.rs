//! Confiance's TC string codec against the IAB's own library, @iabtechlabtcf/core, both ways:
//! strings the library encodes decode in Rust to the model the library decodes, and strings
//! Rust encodes decode in the library to the model Rust started from.
//!
//! The library runs in `tests/clients/tcf_oracle.mjs` (node), which `scripts/test` installs
//! with `npm ci`; it answers in the normalised JSON that `TcModel` serialises to, so the two
//! models are compared as JSON values (decoded models, not bytes: both encodings of a vendor
//! set are valid). Without node or the library the tests fail, saying how to install them:
//! a cross-check that silently skips would prove nothing.

use confiance_core::consent::tcf::{
    self, Alpha2, CustomPurposes, PublisherRestrictions, PublisherTc, PurposeSet, RestrictionType, SpecialFeatureSet,
    TcModel, TcfTimestamp, UInt, VendorSet,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// How many models each direction checks.
const MODELS: usize = 1000;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients")
}

/// The oracle process: one JSON request per line in, JSON lines out.
struct Oracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    fn start() -> Self {
        let node = std::env::var("CONFIANCE_TEST_NODE").unwrap_or_else(|_| "node".into());
        let modules = std::env::var("CONFIANCE_TEST_NODE_MODULES")
            .map(PathBuf::from)
            .unwrap_or_else(|_| clients_dir().join("node_modules"));
        let library = modules.join("@iabtechlabtcf/core/package.json");
        assert!(
            library.is_file(),
            "{} is missing: the TCF oracle needs @iabtechlabtcf/core; run scripts/test \
             (it runs `npm ci` in tests/clients)",
            library.display()
        );
        let mut child = Command::new(&node)
            .arg(clients_dir().join("tcf_oracle.mjs"))
            .env("CONFIANCE_TEST_NODE_MODULES", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {node} for the TCF oracle ({e}): run scripts/test, which needs Node.js >= 20")
            });
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdin, stdout }
    }

    fn send(&mut self, request: &Value) {
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn receive(&mut self) -> Value {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "the TCF oracle exited early (its stderr is above)");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first top-level field where two normalised models differ, for a readable failure.
fn first_difference(ours: &Value, theirs: &Value) -> String {
    let (Some(a), Some(b)) = (ours.as_object(), theirs.as_object()) else {
        return format!("rust: {ours}\noracle: {theirs}");
    };
    a.keys()
        .chain(b.keys())
        .find(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: rust {:?}, oracle {:?}", a.get(k), b.get(k)))
        .unwrap_or_default()
}

#[test]
fn strings_the_iab_library_encodes_decode_identically_in_rust() {
    let mut oracle = Oracle::start();
    oracle.send(&json!({"op": "random", "seed": 20_260_301, "count": MODELS}));
    let (mut disclosed, mut publisher_tc, mut custom, mut restricted, mut allowed) = (0, 0, 0, 0, 0);
    for i in 0..MODELS {
        let answer = oracle.receive();
        let tc = answer["tc"].as_str().unwrap_or_else(|| panic!("model {i}: {answer}"));
        let model = tcf::decode(tc).unwrap_or_else(|e| panic!("model {i}: {tc}: {e}"));
        let ours = serde_json::to_value(&model).unwrap();
        assert!(
            ours == answer["model"],
            "model {i}: {tc}\n{}",
            first_difference(&ours, &answer["model"])
        );
        disclosed += usize::from(model.disclosed_vendors.is_some());
        publisher_tc += usize::from(model.publisher_tc.is_some());
        custom += usize::from(model.publisher_tc.is_some_and(|p| p.custom.count() > 0));
        restricted += usize::from(!model.publisher_restrictions.is_empty());
        // A segment starting with Q-X has segment type 2: allowed vendors, skipped.
        allowed += usize::from(
            tc.split('.')
                .skip(1)
                .any(|s| s.starts_with(['Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X'])),
        );
    }
    // The sample must reach every part of the format, or the comparison proves little.
    for (what, count) in [
        ("disclosed vendors", disclosed),
        ("publisher TC", publisher_tc),
        ("custom purposes", custom),
        ("publisher restrictions", restricted),
        ("allowed vendors", allowed),
    ] {
        assert!(count >= 50, "only {count} of {MODELS} oracle strings had {what}");
    }
}

#[test]
fn strings_rust_encodes_decode_identically_in_the_iab_library() {
    let mut oracle = Oracle::start();
    let mut rng = StdRng::seed_from_u64(20_260_301);
    for i in 0..MODELS {
        let model = random_model(&mut rng);
        let tc = tcf::encode(&model).unwrap();
        oracle.send(&json!({"op": "decode", "tc": tc}));
        let answer = oracle.receive();
        let ours = serde_json::to_value(&model).unwrap();
        assert!(
            answer["model"] == ours,
            "model {i}: {tc}\n{answer}\n{}",
            first_difference(&ours, &answer["model"])
        );
    }
}

// ---- random models -----------------------------------------------------------------------------

/// Vendor sets in the shapes that reach both vector encodings: empty, dense, scattered, runs.
fn vendors(rng: &mut StdRng) -> VendorSet {
    let mut set = VendorSet::new();
    match rng.random_range(0..4) {
        0 => {}
        1 => {
            let (max, p) = (rng.random_range(1..=800), rng.random::<f64>());
            for id in 1..=max {
                if rng.random_bool(p) {
                    set.insert(id).unwrap();
                }
            }
        }
        2 => {
            for _ in 0..rng.random_range(1..=20) {
                set.insert(rng.random_range(1..=u16::MAX)).unwrap();
            }
        }
        _ => {
            for _ in 0..rng.random_range(1..=8) {
                let start = rng.random_range(1..=u16::MAX);
                let end = start.saturating_add(rng.random_range(0..500));
                set.insert_range(start, end).unwrap();
            }
        }
    }
    set
}

fn subset(rng: &mut StdRng, n: u8) -> Vec<u8> {
    let p = rng.random::<f64>();
    (1..=n).filter(|_| rng.random_bool(p)).collect()
}

fn letters(rng: &mut StdRng) -> Alpha2 {
    let pair: String = (0..2).map(|_| char::from(b'A' + rng.random_range(0..26))).collect();
    Alpha2::parse(&pair).unwrap()
}

fn random_model(rng: &mut StdRng) -> TcModel {
    let mut publisher_restrictions = PublisherRestrictions::new();
    for _ in 0..rng.random_range(0..=6) {
        let kind = [
            RestrictionType::NotAllowed,
            RestrictionType::RequireConsent,
            RestrictionType::RequireLegitimateInterest,
        ][rng.random_range(0..3)];
        let set = vendors(rng);
        publisher_restrictions
            .add(rng.random_range(1..=63), kind, &set)
            .unwrap();
    }
    let publisher_tc = rng.random_bool(0.5).then(|| {
        let count = rng.random_range(0..=63);
        PublisherTc {
            purpose_consents: PurposeSet::from_ids(subset(rng, 24)).unwrap(),
            purpose_legitimate_interests: PurposeSet::from_ids(subset(rng, 24)).unwrap(),
            custom: CustomPurposes::new(count, subset(rng, count), subset(rng, count)).unwrap(),
        }
    });
    TcModel {
        created: TcfTimestamp::from_deciseconds(rng.random_range(0..1 << 36)).unwrap(),
        last_updated: TcfTimestamp::from_deciseconds(rng.random_range(0..1 << 36)).unwrap(),
        // The library refuses CMP ids 0 and 1 when it decodes (its setter requires > 1).
        cmp_id: UInt::new(rng.random_range(2..=4095)).unwrap(),
        cmp_version: UInt::new(rng.random_range(0..=4095)).unwrap(),
        consent_screen: UInt::new(rng.random_range(0..=63)).unwrap(),
        consent_language: letters(rng),
        vendor_list_version: UInt::new(rng.random_range(0..=4095)).unwrap(),
        policy_version: UInt::new(rng.random_range(0..=63)).unwrap(),
        is_service_specific: rng.random_bool(0.5),
        use_non_standard_texts: rng.random_bool(0.5),
        special_feature_optins: SpecialFeatureSet::from_ids(subset(rng, 12)).unwrap(),
        purpose_consents: PurposeSet::from_ids(subset(rng, 24)).unwrap(),
        purpose_legitimate_interests: PurposeSet::from_ids(subset(rng, 24)).unwrap(),
        purpose_one_treatment: rng.random_bool(0.5),
        publisher_country_code: letters(rng),
        vendor_consents: vendors(rng),
        vendor_legitimate_interests: vendors(rng),
        publisher_restrictions,
        disclosed_vendors: rng.random_bool(0.6).then(|| vendors(rng)),
        publisher_tc,
    }
}
