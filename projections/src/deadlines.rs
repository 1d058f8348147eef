//! The timer's index: every deadline, when it is due and whether it is still waiting. A
//! deadline is scheduled, rescheduled and fired by events of its own stream; it is
//! cancelled by a later event of the stream it is about (an order paid, a cart checked
//! out: [`orderlog_domain::deadline::cancelled_by`]). The timer asks this table which
//! waiting deadlines are due.

use chrono::SecondsFormat;
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::deadline::{cancelled_by, DeadlineEvent, FireOutcome};
use orderlog_domain::{AggregateKind, StreamId};
use orderlog_store::RecordedEvent;
use serde::{Deserialize, Serialize};

use crate::table::TableModel;

/// One deadline. `status` is `scheduled` (waiting), `fired`, `refused` (fired, its command
/// no longer valid) or `cancelled`; empty for a cancelling event seen without a deadline
/// (an order placed before deadlines existed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlineRow {
    pub deadline_id: String,
    pub status: String,
    /// Due time in milliseconds since the Unix epoch (what the due query compares).
    pub due_ms: i64,
    pub due_at: Option<String>,
    /// The `target` of the command it runs (`expire_order`, `cart`, `close_return_window`).
    pub command: Option<String>,
    pub fired_at: Option<String>,
    /// Why it was refused, or what cancelled it (event type and position).
    pub detail: Option<String>,
    pub reschedules: u32,
}

pub struct DeadlineTable;

/// Plain-SQL view of the deadlines for SQLite readers, and the index the due query uses.
pub const DEADLINE_VIEWS_SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS rm_deadlines (key TEXT PRIMARY KEY, data TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS rm_deadlines_waiting ON rm_deadlines (json_extract(data, '$.due_ms'))
      WHERE json_extract(data, '$.status') = 'scheduled'",
    "DROP VIEW IF EXISTS deadlines; CREATE VIEW deadlines AS
       SELECT key AS deadline_id, json_extract(data, '$.status') AS status,
              json_extract(data, '$.due_at') AS due_at, json_extract(data, '$.command') AS command,
              json_extract(data, '$.fired_at') AS fired_at, json_extract(data, '$.detail') AS detail
         FROM rm_deadlines WHERE json_extract(data, '$.status') <> ''",
];

/// The same for PostgreSQL readers.
pub const DEADLINE_VIEWS_POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS rm_deadlines (key TEXT PRIMARY KEY, data JSONB NOT NULL);
     CREATE INDEX IF NOT EXISTS rm_deadlines_waiting ON rm_deadlines (((data->>'due_ms')::bigint))
      WHERE data->>'status' = 'scheduled'",
    "DROP VIEW IF EXISTS deadlines CASCADE; CREATE VIEW deadlines AS
       SELECT key AS deadline_id, data->>'status' AS status, (data->>'due_at')::timestamptz AS due_at,
              data->>'command' AS command, (data->>'fired_at')::timestamptz AS fired_at, data->>'detail' AS detail
         FROM rm_deadlines WHERE data->>'status' <> ''",
];

impl TableModel for DeadlineTable {
    const NAME: &'static str = "deadlines";
    const VERSION: u32 = 1;
    type Row = DeadlineRow;

    fn wants(event: &RecordedEvent) -> bool {
        matches!(
            StreamId::kind_of(&event.stream_id),
            Some(AggregateKind::Deadline | AggregateKind::Order | AggregateKind::Cart)
        )
    }

    fn keys(event: &RecordedEvent, decoded: &DomainEvent) -> Vec<String> {
        let Some(stream) = StreamId::parse(&event.stream_id) else { return Vec::new() };
        match decoded {
            DomainEvent::Deadline(_) => vec![stream.id().to_string()],
            _ => cancelled_by(&stream, decoded).map(|id| id.to_string()).into_iter().collect(),
        }
    }

    fn evolve(mut row: DeadlineRow, key: &str, event: &RecordedEvent, decoded: &DomainEvent) -> DeadlineRow {
        let at = event.recorded_at.to_rfc3339_opts(SecondsFormat::Millis, true);
        row.deadline_id = key.to_string();
        match decoded {
            DomainEvent::Deadline(DeadlineEvent::DeadlineScheduled { due_at, command }) => {
                row.due_ms = due_at.timestamp_millis();
                row.due_at = Some(due_at.to_rfc3339_opts(SecondsFormat::Millis, true));
                row.command = command.get("target").and_then(|t| t.as_str()).map(str::to_string);
                row.status = "scheduled".into();
            }
            DomainEvent::Deadline(DeadlineEvent::DeadlineRescheduled { due_at, .. }) => {
                row.due_ms = due_at.timestamp_millis();
                row.due_at = Some(due_at.to_rfc3339_opts(SecondsFormat::Millis, true));
                row.reschedules = row.reschedules.saturating_add(1);
            }
            DomainEvent::Deadline(DeadlineEvent::DeadlineFired { outcome }) => {
                row.fired_at = Some(at);
                (row.status, row.detail) = match outcome {
                    FireOutcome::Applied { .. } => ("fired".into(), None),
                    FireOutcome::Refused { reason } => ("refused".into(), Some(reason.clone())),
                };
            }
            _ if row.status == "scheduled" => {
                row.status = "cancelled".into();
                row.detail = Some(format!("{} at position {}", decoded.event_type(), event.position));
            }
            _ => {}
        }
        row
    }
}
