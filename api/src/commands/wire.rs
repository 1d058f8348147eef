//! The values request bodies carry, as the API spells them. They mirror the domain's value
//! types field for field today, but are their own types: renaming a field of a stored event
//! or of a domain value changes neither the API nor what a retried request hashes to.

use orderlog_domain::cart;
use orderlog_domain::{order, stock, Currency, CustomerId, Money, Sku};
use serde::Deserialize;
use serde_json::Value;

use super::RequestBody;
use crate::openapi::schema::reference;

/// Bodies that are one of the document's named schemas as a whole.
macro_rules! named {
    ($($name:ident),+) => {
        $(impl RequestBody for $name {
            fn schema() -> Option<Value> {
                Some(reference(stringify!($name)))
            }
        })+
    };
}

named!(Address);

/// `{"amount": 1250, "currency": "EUR"}`: minor units.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub amount: i64,
    pub currency: Currency,
}

impl From<Price> for Money {
    fn from(p: Price) -> Money {
        Money::new(p.amount, p.currency)
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Customer {
    Registered { customer_id: CustomerId, email: Option<String> },
    Guest { email: String },
}

impl From<Customer> for cart::Customer {
    fn from(c: Customer) -> cart::Customer {
        match c {
            Customer::Registered { customer_id, email } => cart::Customer::Registered { customer_id, email },
            Customer::Guest { email } => cart::Customer::Guest { email },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
    #[serde(default)]
    pub subdivision: Option<String>,
}

impl From<Address> for cart::Address {
    fn from(a: Address) -> cart::Address {
        let Address { name, line1, line2, city, postal_code, country, subdivision } = a;
        cart::Address { name, line1, line2, city, postal_code, country, subdivision }
    }
}

/// `{"sku": "mug", "quantity": 2}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub sku: Sku,
    pub quantity: u32,
}

pub fn lines(lines: Vec<Line>) -> Vec<order::LineQuantity> {
    lines.into_iter().map(|l| order::LineQuantity { sku: l.sku, quantity: l.quantity }).collect()
}

/// `{"sku": "mug", "quantity": 1, "restock": true}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnedLine {
    pub sku: Sku,
    pub quantity: u32,
    pub restock: bool,
}

pub fn returned_lines(lines: Vec<ReturnedLine>) -> Vec<order::ReturnedLine> {
    lines.into_iter().map(|l| order::ReturnedLine { sku: l.sku, quantity: l.quantity, restock: l.restock }).collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentReason {
    Correction,
    CycleCount,
    Damage,
    Shrinkage,
    ReturnToStock,
}

impl From<AdjustmentReason> for stock::AdjustmentReason {
    fn from(r: AdjustmentReason) -> stock::AdjustmentReason {
        match r {
            AdjustmentReason::Correction => stock::AdjustmentReason::Correction,
            AdjustmentReason::CycleCount => stock::AdjustmentReason::CycleCount,
            AdjustmentReason::Damage => stock::AdjustmentReason::Damage,
            AdjustmentReason::Shrinkage => stock::AdjustmentReason::Shrinkage,
            AdjustmentReason::ReturnToStock => stock::AdjustmentReason::ReturnToStock,
        }
    }
}
