//! The audience index against a plain scan: on random profiles and random queries, the members
//! [`AudienceIndex`] finds (bit-sliced numbers, per-value bitmaps, candidate sets passed down the
//! tree, slots reused after updates) are exactly the profiles a naive evaluator finds by reading
//! each profile's facts one by one.
//!
//! The reference evaluator below is written from the language's documented semantics, not from
//! the index's code: texts compare trimmed and without regard to case, `!=` needs a value,
//! numbers compare to the hundredth, dates by UTC day and instants by second, `N units ago` is
//! calendar arithmetic in UTC, `did` counts the matching events in the window, and every answer
//! is limited to the profiles with a legal basis for the purpose. The index is built up by random
//! sequences of inserts, re-inserts with changed facts and removals, and checked along the way,
//! so a bitmap bit left behind by an update shows up as a wrong member.
//!
//! Purpose filtering is checked on its own as well: members are always lawful for the purpose,
//! and a query and its negation split the lawful profiles exactly (no unlawful profile leaks in
//! through `not` or `did ... at most 0 times`).

use confiance_core::segment::index::{AudienceIndex, EventFact, Kind, ProfileFacts, Schema};
use confiance_core::segment::query::{self, Cond, Count, Did, Literal, Op, Operand, Query, Span, Test, Unit};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------------------------
// The fixed world: a clock, a schema, purposes and saved segments.

/// A leap day, late in the (UTC) day: `1 year ago` clamps to the 28th and day boundaries matter.
fn now() -> Timestamp {
    "2024-02-29T18:30:00Z".parse().unwrap()
}

fn today() -> Date {
    now().to_zoned(TimeZone::UTC).date()
}

const DAY: i64 = 86_400;

fn schema() -> Schema {
    Schema::new(
        [
            ("gender", Kind::Text),
            ("city", Kind::Text),
            ("hobbies", Kind::List),
            ("vip", Kind::Bool),
            ("orders", Kind::Number),
            ("total_spent", Kind::Number),
            ("birthday", Kind::Date),
            ("last_order", Kind::Instant),
        ]
        .into_iter()
        .map(|(n, k)| (n.to_owned(), k))
        .collect(),
    )
}

/// Purposes profiles may have a basis for.
const PURPOSES: &[&str] = &["marketing", "analytics"];
/// Purposes queries are run for: `research` is nobody's.
const ASKED: &[&str] = &["marketing", "analytics", "research"];

/// The saved segments queries may name.
fn segments(name: &str) -> Option<Query> {
    let text = match name {
        "VIP" => "vip = true",
        "Parisians" => "city = \"Paris\"",
        "Loyal" => "segment \"VIP\" and orders >= 3",
        "Loop" => "segment \"Loop\" or vip = true",
        _ => return None,
    };
    Some(query::parse(text).unwrap())
}

const fn span(n: u32, unit: Unit) -> Span {
    Span { n, unit }
}

/// Windows used by `within`, and around whose edges event and order times are generated.
const WINDOWS: &[Span] = &[
    span(1, Unit::Hours),
    span(36, Unit::Hours),
    span(1, Unit::Days),
    span(7, Unit::Days),
    span(30, Unit::Days),
    span(2, Unit::Weeks),
    span(1, Unit::Months),
    span(3, Unit::Months),
    span(1, Unit::Years),
    span(18, Unit::Years),
];

/// `now` minus a span in calendar terms, in UTC (the reference's own arithmetic).
fn ago(s: Span) -> Timestamp {
    let n = i64::from(s.n);
    let z = now().to_zoned(TimeZone::UTC);
    let back = match s.unit {
        Unit::Hours => n.hours(),
        Unit::Days => n.days(),
        Unit::Weeks => n.weeks(),
        Unit::Months => n.months(),
        Unit::Years => n.years(),
    };
    z.checked_sub(back).unwrap().timestamp()
}

// ---------------------------------------------------------------------------------------------
// The reference: a full scan over each profile's facts.

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

fn lit_text(l: &Literal) -> String {
    match l {
        Literal::Text(s) => norm(s),
        other => panic!("not generated: text literal {other:?}"),
    }
}

