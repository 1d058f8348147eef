//! The timer on SQLite and PostgreSQL: deadlines fire once, late rather than never, are
//! cancelled by payment and checkout, refused when their command no longer holds, and an
//! idle cart touched since is given more time.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use orderlog_api::database::Database;
use orderlog_commands::{Clock, Command, CommandEnvelope, CommandOutcome, CommandService, ManualClock, SequentialIds};
use orderlog_domain::cart::CartCommand;
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::deadline::{DeadlineEvent, DeadlineId, FireOutcome};
use orderlog_domain::order::OrderCommand;
use orderlog_domain::stock::StockCommand;
use orderlog_domain::{testing, CartId, Currency, DomainEvent, LocationId, Money, OrderId, Sku, StockKey};
use orderlog_processes::timer::{Tick, Timer};
use orderlog_projections::deadlines::DeadlineTable;
use orderlog_projections::inventory::InventoryTable;
use orderlog_projections::orders::OrderStatusTable;
use orderlog_projections::projector::{self, AnyRunner};
use orderlog_projections::queries::ReadQueries;
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::EventStore;

/// One orderlog process on a database: its command service, clock, index and timer.
struct Process {
    service: Arc<CommandService>,
    clock: Arc<ManualClock>,
    queries: Arc<dyn ReadQueries>,
    runners: Vec<Arc<dyn AnyRunner>>,
    timer: Timer,
}

struct Shop {
    url: String,
    first: Process,
    _dir: Option<tempfile::TempDir>,
    _db: Option<TestDatabase>,
}

fn start() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap()
}

fn stock_key(sku: &str) -> StockKey {
    StockKey::new(Sku::parse(sku).unwrap(), LocationId::parse("berlin").unwrap())
}

impl Process {
    async fn open(url: &str) -> Process {
        let db = Database::open(url).await.unwrap();
        let store = db.store();
        let clock = Arc::new(ManualClock::new(start()));
        let service = Arc::new(CommandService::new(store.clone(), clock.clone(), Arc::new(SequentialIds::new("id-"))));
        let rows = db.rows().await.unwrap();
        let index = projector::runner::<DeadlineTable>(store.clone(), rows.clone());
        let runners = vec![
            index,
            projector::runner::<InventoryTable>(store.clone(), rows.clone()),
            projector::runner::<OrderStatusTable>(store, rows),
        ];
        let queries = db.queries(2).await.unwrap();
        let timer = Timer::new(service.clone(), queries.clone(), clock.clone());
        Process { service, clock, queries, runners, timer }
    }

    fn store(&self) -> &dyn EventStore {
        &**self.service.store()
    }

    async fn run(&self, id: &str, command: Command) -> CommandOutcome {
        self.service.execute(CommandEnvelope::new(id, "tester", command)).await.unwrap()
    }

    /// Folds the read models up to the log, then ticks.
    async fn tick(&self) -> Tick {
        self.catch_up().await;
        self.timer.tick().await.unwrap()
    }

    /// Folds every event committed so far (on PostgreSQL, once the log has settled: readers
    /// see events below the oldest running transaction, and other tests run beside this one).
    async fn catch_up(&self) {
        assert!(self.store().settle(std::time::Duration::from_secs(30)).await.unwrap());
        for runner in &self.runners {
            runner.ensure().await.unwrap();
            while runner.step().await.unwrap() > 0 {}
        }
    }

    async fn available(&self, sku: &str) -> i64 {
        self.catch_up().await;
        let rows = self.queries.inventory_of_sku(sku).await.unwrap();
        rows.iter().map(|r| r.level.available).sum()
    }

    /// The deadline's events, as stored.
    async fn deadline_events(&self, id: &DeadlineId) -> Vec<DeadlineEvent> {
        let events = self.store().read_stream(&format!("deadline-{id}"), 1, 100).await.unwrap();
        events
            .iter()
            .map(|e| match DomainEvent::decode(&e.event_type, e.schema_version, &e.payload).unwrap() {
                DomainEvent::Deadline(d) => d,
                other => panic!("not a deadline event: {other:?}"),
            })
            .collect()
    }
}

