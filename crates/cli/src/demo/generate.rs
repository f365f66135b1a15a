//! Demo data: eighteen months of the customers of "Vinyles & Cie", a French online music shop
//! with two record stores, as the messages its sources would have sent.
//!
//! # Design
//!
//! The founding document tells of a music shop that gets to know its customers along their
//! journey: discovery (site visits, newsletter, contests, a taste questionnaire), purchase
//! (account, checkout, store tills) and post-purchase (delivery, customer service, satisfaction
//! survey, repurchase). The demo has to show every stage of Confiance at work on that story, so
//! the generator walks each synthetic customer through the journey instead of drawing
//! independent random events: a visit comes before the search, the account before the order,
//! the delivery after it, and most visitors never buy.
//!
//! - **Catalog-conformant.** Only the event, property and trait names `catalog/default.toml`
//!   declares are used, with their declared types, so collection drops nothing. A unit test
//!   normalises every message to prove it.
//! - **Synthetic by construction.** Names are drawn from lists; e-mail addresses are on the
//!   `example.*` domains reserved by RFC 2606; phone numbers are in the block ARCEP reserves for
//!   fiction (`06 39 98 xx xx`); IP addresses are in the documentation ranges of RFC 5737; the
//!   artists and albums are invented. Nothing can reach a real person if the demo's channels
//!   are ever wired to real providers.
//! - **Identities as each source knows them.** The site knows a cookie id (`anonymousId`) until
//!   an account exists and a `userId` after. The tills have no access to web accounts: they
//!   know a loyalty card, sent as the `anonymousId`, with the card and e-mail in
//!   `context.traits`. Linking all of it into one person is identity resolution's job, and what
//!   the demo is there to show.
//! - **Consent as the site sends it.** Every web message carries the visitor's cookie-banner
//!   choice in `context.consent.categoryPreferences`, as a Segment consent manager does, and a
//!   quarter of visitors refuse, so the demo shows what consent enforcement keeps and drops.
//! - **Deterministic, one customer at a time.** Each customer has a random generator seeded
//!   from the seed and the customer's index, so a customer is the same whatever the count asked
//!   for: a 500-customer demo is the beginning of a 10,000-customer one.
//! - **Relative to `now`.** Journeys start within the last 18 months. What would happen after
//!   `now` has not happened yet, so journeys in progress stop there. Local times follow Paris:
//!   evening peaks on the site, opening hours in the stores, office hours at customer service.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday, date};
use jiff::tz::TimeZone;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// One message of the demo, with the source that sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoMessage {
    /// The catalog source that sends it: `web`, `backend`, `forms`, `accounts`, `tills` or
    /// `helpdesk`.
    pub source: &'static str,
    /// The Segment-shaped message.
    pub message: Value,
}

/// Generates the journeys of `customers` synthetic customers of Vinyles & Cie up to `now`, as
/// messages sorted by timestamp.
///
/// Deterministic for a given seed.
pub fn generate(customers: usize, seed: u64, now: jiff::Timestamp) -> Vec<DemoMessage> {
    let calendar = Calendar::new(now);
    // Customers are independent, so they are shared out between threads: the demo starts
    // sooner, and the result is the same, the slices being put back in customer order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let per_thread = customers.div_ceil(threads).max(1);
    let slices: Vec<Vec<Draft>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..customers)
            .step_by(per_thread)
            .map(|first| {
                let calendar = &calendar;
                let last = (first + per_thread).min(customers);
                scope.spawn(move || {
                    let mut drafts = Vec::with_capacity((last - first) * 20);
                    for index in first..last {
                        let mut rng = StdRng::seed_from_u64(mix(seed ^ mix(index as u64)));
                        let person = Person::new(index, calendar, &mut rng);
                        Journey::new(person, calendar, rng, &mut drafts).run();
                    }
                    drafts
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("generating a customer does not panic"))
            .collect()
    });
    let mut drafts = Vec::with_capacity(slices.iter().map(Vec::len).sum());
    for slice in slices {
        drafts.extend(slice);
    }
    // Stable, so messages of one customer at the same millisecond keep their causal order.
    drafts.sort_by_key(|d| d.at);
    drafts.into_iter().enumerate().map(|(n, d)| d.finish(n)).collect()
}

/// SplitMix64's finaliser: neighbouring indices give unrelated seeds.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A message before it is numbered: ids are given in timestamp order, once all are sorted.
struct Draft {
    at: i64,
    source: &'static str,
    body: Map<String, Value>,
}

impl Draft {
    fn finish(mut self, n: usize) -> DemoMessage {
        let timestamp = Timestamp::from_millisecond(self.at).expect("demo instants lie within 18 months before `now`");
        self.body.insert("messageId".into(), format!("demo-{n}").into());
        self.body.insert("timestamp".into(), timestamp.to_string().into());
        DemoMessage {
            source: self.source,
            message: Value::Object(self.body),
        }
    }
}

// ---- time -------------------------------------------------------------------------------------

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// How far back journeys start: eighteen months.
const HISTORY_DAYS: i64 = 548;

/// Days counted from the first day of the history, with Paris local times.
struct Calendar {
    now_ms: i64,
    /// UTC midnight of day 0.
    start_ms: i64,
    /// The index of today.
    today: i64,
    /// The date and Paris UTC offset of each day up to tomorrow.
    days: Vec<(Date, i64)>,
}

impl Calendar {
    fn new(now: Timestamp) -> Self {
        let now_ms = now.as_millisecond();
        let start_ms = now_ms.div_euclid(DAY_MS) * DAY_MS - HISTORY_DAYS * DAY_MS;
        let mut day = Timestamp::from_millisecond(start_ms)
            .expect("18 months before a timestamp is a timestamp")
            .to_zoned(TimeZone::UTC)
            .date();
        let mut days = Vec::with_capacity(HISTORY_DAYS as usize + 2);
        for _ in 0..HISTORY_DAYS + 2 {
            days.push((day, paris_offset_ms(day)));
            day = day.tomorrow().unwrap_or(day);
        }
        Calendar {
            now_ms,
            start_ms,
            today: HISTORY_DAYS,
            days,
        }
    }

    /// Days past tomorrow are only ever used for messages after `now`, which are not kept, so
    /// they borrow tomorrow's date.
    fn day(&self, day: i64) -> (Date, i64) {
        self.days[day.clamp(0, self.days.len() as i64 - 1) as usize]
    }

    fn date(&self, day: i64) -> Date {
        self.day(day).0
    }

    /// The instant of a Paris local time, in minutes after midnight, on a day.
    fn at(&self, day: i64, minute: i64) -> i64 {
        self.start_ms + day * DAY_MS + minute * MINUTE_MS - self.day(day).1
    }

    /// The (Paris) day of an instant.
    fn day_of(&self, at: i64) -> i64 {
        let utc_day = (at - self.start_ms).div_euclid(DAY_MS);
        (at + self.day(utc_day).1 - self.start_ms).div_euclid(DAY_MS)
    }

    fn date_of(&self, at: i64) -> Date {
        self.date(self.day_of(at))
    }
}

/// Paris is two hours ahead of UTC from the last Sunday of March to the last Sunday of October,
/// one hour otherwise. The rule is applied here rather than read from the system's time-zone
/// database so that the generator is pure and gives the same output on every machine; the hour
/// of the change does not matter for demo data.
fn paris_offset_ms(day: Date) -> i64 {
    let last_sunday = |month| {
        date(day.year(), month, 1)
            .nth_weekday_of_month(-1, Weekday::Sunday)
            .ok()
    };
    match (last_sunday(3), last_sunday(10)) {
        (Some(start), Some(end)) if start <= day && day < end => 2 * HOUR_MS,
        _ => HOUR_MS,
    }
}

/// When people browse the site, by Paris hour: lunch break and evenings.
const WEB_HOURS: [u32; 24] = [
    3, 2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 8, 11, 10, 8, 8, 8, 9, 11, 14, 16, 15, 10, 5,
];

// ---- the shop ---------------------------------------------------------------------------------

const SITE: &str = "https://www.vinyles-et-cie.example";

/// The two record stores: name as the tills write it, and the code of their loyalty cards.
const STORES: [(&str, &str); 2] = [("Paris Bastille", "PAR"), ("Lyon Croix-Rousse", "LYO")];

struct Format {
    name: &'static str,
    code: &'static str,
    /// Prices in cents; an album's price is one of them.
    prices: &'static [i64],
    /// Whether it is shipped (a download is not).
    shipped: bool,
}

/// The index of vinyl in [`FORMATS`].
const VINYL: usize = 0;

const FORMATS: [Format; 3] = [
    Format {
        name: "vinyle",
        code: "vin",
        prices: &[2299, 2499, 2799, 2999, 3499],
        shipped: true,
    },
    Format {
        name: "CD",
        code: "cd",
        prices: &[1299, 1499, 1699],
        shipped: true,
    },
    Format {
        name: "numérique",
        code: "num",
        prices: &[899, 999, 1099],
        shipped: false,
    },
];

struct Style {
    name: &'static str,
    /// How many customers prefer it, relatively.
    weight: u32,
    artists: [Artist; 4],
}

