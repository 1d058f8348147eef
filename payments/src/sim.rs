//! A payment provider that speaks Stripe's PaymentIntents protocol over real HTTP
//! (`orderlog gateway-sim`), so the adapter, the webhook endpoint and the payment process
//! are tested against something that misbehaves like the real thing.
//!
//! It keeps its own ledger of intents, charges and refunds; honours idempotency keys (the
//! same key and request replay the first response with `Idempotent-Replayed: true`, the
//! same key with another request is a 400 `idempotency_error`, and one still running is a
//! 409); and signs its webhooks (`Stripe-Signature`, see [`crate::signature`]), which it
//! delivers with retries until the endpoint answers 2xx.
//!
//! Cards (`payment_method`): `pm_card_visa` and `pm_card_mastercard` authorize;
//! `pm_card_chargeDeclined` and `pm_card_chargeDeclinedInsufficientFunds` decline;
//! `pm_card_authenticationRequired` and `pm_card_threeDSecure2Required` require 3-D Secure,
//! which the shopper completes (or fails) through `POST /_sim/payment_intents/{id}/authenticate`.
//!
//! Faults (`POST /_sim/faults`, see [`Faults`]): slow answers, answers that never come in
//! time, failures before or after doing the work, and webhooks late, twice, out of order or
//! with a stale timestamp. `POST /_sim/webhook` says where webhooks go. `GET /_sim/ledger` shows the ledger; `POST /_sim/disputes` opens a
//! dispute and `POST /_sim/payment_intents/{id}/expire` lets an authorization run out.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::signature;

/// How many times a webhook is delivered before the simulator gives up on it.
pub const WEBHOOK_ATTEMPTS_MAX: u32 = 8;
/// Pause after a failed delivery; doubles with each.
pub const WEBHOOK_BACKOFF_MS: u64 = 100;
/// How long an authorization may be captured (Stripe: 7 days for most cards).
pub const CAPTURE_WINDOW_SECS: i64 = 7 * 24 * 3600;

/// What the simulator is told to do wrong. Counters (`fail_*`) apply to that many of the
/// next API requests; the rest hold until changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Every API answer waits this long.
    pub latency_ms: u64,
    /// The next N requests fail with a 500 before doing anything.
    pub fail_before: u32,
    /// The next N requests do their work, keep its result for their idempotency key, and
    /// then answer 500 (a response lost on the way back).
    pub fail_after: u32,
    /// The next N requests do their work and then answer only after this many ms (longer
    /// than a client's timeout: the client gives up, the work is done).
    pub hang_ms: u64,
    pub hang: u32,
    /// Webhooks are sent this long after the event.
    pub webhook_delay_ms: u64,
    /// Every webhook is delivered twice.
    pub webhook_twice: bool,
    /// Each webhook waits for the next one and is sent after it.
    pub webhook_out_of_order: bool,
    /// Webhooks carry a timestamp this many seconds in the past.
    pub webhook_stale_secs: i64,
    /// Webhooks are not sent at all.
    pub webhook_off: bool,
    /// This share of webhooks (in percent, at random) is delivered twice.
    pub webhook_twice_percent: u8,
    /// This share of webhooks (in percent, at random) is sent `webhook_delay_ms` late; the
    /// rest at once. 0 with a delay: every webhook is late.
    pub webhook_late_percent: u8,
}

/// Where webhooks go.
#[derive(Clone, Debug)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SimIntent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub amount_capturable: i64,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub payment_method: String,
    pub metadata: BTreeMap<String, String>,
    pub charge: String,
    pub created: i64,
    pub capture_before: i64,
    pub captures: Vec<i64>,
    pub refunds: Vec<(String, i64)>,
    pub cancellation_reason: Option<String>,
}

#[derive(Default)]
struct Ledger {
    intents: BTreeMap<String, SimIntent>,
    /// Idempotency key → the request's fingerprint and its answer (`None` while running).
    keys: HashMap<String, (String, Option<(u16, Value)>)>,
    sequence: u64,
    held_webhook: Option<Value>,
}

