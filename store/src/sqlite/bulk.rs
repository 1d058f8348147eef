//! Bulk load on the writer's connection: rows in position order, indexes built once after.

use super::*;

/// Page cache of a bulk load while it writes the rows, KiB (negative `cache_size` is KiB).
/// The rows go in position order, each to the end of the table, so a page once full is not
/// touched again: more cache only puts off writing it (to the commit, or to the index
/// builds, which run with [`INDEX_SORT_CACHE_KIB`]) and costs fresh memory to fault in.
/// 16 MiB against 256 MiB: a 1M-event import faster in most runs, by up to a second
/// (BENCHMARKS.md), and 240 MiB less memory.
pub(super) const BULK_CACHE_KIB: i64 = 16_384;

/// Helper threads of the bulk load's index builds (SQLite's `PRAGMA threads`).
pub(super) const INDEX_SORT_THREADS: u32 = 2;
/// Page cache while the bulk load builds its indexes, KiB: it also bounds what SQLite's
/// sorter sorts in one piece, and pieces this small go to the helper threads.
pub(super) const INDEX_SORT_CACHE_KIB: i64 = 4_096;

/// The bulk load, on the writer's connection. When no other connection has the file open,
/// the load leaves WAL mode for its duration: in rollback-journal mode the new pages are
/// written to the database file once at the commit (pages that did not exist before need
/// no journal), where WAL mode writes each twice, to the WAL and again at the checkpoint.
/// A reader that keeps the file open (another process) keeps it in WAL mode, and the load
/// goes through the WAL as any write does. Either way the file is in WAL mode afterwards.
pub(super) fn bulk_load_on(conn: &mut Connection, events: crate::BulkEvents) -> Result<u64, StoreError> {
    let rollback_journal = leave_wal(conn);
    let cache: i64 = conn.query_row("PRAGMA cache_size", [], |r| r.get(0)).map_err(backend)?;
    conn.pragma_update(None, "cache_size", -BULK_CACHE_KIB).map_err(backend)?;
    let loaded = load_rows(conn, events, rollback_journal);
    // Set back whether the load held or not (`load_rows` changes both).
    if let Err(e) = conn.execute_batch(&format!("PRAGMA cache_size = {cache}; PRAGMA threads = 0")) {
        tracing::warn!(error = %e, "the writer's page cache and threads could not be set back after a bulk load");
    }
    if rollback_journal {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => {}
            // Opening the store sets WAL mode again.
            other => tracing::warn!(?other, "the database could not go back to WAL mode after a bulk load"),
        }
    }
    loaded
}

/// Switches the file to rollback-journal mode if no other connection has it open; says
/// whether it did.
pub(super) fn leave_wal(conn: &Connection) -> bool {
    // Another connection is a reason not to switch, not one to wait.
    if conn.busy_timeout(Duration::ZERO).is_err() {
        return false;
    }
    let mode = conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0));
    let _ = conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS));
    matches!(mode, Ok(m) if m.eq_ignore_ascii_case("delete"))
}

