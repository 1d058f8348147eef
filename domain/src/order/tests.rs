//! The order decider, given events and a command.

use super::*;
use crate::cart::{Customer, ShippingMethod};
use crate::{CartId, LocationId};

#[test]
fn status_names_are_the_serialized_names() {
    use OrderStatus::*;
    for status in [NotPlaced, Placed, Confirmed, PartiallyShipped, Shipped, Delivered, Completed, Cancelled, Expired] {
        assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
    }
}
use crate::{given_when, RejectionKind};

pub fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}
fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}
fn ship(s: &str) -> ShipmentId {
    ShipmentId::parse(s).unwrap()
}
pub fn placed_order(total: i64) -> PlacedOrder {
    let m = |a| Money::new(a, eur());
    PlacedOrder {
        cart_id: CartId::parse("c1").unwrap(),
        customer: Customer::Guest { email: "ann@example.com".into() },
        email: "ann@example.com".into(),
        currency: eur(),
        lines: vec![OrderLine {
            sku: sku("mug"),
            location: LocationId::parse("berlin").unwrap(),
            quantity: 2,
            unit_price: m(total / 2),
            pricing: None,
            discount: None,
            tax: None,
        }],
        discount_code: None,
        tax_rate_bps: 0,
        promotions: vec![],
        totals: OrderTotals {
            subtotal: m(total),
            discount: m(0),
            shipping: m(0),
            tax: m(0),
            total: m(total),
            tax_included: None,
        },
        shipping_address: Some(crate::testing::address()),
        billing_address: None,
        shipping_method: Some(ShippingMethod { id: "dhl".into(), price: m(0) }),
        shipping: None,
    }
}
fn placed() -> OrderEvent {
    OrderEvent::OrderPlaced { order: Box::new(placed_order(2_000)) }
}
fn authorized() -> Vec<OrderEvent> {
    vec![
        placed(),
        OrderEvent::PaymentAuthorized {
            amount: Money::new(2_000, eur()),
            provider_ref: "pi_1".into(),
            provider_event_id: "evt_1".into(),
        },
        OrderEvent::OrderConfirmed {},
    ]
}
fn lines(q: u32) -> Vec<LineQuantity> {
    vec![LineQuantity { sku: sku("mug"), quantity: q }]
}

#[test]
fn place_once() {
    let cmd = OrderAction::Place { order: Box::new(placed_order(2_000)) };
    assert_eq!(given_when::<Order>(&[], &cmd).unwrap(), vec![placed()]);
    assert_eq!(given_when::<Order>(&[placed()], &cmd).unwrap_err().kind, RejectionKind::Conflict);
}

#[test]
fn authorization_confirms_the_order() {
    let cmd = OrderAction::AuthorizePayment {
        amount: Money::new(2_000, eur()),
        provider_ref: "pi_1".into(),
        provider_event_id: "evt_1".into(),
    };
    assert_eq!(given_when::<Order>(&[placed()], &cmd).unwrap(), authorized()[1..].to_vec());
    assert!(
        given_when::<Order>(&authorized(), &cmd).unwrap().is_empty(),
        "a provider event seen twice changes nothing"
    );
    let wrong = OrderAction::AuthorizePayment {
        amount: Money::new(1_999, eur()),
        provider_ref: "pi_1".into(),
        provider_event_id: "evt_2".into(),
    };
    assert!(given_when::<Order>(&[placed()], &wrong).unwrap_err().reason.contains("total"));
    assert_eq!(given_when::<Order>(&[], &cmd).unwrap_err().kind, RejectionKind::NotFound);
}

#[test]
fn captures_never_exceed_the_authorization() {
    let capture =
        |a, id: &str| OrderAction::CapturePayment { amount: Money::new(a, eur()), provider_event_id: id.into() };
    assert_eq!(given_when::<Order>(&authorized(), &capture(1_500, "c1")).unwrap().len(), 1);
    let mut given = authorized();
    given.push(OrderEvent::PaymentCaptured { amount: Money::new(1_500, eur()), provider_event_id: "c1".into() });
    assert!(given_when::<Order>(&given, &capture(600, "c2")).unwrap_err().reason.contains("exceed"));
    assert_eq!(given_when::<Order>(&given, &capture(500, "c2")).unwrap().len(), 1);
    assert!(given_when::<Order>(&[placed()], &capture(1, "c3")).is_err());
    assert!(given_when::<Order>(&given, &capture(0, "c4")).unwrap_err().reason.contains("positive"));
}

#[test]
fn void_only_while_nothing_is_captured() {
    let void = OrderAction::VoidPayment { provider_event_id: "v1".into() };
    assert_eq!(
        given_when::<Order>(&authorized(), &void).unwrap(),
        vec![OrderEvent::PaymentVoided { provider_event_id: "v1".into() }]
    );
    let mut captured = authorized();
    captured.push(OrderEvent::PaymentCaptured { amount: Money::new(1, eur()), provider_event_id: "c1".into() });
    assert!(given_when::<Order>(&captured, &void).unwrap_err().reason.contains("refund"));
    assert!(given_when::<Order>(&[placed()], &void).is_err());
}

#[test]
fn refunds_never_exceed_captures() {
    let refund = |a| OrderAction::RefundPayment { amount: Money::new(a, eur()), provider_event_id: "r1".into() };
    assert!(given_when::<Order>(&authorized(), &refund(1)).is_err());
    let mut captured = authorized();
    captured.push(OrderEvent::PaymentCaptured { amount: Money::new(2_000, eur()), provider_event_id: "c1".into() });
    assert_eq!(given_when::<Order>(&captured, &refund(500)).unwrap().len(), 1);
    assert!(given_when::<Order>(&captured, &refund(2_001)).is_err());
}

