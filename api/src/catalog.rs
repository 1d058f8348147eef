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
    OpenApiRouter::new().routes(routes!(get_product)).routes(routes!(get_price_list)).routes(routes!(get_promotion))
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
    /// Orders that used it so far.
    uses: u32,
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
        uses: p.uses,
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
    #[schema(value_type = Object)]
    line_total: orderlog_domain::Money,
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
    #[schema(value_type = Object)]
    subtotal: orderlog_domain::Money,
    discount_code: Option<String>,
    #[schema(value_type = Object)]
    discount: orderlog_domain::Money,
    shipping_method: Option<String>,
    #[schema(value_type = Object)]
    shipping: orderlog_domain::Money,
    /// Subtotal − discount + shipping (tax is added at checkout).
    #[schema(value_type = Object)]
    total: orderlog_domain::Money,
}

/// A cart: its lines with the price each got and where from, and its totals.
#[utoipa::path(get, path = "/carts/{cart_id}", tag = "carts",
    params(("cart_id" = String, Path)),
    responses((status = 200, body = CartView), (status = 404, body = Problem)),
    security(("bearer" = ["shop", "operations"])))]
async fn get_cart(State(api): State<Shared>, Path(cart_id): Path<String>) -> Result<Json<CartView>, Problem> {
    use orderlog_domain::cart::{Cart, CartStatus};
    let id =
        orderlog_domain::CartId::parse(&cart_id).map_err(|r| Problem::not_found(format!("no cart: {}", r.reason)))?;
    let (cart, version) = state::<Cart>(&api, &StreamId::cart(&id), &format!("cart '{id}'")).await?;
    let totals = cart.totals().map_err(Problem::from)?;
    let currency = totals.subtotal.currency;
    let mut lines = Vec::with_capacity(cart.lines.len());
    for line in cart.lines.values() {
        let line_total = line.unit_price.checked_mul(line.quantity).map_err(Problem::from)?;
        lines.push(CartLineView {
            sku: line.sku.to_string(),
            quantity: line.quantity,
            unit_price: line.unit_price,
            line_total,
            pricing: line.pricing.clone(),
        });
    }
    let total = totals.subtotal.checked_sub(totals.discount).and_then(|t| t.checked_add(totals.shipping));
    let (status, order_id) = match &cart.status {
        CartStatus::CheckedOut { order_id } => ("checked_out", Some(order_id.to_string())),
        CartStatus::Expired => ("expired", None),
        _ => ("open", None),
    };
    Ok(Json(CartView {
        cart_id: id.to_string(),
        version,
        status: status.into(),
        order_id,
        currency,
        channel: cart.channel.clone(),
        lines,
        subtotal: totals.subtotal,
        discount_code: cart.discount.as_ref().map(|d| d.code.clone()),
        discount: totals.discount,
        shipping_method: cart.shipping_method.as_ref().map(|m| m.id.clone()),
        shipping: totals.shipping,
        total: total.map_err(Problem::from)?,
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
    let currency = p
        .currency
        .as_deref()
        .map(Currency::parse)
        .transpose()
        .map_err(|r| Problem::bad_request(format!("currency: {}", r.reason)))?;
    let lists = match currency {
        Some(currency) => lists_of(&api, currency).await?,
        None => vec![],
    };
    if let Some(channel) = &p.channel {
        orderlog_domain::cart::check_text("channel", channel).map_err(|r| Problem::bad_request(r.reason))?;
    }
    let at = p.at.unwrap_or_else(|| api.service.now());
    let mut variants = Vec::with_capacity(product.variants.len());
    for (sku, v) in &product.variants {
        let (price, not_for_sale) = match currency {
            Some(currency) => {
                let pairs: Vec<(&PriceListId, &PriceListState)> = lists.iter().map(|(id, l)| (id, l)).collect();
                let context = PriceContext { currency, at, channel: p.channel.as_deref() };
                match quote(sku, &product, &pairs, &context) {
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
    Ok(Json(product_view(id, product, version, variants)))
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
