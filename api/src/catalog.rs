//! Catalog reads (scopes `shop` and `catalog`): a product with its variants, the price each
//! gets in a context and its availability; a price list. Each is folded from its stream
//! (through the command service's cache of states), so a read shows every change the
//! moment its command has answered.

use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use orderlog_domain::price_list::{quote, PriceContext, PriceIndex, PriceList, PriceListState, Quote};
use orderlog_domain::product::{Product, ProductState, ProductStatus};
use orderlog_domain::{aggregate::Aggregate, Currency, PriceListId, ProductId, StreamId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::Problem;
use crate::Shared;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(get_product))
        .routes(routes!(list_products))
        .routes(routes!(get_price_list))
        .routes(routes!(get_promotion))
        .routes(routes!(get_tax_region))
        .routes(routes!(get_shipping_zone))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromotionView {
    code: String,
    version: u64,
    #[schema(value_type = Object)]
    kind: Option<orderlog_domain::promotion::PromotionKind>,
    #[schema(value_type = Object)]
    conditions: orderlog_domain::promotion::Conditions,
    usage_limit: Option<u32>,
    per_customer_limit: Option<u32>,
    /// Orders that used it so far, for a promotion with limits; absent for one without,
    /// whose uses are in the orders alone (`GET /reports/top-promotions`).
    uses: Option<u32>,
    archived: bool,
}

/// A promotion: what it takes off, its conditions and limits, and how often it was used
/// (who used it is not shown).
#[utoipa::path(get, path = "/promotions/{code}", tag = "catalog",
    params(("code" = String, Path)),
    responses((status = 200, body = PromotionView), (status = 404, body = Problem)),
    security(("bearer" = ["shop", "catalog"])))]
async fn get_promotion(State(api): State<Shared>, Path(code): Path<String>) -> Result<Json<PromotionView>, Problem> {
    use orderlog_domain::promotion::Promotion;
    let code = orderlog_domain::PromotionCode::parse(&code)
        .map_err(|r| Problem::not_found(format!("no promotion: {}", r.reason)))?;
    let (p, version) = state::<Promotion>(&api, &StreamId::promotion(&code), &format!("promotion '{code}'")).await?;
    Ok(Json(PromotionView {
        code: code.to_string(),
        version,
        kind: p.kind,
        conditions: p.conditions,
        usage_limit: p.usage_limit,
        per_customer_limit: p.per_customer_limit,
        uses: (p.usage_limit.is_some() || p.per_customer_limit.is_some()).then_some(p.uses),
        archived: p.archived,
    }))
}