pub struct Simulator {
    secret_key: String,
    webhook: Mutex<Option<WebhookTarget>>,
    ledger: Mutex<Ledger>,
    faults: Mutex<Faults>,
    client: reqwest::Client,
    /// Webhooks delivered (2xx), by attempts.
    delivered: Mutex<Vec<(String, u32)>>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> (u16, Value) {
    (status.as_u16(), json!({"error": {"type": kind, "code": code, "message": message}}))
}

fn reply((status, body): (u16, Value), replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if replayed {
        response.headers_mut().insert("Idempotent-Replayed", "true".parse().expect("a header value"));
    }
    response
}

impl Simulator {
    pub fn new(secret_key: &str, webhook: Option<WebhookTarget>) -> Arc<Simulator> {
        Arc::new(Simulator {
            secret_key: secret_key.to_string(),
            webhook: Mutex::new(webhook),
            ledger: Mutex::default(),
            faults: Mutex::default(),
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a client"),
            delivered: Mutex::default(),
        })
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().expect("faults") = faults;
    }

    pub fn set_webhook(&self, target: Option<WebhookTarget>) {
        *self.webhook.lock().expect("webhook") = target;
    }

    pub fn intents(&self) -> Vec<SimIntent> {
        self.ledger.lock().expect("ledger").intents.values().cloned().collect()
    }

    /// Webhook ids delivered with a 2xx, and after how many attempts.
    pub fn delivered(&self) -> Vec<(String, u32)> {
        self.delivered.lock().expect("delivered").clone()
    }

    pub fn router(self: &Arc<Simulator>) -> Router {
        Router::new()
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/{id}", get(read_intent))
            .route("/v1/payment_intents/{id}/capture", post(capture_intent))
            .route("/v1/payment_intents/{id}/cancel", post(cancel_intent))
            .route("/v1/refunds", post(create_refund))
            .route("/_sim/faults", post(set_faults).get(get_faults))
            .route("/_sim/webhook", post(set_webhook))
            .route("/_sim/ledger", get(ledger))
            .route("/_sim/payment_intents/{id}/authenticate", post(authenticate))
            .route("/_sim/payment_intents/{id}/expire", post(expire))
            .route("/_sim/disputes", post(dispute))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Simulator>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    fn next_id(&self, prefix: &str) -> String {
        let mut ledger = self.ledger.lock().expect("ledger");
        ledger.sequence += 1;
        format!("{prefix}_{:08}{:016x}", ledger.sequence, rand::random::<u64>())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let expected = format!("Bearer {}", self.secret_key);
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
    }

    /// Runs one API request: authentication, faults, idempotency, then `work`.
    async fn handle(
        self: &Arc<Simulator>,
        headers: &HeaderMap,
        fingerprint: String,
        work: impl FnOnce(&Arc<Simulator>) -> (u16, Value),
    ) -> Response {
        if !self.authorized(headers) {
            let e =
                error(StatusCode::UNAUTHORIZED, "invalid_request_error", "api_key_invalid", "Invalid API Key provided");
            return reply(e, false);
        }
        let faults = self.faults.lock().expect("faults").clone();
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        if self.take(|f| &mut f.fail_before) {
            return reply(error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "fault", "simulated failure"), false);
        }
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
        if let Some(key) = &key {
            let mut ledger = self.ledger.lock().expect("ledger");
            match ledger.keys.get(key) {
                Some((seen, _)) if *seen != fingerprint => {
                    let message = format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                    );
                    return reply(
                        error(StatusCode::BAD_REQUEST, "idempotency_error", "idempotency_key_in_use", &message),
                        false,
                    );
                }
                Some((_, None)) => {
                    let message = "There is currently another in-progress request using this Idempotent Key. Please try again later.";
                    return reply(
                        error(StatusCode::CONFLICT, "idempotency_error", "idempotency_key_in_use", message),
                        false,
                    );
                }
                Some((_, Some(answer))) => return reply(answer.clone(), true),
                None => {
                    ledger.keys.insert(key.clone(), (fingerprint, None));
                }
            }
        }
        let answer = work(self);
        if let Some(key) = &key {
            let mut ledger = self.ledger.lock().expect("ledger");
            // Stripe keeps no result for a request that failed validation: it may be sent again.
            if answer.0 == 400 || answer.0 == 404 {
                ledger.keys.remove(key);
            } else if let Some(entry) = ledger.keys.get_mut(key) {
                entry.1 = Some(answer.clone());
            }
        }
        if self.take(|f| &mut f.fail_after) {
            return reply(
                error(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "fault", "simulated lost response"),
                false,
            );
        }
        if self.take(|f| &mut f.hang) {
            tokio::time::sleep(Duration::from_millis(faults.hang_ms)).await;
        }
        reply(answer, false)
    }

