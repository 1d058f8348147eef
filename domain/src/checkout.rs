//! Checkout: one decision over the cart, the new order and every stock item that supplies
//! a line. Either all of it is appended in one transaction, or nothing is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cart::{Cart, CartEvent, CartState, CartStatus, ShippingMethod};
use crate::codec::DomainEvent;
use crate::order::{Order, OrderAction, OrderLine, OrderState, OrderTotals, PlacedOrder};
use crate::pricing::Breakdown;
use crate::stock::{Stock, StockAction, StockState};
use crate::{CartId, Decider, LocationId, OrderId, Rejection, RejectionKind, Shortage, Sku, StockKey, StreamId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutCommand {
    pub cart_id: CartId,
    /// The id the new order gets (made by the caller's id source).
    pub order_id: OrderId,
    /// The location that supplies every line not named in `sources`.
    pub location: LocationId,
    /// Per-SKU locations that override `location`.
    #[serde(default)]
    pub sources: BTreeMap<Sku, LocationId>,
}

impl CheckoutCommand {
    /// The stock item that supplies `sku`.
    pub fn source(&self, sku: &Sku) -> StockKey {
        let location = self.sources.get(sku).unwrap_or(&self.location);
        StockKey::new(sku.clone(), location.clone())
    }

    /// Every stock item the cart's lines draw on.
    pub fn stock_keys(&self, cart: &CartState) -> Vec<StockKey> {
        cart.lines.keys().map(|sku| self.source(sku)).collect()
    }
}

/// Events per stream; a stream with no events is still version-checked on append, since
/// its state took part in the decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub streams: Vec<(StreamId, Vec<DomainEvent>)>,
    /// The order the decision concerns, when there is one (checkout reports the order it
    /// placed, or the one an earlier checkout of the same cart placed).
    pub order_id: Option<OrderId>,
    /// A refusal that still appends the events (a checkout whose lines were priced again:
    /// the cart keeps the new prices, and the caller is told).
    pub refusal: Option<Rejection>,
}

impl Decision {
    pub fn push<E: Into<DomainEvent>>(&mut self, stream: StreamId, events: Vec<E>) {
        self.streams.push((stream, events.into_iter().map(Into::into).collect()));
    }

    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|(_, e)| e.len()).sum()
    }
}

