//! Fixtures the tests of every crate share (feature `testing`): one address and one cart
//! ready to check out, so a change to a cart's shape is made once for every test.

use crate::cart::{add_priced, pricing_of, Address, Cart, CartCommand, CartEvent, CartState, Customer, ShippingMethod};
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
    }
}

/// The test address as a request body spells it.
pub fn address_json() -> serde_json::Value {
    serde_json::to_value(address()).expect("an address serializes")
}

/// The commands that make the test cart: opened in EUR by `customer`, these lines (SKU,
/// units; the price comes from the catalog, see [`catalog_commands`]), the test address and
/// DHL at `shipping` cents.
pub fn cart_commands(customer: Customer, lines: &[(&str, u32, i64)], shipping: i64) -> Vec<CartCommand> {
    let eur = Currency::parse("EUR").expect("EUR");
    let mut commands = vec![CartCommand::Create { currency: eur, customer, channel: None }];
    for (sku, quantity, _) in lines {
        let sku = Sku::parse(*sku).expect("a test SKU");
        commands.push(CartCommand::AddItem { sku, quantity: *quantity });
    }
    commands.push(CartCommand::SetShippingAddress { address: address() });
    let method = ShippingMethod { id: "dhl".into(), price: Money::new(shipping, eur) };
    commands.push(CartCommand::SelectShippingMethod { method });
    commands
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