    fn take(&self, counter: impl FnOnce(&mut Faults) -> &mut u32) -> bool {
        let mut faults = self.faults.lock().expect("faults");
        let n = counter(&mut faults);
        if *n > 0 {
            *n -= 1;
            true
        } else {
            false
        }
    }

    fn intent_json(intent: &SimIntent) -> Value {
        let next_action = (intent.status == "requires_action")
            .then(|| json!({"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}}));
        json!({
            "id": intent.id,
            "object": "payment_intent",
            "amount": intent.amount,
            "amount_capturable": intent.amount_capturable,
            "amount_received": intent.amount_received,
            "capture_method": "manual",
            "currency": intent.currency,
            "status": intent.status,
            "created": intent.created,
            "cancellation_reason": intent.cancellation_reason,
            "metadata": intent.metadata,
            "next_action": next_action,
            "latest_charge": {
                "id": intent.charge,
                "object": "charge",
                "amount": intent.amount,
                "amount_captured": intent.amount_received,
                "amount_refunded": intent.amount_refunded,
                "payment_intent": intent.id,
                "payment_method_details": {"type": "card", "card": {"capture_before": intent.capture_before}},
            },
            "livemode": false,
        })
    }

    /// Queues a webhook event about `object`.
    fn emit(self: &Arc<Simulator>, event_type: &str, object: Value) {
        let id = self.next_id("evt");
        let event = json!({
            "id": id,
            "object": "event",
            "api_version": "2024-06-20",
            "created": now(),
            "type": event_type,
            "livemode": false,
            "data": {"object": object},
        });
        let faults = self.faults.lock().expect("faults").clone();
        if faults.webhook_off {
            return;
        }
        let to_send = if faults.webhook_out_of_order {
            let mut ledger = self.ledger.lock().expect("ledger");
            match ledger.held_webhook.take() {
                Some(held) => vec![event, held],
                None => {
                    ledger.held_webhook = Some(event);
                    vec![]
                }
            }
        } else {
            vec![event]
        };
        let chance = |percent: u8| percent > 0 && rand::random_range(0..100u8) < percent;
        for event in to_send {
            let twice = faults.webhook_twice || chance(faults.webhook_twice_percent);
            let late = faults.webhook_late_percent == 0 || chance(faults.webhook_late_percent);
            let delay = if late { faults.webhook_delay_ms } else { 0 };
            for _ in 0..if twice { 2 } else { 1 } {
                let sim = self.clone();
                let event = event.clone();
                tokio::spawn(async move {
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    sim.deliver(&event, faults.webhook_stale_secs).await;
                });
            }
        }
    }

    /// Sends the held-back webhook, if one waits for a successor that never came.
    pub fn flush_held(self: &Arc<Simulator>) {
        let held = self.ledger.lock().expect("ledger").held_webhook.take();
        if let Some(event) = held {
            let sim = self.clone();
            tokio::spawn(async move { sim.deliver(&event, 0).await });
        }
    }

    async fn deliver(&self, event: &Value, stale_secs: i64) {
        let Some(target) = self.webhook.lock().expect("webhook").clone() else { return };
        let body = serde_json::to_vec(event).expect("an event serializes");
        let id = event["id"].as_str().unwrap_or_default().to_string();
        for attempt in 1..=WEBHOOK_ATTEMPTS_MAX {
            let header = signature::header(&target.secret, now() - stale_secs, &body);
            let sent = self
                .client
                .post(&target.url)
                .header("Stripe-Signature", header)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await;
            if sent.as_ref().is_ok_and(|r| r.status().is_success()) {
                self.delivered.lock().expect("delivered").push((id, attempt));
                return;
            }
            tracing::debug!(event = %id, attempt, "webhook delivery failed");
            tokio::time::sleep(Duration::from_millis(WEBHOOK_BACKOFF_MS << (attempt - 1).min(6))).await;
        }
    }
}

/// A form body as ordered pairs, and its fingerprint (method, path, sorted pairs).
fn form(method: &str, path: &str, body: &Bytes) -> (BTreeMap<String, String>, String) {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let mut sorted = pairs.clone();
    sorted.sort();
    let fingerprint = format!("{method} {path} {sorted:?}");
    (pairs.into_iter().collect(), fingerprint)
}

/// The `metadata[key]=value` pairs of a form.
fn metadata_of(params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    params
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_string(), v.clone())))
        .collect()
}

