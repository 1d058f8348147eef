//! Stock: one stream per SKU × location, holding on-hand, reserved, unavailable and
//! incoming units, and the reservation of every order line it supplies.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{check_quantity, Decider, OrderId, Rejection, RejectionKind, ShipmentId};

/// Largest single movement of units (receive, adjust, incoming, safety stock).
pub const STOCK_MOVE_MAX: i64 = 1_000_000_000;
/// Longest receipt reference (a delivery note's number), in characters.
pub const REFERENCE_CHARS_MAX: usize = 200;

/// Why an adjustment was made. Every adjustment has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentReason {
    Correction,
    CycleCount,
    Damage,
    Shrinkage,
    ReturnToStock,
}

/// The reservation held for one order line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reservation {
    pub quantity: u32,
    /// Units dispatched with shipments so far; never more than `quantity`.
    pub dispatched: u32,
    pub released: bool,
    pub shipments: BTreeSet<ShipmentId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StockState {
    pub on_hand: i64,
    /// Units held for placed orders and not yet shipped or released.
    pub reserved: i64,
    /// Units held back from sale (safety stock).
    pub unavailable: i64,
    pub incoming: i64,
    pub allow_backorders: bool,
    pub reservations: BTreeMap<OrderId, Reservation>,
    /// Below this many available units the item is low.
    #[serde(default)]
    pub low_stock_threshold: Option<u32>,
}

impl StockState {
    /// Units that can still be promised to shoppers.
    pub fn available(&self) -> i64 {
        self.on_hand.saturating_sub(self.reserved).saturating_sub(self.unavailable)
    }

    /// Whether fewer units are available than the low-stock threshold.
    pub fn is_low(&self) -> bool {
        self.low_stock_threshold.is_some_and(|t| self.available() < i64::from(t))
    }
}

/// What a caller can ask of a stock item. Reserving, releasing and dispatching are steps
/// of checkout, ending an order and shipping, so they are [`StockAction`]s only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StockCommand {
    Receive {
        quantity: u32,
        #[serde(default)]
        reference: Option<String>,
    },
    Adjust {
        delta: i64,
        reason: AdjustmentReason,
        expected_on_hand: Option<i64>,
    },
    SetSafetyStock {
        quantity: u32,
    },
    ExpectIncoming {
        quantity: u32,
    },
    SetBackorders {
        allowed: bool,
    },
    /// Below this many available units the stock item is low (a `stock.low` integration
    /// event is published on each crossing).
    SetLowStockThreshold {
        threshold: u32,
    },
}

impl From<StockCommand> for StockAction {
    fn from(command: StockCommand) -> StockAction {
        use StockCommand as C;
        match command {
            C::Receive { quantity, reference } => StockAction::Receive { quantity, reference },
            C::Adjust { delta, reason, expected_on_hand } => StockAction::Adjust { delta, reason, expected_on_hand },
            C::SetSafetyStock { quantity } => StockAction::SetSafetyStock { quantity },
            C::ExpectIncoming { quantity } => StockAction::ExpectIncoming { quantity },
            C::SetBackorders { allowed } => StockAction::SetBackorders { allowed },
            C::SetLowStockThreshold { threshold } => StockAction::SetLowStockThreshold { threshold },
        }
    }
}

