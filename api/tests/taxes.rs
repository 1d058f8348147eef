//! Taxes, shipping rates and the promotions that act on lines and shipping, over HTTP on
//! SQLite and PostgreSQL: the cart offers only the options its address is served by and
//! prices them by weight and threshold; tax lines per line and for shipping come from the
//! address's region (inclusive prices split, exclusive ones taxed on top, half to even);
//! an option that does not serve the address or an address no tax region covers is a 409
//! naming it, and nothing is appended; per-item, buy-X-get-Y (automatic), customer-group,
//! first-order and tax-exempt customers are priced as their definitions say, and the
//! order keeps every amount.

mod common;

use axum::http::{Method, StatusCode};
use common::{eur, App};
use serde_json::{json, Value};

fn address(country: &str) -> Value {
    let mut address = orderlog_domain::testing::address_json();
    address["country"] = json!(country);
    address
}

async fn taxes_and_shipping_are_the_servers(app: App) {
    let catalog = app.token("catalog").await;
    let shop = app.token("shop,operations").await;
    // A t-shirt priced with tax (20.00) and a book priced without (10.00, reduced rate).
    for (product, class, inclusive, sku, cents, grams) in
        [("tee", "standard", true, "tee-m", 2_000, 200), ("book", "reduced", false, "book-1", 1_000, 800)]
    {
        let body = json!({"product_id": product, "title": product, "tax_class": class, "prices_include_tax": inclusive,
                          "variants": [{"sku": sku, "title": sku, "weight_grams": grams, "prices": [eur(cents)]}]});
        app.ok(Method::POST, "/products", &catalog, Some(body)).await;
        app.ok(Method::POST, &format!("/products/{product}/publish"), &catalog, None).await;
        app.ok(Method::POST, &format!("/stock/{sku}/berlin/receipts"), &shop, Some(json!({"quantity": 100}))).await;
    }
    let germany = json!({"name": "Germany", "rates": {"standard": 1900, "reduced": 700}, "default_class": "standard",
                         "exempt_groups": ["diplomats"]});
    app.ok(Method::PUT, "/tax-regions/DE", &catalog, Some(germany)).await;
    let de = json!({"name": "Germany", "currency": "EUR", "countries": ["DE"], "prices_include_tax": true, "options": [
        {"id": "std", "name": "DHL", "rate": {"kind": "free_above", "price": eur(490), "threshold": eur(5_000)}},
        {"id": "heavy", "name": "DHL Sperrgut", "rate": {"kind": "by_weight", "bands": [
            {"up_to_grams": 1_000, "price": eur(500)}, {"up_to_grams": 2_000, "price": eur(900)}]}},
    ]});
    app.ok(Method::PUT, "/shipping-zones/de", &catalog, Some(de)).await;
    let eu = json!({"name": "Europe", "currency": "EUR", "countries": ["AT"],
                    "options": [{"id": "std", "name": "Post", "rate": {"kind": "flat", "price": eur(990)}}]});
    app.ok(Method::PUT, "/shipping-zones/eu", &catalog, Some(eu)).await;
    // A country has one zone per currency: a second zone claiming it is refused by name.
    let thief = json!({"name": "Other", "currency": "EUR", "countries": ["DE"],
                       "options": [{"id": "x", "name": "X", "rate": {"kind": "flat", "price": eur(1)}}]});
    let taken = app.call(Method::PUT, "/shipping-zones/other", Some(&catalog), Some(thief)).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.text);
    assert!(taken.text.contains("DE (zone de)"), "{}", taken.text);

    // A cart of one t-shirt and one book, shipped to Germany.
    let guest = json!({"kind": "guest", "email": "ann@example.com"});
    app.ok(Method::POST, "/carts", &shop, Some(json!({"cart_id": "c1", "currency": "EUR", "customer": guest}))).await;
    for sku in ["tee-m", "book-1"] {
        app.ok(Method::POST, "/carts/c1/items", &shop, Some(json!({"sku": sku, "quantity": 1}))).await;
    }
    let no_address = app.call(Method::PUT, "/carts/c1/shipping-method", Some(&shop), Some(json!({"option_id": "std"})));
    let no_address = no_address.await;
    assert_eq!(no_address.status, StatusCode::CONFLICT, "{}", no_address.text);
    assert!(no_address.text.contains("address"), "{}", no_address.text);
    app.ok(Method::PUT, "/carts/c1/shipping-address", &shop, Some(address("DE"))).await;
    let cart = app.ok(Method::GET, "/carts/c1", &shop, None).await;
    // 1 000 g: both options, the heavy one by its first band.
    assert_eq!(
        cart["shipping_options"],
        json!([{"zone_id": "de", "option_id": "std", "name": "DHL", "price": eur(490)},
               {"zone_id": "de", "option_id": "heavy", "name": "DHL Sperrgut", "price": eur(500)}]),
        "{cart}"
    );
    // An option of no zone that serves the address, or one with a price of its own: refused.
    let head = app.store.head().await.unwrap();
    let express =
        app.call(Method::PUT, "/carts/c1/shipping-method", Some(&shop), Some(json!({"option_id": "express"})));
    let express = express.await;
    assert_eq!(express.status, StatusCode::CONFLICT, "{}", express.text);
    assert!(express.text.contains("express") && express.text.contains("std, heavy"), "{}", express.text);
    let priced = json!({"option_id": "std", "price": eur(0)});
    let priced = app.call(Method::PUT, "/carts/c1/shipping-method", Some(&shop), Some(priced)).await;
    assert_eq!(priced.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", priced.text);
    assert!(priced.text.contains("price"), "{}", priced.text);
    assert_eq!(app.store.head().await.unwrap(), head, "refusals append nothing");

    app.ok(Method::PUT, "/carts/c1/shipping-method", &shop, Some(json!({"option_id": "std"}))).await;
    let cart = app.ok(Method::GET, "/carts/c1", &shop, None).await;
    // The book (exclusive): 10.00 + 7 % = 0.70 on top. The t-shirt (inclusive): 20.00 holds
    // 16.81 net and 3.19 tax. Shipping 4.90 (inclusive, default class): 4.12 + 0.78.
    let book = &cart["lines"][0];
    assert_eq!(book["tax"]["rate_bps"], 700, "{cart}");
    assert_eq!((book["tax"]["tax"].clone(), book["tax"]["included"].clone()), (eur(70), json!(false)));
    let tee = &cart["lines"][1];
    assert_eq!((tee["tax"]["net"].clone(), tee["tax"]["tax"].clone()), (eur(1_681), eur(319)), "{cart}");
    assert_eq!(cart["shipping_option"]["tax"]["tax"], eur(78), "{cart}");
    assert_eq!(cart["tax"], eur(70 + 319 + 78), "{cart}");
    assert_eq!(cart["tax_included"], eur(319 + 78), "{cart}");
    assert_eq!(cart["total"], eur(2_000 + 1_000 + 70 + 490), "{cart}");

    // Moved to France, which no zone serves; to Austria, whose zone serves but which no
    // tax region covers: each checkout is refused naming the cause, and nothing is appended.
    app.ok(Method::PUT, "/carts/c1/shipping-address", &shop, Some(address("FR"))).await;
    let head = app.store.head().await.unwrap();
    let checkout = json!({"order_id": "o1", "location": "berlin"});
    let france = app.call(Method::POST, "/carts/c1/checkout", Some(&shop), Some(checkout.clone())).await;
    assert_eq!(france.status, StatusCode::CONFLICT, "{}", france.text);
    assert!(france.text.contains("does not serve FR"), "{}", france.text);
    app.ok(Method::PUT, "/carts/c1/shipping-address", &shop, Some(address("AT"))).await;
    app.ok(Method::PUT, "/carts/c1/shipping-method", &shop, Some(json!({"option_id": "std"}))).await;
    let head_at = app.store.head().await.unwrap();
    let austria = app.call(Method::POST, "/carts/c1/checkout", Some(&shop), Some(checkout.clone())).await;
    assert_eq!(austria.status, StatusCode::CONFLICT, "{}", austria.text);
    assert!(austria.text.contains("no tax region is defined for AT"), "{}", austria.text);
    assert_eq!(app.store.head().await.unwrap(), head_at);
    assert_ne!(head, head_at);

    // Back home: the order keeps every line's tax and the totals the cart showed.
    app.ok(Method::PUT, "/carts/c1/shipping-address", &shop, Some(address("DE"))).await;
    app.ok(Method::PUT, "/carts/c1/shipping-method", &shop, Some(json!({"option_id": "std"}))).await;
    let placed = app.ok(Method::POST, "/carts/c1/checkout", &shop, Some(checkout)).await;
    let order = common::order_when_caught_up(&app, &shop, "o1", placed["position"].as_u64().unwrap()).await;
    assert_eq!(order["total"], 3_560, "{order}");
    let events = app.store.read_stream("order-o1", 1, 1).await.unwrap();
    let placed: Value = serde_json::from_str(&events[0].payload).unwrap();
    let lines = &placed["order"]["lines"];
    assert_eq!(lines[0]["tax"]["region"], "DE", "{placed}");
    assert_eq!(lines[1]["tax"]["tax"], eur(319), "{placed}");
    assert_eq!(placed["order"]["totals"]["tax"], eur(467), "{placed}");
    assert_eq!(placed["order"]["shipping"]["option_id"], "std", "{placed}");
}

