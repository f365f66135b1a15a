//! The embedded SQLite store.
//!
//! # Design
//!
//! SQLite allows one writer at a time, and a durable commit costs an `fsync`. So every write
//! goes through one writer thread that practises *group commit*: it takes the first waiting
//! operation, then everything else already queued (up to a bound), runs them all in one
//! transaction with a savepoint each and commits once; each caller is answered once that commit
//! is durable. Under load one `fsync` covers many requests; alone, a request pays one `fsync`
//! and no waiting.
//! A failing operation rolls back to its own savepoint and fails alone.
//!
//! A group is bounded by the rows it writes as well as by its operations, and when the previous
//! group held several operations (callers are writing concurrently) the writer waits up to
//! [`LINGER`] for more before it commits: the cost of a commit is mostly the pages it writes and
//! the `fsync`, and a larger group shares both. A lone operation after a lone operation never
//! waits. The writer does no WAL checkpoints: [`crate::sqlite_checkpoint`] runs them on a thread
//! of its own, so that copying pages to the database file never holds up a commit.
//!
//! Reads use a small pool of connections on the blocking thread pool; WAL mode lets them run
//! beside the writer. Every commit is durable against power loss, not only against a crash of
//! the process, before its callers are answered: other connections commit with
//! `synchronous = FULL`; the writer's commits are synced by a thread of their own
//! ([`crate::sqlite_sync`]) while the writer goes on with the next group.
//!
//! Appends write the event log in `seq` order only; its lookups by `messageId` and by person are
//! indexed in bulk behind them ([`crate::sqlite_log`]).

use crate::sqlite_consent::ConsentMemory;
use crate::sqlite_log::{EventRow, Recent, seqs_of};
use crate::vault::{AtRest, Body, Read, Vault};
use crate::{
    Appended, ConsentCount, Counters, Result, Role, StoreError, StoredEvent, Who, decision_keys, from_micros,
    kind_from_str, ledger_entry, purposes_column, purposes_from_column, source_kind_from_str, source_name_from_str,
    status_from_str, to_micros, traits_column,
};
use confiance_core::collect::Message;
use confiance_core::consent::{ConsentView, Decision, LedgerEntry};
use confiance_core::privacy::audit::{self, AuditEvent};
use confiance_core::privacy::vault::MasterKey;
use confiance_core::source::{KeyDigest, Source, SourceKind, SourceName};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/sqlite/0001_init.sql")),
    (2, "consent", include_str!("../migrations/sqlite/0002_consent.sql")),
    (3, "unify", include_str!("../migrations/sqlite/0003_unify.sql")),
    (4, "audit", include_str!("../migrations/sqlite/0004_audit.sql")),
    (5, "requests", include_str!("../migrations/sqlite/0005_requests.sql")),
    (6, "erasure", include_str!("../migrations/sqlite/0006_erasure.sql")),
    (7, "segments", include_str!("../migrations/sqlite/0007_segments.sql")),
    (8, "activate", include_str!("../migrations/sqlite/0008_activate.sql")),
    (9, "breaches", include_str!("../migrations/sqlite/0009_breaches.sql")),
    (
        10,
        "governance",
        include_str!("../migrations/sqlite/0010_governance.sql"),
    ),
    (
        11,
        "events at rest",
        include_str!("../migrations/sqlite/0011_events_at_rest.sql"),
    ),
    (
        12,
        "breach_jobs",
        include_str!("../migrations/sqlite/0012_breach_jobs.sql"),
    ),
    (
        13,
        "recipient notices",
        include_str!("../migrations/sqlite/0013_recipient_notices.sql"),
    ),
    (
        14,
        "identifier values",
        include_str!("../migrations/sqlite/0014_identifier_values.sql"),
    ),
    (
        15,
        "sequential log",
        include_str!("../migrations/sqlite/0015_sequential_log.sql"),
    ),
    (
        16,
        "consent state changes",
        include_str!("../migrations/sqlite/0016_consent_state_changes.sql"),
    ),
    (
        17,
        "sliced folds",
        include_str!("../migrations/sqlite/0017_sliced_folds.sql"),
    ),
];

