//! Regression tests for the defects an outside test found in the HTTP surface (issue
//! "Hardening"), through the real router over real stores. Each failed before its fix.

mod common;

use axum::http::{Method, StatusCode};
use orderlog_domain::cart::{Customer, ShippingMethod};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::order::{OrderEvent, OrderLine, OrderTotals, PlacedOrder};
use orderlog_domain::stock::{AdjustmentReason, StockEvent};
use orderlog_domain::{CartId, Currency, LocationId, Money, Sku};
use orderlog_store::{ExpectedVersion, Metadata, NewEvent, StreamAppend};
use serde_json::{json, Value};

use common::*;

const ALL: &str = "shop,operations,audit,analytics,admin";

/// Capture 1 then `i64::MAX` (and refund likewise) answered 200 and left `captured` at
/// `i64::MIN`; now an amount past the most a command may name is a 422, one past what is
/// authorized (or captured) a 409, and the order is unchanged.
async fn money_past_i64_is_refused(app: App) {
    let t = app.token(ALL).await;
    app.ok(Method::POST, "/stock/mug/berlin/receipts", &t, Some(json!({"quantity": 5}))).await;
    fill_cart(&app, &t, "c1", 1).await;
    app.ok(Method::POST, "/carts/c1/checkout", &t, Some(json!({"order_id": "o1", "location": "berlin"}))).await;
    let pay = |body: Value| app.call(Method::POST, "/orders/o1/payments", Some(&t), Some(body));
    let total = eur(900 + 490);
    assert!(pay(json!({"type": "authorized", "amount": total, "provider_ref": "pi", "provider_event_id": "e1"}))
        .await
        .status
        .is_success());
    assert!(pay(json!({"type": "captured", "amount": eur(1), "provider_event_id": "e2"})).await.status.is_success());
    let reply = pay(json!({"type": "captured", "amount": eur(i64::MAX), "provider_event_id": "e3"})).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text);
    assert!(
        reply.body["detail"].as_str().unwrap().contains("more than the 1000000000000 minor units"),
        "{}",
        reply.text
    );
    let reply = pay(json!({"type": "captured", "amount": eur(1_000_000_000_000), "provider_event_id": "e3"})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(reply.body["detail"].as_str().unwrap().contains("would exceed the authorized"), "{}", reply.text);
    assert!(pay(json!({"type": "refunded", "amount": eur(1), "provider_event_id": "e4"})).await.status.is_success());
    let reply = pay(json!({"type": "refunded", "amount": eur(i64::MAX), "provider_event_id": "e5"})).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text);
    let reply = pay(json!({"type": "refunded", "amount": eur(2), "provider_event_id": "e5"})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    let last = pay(json!({"type": "refunded", "amount": eur(0), "provider_event_id": "e6"})).await;
    assert_eq!(last.status, StatusCode::UNPROCESSABLE_ENTITY);
    let head = app.store.head().await.unwrap();
    let order = app.ok(Method::GET, &format!("/orders/o1?wait_for={head}&timeout_ms=10000"), &t, None).await;
    assert_eq!((order["captured"].as_i64(), order["refunded"].as_i64()), (Some(1), Some(1)), "{order}");
}

#[tokio::test]
async fn money_past_i64_is_refused_on_sqlite() {
    money_past_i64_is_refused(App::sqlite().await).await;
}

#[tokio::test]
async fn money_past_i64_is_refused_on_postgres() {
    money_past_i64_is_refused(App::postgres().await).await;
}

fn stored(event: DomainEvent, n: u32) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: event.event_type().to_string(),
        schema_version: event.schema_version(),
        payload: event.payload(),
        metadata: Metadata {
            actor: "tester".into(),
            command_id: format!("extreme-{n}"),
            command_hash: None,
            correlation_id: format!("extreme-{n}"),
            causation_id: None,
        },
        recorded_at: "2026-11-03T10:00:00Z".parse().unwrap(),
    }
}

