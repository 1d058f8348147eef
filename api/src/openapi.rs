//! What the OpenAPI document says beyond the route declarations, applied to every
//! operation in one place: every request body typed to its leaves with the bounds the
//! server checks (`additionalProperties: false` everywhere), every query parameter's
//! bounds, every error as `application/problem+json` with the Problem schema, the statuses
//! each kind of route can give, the one id grammar on every id, and links from a created
//! cart to the operations on it, so a stateful fuzzer can walk a shopping flow.
//!
//! The schemas here restate the domain's rules (`orderlog_domain` constants are used where
//! there is one); the schemathesis stage of `.ci/run` checks that server and document agree.

use orderlog_domain::cart::{EMAIL_CHARS_MAX, TEXT_CHARS_MAX};
use orderlog_domain::ids::{ID_BYTES_MAX, ID_PATTERN};
use orderlog_domain::money::AMOUNT_MAX;
use orderlog_domain::order::OrderStatus;
use orderlog_domain::Currency;
use serde_json::{json, Map, Value};

/// A character that is not blank (see `orderlog_domain::cart::is_blank`).
const CONTENT: &str = "[^\\s\\x00-\\x1f\\x7f-\\x9f]";

pub(crate) fn id() -> Value {
    json!({"type": "string", "pattern": ID_PATTERN, "maxLength": ID_BYTES_MAX})
}

pub(crate) fn nullable(mut schema: Value) -> Value {
    let ty = schema["type"].clone();
    schema["type"] = json!([ty, "null"]);
    schema
}

pub(crate) fn text() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": TEXT_CHARS_MAX, "pattern": CONTENT})
}

pub(crate) fn email() -> Value {
    let c = "[^@\\s\\x00-\\x1f\\x7f-\\x9f]";
    let d = "[^@.\\s\\x00-\\x1f\\x7f-\\x9f]";
    json!({"type": "string", "maxLength": EMAIL_CHARS_MAX, "pattern": format!("^{c}+@{d}{c}*[.]{c}*{d}$")})
}

pub(crate) fn int(min: i64, max: i64) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": min, "maximum": max})
}

pub(crate) fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

pub(crate) fn money(min: i64) -> Value {
    object(
        json!({"amount": int(min, AMOUNT_MAX), "currency": {"$ref": "#/components/schemas/Currency"}}),
        &["amount", "currency"],
    )
}

pub(crate) fn line_items() -> Value {
    json!({"type": "array", "minItems": 1, "items": reference("LineQuantity")})
}

pub(crate) fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A field of a request body: its schema, and whether the body must have it.
pub(crate) struct Field(Value, bool);

/// A field the body must have.
pub(crate) fn req(schema: Value) -> Field {
    Field(schema, true)
}

/// A field the body may leave out.
pub(crate) fn opt(schema: Value) -> Field {
    Field(schema, false)
}

/// An object of these fields and no others.
pub(crate) fn fields(fields: Vec<(&str, Field)>) -> Value {
    let required: Vec<&str> = fields.iter().filter(|(_, f)| f.1).map(|(name, _)| *name).collect();
    let properties: Map<String, Value> = fields.into_iter().map(|(name, f)| (name.to_string(), f.0)).collect();
    object(Value::Object(properties), &required)
}

/// The schema builders command declarations use.
pub(crate) mod schema {
    pub(crate) use super::{email, fields, id, int, line_items, money, nullable, object, opt, reference, req, text};
}

