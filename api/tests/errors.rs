//! Bad input, idempotency keys, internal errors and query parameters over the real router:
//! every problem names what is wrong, and nothing stored changes.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use orderlog_api::auth::{parse_scopes, SqliteTokens};
use orderlog_projections::orders::OrderStatusRow;
use orderlog_projections::queries::{OrderFilter, ReadQueries, SalesDay, TopSku};
use orderlog_projections::sqlite::SqliteRows;
use orderlog_projections::table::RowStore;
use orderlog_projections::RowsError;
use orderlog_store::SqliteStore;
use serde_json::{json, Value};

use common::*;

#[tokio::test]
async fn bad_input_gets_a_problem_naming_it_and_changes_nothing() {
    let app = App::sqlite().await;
    let t = app.token("shop,operations").await;
    let t = t.as_str();
    app.ok(Method::POST, "/stock/mug/berlin/receipts", t, Some(json!({"quantity": 1}))).await;
    fill_cart(&app, t, "c1", 1).await;
    let head = app.store.head().await.unwrap();
    let cases: Vec<(Method, &str, Option<String>, StatusCode, &str)> = vec![
        (Method::POST, "/carts/c1/items", Some("{\"sku\": ".into()), StatusCode::BAD_REQUEST, "not valid JSON"),
        (
            Method::POST,
            "/carts/c1/items",
            Some(json!({"sku": "mug", "quantity": 1, "colour": "red"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `colour`",
        ),
        (
            Method::POST,
            "/carts/c1/items",
            Some(json!({"sku": "mug", "quantity": "two"}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "field `quantity`",
        ),
        (
            Method::POST,
            "/carts/c1/items",
            Some(json!({"sku": "mug", "quantity": -2}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "field `quantity`",
        ),
        (
            Method::POST,
            "/carts/c1/items",
            Some(json!({"sku": "mug", "quantity": 0}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity",
        ),
        (
            Method::POST,
            "/carts/c1/items",
            // The price is the server's: a client that names one is refused by the field.
            Some(json!({"sku": "mug", "quantity": 1, "unit_price": eur(1)}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `unit_price`",
        ),
        (
            Method::POST,
            "/carts/c1/items",
            Some(json!({"sku": "mug/../x", "quantity": 1}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "field `sku`",
        ),
        (
            Method::POST,
            "/stock/mug/berlin/receipts",
            Some(json!({"quantity": 0}).to_string()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity",
        ),
        (Method::POST, "/orders/nope/complete", None, StatusCode::NOT_FOUND, "does not exist"),
        (
            Method::POST,
            "/carts/c1/items",
            Some(format!("{{\"sku\": \"{}\"}}", "x".repeat(100_000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        ),
        (Method::GET, "/orders/unknown-order", None, StatusCode::NOT_FOUND, "no order 'unknown-order'"),
        (Method::GET, "/nowhere", None, StatusCode::NOT_FOUND, "no such route"),
        (Method::PUT, "/carts", Some("{}".into()), StatusCode::METHOD_NOT_ALLOWED, "method"),
    ];
    for (method, path, body, status, says) in cases {
        let reply = app.send(method.clone(), path, Some(t), body, &[]).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/problem+json", "{method} {path}");
        assert!(reply.body["detail"].as_str().unwrap().contains(says), "{method} {path}: {}", reply.text);
        assert_eq!(reply.body["status"], status.as_u16());
    }
    let plain = app.send(Method::POST, "/carts/c1/items", Some(t), None, &[("content-type", "text/plain")]).await;
    assert_eq!(plain.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A domain rejection: more mugs than there are.
    app.ok(Method::PATCH, "/carts/c1/items/mug", t, Some(json!({"quantity": 5}))).await;
    let head = head + 1;
    let short = app.call(Method::POST, "/carts/c1/checkout", Some(t), Some(json!({"location": "berlin"}))).await;
    assert_eq!(short.status, StatusCode::CONFLICT, "{}", short.text);
    assert_eq!(short.body["type"], "https://orderlog.dev/problems/out-of-stock");
    assert_eq!(short.body["shortages"][0]["sku"], "mug");
    assert_eq!(app.store.head().await.unwrap(), head, "no rejected request stored anything");
    let bad_wait = app.call(Method::GET, "/orders/o1?wait_for=999999", Some(t), None).await;
    assert_eq!(bad_wait.status, StatusCode::CONFLICT, "{}", bad_wait.text);
    assert!(bad_wait.text.contains("no committed event at position 999999"), "{}", bad_wait.text);
}

#[tokio::test]
async fn idempotency_keys_repeat_the_first_response_and_refuse_another_request() {
    let app = App::sqlite().await;
    let t = app.token("operations").await;
    let other = app.tokens.create("other-service", &parse_scopes("operations").unwrap()).await.unwrap().token;
    let receive = |qty: u32| Some(json!({"quantity": qty}).to_string());
    let key = [("idempotency-key", "receipt-42")];
    let first = app.send(Method::POST, "/stock/mug/berlin/receipts", Some(&t), receive(5), &key).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = app.send(Method::POST, "/stock/mug/berlin/receipts", Some(&t), receive(5), &key).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body, "the retry gets the first response");
    let changed = app.send(Method::POST, "/stock/mug/berlin/receipts", Some(&t), receive(6), &key).await;
    assert_eq!(changed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(changed.body["type"], "https://orderlog.dev/problems/idempotency-key-reused");
    // Keys belong to their principal: another caller's same key is its own request.
    let theirs = app.send(Method::POST, "/stock/mug/berlin/receipts", Some(&other), receive(6), &key).await;
    assert_eq!(theirs.status, StatusCode::OK);
    assert_eq!(app.store.stream_version("stock-mug@berlin").await.unwrap(), 2);
    let bad_key =
        app.send(Method::POST, "/stock/mug/berlin/receipts", Some(&t), receive(1), &[("idempotency-key", "")]).await;
    assert_eq!(bad_key.status, StatusCode::BAD_REQUEST);
}

/// Read models that fail, to see a 500 that gives nothing away.
struct Broken;

use orderlog_projections::deadlines::DeadlineRow;

#[async_trait]
impl ReadQueries for Broken {
    async fn order_json(&self, _: &str) -> Result<Option<String>, RowsError> {
        Err(RowsError::Database("connection to 10.0.0.7 refused: secret-internal-detail".into()))
    }
    async fn orders(&self, _: &OrderFilter) -> Result<Vec<OrderStatusRow>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
    async fn inventory_of_sku(&self, _: &str) -> Result<Vec<orderlog_projections::inventory::InventoryRow>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
    async fn inventory_at(&self, _: &str) -> Result<Vec<orderlog_projections::inventory::InventoryRow>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
    async fn sales(&self, _: &str, _: &str, _: Option<&str>) -> Result<Vec<SalesDay>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
    async fn top_skus(&self, _: Option<&str>, _: u32) -> Result<Vec<TopSku>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
    async fn top_promotions(
        &self,
        _: Option<&str>,
        _: u32,
    ) -> Result<Vec<orderlog_projections::queries::TopPromotion>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
    async fn payments(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<Vec<orderlog_projections::queries::PaymentsDay>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
    async fn payment_by_provider_ref(
        &self,
        _: &str,
    ) -> Result<Option<orderlog_projections::queries::PaymentRow>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
    async fn due_deadlines(&self, _: i64, _: u32) -> Result<Vec<DeadlineRow>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
    async fn deadline(&self, _: &str) -> Result<Option<DeadlineRow>, RowsError> {
        Err(RowsError::Database("secret-internal-detail".into()))
    }
}

#[tokio::test]
async fn internal_errors_are_500s_without_internals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orderlog.db");
    let store: Arc<dyn orderlog_store::TreeStore> = Arc::new(SqliteStore::open(&path).unwrap());
    let rows: Arc<dyn RowStore> = Arc::new(SqliteRows::open(&path, &[]).unwrap());
    let tokens = Arc::new(SqliteTokens::open(&path).unwrap());
    let app = build(store, rows, Arc::new(Broken), tokens, Box::new(dir), None).await;
    let t = app.token("operations").await;
    for path in ["/orders/o1", "/orders", "/inventory/skus/mug", "/reports/top-skus", "/reports/top-promotions"] {
        let reply = app.call(Method::GET, path, Some(&t), None).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(reply.headers["content-type"], "application/problem+json");
        assert!(!reply.text.contains("secret") && !reply.text.contains("10.0.0.7"), "{}", reply.text);
        assert!(reply.headers.contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn query_parameters_are_checked() {
    let app = App::sqlite().await;
    let t = app.token("operations,audit,analytics").await;
    for (path, says) in [
        ("/orders?state=lost", "state: 'lost'"),
        ("/orders?limit=0", "limit"),
        ("/orders?after=garbage", "after"),
        ("/orders?placed_from=yesterday", "placed_from"),
        ("/reports/sales?from=2026-13-01&to=2026-12-01", "from"),
        ("/reports/sales?from=2026-01-01&to=2026-01-02&currency=ABC", "currency"),
        ("/events?after=12", "after"),
        ("/events?limit=100000", "limit"),
    ] {
        let reply = app.call(Method::GET, path, Some(&t), None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", reply.text);
        assert!(reply.body["detail"].as_str().unwrap().contains(says), "{path}: {}", reply.text);
    }
    // A range whose first day is after its last holds no days.
    assert_eq!(app.ok(Method::GET, "/reports/sales?from=2026-02-01&to=2026-01-01", &t, None).await, json!([]));
    // A cursor past any position an event can have: no events (the fuzzer found a 500).
    let far = app.call(Method::GET, "/events?after=2.9366173069087097702", Some(&t), None).await;
    assert_eq!((far.status, far.text.as_str()), (StatusCode::OK, ""), "{}", far.text);
    let unknown = app.call(Method::GET, "/orders?colour=red", Some(&t), None).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.headers["content-type"], "application/problem+json", "{}", unknown.text);
}

fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let keys = prop::sample::select(vec![
        "sku",
        "quantity",
        "unit_price",
        "amount",
        "currency",
        "cart_id",
        "order_id",
        "location",
        "customer",
        "kind",
        "email",
        "reason",
        "type",
        "provider_event_id",
        "lines",
        "delta",
        "allowed",
        "discount",
        "code",
        "id",
        "price",
        "return_id",
        "restock",
        "event_id",
        "occurred_at",
        "principal",
        "scopes",
        "option_id",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..5).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "mug",
            "EUR",
            "XYZ",
            "",
            "guest",
            "berlin",
            "a/b",
            "\u{0}",
            "percentage",
            "captured"
        ])
        .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Whatever arrives at whichever route, the server answers (never a 5xx), and a
    /// refused request leaves the log exactly as it was.
    #[test]
    fn no_input_crashes_the_server_or_changes_the_log_when_refused(
        requests in proptest::collection::vec((0usize..38, json_value(), proptest::prelude::any::<bool>()), 1..12),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let app = App::sqlite().await;
            let t = app.token("shop,operations,audit,analytics,admin").await;
            app.ok(Method::POST, "/stock/mug/berlin/receipts", &t, Some(json!({"quantity": 3}))).await;
            fill_cart(&app, &t, "c1", 1).await;
            let routes = protected();
            for (route, body, raw) in requests {
                let (method, path, _) = &routes[route % routes.len()];
                if path.starts_with("/events/live") {
                    continue;
                }
                let before = app.store.read_all(orderlog_store::LogCursor::START, 10_000).await.unwrap();
                let text = if raw { body.to_string().chars().rev().collect() } else { body.to_string() };
                let reply = app.send(method.clone(), path, Some(&t), Some(text), &[]).await;
                assert!(reply.status.as_u16() < 500, "{method} {path}: {} {}", reply.status, reply.text);
                if !reply.status.is_success() {
                    assert_eq!(reply.headers["content-type"], "application/problem+json");
                    let after = app.store.read_all(orderlog_store::LogCursor::START, 10_000).await.unwrap();
                    assert_eq!(after, before, "{method} {path} was refused but the log changed");
                }
            }
        });
    }
}
