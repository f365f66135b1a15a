//! How the SQLite store appends to the event log with sequential writes only.
//!
//! # Design
//!
//! A commit writes every page it touched, whole. An event appended in `seq` order lands on the
//! same last page as the events before it; an entry of an index on a random key — a
//! `messageId`, a user id, an anonymous id — lands on a page of its own. With those three
//! indexes on `events`, each event made a commit write about three more pages (12 KB) than its
//! own row: the ingestion benchmark reached 4.6–4.8% of its bound, 7.4–8.0% since
//! (BENCHMARKS.md). So the append writes rows in `seq` order only, and the two lookups are
//! indexed in bulk behind it:
//!
//! - **The bulk indexes.** `event_ids` holds each source's `messageId`s with their seq, and
//!   `event_subjects` each event under its `user_id:…` and `anonymous_id:…` keys. Every
//!   [`FOLD_EVERY`] a fold indexes the events after `event_log.folded`, sorted: a bulk of many
//!   events shares the pages that one event at a time would each write.
//! - **Folds in slices.** A fold inside one writer transaction held every append back for
//!   150–200 ms, which set the p99 latency of ingestion. So a thread of its own reads and sorts
//!   the entries ([`read_fold`]) and the writer inserts them in slices of disjoint key ranges
//!   ([`insert_slice`]), each in a group commit between appends; but for the pages at the edges
//!   of the slices, each page is still written by one of them. The last slice moves `folded`. A
//!   slice read before `folded` or `event_log.deleted` moved — another process folded, or
//!   events not folded yet were deleted — is refused and the fold read again, so an entry never
//!   outlives its event.
//! - **Idempotency.** The writer keeps the `messageId`s of the events after `folded` in memory
//!   ([`Recent`]), with the seq that stored each; a hit is confirmed against the event, so a
//!   rolled-back append or a deleted event is never taken for a duplicate. Older ones are looked
//!   up in `event_ids`. Before each append it reads the events another process appended since
//!   (an import beside the server); when the log's marks show that a transaction of its own did
//!   not commit, it reads the unfolded events again.
//! - **Whose events.** A read takes `event_subjects` and scans the few events after `folded`
//!   ([`seqs_of`]), in one statement and so one snapshot.
//! - **Seqs are never given twice**: `event_log.high` keeps the highest, so an event appended
//!   after the last ones were deleted lands after the index's `folded` mark and after any
//!   follower's cursor.
//!
//! Deleting an event deletes its entries in both tables, and counts it in `event_log.deleted` when
//! it is not folded yet (a trigger), whoever deletes it.

use crate::sqlite::{Op, WriteOp};
use crate::{Result, StoreError};
use rusqlite::{Connection, Transaction, params};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How often the events appended since the last fold are indexed.
const FOLD_EVERY: Duration = Duration::from_millis(500);
/// The most events one fold indexes, to bound the memory its entries take.
const FOLD_MAX: i64 = 100_000;
/// About how many index entries the writer inserts in one go: as many rows as a group takes, so
/// that a slice takes the writer about as long as a group of appends and the appends queued
/// behind it commit in the next group.
const SLICE_ENTRIES: usize = crate::sqlite::MAX_GROUP_ROWS;

/// The `messageId`s of the events after `event_log.folded`, which `event_ids` does not hold yet,
/// by source, with the seq of the event that stored each.
pub(crate) struct Recent {
    seqs: HashMap<i64, HashMap<String, i64>>,
    /// Every event up to this seq is in `seqs` or folded.
    known: i64,
    /// The `folded` mark `seqs` was last pruned to.
    folded: i64,
    /// The last event this writer appended, to tell whether its transaction committed.
    last: Option<(i64, i64, String)>,
}

impl Recent {
    /// The unfolded events of the log.
    pub(crate) fn load(conn: &Connection) -> Result<Arc<Mutex<Self>>> {
        let mut recent = Self {
            seqs: HashMap::new(),
            known: 0,
            folded: 0,
            last: None,
        };
        let (high, folded, _) = marks(conn)?;
        recent.reload(conn, high, folded)?;
        Ok(Arc::new(Mutex::new(recent)))
    }

