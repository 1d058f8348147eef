//! [`CommandService`]: idempotency, loading, deciding, appending, retrying.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orderlog_domain::checkout::Decision;
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::tax::TaxProvider;
use orderlog_domain::StreamId;
use orderlog_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::load::StateCache;
use crate::plan::Loaded;
use crate::{Clock, Command, CommandEnvelope, CommandError, CommandOutcome, IdSource};

/// Namespace of the event ids derived from command ids (UUID v5).
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6465_726c_6f67_8000_0000_0000_0001);
/// Longest command id (idempotency key), in bytes.
pub const COMMAND_ID_BYTES_MAX: usize = 255;

/// How long a cart line's price holds by default.
pub const PRICE_TTL_MINUTES: i64 = 30;

/// Tunables of the command service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Times a command reloads and decides again after a version conflict.
    pub retry_count_max: u32,
    /// Pause before the first retry; doubles with each retry up to 64 times this, plus a
    /// jitter of up to as much again, so that contenders spread out.
    pub retry_backoff_ms: u64,
    /// When the deadlines that commands schedule fall due.
    pub deadlines: DeadlinePolicy,
    /// How long the price a cart line gets holds; checkout prices a line again after that.
    pub price_ttl: chrono::Duration,
    /// A tax provider that replaces the rate table of the log's tax regions (a tax
    /// service); the rates it answers are recorded in each order.
    pub tax: Option<ExternalTax>,
}

/// A [`TaxProvider`] other than the built-in rate table.
#[derive(Clone)]
pub struct ExternalTax(pub std::sync::Arc<dyn TaxProvider>);

impl std::fmt::Debug for ExternalTax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExternalTax")
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            retry_count_max: 16,
            retry_backoff_ms: 1,
            deadlines: DeadlinePolicy::default(),
            price_ttl: chrono::Duration::minutes(PRICE_TTL_MINUTES),
            tax: None,
        }
    }
}

/// How long after the event that schedules it each kind of deadline falls due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadlinePolicy {
    /// A placed order not paid within this expires and releases its stock.
    pub order_payment: chrono::Duration,
    /// A cart untouched for this long expires.
    pub cart_idle: chrono::Duration,
    /// Returns may be requested for this long after an order is delivered.
    pub return_window: chrono::Duration,
}

impl Default for DeadlinePolicy {
    fn default() -> Self {
        DeadlinePolicy {
            order_payment: chrono::Duration::minutes(30),
            cart_idle: chrono::Duration::days(14),
            return_window: chrono::Duration::days(30),
        }
    }
}

/// Rounds of loading a command may take: what it names, what those states name, and (for
/// a deadline) what its command's states name.
const LOAD_ROUNDS_MAX: usize = 4;

