//! History tools: [`history`] (time travel and business flows) and [`verify_chains`], which reads the whole log in order and checks
//! that every stream's versions run 1, 2, 3 … without gaps and that every event's hash
//! follows from its own bytes and the previous event of its stream — so an event changed,
//! removed from the middle of a stream, inserted or moved is found, and named.
//!
//! Besides the chains, every commit's record (which events it wrote, where) is checked, so
//! an event deleted (the last one too), inserted or moved between positions is found.

pub mod archive;
pub mod checkpoint;
pub mod history;
pub mod progress;

use std::collections::HashMap;

use orderlog_store::hash::{commit_digest, event_hash, GENESIS};
use orderlog_store::{CommitRecord, EventStore, LogCursor, RecordedEvent, StoreError, READ_EVENTS_MAX};

/// Where the log stops being trustworthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenEvent {
    /// 0 when what is broken is a stream's recorded head, not an event.
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
    /// What the request names is not in the log (an event at a position).
    #[error("{0}")]
    NotFound(String),
}

/// Checks the whole log: every stream's version sequence and hash chain, and every
/// commit's record. Memory is bounded by [`VERIFY_HEADS_MAX`].
pub async fn verify_chains(store: &dyn EventStore) -> Result<VerifyReport, ReplayError> {
    verify_log(store, None, &mut progress::Progress::quiet()).await
}

/// Streams' heads kept in memory while verifying; past this the map is emptied and heads
/// are read back from the store as needed, so memory stays flat however large the log.
pub const VERIFY_HEADS_MAX: usize = 100_000;

/// [`verify_chains`] from the commit that wrote the event at `from` (the whole log when
/// `None`), showing progress.
pub async fn verify_log(
    store: &dyn EventStore,
    from: Option<u64>,
    progress: &mut progress::Progress,
) -> Result<VerifyReport, ReplayError> {
    let mut heads: HashMap<String, (u64, String)> = HashMap::new();
    let mut report = VerifyReport::default();
    let mut commits = Commits::default();
    let mut after = LogCursor::START;
    if let Some(position) = from.filter(|p| *p > 1) {
        let record = store
            .commit_of(position)
            .await?
            .ok_or_else(|| ReplayError::Invalid(format!("--from: no recorded event at position {position}")))?;
        after = LogCursor { commit: record.commit, position: record.first_position - 1 };
        commits.cursor = after;
    }
    let mut seen_streams = 0u64;
    let broken = |report: &mut VerifyReport, event: Option<&RecordedEvent>, position: u64, reason: String| {
        report.first_broken = Some(BrokenEvent {
            position,
            stream_id: event.map(|e| e.stream_id.clone()).unwrap_or_default(),
            version: event.map_or(0, |e| e.version),
            reason,
        });
    };
    loop {
        let page = store.read_all(after, READ_EVENTS_MAX).await?;
        let Some(last) = page.last() else {
            // Every recorded commit must have had all its events read (a commit that became
            // readable after the last page is read first).
            if let Some(record) = commits.pending(store).await? {
                if commits.group.is_empty() && !store.read_all(after, 1).await?.is_empty() {
                    commits.ahead.push_front(record);
                    continue;
                }
                let reason = format!(
                    "the log ends before the {} event(s) recorded by the commit at position {}: deleted",
                    record.events, record.first_position
                );
                broken(&mut report, None, record.first_position, reason);
            }
            break;
        };
        after = LogCursor::after(last);
        progress.advance(page.len() as u64);
        let (low, high) = page.iter().fold((u64::MAX, 0), |(l, h), e| (l.min(e.position), h.max(e.position)));
        let stored_fault = store.stored_form_fault(low, high).await?;
        for event in &page {
            report.events += 1;
            if !heads.contains_key(&event.stream_id) {
                if heads.len() >= VERIFY_HEADS_MAX {
                    heads.clear();
                }
                seen_streams += 1;
                // A stream first met past its start (verifying from a position, or after the
                // map was emptied): its head comes from the store.
                if event.version > 1 {
                    if let Some(prev) = store.read_stream(&event.stream_id, event.version - 1, 1).await?.first() {
                        if prev.version == event.version - 1 && prev.position < event.position {
                            heads.insert(event.stream_id.clone(), (prev.version, prev.hash.clone()));
                        }
                    }
                }
            }
            let (version, prev) = heads.get(&event.stream_id).map_or((0, GENESIS), |(v, h)| (*v, h.as_str()));
            let reason = if let Some((_, fault)) = stored_fault.as_ref().filter(|(p, _)| *p == event.position) {
                Some(fault.clone())
            } else if event.version != version + 1 {
                Some(format!("version {} follows version {version} of its stream", event.version))
            } else if event_hash(prev, event) != event.hash {
                Some("its hash does not match its contents and the previous event of its stream".to_string())
            } else {
                commits.take(store, event).await?
            };
            if let Some(reason) = reason {
                let position = commits.blame.take().unwrap_or(event.position);
                broken(&mut report, Some(event), position, reason);
                report.streams = seen_streams;
                return Ok(report);
            }
            heads.insert(event.stream_id.clone(), (event.version, event.hash.clone()));
        }
    }
    report.streams = seen_streams;
    if report.first_broken.is_none() {
        if let Some((stream_id, reason)) = store.stream_head_fault().await? {
            report.first_broken = Some(BrokenEvent { position: 0, stream_id, version: 0, reason });
        }
    }
    Ok(report)
}

