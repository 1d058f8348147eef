//! The baseline of `benches/checkout.rs`: the same carts and checkouts with client-supplied
//! prices, for the commit before the server priced carts (4a255d4). Each cart's lines carry
//! their unit price (the one the server-priced run's catalog gives), the discount its own
//! 10 %, the shipping method its 4.90, and the checkout its tax rate (19 %).
//! `tools/checkout_bench.sh` copies it into a worktree of that commit and runs it there.
//!
//! `cargo bench --bench checkout [-- CARTS [CLIENTS]]` (default 2 000 carts, 8 clients).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Instant;

use orderlog_commands::{Command, CommandEnvelope, CommandService, RandomIds, SystemClock};
use orderlog_domain::cart::{CartCommand, Customer, Discount, DiscountKind, ShippingMethod};
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::stock::StockCommand;
use orderlog_domain::{CartId, Currency, LocationId, Money, OrderId, Sku, StockKey};
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
        for i in 0..SKUS {
            let stock = StockKey::new(sku(i), LocationId::parse("berlin").unwrap());
            let receive = StockCommand::Receive { quantity: 1_000_000, reference: None };
            run(&service, format!("s{i}"), Command::Stock { stock, command: receive }).await;
        }
        // What the server-priced run's catalog charges: the sale price for even SKUs.
        let price = |i: usize| Money::new(if i % 2 == 0 { 900 } else { 1_000 } + 100 * i as i64, eur);
        // The carts.
        for n in 0..carts {
            let cart_id = CartId::parse(format!("c{n}")).unwrap();
            let cart = |command| Command::Cart { cart_id: cart_id.clone(), command };
            let customer = Customer::Guest { email: format!("g{n}@example.com") };
            let mut commands = vec![CartCommand::Create { currency: eur, customer }];
            for i in [n % SKUS, (n * 7 + 3) % SKUS] {
                commands.push(CartCommand::AddItem { sku: sku(i), quantity: 1 + (n % 3) as u32, unit_price: price(i) });
            }
            commands.push(CartCommand::SetShippingAddress { address: orderlog_domain::testing::address() });
            let method = ShippingMethod { id: "dhl".into(), price: Money::new(490, eur) };
            commands.push(CartCommand::SelectShippingMethod { method });
            let discount = Discount { code: "TEN".into(), kind: DiscountKind::Percentage { basis_points: 1_000 } };
            commands.push(CartCommand::ApplyDiscount { discount });
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
                        tax_rate_bps: 1_900,
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
            "client-priced checkouts: {carts} in {elapsed:.2} s, {:.0} checkouts/s, p50 {:.2} ms, p99 {:.2} ms ({clients} clients)",
            carts as f64 / elapsed,
            p(0.5),
            p(0.99)
        );
        drop(db);
    });
}
