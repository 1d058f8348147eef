//! The inventory table model on SQLite: rows equal the fold of the log, exactly once, through
//! faults at every step of a batch and with two runners at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use orderlog_commands::{Command, CommandEnvelope, CommandService, ManualClock, SequentialIds};
use orderlog_domain::stock::{AdjustmentReason, StockCommand};
use orderlog_domain::{LocationId, Sku, StockKey};
use orderlog_projections::catch_up;
use orderlog_projections::inventory::{InventoryLevels, InventoryRow, InventoryTable, INVENTORY_VIEWS_SQLITE};
use orderlog_projections::sqlite::{CommitFault, SqliteRows};
use orderlog_projections::table::{Checkpoint, RowStore, RunError, Runner, TableModel};
use orderlog_store::{EventStore, ExpectedVersion, LogCursor, Metadata, NewEvent, SqliteStore, StreamAppend};
use proptest::prelude::*;

struct Shop {
    dir: tempfile::TempDir,
    log: Arc<SqliteStore>,
    service: CommandService,
    next: u64,
}

impl Shop {
    fn new() -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(SqliteStore::open(dir.path().join("orderlog.db")).unwrap());
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 2, 1, 8, 0, 0).unwrap()));
        let service = CommandService::new(log.clone(), clock, Arc::new(SequentialIds::new("id-")));
        Shop { dir, log, service, next: 0 }
    }

    fn rows(&self) -> Arc<SqliteRows> {
        Arc::new(SqliteRows::open(self.dir.path().join("orderlog.db"), INVENTORY_VIEWS_SQLITE).unwrap())
    }

    async fn stock(&mut self, sku: &str, location: &str, command: StockCommand) {
        self.next += 1;
        let stock = StockKey::new(Sku::parse(sku).unwrap(), LocationId::parse(location).unwrap());
        let envelope = CommandEnvelope::new(format!("cmd-{}", self.next), "tester", Command::Stock { stock, command });
        // Some generated commands are rightly refused (more shrinkage than on hand, …).
        let _ = self.service.execute(envelope).await;
    }

    /// A log with receipts, incoming stock, safety stock and adjustments at two locations.
    async fn fill(&mut self) {
        for (i, sku) in ["mug", "tea", "pot"].iter().enumerate() {
            for location in ["berlin", "hamburg"] {
                self.stock(sku, location, StockCommand::ExpectIncoming { quantity: 10 }).await;
                self.stock(sku, location, StockCommand::Receive { quantity: 4 + i as u32 }).await;
                self.stock(sku, location, StockCommand::SetSafetyStock { quantity: 1 }).await;
                self.stock(
                    sku,
                    location,
                    StockCommand::Adjust { delta: -1, reason: AdjustmentReason::Damage, expected_on_hand: None },
                )
                .await;
                self.stock(sku, location, StockCommand::Receive { quantity: 3 }).await;
            }
        }
    }
}

async fn stored_rows(rows: &SqliteRows) -> BTreeMap<String, InventoryRow> {
    let keys: Vec<String> = ["mug", "tea", "pot", "cup"]
        .iter()
        .flat_map(|s| ["berlin", "hamburg", "paris"].iter().map(move |l| format!("{s}@{l}")))
        .collect();
    rows.load(InventoryTable::NAME, keys)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, json)| (k, serde_json::from_str(&json).unwrap()))
        .collect()
}

async fn assert_equals_fold(shop: &Shop, rows: &SqliteRows) {
    let runner = Runner::<InventoryTable>::new(shop.log.clone(), shop.rows());
    let expected = runner.fold_in_memory().await.unwrap();
    let stored = stored_rows(rows).await;
    assert_eq!(stored, expected, "the stored read model equals the fold of the whole log");
    let checkpoint = rows.checkpoint(InventoryTable::NAME).await.unwrap();
    let total = shop.log.read_all(LogCursor::START, 10_000).await.unwrap().len() as u64;
    assert_eq!(checkpoint.events, total, "every event folded exactly once");
}

