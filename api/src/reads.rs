//! Read routes: orders, inventory, reports, stream history and the event feed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use orderlog_domain::order::OrderStatus;
use orderlog_domain::Currency;
use orderlog_projections::cache::{Lookup, RowCache};
use orderlog_projections::orders::OrderStatusTable;
use orderlog_projections::projector;
use orderlog_projections::queries::{OrderFilter, SalesDay, TopSku};
use orderlog_projections::table::{RunError, TableModel};
use orderlog_store::{EventStore, LogCursor, RecordedEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::commands::WaitParams;
use crate::problem::Problem;
use crate::Shared;

const WAIT_MS_DEFAULT: u64 = 5_000;
const WAIT_MS_MAX: u64 = 30_000;
const PAGE_MAX: u32 = 500;
const FEED_MAX: u32 = 10_000;

/// Waits until `model` has folded the event at `wait_for`, if asked.
async fn wait(api: &Shared, model: &str, params: &WaitParams) -> Result<(), Problem> {
    let Some(position) = params.wait_for else { return Ok(()) };
    let timeout = Duration::from_millis(params.timeout_ms.unwrap_or(WAIT_MS_DEFAULT).min(WAIT_MS_MAX));
    let runner = api.runner(model).ok_or_else(|| Problem::internal(format!("no runner for '{model}'")))?;
    if api.store.cursor_of(position).await.map_err(Problem::internal)?.is_none() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("wait_for: the log has no committed event at position {position}"),
        ));
    }
    match projector::wait_for_position(&*api.store, &**runner, position, timeout).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            let mut problem = Problem::unavailable(format!(
                "the read model '{model}' has not reached position {position} within {} ms; try again",
                timeout.as_millis()
            ));
            problem.kind = "https://orderlog.dev/problems/not-caught-up".into();
            Err(problem)
        }
        Err(RunError::Stopped { reason, .. }) => {
            Err(Problem::unavailable(format!("the read model '{model}' has stopped: {reason}")))
        }
        Err(e) => Err(Problem::internal(e)),
    }
}

fn query_problem(e: orderlog_projections::RowsError) -> Problem {
    Problem::internal(format!("read-model query: {e}"))
}

pub(crate) fn order_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(get_order))
}

/// One order: state, payment and fulfilment status, lines, totals, customer, milestone
/// times and timeline (read model `order_status`).
#[utoipa::path(get, path = "/orders/{order_id}", tag = "orders", params(("order_id" = String, Path), WaitParams),
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["shop", "operations", "audit"])))]
async fn get_order(
    State(api): State<Shared>,
    Path(order_id): Path<String>,
    Query(params): Query<WaitParams>,
) -> Result<Response, Problem> {
    wait(&api, OrderStatusTable::NAME, &params).await?;
    // A read that waited for a position goes to the store: the cache may not have heard of
    // the commit it waited for yet.
    let cache = api.order_cache.as_ref().filter(|_| params.wait_for.is_none());
    let order: Option<Arc<str>> = match cache.map(|cache| cache.lookup(&order_id)) {
        Some(Lookup::Hit(order)) => Some(order),
        looked => {
            let stored = api.queries.order_json(&order_id).await.map_err(query_problem)?;
            // With a cache, every read is answered in its text form, cached or not.
            let order = if api.order_cache.is_some() {
                stored.as_deref().map(RowCache::canonical)
            } else {
                stored.map(Arc::from)
            };
            if let (Some(cache), Some(Lookup::Miss(ticket)), Some(order)) = (cache, looked, &order) {
                cache.put(ticket, &order_id, order.clone());
            }
            order
        }
    };
    match order {
        Some(order) => Ok(([(header::CONTENT_TYPE, "application/json")], order.to_string()).into_response()),
        None => Err(Problem::not_found(format!("no order '{order_id}'"))),
    }
}

