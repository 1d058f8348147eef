//! Catalog commands (scope `catalog`): products and their variants, price lists and their
//! prices. Reads are in `crate::catalog`, open to `shop`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use orderlog_commands::Command;
use orderlog_domain::customer::CustomerProfileCommand;
use orderlog_domain::price_list::{PriceListCommand, PriceListRules, PRICES_PER_COMMAND_MAX};
use orderlog_domain::product::{self, ProductCommand, OPTIONS_MAX, VARIANTS_MAX, WEIGHT_GRAMS_MAX};
use orderlog_domain::promotion::{Conditions, PromotionCommand, PromotionKind, SCOPE_MAX};
use orderlog_domain::shipping::{self, ShippingZoneCommand, BANDS_MAX, COUNTRIES_MAX, OPTIONS_MAX as ZONE_OPTIONS_MAX};
use orderlog_domain::tax::{TaxRegionCommand, TaxRegionId, EXEMPT_GROUPS_MAX, TAX_CLASSES_MAX, TAX_RATE_BPS_MAX};
use orderlog_domain::{
    Currency, CustomerId, PriceListId, ProductId, PromotionCode, ShippingOptionId, ShippingZoneId, Sku,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::wire::Price;
use super::{body, id, NoBody, Params};
use crate::openapi::schema::{self, int, money, nullable, object, opt, reference, req, text};
use crate::problem::Problem;

fn product(path: &Params, command: ProductCommand) -> Result<Command, Problem> {
    Ok(Command::Product { product_id: path.id("product_id", ProductId::parse)?, command })
}

fn price_list(path: &Params, command: PriceListCommand) -> Result<Command, Problem> {
    Ok(Command::PriceList { price_list_id: path.id("price_list_id", PriceListId::parse)?, command })
}

/// A variant as a request spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    sku: Sku,
    title: String,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    weight_grams: u32,
    #[serde(default)]
    prices: Vec<Price>,
    #[serde(default = "yes")]
    requires_shipping: bool,
}

fn yes() -> bool {
    true
}

impl From<Variant> for product::Variant {
    fn from(v: Variant) -> product::Variant {
        product::Variant {
            sku: v.sku,
            title: v.title,
            options: v.options,
            weight_grams: v.weight_grams,
            prices: v.prices.into_iter().map(Into::into).collect(),
            requires_shipping: v.requires_shipping,
        }
    }
}

fn prices() -> Value {
    json!({"type": "array", "maxItems": 20, "items": money(0)})
}

/// The schema of a variant (also a component, `Variant`).
pub(crate) fn variant_schema() -> Value {
    object(
        json!({
            "sku": schema::id(),
            "title": text(),
            "options": {"type": "object", "maxProperties": OPTIONS_MAX, "propertyNames": text(), "additionalProperties": text()},
            "weight_grams": int(0, i64::from(WEIGHT_GRAMS_MAX)),
            "prices": prices(),
            "requires_shipping": {"type": "boolean"},
        }),
        &["sku", "title"],
    )
}

body! {
    NewProduct {
        product_id: Option<ProductId> = opt(nullable(schema::id())),
        title: String = req(text()),
        /// The tax class its variants are taxed by.
        tax_class: String = req(text()),
        #[serde(default)]
        prices_include_tax: bool = opt(json!({"type": "boolean"})),
        #[serde(default)]
        variants: Vec<Variant> = opt(json!({"type": "array", "maxItems": VARIANTS_MAX, "items": reference("Variant")})),
    }
}

pub(super) fn create_product(body: NewProduct, _: &Params) -> Result<Command, Problem> {
    let product_id = match body.product_id {
        Some(product_id) => product_id,
        None => id(ProductId::parse(format!("product-{}", uuid::Uuid::new_v4().simple())))?,
    };
    let command = ProductCommand::Create {
        title: body.title,
        tax_class: body.tax_class,
        prices_include_tax: body.prices_include_tax,
        variants: body.variants.into_iter().map(Into::into).collect(),
    };
    Ok(Command::Product { product_id, command })
}

body! {
    ProductEdit {
        #[serde(default)]
        title: Option<String> = opt(nullable(text())),
        #[serde(default)]
        tax_class: Option<String> = opt(nullable(text())),
    }
}

pub(super) fn edit_product(body: ProductEdit, path: &Params) -> Result<Command, Problem> {
    product(path, ProductCommand::Edit { title: body.title, tax_class: body.tax_class })
}

body! {
    NewVariant { variant: Variant = req(reference("Variant")) }
}

pub(super) fn add_variant(body: NewVariant, path: &Params) -> Result<Command, Problem> {
    product(path, ProductCommand::AddVariant { variant: body.variant.into() })
}

body! {
    VariantPrices { prices: Vec<Price> = req(prices()) }
}

