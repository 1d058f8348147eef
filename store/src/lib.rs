//! The orderlog event store: an append-only log of event envelopes, grouped in streams.
//!
//! [`EventStore`] is the one interface: an atomic append to one or more streams, each with
//! an [`ExpectedVersion`]; reading a stream from a version; reading the global log in order
//! from a cursor; waiting for events after a cursor; the head position. Backends:
//! [`MemoryStore`] (tests, simulations), [`SqliteStore`] (the embedded default, a file in
//! WAL mode) and [`PostgresStore`] (production: parallel appends, commit-order reads). [`conformance`] holds the test bodies that every backend must pass.
//!
//! The store knows events as envelopes ([`NewEvent`], [`RecordedEvent`]), never as domain
//! types. Each envelope carries an integrity hash chaining it to the previous event of its
//! stream ([`hash`]).

pub mod append;
#[cfg(feature = "testing")]
pub mod conformance;

/// Runs one test body (with one test attribute) against each backend named:
/// `each_backend! { #[tokio::test] fn body(Fixture) on [sqlite, postgres]; }` makes the
/// tests `body::sqlite` and `body::postgres`, each calling `body(Fixture::sqlite().await)`
/// (`Fixture::postgres().await`, …). With `Fixture::*` the body gets the constructor
/// itself, for a test that opens its backend more than once.
#[cfg(feature = "testing")]
#[macro_export]
macro_rules! each_backend {
    (#[$attr:meta] fn $test:ident($fixture:ident) on [$($backend:ident),+ $(,)?];) => {
        mod $test {
            $(
                #[$attr]
                async fn $backend() {
                    super::$test(super::$fixture::$backend().await).await;
                }
            )+
        }
    };
    (#[$attr:meta] fn $test:ident($fixture:ident::*) on [$($backend:ident),+ $(,)?];) => {
        mod $test {
            $(
                #[$attr]
                async fn $backend() {
                    super::$test(super::$fixture::$backend).await;
                }
            )+
        }
    };
}
pub mod hash;
#[cfg(feature = "testing")]
pub mod memory;
pub mod merkle;
pub mod migration;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[cfg(feature = "testing")]
pub use memory::MemoryStore;
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;

/// Most streams one append may touch.
pub const APPEND_STREAMS_MAX: usize = 1_024;
/// Most events one append may carry.
pub const APPEND_EVENTS_MAX: usize = 10_000;
/// Largest payload of one event, in bytes.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest stream id, in bytes.
pub const STREAM_ID_BYTES_MAX: usize = 256;
/// Most events one read returns; larger limits are cut to this.
pub const READ_EVENTS_MAX: u32 = 10_000;

/// Who did something, as part of which command and business flow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The principal that issued the command.
    pub actor: String,
    /// The command's idempotency key.
    pub command_id: String,
    /// A digest of the command, so that a reused command id with another command is caught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_hash: Option<String>,
    /// The business flow this event belongs to (a checkout, a return).
    pub correlation_id: String,
    /// The command or event that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

/// An event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// A JSON document, stored and returned byte for byte.
    pub payload: String,
    pub metadata: Metadata,
    /// When the event was recorded; kept to the microsecond (every backend truncates).
    pub recorded_at: DateTime<Utc>,
}

/// An event as stored, with its place in its stream and in the global log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Position in the global log: unique, and increasing within each stream and within
    /// each append. Gap-free on SQLite and in memory; a PostgreSQL sequence may skip
    /// numbers (a rolled-back append).
    pub position: u64,
    /// The order in which events became visible: the position on SQLite and in memory, the
    /// writing transaction's id on PostgreSQL, where transactions commit out of position
    /// order. The global log is read in `(commit, position)` order.
    pub commit: u64,
    pub stream_id: String,
    /// 1-based version within the stream.
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: String,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
    /// Hex SHA-256 chaining this event to the previous one of its stream.
    pub hash: String,
}

/// A reader's place in the global log: just after the event with this commit order and
/// position. Readers keep the cursor of the last event they read and pass it back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogCursor {
    pub commit: u64,
    pub position: u64,
}

