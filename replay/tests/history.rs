//! Time travel against the log: the state at version N is the fold of the first N events,
//! the state as of a time is the fold of the events recorded by then, and a business flow
//! is found across streams.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use orderlog_commands::{Command, CommandEnvelope, CommandService, ManualClock, SequentialIds};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::stock::{AdjustmentReason, Stock, StockCommand, StockEvent};
use orderlog_domain::{Decider, LocationId, Sku, StockKey};
use orderlog_replay::history::{correlated, stream_history, Point};
use orderlog_replay::ReplayError;
use orderlog_store::{EventStore, MemoryStore};
use proptest::prelude::*;

const STREAM: &str = "stock-mug@berlin";

async fn stocked(commands: &[StockCommand]) -> (Arc<MemoryStore>, chrono::DateTime<Utc>) {
    let store = Arc::new(MemoryStore::new());
    let start = Utc.with_ymd_and_hms(2026, 5, 1, 8, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let service = CommandService::new(store.clone(), clock.clone(), Arc::new(SequentialIds::new("id-")));
    for (i, command) in commands.iter().enumerate() {
        clock.advance(Duration::minutes(10));
        let stock = StockKey::new(Sku::parse("mug").unwrap(), LocationId::parse("berlin").unwrap());
        let envelope = CommandEnvelope::new(
            format!("c{i}"),
            format!("clerk{}", i % 3),
            Command::Stock { stock, command: command.clone() },
        )
        .correlated(format!("flow{}", i % 2));
        let _ = service.execute(envelope).await;
    }
    (store, start)
}

fn fold_first(events: &[orderlog_store::RecordedEvent]) -> serde_json::Value {
    let typed: Vec<StockEvent> = events
        .iter()
        .map(|e| match DomainEvent::decode(&e.event_type, e.schema_version, &e.payload).unwrap() {
            DomainEvent::Stock(s) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    serde_json::to_value(Stock::fold(&typed)).unwrap()
}

fn command() -> impl Strategy<Value = StockCommand> {
    prop_oneof![
        (1u32..9).prop_map(|quantity| StockCommand::Receive { quantity, reference: None }),
        (-3i64..3).prop_filter("non-zero", |d| *d != 0).prop_map(|delta| StockCommand::Adjust {
            delta,
            reason: AdjustmentReason::CycleCount,
            expected_on_hand: None
        }),
        (0u32..4).prop_map(|quantity| StockCommand::SetSafetyStock { quantity }),
        (1u32..5).prop_map(|quantity| StockCommand::ExpectIncoming { quantity }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// `history --at-version N` is the fold of the stream's first N events, and
    /// `--as-of T` the fold of the events recorded at or before T.
    #[test]
    fn the_state_at_a_version_or_time_is_the_fold_of_the_events_before_it(
        commands in proptest::collection::vec(command(), 1..30),
        cut in 0.0f64..1.0,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (store, start) = stocked(&commands).await;
            let all = store.read_stream(STREAM, 1, 10_000).await.unwrap();
            prop_assume!(!all.is_empty());
            let n = ((all.len() as f64) * cut) as u64;
            let at = stream_history(&*store, STREAM, Point::AtVersion(n)).await.unwrap();
            assert_eq!(at.version, n);
            assert_eq!(at.events.len() as u64, n);
            assert_eq!(at.state, fold_first(&all[..n as usize]));
            assert_eq!(at.current_version, all.len() as u64);
            let moment = start + Duration::minutes(10 * (n as i64 + 1)) - Duration::seconds(1);
            let by_time: Vec<_> = all.iter().filter(|e| e.recorded_at <= moment).cloned().collect();
            let as_of = stream_history(&*store, STREAM, Point::AsOf(moment)).await.unwrap();
            assert_eq!(as_of.state, fold_first(&by_time));
            assert_eq!(as_of.events.len(), by_time.len());
            let latest = stream_history(&*store, STREAM, Point::Latest).await.unwrap();
            assert_eq!(latest.state, fold_first(&all));
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn history_names_who_and_why_and_finds_a_flow_across_streams() {
    let (store, _) = stocked(&[
        StockCommand::Receive { quantity: 3, reference: None },
        StockCommand::SetSafetyStock { quantity: 1 },
    ])
    .await;
    let history = stream_history(&*store, STREAM, Point::Latest).await.unwrap();
    assert_eq!(history.events[0].actor, "clerk0");
    assert_eq!(history.events[1].actor, "clerk1");
    assert_eq!(history.events[0].correlation_id, "flow0");
    assert_eq!(history.events[0].command_id, "c0");
    assert_eq!(history.state["on_hand"], 3);
    let flow = correlated(&*store, "flow1").await.unwrap();
    assert_eq!(flow.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(), ["SafetyStockSet"]);
    assert!(correlated(&*store, "nobody").await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_requests_are_named() {
    let (store, _) = stocked(&[StockCommand::Receive { quantity: 3, reference: None }]).await;
    let err = |r: Result<_, ReplayError>| r.err().unwrap().to_string();
    assert!(err(stream_history(&*store, "stock-tea@berlin", Point::Latest).await).contains("no stream"));
    assert!(err(stream_history(&*store, "invoice-7", Point::Latest).await).contains("not an aggregate's stream"));
    assert!(err(stream_history(&*store, STREAM, Point::AtVersion(9)).await).contains("at version 1"));
}