#[test]
fn payment_failure_is_recorded_once() {
    let fail = OrderAction::RecordPaymentFailure { reason: "card declined".into(), provider_event_id: "f1".into() };
    let events = given_when::<Order>(&[placed()], &fail).unwrap();
    assert_eq!(events.len(), 1);
    let mut given = vec![placed()];
    given.extend(events);
    assert!(given_when::<Order>(&given, &fail).unwrap().is_empty());
}

#[test]
fn shipping_needs_confirmation_and_never_exceeds_ordered() {
    let ship1 = OrderAction::RecordShipped { shipment_id: ship("s1"), lines: lines(1) };
    assert!(given_when::<Order>(&[placed()], &ship1).unwrap_err().reason.contains("not confirmed"));
    let events = given_when::<Order>(&authorized(), &ship1).unwrap();
    let mut given = authorized();
    given.extend(events);
    assert_eq!(Order::fold(&given).status, OrderStatus::PartiallyShipped);
    assert!(given_when::<Order>(&given, &ship1).unwrap().is_empty(), "same shipment twice");
    let too_many = OrderAction::RecordShipped { shipment_id: ship("s2"), lines: lines(2) };
    assert!(given_when::<Order>(&given, &too_many).unwrap_err().reason.contains("exceeds"));
    let unknown = OrderAction::RecordShipped {
        shipment_id: ship("s3"),
        lines: vec![LineQuantity { sku: sku("tea"), quantity: 1 }],
    };
    assert_eq!(given_when::<Order>(&given, &unknown).unwrap_err().kind, RejectionKind::NotFound);
}

#[test]
fn delivered_then_completed() {
    let mut given = authorized();
    given.push(OrderEvent::LinesShipped { shipment_id: ship("s1"), lines: lines(2) });
    assert_eq!(Order::fold(&given).status, OrderStatus::Shipped);
    let complete = OrderAction::Complete {};
    assert!(given_when::<Order>(&given, &complete).is_err());
    let deliver_unknown = OrderAction::RecordDelivered { shipment_id: ship("s9"), lines: lines(2) };
    assert!(given_when::<Order>(&given, &deliver_unknown).is_err());
    let deliver = OrderAction::RecordDelivered { shipment_id: ship("s1"), lines: lines(2) };
    given.extend(given_when::<Order>(&given, &deliver).unwrap());
    assert_eq!(Order::fold(&given).status, OrderStatus::Delivered);
    assert_eq!(given_when::<Order>(&given, &complete).unwrap(), vec![OrderEvent::OrderCompleted {}]);
}

#[test]
fn cancel_only_while_nothing_shipped() {
    let cancel = OrderAction::Cancel { reason: "customer asked".into() };
    assert_eq!(given_when::<Order>(&authorized(), &cancel).unwrap().len(), 1);
    let mut shipped = authorized();
    shipped.push(OrderEvent::LinesShipped { shipment_id: ship("s1"), lines: lines(1) });
    assert!(given_when::<Order>(&shipped, &cancel).is_err());
    let mut cancelled = authorized();
    cancelled.push(OrderEvent::OrderCancelled { reason: "x".into() });
    assert!(given_when::<Order>(&cancelled, &cancel).is_err());
    let capture = OrderAction::CapturePayment { amount: Money::new(1, eur()), provider_event_id: "c9".into() };
    assert!(given_when::<Order>(&cancelled, &capture).is_err(), "no capture after cancel");
    let void = OrderAction::VoidPayment { provider_event_id: "v9".into() };
    assert!(given_when::<Order>(&cancelled, &void).is_ok(), "void after cancel");
}

#[test]
fn expire_only_unpaid_placed_orders() {
    assert_eq!(given_when::<Order>(&[placed()], &OrderAction::Expire {}).unwrap(), vec![OrderEvent::OrderExpired {}]);
    assert!(given_when::<Order>(&authorized(), &OrderAction::Expire {}).is_err());
}

#[test]
fn returns_never_exceed_delivered() {
    let mut given = authorized();
    given.push(OrderEvent::LinesShipped { shipment_id: ship("s1"), lines: lines(2) });
    given.push(OrderEvent::LinesDelivered { shipment_id: ship("s1"), lines: lines(1) });
    let rid = ReturnId::parse("r1").unwrap();
    let too_many = OrderAction::RequestReturn { return_id: rid.clone(), lines: lines(2), reason: "too big".into() };
    assert!(given_when::<Order>(&given, &too_many).is_err());
    let request = OrderAction::RequestReturn { return_id: rid.clone(), lines: lines(1), reason: "too big".into() };
    given.extend(given_when::<Order>(&given, &request).unwrap());
    assert!(given_when::<Order>(&given, &request).is_err(), "same return id twice");
    let receive = OrderAction::ReceiveReturn {
        return_id: rid.clone(),
        lines: vec![ReturnedLine { sku: sku("mug"), quantity: 1, restock: true }],
    };
    given.extend(given_when::<Order>(&given, &receive).unwrap());
    assert_eq!(Order::fold(&given).lines[&sku("mug")].returned, 1);
    assert!(given_when::<Order>(&given, &receive).unwrap_err().reason.contains("already received"));
    let unknown = OrderAction::ReceiveReturn { return_id: ReturnId::parse("r2").unwrap(), lines: vec![] };
    assert_eq!(given_when::<Order>(&given, &unknown).unwrap_err().kind, RejectionKind::NotFound);
}
