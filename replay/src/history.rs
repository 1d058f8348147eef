//! Time travel: an aggregate's state at a version or a moment, with the events that led to
//! it and who did each and why; and every event of one business flow (a correlation id)
//! across streams, in log order.

use chrono::{DateTime, SecondsFormat, Utc};
use orderlog_domain::{AnyState, DomainEvent, StreamId};
use orderlog_store::{EventStore, LogCursor, RecordedEvent, READ_EVENTS_MAX};
use serde::Serialize;

use crate::ReplayError;

/// Which point of a stream's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Now: every event.
    Latest,
    /// After the first N events (version N).
    AtVersion(u64),
    /// After every event recorded at or before this time.
    AsOf(DateTime<Utc>),
}

/// One event, with its provenance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryEvent {
    pub position: u64,
    pub stream_id: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub recorded_at: String,
    /// Who: the principal that issued the command.
    pub actor: String,
    /// Why: the command, the business flow and what caused it.
    pub command_id: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub data: serde_json::Value,
}

impl HistoryEvent {
    fn of(e: &RecordedEvent) -> HistoryEvent {
        HistoryEvent {
            position: e.position,
            stream_id: e.stream_id.clone(),
            version: e.version,
            event_type: e.event_type.clone(),
            recorded_at: e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            actor: e.metadata.actor.clone(),
            command_id: e.metadata.command_id.clone(),
            correlation_id: e.metadata.correlation_id.clone(),
            causation_id: e.metadata.causation_id.clone(),
            data: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A stream's state at a point, and the events that made it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamHistory {
    pub stream_id: String,
    /// The version the state is at (0: before the first event).
    pub version: u64,
    /// The stream's version now.
    pub current_version: u64,
    pub state: serde_json::Value,
    pub events: Vec<HistoryEvent>,
}

/// The state of `stream_id` at `point` (folded by the domain's own decider), with the
/// events up to it.
pub async fn stream_history(
    store: &dyn EventStore,
    stream_id: &str,
    point: Point,
) -> Result<StreamHistory, ReplayError> {
    let kind = StreamId::kind_of(stream_id).ok_or_else(|| {
        ReplayError::Invalid(format!(
            "'{stream_id}' is not an aggregate's stream: streams are cart-…, order-…, stock-SKU@LOCATION, shipment-…"
        ))
    })?;
    let current_version = store.stream_version(stream_id).await?;
    if current_version == 0 {
        return Err(ReplayError::Invalid(format!("no stream '{stream_id}'")));
    }
    if let Point::AtVersion(n) = point {
        if n > current_version {
            return Err(ReplayError::Invalid(format!(
                "--at-version {n}: '{stream_id}' is at version {current_version}"
            )));
        }
    }
    let mut recorded = Vec::new();
    let mut from = 1;
    'read: loop {
        let batch = store.read_stream(stream_id, from, READ_EVENTS_MAX).await?;
        let Some(last) = batch.last() else { break };
        from = last.version + 1;
        for e in batch {
            let past = match point {
                Point::Latest => false,
                Point::AtVersion(n) => e.version > n,
                Point::AsOf(t) => e.recorded_at > t,
            };
            if past {
                break 'read;
            }
            recorded.push(e);
        }
    }
    let mut decoded = Vec::with_capacity(recorded.len());
    for e in &recorded {
        decoded.push(DomainEvent::decode(&e.event_type, e.schema_version, &e.payload).map_err(|err| {
            ReplayError::Invalid(format!("the event at position {} cannot be read: {err}", e.position))
        })?);
    }
    let state = decoded
        .into_iter()
        .filter(|e| e.kind() == kind)
        .try_fold(AnyState::initial(kind), AnyState::evolve)
        .expect("events of the stream's own kind evolve its state")
        .to_json();
    Ok(StreamHistory {
        stream_id: stream_id.to_string(),
        version: recorded.last().map_or(0, |e| e.version),
        current_version,
        state,
        events: recorded.iter().map(HistoryEvent::of).collect(),
    })
}

/// Every event whose correlation id is `correlation_id`, in log order. Reads the whole
/// log (there is no index on correlation ids); memory holds only the matches.
pub async fn correlated(store: &dyn EventStore, correlation_id: &str) -> Result<Vec<HistoryEvent>, ReplayError> {
    let mut found = Vec::new();
    let mut cursor = LogCursor::START;
    loop {
        let batch = store.read_all(cursor, READ_EVENTS_MAX).await?;
        let Some(last) = batch.last() else { return Ok(found) };
        cursor = LogCursor::after(last);
        found.extend(batch.iter().filter(|e| e.metadata.correlation_id == correlation_id).map(HistoryEvent::of));
    }
}
