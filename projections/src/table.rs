//! Read models kept as rows in the database of the log, updated exactly once per event.
//!
//! A [`TableModel`] names the rows each event touches (by key) and folds an event into a
//! row, purely. A [`Runner`] reads the log from the model's checkpoint in bounded batches,
//! loads the rows the batch touches, folds, and hands the changed rows and the new
//! checkpoint to a [`RowStore`], which writes both in one transaction — and only if the
//! checkpoint is still the one the batch started from, so a second runner of the same
//! model, or a crash anywhere, can neither apply an event twice nor skip one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use orderlog_domain::codec::DomainEvent;
use orderlog_store::{EventStore, LogCursor, RecordedEvent, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Events a runner reads and folds per transaction, unless told otherwise.
pub const BATCH_EVENTS_MAX_DEFAULT: u32 = 1_000;

/// A read model as rows.
pub trait TableModel: Send + Sync + 'static {
    /// Stable name: the table is `rm_{NAME}`, the checkpoint row is named after it.
    const NAME: &'static str;
    /// Raised when `evolve` changes; a stored model of another version is refused until rebuilt.
    const VERSION: u32;
    type Row: Serialize + DeserializeOwned + Default + Clone + PartialEq + Debug + Send + Sync;

    /// Whether the model may care about `event`, judged before decoding it (by stream or
    /// type); events it does not want are skipped without being decoded.
    fn wants(_event: &RecordedEvent) -> bool {
        true
    }

    /// The keys of the rows `event` changes (none for events the model ignores).
    fn keys(event: &RecordedEvent, decoded: &DomainEvent) -> Vec<String>;

    /// The row after `event`. Pure.
    fn evolve(row: Self::Row, key: &str, event: &RecordedEvent, decoded: &DomainEvent) -> Self::Row;
}

