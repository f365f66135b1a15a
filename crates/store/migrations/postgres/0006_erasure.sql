-- Erased subjects, pseudonymised (a keyed hash of each identifier): the suppression list that
-- keeps them from being added back to marketing from an old list. No personal data.
CREATE TABLE suppression (
    hash TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