    fn remember(&mut self, source_id: i64, message_id: String, seq: i64) {
        self.seqs.entry(source_id).or_default().insert(message_id, seq);
    }

    /// Forgets everything and reads the unfolded events again.
    fn reload(&mut self, conn: &Connection, high: i64, folded: i64) -> Result<()> {
        self.seqs.clear();
        self.last = None;
        self.known = folded;
        self.folded = folded;
        self.read_after(conn, high)
    }

    /// Takes in the events after `known`, up to `high`.
    fn read_after(&mut self, conn: &Connection, high: i64) -> Result<()> {
        let mut stmt =
            conn.prepare_cached("SELECT seq, source_id, message_id FROM events WHERE seq > ?1 AND seq <= ?2")?;
        let mut rows = stmt.query([self.known, high])?;
        while let Some(row) = rows.next()? {
            self.remember(row.get(1)?, row.get(2)?, row.get(0)?);
        }
        self.known = high;
        Ok(())
    }

    /// Brings the memory level with the log as committed: `high` and `folded` are its marks.
    fn catch_up(&mut self, tx: &Transaction<'_>, high: i64, folded: i64) -> Result<()> {
        // Marks behind the memory's, or the last event appended here missing, mean that a
        // transaction of this writer did not commit (or that event was deleted since): start
        // again from the log.
        let rolled_back = high < self.known || folded < self.folded;
        let lost = match &self.last {
            Some((seq, source_id, message_id)) => !event_is(tx, *seq, *source_id, message_id)?,
            None => false,
        };
        if rolled_back || lost {
            return self.reload(tx, high, folded);
        }
        if high > self.known {
            self.read_after(tx, high)?;
        }
        if folded > self.folded {
            for ids in self.seqs.values_mut() {
                ids.retain(|_, seq| *seq > folded);
            }
            self.folded = folded;
        }
        Ok(())
    }

    /// Whether the source stored `message_id`: in memory, confirmed by the event, or folded.
    fn stored(&self, tx: &Transaction<'_>, source_id: i64, message_id: &str) -> Result<bool> {
        if let Some(seq) = self.seqs.get(&source_id).and_then(|ids| ids.get(message_id))
            && event_is(tx, *seq, source_id, message_id)?
        {
            return Ok(true);
        }
        let mut stmt =
            tx.prepare_cached("SELECT EXISTS(SELECT 1 FROM event_ids WHERE source_id = ?1 AND message_id = ?2)")?;
        Ok(stmt.query_row(params![source_id, message_id], |r| r.get(0))?)
    }
}

/// Whether the event at `seq` is `message_id` of `source_id`.
fn event_is(conn: &Connection, seq: i64, source_id: i64, message_id: &str) -> Result<bool> {
    let mut stmt = conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM events WHERE seq = ?1 AND source_id = ?2 AND message_id = ?3)")?;
    Ok(stmt.query_row(params![seq, source_id, message_id], |r| r.get(0))?)
}

/// An event ready to be written: every value bound as it is stored.
pub(crate) struct EventRow {
    pub(crate) message_id: String,
    pub(crate) kind: &'static str,
    pub(crate) user_id: Option<String>,
    pub(crate) anonymous_id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) timestamp: i64,
    pub(crate) received_at: i64,
    pub(crate) body: rusqlite::types::Value,
    pub(crate) purposes: String,
    pub(crate) traits: Option<String>,
}

/// Appends the rows whose `messageId` the source has not stored; says which.
pub(crate) fn append(
    tx: &Transaction<'_>,
    recent: &Mutex<Recent>,
    source_id: i64,
    rows: &[EventRow],
) -> Result<Vec<bool>> {
    let mut recent = recent
        .lock()
        .map_err(|_| StoreError::Database("the recent messages are poisoned".into()))?;
    let (high, folded, _) = marks(tx)?;
    recent.catch_up(tx, high, folded)?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (seq, source_id, message_id, type, user_id, anonymous_id, event, timestamp, received_at, body, purposes, traits)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut seq = high;
    let mut stored = Vec::with_capacity(rows.len());
    for r in rows {
        if recent.stored(tx, source_id, &r.message_id)? {
            stored.push(false);
            continue;
        }
        seq += 1;
        insert.execute(params![
            seq,
            source_id,
            r.message_id,
            r.kind,
            r.user_id,
            r.anonymous_id,
            r.event,
            r.timestamp,
            r.received_at,
            r.body,
            r.purposes,
            r.traits,
        ])?;
        recent.remember(source_id, r.message_id.clone(), seq);
        recent.last = Some((seq, source_id, r.message_id.clone()));
        stored.push(true);
    }
    if seq > high {
        tx.execute("UPDATE event_log SET high = ?1", [seq])?;
        recent.known = seq;
    }
    Ok(stored)
}

