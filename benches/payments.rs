//! Checkouts paid end to end over HTTP: `orderlog serve` on PostgreSQL with the payment
//! process, `orderlog gateway-sim` as the provider (answering at once, then 50 ms late),
//! and concurrent shoppers. Each shopper's cart is filled beforehand; what is timed is
//! checkout → pay → the order's payment authorized (which confirms it, in the same append).
//!
//! `cargo bench --bench payments` (PostgreSQL on 127.0.0.1:5432; a fresh database per run).
//! Environment: PAYMENTS_BENCH_ORDERS (default 1 000 per run), PAYMENTS_BENCH_SHOPPERS
//! (default 64), PAYMENTS_BENCH_ROUNDS (default 3).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderlog_store::postgres::testing::TestDatabase;
use serde_json::{json, Value};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `args` and reads the address it prints (`… http://ADDR`).
fn start(args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orderlog"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("orderlog starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().rsplit("http://").next().unwrap().to_string();
    (Proc(child), format!("http://{address}"))
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
        body
    }
}

/// One run: a fresh database, server and simulator; `orders` carts prepared; then the
/// shoppers check out and pay. Returns orders confirmed per second and latencies (ms).
async fn run(orders: usize, shoppers: usize, latency_ms: u64) -> (f64, Vec<f64>) {
    let db = TestDatabase::create().await;
    let url = db.url_with("pool_max_size=32");
    let made = Command::new(env!("CARGO_BIN_EXE_orderlog"))
        .args(["token", "create", "--database", &url, "--principal", "bench", "--scopes", "shop,operations,catalog"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    let (_sim, sim) = start(&["gateway-sim", "--listen", "127.0.0.1:0"]);
    let (_server, base) = start(&[
        "serve",
        "--database",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--payment-api",
        &sim,
        "--payment-secret-key",
        "sk_test_orderlog",
        "--payment-webhook-secret",
        "whsec_orderlog_sim",
    ]);
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let hooks = json!({"url": format!("{base}/payments/webhooks/stripe"), "secret": "whsec_orderlog_sim"});
    http.post(format!("{sim}/_sim/webhook"))
        .header("Content-Type", "application/json")
        .body(hooks.to_string())
        .send()
        .await
        .unwrap();
    let faults = json!({"latency_ms": latency_ms});
    http.post(format!("{sim}/_sim/faults"))
        .header("Content-Type", "application/json")
        .body(faults.to_string())
        .send()
        .await
        .unwrap();
    let client = Arc::new(Client { http, base, token });
    use reqwest::Method as M;
    let price = json!({"amount": 900, "currency": "EUR"});
    // A SKU per shopper: one SKU for all would measure a hot stock stream, not payments.
    for s in 0..shoppers {
        let product = json!({"product_id": format!("mug-{s}"), "title": "Mug", "tax_class": "standard",
                             "variants": [{"sku": format!("mug-{s}"), "title": "Mug", "prices": [price]}]});
        client.ok(M::POST, "/products", Some(product)).await;
        client.ok(M::POST, &format!("/products/mug-{s}/publish"), None).await;
        client.ok(M::POST, &format!("/stock/mug-{s}/berlin/receipts"), Some(json!({"quantity": 1_000_000}))).await;
    }
    let region = json!({"name": "Germany", "rates": {"standard": 1900}, "default_class": "standard"});
    client.ok(M::PUT, "/tax-regions/DE", Some(region)).await;
    let zone = json!({"name": "Germany", "currency": "EUR", "countries": ["DE"], "prices_include_tax": true,
                      "options": [{"id": "dhl", "name": "DHL", "rate": {"kind": "flat", "price": price}}]});
    client.ok(M::PUT, "/shipping-zones/de", Some(zone)).await;
    // Carts, filled beforehand by the shoppers in parallel.
    let mut fill = vec![];
    for s in 0..shoppers {
        let client = client.clone();
        fill.push(tokio::spawn(async move {
            for n in (s..orders).step_by(shoppers) {
                let cart = format!("c{n}");
                let customer = json!({"kind": "guest", "email": "ann@example.com"});
                client
                    .ok(M::POST, "/carts", Some(json!({"cart_id": cart, "currency": "EUR", "customer": customer})))
                    .await;
                client
                    .ok(
                        M::POST,
                        &format!("/carts/{cart}/items"),
                        Some(json!({"sku": format!("mug-{s}"), "quantity": 1})),
                    )
                    .await;
                let address = orderlog_domain::testing::address_json();
                client.ok(M::PUT, &format!("/carts/{cart}/shipping-address"), Some(address)).await;
                client.ok(M::PUT, &format!("/carts/{cart}/shipping-method"), Some(json!({"option_id": "dhl"}))).await;
            }
        }));
    }
    for task in fill {
        task.await.unwrap();
    }
    let started = Instant::now();
    let mut work = vec![];
    for s in 0..shoppers {
        let client = client.clone();
        work.push(tokio::spawn(async move {
            let mut latencies = vec![];
            for n in (s..orders).step_by(shoppers) {
                let begun = Instant::now();
                let order = format!("o{n}");
                let body = json!({"order_id": order, "location": "berlin"});
                client.ok(M::POST, &format!("/carts/c{n}/checkout"), Some(body)).await;
                client
                    .ok(M::POST, &format!("/orders/{order}/pay"), Some(json!({"payment_method": "pm_card_visa"})))
                    .await;
                loop {
                    let payments = client.ok(M::GET, &format!("/orders/{order}/payments"), None).await;
                    if payments["payments"][0]["status"] == "authorized" {
                        break;
                    }
                    assert!(begun.elapsed() < Duration::from_secs(60), "{order} never authorized: {payments}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                latencies.push(begun.elapsed().as_secs_f64() * 1_000.0);
            }
            latencies
        }));
    }
    let mut latencies = vec![];
    for task in work {
        latencies.extend(task.await.unwrap());
    }
    let rate = orders as f64 / started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    (rate, latencies)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let orders = env("PAYMENTS_BENCH_ORDERS", 1_000);
    let shoppers = env("PAYMENTS_BENCH_SHOPPERS", 64);
    let rounds = env("PAYMENTS_BENCH_ROUNDS", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut medians = vec![];
    for latency in [0, 50] {
        let mut rates = vec![];
        for round in 1..=rounds {
            let (rate, lat) = runtime.block_on(run(orders, shoppers, latency));
            let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            println!(
                "provider latency {latency:>2} ms, round {round}: {orders} orders, {shoppers} shoppers: {rate:.0} paid checkouts/s; checkout→authorized p50 {:.1} ms, p99 {:.1} ms",
                pct(0.5),
                pct(0.99)
            );
            rates.push(rate);
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        let median = rates[rates.len() / 2];
        println!("provider latency {latency:>2} ms: median {median:.0} paid checkouts/s");
        medians.push(median);
    }
    println!("ratio 50 ms / 0 ms: {:.2} (the goal: >= 0.5)", medians[1] / medians[0]);
}