/// Everything the stock decider does: the caller's [`StockCommand`]s and the steps flows take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StockAction {
    Receive {
        quantity: u32,
        /// The supplier's delivery reference (a delivery note, a purchase order).
        #[serde(default)]
        reference: Option<String>,
    },
    /// Changes on-hand units by `delta`; with `expected_on_hand`, only if on-hand is
    /// exactly that now (compare-and-set, for cycle counts).
    Adjust {
        delta: i64,
        reason: AdjustmentReason,
        expected_on_hand: Option<i64>,
    },
    Reserve {
        order_id: OrderId,
        quantity: u32,
    },
    Release {
        order_id: OrderId,
    },
    Dispatch {
        order_id: OrderId,
        shipment_id: ShipmentId,
        quantity: u32,
    },
    SetSafetyStock {
        quantity: u32,
    },
    ExpectIncoming {
        quantity: u32,
    },
    SetBackorders {
        allowed: bool,
    },
    SetLowStockThreshold {
        threshold: u32,
    },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockEvent {
    /// Schema version 2 (see `codec::SCHEMA_VERSIONS`); version 1 had `quantity` and no reference.
    StockReceived {
        units: u32,
        reference: Option<String>,
    },
    StockAdjusted {
        delta: i64,
        reason: AdjustmentReason,
    },
    StockReserved {
        order_id: OrderId,
        quantity: u32,
    },
    ReservationReleased {
        order_id: OrderId,
        quantity: u32,
    },
    StockDispatched {
        order_id: OrderId,
        shipment_id: ShipmentId,
        quantity: u32,
    },
    SafetyStockSet {
        quantity: u32,
    },
    IncomingExpected {
        quantity: u32,
    },
    BackordersSet {
        allowed: bool,
    },
    LowStockThresholdSet {
        threshold: u32,
    },
}
}

pub struct Stock;

impl Decider for Stock {
    type Command = StockAction;
    type Event = StockEvent;
    type State = StockState;

    fn decide(command: &StockAction, state: &StockState) -> Result<Vec<StockEvent>, Rejection> {
        use StockAction as C;
        use StockEvent as E;
        let event = match command {
            C::Receive { quantity, reference } => {
                check_quantity("quantity", *quantity)?;
                if let Some(r) =
                    reference.as_deref().filter(|r| r.is_empty() || r.chars().count() > REFERENCE_CHARS_MAX)
                {
                    return Err(Rejection::invalid(format!("reference: '{r}' must be 1 to 200 characters")));
                }
                checked(state.on_hand.checked_add(i64::from(*quantity)), "quantity: receiving it")?;
                E::StockReceived { units: *quantity, reference: reference.clone() }
            }
            C::Adjust { delta, reason, expected_on_hand } => {
                if *delta == 0 || delta.unsigned_abs() > STOCK_MOVE_MAX.unsigned_abs() {
                    return Err(Rejection::invalid(format!(
                        "delta: must be non-zero and at most {STOCK_MOVE_MAX} in size"
                    )));
                }
                if let Some(expected) = expected_on_hand {
                    if *expected != state.on_hand {
                        return Err(Rejection::conflict(format!(
                            "expected_on_hand: expected {expected} on hand, found {}",
                            state.on_hand
                        )));
                    }
                }
                let on_hand = checked(state.on_hand.checked_add(*delta), "delta: applying it to on hand")?;
                if on_hand < 0 {
                    return Err(Rejection::conflict(format!(
                        "delta: would leave on hand at {on_hand}; only {} on hand",
                        state.on_hand
                    )));
                }
                let available = checked(state.available().checked_add(*delta), "delta: applying it to available")?;
                if available < 0 && !state.allow_backorders {
                    return Err(Rejection::conflict(format!(
                        "delta: would leave available at {available}; {} units are reserved for orders",
                        state.reserved
                    )));
                }
                E::StockAdjusted { delta: *delta, reason: *reason }
            }
            C::Reserve { order_id, quantity } => {
                check_quantity("quantity", *quantity)?;
                if let Some(existing) = state.reservations.get(order_id) {
                    if existing.released {
                        return Err(Rejection::conflict(format!("order {order_id}: its reservation was released")));
                    }
                    if existing.quantity == *quantity {
                        return Ok(vec![]);
                    }
                    return Err(Rejection::conflict(format!(
                        "order {order_id}: already holds {} units, not {quantity}",
                        existing.quantity
                    )));
                }
                let available = state.available();
                if i64::from(*quantity) > available && !state.allow_backorders {
                    return Err(Rejection::new(
                        RejectionKind::OutOfStock,
                        format!("{quantity} requested, {available} available"),
                    ));
                }
                E::StockReserved { order_id: order_id.clone(), quantity: *quantity }
            }
            C::Release { order_id } => match state.reservations.get(order_id) {
                Some(r) if !r.released && r.quantity > r.dispatched => {
                    E::ReservationReleased { order_id: order_id.clone(), quantity: r.quantity - r.dispatched }
                }
                _ => return Ok(vec![]),
            },
            C::Dispatch { order_id, shipment_id, quantity } => {
                check_quantity("quantity", *quantity)?;
                let r = state
                    .reservations
                    .get(order_id)
                    .ok_or_else(|| Rejection::not_found(format!("order {order_id}: holds no reservation here")))?;
                if r.shipments.contains(shipment_id) {
                    return Ok(vec![]);
                }
                if r.released {
                    return Err(Rejection::conflict(format!("order {order_id}: its reservation was released")));
                }
                if r.dispatched.saturating_add(*quantity) > r.quantity {
                    return Err(Rejection::conflict(format!(
                        "quantity: shipping {quantity} would exceed the {} reserved ({} already shipped)",
                        r.quantity, r.dispatched
                    )));
                }
                if i64::from(*quantity) > state.on_hand {
                    return Err(Rejection::conflict(format!(
                        "quantity: shipping {quantity} but only {} on hand",
                        state.on_hand
                    )));
                }
                E::StockDispatched { order_id: order_id.clone(), shipment_id: shipment_id.clone(), quantity: *quantity }
            }
            C::SetSafetyStock { quantity } => {
                let q = i64::from(*quantity);
                if q == state.unavailable {
                    return Ok(vec![]);
                }
                let unreserved = state.on_hand.saturating_sub(state.reserved);
                if q > unreserved && !state.allow_backorders {
                    return Err(Rejection::conflict(format!(
                        "quantity: safety stock {q} exceeds the {unreserved} units not reserved"
                    )));
                }
                E::SafetyStockSet { quantity: *quantity }
            }
            C::ExpectIncoming { quantity } => {
                check_quantity("quantity", *quantity)?;
                checked(state.incoming.checked_add(i64::from(*quantity)), "quantity: adding it to incoming")?;
                E::IncomingExpected { quantity: *quantity }
            }
            C::SetBackorders { allowed } => {
                if *allowed == state.allow_backorders {
                    return Ok(vec![]);
                }
                E::BackordersSet { allowed: *allowed }
            }
            C::SetLowStockThreshold { threshold } => {
                if state.low_stock_threshold == Some(*threshold) {
                    return Ok(vec![]);
                }
                E::LowStockThresholdSet { threshold: *threshold }
            }
        };
        Ok(vec![event])
    }

