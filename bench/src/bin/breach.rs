//! Whom a breach touched, over a million profiles, as the server computes it — the in-memory
//! exposure index for the events the change feed has read, plus the store's statement over the
//! log after the index's position — and by the store's statement alone over the whole log,
//! against a brute-force scan in Rust of the same rows (read every event, parse its body, check
//! its traits, look its sender up), measured in the same run, on SQLite. The three answers are
//! compared, so the figure is also a correctness check at scale.
//!
//! The log is written straight into the database file with bulk inserts (a million people
//! sending three messages each through the API and the resolver would take most of an hour):
//! every person has a profile and two identifiers, an identify with their email, a track that
//! carries it again in `context.traits`, and a page view without traits, from three sources,
//! received over two years.
//!
//! ```text
//! cargo run --release -p confiance-bench --bin breach -- [PROFILES]
//! ```

use confiance_core::privacy::exposure::{Carry, Exposure, Window};
use confiance_core::source::{KeyDigest, SourceKind, SourceName};
use confiance_store::{Store, Touched, TouchedQuery};
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The start of the two years of the log.
const START: &str = "2025-01-01T00:00:00Z";
const TWO_YEARS_S: i64 = 2 * 365 * 86_400;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Writes `profiles` people and their three messages each into the store's database file.
fn generate(path: &std::path::Path, profiles: i64, start_us: i64) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000;")?;
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT INTO profiles (id, created_seq, created_at, merged_into)
         WITH RECURSIVE n(p) AS (SELECT 1 UNION ALL SELECT p + 1 FROM n WHERE p < ?1)
         SELECT p, 3 * p - 2, ?2, NULL FROM n",
        rusqlite::params![profiles, start_us],
    )?;
    tx.execute(
        "INSERT INTO identities (identifier, kind, profile_id, origin_profile, first_seq)
         WITH RECURSIVE n(p) AS (SELECT 1 UNION ALL SELECT p + 1 FROM n WHERE p < ?1)
         SELECT 'user_id:u' || p, 'user_id', p, p, 3 * p - 2 FROM n
         UNION ALL
         SELECT 'email:u' || p || '@example.org', 'email', p, p, 3 * p - 2 FROM n",
        [profiles],
    )?;
    // Message k of person p is event 3(p-1)+k+1; its source and reception time are scattered
    // by multiplicative hashing so that every source and month holds a share of everyone.
    tx.execute(
        "INSERT INTO events (seq, source_id, message_id, type, user_id, anonymous_id, event, timestamp, received_at, body, purposes, traits)
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3 * ?1),
         m AS (SELECT i, (i - 1) / 3 + 1 AS p, (i - 1) % 3 AS k,
                      ?2 + ((i * 2654435761) % ?3) * 1000000 AS at,
                      1 + (((i * 2654435761) / 128) % 3) AS source FROM n)
         SELECT i, source, 'm' || i,
                CASE k WHEN 0 THEN 'identify' WHEN 1 THEN 'track' ELSE 'page' END,
                'u' || p, 'a' || p,
                CASE k WHEN 1 THEN 'Order Completed' ELSE NULL END,
                at, at,
                CASE k
                  WHEN 0 THEN json_object('type', 'identify', 'messageId', 'm' || i, 'userId', 'u' || p,
                      'traits', json_object('email', 'u' || p || '@example.org', 'first_name', 'Ana', 'city', 'Lyon'),
                      'context', json_object('ip', '203.0.113.7', 'locale', 'fr-FR'))
                  WHEN 1 THEN json_object('type', 'track', 'messageId', 'm' || i, 'userId', 'u' || p, 'event', 'Order Completed',
                      'properties', json_object('order_id', 'o' || i, 'total', 42.5, 'currency', 'EUR'),
                      'context', json_object('traits', json_object('email', 'u' || p || '@example.org'), 'locale', 'fr-FR'))
                  ELSE json_object('type', 'page', 'messageId', 'm' || i, 'userId', 'u' || p, 'name', 'Home',
                      'context', json_object('ip', '203.0.113.7', 'locale', 'fr-FR'))
                END,
                ',service,',
                CASE k WHEN 0 THEN ',city,email,first_name,' WHEN 1 THEN ',email,' ELSE NULL END
         FROM m",
        rusqlite::params![profiles, start_us, TWO_YEARS_S],
    )?;
    tx.commit()?;
    conn.execute_batch("ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// The baseline: every event read and checked in Rust, senders looked up in a map of the
/// identities.
fn brute_force(path: &std::path::Path, q: &TouchedQuery) -> anyhow::Result<Touched> {
    let conn = rusqlite::Connection::open(path)?;
    let mut profile_of: HashMap<String, i64> = HashMap::new();
    let mut stmt =
        conn.prepare("SELECT identifier, profile_id FROM identities WHERE kind IN ('user_id', 'anonymous_id')")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        profile_of.insert(r.get(0)?, r.get(1)?);
    }
    let (from, to) = (q.from.map_or(i64::MIN, |t| t.as_microsecond()), q.to.as_microsecond());
    let mut per_profile: BTreeMap<i64, i64> = BTreeMap::new();
    let mut unresolved = 0;
    let mut stmt = conn.prepare("SELECT source_id, received_at, type, user_id, anonymous_id, body FROM events")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let (source, received): (i64, i64) = (r.get(0)?, r.get(1)?);
        if !q.sources.contains(&source) || received < from || received >= to {
            continue;
        }
        let body: serde_json::Value = serde_json::from_str(r.get_ref(5)?.as_str()?)?;
        let identify = r.get_ref(2)?.as_str()? == "identify";
        let carries = q.traits.iter().any(|t| {
            let present = |v: Option<&serde_json::Value>| v.is_some_and(|v| !v.is_null());
            (identify && present(body.get("traits").and_then(|x| x.get(t))))
                || present(body.pointer("/context/traits").and_then(|x| x.get(t)))
        });
        if !carries {
            continue;
        }
        let user: Option<String> = r.get(3)?;
        let anon: Option<String> = r.get(4)?;
        let profile = user
            .and_then(|u| profile_of.get(&format!("user_id:{u}")).copied())
            .or_else(|| anon.and_then(|a| profile_of.get(&format!("anonymous_id:{a}")).copied()));
        match profile {
            Some(p) => *per_profile.entry(p).or_default() += 1,
            None => unresolved += 1,
        }
    }
    Ok(Touched {
        profiles: per_profile.into_iter().collect(),
        unresolved_records: unresolved,
    })
}

