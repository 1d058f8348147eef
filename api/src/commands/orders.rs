//! Order actions (scope `operations`): payments, cancellation, completion and returns.

use orderlog_commands::Command;
use orderlog_domain::order::OrderCommand;
use orderlog_domain::{OrderId, ReturnId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::wire::{lines, returned_lines, Line, Price, ReturnedLine};
use super::{body, NoBody, Params, RequestBody};
use crate::openapi::schema::{id, line_items, money, object, reference, req, text};
use crate::problem::Problem;

fn order_id(path: &Params) -> Result<OrderId, Problem> {
    path.id("order_id", OrderId::parse)
}

pub(super) fn order(path: &Params, command: OrderCommand) -> Result<Command, Problem> {
    Ok(Command::Order { order_id: order_id(path)?, command })
}

body! {
    /// `{"reason": …}`: why an order or a shipment is cancelled.
    Reason { pub reason: String = req(text()) }
}

pub(super) fn cancel(body: Reason, path: &Params) -> Result<Command, Problem> {
    Ok(Command::CancelOrder { order_id: order_id(path)?, reason: body.reason })
}

body! {
    /// `{"payment_method": …}`: the provider's id of how the shopper pays (Stripe's `pm_…`).
    Pay { pub payment_method: String = req(text()) }
}

/// The protocol the server's payment provider speaks (Stripe's, also the simulator's).
pub const PROVIDER: &str = "stripe";

pub(super) fn pay(body: Pay, path: &Params) -> Result<Command, Problem> {
    Ok(Command::Pay { order_id: order_id(path)?, payment_method: body.payment_method, provider: PROVIDER.into() })
}

body! {
    /// `{"amount": …, "reason": …}`: a refund of a payment intent.
    Refund { pub amount: Price = req(money(1)), pub reason: String = req(text()) }
}

pub(super) fn refund(body: Refund, path: &Params) -> Result<Command, Problem> {
    let payment_id = path.id("payment_id", orderlog_domain::PaymentId::parse)?;
    let command =
        orderlog_domain::payment::PaymentCommand::RequestRefund { amount: body.amount.into(), reason: body.reason };
    Ok(Command::Payment { payment_id, action: orderlog_domain::payment::PaymentAction::Command(command) })
}

/// A payment event reported by the payment provider.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PaymentEvent {
    Authorized { amount: Price, provider_ref: String, provider_event_id: String },
    Captured { amount: Price, provider_event_id: String },
    Voided { provider_event_id: String },
    Refunded { amount: Price, provider_event_id: String },
    Failed { reason: String, provider_event_id: String },
}

impl RequestBody for PaymentEvent {
    fn label(&self) -> Option<&'static str> {
        Some(match self {
            PaymentEvent::Authorized { .. } => "order.payment_authorized",
            PaymentEvent::Captured { .. } => "order.payment_captured",
            PaymentEvent::Voided { .. } => "order.payment_voided",
            PaymentEvent::Refunded { .. } => "order.payment_refunded",
            PaymentEvent::Failed { .. } => "order.payment_failed",
        })
    }

    fn schema() -> Option<Value> {
        let event = |kind: &str, mut properties: Value, required: &[&str]| {
            properties["type"] = json!({"const": kind});
            properties["provider_event_id"] = text();
            object(properties, &[&["type"], required, &["provider_event_id"]].concat())
        };
        Some(json!({"oneOf": [
            event("authorized", json!({"amount": money(1), "provider_ref": text()}), &["amount", "provider_ref"]),
            event("captured", json!({"amount": money(1)}), &["amount"]),
            event("voided", json!({}), &[]),
            event("refunded", json!({"amount": money(1)}), &["amount"]),
            event("failed", json!({"reason": text()}), &["reason"]),
        ]}))
    }
}

pub(super) fn record_payment(event: PaymentEvent, path: &Params) -> Result<Command, Problem> {
    use OrderCommand as C;
    let command = match event {
        PaymentEvent::Authorized { amount, provider_ref, provider_event_id } => {
            C::AuthorizePayment { amount: amount.into(), provider_ref, provider_event_id }
        }
        PaymentEvent::Captured { amount, provider_event_id } => {
            C::CapturePayment { amount: amount.into(), provider_event_id }
        }
        PaymentEvent::Voided { provider_event_id } => C::VoidPayment { provider_event_id },
        PaymentEvent::Refunded { amount, provider_event_id } => {
            C::RefundPayment { amount: amount.into(), provider_event_id }
        }
        PaymentEvent::Failed { reason, provider_event_id } => C::RecordPaymentFailure { reason, provider_event_id },
    };
    order(path, command)
}

pub(super) fn complete(_: NoBody, path: &Params) -> Result<Command, Problem> {
    order(path, OrderCommand::Complete {})
}

body! {
    Return {
        return_id: ReturnId = req(id()),
        lines: Vec<Line> = req(line_items()),
        reason: String = req(text()),
    }
}

pub(super) fn request_return(body: Return, path: &Params) -> Result<Command, Problem> {
    let (return_id, reason) = (body.return_id, body.reason);
    order(path, OrderCommand::RequestReturn { return_id, lines: lines(body.lines), reason })
}

body! {
    Received { lines: Vec<ReturnedLine> = req(json!({"type": "array", "minItems": 1, "items": reference("ReturnedLine")})) }
}

pub(super) fn receive_return(body: Received, path: &Params) -> Result<Command, Problem> {
    let return_id = path.id("return_id", ReturnId::parse)?;
    Ok(Command::ReceiveReturn { order_id: order_id(path)?, return_id, lines: returned_lines(body.lines) })
}
