//! Amounts and quantities at the edges of their types, through every command of every
//! aggregate and through checkout: nothing panics (the tests build with overflow checks),
//! nothing wraps, and every invariant holds — captured ≤ authorized, refunded ≤ captured,
//! stock counts and cart totals never negative.

use std::collections::BTreeMap;

use orderlog_domain::cart::{Cart, CartCommand, Customer, Discount, DiscountKind, ShippingMethod};
use orderlog_domain::checkout::{decide_checkout, CheckoutCommand};
use orderlog_domain::order::{LineQuantity, Order, OrderAction, OrderLine, OrderTotals, PlacedOrder, ReturnedLine};
use orderlog_domain::stock::{AdjustmentReason, Stock, StockAction, StockState};
use orderlog_domain::{CartId, Currency, Decider, LocationId, Money, OrderId, ReturnId, ShipmentId, Sku};
use proptest::prelude::*;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}
fn sku(i: u8) -> Sku {
    Sku::parse(["mug", "tea"][i as usize % 2]).unwrap()
}
fn berlin() -> LocationId {
    LocationId::parse("berlin").unwrap()
}

/// Amounts that sit on or next to every edge of `i64`, and ordinary ones.
fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MAX),
        Just(i64::MAX - 1),
        Just(i64::MAX / 2 + 1),
        Just(i64::MIN),
        Just(-1i64),
        Just(0i64),
        Just(1i64),
        any::<i64>(),
    ]
}

/// Quantities on or next to every edge of `u32`, and ordinary ones.
fn quantity() -> impl Strategy<Value = u32> {
    prop_oneof![Just(u32::MAX), Just(u32::MAX - 1), Just(u32::MAX / 2 + 1), Just(0u32), Just(1u32), any::<u32>()]
}

fn money() -> impl Strategy<Value = Money> {
    amount().prop_map(|a| Money::new(a, eur()))
}

use orderlog_domain::testing::{address, CartStep, PricedCart};

fn placed(total: i64, line_quantity: u32) -> PlacedOrder {
    let m = |a| Money::new(a, eur());
    PlacedOrder {
        cart_id: CartId::parse("c1").unwrap(),
        customer: Customer::Guest { email: "ann@example.com".into() },
        email: "ann@example.com".into(),
        currency: eur(),
        lines: vec![OrderLine {
            sku: sku(0),
            location: berlin(),
            quantity: line_quantity,
            unit_price: m(1),
            pricing: None,
            discount: None,
            tax: None,
        }],
        discount_code: None,
        tax_rate_bps: 0,
        promotions: vec![],
        totals: OrderTotals {
            subtotal: m(total),
            discount: m(0),
            shipping: m(0),
            tax: m(0),
            total: m(total),
            tax_included: None,
        },
        shipping_address: Some(address()),
        billing_address: None,
        shipping_method: Some(ShippingMethod { id: "dhl".into(), price: m(0) }),
        shipping: None,
    }
}

fn lines() -> impl Strategy<Value = Vec<LineQuantity>> {
    proptest::collection::vec(
        (0u8..2, quantity()).prop_map(|(s, quantity)| LineQuantity { sku: sku(s), quantity }),
        1..4,
    )
}