/// The exposure index as the follower of the log builds it: every event that carries traits,
/// under the profile of its sender, pushed as the log is read. Returns it with the last position it read.
fn exposure(path: &std::path::Path) -> anyhow::Result<(Exposure, i64)> {
    let conn = rusqlite::Connection::open(path)?;
    let mut profile_of: HashMap<String, i64> = HashMap::new();
    let mut stmt =
        conn.prepare("SELECT identifier, profile_id FROM identities WHERE kind IN ('user_id', 'anonymous_id')")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        profile_of.insert(r.get(0)?, r.get(1)?);
    }
    let mut index = Exposure::new();
    let mut last = 0;
    let mut stmt = conn.prepare(
        "SELECT seq, source_id, received_at, user_id, anonymous_id, traits FROM events WHERE traits IS NOT NULL ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        last = r.get(0)?;
        let user: Option<String> = r.get(3)?;
        let anon: Option<String> = r.get(4)?;
        let Some(profile) = user
            .and_then(|u| profile_of.get(&format!("user_id:{u}")).copied())
            .or_else(|| anon.and_then(|a| profile_of.get(&format!("anonymous_id:{a}")).copied()))
        else {
            continue;
        };
        let traits: String = r.get(5)?;
        index.push(
            profile,
            Carry {
                seq: last,
                source: r.get(1)?,
                received_at: Timestamp::from_microsecond(r.get(2)?)?,
                traits: traits.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect(),
            },
        );
    }
    index.shrink();
    Ok((index, last))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let profiles: i64 = std::env::args().nth(1).map_or(Ok(1_000_000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(dir.path()).await?;
    let mut sources = Vec::new();
    for (name, kind) in [
        ("web", SourceKind::Web),
        ("accounts", SourceKind::Account),
        ("backend", SourceKind::Server),
    ] {
        let s = store
            .create_source(&SourceName::parse(name)?, kind, &KeyDigest::of(name), "wk_bench")
            .await?;
        sources.push(s.id);
    }
    anyhow::ensure!(sources == [1, 2, 3], "the generator assumes source ids 1, 2, 3");
    let path = match &store {
        Store::Sqlite(s) => s.path().to_owned(),
        Store::Postgres(_) => unreachable!("opened as SQLite"),
    };
    drop(store);
    let start: Timestamp = START.parse()?;
    let started = Instant::now();
    generate(&path, profiles, start.as_microsecond())?;
    let generated = started.elapsed();
    let store = Store::open_sqlite(dir.path()).await?;

    let day = jiff::SignedDuration::from_hours(24);
    let breaches = [
        (
            "emails from the web, one month",
            TouchedQuery {
                traits: vec!["email".into()],
                sources: vec![1],
                from: Some(start + day * 300),
                to: start + day * 330,
                after: None,
            },
        ),
        (
            "emails from the web, two years",
            TouchedQuery {
                traits: vec!["email".into()],
                sources: vec![1],
                from: None,
                to: start + day * 800,
                after: None,
            },
        ),
        (
            "emails and phones, every source, two years",
            TouchedQuery {
                traits: vec!["email".into(), "phone".into()],
                sources: vec![1, 2, 3],
                from: None,
                to: start + day * 800,
                after: None,
            },
        ),
    ];
    println!(
        "SQLite, {profiles} profiles, {} events (generated in {:.1} s)",
        3 * profiles,
        generated.as_secs_f64()
    );
    let started = Instant::now();
    let (index, upto) = exposure(&path)?;
    println!(
        "exposure index: {} events carrying traits, {} MiB, built in {:.1} s",
        index.len(),
        index.heap_bytes() >> 20,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>12} {:>7}",
        "breach", "subjects", "records", "index ms", "store ms", "brute-force", "ratio"
    );
    for (name, q) in breaches {
        // The first runs warm the page cache for every contender alike.
        store.breach_touched(&q).await?;
        let tail = TouchedQuery {
            after: Some(upto),
            ..q.clone()
        };
        store.breach_touched(&tail).await?;
        // As the server answers: the index up to its position, the store after it.
        let started = Instant::now();
        let indexed = index.touched(&Window {
            traits: &q.traits,
            sources: &q.sources,
            from: q.from,
            to: q.to,
            upto,
        });
        let by_index = store.breach_touched(&tail).await?.with_indexed(indexed);
        let index_time = started.elapsed();
        let started = Instant::now();
        let touched = store.breach_touched(&q).await?;
        let store_time = started.elapsed();
        let started = Instant::now();
        let expected = brute_force(&path, &q)?;
        let scan_time = started.elapsed();
        anyhow::ensure!(touched == expected, "{name}: the store and the scan disagree");
        anyhow::ensure!(by_index == expected, "{name}: the index and the scan disagree");
        println!(
            "{:<44} {:>9} {:>9} {:>9.0} {:>9.0} {:>12.0} {:>6.0}×",
            name,
            touched.profiles.len(),
            touched.records(),
            ms(index_time),
            ms(store_time),
            ms(scan_time),
            ms(scan_time) / ms(index_time)
        );
    }
    Ok(())
}
