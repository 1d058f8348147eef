//! Command routes, declared once each: a request type implements [`CommandRoute`] (its
//! name, method, path, scope, summary, the JSON Schema of its body, and how it becomes a
//! [`Command`]) and is listed in [`routes`]. One generic handler serves every declaration
//! (path, body, `Idempotency-Key`, actor, metrics, problems, response), and the OpenAPI
//! operation of each is made from the same declaration, so a route cannot be served
//! without being documented, nor documented otherwise than it is served.
//!
//! The `Idempotency-Key` header becomes the command id (scoped to the principal), so a
//! retry returns the first result, and the same key with another request is refused.

mod carts;
pub(crate) mod catalog;
mod orders;
mod shipments;
mod stock;
pub(crate) mod wire;

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use axum::{Extension, Json};
use orderlog_commands::{Command, CommandEnvelope, CommandError};
use orderlog_domain::order::OrderCommand;
use orderlog_domain::Rejection;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::auth::{Principal, Scope};
use crate::body::Body;
use crate::problem::Problem;
use crate::Shared;

/// Longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 200;

/// How a command's body and path become a [`Command`].
pub(crate) type Translate<B> = fn(B, &Params) -> Result<Command, Problem>;

/// A command route: its method and path, its one name (its OpenAPI `operationId` and its
/// metrics label), the scope it needs and what it does.
#[derive(Clone, Copy)]
pub(crate) struct Route {
    pub method: Verb,
    /// An axum path template; its `{parameters}` are ids.
    pub path: &'static str,
    pub name: &'static str,
    pub scope: Scope,
    pub summary: &'static str,
}

/// The methods commands are served by.
#[derive(Clone, Copy)]
pub(crate) enum Verb {
    Post,
    Put,
    Patch,
    Delete,
}

/// A command's request body and its JSON Schema, exact (see `openapi`).
pub(crate) trait RequestBody: DeserializeOwned + Send + 'static {
    /// `None` for [`NoBody`].
    fn schema() -> Option<Value>;

    /// The metrics label, where the body picks it (a payment event's type).
    fn label(&self) -> Option<&'static str> {
        None
    }
}

/// The body of a command without one: its route reads no body.
#[derive(Deserialize)]
pub(crate) struct NoBody;

impl RequestBody for NoBody {
    fn schema() -> Option<Value> {
        None
    }
}

/// Declares a request body: the struct (unknown fields refused) and its JSON Schema, an
/// object with each field's schema (`req(…)` for a field the body must have, `opt(…)` for
/// one it may leave out).
macro_rules! body {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $fvis:vis $field:ident: $ty:ty = $schema:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* $fvis $field: $ty),+
        }

        impl $crate::commands::RequestBody for $name {
            fn schema() -> Option<serde_json::Value> {
                Some($crate::openapi::schema::fields(vec![$((stringify!($field), $schema)),+]))
            }
        }
    };
}
pub(crate) use body;

/// The registry: one line per command — method, path, name, scope, how its body becomes a
/// command (a function of the area's module, or a closure when that is one call), and
/// what it does.
macro_rules! commands {
    ($api:ident; $($verb:ident $path:literal $name:literal $scope:ident $translate:expr, $summary:literal;)+) => {{
        let mut router = OpenApiRouter::new();
        $(
            let route = Route { method: Verb::$verb, path: $path, name: $name, scope: Scope::$scope, summary: $summary };
            router = router.routes(declare($api, route, $translate));
        )+
        router
    }};
}

