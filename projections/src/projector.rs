//! Several table models kept up to date side by side: each catches up, then tails the log,
//! woken by the store. A model that fails stops alone, its checkpoint says why, and the
//! others keep running.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderlog_store::{EventStore, LogCursor};
use serde::Serialize;
use tokio::sync::watch;

use crate::table::{Checkpoint, RowStore, RunError, Runner, TableModel};

/// How long an idle model waits for new events before it looks again.
pub const IDLE_WAIT_MS: u64 = 1_000;

/// A runner of any model.
#[async_trait]
pub trait AnyRunner: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> u32;
    async fn ensure(&self) -> Result<(), RunError>;
    async fn step(&self) -> Result<usize, RunError>;
    async fn checkpoint(&self) -> Result<Checkpoint, RunError>;
    /// Records in the checkpoint why the model stopped.
    async fn record_failure(&self, error: &RunError);
    /// Whether the stored rows equal the fold of the whole log.
    async fn verify(&self) -> Result<bool, RunError>;
    /// Rebuilds the model beside the live one and swaps it in (see [`Runner::rebuild`]).
    async fn rebuild(&self) -> Result<Checkpoint, RunError>;
    /// Where a rebuild under way stands.
    async fn rebuild_checkpoint(&self) -> Option<Checkpoint>;
}

#[async_trait]
impl<M: TableModel> AnyRunner for Runner<M> {
    fn name(&self) -> &'static str {
        M::NAME
    }
    fn version(&self) -> u32 {
        M::VERSION
    }
    async fn ensure(&self) -> Result<(), RunError> {
        Runner::ensure(self).await
    }
    async fn step(&self) -> Result<usize, RunError> {
        Runner::step(self).await
    }
    async fn checkpoint(&self) -> Result<Checkpoint, RunError> {
        Runner::checkpoint(self).await
    }
    async fn record_failure(&self, error: &RunError) {
        Runner::record_failure(self, error).await
    }
    async fn verify(&self) -> Result<bool, RunError> {
        Runner::verify(self).await
    }
    async fn rebuild(&self) -> Result<Checkpoint, RunError> {
        Runner::rebuild(self).await
    }
    async fn rebuild_checkpoint(&self) -> Option<Checkpoint> {
        Runner::rebuild_checkpoint(self).await
    }
}

/// Whether this process may run a job now: a lease across processes, so that each job runs
/// in one process at a time. Correctness never rests on it (a model's checkpoint moves by
/// compare-and-set), only the waste of two processes folding the same events.
#[async_trait]
pub trait Gate: Send + Sync {
    async fn may_run(&self, job: &str) -> bool;
}

/// Every job, always (one process on its own).
pub struct Always;

#[async_trait]
impl Gate for Always {
    async fn may_run(&self, _: &str) -> bool {
        true
    }
}

/// How long a runner that may not run waits before it asks again.
pub const GATE_WAIT_MS: u64 = 500;

/// Whether `job` may run now; if not, first waits [`GATE_WAIT_MS`] (or until `stop` changes),
/// so a loop can ask again.
pub async fn may_run_or_wait(gate: &dyn Gate, job: &str, stop: &mut watch::Receiver<bool>) -> bool {
    if gate.may_run(job).await {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(GATE_WAIT_MS)) => {}
        _ = stop.changed() => {}
    }
    false
}

/// The job name of a read model's runner, as leases name it.
pub fn job_of(projection: &str) -> String {
    format!("projection:{projection}")
}

/// Runs every runner until `stop` turns true or the runner fails; returns how each ended.
pub async fn run_live(
    log: Arc<dyn EventStore>,
    runners: Vec<Arc<dyn AnyRunner>>,
    stop: watch::Receiver<bool>,
) -> Vec<(&'static str, Result<(), RunError>)> {
    run_live_gated(log, runners, Arc::new(Always), stop).await
}

