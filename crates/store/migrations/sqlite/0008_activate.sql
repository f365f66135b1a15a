-- Campaigns, the moments they fire for (one row per campaign, person and occurrence key: the
-- unique key is what makes a birthday fire once a year across restarts and nodes), what was
-- decided for each message (sent, skipped, delayed, failed, with the reason), and vouchers.
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    cursor INTEGER NOT NULL DEFAULT 0        -- how far its trigger has been scanned
);

CREATE TABLE occurrences (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL,
    profile_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER NOT NULL,
    status TEXT NOT NULL,                    -- pending | done
    claimed_until INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (campaign_id, profile_id, key)
);
CREATE INDEX occurrences_due ON occurrences(status, due_at);
CREATE INDEX occurrences_profile ON occurrences(profile_id);

CREATE TABLE sends (
    id INTEGER PRIMARY KEY,
    occurrence_id INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    profile_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    channel TEXT NOT NULL,
    outcome TEXT NOT NULL,                   -- sent | skipped | delayed | failed
    reason TEXT,
    detail TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX sends_profile ON sends(profile_id, channel, at);
CREATE INDEX sends_campaign ON sends(campaign_id, outcome);

CREATE TABLE vouchers (
    code TEXT PRIMARY KEY,
    campaign_id INTEGER NOT NULL,
    profile_id INTEGER NOT NULL,
    occurrence_id INTEGER NOT NULL UNIQUE,
    value REAL NOT NULL,
    expires_at INTEGER NOT NULL,
    redeemed_at INTEGER,
    order_id TEXT
);
CREATE INDEX vouchers_profile ON vouchers(profile_id);
