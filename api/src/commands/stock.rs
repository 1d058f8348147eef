//! Stock item commands (scope `operations`): receipts, adjustments, safety stock, incoming
//! units and the backorder policy.

use orderlog_commands::Command;
use orderlog_domain::stock::{StockCommand, REFERENCE_CHARS_MAX, STOCK_MOVE_MAX};
use orderlog_domain::{LocationId, Sku, StockKey};
use serde::Deserialize;
use serde_json::{json, Value};

use super::wire::AdjustmentReason;
use super::{body, Params, RequestBody};
use crate::openapi::schema::{fields, int, opt, req};
use crate::problem::Problem;

fn stock(path: &Params, command: StockCommand) -> Result<Command, Problem> {
    let stock = StockKey::new(path.id("sku", Sku::parse)?, path.id("location", LocationId::parse)?);
    Ok(Command::Stock { stock, command })
}

fn units(min: i64) -> Value {
    int(min, i64::from(u32::MAX))
}

body! {
    Receipt {
        quantity: u32 = req(units(1)),
        /// The supplier's delivery reference (a delivery note, a purchase order).
        reference: Option<String> =
            opt(json!({"type": ["string", "null"], "minLength": 1, "maxLength": REFERENCE_CHARS_MAX})),
    }
}

pub(super) fn receive(receipt: Receipt, path: &Params) -> Result<Command, Problem> {
    stock(path, StockCommand::Receive { quantity: receipt.quantity, reference: receipt.reference })
}

body! {
    Adjustment {
        delta: i64 = req(json!({"type": "integer", "minimum": -STOCK_MOVE_MAX, "maximum": STOCK_MOVE_MAX, "not": {"const": 0}})),
        reason: AdjustmentReason = req(json!({"type": "string", "enum": ["correction", "cycle_count", "damage", "shrinkage", "return_to_stock"]})),
        /// Only adjust if on-hand is exactly this now (cycle counts).
        expected_on_hand: Option<i64> = opt(json!({"type": ["integer", "null"], "format": "int64"})),
    }
}

pub(super) fn adjust(body: Adjustment, path: &Params) -> Result<Command, Problem> {
    let (delta, reason, expected_on_hand) = (body.delta, body.reason.into(), body.expected_on_hand);
    stock(path, StockCommand::Adjust { delta, reason, expected_on_hand })
}

/// `{"quantity": …}`: a count of units, at least `MIN`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Units<const MIN: u32> {
    quantity: u32,
}

impl<const MIN: u32> RequestBody for Units<MIN> {
    fn schema() -> Option<Value> {
        Some(fields(vec![("quantity", req(units(i64::from(MIN))))]))
    }
}

/// Units held back from sale: zero or more.
type HeldBack = Units<0>;

pub(super) fn set_safety_stock(body: HeldBack, path: &Params) -> Result<Command, Problem> {
    stock(path, StockCommand::SetSafetyStock { quantity: body.quantity })
}

/// Units on their way: one or more.
type Incoming = Units<1>;

pub(super) fn expect_incoming(body: Incoming, path: &Params) -> Result<Command, Problem> {
    stock(path, StockCommand::ExpectIncoming { quantity: body.quantity })
}

body! {
    Backorders { allowed: bool = req(json!({"type": "boolean"})) }
}

pub(super) fn set_backorders(body: Backorders, path: &Params) -> Result<Command, Problem> {
    stock(path, StockCommand::SetBackorders { allowed: body.allowed })
}

body! {
    LowStockThreshold {
        /// Below this many available units the item is low.
        threshold: u32 = req(units(0)),
    }
}

pub(super) fn set_low_stock_threshold(body: LowStockThreshold, path: &Params) -> Result<Command, Problem> {
    stock(path, StockCommand::SetLowStockThreshold { threshold: body.threshold })
}
