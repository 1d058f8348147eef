//! Outbound webhooks end to end on SQLite and PostgreSQL: the webhook reactor queues a
//! message per subscriber, the dispatcher delivers them to real HTTP receivers on loopback
//! that succeed, fail twice first, time out, close the connection and answer 410, and every
//! signature received is checked by the Standard Webhooks reference library (Python).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use chrono::{TimeZone, Utc};
use orderlog_api::database::Database;
use orderlog_commands::{Command, CommandEnvelope, CommandService, ManualClock, SequentialIds};
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::stock::StockCommand;
use orderlog_domain::{testing, CartId, LocationId, OrderId, Sku, StockKey};
use orderlog_processes::reactor::ReactorRunner;
use orderlog_processes::webhooks::{check_url, Dispatcher, WebhookConfig, WebhookReactor, Webhooks};
use orderlog_store::postgres::testing::TestDatabase;

/// What a receiver got: path, headers, body.
type Received = Arc<Mutex<Vec<(String, HashMap<String, String>, String)>>>;

/// A receiver on loopback: `/ok` takes everything, `/flaky` answers 500 to its first two
/// requests, `/slow` answers after the sender's timeout, `/gone` answers 410.
async fn receiver(received: Received) -> String {
    let flaky = Arc::new(Mutex::new(0u32));
    let record = move |path: &'static str, received: Received| {
        move |headers: HeaderMap, body: String| {
            let received = received.clone();
            async move {
                let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect();
                received.lock().unwrap().push((path.to_string(), headers, body));
            }
        }
    };
    let r = received.clone();
    let app = axum::Router::new()
        .route(
            "/ok",
            axum::routing::post({
                let f = record("/ok", r.clone());
                move |h: HeaderMap, b: String| {
                    let f = f.clone();
                    async move {
                        f(h, b).await;
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        )
        .route(
            "/flaky",
            axum::routing::post({
                let f = record("/flaky", r.clone());
                move |h: HeaderMap, b: String| {
                    let (f, flaky) = (f.clone(), flaky.clone());
                    async move {
                        f(h, b).await;
                        let mut n = flaky.lock().unwrap();
                        *n += 1;
                        if *n <= 2 {
                            (StatusCode::INTERNAL_SERVER_ERROR, "database is down")
                        } else {
                            (StatusCode::OK, "thanks")
                        }
                    }
                }
            }),
        )
        .route(
            "/slow",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                StatusCode::OK
            }),
        )
        .route("/gone", axum::routing::post(|| async { StatusCode::GONE }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// A receiver that accepts a connection, reads the request and closes without answering.
async fn closer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
            drop(socket);
        }
    });
    format!("http://{address}/hook")
}

/// The Standard Webhooks reference library's verdict on each (secret, headers, body).
fn reference_verdicts(checks: &[(String, HashMap<String, String>, String)]) -> Vec<String> {
    use std::io::Write;
    let python = reference_python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/webhook_verify.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for (secret, headers, body) in checks {
        input.push_str(&serde_json::json!({"secret": secret, "headers": headers, "body": body}).to_string());
        input.push('\n');
    }
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// A Python with the `standardwebhooks` package (pinned), in a venv under `target/`.
fn reference_python() -> std::path::PathBuf {
    let venv = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/webhooks-venv"));
    let python = venv.join("bin/python3");
    std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
    let lock = std::fs::File::create(venv.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    let has = std::process::Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        let made = std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
        assert!(made.is_ok_and(|s| s.success()));
        let pip = std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "standardwebhooks==1.1.0"])
            .status();
        assert!(pip.is_ok_and(|s| s.success()), "pip install standardwebhooks");
    }
    python
}

struct Shop {
    db: Database,
    service: Arc<CommandService>,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<TestDatabase>,
}

