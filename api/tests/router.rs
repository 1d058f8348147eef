//! The real router, driven through `oneshot`, over a real SQLite store (and PostgreSQL for
//! the flow): every route, each scope boundary, the order cache, and the OpenAPI document
//! against the routes (errors and idempotent retries: `errors.rs`).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use orderlog_api::auth::Scope;
use serde_json::{json, Value};
use tower::ServiceExt;

use common::*;

/// Every command and read route in one shop's day.
async fn a_day_at_the_shop(app: App) {
    let all = app.token("shop,operations,audit,analytics,admin").await;
    let t = all.as_str();
    for (path, body) in [
        ("/stock/mug/berlin/receipts", json!({"quantity": 10, "reference": "DN-1"})),
        ("/stock/tea/berlin/receipts", json!({"quantity": 5})),
        ("/stock/mug/berlin/adjustments", json!({"delta": -1, "reason": "damage"})),
        ("/stock/mug/berlin/incoming", json!({"quantity": 20})),
    ] {
        app.ok(Method::POST, path, t, Some(body)).await;
    }
    app.ok(Method::PUT, "/stock/mug/berlin/safety-stock", t, Some(json!({"quantity": 1}))).await;
    app.ok(Method::PUT, "/stock/tea/berlin/backorders", t, Some(json!({"allowed": false}))).await;

    fill_cart(&app, t, "c1", 3).await;
    app.ok(Method::POST, "/carts/c1/items", t, Some(json!({"sku": "tea", "quantity": 1}))).await;
    app.ok(Method::PATCH, "/carts/c1/items/mug", t, Some(json!({"quantity": 2}))).await;
    app.ok(Method::DELETE, "/carts/c1/items/tea", t, None).await;
    let spring = json!({"code": "SPRING", "kind": {"kind": "percentage", "basis_points": 1000}});
    app.ok(Method::POST, "/promotions", &app.token("catalog").await, Some(spring)).await;
    app.ok(Method::PUT, "/carts/c1/discount", t, Some(json!({"code": "SPRING"}))).await;
    let cart = app.ok(Method::GET, "/carts/c1", t, None).await;
    assert_eq!((cart["discount_code"].as_str(), cart["discount"]["amount"].as_i64()), (Some("SPRING"), Some(180)));
    app.ok(Method::DELETE, "/carts/c1/discount", t, None).await;
    app.ok(Method::PUT, "/carts/c1/contact", t, Some(json!({"email": "ann@example.org"}))).await;
    let placed =
        app.ok(Method::POST, "/carts/c1/checkout", t, Some(json!({"order_id": "o1", "location": "berlin"}))).await;
    assert_eq!(placed["order_id"], "o1");
    let position = placed["position"].as_u64().unwrap();
    let order = order_when_caught_up(&app, t, "o1", position).await;
    assert_eq!((order["state"].as_str(), order["total"].as_i64()), (Some("placed"), Some(2 * 900 + 490)));
    assert_eq!(order["email"], "ann@example.org");
    assert_eq!(order["timeline"][0]["actor"], "tester", "the token's principal is the actor");

    let total = eur(2 * 900 + 490);
    let pay = |body: Value| async { app.ok(Method::POST, "/orders/o1/payments", t, Some(body)).await };
    pay(json!({"type": "authorized", "amount": total, "provider_ref": "pi_1", "provider_event_id": "evt_1"})).await;
    pay(json!({"type": "failed", "reason": "card declined on retry", "provider_event_id": "evt_2"})).await;
    let lines = json!([{"sku": "mug", "quantity": 2}]);
    app.ok(
        Method::POST,
        "/shipments",
        t,
        Some(json!({"shipment_id": "s1", "order_id": "o1", "location": "berlin", "lines": lines})),
    )
    .await;
    app.ok(Method::POST, "/shipments/s1/pack", t, None).await;
    // A held order does not ship until its hold is released.
    let held = app.ok(Method::POST, "/orders/o1/hold", t, Some(json!({"reason": "address check"}))).await;
    let order = order_when_caught_up(&app, t, "o1", held["position"].as_u64().unwrap()).await;
    assert_eq!((order["hold"].as_str(), order["fulfilment_status"].as_str()), (Some("address check"), Some("on_hold")));
    let carrier = json!({"carrier": "DHL", "tracking_number": "T1"});
    let refused = app.call(Method::POST, "/shipments/s1/ship", Some(t), Some(carrier.clone())).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(refused.body["detail"].as_str().unwrap().contains("on hold (address check)"), "{}", refused.text);
    let again = app.call(Method::POST, "/orders/o1/hold", Some(t), Some(json!({"reason": "twice"}))).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    let released = app.ok(Method::POST, "/orders/o1/release-hold", t, None).await;
    let order = order_when_caught_up(&app, t, "o1", released["position"].as_u64().unwrap()).await;
    assert_eq!((order["hold"].as_str(), order["fulfilment_status"].as_str()), (None, Some("unfulfilled")));
    let not_held = app.call(Method::POST, "/orders/o1/release-hold", Some(t), None).await;
    assert_eq!(not_held.status, StatusCode::CONFLICT, "{}", not_held.text);
    app.ok(Method::POST, "/shipments/s1/ship", t, Some(carrier)).await;
    pay(json!({"type": "captured", "amount": total, "provider_event_id": "evt_3"})).await;
    app.ok(Method::POST, "/shipments/s1/delivery-failed", t, Some(json!({"reason": "nobody home"}))).await;
    app.ok(Method::POST, "/shipments/s1/deliver", t, Some(json!({"event_id": "dhl-9"}))).await;
    app.ok(Method::POST, "/orders/o1/complete", t, None).await;
    let ret = json!({"return_id": "r1", "lines": [{"sku": "mug", "quantity": 1}], "reason": "chipped"});
    app.ok(Method::POST, "/orders/o1/returns", t, Some(ret)).await;
    let received = json!({"lines": [{"sku": "mug", "quantity": 1, "restock": true}]});
    app.ok(Method::POST, "/orders/o1/returns/r1/receive", t, Some(received)).await;
    let refunded = app
        .ok(
            Method::POST,
            "/orders/o1/payments",
            t,
            Some(json!({"type": "refunded", "amount": eur(900), "provider_event_id": "evt_4"})),
        )
        .await;

    fill_cart(&app, t, "c2", 1).await;
    app.ok(Method::POST, "/carts/c2/checkout", t, Some(json!({"order_id": "o2", "location": "berlin"}))).await;
    let auth =
        json!({"type": "authorized", "amount": eur(900 + 490), "provider_ref": "pi_2", "provider_event_id": "evt_6"});
    app.ok(Method::POST, "/orders/o2/payments", t, Some(auth)).await;
    app.ok(Method::POST, "/orders/o2/cancel", t, Some(json!({"reason": "changed mind"}))).await;
    let void = json!({"type": "voided", "provider_event_id": "evt_5"});
    let o2 = app.ok(Method::POST, "/orders/o2/payments", t, Some(void)).await;
    fill_cart(&app, t, "c3", 1).await;
    app.ok(Method::POST, "/carts/c3/checkout", t, Some(json!({"order_id": "o3", "location": "berlin"}))).await;
    let auth =
        json!({"type": "authorized", "amount": eur(900 + 490), "provider_ref": "pi_3", "provider_event_id": "evt_7"});
    app.ok(Method::POST, "/orders/o3/payments", t, Some(auth)).await;
    let lines = json!([{"sku": "mug", "quantity": 1}]);
    app.ok(
        Method::POST,
        "/shipments",
        t,
        Some(json!({"shipment_id": "s3", "order_id": "o3", "location": "berlin", "lines": lines})),
    )
    .await;
    let last = app.ok(Method::POST, "/shipments/s3/cancel", t, Some(json!({"reason": "address check"}))).await;

    // Reads, once the read models have folded the whole day (lists cannot wait for a
    // position themselves; on PostgreSQL the projector may still be a commit behind).
    let last = last["position"].as_u64().unwrap();
    order_when_caught_up(&app, t, "o3", last).await;
    let o1 = order_when_caught_up(&app, t, "o1", refunded["position"].as_u64().unwrap()).await;
    assert_eq!(
        (o1["state"].as_str(), o1["payment_status"].as_str(), o1["fulfilment_status"].as_str()),
        (Some("completed"), Some("partially_refunded"), Some("delivered"))
    );
    let o2 = order_when_caught_up(&app, t, "o2", o2["position"].as_u64().unwrap()).await;
    assert_eq!(o2["state"], "cancelled");
    let page = app.ok(Method::GET, "/orders?limit=2", t, None).await;
    assert_eq!(page["orders"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_string();
    let rest = app.ok(Method::GET, &format!("/orders?limit=2&after={next}"), t, None).await;
    let ids: Vec<&str> = page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["orders"].as_array().unwrap())
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["o1", "o2", "o3"], "cursor pagination neither skips nor repeats");
    assert_eq!(rest["next"], Value::Null);
    let cancelled = app.ok(Method::GET, "/orders?state=cancelled&customer=guest", t, None).await;
    assert_eq!(cancelled["orders"].as_array().unwrap().len(), 1);
    let mug = app.ok(Method::GET, &format!("/inventory/skus/mug?wait_for={last}&timeout_ms=10000"), t, None).await;
    // 10 received, 1 damaged, 2 shipped, 1 returned and restocked, o3's unit released.
    assert_eq!(mug["on_hand"], 10 - 1 - 2 + 1);
    assert_eq!(mug["locations"].as_array().unwrap().len(), 1);
    let berlin = app.ok(Method::GET, "/inventory/locations/berlin", t, None).await;
    assert_eq!(berlin["items"].as_array().unwrap().len(), 2);
    let today = chrono::Utc::now().date_naive();
    let sales = app.ok(Method::GET, &format!("/reports/sales?from={today}&to={today}&currency=EUR"), t, None).await;
    assert_eq!(sales[0]["orders"], 3);
    assert_eq!(sales[0]["refunds"], 900);
    let top = app.ok(Method::GET, "/reports/top-skus?currency=EUR", t, None).await;
    assert_eq!(top[0]["sku"], "mug");
    let history = app.ok(Method::GET, "/streams/order-o1", t, None).await;
    assert_eq!(history["events"][0]["type"], "OrderPlaced");
    assert_eq!(history["events"][0]["metadata"]["actor"], "tester");
    assert_eq!(history["version"], history["events"].as_array().unwrap().len());

    // The feed, page by page, equals the log; the live feed resumes from a cursor.
    let mut after = String::new();
    let mut fed = Vec::new();
    loop {
        let path =
            if after.is_empty() { "/events?limit=7".to_string() } else { format!("/events?limit=7&after={after}") };
        let reply = app.send(Method::GET, &path, Some(t), None, &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["content-type"], "application/x-ndjson");
        let lines: Vec<Value> = reply.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.is_empty() {
            break;
        }
        after = reply.headers["orderlog-next-after"].to_str().unwrap().to_string();
        assert_eq!(lines.last().unwrap()["cursor"], after.as_str());
        fed.extend(lines.iter().map(|l| l["position"].as_u64().unwrap()));
    }
    let logged: Vec<u64> = app
        .store
        .read_all(orderlog_store::LogCursor::START, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(fed, logged);
    live_feed_resumes(&app, t, &logged).await;

    let tokens = app.ok(Method::GET, "/tokens", t, None).await;
    assert!(tokens.as_array().unwrap().iter().all(|t| t.get("token").is_none() && t.get("token_sha256").is_none()));
    let made =
        app.call(Method::POST, "/tokens", Some(t), Some(json!({"principal": "bi", "scopes": ["analytics"]}))).await;
    assert_eq!(made.status, StatusCode::CREATED);
    let bi = made.body["token"].as_str().unwrap().to_string();
    app.ok(Method::GET, "/reports/top-skus", &bi, None).await;
    let id = made.body["id"].as_str().unwrap();
    let revoked = app.call(Method::DELETE, &format!("/tokens/{id}"), Some(t), None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(app.call(Method::GET, "/reports/top-skus", Some(&bi), None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.call(Method::DELETE, "/tokens/nope", Some(t), None).await.status, StatusCode::NOT_FOUND);

    assert_eq!(app.call(Method::GET, "/health", None, None).await.body["status"], "ok");
    let ready = app.call(Method::GET, "/ready", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let metrics = app.call(Method::GET, "/metrics", None, None).await.text;
    assert!(metrics.contains("orderlog_http_request_duration_seconds_bucket{method=\"POST\",route=\"/carts/{cart_id}/checkout\",status=\"200\""));
    assert!(metrics.contains("orderlog_commands_total{command=\"checkout\",outcome=\"ok\"} 3"), "{metrics}");
    assert!(metrics.contains("orderlog_append_duration_seconds_count "));
    assert!(metrics.contains("orderlog_projection_events_behind{projection=\"order_status\"}"));
}

/// Reads the live feed from `logged[2]`'s cursor, disconnects, and resumes from the last id.
async fn live_feed_resumes(app: &App, token: &str, logged: &[u64]) {
    let events = app.store.read_all(orderlog_store::LogCursor::START, 3).await.unwrap();
    let start = format!("{}.{}", events[2].commit, events[2].position);
    let mut seen = Vec::new();
    let mut last_id = start;
    for _ in 0..2 {
        let request = Request::get("/events/live")
            .header("authorization", format!("Bearer {token}"))
            .header("last-event-id", &last_id)
            .body(Body::empty())
            .unwrap();
        let response = app.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut body = response.into_body();
        let mut text = String::new();
        // Take a few events, then drop the connection.
        while text.matches("\n\n").count() < 4 {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await.unwrap();
            if let Some(data) = frame.unwrap().unwrap().data_ref() {
                text.push_str(std::str::from_utf8(data).unwrap());
            }
        }
        for block in text.split("\n\n").filter(|b| b.contains("data:")).take(4) {
            let id = block.lines().find_map(|l| l.strip_prefix("id: ")).unwrap().to_string();
            let data: Value =
                serde_json::from_str(block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
            assert_eq!(data["cursor"], id.as_str());
            seen.push(data["position"].as_u64().unwrap());
            last_id = id;
        }
    }
    assert_eq!(seen, logged[3..11], "no event skipped or repeated across the reconnect");
}

/// An order read without waiting is served from memory once read, and changes as soon as
/// the runner has folded a change (the cache here keeps rows for an hour, so only the
/// runner's commit can have made it read the order again).
async fn cached_orders_follow_their_changes(app: App) {
    let all = app.token("shop,operations").await;
    let t = all.as_str();
    app.ok(Method::POST, "/stock/mug/berlin/receipts", t, Some(json!({"quantity": 10}))).await;
    fill_cart(&app, t, "c9", 1).await;
    let placed =
        app.ok(Method::POST, "/carts/c9/checkout", t, Some(json!({"order_id": "o9", "location": "berlin"}))).await;
    assert_eq!(order_when_caught_up(&app, t, "o9", placed["position"].as_u64().unwrap()).await["state"], "placed");
    let before = app.order_cache.stats();
    for _ in 0..3 {
        assert_eq!(app.ok(Method::GET, "/orders/o9", t, None).await["state"], "placed");
    }
    let after = app.order_cache.stats();
    // Written through when the runner committed the order (or, if the read came first,
    // read from the store once).
    assert!(after.misses - before.misses <= 1 && after.hits - before.hits >= 2, "{before:?} {after:?}");

    let cancelled = app.ok(Method::POST, "/orders/o9/cancel", t, Some(json!({"reason": "changed mind"}))).await;
    // Read-your-writes goes to the store.
    let position = cancelled["position"].as_u64().unwrap();
    assert_eq!(order_when_caught_up(&app, t, "o9", position).await["state"], "cancelled");
    // And the cached copy is forgotten once the runner's commit has returned.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = app.ok(Method::GET, "/orders/o9", t, None).await["state"].clone();
        if state == "cancelled" {
            break;
        }
        assert_eq!(state, "placed");
        assert!(std::time::Instant::now() < deadline, "the cached order never changed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(app.ok(Method::GET, "/orders/o9", t, None).await["state"], "cancelled");
    // An order the runner did not write through (the cache emptied since) is read from the
    // store once, and then served from memory.
    app.order_cache.forget_all();
    let before = app.order_cache.stats();
    for _ in 0..3 {
        assert_eq!(app.ok(Method::GET, "/orders/o9", t, None).await["state"], "cancelled");
    }
    let after = app.order_cache.stats();
    assert_eq!((after.misses - before.misses, after.hits - before.hits), (1, 2), "{before:?} {after:?}");
    let unknown = app.call(Method::GET, "/orders/nope", Some(t), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let stats = app.order_cache.stats();
    let metrics = app.call(Method::GET, "/metrics", None, None).await.text;
    let hits = format!("orderlog_order_cache_lookups_total{{outcome=\"hit\"}} {}", stats.hits);
    assert!(metrics.contains(&hits), "{metrics}");
    assert!(metrics.contains("orderlog_order_cache_bytes "), "{metrics}");
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn cached_orders_follow_their_changes(App) on [sqlite, postgres];
}

orderlog_store::each_backend! {
    #[tokio::test]
    fn a_day_at_the_shop(App) on [sqlite, postgres];
}

#[tokio::test]
async fn each_route_refuses_tokens_without_its_scope() {
    let app = App::sqlite().await;
    let mut by_scope = std::collections::BTreeMap::new();
    for scope in Scope::ALL {
        by_scope.insert(scope, app.token(scope.as_str()).await);
    }
    for (method, path, allowed) in protected() {
        // A body that parses for no route: the scope is checked before the body.
        let body = Some(json!({"not": "a valid body"}));
        let none = app.call(method.clone(), path, None, body.clone()).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        assert_eq!(none.headers["content-type"], "application/problem+json");
        assert_eq!(none.headers["www-authenticate"], "Bearer");
        let bad = app.call(method.clone(), path, Some("olt_000000000000_forged"), body.clone()).await;
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED, "{method} {path} with a forged token");
        for scope in Scope::ALL {
            let reply = app.call(method.clone(), path, Some(&by_scope[&scope]), body.clone()).await;
            if allowed.contains(&scope) {
                assert!(
                    reply.status != StatusCode::FORBIDDEN && reply.status != StatusCode::UNAUTHORIZED,
                    "{method} {path} with {scope}: {}",
                    reply.status
                );
            } else {
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path} with {scope}: {}", reply.text);
                assert!(reply.body["detail"].as_str().unwrap().contains("needs a token with the scope"));
            }
        }
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = App::sqlite().await;
    let reply = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let paths = reply.body["paths"].as_object().unwrap();
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .collect();
    let template = |path: &str| {
        let path = path.split('?').next().unwrap();
        let mut out = Vec::new();
        for part in path.split('/') {
            out.push(match part {
                "c1" => "{cart_id}",
                "o1" => "{order_id}",
                "o1.p1" => "{payment_id}",
                "r1" => "{return_id}",
                "s1" => "{shipment_id}",
                "abc" => "{token_id}",
                "wh1" => "{webhook_id}",
                "m1" => "{message_id}",
                "p1" => "{product_id}",
                "pl1" => "{price_list_id}",
                "SAVE10" => "{code}",
                "DE" => "{region_id}",
                "z1" => "{zone_id}",
                "cu1" => "{customer_id}",
                "g1" => "{group}",
                "order-o1" => "{stream_id}",
                "berlin" if path.contains("/stock/") || path.contains("/locations/") => "{location}",
                "mug" => "{sku}",
                other => other,
            });
        }
        out.join("/")
    };
    let mut routes: BTreeSet<(String, String)> =
        protected().iter().map(|(m, p, _)| (m.to_string(), template(p))).collect();
    for open in ["/health", "/ready", "/metrics"] {
        routes.insert(("GET".into(), open.into()));
    }
    routes.insert(("POST".into(), "/payments/webhooks/{provider}".into()));
    assert_eq!(documented, routes, "the document and the routes are the same set");
    assert_eq!(app.doc.paths.paths.len(), paths.len());
    // Each command route documents its problem responses and its scopes.
    let checkout = &reply.body["paths"]["/carts/{cart_id}/checkout"]["post"];
    assert_eq!(checkout["security"][0]["bearer"][0], "shop");
    assert!(checkout["responses"].get("409").is_some());
}
