//! The registry of aggregates: one list names each aggregate's kind, decider, events,
//! state and stream prefix, and everything that dispatches over aggregates (stored events
//! of any kind, folded states of any kind, stream ids) is generated from it. A new
//! aggregate is one line in [`aggregates!`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cart::{Cart, CartEvent, CartState};
use crate::customer::{CustomerProfile, CustomerProfileEvent, CustomerProfileState};
use crate::deadline::{Deadline, DeadlineEvent, DeadlineId, DeadlineState};
use crate::order::{Order, OrderEvent, OrderState};
use crate::payment::{Payment, PaymentEvent, PaymentState};
use crate::price_list::{PriceIndex, PriceIndexEvent, PriceIndexState, PriceList, PriceListEvent, PriceListState};
use crate::product::{
    Product, ProductEvent, ProductIndex, ProductIndexEvent, ProductIndexState, ProductState, SkuOwner, SkuOwnerEvent,
    SkuOwnerState,
};
use crate::promotion::{
    Promotion, PromotionEvent, PromotionIndex, PromotionIndexEvent, PromotionIndexState, PromotionState,
};
use crate::shipment::{Shipment, ShipmentEvent, ShipmentState};
use crate::shipping::{
    ShippingIndex, ShippingIndexEvent, ShippingIndexState, ShippingZone, ShippingZoneEvent, ShippingZoneState,
};
use crate::stock::{Stock, StockEvent, StockState};
use crate::tax::{TaxRegion, TaxRegionEvent, TaxRegionState};
use crate::{
    CartId, Currency, CustomerId, Decider, LocationId, OrderId, PriceListId, ProductId, PromotionCode, ShipmentId,
    ShippingZoneId, Sku, StockKey,
};

/// A decider registered in [`aggregates!`]: its kind, and its state inside [`AnyState`].
pub trait Aggregate: Decider<Event: TryFrom<DomainEvent> + Into<DomainEvent>, State: Clone> {
    const KIND: AggregateKind;
    fn state(state: &AnyState) -> Option<&Self::State>;
}

macro_rules! aggregates {
    ($($kind:ident: $decider:ident, $event:ident, $state:ident, $prefix:literal;)+) => {
        /// Which aggregate a stream or an event belongs to.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum AggregateKind {
            $($kind),+
        }

        impl AggregateKind {
            pub const ALL: &'static [AggregateKind] = &[$(AggregateKind::$kind),+];

            /// The stream prefix: a stream id is `{prefix}-{id}`.
            pub fn prefix(self) -> &'static str {
                match self {
                    $(AggregateKind::$kind => $prefix),+
                }
            }

            /// Every stored type name of this aggregate's events.
            pub fn event_types(self) -> &'static [&'static str] {
                match self {
                    $(AggregateKind::$kind => $event::TYPES),+
                }
            }
        }

        /// Any event of any aggregate.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum DomainEvent {
            $($kind($event)),+
        }

        impl DomainEvent {
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(DomainEvent::$kind(e) => e.event_type()),+
                }
            }

            pub fn kind(&self) -> AggregateKind {
                match self {
                    $(DomainEvent::$kind(_) => AggregateKind::$kind),+
                }
            }

            /// The event as serde writes it: `{"Type": {fields}}`.
            pub(crate) fn to_tagged(&self) -> serde_json::Result<serde_json::Value> {
                match self {
                    $(DomainEvent::$kind(e) => serde_json::to_value(e)),+
                }
            }

            /// Reads an event of `kind` from its tagged form.
            pub(crate) fn deserialize_as<'de, D: serde::Deserializer<'de>>(
                kind: AggregateKind,
                tagged: D,
            ) -> Result<DomainEvent, D::Error> {
                match kind {
                    $(AggregateKind::$kind => $event::deserialize(tagged).map(DomainEvent::$kind)),+
                }
            }
        }

        $(
            impl From<$event> for DomainEvent {
                fn from(event: $event) -> DomainEvent {
                    DomainEvent::$kind(event)
                }
            }

            impl TryFrom<DomainEvent> for $event {
                type Error = DomainEvent;
                fn try_from(event: DomainEvent) -> Result<$event, DomainEvent> {
                    match event {
                        DomainEvent::$kind(e) => Ok(e),
                        other => Err(other),
                    }
                }
            }

            impl Aggregate for $decider {
                const KIND: AggregateKind = AggregateKind::$kind;
                fn state(state: &AnyState) -> Option<&$state> {
                    #[allow(unreachable_patterns)]
                    match state {
                        AnyState::$kind(s) => Some(s),
                        _ => None,
                    }
                }
            }
        )+

        /// The folded state of any aggregate.
        #[derive(Clone, Debug, PartialEq)]
        pub enum AnyState {
            $($kind(Box<$state>)),+
        }

        impl AnyState {
            /// The state before the first event.
            pub fn initial(kind: AggregateKind) -> AnyState {
                match kind {
                    $(AggregateKind::$kind => AnyState::$kind(Box::default())),+
                }
            }

            /// The state after `event`; the event's kind when it belongs to another aggregate.
            pub fn evolve(self, event: DomainEvent) -> Result<AnyState, AggregateKind> {
                match (self, event) {
                    $((AnyState::$kind(s), DomainEvent::$kind(e)) => Ok(AnyState::$kind(Box::new($decider::evolve(*s, &e)))),)+
                    #[allow(unreachable_patterns)]
                    (_, e) => Err(e.kind()),
                }
            }

            pub fn to_json(&self) -> serde_json::Value {
                match self {
                    $(AnyState::$kind(s) => serde_json::to_value(s)),+
                }
                .unwrap_or(serde_json::Value::Null)
            }
        }
    };
}

