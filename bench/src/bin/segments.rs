//! Segment counts on the audience index against DuckDB, measured in the same run on the same
//! synthetic profiles and the same five conditions (gender, age range, city, interest, consent);
//! the index's memory at that size; and the cost of one incremental profile update.
//!
//! ```text
//! cargo run --release -p confiance-bench --bin segments [-- --profiles N --runs N --updates N --contact --no-events]
//! ```
//!
//! DuckDB runs in `bench/duckdb_segment.py` under a Python venv: `CONFIANCE_BENCH_PYTHON` names
//! its interpreter; without it the benchmark makes (or reuses) `target/bench-venv` and installs
//! `bench/requirements.txt` there.

use anyhow::{Context, bail};
use confiance_core::catalog::Catalog;
use confiance_core::segment::{
    self,
    index::{AudienceIndex, EventFact, ProfileFacts, ago},
    query::{self, Span, Unit},
};
use jiff::{SignedDuration, Timestamp, civil::Date, tz::TimeZone};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The clock every relative date of the run is resolved against, on both engines.
const NOW: &str = "2026-06-15T12:00:00Z";
/// The segment: its conditions are spelled once here and given to both engines.
const GENDER: &str = "female";
const CITY: &str = "Paris";
const HOBBY: &str = "surf";
const AGE_FROM: u32 = 18;
const AGE_TO: u32 = 35;
/// The builtin catalog declares gender, birthday, city and hobbies for personalisation (not all
/// of them for marketing e-mails), so this is the purpose the product accepts the segment for.
const PURPOSE: &str = "personalisation";
const SEED: u64 = 0x5E6_2026;
const WARMUP: usize = 20;
const CHUNK: usize = 1_000;

/// ~50 French cities and their weights (the rest scaled so that Paris is 15% of those with a city).
const CITIES: &[(&str, f64)] = &[
    ("Marseille", 4.5),
    ("Lyon", 4.5),
    ("Toulouse", 3.5),
    ("Lille", 3.0),
    ("Nice", 2.5),
    ("Nantes", 2.8),
    ("Bordeaux", 2.8),
    ("Montpellier", 2.6),
    ("Strasbourg", 2.4),
    ("Rennes", 2.2),
    ("Grenoble", 1.6),
    ("Reims", 1.3),
    ("Toulon", 1.3),
    ("Saint-Étienne", 1.2),
    ("Dijon", 1.2),
    ("Angers", 1.2),
    ("Le Havre", 1.1),
    ("Clermont-Ferrand", 1.1),
    ("Aix-en-Provence", 1.1),
    ("Tours", 1.1),
    ("Nîmes", 1.0),
    ("Villeurbanne", 1.0),
    ("Le Mans", 1.0),
    ("Brest", 1.0),
    ("Rouen", 1.0),
    ("Amiens", 0.9),
    ("Limoges", 0.9),
    ("Annecy", 0.9),
    ("Perpignan", 0.9),
    ("Boulogne-Billancourt", 0.9),
    ("Metz", 0.9),
    ("Besançon", 0.9),
    ("Orléans", 0.9),
    ("Caen", 0.9),
    ("Nancy", 0.9),
    ("Saint-Denis", 0.8),
    ("Mulhouse", 0.8),
    ("Argenteuil", 0.7),
    ("Montreuil", 0.7),
    ("Poitiers", 0.7),
    ("La Rochelle", 0.7),
    ("Tourcoing", 0.6),
    ("Roubaix", 0.6),
    ("Nanterre", 0.6),
    ("Vitry-sur-Seine", 0.6),
    ("Avignon", 0.6),
    ("Créteil", 0.6),
    ("Pau", 0.6),
    ("Bayonne", 0.5),
    ("Biarritz", 0.4),
];

