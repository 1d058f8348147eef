//! The catalog: a product and its variants, one SKU each. A product is a stream
//! (`product-{id}`); every change is an event, so the catalog as of any time is a fold. A
//! SKU belongs to one product for good: its own stream (`sku-{sku}`, [`SkuOwner`]) is
//! claimed in the same append that adds the variant, so two products can never sell one
//! SKU. Only the variants of an active product that are not archived can be sold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cart::check_text;
use crate::{Currency, Decider, Money, ProductId, Rejection, Sku};

/// Most variants one product may have.
pub const VARIANTS_MAX: usize = 100;
/// Most option values (size, colour …) one variant may carry.
pub const OPTIONS_MAX: usize = 10;
/// Heaviest variant, in grams (a tonne).
pub const WEIGHT_GRAMS_MAX: u32 = 1_000_000;

/// Where a product is in its life: only an active product's variants can be sold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// Being prepared: not for sale yet.
    #[default]
    Draft,
    Active,
    /// No longer sold; kept for the orders that name it.
    Archived,
}

/// A variant as the catalog describes it: one SKU, its title (what an order keeps), its
/// option values, its weight and its default price in each currency it is sold in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub sku: Sku,
    pub title: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub weight_grams: u32,
    /// Default prices, at most one per currency.
    #[serde(default)]
    pub prices: Vec<Money>,
    /// Whether it is shipped (a gift card or a download is not): a cart of lines that ship
    /// nothing needs no shipping, and is taxed where its billing address is.
    #[serde(default = "ships", skip_serializing_if = "is_shipped")]
    pub requires_shipping: bool,
}

fn ships() -> bool {
    true
}

fn is_shipped(requires_shipping: &bool) -> bool {
    *requires_shipping
}

impl Variant {
    fn check(&self) -> Result<(), Rejection> {
        check_text("variant.title", &self.title)?;
        if self.options.len() > OPTIONS_MAX {
            return Err(Rejection::invalid(format!("variant.options: more than {OPTIONS_MAX} options")));
        }
        for (name, value) in &self.options {
            check_text("variant.options (name)", name)?;
            check_text(&format!("variant.options.{name}"), value)?;
        }
        if self.weight_grams > WEIGHT_GRAMS_MAX {
            return Err(Rejection::invalid(format!(
                "variant.weight_grams: {} exceeds {WEIGHT_GRAMS_MAX}",
                self.weight_grams
            )));
        }
        check_prices("variant.prices", &self.prices)
    }
}

/// Checks a list of default prices: amounts in range, one per currency.
pub fn check_prices(field: &str, prices: &[Money]) -> Result<(), Rejection> {
    let mut seen: Vec<Currency> = Vec::new();
    for price in prices {
        crate::money::check_amount(field, price.amount, 0)?;
        if seen.contains(&price.currency) {
            // Each price is valid alone; two in one currency contradict each other.
            return Err(Rejection::conflict(format!("{field}: two prices in {}", price.currency)));
        }
        seen.push(price.currency);
    }
    Ok(())
}

/// A variant and whether it has been archived on its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VariantState {
    #[serde(flatten)]
    pub variant: Variant,
    pub archived: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProductState {
    pub created: bool,
    pub status: ProductStatus,
    pub title: String,
    /// The tax class its variants are taxed by (`standard`, `reduced`, …).
    pub tax_class: String,
    /// Whether the default prices include tax.
    pub prices_include_tax: bool,
    pub variants: BTreeMap<Sku, VariantState>,
}

impl ProductState {
    /// The variant of `sku`, if it can be sold: the product active, the variant not
    /// archived. The refusal names which of the two it is.
    pub fn sellable(&self, sku: &Sku) -> Result<&Variant, Rejection> {
        let variant = self.variants.get(sku).ok_or_else(|| Rejection::not_found(format!("sku {sku}: unknown")))?;
        match (self.status, variant.archived) {
            (ProductStatus::Active, false) => Ok(&variant.variant),
            (ProductStatus::Draft, _) => {
                Err(Rejection::conflict(format!("sku {sku}: its product '{}' is a draft, not for sale", self.title)))
            }
            (ProductStatus::Archived, _) | (_, true) => {
                Err(Rejection::conflict(format!("sku {sku}: archived, no longer for sale")))
            }
        }
    }

    /// The default price of `sku` in `currency`, if it has one.
    pub fn default_price(&self, sku: &Sku, currency: Currency) -> Option<Money> {
        self.variants.get(sku)?.variant.prices.iter().find(|p| p.currency == currency).copied()
    }

