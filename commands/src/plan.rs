//! What each command loads and how it decides: [`Command::streams`] names the streams the
//! command itself names, [`Command::then_streams`] those the loaded states name (a cart's
//! stock items, an order's reservations, a shipment's order), and [`Command::decide`]
//! decides over exactly those. The service runs every command through the same
//! load → decide → append loop over these three.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use orderlog_domain::aggregate::Aggregate;
use orderlog_domain::cart::{
    add_priced, choose_shipping, pricing_of, Cart, CartCommand, CartEvent, CartState, CartStatus, Customer, Discount,
    Repriced,
};
use orderlog_domain::checkout::{decide_checkout, CheckoutCommand, Decision};
use orderlog_domain::customer::{CustomerProfile, CustomerProfileAction, CustomerProfileState};
use orderlog_domain::deadline::{Deadline, DeadlineAction, DeadlineId, DeadlineState};
use orderlog_domain::flows::{
    decide_carrier_event, decide_create_shipment, decide_end_order, decide_receive_return, decide_ship,
    order_stock_keys, return_stock_keys,
};
use orderlog_domain::order::{Order, OrderAction, OrderState};
use orderlog_domain::price_list::{
    quote, PriceContext, PriceIndex, PriceIndexCommand, PriceList, PriceListCommand, PriceListState, Quote,
};
use orderlog_domain::pricing::{self, Applied, Breakdown};
use orderlog_domain::product::{Product, ProductCommand, ProductIndex, ProductIndexCommand, SkuOwner, SkuOwnerCommand};
use orderlog_domain::promotion::{
    Eligibility, Promotion, PromotionAction, PromotionCommand, PromotionIndex, PromotionIndexCommand, PromotionState,
};
use orderlog_domain::shipment::{Shipment, ShipmentCommand, ShipmentState};
use orderlog_domain::shipping::{
    ShippingIndex, ShippingIndexCommand, ShippingZone, ShippingZoneCommand, ShippingZoneState,
};
use orderlog_domain::stock::{Stock, StockAction, StockState};
use orderlog_domain::tax::{RateTable, TaxProvider, TaxRegion, TaxRegionId};
use orderlog_domain::{
    AnyState, Currency, Decider, DomainEvent, OrderId, PriceListId, ProductId, PromotionCode, Rejection,
    ShippingZoneId, Sku, StockKey, StreamId,
};
use orderlog_store::RecordedEvent;

use crate::{Command, CommandError, DeadlinePolicy};

mod deadlines;
mod payments;

use deadlines::deadline_command;

/// The streams a decision has loaded: each one's state and the version it was read at.
#[derive(Default)]
pub(crate) struct Loaded {
    pub streams: BTreeMap<StreamId, (AnyState, u64)>,
    /// When each loaded stream's last event was recorded (streams with events only).
    pub touched: BTreeMap<StreamId, DateTime<Utc>>,
}

/// What a decision may know besides the states: the time and the deadline policy. The
/// domain never reads a clock; due times are computed here and arrive in its actions.
pub(crate) struct Context {
    pub now: DateTime<Utc>,
    pub deadlines: DeadlinePolicy,
    /// How long the price a cart line gets holds.
    pub price_ttl: chrono::Duration,
    /// A tax provider that replaces the rate table.
    pub tax: Option<crate::ExternalTax>,
}

impl Loaded {
    /// The state of a stream the plan named; loading it is the plan's promise.
    pub(super) fn state<A: Aggregate>(&self, stream: &StreamId) -> &A::State {
        self.streams.get(stream).and_then(|(s, _)| A::state(s)).expect("the plan names every stream it reads")
    }

    pub(super) fn deadline(&self, id: &DeadlineId) -> &DeadlineState {
        self.state::<Deadline>(&StreamId::deadline(id))
    }

    pub(super) fn order(&self, id: &OrderId) -> &OrderState {
        self.state::<Order>(&StreamId::order(id))
    }

    fn shipment(&self, stream: &StreamId) -> &ShipmentState {
        self.state::<Shipment>(stream)
    }

    /// The price `sku` gets now in `currency` and `channel` from the catalog streams the
    /// plan loaded ([`pricing_streams`]), and the product it belongs to.
    fn quote(
        &self,
        sku: &Sku,
        currency: Currency,
        channel: Option<&str>,
        at: DateTime<Utc>,
        groups: &BTreeSet<String>,
    ) -> Result<(Quote, ProductId), Rejection> {
        let owner = self.state::<SkuOwner>(&StreamId::sku_owner(sku));
        let product_id =
            // 409, not 404: the cart exists; the SKU it names is not sold.
            owner.product_id.clone().ok_or_else(|| Rejection::conflict(format!("sku {sku}: not in the catalog")))?;
        let product = self.state::<Product>(&StreamId::product(&product_id));
        let index = self.state::<PriceIndex>(&StreamId::price_index(currency));
        let lists: Vec<(&PriceListId, &PriceListState)> =
            index.lists.iter().map(|id| (id, self.state::<PriceList>(&StreamId::price_list(id)))).collect();
        let quote = quote(sku, product, &lists, &PriceContext { currency, at, channel, groups })?;
        Ok((quote, product_id))
    }