const INTERESTS: &[(&str, f64)] = &[
    ("music", 14.0),
    ("concerts", 10.0),
    ("vinyl", 9.0),
    ("cinema", 9.0),
    ("reading", 8.0),
    ("travel", 8.0),
    ("cooking", 6.0),
    ("photography", 4.0),
    ("running", 4.0),
    ("cycling", 3.5),
    ("hiking", 3.5),
    ("yoga", 3.0),
    ("football", 3.0),
    ("gaming", 3.0),
    ("surf", 2.5),
    ("tennis", 2.0),
    ("skiing", 2.0),
    ("gardening", 2.0),
    ("painting", 1.5),
    ("dance", 1.5),
];

const CATEGORIES: &[&str] = &["vinyl", "cd", "cassette", "turntable", "merch", "book"];

/// The purposes a profile may have a basis for, and how many have one.
const PURPOSES: &[(&str, f64)] = &[
    ("service", 1.0),
    ("marketing_postal", 0.9),
    ("analytics", 0.7),
    ("personalisation", 0.6),
    ("marketing_email", 0.55),
    ("marketing_sms", 0.25),
];

/// Draws from weighted choices.
struct Weighted<T> {
    items: Vec<T>,
    cumulative: Vec<f64>,
}

impl<T: Copy> Weighted<T> {
    fn new(pairs: impl IntoIterator<Item = (T, f64)>) -> Weighted<T> {
        let mut total = 0.0;
        let (items, cumulative) = pairs
            .into_iter()
            .map(|(item, w)| {
                total += w;
                (item, total)
            })
            .unzip();
        Weighted { items, cumulative }
    }

    fn draw(&self, rng: &mut StdRng) -> T {
        let u = rng.random::<f64>() * self.cumulative.last().copied().unwrap_or(0.0);
        let i = self.cumulative.partition_point(|c| *c <= u);
        self.items[i.min(self.items.len() - 1)]
    }
}

/// One synthetic person, in plain fields, from which both engines' rows are made.
struct Person {
    gender: Option<&'static str>,
    birthday: Option<Date>,
    city: Option<&'static str>,
    hobbies: Vec<&'static str>,
    orders: u32,
    total_spent: f64,
    lawful: Vec<&'static str>,
    events: Vec<EventFact>,
    contact: Option<[String; 5]>,
}

struct Generator {
    rng: StdRng,
    now: Timestamp,
    today: Date,
    cities: Weighted<&'static str>,
    interests: Weighted<&'static str>,
    hobby_counts: Weighted<usize>,
    event_counts: Weighted<usize>,
    contact: bool,
    events: bool,
}

impl Generator {
    fn new(seed: u64, now: Timestamp, args: &Args) -> Generator {
        let others: f64 = CITIES.iter().map(|c| c.1).sum();
        Generator {
            rng: StdRng::seed_from_u64(seed),
            now,
            today: now.to_zoned(TimeZone::UTC).date(),
            cities: Weighted::new(
                std::iter::once(("Paris", 15.0)).chain(CITIES.iter().map(|&(c, w)| (c, w * 85.0 / others))),
            ),
            interests: Weighted::new(INTERESTS.iter().copied()),
            hobby_counts: Weighted::new([(0, 0.30), (1, 0.35), (2, 0.22), (3, 0.13)]),
            event_counts: Weighted::new([(0, 0.15), (1, 0.25), (2, 0.30), (3, 0.15), (4, 0.15)]),
            contact: args.contact,
            events: !args.no_events,
        }
    }

