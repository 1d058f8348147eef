//! Webhook subscriptions (scope `integrations`): register a URL for integration events and
//! get its secret, list and disable subscriptions, rotate a secret, read the delivery log
//! and send a message again. The integration events themselves are described in the
//! OpenAPI document's `webhooks`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use orderlog_processes::webhooks::{Attempt, Message, WebhookError, Webhooks, SECRET_OVERLAP_MS_DEFAULT};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::body::Body;
use crate::problem::Problem;
use crate::Shared;

/// Longest overlap of a rotated secret, in seconds (a week).
pub const OVERLAP_SECS_MAX: u64 = 7 * 24 * 3_600;
/// Messages a delivery log page holds at most.
pub const DELIVERIES_LIMIT_MAX: u32 = 500;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get))
        .routes(routes!(disable))
        .routes(routes!(rotate))
        .routes(routes!(deliveries))
        .routes(routes!(redeliver))
}

fn webhooks(api: &Shared) -> Result<&Webhooks, Problem> {
    api.webhooks.as_ref().ok_or_else(|| Problem::not_found("this server delivers no webhooks"))
}

fn problem(e: WebhookError) -> Problem {
    match e {
        WebhookError::Invalid(detail) => Problem::unprocessable(detail),
        WebhookError::NotFound(what) => Problem::not_found(format!("no webhook '{what}'")),
        other => Problem::internal(other.to_string()),
    }
}

/// A subscription (its secret is shown only when it is made or rotated).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    id: String,
    url: String,
    event_types: Vec<String>,
    /// `active` or `disabled`.
    status: String,
    status_reason: Option<String>,
    created_by: String,
    /// Milliseconds since the Unix epoch.
    created_ms: i64,
}

impl From<orderlog_processes::webhooks::Webhook> for WebhookView {
    fn from(w: orderlog_processes::webhooks::Webhook) -> WebhookView {
        WebhookView {
            id: w.id,
            url: w.url,
            event_types: w.event_types,
            status: w.status,
            status_reason: w.status_reason,
            created_by: w.created_by,
            created_ms: w.created_ms,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where messages are POSTed: http or https.
    url: String,
    /// Integration event types to receive.
    event_types: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    webhook: WebhookView,
    /// `whsec_…`: verify each message's `webhook-signature` with it (Standard Webhooks).
    secret: String,
}

/// Every subscription.
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", responses((status = 200, body = Vec<WebhookView>)),
    security(("bearer" = ["integrations"])))]
async fn list(State(api): State<Shared>) -> Result<Json<Vec<WebhookView>>, Problem> {
    let list = webhooks(&api)?.list().await.map_err(problem)?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

/// Subscribes a URL to integration events; the secret is in this response only.
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 422, body = Problem)),
    security(("bearer" = ["integrations"])))]
async fn create(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Body(body): Body<CreateWebhook>,
) -> Result<Response, Problem> {
    let made = webhooks(&api)?.create(&body.url, &body.event_types, &p.name).await.map_err(problem)?;
    tracing::info!(by = %p.name, webhook = %made.webhook.id, url = %made.webhook.url, "webhook created");
    let view = CreatedWebhook { webhook: made.webhook.into(), secret: made.secret };
    Ok(crate::commands::created(Json(view).into_response()))
}

/// One subscription.
#[utoipa::path(get, path = "/webhooks/{webhook_id}", tag = "webhooks", params(("webhook_id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = Problem)),
    security(("bearer" = ["integrations"])))]
async fn get(State(api): State<Shared>, Path(id): Path<String>) -> Result<Json<WebhookView>, Problem> {
    Ok(Json(webhooks(&api)?.get(&id).await.map_err(problem)?.into()))
}

/// Disables a subscription: nothing more is sent to it (it stays listed, with its delivery
/// log, as `disabled`).
#[utoipa::path(post, path = "/webhooks/{webhook_id}/disable", tag = "webhooks", params(("webhook_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = ["integrations"])))]
async fn disable(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    webhooks(&api)?.disable(&id, &format!("disabled by {}", p.name)).await.map_err(problem)?;
    tracing::info!(by = %p.name, webhook = %id, "webhook disabled");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the old secret still signs beside the new one, in seconds (default a day).
    overlap_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Rotated {
    /// The new `whsec_…` secret; messages carry a signature by each secret during the overlap.
    secret: String,
}

/// Rotates a subscription's secret.
#[utoipa::path(post, path = "/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    params(("webhook_id" = String, Path)), request_body = Rotate,
    responses((status = 200, body = Rotated), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["integrations"])))]
async fn rotate(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    Body(body): Body<Rotate>,
) -> Result<Json<Rotated>, Problem> {
    let overlap_ms = match body.overlap_seconds {
        Some(s) if s > OVERLAP_SECS_MAX => {
            return Err(Problem::unprocessable(format!("overlap_seconds: at most {OVERLAP_SECS_MAX} (a week)")))
        }
        Some(s) => s as i64 * 1_000,
        None => SECRET_OVERLAP_MS_DEFAULT,
    };
    let secret = webhooks(&api)?.rotate(&id, overlap_ms).await.map_err(problem)?;
    tracing::info!(by = %p.name, webhook = %id, "webhook secret rotated");
    Ok(Json(Rotated { secret }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesParams {
    /// Messages, newest first (default 50).
    limit: Option<u32>,
}

/// A message and every attempt to deliver it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    message: Message,
    #[schema(value_type = Vec<Object>)]
    attempts: Vec<Attempt>,
}

/// The subscription's delivery log: its latest messages with their attempts (status code,
/// error, duration).
#[utoipa::path(get, path = "/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("webhook_id" = String, Path), DeliveriesParams),
    responses((status = 200, body = Vec<Delivery>), (status = 404, body = Problem)),
    security(("bearer" = ["integrations"])))]
async fn deliveries(
    State(api): State<Shared>,
    Path(id): Path<String>,
    Query(p): Query<DeliveriesParams>,
) -> Result<Json<Vec<Delivery>>, Problem> {
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > DELIVERIES_LIMIT_MAX {
        return Err(Problem::new(StatusCode::BAD_REQUEST, format!("limit: 1 to {DELIVERIES_LIMIT_MAX}")));
    }
    let log = webhooks(&api)?.deliveries(&id, limit).await.map_err(problem)?;
    Ok(Json(log.into_iter().map(|(message, attempts)| Delivery { message, attempts }).collect()))
}

/// Sends a message again (delivered, dead-lettered or waiting for its next retry).
#[utoipa::path(post, path = "/webhooks/{webhook_id}/deliveries/{message_id}/redeliver", tag = "webhooks",
    params(("webhook_id" = String, Path), ("message_id" = String, Path)),
    responses((status = 202), (status = 404, body = Problem)), security(("bearer" = ["integrations"])))]
async fn redeliver(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((id, message)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    webhooks(&api)?.redeliver(&id, &message).await.map_err(problem)?;
    tracing::info!(by = %p.name, webhook = %id, message = %message, "webhook message queued again");
    Ok(StatusCode::ACCEPTED)
}
