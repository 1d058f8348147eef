//! What a cart costs, line by line: the one computation behind a cart's breakdown and the
//! order a checkout places, so the two never disagree.
//!
//! 1. Each line's amount is its unit price (the catalog's, see [`crate::price_list`]) times
//!    its quantity.
//! 2. Promotions take their discounts off the lines, in the order given (automatic ones by
//!    code, then the cart's code), each from what the earlier ones left, never below zero:
//!    a percentage of each line it covers (rounded half to even per line); a fixed amount
//!    per order, shared among the lines it covers in proportion to what is left of them
//!    (the cents a share leaves over go to the largest remainders, then the first SKUs); a
//!    fixed amount per unit; for buy X get Y, Y units free in every X + Y of a line. A
//!    promotion that names SKUs or products covers those lines only.
//! 3. Shipping is the chosen option's price for the goods after those discounts and the
//!    cart's weight; a free-shipping promotion takes it off.
//! 4. Tax is computed per line, and for shipping, on what is left after discounts, by the
//!    [`TaxProvider`] for the shipping address (see [`crate::tax`] for the rates and the
//!    rounding).
//!
//! `total = subtotal − discount + shipping + tax − tax_included`, where `tax_included` is
//! the tax already inside tax-inclusive prices: every amount is in the cart's currency and
//! none is negative.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cart::{Address, CartLine};
use crate::promotion::{Conditions, PromotionKind};
use crate::shipping::{ShippingOption, ShippingZoneState};
use crate::tax::{div_half_even, tax_line, TaxLine, TaxProvider};
use crate::{Currency, Money, Rejection, ShippingOptionId, ShippingZoneId, Sku};

/// A promotion as pricing applies it.
#[derive(Clone, Copy, Debug)]
pub struct Applied<'a> {
    pub code: &'a str,
    pub kind: &'a PromotionKind,
    pub conditions: &'a Conditions,
}

/// The shipping option a cart chose, in the zone that serves its address.
#[derive(Clone, Copy, Debug)]
pub struct Shipping<'a> {
    pub zone_id: &'a ShippingZoneId,
    pub zone: &'a ShippingZoneState,
    pub option: &'a ShippingOption,
}

/// Everything a price depends on.
pub struct Request<'a> {
    pub currency: Currency,
    pub lines: &'a BTreeMap<Sku, CartLine>,
    pub promotions: Vec<Applied<'a>>,
    pub shipping: Option<Shipping<'a>>,
    /// Who computes tax, and for which address; without it no tax is computed (a cart
    /// with no address yet).
    pub tax: Option<(&'a dyn TaxProvider, &'a Address)>,
    /// The customer's groups (tax exemptions).
    pub groups: &'a BTreeSet<String>,
}

/// A line as priced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price: Money,
    /// Unit price × quantity.
    pub amount: Money,
    /// What promotions took off the line.
    pub discount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<TaxLine>,
    /// What the line costs: amount − discount + the tax added on top.
    pub total: Money,
}

/// What one promotion took off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionUse {
    pub code: String,
    pub discount: Money,
}

/// The chosen shipping, priced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedShipping {
    pub zone_id: ShippingZoneId,
    pub option_id: ShippingOptionId,
    pub name: String,
    pub price: Money,
    /// What a free-shipping promotion took off.
    pub discount: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax: Option<TaxLine>,
}

/// Every amount of a cart or order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub subtotal: Money,
    /// Every discount: the lines' and shipping's.
    pub discount: Money,
    /// The shipping price before discounts.
    pub shipping: Money,
    /// Every tax, included in prices or added on top.
    pub tax: Money,
    /// The part of `tax` already inside tax-inclusive prices.
    pub tax_included: Money,
    pub total: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    pub lines: Vec<PricedLine>,
    /// The lines after their discounts: what a shipping threshold is measured against.
    pub goods: Money,
    pub promotions: Vec<PromotionUse>,
    pub shipping: Option<PricedShipping>,
    pub totals: Totals,
    /// Whether tax was computed (a cart needs an address for it).
    pub tax_computed: bool,
}

/// Whether a promotion with these conditions covers a line.
pub fn covers(conditions: &Conditions, line: &CartLine) -> bool {
    conditions.covers(&line.sku, line.pricing.as_ref().map(|p| &p.product_id))
}

/// The cart's weight in grams, from the weights its lines were priced with.
pub fn weight_grams(lines: &BTreeMap<Sku, CartLine>) -> u64 {
    lines.values().map(|l| u64::from(l.quantity) * u64::from(l.pricing.as_ref().map_or(0, |p| p.weight_grams))).sum()
}

