//! Comparison levels: how alike two records are, field by field.
//!
//! # Design
//!
//! Each [`Field`] compares two records and answers with one [`Level`], the first of its ordered
//! list that applies, from the most to the least alike, as in Fellegi–Sunter and Splink. A level
//! is a category, not a score: the model learns from the data how much each category says
//! (a swapped first and last name may turn out to be strong evidence, a phonetic match weak).
//!
//! - **Names**: exact; first and last name swapped; nicknames of one another (a small
//!   French and English table: Bob and Robert, Jeanne and Jeannette); Jaro-Winkler ≥ 0.92;
//!   Jaro-Winkler ≥ 0.85 or one Damerau-Levenshtein edit (typos); the same double metaphone
//!   code (spelt differently, sounding alike); different.
//! - **Birth date**: exact; day and month swapped (a form read the other way round); one of
//!   year, month and day differs (a typo); different.
//! - **Location** is one field, not three: postcode, town and address move together, so
//!   counting them separately would count one shared home three times — exactly what two
//!   members of a household share. Its levels go from the same address line (in the same
//!   postcode) through a close address line, the same postcode (with no address line to
//!   compare, then with lines that differ), the same town, the same département, to
//!   different.
//! - **Email** and **phone**: exact; close (one edit, or the same mailbox at another domain);
//!   different.
//!
//! A field missing on either side is [`Level::Missing`]: no evidence either way. Names are
//! compared as normalised ASCII, so accents never count as differences. A swap of first and
//! last name shows in both name fields but is one piece of evidence, not two: the first name
//! carries its weight and the last name's [`Level::Swapped`] weighs nothing
//! ([`Field::is_evidence`]), or a swapped pair would count as if both names were rare. Half a
//! swap (the last name typed as first name, no last name) is [`Level::Crossed`], which weighs
//! nothing either: it is not evidence for, and must not count as a different name.

use super::blocking::{BlockingReport, Candidates};
use super::record::{NONE, Prepared, unpack_date};
use super::{MatchConfig, parallel};
use serde::{Deserialize, Serialize};

/// A field the model compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// First name.
    FirstName,
    /// Last name.
    LastName,
    /// Date of birth.
    BirthDate,
    /// Address line, postcode, town and département, as one field.
    Location,
    /// Email address.
    Email,
    /// Phone number.
    Phone,
}

/// How alike two values of a field are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Missing on one side or both: no evidence.
    Missing,
    /// The same normalised value.
    Exact,
    /// First and last names swapped between the two records.
    Swapped,
    /// This name was found in the other name field of the other record, the rest of the swap
    /// cannot be checked (a name is missing): no evidence either way.
    Crossed,
    /// Nicknames of one another (Bob and Robert).
    Nickname,
    /// Jaro-Winkler similarity ≥ 0.92.
    Close,
    /// Jaro-Winkler similarity ≥ 0.85 or one Damerau-Levenshtein edit.
    Typo,
    /// The same double metaphone code.
    Phonetic,
    /// The same year, with day and month swapped.
    DayMonthSwapped,
    /// Two of year, month and day agree.
    OneComponentDiffers,
    /// The same address line in the same postcode.
    SameAddress,
    /// A close address line (Jaro-Winkler ≥ 0.9) in the same postcode.
    CloseAddress,
    /// The same postcode, with no address line on one side to compare.
    SamePostcode,
    /// The same postcode, with different address lines.
    SamePostcodeOtherAddress,
    /// The same town.
    SameCity,
    /// The same département (the postcode's first two digits).
    SameDepartement,
    /// One edit apart, or the same mailbox at another domain.
    OneEdit,
    /// None of the above.
    Different,
}

impl Field {
    /// Every field, in the order evidence lists them.
    pub const ALL: [Field; 6] = [
        Self::FirstName,
        Self::LastName,
        Self::BirthDate,
        Self::Location,
        Self::Email,
        Self::Phone,
    ];

