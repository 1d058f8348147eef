//! Promotions the server owns: a code, what it takes off, when it is valid, the least a
//! cart must hold, and how often it may be used in all and by one customer. Each is a
//! stream (`promotion-{code}`); every use is an event of it (`PromotionRedeemed`) appended
//! in the checkout's atomic append, at the version the checkout read, so the last use of a
//! coupon is decided exactly like the last unit of stock: of two checkouts racing for it,
//! one appends and the other is decided again and refused.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cart::DiscountKind;
use crate::{Decider, Money, OrderId, Rejection};

/// What a promotion takes off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromotionKind {
    /// A share of the subtotal, in basis points (1 000 = 10 %).
    Percentage { basis_points: u32 },
    /// A fixed amount off the order, never more than the subtotal.
    FixedPerOrder { amount: Money },
}

impl PromotionKind {
    /// The cart discount it gives.
    pub fn discount(&self) -> DiscountKind {
        match self {
            PromotionKind::Percentage { basis_points } => DiscountKind::Percentage { basis_points: *basis_points },
            PromotionKind::FixedPerOrder { amount } => DiscountKind::Fixed { amount: *amount },
        }
    }
}

/// When a promotion may be used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// The least subtotal (in the promotion's currency, for a fixed amount; any currency
    /// with this amount's minor units otherwise) a cart must hold.
    #[serde(default)]
    pub min_subtotal: Option<Money>,
    /// Valid from (inclusive).
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// Valid until (exclusive).
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PromotionState {
    pub created: bool,
    pub kind: Option<PromotionKind>,
    pub conditions: Conditions,
    /// Most uses in all; unlimited when absent.
    pub usage_limit: Option<u32>,
    /// Most uses by one customer; unlimited when absent.
    pub per_customer_limit: Option<u32>,
    pub archived: bool,
    pub uses: u32,
    pub uses_by_customer: BTreeMap<String, u32>,
    pub orders: BTreeSet<OrderId>,
}

impl PromotionState {
    /// Whether the promotion may be applied to a cart of `subtotal` at `at`; the refusal
    /// names the unmet condition.
    pub fn applicable(&self, code: &str, subtotal: Money, at: DateTime<Utc>) -> Result<&PromotionKind, Rejection> {
        let kind = match (&self.kind, self.created) {
            (Some(kind), true) => kind,
            // 409, not 404: the request's resource (a cart) exists; what it names does not.
            _ => return Err(Rejection::conflict(format!("promotion {code}: no such code"))),
        };
        if self.archived {
            return Err(Rejection::conflict(format!("promotion {code}: ended")));
        }
        let c = &self.conditions;
        if let Some(from) = c.starts_at.filter(|s| at < *s) {
            return Err(Rejection::conflict(format!("promotion {code}: not valid before {from}")));
        }
        if let Some(until) = c.ends_at.filter(|e| *e <= at) {
            return Err(Rejection::conflict(format!("promotion {code}: expired at {until}")));
        }
        if let Some(min) = c.min_subtotal {
            if min.currency != subtotal.currency || subtotal.amount < min.amount {
                return Err(Rejection::conflict(format!(
                    "promotion {code}: needs a subtotal of at least {min}; the cart's is {subtotal}"
                )));
            }
        }
        if let PromotionKind::FixedPerOrder { amount } = kind {
            if amount.currency != subtotal.currency {
                return Err(Rejection::conflict(format!(
                    "promotion {code}: takes {amount} off; the cart is in {}",
                    subtotal.currency
                )));
            }
        }
        if let Some(limit) = self.usage_limit.filter(|limit| self.uses >= *limit) {
            return Err(Rejection::conflict(format!("promotion {code}: used up ({} of {limit} uses)", self.uses)));
        }
        Ok(kind)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromotionCommand {
    Create {
        kind: PromotionKind,
        #[serde(default)]
        conditions: Conditions,
        #[serde(default)]
        usage_limit: Option<u32>,
        #[serde(default)]
        per_customer_limit: Option<u32>,
    },
    /// Ends the promotion for good.
    Archive {},
}

/// What a checkout does to a promotion, besides what a caller may ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromotionAction {
    Command(PromotionCommand),
    /// One use, by the order placed and the customer it is for, at `at` with `subtotal`.
    Redeem {
        code: String,
        order_id: OrderId,
        customer: String,
        subtotal: Money,
        at: DateTime<Utc>,
    },
}

impl From<PromotionCommand> for PromotionAction {
    fn from(command: PromotionCommand) -> PromotionAction {
        PromotionAction::Command(command)
    }
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromotionEvent {
    PromotionCreated {
        kind: PromotionKind,
        conditions: Conditions,
        usage_limit: Option<u32>,
        per_customer_limit: Option<u32>
    },
    PromotionArchived {},
    PromotionRedeemed { order_id: OrderId, customer: String },
}
}

pub struct Promotion;

impl Decider for Promotion {
    type Command = PromotionAction;
    type Event = PromotionEvent;
    type State = PromotionState;

