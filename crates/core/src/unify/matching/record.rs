//! Records as matching sees them: parsed and normalised once, then interned.
//!
//! # Design
//!
//! A run compares each value with hundreds of others, so everything that does not depend on the
//! other record is done once, up front, by [`Prepared::new`]:
//!
//! - **normalisation**: accents folded with `deunicode` ("Éléonore" and "Eleonore" are one
//!   name), lowercase, punctuation turned into single spaces, street-type abbreviations spelled
//!   out ("av." is "avenue"), phones reduced to digits in the French national form when French;
//! - **blocked values** (`null`, `anonymous`, `-1`, a run of zeros and dashes, `test@test.com`,
//!   the shop's own phone — [`MatchConfig::blocked_values`]) become missing, so they can never
//!   count as evidence or put records in a common block;
//! - **overused identifiers**: an email or phone carried by more records than
//!   [`max_records_per_identifier`](super::Limits::max_records_per_identifier) identifies a
//!   shop, not a person (its own phone typed in at the till for customers who gave none), so
//!   it becomes missing too and is reported: that is how a value nobody thought to block is
//!   caught;
//! - **interning**: each distinct normalised value gets a small integer id. An exact match is an
//!   integer comparison, a term frequency is an array lookup, the double metaphone of a name is
//!   computed once per distinct name, and a million records take tens of megabytes. Raw strings
//!   are normalised once per distinct raw string, since sources repeat them.

use super::MatchConfig;
use super::compare::nickname_groups;
use jiff::civil::Date;
use rphonetic::DoubleMetaphone;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// The id of a missing value in a column.
pub(crate) const NONE: u32 = u32::MAX;

/// One record to match: what a source knows about a person. Every field is optional.
///
/// Values are taken as the sources typed them; [`Prepared::new`] normalises them. Personal data,
/// so `Debug` prints only the id and which fields are present.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchRecord {
    /// The caller's handle for the record (a profile or row number), unique in a run.
    pub id: u64,
    /// First name, as typed.
    pub first_name: Option<String>,
    /// Last name, as typed.
    pub last_name: Option<String>,
    /// Date of birth.
    pub birth_date: Option<Date>,
    /// Postcode.
    pub postcode: Option<String>,
    /// City or town.
    pub city: Option<String>,
    /// Street address line: number, street type and name.
    pub address: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Phone number, in any common format.
    pub phone: Option<String>,
    /// The id of the shop's own account for this person (web account, CRM customer number).
    pub user_id: Option<String>,
}

impl fmt::Debug for MatchRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let present: Vec<&str> = [
            ("first_name", self.first_name.is_some()),
            ("last_name", self.last_name.is_some()),
            ("birth_date", self.birth_date.is_some()),
            ("postcode", self.postcode.is_some()),
            ("city", self.city.is_some()),
            ("address", self.address.is_some()),
            ("email", self.email.is_some()),
            ("phone", self.phone.is_some()),
            ("user_id", self.user_id.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, some)| some.then_some(name))
        .collect();
        f.debug_struct("MatchRecord")
            .field("id", &self.id)
            .field("present", &present)
            .finish()
    }
}

/// An attribute of a [`MatchRecord`], as named in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// [`MatchRecord::first_name`].
    FirstName,
    /// [`MatchRecord::last_name`].
    LastName,
    /// [`MatchRecord::birth_date`].
    BirthDate,
    /// [`MatchRecord::postcode`].
    Postcode,
    /// [`MatchRecord::city`].
    City,
    /// [`MatchRecord::address`].
    Address,
    /// [`MatchRecord::email`].
    Email,
    /// [`MatchRecord::phone`].
    Phone,
    /// [`MatchRecord::user_id`].
    UserId,
}

impl Attribute {
    fn normalise(self, raw: &str) -> Option<String> {
        match self {
            Self::FirstName | Self::LastName => normalise_name(raw),
            Self::City => normalise_place(raw),
            Self::Address => normalise_place(raw),
            Self::Postcode => normalise_postcode(raw),
            Self::Email => normalise_email(raw),
            Self::Phone => normalise_phone(raw),
            Self::UserId | Self::BirthDate => {
                let v = raw.trim();
                (!v.is_empty()).then(|| v.to_owned())
            }
        }
    }
}

