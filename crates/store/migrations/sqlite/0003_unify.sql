-- Profiles: one per person. A merge keeps the older id; the other points to it.
CREATE TABLE profiles (
    id INTEGER PRIMARY KEY,
    created_seq INTEGER NOT NULL,     -- the log position of the message that founded it
    created_at INTEGER NOT NULL,
    merged_into INTEGER
);

-- Identifiers (nodes of the identity graph) and the profile each belongs to now.
CREATE TABLE identities (
    identifier TEXT PRIMARY KEY,      -- kind:value
    kind TEXT NOT NULL,
    profile_id INTEGER NOT NULL,
    origin_profile INTEGER NOT NULL,  -- the profile it first joined, to restore after a split
    first_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX identities_profile ON identities(profile_id);

-- Applied links between identifiers, with their provenance: profiles are their components.
CREATE TABLE identity_links (
    id INTEGER PRIMARY KEY,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    seq INTEGER NOT NULL,
    source_id INTEGER,
    message_id TEXT,
    at INTEGER NOT NULL,
    origin TEXT NOT NULL,             -- message | review
    active INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX identity_links_a ON identity_links(a);
CREATE INDEX identity_links_b ON identity_links(b);
CREATE INDEX identity_links_message ON identity_links(source_id, message_id);

-- Every merge with its evidence, and when it was undone.
CREATE TABLE merges (
    id INTEGER PRIMARY KEY,
    survivor INTEGER NOT NULL,
    absorbed INTEGER NOT NULL,
    via TEXT NOT NULL,                -- the identifier that linked them
    seq INTEGER NOT NULL,
    source_id INTEGER,
    message_id TEXT,
    at INTEGER NOT NULL,
    origin TEXT NOT NULL,
    evidence TEXT NOT NULL,
    undone_at INTEGER
);
CREATE INDEX merges_survivor ON merges(survivor);
CREATE INDEX merges_absorbed ON merges(absorbed);

-- Identifiers of a message that were not linked, and why (explanations).
CREATE TABLE left_out (
    seq INTEGER NOT NULL,
    identifier TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX left_out_identifier ON left_out(identifier);

-- Messages whose links a reviewer undid: a rebuild from the log does not apply them again.
CREATE TABLE rejected_links (
    source_id INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (source_id, message_id)
) WITHOUT ROWID;

-- How far each processor has followed the event log.
CREATE TABLE processor_cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
INSERT INTO processor_cursors (name, seq) VALUES ('unify', 0);

-- Pairs of profiles probabilistic matching found likely to be one person, for review.
CREATE TABLE match_reviews (
    id INTEGER PRIMARY KEY,
    a INTEGER NOT NULL,
    b INTEGER NOT NULL,
    probability REAL NOT NULL,
    evidence TEXT NOT NULL,
    status TEXT NOT NULL,             -- pending | accepted | rejected
    created_at INTEGER NOT NULL,
    decided_at INTEGER
);
CREATE INDEX match_reviews_status ON match_reviews(status);
