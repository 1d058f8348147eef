//! The process side on PostgreSQL, in one run:
//!
//! 1. Reactor throughput: a log of EVENTS events (half stock, half order lifecycles) is
//!    read from the start by the order-status projection runner, a reactor that does
//!    nothing, and the webhook reactor (one subscriber to every order type, so it queues a
//!    message per order event it maps); each one's events/s and its ratio to the runner's.
//! 2. Timer precision: 10 000 deadlines fall due within one minute (spread evenly from 5 s
//!    on) while the deadline index follows the log and the timer runs as `orderlog serve`
//!    runs it; lateness = when `DeadlineFired` was recorded − the due time; p50, p99, max.
//!    Their commands expire orders that do not exist, so each fire is a refusal: the same
//!    load, decide and append as any fire.
//! 3. Webhook delivery: 100 subscribers on one fast local receiver (204 at once), each with
//!    the messages of 100 order events queued; deliveries/s until all are delivered. Then one
//!    subscriber that accepts connections and never answers, with 10 000 messages queued,
//!    for 30 s: the process's resident memory at the start and the end.
//!
//! `cargo bench --bench processes [-- EVENTS]` (default 200 000).

#[path = "support/log.rs"]
mod log;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use orderlog_api::database::Database;
use orderlog_commands::{CommandService, RandomIds, SystemClock};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::deadline::{DeadlineEvent, DeadlineId};
use orderlog_domain::OrderId;
use orderlog_processes::reactor::{OnPark, Reactor, ReactorRunner};
use orderlog_processes::timer::Timer;
use orderlog_processes::webhooks::{integration, Dispatcher, WebhookConfig, WebhookReactor, Webhooks};
use orderlog_projections::deadlines::DeadlineTable;
use orderlog_projections::orders::OrderStatusTable;
use orderlog_projections::projector::{self, Always};
use orderlog_projections::table::Runner;
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{ExpectedVersion, RecordedEvent, StreamAppend, READ_EVENTS_MAX};

struct Nothing;

#[async_trait]
impl Reactor for Nothing {
    fn name(&self) -> &'static str {
        "nothing"
    }
    fn on_park(&self) -> OnPark {
        OnPark::MoveOn
    }
    fn wants(&self, _: &RecordedEvent) -> bool {
        true
    }
    async fn react(&self, _: &RecordedEvent, _: &DomainEvent) -> Result<(), orderlog_processes::reactor::ReactError> {
        Ok(())
    }
}

