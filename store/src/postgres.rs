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

/// This build's PostgreSQL migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "event_log", sql: include_str!("../migrations/postgres/0001_event_log.sql") },
    Migration {
        version: 2,
        name: "append_function",
        sql: include_str!("../migrations/postgres/0002_append_function.sql"),
    },
    Migration {
        version: 3,
        name: "commit_records",
        sql: include_str!("../migrations/postgres/0003_commit_records.sql"),
    },
    Migration { version: 4, name: "generic_plans", sql: include_str!("../migrations/postgres/0004_generic_plans.sql") },
];
/// Advisory lock held while migrating ("ORLG" and 1).
const MIGRATION_LOCK_KEY: i64 = 0x4F52_4C47_0000_0001;
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
/// How long a bulk load waits for the log's tables before it gives up.
pub const BULK_LOCK_TIMEOUT_MS: u64 = 10_000;

/// The event log's indexes besides its positions (migration 1), dropped and built again
/// around a bulk load: how to drop it, how to build it.
const BULK_INDEXES: [(&str, &str); 4] = [
    (
        "ALTER TABLE orderlog_events DROP CONSTRAINT orderlog_events_event_id_key",
        "ALTER TABLE orderlog_events ADD CONSTRAINT orderlog_events_event_id_key UNIQUE (event_id)",
    ),
    (
        "ALTER TABLE orderlog_events DROP CONSTRAINT orderlog_events_stream_id_version_key",
        "ALTER TABLE orderlog_events ADD CONSTRAINT orderlog_events_stream_id_version_key UNIQUE (stream_id, version)",
    ),
    (
        "DROP INDEX orderlog_events_commit_order",
        "CREATE INDEX orderlog_events_commit_order ON orderlog_events (tx_id, position)",
    ),
    (
        "DROP INDEX orderlog_events_by_command",
        "CREATE INDEX orderlog_events_by_command ON orderlog_events USING hash (command_id)",
    ),
];

/// JSON text sent as a `jsonb` value (binary format: version 1, then the text).
#[derive(Debug)]
struct JsonbText<'a>(&'a str);

impl tokio_postgres::types::ToSql for JsonbText<'_> {
    fn to_sql(
        &self,
        _ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&[1]);
        out.extend_from_slice(self.0.as_bytes());
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        *ty == tokio_postgres::types::Type::JSONB
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Adds the commit record of a bulk load's group of events (first position, count, digest)
/// to `records`; empties the group.
fn bulk_record(group: &mut crate::hash::CommitDigest, records: &mut (Vec<i64>, Vec<i64>, Vec<String>)) {
    records.0.push(group.first() as i64);
    records.1.push(group.events() as i64);
    records.2.push(std::mem::take(group).finish());
}

/// Least pause between two NOTIFYs this process sends.
pub const NOTIFY_INTERVAL_MS: u64 = 50;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    pub config: tokio_postgres::Config,
    pub pool_max_size: usize,
    pub pool_timeout: Duration,
    /// `orderlog_append` calls in flight at once.
    pub append_calls_max: usize,
}

impl PostgresOptions {
    /// Parses a `postgres://` or `postgresql://` URL. The query parameters `pool_max_size`,
    /// `pool_timeout_ms` and `append_calls_max` are orderlog's; the others go to the driver
    /// (`connect_timeout` in seconds, `application_name`, …).
    pub fn from_url(url: &str) -> Result<PostgresOptions, StoreError> {
        let bad = |detail: String| StoreError::Config(detail);
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut pool_max_size = POOL_MAX_SIZE_DEFAULT;
        let mut pool_timeout = Duration::from_millis(POOL_TIMEOUT_MS_DEFAULT);
        let mut append_calls_max = APPEND_CALLS_MAX_DEFAULT;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "pool_max_size" => {
                    pool_max_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1_000).contains(n))
                        .ok_or_else(|| bad(format!("pool_max_size: '{value}' is not a number from 1 to 1000")))?;
                }
                "pool_timeout_ms" => {
                    let ms: u64 = value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(format!("pool_timeout_ms: '{value}' is not a positive number")))?;
                    pool_timeout = Duration::from_millis(ms);
                }
                "append_calls_max" => {
                    append_calls_max = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| bad(format!("append_calls_max: '{value}' is not a number from 1 to 256")))?;
                }
                _ => rest.push(pair),
            }
        }
        let driver_url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        let mut config: tokio_postgres::Config =
            driver_url.parse().map_err(|e| bad(format!("not a PostgreSQL URL ({e}): {}", redact(url))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS_DEFAULT));
        }
        if config.get_application_name().is_none() {
            config.application_name("orderlog");
        }
        if config.get_options().is_none() {
            // orderlog's statements are small and every one has an index. Compiling one with
            // JIT (when a generic plan's estimate crosses jit_above_cost) costs tens of
            // milliseconds, and a generic plan cached while the log was small could pick a
            // sequential scan and keep it as the log grows: no JIT, no sequential scans.
            config.options("-c jit=off -c enable_seqscan=off");
        }
        Ok(PostgresOptions { config, pool_max_size, pool_timeout, append_calls_max })
    }

    /// The server and database, for messages: never the password.
    pub fn target(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("");
        let db = self.config.get_dbname().unwrap_or(user);
        format!("PostgreSQL database '{db}' at {host}:{port} as user '{user}'")
    }
}

