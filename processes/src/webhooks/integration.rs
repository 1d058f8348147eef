//! Integration events: the public, versioned contract other systems subscribe to, separate
//! from the internal event types (which may be renamed, split or upcast without breaking a
//! subscriber). Version 1 of each type's `data` only ever gains optional fields; anything
//! else is a new type name.

use orderlog_domain::order::OrderEvent;
use orderlog_domain::{DomainEvent, StreamId};
use orderlog_store::RecordedEvent;
use serde_json::{json, Value};

/// Every integration event type, as subscribers name them.
pub const TYPES: &[&str] = &[
    "order.placed",
    "order.confirmed",
    "order.shipped",
    "order.delivered",
    "order.completed",
    "order.cancelled",
    "order.expired",
    "return.requested",
    "return.received",
    "stock.low",
    "checkpoint.signed",
];

/// The version of the payloads' shape, sent as the body's `version`.
pub const CONTRACT_VERSION: u32 = 1;

/// An integration event: its type and its `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct Integration {
    pub event_type: &'static str,
    pub data: Value,
}

/// The integration event an internal event makes public, if any.
pub fn of(event: &RecordedEvent, decoded: &DomainEvent) -> Option<Integration> {
    let stream = StreamId::parse(&event.stream_id)?;
    let DomainEvent::Order(order_event) = decoded else { return None };
    let order_id = stream.order_id()?.to_string();
    let lines = |lines: &[orderlog_domain::order::LineQuantity]| {
        lines.iter().map(|l| json!({"sku": l.sku.as_str(), "quantity": l.quantity})).collect::<Vec<_>>()
    };
    let (event_type, data) = match order_event {
        OrderEvent::OrderPlaced { order } => (
            "order.placed",
            json!({
                "order_id": order_id,
                "email": order.email,
                "currency": order.currency.code(),
                "total": order.totals.total.amount,
                "lines": order.lines.iter().map(|l| json!({
                    "sku": l.sku.as_str(), "quantity": l.quantity, "unit_price": l.unit_price.amount,
                    "location": l.location.as_str(),
                })).collect::<Vec<_>>(),
            }),
        ),
        OrderEvent::OrderConfirmed {} => ("order.confirmed", json!({"order_id": order_id})),
        OrderEvent::LinesShipped { shipment_id, lines: shipped } => (
            "order.shipped",
            json!({"order_id": order_id, "shipment_id": shipment_id.as_str(), "lines": lines(shipped)}),
        ),
        OrderEvent::LinesDelivered { shipment_id, lines: delivered } => (
            "order.delivered",
            json!({"order_id": order_id, "shipment_id": shipment_id.as_str(), "lines": lines(delivered)}),
        ),
        OrderEvent::OrderCompleted {} => ("order.completed", json!({"order_id": order_id})),
        OrderEvent::OrderCancelled { reason } => ("order.cancelled", json!({"order_id": order_id, "reason": reason})),
        OrderEvent::OrderExpired {} => ("order.expired", json!({"order_id": order_id})),
        OrderEvent::ReturnRequested { return_id, lines: requested, reason } => (
            "return.requested",
            json!({"order_id": order_id, "return_id": return_id.as_str(), "lines": lines(requested), "reason": reason}),
        ),
        OrderEvent::ReturnReceived { return_id, lines: received } => (
            "return.received",
            json!({
                "order_id": order_id, "return_id": return_id.as_str(),
                "lines": received.iter().map(|l| json!({"sku": l.sku.as_str(), "quantity": l.quantity, "restocked": l.restock})).collect::<Vec<_>>(),
            }),
        ),
        _ => return None,
    };
    Some(Integration { event_type, data })
}

/// A signed checkpoint of the log (its size, Merkle root, time, key id and Ed25519
/// signature), published so that others keep a copy the server cannot take back.
pub fn checkpoint(checkpoint: &serde_json::Value) -> Integration {
    Integration { event_type: "checkpoint.signed", data: checkpoint.clone() }
}

/// The body a subscriber receives: Standard Webhooks' `type`, `timestamp` and `data`, with
/// the contract version and `sequence`: the log position the event came from (a
/// checkpoint's: its tree size), increasing per subscriber, so a receiver can put retried
/// messages back in order.
pub fn body(integration: &Integration, sequence: u64, at: chrono::DateTime<chrono::Utc>) -> String {
    json!({
        "type": integration.event_type,
        "version": CONTRACT_VERSION,
        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "sequence": sequence,
        "data": integration.data,
    })
    .to_string()
}
