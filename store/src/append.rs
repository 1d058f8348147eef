//! The rules of an append, shared by every backend: input checks, idempotency by event id,
//! expected-version checks, positions, versions and hashes. A backend supplies look-ups and
//! the writing inside its own transaction ([`AppendLookup`], [`Plan`]).

use std::collections::HashSet;

use chrono::SubsecRound;
use serde::de::IgnoredAny;
use uuid::Uuid;

use crate::hash::{event_hash, GENESIS};
use crate::{
    AppendOutcome, RecordedEvent, StoreError, StreamAppend, StreamVersion, APPEND_EVENTS_MAX, APPEND_STREAMS_MAX,
    PAYLOAD_BYTES_MAX, STREAM_ID_BYTES_MAX,
};

/// Where an event already in the log sits.
#[derive(Clone, Debug)]
pub struct EventLocation {
    pub position: u64,
    pub stream_id: String,
    pub version: u64,
}

/// The last event of a stream.
#[derive(Clone, Debug)]
pub struct StreamHead {
    pub version: u64,
    pub hash: String,
}

/// The look-ups a backend answers inside its transaction.
pub trait AppendLookup {
    fn find_event(&mut self, event_id: &Uuid) -> Result<Option<EventLocation>, StoreError>;
    fn stream_head(&mut self, stream_id: &str) -> Result<Option<StreamHead>, StoreError>;
}

/// What an append comes to.
#[derive(Debug)]
pub enum Plan {
    /// Every event is already in the log, from an earlier run of the same append: nothing
    /// is written, and this is the outcome of that first run.
    Repeat(AppendOutcome),
    /// New events to write.
    Write(Write),
}

/// The rows a backend writes for an append.
#[derive(Debug)]
pub struct Write {
    /// The new events, with versions and hashes; the backend assigns their positions (and
    /// commit order) as it writes them. The backend must refuse, with
    /// [`StoreError::DuplicateEvent`] and writing nothing, an event id already stored.
    pub events: Vec<RecordedEvent>,
    /// The new head of every stream that gets events.
    pub heads: Vec<(String, StreamHead)>,
    /// The head every stream of the append was planned on.
    pub planned_on: Vec<(String, StreamHead)>,
    streams: Vec<StreamVersion>,
}

impl Write {
    /// The head (version, hash) `stream_id` was planned on.
    pub fn planned_on(&self, stream_id: &str) -> (u64, &str) {
        let (_, head) = self.planned_on.iter().find(|(s, _)| s == stream_id).expect("a stream of the append");
        (head.version, &head.hash)
    }

    /// Every stream of the append at its version after the write.
    pub fn streams(&self) -> &[StreamVersion] {
        &self.streams
    }

    /// The outcome, once the backend has assigned the positions.
    pub fn outcome(self) -> AppendOutcome {
        AppendOutcome {
            streams: self.streams,
            first_position: self.events.iter().map(|e| e.position).min(),
            last_position: self.events.iter().map(|e| e.position).max(),
            duplicate: false,
        }
    }
}

/// Checks an append's shape before anything is looked up or written.
pub fn validate(appends: &[StreamAppend]) -> Result<(), StoreError> {
    let bad = |m: String| Err(StoreError::InvalidAppend(m));
    if appends.is_empty() {
        return bad("no streams to append to".into());
    }
    if appends.len() > APPEND_STREAMS_MAX {
        return bad(format!("{} streams exceed the limit of {APPEND_STREAMS_MAX}", appends.len()));
    }
    let total: usize = appends.iter().map(|a| a.events.len()).sum();
    if total > APPEND_EVENTS_MAX {
        return bad(format!("{total} events exceed the limit of {APPEND_EVENTS_MAX}"));
    }
    let mut streams = HashSet::new();
    let mut ids = HashSet::new();
    for append in appends {
        let s = &append.stream_id;
        if s.is_empty() || s.len() > STREAM_ID_BYTES_MAX || s.chars().any(char::is_control) {
            return bad(format!(
                "stream id '{}' must be 1 to {STREAM_ID_BYTES_MAX} bytes without control characters",
                s.escape_debug()
            ));
        }
        if !streams.insert(s.as_str()) {
            return bad(format!("stream '{s}' appears twice in one append"));
        }
        for event in &append.events {
            if event.event_type.is_empty() || event.event_type.len() > STREAM_ID_BYTES_MAX {
                return bad(format!("an event of stream '{s}' has an empty or overlong type"));
            }
            if event.schema_version == 0 {
                return bad(format!("event {} has schema version 0; versions start at 1", event.event_id));
            }
            if event.payload.len() > PAYLOAD_BYTES_MAX {
                return bad(format!(
                    "event {} has a payload of {} bytes, over the limit of {PAYLOAD_BYTES_MAX}",
                    event.event_id,
                    event.payload.len()
                ));
            }
            if let Err(e) = serde_json::from_str::<IgnoredAny>(&event.payload) {
                return bad(format!("event {} ({}) payload is not JSON: {e}", event.event_id, event.event_type));
            }
            if !ids.insert(event.event_id) {
                return bad(format!("event id {} appears twice in one append", event.event_id));
            }
        }
    }
    Ok(())
}

