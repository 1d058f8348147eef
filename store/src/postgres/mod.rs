//! The production store: PostgreSQL through a `deadpool-postgres` pool.
//!
//! Appends run in parallel: an append locks the streams it touches (transaction-scoped
//! advisory locks, taken in one sorted order so two appends never deadlock) and nothing
//! else — no global lock. Each event
//! carries the id of the transaction that wrote it (`xid8`). Transactions commit out of
//! position order, so readers take the log in `(tx_id, position)` order and only below the
//! oldest transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`), in one
//! statement: an event that commits late is below no cursor a reader has passed, and an
//! event of a transaction still running (or rolled back) is never seen. LISTEN/NOTIFY wakes
//! waiting readers; correctness never depends on a notification arriving.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot, watch, OnceCell};
use tokio_postgres::{AsyncMessage, NoTls, Row};
use uuid::Uuid;

use crate::append::{plan, validate, AppendLookup, EventLocation, Plan, StreamHead, Write};
use crate::hash::GENESIS;
pub use crate::migration::Migration;
use crate::{
    AppendOutcome, CommitRecord, EventStore, ExpectedVersion, LogCursor, RecordedEvent, StoreError, StreamAppend,
    READ_EVENTS_MAX,
};

mod append;
mod batcher;
mod bulk;
mod migrate;
mod notify;
mod options;
mod reads;
#[cfg(feature = "testing")]
pub mod testing;
mod tree;
#[cfg(feature = "testing")]
pub use testing::AppendFault;

#[cfg(feature = "testing")]
use append::Locked;
use batcher::*;
use migrate::migrate;
use options::*;
use reads::*;

pub use batcher::{APPEND_CALLS_MAX_DEFAULT, BATCH_APPENDS_MAX, BATCH_QUEUE_MAX};
pub use bulk::BULK_LOCK_TIMEOUT_MS;
pub use migrate::MIGRATIONS;
pub use notify::NOTIFY_INTERVAL_MS;
pub use options::{redact, PostgresOptions};

/// The LISTEN/NOTIFY channel appends notify on commit.
const NOTIFY_CHANNEL: &str = "orderlog_events";
/// Connections in the pool, unless the URL's `pool_max_size` says otherwise.
pub const POOL_MAX_SIZE_DEFAULT: usize = 16;
/// How long a caller waits for a pooled connection, unless `pool_timeout_ms` says otherwise.
pub const POOL_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// How long connecting may take, unless the URL's `connect_timeout` (seconds) says otherwise.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// How often a waiting reader looks again when no notification came.
pub const WAIT_POLL_MS: u64 = 250;
/// How often `settle` looks whether the transactions it waits for have ended.
pub const SETTLE_POLL_MS: u64 = 10;
/// Times an append is planned again when a stream head it planned on had moved although
/// its expected version still allowed the append (`ExpectedVersion::Any`, or a stale
/// cached head), before it gives up.
pub const STALE_RETRY_MAX: u32 = 8;
/// Stream heads kept in the cache; it is emptied when it would grow past this.
pub const HEAD_CACHE_MAX: usize = 100_000;

/// The event log in a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    options: PostgresOptions,
    /// Bumped when this process appends or a NOTIFY arrives; waiting readers watch it.
    notified: watch::Sender<u64>,
    listener: OnceCell<()>,
    notify_request: Arc<tokio::sync::Notify>,
    notifier_started: std::sync::atomic::AtomicBool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The last known head (version, hash) of streams, to plan appends without a read.
    heads: Mutex<HashMap<String, (u64, String)>>,
    batcher: std::sync::OnceLock<Batcher>,
    applied: Vec<u32>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("task lock").drain(..) {
            task.abort();
        }
    }
}

