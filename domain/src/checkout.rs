//! Checkout: one decision over the cart, the new order and every stock item that supplies
//! a line. Either all of it is appended in one transaction, or nothing is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cart::{Cart, CartEvent, CartState, CartStatus};
use crate::codec::DomainEvent;
use crate::order::{Order, OrderAction, OrderLine, OrderState, OrderTotals, PlacedOrder};
use crate::stock::{Stock, StockAction, StockState};
use crate::{CartId, Decider, LocationId, OrderId, Rejection, RejectionKind, Shortage, Sku, StockKey, StreamId};

/// Largest tax rate accepted, in basis points (100 %).
pub const TAX_RATE_BPS_MAX: u32 = 10_000;

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
    /// Tax on the discounted subtotal plus shipping, in basis points.
    #[serde(default)]
    pub tax_rate_bps: u32,
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
/// [`CheckoutCommand::stock_keys`] (a missing one counts as an empty stock item).
pub fn decide_checkout(
    command: &CheckoutCommand,
    cart: &CartState,
    order: &OrderState,
    stocks: &BTreeMap<StockKey, StockState>,
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
    let shipping_address = cart
        .shipping_address
        .clone()
        .ok_or_else(|| Rejection::conflict("shipping_address: the cart has no shipping address"))?;
    let shipping_method = cart
        .shipping_method
        .clone()
        .ok_or_else(|| Rejection::conflict("shipping_method: the cart has no shipping method"))?;
    if command.tax_rate_bps > TAX_RATE_BPS_MAX {
        return Err(Rejection::invalid(format!("tax_rate_bps: {} exceeds {TAX_RATE_BPS_MAX}", command.tax_rate_bps)));
    }
    let totals = cart.totals()?;
    let taxable = totals.subtotal.checked_sub(totals.discount)?.checked_add(totals.shipping)?;
    let tax = taxable.share_bps(command.tax_rate_bps)?;
    let total = taxable.checked_add(tax)?;
    let currency = totals.subtotal.currency;

    let mut decision = Decision { order_id: Some(command.order_id.clone()), ..Decision::default() };
    let mut shortages = Vec::new();
    let mut lines = Vec::with_capacity(cart.lines.len());
    let empty = StockState::default();
    for line in cart.lines.values() {
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
    let placed = PlacedOrder {
        cart_id: command.cart_id.clone(),
        customer: cart.customer.clone().expect("an open cart has a customer"),
        email,
        currency,
        lines,
        discount_code: cart.discount.as_ref().map(|d| d.code.clone()),
        tax_rate_bps: command.tax_rate_bps,
        totals: OrderTotals {
            subtotal: totals.subtotal,
            discount: totals.discount,
            shipping: totals.shipping,
            tax,
            total,
        },
        shipping_address,
        shipping_method,
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
    use crate::cart::{CartCommand, Customer, ShippingMethod};
    use crate::stock::StockEvent;
    use crate::{Currency, Money};

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
        let method = ShippingMethod { id: "dhl".into(), price: Money::new(500, eur()) };
        run(state, CartCommand::SelectShippingMethod { method })
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
            tax_rate_bps: 1_900,
        }
    }

    #[test]
    fn checkout_appends_to_cart_order_and_each_stock_item() {
        let cart = ready_cart(&[("mug", 2, 1_000), ("tea", 1, 450)]);
        let stocks = BTreeMap::from([
            (StockKey::new(sku("mug"), loc()), stock_of(5)),
            (StockKey::new(sku("tea"), loc()), stock_of(1)),
        ]);
        let decision = decide_checkout(&command(), &cart, &OrderState::default(), &stocks).unwrap();
        let streams: Vec<String> = decision.streams.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(streams, ["cart-c1", "order-o1", "stock-mug@berlin", "stock-tea@berlin"]);
        assert_eq!(decision.event_count(), 4);
        let DomainEvent::Order(crate::order::OrderEvent::OrderPlaced { order }) = &decision.streams[1].1[0] else {
            panic!("expected OrderPlaced");
        };
        // 2 450 subtotal + 500 shipping = 2 950 taxable; 19 % = 560.5 → 561.
        assert_eq!(order.totals.subtotal.amount, 2_450);
        assert_eq!(order.totals.tax.amount, 561);
        assert_eq!(order.totals.total.amount, 3_511);
    }

    #[test]
    fn checkout_names_every_line_short_and_appends_nothing() {
        let cart = ready_cart(&[("mug", 2, 1_000), ("tea", 3, 450)]);
        let stocks = BTreeMap::from([(StockKey::new(sku("mug"), loc()), stock_of(1))]);
        let err = decide_checkout(&command(), &cart, &OrderState::default(), &stocks).unwrap_err();
        assert_eq!(err.kind, RejectionKind::OutOfStock);
        assert_eq!(err.shortages.len(), 2);
        assert!(err.reason.contains("mug at berlin: 2 requested, 1 available"), "{}", err.reason);
        assert!(err.reason.contains("tea at berlin: 3 requested, 0 available"), "{}", err.reason);
    }

    #[test]
    fn checking_out_twice_returns_the_same_order_and_refuses_another() {
        let mut cart = ready_cart(&[("mug", 1, 1_000)]);
        cart = Cart::evolve(cart, &CartEvent::CartCheckedOut { order_id: command().order_id });
        let decision = decide_checkout(&command(), &cart, &OrderState::default(), &BTreeMap::new()).unwrap();
        assert_eq!(decision.order_id, Some(command().order_id));
        assert_eq!(decision.event_count(), 0);
        let mut other = command();
        other.order_id = OrderId::parse("o2").unwrap();
        let err = decide_checkout(&other, &cart, &OrderState::default(), &BTreeMap::new()).unwrap_err();
        assert_eq!(err.kind, RejectionKind::Conflict);
        assert!(err.reason.contains(&format!("already checked out as order {}", command().order_id)), "{}", err.reason);
    }

    #[test]
    fn checkout_needs_lines_address_and_method() {
        let stocks = BTreeMap::new();
        let mut cart = ready_cart(&[]);
        assert!(decide_checkout(&command(), &cart, &OrderState::default(), &stocks)
            .unwrap_err()
            .reason
            .contains("no lines"));
        cart = ready_cart(&[("mug", 1, 1)]);
        cart.shipping_address = None;
        assert!(decide_checkout(&command(), &cart, &OrderState::default(), &stocks)
            .unwrap_err()
            .reason
            .contains("shipping_address"));
        assert_eq!(
            decide_checkout(&command(), &CartState::default(), &OrderState::default(), &stocks).unwrap_err().kind,
            RejectionKind::NotFound
        );
        let mut taxed = command();
        taxed.tax_rate_bps = 10_001;
        assert!(decide_checkout(&taxed, &ready_cart(&[("mug", 1, 1)]), &OrderState::default(), &stocks).is_err());
    }

    #[test]
    fn per_sku_sources_override_the_location() {
        let cart = ready_cart(&[("mug", 1, 1_000)]);
        let mut cmd = command();
        let hamburg = LocationId::parse("hamburg").unwrap();
        cmd.sources.insert(sku("mug"), hamburg.clone());
        let stocks = BTreeMap::from([(StockKey::new(sku("mug"), hamburg), stock_of(1))]);
        let decision = decide_checkout(&cmd, &cart, &OrderState::default(), &stocks).unwrap();
        assert_eq!(decision.streams[2].0, "stock-mug@hamburg");
    }
}
