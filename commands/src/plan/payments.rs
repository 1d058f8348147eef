//! Paying for an order and recording what the provider answers. The payment intent's
//! stream holds the money's truth; the order's payment lifecycle follows it in the same
//! append, so an order is confirmed exactly when its intent is authorized — whether the
//! API's answer or a webhook brings the news first — and an authorization that arrives for
//! an order that can no longer take it (cancelled, expired, already paid) is voided in that
//! same append instead of being left charged.

use orderlog_domain::checkout::Decision;
use orderlog_domain::order::{Order, OrderAction, OrderState, OrderStatus};
use orderlog_domain::payment::{Payment, PaymentAction, PaymentCommand, PaymentEvent, PaymentStatus};
use orderlog_domain::{Decider, OrderId, PaymentId, Rejection, StreamId};

use super::{single, Loaded};

/// The id the order's next intent gets.
fn next_payment(order_id: &OrderId, order: &OrderState) -> PaymentId {
    let attempt = u32::try_from(order.payments.len()).unwrap_or(u32::MAX - 1) + 1;
    PaymentId::for_order(order_id, attempt)
}

/// Paying loads the order's last intent (it must be done authorizing) and the new one.
pub(super) fn pay_streams(order_id: &OrderId, order: &OrderState) -> Vec<StreamId> {
    if order.placed.is_none() {
        return vec![];
    }
    let mut streams: Vec<StreamId> = order.payments.last().map(StreamId::payment).into_iter().collect();
    streams.push(StreamId::payment(&next_payment(order_id, order)));
    streams
}

pub(super) fn payment_streams(loaded: &Loaded, payment_id: &PaymentId) -> Vec<StreamId> {
    loaded
        .get::<Payment>(&StreamId::payment(payment_id))
        .and_then(|p| p.order_id.as_ref())
        .map(StreamId::order)
        .into_iter()
        .collect()
}

pub(super) fn decide_pay(
    order_id: &OrderId,
    payment_method: &str,
    provider: &str,
    loaded: &Loaded,
) -> Result<Decision, Rejection> {
    let order = loaded.order(order_id);
    let Some(placed) = &order.placed else {
        return Err(Rejection::not_found(format!("order {order_id}: does not exist")));
    };
    if let Some(last) = order.payments.last() {
        let state = loaded.state::<Payment>(&StreamId::payment(last));
        if state.status == PaymentStatus::Authorizing {
            return Err(Rejection::conflict(format!(
                "payment {last}: is still authorizing; its outcome comes before another attempt"
            )));
        }
    }
    let payment_id = next_payment(order_id, order);
    let stream = StreamId::payment(&payment_id);
    let initiate = PaymentAction::Initiate {
        payment_id: payment_id.clone(),
        order_id: order_id.clone(),
        amount: placed.totals.total,
        payment_method: payment_method.to_string(),
        provider: provider.to_string(),
    };
    let order_events = Order::decide(&OrderAction::StartPayment { payment_id: payment_id.clone() }, order)
        .map_err(|r| Rejection::new(r.kind, format!("order {order_id}: {}", r.reason.trim_start_matches("order: "))))?;
    let mut decision = single(stream.clone(), Payment::decide(&initiate, loaded.state::<Payment>(&stream))?);
    decision.push(StreamId::order(order_id), order_events);
    decision.order_id = Some(order_id.clone());
    Ok(decision)
}

pub(super) fn decide_payment(
    payment_id: &PaymentId,
    action: &PaymentAction,
    loaded: &Loaded,
) -> Result<Decision, Rejection> {
    if let PaymentAction::Initiate { .. } = action {
        return Err(Rejection::invalid("action: a payment is initiated only by paying for its order"));
    }
    let stream = StreamId::payment(payment_id);
    let state = loaded.state::<Payment>(&stream);
    let Some(order_id) = state.order_id.clone() else {
        return Err(Rejection::not_found(format!("payment {payment_id}: does not exist")));
    };
    let mut events = Payment::decide(action, state)?;
    let mut payment = events.iter().fold(state.clone(), Payment::evolve);
    let order_stream = StreamId::order(&order_id);
    let mut order = loaded.order(&order_id).clone();
    let mut order_events = vec![];
    let mut i = 0;
    while i < events.len() {
        if let Some(step) = mirror(payment_id, &events[i], &order) {
            match Order::decide(&step, &order) {
                Ok(more) => {
                    order = more.iter().fold(order, Order::evolve);
                    order_events.extend(more);
                }
                Err(refusal) if matches!(events[i], PaymentEvent::IntentAuthorized { .. }) => {
                    // The order cannot take this money: release it now, in this append.
                    let reason = format!("order {order_id}: {}", refusal.reason.trim_start_matches("order: "));
                    let void = PaymentAction::Command(PaymentCommand::RequestVoid { reason });
                    let more = Payment::decide(&void, &payment)?;
                    payment = more.iter().fold(payment, Payment::evolve);
                    events.extend(more);
                }
                Err(refusal) => {
                    return Err(Rejection::new(
                        refusal.kind,
                        format!("order {order_id} cannot record payment {payment_id}: {}", refusal.reason),
                    ))
                }
            }
        }
        i += 1;
    }
    let mut decision = single(stream, events);
    if !order_events.is_empty() {
        decision.push(order_stream, order_events);
    }
    decision.order_id = Some(order_id);
    Ok(decision)
}

/// What a payment event tells the order, if anything.
fn mirror(payment_id: &PaymentId, event: &PaymentEvent, order: &OrderState) -> Option<OrderAction> {
    let ours = order.payment.provider_refs.contains(payment_id.as_str());
    let released = |order: &OrderState| {
        ours && !order.payment.voided && order.payment.captured == 0 && order.status != OrderStatus::NotPlaced
    };
    Some(match event {
        PaymentEvent::IntentAuthorized { amount, .. } => OrderAction::AuthorizePayment {
            amount: *amount,
            provider_ref: payment_id.to_string(),
            provider_event_id: format!("{payment_id}:authorized"),
        },
        PaymentEvent::AuthorizationFailed { code, reason } => OrderAction::RecordPaymentFailure {
            reason: format!("payment {payment_id}: {code}: {reason}"),
            provider_event_id: format!("{payment_id}:failed"),
        },
        PaymentEvent::IntentCaptured { key, amount } => {
            OrderAction::CapturePayment { amount: *amount, provider_event_id: key.clone() }
        }
        PaymentEvent::IntentRefunded { key, amount, .. } => {
            OrderAction::RefundPayment { amount: *amount, provider_event_id: key.clone() }
        }
        PaymentEvent::IntentVoided { .. } | PaymentEvent::AuthorizationExpired {} if released(order) => {
            OrderAction::VoidPayment { provider_event_id: format!("{payment_id}:released") }
        }
        _ => return None,
    })
}
