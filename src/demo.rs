//! `orderlog demo`: a seeded, simulated shop against a real store. Stock arrives at two
//! locations; shoppers fill carts (most abandon them); checkouts reserve stock; payments are
//! authorized and captured; some orders are cancelled or expire; shipments ship and are
//! delivered; a few items come back. Then a flash sale: many shoppers check out the last
//! units of one SKU at the same moment. The report is folded from the log afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use chrono::{Datelike, Duration, Timelike, Utc};
use orderlog_commands::{Clock, Command, CommandEnvelope, CommandError, CommandService, ManualClock, SequentialIds};
use orderlog_domain::aggregate::Aggregate;
use orderlog_domain::cart::{Address, CartCommand, Customer};
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::order::{LineQuantity, OrderCommand, OrderEvent, ReturnedLine};
use orderlog_domain::product::{ProductCommand, Variant};
use orderlog_domain::promotion::{Conditions, PromotionCommand, PromotionKind};
use orderlog_domain::shipment::{CarrierEventKind, ShipmentCommand};
use orderlog_domain::stock::StockCommand;
use orderlog_domain::{
    CartId, Currency, CustomerId, LocationId, Money, OrderId, ProductId, PromotionCode, RejectionKind, ReturnId,
    ShipmentId, Sku, StockKey,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::report::{fold_log, LogReport};

mod payments;
mod summary;
mod webhook_receiver;

use summary::*;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// A SQLite file path or a postgres:// URL; created if absent, continued if it holds an
    /// earlier run.
    #[arg(long, default_value = crate::DEFAULT_DATABASE)]
    database: String,
    /// Seed of the simulation: the same seed on the same file makes the same shoppers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Orders to aim for (about 3 carts are abandoned for each one checked out).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    orders: u32,
    /// Shoppers running at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    shoppers: u32,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

const CHECKOUT_SHARE: f64 = 0.3;
/// Products (eight kinds, three models each) and their sizes: 72 SKUs.
const PRODUCTS: usize = 24;
const SIZES: [&str; 3] = ["s", "m", "l"];
const SKUS: usize = PRODUCTS * SIZES.len();
const LOCATIONS: [&str; 2] = ["berlin", "hamburg"];
const FLASH_SKU: &str = "flash-sneaker";
/// The flash-sale sneaker's price, in cents.
const FLASH_PRICE: i64 = 12_999;
const FLASH_LOCATION: &str = "berlin";
const FLASH_UNITS: u32 = 10;

#[derive(Default)]
struct Counters {
    commands: AtomicU64,
    carts: AtomicU64,
    cart_operations: AtomicU64,
    checkouts_placed: AtomicU64,
    checkouts_rejected_out_of_stock: AtomicU64,
    abandoned_carts: AtomicU64,
    payment_failures: AtomicU64,
    cancellations: AtomicU64,
    shipments: AtomicU64,
    returns: AtomicU64,
    conflict_retries: AtomicU64,
    flash_winners: AtomicU64,
    flash_paid: AtomicU64,
    flash_rejected: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Catalogue {
    skus: Vec<(Sku, i64)>,
}

struct Sim {
    service: Arc<CommandService>,
    clock: Arc<ManualClock>,
    tag: String,
    eur: Currency,
    catalogue: Catalogue,
    counters: Counters,
    payments: std::sync::OnceLock<payments::Payments>,
}

/// One shopper: its own random stream and command numbering.
struct Shopper {
    index: u32,
    rng: ChaCha8Rng,
    next_command: u64,
}

impl Sim {
    async fn run(
        &self,
        shopper: &mut Shopper,
        command: Command,
    ) -> Result<Result<orderlog_commands::CommandOutcome, orderlog_domain::Rejection>> {
        shopper.next_command += 1;
        let command_id = format!("{}-s{}-{}", self.tag, shopper.index, shopper.next_command);
        self.clock.advance(Duration::seconds(shopper.rng.random_range(1..30)));
        bump(&self.counters.commands);
        let envelope = CommandEnvelope::new(command_id, format!("shopper-{}", shopper.index), command);
        match self.service.execute(envelope).await {
            Ok(outcome) => {
                self.counters.conflict_retries.fetch_add(u64::from(outcome.retries), Ordering::Relaxed);
                Ok(Ok(outcome))
            }
            Err(CommandError::Rejected(r)) => Ok(Err(r)),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a command that the simulation expects to succeed.
    async fn must(&self, shopper: &mut Shopper, command: Command) -> Result<orderlog_commands::CommandOutcome> {
        let what = format!("{command:?}");
        match self.run(shopper, command).await? {
            Ok(outcome) => Ok(outcome),
            Err(r) => bail!("the simulation expected this to succeed: {what}: {}", r.reason),
        }
    }

    fn eur(&self, amount: i64) -> Money {
        Money::new(amount, self.eur)
    }

    async fn cart_op(&self, shopper: &mut Shopper, cart_id: &CartId, command: CartCommand) -> Result<()> {
        bump(&self.counters.cart_operations);
        self.must(shopper, Command::Cart { cart_id: cart_id.clone(), command }).await?;
        Ok(())
    }

    /// Creates a cart and fills it; returns the cart id and whether its customer is
    /// registered (and so still needs a contact email).
    async fn fill_cart(&self, shopper: &mut Shopper, n: u64, items: &[(Sku, u32, i64)]) -> Result<(CartId, bool)> {
        bump(&self.counters.carts);
        let cart_id = CartId::parse(format!("{}-s{}-c{n}", self.tag, shopper.index))?;
        let registered = shopper.rng.random_bool(0.4);
        let customer = if !registered {
            Customer::Guest { email: format!("guest{}.{n}@example.com", shopper.index) }
        } else {
            let id = shopper.rng.random_range(1..5_000);
            let customer_id = CustomerId::parse(format!("cust-{id}"))?;
            if id % 4 == 0 {
                // A quarter of the customers are members (a price list is for them).
                let join = orderlog_domain::customer::CustomerProfileCommand::JoinGroup { group: "members".into() };
                self.must(shopper, Command::Customer { customer_id: customer_id.clone(), command: join }).await?;
            }
            Customer::Registered { customer_id, email: None }
        };
        let create = CartCommand::Create { currency: self.eur, customer, channel: Some("web".into()) };
        self.cart_op(shopper, &cart_id, create).await?;
        // The price is the catalog's (each item's is its default there).
        for (sku, quantity, _) in items {
            let add = CartCommand::AddItem { sku: sku.clone(), quantity: *quantity };
            self.cart_op(shopper, &cart_id, add).await?;
        }
        Ok((cart_id, registered))
    }

    fn pick_items(&self, rng: &mut ChaCha8Rng) -> Vec<(Sku, u32, i64)> {
        let lines = match rng.random_range(0..100) {
            0..=64 => 1,
            65..=92 => 2,
            _ => 3,
        };
        let mut items: Vec<(Sku, u32, i64)> = Vec::new();
        while items.len() < lines {
            let (sku, price) = &self.catalogue.skus[rng.random_range(0..self.catalogue.skus.len())];
            if items.iter().all(|(s, _, _)| s != sku) {
                let quantity = if rng.random_bool(0.7) { 1 } else { 2 };
                items.push((sku.clone(), quantity, *price));
            }
        }
        items
    }

    async fn prepare_for_checkout(&self, shopper: &mut Shopper, cart_id: &CartId, registered: bool) -> Result<()> {
        if shopper.rng.random_bool(0.15) {
            let code = PromotionCode::parse("WELCOME10")?;
            self.cart_op(shopper, cart_id, CartCommand::ApplyCode { code }).await?;
        }
        if registered {
            let email = format!("customer{}@example.com", shopper.rng.random_range(1..5_000));
            self.cart_op(shopper, cart_id, CartCommand::SetContact { email }).await?;
        }
        let address = Address {
            name: format!("Shopper {}", shopper.index),
            line1: format!("Hauptstraße {}", shopper.rng.random_range(1..200)),
            line2: None,
            city: if shopper.rng.random_bool(0.5) { "Berlin".into() } else { "Hamburg".into() },
            postal_code: format!("{:05}", shopper.rng.random_range(10_000..99_999)),
            // Most ship within Germany; some to Austria or the Netherlands (another zone,
            // another tax region).
            country: ["DE", "DE", "DE", "DE", "AT", "NL"][shopper.rng.random_range(0..6)].into(),
            subdivision: None,
        };
        self.cart_op(shopper, cart_id, CartCommand::SetShippingAddress { address }).await?;
        let option = if shopper.rng.random_bool(0.8) { "standard" } else { "express" };
        let option_id = orderlog_domain::ShippingOptionId::parse(option)?;
        self.cart_op(shopper, cart_id, CartCommand::SelectShippingOption { option_id }).await
    }

    /// One shopper's visit: a cart, and for about 30 % of carts, an order and its life.
    async fn visit(&self, shopper: &mut Shopper, n: u64) -> Result<()> {
        let items = self.pick_items(&mut shopper.rng);
        let (cart_id, registered) = self.fill_cart(shopper, n, &items).await?;
        if items.len() > 1 && shopper.rng.random_bool(0.2) {
            let change = CartCommand::ChangeQuantity { sku: items[0].0.clone(), quantity: items[0].1 + 1 };
            self.cart_op(shopper, &cart_id, change).await?;
        }
        if items.len() > 1 && shopper.rng.random_bool(0.1) {
            self.cart_op(shopper, &cart_id, CartCommand::RemoveItem { sku: items[1].0.clone() }).await?;
        }
        if !shopper.rng.random_bool(CHECKOUT_SHARE) {
            bump(&self.counters.abandoned_carts);
            if shopper.rng.random_bool(0.2) {
                self.cart_op(shopper, &cart_id, CartCommand::Expire {}).await?;
            }
            return Ok(());
        }
        self.prepare_for_checkout(shopper, &cart_id, registered).await?;
        let order_id = OrderId::parse(format!("{}-s{}-o{n}", self.tag, shopper.index))?;
        let location = LOCATIONS[usize::from(shopper.rng.random_bool(0.4))];
        let checkout = CheckoutCommand {
            cart_id,
            order_id: order_id.clone(),
            location: LocationId::parse(location)?,
            sources: Default::default(),
        };
        match self.run(shopper, Command::Checkout { checkout }).await? {
            Ok(_) => bump(&self.counters.checkouts_placed),
            Err(r) if r.kind == RejectionKind::OutOfStock => {
                bump(&self.counters.checkouts_rejected_out_of_stock);
                return Ok(());
            }
            Err(r) => bail!("checkout of order {order_id} was rejected: {}", r.reason),
        }
        self.order_life(shopper, &order_id, location).await
    }

    async fn order_life(&self, shopper: &mut Shopper, order_id: &OrderId, location: &str) -> Result<()> {
        let order = |command| Command::Order { order_id: order_id.clone(), command };
        // Most pay by card; some cards decline, some ask for 3-D Secure, which the shopper
        // completes.
        let card = match shopper.rng.random_range(0..100) {
            0..4 => "pm_card_chargeDeclined",
            4..9 => "pm_card_threeDSecure2Required",
            _ => "pm_card_visa",
        };
        if !self.pay(shopper, order_id, card).await? {
            bump(&self.counters.payment_failures);
            self.must(shopper, Command::ExpireOrder { order_id: order_id.clone() }).await?;
            return Ok(());
        }
        if shopper.rng.random_bool(0.05) {
            // Cancelled before it ships: the payment process voids the authorization.
            bump(&self.counters.cancellations);
            let cancel =
                Command::CancelOrder { order_id: order_id.clone(), reason: "customer changed their mind".into() };
            self.must(shopper, cancel).await?;
            return Ok(());
        }
        let placed =
            self.service.store().read_stream(&orderlog_domain::StreamId::order(order_id).to_string(), 1, 1).await?;
        let placed = match DomainEvent::decode(&placed[0].event_type, placed[0].schema_version, &placed[0].payload)? {
            DomainEvent::Order(OrderEvent::OrderPlaced { order }) => order,
            _ => bail!("order {order_id} does not start with OrderPlaced"),
        };
        let lines: Vec<LineQuantity> =
            placed.lines.iter().map(|l| LineQuantity { sku: l.sku.clone(), quantity: l.quantity }).collect();
        let shipment_id = ShipmentId::parse(format!("{order_id}-p1"))?;
        let shipment = |command| Command::Shipment { shipment_id: shipment_id.clone(), command };
        let create = ShipmentCommand::Create {
            order_id: order_id.clone(),
            location: LocationId::parse(location)?,
            lines: lines.clone(),
        };
        self.must(shopper, shipment(create)).await?;
        self.must(shopper, shipment(ShipmentCommand::Pack {})).await?;
        let tracking_number = format!("TRK{:010}", shopper.rng.random_range(0..9_999_999_999u64));
        self.must(shopper, shipment(ShipmentCommand::Ship { carrier: "DHL".into(), tracking_number })).await?;
        // Shipped: the payment process captures.
        bump(&self.counters.shipments);
        let now = self.clock.now();
        if shopper.rng.random_bool(0.1) {
            let failed = ShipmentCommand::RecordCarrierEvent {
                event_id: format!("dhl-{shipment_id}-1"),
                kind: CarrierEventKind::DeliveryFailed { reason: "recipient not at home".into() },
                occurred_at: now + Duration::days(1),
            };
            self.must(shopper, shipment(failed)).await?;
        }
        let delivered = ShipmentCommand::RecordCarrierEvent {
            event_id: format!("dhl-{shipment_id}-2"),
            kind: CarrierEventKind::Delivered,
            occurred_at: now + Duration::days(2),
        };
        self.must(shopper, shipment(delivered)).await?;
        self.must(shopper, order(OrderCommand::Complete {})).await?;
        if shopper.rng.random_bool(0.03) {
            bump(&self.counters.returns);
            let return_id = ReturnId::parse(format!("{order_id}-r1"))?;
            let line = LineQuantity { sku: lines[0].sku.clone(), quantity: 1 };
            let request = OrderCommand::RequestReturn {
                return_id: return_id.clone(),
                lines: vec![line.clone()],
                reason: "does not fit".into(),
            };
            self.must(shopper, order(request)).await?;
            let receive = Command::ReceiveReturn {
                order_id: order_id.clone(),
                return_id,
                lines: vec![ReturnedLine { sku: line.sku.clone(), quantity: 1, restock: true }],
            };
            // Received: the payment process refunds the unit.
            self.must(shopper, receive).await?;
        }
        Ok(())
    }
}

fn catalogue(seed: u64) -> Catalogue {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let names = ["tshirt", "hoodie", "mug", "cap", "socks", "tote", "poster", "sticker"];
    let skus = (0..PRODUCTS)
        .flat_map(|p| {
            let price = rng.random_range(5..90) * 100 - 1;
            SIZES.iter().map(move |size| {
                let sku = format!("{}-{}-{size}", names[p % names.len()], p / names.len() + 1);
                (Sku::parse(sku).expect("valid sku"), price)
            })
        })
        .collect();
    Catalogue { skus }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let opened = crate::open_store(&args.database).await?;
    let store = opened.store.clone();
    // The read models follow the log while the shop runs, as `orderlog project` would.
    let models = crate::read_models(&opened.db, store.clone()).await?;
    let (stop_models, models_stop) = tokio::sync::watch::channel(false);
    // Under the leases every process takes: on a database a server also runs on, the
    // server's projector folds and this run waits for it.
    let leases = Arc::new(orderlog_processes::lease::Leases::new(
        opened.db.processes().await?,
        orderlog_processes::lease::holder_name(),
    ));
    let live = tokio::spawn(orderlog_projections::projector::run_live_gated(
        store.clone(),
        models.runners.clone(),
        leases.clone(),
        models_stop,
    ));
    let started = Instant::now();
    let head_before = store.head().await?;
    // Each run ends with the flash sale's unpaid units coming back, so the flash SKU's stream
    // ends near the end of the previous run: the simulated clock continues an hour after it.
    let flash_stream =
        orderlog_domain::StreamId::stock(&StockKey::new(Sku::parse(FLASH_SKU)?, LocationId::parse(FLASH_LOCATION)?))
            .to_string();
    let flash_version = store.stream_version(&flash_stream).await?;
    // Never before now: a server's timer on the same database fires what falls due by the
    // real clock, and would expire a simulated past's carts and orders while they shop.
    let now = Utc::now().with_nanosecond(0).expect("valid time");
    let start_time = match store.read_stream(&flash_stream, flash_version, 1).await?.first() {
        Some(last) => (last.recorded_at + Duration::hours(1)).max(now),
        None => now,
    };
    let clock = Arc::new(ManualClock::new(start_time));
    // Ids of carts, orders and commands carry the run's own tag: the head alone would give
    // two runs started at once on one database the same ids.
    let tag = format!("h{head_before}-{:08x}", rand::random::<u32>());
    let service =
        Arc::new(CommandService::new(store.clone(), clock.clone(), Arc::new(SequentialIds::new(format!("{tag}-id-")))));
    let sim = Arc::new(Sim {
        service,
        clock,
        tag: tag.clone(),
        eur: Currency::parse("EUR")?,
        catalogue: catalogue(args.seed),
        counters: Counters::default(),
        payments: std::sync::OnceLock::new(),
    });
    let paying = payments::start(&tag, sim.service.clone(), store.clone(), &opened.db).await?;
    if sim.payments.set(paying).is_err() {
        bail!("payments started twice");
    }

    // Another system subscribes to the shop's integration events: a receiver on loopback
    // that checks every signature.
    let receiver = webhook_receiver::start().await?;
    let subscription = {
        let config = orderlog_processes::webhooks::WebhookConfig { allow_private: true, ..Default::default() };
        let webhooks = orderlog_processes::webhooks::Webhooks::new(opened.db.processes().await?, config);
        let types = WEBHOOK_TYPES.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        webhooks.create(&receiver.url, &types, "demo-receiver").await?
    };
    create_catalog(&sim).await?;
    receive_stock(&sim, args.orders, args.seed).await?;
    let carts_total = (f64::from(args.orders) / CHECKOUT_SHARE).ceil() as u64;
    let mut tasks = Vec::new();
    for index in 0..args.shoppers {
        let sim = Arc::clone(&sim);
        let seed = args.seed;
        let shoppers = u64::from(args.shoppers);
        tasks.push(tokio::spawn(async move {
            let mut shopper = Shopper {
                index: index + 1,
                rng: ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(index)),
                next_command: 0,
            };
            let mut n = u64::from(index);
            while n < carts_total {
                sim.visit(&mut shopper, n).await?;
                n += shoppers;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let flash_shoppers = flash_sale(&sim, args.orders, args.seed).await?;
    let payments = sim.payments.get().expect("payments started").settle(&sim, &*store).await?;
    let time_passed = let_time_pass(&sim, &opened.db, &models).await?;
    let webhooks = deliver_webhooks(&opened.db, &leases, &receiver, &subscription).await?;

    let report = fold_log(&*store, head_before).await?;
    let elapsed = started.elapsed();
    let read_models = check_read_models(&*store, &models).await?;
    stop_models.send(true)?;
    for (name, ended) in live.await? {
        ended.map_err(|e| anyhow::anyhow!("read model {name} stopped: {e}"))?;
    }
    leases.release_all().await?;
    let c = &sim.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let summary = DemoSummary {
        database: orderlog_store::postgres::redact(&args.database),
        seed: args.seed,
        shoppers: args.shoppers,
        events_appended: report.events_since,
        events_total: report.events,
        events_per_sec: report.events_since as f64 / elapsed.as_secs_f64(),
        commands: load(&c.commands),
        carts: load(&c.carts),
        cart_operations: load(&c.cart_operations),
        cart_operations_per_checkout: load(&c.cart_operations) as f64 / (load(&c.checkouts_placed).max(1)) as f64,
        abandoned_carts: load(&c.abandoned_carts),
        orders_placed: report.orders_placed_since,
        checkouts_rejected_out_of_stock: load(&c.checkouts_rejected_out_of_stock) + load(&c.flash_rejected),
        oversold_units: report.oversold_units,
        payment_failures: load(&c.payment_failures),
        cancellations: load(&c.cancellations),
        shipments: load(&c.shipments),
        returns: load(&c.returns),
        conflict_retries: load(&c.conflict_retries),
        time_passed,
        webhooks,
        flash_sale: FlashSale {
            sku: FLASH_SKU.into(),
            location: FLASH_LOCATION.into(),
            units: FLASH_UNITS,
            shoppers: flash_shoppers,
            winners: load(&c.flash_winners),
            paid: load(&c.flash_paid),
            rejected_out_of_stock: load(&c.flash_rejected),
        },
        payments,
        log: report,
        read_models,
        elapsed_ms: elapsed.as_millis() as u64,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    if summary.oversold_units != 0 {
        bail!("the log shows {} units oversold", summary.oversold_units);
    }
    let p = &summary.payments;
    if p.charged_without_order + p.double_charged + p.ledger_mismatches != 0 {
        bail!(
            "payments: {} charged without an order, {} charged twice, {} differing from the provider's ledger",
            p.charged_without_order,
            p.double_charged,
            p.ledger_mismatches
        );
    }
    if let Some(model) = summary.read_models.iter().find(|m| !m.matches_log) {
        bail!("read model {} differs from the fold of the log", model.name);
    }
    Ok(())
}

/// What the demo's receiver subscribes to.
const WEBHOOK_TYPES: [&str; 4] = ["order.placed", "order.shipped", "order.expired", "stock.low"];

/// Runs the webhook and low-stock reactors up to the end of the log (as `orderlog serve`
/// does all along) and delivers the subscription's messages to the receiver; then
/// disables the subscription, whose receiver ends with the demo.
async fn deliver_webhooks(
    db: &orderlog_api::database::Database,
    leases: &orderlog_processes::lease::Leases,
    receiver: &webhook_receiver::Receiver,
    subscription: &orderlog_processes::webhooks::Created,
) -> Result<WebhookDeliveries> {
    use orderlog_processes::reactor::ReactorRunner;
    use orderlog_processes::webhooks::{Dispatcher, WebhookConfig, WebhookReactor, Webhooks};
    use orderlog_projections::projector::Gate;
    /// How long the demo waits for a server on the same database to do a job it leads.
    const LED_ELSEWHERE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
    let process_db = db.processes().await?;
    let webhooks = Webhooks::new(process_db.clone(), WebhookConfig { allow_private: true, ..Default::default() });
    let store = db.store();
    let low_stock = orderlog_processes::low_stock::LowStockReactor::new(webhooks.clone(), store.clone());
    let runners = [
        ReactorRunner::new(Arc::new(WebhookReactor::new(webhooks.clone())), store.clone(), process_db.clone()),
        ReactorRunner::new(Arc::new(low_stock), store.clone(), process_db.clone()),
    ];
    let started = Instant::now();
    for runner in &runners {
        // Under its lease, as every process runs a reactor; led by another process (a
        // server on this database), the demo waits for that one to reach the end.
        if leases.may_run(&format!("reactor:{}", runner.name())).await {
            while runner.step().await? > 0 {}
        } else {
            while !store.read_all(runner.checkpoint().await?.cursor, 1).await?.is_empty() {
                if started.elapsed() > LED_ELSEWHERE_WAIT {
                    bail!("the {} reactor, led by another process, did not reach the end of the log", runner.name());
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    let id = &subscription.webhook.id;
    if leases.may_run(&format!("webhook-delivery:{id}")).await {
        let dispatcher = Dispatcher::new(webhooks.clone());
        while dispatcher.deliver_due(id).await?.is_some_and(|sent| sent > 0) {}
    }
    while webhooks.counts(id).await?.0 > 0 {
        if started.elapsed() > LED_ELSEWHERE_WAIT {
            bail!("the demo's webhook messages were not all delivered within {LED_ELSEWHERE_WAIT:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, delivered, _) = webhooks.counts(id).await?;
    webhooks.disable(id, "the demo's receiver stopped with the demo").await?;
    let (received, verified, by_type) = receiver.counts(&subscription.secret);
    Ok(WebhookDeliveries {
        receiver: receiver.url.clone(),
        delivered,
        received,
        signatures_verified: verified,
        by_type,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Days the simulated clock moves on after the flash sale: past the payment deadline of
/// every unpaid order and the idle deadline of every abandoned cart.
const DAYS_PASSING: i64 = 15;

/// Time passes after the sale: the clock moves on and the timer fires what fell due, as
/// `orderlog serve` does every moment. Unpaid orders (the flash sale's winners pay nothing)
/// expire and release their stock; carts left alone expire.
async fn let_time_pass(
    sim: &Sim,
    db: &orderlog_api::database::Database,
    models: &crate::ReadModels,
) -> Result<TimePassed> {
    let index = models
        .runners
        .iter()
        .find(|r| {
            r.name()
                == <orderlog_projections::deadlines::DeadlineTable as orderlog_projections::table::TableModel>::NAME
        })
        .expect("the deadline index is a read model");
    let store = sim.service.store().clone();
    let flash = StockKey::new(Sku::parse(FLASH_SKU)?, LocationId::parse(FLASH_LOCATION)?);
    let flash_available = |state: orderlog_domain::stock::StockState| state.available();
    let flash_before = flash_available(crate::report::stock_state(&*store, &flash).await?);
    sim.clock.advance(Duration::days(DAYS_PASSING));
    let queries = db.queries(1).await?;
    let timer = orderlog_processes::timer::Timer::new(sim.service.clone(), queries, sim.clock.clone());
    let mut passed = TimePassed { days: DAYS_PASSING, flash_available_before: flash_before, ..TimePassed::default() };
    loop {
        if !orderlog_projections::projector::wait_caught_up(&*store, &**index, std::time::Duration::from_secs(60))
            .await?
        {
            bail!("the deadline index did not catch up within 60 s");
        }
        let tick = timer.tick().await?;
        if tick.fired() == 0 {
            break;
        }
        passed.deadlines_fired += u64::from(tick.fired());
        passed.refused += u64::from(tick.refused);
    }
    passed.flash_available_after = flash_available(crate::report::stock_state(&*store, &flash).await?);
    Ok(passed)
}

/// The shop's catalog, made through the catalog commands: 24 products (three models of each
/// kind of item: t-shirt, hoodie, …) with a variant per size, and the flash-sale sneaker;
/// all published.
async fn create_catalog(sim: &Sim) -> Result<()> {
    let mut shopper = Shopper { index: 0, rng: ChaCha8Rng::seed_from_u64(0xCA7A), next_command: 2_000_000 };
    let mut products: std::collections::BTreeMap<String, Vec<Variant>> = Default::default();
    let flash = [(Sku::parse(FLASH_SKU)?, FLASH_PRICE)];
    for (sku, price) in sim.catalogue.skus.iter().chain(flash.iter()) {
        // `tshirt-1-m` is size M of the product `tshirt-1`; the sneaker comes in one size.
        let (model, options) = match sku.as_str().rsplit_once('-') {
            Some((model, size)) if sku.as_str() != FLASH_SKU => {
                (model.to_string(), [("size".to_string(), size.to_uppercase())].into())
            }
            _ => (sku.to_string(), Default::default()),
        };
        products.entry(model).or_default().push(Variant {
            sku: sku.clone(),
            title: sku.as_str().replace('-', " "),
            options,
            weight_grams: 300,
            prices: vec![sim.eur(*price)],
            requires_shipping: true,
        });
    }
    for (model, variants) in products {
        let product_id = ProductId::parse(format!("product-{model}"))?;
        let product = |command| Command::Product { product_id: product_id.clone(), command };
        // A shop that ran before (or runs beside this one) has the product: this run's
        // prices are set on it instead.
        let (state, _) = sim.service.state(&orderlog_domain::StreamId::product(&product_id)).await?;
        let exists = orderlog_domain::product::Product::state(&state).is_some_and(|p| p.created);
        let created = !exists && {
            let title = model.replace('-', " ");
            let create = ProductCommand::Create {
                title,
                tax_class: "standard".into(),
                prices_include_tax: true,
                variants: variants.clone(),
            };
            sim.run(&mut shopper, product(create)).await?.is_ok()
        };
        if !created {
            for variant in variants {
                let set = ProductCommand::SetPrices { sku: variant.sku.clone(), prices: variant.prices.clone() };
                if sim.run(&mut shopper, product(set)).await?.is_err() {
                    // A variant this run's catalogue has and the product lacks.
                    let add = ProductCommand::AddVariant { variant };
                    if let Err(r) = sim.run(&mut shopper, product(add)).await? {
                        if r.kind != RejectionKind::Conflict {
                            bail!("the demo's catalog: {}", r.reason);
                        }
                    }
                }
            }
        }
        sim.must(&mut shopper, product(ProductCommand::Publish {})).await?;
    }
    // Three coupons: 10 % for everyone, 5 EUR off orders of 50 EUR for the first 50, and
    // 20 % off orders of 100 EUR once per customer, for the first 100. A shop that ran
    // before has them already.
    let coupons = [
        ("WELCOME10", PromotionKind::Percentage { basis_points: 1_000 }, None, None, None),
        ("FIVE-OFF", PromotionKind::FixedPerOrder { amount: sim.eur(500) }, Some(5_000), Some(50), None),
        ("BIG20", PromotionKind::Percentage { basis_points: 2_000 }, Some(10_000), Some(100), Some(1)),
    ];
    for (code, kind, min, usage_limit, per_customer_limit) in coupons {
        let conditions = Conditions { min_subtotal: min.map(|m| sim.eur(m)), ..Conditions::default() };
        let command = PromotionCommand::Create { kind, conditions, usage_limit, per_customer_limit, automatic: false };
        let code = PromotionCode::parse(code)?;
        if let Err(r) = sim.run(&mut shopper, Command::Promotion { code, command }).await? {
            if r.kind != RejectionKind::Conflict {
                bail!("the demo's promotions: {}", r.reason);
            }
        }
    }
    create_pricing(sim, &mut shopper).await
}

/// The rest of what the server prices by: two tax regions, two shipping zones, a price list
/// for members, a weekend sale, and an automatic promotion (every third mug free). Each is
/// a definition that a second run states again unchanged (no events) or, for the price
/// lists and the promotion, finds already made.
async fn create_pricing(sim: &Sim, shopper: &mut Shopper) -> Result<()> {
    use orderlog_domain::price_list::{PriceListCommand, PriceListRules};
    use orderlog_domain::shipping::{ShippingOption, ShippingRate, ShippingZoneCommand, WeightBand};
    use orderlog_domain::tax::{TaxRegionCommand, TaxRegionId};
    use orderlog_domain::{PriceListId, ShippingOptionId, ShippingZoneId};
    let tolerate = |outcome: Result<orderlog_commands::CommandOutcome, orderlog_domain::Rejection>| match outcome {
        Err(r) if r.kind != RejectionKind::Conflict => bail!("the demo's pricing: {}", r.reason),
        _ => Ok(()),
    };
    for (region, name, standard, reduced) in
        [("DE", "Germany", 1_900, 700), ("AT", "Austria", 2_000, 1_000), ("NL", "Netherlands", 2_100, 900)]
    {
        let command = TaxRegionCommand::Define {
            name: name.into(),
            rates: [("standard".to_string(), standard), ("reduced".to_string(), reduced)].into(),
            default_class: "standard".into(),
            exempt_groups: ["diplomats".to_string()].into(),
        };
        sim.must(shopper, Command::TaxRegion { region_id: TaxRegionId::parse(region)?, command }).await?;
    }
    let option = |id: &str, name: &str, rate| -> Result<ShippingOption> {
        Ok(ShippingOption { id: ShippingOptionId::parse(id)?, name: name.into(), rate })
    };
    let zones = [
        (
            "germany",
            vec!["DE"],
            vec![
                option(
                    "standard",
                    "DHL Paket",
                    ShippingRate::FreeAbove { price: sim.eur(490), threshold: sim.eur(5_000) },
                )?,
                option("express", "DHL Express", ShippingRate::Flat { price: sim.eur(990) })?,
            ],
        ),
        (
            "europe",
            vec!["AT", "NL", "FR", "BE"],
            vec![
                option(
                    "standard",
                    "DHL Europaket",
                    ShippingRate::ByWeight {
                        bands: vec![
                            WeightBand { up_to_grams: 1_000, price: sim.eur(790) },
                            WeightBand { up_to_grams: 5_000, price: sim.eur(1_290) },
                            WeightBand { up_to_grams: 31_500, price: sim.eur(2_490) },
                        ],
                    },
                )?,
                option("express", "UPS Express", ShippingRate::Flat { price: sim.eur(1_990) })?,
            ],
        ),
    ];
    for (zone, countries, options) in zones {
        let command = ShippingZoneCommand::Define {
            name: zone.into(),
            currency: sim.eur,
            countries: countries.into_iter().map(String::from).collect(),
            prices_include_tax: true,
            options,
        };
        sim.must(shopper, Command::ShippingZone { zone_id: ShippingZoneId::parse(zone)?, command }).await?;
    }
    // Members pay 10 % less on t-shirts and hoodies; posters and stickers are 25 % off from
    // the coming Friday 00:00 to Monday 00:00 (UTC).
    let now = sim.service.now();
    let days_to_friday = (4 + 7 - i64::from(now.weekday().num_days_from_monday())) % 7;
    let friday = (now + Duration::days(days_to_friday)).date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let lists = [
        (
            "members",
            "Members",
            5,
            PriceListRules { customer_group: Some("members".into()), ..Default::default() },
            ["tshirt", "hoodie"],
            9_000,
        ),
        (
            "weekend-sale",
            "Weekend sale",
            10,
            PriceListRules { starts_at: Some(friday), ends_at: Some(friday + Duration::days(3)), ..Default::default() },
            ["poster", "sticker"],
            7_500,
        ),
    ];
    for (id, name, priority, rules, kinds, share) in lists {
        let price_list_id = PriceListId::parse(id)?;
        let list = |command| Command::PriceList { price_list_id: price_list_id.clone(), command };
        let create =
            PriceListCommand::Create { name: name.into(), currency: sim.eur, priority, tax_inclusive: true, rules };
        tolerate(sim.run(shopper, list(create)).await?)?;
        let prices = sim
            .catalogue
            .skus
            .iter()
            .filter(|(sku, _)| kinds.iter().any(|k| sku.as_str().starts_with(k)))
            .map(|(sku, price)| (sku.clone(), sim.eur(price * share / 10_000)))
            .collect();
        sim.must(shopper, list(PriceListCommand::SetPrices { prices })).await?;
    }
    let mugs =
        (1..=PRODUCTS / 8).map(|model| ProductId::parse(format!("product-mug-{model}"))).collect::<Result<_, _>>()?;
    let mugs = Conditions { products: mugs, ..Conditions::default() };
    let command = PromotionCommand::Create {
        kind: PromotionKind::BuyXGetY { buy: 2, get: 1 },
        conditions: mugs,
        usage_limit: None,
        per_customer_limit: None,
        automatic: true,
    };
    tolerate(sim.run(shopper, Command::Promotion { code: PromotionCode::parse("MUGS-3FOR2")?, command }).await?)
}

/// Stock for about the demand the orders will make, a little short on purpose, at both
/// locations; some of it announced as incoming first.
async fn receive_stock(sim: &Sim, orders: u32, seed: u64) -> Result<()> {
    let mut shopper = Shopper { index: 0, rng: ChaCha8Rng::seed_from_u64(seed ^ 0xA5A5), next_command: 0 };
    let per_item = (f64::from(orders) * 2.1 / (SKUS * LOCATIONS.len()) as f64).ceil() as u32 + 1;
    for (sku, _) in &sim.catalogue.skus {
        for location in LOCATIONS {
            let stock = StockKey::new(sku.clone(), LocationId::parse(location)?);
            let quantity = shopper.rng.random_range(per_item * 8 / 10..=per_item * 12 / 10).max(1);
            if shopper.rng.random_bool(0.3) {
                sim.must(
                    &mut shopper,
                    Command::Stock { stock: stock.clone(), command: StockCommand::ExpectIncoming { quantity } },
                )
                .await?;
            }
            sim.must(
                &mut shopper,
                Command::Stock { stock, command: StockCommand::Receive { quantity, reference: None } },
            )
            .await?;
        }
    }
    Ok(())
}

/// Many shoppers check out the last units of one SKU at the same moment.
async fn flash_sale(sim: &Arc<Sim>, orders: u32, seed: u64) -> Result<u64> {
    let mut setup = Shopper { index: 0, rng: ChaCha8Rng::seed_from_u64(seed ^ 0xF1A5), next_command: 1_000_000 };
    let stock = StockKey::new(Sku::parse(FLASH_SKU)?, LocationId::parse(FLASH_LOCATION)?);
    sim.must(
        &mut setup,
        Command::Stock {
            stock: stock.clone(),
            command: StockCommand::Receive { quantity: FLASH_UNITS, reference: None },
        },
    )
    .await?;
    // Purchasing hears when the sale leaves fewer than 3 (stock.low).
    let threshold = StockCommand::SetLowStockThreshold { threshold: 3 };
    sim.must(&mut setup, Command::Stock { stock, command: threshold }).await?;
    let shoppers = u64::from((orders / 20).clamp(50, 500));
    let mut ready = Vec::new();
    for n in 0..shoppers {
        let mut shopper =
            Shopper { index: 10_000 + n as u32, rng: ChaCha8Rng::seed_from_u64(seed ^ n), next_command: 0 };
        let items = [(Sku::parse(FLASH_SKU)?, 1, FLASH_PRICE)];
        let (cart_id, registered) = sim.fill_cart(&mut shopper, n, &items).await?;
        sim.prepare_for_checkout(&mut shopper, &cart_id, registered).await?;
        ready.push((shopper, cart_id));
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(ready.len()));
    let mut tasks = Vec::new();
    for (mut shopper, cart_id) in ready {
        let sim = Arc::clone(sim);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let order_id = OrderId::parse(format!("{}-flash-{}", sim.tag, shopper.index))?;
            let checkout = CheckoutCommand {
                cart_id,
                order_id: order_id.clone(),
                location: LocationId::parse(FLASH_LOCATION)?,
                sources: Default::default(),
            };
            barrier.wait().await;
            match sim.run(&mut shopper, Command::Checkout { checkout }).await? {
                Ok(_) => {
                    // Every other winner pays through the provider; the rest never pay, and
                    // their orders expire when time passes, giving the units back.
                    let nth = sim.counters.flash_winners.fetch_add(1, Ordering::Relaxed);
                    if nth.is_multiple_of(2) {
                        if !sim.pay(&mut shopper, &order_id, "pm_card_visa").await? {
                            bail!("flash-sale order {order_id}: the payment was not authorized");
                        }
                        bump(&sim.counters.flash_paid);
                    }
                }
                Err(r) if r.kind == RejectionKind::OutOfStock => bump(&sim.counters.flash_rejected),
                Err(r) => bail!("flash-sale checkout rejected: {}", r.reason),
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(shoppers)
}
