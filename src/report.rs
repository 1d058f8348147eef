//! What the log says happened, computed by folding it independently of the aggregates, so
//! that the demo's claims (no unit oversold) are checked, not assumed.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::order::OrderEvent;
use orderlog_domain::stock::StockEvent;
use orderlog_store::{EventStore, READ_EVENTS_MAX};
use serde::Serialize;

/// One stock item as the log leaves it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
    pub unavailable: i64,
    pub available: i64,
    pub incoming: i64,
    /// The most units ever reserved beyond what was on hand.
    pub oversold: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LogReport {
    pub events: u64,
    /// Events after `since`.
    pub events_since: u64,
    pub orders_placed_since: u64,
    pub orders_placed: u64,
    pub oversold_units: i64,
    /// Sum of placed order totals, in minor units, by currency.
    pub gross_by_currency: BTreeMap<String, i64>,
    pub captured_by_currency: BTreeMap<String, i64>,
    pub refunded_by_currency: BTreeMap<String, i64>,
    pub orders_cancelled: u64,
    pub orders_expired: u64,
    pub orders_completed: u64,
    pub stock: BTreeMap<String, StockLevel>,
}

/// Folds the whole log; `since` marks the position where this run began.
pub async fn fold_log(store: &dyn EventStore, since: u64) -> Result<LogReport> {
    let mut report = LogReport::default();
    let mut after = 0;
    loop {
        let page = store.read_all(after, READ_EVENTS_MAX).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            report.events += 1;
            let new = e.position > since;
            report.events_since += u64::from(new);
            let event = DomainEvent::decode(&e.event_type, e.schema_version, &e.payload).map_err(|err| {
                anyhow!("event at position {} (type '{}') cannot be read: {err}", e.position, e.event_type)
            })?;
            match event {
                DomainEvent::Stock(s) => fold_stock(report.stock.entry(e.stream_id.clone()).or_default(), &s),
                DomainEvent::Order(o) => fold_order(&mut report, &o, new),
                _ => {}
            }
        }
    }
    report.oversold_units = report.stock.values().map(|s| s.oversold).sum();
    Ok(report)
}

fn fold_stock(level: &mut StockLevel, event: &StockEvent) {
    match event {
        StockEvent::StockReceived { quantity } => {
            level.on_hand += i64::from(*quantity);
            level.incoming = (level.incoming - i64::from(*quantity)).max(0);
        }
        StockEvent::StockAdjusted { delta, .. } => level.on_hand += delta,
        StockEvent::StockReserved { quantity, .. } => level.reserved += i64::from(*quantity),
        StockEvent::ReservationReleased { quantity, .. } => level.reserved -= i64::from(*quantity),
        StockEvent::StockCommitted { quantity, .. } => {
            level.on_hand -= i64::from(*quantity);
            level.reserved -= i64::from(*quantity);
        }
        StockEvent::SafetyStockSet { quantity } => level.unavailable = i64::from(*quantity),
        StockEvent::IncomingExpected { quantity } => level.incoming += i64::from(*quantity),
        StockEvent::BackordersSet { .. } => {}
    }
    level.available = level.on_hand - level.reserved - level.unavailable;
    level.oversold = level.oversold.max(level.reserved - level.on_hand).max(-level.on_hand);
}

fn fold_order(report: &mut LogReport, event: &OrderEvent, new: bool) {
    match event {
        OrderEvent::OrderPlaced { order } => {
            report.orders_placed += 1;
            report.orders_placed_since += u64::from(new);
            *report.gross_by_currency.entry(order.currency.code().into()).or_default() += order.totals.total.amount;
        }
        OrderEvent::PaymentCaptured { amount, .. } => {
            *report.captured_by_currency.entry(amount.currency.code().into()).or_default() += amount.amount;
        }
        OrderEvent::PaymentRefunded { amount, .. } => {
            *report.refunded_by_currency.entry(amount.currency.code().into()).or_default() += amount.amount;
        }
        OrderEvent::OrderCancelled { .. } => report.orders_cancelled += 1,
        OrderEvent::OrderExpired {} => report.orders_expired += 1,
        OrderEvent::OrderCompleted {} => report.orders_completed += 1,
        _ => {}
    }
}