/// Prices a cart by the rules in this module's documentation.
pub fn price(request: &Request) -> Result<Breakdown, Rejection> {
    let currency = request.currency;
    let money = |amount: i128| -> Result<Money, Rejection> {
        i64::try_from(amount)
            .map(|a| Money::new(a, currency))
            .map_err(|_| Rejection::invalid("amount: beyond what an amount can hold"))
    };
    let lines: Vec<&CartLine> = request.lines.values().collect();
    let mut amounts = Vec::with_capacity(lines.len());
    for line in &lines {
        if line.unit_price.currency != currency {
            return Err(Rejection::conflict(format!(
                "sku {}: priced in {}, but the cart is in {currency}",
                line.sku, line.unit_price.currency
            )));
        }
        amounts.push(i128::from(line.unit_price.amount) * i128::from(line.quantity));
    }
    let mut discounts = vec![0i128; lines.len()];
    let mut uses = Vec::new();
    let mut free_shipping = Vec::new();
    for promotion in &request.promotions {
        let covered: Vec<usize> = (0..lines.len()).filter(|i| covers(promotion.conditions, lines[*i])).collect();
        let left = |i: usize, d: &[i128]| amounts[i] - d[i];
        let before: i128 = discounts.iter().sum();
        match promotion.kind {
            PromotionKind::Percentage { basis_points } => {
                for &i in &covered {
                    let off = div_half_even(left(i, &discounts) * i128::from(*basis_points), 10_000);
                    discounts[i] += off.min(left(i, &discounts));
                }
            }
            PromotionKind::FixedPerOrder { amount } => {
                let pool: i128 = covered.iter().map(|&i| left(i, &discounts)).sum();
                let total = i128::from(amount.amount).min(pool);
                if pool > 0 {
                    let mut shares: Vec<(usize, i128, i128)> = covered
                        .iter()
                        .map(|&i| {
                            let exact = total * left(i, &discounts);
                            (i, exact / pool, exact % pool)
                        })
                        .collect();
                    let mut over = total - shares.iter().map(|s| s.1).sum::<i128>();
                    shares.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
                    for (i, share, _) in &mut shares {
                        if over > 0 && *share < left(*i, &discounts) {
                            *share += 1;
                            over -= 1;
                        }
                        discounts[*i] += *share;
                    }
                }
            }
            PromotionKind::FixedPerItem { amount } => {
                for &i in &covered {
                    let off = i128::from(amount.amount) * i128::from(lines[i].quantity);
                    discounts[i] += off.min(left(i, &discounts));
                }
            }
            PromotionKind::BuyXGetY { buy, get } => {
                for &i in &covered {
                    let free = i128::from(lines[i].quantity / (buy + get)) * i128::from(*get);
                    let off = free * i128::from(lines[i].unit_price.amount);
                    discounts[i] += off.min(left(i, &discounts));
                }
            }
            PromotionKind::FreeShipping {} => free_shipping.push(uses.len()),
        }
        uses.push(PromotionUse {
            code: promotion.code.to_string(),
            discount: money(discounts.iter().sum::<i128>() - before)?,
        });
    }
    let goods = money((0..lines.len()).map(|i| amounts[i] - discounts[i]).sum())?;
    let rate = |class: Option<&str>| match request.tax {
        Some((provider, address)) => provider.rate(address, class, request.groups).map(Some),
        None => Ok(None),
    };
    let mut priced = Vec::with_capacity(lines.len());
    let (mut tax, mut included) = (0i128, 0i128);
    for (i, line) in lines.iter().enumerate() {
        let taxable = money(amounts[i] - discounts[i])?;
        let inclusive = line.pricing.as_ref().is_some_and(|p| p.tax_inclusive);
        let class = line.pricing.as_ref().map(|p| p.tax_class.as_str());
        let tax_line = rate(class)?.map(|r| tax_line(taxable, inclusive, r));
        let added = tax_line.as_ref().map_or(0, |t| if t.included { 0 } else { i128::from(t.tax.amount) });
        if let Some(t) = &tax_line {
            tax += i128::from(t.tax.amount);
            if t.included {
                included += i128::from(t.tax.amount);
            }
        }
        priced.push(PricedLine {
            sku: line.sku.clone(),
            quantity: line.quantity,
            unit_price: line.unit_price,
            amount: money(amounts[i])?,
            discount: money(discounts[i])?,
            tax: tax_line,
            total: money(amounts[i] - discounts[i] + added)?,
        });
    }
    let shipping = match request.shipping {
        None => None,
        Some(Shipping { zone_id, zone, option }) => {
            let price = option.price(goods, weight_grams(request.lines)).ok_or_else(|| {
                Rejection::conflict(format!(
                    "shipping_option {}: does not take a cart of {} g",
                    option.id,
                    weight_grams(request.lines)
                ))
            })?;
            let discount = if free_shipping.is_empty() { Money::zero(currency) } else { price };
            // The first free-shipping promotion takes the shipping off; others find none left.
            if let Some(&first) = free_shipping.first() {
                uses[first].discount = price;
            }
            let charged = price.checked_sub(discount)?;
            let tax_line = rate(None)?.map(|r| tax_line(charged, zone.prices_include_tax, r));
            if let Some(t) = &tax_line {
                tax += i128::from(t.tax.amount);
                if t.included {
                    included += i128::from(t.tax.amount);
                }
            }
            Some(PricedShipping {
                zone_id: zone_id.clone(),
                option_id: option.id.clone(),
                name: option.name.clone(),
                price,
                discount,
                tax: tax_line,
            })
        }
    };
    let subtotal: i128 = amounts.iter().sum();
    let shipping_price = shipping.as_ref().map_or(0, |s| i128::from(s.price.amount));
    let shipping_discount = shipping.as_ref().map_or(0, |s| i128::from(s.discount.amount));
    let discount = discounts.iter().sum::<i128>() + shipping_discount;
    let totals = Totals {
        subtotal: money(subtotal)?,
        discount: money(discount)?,
        shipping: money(shipping_price)?,
        tax: money(tax)?,
        tax_included: money(included)?,
        total: money(subtotal - discount + shipping_price + tax - included)?,
    };
    Ok(Breakdown { lines: priced, goods, promotions: uses, shipping, totals, tax_computed: request.tax.is_some() })
}