/// A URL with its password replaced, for messages; anything else unchanged.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// What a database error says, with its detail and hint.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_string();
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(describe(&e))
}

/// Fault injection for tests of concurrent readers and crashes: what an append does after
/// writing its rows and before it commits.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppendFault {
    /// Hold the transaction open this long (server-side `pg_sleep`) before committing.
    pub hold_before_commit: Option<Duration>,
    /// Roll back instead of committing.
    pub roll_back: bool,
}

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

    /// An append with a fault injected before commit; see [`AppendFault`]. For tests.
    pub async fn append_with_fault(
        &self,
        appends: Vec<StreamAppend>,
        fault: AppendFault,
    ) -> Result<AppendOutcome, StoreError> {
        validate(&appends)?;
        let mut attempt = 0;
        loop {
            match self.try_append(&appends, fault, attempt > 0).await {
                Ok(outcome) => {
                    if outcome.last_position.is_some() && !outcome.duplicate {
                        self.announce();
                    }
                    return Ok(outcome);
                }
                Err(Attempt::Stale(detail)) => {
                    if attempt >= STALE_RETRY_MAX {
                        return Err(StoreError::Backend(format!(
                            "the streams kept moving under this append: {detail}"
                        )));
                    }
                    attempt += 1;
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
    }

    /// One try. Optimistic first: plan on the cached (or freshly read) stream heads and hand
    /// the append to the batcher, whose `orderlog_append` call checks them under the stream
    /// locks. When a head had moved (`locked`), or to inject a fault, the heads are read in
    /// a transaction that holds the locks first, so the call cannot be refused for them.
    async fn try_append(
        &self,
        appends: &[StreamAppend],
        fault: AppendFault,
        locked: bool,
    ) -> Result<AppendOutcome, Attempt> {
        if !locked && fault.hold_before_commit.is_none() && !fault.roll_back {
            let heads = match self.cached_heads(appends) {
                Some(heads) => heads,
                None => {
                    let client = self.client().await?;
                    self.read_heads(&client, appends, true).await?
                }
            };
            let mut write = match planned(appends, heads) {
                Ok(write) => write,
                Err(Planned::Repeat(outcome)) => return Ok(outcome),
                Err(Planned::Conflict(e)) => return self.replan(appends, e).await,
                Err(Planned::Failed(e)) => return Err(e.into()),
            };
            let item = BatchItem::new(appends, &mut write);
            let reply = self.batcher().submit(item).await;
            return self.settle_reply(appends, write, reply).await;
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let mut lock_keys: Vec<i64> = appends.iter().map(|a| stream_lock_key(&a.stream_id)).collect();
        lock_keys.sort_unstable();
        lock_keys.dedup();
        tx.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k", &[&lock_keys]).await.map_err(pg)?;
        let heads = self.read_heads(&tx, appends, false).await?;
        let mut write = match planned(appends, heads) {
            Ok(write) => write,
            Err(Planned::Repeat(outcome)) => return Ok(outcome),
            Err(Planned::Conflict(e)) => {
                drop(tx);
                return self.replan(appends, e).await;
            }
            Err(Planned::Failed(e)) => return Err(e.into()),
        };
        let item = BatchItem::new(appends, &mut write);
        let reply = match call_batch(&tx, &[&item]).await {
            Ok(mut replies) => replies.pop().expect("one reply per item"),
            Err(e) => ItemReply::Failed(describe(&e)),
        };
        if matches!(reply, ItemReply::Written(_)) {
            if let Some(hold) = fault.hold_before_commit {
                tx.execute("SELECT pg_sleep($1)", &[&hold.as_secs_f64()]).await.map_err(pg)?;
            }
            if fault.roll_back {
                tx.rollback().await.map_err(pg)?;
                return Err(StoreError::Backend("rolled back by fault injection".into()).into());
            }
            tx.commit().await.map_err(pg)?;
        } else {
            drop(tx);
        }
        self.settle_reply(appends, write, reply).await
    }

    /// What the database said of one append.
    async fn settle_reply(
        &self,
        appends: &[StreamAppend],
        mut write: Write,
        reply: ItemReply,
    ) -> Result<AppendOutcome, Attempt> {
        match reply {
            ItemReply::Written(events) => {
                write.events = events;
                self.remember(write.heads.iter().map(|(s, h)| (s.as_str(), h.version, h.hash.as_str())));
                Ok(write.outcome())
            }
            // A stream is not at the head this append planned on.
            ItemReply::Conflict { stream_id, version, hash } => {
                self.remember([(stream_id.as_str(), version, hash.as_str())]);
                let expected = appends.iter().find(|a| a.stream_id == stream_id).map(|a| a.expected);
                match expected {
                    // A stale cached head; the next try plans on the new one.
                    Some(expected) if expected.allows(version) => {
                        Err(Attempt::Stale(format!("stream '{stream_id}' had moved on from the cached head")))
                    }
                    Some(expected) => {
                        let conflict = StoreError::WrongExpectedVersion { stream_id, expected, actual: version };
                        self.replan(appends, conflict).await
                    }
                    None => {
                        Err(StoreError::Backend(format!("orderlog_append named unknown stream '{stream_id}'")).into())
                    }
                }
            }
            // An event id is stored already: a repeat of an earlier append, or an error.
            ItemReply::Duplicate => {
                let duplicate = StoreError::DuplicateEvent { event_id: Uuid::nil(), detail: "already".into() };
                self.replan(appends, duplicate).await
            }
            ItemReply::Failed(detail) => Err(StoreError::Backend(detail).into()),
        }
    }

    /// Plans again on fresh heads and every stored event id of the append: an idempotent
    /// repeat gives the first run's outcome, anything else the precise error.
    async fn replan(&self, appends: &[StreamAppend], otherwise: StoreError) -> Result<AppendOutcome, Attempt> {
        let Some(first) = appends.iter().find_map(|a| a.events.first()) else { return Err(otherwise.into()) };
        let client = self.client().await?;
        let event_ids: Vec<Uuid> = appends.iter().flat_map(|a| a.events.iter().map(|e| e.event_id)).collect();
        let known = client
            .prepare_cached(
                "SELECT event_id, position, stream_id, version FROM orderlog_events WHERE event_id = ANY($1)",
            )
            .await
            .map_err(pg)?;
        let found = client.query(&known, &[&event_ids]).await.map_err(pg)?;
        if found.is_empty() {
            return match otherwise {
                StoreError::DuplicateEvent { .. } => Err(Attempt::Stale("an event id was stored, then not".into())),
                other => Err(other.into()),
            };
        }
        if !found.iter().any(|r| r.get::<_, Uuid>(0) == first.event_id) {
            let (id, stream, version): (Uuid, String, i64) = (found[0].get(0), found[0].get(2), found[0].get(3));
            return Err(StoreError::DuplicateEvent {
                event_id: id,
                detail: format!("in stream '{stream}' at version {version}"),
            }
            .into());
        }
        let events = found
            .iter()
            .map(|r| {
                let location = EventLocation {
                    position: r.get::<_, i64>(1) as u64,
                    stream_id: r.get(2),
                    version: r.get::<_, i64>(3) as u64,
                };
                (r.get::<_, Uuid>(0), location)
            })
            .collect();
        let heads = self.read_heads(&client, appends, false).await?;
        match plan(&mut Prefetched { heads, events }, appends)? {
            Plan::Repeat(outcome) => Ok(outcome),
            Plan::Write(_) => Err(Attempt::Stale("the append's events were partly stored".into())),
        }
    }

    /// Every stream's head from what is known without asking the database (new streams,
    /// cached heads at the expected version), or `None`.
    fn cached_heads(&self, appends: &[StreamAppend]) -> Option<HashMap<String, (u64, String)>> {
        let cache = self.heads.lock().expect("head cache lock");
        appends
            .iter()
            .map(|append| match (append.expected, cache.get(&append.stream_id)) {
                (ExpectedVersion::NoStream | ExpectedVersion::Exact(0), _) => {
                    Some((append.stream_id.clone(), (0, GENESIS.to_string())))
                }
                (ExpectedVersion::Exact(v), Some((cv, hash))) if *cv == v => {
                    Some((append.stream_id.clone(), (v, hash.clone())))
                }
                _ => None,
            })
            .collect()
    }

    /// The head (version, hash) of every stream of the append: for a new stream known, with
    /// `cached` from the cache when it holds the expected version, else read.
    async fn read_heads(
        &self,
        client: &impl GenericClient,
        appends: &[StreamAppend],
        cached: bool,
    ) -> Result<HashMap<String, (u64, String)>, StoreError> {
        let mut heads = HashMap::with_capacity(appends.len());
        let mut missing = Vec::new();
        {
            let cache = self.heads.lock().expect("head cache lock");
            for append in appends {
                let known = match (append.expected, cache.get(&append.stream_id)) {
                    (ExpectedVersion::NoStream | ExpectedVersion::Exact(0), _) => Some((0, GENESIS.to_string())),
                    (ExpectedVersion::Exact(v), Some((cv, hash))) if cached && *cv == v => Some((v, hash.clone())),
                    _ => None,
                };
                match known {
                    Some(head) => {
                        heads.insert(append.stream_id.clone(), head);
                    }
                    None => missing.push(append.stream_id.as_str()),
                }
            }
        }
        if !missing.is_empty() {
            let stmt = client
                .prepare_cached(
                    "SELECT s, h.version, h.hash FROM unnest($1::text[]) AS s
                     LEFT JOIN LATERAL (SELECT version, hash FROM orderlog_events
                                        WHERE stream_id = s ORDER BY version DESC LIMIT 1) h ON true",
                )
                .await
                .map_err(pg)?;
            let rows = client.query(&stmt, &[&missing]).await.map_err(pg)?;
            for row in &rows {
                let version: Option<i64> = row.get(1);
                let hash: Option<String> = row.get(2);
                heads.insert(row.get(0), (version.unwrap_or(0) as u64, hash.unwrap_or_else(|| GENESIS.to_string())));
            }
            self.remember(heads.iter().filter(|(_, (v, _))| *v > 0).map(|(s, (v, h))| (s.as_str(), *v, h.as_str())));
        }
        Ok(heads)
    }

    /// The batcher, started on first use.
    fn batcher(&self) -> &Batcher {
        self.batcher.get_or_init(|| {
            let (batcher, task) = Batcher::start(self.pool.clone(), self.options.append_calls_max);
            self.tasks.lock().expect("task lock").push(task);
            batcher
        })
    }

    /// Records stream heads seen, keeping the newer of two; the cache is emptied when full.
    fn remember<'a>(&self, heads: impl IntoIterator<Item = (&'a str, u64, &'a str)>) {
        let mut cache = self.heads.lock().expect("head cache lock");
        for (stream, version, hash) in heads {
            if cache.len() >= HEAD_CACHE_MAX && !cache.contains_key(stream) {
                cache.clear();
            }
            match cache.get_mut(stream) {
                Some(entry) if entry.0 >= version => {}
                Some(entry) => *entry = (version, hash.to_string()),
                None => {
                    cache.insert(stream.to_string(), (version, hash.to_string()));
                }
            }
        }
    }

    /// Wakes waiting readers: this process's at once, other processes' through a NOTIFY
    /// sent outside the append (a NOTIFY inside it would serialize every commit on the
    /// server's notification queue lock), at most every `NOTIFY_INTERVAL_MS`.
    fn announce(&self) {
        self.notified.send_modify(|n| *n += 1);
        self.notify_request.notify_one();
        if self.notifier_started.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let pool = self.pool.clone();
        let request = Arc::clone(&self.notify_request);
        let task = tokio::spawn(async move {
            loop {
                request.notified().await;
                if let Ok(client) = pool.get().await {
                    if let Err(e) = client.batch_execute(&format!("NOTIFY {NOTIFY_CHANNEL}")).await {
                        tracing::warn!(error = %describe(&e), "NOTIFY failed; other processes' readers poll");
                    }
                }
                tokio::time::sleep(Duration::from_millis(NOTIFY_INTERVAL_MS)).await;
            }
        });
        self.tasks.lock().expect("task lock").push(task);
    }

    /// Starts the LISTEN connection once; without it, waiting readers poll.
    async fn ensure_listener(&self) {
        self.listener
            .get_or_init(|| async {
                match tokio_postgres::connect(&options_string(&self.options), NoTls).await {
                    Ok((client, mut connection)) => {
                        let notified = self.notified.clone();
                        let task = tokio::spawn(async move {
                            let listen_sql = format!("LISTEN {NOTIFY_CHANNEL}");
                            let listen = client.batch_execute(&listen_sql);
                            let mut listen = std::pin::pin!(listen);
                            let mut listening = false;
                            loop {
                                let message = std::future::poll_fn(|cx| {
                                    if !listening {
                                        if let std::task::Poll::Ready(r) = listen.as_mut().poll(cx) {
                                            listening = true;
                                            if let Err(e) = r {
                                                tracing::warn!(error = %e, "LISTEN failed; waiting readers poll");
                                            }
                                        }
                                    }
                                    connection.poll_message(cx)
                                })
                                .await;
                                match message {
                                    Some(Ok(AsyncMessage::Notification(_))) => notified.send_modify(|n| *n += 1),
                                    Some(Ok(_)) => {}
                                    Some(Err(e)) => {
                                        tracing::warn!(error = %e, "LISTEN connection lost; waiting readers poll");
                                        break;
                                    }
                                    None => break,
                                }
                            }
                        });
                        self.tasks.lock().expect("task lock").push(task);
                    }
                    Err(e) => tracing::warn!(error = %describe(&e), "cannot LISTEN; waiting readers poll"),
                }
            })
            .await;
    }
}

/// `tokio_postgres::connect` takes a string; rebuild one from the parsed config.
fn options_string(options: &PostgresOptions) -> String {
    let c = &options.config;
    let mut parts = Vec::new();
    for host in c.get_hosts() {
        match host {
            tokio_postgres::config::Host::Tcp(h) => parts.push(format!("host='{h}'")),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => parts.push(format!("host='{}'", p.display())),
        }
    }
    if let Some(port) = c.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = c.get_user() {
        parts.push(format!("user='{user}'"));
    }
    if let Some(password) = c.get_password() {
        parts.push(format!("password='{}'", String::from_utf8_lossy(password).replace('\'', "\\'")));
    }
    if let Some(db) = c.get_dbname() {
        parts.push(format!("dbname='{db}'"));
    }
    parts.push("application_name='orderlog-listener'".into());
    parts.join(" ")
}

fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        deadpool_postgres::PoolError::Timeout(_) => "timed out waiting for a connection".into(),
        other => other.to_string(),
    }
}