impl Shop {
    async fn sqlite() -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("orderlog.db").display().to_string()).await.unwrap();
        Shop::on(db, Some(dir), None)
    }

    async fn postgres() -> Shop {
        let pg = TestDatabase::create().await;
        let db = Database::open(&pg.url_with("pool_max_size=8")).await.unwrap();
        Shop::on(db, None, Some(pg))
    }

    fn on(db: Database, dir: Option<tempfile::TempDir>, pg: Option<TestDatabase>) -> Shop {
        let clock = Arc::new(ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap()));
        let service = Arc::new(CommandService::new(db.store(), clock, Arc::new(SequentialIds::new("id-"))));
        Shop { db, service, _dir: dir, _pg: pg }
    }

    async fn run(&self, id: &str, command: Command) {
        self.service.execute(CommandEnvelope::new(id, "tester", command)).await.unwrap();
    }

    async fn place(&self, n: u32) {
        let key = StockKey::new(Sku::parse("mug").unwrap(), LocationId::parse("berlin").unwrap());
        let receive = StockCommand::Receive { quantity: 1, reference: None };
        self.run(&format!("receive-{n}"), Command::Stock { stock: key, command: receive }).await;
        let cart_id = CartId::parse(format!("c{n}")).unwrap();
        for (id, product_id, command) in testing::catalog_commands(&[("mug", 1, 1_500)]) {
            self.run(&id, Command::Product { product_id, command }).await;
        }
        let (region_id, command) = testing::tax_region();
        self.run("tax-DE", Command::TaxRegion { region_id, command }).await;
        let (zone_id, command) = testing::shipping_zone(0);
        self.run("zone-de-0", Command::ShippingZone { zone_id, command }).await;
        let commands = testing::cart_commands(testing::guest("ann@example.com"), &[("mug", 1, 1_500)], 0);
        for (i, command) in commands.into_iter().enumerate() {
            self.run(&format!("c{n}-{i}"), Command::Cart { cart_id: cart_id.clone(), command }).await;
        }
        let checkout = CheckoutCommand {
            cart_id,
            order_id: OrderId::parse(format!("o{n}")).unwrap(),
            location: LocationId::parse("berlin").unwrap(),
            sources: Default::default(),
        };
        self.run(&format!("checkout-{n}"), Command::Checkout { checkout }).await;
    }
}

fn config() -> WebhookConfig {
    WebhookConfig {
        allow_private: true,
        timeout_ms: 300,
        first_retry_ms: 50,
        retry_max_ms: 200,
        retry_window_ms: 1_500,
    }
}