/// A cart of these items shipped to Germany by `dhl`; then the code applied (its answer),
/// or the cart read.
async fn cart(
    app: &App,
    shop: &str,
    id: &str,
    customer: Value,
    items: &[(&str, u32)],
    code: Option<&str>,
) -> common::Reply {
    app.ok(Method::POST, "/carts", shop, Some(json!({"cart_id": id, "currency": "EUR", "customer": customer}))).await;
    for (sku, quantity) in items {
        app.ok(Method::POST, &format!("/carts/{id}/items"), shop, Some(json!({"sku": sku, "quantity": quantity})))
            .await;
    }
    app.ok(Method::PUT, &format!("/carts/{id}/shipping-address"), shop, Some(address("DE"))).await;
    app.ok(Method::PUT, &format!("/carts/{id}/shipping-method"), shop, Some(json!({"option_id": "dhl"}))).await;
    match code {
        Some(code) => {
            app.call(Method::PUT, &format!("/carts/{id}/discount"), Some(shop), Some(json!({"code": code}))).await
        }
        None => app.call(Method::GET, &format!("/carts/{id}"), Some(shop), None).await,
    }
}

async fn promotions_act_on_lines_and_shipping(app: App) {
    let catalog = app.token("catalog").await;
    let shop = app.token("shop,operations").await;
    for (product, class, inclusive, sku, cents) in
        [("tee", "standard", true, "tee-m", 2_000), ("book", "reduced", false, "book-1", 1_000)]
    {
        let body = json!({"product_id": product, "title": product, "tax_class": class, "prices_include_tax": inclusive,
                          "variants": [{"sku": sku, "title": sku, "prices": [eur(cents)]}]});
        app.ok(Method::POST, "/products", &catalog, Some(body)).await;
        app.ok(Method::POST, &format!("/products/{product}/publish"), &catalog, None).await;
        app.ok(Method::POST, &format!("/stock/{sku}/berlin/receipts"), &shop, Some(json!({"quantity": 100}))).await;
    }
    common::pricing(&app, 490).await;
    let promotions = [
        json!({"code": "TEE5", "kind": {"kind": "fixed_per_item", "amount": eur(500)}, "conditions": {"skus": ["tee-m"]}}),
        json!({"code": "BOOKS-3FOR2", "automatic": true, "kind": {"kind": "buy_x_get_y", "buy": 2, "get": 1},
               "conditions": {"products": ["book"]}}),
        json!({"code": "VIP", "kind": {"kind": "percentage", "basis_points": 1_000}, "conditions": {"customer_group": "vip"}}),
        json!({"code": "FIRST", "kind": {"kind": "free_shipping"}, "conditions": {"first_order": true}}),
    ];
    for promotion in promotions {
        app.ok(Method::POST, "/promotions", &catalog, Some(promotion)).await;
    }
    let guest = json!({"kind": "guest", "email": "ann@example.com"});

    // 5.00 off each t-shirt (only those), and every third book free by itself.
    let applied = cart(&app, &shop, "c1", guest.clone(), &[("tee-m", 1), ("book-1", 3)], Some("TEE5")).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text);
    let c1 = app.ok(Method::GET, "/carts/c1", &shop, None).await;
    assert_eq!(
        c1["promotions"],
        json!([{"code": "BOOKS-3FOR2", "discount": eur(1_000)}, {"code": "TEE5", "discount": eur(500)}]),
        "{c1}"
    );
    assert_eq!((c1["lines"][0]["discount"].clone(), c1["lines"][1]["discount"].clone()), (eur(1_000), eur(500)));
    // Books 20.00 after the free one, +7 % = 1.40; the t-shirt 15.00 with its tax inside;
    // DHL 4.90.
    assert_eq!(c1["total"], eur(2_000 + 140 + 1_500 + 490), "{c1}");
    let placed = app.ok(Method::POST, "/carts/c1/checkout", &shop, Some(json!({"location": "berlin"}))).await;
    let order_id = placed["order_id"].as_str().unwrap();
    common::order_when_caught_up(&app, &shop, order_id, placed["position"].as_u64().unwrap()).await;
    // Neither has limits: their uses are the orders', and the report counts them.
    let books = app.ok(Method::GET, "/promotions/BOOKS-3FOR2", &shop, None).await;
    assert!(books["uses"].is_null(), "{books}");
    let top = app.ok(Method::GET, "/reports/top-promotions", &shop, None).await;
    assert_eq!(
        top,
        json!([{"code": "BOOKS-3FOR2", "currency": "EUR", "uses": 1, "discount": 1_000},
               {"code": "TEE5", "currency": "EUR", "uses": 1, "discount": 500}]),
        "{top}"
    );

    // A group's promotion names the group to a guest; a member gets it, and a diplomat pays
    // no tax (the inclusive price holds none).
    let refused = cart(&app, &shop, "c2", guest.clone(), &[("tee-m", 1)], Some("VIP")).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(refused.text.contains("only for customers in the group 'vip'"), "{}", refused.text);
    for group in ["vip", "diplomats"] {
        app.ok(Method::PUT, &format!("/customers/r1/groups/{group}"), &catalog, None).await;
    }
    let r1 = json!({"kind": "registered", "customer_id": "r1", "email": "r1@example.com"});
    let applied = cart(&app, &shop, "c3", r1, &[("tee-m", 1)], Some("VIP")).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text);
    let c3 = app.ok(Method::GET, "/carts/c3", &shop, None).await;
    assert_eq!(c3["lines"][0]["discount"], eur(200), "{c3}");
    assert_eq!((c3["tax"].clone(), c3["lines"][0]["tax"]["exempt"].clone()), (eur(0), json!(true)), "{c3}");
    assert_eq!(c3["total"], eur(1_800 + 490), "{c3}");

    // Free shipping on a registered customer's first order only.
    let r2 = json!({"kind": "registered", "customer_id": "r2", "email": "r2@example.com"});
    let guest_first = cart(&app, &shop, "c4", guest, &[("book-1", 1)], Some("FIRST")).await;
    assert_eq!(guest_first.status, StatusCode::CONFLICT, "{}", guest_first.text);
    assert!(guest_first.text.contains("guest"), "{}", guest_first.text);
    let first = cart(&app, &shop, "c5", r2.clone(), &[("book-1", 1)], Some("FIRST")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let c5 = app.ok(Method::GET, "/carts/c5", &shop, None).await;
    assert_eq!((c5["shipping"].clone(), c5["shipping_option"]["discount"].clone()), (eur(490), eur(490)), "{c5}");
    assert_eq!(c5["total"], eur(1_000 + 70), "{c5}");
    app.ok(Method::POST, "/carts/c5/checkout", &shop, Some(json!({"location": "berlin"}))).await;
    let second = cart(&app, &shop, "c6", r2, &[("book-1", 1)], Some("FIRST")).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text);
    assert!(second.text.contains("this customer has placed 1"), "{}", second.text);

    // A price list for a customer group prices its members' lines, and no one else's.
    let members = json!({"price_list_id": "vip-prices", "name": "VIP", "currency": "EUR", "tax_inclusive": true,
                         "customer_group": "vip"});
    app.ok(Method::POST, "/price-lists", &catalog, Some(members)).await;
    let prices = json!({"prices": [{"sku": "tee-m", "price": eur(1_500)}]});
    app.ok(Method::PUT, "/price-lists/vip-prices/prices", &catalog, Some(prices)).await;
    let r1 = json!({"kind": "registered", "customer_id": "r1", "email": "r1@example.com"});
    let member = cart(&app, &shop, "c7", r1, &[("tee-m", 1)], None).await;
    assert_eq!(member.body["lines"][0]["unit_price"], eur(1_500), "{}", member.text);
    assert_eq!(member.body["lines"][0]["pricing"]["source"]["price_list_id"], "vip-prices", "{}", member.text);
    let stranger =
        cart(&app, &shop, "c8", json!({"kind": "guest", "email": "x@example.com"}), &[("tee-m", 1)], None).await;
    assert_eq!(stranger.body["lines"][0]["unit_price"], eur(2_000), "{}", stranger.text);
    let quoted = app.ok(Method::GET, "/products/tee?currency=EUR&group=vip", &shop, None).await;
    assert_eq!(quoted["variants"][0]["price"]["unit_price"], eur(1_500), "{quoted}");
}

