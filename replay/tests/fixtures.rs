//! A log written by an older build (fixtures of older event versions, kept in
//! `domain/tests/fixtures/`) replays under this one: every event is upcast to its current
//! version when read, the aggregates fold from it, and new commands append on top.

use std::sync::Arc;

use chrono::Utc;
use orderlog_commands::{Command, CommandEnvelope, CommandService, RandomIds, SystemClock};
use orderlog_domain::codec::{schema_version_of, DecodeError, DomainEvent};
use orderlog_domain::stock::{StockCommand, StockEvent};
use orderlog_domain::{LocationId, Sku, StockKey};
use orderlog_replay::history::{stream_history, Point};
use orderlog_store::{EventStore, ExpectedVersion, MemoryStore, Metadata, NewEvent, StreamAppend};
use serde_json::Value;

const V1_LOG: &str = include_str!("../../domain/tests/fixtures/v1-stock-log.ndjson");

fn fixture() -> Vec<Value> {
    V1_LOG.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_fixture_event_is_upcast_to_its_current_version() {
    for line in fixture() {
        let (event_type, version) = (line["type"].as_str().unwrap(), line["schema_version"].as_u64().unwrap() as u32);
        let decoded = DomainEvent::decode(event_type, version, &line["payload"].to_string())
            .unwrap_or_else(|e| panic!("{event_type} v{version}: {e}"));
        assert_eq!(decoded.event_type(), event_type);
        if event_type == "StockReceived" {
            assert!(version < schema_version_of(event_type), "the fixture holds an older version");
            let DomainEvent::Stock(StockEvent::StockReceived { units, reference }) = decoded else { panic!() };
            assert_eq!(units as u64, line["payload"]["quantity"].as_u64().unwrap());
            assert_eq!(reference, None);
        }
    }
}

#[test]
fn a_version_newer_than_the_build_is_a_clear_error() {
    let error = DomainEvent::decode("StockReceived", 3, r#"{"units":1,"reference":null,"pallet":"P1"}"#).unwrap_err();
    assert!(matches!(error, DecodeError::NewerSchema { found: 3, supported: 2, .. }));
    assert_eq!(error.to_string(), "event type 'StockReceived' has schema version 3, newer than the 2 this build knows");
}

#[tokio::test]
async fn an_older_log_replays_and_takes_new_commands() {
    let store = Arc::new(MemoryStore::new());
    for (i, line) in fixture().into_iter().enumerate() {
        let event = NewEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: line["type"].as_str().unwrap().into(),
            schema_version: line["schema_version"].as_u64().unwrap() as u32,
            payload: line["payload"].to_string(),
            metadata: Metadata {
                actor: "old-build".into(),
                command_id: format!("old-{i}"),
                correlation_id: format!("old-{i}"),
                ..Metadata::default()
            },
            recorded_at: Utc::now(),
        };
        let stream_id = line["stream_id"].as_str().unwrap().to_string();
        store
            .append(vec![StreamAppend { stream_id, expected: ExpectedVersion::Any, events: vec![event] }])
            .await
            .unwrap();
    }
    let mug = stream_history(&*store, "stock-mug@berlin", Point::Latest).await.unwrap();
    assert_eq!((mug.state["on_hand"].as_i64(), mug.state["reserved"].as_i64()), (Some(40 - 3 + 10), Some(0)));
    assert_eq!(mug.state["unavailable"], 2, "safety stock");
    let tea = stream_history(&*store, "stock-tea@hamburg", Point::Latest).await.unwrap();
    assert_eq!((tea.state["on_hand"].as_i64(), tea.state["incoming"].as_i64()), (Some(12), Some(0)));

    let service = CommandService::new(store.clone(), Arc::new(SystemClock), Arc::new(RandomIds));
    let stock = StockKey::new(Sku::parse("mug").unwrap(), LocationId::parse("berlin").unwrap());
    let receive = StockCommand::Receive { quantity: 5, reference: Some("DN-881".into()) };
    service.execute(CommandEnvelope::new("new-1", "clerk", Command::Stock { stock, command: receive })).await.unwrap();
    let events = store.read_stream("stock-mug@berlin", 1, 100).await.unwrap();
    let received: Vec<u32> =
        events.iter().filter(|e| e.event_type == "StockReceived").map(|e| e.schema_version).collect();
    assert_eq!(received, [1, 1, 2], "old events keep their version; new ones are written at the current one");
    let mug = stream_history(&*store, "stock-mug@berlin", Point::Latest).await.unwrap();
    assert_eq!(mug.state["on_hand"], 52);
}

/// A whole shop's log as `orderlog export` wrote it before the command registry (the demo,
/// 12 orders): it names stock leaving with a shipment `StockCommitted`, which this build
/// reads as `StockDispatched`.
const LOG_BEFORE_REGISTRY: &str = include_str!("fixtures/log-before-registry.ndjson");

#[tokio::test]
async fn a_log_written_before_the_registry_imports_verifies_and_folds() {
    use orderlog_projections::inventory::InventoryLevels;
    use orderlog_projections::Projection;
    use orderlog_replay::archive::import;
    use orderlog_replay::progress::Progress;

    assert!(LOG_BEFORE_REGISTRY.contains(r#""type":"StockCommitted""#), "the fixture holds the old name");
    let store = Arc::new(MemoryStore::new());
    let open = || -> Result<Box<dyn std::io::BufRead + Send>, orderlog_replay::ReplayError> {
        Ok(Box::new(std::io::Cursor::new(LOG_BEFORE_REGISTRY.as_bytes())))
    };
    let imported = import(&*store, &open, &mut Progress::quiet(), &mut Progress::quiet()).await.unwrap();
    assert_eq!(imported, LOG_BEFORE_REGISTRY.lines().count() as u64 - 1);
    let report = orderlog_replay::verify_chains(&*store).await.unwrap();
    assert_eq!(report.first_broken, None);

    // Every event decodes, and the stock items fold to what the inventory projection says.
    let events = store.read_all(orderlog_store::LogCursor::START, 10_000).await.unwrap();
    let mut levels = InventoryLevels::default();
    let mut dispatched = 0;
    for event in &events {
        let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload)
            .unwrap_or_else(|e| panic!("position {}: {e}", event.position));
        dispatched += u32::from(matches!(decoded, DomainEvent::Stock(StockEvent::StockDispatched { .. })));
        levels.apply(event, &decoded);
    }
    assert_eq!(dispatched, 10);
    let mut checked = 0;
    for stream in events.iter().map(|e| e.stream_id.as_str()).filter(|s| s.starts_with("stock-")) {
        let history = stream_history(&*store, stream, Point::Latest).await.unwrap();
        let (sku, location) = stream["stock-".len()..].split_once('@').unwrap();
        let level = &levels.items[&(sku.to_string(), location.to_string())];
        let folded = (history.state["on_hand"].as_i64(), history.state["reserved"].as_i64());
        assert_eq!(folded, (Some(level.on_hand), Some(level.reserved)), "{stream}");
        checked += 1;
    }
    assert!(checked > 20);

    // New commands append on top of the old log: a shipped stock item takes a receipt.
    let service = CommandService::new(store.clone(), Arc::new(SystemClock), Arc::new(RandomIds));
    let dispatched_from = events.iter().find(|e| e.event_type == "StockCommitted").unwrap().stream_id.clone();
    let (sku, location) = dispatched_from["stock-".len()..].split_once('@').unwrap();
    let stock = StockKey::new(Sku::parse(sku).unwrap(), LocationId::parse(location).unwrap());
    let receive = StockCommand::Receive { quantity: 3, reference: None };
    let outcome = service
        .execute(CommandEnvelope::new("after-1", "clerk", Command::Stock { stock, command: receive }))
        .await
        .unwrap();
    assert_eq!(outcome.events_appended, 1);
}
