//! Identity resolution throughput, against appending the same messages to the event log (the
//! write resolution cannot avoid), measured in the same run, and the memory it takes.
//!
//! ```text
//! cargo run --release -p confiance-bench --bin unify [-- --profiles N]
//! ```

use confiance_core::catalog::Catalog;
use confiance_core::collect::{Envelope, normalize};
use confiance_store::Store;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

fn vm_hwm_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0))
        })
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip_while(|a| a != "--profiles")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let store = Store::open_sqlite(dir.path()).await?;
    let key = confiance_core::source::WriteKey::generate();
    let source = store
        .create_source(
            &confiance_core::source::SourceName::parse("accounts")?,
            confiance_core::source::SourceKind::Account,
            &key.digest(),
            &key.prefix(),
        )
        .await?;
    let catalog = Catalog::builtin();
    let now = jiff::Timestamp::now();
    // Each person: a sign-up (user id, browser, email), and a login from a second browser.
    let message = |i: usize, login: bool| {
        let raw = if login {
            json!({"type": "identify", "messageId": format!("l{i}"), "userId": format!("u{i}"), "anonymousId": format!("m{i}")})
        } else {
            json!({"type": "identify", "messageId": format!("s{i}"), "userId": format!("u{i}"), "anonymousId": format!("b{i}"),
                   "traits": {"email": format!("person{i}@example.org")}})
        };
        normalize(raw, &Envelope::default(), &catalog, now)
            .expect("valid")
            .message
    };
    let started = Instant::now();
    let mut total = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(2_000) {
        let batch: Vec<_> = chunk
            .iter()
            .flat_map(|&i| [message(i, false), message(i, true)])
            .collect();
        total += batch.len();
        store.append(source.id, batch, Vec::new()).await?;
    }
    let append = started.elapsed();
    let before = vm_hwm_mb();
    let (catalog, guards) = (Arc::new(catalog.clone()), Arc::new(catalog.unify.guards.clone()));
    let started = Instant::now();
    while store
        .resolve_pending(catalog.clone(), guards.clone(), 5_000)
        .await?
        .events
        > 0
    {}
    let resolve = started.elapsed();
    let profiles = store.profile_ids().await?.len();
    let db_mb = std::fs::metadata(dir.path().join("confiance.db"))?.len() as f64 / 1e6;
    println!("{total} messages about {n} people -> {profiles} profiles (SQLite, durable commits)");
    println!("{:<34} {:>12}", "", "messages/s");
    println!(
        "{:<34} {:>12.0}",
        "append to the log (baseline)",
        total as f64 / append.as_secs_f64()
    );
    println!(
        "{:<34} {:>12.0}   {:.2}× the baseline's time",
        "resolve identities",
        total as f64 / resolve.as_secs_f64(),
        resolve.as_secs_f64() / append.as_secs_f64()
    );
    println!(
        "peak RSS {:.0} MB before resolving, {:.0} MB after; database file {db_mb:.0} MB",
        before,
        vm_hwm_mb()
    );
    Ok(())
}
