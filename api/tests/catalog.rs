//! The catalog over HTTP: products with variants and default prices, price lists with a
//! sale window, the price each context gets and where it comes from, and bad input refused
//! by name with nothing appended.

mod common;

use axum::http::{Method, StatusCode};
use common::{eur, App};
use serde_json::{json, Value};

async fn catalog_is_managed_over_http(app: App) {
    let catalog = app.token("catalog").await;
    let shop = app.token("shop").await;

    // A shop token may read but not change the catalog.
    let body = json!({"product_id": "hoodie", "title": "Hoodie", "tax_class": "standard"});
    let refused = app.call(Method::POST, "/products", Some(&shop), Some(body.clone())).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);

    let variants = json!([
        {"sku": "hoodie-m", "title": "Hoodie, M", "options": {"size": "M"}, "weight_grams": 600, "prices": [eur(10_000)]},
        {"sku": "hoodie-l", "title": "Hoodie, L", "options": {"size": "L"}, "weight_grams": 650, "prices": [eur(10_000)]},
    ]);
    let body = json!({"product_id": "hoodie", "title": "Hoodie", "tax_class": "standard",
                      "prices_include_tax": true, "variants": variants});
    let created = app.ok(Method::POST, "/products", &catalog, Some(body)).await;
    // The product, its two variants, a claim on each SKU, and its place in the catalog.
    assert_eq!(created["events_appended"], 6, "{created}");

    // A draft is not for sale.
    let draft = app.ok(Method::GET, "/products/hoodie?currency=EUR", &shop, None).await;
    assert_eq!(draft["status"], "draft");
    assert!(draft["variants"][0]["not_for_sale"].as_str().unwrap().contains("draft"), "{draft}");
    assert!(draft["variants"][0]["price"].is_null());

    app.ok(Method::POST, "/products/hoodie/publish", &catalog, None).await;
    let product = app.ok(Method::GET, "/products/hoodie?currency=EUR", &shop, None).await;
    let m = &product["variants"][1];
    assert_eq!(m["sku"], "hoodie-m");
    assert_eq!(m["price"]["unit_price"], eur(10_000));
    assert_eq!(m["price"]["source"], json!({"kind": "default"}));
    assert_eq!(m["price"]["tax_inclusive"], true);
    assert_eq!(m["available"], 0);

    // Another product cannot take a SKU that is already sold; nothing of it is stored.
    let thief = json!({"product_id": "fake", "title": "Fake", "tax_class": "standard",
                       "variants": [{"sku": "hoodie-m", "title": "Fake M", "prices": [eur(1)]}]});
    let taken = app.call(Method::POST, "/products", Some(&catalog), Some(thief)).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.text);
    assert!(taken.text.contains("hoodie-m") && taken.text.contains("product hoodie"), "{}", taken.text);
    let none = app.call(Method::GET, "/products/fake", Some(&shop), None).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{}", none.text);

    // A weekend sale for the web channel, from Friday 00:00 to Tuesday 00:00.
    let sale = json!({"price_list_id": "black-weekend", "name": "Black weekend", "currency": "EUR",
                      "priority": 10, "tax_inclusive": true, "channel": "web",
                      "starts_at": "2026-11-27T00:00:00Z", "ends_at": "2026-12-01T00:00:00Z"});
    app.ok(Method::POST, "/price-lists", &catalog, Some(sale)).await;
    let prices = json!({"prices": [{"sku": "hoodie-m", "price": eur(7_000)}]});
    app.ok(Method::PUT, "/price-lists/black-weekend/prices", &catalog, Some(prices)).await;
    // A price in another currency is refused, naming the SKU and both currencies.
    let usd = json!({"prices": [{"sku": "hoodie-l", "price": {"amount": 7_000, "currency": "USD"}}]});
    let wrong = app.call(Method::PUT, "/price-lists/black-weekend/prices", Some(&catalog), Some(usd)).await;
    assert_eq!(wrong.status, StatusCode::CONFLICT, "{}", wrong.text);
    assert!(
        wrong.text.contains("hoodie-l") && wrong.text.contains("USD") && wrong.text.contains("EUR"),
        "{}",
        wrong.text
    );

    let at = |when: &str, channel: &str| format!("/products/hoodie?currency=EUR&channel={channel}&at={when}");
    let before = app.ok(Method::GET, &at("2026-11-26T23:59:59Z", "web"), &shop, None).await;
    assert_eq!(before["variants"][1]["price"]["unit_price"], eur(10_000));
    let during = app.ok(Method::GET, &at("2026-11-27T00:00:00Z", "web"), &shop, None).await;
    assert_eq!(during["variants"][1]["price"]["unit_price"], eur(7_000));
    assert_eq!(
        during["variants"][1]["price"]["source"],
        json!({"kind": "price_list", "price_list_id": "black-weekend"})
    );
    // The L variant has no sale price: its default stands.
    assert_eq!(during["variants"][0]["price"]["unit_price"], eur(10_000));
    let other_channel = app.ok(Method::GET, &at("2026-11-28T12:00:00Z", "app"), &shop, None).await;
    assert_eq!(other_channel["variants"][1]["price"]["unit_price"], eur(10_000));
    let after = app.ok(Method::GET, &at("2026-12-01T00:00:00Z", "web"), &shop, None).await;
    assert_eq!(after["variants"][1]["price"]["unit_price"], eur(10_000));
    let blank = app.call(Method::GET, "/products/hoodie?currency=EUR&channel=%20", Some(&shop), None).await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST, "{}", blank.text);
    assert!(blank.text.contains("channel"), "{}", blank.text);
    // No price in a currency it is not sold in.
    let yen = app.ok(Method::GET, "/products/hoodie?currency=JPY", &shop, None).await;
    assert!(yen["variants"][0]["not_for_sale"].as_str().unwrap().contains("no price in JPY"), "{yen}");

    let list = app.ok(Method::GET, "/price-lists/black-weekend", &shop, None).await;
    assert_eq!(list["prices"]["hoodie-m"], eur(7_000));
    assert_eq!(list["rules"]["channel"], "web");

    // Archiving a variant takes it off sale; an archived product can no longer change.
    app.ok(Method::POST, "/products/hoodie/variants/hoodie-l/archive", &catalog, None).await;
    let product = app.ok(Method::GET, "/products/hoodie?currency=EUR", &shop, None).await;
    assert!(product["variants"][0]["not_for_sale"].as_str().unwrap().contains("archived"), "{product}");
    app.ok(Method::POST, "/products/hoodie/archive", &catalog, None).await;
    let late = app.call(Method::PATCH, "/products/hoodie", Some(&catalog), Some(json!({"title": "Old hoodie"}))).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.text);
    assert!(late.text.contains("archived"), "{}", late.text);

    // Bad input is named: a blank title, two prices in one currency, an end before the start.
    let blank = json!({"title": " ", "tax_class": "standard"});
    let reply = app.call(Method::POST, "/products", Some(&catalog), Some(blank)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text);
    assert!(reply.text.contains("title"), "{}", reply.text);
    app.ok(
        Method::POST,
        "/products",
        &catalog,
        Some(json!({"product_id": "mug", "title": "Mug", "tax_class": "reduced"})),
    )
    .await;
    let twice = json!({"variant": {"sku": "mug-1", "title": "Mug", "prices": [eur(1), eur(2)]}});
    let reply = app.call(Method::POST, "/products/mug/variants", Some(&catalog), Some(twice)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(reply.text.contains("two prices in EUR"), "{}", reply.text);
    let backwards = json!({"name": "never", "currency": "EUR", "starts_at": "2026-12-02T00:00:00Z", "ends_at": "2026-12-01T00:00:00Z"});
    let reply = app.call(Method::POST, "/price-lists", Some(&catalog), Some(backwards)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text);
    assert!(reply.text.contains("ends_at"), "{}", reply.text);
    let mug = app.ok(Method::GET, "/products/mug", &shop, None).await;
    assert_eq!(mug["variants"], json!([]), "nothing of the refused variant is stored");

    // The catalog lists every product in the order they were made, priced as asked, in
    // pages; by status.
    let all = app.ok(Method::GET, "/products?currency=EUR&limit=1", &shop, None).await;
    assert_eq!((all["total"].as_u64(), all["next_offset"].as_u64()), (Some(2), Some(1)), "{all}");
    assert_eq!(all["products"][0]["product_id"], "hoodie");
    assert!(all["products"][0]["variants"][1]["not_for_sale"].as_str().unwrap().contains("archived"), "{all}");
    let next = app.ok(Method::GET, "/products?offset=1", &shop, None).await;
    assert_eq!(next["products"][0]["product_id"], "mug");
    assert!(next["next_offset"].is_null(), "{next}");
    let drafts = app.ok(Method::GET, "/products?status=draft", &shop, None).await;
    assert_eq!(drafts["total"], 1);
    assert_eq!(drafts["products"][0]["product_id"], "mug");
    // An offset past any catalog is an empty page (it overflowed once: the fuzzer found it).
    let far = app.ok(Method::GET, "/products?offset=18446744073709551615&limit=1", &shop, None).await;
    assert_eq!((far["products"].clone(), far["next_offset"].clone()), (json!([]), Value::Null), "{far}");
    let odd = app.call(Method::GET, "/products?status=sold", Some(&shop), None).await;
    assert_eq!(odd.status, StatusCode::BAD_REQUEST, "{}", odd.text);
    assert!(odd.text.contains("status"), "{}", odd.text);
}

#[tokio::test]
async fn catalog_is_managed_over_http_on_sqlite() {
    catalog_is_managed_over_http(App::sqlite().await).await;
}

#[tokio::test]
async fn catalog_is_managed_over_http_on_postgres() {
    catalog_is_managed_over_http(App::postgres().await).await;
}
