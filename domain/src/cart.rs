//! The cart: what a shopper intends to buy, until it is checked out or expires.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::price_list::{PriceSource, Quote};
use crate::{
    check_quantity, Currency, CustomerId, Decider, Money, OrderId, ProductId, Rejection, ShippingOptionId,
    ShippingZoneId, Sku,
};

/// Most distinct lines one cart may hold.
pub const CART_LINES_MAX: usize = 100;
/// Most units of one line.
pub const LINE_QUANTITY_MAX: u32 = 10_000;
/// Longest free-text field (names, address lines, codes), in characters.
pub const TEXT_CHARS_MAX: usize = 256;
/// Longest email address, in characters.
pub const EMAIL_CHARS_MAX: usize = 254;

/// Characters that carry nothing a person can read: white space (as Unicode and
/// ECMAScript's `\s` define it, the byte order mark included) and control characters. A
/// text needs at least one other; an email has none. The OpenAPI document's patterns say
/// the same with `[^\s\x00-\x1f\x7f-\x9f]`.
pub fn is_blank(c: char) -> bool {
    c.is_whitespace() || c.is_control() || c == '\u{feff}'
}

/// Who the cart belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Customer {
    Registered { customer_id: CustomerId, email: Option<String> },
    Guest { email: String },
}

/// A postal address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default)]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// The ISO 3166-2 subdivision within the country (`CA` for California), where taxes
    /// differ by state or province.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdivision: Option<String>,
}

impl Address {
    pub fn check(&self) -> Result<(), Rejection> {
        for (field, value) in [
            ("address.name", &self.name),
            ("address.line1", &self.line1),
            ("address.city", &self.city),
            ("address.postal_code", &self.postal_code),
        ] {
            check_text(field, value)?;
        }
        if let Some(line2) = &self.line2 {
            if line2.chars().count() > TEXT_CHARS_MAX {
                return Err(Rejection::invalid(format!("address.line2: longer than {TEXT_CHARS_MAX} characters")));
            }
        }
        if self.country.len() != 2 || !self.country.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(Rejection::invalid(format!(
                "address.country: '{}' is not an ISO 3166-1 alpha-2 code such as 'DE'",
                self.country
            )));
        }
        if let Some(subdivision) = &self.subdivision {
            let ok = (1..=3).contains(&subdivision.len())
                && subdivision.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
            if !ok {
                return Err(Rejection::invalid(format!(
                    "address.subdivision: '{subdivision}' is not an ISO 3166-2 subdivision code such as 'CA'"
                )));
            }
        }
        Ok(())
    }
}

/// Checks a required free-text field.
pub fn check_text(field: &str, value: &str) -> Result<(), Rejection> {
    if value.chars().all(is_blank) {
        return Err(Rejection::invalid(format!(
            "{field}: must not be empty (white space and control characters alone)"
        )));
    }
    if value.chars().count() > TEXT_CHARS_MAX {
        return Err(Rejection::invalid(format!("{field}: longer than {TEXT_CHARS_MAX} characters")));
    }
    Ok(())
}

/// Checks an email address's shape (local part, one '@', a dotted domain).
pub fn check_email(field: &str, email: &str) -> Result<(), Rejection> {
    let bad = || Rejection::invalid(format!("{field}: '{email}' is not an email address"));
    if email.chars().count() > EMAIL_CHARS_MAX || email.chars().any(is_blank) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(())
}

/// A discount code and what it takes off the subtotal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discount {
    pub code: String,
    pub kind: DiscountKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DiscountKind {
    /// A share of the subtotal, in basis points (1 000 = 10 %).
    Percentage { basis_points: u32 },
    /// A fixed amount, never more than the subtotal.
    Fixed { amount: Money },
    /// A fixed amount off each unit.
    PerItem { amount: Money },
    /// Shipping costs nothing.
    FreeShipping {},
    /// In every `buy + get` units of a line, `get` are free.
    BuyXGetY { buy: u32, get: u32 },
}

/// The shipping option a cart chose; its price is always the zone's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingChoice {
    pub zone_id: ShippingZoneId,
    pub option_id: ShippingOptionId,
    pub name: String,
}

/// A selected shipping method and its price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingMethod {
    pub id: String,
    pub price: Money,
}

