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
mod bulk;
mod migrate;
mod reads;
mod tree;
mod writer;

use bulk::*;
use migrate::*;
use reads::*;
use writer::*;

pub use migrate::MIGRATIONS;

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
        // A position past any an event can have (SQLite's integers are i64) reads nothing.
        let after = i64::try_from(after.position).unwrap_or(i64::MAX);
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
                .query_map(
                    params![i64::try_from(after.position).unwrap_or(i64::MAX), limit.min(READ_EVENTS_MAX)],
                    |r| {
                        let first: u64 = r.get(0)?;
                        Ok(CommitRecord { commit: first, first_position: first, events: r.get(1)?, digest: r.get(2)? })
                    },
                )
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

#[async_trait]
impl crate::BulkLoad for SqliteStore {
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
}