fn lit_bool(l: &Literal) -> bool {
    match l {
        Literal::Bool(b) => *b,
        other => panic!("not generated: yes/no literal {other:?}"),
    }
}

fn lit_number(l: &Literal) -> f64 {
    match l {
        Literal::Number(n) => *n,
        other => panic!("not generated: number literal {other:?}"),
    }
}

fn hundredths(x: f64) -> i64 {
    (x * 100.0).round() as i64
}

fn parse_date(s: &str) -> Option<Date> {
    s.get(..10)?.parse().ok()
}

/// An instant as Unix seconds: RFC 3339, or a bare date meaning its UTC midnight.
fn parse_seconds(s: &str) -> Option<i64> {
    match s.parse::<Timestamp>() {
        Ok(t) => Some(t.as_second()),
        Err(_) => Some(parse_date(s)?.to_zoned(TimeZone::UTC).ok()?.timestamp().as_second()),
    }
}

fn compare<T: PartialOrd>(op: Op, v: T, c: T) -> bool {
    match op {
        Op::Eq => v == c,
        Op::Ne => v != c,
        Op::Lt => v < c,
        Op::Le => v <= c,
        Op::Gt => v > c,
        Op::Ge => v >= c,
    }
}

/// A test on an ordered value (number, date, instant); `operand` turns the right-hand side into
/// the same unit. A missing value meets no test, not even `!=`.
fn ordered<T: PartialOrd + Copy>(test: &Test, value: Option<T>, operand: &dyn Fn(&Operand) -> T) -> bool {
    if let Test::Exists = test {
        return value.is_some();
    }
    let Some(v) = value else { return false };
    match test {
        Test::Cmp { op, value } => compare(*op, v, operand(value)),
        Test::Between { from, to } => {
            let (a, b) = (operand(from), operand(to));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            lo <= v && v <= hi
        }
        Test::In { values } => values.iter().any(|l| v == operand(&Operand::Value(l.clone()))),
        Test::Within { span } => operand(&Operand::Ago(*span)) <= v && v <= operand(&Operand::Now),
        Test::Exists | Test::Contains { .. } => panic!("not generated: {test:?} on an ordered value"),
    }
}

fn text_test(test: &Test, value: Option<String>) -> bool {
    let Some(v) = value else { return false };
    match test {
        Test::Cmp {
            op: Op::Eq,
            value: Operand::Value(l),
        } => v == lit_text(l),
        Test::Cmp {
            op: Op::Ne,
            value: Operand::Value(l),
        } => v != lit_text(l),
        Test::In { values } => values.iter().any(|l| v == lit_text(l)),
        Test::Contains { value } => v.contains(&lit_text(value)),
        Test::Exists => true,
        _ => panic!("not generated: {test:?} on a text"),
    }
}

fn list_test(test: &Test, items: &[String]) -> bool {
    let has = |l: &Literal| items.contains(&lit_text(l));
    match test {
        Test::Cmp {
            op: Op::Eq,
            value: Operand::Value(l),
        }
        | Test::Contains { value: l } => has(l),
        Test::Cmp {
            op: Op::Ne,
            value: Operand::Value(l),
        } => !items.is_empty() && !has(l),
        Test::In { values } => values.iter().any(has),
        Test::Exists => !items.is_empty(),
        _ => panic!("not generated: {test:?} on a list"),
    }
}

fn bool_test(test: &Test, value: Option<bool>) -> bool {
    let Some(v) = value else { return false };
    match test {
        Test::Cmp {
            op: Op::Eq,
            value: Operand::Value(l),
        } => v == lit_bool(l),
        Test::Cmp {
            op: Op::Ne,
            value: Operand::Value(l),
        } => v != lit_bool(l),
        Test::In { values } => values.iter().any(|l| v == lit_bool(l)),
        Test::Exists => true,
        _ => panic!("not generated: {test:?} on a yes/no"),
    }
}

fn date_operand(o: &Operand) -> Date {
    match o {
        Operand::Now => today(),
        Operand::Ago(s) => ago(*s).to_zoned(TimeZone::UTC).date(),
        Operand::Value(Literal::Text(s)) => parse_date(s).expect("generated dates parse"),
        other => panic!("not generated: date operand {other:?}"),
    }
}

