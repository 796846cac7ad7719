-- Hodei Jobs store, version 6: blobs of pipeline artifacts, in chunks of
-- 1 MiB, so every host sharing the database can serve any of them. What a
-- blob is (job, path, size, SHA-256) is a record of kind `artifact` that
-- names the blob by id.

CREATE TABLE artifact_chunks (
    blob UUID NOT NULL,
    seq  BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob, seq)
);
