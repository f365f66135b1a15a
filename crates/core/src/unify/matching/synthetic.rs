//! A synthetic population with known truth, for measuring matching.
//!
//! # Design
//!
//! Accuracy can only be measured against a truth, and real customer data has none (and may not
//! be copied into tests). The generator makes people, then the records several sources would
//! hold about each of them, with the mistakes and traps those sources really produce:
//!
//! - **sources** with what each knows: tills (name, postcode, birth date, sometimes a phone),
//!   the CRM (name, address, email, phone), web accounts (email, user id, sometimes an
//!   address), customer support (name, email, phone);
//! - **errors**: one-edit typos in names, emails and street names, first and last names
//!   swapped, nicknames (Bob for Robert), accents and capitals dropped or added, birth-date
//!   typos (one component wrong, day and month swapped), street types abbreviated, missing
//!   fields;
//! - **life**: people who moved (records at the old and the new address);
//! - **traps** for precision: households sharing an address, a last name and sometimes one
//!   family email; namesakes (same first and last name in the same town, different people);
//!   common names repeated often (Martin, Bernard, Dubois, Thomas…) next to rare ones; the
//!   shop's own phone number typed in at the till for many customers; `test@test.com`.
//!
//! Everything is synthetic by construction: emails are on the domains RFC 2606 reserves
//! (`example.com`…), personal phones use the unassigned country code +999, the shop's phone is
//! in the block ARCEP reserves for fiction (01 99 00), and rare last names are made of
//! syllables. The same seed gives the same population.

use super::compare::nicknames_of;
use super::record::{MatchRecord, normalise_name};
use jiff::civil::{Date, date};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

/// The shop's own phone number, typed in at the till for customers who gave none.
pub const SHOP_PHONE: &str = "01 99 00 00 00";

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// How many people.
    pub people: usize,
    /// Mean number of records per person (at least 1).
    pub records_per_person: f64,
    /// The seed.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            people: 8_000,
            records_per_person: 2.5,
            seed: 42,
        }
    }
}

/// A generated population: records and, for each, the person it is about.
#[derive(Clone, Debug)]
pub struct Synthetic {
    /// The records; a record's id is its index.
    pub records: Vec<MatchRecord>,
    /// The person of each record, by record id.
    pub person: Vec<u32>,
    /// How many people.
    pub people: usize,
}

/// Pairwise precision and recall of clusters against the truth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairwiseScores {
    /// Pairs of records that are one person.
    pub true_pairs: u64,
    /// Pairs of records put in one cluster.
    pub predicted_pairs: u64,
    /// Pairs that are both.
    pub true_positives: u64,
    /// `true_positives / predicted_pairs`.
    pub precision: f64,
    /// `true_positives / true_pairs`.
    pub recall: f64,
    /// The harmonic mean of precision and recall.
    pub f1: f64,
}

impl PairwiseScores {
    /// Scores `clusters` (of record ids) against `truth` (the person of each record id).
    pub fn measure(clusters: &[Vec<u64>], truth: &[u32]) -> Self {
        let pairs = |n: u64| n * n.saturating_sub(1) / 2;
        let mut per_person: HashMap<u32, u64> = HashMap::new();
        for &p in truth {
            *per_person.entry(p).or_default() += 1;
        }
        let true_pairs = per_person.values().map(|&n| pairs(n)).sum();
        let mut predicted_pairs = 0;
        let mut true_positives = 0;
        for cluster in clusters {
            predicted_pairs += pairs(cluster.len() as u64);
            let mut people: HashMap<u32, u64> = HashMap::new();
            for &id in cluster {
                *people.entry(truth[id as usize]).or_default() += 1;
            }
            true_positives += people.values().map(|&n| pairs(n)).sum::<u64>();
        }
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let precision = ratio(true_positives, predicted_pairs);
        let recall = ratio(true_positives, true_pairs);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Self {
            true_pairs,
            predicted_pairs,
            true_positives,
            precision,
            recall,
            f1,
        }
    }
}

