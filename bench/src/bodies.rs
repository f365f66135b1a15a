//! Request bodies for the ingestion benchmark: batches of realistic track events.
//!
//! # Design
//!
//! The events are what the demo shop's website sends while people browse and buy records:
//! mostly `Product Viewed`, then searches, cart additions, checkouts and orders, each with the
//! `context` analytics.js fills in (library, page, user agent, IP, locale), a `timestamp` and a
//! `sentAt`. They use only the events and properties that the built-in catalog declares, and
//! [`Bodies::build`] checks that against the catalog, so Confiance stores every event whole
//! and the benchmark measures ingestion, not data minimisation throwing work away.
//!
//! The events come from a population of returning visitors who accepted audience measurement
//! and personalisation on the cookie banner and refused advertising: each event carries that
//! choice in `context.consent.categoryPreferences`, as Segment's consent wrapper sends it. So
//! Confiance records a visitor's consent on their first event and keeps every event under it,
//! as on a real site, rather than withholding them all for lack of consent or recording new
//! consent for every event. The load generator sends every template once before it measures
//! ([`Bodies::templates`]), so the first events are not what is measured.
//!
//! Every event of the whole run must have its own `messageId`, or Confiance would deduplicate
//! it. Building a distinct body for every request in advance would take gigabytes at the
//! rates measured, and building it with `serde_json` while the clock runs would charge JSON
//! serialisation to the server being measured (the load generator shares its two cores). So a
//! few templates are built in advance, each `messageId` holding a fixed-width slot, and
//! [`Bodies::request`] copies a template and writes the request's sequence number into the
//! slots: a copy of about 75 KB and a hundred 16-byte writes, the same for every server.

use anyhow::{Context, bail, ensure};
use confiance_core::catalog::Catalog;
use serde_json::{Value, json};

/// Marks the slot where the request number goes in a template's `messageId`s.
const SLOT: &str = "################";

/// Distinct batches cycled through, so consecutive requests carry different users and events.
const TEMPLATES: usize = 32;

/// Visitors the events of the templates are drawn from: with 3,200 draws, about 1,600 of them
/// appear, each in two batches on average.
const VISITORS: usize = 2_000;

/// Pre-built batches of track events and where each request's number goes in them.
pub struct Bodies {
    templates: Vec<Template>,
    /// Events per batch.
    pub batch_size: usize,
}

struct Template {
    bytes: Vec<u8>,
    slots: Vec<usize>,
}

impl Bodies {
    /// Builds the templates: batches of `batch_size` events, checked against `catalog`.
    pub fn build(batch_size: usize, catalog: &Catalog) -> anyhow::Result<Self> {
        ensure!((1..=256).contains(&batch_size), "a batch holds 1 to 256 events here");
        let mut rng = Rng(0x5eed_c0ff_ee00_0001);
        let visitors: Vec<Visitor> = (0..VISITORS).map(|_| Visitor::new(&mut rng)).collect();
        let mut templates = Vec::with_capacity(TEMPLATES);
        for _ in 0..TEMPLATES {
            let events: Vec<Value> = (0..batch_size)
                .map(|index| {
                    let visitor = &visitors[rng.below(visitors.len())];
                    event(&mut rng, visitor, index)
                })
                .collect();
            for e in &events {
                check_declared(e, catalog)?;
            }
            let bytes = serde_json::to_vec(&json!({ "batch": events }))?;
            let slots: Vec<usize> = bytes
                .windows(SLOT.len())
                .enumerate()
                .filter(|(_, w)| *w == SLOT.as_bytes())
                .map(|(at, _)| at)
                .collect();
            ensure!(
                slots.len() == batch_size,
                "found {} messageId slots in a batch of {batch_size}",
                slots.len()
            );
            templates.push(Template { bytes, slots });
        }
        Ok(Self { templates, batch_size })
    }

    /// The body of request number `n`: its events' `messageId`s are unique across the run.
    pub fn request(&self, n: u64) -> Vec<u8> {
        let template = &self.templates[(n % self.templates.len() as u64) as usize];
        let mut bytes = template.bytes.clone();
        let number = format!("{n:016x}");
        for &at in &template.slots {
            bytes[at..at + SLOT.len()].copy_from_slice(number.as_bytes());
        }
        bytes
    }

