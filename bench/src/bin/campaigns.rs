//! Campaigns: the daily date-trigger scan over 1M profiles and the send rate to SMTP, each
//! against a baseline measured in the same run.
//!
//! ```text
//! cargo run --release -p confiance-bench --bin campaigns [-- --profiles N --messages N --fans N]
//! ```
//!
//! # Design
//!
//! **Scan.** One day of a birthday campaign as the scheduler runs it: `due_in_index` over the
//! audience index for a 24-hour window, then `guard::decide` for every occurrence it finds, with
//! consent from the index's lawful bitmap and a frequency cap read from recent sends held in
//! memory. The baseline is the simplest program that finds the same people: every profile as a
//! plain struct, `DateTrigger::due_between` on each, the same decision. Both answers must be
//! equal, occurrence by occurrence, or the benchmark stops. Twenty days spread over 2026 are
//! scanned, among them the days that send for 29 February in a common year, the two
//! daylight-saving changes and a window whose anniversaries fall in the next year.
//!
//! **Sending.** An SMTP sink in this process accepts and discards every message. The baseline is
//! lettre's own transport in a loop, with the features the workspace builds it with; the product
//! channel is `Mailer::send_campaign` with a rendered message; the whole scheduler is `tick` over
//! a SQLite store until a tour announcement has reached every fan. Each run is checked against the
//! sink's count of messages received.
//!
//! Everything is measured twice, against two sinks. The first acknowledges TCP segments when the
//! kernel decides, as every SMTP server does; lettre 0.11.23 leaves Nagle's algorithm on and
//! writes the end of DATA apart from the body, so each message then waits for a delayed ACK, about
//! 40 ms, whatever sends it. The second acknowledges every read at once (`TCP_QUICKACK`), which
//! takes that wait away and shows what the senders themselves cost. Two more lettre senders, one
//! connection kept open with and without `TCP_NODELAY`, say what a connection pool and the socket
//! option would each change.

use anyhow::{Context as _, bail, ensure};
use confiance_core::activate::guard::{self, CapPolicy, Decision, Facts, FrequencyCap, Reason, Rules};
use confiance_core::activate::template::{self, Context, Links, MessageTemplate, VoucherView};
use confiance_core::activate::trigger::{DateTrigger, LeapDay, due_in_index, zone_of};
use confiance_core::catalog::Catalog;
use confiance_core::clock::ManualClock;
use confiance_core::collect::{Envelope, normalize};
use confiance_core::consent::link::LinkKey;
use confiance_core::consent::{Decision as ConsentDecision, Method, Status, Subject};
use confiance_core::segment::{self, index::AudienceIndex, index::ProfileFacts};
use confiance_core::source::{KeyDigest, SourceKind, SourceName, WriteKey};
use confiance_server::mail::Mailer;
use confiance_server::{AppState, Options};
use confiance_store::{Role, Store};
use jiff::civil::{Date, date};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SEED: u64 = 0xCA4_2026;
const PURPOSE: &str = "marketing_email";
const DEFAULT_ZONE: &str = "Europe/Paris";
/// Time zones of the synthetic customers of a French shop, and how many have each; `None` gave
/// none (the shop's zone applies). The far ones test the scan's slack of ±26 hours.
const ZONES: &[(Option<&str>, f64)] = &[
    (Some("Europe/Paris"), 84.0),
    (None, 4.0),
    (Some("America/Montreal"), 3.0),
    (Some("Europe/London"), 2.0),
    (Some("Indian/Reunion"), 2.0),
    (Some("Europe/Brussels"), 1.5),
    (Some("America/Guadeloupe"), 1.5),
    (Some("Pacific/Noumea"), 1.0),
    (Some("Pacific/Tahiti"), 1.0),
];
/// The scanned days (each window is that day, 00:00 to 24:00 UTC): spread over the year, with
/// 25 February (29 February birthdays, three days ahead, in a common year), the two
/// daylight-saving changes in Europe, and 30 December (birthdays of 2 January 2027).
const DAYS: [&str; 20] = [
    "2026-01-01",
    "2026-01-20",
    "2026-02-08",
    "2026-02-25",
    "2026-03-14",
    "2026-03-29",
    "2026-04-18",
    "2026-05-07",
    "2026-05-26",
    "2026-06-14",
    "2026-07-03",
    "2026-07-22",
    "2026-08-10",
    "2026-08-29",
    "2026-09-17",
    "2026-10-06",
    "2026-10-25",
    "2026-11-13",
    "2026-12-02",
    "2026-12-30",
];
/// Rounds of the SMTP comparison; each sends `--messages` per sender, the senders interleaved so
/// that a change of load on the shared machine hits them alike.
const ROUNDS: usize = 3;
const TOKEN: &str = "bench-admin-token-0123456789";
const PUBLIC_URL: &str = "https://vinyles.example";
const FROM: &str = "Vinyles & Cie <bonjour@vinyles.example>";