/// Events at the edges of what their types hold, as an old build or an import could have
/// stored them, never make a read fail: every report and view answers 200.
async fn extreme_events_never_make_a_read_fail(app: App) {
    let eur = Currency::parse("EUR").unwrap();
    let m = |a| Money::new(a, eur);
    let order = |total| PlacedOrder {
        cart_id: CartId::parse("c1").unwrap(),
        customer: Customer::Guest { email: "ann@example.com".into() },
        email: "ann@example.com".into(),
        currency: eur,
        lines: vec![OrderLine {
            sku: Sku::parse("mug").unwrap(),
            location: LocationId::parse("berlin").unwrap(),
            quantity: u32::MAX,
            unit_price: m(i64::MAX),
            pricing: None,
            discount: None,
            tax: None,
        }],
        discount_code: None,
        tax_rate_bps: 0,
        promotions: vec![],
        totals: OrderTotals {
            subtotal: m(total),
            discount: m(total),
            shipping: m(0),
            tax: m(0),
            total: m(total),
            tax_included: None,
        },
        shipping_address: Some(orderlog_domain::testing::address()),
        billing_address: None,
        shipping_method: Some(ShippingMethod { id: "dhl".into(), price: m(0) }),
        shipping: None,
    };
    let order_events = |id: &str| {
        let mut events = vec![
            DomainEvent::from(OrderEvent::OrderPlaced { order: Box::new(order(i64::MAX)) }),
            OrderEvent::PaymentAuthorized {
                amount: m(i64::MAX),
                provider_ref: "pi".into(),
                provider_event_id: format!("{id}a"),
            }
            .into(),
        ];
        for n in 0..3 {
            events.push(
                OrderEvent::PaymentCaptured { amount: m(i64::MAX), provider_event_id: format!("{id}c{n}") }.into(),
            );
            events.push(
                OrderEvent::PaymentRefunded { amount: m(i64::MAX), provider_event_id: format!("{id}r{n}") }.into(),
            );
        }
        events
    };
    let mut stock = Vec::new();
    for _ in 0..3 {
        stock.push(DomainEvent::from(StockEvent::StockReceived { units: u32::MAX, reference: None }));
        stock.push(StockEvent::StockAdjusted { delta: i64::MAX, reason: AdjustmentReason::Correction }.into());
        stock.push(StockEvent::IncomingExpected { quantity: u32::MAX }.into());
    }
    stock.push(StockEvent::StockAdjusted { delta: i64::MIN, reason: AdjustmentReason::Correction }.into());
    let mut n = 0;
    let mut append = |stream: &str, events: Vec<DomainEvent>| {
        let events = events
            .into_iter()
            .map(|e| {
                n += 1;
                stored(e, n)
            })
            .collect();
        StreamAppend { stream_id: stream.to_string(), expected: ExpectedVersion::Any, events }
    };
    let appends = vec![
        append("order-x1", order_events("x1")),
        append("order-x2", order_events("x2")),
        append("stock-mug@berlin", stock),
    ];
    app.store.append(appends).await.unwrap();
    let head = app.store.head().await.unwrap();
    let t = app.token(ALL).await;
    let wait = format!("wait_for={head}&timeout_ms=10000");
    for path in [
        format!("/orders/x1?{wait}"),
        "/orders".to_string(),
        format!("/inventory/skus/mug?{wait}"),
        format!("/inventory/locations/berlin?{wait}"),
        "/reports/sales?from=2026-11-01&to=2026-11-30".to_string(),
        "/reports/top-skus".to_string(),
        "/streams/order-x1".to_string(),
        "/streams/stock-mug@berlin".to_string(),
        "/events".to_string(),
        "/metrics".to_string(),
    ] {
        let reply = app.call(Method::GET, &path, Some(&t), None).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {path}: {}", reply.text);
    }
    let sales = app.ok(Method::GET, "/reports/sales?from=2026-11-01&to=2026-11-30", &t, None).await;
    let day = &sales[0];
    // Two orders of i64::MAX each: the sum is exact past 64 bits.
    assert_eq!(day["gross"].to_string(), (2 * i128::from(i64::MAX)).to_string(), "{day}");
    // Each order's refunds stop at the most a row holds (i64::MAX); the day's sum is exact.
    assert_eq!(day["refunds"].to_string(), (2 * i128::from(i64::MAX)).to_string(), "{day}");
    // Past u64 a JSON number is still written exactly (serde_json reads it back as a float).
    let top = app.call(Method::GET, "/reports/top-skus", Some(&t), None).await.text;
    let revenue = 2 * i128::from(u32::MAX) * i128::from(i64::MAX);
    assert!(top.contains(&format!("\"revenue\":{revenue}")), "{top}");
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn extreme_events_never_make_a_read_fail(App) on [sqlite, postgres];
}

