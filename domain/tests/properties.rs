//! Properties that hold for every command sequence: stock never goes below zero and never
//! ships more than was reserved; an order never moves backwards and its payments stay
//! within bounds; replaying the stored events gives the live state; every event survives
//! its stored form.

use chrono::{TimeZone, Utc};
use orderlog_domain::cart::{Cart, CartCommand, Customer, Discount, DiscountKind, ShippingMethod};
use orderlog_domain::codec::DomainEvent;
use orderlog_domain::order::{LineQuantity, Order, OrderAction, OrderLine, OrderTotals, PlacedOrder, ReturnedLine};
use orderlog_domain::shipment::{CarrierEventKind, Shipment, ShipmentCommand};
use orderlog_domain::stock::{AdjustmentReason, Stock, StockAction};
use orderlog_domain::testing::{CartStep, PricedCart};
use orderlog_domain::{CartId, Currency, Decider, LocationId, Money, OrderId, ReturnId, ShipmentId, Sku};
use proptest::prelude::*;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}
fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}
fn sku(i: u8) -> Sku {
    Sku::parse(["mug", "tea", "pot"][i as usize % 3]).unwrap()
}
fn order_id(i: u8) -> OrderId {
    OrderId::parse(format!("o{i}")).unwrap()
}
fn shipment_id(i: u8) -> ShipmentId {
    ShipmentId::parse(format!("s{i}")).unwrap()
}

/// Runs commands one at a time, keeping accepted events; returns every intermediate state.
fn run<D: Decider>(commands: &[D::Command]) -> (Vec<D::State>, Vec<D::Event>)
where
    D::State: Clone,
    D::Event: Clone,
{
    let mut state = D::State::default();
    let mut states = vec![state.clone()];
    let mut events = Vec::new();
    for command in commands {
        if let Ok(new) = D::decide(command, &state) {
            for e in &new {
                state = D::evolve(state, e);
            }
            events.extend(new);
            states.push(state.clone());
        }
    }
    (states, events)
}

/// Stores each event in its stored form and reads it back.
fn through_storage<E>(events: &[E]) -> Vec<E>
where
    E: Clone + Into<DomainEvent> + TryFrom<DomainEvent>,
    <E as TryFrom<DomainEvent>>::Error: std::fmt::Debug,
{
    events
        .iter()
        .map(|e| {
            let domain: DomainEvent = e.clone().into();
            let back = DomainEvent::decode(domain.event_type(), domain.schema_version(), &domain.payload()).unwrap();
            assert_eq!(back, domain);
            E::try_from(back).unwrap()
        })
        .collect()
}

fn stock_command() -> impl Strategy<Value = StockAction> {
    let reason = prop_oneof![
        Just(AdjustmentReason::Correction),
        Just(AdjustmentReason::CycleCount),
        Just(AdjustmentReason::Damage),
        Just(AdjustmentReason::Shrinkage),
        Just(AdjustmentReason::ReturnToStock),
    ];
    prop_oneof![
        (0u32..8).prop_map(|quantity| StockAction::Receive { quantity, reference: None }),
        (-6i64..6, reason, proptest::option::of(0i64..10))
            .prop_map(|(delta, reason, expected_on_hand)| StockAction::Adjust { delta, reason, expected_on_hand }),
        (0u8..5, 0u32..6).prop_map(|(o, quantity)| StockAction::Reserve { order_id: order_id(o), quantity }),
        (0u8..5).prop_map(|o| StockAction::Release { order_id: order_id(o) }),
        (0u8..5, 0u8..4, 0u32..4).prop_map(|(o, s, quantity)| StockAction::Dispatch {
            order_id: order_id(o),
            shipment_id: shipment_id(s),
            quantity
        }),
        (0u32..6).prop_map(|quantity| StockAction::SetSafetyStock { quantity }),
        (0u32..6).prop_map(|quantity| StockAction::ExpectIncoming { quantity }),
    ]
}

fn placed_order() -> PlacedOrder {
    let m = |a| Money::new(a, eur());
    PlacedOrder {
        cart_id: CartId::parse("c1").unwrap(),
        customer: Customer::Guest { email: "ann@example.com".into() },
        email: "ann@example.com".into(),
        currency: eur(),
        lines: vec![
            OrderLine {
                sku: sku(0),
                location: LocationId::parse("berlin").unwrap(),
                quantity: 2,
                unit_price: m(500),
                pricing: None,
                discount: None,
                tax: None,
            },
            OrderLine {
                sku: sku(1),
                location: LocationId::parse("berlin").unwrap(),
                quantity: 1,
                unit_price: m(1_000),
                pricing: None,
                discount: None,
                tax: None,
            },
        ],
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
        shipping_address: Some(address()),
        billing_address: None,
        shipping_method: Some(ShippingMethod { id: "dhl".into(), price: m(0) }),
        shipping: None,
    }
}

use orderlog_domain::testing::address;