/// A value that was left out of matching, with how many records carried it. The value may be
/// personal data (an email typed as a placeholder), so `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueCount {
    /// Where the value was found.
    pub attribute: Attribute,
    /// The value, normalised (or as typed, when it did not even normalise).
    pub value: String,
    /// How many records carried it.
    pub records: usize,
}

impl fmt::Debug for ValueCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueCount")
            .field("attribute", &self.attribute)
            .field("value", &"[redacted]")
            .field("records", &self.records)
            .finish()
    }
}

/// Lowercase ASCII words of `s` separated by single spaces. Apostrophes join ("D'Angelo" is
/// "dangelo", as it is often typed); every other character that is not kept is a separator.
fn fold(s: &str, keep: impl Fn(char) -> bool) -> String {
    let ascii = deunicode::deunicode(s);
    let mut out = String::with_capacity(ascii.len());
    let mut pending_space = false;
    for c in ascii.chars() {
        if c == '\'' {
            continue;
        }
        if keep(c) {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c.to_ascii_lowercase());
        } else {
            pending_space = true;
        }
    }
    out
}

/// A name: letters only, accents folded, lowercase, single spaces ("Jean-Pierre" and
/// "jean pierre" are one name).
pub(crate) fn normalise_name(raw: &str) -> Option<String> {
    let name = fold(raw, |c| c.is_ascii_alphabetic());
    (!name.is_empty()).then_some(name)
}

/// Street types and saints as they are abbreviated in French addresses and town names.
const ABBREVIATIONS: [(&str, &str); 14] = [
    ("av", "avenue"),
    ("ave", "avenue"),
    ("bd", "boulevard"),
    ("bld", "boulevard"),
    ("bvd", "boulevard"),
    ("ch", "chemin"),
    ("imp", "impasse"),
    ("pl", "place"),
    ("r", "rue"),
    ("rte", "route"),
    ("sq", "square"),
    ("st", "saint"),
    ("ste", "sainte"),
    ("all", "allee"),
];

/// A town or address line: letters and digits, abbreviations spelled out.
pub(crate) fn normalise_place(raw: &str) -> Option<String> {
    let folded = fold(raw, |c| c.is_ascii_alphanumeric());
    let words: Vec<&str> = folded
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(|w| {
            ABBREVIATIONS
                .iter()
                .find(|(short, _)| *short == w)
                .map_or(w, |(_, long)| long)
        })
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// A postcode: uppercase letters and digits without spaces ("75 015" is "75015").
pub(crate) fn normalise_postcode(raw: &str) -> Option<String> {
    let code: String = raw
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() >= 3).then_some(code)
}

/// The département of a postcode: its first two characters, three for overseas ones (971…).
fn departement(postcode: &str) -> &str {
    let n = if postcode.starts_with("97") || postcode.starts_with("98") {
        3
    } else {
        2
    };
    &postcode[..n.min(postcode.len())]
}

/// An email address: trimmed and lowercased, with one `@` and something on each side.
pub(crate) fn normalise_email(raw: &str) -> Option<String> {
    let email: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    let (local, domain) = email.split_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !domain.contains('@')).then_some(email)
}

/// A phone number: digits only; a French number in international form (`+33 6…`, `0033 6…`)
/// becomes national (`06…`) so both spellings are one number; other international numbers keep
/// their country code without the `+` or `00`. Fewer than six digits is not a phone number.
pub(crate) fn normalise_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let international = raw.starts_with('+') || digits.starts_with("00");
    let digits = if international {
        digits.trim_start_matches('0').to_owned()
    } else {
        digits
    };
    let national = match digits.strip_prefix("33") {
        Some(rest) if rest.len() == 9 && !rest.starts_with('0') => {
            format!("0{rest}")
        }
        _ => digits,
    };
    (national.len() >= 6).then_some(national)
}

/// True for a value made only of zeros and dashes ("0", "-1" is caught by the list, "000-000",
/// "--"), which tills and forms use for "nothing".
fn zeros_and_dashes(raw: &str) -> bool {
    raw.trim().chars().all(|c| c == '0' || c == '-')
}

/// The blocked values of a run, as typed and as normalised for each attribute.
struct Blocklist {
    raw: HashSet<String>,
    normalised: HashSet<(Attribute, String)>,
}

