//! Promotions the server owns: a code, what it takes off, when it is valid, the least a
//! cart must hold, and how often it may be used in all and by one customer. Each is a
//! stream (`promotion-{code}`); every use is an event of it (`PromotionRedeemed`) appended
//! in the checkout's atomic append, at the version the checkout read, so the last use of a
//! coupon is decided exactly like the last unit of stock: of two checkouts racing for it,
//! one appends and the other is decided again and refused.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cart::{CartLine, DiscountKind};
use crate::{Decider, Money, OrderId, ProductId, PromotionCode, Rejection, Sku};

/// Most SKUs, and most products, a promotion's conditions may name (a request naming the
/// most of both stays under the API's body limit).
pub const SCOPE_MAX: usize = 200;

/// What a promotion takes off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromotionKind {
    /// A share of the subtotal, in basis points (1 000 = 10 %).
    Percentage { basis_points: u32 },
    /// A fixed amount off the order, never more than the subtotal.
    FixedPerOrder { amount: Money },
    /// A fixed amount off each unit, never more than the unit's price.
    FixedPerItem { amount: Money },
    /// Shipping costs nothing.
    FreeShipping {},
    /// In every `buy + get` units of a line, `get` are free.
    BuyXGetY { buy: u32, get: u32 },
}

impl PromotionKind {
    /// The cart discount it gives.
    pub fn discount(&self) -> DiscountKind {
        match self {
            PromotionKind::Percentage { basis_points } => DiscountKind::Percentage { basis_points: *basis_points },
            PromotionKind::FixedPerOrder { amount } => DiscountKind::Fixed { amount: *amount },
            PromotionKind::FixedPerItem { amount } => DiscountKind::PerItem { amount: *amount },
            PromotionKind::FreeShipping {} => DiscountKind::FreeShipping {},
            PromotionKind::BuyXGetY { buy, get } => DiscountKind::BuyXGetY { buy: *buy, get: *get },
        }
    }
}

impl Conditions {
    /// Whether the promotion covers a line of this SKU and product.
    pub fn covers(&self, sku: &Sku, product: Option<&ProductId>) -> bool {
        (self.skus.is_empty() && self.products.is_empty())
            || self.skus.contains(sku)
            || product.is_some_and(|p| self.products.contains(p))
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
    /// The SKUs it is for: a cart needs one of them, and only their lines are discounted
    /// (with `products`: lines of either). Every SKU when both are empty.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub skus: BTreeSet<Sku>,
    /// The products it is for, as `skus`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub products: BTreeSet<ProductId>,
    /// Only for customers in this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_group: Option<String>,
    /// Only for a registered customer's first order.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_order: bool,
}

/// What a promotion's conditions are checked against: the cart and its customer, now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eligibility {
    pub subtotal: Money,
    pub at: DateTime<Utc>,
    /// Each line's SKU and product.
    pub lines: Vec<(Sku, Option<ProductId>)>,
    /// The customer's groups (a guest's: none).
    pub groups: BTreeSet<String>,
    /// Orders the customer placed before; `None` for a guest.
    pub orders_before: Option<usize>,
}

impl Eligibility {
    /// The cart's lines as conditions read them.
    pub fn lines_of(lines: &BTreeMap<Sku, CartLine>) -> Vec<(Sku, Option<ProductId>)> {
        lines.values().map(|l| (l.sku.clone(), l.pricing.as_ref().map(|p| p.product_id.clone()))).collect()
    }
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
    /// Applied to every cart it fits, without a code.
    pub automatic: bool,
    pub archived: bool,
    /// Uses counted against the limits: a promotion without limits records its uses in
    /// the orders alone.
    pub uses: u32,
    pub uses_by_customer: BTreeMap<String, u32>,
    pub orders: BTreeSet<OrderId>,
}