    /// The state of a stream the plan may have named (it names some only when another
    /// state says they exist).
    pub(super) fn get<A: Aggregate>(&self, stream: &StreamId) -> Option<&A::State> {
        self.streams.get(stream).and_then(|(s, _)| A::state(s))
    }

    /// The cart's customer's profile: a registered customer's groups and orders.
    fn profile(&self, cart: &CartState) -> Option<&CustomerProfileState> {
        match &cart.customer {
            Some(Customer::Registered { customer_id, .. }) => {
                self.get::<CustomerProfile>(&StreamId::customer(customer_id))
            }
            _ => None,
        }
    }

    fn groups(&self, cart: &CartState) -> BTreeSet<String> {
        self.profile(cart).map(|p| p.groups.clone()).unwrap_or_default()
    }

    /// What a promotion's conditions are checked against, for this cart now.
    fn eligibility(&self, cart: &CartState, at: DateTime<Utc>) -> Result<Eligibility, Rejection> {
        let registered = matches!(cart.customer, Some(Customer::Registered { .. }));
        Ok(Eligibility {
            subtotal: cart.totals()?.subtotal,
            at,
            lines: Eligibility::lines_of(&cart.lines),
            groups: self.groups(cart),
            orders_before: registered.then(|| self.profile(cart).map_or(0, |p| p.orders.len())),
        })
    }

    /// The shipping zone that serves the cart's shipping address in its currency.
    fn zone(&self, cart: &CartState) -> Option<(&ShippingZoneId, &ShippingZoneState)> {
        let (currency, address) = (cart.currency?, cart.shipping_address.as_ref()?);
        let index = self.get::<ShippingIndex>(&StreamId::shipping_index(currency))?;
        let zone_id = index.countries.get(&address.country)?;
        Some((zone_id, self.get::<ShippingZone>(&StreamId::shipping_zone(zone_id))?))
    }

    /// The tax regions that may cover the cart's tax address, as the built-in provider.
    fn rate_table(&self, cart: &CartState) -> RateTable<'_> {
        let mut regions = BTreeMap::new();
        if let Some(address) = cart.tax_address() {
            for id in [TaxRegionId::country(address), TaxRegionId::subdivision(address)].into_iter().flatten() {
                if let Some(state) = self.get::<TaxRegion>(&StreamId::tax_region(&id)) {
                    regions.insert(id, state);
                }
            }
        }
        RateTable { regions }
    }

    /// The automatic promotions whose conditions the cart meets now, by code; the cart's own
    /// code is not among them.
    fn automatic(&self, cart: &CartState, eligible: &Eligibility) -> Vec<(PromotionCode, &PromotionState)> {
        let Some(index) = self.get::<PromotionIndex>(&StreamId::automatic_promotions()) else { return vec![] };
        let own = promotion_of(cart);
        let customer = cart.customer_key();
        index
            .codes
            .iter()
            .filter(|code| Some(*code) != own.as_ref())
            .filter_map(|code| Some((code.clone(), self.get::<Promotion>(&StreamId::promotion(code))?)))
            .filter(|(code, p)| {
                let within =
                    p.per_customer_limit.is_none_or(|l| p.uses_by_customer.get(&customer).copied().unwrap_or(0) < l);
                within && p.applicable(code.as_str(), eligible).is_ok()
            })
            .collect()
    }

    /// Prices the cart (see `pricing`): the automatic promotions it meets, then its own
    /// code, the zone's shipping price, and the tax of its address; with what the
    /// promotions' conditions were checked against.
    pub(crate) fn price(&self, cart: &CartState, context: &Context) -> Result<(Breakdown, Eligibility), Rejection> {
        let currency = cart.open()?;
        let eligible = self.eligibility(cart, context.now)?;
        let automatic = self.automatic(cart, &eligible);
        let mut promotions: Vec<Applied> = automatic
            .iter()
            .filter_map(|(code, p)| {
                p.kind.as_ref().map(|kind| Applied { code: code.as_str(), kind, conditions: &p.conditions })
            })
            .collect();
        let own = promotion_of(cart);
        if let Some(code) = &own {
            if let Some(p) = self.get::<Promotion>(&StreamId::promotion(code)) {
                if let Ok(kind) = p.applicable(code.as_str(), &eligible) {
                    promotions.push(Applied { code: code.as_str(), kind, conditions: &p.conditions });
                }
            }
        }
        let zone = self.zone(cart).filter(|_| cart.ships());
        let shipping = match (&cart.shipping_option, zone) {
            (Some(choice), Some((zone_id, zone))) if *zone_id == choice.zone_id => {
                zone.option(&choice.option_id).map(|option| pricing::Shipping { zone_id, zone, option })
            }
            _ => None,
        };
        let ships_to = cart.shipping_address.as_ref().filter(|_| cart.ships());
        if let (Some(choice), None, Some(address)) = (&cart.shipping_option, &shipping, ships_to) {
            return Err(Rejection::conflict(format!(
                "shipping_option {}: does not serve {} any more; choose another",
                choice.option_id, address.country
            )));
        }
        let table = self.rate_table(cart);
        let provider: &dyn TaxProvider = match &context.tax {
            Some(external) => &*external.0,
            None => &table,
        };
        let breakdown = pricing::price(&pricing::Request {
            currency,
            lines: &cart.lines,
            promotions,
            shipping,
            tax: cart.tax_address().map(|a| (provider, a)),
            groups: &eligible.groups,
        })?;
        Ok((breakdown, eligible))
    }

    fn stocks(&self, keys: Vec<StockKey>) -> BTreeMap<StockKey, StockState> {
        keys.into_iter()
            .map(|key| {
                let state = self.state::<Stock>(&StreamId::stock(&key)).clone();
                (key, state)
            })
            .collect()
    }
}