/// Part of a fold: the index entries of some events, sorted, for the writer to insert. The slices
/// of one fold cover disjoint ranges of keys, so that but for the pages at their edges each page
/// of an index is written by one of them.
pub(crate) struct Slice {
    /// `event_log.folded` when the entries were read.
    folded: i64,
    /// `event_log.deleted` when the entries were read.
    deleted: i64,
    /// On the fold's last slice, the seq up to which the fold indexes.
    to: Option<i64>,
    subjects: Vec<(String, i64)>,
    ids: Vec<(i64, String, i64)>,
}

impl Slice {
    fn entries(&self) -> usize {
        self.subjects.len() + self.ids.len()
    }
}

/// The log's marks: the highest seq given, how far the bulk indexes cover the log, and how many
/// events were deleted before they were folded.
fn marks(conn: &Connection) -> Result<(i64, i64, i64)> {
    Ok(conn.query_row("SELECT high, folded, deleted FROM event_log", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?)
}

/// Reads the index entries of the events after the last fold (at most [`FOLD_MAX`] of them),
/// sorted and cut into slices of about [`SLICE_ENTRIES`]; `None` when the log is folded. One
/// transaction, so that the marks and the events agree.
pub(crate) fn read_fold(tx: &Transaction<'_>) -> Result<Option<Vec<Slice>>> {
    let (high, folded, deleted) = marks(tx)?;
    let to = high.min(folded + FOLD_MAX);
    if to <= folded {
        return Ok(None);
    }
    let mut subjects = Vec::new();
    let mut ids = Vec::new();
    let mut stmt = tx.prepare_cached(
        "SELECT seq, source_id, message_id, user_id, anonymous_id FROM events WHERE seq > ?1 AND seq <= ?2",
    )?;
    let mut rows = stmt.query([folded, to])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        ids.push((row.get(1)?, row.get(2)?, seq));
        if let Some(user_id) = row.get::<_, Option<String>>(3)? {
            subjects.push((format!("user_id:{user_id}"), seq));
        }
        if let Some(anonymous_id) = row.get::<_, Option<String>>(4)? {
            subjects.push((format!("anonymous_id:{anonymous_id}"), seq));
        }
    }
    // Rust orders strings by their bytes, as SQLite's default collation does.
    subjects.sort_unstable();
    ids.sort_unstable();
    let count = (subjects.len() + ids.len()).div_ceil(SLICE_ENTRIES).max(1);
    let mut subjects = cut(subjects, count).into_iter();
    let mut ids = cut(ids, count).into_iter();
    Ok(Some(
        (0..count)
            .map(|n| Slice {
                folded,
                deleted,
                to: (n + 1 == count).then_some(to),
                subjects: subjects.next().unwrap_or_default(),
                ids: ids.next().unwrap_or_default(),
            })
            .collect(),
    ))
}

/// `items` cut in at most `count` runs of nearly equal length, in order (fewer when short).
fn cut<T>(mut items: Vec<T>, count: usize) -> Vec<Vec<T>> {
    let size = items.len().div_ceil(count).max(1);
    let mut runs = Vec::with_capacity(count);
    while items.len() > size {
        let rest = items.split_off(size);
        runs.push(std::mem::replace(&mut items, rest));
    }
    runs.push(items);
    runs
}

