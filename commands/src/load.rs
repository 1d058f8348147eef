//! Loading aggregates from the log, with a bounded cache of folded states: the log is
//! append-only, so the state at version `v` never changes, and only the events after `v`
//! need reading.

use std::collections::HashMap;
use std::sync::Mutex;

use orderlog_domain::cart::{Cart, CartState};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::order::{Order, OrderState};
use orderlog_domain::shipment::{Shipment, ShipmentState};
use orderlog_domain::stock::{Stock, StockState};
use orderlog_domain::Decider;
use orderlog_store::{EventStore, RecordedEvent, READ_EVENTS_MAX};

use crate::CommandError;

/// Folded states kept at the most; the cache is emptied when it would grow past this.
pub const CACHE_STREAMS_MAX: usize = 20_000;

#[derive(Clone)]
pub(crate) enum AnyState {
    Cart(Box<CartState>),
    Order(Box<OrderState>),
    Stock(Box<StockState>),
    Shipment(Box<ShipmentState>),
}

/// A decider whose state can sit in the cache and whose events can be told apart.
pub(crate) trait Loadable: Decider
where
    Self::Event: TryFrom<DomainEvent>,
    Self::State: Clone,
{
    fn wrap(state: Self::State) -> AnyState;
    fn unwrap(state: AnyState) -> Option<Self::State>;
}

macro_rules! loadable {
    ($decider:ident, $variant:ident) => {
        impl Loadable for $decider {
            fn wrap(state: Self::State) -> AnyState {
                AnyState::$variant(Box::new(state))
            }
            fn unwrap(state: AnyState) -> Option<Self::State> {
                match state {
                    AnyState::$variant(s) => Some(*s),
                    _ => None,
                }
            }
        }
    };
}

loadable!(Cart, Cart);
loadable!(Order, Order);
loadable!(Stock, Stock);
loadable!(Shipment, Shipment);

#[derive(Default)]
pub(crate) struct StateCache {
    streams: Mutex<HashMap<String, (u64, AnyState)>>,
}

impl StateCache {
    /// The state of `stream` and the version it was folded up to.
    pub async fn load<D>(&self, store: &dyn EventStore, stream: &str) -> Result<(D::State, u64), CommandError>
    where
        D: Loadable,
        D::Event: TryFrom<DomainEvent>,
        D::State: Clone,
    {
        let cached = self.streams.lock().expect("cache lock").get(stream).cloned();
        let (mut state, mut version) = match cached.and_then(|(v, s)| D::unwrap(s).map(|s| (s, v))) {
            Some((s, v)) => (s, v),
            None => (D::State::default(), 0),
        };
        let start = version;
        loop {
            let page = store.read_stream(stream, version + 1, READ_EVENTS_MAX).await?;
            let full = page.len() == READ_EVENTS_MAX as usize;
            for recorded in &page {
                let event = decode::<D>(recorded)?;
                state = D::evolve(state, &event);
                version = recorded.version;
            }
            if !full {
                break;
            }
        }
        if version > start {
            let mut streams = self.streams.lock().expect("cache lock");
            if streams.len() >= CACHE_STREAMS_MAX && !streams.contains_key(stream) {
                streams.clear();
            }
            let newer = streams.get(stream).is_none_or(|(v, _)| *v < version);
            if newer {
                streams.insert(stream.to_string(), (version, D::wrap(state.clone())));
            }
        }
        Ok((state, version))
    }
}

/// Decodes a recorded event as an event of `D`, naming the position and type when it
/// cannot be.
pub(crate) fn decode<D>(recorded: &RecordedEvent) -> Result<D::Event, CommandError>
where
    D: Decider,
    D::Event: TryFrom<DomainEvent>,
{
    let unreadable = |detail: String| CommandError::UnreadableEvent {
        position: recorded.position,
        stream_id: recorded.stream_id.clone(),
        event_type: recorded.event_type.clone(),
        detail,
    };
    let event = DomainEvent::decode(&recorded.event_type, recorded.schema_version, &recorded.payload)
        .map_err(|e| unreadable(e.to_string()))?;
    let kind = event.kind();
    D::Event::try_from(event).map_err(|_| unreadable(format!("a {kind:?} event does not belong in this stream")))
}