impl Command {
    /// The streams the command names, loaded first: a pure function of the command.
    pub fn streams(&self) -> Vec<StreamId> {
        match self {
            Command::Cart { cart_id, command: CartCommand::ApplyCode { code } } => {
                vec![StreamId::cart(cart_id), StreamId::promotion(code)]
            }
            Command::Cart { cart_id, .. } => vec![StreamId::cart(cart_id)],
            Command::Checkout { checkout } => {
                vec![StreamId::cart(&checkout.cart_id), StreamId::order(&checkout.order_id)]
            }
            Command::Order { order_id, .. }
            | Command::CancelOrder { order_id, .. }
            | Command::ExpireOrder { order_id }
            | Command::CloseReturnWindow { order_id }
            | Command::ReceiveReturn { order_id, .. } => vec![StreamId::order(order_id)],
            Command::FireDeadline { deadline_id } => vec![StreamId::deadline(deadline_id)],
            Command::Product { product_id, command } => std::iter::once(StreamId::product(product_id))
                .chain(command.new_skus().iter().map(StreamId::sku_owner))
                .chain(matches!(command, ProductCommand::Create { .. }).then(StreamId::products))
                .collect(),
            Command::Promotion { code, command: PromotionCommand::Create { automatic: true, .. } } => {
                vec![StreamId::promotion(code), StreamId::automatic_promotions()]
            }
            Command::Promotion { code, .. } => vec![StreamId::promotion(code)],
            Command::TaxRegion { region_id, .. } => vec![StreamId::tax_region(region_id)],
            Command::ShippingZone { zone_id, command: ShippingZoneCommand::Define { currency, .. } } => {
                vec![StreamId::shipping_zone(zone_id), StreamId::shipping_index(*currency)]
            }
            Command::Customer { customer_id, .. } => vec![StreamId::customer(customer_id)],
            Command::Pay { order_id, .. } => vec![StreamId::order(order_id)],
            Command::Payment { payment_id, .. } => vec![StreamId::payment(payment_id)],
            Command::PriceList { price_list_id, command } => match command {
                PriceListCommand::Create { currency, .. } => {
                    vec![StreamId::price_list(price_list_id), StreamId::price_index(*currency)]
                }
                _ => vec![StreamId::price_list(price_list_id)],
            },
            Command::Stock { stock, .. } => vec![StreamId::stock(stock)],
            Command::Shipment { shipment_id, command } => match command {
                ShipmentCommand::Create { order_id, .. } => {
                    vec![StreamId::shipment(shipment_id), StreamId::order(order_id)]
                }
                _ => vec![StreamId::shipment(shipment_id)],
            },
        }
    }