    /// Whether `level` of this field carries a weight of its own: not when it is missing or
    /// crossed, nor for the last name's half of a swap, which the first name already counts.
    pub fn is_evidence(self, level: Level) -> bool {
        !matches!(
            (self, level),
            (_, Level::Missing | Level::Crossed) | (Self::LastName, Level::Swapped)
        )
    }

    /// The field's levels from the most to the least alike, [`Level::Missing`] first.
    pub const fn levels(self) -> &'static [Level] {
        use Level::*;
        match self {
            Self::FirstName => &[
                Missing, Exact, Swapped, Crossed, Nickname, Close, Typo, Phonetic, Different,
            ],
            Self::LastName => &[Missing, Exact, Swapped, Crossed, Close, Typo, Phonetic, Different],
            Self::BirthDate => &[Missing, Exact, DayMonthSwapped, OneComponentDiffers, Different],
            Self::Location => &[
                Missing,
                SameAddress,
                CloseAddress,
                SamePostcode,
                SamePostcodeOtherAddress,
                SameCity,
                SameDepartement,
                Different,
            ],
            Self::Email | Self::Phone => &[Missing, Exact, OneEdit, Different],
        }
    }
}

/// The most levels a field has.
pub(crate) const MAX_LEVELS: usize = 16;

/// The level of each field for one pair, as indexes into [`Field::levels`], packed four bits a
/// field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Gamma(pub(crate) u32);

impl Gamma {
    fn new(levels: [u8; 6]) -> Self {
        Self(
            levels
                .iter()
                .enumerate()
                .fold(0, |acc, (k, &l)| acc | u32::from(l) << (4 * k)),
        )
    }

    /// The level index of field `k`.
    pub(crate) fn level(self, k: usize) -> usize {
        ((self.0 >> (4 * k)) & 15) as usize
    }
}

/// A pair of records, by index.
pub(crate) type Pair = (u32, u32);

/// The index of `level` in `field`'s levels.
const fn idx(field: Field, level: Level) -> u8 {
    let levels = field.levels();
    let mut i = 0;
    while i < levels.len() {
        if levels[i] as u8 == level as u8 {
            return i as u8;
        }
        i += 1;
    }
    panic!("a level that is not in its field's list");
}

/// The index of a level of a field, computed at compile time (so a level that is not in its
/// field's list does not compile).
macro_rules! lvl {
    ($field:expr, $level:ident) => {
        const { idx($field, Level::$level) }
    };
}

/// Compares two records field by field.
pub(crate) fn compare(p: &Prepared, a: u32, b: u32) -> Gamma {
    let (a, b) = (a as usize, b as usize);
    let (first, last) = names(p, a, b);
    Gamma::new([
        first,
        last,
        birth_date(p.birth[a], p.birth[b]),
        location(p, a, b),
        email(p, p.email[a], p.email[b]),
        phone(p, p.phone[a], p.phone[b]),
    ])
}

/// True when names `x` and `y` could be one name: equal, nicknames of one another, or a typo
/// apart (Jaro-Winkler ≥ 0.85 or one Damerau-Levenshtein edit).
fn alike(p: &Prepared, x: u32, y: u32) -> bool {
    if x == y || p.name_meta[x as usize].nicknames & p.name_meta[y as usize].nicknames != 0 {
        return true;
    }
    let (sx, sy) = (p.names.get(x), p.names.get(y));
    strsim::jaro_winkler(sx, sy) >= 0.85 || one_edit(sx, sy)
}

/// How the first and last names of `a` and `b` cross.
enum Cross {
    /// They don't.
    No,
    /// Each name matches the other field of the other record (a typo or a nickname allowed).
    Swapped,
    /// One name matches the other field of the other record; the other half cannot be checked.
    Partly,
}

fn cross(p: &Prepared, a: usize, b: usize) -> Cross {
    let (fa, la, fb, lb) = (p.first[a], p.last[a], p.first[b], p.last[b]);
    let alike = |x: u32, y: u32| (x != NONE && y != NONE).then(|| alike(p, x, y));
    // Lazily: most candidate pairs fail the first test, and each test costs a Jaro-Winkler.
    match alike(fa, lb) {
        Some(false) => Cross::No,
        Some(true) => match alike(la, fb) {
            Some(true) if fa != la => Cross::Swapped,
            None => Cross::Partly,
            _ => Cross::No,
        },
        None if alike(la, fb) == Some(true) => Cross::Partly,
        None => Cross::No,
    }
}