/// An invented artist and two invented albums.
struct Artist {
    name: &'static str,
    albums: [&'static str; 2],
}

const fn artist(name: &'static str, first: &'static str, second: &'static str) -> Artist {
    Artist {
        name,
        albums: [first, second],
    }
}

static STYLES: [Style; 10] = [
    Style {
        name: "rock",
        weight: 20,
        artists: [
            artist("Les Ondes Cobalt", "Béton tiède", "Tard dans la nuit"),
            artist("Marguerite Sauvage", "Électricité statique", "Les Chiens du port"),
            artist("The Velvet Hérissons", "Fuzz provençal", "Ligne 13"),
            artist("Calypso Ferraille", "Rouille", "Moteur deux temps"),
        ],
    },
    Style {
        name: "jazz",
        weight: 10,
        artists: [
            artist("Trio Mirabelle", "Pluie sur Belleville", "Contrebasse & Cie"),
            artist("Ernestine Lavoie Quartet", "Minuit au caveau", "Blue Saint-Germain"),
            artist("Octave Dumoulin", "Swing mécanique", "Les Heures creuses"),
            artist("Big Band du Canal", "Écluses", "Péniche bleue"),
        ],
    },
    Style {
        name: "électro",
        weight: 12,
        artists: [
            artist("Modulaire 404", "Signal perdu", "Nuit binaire"),
            artist("Aube Synthétique", "Fréquences", "Périphérique Est"),
            artist("Pixel Gazelle", "Stroboscope", "Hyperlien"),
            artist("Ondine & les Oscillateurs", "Filtre passe-bas", "Chambre d'écho"),
        ],
    },
    Style {
        name: "hip-hop",
        weight: 14,
        artists: [
            artist("MC Carambole", "Bitume doré", "Tickets de métro"),
            artist("Les Frères Zénith", "Quartier nord", "Dernier RER"),
            artist("Lyra Kassé", "Ciel de béton", "Sans filtre"),
            artist("DJ Pastèque", "Samples & Cie", "Boucles douces"),
        ],
    },
    Style {
        name: "classique",
        weight: 7,
        artists: [
            artist("Quatuor Héliotrope", "Quatuors tardifs", "Ravel, Debussy"),
            artist("Ensemble Vent d'Ouest", "Les Saisons", "Musique de chambre"),
            artist("Hélène Vasseur", "Nocturnes", "Gymnopédies"),
            artist("Orchestre des Tilleuls", "Symphonie n° 5", "Ouvertures"),
        ],
    },
    Style {
        name: "chanson française",
        weight: 12,
        artists: [
            artist("Jeanne Pichet", "Rue des Martyrs", "Les Jours ouvrables"),
            artist("Baptiste Lanterne", "Petites Annonces", "Café serré"),
            artist("Les Sœurs Marmelade", "Confitures", "Bal du samedi"),
            artist("Rémi Ferrand", "Quai de Saône", "L'Accordéon rouge"),
        ],
    },
    Style {
        name: "metal",
        weight: 7,
        artists: [
            artist("Granit Noir", "Forge", "Avalanche de plomb"),
            artist("Abysse Vorace", "Profondeurs", "Marée sombre"),
            artist("Les Loups de Brocéliande", "Sortilèges", "Menhirs"),
            artist("Fer Blanc", "Riffs de fonderie", "Volcan"),
        ],
    },
    Style {
        name: "soul",
        weight: 6,
        artists: [
            artist("Gloria Mancelle", "Velours", "Cœur en stéréo"),
            artist("The Sunday Bretelles", "Groove du dimanche", "Sept pouces"),
            artist("Isaac Delorme", "Chaleur humaine", "Slow Motion"),
            artist("Les Cuivres Dorés", "Fanfare soul", "Or et laiton"),
        ],
    },
    Style {
        name: "reggae",
        weight: 4,
        artists: [
            artist("Roots Camembert", "Dub de Normandie", "Skank fermier"),
            artist("Sound System Garonne", "Basses fréquences", "Riddim du Sud"),
            artist("Nina Soleil", "Lumière", "Île intérieure"),
            artist("Les Dubonautes", "Écho planétaire", "Version longue"),
        ],
    },
    Style {
        name: "pop",
        weight: 8,
        artists: [
            artist("Clémence Opale", "Paillettes", "Néon rose"),
            artist("Les Parapluies Jaunes", "Averse", "Éclaircies"),
            artist("Victor Mistral", "Vent debout", "Pop provençale"),
            artist("Lou & les Satellites", "Orbite", "Station Vénus"),
        ],
    },
];

/// Searches that name no artist.
const GENERIC_SEARCHES: [&str; 8] = [
    "platine vinyle",
    "coffret",
    "réédition",
    "édition limitée",
    "vinyle couleur",
    "nouveautés",
    "bande originale",
    "live",
];

/// One edition of one album.
#[derive(Clone, Copy)]
struct Product {
    style: usize,
    artist: usize,
    album: usize,
    format: usize,
}

impl Product {
    fn artist(&self) -> &'static str {
        STYLES[self.style].artists[self.artist].name
    }

    fn title(&self) -> &'static str {
        STYLES[self.style].artists[self.artist].albums[self.album]
    }

    fn id(&self) -> String {
        format!("alb-{:02}{}{}", self.style, self.artist, self.album)
    }

    fn sku(&self) -> String {
        format!("{}-{}", self.id(), FORMATS[self.format].code)
    }

    /// Fixed per edition, so every customer sees the same price.
    fn price(&self) -> i64 {
        let prices = FORMATS[self.format].prices;
        prices[(self.style * 7 + self.artist * 3 + self.album * 5) % prices.len()]
    }

    fn path(&self) -> String {
        format!("/disques/{}-{}", self.id(), slug(self.title(), Some('-')))
    }

    fn page_title(&self) -> String {
        format!(
            "{} — {} ({}) | Vinyles & Cie",
            self.title(),
            self.artist(),
            FORMATS[self.format].name
        )
    }

    /// The properties of `Product Viewed`.
    fn viewed(&self) -> Value {
        json!({
            "product_id": self.id(),
            "sku": self.sku(),
            "name": self.title(),
            "artist": self.artist(),
            "category": STYLES[self.style].name,
            "format": FORMATS[self.format].name,
            "price": euros(self.price()),
            "currency": "EUR",
        })
    }

    /// The properties of `Product Added`.
    fn added(&self, quantity: i64) -> Value {
        json!({
            "product_id": self.id(),
            "name": self.title(),
            "artist": self.artist(),
            "category": STYLES[self.style].name,
            "format": FORMATS[self.format].name,
            "price": euros(self.price()),
            "quantity": quantity,
            "currency": "EUR",
        })
    }

    /// One entry of an order's `products`.
    fn line(&self, quantity: i64) -> Value {
        json!({
            "product_id": self.id(),
            "sku": self.sku(),
            "name": self.title(),
            "artist": self.artist(),
            "category": STYLES[self.style].name,
            "format": FORMATS[self.format].name,
            "price": euros(self.price()),
            "quantity": quantity,
        })
    }
}