fn missing(param: &str) -> (u16, Value) {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "parameter_missing",
        &format!("Missing required param: {param}."),
    )
}

fn no_intent(id: &str) -> (u16, Value) {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "resource_missing",
        &format!("No such payment_intent: '{id}'"),
    )
}

fn amount_of(params: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, (u16, Value)> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_invalid_integer",
                &format!("Invalid integer: {v} for {name}; it must be a positive integer"),
            )),
        },
    }
}

async fn create_intent(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    let (params, fingerprint) = form("POST", "/v1/payment_intents", &body);
    sim.clone()
        .handle(&headers, fingerprint, move |sim| {
            let amount = match amount_of(&params, "amount") {
                Ok(Some(a)) => a,
                Ok(None) => return missing("amount"),
                Err(e) => return e,
            };
            let Some(currency) = params.get("currency") else { return missing("currency") };
            let Some(method) = params.get("payment_method") else { return missing("payment_method") };
            let metadata = metadata_of(&params);
            let outcome = match method.as_str() {
                "pm_card_visa" | "pm_card_mastercard" => Ok("requires_capture"),
                "pm_card_authenticationRequired" | "pm_card_threeDSecure2Required" => Ok("requires_action"),
                "pm_card_chargeDeclined" => Err("generic_decline"),
                "pm_card_chargeDeclinedInsufficientFunds" => Err("insufficient_funds"),
                other => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "resource_missing",
                        &format!("No such PaymentMethod: '{other}'"),
                    )
                }
            };
            let id = sim.next_id("pi");
            let charge = sim.next_id("ch");
            let mut intent = SimIntent {
                id: id.clone(),
                amount,
                currency: currency.to_ascii_lowercase(),
                status: "requires_payment_method".into(),
                amount_capturable: 0,
                amount_received: 0,
                amount_refunded: 0,
                payment_method: method.clone(),
                metadata,
                charge,
                created: now(),
                capture_before: now() + CAPTURE_WINDOW_SECS,
                captures: vec![],
                refunds: vec![],
                cancellation_reason: None,
            };
            let answer = match outcome {
                Ok(status) => {
                    intent.status = status.to_string();
                    if status == "requires_capture" {
                        intent.amount_capturable = amount;
                    }
                    let body = Simulator::intent_json(&intent);
                    let event = if status == "requires_capture" {
                        "payment_intent.amount_capturable_updated"
                    } else {
                        "payment_intent.requires_action"
                    };
                    sim.emit(event, body.clone());
                    (200, body)
                }
                Err(decline) => {
                    let body = Simulator::intent_json(&intent);
                    sim.emit("payment_intent.payment_failed", body.clone());
                    (
                        402,
                        json!({"error": {
                            "type": "card_error",
                            "code": "card_declined",
                            "decline_code": decline,
                            "message": "Your card was declined.",
                            "payment_intent": body,
                        }}),
                    )
                }
            };
            sim.ledger.lock().expect("ledger").intents.insert(id, intent);
            answer
        })
        .await
}