/// First names, most common first.
#[rustfmt::skip]
const FIRST_NAMES: [&str; 120] = [
    "Marie", "Jean", "Pierre", "Michel", "Nathalie", "Isabelle", "Philippe", "Catherine",
    "Nicolas", "Sophie", "Christophe", "Sylvie", "Stéphane", "Christine", "Frédéric", "Valérie",
    "Laurent", "Sandrine", "Thomas", "Céline", "David", "Julie", "Sébastien", "Camille",
    "Alexandre", "Aurélie", "Julien", "Émilie", "Patrick", "Anne", "François", "Françoise",
    "Jacques", "Monique", "Daniel", "Hélène", "Éric", "Élodie", "Olivier", "Caroline", "Antoine",
    "Léa", "Maxime", "Chloé", "Guillaume", "Manon", "Romain", "Emma", "Nathan", "Jeanne", "Lucas",
    "Louise", "Hugo", "Zoé", "Louis", "Inès", "Gabriel", "Jade", "Arthur", "Alice", "Raphaël",
    "Lina", "Paul", "Rose", "Jules", "Anna", "Adam", "Ambre", "Victor", "Suzanne", "Benjamin",
    "Noémie", "Mathieu", "Gaëlle", "Jérôme", "Anaïs", "Loïc", "Margaux", "Benoît", "Éléonore",
    "Robert", "Elisabeth", "Dominique", "Patricia", "Henri", "Victoria", "Charles", "Valentin",
    "Edouard", "Emmanuel", "Emmanuelle", "Joseph", "Jean-Baptiste", "Alexandra", "Stéphanie",
    "Sébastienne", "Yasmine", "Karim", "Mohamed", "Fatima", "Mamadou", "Aïssata", "Nguyen", "Linh",
    "Giulia", "Marco", "Ana", "João", "Katarzyna", "Piotr", "Ioana", "Andrei", "Sarah", "Yanis",
    "Rayan", "Léon", "Timothée", "Apolline", "Bérénice", "Quentin",
];

/// Last names common in France, most common first: they make term frequencies matter.
#[rustfmt::skip]
const COMMON_LAST_NAMES: [&str; 60] = [
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
    "Laurent", "Simon", "Michel", "Lefebvre", "Leroy", "Roux", "David", "Bertrand", "Morel",
    "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent",
    "Muller", "Lefèvre", "Faure", "André", "Mercier", "Blanc", "Guérin", "Boyer", "Garnier",
    "Chevalier", "François", "Legrand", "Gauthier", "Garcia", "Perrin", "Robin", "Clément",
    "Morin", "Nicolas", "Henry", "Roussel", "Mathieu", "Gautier", "Masson", "Marchand", "Duval",
    "Denis", "Dumont", "Marie", "Lemaire", "Noël", "Meyer", "Dufour", "Meunier",
];

/// Last names of other origins, each less common.
#[rustfmt::skip]
const OTHER_LAST_NAMES: [&str; 30] = [
    "Nguyen", "Dos Santos", "Benali", "Haddad", "Kowalski", "Rossi", "Smith", "Schmidt", "Diallo",
    "Traoré", "Ferreira", "Lopez", "Martinez", "Fernandes", "Cohen", "Da Silva", "Benamar",
    "Popescu", "Yilmaz", "Tran", "Le Goff", "Le Gall", "N'Diaye", "O'Brien", "Van den Berg",
    "Bianchi", "Pereira", "Sánchez", "Müller", "Østergaard",
];

/// Syllables and endings of the made-up rare last names and small towns.
#[rustfmt::skip]
const SYLLABLES: [&str; 36] = [
    "ber", "car", "dou", "fon", "gal", "jar", "lam", "mar", "nou", "pel", "ques", "ro", "sau",
    "tes", "val", "vi", "bou", "che", "du", "gri", "la", "mo", "pi", "re", "ta", "ver", "zi",
    "qua", "si", "na", "lo", "tru", "bra", "fla", "gue", "cla",
];
#[rustfmt::skip]
const ENDINGS: [&str; 13] = [
    "ier", "eau", "ac", "ot", "and", "in", "el", "ard", "ieux", "ou", "as", "et", "on",
];

