//! The inventory table model on SQLite and PostgreSQL: stored rows equal the fold of the log,
//! exactly once, through faults at every step of a batch and with two runners at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use orderlog_commands::{Command, CommandEnvelope, CommandService, ManualClock, SequentialIds};
use orderlog_domain::stock::{AdjustmentReason, StockCommand};
use orderlog_domain::{LocationId, Sku, StockKey};
use orderlog_projections::catch_up;
use orderlog_projections::inventory::{
    InventoryLevels, InventoryRow, InventoryTable, INVENTORY_VIEWS_POSTGRES, INVENTORY_VIEWS_SQLITE,
};
use orderlog_projections::postgres::PostgresRows;
use orderlog_projections::sqlite::{SqliteRows, WriteFault};
use orderlog_projections::table::{Checkpoint, RowStore, RunError, Runner, TableModel};
use orderlog_projections::RowsError;
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{
    EventStore, ExpectedVersion, LogCursor, Metadata, NewEvent, PostgresStore, SqliteStore, StreamAppend,
};
use proptest::prelude::*;

/// A row store whose next commit can be made to fail.
trait Rows: RowStore {
    fn inject(&self, fault: WriteFault);
}

impl Rows for SqliteRows {
    fn inject(&self, fault: WriteFault) {
        SqliteRows::inject(self, fault)
    }
}

impl Rows for PostgresRows {
    fn inject(&self, fault: WriteFault) {
        PostgresRows::inject(self, fault)
    }
}

enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(TestDatabase),
}

struct Shop {
    backend: Backend,
    log: Arc<dyn EventStore>,
    service: CommandService,
    next: u64,
}

impl Shop {
    fn on(backend: Backend, log: Arc<dyn EventStore>) -> Shop {
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 2, 1, 8, 0, 0).unwrap()));
        let service = CommandService::new(log.clone(), clock, Arc::new(SequentialIds::new("id-")));
        Shop { backend, log, service, next: 0 }
    }

    async fn sqlite() -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(SqliteStore::open(dir.path().join("orderlog.db")).unwrap());
        Shop::on(Backend::Sqlite(dir), log)
    }

    async fn postgres() -> Shop {
        let db = TestDatabase::create().await;
        let log = Arc::new(PostgresStore::connect_url(&db.url).await.unwrap());
        Shop::on(Backend::Postgres(db), log)
    }

    /// A new connection to the read models, as a restarted process would open.
    async fn rows(&self) -> Arc<dyn Rows> {
        match &self.backend {
            Backend::Sqlite(dir) => {
                Arc::new(SqliteRows::open(dir.path().join("orderlog.db"), INVENTORY_VIEWS_SQLITE).unwrap())
            }
            Backend::Postgres(db) => Arc::new(PostgresRows::connect(&db.url, INVENTORY_VIEWS_POSTGRES).await.unwrap()),
        }
    }

    /// `on_hand` and `available` of a SKU over all locations, through the plain-SQL view.
    async fn view_by_sku(&self, sku: &str) -> (i64, i64) {
        match &self.backend {
            Backend::Sqlite(dir) => rusqlite::Connection::open(dir.path().join("orderlog.db"))
                .unwrap()
                .query_row("SELECT on_hand, available FROM inventory_by_sku WHERE sku = ?1", [sku], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap(),
            Backend::Postgres(db) => {
                let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                let row = client
                    .query_one(
                        "SELECT on_hand::bigint, available::bigint FROM inventory_by_sku WHERE sku = $1",
                        &[&sku],
                    )
                    .await
                    .unwrap();
                (row.get(0), row.get(1))
            }
        }
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
                self.stock(sku, location, StockCommand::Receive { quantity: 4 + i as u32, reference: None }).await;
                self.stock(sku, location, StockCommand::SetSafetyStock { quantity: 1 }).await;
                let damage =
                    StockCommand::Adjust { delta: -1, reason: AdjustmentReason::Damage, expected_on_hand: None };
                self.stock(sku, location, damage).await;
                self.stock(sku, location, StockCommand::Receive { quantity: 3, reference: None }).await;
            }
        }
        assert!(self.log.settle(Duration::from_secs(30)).await.unwrap());
    }

    fn runner(&self, rows: Arc<dyn Rows>, batch: u32) -> Runner<InventoryTable> {
        Runner::new(self.log.clone(), rows).with_batch_events_max(batch)
    }
}