    /// The streams that the states of [`Command::streams`] name, loaded next.
    pub(crate) fn then_streams(&self, loaded: &Loaded) -> Vec<StreamId> {
        let stocks = |keys: Vec<StockKey>| keys.iter().map(StreamId::stock).collect::<Vec<_>>();
        match self {
            Command::Checkout { checkout } => {
                let cart = loaded.state::<Cart>(&StreamId::cart(&checkout.cart_id));
                let mut streams = stocks(checkout.stock_keys(cart));
                streams.extend(cart_streams(loaded, cart));
                streams
            }
            Command::Cart { cart_id, command: CartCommand::AddItem { sku, .. } } => {
                let cart = loaded.state::<Cart>(&StreamId::cart(cart_id));
                let mut streams = pricing_streams(loaded, std::iter::once(sku), cart.currency);
                streams.extend(customer_stream(cart));
                streams
            }
            Command::Cart { cart_id, command: CartCommand::ApplyCode { .. } } => {
                customer_stream(loaded.state::<Cart>(&StreamId::cart(cart_id))).into_iter().collect()
            }
            Command::Cart { cart_id, command: CartCommand::SelectShippingOption { .. } } => {
                shipping_streams(loaded, loaded.state::<Cart>(&StreamId::cart(cart_id)))
            }
            Command::CancelOrder { order_id, .. } | Command::ExpireOrder { order_id } => {
                stocks(order_stock_keys(loaded.order(order_id)))
            }
            Command::ReceiveReturn { order_id, lines, .. } => stocks(return_stock_keys(loaded.order(order_id), lines)),
            Command::Shipment { shipment_id, command } => {
                let shipment = loaded.shipment(&StreamId::shipment(shipment_id));
                let Some(order_id) = &shipment.order_id else { return vec![] };
                let mut streams = match command {
                    ShipmentCommand::Ship { .. } | ShipmentCommand::RecordCarrierEvent { .. } => {
                        vec![StreamId::order(order_id)]
                    }
                    _ => vec![],
                };
                if let (ShipmentCommand::Ship { .. }, Some(location)) = (command, &shipment.location) {
                    streams.extend(
                        shipment.lines.iter().map(|l| StreamId::stock(&StockKey::new(l.sku.clone(), location.clone()))),
                    );
                }
                streams
            }
            Command::Pay { order_id, .. } => payments::pay_streams(order_id, loaded.order(order_id)),
            Command::Payment { payment_id, .. } => payments::payment_streams(loaded, payment_id),
            Command::FireDeadline { deadline_id } => {
                let Ok(Some(inner)) = deadline_command(loaded.deadline(deadline_id)) else { return vec![] };
                let mut streams = inner.streams();
                if streams.iter().all(|s| loaded.streams.contains_key(s)) {
                    streams.extend(inner.then_streams(loaded));
                }
                streams
            }
            Command::Cart { .. }
            | Command::Order { .. }
            | Command::Stock { .. }
            | Command::Product { .. }
            | Command::PriceList { .. }
            | Command::Promotion { .. }
            | Command::TaxRegion { .. }
            | Command::ShippingZone { .. }
            | Command::Customer { .. }
            | Command::CloseReturnWindow { .. } => {
                vec![]
            }
        }
    }

    /// Decides, then schedules the deadlines the decided events start (their streams are
    /// new: they are appended at version 0, so a second schedule of one id conflicts).
    pub(crate) fn decide_and_schedule(&self, loaded: &mut Loaded, context: &Context) -> Result<Decision, Rejection> {
        let mut decision = self.decide(loaded, context)?;
        for command in deadlines::started(&decision, loaded) {
            let (id, due_at) = match &command {
                Command::ExpireOrder { order_id } => {
                    (DeadlineId::order_payment(order_id), context.now + context.deadlines.order_payment)
                }
                Command::Cart { cart_id, .. } => {
                    (DeadlineId::cart_idle(cart_id), context.now + context.deadlines.cart_idle)
                }
                Command::CloseReturnWindow { order_id } => {
                    (DeadlineId::return_window(order_id), context.now + context.deadlines.return_window)
                }
                _ => unreachable!("deadlines start only these commands"),
            };
            let command = serde_json::to_value(&command).expect("commands serialize");
            let deadline = StreamId::deadline(&id);
            let events = Deadline::decide(&DeadlineAction::Schedule { due_at, command }, &DeadlineState::default())?;
            loaded.streams.insert(deadline.clone(), (AnyState::initial(deadline.kind()), 0));
            decision.push(deadline, events);
        }
        Ok(decision)
    }

