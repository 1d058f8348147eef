//! Reactors: processes that read the log from their own checkpoint and act on events —
//! issue commands, queue webhook messages. Effects are made idempotent by the reactor (a
//! command id derived from the event's id and the reactor's name; a message id derived
//! from the event's), and the checkpoint moves only after the effects of the events before
//! it are durable, so a crash replays a batch and doubles nothing.
//!
//! An event a reactor fails on is tried [`REACT_ATTEMPTS_MAX`] times with a doubling pause,
//! then *parked*: kept with its error in `orderlog_parked`, shown by `orderlog processes
//! status` and `/metrics`. By its [`OnPark`] policy the reactor then stops there or moves
//! on. An operator retries or skips a parked event (`orderlog processes retry|skip`); the
//! decision is kept with who made it, when and why. An event this build cannot read is
//! parked at once with the decoder's error: never skipped silently.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orderlog_domain::DomainEvent;
use orderlog_projections::projector::{may_run_or_wait, Gate};
use orderlog_store::{EventStore, LogCursor, RecordedEvent, StoreError};
use tokio::sync::watch;

use crate::db::{Db, DbError, Value};

/// Times an event is tried before it is parked.
pub const REACT_ATTEMPTS_MAX: u32 = 5;
/// Pause after the first failed try; doubles with each.
pub const REACT_BACKOFF_MS: u64 = 50;
/// Events read per batch.
pub const REACTOR_BATCH_MAX: u32 = 500;
/// How long an idle reactor waits for new events before it looks again.
pub const REACTOR_IDLE_MS: u64 = 500;

/// What a reactor does after parking an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnPark {
    /// Stop at the parked event until an operator retries or skips it (effects whose order
    /// matters).
    Stop,
    /// Go on with the next events (effects independent of each other).
    MoveOn,
}

/// Why a reaction failed: kept with the event when it is parked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReactError(pub String);

impl From<DbError> for ReactError {
    fn from(e: DbError) -> ReactError {
        ReactError(e.to_string())
    }
}