impl LogCursor {
    /// Before the first event.
    pub const START: LogCursor = LogCursor { commit: 0, position: 0 };

    /// Just after `event`.
    pub fn after(event: &RecordedEvent) -> LogCursor {
        LogCursor { commit: event.commit, position: event.position }
    }
}

/// The version a stream must be at for an append to go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (0 means no stream).
    Exact(u64),
}

impl ExpectedVersion {
    pub fn allows(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(v) => v == current,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// What to append to one stream. No events means "only check the version": the stream's
/// state took part in the decision, so the append must fail if it moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// What one commit wrote: recorded in the same transaction as its events (one per append
/// on SQLite and in memory, one per transaction on PostgreSQL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// Where the commit sits in log order (the transaction id on PostgreSQL, the first
    /// position elsewhere).
    pub commit: u64,
    pub first_position: u64,
    pub events: u64,
    /// [`hash::commit_digest`] of its events.
    pub digest: String,
}

impl CommitRecord {
    /// The cursor just after this record, for [`EventStore::read_commits`].
    pub fn cursor(&self) -> LogCursor {
        LogCursor { commit: self.commit, position: self.first_position }
    }
}

/// A stream's version after an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamVersion {
    pub stream_id: String,
    pub version: u64,
}

/// The result of an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Every stream of the append, at its version afterwards.
    pub streams: Vec<StreamVersion>,
    /// Global positions of the first and last event appended; `None` if no events.
    pub first_position: Option<u64>,
    pub last_position: Option<u64>,
    /// True when every event was already in the log (an idempotent repeat): nothing new
    /// was appended, and the positions are those of the first append.
    pub duplicate: bool,
}

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("wrong expected version for stream '{stream_id}': expected {expected}, actual {}", describe_version(*.actual))]
    WrongExpectedVersion { stream_id: String, expected: ExpectedVersion, actual: u64 },
    #[error(
        "event {event_id} is already in the log {detail}; an append must repeat all of its events exactly or none"
    )]
    DuplicateEvent { event_id: Uuid, detail: String },
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    #[error("'{path}' is not an orderlog database: {detail}; it was left untouched")]
    NotOrderlog { path: String, detail: String },
    #[error("'{path}' has orderlog schema version {found}, newer than the {supported} this build knows; upgrade orderlog. The file was left untouched")]
    SchemaTooNew { path: String, found: u32, supported: u32 },
    #[error("migration {version} ({name}) differs from the one applied to this database (checksum {applied} applied, {current} in this build); applied migrations must never change")]
    MigrationChanged { version: u32, name: String, applied: String, current: String },
    #[error("invalid database configuration: {0}")]
    Config(String),
    #[error("cannot connect to {target}: {detail}")]
    Connect { target: String, detail: String },
    #[error("storage error: {0}")]
    Backend(String),
    #[error("the store is closed")]
    Closed,
    /// A bulk load was refused (its source failed, or the store is not empty); nothing was
    /// written.
    #[error("{0}")]
    LoadRefused(String),
}

/// One event of a bulk load, with the text forms the stores write (the caller computes them
/// anyway to check the event's hash, on a thread of its own).
#[derive(Clone, Debug)]
pub struct LoadEvent {
    pub event: RecordedEvent,
    /// `event.metadata` as JSON, as [`hash::event_hash`] serializes it.
    pub metadata: String,
    /// `event.recorded_at` as [`hash::format_time`] formats it.
    pub recorded_at: String,
}

impl LoadEvent {
    /// The event with its text forms computed here.
    pub fn new(event: RecordedEvent) -> LoadEvent {
        let metadata = serde_json::to_string(&event.metadata).expect("metadata serializes");
        let recorded_at = hash::format_time(&event.recorded_at);
        LoadEvent { event, metadata, recorded_at }
    }
}

/// Events for [`EventStore::bulk_load`], in log order, each with its hash, in chunks; an
/// `Err` item stops the load, which then writes nothing.
pub type BulkEvents = Box<dyn Iterator<Item = Result<LoadChunk, StoreError>> + Send>;

