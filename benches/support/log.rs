//! A log for the benches that read one: half stock events (100-event appends over 5 000
//! stock items), half order lifecycles (placed, authorized, confirmed, captured, shipped,
//! delivered, completed; one append per order).
#![allow(dead_code)]

use std::time::Instant;

use chrono::Utc;
use orderlog_domain::cart::{Customer, ShippingMethod};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::order::{LineQuantity, OrderEvent, OrderLine, OrderTotals, PlacedOrder};
use orderlog_domain::stock::StockEvent;
use orderlog_domain::{CartId, Currency, LocationId, Money, OrderId, ShipmentId, Sku};
use orderlog_store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use uuid::Uuid;

const STOCK_ITEMS: u64 = 5_000;
const APPEND_EVENTS: u64 = 100;

pub fn envelope(domain: DomainEvent, command: String) -> NewEvent {
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: domain.event_type().into(),
        schema_version: domain.schema_version(),
        payload: domain.payload(),
        metadata: Metadata {
            actor: "bench".into(),
            command_id: command,
            command_hash: None,
            correlation_id: "bench".into(),
            causation_id: None,
        },
        recorded_at: Utc::now(),
    }
}

/// The seven events of one order's life.
pub fn order_life(n: u64) -> Vec<NewEvent> {
    let eur = Currency::parse("EUR").unwrap();
    let m = |a| Money::new(a, eur);
    let sku = Sku::parse(format!("sku{}", n % 50)).unwrap();
    let placed = PlacedOrder {
        cart_id: CartId::parse(format!("c{n}")).unwrap(),
        customer: Customer::Guest { email: "g@example.com".into() },
        email: "g@example.com".into(),
        currency: eur,
        lines: vec![OrderLine {
            sku: sku.clone(),
            location: LocationId::parse("loc1").unwrap(),
            quantity: 2,
            unit_price: m(1_000),
            pricing: None,
            discount: None,
            tax: None,
        }],
        discount_code: None,
        tax_rate_bps: 0,
        promotions: vec![],
        totals: OrderTotals {
            subtotal: m(2_000),
            discount: m(0),
            shipping: m(0),
            tax: m(0),
            total: m(2_000),
            tax_included: None,
        },
        shipping_address: Some(orderlog_domain::testing::address()),
        billing_address: None,
        shipping_method: Some(ShippingMethod { id: "dhl".into(), price: m(0) }),
        shipping: None,
    };
    let shipment = ShipmentId::parse(format!("s{n}")).unwrap();
    let lines = vec![LineQuantity { sku, quantity: 2 }];
    [
        OrderEvent::OrderPlaced { order: Box::new(placed) },
        OrderEvent::PaymentAuthorized {
            amount: m(2_000),
            provider_ref: format!("pi{n}"),
            provider_event_id: format!("a{n}"),
        },
        OrderEvent::OrderConfirmed {},
        OrderEvent::PaymentCaptured { amount: m(2_000), provider_event_id: format!("c{n}") },
        OrderEvent::LinesShipped { shipment_id: shipment.clone(), lines: lines.clone() },
        OrderEvent::LinesDelivered { shipment_id: shipment, lines },
        OrderEvent::OrderCompleted {},
    ]
    .into_iter()
    .map(|e| envelope(DomainEvent::Order(e), format!("order{n}")))
    .collect()
}

pub fn event(i: u64) -> NewEvent {
    let order = OrderId::parse(format!("o{i}")).unwrap();
    let stock = match i % 4 {
        0 => StockEvent::StockReceived { units: 5, reference: None },
        1 => StockEvent::StockReserved { order_id: order, quantity: 2 },
        2 => StockEvent::ReservationReleased { order_id: order, quantity: 1 },
        _ => StockEvent::IncomingExpected { quantity: 3 },
    };
    envelope(DomainEvent::Stock(stock), format!("c{}", i / APPEND_EVENTS))
}

pub async fn fill(log: &dyn EventStore, events: u64) {
    let mut versions = vec![0u64; STOCK_ITEMS as usize];
    let started = Instant::now();
    for n in 0..events / 2 / 7 {
        let append = vec![StreamAppend {
            stream_id: format!("order-o{n}"),
            expected: ExpectedVersion::NoStream,
            events: order_life(n),
        }];
        log.append(append).await.unwrap();
    }
    for append in 0..events / 2 / APPEND_EVENTS {
        let item = (append % STOCK_ITEMS) as usize;
        let batch = (0..APPEND_EVENTS).map(|i| event(append * APPEND_EVENTS + i)).collect();
        let stream = format!("stock-sku{item}@loc{}", item % 3);
        log.append(vec![StreamAppend {
            stream_id: stream,
            expected: ExpectedVersion::Exact(versions[item]),
            events: batch,
        }])
        .await
        .unwrap();
        versions[item] += APPEND_EVENTS;
    }
    eprintln!("wrote {events} events in {:.1} s", started.elapsed().as_secs_f64());
}
