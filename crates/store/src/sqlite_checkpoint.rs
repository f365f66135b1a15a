//! WAL checkpoints of the SQLite store, on a thread of their own.
//!
//! # Design
//!
//! In WAL mode a commit appends pages to the write-ahead log; a *checkpoint* copies them back
//! into the database file and syncs it. By default SQLite checkpoints inside the commit that
//! takes the log past 1,000 pages, on the committing connection: the store's single writer,
//! which every write waits for. Under ingestion that was a tenth of the writer's time.
//!
//! So the writer's connection has automatic checkpoints off, and this thread, with its own
//! connection, follows the writer's commits:
//!
//! - at most every [`INTERVAL`] while commits arrive, a `PASSIVE` checkpoint: it copies what the
//!   log holds without taking any lock the writer or the readers wait for, and a page that
//!   several commits rewrote in the meantime is copied once;
//! - once the writer has been idle for [`IDLE`], a `TRUNCATE` checkpoint, which empties the log
//!   file;
//! - under sustained load a passive checkpoint never catches up with the end of the log, and
//!   SQLite only starts the log again from its beginning once a checkpoint did: the file grew
//!   past 100 MB in a few seconds of the ingestion benchmark. So when the log holds more than
//!   [`MAX_FRAMES`] pages, a `RESTART` checkpoint makes it start again. It needs the writer
//!   between two transactions, and the writer is seldom there for long under load: the
//!   checkpoint takes the writer's *gate*, a mutex the writer holds while a group transaction
//!   runs, so it waits for the end of the current group and holds the next one back while it
//!   copies what the passive checkpoint just left (little) and waits for the readers of older
//!   snapshots. When readers keep it from finishing, the next passive checkpoint tries again, so
//!   the file is bounded by [`MAX_FRAMES`] pages plus what the writer commits until a restart
//!   succeeds: in the ingestion benchmark it stayed between 25 and 49 MB.
//!
//! The restarting and truncating checkpoints wait at most [`BUSY_TIMEOUT`] for the readers, so
//! a long read never holds the writer back for long: they are tried again later. The erasure
//! truncates the log itself, on a reader's connection; SQLite lets one checkpoint run at a
//! time, and the erasure retries when this one holds the lock.

use crate::{Result, StoreError};
use rusqlite::Connection;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The least time between two passive checkpoints under load.
const INTERVAL: Duration = Duration::from_millis(50);
/// How long the writer stays idle before the log file is truncated.
const IDLE: Duration = Duration::from_millis(500);
/// Pages in the log beyond which it is made to start again from its beginning (4 KB pages:
/// 16 MB). With four times as many the ingestion benchmark ran no faster, and the file reached
/// 85 MB instead of 29.
const MAX_FRAMES: i64 = 4_096;
/// How long a restarting or truncating checkpoint waits for the readers.
const BUSY_TIMEOUT: Duration = Duration::from_millis(10);

/// Starts the checkpointer on `conn`; the writer signals each commit on the returned sender,
/// and the checkpointer stops once the writer dropped it. The writer holds `gate` while a
/// transaction runs.
pub(crate) fn start(conn: Connection, gate: Arc<Mutex<()>>) -> Result<SyncSender<()>> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let (committed, commits) = sync_channel(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || run(&conn, &commits, &gate))
        .map_err(|e| StoreError::Database(e.to_string()))?;
    Ok(committed)
}

/// What a checkpoint reports: whether it could not finish, and the pages in the log.
struct Report {
    busy: bool,
    log: i64,
}

fn checkpoint(conn: &Connection, mode: &str) -> Option<Report> {
    let report = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Report {
            busy: r.get::<_, i64>(0)? != 0,
            log: r.get(1)?,
        })
    });
    match report {
        Ok(report) => Some(report),
        Err(e) => {
            tracing::warn!(mode, error = %e, "WAL checkpoint failed");
            None
        }
    }
}

/// Runs a checkpoint that needs the writer between two transactions.
fn checkpoint_gated(conn: &Connection, gate: &Mutex<()>, mode: &str) -> Option<Report> {
    let _writer_held = gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    checkpoint(conn, mode)
}

fn run(conn: &Connection, commits: &Receiver<()>, gate: &Mutex<()>) {
    // Whether the log may hold pages since the last truncation.
    let mut dirty = false;
    let mut last = Instant::now();
    loop {
        let wake = if dirty {
            commits.recv_timeout(IDLE)
        } else {
            commits.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match wake {
            Ok(()) => {
                dirty = true;
                // Commits that arrive meanwhile are in the same checkpoint.
                if let Some(wait) = INTERVAL.checked_sub(last.elapsed()) {
                    std::thread::sleep(wait);
                }
                let report = checkpoint(conn, "PASSIVE");
                if report.is_some_and(|r| r.log > MAX_FRAMES) {
                    checkpoint_gated(conn, gate, "RESTART");
                }
                last = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) => {
                dirty = checkpoint_gated(conn, gate, "TRUNCATE").is_none_or(|r| r.busy);
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