pub(crate) fn order_list_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(list_orders))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OrderListParams {
    /// An order state (see `OrderStatus::PLACED`): `placed`, `confirmed`, … `expired`.
    state: Option<String>,
    /// A customer id, or `guest`.
    customer: Option<String>,
    /// RFC 3339: placed at or after.
    placed_from: Option<String>,
    /// RFC 3339: placed before.
    placed_to: Option<String>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
    /// At most this many (default 50, at most 500).
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    #[schema(value_type = Vec<Object>)]
    orders: Vec<orderlog_projections::orders::OrderStatusRow>,
    /// Pass as `after` for the next page; absent on the last page.
    next: Option<String>,
}

fn instant(name: &str, value: Option<String>) -> Result<Option<String>, Problem> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .map_err(|e| Problem::bad_request(format!("{name}: '{v}' is not an RFC 3339 time: {e}")))
        })
        .transpose()
}

/// Orders by placement time, filtered by state, customer and time, a page at a time.
#[utoipa::path(get, path = "/orders", tag = "orders", params(OrderListParams),
    responses((status = 200, body = OrderPage), (status = 400, body = Problem)),
    security(("bearer" = ["operations", "audit"])))]
async fn list_orders(State(api): State<Shared>, Query(p): Query<OrderListParams>) -> Result<Json<OrderPage>, Problem> {
    let states: Vec<&str> = OrderStatus::PLACED.iter().map(|s| s.as_str()).collect();
    if let Some(state) = p.state.as_deref().filter(|s| !states.contains(s)) {
        return Err(Problem::bad_request(format!("state: '{state}' is not one of {}", states.join(", "))));
    }
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > PAGE_MAX {
        return Err(Problem::bad_request(format!("limit: must be 1 to {PAGE_MAX}")));
    }
    let after = match p.after {
        Some(cursor) => Some(
            cursor
                .split_once('~')
                .map(|(at, id)| (at.to_string(), id.to_string()))
                .ok_or_else(|| Problem::bad_request("after: not a cursor this API returned"))?,
        ),
        None => None,
    };
    let filter = OrderFilter {
        state: p.state,
        customer: p.customer,
        placed_from: instant("placed_from", p.placed_from)?,
        placed_to: instant("placed_to", p.placed_to)?,
        after,
        limit,
    };
    let orders = api.queries.orders(&filter).await.map_err(query_problem)?;
    let next = (orders.len() == limit as usize)
        .then(|| orders.last().map(|o| format!("{}~{}", o.placed_at.as_deref().unwrap_or_default(), o.order_id)))
        .flatten();
    Ok(Json(OrderPage { orders, next }))
}

pub(crate) fn sku_inventory_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(inventory_of_sku))
}

pub(crate) fn location_inventory_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(inventory_at_location))
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct SkuInventory {
    sku: String,
    on_hand: i64,
    reserved: i64,
    available: i64,
    unavailable: i64,
    incoming: i64,
    /// One entry per location.
    #[schema(value_type = Vec<Object>)]
    locations: Vec<orderlog_projections::inventory::InventoryRow>,
}

/// A SKU's stock over all locations and at each.
#[utoipa::path(get, path = "/inventory/skus/{sku}", tag = "reads", params(("sku" = String, Path), WaitParams),
    responses((status = 200, body = SkuInventory), (status = 404, body = Problem)),
    security(("bearer" = ["shop", "operations"])))]
