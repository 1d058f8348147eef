//! Payments end to end, two real processes talking HTTP: `orderlog serve` with the payment
//! process, and `orderlog gateway-sim` (Stripe's protocol) sending signed webhooks back.
//! Each test compares the simulator's ledger with the log at the end.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{gateway_sim, http, orderlog, request, serve, Server};
use orderlog_payments::signature;
use serde_json::{json, Value};

const WHSEC: &str = "whsec_e2e_tests";

struct Shop {
    server: Server,
    sim: Server,
    token: String,
    database: String,
    _dir: tempfile::TempDir,
}

impl Shop {
    fn start() -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("shop.db").to_string_lossy().to_string();
        let scopes = "shop,operations,catalog,audit";
        let made = orderlog(&["token", "create", "--database", &database, "--principal", "web", "--scopes", scopes]);
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let token = String::from_utf8(made.stdout).unwrap().trim().to_string();
        let sim = gateway_sim();
        let server = Shop::serve(&database, sim.address);
        let shop = Shop { server, sim, token, database, _dir: dir };
        shop.ok("POST", "/stock/mug/berlin/receipts", Some(json!({"quantity": 100})));
        let price = json!({"amount": 900, "currency": "EUR"});
        let product = json!({"product_id": "mug", "title": "Mug", "tax_class": "standard",
                             "variants": [{"sku": "mug", "title": "Mug", "prices": [price]}]});
        shop.ok("POST", "/products", Some(product));
        shop.ok("POST", "/products/mug/publish", None);
        let region = json!({"name": "Germany", "rates": {"standard": 1900}, "default_class": "standard"});
        shop.ok("PUT", "/tax-regions/DE", Some(region));
        let zone = json!({"name": "Germany", "currency": "EUR", "countries": ["DE"], "prices_include_tax": true,
                          "options": [{"id": "dhl", "name": "DHL", "rate": {"kind": "flat", "price": price}}]});
        shop.ok("PUT", "/shipping-zones/de", Some(zone));
        shop
    }

    /// `orderlog serve` paying through the simulator, which sends its webhooks to it.
    fn serve(database: &str, sim: SocketAddr) -> Server {
        let api = format!("http://{sim}");
        let extra =
            ["--payment-api", &api, "--payment-secret-key", "sk_test_orderlog", "--payment-webhook-secret", WHSEC];
        let server = serve(database, &extra, Stdio::null());
        let url = format!("http://{}/payments/webhooks/stripe", server.address);
        let (status, _) = http(sim, "POST", "/_sim/webhook", "", Some(json!({"url": url, "secret": WHSEC})));
        assert_eq!(status, 204);
        server
    }

    /// Kills the server (SIGKILL: no shutdown of any kind) and starts another on the same
    /// database.
    fn kill_and_restart(&mut self) {
        self.server.child.kill().unwrap();
        self.server.child.wait().unwrap();
        self.server = Shop::serve(&self.database, self.sim.address);
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(self.server.address, method, path, &self.token, body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
        body
    }

    /// Places order `order` for `quantity` mugs.
    fn order(&self, order: &str, quantity: u32) {
        let cart = format!("cart-{order}");
        let customer = json!({"kind": "guest", "email": "ann@example.com"});
        self.ok("POST", "/carts", Some(json!({"cart_id": cart, "currency": "EUR", "customer": customer})));
        self.ok("POST", &format!("/carts/{cart}/items"), Some(json!({"sku": "mug", "quantity": quantity})));
        self.ok("PUT", &format!("/carts/{cart}/shipping-address"), Some(orderlog_domain::testing::address_json()));
        self.ok("PUT", &format!("/carts/{cart}/shipping-method"), Some(json!({"option_id": "dhl"})));
        self.ok("POST", &format!("/carts/{cart}/checkout"), Some(json!({"order_id": order, "location": "berlin"})));
    }

    fn pay(&self, order: &str, card: &str) {
        self.ok("POST", &format!("/orders/{order}/pay"), Some(json!({"payment_method": card})));
    }

    fn payments(&self, order: &str) -> Value {
        self.ok("GET", &format!("/orders/{order}/payments"), None)
    }

    /// Waits until `check` holds of the order's payments.
    fn wait(&self, order: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let payments = self.payments(order);
            if check(&payments) {
                return payments;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{order}: {what} never happened: {payments:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn order_stream(&self, order: &str) -> Vec<String> {
        let stream = self.ok("GET", &format!("/streams/order-{order}"), None);
        stream["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
    }

    fn ship(&self, order: &str, shipment: &str, quantity: u32) {
        let lines = json!([{"sku": "mug", "quantity": quantity}]);
        let body = json!({"shipment_id": shipment, "order_id": order, "location": "berlin", "lines": lines});
        self.ok("POST", "/shipments", Some(body));
        self.ok("POST", &format!("/shipments/{shipment}/pack"), None);
        self.ok(
            "POST",
            &format!("/shipments/{shipment}/ship"),
            Some(json!({"carrier": "dhl", "tracking_number": "t1"})),
        );
    }

    fn ledger(&self) -> Vec<Value> {
        let (status, ledger) = http(self.sim.address, "GET", "/_sim/ledger", "", None);
        assert_eq!(status, 200);
        ledger["intents"].as_array().unwrap().clone()
    }

    fn faults(&self, faults: Value) {
        let (status, body) = http(self.sim.address, "POST", "/_sim/faults", "", Some(faults));
        assert_eq!(status, 200, "{body}");
    }

    /// The provider's ledger and the log agree, order by order: what the provider holds
    /// (received less refunded) is what the order says was captured less refunded, and no
    /// order was charged by two intents.
    fn ledger_matches_the_log(&self, orders: &[&str]) {
        let ledger = self.ledger();
        for order in orders {
            let intents: Vec<&Value> = ledger.iter().filter(|i| i["metadata"]["order_id"] == *order).collect();
            let held: i64 = intents
                .iter()
                .map(|i| i["amount_received"].as_i64().unwrap() - i["amount_refunded"].as_i64().unwrap())
                .sum();
            let charged = intents.iter().filter(|i| i["amount_received"].as_i64().unwrap() > 0).count();
            let log = self.payments(order);
            let kept = log["captured"].as_i64().unwrap() - log["refunded"].as_i64().unwrap();
            assert_eq!(held, kept, "{order}: the provider holds {held}, the log says {kept}");
            assert!(charged <= 1, "{order}: charged by {charged} intents");
        }
    }
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |p| p["payments"].as_array().and_then(|a| a.last()).is_some_and(|i| i["status"] == status)
}

#[test]
fn webhooks_twice_and_out_of_order_confirm_and_capture_once() {
    let shop = Shop::start();
    shop.faults(json!({"webhook_twice": true, "webhook_out_of_order": true}));
    shop.order("o1", 2);
    shop.pay("o1", "pm_card_visa");
    shop.wait("o1", "authorized", status_is("authorized"));
    shop.order("o2", 1);
    shop.pay("o2", "pm_card_visa");
    shop.wait("o2", "authorized", status_is("authorized"));
    // Two shipments: a partial capture for the first, the rest (shipping included) at the last.
    shop.ship("o1", "s1", 1);
    shop.wait("o1", "first capture", |p| p["captured"].as_i64() > Some(0));
    shop.ship("o1", "s2", 1);
    let total = 2 * 900 + 342 + 900;
    let paid = shop.wait("o1", "whole capture", |p| p["captured"].as_i64() == Some(total));
    shop.faults(json!({}));
    let events = shop.order_stream("o1");
    let count = |t: &str| events.iter().filter(|e| *e == t).count();
    assert_eq!((count("PaymentAuthorized"), count("OrderConfirmed"), count("PaymentCaptured")), (1, 1, 2));
    let intent = &paid["payments"][0];
    assert_eq!(intent["captured"], total);
    let ledger = shop.ledger();
    let o1 = ledger.iter().find(|i| i["metadata"]["order_id"] == "o1").unwrap();
    assert_eq!(o1["captures"].as_array().unwrap().len(), 2, "{o1}");
    shop.ledger_matches_the_log(&["o1", "o2"]);
}

#[test]
fn declines_three_d_secure_and_cancellation() {
    let shop = Shop::start();
    shop.order("o1", 1);
    shop.pay("o1", "pm_card_chargeDeclined");
    let failed = shop.wait("o1", "declined", status_is("failed"));
    assert!(failed["payments"][0]["failure"].as_str().unwrap().contains("generic_decline"), "{failed}");
    assert!(shop.order_stream("o1").contains(&"PaymentFailed".to_string()));
    // Another card, with 3-D Secure: the shopper completes it at the provider.
    shop.pay("o1", "pm_card_threeDSecure2Required");
    let action = shop.wait("o1", "action required", status_is("requires_action"));
    let pi = action["payments"][1]["provider_ref"].as_str().unwrap().to_string();
    let (status, _) = http(
        shop.sim.address,
        "POST",
        &format!("/_sim/payment_intents/{pi}/authenticate"),
        "",
        Some(json!({"succeed": true})),
    );
    assert_eq!(status, 200);
    shop.wait("o1", "authorized by webhook", status_is("authorized"));
    let started = Instant::now();
    while shop.ok("GET", "/orders/o1", None)["state"] != "confirmed" {
        assert!(started.elapsed() < Duration::from_secs(20), "the order is never confirmed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Cancelled before shipping: the authorization is voided at the provider.
    shop.ok("POST", "/orders/o1/cancel", Some(json!({"reason": "changed mind"})));
    shop.wait("o1", "voided", status_is("voided"));
    let ledger = shop.ledger();
    let intent = ledger.iter().find(|i| i["id"] == pi.as_str()).unwrap();
    assert_eq!(intent["status"], "canceled");
    shop.ledger_matches_the_log(&["o1"]);
}

#[test]
fn a_capture_whose_answer_is_lost_is_captured_once_and_a_refund_follows_a_return() {
    let shop = Shop::start();
    shop.order("o1", 2);
    shop.pay("o1", "pm_card_visa");
    shop.wait("o1", "authorized", status_is("authorized"));
    shop.faults(json!({"fail_after": 1}));
    shop.ship("o1", "s1", 2);
    let total = 2 * 900 + 342 + 900;
    shop.wait("o1", "captured", |p| p["captured"].as_i64() == Some(total));
    let ledger = shop.ledger();
    assert_eq!(ledger[0]["captures"], json!([total]), "one capture at the provider");
    // Delivered, one mug returned: refunded its price with its tax, not the shipping.
    shop.ok("POST", "/shipments/s1/deliver", Some(json!({})));
    shop.ok(
        "POST",
        "/orders/o1/returns",
        Some(json!({"return_id": "r1", "lines": [{"sku": "mug", "quantity": 1}], "reason": "chipped"})),
    );
    let lines = json!([{"sku": "mug", "quantity": 1, "restock": false}]);
    shop.ok("POST", "/orders/o1/returns/r1/receive", Some(json!({"lines": lines})));
    let refunded = shop.wait("o1", "refunded", |p| p["refunded"].as_i64() > Some(0));
    assert_eq!(refunded["refunded"], 900 + 171);
    shop.ledger_matches_the_log(&["o1"]);
    // The cardholder disputes the charge: the provider's webhook names only its intent, and
    // the read model of payments finds the payment.
    let pi = shop.ledger()[0]["id"].as_str().unwrap().to_string();
    let (status, _) = http(
        shop.sim.address,
        "POST",
        "/_sim/disputes",
        "",
        Some(json!({"payment_intent": pi, "reason": "fraudulent"})),
    );
    assert_eq!(status, 200);
    let disputed =
        shop.wait("o1", "disputed", |p| p["payments"][0]["disputes"].as_object().is_some_and(|d| !d.is_empty()));
    let disputes = disputed["payments"][0]["disputes"].as_object().unwrap();
    assert_eq!(disputes.values().next().unwrap(), "open", "{disputed}");
}

/// A webhook delivery signed `t={timestamp},v1=…` under `secret`.
fn deliver(server: SocketAddr, secret: &str, timestamp: i64, body: &str, sent_body: &str) -> (u16, Value) {
    let header = signature::header(secret, timestamp, body.as_bytes());
    request(server, "POST", "/payments/webhooks/stripe", &[("Stripe-Signature", &header)], sent_body)
}

#[test]
fn forged_webhooks_are_refused_and_change_nothing() {
    let shop = Shop::start();
    shop.order("o1", 1);
    shop.ok("POST", "/orders/o1/pay", Some(json!({"payment_method": "pm_card_threeDSecure2Required"})));
    shop.wait("o1", "action required", status_is("requires_action"));
    let before = shop.ok("GET", "/streams/payment-o1.p1", None);
    let object = json!({"id": "pi_forged", "object": "payment_intent", "amount": 1_971, "currency": "eur",
        "status": "requires_capture", "amount_received": 0, "metadata": {"payment_id": "o1.p1", "order_id": "o1"}});
    let body =
        json!({"id": "evt_forged", "type": "payment_intent.amount_capturable_updated", "data": {"object": object}})
            .to_string();
    let now = chrono::Utc::now().timestamp();
    let server = shop.server.address;
    let (status, problem) = deliver(server, "whsec_wrong", now, &body, &body);
    assert_eq!(status, 400, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("no v1 signature matches"), "{problem}");
    let (status, _) = deliver(server, WHSEC, now, &body, &body.replace("1971", "1970"));
    assert_eq!(status, 400, "an altered body");
    let (status, problem) = deliver(server, WHSEC, now - 3_600, &body, &body);
    assert_eq!(status, 400, "an old timestamp");
    assert!(problem["detail"].as_str().unwrap().contains("outside the tolerance"), "{problem}");
    let (status, _) = request(server, "POST", "/payments/webhooks/stripe", &[], &body);
    assert_eq!(status, 400, "no signature");
    let after = shop.ok("GET", "/streams/payment-o1.p1", None);
    assert_eq!(before["events"], after["events"], "nothing was recorded");
    // The same delivery, signed: it is taken, once.
    let (status, receipt) = deliver(server, WHSEC, now, &body, &body);
    assert_eq!((status, receipt["result"].as_str()), (200, Some("recorded")), "{receipt}");
    let (_, again) = deliver(server, WHSEC, now, &body, &body);
    assert_eq!(again["result"], "duplicate", "{again}");
}

/// Waits until `check` holds of the simulator's ledger.
fn wait_ledger(shop: &Shop, what: &str, check: impl Fn(&[Value]) -> bool) {
    let started = Instant::now();
    while !check(&shop.ledger()) {
        assert!(started.elapsed() < Duration::from_secs(20), "the provider never saw {what}: {:#?}", shop.ledger());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_after_the_provider_did_the_work_the_payment_ends_as_the_provider_says() {
    let mut shop = Shop::start();
    // Only the process's own calls tell orderlog what happened: no webhooks.
    let hang = json!({"hang": 1, "hang_ms": 8_000, "webhook_off": true});
    shop.faults(json!({"webhook_off": true}));
    shop.order("o1", 2);
    shop.order("o2", 1);
    // Authorize: the provider authorizes, its answer hangs, orderlog is killed.
    shop.faults(hang.clone());
    shop.pay("o1", "pm_card_visa");
    wait_ledger(&shop, "the authorization", |l| l.len() == 1);
    assert_eq!(shop.payments("o1")["payments"][0]["status"], "authorizing");
    shop.kill_and_restart();
    shop.wait("o1", "authorized after the restart", status_is("authorized"));
    // Capture.
    shop.faults(hang.clone());
    shop.ship("o1", "s1", 2);
    wait_ledger(&shop, "the capture", |l| l[0]["captures"].as_array().unwrap().len() == 1);
    shop.kill_and_restart();
    let total = 2 * 900 + 342 + 900;
    shop.wait("o1", "captured after the restart", |p| p["captured"].as_i64() == Some(total));
    // Refund of a returned mug.
    shop.ok("POST", "/shipments/s1/deliver", Some(json!({})));
    let returned = json!({"return_id": "r1", "lines": [{"sku": "mug", "quantity": 1}], "reason": "chipped"});
    shop.ok("POST", "/orders/o1/returns", Some(returned));
    shop.faults(hang.clone());
    let lines = json!([{"sku": "mug", "quantity": 1, "restock": true}]);
    shop.ok("POST", "/orders/o1/returns/r1/receive", Some(json!({"lines": lines})));
    wait_ledger(&shop, "the refund", |l| l[0]["refunds"].as_array().unwrap().len() == 1);
    shop.kill_and_restart();
    shop.wait("o1", "refunded after the restart", |p| p["refunded"].as_i64() == Some(900 + 171));
    // Void of a cancelled order's authorization.
    shop.faults(json!({"webhook_off": true}));
    shop.pay("o2", "pm_card_visa");
    shop.wait("o2", "authorized", status_is("authorized"));
    shop.faults(hang);
    shop.ok("POST", "/orders/o2/cancel", Some(json!({"reason": "changed mind"})));
    wait_ledger(&shop, "the void", |l| l.iter().any(|i| i["status"] == "canceled"));
    shop.kill_and_restart();
    shop.wait("o2", "voided after the restart", status_is("voided"));
    let ledger = shop.ledger();
    let o1 = ledger.iter().find(|i| i["metadata"]["order_id"] == "o1").unwrap();
    assert_eq!((o1["captures"].as_array().unwrap().len(), o1["refunds"].as_array().unwrap().len()), (1, 1), "{o1}");
    assert_eq!(ledger.len(), 2, "one intent per order");
    shop.ledger_matches_the_log(&["o1", "o2"]);
}

#[test]
fn an_authorization_that_expires_before_shipping_cancels_the_order_and_releases_its_stock() {
    let shop = Shop::start();
    shop.order("o1", 2);
    shop.pay("o1", "pm_card_visa");
    shop.wait("o1", "authorized", status_is("authorized"));
    let pi = shop.ledger()[0]["id"].as_str().unwrap().to_string();
    let (status, _) = http(shop.sim.address, "POST", &format!("/_sim/payment_intents/{pi}/expire"), "", None);
    assert_eq!(status, 200);
    shop.wait("o1", "expired", status_is("expired"));
    let started = Instant::now();
    while shop.ok("GET", "/orders/o1", None)["state"] != "cancelled" {
        assert!(started.elapsed() < Duration::from_secs(20), "the order is never cancelled");
        std::thread::sleep(Duration::from_millis(50));
    }
    while shop.ok("GET", "/inventory/skus/mug", None)["reserved"] != 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the stock is never released");
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = shop.order_stream("o1");
    assert!(events.contains(&"OrderCancelled".to_string()), "{events:?}");
    shop.ledger_matches_the_log(&["o1"]);
}
