-- See the SQLite migration of the same number.
CREATE TABLE segments (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);

CREATE TABLE segment_members (
    segment_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (segment_id, profile_id)
);
CREATE INDEX segment_members_profile ON segment_members(profile_id);

CREATE TABLE segment_transitions (
    seq BIGSERIAL PRIMARY KEY,
    segment_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    entered BOOLEAN NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX segment_transitions_profile ON segment_transitions(profile_id);

CREATE TABLE segment_exports (
    id BIGSERIAL PRIMARY KEY,
    segment_id BIGINT NOT NULL,
    format TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    rows BIGINT,
    error TEXT,
    body TEXT
);