/// The schemas the request bodies name.
fn components() -> Vec<(&'static str, Value)> {
    let codes: Vec<&str> = Currency::all().iter().map(|c| c.code()).collect();
    vec![
        (
            "Currency",
            json!({"type": "string", "enum": codes, "description": "ISO 4217 code of a currency with a minor unit"}),
        ),
        (
            "Customer",
            json!({"oneOf": [
                object(json!({"kind": {"const": "guest"}, "email": email()}), &["kind", "email"]),
                object(json!({"kind": {"const": "registered"}, "customer_id": id(), "email": nullable(email())}), &["kind", "customer_id"]),
            ]}),
        ),
        (
            "Address",
            object(
                json!({
                    "name": text(), "line1": text(),
                    "line2": {"type": ["string", "null"], "maxLength": TEXT_CHARS_MAX},
                    "city": text(), "postal_code": text(),
                    "country": {"type": "string", "pattern": "^[A-Z]{2}$", "description": "ISO 3166-1 alpha-2"},
                    "subdivision": {"type": ["string", "null"], "pattern": "^[A-Z0-9]{1,3}$", "description": "ISO 3166-2 subdivision of the country (CA for US-CA)"},
                }),
                &["name", "line1", "city", "postal_code", "country"],
            ),
        ),
        ("Variant", crate::commands::catalog::variant_schema()),
        ("PromotionKind", crate::commands::catalog::promotion_kind_schema()),
        ("ShippingOption", crate::commands::catalog::shipping_option_schema()),
        ("LineQuantity", object(json!({"sku": id(), "quantity": int(1, i64::from(u32::MAX))}), &["sku", "quantity"])),
        (
            "ReturnedLine",
            object(
                json!({"sku": id(), "quantity": int(1, i64::from(u32::MAX)), "restock": {"type": "boolean"}}),
                &["sku", "quantity", "restock"],
            ),
        ),
    ]
}

/// The body of a route that is not a command, by method and path.
fn body(method: &str, path: &str) -> Option<Value> {
    let schema = match (method, path) {
        ("post", "/tokens") => object(
            json!({
                "principal": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$"},
                "scopes": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["shop", "operations", "audit", "analytics", "admin", "integrations"]}},
            }),
            &["principal", "scopes"],
        ),
        ("post", "/webhooks") => object(
            json!({
                "url": {"type": "string", "format": "uri", "pattern": "^https?://[\\x21-\\x7e]+$", "maxLength": orderlog_processes::webhooks::WEBHOOK_URL_BYTES_MAX},
                "event_types": {
                    "type": "array", "minItems": 1, "maxItems": orderlog_processes::webhooks::WEBHOOK_EVENT_TYPES_MAX,
                    "items": {"type": "string", "enum": orderlog_processes::webhooks::integration::TYPES},
                },
            }),
            &["url", "event_types"],
        ),
        ("post", "/webhooks/{webhook_id}/rotate-secret") => {
            object(json!({"overlap_seconds": nullable(int(0, crate::webhooks::OVERLAP_SECS_MAX as i64))}), &[])
        }
        _ => return None,
    };
    Some(schema)
}

/// The schema of a query parameter, by path and name.
fn query(path: &str, name: &str) -> Option<Value> {
    let feed_limit = int(1, 10_000);
    let schema = match (path, name) {
        (_, "wait_for") | (_, "timeout_ms") => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        ("/orders", "limit") => int(1, 500),
        ("/orders", "state") => {
            let states: Vec<&str> = OrderStatus::PLACED.iter().map(|s| s.as_str()).collect();
            json!({"type": "string", "enum": states})
        }
        ("/orders", "placed_from") | ("/orders", "placed_to") | ("/products/{product_id}", "at") => {
            json!({"type": "string", "format": "date-time"})
        }
        ("/products/{product_id}", "channel") | ("/products", "channel") => text(),
        ("/products/{product_id}", "group") | ("/products", "group") => id(),
        ("/products", "at") => json!({"type": "string", "format": "date-time"}),
        ("/products", "status") => json!({"type": "string", "enum": ["draft", "active", "archived"]}),
        ("/products", "offset") => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        ("/products", "limit") => int(1, 200),
        ("/orders", "after") => json!({"type": "string", "pattern": "~"}),
        ("/orders", "customer") => json!({"type": "string"}),
        ("/reports/sales" | "/reports/payments", "from" | "to") => {
            json!({"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"})
        }
        (_, "currency") => json!({"$ref": "#/components/schemas/Currency"}),
        ("/reports/top-skus", "limit") | ("/reports/top-promotions", "limit") => int(1, 500),
        ("/webhooks/{webhook_id}/deliveries", "limit") => int(1, i64::from(crate::webhooks::DELIVERIES_LIMIT_MAX)),
        ("/streams/{stream_id}", "from_version") => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        ("/proofs/inclusion", "position" | "tree_size")
        | ("/proofs/consistency", "from" | "to")
        | ("/checkpoints/latest", "tree_size") => {
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
        }
        ("/streams/{stream_id}", "limit") | ("/events", "limit") | ("/events/live", "limit") => feed_limit,
        ("/events", "after") | ("/events/live", "after") => {
            json!({"type": "string", "pattern": "^[0-9]{1,19}[.][0-9]{1,19}$"})
        }
        _ => return None,
    };
    Some(schema)
}

