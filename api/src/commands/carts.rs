//! Cart commands and checkout (scope `shop`).

use std::collections::BTreeMap;

use orderlog_commands::Command;
use orderlog_domain::cart::{CartCommand, LINE_QUANTITY_MAX};
use orderlog_domain::checkout::CheckoutCommand;
use orderlog_domain::{CartId, Currency, LocationId, OrderId, PromotionCode, ShippingOptionId, Sku};
use serde_json::{json, Value};

use super::wire::{Address, Customer};
use super::{body, id, NoBody, Params};
use crate::openapi::schema::{self, email, int, nullable, opt, reference, req, text};
use crate::problem::Problem;

/// The namespace of order ids made from cart ids (UUID v5).
const ORDER_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f72_6465_726c_6f67_2d6f_7264_6572_6964);

fn cart(path: &Params, command: CartCommand) -> Result<Command, Problem> {
    Ok(Command::Cart { cart_id: path.id("cart_id", CartId::parse)?, command })
}

fn quantity() -> Value {
    int(1, i64::from(LINE_QUANTITY_MAX))
}

body! {
    NewCart {
        cart_id: Option<CartId> = opt(nullable(schema::id())),
        currency: Currency = req(reference("Currency")),
        customer: Customer = req(reference("Customer")),
        /// The sales channel it is bought in (a price list may be for one).
        #[serde(default)]
        channel: Option<String> = opt(nullable(text())),
    }
}

pub(super) fn create(body: NewCart, _: &Params) -> Result<Command, Problem> {
    let cart_id = match body.cart_id {
        Some(cart_id) => cart_id,
        None => id(CartId::parse(format!("cart-{}", uuid::Uuid::new_v4().simple())))?,
    };
    let command =
        CartCommand::Create { currency: body.currency, customer: body.customer.into(), channel: body.channel };
    Ok(Command::Cart { cart_id, command })
}

body! {
    Item {
        sku: Sku = req(schema::id()),
        quantity: u32 = req(quantity()),
    }
}

/// The price is the catalog's: a body that names one is refused (422, naming the field).
pub(super) fn add_item(item: Item, path: &Params) -> Result<Command, Problem> {
    cart(path, CartCommand::AddItem { sku: item.sku, quantity: item.quantity })
}

body! {
    Quantity { quantity: u32 = req(quantity()) }
}

pub(super) fn change_quantity(body: Quantity, path: &Params) -> Result<Command, Problem> {
    cart(path, CartCommand::ChangeQuantity { sku: path.id("sku", Sku::parse)?, quantity: body.quantity })
}

pub(super) fn remove_item(_: NoBody, path: &Params) -> Result<Command, Problem> {
    cart(path, CartCommand::RemoveItem { sku: path.id("sku", Sku::parse)? })
}

body! {
    /// A promotion's code: what it takes off is the server's (POST /promotions).
    DiscountCode { code: PromotionCode = req(schema::id()) }
}

pub(super) fn apply_discount(body: DiscountCode, path: &Params) -> Result<Command, Problem> {
    cart(path, CartCommand::ApplyCode { code: body.code })
}

pub(super) fn remove_discount(_: NoBody, path: &Params) -> Result<Command, Problem> {
    cart(path, CartCommand::RemoveDiscount {})
}

body! {
    Contact { email: String = req(email()) }
}

pub(super) fn set_contact(body: Contact, path: &Params) -> Result<Command, Problem> {
    cart(path, CartCommand::SetContact { email: body.email })
}

pub(super) fn set_shipping_address(address: Address, path: &Params) -> Result<Command, Problem> {
    cart(path, CartCommand::SetShippingAddress { address: address.into() })
}

pub(super) fn set_billing_address(address: Address, path: &Params) -> Result<Command, Problem> {
    cart(path, CartCommand::SetBillingAddress { address: address.into() })
}

body! {
    /// One of the options `GET /carts/{cart_id}` offers for the cart's address: its price
    /// is the zone's, so a body that names one is refused (422, naming the field).
    ShippingOption { option_id: ShippingOptionId = req(schema::id()) }
}

pub(super) fn select_shipping_option(body: ShippingOption, path: &Params) -> Result<Command, Problem> {
    cart(path, CartCommand::SelectShippingOption { option_id: body.option_id })
}

body! {
    Sources {
        order_id: Option<OrderId> = opt(nullable(schema::id())),
        location: LocationId = req(schema::id()),
        #[serde(default)]
        sources: BTreeMap<Sku, LocationId> =
            opt(json!({"type": "object", "propertyNames": schema::id(), "additionalProperties": schema::id()})),
    }
}

pub(super) fn checkout(body: Sources, path: &Params) -> Result<Command, Problem> {
    let cart_id = path.id("cart_id", CartId::parse)?;
    // Without an order id, the order's id follows from the cart's, so checking the same
    // cart out again names the same order.
    let order_id = match body.order_id {
        Some(order_id) => order_id,
        None => id(OrderId::parse(format!(
            "order-{}",
            uuid::Uuid::new_v5(&ORDER_ID_NAMESPACE, cart_id.as_str().as_bytes()).simple()
        )))?,
    };
    let (location, sources) = (body.location, body.sources);
    Ok(Command::Checkout { checkout: CheckoutCommand { cart_id, order_id, location, sources } })
}