/// How the catalog priced a line: what it is, where its price came from, and until when
/// that price holds (after that, checkout prices it again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinePricing {
    pub product_id: ProductId,
    pub title: String,
    pub source: PriceSource,
    pub tax_inclusive: bool,
    pub tax_class: String,
    pub guaranteed_until: DateTime<Utc>,
    /// The variant's weight, for shipping rates by weight.
    #[serde(default)]
    pub weight_grams: u32,
    /// Whether the line is shipped (absent on lines from before: they are).
    #[serde(default = "ships", skip_serializing_if = "is_shipped")]
    pub requires_shipping: bool,
}

/// A line is shipped unless its variant says otherwise.
pub fn ships() -> bool {
    true
}

fn is_shipped(requires_shipping: &bool) -> bool {
    *requires_shipping
}

/// One line of a cart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub sku: Sku,
    pub quantity: u32,
    /// The unit price the line got (a snapshot, not a live price).
    pub unit_price: Money,
    /// How the catalog priced it; absent on lines from before the catalog priced carts,
    /// whose price the request named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<LinePricing>,
}

/// A line whose price changed when it was priced again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repriced {
    pub sku: Sku,
    pub old_price: Money,
    pub new_price: Money,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub enum CartStatus {
    #[default]
    NotCreated,
    Open,
    CheckedOut {
        order_id: OrderId,
    },
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CartState {
    pub status: CartStatus,
    pub currency: Option<Currency>,
    /// The sales channel it is bought in (price lists may be for one).
    pub channel: Option<String>,
    pub customer: Option<Customer>,
    pub lines: BTreeMap<Sku, CartLine>,
    pub discount: Option<Discount>,
    pub contact_email: Option<String>,
    pub shipping_address: Option<Address>,
    /// A shipping method whose price a client named (carts from before the server priced
    /// shipping); a checkout needs a [`ShippingChoice`] instead.
    pub shipping_method: Option<ShippingMethod>,
    pub shipping_option: Option<ShippingChoice>,
    /// Where the buyer is billed: where a cart that ships nothing is taxed.
    pub billing_address: Option<Address>,
}

/// A cart's totals before tax. Every amount is ≥ 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartTotals {
    pub subtotal: Money,
    pub discount: Money,
    pub shipping: Money,
}

impl CartState {
    /// Who the cart's customer is, for per-customer promotion limits: the customer id, or
    /// the guest's email in lower case.
    pub fn customer_key(&self) -> String {
        match &self.customer {
            Some(Customer::Registered { customer_id, .. }) => format!("customer:{customer_id}"),
            Some(Customer::Guest { email }) => format!("email:{}", email.to_lowercase()),
            None => String::new(),
        }
    }

    /// Subtotal, discount (capped at the subtotal, so totals never go negative) and shipping.
    pub fn totals(&self) -> Result<CartTotals, Rejection> {
        let currency = self.currency.ok_or_else(|| Rejection::not_found("cart: does not exist"))?;
        let mut subtotal = Money::zero(currency);
        for line in self.lines.values() {
            subtotal = subtotal.checked_add(line.unit_price.checked_mul(line.quantity)?)?;
        }
        let discount = match &self.discount {
            None => Money::zero(currency),
            Some(Discount { kind: DiscountKind::Percentage { basis_points }, .. }) => {
                subtotal.share_bps(*basis_points)?
            }
            Some(Discount { kind: DiscountKind::Fixed { amount }, .. }) => {
                Money::new(amount.amount.min(subtotal.amount), currency)
            }
            // Line and shipping discounts: what they take off is `pricing::price`'s to say.
            Some(Discount {
                kind: DiscountKind::PerItem { .. } | DiscountKind::FreeShipping {} | DiscountKind::BuyXGetY { .. },
                ..
            }) => Money::zero(currency),
        };
        let shipping = self.shipping_method.as_ref().map_or(Money::zero(currency), |m| m.price);
        Ok(CartTotals { subtotal, discount, shipping })
    }

    /// Whether any line is shipped (a cart of gift cards or downloads ships nothing).
    pub fn ships(&self) -> bool {
        self.lines.values().any(|l| l.pricing.as_ref().is_none_or(|p| p.requires_shipping))
    }

    /// The address tax is computed for: the shipping address when the cart ships
    /// something, the billing address when it ships nothing.
    pub fn tax_address(&self) -> Option<&Address> {
        match self.ships() {
            true => self.shipping_address.as_ref(),
            false => self.billing_address.as_ref(),
        }
    }

