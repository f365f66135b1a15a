-- The tamper-evident audit log: a hash chain (see confiance_core::privacy::audit). Entries
-- hold no personal data. `details` is TEXT, not JSONB, so that it reads back byte for byte as
-- it was hashed.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