pub(super) fn set_variant_prices(body: VariantPrices, path: &Params) -> Result<Command, Problem> {
    let sku = path.id("sku", Sku::parse)?;
    product(path, ProductCommand::SetPrices { sku, prices: body.prices.into_iter().map(Into::into).collect() })
}

pub(super) fn archive_variant(_: NoBody, path: &Params) -> Result<Command, Problem> {
    product(path, ProductCommand::ArchiveVariant { sku: path.id("sku", Sku::parse)? })
}

pub(super) fn publish(_: NoBody, path: &Params) -> Result<Command, Problem> {
    product(path, ProductCommand::Publish {})
}

pub(super) fn archive_product(_: NoBody, path: &Params) -> Result<Command, Problem> {
    product(path, ProductCommand::Archive {})
}

fn instant() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}

body! {
    NewPriceList {
        price_list_id: Option<PriceListId> = opt(nullable(schema::id())),
        name: String = req(text()),
        currency: Currency = req(reference("Currency")),
        /// Higher wins.
        #[serde(default)]
        priority: u32 = opt(int(0, i64::from(u32::MAX))),
        #[serde(default)]
        tax_inclusive: bool = opt(json!({"type": "boolean"})),
        /// The sales channel it is for; every channel when absent.
        #[serde(default)]
        channel: Option<String> = opt(nullable(text())),
        /// In force from (inclusive).
        #[serde(default)]
        starts_at: Option<DateTime<Utc>> = opt(instant()),
        /// In force until (exclusive).
        #[serde(default)]
        ends_at: Option<DateTime<Utc>> = opt(instant()),
        /// The customer group it is for; every customer when absent.
        #[serde(default)]
        customer_group: Option<String> = opt(nullable(schema::id())),
    }
}

pub(super) fn create_price_list(body: NewPriceList, _: &Params) -> Result<Command, Problem> {
    let price_list_id = match body.price_list_id {
        Some(id) => id,
        None => id(PriceListId::parse(format!("pl-{}", uuid::Uuid::new_v4().simple())))?,
    };
    let rules = PriceListRules {
        channel: body.channel,
        starts_at: body.starts_at,
        ends_at: body.ends_at,
        customer_group: body.customer_group,
    };
    let command = PriceListCommand::Create {
        name: body.name,
        currency: body.currency,
        priority: body.priority,
        tax_inclusive: body.tax_inclusive,
        rules,
    };
    Ok(Command::PriceList { price_list_id, command })
}

/// One SKU's price in a list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuPrice {
    sku: Sku,
    price: Price,
}

body! {
    ListPrices {
        prices: Vec<SkuPrice> = req(json!({
            "type": "array", "minItems": 1, "maxItems": PRICES_PER_COMMAND_MAX,
            "items": object(json!({"sku": schema::id(), "price": money(0)}), &["sku", "price"]),
        })),
    }
}

pub(super) fn set_list_prices(body: ListPrices, path: &Params) -> Result<Command, Problem> {
    let mut prices = BTreeMap::new();
    for entry in body.prices {
        if prices.insert(entry.sku.clone(), entry.price.into()).is_some() {
            // Each entry is valid alone; two prices for one SKU contradict each other.
            let detail = format!("prices: sku {} appears twice", entry.sku);
            return Err(Problem::new(axum::http::StatusCode::CONFLICT, detail));
        }
    }
    price_list(path, PriceListCommand::SetPrices { prices })
}

pub(super) fn remove_list_price(_: NoBody, path: &Params) -> Result<Command, Problem> {
    let skus = BTreeSet::from([path.id("sku", Sku::parse)?]);
    price_list(path, PriceListCommand::RemovePrices { skus })
}

pub(super) fn archive_price_list(_: NoBody, path: &Params) -> Result<Command, Problem> {
    price_list(path, PriceListCommand::Archive {})
}

/// What a promotion takes off, as a request spells it.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Kind {
    Percentage { basis_points: u32 },
    FixedPerOrder { amount: Price },
    FixedPerItem { amount: Price },
    FreeShipping {},
    BuyXGetY { buy: u32, get: u32 },
}

/// The schema of what a promotion takes off (also a component, `PromotionKind`).
pub(crate) fn promotion_kind_schema() -> Value {
    json!({"oneOf": [
        object(json!({"kind": {"const": "percentage"}, "basis_points": int(1, 10_000)}), &["kind", "basis_points"]),
        object(json!({"kind": {"const": "fixed_per_order"}, "amount": money(1)}), &["kind", "amount"]),
        object(json!({"kind": {"const": "fixed_per_item"}, "amount": money(1)}), &["kind", "amount"]),
        object(json!({"kind": {"const": "free_shipping"}}), &["kind"]),
        object(json!({"kind": {"const": "buy_x_get_y"}, "buy": int(1, 5_000), "get": int(1, 5_000)}), &["kind", "buy", "get"]),
    ]})
}

