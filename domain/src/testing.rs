//! Fixtures the tests of every crate share (feature `testing`): one address and one cart
//! ready to check out, so a change to a cart's shape is made once for every test.

use crate::cart::{add_priced, pricing_of, Address, Cart, CartCommand, CartEvent, CartState, Customer};
use crate::product::{ProductCommand, Variant};
use crate::Decider;
use crate::{Currency, Money, ProductId, Sku};

/// The test address, in Berlin.
pub fn address() -> Address {
    Address {
        name: "Ann".into(),
        line1: "Main St 1".into(),
        line2: None,
        city: "Berlin".into(),
        postal_code: "10115".into(),
        country: "DE".into(),
        subdivision: None,
    }
}

/// The test address as a request body spells it.
pub fn address_json() -> serde_json::Value {
    serde_json::to_value(address()).expect("an address serializes")
}

/// The commands that make the test cart: opened in EUR by `customer`, these lines (SKU,
/// units; the price comes from the catalog, see [`catalog_commands`]), the test address and
/// the shipping option `dhl` (its price is the test zone's, see [`shipping_zone`]).
pub fn cart_commands(customer: Customer, lines: &[(&str, u32, i64)], _shipping: i64) -> Vec<CartCommand> {
    let eur = Currency::parse("EUR").expect("EUR");
    let mut commands = vec![CartCommand::Create { currency: eur, customer, channel: None }];
    for (sku, quantity, _) in lines {
        let sku = Sku::parse(*sku).expect("a test SKU");
        commands.push(CartCommand::AddItem { sku, quantity: *quantity });
    }
    commands.push(CartCommand::SetShippingAddress { address: address() });
    let option_id = crate::ShippingOptionId::parse("dhl").expect("an id");
    commands.push(CartCommand::SelectShippingOption { option_id });
    commands
}

/// The test tax region: Germany, 19 % standard and 7 % reduced, the standard class by
/// default, the group `diplomats` exempt.
pub fn tax_region() -> (crate::tax::TaxRegionId, crate::tax::TaxRegionCommand) {
    let command = crate::tax::TaxRegionCommand::Define {
        name: "Germany".into(),
        rates: [("standard".to_string(), 1_900), ("reduced".to_string(), 700)].into(),
        default_class: "standard".into(),
        exempt_groups: ["diplomats".to_string()].into(),
    };
    (crate::tax::TaxRegionId::parse("DE").expect("DE"), command)
}

/// The test shipping zone `de`: Germany, in EUR, its one option `dhl` at `cents`, tax
/// included.
pub fn shipping_zone(cents: i64) -> (crate::ShippingZoneId, crate::shipping::ShippingZoneCommand) {
    let eur = Currency::parse("EUR").expect("EUR");
    let option = crate::shipping::ShippingOption {
        id: crate::ShippingOptionId::parse("dhl").expect("an id"),
        name: "DHL".into(),
        rate: crate::shipping::ShippingRate::Flat { price: Money::new(cents, eur) },
    };
    let command = crate::shipping::ShippingZoneCommand::Define {
        name: "Germany".into(),
        currency: eur,
        countries: ["DE".to_string()].into(),
        prices_include_tax: true,
        options: vec![option],
    };
    (crate::ShippingZoneId::parse("de").expect("de"), command)
}

/// The catalog the test cart's lines need: for each (SKU, _, unit price in cents), the
/// product `product-{sku}` with that one variant at that price in EUR, published, each with
/// the command id to run it under: the same command under the same id each time, so running
/// them again is a repeat, not a conflict.
pub fn catalog_commands(lines: &[(&str, u32, i64)]) -> Vec<(String, ProductId, ProductCommand)> {
    let eur = Currency::parse("EUR").expect("EUR");
    let mut commands = Vec::new();
    for (sku, _, cents) in lines {
        let product_id = ProductId::parse(format!("product-{sku}")).expect("a test product id");
        let variant = Variant {
            sku: Sku::parse(*sku).expect("a test SKU"),
            title: format!("The {sku}"),
            options: Default::default(),
            weight_grams: 500,
            prices: vec![Money::new(*cents, eur)],
            requires_shipping: true,
        };
        let create = ProductCommand::Create {
            title: format!("The {sku}"),
            tax_class: "standard".into(),
            prices_include_tax: true,
            variants: vec![variant],
        };
        commands.push((format!("catalog:{product_id}:create"), product_id.clone(), create));
        commands.push((format!("catalog:{product_id}:publish"), product_id, ProductCommand::Publish {}));
    }
    commands
}

/// A guest customer.
pub fn guest(email: &str) -> Customer {
    Customer::Guest { email: email.into() }
}