async fn reactor_rate(runner: &ReactorRunner) -> (u64, f64) {
    let started = Instant::now();
    let mut events = 0u64;
    loop {
        let n = runner.step().await.unwrap();
        if n == 0 {
            break;
        }
        events += n as u64;
    }
    (events, events as f64 / started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn reactors(db: &Database, events: u64) {
    let store = db.store();
    log::fill(&*store, events).await;
    assert!(store.settle(Duration::from_secs(60)).await.unwrap());
    let rows = db.rows().await.unwrap();
    let started = Instant::now();
    let checkpoint = Runner::<OrderStatusTable>::new(store.clone(), rows)
        .with_batch_events_max(READ_EVENTS_MAX)
        .catch_up()
        .await
        .unwrap();
    let runner = checkpoint.events as f64 / started.elapsed().as_secs_f64();
    println!("order_status projection runner: {runner:>10.0} events/s ({} events)", checkpoint.events);
    let process_db = db.processes().await.unwrap();
    let nothing = ReactorRunner::new(Arc::new(Nothing), store.clone(), process_db.clone());
    let (n, rate) = reactor_rate(&nothing).await;
    println!("no-op reactor:                  {rate:>10.0} events/s ({n} events)   ratio {:.2}", rate / runner);
    let webhooks = Webhooks::new(process_db.clone(), WebhookConfig { allow_private: true, ..Default::default() });
    let types: Vec<String> =
        integration::TYPES.iter().filter(|t| t.starts_with("order.")).map(|t| t.to_string()).collect();
    webhooks.create("http://127.0.0.1:9/hooks", &types, "bench").await.unwrap();
    let queueing = ReactorRunner::new(Arc::new(WebhookReactor::new(webhooks.clone())), store, process_db);
    let (n, rate) = reactor_rate(&queueing).await;
    println!("webhook reactor (1 subscriber): {rate:>10.0} events/s ({n} events)   ratio {:.2}", rate / runner);
}

async fn timer(db: &Database) {
    const DEADLINES: u64 = 10_000;
    let store = db.store();
    let start = Utc::now() + chrono::Duration::seconds(5);
    let due = move |i: u64| start + chrono::Duration::milliseconds((i * 60_000 / DEADLINES) as i64);
    let made = Instant::now();
    let writers: Vec<_> = (0..16u64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..DEADLINES).step_by(16) {
                    let order = OrderId::parse(format!("gone{i}")).unwrap();
                    let id = DeadlineId::order_payment(&order);
                    let command = serde_json::json!({"target": "expire_order", "order_id": order.as_str()});
                    let event = DomainEvent::Deadline(DeadlineEvent::DeadlineScheduled { due_at: due(i), command });
                    let append = StreamAppend {
                        stream_id: format!("deadline-{id}"),
                        expected: ExpectedVersion::NoStream,
                        events: vec![log::envelope(event, format!("schedule{i}"))],
                    };
                    store.append(vec![append]).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    println!("scheduled {DEADLINES} deadlines in {:.1} s", made.elapsed().as_secs_f64());
    let rows = db.rows().await.unwrap();
    let index = projector::runner::<DeadlineTable>(store.clone(), rows);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(projector::run_live(store.clone(), vec![index], stopped.clone()));
    let service = Arc::new(CommandService::new(store.clone(), Arc::new(SystemClock), Arc::new(RandomIds)));
    let timer = Timer::new(service, db.queries(2).await.unwrap(), Arc::new(SystemClock));
    let timer = tokio::spawn(timer.run(Arc::new(Always), stopped));
    let queries = db.queries(1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let last = queries
            .deadline(
                &DeadlineId::order_payment(&OrderId::parse(format!("gone{}", DEADLINES - 1)).unwrap()).to_string(),
            )
            .await
            .unwrap();
        let waiting = queries.due_deadlines(i64::MAX, 1).await.unwrap().len();
        if last.is_some_and(|r| r.status != "scheduled") && waiting == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the deadlines did not all fire");
    }
    stop.send(true).unwrap();
    timer.await.unwrap();
    live.await.unwrap();
    let mut lateness = Vec::new();
    for i in 0..DEADLINES {
        let id = DeadlineId::order_payment(&OrderId::parse(format!("gone{i}")).unwrap());
        let events = store.read_stream(&format!("deadline-{id}"), 1, 10).await.unwrap();
        let fired = events.iter().find(|e| e.event_type == "DeadlineFired").expect("every deadline fired");
        lateness.push((fired.recorded_at - due(i)).num_milliseconds());
        assert_eq!(events.iter().filter(|e| e.event_type == "DeadlineFired").count(), 1);
    }
    lateness.sort_unstable();
    println!(
        "timer: {DEADLINES} deadlines due within one minute, lateness p50 {} ms, p99 {} ms, max {} ms (min {} ms)",
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness[lateness.len() - 1],
        lateness[0]
    );
}

async fn deliveries(db: &Database) {
    const SUBSCRIBERS: usize = 100;
    const ORDERS: u64 = 15; // 7 events each, 6 of them mapped: about 100 messages per subscriber
    let received = Arc::new(AtomicU64::new(0));
    let count = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // A fresh database: only these orders' messages are queued.
    let process_db = db.processes().await.unwrap();
    let config = WebhookConfig { allow_private: true, timeout_ms: 1_000, ..Default::default() };
    let webhooks = Webhooks::new(process_db.clone(), config);
    let types: Vec<String> =
        integration::TYPES.iter().filter(|t| t.starts_with("order.")).map(|t| t.to_string()).collect();
    for _ in 0..SUBSCRIBERS {
        webhooks.create(&url, &types, "bench").await.unwrap();
    }
    let store = db.store();
    let head = store.head().await.unwrap();
    for n in 0..ORDERS {
        let append = StreamAppend {
            stream_id: format!("order-hook{n}"),
            expected: ExpectedVersion::NoStream,
            events: log::order_life(1_000_000 + n),
        };
        store.append(vec![append]).await.unwrap();
    }
    let _ = head;
    let reactor =
        ReactorRunner::new(Arc::new(WebhookReactor::new(webhooks.clone())), store.clone(), process_db.clone());
    while reactor.step().await.unwrap() > 0 {}
    let queued: usize = {
        let mut total = 0;
        for w in webhooks.list().await.unwrap() {
            total += webhooks.deliveries(&w.id, 500).await.unwrap().len();
        }
        total
    };
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let dispatcher = tokio::spawn(Dispatcher::new(webhooks.clone()).run(Arc::new(Always), stopped));
    while received.load(Ordering::Relaxed) < queued as u64 {
        assert!(started.elapsed() < Duration::from_secs(300), "deliveries stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    stop.send(true).unwrap();
    dispatcher.await.unwrap();
    println!(
        "webhooks: {queued} messages to {SUBSCRIBERS} subscribers delivered in {:.2} s: {:.0} deliveries/s",
        took.as_secs_f64(),
        queued as f64 / took.as_secs_f64()
    );
    for w in webhooks.list().await.unwrap() {
        webhooks.disable(&w.id, "bench").await.unwrap();
    }

    // One subscriber that never answers, 10 000 messages queued, for 30 s.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let dead = webhooks.create(&silent_url, &types, "bench").await.unwrap();
    let before = webhooks.deliveries(&dead.webhook.id, 1).await.unwrap().len();
    assert_eq!(before, 0);
    let mut n = ORDERS;
    while n < ORDERS + 1_700 {
        let append = StreamAppend {
            stream_id: format!("order-hook{n}"),
            expected: ExpectedVersion::NoStream,
            events: log::order_life(1_000_000 + n),
        };
        store.append(vec![append]).await.unwrap();
        n += 1;
    }
    while reactor.step().await.unwrap() > 0 {}
    let rss_start = rss_kib();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let dispatcher = tokio::spawn(Dispatcher::new(webhooks.clone()).run(Arc::new(Always), stopped));
    let mut samples = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push(rss_kib());
    }
    stop.send(true).unwrap();
    dispatcher.await.unwrap();
    let attempts: usize = webhooks.deliveries(&dead.webhook.id, 500).await.unwrap().iter().map(|(_, a)| a.len()).sum();
    println!(
        "webhooks: a subscriber that never answers, {} messages queued ({} order events), 30 s: resident memory {} KiB at the start, every 5 s {:?} KiB; {} attempts on its latest 500 messages",
        (n - ORDERS) * 6,
        (n - ORDERS) * 7,
        rss_start,
        samples,
        attempts
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let events: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let test_db = TestDatabase::create().await;
        let db = Database::open(&test_db.url).await.unwrap();
        println!("PostgreSQL, {events} events");
        reactors(&db, events).await;
        let timer_db = TestDatabase::create().await;
        timer(&Database::open(&timer_db.url).await.unwrap()).await;
        let hooks_db = TestDatabase::create().await;
        deliveries(&Database::open(&hooks_db.url).await.unwrap()).await;
        drop((test_db, timer_db, hooks_db));
    });
}