fn order_command() -> impl Strategy<Value = OrderAction> {
    let event_id = (0u8..40).prop_map(|i| format!("evt_{i}"));
    let shipment = (0u8..4).prop_map(|i| ShipmentId::parse(format!("s{i}")).unwrap());
    let ret = (0u8..3).prop_map(|i| ReturnId::parse(format!("r{i}")).unwrap());
    prop_oneof![
        2 => (money(), event_id.clone()).prop_map(|(amount, provider_event_id)| OrderAction::AuthorizePayment {
            amount, provider_ref: "pi_1".into(), provider_event_id
        }),
        4 => (money(), event_id.clone()).prop_map(|(amount, provider_event_id)| OrderAction::CapturePayment { amount, provider_event_id }),
        1 => event_id.clone().prop_map(|provider_event_id| OrderAction::VoidPayment { provider_event_id }),
        4 => (money(), event_id).prop_map(|(amount, provider_event_id)| OrderAction::RefundPayment { amount, provider_event_id }),
        2 => (shipment.clone(), lines()).prop_map(|(shipment_id, lines)| OrderAction::RecordShipped { shipment_id, lines }),
        2 => (shipment, lines()).prop_map(|(shipment_id, lines)| OrderAction::RecordDelivered { shipment_id, lines }),
        1 => (ret.clone(), lines()).prop_map(|(return_id, lines)| OrderAction::RequestReturn { return_id, lines, reason: "no".into() }),
        1 => (ret, lines(), any::<bool>()).prop_map(|(return_id, lines, restock)| OrderAction::ReceiveReturn {
            return_id,
            lines: lines.into_iter().map(|l| ReturnedLine { sku: l.sku, quantity: l.quantity, restock }).collect(),
        }),
        1 => Just(OrderAction::Complete {}),
    ]
}

fn stock_command() -> impl Strategy<Value = StockAction> {
    let order = (0u8..4).prop_map(|i| OrderId::parse(format!("o{i}")).unwrap());
    prop_oneof![
        3 => quantity().prop_map(|quantity| StockAction::Receive { quantity, reference: None }),
        2 => (amount(), proptest::option::of(amount())).prop_map(|(delta, expected_on_hand)| StockAction::Adjust {
            delta, reason: AdjustmentReason::Correction, expected_on_hand
        }),
        2 => (order.clone(), quantity()).prop_map(|(order_id, quantity)| StockAction::Reserve { order_id, quantity }),
        1 => order.clone().prop_map(|order_id| StockAction::Release { order_id }),
        2 => (order, quantity()).prop_map(|(order_id, quantity)| StockAction::Dispatch {
            order_id, shipment_id: ShipmentId::parse("s1").unwrap(), quantity
        }),
        1 => quantity().prop_map(|quantity| StockAction::SetSafetyStock { quantity }),
        2 => quantity().prop_map(|quantity| StockAction::ExpectIncoming { quantity }),
    ]
}

fn cart_command() -> impl Strategy<Value = CartStep> {
    let add =
        (0u8..2, quantity(), money()).prop_map(|(s, quantity, price)| CartStep::Add { sku: sku(s), quantity, price });
    let command = prop_oneof![
        2 => (0u8..2, quantity()).prop_map(|(s, quantity)| CartCommand::ChangeQuantity { sku: sku(s), quantity }),
        1 => money().prop_map(|amount| CartCommand::ApplyDiscount {
            discount: Discount { code: "FIX".into(), kind: DiscountKind::Fixed { amount } }
        }),
        1 => any::<u32>().prop_map(|basis_points| CartCommand::ApplyDiscount {
            discount: Discount { code: "PCT".into(), kind: DiscountKind::Percentage { basis_points } }
        }),
        2 => money().prop_map(|price| CartCommand::SelectShippingMethod { method: ShippingMethod { id: "dhl".into(), price } }),
    ];
    prop_oneof![4 => add, 6 => command.prop_map(CartStep::Do)]
}