pub(crate) fn cart_routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(routes!(get_cart))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartLineView {
    sku: String,
    quantity: u32,
    #[schema(value_type = Object)]
    unit_price: orderlog_domain::Money,
    /// Unit price × quantity.
    #[schema(value_type = Object)]
    line_total: orderlog_domain::Money,
    /// What promotions take off the line.
    #[schema(value_type = Option<Object>)]
    discount: Option<orderlog_domain::Money>,
    /// The line's tax (once the cart has an address): region, class, rate, net and tax.
    #[schema(value_type = Option<Object>)]
    tax: Option<orderlog_domain::tax::TaxLine>,
    /// What the line costs: line total − discount + tax added on top.
    #[schema(value_type = Option<Object>)]
    total: Option<orderlog_domain::Money>,
    /// The product, title, price source and until when the price is guaranteed (absent on
    /// lines priced by a request before the catalog priced carts).
    #[schema(value_type = Option<Object>)]
    pricing: Option<orderlog_domain::cart::LinePricing>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartView {
    cart_id: String,
    /// The cart stream's version.
    version: u64,
    /// `open`, `checked_out` (with `order_id`) or `expired`.
    status: String,
    order_id: Option<String>,
    #[schema(value_type = String)]
    currency: orderlog_domain::Currency,
    channel: Option<String>,
    lines: Vec<CartLineView>,
    discount_code: Option<String>,
    /// What each promotion (the code, and the automatic ones the cart meets) takes off.
    #[schema(value_type = Vec<Object>)]
    promotions: Vec<orderlog_domain::pricing::PromotionUse>,
    /// The chosen shipping option, priced: zone, option, price, discount and tax.
    #[schema(value_type = Option<Object>)]
    shipping_option: Option<orderlog_domain::pricing::PricedShipping>,
    /// The options the zone serving the cart's address offers for this cart, with prices.
    #[schema(value_type = Vec<Object>)]
    shipping_options: Vec<orderlog_commands::OfferedShipping>,
    #[schema(value_type = Object)]
    subtotal: orderlog_domain::Money,
    /// Every discount: the lines' and shipping's.
    #[schema(value_type = Object)]
    discount: orderlog_domain::Money,
    /// The shipping price before discounts.
    #[schema(value_type = Object)]
    shipping: orderlog_domain::Money,
    /// Every tax, inside tax-inclusive prices or added on top.
    #[schema(value_type = Object)]
    tax: orderlog_domain::Money,
    /// The part of `tax` inside tax-inclusive prices.
    #[schema(value_type = Object)]
    tax_included: orderlog_domain::Money,
    /// Subtotal − discount + shipping + tax − tax_included: what checkout charges now.
    #[schema(value_type = Object)]
    total: orderlog_domain::Money,
    /// Whether tax is in the totals (the cart needs an address for it).
    tax_computed: bool,
    /// Why the cart cannot be priced now (a checked-out or expired cart, a shipping option
    /// that no longer serves the address, no tax region for it); its totals are then the
    /// lines' alone.
    pricing_problem: Option<String>,
}

/// A cart, priced now as its checkout would be: each line's price and source, discounts,
/// shipping, tax lines and totals, and the shipping options its address is offered.
#[utoipa::path(get, path = "/carts/{cart_id}", tag = "carts",
    params(("cart_id" = String, Path)),
    responses((status = 200, body = CartView), (status = 404, body = Problem)),
    security(("bearer" = ["shop", "operations"])))]
async fn get_cart(State(api): State<Shared>, Path(cart_id): Path<String>) -> Result<Json<CartView>, Problem> {
    use orderlog_domain::cart::CartStatus;
    let id =
        orderlog_domain::CartId::parse(&cart_id).map_err(|r| Problem::not_found(format!("no cart: {}", r.reason)))?;
    let view = api.service.cart_view(&id).await.map_err(Problem::internal)?;
    let cart = &view.cart;
    let Some(currency) = cart.currency.filter(|_| view.version > 0) else {
        return Err(Problem::not_found(format!("no cart '{id}'")));
    };
    let zero = orderlog_domain::Money::zero(currency);
    let (status, order_id) = match &cart.status {
        CartStatus::CheckedOut { order_id } => ("checked_out", Some(order_id.to_string())),
        CartStatus::Expired => ("expired", None),
        _ => ("open", None),
    };
    let mut lines = Vec::with_capacity(cart.lines.len());
    let priced = view.priced.as_ref().ok();
    for (i, line) in cart.lines.values().enumerate() {
        let p = priced.and_then(|b| b.lines.get(i));
        lines.push(CartLineView {
            sku: line.sku.to_string(),
            quantity: line.quantity,
            unit_price: line.unit_price,
            line_total: line.unit_price.checked_mul(line.quantity).map_err(Problem::from)?,
            discount: p.map(|p| p.discount),
            tax: p.and_then(|p| p.tax.clone()),
            total: p.map(|p| p.total),
            pricing: line.pricing.clone(),
        });
    }
    let subtotal = lines.iter().try_fold(zero, |sum, l| sum.checked_add(l.line_total)).map_err(Problem::from)?;
    let (totals, promotions, shipping_option, tax_computed) = match priced {
        Some(b) => (b.totals.clone(), b.promotions.clone(), b.shipping.clone(), b.tax_computed),
        None => {
            let t = orderlog_domain::pricing::Totals {
                subtotal,
                discount: zero,
                shipping: zero,
                tax: zero,
                tax_included: zero,
                total: subtotal,
            };
            (t, vec![], None, false)
        }
    };
    Ok(Json(CartView {
        cart_id: id.to_string(),
        version: view.version,
        status: status.into(),
        order_id,
        currency,
        channel: cart.channel.clone(),
        lines,
        discount_code: cart.discount.as_ref().map(|d| d.code.clone()),
        promotions,
        shipping_option,
        shipping_options: view.shipping_options.clone(),
        subtotal: totals.subtotal,
        discount: totals.discount,
        shipping: totals.shipping,
        tax: totals.tax,
        tax_included: totals.tax_included,
        total: totals.total,
        tax_computed,
        pricing_problem: view.priced.as_ref().err().map(|r| r.reason.clone()),
    }))
}