fn lines() -> impl Strategy<Value = Vec<LineQuantity>> {
    proptest::collection::vec((0u8..3, 0u32..3).prop_map(|(s, quantity)| LineQuantity { sku: sku(s), quantity }), 1..3)
}

fn order_command() -> impl Strategy<Value = OrderAction> {
    let event_id = (0u8..6).prop_map(|i| format!("evt_{i}"));
    let amount = prop_oneof![Just(2_000i64), -5i64..2_500].prop_map(|a| Money::new(a, eur()));
    prop_oneof![
        1 => Just(OrderAction::Place { order: Box::new(placed_order()) }),
        3 => (amount.clone(), event_id.clone()).prop_map(|(amount, provider_event_id)| OrderAction::AuthorizePayment {
            amount,
            provider_ref: "pi_1".into(),
            provider_event_id
        }),
        3 => (amount.clone(), event_id.clone()).prop_map(|(amount, provider_event_id)| OrderAction::CapturePayment { amount, provider_event_id }),
        1 => event_id.clone().prop_map(|provider_event_id| OrderAction::VoidPayment { provider_event_id }),
        2 => (amount, event_id.clone()).prop_map(|(amount, provider_event_id)| OrderAction::RefundPayment { amount, provider_event_id }),
        1 => event_id.prop_map(|provider_event_id| OrderAction::RecordPaymentFailure { reason: "declined".into(), provider_event_id }),
        3 => (0u8..4, lines()).prop_map(|(s, lines)| OrderAction::RecordShipped { shipment_id: shipment_id(s), lines }),
        3 => (0u8..4, lines()).prop_map(|(s, lines)| OrderAction::RecordDelivered { shipment_id: shipment_id(s), lines }),
        1 => Just(OrderAction::Complete {}),
        2 => Just(OrderAction::PlaceHold { reason: "fraud check".into() }),
        2 => Just(OrderAction::ReleaseHold {}),
        1 => Just(OrderAction::Cancel { reason: "asked".into() }),
        1 => Just(OrderAction::Expire {}),
        2 => (0u8..3, lines()).prop_map(|(r, lines)| OrderAction::RequestReturn {
            return_id: ReturnId::parse(format!("r{r}")).unwrap(),
            lines,
            reason: "too small".into()
        }),
        2 => (0u8..3, lines(), any::<bool>()).prop_map(|(r, lines, restock)| OrderAction::ReceiveReturn {
            return_id: ReturnId::parse(format!("r{r}")).unwrap(),
            lines: lines.into_iter().map(|l| ReturnedLine { sku: l.sku, quantity: l.quantity, restock }).collect()
        }),
    ]
}

fn cart_command() -> impl Strategy<Value = CartStep> {
    let currency = prop_oneof![4 => Just(eur()), 1 => Just(usd())];
    let price = (currency.clone(), -10i64..5_000).prop_map(|(c, a)| Money::new(a, c));
    let command = prop_oneof![
        1 => currency.prop_map(|currency| CartCommand::Create { currency, customer: Customer::Guest { email: "ann@example.com".into() }, channel: None }),
        2 => (0u8..3, 0u32..4).prop_map(|(s, quantity)| CartCommand::ChangeQuantity { sku: sku(s), quantity }),
        1 => (0u8..3).prop_map(|s| CartCommand::RemoveItem { sku: sku(s) }),
        1 => (0u32..12_000).prop_map(|bp| CartCommand::ApplyDiscount {
            discount: Discount { code: "PCT".into(), kind: DiscountKind::Percentage { basis_points: bp } }
        }),
        1 => price.clone().prop_map(|amount| CartCommand::ApplyDiscount {
            discount: Discount { code: "FIX".into(), kind: DiscountKind::Fixed { amount } }
        }),
        1 => Just(CartCommand::RemoveDiscount {}),
        1 => Just(CartCommand::SetContact { email: "bob@example.org".into() }),
        1 => Just(CartCommand::SetShippingAddress { address: address() }),
        1 => price.clone().prop_map(|price| CartCommand::SelectShippingMethod { method: ShippingMethod { id: "dhl".into(), price } }),
        1 => Just(CartCommand::Expire {}),
    ];
    prop_oneof![
        11 => command.prop_map(CartStep::Do),
        4 => (0u8..3, 0u32..4, price.clone()).prop_map(|(s, quantity, price)| CartStep::Add { sku: sku(s), quantity, price }),
        2 => (0u8..3, price).prop_map(|(s, price)| CartStep::Reprice { sku: sku(s), price }),
    ]
}