    fn person(&mut self, id: i64) -> Person {
        let rng = &mut self.rng;
        let gender = match rng.random::<f64>() {
            u if u < 0.08 => None,
            u if u < 0.08 + 0.92 * 0.52 => Some("female"),
            u if u < 0.08 + 0.92 * 0.98 => Some("male"),
            _ => Some("other"),
        };
        // Most customers are 18 to 65; some are younger or older, from 15 to 80.
        let birthday = rng.random_bool(0.8).then(|| {
            let (low, high) = if rng.random_bool(0.7) { (18, 65) } else { (15, 80) };
            let days = rng.random_range(low * 365..high * 365 + 365);
            self.today.checked_sub(jiff::Span::new().days(days)).expect("a date")
        });
        let city = rng.random_bool(0.95).then(|| self.cities.draw(rng));
        let how_many = self.hobby_counts.draw(rng);
        let mut hobbies: Vec<&'static str> = Vec::with_capacity(how_many);
        while hobbies.len() < how_many {
            let h = self.interests.draw(rng);
            if !hobbies.contains(&h) {
                hobbies.push(h);
            }
        }
        let orders = if rng.random_bool(0.4) {
            0
        } else {
            rng.random_range(1..=20u32).min(rng.random_range(1..=20u32))
        };
        let total_spent = (0..orders)
            .map(|_| rng.random_range(1_500..8_000u32) as f64 / 100.0)
            .sum::<f64>();
        let total_spent = (total_spent * 100.0).round() / 100.0;
        let lawful = PURPOSES
            .iter()
            .filter(|(_, share)| rng.random_bool(*share))
            .map(|(p, _)| *p)
            .collect();
        let how_many = self.event_counts.draw(rng);
        let mut events: Vec<EventFact> = (0..how_many)
            .map(|k| {
                let at = self
                    .now
                    .checked_sub(SignedDuration::from_secs(rng.random_range(0..2 * 365 * 86_400)))
                    .expect("an instant");
                let mut properties = Map::new();
                let (name, source, touchpoint) = if rng.random_bool(0.6) {
                    properties.insert(
                        "product_id".into(),
                        json!(format!("P{:05}", rng.random_range(0..40_000))),
                    );
                    properties.insert(
                        "category".into(),
                        json!(CATEGORIES[rng.random_range(0..CATEGORIES.len())]),
                    );
                    properties.insert("price".into(), json!(rng.random_range(500..9_000u32) as f64 / 100.0));
                    ("Product Viewed", "web", "site_visit")
                } else {
                    properties.insert("order_id".into(), json!(format!("O{id}-{k}")));
                    properties.insert("total".into(), json!(rng.random_range(1_500..8_000u32) as f64 / 100.0));
                    properties.insert("currency".into(), json!("EUR"));
                    if rng.random_bool(0.7) {
                        ("Order Completed", "web", "checkout")
                    } else {
                        ("Order Completed", "stores", "store_till")
                    }
                };
                EventFact {
                    name: name.into(),
                    at,
                    source: source.into(),
                    touchpoint: Some(touchpoint.into()),
                    properties,
                }
            })
            .collect();
        events.sort_by_key(|e| e.at);
        if !self.events {
            // Drawn all the same, so that every other field is the same as with events.
            events.clear();
        }
        let contact = self.contact.then(|| {
            [
                format!("person{id}@example.org"),
                format!("+3361{:07}", id % 10_000_000),
                format!("Prénom{}", rng.random_range(0..3_000)),
                format!("Nom{}", rng.random_range(0..60_000)),
                format!("{:05}", rng.random_range(1_000..96_000)),
            ]
        });
        Person {
            gender,
            birthday,
            city,
            hobbies,
            orders,
            total_spent,
            lawful,
            events,
            contact,
        }
    }
}

impl Person {
    fn facts(&self) -> ProfileFacts {
        let mut traits = BTreeMap::new();
        if let Some(g) = self.gender {
            traits.insert("gender".to_owned(), json!(g));
        }
        if let Some(b) = self.birthday {
            traits.insert("birthday".to_owned(), json!(b.to_string()));
        }
        if let Some(c) = self.city {
            traits.insert("city".to_owned(), json!(c));
        }
        if !self.hobbies.is_empty() {
            traits.insert("hobbies".to_owned(), json!(self.hobbies));
        }
        traits.insert("orders".to_owned(), json!(self.orders));
        traits.insert("total_spent".to_owned(), json!(self.total_spent));
        if let Some([email, phone, first, last, postal]) = &self.contact {
            for (name, value) in [
                ("email", email),
                ("phone", phone),
                ("first_name", first),
                ("last_name", last),
                ("postal_code", postal),
            ] {
                traits.insert(name.to_owned(), json!(value));
            }
        }
        ProfileFacts {
            traits,
            events: self.events.clone(),
            lawful: self.lawful.iter().map(|p| (*p).to_owned()).collect::<BTreeSet<_>>(),
        }
    }

