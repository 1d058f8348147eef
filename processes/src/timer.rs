//! The timer: asks the deadline index which waiting deadlines are due and fires each
//! through the command service. Firing is at most once by construction, not by the timer's
//! care: the command id is the deadline's id and due time, and `DeadlineFired` is appended
//! with the command's events at the version the deadline was read at, so two timers (or one
//! that crashed and started again) append it once. A deadline whose command is no longer
//! valid is recorded as refused and not tried again; one that comes due while no timer
//! runs fires late, at the next tick.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orderlog_commands::{Clock, Command, CommandEnvelope, CommandError, CommandOutcome, CommandService};
use orderlog_domain::deadline::{DeadlineEvent, DeadlineId, FireOutcome};
use orderlog_domain::DomainEvent;
use orderlog_projections::deadlines::DeadlineRow;
use orderlog_projections::projector::{may_run_or_wait, Gate};
use orderlog_projections::queries::ReadQueries;
use orderlog_projections::RowsError;
use orderlog_store::EventStore;
use tokio::sync::watch;

/// Pause between looks at the index when nothing was due.
pub const TIMER_POLL_MS: u64 = 250;
/// Deadlines fired per look at the index.
pub const TIMER_BATCH_MAX: u32 = 200;
/// The timer's job name, as leases name it.
pub const TIMER_JOB: &str = "timer";
/// Who the log names as the sender of fired deadlines' commands.
pub const TIMER_ACTOR: &str = "timer";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimerError {
    #[error("timer: the deadline index cannot be read: {0}")]
    Index(#[from] RowsError),
    #[error("timer: firing deadline {deadline_id}: {source}")]
    Fire { deadline_id: String, source: CommandError },
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Deadlines whose command ran.
    pub applied: u32,
    /// Deadlines whose command was refused (recorded; not tried again).
    pub refused: u32,
    /// Idle carts that had been touched: moved later instead of fired.
    pub rescheduled: u32,
    /// Deadlines another timer had fired already.
    pub repeated: u32,
    /// How late each fired deadline was, in milliseconds.
    pub lateness_ms: Vec<i64>,
}

impl Tick {
    pub fn fired(&self) -> u32 {
        self.applied + self.refused + self.rescheduled + self.repeated
    }
}

/// The id of the command that fires a deadline at a due time: the same for every timer, and
/// new when the deadline is moved.
fn command_id(row: &DeadlineRow) -> String {
    format!("deadline:{}@{}", row.deadline_id, row.due_ms)
}

/// Fires due deadlines.
pub struct Timer {
    service: Arc<CommandService>,
    queries: Arc<dyn ReadQueries>,
    clock: Arc<dyn Clock>,
    /// Command ids this timer fired that the index still showed waiting at the last tick
    /// (it folds them a moment later): skipped rather than sent again.
    fired: Mutex<HashSet<String>>,
}

impl Timer {
    pub fn new(service: Arc<CommandService>, queries: Arc<dyn ReadQueries>, clock: Arc<dyn Clock>) -> Timer {
        Timer { service, queries, clock, fired: Mutex::default() }
    }

    fn log(&self) -> &dyn EventStore {
        &**self.service.store()
    }

    /// Fires the deadlines due now, at most [`TIMER_BATCH_MAX`].
    pub async fn tick(&self) -> Result<Tick, TimerError> {
        let now = self.clock.now();
        let due = self.queries.due_deadlines(now.timestamp_millis(), TIMER_BATCH_MAX).await?;
        let mut tick = Tick::default();
        let before = std::mem::take(&mut *self.fired.lock().expect("timer lock"));
        let mut fired = HashSet::new();
        for row in due {
            let command_id = command_id(&row);
            if before.contains(&command_id) {
                fired.insert(command_id);
                continue;
            }
            let outcome = self.fire(&row, &command_id).await;
            if matches!(outcome, Ok(Some(_))) {
                fired.insert(command_id);
            }
            let Some(outcome) = outcome? else { continue };
            tick.lateness_ms.push(now.timestamp_millis() - row.due_ms);
            // Another timer fired it first (this one found it fired, or repeated its run).
            if outcome.repeated || outcome.events_appended == 0 {
                tick.repeated += 1;
                continue;
            }
            match self.recorded(&row.deadline_id, &outcome).await? {
                Some(DeadlineEvent::DeadlineFired { outcome: FireOutcome::Applied { .. } }) => tick.applied += 1,
                Some(DeadlineEvent::DeadlineFired { outcome: FireOutcome::Refused { .. } }) => tick.refused += 1,
                Some(DeadlineEvent::DeadlineRescheduled { .. }) => tick.rescheduled += 1,
                _ => tick.repeated += 1,
            }
        }
        self.fired.lock().expect("timer lock").extend(fired);
        Ok(tick)
    }

    /// Fires one deadline; `None` when it could not be (never scheduled, or not due by this
    /// process's clock: another process's clock ran ahead), which the log does not record.
    async fn fire(&self, row: &DeadlineRow, command_id: &str) -> Result<Option<CommandOutcome>, TimerError> {
        let fail = |source| TimerError::Fire { deadline_id: row.deadline_id.clone(), source };
        let deadline_id = DeadlineId::parse(&row.deadline_id).map_err(|r| fail(CommandError::Rejected(r)))?;
        let envelope = CommandEnvelope::new(command_id, TIMER_ACTOR, Command::FireDeadline { deadline_id });
        match self.service.execute(envelope).await {
            Ok(outcome) => Ok(Some(outcome)),
            Err(CommandError::Rejected(r)) => {
                tracing::warn!(deadline = %row.deadline_id, reason = %r.reason, "deadline not fired");
                Ok(None)
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// The deadline's event that a fire appended (fired or rescheduled).
    async fn recorded(&self, deadline_id: &str, outcome: &CommandOutcome) -> Result<Option<DeadlineEvent>, TimerError> {
        let fail = |e: String| TimerError::Fire {
            deadline_id: deadline_id.to_string(),
            source: CommandError::Invalid(format!("reading what was fired: {e}")),
        };
        let stream = format!("deadline-{deadline_id}");
        let Some(version) = outcome.streams.iter().find(|s| s.stream_id == stream).map(|s| s.version) else {
            return Ok(None);
        };
        let events = self.log().read_stream(&stream, version, 1).await.map_err(|e| fail(e.to_string()))?;
        let Some(recorded) = events.first() else { return Ok(None) };
        match DomainEvent::decode(&recorded.event_type, recorded.schema_version, &recorded.payload) {
            Ok(DomainEvent::Deadline(event)) => Ok(Some(event)),
            Ok(_) => Ok(None),
            Err(e) => Err(fail(e.to_string())),
        }
    }

    /// Ticks until `stop` turns true, while `gate` lets it (job [`TIMER_JOB`]); a failed
    /// tick is logged and tried again after a pause.
    pub async fn run(self, gate: Arc<dyn Gate>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            if !may_run_or_wait(&*gate, TIMER_JOB, &mut stop).await {
                continue;
            }
            let pause = match self.tick().await {
                Ok(tick) if tick.fired() > 0 => Duration::ZERO,
                Ok(_) => Duration::from_millis(TIMER_POLL_MS),
                Err(e) => {
                    tracing::warn!(error = %e, "timer tick failed; trying again");
                    Duration::from_millis(TIMER_POLL_MS * 4)
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}
