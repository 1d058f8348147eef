//! The reactor runtime on SQLite and PostgreSQL: a failing event is tried, then parked with
//! its error; the reactor stops there or moves on by its policy; an operator's retry or skip
//! is carried out and kept with who decided and why; an event this build cannot read is
//! parked, never skipped silently.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use orderlog_api::database::Database;
use orderlog_domain::{AggregateKind, DomainEvent, StreamId};
use orderlog_processes::db::Db;
use orderlog_processes::reactor::{self, Decision, OnPark, Reactor, ReactorRunner};
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamAppend};

/// Records the carts' events it sees; fails on the events of the carts in `failing`.
struct Recorder {
    on_park: OnPark,
    failing: Mutex<HashSet<String>>,
    seen: Mutex<Vec<u64>>,
}

#[async_trait]
impl Reactor for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn on_park(&self) -> OnPark {
        self.on_park
    }
    fn wants(&self, event: &RecordedEvent) -> bool {
        StreamId::kind_of(&event.stream_id) == Some(AggregateKind::Cart)
    }
    async fn react(&self, event: &RecordedEvent, _: &DomainEvent) -> Result<(), reactor::ReactError> {
        if self.failing.lock().unwrap().contains(&event.stream_id) {
            return Err(reactor::ReactError(format!("the mail server refused {}", event.stream_id)));
        }
        self.seen.lock().unwrap().push(event.position);
        Ok(())
    }
}

struct Setup {
    store: Arc<dyn EventStore>,
    db: Arc<dyn Db>,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<TestDatabase>,
}

impl Setup {
    async fn sqlite() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("orderlog.db").display().to_string()).await.unwrap();
        Setup { store: db.store(), db: db.processes().await.unwrap(), _dir: Some(dir), _pg: None }
    }

    async fn postgres() -> Setup {
        let pg = TestDatabase::create().await;
        let db = Database::open(&pg.url).await.unwrap();
        Setup { store: db.store(), db: db.processes().await.unwrap(), _dir: None, _pg: Some(pg) }
    }

    /// One event in a cart's stream; its position.
    async fn event(&self, cart: &str, event_type: &str, payload: &str) -> u64 {
        let stream_id = format!("cart-{cart}");
        let event = NewEvent {
            event_id: uuid::Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            payload: payload.into(),
            metadata: Metadata {
                actor: "test".into(),
                command_id: uuid::Uuid::new_v4().to_string(),
                command_hash: None,
                correlation_id: "c".into(),
                causation_id: None,
            },
            recorded_at: Utc::now(),
        };
        let appended = self
            .store
            .append(vec![StreamAppend { stream_id, expected: ExpectedVersion::Any, events: vec![event] }])
            .await
            .unwrap();
        assert!(self.store.settle(std::time::Duration::from_secs(30)).await.unwrap());
        appended.last_position.unwrap()
    }

    async fn expired(&self, cart: &str) -> u64 {
        self.event(cart, "CartExpired", "{}").await
    }
}