fn seconds_operand(o: &Operand) -> i64 {
    match o {
        Operand::Now => now().as_second(),
        Operand::Ago(s) => ago(*s).as_second(),
        Operand::Value(Literal::Text(s)) => parse_seconds(s).expect("generated instants parse"),
        other => panic!("not generated: instant operand {other:?}"),
    }
}

fn hundredths_operand(o: &Operand) -> i64 {
    match o {
        Operand::Value(l) => hundredths(lit_number(l)),
        other => panic!("not generated: number operand {other:?}"),
    }
}

fn exact_operand(o: &Operand) -> f64 {
    match o {
        Operand::Value(l) => lit_number(l),
        other => panic!("not generated: number operand {other:?}"),
    }
}

/// Whether a trait condition holds of a profile.
fn cond_holds(c: &Cond, facts: &ProfileFacts) -> bool {
    let value = facts.traits.get(&c.field).filter(|v| !v.is_null());
    let string = value.and_then(Value::as_str);
    match c.field.as_str() {
        "gender" | "city" => text_test(&c.test, string.map(norm)),
        "hobbies" => {
            let items: Vec<String> = match value {
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(norm).collect(),
                _ => Vec::new(),
            };
            list_test(&c.test, &items)
        }
        "vip" => bool_test(&c.test, value.and_then(Value::as_bool)),
        "orders" | "total_spent" => ordered(
            &c.test,
            value.and_then(Value::as_f64).map(hundredths),
            &hundredths_operand,
        ),
        "birthday" => ordered(&c.test, string.and_then(parse_date), &date_operand),
        "last_order" => ordered(&c.test, string.and_then(parse_seconds), &seconds_operand),
        other => panic!("not generated: field {other}"),
    }
}

/// Whether an event's properties meet a `where` condition: `category` is a text, `amount` a
/// number compared exactly, `shipped` an instant.
fn property_holds(c: &Cond, props: &Map<String, Value>) -> bool {
    let value = props.get(&c.field).filter(|v| !v.is_null());
    if let Test::Exists = c.test {
        return value.is_some();
    }
    match c.field.as_str() {
        "category" => text_test(&c.test, value.and_then(Value::as_str).map(norm)),
        "amount" => ordered(&c.test, value.and_then(Value::as_f64), &exact_operand),
        "shipped" => ordered(
            &c.test,
            value.and_then(Value::as_str).and_then(parse_seconds),
            &seconds_operand,
        ),
        other => panic!("not generated: property {other}"),
    }
}

fn did_holds(d: &Did, facts: &ProfileFacts) -> bool {
    let in_window = |at: Timestamp| match d.within {
        None => true,
        Some(s) => ago(s).as_second() <= at.as_second() && at.as_second() <= now().as_second(),
    };
    let n = facts
        .events
        .iter()
        .filter(|e| e.name == d.event && in_window(e.at))
        .filter(|e| d.filter.iter().all(|c| property_holds(c, &e.properties)))
        .count() as u32;
    match d.count {
        None => n >= 1,
        Some(Count::AtLeast(k)) => n >= k,
        Some(Count::AtMost(k)) => n <= k,
        Some(Count::Exactly(k)) => n == k,
    }
}

fn holds(q: &Query, facts: &ProfileFacts) -> bool {
    match q {
        Query::And(parts) => parts.iter().all(|p| holds(p, facts)),
        Query::Or(parts) => parts.iter().any(|p| holds(p, facts)),
        Query::Not(inner) => !holds(inner, facts),
        Query::Segment(name) => holds(&segments(name).expect("generated segments exist"), facts),
        Query::Cond(c) => cond_holds(c, facts),
        Query::Did(d) => did_holds(d, facts),
    }
}

fn lawful_ids(model: &BTreeMap<i64, ProfileFacts>, purpose: &str) -> BTreeSet<i64> {
    model
        .iter()
        .filter(|(_, f)| f.lawful.contains(purpose))
        .map(|(id, _)| *id)
        .collect()
}