/// The quote the test catalog gives `sku` at `cents` EUR (its default price, tax included).
pub fn quote(sku: &str, cents: i64) -> crate::price_list::Quote {
    crate::price_list::Quote {
        sku: Sku::parse(sku).expect("a test SKU"),
        title: format!("The {sku}"),
        unit_price: Money::new(cents, Currency::parse("EUR").expect("EUR")),
        tax_inclusive: true,
        tax_class: "standard".into(),
        source: crate::price_list::PriceSource::Default,
        weight_grams: 500,
        requires_shipping: true,
    }
}

/// Adds `quantity` of `sku` at `cents` EUR to the cart `state`, as the command service
/// does with the test catalog's quote, guaranteed until 2026-01-01.
pub fn add_item(
    state: &crate::cart::CartState,
    sku: &str,
    quantity: u32,
    cents: i64,
) -> Result<Vec<crate::cart::CartEvent>, crate::Rejection> {
    let product_id = ProductId::parse(format!("product-{sku}")).expect("a test product id");
    let until = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("a time").to_utc();
    crate::cart::add_priced(state, quantity, &quote(sku, cents), &product_id, until)
}

/// A step of a cart's life: a caller's command, or an item priced by the catalog (added at
/// a quote, or priced again at checkout), as the command service decides those.
#[derive(Clone, Debug)]
pub enum CartStep {
    Do(CartCommand),
    Add { sku: Sku, quantity: u32, price: Money },
    Reprice { sku: Sku, price: Money },
}

/// The cart decider with the command service's pricing steps.
pub struct PricedCart;

impl Decider for PricedCart {
    type Command = CartStep;
    type Event = CartEvent;
    type State = CartState;

    fn decide(step: &CartStep, state: &CartState) -> Result<Vec<CartEvent>, crate::Rejection> {
        let until = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("a time").to_utc();
        let quoted = |sku: &Sku, price: Money| {
            let mut quote = quote(sku.as_str(), price.amount);
            quote.unit_price = price;
            quote
        };
        let product = ProductId::parse("p").expect("an id");
        match step {
            CartStep::Do(command) => Cart::decide(command, state),
            CartStep::Add { sku, quantity, price } => {
                add_priced(state, *quantity, &quoted(sku, *price), &product, until)
            }
            CartStep::Reprice { sku, price } => {
                state.open()?;
                let line = state.lines.get(sku).ok_or_else(|| crate::Rejection::not_found("no line"))?;
                crate::cart::check_price(line.unit_price.currency, *price, "price")?;
                Ok(vec![CartEvent::ItemRepriced {
                    sku: sku.clone(),
                    old_price: line.unit_price,
                    unit_price: *price,
                    pricing: pricing_of(&quoted(sku, *price), &product, until),
                }])
            }
        }
    }

    fn evolve(state: CartState, event: &CartEvent) -> CartState {
        Cart::evolve(state, event)
    }
}

/// The cart with the test zone's `dhl` option chosen (as the command service records it).
pub fn choose_dhl(state: CartState) -> CartState {
    let choice = crate::cart::ShippingChoice {
        zone_id: crate::ShippingZoneId::parse("de").expect("de"),
        option_id: crate::ShippingOptionId::parse("dhl").expect("dhl"),
        name: "DHL".into(),
    };
    Cart::evolve(state, &CartEvent::ShippingOptionSelected { choice })
}

/// Prices a cart as a checkout would with the test zone at `shipping_cents` and the test
/// region's standard rate at `rate_bps`, with these promotions.
pub fn price(
    cart: &CartState,
    rate_bps: u32,
    shipping_cents: i64,
    promotions: Vec<crate::pricing::Applied>,
) -> Result<crate::pricing::Breakdown, crate::Rejection> {
    use crate::tax::{RateTable, TaxRegion, TaxRegionCommand};
    let (region_id, mut define) = tax_region();
    let TaxRegionCommand::Define { rates, .. } = &mut define;
    rates.insert("standard".into(), rate_bps);
    let region = TaxRegion::fold(&TaxRegion::decide(&define, &Default::default())?);
    let table = RateTable { regions: [(region_id, &region)].into() };
    let (zone_id, define) = shipping_zone(shipping_cents);
    let zone =
        crate::shipping::ShippingZone::fold(&crate::shipping::ShippingZone::decide(&define, &Default::default())?);
    let shipping = cart
        .shipping_option
        .as_ref()
        .and_then(|c| zone.option(&c.option_id))
        .map(|option| crate::pricing::Shipping { zone_id: &zone_id, zone: &zone, option });
    let groups = Default::default();
    crate::pricing::price(&crate::pricing::Request {
        currency: cart.open()?,
        lines: &cart.lines,
        promotions,
        shipping,
        tax: cart.shipping_address.as_ref().map(|a| (&table as &dyn crate::tax::TaxProvider, a)),
        groups: &groups,
    })
}
