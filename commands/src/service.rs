//! [`CommandService`]: idempotency, loading, deciding, appending, retrying.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orderlog_domain::cart::Cart;
use orderlog_domain::checkout::{decide_checkout, Decision};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::flows::{
    decide_carrier_event, decide_create_shipment, decide_end_order, decide_receive_return, decide_ship,
    order_stock_keys, return_stock_keys,
};
use orderlog_domain::order::{Order, OrderCommand};
use orderlog_domain::shipment::{Shipment, ShipmentCommand};
use orderlog_domain::stock::{Stock, StockCommand, StockState};
use orderlog_domain::{stream, Decider, OrderId, Rejection, StockKey};
use orderlog_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::load::StateCache;
use crate::{Clock, Command, CommandEnvelope, CommandError, CommandOutcome, IdSource};

/// Namespace of the event ids derived from command ids (UUID v5).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_726c_6f67_8000_0000_0000_0001);
/// Longest command id (idempotency key), in bytes.
pub const COMMAND_ID_BYTES_MAX: usize = 255;

/// Tunables of the command service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Times a command reloads and decides again after a version conflict.
    pub retry_count_max: u32,
    /// Pause before the first retry; doubles with each retry up to 64 times this, plus a
    /// jitter of up to as much again, so that contenders spread out.
    pub retry_backoff_ms: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { retry_count_max: 16, retry_backoff_ms: 1 }
    }
}

/// Runs commands against an event store.
pub struct CommandService {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    config: ServiceConfig,
    cache: StateCache,
}

/// The streams a decision read, with the versions they were read at.
type Reads = BTreeMap<String, u64>;