/// Every command route.
#[rustfmt::skip]
pub(crate) fn routes(api: &Shared) -> OpenApiRouter<Shared> {
    commands! { api;
        Post   "/carts"                                         "cart.create"                 Shop       carts::create, "Opens a cart; its id is generated when the body has none.";
        Post   "/carts/{cart_id}/items"                         "cart.add_item"               Shop       carts::add_item, "Adds units of a SKU to a cart.";
        Patch  "/carts/{cart_id}/items/{sku}"                   "cart.change_quantity"        Shop       carts::change_quantity, "Sets the units of a SKU in a cart.";
        Delete "/carts/{cart_id}/items/{sku}"                   "cart.remove_item"            Shop       carts::remove_item, "Removes a SKU from a cart.";
        Put    "/carts/{cart_id}/discount"                      "cart.apply_discount"         Shop       carts::apply_discount, "Applies a discount code to a cart.";
        Delete "/carts/{cart_id}/discount"                      "cart.remove_discount"        Shop       carts::remove_discount, "Removes a cart's discount.";
        Put    "/carts/{cart_id}/contact"                       "cart.set_contact"            Shop       carts::set_contact, "Sets a cart's contact e-mail.";
        Put    "/carts/{cart_id}/shipping-address"              "cart.set_shipping_address"   Shop       carts::set_shipping_address, "Sets a cart's shipping address.";
        Put    "/carts/{cart_id}/billing-address"               "cart.set_billing_address"    Shop       carts::set_billing_address, "Sets a cart's billing address (where a cart that ships nothing is taxed).";
        Put    "/carts/{cart_id}/shipping-method"               "cart.select_shipping_method" Shop       carts::select_shipping_option, "Selects one of the shipping options the zone serving the cart's address offers (listed by GET /carts/{cart_id}); its price is the zone's.";
        Post   "/carts/{cart_id}/checkout"                      "checkout"                    Shop       carts::checkout, "Checks a cart out: reserves stock for every line and places the order, or refuses with 409 and the lines that are short.";
        Post   "/orders/{order_id}/cancel"                      "order.cancel"                Operations orders::cancel, "Cancels an order and releases its reservations.";
        Post   "/orders/{order_id}/payments"                    "order.record_payment"        Operations orders::record_payment, "Records a payment event of an order (authorized, captured, voided, refunded, failed); the provider's event id makes a redelivered event a no-op.";
        Post   "/orders/{order_id}/pay"                         "order.pay"                   Shop       orders::pay, "Pays for a placed order through the payment provider: starts a payment intent for the order's total (the server's amount) with the shopper's payment method and asks the provider to authorize it. The outcome follows (GET /orders/{order_id}/payments); an authorization confirms the order.";
        Post   "/payments/{payment_id}/refunds"                 "payment.refund"              Operations orders::refund, "Refunds part or all of what a payment intent captured (a goodwill refund; returns and cancellations are refunded by the payment process).";
        Post   "/orders/{order_id}/complete"                    "order.complete"              Operations orders::complete, "Completes a delivered order.";
        Post   "/orders/{order_id}/returns"                     "order.request_return"        Operations orders::request_return, "Opens a return of delivered units.";
        Post   "/orders/{order_id}/hold"                        "order.place_hold"            Operations |hold: orders::Reason, path: &Params| orders::order(path, OrderCommand::PlaceHold { reason: hold.reason }), "Puts an order on hold: it does not ship until the hold is released.";
        Post   "/orders/{order_id}/release-hold"                "order.release_hold"          Operations |_: NoBody, path: &Params| orders::order(path, OrderCommand::ReleaseHold {}), "Releases an order's hold, so that it can ship.";
        Post   "/orders/{order_id}/returns/{return_id}/receive" "order.receive_return"        Operations orders::receive_return, "Records returned units as received (restocking those marked `restock`).";
        Post   "/stock/{sku}/{location}/receipts"               "stock.receive"               Operations stock::receive, "Receives units into stock.";
        Post   "/stock/{sku}/{location}/adjustments"            "stock.adjust"                Operations stock::adjust, "Adjusts on-hand units, with a reason; with `expected_on_hand`, only if on-hand is exactly that now.";
        Put    "/stock/{sku}/{location}/safety-stock"           "stock.set_safety_stock"      Operations stock::set_safety_stock, "Sets the units held back from sale.";
        Post   "/stock/{sku}/{location}/incoming"               "stock.expect_incoming"       Operations stock::expect_incoming, "Records units expected to arrive.";
        Put    "/stock/{sku}/{location}/backorders"             "stock.set_backorders"        Operations stock::set_backorders, "Allows or forbids selling beyond available units.";
        Put    "/stock/{sku}/{location}/low-stock-threshold"    "stock.set_low_stock_threshold" Operations stock::set_low_stock_threshold, "Sets the available units below which the item is low: each crossing publishes the integration event stock.low.";
        Post   "/products"                                      "product.create"              Catalog    catalog::create_product, "Creates a draft product with its first variants (one SKU each, which no other product may hold); its id is generated when the body has none.";
        Patch  "/products/{product_id}"                         "product.edit"                Catalog    catalog::edit_product, "Changes a product's title or tax class.";
        Post   "/products/{product_id}/variants"                "product.add_variant"         Catalog    catalog::add_variant, "Adds a variant (a SKU no other product holds) to a product.";
        Put    "/products/{product_id}/variants/{sku}/prices"   "product.set_prices"          Catalog    catalog::set_variant_prices, "Replaces a variant's default prices (at most one per currency).";
        Post   "/products/{product_id}/variants/{sku}/archive"  "product.archive_variant"     Catalog    catalog::archive_variant, "Archives one variant: it can no longer be sold.";
        Post   "/products/{product_id}/publish"                 "product.publish"             Catalog    catalog::publish, "Puts a draft product on sale.";
        Post   "/products/{product_id}/archive"                 "product.archive"             Catalog    catalog::archive_product, "Takes a product off sale for good.";
        Post   "/price-lists"                                   "price_list.create"           Catalog    catalog::create_price_list, "Creates a price list in one currency, with a priority and the channel and time window it is in force for; its id is generated when the body has none.";
        Put    "/price-lists/{price_list_id}/prices"            "price_list.set_prices"       Catalog    catalog::set_list_prices, "Sets the prices of these SKUs in a price list (each in the list's currency); other SKUs keep theirs.";
        Delete "/price-lists/{price_list_id}/prices/{sku}"      "price_list.remove_price"     Catalog    catalog::remove_list_price, "Removes a SKU's price from a price list.";
        Post   "/price-lists/{price_list_id}/archive"           "price_list.archive"          Catalog    catalog::archive_price_list, "Ends a price list for good: it prices nothing from then on.";
        Post   "/promotions"                                    "promotion.create"            Catalog    catalog::create_promotion, "Creates a promotion: its code, whether it applies by itself (automatic) or by code, what it takes off (a percentage, a fixed amount per order or per item, free shipping, or buy X get Y), its conditions (window, least subtotal, SKUs or products, customer group, first order), and how often it may be used in all and by one customer.";
        Post   "/promotions/{code}/archive"                     "promotion.archive"           Catalog    catalog::archive_promotion, "Ends a promotion for good.";
        Put    "/tax-regions/{region_id}"                       "tax_region.define"           Catalog    catalog::define_tax_region, "Defines a tax region (a country, or a country's subdivision such as US-CA): a rate per tax class, the default class, and the customer groups exempt from it.";
        Put    "/shipping-zones/{zone_id}"                      "shipping_zone.define"        Catalog    catalog::define_shipping_zone, "Defines a shipping zone: the countries it serves in one currency (no other zone of that currency may serve them) and its options (flat, free above a threshold, or by weight band).";
        Put    "/customers/{customer_id}/groups/{group}"        "customer.join_group"         Catalog    catalog::join_group, "Puts a registered customer in a customer group (price lists, promotions and tax exemptions may be for a group).";
        Delete "/customers/{customer_id}/groups/{group}"        "customer.leave_group"        Catalog    catalog::leave_group, "Takes a registered customer out of a customer group.";
        Post   "/shipments"                                     "shipment.create"             Operations shipments::create, "Creates a shipment of an order's lines from one location; its id is generated when the body has none.";
        Post   "/shipments/{shipment_id}/pack"                  "shipment.pack"               Operations shipments::pack, "Marks a shipment packed.";
        Post   "/shipments/{shipment_id}/ship"                  "shipment.ship"               Operations shipments::ship, "Hands a shipment to a carrier: dispatches its stock and marks its order lines shipped.";
        Post   "/shipments/{shipment_id}/deliver"               "shipment.deliver"            Operations shipments::deliver, "Records a shipment delivered (its order lines become delivered).";
        Post   "/shipments/{shipment_id}/delivery-failed"       "shipment.delivery_failed"    Operations shipments::delivery_failed, "Records a failed delivery attempt.";
        Post   "/shipments/{shipment_id}/cancel"                "shipment.cancel"             Operations shipments::cancel, "Cancels a shipment that has not shipped.";
    }
}