/// Runs commands one at a time; returns every state reached.
fn run<D: Decider>(initial: D::State, commands: &[D::Command]) -> Vec<D::State>
where
    D::State: Clone,
{
    let mut state = initial;
    let mut states = vec![state.clone()];
    for command in commands {
        if let Ok(events) = D::decide(command, &state) {
            for e in &events {
                state = D::evolve(state, e);
            }
            states.push(state.clone());
        }
    }
    states
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_024, ..ProptestConfig::default() })]

    #[test]
    fn order_payments_and_lines_never_wrap(
        total in prop_oneof![Just(i64::MAX), Just(1i64), 1i64..i64::MAX],
        line_quantity in prop_oneof![Just(u32::MAX), 1u32..=u32::MAX],
        commands in proptest::collection::vec(order_command(), 0..40),
    ) {
        let initial = Order::fold(&Order::decide(&OrderAction::Place { order: Box::new(placed(total, line_quantity)) }, &Default::default()).unwrap());
        for s in run::<Order>(initial, &commands) {
            let p = &s.payment;
            prop_assert!(p.authorized >= 0 && p.captured >= 0 && p.refunded >= 0, "{p:?}");
            prop_assert!(p.captured <= p.authorized, "captured {} > authorized {}", p.captured, p.authorized);
            prop_assert!(p.refunded <= p.captured, "refunded {} > captured {}", p.refunded, p.captured);
            for l in s.lines.values() {
                prop_assert!(l.shipped <= l.ordered && l.delivered <= l.shipped && l.return_requested <= l.delivered && l.returned <= l.return_requested, "{l:?}");
            }
        }
    }

    #[test]
    fn stock_counts_never_wrap(commands in proptest::collection::vec(stock_command(), 0..50)) {
        for s in run::<Stock>(StockState::default(), &commands) {
            prop_assert!(s.on_hand >= 0, "on hand {} in {s:?}", s.on_hand);
            prop_assert!(s.reserved >= 0 && s.incoming >= 0 && s.unavailable >= 0, "{s:?}");
            prop_assert!(s.available() >= 0, "available {} in {s:?}", s.available());
            for r in s.reservations.values() {
                prop_assert!(r.dispatched <= r.quantity);
            }
        }
    }

    #[test]
    fn cart_totals_and_checkout_never_wrap(
        commands in proptest::collection::vec(cart_command(), 0..30),
        tax_rate_bps in prop_oneof![Just(10_000u32), Just(0u32), 0u32..=10_000],
        shipping in prop_oneof![Just(orderlog_domain::money::AMOUNT_MAX), Just(0i64), 0i64..100_000],
    ) {
        let created = Cart::decide(&CartCommand::Create { currency: eur(), customer: Customer::Guest { email: "ann@example.com".into() }, channel: None }, &Default::default()).unwrap();
        let mut initial = orderlog_domain::testing::choose_dhl(Cart::fold(&created));
        for c in [CartCommand::SetShippingAddress { address: address() }] {
            for e in Cart::decide(&c, &initial).unwrap() {
                initial = Cart::evolve(initial, &e);
            }
        }
        let states = run::<PricedCart>(initial, &commands);
        for s in &states {
            let t = s.totals().expect("an accepted cart's totals can be computed");
            prop_assert!(t.subtotal.amount >= 0 && t.discount.amount >= 0 && t.shipping.amount >= 0, "{t:?}");
            prop_assert!(t.discount.amount <= t.subtotal.amount, "{t:?}");
        }
        let cart = states.last().unwrap();
        let command = CheckoutCommand {
            cart_id: CartId::parse("c1").unwrap(),
            order_id: OrderId::parse("o1").unwrap(),
            location: berlin(),
            sources: BTreeMap::new(),
        };
        let mut stocks = BTreeMap::new();
        for key in command.stock_keys(cart) {
            let received = Stock::decide(&StockAction::Receive { quantity: u32::MAX, reference: None }, &StockState::default()).unwrap();
            stocks.insert(key, Stock::fold(&received));
        }
        let price = |c: &orderlog_domain::cart::CartState| orderlog_domain::testing::price(c, tax_rate_bps, shipping, vec![]);
        if let Ok(decision) = decide_checkout(&command, cart, &Default::default(), &stocks, price) {
            for (_, events) in &decision.streams {
                for e in events {
                    if let orderlog_domain::codec::DomainEvent::Order(orderlog_domain::order::OrderEvent::OrderPlaced { order }) = e {
                        let t = &order.totals;
                        prop_assert!(t.total.amount >= 0 && t.tax.amount >= 0, "{t:?}");
                        let included = t.tax_included.map_or(0, |m| m.amount);
                        prop_assert_eq!(t.total.amount, t.subtotal.amount - t.discount.amount + t.shipping.amount + t.tax.amount - included);
                    }
                }
            }
        }
    }
}

