//! Command routes: carts and checkout (`shop`); orders, stock and shipments (`operations`).
//!
//! Each route turns its path and body into one [`Command`] and runs it through the command
//! service under the caller's principal (recorded as the actor of the events). The
//! `Idempotency-Key` header becomes the command id (scoped to the principal), so a retry
//! returns the first result, and the same key with another request is refused.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use orderlog_commands::{Command, CommandEnvelope, CommandError};
use orderlog_domain::cart::{Address, CartCommand, Customer, Discount, ShippingMethod};
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::order::{LineQuantity, OrderCommand, ReturnedLine};
use orderlog_domain::shipment::{CarrierEventKind, ShipmentCommand};
use orderlog_domain::stock::{AdjustmentReason, StockCommand};
use orderlog_domain::{CartId, Currency, LocationId, Money, OrderId, Rejection, ReturnId, ShipmentId, Sku, StockKey};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Principal;
use crate::body::Body;
use crate::problem::Problem;
use crate::Shared;

/// The namespace of order ids made from cart ids (UUID v5).
const ORDER_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f72_6465_726c_6f67_2d6f_7264_6572_6964);

/// Longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 200;

/// What a command did.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CommandResult {
    /// The command id: `{principal}:{Idempotency-Key}`, or generated.
    pub command_id: String,
    pub events_appended: u32,
    /// Every stream the command wrote or checked, at its version afterwards.
    pub streams: Vec<StreamAt>,
    /// Global position of the command's last event; pass it as `wait_for` to a read to
    /// read your own write. Absent when the command changed nothing.
    pub position: Option<u64>,
    /// The order concerned, where there is one (checkout: the order placed).
    pub order_id: Option<String>,
    /// The cart concerned, for cart commands and checkout (a cart made without an id: the
    /// id it was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cart_id: Option<String>,
    /// The shipment concerned, for shipment commands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipment_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StreamAt {
    pub stream_id: String,
    pub version: u64,
}

/// Runs `command` for `principal`; `name` labels it in metrics.
pub(crate) async fn run(
    api: &Shared,
    principal: &Principal,
    headers: &HeaderMap,
    name: &'static str,
    command: Command,
) -> Result<Response, Problem> {
    let key = match headers.get("idempotency-key") {
        Some(value) => {
            let key = value.to_str().ok().filter(|k| {
                !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_BYTES_MAX && k.chars().all(|c| c.is_ascii_graphic())
            });
            let Some(key) = key else {
                return Err(Problem::bad_request(format!(
                    "Idempotency-Key: use 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters"
                )));
            };
            key.to_string()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let (cart_id, shipment_id) = match &command {
        Command::Cart { cart_id, .. } => (Some(cart_id.to_string()), None),
        Command::Checkout { checkout } => (Some(checkout.cart_id.to_string()), None),
        Command::Shipment { shipment_id, .. } => (None, Some(shipment_id.to_string())),
        _ => (None, None),
    };
    let envelope = CommandEnvelope::new(format!("{}:{key}", principal.name), principal.name.clone(), command);
    match api.service.execute(envelope).await {
        Ok(outcome) => {
            api.metrics.command(name, if outcome.replayed { "replayed" } else { "ok" });
            let result = CommandResult {
                command_id: outcome.command_id,
                events_appended: outcome.events_appended,
                streams: outcome
                    .streams
                    .into_iter()
                    .map(|s| StreamAt { stream_id: s.stream_id, version: s.version })
                    .collect(),
                position: outcome.position,
                order_id: outcome.order_id.map(|o| o.to_string()),
                cart_id,
                shipment_id,
            };
            let mut response = Json(result).into_response();
            if outcome.replayed {
                response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            Ok(response)
        }
        Err(e) => {
            let outcome = match &e {
                CommandError::Rejected(_) | CommandError::Invalid(_) | CommandError::IdempotencyKeyReused { .. } => {
                    "rejected"
                }
                CommandError::TooManyConflicts { .. } => "conflict",
                _ => "error",
            };
            api.metrics.command(name, outcome);
            Err(e.into())
        }
    }
}

fn id<T>(parsed: Result<T, Rejection>) -> Result<T, Problem> {
    parsed.map_err(|r| Problem::bad_request(format!("path: {}", r.reason)))
}

pub(crate) fn cart_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(create_cart))
        .routes(routes!(add_item))
        .routes(routes!(change_quantity, remove_item))
        .routes(routes!(apply_discount, remove_discount))
        .routes(routes!(set_contact))
        .routes(routes!(set_shipping_address))
        .routes(routes!(select_shipping_method))
        .routes(routes!(checkout))
}

pub(crate) fn operations_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(cancel_order))
        .routes(routes!(record_payment))
        .routes(routes!(complete_order))
        .routes(routes!(request_return))
        .routes(routes!(receive_return))
        .routes(routes!(receive_stock))
        .routes(routes!(adjust_stock))
        .routes(routes!(set_safety_stock))
        .routes(routes!(expect_incoming))
        .routes(routes!(set_backorders))
        .routes(routes!(create_shipment))
        .routes(routes!(pack_shipment))
        .routes(routes!(ship_shipment))
        .routes(routes!(deliver_shipment))
        .routes(routes!(delivery_failed))
        .routes(routes!(cancel_shipment))
}

