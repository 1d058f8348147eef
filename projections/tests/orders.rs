//! The order-status model against the order aggregate itself: for every order in a log of
//! checkouts, payments, shipments, deliveries, returns and cancellations, the row's state
//! and money agree with folding the order's events through the domain.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use orderlog_commands::{Command, CommandEnvelope, CommandService, ManualClock, SequentialIds};
use orderlog_domain::cart::{CartCommand, Customer};
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::order::{LineQuantity, Order, OrderCommand, OrderEvent, ReturnedLine};
use orderlog_domain::promotion::{PromotionCommand, PromotionKind};
use orderlog_domain::shipment::{CarrierEventKind, ShipmentCommand};
use orderlog_domain::stock::StockCommand;
use orderlog_domain::{
    CartId, Currency, Decider, LocationId, Money, OrderId, PromotionCode, ReturnId, ShipmentId, Sku, StockKey,
};
use orderlog_projections::orders::{OrderStatusRow, OrderStatusTable, ORDER_VIEWS_POSTGRES, ORDER_VIEWS_SQLITE};
use orderlog_projections::postgres::PostgresRows;
use orderlog_projections::queries::{PostgresQueries, ReadQueries, SqliteQueries};
use orderlog_projections::sqlite::SqliteRows;
use orderlog_projections::table::{RowStore, Runner, TableModel};
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{EventStore, PostgresStore, SqliteStore};

struct Shop {
    service: CommandService,
    clock: Arc<ManualClock>,
    next: u64,
}

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap())
}

impl Shop {
    async fn run(&mut self, command: Command) {
        self.next += 1;
        self.clock.advance(chrono::Duration::minutes(7));
        self.service.execute(CommandEnvelope::new(format!("c{}", self.next), "tester", command)).await.unwrap();
    }

    /// Runs a command under its own id (the catalog's: the same each time, a repeat).
    async fn run_as(&self, id: &str, command: Command) {
        self.service.execute(CommandEnvelope::new(id, "tester", command)).await.unwrap();
    }