#[rustfmt::skip]
const STREETS: [&str; 40] = [
    "Victor Hugo", "Jean Jaurès", "de la République", "Pasteur", "du Général de Gaulle",
    "de la Gare", "des Écoles", "de l'Église", "du Moulin", "des Lilas", "Gambetta", "Voltaire",
    "Émile Zola", "de la Mairie", "Nationale", "de Verdun", "Jean Moulin", "des Tilleuls",
    "du Château", "Carnot", "Foch", "de Paris", "du Stade", "des Acacias", "de la Paix",
    "Anatole France", "Marcel Pagnol", "Jules Ferry", "de la Liberté", "des Peupliers",
    "du Marché", "Saint-Martin", "des Roses", "du Port", "de la Fontaine", "Georges Clemenceau",
    "des Vignes", "du Lavoir", "Sainte-Anne", "Aristide Briand",
];
const STREET_TYPES: [(&str, &str); 6] = [
    ("rue", "r."),
    ("avenue", "av."),
    ("boulevard", "bd"),
    ("place", "pl."),
    ("chemin", "ch."),
    ("allée", "all."),
];

/// Big towns: name, first postcode, number of postcodes (arrondissements), weight.
const CITIES: [(&str, u32, u32, f64); 24] = [
    ("Paris", 75001, 20, 100.0),
    ("Marseille", 13001, 16, 55.0),
    ("Lyon", 69001, 9, 55.0),
    ("Toulouse", 31000, 1, 480.0),
    ("Nice", 6000, 1, 340.0),
    ("Nantes", 44000, 1, 310.0),
    ("Montpellier", 34000, 1, 290.0),
    ("Strasbourg", 67000, 1, 280.0),
    ("Bordeaux", 33000, 1, 260.0),
    ("Lille", 59000, 1, 235.0),
    ("Rennes", 35000, 1, 220.0),
    ("Reims", 51100, 1, 180.0),
    ("Saint-Étienne", 42000, 1, 173.0),
    ("Toulon", 83000, 1, 170.0),
    ("Le Havre", 76600, 1, 167.0),
    ("Grenoble", 38000, 1, 157.0),
    ("Dijon", 21000, 1, 156.0),
    ("Angers", 49000, 1, 155.0),
    ("Nîmes", 30000, 1, 148.0),
    ("Villeurbanne", 69100, 1, 150.0),
    ("Clermont-Ferrand", 63000, 1, 147.0),
    ("Aix-en-Provence", 13090, 1, 145.0),
    ("Le Mans", 72000, 1, 143.0),
    ("Brest", 29200, 1, 139.0),
];

const DOMAINS: [&str; 5] = [
    "example.com",
    "example.net",
    "example.org",
    "mail.example",
    "courriel.example",
];

struct Town {
    name: String,
    postcode: String,
}

#[derive(Clone)]
struct Home {
    number: u32,
    street_type: usize,
    street: usize,
    town: usize,
}

#[derive(Clone)]
struct Person {
    first: String,
    last: String,
    birth: Date,
    homes: Vec<Home>,
    /// Most people have one email, some two (work and personal), some none.
    emails: Vec<String>,
    /// Likewise for phones (a mobile, sometimes a landline).
    phones: Vec<String>,
    user_id: Option<String>,
}

/// A value drawn with weights ∝ 1/(rank+1)^s.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        Self::weighted((0..n).map(|i| 1.0 / ((i + 1) as f64).powf(s)))
    }

    fn weighted(weights: impl Iterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let cumulative = weights
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Self { cumulative }
    }

    fn draw(&self, rng: &mut StdRng) -> usize {
        let x = rng.random::<f64>() * self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.cumulative.len() - 1)
    }
}

struct World {
    towns: Vec<Town>,
    town_weights: Zipf,
    first_names: Zipf,
    common_last: Zipf,
    used_emails: HashSet<String>,
}