async fn read_intent(State(sim): State<Arc<Simulator>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    sim.clone()
        .handle(&headers, format!("GET {id}"), move |sim| match sim.ledger.lock().expect("ledger").intents.get(&id) {
            Some(intent) => (200, Simulator::intent_json(intent)),
            None => no_intent(&id),
        })
        .await
}

async fn capture_intent(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (params, fingerprint) = form("POST", &format!("/v1/payment_intents/{id}/capture"), &body);
    sim.clone()
        .handle(&headers, fingerprint, move |sim| {
            let requested = match amount_of(&params, "amount_to_capture") {
                Ok(a) => a,
                Err(e) => return e,
            };
            let final_capture = params.get("final_capture").is_none_or(|v| v == "true");
            let mut ledger = sim.ledger.lock().expect("ledger");
            let Some(intent) = ledger.intents.get_mut(&id) else { return no_intent(&id) };
            if intent.status != "requires_capture" {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "payment_intent_unexpected_state",
                    &format!("This PaymentIntent could not be captured because it has a status of {}.", intent.status),
                );
            }
            let amount = requested.unwrap_or(intent.amount_capturable);
            if amount > intent.amount_capturable {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "amount_too_large",
                    &format!(
                        "The amount to capture ({amount}) is greater than the capturable amount ({}).",
                        intent.amount_capturable
                    ),
                );
            }
            intent.amount_received += amount;
            intent.captures.push(amount);
            intent.amount_capturable = if final_capture { 0 } else { intent.amount_capturable - amount };
            if final_capture || intent.amount_capturable == 0 {
                intent.status = "succeeded".into();
            }
            let body = Simulator::intent_json(intent);
            drop(ledger);
            sim.emit("charge.captured", body["latest_charge"].clone());
            if body["status"] == "succeeded" {
                sim.emit("payment_intent.succeeded", body.clone());
            }
            (200, body)
        })
        .await
}

async fn cancel_intent(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (params, fingerprint) = form("POST", &format!("/v1/payment_intents/{id}/cancel"), &body);
    sim.clone()
        .handle(&headers, fingerprint, move |sim| cancel(sim, &id, params.get("cancellation_reason").cloned()))
        .await
}

fn cancel(sim: &Arc<Simulator>, id: &str, reason: Option<String>) -> (u16, Value) {
    let mut ledger = sim.ledger.lock().expect("ledger");
    let Some(intent) = ledger.intents.get_mut(id) else { return no_intent(id) };
    if matches!(intent.status.as_str(), "succeeded" | "canceled") || intent.amount_received > 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "payment_intent_unexpected_state",
            &format!("You cannot cancel this PaymentIntent because it has a status of {}.", intent.status),
        );
    }
    intent.status = "canceled".into();
    intent.amount_capturable = 0;
    intent.cancellation_reason = reason;
    let body = Simulator::intent_json(intent);
    drop(ledger);
    sim.emit("payment_intent.canceled", body.clone());
    (200, body)
}