aggregates! {
    Cart: Cart, CartEvent, CartState, "cart";
    Order: Order, OrderEvent, OrderState, "order";
    Stock: Stock, StockEvent, StockState, "stock";
    Shipment: Shipment, ShipmentEvent, ShipmentState, "shipment";
    Deadline: Deadline, DeadlineEvent, DeadlineState, "deadline";
    Product: Product, ProductEvent, ProductState, "product";
    SkuOwner: SkuOwner, SkuOwnerEvent, SkuOwnerState, "sku";
    ProductIndex: ProductIndex, ProductIndexEvent, ProductIndexState, "products";
    PriceList: PriceList, PriceListEvent, PriceListState, "pricelist";
    PriceIndex: PriceIndex, PriceIndexEvent, PriceIndexState, "prices";
    Promotion: Promotion, PromotionEvent, PromotionState, "promotion";
    PromotionIndex: PromotionIndex, PromotionIndexEvent, PromotionIndexState, "promotions";
    TaxRegion: TaxRegion, TaxRegionEvent, TaxRegionState, "taxregion";
    ShippingZone: ShippingZone, ShippingZoneEvent, ShippingZoneState, "shippingzone";
    ShippingIndex: ShippingIndex, ShippingIndexEvent, ShippingIndexState, "shipping";
    CustomerProfile: CustomerProfile, CustomerProfileEvent, CustomerProfileState, "customer";
    Payment: Payment, PaymentEvent, PaymentState, "payment";
}

/// A stream's id: the aggregate it belongs to and that aggregate's id, written
/// `{prefix}-{id}` (a stock item's id is `{sku}@{location}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    kind: AggregateKind,
    id: String,
}

impl StreamId {
    pub fn cart(id: &CartId) -> StreamId {
        StreamId { kind: AggregateKind::Cart, id: id.to_string() }
    }

    pub fn order(id: &OrderId) -> StreamId {
        StreamId { kind: AggregateKind::Order, id: id.to_string() }
    }

    pub fn stock(key: &StockKey) -> StreamId {
        StreamId { kind: AggregateKind::Stock, id: format!("{}@{}", key.sku, key.location) }
    }

    pub fn shipment(id: &ShipmentId) -> StreamId {
        StreamId { kind: AggregateKind::Shipment, id: id.to_string() }
    }

    pub fn deadline(id: &DeadlineId) -> StreamId {
        StreamId { kind: AggregateKind::Deadline, id: id.to_string() }
    }

    pub fn product(id: &ProductId) -> StreamId {
        StreamId { kind: AggregateKind::Product, id: id.to_string() }
    }

    /// The stream that says which product a SKU belongs to.
    pub fn sku_owner(sku: &Sku) -> StreamId {
        StreamId { kind: AggregateKind::SkuOwner, id: sku.to_string() }
    }

    pub fn price_list(id: &PriceListId) -> StreamId {
        StreamId { kind: AggregateKind::PriceList, id: id.to_string() }
    }

    /// The index of the price lists of one currency.
    pub fn price_index(currency: Currency) -> StreamId {
        StreamId { kind: AggregateKind::PriceIndex, id: currency.code().to_string() }
    }

    pub fn promotion(code: &PromotionCode) -> StreamId {
        StreamId { kind: AggregateKind::Promotion, id: code.to_string() }
    }

    /// The index of every product.
    pub fn products() -> StreamId {
        StreamId { kind: AggregateKind::ProductIndex, id: "all".to_string() }
    }

    /// The index of automatic promotions.
    pub fn automatic_promotions() -> StreamId {
        StreamId { kind: AggregateKind::PromotionIndex, id: "automatic".to_string() }
    }

    pub fn tax_region(id: &crate::tax::TaxRegionId) -> StreamId {
        StreamId { kind: AggregateKind::TaxRegion, id: id.to_string() }
    }

    pub fn shipping_zone(id: &ShippingZoneId) -> StreamId {
        StreamId { kind: AggregateKind::ShippingZone, id: id.to_string() }
    }

    /// Which zone serves each country in one currency.
    pub fn shipping_index(currency: Currency) -> StreamId {
        StreamId { kind: AggregateKind::ShippingIndex, id: currency.code().to_string() }
    }

