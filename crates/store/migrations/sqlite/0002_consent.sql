-- The purposes each event was collected for, with a legal basis at collection time, as
-- `,a,b,` so that a purpose-bound read can filter with LIKE '%,a,%'. `,` alone: an event that
-- only links identifiers.
ALTER TABLE events ADD COLUMN purposes TEXT NOT NULL DEFAULT ',';

-- The consent ledger: append-only, one row per decision, with its proof.
CREATE TABLE consent_ledger (
    seq INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,          -- kind:value, e.g. email:ana@example.org
    purpose TEXT NOT NULL,
    status TEXT NOT NULL,           -- granted | denied | withdrawn
    method TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,   -- server time, microseconds
    notice_version TEXT,
    notice_hash TEXT,
    source_id INTEGER,
    touchpoint TEXT,
    ip_hash TEXT,
    ua_hash TEXT,
    proof TEXT NOT NULL
);
CREATE INDEX consent_ledger_subject ON consent_ledger(subject, seq);

-- The current state, derived from the ledger (the latest decision by server time, then seq)
-- and rebuildable from it.
CREATE TABLE consent_state (
    subject TEXT NOT NULL,
    purpose TEXT NOT NULL,
    status TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    method TEXT NOT NULL,
    source_id INTEGER,
    touchpoint TEXT,
    PRIMARY KEY (subject, purpose)
) WITHOUT ROWID;
CREATE INDEX consent_state_purpose ON consent_state(purpose, status, subject);

-- Instance-wide settings, such as the secret that keys hashes and signs links.
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
