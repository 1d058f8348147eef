//! The payment process driven step by step (a reactor runner over a real store, the
//! simulator over loopback HTTP), to pin what it asks of the provider for each event.

use std::sync::Arc;

use orderlog_commands::{Command, CommandEnvelope, CommandService, RandomIds, SystemClock};
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::order::LineQuantity;
use orderlog_domain::shipment::ShipmentCommand;
use orderlog_domain::stock::StockCommand;
use orderlog_domain::{testing, CartId, LocationId, OrderId, ShipmentId, Sku, StockKey};
use orderlog_payments::process::PaymentProcess;
use orderlog_payments::sim::Simulator;
use orderlog_payments::stripe::StripeGateway;
use orderlog_processes::reactor::ReactorRunner;

struct Shop {
    service: Arc<CommandService>,
    runner: ReactorRunner,
    sim: Arc<Simulator>,
    _dir: tempfile::TempDir,
}

impl Shop {
    async fn start() -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let db = orderlog_api::database::Database::open(&dir.path().join("shop.db").to_string_lossy()).await.unwrap();
        let store = db.store();
        let service = Arc::new(CommandService::new(store.clone(), Arc::new(SystemClock), Arc::new(RandomIds)));
        let sim = Simulator::new("sk_test", None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(sim.clone().serve(listener));
        let gateway = Arc::new(StripeGateway::new(&base, "sk_test"));
        let process = Arc::new(PaymentProcess::new(service.clone(), gateway));
        let runner = ReactorRunner::new(process, store, db.processes().await.unwrap());
        Shop { service, runner, sim, _dir: dir }
    }

    async fn run(&self, id: &str, command: Command) {
        self.service.execute(CommandEnvelope::new(id, "tester", command)).await.unwrap();
    }

    /// Runs the process until it has read the whole log.
    async fn settle(&self) {
        while self.runner.step().await.unwrap() > 0 {}
    }

    async fn ship(&self, id: &str, quantity: u32) {
        let shipment_id = ShipmentId::parse(id).unwrap();
        let lines = vec![LineQuantity { sku: Sku::parse("mug").unwrap(), quantity }];
        let location = LocationId::parse("berlin").unwrap();
        let create = ShipmentCommand::Create { order_id: OrderId::parse("o1").unwrap(), location, lines };
        for (n, command) in [
            create,
            ShipmentCommand::Pack {},
            ShipmentCommand::Ship { carrier: "dhl".into(), tracking_number: "t".into() },
        ]
        .into_iter()
        .enumerate()
        {
            self.run(&format!("{id}-{n}"), Command::Shipment { shipment_id: shipment_id.clone(), command }).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shipments_read_in_one_batch_capture_each_its_own_part() {
    let shop = Shop::start().await;
    let lines = [("mug", 3, 1_000)];
    for (id, product_id, command) in testing::catalog_commands(&lines) {
        shop.run(&id, Command::Product { product_id, command }).await;
    }
    let (region_id, command) = testing::tax_region();
    shop.run("tax", Command::TaxRegion { region_id, command }).await;
    let (zone_id, command) = testing::shipping_zone(500);
    shop.run("zone", Command::ShippingZone { zone_id, command }).await;
    let stock = StockKey::new(Sku::parse("mug").unwrap(), LocationId::parse("berlin").unwrap());
    shop.run("stock", Command::Stock { stock, command: StockCommand::Receive { quantity: 9, reference: None } }).await;
    let cart_id = CartId::parse("c1").unwrap();
    for (i, command) in testing::cart_commands(testing::guest("ann@example.com"), &lines, 0).into_iter().enumerate() {
        shop.run(&format!("cart-{i}"), Command::Cart { cart_id: cart_id.clone(), command }).await;
    }
    let checkout = CheckoutCommand {
        cart_id,
        order_id: OrderId::parse("o1").unwrap(),
        location: LocationId::parse("berlin").unwrap(),
        sources: Default::default(),
    };
    shop.run("checkout", Command::Checkout { checkout }).await;
    let pay = Command::Pay {
        order_id: OrderId::parse("o1").unwrap(),
        payment_method: "pm_card_visa".into(),
        provider: "stripe".into(),
    };
    shop.run("pay", pay).await;
    shop.settle().await;
    assert_eq!(shop.sim.intents()[0].status, "requires_capture");
    // Both shipments ship before the process looks: it reads them in one batch.
    shop.ship("s1", 1).await;
    shop.ship("s2", 2).await;
    shop.settle().await;
    shop.settle().await;
    let intent = &shop.sim.intents()[0];
    // 3 mugs at 10.00 (tax included) and 5.00 shipping: the first shipment captures its
    // mug, the last one the rest, shipping included.
    assert_eq!(intent.captures, vec![1_000, 2_500], "{intent:?}");
    assert_eq!((intent.amount_received, intent.status.as_str()), (3_500, "succeeded"));
}