/// What planning on given heads came to, short of a write.
enum Planned {
    Repeat(AppendOutcome),
    /// A version that no longer holds; maybe still an idempotent repeat.
    Conflict(StoreError),
    Failed(StoreError),
}

/// Plans the append on `heads`. Stored event ids are not looked up: `orderlog_append`
/// refuses them, and the caller then plans again with them.
fn planned(appends: &[StreamAppend], heads: HashMap<String, (u64, String)>) -> Result<Write, Planned> {
    match plan(&mut Prefetched { heads, events: HashMap::new() }, appends) {
        Ok(Plan::Write(write)) => Ok(write),
        Ok(Plan::Repeat(outcome)) => Err(Planned::Repeat(outcome)),
        Err(e) if e.is_conflict() => Err(Planned::Conflict(e)),
        Err(e) => Err(Planned::Failed(e)),
    }
}

/// One append as the batcher sends it: the head each stream was planned on, and the
/// planned events (positions to be filled in).
struct BatchItem {
    streams: Vec<(String, u64, String)>,
    events: Vec<RecordedEvent>,
}

impl BatchItem {
    fn new(appends: &[StreamAppend], write: &mut Write) -> BatchItem {
        let streams = appends
            .iter()
            .map(|a| {
                let (version, hash) = write.planned_on(&a.stream_id);
                (a.stream_id.clone(), version, hash.to_string())
            })
            .collect();
        BatchItem { streams, events: std::mem::take(&mut write.events) }
    }
}