/// The levels shared by first and last names after exact and swapped: `levels` holds the
/// field's indexes of close, typo, phonetic and different.
fn name_similarity(p: &Prepared, x: u32, y: u32, levels: [u8; 4]) -> u8 {
    let [close, typo, phonetic, different] = levels;
    let (sx, sy) = (p.names.get(x), p.names.get(y));
    let jw = strsim::jaro_winkler(sx, sy);
    if jw >= 0.92 {
        return close;
    }
    if jw >= 0.85 || one_edit(sx, sy) {
        return typo;
    }
    let (mx, my) = (p.name_meta[x as usize].metaphone, p.name_meta[y as usize].metaphone);
    if mx.0 == my.0 || mx.0 == my.1 || mx.1 == my.0 {
        return phonetic;
    }
    different
}

/// The levels of the first and last names, which share the test for a swap.
fn names(p: &Prepared, a: usize, b: usize) -> (u8, u8) {
    let (fa, la, fb, lb) = (p.first[a], p.last[a], p.first[b], p.last[b]);
    let differs = |x: u32, y: u32| x != NONE && y != NONE && x != y;
    let crossed = if differs(fa, fb) || differs(la, lb) {
        cross(p, a, b)
    } else {
        Cross::No
    };
    (first_name(p, fa, fb, &crossed), last_name(p, la, lb, &crossed))
}

fn first_name(p: &Prepared, x: u32, y: u32, crossed: &Cross) -> u8 {
    const F: Field = Field::FirstName;
    if x == NONE || y == NONE {
        return lvl!(F, Missing);
    }
    if x == y {
        return lvl!(F, Exact);
    }
    match crossed {
        Cross::Swapped => return lvl!(F, Swapped),
        Cross::Partly => return lvl!(F, Crossed),
        Cross::No => {}
    }
    if p.name_meta[x as usize].nicknames & p.name_meta[y as usize].nicknames != 0 {
        return lvl!(F, Nickname);
    }
    name_similarity(
        p,
        x,
        y,
        [lvl!(F, Close), lvl!(F, Typo), lvl!(F, Phonetic), lvl!(F, Different)],
    )
}

fn last_name(p: &Prepared, x: u32, y: u32, crossed: &Cross) -> u8 {
    const F: Field = Field::LastName;
    if x == NONE || y == NONE {
        return lvl!(F, Missing);
    }
    if x == y {
        return lvl!(F, Exact);
    }
    match crossed {
        Cross::Swapped => return lvl!(F, Swapped),
        Cross::Partly => return lvl!(F, Crossed),
        Cross::No => {}
    }
    name_similarity(
        p,
        x,
        y,
        [lvl!(F, Close), lvl!(F, Typo), lvl!(F, Phonetic), lvl!(F, Different)],
    )
}

fn birth_date(x: u32, y: u32) -> u8 {
    const F: Field = Field::BirthDate;
    if x == 0 || y == 0 {
        return lvl!(F, Missing);
    }
    if x == y {
        return lvl!(F, Exact);
    }
    let (ya, ma, da) = unpack_date(x);
    let (yb, mb, db) = unpack_date(y);
    if ya == yb && ma == db && da == mb {
        return lvl!(F, DayMonthSwapped);
    }
    let agreeing = u8::from(ya == yb) + u8::from(ma == mb) + u8::from(da == db);
    if agreeing == 2 {
        return lvl!(F, OneComponentDiffers);
    }
    lvl!(F, Different)
}

