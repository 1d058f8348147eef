//! History tools: [`history`] (time travel and business flows) and [`verify_chains`], which reads the whole log in order and checks
//! that every stream's versions run 1, 2, 3 … without gaps and that every event's hash
//! follows from its own bytes and the previous event of its stream — so an event changed,
//! removed from the middle of a stream, inserted or moved is found, and named.
//!
//! Not yet: a digest over global positions (which also catches the removal of a stream's
//! last event), export and import; those are the history issue.

pub mod archive;
pub mod history;
pub mod progress;

use std::collections::HashMap;

use orderlog_store::hash::{event_hash, GENESIS};
use orderlog_store::{EventStore, LogCursor, StoreError, READ_EVENTS_MAX};

/// Where the log stops being trustworthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenEvent {
    pub position: u64,
    pub stream_id: String,
    pub version: u64,
    pub reason: String,
}

/// What a verification saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub streams: u64,
    /// The first event, in log order, that breaks its stream's chain.
    pub first_broken: Option<BrokenEvent>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request cannot be answered (no such stream, a version past its end …).
    #[error("{0}")]
    Invalid(String),
}

/// Checks every stream's version sequence and hash chain over the whole log. Memory grows
/// with the number of streams (one version and hash each), not with the number of events.
pub async fn verify_chains(store: &dyn EventStore) -> Result<VerifyReport, ReplayError> {
    let mut heads: HashMap<String, (u64, String)> = HashMap::new();
    let mut report = VerifyReport::default();
    let mut after = LogCursor::START;
    loop {
        let page = store.read_all(after, READ_EVENTS_MAX).await?;
        let Some(last) = page.last() else { break };
        after = LogCursor::after(last);
        for event in &page {
            report.events += 1;
            let (version, prev) = heads.get(&event.stream_id).map_or((0, GENESIS), |(v, h)| (*v, h.as_str()));
            let reason = if event.version != version + 1 {
                Some(format!("version {} follows version {version} of its stream", event.version))
            } else if event_hash(prev, event) != event.hash {
                Some("its hash does not match its contents and the previous event of its stream".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                report.first_broken = Some(BrokenEvent {
                    position: event.position,
                    stream_id: event.stream_id.clone(),
                    version: event.version,
                    reason,
                });
                report.streams = heads.len() as u64;
                return Ok(report);
            }
            heads.insert(event.stream_id.clone(), (event.version, event.hash.clone()));
        }
    }
    report.streams = heads.len() as u64;
    Ok(report)
}
