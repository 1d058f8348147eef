//! Errors as `application/problem+json` (RFC 9457): a status, a short title and a detail a
//! person can act on. Internal errors say only that something failed; the cause travels
//! with the response (as [`Cause`]) to the middleware that logs it with the request id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use orderlog_commands::CommandError;
use orderlog_domain::{Rejection, RejectionKind};
use serde::Serialize;
use utoipa::ToSchema;

/// A problem detail.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the status says it all).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Lines that could not be reserved, for an out-of-stock checkout.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Shortage>>)]
    pub shortages: Option<Box<serde_json::Value>>,
    /// Lines priced again at checkout (their price guarantee had run out), with the old and
    /// new unit price: the cart now has the new prices, so checking out again pays them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Repriced>>)]
    pub repriced: Option<Box<serde_json::Value>>,
    /// What went wrong inside, for the log only: never sent.
    #[serde(skip)]
    #[schema(ignore)]
    pub cause: Option<Box<str>>,
}

/// One line of an out-of-stock refusal (the document's shape of `orderlog_domain::Shortage`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Shortage {
    sku: String,
    location: String,
    requested: u32,
    available: i64,
}

/// One line of a checkout refused because prices changed (`orderlog_domain::cart::Repriced`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Repriced {
    sku: String,
    #[schema(value_type = Object)]
    old_price: serde_json::Value,
    #[schema(value_type = Object)]
    new_price: serde_json::Value,
}

/// The cause of an internal error, in the response's extensions until it is logged.
#[derive(Clone, Debug)]
pub struct Cause(pub String);

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            shortages: None,
            repriced: None,
            cause: None,
        }
    }

    pub fn typed(mut self, kind: &str) -> Problem {
        self.kind = format!("https://orderlog.dev/problems/{kind}");
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }

    /// A failure the client cannot fix: answered without its cause, which is logged with
    /// the request id (see [`Cause`]).
    pub fn internal(cause: impl std::fmt::Display) -> Problem {
        let mut problem = Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server failed to handle the request; it has been logged",
        );
        problem.cause = Some(cause.to_string().into());
        problem
    }

    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(Cause(cause.into()));
        }
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<Rejection> for Problem {
    fn from(r: Rejection) -> Problem {
        let (status, kind) = match r.kind {
            RejectionKind::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            RejectionKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            RejectionKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            RejectionKind::OutOfStock => (StatusCode::CONFLICT, "out-of-stock"),
        };
        let mut problem = Problem::new(status, r.reason.clone()).typed(kind);
        if !r.shortages.is_empty() {
            problem.shortages = serde_json::to_value(&r.shortages).ok().map(Box::new);
        }
        if !r.repriced.is_empty() {
            problem = problem.typed("repriced");
            problem.repriced = serde_json::to_value(&r.repriced).ok().map(Box::new);
        }
        problem
    }
}

impl From<CommandError> for Problem {
    fn from(e: CommandError) -> Problem {
        match e {
            CommandError::Rejected(r) => r.into(),
            CommandError::IdempotencyKeyReused { .. } => Problem::unprocessable(
                "this Idempotency-Key was already used with a different request; use a new key for a new request",
            )
            .typed("idempotency-key-reused"),
            CommandError::TooManyConflicts { retries } => Problem::new(
                StatusCode::CONFLICT,
                format!("gave up after {retries} retries: the records kept changing concurrently; try again"),
            )
            .typed("contention"),
            CommandError::Invalid(detail) => Problem::unprocessable(detail).typed("invalid"),
            other => Problem::internal(other),
        }
    }
}