impl Shop {
    async fn sqlite() -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("orderlog.db").display().to_string();
        let first = Process::open(&url).await;
        Shop { url, first, _dir: Some(dir), _db: None }
    }

    async fn postgres() -> Shop {
        let db = TestDatabase::create().await;
        let url = db.url_with("pool_max_size=8");
        let first = Process::open(&url).await;
        Shop { url, first, _dir: None, _db: Some(db) }
    }

    fn advance(&self, by: Duration) {
        self.first.clock.advance(by);
    }

    async fn receive(&self, sku: &str, quantity: u32) {
        let command =
            Command::Stock { stock: stock_key(sku), command: StockCommand::Receive { quantity, reference: None } };
        self.first.run(&format!("receive-{sku}"), command).await;
    }

    async fn cart(&self, cart: &str, sku: &str) {
        let cart_id = CartId::parse(cart).unwrap();
        for (id, product_id, command) in testing::catalog_commands(&[(sku, 1, 5_000)]) {
            self.first.run(&id, Command::Product { product_id, command }).await;
        }
        let (region_id, command) = testing::tax_region();
        self.first.run("tax-DE", Command::TaxRegion { region_id, command }).await;
        let (zone_id, command) = testing::shipping_zone(0);
        self.first.run("zone-de-0", Command::ShippingZone { zone_id, command }).await;
        let commands = testing::cart_commands(testing::guest("ann@example.com"), &[(sku, 1, 5_000)], 0);
        for (i, command) in commands.into_iter().enumerate() {
            self.first.run(&format!("{cart}-{i}"), Command::Cart { cart_id: cart_id.clone(), command }).await;
        }
    }

    async fn checkout(&self, cart: &str, order: &str) {
        self.cart(cart, "flash").await;
        let checkout = CheckoutCommand {
            cart_id: CartId::parse(cart).unwrap(),
            order_id: OrderId::parse(order).unwrap(),
            location: LocationId::parse("berlin").unwrap(),
            sources: Default::default(),
        };
        self.first.run(&format!("checkout-{order}"), Command::Checkout { checkout }).await;
    }

    async fn pay(&self, order: &str) {
        let command = Command::Order {
            order_id: OrderId::parse(order).unwrap(),
            command: OrderCommand::AuthorizePayment {
                amount: Money::new(5_000, Currency::parse("EUR").unwrap()),
                provider_ref: format!("pi_{order}"),
                provider_event_id: format!("evt_{order}"),
            },
        };
        self.first.run(&format!("pay-{order}"), command).await;
    }
}