    /// How many distinct batches the requests cycle through.
    pub fn templates(&self) -> u64 {
        self.templates.len() as u64
    }

    /// The average size of one event in the JSON bodies, in bytes.
    pub fn event_bytes(&self) -> usize {
        self.request_bytes() / self.batch_size
    }

    /// The average size of one request body, in bytes.
    pub fn request_bytes(&self) -> usize {
        self.templates.iter().map(|t| t.bytes.len()).sum::<usize>() / self.templates.len()
    }
}

/// Fails if `event` names an event or a property that the catalog does not declare, or a value
/// of another type than declared: the benchmark would then measure less than it claims.
fn check_declared(event: &Value, catalog: &Catalog) -> anyhow::Result<()> {
    let name = event["event"].as_str().context("a track event has a name")?;
    let Some(def) = catalog.events.get(name) else {
        bail!("the catalog does not declare the event `{name}`");
    };
    let properties = event["properties"]
        .as_object()
        .context("a track event has properties")?;
    for (key, value) in properties {
        match def.properties.get(key) {
            Some(ty) if ty.accepts(value) => {}
            _ => bail!("the catalog does not accept `{name}`.properties.{key} = {value}"),
        }
    }
    Ok(())
}

/// A small deterministic generator (splitmix64): the same bodies on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Records of the shop: (artist, title, genre).
const RECORDS: &[(&str, &str, &str)] = &[
    ("Miles Davis", "Kind of Blue", "Jazz"),
    ("John Coltrane", "A Love Supreme", "Jazz"),
    ("Serge Gainsbourg", "Histoire de Melody Nelson", "Chanson"),
    ("Françoise Hardy", "Tous les garçons et les filles", "Chanson"),
    ("Daft Punk", "Discovery", "Électro"),
    ("Air", "Moon Safari", "Électro"),
    ("Pink Floyd", "The Dark Side of the Moon", "Rock"),
    ("Fleetwood Mac", "Rumours", "Rock"),
    ("Nina Simone", "Pastel Blues", "Soul"),
    ("Fela Kuti", "Zombie", "Afrobeat"),
    ("Christine and the Queens", "Chaleur humaine", "Pop"),
    ("Radiohead", "OK Computer", "Rock"),
];

const FORMATS: &[&str] = &["vinyle 180 g", "double vinyle", "CD", "cassette"];

const SEARCHES: &[&str] = &[
    "gainsbourg vinyle",
    "jazz modal",
    "pressage original",
    "daft punk discovery",
    "coffret beatles",
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];

/// The IP address ranges reserved for documentation (RFC 5737).
const IP_PREFIXES: &[&str] = &["192.0.2", "198.51.100", "203.0.113"];

/// Someone browsing the shop, always from the same browser.
struct Visitor {
    anonymous_id: String,
    user_id: Option<String>,
    user_agent: &'static str,
    ip: String,
}

impl Visitor {
    fn new(rng: &mut Rng) -> Self {
        let anonymous_id = format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            rng.next() as u32,
            rng.next() as u16,
            rng.below(0x1000),
            rng.below(0x1000),
            rng.next() & 0xffff_ffff_ffff
        );
        Self {
            anonymous_id,
            // Seven visitors in ten are logged in.
            user_id: (rng.below(10) < 7).then(|| format!("cli-{:06}", rng.below(1_000_000))),
            user_agent: *rng.pick(USER_AGENTS),
            ip: format!("{}.{}", rng.pick(IP_PREFIXES), 1 + rng.below(254)),
        }
    }
}

