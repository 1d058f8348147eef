//! The embedded default: the log in one SQLite file, in WAL mode with `synchronous=FULL`,
//! so an append that returned `Ok` survives a crash of the process or the machine.
//!
//! One writer thread owns the writing connection and commits appends in batches (group
//! commit): each append of a batch runs inside its own savepoint, so a failing append
//! leaves the others untouched, and no caller hears `Ok` before the batch is durable.
//! Reads run on a small pool of reading connections, in parallel with the writer.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::append::{plan, validate, AppendLookup, EventLocation, Plan, StreamHead, Write};
use crate::hash::{commit_digest, format_time, CommitDigest};
pub use crate::migration::Migration;
use crate::{
    AppendOutcome, CommitRecord, EventStore, LogCursor, RecordedEvent, StoreError, StreamAppend, READ_EVENTS_MAX,
};
use borrowed::{BorrowedInsert, Param};

mod borrowed;

/// `PRAGMA application_id` of an orderlog database ("ORLG").
pub const APPLICATION_ID: i32 = 0x4F52_4C47;
/// Appends committed together in one transaction, at most.
pub const BATCH_APPENDS_MAX: usize = 256;
/// Appends waiting for the writer, at most; callers wait beyond that.
pub const APPEND_QUEUE_MAX: usize = 4_096;
/// Idle reading connections kept open, at most.
pub const READERS_IDLE_MAX: usize = 8;
/// How long a connection waits for a lock held by another process.
pub const BUSY_TIMEOUT_MS: u64 = 10_000;
/// How often a waiting reader looks for appends made by other processes.
pub const WAIT_POLL_MS: u64 = 100;

/// One row of the log, in the order `write_rows` and `bulk_load` bind it.
const INSERT_EVENT: &str = "INSERT INTO events (position, stream_id, version, event_id, event_type, schema_version,
                                                payload, metadata, command_id, recorded_at, hash)
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// One commit record: first position, number of events, digest.
const INSERT_COMMIT: &str = "INSERT INTO orderlog_commits (first_position, events, digest) VALUES (?1, ?2, ?3)";

/// This build's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "event_log", sql: include_str!("../migrations/sqlite/0001_event_log.sql") },
    Migration { version: 2, name: "commit_records", sql: include_str!("../migrations/sqlite/0002_commit_records.sql") },
    Migration { version: 3, name: "named_indexes", sql: include_str!("../migrations/sqlite/0003_named_indexes.sql") },
];

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

struct AppendRequest {
    appends: Vec<StreamAppend>,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// What the writer thread does, in the order sent.
enum WriterJob {
    Append(AppendRequest),
    /// Work that needs the writer's connection to itself (the bulk load), run between
    /// batches of appends.
    Exclusive(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// The event log in a SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    writer: mpsc::Sender<WriterJob>,
    readers: Arc<Mutex<Vec<Connection>>>,
    head: watch::Sender<u64>,
    applied: Vec<u32>,
}

impl SqliteStore {
    /// Opens (or creates) the store at `path` and brings its schema up to date. A file
    /// that is not an orderlog database, or one of a newer schema, is refused untouched.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let display = path.display().to_string();
        let fresh = identify(&path)?;
        let mut conn = Connection::open(&path).map_err(|e| open_error(&display, e))?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(backend)?;
        if fresh {
            // Written while the file is still in rollback-journal mode, so the header on
            // disk names the application from the first commit on.
            conn.pragma_update(None, "application_id", APPLICATION_ID).map_err(backend)?;
        }
        check_schema_version(&conn, &display)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(backend)?;
        let applied = migrate(&mut conn)?;
        if applied.contains(&2) {
            record_earlier_commits(&mut conn)?;
        }
        let head: u64 =
            conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| r.get(0)).map_err(backend)?;
        let (tx, rx) = mpsc::channel(APPEND_QUEUE_MAX);
        let head_tx = watch::Sender::new(head);
        let thread_head = head_tx.clone();
        std::thread::Builder::new()
            .name("orderlog-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, thread_head))
            .map_err(backend)?;
        Ok(SqliteStore { path, writer: tx, readers: Arc::new(Mutex::new(Vec::new())), head: head_tx, applied })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Migrations this `open` applied (empty when the schema was already current).
    pub fn applied_migrations(&self) -> &[u32] {
        &self.applied
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().expect("reader pool lock").pop();
            let conn = match conn {
                Some(c) => c,
                None => open_reader(&path)?,
            };
            let result = f(&conn);
            let mut pool = readers.lock().expect("reader pool lock");
            if pool.len() < READERS_IDLE_MAX {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(backend)?
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(backend)?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS)).map_err(backend)?;
    conn.pragma_update(None, "query_only", true).map_err(backend)?;
    Ok(conn)
}

fn open_error(path: &str, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            StoreError::NotOrderlog { path: path.to_string(), detail: "not a SQLite database".into() }
        }
        _ => StoreError::Backend(format!("cannot open '{path}': {e}")),
    }
}

