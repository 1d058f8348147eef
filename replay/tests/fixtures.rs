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
