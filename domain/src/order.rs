//! The order: placed at checkout, then confirmed, shipped, delivered and completed, or
//! cancelled or expired; with its payment lifecycle and its returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cart::check_text;
use crate::{check_quantity, Currency, Decider, Money, Rejection, ReturnId, ShipmentId, Sku};

mod state;

pub use state::*;

/// What a caller can ask of an order on its own. Placing, shipping, delivering, ending
/// and receiving returns are steps of flows that change other streams too, so they are
/// [`OrderAction`]s only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OrderCommand {
    AuthorizePayment {
        amount: Money,
        provider_ref: String,
        provider_event_id: String,
    },
    CapturePayment {
        amount: Money,
        provider_event_id: String,
    },
    VoidPayment {
        provider_event_id: String,
    },
    RefundPayment {
        amount: Money,
        provider_event_id: String,
    },
    RecordPaymentFailure {
        reason: String,
        provider_event_id: String,
    },
    Complete {},
    RequestReturn {
        return_id: ReturnId,
        lines: Vec<LineQuantity>,
        reason: String,
    },
    /// Holds the order back from shipping (a fulfilment hold) until the hold is released.
    PlaceHold {
        reason: String,
    },
    ReleaseHold {},
}

impl From<OrderCommand> for OrderAction {
    fn from(command: OrderCommand) -> OrderAction {
        use OrderCommand as C;
        match command {
            C::AuthorizePayment { amount, provider_ref, provider_event_id } => {
                OrderAction::AuthorizePayment { amount, provider_ref, provider_event_id }
            }
            C::CapturePayment { amount, provider_event_id } => {
                OrderAction::CapturePayment { amount, provider_event_id }
            }
            C::VoidPayment { provider_event_id } => OrderAction::VoidPayment { provider_event_id },
            C::RefundPayment { amount, provider_event_id } => OrderAction::RefundPayment { amount, provider_event_id },
            C::RecordPaymentFailure { reason, provider_event_id } => {
                OrderAction::RecordPaymentFailure { reason, provider_event_id }
            }
            C::Complete {} => OrderAction::Complete {},
            C::RequestReturn { return_id, lines, reason } => OrderAction::RequestReturn { return_id, lines, reason },
            C::PlaceHold { reason } => OrderAction::PlaceHold { reason },
            C::ReleaseHold {} => OrderAction::ReleaseHold {},
        }
    }
}

/// Everything the order decider does: the caller's [`OrderCommand`]s and the steps flows take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OrderAction {
    /// Only through checkout, which builds `order` from the cart.
    Place {
        order: Box<PlacedOrder>,
    },
    AuthorizePayment {
        amount: Money,
        provider_ref: String,
        provider_event_id: String,
    },
    CapturePayment {
        amount: Money,
        provider_event_id: String,
    },
    VoidPayment {
        provider_event_id: String,
    },
    RefundPayment {
        amount: Money,
        provider_event_id: String,
    },
    RecordPaymentFailure {
        reason: String,
        provider_event_id: String,
    },
    /// Only through shipping a shipment, which also commits the stock.
    RecordShipped {
        shipment_id: ShipmentId,
        lines: Vec<LineQuantity>,
    },
    RecordDelivered {
        shipment_id: ShipmentId,
        lines: Vec<LineQuantity>,
    },
    Complete {},
    PlaceHold {
        reason: String,
    },
    ReleaseHold {},
    /// Through the cancel flow, which also releases every reservation.
    Cancel {
        reason: String,
    },
    /// Through the expire flow, which also releases every reservation.
    Expire {},
    RequestReturn {
        return_id: ReturnId,
        lines: Vec<LineQuantity>,
        reason: String,
    },
    ReceiveReturn {
        return_id: ReturnId,
        lines: Vec<ReturnedLine>,
    },
    /// Through the return-window deadline: returns requested afterwards are refused.
    CloseReturnWindow {},
    /// Through paying for the order, which starts the payment intent in the same append.
    StartPayment {
        payment_id: crate::PaymentId,
    },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderPlaced { order: Box<PlacedOrder> },
    PaymentAuthorized { amount: Money, provider_ref: String, provider_event_id: String },
    OrderConfirmed {},
    PaymentCaptured { amount: Money, provider_event_id: String },
    PaymentVoided { provider_event_id: String },
    PaymentRefunded { amount: Money, provider_event_id: String },
    PaymentFailed { reason: String, provider_event_id: String },
    LinesShipped { shipment_id: ShipmentId, lines: Vec<LineQuantity> },
    LinesDelivered { shipment_id: ShipmentId, lines: Vec<LineQuantity> },
    OrderCompleted {},
    OrderHeld { reason: String },
    HoldReleased {},
    OrderCancelled { reason: String },
    OrderExpired {},
    ReturnRequested { return_id: ReturnId, lines: Vec<LineQuantity>, reason: String },
    ReturnReceived { return_id: ReturnId, lines: Vec<ReturnedLine> },
    ReturnWindowClosed {},
    OrderPaymentStarted { payment_id: crate::PaymentId },
}
}