    /// Order `n` goes as far as `stage`: 0 placed, 1 paid, 2 cancelled, 3 shipped, 4 delivered
    /// and completed, 5 partly returned and refunded.
    async fn order(&mut self, n: u32, stage: u32) {
        let cart_id = CartId::parse(format!("cart{n}")).unwrap();
        let order_id = OrderId::parse(format!("order{n}")).unwrap();
        let cart = |command| Command::Cart { cart_id: cart_id.clone(), command };
        let customer = if n.is_multiple_of(2) {
            Customer::Guest { email: format!("g{n}@example.com") }
        } else {
            Customer::Registered {
                customer_id: orderlog_domain::CustomerId::parse(format!("cust{n}")).unwrap(),
                email: Some(format!("c{n}@example.com")),
            }
        };
        let lines = [("mug", 2, 900), ("tea", 1, 450)];
        for (id, product_id, command) in orderlog_domain::testing::catalog_commands(&lines) {
            self.run_as(&id, Command::Product { product_id, command }).await;
        }
        let (region_id, command) = orderlog_domain::testing::tax_region();
        self.run_as("tax-DE", Command::TaxRegion { region_id, command }).await;
        let (zone_id, command) = orderlog_domain::testing::shipping_zone(490);
        self.run_as("zone-de-490", Command::ShippingZone { zone_id, command }).await;
        for command in orderlog_domain::testing::cart_commands(customer, &lines, 490) {
            self.run(cart(command)).await;
        }
        // Every third order uses a 10 % coupon: 1.80 off the mugs, 0.45 off the tea.
        let promoted = n.is_multiple_of(3);
        if promoted {
            let create = PromotionCommand::Create {
                kind: PromotionKind::Percentage { basis_points: 1_000 },
                conditions: Default::default(),
                usage_limit: None,
                per_customer_limit: None,
                automatic: false,
            };
            self.run_as(
                "promo-TEN",
                Command::Promotion { code: PromotionCode::parse("TEN").unwrap(), command: create },
            )
            .await;
            self.run(cart(CartCommand::ApplyCode { code: PromotionCode::parse("TEN").unwrap() })).await;
        }
        let checkout = CheckoutCommand {
            cart_id: cart_id.clone(),
            order_id: order_id.clone(),
            location: LocationId::parse("berlin").unwrap(),
            sources: Default::default(),
        };
        self.run(Command::Checkout { checkout }).await;
        if stage == 0 {
            return;
        }
        let order = |command| Command::Order { order_id: order_id.clone(), command };
        // The test catalog's prices and the zone's shipping include tax.
        let total = 2 * 900 + 450 + 490 - if promoted { 180 + 45 } else { 0 };
        self.run(order(OrderCommand::AuthorizePayment {
            amount: eur(total),
            provider_ref: format!("pi{n}"),
            provider_event_id: format!("a{n}"),
        }))
        .await;
        if stage == 2 {
            self.run(Command::CancelOrder { order_id: order_id.clone(), reason: "changed mind".into() }).await;
            self.run(order(OrderCommand::VoidPayment { provider_event_id: format!("v{n}") })).await;
            return;
        }
        if stage == 1 {
            return;
        }
        let shipment_id = ShipmentId::parse(format!("ship{n}")).unwrap();
        let shipment = |command| Command::Shipment { shipment_id: shipment_id.clone(), command };
        let lines = vec![
            LineQuantity { sku: Sku::parse("mug").unwrap(), quantity: 2 },
            LineQuantity { sku: Sku::parse("tea").unwrap(), quantity: 1 },
        ];
        self.run(shipment(ShipmentCommand::Create {
            order_id: order_id.clone(),
            location: LocationId::parse("berlin").unwrap(),
            lines,
        }))
        .await;
        self.run(shipment(ShipmentCommand::Pack {})).await;
        self.run(shipment(ShipmentCommand::Ship { carrier: "DHL".into(), tracking_number: format!("T{n}") })).await;
        self.run(order(OrderCommand::CapturePayment { amount: eur(total), provider_event_id: format!("cap{n}") }))
            .await;
        if stage == 3 {
            return;
        }
        let delivered = ShipmentCommand::RecordCarrierEvent {
            event_id: format!("dhl{n}"),
            kind: CarrierEventKind::Delivered,
            occurred_at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
        };
        self.run(shipment(delivered)).await;
        self.run(order(OrderCommand::Complete {})).await;
        if stage == 4 {
            return;
        }
        let return_id = ReturnId::parse(format!("ret{n}")).unwrap();
        let returned = vec![LineQuantity { sku: Sku::parse("mug").unwrap(), quantity: 1 }];
        self.run(order(OrderCommand::RequestReturn {
            return_id: return_id.clone(),
            lines: returned,
            reason: "chipped".into(),
        }))
        .await;
        let received = vec![ReturnedLine { sku: Sku::parse("mug").unwrap(), quantity: 1, restock: true }];
        self.run(Command::ReceiveReturn { order_id: order_id.clone(), return_id, lines: received }).await;
        self.run(order(OrderCommand::RefundPayment { amount: eur(900), provider_event_id: format!("r{n}") })).await;
    }
}

impl Shop {
    async fn stocked(log: Arc<dyn EventStore>) -> Shop {
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()));
        let service = CommandService::new(log, clock.clone(), Arc::new(SequentialIds::new("id-")));
        let mut shop = Shop { service, clock, next: 0 };
        for stock in ["mug", "tea"] {
            let key = StockKey::new(Sku::parse(stock).unwrap(), LocationId::parse("berlin").unwrap());
            shop.run(Command::Stock {
                stock: key,
                command: StockCommand::Receive { quantity: 1_000, reference: None },
            })
            .await;
        }
        shop
    }
}