fn location(p: &Prepared, a: usize, b: usize) -> u8 {
    const F: Field = Field::Location;
    let (pa, pb) = (p.postcode[a], p.postcode[b]);
    let (aa, ab) = (p.address[a], p.address[b]);
    let (ca, cb) = (p.city[a], p.city[b]);
    // An address line only says something within one postcode: "1 rue de la Gare" is in
    // every town. A missing postcode on one side does not contradict.
    let same_area = pa == NONE || pb == NONE || pa == pb;
    if aa != NONE && ab != NONE && same_area && (pa != NONE || pb != NONE || ca == cb) {
        if aa == ab {
            return lvl!(F, SameAddress);
        }
        if strsim::jaro_winkler(p.addresses.get(aa), p.addresses.get(ab)) >= 0.9 {
            return lvl!(F, CloseAddress);
        }
    }
    // The same postcode says more when there was no address line to compare than when the
    // lines differ (a neighbour, a move within the town), so the two are separate levels.
    if pa != NONE && pa == pb {
        if aa != NONE && ab != NONE {
            return lvl!(F, SamePostcodeOtherAddress);
        }
        return lvl!(F, SamePostcode);
    }
    if ca != NONE && ca == cb {
        return lvl!(F, SameCity);
    }
    if pa != NONE && pb != NONE {
        if p.departement[pa as usize] == p.departement[pb as usize] {
            return lvl!(F, SameDepartement);
        }
        return lvl!(F, Different);
    }
    if (ca != NONE && cb != NONE) || (aa != NONE && ab != NONE) {
        return lvl!(F, Different);
    }
    lvl!(F, Missing)
}

fn email(p: &Prepared, x: u32, y: u32) -> u8 {
    const F: Field = Field::Email;
    if x == NONE || y == NONE {
        return lvl!(F, Missing);
    }
    if x == y {
        return lvl!(F, Exact);
    }
    let (sx, sy) = (p.emails.get(x), p.emails.get(y));
    if mailbox(sx) == mailbox(sy) || one_edit(sx, sy) {
        return lvl!(F, OneEdit);
    }
    lvl!(F, Different)
}

fn phone(p: &Prepared, x: u32, y: u32) -> u8 {
    const F: Field = Field::Phone;
    if x == NONE || y == NONE {
        return lvl!(F, Missing);
    }
    if x == y {
        return lvl!(F, Exact);
    }
    if one_edit(p.phones.get(x), p.phones.get(y)) {
        return lvl!(F, OneEdit);
    }
    lvl!(F, Different)
}

/// The part of an email address before the `@`.
fn mailbox(email: &str) -> &str {
    email.split_once('@').map_or("", |(local, _)| local)
}

/// True when `x` and `y` are at most one Damerau-Levenshtein edit apart: one insertion,
/// deletion, substitution or transposition of two adjacent characters.
///
/// That is the only question the levels ask of the distance, and it has a linear answer
/// without allocation: skip the common prefix, then the rest must match after one edit. The
/// full distance (`strsim::damerau_levenshtein`, which the tests check this against) costs a
/// table and a map per call, millions of times per run. Non-ASCII text takes the full
/// distance, since byte positions are not characters there.
fn one_edit(x: &str, y: &str) -> bool {
    if x.len().abs_diff(y.len()) > 1 {
        return false;
    }
    if !x.is_ascii() || !y.is_ascii() {
        return strsim::damerau_levenshtein(x, y) <= 1;
    }
    let (x, y) = (x.as_bytes(), y.as_bytes());
    let i = x.iter().zip(y).take_while(|(a, b)| a == b).count();
    if i == x.len() && i == y.len() {
        return true;
    }
    match x.len().cmp(&y.len()) {
        std::cmp::Ordering::Less => x[i..] == y[i + 1..],
        std::cmp::Ordering::Greater => x[i + 1..] == y[i..],
        std::cmp::Ordering::Equal => {
            x[i + 1..] == y[i + 1..]
                || (i + 1 < x.len() && x[i] == y[i + 1] && x[i + 1] == y[i] && x[i + 2..] == y[i + 2..])
        }
    }
}

/// The candidate pairs of a run with their comparison levels.
pub struct Compared {
    pub(crate) pairs: Vec<Pair>,
    pub(crate) gammas: Vec<Gamma>,
    /// What blocking found and skipped.
    pub blocking: BlockingReport,
}

