-- Telling the recipients of a person's data of a rectification, erasure or restriction
-- (Art. 19), whether a request or the retention rules caused it, is a persisted task: one row
-- per recipient and notice, tried at once and retried with a growing delay until the recipient
-- acknowledges it or the attempts run out. A worker claims a row by moving its `next_at`
-- forward (a lease): one that dies mid-send is retried when the lease ends, and the notice
-- carries its id so a recipient can ignore a repeat.
CREATE TABLE recipient_notices (
    id BIGSERIAL PRIMARY KEY,
    request_id BIGINT,  -- none for an erasure by the retention rules
    profile_id BIGINT NOT NULL,
    notice TEXT NOT NULL,            -- rectification | erasure | restriction
    campaign TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,           -- the JSON sent; sealed under the request's key when it holds data
    status TEXT NOT NULL,            -- pending | sent | failed | cancelled
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    outcome TEXT,
    created_at BIGINT NOT NULL,
    done_at BIGINT
);
CREATE INDEX recipient_notices_due ON recipient_notices(next_at) WHERE status = 'pending';
CREATE INDEX recipient_notices_request ON recipient_notices(request_id);
CREATE INDEX recipient_notices_profile ON recipient_notices(profile_id);
