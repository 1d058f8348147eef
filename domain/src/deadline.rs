//! Deadlines: a command to run later. A deadline is a stream of its own, scheduled in the
//! same append as the event that makes it (an order placed, a cart created, an order
//! delivered), fired at most once (its `DeadlineFired` is appended together with the
//! events of the command it runs, at the version it was read at), and ended early by
//! later events ([`cancelled_by`]). The due time arrives in the action: nothing here reads
//! a clock.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::StreamId;
use crate::cart::CartEvent;
use crate::order::OrderEvent;
use crate::{CartId, Decider, DomainEvent, OrderId, Rejection};

/// What a deadline is for; the first part of its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// An order not paid in time expires and releases its stock.
    OrderPayment,
    /// A cart left untouched expires.
    CartIdle,
    /// Returns are refused once the window after delivery closes.
    ReturnWindow,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [Purpose::OrderPayment, Purpose::CartIdle, Purpose::ReturnWindow];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::OrderPayment => "order-payment",
            Purpose::CartIdle => "cart-idle",
            Purpose::ReturnWindow => "return-window",
        }
    }
}

/// A deadline's id: `{purpose}.{id of what it is about}`; its stream is `deadline-{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeadlineId {
    purpose: Purpose,
    target: String,
}

impl DeadlineId {
    pub fn order_payment(order: &OrderId) -> DeadlineId {
        DeadlineId { purpose: Purpose::OrderPayment, target: order.to_string() }
    }

    pub fn cart_idle(cart: &CartId) -> DeadlineId {
        DeadlineId { purpose: Purpose::CartIdle, target: cart.to_string() }
    }

    pub fn return_window(order: &OrderId) -> DeadlineId {
        DeadlineId { purpose: Purpose::ReturnWindow, target: order.to_string() }
    }

    pub fn parse(value: &str) -> Result<DeadlineId, Rejection> {
        let bad = || {
            Rejection::invalid(format!(
                "deadline_id: '{value}' is not `{{purpose}}.{{id}}` with purpose order-payment, cart-idle or return-window and a valid id"
            ))
        };
        let (purpose, target) = value.split_once('.').ok_or_else(bad)?;
        let purpose = *Purpose::ALL.iter().find(|p| p.as_str() == purpose).ok_or_else(bad)?;
        let valid = match purpose {
            Purpose::OrderPayment | Purpose::ReturnWindow => OrderId::parse(target).is_ok(),
            Purpose::CartIdle => CartId::parse(target).is_ok(),
        };
        if !valid {
            return Err(bad());
        }
        Ok(DeadlineId { purpose, target: target.to_string() })
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// The order a payment or return-window deadline is about.
    pub fn order_id(&self) -> Option<OrderId> {
        matches!(self.purpose, Purpose::OrderPayment | Purpose::ReturnWindow)
            .then(|| OrderId::parse(&self.target).ok())
            .flatten()
    }

    /// The cart an idle-cart deadline is about.
    pub fn cart_id(&self) -> Option<CartId> {
        (self.purpose == Purpose::CartIdle).then(|| CartId::parse(&self.target).ok()).flatten()
    }
}

impl fmt::Display for DeadlineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.purpose.as_str(), self.target)
    }
}

impl TryFrom<String> for DeadlineId {
    type Error = String;
    fn try_from(value: String) -> Result<DeadlineId, String> {
        DeadlineId::parse(&value).map_err(|r| r.reason)
    }
}

impl From<DeadlineId> for String {
    fn from(id: DeadlineId) -> String {
        id.to_string()
    }
}