    fn evolve(mut state: StockState, event: &StockEvent) -> StockState {
        use StockEvent as E;
        match event {
            E::StockReceived { units, .. } => {
                let q = i64::from(*units);
                state.on_hand = state.on_hand.saturating_add(q);
                state.incoming = state.incoming.saturating_sub(q).max(0);
            }
            E::StockAdjusted { delta, .. } => state.on_hand = state.on_hand.saturating_add(*delta),
            E::StockReserved { order_id, quantity } => {
                state.reserved = state.reserved.saturating_add(i64::from(*quantity));
                state
                    .reservations
                    .insert(order_id.clone(), Reservation { quantity: *quantity, ..Reservation::default() });
            }
            E::ReservationReleased { order_id, quantity } => {
                state.reserved = state.reserved.saturating_sub(i64::from(*quantity));
                if let Some(r) = state.reservations.get_mut(order_id) {
                    r.released = true;
                }
            }
            E::StockDispatched { order_id, shipment_id, quantity } => {
                let q = i64::from(*quantity);
                state.on_hand = state.on_hand.saturating_sub(q);
                state.reserved = state.reserved.saturating_sub(q);
                if let Some(r) = state.reservations.get_mut(order_id) {
                    r.dispatched = r.dispatched.saturating_add(*quantity);
                    r.shipments.insert(shipment_id.clone());
                }
            }
            E::SafetyStockSet { quantity } => state.unavailable = i64::from(*quantity),
            E::IncomingExpected { quantity } => state.incoming = state.incoming.saturating_add(i64::from(*quantity)),
            E::BackordersSet { allowed } => state.allow_backorders = *allowed,
            E::LowStockThresholdSet { threshold } => state.low_stock_threshold = Some(*threshold),
        }
        state
    }
}