/// Links from an operation's 200 answer to the operations that take what it made: a cart
/// made feeds its items, address, method, contact and checkout; an order placed, its
/// payments, cancellation and reads; a shipment made, its packing and shipping.
fn links(method: &str, path: &str) -> Option<Value> {
    let to = |operation: &str, param: &str, field: &str| json!({"operationId": operation, "parameters": {param: format!("$response.body#/{field}")}});
    let cart = |operation: &str| to(operation, "cart_id", "cart_id");
    let order = |operation: &str| to(operation, "order_id", "order_id");
    let shipment = |operation: &str| to(operation, "shipment_id", "shipment_id");
    let links = match (method, path) {
        ("post", "/carts")
        | ("post", "/carts/{cart_id}/items")
        | ("put", "/carts/{cart_id}/shipping-address")
        | ("put", "/carts/{cart_id}/shipping-method")
        | ("put", "/carts/{cart_id}/contact") => json!({
            "AddItem": cart("cart.add_item"),
            "SetShippingAddress": cart("cart.set_shipping_address"),
            "SelectShippingMethod": cart("cart.select_shipping_method"),
            "SetContact": cart("cart.set_contact"),
            "ApplyDiscount": cart("cart.apply_discount"),
            "Checkout": cart("checkout"),
        }),
        ("post", "/carts/{cart_id}/checkout") => json!({
            "GetOrder": order("get_order"),
            "RecordPayment": order("order.record_payment"),
            "CancelOrder": order("order.cancel"),
            "RequestReturn": order("order.request_return"),
        }),
        ("post", "/shipments") => json!({
            "PackShipment": shipment("shipment.pack"),
            "ShipShipment": shipment("shipment.ship"),
            "CancelShipment": shipment("shipment.cancel"),
        }),
        _ => return None,
    };
    Some(links)
}

/// The document with its bodies, parameters, errors, statuses and ids made exact, as JSON
/// (it uses JSON Schema words utoipa's model does not have: `const`, `not`, `propertyNames`).
pub fn exact(doc: &utoipa::openapi::OpenApi) -> Value {
    let mut value = serde_json::to_value(doc).expect("the document serializes");
    if let Some(schemas) = value.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for (name, schema) in components() {
            schemas.insert(name.to_string(), schema);
        }
    }
    if let Some(paths) = value.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (method, operation) in item.iter_mut() {
                if let Some(operation) = operation.as_object_mut() {
                    operation_exact(method, path, operation);
                }
            }
        }
    }
    value["webhooks"] = integration_webhooks();
    value
}

