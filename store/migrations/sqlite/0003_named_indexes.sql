-- The event log again, with every index declared by name instead of by UNIQUE in the
-- table (SQLite cannot drop the indexes behind those), so that a bulk load into an empty
-- store (`orderlog import`) can drop them, write the rows, and build each index once,
-- sorted, in the same transaction. Same columns, same uniqueness; the rows are copied.
CREATE TABLE events_named (
    position       INTEGER PRIMARY KEY,      -- global position, 1-based, gap-free
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,         -- version within the stream, 1-based
    event_id       TEXT    NOT NULL,         -- uuid, the idempotency key of the event
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        TEXT    NOT NULL,         -- JSON, byte for byte as appended
    metadata       TEXT    NOT NULL,         -- JSON: actor, command id, correlation, causation
    command_id     TEXT    NOT NULL,         -- copied from metadata, indexed for idempotency
    recorded_at    TEXT    NOT NULL,         -- RFC 3339, UTC, nanoseconds
    hash           TEXT    NOT NULL          -- hex SHA-256 chained to the stream's previous event
);

INSERT INTO events_named (position, stream_id, version, event_id, event_type, schema_version, payload,
                          metadata, command_id, recorded_at, hash)
SELECT position, stream_id, version, event_id, event_type, schema_version, payload,
       metadata, command_id, recorded_at, hash
  FROM events ORDER BY position;

DROP TABLE events;
ALTER TABLE events_named RENAME TO events;

CREATE UNIQUE INDEX events_by_event_id ON events (event_id);
CREATE UNIQUE INDEX events_by_stream_version ON events (stream_id, version);
CREATE INDEX events_by_command ON events (command_id);