/// The rows, the indexes and the commit record of a bulk load, in one transaction.
pub(super) fn load_rows(
    conn: &mut Connection,
    events: crate::BulkEvents,
    rollback_journal: bool,
) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
    if read_head(&tx)? != 0 {
        return Err(StoreError::LoadRefused("the store is not empty".into()));
    }
    // Into an empty table the rows go in position order (appended to the table's
    // tree) and each index is built once, sorted, at the end, instead of inserting
    // into three trees at random places per row. In WAL mode readers keep their
    // snapshot, with the indexes, until the load commits.
    // The indexes as the migrations made them (migration 3 names every one), read from the
    // schema so that they are built again exactly so.
    let indexes: Vec<(String, String)> = tx
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL")
        .and_then(|mut stmt| stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(backend)?;
    for (name, _) in &indexes {
        tx.execute_batch(&format!("DROP INDEX {name}")).map_err(backend)?;
    }
    let started = std::time::Instant::now();
    let mut heads: foldhash::HashMap<String, (u64, String)> = Default::default();
    let mut group = CommitDigest::default();
    let mut position = 0u64;
    {
        // The rows' texts are bound in place, not copied (see `borrowed`).
        let mut insert = BorrowedInsert::prepare(&tx, INSERT_EVENT).map_err(backend)?;
        let mut record = tx.prepare(INSERT_COMMIT).map_err(backend)?;
        let mut flush = |group: &mut CommitDigest| -> Result<(), StoreError> {
            if group.events() > 0 {
                let (first, events) = (group.first(), group.events());
                record.execute(params![first, events, std::mem::take(group).finish()]).map_err(backend)?;
            }
            Ok(())
        };
        let mut id = uuid::Uuid::encode_buffer();
        for chunk in events {
            for load in chunk?.iter() {
                let e = &load.event;
                position += 1;
                let int = |n: u64| i64::try_from(n).map(Param::Int);
                let (Ok(at), Ok(version), Ok(schema_version)) =
                    (int(position), int(e.version), int(u64::from(e.schema_version)))
                else {
                    return Err(StoreError::LoadRefused(format!(
                        "event {}: its version ({}) or schema version ({}) is beyond SQLite's integers",
                        e.event_id, e.version, e.schema_version
                    )));
                };
                insert
                    .run(&[
                        at,
                        Param::Text(&e.stream_id),
                        version,
                        Param::Text(e.event_id.hyphenated().encode_lower(&mut id)),
                        Param::Text(&e.event_type),
                        schema_version,
                        Param::Text(&e.payload),
                        Param::Text(&load.metadata),
                        Param::Text(&e.metadata.command_id),
                        Param::Text(&load.recorded_at),
                        Param::Text(&e.hash),
                    ])
                    .map_err(|err| StoreError::LoadRefused(format!("event {} cannot be stored: {err}", e.event_id)))?;
                group.push(position, &e.hash);
                match heads.get_mut(&e.stream_id) {
                    Some(head) => {
                        head.0 = e.version;
                        head.1.clone_from(&e.hash);
                    }
                    None => {
                        heads.insert(e.stream_id.clone(), (e.version, e.hash.clone()));
                    }
                }
                if group.events() >= crate::BULK_RECORD_EVENTS {
                    flush(&mut group)?;
                }
            }
        }
        flush(&mut group)?;
        let mut upsert =
            tx.prepare("INSERT INTO streams (stream_id, version, hash) VALUES (?1, ?2, ?3)").map_err(backend)?;
        for (stream_id, (version, hash)) in &heads {
            upsert.execute(params![stream_id, version, hash]).map_err(backend)?;
        }
    }
    let rows = started.elapsed();
    // Each index build scans the table and sorts every key. With the sorter's memory small
    // (SQLite bounds it by the page cache) and helper threads allowed, the keys are sorted
    // a few MiB at a time on a helper thread while this one keeps scanning, then merged;
    // otherwise all of them are sorted at the end in one piece on this thread, which was
    // 40 % of the builds (BENCHMARKS.md).
    tx.execute_batch(&format!("PRAGMA threads = {INDEX_SORT_THREADS}; PRAGMA cache_size = -{INDEX_SORT_CACHE_KIB}"))
        .map_err(backend)?;
    for (name, create) in &indexes {
        let t = std::time::Instant::now();
        tx.execute_batch(create)
            .map_err(|err| StoreError::LoadRefused(format!("the events cannot be indexed: {err}")))?;
        tracing::debug!(index = %name, took = ?t.elapsed(), "index built");
    }
    let indexed = started.elapsed();
    tx.commit().map_err(backend)?;
    let journal = if rollback_journal { "rollback" } else { "wal" };
    tracing::debug!(events = position, journal, ?rows, indexes = ?(indexed - rows), commit = ?(started.elapsed() - indexed), "bulk load");
    Ok(position)
}