/// A chunk of a bulk load's events. Made with [`LoadChunk::returning`], a chunk that is
/// dropped goes back over that channel, so that the thread that allocated its events frees
/// them (and can fill the chunk again): freeing another thread's allocations costs the freeing thread, and the allocating
/// one again when it collects them (a third of an import's checking thread, measured).
#[derive(Debug, Default)]
pub struct LoadChunk {
    events: Vec<LoadEvent>,
    home: Option<std::sync::mpsc::Sender<Vec<LoadEvent>>>,
}

impl LoadChunk {
    /// A chunk that is sent to `home` when dropped (if `home` still listens).
    pub fn returning(events: Vec<LoadEvent>, home: std::sync::mpsc::Sender<Vec<LoadEvent>>) -> LoadChunk {
        LoadChunk { events, home: Some(home) }
    }

    /// The events, taken out of the chunk (which then goes home empty).
    pub fn take(&mut self) -> Vec<LoadEvent> {
        std::mem::take(&mut self.events)
    }
}

impl From<Vec<LoadEvent>> for LoadChunk {
    fn from(events: Vec<LoadEvent>) -> LoadChunk {
        LoadChunk { events, home: None }
    }
}

impl std::ops::Deref for LoadChunk {
    type Target = [LoadEvent];
    fn deref(&self) -> &[LoadEvent] {
        &self.events
    }
}

impl Drop for LoadChunk {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            let _ = home.send(std::mem::take(&mut self.events));
        }
    }
}

/// Events per commit record written by a bulk load.
pub const BULK_RECORD_EVENTS: u64 = 10_000;

fn describe_version(v: u64) -> String {
    if v == 0 {
        "no stream".to_string()
    } else {
        format!("version {v}")
    }
}

impl StoreError {
    /// True for a version conflict, which a caller may resolve by reloading and retrying.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::WrongExpectedVersion { .. })
    }
}

/// An append-only event log.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends to every stream of `appends` in one transaction: either every stream's
    /// expected version holds and all events are appended, or nothing is.
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendOutcome, StoreError>;

    /// Events of one stream with version ≥ `from_version`, in order, at most `limit`.
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// `read_stream` of several streams, each from its own version, at most `limit` events
    /// each: one answer per request, in the order asked. A backend may answer them all in
    /// one round trip (PostgreSQL does); this default reads them one by one.
    async fn read_streams(
        &self,
        requests: &[(String, u64)],
        limit: u32,
    ) -> Result<Vec<Vec<RecordedEvent>>, StoreError> {
        let mut pages = Vec::with_capacity(requests.len());
        for (stream_id, from_version) in requests {
            pages.push(self.read_stream(stream_id, *from_version, limit).await?);
        }
        Ok(pages)
    }

    /// Events of the global log after `after`, in `(commit, position)` order, at most
    /// `limit`. Only committed events, and never one that a later read could see before an
    /// event this read returned: a reader that passes back the cursor of the last event it
    /// got skips nothing and sees nothing twice.
    async fn read_all(&self, after: LogCursor, limit: u32) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The events that one command appended, in log order.
    async fn read_command(&self, command_id: &str) -> Result<Vec<RecordedEvent>, StoreError>;

    /// A stream's current version (0: no stream).
    async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError>;

    /// The highest position of a committed event (0: empty log).
    async fn head(&self) -> Result<u64, StoreError>;

    /// Where the committed event at `position` sits in log order (`None`: no such event,
    /// or not committed). A reader whose cursor is at or past it has read that event.
    async fn cursor_of(&self, position: u64) -> Result<Option<LogCursor>, StoreError>;

    /// Waits until `read_all(after, …)` has an event to return, or `timeout` ends; returns
    /// whether it has.
    async fn wait_for(&self, after: LogCursor, timeout: Duration) -> Result<bool, StoreError>;

    /// Waits until every event committed before this call can be read with `read_all`, or
    /// `timeout` ends; returns whether it can. Immediate on SQLite and in memory; on
    /// PostgreSQL it waits for every transaction that started before the call to end (in
    /// any database of the server), since until then a late commit could still land below
    /// a reader's cursor. Call it before reading "everything so far".
    async fn settle(&self, timeout: Duration) -> Result<bool, StoreError>;

    /// The commit records after `after` (`commit`, `first_position`), in log order, at most
    /// `limit`; only those of commits `read_all` can see.
    async fn read_commits(&self, after: LogCursor, limit: u32) -> Result<Vec<CommitRecord>, StoreError>;

    /// The record of the commit that wrote the event at `position` (`None`: no such event,
    /// or no record covers it).
    async fn commit_of(&self, position: u64) -> Result<Option<CommitRecord>, StoreError>;

    /// The first event at a position from `from` to `to` whose stored bytes differ from
    /// what its hash covers (the canonical text of its id, metadata and time) or whose
    /// indexed copies differ from the hashed values (the `command_id` column that drives
    /// idempotency), with what differs. A backend that stores only parsed values has none.
    async fn stored_form_fault(&self, from: u64, to: u64) -> Result<Option<(u64, String)>, StoreError> {
        let _ = (from, to);
        Ok(None)
    }

    /// The first stream whose recorded head (the version and hash appends check against)
    /// is not its last event, with what differs. A backend that derives heads from the
    /// events has none.
    async fn stream_head_fault(&self) -> Result<Option<(String, String)>, StoreError> {
        Ok(None)
    }
}