/// Where the declared body schema rides in an operation until `openapi::exact` makes it
/// the request body (utoipa's schema model lacks words the schemas use).
pub(crate) const BODY_EXTENSION: &str = "x-orderlog-body";

/// A declared command as a route and its OpenAPI operation.
fn declare<B: RequestBody>(api: &Shared, route: Route, translate: Translate<B>) -> UtoipaMethodRouter<Shared> {
    let tag = route.path.split('/').nth(1).unwrap_or_default();
    let mut operation = OperationBuilder::new()
        .operation_id(Some(route.name))
        .summary(Some(route.summary))
        .tag(tag)
        .security(SecurityRequirement::new("bearer", [route.scope.as_str()]))
        .response(
            "200",
            ResponseBuilder::new().description("what the command did").content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("CommandResult"))).build(),
            ),
        );
    for name in route.path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
        let string = utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String);
        let parameter = ParameterBuilder::new().name(name).parameter_in(ParameterIn::Path).required(Required::True);
        operation = operation.parameter(parameter.schema(Some(string)));
    }
    if let Some(schema) = B::schema() {
        let extensions = utoipa::openapi::extensions::ExtensionsBuilder::new().add(BODY_EXTENSION, schema).build();
        let body = RequestBodyBuilder::new()
            .content("application/json", ContentBuilder::new().build())
            .required(Some(Required::True))
            .build();
        operation = operation.request_body(Some(body)).extensions(Some(extensions));
    }
    let (method, filter) = match route.method {
        Verb::Post => (HttpMethod::Post, MethodFilter::POST),
        Verb::Put => (HttpMethod::Put, MethodFilter::PUT),
        Verb::Patch => (HttpMethod::Patch, MethodFilter::PATCH),
        Verb::Delete => (HttpMethod::Delete, MethodFilter::DELETE),
    };
    let paths = PathsBuilder::new().path(route.path, PathItem::new(method, operation.build())).build();
    let handler = move |State(api): State<Shared>, Extension(principal): Extension<Principal>, request: Request| {
        handle(api, principal, request, route, translate)
    };
    let method_router = axum::routing::on(filter, handler)
        .route_layer(middleware::from_fn_with_state((api.clone(), route.scope.alone()), crate::authorize));
    let mut schemas = vec![(CommandResult::name().into_owned(), CommandResult::schema())];
    CommandResult::schemas(&mut schemas);
    (schemas, paths, method_router)
}

