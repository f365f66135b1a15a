-- Telling the people of a breach (Art. 34) is a task worked in the background: the request
-- records it, a worker claims it under a lease, plans one `pending` notice per person and
-- channel, then marks each `sending` before it goes and `sent` or `failed` after, so a restart
-- resumes where it stopped and nobody is told twice.
CREATE TABLE breach_jobs (
    id INTEGER PRIMARY KEY,
    breach_id INTEGER NOT NULL REFERENCES breaches(id),
    status TEXT NOT NULL,            -- enqueued | processing | succeeded | failed
    default_language TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    lease_until INTEGER,
    planned_at INTEGER,
    people INTEGER,
    already_told INTEGER,
    finished_at INTEGER,
    error TEXT
);
-- One open job per breach: asking again while one runs returns it.
CREATE UNIQUE INDEX breach_jobs_open ON breach_jobs(breach_id) WHERE status IN ('enqueued', 'processing');

-- A person's notices are found by profile for access requests and erasure.
CREATE INDEX breach_notices_profile ON breach_notices(profile_id);