/// As [`run_live`], each runner stepping only while `gate` lets it.
pub async fn run_live_gated(
    log: Arc<dyn EventStore>,
    runners: Vec<Arc<dyn AnyRunner>>,
    gate: Arc<dyn Gate>,
    stop: watch::Receiver<bool>,
) -> Vec<(&'static str, Result<(), RunError>)> {
    let mut tasks = Vec::new();
    for runner in runners {
        let log = Arc::clone(&log);
        let gate = Arc::clone(&gate);
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let name = runner.name();
            let job = job_of(name);
            let result = async {
                if let Err(e) = runner.ensure().await {
                    runner.record_failure(&e).await;
                    return Err(e);
                }
                loop {
                    if *stop.borrow() {
                        return Ok(());
                    }
                    if !may_run_or_wait(&*gate, &job, &mut stop).await {
                        continue;
                    }
                    match runner.step().await {
                        Ok(0) => {
                            let cursor = runner.checkpoint().await?.cursor;
                            tokio::select! {
                                waited = log.wait_for(cursor, Duration::from_millis(IDLE_WAIT_MS)) => {
                                    waited.map_err(|source| RunError::Store { projection: name, source })?;
                                }
                                _ = stop.changed() => {}
                            }
                        }
                        Ok(_) | Err(RunError::CheckpointMoved { .. }) => {}
                        // This build folds another version: rebuild beside the stored model
                        // (which keeps serving) and swap, then go on.
                        Err(RunError::VersionMismatch { stored, current, .. }) => {
                            tracing::warn!(
                                projection = name,
                                stored,
                                current,
                                "rebuilding a read model of another version"
                            );
                            if let Err(e) = runner.rebuild().await {
                                tracing::error!(projection = name, error = %e, "rebuild failed");
                                runner.record_failure(&e).await;
                                return Err(e);
                            }
                        }
                        Err(e) => {
                            tracing::error!(projection = name, error = %e, "projection stopped");
                            runner.record_failure(&e).await;
                            return Err(e);
                        }
                    }
                }
            }
            .await;
            (name, result)
        }));
    }
    let mut ended = Vec::new();
    for task in tasks {
        ended.push(task.await.expect("projection task"));
    }
    ended
}

/// Where a model stands against the log.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub version: u32,
    pub position: u64,
    pub events: u64,
    /// Events in the log past the model's checkpoint (on PostgreSQL, by position: an
    /// estimate while transactions are in flight).
    pub events_behind: u64,
    /// Age of the oldest event the model has not folded; 0 when caught up.
    pub seconds_behind: f64,
    pub error: Option<String>,
}

/// The status of each runner's model.
pub async fn status(
    log: &dyn EventStore,
    runners: &[Arc<dyn AnyRunner>],
    now: DateTime<Utc>,
) -> Result<Vec<ProjectionStatus>, RunError> {
    let mut statuses = Vec::new();
    for runner in runners {
        let name = runner.name();
        runner.ensure().await?;
        let checkpoint = runner.checkpoint().await?;
        let store = |source| RunError::Store { projection: name, source };
        let head = log.head().await.map_err(store)?;
        let next = log.read_all(checkpoint.cursor, 1).await.map_err(store)?;
        let seconds_behind = next.first().map_or(0.0, |e| (now - e.recorded_at).num_milliseconds().max(0) as f64 / 1e3);
        statuses.push(ProjectionStatus {
            name,
            version: checkpoint.version,
            position: checkpoint.cursor.position,
            events: checkpoint.events,
            events_behind: if next.is_empty() { 0 } else { head.saturating_sub(checkpoint.cursor.position) },
            seconds_behind,
            error: checkpoint.error,
        });
    }
    Ok(statuses)
}

/// Waits until `runner`'s model has folded every event committed before the call, or
/// `timeout` ends; returns whether it has (read your writes: call it after a command). A
/// model that has stopped is an error naming why.
pub async fn wait_caught_up(log: &dyn EventStore, runner: &dyn AnyRunner, timeout: Duration) -> Result<bool, RunError> {
    let name = runner.name();
    let deadline = tokio::time::Instant::now() + timeout;
    let store = |source| RunError::Store { projection: name, source };
    runner.ensure().await?;
    if !log.settle(timeout).await.map_err(store)? {
        return Ok(false);
    }
    loop {
        let checkpoint = runner.checkpoint().await?;
        if let Some(reason) = checkpoint.error {
            return Err(RunError::Stopped { projection: name, reason });
        }
        let cursor: LogCursor = checkpoint.cursor;
        // A model of another version is being rebuilt: not caught up until it is swapped in.
        if checkpoint.version == runner.version() && log.read_all(cursor, 1).await.map_err(store)?.is_empty() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `runner`'s model has folded the event at `position` (a command's result
/// carries it), or `timeout` ends; returns whether it has. A model that has stopped is an
/// error naming why; a position with no committed event is refused.
pub async fn wait_for_position(
    log: &dyn EventStore,
    runner: &dyn AnyRunner,
    position: u64,
    timeout: Duration,
) -> Result<bool, RunError> {
    let name = runner.name();
    let store = |source| RunError::Store { projection: name, source };
    let target = log.cursor_of(position).await.map_err(store)?.ok_or_else(|| RunError::Stopped {
        projection: name,
        reason: format!("no committed event at position {position} to wait for"),
    })?;
    runner.ensure().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let checkpoint = runner.checkpoint().await?;
        if let Some(reason) = checkpoint.error {
            return Err(RunError::Stopped { projection: name, reason });
        }
        if checkpoint.version == runner.version() && checkpoint.cursor >= target {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5).min(deadline - now)).await;
    }
}

/// For status and waiting without a concrete model type.
pub fn runner<M: TableModel>(log: Arc<dyn EventStore>, rows: Arc<dyn RowStore>) -> Arc<dyn AnyRunner> {
    Arc::new(Runner::<M>::new(log, rows))
}
