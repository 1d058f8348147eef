//! What the OpenAPI document says beyond the route declarations, applied to every
//! operation in one place: every error is `application/problem+json` with the Problem
//! schema; the statuses every guarded route, every body and every path can give; and the
//! one id grammar on every id in a path.

use orderlog_domain::ids::{ID_BYTES_MAX, ID_PATTERN};
use serde_json::{json, Map, Value};

/// Path parameters that are ids of the one grammar.
const ID_PARAMS: &[&str] = &["cart_id", "order_id", "sku", "location", "shipment_id", "return_id"];

/// The document with its errors, statuses and id patterns made exact.
pub fn exact(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut value = serde_json::to_value(&doc).expect("the document serializes");
    if let Some(paths) = value.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in item.values_mut().filter_map(Value::as_object_mut) {
                operation_exact(operation);
            }
        }
    }
    serde_json::from_value(value).expect("the document is still an OpenAPI document")
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn operation_exact(operation: &mut Map<String, Value>) {
    let guarded = operation.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
    let has_body = operation.contains_key("requestBody");
    let mut has_path_id = false;
    let mut has_params = false;
    if let Some(params) = operation.get_mut("parameters").and_then(Value::as_array_mut) {
        for param in params.iter_mut().filter_map(Value::as_object_mut) {
            has_params = true;
            let name = param.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            if param.get("in").and_then(Value::as_str) == Some("path") && ID_PARAMS.contains(&name.as_str()) {
                has_path_id = true;
                param.insert(
                    "schema".into(),
                    json!({"type": "string", "pattern": ID_PATTERN, "maxLength": ID_BYTES_MAX}),
                );
            }
        }
    }
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    let Some(responses) = responses.as_object_mut() else { return };
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
    add("414", "the URI is longer than the server reads");
}