/// Folds the log into the model in batches of `batch` events and checks every order's row
/// against the order aggregate folded by the domain from the order's own stream — a fold
/// that shares nothing with the model's `evolve` — and against the stream itself for the
/// timeline. Returns the stored rows.
async fn assert_rows_agree_with_the_domain(
    log: &Arc<dyn EventStore>,
    rows: &Arc<dyn RowStore>,
    orders: u32,
    batch: u32,
) -> std::collections::BTreeMap<String, OrderStatusRow> {
    assert!(log.settle(Duration::from_secs(30)).await.unwrap());
    let runner = Runner::<OrderStatusTable>::new(log.clone(), rows.clone()).with_batch_events_max(batch);
    runner.catch_up().await.unwrap();
    let expected = runner.fold_in_memory().await.unwrap();
    let keys: Vec<String> = (0..orders).map(|n| format!("order{n}")).collect();
    let stored: std::collections::BTreeMap<String, OrderStatusRow> = rows
        .load(OrderStatusTable::NAME, keys)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, json)| (k, serde_json::from_str(&json).unwrap()))
        .collect();
    assert_eq!(stored, expected);
    for (id, row) in &stored {
        let events: Vec<OrderEvent> = log
            .read_stream(&format!("order-{id}"), 1, 1_000)
            .await
            .unwrap()
            .iter()
            .map(|e| match DomainEvent::decode(&e.event_type, e.schema_version, &e.payload).unwrap() {
                DomainEvent::Order(o) => o,
                other => panic!("{other:?}"),
            })
            .collect();
        let state = Order::fold(&events);
        assert_eq!(row.state, serde_json::to_value(state.status).unwrap().as_str().unwrap(), "{id}");
        assert_eq!(
            (row.captured, row.refunded, row.voided),
            (state.payment.captured, state.payment.refunded, state.payment.voided),
            "{id}"
        );
        for line in &row.lines {
            let progress = &state.lines[&Sku::parse(&line.sku).unwrap()];
            assert_eq!(
                (line.shipped, line.delivered, line.returned),
                (progress.shipped, progress.delivered, progress.returned)
            );
        }
        let recorded = log.read_stream(&format!("order-{id}"), 1, 1_000).await.unwrap();
        let timeline: Vec<(u64, &str, &str)> =
            recorded.iter().map(|e| (e.position, e.event_type.as_str(), e.metadata.actor.as_str())).collect();
        let in_row: Vec<(u64, &str, &str)> =
            row.timeline.iter().map(|t| (t.position, t.event_type.as_str(), t.actor.as_str())).collect();
        assert_eq!(in_row, timeline, "{id}: the timeline is the order's stream");
        let placed = state.placed.as_ref().expect("placed");
        assert_eq!((row.total, row.currency.as_str()), (placed.totals.total.amount, placed.currency.code()), "{id}");
        assert_eq!(row.lines.len(), placed.lines.len(), "{id}");
        let t = &placed.totals;
        assert_eq!(
            (row.subtotal, row.discount, row.shipping, row.tax, Some(row.tax_included)),
            (t.subtotal.amount, t.discount.amount, t.shipping.amount, t.tax.amount, t.tax_included.map(|m| m.amount)),
            "{id}"
        );
        let promotions: Vec<(&str, i64)> = row.promotions.iter().map(|p| (p.code.as_str(), p.discount)).collect();
        let placed_promotions: Vec<(&str, i64)> =
            placed.promotions.iter().map(|p| (p.code.as_str(), p.discount.amount)).collect();
        assert_eq!(promotions, placed_promotions, "{id}");
        for (line, placed_line) in row.lines.iter().zip(&placed.lines) {
            assert_eq!(Some(line.discount), placed_line.discount.map(|d| d.amount), "{id}");
            assert_eq!(Some(line.tax), placed_line.tax.as_ref().map(|t| t.tax.amount), "{id}");
        }
        let paid = state.payment.captured > 0;
        assert_eq!(row.payment_status == "captured" || row.payment_status.contains("refunded"), paid, "{id}");
        let placed_at = recorded[0].recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        assert_eq!(row.placed_at.as_deref(), Some(placed_at.as_str()), "{id}");
    }
    stored
}

async fn orders_agree_with_the_domain(
    log: Arc<dyn EventStore>,
    rows: Arc<dyn RowStore>,
) -> std::collections::BTreeMap<String, OrderStatusRow> {
    let mut shop = Shop::stocked(log.clone()).await;
    for n in 0..18 {
        shop.order(n, n % 6).await;
    }
    let stored = assert_rows_agree_with_the_domain(&log, &rows, 18, 13).await;
    let by_stage = |n: u32| &stored[&format!("order{n}")];
    assert_eq!(
        (by_stage(0).payment_status.as_str(), by_stage(0).fulfilment_status.as_str()),
        ("pending", "unfulfilled")
    );
    assert_eq!(by_stage(1).payment_status, "authorized");
    assert_eq!((by_stage(2).state.as_str(), by_stage(2).payment_status.as_str()), ("cancelled", "voided"));
    assert_eq!((by_stage(3).payment_status.as_str(), by_stage(3).fulfilment_status.as_str()), ("captured", "shipped"));
    assert_eq!((by_stage(4).state.as_str(), by_stage(4).fulfilment_status.as_str()), ("completed", "delivered"));
    assert_eq!(by_stage(5).payment_status, "partially_refunded");
    assert!(by_stage(4).placed_at < by_stage(4).shipped_at && by_stage(4).shipped_at < by_stage(4).delivered_at);
    assert_eq!(by_stage(1).customer, "cust1");
    assert_eq!(by_stage(0).customer, "guest");
    stored
}

