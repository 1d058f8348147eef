-- What each transaction wrote: its first position, how many events, and the digest of
-- their positions and hashes (store::hash::commit_digest), recorded by orderlog_append in
-- the same transaction as the events. `orderlog verify` checks the log against them, so an
-- event deleted (the last one too), inserted or moved is found even where every stream's
-- own hash chain still holds. Earlier transactions get their records here.
CREATE TABLE orderlog_commits (
    commit_order   XID8   NOT NULL,
    first_position BIGINT NOT NULL,
    events         BIGINT NOT NULL,
    digest         TEXT   NOT NULL,
    PRIMARY KEY (commit_order, first_position)
);

INSERT INTO orderlog_commits (commit_order, first_position, events, digest)
SELECT tx_id, min(position), count(*),
       encode(sha256(convert_to(string_agg(position::TEXT || ':' || hash, ',' ORDER BY position), 'UTF8')), 'hex')
  FROM orderlog_events GROUP BY tx_id;

CREATE OR REPLACE FUNCTION orderlog_append(
    lock_keys  BIGINT[],
    s_append   INTEGER[],
    s_stream   TEXT[],
    s_version  BIGINT[],
    s_hash     TEXT[],
    e_append   INTEGER[],
    e_stream   TEXT[],
    e_version  BIGINT[],
    e_id       UUID[],
    e_type     TEXT[],
    e_schema   INTEGER[],
    e_payload  TEXT[],
    e_metadata TEXT[],
    e_command  TEXT[],
    e_time     TIMESTAMPTZ[],
    e_hash     TEXT[]
) RETURNS TABLE (append_index INTEGER, outcome TEXT, out_stream TEXT, out_version BIGINT, out_hash TEXT,
                 out_event UUID, out_position BIGINT, out_tx_id TEXT)
LANGUAGE plpgsql
-- Plans inside are tiny; JIT compiling them (when a generic plan's estimate crosses
-- jit_above_cost) would cost tens of milliseconds a call.
SET jit = off
-- Every look-up here has an index. A generic plan cached while the events table was small
-- could pick a sequential scan and keep it as the table grows (100-event appends went from
-- 1.6 ms to 23 ms at 200 000 events); with sequential scans off, cached plans use the
-- indexes, and statements are not planned again on every call.
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    genesis   CONSTANT TEXT := '0000000000000000000000000000000000000000000000000000000000000000';
    k         BIGINT;
    c_append  INTEGER[];
    c_stream  TEXT[];
    c_version BIGINT[];
    c_hash    TEXT[];
    stored    UUID[];
    d_append  INTEGER[] := '{}';
    refused   INTEGER[];
BEGIN
    FOREACH k IN ARRAY lock_keys LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;

    -- Appends with a stream not at the head they were planned on. The client never puts a
    -- stream in two appends of one batch, so this can be checked for all at once.
    WITH mismatch AS (
        SELECT DISTINCT ON (s.a) s.a, s.stream, COALESCE(h.version, 0) AS version, COALESCE(h.hash, genesis) AS hash
          FROM unnest(s_append, s_stream, s_version, s_hash) AS s(a, stream, version, hash)
          LEFT JOIN LATERAL (
                SELECT e.version, e.hash FROM orderlog_events e
                 WHERE e.stream_id = s.stream ORDER BY e.version DESC LIMIT 1) h ON true
         WHERE COALESCE(h.version, 0) <> s.version OR COALESCE(h.hash, genesis) <> s.hash
         ORDER BY s.a)
    SELECT array_agg(m.a), array_agg(m.stream), array_agg(m.version), array_agg(m.hash)
      INTO c_append, c_stream, c_version, c_hash
      FROM mismatch m;
    c_append := COALESCE(c_append, '{}');
    IF cardinality(c_append) > 0 THEN
        RETURN QUERY SELECT c.a, 'conflict'::TEXT, c.s, c.v, c.h, NULL::UUID, NULL::BIGINT, NULL::TEXT
                       FROM unnest(c_append, c_stream, c_version, c_hash) AS c(a, s, v, h);
    END IF;

    -- Appends with an event id already stored (looked up by the event id index).
    stored := ARRAY(SELECT e.event_id FROM orderlog_events e WHERE e.event_id = ANY (e_id));
    IF cardinality(stored) > 0 THEN
        d_append := ARRAY(SELECT DISTINCT u.a FROM unnest(e_append, e_id) AS u(a, id)
                           WHERE u.id = ANY (stored) AND u.a <> ALL (c_append));
        RETURN QUERY SELECT d, 'duplicate'::TEXT, NULL::TEXT, NULL::BIGINT, NULL::TEXT, NULL::UUID, NULL::BIGINT, NULL::TEXT
                       FROM unnest(d_append) AS d;
    END IF;

    refused := c_append || d_append;
    -- The events, and the record of what this call wrote (orderlog_commits), together.
    RETURN QUERY
    WITH written AS (
        INSERT INTO orderlog_events AS e (stream_id, version, event_id, event_type, schema_version,
                                          payload, metadata, command_id, recorded_at, hash)
        SELECT u.s, u.v, u.id, u.t, u.sv, u.p, u.m::JSONB, u.c, u.r, u.h
          FROM unnest(e_append, e_stream, e_version, e_id, e_type, e_schema, e_payload, e_metadata,
                      e_command, e_time, e_hash) AS u(a, s, v, id, t, sv, p, m, c, r, h)
         WHERE u.a <> ALL (refused)
        RETURNING e.stream_id, e.version, e.hash, e.event_id, e.position, e.tx_id),
    recorded AS (
        INSERT INTO orderlog_commits (commit_order, first_position, events, digest)
        SELECT pg_current_xact_id(), min(w.position), count(*),
               encode(sha256(convert_to(string_agg(w.position::TEXT || ':' || w.hash, ',' ORDER BY w.position), 'UTF8')), 'hex')
          FROM written w
        HAVING count(*) > 0)
    SELECT 0, 'ok'::TEXT, w.stream_id, w.version, w.hash, w.event_id, w.position, w.tx_id::TEXT FROM written w;
END
$$;