/// A stream's state of aggregate `A`, or 404 naming what is missing.
async fn state<A: Aggregate>(api: &Shared, stream: &StreamId, what: &str) -> Result<(A::State, u64), Problem> {
    let (state, version) = api.service.state(stream).await.map_err(Problem::internal)?;
    if version == 0 {
        return Err(Problem::not_found(format!("no {what}")));
    }
    let state = A::state(&state).cloned().ok_or_else(|| Problem::internal(format!("{stream} is not a {what}")))?;
    Ok((state, version))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PriceParams {
    /// Price every variant in this currency (ISO 4217); without it, no prices are quoted.
    currency: Option<String>,
    /// The sales channel the prices are for.
    channel: Option<String>,
    /// Quote at this instant (RFC 3339) by the price lists as they are now; now when absent.
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<DateTime<Utc>>,
    /// Quote for a customer in this customer group.
    group: Option<String>,
}

/// What a product read prices variants for.
struct Pricing {
    currency: Option<Currency>,
    lists: Vec<(PriceListId, PriceListState)>,
    channel: Option<String>,
    at: DateTime<Utc>,
    groups: std::collections::BTreeSet<String>,
}

impl Pricing {
    async fn of(api: &Shared, p: PriceParams) -> Result<Pricing, Problem> {
        let currency = p
            .currency
            .as_deref()
            .map(Currency::parse)
            .transpose()
            .map_err(|r| Problem::bad_request(format!("currency: {}", r.reason)))?;
        if let Some(channel) = &p.channel {
            orderlog_domain::cart::check_text("channel", channel).map_err(|r| Problem::bad_request(r.reason))?;
        }
        if let Some(group) = &p.group {
            orderlog_domain::ids::check_id("group", group).map_err(|r| Problem::bad_request(r.reason))?;
        }
        let lists = match currency {
            Some(currency) => lists_of(api, currency).await?,
            None => vec![],
        };
        let at = p.at.unwrap_or_else(|| api.service.now());
        Ok(Pricing { currency, lists, channel: p.channel, at, groups: p.group.into_iter().collect() })
    }

    /// A product's variants as this context prices them, with their availability.
    async fn variants(&self, api: &Shared, product: &ProductState) -> Result<Vec<VariantView>, Problem> {
        let pairs: Vec<(&PriceListId, &PriceListState)> = self.lists.iter().map(|(id, l)| (id, l)).collect();
        let mut variants = Vec::with_capacity(product.variants.len());
        for (sku, v) in &product.variants {
            let (price, not_for_sale) = match self.currency {
                Some(currency) => {
                    let context =
                        PriceContext { currency, at: self.at, channel: self.channel.as_deref(), groups: &self.groups };
                    match quote(sku, product, &pairs, &context) {
                        Ok(q) => (Some(q), None),
                        Err(r) => (None, Some(r.reason)),
                    }
                }
                None => (None, product.sellable(sku).err().map(|r| r.reason)),
            };
            let stock = api.queries.inventory_of_sku(sku.as_str()).await.map_err(Problem::internal)?;
            variants.push(VariantView {
                sku: sku.to_string(),
                title: v.variant.title.clone(),
                options: v.variant.options.clone(),
                weight_grams: v.variant.weight_grams,
                default_prices: v.variant.prices.clone(),
                archived: v.archived,
                price,
                not_for_sale,
                available: stock.iter().map(|row| row.level.available).sum(),
            });
        }
        Ok(variants)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VariantView {
    sku: String,
    title: String,
    #[schema(value_type = Object)]
    options: std::collections::BTreeMap<String, String>,
    weight_grams: u32,
    /// Default prices, one per currency.
    #[schema(value_type = Vec<Object>)]
    default_prices: Vec<orderlog_domain::Money>,
    archived: bool,
    /// The price this context gets, and where it comes from (when a currency was asked).
    #[schema(value_type = Option<Object>)]
    price: Option<Quote>,
    /// Why it cannot be bought in this context, when it cannot.
    not_for_sale: Option<String>,
    /// Available units over every location (the inventory read model).
    available: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductView {
    product_id: String,
    title: String,
    #[schema(value_type = String)]
    status: ProductStatus,
    tax_class: String,
    prices_include_tax: bool,
    /// The product stream's version.
    version: u64,
    variants: Vec<VariantView>,
}

/// A product, its variants, the price each gets (with `currency`) and its availability.
#[utoipa::path(get, path = "/products/{product_id}", tag = "catalog",
    params(("product_id" = String, Path), PriceParams),
    responses((status = 200, body = ProductView), (status = 400, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = ["shop", "catalog"])))]
async fn get_product(
    State(api): State<Shared>,
    Path(product_id): Path<String>,
    Query(p): Query<PriceParams>,
) -> Result<Json<ProductView>, Problem> {
    let id = ProductId::parse(&product_id).map_err(|r| Problem::not_found(format!("no product: {}", r.reason)))?;
    let (product, version) = state::<Product>(&api, &StreamId::product(&id), &format!("product '{id}'")).await?;
    let pricing = Pricing::of(&api, p).await?;
    let variants = pricing.variants(&api, &product).await?;
    Ok(Json(product_view(id, product, version, variants)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Price every variant in this currency (ISO 4217); without it, no prices are quoted.
    currency: Option<String>,
    /// The sales channel the prices are for.
    channel: Option<String>,
    /// Quote at this instant (RFC 3339); now when absent.
    #[param(value_type = Option<String>, format = DateTime)]
    at: Option<DateTime<Utc>>,
    /// Quote for a customer in this customer group.
    group: Option<String>,
    /// `draft`, `active` or `archived`; every product when absent.
    status: Option<String>,
    /// Products after this many (in the order they were made).
    #[param(minimum = 0)]
    offset: Option<usize>,
    /// Most products returned (default 50, at most 200).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    products: Vec<ProductView>,
    /// Every product the catalog holds (of the status asked).
    total: usize,
    /// The `offset` of the next page, when there is one.
    next_offset: Option<usize>,
}

/// The catalog: products in the order they were made, each with its variants, the price
/// each gets in the context asked and its availability.
#[utoipa::path(get, path = "/products", tag = "catalog",
    params(ListParams),
    responses((status = 200, body = ProductList), (status = 400, body = Problem)),
    security(("bearer" = ["shop", "catalog"])))]
async fn list_products(State(api): State<Shared>, Query(p): Query<ListParams>) -> Result<Json<ProductList>, Problem> {
    use orderlog_domain::product::ProductIndex;
    let limit = p.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Problem::bad_request(format!("limit: {limit} is not between 1 and 200")));
    }
    let status = match p.status.as_deref() {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<ProductStatus>(serde_json::Value::String(s.into()))
                .map_err(|_| Problem::bad_request(format!("status: '{s}' is not draft, active or archived")))?,
        ),
    };
    let offset = p.offset.unwrap_or(0);
    let params = PriceParams { currency: p.currency, channel: p.channel, at: p.at, group: p.group };
    let pricing = Pricing::of(&api, params).await?;
    let (index, _) = api.service.state(&StreamId::products()).await.map_err(Problem::internal)?;
    let ids = ProductIndex::state(&index).map(|i| i.products.clone()).unwrap_or_default();
    let mut matching = Vec::new();
    for id in ids {
        let (state, version) = api.service.state(&StreamId::product(&id)).await.map_err(Problem::internal)?;
        let Some(product) = Product::state(&state) else { continue };
        if status.is_none_or(|s| s == product.status) {
            matching.push((id, product.clone(), version));
        }
    }
    let total = matching.len();
    let mut products = Vec::new();
    for (id, product, version) in matching.into_iter().skip(offset).take(limit) {
        let variants = pricing.variants(&api, &product).await?;
        products.push(product_view(id, product, version, variants));
    }
    let next = offset.saturating_add(limit);
    let next_offset = (next < total).then_some(next);
    Ok(Json(ProductList { products, total, next_offset }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaxRegionView {
    region_id: String,
    version: u64,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    region: orderlog_domain::tax::TaxRegionState,
}

/// A tax region: its rate per tax class, default class and exempt customer groups.
#[utoipa::path(get, path = "/tax-regions/{region_id}", tag = "catalog",
    params(("region_id" = String, Path)),
    responses((status = 200, body = TaxRegionView), (status = 404, body = Problem)),
    security(("bearer" = ["shop", "catalog"])))]