    /// Decides over the loaded streams.
    pub(crate) fn decide(&self, loaded: &Loaded, context: &Context) -> Result<Decision, Rejection> {
        match self {
            Command::FireDeadline { deadline_id } => deadlines::fire(deadline_id, loaded, context),
            Command::CloseReturnWindow { order_id } => {
                let events = Order::decide(&OrderAction::CloseReturnWindow {}, loaded.order(order_id))?;
                let mut decision = single(StreamId::order(order_id), events);
                decision.order_id = Some(order_id.clone());
                Ok(decision)
            }
            Command::Product { product_id, command } => decide_product(product_id, command, loaded),
            Command::PriceList { price_list_id, command } => {
                let stream = StreamId::price_list(price_list_id);
                let mut decision =
                    single(stream.clone(), PriceList::decide(command, loaded.state::<PriceList>(&stream))?);
                if let PriceListCommand::Create { currency, .. } = command {
                    let index = StreamId::price_index(*currency);
                    let listed = PriceIndexCommand::List { price_list_id: price_list_id.clone() };
                    decision.push(index.clone(), PriceIndex::decide(&listed, loaded.state::<PriceIndex>(&index))?);
                }
                Ok(decision)
            }
            Command::Cart { cart_id, command: CartCommand::AddItem { sku, quantity } } => {
                let stream = StreamId::cart(cart_id);
                let cart = loaded.state::<Cart>(&stream);
                let currency = cart.open()?;
                let groups = loaded.groups(cart);
                let (quote, product_id) = loaded.quote(sku, currency, cart.channel.as_deref(), context.now, &groups)?;
                let events = add_priced(cart, *quantity, &quote, &product_id, context.now + context.price_ttl)?;
                Ok(single(stream, events))
            }
            Command::Cart { cart_id, command: CartCommand::ApplyCode { code } } => {
                let stream = StreamId::cart(cart_id);
                let cart = loaded.state::<Cart>(&stream);
                cart.open()?;
                let promotion = loaded.state::<Promotion>(&StreamId::promotion(code));
                let kind = promotion.applicable(code.as_str(), &loaded.eligibility(cart, context.now)?)?;
                let discount = Discount { code: code.to_string(), kind: kind.discount() };
                Ok(single(stream.clone(), Cart::decide(&CartCommand::ApplyDiscount { discount }, cart)?))
            }
            Command::Cart { command: CartCommand::ApplyDiscount { discount }, .. } => Err(Rejection::invalid(format!(
                "discount {}: what a discount takes off is the server's; apply a promotion's code",
                discount.code
            ))),
            Command::Cart { command: CartCommand::SelectShippingMethod { method }, .. } => {
                Err(Rejection::invalid(format!(
                    "shipping_method {}: what shipping costs is the server's; select a shipping option by its id",
                    method.id
                )))
            }
            Command::Cart { cart_id, command: CartCommand::SelectShippingOption { option_id } } => {
                let stream = StreamId::cart(cart_id);
                let cart = loaded.state::<Cart>(&stream);
                Ok(single(stream.clone(), choose_shipping(cart, option_id, loaded.zone(cart))?))
            }
            Command::TaxRegion { region_id, command } => {
                let stream = StreamId::tax_region(region_id);
                Ok(single(stream.clone(), TaxRegion::decide(command, loaded.state::<TaxRegion>(&stream))?))
            }
            Command::ShippingZone { zone_id, command } => {
                let stream = StreamId::shipping_zone(zone_id);
                let mut decision =
                    single(stream.clone(), ShippingZone::decide(command, loaded.state::<ShippingZone>(&stream))?);
                let ShippingZoneCommand::Define { currency, countries, .. } = command;
                let index = StreamId::shipping_index(*currency);
                let assign = ShippingIndexCommand::Assign { zone_id: zone_id.clone(), countries: countries.clone() };
                decision.push(index.clone(), ShippingIndex::decide(&assign, loaded.state::<ShippingIndex>(&index))?);
                Ok(decision)
            }
            Command::Customer { customer_id, command } => {
                let stream = StreamId::customer(customer_id);
                let action = CustomerProfileAction::Command(command.clone());
                Ok(single(stream.clone(), CustomerProfile::decide(&action, loaded.state::<CustomerProfile>(&stream))?))
            }
            Command::Cart { cart_id, command } => {
                let stream = StreamId::cart(cart_id);
                Ok(single(stream.clone(), Cart::decide(command, loaded.state::<Cart>(&stream))?))
            }
            Command::Promotion { code, command } => {
                let stream = StreamId::promotion(code);
                let action = PromotionAction::from(command.clone());
                let mut decision =
                    single(stream.clone(), Promotion::decide(&action, loaded.state::<Promotion>(&stream))?);
                if let PromotionCommand::Create { automatic: true, .. } = command {
                    let index = StreamId::automatic_promotions();
                    let list = PromotionIndexCommand::List { code: code.clone() };
                    decision
                        .push(index.clone(), PromotionIndex::decide(&list, loaded.state::<PromotionIndex>(&index))?);
                }
                Ok(decision)
            }
            Command::Checkout { checkout } => {
                if let Some(repricing) = reprice(checkout, loaded, context)? {
                    return Ok(repricing);
                }
                let cart = loaded.state::<Cart>(&StreamId::cart(&checkout.cart_id));
                let stocks = loaded.stocks(checkout.stock_keys(cart));
                let order = loaded.order(&checkout.order_id);
                let mut priced = None;
                let mut decision = decide_checkout(checkout, cart, order, &stocks, |c| {
                    let (breakdown, eligible) = loaded.price(c, context)?;
                    priced = Some((breakdown.promotions.clone(), eligible));
                    Ok(breakdown)
                })?;
                // Priced only when an open cart was checked out (not a repeat).
                let Some((used, eligible)) = priced.filter(|_| cart.status == CartStatus::Open) else {
                    return Ok(decision);
                };
                // Every promotion's use is decided in the same append as the order, at the
                // version read: its last use goes to one checkout only. The cart's own code
                // is redeemed even if pricing left it out, so that a code that no longer
                // applies refuses the checkout, naming why.
                let own = promotion_of(cart);
                let mut codes: Vec<PromotionCode> = used
                    .iter()
                    .filter_map(|p| PromotionCode::parse(&p.code).ok())
                    .filter(|code| Some(code) != own.as_ref())
                    .collect();
                codes.extend(own);
                for code in codes {
                    let stream = StreamId::promotion(&code);
                    let redeem = PromotionAction::Redeem {
                        code: code.to_string(),
                        order_id: checkout.order_id.clone(),
                        customer: cart.customer_key(),
                        cart: Box::new(eligible.clone()),
                    };
                    let promotion = loaded.state::<Promotion>(&stream);
                    // A promotion without limits has no last use to contend for: its use is
                    // recorded in the order alone (`PlacedOrder::promotions`), so a coupon
                    // every cart carries is no hot stream. It must still apply now.
                    if promotion.usage_limit.is_none() && promotion.per_customer_limit.is_none() {
                        promotion.applicable(code.as_str(), &eligible)?;
                        continue;
                    }
                    decision.push(stream.clone(), Promotion::decide(&redeem, promotion)?);
                }
                if let Some(Customer::Registered { customer_id, .. }) = &cart.customer {
                    let stream = StreamId::customer(customer_id);
                    let record = CustomerProfileAction::RecordOrder { order_id: checkout.order_id.clone() };
                    let profile = loaded.get::<CustomerProfile>(&stream).cloned().unwrap_or_default();
                    decision.push(stream, CustomerProfile::decide(&record, &profile)?);
                }
                Ok(decision)
            }
            Command::Pay { order_id, payment_method, provider } => {
                payments::decide_pay(order_id, payment_method, provider, loaded)
            }
            Command::Payment { payment_id, action } => payments::decide_payment(payment_id, action, loaded),
            Command::Order { order_id, command } => {
                let events = Order::decide(&OrderAction::from(command.clone()), loaded.order(order_id))?;
                let mut decision = single(StreamId::order(order_id), events);
                decision.order_id = Some(order_id.clone());
                Ok(decision)
            }
            Command::CancelOrder { order_id, reason } => {
                end_order(order_id, &OrderAction::Cancel { reason: reason.clone() }, loaded)
            }
            Command::ExpireOrder { order_id } => end_order(order_id, &OrderAction::Expire {}, loaded),
            Command::ReceiveReturn { order_id, return_id, lines } => {
                let order = loaded.order(order_id);
                let stocks = loaded.stocks(return_stock_keys(order, lines));
                decide_receive_return(order_id, return_id, lines, order, &stocks)
            }
            Command::Stock { stock, command } => {
                let stream = StreamId::stock(stock);
                let events = Stock::decide(&StockAction::from(command.clone()), loaded.state::<Stock>(&stream))?;
                Ok(single(stream, events))
            }
            Command::Shipment { shipment_id, command } => {
                let stream = StreamId::shipment(shipment_id);
                let shipment = loaded.shipment(&stream);
                match command {
                    ShipmentCommand::Create { order_id, .. } => {
                        decide_create_shipment(shipment_id, command, shipment, loaded.order(order_id))
                    }
                    ShipmentCommand::Ship { .. } | ShipmentCommand::RecordCarrierEvent { .. }
                        if shipment.order_id.is_some() =>
                    {
                        let order = loaded.order(shipment.order_id.as_ref().expect("checked"));
                        if let ShipmentCommand::Ship { .. } = command {
                            let location = shipment.location.clone().expect("a created shipment has a location");
                            let keys =
                                shipment.lines.iter().map(|l| StockKey::new(l.sku.clone(), location.clone())).collect();
                            decide_ship(shipment_id, command, shipment, order, &loaded.stocks(keys))
                        } else {
                            decide_carrier_event(shipment_id, command, shipment, order)
                        }
                    }
                    _ => {
                        let mut decision = single(stream.clone(), Shipment::decide(command, shipment)?);
                        decision.order_id = shipment.order_id.clone();
                        Ok(decision)
                    }
                }
            }
        }
    }
}

