//! The pure core of orderlog: the four aggregates (cart, order, stock, shipment) as
//! deciders, and the checkout decision that spans them.
//!
//! Every aggregate implements [`Decider`]: `decide(command, state)` returns the events to
//! append or a [`Rejection`] a person can read, and `evolve(state, event)` folds one event
//! into the state and cannot fail. Nothing here does IO, reads a clock, makes an id or
//! awaits: time and ids arrive in commands, so replaying the same events always yields the
//! same state.
//!
//! Principal types: [`Money`] and [`Currency`]; [`cart::Cart`], [`order::Order`],
//! [`stock::Stock`], [`shipment::Shipment`]; [`checkout::decide_checkout`] and the other
//! cross-stream decisions in [`flows`]; [`codec::DomainEvent`], the stable names and schema
//! versions under which events are stored.

/// Declares an aggregate's event enum and, from the same list, the stored type name of each
/// variant (its name), so that an event cannot exist without its name.
macro_rules! events {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident {
            $($(#[$vmeta:meta])* $variant:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum $enum {
            $($(#[$vmeta])* $variant { $($(#[$fmeta])* $field: $ty),* }),+
        }

        impl $enum {
            /// Every stored type name of these events.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];

            /// The name this event is stored under.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => stringify!($variant),)+
                }
            }
        }
    };
}

pub mod aggregate;
pub mod cart;
pub mod checkout;
pub mod codec;
pub mod customer;
pub mod deadline;
pub mod flows;
pub mod ids;
pub mod money;
pub mod order;
pub mod payment;
pub mod price_list;
pub mod pricing;
pub mod product;
pub mod promotion;
pub mod shipment;
pub mod shipping;
pub mod stock;
pub mod tax;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use aggregate::{AggregateKind, AnyState, DomainEvent, StreamId};
pub use ids::{
    CartId, CustomerId, LocationId, OrderId, PaymentId, PriceListId, ProductId, PromotionCode, ReturnId, ShipmentId,
    ShippingOptionId, ShippingZoneId, Sku, StockKey,
};
pub use money::{Currency, Money};

/// An aggregate as a pure decision function and a fold.
pub trait Decider {
    type Command;
    type Event;
    type State: Default;

    /// The events that `command` causes in `state`, or why it is refused.
    fn decide(command: &Self::Command, state: &Self::State) -> Result<Vec<Self::Event>, Rejection>;

    /// The state after `event`. Never fails: the event already happened.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Folds a history from the initial state.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(Self::State::default(), Self::evolve)
    }
}

/// Why a command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// The command names something that does not exist.
    NotFound,
    /// The command's input is malformed (a field out of range, a currency mismatch).
    Invalid,
    /// The aggregate's state does not allow the command now.
    Conflict,
    /// Stock could not be reserved for one or more lines.
    OutOfStock,
}

/// A refused command: a kind for machines and a reason for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub reason: String,
    /// The lines that could not be reserved, for [`RejectionKind::OutOfStock`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shortages: Vec<Shortage>,
    /// The lines whose price changed when checkout priced them again (their guarantee had
    /// run out); the cart now shows the new prices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repriced: Vec<cart::Repriced>,
}

impl Rejection {
    pub fn new(kind: RejectionKind, reason: impl Into<String>) -> Rejection {
        Rejection { kind, reason: reason.into(), shortages: Vec::new(), repriced: Vec::new() }
    }
    pub fn invalid(reason: impl Into<String>) -> Rejection {
        Rejection::new(RejectionKind::Invalid, reason)
    }
    pub fn conflict(reason: impl Into<String>) -> Rejection {
        Rejection::new(RejectionKind::Conflict, reason)
    }
    pub fn not_found(reason: impl Into<String>) -> Rejection {
        Rejection::new(RejectionKind::NotFound, reason)
    }
}

/// A line whose stock could not be reserved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    pub sku: Sku,
    pub location: LocationId,
    pub requested: u32,
    pub available: i64,
}

impl fmt::Display for Shortage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {} requested, {} available", self.sku, self.location, self.requested, self.available)
    }
}

/// Checks that a line quantity is at least one.
pub fn check_quantity(field: &str, quantity: u32) -> Result<(), Rejection> {
    if quantity == 0 {
        return Err(Rejection::invalid(format!("{field}: quantity must be at least 1")));
    }
    Ok(())
}

/// Given/when/then for deciders, used by every aggregate's tests.
#[cfg(test)]
pub(crate) fn given_when<D: Decider>(given: &[D::Event], when: &D::Command) -> Result<Vec<D::Event>, Rejection> {
    D::decide(when, &D::fold(given))
}
