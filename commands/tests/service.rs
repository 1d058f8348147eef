//! The command service against real stores: idempotency, conflicts and retries, metadata,
//! and the anchors' recurring bugs (oversell, stuck reservations, double payment).

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use orderlog_commands::{
    Command, CommandEnvelope, CommandError, CommandOutcome, CommandService, ManualClock, SequentialIds,
};
use orderlog_domain::cart::CartCommand;
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::order::{LineQuantity, OrderCommand};
use orderlog_domain::payment::{PaymentAction, PaymentOutcome};
use orderlog_domain::shipment::{CarrierEventKind, ShipmentCommand};
use orderlog_domain::stock::StockCommand;
use orderlog_domain::testing;
use orderlog_domain::{
    CartId, Currency, LocationId, Money, OrderId, PaymentId, RejectionKind, ShipmentId, Sku, StockKey,
};
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{
    EventStore, ExpectedVersion, MemoryStore, Metadata, NewEvent, PostgresStore, SqliteStore, StreamAppend,
};

struct Shop {
    service: Arc<CommandService>,
    store: Arc<dyn EventStore>,
    clock: Arc<ManualClock>,
    _dir: Option<tempfile::TempDir>,
    _db: Option<TestDatabase>,
}

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap())
}
fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}
fn berlin() -> LocationId {
    LocationId::parse("berlin").unwrap()
}
fn stock_key(s: &str) -> StockKey {
    StockKey::new(sku(s), berlin())
}

impl Shop {
    async fn memory() -> Shop {
        Shop::on(Arc::new(MemoryStore::new()), None)
    }

    async fn sqlite() -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("orderlog.db")).unwrap();
        Shop::on(Arc::new(store), Some(dir))
    }

    async fn postgres() -> Shop {
        let db = TestDatabase::create().await;
        let store = PostgresStore::connect_url(&db.url_with("pool_max_size=32")).await.unwrap();
        let mut shop = Shop::on(Arc::new(store), None);
        shop._db = Some(db);
        shop
    }

    fn on(store: Arc<dyn EventStore>, dir: Option<tempfile::TempDir>) -> Shop {
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()));
        let service = Arc::new(CommandService::new(store.clone(), clock.clone(), Arc::new(SequentialIds::new("id-"))));
        Shop { service, store, clock, _dir: dir, _db: None }
    }

    async fn run(&self, id: &str, command: Command) -> Result<CommandOutcome, CommandError> {
        self.service.execute(CommandEnvelope::new(id, "tester", command)).await
    }

    async fn receive(&self, s: &str, quantity: u32) {
        let cmd = Command::Stock { stock: stock_key(s), command: StockCommand::Receive { quantity, reference: None } };
        self.run(&format!("receive-{s}-{quantity}-{}", self.service.next_id()), cmd).await.unwrap();
    }

    async fn cart(&self, cart: &str, items: &[(&str, u32)]) {
        let cart_id = CartId::parse(cart).unwrap();
        let lines: Vec<(&str, u32, i64)> = items.iter().map(|(s, q)| (*s, *q, 1_000)).collect();
        for (id, product_id, command) in testing::catalog_commands(&lines) {
            self.run(&id, Command::Product { product_id, command }).await.unwrap();
        }
        let (region_id, command) = testing::tax_region();
        self.run("tax-DE", Command::TaxRegion { region_id, command }).await.unwrap();
        let (zone_id, command) = testing::shipping_zone(0);
        self.run("zone-de-0", Command::ShippingZone { zone_id, command }).await.unwrap();
        let commands = testing::cart_commands(testing::guest("ann@example.com"), &lines, 0);
        for (i, command) in commands.into_iter().enumerate() {
            self.run(&format!("{cart}-op-{i}"), Command::Cart { cart_id: cart_id.clone(), command }).await.unwrap();
        }
    }

    fn checkout_command(cart: &str, order: &str) -> Command {
        Command::Checkout {
            checkout: CheckoutCommand {
                cart_id: CartId::parse(cart).unwrap(),
                order_id: OrderId::parse(order).unwrap(),
                location: berlin(),
                sources: Default::default(),
            },
        }
    }

    async fn checkout(&self, cart: &str, order: &str) -> Result<CommandOutcome, CommandError> {
        self.run(&format!("checkout-{cart}-{order}"), Shop::checkout_command(cart, order)).await
    }

    async fn stock(&self, s: &str) -> orderlog_domain::stock::StockState {
        let events = self.store.read_stream(&format!("stock-{s}@berlin"), 1, 10_000).await.unwrap();
        let decoded: Vec<_> = events
            .iter()
            .map(|e| {
                match orderlog_domain::codec::DomainEvent::decode(&e.event_type, e.schema_version, &e.payload).unwrap()
                {
                    orderlog_domain::codec::DomainEvent::Stock(s) => s,
                    other => panic!("not a stock event: {other:?}"),
                }
            })
            .collect();
        <orderlog_domain::stock::Stock as orderlog_domain::Decider>::fold(&decoded)
    }

    async fn authorize(
        &self,
        order: &str,
        amount: i64,
        provider_event: &str,
        command_id: &str,
    ) -> Result<CommandOutcome, CommandError> {
        let cmd = Command::Order {
            order_id: OrderId::parse(order).unwrap(),
            command: OrderCommand::AuthorizePayment {
                amount: eur(amount),
                provider_ref: format!("pi_{order}"),
                provider_event_id: provider_event.into(),
            },
        };
        self.run(command_id, cmd).await
    }
}

