//! Durable commits of the SQLite store without the writer waiting for the disk.
//!
//! # Design
//!
//! With `synchronous = FULL` a commit returns once SQLite has written the transaction's pages to
//! the write-ahead log and synced it: under ingestion the single writer thread spent about as
//! long waiting for that sync as running the transaction (BENCHMARKS.md, stop 19), and every
//! write of the store waited behind it.
//!
//! So the writer's connection commits with `synchronous = NORMAL` — the pages are written to the
//! log, not synced — and hands the group's operations to this thread, which syncs the log and
//! only then answers them. Meanwhile the writer runs the next group. One sync covers every group
//! committed before it started, so under load the syncs batch by themselves. No caller is
//! answered before its commit is durable:
//!
//! - The log is written in order and each frame's checksum chains from the one before, so a
//!   crash keeps a prefix of the commits; a sync makes everything written before it durable, and
//!   a group is answered only after a sync that started once its commit returned.
//! - What `NORMAL` relaxes is only the sync at commit: SQLite still syncs the log before a
//!   checkpoint copies it and the new header when the log starts again from its beginning, so
//!   the database cannot be corrupted by a crash, whatever the timing.
//! - Syncing a file through any descriptor of it makes its data durable (Confiance runs on
//!   Linux). The log's name is the one SQLite gives it beside the database file it opened;
//!   when that file was replaced (its inode changed) it is opened again, and its directory
//!   synced so that a new file's name is durable too. While the store is open its connections
//!   keep the log in place, so a missing log is an error.
//!
//! What `FULL` gave and this does not: other connections see a commit a sync earlier — a read
//! may show a write that a power cut would then undo, though no caller was told it was done.
//!
//! **A failed sync stops the store's writes.** After a failed `fsync` the kernel may drop the
//! pages it could not write and report the next sync successful; the log's chained checksums
//! would then cut off, at the next start, every later commit. So the group waiting for that sync
//! fails, and so does every write after it, until the process restarts and SQLite recovers the
//! log from the disk.

use crate::sqlite::WriteOp;
use crate::{Result, StoreError};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

/// Operations committed together, waiting for their commit to be durable.
type Committed = Vec<Box<dyn WriteOp>>;

/// Why writes are refused once a sync failed.
const STOPPED: &str = "the store accepts no writes since its write-ahead log failed to sync: restart it";

/// The writer's side of the sync thread.
pub(crate) struct Syncer {
    committed: Sender<Committed>,
    failed: Arc<AtomicBool>,
}

impl Syncer {
    /// Starts the thread that makes commits of the database at `db` durable and answers their
    /// operations; it ends once the writer dropped the returned handle.
    pub(crate) fn start(db: &Path) -> Result<Self> {
        let (committed, waiting) = channel();
        let failed = Arc::new(AtomicBool::new(false));
        let mut log = Log::new(db);
        let stop = failed.clone();
        std::thread::Builder::new()
            .name("sqlite-sync".into())
            .spawn(move || run(&mut log, &waiting, &stop))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(Self { committed, failed })
    }

    /// Whether writes are refused: a sync failed (or the sync thread is gone).
    pub(crate) fn stopped(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Answers `ops` once their commit is durable.
    pub(crate) fn answer_when_durable(&self, ops: Committed) {
        if let Err(unsynced) = self.committed.send(ops) {
            self.failed.store(true, Ordering::SeqCst);
            refuse(unsynced.0);
        }
    }
}

/// Fails `ops` because the store stopped its writes.
pub(crate) fn refuse(ops: impl IntoIterator<Item = Box<dyn WriteOp>>) {
    for op in ops {
        op.finish(Err(STOPPED.into()));
    }
}

fn run(log: &mut Log, waiting: &Receiver<Committed>, failed: &AtomicBool) {
    while let Ok(first) = waiting.recv() {
        // Every group committed before the sync starts is made durable by it.
        let mut groups = vec![first];
        groups.extend(waiting.try_iter());
        if failed.load(Ordering::SeqCst) {
            refuse(groups.into_iter().flatten());
            continue;
        }
        let synced = log.sync().map_err(|e| {
            failed.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, "syncing the write-ahead log failed: the store accepts no more writes");
            format!("the write-ahead log could not be synced ({e}); {STOPPED}")
        });
        for op in groups.into_iter().flatten() {
            op.finish(synced.clone());
        }
    }
}

/// The write-ahead log file of a database, kept open to be synced.
struct Log {
    path: PathBuf,
    /// The open file and its inode.
    open: Option<(File, u64)>,
}

impl Log {
    /// The log of the database file `db`, as SQLite names it.
    fn new(db: &Path) -> Self {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        Self {
            path: path.into(),
            open: None,
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let inode = std::fs::metadata(&self.path)?.ino();
        let file = match &self.open {
            Some((file, ino)) if *ino == inode => file,
            _ => {
                let file = File::options().read(true).write(true).open(&self.path)?;
                let opened = file.metadata()?.ino();
                if let Some(dir) = self.path.parent() {
                    File::open(dir)?.sync_all()?;
                }
                &self.open.insert((file, opened)).0
            }
        };
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Transaction;

    /// An operation that reports how it was answered.
    struct Probe(Sender<std::result::Result<(), String>>);

    impl WriteOp for Probe {
        fn rows(&self) -> usize {
            1
        }

        fn apply(&mut self, _: &Transaction<'_>) {}

        fn finish(self: Box<Self>, commit: std::result::Result<(), String>) {
            let _ = self.0.send(commit);
        }
    }

    fn answer(syncer: &Syncer) -> std::result::Result<(), String> {
        let (tx, rx) = channel();
        syncer.answer_when_durable(vec![Box::new(Probe(tx))]);
        rx.recv().unwrap()
    }

    #[test]
    fn a_failed_sync_fails_its_group_and_every_write_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let wal = dir.path().join("store.db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let syncer = Syncer::start(&db).unwrap();
        assert_eq!(answer(&syncer), Ok(()));
        assert!(!syncer.stopped());

        std::fs::remove_file(&wal).unwrap();
        let failed = answer(&syncer).unwrap_err();
        assert!(failed.contains("could not be synced"), "{failed}");
        assert!(syncer.stopped());

        // The log back in place changes nothing until a restart.
        std::fs::write(&wal, b"frames").unwrap();
        assert_eq!(answer(&syncer), Err(STOPPED.to_owned()));
    }

    #[test]
    fn a_replaced_log_is_opened_again_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let mut log = Log::new(&db);
        assert!(log.sync().is_err(), "no log: nothing can be made durable");

        std::fs::write(&log.path, b"frames").unwrap();
        log.sync().unwrap();
        let first = log.open.as_ref().map(|(_, ino)| *ino);
        assert!(first.is_some());

        std::fs::remove_file(&log.path).unwrap();
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        std::fs::write(&log.path, b"new frames").unwrap();
        log.sync().unwrap();
        let second = log.open.as_ref().map(|(_, ino)| *ino);
        assert_eq!(second, std::fs::metadata(&log.path).ok().map(|m| m.ino()));
    }
}
