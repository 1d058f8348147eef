//! `orderlog serve` as a process on a free loopback port, against SQLite and PostgreSQL: a
//! token from `orderlog token create`, a checkout over HTTP, and the order read back after
//! waiting for the checkout's position.

mod common;

use std::process::Stdio;

use common::{orderlog, serve, Server};

use orderlog_store::postgres::testing::TestDatabase;
use serde_json::{json, Value};

/// One HTTP/1.1 request; returns the status and the JSON body.
fn http(server: &Server, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    common::http(server.address, method, path, token, body)
}

fn ok(server: &Server, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, body) = http(server, method, path, token, body);
    assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
    body
}

fn checkout_over_http(database: &str) {
    let refused = orderlog(&["serve", "--database", database, "--listen", "127.0.0.1:0"]);
    assert!(!refused.status.success(), "serve refuses to start without a token");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("orderlog token create"));
    let made = orderlog(&[
        "token",
        "create",
        "--database",
        database,
        "--principal",
        "web",
        "--scopes",
        "shop,operations,catalog",
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("olt_"));
    let server = serve(database, &[], Stdio::null());
    let t = token.as_str();
    let (status, _) = http(&server, "GET", "/orders/x", "olt_000000000000_wrong", None);
    assert_eq!(status, 401);
    ok(&server, "POST", "/stock/mug/berlin/receipts", t, Some(json!({"quantity": 5})));
    let customer = json!({"kind": "guest", "email": "ann@example.com"});
    ok(&server, "POST", "/carts", t, Some(json!({"cart_id": "c1", "currency": "EUR", "customer": customer})));
    let price = json!({"amount": 900, "currency": "EUR"});
    let product = json!({"product_id": "mug", "title": "Mug", "tax_class": "standard",
                         "variants": [{"sku": "mug", "title": "Mug", "prices": [price]}]});
    ok(&server, "POST", "/products", t, Some(product));
    ok(&server, "POST", "/products/mug/publish", t, None);
    // The price is the catalog's: a client that names one is refused, naming the field.
    let (status, refused) =
        http(&server, "POST", "/carts/c1/items", t, Some(json!({"sku": "mug", "quantity": 2, "unit_price": price})));
    assert_eq!(status, 422, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("unit_price"), "{refused}");
    ok(&server, "POST", "/carts/c1/items", t, Some(json!({"sku": "mug", "quantity": 2})));
    let address = orderlog_domain::testing::address_json();
    ok(&server, "PUT", "/carts/c1/shipping-address", t, Some(address));
    let region = json!({"name": "Germany", "rates": {"standard": 1900}, "default_class": "standard"});
    ok(&server, "PUT", "/tax-regions/DE", t, Some(region));
    let zone = json!({"name": "Germany", "currency": "EUR", "countries": ["DE"], "prices_include_tax": true,
                      "options": [{"id": "dhl", "name": "DHL", "rate": {"kind": "flat", "price": price}}]});
    ok(&server, "PUT", "/shipping-zones/de", t, Some(zone));
    ok(&server, "PUT", "/carts/c1/shipping-method", t, Some(json!({"option_id": "dhl"})));
    let placed = ok(&server, "POST", "/carts/c1/checkout", t, Some(json!({"location": "berlin"})));
    let order_id = placed["order_id"].as_str().unwrap();
    let position = placed["position"].as_u64().unwrap();
    let order = ok(&server, "GET", &format!("/orders/{order_id}?wait_for={position}&timeout_ms=10000"), t, None);
    assert_eq!(order["state"], "placed");
    // The mug's price excludes tax (19 % on 18.00 is 3.42); shipping's includes it.
    assert_eq!(order["total"], 2 * 900 + 342 + 900);
    assert_eq!(order["timeline"][0]["actor"], "web");
    let stock = ok(&server, "GET", &format!("/inventory/skus/mug?wait_for={position}"), t, None);
    assert_eq!((stock["on_hand"].as_i64(), stock["reserved"].as_i64()), (Some(5), Some(2)));
    let (status, _) = http(&server, "GET", "/streams/order-x", t, None);
    assert_eq!(status, 403, "shop and operations are not audit");
}

#[test]
fn a_checkout_over_http_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    checkout_over_http(dir.path().join("shop.db").to_str().unwrap());
}

#[test]
fn a_checkout_over_http_on_postgres() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDatabase::create());
    checkout_over_http(&db.url);
    drop(db);
}

#[test]
fn insecure_dev_serves_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path().join("shop.db").to_str().unwrap(), &["--insecure-dev"], Stdio::null());
    let (status, body) = http(&server, "POST", "/stock/mug/berlin/receipts", "", Some(json!({"quantity": 1})));
    assert_eq!(status, 200, "{body}");
}