struct Args {
    profiles: usize,
    messages: usize,
    fans: usize,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            profiles: 1_000_000,
            messages: 2_000,
            fans: 2_000,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let number = it
                .next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .with_context(|| format!("{a} wants a number"));
            match a.as_str() {
                "--profiles" => args.profiles = number?,
                "--messages" => args.messages = number?,
                "--fans" => args.fans = number?,
                _ => bail!("unknown argument {a}: --profiles N, --messages N, --fans N"),
            }
        }
        ensure!(
            args.profiles > 0 && args.messages > 0 && args.fans > 0,
            "every count must be at least 1"
        );
        Ok(args)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "campaigns: machine {cores} cores, load average {} at the start",
        load_average()
    );
    scan(&args)?;
    println!();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(sending(&args))?;
    println!("load average at the end: {}", load_average());
    Ok(())
}

// ---- the daily scan ----------------------------------------------------------------------------

/// One synthetic person as the baseline holds them.
struct Person {
    profile: i64,
    birthday: Option<Date>,
    zone: Option<&'static str>,
    lawful: bool,
}

impl Person {
    fn facts(&self) -> ProfileFacts {
        let mut traits = BTreeMap::new();
        if let Some(b) = self.birthday {
            traits.insert("birthday".to_owned(), json!(b.to_string()));
        }
        if let Some(z) = self.zone {
            traits.insert("timezone".to_owned(), json!(z));
        }
        let mut lawful = BTreeSet::from(["service".to_owned()]);
        if self.lawful {
            lawful.insert(PURPOSE.to_owned());
        }
        ProfileFacts {
            traits,
            events: Vec::new(),
            lawful,
        }
    }
}

fn people(n: usize) -> Vec<Person> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let total: f64 = ZONES.iter().map(|z| z.1).sum();
    // Ages 15 to 80 on 1 January 2026, any day: 29 February comes out about once in 1,461.
    let youngest = date(2011, 1, 1);
    let span = youngest.since(date(1945, 1, 1)).map_or(0, |s| s.get_days());
    (0..n)
        .map(|i| {
            let birthday = rng
                .random_bool(0.9)
                .then(|| youngest.checked_sub(jiff::Span::new().days(rng.random_range(0..span))))
                .and_then(Result::ok);
            let mut u = rng.random::<f64>() * total;
            let zone = ZONES
                .iter()
                .find(|(_, w)| {
                    u -= w;
                    u < 0.0
                })
                .and_then(|z| z.0);
            Person {
                profile: i as i64 + 1,
                birthday,
                zone,
                lawful: rng.random_bool(0.55),
            }
        })
        .collect()
}

/// Recent sends on the email channel before a window: in the six days before it, a fifth of
/// the people got one message and a tenth two or three, so that the second group is capped.
fn recent_sends(people: &[Person], after: Timestamp, seed: u64) -> HashMap<i64, Vec<Timestamp>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for p in people {
        let n = match rng.random::<f64>() {
            u if u < 0.2 => 1,
            u if u < 0.25 => 2,
            u if u < 0.3 => 3,
            _ => 0,
        };
        if n > 0 {
            let sends = (0..n)
                .map(|_| after - SignedDuration::from_secs(rng.random_range(0..6 * 86_400)))
                .collect();
            out.insert(p.profile, sends);
        }
    }
    out
}

/// An occurrence and what was decided for it.
type Decided = (i64, i16, Timestamp, Decision);

fn decide(now: Timestamp, lawful: bool, recent: &[Timestamp], tz: &TimeZone, rules: &Rules) -> Decision {
    guard::decide(
        &Facts {
            now,
            ends_at: None,
            lawful,
            objected: false,
            restricted: false,
            suppressed: false,
            has_address: true,
            recent_sends: recent,
            tz,
        },
        rules,
    )
}