#[async_trait]
pub trait Reactor: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn on_park(&self) -> OnPark;
    /// Whether the reactor may care about `event`, judged before decoding it.
    fn wants(&self, event: &RecordedEvent) -> bool;
    /// Acts on one event. Must be idempotent: the same event again has its effect once.
    async fn react(&self, event: &RecordedEvent, decoded: &DomainEvent) -> Result<(), ReactError>;

    /// Acts on several events in log order at once (fewer round trips); the default acts on
    /// each in turn. An error gives the index of the first event not acted on: it and the
    /// rest are then tried one by one (and parked if they keep failing).
    async fn react_batch(&self, events: &[(&RecordedEvent, DomainEvent)]) -> Result<(), (usize, ReactError)> {
        for (i, (event, decoded)) in events.iter().enumerate() {
            self.react(event, decoded).await.map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReactorError {
    #[error("reactor '{reactor}': {source}")]
    Db { reactor: &'static str, source: DbError },
    #[error("reactor '{reactor}': reading the log: {source}")]
    Store { reactor: &'static str, source: StoreError },
    #[error("reactor '{reactor}' moved on while this batch ran (another runner?); nothing was recorded")]
    CheckpointMoved { reactor: &'static str },
    #[error("reactor '{reactor}': no parked event at position {position}")]
    NoSuchParked { reactor: String, position: u64 },
}

/// Where a reactor stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReactorCheckpoint {
    pub cursor: LogCursor,
    pub events: u64,
    /// The position of the parked event it has stopped at.
    pub stopped_at: Option<u64>,
}

/// A parked event and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Parked {
    pub reactor: String,
    pub position: u64,
    pub event_id: String,
    pub stream_id: String,
    pub event_type: String,
    pub error: String,
    pub attempts: u64,
    pub parked_ms: i64,
    /// `parked`, `retry_requested`, `retried` (it succeeded when tried again) or `skipped`.
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_ms: Option<i64>,
    pub reason: Option<String>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn int(v: &Value) -> u64 {
    v.int().unwrap_or(0).max(0) as u64
}

/// Reads a reactor's checkpoint, creating it at the start of the log.
pub async fn checkpoint(db: &dyn Db, name: &str) -> Result<ReactorCheckpoint, DbError> {
    const SELECT: &str = "SELECT commit_order, position, events, stopped FROM orderlog_reactors WHERE name = $1";
    let mut rows = db.query(SELECT, vec![name.into()]).await?;
    if rows.is_empty() {
        // Created on first use only: every step reads its checkpoint, and a write per step
        // would be a commit per step.
        db.execute(
            "INSERT INTO orderlog_reactors (name, commit_order, position, events, stopped, updated_ms)
             VALUES ($1, 0, 0, 0, NULL, $2) ON CONFLICT (name) DO NOTHING",
            vec![name.into(), now_ms().into()],
        )
        .await?;
        rows = db.query(SELECT, vec![name.into()]).await?;
    }
    let row = rows.first().ok_or_else(|| DbError(format!("reactor '{name}' has no checkpoint row")))?;
    Ok(ReactorCheckpoint {
        cursor: LogCursor { commit: int(&row[0]), position: int(&row[1]) },
        events: int(&row[2]),
        stopped_at: row[3].text().and_then(|s| s.parse().ok()),
    })
}

fn parked_row(row: &[Value]) -> Parked {
    let text = |i: usize| row[i].text().unwrap_or_default().to_string();
    Parked {
        reactor: text(0),
        position: int(&row[1]),
        event_id: text(2),
        stream_id: text(3),
        event_type: text(4),
        error: text(5),
        attempts: int(&row[6]),
        parked_ms: row[7].int().unwrap_or(0),
        state: text(8),
        decided_by: row[9].text().map(str::to_string),
        decided_ms: row[10].int(),
        reason: row[11].text().map(str::to_string),
    }
}

/// Every reactor that has run on this database, with where it stands.
pub async fn reactors(db: &dyn Db) -> Result<Vec<(String, ReactorCheckpoint, i64)>, DbError> {
    let rows = db
        .query(
            "SELECT name, commit_order, position, events, stopped, updated_ms FROM orderlog_reactors ORDER BY name",
            vec![],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let checkpoint = ReactorCheckpoint {
                cursor: LogCursor { commit: int(&r[1]), position: int(&r[2]) },
                events: int(&r[3]),
                stopped_at: r[4].text().and_then(|s| s.parse().ok()),
            };
            (r[0].text().unwrap_or_default().to_string(), checkpoint, r[5].int().unwrap_or(0))
        })
        .collect())
}

/// The reactors and their parked events, and the webhook queues, in Prometheus' text format.
pub async fn prometheus(db: &dyn Db) -> Result<String, DbError> {
    use std::fmt::Write;
    let mut out = String::new();
    let reactors = reactors(db).await?;
    out.push_str("# HELP orderlog_reactor_position Log position a reactor has acted up to.\n");
    out.push_str("# TYPE orderlog_reactor_position gauge\n");
    for (name, checkpoint, _) in &reactors {
        let _ = writeln!(out, "orderlog_reactor_position{{reactor=\"{name}\"}} {}", checkpoint.cursor.position);
    }
    out.push_str("# HELP orderlog_reactor_stopped Whether a reactor is stopped at a parked event.\n");
    out.push_str("# TYPE orderlog_reactor_stopped gauge\n");
    for (name, checkpoint, _) in &reactors {
        let _ = writeln!(
            out,
            "orderlog_reactor_stopped{{reactor=\"{name}\"}} {}",
            u8::from(checkpoint.stopped_at.is_some())
        );
    }
    let parked = db
        .query(
            "SELECT reactor, COUNT(*) FROM orderlog_parked WHERE state IN ('parked', 'retry_requested') GROUP BY reactor ORDER BY reactor",
            vec![],
        )
        .await?;
    out.push_str("# HELP orderlog_parked_events Events parked by a reactor and waiting for an operator.\n");
    out.push_str("# TYPE orderlog_parked_events gauge\n");
    for (name, _, _) in &reactors {
        let count = parked.iter().find(|r| r[0].text() == Some(name)).and_then(|r| r[1].int()).unwrap_or(0);
        let _ = writeln!(out, "orderlog_parked_events{{reactor=\"{name}\"}} {count}");
    }
    let messages = db
        .query("SELECT status, COUNT(*) FROM orderlog_webhook_messages GROUP BY status ORDER BY status", vec![])
        .await?;
    out.push_str("# HELP orderlog_webhook_messages Webhook messages by state (pending, delivered, dead).\n");
    out.push_str("# TYPE orderlog_webhook_messages gauge\n");
    for status in ["pending", "delivered", "dead"] {
        let count = messages.iter().find(|r| r[0].text() == Some(status)).and_then(|r| r[1].int()).unwrap_or(0);
        let _ = writeln!(out, "orderlog_webhook_messages{{status=\"{status}\"}} {count}");
    }
    Ok(out)
}

/// Parked events (of one reactor, or all), newest first, at most `limit`.
pub async fn parked(db: &dyn Db, reactor: Option<&str>, limit: u32) -> Result<Vec<Parked>, DbError> {
    let rows = db
        .query(
            "SELECT reactor, position, event_id, stream_id, event_type, error, attempts, parked_ms, state, decided_by, decided_ms, reason
               FROM orderlog_parked WHERE CAST($1 AS TEXT) IS NULL OR reactor = $1 ORDER BY parked_ms DESC, position DESC LIMIT $2",
            vec![reactor.into(), i64::from(limit).into()],
        )
        .await?;
    Ok(rows.iter().map(|r| parked_row(r)).collect())
}

/// An operator's decision on a parked event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Retry,
    Skip,
}

/// Records an operator's decision on a parked event (still parked, or failed again after a
/// retry); the reactor carries it out at its next step. Returns false when the event is
/// not waiting for a decision (already retried or skipped).
pub async fn decide(
    db: &dyn Db,
    reactor: &str,
    position: u64,
    decision: Decision,
    actor: &str,
    reason: &str,
) -> Result<bool, ReactorError> {
    let fail = |source| ReactorError::Db { reactor: "operator", source };
    let exists = db
        .query(
            "SELECT state FROM orderlog_parked WHERE reactor = $1 AND position = $2",
            vec![reactor.into(), (position as i64).into()],
        )
        .await
        .map_err(fail)?;
    if exists.is_empty() {
        return Err(ReactorError::NoSuchParked { reactor: reactor.to_string(), position });
    }
    let state = match decision {
        Decision::Retry => "retry_requested",
        Decision::Skip => "skipped",
    };
    let changed = db
        .execute(
            "UPDATE orderlog_parked SET state = $1, decided_by = $2, decided_ms = $3, reason = $4
              WHERE reactor = $5 AND position = $6 AND state = 'parked'",
            vec![state.into(), actor.into(), now_ms().into(), reason.into(), reactor.into(), (position as i64).into()],
        )
        .await
        .map_err(fail)?;
    Ok(changed == 1)
}

/// Runs one reactor over the log.
pub struct ReactorRunner {
    reactor: Arc<dyn Reactor>,
    log: Arc<dyn EventStore>,
    db: Arc<dyn Db>,
}

impl ReactorRunner {
    pub fn new(reactor: Arc<dyn Reactor>, log: Arc<dyn EventStore>, db: Arc<dyn Db>) -> ReactorRunner {
        ReactorRunner { reactor, log, db }
    }

    pub fn name(&self) -> &'static str {
        self.reactor.name()
    }

    fn db_error(&self) -> impl Fn(DbError) -> ReactorError {
        let reactor = self.reactor.name();
        move |source| ReactorError::Db { reactor, source }
    }

    pub async fn checkpoint(&self) -> Result<ReactorCheckpoint, ReactorError> {
        checkpoint(&*self.db, self.reactor.name()).await.map_err(self.db_error())
    }

    /// Tries an event up to [`REACT_ATTEMPTS_MAX`] times; the last error if every try failed.
    async fn attempt(&self, event: &RecordedEvent) -> Result<(), (String, u64)> {
        let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload).map_err(|e| {
            (
                format!(
                    "event type '{}' (schema version {}) cannot be read by this build: {e}",
                    event.event_type, event.schema_version
                ),
                1,
            )
        })?;
        let mut pause = Duration::from_millis(REACT_BACKOFF_MS);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.reactor.react(event, &decoded).await {
                Ok(()) => return Ok(()),
                Err(e) if attempts >= u64::from(REACT_ATTEMPTS_MAX) => return Err((e.0, attempts)),
                Err(e) => {
                    tracing::debug!(reactor = self.reactor.name(), position = event.position, error = %e, "reaction failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }

    /// Carries out operators' retry decisions; returns whether a stop was lifted.
    async fn decisions(&self, checkpoint: &ReactorCheckpoint) -> Result<bool, ReactorError> {
        let name = self.reactor.name();
        let rows = self
            .db
            .query(
                "SELECT position FROM orderlog_parked WHERE reactor = $1 AND state = 'retry_requested' ORDER BY position",
                vec![name.into()],
            )
            .await
            .map_err(self.db_error())?;
        for row in rows {
            let position = int(&row[0]);
            let events = self.log.read_all(cursor_before(&*self.log, position).await?, 1).await;
            let event = events.map_err(|source| ReactorError::Store { reactor: name, source })?;
            let Some(event) = event.into_iter().find(|e| e.position == position) else { continue };
            let (state, error, attempts) = match self.attempt(&event).await {
                Ok(()) => ("retried", None, 1),
                Err((error, attempts)) => ("parked", Some(error), attempts),
            };
            self.db
                .execute(
                    "UPDATE orderlog_parked SET state = $1, error = COALESCE($2, error), attempts = attempts + $3
                      WHERE reactor = $4 AND position = $5",
                    vec![state.into(), error.into(), (attempts as i64).into(), name.into(), (position as i64).into()],
                )
                .await
                .map_err(self.db_error())?;
        }
        let Some(stopped) = checkpoint.stopped_at else { return Ok(false) };
        let state = self
            .db
            .query(
                "SELECT state FROM orderlog_parked WHERE reactor = $1 AND position = $2",
                vec![name.into(), (stopped as i64).into()],
            )
            .await
            .map_err(self.db_error())?;
        let lifted = state.first().and_then(|r| r[0].text()).is_some_and(|s| s == "retried" || s == "skipped");
        if lifted {
            self.db
                .execute("UPDATE orderlog_reactors SET stopped = NULL WHERE name = $1", vec![name.into()])
                .await
                .map_err(self.db_error())?;
        }
        Ok(lifted)
    }

    /// Reacts to the next batch of events; returns how many it read (0: caught up, or
    /// stopped at a parked event).
    pub async fn step(&self) -> Result<usize, ReactorError> {
        let name = self.reactor.name();
        let mut checkpoint = self.checkpoint().await?;
        if self.decisions(&checkpoint).await? {
            checkpoint.stopped_at = None;
        }
        if checkpoint.stopped_at.is_some() {
            return Ok(0);
        }
        let batch = self
            .log
            .read_all(checkpoint.cursor, REACTOR_BATCH_MAX)
            .await
            .map_err(|source| ReactorError::Store { reactor: name, source })?;
        let mut to = checkpoint.cursor;
        let mut read = 0usize;
        let mut parked = Vec::new();
        let mut stopped = None;
        // At once first: the events it wants, up to the first one this build cannot read.
        let mut readable = Vec::new();
        for event in batch.iter().filter(|e| self.reactor.wants(e)) {
            match DomainEvent::decode(&event.event_type, event.schema_version, &event.payload) {
                Ok(decoded) => readable.push((event, decoded)),
                Err(_) => break,
            }
        }
        let done_through = match self.reactor.react_batch(&readable).await {
            Ok(()) => readable.last().map(|(e, _)| e.position),
            Err((failed, error)) => {
                tracing::debug!(reactor = name, error = %error, "a batch failed part way; acting on the rest one by one");
                failed.checked_sub(1).map(|i| readable[i].0.position)
            }
        };
        // The readable events are every wanted one up to `done_through`'s, in log order.
        let done = |event: &RecordedEvent| Some(event.position) <= done_through;
        for event in &batch {
            to = LogCursor::after(event);
            read += 1;
            if !self.reactor.wants(event) || done(event) {
                continue;
            }
            if let Err((error, attempts)) = self.attempt(event).await {
                tracing::warn!(reactor = name, position = event.position, event_type = %event.event_type, error = %error, "event parked");
                parked.push((event, error, attempts));
                if self.reactor.on_park() == OnPark::Stop {
                    stopped = Some(event.position);
                    break;
                }
            }
        }
        if read == 0 {
            return Ok(0);
        }
        let mut statements = vec![(
            "UPDATE orderlog_reactors SET commit_order = $1, position = $2, events = events + $3, stopped = $4, updated_ms = $5
              WHERE name = $6 AND commit_order = $7 AND position = $8",
            vec![
                (to.commit as i64).into(),
                (to.position as i64).into(),
                (read as i64).into(),
                stopped.map(|p: u64| p.to_string()).into(),
                now_ms().into(),
                name.into(),
                (checkpoint.cursor.commit as i64).into(),
                (checkpoint.cursor.position as i64).into(),
            ],
        )];
        for (event, error, attempts) in parked {
            statements.push((
                "INSERT INTO orderlog_parked (reactor, position, commit_order, event_id, stream_id, event_type, error, attempts, parked_ms, state)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'parked') ON CONFLICT (reactor, position) DO NOTHING",
                vec![
                    name.into(),
                    (event.position as i64).into(),
                    (event.commit as i64).into(),
                    event.event_id.to_string().into(),
                    event.stream_id.as_str().into(),
                    event.event_type.as_str().into(),
                    error.into(),
                    (attempts as i64).into(),
                    now_ms().into(),
                ],
            ));
        }
        match self.db.transaction(statements, true).await.map_err(self.db_error())? {
            Some(_) => Ok(read),
            None => Err(ReactorError::CheckpointMoved { reactor: name }),
        }
    }

    /// Steps until `stop` turns true, while `gate` lets it (job `reactor:{name}`), waiting
    /// for new events when caught up; a failed step is logged and tried again after a pause.
    pub async fn run(self, gate: Arc<dyn Gate>, mut stop: watch::Receiver<bool>) {
        let job = format!("reactor:{}", self.reactor.name());
        while !*stop.borrow() {
            if !may_run_or_wait(&*gate, &job, &mut stop).await {
                continue;
            }
            let pause = match self.step().await {
                Ok(0) => Duration::from_millis(REACTOR_IDLE_MS),
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(error = %e, "reactor step failed; trying again");
                    Duration::from_millis(REACTOR_IDLE_MS * 4)
                }
            };
            if pause.is_zero() {
                continue;
            }
            let checkpoint = self.checkpoint().await.map(|c| c.cursor).unwrap_or_default();
            tokio::select! {
                _ = self.log.wait_for(checkpoint, pause) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// The cursor just before the event at `position` (to read that one event back).
async fn cursor_before(log: &dyn EventStore, position: u64) -> Result<LogCursor, ReactorError> {
    let cursor = log
        .cursor_of(position)
        .await
        .map_err(|source| ReactorError::Store { reactor: "parked", source })?
        .ok_or(ReactorError::NoSuchParked { reactor: "log".into(), position })?;
    // A cursor is "just after" an event: step back within the same commit order.
    Ok(LogCursor { commit: cursor.commit, position: cursor.position.saturating_sub(1) })
}