impl Blocklist {
    fn new(values: &[String]) -> Self {
        const ATTRIBUTES: [Attribute; 8] = [
            Attribute::FirstName,
            Attribute::LastName,
            Attribute::Postcode,
            Attribute::City,
            Attribute::Address,
            Attribute::Email,
            Attribute::Phone,
            Attribute::UserId,
        ];
        let raw = values.iter().map(|v| v.trim().to_lowercase()).collect();
        let normalised = values
            .iter()
            .flat_map(|v| ATTRIBUTES.iter().filter_map(move |&a| a.normalise(v).map(|n| (a, n))))
            .collect();
        Self { raw, normalised }
    }

    fn blocks(&self, attribute: Attribute, raw: &str, normalised: &str) -> bool {
        zeros_and_dashes(raw)
            || self.raw.contains(&raw.trim().to_lowercase())
            || self.normalised.contains(&(attribute, normalised.to_owned()))
    }
}

/// Distinct normalised values and their ids.
#[derive(Default)]
pub(crate) struct Values {
    ids: HashMap<Box<str>, u32>,
    values: Vec<Box<str>>,
}

impl Values {
    fn intern(&mut self, value: String) -> u32 {
        if let Some(&id) = self.ids.get(value.as_str()) {
            return id;
        }
        let id = u32::try_from(self.values.len()).expect("fewer than 2³² distinct values");
        let value: Box<str> = value.into_boxed_str();
        self.ids.insert(value.clone(), id);
        self.values.push(value);
        id
    }