/// Inserts a slice's entries, and on the last one moves `folded`, unless the log changed since
/// they were read: another fold (of an import beside the server) moved `folded`, or events not
/// folded yet were deleted — an entry must not outlive its event. Says whether it did; a fold whose slice was
/// refused is read again. An entry already there (a fold that failed half way) stays.
pub(crate) fn insert_slice(tx: &Transaction<'_>, slice: &Slice) -> Result<bool> {
    let (_, folded, deleted) = marks(tx)?;
    if (folded, deleted) != (slice.folded, slice.deleted) {
        return Ok(false);
    }
    let mut subjects = tx.prepare_cached("INSERT OR IGNORE INTO event_subjects (subject, seq) VALUES (?1, ?2)")?;
    for (subject, seq) in &slice.subjects {
        subjects.execute(params![subject, seq])?;
    }
    let mut ids =
        tx.prepare_cached("INSERT OR IGNORE INTO event_ids (source_id, message_id, seq) VALUES (?1, ?2, ?3)")?;
    let mut twice = 0;
    for (source_id, message_id, seq) in &slice.ids {
        // An entry already there is a fold's that stopped half way, or — under another seq — a
        // `messageId` the log holds twice, whose first copy stays the one found.
        if ids.execute(params![source_id, message_id, seq])? == 0 {
            let mut first = tx.prepare_cached("SELECT seq FROM event_ids WHERE source_id = ?1 AND message_id = ?2")?;
            if first.query_row(params![source_id, message_id], |r| r.get::<_, i64>(0))? != *seq {
                twice += 1;
            }
        }
    }
    if twice > 0 {
        tracing::error!(
            duplicates = twice,
            "the event log holds a messageId of a source more than once"
        );
    }
    if let Some(to) = slice.to {
        tx.execute("UPDATE event_log SET folded = ?1", [to])?;
    }
    Ok(true)
}

/// SQL giving the seqs of the events of some subjects after `after` (an SQL expression):
/// `subjects` is a query giving `user_id:…` and `anonymous_id:…` keys. The folded part of the
/// log is read through `event_subjects` (whose entries past `folded`, of a fold under way, are
/// left to the scan), the rest scanned.
pub(crate) fn seqs_of(subjects: &str, after: &str) -> String {
    format!(
        "SELECT seq FROM event_subjects WHERE subject IN ({subjects}) AND seq > {after}
           AND seq <= (SELECT folded FROM event_log)
         UNION ALL
         SELECT seq FROM events WHERE seq > max({after}, (SELECT folded FROM event_log))
           AND ('user_id:' || user_id IN ({subjects}) OR 'anonymous_id:' || anonymous_id IN ({subjects}))"
    )
}

/// SQL giving the seqs of the events of profile `?1` after `?2`.
pub(crate) fn profile_seqs() -> String {
    seqs_of(
        "SELECT identifier FROM identities WHERE profile_id = ?1 AND kind IN ('user_id', 'anonymous_id')",
        "?2",
    )
}