/// One row of `sales_by_day`: day, currency, orders, units, gross, refunds, net,
/// cancellation rate, median seconds from placed to shipped.
type SalesRow = (String, String, i64, i64, i64, i64, i64, f64, Option<f64>);

/// What `sales_by_day` must say, computed here from the order rows.
fn expected_sales(rows: &std::collections::BTreeMap<String, OrderStatusRow>) -> Vec<SalesRow> {
    let mut days: std::collections::BTreeMap<(String, String), Vec<&OrderStatusRow>> = Default::default();
    for row in rows.values() {
        let day = row.placed_at.as_ref().unwrap()[..10].to_string();
        days.entry((day, row.currency.clone())).or_default().push(row);
    }
    days.into_iter()
        .map(|((day, currency), orders)| {
            let kept: Vec<_> = orders.iter().filter(|o| o.state != "cancelled" && o.state != "expired").collect();
            let units: i64 = kept.iter().flat_map(|o| &o.lines).map(|l| i64::from(l.quantity)).sum();
            let gross: i64 = kept.iter().map(|o| o.total).sum();
            let refunds: i64 = orders.iter().map(|o| o.refunded).sum();
            let cancelled = orders.iter().filter(|o| o.state == "cancelled").count() as f64;
            let mut ship: Vec<f64> = orders
                .iter()
                .filter_map(|o| {
                    let shipped = chrono::DateTime::parse_from_rfc3339(o.shipped_at.as_ref()?).ok()?;
                    let placed = chrono::DateTime::parse_from_rfc3339(o.placed_at.as_ref()?).ok()?;
                    Some((shipped - placed).num_milliseconds() as f64 / 1e3)
                })
                .collect();
            ship.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let median = match ship.len() {
                0 => None,
                n if n % 2 == 1 => Some(ship[n / 2]),
                n => Some((ship[n / 2 - 1] + ship[n / 2]) / 2.0),
            };
            let orders_n = orders.len() as i64;
            (day, currency, orders_n, units, gross, refunds, gross - refunds, cancelled / orders_n as f64, median)
        })
        .collect()
}

fn assert_sales(got: Vec<SalesRow>, expected: Vec<SalesRow>) {
    assert!(!expected.is_empty());
    assert_eq!(got.len(), expected.len(), "{got:?}");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!((&g.0, &g.1, g.2, g.3, g.4, g.5, g.6), (&e.0, &e.1, e.2, e.3, e.4, e.5, e.6));
        assert!((g.7 - e.7).abs() < 1e-9, "cancellation rate {} vs {}", g.7, e.7);
        match (g.8, e.8) {
            (Some(a), Some(b)) => assert!((a - b).abs() < 0.01, "median {a} vs {b}"),
            (a, b) => assert_eq!(a, b),
        }
    }
}

#[tokio::test]
async fn order_rows_agree_with_the_domain_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orderlog.db");
    let log = Arc::new(SqliteStore::open(&path).unwrap());
    let rows = Arc::new(SqliteRows::open(&path, ORDER_VIEWS_SQLITE).unwrap());
    orders_agree_with_the_domain(log, rows).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let cancelled: i64 =
        conn.query_row("SELECT count(*) FROM order_status WHERE state = 'cancelled'", [], |r| r.get(0)).unwrap();
    assert_eq!(cancelled, 3);
}

