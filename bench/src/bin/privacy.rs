//! Rights at scale: erasing a subject with 1,000 events, erasures per second in bulk, and the
//! access archive of a subject with 10,000 events — each against reading the same subject's
//! events (the least either job must do), measured in the same run, on SQLite.
//!
//! ```text
//! cargo run --release -p confiance-bench --bin privacy
//! ```

use confiance_core::catalog::Catalog;
use confiance_core::clock::SystemClock;
use confiance_core::collect::{Envelope, normalize};
use confiance_core::source::{KeyDigest, SourceKind, SourceName, WriteKey};
use confiance_core::unify::identifier::Identifier;
use confiance_server::AppState;
use confiance_store::{Access, Erasure, Role, Store};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-admin-token-0123456789";
/// Rounds of reading the long history and archiving it: one alone swings by a third.
const ROUNDS: usize = 9;

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn profile_of(store: &Store, user: &str) -> anyhow::Result<i64> {
    store
        .profile_of(&Identifier::parse("user_id", user).expect("an id"))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no profile for {user}"))
}

/// A varied order, as a shop's backend sends them (products, amounts, times, devices differ from
/// one to the next), so that what is measured on the archive — compressed before it is sealed —
/// is not flattered by identical events.
fn order(seed: &mut u64, user: &str, k: usize, now: jiff::Timestamp) -> Value {
    let mut next = |n: u64| {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed % n
    };
    const ALBUMS: [&str; 8] = [
        "Random Access Memories",
        "Histoire de Melody Nelson",
        "Moon Safari",
        "L'Homme à tête de chou",
        "Discovery",
        "Fantaisie militaire",
        "Dummy",
        "Mezzanine",
    ];
    let products: Vec<Value> = (0..1 + next(3))
        .map(|_| {
            json!({"sku": format!("LP-{:05}", next(90_000)), "name": ALBUMS[next(8) as usize],
                   "price": (1_500 + next(3_500)) as f64 / 100.0, "quantity": 1 + next(2)})
        })
        .collect();
    let total: f64 = products.iter().map(|p| p["price"].as_f64().unwrap_or(0.0)).sum();
    let at = now - jiff::SignedDuration::from_secs(next(2 * 365 * 86_400) as i64);
    json!({"type": "track", "messageId": format!("{user}-{k}-{:x}", next(u64::MAX)), "userId": user,
        "event": "Order Completed", "timestamp": at.to_string(),
        "properties": {"order_id": format!("FR-{}", 100_000 + next(900_000)), "total": (total * 100.0).round() / 100.0,
                       "currency": "EUR", "products": products},
        "context": {"ip": format!("203.0.{}.{}", next(256), next(256)), "locale": "fr-FR",
                    "userAgent": format!("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/{}.0", 120 + next(15))}})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(dir.path()).await?;
    store.put_token(&KeyDigest::of(TOKEN), Role::Admin, "bench").await?;
    let key = WriteKey::generate();
    let source = store
        .create_source(
            &SourceName::parse("backend")?,
            SourceKind::Server,
            &key.digest(),
            &key.prefix(),
        )
        .await?;
    let catalog = Catalog::builtin();
    let now = jiff::Timestamp::now();
    // 60 subjects of 1,000 orders each (one to erase alone, fifty in bulk), one of 10,000 for the
    // archive, and the rest of the shop around them.
    let subjects: Vec<(String, usize)> = (0..60)
        .map(|i| (format!("erase-{i}"), 1_000))
        .chain([("archive-0".to_owned(), 10_000)])
        .collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for (user, events) in &subjects {
        let mut batch = vec![normalize(
            json!({"type": "identify", "messageId": format!("{user}-id"), "userId": user, "traits": {"email": format!("{user}@example.org"), "first_name": "Bench"}}),
            &Envelope::default(),
            &catalog,
            now,
        )?];
        for k in 0..*events {
            batch.push(normalize(
                order(&mut seed, user, k, now),
                &Envelope::default(),
                &catalog,
                now,
            )?);
        }
        for chunk in batch.chunks(2_000) {
            store
                .append(source.id, chunk.iter().map(|n| n.message.clone()).collect(), Vec::new())
                .await?;
        }
    }
    let (c, g) = (Arc::new(catalog.clone()), Arc::new(catalog.unify.guards.clone()));
    while store.resolve_pending(c.clone(), g.clone(), 10_000).await?.events > 0 {}

    // One subject with 1,000 events.
    let profile = profile_of(&store, "erase-0").await?;
    let (mut read, mut read_times) = (0, Vec::new());
    for _ in 0..ROUNDS {
        let started = Instant::now();
        read = store
            .profile_events(Access::Administration, profile, 0, 100_000)
            .await?
            .len();
        read_times.push(started.elapsed());
    }
    let read_time = median(read_times);
    let erasure = |user: String, profile: i64| Erasure {
        keys: vec![format!("user_id:{user}"), format!("email:{user}@example.org")],
        profile: Some(profile),
        suppression: vec![format!("{user}-hash")],
        at: jiff::Timestamp::now(),
        notices: Vec::new(),
    };
    let started = Instant::now();
    let erased = store.erase(erasure("erase-0".into(), profile)).await?;
    let erase_time = started.elapsed();
    assert_eq!(erased.events as usize, read);

    // Fifty more, one after the other.
    let mut bulk = Vec::new();
    for i in 1..=50 {
        let user = format!("erase-{i}");
        bulk.push((user.clone(), profile_of(&store, &user).await?));
    }
    let started = Instant::now();
    let mut each = Vec::new();
    for (user, profile) in bulk {
        let one = Instant::now();
        store.erase(erasure(user, profile)).await?;
        each.push(one.elapsed());
    }
    let bulk_time = started.elapsed();
    let steady_erase_time = median(each);

    // The archive of a subject with 10,000 events, through the API.
    let app = AppState::new(store.clone(), catalog, Arc::new(SystemClock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, confiance_server::router(app)).await });
    let http = reqwest::Client::new();
    let profile = profile_of(&store, "archive-0").await?;
    // Rounds of a read and an archive, interleaved; the medians are reported.
    let (mut read_big_times, mut archive_times) = (Vec::new(), Vec::new());
    let (mut read_big, mut request) = (0, Value::Null);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        read_big = store
            .profile_events(Access::Administration, profile, 0, 100_000)
            .await?
            .len();
        read_big_times.push(started.elapsed());
        request = http
            .post(format!("{base}/api/v1/requests"))
            .bearer_auth(TOKEN)
            .json(&json!({"type": "access", "subject": {"type": "user_id", "value": "archive-0"}}))
            .send()
            .await?
            .json()
            .await?;
        let started = Instant::now();
        let done = http
            .post(format!("{base}/api/v1/requests/{}/process", request["id"]))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        archive_times.push(started.elapsed());
        anyhow::ensure!(
            done.status().is_success(),
            "the access request failed: {}",
            done.text().await?
        );
    }
    let (read_big_time, archive_time) = (median(read_big_times), median(archive_times));

    // What the archive weighs, and what is kept of it (compressed, sealed, in base64).
    let json_part = http
        .get(format!("{base}/api/v1/requests/{}/archive", request["id"]))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .bytes()
        .await?
        .len();
    let kept: i64 = {
        let Store::Sqlite(s) = &store else {
            anyhow::bail!("opened as SQLite")
        };
        rusqlite::Connection::open(s.path())?.query_row(
            "SELECT length(result) FROM request_results WHERE request_id = ?1",
            [request["id"].as_i64().unwrap_or_default()],
            |r| r.get(0),
        )?
    };

    println!("SQLite (durable commits, secure_delete), {} subjects", subjects.len());
    println!("{:<58} {:>10}", "", "ms");
    println!(
        "{:<58} {:>10.2}",
        format!("read the subject's {read} events (baseline, median of {ROUNDS})"),
        ms(read_time)
    );
    println!(
        "{:<58} {:>10.2}   {:.1}× the baseline",
        "erase that subject (1,000 events, WAL truncated)",
        ms(erase_time),
        ms(erase_time) / ms(read_time)
    );
    println!(
        "{:<58} {:>10.0}   erasures/s",
        "erase 50 more subjects one after the other",
        50.0 / bulk_time.as_secs_f64()
    );
    println!(
        "{:<58} {:>10.2}   {:.1}× the baseline",
        "one of those 50 (1,000 events each, median)",
        ms(steady_erase_time),
        ms(steady_erase_time) / ms(read_time)
    );
    println!(
        "{:<58} {:>10.2}",
        format!("read a subject's {read_big} events (baseline, median of {ROUNDS})"),
        ms(read_big_time)
    );
    println!(
        "{:<58} {:>10.2}   {:.1}× the baseline",
        format!("access archive of that subject (median of {ROUNDS})"),
        ms(archive_time),
        ms(archive_time) / ms(read_big_time)
    );
    println!(
        "archive: {:.1} MB of JSON (CSV files rendered from it on download), {:.2} MB kept, compressed and sealed",
        json_part as f64 / 1e6,
        kept as f64 / 1e6
    );
    Ok(())
}