fn end_order(order_id: &OrderId, action: &OrderAction, loaded: &Loaded) -> Result<Decision, Rejection> {
    let order = loaded.order(order_id);
    if order.placed.is_none() {
        return Err(Rejection::not_found(format!("order {order_id}: does not exist")));
    }
    decide_end_order(order_id, action, order, &loaded.stocks(order_stock_keys(order)))
}

/// A product's change, with a claim on each SKU it adds: a SKU another product holds is
/// refused by name, and nothing is appended.
fn decide_product(product_id: &ProductId, command: &ProductCommand, loaded: &Loaded) -> Result<Decision, Rejection> {
    let stream = StreamId::product(product_id);
    let mut decision = single(stream.clone(), Product::decide(command, loaded.state::<Product>(&stream))?);
    for sku in command.new_skus() {
        let owner = StreamId::sku_owner(&sku);
        let claim = SkuOwnerCommand::Claim { product_id: product_id.clone() };
        let events = SkuOwner::decide(&claim, loaded.state::<SkuOwner>(&owner))
            .map_err(|r| Rejection::new(r.kind, format!("sku {sku}: {}", r.reason)))?;
        decision.push(owner, events);
    }
    if let ProductCommand::Create { .. } = command {
        let index = StreamId::products();
        let list = ProductIndexCommand::List { product_id: product_id.clone() };
        decision.push(index.clone(), ProductIndex::decide(&list, loaded.state::<ProductIndex>(&index))?);
    }
    Ok(decision)
}