/// When a promotion may be used, as a request spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionConditions {
    #[serde(default)]
    min_subtotal: Option<Price>,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default)]
    skus: Vec<Sku>,
    #[serde(default)]
    products: Vec<ProductId>,
    #[serde(default)]
    customer_group: Option<String>,
    #[serde(default)]
    first_order: bool,
}

/// A list the document declares with `uniqueItems` and `maxItems`, as a set: a repeated
/// item or one too many is a 422 naming the field (the request breaks the schema).
fn unique<T: Ord + std::fmt::Debug>(field: &str, items: Vec<T>, max: usize) -> Result<BTreeSet<T>, Problem> {
    if items.len() > max {
        return Err(Problem::unprocessable(format!("{field}: more than {max} items")));
    }
    let mut set = BTreeSet::new();
    for item in items {
        if let Some(again) = set.replace(item) {
            return Err(Problem::unprocessable(format!("{field}: {again:?} appears twice")));
        }
    }
    Ok(set)
}

fn limit() -> Value {
    nullable(int(1, i64::from(u32::MAX)))
}

body! {
    NewPromotion {
        code: PromotionCode = req(schema::id()),
        kind: Kind = req(reference("PromotionKind")),
        /// An object (read as a map first: a struct of optional fields would also take an
        /// array).
        #[serde(default)]
        conditions: serde_json::Map<String, Value> = opt(object(
            json!({
                "min_subtotal": nullable(money(0)), "starts_at": instant(), "ends_at": instant(),
                "skus": {"type": "array", "maxItems": SCOPE_MAX, "uniqueItems": true, "items": schema::id()},
                "products": {"type": "array", "maxItems": SCOPE_MAX, "uniqueItems": true, "items": schema::id()},
                "customer_group": nullable(schema::id()),
                "first_order": {"type": "boolean"},
            }),
            &[],
        )),
        /// Applied by itself to every cart it fits, without a code.
        #[serde(default)]
        automatic: bool = opt(json!({"type": "boolean"})),
        /// Most uses in all.
        #[serde(default)]
        usage_limit: Option<u32> = opt(limit()),
        /// Most uses by one customer (a customer id, or a guest's email).
        #[serde(default)]
        per_customer_limit: Option<u32> = opt(limit()),
    }
}

pub(super) fn create_promotion(body: NewPromotion, _: &Params) -> Result<Command, Problem> {
    let kind = match body.kind {
        Kind::Percentage { basis_points } => PromotionKind::Percentage { basis_points },
        Kind::FixedPerOrder { amount } => PromotionKind::FixedPerOrder { amount: amount.into() },
        Kind::FixedPerItem { amount } => PromotionKind::FixedPerItem { amount: amount.into() },
        Kind::FreeShipping {} => PromotionKind::FreeShipping {},
        Kind::BuyXGetY { buy, get } => PromotionKind::BuyXGetY { buy, get },
    };
    let c: PromotionConditions = serde_json::from_value(Value::Object(body.conditions))
        .map_err(|e| Problem::unprocessable(format!("conditions: {e}")))?;
    let skus = unique("conditions.skus", c.skus, SCOPE_MAX)?;
    let products = unique("conditions.products", c.products, SCOPE_MAX)?;
    let conditions = Conditions {
        min_subtotal: c.min_subtotal.map(Into::into),
        starts_at: c.starts_at,
        ends_at: c.ends_at,
        skus,
        products,
        customer_group: c.customer_group,
        first_order: c.first_order,
    };
    let command = PromotionCommand::Create {
        kind,
        conditions,
        usage_limit: body.usage_limit,
        per_customer_limit: body.per_customer_limit,
        automatic: body.automatic,
    };
    Ok(Command::Promotion { code: body.code, command })
}

pub(super) fn archive_promotion(_: NoBody, path: &Params) -> Result<Command, Problem> {
    let code = path.id("code", PromotionCode::parse)?;
    Ok(Command::Promotion { code, command: PromotionCommand::Archive {} })
}

body! {
    TaxRegionRates {
        name: String = req(text()),
        /// Rate per tax class, in basis points (1900 = 19 %).
        rates: BTreeMap<String, u32> = req(json!({
            "type": "object", "minProperties": 1, "maxProperties": TAX_CLASSES_MAX,
            "propertyNames": text(), "additionalProperties": int(0, i64::from(TAX_RATE_BPS_MAX)),
        })),
        /// The class for shipping and for classes `rates` does not name; it needs a rate.
        default_class: String = req(text()),
        /// Customer groups that pay no tax here.
        #[serde(default)]
        exempt_groups: Vec<String> = opt(json!({
            "type": "array", "maxItems": EXEMPT_GROUPS_MAX, "uniqueItems": true, "items": schema::id(),
        })),
    }
}

