-- The purposes each event was collected for, with a legal basis at collection time, as
-- `,a,b,` so that a purpose-bound read can filter with LIKE '%,a,%'. `,` alone: an event that
-- only links identifiers.
ALTER TABLE events ADD COLUMN purposes TEXT NOT NULL DEFAULT ',';

-- The consent ledger: append-only, one row per decision, with its proof.
CREATE TABLE consent_ledger (
    seq BIGSERIAL PRIMARY KEY,
    subject TEXT NOT NULL,
    purpose TEXT NOT NULL,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    notice_version TEXT,
    notice_hash TEXT,
    source_id BIGINT,
    touchpoint TEXT,
    ip_hash TEXT,
    ua_hash TEXT,
    proof JSONB NOT NULL
);
CREATE INDEX consent_ledger_subject ON consent_ledger(subject, seq);

-- The current state, derived from the ledger (the latest decision by server time, then seq)
-- and rebuildable from it.
CREATE TABLE consent_state (
    subject TEXT NOT NULL,
    purpose TEXT NOT NULL,
    status TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    seq BIGINT NOT NULL,
    method TEXT NOT NULL,
    source_id BIGINT,
    touchpoint TEXT,
    PRIMARY KEY (subject, purpose)
);
CREATE INDEX consent_state_purpose ON consent_state(purpose, status, subject COLLATE "C");

-- Instance-wide settings, such as the secret that keys hashes and signs links.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
