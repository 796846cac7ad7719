-- The durable event log behind GET /api/v1/events (see store::postgres).
-- `xid` is the writing transaction: readers take only events of
-- transactions older than every running one, in (xid, seq) order, so an
-- event committed late can never sort before one already delivered.
CREATE TABLE events (
    seq bigserial PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    doc jsonb NOT NULL
);
CREATE INDEX events_by_xid ON events (xid, seq);
