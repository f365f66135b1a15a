//! Current consent states kept in memory beside the SQLite store.
//!
//! Every collecting request asks for the consent states of the people its messages name, and
//! most of them are people seen a moment before. Rather than reading their rows again, a query
//! over hundreds of keys per batch, the store keeps the states it read in memory and reads only
//! the people it does not know.
//!
//! Memory must never be older than the database, whoever writes to it: this process, another
//! process on the same file, an erasure, a migration. So the database numbers every change to
//! `consent_state` itself: triggers list the subject of each row inserted, updated or deleted
//! in `consent_changes`, whose `gen` only grows (migration 16). A read takes the latest number
//! in its own snapshot; when memory is behind, it forgets the subjects changed since, or
//! everything when the changes it missed are no longer listed, then answers from memory what
//! it can and reads the rest in the same snapshot. What a read brings back is kept only if
//! memory is still at that read's number: a slow read of an older snapshot never restores a
//! state that has changed since.

use crate::{Result, StoreError, from_micros, status_from_str};
use confiance_core::consent::{ConsentView, StateEntry, SubjectStates};
use rusqlite::Connection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// How many subjects memory keeps at most; beyond, it starts again empty.
const MAX_SUBJECTS: usize = 100_000;

/// The latest change, in the reader's snapshot.
const LATEST: &str = "SELECT coalesce(max(gen), 0) FROM consent_changes";

/// The current consent states of the subjects read lately.
#[derive(Default)]
pub(crate) struct ConsentMemory {
    /// The change memory is exact at; `None` before the first read.
    at: Option<i64>,
    /// Each subject's states by its key at rest, shared with the views that read them: none for
    /// a subject without any.
    subjects: HashMap<String, Arc<SubjectStates>>,
}

impl ConsentMemory {
    /// Brings memory to change `now`, reading in `conn`'s snapshot what changed since it was
    /// exact. Memory already past `now` stays as it is: it is newer than the snapshot.
    fn catch_up(&mut self, conn: &Connection, now: i64) -> Result<()> {
        match self.at {
            Some(at) if at >= now => return Ok(()),
            Some(at) if !self.subjects.is_empty() => {
                let oldest: i64 =
                    conn.query_row("SELECT coalesce(min(gen), 0) FROM consent_changes", [], |r| r.get(0))?;
                if oldest > at + 1 {
                    self.subjects.clear();
                } else {
                    let mut changed =
                        conn.prepare_cached("SELECT subject FROM consent_changes WHERE gen > ?1 AND gen <= ?2")?;
                    let mut rows = changed.query([at, now])?;
                    while let Some(r) = rows.next()? {
                        match r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)? {
                            // An erasure leaves no key behind: forget everyone.
                            "" => {
                                self.subjects.clear();
                                break;
                            }
                            subject => self.subjects.remove(subject),
                        };
                    }
                }
            }
            _ => self.subjects.clear(),
        }
        self.at = Some(now);
        Ok(())
    }
}

/// Locks memory; a holder that panicked may have left it half changed, so it is emptied.
fn lock(memory: &Mutex<ConsentMemory>) -> MutexGuard<'_, ConsentMemory> {
    memory.lock().unwrap_or_else(|poisoned| {
        let mut memory = poisoned.into_inner();
        *memory = ConsentMemory::default();
        memory
    })
}

/// The current states of the subjects in `asked` (key at rest → key), from memory where it
/// knows them and from `conn` for the others, which memory then keeps.
pub(crate) fn states(
    conn: &Connection,
    memory: &Mutex<ConsentMemory>,
    asked: &HashMap<String, String>,
) -> Result<ConsentView> {
    // One snapshot for the change number and the rows.
    let tx = conn.unchecked_transaction()?;
    let now: i64 = tx.query_row(LATEST, [], |r| r.get(0))?;
    let mut view = ConsentView::default();
    let mut unknown: HashMap<&str, SubjectStates> = HashMap::new();
    {
        let mut memory = lock(memory);
        memory.catch_up(&tx, now)?;
        for (kept, key) in asked {
            match memory.subjects.get(kept) {
                Some(states) => view.insert_subject(key, states),
                None => {
                    unknown.insert(kept, SubjectStates::new());
                }
            }
        }
    }
    if unknown.is_empty() {
        return Ok(view);
    }
    // One statement for all the others: their keys travel as one JSON array.
    let list =
        serde_json::to_string(&unknown.keys().collect::<Vec<_>>()).map_err(|e| StoreError::Database(e.to_string()))?;
    let mut stmt = tx.prepare_cached(
        "SELECT subject, purpose, status, recorded_at, seq FROM consent_state
         WHERE subject IN (SELECT value FROM json_each(?1))",
    )?;
    let mut rows = stmt.query([&list])?;
    while let Some(r) = rows.next()? {
        let text = |i| r.get_ref(i)?.as_str().map_err(rusqlite::Error::from);
        let (subject, purpose) = (text(0)?, text(1)?);
        let entry = StateEntry {
            status: status_from_str(text(2)?)?,
            recorded_at: from_micros(r.get(3)?),
            seq: r.get(4)?,
        };
        if let Some(states) = unknown.get_mut(subject) {
            states.insert(purpose.to_owned(), entry);
        }
    }
    drop(rows);
    let mut memory = lock(memory);
    let keep = memory.at == Some(now);
    if keep && memory.subjects.len() + unknown.len() > MAX_SUBJECTS {
        memory.subjects.clear();
    }
    for (kept, states) in unknown {
        let states = Arc::new(states);
        view.insert_subject(&asked[kept], &states);
        if keep {
            memory.subjects.insert(kept.to_owned(), states);
        }
    }
    Ok(view)
}
