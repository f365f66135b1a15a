-- The event log's lookups leave the append (crates/store/src/sqlite_log.rs): an index on a
-- random key (a messageId, a user or anonymous id) puts nearly every event on a page of its
-- own, which each commit writes whole. Appends now only write in `seq` order; both lookups are
-- indexed in bulk behind them.

-- The highest seq ever given (seqs are never given twice, even after deletions) and how far
-- `event_subjects` and `event_ids` cover the log.
CREATE TABLE event_log (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    high INTEGER NOT NULL,
    folded INTEGER NOT NULL
);
-- Seqs already deleted from the end of the log may have been passed by a follower's cursor.
INSERT INTO event_log (id, high, folded)
SELECT 1,
       max(COALESCE((SELECT MAX(seq) FROM events), 0),
           COALESCE((SELECT MAX(seq) FROM processor_cursors), 0),
           COALESCE((SELECT MAX(cursor) FROM campaigns), 0)),
       COALESCE((SELECT MAX(seq) FROM events), 0);

-- The events of each user and anonymous id, under `user_id:…` and `anonymous_id:…` keys (the
-- form of the identities), filled in bulk behind the appends; the events after `folded` are
-- found by a scan.
CREATE TABLE event_subjects (
    subject TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (subject, seq)
) WITHOUT ROWID;
INSERT INTO event_subjects (subject, seq)
SELECT 'user_id:' || user_id, seq FROM events WHERE user_id IS NOT NULL
UNION ALL
SELECT 'anonymous_id:' || anonymous_id, seq FROM events WHERE anonymous_id IS NOT NULL
ORDER BY 1, 2;

-- Which messageId each source stored, for idempotency, filled in bulk like `event_subjects`;
-- the writer keeps those of the events after `folded` in memory.
CREATE TABLE event_ids (
    source_id INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (source_id, message_id)
) WITHOUT ROWID;
INSERT INTO event_ids (source_id, message_id, seq)
SELECT source_id, message_id, seq FROM events ORDER BY 1, 2;

DROP INDEX events_message;
DROP INDEX events_user;
DROP INDEX events_anonymous;

-- Whatever deletes an event (erasure, retention) deletes what points to it.
CREATE TRIGGER events_deleted AFTER DELETE ON events BEGIN
    DELETE FROM event_subjects WHERE subject = 'user_id:' || OLD.user_id AND seq = OLD.seq;
    DELETE FROM event_subjects WHERE subject = 'anonymous_id:' || OLD.anonymous_id AND seq = OLD.seq;
    DELETE FROM event_ids WHERE source_id = OLD.source_id AND message_id = OLD.message_id AND seq = OLD.seq;
END;