/// Reads the file header without opening the database: true for a new (absent or empty)
/// file; an error for anything that is not an orderlog database.
fn identify(path: &Path) -> Result<bool, StoreError> {
    let display = path.display().to_string();
    let not_ours = |detail: &str| StoreError::NotOrderlog { path: display.clone(), detail: detail.to_string() };
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(StoreError::Backend(format!("cannot read '{display}': {e}"))),
    };
    if file.metadata().map_err(backend)?.is_dir() {
        return Err(not_ours("it is a directory"));
    }
    let mut header = Vec::with_capacity(100);
    file.by_ref().take(100).read_to_end(&mut header).map_err(backend)?;
    if header.is_empty() {
        return Ok(true);
    }
    if header.len() < 100 || &header[..16] != b"SQLite format 3\0" {
        return Err(not_ours("not a SQLite database"));
    }
    let application_id = i32::from_be_bytes(header[68..72].try_into().expect("4 bytes"));
    if application_id != APPLICATION_ID {
        return Err(not_ours(&format!(
            "a SQLite database of another application (application_id {application_id:#x})"
        )));
    }
    Ok(false)
}

fn check_schema_version(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'orderlog_migrations')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| open_error(path, e))?;
    if !exists {
        return Ok(());
    }
    let found: u32 = conn
        .query_row("SELECT COALESCE(MAX(version), 0) FROM orderlog_migrations", [], |r| r.get(0))
        .map_err(backend)?;
    let supported = MIGRATIONS.last().map_or(0, |m| m.version);
    if found > supported {
        return Err(StoreError::SchemaTooNew { path: path.to_string(), found, supported });
    }
    Ok(())
}

/// Applies the missing migrations in order, in one transaction that also locks out other
/// processes migrating the same file; refuses if an applied migration changed.
fn migrate(conn: &mut Connection) -> Result<Vec<u32>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS orderlog_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            checksum   TEXT NOT NULL,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        )",
    )
    .map_err(backend)?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let current = m.checksum();
        let existing: Option<String> = tx
            .query_row("SELECT checksum FROM orderlog_migrations WHERE version = ?1", [m.version], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        match existing {
            Some(applied_sum) if applied_sum == current => {}
            Some(applied_sum) => {
                return Err(StoreError::MigrationChanged {
                    version: m.version,
                    name: m.name.to_string(),
                    applied: applied_sum,
                    current,
                })
            }
            None => {
                tx.execute_batch(m.sql).map_err(|e| backend(format!("migration {} ({}): {e}", m.version, m.name)))?;
                tx.execute(
                    "INSERT INTO orderlog_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                    params![m.version, m.name, current],
                )
                .map_err(backend)?;
                applied.push(m.version);
            }
        }
    }
    tx.commit().map_err(backend)?;
    Ok(applied)
}

struct SqliteTarget<'c> {
    conn: &'c Connection,
}