async fn inventory_of_sku(
    State(api): State<Shared>,
    Path(sku): Path<String>,
    Query(params): Query<WaitParams>,
) -> Result<Json<SkuInventory>, Problem> {
    wait(&api, orderlog_projections::inventory::InventoryTable::NAME, &params).await?;
    let locations = api.queries.inventory_of_sku(&sku).await.map_err(query_problem)?;
    if locations.is_empty() {
        return Err(Problem::not_found(format!("no stock of SKU '{sku}' anywhere")));
    }
    let mut total = SkuInventory { sku, ..SkuInventory::default() };
    for row in &locations {
        let l = &row.level;
        total.on_hand += l.on_hand;
        total.reserved += l.reserved;
        total.available += l.available;
        total.unavailable += l.unavailable;
        total.incoming += l.incoming;
    }
    total.locations = locations;
    Ok(Json(total))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LocationInventory {
    location: String,
    #[schema(value_type = Vec<Object>)]
    items: Vec<orderlog_projections::inventory::InventoryRow>,
}

/// Every stock item at a location.
#[utoipa::path(get, path = "/inventory/locations/{location}", tag = "reads",
    params(("location" = String, Path), WaitParams),
    responses((status = 200, body = LocationInventory), (status = 404, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn inventory_at_location(
    State(api): State<Shared>,
    Path(location): Path<String>,
    Query(params): Query<WaitParams>,
) -> Result<Json<LocationInventory>, Problem> {
    wait(&api, orderlog_projections::inventory::InventoryTable::NAME, &params).await?;
    let items = api.queries.inventory_at(&location).await.map_err(query_problem)?;
    if items.is_empty() {
        return Err(Problem::not_found(format!("no stock at location '{location}'")));
    }
    Ok(Json(LocationInventory { location, items }))
}

pub(crate) fn report_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(sales_report))
        .routes(routes!(payments_report))
        .routes(routes!(top_skus_report))
        .routes(routes!(top_promotions_report))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SalesParams {
    /// First day, `YYYY-MM-DD` (UTC).
    from: String,
    /// Last day, inclusive.
    to: String,
    /// ISO 4217 code; every currency when absent.
    currency: Option<String>,
}

fn currency(value: Option<String>) -> Result<Option<String>, Problem> {
    value
        .map(|c| {
            Currency::parse(&c)
                .map(|c| c.code().to_string())
                .map_err(|r| Problem::bad_request(format!("currency: {}", r.reason)))
        })
        .transpose()
}

/// The report's first and last day, and its currency; `None` for a range whose first day
/// is after its last (it holds no days).
type ReportRange = Option<(chrono::NaiveDate, chrono::NaiveDate, Option<String>)>;

fn report_range(p: SalesParams) -> Result<ReportRange, Problem> {
    let day = |name: &str, v: &str| {
        chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| Problem::bad_request(format!("{name}: '{v}' is not a date (YYYY-MM-DD)")))
    };
    let (from, to) = (day("from", &p.from)?, day("to", &p.to)?);
    let currency = currency(p.currency)?;
    Ok((from <= to).then_some((from, to, currency)))
}

/// Payments per day their intents were started, and currency: intents, how many were
/// authorized (and for how much), captured, refunded, voided, failed and disputed, and
/// the authorization success rate (authorized / (authorized + failed)).
#[utoipa::path(get, path = "/reports/payments", tag = "reads", params(SalesParams),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Problem)),
    security(("bearer" = ["analytics", "operations"])))]
async fn payments_report(
    State(api): State<Shared>,
    Query(p): Query<SalesParams>,
) -> Result<Json<Vec<orderlog_projections::queries::PaymentsDay>>, Problem> {
    let Some((from, to, currency)) = report_range(p)? else { return Ok(Json(Vec::new())) };
    let days =
        api.queries.payments(&from.to_string(), &to.to_string(), currency.as_deref()).await.map_err(query_problem)?;
    Ok(Json(days))
}

/// Sales per day and currency: orders, units, gross, discounts, tax, shipping, refunds,
/// net, average order value, cancellation rate, median seconds from placed to shipped.
#[utoipa::path(get, path = "/reports/sales", tag = "reads", params(SalesParams),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Problem)),
    security(("bearer" = ["analytics", "operations"])))]
async fn sales_report(State(api): State<Shared>, Query(p): Query<SalesParams>) -> Result<Json<Vec<SalesDay>>, Problem> {
    let Some((from, to, currency)) = report_range(p)? else { return Ok(Json(Vec::new())) };
    let days =
        api.queries.sales(&from.to_string(), &to.to_string(), currency.as_deref()).await.map_err(query_problem)?;
    Ok(Json(days))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TopParams {
    currency: Option<String>,
    /// Default 10, at most 500.
    limit: Option<u32>,
}

/// The best-selling SKUs by units, with revenue.
#[utoipa::path(get, path = "/reports/top-skus", tag = "reads", params(TopParams),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Problem)),
    security(("bearer" = ["analytics", "operations"])))]
