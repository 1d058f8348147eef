//! Shipment commands (scope `operations`): create, pack, ship, carrier reports, cancel.

use chrono::{DateTime, Utc};
use orderlog_commands::Command;
use orderlog_domain::shipment::{CarrierEventKind, ShipmentCommand};
use orderlog_domain::{LocationId, OrderId, ShipmentId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::orders::Reason;
use super::wire::{lines, Line};
use super::{body, id, NoBody, Params, RequestBody};
use crate::openapi::schema::{self, line_items, nullable, opt, req, text};
use crate::problem::Problem;

fn shipment(path: &Params, command: ShipmentCommand) -> Result<Command, Problem> {
    Ok(Command::Shipment { shipment_id: path.id("shipment_id", ShipmentId::parse)?, command })
}

body! {
    NewShipment {
        shipment_id: Option<ShipmentId> = opt(nullable(schema::id())),
        order_id: OrderId = req(schema::id()),
        location: LocationId = req(schema::id()),
        lines: Vec<Line> = req(line_items()),
    }
}

pub(super) fn create(body: NewShipment, _: &Params) -> Result<Command, Problem> {
    let shipment_id = match body.shipment_id {
        Some(shipment_id) => shipment_id,
        None => id(ShipmentId::parse(format!("shipment-{}", uuid::Uuid::new_v4().simple())))?,
    };
    let command =
        ShipmentCommand::Create { order_id: body.order_id, location: body.location, lines: lines(body.lines) };
    Ok(Command::Shipment { shipment_id, command })
}

pub(super) fn pack(_: NoBody, path: &Params) -> Result<Command, Problem> {
    shipment(path, ShipmentCommand::Pack {})
}

body! {
    Carrier {
        carrier: String = req(text()),
        tracking_number: String = req(text()),
    }
}

pub(super) fn ship(body: Carrier, path: &Params) -> Result<Command, Problem> {
    shipment(path, ShipmentCommand::Ship { carrier: body.carrier, tracking_number: body.tracking_number })
}

body! {
    /// A carrier's report on a shipment; a failed delivery's has a reason (see [`FailedDelivery`]).
    CarrierReport {
        /// The carrier's id of this report (a redelivered report is a no-op); generated when absent.
        event_id: Option<String> = opt(nullable(text())),
        /// When it happened (RFC 3339); now when absent.
        occurred_at: Option<DateTime<Utc>> = opt(json!({"type": ["string", "null"], "format": "date-time"})),
        reason: Option<String> = opt(json!({"type": "null"})),
    }
}

impl CarrierReport {
    fn command(self, path: &Params, kind: CarrierEventKind) -> Result<Command, Problem> {
        let command = ShipmentCommand::RecordCarrierEvent {
            event_id: self.event_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            kind,
            occurred_at: self.occurred_at.unwrap_or_else(Utc::now),
        };
        shipment(path, command)
    }
}

pub(super) fn deliver(report: CarrierReport, path: &Params) -> Result<Command, Problem> {
    if report.reason.is_some() {
        return Err(Problem::unprocessable("field `reason`: only a failed delivery has a reason"));
    }
    report.command(path, CarrierEventKind::Delivered)
}

/// A failed delivery's report: a [`CarrierReport`] with a reason.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct FailedDelivery(CarrierReport);

impl RequestBody for FailedDelivery {
    fn schema() -> Option<Value> {
        let mut schema = CarrierReport::schema()?;
        schema["properties"]["reason"] = text();
        schema["required"] = json!(["reason"]);
        Some(schema)
    }
}

pub(super) fn delivery_failed(FailedDelivery(mut report): FailedDelivery, path: &Params) -> Result<Command, Problem> {
    let Some(reason) = report.reason.take() else {
        return Err(Problem::unprocessable("field `reason`: say why the delivery failed"));
    };
    report.command(path, CarrierEventKind::DeliveryFailed { reason })
}

pub(super) fn cancel(body: Reason, path: &Params) -> Result<Command, Problem> {
    shipment(path, ShipmentCommand::Cancel { reason: body.reason })
}
