//! The test harness of the HTTP tests: the real router over a real SQLite or PostgreSQL
//! store with its projectors running, tokens, and the shop fixtures the tests share.
#![allow(dead_code)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use orderlog_api::auth::{parse_scopes, Scope, TokenStore};
use orderlog_api::database::Database;
use orderlog_api::metrics::Metrics;
use orderlog_api::{router_and_doc, Api, TimedStore};
use orderlog_commands::{CommandService, RandomIds, SystemClock};
use orderlog_projections::cache::{follow_checkpoints, RowCache, WatchedRows, ROW_CACHE_BYTES_MAX};
use orderlog_projections::inventory::InventoryTable;
use orderlog_projections::orders::OrderStatusTable;
use orderlog_projections::projector::{self, AnyRunner};
use orderlog_projections::queries::ReadQueries;
use orderlog_projections::table::{RowStore, TableModel};
use orderlog_store::postgres::testing::TestDatabase;
use orderlog_store::{EventStore, TreeStore};
use serde_json::{json, Value};
use tower::ServiceExt;

pub struct App {
    pub router: Router,
    pub doc: utoipa::openapi::OpenApi,
    pub tokens: Arc<dyn TokenStore>,
    pub store: Arc<dyn TreeStore>,
    pub order_cache: Arc<RowCache>,
    pub _stop: tokio::sync::watch::Sender<bool>,
    pub _keep: Box<dyn std::any::Any + Send>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// How long a cart line's price holds in the apps this test binary builds, in seconds;
/// negative: the service's default. A test binary that sets it sets it for all its tests.
pub static PRICE_TTL_SECONDS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);

pub async fn build(
    tree: Arc<dyn TreeStore>,
    rows: Arc<dyn RowStore>,
    queries: Arc<dyn ReadQueries>,
    tokens: Arc<dyn TokenStore>,
    keep: Box<dyn std::any::Any + Send>,
    checkpoints: Option<Arc<orderlog_api::checkpoints::Signer>>,
) -> App {
    build_with_webhooks(tree, rows, queries, tokens, keep, checkpoints, None).await
}

