//! Identity resolution as a processor that follows the event log, written once for both
//! stores.
//!
//! # Design
//!
//! The processor takes the events after its cursor, in log order, resolves each one with
//! `confiance_core::unify::graph::resolve`, writes what it decided (profiles, identities,
//! links with their provenance, merges, identifiers left out) and moves its cursor — all in one
//! transaction, so a crash never leaves half a message applied, and rebuilding from the log
//! replays the same decisions in the same order.
//!
//! The loop is written once against [`GraphTx`], the handful of reads and writes it needs.
//! SQLite implements them synchronously inside its writer thread; PostgreSQL implements them
//! with queries in a transaction that first locks the cursor row (`FOR UPDATE`), so that when
//! several nodes run the processor, one at a time advances it and none applies an event twice.
//!
//! On PostgreSQL, log positions are handed out when a transaction starts writing, not when it
//! commits: an event can become visible after a later one. The processor therefore stops at a
//! gap in the positions and waits, and only steps over a gap once the event after it is older
//! than [`GAP_PATIENCE_US`] (the gap was a rolled-back transaction).

use crate::Result;
use confiance_core::catalog::Catalog;
use confiance_core::privacy::audit::AuditEvent;
use confiance_core::unify::graph::{Guards, LeftOut, ProfileIds, resolve};
use confiance_core::unify::identifier::{Identifier, message_identifiers};
use serde_json::{Value, json};
use std::collections::HashMap;

/// How long a gap in log positions is waited for before it is taken as a rollback.
pub const GAP_PATIENCE_US: i64 = 10_000_000;

/// An event as the processor reads it.
pub(crate) struct LogEvent {
    pub seq: i64,
    pub source_id: i64,
    pub message_id: String,
    pub received_at: i64,
    pub body: Value,
}

impl From<crate::StoredEvent> for LogEvent {
    fn from(e: crate::StoredEvent) -> Self {
        Self {
            seq: e.seq,
            source_id: e.source_id,
            message_id: e.message_id,
            received_at: crate::to_micros(e.received_at),
            body: e.body,
        }
    }
}

/// A merge to record.
pub(crate) struct NewMerge<'a> {
    pub survivor: i64,
    pub absorbed: i64,
    pub via: &'a str,
    pub seq: i64,
    pub source_id: Option<i64>,
    pub message_id: Option<&'a str>,
    pub at: i64,
    pub origin: &'a str,
    pub evidence: Value,
}

/// The reads and writes identity resolution needs, inside one transaction.
#[allow(async_fn_in_trait)]
pub(crate) trait GraphTx {
    async fn cursor(&mut self) -> Result<i64>;
    async fn set_cursor(&mut self, seq: i64) -> Result<()>;
    async fn events_after(&mut self, seq: i64, limit: usize) -> Result<Vec<LogEvent>>;
    async fn is_rejected(&mut self, source_id: i64, message_id: &str) -> Result<bool>;
    async fn owners(&mut self, keys: &[String]) -> Result<Vec<(String, i64)>>;
    async fn profile_identifiers(&mut self, profile: i64) -> Result<Vec<String>>;
    async fn new_profile(&mut self, seq: i64, at: i64) -> Result<i64>;
    async fn attach(&mut self, key: &str, kind: &str, profile: i64, seq: i64) -> Result<()>;
    async fn absorb(&mut self, survivor: i64, absorbed: i64) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    async fn add_link(
        &mut self,
        a: &str,
        b: &str,
        seq: i64,
        source_id: Option<i64>,
        message_id: Option<&str>,
        at: i64,
        origin: &str,
    ) -> Result<()>;
    async fn add_merge(&mut self, merge: NewMerge<'_>) -> Result<i64>;
    async fn add_left_out(&mut self, seq: i64, key: &str, reason: &str) -> Result<()>;
    async fn add_audit(&mut self, event: AuditEvent) -> Result<()>;
    /// Keeps the sealed values of the identifiers among `keys` that rows keep as hashes
    /// ([`crate::vault::Vault::at_rest`]), making their keys where missing.
    async fn keep_values(&mut self, keys: &[String]) -> Result<()>;
}

/// What one run of the processor did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Events resolved.
    pub events: usize,
    /// The cursor after the run.
    pub cursor: i64,
}