#[tokio::test]
async fn order_rows_agree_with_the_domain_on_postgres() {
    let db = TestDatabase::create().await;
    let log = Arc::new(PostgresStore::connect_url(&db.url).await.unwrap());
    let rows = Arc::new(PostgresRows::connect(&db.url, ORDER_VIEWS_POSTGRES).await.unwrap());
    let stored = orders_agree_with_the_domain(log, rows).await;
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let delivered: i64 = client
        .query_one("SELECT count(*) FROM order_status WHERE delivered_at IS NOT NULL AND state = 'completed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered, 6);
    let got: Vec<SalesRow> = client
        .query(
            "SELECT day::text, currency, orders, units::bigint, gross::bigint, refunds::bigint, net::bigint,
                    cancellation_rate, median_seconds_to_ship
             FROM sales_by_day ORDER BY day, currency",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8)))
        .collect();
    assert_sales(got, expected_sales(&stored));
    let top =
        client.query_one("SELECT units::bigint, revenue::bigint FROM top_skus WHERE sku = 'mug'", &[]).await.unwrap();
    assert_eq!((top.get::<_, i64>(0), top.get::<_, i64>(1)), (15 * 2, 15 * 2 * 900));
}

type Backend = (Arc<dyn EventStore>, Arc<dyn RowStore>, Arc<dyn ReadQueries>, Box<dyn std::any::Any>);

async fn backend(postgres: bool) -> Backend {
    if postgres {
        let db = TestDatabase::create().await;
        let log = Arc::new(PostgresStore::connect_url(&db.url).await.unwrap());
        let rows = PostgresRows::connect(&db.url, ORDER_VIEWS_POSTGRES).await.unwrap();
        let queries = Arc::new(PostgresQueries::new(rows.pool()));
        (log, Arc::new(rows), queries, Box::new(db))
    } else {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orderlog.db");
        let log = Arc::new(SqliteStore::open(&path).unwrap());
        let rows = Arc::new(SqliteRows::open(&path, ORDER_VIEWS_SQLITE).unwrap());
        rows.ensure(OrderStatusTable::NAME, OrderStatusTable::VERSION).await.unwrap();
        let queries = Arc::new(SqliteQueries::open(&path, 1).unwrap());
        (log, rows, queries, Box::new(dir))
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 8, ..Default::default() })]

    /// For random order journeys (each order stops at a random stage: placed, paid,
    /// cancelled, shipped, delivered, returned), folded in random batch sizes, every
    /// order's row equals what the domain's own fold of the order's stream says.
    #[test]
    fn order_rows_equal_the_domain_fold_for_random_journeys(
        stages in proptest::collection::vec(0u32..6, 1..6),
        batch in 1u32..40,
        postgres in proptest::prelude::any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (log, rows, queries, _keep) = backend(postgres).await;
            let mut shop = Shop::stocked(log.clone()).await;
            for (n, stage) in stages.iter().enumerate() {
                shop.order(n as u32, *stage).await;
            }
            let stored = assert_rows_agree_with_the_domain(&log, &rows, stages.len() as u32, batch).await;
            assert_eq!(stored.len(), stages.len());
            // The report view over the rows equals the report computed here from them.
            let got: Vec<SalesRow> = queries
                .sales("2000-01-01", "2100-01-01", None)
                .await
                .unwrap()
                .into_iter()
                .map(|d| {
                    let small = |v: i128| i64::try_from(v).unwrap();
                    (d.day, d.currency, d.orders, small(d.units), small(d.gross), small(d.refunds), small(d.net),
                     d.cancellation_rate, d.median_seconds_to_ship)
                })
                .collect();
            assert_sales(got, expected_sales(&stored));
            // Tax and shipping by day, and the promotions report, from the same rows.
            let kept: Vec<&OrderStatusRow> =
                stored.values().filter(|o| o.state != "cancelled" && o.state != "expired").collect();
            let days = queries.sales("2000-01-01", "2100-01-01", None).await.unwrap();
            let tax: i128 = days.iter().map(|d| d.tax).sum();
            let shipping: i128 = days.iter().map(|d| d.shipping).sum();
            assert_eq!(tax, kept.iter().map(|o| i128::from(o.tax)).sum::<i128>());
            assert_eq!(shipping, kept.iter().map(|o| i128::from(o.shipping)).sum::<i128>());
            let used: Vec<&&OrderStatusRow> = kept.iter().filter(|o| !o.promotions.is_empty()).collect();
            let top = queries.top_promotions(None, 10).await.unwrap();
            match used.is_empty() {
                true => assert!(top.is_empty(), "{top:?}"),
                false => {
                    assert_eq!(top.len(), 1, "{top:?}");
                    assert_eq!((top[0].code.as_str(), top[0].uses), ("TEN", used.len() as i64));
                    assert_eq!(top[0].discount, used.iter().map(|o| i128::from(o.discount)).sum::<i128>());
                    assert_eq!(top[0].discount, 225 * used.len() as i128);
                }
            }
        });
    }
}