async fn create_refund(State(sim): State<Arc<Simulator>>, headers: HeaderMap, body: Bytes) -> Response {
    let (params, fingerprint) = form("POST", "/v1/refunds", &body);
    sim.clone()
        .handle(&headers, fingerprint, move |sim| {
            let Some(id) = params.get("payment_intent") else { return missing("payment_intent") };
            let requested = match amount_of(&params, "amount") {
                Ok(a) => a,
                Err(e) => return e,
            };
            let refund_id = sim.next_id("re");
            let mut ledger = sim.ledger.lock().expect("ledger");
            let Some(intent) = ledger.intents.get_mut(id) else { return no_intent(id) };
            let left = intent.amount_received - intent.amount_refunded;
            let amount = requested.unwrap_or(left);
            if amount > left {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "amount_too_large",
                    &format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"),
                );
            }
            intent.amount_refunded += amount;
            intent.refunds.push((refund_id.clone(), amount));
            let metadata = metadata_of(&params);
            let refund = json!({
                "id": refund_id,
                "object": "refund",
                "amount": amount,
                "currency": intent.currency,
                "payment_intent": intent.id,
                "charge": intent.charge,
                "status": "succeeded",
                "metadata": metadata,
                "created": now(),
            });
            drop(ledger);
            sim.emit("refund.created", refund.clone());
            (200, refund)
        })
        .await
}

async fn set_faults(State(sim): State<Arc<Simulator>>, Json(faults): Json<Faults>) -> Json<Faults> {
    sim.set_faults(faults.clone());
    if !faults.webhook_out_of_order {
        sim.flush_held();
    }
    Json(faults)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    url: String,
    secret: String,
}

/// Points the webhooks at an endpoint (a server whose port is known only once it runs).
async fn set_webhook(State(sim): State<Arc<Simulator>>, Json(target): Json<Target>) -> StatusCode {
    sim.set_webhook(Some(WebhookTarget { url: target.url, secret: target.secret }));
    StatusCode::NO_CONTENT
}

async fn get_faults(State(sim): State<Arc<Simulator>>) -> Json<Faults> {
    Json(sim.faults.lock().expect("faults").clone())
}

async fn ledger(State(sim): State<Arc<Simulator>>) -> Json<Value> {
    Json(json!({"intents": sim.intents(), "webhooks_delivered": sim.delivered().len()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authenticate {
    succeed: bool,
}

async fn authenticate(
    State(sim): State<Arc<Simulator>>,
    Path(id): Path<String>,
    Json(request): Json<Authenticate>,
) -> Response {
    reply(sim.authenticate(&id, request.succeed), false)
}

impl Simulator {
    /// The shopper completes (or fails) 3-D Secure for intent `id`.
    pub fn authenticate(self: &Arc<Simulator>, id: &str, succeed: bool) -> (u16, Value) {
        let mut ledger = self.ledger.lock().expect("ledger");
        let Some(intent) = ledger.intents.get_mut(id) else { return no_intent(id) };
        if intent.status != "requires_action" {
            let code = "payment_intent_unexpected_state";
            return error(StatusCode::BAD_REQUEST, "invalid_request_error", code, "no action is required");
        }
        let event = if succeed {
            intent.status = "requires_capture".into();
            intent.amount_capturable = intent.amount;
            "payment_intent.amount_capturable_updated"
        } else {
            intent.status = "requires_payment_method".into();
            "payment_intent.payment_failed"
        };
        let body = Simulator::intent_json(intent);
        drop(ledger);
        self.emit(event, body.clone());
        (200, body)
    }
}

async fn expire(State(sim): State<Arc<Simulator>>, Path(id): Path<String>) -> Response {
    reply(cancel(&sim, &id, Some("automatic".into())), false)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenDispute {
    payment_intent: String,
    reason: String,
}

async fn dispute(State(sim): State<Arc<Simulator>>, Json(request): Json<OpenDispute>) -> Response {
    let id = sim.next_id("dp");
    let ledger = sim.ledger.lock().expect("ledger");
    let Some(intent) = ledger.intents.get(&request.payment_intent) else {
        return reply(no_intent(&request.payment_intent), false);
    };
    let dispute = json!({
        "id": id,
        "object": "dispute",
        "amount": intent.amount_received,
        "currency": intent.currency,
        "payment_intent": intent.id,
        "reason": request.reason,
        "status": "needs_response",
    });
    drop(ledger);
    sim.emit("charge.dispute.created", dispute.clone());
    reply((200, dispute), false)
}
