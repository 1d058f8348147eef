//! Decisions that span streams besides checkout: cancelling or expiring an order (which
//! releases its reservations), creating and shipping a shipment (which dispatches stock and
//! updates the order), carrier events (which deliver the order's lines), and receiving a
//! return (which puts restocked units back on hand).

use std::collections::BTreeMap;

use crate::checkout::Decision;
use crate::order::{Order, OrderAction, OrderEvent, OrderState, OrderStatus, ReturnedLine};
use crate::shipment::{Shipment, ShipmentCommand, ShipmentState, ShipmentStatus};
use crate::stock::{AdjustmentReason, Stock, StockAction, StockState};
use crate::{Decider, OrderId, Rejection, ReturnId, ShipmentId, StockKey, StreamId};

/// The stock items an order's lines reserved.
pub fn order_stock_keys(order: &OrderState) -> Vec<StockKey> {
    order.placed.iter().flat_map(|p| &p.lines).map(|l| StockKey::new(l.sku.clone(), l.location.clone())).collect()
}

fn stock<'a>(stocks: &'a BTreeMap<StockKey, StockState>, key: &StockKey) -> Result<&'a StockState, Rejection> {
    stocks
        .get(key)
        .ok_or_else(|| Rejection::not_found(format!("stock: {} at {} was not loaded", key.sku, key.location)))
}

/// Ends an order (cancel or expire) and releases every reservation it holds, atomically.
pub fn decide_end_order(
    order_id: &OrderId,
    command: &OrderAction,
    order: &OrderState,
    stocks: &BTreeMap<StockKey, StockState>,
) -> Result<Decision, Rejection> {
    debug_assert!(matches!(command, OrderAction::Cancel { .. } | OrderAction::Expire {}));
    let mut decision = Decision { order_id: Some(order_id.clone()), ..Decision::default() };
    decision.push(StreamId::order(order_id), Order::decide(command, order)?);
    for key in order_stock_keys(order) {
        let events = Stock::decide(&StockAction::Release { order_id: order_id.clone() }, stock(stocks, &key)?)?;
        decision.push(StreamId::stock(&key), events);
    }
    Ok(decision)
}

/// Creates a shipment after checking its lines against the order: the order is confirmed,
/// each line is supplied from the shipment's location, and no more than is left to ship.
pub fn decide_create_shipment(
    shipment_id: &ShipmentId,
    command: &ShipmentCommand,
    shipment: &ShipmentState,
    order: &OrderState,
) -> Result<Decision, Rejection> {
    let ShipmentCommand::Create { order_id, location, lines } = command else {
        return Err(Rejection::invalid("expected a create-shipment command"));
    };
    let placed =
        order.placed.as_ref().ok_or_else(|| Rejection::not_found(format!("order {order_id}: does not exist")))?;
    if order.status < OrderStatus::Confirmed || order.status.is_terminal() {
        return Err(Rejection::conflict(format!(
            "order {order_id}: is {:?}; only a confirmed order can be shipped",
            order.status
        )));
    }
    for line in lines {
        let order_line = placed
            .lines
            .iter()
            .find(|l| l.sku == line.sku)
            .ok_or_else(|| Rejection::not_found(format!("lines: order {order_id} has no line for {}", line.sku)))?;
        if &order_line.location != location {
            return Err(Rejection::conflict(format!(
                "lines: {} is supplied from {}, not from {location}",
                line.sku, order_line.location
            )));
        }
        let progress = &order.lines[&line.sku];
        if line.quantity > progress.ordered.saturating_sub(progress.shipped) {
            return Err(Rejection::conflict(format!(
                "lines: {} of {} exceeds the {} left to ship",
                line.quantity,
                line.sku,
                progress.ordered.saturating_sub(progress.shipped)
            )));
        }
    }
    let mut decision = Decision { order_id: Some(order_id.clone()), ..Decision::default() };
    decision.push(StreamId::shipment(shipment_id), Shipment::decide(command, shipment)?);
    decision.push::<OrderEvent>(StreamId::order(order_id), vec![]);
    Ok(decision)
}