fn shipment_command() -> impl Strategy<Value = ShipmentCommand> {
    let kind = prop_oneof![
        Just(CarrierEventKind::InTransit),
        Just(CarrierEventKind::Delivered),
        Just(CarrierEventKind::DeliveryFailed { reason: "not home".into() }),
    ];
    prop_oneof![
        1 => lines().prop_map(|lines| ShipmentCommand::Create {
            order_id: order_id(1),
            location: LocationId::parse("berlin").unwrap(),
            lines
        }),
        1 => Just(ShipmentCommand::Pack {}),
        1 => Just(ShipmentCommand::Ship { carrier: "DHL".into(), tracking_number: "T1".into() }),
        3 => (0u8..5, kind, 0i64..5).prop_map(|(i, kind, day)| ShipmentCommand::RecordCarrierEvent {
            event_id: format!("c{i}"),
            kind,
            occurred_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::days(day)
        }),
        1 => Just(ShipmentCommand::Cancel { reason: "merged".into() }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// (a) No command sequence drives available or reserved stock below zero, or ships
    /// more than was reserved.
    #[test]
    fn stock_never_goes_below_zero_nor_ships_more_than_reserved(commands in proptest::collection::vec(stock_command(), 0..60)) {
        let (states, _) = run::<Stock>(&commands);
        for s in &states {
            prop_assert!(s.available() >= 0, "available {} in {s:?}", s.available());
            prop_assert!(s.reserved >= 0, "reserved {} in {s:?}", s.reserved);
            prop_assert!(s.on_hand >= 0, "on hand {} in {s:?}", s.on_hand);
            let outstanding: i64 = s.reservations.values()
                .filter(|r| !r.released)
                .map(|r| i64::from(r.quantity - r.dispatched))
                .sum();
            prop_assert_eq!(s.reserved, outstanding);
            for r in s.reservations.values() {
                prop_assert!(r.dispatched <= r.quantity, "shipped {} of {} reserved", r.dispatched, r.quantity);
            }
        }
    }

    /// (b) An order's state never goes backwards; captured ≤ authorized; refunded ≤ captured;
    /// shipped ≤ ordered and delivered ≤ shipped on every line; returned ≤ delivered; nothing
    /// ships while the order is on hold.
    #[test]
    fn orders_never_go_backwards_and_payments_stay_within_bounds(commands in proptest::collection::vec(order_command(), 0..60)) {
        let mut all = vec![OrderAction::Place { order: Box::new(placed_order()) }];
        all.extend(commands);
        let (states, _) = run::<Order>(&all);
        for pair in states.windows(2) {
            prop_assert!(pair[1].status >= pair[0].status, "{:?} → {:?}", pair[0].status, pair[1].status);
            if pair[0].status.is_terminal() {
                prop_assert_eq!(pair[1].status, pair[0].status);
            }
        }
        for pair in states.windows(2) {
            if pair[0].hold.is_some() {
                for (sku, before) in &pair[0].lines {
                    prop_assert_eq!(pair[1].lines[sku].shipped, before.shipped, "{} shipped while on hold", sku);
                }
            }
        }
        for s in &states {
            let p = &s.payment;
            prop_assert!(p.captured <= p.authorized, "captured {} > authorized {}", p.captured, p.authorized);
            prop_assert!(p.refunded <= p.captured, "refunded {} > captured {}", p.refunded, p.captured);
            for l in s.lines.values() {
                prop_assert!(l.shipped <= l.ordered && l.delivered <= l.shipped && l.return_requested <= l.delivered && l.returned <= l.return_requested, "{l:?}");
            }
        }
    }

    /// (c) Folding every stored event from the initial state equals the state reached by
    /// deciding and evolving one command at a time; (d) every event survives its stored form.
    #[test]
    fn replaying_stored_events_gives_the_live_state(
        carts in proptest::collection::vec(cart_command(), 0..40),
        orders in proptest::collection::vec(order_command(), 0..40),
        stocks in proptest::collection::vec(stock_command(), 0..40),
        shipments in proptest::collection::vec(shipment_command(), 0..40),
    ) {
        let (states, events) = run::<PricedCart>(&carts);
        prop_assert_eq!(&Cart::fold(&through_storage(&events)), states.last().unwrap());
        let mut all = vec![OrderAction::Place { order: Box::new(placed_order()) }];
        all.extend(orders);
        let (states, events) = run::<Order>(&all);
        prop_assert_eq!(&Order::fold(&through_storage(&events)), states.last().unwrap());
        let (states, events) = run::<Stock>(&stocks);
        prop_assert_eq!(&Stock::fold(&through_storage(&events)), states.last().unwrap());
        let (states, events) = run::<Shipment>(&shipments);
        prop_assert_eq!(&Shipment::fold(&through_storage(&events)), states.last().unwrap());
    }

    /// Cart totals are never negative, whatever the discounts.
    #[test]
    fn cart_totals_are_never_negative(commands in proptest::collection::vec(cart_command(), 0..40)) {
        let (states, _) = run::<PricedCart>(&commands);
        for s in states.iter().filter(|s| s.currency.is_some()) {
            let t = s.totals().unwrap();
            prop_assert!(t.subtotal.amount >= 0 && t.discount.amount >= 0 && t.shipping.amount >= 0);
            prop_assert!(t.subtotal.amount - t.discount.amount >= 0);
        }
    }
}