async fn get_tax_region(
    State(api): State<Shared>,
    Path(region_id): Path<String>,
) -> Result<Json<TaxRegionView>, Problem> {
    use orderlog_domain::tax::{TaxRegion, TaxRegionId};
    let id = TaxRegionId::parse(&region_id).map_err(|r| Problem::not_found(format!("no tax region: {}", r.reason)))?;
    let (region, version) = state::<TaxRegion>(&api, &StreamId::tax_region(&id), &format!("tax region '{id}'")).await?;
    Ok(Json(TaxRegionView { region_id: id.to_string(), version, region }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShippingZoneView {
    zone_id: String,
    version: u64,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    zone: orderlog_domain::shipping::ShippingZoneState,
}

/// A shipping zone: its currency, countries and options.
#[utoipa::path(get, path = "/shipping-zones/{zone_id}", tag = "catalog",
    params(("zone_id" = String, Path)),
    responses((status = 200, body = ShippingZoneView), (status = 404, body = Problem)),
    security(("bearer" = ["shop", "catalog"])))]
async fn get_shipping_zone(
    State(api): State<Shared>,
    Path(zone_id): Path<String>,
) -> Result<Json<ShippingZoneView>, Problem> {
    use orderlog_domain::shipping::ShippingZone;
    let id = orderlog_domain::ShippingZoneId::parse(&zone_id)
        .map_err(|r| Problem::not_found(format!("no shipping zone: {}", r.reason)))?;
    let (zone, version) =
        state::<ShippingZone>(&api, &StreamId::shipping_zone(&id), &format!("shipping zone '{id}'")).await?;
    Ok(Json(ShippingZoneView { zone_id: id.to_string(), version, zone }))
}

fn product_view(id: ProductId, product: ProductState, version: u64, variants: Vec<VariantView>) -> ProductView {
    ProductView {
        product_id: id.to_string(),
        title: product.title,
        status: product.status,
        tax_class: product.tax_class,
        prices_include_tax: product.prices_include_tax,
        version,
        variants,
    }
}

/// Every price list of a currency, as it is now.
pub(crate) async fn lists_of(api: &Shared, currency: Currency) -> Result<Vec<(PriceListId, PriceListState)>, Problem> {
    let index = StreamId::price_index(currency);
    let (index, _) = api.service.state(&index).await.map_err(Problem::internal)?;
    let Some(index) = PriceIndex::state(&index) else { return Ok(vec![]) };
    let mut lists = Vec::with_capacity(index.lists.len());
    for id in &index.lists {
        let (state, _) = api.service.state(&StreamId::price_list(id)).await.map_err(Problem::internal)?;
        if let Some(list) = PriceList::state(&state) {
            lists.push((id.clone(), list.clone()));
        }
    }
    Ok(lists)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceListView {
    price_list_id: String,
    version: u64,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    list: PriceListState,
}

/// A price list: its currency, priority, rules and prices.
#[utoipa::path(get, path = "/price-lists/{price_list_id}", tag = "catalog",
    params(("price_list_id" = String, Path)),
    responses((status = 200, body = PriceListView), (status = 404, body = Problem)),
    security(("bearer" = ["shop", "catalog"])))]
async fn get_price_list(
    State(api): State<Shared>,
    Path(price_list_id): Path<String>,
) -> Result<Json<PriceListView>, Problem> {
    let id =
        PriceListId::parse(&price_list_id).map_err(|r| Problem::not_found(format!("no price list: {}", r.reason)))?;
    let (list, version) = state::<PriceList>(&api, &StreamId::price_list(&id), &format!("price list '{id}'")).await?;
    Ok(Json(PriceListView { price_list_id: id.to_string(), version, list }))
}
