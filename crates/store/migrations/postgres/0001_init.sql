-- Sources and their write keys (only the digest of a key is kept).
CREATE TABLE sources (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    key_digest TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- What collection did per source: accepted, duplicates, rejected and dropped by reason.
CREATE TABLE source_counters (
    source_id BIGINT NOT NULL REFERENCES sources(id),
    counter TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (source_id, counter)
);

-- Idempotency: a messageId is stored once per source. Kept apart from the partitioned event
-- log because a unique constraint on a partitioned table must include the partition key.
-- Every event is written together with its row here, so the reference to its source is checked
-- here once rather than on the event log.
CREATE TABLE message_ids (
    source_id BIGINT NOT NULL REFERENCES sources(id),
    message_id TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source_id, message_id)
);

-- The event log: append-only, partitioned by month of reception so that old months drop
-- cheaply at retention time. `seq` is the change sequence other nodes follow. The monthly
-- partitions (`events_YYYY_MM`) are created by the store ahead of time, not by migrations; the
-- DEFAULT partition catches whatever falls outside them.
CREATE TABLE events (
    seq BIGSERIAL NOT NULL,
    source_id BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    type TEXT NOT NULL,
    user_id TEXT,
    anonymous_id TEXT,
    event TEXT,
    timestamp TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    body JSONB NOT NULL
) PARTITION BY RANGE (received_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE INDEX events_seq ON events(seq);
CREATE INDEX events_user ON events(user_id, seq) WHERE user_id IS NOT NULL;
CREATE INDEX events_anonymous ON events(anonymous_id, seq) WHERE anonymous_id IS NOT NULL;

-- Bearer tokens of the admin API, by digest.
CREATE TABLE api_tokens (
    digest TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