/// The product: the day's candidates from the index, then the send-time decision of each.
fn product(
    index: &AudienceIndex,
    trigger: &DateTrigger,
    rules: &Rules,
    sends: &HashMap<i64, Vec<Timestamp>>,
    after: Timestamp,
    upto: Timestamp,
    default: &TimeZone,
) -> anyhow::Result<(Vec<Decided>, Duration, Duration)> {
    let started = Instant::now();
    let due = due_in_index(index, trigger, None, after, upto, default);
    let scanned = started.elapsed();
    let lawful = index.lawful(PURPOSE);
    let mut out = Vec::with_capacity(due.len());
    for (profile, year, at) in due {
        let slot = index.slot(profile).context("a due profile is indexed")?;
        let tz = zone_of(index.texts_of("timezone", slot).first().copied(), default);
        let recent = sends.get(&profile).map_or(&[][..], Vec::as_slice);
        out.push((profile, year, at, decide(at, lawful.contains(slot), recent, &tz, rules)));
    }
    Ok((out, scanned, started.elapsed()))
}

/// The baseline: every profile, its anniversaries in the window computed directly.
fn baseline(
    people: &[Person],
    zones: &HashMap<Option<&str>, TimeZone>,
    trigger: &DateTrigger,
    rules: &Rules,
    sends: &HashMap<i64, Vec<Timestamp>>,
    after: Timestamp,
    upto: Timestamp,
) -> (Vec<Decided>, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    for p in people {
        let Some(birthday) = p.birthday else { continue };
        let tz = &zones[&p.zone];
        for (year, at) in trigger.due_between(birthday, tz, after, upto) {
            let recent = sends.get(&p.profile).map_or(&[][..], Vec::as_slice);
            out.push((p.profile, year, at, decide(at, p.lawful, recent, tz, rules)));
        }
    }
    (out, started.elapsed())
}