/// What `orderlog_append` did with one append.
enum ItemReply {
    /// Written: the events with their positions and commit order.
    Written(Vec<RecordedEvent>),
    /// A stream was not at the planned head; this is its actual head.
    Conflict { stream_id: String, version: u64, hash: String },
    /// An event id of the append is stored already.
    Duplicate,
    /// The call failed (connection lost, server error).
    Failed(String),
}

/// Appends waiting for a batch, at most; callers wait beyond that.
pub const BATCH_QUEUE_MAX: usize = 4_096;
/// Appends in one `orderlog_append` call, at most.
pub const BATCH_APPENDS_MAX: usize = 64;
/// `orderlog_append` calls in flight at once, unless the URL's `append_calls_max` says
/// otherwise. Appends that arrive while all are busy wait and go together in the next call.
/// Two calls measured fastest here once the function's plans were generic (BENCHMARKS.md):
/// one call's commit waits for its WAL flush while the next runs; more split the batches
/// too thin. A second call also keeps appends moving while one waits on a stream lock held
/// by another process.
pub const APPEND_CALLS_MAX_DEFAULT: usize = 2;

type Submission = (BatchItem, oneshot::Sender<ItemReply>);

/// Gathers concurrent appends into batches: one call and one commit for many appends,
/// as the server's group commit does for transactions, but without a round trip and a
/// commit per append. Each append of a batch is still checked and written on its own.
struct Batcher {
    queue: mpsc::Sender<Submission>,
    slots: Arc<tokio::sync::Semaphore>,
    pool: Pool,
}

