//! What pricing knows of a registered customer (`customer-{id}`): the customer groups an
//! operator put them in (price lists, promotions and tax exemptions may be for a group), and
//! the orders they placed, recorded in each checkout's append (a promotion may be for a
//! customer's first order only). A guest has no such stream: a guest is in no group, and
//! a first-order promotion needs a registered customer.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{Decider, OrderId, Rejection};

/// Most groups one customer may be in.
pub const GROUPS_MAX: usize = 50;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CustomerProfileState {
    pub groups: BTreeSet<String>,
    pub orders: BTreeSet<OrderId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CustomerProfileCommand {
    JoinGroup { group: String },
    LeaveGroup { group: String },
}

/// What a checkout does to the profile, besides what an operator may ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CustomerProfileAction {
    Command(CustomerProfileCommand),
    RecordOrder { order_id: OrderId },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerProfileEvent {
    CustomerJoinedGroup { group: String },
    CustomerLeftGroup { group: String },
    CustomerOrderRecorded { order_id: OrderId },
}
}

pub struct CustomerProfile;

impl Decider for CustomerProfile {
    type Command = CustomerProfileAction;
    type Event = CustomerProfileEvent;
    type State = CustomerProfileState;

    fn decide(
        action: &CustomerProfileAction,
        state: &CustomerProfileState,
    ) -> Result<Vec<CustomerProfileEvent>, Rejection> {
        use CustomerProfileCommand as C;
        use CustomerProfileEvent as E;
        Ok(match action {
            CustomerProfileAction::Command(C::JoinGroup { group }) => {
                crate::ids::check_id("group", group)?;
                if state.groups.contains(group) {
                    return Ok(vec![]);
                }
                if state.groups.len() >= GROUPS_MAX {
                    return Err(Rejection::conflict(format!("customer: already in {GROUPS_MAX} groups")));
                }
                vec![E::CustomerJoinedGroup { group: group.clone() }]
            }
            CustomerProfileAction::Command(C::LeaveGroup { group }) => match state.groups.contains(group) {
                true => vec![E::CustomerLeftGroup { group: group.clone() }],
                false => vec![],
            },
            CustomerProfileAction::RecordOrder { order_id } => match state.orders.contains(order_id) {
                true => vec![],
                false => vec![E::CustomerOrderRecorded { order_id: order_id.clone() }],
            },
        })
    }

    fn evolve(mut state: CustomerProfileState, event: &CustomerProfileEvent) -> CustomerProfileState {
        match event {
            CustomerProfileEvent::CustomerJoinedGroup { group } => {
                state.groups.insert(group.clone());
            }
            CustomerProfileEvent::CustomerLeftGroup { group } => {
                state.groups.remove(group);
            }
            CustomerProfileEvent::CustomerOrderRecorded { order_id } => {
                state.orders.insert(order_id.clone());
            }
        }
        state
    }
}
