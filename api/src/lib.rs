//! The HTTP interface of orderlog (`orderlog serve`): commands over REST, the read models,
//! the event feed (NDJSON and Server-Sent Events), API tokens, health, readiness, metrics
//! and the OpenAPI document.
//!
//! Principal types: [`Api`] (what the handlers share) and [`router`], which builds the axum
//! router and the OpenAPI document from the same route declarations, so a route cannot be
//! served without being documented.

mod admin;
pub mod auth;
mod body;
mod catalog;
pub mod checkpoints;
mod commands;
pub mod database;
pub mod listener;
pub mod metrics;
mod openapi;
pub mod payments;
pub mod problem;
mod proofs;
mod reads;
mod timed;
pub mod webhooks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use orderlog_commands::CommandService;
use orderlog_projections::projector::{self, AnyRunner};
use orderlog_projections::queries::ReadQueries;
use orderlog_store::EventStore;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::{Principal, Scope, TokenStore};
use crate::metrics::Metrics;
use crate::problem::Problem;

pub use timed::TimedStore;

/// Largest request body accepted, in bytes; larger ones get 413.
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// What the handlers share.
pub struct Api {
    pub service: Arc<CommandService>,
    pub store: Arc<dyn EventStore>,
    pub queries: Arc<dyn ReadQueries>,
    pub tokens: Arc<dyn TokenStore>,
    /// The read models' runners (for waiting on a position and for status).
    pub runners: Vec<Arc<dyn AnyRunner>>,
    pub metrics: Arc<Metrics>,
    /// Every request is let in as the principal `insecure-dev` with every scope.
    pub insecure_dev: bool,
    /// Whether projections are expected to be running (in this process or another); set
    /// false when an in-process projector has stopped.
    pub projections_running: Arc<AtomicBool>,
    /// Orders as served, kept exact by this process's order-status runner (whose row store
    /// must then be a `WatchedRows` over this cache); none to read every order from the store.
    pub order_cache: Option<Arc<orderlog_projections::cache::RowCache>>,
    /// The stored Merkle tree of the log, brought up to the log before each proof.
    pub proofs: Arc<orderlog_replay::checkpoint::TreeFollower>,
    /// The key the server signs checkpoints with, when it signs them.
    pub checkpoints: Option<Arc<checkpoints::Signer>>,
    /// Webhook subscriptions and their delivery logs, when this server delivers webhooks.
    pub webhooks: Option<orderlog_processes::webhooks::Webhooks>,
    /// How this server takes payments from a provider, when it does.
    pub payments: Option<Arc<payments::Payments>>,
}

impl Api {
    pub fn runner(&self, name: &str) -> Option<&Arc<dyn AnyRunner>> {
        self.runners.iter().find(|r| r.name() == name)
    }
}

pub type Shared = Arc<Api>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderlog",
        description = "An event-sourced order engine: commands, read models and the event feed.\n\n\
            Every error is application/problem+json. Commands accept an `Idempotency-Key` header: \
            a retry with the same key returns the first response (header `Idempotent-Replayed: true`); \
            the same key with another request is refused with 422."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "carts", description = "Carts and checkout (scope `shop`)"),
        (name = "orders", description = "Order actions and reads"),
        (name = "stock", description = "Stock items (scope `operations`)"),
        (name = "shipments", description = "Shipments (scope `operations`)"),
        (name = "reads", description = "Read models, reports and stream history"),
        (name = "feed", description = "The event log for analytics and audit"),
        (name = "proofs", description = "Merkle proofs over the log, RFC 9162 (scope `audit`)"),
        (name = "tokens", description = "API tokens (scope `admin`)"),
        (name = "webhooks", description = "Subscriptions to integration events (scope `integrations`)"),
        (name = "payments", description = "Payment intents and the payment provider's webhooks"),
        (name = "operations", description = "Health, readiness and metrics (no token)")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("olt_…").build()),
        );
    }
}

/// Routes that need one of `scopes`.
fn guarded(api: &Shared, scopes: &'static [Scope], routes: OpenApiRouter<Shared>) -> OpenApiRouter<Shared> {
    routes.route_layer(middleware::from_fn_with_state((api.clone(), scopes), authorize))
}