/// What a full scan says the members are.
fn expected(model: &BTreeMap<i64, ProfileFacts>, q: &Query, purpose: &str) -> BTreeSet<i64> {
    model
        .iter()
        .filter(|(_, f)| f.lawful.contains(purpose) && holds(q, f))
        .map(|(id, _)| *id)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The checks.

fn members(index: &AudienceIndex, q: &Query, purpose: &str) -> Result<BTreeSet<i64>, TestCaseError> {
    let bits = index
        .members(q, purpose, now(), &segments)
        .map_err(|e| TestCaseError::fail(format!("{e} for {}", show(q))))?;
    let ids: BTreeSet<i64> = bits.iter().map(|s| index.profile(s)).collect();
    prop_assert_eq!(ids.len() as u64, bits.len(), "two slots answer for one profile");
    Ok(ids)
}

fn show(q: &Query) -> String {
    serde_json::to_string(q).unwrap()
}

/// The index answers `q` like the scan does, for every purpose, and purposes bound the answer.
fn check(index: &AudienceIndex, model: &BTreeMap<i64, ProfileFacts>, q: &Query) -> Result<(), TestCaseError> {
    prop_assert_eq!(index.len(), model.len() as u64);
    for purpose in ASKED {
        let got = members(index, q, purpose)?;
        let want = expected(model, q, purpose);
        prop_assert_eq!(&got, &want, "members of {} for {}", show(q), purpose);
        let count = index.count(q, purpose, now(), &segments).unwrap();
        prop_assert_eq!(count, want.len() as u64, "count of {} for {}", show(q), purpose);

        let lawful = lawful_ids(model, purpose);
        prop_assert!(
            got.is_subset(&lawful),
            "unlawful members of {} for {}",
            show(q),
            purpose
        );
        let negated = members(index, &Query::Not(Box::new(q.clone())), purpose)?;
        prop_assert!(got.is_disjoint(&negated), "{} and its negation overlap", show(q));
        let both: BTreeSet<i64> = got.union(&negated).copied().collect();
        prop_assert_eq!(
            &both,
            &lawful,
            "{} or not: not the lawful profiles for {}",
            show(q),
            purpose
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Generators: small value domains, so that conditions hit; times near `now` and on the edges of
// the windows queries use.

const GENDERS: &[&str] = &["female", "Female ", "male", "MALE", "nonbinary"];
const CITIES: &[&str] = &["Paris", " paris", "PARIS", "Lyon", "Boulogne-Billancourt", "Marseille"];
const HOBBIES: &[&str] = &["surf", "Surf ", "vinyl", "chess", "running"];
const EVENTS: &[&str] = &["Order Completed", "Product Viewed", "Refund"];
const CATEGORIES: &[&str] = &["vinyl", "Vinyl ", "books", "board games"];

fn seconds_before_now(s: i64) -> Timestamp {
    Timestamp::from_second(now().as_second() - s).unwrap()
}

/// An instant near now: anywhere from two days ahead to five months back, on a window's edge
/// (give or take a second), or with a fraction of a second.
fn instant() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        3 => (-2 * DAY..150 * DAY).prop_map(seconds_before_now),
        2 => (select(WINDOWS), -1i64..=1).prop_map(|(w, d)| Timestamp::from_second(ago(w).as_second() + d).unwrap()),
        1 => (0..150 * DAY, 1..1_000_000_000i32)
            .prop_map(|(s, ns)| Timestamp::new(now().as_second() - s, ns).unwrap()),
    ]
}

/// A birthday: any day in the last ninety years (before 1970 too), or near an anniversary.
fn birthday() -> impl Strategy<Value = Date> {
    prop_oneof![
        (0..33_000i64).prop_map(|d| today().checked_sub(d.days()).unwrap()),
        (0..45i64, -2..=2i64).prop_map(|(y, d)| today().checked_sub(y.years()).unwrap().checked_add(d.days()).unwrap()),
    ]
}

fn last_order() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => instant().prop_map(|t| json!(t.to_string())),
        1 => instant().prop_map(|t| json!(t.to_zoned(TimeZone::UTC).date().to_string())),
        1 => Just(json!("not a date")),
    ]
}

fn total_spent() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-4..40i64).prop_map(|k| json!(k as f64 * 2.5)),
        select(&[10.004, 10.005, 9.995, 0.0, -0.001, 12.5][..]).prop_map(|x| json!(x)),
        (0..5i64).prop_map(|n| json!(n * 10)),
    ]
}