fn scan(args: &Args) -> anyhow::Result<()> {
    let catalog = Catalog::builtin();
    let default = TimeZone::get(DEFAULT_ZONE)?;
    let trigger = DateTrigger {
        field: "birthday".into(),
        days_before: 3,
        local_hour: 9,
        leap_day: LeapDay::February28,
    };
    let rules = Rules {
        cap: Some(FrequencyCap {
            max: 2,
            days: 7,
            policy: CapPolicy::Skip,
        }),
        quiet: None,
    };
    let people = people(args.profiles);
    let mut index = AudienceIndex::new(segment::schema(&catalog));
    let started = Instant::now();
    for p in &people {
        index.upsert(p.profile, &p.facts());
    }
    let build = started.elapsed();
    let zones: HashMap<Option<&str>, TimeZone> = ZONES.iter().map(|(z, _)| (*z, zone_of(*z, &default))).collect();
    let born = people.iter().filter(|p| p.birthday.is_some()).count();
    let leap = people
        .iter()
        .filter(|p| p.birthday.is_some_and(|b| b.month() == 2 && b.day() == 29))
        .count();
    let lawful = people.iter().filter(|p| p.lawful).count();
    println!(
        "daily birthday scan: {} profiles ({born} with a birthday, {leap} born on 29 February; {lawful} with a basis \
         for {PURPOSE}); trigger 3 days before at 09:00 local; cap 2 per 7 days (skip); no quiet hours",
        args.profiles
    );
    println!(
        "index: built with AudienceIndex::upsert in {:.2} s (not timed below)",
        build.as_secs_f64()
    );

    // Warm-up: the product path once on a day outside the list.
    let warm: Timestamp = "2026-06-30T00:00:00Z".parse()?;
    black_box(product(
        &index,
        &trigger,
        &rules,
        &HashMap::new(),
        warm,
        warm + SignedDuration::from_hours(24),
        &default,
    )?);

    println!();
    println!(
        "{:<11} {:>11} {:>6} {:>9} {:>7} {:>10} {:>10} {:>11} {:>8}",
        "day", "occurrences", "sent", "no basis", "capped", "scan ms", "+decide ms", "baseline ms", "ratio"
    );
    let mut ours = Vec::new();
    let mut scans = Vec::new();
    let mut theirs = Vec::new();
    let mut totals = (0, 0, 0, 0);
    for (k, day) in DAYS.iter().enumerate() {
        let after = day.parse::<Date>()?.to_zoned(TimeZone::UTC)?.timestamp();
        let upto = after + SignedDuration::from_hours(24);
        let sends = recent_sends(&people, after, SEED + 1 + k as u64);
        let (mut found, scanned, took) = product(&index, &trigger, &rules, &sends, after, upto, &default)?;
        let (mut expected, base) = baseline(&people, &zones, &trigger, &rules, &sends, after, upto);
        found.sort_by_key(|d| (d.0, d.1));
        expected.sort_by_key(|d| (d.0, d.1));
        if found != expected {
            let missing = expected
                .iter()
                .filter(|e| !found.contains(e))
                .take(5)
                .collect::<Vec<_>>();
            let extra = found
                .iter()
                .filter(|f| !expected.contains(f))
                .take(5)
                .collect::<Vec<_>>();
            bail!(
                "DUE SETS DIFFER on {day}: product {} occurrences, baseline {}; missing {missing:?}, extra {extra:?}",
                found.len(),
                expected.len()
            );
        }
        let count = |reason: Option<Reason>| {
            found
                .iter()
                .filter(|d| match (&d.3, reason) {
                    (Decision::Send, None) => true,
                    (Decision::Skip { reason: r }, Some(want)) => *r == want,
                    _ => false,
                })
                .count()
        };
        let (sent, unlawful, capped) = (
            count(None),
            count(Some(Reason::NoLegalBasis)),
            count(Some(Reason::FrequencyCap)),
        );
        ensure!(
            sent + unlawful + capped == found.len(),
            "a decision other than send, no basis or cap"
        );
        totals = (
            totals.0 + found.len(),
            totals.1 + sent,
            totals.2 + unlawful,
            totals.3 + capped,
        );
        println!(
            "{day:<11} {:>11} {sent:>6} {unlawful:>9} {capped:>7} {:>10.3} {:>10.3} {:>11.1} {:>8.5}",
            found.len(),
            ms(scanned),
            ms(took - scanned),
            ms(base),
            took.as_secs_f64() / base.as_secs_f64()
        );
        ours.push(took);
        scans.push(scanned);
        theirs.push(base);
    }
    let ratios: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .map(|(o, t)| o.as_secs_f64() / t.as_secs_f64())
        .collect();
    ours.sort();
    scans.sort();
    theirs.sort();
    let n = DAYS.len();
    println!(
        "per day, mean: {:.0} occurrences, {:.0} sent, {:.0} skipped without a basis, {:.0} capped; product and \
         baseline found the same occurrences and decisions on every day",
        totals.0 as f64 / n as f64,
        totals.1 as f64 / n as f64,
        totals.2 as f64 / n as f64,
        totals.3 as f64 / n as f64
    );
    println!();
    println!("{:<62} {:>10} {:>10}", "over the 20 days", "median ms", "p95 ms");
    println!(
        "{:<62} {:>10.1} {:>10.1}",
        "baseline: plain structs, DateTrigger::due_between on each + decide",
        ms(rank(&theirs, 0.5)),
        ms(rank(&theirs, 0.95))
    );
    println!(
        "{:<62} {:>10.3} {:>10.3}",
        "product: due_in_index only",
        ms(rank(&scans, 0.5)),
        ms(rank(&scans, 0.95))
    );
    let median = rank(&ours, 0.5);
    println!(
        "{:<62} {:>10.3} {:>10.3}   {:.5}× the baseline's time (goal ≤ 1 s: {})",
        "product: due_in_index + guard::decide per occurrence",
        ms(median),
        ms(rank(&ours, 0.95)),
        median.as_secs_f64() / rank(&theirs, 0.5).as_secs_f64(),
        if rank(&ours, 0.95) <= Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
    let (low, high) = ratios
        .iter()
        .fold((f64::MAX, 0.0f64), |(l, h), r| (l.min(*r), h.max(*r)));
    println!("ratio day by day: {low:.5} to {high:.5}");
    Ok(())
}

// ---- sending ----------------------------------------------------------------------------------

/// What a sink has received.
#[derive(Default)]
struct Received {
    messages: AtomicU64,
    connections: AtomicU64,
    bytes: AtomicU64,
}

impl Received {
    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.messages.load(Ordering::SeqCst),
            self.connections.load(Ordering::SeqCst),
            self.bytes.load(Ordering::SeqCst),
        )
    }
}

/// When a sink acknowledges the bytes it reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Acks {
    /// When the kernel decides, as under any SMTP server: an ACK may wait up to 40 ms for a
    /// reply to ride on. A client that writes the end of DATA apart from the body, with Nagle's
    /// algorithm on, waits for that ACK before the end leaves.
    Delayed,
    /// At once (`TCP_QUICKACK` once everything received is read), so that no write of the
    /// client waits for an ACK: what the senders cost when nothing stalls them.
    Immediate,
}

