-- Hodei Jobs store, version 3: the ledger of provisioned workers and the
-- lead of each pool (one host at a time drives a pool).

CREATE TABLE workers (
    id         TEXT PRIMARY KEY,   -- the host's worker id, w-…
    pool       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE, -- SHA-256 hex of the one-time token
    doc        JSONB NOT NULL      -- the ProvisionedWorker row
);
CREATE INDEX workers_pool ON workers (pool, id);

CREATE TABLE pool_leads (
    pool   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,          -- the leading host's id
    until  BIGINT NOT NULL         -- µs since the epoch
);
