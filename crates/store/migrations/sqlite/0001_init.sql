-- Sources and their write keys (only the digest of a key is kept).
CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    key_digest TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- What collection did per source: accepted, duplicates, rejected and dropped by reason.
CREATE TABLE source_counters (
    source_id INTEGER NOT NULL REFERENCES sources(id),
    counter TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (source_id, counter)
) WITHOUT ROWID;

-- The event log: append-only, the truth everything else derives from.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    user_id TEXT,
    anonymous_id TEXT,
    event TEXT,
    timestamp INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
-- Idempotency: a messageId is stored once per source, for as long as the event is kept.
CREATE UNIQUE INDEX events_message ON events(source_id, message_id);
CREATE INDEX events_user ON events(user_id, seq) WHERE user_id IS NOT NULL;
CREATE INDEX events_anonymous ON events(anonymous_id, seq) WHERE anonymous_id IS NOT NULL;

-- Bearer tokens of the admin API, by digest.
CREATE TABLE api_tokens (
    digest TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