    /// The value of an id.
    pub(crate) fn get(&self, id: u32) -> &str {
        &self.values[id as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

/// What is known of a distinct name, computed once.
pub(crate) struct NameMeta {
    /// Double metaphone codes (primary, alternate), interned in [`Prepared::metaphones`].
    pub(crate) metaphone: (u32, u32),
    /// Bit set of the nickname groups the name belongs to.
    pub(crate) nicknames: u64,
    /// First letter, for blocking.
    pub(crate) initial: u8,
}

/// How many records carry each value of a column, for term frequencies.
pub(crate) struct Counts {
    pub(crate) by_value: Vec<u32>,
    pub(crate) total: u32,
}

impl Counts {
    fn of(column: &[u32], distinct: usize) -> Self {
        let mut by_value = vec![0u32; distinct];
        let mut total = 0;
        for &v in column.iter().filter(|&&v| v != NONE) {
            by_value[v as usize] += 1;
            total += 1;
        }
        Self { by_value, total }
    }

    /// The share of the column's records that carry value `id`.
    pub(crate) fn frequency(&self, id: u32) -> f64 {
        f64::from(self.by_value[id as usize]) / f64::from(self.total.max(1))
    }
}

/// Records parsed for matching: normalised, interned, stored column by column.
pub struct Prepared {
    pub(crate) ids: Vec<u64>,
    pub(crate) index: HashMap<u64, u32>,
    pub(crate) first: Vec<u32>,
    pub(crate) last: Vec<u32>,
    /// Birth dates packed as `year << 9 | month << 5 | day`; 0 when missing.
    pub(crate) birth: Vec<u32>,
    pub(crate) postcode: Vec<u32>,
    pub(crate) city: Vec<u32>,
    pub(crate) address: Vec<u32>,
    pub(crate) email: Vec<u32>,
    pub(crate) phone: Vec<u32>,
    pub(crate) user: Vec<u32>,
    /// First and last names share one id space, so a swap is an id comparison.
    pub(crate) names: Values,
    pub(crate) name_meta: Vec<NameMeta>,
    pub(crate) metaphones: Values,
    pub(crate) postcodes: Values,
    /// The département id of each postcode id.
    pub(crate) departement: Vec<u32>,
    pub(crate) addresses: Values,
    pub(crate) emails: Values,
    pub(crate) phones: Values,
    pub(crate) first_counts: Counts,
    pub(crate) last_counts: Counts,
    pub(crate) postcode_counts: Counts,
    pub(crate) address_counts: Counts,
    pub(crate) email_counts: Counts,
    pub(crate) phone_counts: Counts,
    pub(crate) blocked: Vec<ValueCount>,
    pub(crate) overused: Vec<ValueCount>,
}

/// Why records could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// Two records have the same id.
    #[error("two records have the id {0}")]
    DuplicateId(u64),
    /// A review decision names a record that is not in the run.
    #[error("a review decision names the record {0}, which is not in the run")]
    UnknownId(u64),
    /// The configuration is inconsistent.
    #[error("invalid matching configuration: {0}")]
    InvalidConfig(&'static str),
}

/// Normalises, blocks and interns one text column.
struct Column<'a> {
    attribute: Attribute,
    cache: HashMap<&'a str, u32>,
    blocked: HashMap<String, usize>,
}

impl<'a> Column<'a> {
    fn new(attribute: Attribute) -> Self {
        Self {
            attribute,
            cache: HashMap::new(),
            blocked: HashMap::new(),
        }
    }

    fn id(&mut self, raw: Option<&'a str>, values: &mut Values, blocklist: &Blocklist) -> u32 {
        let Some(raw) = raw else { return NONE };
        if let Some(&id) = self.cache.get(raw) {
            if id == NONE {
                self.count_blocked(raw);
            }
            return id;
        }
        let id = match self.attribute.normalise(raw) {
            Some(n) if !blocklist.blocks(self.attribute, raw, &n) => values.intern(n),
            _ => {
                self.count_blocked(raw);
                NONE
            }
        };
        self.cache.insert(raw, id);
        id
    }

    fn count_blocked(&mut self, raw: &str) {
        let shown = self.attribute.normalise(raw).unwrap_or_else(|| raw.trim().to_owned());
        *self.blocked.entry(shown).or_default() += 1;
    }

    fn into_report(self, out: &mut Vec<ValueCount>) {
        let attribute = self.attribute;
        out.extend(self.blocked.into_iter().map(|(value, records)| ValueCount {
            attribute,
            value,
            records,
        }));
    }
}

/// Packs a date for cheap comparison; years outside 1..4095 are not birth dates.
fn pack_date(d: Date) -> u32 {
    match u32::try_from(d.year()) {
        Ok(y) if (1..4096).contains(&y) => y << 9 | (d.month() as u32) << 5 | d.day() as u32,
        _ => 0,
    }
}

/// The (year, month, day) of a packed date.
pub(crate) fn unpack_date(packed: u32) -> (u32, u32, u32) {
    (packed >> 9, (packed >> 5) & 0xf, packed & 0x1f)
}

impl Prepared {
    /// Parses `records` for matching under `config`'s blocked values and limits.
    pub fn new(records: &[MatchRecord], config: &MatchConfig) -> Result<Self, MatchError> {
        config.check()?;
        let blocklist = Blocklist::new(&config.blocked_values);
        let n = records.len();
        let mut index = HashMap::with_capacity(n);
        for (i, r) in records.iter().enumerate() {
            if index.insert(r.id, i as u32).is_some() {
                return Err(MatchError::DuplicateId(r.id));
            }
        }

        let mut names = Values::default();
        let mut first_col = Column::new(Attribute::FirstName);
        let mut last_col = Column::new(Attribute::LastName);
        let (mut first, mut last) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for r in records {
            first.push(first_col.id(r.first_name.as_deref(), &mut names, &blocklist));
            last.push(last_col.id(r.last_name.as_deref(), &mut names, &blocklist));
        }
        let column = |attribute: Attribute, get: fn(&MatchRecord) -> Option<&str>| {
            let mut values = Values::default();
            let mut col = Column::new(attribute);
            let ids: Vec<u32> = records
                .iter()
                .map(|r| col.id(get(r), &mut values, &blocklist))
                .collect();
            (ids, values, col)
        };
        let (postcode, postcodes, postcode_col) = column(Attribute::Postcode, |r| r.postcode.as_deref());
        let (city, _, city_col) = column(Attribute::City, |r| r.city.as_deref());
        let (address, addresses, address_col) = column(Attribute::Address, |r| r.address.as_deref());
        let (mut email, emails, email_col) = column(Attribute::Email, |r| r.email.as_deref());
        let (mut phone, phones, phone_col) = column(Attribute::Phone, |r| r.phone.as_deref());
        let (user, _, user_col) = column(Attribute::UserId, |r| r.user_id.as_deref());

        let blocked_dates: HashSet<Date> = config.blocked_birth_dates.iter().copied().collect();
        let mut blocked_birth = 0;
        let birth = records
            .iter()
            .map(|r| match r.birth_date {
                Some(d) if blocked_dates.contains(&d) => {
                    blocked_birth += 1;
                    0
                }
                Some(d) => pack_date(d),
                None => 0,
            })
            .collect();

        let mut blocked = Vec::new();
        for col in [
            first_col,
            last_col,
            postcode_col,
            city_col,
            address_col,
            email_col,
            phone_col,
            user_col,
        ] {
            col.into_report(&mut blocked);
        }
        if blocked_birth > 0 {
            blocked.push(ValueCount {
                attribute: Attribute::BirthDate,
                value: "blocked placeholder dates".to_owned(),
                records: blocked_birth,
            });
        }
        blocked.sort_by(|a, b| (a.attribute, &a.value).cmp(&(b.attribute, &b.value)));

        let mut overused = Vec::new();
        let limit = config.limits.max_records_per_identifier;
        for (attribute, column, values) in [
            (Attribute::Email, &mut email, &emails),
            (Attribute::Phone, &mut phone, &phones),
        ] {
            let counts = Counts::of(column, values.len());
            let over: HashSet<u32> = (0..values.len() as u32)
                .filter(|&v| counts.by_value[v as usize] as usize > limit)
                .collect();
            for &v in &over {
                overused.push(ValueCount {
                    attribute,
                    value: values.get(v).to_owned(),
                    records: counts.by_value[v as usize] as usize,
                });
            }
            for v in column.iter_mut().filter(|v| over.contains(v)) {
                *v = NONE;
            }
        }
        overused.sort_by(|a, b| b.records.cmp(&a.records).then(a.value.cmp(&b.value)));

        let encoder = DoubleMetaphone::default();
        let mut metaphones = Values::default();
        let name_meta = (0..names.len() as u32)
            .map(|id| {
                let name = names.get(id);
                let joined: String = name.chars().filter(|c| *c != ' ').collect();
                let code = encoder.double_metaphone(&joined);
                NameMeta {
                    metaphone: (metaphones.intern(code.primary()), metaphones.intern(code.alternate())),
                    nicknames: nickname_groups(name),
                    initial: name.as_bytes()[0],
                }
            })
            .collect();

        let mut departements = Values::default();
        let departement = (0..postcodes.len() as u32)
            .map(|id| departements.intern(departement(postcodes.get(id)).to_owned()))
            .collect();

        Ok(Self {
            ids: records.iter().map(|r| r.id).collect(),
            index,
            first_counts: Counts::of(&first, names.len()),
            last_counts: Counts::of(&last, names.len()),
            postcode_counts: Counts::of(&postcode, postcodes.len()),
            address_counts: Counts::of(&address, addresses.len()),
            email_counts: Counts::of(&email, emails.len()),
            phone_counts: Counts::of(&phone, phones.len()),
            first,
            last,
            birth,
            postcode,
            city,
            address,
            email,
            phone,
            user,
            names,
            name_meta,
            metaphones,
            postcodes,
            departement,
            addresses,
            emails,
            phones,
            blocked,
            overused,
        })
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of the record at `index`.
    pub fn id(&self, index: u32) -> u64 {
        self.ids[index as usize]
    }

    /// Values that were blocked, with how many records carried them.
    pub fn blocked(&self) -> &[ValueCount] {
        &self.blocked
    }

    /// Emails and phones carried by too many records to identify a person; they were treated as
    /// missing.
    pub fn overused(&self) -> &[ValueCount] {
        &self.overused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_fold_accents_case_and_punctuation() {
        assert_eq!(normalise_name("Éléonore").as_deref(), Some("eleonore"));
        assert_eq!(normalise_name("  JEAN-Pierre ").as_deref(), Some("jean pierre"));
        assert_eq!(normalise_name("D'Angelo").as_deref(), Some("dangelo"));
        assert_eq!(normalise_name("Gaëlle"), normalise_name("gaelle"));
        assert_eq!(normalise_name(" - "), None);
    }

    #[test]
    fn places_spell_out_abbreviations() {
        assert_eq!(
            normalise_place("12, Av. Jean-Jaurès").as_deref(),
            Some("12 avenue jean jaures")
        );
        assert_eq!(normalise_place("St-Étienne"), normalise_place("saint etienne"));
    }

    #[test]
    fn phones_are_digits_in_national_form() {
        assert_eq!(normalise_phone("06 39 98 12 34").as_deref(), Some("0639981234"));
        assert_eq!(normalise_phone("+33 6 39 98 12 34").as_deref(), Some("0639981234"));
        assert_eq!(normalise_phone("0033639981234").as_deref(), Some("0639981234"));
        assert_eq!(normalise_phone("+999 123 456 789").as_deref(), Some("999123456789"));
        assert_eq!(normalise_phone("12-34"), None);
    }

    #[test]
    fn emails_are_lowercase_with_one_at() {
        assert_eq!(
            normalise_email(" Jean.Martin@Example.COM ").as_deref(),
            Some("jean.martin@example.com")
        );
        assert_eq!(normalise_email("jean.martin"), None);
        assert_eq!(normalise_email("a@b@c"), None);
    }

    #[test]
    fn postcodes_and_departements() {
        assert_eq!(normalise_postcode("75 015").as_deref(), Some("75015"));
        assert_eq!(departement("75015"), "75");
        assert_eq!(departement("97110"), "971");
        assert_eq!(normalise_postcode("-"), None);
    }

    #[test]
    fn blocked_values_are_missing_and_reported() {
        let config = MatchConfig {
            blocked_values: vec!["test@test.com".into(), "+33 1 99 00 00 00".into()],
            ..MatchConfig::default()
        };
        let record = |id, email: &str, phone: &str| MatchRecord {
            id,
            email: Some(email.into()),
            phone: Some(phone.into()),
            ..MatchRecord::default()
        };
        let records = [
            record(1, "TEST@test.com", "01 99 00 00 00"),
            record(2, "a@example.com", "000-000"),
            record(3, "b@example.com", "06 39 98 00 01"),
        ];
        let p = Prepared::new(&records, &config).unwrap();
        assert_eq!(p.email[0], NONE);
        assert_eq!(p.phone[0], NONE);
        assert_eq!(p.phone[1], NONE);
        assert_ne!(p.phone[2], NONE);
        assert!(
            p.blocked()
                .iter()
                .any(|b| b.attribute == Attribute::Phone && b.value == "0199000000")
        );
    }

    #[test]
    fn an_identifier_on_too_many_records_is_overused() {
        let config = MatchConfig {
            limits: super::super::Limits {
                max_records_per_identifier: 3,
                ..Default::default()
            },
            ..MatchConfig::default()
        };
        let records: Vec<MatchRecord> = (0..5)
            .map(|id| MatchRecord {
                id,
                phone: Some("01 99 00 12 34".into()),
                email: Some(format!("p{id}@example.com")),
                ..MatchRecord::default()
            })
            .collect();
        let p = Prepared::new(&records, &config).unwrap();
        assert!(p.phone.iter().all(|&v| v == NONE));
        assert_eq!(p.overused()[0].records, 5);
        assert!(p.email.iter().all(|&v| v != NONE));
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let records = [MatchRecord::default(), MatchRecord::default()];
        assert_eq!(
            Prepared::new(&records, &MatchConfig::default()).err(),
            Some(MatchError::DuplicateId(0))
        );
    }

    #[test]
    fn debug_shows_no_personal_data() {
        let r = MatchRecord {
            id: 7,
            last_name: Some("Quasimodo".into()),
            ..MatchRecord::default()
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("Quasimodo"));
        assert!(shown.contains("last_name"));
    }

    proptest! {
        #[test]
        fn name_normalisation_is_idempotent_ascii_and_tidy(s in "\\PC{0,30}") {
            if let Some(n) = normalise_name(&s) {
                prop_assert_eq!(normalise_name(&n), Some(n.clone()));
                prop_assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == ' '));
                prop_assert!(!n.starts_with(' ') && !n.ends_with(' ') && !n.contains("  "));
            }
        }

        #[test]
        fn place_normalisation_is_idempotent(s in "\\PC{0,40}") {
            if let Some(n) = normalise_place(&s) {
                prop_assert_eq!(normalise_place(&n), Some(n.clone()));
            }
        }

        #[test]
        fn phones_are_digits_and_idempotent(s in "[+0-9 .()-]{0,20}") {
            if let Some(n) = normalise_phone(&s) {
                prop_assert!(n.chars().all(|c| c.is_ascii_digit()));
                prop_assert!(n.len() >= 6);
                prop_assert_eq!(normalise_phone(&n), Some(n.clone()));
            }
        }

        #[test]
        fn french_phone_spellings_agree(rest in "[1-9][0-9]{8}") {
            let national = normalise_phone(&format!("0{rest}"));
            prop_assert_eq!(normalise_phone(&format!("+33{rest}")), national.clone());
            prop_assert_eq!(normalise_phone(&format!("0033 {rest}")), national);
        }

        #[test]
        fn emails_normalise_idempotently(s in "\\PC{0,30}") {
            if let Some(n) = normalise_email(&s) {
                prop_assert_eq!(normalise_email(&n), Some(n.clone()));
            }
        }
    }
}