/// Ships a packed shipment: the shipment's `ShipmentShipped`, the order's `LinesShipped`
/// and a `StockDispatched` on each stock item it carries, in one append.
pub fn decide_ship(
    shipment_id: &ShipmentId,
    command: &ShipmentCommand,
    shipment: &ShipmentState,
    order: &OrderState,
    stocks: &BTreeMap<StockKey, StockState>,
) -> Result<Decision, Rejection> {
    let shipment_events = Shipment::decide(command, shipment)?;
    let order_id = shipment.order_id.clone().expect("a created shipment names its order");
    let location = shipment.location.clone().expect("a created shipment has a location");
    let mut decision = Decision { order_id: Some(order_id.clone()), ..Decision::default() };
    decision.push(StreamId::shipment(shipment_id), shipment_events);
    let record = OrderAction::RecordShipped { shipment_id: shipment_id.clone(), lines: shipment.lines.clone() };
    decision.push(StreamId::order(&order_id), Order::decide(&record, order)?);
    for line in &shipment.lines {
        let key = StockKey::new(line.sku.clone(), location.clone());
        let dispatch = StockAction::Dispatch {
            order_id: order_id.clone(),
            shipment_id: shipment_id.clone(),
            quantity: line.quantity,
        };
        decision.push(StreamId::stock(&key), Stock::decide(&dispatch, stock(stocks, &key)?)?);
    }
    Ok(decision)
}

/// Records a carrier event; when it delivers the shipment, the order's lines are
/// delivered in the same append.
pub fn decide_carrier_event(
    shipment_id: &ShipmentId,
    command: &ShipmentCommand,
    shipment: &ShipmentState,
    order: &OrderState,
) -> Result<Decision, Rejection> {
    let events = Shipment::decide(command, shipment)?;
    let after = events.iter().fold(shipment.clone(), Shipment::evolve);
    let order_id = shipment.order_id.clone().expect("a created shipment names its order");
    let mut decision = Decision { order_id: Some(order_id.clone()), ..Decision::default() };
    decision.push(StreamId::shipment(shipment_id), events);
    let order_events = if after.status == ShipmentStatus::Delivered && shipment.status != ShipmentStatus::Delivered {
        let record = OrderAction::RecordDelivered { shipment_id: shipment_id.clone(), lines: shipment.lines.clone() };
        Order::decide(&record, order)?
    } else {
        vec![]
    };
    decision.push(StreamId::order(&order_id), order_events);
    Ok(decision)
}

/// Receives a return: the order's `ReturnReceived`, and restocked units back on hand at
/// the location that supplied each line.
pub fn decide_receive_return(
    order_id: &OrderId,
    return_id: &ReturnId,
    lines: &[ReturnedLine],
    order: &OrderState,
    stocks: &BTreeMap<StockKey, StockState>,
) -> Result<Decision, Rejection> {
    let command = OrderAction::ReceiveReturn { return_id: return_id.clone(), lines: lines.to_vec() };
    let mut decision = Decision { order_id: Some(order_id.clone()), ..Decision::default() };
    decision.push(StreamId::order(order_id), Order::decide(&command, order)?);
    for key in return_stock_keys(order, lines) {
        let delta: i64 = lines.iter().filter(|l| l.restock && l.sku == key.sku).map(|l| i64::from(l.quantity)).sum();
        let adjust = StockAction::Adjust { delta, reason: AdjustmentReason::ReturnToStock, expected_on_hand: None };
        decision.push(StreamId::stock(&key), Stock::decide(&adjust, stock(stocks, &key)?)?);
    }
    Ok(decision)
}