/// A trait that may be missing or null.
fn maybe(v: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![1 => Just(None), 1 => Just(Some(Value::Null)), 6 => v.prop_map(Some)]
}

fn event() -> impl Strategy<Value = EventFact> {
    let amount = prop_oneof![
        Just(json!(5)),
        Just(json!(10)),
        Just(json!(10.0)),
        Just(json!(12.5)),
        Just(json!(20)),
    ];
    let shipped = prop_oneof![
        4 => instant().prop_map(|t| json!(t.to_string())),
        1 => Just(json!("not a date")),
    ];
    (
        select(EVENTS),
        instant(),
        proptest::option::of(select(CATEGORIES)),
        proptest::option::of(amount),
        proptest::option::weighted(0.3, shipped),
    )
        .prop_map(|(name, at, category, amount, shipped)| {
            let mut properties = Map::new();
            if let Some(c) = category {
                properties.insert("category".into(), json!(c));
            }
            if let Some(a) = amount {
                properties.insert("amount".into(), a);
            }
            if let Some(s) = shipped {
                properties.insert("shipped".into(), s);
            }
            EventFact {
                name: name.into(),
                at,
                source: "web".into(),
                touchpoint: None,
                properties,
            }
        })
}

fn facts() -> impl Strategy<Value = ProfileFacts> {
    (
        maybe(select(GENDERS).prop_map(|s| json!(s))),
        maybe(select(CITIES).prop_map(|s| json!(s))),
        maybe(vec(select(HOBBIES), 0..4).prop_map(|h| json!(h))),
        maybe(any::<bool>().prop_map(Value::Bool)),
        maybe((0..7u32).prop_map(|n| json!(n))),
        maybe(total_spent()),
        maybe(birthday().prop_map(|d| json!(d.to_string()))),
        maybe(last_order()),
        vec(event(), 0..6),
        subsequence(PURPOSES, 0..=PURPOSES.len()),
    )
        .prop_map(
            |(gender, city, hobbies, vip, orders, total_spent, birthday, last_order, events, lawful)| {
                let traits = [
                    ("gender", gender),
                    ("city", city),
                    ("hobbies", hobbies),
                    ("vip", vip),
                    ("orders", orders),
                    ("total_spent", total_spent),
                    ("birthday", birthday),
                    ("last_order", last_order),
                ]
                .into_iter()
                .filter_map(|(name, v)| Some((name.to_owned(), v?)))
                .collect();
                ProfileFacts {
                    traits,
                    events,
                    lawful: lawful.into_iter().map(str::to_owned).collect(),
                }
            },
        )
}

#[derive(Clone, Debug)]
enum Change {
    Upsert(i64, ProfileFacts),
    Remove(i64),
}

/// Profile ids are sparse and few, so that the same profiles are updated and removed again.
fn profile_id() -> impl Strategy<Value = i64> {
    (0..45i64).prop_map(|i| 1_000 + i * 7)
}

fn changes(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Change>> {
    vec(
        prop_oneof![
            4 => (profile_id(), facts()).prop_map(|(id, f)| Change::Upsert(id, f)),
            1 => profile_id().prop_map(Change::Remove),
        ],
        n,
    )
}

fn apply(index: &mut AudienceIndex, model: &mut BTreeMap<i64, ProfileFacts>, change: &Change) {
    match change {
        Change::Upsert(id, f) => {
            index.upsert(*id, f);
            model.insert(*id, f.clone());
        }
        Change::Remove(id) => {
            index.remove(*id);
            model.remove(id);
        }
    }
}

fn text(s: &str) -> Literal {
    Literal::Text(s.into())
}

fn cond(field: &'static str, test: impl Strategy<Value = Test> + 'static) -> BoxedStrategy<Query> {
    test.prop_map(move |test| {
        Query::Cond(Cond {
            field: field.into(),
            test,
        })
    })
    .boxed()
}

const ALL_OPS: &[Op] = &[Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge];
const ORDER_OPS: &[Op] = &[Op::Lt, Op::Le, Op::Gt, Op::Ge];
const UNITS: &[Unit] = &[Unit::Hours, Unit::Days, Unit::Weeks, Unit::Months, Unit::Years];

/// Tests on a text or list: values in `pool` (with case and space variants and one nobody
/// has), substrings in `parts`.
fn value_test(pool: &'static [&'static str], parts: &'static [&'static str]) -> impl Strategy<Value = Test> {
    prop_oneof![
        (select(&[Op::Eq, Op::Ne][..]), select(pool)).prop_map(|(op, v)| Test::Cmp {
            op,
            value: Operand::Value(text(v)),
        }),
        vec(select(pool), 1..4).prop_map(|vs| Test::In {
            values: vs.into_iter().map(text).collect()
        }),
        select(parts).prop_map(|p| Test::Contains { value: text(p) }),
        Just(Test::Exists),
    ]
}