/// The commit records, taken in step with the events they record.
#[derive(Default)]
struct Commits {
    ahead: std::collections::VecDeque<CommitRecord>,
    cursor: LogCursor,
    current: Option<CommitRecord>,
    group: Vec<(u64, String)>,
    /// The position to name when a commit's events do not match its record.
    blame: Option<u64>,
}

impl Commits {
    async fn next(&mut self, store: &dyn EventStore) -> Result<Option<CommitRecord>, ReplayError> {
        if self.ahead.is_empty() {
            let page = store.read_commits(self.cursor, READ_EVENTS_MAX).await?;
            if let Some(last) = page.last() {
                self.cursor = last.cursor();
            }
            self.ahead.extend(page);
        }
        Ok(self.ahead.pop_front())
    }

    /// Adds `event` to its commit's group; a reason if the log and the records disagree.
    async fn take(&mut self, store: &dyn EventStore, event: &RecordedEvent) -> Result<Option<String>, ReplayError> {
        if self.current.is_none() {
            match self.next(store).await? {
                Some(record) => self.current = Some(record),
                None => return Ok(Some("no commit records this event: inserted".into())),
            }
        }
        let record = self.current.as_ref().expect("a current commit");
        if self.group.is_empty() && event.position != record.first_position {
            self.blame = Some(record.first_position.min(event.position));
            return Ok(Some(format!(
                "the commit recorded at position {} does not start here: an event was deleted, inserted or moved",
                record.first_position
            )));
        }
        self.group.push((event.position, event.hash.clone()));
        if (self.group.len() as u64) < record.events {
            return Ok(None);
        }
        let digest = commit_digest(self.group.iter().map(|(p, h)| (*p, h.as_str())));
        let first = record.first_position;
        let matches = digest == record.digest;
        self.group.clear();
        self.current = None;
        if matches {
            Ok(None)
        } else {
            self.blame = Some(first);
            Ok(Some(format!(
                "the events from position {first} do not match what their commit recorded: an event was deleted, inserted or moved"
            )))
        }
    }

    /// A commit whose events were not all read, once the events have run out.
    async fn pending(&mut self, store: &dyn EventStore) -> Result<Option<CommitRecord>, ReplayError> {
        if let Some(record) = self.current.take() {
            return Ok(Some(record));
        }
        self.next(store).await
    }
}