/// Decides what a validated append writes: an idempotent repeat, a version conflict, or
/// the new events with their versions and hashes.
pub fn plan(lookup: &mut impl AppendLookup, appends: &[StreamAppend]) -> Result<Plan, StoreError> {
    if let Some(outcome) = repeated(lookup, appends)? {
        return Ok(Plan::Repeat(outcome));
    }
    let mut events = Vec::new();
    let mut heads = Vec::new();
    let mut planned_on = Vec::with_capacity(appends.len());
    let mut streams = Vec::with_capacity(appends.len());
    for append in appends {
        let head = lookup.stream_head(&append.stream_id)?;
        let current = head.as_ref().map_or(0, |h| h.version);
        if !append.expected.allows(current) {
            return Err(StoreError::WrongExpectedVersion {
                stream_id: append.stream_id.clone(),
                expected: append.expected,
                actual: current,
            });
        }
        let mut prev_hash = head.map_or_else(|| GENESIS.to_string(), |h| h.hash);
        planned_on.push((append.stream_id.clone(), StreamHead { version: current, hash: prev_hash.clone() }));
        let mut version = current;
        for event in &append.events {
            version += 1;
            let mut recorded = RecordedEvent {
                position: 0,
                commit: 0,
                stream_id: append.stream_id.clone(),
                version,
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
                recorded_at: event.recorded_at.trunc_subsecs(6),
                hash: String::new(),
            };
            recorded.hash = event_hash(&prev_hash, &recorded);
            prev_hash.clone_from(&recorded.hash);
            events.push(recorded);
        }
        if !append.events.is_empty() {
            heads.push((append.stream_id.clone(), StreamHead { version, hash: prev_hash }));
        }
        streams.push(StreamVersion { stream_id: append.stream_id.clone(), version });
    }
    Ok(Plan::Write(Write { events, heads, planned_on, streams }))
}

/// If every event of the append is already in the log, in the same streams and order,
/// the outcome of that first append; if none is, `None`; anything between is an error.
///
/// Only the first event is looked up here: when it is new, any later event that already
/// exists is caught by the backend's write, which must refuse a known event id.
fn repeated(target: &mut impl AppendLookup, appends: &[StreamAppend]) -> Result<Option<AppendOutcome>, StoreError> {
    let Some(first) = appends.iter().find_map(|a| a.events.first()) else { return Ok(None) };
    if target.find_event(&first.event_id)?.is_none() {
        return Ok(None);
    }
    let mut found = 0usize;
    let mut total = 0usize;
    let mut first_missing = None;
    let mut locations = Vec::new();
    for append in appends {
        for event in &append.events {
            total += 1;
            match target.find_event(&event.event_id)? {
                Some(location) => {
                    found += 1;
                    locations.push((append.stream_id.as_str(), location));
                }
                None => {
                    first_missing.get_or_insert(event.event_id);
                }
            }
        }
    }
    if found < total {
        return Err(StoreError::DuplicateEvent {
            event_id: first.event_id,
            detail: format!("but event {} of the same append is not", first_missing.expect("found < total")),
        });
    }
    // Every event exists: it must be the same append, repeated.
    let mut streams = Vec::with_capacity(appends.len());
    let mut at = 0;
    for append in appends {
        let mine = &locations[at..at + append.events.len()];
        at += append.events.len();
        for (i, (stream, loc)) in mine.iter().enumerate() {
            let consecutive = i == 0 || loc.version == mine[i - 1].1.version + 1;
            if loc.stream_id != *stream || !consecutive {
                return Err(StoreError::DuplicateEvent {
                    event_id: append.events[i].event_id,
                    detail: format!("in stream '{}' at version {}", loc.stream_id, loc.version),
                });
            }
        }
        let version = match mine.last() {
            Some((_, loc)) => loc.version,
            None => target.stream_head(&append.stream_id)?.map_or(0, |h| h.version),
        };
        streams.push(StreamVersion { stream_id: append.stream_id.clone(), version });
    }
    Ok(Some(AppendOutcome {
        streams,
        first_position: locations.iter().map(|(_, l)| l.position).min(),
        last_position: locations.iter().map(|(_, l)| l.position).max(),
        duplicate: true,
    }))
}