impl Batcher {
    fn start(pool: Pool, calls_max: usize) -> (Batcher, tokio::task::JoinHandle<()>) {
        let (queue, mut pending) = mpsc::channel::<Submission>(BATCH_QUEUE_MAX);
        let slots = Arc::new(tokio::sync::Semaphore::new(calls_max.max(1)));
        let batcher = Batcher { queue, slots: Arc::clone(&slots), pool: pool.clone() };
        let task = tokio::spawn(async move {
            // Appends that touch a stream already in the batch being formed wait for the
            // next one, first in line.
            let mut deferred: std::collections::VecDeque<Submission> = std::collections::VecDeque::new();
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
                let first = match deferred.pop_front() {
                    Some(first) => first,
                    None => match pending.recv().await {
                        Some(first) => first,
                        None => return,
                    },
                };
                // A call that just finished woke its appenders, and those that append again
                // are about to submit: one yield lets them in before this batch is cut, so
                // the next call takes them together instead of one call for the first and
                // the rest left waiting for a slot (16 writers: 0.69 → 0.85 of the raw
                // commit rate, BENCHMARKS.md).
                tokio::task::yield_now().await;
                let mut streams: std::collections::HashSet<String> =
                    first.0.streams.iter().map(|(s, _, _)| s.clone()).collect();
                let mut batch = vec![first];
                let mut waiting = std::mem::take(&mut deferred);
                while batch.len() < BATCH_APPENDS_MAX {
                    let next = match waiting.pop_front() {
                        Some(next) => next,
                        None => match pending.try_recv() {
                            Ok(next) => next,
                            Err(_) => break,
                        },
                    };
                    if next.0.streams.iter().any(|(s, _, _)| streams.contains(s)) {
                        deferred.push_back(next);
                    } else {
                        streams.extend(next.0.streams.iter().map(|(s, _, _)| s.clone()));
                        batch.push(next);
                    }
                }
                deferred.extend(waiting);
                let pool = pool.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let (items, replies): (Vec<BatchItem>, Vec<oneshot::Sender<ItemReply>>) = batch.into_iter().unzip();
                    let results = match pool.get().await {
                        Ok(client) => {
                            let refs: Vec<&BatchItem> = items.iter().collect();
                            call_batch(&client, &refs).await.map_err(|e| describe(&e))
                        }
                        Err(e) => Err(pool_error(&e)),
                    };
                    match results {
                        Ok(results) => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(result);
                            }
                        }
                        Err(detail) => {
                            for reply in replies {
                                let _ = reply.send(ItemReply::Failed(detail.clone()));
                            }
                        }
                    }
                });
            }
        });
        (batcher, task)
    }

    async fn submit(&self, item: BatchItem) -> ItemReply {
        // Nothing waiting and a call free: no batch to join, so go straight to the database
        // and save the hand-offs.
        if self.queue.capacity() == self.queue.max_capacity() {
            if let Ok(_slot) = Arc::clone(&self.slots).try_acquire_owned() {
                return match self.pool.get().await {
                    Ok(client) => match call_batch(&client, &[&item]).await {
                        Ok(mut replies) => replies.pop().expect("one reply per item"),
                        Err(e) => ItemReply::Failed(describe(&e)),
                    },
                    Err(e) => ItemReply::Failed(pool_error(&e)),
                };
            }
        }
        let (reply, answer) = oneshot::channel();
        if self.queue.send((item, reply)).await.is_err() {
            return ItemReply::Failed("the append batcher stopped".into());
        }
        answer.await.unwrap_or_else(|_| ItemReply::Failed("the append batcher dropped an append".into()))
    }
}

