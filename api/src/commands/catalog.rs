//! Catalog commands (scope `catalog`): products and their variants, price lists and their
//! prices. Reads are in `crate::catalog`, open to `shop`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use orderlog_commands::Command;
use orderlog_domain::price_list::{PriceListCommand, PriceListRules, PRICES_PER_COMMAND_MAX};
use orderlog_domain::product::{self, ProductCommand, OPTIONS_MAX, VARIANTS_MAX, WEIGHT_GRAMS_MAX};
use orderlog_domain::promotion::{Conditions, PromotionCommand, PromotionKind};
use orderlog_domain::{Currency, PriceListId, ProductId, PromotionCode, Sku};
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
}

impl From<Variant> for product::Variant {
    fn from(v: Variant) -> product::Variant {
        product::Variant {
            sku: v.sku,
            title: v.title,
            options: v.options,
            weight_grams: v.weight_grams,
            prices: v.prices.into_iter().map(Into::into).collect(),
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
    }
}

pub(super) fn create_price_list(body: NewPriceList, _: &Params) -> Result<Command, Problem> {
    let price_list_id = match body.price_list_id {
        Some(id) => id,
        None => id(PriceListId::parse(format!("pl-{}", uuid::Uuid::new_v4().simple())))?,
    };
    let rules = PriceListRules { channel: body.channel, starts_at: body.starts_at, ends_at: body.ends_at };
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
            json!({"min_subtotal": nullable(money(0)), "starts_at": instant(), "ends_at": instant()}),
            &[],
        )),
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
    };
    let c: PromotionConditions = serde_json::from_value(Value::Object(body.conditions))
        .map_err(|e| Problem::unprocessable(format!("conditions: {e}")))?;
    let conditions =
        Conditions { min_subtotal: c.min_subtotal.map(Into::into), starts_at: c.starts_at, ends_at: c.ends_at };
    let command = PromotionCommand::Create {
        kind,
        conditions,
        usage_limit: body.usage_limit,
        per_customer_limit: body.per_customer_limit,
    };
    Ok(Command::Promotion { code: body.code, command })
}

pub(super) fn archive_promotion(_: NoBody, path: &Params) -> Result<Command, Problem> {
    let code = path.id("code", PromotionCode::parse)?;
    Ok(Command::Promotion { code, command: PromotionCommand::Archive {} })
}
