//! Checkouts through the command service on PostgreSQL with server pricing: each cart has
//! two lines priced by the catalog (a price list in force), a coupon applied by code, an
//! automatic promotion it meets, a shipping option of the zone that serves its address,
//! and tax from the address's region. CARTS carts are made first; then CLIENTS tasks check
//! them out, each its share, and checkouts/s is timed over the checkouts alone.
//!
//! The baseline is the same workload with client-supplied prices on the commit before the
//! server priced carts (`benches/baseline/checkout_client_priced.rs`, run there by
//! `tools/checkout_bench.sh`, which alternates the two in one run).
//!
//! `cargo bench --bench checkout [-- CARTS [CLIENTS]]` (default 2 000 carts, 8 clients).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

use orderlog_commands::{Command, CommandEnvelope, CommandService, RandomIds, SystemClock};
use orderlog_domain::cart::{CartCommand, Customer};
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::price_list::PriceListCommand;
use orderlog_domain::product::{ProductCommand, Variant};
use orderlog_domain::promotion::{Conditions, PromotionCommand, PromotionKind};
use orderlog_domain::stock::StockCommand;
use orderlog_domain::{
    CartId, Currency, LocationId, Money, OrderId, PriceListId, ProductId, PromotionCode, ShippingOptionId, Sku,
    StockKey,
};
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::PostgresStore;

const SKUS: usize = 20;

async fn run(service: &CommandService, id: String, command: Command) {
    service.execute(CommandEnvelope::new(id, "bench", command)).await.unwrap_or_else(|e| panic!("{e}"));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let carts: usize = args.first().map_or(2_000, |a| a.parse().unwrap());
    let clients: usize = args.get(1).map_or(8, |a| a.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let db = TestDatabase::create().await;
        let store = Arc::new(PostgresStore::connect_url(&db.url).await.unwrap());
        let service = Arc::new(CommandService::new(store, Arc::new(SystemClock), Arc::new(RandomIds)));
        let eur = Currency::parse("EUR").unwrap();
        let sku = |i: usize| Sku::parse(format!("sku-{i}")).unwrap();
        // The catalog: one product per SKU, a price list in force for half of them, a tax
        // region, a shipping zone, a coupon and an automatic promotion.
        for i in 0..SKUS {
            let product_id = ProductId::parse(format!("p-{i}")).unwrap();
            let variant = Variant {
                sku: sku(i),
                title: format!("Item {i}"),
                options: Default::default(),
                weight_grams: 300,
                prices: vec![Money::new(1_000 + 100 * i as i64, eur)],
                requires_shipping: true,
            };
            let create = ProductCommand::Create {
                title: format!("Item {i}"),
                tax_class: if i % 2 == 0 { "standard".into() } else { "reduced".into() },
                prices_include_tax: true,
                variants: vec![variant],
            };
            run(&service, format!("p{i}"), Command::Product { product_id: product_id.clone(), command: create }).await;
            run(&service, format!("pp{i}"), Command::Product { product_id, command: ProductCommand::Publish {} }).await;
            let stock = StockKey::new(sku(i), LocationId::parse("berlin").unwrap());
            let receive = StockCommand::Receive { quantity: 1_000_000, reference: None };
            run(&service, format!("s{i}"), Command::Stock { stock, command: receive }).await;
        }
        let list = PriceListId::parse("sale").unwrap();
        let create = PriceListCommand::Create {
            name: "Sale".into(),
            currency: eur,
            priority: 1,
            tax_inclusive: true,
            rules: Default::default(),
        };
        run(&service, "pl".into(), Command::PriceList { price_list_id: list.clone(), command: create }).await;
        let prices = (0..SKUS).step_by(2).map(|i| (sku(i), Money::new(900 + 100 * i as i64, eur))).collect();
        run(&service, "plp".into(), Command::PriceList { price_list_id: list, command: PriceListCommand::SetPrices { prices } })
            .await;
        let (region_id, command) = orderlog_domain::testing::tax_region();
        run(&service, "tax".into(), Command::TaxRegion { region_id, command }).await;
        let (zone_id, command) = orderlog_domain::testing::shipping_zone(490);
        run(&service, "zone".into(), Command::ShippingZone { zone_id, command }).await;
        for (code, kind, automatic) in [
            ("TEN", PromotionKind::Percentage { basis_points: 1_000 }, false),
            ("TWO-FOR-ONE", PromotionKind::BuyXGetY { buy: 1, get: 1 }, true),
        ] {
            // The automatic one is for one SKU only, so most carts pay for their lines.
            let conditions = Conditions { skus: [sku(SKUS - 1)].into(), ..Conditions::default() };
            let conditions = if automatic { conditions } else { Conditions::default() };
            let command = PromotionCommand::Create {
                kind,
                conditions,
                usage_limit: None,
                per_customer_limit: None,
                automatic,
            };
            run(&service, format!("promo-{code}"), Command::Promotion { code: PromotionCode::parse(code).unwrap(), command })
                .await;
        }
        // The carts.
        for n in 0..carts {
            let cart_id = CartId::parse(format!("c{n}")).unwrap();
            let cart = |command| Command::Cart { cart_id: cart_id.clone(), command };
            let customer = Customer::Guest { email: format!("g{n}@example.com") };
            let mut commands = vec![CartCommand::Create { currency: eur, customer, channel: None }];
            for i in [n % SKUS, (n * 7 + 3) % SKUS] {
                commands.push(CartCommand::AddItem { sku: sku(i), quantity: 1 + (n % 3) as u32 });
            }
            commands.push(CartCommand::SetShippingAddress { address: orderlog_domain::testing::address() });
            commands.push(CartCommand::SelectShippingOption { option_id: ShippingOptionId::parse("dhl").unwrap() });
            commands.push(CartCommand::ApplyCode { code: PromotionCode::parse("TEN").unwrap() });
            for (i, command) in commands.into_iter().enumerate() {
                run(&service, format!("c{n}-{i}"), cart(command)).await;
            }
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for client in 0..clients {
            let service = Arc::clone(&service);
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for n in (client..carts).step_by(clients) {
                    let checkout = CheckoutCommand {
                        cart_id: CartId::parse(format!("c{n}")).unwrap(),
                        order_id: OrderId::parse(format!("o{n}")).unwrap(),
                        location: LocationId::parse("berlin").unwrap(),
                        sources: Default::default(),
                    };
                    let t = Instant::now();
                    run(&service, format!("o{n}"), Command::Checkout { checkout }).await;
                    latencies.push(t.elapsed().as_secs_f64() * 1_000.0);
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "server-priced checkouts: {carts} in {elapsed:.2} s, {:.0} checkouts/s, p50 {:.2} ms, p99 {:.2} ms ({clients} clients)",
            carts as f64 / elapsed,
            p(0.5),
            p(0.99)
        );
        drop(db);
    });
}