/// One call of `orderlog_append` for a batch of appends; a reply per item, in order.
async fn call_batch(
    client: &impl GenericClient,
    items: &[&BatchItem],
) -> Result<Vec<ItemReply>, tokio_postgres::Error> {
    let mut lock_keys: Vec<i64> =
        items.iter().flat_map(|item| item.streams.iter().map(|(s, _, _)| stream_lock_key(s))).collect();
    lock_keys.sort_unstable();
    lock_keys.dedup();
    let (mut s_append, mut s_stream, mut s_version, mut s_hash) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut e_append, mut e_stream, mut e_version, mut e_id, mut e_type, mut e_schema) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut e_payload, mut e_metadata, mut e_command, mut e_time, mut e_hash) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, item) in (1i32..).zip(items) {
        for (stream, version, hash) in &item.streams {
            s_append.push(index);
            s_stream.push(stream.as_str());
            s_version.push(*version as i64);
            s_hash.push(hash.as_str());
        }
        for e in &item.events {
            e_append.push(index);
            e_stream.push(e.stream_id.as_str());
            e_version.push(e.version as i64);
            e_id.push(e.event_id);
            e_type.push(e.event_type.as_str());
            e_schema.push(e.schema_version as i32);
            e_payload.push(e.payload.as_str());
            e_metadata.push(serde_json::to_string(&e.metadata).expect("metadata serializes"));
            e_command.push(e.metadata.command_id.as_str());
            e_time.push(e.recorded_at);
            e_hash.push(e.hash.as_str());
        }
    }
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 16] = [
        &lock_keys,
        &s_append,
        &s_stream,
        &s_version,
        &s_hash,
        &e_append,
        &e_stream,
        &e_version,
        &e_id,
        &e_type,
        &e_schema,
        &e_payload,
        &e_metadata,
        &e_command,
        &e_time,
        &e_hash,
    ];
    let stmt = client
        .prepare_cached(
            "SELECT append_index, outcome, out_stream, out_version, out_hash, out_event, out_position, out_tx_id
             FROM orderlog_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .await?;
    let rows = client.query(&stmt, &params).await?;
    let mut placed: Vec<HashMap<Uuid, (u64, u64)>> = items.iter().map(|_| HashMap::new()).collect();
    let mut replies: Vec<Option<ItemReply>> = items.iter().map(|_| None).collect();
    let owner: HashMap<Uuid, usize> =
        items.iter().enumerate().flat_map(|(i, item)| item.events.iter().map(move |e| (e.event_id, i))).collect();
    for row in &rows {
        match row.get::<_, &str>(1) {
            "ok" => {
                if let Some(event_id) = row.get::<_, Option<Uuid>>(5) {
                    let tx_id: String = row.get(7);
                    let index = owner[&event_id];
                    placed[index].insert(event_id, (row.get::<_, i64>(6) as u64, tx_id.parse().unwrap_or(0)));
                }
            }
            "conflict" => {
                let index = row.get::<_, i32>(0) as usize - 1;
                replies[index] = Some(ItemReply::Conflict {
                    stream_id: row.get(2),
                    version: row.get::<_, i64>(3) as u64,
                    hash: row.get(4),
                })
            }
            _ => replies[row.get::<_, i32>(0) as usize - 1] = Some(ItemReply::Duplicate),
        }
    }
    Ok(items
        .iter()
        .zip(replies)
        .zip(placed)
        .map(|((item, reply), placed)| {
            reply.unwrap_or_else(|| {
                let mut events = item.events.clone();
                for event in &mut events {
                    let (position, commit) = placed[&event.event_id];
                    event.position = position;
                    event.commit = commit;
                }
                ItemReply::Written(events)
            })
        })
        .collect())
}

/// Why one attempt at an append ended without an outcome.
enum Attempt {
    /// The heads it planned on moved (a stale cache, a concurrent first write): plan again.
    Stale(String),
    Failed(StoreError),
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Self {
        Attempt::Failed(e)
    }
}

