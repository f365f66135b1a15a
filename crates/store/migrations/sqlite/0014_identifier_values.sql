-- Identifiers other than user and anonymous ids are kept in the rows (identities, links,
-- merges, left_out, the consent ledger and state, requests) as `kind:`, `#` and the hex of a
-- keyed hash (crates/store/src/vault.rs, `Vault::at_rest`); the value of each is here, sealed under
-- the identifier's own key, for the pages that show it. Shredding that key on erasure leaves
-- every older copy of the rows with the hash alone.
CREATE TABLE identifier_values (
    identifier TEXT PRIMARY KEY,      -- kind:hash
    value BLOB NOT NULL               -- kind:value, sealed
) WITHOUT ROWID;

-- Rows written before hold identifiers in plaintext: the store rewrites them once, when it
-- opens under its master key (crates/store/src/identifiers.rs), and marks the work done.
INSERT INTO settings (key, value) VALUES ('identifiers_at_rest', 'pending');