impl Compared {
    /// Compares every candidate pair, field by field.
    pub fn new(p: &Prepared, candidates: Candidates, config: &MatchConfig) -> Self {
        let gammas = parallel(&candidates.pairs, config.threads(), |chunk| {
            chunk.iter().map(|&(a, b)| compare(p, a, b)).collect::<Vec<_>>()
        })
        .concat();
        Self {
            gammas,
            blocking: BlockingReport {
                pairs_by_rule: candidates.by_rule,
                skipped_blocks: candidates.skipped,
            },
            pairs: candidates.pairs,
        }
    }

    /// The number of pairs compared.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there was nothing to compare.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Groups of first names that are nicknames or variants of one another, French and English.
/// Small on purpose: each entry is a claim that two names are one person's, so only common,
/// unambiguous pairs are listed. A name may belong to several groups ("chris").
const NICKNAMES: [&[&str]; 48] = [
    &["robert", "bob", "bobby", "rob", "robbie"],
    &["william", "bill", "billy", "will", "willy"],
    &["elizabeth", "elisabeth", "liz", "lizzie", "beth", "betty", "babette"],
    &["catherine", "cathy", "kathy", "kate", "katie", "cathie"],
    &["margaret", "maggie", "meg", "peggy"],
    &["michael", "mike", "mick", "mickey"],
    &["thomas", "tom", "tommy"],
    &["james", "jim", "jimmy", "jamie"],
    &["richard", "rick", "dick", "richie"],
    &["jeanne", "jeannette", "jeannine", "jeanine"],
    &["marie", "marion", "manon", "mariette"],
    &["joseph", "jo", "joe", "jojo"],
    &["alexandre", "alex"],
    &["alexandra", "alex", "sacha"],
    &["nicolas", "nico", "colas"],
    &["christophe", "chris"],
    &["christine", "chris", "titine"],
    &["dominique", "dom", "domi"],
    &["frederic", "fred", "freddy"],
    &["frederique", "fred"],
    &["francoise", "fanfan"],
    &["isabelle", "isa", "isabel", "babette"],
    &["philippe", "phil"],
    &["stephane", "steph"],
    &["stephanie", "steph", "fanny"],
    &["benjamin", "ben", "benji"],
    &["sebastien", "seb"],
    &["maxime", "max"],
    &["maximilien", "max"],
    &["emmanuel", "manu"],
    &["emmanuelle", "manue", "manu"],
    &["valentin", "val"],
    &["valerie", "val"],
    &["patrick", "pat"],
    &["patricia", "pat"],
    &["jean baptiste", "jb"],
    &["anthony", "antoine", "tony"],
    &["charles", "charlie", "charly"],
    &["daniel", "dan", "danny"],
    &["edouard", "edward", "ed", "eddie", "eddy"],
    &["henri", "henry", "harry"],
    &["jacques", "jacky", "jack", "jacquot"],
    &["louise", "lou", "louisette"],
    &["victoria", "vicky"],
    &["suzanne", "suzie", "suzy", "susan", "sue"],
    &["anne", "annie", "anna", "nanou"],
    &["pierre", "pierrot", "peter"],
    &["guillaume", "william"],
];

/// The bit set of [`NICKNAMES`] groups `name` (normalised) belongs to.
pub(crate) fn nickname_groups(name: &str) -> u64 {
    NICKNAMES
        .iter()
        .enumerate()
        .filter(|(_, group)| group.contains(&name))
        .fold(0, |acc, (i, _)| acc | 1 << i)
}

/// The other names of `name`'s nickname groups, for the synthetic generator.
pub(crate) fn nicknames_of(name: &str) -> Vec<&'static str> {
    NICKNAMES
        .iter()
        .filter(|group| group.contains(&name))
        .flat_map(|group| group.iter().copied())
        .filter(|&other| other != name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unify::matching::{MatchConfig, MatchRecord};
    use jiff::civil::date;

    fn person(first: &str, last: &str) -> MatchRecord {
        MatchRecord {
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            ..MatchRecord::default()
        }
    }

    /// The level of `field` between two records.
    fn level(field: Field, a: MatchRecord, b: MatchRecord) -> Level {
        let records = [MatchRecord { id: 1, ..a }, MatchRecord { id: 2, ..b }];
        let p = Prepared::new(&records, &MatchConfig::default()).unwrap();
        let k = Field::ALL.iter().position(|&f| f == field).unwrap();
        field.levels()[compare(&p, 0, 1).level(k)]
    }

    fn first(a: &str, b: &str) -> Level {
        level(Field::FirstName, person(a, "Durand"), person(b, "Durand"))
    }

    fn last(a: &str, b: &str) -> Level {
        level(Field::LastName, person("Louise", a), person("Louise", b))
    }

    #[test]
    fn the_level_table_matches_the_level_lists() {
        for field in Field::ALL {
            for (i, &l) in field.levels().iter().enumerate() {
                assert_eq!(idx(field, l) as usize, i, "{field:?} {l:?}");
            }
        }
    }

    #[test]
    fn name_levels() {
        assert_eq!(first("Éléonore", "eleonore"), Level::Exact);
        assert_eq!(first("Bob", "Robert"), Level::Nickname);
        assert_eq!(first("Jeanne", "Jeannette"), Level::Nickname);
        assert_eq!(first("Christophe", "Christopher"), Level::Close);
        assert_eq!(last("Martin", "Martn"), Level::Close);
        assert_eq!(first("Li", "Lu"), Level::Typo);
        assert_eq!(last("Haddad", "Hadad"), Level::Typo);
        assert_eq!(last("Philippe", "Filip"), Level::Phonetic);
        assert_eq!(first("Louise", "Quentin"), Level::Different);
        assert_eq!(
            level(Field::FirstName, person("Louise", "Durand"), MatchRecord::default()),
            Level::Missing
        );
    }

    #[test]
    fn swapped_names() {
        let a = person("Martin", "Bernard");
        let b = person("Bernard", "Martin");
        assert_eq!(level(Field::FirstName, a.clone(), b.clone()), Level::Swapped);
        assert_eq!(level(Field::LastName, a, b), Level::Swapped);
        let typo = person("Bernrad", "Martin");
        assert_eq!(
            level(Field::LastName, person("Martin", "Bernard"), typo),
            Level::Swapped
        );
        let nickname = person("Martin", "Bob");
        assert_eq!(
            level(Field::FirstName, person("Robert", "Martin"), nickname),
            Level::Swapped
        );
        let no_first = MatchRecord {
            first_name: None,
            ..person("", "Lopez")
        };
        assert_eq!(
            level(Field::LastName, no_first, person("Lopez", "Céline")),
            Level::Crossed
        );
    }

    fn born(d: jiff::civil::Date) -> MatchRecord {
        MatchRecord {
            birth_date: Some(d),
            ..MatchRecord::default()
        }
    }

    #[test]
    fn birth_date_levels() {
        let l = |a, b| level(Field::BirthDate, born(a), born(b));
        assert_eq!(l(date(1980, 3, 7), date(1980, 3, 7)), Level::Exact);
        assert_eq!(l(date(1980, 3, 7), date(1980, 7, 3)), Level::DayMonthSwapped);
        assert_eq!(l(date(1980, 3, 7), date(1908, 3, 7)), Level::OneComponentDiffers);
        assert_eq!(l(date(1980, 3, 7), date(1980, 3, 17)), Level::OneComponentDiffers);
        assert_eq!(l(date(1980, 3, 7), date(1981, 4, 7)), Level::Different);
        assert_eq!(
            level(Field::BirthDate, born(date(1980, 3, 7)), MatchRecord::default()),
            Level::Missing
        );
    }

    fn lives(address: Option<&str>, postcode: &str, city: &str) -> MatchRecord {
        MatchRecord {
            address: address.map(Into::into),
            postcode: Some(postcode.into()),
            city: Some(city.into()),
            ..MatchRecord::default()
        }
    }

    #[test]
    fn location_levels() {
        let l = |a, b| level(Field::Location, a, b);
        let home = lives(Some("12 av. Jean Jaurès"), "69007", "Lyon");
        assert_eq!(
            l(home.clone(), lives(Some("12 Avenue Jean-Jaures"), "69007", "LYON")),
            Level::SameAddress
        );
        assert_eq!(
            l(home.clone(), lives(Some("12 avenue Jean Jaures bis"), "69007", "Lyon")),
            Level::CloseAddress
        );
        assert_eq!(l(home.clone(), lives(None, "69007", "Lyon")), Level::SamePostcode);
        assert_eq!(
            l(home.clone(), lives(Some("3 rue Garibaldi"), "69007", "Lyon")),
            Level::SamePostcodeOtherAddress
        );
        assert_eq!(
            l(home.clone(), lives(Some("3 rue Garibaldi"), "69003", "Lyon")),
            Level::SameCity
        );
        assert_eq!(
            l(home.clone(), lives(None, "69100", "Villeurbanne")),
            Level::SameDepartement
        );
        assert_eq!(
            l(home.clone(), lives(Some("12 av. Jean Jaurès"), "13001", "Marseille")),
            Level::Different
        );
        assert_eq!(l(home, MatchRecord::default()), Level::Missing);
    }

    #[test]
    fn email_and_phone_levels() {
        let e = |a: &str, b: &str| {
            let r = |v: &str| MatchRecord {
                email: Some(v.into()),
                ..MatchRecord::default()
            };
            level(Field::Email, r(a), r(b))
        };
        assert_eq!(e("Ana@example.com", "ana@EXAMPLE.com"), Level::Exact);
        assert_eq!(e("ana@example.com", "ana@example.net"), Level::OneEdit);
        assert_eq!(e("ana@example.com", "ana@exmaple.com"), Level::OneEdit);
        assert_eq!(e("ana@example.com", "bob@example.com"), Level::Different);
        let t = |a: &str, b: &str| {
            let r = |v: &str| MatchRecord {
                phone: Some(v.into()),
                ..MatchRecord::default()
            };
            level(Field::Phone, r(a), r(b))
        };
        assert_eq!(t("06 39 98 12 34", "+33 6 39 98 12 34"), Level::Exact);
        assert_eq!(t("06 39 98 12 34", "06 39 98 21 34"), Level::OneEdit);
        assert_eq!(t("06 39 98 12 34", "07 11 22 33 44"), Level::Different);
    }

    proptest::proptest! {
        #[test]
        fn one_edit_agrees_with_damerau_levenshtein(x in "[a-c]{0,6}", y in "[a-c]{0,6}") {
            proptest::prop_assert_eq!(one_edit(&x, &y), strsim::damerau_levenshtein(&x, &y) <= 1);
        }

        #[test]
        fn one_edit_agrees_on_edited_strings(x in "[a-z@.]{1,12}", at in 0usize..12, c in "[a-z]") {
            let at = at % x.len();
            let c = c.chars().next().unwrap();
            let mut edits = vec![x.clone()];
            let mut s = x.clone(); s.remove(at); edits.push(s);
            let mut s = x.clone(); s.insert(at, c); edits.push(s);
            let mut s: Vec<char> = x.chars().collect(); s[at] = c; edits.push(s.into_iter().collect());
            if at + 1 < x.len() {
                let mut s: Vec<char> = x.chars().collect(); s.swap(at, at + 1); edits.push(s.into_iter().collect());
            }
            for y in edits {
                proptest::prop_assert_eq!(one_edit(&x, &y), strsim::damerau_levenshtein(&x, &y) <= 1);
            }
        }
    }

    #[test]
    fn nickname_groups_are_symmetric_and_fit_in_64_bits() {
        assert!(NICKNAMES.len() <= 64);
        assert_ne!(nickname_groups("bob") & nickname_groups("robert"), 0);
        assert_eq!(nickname_groups("bob") & nickname_groups("jeanne"), 0);
        assert!(nicknames_of("robert").contains(&"bob"));
    }
}