fn bool_cond() -> impl Strategy<Value = Test> {
    prop_oneof![
        (select(&[Op::Eq, Op::Ne][..]), any::<bool>()).prop_map(|(op, b)| Test::Cmp {
            op,
            value: Operand::Value(Literal::Bool(b)),
        }),
        vec(any::<bool>(), 1..3).prop_map(|bs| Test::In {
            values: bs.into_iter().map(Literal::Bool).collect()
        }),
        Just(Test::Exists),
    ]
}

fn number_test(pool: &'static [f64]) -> impl Strategy<Value = Test> {
    let n = move || select(pool).prop_map(|x| Operand::Value(Literal::Number(x)));
    prop_oneof![
        (select(ALL_OPS), n()).prop_map(|(op, value)| Test::Cmp { op, value }),
        (n(), n()).prop_map(|(from, to)| Test::Between { from, to }),
        vec(select(pool), 1..4).prop_map(|xs| Test::In {
            values: xs.into_iter().map(Literal::Number).collect()
        }),
        Just(Test::Exists),
    ]
}

/// Tests on a date or instant; `literals` are dates or instants as texts.
fn time_test(ops: &'static [Op], ns: &'static [u32], literals: &'static [&'static str]) -> impl Strategy<Value = Test> {
    let operand = move || {
        prop_oneof![
            3 => (select(ns), select(UNITS)).prop_map(|(n, unit)| Operand::Ago(span(n, unit))),
            1 => Just(Operand::Now),
            1 => select(literals).prop_map(|s| Operand::Value(text(s))),
        ]
    };
    prop_oneof![
        (select(ops), operand()).prop_map(|(op, value)| Test::Cmp { op, value }),
        (operand(), operand()).prop_map(|(from, to)| Test::Between { from, to }),
        select(WINDOWS).prop_map(|span| Test::Within { span }),
        vec(select(literals), 1..3).prop_map(|vs| Test::In {
            values: vs.into_iter().map(text).collect()
        }),
        Just(Test::Exists),
    ]
}

fn property_cond() -> impl Strategy<Value = Cond> {
    let on = |field: &'static str| {
        move |test| Cond {
            field: field.into(),
            test,
        }
    };
    prop_oneof![
        value_test(&["vinyl", "VINYL ", "books", "games"], &["vin", "oo", "game", "s"]).prop_map(on("category")),
        number_test(&[5.0, 10.0, 11.0, 12.5, 20.0]).prop_map(on("amount")),
        // Instants in properties are compared by order only (`=` on a property text is a text
        // comparison), so no `=`, `!=` or `in` here.
        prop_oneof![
            (select(ORDER_OPS), select(&[0u32, 1, 7, 36][..]), select(UNITS)).prop_map(|(op, n, unit)| {
                Test::Cmp {
                    op,
                    value: Operand::Ago(span(n, unit)),
                }
            }),
            select(WINDOWS).prop_map(|span| Test::Within { span }),
            Just(Test::Exists),
        ]
        .prop_map(on("shipped")),
    ]
}

fn did() -> impl Strategy<Value = Query> {
    let count = prop_oneof![
        2 => Just(None),
        1 => (0..4u32).prop_map(|n| Some(Count::AtLeast(n))),
        1 => (0..4u32).prop_map(|n| Some(Count::AtMost(n))),
        1 => (0..4u32).prop_map(|n| Some(Count::Exactly(n))),
    ];
    (
        select(&["Order Completed", "Product Viewed", "Refund", "Newsletter Signup"][..]),
        count,
        proptest::option::of(select(WINDOWS)),
        vec(property_cond(), 0..3),
    )
        .prop_map(|(event, count, within, filter)| {
            Query::Did(Did {
                event: event.into(),
                count,
                within,
                filter,
            })
        })
}

