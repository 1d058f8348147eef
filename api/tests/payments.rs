//! Payments through the real router: paying for an order, the provider's signed webhooks
//! (authentic, forged, about nothing of ours), an order's intents, and the payments report.

mod common;

use axum::http::{Method, StatusCode};
use common::{fill_cart, App, STRIPE_WEBHOOK_SECRET};
use serde_json::{json, Value};

fn webhook(id: &str, kind: &str, payment: &str, amount: i64, status: &str) -> String {
    let object = json!({"id": format!("pi_{payment}"), "object": "payment_intent", "amount": amount, "currency": "eur",
        "status": status, "amount_received": 0, "amount_capturable": amount,
        "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."},
        "metadata": {"payment_id": payment}});
    json!({"id": id, "object": "event", "type": kind, "data": {"object": object}}).to_string()
}

async fn deliver(app: &App, secret: &str, body: &str) -> common::Reply {
    let header = orderlog_payments::signature::header(secret, chrono::Utc::now().timestamp(), body.as_bytes());
    app.send(Method::POST, "/payments/webhooks/stripe", None, Some(body.to_string()), &[("stripe-signature", &header)])
        .await
}

#[tokio::test]
async fn webhooks_authorize_and_decline_and_the_report_counts_them_on_sqlite() {
    webhooks_and_report(App::sqlite().await).await;
}

#[tokio::test]
async fn webhooks_authorize_and_decline_and_the_report_counts_them_on_postgres() {
    webhooks_and_report(App::postgres().await).await;
}

async fn webhooks_and_report(app: App) {
    let t = app.token("shop,operations,analytics").await;
    app.ok(Method::POST, "/stock/mug/berlin/receipts", &t, Some(json!({"quantity": 10}))).await;
    for (cart, order, qty) in [("c1", "o1", 2), ("c2", "o2", 1)] {
        fill_cart(&app, &t, cart, qty).await;
        app.ok(
            Method::POST,
            &format!("/carts/{cart}/checkout"),
            &t,
            Some(json!({"order_id": order, "location": "berlin"})),
        )
        .await;
        app.ok(Method::POST, &format!("/orders/{order}/pay"), &t, Some(json!({"payment_method": "pm_card_visa"})))
            .await;
    }
    let payments = app.ok(Method::GET, "/orders/o1/payments", &t, None).await;
    assert_eq!(payments["payments"][0]["status"], "authorizing", "{payments}");
    assert_eq!(payments["payments"][0]["amount"]["amount"], 2 * 900 + 490, "the server's amount");
    // Forged: another secret. Nothing is recorded.
    let authorized =
        webhook("evt_1", "payment_intent.amount_capturable_updated", "o1.p1", 2 * 900 + 490, "requires_capture");
    let forged = deliver(&app, "whsec_someone_else", &authorized).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{}", forged.text);
    assert_eq!(app.ok(Method::GET, "/orders/o1/payments", &t, None).await["payments"][0]["status"], "authorizing");
    let taken = deliver(&app, STRIPE_WEBHOOK_SECRET, &authorized).await;
    assert_eq!((taken.status, taken.body["result"].as_str()), (StatusCode::OK, Some("recorded")), "{}", taken.text);
    let declined = webhook("evt_2", "payment_intent.payment_failed", "o2.p1", 900 + 490, "requires_payment_method");
    assert_eq!(deliver(&app, STRIPE_WEBHOOK_SECRET, &declined).await.body["result"], "recorded");
    let stranger = webhook("evt_3", "payment_intent.amount_capturable_updated", "zz.p1", 100, "requires_capture");
    let ignored = deliver(&app, STRIPE_WEBHOOK_SECRET, &stranger).await;
    assert_eq!(
        (ignored.status, ignored.body["result"].as_str()),
        (StatusCode::OK, Some("ignored")),
        "{}",
        ignored.text
    );
    let not_json = deliver(&app, STRIPE_WEBHOOK_SECRET, "{not json").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let o1 = app.ok(Method::GET, "/orders/o1/payments", &t, None).await;
    assert_eq!((o1["payments"][0]["status"].as_str(), o1["authorized"].as_i64()), (Some("authorized"), Some(2_290)));
    let types: Vec<&str> =
        o1["payments"][0]["history"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["PaymentInitiated", "AuthorizationRequested", "IntentAuthorized", "ProviderEventReceived"]);
    let o2 = app.ok(Method::GET, "/orders/o2/payments", &t, None).await;
    assert!(o2["payments"][0]["failure"].as_str().unwrap().contains("insufficient_funds"), "{o2}");
    // The report follows the payment_status read model.
    let today = chrono::Utc::now().date_naive();
    let path = format!("/reports/payments?from={today}&to={today}&currency=EUR");
    let mut report = Value::Null;
    for _ in 0..200 {
        report = app.ok(Method::GET, &path, &t, None).await;
        if report[0]["failed"] == 1 && report[0]["authorized"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let day = &report[0];
    assert_eq!(
        (day["intents"].as_i64(), day["authorized"].as_i64(), day["failed"].as_i64()),
        (Some(2), Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(
        (day["authorized_amount"].as_i64(), day["authorization_success_rate"].as_f64()),
        (Some(2_290), Some(0.5))
    );
    let bad = app.call(Method::GET, "/reports/payments?from=2026-13-01&to=2026-12-01", Some(&t), None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn webhook_deliveries_past_the_rate_limit_get_429() {
    let app = App::sqlite().await;
    let limit = common::WEBHOOKS_PER_SECOND as usize;
    let body = webhook("evt_1", "payment_intent.amount_capturable_updated", "zz.p1", 100, "requires_capture");
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..limit + 5 {
        *statuses.entry(deliver(&app, "whsec_wrong", &body).await.status.as_u16()).or_insert(0) += 1;
    }
    // Within one second: the limit's worth refused for their signature, the rest for the rate.
    assert_eq!((statuses.get(&400), statuses.get(&429)), (Some(&limit), Some(&5)), "{statuses:?}");
    let limited = deliver(&app, STRIPE_WEBHOOK_SECRET, &body).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.text);
}
