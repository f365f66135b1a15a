-- See the SQLite migration of the same number.
CREATE TABLE campaigns (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    cursor BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE occurrences (
    id BIGSERIAL PRIMARY KEY,
    campaign_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    due_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    claimed_until BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (campaign_id, profile_id, key)
);
CREATE INDEX occurrences_due ON occurrences(status, due_at);
CREATE INDEX occurrences_profile ON occurrences(profile_id);

CREATE TABLE sends (
    id BIGSERIAL PRIMARY KEY,
    occurrence_id BIGINT NOT NULL,
    campaign_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    step INTEGER NOT NULL,
    channel TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX sends_profile ON sends(profile_id, channel, at);
CREATE INDEX sends_campaign ON sends(campaign_id, outcome);

CREATE TABLE vouchers (
    code TEXT PRIMARY KEY,
    campaign_id BIGINT NOT NULL,
    profile_id BIGINT NOT NULL,
    occurrence_id BIGINT NOT NULL UNIQUE,
    value DOUBLE PRECISION NOT NULL,
    expires_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    order_id TEXT
);
CREATE INDEX vouchers_profile ON vouchers(profile_id);
