//! Webhook subscriptions over HTTP on SQLite and PostgreSQL: made with a secret shown once,
//! listed without it, refused with a problem naming the field for a bad URL or event type,
//! rotated, disabled; the delivery log of an unknown subscription is a 404; only the
//! `integrations` scope may use them; the integration events are in the document's webhooks.

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use serde_json::json;

async fn subscriptions_are_managed_over_http(app: App) {
    let t = app.token("integrations").await;
    let made = app
        .call(
            Method::POST,
            "/webhooks",
            Some(&t),
            Some(json!({"url": "https://erp.example.com/hooks", "event_types": ["order.placed", "order.shipped"]})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let id = made.body["id"].as_str().unwrap().to_string();
    assert!(made.body["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(made.body["status"], "active");
    let listed = app.ok(Method::GET, "/webhooks", &t, None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0].get("secret").is_none(), "secrets are shown once: {listed}");
    assert_eq!(listed[0]["event_types"], json!(["order.placed", "order.shipped"]));

    for (body, field) in [
        (json!({"url": "http://127.0.0.1:9/x", "event_types": ["order.placed"]}), "url: 127.0.0.1 is a loopback"),
        (json!({"url": "http://169.254.169.254/", "event_types": ["order.placed"]}), "url: 169.254.169.254"),
        (json!({"url": "gopher://example.com", "event_types": ["order.placed"]}), "url: scheme 'gopher'"),
        (json!({"url": "https://\u{cf}", "event_types": ["order.placed"]}), "url: must be ASCII"),
        (json!({"url": "https://example.com", "event_types": ["order.teleported"]}), "event_types: 'order.teleported'"),
        (json!({"url": "https://example.com", "event_types": []}), "event_types: name at least one"),
    ] {
        let refused = app.call(Method::POST, "/webhooks", Some(&t), Some(body)).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
        assert!(refused.body["detail"].as_str().unwrap().contains(field), "{}", refused.text);
    }
    assert_eq!(app.ok(Method::GET, "/webhooks", &t, None).await.as_array().unwrap().len(), 1, "nothing stored");

    let rotated =
        app.ok(Method::POST, &format!("/webhooks/{id}/rotate-secret"), &t, Some(json!({"overlap_seconds": 60}))).await;
    assert_ne!(rotated["secret"], made.body["secret"]);
    let too_long = app
        .call(
            Method::POST,
            &format!("/webhooks/{id}/rotate-secret"),
            Some(&t),
            Some(json!({"overlap_seconds": 999_999_999})),
        )
        .await;
    assert_eq!(too_long.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", too_long.text);
    assert_eq!(app.ok(Method::GET, &format!("/webhooks/{id}/deliveries"), &t, None).await, json!([]));
    let unknown = app.call(Method::GET, "/webhooks/wh_nope/deliveries", Some(&t), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let unknown = app.call(Method::POST, "/webhooks/wh_nope/deliveries/msg_1/redeliver", Some(&t), None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);

    let disabled = app.call(Method::POST, &format!("/webhooks/{id}/disable"), Some(&t), None).await;
    assert_eq!(disabled.status, StatusCode::NO_CONTENT, "{}", disabled.text);
    let now = app.ok(Method::GET, &format!("/webhooks/{id}"), &t, None).await;
    assert_eq!(now["status"], "disabled");
    assert_eq!(now["status_reason"], "disabled by tester");

    let shop = app.token("shop,operations,admin").await;
    let refused = app.call(Method::GET, "/webhooks", Some(&shop), None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(refused.body["detail"].as_str().unwrap().contains("integrations"));

    let doc = app.ok(Method::GET, "/openapi.json", &t, None).await;
    assert!(doc["webhooks"]["order.placed"]["post"]["requestBody"].is_object(), "integration events are documented");
    assert_eq!(doc["paths"]["/webhooks"]["post"]["security"][0]["bearer"], json!(["integrations"]));
}

#[tokio::test]
async fn subscriptions_are_managed_over_http_on_sqlite() {
    subscriptions_are_managed_over_http(App::sqlite().await).await;
}

#[tokio::test]
async fn subscriptions_are_managed_over_http_on_postgres() {
    subscriptions_are_managed_over_http(App::postgres().await).await;
}