pub struct Order;

impl Decider for Order {
    type Command = OrderAction;
    type Event = OrderEvent;
    type State = OrderState;

    fn decide(command: &OrderAction, state: &OrderState) -> Result<Vec<OrderEvent>, Rejection> {
        use OrderAction as C;
        use OrderEvent as E;
        if let C::Place { order } = command {
            if state.status != OrderStatus::NotPlaced {
                return Err(Rejection::conflict("order: already placed"));
            }
            if order.lines.is_empty() {
                return Err(Rejection::invalid("lines: an order needs at least one line"));
            }
            return Ok(vec![E::OrderPlaced { order: order.clone() }]);
        }
        let placed = state.placed()?;
        let currency = placed.currency;
        if let Some(id) = provider_event_id(command) {
            check_text("provider_event_id", id)?;
            if state.payment.provider_events.contains(id) {
                return Ok(vec![]);
            }
        }
        let p = &state.payment;
        let events = match command {
            C::Place { .. } => unreachable!("handled above"),
            C::AuthorizePayment { amount, provider_ref, provider_event_id } => {
                check_text("provider_ref", provider_ref)?;
                not_terminal(state)?;
                if p.authorized > 0 && !p.voided {
                    return Err(Rejection::conflict("payment: already authorized"));
                }
                if *amount != placed.totals.total {
                    return Err(Rejection::conflict(format!(
                        "amount: authorization of {amount} does not match the order total {}",
                        placed.totals.total
                    )));
                }
                let mut events = vec![E::PaymentAuthorized {
                    amount: *amount,
                    provider_ref: provider_ref.clone(),
                    provider_event_id: provider_event_id.clone(),
                }];
                if state.status == OrderStatus::Placed {
                    events.push(E::OrderConfirmed {});
                }
                events
            }
            C::CapturePayment { amount, provider_event_id } => {
                positive(currency, *amount)?;
                not_terminal(state)?;
                if p.voided {
                    return Err(Rejection::conflict("payment: authorization was voided"));
                }
                let open = p.authorized.saturating_sub(p.captured);
                if amount.amount > open {
                    return Err(Rejection::conflict(format!(
                        "amount: capturing {amount} would exceed the authorized {} not yet captured",
                        Money::new(open, currency)
                    )));
                }
                vec![E::PaymentCaptured { amount: *amount, provider_event_id: provider_event_id.clone() }]
            }
            C::VoidPayment { provider_event_id } => {
                if p.authorized == 0 || p.voided {
                    return Err(Rejection::conflict("payment: nothing authorized to void"));
                }
                if p.captured > 0 {
                    return Err(Rejection::conflict("payment: already captured; refund instead of voiding"));
                }
                vec![E::PaymentVoided { provider_event_id: provider_event_id.clone() }]
            }
            C::RefundPayment { amount, provider_event_id } => {
                positive(currency, *amount)?;
                let open = p.captured.saturating_sub(p.refunded);
                if amount.amount > open {
                    return Err(Rejection::conflict(format!(
                        "amount: refunding {amount} would exceed the captured {} not yet refunded",
                        Money::new(open, currency)
                    )));
                }
                vec![E::PaymentRefunded { amount: *amount, provider_event_id: provider_event_id.clone() }]
            }
            C::RecordPaymentFailure { reason, provider_event_id } => {
                check_text("reason", reason)?;
                vec![E::PaymentFailed { reason: reason.clone(), provider_event_id: provider_event_id.clone() }]
            }
            C::RecordShipped { shipment_id, lines } => {
                if state.shipped.contains(shipment_id) {
                    return Ok(vec![]);
                }
                not_terminal(state)?;
                if let Some(reason) = &state.hold {
                    return Err(Rejection::conflict(format!(
                        "order: on hold ({reason}); release the hold before shipping"
                    )));
                }
                if state.status < OrderStatus::Confirmed {
                    return Err(Rejection::conflict(
                        "order: not confirmed; payment must be authorized before shipping",
                    ));
                }
                check_lines(state, lines, |l| l.ordered.saturating_sub(l.shipped), "ordered and not yet shipped")?;
                vec![E::LinesShipped { shipment_id: shipment_id.clone(), lines: lines.clone() }]
            }
            C::RecordDelivered { shipment_id, lines } => {
                if state.delivered.contains(shipment_id) {
                    return Ok(vec![]);
                }
                if !state.shipped.contains(shipment_id) {
                    return Err(Rejection::conflict(format!("shipment {shipment_id}: has not shipped for this order")));
                }
                check_lines(state, lines, |l| l.shipped.saturating_sub(l.delivered), "shipped and not yet delivered")?;
                vec![E::LinesDelivered { shipment_id: shipment_id.clone(), lines: lines.clone() }]
            }
            C::PlaceHold { reason } => {
                check_text("reason", reason)?;
                not_terminal(state)?;
                if state.hold.is_some() {
                    return Err(Rejection::conflict("order: already on hold"));
                }
                if state.lines.values().all(|l| l.shipped >= l.ordered) {
                    return Err(Rejection::conflict("order: everything has shipped; nothing is left to hold"));
                }
                vec![E::OrderHeld { reason: reason.clone() }]
            }
            C::ReleaseHold {} => {
                if state.hold.is_none() {
                    return Err(Rejection::conflict("order: is not on hold"));
                }
                vec![E::HoldReleased {}]
            }
            C::Complete {} => {
                if state.status != OrderStatus::Delivered {
                    return Err(Rejection::conflict(format!(
                        "order: is {:?}; only a delivered order can be completed",
                        state.status
                    )));
                }
                vec![E::OrderCompleted {}]
            }
            C::Cancel { reason } => {
                check_text("reason", reason)?;
                if !matches!(state.status, OrderStatus::Placed | OrderStatus::Confirmed) || !state.nothing_shipped() {
                    return Err(Rejection::conflict(format!(
                        "order: is {:?}; only an order with nothing shipped can be cancelled",
                        state.status
                    )));
                }
                vec![E::OrderCancelled { reason: reason.clone() }]
            }
            C::Expire {} => {
                if state.status != OrderStatus::Placed {
                    return Err(Rejection::conflict(format!(
                        "order: is {:?}; only an unpaid placed order can expire",
                        state.status
                    )));
                }
                vec![E::OrderExpired {}]
            }
            C::RequestReturn { return_id, lines, reason } => {
                check_text("reason", reason)?;
                if state.return_window_closed {
                    return Err(Rejection::conflict(
                        "order: the return window has closed; returns are no longer accepted",
                    ));
                }
                if state.returns.contains_key(return_id) {
                    return Err(Rejection::conflict(format!("return {return_id}: already requested")));
                }
                check_lines(
                    state,
                    lines,
                    |l| l.delivered.saturating_sub(l.return_requested),
                    "delivered and not yet returned",
                )?;
                vec![E::ReturnRequested { return_id: return_id.clone(), lines: lines.clone(), reason: reason.clone() }]
            }
            C::ReceiveReturn { return_id, lines } => {
                let ret = state
                    .returns
                    .get(return_id)
                    .ok_or_else(|| Rejection::not_found(format!("return {return_id}: was never requested")))?;
                if ret.received {
                    return Err(Rejection::conflict(format!("return {return_id}: already received")));
                }
                let mut seen = BTreeMap::<&Sku, u64>::new();
                for line in lines {
                    check_quantity("lines.quantity", line.quantity)?;
                    add_quantity(seen.entry(&line.sku).or_default(), line.quantity);
                }
                for (sku, quantity) in seen {
                    let requested = ret.lines.get(sku).copied().unwrap_or(0);
                    if quantity > u64::from(requested) {
                        return Err(Rejection::conflict(format!(
                            "lines: {quantity} of {sku} received but only {requested} requested for return"
                        )));
                    }
                }
                if lines.is_empty() {
                    return Err(Rejection::invalid("lines: a return needs at least one line"));
                }
                vec![E::ReturnReceived { return_id: return_id.clone(), lines: lines.clone() }]
            }
            C::CloseReturnWindow {} => {
                if state.return_window_closed {
                    return Ok(vec![]);
                }
                if state.status < OrderStatus::Delivered || state.status.is_terminal() {
                    return Err(Rejection::conflict(format!(
                        "order: is {:?}; a return window opens only on delivery",
                        state.status
                    )));
                }
                vec![E::ReturnWindowClosed {}]
            }
            C::StartPayment { payment_id } => {
                if state.status != OrderStatus::Placed {
                    return Err(Rejection::conflict(format!(
                        "order: is {}; only a placed order awaiting payment can be paid",
                        state.status.as_str()
                    )));
                }
                if state.payment.authorized > 0 && !state.payment.voided {
                    return Err(Rejection::conflict("order: its payment is already authorized"));
                }
                vec![E::OrderPaymentStarted { payment_id: payment_id.clone() }]
            }
        };
        Ok(events)
    }