async fn stored_rows(rows: &dyn Rows) -> BTreeMap<String, InventoryRow> {
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

async fn assert_equals_fold(shop: &Shop, rows: &dyn Rows) {
    let expected = shop.runner(shop.rows().await, 100).fold_in_memory().await.unwrap();
    assert_eq!(stored_rows(rows).await, expected, "the stored read model equals the fold of the whole log");
    let checkpoint = rows.checkpoint(InventoryTable::NAME).await.unwrap();
    let total = shop.log.read_all(LogCursor::START, 10_000).await.unwrap().len() as u64;
    assert_eq!(checkpoint.events, total, "every event folded exactly once");
}

async fn rows_equal_an_independent_fold_and_views_sum_them(mut shop: Shop) {
    shop.fill().await;
    let rows = shop.rows().await;
    let checkpoint = shop.runner(rows.clone(), 7).catch_up().await.unwrap();
    assert_eq!(checkpoint.error, None);
    assert_equals_fold(&shop, &*rows).await;
    // Independently of the table model: the in-memory levels of the same log.
    let mut levels = InventoryLevels::default();
    catch_up(&*shop.log, &mut levels, LogCursor::START, 100).await.unwrap();
    let stored = stored_rows(&*rows).await;
    for ((sku, location), level) in &levels.items {
        assert_eq!(&stored[&format!("{sku}@{location}")].level, level);
    }
    let tea: Vec<_> = levels.items.iter().filter(|((s, _), _)| s == "tea").map(|(_, l)| l).collect();
    let expected = (tea.iter().map(|l| l.on_hand).sum::<i64>(), tea.iter().map(|l| l.available).sum::<i64>());
    assert_eq!(shop.view_by_sku("tea").await, expected);
}

/// A row store whose next load fails: the fault "after reading the batch".
struct FailingLoad {
    inner: Arc<dyn Rows>,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl RowStore for FailingLoad {
    async fn ensure(&self, model: &'static str, version: u32) -> Result<(), RowsError> {
        self.inner.ensure(model, version).await
    }
    async fn checkpoint(&self, model: &'static str) -> Result<Checkpoint, RowsError> {
        self.inner.checkpoint(model).await
    }
    async fn load(&self, model: &'static str, keys: Vec<String>) -> Result<BTreeMap<String, String>, RowsError> {
        if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(RowsError::Database("injected fault after reading".into()));
        }
        self.inner.load(model, keys).await
    }
    async fn write_batch(
        &self,
        model: &'static str,
        from: LogCursor,
        to: LogCursor,
        events: u64,
        rows: Vec<(String, String)>,
    ) -> Result<bool, RowsError> {
        self.inner.write_batch(model, from, to, events, rows).await
    }
    async fn record_error(&self, model: &'static str, error: &str) -> Result<(), RowsError> {
        self.inner.record_error(model, error).await
    }
    async fn swap(&self, live: &'static str, shadow: &'static str) -> Result<bool, RowsError> {
        self.inner.swap(live, shadow).await
    }
    async fn discard(&self, model: &'static str) -> Result<(), RowsError> {
        self.inner.discard(model).await
    }
}

async fn a_fault_at_any_step_of_a_batch_neither_counts_twice_nor_misses(make: impl AsyncFn() -> Shop) {
    let faults = [None, Some(WriteFault::AfterRows(0)), Some(WriteFault::AfterRows(1)), Some(WriteFault::BeforeCommit)];
    for fault in faults {
        let mut shop = make().await;
        shop.fill().await;
        let rows = shop.rows().await;
        // Some batches go through first, so the fault lands in the middle of the log.
        let runner = shop.runner(rows.clone(), 5);
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
        let restarted = shop.rows().await;
        shop.runner(restarted.clone(), 5).catch_up().await.unwrap();
        assert_equals_fold(&shop, &*restarted).await;
    }
}

async fn two_runners_of_one_model_fold_each_event_once(mut shop: Shop) {
    shop.fill().await;
    let rows = shop.rows().await;
    rows.ensure(InventoryTable::NAME, InventoryTable::VERSION).await.unwrap();
    let run = |rows: Arc<dyn Rows>| {
        let runner = shop.runner(rows, 3);
        async move {
            loop {
                match runner.step().await {
                    Ok(0) => return,
                    Ok(_) | Err(RunError::CheckpointMoved { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
    };
    tokio::join!(run(shop.rows().await), run(shop.rows().await));
    assert_equals_fold(&shop, &*rows).await;
}

async fn an_unreadable_event_stops_the_model_and_its_checkpoint_says_why(mut shop: Shop) {
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
    let append = vec![StreamAppend {
        stream_id: "stock-mug@berlin".into(),
        expected: ExpectedVersion::Any,
        events: vec![event],
    }];
    let out = shop.log.append(append).await.unwrap();
    assert!(shop.log.settle(Duration::from_secs(30)).await.unwrap());
    let rows = shop.rows().await;
    let err = shop.runner(rows.clone(), 1_000).catch_up().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("inventory_levels") && message.contains("StockTeleported"), "{message}");
    assert!(message.contains(&format!("position {}", out.last_position.unwrap())), "{message}");
    let checkpoint = rows.checkpoint(InventoryTable::NAME).await.unwrap();
    assert_eq!(checkpoint.error.as_deref(), Some(message.as_str()));
    let total = shop.log.read_all(LogCursor::START, 10_000).await.unwrap().len() as u64;
    assert_eq!(checkpoint.events, total - 1, "every event before the unreadable one was folded");
    assert!(checkpoint.cursor.position < out.last_position.unwrap());
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn rows_equal_an_independent_fold_and_views_sum_them(Shop) on [sqlite, postgres];
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn a_fault_at_any_step_of_a_batch_neither_counts_twice_nor_misses(Shop::*) on [sqlite, postgres];
}

orderlog_store::each_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fn two_runners_of_one_model_fold_each_event_once(Shop) on [sqlite, postgres];
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn an_unreadable_event_stops_the_model_and_its_checkpoint_says_why(Shop) on [sqlite, postgres];
}

fn stock_command() -> impl Strategy<Value = (u8, u8, StockCommand)> {
    let command = prop_oneof![
        (1u32..6).prop_map(|quantity| StockCommand::Receive { quantity, reference: None }),
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

async fn the_stored_model_equals_the_fold(mut shop: Shop, commands: Vec<(u8, u8, StockCommand)>, batch: u32) {
    for (sku, location, command) in commands {
        shop.stock(["mug", "cup"][sku as usize], ["berlin", "paris"][location as usize], command).await;
    }
    assert!(shop.log.settle(Duration::from_secs(30)).await.unwrap());
    let rows = shop.rows().await;
    shop.runner(rows.clone(), batch).catch_up().await.unwrap();
    assert_equals_fold(&shop, &*rows).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// For random command sequences the stored model equals the fold of the whole log.
    #[test]
    fn the_stored_model_equals_the_fold_of_the_log(
        commands in proptest::collection::vec(stock_command(), 1..40),
        batch in 1u32..9,
        postgres in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let shop = if postgres { Shop::postgres().await } else { Shop::sqlite().await };
            the_stored_model_equals_the_fold(shop, commands, batch).await;
        });
    }
}

/// The inventory model as a later build would fold it: same rows, version 2.
struct InventoryV2;

impl TableModel for InventoryV2 {
    const NAME: &'static str = InventoryTable::NAME;
    const VERSION: u32 = InventoryTable::VERSION + 1;
    type Row = <InventoryTable as TableModel>::Row;

    fn wants(event: &orderlog_store::RecordedEvent) -> bool {
        InventoryTable::wants(event)
    }
    fn keys(event: &orderlog_store::RecordedEvent, decoded: &orderlog_domain::codec::DomainEvent) -> Vec<String> {
        InventoryTable::keys(event, decoded)
    }
    fn evolve(
        row: Self::Row,
        key: &str,
        event: &orderlog_store::RecordedEvent,
        decoded: &orderlog_domain::codec::DomainEvent,
    ) -> Self::Row {
        InventoryTable::evolve(row, key, event, decoded)
    }
}

impl Shop {
    /// Reads the plain-SQL view over and over until `stop`; returns (reads, failures).
    fn reader(&self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<(u32, Vec<String>)> {
        enum Conn {
            Sqlite(std::path::PathBuf),
            Postgres(String),
        }
        let conn = match &self.backend {
            Backend::Sqlite(dir) => Conn::Sqlite(dir.path().join("orderlog.db")),
            Backend::Postgres(db) => Conn::Postgres(db.url.clone()),
        };
        tokio::spawn(async move {
            let (mut reads, mut failures) = (0u32, Vec::new());
            let pg = match &conn {
                Conn::Postgres(url) => {
                    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                    tokio::spawn(connection);
                    Some(client)
                }
                Conn::Sqlite(_) => None,
            };
            let lite = match &conn {
                Conn::Sqlite(path) => Some(rusqlite::Connection::open(path).unwrap()),
                Conn::Postgres(_) => None,
            };
            while !*stop.borrow() {
                let read: Result<i64, String> = match (&pg, &lite) {
                    (Some(client), _) => client
                        .query_one("SELECT COALESCE(SUM(on_hand), 0)::bigint FROM inventory_by_location", &[])
                        .await
                        .map(|r| r.get(0))
                        .map_err(|e| e.to_string()),
                    (_, Some(conn)) => conn
                        .query_row("SELECT COALESCE(SUM(on_hand), 0) FROM inventory_by_location", [], |r| r.get(0))
                        .map_err(|e| e.to_string()),
                    _ => unreachable!(),
                };
                match read {
                    Ok(_) => reads += 1,
                    Err(e) => failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (reads, failures)
        })
    }
}

async fn a_rebuild_swaps_in_while_writers_write_and_readers_read(mut shop: Shop) {
    use orderlog_projections::projector;
    shop.fill().await;
    let rows = shop.rows().await;
    shop.runner(rows.clone(), 5).catch_up().await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The live model keeps being updated by its own runner, and keeps being read.
    let live: Arc<dyn projector::AnyRunner> = Arc::new(shop.runner(shop.rows().await, 5));
    let live_task = tokio::spawn(projector::run_live(shop.log.clone(), vec![live.clone()], stopped.clone()));
    let reader = shop.reader(stopped.clone());
    let log = shop.log.clone();
    let writer = tokio::spawn(async move {
        let service =
            CommandService::new(log, Arc::new(orderlog_commands::SystemClock), Arc::new(SequentialIds::new("w-")));
        for i in 0..60u32 {
            let stock = StockKey::new(
                Sku::parse(["mug", "tea"][i as usize % 2]).unwrap(),
                LocationId::parse("berlin").unwrap(),
            );
            let command = StockCommand::Receive { quantity: 1, reference: None };
            service
                .execute(CommandEnvelope::new(format!("w{i}"), "writer", Command::Stock { stock, command }))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    let rebuilt = shop.runner(rows.clone(), 3).rebuild().await.unwrap();
    assert_eq!(rebuilt.version, InventoryTable::VERSION);
    writer.await.unwrap();
    assert!(shop.log.settle(Duration::from_secs(30)).await.unwrap());
    assert!(projector::wait_caught_up(&*shop.log, &*live, Duration::from_secs(30)).await.unwrap());
    stop.send(true).unwrap();
    for (name, ended) in live_task.await.unwrap() {
        ended.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let (reads, failures) = reader.await.unwrap();
    assert!(failures.is_empty(), "reads failed during the rebuild: {failures:?}");
    assert!(reads > 5, "the reader read while the rebuild ran ({reads})");
    assert_equals_fold(&shop, &*rows).await;
    assert!(rows.checkpoint("inventory_levels__rebuild").await.is_err(), "the rebuild's copy is gone after the swap");
    // A second rebuild of an up-to-date model swaps again, and nothing changes.
    shop.runner(rows.clone(), 50).rebuild().await.unwrap();
    assert_equals_fold(&shop, &*rows).await;
}

async fn a_new_version_of_a_model_is_rebuilt_beside_the_old_one(mut shop: Shop) {
    use orderlog_projections::projector;
    shop.fill().await;
    let rows = shop.rows().await;
    shop.runner(rows.clone(), 5).catch_up().await.unwrap();
    let v2 = Runner::<InventoryV2>::new(shop.log.clone(), rows.clone());
    assert!(matches!(v2.step().await, Err(RunError::VersionMismatch { stored: 1, current: 2, .. })));
    // An interrupted rebuild of the old version is left behind; it is discarded, not reused.
    let stale = Runner::<InventoryTable>::shadow(shop.log.clone(), rows.clone()).with_batch_events_max(2);
    stale.ensure().await.unwrap();
    stale.step().await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner: Arc<dyn projector::AnyRunner> = Arc::new(Runner::<InventoryV2>::new(shop.log.clone(), rows.clone()));
    let task = tokio::spawn(projector::run_live(shop.log.clone(), vec![runner.clone()], stopped));
    assert!(projector::wait_caught_up(&*shop.log, &*runner, Duration::from_secs(30)).await.unwrap());
    stop.send(true).unwrap();
    for (name, ended) in task.await.unwrap() {
        ended.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let checkpoint = rows.checkpoint(InventoryTable::NAME).await.unwrap();
    assert_eq!(checkpoint.version, 2);
    assert!(runner.verify().await.unwrap());
}

orderlog_store::each_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fn a_rebuild_swaps_in_while_writers_write_and_readers_read(Shop) on [sqlite, postgres];
}

orderlog_store::each_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fn a_new_version_of_a_model_is_rebuilt_beside_the_old_one(Shop) on [sqlite, postgres];
}
