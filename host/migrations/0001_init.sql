-- Hodei Jobs store, version 1. Applied at start by `sqlx::migrate!` (an
-- advisory lock makes concurrent starts of several hosts safe).
--
-- The job itself is one JSON document (`doc`, the same envelope the redb
-- adapter writes); the columns beside it are what queries filter, order or
-- lock on, rewritten from the document on every write.

CREATE TABLE jobs (
    id               UUID PRIMARY KEY,          -- UUIDv7: orders by submission
    state            TEXT NOT NULL,             -- JobState wire name
    priority         INTEGER NOT NULL,
    attempt          INTEGER NOT NULL,          -- the fencing token
    worker_id        TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    scheduled_at     BIGINT,                    -- µs since the epoch
    lease_seen       BIGINT,                    -- µs; last time the attempt's agent was heard from
    log_head         BIGINT NOT NULL DEFAULT 0, -- highest stored log sequence
    doc              JSONB NOT NULL
);

-- The queue: priority, then FIFO.
CREATE INDEX jobs_pending ON jobs (priority DESC, id) WHERE state = 'PENDING';
-- Attempts on workers (leases, restart rebuild).
CREATE INDEX jobs_on_worker ON jobs (id) WHERE state IN ('SCHEDULED', 'RUNNING');
-- Listing by state, newest first.
CREATE INDEX jobs_state ON jobs (state, id DESC);

CREATE TABLE job_logs (
    job_id UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    stream SMALLINT NOT NULL,                   -- 1 stdout, 2 stderr
    ts     BIGINT NOT NULL,                     -- µs since the epoch
    data   BYTEA NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE plugins (
    name  TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
