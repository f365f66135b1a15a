-- Governance: a dated version of the catalog (and of the records of processing it produces)
-- each time it changes, and every consent notice ever shown with its publication dates.
CREATE TABLE catalog_versions (
    version BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    taken_at BIGINT NOT NULL,
    catalog TEXT NOT NULL,
    register TEXT NOT NULL
);
CREATE INDEX catalog_versions_taken ON catalog_versions(taken_at);

CREATE TABLE notices (
    id BIGSERIAL PRIMARY KEY,
    version TEXT NOT NULL,
    hash TEXT NOT NULL,
    text TEXT NOT NULL,
    published_from BIGINT NOT NULL,
    published_until BIGINT
);
CREATE UNIQUE INDEX notices_hash ON notices(hash);
