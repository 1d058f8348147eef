-- The event log. Append-only: rows are inserted, never updated or deleted.
CREATE TABLE orderlog_events (
    position       BIGSERIAL   PRIMARY KEY,   -- global position: unique, increasing; may skip numbers
    tx_id          XID8        NOT NULL DEFAULT pg_current_xact_id(),  -- the writing transaction
    stream_id      TEXT        NOT NULL,
    version        BIGINT      NOT NULL,      -- version within the stream, 1-based
    event_id       UUID        NOT NULL UNIQUE,
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    payload        TEXT        NOT NULL,      -- JSON, byte for byte as appended
    metadata       JSONB       NOT NULL,      -- actor, command id, correlation, causation
    command_id     TEXT        NOT NULL,      -- copied from metadata, indexed for idempotency
    recorded_at    TIMESTAMPTZ NOT NULL,
    hash           TEXT        NOT NULL,      -- hex SHA-256 chained to the stream's previous event
    UNIQUE (stream_id, version)             -- also finds a stream's head: its highest version
);

-- Readers take the log in commit order: (tx_id, position) below the oldest running
-- transaction, so an event that commits late is never skipped.
CREATE INDEX orderlog_events_commit_order ON orderlog_events (tx_id, position);
CREATE INDEX orderlog_events_by_command ON orderlog_events USING hash (command_id);
