-- Unify. Instants here are microseconds since the Unix epoch (BIGINT), as in SQLite, so that
-- one body of resolution code reads and writes both stores alike.

-- Profiles: one per person. A merge keeps the older id; the other points to it.
CREATE TABLE profiles (
    id BIGSERIAL PRIMARY KEY,
    created_seq BIGINT NOT NULL,     -- the log position of the message that founded it
    created_at BIGINT NOT NULL,
    merged_into BIGINT
);

-- Identifiers (nodes of the identity graph) and the profile each belongs to now.
CREATE TABLE identities (
    identifier TEXT PRIMARY KEY,      -- kind:value
    kind TEXT NOT NULL,
    profile_id BIGINT NOT NULL,
    origin_profile BIGINT NOT NULL,  -- the profile it first joined, to restore after a split
    first_seq BIGINT NOT NULL
);
CREATE INDEX identities_profile ON identities(profile_id);

-- Applied links between identifiers, with their provenance: profiles are their components.
CREATE TABLE identity_links (
    id BIGSERIAL PRIMARY KEY,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    seq BIGINT NOT NULL,
    source_id BIGINT,
    message_id TEXT,
    at BIGINT NOT NULL,
    origin TEXT NOT NULL,             -- message | review
    active BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX identity_links_a ON identity_links(a);
CREATE INDEX identity_links_b ON identity_links(b);
CREATE INDEX identity_links_message ON identity_links(source_id, message_id);

-- Every merge with its evidence, and when it was undone.
CREATE TABLE merges (
    id BIGSERIAL PRIMARY KEY,
    survivor BIGINT NOT NULL,
    absorbed BIGINT NOT NULL,
    via TEXT NOT NULL,                -- the identifier that linked them
    seq BIGINT NOT NULL,
    source_id BIGINT,
    message_id TEXT,
    at BIGINT NOT NULL,
    origin TEXT NOT NULL,
    evidence TEXT NOT NULL,
    undone_at BIGINT
);
CREATE INDEX merges_survivor ON merges(survivor);
CREATE INDEX merges_absorbed ON merges(absorbed);

-- Identifiers of a message that were not linked, and why (explanations).
CREATE TABLE left_out (
    seq BIGINT NOT NULL,
    identifier TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX left_out_identifier ON left_out(identifier);

-- Messages whose links a reviewer undid: a rebuild from the log does not apply them again.
CREATE TABLE rejected_links (
    source_id BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (source_id, message_id)
);

-- How far each processor has followed the event log.
CREATE TABLE processor_cursors (
    name TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO processor_cursors (name, seq) VALUES ('unify', 0);

-- Pairs of profiles probabilistic matching found likely to be one person, for review.
CREATE TABLE match_reviews (
    id BIGSERIAL PRIMARY KEY,
    a BIGINT NOT NULL,
    b BIGINT NOT NULL,
    probability DOUBLE PRECISION NOT NULL,
    evidence TEXT NOT NULL,
    status TEXT NOT NULL,             -- pending | accepted | rejected
    created_at BIGINT NOT NULL,
    decided_at BIGINT
);
CREATE INDEX match_reviews_status ON match_reviews(status);