/// Starts the thread that folds the log every [`FOLD_EVERY`] when it has events to index: it
/// reads and sorts their entries on `conn`, off the writer, then asks the writer to insert them
/// slice by slice, so that appends run between slices instead of waiting for a whole fold. It
/// ends with the store's last handle. An idle store sees no transaction from it, so the
/// checkpointer still finds the writer idle.
pub(crate) fn start_folding(writer: mpsc::WeakSender<Box<dyn WriteOp>>, mut conn: Connection) -> Result<()> {
    std::thread::Builder::new()
        .name("sqlite-fold".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FOLD_EVERY);
                let read = conn
                    .transaction()
                    .map_err(StoreError::from)
                    .and_then(|tx| read_fold(&tx));
                let slices = match read {
                    Ok(Some(slices)) => slices,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the event log to index it failed; retried later");
                        continue;
                    }
                };
                for slice in slices {
                    let Some(queue) = writer.upgrade() else { return };
                    let (reply, answer) = oneshot::channel();
                    let op = Op::new(
                        slice.entries(),
                        move |tx: &Transaction<'_>| insert_slice(tx, &slice),
                        reply,
                    );
                    if queue.blocking_send(Box::new(op)).is_err() {
                        return;
                    }
                    drop(queue);
                    match answer.blocking_recv() {
                        Ok(Ok(true)) => {}
                        // The log changed: the next fold reads it again.
                        Ok(Ok(false)) => break,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "indexing the event log failed; retried later");
                            break;
                        }
                        Err(_) => return,
                    }
                }
            }
        })
        .map_err(|e| StoreError::Database(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::sqlite::migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO sources (id, name, kind, key_digest, key_prefix, created_at) VALUES (1, 'web', 'web', 'd', 'wk_', 0)",
            [],
        )
        .unwrap();
        conn
    }

    fn rows(ids: &[&str]) -> Vec<EventRow> {
        ids.iter()
            .map(|id| EventRow {
                message_id: (*id).to_owned(),
                kind: "track",
                user_id: Some("user-1".into()),
                anonymous_id: None,
                event: Some("Order Completed".into()),
                timestamp: 0,
                received_at: 0,
                body: rusqlite::types::Value::Text("{}".into()),
                purposes: ",".into(),
                traits: None,
            })
            .collect()
    }

    /// Appends `ids` in a transaction that commits or, as a failed group commit does, rolls back.
    fn append_in(
        conn: &mut Connection,
        recent: &Mutex<Recent>,
        ids: &[&str],
        fold_first: bool,
        commit: bool,
    ) -> Vec<bool> {
        let tx = conn.transaction().unwrap();
        if fold_first {
            for slice in read_fold(&tx).unwrap().unwrap_or_default() {
                assert!(insert_slice(&tx, &slice).unwrap());
            }
        }
        let stored = append(&tx, recent, 1, &rows(ids)).unwrap();
        if commit {
            tx.commit().unwrap()
        } else {
            tx.rollback().unwrap()
        }
        stored
    }

    #[test]
    fn what_did_not_commit_is_not_a_duplicate_and_what_did_stays_one() {
        let mut conn = store();
        let recent = Recent::load(&conn).unwrap();

        assert_eq!(append_in(&mut conn, &recent, &["a", "b"], false, false), [true, true]);
        assert_eq!(append_in(&mut conn, &recent, &["a", "a"], false, true), [true, false]);

        // A group whose fold moved the index, letting the memory forget "a", then failed.
        assert_eq!(append_in(&mut conn, &recent, &["a"], true, false), [false]);
        assert_eq!(append_in(&mut conn, &recent, &["a", "c"], false, true), [false, true]);

        // Folded for good, "a" and "c" are refused through the index.
        assert_eq!(
            append_in(&mut conn, &recent, &["a", "c", "d"], true, true),
            [false, false, true]
        );
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 3);
    }

    fn folded(conn: &Connection) -> i64 {
        marks(conn).unwrap().1
    }

    /// The seqs `seqs_of` finds for `subject`, in order.
    fn seqs(conn: &Connection, subject: &str) -> Vec<i64> {
        let mut stmt = conn.prepare(&seqs_of("SELECT ?1", "0")).unwrap();
        let mut seqs: Vec<i64> = stmt
            .query_map([subject], |r| r.get(0))
            .unwrap()
            .map(|s| s.unwrap())
            .collect();
        seqs.sort_unstable();
        seqs
    }

    /// Appends `count` events whose user ids run backwards and anonymous ids forwards, so that
    /// neither order is the seqs'.
    fn append_many(conn: &mut Connection, recent: &Mutex<Recent>, count: usize) {
        let ids: Vec<String> = (0..count).map(|n| format!("m-{n}")).collect();
        let mut batch = rows(&ids.iter().map(String::as_str).collect::<Vec<_>>());
        for (n, row) in batch.iter_mut().enumerate() {
            row.user_id = Some(format!("user-{:05}", count - n));
            row.anonymous_id = Some(format!("anon-{}", n % 11));
        }
        let tx = conn.transaction().unwrap();
        append(&tx, recent, 1, &batch).unwrap();
        tx.commit().unwrap();
    }

    /// A store holding [`append_many`]'s `count` events, none folded.
    fn store_with(count: usize) -> (Connection, Arc<Mutex<Recent>>) {
        let mut conn = store();
        let recent = Recent::load(&conn).unwrap();
        append_many(&mut conn, &recent, count);
        (conn, recent)
    }

    fn read(conn: &mut Connection) -> Option<Vec<Slice>> {
        let tx = conn.transaction().unwrap();
        read_fold(&tx).unwrap()
    }

    /// Inserts `slice` in a transaction of its own; whether it was taken.
    fn insert(conn: &mut Connection, slice: &Slice) -> bool {
        let tx = conn.transaction().unwrap();
        let taken = insert_slice(&tx, slice).unwrap();
        tx.commit().unwrap();
        taken
    }

    /// Whether each run of `runs` is sorted and ends before the next one starts.
    fn disjoint<T: Ord>(runs: Vec<&[T]>) -> bool {
        runs.iter().all(|run| run.is_sorted())
            && runs.windows(2).all(|pair| match (pair[0].last(), pair[1].first()) {
                (Some(last), Some(first)) => last < first,
                _ => true,
            })
    }

    #[test]
    fn a_fold_in_slices_indexes_every_event_and_moves_the_mark_last() {
        let (mut conn, _) = store_with(4_000);

        // Three entries per event: more than one slice, over ranges of keys that do not overlap.
        let slices = read(&mut conn).unwrap();
        assert!(slices.len() > 1, "{} slices", slices.len());
        assert!(disjoint(slices.iter().map(|s| &s.subjects[..]).collect()));
        assert!(disjoint(slices.iter().map(|s| &s.ids[..]).collect()));
        let anon_5: Vec<i64> = (1..=4_000).filter(|seq| (seq - 1) % 11 == 5).collect();
        for (n, slice) in slices.iter().enumerate() {
            assert_eq!(folded(&conn), 0, "moved before the last slice");
            // Between slices a read finds every event once.
            assert_eq!(seqs(&conn, "anonymous_id:anon-5"), anon_5);
            assert!(insert(&mut conn, slice), "slice {n} refused");
        }
        assert_eq!(folded(&conn), 4_000);
        assert!(read(&mut conn).is_none());
        assert_eq!(seqs(&conn, "user_id:user-04000"), [1]);
        assert_eq!(seqs(&conn, "anonymous_id:anon-5"), anon_5);
        // Every messageId is now refused through the index.
        let recent = Recent::load(&conn).unwrap();
        let again = append_in(&mut conn, &recent, &["m-0", "m-3999", "m-4000"], false, true);
        assert_eq!(again, [false, false, true]);
    }

    #[test]
    fn a_slice_read_before_another_fold_moved_the_mark_is_refused() {
        let (mut conn, _) = store_with(4_000);
        // Two processes read the same fold; one of them inserts it whole.
        let late = read(&mut conn).unwrap();
        for slice in read(&mut conn).unwrap() {
            assert!(insert(&mut conn, &slice));
        }
        assert!(!insert(&mut conn, &late[0]));
        assert_eq!(folded(&conn), 4_000);
        assert_eq!(seqs(&conn, "user_id:user-00001"), [4_000]);
    }

    fn entries_of(conn: &Connection, seq: i64) -> i64 {
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM event_subjects WHERE seq = ?1) + (SELECT COUNT(*) FROM event_ids WHERE seq = ?1)",
            [seq],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_slice_read_before_a_deletion_is_not_inserted_after_it() {
        let (mut conn, recent) = store_with(4_000);
        let slices = read(&mut conn).unwrap();
        assert!(insert(&mut conn, &slices[0]));
        // Erased between two slices: the entries of the first go with the event, the second is
        // refused.
        conn.execute("DELETE FROM events WHERE seq IN (1, 4000)", []).unwrap();
        assert_eq!((entries_of(&conn, 1), entries_of(&conn, 4_000)), (0, 0));
        assert!(!insert(&mut conn, &slices[1]));
        assert_eq!(folded(&conn), 0);

        // Read again, the fold indexes what is left, and nothing of the erased events.
        for slice in read(&mut conn).unwrap() {
            assert!(insert(&mut conn, &slice));
        }
        assert_eq!(folded(&conn), 4_000);
        assert_eq!(
            (entries_of(&conn, 1), entries_of(&conn, 4_000), entries_of(&conn, 2)),
            (0, 0, 3)
        );
        assert_eq!(seqs(&conn, "user_id:user-04000"), Vec::<i64>::new());

        // Deleting a folded event does not hold the next fold back.
        append_in(&mut conn, &recent, &["x", "y"], false, true);
        let slices = read(&mut conn).unwrap();
        conn.execute("DELETE FROM events WHERE seq = 2", []).unwrap();
        assert!(slices.iter().all(|slice| insert(&mut conn, slice)));
        assert_eq!(folded(&conn), 4_002);
    }
}
