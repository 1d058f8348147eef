//! Read models: folds of the event log.
//!
//! A [`Projection`] is a name, a version and a pure fold over event envelopes;
//! [`catch_up`] feeds it the log from a checkpoint in bounded batches, in memory
//! ([`inventory::InventoryLevels`]). [`table::TableModel`] is a read model kept as rows in
//! the log's database, which a [`table::Runner`] updates exactly once per event through a
//! [`table::RowStore`] ([`sqlite::SqliteRows`], [`postgres::PostgresRows`]).

pub mod cache;
pub mod deadlines;
pub mod inventory;
pub mod orders;
pub mod payments;
pub mod postgres;
pub mod projector;
pub mod queries;
pub mod reports;
pub mod sqlite;
pub mod table;

use orderlog_domain::codec::DomainEvent;
use orderlog_store::{EventStore, LogCursor, RecordedEvent, StoreError};

/// A read model built by folding the log.
pub trait Projection {
    /// Stable name, used for checkpoints and errors.
    const NAME: &'static str;
    /// Raised when the fold changes, so the read model is rebuilt.
    const VERSION: u32;

    /// Folds one event. Pure: no IO, and the same events always give the same model.
    fn apply(&mut self, event: &RecordedEvent, decoded: &DomainEvent);
}

/// Why a read model's database did not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowsError {
    /// The database failed or refused (a connection, a statement, a lock wait).
    #[error("{0}")]
    Database(String),
    /// A stored row, checkpoint or value is not what this build writes.
    #[error("{0}")]
    Corrupt(String),
    /// What was asked does not fit (an unknown model, a swap of a model not rebuilt).
    #[error("{0}")]
    Refused(String),
}

impl RowsError {
    pub(crate) fn database(e: impl std::fmt::Display) -> RowsError {
        RowsError::Database(e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    #[error(
        "projection '{projection}' stopped at position {position}: event type '{event_type}' cannot be read: {detail}"
    )]
    Unreadable { projection: &'static str, position: u64, event_type: String, detail: String },
    #[error("projection '{projection}': {source}")]
    Store { projection: &'static str, source: StoreError },
}

/// Folds every event after `after` into `projection`, reading at most `batch_events_max`
/// events at a time; returns the cursor of the last event folded (the new checkpoint).
pub async fn catch_up<P: Projection>(
    store: &dyn EventStore,
    projection: &mut P,
    after: LogCursor,
    batch_events_max: u32,
) -> Result<LogCursor, ProjectionError> {
    let mut checkpoint = after;
    loop {
        let batch = store
            .read_all(checkpoint, batch_events_max.max(1))
            .await
            .map_err(|source| ProjectionError::Store { projection: P::NAME, source })?;
        let Some(last) = batch.last() else { return Ok(checkpoint) };
        let last = LogCursor::after(last);
        for event in &batch {
            let decoded =
                DomainEvent::decode(&event.event_type, event.schema_version, &event.payload).map_err(|e| {
                    ProjectionError::Unreadable {
                        projection: P::NAME,
                        position: event.position,
                        event_type: event.event_type.clone(),
                        detail: e.to_string(),
                    }
                })?;
            projection.apply(event, &decoded);
        }
        checkpoint = last;
    }
}
