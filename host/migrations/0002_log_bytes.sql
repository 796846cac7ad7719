-- Hodei Jobs store, version 2: bytes of output offered per job, for the
-- per-job log quota (see `domain::admit`). Jobs from before count from 0.
ALTER TABLE jobs ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
