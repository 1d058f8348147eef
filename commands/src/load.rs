//! Loading aggregates from the log, with a bounded cache of folded states: the log is
//! append-only, so the state at version `v` never changes, and only the events after `v`
//! need reading.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use orderlog_domain::{AnyState, DomainEvent, StreamId};
use orderlog_store::{EventStore, RecordedEvent, READ_EVENTS_MAX};

use crate::CommandError;

/// Folded states kept at the most; the cache is emptied when it would grow past this.
pub const CACHE_STREAMS_MAX: usize = 20_000;

#[derive(Default)]
pub(crate) struct StateCache {
    streams: Mutex<HashMap<StreamId, Cached>>,
}

/// A folded state, the version it is folded up to, and when its last event was recorded.
type Cached = (u64, AnyState, Option<DateTime<Utc>>);

/// A stream's folded state, the version it is folded up to, and when its last event was
/// recorded.
pub(crate) type Folded = (AnyState, u64, Option<DateTime<Utc>>);

impl StateCache {
    /// The cached fold of `stream`, or its initial state.
    fn cached(&self, stream: &StreamId) -> Folded {
        match self.streams.lock().expect("cache lock").get(stream).cloned() {
            Some((version, state, touched)) => (state, version, touched),
            None => (AnyState::initial(stream.kind()), 0, None),
        }
    }

    /// Keeps a fold that went past what the cache holds.
    fn keep(&self, stream: &StreamId, (state, version, touched): &Folded) {
        let mut streams = self.streams.lock().expect("cache lock");
        if streams.len() >= CACHE_STREAMS_MAX && !streams.contains_key(stream) {
            streams.clear();
        }
        if streams.get(stream).is_none_or(|(v, _, _)| v < version) {
            streams.insert(stream.clone(), (*version, state.clone(), *touched));
        }
    }

    /// The state of `stream`, the version it was folded up to, and when its last event was
    /// recorded.
    pub async fn load(&self, store: &dyn EventStore, stream: &StreamId) -> Result<Folded, CommandError> {
        let mut folded = self.cached(stream);
        let start = folded.1;
        let name = stream.to_string();
        loop {
            let page = store.read_stream(&name, folded.1 + 1, READ_EVENTS_MAX).await?;
            folded = fold(folded, &page)?;
            if page.len() < READ_EVENTS_MAX as usize {
                break;
            }
        }
        if folded.1 > start {
            self.keep(stream, &folded);
        }
        Ok(folded)
    }

    /// [`StateCache::load`] of several distinct streams, their new events read in one
    /// `read_streams` call; a stream with more new events than one page holds is read on
    /// by itself.
    pub async fn load_many(&self, store: &dyn EventStore, streams: &[StreamId]) -> Result<Vec<Folded>, CommandError> {
        let cached: Vec<Folded> = streams.iter().map(|s| self.cached(s)).collect();
        let requests: Vec<(String, u64)> =
            streams.iter().zip(&cached).map(|(s, (_, version, _))| (s.to_string(), version + 1)).collect();
        let pages = store.read_streams(&requests, READ_EVENTS_MAX).await?;
        let mut loaded = Vec::with_capacity(streams.len());
        for ((stream, folded), page) in streams.iter().zip(cached).zip(pages) {
            if page.len() == READ_EVENTS_MAX as usize {
                loaded.push(self.load(store, stream).await?);
                continue;
            }
            let start = folded.1;
            let folded = fold(folded, &page)?;
            if folded.1 > start {
                self.keep(stream, &folded);
            }
            loaded.push(folded);
        }
        Ok(loaded)
    }
}

/// A fold carried on over a page of the stream's events.
fn fold((mut state, mut version, mut touched): Folded, page: &[RecordedEvent]) -> Result<Folded, CommandError> {
    for recorded in page {
        let event = decode(recorded)?;
        let kind = event.kind();
        state = state
            .evolve(event)
            .map_err(|_| unreadable(recorded, format!("a {kind:?} event does not belong in this stream")))?;
        version = recorded.version;
        touched = Some(recorded.recorded_at);
    }
    Ok((state, version, touched))
}

fn unreadable(recorded: &RecordedEvent, detail: String) -> CommandError {
    CommandError::UnreadableEvent {
        position: recorded.position,
        stream_id: recorded.stream_id.clone(),
        event_type: recorded.event_type.clone(),
        detail,
    }
}

/// Decodes a recorded event, naming the position and type when it cannot be.
pub(crate) fn decode(recorded: &RecordedEvent) -> Result<DomainEvent, CommandError> {
    DomainEvent::decode(&recorded.event_type, recorded.schema_version, &recorded.payload)
        .map_err(|e| unreadable(recorded, e.to_string()))
}