orderlog_store::each_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fn messages_reach_every_subscriber_signed_retried_and_dead_lettered(Shop) on [sqlite, postgres];
}
async fn messages_reach_every_subscriber_signed_retried_and_dead_lettered(shop: Shop) {
    let received: Received = Arc::default();
    let base = receiver(received.clone()).await;
    let process_db = shop.db.processes().await.unwrap();
    let webhooks = Webhooks::new(process_db.clone(), config());
    let placed = vec!["order.placed".to_string()];
    let ok =
        webhooks.create(&format!("{base}/ok"), &["order.placed".into(), "order.expired".into()], "erp").await.unwrap();
    let flaky = webhooks.create(&format!("{base}/flaky"), &placed, "warehouse").await.unwrap();
    let slow = webhooks.create(&format!("{base}/slow"), &placed, "mailer").await.unwrap();
    let gone = webhooks.create(&format!("{base}/gone"), &placed, "old-crm").await.unwrap();
    let closed = webhooks.create(&closer().await, &placed, "broken").await.unwrap();
    for n in 1..=3 {
        shop.place(n).await;
    }
    let runner =
        ReactorRunner::new(Arc::new(WebhookReactor::new(webhooks.clone())), shop.db.store(), process_db.clone());
    assert!(shop.db.store().settle(Duration::from_secs(30)).await.unwrap());
    while runner.step().await.unwrap() > 0 {}
    // A crash before the checkpoint moved replays the events: nothing is queued twice.
    let queued = || async { webhooks.deliveries(&ok.webhook.id, 50).await.unwrap().len() };
    assert_eq!(queued().await, 3);
    process_db.execute("UPDATE orderlog_reactors SET commit_order = 0, position = 0", vec![]).await.unwrap();
    while runner.step().await.unwrap() > 0 {}
    assert_eq!(queued().await, 3);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let always = Arc::new(orderlog_projections::projector::Always);
    let dispatcher = tokio::spawn(Dispatcher::new(webhooks.clone()).run(always, stopped));
    let started = std::time::Instant::now();
    let delivered = |id: &str| {
        let webhooks = webhooks.clone();
        let id = id.to_string();
        async move { webhooks.deliveries(&id, 50).await.unwrap().iter().filter(|(m, _)| m.status == "delivered").count() }
    };
    while delivered(&ok.webhook.id).await < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "the fast subscriber waited behind the slow ones");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The slow subscriber's first timeout alone is 300 ms; the fast one did not wait for it.
    let fast = started.elapsed();
    let finished = |w: &str, status: &str| {
        let webhooks = webhooks.clone();
        let (w, status) = (w.to_string(), status.to_string());
        async move { webhooks.deliveries(&w, 50).await.unwrap().iter().all(|(m, _)| m.status == status) }
    };
    while !(finished(&flaky.webhook.id, "delivered").await
        && finished(&slow.webhook.id, "dead").await
        && finished(&closed.webhook.id, "dead").await
        && webhooks.get(&gone.webhook.id).await.unwrap().status == "disabled")
    {
        assert!(started.elapsed() < Duration::from_secs(20), "deliveries did not settle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    dispatcher.await.unwrap();
    assert!(fast < Duration::from_millis(1_500), "fast subscriber took {fast:?}");

    let got = received.lock().unwrap().clone();
    let at = |path: &str| got.iter().filter(|(p, _, _)| p == path).cloned().collect::<Vec<_>>();
    let to_ok = at("/ok");
    assert_eq!(to_ok.len(), 3, "one message per order, once each");
    let sequences: Vec<u64> = to_ok
        .iter()
        .map(|(_, _, body)| serde_json::from_str::<serde_json::Value>(body).unwrap()["sequence"].as_u64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "first sent in log order: {sequences:?}");
    let body: serde_json::Value = serde_json::from_str(&to_ok[0].2).unwrap();
    assert_eq!((body["type"].as_str(), body["data"]["order_id"].as_str()), (Some("order.placed"), Some("o1")));
    assert_eq!(body["data"]["total"], 1_500);
    // Flaky: two 500s (the first two sends: a failed message does not hold back the next),
    // then every message gets through; the delivery log shows each attempt.
    assert_eq!(at("/flaky").len(), 5);
    let log = webhooks.deliveries(&flaky.webhook.id, 50).await.unwrap();
    let statuses: Vec<Option<i64>> = log.iter().flat_map(|(_, a)| a.iter().map(|a| a.status)).collect();
    assert_eq!(statuses.iter().filter(|s| **s == Some(500)).count(), 2, "{statuses:?}");
    let first = log.iter().find(|(m, _)| m.sequence == sequences[0]).unwrap();
    assert_eq!((first.1[0].status, first.1.last().unwrap().status), (Some(500), Some(200)));
    assert!(first.1[0].error.as_deref().unwrap().contains("database is down"));
    // Slow and closed: retried until the window ended, then dead-lettered, with why.
    for (hook, why) in [(&slow, "timed out"), (&closed, "error")] {
        for (message, attempts) in webhooks.deliveries(&hook.webhook.id, 50).await.unwrap() {
            assert!(attempts.len() >= 2, "{attempts:?}");
            assert!(message.last_error.as_deref().unwrap().contains(why), "{:?}", message.last_error);
            assert_eq!(message.last_status, None);
        }
    }
    // 410: disabled after one attempt, its other messages never sent.
    let gone_now = webhooks.get(&gone.webhook.id).await.unwrap();
    assert_eq!(gone_now.status_reason.as_deref(), Some("the subscriber answered 410 Gone"));
    let gone_attempts: usize =
        webhooks.deliveries(&gone.webhook.id, 50).await.unwrap().iter().map(|(_, a)| a.len()).sum();
    assert_eq!(gone_attempts, 1);

    // Every signature verifies with the reference library; another secret's does not.
    let secrets: HashMap<&str, &str> = [("/ok", ok.secret.as_str()), ("/flaky", flaky.secret.as_str())].into();
    let mut checks: Vec<_> =
        got.iter().map(|(p, h, b)| (secrets[p.as_str()].to_string(), h.clone(), b.clone())).collect();
    checks.push((flaky.secret.clone(), to_ok[0].1.clone(), to_ok[0].2.clone()));
    let verdicts = reference_verdicts(&checks);
    assert!(verdicts[..verdicts.len() - 1].iter().all(|v| v == "ok"), "{verdicts:?}");
    assert!(verdicts.last().unwrap().starts_with("bad"), "{verdicts:?}");
}

orderlog_store::each_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fn a_rotated_secret_and_the_old_one_both_verify_during_the_overlap(Shop) on [sqlite, postgres];
}
async fn a_rotated_secret_and_the_old_one_both_verify_during_the_overlap(shop: Shop) {
    let received: Received = Arc::default();
    let base = receiver(received.clone()).await;
    let process_db = shop.db.processes().await.unwrap();
    let webhooks = Webhooks::new(process_db.clone(), config());
    let ok = webhooks.create(&format!("{base}/ok"), &["order.placed".into()], "erp").await.unwrap();
    let new = webhooks.rotate(&ok.webhook.id, 60_000).await.unwrap();
    shop.place(1).await;
    let runner = ReactorRunner::new(Arc::new(WebhookReactor::new(webhooks.clone())), shop.db.store(), process_db);
    assert!(shop.db.store().settle(Duration::from_secs(30)).await.unwrap());
    while runner.step().await.unwrap() > 0 {}
    let dispatcher = Dispatcher::new(webhooks.clone());
    assert_eq!(dispatcher.deliver_due(&ok.webhook.id).await.unwrap(), Some(1));
    // Sent again by hand: the same message id, signed again.
    let (message, _) = webhooks.deliveries(&ok.webhook.id, 1).await.unwrap().remove(0);
    webhooks.redeliver(&ok.webhook.id, &message.id).await.unwrap();
    assert_eq!(dispatcher.deliver_due(&ok.webhook.id).await.unwrap(), Some(1));
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1["webhook-id"], got[1].1["webhook-id"]);
    assert_eq!(got[0].1["webhook-signature"].split(' ').count(), 2, "one signature per secret");
    let checks: Vec<_> =
        [&ok.secret, &new].iter().map(|s| (s.to_string(), got[0].1.clone(), got[0].2.clone())).collect();
    assert_eq!(reference_verdicts(&checks), ["ok", "ok"]);
}

