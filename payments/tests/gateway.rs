//! The Stripe adapter against the simulator over real HTTP: the protocol, idempotency keys,
//! declines, 3-D Secure, faults, and signed webhooks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use orderlog_domain::{Currency, Money};
use orderlog_payments::gateway::{AuthorizeRequest, GatewayError, PaymentGateway};
use orderlog_payments::signature;
use orderlog_payments::sim::{Faults, Simulator, WebhookTarget};
use orderlog_payments::stripe::StripeGateway;

const KEY: &str = "sk_test_orderlog";
const WHSEC: &str = "whsec_orderlog_test";

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap())
}

async fn listen(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// A simulator and an adapter pointed at it.
async fn provider(webhook: Option<WebhookTarget>) -> (Arc<Simulator>, StripeGateway, String) {
    let sim = Simulator::new(KEY, webhook);
    let base = listen(sim.router()).await;
    let gateway = StripeGateway::named(&base, KEY, "sim", Duration::from_millis(500));
    (sim, gateway, base)
}

fn request(key: &str, method: &str, amount: i64) -> AuthorizeRequest {
    AuthorizeRequest {
        key: key.into(),
        amount: eur(amount),
        payment_method: method.into(),
        payment_id: "o1.p1".into(),
        order_id: "o1".into(),
    }
}

#[tokio::test]
async fn authorize_capture_in_parts_and_refund() {
    let (sim, gateway, _) = provider(None).await;
    let intent = gateway.authorize(&request("o1.p1:authorize:1", "pm_card_visa", 5_000)).await.unwrap();
    assert_eq!((intent.status.as_str(), intent.amount_capturable), ("requires_capture", 5_000));
    assert!(intent.capture_before.is_some_and(|t| t > chrono::Utc::now().timestamp()));
    let first = gateway.capture("o1.p1:capture:1", &intent.provider_ref, eur(2_000), false).await.unwrap();
    assert_eq!(
        (first.status.as_str(), first.amount_received, first.amount_capturable),
        ("requires_capture", 2_000, 3_000)
    );
    let last = gateway.capture("o1.p1:capture:2", &intent.provider_ref, eur(2_500), true).await.unwrap();
    assert_eq!((last.status.as_str(), last.amount_received, last.amount_capturable), ("succeeded", 4_500, 0));
    let refund = gateway.refund("o1.p1:refund:1", &intent.provider_ref, eur(1_000)).await.unwrap();
    assert_eq!((refund.amount, refund.status.as_str()), (1_000, "succeeded"));
    let too_much = gateway.refund("o1.p1:refund:2", &intent.provider_ref, eur(3_501)).await.unwrap_err();
    assert!(matches!(&too_much, GatewayError::Refused { code, .. } if code == "amount_too_large"), "{too_much}");
    let ledger = sim.intents();
    assert_eq!((ledger[0].amount_received, ledger[0].amount_refunded, ledger[0].captures.len()), (4_500, 1_000, 2));
}

#[tokio::test]
async fn the_same_key_replays_and_another_request_under_it_is_refused() {
    let (sim, gateway, _) = provider(None).await;
    let a = gateway.authorize(&request("k1", "pm_card_visa", 5_000)).await.unwrap();
    let b = gateway.authorize(&request("k1", "pm_card_visa", 5_000)).await.unwrap();
    assert_eq!(a, b, "the same key and request give the same intent");
    assert_eq!(sim.intents().len(), 1);
    let other = gateway.authorize(&request("k1", "pm_card_visa", 5_001)).await.unwrap_err();
    assert!(matches!(&other, GatewayError::Refused { code, .. } if code == "idempotency_key_in_use"), "{other}");
    assert_eq!(sim.intents().len(), 1);
}

#[tokio::test]
async fn a_response_lost_after_the_capture_is_retried_into_one_capture() {
    let (sim, gateway, _) = provider(None).await;
    let intent = gateway.authorize(&request("k1", "pm_card_visa", 5_000)).await.unwrap();
    sim.set_faults(Faults { fail_after: 1, ..Faults::default() });
    let lost = gateway.capture("k1:capture:1", &intent.provider_ref, eur(5_000), true).await.unwrap_err();
    assert!(matches!(lost, GatewayError::Unavailable(_)), "{lost}");
    let retried = gateway.capture("k1:capture:1", &intent.provider_ref, eur(5_000), true).await.unwrap();
    assert_eq!(retried.amount_received, 5_000);
    assert_eq!(sim.intents()[0].captures, vec![5_000], "captured once");
    // A client that gave up waiting retries the same way.
    sim.set_faults(Faults { hang: 1, hang_ms: 2_000, ..Faults::default() });
    let refund = gateway.refund("k1:refund:1", &intent.provider_ref, eur(100)).await.unwrap_err();
    assert!(matches!(refund, GatewayError::Unavailable(_)), "{refund}");
    gateway.refund("k1:refund:1", &intent.provider_ref, eur(100)).await.unwrap();
    assert_eq!(sim.intents()[0].refunds.len(), 1);
}

#[tokio::test]
async fn declines_and_three_d_secure() {
    let (_sim, gateway, base) = provider(None).await;
    let declined = gateway.authorize(&request("k1", "pm_card_chargeDeclinedInsufficientFunds", 100)).await;
    assert!(
        matches!(&declined, Err(GatewayError::Refused { code, .. }) if code == "insufficient_funds"),
        "{declined:?}"
    );
    let action = gateway.authorize(&request("k2", "pm_card_threeDSecure2Required", 100)).await.unwrap();
    assert_eq!((action.status.as_str(), action.next_action.as_deref()), ("requires_action", Some("use_stripe_sdk")));
    let unknown = gateway.authorize(&request("k3", "pm_card_nope", 100)).await.unwrap_err();
    assert!(unknown.to_string().contains("No such PaymentMethod"), "{unknown}");
    let wrong_key = StripeGateway::named(&base, "sk_test_wrong", "sim", Duration::from_secs(1));
    let refused = wrong_key.authorize(&request("k4", "pm_card_visa", 100)).await.unwrap_err();
    assert!(refused.to_string().contains("Invalid API Key"), "{refused}");
}

/// A delivery as the endpoint saw it: its signature header and raw body.
type Delivery = (Option<String>, Bytes);

#[tokio::test]
async fn webhooks_are_signed_and_delivered_until_accepted() {
    let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let refusals = Arc::new(Mutex::new(2u32));
    let (r, n) = (received.clone(), refusals.clone());
    let endpoint = axum::Router::new().route(
        "/hooks",
        post(move |headers: HeaderMap, body: Bytes| {
            let (r, n) = (r.clone(), n.clone());
            async move {
                let mut left = n.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers.get("stripe-signature").map(|v| v.to_str().unwrap().to_string());
                r.lock().unwrap().push((sig, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let url = format!("{}/hooks", listen(endpoint).await);
    let (sim, gateway, _) = provider(Some(WebhookTarget { url, secret: WHSEC.into() })).await;
    gateway.authorize(&request("k1", "pm_card_visa", 700)).await.unwrap();
    for _ in 0..100 {
        if !received.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one event, delivered on its third attempt");
    assert_eq!(sim.delivered()[0].1, 3);
    let (sig, body) = &got[0];
    let now = chrono::Utc::now().timestamp();
    signature::verify(&[WHSEC], sig.as_deref(), body, now, signature::TOLERANCE_SECS).unwrap();
    let event: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["type"], "payment_intent.amount_capturable_updated");
    assert_eq!(event["data"]["object"]["metadata"]["payment_id"], "o1.p1");
}

/// Stripe's own library's verdict on each (secret, signature header, body).
fn stripe_verdicts(checks: &[(String, String, String)]) -> Vec<String> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/stripe_webhook_verify.py");
    let mut child = std::process::Command::new(stripe_python())
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for (secret, signature, body) in checks {
        input.push_str(&serde_json::json!({"secret": secret, "signature": signature, "body": body}).to_string());
        input.push('\n');
    }
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// A Python with Stripe's library (pinned), in a venv under `target/`.
fn stripe_python() -> std::path::PathBuf {
    let venv = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/stripe-venv"));
    let python = venv.join("bin/python3");
    std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
    let lock = std::fs::File::create(venv.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    let has =
        std::process::Command::new(&python).args(["-c", "import stripe"]).output().is_ok_and(|o| o.status.success());
    if !has {
        let made = std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
        assert!(made.is_ok_and(|s| s.success()));
        let pip =
            std::process::Command::new(venv.join("bin/pip")).args(["install", "--quiet", "stripe==16.1.0"]).status();
        assert!(pip.is_ok_and(|s| s.success()), "pip install stripe");
    }
    python
}

#[tokio::test]
async fn stripes_own_library_verifies_the_simulators_webhooks_and_refuses_altered_ones() {
    let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let r = received.clone();
    let endpoint = axum::Router::new().route(
        "/hooks",
        post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                let sig = headers.get("stripe-signature").map(|v| v.to_str().unwrap().to_string());
                r.lock().unwrap().push((sig, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let url = format!("{}/hooks", listen(endpoint).await);
    let (_sim, gateway, _) = provider(Some(WebhookTarget { url, secret: WHSEC.into() })).await;
    let intent = gateway.authorize(&request("k1", "pm_card_visa", 700)).await.unwrap();
    gateway.capture("k1:capture:1", &intent.provider_ref, eur(700), true).await.unwrap();
    gateway.refund("k1:refund:1", &intent.provider_ref, eur(100)).await.unwrap();
    for _ in 0..200 {
        if received.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = received.lock().unwrap().clone();
    assert!(got.len() >= 4, "authorized, charge captured, succeeded, refund created: {}", got.len());
    let mut checks = vec![];
    for (sig, body) in &got {
        let body = String::from_utf8(body.to_vec()).unwrap();
        checks.push((WHSEC.to_string(), sig.clone().unwrap(), body.clone()));
        checks.push((
            WHSEC.to_string(),
            sig.clone().unwrap(),
            body.replacen("\"livemode\":false", "\"livemode\":true", 1),
        ));
        checks.push(("whsec_other".to_string(), sig.clone().unwrap(), body));
    }
    let now = chrono::Utc::now().timestamp();
    let ours = signature::header(WHSEC, now, br#"{"id":"evt_x","object":"event","type":"ours"}"#);
    checks.push((WHSEC.into(), ours, r#"{"id":"evt_x","object":"event","type":"ours"}"#.into()));
    let verdicts = stripe_verdicts(&checks);
    assert_eq!(verdicts.len(), checks.len());
    for (i, chunk) in verdicts[..verdicts.len() - 1].chunks(3).enumerate() {
        assert!(chunk[0].starts_with("ok "), "delivery {i}: {chunk:?}");
        assert!(chunk[1].starts_with("bad"), "delivery {i} altered: {chunk:?}");
        assert!(chunk[2].starts_with("bad"), "delivery {i} under another secret: {chunk:?}");
    }
    assert_eq!(verdicts.last().unwrap(), "ok ours", "orderlog's own signing verifies too");
}