impl World {
    fn new(people: usize, rng: &mut StdRng) -> Self {
        let mut towns = Vec::new();
        let mut weights = Vec::new();
        let mut postcodes = HashSet::new();
        for (name, first, count, weight) in CITIES {
            for k in 0..count {
                let postcode = format!("{:05}", first + k);
                postcodes.insert(postcode.clone());
                towns.push(Town {
                    name: name.to_owned(),
                    postcode,
                });
                weights.push(weight);
            }
        }
        let big: f64 = weights.iter().sum();
        // Small towns hold three quarters of the people; there are enough of them that each
        // stays small, as in France.
        let small = people / 40 + 100;
        let mut small_weights = Vec::with_capacity(small);
        let big_count = towns.len();
        while towns.len() < big_count + small {
            let departement = loop {
                let d = rng.random_range(1..96);
                if d != 20 {
                    break d;
                }
            };
            let postcode = format!("{departement:02}{:03}", rng.random_range(0..1000));
            if !postcodes.insert(postcode.clone()) {
                continue;
            }
            let mut name = String::new();
            if rng.random_bool(0.15) {
                name.push_str("Saint-");
            }
            let syllables = rng.random_range(2..4);
            for _ in 0..syllables {
                name.push_str(SYLLABLES.choose(rng).expect("syllables"));
            }
            name.push_str(ENDINGS.choose(rng).expect("endings"));
            if rng.random_bool(0.1) {
                name.push_str(["-sur-Loire", "-les-Bains", "-en-Bresse"].choose(rng).expect("x"));
            }
            towns.push(Town {
                name: capitalise(&name),
                postcode,
            });
            small_weights.push(rng.random_range(1.0f64..30.0).powi(2));
        }
        let small_total: f64 = small_weights.iter().sum();
        weights.extend(small_weights.iter().map(|w| w * 3.0 * big / small_total));
        Self {
            towns,
            town_weights: Zipf::weighted(weights.into_iter()),
            first_names: Zipf::new(FIRST_NAMES.len(), 0.8),
            common_last: Zipf::new(COMMON_LAST_NAMES.len(), 0.8),
            used_emails: HashSet::new(),
        }
    }

    fn first_name(&self, rng: &mut StdRng) -> String {
        FIRST_NAMES[self.first_names.draw(rng)].to_owned()
    }

    fn last_name(&self, rng: &mut StdRng) -> String {
        let x: f64 = rng.random();
        if x < 0.35 {
            COMMON_LAST_NAMES[self.common_last.draw(rng)].to_owned()
        } else if x < 0.45 {
            OTHER_LAST_NAMES.choose(rng).expect("names").to_string()
        } else {
            let mut name = String::new();
            for _ in 0..rng.random_range(2..4) {
                name.push_str(SYLLABLES.choose(rng).expect("syllables"));
            }
            name.push_str(ENDINGS.choose(rng).expect("endings"));
            capitalise(&name)
        }
    }

    fn home(&self, rng: &mut StdRng) -> Home {
        Home {
            number: rng.random_range(1..150),
            street_type: rng.random_range(0..STREET_TYPES.len()),
            street: rng.random_range(0..STREETS.len()),
            town: self.town_weights.draw(rng),
        }
    }

    fn email(&mut self, first: &str, last: &str, rng: &mut StdRng) -> String {
        let f = normalise_name(first).unwrap_or_default().replace(' ', "");
        let l = normalise_name(last).unwrap_or_default().replace(' ', "");
        let domain = DOMAINS.choose(rng).expect("domains");
        let mut local = match rng.random_range(0..4) {
            0 => format!("{f}.{l}"),
            1 => format!("{}{l}", &f[..1.min(f.len())]),
            2 => format!("{l}.{f}"),
            _ => format!("{f}{l}{}", rng.random_range(1..100)),
        };
        while !self.used_emails.insert(format!("{local}@{domain}")) {
            local.push(char::from(b'0' + rng.random_range(0..10)));
        }
        format!("{local}@{domain}")
    }

