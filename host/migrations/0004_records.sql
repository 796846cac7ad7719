-- Hodei Jobs store, version 4: small keyed records (API tokens and other
-- credentials), each a JSON document in a collection. Only hashes of
-- tokens are ever stored.

CREATE TABLE records (
    kind TEXT NOT NULL,   -- the collection, e.g. api_tokens
    key  TEXT NOT NULL,   -- e.g. the SHA-256 hex of a token
    doc  JSONB NOT NULL,
    PRIMARY KEY (kind, key)
);
