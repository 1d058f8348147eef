//! Carts priced by the server over HTTP: a line takes the catalog's price with its source
//! and guarantee; a client that names a price is refused; a sale in force prices the line;
//! checkout prices again a line whose guarantee ran out, refuses with the changed lines
//! when the total changed (the cart then shows the new prices), and goes through the second
//! time; a draft or archived variant can be neither added nor checked out.

mod common;

use axum::http::{Method, StatusCode};
use common::{eur, App};
use serde_json::json;

async fn carts_are_priced_by_the_server(app: App) {
    let catalog = app.token("catalog").await;
    let shop = app.token("shop,operations").await;
    let products = json!({"product_id": "hoodie", "title": "Hoodie", "tax_class": "standard", "prices_include_tax": true,
        "variants": [{"sku": "hoodie-m", "title": "Hoodie, M", "prices": [eur(10_000)]},
                     {"sku": "hoodie-l", "title": "Hoodie, L", "prices": [eur(10_000)]}]});
    app.ok(Method::POST, "/products", &catalog, Some(products)).await;
    common::pricing(&app, 0).await;
    for sku in ["hoodie-m", "hoodie-l"] {
        let receipt = json!({"quantity": 10});
        app.ok(Method::POST, &format!("/stock/{sku}/berlin/receipts"), &shop, Some(receipt)).await;
    }
    let cart = json!({"cart_id": "c1", "currency": "EUR", "channel": "web",
                      "customer": {"kind": "guest", "email": "ann@example.com"}});
    app.ok(Method::POST, "/carts", &shop, Some(cart)).await;

    // A draft is not for sale; nothing is appended.
    let head = app.store.head().await.unwrap();
    let draft =
        app.call(Method::POST, "/carts/c1/items", Some(&shop), Some(json!({"sku": "hoodie-m", "quantity": 1}))).await;
    assert_eq!(draft.status, StatusCode::CONFLICT, "{}", draft.text);
    assert!(draft.text.contains("hoodie-m") && draft.text.contains("draft"), "{}", draft.text);
    // A SKU nobody sells is not found.
    let unknown =
        app.call(Method::POST, "/carts/c1/items", Some(&shop), Some(json!({"sku": "cape", "quantity": 1}))).await;
    assert_eq!(unknown.status, StatusCode::CONFLICT, "{}", unknown.text);
    assert!(unknown.text.contains("cape"), "{}", unknown.text);
    // The client may not set the price: refused naming the field.
    let priced = json!({"sku": "hoodie-m", "quantity": 1, "unit_price": eur(1)});
    let refused = app.call(Method::POST, "/carts/c1/items", Some(&shop), Some(priced)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert!(refused.text.contains("unit_price"), "{}", refused.text);
    assert_eq!(app.store.head().await.unwrap(), head, "refusals append nothing");

    app.ok(Method::POST, "/products/hoodie/publish", &catalog, None).await;
    // A sale for the web channel, in force now: the line takes its price and names it.
    let sale = json!({"price_list_id": "sale", "name": "Sale", "currency": "EUR", "priority": 5,
                      "tax_inclusive": true, "channel": "web"});
    app.ok(Method::POST, "/price-lists", &catalog, Some(sale)).await;
    let prices = json!({"prices": [{"sku": "hoodie-m", "price": eur(7_000)}]});
    app.ok(Method::PUT, "/price-lists/sale/prices", &catalog, Some(prices)).await;
    for sku in ["hoodie-m", "hoodie-l"] {
        app.ok(Method::POST, "/carts/c1/items", &shop, Some(json!({"sku": sku, "quantity": 1}))).await;
    }
    let cart = app.ok(Method::GET, "/carts/c1", &shop, None).await;
    let (l, m) = (&cart["lines"][0], &cart["lines"][1]);
    assert_eq!((l["sku"].as_str(), m["sku"].as_str()), (Some("hoodie-l"), Some("hoodie-m")));
    assert_eq!(m["unit_price"], eur(7_000));
    assert_eq!(m["pricing"]["source"], json!({"kind": "price_list", "price_list_id": "sale"}));
    assert_eq!(m["pricing"]["title"], "Hoodie, M");
    assert_eq!(l["unit_price"], eur(10_000));
    assert_eq!(l["pricing"]["source"], json!({"kind": "default"}));
    assert!(l["pricing"]["guaranteed_until"].is_string());

    let address = orderlog_domain::testing::address_json();
    app.ok(Method::PUT, "/carts/c1/shipping-address", &shop, Some(address)).await;
    app.ok(Method::PUT, "/carts/c1/shipping-method", &shop, Some(json!({"option_id": "dhl"}))).await;
    let cart = app.ok(Method::GET, "/carts/c1", &shop, None).await;
    assert_eq!((cart["subtotal"].clone(), cart["total"].clone()), (eur(17_000), eur(17_000)), "{cart}");

    // The sale ends; this binary's price guarantee is 0 s, so checkout prices the lines
    // again: the M went from 70.00 to 100.00, the checkout is refused naming it, and nothing
    // but the new price is appended.
    app.ok(Method::POST, "/price-lists/sale/archive", &catalog, None).await;
    let head = app.store.head().await.unwrap();
    let checkout = |key: &'static str| {
        let app = &app;
        let shop = shop.clone();
        async move {
            let body = Some(json!({"order_id": "o1", "location": "berlin"}).to_string());
            app.send(Method::POST, "/carts/c1/checkout", Some(&shop), body, &[("idempotency-key", key)]).await
        }
    };
    let repriced = checkout("first").await;
    assert_eq!(repriced.status, StatusCode::CONFLICT, "{}", repriced.text);
    assert_eq!(repriced.body["type"], "https://orderlog.dev/problems/repriced", "{}", repriced.text);
    assert_eq!(
        repriced.body["repriced"],
        json!([{"sku": "hoodie-m", "old_price": eur(7_000), "new_price": eur(10_000)}]),
        "{}",
        repriced.text
    );
    assert!(repriced.text.contains("hoodie-m from 70.00 EUR to 100.00 EUR"), "{}", repriced.text);
    assert_ne!(app.store.head().await.unwrap(), head);
    let appended = app.store.read_command("tester:first").await.unwrap();
    assert_eq!(appended.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(), ["ItemRepriced"]);
    let head = app.store.head().await.unwrap();
    // A retry of that request gets the same answer and appends nothing.
    let again = checkout("first").await;
    assert_eq!((again.status, again.body["repriced"].clone()), (repriced.status, repriced.body["repriced"].clone()));
    assert_eq!(app.store.head().await.unwrap(), head);
    // The cart shows the new price, and the next checkout pays it.
    let cart = app.ok(Method::GET, "/carts/c1", &shop, None).await;
    assert_eq!(cart["lines"][1]["unit_price"], eur(10_000), "{cart}");
    assert_eq!(cart["lines"][1]["pricing"]["source"], json!({"kind": "default"}), "{cart}");
    assert_eq!(cart["total"], eur(20_000), "{cart}");
    let placed = checkout("second").await;
    assert_eq!(placed.status, StatusCode::OK, "{}", placed.text);
    let position = placed.body["position"].as_u64().unwrap();
    let order = common::order_when_caught_up(&app, &shop, "o1", position).await;
    assert_eq!(order["total"], 20_000, "{order}");
    let cart = app.ok(Method::GET, "/carts/c1", &shop, None).await;
    assert_eq!((cart["status"].as_str(), cart["order_id"].as_str()), (Some("checked_out"), Some("o1")));

    // An archived variant cannot be checked out, and the refusal names it.
    let cart = json!({"cart_id": "c2", "currency": "EUR", "customer": {"kind": "guest", "email": "bo@example.com"}});
    app.ok(Method::POST, "/carts", &shop, Some(cart)).await;
    app.ok(Method::POST, "/carts/c2/items", &shop, Some(json!({"sku": "hoodie-l", "quantity": 1}))).await;
    let address = orderlog_domain::testing::address_json();
    app.ok(Method::PUT, "/carts/c2/shipping-address", &shop, Some(address)).await;
    app.ok(Method::PUT, "/carts/c2/shipping-method", &shop, Some(json!({"option_id": "dhl"}))).await;
    app.ok(Method::POST, "/products/hoodie/variants/hoodie-l/archive", &catalog, None).await;
    let head = app.store.head().await.unwrap();
    let gone = app.call(Method::POST, "/carts/c2/checkout", Some(&shop), Some(json!({"location": "berlin"}))).await;
    assert_eq!(gone.status, StatusCode::CONFLICT, "{}", gone.text);
    assert!(gone.text.contains("hoodie-l") && gone.text.contains("archived"), "{}", gone.text);
    assert_eq!(app.store.head().await.unwrap(), head);
}

/// Every app of this binary guarantees a line's price for 0 s: checkout always prices the
/// lines again (the guarantee itself is tested through the command service's clock).
fn no_guarantee() {
    common::PRICE_TTL_SECONDS.store(0, std::sync::atomic::Ordering::Relaxed);
}

#[tokio::test]
async fn carts_are_priced_by_the_server_on_sqlite() {
    no_guarantee();
    carts_are_priced_by_the_server(App::sqlite().await).await;
}

#[tokio::test]
async fn carts_are_priced_by_the_server_on_postgres() {
    no_guarantee();
    carts_are_priced_by_the_server(App::postgres().await).await;
}