/// Amounts are kept in cents and become euros only in messages, so totals add up exactly.
fn euros(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// What an order comes to.
struct Bill {
    lines: Vec<(Product, i64)>,
    coupon: Option<&'static str>,
    shipping: i64,
    total: i64,
    tax: i64,
}

impl Bill {
    /// Prices include 20 % VAT; shipping is free from 49 € and for downloads.
    fn new(lines: Vec<(Product, i64)>, coupon: Option<(&'static str, i64)>, shipped: bool) -> Bill {
        let subtotal: i64 = lines.iter().map(|(p, q)| p.price() * q).sum();
        let discount = coupon.map_or(0, |(_, percent)| subtotal * percent / 100);
        let net = subtotal - discount;
        let physical = lines.iter().any(|(p, _)| FORMATS[p.format].shipped);
        let shipping = if shipped && physical && net < 4900 { 490 } else { 0 };
        let total = net + shipping;
        Bill {
            lines,
            coupon: coupon.map(|(code, _)| code),
            shipping,
            total,
            tax: (total * 20 + 60) / 120,
        }
    }

    fn shipped(&self) -> bool {
        self.lines.iter().any(|(p, _)| FORMATS[p.format].shipped)
    }

    /// The properties of `Order Completed`.
    fn order(&self, order_id: &str, store: Option<&str>) -> Value {
        let mut props = json!({
            "order_id": order_id,
            "total": euros(self.total),
            "revenue": euros(self.total - self.shipping - self.tax),
            "shipping": euros(self.shipping),
            "tax": euros(self.tax),
            "currency": "EUR",
            "channel": if store.is_some() { "store" } else { "web" },
        });
        props["products"] = self.lines.iter().map(|(p, q)| p.line(*q)).collect();
        if let Some(code) = self.coupon {
            props["coupon"] = code.into();
        }
        if let Some(store) = store {
            props["store"] = store.into();
        }
        props
    }
}

// ---- people -----------------------------------------------------------------------------------

const FEMALE_NAMES: [&str; 40] = [
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Emma",
    "Inès",
    "Sarah",
    "Julie",
    "Louise",
    "Jade",
    "Zoé",
    "Clara",
    "Anaïs",
    "Marion",
    "Pauline",
    "Mathilde",
    "Élodie",
    "Céline",
    "Nathalie",
    "Isabelle",
    "Sophie",
    "Valérie",
    "Sandrine",
    "Christine",
    "Monique",
    "Françoise",
    "Hélène",
    "Margaux",
    "Océane",
    "Lucie",
    "Alice",
    "Agathe",
    "Juliette",
    "Amandine",
    "Émilie",
    "Aurélie",
    "Claire",
    "Nadia",
    "Yasmine",
    "Fatou",
];

const MALE_NAMES: [&str; 40] = [
    "Lucas",
    "Hugo",
    "Thomas",
    "Nathan",
    "Louis",
    "Théo",
    "Maxime",
    "Antoine",
    "Julien",
    "Nicolas",
    "Alexandre",
    "Romain",
    "Guillaume",
    "Pierre",
    "Sébastien",
    "Olivier",
    "Laurent",
    "Philippe",
    "Christophe",
    "Stéphane",
    "Éric",
    "Jean",
    "Michel",
    "Patrick",
    "Bernard",
    "Gabriel",
    "Raphaël",
    "Arthur",
    "Jules",
    "Mathis",
    "Léo",
    "Adam",
    "Karim",
    "Mehdi",
    "Yanis",
    "Baptiste",
    "Clément",
    "Benoît",
    "François",
    "Mamadou",
];

const UNISEX_NAMES: [&str; 8] = [
    "Camille",
    "Dominique",
    "Claude",
    "Sacha",
    "Alex",
    "Charlie",
    "Morgan",
    "Andréa",
];

const LAST_NAMES: [&str; 60] = [
    "Martin",
    "Bernard",
    "Thomas",
    "Petit",
    "Robert",
    "Richard",
    "Durand",
    "Dubois",
    "Moreau",
    "Laurent",
    "Simon",
    "Michel",
    "Lefebvre",
    "Leroy",
    "Roux",
    "David",
    "Bertrand",
    "Morel",
    "Fournier",
    "Girard",
    "Bonnet",
    "Dupont",
    "Lambert",
    "Fontaine",
    "Rousseau",
    "Vincent",
    "Muller",
    "Lefèvre",
    "Faure",
    "André",
    "Mercier",
    "Blanc",
    "Guérin",
    "Boyer",
    "Garnier",
    "Chevalier",
    "Legrand",
    "Gauthier",
    "Garcia",
    "Perrin",
    "Robin",
    "Clément",
    "Morin",
    "Henry",
    "Roussel",
    "Mathieu",
    "Masson",
    "Marchand",
    "Duval",
    "Denis",
    "Dumont",
    "Lemaire",
    "Meyer",
    "Dufour",
    "Brunet",
    "Nguyen",
    "Benali",
    "Diallo",
    "Da Silva",
    "Le Gall",
];

const STREETS: [&str; 16] = [
    "rue de la République",
    "rue Victor-Hugo",
    "avenue Jean-Jaurès",
    "boulevard Gambetta",
    "rue Pasteur",
    "rue des Lilas",
    "place du Marché",
    "rue du Moulin",
    "allée des Tilleuls",
    "rue de la Gare",
    "rue des Écoles",
    "impasse des Vignes",
    "rue Voltaire",
    "avenue de la Liberté",
    "rue du Château",
    "chemin des Pins",
];

const HOBBIES: [&str; 14] = [
    "concerts",
    "cinéma",
    "lecture",
    "randonnée",
    "photographie",
    "cuisine",
    "jeux vidéo",
    "voyages",
    "guitare",
    "piano",
    "skate",
    "danse",
    "yoga",
    "vélo",
];

struct City {
    name: &'static str,
    postal_codes: &'static [&'static str],
    country: &'static str,
    timezone: &'static str,
    locale: &'static str,
    /// How many customers live there, relatively: the two store cities weigh more than their
    /// population, as a record store's customers do.
    weight: u32,
    /// The store within reach, if any.
    store: Option<usize>,
    /// On a coast where people surf.
    surf: bool,
}

const fn french(name: &'static str, postal_codes: &'static [&'static str], weight: u32) -> City {
    City {
        name,
        postal_codes,
        country: "FR",
        timezone: "Europe/Paris",
        locale: "fr-FR",
        weight,
        store: None,
        surf: false,
    }
}

const fn near(store: usize, city: City) -> City {
    City {
        store: Some(store),
        ..city
    }
}

const fn surfing(city: City) -> City {
    City { surf: true, ..city }
}

/// French expatriates: they keep buying from the shop, in their own time zone.
const fn abroad(
    name: &'static str,
    postal_code: &'static [&'static str],
    country: &'static str,
    timezone: &'static str,
    locale: &'static str,
) -> City {
    City {
        name,
        postal_codes: postal_code,
        country,
        timezone,
        locale,
        weight: 1,
        store: None,
        surf: false,
    }
}

static CITIES: [City; 26] = [
    near(
        0,
        french(
            "Paris",
            &[
                "75001", "75002", "75003", "75004", "75005", "75006", "75007", "75008", "75009", "75010", "75011",
                "75012", "75013", "75014", "75015", "75016", "75017", "75018", "75019", "75020",
            ],
            24,
        ),
    ),
    near(0, french("Montreuil", &["93100"], 2)),
    near(0, french("Boulogne-Billancourt", &["92100"], 2)),
    near(0, french("Saint-Denis", &["93200"], 1)),
    near(
        1,
        french(
            "Lyon",
            &[
                "69001", "69002", "69003", "69004", "69005", "69006", "69007", "69008", "69009",
            ],
            12,
        ),
    ),
    near(1, french("Villeurbanne", &["69100"], 2)),
    french("Marseille", &["13001", "13004", "13005", "13006", "13008", "13013"], 6),
    french("Toulouse", &["31000", "31100", "31200", "31300", "31400", "31500"], 5),
    french("Bordeaux", &["33000", "33100", "33200", "33300", "33800"], 5),
    french("Lille", &["59000", "59160", "59260", "59800"], 4),
    surfing(french("Nantes", &["44000", "44100", "44200", "44300"], 4)),
    surfing(french("Nice", &["06000", "06100", "06200", "06300"], 4)),
    french("Montpellier", &["34000", "34070", "34080", "34090"], 4),
    french("Strasbourg", &["67000", "67100", "67200"], 3),
    french("Rennes", &["35000", "35200", "35700"], 3),
    french("Grenoble", &["38000", "38100"], 2),
    surfing(french("Biarritz", &["64200"], 1)),
    surfing(french("La Rochelle", &["17000"], 1)),
    surfing(french("Brest", &["29200"], 1)),
    surfing(french("Hossegor", &["40150"], 1)),
    abroad(
        "London",
        &["N1 7GU", "SE1 9SG", "E2 8DY"],
        "GB",
        "Europe/London",
        "fr-FR",
    ),
    abroad("Montréal", &["H2X 1Y4", "H2T 1S6"], "CA", "America/Toronto", "fr-CA"),
    abroad("Bruxelles", &["1000", "1050"], "BE", "Europe/Brussels", "fr-BE"),
    abroad("Genève", &["1201", "1205"], "CH", "Europe/Zurich", "fr-CH"),
    abroad("New York", &["10001", "11211"], "US", "America/New_York", "en-US"),
    abroad("Tokyo", &["150-0001"], "JP", "Asia/Tokyo", "fr-FR"),
];

/// Browsers and devices of the site's visitors; more than half are phones.
const USER_AGENTS: [(&str, u32); 7] = [
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        30,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
        20,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
        6,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        22,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        12,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
        7,
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
        3,
    ),
];

/// Where visits come from; an empty referrer is a direct visit.
const REFERRERS: [(&str, u32); 9] = [
    ("", 30),
    ("https://www.google.com/", 38),
    ("https://www.instagram.com/", 9),
    ("https://www.facebook.com/", 5),
    ("https://www.qwant.com/", 4),
    ("https://www.bing.com/", 4),
    ("https://www.youtube.com/", 4),
    ("https://duckduckgo.com/", 3),
    ("https://www.tiktok.com/", 3),
];

/// Age bands of the customers (16 to 80) and how many fall in each.
const AGE_BANDS: [(i16, i16, u32); 7] = [
    (16, 17, 3),
    (18, 24, 14),
    (25, 34, 22),
    (35, 44, 20),
    (45, 54, 16),
    (55, 64, 12),
    (65, 80, 8),
];

/// One synthetic customer: everything the shop could learn about them, whether or not their
/// journey ever tells it.
struct Person {
    index: usize,
    gender: &'static str,
    first_name: &'static str,
    last_name: &'static str,
    email: String,
    phone: String,
    /// Whether they give their phone number when asked.
    shares_phone: bool,
    birthday: Date,
    city: &'static City,
    postal_code: &'static str,
    street: String,
    language: &'static str,
    locale: &'static str,
    style: usize,
    /// (style, artist) indices.
    artists: Vec<(usize, usize)>,
    formats: Vec<usize>,
    hobbies: Vec<&'static str>,
    /// The day a baby was born in the household, for a few.
    household_birth: Option<i64>,
}

impl Person {
    fn new(index: usize, calendar: &Calendar, rng: &mut StdRng) -> Person {
        let gender = ["female", "male", "non_binary"][weighted(rng, &[50, 48, 2])];
        let first_name = match gender {
            "female" => pick(rng, &FEMALE_NAMES),
            "male" => pick(rng, &MALE_NAMES),
            _ => pick(rng, &UNISEX_NAMES),
        };
        let last_name = pick(rng, &LAST_NAMES);
        let city = &CITIES[weighted_by(rng, &CITIES, |c| c.weight)];
        let (birthday, age) = birthday(rng, calendar.date(calendar.today));

        let style_weights: Vec<u32> = (0..STYLES.len()).map(|s| style_weight(s, age)).collect();
        let style = weighted(rng, &style_weights);
        let mut artists = vec![(style, rng.random_range(0..4))];
        for _ in 0..rng.random_range(0..3) {
            let other = if rng.random_bool(0.25) {
                (rng.random_range(0..STYLES.len()), rng.random_range(0..4))
            } else {
                (style, rng.random_range(0..4))
            };
            if !artists.contains(&other) {
                artists.push(other);
            }
        }
        let mut formats = Vec::new();
        let chances = [
            0.65,
            if age >= 50 { 0.55 } else { 0.3 },
            if age < 30 { 0.5 } else { 0.3 },
        ];
        for (format, chance) in chances.into_iter().enumerate() {
            if rng.random_bool(chance) {
                formats.push(format);
            }
        }
        if formats.is_empty() {
            formats.push(VINYL);
        }
        let mut hobbies = Vec::new();
        if rng.random_bool(if city.surf { 0.35 } else { 0.03 }) {
            hobbies.push("surf");
        }
        for _ in 0..rng.random_range(0..3) {
            let hobby = pick(rng, &HOBBIES);
            if !hobbies.contains(&hobby) {
                hobbies.push(hobby);
            }
        }
        let english = city.locale.starts_with("en") || rng.random_bool(0.03);
        let household_birth =
            ((22..=45).contains(&age) && rng.random_bool(0.08)).then(|| rng.random_range(0..calendar.today));

        Person {
            index,
            gender,
            first_name,
            last_name,
            email: email(rng, first_name, last_name, index),
            // A permutation of the 10,000 numbers of the block: unique for the first 10,000
            // customers; beyond, numbers repeat, like a shared household line.
            phone: {
                let n = (index * 7919) % 10_000;
                format!("+33 6 39 98 {:02} {:02}", n / 100, n % 100)
            },
            shares_phone: rng.random_bool(0.6),
            birthday,
            city,
            postal_code: pick(rng, city.postal_codes),
            street: format!("{} {}", rng.random_range(1..140), pick(rng, &STREETS)),
            language: if english { "en" } else { "fr" },
            locale: if english && !city.locale.starts_with("en") {
                "en-GB"
            } else {
                city.locale
            },
            style,
            artists,
            formats,
            hobbies,
            household_birth,
        }
    }