/// The path parameters of a request, by name.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// The id named `name`, read by `parse` (a 400 naming it when it is not an id).
    pub fn id<T>(&self, name: &str, parse: impl FnOnce(String) -> Result<T, Rejection>) -> Result<T, Problem> {
        let value = self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
        id(parse(value))
    }
}

/// An id the server makes (a cart or shipment created without one).
pub(crate) fn id<T>(parsed: Result<T, Rejection>) -> Result<T, Problem> {
    parsed.map_err(|r| Problem::bad_request(format!("path: {}", r.reason)))
}

/// The one handler of every command route.
async fn handle<B: RequestBody>(
    api: Shared,
    principal: Principal,
    request: Request,
    route: Route,
    translate: Translate<B>,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let params = if route.path.contains('{') {
        match Path::<Vec<(String, String)>>::from_request_parts(&mut parts, &api).await {
            Ok(Path(params)) => params,
            Err(rejection) => return rejection.into_response(),
        }
    } else {
        Vec::new()
    };
    let headers = parts.headers.clone();
    let body = match B::schema() {
        None => match B::deserialize(serde::de::value::UnitDeserializer::<serde::de::value::Error>::new()) {
            Ok(body) => body,
            Err(e) => {
                return Problem::internal(format!("{}: a body without a schema: {e}", route.name)).into_response()
            }
        },
        Some(_) => match Body::<B>::from_request(Request::from_parts(parts, body), &api).await {
            Ok(Body(body)) => body,
            Err(problem) => return problem.into_response(),
        },
    };
    let label = body.label().unwrap_or(route.name);
    let result = match translate(body, &Params(params)) {
        Ok(command) => run(&api, &principal, &headers, label, command).await,
        Err(problem) => Err(problem),
    };
    result.into_response()
}

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
    /// Where the proof that the command's last event is in the log can be fetched (scope
    /// `audit`); absent when the command changed nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

/// A command's receipt: its last event's position and where to fetch the Merkle proof of it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Receipt {
    pub position: u64,
    /// `/proofs/inclusion?position=…`: the proof against the log as it is when fetched.
    pub inclusion_proof: String,
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
            api.metrics.command(name, if outcome.repeated { "repeated" } else { "ok" });
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
                receipt: outcome.position.map(|position| Receipt {
                    position,
                    inclusion_proof: format!("/proofs/inclusion?position={position}"),
                }),
            };
            let mut response = Json(result).into_response();
            if outcome.repeated {
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