async fn top_skus_report(State(api): State<Shared>, Query(p): Query<TopParams>) -> Result<Json<Vec<TopSku>>, Problem> {
    let limit = p.limit.unwrap_or(10);
    if limit == 0 || limit > PAGE_MAX {
        return Err(Problem::bad_request(format!("limit: must be 1 to {PAGE_MAX}")));
    }
    let currency = currency(p.currency)?;
    Ok(Json(api.queries.top_skus(currency.as_deref(), limit).await.map_err(query_problem)?))
}

/// The most-used promotions: orders that used each (not cancelled or expired) and the
/// discount it gave them.
#[utoipa::path(get, path = "/reports/top-promotions", tag = "reads", params(TopParams),
    responses((status = 200, body = Vec<Object>), (status = 400, body = Problem)),
    security(("bearer" = ["analytics", "operations"])))]
async fn top_promotions_report(
    State(api): State<Shared>,
    Query(p): Query<TopParams>,
) -> Result<Json<Vec<orderlog_projections::queries::TopPromotion>>, Problem> {
    let limit = p.limit.unwrap_or(10);
    if limit == 0 || limit > PAGE_MAX {
        return Err(Problem::bad_request(format!("limit: must be 1 to {PAGE_MAX}")));
    }
    let currency = currency(p.currency)?;
    Ok(Json(api.queries.top_promotions(currency.as_deref(), limit).await.map_err(query_problem)?))
}

// ---- history and feed ---------------------------------------------------------------------

/// An event as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Where a reader of the feed stands after this event: pass it back as `after`.
    cursor: String,
    position: u64,
    stream_id: String,
    version: u64,
    event_id: String,
    #[serde(rename = "type")]
    event_type: String,
    schema_version: u32,
    #[schema(value_type = Object)]
    data: serde_json::Value,
    #[schema(value_type = Object)]
    metadata: orderlog_store::Metadata,
    recorded_at: String,
    hash: String,
}

fn cursor_text(c: LogCursor) -> String {
    format!("{}.{}", c.commit, c.position)
}

fn parse_cursor(name: &str, text: &str) -> Result<LogCursor, Problem> {
    let bad = || Problem::bad_request(format!("{name}: '{text}' is not a feed cursor (as `cursor` of an event)"));
    let (commit, position) = text.split_once('.').ok_or_else(bad)?;
    Ok(LogCursor { commit: commit.parse().map_err(|_| bad())?, position: position.parse().map_err(|_| bad())? })
}

fn view(e: &RecordedEvent) -> EventView {
    EventView {
        cursor: cursor_text(LogCursor::after(e)),
        position: e.position,
        stream_id: e.stream_id.clone(),
        version: e.version,
        event_id: e.event_id.to_string(),
        event_type: e.event_type.clone(),
        schema_version: e.schema_version,
        data: serde_json::from_str(&e.payload).unwrap_or(serde_json::Value::Null),
        metadata: e.metadata.clone(),
        recorded_at: e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        hash: e.hash.clone(),
    }
}

pub(crate) fn stream_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(stream_history))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// First version (default 1).
    from_version: Option<u64>,
    /// Default 1 000, at most 10 000.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamHistory {
    stream_id: String,
    /// The stream's current version.
    version: u64,
    events: Vec<EventView>,
}

/// The events of one stream, in order, with who did each and why.
#[utoipa::path(get, path = "/streams/{stream_id}", tag = "reads", params(("stream_id" = String, Path), HistoryParams),
    responses((status = 200, body = StreamHistory), (status = 404, body = Problem)),
    security(("bearer" = ["audit"])))]