/// A leaf of the stored Merkle tree: its index, the event it stands for (where it sits in
/// log order) and its leaf hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeLeaf {
    pub index: u64,
    pub cursor: LogCursor,
    pub hash: merkle::Hash,
}

/// The Merkle tree over the log, stored beside it as the hashes of its perfect subtrees
/// (every one, each once), with the signed checkpoints of the log. The tree follows the log
/// (whoever extends it reads the events after its last leaf); it is what proofs are read
/// from, and what `verify --against` checks a rewritten log against to name where it first
/// differs.
#[async_trait]
pub trait TreeStore: EventStore {
    /// Leaves in the stored tree, and the log cursor after the last one.
    async fn tree_size(&self) -> Result<(u64, LogCursor), StoreError>;

    /// The events after `after` that the tree lacks, as `read_all` would return them (the
    /// same order, the same visibility), but only where each sits and its hash (hex), at
    /// most `limit`.
    async fn tree_pending(&self, after: LogCursor, limit: u32) -> Result<Vec<(LogCursor, String)>, StoreError> {
        let events = self.read_all(after, limit).await?;
        Ok(events.into_iter().map(|e| (LogCursor::after(&e), e.hash)).collect())
    }

    /// Adds `leaves` (indexes from `size` on) and the inner nodes they complete, in one
    /// transaction, if the tree still has `size` leaves; says whether it did (`false`:
    /// another process extended it first).
    async fn tree_extend(
        &self,
        size: u64,
        leaves: Vec<TreeLeaf>,
        nodes: Vec<(merkle::NodeKey, merkle::Hash)>,
    ) -> Result<bool, StoreError>;

    /// The stored hashes of `keys` (level 0: leaves), in order; `None` where absent.
    async fn tree_nodes(&self, keys: Vec<merkle::NodeKey>) -> Result<Vec<Option<merkle::Hash>>, StoreError>;

    /// The leaf of the event at `position`, if the tree has it.
    async fn tree_leaf_at(&self, position: u64) -> Result<Option<TreeLeaf>, StoreError>;

    /// The leaf with this index, if the tree has it.
    async fn tree_leaf(&self, index: u64) -> Result<Option<TreeLeaf>, StoreError>;

    /// The leaf of the event at `position`, with the stored rows of
    /// [`merkle::proof_rows`] (those present) when it is among the first `size` leaves:
    /// everything an inclusion proof at `size` reads. A server store answers in one round
    /// trip.
    async fn tree_proof_rows(
        &self,
        position: u64,
        size: u64,
    ) -> Result<Option<(TreeLeaf, std::collections::HashMap<merkle::NodeKey, merkle::Hash>)>, StoreError> {
        let Some(leaf) = self.tree_leaf_at(position).await? else { return Ok(None) };
        if leaf.index >= size {
            return Ok(Some((leaf, std::collections::HashMap::new())));
        }
        let keys = merkle::proof_rows(leaf.index, size);
        let found = self.tree_nodes(keys.clone()).await?;
        let rows = keys.into_iter().zip(found).filter_map(|(key, hash)| Some((key, hash?))).collect();
        Ok(Some((leaf, rows)))
    }