    /// Whether the person is in the segment, decided directly: a third opinion on the count.
    fn matches(&self, from: Date, to: Date) -> bool {
        self.gender == Some(GENDER)
            && self.birthday.is_some_and(|b| from <= b && b <= to)
            && self.city == Some(CITY)
            && self.hobbies.contains(&HOBBY)
            && self.lawful.contains(&PURPOSE)
    }

    fn csv_row(&self, id: i64, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{id},{},{},{},{},{}",
            self.gender.unwrap_or(""),
            self.birthday.map(|b| b.to_string()).unwrap_or_default(),
            self.city.unwrap_or(""),
            self.hobbies.join(";"),
            self.lawful.contains(&PURPOSE)
        )
    }
}

struct Args {
    profiles: usize,
    runs: usize,
    updates: usize,
    contact: bool,
    no_events: bool,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            profiles: 1_000_000,
            runs: 200,
            updates: 10_000,
            contact: false,
            no_events: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut number = || -> anyhow::Result<usize> {
                it.next()
                    .and_then(|v| v.replace('_', "").parse().ok())
                    .with_context(|| format!("{a} wants a number"))
            };
            match a.as_str() {
                "--profiles" => args.profiles = number()?,
                "--runs" => args.runs = number()?,
                "--updates" => args.updates = number()?,
                "--contact" => args.contact = true,
                "--no-events" => args.no_events = true,
                _ => bail!("unknown argument {a}: --profiles N, --runs N, --updates N, --contact, --no-events"),
            }
        }
        if args.profiles == 0 || args.runs == 0 {
            bail!("--profiles and --runs must be at least 1");
        }
        args.updates = args.updates.min(args.profiles);
        Ok(args)
    }
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The value at quantile `q` of sorted values, by nearest rank (the Python side does the same).
fn rank(sorted: &[Duration], q: f64) -> Duration {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The Python that runs DuckDB: `CONFIANCE_BENCH_PYTHON`, or `target/bench-venv`, made and
/// brought up to `bench/requirements.txt` when needed.
fn python(root: &Path) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("CONFIANCE_BENCH_PYTHON") {
        return Ok(p.into());
    }
    let venv = root.join("target").join("bench-venv");
    let py = venv.join("bin").join("python");
    let requirements = root.join("bench").join("requirements.txt");
    let want = std::fs::read_to_string(&requirements).context("bench/requirements.txt")?;
    let stamp = venv.join(".confiance-bench-requirements");
    let works = |py: &Path| Command::new(py).args(["-c", ""]).status().is_ok_and(|s| s.success());
    if works(&py) && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(py);
    }
    if !works(&py) {
        eprintln!("creating {} (python3 -m venv)", venv.display());
        let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status()?;
        if !ok.success() {
            bail!("python3 -m venv failed: on Debian, apt-get install python3-venv");
        }
    }
    eprintln!("pip install -r bench/requirements.txt");
    let ok = Command::new(&py)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"])
        .arg(&requirements)
        .status()?;
    if !ok.success() {
        bail!("pip install -r {} failed", requirements.display());
    }
    std::fs::write(&stamp, want)?;
    Ok(py)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace")?
        .to_path_buf();
    let python = python(&root)?;
    let now: Timestamp = NOW.parse()?;
    let text = format!(
        "gender = \"{GENDER}\" and birthday between {AGE_TO} years ago and {AGE_FROM} years ago \
         and city = \"{CITY}\" and hobbies contains \"{HOBBY}\""
    );
    let q = query::parse(&text)?;
    let catalog = Catalog::builtin();
    segment::check(&catalog, PURPOSE, &q, &|_| None).context("the catalog refuses the segment")?;
    // The inclusive bounds the index resolves `N years ago` to, as dates for SQL.
    let years_ago = |n| ago(now, Span { n, unit: Unit::Years }).to_zoned(TimeZone::UTC).date();
    let (from, to) = (years_ago(AGE_TO), years_ago(AGE_FROM));
    let load_start = load_average();

    // Build: profiles are made a chunk at a time, written to the CSV and counted directly, then
    // upserted; only the upserts are timed, and only the index stays in memory.
    let dir = tempfile::tempdir()?;
    let csv_path = dir.path().join("profiles.csv");
    let mut csv = BufWriter::new(std::fs::File::create(&csv_path)?);
    writeln!(csv, "id,gender,birthday,city,hobbies,consent")?;
    let mut generator = Generator::new(SEED, now, &args);
    let mut chunk: Vec<(i64, ProfileFacts)> = Vec::with_capacity(CHUNK);
    let mut expected = 0u64;
    let mut events = 0usize;
    let rss_before = status_kb("VmRSS:");
    let mut index = AudienceIndex::new(segment::schema(&catalog));
    let mut build = Duration::ZERO;
    for start in (0..args.profiles).step_by(CHUNK) {
        chunk.clear();
        for i in start..(start + CHUNK).min(args.profiles) {
            let id = i as i64 + 1;
            let person = generator.person(id);
            person.csv_row(id, &mut csv)?;
            expected += u64::from(person.matches(from, to));
            events += person.events.len();
            chunk.push((id, person.facts()));
        }
        let t = Instant::now();
        for (id, facts) in &chunk {
            index.upsert(*id, facts);
        }
        build += t.elapsed();
    }
    drop(chunk);
    csv.flush()?;
    drop(csv);
    let rss_after = status_kb("VmRSS:");
    let heap = index.heap_bytes();

    // Count on the index.
    let none = |_: &str| None;
    let count = index.count(&q, PURPOSE, now, &none)?;
    for _ in 0..WARMUP {
        black_box(index.count(black_box(&q), PURPOSE, now, &none)?);
    }
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        let c = index.count(black_box(&q), PURPOSE, now, &none)?;
        times.push(t.elapsed());
        if c != count {
            bail!("the index counted {c}, then {count}");
        }
    }
    times.sort();
    let t = Instant::now();
    let parsed_count = index.count(&query::parse(black_box(&text))?, PURPOSE, now, &none)?;
    let parse_and_count = t.elapsed();
    if parsed_count != count {
        bail!("parse + count gave {parsed_count}, count {count}");
    }

    // The same on DuckDB, in its own process.
    let script = root.join("bench").join("duckdb_segment.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg("--csv")
        .arg(&csv_path)
        .args(["--runs", &args.runs.to_string(), "--warmup", &WARMUP.to_string()])
        .args(["--threads", "2", "--gender", GENDER, "--city", CITY, "--hobby", HOBBY])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let duck: Value = serde_json::from_slice(&out.stdout).context("the DuckDB script's JSON")?;
    let variants = duck["variants"].as_array().context("variants")?;
    for v in variants {
        let c = v["count"].as_u64().context("count")?;
        if c != count || count != expected {
            bail!(
                "COUNTS DIFFER: Confiance {count}, DuckDB ({}) {c}, generator {expected}",
                v["name"].as_str().unwrap_or("?")
            );
        }
    }
    let best = variants
        .iter()
        .min_by(|a, b| {
            a["median_ms"]
                .as_f64()
                .unwrap_or(f64::MAX)
                .total_cmp(&b["median_ms"].as_f64().unwrap_or(f64::MAX))
        })
        .context("no DuckDB variant")?;
    let duck_median = best["median_ms"].as_f64().context("median")?;
    let ours = ms(rank(&times, 0.5));
    let ratio = ours / duck_median;
    let load_mid = load_average();

    // Incremental updates: new facts (city, hobbies, consent, events…) for existing profiles,
    // drawn beforehand so that only the upsert is timed; then removals of distinct profiles.
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    let mut other = Generator::new(SEED + 2, now, &args);
    let updates: Vec<(i64, ProfileFacts)> = (0..args.updates)
        .map(|_| {
            let id = rng.random_range(1..=args.profiles as i64);
            (id, other.person(id).facts())
        })
        .collect();
    let mut upserts = Vec::with_capacity(updates.len());
    for (id, facts) in &updates {
        let t = Instant::now();
        index.upsert(*id, facts);
        upserts.push(t.elapsed());
    }
    upserts.sort();
    let mut removes = Vec::with_capacity(args.updates);
    for i in rand::seq::index::sample(&mut rng, args.profiles, args.updates) {
        let id = i as i64 + 1;
        let t = Instant::now();
        index.remove(id);
        removes.push(t.elapsed());
    }
    removes.sort();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "segments: {} profiles ({} events{}), purpose {PURPOSE}, now {NOW}, {} runs after {WARMUP} warm-up",
        args.profiles,
        events,
        if args.contact {
            "; email, phone, first and last name, postal code"
        } else {
            ""
        },
        args.runs
    );
    println!("machine: {cores} cores, load average {load_start} at the start, {load_mid} after the counts");
    println!("query: {text}");
    println!(
        "       (birthday from {from} to {to}; SQL: {})",
        best["sql"].as_str().unwrap_or("?")
    );
    println!("members: {count} (Confiance) = {count} (DuckDB) = {expected} (generator)");
    println!();
    println!("{:<54} {:>10} {:>10}", "count", "median ms", "p95 ms");
    for v in variants {
        println!(
            "{:<54} {:>10.3} {:>10.3}",
            format!(
                "DuckDB {}, {} threads, {}",
                duck["version"].as_str().unwrap_or("?"),
                duck["threads"],
                v["name"].as_str().unwrap_or("?")
            ),
            v["median_ms"].as_f64().unwrap_or(f64::NAN),
            v["p95_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!(
        "{:<54} {:>10.3} {:>10.3}",
        "  (DuckDB round trip of SELECT 1 from Python)",
        duck["roundtrip_median_ms"].as_f64().unwrap_or(f64::NAN),
        duck["roundtrip_p95_ms"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "{:<54} {:>10.3} {:>10.3}   {:.4}× DuckDB's time (goal ≤ 0.1: {})",
        "Confiance AudienceIndex::count, 1 thread",
        ours,
        ms(rank(&times, 0.95)),
        ratio,
        if ratio <= 0.1 { "met" } else { "NOT met" }
    );
    println!("{:<54} {:>10.3}", "  parse the text + count, once", ms(parse_and_count));
    println!();
    let delta = rss_after.saturating_sub(rss_before);
    println!(
        "index: built in {:.2} s ({:.0} upserts/s); RSS {:.0} MiB before, {:.0} MiB after: +{:.0} MiB, {:.0} bytes per \
         profile (goal ≤ 1024 MiB: {}); heap_bytes() {:.0} MiB",
        build.as_secs_f64(),
        args.profiles as f64 / build.as_secs_f64(),
        mib(rss_before),
        mib(rss_after),
        mib(delta),
        delta as f64 * 1024.0 / args.profiles as f64,
        if delta <= 1024 * 1024 { "met" } else { "NOT met" },
        heap as f64 / 1048576.0
    );
    println!(
        "DuckDB: table loaded in {:.2} s (not timed); its process RSS {:.0} MiB after loading",
        duck["load_seconds"].as_f64().unwrap_or(f64::NAN),
        duck["rss_mib"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "update: upsert over an existing profile (new traits, consents, events): median {:.2} µs, p95 {:.2} µs, \
         mean {:.2} µs ({} updates)",
        us(rank(&upserts, 0.5)),
        us(rank(&upserts, 0.95)),
        us(mean(&upserts)),
        upserts.len()
    );
    println!(
        "        remove: median {:.2} µs, p95 {:.2} µs, mean {:.2} µs ({} profiles)",
        us(rank(&removes, 0.5)),
        us(rank(&removes, 0.95)),
        us(mean(&removes)),
        removes.len()
    );
    println!("load average at the end: {}", load_average());
    Ok(())
}
