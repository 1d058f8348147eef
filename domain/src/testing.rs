//! Fixtures the tests of every crate share (feature `testing`): one address and one cart
//! ready to check out, so a change to a cart's shape is made once for every test.

use crate::cart::{Address, CartCommand, Customer, ShippingMethod};
use crate::{Currency, Money, Sku};

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
/// units, unit price in cents), the test address and DHL at `shipping` cents.
pub fn cart_commands(customer: Customer, lines: &[(&str, u32, i64)], shipping: i64) -> Vec<CartCommand> {
    let eur = Currency::parse("EUR").expect("EUR");
    let mut commands = vec![CartCommand::Create { currency: eur, customer }];
    for (sku, quantity, cents) in lines {
        let sku = Sku::parse(*sku).expect("a test SKU");
        commands.push(CartCommand::AddItem { sku, quantity: *quantity, unit_price: Money::new(*cents, eur) });
    }
    commands.push(CartCommand::SetShippingAddress { address: address() });
    let method = ShippingMethod { id: "dhl".into(), price: Money::new(shipping, eur) };
    commands.push(CartCommand::SelectShippingMethod { method });
    commands
}

/// A guest customer.
pub fn guest(email: &str) -> Customer {
    Customer::Guest { email: email.into() }
}