#[tokio::test]
async fn checkout_appends_cart_order_and_stock_in_one_go() {
    let shop = Shop::memory().await;
    shop.receive("mug", 5).await;
    shop.cart("c1", &[("mug", 2)]).await;
    let head = shop.store.head().await.unwrap();
    let outcome = shop.checkout("c1", "o1").await.unwrap();
    assert_eq!(outcome.events_appended, 4, "checked out, placed, reserved, payment deadline scheduled");
    assert_eq!(outcome.order_id, Some(OrderId::parse("o1").unwrap()));
    assert_eq!(outcome.position, Some(head + 4));
    let names: Vec<&str> = outcome.streams.iter().map(|s| s.stream_id.as_str()).collect();
    assert_eq!(names, ["cart-c1", "order-o1", "stock-mug@berlin", "deadline-order-payment.o1"]);
    let stock = shop.stock("mug").await;
    assert_eq!((stock.on_hand, stock.reserved, stock.available()), (5, 2, 3));
}

#[tokio::test]
async fn the_same_command_id_returns_the_first_result_and_appends_nothing() {
    let shop = Shop::memory().await;
    shop.receive("mug", 5).await;
    shop.cart("c1", &[("mug", 1)]).await;
    let first = shop.checkout("c1", "o1").await.unwrap();
    let head = shop.store.head().await.unwrap();
    let again = shop.checkout("c1", "o1").await.unwrap();
    assert!(again.repeated);
    assert_eq!(again.position, first.position);
    assert_eq!(again.order_id, first.order_id);
    assert_eq!(again.events_appended, first.events_appended);
    assert_eq!(shop.store.head().await.unwrap(), head);
}

#[tokio::test]
async fn the_same_command_id_with_another_command_is_refused() {
    let shop = Shop::memory().await;
    shop.receive("mug", 5).await;
    let head = shop.store.head().await.unwrap();
    let other =
        Command::Stock { stock: stock_key("mug"), command: StockCommand::Receive { quantity: 9, reference: None } };
    let err = shop.run("receive-mug-5-id-1", other).await.unwrap_err();
    assert!(matches!(err, CommandError::IdempotencyKeyReused { .. }), "{err}");
    assert_eq!(shop.store.head().await.unwrap(), head);
}

#[tokio::test]
async fn checking_out_a_cart_again_returns_the_same_order() {
    let shop = Shop::memory().await;
    shop.receive("mug", 5).await;
    shop.cart("c1", &[("mug", 1)]).await;
    shop.checkout("c1", "o1").await.unwrap();
    let head = shop.store.head().await.unwrap();
    // A new command (another id) checking the same cart out as the same order.
    let second = shop.run("checkout-c1-again", Shop::checkout_command("c1", "o1")).await.unwrap();
    assert_eq!(second.order_id, Some(OrderId::parse("o1").unwrap()));
    assert_eq!(second.events_appended, 0);
    // Another order id for the same cart is refused, naming the order it became.
    let CommandError::Rejected(other) = shop.checkout("c1", "o2").await.unwrap_err() else { panic!("a rejection") };
    assert!(other.reason.contains("already checked out as order o1"), "{}", other.reason);
    assert_eq!(shop.store.head().await.unwrap(), head);
    assert_eq!(shop.stock("mug").await.reserved, 1, "reserved once");
}

