//! An event store that records how long each append took.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orderlog_store::{AppendOutcome, CommitRecord, EventStore, LogCursor, RecordedEvent, StoreError, StreamAppend};

use crate::metrics::Metrics;

/// Wraps a store; appends are timed into `metrics`.
pub struct TimedStore {
    inner: Arc<dyn EventStore>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn EventStore>, metrics: Arc<Metrics>) -> TimedStore {
        TimedStore { inner, metrics }
    }
}

#[async_trait]
impl EventStore for TimedStore {
    async fn append(&self, appends: Vec<StreamAppend>) -> Result<AppendOutcome, StoreError> {
        let started = Instant::now();
        let outcome = self.inner.append(appends).await;
        self.metrics.append(started.elapsed());
        outcome
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream_id, from_version, limit).await
    }

    async fn read_streams(
        &self,
        requests: &[(String, u64)],
        limit: u32,
    ) -> Result<Vec<Vec<RecordedEvent>>, StoreError> {
        self.inner.read_streams(requests, limit).await
    }

    async fn read_all(&self, after: LogCursor, limit: u32) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn read_command(&self, command_id: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_command(command_id).await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        self.inner.stream_version(stream_id).await
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.inner.head().await
    }

    async fn cursor_of(&self, position: u64) -> Result<Option<LogCursor>, StoreError> {
        self.inner.cursor_of(position).await
    }

    async fn wait_for(&self, after: LogCursor, timeout: Duration) -> Result<bool, StoreError> {
        self.inner.wait_for(after, timeout).await
    }

    async fn settle(&self, timeout: Duration) -> Result<bool, StoreError> {
        self.inner.settle(timeout).await
    }

    async fn read_commits(&self, after: LogCursor, limit: u32) -> Result<Vec<CommitRecord>, StoreError> {
        self.inner.read_commits(after, limit).await
    }

    async fn commit_of(&self, position: u64) -> Result<Option<CommitRecord>, StoreError> {
        self.inner.commit_of(position).await
    }
}
