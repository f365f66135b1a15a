-- Every change to a subject's current consent state, numbered in the order of commits: a
-- process that keeps consent states in memory (crates/store/src/sqlite_consent.rs) asks which
-- subjects changed since the number it last saw, whoever wrote the change.
CREATE TABLE consent_state_changes (
    gen INTEGER PRIMARY KEY,
    subject TEXT NOT NULL
);

CREATE TRIGGER consent_state_inserted AFTER INSERT ON consent_state
BEGIN
    INSERT INTO consent_state_changes (subject) VALUES (NEW.subject);
END;

CREATE TRIGGER consent_state_updated AFTER UPDATE ON consent_state
BEGIN
    INSERT INTO consent_state_changes (subject) VALUES (OLD.subject);
    INSERT INTO consent_state_changes (subject) SELECT NEW.subject WHERE NEW.subject <> OLD.subject;
END;

CREATE TRIGGER consent_state_deleted AFTER DELETE ON consent_state
BEGIN
    INSERT INTO consent_state_changes (subject) VALUES (OLD.subject);
END;

-- Only the latest changes are listed; a process further behind forgets all it kept. The newest
-- row is never deleted, so numbers are never given twice.
CREATE TRIGGER consent_state_changes_pruned AFTER INSERT ON consent_state_changes WHEN NEW.gen % 4096 = 0
BEGIN
    DELETE FROM consent_state_changes WHERE gen <= NEW.gen - 65536;
END;