    fn person(&mut self, index: usize, rng: &mut StdRng) -> Person {
        let first = self.first_name(rng);
        let last = self.last_name(rng);
        let mut homes = vec![self.home(rng)];
        if rng.random_bool(0.12) {
            homes.push(self.home(rng));
        }
        let mut emails = Vec::new();
        if rng.random_bool(0.9) {
            emails.push(self.email(&first, &last, rng));
            if rng.random_bool(0.2) {
                emails.push(self.email(&first, &last, rng));
            }
        }
        let mut phones = Vec::new();
        if rng.random_bool(0.75) {
            phones.push(personal_phone(2 * index));
            if rng.random_bool(0.15) {
                phones.push(personal_phone(2 * index + 1));
            }
        }
        Person {
            birth: birth_date(rng, 1940, 2006),
            homes,
            emails,
            phones,
            user_id: rng.random_bool(0.45).then(|| format!("u{index:07}")),
            first,
            last,
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn birth_date(rng: &mut StdRng, from: i16, to: i16) -> Date {
    let year = rng.random_range(from..=to);
    let month = rng.random_range(1..=12);
    let day = rng.random_range(1..=28);
    date(year, month, day)
}

/// The `k`th unique number under the unassigned country code +999: 7919 is prime to 10⁹, so
/// the map is one to one.
fn personal_phone(k: usize) -> String {
    let n = (k as u64 * 7919 + 100_000_000) % 1_000_000_000;
    format!("{n:09}")
}

/// One edit at a random place (rarely the first letter, as in real typing errors):
/// substitution, deletion, insertion or transposition.
fn typo(s: &str, rng: &mut StdRng) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.len() < 3 {
        return s.to_owned();
    }
    let at = if rng.random_bool(0.1) {
        0
    } else {
        rng.random_range(1..chars.len())
    };
    let letter = char::from(b'a' + rng.random_range(0..26));
    match rng.random_range(0..4) {
        0 => chars[at] = letter,
        1 => {
            chars.remove(at);
        }
        2 => chars.insert(at, letter),
        _ => {
            let at = at.min(chars.len() - 2);
            chars.swap(at, at + 1);
        }
    }
    chars.into_iter().collect()
}

/// A name as a source writes it: sometimes without accents, in capitals or lowercase.
fn styled(name: &str, rng: &mut StdRng) -> String {
    let name = if rng.random_bool(0.3) {
        deunicode::deunicode(name)
    } else {
        name.to_owned()
    };
    match rng.random_range(0..10) {
        0..=2 => name.to_uppercase(),
        3 => name.to_lowercase(),
        _ => name,
    }
}

/// A birth date with a typing error: one component wrong, or day and month swapped.
fn mistyped_date(d: Date, rng: &mut StdRng) -> Date {
    let (y, m, day) = (d.year(), d.month(), d.day());
    if day <= 12 && day != m && rng.random_bool(0.4) {
        return date(y, day, m);
    }
    match rng.random_range(0..3) {
        0 => date(y, m, (day + rng.random_range(1..4) - 1) % 28 + 1),
        1 => date(y, m % 12 + 1, day),
        _ => date(y + [-10, -1, 1, 10].choose(rng).expect("deltas"), m, day),
    }
}

#[derive(Clone, Copy)]
enum Source {
    Till,
    Crm,
    Web,
    Support,
}

fn record(world: &World, person: &Person, rng: &mut StdRng) -> MatchRecord {
    let source = match rng.random_range(0..100) {
        0..35 => Source::Till,
        35..60 => Source::Crm,
        60..85 => Source::Web,
        _ => Source::Support,
    };
    // What each source asks for, as probabilities: first name, last name, birth date,
    // address line, postcode, city, email, phone.
    let [first, last, birth, address, postcode, city, email, phone] = match source {
        Source::Till => [0.97, 1.0, 0.95, 0.0, 1.0, 0.2, 0.4, 0.5],
        Source::Crm => [1.0, 1.0, 0.85, 0.95, 0.98, 0.95, 0.9, 0.7],
        Source::Web => [0.97, 0.97, 0.8, 0.85, 0.85, 0.85, 1.0, 0.5],
        Source::Support => [0.95, 0.97, 0.4, 0.0, 0.8, 0.2, 0.95, 0.8],
    };
    let mut r = MatchRecord::default();
    let mut first_name = person.first.clone();
    if rng.random_bool(0.08) {
        let nicknames = nicknames_of(&normalise_name(&first_name).unwrap_or_default());
        if let Some(n) = nicknames.choose(rng) {
            first_name = capitalise(n);
        }
    }
    if rng.random_bool(0.04) {
        first_name = typo(&first_name, rng);
    }
    let mut last_name = person.last.clone();
    if rng.random_bool(0.04) {
        last_name = typo(&last_name, rng);
    }
    if rng.random_bool(0.03) {
        std::mem::swap(&mut first_name, &mut last_name);
    }
    if rng.random_bool(first) {
        r.first_name = Some(styled(&first_name, rng));
    }
    if rng.random_bool(last) {
        r.last_name = Some(styled(&last_name, rng));
    }
    if rng.random_bool(birth) {
        r.birth_date = Some(if rng.random_bool(0.03) {
            mistyped_date(person.birth, rng)
        } else {
            person.birth
        });
    }
    let home = person.homes.choose(rng).expect("a home");
    let town = &world.towns[home.town];
    if rng.random_bool(address) {
        let (full, short) = STREET_TYPES[home.street_type];
        let street_type = if rng.random_bool(0.3) { short } else { full };
        let mut street = STREETS[home.street].to_owned();
        if rng.random_bool(0.05) {
            street = typo(&street, rng);
        }
        r.address = Some(styled(&format!("{} {street_type} {street}", home.number), rng));
    }
    if rng.random_bool(postcode) {
        r.postcode = Some(town.postcode.clone());
    }
    if rng.random_bool(city) {
        r.city = Some(styled(&town.name, rng));
    }
    if rng.random_bool(email) {
        r.email = match (person.emails.choose(rng), source) {
            (_, Source::Till) if rng.random_bool(0.15) => Some("test@test.com".to_owned()),
            (Some(e), _) if rng.random_bool(0.03) => Some(typo(e, rng)),
            (Some(e), _) if rng.random_bool(0.1) => Some(e.to_uppercase()),
            (e, _) => e.cloned(),
        };
    }
    if rng.random_bool(phone) {
        let shop = matches!(source, Source::Till) && rng.random_bool(0.1);
        r.phone = match person.phones.choose(rng) {
            _ if shop => Some(SHOP_PHONE.to_owned()),
            Some(n) => Some(match rng.random_range(0..4) {
                0 => format!("+999 {} {} {}", &n[..3], &n[3..6], &n[6..]),
                1 => format!("00999{n}"),
                2 => format!("+999{n}"),
                _ => format!("+999 {}-{}-{}", &n[..3], &n[3..6], &n[6..]),
            }),
            None => None,
        };
    }
    if matches!(source, Source::Web) {
        r.user_id.clone_from(&person.user_id);
    }
    r
}

/// Generates a population under `config`.
pub fn generate(config: &SyntheticConfig) -> Synthetic {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut world = World::new(config.people, &mut rng);
    let mut people: Vec<Person> = Vec::with_capacity(config.people);
    while people.len() < config.people {
        let index = people.len();
        let x: f64 = rng.random();
        if x < 0.03 && !people.is_empty() {
            // A namesake: a stranger with the same first and last name as someone in the same
            // town. Namesakes share common names (two Marie Martin in Lyon), which is where
            // term frequencies must keep them apart.
            let common: Vec<&Person> = people
                .iter()
                .rev()
                .take(200)
                .filter(|p| COMMON_LAST_NAMES.contains(&p.last.as_str()))
                .collect();
            let Some(&other) = common.choose(&mut rng) else {
                continue;
            };
            let other = other.clone();
            let mut p = world.person(index, &mut rng);
            for e in &mut p.emails {
                *e = world.email(&other.first, &other.last, &mut rng);
            }
            p.first = other.first;
            p.last = other.last;
            p.homes[0].town = other.homes[0].town;
            people.push(p);
        } else if x < 0.15 {
            // A household: one home, usually one last name, sometimes one family email.
            let size = rng.random_range(2..5).min(config.people - index);
            let head = world.person(index, &mut rng);
            let family_email = rng.random_bool(0.35).then(|| head.emails.first().cloned()).flatten();
            let mut first_names = HashSet::from([head.first.clone()]);
            people.push(head.clone());
            for k in 1..size {
                let mut p = world.person(index + k, &mut rng);
                while !first_names.insert(p.first.clone()) {
                    p.first = world.first_name(&mut rng);
                }
                if rng.random_bool(0.85) {
                    p.last.clone_from(&head.last);
                }
                p.homes.clone_from(&head.homes);
                if k >= 2 {
                    let from = (head.birth.year() + 20).min(2008);
                    p.birth = birth_date(&mut rng, from, 2010);
                }
                if let Some(e) = &family_email {
                    p.emails = vec![e.clone()];
                }
                people.push(p);
            }
        } else {
            let p = world.person(index, &mut rng);
            people.push(p);
        }
    }

    let mean_extra = (config.records_per_person - 1.0).max(0.0);
    let mut records = Vec::new();
    let mut person = Vec::new();
    for (i, p) in people.iter().enumerate() {
        // 1 + binomial(4, mean_extra / 4) records: most people have two to four.
        let count = 1 + (0..4).filter(|_| rng.random_bool((mean_extra / 4.0).min(1.0))).count();
        for _ in 0..count {
            records.push(record(&world, p, &mut rng));
            person.push(i as u32);
        }
    }
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.shuffle(&mut rng);
    let mut shuffled_records = Vec::with_capacity(records.len());
    let mut shuffled_person = Vec::with_capacity(records.len());
    for (id, &i) in order.iter().enumerate() {
        let mut r = std::mem::take(&mut records[i]);
        r.id = id as u64;
        shuffled_records.push(r);
        shuffled_person.push(person[i]);
    }
    Synthetic {
        records: shuffled_records,
        person: shuffled_person,
        people: people.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_population() {
        let config = SyntheticConfig {
            people: 300,
            ..SyntheticConfig::default()
        };
        let (a, b) = (generate(&config), generate(&config));
        assert_eq!(a.records, b.records);
        assert_eq!(a.person, b.person);
        assert_eq!(a.people, 300);
        let mean = a.records.len() as f64 / 300.0;
        assert!((2.0..3.0).contains(&mean), "{mean}");
    }

    #[test]
    fn the_traps_are_there() {
        let s = generate(&SyntheticConfig {
            people: 3000,
            ..SyntheticConfig::default()
        });
        let shop = s
            .records
            .iter()
            .filter(|r| r.phone.as_deref() == Some(SHOP_PHONE))
            .count();
        assert!(shop > 30, "{shop}");
        // An email shared by records of different people (a family email).
        let mut owners: HashMap<String, HashSet<u32>> = HashMap::new();
        for (r, &p) in s.records.iter().zip(&s.person) {
            if let Some(e) = &r.email {
                owners.entry(e.to_lowercase()).or_default().insert(p);
            }
        }
        assert!(
            owners
                .iter()
                .any(|(e, people)| e != "test@test.com" && people.len() > 1)
        );
        // Namesakes: two people with the same first and last name in one postcode.
        let mut names: HashMap<(String, String, String), HashSet<u32>> = HashMap::new();
        for (r, &p) in s.records.iter().zip(&s.person) {
            if let (Some(f), Some(l), Some(pc)) = (&r.first_name, &r.last_name, &r.postcode) {
                let key = (
                    normalise_name(f).unwrap_or_default(),
                    normalise_name(l).unwrap_or_default(),
                    pc.clone(),
                );
                names.entry(key).or_default().insert(p);
            }
        }
        assert!(names.values().any(|people| people.len() > 1));
    }

    #[test]
    fn pairwise_scores() {
        // Truth: records 0,1,2 are one person, 3 and 4 another.
        let truth = [0, 0, 0, 1, 1];
        let perfect = PairwiseScores::measure(&[vec![0, 1, 2], vec![3, 4]], &truth);
        assert_eq!((perfect.precision, perfect.recall, perfect.f1), (1.0, 1.0, 1.0));
        let merged = PairwiseScores::measure(&[vec![0, 1, 2, 3, 4]], &truth);
        assert_eq!(merged.true_positives, 4);
        assert_eq!(merged.predicted_pairs, 10);
        assert!((merged.precision - 0.4).abs() < 1e-9);
        assert_eq!(merged.recall, 1.0);
        let split = PairwiseScores::measure(&[vec![0, 1]], &truth);
        assert!((split.recall - 0.25).abs() < 1e-9);
    }
}