/// 5,000 requests with made-up methods and paths grew /metrics without bound.
#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let app = App::sqlite().await;
    let series =
        |text: &str| text.lines().filter(|l| l.starts_with("orderlog_http_request_duration_seconds_count")).count();
    for n in 0..20 {
        let method = Method::from_bytes(format!("M{n}").as_bytes()).unwrap();
        app.call(method, &format!("/nowhere/{n}"), None, None).await;
        app.call(Method::GET, &format!("/nowhere/{n}"), None, None).await;
    }
    // The first scrape is itself measured: count from the second.
    app.call(Method::GET, "/metrics", None, None).await;
    let before = series(&app.call(Method::GET, "/metrics", None, None).await.text);
    for n in 0..2_000 {
        let method = Method::from_bytes(format!("X{n}").as_bytes()).unwrap();
        app.call(method, &format!("/nowhere/{n}"), None, None).await;
        app.call(Method::GET, &format!("/elsewhere/{n}/{n}"), None, None).await;
    }
    let metrics = app.call(Method::GET, "/metrics", None, None).await.text;
    assert_eq!(series(&metrics), before, "{metrics}");
    assert!(metrics.contains("method=\"other\",route=\"unmatched\""), "{metrics}");
    assert!(!metrics.contains("X1999") && !metrics.contains("/elsewhere/"), "a label from the request");
}

/// Unknown fields inside nested request types (customer, money, shipping method) were
/// accepted; now each is refused naming the field, and nothing is appended.
#[tokio::test]
async fn unknown_fields_are_refused_at_every_depth() {
    let app = App::sqlite().await;
    let t = app.token(ALL).await;
    fill_cart(&app, &t, "c1", 1).await;
    let cases = [
        (
            Method::POST,
            "/carts",
            json!({"cart_id": "c2", "currency": "EUR", "customer": {"kind": "guest", "email": "a@example.com", "vip": true}}),
            "vip",
        ),
        (
            Method::POST,
            "/carts/c1/items",
            json!({"sku": "tea", "quantity": 1, "unit_price": {"amount": 100, "currency": "EUR"}}),
            "unit_price",
        ),
        (Method::PUT, "/carts/c1/shipping-method", json!({"option_id": "dhl", "eta": "2d"}), "eta"),
        // What shipping costs and the tax rate are the server's: a body naming them is refused.
        (Method::PUT, "/carts/c1/shipping-method", json!({"option_id": "dhl", "price": eur(1)}), "price"),
        (Method::POST, "/carts/c1/checkout", json!({"location": "berlin", "tax_rate_bps": 0}), "tax_rate_bps"),
        (Method::PUT, "/carts/c1/discount", json!({"code": "X", "cap": 1}), "cap"),
        (
            Method::POST,
            "/orders/o1/returns",
            json!({"return_id": "r1", "lines": [{"sku": "mug", "quantity": 1, "colour": "red"}], "reason": "x"}),
            "colour",
        ),
    ];
    let before = app.store.head().await.unwrap();
    for (method, path, body, field) in cases {
        let reply = app.call(method.clone(), path, Some(&t), Some(body)).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path}: {}", reply.text);
        assert!(reply.body["detail"].as_str().unwrap().contains(field), "{method} {path}: {}", reply.text);
    }
    assert_eq!(app.store.head().await.unwrap(), before);
}

/// `POST /stock/%2E%2E/berlin/receipts` created the stream `stock-..@berlin`.
#[tokio::test]
async fn ids_that_a_url_cannot_address_are_refused() {
    let app = App::sqlite().await;
    let t = app.token(ALL).await;
    for path in ["/stock/%2E%2E/berlin/receipts", "/stock/%2E/berlin/receipts", "/stock/mug/.hidden/receipts"] {
        let reply = app.call(Method::POST, path, Some(&t), Some(json!({"quantity": 1}))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", reply.text);
        assert!(reply.text.contains("must start with a letter or a digit"), "{path}: {}", reply.text);
    }
    assert_eq!(app.store.head().await.unwrap(), 0);
}

/// A second checkout of a checked-out cart with another order id answered 200 with the
/// old order; now the same id is idempotent and another one is a 409 naming the order.
#[tokio::test]
async fn a_second_checkout_never_lies_about_its_order() {
    let app = App::sqlite().await;
    let t = app.token(ALL).await;
    app.ok(Method::POST, "/stock/mug/berlin/receipts", &t, Some(json!({"quantity": 5}))).await;
    fill_cart(&app, &t, "c1", 1).await;
    let first =
        app.ok(Method::POST, "/carts/c1/checkout", &t, Some(json!({"order_id": "o1", "location": "berlin"}))).await;
    assert_eq!(first["order_id"], "o1");
    let again =
        app.ok(Method::POST, "/carts/c1/checkout", &t, Some(json!({"order_id": "o1", "location": "berlin"}))).await;
    assert_eq!((again["order_id"].as_str(), again["events_appended"].as_u64()), (Some("o1"), Some(0)));
    let other = app
        .call(Method::POST, "/carts/c1/checkout", Some(&t), Some(json!({"order_id": "o2", "location": "berlin"})))
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.text);
    assert!(other.body["detail"].as_str().unwrap().contains("already checked out as order o1"), "{}", other.text);
    // Without an order id, a cart's order id follows from the cart: the same twice.
    fill_cart(&app, &t, "c2", 1).await;
    let a = app.ok(Method::POST, "/carts/c2/checkout", &t, Some(json!({"location": "berlin"}))).await;
    let b = app.ok(Method::POST, "/carts/c2/checkout", &t, Some(json!({"location": "berlin"}))).await;
    assert_eq!(a["order_id"], b["order_id"]);
    assert_eq!(b["events_appended"], 0);
}