fn recorder(on_park: OnPark, failing: &[&str]) -> Arc<Recorder> {
    Arc::new(Recorder {
        on_park,
        failing: Mutex::new(failing.iter().map(|c| format!("cart-{c}")).collect()),
        seen: Mutex::default(),
    })
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn a_reactor_that_moves_on_parks_what_fails_and_an_operator_retries_or_skips_it(Setup) on [sqlite, postgres];
}
async fn a_reactor_that_moves_on_parks_what_fails_and_an_operator_retries_or_skips_it(setup: Setup) {
    let a = setup.expired("a").await;
    let b = setup.expired("b").await;
    let c = setup.expired("c").await;
    let d = setup.expired("d").await;
    let reactor = recorder(OnPark::MoveOn, &["b", "c"]);
    let runner = ReactorRunner::new(reactor.clone(), setup.store.clone(), setup.db.clone());
    assert_eq!(runner.step().await.unwrap(), 4);
    assert_eq!(*reactor.seen.lock().unwrap(), [a, d]);
    let parked = reactor::parked(&*setup.db, Some("recorder"), 10).await.unwrap();
    let positions: HashSet<u64> = parked.iter().map(|p| p.position).collect();
    assert_eq!(positions, [b, c].into());
    assert!(parked.iter().all(|p| p.state == "parked" && p.attempts == 5 && p.error.contains("mail server refused")));
    assert_eq!(runner.step().await.unwrap(), 0, "caught up");

    reactor.failing.lock().unwrap().clear();
    assert!(reactor::decide(&*setup.db, "recorder", b, Decision::Retry, "olga", "mail server is back").await.unwrap());
    assert!(reactor::decide(&*setup.db, "recorder", c, Decision::Skip, "olga", "the customer was called")
        .await
        .unwrap());
    assert!(
        !reactor::decide(&*setup.db, "recorder", c, Decision::Retry, "olga", "again").await.unwrap(),
        "decided already"
    );
    let missing = reactor::decide(&*setup.db, "recorder", 999_999, Decision::Skip, "olga", "x").await;
    assert!(missing.unwrap_err().to_string().contains("no parked event at position 999999"));
    runner.step().await.unwrap();
    assert_eq!(*reactor.seen.lock().unwrap(), [a, d, b], "the retried event, and not the skipped one");
    let parked = reactor::parked(&*setup.db, Some("recorder"), 10).await.unwrap();
    let state = |p: u64| parked.iter().find(|x| x.position == p).unwrap().clone();
    assert_eq!(state(b).state, "retried");
    assert_eq!((state(c).state.as_str(), state(c).decided_by.as_deref()), ("skipped", Some("olga")));
    assert_eq!(state(c).reason.as_deref(), Some("the customer was called"));
    assert!(state(c).decided_ms.is_some());
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn a_reactor_that_stops_waits_at_the_parked_event_until_it_is_decided(Setup) on [sqlite, postgres];
}
async fn a_reactor_that_stops_waits_at_the_parked_event_until_it_is_decided(setup: Setup) {
    let a = setup.expired("a").await;
    let b = setup.expired("b").await;
    let reactor = recorder(OnPark::Stop, &["b"]);
    let runner = ReactorRunner::new(reactor.clone(), setup.store.clone(), setup.db.clone());
    runner.step().await.unwrap();
    let c = setup.expired("c").await;
    assert_eq!(runner.step().await.unwrap(), 0, "stopped");
    assert_eq!(runner.checkpoint().await.unwrap().stopped_at, Some(b));
    assert_eq!(*reactor.seen.lock().unwrap(), [a]);
    assert!(reactor::decide(&*setup.db, "recorder", b, Decision::Skip, "olga", "duplicate mail").await.unwrap());
    assert_eq!(runner.step().await.unwrap(), 1);
    assert_eq!(*reactor.seen.lock().unwrap(), [a, c], "moved on past the skipped event");
    assert_eq!(runner.checkpoint().await.unwrap().stopped_at, None);
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn an_event_this_build_cannot_read_is_parked_with_why(Setup) on [sqlite, postgres];
}
async fn an_event_this_build_cannot_read_is_parked_with_why(setup: Setup) {
    let odd = setup.event("a", "CartTeleported", r#"{"to": "mars"}"#).await;
    let fine = setup.expired("b").await;
    let reactor = recorder(OnPark::MoveOn, &[]);
    let runner = ReactorRunner::new(reactor.clone(), setup.store.clone(), setup.db.clone());
    runner.step().await.unwrap();
    assert_eq!(*reactor.seen.lock().unwrap(), [fine]);
    let parked = reactor::parked(&*setup.db, None, 10).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].position, parked[0].event_type.as_str()), (odd, "CartTeleported"));
    assert!(parked[0].error.contains("cannot be read by this build"), "{}", parked[0].error);
    let all = reactor::reactors(&*setup.db).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].0.as_str(), all[0].1.events), ("recorder", 2));
}