/// How many operations one group commit takes at most.
const MAX_GROUP: usize = 256;
/// How many rows (events, consent decisions) one group commit takes, beyond which it takes no
/// further operation: a bound on the time the first caller of a group waits for the others.
pub(crate) const MAX_GROUP_ROWS: usize = 8192;
/// How long the writer waits for more operations before committing a group, when the previous
/// group held several: long enough for a request handler to deliver, short beside a commit.
const LINGER: Duration = Duration::from_micros(1000);
/// How often the writer looks for new operations while it lingers.
const LINGER_POLL: Duration = Duration::from_micros(100);
/// How many operations may wait for the writer before callers are told to back off (those
/// committed and waiting for their sync are not counted: each has a caller waiting for it).
const QUEUE_DEPTH: usize = 4096;
/// Read connections kept open.
const READERS: usize = 4;

/// The file name of the database inside the data directory.
pub const DB_FILE: &str = "confiance.db";

/// A write operation run by the writer thread inside a group transaction.
pub(crate) trait WriteOp: Send {
    /// The rows it writes, as far as the caller knows: what [`MAX_GROUP_ROWS`] counts.
    fn rows(&self) -> usize;
    /// Runs inside the group transaction; its own failure is kept for [`WriteOp::finish`].
    fn apply(&mut self, tx: &Transaction<'_>);
    /// Answers the caller once the group's commit is durable (or failed).
    fn finish(self: Box<Self>, commit: std::result::Result<(), String>);
}

pub(crate) struct Op<T, F> {
    rows: usize,
    work: Option<F>,
    outcome: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Op<T, F> {
    /// `work`, writing about `rows` rows, whose outcome goes to `reply`.
    pub(crate) fn new(rows: usize, work: F, reply: oneshot::Sender<Result<T>>) -> Self {
        Self {
            rows,
            work: Some(work),
            outcome: None,
            reply,
        }
    }
}

impl<T: Send, F: FnOnce(&Transaction<'_>) -> Result<T> + Send> WriteOp for Op<T, F> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn apply(&mut self, tx: &Transaction<'_>) {
        let Some(work) = self.work.take() else { return };
        let outcome = (|| {
            tx.execute_batch("SAVEPOINT op")?;
            match work(tx) {
                Ok(v) => {
                    tx.execute_batch("RELEASE op")?;
                    Ok(v)
                }
                Err(e) => {
                    tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
                    Err(e)
                }
            }
        })();
        self.outcome = Some(outcome);
    }

    fn finish(self: Box<Self>, commit: std::result::Result<(), String>) {
        let result = match (commit, self.outcome) {
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(StoreError::Database("operation did not run".into())),
            (Err(e), _) => Err(StoreError::Database(format!("commit failed: {e}"))),
        };
        let _ = self.reply.send(result);
    }
}

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Box<dyn WriteOp>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<PathBuf>,
    pub(crate) vault: Arc<Vault>,
    recent: Arc<Mutex<Recent>>,
    /// The consent states read lately ([`crate::sqlite_consent`]).
    consents: Arc<Mutex<ConsentMemory>>,
}