/// Runs commands against an event store.
pub struct CommandService {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    config: ServiceConfig,
    cache: StateCache,
}

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

    /// The service's time now (what commands are decided at).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// A stream's state as the log has it now, and its version (0: no events), through the
    /// service's cache of folded states: what a read of one aggregate answers from.
    pub async fn state(
        &self,
        stream: &orderlog_domain::StreamId,
    ) -> Result<(orderlog_domain::AnyState, u64), CommandError> {
        let (state, version, _) = self.cache.load(&*self.store, stream).await?;
        Ok((state, version))
    }

    /// A cart priced now as its checkout would price it, with the shipping options its
    /// address is offered.
    pub async fn cart_view(&self, cart_id: &orderlog_domain::CartId) -> Result<crate::CartView, CommandError> {
        let cart_stream = StreamId::cart(cart_id);
        let mut loaded = Loaded::default();
        self.load(vec![cart_stream.clone()], &mut loaded).await?;
        for _ in 0..LOAD_ROUNDS_MAX {
            let cart = loaded.streams.get(&cart_stream).and_then(|(s, _)| {
                <orderlog_domain::cart::Cart as orderlog_domain::aggregate::Aggregate>::state(s).cloned()
            });
            let then: Vec<StreamId> = cart
                .map(|c| crate::plan::cart_streams(&loaded, &c))
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !loaded.streams.contains_key(s))
                .collect();
            if then.is_empty() {
                break;
            }
            self.load(then, &mut loaded).await?;
        }
        Ok(crate::plan::cart_view(&cart_stream, &loaded, &self.context()))
    }

    fn context(&self) -> crate::plan::Context {
        crate::plan::Context {
            now: self.clock.now(),
            deadlines: self.config.deadlines,
            price_ttl: self.config.price_ttl,
            tax: self.config.tax.clone(),
        }
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
        let command_hash = envelope.command.hash();
        let mut retries = 0;
        loop {
            if let Some(outcome) = self.recorded_outcome(&envelope, &command_hash).await? {
                return Ok(outcome);
            }
            let (decision, loaded) = self.decide(&envelope.command).await?;
            let appends = self.appends(&envelope, &command_hash, &decision, &loaded);
            let mut outcome = CommandOutcome {
                command_id: envelope.command_id.clone(),
                events_appended: decision.event_count() as u32,
                streams: Vec::new(),
                position: None,
                order_id: decision.order_id.clone(),
                repeated: false,
                retries,
            };
            if decision.event_count() == 0 {
                outcome.streams = decision
                    .streams
                    .iter()
                    .map(|(stream, _)| orderlog_store::StreamVersion {
                        stream_id: stream.to_string(),
                        version: loaded.streams[stream].1,
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
                    if let Some(refusal) = decision.refusal {
                        return Err(CommandError::Rejected(refusal));
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
                // Event ids derive from the command id: an id already stored means a
                // concurrent run of this command appended first, having decided over states
                // read a moment apart from ours (so its events differ). Its record is the
                // answer, read at the top of the loop.
                Err(orderlog_store::StoreError::DuplicateEvent { .. }) if retries < self.config.retry_count_max => {
                    retries += 1;
                }
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
        if let Some(refusal) = crate::plan::recorded_refusal(&events)? {
            return Err(CommandError::Rejected(refusal));
        }
        let mut streams: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &events {
            let v = streams.entry(&e.stream_id).or_default();
            *v = (*v).max(e.version);
        }
        let order_id = events.iter().find_map(|e| StreamId::parse(&e.stream_id).and_then(|s| s.order_id()));
        Ok(Some(CommandOutcome {
            command_id: envelope.command_id.clone(),
            events_appended: events.len() as u32,
            streams: streams
                .into_iter()
                .map(|(s, v)| orderlog_store::StreamVersion { stream_id: s.to_string(), version: v })
                .collect(),
            position: events.iter().map(|e| e.position).max(),
            order_id,
            repeated: true,
            retries: 0,
        }))
    }

    fn appends(
        &self,
        envelope: &CommandEnvelope,
        command_hash: &str,
        decision: &Decision,
        loaded: &Loaded,
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
                stream_id: stream_id.to_string(),
                expected: ExpectedVersion::Exact(
                    loaded.streams.get(stream_id).expect("every decided stream was loaded").1,
                ),
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

    /// Loads the streams the command names, then those their states name, and decides.
    async fn decide(&self, command: &Command) -> Result<(Decision, Loaded), CommandError> {
        let mut loaded = Loaded::default();
        self.load(command.streams(), &mut loaded).await?;
        for _ in 0..LOAD_ROUNDS_MAX {
            let then: Vec<StreamId> =
                command.then_streams(&loaded).into_iter().filter(|s| !loaded.streams.contains_key(s)).collect();
            if then.is_empty() {
                break;
            }
            self.load(then, &mut loaded).await?;
        }
        let decision = command.decide_and_schedule(&mut loaded, &self.context())?;
        Ok((decision, loaded))
    }

    /// Loads the streams not loaded yet, in one read: the streams of one round do not depend
    /// on each other.
    async fn load(&self, streams: Vec<StreamId>, loaded: &mut Loaded) -> Result<(), CommandError> {
        let mut wanted: Vec<StreamId> = streams.into_iter().filter(|s| !loaded.streams.contains_key(s)).collect();
        wanted.sort();
        wanted.dedup();
        let states = self.cache.load_many(&*self.store, &wanted).await?;
        for (stream, (state, version, touched)) in wanted.into_iter().zip(states) {
            if let Some(at) = touched {
                loaded.touched.insert(stream.clone(), at);
            }
            loaded.streams.insert(stream, (state, version));
        }
        Ok(())
    }
}

/// A spread for retry pauses that differs between commands and between retries, without a
/// random number source.
fn jitter(command_id: &str, retries: u32) -> u64 {
    let digest = Sha256::digest(format!("{command_id}\n{retries}").as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
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