#[test]
fn webhook_urls_are_checked() {
    for (url, why) in [
        ("ftp://example.com/x", "scheme 'ftp'"),
        ("not a url", "is not a URL"),
        ("http://127.0.0.1:8080/x", "loopback, private"),
        ("http://10.1.2.3/x", "loopback, private"),
        ("http://169.254.169.254/latest/meta-data", "loopback, private"),
        ("http://[::1]/x", "loopback, private"),
        ("http://localhost/x", "loopback name"),
        ("https://user:pw@example.com/x", "credentials"),
    ] {
        let err = check_url(url, false).unwrap_err().to_string();
        assert!(err.contains(why) && err.starts_with("url:"), "{url}: {err}");
    }
    let long = format!("https://example.com/{}", "a".repeat(3_000));
    assert!(check_url(&long, false).unwrap_err().to_string().contains("longer than"));
    assert!(check_url("https://hooks.example.com/orderlog", false).is_ok());
    assert!(check_url("http://127.0.0.1:9/x", true).is_ok(), "allowed when configured");
}

orderlog_store::each_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fn stock_low_is_published_once_per_crossing_of_the_threshold(Shop) on [sqlite, postgres];
}
async fn stock_low_is_published_once_per_crossing_of_the_threshold(shop: Shop) {
    use orderlog_domain::stock::AdjustmentReason;
    use orderlog_processes::low_stock::LowStockReactor;
    let received: Received = Arc::default();
    let base = receiver(received.clone()).await;
    let process_db = shop.db.processes().await.unwrap();
    let webhooks = Webhooks::new(process_db.clone(), config());
    let buyer = webhooks.create(&format!("{base}/ok"), &["stock.low".into()], "purchasing").await.unwrap();
    let key = StockKey::new(Sku::parse("tee").unwrap(), LocationId::parse("berlin").unwrap());
    let stock = |n: &str, command| {
        let service = shop.service.clone();
        let key = key.clone();
        let id = n.to_string();
        async move {
            service.execute(CommandEnvelope::new(id, "tester", Command::Stock { stock: key, command })).await.unwrap();
        }
    };
    let adjust = |delta| StockCommand::Adjust { delta, reason: AdjustmentReason::Damage, expected_on_hand: None };
    stock("s1", StockCommand::Receive { quantity: 5, reference: None }).await;
    stock("s2", StockCommand::SetLowStockThreshold { threshold: 3 }).await;
    stock("s3", adjust(-1)).await; // 4 available: not low
    stock("s4", adjust(-2)).await; // 2: crosses
    stock("s5", adjust(-1)).await; // 1: still low, quiet
    stock("s6", StockCommand::Receive { quantity: 10, reference: None }).await; // 11
    stock("s7", adjust(-9)).await; // 2: crosses again
    let reactor = Arc::new(LowStockReactor::new(webhooks.clone(), shop.db.store()));
    let runner = ReactorRunner::new(reactor, shop.db.store(), process_db.clone());
    assert!(shop.db.store().settle(Duration::from_secs(30)).await.unwrap());
    while runner.step().await.unwrap() > 0 {}
    // A fresh reactor over the same log (a restart) finds the same crossings and queues none twice.
    process_db.execute("UPDATE orderlog_reactors SET commit_order = 0, position = 0", vec![]).await.unwrap();
    let again = ReactorRunner::new(
        Arc::new(LowStockReactor::new(webhooks.clone(), shop.db.store())),
        shop.db.store(),
        process_db,
    );
    while again.step().await.unwrap() > 0 {}
    let dispatcher = Dispatcher::new(webhooks.clone());
    assert_eq!(dispatcher.deliver_due(&buyer.webhook.id).await.unwrap(), Some(2));
    let got = received.lock().unwrap().clone();
    let data: Vec<serde_json::Value> =
        got.iter().map(|(_, _, b)| serde_json::from_str::<serde_json::Value>(b).unwrap()["data"].clone()).collect();
    assert_eq!(data.len(), 2, "{data:?}");
    for d in &data {
        assert_eq!(
            (d["sku"].as_str(), d["available"].as_i64(), d["threshold"].as_i64()),
            (Some("tee"), Some(2), Some(3))
        );
    }
}
