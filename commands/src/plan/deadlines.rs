//! Which decided events start a deadline, and how a due deadline fires: its command is
//! decided over the loaded streams and its `DeadlineFired` joins that decision, so the
//! command's events and the record that the deadline fired are one append.

use orderlog_domain::cart::{CartCommand, CartEvent};
use orderlog_domain::checkout::Decision;
use orderlog_domain::deadline::{
    Deadline, DeadlineAction, DeadlineEvent, DeadlineId, DeadlineState, DeadlineStatus, FireOutcome, Purpose,
};
use orderlog_domain::order::{Order, OrderEvent, OrderStatus};
use orderlog_domain::{AggregateKind, CartId, Decider, DomainEvent, Rejection, StreamId};

use super::{single, Context, Loaded};
use crate::Command;

/// The deadlines the decided events start, as the command each will run: a placed order
/// must be paid in time, a new cart expires when left alone, a delivered order's return
/// window closes.
pub(super) fn started(decision: &Decision, loaded: &Loaded) -> Vec<Command> {
    let mut started = Vec::new();
    for (stream, events) in &decision.streams {
        match stream.kind() {
            AggregateKind::Order => {
                let Some(order_id) = stream.order_id() else { continue };
                if events.iter().any(|e| matches!(e, DomainEvent::Order(OrderEvent::OrderPlaced { .. }))) {
                    started.push(Command::ExpireOrder { order_id: order_id.clone() });
                }
                // Only a delivery can make an order delivered: other decisions skip the fold.
                if !events.iter().any(|e| matches!(e, DomainEvent::Order(OrderEvent::LinesDelivered { .. }))) {
                    continue;
                }
                let before = loaded.order(&order_id);
                let after = events.iter().fold(before.clone(), |state, event| match event {
                    DomainEvent::Order(e) => Order::evolve(state, e),
                    _ => state,
                });
                if before.status < OrderStatus::Delivered && after.status == OrderStatus::Delivered {
                    started.push(Command::CloseReturnWindow { order_id });
                }
            }
            AggregateKind::Cart
                if events.iter().any(|e| matches!(e, DomainEvent::Cart(CartEvent::CartCreated { .. }))) =>
            {
                let Ok(cart_id) = CartId::parse(stream.id()) else { continue };
                started.push(Command::Cart { cart_id, command: CartCommand::Expire {} });
            }
            _ => {}
        }
    }
    started
}

/// A scheduled deadline's command; an error when its stored form cannot be read.
pub(super) fn deadline_command(state: &DeadlineState) -> Result<Option<Command>, serde_json::Error> {
    if state.status != DeadlineStatus::Scheduled {
        return Ok(None);
    }
    serde_json::from_value(state.command.clone().unwrap_or_default()).map(Some)
}

/// Fires a due deadline once: its command's events with `DeadlineFired { applied }`, or
/// only `DeadlineFired { refused }` when the command is no longer valid (it is not tried
/// again). An idle cart touched since the deadline was set is rescheduled instead.
pub(super) fn fire(id: &DeadlineId, loaded: &Loaded, context: &Context) -> Result<Decision, Rejection> {
    let stream = StreamId::deadline(id);
    let state = loaded.deadline(id);
    match state.status {
        DeadlineStatus::NotScheduled => {
            return Err(Rejection::not_found(format!("deadline {id}: was never scheduled")));
        }
        DeadlineStatus::Fired => return Ok(single(stream, Vec::<DeadlineEvent>::new())),
        DeadlineStatus::Scheduled => {}
    }
    let due = state.due_at.expect("a scheduled deadline has a due time");
    if due > context.now {
        return Err(Rejection::conflict(format!("deadline {id}: is not due until {}", due.to_rfc3339())));
    }
    let record = |outcome| Deadline::decide(&DeadlineAction::Fire { outcome }, state);
    let refused = |reason: String| Ok(single(stream.clone(), record(FireOutcome::Refused { reason })?));
    let inner = match deadline_command(state) {
        Ok(Some(Command::FireDeadline { .. })) => return refused("a deadline cannot fire a deadline".into()),
        Ok(Some(inner)) => inner,
        Ok(None) => unreachable!("the deadline is scheduled"),
        Err(e) => return refused(format!("the deadline's command cannot be read: {e}")),
    };
    if id.purpose() == Purpose::CartIdle {
        let touched = id.cart_id().and_then(|cart| loaded.touched.get(&StreamId::cart(&cart)));
        if let Some(touched) = touched {
            let idle_until = *touched + context.deadlines.cart_idle;
            if idle_until > context.now {
                let reason = format!("the cart was changed at {}", touched.to_rfc3339());
                let events = Deadline::decide(&DeadlineAction::Reschedule { due_at: idle_until, reason }, state)?;
                return Ok(single(stream, events));
            }
        }
    }
    match inner.decide(loaded, context) {
        Ok(mut decision) => {
            let events = decision.event_count() as u32;
            decision.push(stream, record(FireOutcome::Applied { events })?);
            Ok(decision)
        }
        Err(rejection) => refused(rejection.reason),
    }
}