#[tokio::test]
async fn rejected_commands_leave_the_log_unchanged() {
    let shop = Shop::memory().await;
    shop.receive("mug", 1).await;
    shop.cart("c1", &[("mug", 3)]).await;
    let before = shop.store.read_all(orderlog_store::LogCursor::START, 1_000).await.unwrap();
    let err = shop.checkout("c1", "o1").await.unwrap_err();
    let CommandError::Rejected(rejection) = err else { panic!("expected a rejection") };
    assert_eq!(rejection.kind, RejectionKind::OutOfStock);
    assert!(rejection.reason.contains("mug at berlin: 3 requested, 1 available"), "{}", rejection.reason);
    let bad = Command::Cart {
        cart_id: CartId::parse("c1").unwrap(),
        command: CartCommand::ChangeQuantity { sku: sku("mug"), quantity: 0 },
    };
    assert!(matches!(shop.run("bad-1", bad).await, Err(CommandError::Rejected(_))));
    let empty =
        Command::Stock { stock: stock_key("mug"), command: StockCommand::Receive { quantity: 0, reference: None } };
    assert!(matches!(shop.run("bad-2", empty).await, Err(CommandError::Rejected(_))));
    // Reserving is a step of checkout: no command can name it.
    let direct = serde_json::json!({
        "target": "stock", "stock": {"sku": "mug", "location": "berlin"},
        "command": {"type": "reserve", "order_id": "x", "quantity": 1},
    });
    let error = serde_json::from_value::<Command>(direct).unwrap_err().to_string();
    assert!(error.contains("unknown variant `reserve`"), "{error}");
    assert_eq!(shop.store.read_all(orderlog_store::LogCursor::START, 1_000).await.unwrap(), before);
}

#[tokio::test]
async fn every_event_records_who_why_and_when() {
    let shop = Shop::memory().await;
    shop.clock.set(Utc.with_ymd_and_hms(2026, 5, 6, 7, 8, 9).unwrap());
    let mut envelope = CommandEnvelope::new(
        "cmd-7",
        "clerk@shop",
        Command::Stock { stock: stock_key("mug"), command: StockCommand::Receive { quantity: 4, reference: None } },
    )
    .correlated("delivery-123");
    envelope.causation_id = Some("po-55".into());
    shop.service.execute(envelope).await.unwrap();
    let events = shop.store.read_all(orderlog_store::LogCursor::START, 10).await.unwrap();
    let m = &events[0].metadata;
    assert_eq!(
        (m.actor.as_str(), m.command_id.as_str(), m.correlation_id.as_str(), m.causation_id.as_deref()),
        ("clerk@shop", "cmd-7", "delivery-123", Some("po-55"))
    );
    assert!(m.command_hash.is_some());
    assert_eq!(events[0].recorded_at, Utc.with_ymd_and_hms(2026, 5, 6, 7, 8, 9).unwrap());
}

async fn last_unit_race(shop: Shop) {
    const SHOPPERS: usize = 24;
    shop.receive("flash", 1).await;
    for i in 0..SHOPPERS {
        shop.cart(&format!("c{i}"), &[("flash", 1)]).await;
    }
    let mut tasks = Vec::new();
    for i in 0..SHOPPERS {
        let service = Arc::clone(&shop.service);
        tasks.push(tokio::spawn(async move {
            let cmd = Shop::checkout_command(&format!("c{i}"), &format!("o{i}"));
            service.execute(CommandEnvelope::new(format!("checkout-{i}"), "shopper", cmd)).await
        }));
    }
    let mut placed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => {
                assert_eq!(outcome.events_appended, 4);
                placed += 1;
            }
            Err(CommandError::Rejected(r)) => assert_eq!(r.kind, RejectionKind::OutOfStock, "{}", r.reason),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(placed, 1, "exactly one checkout of the last unit wins");
    let stock = shop.stock("flash").await;
    assert_eq!((stock.on_hand, stock.reserved, stock.available()), (1, 1, 0));
}

orderlog_store::each_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fn last_unit_race(Shop) on [memory, sqlite, postgres];
}

orderlog_store::each_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fn concurrent_cart_changes(Shop) on [postgres];
}

orderlog_store::each_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fn webhook_race(Shop) on [postgres];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_to_one_cart_are_retried_not_lost() {
    concurrent_cart_changes(Shop::sqlite().await).await;
}

