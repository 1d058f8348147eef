//! Inventory levels per stock item (SKU × location), folded from stock events alone —
//! independently of the stock aggregate's own rules, so it can check them.

use std::collections::BTreeMap;

use orderlog_domain::codec::DomainEvent;
use orderlog_domain::stock::StockEvent;
use orderlog_store::RecordedEvent;
use serde::Serialize;

use crate::Projection;

/// One stock item's levels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
    pub unavailable: i64,
    pub available: i64,
    pub incoming: i64,
    /// The most units ever reserved beyond what was on hand (or on hand below zero): the
    /// units a shop would have sold without having them. Zero unless backorders are on.
    pub oversold: i64,
}

impl StockLevel {
    fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::StockReceived { quantity } => {
                self.on_hand += i64::from(*quantity);
                self.incoming = (self.incoming - i64::from(*quantity)).max(0);
            }
            StockEvent::StockAdjusted { delta, .. } => self.on_hand += delta,
            StockEvent::StockReserved { quantity, .. } => self.reserved += i64::from(*quantity),
            StockEvent::ReservationReleased { quantity, .. } => self.reserved -= i64::from(*quantity),
            StockEvent::StockCommitted { quantity, .. } => {
                self.on_hand -= i64::from(*quantity);
                self.reserved -= i64::from(*quantity);
            }
            StockEvent::SafetyStockSet { quantity } => self.unavailable = i64::from(*quantity),
            StockEvent::IncomingExpected { quantity } => self.incoming += i64::from(*quantity),
            StockEvent::BackordersSet { .. } => {}
        }
        self.available = self.on_hand - self.reserved - self.unavailable;
        self.oversold = self.oversold.max(self.reserved - self.on_hand).max(-self.on_hand);
    }
}

/// Levels of every stock item, keyed by `(sku, location)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InventoryLevels {
    #[serde(serialize_with = "as_rows")]
    pub items: BTreeMap<(String, String), StockLevel>,
}

/// JSON objects need string keys: the items become rows with their SKU and location.
fn as_rows<S: serde::Serializer>(items: &BTreeMap<(String, String), StockLevel>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Row<'a> {
        sku: &'a str,
        location: &'a str,
        #[serde(flatten)]
        level: &'a StockLevel,
    }
    s.collect_seq(items.iter().map(|((sku, location), level)| Row { sku, location, level }))
}

impl InventoryLevels {
    /// Units oversold over all stock items.
    pub fn oversold_units(&self) -> i64 {
        self.items.values().map(|l| l.oversold).sum()
    }

    /// Levels per SKU over all locations.
    pub fn by_sku(&self) -> BTreeMap<&str, StockLevel> {
        let mut totals: BTreeMap<&str, StockLevel> = BTreeMap::new();
        for ((sku, _), level) in &self.items {
            let t = totals.entry(sku).or_default();
            t.on_hand += level.on_hand;
            t.reserved += level.reserved;
            t.unavailable += level.unavailable;
            t.available += level.available;
            t.incoming += level.incoming;
            t.oversold += level.oversold;
        }
        totals
    }
}

impl Projection for InventoryLevels {
    const NAME: &'static str = "inventory_levels";
    const VERSION: u32 = 1;

    fn apply(&mut self, event: &RecordedEvent, decoded: &DomainEvent) {
        let DomainEvent::Stock(stock) = decoded else { return };
        let key = event.stream_id.strip_prefix("stock-").and_then(|rest| rest.split_once('@'));
        let Some((sku, location)) = key else { return };
        self.items.entry((sku.to_string(), location.to_string())).or_default().apply(stock);
    }
}