    fn store(&self) -> Option<usize> {
        self.city.store
    }

    fn address(&self) -> Value {
        json!({
            "street": self.street,
            "city": self.city.name,
            "postalCode": self.postal_code,
            "country": self.city.country,
        })
    }

    /// What the tastes questionnaires learn.
    fn tastes(&self, traits: &mut Map<String, Value>) {
        traits.insert("favorite_style".into(), STYLES[self.style].name.into());
        let artists: Vec<&str> = self.artists.iter().map(|&(s, a)| STYLES[s].artists[a].name).collect();
        traits.insert("favorite_artists".into(), artists.into());
        let formats: Vec<&str> = self.formats.iter().map(|&f| FORMATS[f].name).collect();
        traits.insert("favorite_formats".into(), formats.into());
        if !self.hobbies.is_empty() {
            traits.insert("hobbies".into(), self.hobbies.clone().into());
        }
    }
}

/// A birthday and the age it gives today. One customer in seventy is born on 29 February,
/// far more than chance would give, so that birthday campaigns always meet the leap-day case.
fn birthday(rng: &mut StdRng, today: Date) -> (Date, i16) {
    let (low, high, _) = AGE_BANDS[weighted_by(rng, &AGE_BANDS, |band| band.2)];
    let age = rng.random_range(low..=high);
    if rng.random_bool(0.015) {
        // Going back to a leap year ages them by at most four years.
        let age = age.min(76);
        let mut year = today.year() - age - 1;
        while Date::new(year, 2, 29).is_err() {
            year -= 1;
        }
        return (date(year, 2, 29), today.year() - year);
    }
    let month = rng.random_range(1..=12);
    let last = if month == 2 {
        28
    } else {
        date(2001, month, 1).days_in_month()
    };
    let day = rng.random_range(1..=last);
    let year = if (month, day) > (today.month(), today.day()) {
        today.year() - age - 1
    } else {
        today.year() - age
    };
    (date(year, month, day), age)
}

/// Younger customers lean to hip-hop and électro, older ones to jazz, classical and chanson.
fn style_weight(style: usize, age: i16) -> u32 {
    let base = STYLES[style].weight;
    match (STYLES[style].name, age) {
        ("hip-hop" | "électro", ..=29) => base * 2,
        ("hip-hop" | "électro", 50..) => base / 3,
        ("jazz" | "classique" | "chanson française", 50..) => base * 2,
        ("classique", ..=29) => base / 2,
        _ => base,
    }
}

/// An address on a domain reserved for examples; the customer's index makes it unique.
fn email(rng: &mut StdRng, first_name: &str, last_name: &str, index: usize) -> String {
    let first = slug(first_name, None);
    let last = slug(last_name, None);
    let local = match rng.random_range(0..4) {
        0 => format!("{first}.{last}{index}"),
        1 => format!("{}{last}{index}", &first[..1]),
        2 => format!("{first}{index}"),
        _ => format!("{last}.{first}{index}"),
    };
    format!("{local}@{}", pick(rng, &["example.org", "example.com", "example.net"]))
}

/// Lowercase ASCII for addresses and URLs; other characters become `separator`, or vanish.
fn slug(text: &str, separator: Option<char>) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'à' | 'â' | 'ä' => out.push('a'),
            'é' | 'è' | 'ê' | 'ë' => out.push('e'),
            'î' | 'ï' => out.push('i'),
            'ô' | 'ö' => out.push('o'),
            'ù' | 'û' | 'ü' => out.push('u'),
            'ç' => out.push('c'),
            'œ' => out.push_str("oe"),
            _ => match separator {
                Some(sep) if !out.is_empty() && !out.ends_with(sep) => out.push(sep),
                _ => {}
            },
        }
    }
    if let Some(sep) = separator
        && out.ends_with(sep)
    {
        out.pop();
    }
    out
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// An index drawn in proportion to its weight.
fn weighted(rng: &mut StdRng, weights: &[u32]) -> usize {
    weighted_by(rng, weights, |&w| w)
}

/// An index of `items` drawn in proportion to the weight of each.
fn weighted_by<T>(rng: &mut StdRng, items: &[T], weight: impl Fn(&T) -> u32) -> usize {
    let mut x = rng.random_range(0..items.iter().map(&weight).sum::<u32>());
    for (i, item) in items.iter().enumerate() {
        let w = weight(item);
        if x < w {
            return i;
        }
        x -= w;
    }
    items.len() - 1
}

/// A random (version 4) UUID, as analytics.js gives its `anonymousId`.
fn uuid(rng: &mut StdRng) -> String {
    let bits: u128 = rng.random();
    let bits = (bits & !(0xf << 76)) | (0x4 << 76);
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

// ---- journeys ---------------------------------------------------------------------------------

/// The cookie banner's answers, as Segment's consent categories (analytics, personalisation,
/// advertising), and how many visitors give each: refusing is as easy as accepting, and a
/// quarter of visitors refuse.
const BANNER_CHOICES: [([bool; 3], u32); 3] = [
    ([true, true, true], 58),
    ([true, true, false], 17),
    ([false, false, false], 25),
];

/// A browser the customer uses, with its cookie id and the banner choice made on it.
struct Device {
    anonymous_id: String,
    user_agent: &'static str,
    ip: String,
    banner: [bool; 3],
    /// Whether the customer is logged in on it, so its messages carry the `userId`.
    logged_in: bool,
}

impl Device {
    fn new(rng: &mut StdRng) -> Device {
        let network = pick(rng, &["192.0.2", "198.51.100", "203.0.113"]);
        Device {
            anonymous_id: uuid(rng),
            user_agent: USER_AGENTS[weighted_by(rng, &USER_AGENTS, |ua| ua.1)].0,
            ip: format!("{network}.{}", rng.random_range(1..255)),
            banner: BANNER_CHOICES[weighted_by(rng, &BANNER_CHOICES, |c| c.1)].0,
            logged_in: false,
        }
    }
}

/// The page a visitor is on.
struct Page {
    path: String,
    /// The query string, part of the URL only.
    query: String,
    title: String,
    name: &'static str,
    referrer: String,
}

impl Page {
    fn url(&self) -> String {
        format!("{SITE}{}{}", self.path, self.query)
    }

    fn properties(&self) -> Value {
        json!({"path": self.path, "url": self.url(), "title": self.title, "referrer": self.referrer})
    }
}

/// A `context` naming the library that sent the message, as every SDK does.
fn context(source: &str) -> Value {
    let (name, version) = match source {
        "web" => ("analytics.js", "next-1.73.0"),
        "backend" | "accounts" => ("analytics-python", "2.3.4"),
        "forms" => ("@segment/analytics-node", "2.1.3"),
        "tills" => ("export-caisses", "3.2.0"),
        _ => ("export-sav", "1.4.1"),
    };
    json!({"library": {"name": name, "version": version}})
}

fn message(kind: &str, user_id: Option<&str>, anonymous_id: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    if let Some(id) = user_id {
        m.insert("userId".into(), id.into());
    }
    if let Some(id) = anonymous_id {
        m.insert("anonymousId".into(), id.into());
    }
    m
}

fn track(mut m: Map<String, Value>, event: &str, properties: Value) -> Map<String, Value> {
    m.insert("event".into(), event.into());
    m.insert("properties".into(), properties);
    m
}

/// One customer's walk through the journey, appending their messages.
struct Journey<'a> {
    calendar: &'a Calendar,
    rng: StdRng,
    person: Person,
    out: &'a mut Vec<Draft>,
    /// How far the journey has gone. Follow-ups (deliveries, surveys, tickets) are scheduled
    /// ahead of it without moving it.
    t: i64,
    devices: Vec<Device>,
    page: Option<Page>,
    user_id: Option<String>,
    account_at: i64,
    card: Option<String>,
    card_at: i64,
    newsletter: bool,
    /// Whether the shop knows the birthday, and so sends a birthday coupon.
    birthday_known: bool,
    address_given: bool,
    orders: u32,
    store_orders: u32,
    checkouts: u32,
    tickets: u32,
}

impl<'a> Journey<'a> {
    fn new(person: Person, calendar: &'a Calendar, rng: StdRng, out: &'a mut Vec<Draft>) -> Self {
        Journey {
            calendar,
            rng,
            person,
            out,
            t: 0,
            devices: Vec::new(),
            page: None,
            user_id: None,
            account_at: i64::MAX,
            card: None,
            card_at: i64::MAX,
            newsletter: false,
            birthday_known: false,
            address_given: false,
            orders: 0,
            store_orders: 0,
            checkouts: 0,
            tickets: 0,
        }
    }

    fn run(mut self) {
        // Up to the day before yesterday, so that even a store visit moved off a Sunday has
        // happened by `now`: every customer has at least one message.
        let start = self.rng.random_range(0..self.calendar.today - 1);
        match self.person.store() {
            // Some people near a store only ever meet the shop at its till.
            Some(store) if self.rng.random_bool(0.22) => self.store_customer(start, store),
            _ => self.web_customer(start),
        }
        self.household_birth();
    }

    // ---- the two kinds of journey ----

