//! A JSON request body read strictly: malformed JSON is a 400, a body that does not fit the
//! request (unknown or missing fields, wrong types, bad values) a 422 naming the field, a
//! body over the size limit a 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let json =
            request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
                v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(status, format!("the body is larger than {} bytes", crate::BODY_BYTES_MAX))
            } else {
                Problem::bad_request(format!("the body could not be read: {}", rejection.body_text()))
            }
        })?;
        parse(&bytes).map(Body)
    }
}

/// Parses a JSON body, naming the field at fault.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
    // Every body the API takes is an object; serde would also read a struct of optional
    // fields from an array (`[null, null]`).
    if !json.is_object() {
        return Err(Problem::unprocessable("the body must be a JSON object"));
    }
    integers(&mut json);
    serde_path_to_error::deserialize(json).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." || path.is_empty() { String::new() } else { format!("field `{path}`: ") };
        Problem::unprocessable(format!("{at}{}", e.into_inner()))
    })
}

/// Writes every number with no fractional part (`3.0`, `1e3`) as the integer it is: JSON
/// Schema counts it an integer, so a field typed `integer` takes it.
fn integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
                    *value = Value::from(f as i64);
                } else if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    *value = Value::from(f as u64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integers),
        Value::Object(fields) => fields.values_mut().for_each(integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        quantity: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Line>(br#"{"sku":"mug","quantity":-1}"#).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.detail.starts_with("field `quantity`: invalid value: integer `-1`"), "{}", e.detail);
        let e = parse::<Line>(br#"{"sku":"mug","quantity":1,"colour":"red"}"#).unwrap_err();
        assert!(e.detail.contains("unknown field `colour`"), "{}", e.detail);
        let e = parse::<Line>(br#"{"sku":"mug","#).unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse::<Line>(br#"{"sku":"mug","quantity":1} x"#).unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse::<Line>(br#"["mug", 1]"#).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.detail.contains("must be a JSON object"), "{}", e.detail);
    }

    #[test]
    fn integral_numbers_are_integers() {
        let line = parse::<Line>(br#"{"sku":"mug","quantity":3.0}"#).unwrap();
        assert_eq!(line.quantity, 3);
        assert_eq!(parse::<Line>(br#"{"sku":"mug","quantity":1e3}"#).unwrap().quantity, 1_000);
        let e = parse::<Line>(br#"{"sku":"mug","quantity":2.5}"#).unwrap_err();
        assert!(e.detail.starts_with("field `quantity`: invalid type: floating point `2.5`"), "{}", e.detail);
    }
}
