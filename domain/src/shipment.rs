//! The shipment: one parcel from one location, created → packed → shipped → delivered
//! (or delivery failed); cancelled only before it ships.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cart::check_text;
use crate::order::LineQuantity;
use crate::{check_quantity, Decider, LocationId, OrderId, Rejection};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    #[default]
    NotCreated,
    Created,
    Packed,
    Shipped,
    DeliveryFailed,
    Delivered,
    Cancelled,
}

/// What a carrier reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CarrierEventKind {
    InTransit,
    Delivered,
    DeliveryFailed { reason: String },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShipmentState {
    pub status: ShipmentStatus,
    pub order_id: Option<OrderId>,
    pub location: Option<LocationId>,
    pub lines: Vec<LineQuantity>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub carrier_events: BTreeSet<String>,
    /// When the newest carrier event applied so far happened; older ones arriving late
    /// are recorded but do not change the status.
    pub last_carrier_event_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ShipmentCommand {
    /// Through the create flow, which checks the lines against the order.
    Create {
        order_id: OrderId,
        location: LocationId,
        lines: Vec<LineQuantity>,
    },
    Pack {},
    /// Through the ship flow, which also commits the stock and updates the order.
    Ship {
        carrier: String,
        tracking_number: String,
    },
    RecordCarrierEvent {
        event_id: String,
        kind: CarrierEventKind,
        occurred_at: DateTime<Utc>,
    },
    Cancel {
        reason: String,
    },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipmentEvent {
    ShipmentCreated { order_id: OrderId, location: LocationId, lines: Vec<LineQuantity> },
    ShipmentPacked {},
    ShipmentShipped { carrier: String, tracking_number: String },
    CarrierEventRecorded { event_id: String, kind: CarrierEventKind, occurred_at: DateTime<Utc> },
    ShipmentCancelled { reason: String },
}
}

pub struct Shipment;

impl Decider for Shipment {
    type Command = ShipmentCommand;
    type Event = ShipmentEvent;
    type State = ShipmentState;

    fn decide(command: &ShipmentCommand, state: &ShipmentState) -> Result<Vec<ShipmentEvent>, Rejection> {
        use ShipmentCommand as C;
        use ShipmentEvent as E;
        use ShipmentStatus as S;
        if let C::Create { order_id, location, lines } = command {
            if state.status != S::NotCreated {
                return Err(Rejection::conflict("shipment: already exists"));
            }
            if lines.is_empty() {
                return Err(Rejection::invalid("lines: a shipment needs at least one line"));
            }
            for line in lines {
                check_quantity("lines.quantity", line.quantity)?;
            }
            return Ok(vec![E::ShipmentCreated {
                order_id: order_id.clone(),
                location: location.clone(),
                lines: lines.clone(),
            }]);
        }
        if state.status == S::NotCreated {
            return Err(Rejection::not_found("shipment: does not exist"));
        }
        let event = match command {
            C::Create { .. } => unreachable!("handled above"),
            C::Pack {} => match state.status {
                S::Created => E::ShipmentPacked {},
                S::Packed => return Ok(vec![]),
                other => {
                    return Err(Rejection::conflict(format!(
                        "shipment: is {other:?}; only a created shipment can be packed"
                    )))
                }
            },
            C::Ship { carrier, tracking_number } => {
                check_text("carrier", carrier)?;
                check_text("tracking_number", tracking_number)?;
                match state.status {
                    S::Packed => {
                        E::ShipmentShipped { carrier: carrier.clone(), tracking_number: tracking_number.clone() }
                    }
                    other => {
                        return Err(Rejection::conflict(format!(
                            "shipment: is {other:?}; only a packed shipment can ship"
                        )))
                    }
                }
            }
            C::RecordCarrierEvent { event_id, kind, occurred_at } => {
                check_text("event_id", event_id)?;
                if let CarrierEventKind::DeliveryFailed { reason } = kind {
                    check_text("reason", reason)?;
                }
                if state.carrier_events.contains(event_id) {
                    return Ok(vec![]);
                }
                if !matches!(state.status, S::Shipped | S::DeliveryFailed | S::Delivered) {
                    return Err(Rejection::conflict(format!(
                        "shipment: is {:?}; carrier events apply once it has shipped",
                        state.status
                    )));
                }
                E::CarrierEventRecorded { event_id: event_id.clone(), kind: kind.clone(), occurred_at: *occurred_at }
            }
            C::Cancel { reason } => {
                check_text("reason", reason)?;
                match state.status {
                    S::Created | S::Packed => E::ShipmentCancelled { reason: reason.clone() },
                    other => {
                        return Err(Rejection::conflict(format!(
                            "shipment: is {other:?}; only a shipment not yet shipped can be cancelled"
                        )))
                    }
                }
            }
        };
        Ok(vec![event])
    }

    fn evolve(mut state: ShipmentState, event: &ShipmentEvent) -> ShipmentState {
        use ShipmentEvent as E;
        use ShipmentStatus as S;
        match event {
            E::ShipmentCreated { order_id, location, lines } => {
                state.status = S::Created;
                state.order_id = Some(order_id.clone());
                state.location = Some(location.clone());
                state.lines = lines.clone();
            }
            E::ShipmentPacked {} => state.status = S::Packed,
            E::ShipmentShipped { carrier, tracking_number } => {
                state.status = S::Shipped;
                state.carrier = Some(carrier.clone());
                state.tracking_number = Some(tracking_number.clone());
            }
            E::CarrierEventRecorded { event_id, kind, occurred_at } => {
                state.carrier_events.insert(event_id.clone());
                let newest = state.last_carrier_event_at.is_none_or(|last| *occurred_at >= last);
                // Delivered is final: a late or stray carrier event cannot undo it.
                if newest && state.status != S::Delivered {
                    state.last_carrier_event_at = Some(*occurred_at);
                    state.status = match kind {
                        CarrierEventKind::InTransit => S::Shipped,
                        CarrierEventKind::Delivered => S::Delivered,
                        CarrierEventKind::DeliveryFailed { .. } => S::DeliveryFailed,
                    };
                }
            }
            E::ShipmentCancelled { .. } => state.status = S::Cancelled,
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{given_when, RejectionKind, Sku};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }
    fn lines() -> Vec<LineQuantity> {
        vec![LineQuantity { sku: Sku::parse("mug").unwrap(), quantity: 1 }]
    }
    fn created() -> ShipmentEvent {
        ShipmentEvent::ShipmentCreated {
            order_id: OrderId::parse("o1").unwrap(),
            location: LocationId::parse("berlin").unwrap(),
            lines: lines(),
        }
    }
    fn shipped() -> Vec<ShipmentEvent> {
        vec![
            created(),
            ShipmentEvent::ShipmentPacked {},
            ShipmentEvent::ShipmentShipped { carrier: "DHL".into(), tracking_number: "T1".into() },
        ]
    }
    fn carrier(id: &str, kind: CarrierEventKind, time: &str) -> ShipmentCommand {
        ShipmentCommand::RecordCarrierEvent { event_id: id.into(), kind, occurred_at: at(time) }
    }

    #[test]
    fn create_pack_ship() {
        let create = ShipmentCommand::Create {
            order_id: OrderId::parse("o1").unwrap(),
            location: LocationId::parse("berlin").unwrap(),
            lines: lines(),
        };
        assert_eq!(given_when::<Shipment>(&[], &create).unwrap(), vec![created()]);
        assert!(given_when::<Shipment>(&[created()], &create).is_err());
        assert_eq!(
            given_when::<Shipment>(&[created()], &ShipmentCommand::Pack {}).unwrap(),
            vec![ShipmentEvent::ShipmentPacked {}]
        );
        let ship = ShipmentCommand::Ship { carrier: "DHL".into(), tracking_number: "T1".into() };
        assert!(given_when::<Shipment>(&[created()], &ship).unwrap_err().reason.contains("packed"));
        assert_eq!(given_when::<Shipment>(&shipped()[..2], &ship).unwrap(), vec![shipped()[2].clone()]);
        let no_tracking = ShipmentCommand::Ship { carrier: "DHL".into(), tracking_number: " ".into() };
        assert!(given_when::<Shipment>(&shipped()[..2], &no_tracking).unwrap_err().reason.contains("tracking_number"));
        assert_eq!(given_when::<Shipment>(&[], &ShipmentCommand::Pack {}).unwrap_err().kind, RejectionKind::NotFound);
    }

    #[test]
    fn cancel_only_before_shipping() {
        let cancel = ShipmentCommand::Cancel { reason: "merged".into() };
        assert_eq!(given_when::<Shipment>(&[created()], &cancel).unwrap().len(), 1);
        assert!(given_when::<Shipment>(&shipped(), &cancel).is_err());
    }

    #[test]
    fn carrier_events_are_deduplicated_and_tolerate_disorder() {
        let delivered = carrier("e2", CarrierEventKind::Delivered, "2026-01-02T10:00:00Z");
        let failed_earlier =
            carrier("e1", CarrierEventKind::DeliveryFailed { reason: "not home".into() }, "2026-01-01T10:00:00Z");
        assert!(given_when::<Shipment>(&[created()], &delivered).is_err(), "not shipped yet");
        let mut history = shipped();
        history.extend(given_when::<Shipment>(&history, &delivered).unwrap());
        assert_eq!(Shipment::fold(&history).status, ShipmentStatus::Delivered);
        assert!(given_when::<Shipment>(&history, &delivered).unwrap().is_empty(), "same carrier event twice");
        history.extend(given_when::<Shipment>(&history, &failed_earlier).unwrap());
        assert_eq!(
            Shipment::fold(&history).status,
            ShipmentStatus::Delivered,
            "a late, older event does not undo delivery"
        );
    }

    #[test]
    fn failed_delivery_then_redelivery() {
        let mut history = shipped();
        let failed =
            carrier("e1", CarrierEventKind::DeliveryFailed { reason: "not home".into() }, "2026-01-01T10:00:00Z");
        history.extend(given_when::<Shipment>(&history, &failed).unwrap());
        assert_eq!(Shipment::fold(&history).status, ShipmentStatus::DeliveryFailed);
        let delivered = carrier("e2", CarrierEventKind::Delivered, "2026-01-02T10:00:00Z");
        history.extend(given_when::<Shipment>(&history, &delivered).unwrap());
        assert_eq!(Shipment::fold(&history).status, ShipmentStatus::Delivered);
    }
}