/// A cart of what ships nothing (a gift card) needs no shipping and is taxed where its
/// billing address is: here a subdivision's region (US-CA) over its country's.
async fn what_ships_nothing_is_taxed_by_the_billing_address(app: App) {
    let catalog = app.token("catalog").await;
    let shop = app.token("shop,operations").await;
    let gift = json!({"product_id": "gift", "title": "Gift card", "tax_class": "standard",
                      "variants": [{"sku": "gift-50", "title": "Gift card 50", "requires_shipping": false,
                                    "prices": [eur(5_000)]}]});
    app.ok(Method::POST, "/products", &catalog, Some(gift)).await;
    app.ok(Method::POST, "/products/gift/publish", &catalog, None).await;
    app.ok(Method::POST, "/stock/gift-50/berlin/receipts", &shop, Some(json!({"quantity": 10}))).await;
    for (region, rate) in [("US", 0), ("US-CA", 725)] {
        let body = json!({"name": region, "rates": {"standard": rate}, "default_class": "standard"});
        app.ok(Method::PUT, &format!("/tax-regions/{region}"), &catalog, Some(body)).await;
    }
    let guest = json!({"kind": "guest", "email": "ann@example.com"});
    app.ok(Method::POST, "/carts", &shop, Some(json!({"cart_id": "g1", "currency": "EUR", "customer": guest}))).await;
    app.ok(Method::POST, "/carts/g1/items", &shop, Some(json!({"sku": "gift-50", "quantity": 1}))).await;
    let head = app.store.head().await.unwrap();
    let checkout = json!({"order_id": "og1", "location": "berlin"});
    let unbilled = app.call(Method::POST, "/carts/g1/checkout", Some(&shop), Some(checkout.clone())).await;
    assert_eq!(unbilled.status, StatusCode::CONFLICT, "{}", unbilled.text);
    assert!(unbilled.text.contains("billing_address"), "{}", unbilled.text);
    assert_eq!(app.store.head().await.unwrap(), head);
    let mut billing = address("US");
    billing["subdivision"] = json!("CA");
    app.ok(Method::PUT, "/carts/g1/billing-address", &shop, Some(billing)).await;
    let cart = app.ok(Method::GET, "/carts/g1", &shop, None).await;
    assert_eq!((cart["shipping_options"].clone(), cart["shipping_option"].clone()), (json!([]), Value::Null));
    assert_eq!(cart["lines"][0]["tax"]["region"], "US-CA", "{cart}");
    // 50.00 without tax, 7.25 % on top: 3.625 → 3.62 (half to even).
    assert_eq!((cart["tax"].clone(), cart["total"].clone()), (eur(362), eur(5_362)), "{cart}");
    let placed = app.ok(Method::POST, "/carts/g1/checkout", &shop, Some(checkout)).await;
    let order = common::order_when_caught_up(&app, &shop, "og1", placed["position"].as_u64().unwrap()).await;
    assert_eq!(order["total"], 5_362, "{order}");
}

#[tokio::test]
async fn what_ships_nothing_is_taxed_by_the_billing_address_on_sqlite() {
    what_ships_nothing_is_taxed_by_the_billing_address(App::sqlite().await).await;
}

#[tokio::test]
async fn what_ships_nothing_is_taxed_by_the_billing_address_on_postgres() {
    what_ships_nothing_is_taxed_by_the_billing_address(App::postgres().await).await;
}

#[tokio::test]
async fn taxes_and_shipping_are_the_servers_on_sqlite() {
    taxes_and_shipping_are_the_servers(App::sqlite().await).await;
}

#[tokio::test]
async fn taxes_and_shipping_are_the_servers_on_postgres() {
    taxes_and_shipping_are_the_servers(App::postgres().await).await;
}

#[tokio::test]
async fn promotions_act_on_lines_and_shipping_on_sqlite() {
    promotions_act_on_lines_and_shipping(App::sqlite().await).await;
}

#[tokio::test]
async fn promotions_act_on_lines_and_shipping_on_postgres() {
    promotions_act_on_lines_and_shipping(App::postgres().await).await;
}