    fn evolve(mut state: OrderState, event: &OrderEvent) -> OrderState {
        use OrderEvent as E;
        match event {
            E::OrderPlaced { order } => {
                state.status = OrderStatus::Placed;
                for line in &order.lines {
                    let progress = state.lines.entry(line.sku.clone()).or_default();
                    progress.ordered = progress.ordered.saturating_add(line.quantity);
                }
                state.placed = Some(order.as_ref().clone());
            }
            E::PaymentAuthorized { amount, provider_ref, provider_event_id } => {
                state.payment.authorized = amount.amount;
                state.payment.voided = false;
                state.payment.provider_refs.insert(provider_ref.clone());
                state.payment.provider_events.insert(provider_event_id.clone());
            }
            E::OrderConfirmed {} => state.status = state.status.max(OrderStatus::Confirmed),
            E::PaymentCaptured { amount, provider_event_id } => {
                state.payment.captured = state.payment.captured.saturating_add(amount.amount);
                state.payment.provider_events.insert(provider_event_id.clone());
            }
            E::PaymentVoided { provider_event_id } => {
                state.payment.voided = true;
                state.payment.provider_events.insert(provider_event_id.clone());
            }
            E::PaymentRefunded { amount, provider_event_id } => {
                state.payment.refunded = state.payment.refunded.saturating_add(amount.amount);
                state.payment.provider_events.insert(provider_event_id.clone());
            }
            E::PaymentFailed { provider_event_id, .. } => {
                state.payment.failures = state.payment.failures.saturating_add(1);
                state.payment.provider_events.insert(provider_event_id.clone());
            }
            E::LinesShipped { shipment_id, lines } => {
                state.shipped.insert(shipment_id.clone());
                for l in lines {
                    let progress = state.lines.entry(l.sku.clone()).or_default();
                    progress.shipped = progress.shipped.saturating_add(l.quantity);
                }
                state.status = state.status.max(state.fulfilment_status());
            }
            E::LinesDelivered { shipment_id, lines } => {
                state.delivered.insert(shipment_id.clone());
                for l in lines {
                    let progress = state.lines.entry(l.sku.clone()).or_default();
                    progress.delivered = progress.delivered.saturating_add(l.quantity);
                }
                state.status = state.status.max(state.fulfilment_status());
            }
            E::OrderCompleted {} => state.status = OrderStatus::Completed,
            E::OrderHeld { reason } => state.hold = Some(reason.clone()),
            E::HoldReleased {} => state.hold = None,
            E::OrderCancelled { .. } => state.status = OrderStatus::Cancelled,
            E::OrderExpired {} => state.status = OrderStatus::Expired,
            E::ReturnRequested { return_id, lines, .. } => {
                let mut ret = ReturnState::default();
                for l in lines {
                    let requested = ret.lines.entry(l.sku.clone()).or_default();
                    *requested = requested.saturating_add(l.quantity);
                    let progress = state.lines.entry(l.sku.clone()).or_default();
                    progress.return_requested = progress.return_requested.saturating_add(l.quantity);
                }
                state.returns.insert(return_id.clone(), ret);
            }
            E::ReturnReceived { return_id, lines } => {
                if let Some(ret) = state.returns.get_mut(return_id) {
                    ret.received = true;
                }
                for l in lines {
                    let progress = state.lines.entry(l.sku.clone()).or_default();
                    progress.returned = progress.returned.saturating_add(l.quantity);
                }
            }
            E::ReturnWindowClosed {} => state.return_window_closed = true,
            E::OrderPaymentStarted { payment_id } => state.payments.push(payment_id.clone()),
        }
        state
    }
}