async fn concurrent_cart_changes(shop: Shop) {
    shop.cart("c1", &[]).await;
    let skus: Vec<String> = (0..10).map(|i| format!("sku{i}")).collect();
    let lines: Vec<(&str, u32, i64)> = skus.iter().map(|s| (s.as_str(), 1, 100)).collect();
    for (id, product_id, command) in testing::catalog_commands(&lines) {
        shop.run(&id, Command::Product { product_id, command }).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..10 {
        let service = Arc::clone(&shop.service);
        tasks.push(tokio::spawn(async move {
            let cmd = Command::Cart {
                cart_id: CartId::parse("c1").unwrap(),
                command: CartCommand::AddItem { sku: sku(&format!("sku{i}")), quantity: 1 },
            };
            service.execute(CommandEnvelope::new(format!("add-{i}"), "shopper", cmd)).await.unwrap()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = shop.store.read_stream("cart-c1", 1, 100).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.event_type == "ItemAdded").count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_racing_the_client_authorizes_once() {
    webhook_race(Shop::sqlite().await).await;
}

async fn webhook_race(shop: Shop) {
    shop.receive("mug", 5).await;
    shop.cart("c1", &[("mug", 1)]).await;
    shop.checkout("c1", "o1").await.unwrap();
    // The client's confirmation and the provider's webhook report the same provider event
    // under different command ids, at the same time.
    let (a, b) = tokio::join!(
        shop.authorize("o1", 1_000, "evt_auth_1", "client-confirm"),
        shop.authorize("o1", 1_000, "evt_auth_1", "webhook-evt_auth_1"),
    );
    let appended = a.unwrap().events_appended + b.unwrap().events_appended;
    assert_eq!(appended, 2, "one PaymentAuthorized and one OrderConfirmed, once");
    let events = shop.store.read_stream("order-o1", 1, 100).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.event_type == "PaymentAuthorized").count(), 1);
}

#[tokio::test]
async fn cancelling_or_expiring_releases_every_reservation() {
    let shop = Shop::memory().await;
    shop.receive("mug", 5).await;
    shop.receive("tea", 5).await;
    shop.cart("c1", &[("mug", 2), ("tea", 1)]).await;
    shop.cart("c2", &[("mug", 1)]).await;
    shop.checkout("c1", "o1").await.unwrap();
    shop.checkout("c2", "o2").await.unwrap();
    shop.authorize("o1", 3_000, "evt_1", "auth-o1").await.unwrap();
    let cancel = Command::CancelOrder { order_id: OrderId::parse("o1").unwrap(), reason: "customer asked".into() };
    let outcome = shop.run("cancel-o1", cancel).await.unwrap();
    assert_eq!(outcome.events_appended, 3, "OrderCancelled and two releases");
    shop.run("expire-o2", Command::ExpireOrder { order_id: OrderId::parse("o2").unwrap() }).await.unwrap();
    assert_eq!(shop.stock("mug").await.reserved, 0);
    assert_eq!(shop.stock("tea").await.reserved, 0);
    assert_eq!(shop.stock("mug").await.available(), 5);
    let missing = Command::CancelOrder { order_id: OrderId::parse("nope").unwrap(), reason: "x".into() };
    assert!(
        matches!(shop.run("cancel-nope", missing).await, Err(CommandError::Rejected(r)) if r.kind == RejectionKind::NotFound)
    );
}

#[tokio::test]
async fn shipping_commits_stock_and_delivery_completes_the_order() {
    let shop = Shop::memory().await;
    shop.receive("mug", 5).await;
    shop.cart("c1", &[("mug", 2)]).await;
    shop.checkout("c1", "o1").await.unwrap();
    shop.authorize("o1", 2_000, "evt_1", "auth-o1").await.unwrap();
    let shipment_id = ShipmentId::parse("s1").unwrap();
    let ship = |command| Command::Shipment { shipment_id: shipment_id.clone(), command };
    shop.run(
        "ship-create",
        ship(ShipmentCommand::Create {
            order_id: OrderId::parse("o1").unwrap(),
            location: berlin(),
            lines: vec![LineQuantity { sku: sku("mug"), quantity: 2 }],
        }),
    )
    .await
    .unwrap();
    shop.run("ship-pack", ship(ShipmentCommand::Pack {})).await.unwrap();
    let shipped = shop
        .run("ship-ship", ship(ShipmentCommand::Ship { carrier: "DHL".into(), tracking_number: "T1".into() }))
        .await
        .unwrap();
    assert_eq!(shipped.events_appended, 3, "ShipmentShipped, LinesShipped, StockCommitted");
    let stock = shop.stock("mug").await;
    assert_eq!((stock.on_hand, stock.reserved), (3, 0));
    let delivered = shop
        .run(
            "carrier-1",
            ship(ShipmentCommand::RecordCarrierEvent {
                event_id: "dhl-1".into(),
                kind: CarrierEventKind::Delivered,
                occurred_at: Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(delivered.events_appended, 3, "delivered, lines delivered, return window scheduled");
    let complete = Command::Order { order_id: OrderId::parse("o1").unwrap(), command: OrderCommand::Complete {} };
    assert_eq!(shop.run("complete-o1", complete).await.unwrap().events_appended, 1);
}

#[tokio::test]
async fn an_event_this_build_cannot_read_is_named_not_skipped() {
    let shop = Shop::memory().await;
    shop.cart("c1", &[]).await;
    let version = shop.store.stream_version("cart-c1").await.unwrap();
    shop.store
        .append(vec![StreamAppend {
            stream_id: "cart-c1".into(),
            expected: ExpectedVersion::Exact(version),
            events: vec![NewEvent {
                event_id: uuid::Uuid::new_v4(),
                event_type: "CartTeleported".into(),
                schema_version: 1,
                payload: "{}".into(),
                metadata: Metadata {
                    actor: "x".into(),
                    command_id: "x".into(),
                    correlation_id: "x".into(),
                    ..Metadata::default()
                },
                recorded_at: Utc::now(),
            }],
        }])
        .await
        .unwrap();
    let head = shop.store.head().await.unwrap();
    let cmd = Command::Cart { cart_id: CartId::parse("c1").unwrap(), command: CartCommand::Expire {} };
    let err = shop.run("expire-c1", cmd).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&format!("position {head}")), "{message}");
    assert!(message.contains("CartTeleported"), "{message}");
    assert_eq!(shop.store.head().await.unwrap(), head);
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn price_guarantee(Shop) on [memory, sqlite, postgres];
}

/// A line keeps the price it got while its guarantee (30 minutes) holds, even if the catalog
/// changes; after that, checkout prices it again, refuses with the change (a retry answers
/// the same), and the next checkout pays the new price.
async fn price_guarantee(shop: Shop) {
    shop.receive("mug", 10).await;
    shop.cart("c1", &[("mug", 1)]).await;
    let mug = |cents| Command::Product {
        product_id: orderlog_domain::ProductId::parse("product-mug").unwrap(),
        command: orderlog_domain::product::ProductCommand::SetPrices { sku: sku("mug"), prices: vec![eur(cents)] },
    };
    shop.run("price-1200", mug(1_200)).await.unwrap();
    shop.clock.advance(chrono::Duration::minutes(29));
    let placed = shop.checkout("c1", "o1").await.unwrap();
    assert_eq!(unit_price(&shop, "order-o1").await, 1_000, "{placed:?}");

    shop.cart("c2", &[("mug", 1)]).await;
    shop.run("price-1500", mug(1_500)).await.unwrap();
    shop.clock.advance(chrono::Duration::minutes(30));
    let refused = shop.checkout("c2", "o2").await.unwrap_err();
    let CommandError::Rejected(rejection) = &refused else { panic!("{refused:?}") };
    assert_eq!(rejection.repriced.len(), 1, "{rejection:?}");
    assert_eq!((rejection.repriced[0].old_price, rejection.repriced[0].new_price), (eur(1_200), eur(1_500)));
    let again = shop.checkout("c2", "o2").await.unwrap_err();
    assert_eq!(again.to_string(), refused.to_string(), "a retry answers the same refusal");
    let placed = shop.run("checkout-c2-again", Shop::checkout_command("c2", "o2")).await.unwrap();
    assert_eq!(placed.order_id.as_ref().map(|o| o.as_str()), Some("o2"));
    assert_eq!(unit_price(&shop, "order-o2").await, 1_500);
}

/// The unit price of the first line of the order placed on `stream`.
async fn unit_price(shop: &Shop, stream: &str) -> i64 {
    let placed = shop.store.read_stream(stream, 1, 1).await.unwrap();
    let payload: serde_json::Value = serde_json::from_str(&placed[0].payload).unwrap();
    let line = &payload["order"]["lines"][0];
    // The order keeps how the catalog priced the line.
    assert_eq!(line["pricing"]["title"], "The mug", "{payload}");
    assert_eq!(line["pricing"]["source"]["kind"], "default", "{payload}");
    line["unit_price"]["amount"].as_i64().unwrap_or_else(|| panic!("{payload}"))
}

/// A tax service in place of the rate table: it answers every address and class with its
/// own rate, and refuses Iceland (as a tax service that knows no rate there would).
struct TaxService;

impl orderlog_domain::tax::TaxProvider for TaxService {
    fn rate(
        &self,
        address: &orderlog_domain::cart::Address,
        tax_class: Option<&str>,
        _groups: &std::collections::BTreeSet<String>,
    ) -> Result<orderlog_domain::tax::TaxRate, orderlog_domain::Rejection> {
        if address.country == "IS" {
            return Err(orderlog_domain::Rejection::conflict("tax: the tax service knows no rate for IS"));
        }
        Ok(orderlog_domain::tax::TaxRate {
            region: format!("taxservice:{}", address.postal_code),
            tax_class: tax_class.unwrap_or("shipping").to_string(),
            rate_bps: 1_000,
            exempt: false,
        })
    }
}

/// The rates of a tax provider given to the service are what the order records; one that
/// refuses refuses the checkout, and nothing is appended.
#[tokio::test]
async fn a_tax_provider_replaces_the_rate_table() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()));
    let config = orderlog_commands::ServiceConfig {
        tax: Some(orderlog_commands::ExternalTax(Arc::new(TaxService))),
        ..Default::default()
    };
    let service =
        CommandService::with_config(store.clone(), clock.clone(), Arc::new(SequentialIds::new("id-")), config);
    let shop = Shop { service: Arc::new(service), store, clock, _dir: None, _db: None };
    shop.receive("mug", 10).await;
    shop.cart("c1", &[("mug", 1)]).await;
    shop.checkout("c1", "o1").await.unwrap();
    let placed = shop.store.read_stream("order-o1", 1, 1).await.unwrap();
    let payload: serde_json::Value = serde_json::from_str(&placed[0].payload).unwrap();
    let tax = &payload["order"]["lines"][0]["tax"];
    // 10.00 with tax inside at the service's 10 %: 9.09 net, 0.91 tax.
    assert_eq!(
        (tax["region"].as_str(), tax["rate_bps"].as_u64()),
        (Some("taxservice:10115"), Some(1_000)),
        "{payload}"
    );
    assert_eq!((tax["net"]["amount"].as_i64(), tax["tax"]["amount"].as_i64()), (Some(909), Some(91)), "{payload}");

    shop.cart("c2", &[("mug", 1)]).await;
    let mut iceland = testing::address();
    iceland.country = "IS".into();
    let moved = Command::Cart {
        cart_id: CartId::parse("c2").unwrap(),
        command: CartCommand::SetShippingAddress { address: iceland },
    };
    shop.run("c2-iceland", moved).await.unwrap();
    let (_, mut nordic) = testing::shipping_zone(0);
    let orderlog_domain::shipping::ShippingZoneCommand::Define { countries, .. } = &mut nordic;
    *countries = ["IS".to_string()].into();
    let zone_id = orderlog_domain::ShippingZoneId::parse("nordic").unwrap();
    shop.run("zone-nordic", Command::ShippingZone { zone_id, command: nordic }).await.unwrap();
    let option_id = orderlog_domain::ShippingOptionId::parse("dhl").unwrap();
    let select = Command::Cart {
        cart_id: CartId::parse("c2").unwrap(),
        command: CartCommand::SelectShippingOption { option_id },
    };
    shop.run("c2-nordic", select).await.unwrap();
    let head = shop.store.head().await.unwrap();
    let refused = shop.checkout("c2", "o2").await.unwrap_err();
    assert!(refused.to_string().contains("knows no rate for IS"), "{refused}");
    assert_eq!(shop.store.head().await.unwrap(), head);
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn a_coupon_without_limits_is_no_hot_stream(Shop) on [sqlite, postgres];
}

/// Every cart carries the same coupon, which has no limits: its use is recorded in each
/// order and not on the coupon's stream, so concurrent checkouts do not conflict over it.
async fn a_coupon_without_limits_is_no_hot_stream(shop: Shop) {
    use orderlog_domain::promotion::{PromotionCommand, PromotionKind};
    let code = orderlog_domain::PromotionCode::parse("ALL10").unwrap();
    let create = PromotionCommand::Create {
        kind: PromotionKind::Percentage { basis_points: 1_000 },
        conditions: Default::default(),
        usage_limit: None,
        per_customer_limit: None,
        automatic: false,
    };
    shop.run("promo", Command::Promotion { code: code.clone(), command: create }).await.unwrap();
    let carts = 24;
    for n in 0..carts {
        // Each cart its own SKU: the coupon is all the checkouts share.
        let sku = format!("mug{n}");
        shop.receive(&sku, 1).await;
        let cart = format!("c{n}");
        shop.cart(&cart, &[(sku.as_str(), 1)]).await;
        let apply = CartCommand::ApplyCode { code: code.clone() };
        shop.run(&format!("{cart}-code"), Command::Cart { cart_id: CartId::parse(&cart).unwrap(), command: apply })
            .await
            .unwrap();
    }
    let service = Arc::clone(&shop.service);
    let tasks: Vec<_> = (0..carts)
        .map(|n| {
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let command = Shop::checkout_command(&format!("c{n}"), &format!("o{n}"));
                service.execute(CommandEnvelope::new(format!("checkout-{n}"), "tester", command)).await
            })
        })
        .collect();
    let mut retries = 0;
    for task in tasks {
        retries += task.await.unwrap().unwrap().retries;
    }
    assert_eq!(retries, 0, "no checkout conflicted over the coupon");
    assert_eq!(shop.store.read_stream("promotion-ALL10", 1, 1_000).await.unwrap().len(), 1, "only its creation");
    for n in 0..carts {
        let placed = shop.store.read_stream(&format!("order-o{n}"), 1, 1).await.unwrap();
        let payload: serde_json::Value = serde_json::from_str(&placed[0].payload).unwrap();
        assert_eq!(payload["order"]["promotions"][0]["code"], "ALL10", "{payload}");
        assert_eq!(payload["order"]["promotions"][0]["discount"]["amount"], 100, "{payload}");
    }
}

