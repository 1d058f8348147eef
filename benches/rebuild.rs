//! Rebuilding a read model from a large log, against the raw rate of scanning the same log,
//! in one run: a log of stock events is written (100-event appends over 5 000 stock items),
//! then read end to end through the store twice (the second is the raw scan; the first
//! warms the caches), then folded into the inventory table model from an empty checkpoint
//! (the rebuild).
//!
//! `cargo bench --bench rebuild [-- EVENTS [sqlite|postgres]]` (default 1 000 000, sqlite)

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::stock::StockEvent;
use orderlog_domain::OrderId;
use orderlog_projections::inventory::{InventoryTable, INVENTORY_VIEWS_POSTGRES, INVENTORY_VIEWS_SQLITE};
use orderlog_projections::postgres::PostgresRows;
use orderlog_projections::sqlite::SqliteRows;
use orderlog_projections::table::{RowStore, Runner};
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{
    EventStore, ExpectedVersion, LogCursor, Metadata, NewEvent, PostgresStore, SqliteStore, StreamAppend,
    READ_EVENTS_MAX,
};
use uuid::Uuid;

const STOCK_ITEMS: u64 = 5_000;
const APPEND_EVENTS: u64 = 100;

fn event(i: u64) -> NewEvent {
    let order = OrderId::parse(format!("o{i}")).unwrap();
    let stock = match i % 4 {
        0 => StockEvent::StockReceived { quantity: 5 },
        1 => StockEvent::StockReserved { order_id: order, quantity: 2 },
        2 => StockEvent::ReservationReleased { order_id: order, quantity: 1 },
        _ => StockEvent::IncomingExpected { quantity: 3 },
    };
    let domain = DomainEvent::Stock(stock);
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: domain.event_type().into(),
        schema_version: 1,
        payload: domain.payload(),
        metadata: Metadata {
            actor: "bench".into(),
            command_id: format!("c{}", i / APPEND_EVENTS),
            command_hash: None,
            correlation_id: "bench".into(),
            causation_id: None,
        },
        recorded_at: Utc::now(),
    }
}

async fn fill(log: &dyn EventStore, events: u64) {
    let mut versions = vec![0u64; STOCK_ITEMS as usize];
    let started = Instant::now();
    for append in 0..events / APPEND_EVENTS {
        let item = (append % STOCK_ITEMS) as usize;
        let batch = (0..APPEND_EVENTS).map(|i| event(append * APPEND_EVENTS + i)).collect();
        let stream = format!("stock-sku{item}@loc{}", item % 3);
        log.append(vec![StreamAppend {
            stream_id: stream,
            expected: ExpectedVersion::Exact(versions[item]),
            events: batch,
        }])
        .await
        .unwrap();
        versions[item] += APPEND_EVENTS;
    }
    eprintln!("wrote {events} events in {:.1} s", started.elapsed().as_secs_f64());
}

/// Events per second of reading the whole log through the store.
async fn scan(log: &dyn EventStore) -> (u64, f64) {
    let started = Instant::now();
    let mut cursor = LogCursor::START;
    let mut count = 0u64;
    loop {
        let page = log.read_all(cursor, READ_EVENTS_MAX).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = LogCursor::after(last);
        count += page.len() as u64;
    }
    (count, count as f64 / started.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let events: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let postgres = args.get(1).is_some_and(|b| b == "postgres");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut db = None;
        let (log, rows): (Arc<dyn EventStore>, Arc<dyn RowStore>) = if postgres {
            let test_db = TestDatabase::create().await;
            let log = Arc::new(PostgresStore::connect_url(&test_db.url).await.unwrap());
            let rows = Arc::new(PostgresRows::connect(&test_db.url, INVENTORY_VIEWS_POSTGRES).await.unwrap());
            db = Some(test_db);
            (log, rows)
        } else {
            let path = dir.path().join("orderlog.db");
            let log = Arc::new(SqliteStore::open(&path).unwrap());
            (log, Arc::new(SqliteRows::open(&path, INVENTORY_VIEWS_SQLITE).unwrap()))
        };
        fill(&*log, events).await;
        assert!(log.settle(std::time::Duration::from_secs(60)).await.unwrap());
        // A first scan warms the caches, so that neither measurement pays for it.
        scan(&*log).await;
        let (scanned, raw) = scan(&*log).await;
        let started = Instant::now();
        let checkpoint = Runner::<InventoryTable>::new(log.clone(), rows)
            .with_batch_events_max(READ_EVENTS_MAX)
            .catch_up()
            .await
            .unwrap();
        let rebuild = checkpoint.events as f64 / started.elapsed().as_secs_f64();
        assert_eq!(checkpoint.events, scanned);
        let backend = if postgres { "PostgreSQL" } else { "SQLite" };
        println!("{backend}, {scanned} events");
        println!("raw scan through the store:   {raw:>10.0} events/s");
        println!("inventory_levels rebuild:     {rebuild:>10.0} events/s");
        println!("ratio rebuild / raw scan:     {:>10.2}", rebuild / raw);
        drop(db);
    });
}