impl AppendLookup for SqliteTarget<'_> {
    fn find_event(&mut self, event_id: &Uuid) -> Result<Option<EventLocation>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT position, stream_id, version FROM events WHERE event_id = ?1")
            .map_err(backend)?;
        stmt.query_row([event_id.to_string()], |r| {
            Ok(EventLocation { position: r.get(0)?, stream_id: r.get(1)?, version: r.get(2)? })
        })
        .optional()
        .map_err(backend)
    }

    fn stream_head(&mut self, stream_id: &str) -> Result<Option<StreamHead>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT version, hash FROM streams WHERE stream_id = ?1").map_err(backend)?;
        stmt.query_row([stream_id], |r| Ok(StreamHead { version: r.get(0)?, hash: r.get(1)? }))
            .optional()
            .map_err(backend)
    }
}

/// Writes the planned events at positions `next`, `next + 1`, … and the new stream heads.
/// Gives the events of a log written before commit records existed one record each.
fn record_earlier_commits(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(backend)?;
    {
        let mut read = tx.prepare("SELECT position, hash FROM events ORDER BY position").map_err(backend)?;
        let mut insert = tx.prepare(INSERT_COMMIT).map_err(backend)?;
        let mut rows = read.query([]).map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            let (position, hash): (u64, String) = (row.get(0).map_err(backend)?, row.get(1).map_err(backend)?);
            insert.execute(params![position, 1, commit_digest([(position, hash.as_str())])]).map_err(backend)?;
        }
    }
    tx.commit().map_err(backend)
}

fn write_rows(conn: &Connection, write: &mut Write, next: u64) -> Result<(), StoreError> {
    let mut insert = conn.prepare_cached(INSERT_EVENT).map_err(backend)?;
    for (e, position) in write.events.iter_mut().zip(next..) {
        e.position = position;
        e.commit = position;
        let metadata = serde_json::to_string(&e.metadata).map_err(backend)?;
        insert
            .execute(params![
                e.position,
                e.stream_id,
                e.version,
                e.event_id.to_string(),
                e.event_type,
                e.schema_version,
                e.payload,
                metadata,
                e.metadata.command_id,
                format_time(&e.recorded_at),
                e.hash,
            ])
            .map_err(|err| match err.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) if err.to_string().contains("event_id") => {
                    StoreError::DuplicateEvent { event_id: e.event_id, detail: "in another append".into() }
                }
                _ => backend(err),
            })?;
    }
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO streams (stream_id, version, hash) VALUES (?1, ?2, ?3)
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, hash = excluded.hash",
        )
        .map_err(backend)?;
    for (stream_id, head) in &write.heads {
        upsert.execute(params![stream_id, head.version, head.hash]).map_err(backend)?;
    }
    Ok(())
}

/// Page cache of a bulk load while it writes the rows, KiB (negative `cache_size` is KiB).
/// The rows go in position order, each to the end of the table, so a page once full is not
/// touched again: more cache only puts off writing it (to the commit, or to the index
/// builds, which run with [`INDEX_SORT_CACHE_KIB`]) and costs fresh memory to fault in.
/// 16 MiB against 256 MiB: a 1M-event import faster in most runs, by up to a second
/// (BENCHMARKS.md), and 240 MiB less memory.
const BULK_CACHE_KIB: i64 = 16_384;

/// Helper threads of the bulk load's index builds (SQLite's `PRAGMA threads`).
const INDEX_SORT_THREADS: u32 = 2;
/// Page cache while the bulk load builds its indexes, KiB: it also bounds what SQLite's
/// sorter sorts in one piece, and pieces this small go to the helper threads.
const INDEX_SORT_CACHE_KIB: i64 = 4_096;

