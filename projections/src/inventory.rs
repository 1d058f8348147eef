//! Inventory levels per stock item (SKU × location), folded from stock events alone —
//! independently of the stock aggregate's own rules, so it can check them.

use std::collections::BTreeMap;

use orderlog_domain::codec::DomainEvent;
use orderlog_domain::stock::StockEvent;
use orderlog_domain::{AggregateKind, StockKey, StreamId};
use orderlog_store::RecordedEvent;
use serde::{Deserialize, Serialize};

use crate::table::TableModel;
use crate::Projection;

/// One stock item's levels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    pub(crate) fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::StockReceived { units: quantity, .. } => {
                self.on_hand = self.on_hand.saturating_add(i64::from(*quantity));
                self.incoming = (self.incoming - i64::from(*quantity)).max(0);
            }
            StockEvent::StockAdjusted { delta, .. } => self.on_hand = self.on_hand.saturating_add(*delta),
            StockEvent::StockReserved { quantity, .. } => {
                self.reserved = self.reserved.saturating_add(i64::from(*quantity))
            }
            StockEvent::ReservationReleased { quantity, .. } => {
                self.reserved = self.reserved.saturating_sub(i64::from(*quantity))
            }
            StockEvent::StockDispatched { quantity, .. } => {
                self.on_hand = self.on_hand.saturating_sub(i64::from(*quantity));
                self.reserved = self.reserved.saturating_sub(i64::from(*quantity));
            }
            StockEvent::SafetyStockSet { quantity } => self.unavailable = i64::from(*quantity),
            StockEvent::IncomingExpected { quantity } => {
                self.incoming = self.incoming.saturating_add(i64::from(*quantity))
            }
            StockEvent::BackordersSet { .. } | StockEvent::LowStockThresholdSet { .. } => {}
        }
        self.available = self.on_hand.saturating_sub(self.reserved).saturating_sub(self.unavailable);
        self.oversold =
            self.oversold.max(self.reserved.saturating_sub(self.on_hand)).max(self.on_hand.saturating_neg());
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
            t.on_hand = t.on_hand.saturating_add(level.on_hand);
            t.reserved = t.reserved.saturating_add(level.reserved);
            t.unavailable = t.unavailable.saturating_add(level.unavailable);
            t.available = t.available.saturating_add(level.available);
            t.incoming = t.incoming.saturating_add(level.incoming);
            t.oversold = t.oversold.saturating_add(level.oversold);
        }
        totals
    }
}

impl Projection for InventoryLevels {
    const NAME: &'static str = "inventory_levels";
    const VERSION: u32 = 1;

    fn apply(&mut self, event: &RecordedEvent, decoded: &DomainEvent) {
        let DomainEvent::Stock(stock) = decoded else { return };
        let Some(key) = StreamId::parse(&event.stream_id).and_then(|s| s.stock_key()) else { return };
        self.items.entry((key.sku.to_string(), key.location.to_string())).or_default().apply(stock);
    }
}

/// One row of the `inventory_levels` table model: one stock item.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRow {
    pub sku: String,
    pub location: String,
    #[serde(flatten)]
    pub level: StockLevel,
}

/// Inventory levels as rows, one per stock item (key `{sku}@{location}`). Totals per SKU
/// over all locations are the sums of its items (view `inventory_by_sku`): safety stock and
/// incoming units are kept per location, so they do not fold into one row correctly.
pub struct InventoryTable;

/// Plain-SQL views of the inventory table for SQLite readers.
pub const INVENTORY_VIEWS_SQLITE: &[&str] = &[
    "DROP VIEW IF EXISTS inventory_by_location; CREATE VIEW inventory_by_location AS
       SELECT json_extract(data, '$.sku') AS sku, json_extract(data, '$.location') AS location,
              json_extract(data, '$.on_hand') AS on_hand, json_extract(data, '$.reserved') AS reserved,
              json_extract(data, '$.available') AS available, json_extract(data, '$.unavailable') AS unavailable,
              json_extract(data, '$.incoming') AS incoming
         FROM rm_inventory_levels",
    "DROP VIEW IF EXISTS inventory_by_sku; CREATE VIEW inventory_by_sku AS
       SELECT sku, SUM(on_hand) AS on_hand, SUM(reserved) AS reserved, SUM(available) AS available,
              SUM(unavailable) AS unavailable, SUM(incoming) AS incoming, COUNT(*) AS locations
         FROM inventory_by_location GROUP BY sku",
];

/// Plain-SQL views of the inventory table for PostgreSQL readers.
pub const INVENTORY_VIEWS_POSTGRES: &[&str] = &[
    "DROP VIEW IF EXISTS inventory_by_location CASCADE; CREATE VIEW inventory_by_location AS
       SELECT data->>'sku' AS sku, data->>'location' AS location,
              (data->>'on_hand')::bigint AS on_hand, (data->>'reserved')::bigint AS reserved,
              (data->>'available')::bigint AS available, (data->>'unavailable')::bigint AS unavailable,
              (data->>'incoming')::bigint AS incoming
         FROM rm_inventory_levels",
    "DROP VIEW IF EXISTS inventory_by_sku CASCADE; CREATE VIEW inventory_by_sku AS
       SELECT sku, SUM(on_hand) AS on_hand, SUM(reserved) AS reserved, SUM(available) AS available,
              SUM(unavailable) AS unavailable, SUM(incoming) AS incoming, COUNT(*) AS locations
         FROM inventory_by_location GROUP BY sku",
];

fn stock_item(event: &RecordedEvent) -> Option<StockKey> {
    StreamId::parse(&event.stream_id).and_then(|s| s.stock_key())
}

impl TableModel for InventoryTable {
    const NAME: &'static str = "inventory_levels";
    const VERSION: u32 = 1;
    type Row = InventoryRow;

    fn wants(event: &RecordedEvent) -> bool {
        StreamId::kind_of(&event.stream_id) == Some(AggregateKind::Stock)
    }

    fn keys(event: &RecordedEvent, decoded: &DomainEvent) -> Vec<String> {
        match (decoded, stock_item(event)) {
            (DomainEvent::Stock(_), Some(key)) => vec![format!("{}@{}", key.sku, key.location)],
            _ => Vec::new(),
        }
    }

    fn evolve(mut row: InventoryRow, _key: &str, event: &RecordedEvent, decoded: &DomainEvent) -> InventoryRow {
        let (DomainEvent::Stock(stock), Some(key)) = (decoded, stock_item(event)) else { return row };
        row.sku = key.sku.to_string();
        row.location = key.location.to_string();
        row.level.apply(stock);
        row
    }
}
