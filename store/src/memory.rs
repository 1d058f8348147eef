//! An in-memory event store, for tests and simulations. Same rules as every backend; gone
//! when dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use crate::append::{plan, validate, AppendLookup, EventLocation, Plan, StreamHead};
use crate::{AppendOutcome, EventStore, LogCursor, RecordedEvent, StoreError, StreamAppend, READ_EVENTS_MAX};

#[derive(Default)]
struct Log {
    events: Vec<RecordedEvent>,
    streams: HashMap<String, (Vec<usize>, String)>,
    by_id: HashMap<Uuid, usize>,
    by_command: HashMap<String, Vec<usize>>,
    commits: Vec<crate::CommitRecord>,
    tree: StoredTree,
}

/// The Merkle tree and signed checkpoints kept beside the log.
#[derive(Default)]
struct StoredTree {
    leaves: Vec<crate::TreeLeaf>,
    nodes: HashMap<crate::merkle::NodeKey, crate::merkle::Hash>,
    checkpoints: std::collections::BTreeMap<u64, String>,
}

/// The event log in memory.
pub struct MemoryStore {
    log: Mutex<Log>,
    head: watch::Sender<u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore { log: Mutex::new(Log::default()), head: watch::Sender::new(0) }
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Log {
    /// Puts `events` at the next positions (set in place) with one commit record.
    fn commit(&mut self, events: &mut [RecordedEvent]) {
        let first = self.events.len() as u64 + 1;
        for event in events.iter_mut() {
            let index = self.events.len();
            event.position = index as u64 + 1;
            event.commit = event.position;
            let entry = self.streams.entry(event.stream_id.clone()).or_default();
            entry.0.push(index);
            entry.1.clone_from(&event.hash);
            self.by_id.insert(event.event_id, index);
            self.by_command.entry(event.metadata.command_id.clone()).or_default().push(index);
            self.events.push(event.clone());
        }
        if !events.is_empty() {
            let digest = crate::hash::commit_digest(events.iter().map(|e| (e.position, e.hash.as_str())));
            let count = events.len() as u64;
            self.commits.push(crate::CommitRecord { commit: first, first_position: first, events: count, digest });
        }
    }
}

impl AppendLookup for &Log {
    fn find_event(&mut self, event_id: &Uuid) -> Result<Option<EventLocation>, StoreError> {
        Ok(self.by_id.get(event_id).map(|&i| {
            let e = &self.events[i];
            EventLocation { position: e.position, stream_id: e.stream_id.clone(), version: e.version }
        }))
    }

    fn stream_head(&mut self, stream_id: &str) -> Result<Option<StreamHead>, StoreError> {
        Ok(self
            .streams
            .get(stream_id)
            .map(|(indexes, hash)| StreamHead { version: indexes.len() as u64, hash: hash.clone() }))
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendOutcome, StoreError> {
        validate(&appends)?;
        let mut log = self.log.lock().expect("memory log lock");
        let mut write = match plan(&mut &*log, &appends)? {
            Plan::Repeat(outcome) => return Ok(outcome),
            Plan::Write(write) => write,
        };
        if let Some(e) = write.events.iter().find(|e| log.by_id.contains_key(&e.event_id)) {
            let existing = &log.events[log.by_id[&e.event_id]];
            return Err(StoreError::DuplicateEvent {
                event_id: e.event_id,
                detail: format!("in stream '{}' at version {}", existing.stream_id, existing.version),
            });
        }
        log.commit(&mut write.events);
        let head = log.events.len() as u64;
        drop(log);
        self.head.send_replace(head);
        Ok(write.outcome())
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.log.lock().expect("memory log lock");
        let Some((indexes, _)) = log.streams.get(stream_id) else {
            return Ok(Vec::new());
        };
        let skip = from_version.saturating_sub(1) as usize;
        Ok(indexes
            .iter()
            .skip(skip)
            .take(limit.min(READ_EVENTS_MAX) as usize)
            .map(|&i| log.events[i].clone())
            .collect())
    }

    async fn read_all(&self, after: LogCursor, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.log.lock().expect("memory log lock");
        let start = (after.position as usize).min(log.events.len());
        let end = (start + limit.min(READ_EVENTS_MAX) as usize).min(log.events.len());
        Ok(log.events[start..end].to_vec())
    }

    async fn read_command(&self, command_id: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        let log = self.log.lock().expect("memory log lock");
        Ok(log
            .by_command
            .get(command_id)
            .map(|indexes| indexes.iter().map(|&i| log.events[i].clone()).collect())
            .unwrap_or_default())
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let log = self.log.lock().expect("memory log lock");
        Ok(log.streams.get(stream_id).map_or(0, |(i, _)| i.len() as u64))
    }

    async fn head(&self) -> Result<u64, StoreError> {
        Ok(*self.head.borrow())
    }

    async fn cursor_of(&self, position: u64) -> Result<Option<LogCursor>, StoreError> {
        let log = self.log.lock().expect("memory log lock");
        let exists = position >= 1 && position <= log.events.len() as u64;
        Ok(exists.then_some(LogCursor { commit: position, position }))
    }

    async fn wait_for(&self, after: LogCursor, timeout: Duration) -> Result<bool, StoreError> {
        let mut rx = self.head.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|&head| head > after.position)).await;
        match waited {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Ok(*self.head.borrow() > after.position),
        }
    }