/// The promotion a cart's discount code names, if it names one.
fn promotion_of(cart: &orderlog_domain::cart::CartState) -> Option<PromotionCode> {
    cart.discount.as_ref().and_then(|d| PromotionCode::parse(&d.code).ok())
}

/// A cart as a storefront shows it: priced now as a checkout would price it, and the
/// shipping options its address is offered.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CartView {
    pub cart: CartState,
    /// The cart's version (its stream's).
    pub version: u64,
    /// The breakdown, or why the cart cannot be priced now (a promotion that no longer
    /// applies is left out, not refused: checkout refuses it).
    pub priced: Result<Breakdown, Rejection>,
    pub shipping_options: Vec<OfferedShipping>,
}

/// A shipping option a cart may choose, at its price for that cart.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OfferedShipping {
    pub zone_id: ShippingZoneId,
    pub option_id: orderlog_domain::ShippingOptionId,
    pub name: String,
    pub price: orderlog_domain::Money,
}

/// The view of a cart whose streams ([`cart_streams`]) are loaded.
pub(crate) fn cart_view(cart_stream: &StreamId, loaded: &Loaded, context: &Context) -> CartView {
    let (state, version) = loaded.streams.get(cart_stream).expect("the cart was loaded");
    let cart = Cart::state(state).cloned().unwrap_or_default();
    let priced = loaded.price(&cart, context).map(|(breakdown, _)| breakdown);
    let mut shipping_options = Vec::new();
    if let (Some((zone_id, zone)), Ok(breakdown), true) = (loaded.zone(&cart), &priced, cart.ships()) {
        for (option, price) in zone.offered(breakdown.goods, pricing::weight_grams(&cart.lines)) {
            shipping_options.push(OfferedShipping {
                zone_id: zone_id.clone(),
                option_id: option.id.clone(),
                name: option.name.clone(),
                price,
            });
        }
    }
    CartView { cart, version: *version, priced, shipping_options }
}

/// The registered customer's profile stream, if the cart is a registered customer's.
fn customer_stream(cart: &CartState) -> Option<StreamId> {
    match &cart.customer {
        Some(Customer::Registered { customer_id, .. }) => Some(StreamId::customer(customer_id)),
        _ => None,
    }
}

/// The shipping streams a cart's address and currency name: the currency's index, then
/// the zone it names for the address's country.
fn shipping_streams(loaded: &Loaded, cart: &CartState) -> Vec<StreamId> {
    let (Some(currency), Some(address)) = (cart.currency, &cart.shipping_address) else { return vec![] };
    let index = StreamId::shipping_index(currency);
    match loaded.get::<ShippingIndex>(&index) {
        None => vec![index],
        Some(state) => state.countries.get(&address.country).map(StreamId::shipping_zone).into_iter().collect(),
    }
}

/// Every stream pricing a whole cart reads: its lines' catalog streams, its customer's
/// profile, its own promotion and the automatic ones, its shipping zone and the tax regions
/// of its address.
pub(crate) fn cart_streams(loaded: &Loaded, cart: &CartState) -> Vec<StreamId> {
    let mut streams = pricing_streams(loaded, cart.lines.keys(), cart.currency);
    streams.extend(promotion_of(cart).as_ref().map(StreamId::promotion));
    streams.extend(customer_stream(cart));
    let index = StreamId::automatic_promotions();
    match loaded.get::<PromotionIndex>(&index) {
        None => streams.push(index),
        Some(state) => streams.extend(state.codes.iter().map(StreamId::promotion)),
    }
    streams.extend(shipping_streams(loaded, cart));
    if let Some(address) = cart.tax_address() {
        for id in [TaxRegionId::country(address), TaxRegionId::subdivision(address)].into_iter().flatten() {
            streams.push(StreamId::tax_region(&id));
        }
    }
    streams
}

