-- The breach register (GDPR Art. 33(5)): every breach, notified or not, kept whole as a JSON
-- document (confiance_core::privacy::breach::Breach).
CREATE TABLE breaches (
    id INTEGER PRIMARY KEY,
    aware_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);

-- Each person told of a breach (Art. 34), per channel: pseudonymous (a profile id), never the
-- address itself.
CREATE TABLE breach_notices (
    breach_id INTEGER NOT NULL REFERENCES breaches(id),
    profile_id INTEGER NOT NULL,
    channel TEXT NOT NULL,           -- email | sms
    status TEXT NOT NULL,            -- sent | failed
    detail TEXT,
    at INTEGER NOT NULL,
    PRIMARY KEY (breach_id, profile_id, channel)
) WITHOUT ROWID;

-- Whose data a breach touched is counted by source and reception window.
CREATE INDEX events_source_received ON events(source_id, received_at);
