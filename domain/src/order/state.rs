//! What an order is: its states, its placed form, and the state its events fold into.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cart::{Address, Customer, ShippingMethod};
use crate::{CartId, Currency, LocationId, Money, Rejection, ReturnId, ShipmentId, Sku};

/// Order states. The derived order (`Ord`) is the lifecycle: an order never moves to a
/// smaller state, and `Cancelled` and `Expired` are terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    #[default]
    NotPlaced,
    Placed,
    Confirmed,
    PartiallyShipped,
    Shipped,
    Delivered,
    Completed,
    Cancelled,
    Expired,
}

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Cancelled | OrderStatus::Expired)
    }

    /// Every state a placed order can be in, in lifecycle order.
    pub const PLACED: [OrderStatus; 8] = [
        OrderStatus::Placed,
        OrderStatus::Confirmed,
        OrderStatus::PartiallyShipped,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
    ];

    /// The state's name as stored and shown (`partially_shipped`), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::NotPlaced => "not_placed",
            OrderStatus::Placed => "placed",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::PartiallyShipped => "partially_shipped",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }
}

/// One line of a placed order and the stock item that supplies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub location: LocationId,
    pub quantity: u32,
    pub unit_price: Money,
    /// How the catalog priced the line (product, title, price source, tax class): what an
    /// auditor reads to say why the order paid this price. Absent on orders from before the
    /// catalog priced carts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<crate::cart::LinePricing>,
    /// What promotions took off the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<Money>,
    /// The line's tax: region, class, rate, net and tax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<crate::tax::TaxLine>,
}

/// Every amount of a placed order.
/// `total = subtotal - discount + shipping + tax - tax_included`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderTotals {
    pub subtotal: Money,
    pub discount: Money,
    pub shipping: Money,
    pub tax: Money,
    pub total: Money,
    /// The part of `tax` that tax-inclusive prices already held (absent on orders from
    /// before the server computed tax, whose tax was all added on top).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_included: Option<Money>,
}

/// What the order was placed with: a copy of the cart at checkout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub cart_id: CartId,
    pub customer: Customer,
    pub email: String,
    pub currency: Currency,
    pub lines: Vec<OrderLine>,
    pub discount_code: Option<String>,
    /// What each promotion took off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<crate::pricing::PromotionUse>,
    /// The one rate a client named, on orders from before the server computed tax; 0 since.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tax_rate_bps: u32,
    pub totals: OrderTotals,
    /// Where it ships; absent when it ships nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_method: Option<ShippingMethod>,
    /// Where the buyer is billed, when the cart named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_address: Option<Address>,
    /// The shipping option as priced: zone, option, price, discount and tax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping: Option<crate::pricing::PricedShipping>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A quantity of one SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineQuantity {
    pub sku: Sku,
    pub quantity: u32,
}

/// A returned line as received: put back on sale or written off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnedLine {
    pub sku: Sku,
    pub quantity: u32,
    pub restock: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LineProgress {
    pub ordered: u32,
    pub shipped: u32,
    pub delivered: u32,
    /// Units in requested returns (received or not).
    pub return_requested: u32,
    pub returned: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PaymentState {
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub voided: bool,
    pub failures: u32,
    pub provider_refs: BTreeSet<String>,
    pub provider_events: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReturnState {
    pub lines: BTreeMap<Sku, u32>,
    pub received: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OrderState {
    pub status: OrderStatus,
    pub placed: Option<PlacedOrder>,
    pub lines: BTreeMap<Sku, LineProgress>,
    pub payment: PaymentState,
    pub shipped: BTreeSet<ShipmentId>,
    pub delivered: BTreeSet<ShipmentId>,
    pub returns: BTreeMap<ReturnId, ReturnState>,
    /// Why the order is on hold, while it is: a held order does not ship.
    pub hold: Option<String>,
    /// Set when the return window after delivery has closed.
    #[serde(default)]
    pub return_window_closed: bool,
    /// The order's payment intents through a provider, in the order they were started.
    #[serde(default)]
    pub payments: Vec<crate::PaymentId>,
}

impl OrderState {
    pub(super) fn placed(&self) -> Result<&PlacedOrder, Rejection> {
        self.placed.as_ref().ok_or_else(|| Rejection::not_found("order: does not exist"))
    }

    pub(super) fn nothing_shipped(&self) -> bool {
        self.lines.values().all(|l| l.shipped == 0)
    }

    /// The fulfilment state implied by the line counts, once payment is authorized.
    pub(super) fn fulfilment_status(&self) -> OrderStatus {
        let all = |f: fn(&LineProgress) -> bool| self.lines.values().all(f);
        if all(|l| l.delivered == l.ordered) {
            OrderStatus::Delivered
        } else if all(|l| l.shipped == l.ordered) {
            OrderStatus::Shipped
        } else if self.lines.values().any(|l| l.shipped > 0) {
            OrderStatus::PartiallyShipped
        } else {
            OrderStatus::Confirmed
        }
    }
}
