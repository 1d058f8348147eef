//! Load on `orderlog serve` over loopback, from this process (its own load generator:
//! keep-alive HTTP/1.1 connections, one request in flight on each).
//!
//! `cargo bench --bench http [-- sqlite|postgres [CHECKOUTS]]`
//!
//! Starts the release binary on a free port with a fresh database, makes a token, receives
//! stock and fills CHECKOUTS carts per phase (not measured), then, at 16 and at 64
//! connections: checks every cart out (checkout requests/s, p50/p99), then reads random
//! placed orders for 5 s (order reads/s, p50/p99).

#[path = "support/connection.rs"]
mod connection;
use connection::Connection;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orderlog_store::postgres::testing::TestDatabase;
use serde_json::{json, Value};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

async fn fill_carts(address: &str, token: &str, prefix: &str, n: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (address, token, prefix, next) = (address.to_string(), token.to_string(), prefix.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Connection::open(&address, &token).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let cart = format!("{prefix}{i}");
                let price = json!({"amount": 900, "currency": "EUR"});
                let customer = json!({"kind": "guest", "email": "b@example.com"});
                let steps = [
                    ("POST", "/carts".to_string(), json!({"cart_id": cart, "currency": "EUR", "customer": customer})),
                    (
                        "POST",
                        format!("/carts/{cart}/items"),
                        json!({"sku": format!("sku{}", i % 50), "quantity": 1}),
                    ),
                    (
                        "PUT",
                        format!("/carts/{cart}/shipping-address"),
                        json!({"name": "B", "line1": "Main 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}),
                    ),
                    ("PUT", format!("/carts/{cart}/shipping-method"), json!({"id": "dhl", "price": price})),
                ];
                for (method, path, body) in steps {
                    let (status, reply) = c.request(method, &path, Some(&body)).await;
                    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&reply));
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Runs `work` on `connections` connections; returns (requests/s, sorted latencies).
async fn load<F>(address: &str, token: &str, connections: usize, work: F) -> (f64, Vec<Duration>)
where
    F: Fn(usize) -> Option<(String, String, Option<Value>)> + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (address, token, work, next) = (address.to_string(), token.to_string(), work.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Connection::open(&address, &token).await;
            let mut latencies = Vec::new();
            while let Some((method, path, body)) = work(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                let (status, reply) = c.request(&method, &path, body.as_ref()).await;
                latencies.push(t.elapsed());
                assert_eq!(status, 200, "{method} {path}: {}", String::from_utf8_lossy(&reply));
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, all)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let backend = args.first().cloned().unwrap_or_else(|| "sqlite".into());
    let checkouts: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = (backend == "postgres").then(|| runtime.block_on(TestDatabase::create()));
    let database = match &pg {
        Some(db) => db.url.clone(),
        None => dir.path().join("bench.db").to_str().unwrap().to_string(),
    };
    let bin = env!("CARGO_BIN_EXE_orderlog");
    let made = Command::new(bin)
        .args([
            "token",
            "create",
            "--database",
            &database,
            "--principal",
            "bench",
            "--scopes",
            "shop,operations,catalog",
        ])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    // `ORDERLOG_BENCH_SERVE_ARGS="--no-order-cache"`: more arguments for `orderlog serve`.
    let extra = std::env::var("ORDERLOG_BENCH_SERVE_ARGS").unwrap_or_default();
    let mut child = Command::new(bin)
        .args(["serve", "--database", &database, "--listen", "127.0.0.1:0"])
        .args(extra.split_whitespace())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("listening on http://").unwrap().to_string();
    let server = Server(child);
    println!("{backend}: serving on {address}; {checkouts} checkouts per phase; serve args '{extra}'");
    runtime.block_on(async {
        let mut c = Connection::open(&address, &token).await;
        for sku in 0..50 {
            let (status, _) = c
                .request("POST", &format!("/stock/sku{sku}/berlin/receipts"), Some(&json!({"quantity": 1_000_000})))
                .await;
            assert_eq!(status, 200);
            // The catalog prices each SKU: 9.00 EUR.
            let product = json!({"product_id": format!("p{sku}"), "title": "Item", "tax_class": "standard",
                                 "variants": [{"sku": format!("sku{sku}"), "title": "Item",
                                               "prices": [{"amount": 900, "currency": "EUR"}]}]});
            assert_eq!(c.request("POST", "/products", Some(&product)).await.0, 200);
            assert_eq!(c.request("POST", &format!("/products/p{sku}/publish"), None).await.0, 200);
        }
        let mut placed: Vec<String> = Vec::new();
        for connections in [16usize, 64] {
            let carts = Arc::new(fill_carts(&address, &token, &format!("k{connections}-"), checkouts).await);
            let list = carts.clone();
            let (rate, lat) = load(&address, &token, connections, move |i| {
                list.get(i).map(|cart| {
                    (
                        "POST".into(),
                        format!("/carts/{cart}/checkout"),
                        Some(json!({"order_id": format!("o-{cart}"), "location": "berlin"})),
                    )
                })
            })
            .await;
            println!(
                "checkout  {connections:>2} connections: {rate:>8.0} requests/s  p50 {:.2} ms  p99 {:.2} ms",
                percentile(&lat, 0.50),
                percentile(&lat, 0.99)
            );
            placed.extend(carts.iter().map(|c| format!("o-{c}")));
            // Let the read models catch up before reading.
            loop {
                let (_, ready) = c.request("GET", "/ready", None).await;
                let ready: Value = serde_json::from_slice(&ready).unwrap_or(Value::Null);
                let behind: u64 = ready["projections"]
                    .as_array()
                    .map_or(1, |p| p.iter().map(|s| s["events_behind"].as_u64().unwrap_or(1)).sum());
                if behind == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let orders = Arc::new(placed.clone());
            let deadline = Instant::now() + Duration::from_secs(5);
            let (rate, lat) = load(&address, &token, connections, move |i| {
                (Instant::now() < deadline).then(|| {
                    let id = &orders[(i.wrapping_mul(2_654_435_761)) % orders.len()];
                    ("GET".into(), format!("/orders/{id}"), None)
                })
            })
            .await;
            println!(
                "order read {connections:>2} connections: {rate:>8.0} requests/s  p50 {:.2} ms  p99 {:.2} ms",
                percentile(&lat, 0.50),
                percentile(&lat, 0.99)
            );
        }
    });
    if Command::new("wrk").arg("--version").output().is_ok() {
        wrk_order_reads(&address, &token, checkouts, dir.path());
    } else {
        println!("(wrk not found: install it for the second-process order-read figures)");
    }
    drop(server);
    drop(pg);
}

/// Order reads from wrk, a second process (C, two threads), over the orders placed above.
fn wrk_order_reads(address: &str, token: &str, checkouts: usize, dir: &std::path::Path) {
    let script = dir.join("orders.lua");
    std::fs::write(
        &script,
        format!(
            "local prefixes = {{\"o-k16-\", \"o-k64-\"}}\n\
             request = function()\n\
               local id = prefixes[math.random(1, 2)] .. math.random(0, {last})\n\
               return wrk.format(\"GET\", \"/orders/\" .. id, {{[\"Authorization\"] = \"Bearer {token}\"}})\n\
             end\n",
            last = checkouts - 1
        ),
    )
    .unwrap();
    // `ORDERLOG_BENCH_WRK_THREADS` (default 2): wrk's threads.
    let threads = std::env::var("ORDERLOG_BENCH_WRK_THREADS").unwrap_or_else(|_| "2".into());
    for connections in [16, 64] {
        let out = Command::new("wrk")
            .args([&format!("-t{threads}"), &format!("-c{connections}"), "-d5s", "--latency", "-s"])
            .arg(&script)
            .arg(format!("http://{address}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
        let field = |prefix: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| "?".into())
        };
        println!(
            "order read {connections:>2} connections (wrk -t{threads}): {} requests/s  p50 {}  p99 {}",
            field("Requests/sec:"),
            field("50%"),
            field("99%")
        );
    }
}