/// How a fired deadline's command went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum FireOutcome {
    /// The command ran and appended `events` events with this one.
    Applied { events: u32 },
    /// The command was no longer valid; it is not tried again.
    Refused { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeadlineAction {
    /// `command` is the command to run (its JSON form: the domain does not know commands).
    Schedule {
        due_at: DateTime<Utc>,
        command: serde_json::Value,
    },
    /// Moves a deadline that is not yet due to a later time (an idle cart was touched).
    Reschedule {
        due_at: DateTime<Utc>,
        reason: String,
    },
    Fire {
        outcome: FireOutcome,
    },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadlineEvent {
    DeadlineScheduled { due_at: DateTime<Utc>, command: serde_json::Value },
    DeadlineRescheduled { due_at: DateTime<Utc>, reason: String },
    DeadlineFired { outcome: FireOutcome },
}
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineStatus {
    #[default]
    NotScheduled,
    Scheduled,
    Fired,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadlineState {
    pub status: DeadlineStatus,
    pub due_at: Option<DateTime<Utc>>,
    pub command: Option<serde_json::Value>,
    pub outcome: Option<FireOutcome>,
}

pub struct Deadline;

impl Decider for Deadline {
    type Command = DeadlineAction;
    type Event = DeadlineEvent;
    type State = DeadlineState;

    fn decide(action: &DeadlineAction, state: &DeadlineState) -> Result<Vec<DeadlineEvent>, Rejection> {
        use DeadlineAction as A;
        use DeadlineEvent as E;
        match (action, state.status) {
            (A::Schedule { due_at, command }, DeadlineStatus::NotScheduled) => {
                Ok(vec![E::DeadlineScheduled { due_at: *due_at, command: command.clone() }])
            }
            (A::Schedule { .. }, _) => Err(Rejection::conflict("deadline: already scheduled")),
            (_, DeadlineStatus::NotScheduled) => Err(Rejection::not_found("deadline: was never scheduled")),
            // A deadline fires once; firing it again changes nothing.
            (A::Fire { .. }, DeadlineStatus::Fired) => Ok(vec![]),
            (A::Reschedule { .. }, DeadlineStatus::Fired) => Err(Rejection::conflict("deadline: has already fired")),
            (A::Fire { outcome }, DeadlineStatus::Scheduled) => Ok(vec![E::DeadlineFired { outcome: outcome.clone() }]),
            (A::Reschedule { due_at, reason }, DeadlineStatus::Scheduled) => {
                if state.due_at.is_some_and(|due| *due_at <= due) {
                    return Err(Rejection::conflict("deadline: a reschedule only moves a deadline later"));
                }
                Ok(vec![E::DeadlineRescheduled { due_at: *due_at, reason: reason.clone() }])
            }
        }
    }

    fn evolve(mut state: DeadlineState, event: &DeadlineEvent) -> DeadlineState {
        match event {
            DeadlineEvent::DeadlineScheduled { due_at, command } => {
                state.status = DeadlineStatus::Scheduled;
                state.due_at = Some(*due_at);
                state.command = Some(command.clone());
            }
            DeadlineEvent::DeadlineRescheduled { due_at, .. } => state.due_at = Some(*due_at),
            DeadlineEvent::DeadlineFired { outcome } => {
                state.status = DeadlineStatus::Fired;
                state.outcome = Some(outcome.clone());
            }
        }
        state
    }
}

/// The deadline an event makes pointless: payment (or the order's end) ends the payment
/// deadline, checkout or expiry ends the idle-cart deadline. A deadline fired anyway is
/// refused by its command's decider; this lets the timer skip it.
pub fn cancelled_by(stream: &StreamId, event: &DomainEvent) -> Option<DeadlineId> {
    match event {
        DomainEvent::Order(
            OrderEvent::PaymentAuthorized { .. } | OrderEvent::OrderCancelled { .. } | OrderEvent::OrderExpired {},
        ) => stream.order_id().map(|id| DeadlineId::order_payment(&id)),
        DomainEvent::Cart(CartEvent::CartCheckedOut { .. } | CartEvent::CartExpired {}) => {
            CartId::parse(stream.id()).ok().map(|id| DeadlineId::cart_idle(&id))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + i64::from(minute) * 60, 0).unwrap()
    }

    fn scheduled() -> DeadlineState {
        Deadline::evolve(
            DeadlineState::default(),
            &DeadlineEvent::DeadlineScheduled { due_at: at(30), command: serde_json::json!({"target": "x"}) },
        )
    }

    #[test]
    fn ids_read_back_and_refuse_what_they_cannot_name() {
        let order = OrderId::parse("o-1").unwrap();
        let id = DeadlineId::order_payment(&order);
        assert_eq!(id.to_string(), "order-payment.o-1");
        assert_eq!(DeadlineId::parse("order-payment.o-1").unwrap(), id);
        assert_eq!(id.order_id(), Some(order));
        assert_eq!(DeadlineId::parse("cart-idle.c.1").unwrap().cart_id().unwrap().as_str(), "c.1");
        for bad in ["order-payment", "nap.o-1", "order-payment.", "cart-idle.a b", ".x"] {
            let err = DeadlineId::parse(bad).unwrap_err();
            assert!(err.reason.contains("deadline_id"), "{bad}: {}", err.reason);
        }
    }

    #[test]
    fn a_deadline_fires_once() {
        let fire = DeadlineAction::Fire { outcome: FireOutcome::Applied { events: 3 } };
        let events = Deadline::decide(&fire, &scheduled()).unwrap();
        assert_eq!(events.len(), 1);
        let fired = Deadline::evolve(scheduled(), &events[0]);
        assert_eq!(Deadline::decide(&fire, &fired).unwrap(), vec![]);
        let refused = DeadlineAction::Fire { outcome: FireOutcome::Refused { reason: "paid".into() } };
        assert_eq!(Deadline::decide(&refused, &fired).unwrap(), vec![]);
        assert_eq!(fired.outcome, Some(FireOutcome::Applied { events: 3 }));
    }

    #[test]
    fn rescheduling_only_moves_later_and_never_after_firing() {
        let later = DeadlineAction::Reschedule { due_at: at(40), reason: "touched".into() };
        let earlier = DeadlineAction::Reschedule { due_at: at(20), reason: "touched".into() };
        assert_eq!(Deadline::decide(&later, &scheduled()).unwrap().len(), 1);
        assert!(Deadline::decide(&earlier, &scheduled()).unwrap_err().reason.contains("later"));
        let fired = Deadline::evolve(
            scheduled(),
            &DeadlineEvent::DeadlineFired { outcome: FireOutcome::Applied { events: 1 } },
        );
        assert!(Deadline::decide(&later, &fired).unwrap_err().reason.contains("fired"));
        assert!(Deadline::decide(&later, &DeadlineState::default()).unwrap_err().reason.contains("never"));
    }

    fn action() -> impl proptest::strategy::Strategy<Value = DeadlineAction> {
        use proptest::prelude::*;
        prop_oneof![
            (0u32..100).prop_map(|m| DeadlineAction::Schedule { due_at: at(m), command: serde_json::Value::Null }),
            (0u32..100).prop_map(|m| DeadlineAction::Reschedule { due_at: at(m), reason: "touched".into() }),
            (0u32..5).prop_map(|events| DeadlineAction::Fire { outcome: FireOutcome::Applied { events } }),
            Just(DeadlineAction::Fire { outcome: FireOutcome::Refused { reason: "no longer valid".into() } }),
        ]
    }

    proptest::proptest! {
        /// Whatever is asked in whatever order, a deadline is scheduled at most once, fires
        /// at most once, never changes after firing, and only ever moves later.
        #[test]
        fn a_deadline_fires_at_most_once_and_never_changes_after(actions in proptest::collection::vec(action(), 0..40)) {
            let mut state = DeadlineState::default();
            let mut log = Vec::new();
            for action in &actions {
                let before = state.clone();
                if let Ok(events) = Deadline::decide(action, &state) {
                    for event in events {
                        state = Deadline::evolve(state, &event);
                        log.push(event);
                    }
                }
                if before.status == DeadlineStatus::Fired {
                    proptest::prop_assert_eq!(&state, &before);
                }
                if let (Some(was), Some(now)) = (before.due_at, state.due_at) {
                    proptest::prop_assert!(now >= was);
                }
            }
            let count = |f: fn(&DeadlineEvent) -> bool| log.iter().filter(|e| f(e)).count();
            let scheduled = count(|e| matches!(e, DeadlineEvent::DeadlineScheduled { .. }));
            let fired = count(|e| matches!(e, DeadlineEvent::DeadlineFired { .. }));
            proptest::prop_assert!(scheduled <= 1 && fired <= 1, "scheduled {} times, fired {} times", scheduled, fired);
            if let Some(first) = log.first() {
                proptest::prop_assert!(matches!(first, DeadlineEvent::DeadlineScheduled { .. }), "{:?}", first);
            }
        }
    }

    #[test]
    fn a_deadline_is_scheduled_once() {
        let schedule = DeadlineAction::Schedule { due_at: at(1), command: serde_json::Value::Null };
        assert!(Deadline::decide(&schedule, &scheduled()).is_err());
        assert_eq!(Deadline::decide(&schedule, &DeadlineState::default()).unwrap().len(), 1);
    }
}