    async fn settle(&self, _timeout: Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn read_commits(&self, after: LogCursor, limit: u32) -> Result<Vec<crate::CommitRecord>, StoreError> {
        let log = self.log.lock().expect("memory log lock");
        Ok(log.commits.iter().filter(|c| c.cursor() > after).take(limit as usize).cloned().collect())
    }

    async fn commit_of(&self, position: u64) -> Result<Option<crate::CommitRecord>, StoreError> {
        let log = self.log.lock().expect("memory log lock");
        Ok(log.commits.iter().find(|c| c.first_position <= position && position < c.first_position + c.events).cloned())
    }
}

#[async_trait]
impl crate::BulkLoad for MemoryStore {
    async fn bulk_load(&self, events: crate::BulkEvents) -> Result<u64, StoreError> {
        let mut loaded: Vec<RecordedEvent> = Vec::new();
        for chunk in events {
            loaded.extend(chunk?.take().into_iter().map(|e| e.event));
        }
        let mut log = self.log.lock().expect("memory log lock");
        if !log.events.is_empty() {
            return Err(StoreError::LoadRefused("the store is not empty".into()));
        }
        for chunk in loaded.chunks_mut(crate::BULK_RECORD_EVENTS as usize) {
            log.commit(chunk);
        }
        let head = log.events.len() as u64;
        drop(log);
        self.head.send_replace(head);
        Ok(head)
    }
}

#[async_trait]
impl crate::TreeStore for MemoryStore {
    async fn tree_size(&self) -> Result<(u64, LogCursor), StoreError> {
        let log = self.log.lock().expect("log lock");
        let leaves = &log.tree.leaves;
        Ok((leaves.len() as u64, leaves.last().map_or(LogCursor::START, |l| l.cursor)))
    }

    async fn tree_extend(
        &self,
        size: u64,
        leaves: Vec<crate::TreeLeaf>,
        nodes: Vec<(crate::merkle::NodeKey, crate::merkle::Hash)>,
    ) -> Result<bool, StoreError> {
        let mut log = self.log.lock().expect("log lock");
        if log.tree.leaves.len() as u64 != size {
            return Ok(false);
        }
        for leaf in &leaves {
            log.tree.nodes.insert(crate::merkle::NodeKey::new(0, leaf.index), leaf.hash);
        }
        log.tree.leaves.extend(leaves);
        log.tree.nodes.extend(nodes);
        Ok(true)
    }

    async fn tree_nodes(
        &self,
        keys: Vec<crate::merkle::NodeKey>,
    ) -> Result<Vec<Option<crate::merkle::Hash>>, StoreError> {
        let log = self.log.lock().expect("log lock");
        Ok(keys.iter().map(|k| log.tree.nodes.get(k).copied()).collect())
    }

    async fn tree_leaf_at(&self, position: u64) -> Result<Option<crate::TreeLeaf>, StoreError> {
        let log = self.log.lock().expect("log lock");
        Ok(log.tree.leaves.iter().find(|l| l.cursor.position == position).copied())
    }

    async fn tree_leaf(&self, index: u64) -> Result<Option<crate::TreeLeaf>, StoreError> {
        let log = self.log.lock().expect("log lock");
        Ok(log.tree.leaves.get(index as usize).copied())
    }

    async fn keep_checkpoint(&self, size: u64, json: String) -> Result<(), StoreError> {
        self.log.lock().expect("log lock").tree.checkpoints.entry(size).or_insert(json);
        Ok(())
    }

    async fn kept_checkpoint(&self, size: Option<u64>) -> Result<Option<String>, StoreError> {
        let log = self.log.lock().expect("log lock");
        let kept = &log.tree.checkpoints;
        Ok(match size {
            Some(size) => kept.get(&size).cloned(),
            None => kept.values().next_back().cloned(),
        })
    }
}