impl PostgresStore {
    /// Connects and brings the schema up to date. A database that holds tables of another
    /// application, or an orderlog schema newer than this build, is refused unchanged.
    pub async fn connect(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let manager = Manager::from_config(
            options.config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_max_size)
            .wait_timeout(Some(options.pool_timeout))
            .create_timeout(Some(options.config.get_connect_timeout().copied().unwrap_or(options.pool_timeout)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let target = options.target();
        let mut client =
            pool.get().await.map_err(|e| StoreError::Connect { target: target.clone(), detail: pool_error(&e) })?;
        let applied = migrate(&mut client, &target).await?;
        drop(client);
        Ok(PostgresStore {
            pool,
            options,
            notified: watch::Sender::new(0),
            listener: OnceCell::new(),
            notify_request: Arc::new(tokio::sync::Notify::new()),
            notifier_started: std::sync::atomic::AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            heads: Mutex::new(HashMap::new()),
            batcher: std::sync::OnceLock::new(),
            applied,
        })
    }

    /// Parses `url` and connects.
    pub async fn connect_url(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect(PostgresOptions::from_url(url)?).await
    }

    /// Migrations this connect applied (empty when the schema was already current).
    pub fn applied_migrations(&self) -> &[u32] {
        &self.applied
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Connect { target: self.options.target(), detail: pool_error(&e) })
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendOutcome, StoreError> {
        self.append_planned(appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("{SELECT_EVENT} WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"))
            .await
            .map_err(pg)?;
        let limit = limit.min(READ_EVENTS_MAX);
        let rows = client
            .query(&stmt, &[&stream_id, &i64::try_from(from_version).unwrap_or(i64::MAX), &i64::from(limit)])
            .await
            .map_err(pg)?;
        let events: Vec<RecordedEvent> = rows.iter().map(event_from_row).collect::<Result<_, _>>()?;
        // A short page ends at the stream's head: the next append to it can plan without a read.
        if let Some(last) = events.last().filter(|_| events.len() < limit as usize) {
            self.remember([(stream_id, last.version, last.hash.as_str())]);
        }
        Ok(events)
    }

    async fn read_streams(
        &self,
        requests: &[(String, u64)],
        limit: u32,
    ) -> Result<Vec<Vec<RecordedEvent>>, StoreError> {
        if requests.len() < 2 {
            let mut pages = Vec::new();
            for (stream_id, from_version) in requests {
                pages.push(self.read_stream(stream_id, *from_version, limit).await?);
            }
            return Ok(pages);
        }
        let client = self.client().await?;
        // Each stream's page by the same index scan `read_stream` makes, all in one query.
        let stmt = client
            .prepare_cached(
                "SELECT e.position, e.commit_text, e.stream_id, e.version, e.event_id, e.event_type,
                        e.schema_version, e.payload, e.metadata, e.recorded_at, e.hash
                   FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS want(stream_id, from_version, n)
                   CROSS JOIN LATERAL (
                     SELECT position, tx_id::text AS commit_text, stream_id, version, event_id, event_type,
                            schema_version, payload, metadata::text AS metadata, recorded_at, hash
                       FROM orderlog_events
                      WHERE stream_id = want.stream_id AND version >= want.from_version
                      ORDER BY version LIMIT $3) e
                  ORDER BY want.n, e.version",
            )
            .await
            .map_err(pg)?;
        let limit = limit.min(READ_EVENTS_MAX);
        let streams: Vec<&str> = requests.iter().map(|(s, _)| s.as_str()).collect();
        let froms: Vec<i64> = requests.iter().map(|(_, v)| i64::try_from(*v).unwrap_or(i64::MAX)).collect();
        let rows = client.query(&stmt, &[&streams, &froms, &i64::from(limit)]).await.map_err(pg)?;
        let mut by_stream: std::collections::HashMap<String, Vec<RecordedEvent>> = std::collections::HashMap::new();
        for row in &rows {
            let event = event_from_row(row)?;
            by_stream.entry(event.stream_id.clone()).or_default().push(event);
        }
        let pages: Vec<Vec<RecordedEvent>> =
            requests.iter().map(|(s, _)| by_stream.get(s).cloned().unwrap_or_default()).collect();
        for page in &pages {
            if let Some(last) = page.last().filter(|_| page.len() < limit as usize) {
                self.remember([(last.stream_id.as_str(), last.version, last.hash.as_str())]);
            }
        }
        Ok(pages)
    }

    async fn read_all(&self, after: LogCursor, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "{SELECT_EVENT} WHERE {AFTER_CURSOR} ORDER BY orderlog_events.tx_id, orderlog_events.position LIMIT $3"
            ))
            .await
            .map_err(pg)?;
        let rows = client
            .query(
                &stmt,
                // A position past any an event can have reads nothing (a cast would wrap to a
                // negative one and read from the start).
                &[
                    &after.commit.to_string(),
                    &i64::try_from(after.position).unwrap_or(i64::MAX),
                    &i64::from(limit.min(READ_EVENTS_MAX)),
                ],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_commits(&self, after: LogCursor, limit: u32) -> Result<Vec<CommitRecord>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                // The output column is named apart from the table's: `ORDER BY commit_order`
                // would sort by the text (and "100000" < "99999").
                "SELECT c.commit_order::text AS commit_text, c.first_position, c.events, c.digest
                   FROM orderlog_commits c
                  WHERE (c.commit_order, c.first_position) > ($1::text::xid8, $2::int8)
                    AND c.commit_order < pg_snapshot_xmin(pg_current_snapshot())
                  ORDER BY c.commit_order, c.first_position LIMIT $3",
            )
            .await
            .map_err(pg)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &after.commit.to_string(),
                    &i64::try_from(after.position).unwrap_or(i64::MAX),
                    &i64::from(limit.min(READ_EVENTS_MAX)),
                ],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(commit_from_row).collect()
    }

    async fn stored_form_fault(&self, from: u64, to: u64) -> Result<Option<(u64, String)>, StoreError> {
        // Ids and times are typed columns (one form each); the metadata is JSONB, whose
        // keys and values must be exactly those of the hashed metadata.
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT position, metadata::text, command_id FROM orderlog_events
                  WHERE position >= $1 AND position <= $2 ORDER BY position",
                &[&(from as i64), &(to as i64)],
            )
            .await
            .map_err(pg)?;
        for row in rows {
            let (metadata, command_id): (String, String) = (row.get(1), row.get(2));
            if let Some(fault) = crate::stored_metadata_fault(&metadata, &command_id, false) {
                return Ok(Some((row.get::<_, i64>(0) as u64, fault)));
            }
        }
        Ok(None)
    }

    async fn commit_of(&self, position: u64) -> Result<Option<CommitRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT c.commit_order::text, c.first_position, c.events, c.digest
                   FROM orderlog_events e JOIN orderlog_commits c ON c.commit_order = e.tx_id
                  WHERE e.position = $1 AND c.first_position <= $1
                  ORDER BY c.first_position DESC LIMIT 1",
                &[&(position as i64)],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(commit_from_row).transpose()
    }

    async fn read_command(&self, command_id: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("{SELECT_EVENT} WHERE command_id = $1 ORDER BY position"))
            .await
            .map_err(pg)?;
        let rows = client.query(&stmt, &[&command_id]).await.map_err(pg)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM orderlog_events WHERE stream_id = $1")
            .await
            .map_err(pg)?;
        Ok(client.query_one(&stmt, &[&stream_id]).await.map_err(pg)?.get::<_, i64>(0) as u64)
    }

    async fn cursor_of(&self, position: u64) -> Result<Option<LogCursor>, StoreError> {
        let client = self.client().await?;
        let stmt =
            client.prepare_cached("SELECT tx_id::text FROM orderlog_events WHERE position = $1").await.map_err(pg)?;
        let row = client.query_opt(&stmt, &[&(position as i64)]).await.map_err(pg)?;
        Ok(row.and_then(|r| r.get::<_, String>(0).parse().ok()).map(|commit| LogCursor { commit, position }))
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client.query_one("SELECT COALESCE(MAX(position), 0) FROM orderlog_events", &[]).await.map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn wait_for(&self, after: LogCursor, timeout: Duration) -> Result<bool, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.ensure_listener().await;
        let mut rx = self.notified.subscribe();
        loop {
            rx.borrow_and_update();
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(&format!("SELECT EXISTS (SELECT 1 FROM orderlog_events WHERE {AFTER_CURSOR})"))
                .await
                .map_err(pg)?;
            let readable: bool = client
                .query_one(&stmt, &[&after.commit.to_string(), &i64::try_from(after.position).unwrap_or(i64::MAX)])
                .await
                .map_err(pg)?
                .get(0);
            drop(client);
            if readable {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            // A notification or the poll interval, whichever comes first: a transaction that
            // ends without appending (a rollback) moves the horizon without notifying.
            let poll = now + Duration::from_millis(WAIT_POLL_MS);
            let _ = tokio::time::timeout_at(poll.min(deadline), rx.changed()).await;
        }
    }

    async fn settle(&self, timeout: Duration) -> Result<bool, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let client = self.client().await?;
        // Every transaction that could still commit below a cursor has an id below this.
        let target: String =
            client.query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[]).await.map_err(pg)?.get(0);
        let check = client
            .prepare_cached("SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8")
            .await
            .map_err(pg)?;
        loop {
            if client.query_one(&check, &[&target]).await.map_err(pg)?.get::<_, bool>(0) {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
        }
    }
}

#[async_trait]
impl crate::BulkLoad for PostgresStore {
    async fn bulk_load(&self, events: crate::BulkEvents) -> Result<u64, StoreError> {
        self.load(events).await
    }
}
