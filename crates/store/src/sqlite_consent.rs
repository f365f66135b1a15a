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
//! in `consent_state_changes`, whose `gen` only grows (migration 16). A read takes the latest number
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
const LATEST: &str = "SELECT coalesce(max(gen), 0) FROM consent_state_changes";

/// The current consent states of the subjects read lately.
#[derive(Default)]
pub(crate) struct ConsentMemory {
    /// The change memory is exact at; `None` before the first read.
    at: Option<i64>,
    /// Each subject's states by its key at rest, shared with the views that read them: none for
    /// a subject without any.
    subjects: HashMap<String, Arc<SubjectStates>>,
}

/// What changed in `consent_state_changes` between two numbers.
enum Changes {
    /// These subjects.
    Subjects(Vec<String>),
    /// Too much to say: changes no longer listed, or a key blanked by an erasure or the rewrite
    /// of identifiers.
    Everything,
}

/// The changes after `at` up to `now`, read in `conn`'s snapshot.
fn changes(conn: &Connection, at: i64, now: i64) -> Result<Changes> {
    let oldest: i64 = conn.query_row("SELECT coalesce(min(gen), 0) FROM consent_state_changes", [], |r| {
        r.get(0)
    })?;
    if oldest > at + 1 {
        return Ok(Changes::Everything);
    }
    let mut changed = conn.prepare_cached("SELECT subject FROM consent_state_changes WHERE gen > ?1 AND gen <= ?2")?;
    let mut rows = changed.query([at, now])?;
    let mut subjects = Vec::new();
    while let Some(r) = rows.next()? {
        match r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)? {
            "" => return Ok(Changes::Everything),
            subject => subjects.push(subject.to_owned()),
        }
    }
    Ok(Changes::Subjects(subjects))
}

impl ConsentMemory {
    /// Brings memory to change `now` with what changed since `seen`, the number memory was at
    /// when the changes were read (`None`: not read). Memory already at `now` or past it is
    /// newer than the snapshot and stays as it is; memory that moved on since `seen` but not
    /// to `now` needs only part of the changes.
    fn catch_up(&mut self, seen: Option<i64>, now: i64, changed: Option<Changes>) {
        match (self.at, changed) {
            (Some(at), _) if at >= now => return,
            (Some(at), Some(Changes::Subjects(subjects))) if Some(at) >= seen => {
                for subject in &subjects {
                    self.subjects.remove(subject);
                }
            }
            _ => self.subjects.clear(),
        }
        self.at = Some(now);
    }
}

/// The triggers that list changes: a migration that rebuilt `consent_state` without them would
/// leave every reader's memory stale for good, so a store does not open without them.
const TRIGGERS: [&str; 3] = [
    "consent_state_inserted",
    "consent_state_updated",
    "consent_state_deleted",
];

/// Fails unless every trigger that lists changes to `consent_state` is in the schema.
pub(crate) fn check_triggers(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?1")?;
    for trigger in TRIGGERS {
        if !stmt.exists([trigger])? {
            return Err(StoreError::Migration(format!(
                "the trigger {trigger} on consent_state is missing: consent states kept in memory would go stale"
            )));
        }
    }
    Ok(())
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
/// knows them and from `conn` for the others, which memory keeps if no other read moved it on
/// meanwhile.
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
    // The changes are read without holding memory: other reads answer from it meanwhile.
    let (seen, empty) = {
        let memory = lock(memory);
        (memory.at, memory.subjects.is_empty())
    };
    let changed = match seen {
        Some(at) if at < now && !empty => Some(changes(&tx, at, now)?),
        _ => None,
    };
    {
        let mut memory = lock(memory);
        memory.catch_up(seen, now, changed);
        for (kept, key) in asked {
            match memory.subjects.get(kept) {
                Some(states) => view.insert_subject(key, states),
                None => {
                    unknown.insert(kept, SubjectStates::default());
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

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::sqlite::migrate(&mut conn).unwrap();
        conn
    }

    fn set(conn: &Connection, subject: &str, status: &str, at: i64) {
        conn.execute(
            "INSERT INTO consent_state (subject, purpose, status, recorded_at, seq, method)
             VALUES (?1, 'analytics', ?2, ?3, ?3, 'api')
             ON CONFLICT (subject, purpose) DO UPDATE SET status = excluded.status,
                 recorded_at = excluded.recorded_at, seq = excluded.seq",
            params![subject, status, at],
        )
        .unwrap();
    }

    fn status(conn: &Connection, memory: &Mutex<ConsentMemory>, subject: &str) -> Option<&'static str> {
        let asked = HashMap::from([(subject.to_owned(), subject.to_owned())]);
        let view = states(conn, memory, &asked).unwrap();
        view.get_by_key(subject, "analytics").map(|e| e.status.as_str())
    }

    #[test]
    fn memory_follows_changes_and_starts_again_when_they_are_no_longer_listed() {
        let conn = store();
        check_triggers(&conn).unwrap();
        let memory = Mutex::default();
        set(&conn, "user_id:ana", "granted", 1);
        assert_eq!(status(&conn, &memory, "user_id:ana"), Some("granted"));
        assert_eq!(status(&conn, &memory, "user_id:bob"), None);
        assert_eq!(lock(&memory).subjects.len(), 2, "both kept, bob as having no state");

        set(&conn, "user_id:bob", "denied", 2);
        assert_eq!(status(&conn, &memory, "user_id:bob"), Some("denied"));
        assert!(lock(&memory).subjects.contains_key("user_id:ana"), "ana did not change");

        // Ana changes, then so many others that her change is pruned from the list.
        set(&conn, "user_id:ana", "withdrawn", 3);
        let tx = conn.unchecked_transaction().unwrap();
        for n in 0..70_000 {
            set(&tx, &format!("user_id:visitor-{n}"), "granted", 4);
        }
        tx.commit().unwrap();
        let oldest: i64 = conn
            .query_row("SELECT min(gen) FROM consent_state_changes", [], |r| r.get(0))
            .unwrap();
        assert!(oldest > 3, "ana's change is no longer listed");
        assert_eq!(status(&conn, &memory, "user_id:ana"), Some("withdrawn"));
        assert_eq!(lock(&memory).subjects.len(), 1, "memory started again");
    }

    #[test]
    fn a_store_without_its_triggers_does_not_open() {
        let conn = store();
        conn.execute_batch("DROP TRIGGER consent_state_updated").unwrap();
        let err = check_triggers(&conn).unwrap_err().to_string();
        assert!(err.contains("consent_state_updated"), "{err}");
    }
}