    fn exists(&self) -> Result<(), Rejection> {
        match self.created {
            true => Ok(()),
            false => Err(Rejection::not_found("product: does not exist")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProductCommand {
    /// Creates a draft product, with its first variants.
    Create {
        title: String,
        tax_class: String,
        #[serde(default)]
        prices_include_tax: bool,
        #[serde(default)]
        variants: Vec<Variant>,
    },
    /// Changes the title or the tax class (what is absent stays).
    Edit {
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        tax_class: Option<String>,
    },
    AddVariant {
        variant: Variant,
    },
    /// Replaces a variant's default prices.
    SetPrices {
        sku: Sku,
        prices: Vec<Money>,
    },
    ArchiveVariant {
        sku: Sku,
    },
    /// Puts a draft product on sale.
    Publish {},
    /// Takes a product off sale for good.
    Archive {},
}

impl ProductCommand {
    /// The SKUs the command adds: each is claimed in the same append.
    pub fn new_skus(&self) -> Vec<Sku> {
        match self {
            ProductCommand::Create { variants, .. } => variants.iter().map(|v| v.sku.clone()).collect(),
            ProductCommand::AddVariant { variant } => vec![variant.sku.clone()],
            _ => vec![],
        }
    }
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductEvent {
    ProductCreated { title: String, tax_class: String, prices_include_tax: bool },
    ProductEdited { title: String, tax_class: String },
    VariantAdded { variant: Variant },
    VariantPricesSet { sku: Sku, prices: Vec<Money> },
    VariantArchived { sku: Sku },
    ProductPublished {},
    ProductArchived {},
}
}

pub struct Product;

impl Decider for Product {
    type Command = ProductCommand;
    type Event = ProductEvent;
    type State = ProductState;

    fn decide(command: &ProductCommand, state: &ProductState) -> Result<Vec<ProductEvent>, Rejection> {
        use ProductCommand as C;
        use ProductEvent as E;
        if let C::Create { title, tax_class, prices_include_tax, variants } = command {
            if state.created {
                return Err(Rejection::conflict("product: already exists"));
            }
            check_text("title", title)?;
            check_text("tax_class", tax_class)?;
            if variants.len() > VARIANTS_MAX {
                return Err(Rejection::invalid(format!("variants: more than {VARIANTS_MAX}")));
            }
            let mut events = vec![E::ProductCreated {
                title: title.clone(),
                tax_class: tax_class.clone(),
                prices_include_tax: *prices_include_tax,
            }];
            let mut seen: Vec<&Sku> = Vec::new();
            for variant in variants {
                variant.check()?;
                if seen.contains(&&variant.sku) {
                    return Err(Rejection::conflict(format!("variants: sku {} appears twice", variant.sku)));
                }
                seen.push(&variant.sku);
                events.push(E::VariantAdded { variant: variant.clone() });
            }
            return Ok(events);
        }
        state.exists()?;
        let archived = || Rejection::conflict("product: archived; it can no longer change");
        let events = match command {
            C::Create { .. } => unreachable!("handled above"),
            C::Edit { title, tax_class } => {
                if state.status == ProductStatus::Archived {
                    return Err(archived());
                }
                let title = title.clone().unwrap_or_else(|| state.title.clone());
                let tax_class = tax_class.clone().unwrap_or_else(|| state.tax_class.clone());
                check_text("title", &title)?;
                check_text("tax_class", &tax_class)?;
                if title == state.title && tax_class == state.tax_class {
                    return Ok(vec![]);
                }
                vec![E::ProductEdited { title, tax_class }]
            }
            C::AddVariant { variant } => {
                if state.status == ProductStatus::Archived {
                    return Err(archived());
                }
                variant.check()?;
                if state.variants.contains_key(&variant.sku) {
                    return Err(Rejection::conflict(format!("sku {}: already a variant of this product", variant.sku)));
                }
                if state.variants.len() >= VARIANTS_MAX {
                    return Err(Rejection::conflict(format!("product: already has {VARIANTS_MAX} variants")));
                }
                vec![E::VariantAdded { variant: variant.clone() }]
            }
            C::SetPrices { sku, prices } => {
                if state.status == ProductStatus::Archived {
                    return Err(archived());
                }
                let variant = state
                    .variants
                    .get(sku)
                    .ok_or_else(|| Rejection::not_found(format!("sku {sku}: not a variant of this product")))?;
                check_prices("prices", prices)?;
                if variant.variant.prices == *prices {
                    return Ok(vec![]);
                }
                vec![E::VariantPricesSet { sku: sku.clone(), prices: prices.clone() }]
            }
            C::ArchiveVariant { sku } => {
                let variant = state
                    .variants
                    .get(sku)
                    .ok_or_else(|| Rejection::not_found(format!("sku {sku}: not a variant of this product")))?;
                if variant.archived {
                    return Ok(vec![]);
                }
                vec![E::VariantArchived { sku: sku.clone() }]
            }
            C::Publish {} => match state.status {
                ProductStatus::Active => vec![],
                ProductStatus::Archived => return Err(archived()),
                ProductStatus::Draft => {
                    if state.variants.values().all(|v| v.archived) {
                        return Err(Rejection::conflict("product: has no variant to sell"));
                    }
                    vec![E::ProductPublished {}]
                }
            },
            C::Archive {} => match state.status {
                ProductStatus::Archived => vec![],
                _ => vec![E::ProductArchived {}],
            },
        };
        Ok(events)
    }

    fn evolve(mut state: ProductState, event: &ProductEvent) -> ProductState {
        use ProductEvent as E;
        match event {
            E::ProductCreated { title, tax_class, prices_include_tax } => {
                state.created = true;
                state.title = title.clone();
                state.tax_class = tax_class.clone();
                state.prices_include_tax = *prices_include_tax;
            }
            E::ProductEdited { title, tax_class } => {
                state.title = title.clone();
                state.tax_class = tax_class.clone();
            }
            E::VariantAdded { variant } => {
                state.variants.insert(variant.sku.clone(), VariantState { variant: variant.clone(), archived: false });
            }
            E::VariantPricesSet { sku, prices } => {
                if let Some(v) = state.variants.get_mut(sku) {
                    v.variant.prices = prices.clone();
                }
            }
            E::VariantArchived { sku } => {
                if let Some(v) = state.variants.get_mut(sku) {
                    v.archived = true;
                }
            }
            E::ProductPublished {} => state.status = ProductStatus::Active,
            E::ProductArchived {} => state.status = ProductStatus::Archived,
        }
        state
    }
}

/// Which product a SKU belongs to: its stream, `sku-{sku}`, is claimed once, in the append
/// that adds the variant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SkuOwnerState {
    pub product_id: Option<ProductId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SkuOwnerCommand {
    Claim { product_id: ProductId },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkuOwnerEvent {
    SkuClaimed { product_id: ProductId },
}
}

pub struct SkuOwner;

impl Decider for SkuOwner {
    type Command = SkuOwnerCommand;
    type Event = SkuOwnerEvent;
    type State = SkuOwnerState;

    fn decide(command: &SkuOwnerCommand, state: &SkuOwnerState) -> Result<Vec<SkuOwnerEvent>, Rejection> {
        let SkuOwnerCommand::Claim { product_id } = command;
        match &state.product_id {
            None => Ok(vec![SkuOwnerEvent::SkuClaimed { product_id: product_id.clone() }]),
            Some(owner) if owner == product_id => Ok(vec![]),
            Some(owner) => Err(Rejection::conflict(format!("belongs to product {owner} already"))),
        }
    }

    fn evolve(mut state: SkuOwnerState, event: &SkuOwnerEvent) -> SkuOwnerState {
        let SkuOwnerEvent::SkuClaimed { product_id } = event;
        state.product_id = Some(product_id.clone());
        state
    }
}

/// Every product of the catalog, in the order they were made: its stream is
/// `products-all`, appended to in the append that creates a product, so the catalog can be
/// listed without scanning the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProductIndexState {
    pub products: Vec<ProductId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProductIndexCommand {
    List { product_id: ProductId },
}

events! {
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductIndexEvent {
    ProductListed { product_id: ProductId },
}
}

pub struct ProductIndex;

impl Decider for ProductIndex {
    type Command = ProductIndexCommand;
    type Event = ProductIndexEvent;
    type State = ProductIndexState;

    fn decide(command: &ProductIndexCommand, state: &ProductIndexState) -> Result<Vec<ProductIndexEvent>, Rejection> {
        let ProductIndexCommand::List { product_id } = command;
        match state.products.contains(product_id) {
            true => Ok(vec![]),
            false => Ok(vec![ProductIndexEvent::ProductListed { product_id: product_id.clone() }]),
        }
    }

    fn evolve(mut state: ProductIndexState, event: &ProductIndexEvent) -> ProductIndexState {
        let ProductIndexEvent::ProductListed { product_id } = event;
        state.products.push(product_id.clone());
        state
    }
}
