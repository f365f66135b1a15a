-- Saved segments, their current members (the arbiter of entered/exited transitions: a node
-- records a transition only when its insert or delete changed a row, so several nodes
-- following the same change feed record each transition once), and member exports as tasks.
CREATE TABLE segments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);

CREATE TABLE segment_members (
    segment_id INTEGER NOT NULL,
    profile_id INTEGER NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (segment_id, profile_id)
) WITHOUT ROWID;
CREATE INDEX segment_members_profile ON segment_members(profile_id);

CREATE TABLE segment_transitions (
    seq INTEGER PRIMARY KEY,
    segment_id INTEGER NOT NULL,
    profile_id INTEGER NOT NULL,
    entered INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX segment_transitions_profile ON segment_transitions(profile_id);

CREATE TABLE segment_exports (
    id INTEGER PRIMARY KEY,
    segment_id INTEGER NOT NULL,
    format TEXT NOT NULL,
    status TEXT NOT NULL,             -- enqueued | processing | succeeded | failed
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    rows INTEGER,
    error TEXT,
    body TEXT
);