/// One track event of `visitor`, at position `index` of its batch.
fn event(rng: &mut Rng, visitor: &Visitor, index: usize) -> Value {
    let (artist, title, genre) = *rng.pick(RECORDS);
    let product = 10_000 + rng.below(90_000);
    let format = *rng.pick(FORMATS);
    let cents = 1_490 + rng.below(3_500);
    let price = euros(cents);
    let slug = title.to_lowercase().replace(' ', "-");
    let order = format!("CMD-2026-{:06}", rng.below(1_000_000));
    let (name, properties, path, page_title) = match rng.below(100) {
        0..=54 => (
            "Product Viewed",
            json!({
                "product_id": format!("LP-{product}"), "name": title, "artist": artist, "category": genre, "format": format,
                "price": price, "currency": "EUR",
            }),
            format!("/disques/{slug}-{product}"),
            format!("{title} – {artist}"),
        ),
        55..=69 => (
            "Products Searched",
            json!({ "query": *rng.pick(SEARCHES) }),
            "/recherche".to_owned(),
            "Recherche".to_owned(),
        ),
        70..=84 => (
            "Product Added",
            json!({
                "product_id": format!("LP-{product}"), "name": title, "artist": artist,
                "category": genre, "format": format, "price": price,
                "quantity": 1 + rng.below(2), "currency": "EUR",
            }),
            format!("/disques/{slug}-{product}"),
            format!("{title} – {artist}"),
        ),
        85..=92 => (
            "Checkout Started",
            json!({ "order_id": order, "value": euros(cents + SHIPPING), "currency": "EUR" }),
            "/panier/paiement".to_owned(),
            "Paiement".to_owned(),
        ),
        _ => (
            "Order Completed",
            json!({
                "order_id": order, "total": euros(cents + SHIPPING), "revenue": price,
                "shipping": euros(SHIPPING), "tax": euros(cents / 6),
                "currency": "EUR", "channel": "web",
                "products": [{ "product_id": format!("LP-{product}"), "price": price, "quantity": 1 }],
            }),
            "/commande/confirmation".to_owned(),
            "Merci !".to_owned(),
        ),
    };
    let millis = rng.below(86_400_000);
    let sent = millis + 200 + rng.below(2_000);
    let mut event = json!({
        "type": "track",
        "messageId": format!("ajs-next-{SLOT}{:014x}{index:02x}", rng.next() >> 8),
        "anonymousId": visitor.anonymous_id,
        "event": name,
        "properties": properties,
        "context": {
            "library": { "name": "analytics.js", "version": "1.76.0" },
            "page": { "path": path, "title": page_title },
            "userAgent": visitor.user_agent,
            "ip": visitor.ip,
            "locale": "fr-FR",
            // The choice made on the cookie banner, as Segment's consent wrapper stamps it.
            "consent": { "categoryPreferences": {
                "Analytics": true, "Personalization": true, "Advertising": false,
            } },
        },
        "timestamp": time_of_day(millis),
        "sentAt": time_of_day(sent),
    });
    if let Some(user_id) = &visitor.user_id {
        event["userId"] = user_id.as_str().into();
    }
    event
}

/// Shipping, in cents.
const SHIPPING: usize = 490;

/// An amount in cents as the SDKs send prices: a JSON number of euros.
fn euros(cents: usize) -> f64 {
    cents as f64 / 100.0
}

/// An instant on 28 November 2026, `millis` after midnight UTC (at most a day and a bit).
fn time_of_day(millis: usize) -> String {
    let (day, millis) = (28 + millis / 86_400_000, millis % 86_400_000);
    format!(
        "2026-11-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// The issue sets about 600 bytes per event; the consent signal, which came later, adds
    /// about 120.
    fn events_are_about_700_bytes_and_their_message_ids_unique() {
        let bodies = Bodies::build(100, &Catalog::builtin()).unwrap();
        let first: Value = serde_json::from_slice(&bodies.request(0)).unwrap();
        let sample = serde_json::to_string(&first["batch"][0]).unwrap();
        assert!(
            (600..=800).contains(&bodies.event_bytes()),
            "{} bytes on average; for example {} bytes: {sample}",
            bodies.event_bytes(),
            sample.len()
        );
        let mut ids = std::collections::HashSet::new();
        for n in [0, 1, 32, 0xdead_beef] {
            let batch: Value = serde_json::from_slice(&bodies.request(n)).unwrap();
            for e in batch["batch"].as_array().unwrap() {
                assert!(ids.insert(e["messageId"].as_str().unwrap().to_owned()));
            }
        }
        assert_eq!(ids.len(), 400);
    }
}