/// Decides a checkout. `stocks` must hold the state of every key in
/// [`CheckoutCommand::stock_keys`] (a missing one counts as an empty stock item). `price`
/// prices the cart (see [`crate::pricing`]) once it is known to be ready: it has lines, an
/// email, an address and a shipping option.
pub fn decide_checkout(
    command: &CheckoutCommand,
    cart: &CartState,
    order: &OrderState,
    stocks: &BTreeMap<StockKey, StockState>,
    price: impl FnOnce(&CartState) -> Result<Breakdown, Rejection>,
) -> Result<Decision, Rejection> {
    let cart_stream = StreamId::cart(&command.cart_id);
    match &cart.status {
        CartStatus::NotCreated => return Err(Rejection::not_found("cart: does not exist")),
        CartStatus::Expired => return Err(Rejection::conflict("cart: expired; it cannot be checked out")),
        CartStatus::CheckedOut { order_id } => {
            if *order_id != command.order_id {
                return Err(Rejection::conflict(format!(
                    "cart: already checked out as order {order_id}, not {}",
                    command.order_id
                )));
            }
            // The same cart checked out again as the same order returns that order.
            let mut decision = Decision { order_id: Some(order_id.clone()), ..Decision::default() };
            decision.push::<CartEvent>(cart_stream, vec![]);
            return Ok(decision);
        }
        CartStatus::Open => {}
    }
    if cart.lines.is_empty() {
        return Err(Rejection::conflict("cart: has no lines to check out"));
    }
    let email = cart.email().ok_or_else(|| Rejection::conflict("email: the cart has no contact email"))?.to_string();
    let ships = cart.ships();
    if ships {
        if cart.shipping_address.is_none() {
            return Err(Rejection::conflict("shipping_address: the cart has no shipping address"));
        }
        if cart.shipping_option.is_none() {
            return Err(Rejection::conflict("shipping_option: the cart has no shipping option"));
        }
    } else if cart.billing_address.is_none() {
        return Err(Rejection::conflict(
            "billing_address: the cart ships nothing, so its tax follows its billing address, and it has none",
        ));
    }
    let priced = price(cart)?;
    if ships && priced.shipping.is_none() {
        return Err(Rejection::conflict("shipping_option: the cart has no shipping option"));
    }
    let shipping = priced.shipping.clone();
    let currency = priced.totals.subtotal.currency;

    let mut decision = Decision { order_id: Some(command.order_id.clone()), ..Decision::default() };
    let mut shortages = Vec::new();
    let mut lines = Vec::with_capacity(cart.lines.len());
    let empty = StockState::default();
    for (line, priced) in cart.lines.values().zip(&priced.lines) {
        let key = command.source(&line.sku);
        let stock = stocks.get(&key).unwrap_or(&empty);
        let reserve = StockAction::Reserve { order_id: command.order_id.clone(), quantity: line.quantity };
        match Stock::decide(&reserve, stock) {
            Ok(events) => decision.push(StreamId::stock(&key), events),
            Err(r) if r.kind == RejectionKind::OutOfStock => shortages.push(Shortage {
                sku: key.sku.clone(),
                location: key.location.clone(),
                requested: line.quantity,
                available: stock.available(),
            }),
            Err(r) => return Err(r),
        }
        lines.push(OrderLine {
            sku: line.sku.clone(),
            location: key.location,
            quantity: line.quantity,
            unit_price: line.unit_price,
            pricing: line.pricing.clone(),
            discount: Some(priced.discount),
            tax: priced.tax.clone(),
        });
    }
    if !shortages.is_empty() {
        let list: Vec<String> = shortages.iter().map(ToString::to_string).collect();
        return Err(Rejection {
            kind: RejectionKind::OutOfStock,
            reason: format!("out of stock: {}", list.join("; ")),
            shortages,
            repriced: Vec::new(),
        });
    }
    let t = &priced.totals;
    let placed = PlacedOrder {
        cart_id: command.cart_id.clone(),
        customer: cart.customer.clone().expect("an open cart has a customer"),
        email,
        currency,
        lines,
        discount_code: cart.discount.as_ref().map(|d| d.code.clone()),
        promotions: priced.promotions.clone(),
        tax_rate_bps: 0,
        totals: OrderTotals {
            subtotal: t.subtotal,
            discount: t.discount,
            shipping: t.shipping,
            tax: t.tax,
            total: t.total,
            tax_included: Some(t.tax_included),
        },
        shipping_address: cart.shipping_address.clone().filter(|_| ships),
        shipping_method: shipping.as_ref().map(|s| ShippingMethod { id: s.option_id.to_string(), price: s.price }),
        billing_address: cart.billing_address.clone(),
        shipping,
    };
    let order_events = Order::decide(&OrderAction::Place { order: Box::new(placed) }, order)?;
    let cart_events = vec![CartEvent::CartCheckedOut { order_id: command.order_id.clone() }];
    debug_assert_eq!(
        Cart::evolve(cart.clone(), &cart_events[0]).status,
        CartStatus::CheckedOut { order_id: command.order_id.clone() }
    );
    decision.streams.insert(0, (cart_stream, cart_events.into_iter().map(Into::into).collect()));
    decision
        .streams
        .insert(1, (StreamId::order(&command.order_id), order_events.into_iter().map(Into::into).collect()));
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cart::{CartCommand, Customer};
    use crate::stock::StockEvent;
    use crate::Currency;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }
    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }
    fn loc() -> LocationId {
        LocationId::parse("berlin").unwrap()
    }
    fn ready_cart(items: &[(&str, u32, i64)]) -> CartState {
        let run =
            |state: CartState, cmd: CartCommand| Cart::decide(&cmd, &state).unwrap().iter().fold(state, Cart::evolve);
        let customer = Customer::Guest { email: "ann@example.com".into() };
        let mut state = run(CartState::default(), CartCommand::Create { currency: eur(), customer, channel: None });
        for (s, q, p) in items {
            let events = crate::testing::add_item(&state, s, *q, *p).unwrap();
            state = events.iter().fold(state, Cart::evolve);
        }
        let state = run(state, CartCommand::SetShippingAddress { address: crate::testing::address() });
        crate::testing::choose_dhl(state)
    }
    fn stock_of(units: u32) -> StockState {
        Stock::fold(&[StockEvent::StockReceived { units, reference: None }])
    }
    fn command() -> CheckoutCommand {
        CheckoutCommand {
            cart_id: CartId::parse("c1").unwrap(),
            order_id: OrderId::parse("o1").unwrap(),
            location: loc(),
            sources: BTreeMap::new(),
        }
    }
    /// Prices at 19 % with DHL at 5.00, tax included (the test catalog's prices include it).
    fn price(cart: &CartState) -> Result<Breakdown, Rejection> {
        crate::testing::price(cart, 1_900, 500, vec![])
    }
    fn decide(
        command: &CheckoutCommand,
        cart: &CartState,
        stocks: &BTreeMap<StockKey, StockState>,
    ) -> Result<Decision, Rejection> {
        decide_checkout(command, cart, &OrderState::default(), stocks, price)
    }

    #[test]
    fn checkout_appends_to_cart_order_and_each_stock_item() {
        let cart = ready_cart(&[("mug", 2, 1_000), ("tea", 1, 450)]);
        let stocks = BTreeMap::from([
            (StockKey::new(sku("mug"), loc()), stock_of(5)),
            (StockKey::new(sku("tea"), loc()), stock_of(1)),
        ]);
        let decision = decide(&command(), &cart, &stocks).unwrap();
        let streams: Vec<String> = decision.streams.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(streams, ["cart-c1", "order-o1", "stock-mug@berlin", "stock-tea@berlin"]);
        assert_eq!(decision.event_count(), 4);
        let DomainEvent::Order(crate::order::OrderEvent::OrderPlaced { order }) = &decision.streams[1].1[0] else {
            panic!("expected OrderPlaced");
        };
        // Tax included: 20.00 → 16.81 net + 3.19; 4.50 → 3.78 + 0.72; shipping 5.00 → 4.20
        // + 0.80 (each half to even); the total is what the prices say.
        assert_eq!(order.totals.subtotal.amount, 2_450);
        assert_eq!(order.totals.tax.amount, 319 + 72 + 80);
        assert_eq!(order.totals.tax_included.map(|m| m.amount), Some(319 + 72 + 80));
        assert_eq!(order.totals.total.amount, 2_950);
        let tax = order.lines[0].tax.as_ref().unwrap();
        assert_eq!(
            (tax.rate.region.as_str(), tax.rate.rate_bps, tax.net.amount, tax.tax.amount),
            ("DE", 1_900, 1_681, 319)
        );
        assert_eq!(order.shipping.as_ref().map(|s| s.price.amount), Some(500));
    }

    #[test]
    fn checkout_names_every_line_short_and_appends_nothing() {
        let cart = ready_cart(&[("mug", 2, 1_000), ("tea", 3, 450)]);
        let stocks = BTreeMap::from([(StockKey::new(sku("mug"), loc()), stock_of(1))]);
        let err = decide(&command(), &cart, &stocks).unwrap_err();
        assert_eq!(err.kind, RejectionKind::OutOfStock);
        assert_eq!(err.shortages.len(), 2);
        assert!(err.reason.contains("mug at berlin: 2 requested, 1 available"), "{}", err.reason);
        assert!(err.reason.contains("tea at berlin: 3 requested, 0 available"), "{}", err.reason);
    }

    #[test]
    fn checking_out_twice_returns_the_same_order_and_refuses_another() {
        let mut cart = ready_cart(&[("mug", 1, 1_000)]);
        cart = Cart::evolve(cart, &CartEvent::CartCheckedOut { order_id: command().order_id });
        let decision = decide(&command(), &cart, &BTreeMap::new()).unwrap();
        assert_eq!(decision.order_id, Some(command().order_id));
        assert_eq!(decision.event_count(), 0);
        let mut other = command();
        other.order_id = OrderId::parse("o2").unwrap();
        let err = decide(&other, &cart, &BTreeMap::new()).unwrap_err();
        assert_eq!(err.kind, RejectionKind::Conflict);
        assert!(err.reason.contains(&format!("already checked out as order {}", command().order_id)), "{}", err.reason);
    }

    #[test]
    fn checkout_needs_lines_address_and_a_shipping_option() {
        let stocks = BTreeMap::new();
        let mut cart = ready_cart(&[]);
        assert!(decide(&command(), &cart, &stocks).unwrap_err().reason.contains("no lines"));
        cart = ready_cart(&[("mug", 1, 1)]);
        cart.shipping_address = None;
        assert!(decide(&command(), &cart, &stocks).unwrap_err().reason.contains("shipping_address"));
        cart = ready_cart(&[("mug", 1, 1)]);
        cart.shipping_option = None;
        assert!(decide(&command(), &cart, &stocks).unwrap_err().reason.contains("shipping_option"));
        assert_eq!(decide(&command(), &CartState::default(), &stocks).unwrap_err().kind, RejectionKind::NotFound);
    }

    #[test]
    fn per_sku_sources_override_the_location() {
        let cart = ready_cart(&[("mug", 1, 1_000)]);
        let mut cmd = command();
        let hamburg = LocationId::parse("hamburg").unwrap();
        cmd.sources.insert(sku("mug"), hamburg.clone());
        let stocks = BTreeMap::from([(StockKey::new(sku("mug"), hamburg), stock_of(1))]);
        let decision = decide(&cmd, &cart, &stocks).unwrap();
        assert_eq!(decision.streams[2].0, "stock-mug@hamburg");
    }
}
