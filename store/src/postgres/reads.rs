//! Reading rows back: the event and commit-record columns and their conversions.

use super::*;

/// The columns of an event. The transaction id goes out as text under another name: an
/// output column named `tx_id` would be what `ORDER BY tx_id` sorts by, as text.
pub(super) const SELECT_EVENT: &str =
    "SELECT position, tx_id::text AS commit_text, stream_id, version, event_id, event_type, schema_version,
                                   payload, metadata::text, recorded_at, hash FROM orderlog_events";

/// Rows below the oldest running transaction, after the cursor, in commit order.
pub(super) const AFTER_CURSOR: &str = "(tx_id, position) > ($1::text::xid8, $2::int8)
                            AND tx_id < pg_snapshot_xmin(pg_current_snapshot())";

/// A commit record from `commit_order::text, first_position, events, digest`.
pub(super) fn commit_from_row(r: &Row) -> Result<CommitRecord, StoreError> {
    let commit: &str = r.get(0);
    Ok(CommitRecord {
        commit: commit.parse().map_err(|e| StoreError::Backend(format!("commit order '{commit}': {e}")))?,
        first_position: r.get::<_, i64>(1) as u64,
        events: r.get::<_, i64>(2) as u64,
        digest: r.get(3),
    })
}

pub(super) fn event_from_row(row: &Row) -> Result<RecordedEvent, StoreError> {
    let position = row.get::<_, i64>(0) as u64;
    let broken = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Backend(format!("event at position {position} has an unreadable {what}: {e}"))
    };
    let tx_id: String = row.get(1);
    let metadata: String = row.get(8);
    Ok(RecordedEvent {
        position,
        commit: tx_id.parse().map_err(|e| broken("transaction id", &e))?,
        stream_id: row.get(2),
        version: row.get::<_, i64>(3) as u64,
        event_id: row.get(4),
        event_type: row.get(5),
        schema_version: row.get::<_, i32>(6) as u32,
        payload: row.get(7),
        metadata: serde_json::from_str(&metadata).map_err(|e| broken("metadata", &e))?,
        recorded_at: row.get(9),
        hash: row.get(10),
    })
}