/// The result of a checked sum, or a rejection saying which sum would overflow.
fn checked(sum: Option<i64>, what: &str) -> Result<i64, Rejection> {
    sum.ok_or_else(|| Rejection::conflict(format!("{what} would overflow the count of units")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::given_when;

    fn order(s: &str) -> OrderId {
        OrderId::parse(s).unwrap()
    }
    fn shipment(s: &str) -> ShipmentId {
        ShipmentId::parse(s).unwrap()
    }
    fn received(q: u32) -> StockEvent {
        StockEvent::StockReceived { units: q, reference: None }
    }
    fn reserved(o: &str, q: u32) -> StockEvent {
        StockEvent::StockReserved { order_id: order(o), quantity: q }
    }

    #[test]
    fn receive_adds_on_hand_and_consumes_incoming() {
        assert_eq!(
            given_when::<Stock>(&[], &StockAction::Receive { quantity: 5, reference: None }).unwrap(),
            vec![received(5)]
        );
        let s = Stock::fold(&[StockEvent::IncomingExpected { quantity: 8 }, received(5)]);
        assert_eq!((s.on_hand, s.incoming), (5, 3));
        assert!(given_when::<Stock>(&[], &StockAction::Receive { quantity: 0, reference: None }).is_err());
    }

    #[test]
    fn reserve_within_available() {
        let cmd = StockAction::Reserve { order_id: order("o1"), quantity: 3 };
        assert_eq!(given_when::<Stock>(&[received(3)], &cmd).unwrap(), vec![reserved("o1", 3)]);
        let err = given_when::<Stock>(&[received(2)], &cmd).unwrap_err();
        assert_eq!(err.kind, RejectionKind::OutOfStock);
        assert!(err.reason.contains("2 available"), "{}", err.reason);
    }

    #[test]
    fn reserve_is_idempotent_per_order_line() {
        let cmd = StockAction::Reserve { order_id: order("o1"), quantity: 3 };
        let given = [received(3), reserved("o1", 3)];
        assert!(given_when::<Stock>(&given, &cmd).unwrap().is_empty());
        let other = StockAction::Reserve { order_id: order("o1"), quantity: 2 };
        assert_eq!(given_when::<Stock>(&given, &other).unwrap_err().kind, RejectionKind::Conflict);
    }

    #[test]
    fn safety_stock_is_unavailable() {
        let given = [received(5), StockEvent::SafetyStockSet { quantity: 3 }];
        let cmd = StockAction::Reserve { order_id: order("o1"), quantity: 3 };
        assert_eq!(given_when::<Stock>(&given, &cmd).unwrap_err().kind, RejectionKind::OutOfStock);
        let too_much = StockAction::SetSafetyStock { quantity: 6 };
        assert!(given_when::<Stock>(&[received(5)], &too_much).is_err());
    }

    #[test]
    fn backorders_allow_reserving_beyond_available() {
        let given = [received(1), StockEvent::BackordersSet { allowed: true }];
        let cmd = StockAction::Reserve { order_id: order("o1"), quantity: 3 };
        assert_eq!(given_when::<Stock>(&given, &cmd).unwrap(), vec![reserved("o1", 3)]);
        assert!(given_when::<Stock>(&given, &StockAction::SetBackorders { allowed: true }).unwrap().is_empty());
    }

    #[test]
    fn release_returns_the_unshipped_rest_once() {
        let given = [
            received(5),
            reserved("o1", 3),
            StockEvent::StockDispatched { order_id: order("o1"), shipment_id: shipment("s1"), quantity: 1 },
        ];
        let cmd = StockAction::Release { order_id: order("o1") };
        assert_eq!(
            given_when::<Stock>(&given, &cmd).unwrap(),
            vec![StockEvent::ReservationReleased { order_id: order("o1"), quantity: 2 }]
        );
        let mut released = given.to_vec();
        released.push(StockEvent::ReservationReleased { order_id: order("o1"), quantity: 2 });
        assert!(given_when::<Stock>(&released, &cmd).unwrap().is_empty());
        let s = Stock::fold(&released);
        assert_eq!((s.on_hand, s.reserved, s.available()), (4, 0, 4));
        assert!(given_when::<Stock>(&[], &cmd).unwrap().is_empty());
    }

    #[test]
    fn dispatch_never_ships_more_than_reserved() {
        let given = [received(5), reserved("o1", 2)];
        let ok = StockAction::Dispatch { order_id: order("o1"), shipment_id: shipment("s1"), quantity: 2 };
        assert_eq!(
            given_when::<Stock>(&given, &ok).unwrap(),
            vec![StockEvent::StockDispatched { order_id: order("o1"), shipment_id: shipment("s1"), quantity: 2 }]
        );
        let too_many = StockAction::Dispatch { order_id: order("o1"), shipment_id: shipment("s1"), quantity: 3 };
        assert!(given_when::<Stock>(&given, &too_many).unwrap_err().reason.contains("exceed"));
        let none = StockAction::Dispatch { order_id: order("o9"), shipment_id: shipment("s1"), quantity: 1 };
        assert_eq!(given_when::<Stock>(&given, &none).unwrap_err().kind, RejectionKind::NotFound);
        let mut shipped = given.to_vec();
        shipped.extend(given_when::<Stock>(&given, &ok).unwrap());
        assert!(given_when::<Stock>(&shipped, &ok).unwrap().is_empty(), "dispatch is idempotent per shipment");
        let s = Stock::fold(&shipped);
        assert_eq!((s.on_hand, s.reserved), (3, 0));
    }

    #[test]
    fn adjust_needs_a_reason_and_keeps_on_hand_and_available_non_negative() {
        let down = StockAction::Adjust { delta: -2, reason: AdjustmentReason::Damage, expected_on_hand: None };
        assert_eq!(
            given_when::<Stock>(&[received(5)], &down).unwrap(),
            vec![StockEvent::StockAdjusted { delta: -2, reason: AdjustmentReason::Damage }]
        );
        assert!(given_when::<Stock>(&[received(1)], &down).unwrap_err().reason.contains("on hand"));
        let given = [received(3), reserved("o1", 2)];
        assert!(given_when::<Stock>(&given, &down).unwrap_err().reason.contains("reserved"));
        let zero = StockAction::Adjust { delta: 0, reason: AdjustmentReason::Correction, expected_on_hand: None };
        assert!(given_when::<Stock>(&given, &zero).is_err());
    }

    #[test]
    fn adjust_compare_and_set() {
        let count = StockAction::Adjust { delta: 2, reason: AdjustmentReason::CycleCount, expected_on_hand: Some(4) };
        assert!(given_when::<Stock>(&[received(5)], &count).unwrap_err().reason.contains("expected 4"));
        assert_eq!(given_when::<Stock>(&[received(4)], &count).unwrap().len(), 1);
    }

    #[test]
    fn expect_incoming_and_safety_stock_events() {
        assert_eq!(
            given_when::<Stock>(&[], &StockAction::ExpectIncoming { quantity: 7 }).unwrap(),
            vec![StockEvent::IncomingExpected { quantity: 7 }]
        );
        assert_eq!(
            given_when::<Stock>(&[received(5)], &StockAction::SetSafetyStock { quantity: 2 }).unwrap(),
            vec![StockEvent::SafetyStockSet { quantity: 2 }]
        );
    }
}