/// How long a connection waits for another one's lock before it reports the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `path` with the busy timeout set and the file in WAL mode.
///
/// Switching a new file to WAL needs the whole file to itself, and SQLite answers `SQLITE_BUSY`
/// at once, without its busy handler, while another connection is doing the same. Nodes that
/// open a new store together would fail at random: the switch is retried until the timeout.
pub(crate) fn open_in_wal_mode(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.execute_batch("PRAGMA journal_mode = WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            done => return done.map(|()| conn),
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let conn = open_in_wal_mode(path)?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )?;
    let current: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| {
        r.get(0)
    })?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::Migration(format!(
            "the database is at schema version {current}, newer than this binary's {latest}"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Migration(format!("{version} {name}: {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, to_micros(jiff::Timestamp::now())],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn writer_loop(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Box<dyn WriteOp>>,
    committed: std::sync::mpsc::SyncSender<()>,
    gate: Arc<Mutex<()>>,
    durable: crate::sqlite_sync::Syncer,
) {
    let mut group: Vec<Box<dyn WriteOp>> = Vec::with_capacity(MAX_GROUP);
    let mut previous = 0;
    while let Some(first) = queue.blocking_recv() {
        let mut rows = first.rows();
        group.push(first);
        let linger_until = (previous > 1).then(|| Instant::now() + LINGER);
        while group.len() < MAX_GROUP && rows < MAX_GROUP_ROWS {
            match queue.try_recv() {
                Ok(op) => {
                    rows += op.rows();
                    group.push(op);
                }
                Err(mpsc::error::TryRecvError::Empty) => match linger_until {
                    Some(until) if Instant::now() < until => std::thread::sleep(LINGER_POLL),
                    _ => break,
                },
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        previous = group.len();
        if durable.stopped() {
            crate::sqlite_sync::refuse(group.drain(..));
            continue;
        }
        // Held while the transaction runs: a checkpoint that must not race the writer waits for
        // the end of this one and holds the next back.
        let gate = gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // IMMEDIATE takes the write lock at BEGIN, waiting for another process (an import beside
        // the server) instead of failing when a read inside the transaction must turn into a write.
        let commit = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => {
                for op in group.iter_mut() {
                    op.apply(&tx);
                }
                tx.commit().map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        drop(gate);
        match commit {
            // Answered once the commit is durable.
            Ok(()) => durable.answer_when_durable(std::mem::replace(&mut group, Vec::with_capacity(MAX_GROUP))),
            Err(e) => {
                for op in group.drain(..) {
                    op.finish(Err(e.clone()));
                }
            }
        }
        // Full means a wake-up is already pending: the checkpointer will see this commit too.
        let _ = committed.try_send(());
    }
}

impl SqliteStore {
    /// Opens the store under `dir`, creating the directory and the schema as needed, with its key
    /// vault beside it (`vault.db`) under `master`, or under a master key derived from the
    /// instance's secret when none is given.
    pub async fn open(dir: &Path, master: Option<MasterKey>) -> Result<Self> {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&dir, master))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?
    }

    fn open_blocking(dir: &Path, master: Option<MasterKey>) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Database(format!("cannot create the data directory: {e}")))?;
        let path = dir.join(DB_FILE);
        let mut conn = open_connection(&path)?;
        migrate(&mut conn)?;
        crate::sqlite_consent::check_triggers(&conn)?;
        let master = match master {
            Some(m) => m,
            None => MasterKey::derived_from(instance_secret_in(&mut conn)?.as_bytes()),
        };
        let vault = Arc::new(Vault::open_sqlite(dir, master)?);
        crate::identifiers::rewrite_sqlite(&mut conn, &vault)?;
        // Checkpoints are the checkpointer's: none on the writer's commits. The writer's page
        // cache stays valid from one transaction to the next (no other connection writes), and
        // SQLite's default of 2 MB is smaller than one group's worth of index pages: the writer
        // read pages back and spilled uncommitted pages to the log in the middle of a group.
        // Its commits are made durable by the sync thread, not by SQLite.
        conn.execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             PRAGMA cache_size = -65536;
             PRAGMA synchronous = NORMAL;",
        )?;
        let recent = Recent::load(&conn)?;
        let gate = Arc::new(Mutex::new(()));
        let committed = crate::sqlite_checkpoint::start(open_connection(&path)?, gate.clone())?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        crate::sqlite_log::start_folding(tx.downgrade(), open_connection(&path)?)?;
        // The database file as SQLite names it: its log's name derives from it.
        let db_file = conn.path().map_or_else(|| path.clone(), PathBuf::from);
        let durable = crate::sqlite_sync::Syncer::start(&db_file)?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, committed, gate, durable))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let readers = (0..READERS)
            .map(|_| open_connection(&path))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(Mutex::new(readers)),
            path: Arc::new(path),
            vault,
            recent,
            consents: Arc::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.write_rows(1, work).await
    }

    /// Like [`SqliteStore::write`], for an operation that writes about `rows` rows.
    async fn write_rows<T, F>(&self, rows: usize, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = Box::new(Op::new(rows, work, reply));
        self.writer
            .send(op)
            .await
            .map_err(|_| StoreError::Database("the writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Database("the writer stopped".into()))?
    }

    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers
                .lock()
                .map_err(|_| StoreError::Database("reader pool poisoned".into()))?
                .pop();
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&path)?,
            };
            let result = work(&conn);
            if let Ok(mut pool) = readers.lock()
                && pool.len() < READERS
            {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    pub(crate) async fn create_source(
        &self,
        name: &SourceName,
        kind: SourceKind,
        key: &KeyDigest,
        prefix: &str,
    ) -> Result<Source> {
        let (name, digest, prefix) = (name.clone(), key.to_hex(), prefix.to_owned());
        // Kept to the microsecond, as stored, so the source returned equals the one read back.
        let created_at = from_micros(to_micros(jiff::Timestamp::now()));
        self.write(move |tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM sources WHERE name = ?1)",
                [name.as_ref()],
                |r| r.get(0),
            )?;
            if exists {
                return Err(StoreError::Conflict(format!("source `{name}`")));
            }
            tx.execute(
                "INSERT INTO sources (name, kind, key_digest, key_prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name.as_ref(), kind.as_str(), digest, prefix, to_micros(created_at)],
            )?;
            Ok(Source {
                id: tx.last_insert_rowid(),
                name,
                kind,
                key_prefix: prefix,
                created_at,
            })
        })
        .await
    }

    fn row_to_source(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, String, i64)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    }

    fn into_source((id, name, kind, prefix, created): (i64, String, String, String, i64)) -> Result<Source> {
        Ok(Source {
            id,
            name: source_name_from_str(&name)?,
            kind: source_kind_from_str(&kind)?,
            key_prefix: prefix,
            created_at: from_micros(created),
        })
    }

    pub(crate) async fn list_sources(&self) -> Result<Vec<Source>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT id, name, kind, key_prefix, created_at FROM sources ORDER BY name")?;
            let rows = stmt
                .query_map([], Self::row_to_source)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(Self::into_source).collect()
        })
        .await
    }

    async fn source_where(&self, clause: &'static str, value: String) -> Result<Option<Source>> {
        self.read(move |c| {
            let sql = format!("SELECT id, name, kind, key_prefix, created_at FROM sources WHERE {clause} = ?1");
            let row = c.query_row(&sql, [value], Self::row_to_source).optional()?;
            row.map(Self::into_source).transpose()
        })
        .await
    }

    pub(crate) async fn source_by_key(&self, key: &KeyDigest) -> Result<Option<Source>> {
        self.source_where("key_digest", key.to_hex()).await
    }

    pub(crate) async fn source_by_name(&self, name: &SourceName) -> Result<Option<Source>> {
        self.source_where("name", name.to_string()).await
    }

    pub(crate) async fn append(
        &self,
        source_id: i64,
        messages: Vec<Message>,
        decisions: Vec<Decision>,
        counters: Counters,
    ) -> Result<Appended> {
        // Everything but SQLite itself happens here, on the caller's thread: the single writer
        // thread sets the pace of ingestion, so it only binds ready values and writes.
        let vault = &self.vault;
        let subjects = vault.to_rest(&decision_keys(&decisions)).await?;
        let (tags, keys) = vault
            .sealing_keys(
                messages
                    .iter()
                    .map(|m| (m.user_id.as_deref(), m.anonymous_id.as_deref())),
            )
            .await?;
        let rows = messages
            .into_iter()
            .zip(&tags)
            .map(|(m, tag)| {
                let text = serde_json::to_string(&m.body).map_err(|e| StoreError::Database(e.to_string()))?;
                let body = match vault.seal(tag.as_ref(), &keys, text.as_bytes()) {
                    Some(sealed) => rusqlite::types::Value::Blob(sealed),
                    None => rusqlite::types::Value::Text(text),
                };
                let traits = traits_column(&m);
                Ok(EventRow {
                    message_id: m.message_id,
                    kind: m.kind.as_str(),
                    user_id: m.user_id,
                    anonymous_id: m.anonymous_id,
                    event: m.event,
                    timestamp: to_micros(m.timestamp),
                    received_at: to_micros(m.received_at),
                    body,
                    purposes: purposes_column(&m.purposes),
                    traits,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let recent = self.recent.clone();
        self.write_rows(rows.len() + decisions.len(), move |tx| {
            insert_decisions(tx, &decisions, &subjects)?;
            let stored = crate::sqlite_log::append(tx, &recent, source_id, &rows)?;
            let accepted = stored.iter().filter(|s| **s).count() as i64;
            let mut counters = counters;
            counters.push(("accepted".into(), accepted));
            counters.push(("duplicate".into(), stored.len() as i64 - accepted));
            add_counters(tx, source_id, &counters)?;
            Ok(Appended { stored })
        })
        .await
    }

    pub(crate) async fn source_counters(&self, source_id: i64) -> Result<Counters> {
        self.read(move |c| {
            let mut stmt =
                c.prepare("SELECT counter, value FROM source_counters WHERE source_id = ?1 ORDER BY counter")?;
            let rows = stmt.query_map([source_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub(crate) async fn events_of(
        &self,
        who: &Who,
        purpose: Option<&str>,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let subject = match who {
            Who::UserId(v) => format!("user_id:{v}"),
            Who::AnonymousId(v) => format!("anonymous_id:{v}"),
        };
        // Without a purpose every event is seen; with one, the events collected for it and
        // those that only link identifiers.
        let pattern = purpose.map_or_else(|| "%".to_owned(), |p| format!("%,{p},%"));
        let vault = self.vault.clone();
        self.read(move |c| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE seq IN ({}) AND (purposes LIKE ?4 OR purposes = ',')
                 ORDER BY seq LIMIT ?3",
                seqs_of("SELECT ?1", "?2")
            );
            query_events(c, &vault, &sql, params![subject, after_seq, limit as i64, pattern])
        })
        .await
    }

    pub(crate) async fn record_consents(&self, decisions: Vec<Decision>) -> Result<Vec<i64>> {
        let subjects = self.vault.to_rest(&decision_keys(&decisions)).await?;
        self.write_rows(decisions.len(), move |tx| insert_decisions(tx, &decisions, &subjects))
            .await
    }

    pub(crate) async fn consent_view(&self, keys: Vec<String>) -> Result<ConsentView> {
        let asked: HashMap<String, String> = keys.into_iter().map(|k| (self.vault.at_rest(&k), k)).collect();
        let memory = self.consents.clone();
        self.read(move |c| crate::sqlite_consent::states(c, &memory, &asked))
            .await
    }

    pub(crate) async fn consent_history(&self, key: String) -> Result<Vec<LedgerEntry>> {
        let kept = self.vault.at_rest(&key);
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, subject, purpose, status, method, recorded_at, notice_version, notice_hash,
                        source_id, touchpoint, ip_hash, ua_hash, proof
                 FROM consent_ledger WHERE subject = ?1 ORDER BY recorded_at, seq",
            )?;
            let rows = stmt.query_map([&kept], |r| {
                Ok((
                    (
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ),
                    (
                        r.get::<_, i64>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, Option<i64>>(8)?,
                    ),
                    (
                        r.get::<_, Option<String>>(9)?,
                        r.get::<_, Option<String>>(10)?,
                        r.get::<_, Option<String>>(11)?,
                        r.get::<_, String>(12)?,
                    ),
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (
                    (seq, _, purpose, status, method),
                    (at, notice_version, notice_hash, source_id),
                    (touchpoint, ip_hash, ua_hash, proof),
                ) = row?;
                let proof = serde_json::from_str(&proof).map_err(|e| StoreError::Database(e.to_string()))?;
                out.push(ledger_entry(
                    seq,
                    &key,
                    purpose,
                    &status,
                    &method,
                    from_micros(at),
                    (notice_version, notice_hash),
                    source_id,
                    touchpoint,
                    (ip_hash, ua_hash),
                    proof,
                )?);
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn consent_counts(&self) -> Result<Vec<ConsentCount>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT purpose, status, source_id, touchpoint, COUNT(*) FROM consent_state
                 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (purpose, status, source_id, touchpoint, count) = row?;
                out.push(ConsentCount {
                    purpose,
                    status: status_from_str(&status)?,
                    source_id,
                    touchpoint,
                    count,
                });
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn subjects_for(
        &self,
        purpose: String,
        granted_only: bool,
        prefix: String,
        after: String,
        limit: usize,
    ) -> Result<Vec<String>> {
        let after = self.vault.at_rest(&after);
        let vault = self.vault.clone();
        self.read(move |c| {
            let sql = if granted_only {
                "SELECT subject FROM consent_state
                 WHERE purpose = ?1 AND status = 'granted' AND subject > ?3 AND substr(subject, 1, length(?2)) = ?2
                 ORDER BY subject LIMIT ?4"
            } else {
                "SELECT DISTINCT subject FROM consent_state
                 WHERE subject > ?3 AND substr(subject, 1, length(?2)) = ?2
                   AND subject NOT IN (SELECT subject FROM consent_state WHERE purpose = ?1 AND status IN ('objected', 'restricted'))
                 ORDER BY subject LIMIT ?4"
            };
            let mut stmt = c.prepare(sql)?;
            let rows = stmt.query_map(params![purpose, prefix, after, limit as i64], |r| r.get::<_, String>(0))?;
            let mut subjects = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            reveal(c, &vault, &mut subjects)?;
            Ok(subjects)
        })
        .await
    }

    pub(crate) async fn instance_secret(&self) -> Result<String> {
        self.write(secret_in).await
    }

    pub(crate) async fn count_events(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?))
            .await
    }

    pub(crate) async fn event_summary(&self) -> Result<Vec<(i64, String, Option<String>, i64)>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT source_id, type, CASE WHEN type = 'track' THEN event END AS name, COUNT(*)
                 FROM events GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub(crate) async fn put_token(&self, digest: &KeyDigest, role: Role, name: &str) -> Result<()> {
        let (digest, name) = (digest.to_hex(), name.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO api_tokens (digest, role, name, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (digest) DO UPDATE SET role = excluded.role, name = excluded.name",
                params![digest, role.as_str(), name, to_micros(jiff::Timestamp::now())],
            )?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn token(&self, digest: &KeyDigest) -> Result<Option<(Role, String)>> {
        let digest = digest.to_hex();
        self.read(move |c| {
            let row: Option<(String, String)> = c
                .query_row("SELECT role, name FROM api_tokens WHERE digest = ?1", [digest], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(row.and_then(|(role, name)| Some((Role::parse(&role)?, name))))
        })
        .await
    }
}

/// Appends decisions to the ledger and moves the current state to each one that is the latest
/// by server time.
fn insert_decisions(tx: &Transaction<'_>, decisions: &[Decision], subjects: &AtRest) -> Result<Vec<i64>> {
    keep_values(tx, &subjects.values)?;
    let mut ledger = tx.prepare_cached(
        "INSERT INTO consent_ledger (subject, purpose, status, method, recorded_at, notice_version, notice_hash,
                                     source_id, touchpoint, ip_hash, ua_hash, proof)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut state = tx.prepare_cached(
        "INSERT INTO consent_state (subject, purpose, status, recorded_at, seq, method, source_id, touchpoint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (subject, purpose) DO UPDATE SET
             status = excluded.status, recorded_at = excluded.recorded_at, seq = excluded.seq,
             method = excluded.method, source_id = excluded.source_id, touchpoint = excluded.touchpoint
         WHERE excluded.recorded_at > consent_state.recorded_at
            OR (excluded.recorded_at = consent_state.recorded_at AND excluded.seq > consent_state.seq)",
    )?;
    let mut seqs = Vec::with_capacity(decisions.len());
    for (d, key) in decisions.iter().zip(&subjects.keys) {
        let at = to_micros(d.recorded_at);
        let (version, hash) = d
            .notice
            .as_ref()
            .map_or((None, None), |n| (Some(&n.version), Some(&n.hash)));
        ledger.execute(params![
            key,
            d.purpose,
            d.status.as_str(),
            d.method.as_str(),
            at,
            version,
            hash,
            d.source_id,
            d.touchpoint,
            d.ip_hash,
            d.ua_hash,
            d.proof.to_string(),
        ])?;
        let seq = tx.last_insert_rowid();
        state.execute(params![
            key,
            d.purpose,
            d.status.as_str(),
            at,
            seq,
            d.method.as_str(),
            d.source_id,
            d.touchpoint
        ])?;
        seqs.push(seq);
    }
    append_audit(
        tx,
        jiff::Timestamp::now(),
        decisions
            .iter()
            .zip(&seqs)
            .map(|(d, seq)| crate::consent_audit(d, *seq))
            .collect(),
    )?;
    Ok(seqs)
}

/// The instance's secret, made on first use.
fn secret_in(tx: &Transaction<'_>) -> Result<String> {
    let mut fresh = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut fresh);
    tx.execute(
        "INSERT INTO settings (key, value) VALUES ('instance_secret', ?1) ON CONFLICT (key) DO NOTHING",
        [hex::encode(fresh)],
    )?;
    Ok(
        tx.query_row("SELECT value FROM settings WHERE key = 'instance_secret'", [], |r| {
            r.get(0)
        })?,
    )
}

fn instance_secret_in(conn: &mut Connection) -> Result<String> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let secret = secret_in(&tx)?;
    tx.commit()?;
    Ok(secret)
}

/// The columns of an event, in the order [`event_row`] reads them.
pub(crate) const EVENT_COLUMNS: &str =
    "seq, source_id, message_id, type, user_id, anonymous_id, event, timestamp, received_at, body, purposes";

type EventParts = (
    (i64, i64, String, String),
    (Option<String>, Option<String>, Option<String>),
    (i64, i64, rusqlite::types::Value, String),
);

/// Reads the [`EVENT_COLUMNS`] of a row.
pub(crate) fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventParts> {
    Ok((
        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
        (r.get(4)?, r.get(5)?, r.get(6)?),
        (r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?),
    ))
}

/// Turns the columns of a row into an event whose body may still be sealed: a sealed body is a
/// BLOB, a plain one JSON text.
pub(crate) fn into_event(parts: EventParts) -> Result<Read> {
    let ((seq, source_id, message_id, kind), (user_id, anonymous_id, event), (ts, rec, body, purposes)) = parts;
    let body = match body {
        rusqlite::types::Value::Blob(bytes) => Body::Sealed(bytes),
        rusqlite::types::Value::Text(text) => {
            Body::Plain(serde_json::from_str(&text).map_err(|e| StoreError::Database(e.to_string()))?)
        }
        _ => return Err(StoreError::Database(format!("event {seq} has no body"))),
    };
    Ok(Read {
        event: StoredEvent {
            seq,
            source_id,
            message_id,
            kind: kind_from_str(&kind)?,
            user_id,
            anonymous_id,
            event,
            timestamp: from_micros(ts),
            received_at: from_micros(rec),
            body: serde_json::Value::Null,
            purposes: purposes_from_column(&purposes),
        },
        body,
    })
}

/// Runs `sql`, which selects the [`EVENT_COLUMNS`], and opens the bodies with the vault's keys.
pub(crate) fn query_events(
    c: &Connection,
    vault: &Vault,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredEvent>> {
    let mut stmt = c.prepare_cached(sql)?;
    let reads = stmt
        .query_map(params, event_row)?
        .map(|r| r.map_err(StoreError::from).and_then(into_event))
        .collect::<Result<Vec<_>>>()?;
    vault.open_blocking(reads)
}

/// Puts back the value of each identifier of `kept` that is kept as a hash
/// ([`Vault::at_rest`]); one whose value is gone (its person is being erased) stays a hash.
pub(crate) fn reveal(c: &Connection, vault: &Vault, kept: &mut [String]) -> Result<()> {
    let hashed: Vec<&String> = kept.iter().filter(|k| Vault::is_hashed(k)).collect();
    if hashed.is_empty() {
        return Ok(());
    }
    let wanted = serde_json::to_string(&hashed).map_err(|e| StoreError::Database(e.to_string()))?;
    let rows = c
        .prepare_cached(
            "SELECT identifier, value FROM identifier_values WHERE identifier IN (SELECT value FROM json_each(?1))",
        )?
        .query_map([wanted], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<(String, Vec<u8>)>>>()?;
    let values = vault.open_values_blocking(rows)?;
    for k in kept.iter_mut() {
        if let Some(v) = values.get(k.as_str()) {
            k.clone_from(v);
        }
    }
    Ok(())
}

/// The keys among `keys` whose values `identifier_values` does not hold yet: sealing a value
/// costs a key from the vault, and most identifiers of a message are known already.
pub(crate) fn without_values(c: &Connection, vault: &Vault, keys: &[String]) -> Result<Vec<String>> {
    let hashed = vault.by_hash(keys);
    if hashed.is_empty() {
        return Ok(Vec::new());
    }
    let wanted =
        serde_json::to_string(&hashed.keys().collect::<Vec<_>>()).map_err(|e| StoreError::Database(e.to_string()))?;
    let known = c
        .prepare_cached(
            "SELECT identifier FROM identifier_values WHERE identifier IN (SELECT value FROM json_each(?1))",
        )?
        .query_map([wanted], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<std::collections::HashSet<String>>>()?;
    Ok(hashed
        .into_iter()
        .filter(|(kept, _)| !known.contains(kept))
        .map(|(_, k)| k.clone())
        .collect())
}

/// Keeps the sealed values `rows` ([`Vault::seal_values`]) in `identifier_values`.
pub(crate) fn keep_values(tx: &Transaction<'_>, rows: &[(String, Vec<u8>)]) -> Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT INTO identifier_values (identifier, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?;
    for (kept, sealed) in rows {
        stmt.execute(params![kept, sealed])?;
    }
    Ok(())
}

/// Appends events to the audit chain inside the writer's transaction (the only writer, so the
/// chain's head cannot move under it).
pub(crate) fn append_audit(tx: &Transaction<'_>, at: jiff::Timestamp, events: Vec<AuditEvent>) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let head: Option<(i64, String)> = tx
        .query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let (mut seq, mut prev) = head.unwrap_or((0, audit::GENESIS.to_owned()));
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit_log (seq, at, actor, action, subject, details, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for event in events {
        let e = audit::chain(seq, &prev, at, event);
        insert.execute(params![
            e.seq,
            to_micros(e.at),
            e.actor,
            e.action,
            e.subject,
            e.details.to_string(),
            e.prev_hash,
            e.hash
        ])?;
        seq = e.seq;
        prev = e.hash;
    }
    Ok(())
}

fn add_counters(tx: &Transaction<'_>, source_id: i64, counters: &Counters) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO source_counters (source_id, counter, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (source_id, counter) DO UPDATE SET value = value + excluded.value",
    )?;
    for (name, value) in counters.iter().filter(|(_, v)| *v != 0) {
        stmt.execute(params![source_id, name, value])?;
    }
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn audit(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.write(move |tx| append_audit(tx, jiff::Timestamp::now(), events))
            .await
    }

    pub(crate) async fn audit_log(&self, after: i64, limit: usize) -> Result<Vec<audit::AuditEntry>> {
        self.read(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, at, actor, action, subject, details, prev_hash, hash FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, String>(5)?, r.get(6)?, r.get(7)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, at, actor, action, subject, details, prev_hash, hash) = row?;
                out.push(audit::AuditEntry {
                    seq,
                    at: from_micros(at),
                    actor,
                    action,
                    subject,
                    details: serde_json::from_str(&details).map_err(|e| StoreError::Database(e.to_string()))?,
                    prev_hash,
                    hash,
                });
            }
            Ok(out)
        })
        .await
    }
}
