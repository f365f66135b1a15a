-- Which of the person's traits each event carries (`,email,phone,`; NULL when none), written at
-- collection (confiance_core::collect::carried_traits), so that whose data a breach touched and
-- which sources supply a trait are answered without reading bodies.
ALTER TABLE events ADD COLUMN traits TEXT;
UPDATE events SET traits = (
    SELECT ',' || string_agg(name, ',' ORDER BY name) || ',' FROM (
        SELECT key AS name FROM jsonb_each(CASE WHEN events.type = 'identify'
            AND jsonb_typeof(events.body->'traits') = 'object' THEN events.body->'traits' END)
        WHERE jsonb_typeof(value) <> 'null'
        UNION
        SELECT key FROM jsonb_each(CASE WHEN jsonb_typeof(events.body->'context'->'traits') = 'object'
            THEN events.body->'context'->'traits' END)
        WHERE jsonb_typeof(value) <> 'null') AS carried);

-- A breach reads the events of some sources in a window that carry some traits: this index
-- holds only the events that carry traits, and everything the computation reads of them.
DROP INDEX events_source_received;
CREATE INDEX events_traits ON events(source_id, received_at, traits, user_id, anonymous_id)
    WHERE traits IS NOT NULL;

-- A body sealed under its subject's key (crates/store/src/vault.rs); `body` is then JSON null.
ALTER TABLE events ADD COLUMN sealed BYTEA;
