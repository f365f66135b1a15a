//! Where the time of an ingested event goes: each stage of `/v1/batch` measured alone.
//!
//! # Design
//!
//! The end-to-end rate says how far Confiance is from the bound, not why. So the same bodies
//! also go through the two stages that the bound does not have, each without HTTP:
//!
//! - parsing and normalising against the catalog, on one thread, timed per event: what the
//!   tokio workers spend on an event before it reaches the store;
//! - appending already normalised batches to a fresh store from as many concurrent callers as
//!   the load generator has connections: the rate the store sustains by itself, with the
//!   same durability as in the end-to-end run.
//!
//! If the store alone is slower than the end-to-end target, no work on the HTTP side can reach
//! it, and the other way round.

use crate::bodies::Bodies;
use anyhow::Context;
use confiance_core::catalog::Catalog;
use confiance_core::clock::{Clock, SystemClock};
use confiance_core::collect::Message;
use confiance_core::collect::envelope::{Batch, parse_message};
use confiance_core::collect::normalize_incoming;
use confiance_core::source::{SourceKind, SourceName, WriteKey};
use confiance_store::Store;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the normalisation stage is timed.
const NORMALISE_FOR: Duration = Duration::from_secs(1);

/// Parses and normalises batches for about [`NORMALISE_FOR`] on this thread; returns the time
/// per event.
pub fn normalise_per_event(bodies: &Bodies, catalog: &Catalog) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut events = 0u32;
    let mut request = 0;
    while started.elapsed() < NORMALISE_FOR {
        events += normalise(bodies, request, catalog)?.len() as u32;
        request += 1;
    }
    Ok(started.elapsed() / events)
}

/// The messages of request `n`, normalised as the batch handler does.
fn normalise(bodies: &Bodies, n: u64, catalog: &Catalog) -> anyhow::Result<Vec<Message>> {
    let body = bodies.request(n);
    let batch = Batch::parse(&body)?;
    let envelope = batch.envelope();
    let received_at = SystemClock.now();
    batch
        .messages
        .iter()
        .map(|raw| {
            let message = parse_message(raw).and_then(|m| normalize_incoming(m, &envelope, catalog, received_at))?;
            anyhow::ensure!(message.dropped.is_empty(), "normalisation dropped fields");
            Ok(message.message)
        })
        .collect()
}

/// Appends `requests` normalised batches to `store` from `callers` concurrent tasks; returns the
/// events appended per second. The batches are normalised beforehand, outside the timing.
pub async fn store_rate(
    store: Store,
    bodies: &Bodies,
    catalog: &Catalog,
    requests: u64,
    callers: usize,
) -> anyhow::Result<f64> {
    let key = WriteKey::generate();
    let source = store
        .create_source(
            &SourceName::parse("bench-store")?,
            SourceKind::Web,
            &key.digest(),
            &key.prefix(),
        )
        .await
        .context("creating the source")?;
    let batches = (0..requests)
        .map(|n| normalise(bodies, n, catalog))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let events: usize = batches.iter().map(Vec::len).sum();
    let queue = Arc::new(Mutex::new(batches));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (store, queue) = (store.clone(), queue.clone());
            tokio::spawn(async move {
                loop {
                    let next = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
                    let Some(messages) = next else { break };
                    store.append(source.id, messages, Vec::new()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let stored = store.count_events().await?;
    anyhow::ensure!(
        stored == events as i64,
        "the store holds {stored} of the {events} events appended"
    );
    Ok(events as f64 / elapsed.as_secs_f64())
}