    pub fn payment(id: &crate::PaymentId) -> StreamId {
        StreamId { kind: AggregateKind::Payment, id: id.to_string() }
    }

    pub fn customer(id: &CustomerId) -> StreamId {
        StreamId { kind: AggregateKind::CustomerProfile, id: id.to_string() }
    }

    /// Reads a stream id; `None` when it names no aggregate or its id is not valid.
    pub fn parse(stream_id: &str) -> Option<StreamId> {
        let (prefix, id) = stream_id.split_once('-')?;
        let kind = *AggregateKind::ALL.iter().find(|k| k.prefix() == prefix)?;
        let stream = StreamId { kind, id: id.to_string() };
        let valid = match kind {
            AggregateKind::Cart => CartId::parse(id).is_ok(),
            AggregateKind::Order => stream.order_id().is_some(),
            AggregateKind::Stock => stream.stock_key().is_some(),
            AggregateKind::Shipment => ShipmentId::parse(id).is_ok(),
            AggregateKind::Deadline => DeadlineId::parse(id).is_ok(),
            AggregateKind::Product => ProductId::parse(id).is_ok(),
            AggregateKind::SkuOwner => Sku::parse(id).is_ok(),
            AggregateKind::PriceList => PriceListId::parse(id).is_ok(),
            AggregateKind::PriceIndex => Currency::parse(id).is_ok(),
            AggregateKind::Promotion => PromotionCode::parse(id).is_ok(),
            AggregateKind::PromotionIndex => id == "automatic",
            AggregateKind::ProductIndex => id == "all",
            AggregateKind::TaxRegion => crate::tax::TaxRegionId::parse(id).is_ok(),
            AggregateKind::ShippingZone => ShippingZoneId::parse(id).is_ok(),
            AggregateKind::ShippingIndex => Currency::parse(id).is_ok(),
            AggregateKind::CustomerProfile => CustomerId::parse(id).is_ok(),
            AggregateKind::Payment => crate::PaymentId::parse(id).is_ok(),
        };
        valid.then_some(stream)
    }

    pub fn kind(&self) -> AggregateKind {
        self.kind
    }

    /// The aggregate a stream id names by its prefix, without reading the rest.
    pub fn kind_of(stream_id: &str) -> Option<AggregateKind> {
        let (prefix, id) = stream_id.split_once('-')?;
        AggregateKind::ALL.iter().copied().find(|k| k.prefix() == prefix).filter(|_| !id.is_empty())
    }

    /// The aggregate's id, without the prefix.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The order this stream is, if it is an order's.
    pub fn order_id(&self) -> Option<OrderId> {
        (self.kind == AggregateKind::Order).then(|| OrderId::parse(&self.id).ok()).flatten()
    }

    /// The deadline this stream is, if it is a deadline's.
    pub fn deadline_id(&self) -> Option<DeadlineId> {
        (self.kind == AggregateKind::Deadline).then(|| DeadlineId::parse(&self.id).ok()).flatten()
    }

    /// The stock item this stream is, if it is a stock item's.
    pub fn stock_key(&self) -> Option<StockKey> {
        let (sku, location) = self.id.split_once('@').filter(|_| self.kind == AggregateKind::Stock)?;
        Some(StockKey::new(Sku::parse(sku).ok()?, LocationId::parse(location).ok()?))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.kind.prefix(), self.id)
    }
}

impl PartialEq<str> for StreamId {
    fn eq(&self, other: &str) -> bool {
        other.strip_prefix(self.kind.prefix()).and_then(|rest| rest.strip_prefix('-')) == Some(self.id.as_str())
    }
}

impl PartialEq<&str> for StreamId {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

impl From<StreamId> for String {
    fn from(stream: StreamId) -> String {
        stream.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_read_back() {
        let key = StockKey::new(Sku::parse("mug").unwrap(), LocationId::parse("berlin").unwrap());
        let stock = StreamId::stock(&key);
        assert_eq!(stock.to_string(), "stock-mug@berlin");
        assert_eq!(StreamId::parse("stock-mug@berlin"), Some(stock.clone()));
        assert_eq!(stock.stock_key(), Some(key));
        assert_eq!(stock.order_id(), None);
        assert_eq!(StreamId::cart(&CartId::parse("c1").unwrap()).to_string(), "cart-c1");
        let order = StreamId::parse("order-o-1").unwrap();
        assert_eq!((order.kind(), order.id()), (AggregateKind::Order, "o-1"));
        assert_eq!(order.order_id(), Some(OrderId::parse("o-1").unwrap()));
        for bad in ["cart-", "invoice-1", "stock-mug", "order", "order-a b"] {
            assert_eq!(StreamId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn type_names_are_unique_across_aggregates() {
        let mut all: Vec<&str> = AggregateKind::ALL.iter().flat_map(|k| k.event_types().iter().copied()).collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}