    /// The email an order confirmation goes to.
    pub fn email(&self) -> Option<&str> {
        self.contact_email.as_deref().or(match &self.customer {
            Some(Customer::Guest { email }) => Some(email.as_str()),
            Some(Customer::Registered { email, .. }) => email.as_deref(),
            None => None,
        })
    }

    /// The cart's currency, if it is open; why it cannot change otherwise.
    pub fn open(&self) -> Result<Currency, Rejection> {
        match &self.status {
            CartStatus::NotCreated => Err(Rejection::not_found("cart: does not exist")),
            CartStatus::Open => Ok(self.currency.expect("an open cart has a currency")),
            CartStatus::CheckedOut { order_id } => Err(Rejection::conflict(format!(
                "cart: already checked out as order {order_id}; it can no longer change"
            ))),
            CartStatus::Expired => Err(Rejection::conflict("cart: expired; it can no longer change")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CartCommand {
    Create {
        currency: Currency,
        customer: Customer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// Priced by the catalog: decided by [`add_priced`] with the quote the command service
    /// got for it, never by [`Cart::decide`].
    AddItem {
        sku: Sku,
        quantity: u32,
    },
    /// Applies the promotion with this code: the command service turns it into the
    /// promotion's discount (an `ApplyDiscount`) when its conditions hold.
    ApplyCode {
        code: crate::PromotionCode,
    },
    ChangeQuantity {
        sku: Sku,
        quantity: u32,
    },
    RemoveItem {
        sku: Sku,
    },
    ApplyDiscount {
        discount: Discount,
    },
    RemoveDiscount {},
    SetContact {
        email: String,
    },
    SetShippingAddress {
        address: Address,
    },
    SetBillingAddress {
        address: Address,
    },
    /// Names a shipping price: refused since the server prices shipping (kept so that the
    /// refusal names the command).
    SelectShippingMethod {
        method: ShippingMethod,
    },
    /// Picks a shipping option of the zone that serves the cart's address: the command
    /// service checks it and turns it into the choice (see [`choose_shipping`]).
    SelectShippingOption {
        option_id: ShippingOptionId,
    },
    Expire {},
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartEvent {
    CartCreated {
        currency: Currency,
        customer: Customer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>
    },
    ItemAdded {
        sku: Sku,
        quantity: u32,
        unit_price: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pricing: Option<LinePricing>
    },
    /// A line priced again (its guarantee had run out) at another price.
    ItemRepriced { sku: Sku, old_price: Money, unit_price: Money, pricing: LinePricing },
    ItemQuantityChanged { sku: Sku, quantity: u32 },
    ItemRemoved { sku: Sku },
    DiscountApplied { discount: Discount },
    DiscountRemoved { code: String },
    ContactSet { email: String },
    ShippingAddressSet { address: Address },
    BillingAddressSet { address: Address },
    ShippingMethodSelected { method: ShippingMethod },
    ShippingOptionSelected { choice: ShippingChoice },
    CartCheckedOut { order_id: OrderId },
    CartExpired {},
}
}

pub struct Cart;

impl Decider for Cart {
    type Command = CartCommand;
    type Event = CartEvent;
    type State = CartState;

    fn decide(command: &CartCommand, state: &CartState) -> Result<Vec<CartEvent>, Rejection> {
        use CartCommand as C;
        use CartEvent as E;
        if let C::Create { currency, customer, channel } = command {
            if state.status != CartStatus::NotCreated {
                return Err(Rejection::conflict("cart: already exists"));
            }
            match customer {
                Customer::Guest { email } => check_email("customer.email", email)?,
                Customer::Registered { email: Some(email), .. } => check_email("customer.email", email)?,
                Customer::Registered { email: None, .. } => {}
            }
            if let Some(channel) = channel {
                check_text("channel", channel)?;
            }
            return Ok(vec![E::CartCreated {
                currency: *currency,
                customer: customer.clone(),
                channel: channel.clone(),
            }]);
        }
        let currency = state.open()?;
        let event = match command {
            C::Create { .. } => unreachable!("handled above"),
            C::AddItem { sku, .. } => {
                return Err(Rejection::invalid(format!(
                    "sku {sku}: a line is priced by the catalog; add it through the command service"
                )))
            }
            C::ApplyCode { code } => {
                return Err(Rejection::invalid(format!(
                    "code {code}: a promotion is resolved by the command service; apply it through it"
                )))
            }
            C::ChangeQuantity { sku, quantity } => {
                check_quantity("quantity", *quantity)?;
                check_line_quantity(*quantity)?;
                let line = state.lines.get(sku).ok_or_else(|| no_line(sku))?;
                if line.quantity == *quantity {
                    return Ok(vec![]);
                }
                E::ItemQuantityChanged { sku: sku.clone(), quantity: *quantity }
            }
            C::RemoveItem { sku } => {
                state.lines.get(sku).ok_or_else(|| no_line(sku))?;
                E::ItemRemoved { sku: sku.clone() }
            }
            C::ApplyDiscount { discount } => {
                check_text("discount.code", &discount.code)?;
                match &discount.kind {
                    DiscountKind::Percentage { basis_points } => {
                        if *basis_points == 0 || *basis_points > 10_000 {
                            return Err(Rejection::invalid("discount.basis_points: must be between 1 and 10000"));
                        }
                    }
                    DiscountKind::Fixed { amount } | DiscountKind::PerItem { amount } => {
                        crate::money::check_amount("discount.amount", amount.amount, 1)?;
                        check_price(currency, *amount, "discount.amount")?;
                    }
                    DiscountKind::FreeShipping {} | DiscountKind::BuyXGetY { .. } => {}
                }
                if state.discount.as_ref() == Some(discount) {
                    return Ok(vec![]);
                }
                E::DiscountApplied { discount: discount.clone() }
            }
            C::RemoveDiscount {} => match &state.discount {
                None => return Ok(vec![]),
                Some(d) => E::DiscountRemoved { code: d.code.clone() },
            },
            C::SetContact { email } => {
                check_email("email", email)?;
                E::ContactSet { email: email.clone() }
            }
            C::SetShippingAddress { address } => {
                address.check()?;
                E::ShippingAddressSet { address: address.clone() }
            }
            C::SetBillingAddress { address } => {
                address.check()?;
                E::BillingAddressSet { address: address.clone() }
            }
            C::SelectShippingMethod { method } => {
                check_text("shipping_method.id", &method.id)?;
                check_price(currency, method.price, "shipping_method.price")?;
                E::ShippingMethodSelected { method: method.clone() }
            }
            C::SelectShippingOption { option_id } => {
                return Err(Rejection::invalid(format!(
                    "option_id {option_id}: a shipping option is priced by its zone; select it through the command \
                     service"
                )))
            }
            C::Expire {} => E::CartExpired {},
        };
        Ok(vec![event])
    }

    fn evolve(mut state: CartState, event: &CartEvent) -> CartState {
        use CartEvent as E;
        match event {
            E::CartCreated { currency, customer, channel } => {
                state.status = CartStatus::Open;
                state.currency = Some(*currency);
                state.customer = Some(customer.clone());
                state.channel = channel.clone();
            }
            E::ItemAdded { sku, quantity, unit_price, pricing } => {
                let line = state.lines.entry(sku.clone()).or_insert(CartLine {
                    sku: sku.clone(),
                    quantity: 0,
                    unit_price: *unit_price,
                    pricing: None,
                });
                // The whole line takes the latest price and its guarantee.
                line.quantity = line.quantity.saturating_add(*quantity);
                line.unit_price = *unit_price;
                line.pricing = pricing.clone();
            }
            E::ItemRepriced { sku, unit_price, pricing, .. } => {
                if let Some(line) = state.lines.get_mut(sku) {
                    line.unit_price = *unit_price;
                    line.pricing = Some(pricing.clone());
                }
            }
            E::ItemQuantityChanged { sku, quantity } => {
                if let Some(line) = state.lines.get_mut(sku) {
                    line.quantity = *quantity;
                }
            }
            E::ItemRemoved { sku } => {
                state.lines.remove(sku);
            }
            E::DiscountApplied { discount } => state.discount = Some(discount.clone()),
            E::DiscountRemoved { .. } => state.discount = None,
            E::ContactSet { email } => state.contact_email = Some(email.clone()),
            E::ShippingAddressSet { address } => state.shipping_address = Some(address.clone()),
            E::BillingAddressSet { address } => state.billing_address = Some(address.clone()),
            E::ShippingMethodSelected { method } => state.shipping_method = Some(method.clone()),
            E::ShippingOptionSelected { choice } => state.shipping_option = Some(choice.clone()),
            E::CartCheckedOut { order_id } => state.status = CartStatus::CheckedOut { order_id: order_id.clone() },
            E::CartExpired {} => state.status = CartStatus::Expired,
        }
        state
    }
}

/// Adds `quantity` units of a SKU at the price the catalog quoted for this cart, guaranteed
/// until `guaranteed_until`: the cart's half of an add-item decision (the command service
/// gets the quote from the product and the price lists in force).
pub fn add_priced(
    state: &CartState,
    quantity: u32,
    quote: &Quote,
    product_id: &ProductId,
    guaranteed_until: DateTime<Utc>,
) -> Result<Vec<CartEvent>, Rejection> {
    let currency = state.open()?;
    let sku = &quote.sku;
    check_quantity("quantity", quantity)?;
    check_price(currency, quote.unit_price, "unit_price")?;
    let existing = state.lines.get(sku).map_or(0, |l| l.quantity);
    if existing == 0 && state.lines.len() >= CART_LINES_MAX {
        return Err(Rejection::conflict(format!("cart: already holds {CART_LINES_MAX} lines")));
    }
    check_line_quantity(quantity)?;
    if existing.saturating_add(quantity) > LINE_QUANTITY_MAX {
        return Err(Rejection::conflict(format!(
            "quantity: the cart holds {existing} of {sku}; {quantity} more would pass the limit of \
             {LINE_QUANTITY_MAX} units per line"
        )));
    }
    Ok(vec![CartEvent::ItemAdded {
        sku: sku.clone(),
        quantity,
        unit_price: quote.unit_price,
        pricing: Some(pricing_of(quote, product_id, guaranteed_until)),
    }])
}

/// The cart's half of choosing a shipping option: the zone that serves its address and
/// currency, and the option of it. Refused, naming the cause, when the cart has no address,
/// no zone serves it, or the zone has no such option.
pub fn choose_shipping(
    state: &CartState,
    option_id: &ShippingOptionId,
    zone: Option<(&ShippingZoneId, &crate::shipping::ShippingZoneState)>,
) -> Result<Vec<CartEvent>, Rejection> {
    let currency = state.open()?;
    let address = state
        .shipping_address
        .as_ref()
        .ok_or_else(|| Rejection::conflict("shipping_address: set the cart's address before choosing shipping"))?;
    let (zone_id, zone) = zone.filter(|(_, z)| z.defined).ok_or_else(|| {
        Rejection::conflict(format!("shipping: no shipping zone serves {} in {currency}", address.country))
    })?;
    let option = zone.option(option_id).ok_or_else(|| {
        let offered: Vec<&str> = zone.options.iter().map(|o| o.id.as_str()).collect();
        Rejection::conflict(format!(
            "option_id {option_id}: does not serve {} (zone {zone_id} offers {})",
            address.country,
            offered.join(", ")
        ))
    })?;
    let choice = ShippingChoice { zone_id: zone_id.clone(), option_id: option.id.clone(), name: option.name.clone() };
    if state.shipping_option.as_ref() == Some(&choice) {
        return Ok(vec![]);
    }
    Ok(vec![CartEvent::ShippingOptionSelected { choice }])
}

/// The pricing a line keeps from a quote.
pub fn pricing_of(quote: &Quote, product_id: &ProductId, guaranteed_until: DateTime<Utc>) -> LinePricing {
    LinePricing {
        product_id: product_id.clone(),
        title: quote.title.clone(),
        source: quote.source.clone(),
        tax_inclusive: quote.tax_inclusive,
        tax_class: quote.tax_class.clone(),
        guaranteed_until,
        weight_grams: quote.weight_grams,
        requires_shipping: quote.requires_shipping,
    }
}

fn no_line(sku: &Sku) -> Rejection {
    Rejection::not_found(format!("sku: cart has no line for {sku}"))
}

fn check_line_quantity(quantity: u32) -> Result<(), Rejection> {
    if quantity > LINE_QUANTITY_MAX {
        return Err(Rejection::invalid(format!(
            "quantity: {quantity} exceeds the limit of {LINE_QUANTITY_MAX} units per line"
        )));
    }
    Ok(())
}

/// A price must be in the cart's currency and from 0 to [`crate::money::AMOUNT_MAX`].
pub fn check_price(currency: Currency, price: Money, field: &str) -> Result<(), Rejection> {
    crate::money::check_amount(field, price.amount, 0)?;
    if price.currency != currency {
        return Err(Rejection::conflict(format!(
            "{field}: currency {} differs from the cart's {currency}",
            price.currency
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{given_when, RejectionKind};

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }
    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }
    fn created() -> CartEvent {
        CartEvent::CartCreated {
            currency: eur(),
            customer: Customer::Guest { email: "ann@example.com".into() },
            channel: None,
        }
    }
    fn added(s: &str, q: u32, price: i64) -> CartEvent {
        crate::testing::add_item(&Cart::fold(&[created()]), s, q, price).unwrap().remove(0)
    }
    fn guest() -> Customer {
        Customer::Guest { email: "ann@example.com".into() }
    }

    #[test]
    fn create_a_guest_cart() {
        let cmd = CartCommand::Create { currency: eur(), customer: guest(), channel: None };
        assert_eq!(given_when::<Cart>(&[], &cmd).unwrap(), vec![created()]);
        let blank = CartCommand::Create { currency: eur(), customer: guest(), channel: Some(" ".into()) };
        assert!(given_when::<Cart>(&[], &blank).unwrap_err().reason.contains("channel"));
    }

    #[test]
    fn a_guest_needs_an_email() {
        let cmd = CartCommand::Create {
            currency: eur(),
            customer: Customer::Guest { email: "not-an-email".into() },
            channel: None,
        };
        let err = given_when::<Cart>(&[], &cmd).unwrap_err();
        assert_eq!(err.kind, RejectionKind::Invalid);
        assert!(err.reason.contains("customer.email"), "{}", err.reason);
    }

    #[test]
    fn creating_twice_is_refused() {
        let cmd = CartCommand::Create { currency: eur(), customer: guest(), channel: None };
        assert_eq!(given_when::<Cart>(&[created()], &cmd).unwrap_err().kind, RejectionKind::Conflict);
    }

    #[test]
    fn commands_on_a_missing_cart_are_not_found() {
        let err = given_when::<Cart>(&[], &CartCommand::Expire {}).unwrap_err();
        assert_eq!(err.kind, RejectionKind::NotFound);
    }

    #[test]
    fn add_item_and_adding_again_sums_quantities() {
        let events = crate::testing::add_item(&Cart::fold(&[created()]), "mug", 2, 900).unwrap();
        assert_eq!(events, vec![added("mug", 2, 900)]);
        let state = Cart::fold(&[created(), added("mug", 2, 900), added("mug", 3, 950)]);
        assert_eq!(state.lines[&sku("mug")].quantity, 5);
        // The whole line takes the latest price, with its source and guarantee.
        assert_eq!(state.lines[&sku("mug")].unit_price, Money::new(950, eur()));
        assert_eq!(state.lines[&sku("mug")].pricing.as_ref().unwrap().title, "The mug");
        // The decider alone cannot price a line.
        let unpriced = CartCommand::AddItem { sku: sku("mug"), quantity: 1 };
        assert!(given_when::<Cart>(&[created()], &unpriced).unwrap_err().reason.contains("priced by the catalog"));
    }

    #[test]
    fn add_item_refuses_zero_quantity_other_currency_and_negative_price() {
        let open = Cart::fold(&[created()]);
        assert!(crate::testing::add_item(&open, "mug", 0, 1).unwrap_err().reason.contains("quantity"));
        let mut usd = crate::testing::quote("mug", 1);
        usd.unit_price = Money::new(1, Currency::parse("USD").unwrap());
        let until = chrono::Utc::now();
        let product = crate::ProductId::parse("p").unwrap();
        assert!(add_priced(&open, 1, &usd, &product, until).unwrap_err().reason.contains("USD"));
        assert!(crate::testing::add_item(&open, "mug", 1, -1).unwrap_err().reason.contains("negative"));
        assert!(crate::testing::add_item(&open, "mug", LINE_QUANTITY_MAX + 1, 1).is_err());
    }

    #[test]
    fn change_and_remove_need_the_line() {
        let change = CartCommand::ChangeQuantity { sku: sku("mug"), quantity: 4 };
        assert_eq!(given_when::<Cart>(&[created()], &change).unwrap_err().kind, RejectionKind::NotFound);
        assert_eq!(
            given_when::<Cart>(&[created(), added("mug", 1, 900)], &change).unwrap(),
            vec![CartEvent::ItemQuantityChanged { sku: sku("mug"), quantity: 4 }]
        );
        let same = CartCommand::ChangeQuantity { sku: sku("mug"), quantity: 1 };
        assert!(given_when::<Cart>(&[created(), added("mug", 1, 900)], &same).unwrap().is_empty());
        let remove = CartCommand::RemoveItem { sku: sku("mug") };
        assert_eq!(
            given_when::<Cart>(&[created(), added("mug", 1, 900)], &remove).unwrap(),
            vec![CartEvent::ItemRemoved { sku: sku("mug") }]
        );
        assert!(given_when::<Cart>(&[created()], &remove).is_err());
    }

    #[test]
    fn discounts_never_make_totals_negative() {
        let fixed = Discount { code: "BIG".into(), kind: DiscountKind::Fixed { amount: Money::new(5_000, eur()) } };
        let state = Cart::fold(&[created(), added("mug", 1, 900), CartEvent::DiscountApplied { discount: fixed }]);
        let totals = state.totals().unwrap();
        assert_eq!(totals.discount.amount, 900);
        assert_eq!(totals.subtotal.amount - totals.discount.amount, 0);
    }

    #[test]
    fn discount_apply_and_remove() {
        let d = Discount { code: "TEN".into(), kind: DiscountKind::Percentage { basis_points: 1_000 } };
        let cmd = CartCommand::ApplyDiscount { discount: d.clone() };
        assert_eq!(
            given_when::<Cart>(&[created()], &cmd).unwrap(),
            vec![CartEvent::DiscountApplied { discount: d.clone() }]
        );
        let bad = CartCommand::ApplyDiscount {
            discount: Discount { code: "X".into(), kind: DiscountKind::Percentage { basis_points: 10_001 } },
        };
        assert!(given_when::<Cart>(&[created()], &bad).is_err());
        let remove = CartCommand::RemoveDiscount {};
        assert!(given_when::<Cart>(&[created()], &remove).unwrap().is_empty());
        assert_eq!(
            given_when::<Cart>(&[created(), CartEvent::DiscountApplied { discount: d }], &remove).unwrap(),
            vec![CartEvent::DiscountRemoved { code: "TEN".into() }]
        );
    }

    #[test]
    fn contact_address_and_shipping_method() {
        let contact = CartCommand::SetContact { email: "bob@example.org".into() };
        assert_eq!(
            given_when::<Cart>(&[created()], &contact).unwrap(),
            vec![CartEvent::ContactSet { email: "bob@example.org".into() }]
        );
        let bad_contact = CartCommand::SetContact { email: "bob@".into() };
        assert!(given_when::<Cart>(&[created()], &bad_contact).is_err());
        let address = crate::testing::address();
        let set = CartCommand::SetShippingAddress { address: address.clone() };
        assert_eq!(
            given_when::<Cart>(&[created()], &set).unwrap(),
            vec![CartEvent::ShippingAddressSet { address: address.clone() }]
        );
        let bad = CartCommand::SetShippingAddress { address: Address { country: "Germany".into(), ..address } };
        assert!(given_when::<Cart>(&[created()], &bad).unwrap_err().reason.contains("country"));
        let method = ShippingMethod { id: "dhl".into(), price: Money::new(490, eur()) };
        let select = CartCommand::SelectShippingMethod { method: method.clone() };
        assert_eq!(
            given_when::<Cart>(&[created()], &select).unwrap(),
            vec![CartEvent::ShippingMethodSelected { method }]
        );
    }

    #[test]
    fn checked_out_and_expired_carts_are_frozen() {
        let order_id = OrderId::parse("o1").unwrap();
        let add = |events: &[CartEvent]| crate::testing::add_item(&Cart::fold(events), "mug", 1, 1);
        let checked_out = [created(), CartEvent::CartCheckedOut { order_id }];
        let err = add(&checked_out).unwrap_err();
        assert_eq!(err.kind, RejectionKind::Conflict);
        assert!(err.reason.contains("o1"));
        let expired = [created(), CartEvent::CartExpired {}];
        assert!(add(&expired).unwrap_err().reason.contains("expired"));
        assert_eq!(given_when::<Cart>(&[created()], &CartCommand::Expire {}).unwrap(), vec![CartEvent::CartExpired {}]);
    }
}