    fn web_customer(&mut self, start: i64) {
        self.devices.push(Device::new(&mut self.rng));
        let mut day = start;
        let mut interest: f64 = 0.27;
        let mut questioned = false;
        for visit in 0..1 + weighted(&mut self.rng, &[55, 27, 12, 6]) {
            if day > self.calendar.today {
                return;
            }
            self.browse(0, day, false);
            if visit == 0 && self.rng.random_bool(0.2) {
                let placement = if self.rng.random_bool(0.6) { "pop-in" } else { "footer" };
                self.subscribe(0, placement);
                interest += 0.08;
            }
            if self.rng.random_bool(0.06) {
                self.contest(0);
            }
            if !questioned && self.rng.random_bool(0.15) {
                questioned = true;
                if self.pre_purchase_questionnaire(0) {
                    interest += 0.12;
                }
            }
            day = self.calendar.day_of(self.t) + self.rng.random_range(1..=21);
        }

        if !self.rng.random_bool(interest) {
            self.window_shopper(day);
            return;
        }
        // Shoppers who live near a store also buy there, half of the time; a few others visit
        // one now and then when in town.
        let (store, in_store) = match self.person.store() {
            Some(store) if self.rng.random_bool(0.35) => (Some(store), 0.5),
            _ if self.rng.random_bool(0.02) => (Some(self.rng.random_range(0..STORES.len())), 0.1),
            _ => (None, 0.0),
        };
        let first_in_store = store.is_some() && self.rng.random_bool(in_store * 0.6);
        let mut ordered = false;
        for attempt in 0..3 {
            if day > self.calendar.today {
                return;
            }
            match store {
                Some(store) if first_in_store => {
                    self.store_order(day, store);
                    ordered = true;
                }
                _ => ordered = self.web_order(day, attempt > 0),
            }
            if ordered {
                break;
            }
            day = self.calendar.day_of(self.t) + self.rng.random_range(1..=5);
        }
        if !ordered {
            return;
        }

        let mut again = 0.5;
        while self.orders < 12 && self.rng.random_bool(again) {
            let day = self.calendar.day_of(self.t) + self.rng.random_range(14..=120);
            if day > self.calendar.today {
                return;
            }
            if self.rng.random_bool(0.4) {
                let device = self.device();
                let from_newsletter = self.newsletter && self.rng.random_bool(0.5);
                self.browse(device, day, from_newsletter);
            }
            // The purchase itself, the day of that visit or a few days later.
            let day = day.max(self.calendar.day_of(self.t)) + self.rng.random_range(0..=7);
            match store {
                Some(store) if self.rng.random_bool(in_store) => self.store_order(day, store),
                _ => {
                    self.web_order(day, false);
                }
            }
            if self.rng.random_bool(0.03) {
                self.contest(0);
            }
            again = 0.6;
        }
    }

    /// Someone who does not buy: some come back, fill a cart or open an account, none pays.
    fn window_shopper(&mut self, mut day: i64) {
        for _ in 0..weighted(&mut self.rng, &[45, 30, 17, 8]) {
            if day > self.calendar.today {
                return;
            }
            let from_newsletter = self.newsletter && self.rng.random_bool(0.5);
            let product = self.browse(0, day, from_newsletter);
            if self.rng.random_bool(0.15) {
                let quantity = self.add_to_cart(0, product);
                // Some go as far as the payment page, and leave.
                if self.rng.random_bool(0.4) {
                    self.checkout(0, vec![(product, quantity)], None);
                }
            } else if self.user_id.is_none() && self.rng.random_bool(0.05) {
                self.create_account(0);
            }
            day = self.calendar.day_of(self.t) + self.rng.random_range(3..=60);
        }
    }

    fn store_customer(&mut self, start: i64, store: usize) {
        self.store_order(start, store);
        let mut again = 0.6;
        while self.store_orders < 15 && self.rng.random_bool(again) {
            let day = self.calendar.day_of(self.t) + self.rng.random_range(10..=100);
            if day > self.calendar.today {
                return;
            }
            self.store_order(day, store);
            again = 0.65;
        }
    }

    // ---- emitting ----

    /// Keeps a message unless it would happen after `now`.
    fn emit(&mut self, at: i64, source: &'static str, body: Map<String, Value>) {
        if at < self.calendar.now_ms {
            self.out.push(Draft { at, source, body });
        }
    }

    /// Moves the journey on by a few seconds or minutes.
    fn wait(&mut self, min_s: i64, max_s: i64) {
        self.t += self.rng.random_range(min_s * 1000..=max_s * 1000);
    }

    /// The ids a back-office source knows the customer by at an instant: the account if there
    /// is one, else the loyalty card, else the site's cookie.
    fn subject(&self, at: i64) -> (Option<String>, Option<String>) {
        if self.account_at <= at {
            (self.user_id.clone(), None)
        } else if self.card_at <= at {
            (None, self.card.clone())
        } else {
            (None, self.devices.first().map(|d| d.anonymous_id.clone()))
        }
    }

    fn server_message(&self, kind: &str, source: &str, at: i64, traits: Option<Value>) -> Map<String, Value> {
        let (user_id, anonymous_id) = self.subject(at);
        let mut m = message(kind, user_id.as_deref(), anonymous_id.as_deref());
        let mut context = context(source);
        if let Some(traits) = traits {
            context["traits"] = traits;
        }
        m.insert("context".into(), context);
        m
    }

    fn server_track(&mut self, source: &'static str, at: i64, event: &str, properties: Value, traits: Option<Value>) {
        let m = track(self.server_message("track", source, at, traits), event, properties);
        self.emit(at, source, m);
    }

    fn identify(&mut self, source: &'static str, at: i64, traits: Map<String, Value>) {
        let mut m = self.server_message("identify", source, at, None);
        m.insert("traits".into(), Value::Object(traits));
        self.emit(at, source, m);
    }

    /// A message from the site, on the current page of a device.
    fn web_message(&self, kind: &str, device: usize) -> Map<String, Value> {
        let d = &self.devices[device];
        let user_id = if d.logged_in { self.user_id.as_deref() } else { None };
        let mut m = message(kind, user_id, Some(&d.anonymous_id));
        let mut context = context("web");
        context["locale"] = self.person.locale.into();
        context["userAgent"] = d.user_agent.into();
        context["ip"] = d.ip.clone().into();
        // A consent manager stamps every message with the visitor's choice.
        let [analytics, personalisation, advertising] = d.banner;
        context["consent"] = json!({"categoryPreferences": {
            "Analytics": analytics,
            "Personalization": personalisation,
            "Advertising": advertising,
        }});
        if let Some(page) = &self.page {
            context["page"] = page.properties();
        }
        m.insert("context".into(), context);
        m
    }

    fn web_track(&mut self, device: usize, event: &str, properties: Value) {
        let m = track(self.web_message("track", device), event, properties);
        self.emit(self.t, "web", m);
    }

    /// Goes to another page of the site, coming from the current one.
    fn visit(&mut self, device: usize, path: String, title: String, name: &'static str) {
        let referrer = self.page.as_ref().map(Page::url).unwrap_or_default();
        let page = Page {
            path,
            query: String::new(),
            title,
            name,
            referrer,
        };
        self.visit_page(device, page, None);
    }

    fn visit_page(&mut self, device: usize, page: Page, campaign: Option<Value>) {
        let (name, properties) = (page.name, page.properties());
        self.page = Some(page);
        let mut m = self.web_message("page", device);
        m.insert("name".into(), name.into());
        m.insert("properties".into(), properties);
        if let Some(campaign) = campaign {
            m["context"]["campaign"] = campaign;
        }
        self.emit(self.t, "web", m);
    }

    // ---- discovery ----

    /// The device for a new visit: once logged in, some customers come back on another one.
    fn device(&mut self) -> usize {
        if self.user_id.is_some() && self.devices.len() < 3 && self.rng.random_bool(0.2) {
            self.devices.push(Device::new(&mut self.rng));
            return self.devices.len() - 1;
        }
        self.rng.random_range(0..self.devices.len())
    }

    /// A visit to the site on a day: a landing page, then a few searches, products and styles.
    /// Returns the last product looked at.
    fn browse(&mut self, device: usize, day: i64, from_newsletter: bool) -> Product {
        let minute = weighted(&mut self.rng, &WEB_HOURS) as i64 * 60 + self.rng.random_range(0..60);
        self.t = self.calendar.at(day, minute).max(self.t + 10 * MINUTE_MS);
        self.page = None;

        let mut product = self.pick_product();
        let (referrer, campaign, query) = if from_newsletter {
            let month = self.calendar.date_of(self.t).strftime("%Y-%m").to_string();
            let campaign = json!({"name": format!("nouveautes-{month}"), "source": "newsletter", "medium": "email"});
            let query = format!("?utm_source=newsletter&utm_medium=email&utm_campaign=nouveautes-{month}");
            ("", Some(campaign), query)
        } else {
            let referrer = REFERRERS[weighted_by(&mut self.rng, &REFERRERS, |r| r.1)].0;
            (referrer, None, String::new())
        };
        let landing = weighted(&mut self.rng, &[40, 25, 35]);
        let (path, title, name) = match landing {
            0 => home(),
            1 => style_page(self.person.style),
            _ => (product.path(), product.page_title(), "Produit"),
        };
        let page = Page {
            path,
            query,
            title,
            name,
            referrer: referrer.to_owned(),
        };
        self.visit_page(device, page, campaign);
        if landing == 2 {
            self.web_track(device, "Product Viewed", product.viewed());
        }
        if self.user_id.is_some() && !self.devices[device].logged_in {
            self.login(device);
        }

        for _ in 0..weighted(&mut self.rng, &[30, 30, 22, 12, 6]) {
            self.wait(15, 240);
            match weighted(&mut self.rng, &[45, 25, 20, 10]) {
                0 => {
                    product = self.pick_product();
                    self.view_product(device, product);
                }
                1 => self.search(device),
                2 => {
                    let style = if self.rng.random_bool(0.7) {
                        self.person.style
                    } else {
                        self.rng.random_range(0..STYLES.len())
                    };
                    let (path, title, name) = style_page(style);
                    self.visit(device, path, title, name);
                }
                _ => self.visit(
                    device,
                    "/boutiques".into(),
                    "Nos boutiques de Paris et Lyon | Vinyles & Cie".into(),
                    "Boutiques",
                ),
            }
        }
        product
    }

    fn view_product(&mut self, device: usize, product: Product) {
        self.visit(device, product.path(), product.page_title(), "Produit");
        self.wait(1, 4);
        self.web_track(device, "Product Viewed", product.viewed());
    }