async fn stream_history(
    State(api): State<Shared>,
    Path(stream_id): Path<String>,
    Query(p): Query<HistoryParams>,
) -> Result<Json<StreamHistory>, Problem> {
    let limit = p.limit.unwrap_or(1_000);
    if limit == 0 || limit > FEED_MAX {
        return Err(Problem::bad_request(format!("limit: must be 1 to {FEED_MAX}")));
    }
    let version = api.store.stream_version(&stream_id).await.map_err(Problem::internal)?;
    if version == 0 {
        return Err(Problem::not_found(format!("no stream '{stream_id}'")));
    }
    let events = api
        .store
        .read_stream(&stream_id, p.from_version.unwrap_or(1).max(1), limit)
        .await
        .map_err(Problem::internal)?;
    Ok(Json(StreamHistory { stream_id, version, events: events.iter().map(view).collect() }))
}

pub(crate) fn feed_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(feed)).routes(routes!(live_feed))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FeedParams {
    /// The `cursor` of the last event read (from the start when absent).
    after: Option<String>,
    /// Default 1 000, at most 10 000.
    limit: Option<u32>,
}

/// The global log in order as NDJSON (one event per line), from after a cursor. The
/// `Orderlog-Next-After` header is the cursor to resume from.
#[utoipa::path(get, path = "/events", tag = "feed", params(FeedParams),
    responses((status = 200, description = "NDJSON, one EventView per line", content_type = "application/x-ndjson"),
        (status = 400, body = Problem)),
    security(("bearer" = ["audit", "analytics"])))]
async fn feed(State(api): State<Shared>, Query(p): Query<FeedParams>) -> Result<Response, Problem> {
    let after = p.after.as_deref().map(|a| parse_cursor("after", a)).transpose()?.unwrap_or(LogCursor::START);
    let limit = p.limit.unwrap_or(1_000);
    if limit == 0 || limit > FEED_MAX {
        return Err(Problem::bad_request(format!("limit: must be 1 to {FEED_MAX}")));
    }
    let events = api.store.read_all(after, limit).await.map_err(Problem::internal)?;
    let next = events.last().map_or(after, LogCursor::after);
    let mut body = Vec::new();
    for e in &events {
        serde_json::to_writer(&mut body, &view(e)).map_err(Problem::internal)?;
        body.push(b'\n');
    }
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert("orderlog-next-after", HeaderValue::from_str(&cursor_text(next)).map_err(Problem::internal)?);
    Ok(response)
}

/// The log live, as Server-Sent Events: each event's `id` is its cursor, so a client that
/// reconnects with `Last-Event-ID` (or `after`) resumes exactly after the last event it got.
#[utoipa::path(get, path = "/events/live", tag = "feed", params(FeedParams),
    responses((status = 200, description = "text/event-stream; event = type, id = cursor, data = EventView",
        content_type = "text/event-stream"), (status = 400, body = Problem)),
    security(("bearer" = ["audit", "analytics"])))]
async fn live_feed(
    State(api): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<FeedParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let after = match last.or(p.after) {
        Some(text) => parse_cursor("Last-Event-ID", &text)?,
        None => LogCursor::START,
    };
    let store: Arc<dyn EventStore> = api.store.clone();
    let stream = futures_util::stream::unfold(
        (store, after, VecDeque::<RecordedEvent>::new()),
        |(store, mut cursor, mut buffered)| async move {
            loop {
                if let Some(e) = buffered.pop_front() {
                    cursor = LogCursor::after(&e);
                    let data = serde_json::to_string(&view(&e)).unwrap_or_default();
                    let event = Event::default().id(cursor_text(cursor)).event(e.event_type.clone()).data(data);
                    return Some((Ok(event), (store, cursor, buffered)));
                }
                match store.read_all(cursor, 500).await {
                    Ok(batch) if !batch.is_empty() => buffered.extend(batch),
                    Ok(_) => {
                        let _ = store.wait_for(cursor, Duration::from_secs(15)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "live feed: reading the log failed; ending the stream");
                        return None;
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