/// The integration events as OpenAPI webhooks: what a subscriber receives, by type.
fn integration_webhooks() -> Value {
    let mut hooks = Map::new();
    for event_type in orderlog_processes::webhooks::integration::TYPES {
        hooks.insert(
            event_type.to_string(),
            json!({"post": {
                "summary": format!("{event_type} (integration event, contract version {})", orderlog_processes::webhooks::integration::CONTRACT_VERSION),
                "description": "Signed by Standard Webhooks: verify `webhook-signature` over `{webhook-id}.{webhook-timestamp}.{body}` with the subscription's secret. Delivered at least once; per subscriber first sent in log order, with the log position as `sequence`.",
                "parameters": [
                    {"in": "header", "name": "webhook-id", "required": true, "schema": {"type": "string"}, "description": "The message id: the same on every retry."},
                    {"in": "header", "name": "webhook-timestamp", "required": true, "schema": {"type": "string"}, "description": "Unix seconds when this attempt was signed."},
                    {"in": "header", "name": "webhook-signature", "required": true, "schema": {"type": "string"}, "description": "`v1,` and the base64 HMAC-SHA256; one per secret during a rotation, space-separated."},
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["type", "version", "timestamp", "sequence", "data"],
                    "properties": {
                        "type": {"type": "string", "const": event_type},
                        "version": {"type": "integer"},
                        "timestamp": {"type": "string", "format": "date-time"},
                        "sequence": {"type": "integer", "minimum": 1},
                        "data": {"type": "object", "description": "order.*: `order_id` and what changed; return.*: `order_id`, `return_id`, `lines`; checkpoint.signed: `tree_size`, `root_hash`, `time`, `key_id`, `signature`"},
                    },
                }}}},
                "responses": {"2XX": {"description": "received; anything else is retried (410 disables the subscription)"}},
            }}),
        );
    }
    Value::Object(hooks)
}

/// Path parameters that are ids of the one grammar.
const ID_PARAMS: &[&str] = &[
    "cart_id",
    "order_id",
    "sku",
    "location",
    "shipment_id",
    "return_id",
    "webhook_id",
    "message_id",
    "product_id",
    "price_list_id",
    "code",
    "zone_id",
    "customer_id",
    "group",
    "payment_id",
    "provider",
];

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn operation_exact(method: &str, path: &str, operation: &mut Map<String, Value>) {
    let declared = operation.remove(crate::commands::BODY_EXTENSION);
    if let Some(schema) = declared.or_else(|| body(method, path)) {
        operation.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": schema}}}),
        );
    }
    let guarded = operation.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    let has_body = operation.contains_key("requestBody");
    let mut has_path_id = false;
    let mut has_params = false;
    let mut has_wait = false;
    if let Some(params) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
        for param in params.iter_mut().filter_map(Value::as_object_mut) {
            has_params = true;
            let name = param.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let place = param.get("in").and_then(Value::as_str).unwrap_or_default().to_string();
            if place == "path" && ID_PARAMS.contains(&name.as_str()) {
                has_path_id = true;
                param.insert("schema".into(), id());
            }
            if place == "path" && name == "region_id" {
                has_path_id = true;
                let pattern = orderlog_domain::tax::TAX_REGION_PATTERN;
                param.insert("schema".into(), json!({"type": "string", "pattern": pattern}));
            }
            has_wait |= name == "wait_for";
            if place == "query" {
                if let Some(schema) = query(path, &name) {
                    param.insert("schema".into(), schema);
                }
            }
        }
    }
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
    if let (Some(links), Some(ok)) = (links(method, path), responses.get_mut("200").and_then(Value::as_object_mut)) {
        ok.insert("links".into(), links);
    }
    for (status, response) in responses.iter_mut() {
        if status.starts_with('4') || status.starts_with('5') {
            let description = response.get("description").and_then(Value::as_str).unwrap_or("").to_string();
            *response = problem(if description.is_empty() { "a problem" } else { &description });
        }
    }
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_string()).or_insert_with(|| problem(description));
    };
    if guarded {
        add("401", "no token, or a token that is not valid");
        add("403", "the token lacks the scope this route needs");
    }
    if has_body {
        add("400", "the body is not JSON");
        add("413", "the body is larger than the server reads");
        add("415", "the body is not application/json");
        add("422", "the body does not describe a valid request");
    }
    if has_path_id || has_params {
        add("400", "a path or query parameter is not valid");
    }
    if method != "get" && guarded && !path.starts_with("/tokens") && !path.starts_with("/webhooks") {
        add("404", "the cart, order, stock item or shipment named does not exist");
        add("409", "the command does not fit the state of what it names");
        add("422", "the command is not valid");
    }
    if method == "get" && has_path_id {
        add("404", "nothing has that id");
    }
    if has_wait {
        add("409", "wait_for names a position the log does not have");
        add("503", "the read model has not reached wait_for within timeout_ms, or has stopped");
    }
    add("414", "the URI is longer than the server reads");
}
