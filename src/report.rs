//! What the log says happened, folded from the log independently of the aggregates, so
//! that the demo's claims (no unit oversold) are checked, not assumed.

use orderlog_domain::stock::StockState;
use std::collections::BTreeMap;

use anyhow::Result;
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::order::OrderEvent;
use orderlog_projections::inventory::InventoryLevels;
use orderlog_projections::{catch_up, Projection};
use orderlog_store::{EventStore, LogCursor, RecordedEvent, READ_EVENTS_MAX};
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct LogReport {
    /// Where this run began: events after it are this run's.
    #[serde(skip)]
    since: u64,
    pub events: u64,
    pub events_since: u64,
    pub orders_placed: u64,
    pub orders_placed_since: u64,
    pub oversold_units: i64,
    /// Sums in minor units, by currency.
    pub placed_by_currency: BTreeMap<String, i64>,
    pub captured_by_currency: BTreeMap<String, i64>,
    pub refunded_by_currency: BTreeMap<String, i64>,
    /// What placed orders' promotions took off, their tax and their shipping.
    pub discount_by_currency: BTreeMap<String, i64>,
    pub tax_by_currency: BTreeMap<String, i64>,
    pub shipping_by_currency: BTreeMap<String, i64>,
    /// Orders that used each promotion.
    pub promotion_uses: BTreeMap<String, u64>,
    pub orders_cancelled: u64,
    pub orders_expired: u64,
    pub orders_completed: u64,
    /// Carts that expired (abandoned, or left alone until their idle deadline).
    pub carts_expired: u64,
    pub inventory: InventoryLevels,
}

impl Projection for LogReport {
    const NAME: &'static str = "demo_report";
    const VERSION: u32 = 1;

    fn apply(&mut self, event: &RecordedEvent, decoded: &DomainEvent) {
        let new = event.position > self.since;
        self.events += 1;
        self.events_since += u64::from(new);
        self.inventory.apply(event, decoded);
        if let DomainEvent::Cart(orderlog_domain::cart::CartEvent::CartExpired {}) = decoded {
            self.carts_expired += 1;
        }
        let DomainEvent::Order(order) = decoded else { return };
        let add = |sums: &mut BTreeMap<String, i64>, amount: &orderlog_domain::Money| {
            *sums.entry(amount.currency.code().into()).or_default() += amount.amount;
        };
        match order {
            OrderEvent::OrderPlaced { order } => {
                self.orders_placed += 1;
                self.orders_placed_since += u64::from(new);
                add(&mut self.placed_by_currency, &order.totals.total);
                add(&mut self.discount_by_currency, &order.totals.discount);
                add(&mut self.tax_by_currency, &order.totals.tax);
                add(&mut self.shipping_by_currency, &order.totals.shipping);
                for promotion in &order.promotions {
                    *self.promotion_uses.entry(promotion.code.clone()).or_default() += 1;
                }
            }
            OrderEvent::PaymentCaptured { amount, .. } => add(&mut self.captured_by_currency, amount),
            OrderEvent::PaymentRefunded { amount, .. } => add(&mut self.refunded_by_currency, amount),
            OrderEvent::OrderCancelled { .. } => self.orders_cancelled += 1,
            OrderEvent::OrderExpired {} => self.orders_expired += 1,
            OrderEvent::OrderCompleted {} => self.orders_completed += 1,
            _ => {}
        }
    }
}

/// Folds the whole log; `since` marks the position where this run began.
pub async fn fold_log(store: &dyn EventStore, since: u64) -> Result<LogReport> {
    if !store.settle(std::time::Duration::from_secs(60)).await? {
        anyhow::bail!("the log did not settle within 60 s: a transaction on the database server is still running");
    }
    let mut report = LogReport { since, ..LogReport::default() };
    catch_up(store, &mut report, LogCursor::START, READ_EVENTS_MAX).await?;
    report.oversold_units = report.inventory.oversold_units();
    Ok(report)
}

/// A stock item's state, folded from its stream.
pub async fn stock_state(store: &dyn EventStore, key: &orderlog_domain::StockKey) -> Result<StockState> {
    let stream = orderlog_domain::StreamId::stock(key).to_string();
    let mut events = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_stream(&stream, from, READ_EVENTS_MAX).await?;
        let full = page.len() == READ_EVENTS_MAX as usize;
        for recorded in &page {
            match DomainEvent::decode(&recorded.event_type, recorded.schema_version, &recorded.payload)? {
                DomainEvent::Stock(e) => events.push(e),
                other => anyhow::bail!("{stream} holds a {} event", other.event_type()),
            }
            from = recorded.version + 1;
        }
        if !full {
            break;
        }
    }
    Ok(<orderlog_domain::stock::Stock as orderlog_domain::Decider>::fold(&events))
}
