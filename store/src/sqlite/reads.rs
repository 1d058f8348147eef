//! Reading rows back on the pool of reading connections.

use super::*;

pub(super) const SELECT_EVENT: &str = "SELECT position, stream_id, version, event_id, event_type, schema_version,
                                   payload, metadata, recorded_at, hash FROM events";

pub(super) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Result<RecordedEvent, StoreError>> {
    let position: u64 = row.get(0)?;
    let event_id: String = row.get(3)?;
    let metadata: String = row.get(7)?;
    let recorded_at: String = row.get(8)?;
    let broken = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Backend(format!("event at position {position} has an unreadable {what}: {e}"))
    };
    let event_id = match Uuid::parse_str(&event_id) {
        Ok(id) => id,
        Err(e) => return Ok(Err(broken("event id", &e))),
    };
    let metadata = match serde_json::from_str(&metadata) {
        Ok(m) => m,
        Err(e) => return Ok(Err(broken("metadata", &e))),
    };
    let recorded_at = match recorded_at.parse() {
        Ok(t) => t,
        Err(e) => return Ok(Err(broken("recorded time", &e))),
    };
    Ok(Ok(RecordedEvent {
        position,
        commit: position,
        stream_id: row.get(1)?,
        version: row.get(2)?,
        event_id,
        event_type: row.get(4)?,
        schema_version: row.get(5)?,
        payload: row.get(6)?,
        metadata,
        recorded_at,
        hash: row.get(9)?,
    }))
}

pub(super) fn query_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt.query_map(params, event_from_row).map_err(backend)?;
    let mut events = Vec::new();
    for row in rows {
        events.push(row.map_err(backend)??);
    }
    Ok(events)
}

pub(super) fn read_head(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| r.get(0)).map_err(backend)
}
