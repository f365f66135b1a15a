-- Telling the people of a breach (Art. 34) is a task worked in the background: the request
-- records it, a worker claims it under a lease, plans one `pending` notice per person and
-- channel, then marks each `sending` before it goes and `sent` or `failed` after, so a restart
-- resumes where it stopped and nobody is told twice.
CREATE TABLE breach_jobs (
    id BIGSERIAL PRIMARY KEY,
    breach_id BIGINT NOT NULL REFERENCES breaches(id),
    status TEXT NOT NULL,            -- enqueued | processing | succeeded | failed
    default_language TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    lease_until BIGINT,
    planned_at BIGINT,
    people BIGINT,
    already_told BIGINT,
    finished_at BIGINT,
    error TEXT
);
-- One open job per breach: asking again while one runs returns it.
CREATE UNIQUE INDEX breach_jobs_open ON breach_jobs(breach_id) WHERE status IN ('enqueued', 'processing');

-- A person's notices are found by profile for access requests and erasure.
CREATE INDEX breach_notices_profile ON breach_notices(profile_id);
