-- Pending jobs that ran before (a lost attempt queued again): what a
-- host's refresh reads besides the newest ids (JobStore::pending_since).
CREATE INDEX jobs_requeued ON jobs (id) WHERE state = 'PENDING' AND attempt > 0;