/// The stock items that restocked return lines go back to.
pub fn return_stock_keys(order: &OrderState, lines: &[ReturnedLine]) -> Vec<StockKey> {
    let mut keys: Vec<StockKey> =
        order_stock_keys(order).into_iter().filter(|k| lines.iter().any(|l| l.restock && l.sku == k.sku)).collect();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::DomainEvent;
    use crate::order::tests::{eur, placed_order};
    use crate::order::LineQuantity;
    use crate::shipment::{CarrierEventKind, ShipmentEvent};
    use crate::stock::StockEvent;
    use crate::{LocationId, Money, Sku};

    fn oid() -> OrderId {
        OrderId::parse("o1").unwrap()
    }
    fn sid() -> ShipmentId {
        ShipmentId::parse("s1").unwrap()
    }
    fn key() -> StockKey {
        StockKey::new(Sku::parse("mug").unwrap(), LocationId::parse("berlin").unwrap())
    }
    fn confirmed_order() -> OrderState {
        Order::fold(&[
            OrderEvent::OrderPlaced { order: Box::new(placed_order(2_000)) },
            OrderEvent::PaymentAuthorized {
                amount: Money::new(2_000, eur()),
                provider_ref: "pi".into(),
                provider_event_id: "e1".into(),
            },
            OrderEvent::OrderConfirmed {},
        ])
    }
    fn reserved_stock() -> BTreeMap<StockKey, StockState> {
        BTreeMap::from([(
            key(),
            Stock::fold(&[
                StockEvent::StockReceived { units: 5, reference: None },
                StockEvent::StockReserved { order_id: oid(), quantity: 2 },
            ]),
        )])
    }
    fn two_mugs() -> Vec<LineQuantity> {
        vec![LineQuantity { sku: Sku::parse("mug").unwrap(), quantity: 2 }]
    }

    #[test]
    fn cancel_releases_every_reservation() {
        let cancel = OrderAction::Cancel { reason: "changed mind".into() };
        let decision = decide_end_order(&oid(), &cancel, &confirmed_order(), &reserved_stock()).unwrap();
        assert_eq!(decision.streams[1].0, "stock-mug@berlin");
        assert_eq!(
            decision.streams[1].1,
            vec![DomainEvent::Stock(StockEvent::ReservationReleased { order_id: oid(), quantity: 2 })]
        );
    }

    #[test]
    fn shipment_lines_are_checked_against_the_order() {
        let create = |location: &str, q: u32| ShipmentCommand::Create {
            order_id: oid(),
            location: LocationId::parse(location).unwrap(),
            lines: vec![LineQuantity { sku: Sku::parse("mug").unwrap(), quantity: q }],
        };
        let ok = decide_create_shipment(&sid(), &create("berlin", 2), &ShipmentState::default(), &confirmed_order());
        assert_eq!(ok.unwrap().event_count(), 1);
        let wrong_place =
            decide_create_shipment(&sid(), &create("paris", 2), &ShipmentState::default(), &confirmed_order());
        assert!(wrong_place.unwrap_err().reason.contains("supplied from berlin"));
        let too_many =
            decide_create_shipment(&sid(), &create("berlin", 3), &ShipmentState::default(), &confirmed_order());
        assert!(too_many.is_err());
        let unpaid = Order::fold(&[OrderEvent::OrderPlaced { order: Box::new(placed_order(2_000)) }]);
        assert!(decide_create_shipment(&sid(), &create("berlin", 2), &ShipmentState::default(), &unpaid).is_err());
    }

    #[test]
    fn shipping_dispatches_stock_and_ships_order_lines_then_delivery_delivers_them() {
        let shipment = Shipment::fold(&[
            ShipmentEvent::ShipmentCreated { order_id: oid(), location: key().location, lines: two_mugs() },
            ShipmentEvent::ShipmentPacked {},
        ]);
        let ship = ShipmentCommand::Ship { carrier: "DHL".into(), tracking_number: "T1".into() };
        let decision = decide_ship(&sid(), &ship, &shipment, &confirmed_order(), &reserved_stock()).unwrap();
        assert_eq!(decision.event_count(), 3);
        let mut order = confirmed_order();
        for (stream, events) in &decision.streams {
            if stream == "order-o1" {
                for e in events {
                    let DomainEvent::Order(e) = e else { panic!() };
                    order = Order::evolve(order, e);
                }
            }
        }
        assert_eq!(order.status, OrderStatus::Shipped);
        let shipped = Shipment::evolve(
            shipment,
            &ShipmentEvent::ShipmentShipped { carrier: "DHL".into(), tracking_number: "T1".into() },
        );
        let delivered = ShipmentCommand::RecordCarrierEvent {
            event_id: "c1".into(),
            kind: CarrierEventKind::Delivered,
            occurred_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        };
        let decision = decide_carrier_event(&sid(), &delivered, &shipped, &order).unwrap();
        assert_eq!(decision.streams[1].1.len(), 1, "the order's lines are delivered");
    }
}
