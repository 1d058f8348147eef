-- The event log. Append-only: rows are inserted, never updated or deleted.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,      -- global position, 1-based, gap-free
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,         -- version within the stream, 1-based
    event_id       TEXT    NOT NULL UNIQUE,  -- uuid, the idempotency key of the event
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,         -- JSON, byte for byte as appended
    metadata       TEXT    NOT NULL,         -- JSON: actor, command id, correlation, causation
    command_id     TEXT    NOT NULL,         -- copied from metadata, indexed for idempotency
    recorded_at    TEXT    NOT NULL,         -- RFC 3339, UTC, nanoseconds
    hash           TEXT    NOT NULL,         -- hex SHA-256 chained to the stream's previous event
    UNIQUE (stream_id, version)
);

CREATE INDEX events_by_command ON events (command_id);

-- The head of every stream: its version and the hash of its last event.
CREATE TABLE streams (
    stream_id TEXT    PRIMARY KEY,
    version   INTEGER NOT NULL,
    hash      TEXT    NOT NULL
) WITHOUT ROWID;
