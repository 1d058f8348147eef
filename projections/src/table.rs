//! Read models kept as rows in the database of the log, updated exactly once per event.
//!
//! A [`TableModel`] names the rows each event touches (by key) and folds an event into a
//! row, purely. A [`Runner`] reads the log from the model's checkpoint in bounded batches,
//! loads the rows the batch touches, folds, and hands the changed rows and the new
//! checkpoint to a [`RowStore`], which writes both in one transaction — and only if the
//! checkpoint is still the one the batch started from, so a second runner of the same
//! model, or a crash anywhere, can neither apply an event twice nor skip one.

use crate::RowsError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use orderlog_domain::codec::DomainEvent;
use orderlog_store::{EventStore, LogCursor, RecordedEvent, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The suffix of a model's rebuild beside the live model.
pub const REBUILD_SUFFIX: &str = "__rebuild";

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
    #[error("projection '{projection}': read model storage: {source}")]
    Rows { projection: &'static str, source: RowsError },
    #[error("projection '{projection}' has stopped: {reason}")]
    Stopped { projection: &'static str, reason: String },
}

/// Storage of a model's rows and checkpoint.
#[async_trait]
pub trait RowStore: Send + Sync {
    /// Creates the model's table and checkpoint row if absent.
    async fn ensure(&self, model: &'static str, version: u32) -> Result<(), RowsError>;
    async fn checkpoint(&self, model: &'static str) -> Result<Checkpoint, RowsError>;
    /// The stored rows (as JSON) of these keys; absent keys are left out.
    async fn load(&self, model: &'static str, keys: Vec<String>) -> Result<BTreeMap<String, String>, RowsError>;
    /// In one transaction: if the checkpoint is still at `from`, writes the rows (JSON by
    /// key) and moves the checkpoint to `to`, adding `events`. Returns false, writing
    /// nothing, if the checkpoint had moved.
    async fn write_batch(
        &self,
        model: &'static str,
        from: LogCursor,
        to: LogCursor,
        events: u64,
        rows: Vec<(String, String)>,
    ) -> Result<bool, RowsError>;
    /// Records why the model stopped (outside any batch).
    async fn record_error(&self, model: &'static str, error: &str) -> Result<(), RowsError>;
    /// In one transaction: `shadow`'s rows and checkpoint become `live`'s (the views show
    /// them), and `live`'s old rows and `shadow`'s table are gone — unless `live` is of the same
    /// version and further along the log than `shadow` (then nothing changes and the answer
    /// is false: fold `shadow` further and try again).
    async fn swap(&self, live: &'static str, shadow: &'static str) -> Result<bool, RowsError>;
    /// Drops a model's table and checkpoint (a rebuild of another version left behind).
    async fn discard(&self, model: &'static str) -> Result<(), RowsError>;
}

/// A folded batch, ready to be written.
struct Prepared<R> {
    to: LogCursor,
    events: u64,
    rows: Vec<(String, String)>,
    /// The same rows, unserialized.
    folded: BTreeMap<String, R>,
    /// Whether the batch read was cut short (before an event that cannot be read).
    cut: bool,
}

/// The next batch the read-ahead task sent (empty once it has stopped at the end).
async fn received<M: TableModel>(
    ahead: &mut tokio::sync::mpsc::Receiver<Result<Vec<RecordedEvent>, StoreError>>,
) -> Result<Vec<RecordedEvent>, RunError> {
    match ahead.recv().await {
        Some(batch) => batch.map_err(|source| RunError::Store { projection: M::NAME, source }),
        None => Ok(Vec::new()),
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one model over the log.
pub struct Runner<M: TableModel> {
    log: Arc<dyn EventStore>,
    rows: Arc<dyn RowStore>,
    /// Where the rows and checkpoint are stored: the model's name, or its rebuild's.
    name: &'static str,
    /// Where the model's rebuild is stored.
    shadow_name: &'static str,
    batch_events_max: u32,
    _model: std::marker::PhantomData<M>,
}

impl<M: TableModel> Runner<M> {
    pub fn new(log: Arc<dyn EventStore>, rows: Arc<dyn RowStore>) -> Runner<M> {
        let shadow_name: &'static str = Box::leak(format!("{}{REBUILD_SUFFIX}", M::NAME).into_boxed_str());
        Runner {
            log,
            rows,
            name: M::NAME,
            shadow_name,
            batch_events_max: BATCH_EVENTS_MAX_DEFAULT,
            _model: std::marker::PhantomData,
        }
    }

    /// The runner of the model's rebuild: its rows and checkpoint are stored beside the live
    /// model's (`rm_{NAME}__rebuild`) until [`Runner::rebuild`] swaps them in.
    pub fn shadow(log: Arc<dyn EventStore>, rows: Arc<dyn RowStore>) -> Runner<M> {
        let live = Runner::new(log, rows);
        Runner { name: live.shadow_name, ..live }
    }

    pub fn with_batch_events_max(mut self, batch_events_max: u32) -> Runner<M> {
        self.batch_events_max = batch_events_max.max(1);
        self
    }

    fn rows_error(source: RowsError) -> RunError {
        RunError::Rows { projection: M::NAME, source }
    }

    /// Creates the model's table and checkpoint if absent.
    pub async fn ensure(&self) -> Result<(), RunError> {
        self.rows.ensure(self.name, M::VERSION).await.map_err(Self::rows_error)
    }

    /// The model's checkpoint.
    pub async fn checkpoint(&self) -> Result<Checkpoint, RunError> {
        self.rows.checkpoint(self.name).await.map_err(Self::rows_error)
    }

    /// Records in the checkpoint why the model stopped (best effort: the storage may be
    /// what failed).
    pub async fn record_failure(&self, error: &RunError) {
        if let Err(e) = self.rows.record_error(self.name, &error.to_string()).await {
            tracing::warn!(projection = self.name, error = %e, "could not record why the projection stopped");
        }
    }

    /// Folds batches until the log has nothing more to read; returns the checkpoint.
    ///
    /// Three stages overlap: a task reads the log ahead (a batch or two), the next batch is
    /// folded while the previous one is written, and rows the previous batch changed are
    /// taken from memory rather than from storage, where they may not be committed yet.
    /// If a commit fails, nothing after it is written.
    pub async fn catch_up(&self) -> Result<Checkpoint, RunError> {
        self.ensure().await?;
        let checkpoint = self.current().await?;
        let (batches, mut ahead) = tokio::sync::mpsc::channel(2);
        let log = Arc::clone(&self.log);
        let batch_events_max = self.batch_events_max;
        let reader = tokio::spawn(async move {
            let mut from = checkpoint.cursor;
            loop {
                let batch = log.read_all(from, batch_events_max).await;
                let next = batch.as_ref().ok().and_then(|b| b.last().map(LogCursor::after));
                if batches.send(batch).await.is_err() {
                    return;
                }
                match next {
                    Some(next) => from = next,
                    None => return,
                }
            }
        });
        let stop_reader = AbortOnDrop(reader);
        let mut from = checkpoint.cursor;
        let Some(mut prepared) = self.prepare(received::<M>(&mut ahead).await?, &BTreeMap::new()).await? else {
            return self.rows.checkpoint(self.name).await.map_err(Self::rows_error);
        };
        loop {
            let to = prepared.to;
            if prepared.cut {
                // The read-ahead went on past the event the batch was cut before: step from here.
                drop(stop_reader);
                self.write(from, prepared).await?;
                while self.step().await? > 0 {}
                return self.rows.checkpoint(self.name).await.map_err(Self::rows_error);
            }
            let written = std::mem::take(&mut prepared.folded);
            let following = async {
                let batch = received::<M>(&mut ahead).await?;
                self.prepare(batch, &written).await
            };
            let (committed, following) = tokio::join!(self.write(from, prepared), following);
            committed?;
            from = to;
            match following? {
                Some(next) => prepared = next,
                None => return self.rows.checkpoint(self.name).await.map_err(Self::rows_error),
            }
        }
    }

    /// Rebuilds the model without taking it offline: a second copy is folded from the start
    /// of the log beside the live one (which keeps serving, and keeps being updated by its
    /// runners), caught up, and swapped in atomically once it has reached the live one; the
    /// old table is dropped in the same transaction. Interrupted, it resumes from the
    /// copy's checkpoint when run again; a copy of another version is discarded first.
    pub async fn rebuild(&self) -> Result<Checkpoint, RunError> {
        let shadow = Runner::<M> {
            log: Arc::clone(&self.log),
            rows: Arc::clone(&self.rows),
            name: self.shadow_name,
            shadow_name: self.shadow_name,
            batch_events_max: self.batch_events_max,
            _model: std::marker::PhantomData,
        };
        if let Ok(left) = self.rows.checkpoint(shadow.name).await {
            if left.version != M::VERSION {
                self.rows.discard(shadow.name).await.map_err(Self::rows_error)?;
            }
        }
        loop {
            shadow.catch_up().await?;
            if self.rows.swap(self.name, shadow.name).await.map_err(Self::rows_error)? {
                return self.rows.checkpoint(self.name).await.map_err(Self::rows_error);
            }
        }
    }

    /// Where a rebuild in progress stands (none: no rebuild under way).
    pub async fn rebuild_checkpoint(&self) -> Option<Checkpoint> {
        self.rows.checkpoint(self.shadow_name).await.ok()
    }

    /// Folds one batch; returns how many events it folded (0: nothing to read).
    pub async fn step(&self) -> Result<usize, RunError> {
        let checkpoint = self.current().await?;
        let batch = self.read(checkpoint.cursor).await?;
        let Some(prepared) = self.prepare(batch, &BTreeMap::new()).await? else { return Ok(0) };
        let events = prepared.events;
        self.write(checkpoint.cursor, prepared).await?;
        Ok(events as usize)
    }

    /// The checkpoint, refused if it was stored by another version of the model.
    async fn current(&self) -> Result<Checkpoint, RunError> {
        let checkpoint = self.rows.checkpoint(self.name).await.map_err(Self::rows_error)?;
        if checkpoint.version != M::VERSION {
            return Err(RunError::VersionMismatch {
                projection: self.name,
                stored: checkpoint.version,
                current: M::VERSION,
            });
        }
        Ok(checkpoint)
    }

    async fn read(&self, from: LogCursor) -> Result<Vec<RecordedEvent>, RunError> {
        self.log
            .read_all(from, self.batch_events_max)
            .await
            .map_err(|source| RunError::Store { projection: self.name, source })
    }

    /// Decodes and folds a batch into the rows it touches, serialized for writing; `None`
    /// for an empty batch. Rows come from `recent` (the rows of the batch before, which may
    /// still be being written) or else from storage. A batch is cut before an event that
    /// cannot be read; if that is the first, the model stops (the reason is recorded).
    async fn prepare(
        &self,
        mut batch: Vec<RecordedEvent>,
        recent: &BTreeMap<String, M::Row>,
    ) -> Result<Option<Prepared<M::Row>>, RunError> {
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
                        projection: self.name,
                        position: event.position,
                        event_type: event.event_type.clone(),
                        detail: e.to_string(),
                    };
                    self.rows.record_error(self.name, &error.to_string()).await.map_err(Self::rows_error)?;
                    return Err(error);
                }
            }
        }
        let cut = decoded.len() < batch.len();
        batch.truncate(decoded.len());
        let Some(last) = batch.last() else { return Ok(None) };
        let to = LogCursor::after(last);
        let touched: Vec<Vec<String>> =
            batch.iter().zip(&decoded).map(|(e, d)| d.as_ref().map_or_else(Vec::new, |d| M::keys(e, d))).collect();
        let keys: BTreeSet<&String> = touched.iter().flatten().collect();
        let mut rows: BTreeMap<String, M::Row> = BTreeMap::new();
        let mut absent = Vec::new();
        for key in keys {
            match recent.get(key) {
                Some(row) => drop(rows.insert(key.clone(), row.clone())),
                None => absent.push(key.clone()),
            }
        }
        let stored = self.rows.load(self.name, absent).await.map_err(Self::rows_error)?;
        for (key, json) in stored {
            let row = serde_json::from_str(&json).map_err(|e| {
                Self::rows_error(RowsError::Corrupt(format!("row '{key}' does not match this build's model: {e}")))
            })?;
            rows.insert(key, row);
        }
        for ((event, d), keys) in batch.iter().zip(&decoded).zip(&touched) {
            let Some(d) = d else { continue };
            for key in keys {
                let row = rows.remove(key).unwrap_or_default();
                rows.insert(key.clone(), M::evolve(row, key, event, d));
            }
        }
        let serialized: Vec<(String, String)> =
            rows.iter().map(|(key, row)| (key.clone(), serde_json::to_string(row).expect("rows serialize"))).collect();
        Ok(Some(Prepared { to, events: batch.len() as u64, rows: serialized, folded: rows, cut }))
    }

    /// Writes a prepared batch if the checkpoint is still at `from`.
    async fn write(&self, from: LogCursor, prepared: Prepared<M::Row>) -> Result<(), RunError> {
        let Prepared { to, events, rows, .. } = prepared;
        let committed = self.rows.write_batch(self.name, from, to, events, rows).await.map_err(Self::rows_error)?;
        if !committed {
            return Err(RunError::CheckpointMoved { projection: self.name });
        }
        Ok(())
    }

    /// Whether the stored rows equal the fold of the whole log computed in memory (call it
    /// when the model has caught up).
    pub async fn verify(&self) -> Result<bool, RunError> {
        let expected = self.fold_in_memory().await?;
        let stored = self.rows.load(self.name, expected.keys().cloned().collect()).await.map_err(Self::rows_error)?;
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
                .map_err(|source| RunError::Store { projection: self.name, source })?;
            let Some(last) = batch.last() else { return Ok(rows) };
            cursor = LogCursor::after(last);
            for event in batch.iter().filter(|e| M::wants(e)) {
                let d = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload).map_err(|e| {
                    RunError::Unreadable {
                        projection: self.name,
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