fn pay(order: &str) -> Command {
    Command::Pay {
        order_id: OrderId::parse(order).unwrap(),
        payment_method: "pm_card_visa".into(),
        provider: "sim".into(),
    }
}

fn outcome(payment: &str, outcome: PaymentOutcome, provider_event: Option<&str>) -> Command {
    Command::Payment {
        payment_id: PaymentId::parse(payment).unwrap(),
        action: PaymentAction::Record { outcome, provider_event_id: provider_event.map(str::to_string) },
    }
}

fn authorized(amount: i64) -> PaymentOutcome {
    PaymentOutcome::Authorized { provider_ref: "pi_1".into(), amount: eur(amount), capture_before: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paying_authorizes_and_confirms_once_whichever_answer_comes_first() {
    for shop in [Shop::sqlite().await, Shop::postgres().await] {
        shop.receive("mug", 5).await;
        shop.cart("c1", &[("mug", 1)]).await;
        shop.checkout("c1", "o1").await.unwrap();
        let paid = shop.run("pay-o1", pay("o1")).await.unwrap();
        let names: Vec<&str> = paid.streams.iter().map(|s| s.stream_id.as_str()).collect();
        assert!(names.contains(&"payment-o1.p1") && names.contains(&"order-o1"), "{names:?}");
        let again = shop.run("pay-o1-again", pay("o1")).await.unwrap_err();
        assert!(again.to_string().contains("payment o1.p1: is still authorizing"), "{again}");
        // The API's answer and two deliveries of the provider's webhook, all at once.
        let (a, b, c) = tokio::join!(
            shop.run("answer", outcome("o1.p1", authorized(1_000), None)),
            shop.run("hook-1", outcome("o1.p1", authorized(1_000), Some("evt_1"))),
            shop.run("hook-1-again", outcome("o1.p1", authorized(1_000), Some("evt_1"))),
        );
        for result in [a, b, c] {
            result.unwrap();
        }
        let order = shop.store.read_stream("order-o1", 1, 100).await.unwrap();
        let count = |t: &str| order.iter().filter(|e| e.event_type == t).count();
        assert_eq!((count("PaymentAuthorized"), count("OrderConfirmed")), (1, 1));
        let payment = shop.store.read_stream("payment-o1.p1", 1, 100).await.unwrap();
        assert_eq!(payment.iter().filter(|e| e.event_type == "IntentAuthorized").count(), 1);
        let paid_again = shop.run("pay-o1-paid", pay("o1")).await.unwrap_err();
        assert!(paid_again.to_string().contains("order o1: is confirmed"), "{paid_again}");
    }
}

#[tokio::test]
async fn an_authorization_for_an_order_that_ended_is_voided_in_the_same_append() {
    let shop = Shop::memory().await;
    shop.receive("mug", 5).await;
    shop.cart("c1", &[("mug", 1)]).await;
    shop.checkout("c1", "o1").await.unwrap();
    shop.run("pay-o1", pay("o1")).await.unwrap();
    shop.run("expire-o1", Command::ExpireOrder { order_id: OrderId::parse("o1").unwrap() }).await.unwrap();
    let late = shop.run("answer", outcome("o1.p1", authorized(1_000), None)).await.unwrap();
    assert_eq!(late.events_appended, 2, "authorized and void requested; the order unchanged");
    let payment = shop.store.read_stream("payment-o1.p1", 1, 100).await.unwrap();
    let last = payment.last().unwrap();
    assert_eq!(last.event_type, "VoidRequested");
    assert!(last.payload.contains("order o1: is Expired"), "{}", last.payload);
    let voided = shop.run("voided", outcome("o1.p1", PaymentOutcome::Voided {}, Some("evt_void"))).await.unwrap();
    assert_eq!(voided.events_appended, 2, "voided, and the webhook recorded");
    let order = shop.store.read_stream("order-o1", 1, 100).await.unwrap();
    assert!(order.iter().all(|e| e.event_type != "PaymentAuthorized"));
}

#[tokio::test]
async fn a_declined_payment_is_recorded_on_the_order_and_another_attempt_may_follow() {
    let shop = Shop::memory().await;
    shop.receive("mug", 5).await;
    shop.cart("c1", &[("mug", 1)]).await;
    shop.checkout("c1", "o1").await.unwrap();
    shop.run("pay-o1", pay("o1")).await.unwrap();
    let declined =
        PaymentOutcome::AuthorizationFailed { code: "card_declined".into(), reason: "insufficient_funds".into() };
    shop.run("declined", outcome("o1.p1", declined, None)).await.unwrap();
    let order = shop.store.read_stream("order-o1", 1, 100).await.unwrap();
    assert!(order.iter().any(|e| e.event_type == "PaymentFailed" && e.payload.contains("card_declined")));
    let second = shop.run("pay-o1-2", pay("o1")).await.unwrap();
    assert!(second.streams.iter().any(|s| s.stream_id == "payment-o1.p2"));
    let initiate = Command::Payment {
        payment_id: PaymentId::parse("o1.p9").unwrap(),
        action: PaymentAction::Initiate {
            payment_id: PaymentId::parse("o1.p9").unwrap(),
            order_id: OrderId::parse("o1").unwrap(),
            amount: eur(1),
            payment_method: "pm".into(),
            provider: "sim".into(),
        },
    };
    let refused = shop.run("forged-initiate", initiate).await.unwrap_err();
    assert!(refused.to_string().contains("initiated only by paying"), "{refused}");
}

/// The API's answer and a webhook delivered twice, in every order one after another: one
/// authorization and one confirmation, whatever comes first.
#[tokio::test]
async fn every_arrival_order_of_answer_and_webhooks_confirms_once() {
    let arrivals = [("answer", None), ("hook", Some("evt_1")), ("hook-again", Some("evt_1"))];
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for order in orders {
        let shop = Shop::memory().await;
        shop.receive("mug", 5).await;
        shop.cart("c1", &[("mug", 1)]).await;
        shop.checkout("c1", "o1").await.unwrap();
        shop.run("pay-o1", pay("o1")).await.unwrap();
        let mut appended = vec![];
        for i in order {
            let (id, event) = arrivals[i];
            appended.push(shop.run(id, outcome("o1.p1", authorized(1_000), event)).await.unwrap().events_appended);
        }
        let first = appended[0];
        assert_eq!(first, if order[0] == 0 { 3 } else { 4 }, "{order:?}: authorized, confirmed (and the webhook)");
        assert!(appended[1..].iter().all(|n| *n == 0), "{order:?}: {appended:?}");
        let events = shop.store.read_stream("order-o1", 1, 100).await.unwrap();
        let count = |t: &str| events.iter().filter(|e| e.event_type == t).count();
        assert_eq!((count("PaymentAuthorized"), count("OrderConfirmed")), (1, 1), "{order:?}");
    }
}