    fn search(&mut self, device: usize) {
        let query = match weighted(&mut self.rng, &[60, 20, 20]) {
            0 => {
                let (s, a) = pick(&mut self.rng, &self.person.artists);
                STYLES[s].artists[a].name.to_lowercase()
            }
            1 => STYLES[self.person.style].name.to_owned(),
            _ => pick(&mut self.rng, &GENERIC_SEARCHES).to_owned(),
        };
        self.web_track(device, "Products Searched", json!({"query": query}));
        self.wait(1, 3);
        let referrer = self.page.as_ref().map(Page::url).unwrap_or_default();
        let page = Page {
            path: "/recherche".into(),
            query: format!("?q={}", slug(&query, Some('+'))),
            title: format!("Recherche : {query} | Vinyles & Cie"),
            name: "Recherche",
            referrer,
        };
        self.visit_page(device, page, None);
    }

    /// Mostly the customer's favourite artists and style, in a format they like.
    fn pick_product(&mut self) -> Product {
        let (style, artist) = match weighted(&mut self.rng, &[40, 35, 25]) {
            0 => self.person.artists[self.rng.random_range(0..self.person.artists.len())],
            1 => (self.person.style, self.rng.random_range(0..4)),
            _ => (self.rng.random_range(0..STYLES.len()), self.rng.random_range(0..4)),
        };
        Product {
            style,
            artist,
            album: self.rng.random_range(0..2),
            format: self.person.formats[self.rng.random_range(0..self.person.formats.len())],
        }
    }

    fn subscribe(&mut self, device: usize, placement: &str) {
        self.newsletter = true;
        self.wait(5, 40);
        let list = if self.rng.random_bool(0.8) { "hebdo" } else { "concerts" };
        let mut m = track(
            self.web_message("track", device),
            "Newsletter Subscribed",
            json!({"list": list, "placement": placement}),
        );
        m["context"]["traits"] = json!({"email": self.person.email});
        self.emit(self.t, "web", m);
    }

    /// A contest form on the site, often reached from a social network.
    fn contest(&mut self, device: usize) {
        self.wait(20, 120);
        let date = self.calendar.date_of(self.t);
        let season = match date.month() {
            3..=5 => "printemps",
            6..=8 => "ete",
            9..=11 => "rentree",
            _ => "noel",
        };
        // January's and February's entries belong to the contest of the Christmas before.
        let year = if date.month() <= 2 {
            date.year() - 1
        } else {
            date.year()
        };
        let network = ["instagram", "facebook", "site", "tiktok"][weighted(&mut self.rng, &[45, 25, 20, 10])];
        let mut m = self.server_message(
            "track",
            "forms",
            self.t,
            Some(json!({"email": self.person.email, "first_name": self.person.first_name})),
        );
        m.insert("anonymousId".into(), self.devices[device].anonymous_id.clone().into());
        let m = track(
            m,
            "Contest Entered",
            json!({"contest_id": format!("concours-{season}-{year}"), "network": network}),
        );
        self.emit(self.t, "forms", m);
    }

    /// The tastes pop-in on the site. Returns whether it was answered.
    fn pre_purchase_questionnaire(&mut self, device: usize) -> bool {
        let ids = |j: &Self| {
            let d = &j.devices[device];
            let user_id = if d.logged_in { j.user_id.clone() } else { None };
            (user_id, d.anonymous_id.clone())
        };
        let questionnaire = json!({
            "questionnaire_id": "gouts-musicaux",
            "phase": "discovery",
            "touchpoint": "pre_purchase_questionnaire",
        });
        self.wait(10, 60);
        let (user_id, anonymous_id) = ids(self);
        let mut m = message("track", user_id.as_deref(), Some(&anonymous_id));
        m.insert("context".into(), context("forms"));
        self.emit(self.t, "forms", track(m, "Questionnaire Sent", questionnaire.clone()));
        if !self.rng.random_bool(0.45) {
            return false;
        }
        self.wait(60, 360);
        let mut answered = questionnaire;
        answered["favorite_style"] = STYLES[self.person.style].name.into();
        let frequency = pick(
            &mut self.rng,
            &["chaque semaine", "chaque mois", "quelques fois par an"],
        );
        let listening = pick(&mut self.rng, &["platine", "streaming", "voiture", "concerts"]);
        answered["answers"] = json!({"frequence_achat": frequency, "ecoute": listening});
        let mut m = message("track", user_id.as_deref(), Some(&anonymous_id));
        m.insert("context".into(), context("forms"));
        self.emit(self.t, "forms", track(m, "Questionnaire Answered", answered));

        let mut traits = Map::new();
        self.person.tastes(&mut traits);
        if self.rng.random_bool(0.4) {
            self.birthday_known = true;
            traits.insert("birthday".into(), self.person.birthday.to_string().into());
        }
        let mut m = message("identify", user_id.as_deref(), Some(&anonymous_id));
        m.insert("traits".into(), Value::Object(traits));
        m.insert("context".into(), context("forms"));
        self.emit(self.t + 1, "forms", m);
        true
    }

    // ---- purchase ----

    fn create_account(&mut self, device: usize) {
        self.wait(2, 15);
        self.visit(
            device,
            "/compte/creation".into(),
            "Créer mon compte | Vinyles & Cie".into(),
            "Création de compte",
        );
        self.wait(40, 200);
        self.user_id = Some(format!("vc-{:06}", self.person.index + 1));
        self.account_at = self.t;
        self.devices[device].logged_in = true;

        let p = &self.person;
        let mut traits = Map::new();
        traits.insert("email".into(), p.email.clone().into());
        traits.insert("first_name".into(), p.first_name.into());
        traits.insert("last_name".into(), p.last_name.into());
        traits.insert("language".into(), p.language.into());
        traits.insert("timezone".into(), p.city.timezone.into());
        traits.insert("country".into(), p.city.country.into());
        if p.shares_phone {
            traits.insert("phone".into(), p.phone.clone().into());
        }
        if self.rng.random_bool(0.45) {
            traits.insert("gender".into(), p.gender.into());
        }
        if self.rng.random_bool(0.55) {
            self.birthday_known = true;
            traits.insert("birthday".into(), p.birthday.to_string().into());
        }
        if self.rng.random_bool(0.4) {
            self.address_given = true;
            traits.insert("address".into(), p.address());
            traits.insert("city".into(), p.city.name.into());
            traits.insert("postal_code".into(), p.postal_code.into());
        }
        let method = ["email", "google", "apple"][weighted(&mut self.rng, &[75, 18, 7])];
        // The account system links the visitor's cookie to the new account.
        let anonymous_id = self.devices[device].anonymous_id.clone();
        let mut m = self.server_message("identify", "accounts", self.t, None);
        m.insert("anonymousId".into(), anonymous_id.clone().into());
        m.insert("traits".into(), Value::Object(traits));
        self.emit(self.t, "accounts", m);
        let mut m = self.server_message("track", "accounts", self.t, None);
        m.insert("anonymousId".into(), anonymous_id.into());
        self.emit(
            self.t + 1,
            "accounts",
            track(m, "Account Created", json!({"method": method})),
        );
    }

    /// Logging in on a device the customer had not used with their account.
    fn login(&mut self, device: usize) {
        self.wait(10, 60);
        self.devices[device].logged_in = true;
        let mut m = self.web_message("identify", device);
        m.insert("traits".into(), json!({"email": self.person.email}));
        self.emit(self.t, "web", m);
    }

    fn add_to_cart(&mut self, device: usize, product: Product) -> i64 {
        let quantity = if self.rng.random_bool(0.08) { 2 } else { 1 };
        self.wait(5, 60);
        self.web_track(device, "Product Added", product.added(quantity));
        quantity
    }

