//! Several models side by side: live tailing, read-your-writes, a failing model stopping
//! alone, and status with lag.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use orderlog_commands::{Command, CommandEnvelope, CommandService, ManualClock, SequentialIds};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::stock::{StockCommand, StockEvent};
use orderlog_domain::{LocationId, Sku, StockKey};
use orderlog_projections::inventory::{InventoryTable, INVENTORY_VIEWS_SQLITE};
use orderlog_projections::projector::{run_live, runner, status, wait_caught_up, wait_for_position, AnyRunner};
use orderlog_projections::sqlite::SqliteRows;
use orderlog_projections::table::{RowStore, RunError, Runner, TableModel};
use orderlog_store::{RecordedEvent, SqliteStore};
use serde::{Deserialize, Serialize};

/// A second model: events per type.
struct EventCounts;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Count {
    events: u64,
}

impl TableModel for EventCounts {
    const NAME: &'static str = "event_counts";
    const VERSION: u32 = 1;
    type Row = Count;
    fn keys(event: &RecordedEvent, _: &DomainEvent) -> Vec<String> {
        vec![event.event_type.clone()]
    }
    fn evolve(mut row: Count, _: &str, _: &RecordedEvent, _: &DomainEvent) -> Count {
        row.events += 1;
        row
    }
}

struct Setup {
    dir: tempfile::TempDir,
    log: Arc<SqliteStore>,
    service: CommandService,
    clock: Arc<ManualClock>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SqliteStore::open(dir.path().join("orderlog.db")).unwrap());
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 2, 1, 8, 0, 0).unwrap()));
    let service = CommandService::new(log.clone(), clock.clone(), Arc::new(SequentialIds::new("id-")));
    Setup { dir, log, service, clock }
}

impl Setup {
    fn rows(&self) -> Arc<SqliteRows> {
        Arc::new(SqliteRows::open(self.dir.path().join("orderlog.db"), INVENTORY_VIEWS_SQLITE).unwrap())
    }