/// Where a model stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub cursor: LogCursor,
    pub version: u32,
    /// Events folded so far.
    pub events: u64,
    /// Why the model stopped, if it did.
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(
        "projection '{projection}' stopped at position {position}: event type '{event_type}' cannot be read: {detail}"
    )]
    Unreadable { projection: &'static str, position: u64, event_type: String, detail: String },
    #[error("projection '{projection}' is stored at version {stored}, this build folds version {current}; rebuild it")]
    VersionMismatch { projection: &'static str, stored: u32, current: u32 },
    #[error("projection '{projection}' moved on while this batch was folded (another runner?); nothing was written")]
    CheckpointMoved { projection: &'static str },
    #[error("projection '{projection}': {source}")]
    Store { projection: &'static str, source: StoreError },
    #[error("projection '{projection}': read model storage: {detail}")]
    Rows { projection: &'static str, detail: String },
    #[error("projection '{projection}' has stopped: {reason}")]
    Stopped { projection: &'static str, reason: String },
}

/// Storage of a model's rows and checkpoint.
#[async_trait]
pub trait RowStore: Send + Sync {
    /// Creates the model's table and checkpoint row if absent.
    async fn ensure(&self, model: &'static str, version: u32) -> Result<(), String>;
    async fn checkpoint(&self, model: &'static str) -> Result<Checkpoint, String>;
    /// The stored rows (as JSON) of these keys; absent keys are left out.
    async fn load(&self, model: &'static str, keys: Vec<String>) -> Result<BTreeMap<String, String>, String>;
    /// In one transaction: if the checkpoint is still at `from`, writes the rows (JSON by
    /// key) and moves the checkpoint to `to`, adding `events`. Returns false, writing
    /// nothing, if the checkpoint had moved.
    async fn commit(
        &self,
        model: &'static str,
        from: LogCursor,
        to: LogCursor,
        events: u64,
        rows: Vec<(String, String)>,
    ) -> Result<bool, String>;
    /// Records why the model stopped (outside any batch).
    async fn record_error(&self, model: &'static str, error: &str) -> Result<(), String>;
}

/// Runs one model over the log.
pub struct Runner<M: TableModel> {
    log: Arc<dyn EventStore>,
    rows: Arc<dyn RowStore>,
    batch_events_max: u32,
    _model: std::marker::PhantomData<M>,
}

impl<M: TableModel> Runner<M> {
    pub fn new(log: Arc<dyn EventStore>, rows: Arc<dyn RowStore>) -> Runner<M> {
        Runner { log, rows, batch_events_max: BATCH_EVENTS_MAX_DEFAULT, _model: std::marker::PhantomData }
    }

    pub fn with_batch_events_max(mut self, batch_events_max: u32) -> Runner<M> {
        self.batch_events_max = batch_events_max.max(1);
        self
    }

    fn rows_error(detail: String) -> RunError {
        RunError::Rows { projection: M::NAME, detail }
    }

    /// Creates the model's table and checkpoint if absent.
    pub async fn ensure(&self) -> Result<(), RunError> {
        self.rows.ensure(M::NAME, M::VERSION).await.map_err(Self::rows_error)
    }

    /// The model's checkpoint.
    pub async fn checkpoint(&self) -> Result<Checkpoint, RunError> {
        self.rows.checkpoint(M::NAME).await.map_err(Self::rows_error)
    }

    /// Records in the checkpoint why the model stopped (best effort: the storage may be
    /// what failed).
    pub async fn record_failure(&self, error: &RunError) {
        if let Err(e) = self.rows.record_error(M::NAME, &error.to_string()).await {
            tracing::warn!(projection = M::NAME, error = %e, "could not record why the projection stopped");
        }
    }

    /// Folds batches until the log has nothing more to read; returns the checkpoint.
    pub async fn catch_up(&self) -> Result<Checkpoint, RunError> {
        self.ensure().await?;
        loop {
            if self.step().await? == 0 {
                return self.rows.checkpoint(M::NAME).await.map_err(Self::rows_error);
            }
        }
    }

    /// Folds one batch; returns how many events it folded (0: nothing to read).
    pub async fn step(&self) -> Result<usize, RunError> {
        let checkpoint = self.rows.checkpoint(M::NAME).await.map_err(Self::rows_error)?;
        if checkpoint.version != M::VERSION {
            return Err(RunError::VersionMismatch {
                projection: M::NAME,
                stored: checkpoint.version,
                current: M::VERSION,
            });
        }
        let mut batch = self
            .log
            .read_all(checkpoint.cursor, self.batch_events_max)
            .await
            .map_err(|source| RunError::Store { projection: M::NAME, source })?;
        let mut decoded = Vec::with_capacity(batch.len());
        for (i, event) in batch.iter().enumerate() {
            if !M::wants(event) {
                decoded.push(None);
                continue;
            }
            match DomainEvent::decode(&event.event_type, event.schema_version, &event.payload) {
                Ok(d) => decoded.push(Some(d)),
                // Fold what precedes it; the next step stops at it.
                Err(_) if i > 0 => break,
                Err(e) => {
                    let error = RunError::Unreadable {
                        projection: M::NAME,
                        position: event.position,
                        event_type: event.event_type.clone(),
                        detail: e.to_string(),
                    };
                    self.rows.record_error(M::NAME, &error.to_string()).await.map_err(Self::rows_error)?;
                    return Err(error);
                }
            }
        }
        batch.truncate(decoded.len());
        let Some(last) = batch.last() else { return Ok(0) };
        let to = LogCursor::after(last);
        let touched: Vec<Vec<String>> =
            batch.iter().zip(&decoded).map(|(e, d)| d.as_ref().map_or_else(Vec::new, |d| M::keys(e, d))).collect();
        let keys: BTreeSet<&String> = touched.iter().flatten().collect();
        let stored = self.rows.load(M::NAME, keys.into_iter().cloned().collect()).await.map_err(Self::rows_error)?;
        let mut rows: BTreeMap<String, M::Row> = BTreeMap::new();
        for (key, json) in stored {
            let row = serde_json::from_str(&json)
                .map_err(|e| Self::rows_error(format!("row '{key}' does not match this build's model: {e}")))?;
            rows.insert(key, row);
        }
        for ((event, d), keys) in batch.iter().zip(&decoded).zip(&touched) {
            let Some(d) = d else { continue };
            for key in keys {
                let row = rows.remove(key).unwrap_or_default();
                rows.insert(key.clone(), M::evolve(row, key, event, d));
            }
        }
        let rows: Vec<(String, String)> =
            rows.into_iter().map(|(key, row)| (key, serde_json::to_string(&row).expect("rows serialize"))).collect();
        let moved = !self
            .rows
            .commit(M::NAME, checkpoint.cursor, to, batch.len() as u64, rows)
            .await
            .map_err(Self::rows_error)?;
        if moved {
            return Err(RunError::CheckpointMoved { projection: M::NAME });
        }
        Ok(batch.len())
    }

    /// Whether the stored rows equal the fold of the whole log computed in memory (call it
    /// when the model has caught up).
    pub async fn verify(&self) -> Result<bool, RunError> {
        let expected = self.fold_in_memory().await?;
        let stored = self.rows.load(M::NAME, expected.keys().cloned().collect()).await.map_err(Self::rows_error)?;
        if stored.len() != expected.len() {
            return Ok(false);
        }
        Ok(expected.iter().all(|(key, row)| {
            stored
                .get(key)
                .and_then(|json| serde_json::from_str::<M::Row>(json).ok())
                .is_some_and(|stored| &stored == row)
        }))
    }

    /// Every row of the model, as the fold of the whole log computed in memory — what the
    /// stored rows must equal. For tests and verification.
    pub async fn fold_in_memory(&self) -> Result<BTreeMap<String, M::Row>, RunError> {
        let mut rows: BTreeMap<String, M::Row> = BTreeMap::new();
        let mut cursor = LogCursor::START;
        loop {
            let batch = self
                .log
                .read_all(cursor, self.batch_events_max)
                .await
                .map_err(|source| RunError::Store { projection: M::NAME, source })?;
            let Some(last) = batch.last() else { return Ok(rows) };
            cursor = LogCursor::after(last);
            for event in batch.iter().filter(|e| M::wants(e)) {
                let d = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload).map_err(|e| {
                    RunError::Unreadable {
                        projection: M::NAME,
                        position: event.position,
                        event_type: event.event_type.clone(),
                        detail: e.to_string(),
                    }
                })?;
                for key in M::keys(event, &d) {
                    let row = rows.remove(&key).unwrap_or_default();
                    let row = M::evolve(row, &key, event, &d);
                    rows.insert(key, row);
                }
            }
        }
    }
}
