-- Which of the person's traits each event carries (`,email,phone,`; NULL when none), written at
-- collection (confiance_core::collect::carried_traits), so that whose data a breach touched and
-- which sources supply a trait are answered without reading bodies.
ALTER TABLE events ADD COLUMN traits TEXT;
UPDATE events SET traits = (
    SELECT ',' || group_concat(name, ',') || ',' FROM (
        SELECT key AS name FROM json_each(events.body, '$.traits')
        WHERE events.type = 'identify' AND type <> 'null'
        UNION
        SELECT key FROM json_each(events.body, '$.context.traits') WHERE type <> 'null'
        ORDER BY 1));

-- A breach reads the events of some sources in a window that carry some traits: this index
-- holds only the events that carry traits, and everything the computation reads of them.
DROP INDEX events_source_received;
CREATE INDEX events_traits ON events(source_id, received_at, traits, user_id, anonymous_id)
    WHERE traits IS NOT NULL;

-- Bodies written from now on are sealed under their subject's key (crates/store/src/vault.rs):
-- `body` then holds a BLOB instead of JSON text. SQLite keeps any value in any column, so the
-- schema does not change for it.