impl PromotionState {
    /// Whether the promotion may be applied to a cart of `subtotal` at `at`; the refusal
    /// names the unmet condition.
    pub fn applicable(&self, code: &str, cart: &Eligibility) -> Result<&PromotionKind, Rejection> {
        let (subtotal, at) = (cart.subtotal, cart.at);
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
        let scoped = !(c.skus.is_empty() && c.products.is_empty());
        if scoped && !cart.lines.iter().any(|(sku, product)| c.covers(sku, product.as_ref())) {
            let names: Vec<String> = c
                .skus
                .iter()
                .map(ToString::to_string)
                .chain(c.products.iter().map(|p| format!("product {p}")))
                .collect();
            return Err(Rejection::conflict(format!(
                "promotion {code}: needs one of these in the cart: {}",
                names.join(", ")
            )));
        }
        if let Some(group) = c.customer_group.as_ref().filter(|g| !cart.groups.contains(*g)) {
            return Err(Rejection::conflict(format!("promotion {code}: only for customers in the group '{group}'")));
        }
        if c.first_order {
            match cart.orders_before {
                None => {
                    return Err(Rejection::conflict(format!(
                        "promotion {code}: only for a registered customer's first order; the cart is a guest's"
                    )))
                }
                Some(n) if n > 0 => {
                    return Err(Rejection::conflict(format!(
                        "promotion {code}: only for a first order; this customer has placed {n}"
                    )))
                }
                Some(_) => {}
            }
        }
        if let PromotionKind::FixedPerOrder { amount } | PromotionKind::FixedPerItem { amount } = kind {
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
        /// Applied to every cart it fits, without a code.
        #[serde(default)]
        automatic: bool,
    },
    /// Ends the promotion for good.
    Archive {},
}

/// What a checkout does to a promotion, besides what a caller may ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromotionAction {
    Command(PromotionCommand),
    /// One use, by the order placed and the customer it is for, checked against the cart.
    Redeem {
        code: String,
        order_id: OrderId,
        customer: String,
        cart: Box<Eligibility>,
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
        per_customer_limit: Option<u32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        automatic: bool
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
                automatic,
            }) => {
                if state.created {
                    return Err(Rejection::conflict("promotion: already exists"));
                }
                match kind {
                    PromotionKind::Percentage { basis_points } if *basis_points == 0 || *basis_points > 10_000 => {
                        return Err(Rejection::invalid("kind.basis_points: must be between 1 and 10000"));
                    }
                    PromotionKind::FixedPerOrder { amount } | PromotionKind::FixedPerItem { amount } => {
                        crate::money::check_amount("kind.amount", amount.amount, 1)?
                    }
                    PromotionKind::BuyXGetY { buy, get } if *buy == 0 || *get == 0 => {
                        return Err(Rejection::invalid("kind: `buy` and `get` must each be at least 1"));
                    }
                    PromotionKind::BuyXGetY { buy, get } if buy.checked_add(*get).is_none_or(|n| n > 10_000) => {
                        return Err(Rejection::invalid("kind: `buy` + `get` must be at most 10000"));
                    }
                    _ => {}
                }
                if conditions.skus.len() > SCOPE_MAX || conditions.products.len() > SCOPE_MAX {
                    return Err(Rejection::invalid(format!(
                        "conditions: at most {SCOPE_MAX} SKUs and {SCOPE_MAX} products"
                    )));
                }
                if let Some(group) = &conditions.customer_group {
                    crate::ids::check_id("conditions.customer_group", group)?;
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
                    automatic: *automatic,
                }])
            }
            PromotionAction::Command(PromotionCommand::Archive {}) => match (state.created, state.archived) {
                (false, _) => Err(Rejection::not_found("promotion: does not exist")),
                (true, true) => Ok(vec![]),
                (true, false) => Ok(vec![PromotionEvent::PromotionArchived {}]),
            },
            PromotionAction::Redeem { code, order_id, customer, cart } => {
                if state.orders.contains(order_id) {
                    return Ok(vec![]);
                }
                state.applicable(code, cart)?;
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
            PromotionEvent::PromotionCreated { kind, conditions, usage_limit, per_customer_limit, automatic } => {
                state.created = true;
                state.automatic = *automatic;
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

/// The automatic promotions: its stream is `promotions-automatic`, appended to in the same
/// append that creates one, so a checkout loads exactly those.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PromotionIndexState {
    pub codes: BTreeSet<PromotionCode>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PromotionIndexCommand {
    List { code: PromotionCode },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromotionIndexEvent {
    AutomaticPromotionListed { code: PromotionCode },
}
}

pub struct PromotionIndex;

impl Decider for PromotionIndex {
    type Command = PromotionIndexCommand;
    type Event = PromotionIndexEvent;
    type State = PromotionIndexState;

    fn decide(
        command: &PromotionIndexCommand,
        state: &PromotionIndexState,
    ) -> Result<Vec<PromotionIndexEvent>, Rejection> {
        let PromotionIndexCommand::List { code } = command;
        match state.codes.contains(code) {
            true => Ok(vec![]),
            false => Ok(vec![PromotionIndexEvent::AutomaticPromotionListed { code: code.clone() }]),
        }
    }

    fn evolve(mut state: PromotionIndexState, event: &PromotionIndexEvent) -> PromotionIndexState {
        let PromotionIndexEvent::AutomaticPromotionListed { code } = event;
        state.codes.insert(code.clone());
        state
    }
}