/// A token row with empty or unknown scopes made every request with it, and `GET /tokens`,
/// a 500.
#[tokio::test]
async fn a_bad_token_row_is_refused_and_listed_as_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::sqlite_in(dir.path()).await;
    let admin = app.token("admin").await;
    let bad = app.token("shop").await;
    let conn = rusqlite::Connection::open(dir.path().join("orderlog.db")).unwrap();
    let bad_id = bad.split('_').nth(1).unwrap().to_string();
    assert_eq!(conn.execute("UPDATE orderlog_api_tokens SET scopes = 'root,' WHERE id = ?1", [&bad_id]).unwrap(), 1);
    let reply = app.call(Method::GET, "/orders/o1", Some(&bad), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    let listed = app.ok(Method::GET, "/tokens", &admin, None).await;
    let row = listed.as_array().unwrap().iter().find(|t| t["id"] == bad_id.as_str()).expect("the bad row is listed");
    assert!(row["invalid"].as_str().unwrap().contains("root"), "{row}");
    conn.execute("UPDATE orderlog_api_tokens SET scopes = '' WHERE id = ?1", [&bad_id]).unwrap();
    assert_eq!(app.call(Method::GET, "/orders/o1", Some(&bad), None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.call(Method::GET, "/tokens", Some(&admin), None).await.status, StatusCode::OK);
}

/// `Authorization: bearer …` was a 401; the scheme is case-insensitive (RFC 9110).
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = App::sqlite().await;
    let t = app.token("audit").await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let header = format!("{scheme} {t}");
        let reply = app.send(Method::GET, "/events", None, None, &[("authorization", header.as_str())]).await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {}", reply.text);
    }
    let reply = app.send(Method::GET, "/events", None, None, &[("authorization", &format!("Basic {t}"))]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// The document served at /openapi.json declares every error as problem+json (as the
/// server sends it), the statuses a guarded route and a body can give, and the one id
/// grammar on every id in a path.
#[tokio::test]
async fn the_openapi_document_declares_problems_and_the_id_grammar() {
    let app = App::sqlite().await;
    let doc = app.call(Method::GET, "/openapi.json", None, None).await.body;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = response["content"].as_object().unwrap();
                    assert!(content.contains_key("application/problem+json"), "{method} {path} {status}: {response}");
                    assert_eq!(content.len(), 1, "{method} {path} {status}");
                }
            }
            if op.get("security").is_some_and(|s| !s.as_array().unwrap().is_empty()) {
                assert!(responses.contains_key("401") && responses.contains_key("403"), "{method} {path}");
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
            }
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" && param["name"] == "region_id" {
                    assert_eq!(param["schema"]["pattern"], orderlog_domain::tax::TAX_REGION_PATTERN, "{method} {path}");
                } else if param["in"] == "path" && param["name"] != "stream_id" && param["name"] != "token_id" {
                    assert_eq!(param["schema"]["pattern"], orderlog_domain::ids::ID_PATTERN, "{method} {path}");
                }
            }
        }
    }
    assert!(operations >= 40, "{operations} operations");
    // An out-of-stock refusal lists its short lines: an array (the fuzzer found it declared
    // an object).
    let shortages = &doc["components"]["schemas"]["Problem"]["properties"]["shortages"];
    assert!(shortages["type"].as_array().unwrap().contains(&json!("array")), "{shortages}");
    assert!(doc["components"]["schemas"]["Shortage"]["properties"]["requested"].is_object());
}