#[tokio::test]
async fn rows_equal_an_independent_fold_and_views_sum_them() {
    let mut shop = Shop::new();
    shop.fill().await;
    let rows = shop.rows();
    let checkpoint = Runner::<InventoryTable>::new(shop.log.clone(), rows.clone())
        .with_batch_events_max(7)
        .catch_up()
        .await
        .unwrap();
    assert_eq!(checkpoint.error, None);
    assert_equals_fold(&shop, &rows).await;
    // Independently of the table model: the in-memory levels of the same log.
    let mut levels = InventoryLevels::default();
    catch_up(&*shop.log, &mut levels, LogCursor::START, 100).await.unwrap();
    let stored = stored_rows(&rows).await;
    for ((sku, location), level) in &levels.items {
        assert_eq!(&stored[&format!("{sku}@{location}")].level, level);
    }
    let conn = rusqlite::Connection::open(shop.dir.path().join("orderlog.db")).unwrap();
    let (on_hand, available): (i64, i64) = conn
        .query_row("SELECT on_hand, available FROM inventory_by_sku WHERE sku = 'tea'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let tea: Vec<_> = levels.items.iter().filter(|((s, _), _)| s == "tea").map(|(_, l)| l).collect();
    assert_eq!(on_hand, tea.iter().map(|l| l.on_hand).sum::<i64>());
    assert_eq!(available, tea.iter().map(|l| l.available).sum::<i64>());
}

/// A row store whose next load fails: the fault "after reading the batch".
struct FailingLoad {
    inner: Arc<SqliteRows>,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl RowStore for FailingLoad {
    async fn ensure(&self, model: &'static str, version: u32) -> Result<(), String> {
        self.inner.ensure(model, version).await
    }
    async fn checkpoint(&self, model: &'static str) -> Result<Checkpoint, String> {
        self.inner.checkpoint(model).await
    }
    async fn load(&self, model: &'static str, keys: Vec<String>) -> Result<BTreeMap<String, String>, String> {
        if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err("injected fault after reading".into());
        }
        self.inner.load(model, keys).await
    }
    async fn commit(
        &self,
        model: &'static str,
        from: LogCursor,
        to: LogCursor,
        events: u64,
        rows: Vec<(String, String)>,
    ) -> Result<bool, String> {
        self.inner.commit(model, from, to, events, rows).await
    }
    async fn record_error(&self, model: &'static str, error: &str) -> Result<(), String> {
        self.inner.record_error(model, error).await
    }
}

#[tokio::test]
async fn a_fault_at_any_step_of_a_batch_neither_counts_twice_nor_misses() {
    for fault in
        [None, Some(CommitFault::AfterRows(0)), Some(CommitFault::AfterRows(1)), Some(CommitFault::BeforeCommit)]
    {
        let mut shop = Shop::new();
        shop.fill().await;
        let rows = shop.rows();
        // Some batches go through first, so the fault lands in the middle of the log.
        let runner = Runner::<InventoryTable>::new(shop.log.clone(), rows.clone()).with_batch_events_max(5);
        rows.ensure(InventoryTable::NAME, InventoryTable::VERSION).await.unwrap();
        runner.step().await.unwrap();
        runner.step().await.unwrap();
        match fault {
            Some(fault) => {
                rows.inject(fault);
                let err = runner.step().await.unwrap_err();
                assert!(err.to_string().contains("injected"), "{err}");
            }
            None => {
                let failing = Arc::new(FailingLoad { inner: rows.clone(), fail: true.into() });
                let err = Runner::<InventoryTable>::new(shop.log.clone(), failing)
                    .with_batch_events_max(5)
                    .step()
                    .await
                    .unwrap_err();
                assert!(err.to_string().contains("after reading"), "{err}");
            }
        }
        // A restart: a new runner on a new connection picks up from the checkpoint.
        let restarted = shop.rows();
        Runner::<InventoryTable>::new(shop.log.clone(), restarted.clone())
            .with_batch_events_max(5)
            .catch_up()
            .await
            .unwrap();
        assert_equals_fold(&shop, &restarted).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_of_one_model_fold_each_event_once() {
    let mut shop = Shop::new();
    shop.fill().await;
    let rows = shop.rows();
    rows.ensure(InventoryTable::NAME, InventoryTable::VERSION).await.unwrap();
    let run = |rows: Arc<SqliteRows>| {
        let log = shop.log.clone();
        async move {
            let runner = Runner::<InventoryTable>::new(log, rows).with_batch_events_max(3);
            loop {
                match runner.step().await {
                    Ok(0) => return,
                    Ok(_) | Err(RunError::CheckpointMoved { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
    };
    tokio::join!(run(shop.rows()), run(shop.rows()));
    assert_equals_fold(&shop, &rows).await;
}

#[tokio::test]
async fn an_unreadable_event_stops_the_model_and_its_checkpoint_says_why() {
    let mut shop = Shop::new();
    shop.fill().await;
    let event = NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "StockTeleported".into(),
        schema_version: 1,
        payload: "{}".into(),
        metadata: Metadata {
            actor: "x".into(),
            command_id: "x".into(),
            correlation_id: "x".into(),
            ..Metadata::default()
        },
        recorded_at: Utc::now(),
    };
    let out = shop
        .log
        .append(vec![StreamAppend {
            stream_id: "stock-mug@berlin".into(),
            expected: ExpectedVersion::Any,
            events: vec![event],
        }])
        .await
        .unwrap();
    let rows = shop.rows();
    let err = Runner::<InventoryTable>::new(shop.log.clone(), rows.clone()).catch_up().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("inventory_levels") && message.contains("StockTeleported"), "{message}");
    assert!(message.contains(&format!("position {}", out.last_position.unwrap())), "{message}");
    let checkpoint = rows.checkpoint(InventoryTable::NAME).await.unwrap();
    assert_eq!(checkpoint.error.as_deref(), Some(message.as_str()));
    assert!(checkpoint.cursor.position < out.last_position.unwrap(), "stopped before the unreadable event");
}

fn stock_command() -> impl Strategy<Value = (u8, u8, StockCommand)> {
    let command = prop_oneof![
        (1u32..6).prop_map(|quantity| StockCommand::Receive { quantity }),
        (-4i64..4).prop_filter("non-zero", |d| *d != 0).prop_map(|delta| StockCommand::Adjust {
            delta,
            reason: AdjustmentReason::Correction,
            expected_on_hand: None
        }),
        (0u32..4).prop_map(|quantity| StockCommand::SetSafetyStock { quantity }),
        (1u32..6).prop_map(|quantity| StockCommand::ExpectIncoming { quantity }),
    ];
    (0u8..2, 0u8..2, command)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// For random command sequences the stored model equals the fold of the whole log.
    #[test]
    fn the_stored_model_equals_the_fold_of_the_log(commands in proptest::collection::vec(stock_command(), 1..40), batch in 1u32..9) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut shop = Shop::new();
            for (sku, location, command) in commands {
                shop.stock(["mug", "cup"][sku as usize], ["berlin", "paris"][location as usize], command).await;
            }
            let rows = shop.rows();
            Runner::<InventoryTable>::new(shop.log.clone(), rows.clone()).with_batch_events_max(batch).catch_up().await.unwrap();
            assert_equals_fold(&shop, &rows).await;
        });
    }
}