pub(super) fn define_tax_region(body: TaxRegionRates, path: &Params) -> Result<Command, Problem> {
    let region_id = path.id("region_id", TaxRegionId::parse)?;
    let command = TaxRegionCommand::Define {
        name: body.name,
        rates: body.rates,
        default_class: body.default_class,
        exempt_groups: unique("exempt_groups", body.exempt_groups, EXEMPT_GROUPS_MAX)?,
    };
    Ok(Command::TaxRegion { region_id, command })
}

/// A weight band as a request spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    up_to_grams: u64,
    price: Price,
}

/// How an option is priced, as a request spells it.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rate {
    Flat { price: Price },
    FreeAbove { price: Price, threshold: Price },
    ByWeight { bands: Vec<Band> },
}

/// A shipping option as a request spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneOption {
    id: ShippingOptionId,
    name: String,
    rate: Rate,
}

impl From<ZoneOption> for shipping::ShippingOption {
    fn from(o: ZoneOption) -> shipping::ShippingOption {
        let rate = match o.rate {
            Rate::Flat { price } => shipping::ShippingRate::Flat { price: price.into() },
            Rate::FreeAbove { price, threshold } => {
                shipping::ShippingRate::FreeAbove { price: price.into(), threshold: threshold.into() }
            }
            Rate::ByWeight { bands } => shipping::ShippingRate::ByWeight {
                bands: bands
                    .into_iter()
                    .map(|b| shipping::WeightBand { up_to_grams: b.up_to_grams, price: b.price.into() })
                    .collect(),
            },
        };
        shipping::ShippingOption { id: o.id, name: o.name, rate }
    }
}

/// The schema of a shipping option (also a component, `ShippingOption`).
pub(crate) fn shipping_option_schema() -> Value {
    let band =
        object(json!({"up_to_grams": int(1, i64::from(u32::MAX)), "price": money(0)}), &["up_to_grams", "price"]);
    object(
        json!({
            "id": schema::id(),
            "name": text(),
            "rate": {"oneOf": [
                object(json!({"kind": {"const": "flat"}, "price": money(0)}), &["kind", "price"]),
                object(json!({"kind": {"const": "free_above"}, "price": money(0), "threshold": money(0)}), &["kind", "price", "threshold"]),
                object(json!({"kind": {"const": "by_weight"}, "bands": {"type": "array", "minItems": 1, "maxItems": BANDS_MAX, "items": band}}), &["kind", "bands"]),
            ]},
        }),
        &["id", "name", "rate"],
    )
}

body! {
    ZoneDefinition {
        name: String = req(text()),
        currency: Currency = req(reference("Currency")),
        /// ISO 3166-1 alpha-2 codes.
        countries: Vec<String> = req(json!({
            "type": "array", "minItems": 1, "maxItems": COUNTRIES_MAX, "uniqueItems": true,
            "items": {"type": "string", "pattern": "^[A-Z]{2}$"},
        })),
        #[serde(default)]
        prices_include_tax: bool = opt(json!({"type": "boolean"})),
        options: Vec<ZoneOption> = req(json!({
            "type": "array", "minItems": 1, "maxItems": ZONE_OPTIONS_MAX, "items": reference("ShippingOption"),
        })),
    }
}

pub(super) fn define_shipping_zone(body: ZoneDefinition, path: &Params) -> Result<Command, Problem> {
    let zone_id = path.id("zone_id", ShippingZoneId::parse)?;
    let command = ShippingZoneCommand::Define {
        name: body.name,
        currency: body.currency,
        countries: unique("countries", body.countries, COUNTRIES_MAX)?,
        prices_include_tax: body.prices_include_tax,
        options: body.options.into_iter().map(Into::into).collect(),
    };
    Ok(Command::ShippingZone { zone_id, command })
}

fn customer(path: &Params, command: CustomerProfileCommand) -> Result<Command, Problem> {
    Ok(Command::Customer { customer_id: path.id("customer_id", CustomerId::parse)?, command })
}

pub(super) fn join_group(_: NoBody, path: &Params) -> Result<Command, Problem> {
    let group = path.id("group", |g| orderlog_domain::ids::check_id("group", &g).map(|_| g))?;
    customer(path, CustomerProfileCommand::JoinGroup { group })
}

pub(super) fn leave_group(_: NoBody, path: &Params) -> Result<Command, Problem> {
    let group = path.id("group", |g| orderlog_domain::ids::check_id("group", &g).map(|_| g))?;
    customer(path, CustomerProfileCommand::LeaveGroup { group })
}