impl CommandService {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>, ids: Arc<dyn IdSource>) -> CommandService {
        CommandService::with_config(store, clock, ids, ServiceConfig::default())
    }

    pub fn with_config(
        store: Arc<dyn EventStore>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        config: ServiceConfig,
    ) -> CommandService {
        CommandService { store, clock, ids, config, cache: StateCache::default() }
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// A new id from the service's id source.
    pub fn next_id(&self) -> String {
        self.ids.next_id()
    }

    /// Runs one command: the same command id again returns the first result and appends
    /// nothing; the same id with a different command is refused.
    pub async fn execute(&self, envelope: CommandEnvelope) -> Result<CommandOutcome, CommandError> {
        let id = &envelope.command_id;
        if id.is_empty() || id.len() > COMMAND_ID_BYTES_MAX || id.chars().any(char::is_control) {
            return Err(CommandError::Invalid(format!(
                "command_id: must be 1 to {COMMAND_ID_BYTES_MAX} bytes without control characters"
            )));
        }
        if envelope.actor.is_empty() {
            return Err(CommandError::Invalid("actor: must not be empty".into()));
        }
        let command_hash = command_hash(&envelope.command);
        let mut retries = 0;
        loop {
            if let Some(outcome) = self.recorded_outcome(&envelope, &command_hash).await? {
                return Ok(outcome);
            }
            let (decision, reads) = self.decide(&envelope.command).await?;
            let appends = self.appends(&envelope, &command_hash, &decision, &reads);
            let mut outcome = CommandOutcome {
                command_id: envelope.command_id.clone(),
                events_appended: decision.event_count() as u32,
                streams: Vec::new(),
                position: None,
                order_id: decision.order_id.clone(),
                replayed: false,
                retries,
            };
            if decision.event_count() == 0 {
                outcome.streams = appends
                    .iter()
                    .map(|a| orderlog_store::StreamVersion {
                        stream_id: a.stream_id.clone(),
                        version: reads[&a.stream_id],
                    })
                    .collect();
                return Ok(outcome);
            }
            match self.store.append(appends).await {
                Ok(appended) => {
                    if appended.duplicate {
                        // A concurrent run of the same command got there first.
                        continue;
                    }
                    outcome.streams = appended.streams;
                    outcome.position = appended.last_position;
                    return Ok(outcome);
                }
                Err(e) if e.is_conflict() && retries < self.config.retry_count_max => {
                    tracing::debug!(command_id = %envelope.command_id, retries, error = %e, "version conflict, retrying");
                    let backoff_us = (self.config.retry_backoff_ms * 1_000) << retries.min(6);
                    let jitter_us = jitter(&envelope.command_id, retries) % backoff_us.max(1);
                    tokio::time::sleep(Duration::from_micros(backoff_us + jitter_us)).await;
                    retries += 1;
                }
                Err(e) if e.is_conflict() => return Err(CommandError::TooManyConflicts { retries }),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The result of an earlier run of this command id, if it appended anything.
    async fn recorded_outcome(
        &self,
        envelope: &CommandEnvelope,
        command_hash: &str,
    ) -> Result<Option<CommandOutcome>, CommandError> {
        let events = self.store.read_command(&envelope.command_id).await?;
        let Some(first) = events.first() else { return Ok(None) };
        if first.metadata.command_hash.as_deref() != Some(command_hash) {
            return Err(CommandError::IdempotencyKeyReused { command_id: envelope.command_id.clone() });
        }
        let mut streams: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &events {
            let v = streams.entry(&e.stream_id).or_default();
            *v = (*v).max(e.version);
        }
        let order_id =
            events.iter().find_map(|e| e.stream_id.strip_prefix("order-")).and_then(|id| OrderId::parse(id).ok());
        Ok(Some(CommandOutcome {
            command_id: envelope.command_id.clone(),
            events_appended: events.len() as u32,
            streams: streams
                .into_iter()
                .map(|(s, v)| orderlog_store::StreamVersion { stream_id: s.to_string(), version: v })
                .collect(),
            position: events.iter().map(|e| e.position).max(),
            order_id,
            replayed: true,
            retries: 0,
        }))
    }

    fn appends(
        &self,
        envelope: &CommandEnvelope,
        command_hash: &str,
        decision: &Decision,
        reads: &Reads,
    ) -> Vec<StreamAppend> {
        let now = self.clock.now();
        let metadata = Metadata {
            actor: envelope.actor.clone(),
            command_id: envelope.command_id.clone(),
            command_hash: Some(command_hash.to_string()),
            correlation_id: envelope.correlation_id.clone().unwrap_or_else(|| envelope.command_id.clone()),
            causation_id: envelope.causation_id.clone(),
        };
        let mut index = 0u32;
        decision
            .streams
            .iter()
            .map(|(stream_id, events)| StreamAppend {
                stream_id: stream_id.clone(),
                expected: ExpectedVersion::Exact(*reads.get(stream_id).expect("every decided stream was loaded")),
                events: events
                    .iter()
                    .map(|event| {
                        index += 1;
                        new_event(event, event_id(&envelope.command_id, index), metadata.clone(), now)
                    })
                    .collect(),
            })
            .collect()
    }

    /// Loads what the command needs and decides.
    async fn decide(&self, command: &Command) -> Result<(Decision, Reads), CommandError> {
        let mut reads = Reads::new();
        let decision = match command {
            Command::Cart { cart_id, command } => {
                let s = stream::cart(cart_id);
                let (cart, v) = self.cache.load::<Cart>(&*self.store, &s).await?;
                reads.insert(s.clone(), v);
                single(s, Cart::decide(command, &cart)?)
            }
            Command::Checkout { checkout } => {
                let cart_stream = stream::cart(&checkout.cart_id);
                let (cart, v) = self.cache.load::<Cart>(&*self.store, &cart_stream).await?;
                reads.insert(cart_stream, v);
                let order_stream = stream::order(&checkout.order_id);
                let (order, v) = self.cache.load::<Order>(&*self.store, &order_stream).await?;
                reads.insert(order_stream, v);
                let stocks = self.load_stocks(checkout.stock_keys(&cart), &mut reads).await?;
                decide_checkout(checkout, &cart, &order, &stocks)?
            }
            Command::Order { order_id, command } => {
                if let Some(route) = order_route(command) {
                    return Err(CommandError::Invalid(route.to_string()));
                }
                let s = stream::order(order_id);
                let (order, v) = self.cache.load::<Order>(&*self.store, &s).await?;
                reads.insert(s.clone(), v);
                let mut d = single(s, Order::decide(command, &order)?);
                d.order_id = Some(order_id.clone());
                d
            }
            Command::CancelOrder { order_id, reason } => {
                let end = OrderCommand::Cancel { reason: reason.clone() };
                self.end_order(order_id, &end, &mut reads).await?
            }
            Command::ExpireOrder { order_id } => self.end_order(order_id, &OrderCommand::Expire {}, &mut reads).await?,
            Command::ReceiveReturn { order_id, return_id, lines } => {
                let s = stream::order(order_id);
                let (order, v) = self.cache.load::<Order>(&*self.store, &s).await?;
                reads.insert(s, v);
                let stocks = self.load_stocks(return_stock_keys(&order, lines), &mut reads).await?;
                decide_receive_return(order_id, return_id, lines, &order, &stocks)?
            }
            Command::Stock { stock, command } => {
                if matches!(
                    command,
                    StockCommand::Reserve { .. } | StockCommand::Release { .. } | StockCommand::Commit { .. }
                ) {
                    return Err(CommandError::Invalid(
                        "stock: reservations are made by checkout, released by cancelling or expiring the order, and committed by shipping".into(),
                    ));
                }
                let s = stream::stock(stock);
                let (state, v) = self.cache.load::<Stock>(&*self.store, &s).await?;
                reads.insert(s.clone(), v);
                single(s, Stock::decide(command, &state)?)
            }
            Command::Shipment { shipment_id, command } => {
                let s = stream::shipment(shipment_id);
                let (shipment, v) = self.cache.load::<Shipment>(&*self.store, &s).await?;
                reads.insert(s.clone(), v);
                let order_id = match command {
                    ShipmentCommand::Create { order_id, .. } => Some(order_id.clone()),
                    _ => shipment.order_id.clone(),
                };
                let order = match (&order_id, command) {
                    (
                        Some(id),
                        ShipmentCommand::Create { .. }
                        | ShipmentCommand::Ship { .. }
                        | ShipmentCommand::RecordCarrierEvent { .. },
                    ) => {
                        let os = stream::order(id);
                        let (order, v) = self.cache.load::<Order>(&*self.store, &os).await?;
                        reads.insert(os, v);
                        Some(order)
                    }
                    _ => None,
                };
                match (command, order) {
                    (ShipmentCommand::Create { .. }, Some(order)) => {
                        decide_create_shipment(shipment_id, command, &shipment, &order)?
                    }
                    (ShipmentCommand::Ship { .. }, Some(order)) => {
                        let location = shipment.location.clone().expect("a created shipment has a location");
                        let keys =
                            shipment.lines.iter().map(|l| StockKey::new(l.sku.clone(), location.clone())).collect();
                        let stocks = self.load_stocks(keys, &mut reads).await?;
                        decide_ship(shipment_id, command, &shipment, &order, &stocks)?
                    }
                    (ShipmentCommand::RecordCarrierEvent { .. }, Some(order)) => {
                        decide_carrier_event(shipment_id, command, &shipment, &order)?
                    }
                    _ => {
                        let mut d = single(s, Shipment::decide(command, &shipment)?);
                        d.order_id = order_id;
                        d
                    }
                }
            }
        };
        Ok((decision, reads))
    }

    async fn end_order(
        &self,
        order_id: &OrderId,
        command: &OrderCommand,
        reads: &mut Reads,
    ) -> Result<Decision, CommandError> {
        let s = stream::order(order_id);
        let (order, v) = self.cache.load::<Order>(&*self.store, &s).await?;
        reads.insert(s, v);
        if order.placed.is_none() {
            return Err(Rejection::not_found(format!("order {order_id}: does not exist")).into());
        }
        let stocks = self.load_stocks(order_stock_keys(&order), reads).await?;
        Ok(decide_end_order(order_id, command, &order, &stocks)?)
    }

    async fn load_stocks(
        &self,
        keys: Vec<StockKey>,
        reads: &mut Reads,
    ) -> Result<BTreeMap<StockKey, StockState>, CommandError> {
        let mut stocks = BTreeMap::new();
        for key in keys {
            let s = stream::stock(&key);
            let (state, v) = self.cache.load::<Stock>(&*self.store, &s).await?;
            reads.insert(s, v);
            stocks.insert(key, state);
        }
        Ok(stocks)
    }
}

/// Order commands that must go through a flow, and where.
fn order_route(command: &OrderCommand) -> Option<&'static str> {
    match command {
        OrderCommand::Place { .. } => Some("order: orders are placed by checking out a cart"),
        OrderCommand::RecordShipped { .. } => Some("order: lines ship when a shipment ships"),
        OrderCommand::RecordDelivered { .. } => Some("order: lines are delivered by a shipment's carrier events"),
        OrderCommand::Cancel { .. } => Some("order: cancel with the cancel-order command, which also releases stock"),
        OrderCommand::Expire {} => Some("order: expire with the expire-order command, which also releases stock"),
        OrderCommand::ReceiveReturn { .. } => {
            Some("order: receive returns with the receive-return command, which also restocks")
        }
        _ => None,
    }
}

fn single<E: Into<DomainEvent>>(stream: String, events: Vec<E>) -> Decision {
    let mut d = Decision::default();
    d.push(stream, events);
    d
}

/// A spread for retry pauses that differs between commands and between retries, without a
/// random number source.
fn jitter(command_id: &str, retries: u32) -> u64 {
    let digest = Sha256::digest(format!("{command_id}\n{retries}").as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn command_hash(command: &Command) -> String {
    let json = serde_json::to_string(command).expect("commands serialize");
    hex::encode(Sha256::digest(json.as_bytes()))
}

/// Event ids follow from the command id, so two runs of one command race to append the
/// same events and the store keeps exactly one.
fn event_id(command_id: &str, index: u32) -> Uuid {
    Uuid::new_v5(&EVENT_ID_NAMESPACE, format!("{command_id}\n{index}").as_bytes())
}

fn new_event(event: &DomainEvent, event_id: Uuid, metadata: Metadata, now: chrono::DateTime<chrono::Utc>) -> NewEvent {
    NewEvent {
        event_id,
        event_type: event.event_type().to_string(),
        schema_version: event.schema_version(),
        payload: event.payload(),
        metadata,
        recorded_at: now,
    }
}