/// Resolves up to `limit` events after the cursor.
pub(crate) async fn resolve_batch<T: GraphTx>(
    tx: &mut T,
    catalog: &Catalog,
    guards: &Guards,
    limit: usize,
    now_us: i64,
) -> Result<Resolved> {
    let mut cursor = tx.cursor().await?;
    let events = tx.events_after(cursor, limit).await?;
    let ids: Vec<Vec<Identifier>> = events.iter().map(|e| message_identifiers(&e.body, catalog)).collect();
    // The values of the whole batch are kept at once: making keys costs the vault a commit.
    let keys: Vec<String> = ids.iter().flatten().map(Identifier::key).collect();
    tx.keep_values(&keys).await?;
    let mut done = 0;
    for (event, ids) in events.iter().zip(ids) {
        if event.seq != cursor + 1 && now_us - event.received_at < GAP_PATIENCE_US {
            break;
        }
        resolve_event(tx, guards, event, ids).await?;
        cursor = event.seq;
        done += 1;
    }
    if done > 0 {
        tx.set_cursor(cursor).await?;
    }
    Ok(Resolved { events: done, cursor })
}

async fn resolve_event<T: GraphTx>(tx: &mut T, guards: &Guards, event: &LogEvent, ids: Vec<Identifier>) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    // A message whose links a reviewer undid links nothing: each identifier stands alone.
    let groups: Vec<Vec<Identifier>> = if tx.is_rejected(event.source_id, &event.message_id).await? {
        for id in ids.iter().skip(1) {
            tx.add_left_out(event.seq, &id.key(), &reason_json(&LeftOut::Rejected))
                .await?;
        }
        ids.into_iter().map(|id| vec![id]).collect()
    } else {
        vec![ids]
    };
    for ids in groups {
        let keys: Vec<String> = ids.iter().map(Identifier::key).collect();
        let owner: HashMap<Identifier, i64> = tx
            .owners(&keys)
            .await?
            .into_iter()
            .filter_map(|(k, p)| Identifier::from_key(&k).map(|id| (id, p)))
            .collect();
        let mut profiles: HashMap<i64, ProfileIds> = HashMap::new();
        for p in owner.values() {
            if !profiles.contains_key(p) {
                let members = tx.profile_identifiers(*p).await?;
                profiles.insert(
                    *p,
                    ProfileIds {
                        ids: members.iter().filter_map(|k| Identifier::from_key(k)).collect(),
                    },
                );
            }
        }
        let r = resolve(&ids, &owner, &profiles, guards);
        let profile = match r.profile {
            Some(p) => p,
            None if r.attached.is_empty() => {
                for (id, why) in &r.left_out {
                    tx.add_left_out(event.seq, &id.key(), &reason_json(why)).await?;
                }
                continue;
            }
            None => tx.new_profile(event.seq, event.received_at).await?,
        };
        for (survivor, absorbed, via) in &r.merges {
            tx.absorb(*survivor, *absorbed).await?;
            let evidence =
                json!({"rule": "deterministic", "identifier_kind": via.kind(), "message_id": event.message_id});
            let merge_id = tx
                .add_merge(NewMerge {
                    survivor: *survivor,
                    absorbed: *absorbed,
                    via: &via.key(),
                    seq: event.seq,
                    source_id: Some(event.source_id),
                    message_id: Some(&event.message_id),
                    at: event.received_at,
                    origin: "message",
                    evidence,
                })
                .await?;
            tx.add_audit(AuditEvent::new(
                "system",
                "profile.merged",
                Some(format!("profile:{survivor}")),
                json!({"absorbed": absorbed, "merge": merge_id, "rule": "deterministic", "seq": event.seq}),
            ))
            .await?;
        }
        for id in &r.attached {
            tx.attach(&id.key(), id.kind(), profile, event.seq).await?;
        }
        for (a, b) in &r.links {
            tx.add_link(
                &a.key(),
                &b.key(),
                event.seq,
                Some(event.source_id),
                Some(&event.message_id),
                event.received_at,
                "message",
            )
            .await?;
        }
        for (id, why) in &r.left_out {
            tx.add_left_out(event.seq, &id.key(), &reason_json(why)).await?;
        }
    }
    Ok(())
}

fn reason_json(why: &LeftOut) -> String {
    serde_json::to_string(why).unwrap_or_default()
}

/// Puts `keys`, the identifiers of `profiles` in order once revealed, back in their profiles,
/// each profile's sorted.
pub(crate) fn put_back(profiles: &mut [(i64, Vec<String>)], keys: Vec<String>) {
    let mut keys = keys.into_iter();
    for (_, ids) in profiles.iter_mut() {
        for id in ids.iter_mut() {
            if let Some(k) = keys.next() {
                *id = k;
            }
        }
        ids.sort_unstable();
    }
}

/// Runs a future that never waits (the SQLite implementation of [`GraphTx`] answers at once),
/// inside the synchronous writer thread.
pub(crate) fn run_now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