/// The catalog streams pricing `skus` in `currency` reads: each SKU's owner and the
/// currency's price index, then (once those are loaded) each product and each listed price
/// list.
fn pricing_streams<'a>(
    loaded: &Loaded,
    skus: impl Iterator<Item = &'a Sku>,
    currency: Option<Currency>,
) -> Vec<StreamId> {
    let Some(currency) = currency else { return vec![] };
    let mut streams = Vec::new();
    for sku in skus {
        let owner = StreamId::sku_owner(sku);
        match loaded.streams.get(&owner).and_then(|(s, _)| SkuOwner::state(s)) {
            Some(state) => streams.extend(state.product_id.iter().map(StreamId::product)),
            None => streams.push(owner),
        }
    }
    let index = StreamId::price_index(currency);
    match loaded.streams.get(&index).and_then(|(s, _)| PriceIndex::state(s)) {
        Some(state) => streams.extend(state.lists.iter().map(StreamId::price_list)),
        None => streams.push(index),
    }
    streams
}

/// Checkout's first step: every line must still be for sale (refused, naming each, when
/// not), and a line whose price guarantee has run out is priced again. When that changes a
/// price, the decision is the cart's new prices and a refusal listing them: the cart keeps
/// the new prices, so the next checkout pays them. `None`: check out as the cart is.
fn reprice(checkout: &CheckoutCommand, loaded: &Loaded, context: &Context) -> Result<Option<Decision>, Rejection> {
    let cart_stream = StreamId::cart(&checkout.cart_id);
    let cart = loaded.state::<Cart>(&cart_stream);
    let (CartStatus::Open, Some(currency)) = (&cart.status, cart.currency) else { return Ok(None) };
    let (mut unsellable, mut events, mut repriced) = (Vec::new(), Vec::new(), Vec::new());
    let groups = loaded.groups(cart);
    for line in cart.lines.values() {
        match loaded.quote(&line.sku, currency, cart.channel.as_deref(), context.now, &groups) {
            Err(rejection) => unsellable.push(rejection.reason),
            Ok((quote, product_id)) => {
                let expired = line.pricing.as_ref().is_none_or(|p| p.guaranteed_until <= context.now);
                if expired && quote.unit_price != line.unit_price {
                    repriced.push(Repriced {
                        sku: line.sku.clone(),
                        old_price: line.unit_price,
                        new_price: quote.unit_price,
                    });
                    events.push(CartEvent::ItemRepriced {
                        sku: line.sku.clone(),
                        old_price: line.unit_price,
                        unit_price: quote.unit_price,
                        pricing: pricing_of(&quote, &product_id, context.now + context.price_ttl),
                    });
                }
            }
        }
    }
    if !unsellable.is_empty() {
        return Err(Rejection::conflict(format!("cart: cannot be checked out: {}", unsellable.join("; "))));
    }
    if events.is_empty() {
        return Ok(None);
    }
    let mut decision = Decision { refusal: Some(repricing_refusal(repriced)), ..Decision::default() };
    decision.push(cart_stream, events);
    Ok(Some(decision))
}

/// The refusal of a checkout whose lines were priced again.
fn repricing_refusal(repriced: Vec<Repriced>) -> Rejection {
    let lines: Vec<String> =
        repriced.iter().map(|r| format!("{} from {} to {}", r.sku, r.old_price, r.new_price)).collect();
    let mut refusal = Rejection::conflict(format!(
        "prices changed since the lines were added ({}); the cart shows the new prices: check out again to pay them",
        lines.join(", ")
    ));
    refusal.repriced = repriced;
    refusal
}

/// The refusal a command recorded when all it appended was repriced cart lines: a retry of
/// that checkout answers the same refusal.
pub(crate) fn recorded_refusal(events: &[RecordedEvent]) -> Result<Option<Rejection>, CommandError> {
    if events.is_empty() || events.iter().any(|e| e.event_type != "ItemRepriced") {
        return Ok(None);
    }
    let mut repriced = Vec::with_capacity(events.len());
    for recorded in events {
        if let DomainEvent::Cart(CartEvent::ItemRepriced { sku, old_price, unit_price, .. }) =
            crate::load::decode(recorded)?
        {
            repriced.push(Repriced { sku, old_price, new_price: unit_price });
        }
    }
    Ok(Some(repricing_refusal(repriced)))
}

pub(super) fn single<E: Into<DomainEvent>>(stream: StreamId, events: Vec<E>) -> Decision {
    let mut decision = Decision::default();
    decision.push(stream, events);
    decision
}