fn leaf() -> impl Strategy<Value = Query> {
    prop_oneof![
        1 => cond("gender", value_test(&["female", "MALE", "nonbinary", "other"], &["male", "FE", "x"])),
        1 => cond(
            "city",
            value_test(
                &["Paris", "paris ", "LYON", "Boulogne-Billancourt", "Nantes"],
                &["par", "ON", "e", "-", "z"]
            )
        ),
        1 => cond("hobbies", value_test(&["surf", "VINYL", "chess ", "golf"], &["surf", "vinyl", "golf"])),
        1 => cond("vip", bool_cond()),
        1 => cond("orders", number_test(&[0.0, 1.0, 2.0, 3.0, 5.0, 2.5])),
        1 => cond(
            "total_spent",
            number_test(&[-2.5, 0.0, 10.0, 10.004, 10.005, 10.01, 12.5, 50.0])
        ),
        1 => cond(
            "birthday",
            time_test(
                ALL_OPS,
                &[0, 1, 18, 25, 35],
                &["2006-02-28", "1999-03-01", "1960-06-15", "2024-02-29"]
            )
        ),
        1 => cond(
            "last_order",
            time_test(
                ALL_OPS,
                &[0, 1, 2, 7, 30, 36],
                &[
                    "2024-02-29T18:30:00Z",
                    "2024-02-22T18:30:00Z",
                    "2024-02-28",
                    "2024-01-29T18:30:01+00:00"
                ]
            )
        ),
        3 => did(),
        1 => select(&["VIP", "Parisians", "Loyal"][..]).prop_map(|s| Query::Segment(s.into())),
    ]
}

/// Queries up to three `and`/`or`/`not` levels above the conditions.
fn random_query() -> impl Strategy<Value = Query> {
    leaf().prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 1..4).prop_map(Query::And),
            vec(inner.clone(), 1..4).prop_map(Query::Or),
            inner.prop_map(|q| Query::Not(Box::new(q))),
        ]
    })
}