    /// Cart, account if needed, and payment page. Returns the order id and bill, or `None`
    /// when the cart is abandoned.
    fn checkout(
        &mut self,
        device: usize,
        lines: Vec<(Product, i64)>,
        coupon: Option<(&'static str, i64)>,
    ) -> Option<(String, Bill)> {
        self.wait(10, 120);
        self.visit(device, "/panier".into(), "Mon panier | Vinyles & Cie".into(), "Panier");
        if self.user_id.is_none() {
            self.create_account(device);
        }
        self.wait(10, 90);
        self.visit(
            device,
            "/commande".into(),
            "Commande | Vinyles & Cie".into(),
            "Commande",
        );
        self.checkouts += 1;
        let order_id = format!("W{:06}-{:02}", self.person.index + 1, self.checkouts);
        let bill = Bill::new(lines, coupon, true);
        self.web_track(
            device,
            "Checkout Started",
            json!({"order_id": order_id, "value": euros(bill.total), "currency": "EUR"}),
        );
        if self.rng.random_bool(0.2) {
            return None;
        }
        Some((order_id, bill))
    }

    /// A purchase on the site. Returns whether it was paid.
    fn web_order(&mut self, day: i64, returning_to_cart: bool) -> bool {
        let device = self.device();
        let from_newsletter = self.newsletter && self.rng.random_bool(0.3);
        let mut product = self.browse(device, day, from_newsletter && !returning_to_cart);
        let mut lines = Vec::new();
        for line in 0..1 + weighted(&mut self.rng, &[60, 28, 12]) {
            if line > 0 {
                self.wait(20, 180);
                product = self.pick_product();
                self.view_product(device, product);
            }
            let quantity = self.add_to_cart(device, product);
            lines.push((product, quantity));
        }
        let date = self.calendar.date_of(self.t);
        let coupon = if self.orders == 0 && self.rng.random_bool(0.2) {
            Some(("BIENVENUE10", 10))
        } else if self.birthday_known && date.month() == self.person.birthday.month() && self.rng.random_bool(0.4) {
            Some(("ANNIV15", 15))
        } else {
            None
        };
        let Some((order_id, bill)) = self.checkout(device, lines, coupon) else {
            return false;
        };
        if !self.newsletter && self.rng.random_bool(0.15) {
            self.subscribe(device, "checkout");
        }
        self.wait(30, 240);
        self.visit(
            device,
            "/commande/confirmation".into(),
            "Merci pour votre commande | Vinyles & Cie".into(),
            "Confirmation",
        );
        // The shop's server confirms the payment, a moment after the browser got there.
        let at = self.t + self.rng.random_range(200..3000);
        self.server_track("backend", at, "Order Completed", bill.order(&order_id, None), None);
        self.orders += 1;
        if self.orders == 1 || !self.address_given {
            let mut traits = Map::new();
            if !self.address_given {
                self.address_given = true;
                traits.insert("address".into(), self.person.address());
                traits.insert("city".into(), self.person.city.name.into());
                traits.insert("postal_code".into(), self.person.postal_code.into());
            }
            if self.orders == 1 {
                traits.insert("customer_since".into(), date.to_string().into());
            }
            self.identify("accounts", at + 1, traits);
        }
        self.after_web_order(&order_id, &bill, at);
        true
    }

    /// A purchase at a till; the first one gives the customer a loyalty card.
    fn store_order(&mut self, day: i64, store: usize) {
        let day = if self.calendar.date(day).weekday() == Weekday::Sunday {
            day + 1
        } else {
            day
        };
        self.t = self
            .calendar
            .at(day, self.rng.random_range(600..1140))
            .max(self.t + 10 * MINUTE_MS);
        let (store_name, code) = STORES[store];
        if self.card.is_none() {
            let card = format!("VC-{code}-{:06}", self.person.index + 1);
            self.card = Some(card.clone());
            self.card_at = self.t;
            let p = &self.person;
            let mut traits = Map::new();
            traits.insert("loyalty_card".into(), card.into());
            traits.insert("loyalty_tier".into(), "bronze".into());
            traits.insert("email".into(), p.email.clone().into());
            traits.insert("first_name".into(), p.first_name.into());
            traits.insert("last_name".into(), p.last_name.into());
            traits.insert("postal_code".into(), p.postal_code.into());
            traits.insert("city".into(), p.city.name.into());
            traits.insert("country".into(), p.city.country.into());
            if p.shares_phone && self.rng.random_bool(0.7) {
                traits.insert("phone".into(), p.phone.clone().into());
            }
            if self.rng.random_bool(0.5) {
                self.birthday_known = true;
                traits.insert("birthday".into(), p.birthday.to_string().into());
            }
            if self.orders == 0 {
                traits.insert(
                    "customer_since".into(),
                    self.calendar.date_of(self.t).to_string().into(),
                );
            }
            // The till knows nothing of web accounts: the card is its customer id.
            let mut m = message("identify", None, self.card.as_deref());
            m.insert("traits".into(), Value::Object(traits));
            m.insert("context".into(), context("tills"));
            self.emit(self.t, "tills", m);
            // Some web customers then add their card to their account.
            if self.user_id.is_some() && self.rng.random_bool(0.5) {
                let at = self.t + self.rng.random_range(1..=10) * DAY_MS;
                let mut traits = Map::new();
                traits.insert("loyalty_card".into(), self.card.clone().into());
                self.identify("accounts", at, traits);
            }
        }
        self.wait(60, 600);

        let lines: Vec<(Product, i64)> = (0..1 + weighted(&mut self.rng, &[50, 30, 14, 6]))
            .map(|_| {
                let mut product = self.pick_product();
                // In a record store, people leave with records.
                if !FORMATS[product.format].shipped || self.rng.random_bool(0.4) {
                    product.format = VINYL;
                }
                (product, if self.rng.random_bool(0.05) { 2 } else { 1 })
            })
            .collect();
        self.orders += 1;
        self.store_orders += 1;
        let order_id = format!("T-{code}-{:06}-{:02}", self.person.index + 1, self.store_orders);
        let bill = Bill::new(lines, None, false);
        let mut m = message("track", None, self.card.as_deref());
        let mut till = context("tills");
        till["traits"] = json!({"loyalty_card": self.card, "email": self.person.email});
        m.insert("context".into(), till);
        self.emit(
            self.t,
            "tills",
            track(m, "Order Completed", bill.order(&order_id, Some(store_name))),
        );

        let tier = match self.store_orders {
            3 => Some("argent"),
            6 => Some("or"),
            _ => None,
        };
        if let Some(tier) = tier {
            let mut m = message("identify", None, self.card.as_deref());
            m.insert(
                "traits".into(),
                json!({"loyalty_card": self.card, "loyalty_tier": tier}),
            );
            m.insert("context".into(), context("tills"));
            self.emit(self.t + 1, "tills", m);
        }

        let survey = if self.store_orders == 1 { 0.35 } else { 0.1 };
        if self.rng.random_bool(survey) {
            self.post_purchase_questionnaire(self.t, false);
        }
        if self.rng.random_bool(0.03) {
            self.ticket(self.t, &order_id, false);
        }
    }

    // ---- post-purchase ----

    fn after_web_order(&mut self, order_id: &str, bill: &Bill, at: i64) {
        let day = self.calendar.day_of(at);
        let mut late = false;
        let delivered = if bill.shipped() {
            late = self.rng.random_bool(0.07);
            let delay = if late {
                self.rng.random_range(6..=12)
            } else {
                1 + weighted(&mut self.rng, &[15, 35, 30, 12, 8]) as i64
            };
            let delivered = self.calendar.at(day + delay, self.rng.random_range(540..1080));
            let carrier =
                ["Colissimo", "Chronopost", "Mondial Relay", "DPD"][weighted(&mut self.rng, &[50, 15, 25, 10])];
            self.server_track(
                "backend",
                delivered,
                "Order Delivered",
                json!({"order_id": order_id, "carrier": carrier, "delay_days": delay}),
                None,
            );
            delivered
        } else {
            at
        };
        let survey = if self.orders == 1 { 0.7 } else { 0.25 };
        if self.rng.random_bool(survey) {
            self.post_purchase_questionnaire(delivered, late);
        }
        // A late parcel makes people call before it arrives; other problems show on delivery.
        if late && self.rng.random_bool(0.35) {
            self.ticket(at + 3 * DAY_MS, order_id, true);
        } else if self.rng.random_bool(0.05) {
            self.ticket(delivered, order_id, false);
        }
    }

    /// The satisfaction survey, e-mailed two days after delivery or a store visit.
    fn post_purchase_questionnaire(&mut self, after: i64, late: bool) {
        let sent = self
            .calendar
            .at(self.calendar.day_of(after) + 2, 600 + self.rng.random_range(0..30));
        let questionnaire = json!({
            "questionnaire_id": "satisfaction-achat",
            "phase": "post_purchase",
            "touchpoint": "post_purchase_questionnaire",
        });
        self.server_track("forms", sent, "Questionnaire Sent", questionnaire.clone(), None);
        if !self.rng.random_bool(0.4) {
            return;
        }
        let answered = sent + self.rng.random_range(2 * HOUR_MS..3 * DAY_MS);
        let satisfaction = if late {
            1 + weighted(&mut self.rng, &[25, 30, 25, 15, 5])
        } else {
            1 + weighted(&mut self.rng, &[3, 5, 12, 35, 45])
        };
        let mut properties = questionnaire;
        properties["satisfaction"] = satisfaction.into();
        properties["answers"] = json!({"recommanderait": satisfaction >= 4, "reviendra": satisfaction >= 3});
        self.server_track("forms", answered, "Questionnaire Answered", properties, None);
        if self.rng.random_bool(0.3) {
            let mut traits = Map::new();
            self.person.tastes(&mut traits);
            self.identify("forms", answered + 1, traits);
        }
    }

    /// A customer-service ticket about an order, opened in office hours after `after`.
    fn ticket(&mut self, after: i64, order_id: &str, late: bool) {
        self.tickets += 1;
        let ticket_id = format!("SAV-{:06}-{}", self.person.index + 1, self.tickets);
        let mut day = self.calendar.day_of(after) + self.rng.random_range(0..=3);
        let opened = loop {
            let opened = self.office_hours(day);
            if opened > after + 30 * MINUTE_MS {
                break opened;
            }
            day += 1;
        };
        let topic = if late {
            "delivery"
        } else {
            ["damaged_item", "return", "order_change", "account", "loyalty"]
                [weighted(&mut self.rng, &[30, 30, 15, 15, 10])]
        };
        let channel = ["phone", "email", "chat"][weighted(&mut self.rng, &[40, 40, 20])];
        let mut traits = json!({"email": self.person.email});
        if channel == "phone" && self.person.shares_phone {
            traits["phone"] = self.person.phone.clone().into();
        }
        self.server_track(
            "helpdesk",
            opened,
            "Support Ticket Opened",
            json!({"ticket_id": ticket_id, "topic": topic, "channel": channel, "order_id": order_id}),
            Some(traits),
        );
        let resolved = if self.rng.random_bool(0.5) {
            opened + self.rng.random_range(10 * MINUTE_MS..4 * HOUR_MS)
        } else {
            let day = self.calendar.day_of(opened) + self.rng.random_range(1..=5);
            self.office_hours(day)
        };
        let resolution = match topic {
            "delivery" => ["reshipped", "refunded", "delivered"][self.rng.random_range(0..3)],
            "damaged_item" => ["replaced", "refunded"][self.rng.random_range(0..2)],
            "return" => "refunded",
            _ => "answered",
        };
        let mut properties = json!({"ticket_id": ticket_id, "resolution": resolution});
        if self.rng.random_bool(0.7) {
            properties["satisfaction"] = (1 + weighted(&mut self.rng, &[8, 10, 17, 30, 35])).into();
        }
        self.server_track("helpdesk", resolved, "Support Ticket Resolved", properties, None);
    }

    /// A time on a weekday, 9:00 to 18:00, on or after `day`.
    fn office_hours(&mut self, day: i64) -> i64 {
        let day = match self.calendar.date(day).weekday() {
            Weekday::Saturday => day + 2,
            Weekday::Sunday => day + 1,
            _ => day,
        };
        self.calendar.at(day, self.rng.random_range(540..1080))
    }

    /// A new baby, entered some weeks later in the family section of the customer's account.
    fn household_birth(&mut self) {
        let Some(birth) = self.person.household_birth else {
            return;
        };
        if self.user_id.is_none() {
            return;
        }
        let day = (birth + self.rng.random_range(7..=45)).max(self.calendar.day_of(self.account_at) + 1);
        let at = self.calendar.at(day, self.rng.random_range(600..1380));
        let mut traits = Map::new();
        traits.insert("household_birth".into(), self.calendar.date(birth).to_string().into());
        self.identify("accounts", at, traits);
    }
}

fn home() -> (String, String, &'static str) {
    (
        "/".into(),
        "Vinyles & Cie — disquaire à Paris, Lyon et en ligne".into(),
        "Accueil",
    )
}

fn style_page(style: usize) -> (String, String, &'static str) {
    let name = STYLES[style].name;
    (
        format!("/styles/{}", slug(name, Some('-'))),
        format!("{} | Vinyles & Cie", capitalise(name)),
        "Style",
    )
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use confiance_core::catalog::Catalog;
    use confiance_core::collect::{Envelope, normalize};
    use std::collections::{BTreeSet, HashMap, HashSet};

    fn now() -> Timestamp {
        "2026-11-29T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn collection_keeps_every_message_whole() {
        let catalog = Catalog::builtin();
        let messages = generate(500, 7, now());
        let mut ids = HashSet::new();
        let mut previous = String::new();
        for DemoMessage { source, message } in &messages {
            let declared = catalog
                .sources
                .get(*source)
                .unwrap_or_else(|| panic!("undeclared source {source}"));
            let n = normalize(message.clone(), &Envelope::default(), &catalog, now())
                .unwrap_or_else(|e| panic!("{message}: {e}"));
            assert!(n.dropped.is_empty(), "{message}: dropped {:?}", n.dropped);
            if let Some(event) = &n.message.event
                && n.message.kind.as_str() == "track"
            {
                let touchpoints = &catalog.events[event].touchpoints;
                assert!(
                    touchpoints.iter().any(|t| declared.touchpoints.contains(t)),
                    "{source} does not cover a touchpoint of {event}"
                );
            }
            assert!(n.message.timestamp < now(), "{message}");
            assert!(ids.insert(n.message.message_id.clone()), "duplicate id in {message}");
            let timestamp = message["timestamp"].as_str().unwrap().to_owned();
            assert!(timestamp.parse::<Timestamp>().unwrap() >= previous.parse().unwrap_or(Timestamp::MIN));
            previous = timestamp;
            let context = &message["context"];
            assert!(context["library"]["name"].is_string(), "{message}");
            if *source == "web" {
                for field in ["locale", "userAgent"] {
                    assert!(context[field].is_string(), "{message}");
                }
                assert!(context["page"]["url"].as_str().unwrap().starts_with(SITE), "{message}");
                for category in context["consent"]["categoryPreferences"].as_object().unwrap().keys() {
                    assert!(
                        catalog.purposes.values().any(|p| p.signals.segment.contains(category)),
                        "{category} maps to no purpose"
                    );
                }
                let ip = context["ip"].as_str().unwrap();
                assert!(
                    ["192.0.2.", "198.51.100.", "203.0.113."]
                        .iter()
                        .any(|net| ip.starts_with(net)),
                    "{ip}"
                );
            }
        }
    }

    #[test]
    fn a_seed_always_gives_the_same_demo() {
        let first = generate(300, 42, now());
        assert_eq!(first, generate(300, 42, now()));
        assert_ne!(first, generate(300, 43, now()));
        // Customers do not depend on how many are asked for.
        let without_id = |messages: Vec<DemoMessage>| -> HashSet<String> {
            messages
                .into_iter()
                .map(|mut m| {
                    m.message.as_object_mut().unwrap().remove("messageId");
                    m.message.to_string()
                })
                .collect()
        };
        let fewer = without_id(generate(100, 42, now()));
        assert!(fewer.is_subset(&without_id(first)));
    }

    /// The ids and contact details a message carries, which tie it to one person.
    fn keys(message: &Value) -> Vec<String> {
        let mut keys = Vec::new();
        for field in ["userId", "anonymousId"] {
            if let Some(id) = message[field].as_str() {
                keys.push(format!("{field}:{id}"));
            }
        }
        for traits in [&message["traits"], &message["context"]["traits"]] {
            for name in ["email", "loyalty_card"] {
                if let Some(value) = traits[name].as_str() {
                    keys.push(format!("{name}:{value}"));
                }
            }
        }
        keys
    }

    /// The messages of each person, found by linking the messages that share an id, an e-mail
    /// or a loyalty card, as identity resolution would.
    fn people(messages: &[DemoMessage]) -> Vec<Vec<&DemoMessage>> {
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut parent: Vec<usize> = Vec::new();
        let mut first_key = Vec::new();
        for m in messages {
            let keys: Vec<usize> = keys(&m.message)
                .into_iter()
                .map(|k| {
                    *index.entry(k).or_insert_with(|| {
                        parent.push(parent.len());
                        parent.len() - 1
                    })
                })
                .collect();
            for &k in &keys[1..] {
                let (a, b) = (root(&mut parent, keys[0]), root(&mut parent, k));
                parent[a] = b;
            }
            first_key.push(keys[0]);
        }
        let mut groups: HashMap<usize, Vec<&DemoMessage>> = HashMap::new();
        for (m, k) in messages.iter().zip(first_key) {
            groups.entry(root(&mut parent, k)).or_default().push(m);
        }
        groups.into_values().collect()
    }

    fn is_order(m: &DemoMessage) -> bool {
        m.message["event"] == "Order Completed"
    }

    #[test]
    fn journeys_cover_the_whole_customer_journey() {
        let catalog = Catalog::builtin();
        let customers = 2000;
        let messages = generate(customers, 3, now());
        let people = people(&messages);
        // A visitor who browsed anonymously and then bought in a store stays two people: nothing
        // links them. No one else is split, and no two customers are ever merged.
        assert!(
            (customers..customers + customers / 50).contains(&people.len()),
            "{} people",
            people.len()
        );
        for person in &people {
            let emails: BTreeSet<&str> = person
                .iter()
                .flat_map(|m| [&m.message["traits"]["email"], &m.message["context"]["traits"]["email"]])
                .filter_map(Value::as_str)
                .collect();
            assert!(emails.len() <= 1, "{emails:?} merged");
        }

        let events: BTreeSet<&str> = messages.iter().filter_map(|m| m.message["event"].as_str()).collect();
        let declared: BTreeSet<&str> = catalog.events.keys().map(String::as_str).collect();
        assert_eq!(events, declared, "every declared event happens");
        let kinds: BTreeSet<&str> = messages.iter().map(|m| m.message["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, BTreeSet::from(["identify", "page", "track"]));
        let sources: BTreeSet<&str> = messages.iter().map(|m| m.source).collect();
        assert_eq!(sources, catalog.sources.keys().map(String::as_str).collect());
        let mut touched: BTreeSet<&str> = BTreeSet::from(["site_visit"]);
        for m in &messages {
            if let Some(event) = m.message["event"].as_str() {
                let covered = &catalog.sources[m.source].touchpoints;
                touched.extend(
                    catalog.events[event]
                        .touchpoints
                        .iter()
                        .filter(|t| covered.contains(t))
                        .map(String::as_str),
                );
            }
        }
        assert_eq!(touched, catalog.touchpoints.keys().map(String::as_str).collect());

        let buyers: Vec<_> = people.iter().filter(|p| p.iter().any(|m| is_order(m))).collect();
        let conversion = buyers.len() as f64 / customers as f64;
        assert!((0.3..=0.42).contains(&conversion), "{conversion} of customers order");
        let repeat = buyers
            .iter()
            .filter(|p| p.iter().filter(|m| is_order(m)).count() > 1)
            .count();
        assert!(
            repeat * 3 > buyers.len(),
            "{repeat} of {} buyers come back",
            buyers.len()
        );
        let store_only = people
            .iter()
            .filter(|p| p.iter().any(|m| m.source == "tills") && !p.iter().any(|m| m.source == "web"))
            .count();
        assert!(store_only > customers / 25, "{store_only} only shop in store");
        let both = buyers
            .iter()
            .filter(|p| p.iter().any(|m| m.source == "tills") && p.iter().any(|m| m.source == "backend"))
            .count();
        assert!(both > 0, "some buy both online and in store");

        let traits = |name: &str| -> Vec<&Value> {
            messages
                .iter()
                .flat_map(|m| [&m.message["traits"][name], &m.message["context"]["traits"][name]])
                .filter(|v| !v.is_null())
                .collect()
        };
        assert!(
            traits("birthday")
                .iter()
                .any(|b| b.as_str().unwrap().ends_with("-02-29"))
        );
        assert!(
            traits("hobbies")
                .iter()
                .any(|h| h.as_array().unwrap().contains(&"surf".into()))
        );
        assert!(!traits("household_birth").is_empty());
        assert!(traits("timezone").iter().any(|t| *t != "Europe/Paris"));
        assert!(traits("language").iter().any(|l| *l == "en"));
        for name in catalog.traits.keys() {
            assert!(!traits(name).is_empty(), "the trait {name} is never sent");
        }
    }

    #[test]
    fn contact_details_are_fictional() {
        let messages = generate(500, 11, now());
        let mut emails = 0;
        for m in &messages {
            for traits in [&m.message["traits"], &m.message["context"]["traits"]] {
                if let Some(email) = traits["email"].as_str() {
                    emails += 1;
                    let domain = email.rsplit_once('@').unwrap().1;
                    assert!(
                        ["example.org", "example.com", "example.net"].contains(&domain),
                        "{email}"
                    );
                }
                if let Some(phone) = traits["phone"].as_str() {
                    assert!(phone.starts_with("+33 6 39 98 "), "{phone}");
                }
            }
        }
        assert!(emails > 100, "only {emails} e-mail addresses seen");
    }
}
