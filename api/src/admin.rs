//! Routes outside the shop: API tokens (scope `admin`) and the operational endpoints
//! (health, readiness, metrics; no token).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use orderlog_projections::projector;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Principal, Scope, TokenError, TokenInfo};
use crate::body::Body;
use crate::problem::Problem;
use crate::Shared;

// ---- tokens -------------------------------------------------------------------------------

pub(crate) fn token_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(list_tokens, create_token)).routes(routes!(revoke_token))
}

/// Every token (never its secret).
#[utoipa::path(get, path = "/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenInfo>)),
    security(("bearer" = ["admin"])))]
async fn list_tokens(State(api): State<Shared>) -> Result<Json<Vec<TokenInfo>>, Problem> {
    Ok(Json(api.tokens.list().await.map_err(Problem::internal)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Recorded as the actor of the events the token's commands write.
    principal: String,
    scopes: Vec<Scope>,
}

/// Makes a token; its secret is in this response only.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = crate::auth::NewToken), (status = 422, body = Problem)),
    security(("bearer" = ["admin"])))]
async fn create_token(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Body(body): Body<CreateToken>,
) -> Result<Response, Problem> {
    let scopes = body.scopes.into_iter().collect();
    let made = api.tokens.create(&body.principal, &scopes).await.map_err(|e| match e {
        TokenError::Invalid(detail) => Problem::unprocessable(detail),
        e => Problem::internal(e.to_string()),
    })?;
    tracing::info!(by = %p.name, token_id = %made.info.id, principal = %made.info.principal, "token created");
    Ok(crate::commands::created(Json(made).into_response()))
}

/// Revokes a token.
#[utoipa::path(delete, path = "/tokens/{token_id}", tag = "tokens", params(("token_id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = ["admin"])))]
async fn revoke_token(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(token_id): Path<String>,
) -> Result<StatusCode, Problem> {
    if api.tokens.revoke(&token_id).await.map_err(Problem::internal)? {
        tracing::info!(by = %p.name, token_id = %token_id, "token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("no token '{token_id}'")))
    }
}

// ---- operations ---------------------------------------------------------------------------

pub(crate) fn operation_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready)).routes(routes!(metrics))
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Object)))]
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The store answers and the projections are running.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Object), (status = 503, body = Problem)))]
async fn ready(State(api): State<Shared>) -> Result<Json<serde_json::Value>, Problem> {
    crate::readiness(&api).await.map(Json)
}

/// Prometheus text format: request latency by route and status, command outcomes, append
/// latency, projection lag.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(api): State<Shared>) -> Response {
    use std::fmt::Write;
    let mut extra = String::new();
    if let Ok(statuses) = projector::status(&*api.store, &api.runners, chrono::Utc::now()).await {
        extra.push_str("# HELP orderlog_projection_events_behind Events in the log a projection has not folded.\n");
        extra.push_str("# TYPE orderlog_projection_events_behind gauge\n");
        for s in &statuses {
            let _ =
                writeln!(extra, "orderlog_projection_events_behind{{projection=\"{}\"}} {}", s.name, s.events_behind);
        }
        extra.push_str(
            "# HELP orderlog_projection_seconds_behind Age of the oldest event a projection has not folded.\n",
        );
        extra.push_str("# TYPE orderlog_projection_seconds_behind gauge\n");
        for s in &statuses {
            let _ =
                writeln!(extra, "orderlog_projection_seconds_behind{{projection=\"{}\"}} {}", s.name, s.seconds_behind);
        }
        extra.push_str("# HELP orderlog_projection_failed Whether a projection has stopped on an error.\n");
        extra.push_str("# TYPE orderlog_projection_failed gauge\n");
        for s in &statuses {
            let _ = writeln!(
                extra,
                "orderlog_projection_failed{{projection=\"{}\"}} {}",
                s.name,
                u8::from(s.error.is_some())
            );
        }
    }
    if let Some(webhooks) = &api.webhooks {
        match orderlog_processes::reactor::prometheus(&**webhooks.db()).await {
            Ok(text) => extra.push_str(&text),
            Err(e) => tracing::warn!(error = %e, "metrics: the process tables cannot be read"),
        }
    }
    if let Some(cache) = &api.order_cache {
        let stats = cache.stats();
        extra.push_str(
            "# HELP orderlog_order_cache_lookups_total Order reads answered from memory (hit) or the store (miss).\n",
        );
        extra.push_str("# TYPE orderlog_order_cache_lookups_total counter\n");
        let _ = writeln!(extra, "orderlog_order_cache_lookups_total{{outcome=\"hit\"}} {}", stats.hits);
        let _ = writeln!(extra, "orderlog_order_cache_lookups_total{{outcome=\"miss\"}} {}", stats.misses);
        extra.push_str("# HELP orderlog_order_cache_bytes Bytes of orders held in memory.\n");
        extra.push_str("# TYPE orderlog_order_cache_bytes gauge\n");
        let _ = writeln!(extra, "orderlog_order_cache_bytes {}", stats.bytes);
    }
    let mut response = api.metrics.render(&extra).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