    /// Receives `n` units; returns the position of the event (a command's result carries it).
    async fn receive(&self, n: u32) -> u64 {
        let stock = StockKey::new(Sku::parse("mug").unwrap(), LocationId::parse("berlin").unwrap());
        let command = Command::Stock { stock, command: StockCommand::Receive { quantity: n, reference: None } };
        let outcome =
            self.service.execute(CommandEnvelope::new(format!("receive-{n}"), "clerk", command)).await.unwrap();
        outcome.position.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_tail_the_log_live_and_a_reader_can_wait_for_its_write() {
    let s = setup();
    let rows = s.rows();
    let inventory = runner::<InventoryTable>(s.log.clone(), rows.clone());
    let counts = runner::<EventCounts>(s.log.clone(), rows.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(run_live(s.log.clone(), vec![inventory.clone(), counts.clone()], stopped));
    for n in 1..=20 {
        let position = s.receive(n).await;
        if n % 5 == 0 {
            // Read your write: wait until the model has passed the command's position.
            assert!(wait_for_position(&*s.log, &*inventory, position, Duration::from_secs(10)).await.unwrap());
            let row = rows.load(InventoryTable::NAME, vec!["mug@berlin".into()]).await.unwrap();
            let on_hand = serde_json::from_str::<serde_json::Value>(&row["mug@berlin"]).unwrap()["on_hand"].as_i64();
            assert_eq!(on_hand, Some((1..=n as i64).sum()));
        }
    }
    assert!(wait_caught_up(&*s.log, &*counts, Duration::from_secs(10)).await.unwrap());
    let count = rows.load(EventCounts::NAME, vec!["StockReceived".into()]).await.unwrap();
    assert_eq!(count["StockReceived"], r#"{"events":20}"#);
    stop.send(true).unwrap();
    for (name, ended) in live.await.unwrap() {
        assert!(ended.is_ok(), "{name}: {ended:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_stops_alone_and_its_status_says_why() {
    let s = setup();
    s.receive(1).await;
    let rows = s.rows();
    let inventory = runner::<InventoryTable>(s.log.clone(), rows.clone());
    let counts = runner::<EventCounts>(s.log.clone(), rows.clone());
    Runner::<InventoryTable>::new(s.log.clone(), rows.clone()).catch_up().await.unwrap();
    // The inventory's stored row no longer matches its model.
    let conn = rusqlite::Connection::open(s.dir.path().join("orderlog.db")).unwrap();
    conn.execute("UPDATE rm_inventory_levels SET data = '{\"on_hand\": \"lots\"}'", []).unwrap();
    s.receive(2).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(run_live(s.log.clone(), vec![inventory.clone(), counts.clone()], stopped));
    assert!(wait_caught_up(&*s.log, &*counts, Duration::from_secs(10)).await.unwrap(), "the other model keeps running");
    s.receive(3).await;
    assert!(wait_caught_up(&*s.log, &*counts, Duration::from_secs(10)).await.unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while inventory.checkpoint().await.unwrap().error.is_none() {
        assert!(std::time::Instant::now() < deadline, "the inventory model never stopped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    let ended = live.await.unwrap();
    let inventory_end = &ended.iter().find(|(n, _)| *n == "inventory_levels").unwrap().1;
    assert!(matches!(inventory_end, Err(RunError::Rows { .. })), "{inventory_end:?}");
    assert!(ended.iter().find(|(n, _)| *n == "event_counts").unwrap().1.is_ok());
    let reason = inventory.checkpoint().await.unwrap().error.unwrap();
    assert!(reason.contains("inventory_levels") && reason.contains("does not match"), "{reason}");
}

#[tokio::test]
async fn status_shows_lag_and_errors() {
    let s = setup();
    s.receive(1).await;
    s.clock.advance(chrono::Duration::seconds(5));
    s.receive(2).await;
    let rows = s.rows();
    let runners: Vec<Arc<dyn AnyRunner>> =
        vec![runner::<InventoryTable>(s.log.clone(), rows.clone()), runner::<EventCounts>(s.log.clone(), rows.clone())];
    let now = Utc.with_ymd_and_hms(2026, 2, 1, 8, 1, 0).unwrap();
    let before = status(&*s.log, &runners, now).await.unwrap();
    assert_eq!(before[0].events_behind, 2);
    assert_eq!(before[0].seconds_behind, 60.0, "the oldest unfolded event was recorded a minute ago");
    Runner::<InventoryTable>::new(s.log.clone(), rows.clone()).catch_up().await.unwrap();
    let after = status(&*s.log, &runners, now).await.unwrap();
    assert_eq!((after[0].events_behind, after[0].seconds_behind, after[0].events), (0, 0.0, 2));
    assert_eq!(after[1].events_behind, 2, "the other model has not run");
    rows.record_error("event_counts", "it broke").await.unwrap();
    assert_eq!(status(&*s.log, &runners, now).await.unwrap()[1].error.as_deref(), Some("it broke"));
}

/// On PostgreSQL, models tailing the log keep up with concurrent writers whose transactions
/// commit out of position order, and end equal to the fold of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn models_keep_up_with_concurrent_writers_on_postgres() {
    use orderlog_projections::postgres::PostgresRows;
    use orderlog_store::postgres::{testing::TestDatabase, AppendFault};
    use orderlog_store::{ExpectedVersion, Metadata, NewEvent, PostgresStore, StreamAppend};

    let db = TestDatabase::create().await;
    let log = Arc::new(PostgresStore::connect_url(&db.url_with("pool_max_size=24")).await.unwrap());
    let rows = Arc::new(PostgresRows::connect(&db.url, &[]).await.unwrap());
    let inventory = runner::<InventoryTable>(log.clone(), rows.clone());
    let counts = runner::<EventCounts>(log.clone(), rows.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(run_live(log.clone(), vec![inventory.clone(), counts.clone()], stopped));
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..40u64 {
                let event =
                    DomainEvent::Stock(StockEvent::StockReceived { units: 1 + (i % 3) as u32, reference: None });
                let new = NewEvent {
                    event_id: uuid::Uuid::new_v4(),
                    event_type: event.event_type().into(),
                    schema_version: event.schema_version(),
                    payload: event.payload(),
                    metadata: Metadata {
                        actor: "w".into(),
                        command_id: format!("{w}-{i}"),
                        correlation_id: "w".into(),
                        ..Metadata::default()
                    },
                    recorded_at: Utc::now(),
                };
                let append = vec![StreamAppend {
                    stream_id: format!("stock-sku{}@berlin", (w + i) % 5),
                    expected: ExpectedVersion::Any,
                    events: vec![new],
                }];
                let fault = AppendFault {
                    hold_before_commit: (i % 7 == 0).then(|| Duration::from_millis(30)),
                    roll_back: false,
                };
                last = log.append_with_fault(append, fault).await.unwrap().last_position.unwrap();
            }
            last
        }));
    }
    for writer in writers {
        let last = writer.await.unwrap();
        assert!(wait_for_position(&*log, &*inventory, last, Duration::from_secs(30)).await.unwrap());
    }
    assert!(wait_caught_up(&*log, &*inventory, Duration::from_secs(30)).await.unwrap());
    assert!(wait_caught_up(&*log, &*counts, Duration::from_secs(30)).await.unwrap());
    assert!(inventory.verify().await.unwrap(), "inventory rows equal the fold of the log");
    assert!(counts.verify().await.unwrap());
    assert_eq!(inventory.checkpoint().await.unwrap().events, 320);
    stop.send(true).unwrap();
    for (name, ended) in live.await.unwrap() {
        assert!(ended.is_ok(), "{name}: {ended:?}");
    }
}