// ---- carts ------------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCart {
    /// The cart's id; generated when absent.
    #[schema(value_type = Option<String>)]
    pub cart_id: Option<CartId>,
    /// ISO 4217 code.
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// `{"kind": "guest", "email": …}` or `{"kind": "registered", "customer_id": …, "email": …}`.
    #[schema(value_type = Object)]
    pub customer: Customer,
}

/// Opens a cart.
#[utoipa::path(post, path = "/carts", tag = "carts", request_body = CreateCart,
    responses((status = 200, body = CommandResult), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn create_cart(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    Body(body): Body<CreateCart>,
) -> Result<Response, Problem> {
    let cart_id = match body.cart_id {
        Some(id) => id,
        None => id(CartId::parse(format!("cart-{}", uuid::Uuid::new_v4().simple())))?,
    };
    let command = CartCommand::Create { currency: body.currency, customer: body.customer };
    run(&api, &p, &headers, "cart.create", Command::Cart { cart_id, command }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    #[schema(value_type = String)]
    pub sku: Sku,
    pub quantity: u32,
    /// `{"amount": 1250, "currency": "EUR"}`: minor units.
    #[schema(value_type = Object)]
    pub unit_price: Money,
}

/// Adds units of a SKU to a cart.
#[utoipa::path(post, path = "/carts/{cart_id}/items", tag = "carts", request_body = AddItem,
    params(("cart_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn add_item(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<AddItem>,
) -> Result<Response, Problem> {
    let command = CartCommand::AddItem { sku: body.sku, quantity: body.quantity, unit_price: body.unit_price };
    run(&api, &p, &headers, "cart.add_item", Command::Cart { cart_id: id(CartId::parse(cart_id))?, command }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeQuantity {
    pub quantity: u32,
}

/// Sets the units of a SKU in a cart.
#[utoipa::path(patch, path = "/carts/{cart_id}/items/{sku}", tag = "carts", request_body = ChangeQuantity,
    params(("cart_id" = String, Path), ("sku" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn change_quantity(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((cart_id, sku)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body<ChangeQuantity>,
) -> Result<Response, Problem> {
    let command = CartCommand::ChangeQuantity { sku: id(Sku::parse(sku))?, quantity: body.quantity };
    run(&api, &p, &headers, "cart.change_quantity", Command::Cart { cart_id: id(CartId::parse(cart_id))?, command })
        .await
}

/// Removes a SKU from a cart.
#[utoipa::path(delete, path = "/carts/{cart_id}/items/{sku}", tag = "carts",
    params(("cart_id" = String, Path), ("sku" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 404, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn remove_item(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((cart_id, sku)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let command = CartCommand::RemoveItem { sku: id(Sku::parse(sku))? };
    run(&api, &p, &headers, "cart.remove_item", Command::Cart { cart_id: id(CartId::parse(cart_id))?, command }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyDiscount {
    /// `{"code": "SPRING10", "kind": {"kind": "percentage", "basis_points": 1000}}` or a
    /// `fixed` kind with an `amount`.
    #[schema(value_type = Object)]
    pub discount: Discount,
}

/// Applies a discount code to a cart.
#[utoipa::path(put, path = "/carts/{cart_id}/discount", tag = "carts", request_body = ApplyDiscount,
    params(("cart_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 422, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn apply_discount(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<ApplyDiscount>,
) -> Result<Response, Problem> {
    let command = CartCommand::ApplyDiscount { discount: body.discount };
    run(&api, &p, &headers, "cart.apply_discount", Command::Cart { cart_id: id(CartId::parse(cart_id))?, command })
        .await
}

/// Removes a cart's discount.
#[utoipa::path(delete, path = "/carts/{cart_id}/discount", tag = "carts", params(("cart_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn remove_discount(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let command = CartCommand::RemoveDiscount {};
    run(&api, &p, &headers, "cart.remove_discount", Command::Cart { cart_id: id(CartId::parse(cart_id))?, command })
        .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetContact {
    pub email: String,
}

/// Sets a cart's contact e-mail.
#[utoipa::path(put, path = "/carts/{cart_id}/contact", tag = "carts", request_body = SetContact,
    params(("cart_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 422, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn set_contact(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<SetContact>,
) -> Result<Response, Problem> {
    let command = CartCommand::SetContact { email: body.email };
    run(&api, &p, &headers, "cart.set_contact", Command::Cart { cart_id: id(CartId::parse(cart_id))?, command }).await
}

/// Sets a cart's shipping address: `name`, `line1`, `line2` (optional), `city`,
/// `postal_code`, `country` (ISO 3166-1 alpha-2).
#[utoipa::path(put, path = "/carts/{cart_id}/shipping-address", tag = "carts", request_body = Object,
    params(("cart_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 422, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn set_shipping_address(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    Body(address): Body<Address>,
) -> Result<Response, Problem> {
    let command = CartCommand::SetShippingAddress { address };
    run(
        &api,
        &p,
        &headers,
        "cart.set_shipping_address",
        Command::Cart { cart_id: id(CartId::parse(cart_id))?, command },
    )
    .await
}

/// Selects a cart's shipping method: `{"id": "dhl", "price": {"amount": 490, "currency": "EUR"}}`.
#[utoipa::path(put, path = "/carts/{cart_id}/shipping-method", tag = "carts", request_body = Object,
    params(("cart_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 422, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn select_shipping_method(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    Body(method): Body<ShippingMethod>,
) -> Result<Response, Problem> {
    let command = CartCommand::SelectShippingMethod { method };
    run(
        &api,
        &p,
        &headers,
        "cart.select_shipping_method",
        Command::Cart { cart_id: id(CartId::parse(cart_id))?, command },
    )
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    /// The new order's id; when absent, made from the cart's id (so a second checkout of
    /// the cart names the same order).
    #[schema(value_type = Option<String>)]
    pub order_id: Option<OrderId>,
    /// The location that supplies every line not named in `sources`.
    #[schema(value_type = String)]
    pub location: LocationId,
    /// Per-SKU locations overriding `location`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub sources: BTreeMap<Sku, LocationId>,
    /// Tax in basis points on the discounted subtotal plus shipping.
    #[serde(default)]
    pub tax_rate_bps: u32,
}

/// Checks a cart out: reserves stock for every line and places the order, or refuses with
/// 409 and the lines that are short.
#[utoipa::path(post, path = "/carts/{cart_id}/checkout", tag = "carts", request_body = Checkout,
    params(("cart_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["shop"])))]
async fn checkout(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(cart_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Checkout>,
) -> Result<Response, Problem> {
    let cart_id = id(CartId::parse(cart_id))?;
    // Without an order id, the order's id follows from the cart's, so checking the same
    // cart out again names the same order.
    let order_id = match body.order_id {
        Some(id) => id,
        None => id(OrderId::parse(format!(
            "order-{}",
            uuid::Uuid::new_v5(&ORDER_ID_NAMESPACE, cart_id.as_str().as_bytes()).simple()
        )))?,
    };
    let checkout = CheckoutCommand {
        cart_id,
        order_id,
        location: body.location,
        sources: body.sources,
        tax_rate_bps: body.tax_rate_bps,
    };
    run(&api, &p, &headers, "checkout", Command::Checkout { checkout }).await
}

// ---- orders -----------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub reason: String,
}

/// Cancels an order and releases its reservations.
#[utoipa::path(post, path = "/orders/{order_id}/cancel", tag = "orders", request_body = Reason,
    params(("order_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn cancel_order(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Reason>,
) -> Result<Response, Problem> {
    let command = Command::CancelOrder { order_id: id(OrderId::parse(order_id))?, reason: body.reason };
    run(&api, &p, &headers, "order.cancel", command).await
}

/// A payment event reported by the payment provider.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaymentEvent {
    Authorized {
        #[schema(value_type = Object)]
        amount: Money,
        provider_ref: String,
        provider_event_id: String,
    },
    Captured {
        #[schema(value_type = Object)]
        amount: Money,
        provider_event_id: String,
    },
    Voided {
        provider_event_id: String,
    },
    Refunded {
        #[schema(value_type = Object)]
        amount: Money,
        provider_event_id: String,
    },
    Failed {
        reason: String,
        provider_event_id: String,
    },
}

/// Records a payment event of an order (authorized, captured, voided, refunded, failed).
/// The provider's event id makes a redelivered event a no-op.
#[utoipa::path(post, path = "/orders/{order_id}/payments", tag = "orders", request_body = PaymentEvent,
    params(("order_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn record_payment(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<PaymentEvent>,
) -> Result<Response, Problem> {
    let (name, command) = match body {
        PaymentEvent::Authorized { amount, provider_ref, provider_event_id } => {
            ("order.payment_authorized", OrderCommand::AuthorizePayment { amount, provider_ref, provider_event_id })
        }
        PaymentEvent::Captured { amount, provider_event_id } => {
            ("order.payment_captured", OrderCommand::CapturePayment { amount, provider_event_id })
        }
        PaymentEvent::Voided { provider_event_id } => {
            ("order.payment_voided", OrderCommand::VoidPayment { provider_event_id })
        }
        PaymentEvent::Refunded { amount, provider_event_id } => {
            ("order.payment_refunded", OrderCommand::RefundPayment { amount, provider_event_id })
        }
        PaymentEvent::Failed { reason, provider_event_id } => {
            ("order.payment_failed", OrderCommand::RecordPaymentFailure { reason, provider_event_id })
        }
    };
    run(&api, &p, &headers, name, Command::Order { order_id: id(OrderId::parse(order_id))?, command }).await
}

/// Completes a delivered order.
#[utoipa::path(post, path = "/orders/{order_id}/complete", tag = "orders", params(("order_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn complete_order(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let command = OrderCommand::Complete {};
    run(&api, &p, &headers, "order.complete", Command::Order { order_id: id(OrderId::parse(order_id))?, command }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestReturn {
    #[schema(value_type = String)]
    pub return_id: ReturnId,
    /// `[{"sku": "mug", "quantity": 1}]`
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<LineQuantity>,
    pub reason: String,
}

/// Opens a return of delivered units.
#[utoipa::path(post, path = "/orders/{order_id}/returns", tag = "orders", request_body = RequestReturn,
    params(("order_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn request_return(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<RequestReturn>,
) -> Result<Response, Problem> {
    let command = OrderCommand::RequestReturn { return_id: body.return_id, lines: body.lines, reason: body.reason };
    run(&api, &p, &headers, "order.request_return", Command::Order { order_id: id(OrderId::parse(order_id))?, command })
        .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiveReturn {
    /// `[{"sku": "mug", "quantity": 1, "restock": true}]`
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<ReturnedLine>,
}

/// Records returned units as received (restocking those marked `restock`).
#[utoipa::path(post, path = "/orders/{order_id}/returns/{return_id}/receive", tag = "orders",
    request_body = ReceiveReturn, params(("order_id" = String, Path), ("return_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn receive_return(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((order_id, return_id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body<ReceiveReturn>,
) -> Result<Response, Problem> {
    let command = Command::ReceiveReturn {
        order_id: id(OrderId::parse(order_id))?,
        return_id: id(ReturnId::parse(return_id))?,
        lines: body.lines,
    };
    run(&api, &p, &headers, "order.receive_return", command).await
}

// ---- stock ------------------------------------------------------------------------------

fn stock_key(sku: String, location: String) -> Result<StockKey, Problem> {
    Ok(StockKey::new(id(Sku::parse(sku))?, id(LocationId::parse(location))?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quantity {
    pub quantity: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub quantity: u32,
    /// The supplier's delivery reference (a delivery note, a purchase order).
    pub reference: Option<String>,
}

/// Receives units into stock.
#[utoipa::path(post, path = "/stock/{sku}/{location}/receipts", tag = "stock", request_body = Receipt,
    params(("sku" = String, Path), ("location" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn receive_stock(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((sku, location)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body<Receipt>,
) -> Result<Response, Problem> {
    let command = StockCommand::Receive { quantity: body.quantity, reference: body.reference };
    run(&api, &p, &headers, "stock.receive", Command::Stock { stock: stock_key(sku, location)?, command }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjust {
    /// Units added (positive) or removed (negative).
    pub delta: i64,
    /// `correction`, `cycle_count`, `damage`, `shrinkage` or `return_to_stock`.
    #[schema(value_type = String)]
    pub reason: AdjustmentReason,
    /// Only adjust if on-hand is exactly this now (cycle counts).
    pub expected_on_hand: Option<i64>,
}

/// Adjusts on-hand units, with a reason.
#[utoipa::path(post, path = "/stock/{sku}/{location}/adjustments", tag = "stock", request_body = Adjust,
    params(("sku" = String, Path), ("location" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn adjust_stock(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((sku, location)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body<Adjust>,
) -> Result<Response, Problem> {
    let command =
        StockCommand::Adjust { delta: body.delta, reason: body.reason, expected_on_hand: body.expected_on_hand };
    run(&api, &p, &headers, "stock.adjust", Command::Stock { stock: stock_key(sku, location)?, command }).await
}

/// Sets the units held back from sale.
#[utoipa::path(put, path = "/stock/{sku}/{location}/safety-stock", tag = "stock", request_body = Quantity,
    params(("sku" = String, Path), ("location" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn set_safety_stock(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((sku, location)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body<Quantity>,
) -> Result<Response, Problem> {
    let command = StockCommand::SetSafetyStock { quantity: body.quantity };
    run(&api, &p, &headers, "stock.set_safety_stock", Command::Stock { stock: stock_key(sku, location)?, command })
        .await
}

/// Records units expected to arrive.
#[utoipa::path(post, path = "/stock/{sku}/{location}/incoming", tag = "stock", request_body = Quantity,
    params(("sku" = String, Path), ("location" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn expect_incoming(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((sku, location)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body<Quantity>,
) -> Result<Response, Problem> {
    let command = StockCommand::ExpectIncoming { quantity: body.quantity };
    run(&api, &p, &headers, "stock.expect_incoming", Command::Stock { stock: stock_key(sku, location)?, command }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backorders {
    pub allowed: bool,
}

/// Allows or forbids selling beyond available units.
#[utoipa::path(put, path = "/stock/{sku}/{location}/backorders", tag = "stock", request_body = Backorders,
    params(("sku" = String, Path), ("location" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn set_backorders(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path((sku, location)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body<Backorders>,
) -> Result<Response, Problem> {
    let command = StockCommand::SetBackorders { allowed: body.allowed };
    run(&api, &p, &headers, "stock.set_backorders", Command::Stock { stock: stock_key(sku, location)?, command }).await
}

// ---- shipments --------------------------------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShipment {
    /// Generated when absent.
    #[schema(value_type = Option<String>)]
    pub shipment_id: Option<ShipmentId>,
    #[schema(value_type = String)]
    pub order_id: OrderId,
    #[schema(value_type = String)]
    pub location: LocationId,
    /// `[{"sku": "mug", "quantity": 2}]`
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<LineQuantity>,
}

/// Creates a shipment of an order's lines from one location.
#[utoipa::path(post, path = "/shipments", tag = "shipments", request_body = CreateShipment,
    responses((status = 200, body = CommandResult), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn create_shipment(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    Body(body): Body<CreateShipment>,
) -> Result<Response, Problem> {
    let shipment_id = match body.shipment_id {
        Some(id) => id,
        None => id(ShipmentId::parse(format!("shipment-{}", uuid::Uuid::new_v4().simple())))?,
    };
    let command = ShipmentCommand::Create { order_id: body.order_id, location: body.location, lines: body.lines };
    run(&api, &p, &headers, "shipment.create", Command::Shipment { shipment_id, command }).await
}

/// Marks a shipment packed.
#[utoipa::path(post, path = "/shipments/{shipment_id}/pack", tag = "shipments",
    params(("shipment_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn pack_shipment(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(shipment_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let command = ShipmentCommand::Pack {};
    let shipment_id = id(ShipmentId::parse(shipment_id))?;
    run(&api, &p, &headers, "shipment.pack", Command::Shipment { shipment_id, command }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ship {
    pub carrier: String,
    pub tracking_number: String,
}

/// Hands a shipment to a carrier: commits its stock and marks its order lines shipped.
#[utoipa::path(post, path = "/shipments/{shipment_id}/ship", tag = "shipments", request_body = Ship,
    params(("shipment_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn ship_shipment(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(shipment_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Ship>,
) -> Result<Response, Problem> {
    let command = ShipmentCommand::Ship { carrier: body.carrier, tracking_number: body.tracking_number };
    let shipment_id = id(ShipmentId::parse(shipment_id))?;
    run(&api, &p, &headers, "shipment.ship", Command::Shipment { shipment_id, command }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CarrierReport {
    /// The carrier's id of this report (a redelivered report is a no-op); generated when absent.
    pub event_id: Option<String>,
    /// When it happened (RFC 3339); now when absent.
    #[schema(value_type = Option<String>)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Why the delivery failed (delivery-failed only).
    pub reason: Option<String>,
}

async fn carrier_event(
    api: &Shared,
    p: &Principal,
    headers: &HeaderMap,
    shipment_id: String,
    body: CarrierReport,
    kind: CarrierEventKind,
    name: &'static str,
) -> Result<Response, Problem> {
    let command = ShipmentCommand::RecordCarrierEvent {
        event_id: body.event_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        kind,
        occurred_at: body.occurred_at.unwrap_or_else(Utc::now),
    };
    let shipment_id = id(ShipmentId::parse(shipment_id))?;
    run(api, p, headers, name, Command::Shipment { shipment_id, command }).await
}

/// Records a shipment delivered (its order lines become delivered).
#[utoipa::path(post, path = "/shipments/{shipment_id}/deliver", tag = "shipments", request_body = CarrierReport,
    params(("shipment_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn deliver_shipment(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(shipment_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<CarrierReport>,
) -> Result<Response, Problem> {
    if body.reason.is_some() {
        return Err(Problem::unprocessable("field `reason`: only a failed delivery has a reason"));
    }
    carrier_event(&api, &p, &headers, shipment_id, body, CarrierEventKind::Delivered, "shipment.deliver").await
}

/// Records a failed delivery attempt.
#[utoipa::path(post, path = "/shipments/{shipment_id}/delivery-failed", tag = "shipments",
    request_body = CarrierReport, params(("shipment_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn delivery_failed(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(shipment_id): Path<String>,
    headers: HeaderMap,
    Body(mut body): Body<CarrierReport>,
) -> Result<Response, Problem> {
    let Some(reason) = body.reason.take() else {
        return Err(Problem::unprocessable("field `reason`: say why the delivery failed"));
    };
    let kind = CarrierEventKind::DeliveryFailed { reason };
    carrier_event(&api, &p, &headers, shipment_id, body, kind, "shipment.delivery_failed").await
}

/// Cancels a shipment that has not shipped.
#[utoipa::path(post, path = "/shipments/{shipment_id}/cancel", tag = "shipments", request_body = Reason,
    params(("shipment_id" = String, Path)),
    responses((status = 200, body = CommandResult), (status = 409, body = Problem)),
    security(("bearer" = ["operations"])))]
async fn cancel_shipment(
    State(api): State<Shared>,
    Extension(p): Extension<Principal>,
    Path(shipment_id): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Reason>,
) -> Result<Response, Problem> {
    let command = ShipmentCommand::Cancel { reason: body.reason };
    let shipment_id = id(ShipmentId::parse(shipment_id))?;
    run(&api, &p, &headers, "shipment.cancel", Command::Shipment { shipment_id, command }).await
}

/// Query parameters shared by reads that can wait for a position.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// Wait until the read model has passed this global position (a command's `position`).
    pub wait_for: Option<u64>,
    /// How long to wait, in milliseconds (default 5 000, at most 30 000).
    pub timeout_ms: Option<u64>,
}

pub(crate) fn created(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.status = StatusCode::CREATED;
    Response::from_parts(parts, body)
}
