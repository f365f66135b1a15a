-- The log's folds are read and sorted off the writer, then inserted slice by slice
-- (crates/store/src/sqlite_log.rs): a slice read before events of its fold were deleted must
-- not be inserted after, so every deletion of an event not folded yet is counted.
ALTER TABLE event_log ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;

DROP TRIGGER events_deleted;
CREATE TRIGGER events_deleted AFTER DELETE ON events BEGIN
    DELETE FROM event_subjects WHERE subject = 'user_id:' || OLD.user_id AND seq = OLD.seq;
    DELETE FROM event_subjects WHERE subject = 'anonymous_id:' || OLD.anonymous_id AND seq = OLD.seq;
    DELETE FROM event_ids WHERE source_id = OLD.source_id AND message_id = OLD.message_id AND seq = OLD.seq;
    UPDATE event_log SET deleted = deleted + 1 WHERE OLD.seq > folded;
END;