/// The bulk load, on the writer's connection. When no other connection has the file open,
/// the load leaves WAL mode for its duration: in rollback-journal mode the new pages are
/// written to the database file once at the commit (pages that did not exist before need
/// no journal), where WAL mode writes each twice, to the WAL and again at the checkpoint.
/// A reader that keeps the file open (another process) keeps it in WAL mode, and the load
/// goes through the WAL as any write does. Either way the file is in WAL mode afterwards.
fn bulk_load_on(conn: &mut Connection, events: crate::BulkEvents) -> Result<u64, StoreError> {
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
fn leave_wal(conn: &Connection) -> bool {
    // Another connection is a reason not to switch, not one to wait.
    if conn.busy_timeout(Duration::ZERO).is_err() {
        return false;
    }
    let mode = conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0));
    let _ = conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS));
    matches!(mode, Ok(m) if m.eq_ignore_ascii_case("delete"))
}

/// The rows, the indexes and the commit record of a bulk load, in one transaction.
fn load_rows(conn: &mut Connection, events: crate::BulkEvents, rollback_journal: bool) -> Result<u64, StoreError> {
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
            for load in chunk.map_err(StoreError::LoadRefused)?.iter() {
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

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<WriterJob>, head: watch::Sender<u64>) {
    // A job taken while gathering a batch, to run after it.
    let mut pending: Option<WriterJob> = None;
    loop {
        let Some(job) = pending.take().or_else(|| rx.blocking_recv()) else { return };
        let first = match job {
            WriterJob::Exclusive(work) => {
                work(&mut conn);
                continue;
            }
            WriterJob::Append(request) => request,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_APPENDS_MAX {
            match rx.try_recv() {
                Ok(WriterJob::Append(request)) => batch.push(request),
                Ok(exclusive) => {
                    pending = Some(exclusive);
                    break;
                }
                Err(_) => break,
            }
        }
        let (results, last) = write_batch(&mut conn, &batch);
        if let Some(last) = last {
            head.send_if_modified(|h| {
                let moved = last > *h;
                *h = (*h).max(last);
                moved
            });
        }
        for (request, result) in batch.into_iter().zip(results) {
            let _ = request.reply.send(result);
        }
    }
}

/// Commits a batch of appends in one transaction; each append in its own savepoint.
fn write_batch(
    conn: &mut Connection,
    batch: &[AppendRequest],
) -> (Vec<Result<AppendOutcome, StoreError>>, Option<u64>) {
    let fail_all = |e: StoreError| {
        let message = e.to_string();
        (batch.iter().map(|_| Err(StoreError::Backend(message.clone()))).collect(), None)
    };
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(backend(e)),
    };
    let mut next: u64 = match tx.query_row("SELECT COALESCE(MAX(position), 0) + 1 FROM events", [], |r| r.get(0)) {
        Ok(n) => n,
        Err(e) => return fail_all(backend(e)),
    };
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        let result = (|| {
            tx.execute_batch("SAVEPOINT append").map_err(backend)?;
            let planned = plan(&mut SqliteTarget { conn: &tx }, &request.appends).and_then(|planned| match planned {
                Plan::Repeat(outcome) => Ok((outcome, 0)),
                Plan::Write(mut write) => {
                    write_rows(&tx, &mut write, next)?;
                    let written = write.events.len() as u64;
                    if written > 0 {
                        let digest = commit_digest(write.events.iter().map(|e| (e.position, e.hash.as_str())));
                        tx.prepare_cached(INSERT_COMMIT)
                            .and_then(|mut insert| insert.execute(params![next, written, digest]))
                            .map_err(backend)?;
                    }
                    Ok((write.outcome(), written))
                }
            });
            match planned {
                Ok((outcome, written)) => {
                    tx.execute_batch("RELEASE append").map_err(backend)?;
                    next += written;
                    Ok(outcome)
                }
                Err(e) => {
                    tx.execute_batch("ROLLBACK TO append; RELEASE append").map_err(backend)?;
                    Err(e)
                }
            }
        })();
        results.push(result);
    }
    if let Err(e) = tx.commit() {
        return fail_all(backend(e));
    }
    (results, Some(next - 1))
}