    fn decide(action: &PromotionAction, state: &PromotionState) -> Result<Vec<PromotionEvent>, Rejection> {
        match action {
            PromotionAction::Command(PromotionCommand::Create {
                kind,
                conditions,
                usage_limit,
                per_customer_limit,
            }) => {
                if state.created {
                    return Err(Rejection::conflict("promotion: already exists"));
                }
                match kind {
                    PromotionKind::Percentage { basis_points } if *basis_points == 0 || *basis_points > 10_000 => {
                        return Err(Rejection::invalid("kind.basis_points: must be between 1 and 10000"));
                    }
                    PromotionKind::FixedPerOrder { amount } => {
                        crate::money::check_amount("kind.amount", amount.amount, 1)?
                    }
                    _ => {}
                }
                crate::price_list::check_window(conditions.starts_at, conditions.ends_at)?;
                for (field, limit) in [("usage_limit", usage_limit), ("per_customer_limit", per_customer_limit)] {
                    if *limit == Some(0) {
                        return Err(Rejection::invalid(format!("{field}: at least 1 (leave it out for no limit)")));
                    }
                }
                if let Some(min) = conditions.min_subtotal {
                    crate::money::check_amount("conditions.min_subtotal", min.amount, 0)?;
                }
                Ok(vec![PromotionEvent::PromotionCreated {
                    kind: kind.clone(),
                    conditions: conditions.clone(),
                    usage_limit: *usage_limit,
                    per_customer_limit: *per_customer_limit,
                }])
            }
            PromotionAction::Command(PromotionCommand::Archive {}) => match (state.created, state.archived) {
                (false, _) => Err(Rejection::not_found("promotion: does not exist")),
                (true, true) => Ok(vec![]),
                (true, false) => Ok(vec![PromotionEvent::PromotionArchived {}]),
            },
            PromotionAction::Redeem { code, order_id, customer, subtotal, at } => {
                if state.orders.contains(order_id) {
                    return Ok(vec![]);
                }
                state.applicable(code, *subtotal, *at)?;
                let used = state.uses_by_customer.get(customer).copied().unwrap_or(0);
                if let Some(limit) = state.per_customer_limit {
                    if used >= limit {
                        return Err(Rejection::conflict(format!(
                            "promotion {code}: this customer has used it {used} of {limit} times"
                        )));
                    }
                }
                Ok(vec![PromotionEvent::PromotionRedeemed { order_id: order_id.clone(), customer: customer.clone() }])
            }
        }
    }

    fn evolve(mut state: PromotionState, event: &PromotionEvent) -> PromotionState {
        match event {
            PromotionEvent::PromotionCreated { kind, conditions, usage_limit, per_customer_limit } => {
                state.created = true;
                state.kind = Some(kind.clone());
                state.conditions = conditions.clone();
                state.usage_limit = *usage_limit;
                state.per_customer_limit = *per_customer_limit;
            }
            PromotionEvent::PromotionArchived {} => state.archived = true,
            PromotionEvent::PromotionRedeemed { order_id, customer } => {
                state.uses += 1;
                *state.uses_by_customer.entry(customer.clone()).or_default() += 1;
                state.orders.insert(order_id.clone());
            }
        }
        state
    }
}
