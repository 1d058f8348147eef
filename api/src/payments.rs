//! Payments over HTTP: an order's payment intents with their histories, and the endpoint a
//! payment provider sends its webhooks to. The webhook endpoint takes no bearer token — its
//! signature over the raw body is its authentication — and is rate-limited.

use std::sync::Mutex;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use orderlog_domain::{AnyState, OrderId, PaymentId, StreamId};
use orderlog_payments::webhook::{self, WebhookError};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;
use crate::Shared;

/// Webhook deliveries accepted per second, in all; more get 429.
pub const WEBHOOKS_PER_SECOND_MAX: u32 = 500;

/// How this server takes payments: the provider protocol its webhooks speak and the
/// secrets they are signed with (several while a secret is rolled).
pub struct Payments {
    pub provider: String,
    pub webhook_secrets: Vec<String>,
    per_second: u32,
    /// The window's first delivery, and the deliveries in it.
    limiter: Mutex<(Option<Instant>, u32)>,
}

impl Payments {
    pub fn new(provider: &str, webhook_secrets: Vec<String>) -> Payments {
        Payments::with_limit(provider, webhook_secrets, WEBHOOKS_PER_SECOND_MAX)
    }

    /// With another limit of deliveries per second.
    pub fn with_limit(provider: &str, webhook_secrets: Vec<String>, per_second: u32) -> Payments {
        let limiter = Mutex::new((None, 0));
        Payments { provider: provider.to_string(), webhook_secrets, per_second, limiter }
    }

    /// Whether one more delivery fits this second.
    fn admit(&self) -> bool {
        let mut window = self.limiter.lock().expect("limiter");
        if window.0.is_none_or(|start| start.elapsed().as_secs() >= 1) {
            *window = (Some(Instant::now()), 0);
        }
        window.1 += 1;
        window.1 <= self.per_second
    }
}

/// Payments by their provider reference, from the read model `payment_status`.
struct Refs(std::sync::Arc<dyn orderlog_projections::queries::ReadQueries>);

#[async_trait::async_trait]
impl webhook::ProviderRefs for Refs {
    async fn payment_of(&self, provider_ref: &str) -> Result<Option<String>, String> {
        let row = self.0.payment_by_provider_ref(provider_ref).await.map_err(|e| e.to_string())?;
        Ok(row.map(|r| r.payment_id))
    }
}

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(order_payments))
}

pub(crate) fn webhook_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(receive_webhook))
}

/// An order's payment intents, oldest first, each with its state and every event of its
/// stream.
#[utoipa::path(get, path = "/orders/{order_id}/payments", tag = "orders", params(("order_id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Problem)),
    security(("bearer" = ["shop", "operations", "audit"])))]
async fn order_payments(State(api): State<Shared>, Path(order_id): Path<String>) -> Result<Json<Value>, Problem> {
    let order_id = OrderId::parse(order_id).map_err(|r| Problem::bad_request(r.reason))?;
    let (state, _) = api.service.state(&StreamId::order(&order_id)).await.map_err(Problem::internal)?;
    let AnyState::Order(order) = state else { return Err(Problem::internal("an order stream folds to an order")) };
    if order.placed.is_none() {
        return Err(Problem::not_found(format!("no order '{order_id}'")));
    }
    let mut intents = vec![];
    for id in &order.payments {
        intents.push(intent(&api, id).await?);
    }
    Ok(Json(json!({
        "order_id": order_id,
        "authorized": order.payment.authorized,
        "captured": order.payment.captured,
        "refunded": order.payment.refunded,
        "voided": order.payment.voided,
        "payments": intents,
    })))
}

async fn intent(api: &Shared, id: &PaymentId) -> Result<Value, Problem> {
    let stream = StreamId::payment(id);
    let (state, _) = api.service.state(&stream).await.map_err(Problem::internal)?;
    let AnyState::Payment(payment) = state else {
        return Err(Problem::internal("a payment stream folds to a payment"));
    };
    let events = api.store.read_stream(&stream.to_string(), 1, 1_000).await.map_err(Problem::internal)?;
    let history: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "version": e.version,
                "position": e.position,
                "type": e.event_type,
                "recorded_at": e.recorded_at,
                "actor": e.metadata.actor,
                "data": serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(json!({
        "payment_id": id,
        "status": payment.status.as_str(),
        "amount": payment.amount,
        "provider": payment.provider,
        "provider_ref": payment.provider_ref,
        "authorized": payment.authorized,
        "captured": payment.captured,
        "refunded": payment.refunded,
        "capture_before": payment.capture_before,
        "pending": payment.pending,
        "disputes": payment.disputes,
        "failure": payment.failure,
        "history": history,
    }))
}

/// Takes a payment provider's webhook (Stripe's format and `Stripe-Signature`). The
/// signature and its timestamp are checked over the raw body first: a delivery that fails
/// is 400 and changes nothing. A delivery seen before (by its event id) changes nothing; an
/// event about no payment of this server's is acknowledged and ignored.
#[utoipa::path(post, path = "/payments/webhooks/{provider}", tag = "payments", params(("provider" = String, Path)),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = Object), (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 429, body = Problem), (status = 503, body = Problem)))]
async fn receive_webhook(
    State(api): State<Shared>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let Some(payments) = api.payments.as_ref().filter(|p| p.provider == provider) else {
        return Err(Problem::not_found(format!("this server takes no webhooks from '{provider}'")));
    };
    if !payments.admit() {
        return Err(Problem::new(StatusCode::TOO_MANY_REQUESTS, "too many webhook deliveries; retry later"));
    }
    if body.len() > webhook::WEBHOOK_BYTES_MAX {
        return Err(Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "webhook body too large"));
    }
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let secrets: Vec<&str> = payments.webhook_secrets.iter().map(String::as_str).collect();
    let now = chrono::Utc::now().timestamp();
    let refs = Refs(api.queries.clone());
    match webhook::receive(&api.service, Some(&refs), &provider, &secrets, signature, &body, now).await {
        Ok(receipt) => {
            tracing::info!(provider, event = %receipt.event_id, kind = %receipt.event_type, result = %receipt.result, "payment webhook");
            Ok(Json(receipt).into_response())
        }
        Err(e @ (WebhookError::Signature(_) | WebhookError::Body(_))) => {
            tracing::warn!(provider, error = %e, "payment webhook refused");
            Err(Problem::bad_request(e.to_string()))
        }
        Err(WebhookError::Unavailable(e)) => Err(Problem::unavailable(e)),
    }
}