    /// Keeps a signed checkpoint (its JSON) of the log's first `size` events; a second one
    /// of the same size is ignored.
    async fn keep_checkpoint(&self, size: u64, json: String) -> Result<(), StoreError>;

    /// The kept checkpoint of `size` events, or the largest one when `None`.
    async fn kept_checkpoint(&self, size: Option<u64>) -> Result<Option<String>, StoreError>;
}

/// A store an export can be loaded into at once (`orderlog import`): apart from appends,
/// which decide each event's version and hash, this writes what it is given.
#[async_trait]
pub trait BulkLoad: EventStore {
    /// Loads `events` (already hashed and checked by the caller) into an empty log, in
    /// order, in one transaction: every event or none. Positions are the store's own;
    /// versions and hashes are kept as given. Returns how many were loaded.
    async fn bulk_load(&self, events: BulkEvents) -> Result<u64, StoreError>;
}

/// What differs between an event's stored text forms and the canonical forms its hash
/// covers, if anything: `metadata` as stored (SQLite: its text; PostgreSQL: its JSON) and
/// the indexed `command_id` column.
pub fn stored_metadata_fault(metadata: &str, command_id: &str, exact_text: bool) -> Option<String> {
    let parsed: Metadata = match serde_json::from_str(metadata) {
        Ok(m) => m,
        Err(e) => return Some(format!("its metadata cannot be read: {e}")),
    };
    let canonical = serde_json::to_string(&parsed).expect("metadata serializes");
    let same = if exact_text {
        canonical == metadata
    } else {
        serde_json::from_str::<serde_json::Value>(metadata).ok() == serde_json::to_value(&parsed).ok()
    };
    if !same {
        return Some(format!(
            "its stored metadata {metadata} is not what its hash covers ({canonical}): a field was added or re-encoded"
        ));
    }
    if parsed.command_id != command_id {
        return Some(format!(
            "its indexed command id '{command_id}' is not the command id '{}' its hash covers",
            parsed.command_id
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_event(n: u64) -> LoadEvent {
        LoadEvent::new(RecordedEvent {
            position: n,
            commit: n,
            stream_id: "stock-tshirt@berlin".into(),
            version: n,
            event_id: Uuid::new_v4(),
            event_type: "StockReceived".into(),
            schema_version: 1,
            payload: "{}".into(),
            metadata: Metadata::default(),
            recorded_at: chrono::Utc::now(),
            hash: hash::GENESIS.into(),
        })
    }

    #[test]
    fn a_returning_chunk_goes_home_with_its_events_when_dropped() {
        let (home, spent) = std::sync::mpsc::channel();
        let chunk = LoadChunk::returning(vec![load_event(1), load_event(2)], home.clone());
        assert_eq!(chunk.len(), 2);
        assert!(spent.try_recv().is_err(), "nothing goes home while the chunk is in use");
        drop(chunk);
        assert_eq!(spent.try_recv().unwrap().iter().map(|e| e.event.version).collect::<Vec<_>>(), [1, 2]);

        // Taken out, the events stay with the taker; the chunk goes home empty.
        let mut chunk = LoadChunk::returning(vec![load_event(3)], home);
        let taken = chunk.take();
        drop(chunk);
        assert_eq!(taken.len(), 1);
        assert!(spent.try_recv().unwrap().is_empty());

        // A chunk made from a Vec has no home; dropping it, or one whose home stopped
        // listening, is fine.
        drop(LoadChunk::from(vec![load_event(4)]));
        let (home, spent) = std::sync::mpsc::channel();
        drop(spent);
        drop(LoadChunk::returning(vec![load_event(5)], home));
    }
}
