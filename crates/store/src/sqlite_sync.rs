//! Durable commits of the SQLite store without the writer waiting for the disk.
//!
//! # Design
//!
//! With `synchronous = FULL` a commit returns once SQLite has written the transaction's pages to
//! the write-ahead log and synced it: the single writer thread spent about as long waiting for
//! that sync as it spent running the transaction (BENCHMARKS.md, stop 19), and every write of
//! the store waited behind it.
//!
//! So the writer's connection commits with `synchronous = NORMAL` — the pages are written to the
//! log, not synced — and hands the group's operations to this thread, which syncs the log and
//! only then answers them. Meanwhile the writer runs the next group. One sync covers every group
//! committed before it started, so under load the syncs batch by themselves. This is the
//! durability `FULL` gives, moved to another thread:
//!
//! - The log is written in order and each frame's checksum chains from the one before, so a
//!   crash keeps a prefix of the commits; a sync makes everything written before it durable, and
//!   a group is answered only after a sync that started once its commit returned.
//! - What `NORMAL` relaxes is only the sync at commit: SQLite still syncs the log before a
//!   checkpoint copies it and the new header when the log starts again from its beginning, so
//!   the database cannot be corrupted by a crash, whatever the timing.
//! - Syncing a file through any descriptor of it makes its data durable on Linux. The log is
//!   opened by path; when its file was replaced (its inode changed), it is opened again, and its
//!   directory synced so that a new file's name is durable too. A missing log means SQLite
//!   checkpointed everything and removed it: the database file is synced instead.
//!
//! A failed sync fails every operation waiting for it: what they wrote may be visible but is not
//! known to be durable, and a client that retries finds its `messageId`s already stored.

use crate::sqlite::WriteOp;
use crate::{Result, StoreError};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};

/// Operations committed together, waiting for their commit to be durable.
pub(crate) type Committed = Vec<Box<dyn WriteOp>>;

/// Starts the thread that makes commits of the database at `db` durable and answers their
/// operations; it ends once the writer dropped the returned sender.
pub(crate) fn start(db: &Path) -> Result<Sender<Committed>> {
    let (sender, committed) = channel();
    let mut log = Log::new(db);
    std::thread::Builder::new()
        .name("sqlite-sync".into())
        .spawn(move || run(&mut log, &committed))
        .map_err(|e| StoreError::Database(e.to_string()))?;
    Ok(sender)
}

fn run(log: &mut Log, committed: &Receiver<Committed>) {
    while let Ok(first) = committed.recv() {
        // Every group committed before the sync starts is made durable by it.
        let mut groups = vec![first];
        groups.extend(committed.try_iter());
        let synced = log.sync().map_err(|e| {
            tracing::error!(error = %e, "syncing the write-ahead log failed");
            format!("the write-ahead log could not be synced: {e}")
        });
        for op in groups.into_iter().flatten() {
            op.finish(synced.clone());
        }
    }
}

/// The write-ahead log file of a database, kept open to be synced.
struct Log {
    db: PathBuf,
    path: PathBuf,
    /// The open file and its inode.
    open: Option<(File, u64)>,
}

impl Log {
    fn new(db: &Path) -> Self {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        Self {
            db: db.to_owned(),
            path: path.into(),
            open: None,
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let inode = match std::fs::metadata(&self.path) {
            Ok(meta) => meta.ino(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.open = None;
                return File::open(&self.db)?.sync_all();
            }
            Err(e) => return Err(e),
        };
        if self.open.as_ref().is_none_or(|(_, ino)| *ino != inode) {
            let file = File::options().read(true).write(true).open(&self.path)?;
            let opened = file.metadata()?.ino();
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            self.open = Some((file, opened));
        }
        match &self.open {
            Some((file, _)) => file.sync_data(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_log_is_opened_again_and_a_missing_one_syncs_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        std::fs::write(&db, b"db").unwrap();
        let mut log = Log::new(&db);
        assert!(log.sync().is_ok(), "no log yet: the database is synced");
        assert!(log.open.is_none());

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
