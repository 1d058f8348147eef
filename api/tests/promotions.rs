//! Promotions over HTTP: a code the server defines, its conditions named when unmet, and
//! its usage limits never exceeded — a coupon limited to 10 uses, 100 concurrent checkouts
//! of carts carrying it: exactly 10 orders carry it, the other 90 are refused naming it,
//! on SQLite and PostgreSQL.

mod common;

use axum::http::{Method, StatusCode};
use common::{eur, fill_cart, App};
use serde_json::json;

async fn promotions_keep_their_limits(app: App) {
    let catalog = app.token("catalog").await;
    let shop = app.token("shop,operations").await;
    app.ok(Method::POST, "/stock/mug/berlin/receipts", &shop, Some(json!({"quantity": 1_000}))).await;

    // The client names a code, never an amount: a body with a discount of its own is refused.
    fill_cart(&app, &shop, "probe", 1).await;
    let own = json!({"discount": {"code": "FREE", "kind": {"kind": "percentage", "basis_points": 10_000}}});
    let refused = app.call(Method::PUT, "/carts/probe/discount", Some(&shop), Some(own)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    let unknown = app.call(Method::PUT, "/carts/probe/discount", Some(&shop), Some(json!({"code": "FREE"}))).await;
    assert_eq!(unknown.status, StatusCode::CONFLICT, "{}", unknown.text);
    assert!(unknown.text.contains("FREE"), "{}", unknown.text);

    // Conditions are named when unmet: a least subtotal, a window not yet open.
    let big = json!({"code": "BIG20", "kind": {"kind": "percentage", "basis_points": 2_000},
                     "conditions": {"min_subtotal": eur(5_000)}});
    app.ok(Method::POST, "/promotions", &catalog, Some(big)).await;
    let small = app.call(Method::PUT, "/carts/probe/discount", Some(&shop), Some(json!({"code": "BIG20"}))).await;
    assert_eq!(small.status, StatusCode::CONFLICT, "{}", small.text);
    assert!(small.text.contains("at least 50.00 EUR") && small.text.contains("9.00 EUR"), "{}", small.text);
    let later = json!({"code": "NEXTYEAR", "kind": {"kind": "fixed_per_order", "amount": eur(100)},
                       "conditions": {"starts_at": "2099-01-01T00:00:00Z"}});
    app.ok(Method::POST, "/promotions", &catalog, Some(later)).await;
    let early = app.call(Method::PUT, "/carts/probe/discount", Some(&shop), Some(json!({"code": "NEXTYEAR"}))).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.text);
    assert!(early.text.contains("not valid before 2099"), "{}", early.text);

    // One use per customer: the same guest cannot use it twice.
    let once =
        json!({"code": "ONCE", "kind": {"kind": "fixed_per_order", "amount": eur(100)}, "per_customer_limit": 1});
    app.ok(Method::POST, "/promotions", &catalog, Some(once)).await;
    for (cart, expected) in [("once-1", StatusCode::OK), ("once-2", StatusCode::CONFLICT)] {
        fill_cart(&app, &shop, cart, 1).await;
        app.ok(Method::PUT, &format!("/carts/{cart}/discount"), &shop, Some(json!({"code": "ONCE"}))).await;
        let body = json!({"order_id": format!("o-{cart}"), "location": "berlin"});
        let reply = app.call(Method::POST, &format!("/carts/{cart}/checkout"), Some(&shop), Some(body)).await;
        assert_eq!(reply.status, expected, "{cart}: {}", reply.text);
        if expected == StatusCode::CONFLICT {
            assert!(reply.text.contains("used it 1 of 1 times"), "{}", reply.text);
        }
    }

    // Ten uses, a hundred carts: exactly ten orders carry the coupon.
    let limited = json!({"code": "TEN", "kind": {"kind": "percentage", "basis_points": 1_000}, "usage_limit": 10});
    app.ok(Method::POST, "/promotions", &catalog, Some(limited)).await;
    for n in 0..100 {
        let cart = format!("race-{n}");
        fill_cart(&app, &shop, &cart, 1).await;
        // Each a customer of its own, so only the total limit binds.
        let contact = json!({"email": format!("shopper{n}@example.com")});
        app.ok(Method::PUT, &format!("/carts/{cart}/contact"), &shop, Some(contact)).await;
        app.ok(Method::PUT, &format!("/carts/{cart}/discount"), &shop, Some(json!({"code": "TEN"}))).await;
    }
    // All at once: the checkouts interleave at every database call.
    let checkouts = (0..100).map(|n| {
        let body = json!({"order_id": format!("race-o{n}"), "location": "berlin"});
        let (app, shop) = (&app, &shop);
        async move { app.call(Method::POST, &format!("/carts/race-{n}/checkout"), Some(shop), Some(body)).await }
    });
    let (mut placed, mut refused) = (0, 0);
    for reply in futures_util::future::join_all(checkouts).await {
        match reply.status {
            StatusCode::OK => placed += 1,
            StatusCode::CONFLICT => {
                assert!(reply.text.contains("promotion TEN: used up (10 of 10 uses)"), "{}", reply.text);
                refused += 1;
            }
            other => panic!("{other}: {}", reply.text),
        }
    }
    assert_eq!((placed, refused), (10, 90));
    let promotion = app.ok(Method::GET, "/promotions/TEN", &shop, None).await;
    assert_eq!(promotion["uses"], 10, "{promotion}");
    assert!(promotion.get("uses_by_customer").is_none(), "who used it is not shown: {promotion}");
    let stream = app.store.read_stream("promotion-TEN", 1, 1_000).await.unwrap();
    let redeemed = stream.iter().filter(|e| e.event_type == "PromotionRedeemed").count();
    assert_eq!(redeemed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotions_keep_their_limits_on_sqlite() {
    promotions_keep_their_limits(App::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotions_keep_their_limits_on_postgres() {
    promotions_keep_their_limits(App::postgres().await).await;
}