/// An SMTP server in this process that accepts every message and keeps none: the greeting,
/// EHLO and HELO, MAIL, RCPT, DATA, RSET, NOOP and QUIT, one task per connection.
struct Sink {
    port: u16,
    received: Arc<Received>,
}

impl Sink {
    async fn start(acks: Acks) -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(Received::default());
        let counts = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let counts = counts.clone();
                tokio::spawn(async move {
                    // A client that hangs up mid-session ends only its own session; a message
                    // it did not finish is not counted, and the run that sent it fails.
                    let _ = session(stream, acks, &counts).await;
                });
            }
        });
        Ok(Sink { port, received })
    }
}

async fn session(stream: TcpStream, acks: Acks, counts: &Received) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut conn = Lines {
        stream,
        acks,
        buf: Vec::new(),
    };
    conn.stream.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut line = Vec::new();
    while conn.next(&mut line).await? {
        let verb = line.get(..4).map(<[u8]>::to_ascii_uppercase);
        let reply: &[u8] = match verb.as_deref() {
            Some(b"EHLO") => b"250-sink.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n",
            Some(b"HELO") => b"250 sink.test\r\n",
            Some(b"MAIL" | b"RCPT" | b"RSET" | b"NOOP") => b"250 OK\r\n",
            Some(b"DATA") => {
                conn.stream.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut size = 0;
                loop {
                    if !conn.next(&mut line).await? {
                        return Ok(());
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    size += line.len() as u64;
                }
                counts.bytes.fetch_add(size, Ordering::SeqCst);
                counts.messages.fetch_add(1, Ordering::SeqCst);
                b"250 OK queued\r\n"
            }
            Some(b"QUIT") => {
                conn.stream.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        conn.stream.write_all(reply).await?;
    }
    Ok(())
}

/// The lines a client sends, read straight from the socket so that, for [`Acks::Immediate`],
/// every read is acknowledged as soon as it returns, a line finished or not.
struct Lines {
    stream: TcpStream,
    acks: Acks,
    buf: Vec<u8>,
}

impl Lines {
    /// Reads the next line into `line`, its end included; false at the end of the stream.
    async fn next(&mut self, line: &mut Vec<u8>) -> std::io::Result<bool> {
        line.clear();
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                line.extend(self.buf.drain(..=end));
                return Ok(true);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(false);
            }
            if self.acks == Acks::Immediate {
                socket2::SockRef::from(&self.stream).set_tcp_quickack(true)?;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The tour announcement of (b) and (c), in both languages.
fn tour_template() -> Value {
    json!({
        "subject": {"fr": "{{ traits.first_name }}, Daft Punk part en tournée",
                    "en": "{{ traits.first_name }}, Daft Punk are going on tour"},
        "body": {
            "fr": "Bonjour {{ traits.first_name }},\n\nDaft Punk annonce une tournée et passe près de chez vous. \
                   Pour l'occasion, un bon de {{ voucher.value }} € sur les vinyles du groupe : {{ voucher.code }}, \
                   valable jusqu'au {{ voucher.expires_at }}.\n\nÀ bientôt chez Vinyles & Cie.\n\n\
                   Vos préférences : {{ links.preferences }}\nSe désinscrire : {{ links.unsubscribe }}",
            "en": "Hello {{ traits.first_name }},\n\nDaft Punk are going on tour. Here is {{ voucher.value }} € off \
                   their records: {{ voucher.code }}, until {{ voucher.expires_at }}.\n\n\
                   Your preferences: {{ links.preferences }}\nUnsubscribe: {{ links.unsubscribe }}"
        }
    })
}

/// One message of (b) as the scheduler renders it: the tour template with a voucher and links
/// signed as the server signs them.
struct Rendered {
    to: String,
    subject: String,
    body: String,
    message_id: String,
    unsubscribe: String,
}

fn rendered(n: usize) -> anyhow::Result<Vec<Rendered>> {
    let t: MessageTemplate = serde_json::from_value(tour_template())?;
    let key = LinkKey::derive(b"the bench's instance secret");
    let expires: Timestamp = "2027-06-15T10:00:00Z".parse()?;
    (0..n)
        .map(|i| {
            let to = format!("fan{i}@example.org");
            let token = key.sign(
                &Subject::from_key(&format!("email:{to}")).context("a subject")?,
                expires,
            );
            let ctx = Context {
                traits: BTreeMap::from([("first_name".to_owned(), json!(format!("Fan{i}")))]),
                voucher: Some(VoucherView {
                    code: format!("7KQ2-M9X{}-{:04}", i % 10, i % 10_000),
                    value: 5.0,
                    currency: "EUR".into(),
                    expires_at: date(2026, 6, 25),
                }),
                suggestions: Vec::new(),
                links: Links {
                    preferences: format!("{PUBLIC_URL}/preferences?token={token}"),
                    unsubscribe: format!("{PUBLIC_URL}/unsubscribe?token={token}&campaign=1"),
                },
                campaign: "En tournée".into(),
            };
            let r = template::render(&t, "fr", &ctx)?;
            Ok(Rendered {
                to,
                subject: r.subject,
                body: r.body,
                message_id: format!("<occurrence-{i}-step-0@confiance>"),
                unsubscribe: ctx.links.unsubscribe,
            })
        })
        .collect()
}

/// A sender's run: messages per second, what the sink saw per message, and the cores this
/// process kept busy.
struct Run {
    rate: f64,
    connections: f64,
    bytes: f64,
    cpu: f64,
}

/// Runs `send` and checks that the sink received exactly `n` messages.
async fn measured(
    received: &Received,
    n: usize,
    send: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Run> {
    let (m0, c0, b0) = received.snapshot();
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    send.await?;
    let took = started.elapsed();
    let cpu = cpu_seconds() - cpu0;
    let (m1, c1, b1) = received.snapshot();
    ensure!(
        m1 - m0 == n as u64,
        "the sink received {} messages, {n} were sent",
        m1 - m0
    );
    Ok(Run {
        rate: n as f64 / took.as_secs_f64(),
        connections: (c1 - c0) as f64 / n as f64,
        bytes: (b1 - b0) as f64 / n as f64,
        cpu: cpu / took.as_secs_f64(),
    })
}

/// The senders compared on each sink, (c) apart.
#[derive(Clone, Copy)]
enum Sender {
    /// The baseline: lettre's transport, as the workspace builds it (no `pool`).
    Transport,
    /// lettre's connection, opened once: what the `pool` feature would give.
    OneConnection,
    /// The same on a socket with `TCP_NODELAY`.
    NoDelay,
    /// The product's channel.
    Mailer,
}

const SENDERS: [Sender; 4] = [
    Sender::Transport,
    Sender::OneConnection,
    Sender::NoDelay,
    Sender::Mailer,
];

impl Sender {
    fn name(self) -> &'static str {
        match self {
            Sender::Transport => "(a)  baseline: lettre AsyncSmtpTransport in a loop, minimal message",
            Sender::OneConnection => "(a1) lettre, one connection kept open (AsyncSmtpConnection)",
            Sender::NoDelay => "(a2) lettre, one connection kept open, TCP_NODELAY",
            Sender::Mailer => "(b)  Mailer::send_campaign, rendered tour message",
        }
    }

    async fn send(self, port: u16, mailer: &Mailer, messages: &[Rendered]) -> anyhow::Result<()> {
        let minimal = |i: usize| -> anyhow::Result<Message> {
            Ok(Message::builder()
                .from("bonjour@vinyles.example".parse()?)
                .to(format!("fan{i}@example.org").parse()?)
                .subject("Bonjour")
                .body(String::from("Bonjour."))?)
        };
        let mut connection = match self {
            Sender::Transport => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
                    .port(port)
                    .build();
                for i in 0..messages.len() {
                    transport.send(minimal(i)?).await?;
                }
                return Ok(());
            }
            Sender::Mailer => {
                for m in messages {
                    mailer
                        .send_campaign(&m.to, &m.subject, m.body.clone(), None, &m.message_id, &m.unsubscribe)
                        .await
                        .map_err(|e| anyhow::anyhow!("send_campaign: {}", e.message))?;
                }
                return Ok(());
            }
            Sender::OneConnection => {
                AsyncSmtpConnection::connect_tokio1(("127.0.0.1", port), None, &ClientId::default(), None, None).await?
            }
            Sender::NoDelay => {
                let stream = TcpStream::connect(("127.0.0.1", port)).await?;
                stream.set_nodelay(true)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &ClientId::default()).await?
            }
        };
        for i in 0..messages.len() {
            let message = minimal(i)?;
            connection.send(message.envelope(), &message.formatted()).await?;
        }
        connection.quit().await?;
        Ok(())
    }
}

async fn sending(args: &Args) -> anyhow::Result<()> {
    // Against an ordinary relay every sender but (a2) waits about 40 ms a message: a twentieth
    // of the messages is enough to measure it.
    let few = (args.messages / 20).max(20);
    let fewer_fans = (args.fans / 20).max(20);
    println!("sending: SMTP sinks in this process on 127.0.0.1, one message after the other");
    compare(
        "a relay that acknowledges as the kernel does (delayed ACKs, like any SMTP server)",
        Acks::Delayed,
        few,
        1,
        fewer_fans,
    )
    .await?;
    compare(
        "a relay that acknowledges at once (TCP_QUICKACK): what the senders cost without the stall",
        Acks::Immediate,
        args.messages,
        ROUNDS,
        args.fans,
    )
    .await?;
    println!(
        "(connections and bytes per message as the sink counted them; CPU: cores this process kept busy, sink \
         included)"
    );
    Ok(())
}

async fn compare(title: &str, acks: Acks, n: usize, rounds: usize, fans: usize) -> anyhow::Result<()> {
    let sink = Sink::start(acks).await?;
    let mailer = Mailer::new(&format!("smtp://127.0.0.1:{}", sink.port), FROM).map_err(anyhow::Error::msg)?;
    let messages = rendered(n)?;
    // Warm-up: lettre's first use, the allocator, the sink's tasks.
    for s in SENDERS {
        s.send(sink.port, &mailer, &messages[..n.min(10)]).await?;
    }
    let mut runs: Vec<Vec<Run>> = SENDERS.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (s, r) in SENDERS.iter().zip(&mut runs) {
            r.push(measured(&sink.received, n, s.send(sink.port, &mailer, &messages)).await?);
        }
    }
    let (e2e, stages) = scheduler(fans, sink.port, &sink.received).await?;

    println!();
    println!(
        "{title}: {n} messages per sender{}",
        if rounds > 1 {
            format!(", {rounds} rounds interleaved")
        } else {
            String::new()
        }
    );
    println!(
        "{:<72} {:>10} {:>8} {:>11} {:>6} {:>5}",
        "sender", "messages/s", "of (a)", "connections", "bytes", "CPU"
    );
    let median = |r: &[Run]| {
        let mut rates: Vec<f64> = r.iter().map(|r| r.rate).collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let base = median(&runs[0]);
    let line = |name: &str, rate: f64, r: &Run| {
        format!(
            "{name:<72} {rate:>10.0} {:>7.1}% {:>11.2} {:>6.0} {:>5.2}",
            100.0 * rate / base,
            r.connections,
            r.bytes,
            r.cpu
        )
    };
    for (s, r) in SENDERS.iter().zip(&runs) {
        let all = r
            .iter()
            .map(|r| format!("{:.0}", r.rate))
            .collect::<Vec<_>>()
            .join(", ");
        let shown = if rounds > 1 {
            format!("   (rounds: {all})")
        } else {
            String::new()
        };
        println!("{}{shown}", line(s.name(), median(r), &r[r.len() / 2]));
    }
    println!(
        "{}",
        line(
            &format!("(c)  scheduler: activate::tick over SQLite until {fans} fans are sent"),
            e2e.rate,
            &e2e
        )
    );
    println!("     {stages}");
    Ok(())
}

/// (c): the product end to end. Fans identified through the event log and resolved, their
/// consent in the ledger, the audience index brought up to date, a tour campaign and its
/// announcement through the API, then `tick` until every occurrence is sent.
async fn scheduler(fans: usize, port: u16, received: &Received) -> anyhow::Result<(Run, String)> {
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(dir.path()).await?;
    store.put_token(&KeyDigest::of(TOKEN), Role::Admin, "bench").await?;
    let key = WriteKey::generate();
    let source = store
        .create_source(
            &SourceName::parse("web")?,
            SourceKind::Web,
            &key.digest(),
            &key.prefix(),
        )
        .await?;
    let catalog = Catalog::builtin();
    let now: Timestamp = "2026-06-15T10:00:00Z".parse()?;
    let setup = Instant::now();
    let mut batch = Vec::with_capacity(fans);
    for i in 0..fans {
        let raw = json!({"type": "identify", "messageId": format!("fan-{i}"), "userId": format!("fan-{i}"),
            "traits": {"email": format!("fan{i}@example.org"), "first_name": format!("Fan{i}"),
                       "favorite_artists": ["Daft Punk", "Air"], "city": "Paris", "timezone": "Europe/Paris",
                       "language": "fr"}});
        batch.push(normalize(raw, &Envelope::default(), &catalog, now)?.message);
    }
    for chunk in batch.chunks(1_000) {
        store.append(source.id, chunk.to_vec(), Vec::new()).await?;
    }
    let consents = (0..fans)
        .map(|i| {
            Ok(ConsentDecision {
                subject: Subject::from_key(&format!("user_id:fan-{i}")).context("a subject")?,
                purpose: PURPOSE.into(),
                status: Status::Granted,
                method: Method::Form,
                recorded_at: now,
                notice: None,
                source_id: Some(source.id),
                touchpoint: None,
                ip_hash: None,
                ua_hash: None,
                proof: json!({"bench": true}),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    store.record_consents(consents).await?;
    let (c, g) = (Arc::new(catalog.clone()), Arc::new(catalog.unify.guards.clone()));
    while store.resolve_pending(c.clone(), g.clone(), 5_000).await?.events > 0 {}
    let mailer = Mailer::new(&format!("smtp://127.0.0.1:{port}"), FROM).map_err(anyhow::Error::msg)?;
    let state = AppState::with_options(
        store.clone(),
        catalog,
        Arc::new(ManualClock::new(now)),
        Options {
            mailer: Some(mailer),
            public_url: Some(PUBLIC_URL.into()),
            ..Options::default()
        },
    );
    // Everything is in the store already: the first call builds the index from it.
    confiance_server::segments::follow(&state)
        .await
        .map_err(|e| anyhow::anyhow!("building the audience index: {}", e.into_error().message))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = confiance_server::router(state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();
    let call = |path: &str, body: Value| http.post(format!("{base}{path}")).bearer_auth(TOKEN).json(&body).send();
    let campaign = call(
        "/api/v1/campaigns",
        json!({
            "name": "En tournée",
            "purpose": PURPOSE,
            "channel": "email",
            "trigger": {"happening": {"kind": "tour", "field": "favorite_artists", "near": false}},
            "voucher": {"value": 5.0, "valid_days": 10},
            "frequency_cap": {"max": 2, "days": 7, "policy": "skip"},
            "steps": [{"template": tour_template()}],
        }),
    )
    .await?;
    ensure!(
        campaign.status().as_u16() == 201,
        "campaign: {}",
        campaign.text().await?
    );
    let campaign: Value = campaign.json().await?;
    let setup = setup.elapsed();
    let started = Instant::now();
    let announced = call(
        "/api/v1/happenings",
        json!({"kind": "tour", "about": "Daft Punk", "name": "Tournée 2026", "cities": ["Paris"]}),
    )
    .await?;
    ensure!(
        announced.status().is_success(),
        "happening: {}",
        announced.text().await?
    );
    let announced: Value = announced.json().await?;
    let entered = announced["campaigns"][0]["entered"].as_u64().unwrap_or(0);
    ensure!(
        entered == fans as u64,
        "the announcement entered {entered} fans of {fans}: {announced}"
    );
    let enqueue = started.elapsed();
    let mut ticks = 0;
    let run = measured(received, fans, async {
        while confiance_server::activate::tick(&state)
            .await
            .map_err(|e| anyhow::anyhow!("tick: {}", e.into_error().message))?
            > 0
        {
            ticks += 1;
        }
        Ok(())
    })
    .await?;
    let id = campaign["id"].as_i64().context("the campaign's id")?;
    let sent = store
        .sends(Some(id), None, fans * 2)
        .await?
        .iter()
        .filter(|s| s.record.outcome == "sent")
        .count();
    ensure!(sent == fans, "the sends log holds {sent} sent of {fans}");
    let stages = format!(
        "setup, not timed: {fans} identifies appended and resolved, consents recorded, index built, campaign created \
         in {:.2} s; the announcement made {entered} occurrences in {:.0} ms, not in the rate; {ticks} ticks; the \
         sends log holds {sent} sent",
        setup.as_secs_f64(),
        ms(enqueue)
    );
    Ok((run, stages))
}

// ---- helpers ----------------------------------------------------------------------------------

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// CPU time of this process (user and system), in seconds; Linux counts it in 1/100 s.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// The value at quantile `q` of sorted values, by nearest rank.
fn rank(sorted: &[Duration], q: f64) -> Duration {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
