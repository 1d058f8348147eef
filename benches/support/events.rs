//! The event the append benches write (an event-sized stock reservation), and N writers
//! appending one event per call to their own streams.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use orderlog_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use uuid::Uuid;

pub const PAYLOAD: &str =
    r#"{"order_id":"h0-s1-o17","quantity":2,"sku":"tshirt-1","unit_price":{"amount":2499,"currency":"EUR"}}"#;
pub const HASH: &str = "5d41402abc4b2a76b9719d911017c592ae6d8b1e4c2f3a0b9c8d7e6f5a4b3c2d";

pub fn metadata() -> Metadata {
    Metadata {
        actor: "bench".into(),
        command_id: Uuid::new_v4().to_string(),
        command_hash: Some(HASH.into()),
        correlation_id: "bench".into(),
        causation_id: None,
    }
}

pub fn event() -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: "StockReserved".into(),
        schema_version: 1,
        payload: PAYLOAD.into(),
        metadata: metadata(),
        recorded_at: Utc::now(),
    }
}

/// Events per second that `writers` writers append in `run`, one event per call, each to
/// its own stream (named by `round`, so rounds do not share streams).
pub async fn one_event_appends(store: Arc<dyn EventStore>, writers: usize, run: Duration, round: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut version = 0;
            let stream = format!("stock-r{round}-w{w}@berlin");
            while start.elapsed() < run {
                let append = vec![StreamAppend {
                    stream_id: stream.clone(),
                    expected: ExpectedVersion::Exact(version),
                    events: vec![event()],
                }];
                store.append(append).await.unwrap();
                version += 1;
            }
            version
        }));
    }
    let mut events = 0;
    for t in tasks {
        events += t.await.unwrap();
    }
    events as f64 / start.elapsed().as_secs_f64()
}