/// Queries as marketers type them.
const TEXT_QUERIES: &[&str] = &[
    "gender = \"female\" and birthday between 35 years ago and 18 years ago\n\
     and city in (\"Paris\", \"Boulogne-Billancourt\") and hobbies contains \"surf\"",
    "did \"Order Completed\" at least 2 times within 90 days where category = \"vinyl\"",
    "last_order within 30 days and not segment \"VIP\"",
    "did \"Refund\" at most 0 times",
    "did \"Order Completed\" exactly 1 time where (amount >= 10 and category != \"books\")",
    "total_spent between 10.01 and 10 or orders > 3",
    "city contains \"par\" or not hobbies exists",
    "vip = true and last_order < 1 month ago",
    "did \"Product Viewed\" within 2 weeks where amount in (10, 12.5)",
    "birthday <= 18 years ago and not did \"Order Completed\" within 30 days",
    "did \"Order Completed\" where shipped within 7 days",
    "gender != \"male\" and (segment \"Loyal\" or segment \"Parisians\")",
    "birthday >= today or last_order > now or last_order = \"2024-02-28\"",
];

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random queries on an index built by random upserts, re-upserts and removals, checked
    /// part-way and at the end; a fresh index over the final profiles answers the same.
    #[test]
    fn index_matches_a_full_scan(
        changes in changes(1..90),
        queries in vec(random_query(), 8),
    ) {
        let mut index = AudienceIndex::new(schema());
        let mut model = BTreeMap::new();
        let mid = changes.len() / 2;
        for (i, change) in changes.iter().enumerate() {
            apply(&mut index, &mut model, change);
            if i == mid {
                for q in &queries {
                    check(&index, &model, q)?;
                }
            }
        }
        for q in &queries {
            check(&index, &model, q)?;
        }
        let mut fresh = AudienceIndex::new(schema());
        for (id, f) in &model {
            fresh.upsert(*id, f);
        }
        for q in &queries {
            for purpose in ASKED {
                prop_assert_eq!(members(&fresh, q, purpose)?, members(&index, q, purpose)?);
            }
        }
    }

    /// The hand-written text queries, parsed, on random profiles.
    #[test]
    fn typed_queries_match_a_full_scan(changes in changes(1..60)) {
        let mut index = AudienceIndex::new(schema());
        let mut model = BTreeMap::new();
        for change in &changes {
            apply(&mut index, &mut model, change);
        }
        for text in TEXT_QUERIES {
            let q = query::parse(text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            check(&index, &model, &q)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A worked example, with the members spelled out.

fn profile(traits: Value, events: &[(&str, i64, Value)], lawful: &[&str]) -> ProfileFacts {
    ProfileFacts {
        traits: serde_json::from_value(traits).unwrap(),
        events: events
            .iter()
            .map(|(name, days_ago, props)| EventFact {
                name: (*name).into(),
                at: seconds_before_now(days_ago * DAY),
                source: "web".into(),
                touchpoint: None,
                properties: serde_json::from_value(props.clone()).unwrap(),
            })
            .collect(),
        lawful: lawful.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// The members of a typed query, by profile id.
fn ids_of(index: &AudienceIndex, text: &str, purpose: &str) -> Vec<i64> {
    let q = query::parse(text).unwrap();
    let bits = index.members(&q, purpose, now(), &segments).unwrap();
    bits.iter().map(|s| index.profile(s)).collect()
}

#[test]
fn founding_target_and_consent() {
    let mut index = AudienceIndex::new(schema());
    let surfer = json!({"gender": "Female", "city": " paris", "hobbies": ["Surf", "chess"], "birthday": "1990-05-01"});
    // 1: matches; 2: the same person without a basis for marketing; 3: seventeen; 4: no surf.
    index.upsert(
        1,
        &profile(
            surfer.clone(),
            &[("Order Completed", 3, json!({"amount": 10, "sizes": [10, 42]}))],
            &["marketing"],
        ),
    );
    index.upsert(2, &profile(surfer.clone(), &[], &["analytics"]));
    let mut young = surfer.clone();
    young["birthday"] = json!("2006-03-01");
    index.upsert(3, &profile(young, &[], &["marketing"]));
    let mut no_surf = surfer;
    no_surf["hobbies"] = json!(["chess"]);
    index.upsert(4, &profile(no_surf, &[], &["marketing", "analytics"]));

    let target = "gender = \"female\" and birthday between 35 years ago and 18 years ago \
                  and city = \"Paris\" and hobbies contains \"surf\"";
    assert_eq!(ids_of(&index, target, "marketing"), [1]);
    assert_eq!(ids_of(&index, target, "analytics"), [2]);
    assert_eq!(
        ids_of(&index, "did \"Order Completed\" at most 0 times", "marketing"),
        [3, 4]
    );
    assert_eq!(
        ids_of(&index, "not did \"Order Completed\" where amount in (10)", "marketing"),
        [3, 4]
    );
    // Numbers sent as JSON integers are the numbers typed in the query, in lists too.
    assert_eq!(
        ids_of(&index, "did \"Order Completed\" where sizes contains 42", "marketing"),
        [1]
    );
    assert_eq!(
        ids_of(&index, "did \"Order Completed\" where sizes in (11, 10)", "marketing"),
        [1]
    );
    assert_eq!(ids_of(&index, "city exists", "research"), Vec::<i64>::new());

    // Profile 1 withdraws its consent, then is erased.
    let mut withdrawn = profile(json!({"city": "Paris"}), &[], &[]);
    index.upsert(1, &withdrawn);
    assert_eq!(ids_of(&index, "city exists", "marketing"), [3, 4]);
    withdrawn.lawful.insert("marketing".into());
    index.upsert(1, &withdrawn);
    assert_eq!(ids_of(&index, "city exists", "marketing"), [1, 3, 4]);
    index.remove(1);
    assert_eq!(ids_of(&index, "city exists", "marketing"), [3, 4]);

    let err = |text: &str| index.members(&query::parse(text).unwrap(), "marketing", now(), &segments);
    assert!(err("segment \"Loop\"").is_err());
    assert!(err("segment \"Nobody saved this\"").is_err());
}