/// The defect an outside test found: capture 1, then capture `i64::MAX` answered success
/// and left `captured` at `i64::MIN` in a release build.
#[test]
fn capturing_or_refunding_past_i64_is_refused() {
    let order = Order::fold(
        &Order::decide(&OrderAction::Place { order: Box::new(placed(100, 1)) }, &Default::default()).unwrap(),
    );
    let step = |state, command: OrderAction| {
        let events = Order::decide(&command, &state).unwrap();
        events.iter().fold(state, Order::evolve)
    };
    let m = |a| Money::new(a, eur());
    let order = step(
        order,
        OrderAction::AuthorizePayment { amount: m(100), provider_ref: "pi".into(), provider_event_id: "e1".into() },
    );
    let order = step(order, OrderAction::CapturePayment { amount: m(1), provider_event_id: "e2".into() });
    let err =
        Order::decide(&OrderAction::CapturePayment { amount: m(i64::MAX), provider_event_id: "e3".into() }, &order)
            .unwrap_err();
    assert!(err.reason.contains("more than the 1000000000000 minor units"), "{}", err.reason);
    let order = step(order, OrderAction::RefundPayment { amount: m(1), provider_event_id: "e4".into() });
    let err =
        Order::decide(&OrderAction::RefundPayment { amount: m(i64::MAX), provider_event_id: "e5".into() }, &order)
            .unwrap_err();
    assert!(err.reason.contains("more than the 1000000000000 minor units"), "{}", err.reason);
    assert_eq!((order.payment.captured, order.payment.refunded), (1, 1));
}

/// The fullest, dearest cart a command can make (every line at its limit, every amount at
/// `AMOUNT_MAX`, 100 % tax) still has totals an `i64` holds: why a cart needs no totals check
/// when a line changes.
#[test]
fn the_largest_cart_has_totals_that_fit() {
    use orderlog_domain::cart::{CART_LINES_MAX, LINE_QUANTITY_MAX};
    use orderlog_domain::money::AMOUNT_MAX;
    let step = |state, command: CartCommand| {
        let events = Cart::decide(&command, &state).unwrap();
        events.iter().fold(state, Cart::evolve)
    };
    let guest = Customer::Guest { email: "ann@example.com".into() };
    let mut cart = step(Default::default(), CartCommand::Create { currency: eur(), customer: guest, channel: None });
    for n in 0..CART_LINES_MAX {
        let events =
            orderlog_domain::testing::add_item(&cart, &format!("sku{n}"), LINE_QUANTITY_MAX, AMOUNT_MAX).unwrap();
        cart = events.iter().fold(cart, Cart::evolve);
    }
    cart = orderlog_domain::testing::choose_dhl(cart);
    cart = step(cart, CartCommand::SetShippingAddress { address: address() });
    let command = CheckoutCommand {
        cart_id: CartId::parse("c1").unwrap(),
        order_id: OrderId::parse("o1").unwrap(),
        location: berlin(),
        sources: BTreeMap::new(),
    };
    let mut stocks = BTreeMap::new();
    for key in command.stock_keys(&cart) {
        stocks.insert(key, Default::default());
    }
    // Out of stock, but only after the totals were computed without overflow.
    let price = |c: &orderlog_domain::cart::CartState| orderlog_domain::testing::price(c, 10_000, AMOUNT_MAX, vec![]);
    let refused = decide_checkout(&command, &cart, &Default::default(), &stocks, price).unwrap_err();
    assert_eq!(refused.kind, orderlog_domain::RejectionKind::OutOfStock, "{}", refused.reason);
    let totals = cart.totals().unwrap();
    assert_eq!(totals.subtotal.amount, CART_LINES_MAX as i64 * i64::from(LINE_QUANTITY_MAX) * AMOUNT_MAX);
}
