//! Low stock: a reactor that follows every stock item's state through the log and
//! publishes the integration event `stock.low` when an event takes the item's available
//! units below its threshold (`StockCommand::SetLowStockThreshold`) — once per crossing: an
//! item already low stays quiet until it has been above the threshold again. The crossing
//! is judged from the item's state just before and just after the event, so a replay
//! finds the same crossings, and the message id (from the event) queues each once.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use orderlog_domain::stock::{Stock, StockState};
use orderlog_domain::{AggregateKind, Decider, DomainEvent, StreamId};
use orderlog_store::{RecordedEvent, READ_EVENTS_MAX};
use serde_json::json;
use std::sync::Arc;

use crate::reactor::{OnPark, ReactError, Reactor};
use crate::webhooks::integration::Integration;
use crate::webhooks::Webhooks;

/// Stock items whose state the reactor keeps; the cache is emptied when it would grow past.
pub const LOW_STOCK_ITEMS_MAX: usize = 20_000;

pub struct LowStockReactor {
    webhooks: Webhooks,
    log: Arc<dyn orderlog_store::EventStore>,
    /// Each stock item's state and the version it is folded to.
    items: Mutex<HashMap<String, (u64, StockState)>>,
}

impl LowStockReactor {
    pub const NAME: &'static str = "low-stock";

    pub fn new(webhooks: Webhooks, log: Arc<dyn orderlog_store::EventStore>) -> LowStockReactor {
        LowStockReactor { webhooks, log, items: Mutex::default() }
    }

    /// The item's state just before `version`.
    async fn before(&self, stream: &str, version: u64) -> Result<StockState, ReactError> {
        let cached = self.items.lock().expect("items lock").get(stream).cloned();
        let (mut at, mut state) = match cached {
            Some((v, s)) if v < version => (v, s),
            _ => (0, StockState::default()),
        };
        while at + 1 < version {
            let page =
                self.log.read_stream(stream, at + 1, READ_EVENTS_MAX).await.map_err(|e| ReactError(e.to_string()))?;
            if page.is_empty() {
                break;
            }
            for recorded in page.iter().take_while(|e| e.version < version) {
                match DomainEvent::decode(&recorded.event_type, recorded.schema_version, &recorded.payload) {
                    Ok(DomainEvent::Stock(e)) => state = Stock::evolve(state, &e),
                    Ok(_) => return Err(ReactError(format!("{stream} holds an event that is not a stock event"))),
                    Err(e) => return Err(ReactError(e.to_string())),
                }
                at = recorded.version;
            }
            if page.len() < READ_EVENTS_MAX as usize || page.last().is_some_and(|e| e.version + 1 >= version) {
                break;
            }
        }
        Ok(state)
    }
}

#[async_trait]
impl Reactor for LowStockReactor {
    fn name(&self) -> &'static str {
        LowStockReactor::NAME
    }

    fn on_park(&self) -> OnPark {
        OnPark::Stop
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        StreamId::kind_of(&event.stream_id) == Some(AggregateKind::Stock)
    }

    async fn react(&self, event: &RecordedEvent, decoded: &DomainEvent) -> Result<(), ReactError> {
        let DomainEvent::Stock(stock_event) = decoded else { return Ok(()) };
        let before = self.before(&event.stream_id, event.version).await?;
        let after = Stock::evolve(before.clone(), stock_event);
        {
            let mut items = self.items.lock().expect("items lock");
            if items.len() >= LOW_STOCK_ITEMS_MAX && !items.contains_key(&event.stream_id) {
                items.clear();
            }
            items.insert(event.stream_id.clone(), (event.version, after.clone()));
        }
        if before.is_low() || !after.is_low() {
            return Ok(());
        }
        let key = StreamId::parse(&event.stream_id).and_then(|s| s.stock_key());
        let Some(key) = key else {
            return Err(ReactError(format!("'{}' is not a stock item's stream", event.stream_id)));
        };
        let integration = Integration {
            event_type: "stock.low",
            data: json!({
                "sku": key.sku.as_str(),
                "location": key.location.as_str(),
                "available": after.available(),
                "threshold": after.low_stock_threshold,
                "on_hand": after.on_hand,
                "reserved": after.reserved,
            }),
        };
        let id = format!("{}\nstock.low", event.event_id);
        Ok(self.webhooks.publish(&integration, &id, event.position, event.recorded_at).await?)
    }
}
