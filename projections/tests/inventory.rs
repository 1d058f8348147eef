//! Inventory levels folded from a real log.

use chrono::Utc;
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::stock::StockEvent;
use orderlog_domain::OrderId;
use orderlog_projections::inventory::InventoryLevels;
use orderlog_projections::{catch_up, ProjectionError};
use orderlog_store::{EventStore, ExpectedVersion, LogCursor, MemoryStore, Metadata, NewEvent, StreamAppend};

fn new_event(event_type: &str, payload: String) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: event_type.into(),
        schema_version: orderlog_domain::codec::schema_version_of(event_type),
        payload,
        metadata: Metadata {
            actor: "t".into(),
            command_id: uuid::Uuid::new_v4().to_string(),
            correlation_id: "t".into(),
            ..Metadata::default()
        },
        recorded_at: Utc::now(),
    }
}

async fn append_stock(store: &MemoryStore, stream: &str, events: Vec<StockEvent>) {
    let events = events
        .into_iter()
        .map(|e| {
            let d = DomainEvent::Stock(e);
            new_event(d.event_type(), d.payload())
        })
        .collect();
    store
        .append(vec![StreamAppend { stream_id: stream.into(), expected: ExpectedVersion::Any, events }])
        .await
        .unwrap();
}

#[tokio::test]
async fn levels_follow_the_stock_events_in_small_batches() {
    let store = MemoryStore::new();
    let o1 = OrderId::parse("o1").unwrap();
    append_stock(
        &store,
        "stock-mug@berlin",
        vec![StockEvent::StockReceived { units: 10, reference: None }, StockEvent::IncomingExpected { quantity: 5 }],
    )
    .await;
    append_stock(&store, "stock-mug@hamburg", vec![StockEvent::StockReceived { units: 3, reference: None }]).await;
    append_stock(
        &store,
        "stock-mug@berlin",
        vec![
            StockEvent::StockReserved { order_id: o1.clone(), quantity: 4 },
            StockEvent::SafetyStockSet { quantity: 2 },
        ],
    )
    .await;
    let mut levels = InventoryLevels::default();
    let checkpoint = catch_up(&store, &mut levels, LogCursor::START, 2).await.unwrap();
    assert_eq!(checkpoint.position, 5);
    let berlin = &levels.items[&("mug".to_string(), "berlin".to_string())];
    assert_eq!(
        (berlin.on_hand, berlin.reserved, berlin.unavailable, berlin.available, berlin.incoming),
        (10, 4, 2, 4, 5)
    );
    assert_eq!(levels.by_sku()["mug"].on_hand, 13);
    assert_eq!(levels.oversold_units(), 0);
    // Catching up from the checkpoint folds only what is new.
    append_stock(&store, "stock-mug@hamburg", vec![StockEvent::StockReceived { units: 1, reference: None }]).await;
    assert_eq!(catch_up(&store, &mut levels, checkpoint, 2).await.unwrap().position, 6);
    assert_eq!(levels.items[&("mug".to_string(), "hamburg".to_string())].on_hand, 4);
}

#[tokio::test]
async fn an_unreadable_event_stops_the_projection_naming_it() {
    let store = MemoryStore::new();
    append_stock(&store, "stock-mug@berlin", vec![StockEvent::StockReceived { units: 1, reference: None }]).await;
    store
        .append(vec![StreamAppend {
            stream_id: "stock-mug@berlin".into(),
            expected: ExpectedVersion::Any,
            events: vec![new_event("StockTeleported", "{}".into())],
        }])
        .await
        .unwrap();
    let mut levels = InventoryLevels::default();
    let err = catch_up(&store, &mut levels, LogCursor::START, 10).await.unwrap_err();
    assert!(matches!(err, ProjectionError::Unreadable { position: 2, .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("inventory_levels") && message.contains("StockTeleported"), "{message}");
}