/// The advisory lock that guards one stream: the first 8 bytes of the SHA-256 of its id.
///
/// Streams are locked with transaction-scoped advisory locks, not `SELECT … FOR UPDATE` on
/// their rows, because a row lock gives the transaction its id at once: an append that
/// locks stream A, then waits for stream B, would hold an older transaction id than the
/// append it waited for, and its event in B would sort before that append's earlier event
/// in B in commit order. Advisory locks take no transaction id; the id comes with the
/// first insert, after every lock is held, so each stream's versions follow commit order.
fn stream_lock_key(stream_id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(stream_id.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

struct Prefetched {
    heads: HashMap<String, (u64, String)>,
    events: HashMap<Uuid, EventLocation>,
}

impl AppendLookup for Prefetched {
    fn find_event(&mut self, event_id: &Uuid) -> Result<Option<EventLocation>, StoreError> {
        Ok(self.events.get(event_id).cloned())
    }

    fn stream_head(&mut self, stream_id: &str) -> Result<Option<StreamHead>, StoreError> {
        Ok(self.heads.get(stream_id).map(|(version, hash)| StreamHead { version: *version, hash: hash.clone() }))
    }
}

/// Applies the missing migrations under an advisory lock, in one transaction; refuses a
/// database of another application, a newer schema, or a changed migration.
async fn migrate(client: &mut deadpool_postgres::Client, target: &str) -> Result<Vec<u32>, StoreError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY]).await.map_err(pg)?;
    let ours: bool =
        tx.query_one("SELECT to_regclass('orderlog_migrations') IS NOT NULL", &[]).await.map_err(pg)?.get(0);
    if ours {
        let found: i32 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM orderlog_migrations", &[]).await.map_err(pg)?.get(0);
        let supported = MIGRATIONS.last().map_or(0, |m| m.version);
        if found as u32 > supported {
            return Err(StoreError::SchemaTooNew { path: target.to_string(), found: found as u32, supported });
        }
    } else {
        let others: Vec<String> = tx
            .query(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 LIMIT 5",
                &[],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !others.is_empty() {
            return Err(StoreError::NotOrderlog {
                path: target.to_string(),
                detail: format!(
                    "it holds tables of another application ({}) and no orderlog schema; give orderlog an empty database of its own",
                    others.join(", ")
                ),
            });
        }
        tx.batch_execute(
            "CREATE TABLE orderlog_migrations (
                version    INTEGER PRIMARY KEY,
                name       TEXT NOT NULL,
                checksum   TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg)?;
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let current = m.checksum();
        let existing = tx
            .query_opt("SELECT checksum FROM orderlog_migrations WHERE version = $1", &[&(m.version as i32)])
            .await
            .map_err(pg)?
            .map(|r| r.get::<_, String>(0));
        match existing {
            Some(sum) if sum == current => {}
            Some(sum) => {
                return Err(StoreError::MigrationChanged {
                    version: m.version,
                    name: m.name.to_string(),
                    applied: sum,
                    current,
                })
            }
            None => {
                tx.batch_execute(m.sql).await.map_err(|e| {
                    StoreError::Backend(format!("migration {} ({}): {}", m.version, m.name, describe(&e)))
                })?;
                tx.execute(
                    "INSERT INTO orderlog_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&(m.version as i32), &m.name, &current],
                )
                .await
                .map_err(pg)?;
                applied.push(m.version);
            }
        }
    }
    tx.commit().await.map_err(pg)?;
    Ok(applied)
}

/// The columns of an event. The transaction id goes out as text under another name: an
/// output column named `tx_id` would be what `ORDER BY tx_id` sorts by, as text.
const SELECT_EVENT: &str =
    "SELECT position, tx_id::text AS commit_text, stream_id, version, event_id, event_type, schema_version,
                                   payload, metadata::text, recorded_at, hash FROM orderlog_events";

/// Rows below the oldest running transaction, after the cursor, in commit order.
const AFTER_CURSOR: &str = "(tx_id, position) > ($1::text::xid8, $2::int8)
                            AND tx_id < pg_snapshot_xmin(pg_current_snapshot())";

/// A commit record from `commit_order::text, first_position, events, digest`.
fn commit_from_row(r: &Row) -> Result<CommitRecord, StoreError> {
    let commit: &str = r.get(0);
    Ok(CommitRecord {
        commit: commit.parse().map_err(|e| StoreError::Backend(format!("commit order '{commit}': {e}")))?,
        first_position: r.get::<_, i64>(1) as u64,
        events: r.get::<_, i64>(2) as u64,
        digest: r.get(3),
    })
}