fn provider_event_id(command: &OrderAction) -> Option<&String> {
    use OrderAction as C;
    match command {
        C::AuthorizePayment { provider_event_id, .. }
        | C::CapturePayment { provider_event_id, .. }
        | C::VoidPayment { provider_event_id }
        | C::RefundPayment { provider_event_id, .. }
        | C::RecordPaymentFailure { provider_event_id, .. } => Some(provider_event_id),
        _ => None,
    }
}

fn not_terminal(state: &OrderState) -> Result<(), Rejection> {
    if state.status.is_terminal() {
        return Err(Rejection::conflict(format!("order: is {:?}", state.status)));
    }
    Ok(())
}

fn positive(currency: Currency, amount: Money) -> Result<(), Rejection> {
    crate::money::check_amount("amount", amount.amount, 1)?;
    if amount.currency != currency {
        return Err(Rejection::conflict(format!(
            "amount: currency {} differs from the order's {currency}",
            amount.currency
        )));
    }
    Ok(())
}

/// Adds `quantity` to a per-SKU sum (in `u64`, which a request's lines cannot overflow).
fn add_quantity(sum: &mut u64, quantity: u32) {
    *sum = sum.saturating_add(u64::from(quantity));
}

/// Checks that every line names an order line, that quantities are ≥ 1, and that the
/// summed quantity per SKU stays within `room` of that line.
fn check_lines(
    state: &OrderState,
    lines: &[LineQuantity],
    room: fn(&LineProgress) -> u32,
    what: &str,
) -> Result<(), Rejection> {
    if lines.is_empty() {
        return Err(Rejection::invalid("lines: at least one line is needed"));
    }
    let mut sums = BTreeMap::<&Sku, u64>::new();
    for line in lines {
        check_quantity("lines.quantity", line.quantity)?;
        add_quantity(sums.entry(&line.sku).or_default(), line.quantity);
    }
    for (sku, quantity) in sums {
        let progress = state
            .lines
            .get(sku)
            .ok_or_else(|| Rejection::not_found(format!("lines: the order has no line for {sku}")))?;
        let room = room(progress);
        if quantity > u64::from(room) {
            return Err(Rejection::conflict(format!("lines: {quantity} of {sku} exceeds the {room} {what}")));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