fn payment(order: &str) -> DeadlineId {
    DeadlineId::order_payment(&OrderId::parse(order).unwrap())
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn an_unpaid_order_expires_once_and_its_stock_comes_back(Shop) on [sqlite, postgres];
}
async fn an_unpaid_order_expires_once_and_its_stock_comes_back(shop: Shop) {
    shop.receive("flash", 2).await;
    shop.checkout("c1", "o1").await;
    shop.checkout("c2", "o2").await;
    shop.pay("o2").await;
    assert_eq!(shop.first.available("flash").await, 0);
    shop.advance(Duration::minutes(29));
    assert_eq!(shop.first.tick().await.fired(), 0, "not due before 30 minutes");
    shop.advance(Duration::minutes(2));
    let tick = shop.first.tick().await;
    assert_eq!((tick.applied, tick.refused, tick.repeated), (1, 0, 0), "only the unpaid order: {tick:?}");
    assert_eq!(tick.lateness_ms, vec![60_000]);
    assert_eq!(shop.first.available("flash").await, 1, "the unpaid order's unit is available again");
    let events = shop.first.deadline_events(&payment("o1")).await;
    assert!(
        matches!(events.last(), Some(DeadlineEvent::DeadlineFired { outcome: FireOutcome::Applied { events: 2 } })),
        "{events:?}"
    );
    let paid = shop.first.queries.deadline(&payment("o2").to_string()).await.unwrap().unwrap();
    assert_eq!(paid.status, "cancelled");
    assert!(paid.detail.unwrap().starts_with("PaymentAuthorized"));
    assert_eq!(shop.first.deadline_events(&payment("o2")).await.len(), 1, "a cancelled deadline never fires");
    shop.advance(Duration::hours(1));
    assert_eq!(shop.first.tick().await.fired(), 0, "nothing fires twice");
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn a_deadline_whose_command_no_longer_holds_is_refused_and_recorded(Shop) on [sqlite, postgres];
}
async fn a_deadline_whose_command_no_longer_holds_is_refused_and_recorded(shop: Shop) {
    shop.receive("flash", 1).await;
    shop.checkout("c1", "o1").await;
    shop.advance(Duration::minutes(31));
    // The timer read the index before the payment reached it: it fires, and is refused.
    shop.pay("o1").await;
    let fire = Command::FireDeadline { deadline_id: payment("o1") };
    let outcome = shop.first.run("fire-1", fire.clone()).await;
    assert_eq!(outcome.events_appended, 1);
    let events = shop.first.deadline_events(&payment("o1")).await;
    match events.last() {
        Some(DeadlineEvent::DeadlineFired { outcome: FireOutcome::Refused { reason } }) => {
            assert!(reason.contains("only an unpaid placed order can expire"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Fired is final: firing again under another command id appends nothing.
    assert_eq!(shop.first.run("fire-2", fire).await.events_appended, 0);
    assert_eq!(shop.first.available("flash").await, 0, "the paid order keeps its unit");
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn deadlines_due_while_no_timer_ran_fire_late_not_never(Shop) on [sqlite, postgres];
}
async fn deadlines_due_while_no_timer_ran_fire_late_not_never(shop: Shop) {
    shop.receive("flash", 5).await;
    for i in 0..5 {
        shop.checkout(&format!("c{i}"), &format!("o{i}")).await;
    }
    // Three hours of downtime, then a process with a timer starts.
    shop.advance(Duration::hours(3));
    let later = Process::open(&shop.url).await;
    later.clock.set(shop.first.clock.now());
    let tick = later.tick().await;
    assert_eq!(tick.applied, 5);
    assert!(tick.lateness_ms.iter().all(|ms| *ms == 150 * 60_000), "{:?}", tick.lateness_ms);
    assert_eq!(later.available("flash").await, 5);
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn two_timers_fire_each_deadline_once(Shop) on [sqlite, postgres];
}
async fn two_timers_fire_each_deadline_once(shop: Shop) {
    const ORDERS: usize = 20;
    shop.receive("flash", ORDERS as u32).await;
    for i in 0..ORDERS {
        shop.checkout(&format!("c{i}"), &format!("o{i}")).await;
    }
    let second = Process::open(&shop.url).await;
    shop.advance(Duration::minutes(31));
    second.clock.set(shop.first.clock.now());
    shop.first.catch_up().await;
    second.catch_up().await;
    // Both read the same due deadlines before either fires.
    let (a, b) = tokio::join!(shop.first.timer.tick(), second.timer.tick());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.applied + b.applied, ORDERS as u32, "{a:?} {b:?}");
    assert_eq!(a.fired() + b.fired(), 2 * ORDERS as u32, "the other timer's fires are repeats: {a:?} {b:?}");
    for i in 0..ORDERS {
        let events = shop.first.deadline_events(&payment(&format!("o{i}"))).await;
        let fired = events.iter().filter(|e| matches!(e, DeadlineEvent::DeadlineFired { .. })).count();
        assert_eq!(fired, 1, "o{i}: {events:?}");
    }
    assert_eq!(shop.first.available("flash").await, ORDERS as i64);
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn an_idle_cart_expires_after_fourteen_untouched_days(Shop) on [sqlite, postgres];
}
async fn an_idle_cart_expires_after_fourteen_untouched_days(shop: Shop) {
    let cart_id = CartId::parse("idle").unwrap();
    let cart = |command| Command::Cart { cart_id: cart_id.clone(), command };
    let eur = Currency::parse("EUR").unwrap();
    shop.first
        .run(
            "idle-0",
            cart(CartCommand::Create { currency: eur, customer: testing::guest("a@example.com"), channel: None }),
        )
        .await;
    shop.advance(Duration::days(10));
    for (id, product_id, command) in testing::catalog_commands(&[("mug", 1, 100)]) {
        shop.first.run(&id, Command::Product { product_id, command }).await;
    }
    let add = CartCommand::AddItem { sku: Sku::parse("mug").unwrap(), quantity: 1 };
    shop.first.run("idle-1", cart(add)).await;
    shop.advance(Duration::days(4) + Duration::minutes(1));
    let tick = shop.first.tick().await;
    assert_eq!((tick.rescheduled, tick.applied), (1, 0), "touched 4 days ago: more time, {tick:?}");
    shop.first.catch_up().await;
    let row = shop.first.queries.deadline("cart-idle.idle").await.unwrap().unwrap();
    assert_eq!(row.due_at.as_deref(), Some("2026-12-21T00:00:00.000Z"));
    assert_eq!((row.status.as_str(), row.reschedules), ("scheduled", 1));
    shop.advance(Duration::days(10));
    let tick = shop.first.tick().await;
    assert_eq!(tick.applied, 1, "{tick:?}");
    let last = shop.first.store().read_stream("cart-idle", 1, 100).await.unwrap().pop().unwrap();
    assert_eq!(last.event_type, "CartExpired");
    // A checked-out cart's deadline is cancelled.
    shop.receive("flash", 1).await;
    shop.checkout("c9", "o9").await;
    shop.first.catch_up().await;
    let row = shop.first.queries.deadline("cart-idle.c9").await.unwrap().unwrap();
    assert_eq!(row.status, "cancelled");
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn returns_are_refused_once_the_return_window_has_closed(Shop) on [sqlite, postgres];
}
async fn returns_are_refused_once_the_return_window_has_closed(shop: Shop) {
    use orderlog_domain::order::LineQuantity;
    use orderlog_domain::shipment::{CarrierEventKind, ShipmentCommand};
    use orderlog_domain::{ReturnId, ShipmentId};
    shop.receive("flash", 1).await;
    shop.checkout("c1", "o1").await;
    shop.pay("o1").await;
    let order_id = OrderId::parse("o1").unwrap();
    let line = || vec![LineQuantity { sku: Sku::parse("flash").unwrap(), quantity: 1 }];
    let ship = |command| Command::Shipment { shipment_id: ShipmentId::parse("s1").unwrap(), command };
    let location = LocationId::parse("berlin").unwrap();
    shop.first
        .run("s1-create", ship(ShipmentCommand::Create { order_id: order_id.clone(), location, lines: line() }))
        .await;
    shop.first.run("s1-pack", ship(ShipmentCommand::Pack {})).await;
    shop.first.run("s1-ship", ship(ShipmentCommand::Ship { carrier: "dhl".into(), tracking_number: "1".into() })).await;
    shop.advance(Duration::days(2));
    let delivered = ShipmentCommand::RecordCarrierEvent {
        event_id: "dhl-1".into(),
        kind: CarrierEventKind::Delivered,
        occurred_at: shop.first.clock.now(),
    };
    shop.first.run("s1-delivered", ship(delivered)).await;
    shop.first.catch_up().await;
    let window = shop.first.queries.deadline("return-window.o1").await.unwrap().unwrap();
    assert_eq!(window.due_at.as_deref(), Some("2026-12-29T00:00:00.000Z"), "30 days after delivery");
    let request = |id: &str| Command::Order {
        order_id: order_id.clone(),
        command: OrderCommand::RequestReturn {
            return_id: ReturnId::parse(id).unwrap(),
            lines: line(),
            reason: "too small".into(),
        },
    };
    shop.advance(Duration::days(30) + Duration::minutes(1));
    let tick = shop.first.tick().await;
    assert_eq!(tick.applied, 1, "{tick:?}");
    let refused = shop.first.service.execute(CommandEnvelope::new("r-late", "shopper", request("r1"))).await;
    match refused {
        Err(orderlog_commands::CommandError::Rejected(r)) => {
            assert!(r.reason.contains("return window has closed"), "{}", r.reason)
        }
        other => panic!("a late return must be refused, got {other:?}"),
    }
    shop.first.catch_up().await;
    let row = shop.first.queries.order("o1").await.unwrap().expect("the order's row");
    assert_eq!(row.return_window_closed_at.as_deref().map(|t| &t[..10]), Some("2026-12-29"));
}
