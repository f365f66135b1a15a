-- Data-subject requests, each kept whole as a JSON document (confiance_core::privacy::requests
-- ::Request), with the columns lists and deadlines need.
CREATE TABLE requests (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    subject TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX requests_open ON requests(status, due_at);
CREATE INDEX requests_subject ON requests(subject);

-- What carrying out a request produced (the archive of an access or portability request).
CREATE TABLE request_results (
    request_id INTEGER PRIMARY KEY,
    result TEXT NOT NULL
);
