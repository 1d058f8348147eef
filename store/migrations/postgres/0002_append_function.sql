-- One call appends to one or more streams: under advisory locks on the streams (taken in
-- the order given, which the client sorts), it checks that every stream is still at the
-- head the client planned on (version and hash), that no event id is already stored,
-- inserts the events and moves the stream heads. A mismatch raises SQLSTATE OL001 with the
-- stream id as message and "version hash" of the actual head as detail; a known event id
-- raises OL002. Advisory locks take no transaction id, so the id the insert takes comes
-- after every lock is held, and each stream's versions follow commit order.
CREATE FUNCTION orderlog_append(
    lock_keys         BIGINT[],
    streams           TEXT[],
    expected_versions BIGINT[],
    expected_hashes   TEXT[],
    new_versions      BIGINT[],
    new_hashes        TEXT[],
    e_stream          TEXT[],
    e_version         BIGINT[],
    e_id              UUID[],
    e_type            TEXT[],
    e_schema          INTEGER[],
    e_payload         TEXT[],
    e_metadata        TEXT[],
    e_command         TEXT[],
    e_time            TIMESTAMPTZ[],
    e_hash            TEXT[]
) RETURNS TABLE (event_id UUID, event_position BIGINT, event_tx_id TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    k        BIGINT;
    mismatch RECORD;
BEGIN
    FOREACH k IN ARRAY lock_keys LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;

    SELECT s.stream_id, COALESCE(h.version, 0) AS version,
           COALESCE(h.hash, '0000000000000000000000000000000000000000000000000000000000000000') AS hash
      INTO mismatch
      FROM unnest(streams, expected_versions, expected_hashes) AS s(stream_id, expected_version, expected_hash)
      LEFT JOIN orderlog_streams h ON h.stream_id = s.stream_id
     WHERE COALESCE(h.version, 0) <> s.expected_version
        OR COALESCE(h.hash, '0000000000000000000000000000000000000000000000000000000000000000') <> s.expected_hash
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'OL001', MESSAGE = mismatch.stream_id,
                              DETAIL = mismatch.version::text || ' ' || mismatch.hash;
    END IF;

    IF EXISTS (SELECT 1 FROM orderlog_events e WHERE e.event_id = ANY (e_id)) THEN
        RAISE EXCEPTION USING ERRCODE = 'OL002', MESSAGE = 'an event id of this append is already stored';
    END IF;

    RETURN QUERY
    INSERT INTO orderlog_events AS e (stream_id, version, event_id, event_type, schema_version,
                                      payload, metadata, command_id, recorded_at, hash)
    SELECT u.s, u.v, u.id, u.t, u.sv, u.p, u.m::jsonb, u.c, u.r, u.h
      FROM unnest(e_stream, e_version, e_id, e_type, e_schema, e_payload, e_metadata, e_command, e_time, e_hash)
           AS u(s, v, id, t, sv, p, m, c, r, h)
    RETURNING e.event_id, e.position, e.tx_id::text;

    INSERT INTO orderlog_streams AS h (stream_id, version, hash)
    SELECT n.s, n.v, n.h
      FROM unnest(streams, expected_versions, new_versions, new_hashes) AS n(s, old_v, v, h)
     WHERE n.v <> n.old_v
    ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, hash = EXCLUDED.hash;
END
$$;