/// As [`build`], with webhook subscriptions served.
pub async fn build_with_webhooks(
    tree: Arc<dyn TreeStore>,
    rows: Arc<dyn RowStore>,
    queries: Arc<dyn ReadQueries>,
    tokens: Arc<dyn TokenStore>,
    keep: Box<dyn std::any::Any + Send>,
    checkpoints: Option<Arc<orderlog_api::checkpoints::Signer>>,
    webhooks: Option<orderlog_processes::webhooks::Webhooks>,
) -> App {
    let store = tree.clone();
    let metrics = Arc::new(Metrics::default());
    let timed: Arc<dyn EventStore> = Arc::new(TimedStore::new(store.clone(), metrics.clone()));
    // Orders served from memory as `orderlog serve` does, but kept for an hour: a cached
    // order can only change here because the runner's commit made the cache forget it.
    let order_cache = RowCache::with_limits(OrderStatusTable::NAME, Duration::from_secs(3600), ROW_CACHE_BYTES_MAX);
    let watched: Arc<dyn RowStore> = Arc::new(WatchedRows::new(rows.clone(), vec![order_cache.clone()]));
    let runners: Vec<Arc<dyn AnyRunner>> = vec![
        projector::runner::<InventoryTable>(store.clone(), watched.clone()),
        projector::runner::<OrderStatusTable>(store.clone(), watched.clone()),
        projector::runner::<orderlog_projections::payments::PaymentStatusTable>(store.clone(), watched),
    ];
    // As `orderlog serve` does: the read models' tables exist before the first request.
    for runner in &runners {
        runner.ensure().await.unwrap();
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(follow_checkpoints(rows, vec![order_cache.clone()], Duration::from_millis(10), stopped.clone()));
    tokio::spawn(projector::run_live(store.clone(), runners.clone(), stopped));
    let mut config = orderlog_commands::ServiceConfig::default();
    let ttl = PRICE_TTL_SECONDS.load(std::sync::atomic::Ordering::Relaxed);
    if ttl >= 0 {
        config.price_ttl = chrono::Duration::seconds(ttl);
    }
    let service =
        Arc::new(CommandService::with_config(timed.clone(), Arc::new(SystemClock), Arc::new(RandomIds), config));
    let api = Arc::new(Api {
        service,
        store: timed,
        queries,
        tokens: tokens.clone(),
        runners,
        metrics,
        insecure_dev: false,
        projections_running: Arc::new(AtomicBool::new(true)),
        order_cache: Some(order_cache.clone()),
        proofs: Arc::new(orderlog_replay::checkpoint::TreeFollower::new(tree.clone())),
        checkpoints,
        webhooks,
        payments: Some(Arc::new(orderlog_api::payments::Payments::with_limit(
            "stripe",
            vec![STRIPE_WEBHOOK_SECRET.into()],
            WEBHOOKS_PER_SECOND,
        ))),
    });
    let (router, doc) = router_and_doc(api);
    App { router, doc, tokens, store, order_cache, _stop: stop, _keep: keep }
}

/// The test app's limit of webhook deliveries per second.
pub const WEBHOOKS_PER_SECOND: u32 = 40;

/// The secret Stripe-format webhooks to the test app are signed with.
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_api_tests";

impl App {
    pub async fn sqlite() -> App {
        let dir = tempfile::tempdir().unwrap();
        let mut app = App::sqlite_in(dir.path()).await;
        app._keep = Box::new(dir);
        app
    }

    /// On `orderlog.db` in `dir`, which the caller keeps (to reach the file itself).
    pub async fn sqlite_in(dir: &std::path::Path) -> App {
        let path = dir.join("orderlog.db");
        App::on(&path.to_string_lossy(), Box::new(())).await
    }

    pub async fn postgres() -> App {
        let test_db = TestDatabase::create().await;
        let url = test_db.url.clone();
        App::on(&url, Box::new(test_db)).await
    }

    /// On the database `url` names, as `orderlog serve` opens it.
    async fn on(url: &str, keep: Box<dyn std::any::Any + Send>) -> App {
        App::signing_on(url, keep, None).await
    }

    /// On the database `url` names, signing checkpoints with `signer` if given.
    pub async fn signing_on(
        url: &str,
        keep: Box<dyn std::any::Any + Send>,
        signer: Option<Arc<orderlog_api::checkpoints::Signer>>,
    ) -> App {
        let db = Database::open(url).await.unwrap();
        let (rows, queries, tokens) =
            (db.rows().await.unwrap(), db.queries(2).await.unwrap(), db.tokens().await.unwrap());
        let webhooks = orderlog_processes::webhooks::Webhooks::new(
            db.processes().await.unwrap(),
            orderlog_processes::webhooks::WebhookConfig::default(),
        );
        build_with_webhooks(db.tree(), rows, queries, tokens, keep, signer, Some(webhooks)).await
    }

    pub async fn token(&self, scopes: &str) -> String {
        self.tokens.create("tester", &parse_scopes(scopes).unwrap()).await.unwrap().token
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.send(method, path, token, body.map(|b| b.to_string()), &[]).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        if headers.get("content-type").is_some_and(|v| v == "text/event-stream") {
            // A live stream does not end: its status and headers are the answer.
            return Reply { status, headers, body: Value::Null, text: String::new() };
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body, text }
    }

    /// Calls and insists on 200 (or 201/204), returning the body.
    pub async fn ok(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let reply = self.call(method.clone(), path, Some(token), body).await;
        assert!(reply.status.is_success(), "{method} {path}: {} {}", reply.status, reply.text);
        reply.body
    }
}

pub fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

/// The test catalog: a published product per (SKU, price in EUR cents), made with a
/// catalog token under fixed idempotency keys, so calling it again repeats, not conflicts.
pub async fn catalog(app: &App, items: &[(&str, i64)]) {
    let token = app.token("catalog").await;
    for (sku, cents) in items {
        let product = format!("product-{sku}");
        let body = json!({"product_id": product, "title": format!("The {sku}"), "tax_class": "standard",
                          "prices_include_tax": true,
                          "variants": [{"sku": sku, "title": format!("The {sku}"), "prices": [eur(*cents)]}]});
        for (path, body, key) in [
            ("/products".to_string(), Some(body.to_string()), format!("catalog-{product}-create")),
            (format!("/products/{product}/publish"), None, format!("catalog-{product}-publish")),
        ] {
            let reply = app.send(Method::POST, &path, Some(&token), body, &[("idempotency-key", &key)]).await;
            assert!(reply.status.is_success(), "POST {path}: {} {}", reply.status, reply.text);
        }
    }
    pricing(app, 490).await;
}

/// The test tax region (Germany: 19 % standard, 7 % reduced, `diplomats` exempt) and the
/// shipping zone `de` with its one option `dhl` at `shipping` cents, tax included.
pub async fn pricing(app: &App, shipping: i64) {
    let token = app.token("catalog").await;
    let region = json!({"name": "Germany", "rates": {"standard": 1900, "reduced": 700}, "default_class": "standard",
                        "exempt_groups": ["diplomats"]});
    let zone = json!({"name": "Germany", "currency": "EUR", "countries": ["DE"], "prices_include_tax": true,
                      "options": [{"id": "dhl", "name": "DHL", "rate": {"kind": "flat", "price": eur(shipping)}}]});
    for (path, body) in [("/tax-regions/DE", region), ("/shipping-zones/de", zone)] {
        let reply = app.send(Method::PUT, path, Some(&token), Some(body.to_string()), &[]).await;
        assert!(reply.status.is_success(), "PUT {path}: {} {}", reply.status, reply.text);
    }
}

/// A cart with one line of `qty` mugs (9.00 EUR each, from the test catalog, which also
/// sells tea at 4.50), ready to check out.
pub async fn fill_cart(app: &App, token: &str, cart: &str, qty: u32) {
    catalog(app, &[("mug", 900), ("tea", 450)]).await;
    app.ok(
        Method::POST,
        "/carts",
        token,
        Some(json!({"cart_id": cart, "currency": "EUR", "customer": {"kind": "guest", "email": "ann@example.com"}})),
    )
    .await;
    let item = json!({"sku": "mug", "quantity": qty});
    app.ok(Method::POST, &format!("/carts/{cart}/items"), token, Some(item)).await;
    let address = orderlog_domain::testing::address_json();
    app.ok(Method::PUT, &format!("/carts/{cart}/shipping-address"), token, Some(address)).await;
    let option = json!({"option_id": "dhl"});
    app.ok(Method::PUT, &format!("/carts/{cart}/shipping-method"), token, Some(option)).await;
}

pub async fn order_when_caught_up(app: &App, token: &str, order: &str, position: u64) -> Value {
    app.ok(Method::GET, &format!("/orders/{order}?wait_for={position}&timeout_ms=10000"), token, None).await
}

/// Every protected route, with the scopes that may call it.
pub fn protected() -> Vec<(Method, &'static str, &'static [Scope])> {
    use Scope::*;
    const SHOP: &[Scope] = &[Shop];
    const OPS: &[Scope] = &[Operations];
    vec![
        (Method::POST, "/carts", SHOP),
        (Method::POST, "/carts/c1/items", SHOP),
        (Method::PATCH, "/carts/c1/items/mug", SHOP),
        (Method::DELETE, "/carts/c1/items/mug", SHOP),
        (Method::PUT, "/carts/c1/discount", SHOP),
        (Method::DELETE, "/carts/c1/discount", SHOP),
        (Method::PUT, "/carts/c1/contact", SHOP),
        (Method::PUT, "/carts/c1/shipping-address", SHOP),
        (Method::PUT, "/carts/c1/billing-address", SHOP),
        (Method::PUT, "/carts/c1/shipping-method", SHOP),
        (Method::POST, "/carts/c1/checkout", SHOP),
        (Method::POST, "/orders/o1/cancel", OPS),
        (Method::POST, "/orders/o1/payments", OPS),
        (Method::POST, "/orders/o1/complete", OPS),
        (Method::POST, "/orders/o1/pay", SHOP),
        (Method::POST, "/payments/o1.p1/refunds", OPS),
        (Method::GET, "/orders/o1/payments", &[Shop, Operations, Audit]),
        (Method::POST, "/orders/o1/hold", OPS),
        (Method::POST, "/orders/o1/release-hold", OPS),
        (Method::POST, "/orders/o1/returns", OPS),
        (Method::POST, "/orders/o1/returns/r1/receive", OPS),
        (Method::POST, "/stock/mug/berlin/receipts", OPS),
        (Method::POST, "/stock/mug/berlin/adjustments", OPS),
        (Method::PUT, "/stock/mug/berlin/safety-stock", OPS),
        (Method::POST, "/stock/mug/berlin/incoming", OPS),
        (Method::PUT, "/stock/mug/berlin/backorders", OPS),
        (Method::PUT, "/stock/mug/berlin/low-stock-threshold", OPS),
        (Method::POST, "/shipments", OPS),
        (Method::POST, "/shipments/s1/pack", OPS),
        (Method::POST, "/shipments/s1/ship", OPS),
        (Method::POST, "/shipments/s1/deliver", OPS),
        (Method::POST, "/shipments/s1/delivery-failed", OPS),
        (Method::POST, "/shipments/s1/cancel", OPS),
        (Method::GET, "/orders/o1", &[Shop, Operations, Audit]),
        (Method::GET, "/orders", &[Operations, Audit]),
        (Method::GET, "/inventory/skus/mug", &[Shop, Operations]),
        (Method::GET, "/inventory/locations/berlin", OPS),
        (Method::GET, "/reports/sales?from=2026-01-01&to=2026-01-02", &[Operations, Analytics]),
        (Method::GET, "/reports/payments?from=2026-01-01&to=2026-01-02", &[Operations, Analytics]),
        (Method::GET, "/reports/top-skus", &[Operations, Analytics]),
        (Method::GET, "/reports/top-promotions", &[Operations, Analytics]),
        (Method::GET, "/streams/order-o1", &[Audit]),
        (Method::GET, "/events", &[Audit, Analytics]),
        (Method::GET, "/events/live", &[Audit, Analytics]),
        (Method::GET, "/proofs/inclusion?position=1", &[Audit]),
        (Method::GET, "/proofs/consistency?from=0", &[Audit]),
        (Method::GET, "/checkpoints/key", &[Audit]),
        (Method::GET, "/checkpoints/latest", &[Audit]),
        (Method::GET, "/tokens", &[Admin]),
        (Method::POST, "/tokens", &[Admin]),
        (Method::DELETE, "/tokens/abc", &[Admin]),
        (Method::GET, "/webhooks", &[Integrations]),
        (Method::POST, "/webhooks", &[Integrations]),
        (Method::GET, "/webhooks/wh1", &[Integrations]),
        (Method::POST, "/webhooks/wh1/disable", &[Integrations]),
        (Method::POST, "/webhooks/wh1/rotate-secret", &[Integrations]),
        (Method::GET, "/webhooks/wh1/deliveries", &[Integrations]),
        (Method::POST, "/webhooks/wh1/deliveries/m1/redeliver", &[Integrations]),
        (Method::POST, "/products", &[Catalog]),
        (Method::PATCH, "/products/p1", &[Catalog]),
        (Method::POST, "/products/p1/variants", &[Catalog]),
        (Method::PUT, "/products/p1/variants/mug/prices", &[Catalog]),
        (Method::POST, "/products/p1/variants/mug/archive", &[Catalog]),
        (Method::POST, "/products/p1/publish", &[Catalog]),
        (Method::POST, "/products/p1/archive", &[Catalog]),
        (Method::POST, "/price-lists", &[Catalog]),
        (Method::PUT, "/price-lists/pl1/prices", &[Catalog]),
        (Method::DELETE, "/price-lists/pl1/prices/mug", &[Catalog]),
        (Method::POST, "/price-lists/pl1/archive", &[Catalog]),
        (Method::GET, "/products/p1", &[Shop, Catalog]),
        (Method::GET, "/carts/c1", &[Shop, Operations]),
        (Method::POST, "/promotions", &[Catalog]),
        (Method::POST, "/promotions/SAVE10/archive", &[Catalog]),
        (Method::GET, "/promotions/SAVE10", &[Shop, Catalog]),
        (Method::GET, "/price-lists/pl1", &[Shop, Catalog]),
        (Method::GET, "/products", &[Shop, Catalog]),
        (Method::PUT, "/tax-regions/DE", &[Catalog]),
        (Method::GET, "/tax-regions/DE", &[Shop, Catalog]),
        (Method::PUT, "/shipping-zones/z1", &[Catalog]),
        (Method::GET, "/shipping-zones/z1", &[Shop, Catalog]),
        (Method::PUT, "/customers/cu1/groups/g1", &[Catalog]),
        (Method::DELETE, "/customers/cu1/groups/g1", &[Catalog]),
    ]
}