const SELECT_EVENT: &str = "SELECT position, stream_id, version, event_id, event_type, schema_version,
                                   payload, metadata, recorded_at, hash FROM events";

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Result<RecordedEvent, StoreError>> {
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

fn query_events(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt.query_map(params, event_from_row).map_err(backend)?;
    let mut events = Vec::new();
    for row in rows {
        events.push(row.map_err(backend)??);
    }
    Ok(events)
}

fn read_head(conn: &Connection) -> Result<u64, StoreError> {
    conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| r.get(0)).map_err(backend)
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendOutcome, StoreError> {
        validate(&appends)?;
        let (reply, answer) = oneshot::channel();
        self.writer.send(WriterJob::Append(AppendRequest { appends, reply })).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream_id = stream_id.to_string();
        let limit = limit.min(READ_EVENTS_MAX);
        self.with_reader(move |conn| {
            query_events(
                conn,
                &format!("{SELECT_EVENT} WHERE stream_id = ?1 AND version >= ?2 ORDER BY version LIMIT ?3"),
                // Versions are stored as SQLite integers (i64); none is past i64::MAX.
                params![stream_id, from_version.min(i64::MAX as u64), limit],
            )
        })
        .await
    }

    async fn read_all(&self, after: LogCursor, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let after = after.position;
        let limit = limit.min(READ_EVENTS_MAX);
        self.with_reader(move |conn| {
            query_events(
                conn,
                &format!("{SELECT_EVENT} WHERE position > ?1 ORDER BY position LIMIT ?2"),
                params![after, limit],
            )
        })
        .await
    }

    async fn read_command(&self, command_id: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        let command_id = command_id.to_string();
        self.with_reader(move |conn| {
            query_events(conn, &format!("{SELECT_EVENT} WHERE command_id = ?1 ORDER BY position"), params![command_id])
        })
        .await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let stream_id = stream_id.to_string();
        self.with_reader(move |conn| {
            conn.query_row("SELECT version FROM streams WHERE stream_id = ?1", [stream_id], |r| r.get(0))
                .optional()
                .map(|v| v.unwrap_or(0))
                .map_err(backend)
        })
        .await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let head = self.with_reader(read_head).await?;
        self.head.send_if_modified(|h| {
            let moved = head > *h;
            *h = (*h).max(head);
            moved
        });
        Ok(head)
    }

    async fn cursor_of(&self, position: u64) -> Result<Option<LogCursor>, StoreError> {
        let head = self.head().await?;
        Ok((position >= 1 && position <= head).then_some(LogCursor { commit: position, position }))
    }

    async fn wait_for(&self, after: LogCursor, timeout: Duration) -> Result<bool, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.head.subscribe();
        loop {
            // Appends of this process wake us at once; those of other processes are seen
            // by polling the file.
            let head = self.head().await?;
            if head > after.position {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            let poll = tokio::time::Instant::now() + Duration::from_millis(WAIT_POLL_MS);
            let _ = tokio::time::timeout_at(poll.min(deadline), rx.wait_for(|&h| h > after.position)).await;
        }
    }

    async fn read_commits(&self, after: LogCursor, limit: u32) -> Result<Vec<CommitRecord>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT first_position, events, digest FROM orderlog_commits WHERE first_position > ?1
                      ORDER BY first_position LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![after.position, limit.min(READ_EVENTS_MAX)], |r| {
                    let first: u64 = r.get(0)?;
                    Ok(CommitRecord { commit: first, first_position: first, events: r.get(1)?, digest: r.get(2)? })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn stored_form_fault(&self, from: u64, to: u64) -> Result<Option<(u64, String)>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT position, event_id, metadata, command_id, recorded_at FROM events
                      WHERE position >= ?1 AND position <= ?2 ORDER BY position",
                )
                .map_err(backend)?;
            let mut rows = stmt.query(params![from, to]).map_err(backend)?;
            while let Some(row) = rows.next().map_err(backend)? {
                let position: u64 = row.get(0).map_err(backend)?;
                let text =
                    |i| row.get_ref(i).ok().and_then(|v| v.as_str().ok().map(str::to_string)).unwrap_or_default();
                let (event_id, metadata, command_id, recorded_at) = (text(1), text(2), text(3), text(4));
                let canonical_id = Uuid::parse_str(&event_id).map(|u| u.to_string()).unwrap_or_default();
                let fault = if canonical_id != event_id {
                    Some(format!("its stored event id '{event_id}' is not the canonical form its hash covers"))
                } else if let Some(fault) = crate::stored_metadata_fault(&metadata, &command_id, true) {
                    Some(fault)
                } else {
                    match recorded_at.parse::<chrono::DateTime<chrono::Utc>>() {
                        Ok(t) if crate::hash::format_time(&t) == recorded_at => None,
                        _ => Some(format!(
                            "its stored time '{recorded_at}' is not the canonical form its hash covers (re-encoded)"
                        )),
                    }
                };
                if let Some(fault) = fault {
                    return Ok(Some((position, fault)));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn stream_head_fault(&self) -> Result<Option<(String, String)>, StoreError> {
        self.with_reader(move |conn| {
            // Heads that are not their stream's last event, and streams with events but no head.
            conn.query_row(
                "SELECT stream_id, head_version, head_hash, last_version, last_hash FROM (
                   SELECT s.stream_id, s.version AS head_version, s.hash AS head_hash,
                          e.version AS last_version, e.hash AS last_hash
                     FROM streams s LEFT JOIN events e ON e.stream_id = s.stream_id
                          AND e.version = (SELECT MAX(version) FROM events WHERE stream_id = s.stream_id)
                   UNION ALL
                   SELECT e.stream_id, NULL, NULL, MAX(e.version), NULL FROM events e
                    WHERE NOT EXISTS (SELECT 1 FROM streams s WHERE s.stream_id = e.stream_id)
                    GROUP BY e.stream_id)
                 WHERE head_version IS NOT last_version OR head_hash IS NOT last_hash
                 ORDER BY stream_id LIMIT 1",
                [],
                |r| {
                    let stream: String = r.get(0)?;
                    let head: Option<u64> = r.get(1)?;
                    let last: Option<u64> = r.get(3)?;
                    let fault = match (head, last) {
                        (None, last) => format!("it has events (to version {}) but no recorded head", last.unwrap_or(0)),
                        (Some(h), Some(l)) if h != l => format!(
                            "its recorded head is version {h} but its last event is version {l}: appends to it would be refused"
                        ),
                        (Some(h), None) => format!("its recorded head is version {h} but it has no events"),
                        (Some(h), Some(_)) => format!("its recorded head hash at version {h} is not its last event's hash"),
                    };
                    Ok((stream, fault))
                },
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn bulk_load(&self, events: crate::BulkEvents) -> Result<u64, StoreError> {
        // This store's idle readers are closed, so that the load can have the file to itself
        // (see `bulk_load_on`); it runs on the writer's connection, between appends.
        self.readers.lock().expect("reader pool lock").clear();
        let (reply, answer) = oneshot::channel();
        let work = move |conn: &mut Connection| {
            let _ = reply.send(bulk_load_on(conn, events));
        };
        self.writer.send(WriterJob::Exclusive(Box::new(work))).await.map_err(|_| StoreError::Closed)?;
        let loaded = answer.await.map_err(|_| StoreError::Closed)??;
        self.head.send_replace(loaded);
        Ok(loaded)
    }

    async fn commit_of(&self, position: u64) -> Result<Option<CommitRecord>, StoreError> {
        self.with_reader(move |conn| {
            conn.query_row(
                "SELECT first_position, events, digest FROM orderlog_commits
                  WHERE first_position <= ?1 ORDER BY first_position DESC LIMIT 1",
                [position],
                |r| {
                    let first: u64 = r.get(0)?;
                    Ok(CommitRecord { commit: first, first_position: first, events: r.get(1)?, digest: r.get(2)? })
                },
            )
            .optional()
            .map(|record| record.filter(|c| position < c.first_position + c.events))
            .map_err(backend)
        })
        .await
    }

    async fn settle(&self, _timeout: Duration) -> Result<bool, StoreError> {
        // One writer commits in position order: what committed is readable.
        Ok(true)
    }
}