/// The router, and the OpenAPI document of exactly its routes.
pub fn router_and_doc(api: Shared) -> (Router, utoipa::openapi::OpenApi) {
    use Scope::*;
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(commands::routes(&api))
        .merge(guarded(&api, &[Shop, Operations, Audit], reads::order_routes()))
        .merge(guarded(&api, &[Operations, Audit], reads::order_list_routes()))
        .merge(guarded(&api, &[Shop, Operations], reads::sku_inventory_routes()))
        .merge(guarded(&api, &[Shop, Catalog], catalog::routes()))
        .merge(guarded(&api, &[Shop, Operations], catalog::cart_routes()))
        .merge(guarded(&api, &[Operations], reads::location_inventory_routes()))
        .merge(guarded(&api, &[Operations, Analytics], reads::report_routes()))
        .merge(guarded(&api, &[Audit], reads::stream_routes()))
        .merge(guarded(&api, &[Audit, Analytics], reads::feed_routes()))
        .merge(guarded(&api, &[Audit], proofs::routes()))
        .merge(guarded(&api, &[Audit], checkpoints::routes()))
        .merge(guarded(&api, &[Admin], admin::token_routes()))
        .merge(guarded(&api, &[Integrations], webhooks::routes()))
        .merge(guarded(&api, &[Shop, Operations, Audit], payments::routes()))
        .merge(payments::webhook_routes())
        .merge(admin::operation_routes())
        .split_for_parts();
    let served = openapi::exact(&doc);
    let request_id = HeaderName::from_static("x-request-id");
    let router = router
        .route("/openapi.json", axum::routing::get(move || async move { Json(served) }))
        .fallback(|| async { Problem::not_found("no such route; the routes are listed at /openapi.json") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method; see /openapi.json")
        })
        .layer(middleware::from_fn(as_problem))
        .layer(middleware::from_fn_with_state(api.clone(), measure))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(api)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
                })
                .on_request(())
                .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));
    (router, doc)
}

/// The router.
pub fn router(api: Shared) -> Router {
    router_and_doc(api).0
}

/// Records each request's latency by route and status, and logs the cause of an internal
/// error with the request's id (here, so every such line has it whatever the log level).
async fn measure(State(api): State<Shared>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = method_label(request.method());
    let request_id = request.headers().get("x-request-id").cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(problem::Cause(cause)) = response.extensions().get::<problem::Cause>() {
        let id = request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::error!(request_id = %id, method, route = %route, error = %cause, "request failed");
    }
    api.metrics.request(method, &route, response.status().as_u16(), started.elapsed());
    response
}

/// The `method` label of a request's metrics: one of the methods the API knows, or
/// `other`, so that made-up methods cannot grow the metrics without bound.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Turns an error response that is not yet a problem (axum's rejections of a path or a
/// query string) into one, keeping its status and message.
async fn as_problem(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&bytes).trim().to_string();
    if status.is_server_error() {
        return Problem::internal(detail).into_response();
    }
    let detail = if detail.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { detail };
    Problem::new(status, detail).into_response()
}

/// Lets a request in if its bearer token is valid (401 otherwise) and has one of `scopes`
/// (403 otherwise); the principal goes into the request's extensions.
pub(crate) async fn authorize(
    State((api, scopes)): State<(Shared, &'static [Scope])>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = if api.insecure_dev {
        Principal { name: "insecure-dev".into(), token_id: "-".into(), scopes: Scope::ALL.into_iter().collect() }
    } else {
        let header = request.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(bearer_token) else {
            return Problem::new(StatusCode::UNAUTHORIZED, "send an API token: Authorization: Bearer olt_…")
                .into_response();
        };
        match api.tokens.authenticate(token).await {
            Ok(Some(principal)) => principal,
            Ok(None) => {
                return Problem::new(StatusCode::UNAUTHORIZED, "the API token is not valid or has been revoked")
                    .into_response()
            }
            Err(e) => return Problem::internal(format!("token look-up: {e}")).into_response(),
        }
    };
    if !scopes.iter().any(|s| principal.scopes.contains(s)) {
        let needed = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ");
        return Problem::new(StatusCode::FORBIDDEN, format!("this route needs a token with the scope {needed}"))
            .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The token of an `Authorization: Bearer …` header; the scheme's name is case-insensitive
/// (RFC 9110, section 11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether the server can serve: the store answers and no projection has stopped.
pub(crate) async fn readiness(api: &Api) -> Result<serde_json::Value, Problem> {
    let head =
        api.store.head().await.map_err(|e| Problem::unavailable(format!("the event store does not answer: {e}")))?;
    if !api.projections_running.load(Ordering::Relaxed) {
        return Err(Problem::unavailable("the projections are not running"));
    }
    let statuses = projector::status(&*api.store, &api.runners, chrono::Utc::now())
        .await
        .map_err(|e| Problem::unavailable(format!("projection status: {e}")))?;
    if let Some(failed) = statuses.iter().find(|s| s.error.is_some()) {
        return Err(Problem::unavailable(format!(
            "projection '{}' has stopped: {}",
            failed.name,
            failed.error.as_deref().unwrap_or_default()
        )));
    }
    Ok(serde_json::json!({ "status": "ready", "head": head, "projections": statuses }))
}