fn event_from_row(row: &Row) -> Result<RecordedEvent, StoreError> {
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

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendOutcome, StoreError> {
        self.append_with_fault(appends, AppendFault::default()).await
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
                &[&after.commit.to_string(), &(after.position as i64), &i64::from(limit.min(READ_EVENTS_MAX))],
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
                &[&after.commit.to_string(), &(after.position as i64), &i64::from(limit.min(READ_EVENTS_MAX))],
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

    async fn bulk_load(&self, events: crate::BulkEvents) -> Result<u64, StoreError> {
        use tokio_postgres::binary_copy::BinaryCopyInWriter;
        use tokio_postgres::types::Type;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Nobody else writes (or reads) the log until the load commits: the positions are
        // the load's own, and the indexes are dropped and built again around it.
        // A session holding the log in an open transaction would block the load for as long
        // as it stays open: wait a bounded time, then say so.
        tx.batch_execute(&format!("SET LOCAL lock_timeout = {BULK_LOCK_TIMEOUT_MS}")).await.map_err(pg)?;
        tx.batch_execute("LOCK TABLE orderlog_events, orderlog_commits IN ACCESS EXCLUSIVE MODE").await.map_err(
            |e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                    StoreError::LoadRefused(format!(
                        "the event log is in use: another session has held it in an open transaction for over {} s; \
                     end that transaction (or stop the processes using this database) and import again",
                        BULK_LOCK_TIMEOUT_MS / 1000
                    ))
                } else {
                    pg(e)
                }
            },
        )?;
        tx.batch_execute("SET LOCAL lock_timeout TO DEFAULT").await.map_err(pg)?;
        let occupied: bool =
            tx.query_one("SELECT EXISTS (SELECT 1 FROM orderlog_events)", &[]).await.map_err(pg)?.get(0);
        if occupied {
            return Err(StoreError::LoadRefused("the store is not empty".into()));
        }
        // Into an empty table the rows are copied in (binary COPY) and each index is built
        // once, sorted, at the end, instead of inserting into four trees per row.
        for (drop, _) in BULK_INDEXES {
            tx.batch_execute(drop).await.map_err(pg)?;
        }
        let sink = tx
            .copy_in(
                "COPY orderlog_events (position, stream_id, version, event_id, event_type, schema_version, payload,
                                       metadata, command_id, recorded_at, hash) FROM STDIN (FORMAT binary)",
            )
            .await
            .map_err(pg)?;
        let types = [
            Type::INT8,
            Type::TEXT,
            Type::INT8,
            Type::UUID,
            Type::TEXT,
            Type::INT4,
            Type::TEXT,
            Type::JSONB,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TEXT,
        ];
        let started = std::time::Instant::now();
        let writer = BinaryCopyInWriter::new(sink, &types);
        tokio::pin!(writer);
        // The commit records, as columns: first positions, counts, digests.
        let mut records: (Vec<i64>, Vec<i64>, Vec<String>) = Default::default();
        let mut group = crate::hash::CommitDigest::default();
        let mut position = 0u64;
        let copy_error =
            |e: tokio_postgres::Error| StoreError::LoadRefused(format!("the events cannot be stored: {e}"));
        for chunk in events {
            for load in chunk.map_err(StoreError::LoadRefused)?.iter() {
                let e = &load.event;
                position += 1;
                writer
                    .as_mut()
                    .write(&[
                        &(position as i64),
                        &e.stream_id,
                        &(e.version as i64),
                        &e.event_id,
                        &e.event_type,
                        &(e.schema_version as i32),
                        &e.payload,
                        &JsonbText(&load.metadata),
                        &e.metadata.command_id,
                        &e.recorded_at,
                        &e.hash,
                    ])
                    .await
                    .map_err(copy_error)?;
                group.push(position, &e.hash);
                if group.events() >= crate::BULK_RECORD_EVENTS {
                    bulk_record(&mut group, &mut records);
                }
            }
        }
        if group.events() > 0 {
            bulk_record(&mut group, &mut records);
        }
        writer.as_mut().finish().await.map_err(copy_error)?;
        let rows = started.elapsed();
        for (_, create) in BULK_INDEXES {
            tx.batch_execute(create)
                .await
                .map_err(|e| StoreError::LoadRefused(format!("the events cannot be indexed: {e}")))?;
        }
        let indexed = started.elapsed();
        if position > 0 {
            // Appends after the load number on from its last position.
            tx.execute(
                "SELECT setval('orderlog_events_position_seq', GREATEST($1, last_value)) FROM orderlog_events_position_seq",
                &[&(position as i64)],
            )
            .await
            .map_err(pg)?;
        }
        let (firsts, counts, digests) = records;
        tx.execute(
            "INSERT INTO orderlog_commits (commit_order, first_position, events, digest)
             SELECT pg_current_xact_id(), f, c, d FROM unnest($1::INT8[], $2::INT8[], $3::TEXT[]) AS u(f, c, d)",
            &[&firsts, &counts, &digests],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::debug!(events = position, ?rows, indexes = ?(indexed - rows), commit = ?(started.elapsed() - indexed), "bulk load");
        Ok(position)
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
                .query_one(&stmt, &[&after.commit.to_string(), &(after.position as i64)])
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

/// Databases for tests: each test gets a fresh one, dropped when the test passes and kept
/// (and named on stderr) when it fails.
pub mod testing {
    use super::*;

    /// The server tests use: `ORDERLOG_TEST_POSTGRES` or the local default.
    pub fn server_url() -> String {
        std::env::var("ORDERLOG_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// A fresh, empty database.
    pub struct TestDatabase {
        pub name: String,
        pub url: String,
        admin_url: String,
    }

    impl TestDatabase {
        pub async fn create() -> TestDatabase {
            let admin_url = server_url();
            let name = format!("orderlog_test_{}", Uuid::new_v4().simple());
            let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
                .await
                .unwrap_or_else(|e| panic!("tests need PostgreSQL at {}: {}", redact(&admin_url), describe(&e)));
            tokio::spawn(connection);
            client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
            let base = admin_url.split_once('?').map_or(admin_url.as_str(), |(b, _)| b);
            let url = match base.rfind('/') {
                Some(slash) if slash > base.find("://").map_or(0, |i| i + 2) => format!("{}/{name}", &base[..slash]),
                _ => format!("{base}/{name}"),
            };
            TestDatabase { name, url, admin_url }
        }

        /// The database's URL with extra query parameters (`pool_max_size=40`).
        pub fn url_with(&self, query: &str) -> String {
            format!("{}?{query}", self.url)
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("test failed: keeping database {} for inspection", self.name);
                return;
            }
            let admin_url = self.admin_url.clone();
            let name = self.name.clone();
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&admin_url, NoTls).await?;
                    tokio::spawn(connection);
                    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop test database {}", self.name);
            }
        }
    }
}
